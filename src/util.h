/* Small helpers shared by every module: monotonic time and allocation. */
#ifndef CP_UTIL_H
#define CP_UTIL_H

#include <stddef.h>
#include <stdint.h>

struct timeval;

#define CP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

uint64_t util_now_ms(void);
uint64_t util_now_us(void);
const char *util_errno_name(int);
uint64_t util_wall_ms(void);
const char *util_fmt_secs(char *, size_t, int64_t);
struct timeval *util_timeval(struct timeval *, uint64_t);
/* A growing text buffer, NUL-terminated once anything is appended. */
struct util_buf {
	char *p;
	size_t len, cap;
};

void util_buf_add(struct util_buf *, const void *, size_t);
void util_buf_printf(struct util_buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
void util_buf_free(struct util_buf *);
void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xrealloc(void *, size_t);
char *xstrdup(const char *);
int xasprintf(char **, const char *, ...) __attribute__((format(printf, 2, 3)));

#endif
