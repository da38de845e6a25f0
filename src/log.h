/* Logging: one logfmt line per event to stderr (journal-aware) or syslog. */
#ifndef CP_LOG_H
#define CP_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_NOTICE,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_ERROR,
};

enum log_target {
	LOG_TARGET_STDERR,
	LOG_TARGET_SYSLOG,
};

#define LOG_FMT(a, b) __attribute__((format(printf, a, b)))

/* The level names, in enum order, NULL-terminated (the config's list too). */
extern const char *const log_level_names[];

void log_init(enum log_level, enum log_target);
/* Write out the queue (waiting at most ms for the sink) before exit. */
void log_close(int);
int log_level_parse(const char *, enum log_level *);
int log_enabled(enum log_level);

/*
 * Each call writes one line: "level=L " then the caller's "event=... k=v"
 * text. Values that may hold spaces go through log_quote().
 */
void log_msg(enum log_level, const char *, ...) LOG_FMT(2, 3);
/*
 * A line per client (event=conn): len bytes of text built by the caller,
 * batched with others and written within 10 ms, ahead of any later
 * log_msg() line.
 */
void log_defer(enum log_level, const char *text, size_t len);
/* Is stderr the journal's stream (JOURNAL_STREAM names it)? */
int log_stderr_is_journal(void);
/* "<N>" for a line of that level written to stderr when it is the journal. */
const char *log_stderr_prefix(enum log_level);
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_warnx(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_errorx(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* Quote a logfmt value into buf if it needs it; returns buf. */
const char *log_quote(char *buf, size_t len, const char *value);

/* A broken invariant: log and abort. */
void fatalx(const char *, ...) LOG_FMT(1, 2) __attribute__((noreturn));

#endif
