/*
 * Logging: one logfmt line per event to stderr (journal-aware) or syslog.
 *
 * Logging never blocks its caller (SPEC 5): a worker or a breaker holding
 * its lock writes a line with one non-blocking write when the sink takes
 * it at once. Otherwise the line joins a queue, bounded to LOG_QUEUE_MAX
 * bytes, that a thread of its own writes out as the sink drains; past the
 * bound lines are dropped and counted, as are lines a sink refused (syslog
 * gone while /dev/log is reopened). As soon as the sink takes a line again,
 * and at most once a second while the loss goes on, an event=log_dropped
 * line says how many: it goes out next, ahead of the queue, so that a
 * loss is told while it lasts. One lock orders every other line, so they
 * leave in the order their callers wrote them.
 *
 * A line written with log_defer() (event=conn, one per client) is not
 * written at once: it joins a batch, bounded to LOG_BATCH_MAX bytes, that
 * the writer thread writes with one write(2) LOG_DEFER_MS after its first
 * line, or that the caller writes when it is full. Any other line writes
 * the batch out ahead of itself, so the order holds; a syslog sink, one
 * line per datagram, takes deferred lines at once.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Bytes of lines the queue may hold while the sink is stalled. */
#define LOG_QUEUE_MAX (1u << 20)
/* The longest line, its newline included. */
#define LOG_LINE_MAX 2048
/* Lines the writer thread writes in one hold of the lock. */
#define LOG_FLUSH_BATCH 64
/* How long the writer thread waits for the sink before looking again. */
#define LOG_POLL_MS 200
/* The least time between two event=log_dropped lines. */
#define LOG_DROPPED_EVERY_MS 1000
/* Bytes of deferred lines held for one write; the longest wait for one. */
#define LOG_BATCH_MAX (64 * 1024)
#define LOG_DEFER_MS 10

/* Set by the main thread (start, reload), read by every thread. */
static _Atomic int log_level = LOG_LEVEL_INFO;
static _Atomic int log_target = LOG_TARGET_STDERR;
static _Atomic int log_journal;

const char *const log_level_names[] = { "debug", "info", "notice", "warning",
	"error", NULL };
static const int log_level_prio[] = { LOG_DEBUG, LOG_INFO, LOG_NOTICE,
	LOG_WARNING, LOG_ERR };

/* Lines waiting for the sink; off bytes of them are already written. */
struct log_rec {
	struct log_rec *next;
	size_t len, off;
	unsigned lines; /* counted as dropped if the sink refuses them */
	char text[];
};

/* The sink and its queue; everything below is under log_mu. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cv = PTHREAD_COND_INITIALIZER;
static struct log_rec *log_head, **log_tail = &log_head;
static size_t log_queued;	   /* bytes in the queue */
static uint64_t log_dropped;	   /* lines lost since the last log_dropped */
static uint64_t log_dropped_ms;	   /* when the last log_dropped was queued */
static bool log_sink_took;	   /* the sink's last answer was a line taken */
static uint64_t log_lines_out;	   /* writes the sink took, ever */
static int log_fd = STDERR_FILENO; /* stderr, or a non-blocking reopening */
static bool log_fd_send;	   /* a socket: send(MSG_DONTWAIT) */
static bool log_fd_dgram;	   /* one line per datagram (syslog) */
static bool log_thread_on, log_stopping;
static _Atomic long log_pid; /* for syslog lines, set by log_init() */
static uint64_t log_stop_deadline;
static pthread_t log_thread;
static char log_batch[LOG_BATCH_MAX]; /* deferred lines, not yet written */
static size_t log_batch_len;
static unsigned log_batch_lines;
static uint64_t log_batch_ms; /* when its first line joined */

/* The seconds of the last stamp a thread wrote, and that stamp. */
static _Thread_local time_t log_stamp_sec = -1;
static _Thread_local char log_stamp[32];

/* Milliseconds on the monotonic clock. */
static uint64_t
log_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A non-blocking datagram socket connected to the syslog daemon, or -1. */
static int
log_syslog_open(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX,
		.sun_path = "/dev/log" };
	int fd;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Give the sink what it takes at once: bytes written, or -1 (EAGAIN when
 * it is full). Called with log_mu held; never blocks.
 */
static ssize_t
log_sink_write(const char *buf, size_t len)
{
	ssize_t n;

	/* No syslog daemon yet, or it restarted: look for it again. */
	if (log_fd == -1 && (log_fd = log_syslog_open()) == -1) {
		errno = ENOTCONN;
		return -1;
	}
	do {
		if (log_fd_send)
			n = send(log_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		else
			n = write(log_fd, buf, len);
	} while (n == -1 && errno == EINTR);
	if (n == -1 && (errno == EWOULDBLOCK || errno == ENOBUFS))
		errno = EAGAIN;
	else if (n == -1 && log_fd_dgram && errno == ECONNREFUSED) {
		close(log_fd);
		log_fd = -1;
	}
	log_sink_took = n > 0;
	if (n > 0) {
		log_lines_out++;
		/* A loss waits to be told: wake the writer thread. */
		if (log_dropped != 0 && log_head == NULL)
			pthread_cond_signal(&log_cv);
	}
	return n;
}

/* Append lines (or their unwritten rest) to the queue; locked. */
static void
log_queue_add(const char *buf, size_t len, unsigned lines, bool bounded)
{
	struct log_rec *rec;

	if ((bounded && log_queued + len > LOG_QUEUE_MAX) ||
	    (rec = malloc(sizeof(*rec) + len)) == NULL) {
		log_dropped += lines;
		return;
	}
	rec->next = NULL;
	rec->len = len;
	rec->off = 0;
	rec->lines = lines;
	memcpy(rec->text, buf, len);
	*log_tail = rec;
	log_tail = &rec->next;
	log_queued += len;
	pthread_cond_signal(&log_cv);
}

/* Drop the queue's first line; locked. */
static void
log_queue_pop(void)
{
	struct log_rec *rec = log_head;

	log_head = rec->next;
	if (log_head == NULL)
		log_tail = &log_head;
	log_queued -= rec->len;
	free(rec);
}

/*
 * Write queued lines while the sink takes them, at most max of them;
 * locked. True when the queue is empty. A sink that fails for good (EPIPE,
 * EBADF) loses them.
 */
static bool
log_queue_flush(unsigned max)
{
	struct log_rec *rec;
	ssize_t n;

	while ((rec = log_head) != NULL) {
		if (max-- == 0)
			return false;
		n = log_sink_write(rec->text + rec->off, rec->len - rec->off);
		if (n == -1 && errno == EAGAIN)
			return false;
		if (n > 0 && !log_fd_dgram && rec->off + (size_t)n < rec->len) {
			rec->off += (size_t)n;
			continue;
		}
		if (n == -1)
			log_dropped += rec->lines;
		log_queue_pop();
	}
	return true;
}

/*
 * Write whole lines or queue them; locked. Behind a queue, a caller only
 * appends: the writer thread drains it, so no worker and no breaker lock
 * ever waits for a whole queue's worth of writes.
 */
static void
log_put(const char *buf, size_t len, unsigned lines)
{
	ssize_t n;

	if (log_head != NULL && (log_thread_on || !log_queue_flush(UINT_MAX))) {
		log_queue_add(buf, len, lines, true);
		return;
	}
	n = log_sink_write(buf, len);
	if (n == -1 && errno == EAGAIN)
		log_queue_add(buf, len, lines, true);
	else if (n == -1) {
		/* Refused for good (no syslog daemon): lost, and counted. */
		log_dropped += lines;
	} else if (!log_fd_dgram && (size_t)n < len)
		log_queue_add(buf + n, len - (size_t)n, lines, false);
}

/* Write the batch of deferred lines out (or queue it), then empty it. */
static void
log_batch_flush(void)
{
	if (log_batch_len == 0)
		return;
	log_put(log_batch, log_batch_len, log_batch_lines);
	log_batch_len = 0;
	log_batch_lines = 0;
}

/* Add a line to the batch, written within LOG_DEFER_MS; locked. */
static void
log_batch_add(const char *buf, size_t len)
{
	/* One line per datagram, or no thread to write it later: at once. */
	if (log_fd_dgram || !log_thread_on) {
		log_put(buf, len, 1);
		return;
	}
	/* Behind a queue, the line waits its turn there. */
	if (log_head != NULL) {
		log_batch_flush();
		log_put(buf, len, 1);
		return;
	}
	if (log_batch_len + len > sizeof(log_batch))
		log_batch_flush();
	if (log_batch_len == 0) {
		log_batch_ms = log_now_ms();
		pthread_cond_signal(&log_cv);
	}
	memcpy(log_batch + log_batch_len, buf, len);
	log_batch_len += len;
	log_batch_lines++;
}

/*
 * Write a line at once, behind the batch: in the same write when it fits
 * there, so that the order holds at the cost of one write; locked.
 */
static void
log_put_now(const char *buf, size_t len)
{
	if (log_batch_len != 0 && log_batch_len + len <= sizeof(log_batch)) {
		memcpy(log_batch + log_batch_len, buf, len);
		log_batch_len += len;
		log_batch_lines++;
		log_batch_flush();
		return;
	}
	log_batch_flush();
	log_put(buf, len, 1);
}

/* Is stderr the journal's stream (JOURNAL_STREAM is "DEV:INODE")? */
int
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

/*
 * The priority prefix ("<3>") for a line of that level written straight to
 * stderr (circuitproxyd -t), when stderr is the journal; else "".
 */
const char *
log_stderr_prefix(enum log_level level)
{
	static char prefix[LOG_LEVEL_ERROR + 1][8];

	if (!log_stderr_is_journal())
		return "";
	snprintf(prefix[level], sizeof(prefix[level]), "<%d>",
	    log_level_prio[level]);
	return prefix[level];
}

/*
 * Where stderr lines go without blocking: a socket (the journal) takes
 * send(MSG_DONTWAIT); a pipe or a terminal is opened again non-blocking
 * through /proc, so that the flag does not reach whoever shares the
 * descriptor, or failing that set non-blocking itself. A file is written
 * as it is.
 */
static int
log_stderr_open(bool *use_send)
{
	struct stat sb;
	int fd, fl;

	*use_send = false;
	if (fstat(STDERR_FILENO, &sb) != 0)
		return STDERR_FILENO;
	if (S_ISSOCK(sb.st_mode)) {
		*use_send = true;
		return STDERR_FILENO;
	}
	if (!S_ISFIFO(sb.st_mode) && !S_ISCHR(sb.st_mode))
		return STDERR_FILENO;
	fd = open("/proc/self/fd/2",
	    O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd != -1)
		return fd;
	if ((fl = fcntl(STDERR_FILENO, F_GETFL)) != -1)
		fcntl(STDERR_FILENO, F_SETFL, fl | O_NONBLOCK);
	return STDERR_FILENO;
}

/*
 * The start of a line for the target in force, up to "level=L "; returns
 * its length (under 64 bytes). Written by hand, not printf: it opens
 * every line.
 */
static size_t
log_prefix(char *line, enum log_level level)
{
	struct timespec ts;
	struct tm tm;
	const char *name = log_level_names[level];
	size_t n, k = strlen(name);
	long ms;

	if (log_target == LOG_TARGET_SYSLOG)
		n = (size_t)snprintf(line, 64, "<%d>circuitproxyd[%ld]: ",
		    LOG_DAEMON | log_level_prio[level], (long)log_pid);
	else if (log_journal)
		n = (size_t)snprintf(line, 64, "<%d>", log_level_prio[level]);
	else {
		clock_gettime(CLOCK_REALTIME, &ts);
		/* The same second as this thread's last line: its stamp. */
		if (ts.tv_sec != log_stamp_sec) {
			gmtime_r(&ts.tv_sec, &tm);
			strftime(log_stamp, sizeof(log_stamp),
			    "%Y-%m-%dT%H:%M:%S", &tm);
			log_stamp_sec = ts.tv_sec;
		}
		n = strlen(log_stamp);
		memcpy(line, log_stamp, n);
		ms = ts.tv_nsec / 1000000;
		line[n++] = '.';
		line[n++] = (char)('0' + ms / 100);
		line[n++] = (char)('0' + ms / 10 % 10);
		line[n++] = (char)('0' + ms % 10);
		line[n++] = 'Z';
		line[n++] = ' ';
	}
	memcpy(line + n, "level=", 6);
	memcpy(line + n + 6, name, k);
	line[n + 6 + k] = ' ';
	return n + 7 + k;
}

/* Format one line for the target in force; returns its length. */
static size_t
log_format(char *line, enum log_level level, const char *fmt, va_list ap)
{
	size_t n, cap = LOG_LINE_MAX - 1;
	int r;

	n = log_prefix(line, level);
	r = vsnprintf(line + n, cap - n, fmt, ap);
	if (r < 0)
		r = 0;
	n += (size_t)r;
	if (n > cap)
		n = cap;
	if (log_target != LOG_TARGET_SYSLOG)
		line[n++] = '\n';
	return n;
}

/* printf-style log_format. */
static size_t LOG_FMT(3, 4)
    log_formatf(char *line, enum log_level level, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = log_format(line, level, fmt, ap);
	va_end(ap);
	return n;
}

/*
 * Queue the event=log_dropped line to go out next, ahead of the queue (but
 * after a line half written, which must be finished first); locked.
 */
static void
log_dropped_queue(uint64_t now)
{
	char line[LOG_LINE_MAX];
	struct log_rec *rec, **at;
	size_t n;

	n = log_formatf(line, LOG_LEVEL_WARNING,
	    "event=log_dropped lines=%" PRIu64, log_dropped);
	if ((rec = malloc(sizeof(*rec) + n)) == NULL)
		return;
	rec->len = n;
	rec->off = 0;
	rec->lines = 1;
	memcpy(rec->text, line, n);
	at =
	    log_head != NULL && log_head->off > 0 ? &log_head->next : &log_head;
	rec->next = *at;
	*at = rec;
	if (rec->next == NULL)
		log_tail = &rec->next;
	log_queued += n;
	log_dropped = 0;
	log_dropped_ms = now;
}

/*
 * The writer thread: write the batch out LOG_DEFER_MS after its first
 * line, the queue as the sink drains, and say how many lines were lost as
 * soon as the sink takes lines again, at most once a second. It ends at
 * log_close(), once both are empty or the deadline passed.
 */
static void *
log_writer_main(void *arg)
{
	struct pollfd pfd;
	uint64_t now, due, out;
	int wait_ms;

	(void)arg;
	pthread_mutex_lock(&log_mu);
	for (;;) {
		while (log_head == NULL && log_batch_len == 0 &&
		    (log_dropped == 0 || !log_sink_took) && !log_stopping)
			pthread_cond_wait(&log_cv, &log_mu);
		now = log_now_ms();
		if (log_batch_len != 0 &&
		    (log_head != NULL || log_stopping ||
			now >= log_batch_ms + LOG_DEFER_MS))
			log_batch_flush();
		out = log_lines_out;
		log_queue_flush(LOG_FLUSH_BATCH);
		now = log_now_ms();
		due = log_dropped_ms + LOG_DROPPED_EVERY_MS;
		/* The sink took lines just now, or takes them at once. */
		if (log_dropped != 0 && (now >= due || log_stopping) &&
		    (log_lines_out != out ||
			(log_head == NULL && log_sink_took))) {
			log_dropped_queue(now);
			log_queue_flush(LOG_FLUSH_BATCH);
		}
		if (log_stopping &&
		    (log_head == NULL || now >= log_stop_deadline))
			break;
		if (log_head == NULL && log_batch_len == 0 &&
		    (log_dropped == 0 || !log_sink_took))
			continue;
		wait_ms = LOG_POLL_MS;
		/* The batch's time comes (a queue flushes it at once). */
		if (log_batch_len != 0 && log_head == NULL)
			wait_ms = log_batch_ms + LOG_DEFER_MS > now
			    ? (int)(log_batch_ms + LOG_DEFER_MS - now)
			    : 0;
		if (log_dropped != 0 && log_sink_took && due > now &&
		    due - now < (uint64_t)wait_ms)
			wait_ms = (int)(due - now);
		/* Without a queue, only the next log_dropped line is waited. */
		pfd.fd = log_head != NULL ? log_fd : -1;
		pfd.events = POLLOUT;
		pthread_mutex_unlock(&log_mu);
		poll(&pfd, 1, wait_ms);
		pthread_mutex_lock(&log_mu);
	}
	pthread_mutex_unlock(&log_mu);
	return NULL;
}

/* Start the writer thread once, with every signal blocked in it. */
static void
log_writer_start(void)
{
	sigset_t all, old;

	if (log_thread_on)
		return;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	log_thread_on =
	    pthread_create(&log_thread, NULL, log_writer_main, NULL) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Set the level and target; may be called again after a reload. */
void
log_init(enum log_level level, enum log_target target)
{
	bool use_send = false, dgram = false;
	int fd = -1;

	log_level = level;
	log_pid = (long)getpid();
	/* With no syslog daemon yet, fd is -1 and lines are lost, as syslog(3). */
	if (target == LOG_TARGET_SYSLOG) {
		fd = log_syslog_open();
		use_send = dgram = true;
	} else
		fd = log_stderr_open(&use_send);
	pthread_mutex_lock(&log_mu);
	/* Deferred lines go where they were meant to. */
	log_batch_flush();
	if (log_fd != STDERR_FILENO && log_fd != -1 && log_fd != fd)
		close(log_fd);
	log_fd = fd;
	log_fd_send = use_send;
	log_fd_dgram = dgram;
	log_target = target;
	log_journal = target == LOG_TARGET_STDERR && log_stderr_is_journal();
	log_writer_start();
	pthread_mutex_unlock(&log_mu);
}

/*
 * Write out what is queued, waiting at most ms for the sink, and stop the
 * writer thread: the last thing before the process exits.
 */
void
log_close(int ms)
{
	pthread_mutex_lock(&log_mu);
	if (!log_thread_on) {
		log_batch_flush();
		log_queue_flush(UINT_MAX);
		pthread_mutex_unlock(&log_mu);
		return;
	}
	log_stopping = true;
	log_stop_deadline = log_now_ms() + (uint64_t)ms;
	pthread_cond_signal(&log_cv);
	pthread_mutex_unlock(&log_mu);
	pthread_join(log_thread, NULL);
	pthread_mutex_lock(&log_mu);
	log_thread_on = false;
	log_stopping = false;
	pthread_mutex_unlock(&log_mu);
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

	for (i = 0; log_level_names[i] != NULL; i++) {
		if (strcmp(s, log_level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

/* Quote a logfmt value if it holds spaces, quotes or '='; returns buf. */
const char *
log_quote(char *buf, size_t len, const char *value)
{
	const char *p;
	size_t o = 0;

	if (value[0] != '\0' && strpbrk(value, " \t\"=\\\n") == NULL) {
		/* As it is (cut to fit), without printf: one per event=conn. */
		if (len == 0)
			return buf;
		o = strnlen(value, len - 1);
		memcpy(buf, value, o);
		buf[o] = '\0';
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

/* Write one line at a level, or queue it: never blocks (see the top). */
void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;
	size_t n;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	n = log_format(line, level, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&log_mu);
	log_put_now(line, n);
	pthread_mutex_unlock(&log_mu);
}

/*
 * Write one line of len bytes of text ("event=... k=v", no newline, built
 * by the caller) within LOG_DEFER_MS, batched with others (see the top).
 */
void
log_defer(enum log_level level, const char *text, size_t len)
{
	char line[LOG_LINE_MAX];
	size_t n;

	if (!log_enabled(level))
		return;
	n = log_prefix(line, level);
	if (len > LOG_LINE_MAX - 1 - n)
		len = LOG_LINE_MAX - 1 - n;
	memcpy(line + n, text, len);
	n += len;
	if (log_target != LOG_TARGET_SYSLOG)
		line[n++] = '\n';
	pthread_mutex_lock(&log_mu);
	log_batch_add(line, n);
	pthread_mutex_unlock(&log_mu);
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
	log_close(1000);
	abort();
}
