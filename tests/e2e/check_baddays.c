/*
 * End-to-end stories of the bad days of issue #9 (SPEC.md sections 5, 6
 * and 8): a stalled log sink, a full descriptor table, a hung worker,
 * bursts of SIGHUP, and reloads that move a port between a host address
 * and the wildcard. Each story failed on the daemon before its fix.
 */
#include <sys/socket.h>

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
/* A reply on a relay that the log must not hold up. */
#define RELAY_MS 2000

/* Relays the full-table story leaves room for, and its idle clients. */
#define FULL_ROOM 20
#define FULL_CLIENTS (FULL_ROOM + 10)
/* Its watchdog interval (pings at half of it) and open state. */
#define FULL_WATCHDOG_US 200000
#define FULL_RECOVERY_MS 3000

/* An upstream name of 64 characters, the longest: long reject lines. */
#define LONG_NAME                                                              \
	"flood-0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

/* The [global] section with more keys. */
static const char *
global_section(unsigned workers, const char *keys)
{
	return h_strf("[global]\n"
		      "log_level = info\n"
		      "workers = %u\n"
		      "admin =\n"
		      "shutdown_timeout = 2s\n"
		      "%s\n",
	    workers, keys);
}

/* An upstream section from a listen address to a server, with more keys. */
static const char *
upstream(const char *name, const char *listen, const char *server,
    const char *keys)
{
	return h_strf("[upstream:%s]\n"
		      "listen = %s\n"
		      "server = %s\n"
		      "%s\n",
	    name, listen, server, keys);
}

/* Stop the daemon and check it exits 0. */
static void
stop_ok(struct h_daemon *d)
{
	int st = h_daemon_stop(d);

	h_assert(st == 0, "the daemon exited with %d on SIGTERM", st);
}

/* One echo round trip on an open relay within ms. */
static bool
relay_answers(int fd, int ms)
{
	char back[8];

	return h_send_all(fd, "ping\n", 5, ms) == 0 &&
	    h_recv_exact(fd, back, 5, ms) == H_OUT_DATA &&
	    memcmp(back, "ping\n", 5) == 0;
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
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *dead = h_backend_new(H_REFUSE, AF_UNIX);
	const char *api = h_free_addr4(), *flood = h_free_addr(AF_UNIX);
	struct h_daemon *d = h_daemon_start(h_strf("%s%s%s",
	    global_section(1, "log_rejects_per_second = 1000000"),
	    upstream("api", api, h_backend_addr(echo), ""),
	    upstream(LONG_NAME, flood, h_backend_addr(dead),
		"recovery_timeout = 1h\nrecovery_timeout_max = 1h")));
	uint64_t t0 = h_now_ms();
	const char *line;
	unsigned i, sent = 0;
	size_t mark;
	double lost;
	int fd, c;

	fd = h_connect_ok(api);
	h_assert(relay_answers(fd, RELAY_MS), "the relay does not answer");
	for (i = 0; i < 5; i++)
		h_close(h_connect(flood, H_WAIT_MS));
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=" LONG_NAME,
	    "to=open");

	mark = h_log_mark(d);
	h_daemon_log_stall(d, true);
	for (i = 0; i < FLOOD_CLIENTS && h_now_ms() - t0 < FLOOD_MS; i++) {
		c = h_connect(flood, H_WAIT_MS);
		if (c != -1) {
			sent++;
			close(c);
		}
		if (i % FLOOD_PROBE_EVERY == 0)
			h_assert(relay_answers(fd, RELAY_MS),
			    "with the log stalled, the relay stopped "
			    "answering after %u rejected clients",
			    i);
	}
	h_assert(sent > FLOOD_CLIENTS * 9 / 10, "only %u clients of %u got in",
	    sent, i);
	h_assert(relay_answers(fd, RELAY_MS), "the relay stopped answering");

	h_daemon_log_stall(d, false);
	line = h_expect_log_after(d, mark, 2 * H_WAIT_MS, "level=warning",
	    "event=log_dropped", "lines=");
	lost = h_log_double(line, "lines");
	h_assert(lost > 0 && lost < sent, "lines=%.0f of %u rejects", lost,
	    sent);
	h_assert(h_count_log_after(d, mark, "event=log_dropped") == 1,
	    "more than one log_dropped line after one stall");
	h_assert(relay_answers(fd, RELAY_MS), "the relay stopped answering");
	close(fd);
	stop_ok(d);
}
END_TEST

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
	    upstream("api", api, h_backend_addr(echo), ""),
	    upstream("dead", lis, h_backend_addr(dead),
		"recovery_timeout = " H_STR(
		    FULL_RECOVERY_MS) "ms\n"
				      "recovery_timeout_max = 1h"));
	struct h_daemon *d = h_daemon_start_opts(&opts, config);
	int fds[FULL_CLIENTS], i, used;
	size_t mark, lmark;
	unsigned pings;

	/*
	 * Room for exactly FULL_ROOM relays of two descriptors each: then the
	 * table is full, with not one descriptor left over.
	 */
	used = h_daemon_nfds_settled(d);
	stop_ok(d);
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
	h_assert(h_daemon_nfds_settled(d) == (int)opts.nofile,
	    "%d descriptors open, %u the limit", h_daemon_nfds(d), opts.nofile);

	mark = h_notify_mark(d);
	pings = h_wait_notify_count(d, mark, "WATCHDOG=1", 5, 2000);
	h_assert(pings >= 5,
	    "%u WATCHDOG=1 in 2 s with the descriptor table full, at a "
	    "%d ms interval",
	    pings, FULL_WATCHDOG_US / 2000);
	h_assert(h_wait_notify_after(d, mark, "STATUS=2 upstreams, 0 open",
		     FULL_RECOVERY_MS + H_WAIT_MS) >= 0,
	    "no STATUS= for the circuit's half_open with the table full");
	lmark = h_log_mark(d);
	h_expect_log_after(d, lmark, 2000, "event=accept_paused",
	    "error=EMFILE");

	for (i = 0; i < FULL_CLIENTS; i++)
		h_close(fds[i]);
	stop_ok(d);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("baddays");

	H_TEST(s, log_stalled_sink);
	H_TEST(s, notify_with_full_table);
	return h_main(s);
}
