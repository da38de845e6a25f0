/* Logging: one logfmt line per event to stderr (journal-aware) or syslog. */
#include <sys/stat.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Set by the main thread (start, reload), read by every thread. */
static _Atomic int log_level = LOG_LEVEL_INFO;
static _Atomic int log_target = LOG_TARGET_STDERR;
static _Atomic int log_journal;

static const char *log_level_names[] = { "debug", "info", "notice", "warning",
	"error" };
static const int log_level_prio[] = { LOG_DEBUG, LOG_INFO, LOG_NOTICE,
	LOG_WARNING, LOG_ERR };

/* Is stderr the journal's stream (JOURNAL_STREAM is "DEV:INODE")? */
static int
log_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat sb;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &sb) != 0)
		return 0;
	return (unsigned long long)sb.st_dev == dev &&
	    (unsigned long long)sb.st_ino == ino;
}

/* Set the level and target; may be called again after a reload. */
void
log_init(enum log_level level, enum log_target target)
{
	log_level = level;
	if (target == LOG_TARGET_SYSLOG && log_target != LOG_TARGET_SYSLOG)
		openlog("circuitproxyd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	log_target = target;
	log_journal = log_stderr_is_journal();
}

/* Change the level only. */
void
log_set_level(enum log_level level)
{
	log_level = level;
}

/* Return the level in force. */
enum log_level
log_get_level(void)
{
	return (enum log_level)atomic_load_explicit(&log_level,
	    memory_order_relaxed);
}

/* Would a line at this level be written? */
int
log_enabled(enum log_level level)
{
	return (int)level >=
	    atomic_load_explicit(&log_level, memory_order_relaxed);
}

/* Parse a level name; 0 on success, -1 if unknown. */
int
log_level_parse(const char *s, enum log_level *out)
{
	size_t i;

	for (i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]);
	     i++) {
		if (strcmp(s, log_level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

/* Return a level's name. */
const char *
log_level_name(enum log_level level)
{
	return log_level_names[level];
}

/* Quote a logfmt value if it holds spaces, quotes or '='; returns buf. */
const char *
log_quote(char *buf, size_t len, const char *value)
{
	const char *p;
	size_t o = 0;

	if (value[0] != '\0' && strpbrk(value, " \t\"=\\\n") == NULL) {
		snprintf(buf, len, "%s", value);
		return buf;
	}
	if (len < 3) {
		buf[0] = '\0';
		return buf;
	}
	buf[o++] = '"';
	for (p = value; *p != '\0' && o + 3 < len; p++) {
		if (*p == '"' || *p == '\\') {
			buf[o++] = '\\';
			buf[o++] = *p;
		} else if (*p == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else
			buf[o++] = *p;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* Write one line; a single write(2) keeps lines from threads whole. */
void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	char line[2048];
	size_t n = 0, cap = sizeof(line) - 1;
	int r;

	if (!log_enabled(level))
		return;
	if (log_target == LOG_TARGET_SYSLOG) {
		r = snprintf(line, sizeof(line), "level=%s ",
		    log_level_names[level]);
		vsnprintf(line + r, sizeof(line) - (size_t)r, fmt, ap);
		syslog(log_level_prio[level], "%s", line);
		return;
	}
	if (log_journal)
		r = snprintf(line, cap, "<%d>", log_level_prio[level]);
	else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		r = snprintf(line, cap, "%s.%03ldZ ", stamp,
		    ts.tv_nsec / 1000000);
	}
	n = (size_t)r;
	r = snprintf(line + n, cap - n, "level=%s ", log_level_names[level]);
	n += (size_t)r;
	r = vsnprintf(line + n, cap - n, fmt, ap);
	if (r < 0)
		r = 0;
	n += (size_t)r;
	if (n > cap)
		n = cap;
	line[n++] = '\n';
	while (write(STDERR_FILENO, line, n) == -1 && errno == EINTR)
		;
}

/* Write one line at a level. */
void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

/* A broken invariant: say so and abort. */
void
fatalx(const char *fmt, ...)
{
	char msg[512], q[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg(LOG_LEVEL_ERROR, "event=fatal error=%s",
	    log_quote(q, sizeof(q), msg));
	abort();
}
