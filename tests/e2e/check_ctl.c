/*
 * End-to-end stories of circuitproxyctl (SPEC.md 2 and 7): the operator's
 * command against a live daemon's admin endpoint, found through the same
 * config file; and every way it can fail, each with its exit status and a
 * message that says what to do.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* A config with the given [global] lines and one upstream. */
static char *
config_file(const char *global)
{
	return h_write_file(h_strf("ctl-%u.ini", (unsigned)h_now_ms()),
	    h_strf("[global]\n"
		   "workers = 1\n"
		   "%s\n"
		   "[upstream:api]\n"
		   "listen = %s\n"
		   "server = 127.0.0.1:9\n",
		global, h_free_addr4()));
}

/* Bad command lines exit 64 with the reason and the usage on stderr. */
START_TEST(ctl_usage)
{
	static const char *const bad[][4] = {
		{ NULL },
		{ "frobnicate", NULL },
		{ "status", "extra", NULL },
		{ "stats", "a", "b", NULL },
		{ "stats", "bad/name", NULL },
		{ "force-open", NULL },
		{ "force-open", "api", "3x", NULL },
		{ "force-open", "api", "-5s", NULL },
		{ "force-closed", "api", "0", NULL },
		{ "reset", NULL },
		{ "reset", "a b", NULL },
		{ "-x", "status", NULL },
	};
	const char *conf = config_file("admin = 127.0.0.1:9");
	struct h_run r;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h_ctl(&r, "-c", conf, bad[i][0], bad[i][1], bad[i][2]);
		h_assert(r.status == 64, "case %zu (%s) exited %d", i,
		    bad[i][0] ? bad[i][0] : "no command", r.status);
		h_assert(strstr(r.err, "usage: circuitproxyctl") != NULL &&
			r.out[0] == '\0',
		    "case %zu: no usage on stderr: %s", i, r.err);
	}
	h_ctl(&r, "-h");
	h_assert(r.status == 0 && strstr(r.out, "usage: ") == r.out &&
		strstr(r.out, "force-open NAME [FOR]") != NULL &&
		strstr(r.out, "reset NAME | reset --all") != NULL,
	    "-h exited %d and printed %s", r.status, r.out);
	h_ctl(&r, "--version");
	h_assert(r.status == 0 && strcmp(r.out, "circuitproxyctl 0.1.0\n") == 0,
	    "--version exited %d and printed %s", r.status, r.out);
}
END_TEST

/* A config it cannot use exits 78 saying why. */
START_TEST(ctl_config_unusable)
{
	const char *noadmin = config_file("admin =");
	const char *broken =
	    h_write_file("broken.ini", "[global]\nadmin = x\n");
	struct h_run r;

	h_ctl(&r, "-c", h_path("missing.ini"), "status");
	h_assert(r.status == 78 &&
		strstr(r.err, "missing.ini: cannot open") != NULL,
	    "a missing config: exit %d, %s", r.status, r.err);
	h_ctl(&r, "-c", noadmin, "status");
	h_assert(r.status == 78 && strstr(r.err, "sets no admin") != NULL &&
		strstr(r.err, noadmin) != NULL,
	    "a config without admin: exit %d, %s", r.status, r.err);
	h_ctl(&r, "-c", broken, "status");
	h_assert(r.status == 78 && strstr(r.err, "broken.ini:2: ") != NULL,
	    "a broken config: exit %d, %s", r.status, r.err);
	h_ctl(&r, "-c", config_file("admin = 127.0.0.1:9"), "-T",
	    h_path("no-token"), "status");
	h_assert(r.status == 78 &&
		strstr(r.err, "no-token: cannot open") != NULL,
	    "a missing token file: exit %d, %s", r.status, r.err);
}
END_TEST

/* No daemon at the address: exit 1, and the address tried is named. */
START_TEST(ctl_daemon_down)
{
	char *tcp = h_free_addr4(), *unix_addr = h_free_addr(AF_UNIX);
	struct h_run r;

	h_ctl(&r, "-c", config_file(h_strf("admin = %s", tcp)), "status");
	h_assert(r.status == 1 && strstr(r.err, "no answer from") != NULL &&
		strstr(r.err, tcp) != NULL && r.out[0] == '\0',
	    "TCP: exit %d, %s", r.status, r.err);
	h_ctl(&r, "-a", unix_addr, "reset", "--all");
	h_assert(r.status == 1 && strstr(r.err, unix_addr) != NULL,
	    "unix: exit %d, %s", r.status, r.err);
}
END_TEST

/* A daemon with an admin endpoint: api (server refusing) and web (echo). */
struct live {
	struct h_daemon *d;
	struct h_backend *api_srv, *web_srv;
	char *admin, *l_api, *l_web;
	const char *conf; /* its config file, for -c */
	const char *text; /* and what it says, to start it again */
};

/* Start the daemon of a story; token NULL for none, admin NULL for TCP. */
static void
live_start(struct live *lv, const char *admin, const char *token,
    const char *extra_global)
{
	const char *text;

	lv->api_srv = h_backend(H_REFUSE);
	lv->web_srv = h_backend(H_ECHO);
	lv->admin = admin != NULL ? h_strf("%s", admin) : h_free_addr4();
	lv->l_api = h_free_addr4();
	lv->l_web = h_free_addr4();
	text = h_strf("[global]\n"
		      "workers = 1\n"
		      "admin = %s\n"
		      "%s%s%s"
		      "%s\n"
		      "[upstream:api]\n"
		      "listen = %s\n"
		      "server = %s\n"
		      "failure_threshold = 1\n"
		      "recovery_timeout = 30s\n"
		      "\n"
		      "[upstream:web]\n"
		      "listen = %s\n"
		      "server = %s\n",
	    lv->admin, token ? "admin_token = " : "", token ? token : "",
	    token ? "\n" : "", extra_global ? extra_global : "", lv->l_api,
	    h_backend_addr(lv->api_srv), lv->l_web,
	    h_backend_addr(lv->web_srv));
	lv->text = text;
	lv->d = h_daemon_start(text);
	lv->conf = h_daemon_config(lv->d);
}

/* Open api's circuit with one refused client. */
static void
live_trip(struct live *lv)
{
	h_client_expect_reset(lv->l_api, H_WAIT_MS, NULL);
	h_expect_log(lv->d, H_WAIT_MS, "event=state", "upstream=api",
	    "to=open");
}

/* The line of a table that starts with name, or NULL. */
static const char *
table_row(const char *out, const char *name)
{
	size_t n = strlen(name);
	const char *p = out;

	for (; p != NULL && *p != '\0';
	     p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return p;
	return NULL;
}

/* The whitespace-separated field i (0-based) of a table line. */
static char *
field(const char *line, int i)
{
	char buf[256], *tok, *save = NULL;
	size_t n = strcspn(line, "\n");

	if (line == NULL || n >= sizeof(buf))
		return h_strf("%s", "");
	memcpy(buf, line, n);
	buf[n] = '\0';
	for (tok = strtok_r(buf, " ", &save); tok != NULL && i > 0; i--)
		tok = strtok_r(NULL, " ", &save);
	return h_strf("%s", tok ? tok : "");
}

/* Does every line put its n-th column's right edge at the same offset? */
static bool
aligned(const char *out)
{
	const char *line = out, *nl;
	long edge = -1, e;

	for (; *line != '\0'; line = nl + 1) {
		if ((nl = strchr(line, '\n')) == NULL)
			return false;
		/* ACTIVE is right-aligned: every line ends at the same column. */
		e = nl - line;
		if (edge != -1 && e != edge)
			return false;
		edge = e;
	}
	return edge > 0;
}

/*
 * status with no option on the daemon's host: one header line, one line
 * per upstream, columns aligned, the open circuit and its retry-after.
 */
START_TEST(ctl_status)
{
	static const char header[] =
	    "UPSTREAM  STATE   RETRY_AFTER  "
	    "FAILURE_RATE  ATTEMPTS  REJECTS  ACTIVE\n";
	struct live lv;
	struct h_run r;
	const char *api, *web;
	double retry;

	live_start(&lv, NULL, NULL, NULL);
	live_trip(&lv);
	h_assert(h_echo_roundtrip(lv.l_web, "hi", H_WAIT_MS), "web relays");
	h_ctl(&r, "-c", lv.conf, "status");
	h_assert(r.status == 0 && r.err[0] == '\0', "status exited %d: %s",
	    r.status, r.err);
	h_assert(h_count_lines(r.out) == 3, "status printed:\n%s", r.out);
	h_assert(strncmp(r.out, header, strlen(header)) == 0,
	    "the header line: %s", r.out);
	h_assert(aligned(r.out), "columns not aligned:\n%s", r.out);
	api = table_row(r.out, "api");
	web = table_row(r.out, "web");
	h_assert(api != NULL && web != NULL, "rows missing:\n%s", r.out);
	h_assert(strcmp(field(api, 1), "open") == 0 &&
		strcmp(field(api, 3), "100.0%") == 0 &&
		strcmp(field(api, 4), "1") == 0 &&
		strcmp(field(api, 5), "0") == 0 &&
		strcmp(field(api, 6), "0") == 0,
	    "api's row: %s", api);
	retry = strtod(field(api, 2), NULL);
	h_assert(retry > 25.0 && retry <= 30.0 &&
		field(api, 2)[strlen(field(api, 2)) - 1] == 's',
	    "api's retry-after: %s", field(api, 2));
	h_assert(strcmp(field(web, 1), "closed") == 0 &&
		strcmp(field(web, 2), "-") == 0 &&
		strcmp(field(web, 3), "0.0%") == 0 &&
		strcmp(field(web, 4), "1") == 0,
	    "web's row: %s", web);

	/* A rejected client shows in REJECTS. */
	h_client_expect_reset(lv.l_api, H_WAIT_MS, NULL);
	h_ctl(&r, "-c", lv.conf, "status");
	h_assert(strcmp(field(table_row(r.out, "api"), 5), "1") == 0,
	    "after a reject:\n%s", r.out);
}
END_TEST

/* Over a unix socket, the same. */
START_TEST(ctl_status_unix)
{
	struct live lv;
	struct h_run r;

	live_start(&lv, h_free_addr(AF_UNIX), NULL, NULL);
	h_ctl(&r, "-c", lv.conf, "status");
	h_assert(r.status == 0 && table_row(r.out, "api") != NULL &&
		table_row(r.out, "web") != NULL,
	    "status over %s exited %d: %s%s", lv.admin, r.status, r.out, r.err);
}
END_TEST

/*
 * status -j prints the /stats document (compact JSON on one line), not the
 * table: what a script pipes into jq.
 */
START_TEST(ctl_status_json)
{
	struct live lv;
	struct h_run r;

	live_start(&lv, NULL, NULL, NULL);
	live_trip(&lv);
	h_ctl(&r, "-c", lv.conf, "-j", "status");
	h_assert(r.status == 0 && r.err[0] == '\0', "status -j exited %d: %s",
	    r.status, r.err);
	h_assert(strncmp(r.out, "{\"version\":\"", 12) == 0 &&
		strstr(r.out, "\"upstreams\":{\"api\":{\"state\":\"open\"") !=
		    NULL &&
		strstr(r.out, "\"web\":{\"state\":\"closed\"") != NULL &&
		strstr(r.out, "UPSTREAM") == NULL && h_count_lines(r.out) == 1,
	    "status -j printed:\n%s", r.out);
}
END_TEST

/*
 * An admin socket this user may not open: "permission denied" and what to
 * do, exit 1, not curl's "Couldn't connect to server". As root (who may
 * open any socket) the client runs as nobody through setpriv.
 */
START_TEST(ctl_permission_denied)
{
	const char *setpriv = h_client("setpriv");
	struct live lv;
	struct h_run r;

	if (geteuid() == 0 && setpriv == NULL)
		h_skip("running as root and setpriv (util-linux) is missing");
	live_start(&lv, h_free_addr(AF_UNIX), NULL, NULL);
	h_assert(chmod(lv.admin + strlen("unix:"), 0600) == 0, "chmod %s",
	    lv.admin);
	if (geteuid() == 0)
		h_exec(&r, setpriv, "--reuid=65534", "--regid=65534",
		    "--clear-groups", h_ctl_prog(), "-a", lv.admin, "status");
	else {
		h_assert(chmod(lv.admin + strlen("unix:"), 0) == 0, "chmod %s",
		    lv.admin);
		h_ctl(&r, "-a", lv.admin, "status");
	}
	h_assert(r.status == 1 && strstr(r.err, "permission denied") != NULL &&
		strstr(r.err, lv.admin) != NULL &&
		strstr(r.err, "sudo") != NULL &&
		strstr(r.err, "Couldn't connect") == NULL && r.out[0] == '\0',
	    "exit %d, stdout %s, stderr %s", r.status, r.out, r.err);
}
END_TEST

/*
 * force-closed with a lifetime: status shows when it ends (STATS
 * expires_in; retry_after stays null), and the end is logged
 * reason=expired, not manual.
 */
START_TEST(ctl_force_closed_expires)
{
	struct live lv;
	struct h_run r;
	const char *row;
	double left;

	live_start(&lv, NULL, NULL, NULL);
	h_ctl(&r, "-c", lv.conf, "force-closed", "api", "2s");
	h_assert(r.status == 0, "force-closed exited %d: %s", r.status, r.err);
	row = table_row(r.out, "api");
	h_assert(row != NULL && strcmp(field(row, 1), "forced_closed") == 0,
	    "force-closed printed:\n%s", r.out);
	left = strtod(field(row, 2), NULL);
	h_assert(left > 1.0 && left <= 2.0 &&
		field(row, 2)[strlen(field(row, 2)) - 1] == 's',
	    "the force's end shows as %s", field(row, 2));
	h_ctl(&r, "-c", lv.conf, "-j", "stats", "api");
	h_assert(strstr(r.out, "\"retry_after\":null,\"expires_in\":1.") !=
		    NULL ||
		strstr(r.out, "\"retry_after\":null,\"expires_in\":0.") != NULL,
	    "stats: %s", r.out);
	h_expect_log(lv.d, 2000 + 700, "event=state", "upstream=api",
	    "from=forced_closed", "to=closed", "reason=expired");
	h_ctl(&r, "-c", lv.conf, "-j", "stats", "api");
	h_assert(strstr(r.out, "\"expires_in\":null,") != NULL &&
		strstr(r.out, "\"reason\":\"expired\"") != NULL,
	    "after the force: %s", r.out);
}
END_TEST

/* With admin_token: from the config, from -T; a wrong or missing one is 3. */
START_TEST(ctl_token)
{
	const char *good = h_write_file("good.token", "s3cret-token\n");
	const char *bad = h_write_file("bad.token", "nope\n");
	const char *notoken;
	struct live lv;
	struct h_run r;

	live_start(&lv, NULL, "s3cret-token", NULL);
	h_ctl(&r, "-c", lv.conf, "status");
	h_assert(r.status == 0 && table_row(r.out, "api") != NULL,
	    "with the config's token: exit %d, %s", r.status, r.err);
	h_ctl(&r, "-c", lv.conf, "-T", good, "reset", "api");
	h_assert(r.status == 0, "with -T: exit %d, %s", r.status, r.err);
	h_ctl(&r, "-c", lv.conf, "-T", bad, "status");
	h_assert(r.status == 3 && strstr(r.err, "(401)") != NULL &&
		strstr(r.err, "wrong token") != NULL && r.out[0] == '\0',
	    "a wrong token: exit %d, %s", r.status, r.err);
	notoken = config_file(h_strf("admin = %s", lv.admin));
	h_ctl(&r, "-c", notoken, "force-open", "api");
	h_assert(r.status == 3 && strstr(r.err, "needs a token") != NULL,
	    "no token: exit %d, %s", r.status, r.err);
	h_ctl(&r, "-a", lv.admin, "-T", good, "stats", "web");
	h_assert(r.status == 0 &&
		strstr(r.out, "\"state\": \"closed\"") != NULL,
	    "-a with -T: exit %d, %s", r.status, r.err);
}
END_TEST

/* An upstream the daemon does not have: exit 2 for every command. */
START_TEST(ctl_unknown_upstream)
{
	static const char *const cmds[][3] = {
		{ "stats", "nosuch", NULL },
		{ "force-open", "nosuch", "30s" },
		{ "force-closed", "nosuch", NULL },
		{ "reset", "nosuch", NULL },
	};
	struct live lv;
	struct h_run r;
	size_t i;

	live_start(&lv, NULL, NULL, NULL);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		h_ctl(&r, "-c", lv.conf, cmds[i][0], cmds[i][1], cmds[i][2]);
		h_assert(r.status == 2 &&
			strstr(r.err, "unknown upstream 'nosuch'") != NULL,
		    "%s: exit %d, %s", cmds[i][0], r.status, r.err);
	}
}
END_TEST

/*
 * force-open with a lifetime: the row says forced_open with the rest of
 * it, clients are turned away, and the circuit closes on its own when the
 * lifetime ends, not before and not much after.
 */
START_TEST(ctl_force_open_lifetime)
{
	struct live lv;
	struct h_run r;
	const char *line, *row;
	int64_t t_forced, t_closed;
	double retry;
	size_t mark;

	live_start(&lv, NULL, NULL, NULL);
	h_ctl(&r, "-c", lv.conf, "force-open", "web", "2s");
	h_assert(r.status == 0, "force-open exited %d: %s", r.status, r.err);
	line = h_expect_log(lv.d, H_WAIT_MS, "event=state", "upstream=web",
	    "to=forced_open", "reason=manual");
	t_forced = h_log_time_ms(line);
	row = table_row(r.out, "web");
	h_assert(h_count_lines(r.out) == 2 && row != NULL &&
		strcmp(field(row, 1), "forced_open") == 0,
	    "force-open printed:\n%s", r.out);
	retry = strtod(field(row, 2), NULL);
	h_assert(retry > 1.0 && retry <= 2.0, "retry-after %s", field(row, 2));

	mark = h_log_mark(lv.d);
	h_client_expect_reset(lv.l_web, H_WAIT_MS, NULL);
	h_expect_log_after(lv.d, mark, H_WAIT_MS, "event=reject",
	    "upstream=web", "state=forced_open");
	line = h_expect_log(lv.d, 2000 + 700, "event=state", "upstream=web",
	    "from=forced_open", "to=closed");
	t_closed = h_log_time_ms(line);
	h_assert(t_closed - t_forced >= 2000 - 20 &&
		t_closed - t_forced <= 2000 + 700,
	    "the force lasted %lld ms, not 2000",
	    (long long)(t_closed - t_forced));
	h_ctl(&r, "-c", lv.conf, "status");
	h_assert(strcmp(field(table_row(r.out, "web"), 1), "closed") == 0,
	    "after the lifetime:\n%s", r.out);
	h_assert(h_echo_roundtrip(lv.l_web, "back", H_WAIT_MS),
	    "web does not relay after its force ended");
}
END_TEST

/* force-closed, reset, reset --all, and the JSON of stats, -j compact. */
START_TEST(ctl_force_closed_reset_stats)
{
	struct live lv;
	struct h_run r;

	live_start(&lv, NULL, NULL, NULL);
	live_trip(&lv);
	h_ctl(&r, "-c", lv.conf, "force-closed", "api");
	h_assert(r.status == 0 &&
		strcmp(field(table_row(r.out, "api"), 1), "forced_closed") == 0,
	    "force-closed: exit %d, %s%s", r.status, r.out, r.err);
	h_ctl(&r, "-c", lv.conf, "reset", "api");
	h_assert(r.status == 0 &&
		strcmp(field(table_row(r.out, "api"), 1), "closed") == 0,
	    "reset: exit %d, %s%s", r.status, r.out, r.err);
	live_trip(&lv);
	h_ctl(&r, "-c", lv.conf, "force-open", "web");
	h_assert(strcmp(field(table_row(r.out, "web"), 2), "-") == 0,
	    "force-open without a lifetime:\n%s", r.out);
	h_ctl(&r, "-c", lv.conf, "reset", "--all");
	h_assert(r.status == 0 && h_count_lines(r.out) == 3 &&
		strcmp(field(table_row(r.out, "api"), 1), "closed") == 0 &&
		strcmp(field(table_row(r.out, "web"), 1), "closed") == 0,
	    "reset --all: exit %d, %s%s", r.status, r.out, r.err);
	h_expect_log(lv.d, H_WAIT_MS, "event=state", "upstream=web",
	    "from=forced_open", "to=closed", "reason=manual");

	h_ctl(&r, "-c", lv.conf, "stats");
	h_assert(r.status == 0 &&
		strncmp(r.out, "{\n  \"version\": ", 15) == 0 &&
		strstr(r.out, "\n  \"upstreams\": {\n    \"api\": {\n") != NULL,
	    "stats: exit %d, %.300s", r.status, r.out);
	h_ctl(&r, "-c", lv.conf, "-j", "stats", "api");
	h_assert(r.status == 0 && h_count_lines(r.out) == 1 &&
		strncmp(r.out, "{\"state\":\"closed\",", 18) == 0 &&
		strstr(r.out, "\"attempts_total\":2,") != NULL,
	    "stats -j api: exit %d, %.300s", r.status, r.out);
}
END_TEST

/*
 * A force set with circuitproxyctl survives a restart with state_file:
 * forced_open again, with the rest of its lifetime.
 */
START_TEST(ctl_force_survives_restart)
{
	const char *state = h_strf("state_file = %s\n", h_path("state"));
	struct h_daemon *d2;
	struct live lv;
	struct h_run r;
	const char *line;
	int64_t t_forced, elapsed;
	double retry;

	live_start(&lv, NULL, NULL, state);
	h_ctl(&r, "-c", lv.conf, "force-open", "api", "60s");
	h_assert(r.status == 0, "force-open exited %d: %s", r.status, r.err);
	line = h_expect_log(lv.d, H_WAIT_MS, "event=state", "upstream=api",
	    "to=forced_open");
	t_forced = h_log_time_ms(line);
	h_assert(h_daemon_stop(lv.d) == 0, "the daemon did not stop cleanly");

	d2 = h_daemon_start(lv.text);
	h_expect_log(d2, H_WAIT_MS, "event=state_file", "result=restored",
	    "upstream=api", "state=forced_open");
	h_ctl(&r, "-c", h_daemon_config(d2), "status");
	line = h_log_line(d2, h_log_mark(d2) - 1);
	elapsed = h_log_time_ms(line) - t_forced;
	h_assert(r.status == 0 &&
		strcmp(field(table_row(r.out, "api"), 1), "forced_open") == 0,
	    "after the restart: exit %d\n%s", r.status, r.out);
	retry = strtod(field(table_row(r.out, "api"), 2), NULL);
	h_assert(retry <= 60.0 - (double)elapsed / 1000.0 + 0.1 && retry > 50.0,
	    "forced_open for %.1fs more, %lld ms after it was set for 60s",
	    retry, (long long)elapsed);
	h_client_expect_reset(lv.l_api, H_WAIT_MS, NULL);
	h_expect_log(d2, H_WAIT_MS, "event=reject", "upstream=api",
	    "state=forced_open");
}
END_TEST

/*
 * A config half edited (an error in an upstream section) still names the
 * running daemon's endpoint: status works, with a warning on stderr. A
 * file with errors and no admin is still exit 78 with its errors.
 */
START_TEST(ctl_config_half_edited)
{
	struct live lv;
	struct h_run r;
	const char *edited;

	live_start(&lv, NULL, "tok", NULL);
	edited = h_write_file("edited.ini",
	    h_strf("%s\n[upstream:new]\nlisten = %s\nserver = 127.0.0.1:9\n"
		   "colour = red ; not a key\n",
		lv.text, h_free_addr4()));
	h_ctl(&r, "-c", edited, "status");
	h_assert(r.status == 0 && table_row(r.out, "api") != NULL &&
		strstr(r.err, "edited.ini has errors") != NULL &&
		strstr(r.err, lv.admin) != NULL,
	    "a half-edited config: exit %d, %s%s", r.status, r.out, r.err);
	h_ctl(&r, "-c", h_write_file("noadmin.ini", "[upstream:x]\nfoo = 1\n"),
	    "status");
	h_assert(r.status == 78 && strstr(r.err, "noadmin.ini:2: ") != NULL,
	    "errors and no admin: exit %d, %s", r.status, r.err);
}
END_TEST

/* The ctl stories, each in its own test case. */
static Suite *
ctl_suite(void)
{
	Suite *s = suite_create("ctl");

	H_TEST(s, ctl_usage);
	H_TEST(s, ctl_config_unusable);
	H_TEST(s, ctl_daemon_down);
	H_TEST(s, ctl_status);
	H_TEST(s, ctl_status_unix);
	H_TEST(s, ctl_status_json);
	H_TEST(s, ctl_permission_denied);
	H_TEST(s, ctl_force_closed_expires);
	H_TEST(s, ctl_token);
	H_TEST(s, ctl_unknown_upstream);
	H_TEST(s, ctl_force_open_lifetime);
	H_TEST(s, ctl_force_closed_reset_stats);
	H_TEST(s, ctl_force_survives_restart);
	H_TEST(s, ctl_config_half_edited);
	return s;
}

H_MAIN(ctl_suite)
