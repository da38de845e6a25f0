/*
 * End-to-end stories of state_file (SPEC.md 3): breaker states kept across
 * a restart of the real daemon. An open circuit comes back open for the
 * rest of its time, forces keep their lifetimes, an open period that ended
 * while the daemon was down comes back half_open, a bad file is logged and
 * ignored, and a file that cannot be written is logged and retried while
 * the daemon goes on relaying.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* Log timestamps and the file have millisecond resolution; allow for both. */
#define ROUND_MS 20
/* How late a breaker timer may fire on a loaded machine. */
#define LATE_MS 700
/* What is left of a force in a file written just before the start: room for
 * a slow start (valgrind on a loaded machine). */
#define WEB_LEFT_MS 5000

/* The config: one worker, state_file at path, the upstreams given. */
static const char *
config(const char *path, const char *upstreams)
{
	return h_strf("[global]\n"
		      "workers = 1\n"
		      "state_file = %s\n"
		      "\n%s",
	    path, upstreams);
}

/* An upstream section that opens on one failure, with more keys. */
static const char *
upstream(const char *name, const char *listen, const struct h_backend *server,
    const char *keys)
{
	return h_upstream(name, listen, h_backend_addr(server),
	    h_strf("failure_threshold = 1\nhalf_open_max_calls = 1\n"
		   "success_threshold = 1\n%s",
		keys));
}

/* Format wall milliseconds as the file does: "S.mmm". */
static char *
secs(int64_t ms)
{
	return h_strf("%" PRId64 ".%03" PRId64, ms / 1000, ms % 1000);
}

/*
 * An open circuit survives a restart with the rest of its open time: the
 * restarted daemon rejects at once (the server is up again, and untouched)
 * and goes half_open when the first run's open period ends, not later and
 * not a whole recovery_timeout after the restart.
 */
START_TEST(state_open_survives_restart)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	char *lis = h_free_addr4(), *path = h_path("state"), *text;
	const char *conf =
	    config(path, upstream("api", lis, srv, "recovery_timeout = 6s"));
	struct h_daemon *d1, *d2;
	const char *line;
	int64_t t_open, t_start, t_restored, t_half;
	double left;
	size_t mark;

	d1 = h_daemon_start(conf);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	line = h_expect_log(d1, H_WAIT_MS, "event=state", "upstream=api",
	    "from=closed", "to=open", "retry_after=6.000");
	t_open = h_log_time_ms(line);
	h_daemon_stop_ok(d1);
	text = h_read_file(path);
	h_assert(text != NULL &&
		strstr(text, "circuitproxyd-state 1\n") == text &&
		strstr(text, "\napi state=open ") != NULL,
	    "the state file after the stop:\n%s", text ? text : "(none)");

	/* The server is back: a closed circuit would let the client through. */
	h_backend_set_kind(srv, H_ECHO);
	t_start = h_wall_ms();
	d2 = h_daemon_start(conf);
	line =
	    h_expect_log(d2, H_WAIT_MS, "event=state_file", "result=restored",
		"upstream=api", "saved=open", "state=open", "retry_after=");
	t_restored = h_log_time_ms(line);
	left = h_log_double(line, "retry_after") * 1000.0;
	/* What was left at the moment the file was read, during the start. */
	h_assert(left >= (double)(6000 - (t_restored - t_open)) - ROUND_MS &&
		left <= (double)(6000 - (t_start - t_open)) + ROUND_MS,
	    "restored %.0f ms, started %" PRId64 " and restored %" PRId64
	    " ms into a 6000 ms opening",
	    left, t_start - t_open, t_restored - t_open);
	h_assert(left > 1000 && left < 6000,
	    "the restart took too long to test: %.0f ms left", left);

	mark = h_log_mark(d2);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log_after(d2, mark, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=open", "retry_after=");
	h_assert(h_backend_accepted(srv) == 0,
	    "an open circuit let %u clients reach the server",
	    h_backend_accepted(srv));

	line = h_expect_log(d2, 6000 + LATE_MS, "event=state", "upstream=api",
	    "from=open", "to=half_open");
	t_half = h_log_time_ms(line);
	h_assert(t_half - t_open >= 6000 - ROUND_MS &&
		t_half - t_open <= 6000 + LATE_MS,
	    "half_open %" PRId64 " ms after the opening, not 6000",
	    t_half - t_open);
	h_assert(h_echo_roundtrip(lis, "trial", H_WAIT_MS),
	    "the half_open trial did not reach the server");
	h_expect_log(d2, H_WAIT_MS, "event=state", "upstream=api",
	    "from=half_open", "to=closed");
	h_daemon_stop_ok(d2);
	text = h_read_file(path);
	h_assert(text != NULL && strstr(text, "\napi state=closed ") != NULL,
	    "the state file after the second stop:\n%s",
	    text ? text : "(none)");
}
END_TEST

/*
 * A file written by hand (or by a daemon that stopped a while ago): a force
 * without a lifetime stays, a force with one keeps the rest of it, an
 * opening that ended while the daemon was down starts half_open, an
 * upstream no longer in the config is dropped from the file.
 */
START_TEST(state_forced_and_expired)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *l_api = h_free_addr4(), *l_web = h_free_addr4();
	char *l_db = h_free_addr4(), *path = h_path("state"), *text;
	const char *conf = config(path,
	    h_strf("%s%s%s", upstream("api", l_api, srv, ""),
		upstream("web", l_web, srv, ""),
		upstream("db", l_db, srv, "recovery_backoff = 2")));
	int64_t now = h_wall_ms(), t0, t_closed;
	struct h_daemon *d;
	const char *line;
	size_t mark;

	h_write_file("state",
	    h_strf("circuitproxyd-state 1\n"
		   "api state=forced_open since=%s until=none open=0 "
		   "backoff=0\n"
		   "web state=forced_open since=%s until=%s open=0 "
		   "backoff=0\n"
		   "db state=open since=%s until=%s open=30 backoff=1\n"
		   "gone state=open since=%s until=%s open=30 backoff=0\n",
		secs(now - 5000), secs(now - 5000), secs(now + WEB_LEFT_MS),
		secs(now - 40000), secs(now - 10000), secs(now - 1000),
		secs(now + 29000)));
	t0 = h_wall_ms();
	d = h_daemon_start(conf);
	h_expect_log(d, H_WAIT_MS, "event=state_file", "result=restored",
	    "upstream=api", "saved=forced_open", "state=forced_open",
	    "retry_after=none");
	line = h_expect_log(d, H_WAIT_MS, "event=state_file", "result=restored",
	    "upstream=web", "state=forced_open", "retry_after=");
	h_assert(h_log_double(line, "retry_after") * 1000 <=
		    WEB_LEFT_MS - (t0 - now) &&
		h_log_double(line, "retry_after") > 1.0,
	    "web restored with %s", line);
	h_expect_log(d, H_WAIT_MS, "event=state_file", "result=restored",
	    "upstream=db", "saved=open", "state=half_open", "retry_after=0.000",
	    "backoff=1");
	h_expect_log(d, H_WAIT_MS, "event=state_file", "result=dropped",
	    "upstream=gone");

	mark = h_log_mark(d);
	h_client_expect_reset(l_api, H_WAIT_MS, NULL);
	h_client_expect_reset(l_web, H_WAIT_MS, NULL);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=forced_open", "retry_after=none");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reject", "upstream=web",
	    "state=forced_open");
	/* db's one trial goes through and closes it. */
	h_assert(h_echo_roundtrip(l_db, "trial", H_WAIT_MS),
	    "the half_open trial of db did not reach the server");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db",
	    "from=half_open", "to=closed");
	/* It started half_open: it was never open in this run. */
	h_assert(h_count_log(d, "event=state", "upstream=db", "from=open") == 0,
	    "db went through open after the restart");

	/* web's force ends when the file said, on its own. */
	line = h_expect_log(d, WEB_LEFT_MS + LATE_MS, "event=state",
	    "upstream=web", "from=forced_open", "to=closed", "reason=expired");
	t_closed = h_log_time_ms(line);
	h_assert(t_closed >= now + WEB_LEFT_MS - ROUND_MS &&
		t_closed <= now + WEB_LEFT_MS + LATE_MS,
	    "web's force ended %" PRId64 " ms after the file was written, "
	    "not " H_STR(WEB_LEFT_MS),
	    t_closed - now);
	h_assert(h_echo_roundtrip(l_web, "again", H_WAIT_MS),
	    "web does not relay after its force ended");
	h_daemon_stop_ok(d);
	text = h_read_file(path);
	h_assert(text != NULL &&
		strstr(text, "\napi state=forced_open ") != NULL &&
		strstr(text, " until=none ") != NULL &&
		strstr(text, "\nweb state=closed ") != NULL &&
		strstr(text, "\ndb state=closed ") != NULL &&
		strstr(text, "gone") == NULL,
	    "the state file after the stop:\n%s", text ? text : "(none)");
}
END_TEST

/* POST to the admin endpoint; its answer must be 200. */
static void
admin_post(const char *admin, const char *path)
{
	h_assert(h_http(admin, "POST", path, NULL, NULL) == 200,
	    "POST %s was not answered 200", path);
}

/* Wait until state_file holds a line with every piece; that line. */
static const char *
wait_state_line(const char *path, const char *a, const char *b, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	char *text, *line, *end;

	do {
		if ((text = h_read_file(path)) != NULL)
			for (line = text; *line != '\0'; line = end + 1) {
				if ((end = strchr(line, '\n')) == NULL)
					break;
				*end = '\0';
				if (strstr(line, a) != NULL &&
				    strstr(line, b) != NULL)
					return line;
			}
		poll(NULL, 0, 50);
	} while (h_now_ms() < deadline);
	h_fail(H_WHERE, "no line with '%s' and '%s' in %s: %s", a, b, path,
	    text != NULL ? text : "(unreadable)");
}

/*
 * A force given again with another lifetime is a change too: forced_open
 * for 30 s, then forced_open for good, and the file says so at once (not
 * only at stop), so a crash would not bring back the 30 s.
 */
START_TEST(state_reforce_written)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *l_api = h_free_addr4(), *admin = h_free_addr4();
	char *path = h_path("state");
	struct h_daemon *d = h_daemon_start(h_strf("[global]\n"
						   "workers = 1\n"
						   "admin = %s\n"
						   "state_file = %s\n\n%s",
	    admin, path, upstream("api", l_api, srv, "")));

	admin_post(admin, "/upstreams/api/force-open?for=30s");
	h_assert(strstr(wait_state_line(path, "api state=forced_open",
			    "until=", H_WAIT_MS),
		     "until=none") == NULL,
	    "a 30 s force written without its end");
	admin_post(admin, "/upstreams/api/force-open");
	wait_state_line(path, "api state=forced_open", "until=none", 3000);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A file written while the wall clock was a year ahead (or read while it is
 * a year behind) says the circuit is open for a year: it comes back open
 * for no more than its open= length, and goes half_open on its own then.
 */
START_TEST(state_open_capped)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *lis = h_free_addr4(), *path = h_path("state");
	const char *conf = config(path,
	    upstream("api", lis, srv,
		"recovery_timeout = 3s\nrecovery_timeout_max = 10m"));
	int64_t ahead = h_wall_ms() + 365LL * 86400 * 1000, t_restored, t_half;
	struct h_daemon *d;
	const char *line;
	size_t mark;

	h_write_file("state",
	    h_strf("circuitproxyd-state 1\n"
		   "api state=open since=%s until=%s open=3.000 backoff=0\n",
		secs(ahead), secs(ahead + 3000)));
	d = h_daemon_start(conf);
	line = h_expect_log(d, H_WAIT_MS, "event=state_file", "result=restored",
	    "upstream=api", "saved=open", "state=open", "retry_after=");
	t_restored = h_log_time_ms(line);
	h_assert(h_log_double(line, "retry_after") <= 3.0,
	    "a year-long opening restored as %s", line);
	mark = h_log_mark(d);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=open");
	line = h_expect_log(d, 3000 + LATE_MS, "event=state", "upstream=api",
	    "from=open", "to=half_open");
	t_half = h_log_time_ms(line);
	h_assert(t_half - t_restored <= 3000 + LATE_MS,
	    "half_open %" PRId64 " ms after the restore, not 3000",
	    t_half - t_restored);
	h_assert(h_echo_roundtrip(lis, "trial", H_WAIT_MS),
	    "the half_open trial did not reach the server");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A corrupt file, or one of another version, is logged with its reason and
 * ignored: every circuit starts closed. The file is kept, byte for byte, as
 * FILE.bad (a rollback from a newer version loses nothing), and the log
 * says where; the next write makes a new FILE.
 */
START_TEST(state_bad_file_ignored)
{
	static const struct {
		const char *text;
		const char *error;
	} bad[] = {
		{ "circuitproxyd-state 1\napi state=open since=1 until=",
		    "truncated (no newline at the end)" },
		{ "circuitproxyd-state 7\napi state=open\n",
		    "line 1: version '7' is not 1" },
		{ "\x89PNG\r\n", "line 1: not a circuitproxyd-state file" },
		{ "circuitproxyd-state 1\napi state=open since=x until=1 "
		  "open=1 backoff=0\n",
		    "line 2: upstream api: bad since 'x'" },
		{ "circuitproxyd-state 1\napi state=open since=1764630000.000 "
		  "until=1795766400.000 open=30.000 backoff=0\n",
		    "line 2: upstream api: until - since is longer than "
		    "open=" },
	};
	struct h_backend *srv = h_backend(H_ECHO);
	char *lis = h_free_addr4(), *path = h_path("state"), *text;
	const char *conf = config(path, upstream("api", lis, srv, ""));
	const char *bad_path = h_strf("%s.bad", path);
	struct h_daemon *d;
	char got[256];
	const char *line;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h_write_file("state", bad[i].text);
		d = h_daemon_start(conf);
		line = h_expect_log(d, H_WAIT_MS, "level=warning",
		    "event=state_file", "result=error", "error=");
		h_log_value(line, "error", got, sizeof(got));
		h_assert(strcmp(got, bad[i].error) == 0,
		    "file %zu: error=\"%s\", not \"%s\"", i, got, bad[i].error);
		h_log_value(line, "kept", got, sizeof(got));
		h_assert(strcmp(got, bad_path) == 0,
		    "file %zu: the log does not say it is kept: %s", i, line);
		h_assert(h_echo_roundtrip(lis, "hello", H_WAIT_MS),
		    "file %zu: the circuit did not start closed", i);
		h_daemon_stop_ok(d);
		text = h_read_file(path);
		h_assert(text != NULL &&
			strstr(text, "\napi state=closed ") != NULL,
		    "file %zu was not replaced:\n%s", i,
		    text ? text : "(none)");
		/* Written at start and at the stop: the bad bytes survive. */
		text = h_read_file(bad_path);
		h_assert(text != NULL && strcmp(text, bad[i].text) == 0,
		    "file %zu: %s holds:\n%s", i, bad_path,
		    text ? text : "(none)");
	}
}
END_TEST

/*
 * A state file that cannot be written (here: its directory is missing) is
 * an error line, retried with a growing wait, never fatal; when the
 * directory appears the next retry writes it, with a line saying so.
 */
START_TEST(state_write_failure_retried)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	char *lis = h_free_addr4(), *dir = h_path("later");
	char *path = h_strf("%s/state", dir), *text;
	const char *conf =
	    config(path, upstream("api", lis, srv, "recovery_timeout = 60s"));
	struct h_daemon *d;
	const char *line;
	int64_t t1, t2;

	d = h_daemon_start(conf);
	line = h_expect_log(d, H_WAIT_MS, "level=error", "event=state_file",
	    "result=error", "retry_in=1.000");
	h_assert(strstr(line, "No such file or directory") != NULL,
	    "the error does not say why: %s", line);
	t1 = h_log_time_ms(line);
	/* A transition meanwhile is kept for the retry, the daemon goes on. */
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	line = h_expect_log(d, 1000 + LATE_MS, "level=error",
	    "event=state_file", "result=error", "retry_in=2.000");
	t2 = h_log_time_ms(line);
	h_assert(t2 - t1 >= 1000 - ROUND_MS && t2 - t1 <= 1000 + LATE_MS,
	    "retried after %" PRId64 " ms, not 1000", t2 - t1);
	h_assert(h_daemon_running(d), "the daemon died of a failed write");
	h_backend_set_kind(srv, H_ECHO);

	h_assert(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
	h_expect_log(d, 2000 + LATE_MS, "level=info", "event=state_file",
	    "result=ok");
	text = h_read_file(path);
	h_assert(text != NULL && strstr(text, "\napi state=open ") != NULL,
	    "the retry wrote:\n%s", text ? text : "(none)");
	h_assert(h_count_log(d, "event=state_file", "retry_in=4.000") == 0,
	    "retried once more after the write succeeded");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A flapping circuit (recovery probes failing every 50ms: some forty
 * transitions a second) is not a write per transition: the changes are
 * written together, at most one write per 100ms, and the file keeps up.
 */
START_TEST(state_flapping_coalesced)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	char *lis = h_free_addr4(), *path = h_path("state");
	const char *conf = config(path,
	    upstream("api", lis, srv,
		"recovery_timeout = 50ms\n"
		"recovery_probe = connect"));
	struct h_daemon *d;
	struct stat sb;
	uint64_t t0, last_ino = 0;
	unsigned writes = 0, transitions;
	size_t mark;

	d = h_daemon_start(conf);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	mark = h_log_mark(d);
	/* Every write renames a new file over the old: a new inode. */
	for (t0 = h_now_ms(); h_now_ms() - t0 < 2000;) {
		if (stat(path, &sb) == 0 && (uint64_t)sb.st_ino != last_ino) {
			last_ino = (uint64_t)sb.st_ino;
			writes++;
		}
		poll(NULL, 0, 1);
	}
	transitions = h_count_log_after(d, mark, "event=state", "upstream=api");
	h_assert(transitions >= 20, "only %u transitions in 2s", transitions);
	h_assert(writes >= 5 && writes <= 2000 / 100 + 3,
	    "%u writes for %u transitions in 2s", writes, transitions);
	h_daemon_stop_ok(d);
}
END_TEST

/* How long the state_file write hangs, and the watchdog interval then. */
#define STALL_MS 5000
#define STALL_WATCHDOG_US 1000000

/* GET /health once: how long the 200 took, or -1. */
static int64_t
health_ms(const char *admin)
{
	uint64_t t0 = h_now_ms();

	if (h_http(admin, "GET", "/health", NULL, NULL) != 200)
		return -1;
	return (int64_t)(h_now_ms() - t0);
}

/* Read a FIFO to its end (the writer closed it) within ms. */
static char *
read_fifo(const char *path, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	static char buf[65536];
	size_t len = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_NONBLOCK);

	h_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	while (h_now_ms() < deadline && len < sizeof(buf) - 1) {
		r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r > 0)
			len += (size_t)r;
		else if (r == 0 && len > 0)
			break;
		else
			poll(NULL, 0, 10);
	}
	close(fd);
	buf[len] = '\0';
	return h_strf("%s", buf);
}

/*
 * A state_file write that hangs (a FIFO where FILE.tmp goes, read by no
 * one: open() waits, as on a hung disk) for STALL_MS holds up nothing
 * else: WATCHDOG=1 keeps coming at its interval, /health answers, and the
 * circuit opens and goes half_open on time. When the write comes unstuck
 * (it fails: fsync of a FIFO), the newest state, handed over while it
 * hung, is written next; the ones in between were replaced, not queued.
 */
START_TEST(state_slow_disk)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	char *lis = h_free_addr4(), *admin = h_free_addr4();
	char *path = h_path("state"), *tmp = h_strf("%s.tmp", path), *text;
	struct h_opts opts = {
		.env = { "WATCHDOG_USEC=" H_STR(STALL_WATCHDOG_US), NULL }
	};
	const char *conf = h_strf("[global]\n"
				  "workers = 1\n"
				  "admin = %s\n"
				  "state_file = %s\n\n%s",
	    admin, path, upstream("api", lis, srv, "recovery_timeout = 1s"));
	struct h_daemon *d;
	const char *line;
	int64_t t_open, t_half, ms, worst = 0;
	unsigned pings, answers = 0;
	uint64_t t0;
	size_t nmark;

	h_assert(mkfifo(tmp, 0600) == 0, "mkfifo %s: %s", tmp, strerror(errno));
	d = h_daemon_start_opts(&opts, conf);
	t0 = h_now_ms();
	nmark = h_notify_mark(d);

	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	line = h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api",
	    "from=closed", "to=open");
	t_open = h_log_time_ms(line);
	line = h_expect_log(d, 1000 + LATE_MS, "event=state", "upstream=api",
	    "from=open", "to=half_open");
	t_half = h_log_time_ms(line);
	h_assert_between(t_half - t_open, 1000 - ROUND_MS, 1000 + LATE_MS,
	    "ms from open to half_open while the write hung");
	while (h_now_ms() - t0 < STALL_MS) {
		ms = health_ms(admin);
		h_assert(ms >= 0,
		    "/health unanswered %" PRIu64 " ms into the "
		    "hung write",
		    h_now_ms() - t0);
		worst = ms > worst ? ms : worst;
		answers++;
		poll(NULL, 0, 100);
	}
	pings = h_count_notify(d, nmark, "WATCHDOG=1");
	h_assert(access(path, F_OK) != 0,
	    "%s was written: the write did not hang", path);
	h_assert(pings >= STALL_MS / (STALL_WATCHDOG_US / 2000) - 2,
	    "%u WATCHDOG=1 in a %d ms hung write, every %d ms expected", pings,
	    STALL_MS, STALL_WATCHDOG_US / 2000);
	fprintf(stderr,
	    "state_slow_disk: write hung %d ms: %u WATCHDOG=1 (interval %d "
	    "ms), %u /health answered, slowest %" PRId64 " ms\n",
	    STALL_MS, pings, STALL_WATCHDOG_US / 2000, answers, worst);

	/* Unstuck: the hung write carried a state file... */
	text = read_fifo(tmp, H_WAIT_MS);
	h_assert(strncmp(text, "circuitproxyd-state 1\n", 22) == 0 &&
		strstr(text, "\napi state=") != NULL,
	    "the hung write carried:\n%s", text);
	h_expect_log(d, H_WAIT_MS, "level=error", "event=state_file",
	    "result=error", "error=");
	/* ...and the newest state is what is written next. */
	wait_state_line(path, "api state=half_open", "backoff=", H_WAIT_MS);
	h_daemon_stop_ok(d);
	text = h_read_file(path);
	h_assert(text != NULL && strstr(text, "\napi state=half_open ") != NULL,
	    "the state file after the stop:\n%s", text ? text : "(none)");
}
END_TEST

/*
 * The last write, at the stop, is waited for: with that write hung (a FIFO
 * at FILE.tmp again) the daemon does not exit, and has not said
 * event=stop, until the write comes unstuck; it then carries the state of
 * the stop, and the daemon exits 0.
 */
START_TEST(state_final_write_waited)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *lis = h_free_addr4(), *admin = h_free_addr4();
	char *path = h_path("state"), *tmp = h_strf("%s.tmp", path), *text;
	struct h_daemon *d = h_daemon_start(h_strf("[global]\n"
						   "workers = 1\n"
						   "admin = %s\n"
						   "state_file = %s\n\n%s",
	    admin, path, upstream("api", lis, srv, "")));
	uint64_t t0;
	int st;

	admin_post(admin, "/upstreams/api/force-open");
	wait_state_line(path, "api state=forced_open", "until=none", H_WAIT_MS);
	h_assert(mkfifo(tmp, 0600) == 0, "mkfifo %s: %s", tmp, strerror(errno));
	h_daemon_signal(d, SIGTERM);
	h_expect_log(d, H_WAIT_MS, "event=stopping");
	t0 = h_now_ms();
	while (h_now_ms() - t0 < 1000) {
		h_assert(h_daemon_running(d) &&
			h_count_log(d, "event=stop") == 0,
		    "the daemon ended %" PRIu64 " ms into its hung last write",
		    h_now_ms() - t0);
		poll(NULL, 0, 50);
	}
	text = read_fifo(tmp, H_WAIT_MS);
	h_assert(strstr(text, "\napi state=forced_open ") != NULL,
	    "the last write carried:\n%s", text);
	st = h_daemon_wait_exit(d, H_STOP_MS);
	h_assert(st == 0, "the daemon exited with %d after its last write", st);
	h_expect_log(d, H_WAIT_MS, "event=stop");
}
END_TEST

/* The restart stories, each in its own test case. */
static Suite *
restart_suite(void)
{
	Suite *s = suite_create("restart");

	H_TEST(s, state_open_survives_restart);
	H_TEST(s, state_forced_and_expired);
	H_TEST(s, state_reforce_written);
	H_TEST(s, state_open_capped);
	H_TEST(s, state_bad_file_ignored);
	H_TEST(s, state_write_failure_retried);
	H_TEST(s, state_flapping_coalesced);
	H_TEST(s, state_slow_disk);
	H_TEST(s, state_final_write_waited);
	return s;
}

H_MAIN(restart_suite)
