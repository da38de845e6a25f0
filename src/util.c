/* Small helpers shared by every module: monotonic time and allocation. */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "util.h"

/* Return monotonic time in milliseconds. */
uint64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Return monotonic time in microseconds. */
uint64_t
util_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Name the errno values of a resource shortage, for log lines. */
const char *
util_errno_name(int error)
{
	switch (error) {
	case EMFILE:
		return "EMFILE";
	case ENFILE:
		return "ENFILE";
	case ENOBUFS:
		return "ENOBUFS";
	case ENOMEM:
		return "ENOMEM";
	case EAGAIN:
		return "EAGAIN";
	case EADDRNOTAVAIL:
		return "EADDRNOTAVAIL";
	default:
		return "other";
	}
}

/* Return wall-clock time in milliseconds since the epoch. */
uint64_t
util_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Format milliseconds as seconds with three decimals, "none" if negative. */
const char *
util_fmt_secs(char *buf, size_t len, int64_t ms)
{
	if (ms < 0)
		snprintf(buf, len, "none");
	else
		snprintf(buf, len, "%" PRId64 ".%03" PRId64, ms / 1000,
		    ms % 1000);
	return buf;
}

/* Set a timeval from milliseconds, for a timer; returns tv. */
struct timeval *
util_timeval(struct timeval *tv, uint64_t ms)
{
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return tv;
}

/* Allocate or die: running out of memory is not a state we can serve from. */
void *
xmalloc(size_t n)
{
	void *p = malloc(n == 0 ? 1 : n);

	if (p == NULL)
		fatalx("out of memory (%zu bytes)", n);
	return p;
}

/* Allocate zeroed memory or die. */
void *
xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb == 0 ? 1 : nmemb, size == 0 ? 1 : size);

	if (p == NULL)
		fatalx("out of memory (%zu x %zu bytes)", nmemb, size);
	return p;
}

/* Resize or die. */
void *
xrealloc(void *old, size_t n)
{
	void *p = realloc(old, n == 0 ? 1 : n);

	if (p == NULL)
		fatalx("out of memory (%zu bytes)", n);
	return p;
}

/* Duplicate a string or die. */
char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		fatalx("out of memory");
	return p;
}

/* Format into a new string or die. */
int
xasprintf(char **ret, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(ret, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatalx("out of memory");
	return n;
}
