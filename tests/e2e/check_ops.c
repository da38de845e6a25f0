/*
 * End-to-end stories of running the daemon (SPEC.md sections 2, 5, 6 and
 * 8): reloads on SIGHUP, the drain on SIGTERM, the service manager's
 * notifications and watchdog, running out of file descriptors, and a
 * second instance. What an operator would check: the log lines, the
 * sd_notify messages, the exit status, and clients that keep working.
 */
#include <sys/socket.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* What an open circuit may take to reset a client, valgrind included. */
#define REJECT_MS 1000
/* Clients, one after the other, while the kept address is reloaded. */
#define HAMMER_CLIENTS 300
#define HAMMER_RELOADS 5
#define HAMMER_EVERY 40
/* Idle relays the daemon has descriptors for, in the EMFILE stories. */
#define FD_ROOM 10
/* Clients that then wait in the backlog. */
#define FD_WAITING 5
/* Clients at once while the daemon has one descriptor left. */
#define FD_BURST 20
/* How long the daemon is kept out of descriptors. */
#define FD_STARVE_MS 1500
/*
 * With one descriptor left, accepting pauses 100ms after each client it
 * had to reset: in the first 250ms of a burst, at most 3 are reset.
 */
#define FD_BURST_WINDOW_MS 250
#define FD_BURST_RESETS_MAX 3

/* The [global] section: one worker, no admin, the given shutdown_timeout. */
static const char *
global_section(const char *shutdown_timeout)
{
	return h_global_section(1, shutdown_timeout,
	    "log_rejects_per_second = 100\n");
}

/* An upstream section from a listen address to a server, with more keys. */
static const char *
upstream(const char *name, const char *listen, const struct h_backend *server,
    const char *keys)
{
	return h_upstream(name, listen, h_backend_addr(server), keys);
}

/* A config of one upstream "api" (shutdown_timeout 2s), with more keys. */
static const char *
config_api(const char *listen, const struct h_backend *server, const char *keys)
{
	return h_strf("%s%s", global_section("2s"),
	    upstream("api", listen, server, keys));
}

#define reload(d, config) h_reload((d), (config))

/* Trip a circuit: `n` clients to a refusing server, then the open line. */
static const char *
trip(struct h_daemon *d, const char *lis, int n)
{
	int i;

	for (i = 0; i < n; i++)
		h_client_expect_reset(lis, H_WAIT_MS, NULL);
	return h_expect_log(d, H_WAIT_MS, "level=warning", "event=state",
	    "upstream=api", "from=closed", "to=open", "retry_after=");
}

/*
 * A reload that adds an upstream: the new address listens and relays to
 * its own server, the old one goes on relaying to its own, and the log
 * says what changed.
 */
START_TEST(reload_adds_upstream)
{
	struct h_backend *api_srv = h_backend(H_ECHO);
	struct h_backend *web_srv = h_backend(H_ECHO);
	const char *api = h_free_addr4(), *web = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(api, api_srv, ""));
	enum h_outcome out;
	size_t mark, nmark;

	out = h_client_try(web, H_WAIT_MS, NULL, NULL);
	h_assert(out == H_OUT_REFUSED, "%s before the reload: %s", web,
	    h_outcome_name(out));

	nmark = h_notify_mark(d);
	mark = reload(d,
	    h_strf("%s%s%s", global_section("2s"),
		upstream("api", api, api_srv, ""),
		upstream("web", web, web_srv, "")));
	h_expect_log_after(d, mark, H_WAIT_MS, "level=info", "event=listen",
	    "upstream=web", h_strf("addr=%s", web));
	h_assert_fields_only(h_expect_log_after(d, mark, H_WAIT_MS,
				 "event=reload", "result=ok"),
	    "level=info", "event=reload", "result=ok", "upstreams=2", "added=1",
	    "removed=0");
	h_assert(h_count_log(d, "event=listen", "upstream=api") == 1,
	    "%u listen lines for api: the kept address was bound again",
	    h_count_log(d, "event=listen", "upstream=api"));
	h_assert(h_wait_notify_after(d, nmark, "STATUS=2 upstreams, 0 open,*",
		     H_WAIT_MS) >= 0,
	    "no STATUS=2 upstreams, 0 open after the reload");

	h_assert(h_echo_roundtrip(web, "to web", H_WAIT_MS), "via %s", web);
	h_assert(h_backend_accepted(web_srv) == 1, "web's server saw %u",
	    h_backend_accepted(web_srv));
	h_assert(h_echo_roundtrip(api, "to api", H_WAIT_MS), "via %s", api);
	h_assert(h_backend_accepted(api_srv) == 1, "api's server saw %u",
	    h_backend_accepted(api_srv));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A reload that removes an upstream: its address refuses new clients at
 * once, while the relay opened before goes on both ways and finishes
 * cleanly; the other upstream is untouched.
 */
START_TEST(reload_removes_upstream)
{
	struct h_backend *api_srv = h_backend(H_ECHO);
	struct h_backend *old_srv = h_backend(H_ECHO);
	const char *api = h_free_addr4(), *old = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s%s%s",
	    global_section("2s"), upstream("api", api, api_srv, ""),
	    upstream("old", old, old_srv, "")));
	enum h_outcome out;
	size_t mark, len;
	char *rest;
	int fd;

	fd = h_connect_ok(old);
	h_assert(h_echo_on(fd, "before", H_WAIT_MS),
	    "the relay to old before the reload");

	mark = reload(d, config_api(api, api_srv, ""));
	h_expect_log_after(d, mark, H_WAIT_MS, "level=info", "event=unlisten",
	    "upstream=old", h_strf("addr=%s", old));
	h_expect_log_after(d, mark, H_WAIT_MS, "level=info", "event=reload",
	    "result=ok", "upstreams=1", "added=0", "removed=1");
	h_assert(h_count_log_after(d, mark, "event=unlisten") == 1,
	    "%u unlisten lines", h_count_log_after(d, mark, "event=unlisten"));

	out = h_client_try(old, H_WAIT_MS, NULL, NULL);
	h_assert(out == H_OUT_REFUSED,
	    "a new client of %s after the reload: %s", old,
	    h_outcome_name(out));
	h_assert(h_backend_accepted(old_srv) == 1,
	    "old's server saw %u clients", h_backend_accepted(old_srv));

	h_assert(h_echo_on(fd, "after the reload", H_WAIT_MS),
	    "the relay opened before the reload stopped relaying");
	shutdown(fd, SHUT_WR);
	out = h_recv_all(fd, &rest, &len, H_WAIT_MS);
	h_assert(out == H_OUT_EOF && len == 0,
	    "the old relay ended with %s after %zu more bytes",
	    h_outcome_name(out), len);
	close(fd);
	h_assert(h_backend_wait_idle(old_srv, H_WAIT_MS),
	    "old's server still holds the relay");

	h_assert(h_echo_roundtrip(api, "api", H_WAIT_MS), "via %s", api);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A reload with a bad config: each error is one result=error line naming
 * FILE:LINE, as -t reports them; nothing of the new file is applied (its
 * new address does not listen) and the old config relays on. Once the file
 * is fixed, the next SIGHUP applies it.
 */
START_TEST(reload_bad_config)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *api = h_free_addr4(), *fresh = h_free_addr4();
	const char *good = config_api(api, srv, "");
	struct h_daemon *d = h_daemon_start(good);
	const char *path = h_daemon_config(d);
	/* Lines 10 and 11 are wrong (the [global] section takes six). */
	const char *bad = h_strf("%s"
				 "[upstream:api]\n"
				 "listen = %s\n"
				 "server = %s\n"
				 "timeout = 5s\n"
				 "failure_threshold = lots\n"
				 "[upstream:fresh]\n"
				 "listen = %s\n"
				 "server = %s\n",
	    h_global_section(1, "2s", NULL), api, h_backend_addr(srv), fresh,
	    h_backend_addr(srv));
	const char *at10 = h_strf("%s:10: ", path),
		   *at11 = h_strf("%s:11: ", path);
	char value[1024], *want;
	enum h_outcome out;
	const char *line;
	struct h_run r;
	size_t mark, i;
	unsigned n;

	mark = reload(d, bad);
	n = h_wait_count_after(d, mark, 2, H_WAIT_MS, "event=reload",
	    "result=error");
	h_assert(n == 2, "%u result=error lines for 2 errors", n);
	for (i = mark; (line = h_log_line(d, i)) != NULL; i++) {
		if (!h_line_has(line, "result=error"))
			continue;
		h_assert_fields_only(line, "level=error", "event=reload",
		    "result=error", "error=");
		h_assert(h_log_value(line, "error", value, sizeof(value)), "%s",
		    line);
		h_assert(strncmp(value, at10, strlen(at10)) == 0 ||
			strncmp(value, at11, strlen(at11)) == 0,
		    "error=\"%s\" names neither %s nor %s", value, at10, at11);
	}
	h_run(&r, "-t", "-c", path);
	h_assert(r.status == 78 && h_count_lines(r.err) == 2,
	    "-t exited %d with:\n%s", r.status, r.err);
	for (i = 0; i < 2; i++) {
		want = h_line_at(r.err, (unsigned)i);
		h_assert(h_wait_log_after(d, mark, 0, "event=reload",
			     "result=error",
			     h_strf("error=\"%s\"", want)) != NULL ||
			h_wait_log_after(d, mark, 0, "event=reload",
			    "result=error", h_strf("error=%s", want)) != NULL,
		    "-t says \"%s\", the reload did not", want);
	}
	h_assert(h_count_log_after(d, mark, "result=ok") == 0,
	    "a bad config was applied");
	h_assert(h_count_log(d, "event=listen") == 1,
	    "a bad config bound an address");

	h_assert(h_echo_roundtrip(api, "still here", H_WAIT_MS),
	    "the old config stopped relaying");
	n = h_count_log_after(d, mark, "event=reload", "result=error");
	h_assert(n == 2, "%u result=error lines for 2 errors", n);
	out = h_client_try(fresh, H_WAIT_MS, NULL, NULL);
	h_assert(out == H_OUT_REFUSED, "the bad config's %s: %s", fresh,
	    h_outcome_name(out));

	mark = reload(d,
	    h_strf("%s%s%s", global_section("2s"),
		upstream("api", api, srv, ""),
		upstream("fresh", fresh, srv, "")));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok",
	    "upstreams=2", "added=1");
	h_assert(h_echo_roundtrip(fresh, "fixed", H_WAIT_MS),
	    "the fixed config's %s", fresh);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A reload keeps an upstream's breaker: an open circuit stays open (the
 * next client is rejected at once, the server untouched) and its
 * retry_after keeps counting down instead of starting again at 5.000.
 */
START_TEST(reload_keeps_breaker_state)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	const char *keys = "failure_threshold = 2\n"
			   "recovery_timeout = 5s\n";
	struct h_daemon *d = h_daemon_start(config_api(lis, srv, keys));
	const char *open, *line;
	char *client;
	double before, after;
	uint64_t el;
	size_t mark;

	open = trip(d, lis, 2);
	h_assert(h_line_has(open, "retry_after=5.000"), "%s", open);
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	line = h_expect_log(d, H_WAIT_MS, "event=reject", "upstream=api",
	    h_strf("client=%s", client), "state=open", "retry_after=");
	before = h_log_double(line, "retry_after");

	/* Half a second on the clock, then the operator reloads. */
	poll(NULL, 0, 500);
	mark = reload(d,
	    config_api(lis, srv, h_strf("%sconnect_timeout = 4s\n", keys)));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok",
	    "upstreams=1", "added=0", "removed=0");

	client = h_client_expect_reset(lis, H_WAIT_MS, &el);
	h_assert(el < REJECT_MS, "the rejected client waited %llu ms",
	    (unsigned long long)el);
	line = h_expect_log_after(d, mark, H_WAIT_MS, "level=notice",
	    "event=reject", "upstream=api", h_strf("client=%s", client),
	    "state=open", "retry_after=");
	after = h_log_double(line, "retry_after");
	h_assert(after > 0 && after <= before - 0.4,
	    "retry_after=%.3f before the reload, %.3f after", before, after);
	h_assert(h_count_log_after(d, mark, "event=state") == 0,
	    "the breaker changed state on reload");
	h_assert(h_count_log(d, "event=connect_fail") == 2,
	    "the server was tried while open: %u connect_fail lines",
	    h_count_log(d, "event=connect_fail"));
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A reload applies a changed setting to a kept upstream: reject = reset
 * becomes reject = http503, and the next client of the open circuit reads
 * an HTTP 503 instead of a reset.
 */
START_TEST(reload_applies_reject_http503)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	const char *keys = "failure_threshold = 1\n"
			   "recovery_timeout = 30s\n";
	struct h_daemon *d = h_daemon_start(
	    config_api(lis, srv, h_strf("%sreject = reset\n", keys)));
	const char *ra;
	enum h_outcome out;
	char *reply;
	size_t len, mark;
	int fd, secs;

	trip(d, lis, 1);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);

	mark = reload(d,
	    config_api(lis, srv, h_strf("%sreject = http503\n", keys)));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");

	fd = h_connect_ok(lis);
	out = h_recv_all(fd, &reply, &len, H_WAIT_MS);
	close(fd);
	h_assert(out == H_OUT_EOF, "the reply ended with %s: \"%s\"",
	    h_outcome_name(out), reply);
	h_assert(strncmp(reply, "HTTP/1.1 503 Service Unavailable\r\n", 34) ==
		0,
	    "not a 503 after the reload: \"%s\"", reply);
	ra = strcasestr(reply, "\r\nRetry-After:");
	h_assert(ra != NULL, "no Retry-After: \"%s\"", reply);
	secs = atoi(ra + 14);
	h_assert(secs >= 1 && secs <= 30, "Retry-After: %d", secs);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=open");
	h_daemon_stop_ok(d);
}
END_TEST

struct hammer {
	const char *addr;
	atomic_uint done;
	atomic_bool stop; /* set by the test: no more clients */
	unsigned failed;
	unsigned first_failed;
	int first_errno;
};

/*
 * One client after the other, each an echo round trip; count failures.
 * Runs beside the test's thread, so it allocates nothing from the harness.
 */
static void *
hammer_main(void *arg)
{
	struct hammer *h = arg;
	char back[4];
	unsigned i;
	bool ok;
	int fd;

	/* Bounded, and going on until the test has done its reloads. */
	for (i = 0; i < 10 * HAMMER_CLIENTS && !atomic_load(&h->stop); i++) {
		errno = 0;
		fd = h_connect(h->addr, H_WAIT_MS);
		ok = fd != -1 && h_send_all(fd, "ping", 4, H_WAIT_MS) == 0 &&
		    h_recv_exact(fd, back, 4, H_WAIT_MS) == H_OUT_DATA &&
		    memcmp(back, "ping", 4) == 0;
		if (!ok && h->failed++ == 0) {
			h->first_failed = i;
			h->first_errno = errno;
		}
		h_close(fd);
		atomic_store(&h->done, i + 1);
	}
	return NULL;
}

/*
 * Wait until the hammer has done n clients, for as long as it makes
 * progress: a busy machine makes the clients slow, not the story wrong.
 * Bounded: it gives up when no client ended for 2 * H_WAIT_MS (each
 * client's steps have deadlines of their own).
 */
static bool
hammer_wait(struct hammer *h, unsigned n)
{
	uint64_t deadline = h_now_ms() + 2 * H_WAIT_MS;
	unsigned seen = atomic_load(&h->done), now;

	while ((now = atomic_load(&h->done)) < n && h_now_ms() < deadline) {
		if (now != seen) {
			seen = now;
			deadline = h_now_ms() + 2 * H_WAIT_MS;
		}
		poll(NULL, 0, 1);
	}
	return atomic_load(&h->done) >= n;
}

/*
 * An address that stays keeps its socket: clients one after the other
 * through five reloads (another upstream added and removed each time), and
 * not one is refused or lost.
 */
START_TEST(reload_keeps_listening_socket)
{
	struct h_backend *srv = h_backend(H_ECHO),
			 *side_srv = h_backend(H_ECHO);
	const char *api = h_free_addr4(), *side = h_free_addr4();
	const char *alone = config_api(api, srv, "");
	const char *both = h_strf("%s%s%s", global_section("2s"),
	    upstream("api", api, srv, ""),
	    upstream("side", side, side_srv, ""));
	struct h_daemon *d = h_daemon_start(alone);
	struct hammer h = { .addr = api };
	pthread_t t;
	size_t mark = h_log_mark(d);
	unsigned i, at_last, n;

	atomic_init(&h.done, 0);
	atomic_init(&h.stop, false);
	h_assert(pthread_create(&t, NULL, hammer_main, &h) == 0, "thread");
	for (i = 1; i <= HAMMER_RELOADS; i++) {
		if (!hammer_wait(&h, i * HAMMER_EVERY))
			break;
		reload(d, i % 2 == 1 ? both : alone);
	}
	at_last = atomic_load(&h.done);
	/* Some clients after the last reload too, then stop. */
	hammer_wait(&h, at_last + HAMMER_EVERY);
	atomic_store(&h.stop, true);
	pthread_join(t, NULL);

	h_assert(i > HAMMER_RELOADS, "the clients stalled before reload %u", i);
	h_assert(h.failed == 0,
	    "%u of %u clients failed through the reloads, the first (#%u): %s",
	    h.failed, atomic_load(&h.done), h.first_failed,
	    strerror(h.first_errno));
	h_assert(atomic_load(&h.done) >= at_last + HAMMER_EVERY,
	    "%u clients after the last reload, %u wanted",
	    atomic_load(&h.done) - at_last, HAMMER_EVERY);
	n = h_wait_count_after(d, mark, HAMMER_RELOADS, H_WAIT_MS,
	    "event=reload", "result=ok");
	h_assert(n == HAMMER_RELOADS, "%u reloads ok of %u", n, HAMMER_RELOADS);
	h_assert(h_count_log(d, "event=listen", "upstream=api") == 1 &&
		h_count_log(d, "event=unlisten", "upstream=api") == 0,
	    "api's address was bound again");
	h_assert(h_count_log(d, "event=listen", "upstream=side") == 3,
	    "side listened %u times in 5 reloads",
	    h_count_log(d, "event=listen", "upstream=side"));
	h_assert(h_backend_accepted(srv) == atomic_load(&h.done),
	    "the server saw %u clients of %u", h_backend_accepted(srv),
	    atomic_load(&h.done));
	fprintf(stderr,
	    "reload_keeps_listening_socket: %u clients through "
	    "%u reloads\n",
	    atomic_load(&h.done), HAMMER_RELOADS);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * workers is not reloadable: a reload that changes it says so in a warning
 * and applies the rest.
 */
START_TEST(reload_workers_not_reloadable)
{
	struct h_backend *srv = h_backend(H_ECHO), *web_srv = h_backend(H_ECHO);
	const char *api = h_free_addr4(), *web = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(api, srv, ""));
	const char *two = h_strf("[global]\n"
				 "workers = 2\n"
				 "admin =\n"
				 "shutdown_timeout = 2s\n"
				 "\n%s%s",
	    upstream("api", api, srv, ""), upstream("web", web, web_srv, ""));
	size_t mark;

	mark = reload(d, two);
	h_expect_log_after(d, mark, H_WAIT_MS, "level=warning", "event=reload",
	    "key=workers", "value=2", "running=1");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok",
	    "upstreams=2", "added=1");
	h_assert(h_echo_roundtrip(web, "web", H_WAIT_MS), "via %s", web);
	h_assert(h_echo_roundtrip(api, "api", H_WAIT_MS), "via %s", api);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Connect until refused, closing at once what gets through: how many got
 * through. The daemon logs event=stopping just before it shuts its
 * listeners, so a client in that instant may still be taken (and drained).
 * Tries are 10ms apart, for up to a second.
 */
static unsigned
connect_until_refused(const char *lis)
{
	uint64_t deadline = h_now_ms() + 1000;
	unsigned through = 0;
	const char *last;
	int fd;

	for (;;) {
		fd = h_connect(lis, H_WAIT_MS);
		if (fd == -1 && errno == ECONNREFUSED)
			return through;
		last = fd == -1 ? strerror(errno) : "connected";
		h_close(fd);
		through++;
		h_assert(h_now_ms() < deadline,
		    "new clients not refused after %u tries in 1 s, the last: "
		    "%s",
		    through, last);
		poll(NULL, 0, 10);
	}
}

/*
 * SIGTERM drains: STOPPING=1 and the stopping line, new clients refused at
 * once, the relay in progress still relays both ways, and the daemon exits
 * 0 as soon as that client is done: drained=1 closed=0.
 */
START_TEST(sigterm_drains)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s%s",
	    global_section("10s"), upstream("api", lis, srv, "")));
	enum h_outcome out;
	size_t nmark, len;
	const char *stop;
	unsigned through;
	double drained;
	char *rest;
	int fd, st;

	fd = h_connect_ok(lis);
	h_assert(h_echo_on(fd, "before", H_WAIT_MS),
	    "the relay before SIGTERM");

	nmark = h_notify_mark(d);
	h_daemon_signal(d, SIGTERM);
	h_expect_log(d, H_WAIT_MS, "level=info", "event=stopping",
	    "reason=SIGTERM", "shutdown_timeout=10.000");
	h_assert(h_wait_notify_after(d, nmark, "STOPPING=1", H_WAIT_MS) >= 0,
	    "no STOPPING=1 after SIGTERM");

	through = connect_until_refused(lis);
	h_assert(h_echo_on(fd, "during the drain", H_WAIT_MS),
	    "the relay stopped relaying during the drain");
	h_assert(h_daemon_running(d), "the daemon left an open relay behind");

	shutdown(fd, SHUT_WR);
	out = h_recv_all(fd, &rest, &len, H_WAIT_MS);
	h_assert(out == H_OUT_EOF && len == 0, "the relay ended with %s",
	    h_outcome_name(out));
	close(fd);
	st = h_daemon_wait_exit(d, H_STOP_MS);
	h_assert(st == 0, "exit status %d after the drain", st);
	stop = h_expect_log(d, 0, "level=info", "event=stop", "reason=SIGTERM",
	    "drained=", "closed=0");
	drained = h_log_double(stop, "drained");
	h_assert(drained >= 1 && drained <= 1 + through,
	    "drained=%.0f with 1 relay open (and %u taken at the stop)",
	    drained, through);
	h_assert(h_backend_accepted(srv) <= 1 + through,
	    "the server saw %u clients: a refused one got through",
	    h_backend_accepted(srv));
}
END_TEST

/*
 * shutdown_timeout = 300ms with a relay that never ends: the daemon waits
 * that long, resets the client, and exits 0 with closed=1.
 */
START_TEST(sigterm_shutdown_timeout)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s%s",
	    global_section("300ms"), upstream("api", lis, srv, "")));
	enum h_outcome out;
	uint64_t t0, el;
	int fd, st;

	fd = h_connect_ok(lis);
	h_assert(h_echo_on(fd, "idle from now on", H_WAIT_MS), "the relay");

	t0 = h_now_ms();
	h_daemon_signal(d, SIGTERM);
	st = h_daemon_wait_exit(d, H_STOP_MS);
	el = h_now_ms() - t0;
	h_assert(st == 0, "exit status %d", st);
	h_assert_between(el, 280, 2500,
	    "ms from SIGTERM to exit with shutdown_timeout = 300ms");
	h_expect_log(d, 0, "event=stopping", "shutdown_timeout=0.300");
	h_expect_log(d, 0, "level=info", "event=stop", "reason=SIGTERM",
	    "drained=0", "closed=1");
	out = h_next_event(fd, H_WAIT_MS);
	h_assert(out == H_OUT_RESET, "the idle client saw %s, not a reset",
	    h_outcome_name(out));
	close(fd);
}
END_TEST

/*
 * A second signal during the drain (SIGTERM, or SIGINT: SPEC 6) does not
 * wait for shutdown_timeout (30s): the open relay is reset and the daemon
 * exits 0 at once, the stop line counting the reset.
 */
static void
second_signal_exits_at_once(int second)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s%s",
	    global_section("30s"), upstream("api", lis, srv, "")));
	enum h_outcome out;
	uint64_t t0, el;
	int fd, st;

	fd = h_connect_ok(lis);
	h_assert(h_echo_on(fd, "idle from now on", H_WAIT_MS), "the relay");
	h_daemon_signal(d, SIGTERM);
	h_assert_fields_only(h_expect_log(d, H_WAIT_MS, "event=stopping"),
	    "level=info", "event=stopping", "reason=SIGTERM",
	    "shutdown_timeout=30.000");
	h_assert(h_daemon_wait_exit(d, 300) == -1,
	    "the daemon did not wait for the open relay");

	t0 = h_now_ms();
	h_daemon_signal(d, second);
	st = h_daemon_wait_exit(d, H_STOP_MS);
	el = h_now_ms() - t0;
	h_assert(st == 0, "exit status %d after signal %d", st, second);
	h_assert_between(el, 0, 3000, "ms from the second signal to the exit");
	h_assert_fields_only(h_expect_log(d, 0, "event=stop"), "level=info",
	    "event=stop", "reason=SIGTERM", "drained=0", "closed=1");
	out = h_next_event(fd, H_WAIT_MS);
	h_assert(out == H_OUT_RESET, "the open client saw %s, not a reset",
	    h_outcome_name(out));
	close(fd);
}

/* SIGTERM twice. */
START_TEST(sigterm_twice_exits_at_once)
{
	second_signal_exits_at_once(SIGTERM);
}
END_TEST

/* SIGTERM, then SIGINT. */
START_TEST(sigint_after_sigterm)
{
	second_signal_exits_at_once(SIGINT);
}
END_TEST

/*
 * WATCHDOG_USEC=200000: WATCHDOG=1 every 100ms, so three within a second
 * (and not all at once). A WATCHDOG_PID naming another process turns it
 * off.
 */
START_TEST(watchdog_pings)
{
	struct h_backend *srv = h_backend(H_ECHO);
	struct h_opts on = { .env = { "WATCHDOG_USEC=200000", NULL } };
	struct h_opts other = { .env = { "WATCHDOG_USEC=200000",
				    "WATCHDOG_PID=1", NULL } };
	struct h_daemon *d =
	    h_daemon_start_opts(&on, config_api(h_free_addr4(), srv, ""));
	struct h_daemon *quiet =
	    h_daemon_start_opts(&other, config_api(h_free_addr4(), srv, ""));
	size_t mark = h_notify_mark(d);
	uint64_t t0 = h_now_ms(), el;
	unsigned n;

	n = h_wait_notify_count(d, mark, "WATCHDOG=1", 3, 1000);
	el = h_now_ms() - t0;
	h_assert(n >= 3, "%u WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000", n);
	h_assert(el >= 150, "3 WATCHDOG=1 in %llu ms: faster than every 100ms",
	    (unsigned long long)el);
	n = h_count_notify(quiet, 0, "WATCHDOG=1");
	h_assert(n == 0, "%u WATCHDOG=1 though WATCHDOG_PID is another pid", n);
	h_daemon_stop_ok(d);
	h_daemon_stop_ok(quiet);
}
END_TEST

/*
 * STATUS= follows the breaker, not only start and reload: when the circuit
 * opens, the service manager is told "1 upstream, 1 open", and when it
 * leaves open (half_open on the timer), "1 upstream, 0 open" again.
 */
START_TEST(notify_status_follows_breaker)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis, srv,
	    "failure_threshold = 1\n"
	    "recovery_timeout = 500ms\n"));
	size_t nmark;
	long opened;

	h_assert(h_wait_notify(d, "STATUS=1 upstream, 0 open,*", H_WAIT_MS),
	    "no STATUS=1 upstream, 0 open at the start");
	nmark = h_notify_mark(d);
	trip(d, lis, 1);
	opened = h_wait_notify_after(d, nmark, "STATUS=1 upstream, 1 open,*",
	    H_WAIT_MS);
	h_assert(opened >= 0, "no STATUS=1 upstream, 1 open once it opened");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "from=open",
	    "to=half_open");
	h_assert(h_wait_notify_after(d, (size_t)opened + 1,
		     "STATUS=1 upstream, 0 open,*", H_WAIT_MS) >= 0,
	    "no STATUS=1 upstream, 0 open once it left open");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Wait until no descriptor of the daemon names a file or directory under
 * dir (a state_file write's temporary file and directory are closed);
 * true if so within ms.
 */
static bool
daemon_fds_leave(struct h_daemon *d, const char *dir, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	int held;

	while ((held = h_daemon_fds_named(d, dir)) != 0) {
		if (held < 0 || h_now_ms() >= deadline)
			return false;
		poll(NULL, 0, 5);
	}
	return true;
}

/*
 * The descriptors a daemon holds at rest: once its first state_file write
 * is done (when written names the text it puts in the file) and no write
 * holds a file of the test's directory any more.
 */
static int
daemon_nfds_at_rest(struct h_daemon *d, const char *state, const char *text)
{
	if (state != NULL)
		h_assert(h_file_has_within(state, text, H_WAIT_MS),
		    "the daemon did not write %s", state);
	h_assert(daemon_fds_leave(d, h_tmpdir(), H_WAIT_MS),
	    "the daemon still holds a file under %s", h_tmpdir());
	return h_daemon_nfds_settled(d);
}

/*
 * A daemon with room for exactly FD_ROOM relays (and `spare` descriptors
 * more): as many descriptors as the same config takes at rest, plus two per
 * relay, as RLIMIT_NOFILE. With a state_file, the two starts are counted
 * after the file holds text (their first write), as a write in flight or
 * yet to come would make the counts differ.
 */
static struct h_daemon *
start_with_room(const char *config, unsigned spare, const char *state,
    const char *text)
{
	struct h_daemon *probe = h_daemon_start(config);
	struct h_opts opts = { 0 };
	struct h_daemon *d;
	int used = daemon_nfds_at_rest(probe, state, text), now;

	h_assert(used > 0, "cannot count the daemon's descriptors");
	h_daemon_stop_ok(probe);
	if (state != NULL)
		h_write_file(state, "circuitproxyd-state 1\n");
	opts.nofile = (unsigned)used + 2 * FD_ROOM + spare;
	d = h_daemon_start_opts(&opts, config);
	now = daemon_nfds_at_rest(d, state, text);
	h_assert(now == used, "%d descriptors at rest, %d the first time", now,
	    used);
	return d;
}

/* Open the FD_ROOM idle relays the daemon has room for. */
static void
fill_room(const char *lis, int *fds)
{
	int i;

	for (i = 0; i < FD_ROOM; i++) {
		fds[i] = h_connect_ok(lis);
		h_assert(h_echo_on(fds[i], "x", H_WAIT_MS), "relay %d of %d",
		    i + 1, FD_ROOM);
	}
}

/*
 * Out of file descriptors: the next clients wait in the backlog while the
 * daemon pauses accepting and says so (accept_paused, at most once a
 * second); it never dies; once relays end, the waiting clients are served
 * and new ones too. Under a wrapper such as valgrind, which keeps its own
 * descriptors above the daemon's limit, the kernel's accept succeeds and
 * the wrapper closes the client to report EMFILE: the waiting clients are
 * lost there, so they are only checked without one.
 */
START_TEST(emfile_pauses_accepting)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	const char *config = config_api(lis, srv, "");
	struct h_daemon *d = start_with_room(config, 0, NULL, NULL);
	int fds[FD_ROOM], waiting[FD_WAITING], i;
	enum h_outcome out;
	uint64_t t0, secs;
	const char *msg, *wrapper = getenv("CP_TEST_WRAPPER");
	bool wrapped = wrapper != NULL && *wrapper != '\0';
	size_t mark;
	unsigned n;
	char buf[8];

	fill_room(lis, fds);
	mark = h_log_mark(d);
	t0 = h_now_ms();
	for (i = 0; i < FD_WAITING; i++) {
		waiting[i] = h_connect_ok(lis);
		msg = h_strf("w%d", i);
		h_assert(h_send_all(waiting[i], msg, strlen(msg), H_WAIT_MS) ==
			0,
		    "send");
	}
	h_expect_log_after(d, mark, H_WAIT_MS, "level=error",
	    "event=accept_paused", "upstream=api", h_strf("addr=%s", lis),
	    "error=EMFILE", "pause_ms=100");

	/* Out of descriptors for a while: still alive, clients still waiting. */
	poll(NULL, 0, FD_STARVE_MS);
	for (i = 0; i < FD_WAITING && !wrapped; i++) {
		out = h_next_event(waiting[i], 0);
		h_assert(out == H_OUT_TIMEOUT,
		    "waiting client %d saw %s while the daemon had no fd", i,
		    h_outcome_name(out));
	}
	h_assert(h_daemon_running(d), "the daemon died out of descriptors");
	secs = (h_now_ms() - t0 + 999) / 1000;
	n = h_count_log_after(d, mark, "event=accept_paused");
	h_assert(n <= secs + 1, "%u accept_paused lines in %llu s", n,
	    (unsigned long long)secs);
	h_assert(h_count_log_after(d, mark, "event=reject") == 0,
	    "a client was turned away: %u reject lines",
	    h_count_log_after(d, mark, "event=reject"));

	for (i = 0; i < FD_ROOM; i++)
		close(fds[i]);
	for (i = 0; i < FD_WAITING && !wrapped; i++) {
		msg = h_strf("w%d", i);
		out = h_recv_exact(waiting[i], buf, strlen(msg), H_WAIT_MS);
		h_assert(out == H_OUT_DATA &&
			memcmp(buf, msg, strlen(msg)) == 0,
		    "waiting client %d was not served once fds were free: %s",
		    i, h_outcome_name(out));
		close(waiting[i]);
		waiting[i] = -1;
	}
	for (i = 0; i < FD_WAITING; i++)
		h_close(waiting[i]);
	h_assert(h_served_within(lis, H_WAIT_MS, H_WAIT_MS),
	    "no new client relayed after the shortage");
	h_daemon_stop_ok(d);
	if (wrapped)
		h_skip("under %s the waiting clients are lost", wrapper);
}
END_TEST

/*
 * Watch a burst of clients for ms: how many are reset (closed and set to
 * -1 in fds); a client that sees anything else fails the test.
 */
static unsigned
burst_resets(int *fds, int n, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms, now;
	struct pollfd pfd[FD_BURST];
	enum h_outcome out;
	unsigned resets = 0;
	int i, k, idx[FD_BURST];

	for (;;) {
		for (i = 0, k = 0; i < n; i++) {
			if (fds[i] == -1)
				continue;
			pfd[k].fd = fds[i];
			pfd[k].events = POLLIN;
			idx[k++] = i;
		}
		now = h_now_ms();
		if (k == 0 || now >= deadline ||
		    poll(pfd, (nfds_t)k, (int)(deadline - now)) <= 0)
			return resets;
		for (i = 0; i < k; i++) {
			if (pfd[i].revents == 0)
				continue;
			out = h_next_event(fds[idx[i]], 0);
			h_assert(out == H_OUT_RESET,
			    "a client of the burst saw %s, not a reset or a "
			    "wait",
			    h_outcome_name(out));
			close(fds[idx[i]]);
			fds[idx[i]] = -1;
			resets++;
		}
	}
}

/*
 * Out of file descriptors but one: accept still succeeds, the server socket
 * does not. That client is reset as overload (SPEC.md 4) and accepting
 * pauses (SPEC.md 8): the rest of a burst waits in the backlog, one client
 * let in per pause, instead of every one being accepted and reset at once.
 * The daemon lives on, serves once fds are free, and its reject lines obey
 * log_rejects_per_second (SPEC.md 5): no line per client.
 */
START_TEST(emfile_one_fd_left)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	const char *config = h_strf("[global]\n"
				    "workers = 1\n"
				    "admin =\n"
				    "shutdown_timeout = 2s\n"
				    "log_rejects_per_second = 2\n"
				    "\n%s",
	    upstream("api", lis, srv, ""));
	struct h_daemon *d = start_with_room(config, 1, NULL, NULL);
	int fds[FD_ROOM], burst[FD_BURST], i;
	unsigned resets = 0, rejects;
	uint64_t t0, now, secs;
	size_t mark;

	fill_room(lis, fds);
	mark = h_log_mark(d);
	t0 = h_now_ms();
	for (i = 0; i < FD_BURST; i++) {
		burst[i] = h_connect(lis, H_WAIT_MS);
		if (burst[i] == -1) {
			h_assert(errno == ECONNRESET,
			    "client %d of the burst: %s", i, strerror(errno));
			resets++;
		}
	}
	now = h_now_ms();
	if (now < t0 + FD_BURST_WINDOW_MS)
		resets += burst_resets(burst, FD_BURST,
		    (int)(t0 + FD_BURST_WINDOW_MS - now));
	h_assert(resets <= FD_BURST_RESETS_MAX,
	    "%u of %d clients reset in the first %d ms: they were not left "
	    "in the backlog",
	    resets, FD_BURST, FD_BURST_WINDOW_MS);
	h_expect_log_after(d, mark, H_WAIT_MS, "level=error",
	    "event=accept_paused", "upstream=api", h_strf("addr=%s", lis),
	    "error=EMFILE");
	h_assert(h_daemon_running(d), "the daemon died out of descriptors");

	for (i = 0; i < FD_BURST; i++)
		h_close(burst[i]);
	for (i = 0; i < FD_ROOM; i++)
		close(fds[i]);
	h_assert(h_served_within(lis, H_WAIT_MS, H_WAIT_MS),
	    "no new client relayed after the shortage");
	rejects = h_count_log_after(d, mark, "event=reject");
	secs = (h_now_ms() - t0 + 999) / 1000;
	/* Out of fds for the server socket: overload, never a failure. */
	h_assert(h_count_log(d, "event=connect_fail") == 0 &&
		h_count_log(d, "event=state") == 0,
	    "an fd shortage counted as the server's failure");
	h_assert_fields_only(h_expect_log_after(d, mark, 0, "event=reject"),
	    "level=notice", "event=reject", "upstream=api",
	    "client=", "reason=overload", "error=EMFILE");
	h_daemon_stop_ok(d);
	h_assert(rejects <= 2 * (secs + 1),
	    "%u reject lines in %llu s with log_rejects_per_second = 2",
	    rejects, (unsigned long long)secs);
}
END_TEST

/*
 * A second instance on the same address: it never says READY=1, exits 1
 * with one error line naming the address, and the first one serves on.
 */
START_TEST(second_instance_exits_1)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	const char *config = config_api(lis, srv, "");
	struct h_daemon *first = h_daemon_start(config);
	struct h_daemon *second = h_daemon_spawn(config);
	const char *line;
	int st;

	h_assert(!h_daemon_wait_ready(second, H_READY_MS),
	    "a second instance on %s said READY=1", lis);
	st = h_daemon_wait_exit(second, H_STOP_MS);
	h_assert(st == 1, "the second instance exited %d", st);
	h_assert(h_count_log(second, "level=error") == 1,
	    "%u error lines from the second instance",
	    h_count_log(second, "level=error"));
	line = h_expect_log(second, 0, "level=error");
	h_assert(strstr(line, lis) != NULL && strcasestr(line, "in use"),
	    "the error line does not name %s in use: %s", lis, line);
	h_assert(h_echo_roundtrip(lis, "first", H_WAIT_MS),
	    "the first instance stopped serving");
	h_daemon_stop_ok(first);
}
END_TEST

/*
 * state_file is written with the descriptor table full (SPEC.md 8): the
 * daemon keeps one descriptor for it. Here every descriptor holds a relay
 * when api's open period ends, and the half_open state is in the file at
 * once, with no error line.
 */
START_TEST(emfile_state_file_written)
{
	struct h_backend *down = h_backend(H_REFUSE), *srv = h_backend(H_ECHO);
	const char *l_api = h_free_addr4(), *l_web = h_free_addr4();
	const char *path = h_path("state");
	const char *config =
	    h_strf("%sstate_file = %s\n\n%s%s", global_section("2s"), path,
		upstream("api", l_api, down,
		    "failure_threshold = 1\nrecovery_timeout = 2s"),
		upstream("web", l_web, srv, ""));
	struct h_daemon *d;
	int fds[FD_ROOM], i;
	size_t mark;

	/* The same file for both starts of start_with_room: same descriptors. */
	h_write_file("state", "circuitproxyd-state 1\n");
	d = start_with_room(config, 0, path, "\napi state=closed ");
	h_client_expect_reset(l_api, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	h_assert(h_file_has_within(path, "\napi state=open ", H_WAIT_MS),
	    "the opening never reached %s", path);
	/*
	 * The write's descriptors are given back before the room is filled:
	 * waited for as such, not as a count that looks settled.
	 */
	h_assert(daemon_fds_leave(d, h_tmpdir(), H_WAIT_MS),
	    "the daemon still holds a file under %s", h_tmpdir());
	fill_room(l_web, fds);
	mark = h_log_mark(d);
	h_expect_log_after(d, mark, 2000 + H_WAIT_MS, "event=state",
	    "upstream=api", "from=open", "to=half_open");
	h_assert(h_file_has_within(path, "\napi state=half_open ", H_WAIT_MS),
	    "half_open never reached %s with the descriptor table full", path);
	h_assert(h_count_log_after(d, mark, "event=state_file",
		     "result=error") == 0,
	    "a state_file write failed with the table full");
	for (i = 0; i < FD_ROOM; i++)
		close(fds[i]);
	h_daemon_stop_ok(d);
}
END_TEST

/* The suite. */
static Suite *
ops_suite(void)
{
	Suite *s = suite_create("ops");

	H_TEST(s, reload_adds_upstream);
	H_TEST(s, reload_removes_upstream);
	H_TEST(s, reload_bad_config);
	H_TEST(s, reload_keeps_breaker_state);
	H_TEST(s, reload_applies_reject_http503);
	H_TEST(s, reload_keeps_listening_socket);
	H_TEST(s, reload_workers_not_reloadable);
	H_TEST(s, sigterm_drains);
	H_TEST(s, sigterm_shutdown_timeout);
	H_TEST(s, sigterm_twice_exits_at_once);
	H_TEST(s, sigint_after_sigterm);
	H_TEST(s, watchdog_pings);
	H_TEST(s, notify_status_follows_breaker);
	H_TEST(s, emfile_pauses_accepting);
	H_TEST(s, emfile_one_fd_left);
	H_TEST(s, emfile_state_file_written);
	H_TEST(s, second_instance_exits_1);
	return s;
}

H_MAIN(ops_suite)
