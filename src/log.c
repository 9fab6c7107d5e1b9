/* Logging. The level is the one piece of process-wide state: it is set once
 * at start-up, before the loop runs, and only read afterwards. */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

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

void sg_log(int level, const char *fmt, ...)
{
	static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	char line[2048];
	struct timeval tv;
	struct tm tm;
	va_list ap;
	int n;

	if (level > log_level)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ semgate[%d] %s ",
	             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	             tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), names[level]);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line so concurrent writers never interleave mid-line. */
	(void)!write(STDERR_FILENO, line, (size_t)n);
}
