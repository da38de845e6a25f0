/*
 * libFuzzer target: the admin endpoint's request handling, whole: the
 * input is sent as it is, as an HTTP request, to a real admin (admin_new on
 * a unix socket) served by evhttp in this process, with two upstreams
 * behind it and a token set. Request line, headers, path decoding, the
 * token check, routing, methods, ?for= durations, the overrides and every
 * rendering are all reached; the loop turns until the answer has come or
 * nothing more moves, then the connection is closed.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/event.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "fuzz.h"
#include "log.h"
#include "upstream.h"
#include "util.h"

/* How many turns of the loop an input may take at most. */
#define FUZZ_ADMIN_TURNS 64

static struct config *fuzz_admin_cfg;
static struct event_base *fuzz_admin_base;
static struct admin *fuzz_admin;
static struct upstream *fuzz_admin_ups[2];
static struct sockaddr_un fuzz_admin_sun;

/* The admin's view of the running upstreams. */
static struct upstream *const *
fuzz_admin_upstreams(void *arg, size_t *n)
{
	(void)arg;
	*n = 2;
	return fuzz_admin_ups;
}

/* Free it all and remove the socket file when the fuzzer exits. */
static void
fuzz_admin_cleanup(void)
{
	size_t i;

	admin_free(fuzz_admin);
	for (i = 0; i < 2; i++)
		upstream_free(fuzz_admin_ups[i]);
	event_base_free(fuzz_admin_base);
	config_free(fuzz_admin_cfg);
	unlink(fuzz_admin_sun.sun_path);
	log_close(1000);
}

/* Build the base, two upstreams and the admin once, on a fresh socket. */
static void
fuzz_admin_setup(void)
{
	char *cause = NULL, text[512];
	size_t i;

	log_init(LOG_LEVEL_ERROR, LOG_TARGET_STDERR);
	fuzz_admin_sun.sun_family = AF_UNIX;
	snprintf(fuzz_admin_sun.sun_path, sizeof(fuzz_admin_sun.sun_path),
	    "/tmp/cp-fuzz-admin-%ld.sock", (long)getpid());
	unlink(fuzz_admin_sun.sun_path);
	snprintf(text, sizeof(text),
	    "[global]\n"
	    "admin = unix:%s\n"
	    "admin_token = s3cret\n"
	    "[upstream:api]\n"
	    "listen = 127.0.0.1:1\n"
	    "server = 127.0.0.1:2\n"
	    "backup = db\n"
	    "[upstream:db]\n"
	    "listen = 127.0.0.1:3\n"
	    "server = unix:/nonexistent\n"
	    "failure_rate_threshold = 50\n"
	    "window = 60s\n",
	    fuzz_admin_sun.sun_path);
	if ((fuzz_admin_cfg = config_load_string("fuzz.ini", text, NULL)) ==
		NULL ||
	    (fuzz_admin_base = event_base_new()) == NULL)
		abort();
	for (i = 0; i < 2; i++)
		fuzz_admin_ups[i] = upstream_new(fuzz_admin_base,
		    fuzz_admin_cfg, &fuzz_admin_cfg->upstreams[i], 1,
		    util_now_ms(), NULL, NULL);
	if ((fuzz_admin = admin_new(fuzz_admin_base, &fuzz_admin_cfg->admin,
		 fuzz_admin_cfg->admin_token, util_now_ms(),
		 fuzz_admin_upstreams, NULL, &cause)) == NULL) {
		fprintf(stderr, "fuzz_admin: %s\n", cause);
		abort();
	}
	atexit(fuzz_admin_cleanup);
}

/* Turn the loop once without waiting. */
static void
fuzz_admin_turn(void)
{
	event_base_loop(fuzz_admin_base, EVLOOP_NONBLOCK);
}

/* One input: send it as a request, turn the loop, read what comes back. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[65536];
	size_t sent = 0;
	ssize_t n;
	int fd, turn, quiet = 0;

	if (fuzz_admin_base == NULL)
		fuzz_admin_setup();
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    connect(fd, (struct sockaddr *)&fuzz_admin_sun,
		sizeof(fuzz_admin_sun)) == -1)
		abort();
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (turn = 0; turn < FUZZ_ADMIN_TURNS && quiet < 4; turn++) {
		if (sent < size &&
		    (n = send(fd, data + sent, size - sent, MSG_NOSIGNAL)) > 0)
			sent += (size_t)n;
		fuzz_admin_turn();
		n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n == -1 && errno != EAGAIN))
			break;
		quiet = n > 0 ? 0 : quiet + 1;
	}
	close(fd);
	for (turn = 0; turn < 4; turn++)
		fuzz_admin_turn();
	return 0;
}
