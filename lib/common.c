/* Error text and clocks. */
#include <time.h>

#include "semgate/common.h"

static const char *const sg_errors[] = {
	[0] = "success",
#define SG__ERROR_TEXT(name, value, text) [-(value)] = text,
	SG_ERRORS(SG__ERROR_TEXT)
#undef SG__ERROR_TEXT
};

/* The sentinel follows the last code of the list. */
_Static_assert(SG_ARRAY_SIZE(sg_errors) == -SG__ELAST, "SG__ELAST is not one past the last code");

const char *sg_strerror(int err)
{
	if (err > 0 || err <= SG__ELAST || sg_errors[-err] == NULL)
		return "unknown error";
	return sg_errors[-err];
}

uint64_t sg_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t sg_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sg_wall_at_us(uint64_t mono_us)
{
	static _Thread_local uint64_t at; /* when the offset was read; 0: not yet */
	static _Thread_local int64_t offset;
	/* (a reading from before the offset's maps with it as well) */
	if (at == 0 || (mono_us > at && mono_us - at >= 1000000u)) {
		at = sg_now_us();
		offset = sg_wall_us() - (int64_t)at;
	}
	return (int64_t)mono_us + offset;
}
