/*
 * The end-to-end harness: the real daemon started on a config snippet and
 * watched through its log lines, backends and clients on real sockets, all
 * on 127.0.0.1, ::1 or unix paths in a temporary directory. Plain C and
 * POSIX threads; every wait has a deadline and waits on its condition, never
 * a blind sleep. Readiness is sd_notify READY=1 on a test socket.
 *
 * Environment: CIRCUITPROXYD, the daemon to test (set by make check);
 * CP_TEST_TMPDIR, where each test makes its directory (removed when the
 * test passes, kept for a look when it fails); CP_TEST_VERBOSE=1 echoes the
 * daemon's log lines as they come; CP_TEST_WRAPPER="valgrind -q" runs the
 * daemon under a wrapper (with CK_TIMEOUT_MULTIPLIER for Check's timeout).
 * A daemon dies with its test (PR_SET_PDEATHSIG), even a failing one.
 */
#ifndef CP_HARNESS_H
#define CP_HARNESS_H

#include <sys/types.h>
#include <sys/socket.h>

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Generous deadlines: sanitizers and valgrind on a loaded two-core box. */
#define H_READY_MS 10000
#define H_WAIT_MS 5000
#define H_STOP_MS 10000
#define H_TCASE_TIMEOUT 30

/* Fixtures, temporary files and allocation tied to one test. */
TCase *h_tcase_new(const char *);
#define H_TEST(suite, fn)                                                      \
	do {                                                                   \
		TCase *h_tc_ = h_tcase_new(#fn);                               \
		tcase_add_test(h_tc_, fn);                                     \
		suite_add_tcase((suite), h_tc_);                               \
	} while (0)
/* A story that needs longer than H_TCASE_TIMEOUT (a browser, a long load). */
#define H_TEST_LONG(suite, fn, seconds)                                        \
	do {                                                                   \
		TCase *h_tc_ = h_tcase_new(#fn);                               \
		tcase_add_test(h_tc_, fn);                                     \
		tcase_set_timeout(h_tc_, (seconds));                           \
		suite_add_tcase((suite), h_tc_);                               \
	} while (0)
/*
 * Stories written as rows of a table (STYLE.md 12): one test body, run
 * with _i set to the row, in a test case named after the row's .name, so
 * CK_RUN_CASE and CK_INCLUDE_TAGS pick a row as they pick any story.
 */
#define H_TEST_ROW(suite, fn, row, name)                                       \
	do {                                                                   \
		TCase *h_tc_ = h_tcase_new(name);                              \
		tcase_add_loop_test(h_tc_, fn, (row), (row) + 1);              \
		suite_add_tcase((suite), h_tc_);                               \
	} while (0)
#define H_TEST_ROWS(suite, fn, table)                                          \
	for (int h_row_ = 0;                                                   \
	     h_row_ < (int)(sizeof(table) / sizeof((table)[0])); h_row_++)     \
	H_TEST_ROW((suite), fn, h_row_, (table)[h_row_].name)
int h_main(Suite *);
void h_defer(void (*)(void *), void *);
/* The suite once per relay path of CP_TEST_SPLICE (auto, force, off). */
int h_main_modes(Suite *(*)(void));
/* A suite file's main(): its suite run once, or once per relay path. */
#define H_MAIN(suite_fn)                                                       \
	int main(void)                                                         \
	{                                                                      \
		return h_main(suite_fn());                                     \
	}
#define H_MAIN_MODES(suite_fn)                                                 \
	int main(void)                                                         \
	{                                                                      \
		return h_main_modes(suite_fn);                                 \
	}
const char *h_splice_mode(void);
const char *h_tmpdir(void);
char *h_strf(const char *, ...) __attribute__((format(printf, 1, 2)));
/* A file of the source tree by its relative path ($CP_SRCDIR or $srcdir). */
const char *h_srcpath(const char *);
/* circuitproxyctl: $CIRCUITPROXYCTL, or beside $CIRCUITPROXYD. */
const char *h_ctl_prog(void);
/*
 * A [global] section: log_level info, admin off, the workers and
 * shutdown_timeout given, then more keys (or NULL).
 */
char *h_global_section(unsigned workers, const char *shutdown_timeout,
    const char *keys);
/* An [upstream:NAME] section: listen (NULL: none), server, more keys (or NULL). */
char *h_upstream(const char *name, const char *listen, const char *server,
    const char *keys);
/* "splice = off\n" when the suite runs on recv/send (CP_TEST_SPLICE=off). */
const char *h_splice_keys(void);
/*
 * A config of one upstream "api" from listen to server on the suite's relay
 * path (h_splice_keys), with more keys: a [global] section of one worker,
 * shutdown_timeout 2s and the given log_level.
 */
char *h_config_api(const char *level, const char *listen, const char *server,
    const char *keys);
void *h_track(void *);
char *h_path(const char *);
char *h_write_file(const char *, const char *);
/* A file's whole text (freed with the test), or NULL if it cannot be read. */
char *h_read_file(const char *);
/* Does the file hold text within ms (read again every 10 ms)? */
bool h_file_has_within(const char *, const char *, int);
/* Is the daemon run under a wrapper ($CP_TEST_WRAPPER, e.g. valgrind)? */
bool h_wrapped(void);
uint64_t h_now_ms(void);
/* The wall clock in milliseconds, as the daemon's log stamps it. */
int64_t h_wall_ms(void);
int h_slow_ms(int);
#define H_STR(x) H_STR2(x)
#define H_STR2(x) #x
#define H_WHERE __FILE__ ":" H_STR(__LINE__)
void h_fail(const char *, const char *, ...)
    __attribute__((format(printf, 2, 3), noreturn));
void h_fail_cond(const char *, const char *, const char *, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/* Assert, failing with a message and the daemons' logs on stderr. */
#define h_assert(cond, ...)                                                    \
	do {                                                                   \
		if (!(cond))                                                   \
			h_fail_cond(H_WHERE, #cond, __VA_ARGS__);              \
	} while (0)

/*
 * A test that cannot run here (a client program missing, /proc unreadable,
 * a wrapper in the way) calls h_skip("why") in its body: it prints
 * "SKIP: FILE:LINE: why" and returns. h_main() prints "Skipped: N of M
 * tests" and exits 77 (automake's SKIP) when every test of the suite
 * skipped, so a skip is never mistaken for a pass.
 */
void h_skip_note(const char *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
#define h_skip(...)                                                            \
	do {                                                                   \
		h_skip_note(H_WHERE, __VA_ARGS__);                             \
		return;                                                        \
	} while (0)

/* Assert lo <= v <= hi (a timing, a count), failing with all three. */
#define h_assert_between(v, lo, hi, what)                                      \
	do {                                                                   \
		double h_v_ = (double)(v), h_lo_ = (double)(lo),               \
		       h_hi_ = (double)(hi);                                   \
		if (!(h_v_ >= h_lo_ && h_v_ <= h_hi_))                         \
			h_fail(H_WHERE, "%s = %g, not in [%g, %g]", (what),    \
			    h_v_, h_lo_, h_hi_);                               \
	} while (0)

/* Free listen addresses: "127.0.0.1:P", "[::1]:P" or "unix:DIR/lN.sock". */
char *h_free_addr(int);
#define h_free_addr4() h_free_addr(AF_INET)
/* The port of "HOST:PORT" or "[::1]:PORT" (the text after the last ':'). */
const char *h_port_of(const char *);

/* The daemon under test, its log captured line by line. */
struct h_daemon;
/* Spawn it (not waiting) or start it (READY=1): config, then its arguments. */
#define h_daemon_spawn(...)                                                    \
	h_daemon_spawn_opts_args(H_WHERE, NULL, __VA_ARGS__, (const char *)NULL)
#define h_daemon_start(...)                                                    \
	h_daemon_start_opts_args(H_WHERE, NULL, __VA_ARGS__, (const char *)NULL)
bool h_daemon_wait_ready(struct h_daemon *, int);
bool h_daemon_running(struct h_daemon *);
int h_daemon_wait_exit(struct h_daemon *, int);
int h_daemon_stop(struct h_daemon *);
/* SIGTERM, then fail the test (at the caller's line) unless it exits 0. */
#define h_daemon_stop_ok(d) h_daemon_stop_ok_at(H_WHERE, (d))
void h_daemon_stop_ok_at(const char *, struct h_daemon *);
void h_daemon_signal(struct h_daemon *, int);
pid_t h_daemon_pid(const struct h_daemon *);
long h_daemon_rss_kb(const struct h_daemon *);
int h_daemon_nfds(const struct h_daemon *);
int h_daemon_nfds_settled(struct h_daemon *);
pid_t h_daemon_thread_stop(struct h_daemon *, const char *);
void h_daemon_thread_cont(struct h_daemon *, pid_t);
const char *h_daemon_config(const struct h_daemon *);
void h_daemon_dump(struct h_daemon *, const char *);
size_t h_reload_at(const char *, struct h_daemon *, const char *);
#define h_reload(d, config) h_reload_at(H_WHERE, (d), (config))
void h_daemon_log_stall(struct h_daemon *, bool);
void h_daemon_log_allow(struct h_daemon *, size_t);
/*
 * The daemon's descriptors whose /proc/PID/fd link starts with a prefix
 * ("pipe:", a directory of the test's); -1 if /proc cannot tell.
 */
int h_daemon_fds_named(const struct h_daemon *, const char *);
/*
 * One HTTP/1.1 request by hand (Connection: close) to addr: method, path
 * and more header lines (each ending "\r\n"; or NULL). The status of an
 * answer read to its end, or 0 for none; its body in *body if asked.
 */
int h_http(const char *addr, const char *method, const char *path,
    const char *headers, char **body);
/* GET a path from an admin endpoint: the body of a 200, or NULL. */
char *h_admin_get(const char *, const char *);
/*
 * The number a JSON document gives a key: the first "key": in it (no
 * parser: for flat /stats documents); fails the test if there is none.
 */
#define h_json_number(doc, key) h_json_number_at(H_WHERE, (doc), (key))
double h_json_number_at(const char *, const char *, const char *);

/* What the daemon's child process gets beyond the usual. */
struct h_opts {
	unsigned nofile;    /* RLIMIT_NOFILE before exec; 0 = ours */
	bool journal;	    /* JOURNAL_STREAM names the daemon's stderr */
	bool std_closed;    /* started with fds 0-2 closed (no log read) */
	const char *env[8]; /* extra "NAME=value" entries, NULL-ended */
	/*
	 * Listening sockets passed as systemd does (socket activation): as
	 * descriptors 3.. with LISTEN_FDS, LISTEN_PID and, if set,
	 * LISTEN_FDNAMES. The test keeps its own copies.
	 */
	int listen_fds[4];
	unsigned nlisten_fds;
	const char *listen_fdnames;
	/* The hard RLIMIT_NOFILE apart; 0: nofile itself (h_child_exec). */
	unsigned nofile_hard;
};
struct h_daemon *h_daemon_spawn_opts_args(const char *, const struct h_opts *,
    const char *, ...);
#define h_daemon_spawn_opts(opts, ...)                                         \
	h_daemon_spawn_opts_args(H_WHERE, (opts), __VA_ARGS__,                 \
	    (const char *)NULL)
struct h_daemon *h_daemon_start_opts_args(const char *, const struct h_opts *,
    const char *, ...);
#define h_daemon_start_opts(opts, ...)                                         \
	h_daemon_start_opts_args(H_WHERE, (opts), __VA_ARGS__,                 \
	    (const char *)NULL)

/*
 * sd_notify: every line of every datagram on the test's NOTIFY_SOCKET is
 * recorded in order, by a thread of its own. A pattern matches a line
 * equal to it, or, when it ends in '=', any line it starts ("STATUS="), or,
 * when it ends in '*', any line the rest starts ("STATUS=1 upstream, 0 open,*").
 */
bool h_daemon_notified(struct h_daemon *, const char *);
size_t h_notify_mark(struct h_daemon *);
const char *h_notify_line(struct h_daemon *, size_t);
unsigned h_count_notify(struct h_daemon *, size_t, const char *);
unsigned h_wait_notify_count(struct h_daemon *, size_t, const char *, unsigned,
    int);
long h_wait_notify_after(struct h_daemon *, size_t, const char *, int);
#define h_wait_notify(d, what, ms)                                             \
	(h_wait_notify_after((d), 0, (what), (ms)) >= 0)

/*
 * Log lines. A pattern matches a logfmt field: it starts the line or follows
 * a space, and ends the field (a space or the end of the line follows)
 * unless it ends in '=' ("retry_after=" matches any value). A line matches
 * when it holds every pattern of a NULL-terminated list.
 */
size_t h_log_mark(struct h_daemon *);
const char *h_log_line(struct h_daemon *, size_t);
const char *h_wait_log_v(struct h_daemon *, size_t, int, ...);
#define h_wait_log(d, ms, ...)                                                 \
	h_wait_log_v((d), 0, (ms), __VA_ARGS__, (const char *)NULL)
#define h_wait_log_after(d, mark, ms, ...)                                     \
	h_wait_log_v((d), (mark), (ms), __VA_ARGS__, (const char *)NULL)
const char *h_expect_log_v(const char *, struct h_daemon *, size_t, int, ...);
#define h_expect_log(d, ms, ...)                                               \
	h_expect_log_v(H_WHERE, (d), 0, (ms), __VA_ARGS__, (const char *)NULL)
#define h_expect_log_after(d, mark, ms, ...)                                   \
	h_expect_log_v(H_WHERE, (d), (mark), (ms), __VA_ARGS__,                \
	    (const char *)NULL)
unsigned h_count_log_v(struct h_daemon *, size_t, ...);
#define h_count_log(d, ...)                                                    \
	h_count_log_v((d), 0, __VA_ARGS__, (const char *)NULL)
#define h_count_log_after(d, mark, ...)                                        \
	h_count_log_v((d), (mark), __VA_ARGS__, (const char *)NULL)
unsigned h_wait_count_v(struct h_daemon *, size_t, unsigned, int, ...);
#define h_wait_count(d, want, ms, ...)                                         \
	h_wait_count_v((d), 0, (want), (ms), __VA_ARGS__, (const char *)NULL)
#define h_wait_count_after(d, mark, want, ms, ...)                             \
	h_wait_count_v((d), (mark), (want), (ms), __VA_ARGS__,                 \
	    (const char *)NULL)
size_t h_log_index(struct h_daemon *, const char *);
bool h_log_wait_more(struct h_daemon *, size_t, int);
bool h_line_has(const char *, const char *);
bool h_log_value(const char *, const char *, char *, size_t);
double h_log_double(const char *, const char *);
int64_t h_log_time_ms(const char *);
char *h_log_text(struct h_daemon *);

/*
 * A log line as logfmt fields (after its timestamp or "<N>" prefix).
 * h_assert_fields(line, patterns..., NULL) checks that the line parses,
 * that level= and event= come first, and that every pattern holds:
 * "key=value" the exact value; "key=" present (any value, maybe empty);
 * "!key" absent. In a value '#' stands for one digit and '*' for any run
 * of characters: "retry_after=#*.###" is seconds with three decimals.
 * h_assert_fields_only also fails on a key that no pattern names. Both
 * return the line.
 */
#define H_MAX_FIELDS 32
struct h_fields {
	char prefix[48]; /* "2026-...Z" or "<5>", as found */
	size_t n;
	char *key[H_MAX_FIELDS];
	char *val[H_MAX_FIELDS]; /* unquoted */
};
bool h_fields_parse(const char *, struct h_fields *);
const char *h_field(const struct h_fields *, const char *);
bool h_value_matches(const char *, const char *);
const char *h_assert_fields_v(const char *, bool, const char *, ...);
#define h_assert_fields(line, ...)                                             \
	h_assert_fields_v(H_WHERE, false, (line), __VA_ARGS__,                 \
	    (const char *)NULL)
#define h_assert_fields_only(line, ...)                                        \
	h_assert_fields_v(H_WHERE, true, (line), __VA_ARGS__,                  \
	    (const char *)NULL)

/*
 * Namespaces of the test's own (Linux; root, or an unprivileged user
 * namespace): the daemon and backends started after the call share them.
 * h_own_netns: a network with only loopback, up. h_own_hosts: /etc/hosts
 * replaced by a file of the test's, rewritten by h_own_hosts_set. Each
 * returns false (errno set) where that is not allowed, or under CK_FORK=no,
 * where it would move the whole run: the caller skips. h_own_dev_log: a
 * /dev of the test's own (a tmpfs with the real null, zero, random and
 * urandom bound in, moved over /dev) where h_dev_log_open binds a datagram
 * socket at /dev/log, the test's syslog daemon, and h_dev_log_close
 * removes it; call h_dev_log_open only once h_own_dev_log succeeded.
 */
bool h_own_netns(void);
bool h_own_hosts(const char *);
void h_own_hosts_set(const char *);
bool h_own_dev_log(void);
int h_dev_log_open(void);
void h_dev_log_close(int);

/* Find a program on $PATH; the name itself if it is not there. */
const char *h_which(const char *);

/* A command run to its end, its output captured (for -t, -V, -h...). */
struct h_run {
	int status; /* exit code, 128 + signal, or -1 on timeout */
	char *out;  /* stdout, NUL-terminated */
	char *err;  /* stderr */
};
void h_run_args(struct h_run *, const char *, ...);
#define h_run(r, ...) h_run_args((r), __VA_ARGS__, (const char *)NULL)
/* circuitproxyctl (h_ctl_prog), run the same way. */
void h_ctl_args(struct h_run *, const char *, ...);
#define h_ctl(r, ...) h_ctl_args((r), __VA_ARGS__, (const char *)NULL)
/* Another program: a client found by h_client(), which is NULL if missing. */
void h_exec_args(struct h_run *, const char *, ...);
#define h_exec(r, ...) h_exec_args((r), __VA_ARGS__, (const char *)NULL)
const char *h_client(const char *);
unsigned h_count_lines(const char *);
char *h_line_at(const char *, unsigned);

/*
 * Backends: each a socket and (when listening) a thread per connection.
 * H_BLACKHOLE on a unix path is a full queue too: there a non-blocking
 * connect fails at once with EAGAIN.
 */
enum h_kind {
	H_ECHO,	      /* echoes every byte back; FIN after the client's */
	H_REPLY_EOF,  /* reads until EOF, then sends back all it read, closes */
	H_BANNER,     /* sends its banner at once, then reads until EOF */
	H_CLOSE,      /* accepts and closes at once (FIN, no byte sent) */
	H_RESET,      /* accepts and resets at once (RST, no byte sent) */
	H_SILENT,     /* accepts, never sends, reads until EOF */
	H_STALL,      /* accepts, never reads nor sends, until closed */
	H_REFUSE,     /* a bound port with no listener: connect is refused */
	H_BLACKHOLE,  /* a full accept queue: SYNs dropped, connect times out */
	H_LATE_RST,   /* accepts, never reads nor sends, resets after a while */
	H_HALF_RST,   /* accepts, sends its FIN at once, resets after a while */
	H_FIN_FIRST,  /* sends its banner and FIN at once, reads until EOF */
	H_LAST_WORDS, /* reads once, sends its banner, closes: a reset if the
			 client sent more (an error reply, then the end) */
};
/* How long H_LATE_RST and H_HALF_RST wait before their reset. */
#define H_LATE_RST_MS 500
/* H_LATE_RST sends its banner first, if one is set. */
struct h_backend;
struct h_backend *h_backend_new(enum h_kind, int);
struct h_backend *h_backend_new_port(enum h_kind, int, int);
struct h_backend *h_backend_new_ip4(enum h_kind, int, uint32_t, int);
void h_backend_unblock(struct h_backend *, enum h_kind);
bool h_backend_wait_received(struct h_backend *, unsigned, int);
#define h_backend(kind) h_backend_new((kind), AF_INET)
void h_backend_set_kind(struct h_backend *, enum h_kind);
void h_backend_set_banner(struct h_backend *, const char *);
const char *h_backend_addr(const struct h_backend *);
unsigned h_backend_accepted(struct h_backend *);
unsigned h_backend_active(struct h_backend *);
bool h_backend_wait_accepted(struct h_backend *, unsigned, int);
bool h_backend_wait_active(struct h_backend *, unsigned, int);
bool h_backend_wait_idle(struct h_backend *, int);
void h_backend_stop(struct h_backend *);

/* Clients. Sockets are non-blocking; every call takes a deadline in ms. */
enum h_outcome {
	H_OUT_DATA,    /* bytes arrived */
	H_OUT_EOF,     /* an orderly close */
	H_OUT_RESET,   /* ECONNRESET */
	H_OUT_TIMEOUT, /* nothing before the deadline */
	H_OUT_REFUSED, /* connect refused */
	H_OUT_ERROR,   /* anything else; errno tells */
};
const char *h_outcome_name(enum h_outcome);
int h_connect(const char *, int);
int h_connect_name(const char *, int, char **);
int h_connect_ok_at(const char *, const char *);
#define h_connect_ok(addr) h_connect_ok_at(H_WHERE, (addr))
int h_connect_rcvbuf_at(const char *, const char *, int);
#define h_connect_rcvbuf(addr, bytes)                                          \
	h_connect_rcvbuf_at(H_WHERE, (addr), (bytes))
char *h_sock_name(int);
int h_send_all(int, const void *, size_t, int);
enum h_outcome h_next_event(int, int);
enum h_outcome h_recv_exact(int, void *, size_t, int);
enum h_outcome h_recv_all(int, char **, size_t *, int);
enum h_outcome h_client_try(const char *, int, uint64_t *, char **);
char *h_client_expect_reset_at(const char *, const char *, int, uint64_t *);
#define h_client_expect_reset(addr, ms, elapsed)                               \
	h_client_expect_reset_at(H_WHERE, (addr), (ms), (elapsed))
/* On an open connection, send msg and read the same bytes back: true if so. */
bool h_echo_on(int, const char *, int);
bool h_echo_roundtrip(const char *, const char *, int);
/*
 * A new client is relayed (an echo round trip, each try given try_ms)
 * within ms, tried again while it is refused or times out.
 */
bool h_served_within(const char *, int, int);
void h_close(int);

/* Deterministic pseudo-random bytes, to send and check large streams. */
struct h_rand {
	uint64_t s;
	uint64_t cur;
	unsigned used;
};
void h_rand_init(struct h_rand *, uint64_t);
void h_rand_fill(struct h_rand *, void *, size_t);

/*
 * A client's stream of h_rand bytes into a peer that may stop reading:
 * sent in 64 KiB chunks until no room comes for quiet_ms (bounded: 256 MiB,
 * 2 * H_WAIT_MS); true if it backed up like that. The chunk not yet sent
 * whole stays in buf and pending, so the stream can be finished in order.
 */
#define H_STREAM_CHUNK 65536
struct h_stream {
	struct h_rand r;
	char buf[H_STREAM_CHUNK];
	size_t pending; /* the chunk's bytes not yet sent, at its end */
	size_t sent;	/* bytes sent in all */
};
struct h_stream *h_stream_new(uint64_t);
bool h_send_until_stalled(int, int, struct h_stream *);

#endif
