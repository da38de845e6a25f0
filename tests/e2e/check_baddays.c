/*
 * End-to-end stories of the bad days of issue #9 (SPEC.md sections 5, 6
 * and 8): a stalled log sink, a full descriptor table, a hung worker,
 * bursts of SIGHUP, and reloads that move a port between a host address
 * and the wildcard. Each story failed on the daemon before its fix.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Clients turned away while the log is stalled: about 2 MiB of lines. */
#define FLOOD_CLIENTS 12000
/* After this many, the relay in flight must still answer. */
#define FLOOD_PROBE_EVERY 500
/* The longest the flood may take, on a loaded box. */
#define FLOOD_MS 60000
/* The trickle story: the sink reads 16 KiB this often; its flood's bounds. */
#define TRICKLE_EVERY_MS 250
#define TRICKLE_CLIENTS 400000
#define TRICKLE_MS 20000
/* Clients rejected while the syslog story's /dev/log is gone. */
#define SYSLOG_LOST_REJECTS 20
/* A reply on a relay that the log must not hold up. */
#define RELAY_MS 2000

/* Relays the full-table story leaves room for, and its idle clients. */
#define FULL_ROOM 20
#define FULL_CLIENTS (FULL_ROOM + 10)
/* Its watchdog interval (pings at half of it) and open state. */
#define FULL_WATCHDOG_US 200000
#define FULL_RECOVERY_MS 3000

/* The hung-worker story's watchdog interval. */
#define HUNG_WATCHDOG_US 1000000
/* SIGHUPs in the burst story. */
#define BURST_SIGHUPS 10

/* An upstream name of 64 characters, the longest: long reject lines. */
#define LONG_NAME                                                              \
	"flood-0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

/* The [global] section with more keys. */
static const char *
global_section(unsigned workers, const char *keys)
{
	return h_global_section(workers, "2s", keys);
}

/* How many lines a config snippet has. */
static int
lines_of(const char *text)
{
	int n = 0;

	for (; *text != '\0'; text++)
		n += *text == '\n';
	return n;
}

/* A flood story's daemon, its relay's client fd, and the log's mark. */
struct flood {
	struct h_daemon *d;
	const char *api, *flood;
	size_t mark;
	int fd;
};

/*
 * The flood stories' start: "api" relays to an echo server (fd, a client
 * whose relay answered), and LONG_NAME's circuit, in front of a dead unix
 * server, has opened; then the daemon's log sink stalls (mark: the log
 * before the stall).
 */
static struct flood
flood_start(void)
{
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *dead = h_backend_new(H_REFUSE, AF_UNIX);
	const char *api = h_free_addr4(), *flood = h_free_addr(AF_UNIX);
	struct h_daemon *d = h_daemon_start(h_strf("%s%s%s",
	    global_section(1, "log_rejects_per_second = 1000000"),
	    h_upstream("api", api, h_backend_addr(echo), ""),
	    h_upstream(LONG_NAME, flood, h_backend_addr(dead),
		"recovery_timeout = 1h\nrecovery_timeout_max = 1h")));
	struct flood f = { d, api, flood, 0, -1 };
	unsigned i;

	f.fd = h_connect_ok(api);
	h_assert(h_echo_on(f.fd, "ping\n", RELAY_MS),
	    "the relay does not answer");
	for (i = 0; i < 5; i++)
		h_close(h_connect(flood, H_WAIT_MS));
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=" LONG_NAME,
	    "to=open");
	f.mark = h_log_mark(d);
	h_daemon_log_stall(d, true);
	return f;
}

/*
 * Nobody reads the daemon's stderr (a stalled journal, a full pipe) while
 * a flood of rejected clients writes far more than 1 MiB of reject lines:
 * a relay of the same worker keeps answering within RELAY_MS all along.
 * Once the pipe is read again, the queued lines come out, followed by one
 * event=log_dropped line counting the lines lost past the 1 MiB queue.
 */
START_TEST(log_stalled_sink)
{
	uint64_t t0 = h_now_ms();
	struct flood f = flood_start();
	struct h_daemon *d = f.d;
	const char *line, *flood = f.flood;
	unsigned i, sent = 0;
	size_t mark = f.mark;
	double lost;
	int fd = f.fd, c;

	for (i = 0; i < FLOOD_CLIENTS && h_now_ms() - t0 < FLOOD_MS; i++) {
		c = h_connect(flood, H_WAIT_MS);
		if (c != -1) {
			sent++;
			close(c);
		}
		if (i % FLOOD_PROBE_EVERY == 0)
			h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
			    "with the log stalled, the relay stopped "
			    "answering after %u rejected clients",
			    i);
	}
	h_assert(sent > FLOOD_CLIENTS * 9 / 10, "only %u clients of %u got in",
	    sent, i);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
	    "the relay stopped answering");

	h_daemon_log_stall(d, false);
	line = h_expect_log_after(d, mark, h_slow_ms(2 * H_WAIT_MS),
	    "level=warning", "event=log_dropped", "lines=");
	lost = h_log_double(line, "lines");
	h_assert(lost > 0 && lost < sent, "lines=%.0f of %u rejects", lost,
	    sent);
	h_assert(h_count_log_after(d, mark, "event=log_dropped") == 1,
	    "more than one log_dropped line after one stall");
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
	    "the relay stopped answering");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The log sink keeps taking a little (a journal behind, 16 KiB every
 * TRICKLE_EVERY_MS) while a flood of rejects goes on: the loss goes on,
 * and is told while it lasts: at least two event=log_dropped lines come
 * out during the flood, a second or more apart, each counting lines. The
 * relay answers all along; once the sink is read again, the lost lines
 * told add up to fewer than the rejects.
 */
START_TEST(log_dropped_while_loss_goes_on)
{
	struct flood f = flood_start();
	struct h_daemon *d = f.d;
	uint64_t t0, next_trickle;
	const char *line, *first = NULL, *flood = f.flood;
	unsigned i, sent = 0, told;
	double lost = 0;
	size_t mark = f.mark, at;
	int fd = f.fd, c;

	t0 = h_now_ms();
	next_trickle = t0 + TRICKLE_EVERY_MS;
	for (i = 0; i < TRICKLE_CLIENTS && h_now_ms() - t0 < TRICKLE_MS; i++) {
		c = h_connect(flood, H_WAIT_MS);
		if (c != -1) {
			sent++;
			close(c);
		}
		if (h_now_ms() >= next_trickle) {
			h_daemon_log_allow(d, 16384);
			next_trickle += TRICKLE_EVERY_MS;
		}
		if (i % FLOOD_PROBE_EVERY == 0) {
			h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
			    "with the log stalled, the relay stopped "
			    "answering after %u rejected clients",
			    i);
			if (h_count_log_after(d, mark, "event=log_dropped") >=
			    2)
				break;
		}
	}
	told = h_count_log_after(d, mark, "event=log_dropped");
	h_assert(told >= 2,
	    "%u event=log_dropped lines in %llu ms of loss (%u rejects, "
	    "the sink read at 16 KiB per %d ms)",
	    told, (unsigned long long)(h_now_ms() - t0), sent,
	    TRICKLE_EVERY_MS);
	/* Two in a row: a second or more apart, each with lines lost. */
	at = mark;
	for (i = 0; i < 2; i++) {
		line = h_wait_log_after(d, at, 0, "level=warning",
		    "event=log_dropped", "lines=");
		h_assert(line != NULL, "no log_dropped line");
		h_assert(h_log_double(line, "lines") > 0, "%s", line);
		if (first == NULL)
			first = line;
		at = h_log_index(d, line) + 1;
	}
	h_assert(h_log_time_ms(line) - h_log_time_ms(first) >= 990,
	    "log_dropped lines less than a second apart: %s / %s", first, line);

	h_daemon_log_stall(d, false);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
	    "the relay stopped answering");
	/* What is left of the queue comes out; add up the lines told lost. */
	close(fd);
	h_daemon_stop_ok(d);
	for (at = mark; (line = h_wait_log_after(d, at, 0, "event=log_dropped",
			     "lines=")) != NULL;
	     at = h_log_index(d, line) + 1)
		lost += h_log_double(line, "lines");
	h_assert(lost > 0 && lost < sent, "lines=%.0f of %u rejects", lost,
	    sent);
}
END_TEST

/*
 * The next datagram on the test's /dev/log holding every one of a, b (b
 * may be NULL), within ms: its text, or NULL. Others are read and dropped.
 */
static const char *
syslog_wait(int fd, const char *a, const char *b, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[4096];
	ssize_t n;

	for (;;) {
		while ((n = recv(fd, buf, sizeof(buf) - 1, 0)) > 0) {
			buf[n] = '\0';
			if (strstr(buf, a) != NULL &&
			    (b == NULL || strstr(buf, b) != NULL))
				return h_strf("%s", buf);
		}
		if (h_now_ms() >= deadline)
			return NULL;
		poll(&pfd, 1, (int)(deadline - h_now_ms()));
	}
}

/*
 * log_target = syslog, and the syslog daemon goes away (restarted: its
 * socket closed, /dev/log gone) while clients are rejected: their lines are
 * lost. Once /dev/log is back, the daemon finds it again, and one
 * event=log_dropped line counts at least every reject line lost meanwhile.
 */
START_TEST(log_dropped_syslog_reopened)
{
	struct h_backend *dead = h_backend(H_REFUSE);
	const char *flood = h_free_addr4();
	struct h_daemon *d;
	const char *line;
	unsigned i, lost_rejects = 0;
	int log;

	if (!h_own_dev_log())
		h_skip("no /dev of the test's own here: %s", strerror(errno));
	log = h_dev_log_open();
	h_assert(log != -1, "bind /dev/log: %s", strerror(errno));
	d = h_daemon_start(h_strf("%s%s",
	    global_section(1,
		"log_target = syslog\n"
		"log_rejects_per_second = 1000000"),
	    h_upstream("db", flood, h_backend_addr(dead),
		"recovery_timeout = 1h\nrecovery_timeout_max = 1h")));
	for (i = 0; i < 5; i++)
		h_close(h_connect(flood, H_WAIT_MS));
	h_assert(syslog_wait(log, "event=state upstream=db", "to=open",
		     H_WAIT_MS) != NULL,
	    "no state line on the test's /dev/log");
	line = syslog_wait(log, "event=reject upstream=db", NULL, H_WAIT_MS);
	h_assert(line == NULL || strstr(line, "circuitproxyd[") != NULL,
	    "not a syslog line: %s", line);

	/* The syslog daemon restarts: every line meanwhile is lost. */
	h_dev_log_close(log);
	/* Each reset is sent after its line: the line went nowhere. */
	for (i = 0; i < SYSLOG_LOST_REJECTS; i++) {
		h_client_expect_reset(flood, H_WAIT_MS, NULL);
		lost_rejects++;
	}
	log = h_dev_log_open();
	h_assert(log != -1, "bind /dev/log again: %s", strerror(errno));
	/* A line to write finds /dev/log again; the count follows it. */
	h_close(h_connect(flood, H_WAIT_MS));
	line = syslog_wait(log, "level=warning event=log_dropped", NULL,
	    H_WAIT_MS);
	h_assert(line != NULL,
	    "no event=log_dropped after %u reject lines lost to a missing "
	    "/dev/log",
	    lost_rejects);
	h_assert(h_log_double(strstr(line, "level="), "lines") >= lost_rejects,
	    "%s: fewer than the %u reject lines lost", line, lost_rejects);
	h_dev_log_close(log);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Wait until the daemon holds want descriptors (its table full again once
 * accepting resumed after a pause: the backlog fills what was freed); the
 * last count, want if reached within ms.
 */
static int
nfds_reach(struct h_daemon *d, int want, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	int n;

	while ((n = h_daemon_nfds(d)) != want && h_now_ms() < deadline)
		poll(NULL, 0, 5);
	return n;
}

/*
 * Idle clients fill the daemon's descriptor table (a low RLIMIT_NOFILE):
 * accepting pauses on EMFILE, yet WATCHDOG=1 keeps coming every half of
 * WATCHDOG_USEC, and a breaker transition on the timer still reaches the
 * manager as STATUS=, on the notify socket opened at start.
 */
START_TEST(notify_with_full_table)
{
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *dead = h_backend(H_REFUSE);
	const char *api = h_free_addr4(), *lis = h_free_addr4();
	struct h_opts opts = {
		.env = { "WATCHDOG_USEC=" H_STR(FULL_WATCHDOG_US), NULL }
	};
	const char *config = h_strf("%s%s%s", global_section(1, ""),
	    h_upstream("api", api, h_backend_addr(echo), ""),
	    h_upstream("dead", lis, h_backend_addr(dead),
		"recovery_timeout = " H_STR(
		    FULL_RECOVERY_MS) "ms\n"
				      "recovery_timeout_max = 1h"));
	struct h_daemon *d = h_daemon_start_opts(&opts, config);
	int fds[FULL_CLIENTS], i, used, n;
	size_t mark, lmark;
	unsigned pings;

	/*
	 * Room for exactly FULL_ROOM relays of two descriptors each: then the
	 * table is full, with not one descriptor left over.
	 */
	used = h_daemon_nfds_settled(d);
	h_daemon_stop_ok(d);
	opts.nofile = (unsigned)used + 2 * FULL_ROOM;
	d = h_daemon_start_opts(&opts, config);

	for (i = 0; i < 5; i++)
		h_close(h_connect(lis, H_WAIT_MS));
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=dead", "to=open");

	/* Idle clients until the daemon runs out of descriptors. */
	lmark = h_log_mark(d);
	for (i = 0; i < FULL_CLIENTS; i++)
		fds[i] = h_connect(api, H_WAIT_MS);
	h_expect_log_after(d, lmark, H_WAIT_MS, "event=accept_paused",
	    "error=EMFILE");
	n = nfds_reach(d, (int)opts.nofile, H_WAIT_MS);
	h_assert(n == (int)opts.nofile, "%d descriptors open, %u the limit", n,
	    opts.nofile);

	mark = h_notify_mark(d);
	pings = h_wait_notify_count(d, mark, "WATCHDOG=1", 5, 2000);
	h_assert(pings >= 5,
	    "%u WATCHDOG=1 in 2 s with the descriptor table full, at a "
	    "%d ms interval",
	    pings, FULL_WATCHDOG_US / 2000);
	h_assert(h_wait_notify_after(d, mark, "STATUS=2 upstreams, 0 open,*",
		     FULL_RECOVERY_MS + H_WAIT_MS) >= 0,
	    "no STATUS= for the circuit's half_open with the table full");
	n = nfds_reach(d, (int)opts.nofile, H_WAIT_MS);
	h_assert(n == (int)opts.nofile,
	    "the table was no longer full when STATUS= came: %d of %u", n,
	    opts.nofile);

	for (i = 0; i < FULL_CLIENTS; i++)
		h_close(fds[i]);
	h_daemon_stop_ok(d);
}
END_TEST

#define reload(d, config) h_reload((d), (config))

/*
 * A reload moves a port from 127.0.0.1:P to *:P and back (-t accepts
 * both): each applies, the relay open all along keeps answering, and the
 * new socket serves what it should: 127.0.0.2:P only while on *:P.
 */
START_TEST(reload_host_wildcard_and_back)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *host = h_free_addr4(), *port = h_port_of(host);
	const char *wild = h_strf("*:%s", port);
	const char *other = h_strf("127.0.0.2:%s", port);
	const char *on_host = h_strf("%s%s", global_section(2, ""),
	    h_upstream("api", host, h_backend_addr(echo), ""));
	const char *on_wild = h_strf("%s%s", global_section(2, ""),
	    h_upstream("api", wild, h_backend_addr(echo), ""));
	struct h_daemon *d = h_daemon_start(on_host);
	size_t mark;
	int fd, fd2;

	fd = h_connect_ok(host);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS), "no relay");
	h_assert(!h_echo_roundtrip(other, "x", 500), "served on %s", other);

	mark = reload(d, on_wild);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(h_count_log_after(d, mark, "result=error") == 0,
	    "the move to %s failed", wild);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
	    "the open relay was dropped");
	h_assert(h_served_within(other, 1000, H_WAIT_MS), "%s is not served",
	    other);
	fd2 = h_connect_ok(host);
	h_assert(h_echo_on(fd2, "ping\n", RELAY_MS),
	    "no relay on the wildcard");

	mark = reload(d, on_host);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(h_count_log_after(d, mark, "result=error") == 0,
	    "the move back to %s failed", host);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS) &&
		h_echo_on(fd2, "ping\n", RELAY_MS),
	    "an open relay was dropped");
	h_assert(h_served_within(host, 1000, H_WAIT_MS), "%s is not served",
	    host);
	h_assert(!h_echo_roundtrip(other, "x", 500), "%s still served", other);
	close(fd);
	close(fd2);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The move to *:P cannot bind (another socket holds 127.0.0.2:P): the
 * reload fails and is rolled back, and 127.0.0.1:P, shut down for the
 * attempt, listens again.
 */
START_TEST(reload_wildcard_rolled_back)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *host = h_free_addr4(), *port = h_port_of(host);
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s", global_section(2, ""),
		h_upstream("api", host, h_backend_addr(echo), "")));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	size_t mark;
	int fd, blocker;

	blocker = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sin.sin_port = htons((uint16_t)atoi(port));
	sin.sin_addr.s_addr = htonl(0x7f000002);
	h_assert(blocker != -1 &&
		bind(blocker, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
		listen(blocker, 1) == 0,
	    "127.0.0.2:%s: %s", port, strerror(errno));
	fd = h_connect_ok(host);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS), "no relay");

	mark = reload(d,
	    h_strf("%s%s", global_section(2, ""),
		h_upstream("api", h_strf("*:%s", port), h_backend_addr(echo),
		    "")));
	/* Named as at start: FILE:LINE: upstream 'api': the cause. */
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=error",
	    h_strf("error=\"%s:%d:", h_daemon_config(d),
		lines_of(global_section(2, "")) + 2),
	    "upstream", "'api':");
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
	    "the open relay was dropped");
	h_assert(h_served_within(host, 1000, H_WAIT_MS),
	    "%s does not listen again after the failed reload", host);
	close(blocker);
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Stop one worker thread of the daemon (its loop hangs), or skip the test
 * where that cannot be done: under a wrapper such as valgrind, which runs
 * one thread at a time, or where ptrace is not allowed.
 */
#define stop_worker_or_skip(d, name, tid)                                      \
	do {                                                                   \
		const char *w_ = getenv("CP_TEST_WRAPPER");                    \
		if (w_ != NULL && *w_ != '\0')                                 \
			h_skip("a thread cannot be stopped alone under %s",    \
			    w_);                                               \
		if (((tid) = h_daemon_thread_stop((d), (name))) == -1 &&       \
		    errno == EPERM)                                            \
			h_skip("ptrace is not allowed here: %s",               \
			    strerror(errno));                                  \
		h_assert((tid) != -1, "cannot stop thread %s: %s", (name),     \
		    strerror(errno));                                          \
	} while (0)

/* Write a config aside and rename it over the daemon's, all at once. */
static void
replace_config(struct h_daemon *d, const char *config)
{
	const char *next = h_write_file("next.ini", config);

	h_assert(rename(next, h_daemon_config(d)) == 0, "rename: %s",
	    strerror(errno));
}

/*
 * SIGHUPs while a reload is in progress (a worker has not applied it yet:
 * here it is held stopped), the file changed before each: none is
 * refused; once the reload is done, the file as it was at the last signal
 * runs, once: two reloads in all, the last one's upstream listening.
 */
START_TEST(reload_burst_of_sighups)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *api = h_free_addr4(), *last = h_free_addr4();
	const char *base = h_upstream("api", api, h_backend_addr(echo), "");
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s", global_section(2, ""), base));
	size_t mark = h_log_mark(d), nmark = h_notify_mark(d);
	unsigned i, n;
	pid_t tid;

	stop_worker_or_skip(d, "cpd-worker-1", tid);
	replace_config(d,
	    h_strf("%s%s", global_section(2, "log_rejects_per_second = 1"),
		base));
	h_daemon_signal(d, SIGHUP);
	h_assert(h_wait_notify_after(d, nmark, "RELOADING=1", H_WAIT_MS) >= 0,
	    "no RELOADING=1");
	for (i = 2; i <= BURST_SIGHUPS; i++) {
		replace_config(d,
		    i < BURST_SIGHUPS
			? h_strf("%s%s",
			      global_section(2,
				  h_strf("log_rejects_per_second = %u", i)),
			      base)
			: h_strf("%s%s%s", global_section(2, ""), base,
			      h_upstream("last", last, h_backend_addr(echo),
				  "")));
		h_daemon_signal(d, SIGHUP);
	}
	/*
	 * Only for the daemon before the fix, which refused them: let the
	 * main thread see the signals while the reload still waits. The
	 * daemon under test must pass whatever the timing.
	 */
	poll(NULL, 0, 200);
	h_daemon_thread_cont(d, tid);

	h_expect_log_after(d, mark, H_WAIT_MS, "event=listen", "upstream=last");
	h_assert(h_served_within(last, 1000, H_WAIT_MS),
	    "the last file does not run");
	h_assert(h_count_log_after(d, mark, "event=reload", "result=error") ==
		0,
	    "a SIGHUP of the burst was refused");
	/*
	 * The held one and one for the rest; a third if, on a loaded box,
	 * the main thread saw a signal only after the held one was done.
	 */
	n = h_wait_count_after(d, mark, 2, H_WAIT_MS, "event=reload",
	    "result=ok");
	h_assert(n >= 2 && n <= 3, "%u reloads ran for %d SIGHUPs", n,
	    BURST_SIGHUPS);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A worker's event loop hangs (its thread is stopped, the rest of the
 * process runs on): WATCHDOG=1 stops, with one line naming the worker;
 * once it turns again, the pings resume. Each step waits on what it
 * expects (a line, a ping), not on the clock, so that a busy machine
 * only makes it slower: the interval (1 s, a ping every 0.5 s) is long
 * enough that a running worker is never taken for a hung one there.
 */
START_TEST(watchdog_hung_worker)
{
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_opts opts = {
		.env = { "WATCHDOG_USEC=" H_STR(HUNG_WATCHDOG_US), NULL }
	};
	struct h_daemon *d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_section(2, ""),
		h_upstream("api", h_free_addr4(), h_backend_addr(echo), "")));
	size_t mark, lmark;
	pid_t tid;

	h_assert(h_wait_notify_count(d, 0, "WATCHDOG=1", 2, H_WAIT_MS) >= 2,
	    "no WATCHDOG=1 at all");
	lmark = h_log_mark(d);
	stop_worker_or_skip(d, "cpd-worker-1", tid);
	h_expect_log_after(d, lmark, H_WAIT_MS, "level=error", "event=watchdog",
	    "worker=1");
	/* Pings sent before that line are behind the mark (it drains). */
	mark = h_notify_mark(d);
	h_assert(h_wait_notify_count(d, mark, "WATCHDOG=1", 1,
		     2 * HUNG_WATCHDOG_US / 1000) == 0,
	    "WATCHDOG=1 with worker 1's loop stopped");

	lmark = h_log_mark(d);
	h_daemon_thread_cont(d, tid);
	h_expect_log_after(d, lmark, H_WAIT_MS, "event=watchdog", "result=ok");
	h_assert(h_wait_notify_count(d, mark, "WATCHDOG=1", 2, H_WAIT_MS) >= 2,
	    "the pings did not resume once the worker turned again");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A config file any local user may change is warned about: by -t (which
 * still accepts it), at start and at each reload, not once it is fixed.
 */
START_TEST(config_world_writable)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *config = h_strf("%s%s", global_section(1, ""),
	    h_upstream("api", h_free_addr4(), h_backend_addr(echo), ""));
	const char *path = h_write_file("open.ini", config);
	struct h_daemon *d;
	struct h_run r;
	size_t mark;

	h_assert(chmod(path, 0666) == 0, "chmod: %s", strerror(errno));
	h_run(&r, "-t", "-c", path);
	h_assert(r.status == 0, "-t exited %d", r.status);
	h_assert(strstr(r.err, "world-writable") != NULL,
	    "-t did not warn:\n%s", r.err);

	d = h_daemon_start(config);
	/* A warning would come before the listen line. */
	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=api");
	h_assert(h_count_log(d, "event=config_insecure") == 0,
	    "a warning for a file nobody else may write");
	h_assert(chmod(h_daemon_config(d), 0666) == 0, "chmod: %s",
	    strerror(errno));
	mark = reload(d, config);
	h_expect_log_after(d, mark, H_WAIT_MS, "level=warning",
	    "event=config_insecure", h_strf("file=%s", h_daemon_config(d)));
	h_daemon_stop_ok(d);

	d = h_daemon_start(NULL, "-c", path);
	h_expect_log(d, H_WAIT_MS, "level=warning", "event=config_insecure",
	    h_strf("file=%s", path));
	h_assert(chmod(path, 0644) == 0, "chmod: %s", strerror(errno));
	mark = h_log_mark(d);
	h_daemon_signal(d, SIGHUP);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(h_count_log_after(d, mark, "event=config_insecure") == 0,
	    "a warning once the file was fixed");
	h_daemon_stop_ok(d);
}
END_TEST

/* Where a descriptor of the daemon points ("/dev/null", "pipe:[N]"). */
static const char *
fd_target(struct h_daemon *d, int fd)
{
	char path[64], link[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)h_daemon_pid(d),
	    fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return h_strf("(%s)", strerror(errno));
	link[n] = '\0';
	return h_strf("%s", link);
}

/*
 * Started by a supervisor with stdin, stdout and stderr closed: the daemon
 * opens /dev/null on all three first thing, so that libevent's signal pipe
 * does not take fd 2 and receive every log line. It relays, reloads on
 * SIGHUP (through that signal pipe) and stops cleanly on SIGTERM.
 */
START_TEST(started_with_std_fds_closed)
{
	struct h_opts opts = { .std_closed = true };
	struct h_backend *echo = h_backend(H_ECHO);
	const char *api = h_free_addr4();
	const char *config = h_strf("%s%s", global_section(1, ""),
	    h_upstream("api", api, h_backend_addr(echo), ""));
	const char *wrapper = getenv("CP_TEST_WRAPPER");
	struct h_daemon *d;
	const char *t;
	int fd, i;

	if (wrapper != NULL && *wrapper != '\0')
		h_skip("%s keeps fd 2 for its own output: it refuses the "
		       "daemon's dup2 there",
		    wrapper);
	d = h_daemon_start_opts(&opts, config);

	for (i = 0; i <= 2; i++) {
		t = fd_target(d, i);
		h_assert(strcmp(t, "/dev/null") == 0,
		    "the daemon's fd %d is %s, not /dev/null", i, t);
	}
	fd = h_connect_ok(api);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
	    "the relay does not answer");
	close(fd);
	/* Two reloads with log lines each: the signal pipe still works. */
	for (i = 0; i < 2; i++)
		h_reload(d, config);
	fd = h_connect_ok(api);
	h_assert(h_echo_on(fd, "ping\n", RELAY_MS),
	    "the relay does not answer after the reloads");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/* The baddays stories, each in its own test case. */
static Suite *
baddays_suite(void)
{
	Suite *s = suite_create("baddays");

	H_TEST(s, log_stalled_sink);
	H_TEST(s, log_dropped_while_loss_goes_on);
	H_TEST(s, log_dropped_syslog_reopened);
	H_TEST(s, notify_with_full_table);
	H_TEST(s, reload_host_wildcard_and_back);
	H_TEST(s, reload_wildcard_rolled_back);
	H_TEST(s, reload_burst_of_sighups);
	H_TEST(s, watchdog_hung_worker);
	H_TEST(s, config_world_writable);
	H_TEST(s, started_with_std_fds_closed);
	return s;
}

H_MAIN(baddays_suite)
