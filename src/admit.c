/*
 * Admission: the walk over the candidates of a client. For a client of an
 * upstream's own listener they are the upstream and its chain of backups
 * (balance = first; the upstream itself is charged the reject when none
 * admits, and a full backup turns the client away as its overload). For a
 * client of a pool they are its members in the order of its balance,
 * skipping those already tried; a member that would turn the client away
 * is skipped and not charged (SPEC.md 4).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "admit.h"
#include "addr.h"
#include "log.h"
#include "pool.h"
#include "upstream.h"
#include "util.h"

/* Backups followed at most (a reload may briefly link them in a ring). */
#define ADMIT_BACKUP_HOPS 16
#define ADMIT_CANDIDATES_MAX                                                   \
	(POOL_MEMBERS_MAX > ADMIT_BACKUP_HOPS + 1 ? POOL_MEMBERS_MAX           \
						  : ADMIT_BACKUP_HOPS + 1)
#define ADMIT_PEER_MAX 64

static const char *admit_states[] = {
	[BREAKER_REJECT_OPEN] = "open",
	[BREAKER_REJECT_HALF_OPEN] = "half_open",
	[BREAKER_REJECT_FORCED_OPEN] = "forced_open",
};

/* The candidates of one client, in the order they are tried. */
struct admit_walk {
	struct upstream *cand[ADMIT_CANDIDATES_MAX];
	unsigned index[ADMIT_CANDIDATES_MAX]; /* pool: member index */
	size_t n;
	bool chain; /* a backup chain, not a pool */
};

/* Take a slot under max_connections; false if the upstream is full. */
static bool
admit_take_slot(struct upstream *up)
{
	unsigned max = upstream_conf(up)->max_connections;

	if (atomic_fetch_add(&up->active, 1) < max || max == 0)
		return true;
	atomic_fetch_sub(&up->active, 1);
	return false;
}

/* dry_run: the line of a reject that was not carried out. */
static void
admit_log_dry_run(struct upstream *up, const struct breaker_ticket *t,
    const struct sockaddr *sa, socklen_t salen, uint64_t now)
{
	char client[ADMIT_PEER_MAX], retry[32];

	if (upstream_log_allowed(up, UPSTREAM_LOG_REJECT, now))
		log_notice("event=reject upstream=%s client=%s state=%s "
			   "retry_after=%s dry_run=yes",
		    up->name, addr_format(sa, salen, client, sizeof(client)),
		    breaker_state_name(t->state),
		    util_fmt_secs(retry, sizeof(retry), t->retry_after_ms));
}

/* Has this client already been tried on up? */
static bool
admit_was_tried(const struct admit *a, const struct upstream *up)
{
	unsigned i;

	for (i = 0; i < a->tries; i++)
		if (a->tried[i] == up)
			return true;
	return false;
}

/* An upstream and its backups, to the end of the chain or a loop. */
static void
admit_walk_chain(struct admit_walk *wk, struct upstream *up)
{
	struct upstream *b;

	wk->chain = true;
	wk->n = 0;
	wk->cand[wk->n++] = up;
	for (b = upstream_backup(up);
	     b != NULL && b != up && wk->n <= ADMIT_BACKUP_HOPS;
	     b = upstream_backup(b))
		wk->cand[wk->n++] = b;
}

/* A pool's members not tried yet, in the order its balance tries them. */
static void
admit_walk_pool(struct admit_walk *wk, struct pool *p, const struct admit *a)
{
	unsigned n = atomic_load_explicit(&p->nmembers, memory_order_acquire);
	unsigned start = 0, i, k, j;
	enum pool_balance bal = pool_conf(p)->balance;
	struct upstream *m;

	wk->chain = false;
	wk->n = 0;
	if (n == 0)
		return;
	if (bal == POOL_BALANCE_ROUNDROBIN)
		start =
		    atomic_load_explicit(&p->cursor, memory_order_relaxed) % n;
	for (i = 0; i < n; i++) {
		k = (start + i) % n;
		m = atomic_load_explicit(&p->member[k], memory_order_acquire);
		if (admit_was_tried(a, m))
			continue;
		j = (unsigned)wk->n++;
		/* leastconn: insertion by active relays, ties in order. */
		if (bal == POOL_BALANCE_LEASTCONN)
			for (; j > 0 &&
			     atomic_load(&wk->cand[j - 1]->active) >
				 atomic_load(&m->active);
			     j--) {
				wk->cand[j] = wk->cand[j - 1];
				wk->index[j] = wk->index[j - 1];
			}
		wk->cand[j] = m;
		wk->index[j] = k;
	}
}

/* The candidate up takes the client with ticket t (its slot is taken). */
static void
admit_give(struct admit *a, struct upstream *up, const struct breaker_ticket *t)
{
	a->kind = ADMIT_RELAY;
	a->up = up;
	a->ticket = *t;
	a->holds_slot = true;
	if (a->tries < POOL_RETRIES_MAX + 1)
		a->tried[a->tries] = up;
	a->tries++;
}

/* Log and count an overload reject of up, or of the pool when up is NULL. */
static void
admit_overload(struct admit *a, struct upstream *up, unsigned w,
    const struct sockaddr *sa, socklen_t salen, uint64_t now)
{
	char client[ADMIT_PEER_MAX];

	a->kind = ADMIT_OVERLOAD;
	a->up = up;
	if (up == NULL) {
		pool_count(&a->pool->rejected_total, 1);
		if (pool_log_allowed(a->pool, now))
			log_notice("event=reject pool=%s client=%s "
				   "reason=overload",
			    a->pool->name,
			    addr_format(sa, salen, client, sizeof(client)));
		return;
	}
	upstream_count(up, w, UC_rejected_overload_total, 1);
	if (upstream_log_allowed(up, UPSTREAM_LOG_REJECT, now))
		log_notice("event=reject upstream=%s client=%s reason=overload "
			   "max_connections=%u",
		    up->name, addr_format(sa, salen, client, sizeof(client)),
		    upstream_conf(up)->max_connections);
}

/* Log a breaker reject and fill in what the reply says. */
static void
admit_reject(struct admit *a, struct upstream *by, const char *state,
    int64_t retry_after_ms, const struct sockaddr *sa, socklen_t salen,
    uint64_t now)
{
	const struct upstream_conf *uc = upstream_conf(by);
	char client[ADMIT_PEER_MAX], retry[32];

	a->kind = ADMIT_REJECT;
	a->state = state;
	a->retry_after_ms = retry_after_ms;
	a->recovery_timeout_ms = uc->breaker.recovery_timeout_ms;
	a->connect_timeout_ms = uc->connect_timeout_ms;
	util_fmt_secs(retry, sizeof(retry), retry_after_ms);
	if (a->pool != NULL) {
		a->up = NULL;
		a->name = a->pool->name;
		a->reject = pool_conf(a->pool)->reject;
		pool_count(&a->pool->rejected_total, 1);
		if (pool_log_allowed(a->pool, now))
			log_notice("event=reject pool=%s client=%s state=%s "
				   "retry_after=%s",
			    a->pool->name,
			    addr_format(sa, salen, client, sizeof(client)),
			    state, retry);
		return;
	}
	a->up = by;
	a->name = by->name;
	a->reject = uc->reject;
	if (upstream_log_allowed(by, UPSTREAM_LOG_REJECT, now))
		log_notice("event=reject upstream=%s client=%s state=%s "
			   "retry_after=%s",
		    by->name, addr_format(sa, salen, client, sizeof(client)),
		    state, retry);
}

/*
 * Walk the candidates: the first whose breaker admits the client and that
 * has a free slot gets it. True when one did, or when a backup chain
 * turned the client away as an overload; false when none took it (then
 * *soonest is the candidate with the soonest retry-after, *st its ticket,
 * and *full says whether a pool member would have taken it but for its
 * max_connections).
 */
static bool
admit_walk_run(struct admit *a, const struct admit_walk *wk, unsigned w,
    const struct sockaddr *sa, socklen_t salen, uint64_t now,
    struct upstream **soonest, struct breaker_ticket *st, bool *full)
{
	struct breaker_ticket t, first;
	struct upstream *c;
	char client[ADMIT_PEER_MAX];
	size_t i;

	memset(&first, 0, sizeof(first));
	*soonest = NULL;
	*full = false;
	for (i = 0; i < wk->n; i++) {
		c = wk->cand[i];
		breaker_admit(c->breaker, now, &t);
		if (!t.admitted) {
			/* Only a chain's own upstream is charged the reject. */
			if (wk->chain && i == 0)
				first = t;
			else
				breaker_unreject(c->breaker, &t);
			if (*soonest == NULL ||
			    (t.retry_after_ms >= 0 &&
				(st->retry_after_ms < 0 ||
				    t.retry_after_ms < st->retry_after_ms))) {
				*soonest = c;
				*st = t;
			}
			continue;
		}
		if (t.verdict != BREAKER_ADMITTED)
			admit_log_dry_run(c, &t, sa, salen, now);
		if (!admit_take_slot(c)) {
			breaker_cancel(c->breaker, &t);
			if (wk->chain) {
				/* SPEC 4: c turns the client away, as c's overload. */
				if (i > 0)
					breaker_unreject(wk->cand[0]->breaker,
					    &first);
				admit_overload(a, c, w, sa, salen, now);
				return true;
			}
			*full = true;
			continue;
		}
		if (wk->chain && i > 0) {
			breaker_unreject(wk->cand[0]->breaker, &first);
			upstream_count(wk->cand[0], w, UC_failover_total, 1);
			if (upstream_log_allowed(wk->cand[0],
				UPSTREAM_LOG_FAILOVER, now))
				log_notice("event=failover upstream=%s "
					   "backup=%s client=%s state=%s",
				    wk->cand[0]->name, c->name,
				    addr_format(sa, salen, client,
					sizeof(client)),
				    breaker_state_name(first.state));
		}
		if (!wk->chain &&
		    pool_conf(a->pool)->balance == POOL_BALANCE_ROUNDROBIN)
			atomic_store_explicit(&a->pool->cursor,
			    wk->index[i] + 1, memory_order_relaxed);
		admit_give(a, c, &t);
		return true;
	}
	if (wk->chain) {
		*soonest = wk->cand[0];
		*st = first;
	}
	return false;
}

/* Decide for a client accepted on up's listener or on pool's. */
void
admit_client(struct admit *a, struct upstream *up, struct pool *pool,
    unsigned w, const struct sockaddr *sa, socklen_t salen, uint64_t now)
{
	struct admit_walk wk;
	struct breaker_ticket st;
	struct upstream *soonest;
	bool full;

	a->pool = pool;
	a->tries = 0;
	a->holds_slot = false;
	a->holds_pool = false;
	if (pool != NULL) {
		pool_count(&pool->clients_total, 1);
		admit_walk_pool(&wk, pool, a);
	} else {
		upstream_count(up, w, UC_connections_total, 1);
		admit_walk_chain(&wk, up);
	}
	if (admit_walk_run(a, &wk, w, sa, salen, now, &soonest, &st, &full)) {
		if (a->kind == ADMIT_RELAY && pool != NULL) {
			atomic_fetch_add(&pool->active, 1);
			a->holds_pool = true;
		}
		return;
	}
	/*
	 * Some member would take it but is full, or a pool has no member
	 * left (a reload emptied it): an overload.
	 */
	if (full || soonest == NULL) {
		admit_overload(a, NULL, w, sa, salen, now);
		return;
	}
	admit_reject(a, soonest, admit_states[st.verdict], st.retry_after_ms,
	    sa, salen, now);
}

/* Move a pool's client whose attempt failed to another admitting member. */
bool
admit_retry(struct admit *a, unsigned w, const struct sockaddr *sa,
    socklen_t salen, uint64_t now)
{
	struct admit_walk wk;
	struct breaker_ticket st;
	struct upstream *soonest, *old = a->up;
	struct admit b;
	bool full;

	if (a->pool == NULL || a->tries > pool_conf(a->pool)->retries ||
	    a->tries > POOL_RETRIES_MAX)
		return false;
	admit_walk_pool(&wk, a->pool, a);
	b = *a;
	/*
	 * No member left that admits it and has room (SPEC.md 4): the client
	 * is reset as a failed attempt, its one story, and is neither logged
	 * nor counted as an overload reject besides.
	 */
	if (!admit_walk_run(&b, &wk, w, sa, salen, now, &soonest, &st, &full) ||
	    b.kind != ADMIT_RELAY)
		return false;
	if (a->holds_slot)
		atomic_fetch_sub(&old->active, 1);
	*a = b;
	pool_count(&a->pool->retried_total, 1);
	return true;
}

/* Record the attempt's outcome on its member's breaker. */
void
admit_record(struct admit *a, bool success, enum breaker_error err,
    uint64_t now)
{
	breaker_record(a->up->breaker, &a->ticket, success, err, now);
}

/* End the attempt with no outcome. */
void
admit_cancel(struct admit *a)
{
	breaker_cancel(a->up->breaker, &a->ticket);
}

/* Give back the max_connections slot the relay held. */
void
admit_release(struct admit *a)
{
	if (a->holds_slot)
		atomic_fetch_sub(&a->up->active, 1);
	if (a->holds_pool)
		atomic_fetch_sub(&a->pool->active, 1);
	a->holds_slot = a->holds_pool = false;
}
