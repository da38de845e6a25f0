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

/* Read a clock in units of 1/per_sec second. */
static inline uint64_t
util_clock(clockid_t id, uint64_t per_sec)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * per_sec +
	    (uint64_t)ts.tv_nsec / (1000000000 / per_sec);
}

/* Return monotonic time in milliseconds. */
uint64_t
util_now_ms(void)
{
	return util_clock(CLOCK_MONOTONIC, 1000);
}

/* Return monotonic time in microseconds. */
uint64_t
util_now_us(void)
{
	return util_clock(CLOCK_MONOTONIC, 1000000);
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
	return util_clock(CLOCK_REALTIME, 1000);
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

/* Make room for n more bytes (and a NUL). */
static void
util_buf_grow(struct util_buf *b, size_t n)
{
	if (b->len + n + 1 <= b->cap)
		return;
	while (b->len + n + 1 > b->cap)
		b->cap = b->cap == 0 ? 256 : b->cap * 2;
	b->p = xrealloc(b->p, b->cap);
}

/* Append bytes as they are. */
void
util_buf_add(struct util_buf *b, const void *s, size_t n)
{
	util_buf_grow(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Append formatted text: formatted once when it fits, as it mostly does. */
void
util_buf_printf(struct util_buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	int n;

	util_buf_grow(b, 128);
	room = b->cap - b->len;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatalx("util: bad format %s", fmt);
	if ((size_t)n >= room) {
		util_buf_grow(b, (size_t)n);
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

/* Free a buffer's memory; it can be used again, empty. */
void
util_buf_free(struct util_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
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
