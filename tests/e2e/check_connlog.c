/*
 * End-to-end stories of the connection log (SPEC.md 5, event=conn) and of
 * the PROXY protocol header (SPEC.md 8, send_proxy), run on every relay
 * path (see h_main_modes). Each end= of event=conn comes from a real
 * scenario; its bytes and durations are checked against what the client
 * sent, got and measured. The PROXY header is checked by real servers that
 * parse it: nginx (proxy_protocol, logging $proxy_protocol_addr) and
 * HAProxy (accept-proxy, logging the client it was told of), for both
 * versions and both address families, and by a scripted server for what
 * probes and unix clients send.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* The [global] section of these stories. */
static const char *
global_section(void)
{
	return "[global]\n"
	       "log_level = debug\n"
	       "workers = 1\n"
	       "shutdown_timeout = 2s\n";
}

/* The event=conn line of a client, parsed; fails if it does not come. */
static const char *
conn_line(struct h_daemon *d, const char *client, struct h_fields *f)
{
	const char *line = h_expect_log(d, H_WAIT_MS, "event=conn",
	    h_strf("client=%s", client));

	h_assert(h_fields_parse(line, f), "not logfmt: %s", line);
	return line;
}

/* A numeric field of a parsed line. */
static double
field_num(const struct h_fields *f, const char *key)
{
	const char *v = h_field(f, key);
	char *end;
	double x;

	h_assert(v != NULL, "no %s=", key);
	x = strtod(v, &end);
	h_assert(end != v && *end == '\0', "%s=%s is not a number", key, v);
	return x;
}

/* Close a client so that the daemon sees a reset. */
static void
close_rst(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/*
 * A client that talks, waits and hangs up: one line, end=done, every
 * field of SPEC 5 and no other, the bytes each way as the client counted
 * them, the duration within what the client measured.
 */
START_TEST(conn_done)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_config_api("debug", lis,
	    h_backend_addr(srv), "log_connections = yes\n"));
	char msg[3000], back[3000], *client, *rest;
	uint64_t t0, t1;
	struct h_fields f;
	const char *line;
	size_t len;
	int fd;

	memset(msg, 'q', sizeof(msg));
	t0 = h_now_ms();
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	h_assert(h_send_all(fd, msg, sizeof(msg), H_WAIT_MS) == 0, "send");
	h_assert(h_recv_exact(fd, back, sizeof(back), H_WAIT_MS) == H_OUT_DATA,
	    "echo");
	/* A pause the duration must show. */
	h_assert(h_next_event(fd, 300) == H_OUT_TIMEOUT, "nothing more");
	shutdown(fd, SHUT_WR);
	h_assert(h_recv_all(fd, &rest, &len, H_WAIT_MS) == H_OUT_EOF &&
		len == 0,
	    "the relay's end");
	close(fd);
	t1 = h_now_ms();
	line = conn_line(d, client, &f);
	h_assert_fields_only(line, "level=info", "event=conn", "upstream=api",
	    h_strf("server=%s", h_backend_addr(srv)),
	    h_strf("client=%s", client), "end=done", "connect_ms=#*.#",
	    "duration_ms=#*", "bytes_in=3000", "bytes_out=3000", "tries=1");
	h_assert_between(field_num(&f, "duration_ms"), 300, t1 - t0 + 1,
	    "duration_ms");
	h_assert_between(field_num(&f, "connect_ms"), 0, t1 - t0 + 1,
	    "connect_ms");
	h_daemon_stop_ok(d);
}
END_TEST

/* Without log_connections, no event=conn line (the debug close shows). */
START_TEST(conn_off_by_default)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("debug", lis, h_backend_addr(srv), ""));
	char *client;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	h_assert(h_echo_roundtrip(lis, "ping", H_WAIT_MS), "echo");
	close(fd);
	h_expect_log(d, H_WAIT_MS, "event=close", h_strf("client=%s", client));
	h_assert(h_count_log(d, "event=conn") == 0, "an event=conn line");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * How a relay ends, one row each: the server, what the client does, and
 * what its event=conn line says (duration_ms checked where lo >= 0).
 * client_reset: a client that resets in the middle of a relay.
 * server_reset: a server that greets, then resets.
 * idle_timeout: a relay with nothing to say for idle_timeout.
 */
enum conn_client { CONN_ECHO_THEN_RST, CONN_BANNER_THEN_RST, CONN_WAIT_EOF };
static const struct conn_end_row {
	const char *name;
	enum h_kind server;
	const char *keys;
	enum conn_client client;
	const char *want[5];
	int lo, hi; /* duration_ms bounds; lo < 0: not checked */
} conn_end_rows[] = {
	{ "conn_client_reset", H_ECHO, "", CONN_ECHO_THEN_RST,
	    { "end=client_reset", "bytes_in=10", "bytes_out=10", "tries=1",
		"connect_ms=#*.#" },
	    -1, 0 },
	{ "conn_server_reset", H_LATE_RST, "", CONN_BANNER_THEN_RST,
	    { "end=server_reset", "bytes_in=0", "bytes_out=6", "tries=1" },
	    H_LATE_RST_MS - 50, H_WAIT_MS },
	{ "conn_idle_timeout", H_SILENT, "idle_timeout = 300ms\n",
	    CONN_WAIT_EOF, { "end=idle_timeout", "bytes_in=0", "bytes_out=0" },
	    300, H_WAIT_MS },
};

START_TEST(conn_end_story)
{
	const struct conn_end_row *row = &conn_end_rows[_i];
	struct h_backend *srv = h_backend(row->server);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("debug", lis, h_backend_addr(srv),
		h_strf("log_connections = yes\n%s", row->keys)));
	struct h_fields f;
	char back[10], *client;
	int fd;

	if (row->client == CONN_BANNER_THEN_RST)
		h_backend_set_banner(srv, "hello\n");
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	switch (row->client) {
	case CONN_ECHO_THEN_RST:
		h_assert(h_send_all(fd, "0123456789", 10, H_WAIT_MS) == 0,
		    "send");
		h_assert(h_recv_exact(fd, back, 10, H_WAIT_MS) == H_OUT_DATA,
		    "echo");
		close_rst(fd);
		break;
	case CONN_BANNER_THEN_RST:
		h_assert(h_recv_exact(fd, back, 6, H_WAIT_MS) == H_OUT_DATA,
		    "the banner");
		h_assert(h_next_event(fd, H_WAIT_MS) == H_OUT_RESET,
		    "the reset");
		close(fd);
		break;
	case CONN_WAIT_EOF:
		h_assert(h_next_event(fd, H_WAIT_MS) == H_OUT_EOF,
		    "closed when idle");
		close(fd);
		break;
	}
	h_assert_fields(conn_line(d, client, &f), row->want[0], row->want[1],
	    row->want[2], row->want[3], row->want[4]);
	if (row->lo >= 0)
		h_assert_between(field_num(&f, "duration_ms"), row->lo, row->hi,
		    "duration_ms");
	h_daemon_stop_ok(d);
}
END_TEST

/* A relay still open when shutdown_timeout runs out: end=shutdown. */
START_TEST(conn_shutdown)
{
	struct h_backend *srv = h_backend(H_SILENT);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("[global]\n"
						   "workers = 1\n"
						   "shutdown_timeout = 300ms\n"
						   "[upstream:api]\n"
						   "listen = %s\n"
						   "server = %s\n"
						   "log_connections = yes\n",
	    lis, h_backend_addr(srv)));
	struct h_fields f;
	char *client;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	h_assert(h_backend_wait_active(srv, 1, H_WAIT_MS), "relayed");
	h_daemon_stop_ok(d);
	h_assert(h_next_event(fd, H_WAIT_MS) == H_OUT_RESET, "reset at stop");
	close(fd);
	h_assert_fields(conn_line(d, client, &f), "end=shutdown", "tries=1");
	h_assert_between(field_num(&f, "duration_ms"), 300, H_STOP_MS,
	    "duration_ms");
}
END_TEST

/*
 * A refused connect: end=connect_fail, never connected (connect_ms=-1).
 * It opens the circuit (failure_threshold = 1): the next client gets the
 * http503 reply, end=rejected state=open, no server tried, and bytes_out
 * the reply's length.
 */
START_TEST(conn_connect_fail_then_rejected)
{
	struct h_backend *srv = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("debug", lis, h_backend_addr(srv),
		"log_connections = yes\nfailure_threshold = 1\n"
		"recovery_timeout = 60s\nreject = http503\n"));
	struct h_fields f;
	char *client, *reply;
	size_t len;
	int fd;

	/* A reset that may come before the connect is seen to finish. */
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_assert_fields(conn_line(d, client, &f), "end=connect_fail",
	    "connect_ms=-1", "tries=1", "bytes_in=0", "bytes_out=0",
	    h_strf("server=%s", h_backend_addr(srv)), "!state");
	h_expect_log(d, H_WAIT_MS, "event=state", "to=open");

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	h_assert(h_recv_all(fd, &reply, &len, H_WAIT_MS) == H_OUT_EOF,
	    "the 503 reply");
	h_assert(strncmp(reply, "HTTP/1.1 503", 12) == 0, "reply: %s", reply);
	close(fd);
	h_assert_fields(conn_line(d, client, &f), "end=rejected", "state=open",
	    "server=-", "tries=0", "connect_ms=-1", "bytes_in=0",
	    h_strf("bytes_out=%zu", len));
	h_daemon_stop_ok(d);
}
END_TEST

/* A client over max_connections: end=overload, no server tried. */
START_TEST(conn_overload)
{
	struct h_backend *srv = h_backend(H_SILENT);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("debug", lis, h_backend_addr(srv),
		"log_connections = yes\nmax_connections = 1\n"));
	struct h_fields f;
	char *first, *second;
	int fd1;

	fd1 = h_connect_name(lis, H_WAIT_MS, &first);
	h_assert(fd1 != -1, "connect: %s", strerror(errno));
	h_assert(h_backend_wait_active(srv, 1, H_WAIT_MS), "relayed");
	second = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_assert_fields(conn_line(d, second, &f), "end=overload", "tries=0",
	    "server=-", "connect_ms=-1");
	close(fd1);
	h_assert_fields(conn_line(d, first, &f), "end=done", "tries=1");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A pool's client whose first member refuses is retried on the next: one
 * line, naming the pool and the member that served it, tries=2 (the
 * pool's log_connections decides; its members' own say no).
 */
START_TEST(conn_pool_retry)
{
	struct h_backend *dead = h_backend(H_REFUSE);
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s"
						   "[defaults]\n"
						   "%s"
						   "[upstream:a]\n"
						   "server = %s\n"
						   "[upstream:b]\n"
						   "server = %s\n"
						   "[pool:web]\n"
						   "listen = %s\n"
						   "members = a b\n"
						   "balance = first\n"
						   "retries = 1\n"
						   "log_connections = yes\n",
	    global_section(), h_splice_keys(), h_backend_addr(dead),
	    h_backend_addr(srv), lis));
	struct h_fields f;
	char back[4], *client;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	h_assert(h_send_all(fd, "ping", 4, H_WAIT_MS) == 0, "send");
	h_assert(h_recv_exact(fd, back, 4, H_WAIT_MS) == H_OUT_DATA, "echo");
	close(fd);
	h_assert_fields_only(conn_line(d, client, &f), "level=info",
	    "event=conn", "upstream=b", "pool=web",
	    h_strf("server=%s", h_backend_addr(srv)),
	    h_strf("client=%s", client), "end=done", "connect_ms=#*.#",
	    "duration_ms=#*", "bytes_in=4", "bytes_out=4", "tries=2");
	h_assert(h_count_log(d, "event=conn") == 1, "one line per client");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A pool whose only member's circuit is open turns its client away: the
 * line names the pool, no member (upstream=-) and no server.
 */
START_TEST(conn_pool_rejected)
{
	struct h_backend *dead = h_backend(H_REFUSE);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("%s"
						   "[upstream:a]\n"
						   "server = %s\n"
						   "failure_threshold = 1\n"
						   "recovery_timeout = 60s\n"
						   "[pool:web]\n"
						   "listen = %s\n"
						   "members = a\n"
						   "retries = 0\n"
						   "log_connections = yes\n",
	    global_section(), h_backend_addr(dead), lis));
	struct h_fields f;
	char *client;

	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_assert_fields(conn_line(d, client, &f), "upstream=a", "pool=web",
	    "end=connect_fail", "tries=1");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=a", "to=open");
	client = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_assert_fields(conn_line(d, client, &f), "upstream=-", "pool=web",
	    "server=-", "end=rejected", "state=open", "tries=0",
	    "connect_ms=-1");
	h_daemon_stop_ok(d);
}
END_TEST

/* A server program of the test's own (nginx, haproxy), killed at its end. */
struct ext {
	const char *name;
	pid_t pid;
	char *out; /* its stdout and stderr */
};

/* Stop a server program: SIGTERM, then SIGKILL if it lingers. */
static void
ext_stop(void *arg)
{
	struct ext *e = arg;
	uint64_t deadline = h_now_ms() + H_STOP_MS;
	int st;

	if (e->pid <= 0)
		return;
	kill(e->pid, SIGTERM);
	while (waitpid(e->pid, &st, WNOHANG) == 0) {
		if (h_now_ms() > deadline) {
			kill(e->pid, SIGKILL);
			waitpid(e->pid, &st, 0);
			break;
		}
		poll(NULL, 0, 10);
	}
	e->pid = -1;
}

/* Start a server program, its output to a file; it dies with the test. */
static struct ext *
ext_start(const char *name, const char *const *argv)
{
	struct ext *e = h_track(calloc(1, sizeof(*e)));
	int fd;

	e->name = name;
	e->out = h_path(h_strf("%s.out", name));
	fd = open(e->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	h_assert(fd != -1, "%s: %s", e->out, strerror(errno));
	e->pid = fork();
	h_assert(e->pid != -1, "fork: %s", strerror(errno));
	if (e->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fd);
	h_defer(ext_stop, e);
	return e;
}

/* Wait until addr accepts connections (the program is up), within ms. */
static void
ext_wait_port(struct ext *e, const char *addr, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	int fd, st;

	for (;;) {
		if ((fd = h_connect(addr, 200)) != -1) {
			close(fd);
			return;
		}
		h_assert(waitpid(e->pid, &st, WNOHANG) == 0,
		    "%s exited before listening on %s: see %s", e->name, addr,
		    e->out);
		h_assert(h_now_ms() < deadline, "%s is not listening on %s",
		    e->name, addr);
		poll(NULL, 0, 20);
	}
}

/* "[::1]:P" as a server prints a client: "::1:P" (IPv4 unchanged). */
static const char *
addr_plain(const char *addr)
{
	const char *end;

	if (addr[0] != '[' || (end = strchr(addr, ']')) == NULL)
		return addr;
	return h_strf("%.*s%s", (int)(end - addr - 1), addr + 1, end + 1);
}

/*
 * GET / through lis: the body of the answer (the server's view of the
 * client); *client is the client's address as the daemon logs it.
 */
static const char *
http_get_body(const char *lis, char **client)
{
	static const char req[] = "GET / HTTP/1.0\r\nHost: t\r\n\r\n";
	enum h_outcome out;
	char *got, *body;
	size_t len;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, client);
	h_assert(fd != -1, "connect to %s", lis);
	h_assert(h_send_all(fd, req, sizeof(req) - 1, H_WAIT_MS) == 0, "send");
	out = h_recv_all(fd, &got, &len, H_WAIT_MS);
	close(fd);
	h_assert(out == H_OUT_EOF, "the answer through %s: %s", lis,
	    h_outcome_name(out));
	body = strstr(got, "\r\n\r\n");
	h_assert(body != NULL && strncmp(got, "HTTP/1.1 200", 12) == 0,
	    "answer: %s", got);
	return body + 4;
}

/* Three upstreams to a server: IPv4, IPv6 and unix clients, send_proxy. */
static const char *
config_proxy(const char *version, const char *lis4, const char *srv4,
    const char *lis6, const char *srv6, const char *lisu)
{
	const char *splice = h_splice_keys();

	return h_strf("%s"
		      "[defaults]\n"
		      "send_proxy = %s\n"
		      "log_connections = yes\n"
		      "%s"
		      "[upstream:api4]\n"
		      "listen = %s\n"
		      "server = %s\n"
		      "[upstream:api6]\n"
		      "listen = %s\n"
		      "server = %s\n"
		      "[upstream:apiu]\n"
		      "listen = %s\n"
		      "server = %s\n",
	    global_section(), version, splice, lis4, srv4, lis6, srv6, lisu,
	    srv4);
}

/*
 * nginx with `listen ... proxy_protocol` answers and logs
 * $proxy_protocol_addr:$proxy_protocol_port: the client's address, IPv4
 * and IPv6, as circuitproxyd told it, and the address the client reached
 * ($proxy_protocol_server_addr:port: the listener's, and on a wildcard
 * listener the one the client connected to); a unix client's header
 * (UNKNOWN, LOCAL) is accepted and names no address.
 */
static void
proxy_nginx(const char *version)
{
	const char *nginx = h_client("nginx");
	const char *srv4 = h_free_addr(AF_INET), *srv6 = h_free_addr(AF_INET6);
	const char *lis4 = h_free_addr(AF_INET), *lis6 = h_free_addr(AF_INET6);
	const char *lisu = h_free_addr(AF_UNIX);
	const char *portw = h_port_of(h_free_addr(AF_INET));
	const char *dir = h_path("nginx"), *conf, *alog;
	const char *argv[8];
	struct h_daemon *d;
	struct h_fields f;
	struct ext *e;
	char *client;
	const char *body;

	if (nginx == NULL) {
		h_skip("nginx is not installed (Debian package nginx-light)");
	}
	h_assert(mkdir(dir, 0755) == 0, "mkdir %s", dir);
	alog = h_strf("%s/access.log", dir);
	conf = h_write_file("nginx.conf",
	    h_strf("worker_processes 1;\n"
		   "daemon off;\n"
		   "master_process off;\n"
		   "pid %s/nginx.pid;\n"
		   "error_log %s/error.log warn;\n"
		   "events { worker_connections 64; }\n"
		   "http {\n"
		   "  log_format pp 'pp=$proxy_protocol_addr:"
		   "$proxy_protocol_port remote=$remote_addr';\n"
		   "  access_log %s pp;\n"
		   "  client_body_temp_path %s/body;\n"
		   "  proxy_temp_path %s/proxy;\n"
		   "  fastcgi_temp_path %s/fastcgi;\n"
		   "  uwsgi_temp_path %s/uwsgi;\n"
		   "  scgi_temp_path %s/scgi;\n"
		   "  server {\n"
		   "    listen %s proxy_protocol;\n"
		   "    listen %s proxy_protocol;\n"
		   "    location / { return 200 "
		   "\"pp=$proxy_protocol_addr:$proxy_protocol_port "
		   "dst=$proxy_protocol_server_addr:"
		   "$proxy_protocol_server_port\\n\"; }\n"
		   "  }\n"
		   "}\n",
		dir, dir, alog, dir, dir, dir, dir, dir, srv4, srv6));
	argv[0] = nginx;
	argv[1] = "-p";
	argv[2] = dir;
	argv[3] = "-e";
	argv[4] = h_strf("%s/error.log", dir);
	argv[5] = "-c";
	argv[6] = conf;
	argv[7] = NULL;
	e = ext_start("nginx", argv);
	ext_wait_port(e, srv4, H_READY_MS);
	ext_wait_port(e, srv6, H_READY_MS);
	d = h_daemon_start(
	    h_strf("%s[upstream:apiw]\nlisten = *:%s\nserver = %s\n",
		config_proxy(version, lis4, srv4, lis6, srv6, lisu), portw,
		srv4));

	body = http_get_body(lis4, &client);
	h_assert(strcmp(body, h_strf("pp=%s dst=%s\n", client, lis4)) == 0,
	    "nginx saw %s, not the IPv4 client %s to %s", body, client, lis4);
	h_assert(h_file_has_within(alog,
		     h_strf("pp=%s remote=127.0.0.1", client), H_WAIT_MS),
	    "nginx did not log pp=%s", client);
	h_assert_fields(conn_line(d, client, &f), "upstream=api4", "end=done");

	body = http_get_body(lis6, &client);
	h_assert(strcmp(body,
		     h_strf("pp=%s dst=%s\n", addr_plain(client),
			 addr_plain(lis6))) == 0,
	    "nginx saw %s, not the IPv6 client %s to %s", body, client, lis6);
	h_assert(h_file_has_within(alog,
		     h_strf("pp=%s remote=::1", addr_plain(client)), H_WAIT_MS),
	    "nginx did not log pp=%s", addr_plain(client));

	body = http_get_body(lisu, &client);
	h_assert(strcmp(body, "pp=: dst=:\n") == 0,
	    "a unix client must name no address to nginx: %s", body);

	/* A wildcard listener: the address the client reached. */
	body = http_get_body(h_strf("127.0.0.1:%s", portw), &client);
	h_assert(strcmp(body,
		     h_strf("pp=%s dst=127.0.0.1:%s\n", client, portw)) == 0,
	    "nginx saw %s, not the client %s to 127.0.0.1:%s", body, client,
	    portw);
	h_daemon_stop_ok(d);
}

START_TEST(proxy_nginx_v1)
{
	proxy_nginx("v1");
}
END_TEST

START_TEST(proxy_nginx_v2)
{
	proxy_nginx("v2");
}
END_TEST

/*
 * HAProxy with `bind ... accept-proxy` answers and logs %ci:%cp: the
 * client circuitproxyd named, IPv4 and IPv6; a unix client's header
 * (UNKNOWN, LOCAL) is accepted and HAProxy sees the connection's own
 * address.
 */
static void
proxy_haproxy(const char *version)
{
	const char *haproxy = h_client("haproxy");
	const char *srv4 = h_free_addr(AF_INET), *srv6 = h_free_addr(AF_INET6);
	const char *lis4 = h_free_addr(AF_INET), *lis6 = h_free_addr(AF_INET6);
	const char *lisu = h_free_addr(AF_UNIX);
	const char *conf, *argv[5], *body;
	struct h_daemon *d;
	struct h_fields f;
	struct ext *e;
	char *client;

	if (haproxy == NULL) {
		h_skip("haproxy is not installed (Debian package haproxy)");
	}
	conf = h_write_file("haproxy.cfg",
	    h_strf("global\n"
		   "  log stdout format raw local0\n"
		   "defaults\n"
		   "  mode http\n"
		   "  log global\n"
		   "  timeout connect 5s\n"
		   "  timeout client 10s\n"
		   "  timeout server 10s\n"
		   "frontend fe\n"
		   "  bind %s accept-proxy\n"
		   "  bind %s accept-proxy\n"
		   "  log-format \"pp ci=%%ci:%%cp\"\n"
		   "  http-request return status 200 content-type text/plain "
		   "lf-string \"src=%%[src]:%%[src_port]\\n\"\n",
		srv4, srv6));
	argv[0] = haproxy;
	argv[1] = "-db";
	argv[2] = "-f";
	argv[3] = conf;
	argv[4] = NULL;
	e = ext_start("haproxy", argv);
	ext_wait_port(e, srv4, H_READY_MS);
	ext_wait_port(e, srv6, H_READY_MS);
	d = h_daemon_start(config_proxy(version, lis4, srv4, lis6, srv6, lisu));

	body = http_get_body(lis4, &client);
	h_assert(strcmp(body, h_strf("src=%s\n", client)) == 0,
	    "HAProxy saw %s, not the IPv4 client %s", body, client);
	h_assert(h_file_has_within(e->out, h_strf("pp ci=%s\n", client),
		     H_WAIT_MS),
	    "HAProxy did not log ci=%s", client);
	h_assert_fields(conn_line(d, client, &f), "upstream=api4", "end=done");

	body = http_get_body(lis6, &client);
	h_assert(strcmp(body, h_strf("src=%s\n", addr_plain(client))) == 0,
	    "HAProxy saw %s, not the IPv6 client %s", body, client);
	h_assert(h_file_has_within(e->out,
		     h_strf("pp ci=%s\n", addr_plain(client)), H_WAIT_MS),
	    "HAProxy did not log ci=%s", addr_plain(client));

	body = http_get_body(lisu, &client);
	h_assert(strncmp(body, "src=127.0.0.1:", 14) == 0,
	    "a unix client: HAProxy should see the connection's own address, "
	    "saw %s",
	    body);
	h_daemon_stop_ok(d);
}

START_TEST(proxy_haproxy_v1)
{
	proxy_haproxy("v1");
}
END_TEST

START_TEST(proxy_haproxy_v2)
{
	proxy_haproxy("v2");
}
END_TEST

/*
 * A recovery probe to a server that requires the header: the server
 * reads exactly v2 LOCAL (or v1 UNKNOWN) and then the probe's FIN.
 */
static void
proxy_probe(const char *version, const char *want, size_t wlen)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	const char *lis = h_free_addr4(), *srv;
	struct h_daemon *d;
	struct pollfd pfd;
	char buf[256];
	size_t got = 0;
	uint64_t deadline;
	ssize_t n;
	int lfd, cfd;

	/* Bound but not listening: refused, until listen(). */
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	h_assert(lfd != -1, "socket");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	h_assert(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind");
	h_assert(getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0, "name");
	srv = h_strf("127.0.0.1:%d", ntohs(sin.sin_port));
	d = h_daemon_start(h_config_api("debug", lis, srv,
	    h_strf("send_proxy = %s\nfailure_threshold = 1\n"
		   "recovery_timeout = 200ms\nrecovery_probe = connect\n",
		version)));
	h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=state", "to=open");
	h_assert(listen(lfd, 8) == 0, "listen");
	pfd.fd = lfd;
	pfd.events = POLLIN;
	h_assert(poll(&pfd, 1, H_WAIT_MS) == 1, "no probe came");
	cfd = accept(lfd, NULL, NULL);
	h_assert(cfd != -1, "accept");
	deadline = h_now_ms() + H_WAIT_MS;
	for (;;) {
		pfd.fd = cfd;
		h_assert(h_now_ms() < deadline, "the probe did not close");
		if (poll(&pfd, 1, 100) != 1)
			continue;
		n = read(cfd, buf + got, sizeof(buf) - got);
		h_assert(n >= 0, "read: %s", strerror(errno));
		if (n == 0)
			break;
		got += (size_t)n;
	}
	h_assert(got == wlen && memcmp(buf, want, wlen) == 0,
	    "the probe sent %zu bytes, not the %zu of its header", got, wlen);
	h_expect_log(d, H_WAIT_MS, "event=probe", "result=ok");
	close(cfd);
	close(lfd);
	h_daemon_stop_ok(d);
}

START_TEST(proxy_probe_v2_local)
{
	static const char local[16] = "\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

	proxy_probe("v2", local, sizeof(local));
}
END_TEST

START_TEST(proxy_probe_v1_unknown)
{
	proxy_probe("v1", "PROXY UNKNOWN\r\n", 15);
}
END_TEST

/* Read exactly len bytes from fd within ms; false if they do not come. */
static bool
read_exact(int fd, char *buf, size_t len, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		if (h_now_ms() >= deadline)
			return false;
		if (poll(&pfd, 1, 50) != 1)
			continue;
		if ((n = read(fd, buf + got, len - got)) <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

/* Accept a connection on lfd within ms, or fail. */
static int
accept_within(int lfd, int ms)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	int fd;

	h_assert(poll(&pfd, 1, ms) == 1, "the daemon did not connect");
	fd = accept(lfd, NULL, NULL);
	h_assert(fd != -1, "accept: %s", strerror(errno));
	return fd;
}

/* The v1 header a client of lis should be announced with. */
static const char *
v1_header(const char *client, const char *lis)
{
	const char *cp = strrchr(client, ':'), *lp = strrchr(lis, ':');

	return h_strf("PROXY TCP4 %.*s %.*s %s %s\r\n", (int)(cp - client),
	    client, (int)(lp - lis), lis, cp + 1, lp + 1);
}

/* The server's first bytes are the v1 header hdr, then the client's req. */
static void
expect_header_then(int sfd, const char *hdr, const char *req, size_t rlen)
{
	size_t hlen = strlen(hdr);
	char buf[512];

	h_assert(hlen + rlen <= sizeof(buf), "too long");
	h_assert(read_exact(sfd, buf, hlen + rlen, H_WAIT_MS),
	    "the header and the request did not come");
	h_assert(memcmp(buf, hdr, hlen) == 0 &&
		memcmp(buf + hlen, req, rlen) == 0,
	    "got [%.*s], not the header then the request", (int)(hlen + rlen),
	    buf);
}

/*
 * send_proxy with a scripted server, in both orders of speaking. A client
 * that talks first (HTTP, redis): the header comes first, then its bytes,
 * nothing else between or before (they may share the header's segment). A
 * server that speaks first (SMTP, MySQL): it has the header at once, with
 * no client byte to wait for, and its banner reaches the client.
 */
START_TEST(proxy_header_first_both_orders)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	const char *lis = h_free_addr4(), *srv, *hdr;
	static const char req[] = "GET / HTTP/1.0\r\n\r\n";
	static const char banner[] = "220 ready\r\n";
	struct h_daemon *d;
	char buf[256], *client;
	int lfd, sfd, fd;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	h_assert(lfd != -1, "socket");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	h_assert(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind");
	h_assert(listen(lfd, 8) == 0, "listen");
	h_assert(getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0, "name");
	srv = h_strf("127.0.0.1:%d", ntohs(sin.sin_port));
	d = h_daemon_start(
	    h_config_api("debug", lis, srv, "send_proxy = v1\n"));

	/* The client talks first: its request right after connecting. */
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	h_assert(h_send_all(fd, req, sizeof(req) - 1, H_WAIT_MS) == 0, "send");
	sfd = accept_within(lfd, H_WAIT_MS);
	expect_header_then(sfd, v1_header(client, lis), req, sizeof(req) - 1);
	close(sfd);
	close(fd);

	/* The server speaks first: the header comes with nothing sent. */
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	sfd = accept_within(lfd, H_WAIT_MS);
	hdr = v1_header(client, lis);
	h_assert(read_exact(sfd, buf, strlen(hdr), H_WAIT_MS),
	    "no header while the client waits for the banner");
	h_assert(memcmp(buf, hdr, strlen(hdr)) == 0, "got [%.*s], not [%s]",
	    (int)strlen(hdr), buf, hdr);
	h_assert(h_send_all(sfd, banner, sizeof(banner) - 1, H_WAIT_MS) == 0,
	    "banner");
	h_assert(h_recv_exact(fd, buf, sizeof(banner) - 1, H_WAIT_MS) ==
		    H_OUT_DATA &&
		memcmp(buf, banner, sizeof(banner) - 1) == 0,
	    "the banner did not reach the client");
	h_assert(h_send_all(fd, "EHLO x\r\n", 8, H_WAIT_MS) == 0, "send");
	h_assert(read_exact(sfd, buf, 8, H_WAIT_MS) &&
		memcmp(buf, "EHLO x\r\n", 8) == 0,
	    "the client's reply did not follow");
	close(sfd);
	close(fd);
	close(lfd);
	h_daemon_stop_ok(d);
}
END_TEST

/* Is a connection to 127.0.0.1:port in SYN_SENT (/proc/net/tcp)? */
static bool
syn_sent_to(int port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	char line[256];
	unsigned rport, st;
	bool found = false;

	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found =
		    sscanf(line, " %*u: %*x:%*x %*x:%x %x", &rport, &st) == 2 &&
		    rport == (unsigned)port && st == 2;
	fclose(f);
	return found;
}

/*
 * A client whose request is there before its server connection is made
 * (the server's accept queue is full, so the connect waits for the SYN's
 * retransmission, a second later): the request goes in the PROXY
 * header's send, the header first, and nothing of it is lost.
 */
START_TEST(proxy_header_with_early_bytes)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	const char *lis = h_free_addr4(), *srv;
	static const char req[] = "GET /early HTTP/1.0\r\n\r\n";
	struct h_daemon *d;
	char *client;
	uint64_t deadline;
	int lfd, sfd, fd, filler;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	h_assert(lfd != -1, "socket");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	h_assert(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind");
	/* Room for one connection waiting to be accepted: the filler's. */
	h_assert(listen(lfd, 0) == 0, "listen");
	h_assert(getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0, "name");
	srv = h_strf("127.0.0.1:%d", ntohs(sin.sin_port));
	filler = h_connect(srv, H_WAIT_MS);
	h_assert(filler != -1, "filler: %s", strerror(errno));
	d = h_daemon_start(h_config_api("info", lis, srv,
	    "send_proxy = v1\nconnect_timeout = 10s\n"));
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	h_assert(h_send_all(fd, req, sizeof(req) - 1, H_WAIT_MS) == 0, "send");
	/* The daemon's SYN was dropped: the queue may take it next time. */
	deadline = h_now_ms() + (uint64_t)H_WAIT_MS;
	while (!syn_sent_to(ntohs(sin.sin_port))) {
		h_assert(h_now_ms() < deadline, "no connect to the server");
		poll(NULL, 0, 10);
	}
	close(accept_within(lfd, H_WAIT_MS));
	close(filler);
	sfd = accept_within(lfd, H_WAIT_MS);
	expect_header_then(sfd, v1_header(client, lis), req, sizeof(req) - 1);
	close(sfd);
	close(fd);
	close(lfd);
	h_daemon_stop_ok(d);
}
END_TEST

/* Clients of the burst story (fewer under valgrind), how many at once. */
#define BURST_CLIENTS 10000
#define BURST_CLIENTS_WRAPPED 2000
#define BURST_AT_ONCE 100

/*
 * One wave of the burst: n clients connect, each gets its byte echoed,
 * says goodbye and sees the relay's end; when that returns, the daemon
 * has closed every one of them, so each has its event=conn line queued.
 */
static void
burst_wave(const char *lis, unsigned n)
{
	int fds[BURST_AT_ONCE];
	char c = 'b', *rest;
	size_t len;
	unsigned i;

	for (i = 0; i < n; i++) {
		fds[i] = h_connect(lis, H_WAIT_MS);
		h_assert(fds[i] != -1, "connect: %s", strerror(errno));
		h_assert(h_send_all(fds[i], &c, 1, H_WAIT_MS) == 0, "send");
	}
	for (i = 0; i < n; i++) {
		h_assert(h_recv_exact(fds[i], &c, 1, H_WAIT_MS) == H_OUT_DATA,
		    "echo");
		shutdown(fds[i], SHUT_WR);
	}
	for (i = 0; i < n; i++) {
		h_assert(h_recv_all(fds[i], &rest, &len, H_WAIT_MS) ==
			H_OUT_EOF,
		    "the relay's end");
		close(fds[i]);
	}
}

/*
 * A burst of 10,000 clients (2,000 under valgrind) through two workers: event=conn lines are
 * written in batches (log_connections), yet every one reaches the log. A
 * client's line is there well within the documented 10 ms bound plus the
 * load's slack, without waiting for more lines to fill a batch; and the
 * lines of the last clients, still batched at SIGTERM, are written before
 * the daemon exits.
 */
START_TEST(conn_burst_all_logged)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(h_strf("[global]\n"
						   "workers = 2\n"
						   "[upstream:api]\n"
						   "listen = %s\n"
						   "server = %s\n"
						   "log_connections = yes\n",
	    lis, h_backend_addr(srv)));
	uint64_t deadline = h_now_ms() + (uint64_t)h_slow_ms(60000), t0;
	unsigned done = 0, n,
		 total = h_wrapped() ? BURST_CLIENTS_WRAPPED : BURST_CLIENTS;
	char *client;
	int fd;

	/* One client alone: its line comes without others behind it. */
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect: %s", strerror(errno));
	shutdown(fd, SHUT_WR);
	h_assert(h_next_event(fd, H_WAIT_MS) == H_OUT_EOF, "the relay's end");
	t0 = h_now_ms();
	h_expect_log(d, H_WAIT_MS, "event=conn", h_strf("client=%s", client));
	h_assert(h_now_ms() - t0 < 1000, "the line took %u ms",
	    (unsigned)(h_now_ms() - t0));
	close(fd);
	while (done < total) {
		h_assert(h_now_ms() < deadline, "only %u clients in time",
		    done);
		n = total - done < BURST_AT_ONCE ? total - done : BURST_AT_ONCE;
		burst_wave(lis, n);
		done += n;
	}
	h_daemon_stop_ok(d);
	n = h_count_log(d, "event=conn", "upstream=api", "end=done");
	h_assert(n == total + 1, "%u event=conn lines for %u clients", n,
	    total + 1);
	h_assert(h_count_log(d, "event=log_dropped") == 0, "lines dropped");
}
END_TEST

/* Build the suite. */
static Suite *
connlog_suite(void)
{
	Suite *s = suite_create("connlog");

	H_TEST(s, conn_done);
	H_TEST(s, conn_off_by_default);
	H_TEST_ROWS(s, conn_end_story, conn_end_rows);
	H_TEST(s, conn_shutdown);
	H_TEST(s, conn_connect_fail_then_rejected);
	H_TEST(s, conn_overload);
	H_TEST(s, conn_pool_retry);
	H_TEST(s, conn_pool_rejected);
	H_TEST_LONG(s, conn_burst_all_logged, 120);
	H_TEST(s, proxy_nginx_v1);
	H_TEST(s, proxy_nginx_v2);
	H_TEST(s, proxy_haproxy_v1);
	H_TEST(s, proxy_haproxy_v2);
	H_TEST(s, proxy_probe_v2_local);
	H_TEST(s, proxy_probe_v1_unknown);
	H_TEST(s, proxy_header_first_both_orders);
	H_TEST(s, proxy_header_with_early_bytes);
	return s;
}

H_MAIN_MODES(connlog_suite)
