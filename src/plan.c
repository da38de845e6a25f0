/*
 * The plan of a start or a reload (see plan.h): the old config against the
 * new one, and the sockets bound now against the new listen addresses. A
 * value the daemon acts on and the unit tests read; nothing is bound here.
 */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "plan.h"
#include "util.h"

/* Room for a key's value as text (a long listen list included). */
#define PLAN_VALUE_MAX 2048

/* Does any key of this scope read differently in the two sections? */
static bool
plan_section_changed(enum config_scope scope, const void *was, const void *now)
{
	const struct config_key *keys;
	char a[PLAN_VALUE_MAX], b[PLAN_VALUE_MAX];
	size_t i, n;

	keys = config_keys(&n);
	for (i = 0; i < n; i++) {
		if (keys[i].scope != scope)
			continue;
		config_section_key_value(was, &keys[i], a, sizeof(a));
		config_section_key_value(now, &keys[i], b, sizeof(b));
		if (strcmp(a, b) != 0)
			return true;
	}
	return false;
}

/* Kept, changed or added: each upstream of conf against old. */
static void
plan_upstreams(struct plan *p, const struct config *old,
    const struct config *conf)
{
	const struct upstream_conf *was;
	size_t i;

	p->nupstreams = conf->nupstreams;
	p->upstreams = xcalloc(conf->nupstreams + 1, sizeof(*p->upstreams));
	for (i = 0; i < conf->nupstreams; i++) {
		was = old != NULL
		    ? config_find_upstream(old, conf->upstreams[i].name)
		    : NULL;
		p->upstreams[i].was =
		    was != NULL ? (size_t)(was - old->upstreams) : PLAN_NONE;
		if (was == NULL) {
			p->upstreams[i].fate = PLAN_ADD;
			p->nadded++;
		} else
			p->upstreams[i].fate =
			    plan_section_changed(CONFIG_SCOPE_UPSTREAM, was,
				&conf->upstreams[i])
			    ? PLAN_CHANGE
			    : PLAN_KEEP;
	}
	p->removed =
	    xcalloc(old != NULL ? old->nupstreams + 1 : 1, sizeof(*p->removed));
	for (i = 0; old != NULL && i < old->nupstreams; i++)
		if (config_find_upstream(conf, old->upstreams[i].name) == NULL)
			p->removed[p->nremoved++] = i;
}

/* Kept, changed or added: each pool of conf against old. */
static void
plan_pools(struct plan *p, const struct config *old, const struct config *conf)
{
	const struct pool_conf *was;
	size_t i;

	p->npools = conf->npools;
	p->pools = xcalloc(conf->npools + 1, sizeof(*p->pools));
	for (i = 0; i < conf->npools; i++) {
		was = old != NULL ? config_find_pool(old, conf->pools[i].name)
				  : NULL;
		p->pools[i].was =
		    was != NULL ? (size_t)(was - old->pools) : PLAN_NONE;
		if (was == NULL)
			p->pools[i].fate = PLAN_ADD;
		else
			p->pools[i].fate =
			    plan_section_changed(CONFIG_SCOPE_POOL, was,
				&conf->pools[i])
			    ? PLAN_CHANGE
			    : PLAN_KEEP;
	}
	p->pools_removed = xcalloc(old != NULL ? old->npools + 1 : 1,
	    sizeof(*p->pools_removed));
	for (i = 0; old != NULL && i < old->npools; i++)
		if (config_find_pool(conf, old->pools[i].name) == NULL)
			p->pools_removed[p->npools_removed++] = i;
}

/* Add one listen address: kept if a bound socket has it, else to bind. */
static void
plan_listen_add(struct plan *p, const struct addr *a, size_t up, size_t pool,
    const struct addr *bound, size_t nbound)
{
	struct plan_listen *pl = &p->listens[p->nlistens++];
	size_t k;

	pl->addr = a;
	pl->upstream = up;
	pl->pool = pool;
	pl->bound = PLAN_NONE;
	for (k = 0; k < nbound && pl->bound == PLAN_NONE; k++)
		if (addr_same(&bound[k], a))
			pl->bound = k;
	if (pl->bound == PLAN_NONE)
		p->nbind++;
	else
		p->bound[pl->bound] = PLAN_KEEP;
}

/*
 * Every listen address of conf, upstreams' then pools', and what becomes
 * of each bound socket: kept, closed, or closed first because a new
 * address needs its port (127.0.0.1:P giving way to *:P, or back).
 */
static void
plan_listens(struct plan *p, const struct config *conf,
    const struct addr *bound, size_t nbound)
{
	size_t i, j, k, n = 0;

	for (i = 0; i < conf->nupstreams; i++)
		n += conf->upstreams[i].nlisten;
	for (i = 0; i < conf->npools; i++)
		n += conf->pools[i].nlisten;
	p->listens = xcalloc(n + 1, sizeof(*p->listens));
	p->nbound = nbound;
	p->bound = xcalloc(nbound + 1, sizeof(*p->bound));
	for (k = 0; k < nbound; k++)
		p->bound[k] = PLAN_REMOVE;
	for (i = 0; i < conf->nupstreams; i++)
		for (j = 0; j < conf->upstreams[i].nlisten; j++)
			plan_listen_add(p, &conf->upstreams[i].listen[j], i,
			    PLAN_NONE, bound, nbound);
	for (i = 0; i < conf->npools; i++)
		for (j = 0; j < conf->pools[i].nlisten; j++)
			plan_listen_add(p, &conf->pools[i].listen[j], PLAN_NONE,
			    i, bound, nbound);
	for (k = 0; k < nbound; k++)
		for (i = 0; i < p->nlistens && p->bound[k] == PLAN_REMOVE; i++)
			if (addr_same_port(&bound[k], p->listens[i].addr))
				p->bound[k] = PLAN_SHUT;
}

/* The admin endpoint: kept where it is, bound anew, closed, or none. */
static enum plan_admin
plan_admin(const struct config *old, const struct config *conf)
{
	bool was = old != NULL && old->admin_enabled;

	if (!conf->admin_enabled)
		return was ? PLAN_ADMIN_CLOSE : PLAN_ADMIN_NONE;
	if (was && addr_same(&old->admin, &conf->admin))
		return PLAN_ADMIN_KEEP;
	return PLAN_ADMIN_BIND;
}

/* The [global] keys that changed but apply only at the next restart. */
static void
plan_restart_keys(struct plan *p, const struct config *old,
    const struct config *conf)
{
	const struct config_key *keys;
	char was[PLAN_VALUE_MAX], now[PLAN_VALUE_MAX];
	size_t i, n;

	keys = config_keys(&n);
	p->restart = xcalloc(n + 1, sizeof(*p->restart));
	for (i = 0; old != NULL && i < n; i++) {
		if (keys[i].scope != CONFIG_SCOPE_GLOBAL ||
		    (keys[i].flags & CONFIG_KEY_RELOADABLE))
			continue;
		config_key_value(old, NULL, &keys[i], was, sizeof(was));
		config_key_value(conf, NULL, &keys[i], now, sizeof(now));
		if (strcmp(was, now) != 0)
			p->restart[p->nrestart++] = &keys[i];
	}
}

/* The plan from old (NULL at start) to conf over the sockets bound now. */
struct plan *
plan_new(const struct config *old, const struct config *conf,
    const struct addr *bound, size_t nbound)
{
	struct plan *p = xcalloc(1, sizeof(*p));

	plan_upstreams(p, old, conf);
	plan_pools(p, old, conf);
	plan_listens(p, conf, bound, nbound);
	p->admin = plan_admin(old, conf);
	plan_restart_keys(p, old, conf);
	return p;
}

/* Free a plan (the configs it points into are not its own). */
void
plan_free(struct plan *p)
{
	if (p == NULL)
		return;
	free(p->upstreams);
	free(p->removed);
	free(p->pools);
	free(p->pools_removed);
	free(p->listens);
	free(p->bound);
	free(p->restart);
	free(p);
}
