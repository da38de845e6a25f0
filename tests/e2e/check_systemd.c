/*
 * End-to-end stories of what systemd gives the daemon, played without
 * systemd. Socket activation (SPEC.md 6): the test binds and
 * listens as systemd's circuitproxyd.socket would, and passes the sockets
 * with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES. The daemon takes a
 * received socket by its address and binds the others itself, closes one
 * no address names, keeps them across a reload, never shuts one down, and
 * so a restart, socket in hand, refuses no client. Secrets (SPEC.md 3):
 * admin_token_file, read at start and on reload, and the credential
 * $CREDENTIALS_DIRECTORY/admin_token; circuitproxyctl finds the token the
 * same way. And -t under the journal gives its errors priority 3.
 */
#include <sys/stat.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* A listening socket on "127.0.0.1:P", as systemd's socket unit makes it. */
static int
listen_at(const char *addr)
{
	struct sockaddr_in sin;
	const char *colon = strrchr(addr, ':');
	int fd, on = 1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)atoi(colon + 1));
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	h_assert(fd != -1, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	h_assert(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
		listen(fd, 4096) == 0,
	    "listen on %s: %s", addr, strerror(errno));
	return fd;
}

/* Is the socket still listening (not shut down by the daemon)? */
static bool
still_listening(int fd)
{
	int on = 0;
	socklen_t len = sizeof(on);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 &&
	    on != 0;
}

/* One upstream per listen address, all to one server. */
static const char *
config(const char *upstreams)
{
	return h_strf("[global]\nworkers = 2\nshutdown_timeout = 5s\n\n%s",
	    upstreams);
}

static const char *
upstream(const char *name, const char *listen, const struct h_backend *srv)
{
	return h_strf("[upstream:%s]\nlisten = %s\nserver = %s\n\n", name,
	    listen, h_backend_addr(srv));
}

/*
 * Received sockets are taken by address, whatever their order and names;
 * an address not passed is bound by the daemon; a passed socket that no
 * address names is logged and closed. Clients get through all of them.
 */
START_TEST(activation_by_address)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *a = h_free_addr4(), *b = h_free_addr4(), *own = h_free_addr4(),
	     *stray = h_free_addr4();
	struct h_opts opts = { 0 };
	struct h_daemon *d;
	int fa = listen_at(a), fb = listen_at(b), fs = listen_at(stray);

	/* Another order than the config's, as a socket unit may have it. */
	opts.listen_fds[0] = fs;
	opts.listen_fds[1] = fb;
	opts.listen_fds[2] = fa;
	opts.nlisten_fds = 3;
	opts.listen_fdnames = "circuitproxyd.socket:circuitproxyd.socket:"
			      "circuitproxyd.socket";
	d = h_daemon_start_opts(&opts,
	    config(h_strf("%s%s", upstream("api", a, srv),
		upstream("web", h_strf("%s\nlisten = %s", b, own), srv))));
	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=api",
	    h_strf("addr=%s", a), "socket=received",
	    "name=circuitproxyd.socket");
	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=web",
	    h_strf("addr=%s", b), "socket=received");
	h_assert(h_wait_count(d, 1, H_WAIT_MS, "event=listen", "upstream=web",
		     h_strf("addr=%s", own)) == 1,
	    "the address not passed was not bound");
	h_assert(h_count_log(d, "event=listen", h_strf("addr=%s", own),
		     "socket=received") == 0,
	    "the address not passed is logged as received");
	h_expect_log(d, H_WAIT_MS, "event=socket_received", "level=warning",
	    h_strf("addr=%s", stray), "name=circuitproxyd.socket",
	    "error=\"no listen address of the config names it: closed\"");
	h_assert(h_echo_roundtrip(a, "via a", H_WAIT_MS), "no relay via %s", a);
	h_assert(h_echo_roundtrip(b, "via b", H_WAIT_MS), "no relay via %s", b);
	h_assert(h_echo_roundtrip(own, "own", H_WAIT_MS), "no relay via %s",
	    own);
	h_assert(h_daemon_stop(d) == 0, "the daemon did not exit 0");
	/* systemd's copies: never shut down by the daemon, even at stop. */
	h_assert(still_listening(fa) && still_listening(fb),
	    "the daemon shut a received socket down at stop");
	close(fa);
	close(fb);
	close(fs);
}
END_TEST

/*
 * A reload keeps a received socket the new config still names (no
 * unlisten, the same socket), and one it drops is taken back by a later
 * reload that names the address again.
 */
START_TEST(activation_reload_keeps)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *a = h_free_addr4(), *b = h_free_addr4();
	struct h_opts opts = { 0 };
	struct h_daemon *d;
	int fa = listen_at(a), fb = listen_at(b);
	const char *both = config(
	    h_strf("%s%s", upstream("api", a, srv), upstream("web", b, srv)));
	size_t mark;

	opts.listen_fds[0] = fa;
	opts.listen_fds[1] = fb;
	opts.nlisten_fds = 2;
	d = h_daemon_start_opts(&opts, both);
	h_expect_log(d, H_WAIT_MS, "event=listen", h_strf("addr=%s", b),
	    "socket=received", "name=unknown");

	mark = h_reload(d, config(upstream("api", a, srv)));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(h_count_log_after(d, mark, "event=unlisten",
		     h_strf("addr=%s", a)) == 0,
	    "a reload let go of a received socket it still names");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=unlisten",
	    h_strf("addr=%s", b), "socket=received");
	h_assert(h_echo_roundtrip(a, "kept", H_WAIT_MS), "no relay via %s", a);
	h_assert(still_listening(fb), "the dropped received socket was shut");

	mark = h_reload(d, both);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=listen",
	    h_strf("addr=%s", b), "socket=received");
	h_assert(h_echo_roundtrip(b, "back", H_WAIT_MS), "no relay via %s", b);
	h_assert(h_daemon_stop(d) == 0, "the daemon did not exit 0");
	close(fa);
	close(fb);
}
END_TEST

/* A client loop: one connect after another, each outcome counted. */
struct loop {
	const char *addr;
	atomic_bool stop;
	atomic_uint served, refused, reset, other;
};

#define LOOP_MAX_CLIENTS 20000
#define LOOP_MAX_MS 30000

/* Connect, expect the banner, close; until told or bounded. */
static void *
loop_run(void *arg)
{
	struct loop *lp = arg;
	uint64_t t0 = h_now_ms();
	unsigned n;

	for (n = 0; n < LOOP_MAX_CLIENTS && !atomic_load(&lp->stop) &&
	     h_now_ms() - t0 < LOOP_MAX_MS;
	     n++) {
		switch (h_client_try(lp->addr, 5000, NULL, NULL)) {
		case H_OUT_DATA:
			atomic_fetch_add(&lp->served, 1);
			break;
		case H_OUT_REFUSED:
			atomic_fetch_add(&lp->refused, 1);
			break;
		case H_OUT_RESET:
			atomic_fetch_add(&lp->reset, 1);
			break;
		default:
			atomic_fetch_add(&lp->other, 1);
			break;
		}
	}
	return NULL;
}

/* Wait until the loop has served n clients in all; false at the deadline. */
static bool
loop_wait_served(struct loop *lp, unsigned n, int ms)
{
	uint64_t t0 = h_now_ms();

	while (atomic_load(&lp->served) < n) {
		if (h_now_ms() - t0 > (uint64_t)ms)
			return false;
		poll(NULL, 0, 2);
	}
	return true;
}

/*
 * A restart with the socket kept (as systemd keeps circuitproxyd.socket's)
 * refuses no client and resets none: those that come while no daemon runs
 * wait in the backlog and are served by the next one. With state_file, the
 * open circuit of another upstream is still open after it.
 */
START_TEST(activation_restart_refuses_none)
{
	struct h_backend *srv = h_backend(H_BANNER),
			 *dead = h_backend(H_REFUSE);
	char *a = h_free_addr4(), *b = h_free_addr4(), *path = h_path("state");
	struct loop lp = { .addr = a };
	struct h_opts opts = { 0 };
	struct h_daemon *d1, *d2;
	pthread_t t;
	unsigned before, refused, reset, other;
	int fa = listen_at(a);
	const char *conf;

	h_backend_set_banner(srv, "hello\n");
	conf = h_strf("[global]\nworkers = 2\nstate_file = %s\n\n"
		      "%s[upstream:dead]\nlisten = %s\nserver = %s\n"
		      "failure_threshold = 1\nrecovery_timeout = 5m\n",
	    path, upstream("api", a, srv), b, h_backend_addr(dead));
	opts.listen_fds[0] = fa;
	opts.nlisten_fds = 1;
	opts.listen_fdnames = "circuitproxyd.socket";
	d1 = h_daemon_start_opts(&opts, conf);
	h_client_expect_reset(b, H_WAIT_MS, NULL);
	h_expect_log(d1, H_WAIT_MS, "event=state", "upstream=dead", "to=open");

	pthread_create(&t, NULL, loop_run, &lp);
	h_assert(loop_wait_served(&lp, 100, 10000),
	    "the loop got %u clients served before the restart",
	    atomic_load(&lp.served));
	h_assert(h_daemon_stop(d1) == 0, "the first daemon did not exit 0");
	before = atomic_load(&lp.served);
	d2 = h_daemon_start_opts(&opts, conf);
	h_assert(loop_wait_served(&lp, before + 100, 10000),
	    "the loop got %u clients served after the restart, %u before",
	    atomic_load(&lp.served) - before, before);
	atomic_store(&lp.stop, true);
	pthread_join(t, NULL);
	refused = atomic_load(&lp.refused);
	reset = atomic_load(&lp.reset);
	other = atomic_load(&lp.other);
	fprintf(stderr,
	    "activation_restart_refuses_none: served %u, refused %u, "
	    "reset %u, other %u\n",
	    atomic_load(&lp.served), refused, reset, other);
	h_assert(refused == 0 && reset == 0 && other == 0,
	    "during a restart with the socket kept: %u refused, %u reset, "
	    "%u other (of %u served)",
	    refused, reset, other, atomic_load(&lp.served));

	h_expect_log(d2, H_WAIT_MS, "event=state_file", "result=restored",
	    "upstream=dead", "state=open");
	h_client_expect_reset(b, H_WAIT_MS, NULL);
	h_assert(h_daemon_stop(d2) == 0, "the second daemon did not exit 0");
	close(fa);
}
END_TEST

/* The status of GET /stats with a bearer token (NULL: none). */
static int
stats_status(const char *admin, const char *token)
{
	return h_http(admin, "GET", "/stats",
	    token != NULL ? h_strf("Authorization: Bearer %s\r\n", token)
			  : NULL,
	    NULL);
}

/* A file with that text and mode. */
static char *
file_mode(const char *name, const char *text, mode_t mode)
{
	char *path = h_write_file(name, text);

	h_assert(chmod(path, mode) == 0, "chmod %s", path);
	return path;
}

/*
 * circuitproxyd -t on a config: it exits with status, its stderr holds
 * want and also (if not NULL), and no "warning" where quiet is set.
 */
#define config_test(path, status, want, also, quiet, what)                     \
	config_test_at(H_WHERE, (path), (status), (want), (also), (quiet),     \
	    (what))
static void
config_test_at(const char *where, const char *path, int status,
    const char *want, const char *also, bool quiet, const char *what)
{
	struct h_run r;

	h_run(&r, "-t", "-c", path);
	if (r.status != status ||
	    (want != NULL && strstr(r.err, want) == NULL) ||
	    (also != NULL && strstr(r.err, also) == NULL) ||
	    (quiet && strstr(r.err, "warning") != NULL))
		h_fail(where, "-t %s: %d %s", what, r.status, r.err);
}

/*
 * admin_token_file: the token is the file's first line, asked of every
 * admin request; a reload reads the file again; circuitproxyctl, given only
 * the config, finds the token there too.
 */
START_TEST(token_file_read_and_reloaded)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *lis = h_free_addr4();
	char *tok = file_mode("token", "first-secret\n", 0600);
	const char *conf = h_strf("[global]\nadmin = %s\nadmin_token_file = "
				  "%s\n\n%s",
	    admin, tok, upstream("api", lis, srv));
	struct h_daemon *d = h_daemon_start(conf);
	struct h_run r;
	size_t mark;

	h_assert(stats_status(admin, NULL) == 401, "/stats without the token");
	h_assert(stats_status(admin, "first-secret") == 200,
	    "/stats with the file's token");
	h_ctl(&r, "-c", h_daemon_config(d), "status");
	h_assert(r.status == 0 && strstr(r.out, "api") != NULL,
	    "circuitproxyctl status exited %d: %s%s", r.status, r.out, r.err);

	file_mode("token", "second-secret\n", 0600);
	mark = h_reload(d, conf);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(stats_status(admin, "first-secret") == 401,
	    "the old token still works after the file changed and a reload");
	h_assert(stats_status(admin, "second-secret") == 200,
	    "the new token does not work after a reload");
	h_assert(h_daemon_stop(d) == 0, "the daemon did not exit 0");
}
END_TEST

/*
 * With neither admin_token nor admin_token_file, the token is the
 * credential systemd passes (LoadCredential=admin_token:...), in
 * $CREDENTIALS_DIRECTORY; circuitproxyctl under the same variable finds it
 * too. The config holds no secret and may be 0644 without a warning.
 */
START_TEST(token_from_credential)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *lis = h_free_addr4();
	char *dir = h_path("credentials");
	const char *conf = h_strf("[global]\nadmin = %s\n\n%s", admin,
	    upstream("api", lis, srv));
	struct h_daemon *d;
	struct h_run r;

	mkdir(dir, 0700);
	file_mode("credentials/admin_token", "from-systemd\n", 0400);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	d = h_daemon_start(conf);
	h_assert(stats_status(admin, NULL) == 401,
	    "/stats without the credential's token");
	h_assert(stats_status(admin, "from-systemd") == 200,
	    "/stats with the credential's token");
	h_ctl(&r, "-c", h_daemon_config(d), "status");
	h_assert(r.status == 0, "circuitproxyctl status exited %d: %s%s",
	    r.status, r.out, r.err);
	config_test(h_daemon_config(d), 0, NULL, NULL, true,
	    "on a 0644 config with the token in a credential");
	unsetenv("CREDENTIALS_DIRECTORY");
	h_assert(h_daemon_stop(d) == 0, "the daemon did not exit 0");
}
END_TEST

/*
 * The mistakes: a token file that cannot be read, or both keys set, are
 * errors naming FILE:LINE and the key; a config holding admin_token that
 * group or others may read gets a -t warning, and none at 0600.
 */
START_TEST(token_mistakes)
{
	struct h_backend *srv = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *lis = h_free_addr4();
	char *missing = h_path("no-such-token"), *path;

	path = file_mode("missing.ini",
	    h_strf("[global]\nadmin = %s\nadmin_token_file = %s\n\n%s", admin,
		missing, upstream("api", lis, srv)),
	    0600);
	config_test(path, 78,
	    h_strf("%s:3: admin_token_file '%s': cannot open: No such file or "
		   "directory",
		path, missing),
	    NULL, false, "with a missing token file");

	path = file_mode("both.ini",
	    h_strf("[global]\nadmin = %s\nadmin_token = x\nadmin_token_file "
		   "= %s\n\n%s",
		admin, file_mode("tok", "y\n", 0600),
		upstream("api", lis, srv)),
	    0600);
	config_test(path, 78, h_strf("%s:4: admin_token_file", path),
	    "admin_token is set too", false, "with both keys");

	path = file_mode("inline.ini",
	    h_strf("[global]\nadmin = %s\nadmin_token = s3cret\n\n%s", admin,
		upstream("api", lis, srv)),
	    0644);
	config_test(path, 0,
	    h_strf("%s: warning: the file holds admin_token and others may "
		   "read it",
		path),
	    NULL, false, "on a 0644 config holding admin_token");
	chmod(path, 0600);
	config_test(path, 0, NULL, NULL, true,
	    "on a 0600 config holding admin_token");
}
END_TEST

/*
 * -t under the journal (JOURNAL_STREAM names stderr, as when systemctl
 * reload runs ExecReload=circuitproxyd -t): each error line starts with
 * <3>, so "journalctl -p err" shows why a reload failed.
 */
START_TEST(test_errors_to_journal)
{
	struct h_opts opts = { .journal = true };
	struct h_daemon *d = h_daemon_spawn_opts(&opts,
	    "[global]\nworkers = 1\n\n[upstream:api]\nlisten = "
	    "127.0.0.1:1\nserver = 127.0.0.1:2\ntimeout = 5s\n",
	    "-t");
	const char *line;

	h_assert(h_daemon_wait_exit(d, H_WAIT_MS) == 78,
	    "-t on a bad file did not exit 78");
	line = h_expect_log(d, H_WAIT_MS, "unknown key");
	h_assert(strncmp(line, "<3>", 3) == 0 &&
		strstr(line, h_strf("%s:7:", h_daemon_config(d))) != NULL,
	    "a -t error under the journal: %s", line);
}
END_TEST

/* The systemd stories, each in its own test case. */
static Suite *
systemd_suite(void)
{
	Suite *s = suite_create("systemd");

	H_TEST(s, activation_by_address);
	H_TEST(s, activation_reload_keeps);
	H_TEST(s, activation_restart_refuses_none);
	H_TEST(s, token_file_read_and_reloaded);
	H_TEST(s, token_from_credential);
	H_TEST(s, token_mistakes);
	H_TEST(s, test_errors_to_journal);
	return s;
}

H_MAIN(systemd_suite)
