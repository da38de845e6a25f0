/*
 * Stories of host names (SPEC.md 3, 4 and 5): a real DNS server, dnsmasq,
 * started by the test on a 127.0.0.1 port with a hosts file the test
 * rewrites (then SIGHUP, as an operator would), and the daemon's resolver
 * pointed at it. A name that does not resolve yet, one that appears, one
 * that moves to another server, one with two addresses, and a DNS server
 * that goes away. Skipped, with the reason printed, without dnsmasq.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* A dnsmasq of the test's own. */
struct dns {
	pid_t pid;
	char *hosts; /* the file it serves, rewritten by dns_hosts() */
	char *addr;  /* "127.0.0.1:P" */
	const char *port;
};

/* Stop dnsmasq (the story itself, or the cleanup). */
static void
dns_stop(struct dns *dns)
{
	int st;

	if (dns->pid <= 0)
		return;
	kill(dns->pid, SIGTERM);
	waitpid(dns->pid, &st, 0);
	dns->pid = 0;
}

/* The test's cleanup: dnsmasq stopped, its record freed. */
static void
dns_cleanup(void *arg)
{
	dns_stop(arg);
	free(arg);
}

/* Rewrite the hosts file and have dnsmasq read it again. */
static void
dns_hosts(struct dns *dns, const char *text)
{
	char *tmp = h_strf("%s.new", dns->hosts);
	FILE *f = fopen(tmp, "w");

	h_assert(f != NULL, "cannot write %s: %s", tmp, strerror(errno));
	fputs(text, f);
	fclose(f);
	h_assert(rename(tmp, dns->hosts) == 0, "rename: %s", strerror(errno));
	if (dns->pid > 0)
		kill(dns->pid, SIGHUP);
}

/*
 * Start dnsmasq on a free 127.0.0.1 port, answering only from the hosts
 * file (NXDOMAIN for any other name under .test); NULL if it is missing.
 * It lives until the end of the test.
 */
static struct dns *
dns_start(const char *hosts)
{
	const char *prog = h_client("dnsmasq");
	struct passwd *pw = getpwuid(getuid());
	struct dns *dns;
	char *args[16];
	uint64_t until;
	int fd, n = 0;

	if (prog == NULL)
		return NULL;
	if ((dns = calloc(1, sizeof(*dns))) == NULL)
		abort();
	dns->hosts = h_path("hosts");
	dns_hosts(dns, hosts);
	dns->addr = h_free_addr4();
	dns->port = h_port_of(dns->addr);
	args[n++] = (char *)prog;
	args[n++] = "--keep-in-foreground";
	args[n++] = "--conf-file=/dev/null";
	args[n++] = "--no-resolv";
	args[n++] = "--no-hosts";
	args[n++] = h_strf("--addn-hosts=%s", dns->hosts);
	args[n++] = h_strf("--port=%s", dns->port);
	args[n++] = "--listen-address=127.0.0.1";
	args[n++] = "--bind-interfaces";
	args[n++] = "--local=/test/";
	args[n++] = "--pid-file=";
	args[n++] = h_strf("--user=%s", pw != NULL ? pw->pw_name : "nobody");
	args[n++] = h_strf("--log-facility=%s", h_path("dnsmasq.log"));
	args[n] = NULL;
	dns->pid = fork();
	h_assert(dns->pid != -1, "fork: %s", strerror(errno));
	if (dns->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(prog, args);
		_exit(127);
	}
	h_defer(dns_cleanup, dns);
	/* Ready when it answers on its TCP port too. */
	until = h_now_ms() + H_WAIT_MS;
	while ((fd = h_connect(dns->addr, 200)) < 0) {
		h_assert(h_now_ms() < until &&
			waitpid(dns->pid, NULL, WNOHANG) == 0,
		    "dnsmasq did not start on %s (see dnsmasq.log)", dns->addr);
		usleep(20000);
	}
	close(fd);
	return dns;
}

/* The config of these stories: one worker, admin on, the test's resolver. */
static const char *
dns_config(const struct dns *dns, const char *admin, const char *lis,
    const char *server, const char *keys)
{
	return h_strf("[global]\n"
		      "workers = 1\n"
		      "admin = %s\n"
		      "resolver = %s\n"
		      "shutdown_timeout = 2s\n"
		      "\n"
		      "[upstream:api]\n"
		      "listen = %s\n"
		      "server = %s\n"
		      "resolve_interval = 1s\n"
		      "%s",
	    admin, dns->addr, lis, server, keys);
}

/* GET a path of the admin endpoint with curl; its body, or NULL. */
static char *
admin_get(const char *admin, const char *path)
{
	const char *curl = h_client("curl");
	struct h_run r;

	if (curl == NULL)
		return NULL;
	h_exec(&r, curl, "-s", "--max-time", "5",
	    h_strf("http://%s%s", admin, path));
	h_assert(r.status == 0, "curl %s: exit %d", path, r.status);
	return r.out;
}

/* Connect through the proxy, echo a line, and close: true if it came back. */
static bool
roundtrip(const char *lis)
{
	return h_echo_roundtrip(lis, "ping\n", H_WAIT_MS);
}

/*
 * A name that does not resolve: -t warns and exits 0; the daemon runs, each
 * attempt fails at once as error=dns and the circuit opens. The name then
 * appears in DNS: it is found within a second or so, and the circuit
 * closes on the next trials and relays.
 */
START_TEST(dns_name_appears)
{
	struct h_backend *b = h_backend(H_ECHO);
	const char *lis = h_free_addr4(), *admin = h_free_addr4(), *port;
	const char *cfg, *line, *body;
	struct h_daemon *d;
	struct h_run r;
	struct dns *dns;
	uint64_t until;
	char *path;
	size_t mark;

	if ((dns = dns_start("127.0.0.9 other.test\n")) == NULL)
		h_skip("dnsmasq is not installed (Debian: dnsmasq-base)");
	port = h_port_of(h_backend_addr(b));
	cfg = dns_config(dns, admin, lis, h_strf("api.test:%s", port),
	    "failure_threshold = 2\n"
	    "recovery_timeout = 1s\n"
	    "half_open_max_calls = 1\n"
	    "success_threshold = 1\n");

	path = h_write_file("api.ini", cfg);
	h_run(&r, "-t", "-c", path);
	h_assert(r.status == 0, "-t exited %d: %s", r.status, r.err);
	h_assert(strstr(r.out, h_strf("%s: ok", path)) != NULL,
	    "-t did not say ok: %s", r.out);
	h_assert(strstr(r.err,
		     h_strf("%s:9: warning: upstream 'api': server "
			    "'api.test:%s' does not resolve",
			 path, port)) != NULL,
	    "-t did not warn about the name on its line: %s", r.err);

	d = h_daemon_start(cfg);
	line = h_expect_log(d, H_WAIT_MS, "event=resolve", "upstream=api",
	    "result=error");
	h_assert_fields(line, "level=warning", "event=resolve", "upstream=api",
	    "name=api.test", "result=error", "error=", "kept=none");
	/* Two clients, two dns failures: the circuit opens. */
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	line = h_expect_log(d, H_WAIT_MS, "event=connect_fail", "error=dns");
	h_assert_fields(line, "level=warning", "upstream=api",
	    h_strf("server=api.test:%s", port), "error=dns");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	h_assert(h_backend_accepted(b) == 0, "the backend saw a connection");
	if ((body = admin_get(admin, "/stats/api")) != NULL) {
		h_assert(strstr(body, "\"dns\":2") != NULL,
		    "STATS does not count 2 dns failures: %s", body);
		h_assert(strstr(body, "\"resolve_errors_total\":0") == NULL,
		    "STATS counts no failed lookup: %s", body);
	} else
		h_skip_note(H_WHERE, "curl missing: STATS not read");

	/* The name appears. */
	mark = h_log_mark(d);
	dns_hosts(dns, h_strf("127.0.0.1 api.test\n"));
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=resolve",
	    "result=ok");
	h_assert_fields_only(line, "level=info", "event=resolve",
	    "upstream=api", "name=api.test", "result=ok",
	    h_strf("addrs=127.0.0.1:%s", port));
	/* Clients are turned away until half_open, then relayed. */
	until = h_now_ms() + 3 * H_WAIT_MS;
	while (!roundtrip(lis))
		h_assert(h_now_ms() < until,
		    "never relayed after the name "
		    "appeared");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=state", "upstream=api",
	    "to=closed");
	h_assert(roundtrip(lis), "the closed circuit does not relay");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The name moves from 127.0.0.1 to 127.0.0.2 (same port): new clients go
 * to the new server while a relay open to the old one keeps flowing. Then
 * the name has both addresses: connects alternate between them.
 */
START_TEST(dns_name_moves)
{
	struct h_backend *a = h_backend(H_ECHO), *b;
	const char *lis = h_free_addr4(), *admin = h_free_addr4(), *port;
	const char *line;
	struct h_daemon *d;
	struct dns *dns;
	char buf[8];
	size_t mark;
	unsigned i;
	int fd;

	port = h_port_of(h_backend_addr(a));
	b = h_backend_new_ip4(H_ECHO, AF_INET, 0x7f000002, atoi(port));
	if ((dns = dns_start("127.0.0.1 api.test\n")) == NULL)
		h_skip("dnsmasq is not installed (Debian: dnsmasq-base)");
	d = h_daemon_start(
	    dns_config(dns, admin, lis, h_strf("api.test:%s", port), ""));
	line = h_expect_log(d, H_WAIT_MS, "event=resolve", "result=ok");
	h_assert_fields(line, h_strf("addrs=127.0.0.1:%s", port));

	/* A relay to the old server, left open. */
	fd = h_connect_ok(lis);
	h_assert(h_send_all(fd, "one\n", 4, H_WAIT_MS) == 0 &&
		h_recv_exact(fd, buf, 4, H_WAIT_MS) == H_OUT_DATA,
	    "no echo from the first server");
	h_assert(h_backend_accepted(a) == 1, "the first server was not used");

	mark = h_log_mark(d);
	dns_hosts(dns, "127.0.0.2 api.test\n");
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=resolve",
	    "result=ok");
	h_assert_fields(line, "name=api.test",
	    h_strf("addrs=127.0.0.2:%s", port));
	h_assert(roundtrip(lis), "no relay to the new server");
	h_assert(h_backend_accepted(b) == 1 && h_backend_accepted(a) == 1,
	    "a new client went to %s, not to the new server",
	    h_backend_accepted(a) > 1 ? "the old server" : "nowhere");
	/* The open relay is untouched. */
	h_assert(h_echo_on(fd, "two\n", H_WAIT_MS),
	    "the relay open to the old server stopped flowing");
	close(fd);

	/* Two addresses: used in rotation. */
	mark = h_log_mark(d);
	dns_hosts(dns, "127.0.0.1 api.test\n127.0.0.2 api.test\n");
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=resolve",
	    "result=ok");
	h_assert_fields(line,
	    h_strf("addrs=127.0.0.1:%s,127.0.0.2:%s", port, port));
	for (i = 0; i < 4; i++)
		h_assert(roundtrip(lis), "connect %u was not relayed", i);
	h_assert(h_backend_accepted(a) == 3 && h_backend_accepted(b) == 3,
	    "4 connects over two addresses: %u and %u more, not 2 and 2",
	    h_backend_accepted(a) - 1, h_backend_accepted(b) - 1);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The DNS server goes away: the lookup fails, result=error is logged with
 * the addresses kept, resolve_errors_total counts it, and clients are
 * still relayed to the last good address.
 */
START_TEST(dns_server_gone_keeps_last_good)
{
	struct h_backend *a = h_backend(H_ECHO);
	const char *lis = h_free_addr4(), *admin = h_free_addr4(), *port;
	const char *line, *body;
	struct h_daemon *d;
	struct dns *dns;
	size_t mark;

	if ((dns = dns_start("127.0.0.1 api.test\n")) == NULL)
		h_skip("dnsmasq is not installed (Debian: dnsmasq-base)");
	port = h_port_of(h_backend_addr(a));
	d = h_daemon_start(
	    dns_config(dns, admin, lis, h_strf("api.test:%s", port), ""));
	h_expect_log(d, H_WAIT_MS, "event=resolve", "result=ok");
	h_assert(roundtrip(lis), "no relay while DNS works");

	mark = h_log_mark(d);
	dns_stop(dns);
	/* evdns gives up after two tries of 2 s each. */
	line = h_expect_log_after(d, mark, 3 * H_WAIT_MS, "event=resolve",
	    "result=error");
	h_assert_fields_only(line, "level=warning", "event=resolve",
	    "upstream=api", "name=api.test", "result=error",
	    "error=", h_strf("kept=127.0.0.1:%s", port));
	h_assert(roundtrip(lis), "the last good address was not kept");
	h_assert(h_backend_accepted(a) == 2,
	    "the second client went elsewhere");
	if ((body = admin_get(admin, "/stats/api")) != NULL) {
		h_assert(strstr(body, "\"resolve_errors_total\":0") == NULL &&
			strstr(body, "\"resolve_errors_total\":") != NULL,
		    "STATS does not count the failed lookup: %s", body);
		body = admin_get(admin, "/metrics");
		h_assert(strstr(body,
			     "circuitproxy_upstream_resolve_errors_total{"
			     "upstream=\"api\"} 0") == NULL &&
			strstr(body,
			    "circuitproxy_upstream_resolve_errors_total{"
			    "upstream=\"api\"} ") != NULL,
		    "the metric does not count the failed lookup");
	} else
		h_skip_note(H_WHERE, "curl missing: STATS not read");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A reload that points the upstream at another name: it is looked up at
 * once, the old addresses serve until its answer, and new clients then go
 * to the new name's server.
 */
START_TEST(dns_reload_new_name)
{
	struct h_backend *a = h_backend(H_ECHO), *b;
	const char *lis = h_free_addr4(), *admin = h_free_addr4(), *port;
	const char *line;
	struct h_daemon *d;
	struct dns *dns;
	size_t mark;

	port = h_port_of(h_backend_addr(a));
	b = h_backend_new_ip4(H_ECHO, AF_INET, 0x7f000002, atoi(port));
	if ((dns = dns_start("127.0.0.1 api.test\n127.0.0.2 new.test\n")) ==
	    NULL)
		h_skip("dnsmasq is not installed (Debian: dnsmasq-base)");
	d = h_daemon_start(
	    dns_config(dns, admin, lis, h_strf("api.test:%s", port), ""));
	h_expect_log(d, H_WAIT_MS, "event=resolve", "name=api.test",
	    "result=ok");
	h_assert(roundtrip(lis), "no relay to api.test");
	h_assert(h_backend_accepted(a) == 1, "api.test's server was not used");

	mark = h_reload(d,
	    dns_config(dns, admin, lis, h_strf("new.test:%s", port), ""));
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=resolve",
	    "name=new.test", "result=ok");
	h_assert_fields(line, "upstream=api",
	    h_strf("addrs=127.0.0.2:%s", port));
	h_assert(roundtrip(lis), "no relay after the reload");
	h_assert(h_backend_accepted(b) == 1 && h_backend_accepted(a) == 1,
	    "after the reload a client went to the old name's server");
	h_daemon_stop_ok(d);
}
END_TEST

/* The stories, one test case each. */
static Suite *
dns_suite(void)
{
	Suite *s = suite_create("dns");

	H_TEST(s, dns_name_appears);
	H_TEST(s, dns_name_moves);
	H_TEST(s, dns_server_gone_keeps_last_good);
	H_TEST(s, dns_reload_new_name);
	return s;
}

H_MAIN(dns_suite)
