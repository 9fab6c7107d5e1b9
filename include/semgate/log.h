/* semgate: logging to stderr, one line per event. */
#ifndef SEMGATE_LOG_H
#define SEMGATE_LOG_H

#include "semgate/config.h"

/** Set the most verbose level that is written (enum sg_log_level). */
void sg_log_set_level(int level);
/** Whether messages of this level are written (to skip formatting work). */
int sg_log_enabled(int level);
/** Write a line: "2026-11-22T00:00:00.000Z semgate[pid] LEVEL message". */
void sg_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sg_log_error(...) sg_log(SG_LOG_ERROR, __VA_ARGS__)
#define sg_log_warn(...) sg_log(SG_LOG_WARN, __VA_ARGS__)
#define sg_log_info(...) sg_log(SG_LOG_INFO, __VA_ARGS__)
#define sg_log_debug(...) \
	do { if (sg_log_enabled(SG_LOG_DEBUG)) sg_log(SG_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
