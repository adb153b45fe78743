/*
 * Logging to stderr with a timestamp, the component name and the pid.
 * Each line is formatted into one buffer and written with a single write(2)
 * so that lines from several threads do not interleave.  Lines that can
 * repeat at wire speed go through the per-call-site rate limit (the *_rl
 * macros in hs_log.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "hs_log.h"

int hs_log_level = HS_LOG_INFO;
static const char *log_component = "hammerstack";

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
hs_log_init(const char *component, int level)
{
	log_component = component;
	hs_log_level = level;
}

int
hs_log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	if (strcmp(name, "warning") == 0)
		return HS_LOG_WARN;
	return -1;
}

static void
log_vemit(int level, int errnum, long suppressed, const char *fmt, va_list ap)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	size_t n;
	int r;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n,
		     ".%03ldZ %s[%d] %s: ", (long)(tv.tv_usec / 1000),
		     log_component, (int)getpid(), level_names[level]);
	if (r > 0 && (size_t)r < sizeof(line) - n)
		n += (size_t)r;
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r > 0)
		n += (size_t)r < sizeof(line) - n ? (size_t)r
						  : sizeof(line) - n - 1;
	if (errnum && n < sizeof(line) - 1) {
		r = snprintf(line + n, sizeof(line) - n, ": %s",
			     strerror(errnum));
		if (r > 0)
			n += (size_t)r < sizeof(line) - n
				     ? (size_t)r
				     : sizeof(line) - n - 1;
	}
	if (suppressed > 0 && n < sizeof(line) - 1) {
		r = snprintf(line + n, sizeof(line) - n,
			     " (suppressed %ld similar lines)", suppressed);
		if (r > 0)
			n += (size_t)r < sizeof(line) - n
				     ? (size_t)r
				     : sizeof(line) - n - 1;
	}
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}

void
hs_log_emit(int level, int with_errno, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vemit(level, with_errno ? saved : 0, 0, fmt, ap);
	va_end(ap);
	errno = saved;
}

int
hs_log_rate_pass(struct hs_log_rate *rl, long now_sec, long *suppressed)
{
	long sec = __atomic_load_n(&rl->sec, __ATOMIC_RELAXED);

	/* The first caller in a new second opens the window. */
	if (sec != now_sec &&
	    __atomic_compare_exchange_n(&rl->sec, &sec, now_sec, 0,
					__ATOMIC_RELAXED, __ATOMIC_RELAXED))
		__atomic_store_n(&rl->n, 0, __ATOMIC_RELAXED);
	if (__atomic_fetch_add(&rl->n, 1, __ATOMIC_RELAXED) >= HS_LOG_RATE) {
		__atomic_fetch_add(&rl->suppressed, 1, __ATOMIC_RELAXED);
		return 0;
	}
	*suppressed = __atomic_exchange_n(&rl->suppressed, 0, __ATOMIC_RELAXED);
	return 1;
}

int
hs_log_rate_now(struct hs_log_rate *rl, long *suppressed)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	/* +1: a zeroed state must not match the first second. */
	return hs_log_rate_pass(rl, (long)ts.tv_sec + 1, suppressed);
}

void
hs_log_emit_rl(int level, int with_errno, long suppressed, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vemit(level, with_errno ? saved : 0, suppressed, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
hs_fatal(int with_errno, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vemit(HS_LOG_ERROR, with_errno ? saved : 0, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
