/*
 * A running upstream: its breaker, per-worker counters, the breaker's timer
 * on the main thread, the state log lines, the reject-log limiter, and the
 * server's addresses (a host name's kept current by its resolve).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "probe.h"
#include "resolve.h"
#include "upstream.h"
#include "util.h"

static void upstream_tick_schedule(struct upstream *);

/*
 * Log a breaker transition and arm its timer. Runs under the breaker's lock,
 * so one upstream's state lines come out in the order of its transitions.
 */
static void
upstream_transition(const struct breaker_transition *t, void *arg)
{
	struct upstream *up = arg;
	enum log_level level = LOG_LEVEL_INFO;
	char retry[32], extra[128] = "";

	switch (t->to) {
	case BREAKER_OPEN:
		level = LOG_LEVEL_WARNING;
		if (t->reason == BREAKER_REASON_CONSECUTIVE)
			snprintf(extra, sizeof(extra), " failures=%u",
			    t->consecutive_failures);
		else if (t->reason == BREAKER_REASON_RATE)
			snprintf(extra, sizeof(extra),
			    " failures=%u attempts=%u", t->window_failures,
			    t->window_attempts);
		log_msg(level,
		    "event=state upstream=%s from=%s to=%s reason=%s%s "
		    "retry_after=%s",
		    up->name, breaker_state_name(t->from),
		    breaker_state_name(t->to), breaker_reason_name(t->reason),
		    extra,
		    util_fmt_secs(retry, sizeof(retry), t->retry_after_ms));
		break;
	case BREAKER_FORCED_OPEN:
		log_msg(LOG_LEVEL_WARNING,
		    "event=state upstream=%s from=%s to=%s reason=%s "
		    "retry_after=%s",
		    up->name, breaker_state_name(t->from),
		    breaker_state_name(t->to), breaker_reason_name(t->reason),
		    util_fmt_secs(retry, sizeof(retry), t->retry_after_ms));
		break;
	case BREAKER_FORCED_CLOSED:
		log_msg(LOG_LEVEL_NOTICE,
		    "event=state upstream=%s from=%s to=%s reason=%s", up->name,
		    breaker_state_name(t->from), breaker_state_name(t->to),
		    breaker_reason_name(t->reason));
		break;
	default:
		/* A person's or a clock's doing is a notice; recovery is info. */
		if (t->reason == BREAKER_REASON_MANUAL ||
		    t->reason == BREAKER_REASON_EXPIRED)
			level = LOG_LEVEL_NOTICE;
		log_msg(level,
		    "event=state upstream=%s from=%s to=%s reason=%s", up->name,
		    breaker_state_name(t->from), breaker_state_name(t->to),
		    breaker_reason_name(t->reason));
		break;
	}
	atomic_store(&up->changed, true);
	upstream_tick_schedule(up);
}

/*
 * Wake the main thread to (re)arm this breaker's timer. Any thread. The
 * flag comes first: upstream_tick() may be between reading the deadline
 * and arming the timer, where its evtimer_del/add cancels this wake-up;
 * it looks at the flag after arming.
 */
static void
upstream_tick_schedule(struct upstream *up)
{
	if (up->tick_ev == NULL)
		return;
	atomic_store(&up->tick_wanted, true);
	event_active(up->tick_ev, EV_TIMEOUT, 0);
}

/*
 * Apply due breaker timers, start a recovery probe if one is due, then arm
 * the timer for the next deadline.
 */
void
upstream_tick(struct upstream *up, uint64_t now)
{
	const struct upstream_conf *uc = upstream_conf(up);
	struct timeval tv;
	uint64_t next, wait;

	atomic_store(&up->tick_wanted, false);
	breaker_tick(up->breaker, now);
	/* A no-op unless half_open with no probe out (the breaker decides). */
	if (up->probe != NULL &&
	    uc->breaker.recovery_probe == BREAKER_PROBE_CONNECT) {
		struct addr sa;

		probe_start(up->probe,
		    upstream_server_addr(up, &sa) == 0 ? &sa : &uc->server,
		    uc->connect_timeout_ms, uc->slow_connect_ms,
		    uc->send_proxy);
	}
	next = breaker_next_deadline(up->breaker);
	if (next == 0)
		evtimer_del(up->tick_ev);
	else {
		wait = next > now ? next - now : 0;
		evtimer_add(up->tick_ev, util_timeval(&tv, wait));
	}
	/*
	 * A transition since the flag was cleared may have had its wake-up
	 * cancelled just now: run again (our own transitions cost one more).
	 */
	if (atomic_load(&up->tick_wanted))
		event_active(up->tick_ev, EV_TIMEOUT, 0);
}

/* A probe has ended: look again at once, on the main thread. */
static void
upstream_probe_done(void *arg)
{
	upstream_tick_schedule(arg);
}

/* Stop the recovery probes for good, a probe in progress given back. */
void
upstream_stop_probes(struct upstream *up)
{
	if (up->probe != NULL)
		probe_stop(up->probe);
}

/* Mark a manual override as news for the owner, and wake the timer. */
void
upstream_overridden(struct upstream *up)
{
	atomic_store(&up->changed, true);
	upstream_tick_schedule(up);
}

/* Main-thread timer callback for the breaker's deadlines. */
static void
upstream_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;

	(void)fd;
	(void)what;
	upstream_tick(up, util_now_ms());
	/* Runs after every transition: pass the news up. */
	if (atomic_exchange(&up->changed, false) && up->changed_cb != NULL)
		up->changed_cb(up, up->changed_arg);
}

/* Replace the address set (main thread); workers copy from it. */
static void
upstream_addrs_set(struct upstream *up, const struct addr *addrs, size_t n)
{
	struct addr *copy = NULL, *old;

	if (n > 0) {
		copy = xcalloc(n, sizeof(*copy));
		memcpy(copy, addrs, n * sizeof(*copy));
	}
	pthread_mutex_lock(&up->addr_lock);
	old = up->addrs;
	up->addrs = copy;
	up->naddrs = n;
	pthread_mutex_unlock(&up->addr_lock);
	free(old);
}

/* The address for this attempt, in rotation; -1 if there is none. */
int
upstream_server_addr(struct upstream *up, struct addr *out)
{
	int rc = -1;

	pthread_mutex_lock(&up->addr_lock);
	if (up->naddrs > 0) {
		*out = up->addrs[up->addr_next++ % up->naddrs];
		rc = 0;
	}
	pthread_mutex_unlock(&up->addr_lock);
	return rc;
}

/*
 * News from the name's lookups: a new set is used at once; a failure is
 * counted and keeps the set, unless the name is new (changed by a reload)
 * and this is its first answer.
 */
static void
upstream_resolved(void *arg, enum resolve_news news, const struct addr *addrs,
    size_t n)
{
	struct upstream *up = arg;

	if (news == RESOLVE_FAILED)
		atomic_fetch_add(&up->resolve_errors, 1);
	if (news == RESOLVE_CHANGED || up->resolve_fresh)
		upstream_addrs_set(up, addrs, n);
	up->resolve_fresh = false;
}

/*
 * Follow the server of a new config section (old: the previous one, or
 * NULL): a literal address is used at once; a host name is looked up
 * again (a reload), a new one with the addresses in use kept until its
 * first answer.
 */
static void
upstream_server_follow(struct upstream *up, const struct upstream_conf *old,
    const struct upstream_conf *uc)
{
	if (!uc->server.name) {
		resolve_free(up->resolve);
		up->resolve = NULL;
		if (old == NULL || old->server.name ||
		    strcmp(old->server.text, uc->server.text) != 0)
			upstream_addrs_set(up, &uc->server, 1);
		return;
	}
	if (up->resolve != NULL && old != NULL && old->server.name &&
	    strcmp(old->server.text, uc->server.text) == 0) {
		resolve_reload(up->resolve, uc->resolve_interval_ms);
		return;
	}
	resolve_free(up->resolve);
	up->resolve = NULL;
	if (old == NULL || up->resolver == NULL)
		upstream_addrs_set(up, NULL, 0);
	if (up->resolver == NULL)
		return;
	up->resolve_fresh = true;
	up->resolve = resolve_new(up->resolver, up->name, &uc->server,
	    uc->resolve_interval_ms, upstream_resolved, up);
}

/* Look the server's host name up with this resolver from now on. */
void
upstream_set_resolver(struct upstream *up, struct resolve_base *rb)
{
	up->resolver = rb;
	if (upstream_conf(up)->server.name)
		upstream_server_follow(up, NULL, upstream_conf(up));
}

/* Create the running upstream for a config section; cb hears of changes. */
struct upstream *
upstream_new(struct event_base *base, const struct config *conf,
    const struct upstream_conf *uc, unsigned nworkers, uint64_t now,
    upstream_changed_cb cb, void *arg)
{
	struct upstream *up;
	uint64_t seed;

	up = xcalloc(1, sizeof(*up));
	snprintf(up->name, sizeof(up->name), "%s", uc->name);
	atomic_init(&up->conf, uc);
	atomic_init(&up->backup, NULL);
	atomic_init(&up->log_rejects_per_second, conf->log_rejects_per_second);
	atomic_init(&up->changed, false);
	atomic_init(&up->tick_wanted, false);
	up->changed_cb = cb;
	up->changed_arg = arg;
	seed = now ^ ((uint64_t)(uintptr_t)up << 16) ^ (uint64_t)getpid();
	up->breaker = breaker_new(&uc->breaker, now, seed);
	breaker_set_callback(up->breaker, upstream_transition, up);
	up->ncounters = nworkers;
	up->counters = aligned_alloc(64, sizeof(*up->counters) * nworkers);
	if (up->counters == NULL)
		fatalx("out of memory");
	memset(up->counters, 0, sizeof(*up->counters) * nworkers);
	atomic_init(&up->active, 0);
	atomic_init(&up->refs, 0);
	pthread_mutex_init(&up->rl_lock, NULL);
	pthread_mutex_init(&up->addr_lock, NULL);
	atomic_init(&up->resolve_errors, 0);
	upstream_server_follow(up, NULL, uc);
	up->rl_since_ms = now;
	if (base != NULL) {
		up->tick_ev = evtimer_new(base, upstream_tick_cb, up);
		up->probe = probe_new(base, up->breaker, up->name,
		    upstream_probe_done, up);
	}
	return up;
}

/* Free a running upstream (no relay may still point at it). */
void
upstream_free(struct upstream *up)
{
	if (up == NULL)
		return;
	if (up->tick_ev != NULL)
		event_free(up->tick_ev);
	probe_free(up->probe);
	resolve_free(up->resolve);
	breaker_free(up->breaker);
	pthread_mutex_destroy(&up->rl_lock);
	pthread_mutex_destroy(&up->addr_lock);
	free(up->addrs);
	free(up->counters);
	free(up);
}

/* Point the upstream at a new config section, keeping state and totals. */
void
upstream_set_conf(struct upstream *up, const struct config *conf,
    const struct upstream_conf *uc, uint64_t now)
{
	const struct upstream_conf *old = upstream_conf(up);

	atomic_store_explicit(&up->conf, uc, memory_order_release);
	atomic_store(&up->log_rejects_per_second, conf->log_rejects_per_second);
	upstream_server_follow(up, old, uc);
	breaker_reconfigure(up->breaker, &uc->breaker, now);
}

/* Take the upstream's figures for rendering (see upstream.h). */
void
upstream_snapshot(struct upstream *up, uint64_t now, int64_t wall_offset_ms,
    struct stats_upstream *su)
{
	const struct upstream_conf *uc = upstream_conf(up);
	struct upstream *backup = upstream_backup(up);
	struct breaker_stats st;
	unsigned w, k;

	memset(su, 0, sizeof(*su));
	breaker_snapshot(up->breaker, now, &st);
	stats_from_breaker(su, &st, wall_offset_ms);
	su->name = up->name;
	su->listen = uc->listen;
	su->nlisten = uc->nlisten;
	su->server = uc->server.text;
	su->backup = backup != NULL ? backup->name : NULL;
	for (w = 0; w < up->ncounters; w++) {
		struct upstream_counters *c = &up->counters[w];

		for (k = 0; k < UC_COUNT; k++)
			if (!stats_counters[k].from_breaker)
				su->v[k] += atomic_load_explicit(&c->v[k],
				    memory_order_relaxed);
		for (k = 0; k <= STATS_HIST_BUCKETS; k++)
			su->hist[k] += atomic_load_explicit(&c->hist[k],
			    memory_order_relaxed);
		su->hist_sum_us +=
		    atomic_load_explicit(&c->hist_sum_us, memory_order_relaxed);
	}
	su->v[UC_active_connections] =
	    atomic_load_explicit(&up->active, memory_order_relaxed);
	su->v[UC_resolve_errors_total] =
	    atomic_load_explicit(&up->resolve_errors, memory_order_relaxed);
}

/*
 * Allow log_rejects_per_second lines of a kind in each second; the rest are
 * counted and reported by upstream_log_summary_flush() once a second.
 */
bool
upstream_log_allowed(struct upstream *up, enum upstream_log_kind kind,
    uint64_t now)
{
	unsigned limit = atomic_load_explicit(&up->log_rejects_per_second,
	    memory_order_relaxed);
	struct upstream_log_budget *b = &up->rl[kind];
	uint64_t second = now / 1000;
	bool ok;

	pthread_mutex_lock(&up->rl_lock);
	if (second != b->second) {
		b->second = second;
		b->logged = 0;
	}
	ok = b->logged < limit;
	if (ok)
		b->logged++;
	else
		b->suppressed++;
	pthread_mutex_unlock(&up->rl_lock);
	return ok;
}

/*
 * Called once a second: log how many lines of each kind were summed since
 * the last call, over the time since then.
 */
void
upstream_log_summary_flush(struct upstream *up, uint64_t now)
{
	uint64_t n[UPSTREAM_LOG_KINDS], since;
	char period[32];
	int k;

	pthread_mutex_lock(&up->rl_lock);
	for (k = 0; k < UPSTREAM_LOG_KINDS; k++) {
		n[k] = up->rl[k].suppressed;
		up->rl[k].suppressed = 0;
	}
	since = up->rl_since_ms;
	up->rl_since_ms = now;
	pthread_mutex_unlock(&up->rl_lock);
	util_fmt_secs(period, sizeof(period),
	    (int64_t)(now > since ? now - since : 0));
	if (n[UPSTREAM_LOG_REJECT] != 0)
		log_notice("event=reject_summary upstream=%s rejected=%" PRIu64
			   " period=%s",
		    up->name, n[UPSTREAM_LOG_REJECT], period);
	if (n[UPSTREAM_LOG_FAILOVER] != 0)
		log_notice("event=failover_summary upstream=%s "
			   "failovers=%" PRIu64 " period=%s",
		    up->name, n[UPSTREAM_LOG_FAILOVER], period);
}
