/* Logging. The level is the one piece of process-wide state: it is set once
 * at start-up, before the loop runs, and only read afterwards. */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "semgate/common.h"
#include "semgate/log.h"

static int log_level = SG_LOG_INFO;

void sg_log_set_level(int level)
{
	log_level = level;
}

int sg_log_enabled(int level)
{
	return level <= log_level;
}

static void log_v(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

void sg_log(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(level, fmt, ap);
	va_end(ap);
}

void sg_log_limited(sg_log_limit_t *lim, int level, const char *fmt, ...)
{
	uint64_t now = sg_now_us();
	va_list ap;

	if (level > log_level)
		return;
	if (now - lim->window_start_us >= SG_LOG_LIMIT_WINDOW_US) {
		if (lim->suppressed)
			sg_log(level, "(%llu more lines like the next were suppressed in %d s)",
			       (unsigned long long)lim->suppressed,
			       (int)(SG_LOG_LIMIT_WINDOW_US / 1000000));
		lim->window_start_us = now;
		lim->lines = 0;
		lim->suppressed = 0;
	}
	if (lim->lines >= SG_LOG_LIMIT_LINES) {
		lim->suppressed++;
		return;
	}
	lim->lines++;
	va_start(ap, fmt);
	log_v(level, fmt, ap);
	va_end(ap);
}

static void log_v(int level, const char *fmt, va_list ap)
{
	static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	char line[2048];
	struct timeval tv;
	struct tm tm;
	int n;

	if (level > log_level)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ semgate[%d] %s ",
	             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	             tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), names[level]);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line so concurrent writers never interleave mid-line. */
	(void)!write(STDERR_FILENO, line, (size_t)n);
}
