/*
 * Host names on evdns: the daemon's resolver, the lookups of each
 * host-name server with their timer and last good addresses, the
 * event=resolve lines, and the -t check of a config's names.
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "config.h"
#include "log.h"
#include "resolve.h"
#include "util.h"

#define RESOLVE_RETRY_MS 1000	 /* while a name has no address */
#define RESOLVE_ADDRS_MAX 64	 /* addresses kept of one answer */
#define RESOLVE_CHECK_MS 6000	 /* -t waits this long at most */
#define RESOLVE_DRAIN_ROUNDS 100 /* loop turns to collect cancellations */
#define RESOLVE_TIMEOUT "2"	 /* evdns: seconds per try */
#define RESOLVE_ATTEMPTS "2"	 /* evdns: tries per server */

struct resolve_base {
	struct event_base *base;
	struct evdns_base *dns;
	unsigned unsettled; /* resolves yet to hear their first answer */
	unsigned inflight;  /* tickets out, cancelled ones included */
	bool settling;	    /* resolve_base_settle() runs the loop */
	bool quiet;	    /* -t: no log lines */
	bool system;	    /* /etc/resolv.conf and /etc/hosts */
};

/*
 * One lookup in flight. evdns calls back even after a cancel, so the
 * callback finds the resolve through this, and the resolve can leave.
 */
struct resolve_ticket {
	struct resolve *owner; /* NULL: the resolve was freed */
	struct resolve_base *rb;
};

struct resolve {
	struct resolve_base *rb;
	char upstream[UPSTREAM_NAME_MAX + 1];
	char host[ADDR_TEXT_MAX];
	char port[8];
	uint64_t interval_ms;
	struct event *timer;
	struct resolve_ticket *ticket; /* in flight, or NULL */
	struct evdns_getaddrinfo_request *req;
	struct addr *addrs; /* the last good set, sorted */
	size_t naddrs;
	bool answered; /* the first answer came */
	bool failing;  /* the last lookup failed */
	bool again;    /* look up again as soon as the answer is in */
	char error[128];
	resolve_cb cb;
	void *cb_arg;
};

static void resolve_lookup(struct resolve *);

/* Our own patience, over what resolv.conf says. */
static void
resolve_base_options(struct resolve_base *rb)
{
	evdns_base_set_option(rb->dns, "timeout:", RESOLVE_TIMEOUT);
	evdns_base_set_option(rb->dns, "attempts:", RESOLVE_ATTEMPTS);
}

/*
 * Read the system's files. Without /etc/resolv.conf evdns asks 127.0.0.1
 * and reads no hosts file: /etc/hosts is read then too.
 */
static void
resolve_base_system(struct resolve_base *rb)
{
	if (evdns_base_resolv_conf_parse(rb->dns, DNS_OPTIONS_ALL,
		"/etc/resolv.conf") != 0) {
		evdns_base_clear_host_addresses(rb->dns);
		evdns_base_load_hosts(rb->dns, "/etc/hosts");
	}
	resolve_base_options(rb);
}

/*
 * A reload: the system's resolver reads /etc/resolv.conf and /etc/hosts
 * again (lookups in flight are kept and resumed).
 */
void
resolve_base_reload(struct resolve_base *rb)
{
	if (rb == NULL || !rb->system)
		return;
	evdns_base_clear_nameservers_and_suspend(rb->dns);
	evdns_base_clear_host_addresses(rb->dns);
	evdns_base_search_clear(rb->dns);
	resolve_base_system(rb);
	evdns_base_resume(rb->dns);
}

/* Create the resolver on a loop, with the servers given or the system's. */
struct resolve_base *
resolve_base_new(struct event_base *base, const char *servers, char **cause)
{
	struct resolve_base *rb;
	char *copy, *tok, *save = NULL;

	rb = xcalloc(1, sizeof(*rb));
	rb->base = base;
	rb->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (rb->dns == NULL) {
		xasprintf(cause, "cannot start the DNS resolver");
		free(rb);
		return NULL;
	}
	rb->system = servers == NULL;
	if (rb->system)
		resolve_base_system(rb);
	else
		resolve_base_options(rb);
	if (servers != NULL) {
		copy = xstrdup(servers);
		for (tok = strtok_r(copy, " ", &save); tok != NULL;
		     tok = strtok_r(NULL, " ", &save)) {
			if (evdns_base_nameserver_ip_add(rb->dns, tok) != 0) {
				xasprintf(cause,
				    "resolver: cannot use DNS server '%s'",
				    tok);
				free(copy);
				evdns_base_free(rb->dns, 0);
				free(rb);
				return NULL;
			}
		}
		free(copy);
	}
	return rb;
}

/* Free the resolver, once the cancelled lookups have called back. */
void
resolve_base_free(struct resolve_base *rb)
{
	unsigned i;

	if (rb == NULL)
		return;
	for (i = 0; rb->inflight > 0 && i < RESOLVE_DRAIN_ROUNDS; i++)
		event_base_loop(rb->base, EVLOOP_NONBLOCK);
	evdns_base_free(rb->dns, 0);
	free(rb);
}

/* The settle deadline passed: stop waiting for first answers. */
static void
resolve_settle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolve_base *rb = arg;

	(void)fd;
	(void)what;
	event_base_loopbreak(rb->base);
}

/* Run the loop until every resolve has been answered once, or max_ms. */
void
resolve_base_settle(struct resolve_base *rb, uint64_t max_ms)
{
	struct event *ev;
	struct timeval tv;

	if (rb == NULL || rb->unsettled == 0)
		return;
	ev = evtimer_new(rb->base, resolve_settle_timeout_cb, rb);
	evtimer_add(ev, util_timeval(&tv, max_ms));
	rb->settling = true;
	event_base_loop(rb->base, 0);
	rb->settling = false;
	event_free(ev);
}

/* Order addresses by their text, so that two answers compare. */
static int
resolve_addr_cmp(const void *a, const void *b)
{
	return strcmp(((const struct addr *)a)->text,
	    ((const struct addr *)b)->text);
}

/* Format a set as "A,B,C" (or "none"). */
static const char *
resolve_format(const struct addr *addrs, size_t n, char *buf, size_t len)
{
	size_t i, o = 0;

	buf[0] = '\0';
	if (n == 0)
		snprintf(buf, len, "none");
	for (i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s",
		    i == 0 ? "" : ",", addrs[i].text);
	return buf;
}

/* Take the IPv4 and IPv6 answers, each once, sorted; the count. */
static size_t
resolve_collect(struct evutil_addrinfo *res, struct addr *out)
{
	struct evutil_addrinfo *ai;
	struct addr a;
	size_t n = 0, i;

	for (ai = res; ai != NULL && n < RESOLVE_ADDRS_MAX; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(a.ss))
			continue;
		memset(&a, 0, sizeof(a));
		memcpy(&a.ss, ai->ai_addr, ai->ai_addrlen);
		a.family = ai->ai_family;
		a.len = (socklen_t)ai->ai_addrlen;
		addr_format(ai->ai_addr, a.len, a.text, sizeof(a.text));
		for (i = 0; i < n; i++)
			if (strcmp(out[i].text, a.text) == 0)
				break;
		if (i == n)
			out[n++] = a;
	}
	qsort(out, n, sizeof(*out), resolve_addr_cmp);
	return n;
}

/* Arm the next lookup: every second without an address, else the interval. */
static void
resolve_schedule(struct resolve *r)
{
	struct timeval tv;
	uint64_t wait;

	if (r->naddrs == 0)
		wait = RESOLVE_RETRY_MS;
	else if (r->interval_ms != 0)
		wait = r->interval_ms;
	else
		return;
	evtimer_add(r->timer, util_timeval(&tv, wait));
}

/* A good answer: adopt it if it differs from the last, and say so. */
static void
resolve_adopt(struct resolve *r, const struct addr *addrs, size_t n)
{
	char list[1024];
	bool same = n == r->naddrs;
	size_t i;

	for (i = 0; same && i < n; i++)
		same = strcmp(addrs[i].text, r->addrs[i].text) == 0;
	r->failing = false;
	if (same)
		return;
	free(r->addrs);
	r->addrs = xcalloc(n, sizeof(*r->addrs));
	memcpy(r->addrs, addrs, n * sizeof(*addrs));
	r->naddrs = n;
	/* In use before the line says so. */
	r->cb(r->cb_arg, RESOLVE_CHANGED, r->addrs, r->naddrs);
	if (!r->rb->quiet)
		log_info("event=resolve upstream=%s name=%s result=ok addrs=%s",
		    r->upstream, r->host,
		    resolve_format(addrs, n, list, sizeof(list)));
}

/*
 * A failed lookup: the last good set stays. Logged when a run of failures
 * starts or its error changes (the count says the rest).
 */
static void
resolve_fail(struct resolve *r, const char *error)
{
	char list[1024], q[160];
	bool news = !r->failing || strcmp(r->error, error) != 0;

	r->failing = true;
	snprintf(r->error, sizeof(r->error), "%s", error);
	r->cb(r->cb_arg, RESOLVE_FAILED, r->addrs, r->naddrs);
	if (news && !r->rb->quiet)
		log_warnx("event=resolve upstream=%s name=%s result=error "
			  "error=%s kept=%s",
		    r->upstream, r->host, log_quote(q, sizeof(q), error),
		    resolve_format(r->addrs, r->naddrs, list, sizeof(list)));
}

/* evdns answered (or the lookup was cancelled). */
static void
resolve_answer_cb(int err, struct evutil_addrinfo *res, void *arg)
{
	struct resolve_ticket *t = arg;
	struct resolve_base *rb = t->rb;
	struct resolve *r = t->owner;
	struct addr *addrs;
	size_t n = 0;

	rb->inflight--;
	free(t);
	if (r == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		return;
	}
	r->ticket = NULL;
	r->req = NULL;
	addrs = xcalloc(RESOLVE_ADDRS_MAX, sizeof(*addrs));
	if (err == 0 && res != NULL)
		n = resolve_collect(res, addrs);
	if (res != NULL)
		evutil_freeaddrinfo(res);
	if (n > 0)
		resolve_adopt(r, addrs, n);
	else
		resolve_fail(r,
		    err != 0 ? evutil_gai_strerror(err)
			     : "no IPv4 or IPv6 address");
	free(addrs);
	if (!r->answered) {
		r->answered = true;
		rb->unsettled--;
		if (rb->settling && rb->unsettled == 0)
			event_base_loopbreak(rb->base);
	}
	resolve_schedule(r);
	if (r->again) {
		r->again = false;
		evtimer_del(r->timer);
		resolve_lookup(r);
	}
}

/* Send one lookup of the name. */
static void
resolve_lookup(struct resolve *r)
{
	struct evutil_addrinfo hints;
	struct resolve_ticket *t;
	struct evdns_getaddrinfo_request *req;

	if (r->ticket != NULL)
		return;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	t = xcalloc(1, sizeof(*t));
	t->owner = r;
	t->rb = r->rb;
	r->ticket = t;
	r->rb->inflight++;
	req = evdns_getaddrinfo(r->rb->dns, r->host, r->port, &hints,
	    resolve_answer_cb, t);
	/* An answer from /etc/hosts may have come already. */
	if (r->ticket != NULL)
		r->req = req;
}

/* The interval (or the one-second retry) passed. */
static void
resolve_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	resolve_lookup(arg);
}

/* Start the lookups of one upstream's host-name server. */
struct resolve *
resolve_new(struct resolve_base *rb, const char *upstream,
    const struct addr *server, uint64_t interval_ms, resolve_cb cb, void *arg)
{
	struct resolve *r;

	r = xcalloc(1, sizeof(*r));
	r->rb = rb;
	snprintf(r->upstream, sizeof(r->upstream), "%s", upstream);
	snprintf(r->host, sizeof(r->host), "%s", server->host);
	snprintf(r->port, sizeof(r->port), "%u", (unsigned)server->port);
	r->interval_ms = interval_ms;
	r->cb = cb;
	r->cb_arg = arg;
	r->timer = evtimer_new(rb->base, resolve_timer_cb, r);
	rb->unsettled++;
	resolve_lookup(r);
	return r;
}

/* A reload: take the interval and look the name up again now. */
void
resolve_reload(struct resolve *r, uint64_t interval_ms)
{
	r->interval_ms = interval_ms;
	if (r->ticket != NULL) {
		r->again = true;
		return;
	}
	evtimer_del(r->timer);
	resolve_lookup(r);
}

/* Stop the lookups; one in flight calls back to its ticket only. */
void
resolve_free(struct resolve *r)
{
	if (r == NULL)
		return;
	if (r->ticket != NULL) {
		r->ticket->owner = NULL;
		if (r->req != NULL)
			evdns_getaddrinfo_cancel(r->req);
	}
	if (!r->answered)
		r->rb->unsettled--;
	event_free(r->timer);
	free(r->addrs);
	free(r);
}

/* -t: a resolve's news is kept in the resolve itself; nothing to do. */
static void
resolve_check_cb(void *arg, enum resolve_news news, const struct addr *addrs,
    size_t n)
{
	(void)arg;
	(void)news;
	(void)addrs;
	(void)n;
}

/* -t: libevent's own lines ("nameserver failed") would only be noise. */
static void
resolve_check_log(int severity, const char *msg)
{
	(void)severity;
	(void)msg;
}

/* Look up every host-name server once and warn about those that fail. */
unsigned
resolve_check(const struct config *conf, FILE *f)
{
	const struct upstream_conf *uc;
	struct event_base *base;
	struct resolve_base *rb;
	struct resolve **rs;
	unsigned warned = 0;
	char *cause = NULL;
	size_t i, n = 0;

	for (i = 0; i < conf->nupstreams; i++)
		n += conf->upstreams[i].server.name ? 1 : 0;
	if (n == 0)
		return 0;
	event_set_log_callback(resolve_check_log);
	if ((base = event_base_new()) == NULL)
		fatalx("cannot create an event base");
	if ((rb = resolve_base_new(base, conf->resolver, &cause)) == NULL) {
		fprintf(f, "%s%s: warning: %s: host names cannot be checked\n",
		    log_stderr_prefix(LOG_LEVEL_WARNING), conf->path, cause);
		free(cause);
		event_base_free(base);
		return 1;
	}
	rb->quiet = true;
	rs = xcalloc(conf->nupstreams, sizeof(*rs));
	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		if (uc->server.name)
			rs[i] = resolve_new(rb, uc->name, &uc->server, 0,
			    resolve_check_cb, NULL);
	}
	resolve_base_settle(rb, RESOLVE_CHECK_MS);
	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		if (rs[i] == NULL || rs[i]->naddrs > 0)
			continue;
		fprintf(f,
		    "%s%s:%d: warning: upstream '%s': server '%s' does not "
		    "resolve (%s); it is tried again every second at run "
		    "time\n",
		    log_stderr_prefix(LOG_LEVEL_WARNING), conf->path,
		    uc->server_line, uc->name, uc->server.text,
		    rs[i]->answered ? rs[i]->error : "no answer in time");
		warned++;
	}
	for (i = 0; i < conf->nupstreams; i++)
		resolve_free(rs[i]);
	free(rs);
	resolve_base_free(rb);
	event_base_free(base);
	return warned;
}
