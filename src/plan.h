/*
 * The plan of a start or a reload: what the new config keeps, adds,
 * changes and removes compared with the running one (none at start), and
 * which of the sockets bound now it keeps, opens or closes. Pure: no
 * sockets, no libevent; the daemon binds and commits what it says.
 */
#ifndef CP_PLAN_H
#define CP_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "config.h"

/* An index that points nowhere. */
#define PLAN_NONE ((size_t)-1)

/* What becomes of an upstream, a pool or a bound socket. */
enum plan_fate {
	PLAN_KEEP,   /* the same name (or address), unchanged */
	PLAN_CHANGE, /* the same name, some key changed */
	PLAN_ADD,    /* new: created (or bound) */
	PLAN_REMOVE, /* gone from the new config: retired (or closed) */
	PLAN_SHUT,   /* a socket closed, and first: it holds a port needed */
};

/* One upstream or pool of either config. */
struct plan_item {
	enum plan_fate fate;
	size_t was; /* its index in the old config, or PLAN_NONE */
};

/* One listen address of the new config. */
struct plan_listen {
	const struct addr *addr;
	size_t upstream; /* the upstream it serves, or PLAN_NONE */
	size_t pool;	 /* the pool it serves, or PLAN_NONE */
	size_t bound;	 /* the bound socket it keeps, or PLAN_NONE: bind */
};

/* The admin endpoint across the change. */
enum plan_admin {
	PLAN_ADMIN_NONE,  /* off before and after */
	PLAN_ADMIN_KEEP,  /* the same address (the token may change) */
	PLAN_ADMIN_BIND,  /* turned on or moved: a new socket */
	PLAN_ADMIN_CLOSE, /* turned off */
};

struct plan {
	struct plan_item *upstreams; /* per upstream of the new config */
	size_t nupstreams;
	size_t nadded;	 /* upstreams with PLAN_ADD */
	size_t *removed; /* old upstreams gone, by old index */
	size_t nremoved;
	struct plan_item *pools; /* per pool of the new config */
	size_t npools;
	size_t *pools_removed; /* old pools gone, by old index */
	size_t npools_removed;
	struct plan_listen *listens; /* upstreams' first, then pools' */
	size_t nlistens;
	size_t nbind;	       /* listens with no bound socket */
	enum plan_fate *bound; /* per bound socket: KEEP, REMOVE or SHUT */
	size_t nbound;
	enum plan_admin admin;
	const struct config_key *
	    *restart; /* global keys changed, not applied */
	size_t nrestart;
};

/*
 * The plan from old (NULL at start) to conf, the sockets bound now being
 * bound[0..nbound). conf and old must outlive the plan.
 */
struct plan *plan_new(const struct config *old, const struct config *conf,
    const struct addr *bound, size_t nbound);
void plan_free(struct plan *);

#endif
