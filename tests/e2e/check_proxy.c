/*
 * End-to-end stories of the proxy (SPEC.md sections 4, 5 and 8): the real
 * daemon on a config snippet, real backends and clients on loopback, and
 * the bytes and log lines a user would look at. The harness_* cases check
 * the harness itself, with no daemon, so that a failing story can be
 * trusted to be the daemon's.
 */
#include <sys/socket.h>

#include <errno.h>
#include <poll.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Bytes sent each way in the large relay story. */
#define BIG_LEN (8u << 20)
#define CHUNK 65536
/* Clients at once in the parallel story. */
#define PARALLEL 100
/* What an open circuit may take to reset a client, sanitizers included. */
#define REJECT_MS 100
/* The slow reader: the stream it is sent, and how it reads, for how long. */
#define SLOW_STREAM (16u << 20)
#define SLOW_READ 16384
#define SLOW_EVERY_MS 50
#define SLOW_FOR_MS 4000
/* The longest it may wait for its next 16 KiB. */
#define SLOW_GAP_MS 1000

/*
 * The [global] section shared by every story: one worker, no admin; and
 * splice = off for every upstream when the stories run on recv/send.
 */
static const char *
global_section(unsigned workers, unsigned rejects_per_second)
{
	return h_strf("%s%s",
	    h_global_section(workers, "2s",
		h_strf("log_rejects_per_second = %u\n", rejects_per_second)),
	    *h_splice_keys() != '\0' ? "[defaults]\nsplice = off\n\n" : "");
}

/* A config of one upstream "api" from a listen address to a server. */
static const char *
config_api(const char *listen, const struct h_backend *server, const char *keys)
{
	return h_strf("%s%s", global_section(1, 100),
	    h_upstream("api", listen, h_backend_addr(server), keys));
}

/* The harness itself: an echo backend echoes, a client reads it back. */
START_TEST(harness_echo)
{
	struct h_backend *b = h_backend(H_ECHO);
	struct h_backend *b6 = h_backend_new(H_ECHO, AF_INET6);
	struct h_backend *bu = h_backend_new(H_ECHO, AF_UNIX);

	h_assert(h_echo_roundtrip(h_backend_addr(b), "hello", H_WAIT_MS),
	    "echo on %s", h_backend_addr(b));
	h_assert(h_echo_roundtrip(h_backend_addr(b6), "hello6", H_WAIT_MS),
	    "echo on %s", h_backend_addr(b6));
	h_assert(h_echo_roundtrip(h_backend_addr(bu), "hellou", H_WAIT_MS),
	    "echo on %s", h_backend_addr(bu));
	h_assert(h_backend_accepted(b) == 1, "accepted %u",
	    h_backend_accepted(b));
}
END_TEST

/* The harness: reply-after-EOF, banner, close, reset and silent servers. */
START_TEST(harness_behaviours)
{
	struct h_backend *reply = h_backend(H_REPLY_EOF);
	struct h_backend *banner = h_backend(H_BANNER);
	struct h_backend *closer = h_backend(H_CLOSE);
	struct h_backend *resetter = h_backend(H_RESET);
	struct h_backend *silent = h_backend(H_SILENT);
	struct h_backend *late = h_backend(H_LATE_RST);
	enum h_outcome out;
	char buf[16], *all;
	uint64_t el;
	size_t len;
	int fd;

	fd = h_connect_ok(h_backend_addr(reply));
	h_assert(h_send_all(fd, "abc", 3, H_WAIT_MS) == 0, "send");
	h_assert(h_next_event(fd, 200) == H_OUT_TIMEOUT, "reply before EOF");
	shutdown(fd, SHUT_WR);
	out = h_recv_all(fd, &all, &len, H_WAIT_MS);
	h_assert(out == H_OUT_EOF && len == 3 && memcmp(all, "abc", 3) == 0,
	    "reply after EOF: %s, %zu bytes", h_outcome_name(out), len);
	close(fd);

	h_backend_set_banner(banner, "220 hello\r\n");
	fd = h_connect_ok(h_backend_addr(banner));
	out = h_recv_exact(fd, buf, 11, H_WAIT_MS);
	h_assert(out == H_OUT_DATA && memcmp(buf, "220 hello\r\n", 11) == 0,
	    "banner: %s", h_outcome_name(out));
	close(fd);

	out = h_client_try(h_backend_addr(closer), H_WAIT_MS, NULL, NULL);
	h_assert(out == H_OUT_EOF, "closer: %s", h_outcome_name(out));
	out = h_client_try(h_backend_addr(resetter), H_WAIT_MS, NULL, NULL);
	h_assert(out == H_OUT_RESET, "resetter: %s", h_outcome_name(out));
	out = h_client_try(h_backend_addr(silent), 200, NULL, NULL);
	h_assert(out == H_OUT_TIMEOUT, "silent: %s", h_outcome_name(out));
	h_assert(h_backend_wait_accepted(silent, 1, H_WAIT_MS), "silent");
	out = h_client_try(h_backend_addr(late), H_WAIT_MS, &el, NULL);
	h_assert(out == H_OUT_RESET && el >= H_LATE_RST_MS - 50 &&
		el <= H_LATE_RST_MS + 2500,
	    "late reset: %s after %llu ms", h_outcome_name(out),
	    (unsigned long long)el);
}
END_TEST

/*
 * The harness: refused, blackholed, and a backend switched between kinds.
 * A unix blackhole checks itself: a probe's connect fails with EAGAIN.
 */
START_TEST(harness_refuse_blackhole)
{
	struct h_backend *refuse = h_backend(H_REFUSE);
	struct h_backend *hole = h_backend(H_BLACKHOLE);
	struct h_backend *uhole = h_backend_new(H_BLACKHOLE, AF_UNIX);
	enum h_outcome out;
	uint64_t t0, el;
	int fd, i;

	out = h_client_try(h_backend_addr(refuse), H_WAIT_MS, NULL, NULL);
	h_assert(out == H_OUT_REFUSED, "refuse: %s", h_outcome_name(out));

	/* The blackhole: every connect waits out its own timeout. */
	for (i = 0; i < 3; i++) {
		t0 = h_now_ms();
		fd = h_connect(h_backend_addr(hole), 300);
		el = h_now_ms() - t0;
		h_assert(fd == -1 && errno == ETIMEDOUT,
		    "blackhole connect %d: fd %d, %s", i, fd, strerror(errno));
		h_assert_between(el, 290, 1500,
		    "ms the blackhole held a connect");
	}

	h_backend_set_kind(refuse, H_ECHO);
	h_assert(h_echo_roundtrip(h_backend_addr(refuse), "x", H_WAIT_MS),
	    "refuse turned echo");
	h_backend_set_kind(refuse, H_REFUSE);
	out = h_client_try(h_backend_addr(refuse), H_WAIT_MS, NULL, NULL);
	h_assert(out == H_OUT_REFUSED, "echo turned refuse: %s",
	    h_outcome_name(out));
	h_backend_set_kind(refuse, H_ECHO);
	h_assert(h_echo_roundtrip(h_backend_addr(refuse), "y", H_WAIT_MS),
	    "refuse turned echo again");
	h_assert(strncmp(h_backend_addr(uhole), "unix:", 5) == 0, "%s",
	    h_backend_addr(uhole));
}
END_TEST

/* The harness: log field matching, values and timestamps. */
START_TEST(harness_logfmt)
{
	const char *line = "2026-11-28T19:18:52.250Z level=notice "
			   "event=reject upstream=api client=127.0.0.1:5 "
			   "state=open retry_after=29.412 msg=\"a b\"";
	char buf[32];

	h_assert(h_line_has(line, "event=reject"), "field");
	h_assert(h_line_has(line, "retry_after="), "key only");
	h_assert(!h_line_has(line, "upstream=ap"), "prefix of a value");
	h_assert(!h_line_has(line, "pstream=api"), "suffix of a key");
	h_assert(!h_line_has(line, "state=half_open"), "other value");
	h_assert(fabs(h_log_double(line, "retry_after") - 29.412) < 1e-9,
	    "retry_after");
	h_assert(isnan(h_log_double(line, "nope")), "absent key");
	h_assert(h_log_value(line, "msg", buf, sizeof(buf)) &&
		strcmp(buf, "a b") == 0,
	    "quoted value: %s", buf);
	h_assert(h_log_time_ms(line) == 1795893532250LL, "time %lld",
	    (long long)h_log_time_ms(line));
}
END_TEST

/* The harness: a log line as logfmt fields, and patterns on them. */
START_TEST(harness_fields)
{
	const char *line =
	    "2026-11-28T19:18:52.250Z level=notice "
	    "event=reject upstream=api client=127.0.0.1:5 "
	    "state=open retry_after=29.412 msg=\"a \\\"b\\\" c\"";
	const char *bad[] = { "level=info event=x key", "level=info event=\"x",
		"level=info event=\"x\"y", "=v level=info" };
	struct h_fields f;
	size_t i;

	h_assert(h_fields_parse(line, &f), "parse");
	h_assert(f.n == 7 && strcmp(f.prefix, "2026-11-28T19:18:52.250Z") == 0,
	    "%zu fields, prefix %s", f.n, f.prefix);
	h_assert(strcmp(h_field(&f, "msg"), "a \"b\" c") == 0, "msg=%s",
	    h_field(&f, "msg"));
	h_assert(h_field(&f, "upstrea") == NULL, "a prefix of a key");
	h_assert(h_fields_parse("<5>level=notice event=x", &f) &&
		strcmp(f.prefix, "<5>") == 0 && f.n == 2,
	    "journal prefix");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		h_assert(!h_fields_parse(bad[i], &f), "parsed %s", bad[i]);
	h_assert(h_value_matches("29.412", "#*.###"), "digits");
	h_assert(!h_value_matches("29.41", "#*.###"), "two decimals");
	h_assert(!h_value_matches("x9.412", "#*.###"), "a letter");
	h_assert(h_value_matches("127.0.0.1:5", "127.0.0.1:*"), "a run");
	h_assert(h_value_matches("", "*"), "empty run");
	h_assert_fields(line, "event=reject", "state=open",
	    "retry_after=##.###", "!reason", "client=");
	h_assert_fields_only(line, "upstream=api", "client=", "state=open",
	    "retry_after=", "msg=");
}
END_TEST

struct writer {
	int fd;
	uint64_t seed;
	size_t len;
	int err;
};

/* Send a pseudo-random stream, then shut the write side. */
static void *
writer_main(void *arg)
{
	struct writer *w = arg;
	struct h_rand r;
	char *buf = malloc(CHUNK);
	size_t done, n;

	h_rand_init(&r, w->seed);
	for (done = 0; done < w->len && buf != NULL; done += n) {
		n = w->len - done < CHUNK ? w->len - done : CHUNK;
		h_rand_fill(&r, buf, n);
		if (h_send_all(w->fd, buf, n, 20000) == -1) {
			w->err = errno;
			break;
		}
	}
	shutdown(w->fd, SHUT_WR);
	free(buf);
	return NULL;
}

/*
 * 8 MiB of random bytes go to an echo server through the proxy while the
 * client reads the echo at the same time: every byte comes back, in order,
 * and the client's FIN comes back as EOF.
 */
START_TEST(relay_large_both_ways)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, echo, ""));
	struct writer w = { .seed = 42, .len = BIG_LEN };
	char *got = malloc(CHUNK), *want = malloc(CHUNK);
	enum h_outcome out;
	struct h_rand r;
	pthread_t t;
	size_t done, n, i;

	h_assert(got != NULL && want != NULL, "malloc");
	w.fd = h_connect_ok(lis);
	h_assert(pthread_create(&t, NULL, writer_main, &w) == 0, "thread");
	h_rand_init(&r, 42);
	for (done = 0; done < BIG_LEN; done += n) {
		n = BIG_LEN - done < CHUNK ? BIG_LEN - done : CHUNK;
		out = h_recv_exact(w.fd, got, n, 20000);
		if (out != H_OUT_DATA)
			break;
		h_rand_fill(&r, want, n);
		if (memcmp(got, want, n) != 0) {
			for (i = 0; got[i] == want[i]; i++)
				;
			pthread_join(t, NULL);
			h_fail(H_WHERE, "byte %zu differs", done + i);
		}
	}
	pthread_join(t, NULL);
	h_assert(w.err == 0, "sending: %s", strerror(w.err));
	h_assert(done == BIG_LEN, "%zu of %u bytes came back, then %s", done,
	    BIG_LEN, h_outcome_name(out));
	out = h_next_event(w.fd, H_WAIT_MS);
	h_assert(out == H_OUT_EOF, "after the echo: %s, not EOF",
	    h_outcome_name(out));
	close(w.fd);
	free(got);
	free(want);
	h_assert(h_backend_accepted(echo) == 1, "server connections: %u",
	    h_backend_accepted(echo));
	h_daemon_stop_ok(d);
}
END_TEST

/* 100 clients at once, each relayed on its own connection to the server. */
START_TEST(relay_many_parallel)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, echo, ""));
	int fd[PARALLEL], i;
	char msg[1024], back[1024];
	enum h_outcome out;

	for (i = 0; i < PARALLEL; i++)
		fd[i] = h_connect_ok(lis);
	h_assert(h_backend_wait_active(echo, PARALLEL, H_WAIT_MS),
	    "the server holds %u of %d connections at once",
	    h_backend_active(echo), PARALLEL);
	for (i = 0; i < PARALLEL; i++) {
		memset(msg, 'a' + i % 26, sizeof(msg));
		snprintf(msg, sizeof(msg), "client %03d ", i);
		h_assert(h_send_all(fd[i], msg, sizeof(msg), H_WAIT_MS) == 0,
		    "send on client %d", i);
	}
	for (i = 0; i < PARALLEL; i++) {
		memset(msg, 'a' + i % 26, sizeof(msg));
		snprintf(msg, sizeof(msg), "client %03d ", i);
		out = h_recv_exact(fd[i], back, sizeof(back), H_WAIT_MS);
		h_assert(out == H_OUT_DATA, "client %d: %s", i,
		    h_outcome_name(out));
		h_assert(memcmp(back, msg, sizeof(msg)) == 0,
		    "client %d got another client's bytes", i);
	}
	for (i = 0; i < PARALLEL; i++)
		close(fd[i]);
	h_assert(h_backend_accepted(echo) == PARALLEL, "accepted %u",
	    h_backend_accepted(echo));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Half-close: the client sends its request and shuts its write side; the
 * server sees EOF only after the whole request, replies, and closes; the
 * client reads the whole reply, then EOF.
 */
START_TEST(relay_half_close)
{
	struct h_backend *srv = h_backend(H_REPLY_EOF);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv, ""));
	size_t len = 256 * 1024, got;
	char *req = malloc(len), *reply;
	enum h_outcome out;
	struct h_rand r;
	int fd;

	h_rand_init(&r, 7);
	h_rand_fill(&r, req, len);
	fd = h_connect_ok(lis);
	h_assert(h_send_all(fd, req, len, H_WAIT_MS) == 0, "send");
	h_assert(shutdown(fd, SHUT_WR) == 0, "shutdown");
	out = h_recv_all(fd, &reply, &got, 2 * H_WAIT_MS);
	h_assert(out == H_OUT_EOF, "the reply ended with %s after %zu bytes",
	    h_outcome_name(out), got);
	h_assert(got == len && memcmp(reply, req, len) == 0,
	    "reply of %zu bytes, %zu sent", got, len);
	close(fd);
	free(req);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Backpressure: a server that never reads. The client's writes stall once
 * the kernel buffers on the way are full, because the daemon stops reading
 * the client; it does not buffer the stream, and its memory stays flat.
 */
START_TEST(relay_backpressure)
{
	struct h_backend *srv = h_backend(H_STALL);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv, ""));
	struct h_stream *st = h_stream_new(1);
	long rss0, rss1;
	bool stalled;
	int fd;

	fd = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS), "not relayed");
	rss0 = h_daemon_rss_kb(d);
	stalled = h_send_until_stalled(fd, 1000, st);
	rss1 = h_daemon_rss_kb(d);
	h_assert(stalled, "%zu MiB went to a server that reads nothing",
	    st->sent >> 20);
	h_assert(st->sent < (128u << 20), "%zu MiB went in before the stall",
	    st->sent >> 20);
	close(fd);
	h_backend_stop(srv);
	h_daemon_stop_ok(d);
	if (rss0 <= 0 || rss1 <= 0)
		h_skip("the daemon's RSS is not readable here");
	h_assert(rss1 - rss0 < 32 * 1024,
	    "the daemon grew %ld KiB on a stalled stream", rss1 - rss0);
}
END_TEST

/*
 * A client that resets in front of a server that reads nothing, once the
 * daemon has stopped reading it: paused by backpressure (a stalled stream,
 * idle_timeout off), or after its request and FIN. The daemon notices the
 * reset within a few seconds all the same and closes the server side too,
 * instead of holding both sockets until the server reads.
 */
static const struct {
	const char *name;
	bool half_close; /* request and FIN, else a stream that stalls */
} client_reset_rows[] = {
	{ "relay_paused_client_reset", false },
	{ "relay_half_closed_client_reset", true },
};

START_TEST(relay_client_reset_story)
{
	struct h_backend *srv = h_backend(H_STALL);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv, ""));
	struct h_stream *st = h_stream_new(1);
	struct linger lg = { 1, 0 };
	int fd;

	fd = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS), "not relayed");
	if (client_reset_rows[_i].half_close) {
		h_assert(h_send_all(fd, "GET / HTTP/1.0\r\n\r\n", 18,
			     H_WAIT_MS) == 0,
		    "send");
		h_assert(shutdown(fd, SHUT_WR) == 0, "shutdown");
	} else
		h_assert(h_send_until_stalled(fd, 500, st),
		    "the stream never backed up (%zu MiB sent)",
		    st->sent >> 20);
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	h_assert(h_backend_wait_idle(srv, 5000),
	    "the server side is still open 5 s after the client's reset");
	h_backend_stop(srv);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The mirror story: a server that half-closes at once, then resets, in
 * front of a client that says nothing. The client gets the FIN, then the
 * reset passed on within a few seconds, not a relay held forever.
 */
START_TEST(relay_half_closed_server_reset)
{
	struct h_backend *srv = h_backend(H_HALF_RST);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv, ""));
	enum h_outcome out;
	struct pollfd pfd;
	int fd;

	fd = h_connect_ok(lis);
	out = h_next_event(fd, H_WAIT_MS);
	h_assert(out == H_OUT_EOF, "the server's FIN came as %s",
	    h_outcome_name(out));
	/* After a FIN, a reset shows to poll(2) as a hangup. */
	pfd.fd = fd;
	pfd.events = 0;
	h_assert(poll(&pfd, 1, H_LATE_RST_MS + 5000) == 1 &&
		(pfd.revents & (POLLHUP | POLLERR)) != 0,
	    "the client is still connected 5 s after the server's reset");
	close(fd);
	h_backend_stop(srv);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * failure_on_early_close, the other way round: a client that closes
 * before the server has said anything ends the attempt as a success, even
 * though the server then closes without a byte.
 */
START_TEST(breaker_early_close_client_first)
{
	struct h_backend *srv = h_backend(H_SILENT);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_on_early_close = yes\n"
	    "connect_timeout = 2s\n"
	    "failure_threshold = 1\n"
	    "recovery_timeout = 30s\n"));
	const char *line;
	int fd;

	fd = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS), "not relayed");
	close(fd);
	h_assert(h_backend_wait_idle(srv, H_WAIT_MS),
	    "the server never saw the client's EOF");
	line = h_wait_log(d, 1000, "event=connect_fail");
	h_assert(line == NULL, "the client closed first, yet: %s", line);
	h_assert(h_count_log(d, "event=state") == 0, "the circuit changed");
	fd = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 2, H_WAIT_MS),
	    "the next client was not relayed");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Trip the circuit: n clients, each reset and logged (at warning, with
 * those fields only) as connect_fail error=error naming the server and the
 * client; then the circuit opens after the n-th: that line. The quickest
 * and slowest reset, from the client's side, in *fastest and *slowest.
 */
static const char *
trip_clients(struct h_daemon *d, const char *lis, const struct h_backend *srv,
    int n, const char *error, uint64_t *fastest, uint64_t *slowest)
{
	const char *line;
	char *client;
	uint64_t el;
	int i;

	*fastest = UINT64_MAX;
	*slowest = 0;
	for (i = 0; i < n; i++) {
		client = h_client_expect_reset(lis, H_WAIT_MS, &el);
		*fastest = el < *fastest ? el : *fastest;
		*slowest = el > *slowest ? el : *slowest;
		line = h_expect_log(d, H_WAIT_MS, "event=connect_fail",
		    h_strf("client=%s", client));
		h_assert_fields_only(line, "level=warning",
		    "event=connect_fail", "upstream=api",
		    h_strf("server=%s", h_backend_addr(srv)),
		    h_strf("client=%s", client), h_strf("error=%s", error),
		    "elapsed_ms=#*");
	}
	return h_expect_log(d, H_WAIT_MS, "level=warning", "event=state",
	    "upstream=api", "from=closed", "to=open",
	    "reason=consecutive_failures", h_strf("failures=%d", n));
}

/*
 * A server that refuses: three clients fail, each is reset and logged as
 * connect_fail error=refused; the third opens the circuit.
 */
START_TEST(breaker_trips_on_refused)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 3\n"
	    "recovery_timeout = 30s\n"));
	uint64_t fastest, slowest;
	const char *line;
	double ra;
	size_t at;

	line = trip_clients(d, lis, srv, 3, "refused", &fastest, &slowest);
	h_assert_fields_only(line, "level=warning", "event=state",
	    "upstream=api", "from=closed", "to=open",
	    "reason=consecutive_failures", "failures=3", "retry_after=##.###");
	ra = h_log_double(line, "retry_after");
	h_assert(ra > 29.0 && ra <= 30.0, "retry_after=%.3f", ra);
	at = h_log_index(d, line);
	h_assert(h_count_log(d, "event=connect_fail") == 3,
	    "%u connect_fail lines", h_count_log(d, "event=connect_fail"));
	h_assert(h_count_log_after(d, at, "event=connect_fail") == 0,
	    "a connect_fail after the circuit opened");
	h_assert(h_count_log(d, "event=state") == 1, "state lines: %u",
	    h_count_log(d, "event=state"));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A server whose SYNs go unanswered: each client waits connect_timeout
 * (300ms, give or take a loaded machine), is reset, and error=timeout is
 * logged; two of them open it.
 */
START_TEST(breaker_trips_on_timeout)
{
	struct h_backend *srv = h_backend(H_BLACKHOLE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "connect_timeout = 300ms\n"
	    "failure_threshold = 2\n"
	    "recovery_timeout = 30s\n"));
	uint64_t fastest, slowest;

	trip_clients(d, lis, srv, 2, "timeout", &fastest, &slowest);
	h_assert_between(fastest, 290, 1000,
	    "ms to the quickest reset with connect_timeout = 300ms");
	h_assert_between(slowest, 290, 1000,
	    "ms to the slowest reset with connect_timeout = 300ms");
	h_assert(h_count_log(d, "event=connect_fail", "upstream=api",
		     "error=timeout") == 2,
	    "timeout lines: %u",
	    h_count_log(d, "event=connect_fail", "error=timeout"));
	h_assert(h_count_log(d, "event=connect_fail") == 2, "connect_fail");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A unix-socket server whose backlog is full (it stopped accepting): the
 * connect fails at once with EAGAIN. That is the server's failure, not a
 * local shortage: connect_fail error=other for each client, and the third
 * opens the circuit; no client is counted as an overload reject.
 */
START_TEST(breaker_trips_on_unix_backlog_full)
{
	struct h_backend *srv = h_backend_new(H_BLACKHOLE, AF_UNIX);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 3\n"
	    "recovery_timeout = 30s\n"));
	uint64_t fastest, slowest;
	char *client;

	trip_clients(d, lis, srv, 3, "other", &fastest, &slowest);
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=api",
	    h_strf("client=%s", client), "state=open");
	h_assert(h_count_log(d, "reason=overload") == 0,
	    "a full backlog was taken for a local shortage: %u overload lines",
	    h_count_log(d, "reason=overload"));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * An open circuit turns clients away at once: a reset within REJECT_MS and
 * an event=reject line naming the client, the state and when to retry. The
 * server is not tried again.
 */
START_TEST(breaker_open_rejects_fast)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 1\n"
	    "recovery_timeout = 30s\n"));
	const char *line;
	uint64_t el, worst = 0;
	char *client;
	double ra;
	int i;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	for (i = 0; i < 5; i++) {
		client = h_client_expect_reset(lis, H_WAIT_MS, &el);
		worst = el > worst ? el : worst;
		line = h_expect_log(d, H_WAIT_MS, "event=reject",
		    h_strf("client=%s", client));
		h_assert_fields_only(line, "level=notice", "event=reject",
		    "upstream=api", h_strf("client=%s", client), "state=open",
		    "retry_after=##.###");
		ra = h_log_double(line, "retry_after");
		h_assert(ra > 25.0 && ra <= 30.0, "retry_after=%.3f", ra);
	}
	h_assert(worst < REJECT_MS, "a rejected client waited %llu ms",
	    (unsigned long long)worst);
	h_assert(h_count_log(d, "event=connect_fail") == 1,
	    "the server was tried while open");
	h_daemon_stop_ok(d);
}
END_TEST

/* open -> half_open on a timer, with no client needed. */
START_TEST(breaker_half_open_on_timer)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 1\n"
	    "recovery_timeout = 300ms\n"));
	const char *open, *half;
	int64_t gap;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	open = h_expect_log(d, H_WAIT_MS, "level=warning", "event=state",
	    "upstream=api", "to=open", "retry_after=0.300");
	half = h_expect_log(d, H_WAIT_MS, "event=state", "to=half_open");
	h_assert_fields_only(half, "level=info", "event=state", "upstream=api",
	    "from=open", "to=half_open", "reason=recovery_timeout");
	gap = h_log_time_ms(half) - h_log_time_ms(open);
	h_assert_between(gap, 290, 2000, "ms from open to half_open (300ms)");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * half_open lets half_open_max_calls (2) trials through. The trials are
 * held undecided by failure_on_early_close against a server that never
 * sends; a third client meanwhile is rejected with state=half_open. When
 * connect_timeout passes the trials count as successes and it closes.
 */
START_TEST(breaker_half_open_slots)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 1\n"
	    "recovery_timeout = 300ms\n"
	    "half_open_max_calls = 2\n"
	    "success_threshold = 2\n"
	    "failure_on_early_close = yes\n"
	    "connect_timeout = 1s\n"));
	enum h_outcome out;
	char *client;
	int a, b, c;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	h_backend_set_kind(srv, H_SILENT);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api",
	    "to=half_open");

	a = h_connect_ok(lis);
	b = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 2, H_WAIT_MS),
	    "both trials reached the server: %u", h_backend_accepted(srv));
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=api",
	    h_strf("client=%s", client), "state=half_open",
	    "retry_after=0.000");
	h_assert(h_count_log(d, "event=state", "to=closed") == 0,
	    "closed before the trials were decided");

	h_expect_log(d, H_WAIT_MS, "level=info", "event=state", "upstream=api",
	    "from=half_open", "to=closed", "reason=trials_succeeded");
	out = h_next_event(a, 0);
	h_assert(out == H_OUT_TIMEOUT, "trial A ended: %s",
	    h_outcome_name(out));
	out = h_next_event(b, 0);
	h_assert(out == H_OUT_TIMEOUT, "trial B ended: %s",
	    h_outcome_name(out));
	c = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 3, H_WAIT_MS),
	    "a client after closing was not relayed");
	h_assert(h_count_log(d, "event=reject") == 1, "%u rejects",
	    h_count_log(d, "event=reject"));
	close(a);
	close(b);
	close(c);
	h_daemon_stop_ok(d);
}
END_TEST

/* The [global] section of a story that reads debug lines. */
static const char *
global_debug(void)
{
	return "[global]\n"
	       "log_level = debug\n"
	       "workers = 1\n"
	       "shutdown_timeout = 2s\n"
	       "log_rejects_per_second = 100\n"
	       "\n";
}

/*
 * A client that leaves while its server connect is in progress ends the
 * attempt with no outcome (SPEC 4). Closed, with failure_threshold = 1:
 * the daemon closes the relay at once (event=close at debug level), with
 * no connect_fail and no state change. Half_open with one trial slot: the
 * slot of a trial that left is given back, so the next client is a trial
 * (its connect times out and opens the circuit again), not a reject.
 */
START_TEST(breaker_client_leaves_during_connect)
{
	struct h_backend *srv = h_backend(H_BLACKHOLE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s%s", global_debug(),
	    h_upstream("api", lis, h_backend_addr(srv),
		"connect_timeout = 2s\n"
		"failure_threshold = 1\n"
		"recovery_timeout = 300ms\n"
		"half_open_max_calls = 1\n"
		"success_threshold = 1\n")));
	const char *line;
	char *client;
	uint64_t t0;
	size_t at;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	poll(NULL, 0, 100);
	t0 = h_now_ms();
	close(fd);
	line = h_expect_log(d, H_WAIT_MS, "level=debug", "event=close",
	    "upstream=api", h_strf("client=%s", client));
	h_assert(h_now_ms() - t0 < 1000,
	    "the relay was closed %llu ms after its client left",
	    (unsigned long long)(h_now_ms() - t0));
	at = h_log_index(d, line);
	h_assert(h_count_log(d, "event=connect_fail") == 0,
	    "a client that left was counted as a failure");
	h_assert(h_count_log(d, "event=state") == 0, "the circuit moved");

	/* Into half_open: a client whose connect times out opens it. */
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log_after(d, at, H_WAIT_MS, "event=state", "to=open");
	h_expect_log_after(d, at, H_WAIT_MS, "event=state", "to=half_open");

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	poll(NULL, 0, 100);
	close(fd);
	line = h_expect_log(d, H_WAIT_MS, "event=close", "upstream=api",
	    h_strf("client=%s", client));
	at = h_log_index(d, line);
	h_assert(h_count_log(d, "event=connect_fail") == 1,
	    "the trial that left was counted as a failure");

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	h_expect_log_after(d, at, H_WAIT_MS, "event=connect_fail",
	    h_strf("client=%s", client), "error=timeout");
	h_expect_log_after(d, at, H_WAIT_MS, "event=state", "from=half_open",
	    "to=open", "reason=half_open_failure");
	h_assert(h_count_log(d, "event=reject") == 0,
	    "the slot of the trial that left was not given back");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A failed trial opens the circuit again, for recovery_timeout times
 * recovery_backoff: 300ms, then 600ms, then 1.2s (no jitter).
 */
START_TEST(breaker_backoff)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 1\n"
	    "recovery_timeout = 300ms\n"
	    "recovery_backoff = 2\n"
	    "recovery_jitter = 0\n"
	    "recovery_timeout_max = 10s\n"));
	const char *open1, *open2, *open3, *half2;
	double r1, r2, r3;
	int64_t gap;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	open1 =
	    h_expect_log(d, H_WAIT_MS, "event=state", "from=closed", "to=open");
	r1 = h_log_double(open1, "retry_after");
	h_assert(fabs(r1 - 0.3) < 0.02, "first retry_after=%.3f", r1);
	h_expect_log(d, H_WAIT_MS, "event=state", "to=half_open");

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	open2 = h_expect_log(d, H_WAIT_MS, "event=state", "from=half_open",
	    "to=open", "reason=half_open_failure");
	r2 = h_log_double(open2, "retry_after");
	h_assert(fabs(r2 - 2 * r1) < 0.03, "second retry_after=%.3f after %.3f",
	    r2, r1);
	half2 = h_expect_log_after(d, h_log_index(d, open2), H_WAIT_MS,
	    "event=state", "to=half_open");
	gap = h_log_time_ms(half2) - h_log_time_ms(open2);
	h_assert_between(gap, 590, 2000, "ms the second open lasted");

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	open3 = h_expect_log_after(d, h_log_index(d, half2), H_WAIT_MS,
	    "event=state", "from=half_open", "to=open",
	    "reason=half_open_failure");
	r3 = h_log_double(open3, "retry_after");
	h_assert(fabs(r3 - 4 * r1) < 0.05, "third retry_after=%.3f", r3);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The rate rule alone: success, failure, success, failure over a window
 * of 4 with minimum_calls 4 is 50% failures: the fourth attempt opens it
 * with reason=failure_rate, not before.
 */
START_TEST(breaker_failure_rate)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 0\n"
	    "failure_rate_threshold = 50\n"
	    "window = 4\n"
	    "minimum_calls = 4\n"
	    "recovery_timeout = 30s\n"));

	h_assert(h_echo_roundtrip(lis, "ok 1", H_WAIT_MS), "first success");
	h_backend_set_kind(srv, H_REFUSE);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=connect_fail", "error=refused");
	h_backend_set_kind(srv, H_ECHO);
	h_assert(h_echo_roundtrip(lis, "ok 2", H_WAIT_MS), "second success");
	h_assert(h_count_log(d, "event=state") == 0,
	    "a state change after 3 attempts, below minimum_calls");
	h_backend_set_kind(srv, H_REFUSE);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "level=warning", "event=state",
	    "upstream=api", "from=closed", "to=open", "reason=failure_rate",
	    "retry_after=");
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=open");
	h_assert(h_count_log(d, "event=connect_fail") == 2, "connect_fail");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A backup: api's server is down and its circuit open, so its next client
 * is relayed to spare's server and logged as a failover, not a reject.
 */
START_TEST(breaker_backup_failover)
{
	struct h_backend *down = h_backend(H_REFUSE);
	struct h_backend *spare = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s%s", global_section(1, 100),
		h_upstream("api", lis, h_backend_addr(down),
		    "failure_threshold = 1\n"
		    "recovery_timeout = 30s\n"
		    "backup = spare\n"),
		h_upstream("spare", NULL, h_backend_addr(spare), NULL)));
	char back[32], *client;
	enum h_outcome out;
	int fd;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");

	fd = h_connect_ok(lis);
	client = h_sock_name(fd);
	h_assert(h_send_all(fd, "via the backup", 14, H_WAIT_MS) == 0, "send");
	out = h_recv_exact(fd, back, 14, H_WAIT_MS);
	h_assert(out == H_OUT_DATA && memcmp(back, "via the backup", 14) == 0,
	    "the client was not relayed to the backup: %s",
	    h_outcome_name(out));
	close(fd);
	h_expect_log(d, H_WAIT_MS, "event=failover", "upstream=api",
	    "backup=spare", h_strf("client=%s", client));
	h_assert(h_backend_accepted(spare) == 1, "spare accepted %u",
	    h_backend_accepted(spare));
	h_assert(h_count_log(d, "event=reject") == 0,
	    "a failover was logged as a reject");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * reject = http503: a client of an open circuit reads an HTTP 503 with
 * Retry-After and Connection: close, then an orderly EOF (no reset).
 */
START_TEST(breaker_reject_http503)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 1\n"
	    "recovery_timeout = 30s\n"
	    "reject = http503\n"));
	const char *ra;
	enum h_outcome out;
	char *reply;
	size_t len;
	int fd, secs;

	h_client_try(lis, H_WAIT_MS, NULL, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");

	fd = h_connect_ok(lis);
	out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
	close(fd);
	h_assert(out == H_OUT_EOF, "the 503 ended with %s, not EOF: \"%s\"",
	    h_outcome_name(out), reply);
	h_assert(strncmp(reply, "HTTP/1.1 503 Service Unavailable\r\n", 34) ==
		0,
	    "status line: \"%s\"", reply);
	h_assert(strstr(reply, "\r\n\r\n") != NULL, "no end of headers");
	ra = strcasestr(reply, "\r\nRetry-After:");
	h_assert(ra != NULL, "no Retry-After: \"%s\"", reply);
	secs = atoi(ra + 14);
	h_assert(secs >= 29 && secs <= 30, "Retry-After: %d", secs);
	h_assert(strcasestr(reply, "\r\nConnection: close\r\n") != NULL,
	    "no Connection: close: \"%s\"", reply);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=open");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * max_connections = 2: a third client at once is reset; it is an overload,
 * not a failure of the server, and the circuit stays closed.
 */
START_TEST(relay_max_connections)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, echo,
	    "max_connections = 2\n"
	    "failure_threshold = 1\n"));
	const char *line;
	char *client;
	char buf[8];
	enum h_outcome out;
	int a, b;

	a = h_connect_ok(lis);
	b = h_connect_ok(lis);
	h_assert(h_send_all(a, "A", 1, H_WAIT_MS) == 0 &&
		h_recv_exact(a, buf, 1, H_WAIT_MS) == H_OUT_DATA,
	    "A relayed");
	h_assert(h_send_all(b, "B", 1, H_WAIT_MS) == 0 &&
		h_recv_exact(b, buf, 1, H_WAIT_MS) == H_OUT_DATA,
	    "B relayed");
	out = h_client_try(lis, H_WAIT_MS, NULL, &client);
	h_assert(out == H_OUT_RESET, "the third client: %s, not a reset",
	    h_outcome_name(out));
	line = h_expect_log(d, H_WAIT_MS, "event=reject");
	h_assert_fields_only(line, "level=notice", "event=reject",
	    "upstream=api", h_strf("client=%s", client), "reason=overload",
	    "max_connections=2");
	h_assert(h_send_all(a, "a", 1, H_WAIT_MS) == 0 &&
		h_recv_exact(a, buf, 1, H_WAIT_MS) == H_OUT_DATA,
	    "A still relayed");
	h_assert(h_backend_accepted(echo) == 2, "the server saw %u clients",
	    h_backend_accepted(echo));
	h_assert(h_count_log(d, "event=connect_fail") == 0 &&
		h_count_log(d, "event=state") == 0,
	    "an overload counted as a failure");
	close(a);
	close(b);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * idle_timeout = 500ms: a relay with no bytes either way is closed by the
 * daemon, between 500ms and 1.5s after its last byte; one that talks every
 * 100ms lives on.
 */
START_TEST(relay_idle_timeout)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(config_api(lis, echo, "idle_timeout = 500ms\n"));
	uint64_t t0, closed_at = 0;
	enum h_outcome out;
	char buf[4];
	int idle, busy, pings = 0;
	char *idle_client;

	idle = h_connect_ok(lis);
	idle_client = h_sock_name(idle);
	busy = h_connect_ok(lis);
	h_assert(h_send_all(idle, "i", 1, H_WAIT_MS) == 0 &&
		h_recv_exact(idle, buf, 1, H_WAIT_MS) == H_OUT_DATA,
	    "idle");
	t0 = h_now_ms();
	while (h_now_ms() - t0 < 2000 ||
	    (closed_at == 0 && h_now_ms() - t0 < H_WAIT_MS)) {
		h_assert(h_send_all(busy, "ping", 4, H_WAIT_MS) == 0,
		    "send on the busy relay after %llu ms",
		    (unsigned long long)(h_now_ms() - t0));
		out = h_recv_exact(busy, buf, 4, H_WAIT_MS);
		h_assert(out == H_OUT_DATA, "the busy relay: %s after %llu ms",
		    h_outcome_name(out), (unsigned long long)(h_now_ms() - t0));
		pings++;
		if (closed_at != 0) {
			out = h_next_event(busy, 100);
			h_assert(out == H_OUT_TIMEOUT, "busy: %s",
			    h_outcome_name(out));
			continue;
		}
		out = h_next_event(idle, 100);
		if (out == H_OUT_EOF || out == H_OUT_RESET)
			closed_at = h_now_ms() - t0;
		else
			h_assert(out == H_OUT_TIMEOUT, "idle: %s",
			    h_outcome_name(out));
	}
	h_assert(closed_at != 0, "the idle relay was never closed");
	/* t0 is just after the last byte: a few ms late, never early. */
	h_assert_between(closed_at, 450, 1500,
	    "ms to close a relay idle for idle_timeout = 500ms");
	h_assert_fields_only(h_expect_log(d, 0, "event=idle_timeout"),
	    "level=info", "event=idle_timeout", "upstream=api",
	    h_strf("client=%s", idle_client), "idle_ms=500");
	h_assert(pings >= 10, "only %d pings", pings);
	close(idle);
	close(busy);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * idle_timeout = 1s with a slow reader: the server sends a large stream and
 * the client, its receive buffer small, reads 16 KiB every 50ms. Bytes
 * reach the client all the time, even while the daemon has nothing new to
 * write (the kernel's queues are full), so the relay is not idle. Once the
 * client stops reading, the queues stop shrinking and idle_timeout closes
 * the relay.
 */
START_TEST(relay_idle_timeout_slow_reader)
{
	struct h_backend *srv = h_backend(H_BANNER);
	const char *lis = h_free_addr4();
	char *stream = malloc(SLOW_STREAM + 1), buf[SLOW_READ], *client;
	struct h_daemon *d;
	enum h_outcome out;
	uint64_t t0, now, stopped, el;
	const char *line;
	unsigned reads = 0;
	int fd;

	h_assert(stream != NULL, "malloc");
	memset(stream, 'x', SLOW_STREAM);
	stream[SLOW_STREAM] = '\0';
	h_backend_set_banner(srv, stream);
	free(stream);
	d = h_daemon_start(config_api(lis, srv, "idle_timeout = 1s\n"));
	fd = h_connect_rcvbuf(lis, SLOW_READ);
	client = h_sock_name(fd);

	t0 = h_now_ms();
	while ((now = h_now_ms()) - t0 < SLOW_FOR_MS) {
		out = h_recv_exact(fd, buf, sizeof(buf), SLOW_GAP_MS);
		h_assert(out == H_OUT_DATA,
		    "the slow reader saw %s within %d ms, after %llu ms and "
		    "%u reads",
		    h_outcome_name(out), SLOW_GAP_MS,
		    (unsigned long long)(now - t0), reads);
		reads++;
		line = h_wait_log(d, 0, "event=idle_timeout");
		h_assert(line == NULL,
		    "a relay read steadily timed out after %llu ms: %s",
		    (unsigned long long)(h_now_ms() - t0), line);
		poll(NULL, 0, SLOW_EVERY_MS);
	}
	h_assert(reads >= SLOW_FOR_MS / SLOW_EVERY_MS / 4,
	    "only %u reads of %d bytes in %d ms", reads, SLOW_READ,
	    SLOW_FOR_MS);

	/* The client stops reading: now the relay is idle. */
	stopped = h_now_ms();
	line = h_wait_log(d, 2 * H_WAIT_MS, "level=info", "event=idle_timeout",
	    "upstream=api", h_strf("client=%s", client), "idle_ms=1000");
	el = h_now_ms() - stopped;
	h_assert(line != NULL,
	    "a relay nobody reads was not closed within %llu ms",
	    (unsigned long long)el);
	h_assert(h_backend_wait_idle(srv, H_WAIT_MS),
	    "the server side of the timed-out relay is still open");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/* Listeners on [::1] and on a unix socket relay like any other. */
START_TEST(relay_ipv6_and_unix)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *l6 = h_free_addr(AF_INET6);
	const char *lu = h_free_addr(AF_UNIX);
	struct h_daemon *d = h_daemon_start(h_strf("%s"
						   "[upstream:api]\n"
						   "listen = %s\n"
						   "listen = %s\n"
						   "server = %s\n",
	    global_section(1, 100), l6, lu, h_backend_addr(echo)));

	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=api",
	    h_strf("addr=%s", l6));
	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=api",
	    h_strf("addr=%s", lu));
	h_assert(h_echo_roundtrip(l6, "over ipv6", H_WAIT_MS), "via %s", l6);
	h_assert(h_echo_roundtrip(lu, "over unix", H_WAIT_MS), "via %s", lu);
	h_assert(h_backend_accepted(echo) == 2, "accepted %u",
	    h_backend_accepted(echo));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * "*:P" is IPv4 only and "[::1]:P" IPv6 (SPEC 3): one port, two upstreams,
 * both accepted by -t and both served, each by its own server.
 */
START_TEST(relay_wildcard_v4_beside_v6)
{
	struct h_backend *e4 = h_backend(H_BANNER);
	struct h_backend *e6 = h_backend(H_BANNER);
	const char *l6 = h_free_addr(AF_INET6);
	const char *port = h_port_of(l6);
	const char *config = h_strf("%s"
				    "[upstream:v4]\n"
				    "listen = *:%s\n"
				    "server = %s\n"
				    "[upstream:v6]\n"
				    "listen = %s\n"
				    "server = %s\n",
	    global_section(1, 100), port, h_backend_addr(e4), l6,
	    h_backend_addr(e6));
	struct h_daemon *d;
	struct h_run r;
	char buf[3];
	int fd;

	h_run(&r, "-t", "-c", h_write_file("wild.ini", config));
	h_assert(r.status == 0, "-t exited %d: %s", r.status, r.err);
	h_backend_set_banner(e4, "v4\n");
	h_backend_set_banner(e6, "v6\n");
	d = h_daemon_start(config);
	fd = h_connect_ok(h_strf("127.0.0.1:%s", port));
	h_assert(h_recv_exact(fd, buf, 3, H_WAIT_MS) == H_OUT_DATA &&
		memcmp(buf, "v4\n", 3) == 0,
	    "127.0.0.1:%s did not reach v4's server", port);
	close(fd);
	fd = h_connect_ok(l6);
	h_assert(h_recv_exact(fd, buf, 3, H_WAIT_MS) == H_OUT_DATA &&
		memcmp(buf, "v6\n", 3) == 0,
	    "%s did not reach v6's server", l6);
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Two workers, one breaker: five failures in all open it, whichever
 * worker took them, and the next 45 clients are all rejected.
 */
START_TEST(breaker_shared_by_workers)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s", global_section(2, 100),
		h_upstream("api", lis, h_backend_addr(srv),
		    "failure_threshold = 5\n"
		    "recovery_timeout = 30s\n")));
	unsigned n;
	int i;

	h_expect_log(d, H_WAIT_MS, "event=start", "workers=2");
	for (i = 0; i < 5; i++)
		h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open",
	    "failures=5");
	for (i = 0; i < 45; i++)
		h_client_expect_reset(lis, H_WAIT_MS, NULL);
	n = h_wait_count(d, 45, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=open");
	h_assert(n == 45, "%u reject lines for 45 rejected clients", n);
	h_assert(h_count_log(d, "event=connect_fail") == 5,
	    "%u connect_fail lines", h_count_log(d, "event=connect_fail"));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * dry_run: the circuit opens in the log, but the next client is relayed
 * all the same, and its reject line says dry_run=yes.
 */
START_TEST(breaker_dry_run)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 2\n"
	    "recovery_timeout = 30s\n"
	    "dry_run = yes\n"));
	char back[16], *client;
	enum h_outcome out;
	int fd;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "from=closed",
	    "to=open");
	h_backend_set_kind(srv, H_ECHO);

	fd = h_connect_ok(lis);
	client = h_sock_name(fd);
	h_assert(h_send_all(fd, "still relayed", 13, H_WAIT_MS) == 0, "send");
	out = h_recv_exact(fd, back, 13, H_WAIT_MS);
	h_assert(out == H_OUT_DATA && memcmp(back, "still relayed", 13) == 0,
	    "dry run turned the client away: %s", h_outcome_name(out));
	close(fd);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=api",
	    h_strf("client=%s", client), "state=open",
	    "retry_after=", "dry_run=yes");
	h_assert(h_backend_accepted(srv) == 1, "accepted %u",
	    h_backend_accepted(srv));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * failure_on_early_close: a server that accepts and closes (or resets)
 * before sending a byte fails the attempt with error=early_close.
 */
START_TEST(breaker_early_close)
{
	struct h_backend *srv = h_backend(H_CLOSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_on_early_close = yes\n"
	    "connect_timeout = 2s\n"
	    "failure_threshold = 2\n"
	    "recovery_timeout = 30s\n"));
	char *client;

	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=connect_fail", "upstream=api",
	    h_strf("client=%s", client), "error=early_close");
	h_backend_set_kind(srv, H_RESET);
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=connect_fail", "upstream=api",
	    h_strf("client=%s", client), "error=early_close");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open",
	    "reason=consecutive_failures", "failures=2");
	h_assert(h_backend_accepted(srv) == 2, "accepted %u",
	    h_backend_accepted(srv));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * failure_on_early_close, with the reset noticed by a write: the client
 * floods a server that never reads, so the daemon holds bytes for it and
 * waits to write them; then the server resets without having sent a byte.
 * That is an early close as much as one noticed by a read: connect_fail
 * error=early_close, and with failure_threshold = 1 the circuit opens.
 */
START_TEST(breaker_early_close_on_write)
{
	struct h_backend *srv = h_backend(H_LATE_RST);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_on_early_close = yes\n"
	    "connect_timeout = 5s\n"
	    "failure_threshold = 1\n"
	    "recovery_timeout = 30s\n"));
	char *chunk = calloc(1, CHUNK), *client;
	bool stalled = false, ended = false;
	struct pollfd pfd;
	uint64_t deadline;
	size_t sent = 0;
	ssize_t n;
	int fd;

	h_assert(chunk != NULL, "malloc");
	fd = h_connect_ok(lis);
	client = h_sock_name(fd);
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS), "not relayed");
	/* Flood until the daemon resets the client. */
	deadline = h_now_ms() + H_LATE_RST_MS + H_WAIT_MS;
	while (!ended && h_now_ms() < deadline) {
		n = send(fd, chunk, CHUNK, MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		if (n == -1 && errno != EAGAIN && errno != EINTR) {
			ended = true;
			break;
		}
		stalled = true;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		poll(&pfd, 1, 50);
	}
	free(chunk);
	h_assert(stalled, "the client's %zu bytes never backed up", sent);
	h_assert(ended, "the client was never reset after sending %zu bytes",
	    sent);
	h_expect_log(d, H_WAIT_MS, "level=warning", "event=connect_fail",
	    "upstream=api", h_strf("client=%s", client), "error=early_close");
	h_expect_log(d, H_WAIT_MS, "level=warning", "event=state",
	    "upstream=api", "from=closed", "to=open",
	    "reason=consecutive_failures", "failures=1");
	close(fd);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * log_rejects_per_second = 2: of 50 rejected clients only a few get their
 * own line; the others are summed in event=reject_summary lines, and
 * nothing is lost: individual + summarised = 50.
 */
START_TEST(breaker_reject_summary)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s%s", global_section(1, 2),
	    h_upstream("api", lis, h_backend_addr(srv),
		"failure_threshold = 1\n"
		"recovery_timeout = 30s\n")));
	unsigned individual = 0, summarised = 0, summaries = 0;
	uint64_t t0, secs, deadline;
	const char *line;
	size_t mark, i;
	double v;
	int k;

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	mark = h_log_mark(d);
	t0 = h_now_ms();
	for (k = 0; k < 50; k++)
		h_client_expect_reset(lis, H_WAIT_MS, NULL);
	secs = (h_now_ms() - t0) / 1000 + 1;

	deadline = h_now_ms() + H_WAIT_MS;
	for (i = mark;; i++) {
		while ((line = h_log_line(d, i)) == NULL) {
			if (individual + summarised >= 50 ||
			    h_now_ms() >= deadline)
				goto done;
			h_log_wait_more(d, i, (int)(deadline - h_now_ms()));
		}
		if (h_line_has(line, "event=reject") &&
		    h_line_has(line, "upstream=api"))
			individual++;
		if (h_line_has(line, "event=reject_summary") &&
		    h_line_has(line, "upstream=api")) {
			v = h_log_double(line, "rejected");
			h_assert(!isnan(v) && v >= 1, "%s", line);
			summarised += (unsigned)v;
			summaries++;
		}
	}
done:
	h_assert(individual + summarised == 50,
	    "%u reject lines + %u summarised in %u summaries, for 50 rejects",
	    individual, summarised, summaries);
	h_assert(individual <= 2 * (secs + 1), "%u reject lines in %llu s",
	    individual, (unsigned long long)secs);
	h_assert(summaries >= 1, "no reject_summary line");
	h_daemon_stop_ok(d);
}
END_TEST

/* The suite: harness checks first, then the stories. */
static Suite *
proxy_suite(void)
{
	Suite *s = suite_create("proxy");

	H_TEST(s, harness_echo);
	H_TEST(s, harness_behaviours);
	H_TEST(s, harness_refuse_blackhole);
	H_TEST(s, harness_logfmt);
	H_TEST(s, harness_fields);
	H_TEST(s, relay_large_both_ways);
	H_TEST(s, relay_many_parallel);
	H_TEST(s, relay_half_close);
	H_TEST(s, relay_backpressure);
	H_TEST_ROWS(s, relay_client_reset_story, client_reset_rows);
	H_TEST(s, relay_half_closed_server_reset);
	H_TEST(s, relay_max_connections);
	H_TEST(s, relay_idle_timeout);
	H_TEST(s, relay_idle_timeout_slow_reader);
	H_TEST(s, relay_ipv6_and_unix);
	H_TEST(s, relay_wildcard_v4_beside_v6);
	H_TEST(s, breaker_trips_on_refused);
	H_TEST(s, breaker_trips_on_timeout);
	H_TEST(s, breaker_trips_on_unix_backlog_full);
	H_TEST(s, breaker_open_rejects_fast);
	H_TEST(s, breaker_half_open_on_timer);
	H_TEST(s, breaker_half_open_slots);
	H_TEST(s, breaker_client_leaves_during_connect);
	H_TEST(s, breaker_backoff);
	H_TEST(s, breaker_failure_rate);
	H_TEST(s, breaker_backup_failover);
	H_TEST(s, breaker_reject_http503);
	H_TEST(s, breaker_shared_by_workers);
	H_TEST(s, breaker_dry_run);
	H_TEST(s, breaker_early_close);
	H_TEST(s, breaker_early_close_client_first);
	H_TEST(s, breaker_early_close_on_write);
	H_TEST(s, breaker_reject_summary);
	return s;
}

H_MAIN_MODES(proxy_suite)
