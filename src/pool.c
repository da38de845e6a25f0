/*
 * A running pool: members by reference, counters, the reject-log limiter.
 * Which member gets a client is decided in admit.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "util.h"

/* Write the members of a pool's section: entries first, then the count. */
static void
pool_members_set(struct pool *p, const struct pool_conf *pc,
    struct upstream *const *ups)
{
	size_t i;

	for (i = 0; i < pc->nmembers; i++)
		atomic_store_explicit(&p->member[i], ups[pc->member_index[i]],
		    memory_order_release);
	atomic_store_explicit(&p->nmembers, (unsigned)pc->nmembers,
	    memory_order_release);
}

/* Create the running pool of a section. */
struct pool *
pool_new(const struct pool_conf *pc, struct upstream *const *ups,
    uint64_t now_ms)
{
	struct pool *p = xcalloc(1, sizeof(*p));

	memcpy(p->name, pc->name, sizeof(p->name));
	atomic_init(&p->conf, pc);
	pthread_mutex_init(&p->rl_lock, NULL);
	p->rl_since_ms = now_ms;
	pool_members_set(p, pc, ups);
	return p;
}

/* Point a kept pool at its section of a new config (main thread). */
void
pool_set_conf(struct pool *p, const struct pool_conf *pc,
    struct upstream *const *ups)
{
	pool_members_set(p, pc, ups);
	atomic_store_explicit(&p->conf, pc, memory_order_release);
}

/* Free a pool no listener or relay points at any more. */
void
pool_free(struct pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_destroy(&p->rl_lock);
	free(p);
}

/* Copy the pool's figures out for rendering. */
void
pool_snapshot(struct pool *p, struct stats_pool *sp)
{
	static const char *balances[] = {
		[POOL_BALANCE_ROUNDROBIN] = "roundrobin",
		[POOL_BALANCE_LEASTCONN] = "leastconn",
		[POOL_BALANCE_FIRST] = "first",
	};
	const struct pool_conf *pc = pool_conf(p);

	memset(sp, 0, sizeof(*sp));
	sp->name = p->name;
	sp->balance = balances[pc->balance];
	sp->members = pc->members;
	sp->nmembers = pc->nmembers;
	sp->listen = pc->listen;
	sp->nlisten = pc->nlisten;
	sp->clients_total = atomic_load(&p->clients_total);
	sp->rejected_total = atomic_load(&p->rejected_total);
	sp->retried_total = atomic_load(&p->retried_total);
	sp->active = atomic_load(&p->active);
	sp->retry_after_ms = -1;
}

/* May this reject get its own line, under the pool's budget? */
bool
pool_log_allowed(struct pool *p, uint64_t now_ms)
{
	unsigned limit = pool_conf(p)->log_rejects_per_second;
	uint64_t second = now_ms / 1000;
	bool ok;

	pthread_mutex_lock(&p->rl_lock);
	if (second != p->rl_second) {
		p->rl_second = second;
		p->rl_logged = 0;
	}
	ok = p->rl_logged < limit;
	if (ok)
		p->rl_logged++;
	else
		p->rl_suppressed++;
	pthread_mutex_unlock(&p->rl_lock);
	return ok;
}

/* Log how many reject lines were summed since the last call. */
void
pool_log_summary_flush(struct pool *p, uint64_t now_ms)
{
	uint64_t n, since;
	char period[32];

	pthread_mutex_lock(&p->rl_lock);
	n = p->rl_suppressed;
	p->rl_suppressed = 0;
	since = p->rl_since_ms;
	p->rl_since_ms = now_ms;
	pthread_mutex_unlock(&p->rl_lock);
	if (n > 0)
		log_notice("event=reject_summary pool=%s rejected=%" PRIu64
			   " period=%s",
		    p->name, n,
		    util_fmt_secs(period, sizeof(period), now_ms - since));
}
