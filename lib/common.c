/* Error text and clocks. */
#include <time.h>

#include "semgate/common.h"

static const char *const sg_errors[] = {
	[0] = "success",
	[-SG_ENOMEM] = "out of memory",
	[-SG_EINVAL] = "invalid argument",
	[-SG_EIO] = "I/O error",
	[-SG_ENOTFOUND] = "not found",
	[-SG_ETOOBIG] = "size limit exceeded",
	[-SG_ETIMEDOUT] = "timed out",
	[-SG_ECONNECT] = "could not connect",
	[-SG_EUPSTREAM] = "upstream transfer failed",
	[-SG_ECORRUPT] = "data is corrupt or truncated",
	[-SG_EMISMATCH] = "incompatible stored data",
	[-SG_EINDEX] = "vector index error",
	[-SG_ESTORE] = "store error",
	[-SG_ECANCELED] = "canceled",
	[-SG_EFULL] = "capacity exhausted",
	[-SG_EEXIST] = "already exists",
};

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
