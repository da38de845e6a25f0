/*
 * End-to-end stories of the command line (SPEC.md section 2) and of the
 * start, listen and stop log lines (section 5): what an operator types and
 * what the daemon answers, with its exit status.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* A valid config: one upstream, listening on a free port. */
static const char *
good_config(void)
{
	return h_strf("[global]\n"
		      "workers = 1\n"
		      "admin =\n"
		      "shutdown_timeout = 2s\n"
		      "\n"
		      "[upstream:api]\n"
		      "listen = %s\n"
		      "server = 127.0.0.1:9\n",
	    h_free_addr4());
}

/* text with every from replaced by to. */
static char *
replace_all(const char *text, const char *from, const char *to)
{
	const char *p;
	char *out = h_strf("%s", "");

	while ((p = strstr(text, from)) != NULL) {
		out = h_strf("%s%.*s%s", out, (int)(p - text), text, to);
		text = p + strlen(from);
	}
	return h_strf("%s%s", out, text);
}

/* -V and --version print the version alone, exit 0. */
START_TEST(cli_version)
{
	struct h_run r;

	h_run(&r, "-V");
	h_assert(r.status == 0, "-V exited %d", r.status);
	h_assert(strcmp(r.out, "circuitproxyd 0.1.0\n") == 0,
	    "-V printed \"%s\"", r.out);
	h_run(&r, "--version");
	h_assert(r.status == 0, "--version exited %d", r.status);
	h_assert(strcmp(r.out, "circuitproxyd 0.1.0\n") == 0,
	    "--version printed \"%s\"", r.out);
}
END_TEST

/* -h and --help print the usage on stdout, exit 0. */
START_TEST(cli_help)
{
	static const char *opts[] = { "-h", "--help" };
	struct h_run r;
	size_t i;

	for (i = 0; i < 2; i++) {
		h_run(&r, opts[i]);
		h_assert(r.status == 0, "%s exited %d", opts[i], r.status);
		h_assert(strcasestr(r.out, "usage") != NULL,
		    "%s: no usage on stdout: \"%s\"", opts[i], r.out);
		h_assert(strstr(r.out, "--config") != NULL &&
			strstr(r.out, "--test") != NULL &&
			strstr(r.out, "--dump") != NULL &&
			strstr(r.out, "--log-level") != NULL &&
			strstr(r.out, "--pidfile") != NULL,
		    "%s: an option is missing: \"%s\"", opts[i], r.out);
		h_assert(r.err[0] == '\0', "%s wrote on stderr: \"%s\"",
		    opts[i], r.err);
	}
}
END_TEST

/* A bad option, or -c without its file, is bad usage: exit 64. */
START_TEST(cli_bad_option)
{
	struct h_run r;

	h_run(&r, "-x");
	h_assert(r.status == 64, "-x exited %d", r.status);
	h_assert(r.err[0] != '\0', "-x: nothing on stderr");
	h_run(&r, "--no-such-option");
	h_assert(r.status == 64, "--no-such-option exited %d", r.status);
	h_run(&r, "-c");
	h_assert(r.status == 64, "-c without a file exited %d", r.status);
}
END_TEST

/* -t on a good config: "FILE: ok" on stdout, exit 0. */
START_TEST(cli_test_good)
{
	char *path = h_write_file("good.ini", good_config());
	struct h_run r;

	h_run(&r, "-t", "-c", path);
	h_assert(r.status == 0, "exit %d, stderr \"%s\"", r.status, r.err);
	h_assert(strcmp(r.out, h_strf("%s: ok\n", path)) == 0, "stdout \"%s\"",
	    r.out);
	h_assert(r.err[0] == '\0', "stderr \"%s\"", r.err);
	h_run(&r, "--test", "--config", path);
	h_assert(r.status == 0, "--test exited %d", r.status);
}
END_TEST

/*
 * -t on a config with five mistakes: each on its own "FILE:LINE: " line on
 * stderr, at the right line, naming the key or the value; exit 78.
 */
START_TEST(cli_test_bad)
{
	static const struct {
		int line;
		const char *words[2];
	} want[] = {
		{ 3, { "bogus_key", NULL } },	      /* unknown key */
		{ 8, { "connect_timeout", "fast" } }, /* bad duration */
		{ 10, { "server", NULL } },	      /* bravo has no server */
		{ 12, { "backup", "nosuch" } },	      /* unknown backup */
		{ 14, { "alpha", NULL } },	      /* duplicate upstream */
	};
	const char *text = h_strf("[global]\n"	    /* 1 */
				  "workers = 1\n"   /* 2 */
				  "bogus_key = 1\n" /* 3 */
				  "\n"		    /* 4 */
				  "[upstream:alpha]\n"
				  "listen = %s\n"
				  "server = 127.0.0.1:9\n"
				  "connect_timeout = fast\n" /* 8 */
				  "\n"
				  "[upstream:bravo]\n" /* 10 */
				  "listen = %s\n"
				  "backup = nosuch\n" /* 12 */
				  "\n"
				  "[upstream:alpha]\n" /* 14 */
				  "listen = %s\n"
				  "server = 127.0.0.1:9\n",
	    h_free_addr4(), h_free_addr4(), h_free_addr4());
	char *path = h_write_file("bad.ini", text), *line, *prefix;
	struct h_run r;
	size_t i, k;

	h_run(&r, "-t", "-c", path);
	h_assert(r.status == 78, "exit %d; stderr:\n%s", r.status, r.err);
	h_assert(r.out[0] == '\0', "stdout \"%s\"", r.out);
	h_assert(h_count_lines(r.err) == 5, "%u error lines, 5 expected:\n%s",
	    h_count_lines(r.err), r.err);
	for (i = 0; i < 5; i++) {
		line = h_line_at(r.err, (unsigned)i);
		prefix = h_strf("%s:%d: ", path, want[i].line);
		h_assert(strncmp(line, prefix, strlen(prefix)) == 0,
		    "error %zu should start with \"%s\":\n%s", i + 1, prefix,
		    r.err);
		for (k = 0; k < 2 && want[i].words[k] != NULL; k++)
			h_assert(strstr(line + strlen(prefix),
				     want[i].words[k]) != NULL,
			    "line %d does not name \"%s\": %s", want[i].line,
			    want[i].words[k], line);
	}

	/* The same config at start: the same errors, exit 78. */
	h_run(&r, "-c", path);
	h_assert(r.status == 78, "starting on a bad config exited %d",
	    r.status);
	h_assert(strstr(r.err, h_strf("%s:3: ", path)) != NULL &&
		strstr(r.err, h_strf("%s:14: ", path)) != NULL,
	    "errors at start:\n%s", r.err);
}
END_TEST

/*
 * A file with no upstream (empty, comments only) is an error, not a daemon
 * that proxies nothing: -t and a start both exit 78 and say so.
 */
START_TEST(cli_test_no_upstream)
{
	const char *texts[] = { "", "; nothing yet\n[global]\nworkers = 1\n" };
	char *path;
	struct h_run r;
	size_t i;

	for (i = 0; i < 2; i++) {
		path = h_write_file("empty.ini", texts[i]);
		h_run(&r, "-t", "-c", path);
		h_assert(r.status == 78, "-t exited %d on \"%s\"", r.status,
		    texts[i]);
		h_assert(h_count_lines(r.err) == 1 &&
			strncmp(r.err,
			    h_strf("%s:%d: no upstream", path, i == 0 ? 1 : 3),
			    strlen(path) + 14) == 0,
		    "stderr: %s", r.err);
		h_run(&r, "-c", path);
		h_assert(r.status == 78, "a start exited %d", r.status);
	}
}
END_TEST

/* A config that does not exist: "FILE: cannot open: REASON", exit 78. */
START_TEST(cli_test_missing)
{
	char *path = h_path("nonexistent.ini"), *want;
	struct h_run r;

	h_run(&r, "-t", "-c", path);
	h_assert(r.status == 78, "-t exited %d", r.status);
	want = h_strf("%s: cannot open: No such file or directory", path);
	h_assert(strcmp(r.err, h_strf("%s\n", want)) == 0, "stderr \"%s\"",
	    r.err);
	h_assert(r.out[0] == '\0', "stdout \"%s\"", r.out);

	h_run(&r, "-c", path);
	h_assert(r.status == 78, "starting exited %d", r.status);
	h_assert(strstr(r.err, want) != NULL, "stderr \"%s\"", r.err);
}
END_TEST

/*
 * -T (--dump): "FILE: ok" on stderr, and on stdout the config as the
 * daemon reads it: every key with its effective value, defaults included,
 * each with where it came from (FILE:LINE, [defaults] FILE:LINE, built in)
 * and what it does. The dump is itself a valid config; -T on a bad file
 * fails as -t does.
 */
START_TEST(cli_dump)
{
	const char *lis = h_free_addr4();
	char *path = h_write_file("dump.ini",
	    h_strf("[global]\n"			      /* 1 */
		   "workers = 1\n"		      /* 2 */
		   "admin_token = s3cret\n"	      /* 3 */
		   "[defaults]\n"		      /* 4 */
		   "connect_timeout = 2s\n"	      /* 5 */
		   "[upstream:api]\n"		      /* 6 */
		   "listen = %s\n"		      /* 7 */
		   "server = 127.0.0.1:9\n"	      /* 8 */
		   "failure_threshold = 3 ; a few\n", /* 9 */
		lis));
	char *again;
	struct h_run r;

	/* It holds a token: readable by its owner only, so no warning. */
	h_assert(chmod(path, 0600) == 0, "chmod %s", path);
	h_run(&r, "-T", "-c", path);
	h_assert(r.status == 0, "exit %d, stderr \"%s\"", r.status, r.err);
	h_assert(strcmp(r.err, h_strf("%s: ok\n", path)) == 0, "stderr \"%s\"",
	    r.err);
	h_assert(strstr(r.out, "\n[global]\n") != NULL &&
		strstr(r.out, h_strf("\n# %s:6\n[upstream:api]\n", path)) !=
		    NULL,
	    "sections:\n%s", r.out);
	h_assert(h_value_matches(r.out,
		     h_strf("*\nworkers = 1 * ; %s:2 - event-loop threads*",
			 path)) &&
		h_value_matches(r.out,
		    h_strf("*\nlisten = %s * ; %s:7 - address clients*", lis,
			path)) &&
		h_value_matches(r.out,
		    h_strf("*\nconnect_timeout = 2s * ; [defaults] %s:5 - "
			   "how long a connect*",
			path)) &&
		h_value_matches(r.out,
		    h_strf("*\nfailure_threshold = 3 * ; %s:9 - *", path)) &&
		h_value_matches(r.out,
		    "*\nrecovery_timeout = 30s * ; built in - how long "
		    "open*") &&
		h_value_matches(r.out, "*\nlog_level = info * ; built in - *"),
	    "values, origins or help missing:\n%s", r.out);
	h_assert(strstr(r.out, "s3cret") == NULL &&
		strstr(r.out, "admin_token = (hidden)") != NULL,
	    "the token is shown:\n%s", r.out);
	again = h_write_file("dump-again.ini", r.out);
	h_run(&r, "-t", "-c", again);
	h_assert(r.status == 0, "the dump is not a valid config: %s", r.err);

	h_run(&r, "--dump", "-c",
	    h_write_file("dump-bad.ini", "[upstream:api]\nlisten = x\n"));
	h_assert(r.status == 78 && r.out[0] == '\0' &&
		strstr(r.err, "dump-bad.ini:2: ") != NULL,
	    "a bad file: exit %d, stdout %s, stderr %s", r.status, r.out,
	    r.err);
}
END_TEST

/*
 * The README's five-minute tour, its commands run as written (only the
 * ports moved to free ones) against the daemon on the example config: the
 * backend is waited for before step 2, so step 2 is relayed and the
 * breaker sees exactly the five failures after the backend dies, opens,
 * and turns the last two clients away. Without the wait, python's
 * http.server is not listening yet when step 2 runs: that client fails,
 * and the breaker counts it.
 */
START_TEST(cli_readme_tour)
{
	const char *readme = h_read_file(h_srcpath("README.md")), *a, *b;
	char *conf, *cmds, *lis = h_free_addr4(), *srv = h_free_addr4();
	char *admin = h_free_addr4();
	const char *sport = h_port_of(srv), *sh = h_client("sh");
	struct h_daemon *d;
	struct h_run r;

	if (h_client("curl") == NULL || h_client("python3") == NULL ||
	    sh == NULL)
		h_skip("the tour needs sh, curl and python3 (http.server)");
	h_assert(readme != NULL, "%s: %s", h_srcpath("README.md"),
	    strerror(errno));
	a = strstr(readme, "\n<!-- tour -->\n```sh\n");
	b = a != NULL ? strstr(a, "\n```\n<!-- /tour -->") : NULL;
	h_assert(a != NULL && b != NULL, "no <!-- tour --> block in %s",
	    h_srcpath("README.md"));
	a += strlen("\n<!-- tour -->\n```sh\n");
	cmds = h_strf("%.*s\n", (int)(b - a), a);
	cmds = replace_all(replace_all(cmds, "127.0.0.1:8080", lis),
	    "127.0.0.1:9090", srv);
	cmds = replace_all(cmds, " 9090 ", h_strf(" %s ", sport));
	h_assert(strstr(cmds, "9090") == NULL && strstr(cmds, "8080") == NULL,
	    "a port of the tour was not moved:\n%s", cmds);

	conf = h_read_file(h_srcpath("conf/circuitproxy.ini"));
	h_assert(conf != NULL, "%s: %s", h_srcpath("conf/circuitproxy.ini"),
	    strerror(errno));
	conf = replace_all(replace_all(replace_all(conf, "127.0.0.1:8080", lis),
			       "127.0.0.1:9090", srv),
	    "127.0.0.1:9901", admin);
	d = h_daemon_start(conf);
	h_exec(&r, sh, "-c", cmds);
	h_assert(r.status != -1, "the tour did not finish:\n%s", cmds);
	h_assert(strcasestr(r.out, "<!DOCTYPE HTML") != NULL,
	    "step 2 printed no page; stdout:\n%s\nstderr:\n%s", r.out, r.err);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=demo",
	    "from=closed", "to=open", "reason=consecutive_failures",
	    "failures=5");
	h_assert(h_wait_count(d, 2, H_WAIT_MS, "event=reject", "state=open") ==
		2,
	    "not two clients turned away");
	h_assert(h_count_log(d, "event=connect_fail") == 5,
	    "%u failed connects, 5 expected (the backend dies in step 3)",
	    h_count_log(d, "event=connect_fail"));
	h_assert(h_count_log(d, "event=reject") == 2, "%u rejects, 2 expected",
	    h_count_log(d, "event=reject"));
}
END_TEST

/* The example config shipped in conf/ passes -t. */
START_TEST(cli_example_config)
{
	const char *path = h_srcpath("conf/circuitproxy.ini");
	struct h_run r;

	h_assert(access(path, R_OK) == 0, "%s: %s", path, strerror(errno));
	h_run(&r, "-t", "-c", path);
	h_assert(r.status == 0, "exit %d, stderr:\n%s", r.status, r.err);
	h_assert(strcmp(r.out, h_strf("%s: ok\n", path)) == 0, "stdout \"%s\"",
	    r.out);
}
END_TEST

/*
 * Start on an address another process listens on: exit 1, never READY,
 * and a line that names the address and says it is in use, and where it
 * is written, as a config error would: "FILE:4: upstream 'api': ...".
 */
START_TEST(cli_address_in_use)
{
	struct h_backend *taken = h_backend(H_ECHO);
	struct h_daemon *d = h_daemon_spawn(h_strf("[global]\nadmin =\n%s",
	    h_upstream("api", h_backend_addr(taken), "127.0.0.1:9", NULL)));
	const char *addr = h_backend_addr(taken), *line;
	bool named = false;
	size_t i;
	int st;

	h_assert(!h_daemon_wait_ready(d, H_READY_MS), "READY=1 though in use");
	st = h_daemon_wait_exit(d, H_STOP_MS);
	h_assert(st == 1, "exit status %d, 1 expected", st);
	for (i = 0; (line = h_log_line(d, i)) != NULL; i++)
		if (strstr(line, addr) != NULL &&
		    strcasestr(line, "in use") != NULL &&
		    strstr(line,
			h_strf("error=\"%s:4: upstream 'api': listen %s: ",
			    h_daemon_config(d), addr)) != NULL)
			named = true;
	h_assert(named,
	    "no line names %s, the file and line 4, and says it is in use",
	    addr);
}
END_TEST

/*
 * The same with log_target = syslog: the log lines go to syslog, but
 * whoever started it from a shell still reads why on stderr, in one line
 * that names the address and says it is in use.
 */
START_TEST(cli_address_in_use_syslog)
{
	struct h_backend *taken = h_backend(H_ECHO);
	const char *addr = h_backend_addr(taken);
	const char *path = h_write_file("syslog.ini",
	    h_strf("[global]\n"
		   "log_target = syslog\n"
		   "admin =\n"
		   "[upstream:api]\n"
		   "listen = %s\n"
		   "server = 127.0.0.1:9\n",
		addr));
	struct h_run r;
	unsigned i, n;
	bool named = false;
	char *line;

	h_run(&r, "-c", path);
	h_assert(r.status == 1, "exit status %d, 1 expected; stderr:\n%s",
	    r.status, r.err);
	n = h_count_lines(r.err);
	for (i = 0; i < n; i++) {
		line = h_line_at(r.err, i);
		if (strstr(line, addr) != NULL &&
		    strcasestr(line, "in use") != NULL &&
		    strstr(line, h_strf("%s:5: upstream 'api': ", path)) !=
			NULL)
			named = true;
	}
	h_assert(named,
	    "no line on stderr names %s, %s:5 and says it is in use:\n%s", addr,
	    path, r.err);
	h_assert(n == 1, "%u lines on stderr, one expected:\n%s", n, r.err);
}
END_TEST

/* -p writes the pid; a clean stop removes the file. */
START_TEST(cli_pidfile)
{
	char *pidfile = h_path("circuitproxyd.pid");
	struct h_daemon *d = h_daemon_start(good_config(), "-p", pidfile);
	char buf[32] = "";
	FILE *f;

	f = fopen(pidfile, "r");
	h_assert(f != NULL, "no pidfile %s: %s", pidfile, strerror(errno));
	h_assert(fgets(buf, sizeof(buf), f) != NULL, "empty pidfile");
	fclose(f);
	h_assert(atol(buf) == (long)h_daemon_pid(d),
	    "pidfile says \"%s\", pid %ld", buf, (long)h_daemon_pid(d));
	h_assert(h_daemon_stop(d) == 0, "exit status");
	h_assert(access(pidfile, F_OK) == -1 && errno == ENOENT,
	    "the pidfile is still there after a clean stop");
}
END_TEST

/* -l takes a level name: debug starts, bogus is bad usage. */
START_TEST(cli_log_level)
{
	struct h_daemon *d;
	struct h_run r;

	d = h_daemon_start(good_config(), "-l", "debug");
	h_assert(h_daemon_stop(d) == 0, "-l debug: exit status");
	d = h_daemon_start(good_config(), "--log-level", "warning");
	h_assert(h_daemon_stop(d) == 0, "--log-level warning: exit status");
	h_run(&r, "-l", "bogus", "-c", h_write_file("good.ini", good_config()));
	h_assert(r.status == 64, "-l bogus exited %d", r.status);
}
END_TEST

/* -l overrides the config's log_level: with -l error, no info line. */
START_TEST(cli_log_level_overrides)
{
	struct h_daemon *d = h_daemon_start(good_config(), "-l", "error");

	h_assert(h_daemon_stop(d) == 0, "exit status");
	h_assert(h_count_log(d, "level=info") == 0,
	    "%u info lines under -l error", h_count_log(d, "level=info"));
}
END_TEST

/*
 * The start line gives version, workers and upstreams; each listener has
 * its listen line; and READY=1 means every listener is bound, so clients
 * on each address are relayed at once.
 */
START_TEST(cli_start_and_listen_lines)
{
	struct h_backend *s1 = h_backend(H_ECHO), *s2 = h_backend(H_ECHO);
	const char *a1 = h_free_addr4(), *a2 = h_free_addr4();
	const char *b1 = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("[global]\n"
						   "workers = 2\n"
						   "admin =\n"
						   "shutdown_timeout = 2s\n"
						   "[upstream:one]\n"
						   "listen = %s\n"
						   "listen = %s\n"
						   "server = %s\n"
						   "[upstream:two]\n"
						   "listen = %s\n"
						   "server = %s\n",
	    a1, a2, h_backend_addr(s1), b1, h_backend_addr(s2)));

	h_assert(h_echo_roundtrip(a1, "one", H_WAIT_MS), "via %s", a1);
	h_assert(h_echo_roundtrip(a2, "one again", H_WAIT_MS), "via %s", a2);
	h_assert(h_echo_roundtrip(b1, "two", H_WAIT_MS), "via %s", b1);
	h_assert_fields_only(h_expect_log(d, H_WAIT_MS, "event=start"),
	    "level=info", "event=start", "version=0.1.0", "workers=2",
	    "upstreams=2", "nofile=#*");
	h_assert_fields_only(h_expect_log(d, H_WAIT_MS, "event=listen",
				 h_strf("addr=%s", a1)),
	    "level=info", "event=listen", "upstream=one",
	    h_strf("addr=%s", a1));
	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=one",
	    h_strf("addr=%s", a2));
	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=two",
	    h_strf("addr=%s", b1));
	h_assert(h_count_log(d, "event=listen") == 3,
	    "%u listen lines for 3 listeners", h_count_log(d, "event=listen"));
	h_assert(h_count_log(d, "event=start") == 1, "%u start lines",
	    h_count_log(d, "event=start"));
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/*
 * SIGTERM and SIGINT stop it cleanly: exit 0 and an event=stop line. A
 * quiet stop says nothing at warning level or above.
 */
START_TEST(cli_stop_on_signals)
{
	struct h_daemon *d1, *d2;
	unsigned warn;
	int st;

	d1 = h_daemon_start(good_config());
	st = h_daemon_stop(d1);
	h_assert(st == 0, "SIGTERM: exit %d", st);
	h_expect_log(d1, 0, "level=info", "event=stop", "reason=SIGTERM",
	    "drained=", "closed=");

	d2 = h_daemon_start(good_config());
	h_daemon_signal(d2, SIGINT);
	st = h_daemon_wait_exit(d2, H_STOP_MS);
	h_assert(st == 0, "SIGINT: exit %d", st);
	h_expect_log(d2, 0, "event=stop", "reason=SIGINT");

	warn = h_count_log(d1, "level=warning") +
	    h_count_log(d1, "level=error") + h_count_log(d2, "level=warning") +
	    h_count_log(d2, "level=error");
	h_assert(warn == 0, "%u warning or error lines in two quiet stops",
	    warn);
}
END_TEST

/*
 * Every log line on stderr is an ISO-8601 timestamp, a space, then level=
 * and event= first.
 */
START_TEST(cli_log_line_format)
{
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("[global]\n"
						   "admin =\n"
						   "shutdown_timeout = 2s\n"
						   "[upstream:api]\n"
						   "listen = %s\n"
						   "server = %s\n"
						   "failure_threshold = 1\n",
	    lis, h_free_addr4()));
	const char *line;
	regex_t re;
	size_t i;

	h_client_try(lis, H_WAIT_MS, NULL, NULL);
	h_client_try(lis, H_WAIT_MS, NULL, NULL);
	h_expect_log(d, H_WAIT_MS, "event=reject");
	h_assert(h_daemon_stop(d) == 0, "exit status");
	h_assert(regcomp(&re,
		     "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
		     "(\\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2}) "
		     "level=(debug|info|notice|warning|error) event=[a-z_]+( "
		     "|$)",
		     REG_EXTENDED | REG_NOSUB) == 0,
	    "regcomp");
	for (i = 0; (line = h_log_line(d, i)) != NULL; i++)
		h_assert(regexec(&re, line, 0, NULL, 0) == 0,
		    "line %zu is not \"TIMESTAMP level=L event=E ...\": %s", i,
		    line);
	regfree(&re);
	h_assert(i >= 5, "only %zu lines", i);
}
END_TEST

/* The suite. */
static Suite *
cli_suite(void)
{
	Suite *s = suite_create("cli");

	H_TEST(s, cli_version);
	H_TEST(s, cli_help);
	H_TEST(s, cli_bad_option);
	H_TEST(s, cli_test_good);
	H_TEST(s, cli_test_bad);
	H_TEST(s, cli_test_no_upstream);
	H_TEST(s, cli_test_missing);
	H_TEST(s, cli_dump);
	H_TEST(s, cli_readme_tour);
	H_TEST(s, cli_example_config);
	H_TEST(s, cli_address_in_use);
	H_TEST(s, cli_address_in_use_syslog);
	H_TEST(s, cli_pidfile);
	H_TEST(s, cli_log_level);
	H_TEST(s, cli_log_level_overrides);
	H_TEST(s, cli_start_and_listen_lines);
	H_TEST(s, cli_stop_on_signals);
	H_TEST(s, cli_log_line_format);
	return s;
}

H_MAIN(cli_suite)
