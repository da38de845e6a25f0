/*
 * End-to-end stories of circuitproxyctl (SPEC.md 2 and 7): the operator's
 * command against a live daemon's admin endpoint, found through the same
 * config file; and every way it can fail, each with its exit status and a
 * message that says what to do.
 */
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* The program under test: $CIRCUITPROXYCTL, or beside the daemon. */
static const char *
ctl_prog(void)
{
	const char *p = getenv("CIRCUITPROXYCTL"), *d;

	if (p != NULL && *p != '\0')
		return p;
	d = getenv("CIRCUITPROXYD");
	h_assert(d != NULL, "CIRCUITPROXYD is not set");
	return h_strf("%.*sctl", (int)strlen(d) - 1, d);
}

/* Run circuitproxyctl with up to 9 arguments (the harness runs $CIRCUITPROXYD). */
static void
ctl_run_v(struct h_run *r, const char *const *args)
{
	const char *a[10] = { NULL };
	char *daemon = h_strf("%s", getenv("CIRCUITPROXYD"));
	size_t i;

	for (i = 0; i < 9 && args[i] != NULL; i++)
		a[i] = args[i];
	setenv("CIRCUITPROXYD", ctl_prog(), 1);
	h_run_args(r, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
	    (const char *)NULL);
	setenv("CIRCUITPROXYD", daemon, 1);
}
#define ctl_run(r, ...)                                                        \
	ctl_run_v((r), (const char *const[]) { __VA_ARGS__, NULL })

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
		ctl_run(&r, "-c", conf, bad[i][0], bad[i][1], bad[i][2]);
		h_assert(r.status == 64, "case %zu (%s) exited %d", i,
		    bad[i][0] ? bad[i][0] : "no command", r.status);
		h_assert(strstr(r.err, "usage: circuitproxyctl") != NULL &&
			r.out[0] == '\0',
		    "case %zu: no usage on stderr: %s", i, r.err);
	}
	ctl_run(&r, "-h");
	h_assert(r.status == 0 && strstr(r.out, "usage: ") == r.out &&
		strstr(r.out, "force-open NAME [FOR]") != NULL &&
		strstr(r.out, "reset NAME | reset --all") != NULL,
	    "-h exited %d and printed %s", r.status, r.out);
	ctl_run(&r, "--version");
	h_assert(r.status == 0 && strcmp(r.out, "circuitproxyctl 0.1.0\n") == 0,
	    "--version exited %d and printed %s", r.status, r.out);
}
END_TEST

/* A config it cannot use exits 78 saying why. */
START_TEST(ctl_config_unusable)
{
	const char *noadmin = config_file("admin =");
	const char *broken = h_write_file("broken.ini", "[global]\nadmin = x\n");
	struct h_run r;

	ctl_run(&r, "-c", h_path("missing.ini"), "status");
	h_assert(r.status == 78 && strstr(r.err, "missing.ini: cannot open") != NULL,
	    "a missing config: exit %d, %s", r.status, r.err);
	ctl_run(&r, "-c", noadmin, "status");
	h_assert(r.status == 78 && strstr(r.err, "sets no admin") != NULL &&
		strstr(r.err, noadmin) != NULL,
	    "a config without admin: exit %d, %s", r.status, r.err);
	ctl_run(&r, "-c", broken, "status");
	h_assert(r.status == 78 && strstr(r.err, "broken.ini:2: ") != NULL,
	    "a broken config: exit %d, %s", r.status, r.err);
	ctl_run(&r, "-c", config_file("admin = 127.0.0.1:9"), "-T",
	    h_path("no-token"), "status");
	h_assert(r.status == 78 && strstr(r.err, "no-token: cannot open") != NULL,
	    "a missing token file: exit %d, %s", r.status, r.err);
}
END_TEST

/* No daemon at the address: exit 1, and the address tried is named. */
START_TEST(ctl_daemon_down)
{
	char *tcp = h_free_addr4(), *unix_addr = h_free_addr(AF_UNIX);
	struct h_run r;

	ctl_run(&r, "-c", config_file(h_strf("admin = %s", tcp)), "status");
	h_assert(r.status == 1 && strstr(r.err, "no answer from") != NULL &&
		strstr(r.err, tcp) != NULL && r.out[0] == '\0',
	    "TCP: exit %d, %s", r.status, r.err);
	ctl_run(&r, "-a", unix_addr, "reset", "--all");
	h_assert(r.status == 1 && strstr(r.err, unix_addr) != NULL,
	    "unix: exit %d, %s", r.status, r.err);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("ctl");

	H_TEST(s, ctl_usage);
	H_TEST(s, ctl_config_unusable);
	H_TEST(s, ctl_daemon_down);
	return h_main(s);
}
