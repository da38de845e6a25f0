/*
 * A running upstream: its breaker, its counters and its reject-log limiter.
 * It outlives any one config: a reload keeps the upstream of a name that
 * stays, with its breaker state and totals, and points it at the new
 * upstream_conf.
 */
#ifndef CP_UPSTREAM_H
#define CP_UPSTREAM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"
#include "stats.h"

struct event;
struct event_base;
struct probe;
struct resolve;
struct resolve_base;
struct upstream;

/* Told on the main thread after the upstream's breaker changed state. */
typedef void (*upstream_changed_cb)(struct upstream *, void *);

/* Per-client lines under log_rejects_per_second, each with its summary. */
enum upstream_log_kind {
	UPSTREAM_LOG_REJECT,   /* summed in event=reject_summary rejected= */
	UPSTREAM_LOG_FAILOVER, /* summed in event=failover_summary failovers= */
	UPSTREAM_LOG_KINDS
};

/*
 * One worker's share of the counters. Only that worker writes it (relaxed
 * load+store, no locked instruction on the data path); readers sum them.
 */
struct upstream_counters {
	_Atomic uint64_t v[UC_COUNT]; /* the WK rows of STATS_COUNTERS */
	_Atomic uint64_t hist[STATS_HIST_BUCKETS + 1]; /* connect durations */
	_Atomic uint64_t hist_sum_us;
} __attribute__((aligned(64)));

struct upstream;

/*
 * News for the owner, on the main thread: the breaker may have changed state
 * (it runs after every transition and every breaker timer).
 */
typedef void (*upstream_change_cb)(struct upstream *, void *);

struct upstream {
	char name[UPSTREAM_NAME_MAX + 1];
	/*
	 * Swapped by a reload while workers read them: read them through
	 * upstream_conf() and upstream_backup().
	 */
	_Atomic(const struct upstream_conf *) conf;
	_Atomic(struct upstream *) backup;
	_Atomic unsigned log_rejects_per_second;
	struct breaker *breaker;
	struct event *tick_ev; /* main thread: breaker deadlines */
	/* Set by the transition callback (any thread), taken by tick_ev. */
	_Atomic bool changed;
	upstream_changed_cb changed_cb;
	void *changed_arg;
	_Atomic bool tick_wanted; /* a wake-up since upstream_tick() looked */
	struct probe *probe;	  /* main thread: recovery_probe = connect */

	/*
	 * The server's addresses, used in rotation: the literal address, or
	 * the host name's last good answer (none yet: attempts fail as dns).
	 * Written on the main thread, copied out by workers, under addr_lock.
	 */
	pthread_mutex_t addr_lock;
	struct addr *addrs;
	size_t naddrs;
	size_t addr_next;
	struct resolve_base *resolver; /* main thread; NULL: none */
	struct resolve *resolve;       /* main thread: the name's lookups */
	bool resolve_fresh; /* no answer yet since the name changed */
	_Atomic uint64_t resolve_errors;

	_Atomic unsigned active;	    /* open relays, all workers */
	_Atomic unsigned refs;		    /* relays pointing here */
	struct upstream_counters *counters; /* one per worker */
	unsigned ncounters;

	/* Lines allowed this second, and those summed instead, per kind. */
	pthread_mutex_t rl_lock;
	struct upstream_log_budget {
		uint64_t second;
		unsigned logged;
		uint64_t suppressed;
	} rl[UPSTREAM_LOG_KINDS];
	uint64_t rl_since_ms; /* last summary flush */
};

struct upstream *upstream_new(struct event_base *, const struct config *,
    const struct upstream_conf *, unsigned nworkers, uint64_t now_ms,
    upstream_changed_cb, void *);
void upstream_free(struct upstream *);
void upstream_set_conf(struct upstream *, const struct config *,
    const struct upstream_conf *, uint64_t now_ms);

/* Look the server's host name up with this resolver (main thread). */
void upstream_set_resolver(struct upstream *, struct resolve_base *);
/*
 * The server address for this attempt, the next in rotation, copied to out
 * (any thread). -1 when a host-name server has no address yet.
 */
int upstream_server_addr(struct upstream *, struct addr *);

/* The upstream's section of the running config. */
static inline const struct upstream_conf *
upstream_conf(struct upstream *up)
{
	return atomic_load_explicit(&up->conf, memory_order_acquire);
}

/* The upstream used while this one's circuit is open, or NULL. */
static inline struct upstream *
upstream_backup(struct upstream *up)
{
	return atomic_load_explicit(&up->backup, memory_order_acquire);
}

/* Add n to a counter from worker w (the only writer of that slot). */
static inline void
upstream_count(struct upstream *up, unsigned w, enum upstream_counter c,
    uint64_t n)
{
	_Atomic uint64_t *p = &up->counters[w].v[c];

	atomic_store_explicit(p,
	    atomic_load_explicit(p, memory_order_relaxed) + n,
	    memory_order_relaxed);
}

/* Count one established connect that took us microseconds, from worker w. */
static inline void
upstream_count_connect(struct upstream *up, unsigned w, uint64_t us)
{
	struct upstream_counters *c = &up->counters[w];
	_Atomic uint64_t *p = &c->hist[stats_hist_bucket(us)];

	atomic_store_explicit(p,
	    atomic_load_explicit(p, memory_order_relaxed) + 1,
	    memory_order_relaxed);
	atomic_store_explicit(&c->hist_sum_us,
	    atomic_load_explicit(&c->hist_sum_us, memory_order_relaxed) + us,
	    memory_order_relaxed);
}

/*
 * Take the upstream's figures for rendering: the breaker's under its lock,
 * the workers' counters summed. Strings point into the running config, so
 * render before the main loop turns again. wall_offset_ms: see
 * stats_from_breaker().
 */
void upstream_snapshot(struct upstream *, uint64_t now_ms,
    int64_t wall_offset_ms, struct stats_upstream *);

/* May this reject get its own log line (else it is summed)? */
bool upstream_log_allowed(struct upstream *, enum upstream_log_kind,
    uint64_t now_ms);
/* Log the summary lines of what was summed since the last call. */
void upstream_log_summary_flush(struct upstream *, uint64_t now_ms);
/*
 * A manual override was applied (any thread): tell the owner even when the
 * state stayed the same, since its lifetime may have changed (state_file).
 */
void upstream_overridden(struct upstream *);
/* Stop the recovery probes for good (reload removed it, or shutdown). */
void upstream_stop_probes(struct upstream *);
/* Apply due breaker timers and rearm (main thread). */
void upstream_tick(struct upstream *, uint64_t now_ms);

#endif
