/*
 * End-to-end stories for SPEC promises that had none (issue #12): slow and
 * unreachable connects, the early-close success, the http503 Retry-After,
 * backup chains, the reject budgets, the journal prefix, server-side
 * half-close, reset and backpressure, and host names resolved again on
 * reload (SIGINT as the second signal is in check_ops). Each checks what
 * an operator would: the bytes a client gets and every field of the log
 * line SPEC 5 gives it.
 */
#include <sys/socket.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* The [global] section of these stories: one worker, no admin. */
static const char *
global_section(const char *level, unsigned rejects_per_second,
    const char *shutdown_timeout)
{
	return h_strf("[global]\n"
		      "log_level = %s\n"
		      "workers = 1\n"
		      "admin =\n"
		      "shutdown_timeout = %s\n"
		      "log_rejects_per_second = %u\n"
		      "\n",
	    level, shutdown_timeout, rejects_per_second);
}

/*
 * A config of one upstream "api" to server, with keys: the [global] section
 * at that log level and reject-line rate.
 */
static const char *
config_api(const char *level, unsigned rejects_per_second, const char *lis,
    const char *server, const char *keys)
{
	return h_strf("%s%s", global_section(level, rejects_per_second, "2s"),
	    h_upstream("api", lis, server, keys));
}

/* One upstream "api" at info level, rejects logged up to 100 a second. */
static struct h_daemon *
start_api(const char *lis, const struct h_backend *srv, const char *keys)
{
	return h_daemon_start(
	    config_api("info", 100, lis, h_backend_addr(srv), keys));
}

/* Sum a numeric field over the lines from mark holding every pattern. */
static unsigned
sum_field(struct h_daemon *d, size_t mark, const char *field, const char *event,
    const char *up)
{
	const char *line;
	unsigned sum = 0;
	double v;
	size_t i;

	for (i = mark; (line = h_log_line(d, i)) != NULL; i++) {
		if (!h_line_has(line, event) || !h_line_has(line, up))
			continue;
		v = h_log_double(line, field);
		h_assert(!isnan(v) && v >= 1, "%s= in %s", field, line);
		sum += (unsigned)v;
	}
	return sum;
}

/*
 * slow_connect = 500ms (SPEC 4): a server whose accept queue is full drops
 * the daemon's SYN, then starts accepting, so the connect completes when
 * the SYN is sent again, about a second after the first. That attempt is a
 * failure, error=slow with its elapsed time, and opens the circuit
 * (failure_threshold = 1); the client is relayed all the same.
 */
START_TEST(breaker_slow_connect)
{
	struct h_backend *srv = h_backend(H_BLACKHOLE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = start_api(lis, srv,
	    "connect_timeout = 5s\n"
	    "slow_connect = 500ms\n"
	    "failure_threshold = 1\n"
	    "recovery_timeout = 30s\n");
	const char *line;
	char *client;
	double el;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	/* The daemon's first SYN meets the full queue, then it opens. */
	poll(NULL, 0, 200);
	h_backend_unblock(srv, H_ECHO);
	line = h_expect_log(d, H_WAIT_MS, "event=connect_fail", "error=slow");
	h_assert_fields_only(line, "level=warning", "event=connect_fail",
	    "upstream=api", h_strf("server=%s", h_backend_addr(srv)),
	    h_strf("client=%s", client), "error=slow", "elapsed_ms=");
	el = h_log_double(line, "elapsed_ms");
	h_assert_between(el, 500, 4000, "elapsed_ms of a slow connect");
	line = h_expect_log(d, H_WAIT_MS, "event=state", "to=open");
	h_assert_fields_only(line, "level=warning", "event=state",
	    "upstream=api", "from=closed", "to=open",
	    "reason=consecutive_failures", "failures=1", "retry_after=##.###");
	h_assert(h_echo_on(fd, "slow!", H_WAIT_MS),
	    "the slow client was not relayed");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * error=unreachable (SPEC 4): in a network namespace with only loopback,
 * a server on 192.0.2.1 (TEST-NET-1) has no route: the connect fails at
 * once with ENETUNREACH.
 */
START_TEST(breaker_unreachable)
{
	const char *lis, *line;
	struct h_daemon *d;
	char *client;

	if (!h_own_netns())
		h_skip("no network namespace of the test's own: %s",
		    strerror(errno));
	lis = h_free_addr4();
	d = h_daemon_start(config_api("info", 100, lis, "192.0.2.1:9",
	    "failure_threshold = 2\n"
	    "recovery_timeout = 30s\n"));
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	line = h_expect_log(d, H_WAIT_MS, "event=connect_fail");
	h_assert_fields_only(line, "level=warning", "event=connect_fail",
	    "upstream=api", "server=192.0.2.1:9", h_strf("client=%s", client),
	    "error=unreachable", "elapsed_ms=#*");
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "to=open",
	    "reason=consecutive_failures", "failures=2");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * failure_on_early_close (SPEC 4): the attempt's success is recorded when
 * the server sends its first byte, not when connect_timeout (3s) passes.
 * A half_open trial against a server that greets at once closes the
 * circuit right away.
 */
START_TEST(breaker_early_close_first_byte)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = start_api(lis, srv,
	    "failure_on_early_close = yes\n"
	    "connect_timeout = 3s\n"
	    "failure_threshold = 1\n"
	    "recovery_timeout = 300ms\n"
	    "half_open_max_calls = 1\n"
	    "success_threshold = 1\n");
	const char *line;
	uint64_t t0;
	char buf[6];
	int fd;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "to=open");
	h_backend_set_banner(srv, "hello\n");
	h_backend_set_kind(srv, H_BANNER);
	h_expect_log(d, H_WAIT_MS, "event=state", "to=half_open");
	t0 = h_now_ms();
	fd = h_connect_ok(lis);
	h_assert(h_recv_exact(fd, buf, 6, H_WAIT_MS) == H_OUT_DATA &&
		memcmp(buf, "hello\n", 6) == 0,
	    "the trial did not get the greeting");
	line = h_expect_log(d, H_WAIT_MS, "event=state", "from=half_open",
	    "to=closed");
	h_assert_fields_only(line, "level=info", "event=state", "upstream=api",
	    "from=half_open", "to=closed", "reason=trials_succeeded");
	h_assert_between(h_now_ms() - t0, 0, 1500,
	    "ms from the greeting to closed (connect_timeout is 3s)");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/* The Retry-After header of an http503 reply, or -1. */
static int
retry_after_of(const char *addr, char **reply_out)
{
	enum h_outcome out;
	const char *ra;
	char *reply;
	size_t len;
	int fd;

	fd = h_connect_ok(addr);
	out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
	close(fd);
	h_assert(out == H_OUT_EOF, "the 503 ended with %s: \"%s\"",
	    h_outcome_name(out), reply);
	h_assert(strncmp(reply, "HTTP/1.1 503 Service Unavailable\r\n", 34) ==
		0,
	    "status line: \"%s\"", reply);
	*reply_out = reply;
	ra = strcasestr(reply, "\r\nRetry-After: ");
	return ra != NULL ? atoi(ra + 15) : -1;
}

/*
 * reject = http503 (SPEC 4): Retry-After is the whole seconds until the
 * circuit leaves open, rounded up: exactly ceil(retry_after) of the
 * client's reject line. In half_open with no trial slot it is 0.
 */
START_TEST(breaker_http503_retry_after)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = start_api(lis, srv,
	    "reject = http503\n"
	    "failure_threshold = 1\n"
	    "recovery_timeout = 2500ms\n"
	    "half_open_max_calls = 1\n"
	    "success_threshold = 1\n"
	    "failure_on_early_close = yes\n"
	    "connect_timeout = 5s\n");
	const char *line;
	char *reply;
	double ra;
	int secs, trial;
	size_t mark;

	h_client_try(lis, H_WAIT_MS, NULL, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "to=open");
	mark = h_log_mark(d);
	secs = retry_after_of(lis, &reply);
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=reject");
	h_assert_fields_only(line, "level=notice", "event=reject",
	    "upstream=api", "client=", "state=open", "retry_after=#.###");
	ra = h_log_double(line, "retry_after");
	h_assert(ra > 1.5 && ra <= 2.5, "retry_after=%.3f", ra);
	h_assert(secs == (int)ceil(ra), "Retry-After: %d for retry_after=%.3f",
	    secs, ra);
	h_assert(strstr(reply, "\r\nConnection: close\r\n") != NULL,
	    "no Connection: close: \"%s\"", reply);

	/* half_open, its one slot held by a trial the server never answers. */
	h_backend_set_kind(srv, H_SILENT);
	h_expect_log(d, H_WAIT_MS, "event=state", "to=half_open");
	trial = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS), "no trial");
	mark = h_log_mark(d);
	secs = retry_after_of(lis, &reply);
	h_assert(secs == 0, "Retry-After: %d in half_open: \"%s\"", secs,
	    reply);
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=reject");
	h_assert_fields_only(line, "level=notice", "event=reject",
	    "upstream=api", "client=", "state=half_open", "retry_after=0.000");
	close(trial);
	h_daemon_stop_ok(d);
}
END_TEST

/* Connect, send, read the echo, keep the client open; the fd. */
static int
echo_client(const char *addr, const char *msg)
{
	size_t n = strlen(msg);
	char buf[64];
	int fd = h_connect_ok(addr);

	h_assert(h_send_all(fd, msg, n, H_WAIT_MS) == 0 &&
		h_recv_exact(fd, buf, n, H_WAIT_MS) == H_OUT_DATA &&
		memcmp(buf, msg, n) == 0,
	    "no echo of \"%s\" through %s", msg, addr);
	return fd;
}

/* One client failed over to b2: relayed, then closed. */
static void
failover_once(const char *lis)
{
	uint64_t deadline = h_now_ms() + H_WAIT_MS;
	char buf[2];
	int fd;

	/* b2's slot comes free once the daemon sees the last close. */
	for (;;) {
		/* A reset may come before connect() returns. */
		fd = h_connect(lis, H_WAIT_MS);
		if (fd != -1 && h_send_all(fd, "x", 1, H_WAIT_MS) == 0 &&
		    h_recv_exact(fd, buf, 1, H_WAIT_MS) == H_OUT_DATA)
			break;
		/* b2's overload reject: not a failover. */
		h_close(fd);
		h_assert(h_now_ms() < deadline, "b2 stays full");
		poll(NULL, 0, 10);
	}
	close(fd);
}

/*
 * Backups (SPEC 4): api's circuit is open; its backup b1 has a breaker of
 * its own, which opens on its own failure; then clients go down the chain
 * to b2, whose max_connections (1) turns a second client away as b2's
 * overload. Failovers over the log budget (1 a second) are summed in
 * failover_summary lines, one alone too: lines and summaries add up to
 * every failover.
 */
START_TEST(breaker_backup_chain)
{
	struct h_backend *down = h_backend(H_REFUSE);
	struct h_backend *down1 = h_backend(H_REFUSE);
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	const char *keys = "failure_threshold = 1\nrecovery_timeout = 30s\n";
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s%s%s", global_section("info", 1, "2s"),
		h_upstream("api", lis, h_backend_addr(down),
		    h_strf("%sbackup = b1\n", keys)),
		h_upstream("b1", NULL, h_backend_addr(down1),
		    h_strf("%sbackup = b2\n", keys)),
		h_upstream("b2", NULL, h_backend_addr(echo),
		    h_strf("%smax_connections = 1\n", keys))));
	const char *line;
	char *client;
	unsigned lines, summed, total = 2;
	uint64_t deadline;
	bool single = false;
	size_t mark;
	int fd, tries;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");

	/* api open, b1 closed: b1 takes the client, fails, and opens. */
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	line = h_expect_log(d, H_WAIT_MS, "event=failover");
	h_assert_fields_only(line, "level=notice", "event=failover",
	    "upstream=api", "backup=b1", h_strf("client=%s", client),
	    "state=open");
	h_expect_log(d, H_WAIT_MS, "event=connect_fail", "upstream=b1",
	    h_strf("client=%s", client), "error=refused");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=b1", "to=open",
	    "reason=consecutive_failures");

	/* api and b1 open: down the chain to b2, which relays. */
	fd = echo_client(lis, "via b2");
	h_assert(h_backend_accepted(echo) == 1, "b2's server saw %u",
	    h_backend_accepted(echo));

	/* b2 full: the next client is b2's overload reject, not api's. */
	mark = h_log_mark(d);
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=reject");
	h_assert_fields_only(line, "level=notice", "event=reject",
	    "upstream=b2", h_strf("client=%s", client), "reason=overload",
	    "max_connections=1");
	h_assert(h_count_log(d, "event=reject", "upstream=api") == 0,
	    "a client of b2's overload logged as api's reject");
	close(fd);
	h_assert(h_backend_wait_idle(echo, H_WAIT_MS), "b2's relay lingers");

	/*
	 * Two failovers at once, a second after the last: the first is
	 * logged, the second summed on its own (failovers=1). Tried again
	 * if the two fell into two seconds.
	 */
	for (tries = 0; tries < 4 && !single; tries++) {
		poll(NULL, 0, 1100);
		mark = h_log_mark(d);
		failover_once(lis);
		failover_once(lis);
		total += 2;
		h_assert(h_backend_wait_idle(echo, H_WAIT_MS), "b2 lingers");
		deadline = h_now_ms() + H_WAIT_MS;
		do {
			lines =
			    h_count_log(d, "event=failover", "upstream=api");
			summed = sum_field(d, 0, "failovers",
			    "event=failover_summary", "upstream=api");
			if (lines + summed >= total)
				break;
			h_log_wait_more(d, h_log_mark(d), 200);
		} while (h_now_ms() < deadline);
		h_assert(lines + summed == total,
		    "%u failover lines + %u summed, for %u failovers", lines,
		    summed, total);
		single = h_wait_log_after(d, mark, 0, "event=failover_summary",
			     "failovers=1") != NULL;
	}
	h_assert(single, "no failover_summary of a single failover");
	line = h_expect_log(d, 0, "event=failover_summary");
	h_assert_fields_only(line, "level=notice", "event=failover_summary",
	    "upstream=api", "failovers=", "period=#.###");
	h_assert_between(h_log_double(line, "period"), 0.5, 3.0, "period");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * log_rejects_per_second = 0 (SPEC 5): no reject line at all; summaries
 * alone, whose rejected= add up to every reject.
 */
START_TEST(log_rejects_zero)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(config_api("info", 0, lis, h_backend_addr(srv),
		"failure_threshold = 1\nrecovery_timeout = 30s\n"));
	const char *line;
	unsigned summed = 0;
	uint64_t deadline;
	int i;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	for (i = 0; i < 5; i++)
		h_client_expect_reset(lis, H_WAIT_MS, NULL);
	deadline = h_now_ms() + H_WAIT_MS;
	while ((summed = sum_field(d, 0, "rejected", "event=reject_summary",
		    "upstream=api")) < 5 &&
	    h_now_ms() < deadline)
		h_log_wait_more(d, h_log_mark(d), 200);
	h_assert(summed == 5, "%u rejects summed, 5 made", summed);
	h_assert(h_count_log(d, "event=reject") == 0,
	    "%u reject lines with log_rejects_per_second = 0",
	    h_count_log(d, "event=reject"));
	line = h_expect_log(d, 0, "event=reject_summary");
	h_assert_fields_only(line, "level=notice", "event=reject_summary",
	    "upstream=api", "rejected=", "period=#.###");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Under the journal (SPEC 5: JOURNAL_STREAM names stderr's device and
 * inode) each line starts with the syslog priority "<N>" of its level and
 * no timestamp: info 6, notice 5, warning 4.
 */
START_TEST(log_journal_prefix)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_opts opts = { .journal = true };
	struct h_daemon *d = h_daemon_start_opts(&opts,
	    config_api("info", 100, lis, h_backend_addr(srv),
		"failure_threshold = 1\nrecovery_timeout = 30s\n"));
	static const struct {
		const char *event, *prio;
	} want[] = {
		{ "event=start", "<6>" },
		{ "event=connect_fail", "<4>" },
		{ "event=state", "<4>" },
		{ "event=reject", "<5>" },
	};
	struct h_fields f;
	const char *line;
	size_t i;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		line = h_expect_log(d, H_WAIT_MS, want[i].event);
		h_assert(h_fields_parse(line, &f), "not logfmt: %s", line);
		h_assert(strcmp(f.prefix, want[i].prio) == 0,
		    "%s starts with \"%s\", not %s: %s", want[i].event,
		    f.prefix, want[i].prio, line);
		h_assert_fields(line, want[i].event);
	}
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Server-first half-close (SPEC 8): the server greets and sends its FIN
 * at once; the client reads the greeting then EOF, and may still send:
 * its bytes reach the server. When the client finishes too, the relay
 * ends as done (event=close at debug level).
 */
START_TEST(relay_server_half_close)
{
	struct h_backend *srv = h_backend(H_FIN_FIRST);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(
	    config_api("debug", 100, lis, h_backend_addr(srv), ""));
	char *got, msg[4096], *client;
	enum h_outcome out;
	size_t len;
	int fd;

	h_backend_set_banner(srv, "bye for now\n");
	memset(msg, 'm', sizeof(msg));
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	out = h_recv_all(fd, &got, &len, H_WAIT_MS);
	h_assert(out == H_OUT_EOF && len == 12 &&
		memcmp(got, "bye for now\n", 12) == 0,
	    "the server's greeting and FIN: %s after %zu bytes",
	    h_outcome_name(out), len);
	h_assert(h_send_all(fd, msg, sizeof(msg), H_WAIT_MS) == 0,
	    "send after the server's FIN");
	h_assert(h_backend_wait_received(srv, sizeof(msg), H_WAIT_MS),
	    "the server did not get the client's bytes after its FIN");
	shutdown(fd, SHUT_WR);
	h_expect_log(d, H_WAIT_MS, "event=close", h_strf("client=%s", client),
	    "reason=done");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A server reset in the middle of a relay (SPEC 8) reaches the client as a
 * reset, not an orderly EOF: the server greets, the client talks, then the
 * server resets (H_LATE_RST_MS after it accepted).
 */
START_TEST(relay_server_reset_mid_relay)
{
	struct h_backend *srv = h_backend(H_LATE_RST);
	const char *lis = h_free_addr4();
	struct h_daemon *d = start_api(lis, srv, "");
	enum h_outcome out;
	char buf[6];
	uint64_t t0;
	int fd;

	h_backend_set_banner(srv, "hello\n");
	t0 = h_now_ms();
	fd = h_connect_ok(lis);
	h_assert(h_recv_exact(fd, buf, 6, H_WAIT_MS) == H_OUT_DATA,
	    "no greeting");
	h_assert(h_send_all(fd, "talk", 4, H_WAIT_MS) == 0, "send");
	out = h_next_event(fd, H_WAIT_MS);
	h_assert(out == H_OUT_RESET, "the client saw %s, not a reset",
	    h_outcome_name(out));
	h_assert_between(h_now_ms() - t0, H_LATE_RST_MS - 50,
	    H_LATE_RST_MS + 2500, "ms to the reset");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Server -> client backpressure (SPEC 8): a server sends 32 MiB to a client
 * that does not read. The daemon stops reading the server, so its memory
 * stays flat; when the client reads, every byte arrives.
 */
START_TEST(relay_server_backpressure)
{
	const size_t big = 32u << 20;
	struct h_backend *srv = h_backend(H_BANNER);
	const char *lis = h_free_addr4();
	char *stream = malloc(big + 1), *got;
	struct h_daemon *d;
	enum h_outcome out;
	long rss0, rss1;
	size_t len, i;
	int fd;

	h_assert(stream != NULL, "malloc");
	memset(stream, 'b', big);
	stream[big] = '\0';
	h_backend_set_banner(srv, stream);
	d = start_api(lis, srv, "");
	rss0 = h_daemon_rss_kb(d);
	fd = h_connect_rcvbuf(lis, 16384);
	/* The kernel's buffers on the way fill up, then nothing moves. */
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS), "not relayed");
	poll(NULL, 0, 1000);
	rss1 = h_daemon_rss_kb(d);
	shutdown(fd, SHUT_WR);
	out = h_recv_all(fd, &got, &len, 4 * H_WAIT_MS);
	h_assert(len == big, "the client got %zu of %zu bytes (%s)", len, big,
	    h_outcome_name(out));
	for (i = 0; i < len && got[i] == 'b'; i++)
		;
	h_assert(i == len, "byte %zu is wrong", i);
	close(fd);
	free(stream);
	h_daemon_stop_ok(d);
	if (rss0 <= 0 || rss1 <= 0)
		h_skip("the daemon's RSS is not readable here");
	h_assert(rss1 - rss0 < 8 * 1024,
	    "the daemon grew %ld KiB holding a stream its client does not read",
	    rss1 - rss0);
}
END_TEST

/*
 * Host names are resolved when the config is loaded, at start and on
 * reload (SPEC 3). With /etc/hosts of the test's own (a mount namespace),
 * "cp-backend.test" names 127.0.0.1, where server A listens; the file then
 * names ::1, where server B listens on the same port; after SIGHUP new
 * clients reach B.
 */
START_TEST(reload_resolves_names_again)
{
	struct h_backend *a, *b;
	const char *lis, *port, *cfg;
	struct h_daemon *d;
	char buf[2];
	int fd;

	if (!h_own_hosts("127.0.0.1 cp-backend.test\n"))
		h_skip("no /etc/hosts of the test's own: %s", strerror(errno));
	a = h_backend(H_BANNER);
	port = h_port_of(h_backend_addr(a));
	b = h_backend_new_port(H_BANNER, AF_INET6, atoi(port));
	h_backend_set_banner(a, "A");
	h_backend_set_banner(b, "B");
	lis = h_free_addr4();
	cfg = config_api("info", 100, lis, h_strf("cp-backend.test:%s", port),
	    "");
	d = h_daemon_start(cfg);
	fd = h_connect_ok(lis);
	h_assert(h_recv_exact(fd, buf, 1, H_WAIT_MS) == H_OUT_DATA &&
		buf[0] == 'A',
	    "cp-backend.test did not reach 127.0.0.1 at start");
	close(fd);

	h_own_hosts_set("::1 cp-backend.test\n");
	h_daemon_signal(d, SIGHUP);
	h_expect_log(d, H_WAIT_MS, "event=reload", "result=ok");
	fd = h_connect_ok(lis);
	h_assert(h_recv_exact(fd, buf, 1, H_WAIT_MS) == H_OUT_DATA &&
		buf[0] == 'B',
	    "after the reload cp-backend.test still reached %c",
	    buf[0] == 'A' ? 'A' : '?');
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/* The stories, one test case each. */
static Suite *
promises_suite(void)
{
	Suite *s = suite_create("promises");

	H_TEST(s, breaker_slow_connect);
	H_TEST(s, breaker_unreachable);
	H_TEST(s, breaker_early_close_first_byte);
	H_TEST(s, breaker_http503_retry_after);
	H_TEST(s, breaker_backup_chain);
	H_TEST(s, log_rejects_zero);
	H_TEST(s, log_journal_prefix);
	H_TEST(s, relay_server_half_close);
	H_TEST(s, relay_server_reset_mid_relay);
	H_TEST(s, relay_server_backpressure);
	H_TEST(s, reload_resolves_names_again);
	return s;
}

H_MAIN(promises_suite)
