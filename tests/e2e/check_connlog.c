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

/* One upstream "api" to server, on the current relay path, with keys. */
static const char *
config_api(const char *listen, const char *server, const char *keys)
{
	return h_strf("%s"
		      "[upstream:api]\n"
		      "listen = %s\n"
		      "server = %s\n"
		      "%s%s",
	    global_section(), listen, server,
	    strcmp(h_splice_mode(), "off") == 0 ? "splice = off\n" : "", keys);
}

/* Stop the daemon; it must exit 0. */
static void
stop_ok(struct h_daemon *d)
{
	int st = h_daemon_stop(d);

	h_assert(st == 0, "the daemon exited with %d on SIGTERM", st);
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
	struct h_daemon *d = h_daemon_start(config_api(lis,
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
	h_assert(fd != -1, "connect");
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
	stop_ok(d);
}
END_TEST

/* Without log_connections, no event=conn line (the debug close shows). */
START_TEST(conn_off_by_default)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(config_api(lis, h_backend_addr(srv), ""));
	char *client;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	h_assert(h_echo_roundtrip(lis, "ping", H_WAIT_MS), "echo");
	close(fd);
	h_expect_log(d, H_WAIT_MS, "event=close", h_strf("client=%s", client));
	h_assert(h_count_log(d, "event=conn") == 0, "an event=conn line");
	stop_ok(d);
}
END_TEST

/* A client that resets in the middle of a relay: end=client_reset. */
START_TEST(conn_client_reset)
{
	struct h_backend *srv = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis,
	    h_backend_addr(srv), "log_connections = yes\n"));
	struct h_fields f;
	char back[10], *client;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	h_assert(h_send_all(fd, "0123456789", 10, H_WAIT_MS) == 0, "send");
	h_assert(h_recv_exact(fd, back, 10, H_WAIT_MS) == H_OUT_DATA, "echo");
	close_rst(fd);
	h_assert_fields(conn_line(d, client, &f), "end=client_reset",
	    "bytes_in=10", "bytes_out=10", "tries=1", "connect_ms=#*.#");
	stop_ok(d);
}
END_TEST

/* A server that greets, then resets: end=server_reset. */
START_TEST(conn_server_reset)
{
	struct h_backend *srv = h_backend(H_LATE_RST);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis,
	    h_backend_addr(srv), "log_connections = yes\n"));
	struct h_fields f;
	char hello[6], *client;
	int fd;

	h_backend_set_banner(srv, "hello\n");
	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	h_assert(h_recv_exact(fd, hello, 6, H_WAIT_MS) == H_OUT_DATA,
	    "the banner");
	h_assert(h_next_event(fd, H_WAIT_MS) == H_OUT_RESET, "the reset");
	close(fd);
	h_assert_fields(conn_line(d, client, &f), "end=server_reset",
	    "bytes_in=0", "bytes_out=6", "tries=1");
	h_assert_between(field_num(&f, "duration_ms"), H_LATE_RST_MS - 50,
	    H_WAIT_MS, "duration_ms");
	stop_ok(d);
}
END_TEST

/* A relay with nothing to say for idle_timeout: end=idle_timeout. */
START_TEST(conn_idle_timeout)
{
	struct h_backend *srv = h_backend(H_SILENT);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis,
	    h_backend_addr(srv),
	    "log_connections = yes\nidle_timeout = 300ms\n"));
	struct h_fields f;
	char *client;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	h_assert(h_next_event(fd, H_WAIT_MS) == H_OUT_EOF, "closed when idle");
	close(fd);
	h_assert_fields(conn_line(d, client, &f), "end=idle_timeout",
	    "bytes_in=0", "bytes_out=0");
	h_assert_between(field_num(&f, "duration_ms"), 300, H_WAIT_MS,
	    "duration_ms");
	stop_ok(d);
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
	h_assert(fd != -1, "connect");
	h_assert(h_backend_wait_active(srv, 1, H_WAIT_MS), "relayed");
	stop_ok(d);
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
	struct h_daemon *d = h_daemon_start(config_api(lis,
	    h_backend_addr(srv),
	    "log_connections = yes\nfailure_threshold = 1\n"
	    "recovery_timeout = 60s\nreject = http503\n"));
	struct h_fields f;
	char *client, *reply;
	size_t len;
	int fd;

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	h_assert(h_next_event(fd, H_WAIT_MS) == H_OUT_RESET, "reset");
	close(fd);
	h_assert_fields(conn_line(d, client, &f), "end=connect_fail",
	    "connect_ms=-1", "tries=1", "bytes_in=0", "bytes_out=0",
	    h_strf("server=%s", h_backend_addr(srv)), "!state");
	h_expect_log(d, H_WAIT_MS, "event=state", "to=open");

	fd = h_connect_name(lis, H_WAIT_MS, &client);
	h_assert(fd != -1, "connect");
	h_assert(h_recv_all(fd, &reply, &len, H_WAIT_MS) == H_OUT_EOF,
	    "the 503 reply");
	h_assert(strncmp(reply, "HTTP/1.1 503", 12) == 0, "reply: %s", reply);
	close(fd);
	h_assert_fields(conn_line(d, client, &f), "end=rejected", "state=open",
	    "server=-", "tries=0", "connect_ms=-1", "bytes_in=0",
	    h_strf("bytes_out=%zu", len));
	stop_ok(d);
}
END_TEST

/* A client over max_connections: end=overload, no server tried. */
START_TEST(conn_overload)
{
	struct h_backend *srv = h_backend(H_SILENT);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(config_api(lis,
	    h_backend_addr(srv),
	    "log_connections = yes\nmax_connections = 1\n"));
	struct h_fields f;
	char *first, *second;
	int fd1, fd2;

	fd1 = h_connect_name(lis, H_WAIT_MS, &first);
	h_assert(fd1 != -1, "connect");
	h_assert(h_backend_wait_active(srv, 1, H_WAIT_MS), "relayed");
	fd2 = h_connect_name(lis, H_WAIT_MS, &second);
	h_assert(fd2 != -1, "connect");
	h_assert(h_next_event(fd2, H_WAIT_MS) == H_OUT_RESET, "reset");
	close(fd2);
	h_assert_fields(conn_line(d, second, &f), "end=overload", "tries=0",
	    "server=-", "connect_ms=-1");
	close(fd1);
	h_assert_fields(conn_line(d, first, &f), "end=done", "tries=1");
	stop_ok(d);
}
END_TEST

/* Build the suite. */
static Suite *
connlog_suite(void)
{
	Suite *s = suite_create("connlog");

	H_TEST(s, conn_done);
	H_TEST(s, conn_off_by_default);
	H_TEST(s, conn_client_reset);
	H_TEST(s, conn_server_reset);
	H_TEST(s, conn_idle_timeout);
	H_TEST(s, conn_shutdown);
	H_TEST(s, conn_connect_fail_then_rejected);
	H_TEST(s, conn_overload);
	return s;
}

/* Run the suite on every relay path. */
int
main(void)
{
	return h_main_modes(connlog_suite);
}
