/*
 * The admin HTTP endpoint (SPEC.md section 7) on evhttp, in the main
 * thread. A request takes a snapshot of every upstream (the breaker's lock
 * for a copy, the workers' counters by relaxed loads) and renders it with
 * no lock held, so a scrape never holds up a worker.
 *
 * Bounds: headers and bodies are capped by evhttp; every connection has a
 * deadline by which its (next) request must be complete, so a slow or
 * silent client is cut off. Clients that send nothing or trickle cannot
 * starve the endpoint (SPEC.md 7): the listener is never turned off for
 * them; a full table closes the oldest connection that has sent nothing
 * not yet read and no complete request (never one whose request has come
 * in), and the listener yields to the loop after a batch of accepts, so
 * the requests of clients already in are read in between.
 */
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "admin.h"
#include "admin_page.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "stats.h"
#include "upstream.h"
#include "util.h"

#define ADMIN_MAX_CONNECTIONS 4096 /* and at most a quarter of RLIMIT_NOFILE */
#define ADMIN_MIN_CONNECTIONS 16
#define ADMIN_ACCEPT_BATCH 64 /* accepts before the loop reads requests */
#define ADMIN_MAX_HEADERS 8192
#define ADMIN_MAX_BODY 1024
#define ADMIN_DEADLINE_MS 5000 /* to send a whole request, or idle between */
#define ADMIN_PAUSE_MS 100     /* out of descriptors: accept again after */
#define ADMIN_PATH_LOG 128     /* of a refused request's path, logged */
#define ADMIN_JSON "application/json"
#define ADMIN_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

/*
 * One admin connection. evhttp owns it; we learn of it when evhttp asks for
 * its bufferevent, take hold of the evhttp connection once the accept has
 * finished (adopt), and hear of its end by the close callback.
 */
struct admin_conn {
	TAILQ_ENTRY(admin_conn) entry;
	struct admin *admin;
	struct bufferevent *bev;	 /* held until adopted */
	struct evhttp_connection *evcon; /* once adopted */
	struct event *deadline;
	unsigned requests; /* complete requests received */
};

/* Refused requests of one status, summed between two log lines. */
struct admin_refusals {
	int status;
	unsigned count;	    /* since the last line */
	uint64_t logged_ms; /* when the last line was written */
	char client[ADDR_TEXT_MAX + 8];
	char path[ADMIN_PATH_LOG];
};

struct admin {
	struct event_base *base;
	struct evhttp *http;
	struct evconnlistener *listener;
	struct addr addr;
	char *token; /* NULL: none */
	uint64_t start_ms;
	admin_upstreams_cb upstreams;
	void *upstreams_arg;
	admin_pools_cb pools; /* NULL: none */
	void *pools_arg;

	TAILQ_HEAD(, admin_conn) conns; /* oldest first */
	unsigned nconns;
	unsigned max_conns; /* beyond: the oldest waiting one is closed */
	unsigned batch;	    /* accepts since the loop last turned */
	bool yielded;	    /* listener off until the loop turns */
	bool paused;	    /* listener off: out of descriptors */
	unsigned evicted;   /* closed for room, not yet logged */
	uint64_t evicted_logged_ms;
	struct admin_refusals refused[2]; /* 401, 403 */
	struct event *tally_ev; /* logs the rest of both a second on */
	struct event *adopt_ev;
	struct event *resume_ev;
	uint64_t error_logged_s;
	int spare_fd; /* given up when accept() finds no descriptor, or -1 */
};

/* Turn the listener on or off as the batch and the pause say. */
static void
admin_listener_update(struct admin *a)
{
	if (a->listener == NULL)
		return;
	if (a->yielded || a->paused)
		evconnlistener_disable(a->listener);
	else
		evconnlistener_enable(a->listener);
}

/*
 * Hold a spare descriptor again if there is room, so that the next time
 * the table is full the admin endpoint can still accept one client.
 */
static void
admin_spare_take(struct admin *a)
{
	if (a->spare_fd == -1)
		a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Forget a connection that has ended. */
static void
admin_conn_free(struct admin_conn *c)
{
	struct admin *a = c->admin;

	TAILQ_REMOVE(&a->conns, c, entry);
	a->nconns--;
	if (c->bev != NULL)
		bufferevent_decref(c->bev);
	if (c->deadline != NULL)
		event_free(c->deadline);
	free(c);
	admin_spare_take(a);
}

/* evhttp is closing a connection. */
static void
admin_conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct admin_conn *c = arg;

	(void)evcon;
	admin_conn_free(c);
}

/* A connection's request did not come in time: close it. */
static void
admin_conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct admin_conn *c = arg;

	(void)fd;
	(void)what;
	/* Calls admin_conn_closed_cb, which frees c. */
	evhttp_connection_free(c->evcon);
}

/* Give a connection ADMIN_DEADLINE_MS from now for its next request. */
static void
admin_conn_arm(struct admin_conn *c)
{
	struct timeval tv;

	evtimer_add(c->deadline, util_timeval(&tv, ADMIN_DEADLINE_MS));
}

/*
 * evhttp wants a bufferevent for a new connection: make it, count the
 * connection, and adopt it once the accept is done. A reference keeps the
 * bufferevent ours to look at until then, even if evhttp drops it at once.
 */
static struct bufferevent *
admin_bev_cb(struct event_base *base, void *arg)
{
	struct admin *a = arg;
	struct admin_conn *c;
	struct bufferevent *bev;

	bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->admin = a;
	c->bev = bev;
	bufferevent_incref(bev);
	TAILQ_INSERT_TAIL(&a->conns, c, entry);
	a->nconns++;
	/* Enough for this turn: read what the clients in have sent. */
	if (++a->batch >= ADMIN_ACCEPT_BATCH && !a->yielded) {
		a->yielded = true;
		admin_listener_update(a);
	}
	event_active(a->adopt_ev, EV_TIMEOUT, 0);
	return bev;
}

/* Log the connections closed for room since the last line. */
static void
admin_evicted_log(struct admin *a, uint64_t now)
{
	if (a->evicted == 0)
		return;
	log_warnx("event=admin_evicted count=%u connections=%u addr=%s",
	    a->evicted, a->nconns, a->addr.text);
	a->evicted = 0;
	a->evicted_logged_ms = now;
}

/*
 * Has a connection bytes come in that are not read yet (a request that
 * arrived while the table filled), or an answer still going out? Such a
 * connection is never closed for room: its client is about to be served.
 */
static bool
admin_conn_busy(const struct admin_conn *c)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
	evutil_socket_t fd;
	int n = 0;

	if (bev == NULL)
		return false;
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return true;
	fd = bufferevent_getfd(bev);
	return fd != -1 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/*
 * Close the oldest connection that has not sent a complete request and has
 * nothing unread (a silent client, or a trickling one whose bytes are all
 * in), or failing that, if any, the oldest kept-alive one waiting for its
 * next request; false if there is none to close. A connection whose
 * request has come in is served, never closed, even if the table stays
 * over its size until the loop reads it.
 */
static bool
admin_evict(struct admin *a, bool any)
{
	struct admin_conn *c, *victim = NULL;
	uint64_t now = util_now_ms();
	struct timeval tv;

	TAILQ_FOREACH(c, &a->conns, entry)
	{
		if (c->evcon == NULL)
			continue;
		if (c->requests == 0) {
			if (admin_conn_busy(c))
				continue;
			victim = c;
			break;
		}
		if (any && victim == NULL && !admin_conn_busy(c))
			victim = c;
	}
	if (victim == NULL)
		return false;
	a->evicted++;
	if (a->evicted_logged_ms == 0 || now - a->evicted_logged_ms >= 1000)
		admin_evicted_log(a, now);
	else if (!evtimer_pending(a->tally_ev, NULL))
		evtimer_add(a->tally_ev,
		    util_timeval(&tv, a->evicted_logged_ms + 1000 - now));
	/* Calls admin_conn_closed_cb, which frees victim. */
	evhttp_connection_free(victim->evcon);
	return true;
}

/*
 * After the accept: find each new connection's evhttp connection (the
 * argument evhttp gives its bufferevent callbacks) to hear of its close and
 * to give it a deadline. One evhttp already dropped has no callbacks left.
 */
static void
admin_adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct admin *a = arg;
	struct admin_conn *c, *next;
	bufferevent_event_cb ecb;
	void *cbarg;

	(void)fd;
	(void)what;
	for (c = TAILQ_FIRST(&a->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->bev == NULL)
			continue;
		bufferevent_getcb(c->bev, NULL, NULL, &ecb, &cbarg);
		if (ecb == NULL || cbarg == NULL ||
		    evhttp_connection_get_bufferevent(cbarg) != c->bev) {
			admin_conn_free(c);
			continue;
		}
		c->evcon = cbarg;
		evhttp_connection_set_closecb(c->evcon, admin_conn_closed_cb,
		    c);
		c->deadline = evtimer_new(a->base, admin_conn_deadline_cb, c);
		admin_conn_arm(c);
		bufferevent_decref(c->bev);
		c->bev = NULL;
	}
	while (a->nconns > a->max_conns && admin_evict(a, true))
		;
	a->batch = 0;
	if (a->yielded) {
		a->yielded = false;
		admin_listener_update(a);
	}
}

/* Out of descriptors for a while: accept again. */
static void
admin_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct admin *a = arg;

	(void)fd;
	(void)what;
	a->paused = false;
	admin_spare_take(a);
	admin_listener_update(a);
}

/*
 * The admin whose listener reports an accept error: the callback is given
 * the listener's argument, which evhttp has taken (its struct evhttp), so
 * the one admin of the process is kept here.
 */
static struct admin *admin_running;

/*
 * accept() failed. Out of descriptors (SPEC.md 8: the endpoint keeps
 * working with the table full), give up the spare descriptor and let the
 * listener take the client in its place at once; with no spare left, the
 * listening socket stays readable: stop watching it for a moment rather
 * than spin.
 */
static void
admin_accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct admin *a = admin_running;
	struct timeval tv;
	int error = errno;
	uint64_t now = util_now_ms();

	(void)arg;
	if (a == NULL || a->listener != l)
		return;
	if (now / 1000 != a->error_logged_s) {
		a->error_logged_s = now / 1000;
		log_warnx("event=admin_accept_error addr=%s error=%s",
		    a->addr.text, util_errno_name(error));
	}
	if ((error == EMFILE || error == ENFILE) && a->spare_fd != -1) {
		close(a->spare_fd);
		a->spare_fd = -1;
		return;
	}
	/* No spare: a silent connection gives its descriptor up. */
	if ((error == EMFILE || error == ENFILE) && admin_evict(a, false))
		return;
	a->paused = true;
	admin_listener_update(a);
	evtimer_add(a->resume_ev, util_timeval(&tv, ADMIN_PAUSE_MS));
}

/* Compare a request's Authorization with the token in constant time. */
static bool
admin_token_ok(const char *token, const char *auth)
{
	size_t n, m, i;
	unsigned diff;

	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
		return false;
	auth += 7;
	while (*auth == ' ')
		auth++;
	n = strlen(token);
	m = strlen(auth);
	/* Every byte of the token is looked at, whatever matches. */
	diff = n != m;
	for (i = 0; i < n; i++)
		diff |= (unsigned char)token[i] ^
		    (unsigned char)auth[m != 0 ? i % m : 0];
	return diff == 0;
}

/* Is a Host header an address or "localhost" (with or without a port)? */
static bool
admin_host_is_local_name(const char *host)
{
	char name[ADDR_TEXT_MAX], buf[sizeof(struct in6_addr)];
	const char *end;
	size_t n;

	if (*host == '[') {
		if ((end = strchr(host, ']')) == NULL ||
		    (end[1] != '\0' && end[1] != ':'))
			return false;
		host++;
	} else if ((end = strchr(host, ':')) == NULL)
		end = host + strlen(host);
	n = (size_t)(end - host);
	if (n == 0 || n >= sizeof(name))
		return false;
	memcpy(name, host, n);
	name[n] = '\0';
	return strcasecmp(name, "localhost") == 0 ||
	    inet_pton(AF_INET, name, buf) == 1 ||
	    inet_pton(AF_INET6, name, buf) == 1;
}

/*
 * Why a request that a browser may have been tricked into sending is
 * refused, or NULL. Without a token, a TCP endpoint answers only Host
 * headers that are an address or localhost, so a web page cannot reach it
 * through a name rebound to 127.0.0.1; a POST must come from the page
 * itself (its Origin, when a browser sends one, names the same host), so
 * another site cannot force or reset a circuit.
 */
static const char *
admin_request_foreign(struct admin *a, struct evhttp_request *req, bool post)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const char *host = evhttp_find_header(h, "Host");
	const char *origin = evhttp_find_header(h, "Origin");
	const char *site = evhttp_find_header(h, "Sec-Fetch-Site");

	if (a->token == NULL && a->addr.family != AF_UNIX && host != NULL &&
	    !admin_host_is_local_name(host))
		return "without admin_token, only an address or localhost is "
		       "served as Host";
	if (!post)
		return NULL;
	if (site != NULL && strcmp(site, "same-origin") != 0 &&
	    strcmp(site, "none") != 0)
		return "a request from another site";
	if (origin != NULL &&
	    (host == NULL || strncmp(origin, "http://", 7) != 0 ||
		strcmp(origin + 7, host) != 0))
		return "a request from another origin";
	return NULL;
}

/* Ask evhttp to close the connection once this reply is out. */
static void
admin_send_close(struct evhttp_request *req)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
	    "close");
}

/* Send a reply with a body, and the headers every reply has. */
static void
admin_send(struct evhttp_request *req, int code, const char *reason,
    const char *type, struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char len[32];

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		/* evhttp would send the body: the length only. */
		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
		evhttp_add_header(h, "Content-Length", len);
		body = NULL;
	}
	evhttp_send_reply(req, code, reason, body);
}

/* Send a short text/plain reply. */
static void admin_send_text(struct evhttp_request *req, int code,
    const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void
admin_send_text(struct evhttp_request *req, int code, const char *reason,
    const char *fmt, ...)
{
	struct evbuffer *body = evbuffer_new();
	va_list ap;

	if (body == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	va_start(ap, fmt);
	evbuffer_add_vprintf(body, fmt, ap);
	va_end(ap);
	admin_send(req, code, reason, "text/plain; charset=utf-8", body);
	evbuffer_free(body);
}

/* Free a rendered buffer once evhttp has sent it. */
static void
admin_buf_cleanup(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)data);
}

/* Send a rendered buffer (taken over) as the body. */
static void
admin_send_buf(struct evhttp_request *req, const char *type,
    struct util_buf *sb)
{
	struct evbuffer *body = evbuffer_new();

	if (body == NULL ||
	    evbuffer_add_reference(body, sb->p, sb->len, admin_buf_cleanup,
		NULL) != 0) {
		util_buf_free(sb);
		if (body != NULL)
			evbuffer_free(body);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	sb->p = NULL;
	sb->len = sb->cap = 0;
	admin_send(req, 200, "OK", type, body);
	evbuffer_free(body);
}

/*
 * Copy out every upstream's figures (the only part that takes locks); the
 * caller renders from the copy and frees it.
 */
static struct stats_upstream *
admin_snapshot(struct admin *a, size_t *np)
{
	struct upstream *const *ups;
	struct stats_upstream *sus;
	uint64_t now = util_now_ms();
	int64_t offset;
	size_t i, n;

	offset = (int64_t)util_wall_ms() - (int64_t)now;
	ups = a->upstreams(a->upstreams_arg, &n);
	sus = xcalloc(n == 0 ? 1 : n, sizeof(*sus));
	for (i = 0; i < n; i++)
		upstream_snapshot(ups[i], now, offset, &sus[i]);
	*np = n;
	return sus;
}

/* Copy out every pool's figures, judged by its members' in sus. */
static struct stats_pool *
admin_pools_snapshot(struct admin *a, const struct stats_upstream *sus,
    size_t n, size_t *np)
{
	struct pool *const *pools;
	struct stats_pool *sps;
	size_t i;

	*np = 0;
	pools = a->pools != NULL ? a->pools(a->pools_arg, np) : NULL;
	sps = xcalloc(*np + 1, sizeof(*sps));
	for (i = 0; i < *np; i++) {
		pool_snapshot(pools[i], &sps[i]);
		stats_pool_members(&sps[i], sus, n);
	}
	return sps;
}

/* The daemon-wide fields. */
static struct stats_info
admin_info(struct admin *a)
{
	struct stats_info info;

	memset(&info, 0, sizeof(info));
	info.version = PACKAGE_VERSION;
	info.uptime_ms = util_now_ms() - a->start_ms;
	return info;
}

/* Find a running upstream by name. */
static struct upstream *
admin_find(struct admin *a, const char *name)
{
	struct upstream *const *ups;
	size_t i, n;

	ups = a->upstreams(a->upstreams_arg, &n);
	for (i = 0; i < n; i++)
		if (strcmp(ups[i]->name, name) == 0)
			return ups[i];
	return NULL;
}

/* The renderers of every upstream at once: stats_json, stats_prometheus. */
typedef void (*admin_render_fn)(struct util_buf *, const struct stats_info *,
    const struct stats_upstream *, size_t);

/* GET /stats or /metrics: every upstream, rendered by render. */
static void
admin_render_all(struct admin *a, struct evhttp_request *req,
    admin_render_fn render, const char *type)
{
	struct util_buf sb = { NULL, 0, 0 };
	struct stats_info info = admin_info(a);
	struct stats_upstream *sus;
	size_t n;

	sus = admin_snapshot(a, &n);
	info.pools = admin_pools_snapshot(a, sus, n, &info.npools);
	render(&sb, &info, sus, n);
	free((void *)info.pools);
	free(sus);
	admin_send_buf(req, type, &sb);
}

/* GET /stats/pools/NAME: one pool's POOLSTATS, or 404. */
static void
admin_stats_pool(struct admin *a, struct evhttp_request *req, const char *name)
{
	struct util_buf sb = { NULL, 0, 0 };
	struct stats_upstream *sus;
	struct stats_pool *sps;
	size_t n, np, i;

	sus = admin_snapshot(a, &n);
	sps = admin_pools_snapshot(a, sus, n, &np);
	for (i = 0; i < np; i++)
		if (strcmp(sps[i].name, name) == 0)
			break;
	if (i == np)
		admin_send_text(req, 404, "Not Found", "unknown pool\n");
	else {
		stats_json_pool(&sb, &sps[i]);
		util_buf_printf(&sb, "\n");
		admin_send_buf(req, ADMIN_JSON, &sb);
	}
	free(sps);
	free(sus);
}

/* Reply with one upstream's STATS. */
static void
admin_stats_upstream(struct evhttp_request *req, struct upstream *up)
{
	struct util_buf sb = { NULL, 0, 0 };
	struct stats_upstream su;
	uint64_t now = util_now_ms();

	upstream_snapshot(up, now, (int64_t)util_wall_ms() - (int64_t)now, &su);
	stats_json_upstream(&sb, &su);
	util_buf_printf(&sb, "\n");
	admin_send_buf(req, ADMIN_JSON, &sb);
}

/* The client's address, for the log line of a manual action. */
static const char *
admin_client(struct evhttp_request *req, char *buf, size_t len)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const struct sockaddr *sa;

	sa = evcon != NULL ? evhttp_connection_get_addr(evcon) : NULL;
	if (sa == NULL)
		return "unknown";
	return addr_format(sa,
	    sa->sa_family == AF_INET6	   ? sizeof(struct sockaddr_in6)
		: sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
					   : sizeof(sa_family_t),
	    buf, len);
}

/* What a route's handler is given. */
struct admin_call {
	struct admin *a;
	struct evhttp_request *req;
	const char *name; /* the NAME of a per-upstream path, or NULL */
	const char *arg;  /* the value of its query parameter, or NULL */
};

/* The manual overrides of one upstream. */
enum admin_action {
	ADMIN_FORCE_OPEN,
	ADMIN_FORCE_CLOSED,
	ADMIN_RESET,
};

/*
 * POST /upstreams/NAME/force-open|force-closed|reset: apply, log, and reply
 * with the STATS after the change. ?for=DURATION gives a force a lifetime.
 */
static void
admin_override(const struct admin_call *call, enum admin_action action)
{
	static const char *names[] = { "force-open", "force-closed", "reset" };
	struct evhttp_request *req = call->req;
	struct upstream *up;
	uint64_t lifetime = 0, now;
	char *cause = NULL, client[ADDR_TEXT_MAX + 8], d[32];

	if ((up = admin_find(call->a, call->name)) == NULL) {
		admin_send_text(req, 404, "Not Found", "unknown upstream\n");
		return;
	}
	if (call->arg != NULL &&
	    (parse_duration(call->arg, &lifetime, &cause) != 0 ||
		lifetime == 0)) {
		admin_send_close(req);
		admin_send_text(req, 400, "Bad Request", "for: %s\n",
		    cause != NULL ? cause : "a duration above 0, e.g. 30s");
		free(cause);
		return;
	}

	now = util_now_ms();
	switch (action) {
	case ADMIN_FORCE_OPEN:
		breaker_force_open(up->breaker, lifetime, now);
		break;
	case ADMIN_FORCE_CLOSED:
		breaker_force_closed(up->breaker, lifetime, now);
		break;
	case ADMIN_RESET:
		breaker_reset(up->breaker, now);
		break;
	}
	if (action == ADMIN_RESET)
		log_notice("event=admin action=%s upstream=%s client=%s",
		    names[action], up->name,
		    admin_client(req, client, sizeof(client)));
	else
		log_notice("event=admin action=%s upstream=%s for=%s client=%s",
		    names[action], up->name,
		    lifetime != 0 ? format_duration(lifetime, d, sizeof(d))
				  : "none",
		    admin_client(req, client, sizeof(client)));
	/*
	 * A new lifetime may end sooner than the armed timer, and must reach
	 * state_file even when the state stayed the same.
	 */
	upstream_overridden(up);
	admin_stats_upstream(req, up);
}

/* POST /reset: every upstream back to closed. */
static void
admin_reset_all(struct admin *a, struct evhttp_request *req)
{
	struct upstream *const *ups;
	char client[ADDR_TEXT_MAX + 8];
	uint64_t now = util_now_ms();
	size_t i, n;

	ups = a->upstreams(a->upstreams_arg, &n);
	log_notice("event=admin action=reset_all upstreams=%zu client=%s", n,
	    admin_client(req, client, sizeof(client)));
	for (i = 0; i < n; i++) {
		breaker_reset(ups[i]->breaker, now);
		upstream_overridden(ups[i]);
	}
	admin_render_all(a, req, stats_json, ADMIN_JSON);
}

/* GET /: the status page, with a fresh nonce for its CSP. */
static void
admin_page(struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *body;
	char nonce[64], csp[512];

	body = evbuffer_new();
	if (body == NULL ||
	    admin_page_render(body, nonce, sizeof(nonce)) != 0) {
		if (body != NULL)
			evbuffer_free(body);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	snprintf(csp, sizeof(csp),
	    "default-src 'none'; script-src 'nonce-%s'; style-src "
	    "'nonce-%s'; connect-src 'self'; img-src data:; base-uri "
	    "'none'; form-action 'none'; frame-ancestors 'none'",
	    nonce, nonce);
	evhttp_add_header(h, "Content-Security-Policy", csp);
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	admin_send(req, 200, "OK", "text/html; charset=utf-8", body);
	evbuffer_free(body);
}

/* GET /health: the liveness probe. */
static void
admin_health_cb(const struct admin_call *call)
{
	admin_send_text(call->req, 200, "OK", "ok\n");
}

/* GET /: the status page. */
static void
admin_page_cb(const struct admin_call *call)
{
	admin_page(call->req);
}

/* GET /stats: every upstream's STATS. */
static void
admin_stats_cb(const struct admin_call *call)
{
	admin_render_all(call->a, call->req, stats_json, ADMIN_JSON);
}

/* GET /stats/NAME: one upstream's STATS. */
static void
admin_stats_one_cb(const struct admin_call *call)
{
	struct upstream *up = admin_find(call->a, call->name);

	if (up == NULL)
		admin_send_text(call->req, 404, "Not Found",
		    "unknown upstream\n");
	else
		admin_stats_upstream(call->req, up);
}

/* GET /stats/pools/NAME: one pool's POOLSTATS. */
static void
admin_stats_pool_cb(const struct admin_call *call)
{
	admin_stats_pool(call->a, call->req, call->name);
}

/* GET /metrics: the Prometheus exposition. */
static void
admin_metrics_cb(const struct admin_call *call)
{
	admin_render_all(call->a, call->req, stats_prometheus,
	    ADMIN_PROMETHEUS);
}

/* POST /upstreams/NAME/force-open. */
static void
admin_force_open_cb(const struct admin_call *call)
{
	admin_override(call, ADMIN_FORCE_OPEN);
}

/* POST /upstreams/NAME/force-closed. */
static void
admin_force_closed_cb(const struct admin_call *call)
{
	admin_override(call, ADMIN_FORCE_CLOSED);
}

/* POST /upstreams/NAME/reset. */
static void
admin_reset_one_cb(const struct admin_call *call)
{
	admin_override(call, ADMIN_RESET);
}

/* POST /reset. */
static void
admin_reset_all_cb(const struct admin_call *call)
{
	admin_reset_all(call->a, call->req);
}

/*
 * The routes of SPEC.md 7, one row each: the path ('*' is one segment, the
 * NAME), the method (GET answers HEAD too), whether it is served without
 * the token, the one query parameter it takes (or none), the handler.
 */
static const struct admin_route {
	const char *path;
	enum evhttp_cmd_type method;
	bool open;
	const char *param;
	void (*handler)(const struct admin_call *);
} admin_routes[] = {
	{ "/", EVHTTP_REQ_GET, true, NULL, admin_page_cb },
	{ "/health", EVHTTP_REQ_GET, true, NULL, admin_health_cb },
	{ "/stats", EVHTTP_REQ_GET, false, NULL, admin_stats_cb },
	{ "/stats/*", EVHTTP_REQ_GET, false, NULL, admin_stats_one_cb },
	{ "/stats/pools/*", EVHTTP_REQ_GET, false, NULL, admin_stats_pool_cb },
	{ "/metrics", EVHTTP_REQ_GET, false, NULL, admin_metrics_cb },
	{ "/upstreams/*/force-open", EVHTTP_REQ_POST, false, "for",
	    admin_force_open_cb },
	{ "/upstreams/*/force-closed", EVHTTP_REQ_POST, false, "for",
	    admin_force_closed_cb },
	{ "/upstreams/*/reset", EVHTTP_REQ_POST, false, NULL,
	    admin_reset_one_cb },
	{ "/reset", EVHTTP_REQ_POST, false, NULL, admin_reset_all_cb },
};

/* Does a path match a route's pattern? A '*' segment is copied to name. */
static bool
admin_path_match(const char *pat, const char *path, char *name, size_t len)
{
	size_t n;

	while (*pat != '\0') {
		if (*pat == '*') {
			n = strcspn(path, "/");
			if (n == 0 || n >= len)
				return false;
			memcpy(name, path, n);
			name[n] = '\0';
			path += n;
			pat++;
		} else if (*pat++ != *path++)
			return false;
	}
	return *path == '\0';
}

/*
 * Find the route of a path and method. NULL if there is none; *known says
 * whether the path has routes under other methods (405, with their names
 * in allow).
 */
static const struct admin_route *
admin_route_find(const char *path, enum evhttp_cmd_type method, char *name,
    size_t len, bool *known, char *allow, size_t allow_len)
{
	const struct admin_route *r;
	size_t i;

	*known = false;
	*allow = '\0';
	for (i = 0; i < CP_ARRAY_LEN(admin_routes); i++) {
		r = &admin_routes[i];
		if (!admin_path_match(r->path, path, name, len))
			continue;
		if (method == r->method ||
		    (method == EVHTTP_REQ_HEAD && r->method == EVHTTP_REQ_GET))
			return r;
		*known = true;
		snprintf(allow + strlen(allow), allow_len - strlen(allow),
		    "%s%s", *allow != '\0' ? ", " : "",
		    r->method == EVHTTP_REQ_GET ? "GET, HEAD" : "POST");
	}
	return NULL;
}

/* One piece of a query string, %-decoded ('+' is a space); NULL if bad. */
static char *
admin_query_piece(const char *p, size_t n)
{
	char *raw, *out;

	xasprintf(&raw, "%.*s", (int)n, p);
	out = evhttp_uridecode(raw, 1, NULL);
	free(raw);
	return out;
}

/*
 * Check a request's query against its route (SPEC.md 7): a parameter other
 * than the route's (with or without a value), or the route's given twice,
 * is refused, so that a typo never turns a timed force into one that lasts
 * until reset. *arg gets the parameter's value (to free). NULL, or why not
 * (in why).
 */
static const char *
admin_query_check(const struct admin_route *r, const char *query, char **arg,
    char *why, size_t len)
{
	const char *p = query, *eq;
	char *key;
	size_t n, k;

	*arg = NULL;
	for (; p != NULL && *p != '\0'; p += n + (p[n] == '&')) {
		if ((n = strcspn(p, "&")) == 0)
			continue;
		eq = memchr(p, '=', n);
		k = eq != NULL ? (size_t)(eq - p) : n;
		if ((key = admin_query_piece(p, k)) == NULL) {
			snprintf(why, len, "bad query string");
			return why;
		}
		if (r->param == NULL || strcmp(key, r->param) != 0) {
			snprintf(why, len,
			    "unknown parameter '%.64s' (this path takes %s)",
			    key, r->param != NULL ? r->param : "none");
			free(key);
			return why;
		}
		free(key);
		if (*arg != NULL) {
			snprintf(why, len, "parameter '%s' given twice",
			    r->param);
			return why;
		}
		*arg = eq != NULL ? admin_query_piece(eq + 1, n - k - 1)
				  : xstrdup("");
		if (*arg == NULL) {
			snprintf(why, len, "bad query string");
			return why;
		}
	}
	return NULL;
}

/* Log the refused requests counted since the last line. */
static void
admin_refused_log(struct admin *a, struct admin_refusals *t, uint64_t now)
{
	char q[ADMIN_PATH_LOG + 8];

	if (t->count == 0)
		return;
	log_warnx("event=admin_refused status=%d count=%u client=%s path=%s "
		  "addr=%s",
	    t->status, t->count, t->client, log_quote(q, sizeof(q), t->path),
	    a->addr.text);
	t->count = 0;
	t->logged_ms = now;
}

/*
 * Is a summed line due: something to tell and a second since the last
 * line? If it is not yet time, *wait_ms gets how long until it is.
 */
static bool
admin_tally_due(unsigned count, uint64_t logged_ms, uint64_t now,
    uint64_t *wait_ms)
{
	uint64_t left;

	if (count == 0)
		return false;
	if (logged_ms == 0 || now - logged_ms >= 1000)
		return true;
	left = logged_ms + 1000 - now;
	if (*wait_ms == 0 || left < *wait_ms)
		*wait_ms = left;
	return false;
}

/*
 * Log the summed lines (refusals, evictions) whose second is over, or all
 * of them; arm the timer for the rest.
 */
static void
admin_tally_flush(struct admin *a, bool all)
{
	uint64_t now = util_now_ms(), wait_ms = 0;
	struct timeval tv;
	size_t i;

	for (i = 0; i < CP_ARRAY_LEN(a->refused); i++)
		if (all ||
		    admin_tally_due(a->refused[i].count,
			a->refused[i].logged_ms, now, &wait_ms))
			admin_refused_log(a, &a->refused[i], now);
	if (all ||
	    admin_tally_due(a->evicted, a->evicted_logged_ms, now, &wait_ms))
		admin_evicted_log(a, now);
	if (!all && wait_ms != 0)
		evtimer_add(a->tally_ev, util_timeval(&tv, wait_ms));
}

/* The timer of the summed lines. */
static void
admin_tally_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	admin_tally_flush(arg, false);
}

/*
 * Count a refused request (401, 403): at most one line a second for each
 * status, with how many were refused and the last one's client and path.
 */
static void
admin_refused(struct admin *a, struct evhttp_request *req, int status,
    const char *path)
{
	struct admin_refusals *t = &a->refused[status == 401 ? 0 : 1];
	uint64_t now = util_now_ms();
	char client[ADDR_TEXT_MAX + 8];
	struct timeval tv;

	t->status = status;
	t->count++;
	snprintf(t->client, sizeof(t->client), "%s",
	    admin_client(req, client, sizeof(client)));
	snprintf(t->path, sizeof(t->path), "%s", path);
	if (t->logged_ms == 0 || now - t->logged_ms >= 1000)
		admin_refused_log(a, t, now);
	else if (!evtimer_pending(a->tally_ev, NULL))
		evtimer_add(a->tally_ev,
		    util_timeval(&tv, t->logged_ms + 1000 - now));
}

/* Every request: route, authorize, check the method and query, answer. */
static void
admin_request_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const struct admin_route *r;
	struct admin_call call = { a, req, NULL, NULL };
	struct admin_conn *c;
	const char *path, *auth, *why;
	char name[UPSTREAM_NAME_MAX + 2], allow[64], text[160], *decoded;
	char *value = NULL;
	bool known, authed;

	path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	if (path == NULL || *path == '\0')
		path = "/";
	decoded = evhttp_uridecode(path, 0, NULL);
	if (decoded == NULL) {
		admin_send_close(req);
		admin_send_text(req, 400, "Bad Request", "bad path\n");
		return;
	}
	r = admin_route_find(decoded, method, name, sizeof(name), &known, allow,
	    sizeof(allow));
	if (r != NULL && strchr(r->path, '*') != NULL)
		call.name = name;

	/* Liveness probes and the page (which holds no data) need no token. */
	auth = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization");
	authed = a->token == NULL || admin_token_ok(a->token, auth);
	if (!authed && (r == NULL || !r->open)) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "WWW-Authenticate", "Bearer realm=\"circuitproxyd\"");
		admin_send_close(req);
		admin_send_text(req, 401, "Unauthorized",
		    "a bearer token is needed (admin_token)\n");
		admin_refused(a, req, 401, decoded);
		goto out;
	}
	/*
	 * Its request is in: give the connection time for the next one, but
	 * only for a client that holds the token, so that requests anybody
	 * may send cannot keep the admin connection slots taken.
	 */
	TAILQ_FOREACH(c, &a->conns, entry)
	{
		if (c->evcon == evcon) {
			c->requests++;
			if (authed && c->deadline != NULL)
				admin_conn_arm(c);
			break;
		}
	}
	if (r == NULL && !known) {
		admin_send_text(req, 404, "Not Found", "no such route\n");
		goto out;
	}
	if ((r == NULL || r->handler != admin_health_cb) &&
	    (why = admin_request_foreign(a, req,
		 method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD)) !=
		NULL) {
		admin_send_close(req);
		admin_send_text(req, 403, "Forbidden", "%s\n", why);
		admin_refused(a, req, 403, decoded);
		goto out;
	}
	if (r == NULL) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Allow", allow);
		admin_send_text(req, 405, "Method Not Allowed", "use %s\n",
		    allow);
		goto out;
	}
	if ((why = admin_query_check(r, evhttp_uri_get_query(uri), &value, text,
		 sizeof(text))) != NULL) {
		admin_send_close(req);
		admin_send_text(req, 400, "Bad Request", "%s\n", why);
		goto out;
	}
	call.arg = value;
	r->handler(&call);
out:
	free(value);
	free(decoded);
}

/*
 * How many admin connections may be open: ADMIN_MAX_CONNECTIONS, and no
 * more than a quarter of the descriptors, which relays need.
 */
static unsigned
admin_max_conns(void)
{
	struct rlimit rl;
	rlim_t n = ADMIN_MAX_CONNECTIONS;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		n = rl.rlim_cur / 4;
	if (n > ADMIN_MAX_CONNECTIONS)
		n = ADMIN_MAX_CONNECTIONS;
	return n < ADMIN_MIN_CONNECTIONS ? ADMIN_MIN_CONNECTIONS : (unsigned)n;
}

/* Bind the admin address and start serving. */
struct admin *
admin_new(struct event_base *base, const struct addr *addr, const char *token,
    uint64_t start_ms, admin_upstreams_cb upstreams, void *arg, char **cause)
{
	struct evhttp_bound_socket *bound;
	struct admin *a;
	char *why = NULL;
	int fd;

	a = xcalloc(1, sizeof(*a));
	a->base = base;
	a->addr = *addr;
	a->token = token != NULL ? xstrdup(token) : NULL;
	a->start_ms = start_ms;
	a->upstreams = upstreams;
	a->upstreams_arg = arg;
	TAILQ_INIT(&a->conns);
	a->max_conns = admin_max_conns();
	a->spare_fd = -1;
	admin_spare_take(a);
	a->adopt_ev = event_new(base, -1, 0, admin_adopt_cb, a);
	a->resume_ev = evtimer_new(base, admin_resume_cb, a);
	a->tally_ev = evtimer_new(base, admin_tally_cb, a);
	a->http = evhttp_new(base);
	if (a->http == NULL || a->adopt_ev == NULL || a->resume_ev == NULL ||
	    a->tally_ev == NULL) {
		xasprintf(cause, "admin %s: out of memory", addr->text);
		admin_free(a);
		return NULL;
	}
	evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS);
	evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY);
	evhttp_set_timeout(a->http, ADMIN_DEADLINE_MS / 1000);
	/* Every method reaches us, so a wrong one gets 405, not 501. */
	evhttp_set_allowed_methods(a->http,
	    EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
		EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
		EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(a->http, admin_request_cb, a);
	evhttp_set_bevcb(a->http, admin_bev_cb, a);

	if ((fd = listener_bind(addr, &why)) == -1) {
		xasprintf(cause, "admin %s", why);
		free(why);
		admin_free(a);
		return NULL;
	}
	bound = evhttp_accept_socket_with_handle(a->http, fd);
	if (bound == NULL) {
		close(fd);
		xasprintf(cause, "admin %s: cannot serve", addr->text);
		admin_free(a);
		return NULL;
	}
	a->listener = evhttp_bound_socket_get_listener(bound);
	admin_running = a;
	evconnlistener_set_error_cb(a->listener, admin_accept_error_cb);
	log_info("event=admin addr=%s token=%s", addr->text,
	    token != NULL ? "yes" : "no");
	return a;
}

/*
 * Does the running endpoint hold the port a new TCP address needs
 * (127.0.0.1:P giving way to 0.0.0.0:P, or the other way round)?
 */
static bool
admin_in_the_way(const struct admin *a, const struct addr *addr)
{
	return a->listener != NULL && addr_same_port(&a->addr, addr);
}

/*
 * A reload moves the endpoint: bind a new one on addr with the new token,
 * beside the running one, which keeps serving under its own token until
 * the caller frees it. When the running socket holds the port, it stops
 * listening first (shut down, it keeps the port but no longer blocks the
 * bind) and listens again if the bind fails: either way the old endpoint
 * is as it was, and NULL with *cause is returned.
 */
struct admin *
admin_rebind(struct admin *old, const struct addr *addr, const char *token,
    char **cause)
{
	struct admin *a;
	bool shut = admin_in_the_way(old, addr);
	int fd = shut ? evconnlistener_get_fd(old->listener) : -1;

	if (shut) {
		evconnlistener_disable(old->listener);
		shutdown(fd, SHUT_RDWR);
	}
	a = admin_new(old->base, addr, token, old->start_ms, old->upstreams,
	    old->upstreams_arg, cause);
	if (a != NULL)
		admin_set_pools(a, old->pools, old->pools_arg);
	if (shut && a == NULL) {
		if (listen(fd, SOMAXCONN) == -1)
			log_warnx("event=admin addr=%s error=\"listen again: "
				  "%s\"",
			    old->addr.text, strerror(errno));
		admin_listener_update(old);
	}
	return a;
}

/* Show pools too. */
void
admin_set_pools(struct admin *a, admin_pools_cb cb, void *arg)
{
	if (a == NULL)
		return;
	a->pools = cb;
	a->pools_arg = arg;
}

/* Take a reloaded admin_token. */
void
admin_set_token(struct admin *a, const char *token)
{
	if (a == NULL)
		return;
	free(a->token);
	a->token = token != NULL ? xstrdup(token) : NULL;
}

/* Close everything: connections, the socket (and its file). */
void
admin_free(struct admin *a)
{
	struct admin_conn *c;

	if (a == NULL)
		return;
	if (admin_running == a)
		admin_running = NULL;
	if (a->listener != NULL && a->addr.family == AF_UNIX)
		unlink(((struct sockaddr_un *)&a->addr.ss)->sun_path);
	/* evhttp_free closes the connections (their close callbacks free c). */
	a->listener = NULL;
	if (a->http != NULL)
		evhttp_free(a->http);
	while ((c = TAILQ_FIRST(&a->conns)) != NULL)
		admin_conn_free(c);
	if (a->adopt_ev != NULL)
		event_free(a->adopt_ev);
	if (a->resume_ev != NULL)
		event_free(a->resume_ev);
	if (a->tally_ev != NULL) {
		admin_tally_flush(a, true);
		event_free(a->tally_ev);
	}
	if (a->spare_fd != -1)
		close(a->spare_fd);
	free(a->token);
	free(a);
}
