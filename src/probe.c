/*
 * Recovery probes: the daemon's own connects to a half_open upstream's
 * server, on the main thread's event loop, one at a time. A probe takes the
 * breaker's half_open slot, connects without blocking (TCP or unix socket)
 * under connect_timeout, judges slow_connect, sends a PROXY header that
 * names no client (send_proxy: v1 UNKNOWN, v2 LOCAL), closes at once, logs
 * event=probe, records its outcome like an attempt, and tells its owner,
 * who starts the next one while the circuit is still half_open.
 */
#include <sys/socket.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "addr.h"
#include "breaker.h"
#include "config.h"
#include "log.h"
#include "proxyproto.h"
#include "probe.h"
#include "util.h"

/* How long a probe that found no local resource waits to try again. */
#define PROBE_RETRY_MS 1000

struct probe {
	struct event_base *base;
	struct breaker *breaker;
	char name[UPSTREAM_NAME_MAX + 1];
	probe_done_cb cb;
	void *arg;

	struct addr server; /* copied at the start of each probe */
	uint64_t slow_connect_ms;
	enum proxyproto_version send_proxy;
	int fd; /* -1: no probe in progress */
	struct breaker_ticket ticket;
	uint64_t start_ms;
	struct event connect_ev; /* fd writable, or connect_timeout */
	struct event *retry_ev;	 /* after a local shortage */
	bool stopped;
};

/* The retry timer fired: let the owner start the next probe. */
static void
probe_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;

	(void)fd;
	(void)what;
	p->cb(p->arg);
}

/* Create the prober of one upstream. */
struct probe *
probe_new(struct event_base *base, struct breaker *b, const char *name,
    probe_done_cb cb, void *arg)
{
	struct probe *p = xcalloc(1, sizeof(*p));

	p->base = base;
	p->breaker = b;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->cb = cb;
	p->arg = arg;
	p->fd = -1;
	p->retry_ev = evtimer_new(base, probe_retry_cb, p);
	return p;
}

/* Close the probe's socket, if any. */
static void
probe_close(struct probe *p)
{
	if (p->fd == -1)
		return;
	event_del(&p->connect_ev);
	close(p->fd);
	p->fd = -1;
}

/*
 * The probe is over: log it, then record it (so its line comes before the
 * state line it causes), and tell the owner.
 */
static void
probe_end(struct probe *p, bool ok, enum breaker_error err)
{
	uint64_t now = util_now_ms(), elapsed = now - p->start_ms;
	char server[ADDR_TEXT_MAX + 8];

	probe_close(p);
	log_quote(server, sizeof(server), p->server.text);
	if (ok)
		log_info("event=probe upstream=%s server=%s result=ok "
			 "elapsed_ms=%" PRIu64,
		    p->name, server, elapsed);
	else
		log_warnx("event=probe upstream=%s server=%s result=fail "
			  "error=%s elapsed_ms=%" PRIu64,
		    p->name, server, breaker_error_name(err), elapsed);
	breaker_record(p->breaker, &p->ticket, ok, err, now);
	p->cb(p->arg);
}

/*
 * No socket or no local port for the probe: not the server's fault, so
 * no attempt. The slot is given back and the probe tried again later.
 */
static void
probe_shortage(struct probe *p, int error)
{
	struct timeval tv;
	char server[ADDR_TEXT_MAX + 8];

	probe_close(p);
	breaker_cancel(p->breaker, &p->ticket);
	log_warnx("event=probe upstream=%s server=%s result=skipped error=%s "
		  "retry_ms=%d",
	    p->name, log_quote(server, sizeof(server), p->server.text),
	    util_errno_name(error), PROBE_RETRY_MS);
	evtimer_add(p->retry_ev, util_timeval(&tv, PROBE_RETRY_MS));
}

/*
 * Connected: a success, unless slower than slow_connect. A server that
 * requires the PROXY header gets one that names no client, so it accepts
 * the probe (a fresh socket takes it whole).
 */
static void
probe_connected(struct probe *p)
{
	uint64_t took = util_now_ms() - p->start_ms;
	char hdr[PROXYPROTO_MAX];
	size_t n;

	n = proxyproto_header_build(p->send_proxy, NULL, NULL, hdr);
	if (n > 0 && send(p->fd, hdr, n, MSG_NOSIGNAL) == -1)
		n = 0; /* the outcome is the connect's, as without a header */

	if (p->slow_connect_ms != 0 && took > p->slow_connect_ms)
		probe_end(p, false, BREAKER_ERR_SLOW);
	else
		probe_end(p, true, BREAKER_ERR_OTHER);
}

/* The connect finished one way or the other, or connect_timeout passed. */
static void
probe_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	socklen_t len = sizeof(int);
	int error = 0;

	if (what & EV_TIMEOUT) {
		probe_end(p, false, BREAKER_ERR_TIMEOUT);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == -1)
		error = errno;
	if (error == 0)
		probe_connected(p);
	else
		probe_end(p, false, breaker_error_from_errno(error));
}

/* Start a probe if none is in progress and the breaker gives the slot. */
void
probe_start(struct probe *p, const struct addr *server,
    uint64_t connect_timeout_ms, uint64_t slow_connect_ms,
    enum proxyproto_version send_proxy)
{
	struct timeval tv;
	int error;

	if (p->stopped || p->fd != -1 || evtimer_pending(p->retry_ev, NULL) ||
	    !breaker_probe_begin(p->breaker, util_now_ms(), connect_timeout_ms,
		&p->ticket))
		return;
	p->server = *server;
	p->slow_connect_ms = slow_connect_ms;
	p->send_proxy = send_proxy;
	p->start_ms = util_now_ms();
	if (server->name) {
		/* A host name with no address yet (SPEC 3). */
		probe_end(p, false, BREAKER_ERR_DNS);
		return;
	}
	p->fd = socket(server->family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->fd == -1) {
		error = errno;
		if (breaker_errno_is_shortage(error))
			probe_shortage(p, error);
		else
			probe_end(p, false, breaker_error_from_errno(error));
		return;
	}
	if (connect(p->fd, (const struct sockaddr *)&server->ss, server->len) ==
	    0) {
		probe_connected(p);
		return;
	}
	error = errno;
	if (error == EINPROGRESS) {
		event_assign(&p->connect_ev, p->base, p->fd, EV_WRITE,
		    probe_connect_cb, p);
		event_add(&p->connect_ev,
		    util_timeval(&tv, connect_timeout_ms));
		return;
	}
	/* As for a client: EAGAIN is a full backlog on a unix socket. */
	if (breaker_errno_is_shortage(error) ||
	    (error == EAGAIN && server->family != AF_UNIX))
		probe_shortage(p, error);
	else
		probe_end(p, false, breaker_error_from_errno(error));
}

/* Stop a probe in progress (its slot given back); none starts after. */
void
probe_stop(struct probe *p)
{
	p->stopped = true;
	evtimer_del(p->retry_ev);
	if (p->fd == -1)
		return;
	probe_close(p);
	breaker_cancel(p->breaker, &p->ticket);
}

/* Stop and free. */
void
probe_free(struct probe *p)
{
	if (p == NULL)
		return;
	probe_stop(p);
	event_free(p->retry_ev);
	free(p);
}
