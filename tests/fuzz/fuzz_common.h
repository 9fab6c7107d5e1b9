/* What the fuzz targets of tests/fuzz share: a check that aborts (libFuzzer
 * then saves the input as a crash), and a reader of structured input. */
#ifndef SEMGATE_FUZZ_COMMON_H
#define SEMGATE_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/common.h"
#include "semgate/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property semgate promises does not hold: report it as a crash. */
#define FUZZ_CHECK(cond, ...)                                                      \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, \
				__LINE__, #cond);                                  \
			fprintf(stderr, __VA_ARGS__);                              \
			fputc('\n', stderr);                                       \
			abort();                                                   \
		}                                                                  \
	} while (0)

/* semgate logs errors only, unless SEMGATE_FUZZ_LOG says otherwise ("warn",
 * "info", "debug"): to see why a reproducer is refused. */
static inline void fuzz_log_init(void)
{
	const char *v = getenv("SEMGATE_FUZZ_LOG");
	int level = SG_LOG_ERROR;

	if (v && strcmp(v, "warn") == 0)
		level = SG_LOG_WARN;
	else if (v && strcmp(v, "info") == 0)
		level = SG_LOG_INFO;
	else if (v && strcmp(v, "debug") == 0)
		level = SG_LOG_DEBUG;
	sg_log_set_level(level);
}

/* Reads an input front to back; past its end every read gives zeros. */
typedef struct fuzz_input {
	const uint8_t *p; /* next byte */
	size_t n;         /* bytes left */
} fuzz_input_t;

static inline uint8_t fuzz_u8(fuzz_input_t *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

static inline uint16_t fuzz_u16(fuzz_input_t *in)
{
	uint16_t hi = fuzz_u8(in);
	return (uint16_t)(hi << 8 | fuzz_u8(in));
}

/* The next n bytes (fewer at the end of the input) as a slice. */
static inline sg_iovec_t fuzz_bytes(fuzz_input_t *in, size_t n)
{
	sg_iovec_t v = {(const char *)in->p, n < in->n ? n : in->n};
	in->p += v.len;
	in->n -= v.len;
	return v;
}

/* Cut [0, size) into at most max pieces at points drawn from seed (0: one
 * piece); cuts[] gets the end of each piece, the count is returned. The same
 * seed and size always give the same cuts. */
static inline size_t fuzz_cuts(uint32_t seed, size_t size, size_t *cuts, size_t max)
{
	size_t n = 0, at = 0;

	if (seed == 0 || size < 2 || max < 2) {
		cuts[0] = size;
		return 1;
	}
	while (n + 1 < max && at < size) {
		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		/* short pieces often: the interesting splits are inside tokens */
		at += 1 + seed % (seed & 0x100 ? 8 : size);
		if (at >= size)
			break;
		cuts[n++] = at;
	}
	cuts[n++] = size;
	return n;
}

#endif
