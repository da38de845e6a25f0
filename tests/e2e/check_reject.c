/*
 * End-to-end stories of the protocol-aware rejects (SPEC.md section 4):
 * redis-cli, psql, pgbench and the mariadb client through an open circuit,
 * each showing the upstream's name and when to retry; the bounds of the
 * postgres reader against garbage and silence. A story whose client is not
 * installed is skipped with a line that says so.
 */
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* How long the open circuits of these stories last. */
#define OPEN_S 60
/* A postgres reject waits this long for a startup packet (connect_timeout). */
#define PG_WAIT_MS 1000

/* The [global] section shared by every story: one worker, no admin. */
static const char *
global_section(void)
{
	return h_global_section(1, "2s", "log_rejects_per_second = 100\n");
}

/* One upstream NAME whose server refuses, one failure from open. */
static const char *
config_refusing(const char *name, const char *listen,
    const struct h_backend *srv, const char *reject, const char *keys)
{
	return h_strf("%s%s", global_section(),
	    h_upstream(name, listen, h_backend_addr(srv),
		h_strf("failure_threshold = 1\n"
		       "recovery_timeout = %ds\n"
		       "connect_timeout = %dms\n"
		       "reject = %s\n"
		       "%s",
		    OPEN_S, PG_WAIT_MS, reject, keys)));
}

/* Open the circuit of an upstream with one refused client. */
static void
open_circuit(struct h_daemon *d, const char *lis, const char *name)
{
	h_client_try(lis, H_WAIT_MS, NULL, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", h_strf("upstream=%s", name),
	    "to=open");
}

/*
 * Find the sentence every reply carries in a client's output: the name,
 * the state and a retry-after within [lo, hi] seconds.
 */
static void
expect_sentence(const char *out, const char *name, const char *state, int lo,
    int hi)
{
	const char *head = h_strf("circuitproxy: upstream '%s' unavailable "
				  "(circuit %s), retry after ",
	    name, state);
	const char *p = strstr(out, head);
	int secs;

	h_assert(p != NULL, "the client did not show \"%s\": \"%s\"", head,
	    out);
	secs = atoi(p + strlen(head));
	h_assert(secs >= lo && secs <= hi, "retry after %ds, not %d..%d", secs,
	    lo, hi);
	h_assert(strncmp(p + strlen(head) + strlen(h_strf("%d", secs)), "s",
		     1) == 0,
	    "no unit after the seconds: \"%s\"", p);
}

/* reject = redis: redis-cli prints the error line with name and retry. */
START_TEST(redis_cli_open)
{
	const char *cli = h_client("redis-cli");
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_run r;

	if (cli == NULL) {
		h_skip("redis-cli is not installed (apt-get install "
		       "redis-tools)");
	}
	d = h_daemon_start(config_refusing("cache", lis, srv, "redis", ""));
	open_circuit(d, lis, "cache");
	h_exec(&r, cli, "-h", "127.0.0.1", "-p", h_port_of(lis), "GET", "k");
	h_assert(strncmp(r.out, "ERR circuitproxy: ", 18) == 0,
	    "redis-cli printed \"%s\" (stderr \"%s\")", r.out, r.err);
	expect_sentence(r.out, "cache", "open", OPEN_S - 5, OPEN_S);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=cache",
	    "state=open");
	h_assert(h_backend_accepted(srv) == 0, "the server was reached");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The reply comes whole and then an orderly EOF, whether the client sent
 * its command before reading or not: no reset eats it.
 */
START_TEST(redis_raw_then_eof)
{
	static const char want[] = "-ERR circuitproxy: upstream 'cache' "
				   "unavailable (circuit open), retry after ";
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(config_refusing("cache", lis, srv, "redis", ""));
	enum h_outcome out;
	size_t len;
	char *reply;
	int fd, i;

	open_circuit(d, lis, "cache");
	for (i = 0; i < 2; i++) {
		fd = h_connect_ok(lis);
		if (i == 1)
			h_assert(h_send_all(fd, "*1\r\n$4\r\nPING\r\n", 14,
				     H_WAIT_MS) == 0,
			    "send");
		out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
		close(fd);
		h_assert(out == H_OUT_EOF, "the reply ended with %s: \"%s\"",
		    h_outcome_name(out), reply);
		h_assert(strncmp(reply, want, sizeof(want) - 1) == 0,
		    "reply \"%s\"", reply);
		h_assert(len > 2 && strcmp(reply + len - 2, "\r\n") == 0 &&
			strchr(reply, '\n') == reply + len - 1,
		    "not one line: \"%s\"", reply);
	}
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * After its reply a client is waited for: one that closes at once is
 * closed within a moment, one that keeps its socket open is closed after
 * 2 seconds (and not before), each without a reset.
 */
START_TEST(redis_linger_bounds)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s", global_section(),
			       h_upstream("cache", lis, h_backend_addr(srv),
				   "failure_threshold = 1\n"
				   "recovery_timeout = 60s\n"
				   "reject = redis\n")),
		"-l", "debug");
	const char *line;
	char *quick, *slow, *reply;
	uint64_t t0;
	enum h_outcome out;
	size_t len;
	int fd, keep;

	open_circuit(d, lis, "cache");
	fd = h_connect_ok(lis);
	quick = h_sock_name(fd);
	out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
	h_assert(out == H_OUT_EOF, "quick client: %s", h_outcome_name(out));
	close(fd);
	line = h_expect_log(d, 1000, "event=close", "upstream=cache",
	    h_strf("client=%s", quick));
	h_assert(h_line_has(line, "reason=done"), "quick client: %s", line);

	t0 = h_now_ms();
	keep = h_connect_ok(lis);
	slow = h_sock_name(keep);
	out = h_recv_all(keep, &reply, &len, H_WAIT_MS);
	h_assert(out == H_OUT_EOF, "slow client: %s", h_outcome_name(out));
	line = h_expect_log(d, H_WAIT_MS, "event=close", "upstream=cache",
	    h_strf("client=%s", slow));
	h_assert(h_line_has(line, "reason=done"), "slow client: %s", line);
	h_assert(h_now_ms() - t0 >= 1900 && h_now_ms() - t0 <= 4000,
	    "the slow client was closed after %llu ms",
	    (unsigned long long)(h_now_ms() - t0));
	close(keep);
	h_daemon_stop_ok(d);
}
END_TEST

/* A client that keeps sending after its reject reply, from a thread. */
struct flood {
	int fd;
	uint64_t until_ms;
	_Atomic uint64_t failed_ms; /* when a send failed, or 0 */
	size_t sent;
};

/* Send 1 MiB at a time until a send fails or the time is up. */
static void *
flood_run(void *arg)
{
	struct flood *f = arg;
	static char buf[1 << 20];
	ssize_t n;

	while (h_now_ms() < f->until_ms) {
		n = send(f->fd, buf, sizeof(buf), MSG_NOSIGNAL);
		if (n == -1) {
			f->failed_ms = h_now_ms();
			break;
		}
		f->sent += (size_t)n;
	}
	return NULL;
}

/*
 * A rejected client that floods after its reply is reset once it has sent
 * more than the daemon reads after a reply (64 KiB), long before the 2 s
 * linger ends, and while it floods the other relays of its worker keep
 * answering promptly: the drain is bounded per wake-up.
 */
START_TEST(reject_linger_flood_bounded)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4(), *elis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s%s", global_section(),
			       h_upstream("cache", lis, h_backend_addr(srv),
				   "failure_threshold = 1\n"
				   "recovery_timeout = 60s\n"
				   "reject = redis\n"),
			       h_upstream("echo", elis, h_backend_addr(echo),
				   NULL)),
		"-l", "debug");
	struct flood f = { 0 };
	pthread_t th;
	uint64_t t0, t1, worst = 0;
	char c, *name;
	int e;

	open_circuit(d, lis, "cache");
	f.fd = h_connect_ok(lis);
	name = h_sock_name(f.fd);
	h_assert(h_recv_exact(f.fd, &c, 1, H_WAIT_MS) == H_OUT_DATA && c == '-',
	    "no RESP error line first");
	t0 = h_now_ms();
	f.until_ms = t0 + 4000;
	h_assert(pthread_create(&th, NULL, flood_run, &f) == 0, "thread");
	while (h_now_ms() < t0 + 1500 && atomic_load(&f.failed_ms) == 0) {
		e = h_connect_ok(elis);
		t1 = h_now_ms();
		h_assert(h_send_all(e, "x", 1, H_WAIT_MS) == 0, "echo send");
		h_assert(h_recv_exact(e, &c, 1, H_WAIT_MS) == H_OUT_DATA,
		    "no echo while a rejected client floods");
		if (h_now_ms() - t1 > worst)
			worst = h_now_ms() - t1;
		close(e);
	}
	pthread_join(th, NULL);
	close(f.fd);
	h_assert(f.failed_ms != 0,
	    "the flooding client was never reset "
	    "(sent %zu bytes in %llu ms)",
	    f.sent, (unsigned long long)(h_now_ms() - t0));
	h_assert_between(f.failed_ms - t0, 0, 1500,
	    "ms until the flooding client was reset");
	h_assert(worst <= 1000, "an echo took %llu ms during the flood",
	    (unsigned long long)worst);
	h_expect_log(d, H_WAIT_MS, "event=close", "upstream=cache",
	    h_strf("client=%s", name));
	h_daemon_stop_ok(d);
}
END_TEST

/* Run psql (or pgbench) against the listener; its output, both streams. */
static char *
run_pg(const char *prog, const char *lis, const char *sslmode)
{
	struct h_run r;
	const char *conn = h_strf("host=127.0.0.1 port=%s user=alice "
				  "dbname=app connect_timeout=5 sslmode=%s",
	    h_port_of(lis), sslmode);

	if (strstr(prog, "pgbench") != NULL)
		h_exec(&r, prog, "-n", "-c", "1", "-t", "1", conn);
	else
		h_exec(&r, prog, "-X", "-w", "-c", "select 1", conn);
	h_assert(r.status != 0, "%s succeeded through an open circuit", prog);
	return h_strf("%s%s", r.out, r.err);
}

/*
 * reject = postgres: psql shows FATAL with the name and retry-after, and
 * the hint, whether it asks for TLS first (sslmode=prefer: the reject says
 * 'N' and reads on) or not; pgbench too.
 */
START_TEST(psql_open)
{
	const char *psql = h_client("psql");
	const char *pgbench = h_client("pgbench");
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	const char *modes[] = { "prefer", "disable" };
	char *out;
	size_t i;

	if (psql == NULL) {
		h_skip("psql is not installed (apt-get install "
		       "postgresql-client)");
	}
	d = h_daemon_start(config_refusing("db", lis, srv, "postgres", ""));
	open_circuit(d, lis, "db");
	for (i = 0; i < 2; i++) {
		out = run_pg(psql, lis, modes[i]);
		h_assert(strstr(out, "FATAL:  circuitproxy: upstream 'db' ") !=
			NULL,
		    "sslmode=%s: psql printed \"%s\"", modes[i], out);
		expect_sentence(out, "db", "open", OPEN_S - 5, OPEN_S);
		h_assert(strstr(out, "HINT:  ") != NULL, "no hint: \"%s\"",
		    out);
	}
	h_assert(h_wait_count(d, 2, H_WAIT_MS, "event=reject", "upstream=db",
		     "state=open") == 2,
	    "two rejects logged");
	if (pgbench != NULL) {
		out = run_pg(pgbench, lis, "prefer");
		h_assert(strstr(out, "FATAL:  circuitproxy: upstream 'db' ") !=
			NULL,
		    "pgbench printed \"%s\"", out);
	}
	h_assert(h_backend_accepted(srv) == 0, "the server was reached");
	h_daemon_stop_ok(d);
	if (pgbench == NULL)
		h_skip("pgbench is not installed: psql alone was checked");
}
END_TEST

/*
 * reject = mysql: the mariadb client shows error 1040 with the sentence, as
 * it shows mysqld's own refusal ("ERROR 1040 (HY000): Too many
 * connections"): before the handshake the ERR packet carries no '#'
 * SQLSTATE marker, which the client would otherwise take apart or show.
 */
START_TEST(mariadb_open)
{
	const char *cli = h_client("mariadb");
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_run r;
	char *out;

	if (cli == NULL)
		cli = h_client("mysql");
	if (cli == NULL) {
		h_skip("neither mariadb nor mysql is installed (apt-get "
		       "install mariadb-client)");
	}
	d = h_daemon_start(config_refusing("my", lis, srv, "mysql", ""));
	open_circuit(d, lis, "my");
	h_exec(&r, cli, "--no-defaults", "--skip-ssl", "-h", "127.0.0.1", "-P",
	    h_port_of(lis), "-u", "alice", "-e", "select 1");
	out = h_strf("%s%s", r.out, r.err);
	h_assert(r.status != 0, "the client succeeded: \"%s\"", out);
	h_assert(strstr(out, "ERROR 1040 (HY000): circuitproxy: ") != NULL,
	    "the client printed \"%s\"", out);
	h_assert(strchr(out, '#') == NULL, "the client printed \"%s\"", out);
	expect_sentence(out, "my", "open", OPEN_S - 5, OPEN_S);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=my", "state=open");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * half_open with its one slot taken (a trial held undecided by
 * failure_on_early_close against a silent server): the next client is told
 * to retry after 0 seconds.
 */
START_TEST(half_open_no_slot_retry_0)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s%s", global_section(),
	    h_upstream("cache", lis, h_backend_addr(srv),
		"failure_threshold = 1\n"
		"recovery_timeout = 300ms\n"
		"half_open_max_calls = 1\n"
		"success_threshold = 1\n"
		"failure_on_early_close = yes\n"
		"connect_timeout = 5s\n"
		"reject = redis\n")));
	enum h_outcome out;
	size_t len;
	char *reply;
	int trial, fd;

	open_circuit(d, lis, "cache");
	h_backend_set_kind(srv, H_SILENT);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=cache",
	    "to=half_open");
	trial = h_connect_ok(lis);
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS),
	    "the trial did not reach the server");
	fd = h_connect_ok(lis);
	out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
	close(fd);
	h_assert(out == H_OUT_EOF, "the reply ended with %s",
	    h_outcome_name(out));
	h_assert(strcmp(reply,
		     "-ERR circuitproxy: upstream 'cache' "
		     "unavailable (circuit half_open), retry after "
		     "0s\r\n") == 0,
	    "reply \"%s\"", reply);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=cache",
	    "state=half_open", "retry_after=0.000");
	close(trial);
	h_daemon_stop_ok(d);
}
END_TEST

/* Send bytes to a postgres reject; how it ends and how long it took. */
static enum h_outcome
pg_send_and_wait(const char *lis, const void *bytes, size_t n, int ms,
    uint64_t *elapsed)
{
	uint64_t t0 = h_now_ms();
	enum h_outcome out;
	int fd = h_connect_ok(lis);

	if (n > 0)
		h_assert(h_send_all(fd, bytes, n, H_WAIT_MS) == 0, "send");
	out = h_next_event(fd, ms);
	*elapsed = h_now_ms() - t0;
	close(fd);
	return out;
}

/*
 * The postgres reader's bounds: garbage (an HTTP request, a length beyond
 * the protocol's) is reset at once; silence and a header cut short are
 * reset after connect_timeout, not before; the daemon serves on.
 */
START_TEST(postgres_garbage_and_silence)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	static const unsigned char huge[] = { 0, 1, 0, 0, 0, 3, 0, 0 };
	static const unsigned char ssl_half[] = { 0, 0, 0, 8, 0x04 };
	static const unsigned char startup[] = { 0, 0, 0, 17, 0, 3, 0, 0, 'u',
		's', 'e', 'r', 0, 'a', 'l', 'i', 0 };
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(config_refusing("db", lis, srv, "postgres", ""));
	enum h_outcome out;
	uint64_t ms;
	size_t len;
	char *reply;
	int fd;

	open_circuit(d, lis, "db");
	out = pg_send_and_wait(lis, http, sizeof(http) - 1, H_WAIT_MS, &ms);
	h_assert(out == H_OUT_RESET, "HTTP: %s", h_outcome_name(out));
	h_assert(ms < PG_WAIT_MS / 2, "HTTP was reset after %llu ms",
	    (unsigned long long)ms);
	out = pg_send_and_wait(lis, huge, sizeof(huge), H_WAIT_MS, &ms);
	h_assert(out == H_OUT_RESET, "length 65536: %s", h_outcome_name(out));
	h_assert(ms < PG_WAIT_MS / 2, "length 65536 was reset after %llu ms",
	    (unsigned long long)ms);

	out = pg_send_and_wait(lis, NULL, 0, H_WAIT_MS, &ms);
	h_assert(out == H_OUT_RESET, "silence: %s", h_outcome_name(out));
	h_assert(ms >= PG_WAIT_MS - 50 && ms <= PG_WAIT_MS + 1500,
	    "silence was reset after %llu ms, connect_timeout is %d ms",
	    (unsigned long long)ms, PG_WAIT_MS);
	out = pg_send_and_wait(lis, ssl_half, sizeof(ssl_half), H_WAIT_MS, &ms);
	h_assert(out == H_OUT_RESET, "half a header: %s", h_outcome_name(out));
	h_assert(ms >= PG_WAIT_MS - 50 && ms <= PG_WAIT_MS + 1500,
	    "half a header was reset after %llu ms", (unsigned long long)ms);

	/* Still serving: a well-formed startup packet gets its FATAL. */
	fd = h_connect_ok(lis);
	h_assert(h_send_all(fd, startup, sizeof(startup), H_WAIT_MS) == 0,
	    "send");
	out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
	close(fd);
	h_assert(out == H_OUT_EOF, "the reply ended with %s",
	    h_outcome_name(out));
	h_assert(len > 5 && reply[0] == 'E', "not an ErrorResponse");
	h_assert(memmem(reply, len, "SFATAL", 7) != NULL &&
		memmem(reply, len, "C57P03", 7) != NULL,
	    "severity or SQLSTATE missing");
	h_assert(h_daemon_running(d), "the daemon died");
	/* The last line may trail the client's EOF by a moment. */
	h_assert(h_wait_count(d, 5, H_WAIT_MS, "event=reject", "upstream=db") ==
		5,
	    "%u rejects logged", h_count_log(d, "event=reject"));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A protocol-aware reject is logged, limited and summed like a reset:
 * with log_rejects_per_second = 2, 20 mysql clients in a burst each get
 * their ERR packet, and the reject lines plus the reject_summary counts
 * add up to 20. With dry_run the client is relayed, not told.
 */
START_TEST(mysql_rejects_counted_like_resets)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	struct h_backend *echo = h_backend(H_REFUSE);
	const char *lis = h_free_addr4(), *lis2 = h_free_addr4();
	const char *keys = "failure_threshold = 1\nrecovery_timeout = 60s\n"
			   "reject = mysql\n";
	struct h_daemon *d = h_daemon_start(h_strf("%s%s%s",
	    h_global_section(1, "2s", "log_rejects_per_second = 2\n"),
	    h_upstream("my", lis, h_backend_addr(srv), keys),
	    h_upstream("dry", lis2, h_backend_addr(echo),
		h_strf("%sdry_run = yes\n", keys))));
	unsigned individual, summarised = 0, k;
	uint64_t deadline;
	const char *line;
	enum h_outcome out;
	char *reply;
	size_t len, mark, i;
	double v;
	int fd;

	open_circuit(d, lis, "my");
	mark = h_log_mark(d);
	for (k = 0; k < 20; k++) {
		fd = h_connect_ok(lis);
		out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
		close(fd);
		h_assert(out == H_OUT_EOF && len > 13 &&
			(unsigned char)reply[4] == 0xff,
		    "client %u: %s, %zu bytes", k, h_outcome_name(out), len);
	}
	deadline = h_now_ms() + H_WAIT_MS;
	for (;;) {
		individual =
		    h_count_log_after(d, mark, "event=reject", "upstream=my");
		summarised = 0;
		for (i = mark; (line = h_log_line(d, i)) != NULL; i++)
			if (h_line_has(line, "event=reject_summary") &&
			    h_line_has(line, "upstream=my") &&
			    !isnan(v = h_log_double(line, "rejected")))
				summarised += (unsigned)v;
		if (individual + summarised >= 20 || h_now_ms() >= deadline)
			break;
		h_log_wait_more(d, i, 200);
	}
	h_assert(individual + summarised == 20,
	    "%u reject lines + %u summed, not 20", individual, summarised);
	h_assert(individual <= 6, "%u reject lines over the limit", individual);

	/* dry_run: the would-be reject is logged and the client relayed. */
	open_circuit(d, lis2, "dry");
	h_backend_set_kind(echo, H_ECHO);
	h_assert(h_echo_roundtrip(lis2, "relayed", H_WAIT_MS),
	    "a dry_run client was not relayed");
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=dry", "state=open",
	    "dry_run=yes");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * forced_open without a lifetime has no end: the reply names
 * recovery_timeout (45s); with ?for=20s it names the rest of the lifetime.
 * Forced through the admin endpoint with curl.
 */
START_TEST(forced_open_retry_after)
{
	const char *curl = h_client("curl");
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4(), *admin = h_free_addr4();
	struct h_daemon *d;
	const char *force[] = { "/upstreams/cache/force-open",
		"/upstreams/cache/force-open?for=20s" };
	const int lo[] = { 45, 19 }, hi[] = { 45, 20 };
	enum h_outcome out;
	struct h_run r;
	size_t len;
	char *reply;
	int fd, k;

	if (curl == NULL)
		h_skip("curl is not installed (apt-get install curl)");
	d = h_daemon_start(h_strf("[global]\n"
				  "log_level = info\n"
				  "workers = 1\n"
				  "admin = %s\n"
				  "[upstream:cache]\n"
				  "listen = %s\n"
				  "server = %s\n"
				  "recovery_timeout = 45s\n"
				  "reject = redis\n",
	    admin, lis, h_backend_addr(srv)));
	for (k = 0; k < 2; k++) {
		h_exec(&r, curl, "-s", "-f", "-X", "POST",
		    h_strf("http://%s%s", admin, force[k]));
		h_assert(r.status == 0, "curl %s: %d %s", force[k], r.status,
		    r.err);
		h_expect_log(d, H_WAIT_MS, "event=state", "upstream=cache",
		    "to=forced_open");
		fd = h_connect_ok(lis);
		out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
		close(fd);
		h_assert(out == H_OUT_EOF, "%s: the reply ended with %s",
		    force[k], h_outcome_name(out));
		expect_sentence(reply, "cache", "forced_open", lo[k], hi[k]);
	}
	h_assert(h_backend_accepted(srv) == 0, "the server was reached");
	h_daemon_stop_ok(d);
}
END_TEST

/* A config of one upstream NAME probed by the daemon (recovery_probe). */
static const char *
config_probed(const char *name, const char *listen, const struct h_backend *srv,
    const char *keys)
{
	return h_strf("%s%s", global_section(),
	    h_upstream(name, listen, h_backend_addr(srv),
		h_strf("failure_threshold = 1\nrecovery_jitter = 0\n"
		       "recovery_probe = connect\nreject = redis\n%s",
		    keys)));
}

/* Rewrite the daemon's config and reload it; the log mark before. */
static size_t
reload_ok(struct h_daemon *d, const char *config)
{
	size_t mark = h_log_mark(d);

	h_write_file(h_daemon_config(d), config);
	h_daemon_signal(d, SIGHUP);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	return mark;
}

/*
 * recovery_probe = connect: the server comes back while no client
 * connects; at the end of the open period the daemon probes it twice
 * (success_threshold) and the circuit closes. The server saw exactly those
 * two connects, and no probe follows the closing.
 */
START_TEST(probe_closes_without_clients)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_probed("db", lis, srv,
	    "recovery_timeout = 500ms\n"
	    "half_open_max_calls = 2\n"
	    "success_threshold = 2\n"));
	const char *half, *closed, *line;
	unsigned probes = 0;
	size_t i, end;

	open_circuit(d, lis, "db");
	h_backend_set_kind(srv, H_SILENT);
	half = h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db",
	    "from=open", "to=half_open", "reason=recovery_timeout");
	closed = h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db",
	    "from=half_open", "to=closed", "reason=probes_succeeded");
	end = h_log_index(d, closed);
	for (i = h_log_index(d, half); i < end; i++) {
		line = h_log_line(d, i);
		if (!h_line_has(line, "event=probe"))
			continue;
		h_assert(h_line_has(line, "upstream=db") &&
			h_line_has(line, "result=ok") &&
			h_line_has(line,
			    h_strf("server=%s", h_backend_addr(srv))),
		    "probe line: %s", line);
		probes++;
	}
	h_assert(probes == 2, "%u probes between half_open and closed", probes);
	h_assert(h_backend_wait_accepted(srv, 2, H_WAIT_MS),
	    "the server saw %u connects", h_backend_accepted(srv));
	/* Closed: nothing more is sent to the server. */
	h_assert(!h_backend_wait_accepted(srv, 3, 300),
	    "the server saw %u connects", h_backend_accepted(srv));
	h_assert(h_count_log(d, "event=probe") == 2, "%u probe lines",
	    h_count_log(d, "event=probe"));
	h_assert(h_count_log(d, "event=reject") == 0, "a client was rejected");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The server stays down: each half_open period is one failed probe
 * (error=refused) and the circuit opens again for recovery_timeout times
 * recovery_backoff: 300 ms, then 600 ms, then 1.2 s.
 */
START_TEST(probe_fails_backs_off)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_probed("db", lis, srv,
	    "recovery_timeout = 300ms\n"
	    "recovery_backoff = 2\n"
	    "recovery_timeout_max = 10s\n"));
	const char *open2, *half2, *probe, *open3;
	int64_t gap;

	open_circuit(d, lis, "db");
	probe = h_expect_log(d, H_WAIT_MS, "event=probe", "upstream=db",
	    "result=fail", "error=refused");
	open2 = h_expect_log_after(d, h_log_index(d, probe), H_WAIT_MS,
	    "event=state", "from=half_open", "to=open",
	    "reason=half_open_failure", "retry_after=0.600");
	half2 = h_expect_log_after(d, h_log_index(d, open2), H_WAIT_MS,
	    "event=state", "from=open", "to=half_open");
	gap = h_log_time_ms(half2) - h_log_time_ms(open2);
	h_assert(gap >= 590 && gap <= 1100, "the second open lasted %lld ms",
	    (long long)gap);
	probe = h_expect_log_after(d, h_log_index(d, half2), H_WAIT_MS,
	    "event=probe", "upstream=db", "result=fail", "error=refused");
	open3 = h_expect_log_after(d, h_log_index(d, probe), H_WAIT_MS,
	    "event=state", "from=half_open", "to=open",
	    "reason=half_open_failure", "retry_after=1.200");
	/* One probe per half_open period, none while open. */
	h_assert(h_count_log(d, "event=probe") == 2, "%u probe lines",
	    h_count_log(d, "event=probe"));
	(void)open3;
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A probe that gets no answer ends at connect_timeout (error=timeout);
 * meanwhile the circuit is half_open and a client, never let through as a
 * trial, is told to retry after what is left of the probe's 1.5 s (at
 * least 1 s), not 0: a retry sooner would only be turned away again.
 */
START_TEST(probe_timeout_half_open_rejects)
{
	struct h_backend *srv = h_backend(H_BLACKHOLE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_probed("cache", lis, srv,
	    "recovery_timeout = 300ms\n"
	    "connect_timeout = 1500ms\n"));
	const char *half, *probe, *rej;
	double ra;
	enum h_outcome out;
	size_t len;
	char *reply;
	int64_t took;
	int fd;

	open_circuit(d, lis, "cache");
	half = h_expect_log(d, H_WAIT_MS, "event=state", "upstream=cache",
	    "to=half_open");
	fd = h_connect_ok(lis);
	out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
	close(fd);
	h_assert(out == H_OUT_EOF, "the reply ended with %s",
	    h_outcome_name(out));
	h_assert(strcmp(reply,
		     "-ERR circuitproxy: upstream 'cache' "
		     "unavailable (circuit half_open), retry after "
		     "2s\r\n") == 0 ||
		strcmp(reply,
		    "-ERR circuitproxy: upstream 'cache' "
		    "unavailable (circuit half_open), retry after "
		    "1s\r\n") == 0,
	    "reply \"%s\"", reply);
	rej = h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=cache",
	    "state=half_open");
	ra = h_log_double(rej, "retry_after");
	h_assert(ra >= 1.0 && ra <= 1.5, "told to retry after %g s: %s", ra,
	    rej);
	probe = h_expect_log_after(d, h_log_index(d, half), H_WAIT_MS,
	    "event=probe", "upstream=cache", "result=fail", "error=timeout");
	took = h_log_time_ms(probe) - h_log_time_ms(half);
	h_assert(took >= 1450 && took <= 2500,
	    "the probe ended %lld ms after half_open, connect_timeout 1.5 s",
	    (long long)took);
	h_expect_log_after(d, h_log_index(d, probe), H_WAIT_MS, "event=state",
	    "from=half_open", "to=open", "reason=half_open_failure");
	h_daemon_stop_ok(d);
}
END_TEST

/* A unix-socket server is probed the same way. */
START_TEST(probe_unix_server)
{
	struct h_backend *srv = h_backend_new(H_REFUSE, AF_UNIX);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_probed("db", lis, srv,
	    "recovery_timeout = 300ms\n"
	    "half_open_max_calls = 1\n"
	    "success_threshold = 1\n"));

	open_circuit(d, lis, "db");
	h_backend_set_kind(srv, H_SILENT);
	h_expect_log(d, H_WAIT_MS, "event=probe", "upstream=db",
	    h_strf("server=%s", h_backend_addr(srv)), "result=ok");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db",
	    "from=half_open", "to=closed");
	h_assert(h_backend_wait_accepted(srv, 1, H_WAIT_MS),
	    "the server saw %u connects", h_backend_accepted(srv));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Reloads: turning recovery_probe on during a half_open period that waits
 * for clients starts the probes at once; an upstream removed while its
 * probe is out (and a rejected client still keeps it alive) stops probing:
 * no probe line follows.
 */
START_TEST(probe_reload_on_and_removed)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	struct h_backend *hole = h_backend(H_BLACKHOLE);
	const char *lis = h_free_addr4(), *lis2 = h_free_addr4();
	const char *db = h_upstream("db", lis, h_backend_addr(srv),
	    "failure_threshold = 1\nrecovery_timeout = 300ms\n"
	    "success_threshold = 1\n");
	const char *gone = h_upstream("gone", lis2, h_backend_addr(hole),
	    "failure_threshold = 1\nrecovery_timeout = 300ms\n"
	    "connect_timeout = 1s\nrecovery_probe = connect\n"
	    "reject = redis\n");
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s%s", global_section(), db, gone));
	size_t mark;
	int keep;

	open_circuit(d, lis, "db");
	h_backend_set_kind(srv, H_SILENT);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db",
	    "to=half_open");
	h_client_try(lis2, H_WAIT_MS, NULL, NULL);
	h_expect_log(d, 2 * H_WAIT_MS, "event=state", "upstream=gone",
	    "to=half_open");
	h_assert(h_count_log(d, "event=probe") == 0, "a probe with probes off");
	/* A rejected client kept open keeps the removed upstream alive. */
	keep = h_connect_ok(lis2);
	h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=gone",
	    "state=half_open");

	mark = reload_ok(d,
	    h_strf("%s%srecovery_probe = connect\n", global_section(), db));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=probe", "upstream=db",
	    "result=ok");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=state", "upstream=db",
	    "from=half_open", "to=closed");
	/* gone's probe was out (a blackhole) and is dropped unlogged. */
	h_assert(!h_wait_log_after(d, mark, 1500, "event=probe",
		     "upstream=gone"),
	    "a removed upstream was still probed");
	close(keep);
	h_daemon_stop_ok(d);
}
END_TEST

/* The suite. */
static Suite *
reject_suite(void)
{
	Suite *s = suite_create("reject");

	H_TEST(s, redis_cli_open);
	H_TEST(s, redis_raw_then_eof);
	H_TEST(s, redis_linger_bounds);
	H_TEST(s, reject_linger_flood_bounded);
	H_TEST(s, psql_open);
	H_TEST(s, mariadb_open);
	H_TEST(s, half_open_no_slot_retry_0);
	H_TEST(s, postgres_garbage_and_silence);
	H_TEST(s, mysql_rejects_counted_like_resets);
	H_TEST(s, forced_open_retry_after);
	H_TEST(s, probe_closes_without_clients);
	H_TEST(s, probe_fails_backs_off);
	H_TEST(s, probe_timeout_half_open_rejects);
	H_TEST(s, probe_unix_server);
	H_TEST(s, probe_reload_on_and_removed);
	return s;
}

H_MAIN(reject_suite)
