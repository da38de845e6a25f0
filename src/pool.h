/*
 * A running pool: its members (running upstreams, each with its own
 * breaker), the round-robin cursor, its counters and its reject-log
 * limiter. Like an upstream it outlives any one config: a reload keeps the
 * pool of a name that stays, with its totals, and gives it the new members.
 */
#ifndef CP_POOL_H
#define CP_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "stats.h"

struct upstream;

struct pool {
	char name[UPSTREAM_NAME_MAX + 1];
	/* Swapped by a reload while workers read it: see pool_conf(). */
	_Atomic(const struct pool_conf *) conf;
	/*
	 * The members, in order. A reload writes the entries, then the
	 * count; a worker that reads a mix of old and new members for one
	 * client does no harm, and an upstream a reload dropped is freed
	 * only once every worker has seen the reload and its relays ended.
	 */
	_Atomic(struct upstream *) member[POOL_MEMBERS_MAX];
	_Atomic unsigned nmembers;
	_Atomic unsigned cursor; /* roundrobin: where the next search starts */
	_Atomic unsigned refs;	 /* relays of its clients */
	_Atomic unsigned active; /* those relaying (not being turned away) */

	_Atomic uint64_t clients_total;
	_Atomic uint64_t rejected_total;
	_Atomic uint64_t retried_total;

	/* Reject lines allowed this second, and those summed instead. */
	pthread_mutex_t rl_lock;
	uint64_t rl_second;
	unsigned rl_logged;
	uint64_t rl_suppressed;
	uint64_t rl_since_ms; /* last summary flush */
};

/* ups[i] is the running upstream of config->upstreams[i]. */
struct pool *pool_new(const struct pool_conf *, struct upstream *const *ups,
    uint64_t now_ms);
/* Point a kept pool at its section of a new config (main thread). */
void pool_set_conf(struct pool *, const struct pool_conf *,
    struct upstream *const *ups);
void pool_free(struct pool *);

/* The pool's section of the running config. */
static inline const struct pool_conf *
pool_conf(struct pool *p)
{
	return atomic_load_explicit(&p->conf, memory_order_acquire);
}

/* Add n to one of the pool's totals (any worker). */
static inline void
pool_count(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/*
 * Copy the pool's figures out for rendering (admitting and retry_after
 * come from its members: stats_pool_members()). Strings point into the
 * running config: render before the main loop turns again.
 */
void pool_snapshot(struct pool *, struct stats_pool *);
/* May this reject of the pool get its own log line (else it is summed)? */
bool pool_log_allowed(struct pool *, uint64_t now_ms);
/* Log the summary line of the reject lines summed since the last call. */
void pool_log_summary_flush(struct pool *, uint64_t now_ms);

#endif
