/* semgate: logging to stderr, one line per event. */
#ifndef SEMGATE_LOG_H
#define SEMGATE_LOG_H

#include <stdint.h>

#include "semgate/config.h"

/** Set the most verbose level that is written (enum sg_log_level). */
void sg_log_set_level(int level);
/** Whether messages of this level are written (to skip formatting work). */
int sg_log_enabled(int level);
/** Write a line: "2026-11-22T00:00:00.000Z semgate[pid] LEVEL message". */
/* (cold: a log line is never the common case; its call is moved out of the
 * hot code around it) */
void sg_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3), cold));

/**
 * A rate limit for one kind of line that outside events can repeat without
 * bound (a refused connection, a failed store): at most SG_LOG_LIMIT_LINES
 * lines per SG_LOG_LIMIT_WINDOW_US; the rest are counted and reported as one
 * line when the next window opens. Zero-initialise; one per call site (a
 * static is fine: only the loop thread logs through it).
 */
typedef struct sg_log_limit {
	uint64_t window_start_us; /* start of the current window */
	uint32_t lines;           /* lines written in it */
	uint64_t suppressed;      /* lines dropped in it */
} sg_log_limit_t;

#define SG_LOG_LIMIT_LINES 5
#define SG_LOG_LIMIT_WINDOW_US 10000000ULL

/** sg_log() under the rate limit lim. */
void sg_log_limited(sg_log_limit_t *lim, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), cold));

#define sg_log_error(...) sg_log(SG_LOG_ERROR, __VA_ARGS__)
#define sg_log_warn(...) sg_log(SG_LOG_WARN, __VA_ARGS__)
#define sg_log_info(...) sg_log(SG_LOG_INFO, __VA_ARGS__)
#define sg_log_debug(...) \
	do { if (sg_log_enabled(SG_LOG_DEBUG)) sg_log(SG_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
