/*
 * The daemon's lifecycle. Start and reload take one path: a plan (plan.c)
 * from the running config (none at start) to the new one, a bind that can
 * fail and is undone (at start a clean exit 1, at a reload the old config
 * keeps serving), and a commit that cannot fail. Start then spawns the
 * workers and sends READY=1. Run: the main thread handles signals, breaker
 * timers, reject summaries and the watchdog. Stop: stop accepting, let
 * relays finish for up to shutdown_timeout, reset the rest, exit 0.
 */
#include <sys/resource.h>
#include <sys/socket.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "admin.h"
#include "daemon.h"
#include "listener.h"
#include "pool.h"
#include "log.h"
#include "notify.h"
#include "plan.h"
#include "resolve.h"
#include "state_file.h"
#include "stats.h"
#include "upstream.h"
#include "util.h"
#include "worker.h"

/* The soft RLIMIT_NOFILE raised at most to this (Linux's default nr_open). */
#define DAEMON_NOFILE_MAX ((rlim_t)1 << 20)

enum daemon_phase {
	DAEMON_RUNNING,
	DAEMON_DRAINING, /* listeners closed, relays finishing */
	DAEMON_CLOSING,	 /* relays being reset, workers exiting */
};

/*
 * A config replaced by a reload, with the upstreams it dropped: freed once
 * every worker has seen the new one and the last relay of those upstreams
 * has ended.
 */
struct daemon_retired {
	struct daemon_retired *next;
	struct config *conf;
	struct upstream **upstreams;
	size_t nupstreams;
	struct pool **pools; /* dropped pools, freed with it */
	size_t npools;
	bool seen; /* every worker has passed the swap */
};

struct daemon {
	struct config *conf; /* owned; swapped by a reload */
	const char *conf_path;
	int log_level_override; /* -l, or -1 */
	struct event_base *base;
	struct resolve_base *resolver; /* host names (as at start) */
	const char *pidfile;

	struct upstream **upstreams;
	size_t nupstreams;
	struct pool **pools;
	size_t npools;
	struct listener **listeners;
	size_t nlisteners;
	struct worker **workers;
	unsigned nworkers;
	unsigned nspawned; /* worker threads not yet joined */

	_Atomic int phase;
	const char *stop_reason;
	_Atomic unsigned workers_running;
	struct event *sig_term, *sig_int, *sig_hup;
	struct event *summary_ev;
	struct event *drain_ev;	      /* shutdown_timeout */
	struct event *worker_exit_ev; /* a worker finished */
	struct event *watchdog_ev;
	uint64_t *watchdog_seen; /* each worker's heartbeat at the last ping */
	bool watchdog_stalled;	 /* pings held back: a worker is stuck */
	uint64_t start_ms;

	/* NULL: no state_file (a reload changes it at the next restart). */
	struct state_file *state;

	struct worker_reload *reload;	 /* in progress, or NULL */
	bool reload_queued;		 /* a SIGHUP came meanwhile */
	_Atomic unsigned reload_pending; /* workers yet to apply it */
	struct event *reload_done_ev;
	struct daemon_retired *retired;

	struct admin *admin; /* NULL: admin is off */
	char *status;	     /* the last STATUS= text sent */
};

/*
 * A config on its way in, as its plan says: the upstreams and pools it
 * keeps or creates, the listeners it keeps or binds, a new admin endpoint.
 * Bound whole (daemon_next_bind) or undone (daemon_next_abort), then
 * committed (daemon_next_commit), at start as at each reload.
 */
struct daemon_next {
	struct config *conf; /* owned until the commit */
	struct plan *plan;
	struct upstream **ups;	/* per upstream of conf: kept or new */
	struct pool **pools;	/* per pool of conf: kept or new */
	struct listener **ls;	/* per listen of the plan: kept or bound */
	struct listener **shut; /* running ones shut to make room */
	size_t nshut;
	struct worker_reload *rl; /* bound (added) and, at commit, removed */
	struct admin *admin;	  /* a new endpoint, or NULL */
	uint64_t now;
};

static void daemon_reload(struct daemon *);
static void daemon_upstream_changed(struct upstream *, void *);

/* At start, how long the first answers for host names are waited for. */
#define DAEMON_RESOLVE_SETTLE_MS 3000

/* Route libevent's own messages into our log. */
static void
daemon_libevent_log(int severity, const char *msg)
{
	char q[512];

	log_msg(severity == EVENT_LOG_ERR    ? LOG_LEVEL_ERROR
		: severity == EVENT_LOG_WARN ? LOG_LEVEL_WARNING
					     : LOG_LEVEL_DEBUG,
	    "event=libevent message=%s", log_quote(q, sizeof(q), msg));
}

/*
 * Tell the service manager the one-line summary ("3 upstreams, 1 open, 9
 * rejected, 2 active"), after prefix (e.g. "READY=1\n"); with no prefix,
 * only when it changed.
 */
static void
daemon_notify_status(struct daemon *d, const char *prefix)
{
	struct util_buf sb = { NULL, 0, 0 };
	struct stats_upstream *sus;
	struct stats_pool *sps;
	uint64_t now = util_now_ms();
	size_t i;

	sus = xcalloc(d->nupstreams == 0 ? 1 : d->nupstreams, sizeof(*sus));
	for (i = 0; i < d->nupstreams; i++)
		upstream_snapshot(d->upstreams[i], now, 0, &sus[i]);
	stats_status_line(&sb, sus, d->nupstreams);
	sps = xcalloc(d->npools + 1, sizeof(*sps));
	for (i = 0; i < d->npools; i++) {
		pool_snapshot(d->pools[i], &sps[i]);
		stats_pool_members(&sps[i], sus, d->nupstreams);
	}
	stats_status_pools(&sb, sps, d->npools);
	free(sps);
	free(sus);
	if (*prefix != '\0' || d->status == NULL ||
	    strcmp(d->status, sb.p) != 0)
		notify_sendf("%sSTATUS=%s", prefix, sb.p);
	free(d->status);
	d->status = sb.p;
}

/* The pools the admin endpoint shows: the running set. */
static struct pool *const *
daemon_admin_pools(void *arg, size_t *n)
{
	struct daemon *d = arg;

	*n = d->npools;
	return d->pools;
}

/* The running upstreams: what the admin endpoint shows, state_file keeps. */
static struct upstream *const *
daemon_running_upstreams(void *arg, size_t *n)
{
	struct daemon *d = arg;

	*n = d->nupstreams;
	return d->upstreams;
}

/* An upstream's breaker changed state (main thread). */
static void
daemon_upstream_changed(struct upstream *up, void *arg)
{
	struct daemon *d = arg;

	(void)up;
	/* Keep systemctl status current. */
	daemon_notify_status(d, "");
	state_file_changed(d->state);
}

/* Post a command to every worker. */
static void
daemon_post_all(struct daemon *d, unsigned cmd)
{
	unsigned i;

	for (i = 0; i < d->nworkers; i++)
		worker_post(d->workers[i], cmd);
}

/* Begin the stop: listeners shut, relays drain, a timer bounds the wait. */
static void
daemon_stop(struct daemon *d, const char *reason)
{
	struct timeval tv;
	uint64_t ms = d->conf->shutdown_timeout_ms;
	char secs[32];
	size_t i;

	if (atomic_load(&d->phase) != DAEMON_RUNNING) {
		/* A second signal: do not wait any longer. */
		atomic_store(&d->phase, DAEMON_CLOSING);
		daemon_post_all(d, WORKER_CMD_CLOSE_ALL);
		return;
	}
	atomic_store(&d->phase, DAEMON_DRAINING);
	d->stop_reason = reason;
	/* Refusing first: "stopping" then means no new client gets in. */
	for (i = 0; i < d->nlisteners; i++)
		listener_shutdown(d->listeners[i]);
	for (i = 0; i < d->nupstreams; i++)
		upstream_stop_probes(d->upstreams[i]);
	daemon_post_all(d, WORKER_CMD_STOP_ACCEPT);
	notify_send("STOPPING=1");
	log_info("event=stopping reason=%s shutdown_timeout=%s", reason,
	    util_fmt_secs(secs, sizeof(secs), (int64_t)ms));
	evtimer_add(d->drain_ev, util_timeval(&tv, ms));
}

/* Free a retired config and its upstreams. */
static void
daemon_retired_free(struct daemon_retired *rt)
{
	size_t i;

	for (i = 0; i < rt->nupstreams; i++) {
		upstream_log_summary_flush(rt->upstreams[i], util_now_ms());
		upstream_free(rt->upstreams[i]);
	}
	free(rt->upstreams);
	for (i = 0; i < rt->npools; i++) {
		pool_log_summary_flush(rt->pools[i], util_now_ms());
		pool_free(rt->pools[i]);
	}
	free(rt->pools);
	config_free(rt->conf);
	free(rt);
}

/* May a relay or a worker still reach what this retired config holds? */
static bool
daemon_retired_busy(struct daemon_retired *rt)
{
	size_t i;

	if (!rt->seen)
		return true;
	for (i = 0; i < rt->nupstreams; i++)
		if (atomic_load_explicit(&rt->upstreams[i]->refs,
			memory_order_acquire) != 0)
			return true;
	for (i = 0; i < rt->npools; i++)
		if (atomic_load_explicit(&rt->pools[i]->refs,
			memory_order_acquire) != 0)
			return true;
	return false;
}

/* Free the retired configs nobody can reach any more. */
static void
daemon_retired_collect(struct daemon *d)
{
	struct daemon_retired **p = &d->retired, *rt;

	while ((rt = *p) != NULL) {
		if (daemon_retired_busy(rt)) {
			p = &rt->next;
			continue;
		}
		*p = rt->next;
		daemon_retired_free(rt);
	}
}

/* Warn of a config file anyone may change (at start and each reload). */
static void
daemon_config_check_mode(const struct config *conf, const char *path)
{
	char q[1024];

	if (conf->world_writable)
		log_warnx("event=config_insecure file=%s error=\"the file is "
			  "world-writable: any local user can change what the "
			  "proxy does (chmod o-w)\"",
		    log_quote(q, sizeof(q), path));
	if (conf->secret_readable)
		log_warnx("event=config_insecure file=%s error=\"the file "
			  "holds admin_token and others may read it: keep the "
			  "token in admin_token_file or a credential, or chmod "
			  "go-r\"",
		    log_quote(q, sizeof(q), path));
}

/* Log why a reload was refused, and carry on with the running config. */
static void
daemon_reload_fail(const char *msg)
{
	char q[1024];

	log_errorx("event=reload result=error error=%s",
	    log_quote(q, sizeof(q), msg));
}

/*
 * Warn about changed keys a reload cannot apply (workers, state_file):
 * the plan lists them; they change at the next restart.
 */
static void
daemon_reload_warn_restart(const struct config *old,
    const struct daemon_next *nx)
{
	const struct config_key *k;
	char was[256], now[256], q[300], q2[300];
	size_t i;

	for (i = 0; i < nx->plan->nrestart; i++) {
		k = nx->plan->restart[i];
		config_key_value(old, NULL, k, was, sizeof(was));
		config_key_value(nx->conf, NULL, k, now, sizeof(now));
		log_warnx("event=reload key=%s value=%s running=%s "
			  "error=\"%s changes at the next restart\"",
		    k->name, log_quote(q, sizeof(q), now),
		    log_quote(q2, sizeof(q2), was), k->name);
	}
}

/*
 * The plan from the running config (none at start) to conf, over the
 * sockets bound now; the daemon owns conf through nx from here on.
 */
static struct daemon_next *
daemon_next_new(struct daemon *d, struct config *conf, uint64_t now)
{
	struct daemon_next *nx = xcalloc(1, sizeof(*nx));
	struct addr *bound;
	size_t i;

	bound = xcalloc(d->nlisteners + 1, sizeof(*bound));
	for (i = 0; i < d->nlisteners; i++)
		bound[i] = d->listeners[i]->addr;
	nx->conf = conf;
	nx->now = now;
	nx->plan = plan_new(d->conf, conf, bound, d->nlisteners);
	free(bound);
	return nx;
}

/*
 * The upstreams and pools of the new config: kept ones as they run (they
 * take the new config at the commit), new ones created idle.
 */
static void
daemon_next_prepare(struct daemon *d, struct daemon_next *nx)
{
	const struct config *conf = nx->conf;
	const struct plan *p = nx->plan;
	size_t i;

	nx->ups = xcalloc(conf->nupstreams + 1, sizeof(*nx->ups));
	for (i = 0; i < conf->nupstreams; i++)
		nx->ups[i] = p->upstreams[i].fate != PLAN_ADD
		    ? d->upstreams[p->upstreams[i].was]
		    : upstream_new(d->base, conf, &conf->upstreams[i],
			  d->nworkers, nx->now, daemon_upstream_changed, d);
	nx->pools = xcalloc(conf->npools + 1, sizeof(*nx->pools));
	for (i = 0; i < conf->npools; i++)
		nx->pools[i] = p->pools[i].fate != PLAN_ADD
		    ? d->pools[p->pools[i].was]
		    : pool_new(&conf->pools[i], nx->ups, nx->now);
}

/*
 * Name where a listen address that failed to bind is written, as a config
 * error would: "FILE:LINE: upstream 'NAME': " (or "pool 'NAME': ") before
 * the cause.
 */
static void
daemon_cause_at(const struct config *conf, const struct plan_listen *pl,
    char **cause)
{
	const struct upstream_conf *uc;
	const struct pool_conf *pc;
	const char *kind = "upstream", *name;
	const int *lines;
	char *why = *cause;
	size_t j;
	int line;

	if (pl->upstream != PLAN_NONE) {
		uc = &conf->upstreams[pl->upstream];
		name = uc->name;
		j = (size_t)(pl->addr - uc->listen);
		lines = uc->listen_line;
		line = uc->line;
	} else {
		pc = &conf->pools[pl->pool];
		kind = "pool";
		name = pc->name;
		j = (size_t)(pl->addr - pc->listen);
		lines = pc->listen_line;
		line = pc->line;
	}
	xasprintf(cause, "%s:%d: %s '%s': %s", conf->path,
	    lines != NULL ? lines[j] : line, kind, name, why);
	free(why);
}

/* The listener for the plan's listen i: the one bound, or a new one. */
static struct listener *
daemon_next_listen(struct daemon *d, struct daemon_next *nx, size_t i,
    char **cause)
{
	const struct plan_listen *pl = &nx->plan->listens[i];
	struct listener *l;

	if (pl->bound != PLAN_NONE)
		return d->listeners[pl->bound];
	l = listener_open(pl->addr,
	    pl->upstream != PLAN_NONE ? nx->ups[pl->upstream] : NULL,
	    d->nworkers, cause);
	if (l == NULL) {
		daemon_cause_at(nx->conf, pl, cause);
		return NULL;
	}
	if (pl->pool != PLAN_NONE)
		listener_set_owner(l, NULL, nx->pools[pl->pool]);
	nx->rl->added[nx->rl->nadded++] = l;
	return l;
}

/*
 * The admin endpoint of the plan (SPEC.md 7): a new one bound when admin
 * is turned on or moves, none when it stays where it is or goes off.
 * Address and token take effect together in daemon_admin_commit().
 */
static int
daemon_admin_bind(struct daemon *d, struct daemon_next *nx, char **cause)
{
	const struct config *conf = nx->conf;

	if (nx->plan->admin != PLAN_ADMIN_BIND)
		return 0;
	if (d->admin == NULL) {
		nx->admin = admin_new(d->base, &conf->admin, conf->admin_token,
		    d->start_ms, daemon_running_upstreams, d, cause);
		admin_set_pools(nx->admin, daemon_admin_pools, d);
	} else
		nx->admin = admin_rebind(d->admin, &conf->admin,
		    conf->admin_token, cause);
	return nx->admin == NULL ? -1 : 0;
}

/*
 * Bind what the plan asks for. Running sockets in the way of a new address
 * are shut first: shut down, such a socket keeps its port but no longer
 * blocks a bind (both have SO_REUSEADDR), and listen() takes it back if
 * the bind fails (clients knocking in between are refused). On failure
 * returns -1 with *cause; daemon_next_abort() then undoes it.
 */
static int
daemon_next_bind(struct daemon *d, struct daemon_next *nx, char **cause)
{
	const struct plan *p = nx->plan;
	size_t i;

	nx->ls = xcalloc(p->nlistens + 1, sizeof(*nx->ls));
	nx->rl = xcalloc(1, sizeof(*nx->rl));
	nx->rl->added = xcalloc(p->nbind + 1, sizeof(*nx->rl->added));
	nx->shut = xcalloc(p->nbound + 1, sizeof(*nx->shut));
	for (i = 0; i < p->nbound; i++)
		if (p->bound[i] == PLAN_SHUT) {
			listener_shutdown(d->listeners[i]);
			nx->shut[nx->nshut++] = d->listeners[i];
		}
	for (i = 0; i < p->nlistens; i++)
		if ((nx->ls[i] = daemon_next_listen(d, nx, i, cause)) == NULL)
			return -1;
	return daemon_admin_bind(d, nx, cause);
}

/* Free what is left of a next config (all of it, if never committed). */
static void
daemon_next_free(struct daemon_next *nx)
{
	if (nx == NULL)
		return;
	if (nx->rl != NULL) {
		free(nx->rl->added);
		free(nx->rl->removed);
		free(nx->rl);
	}
	free(nx->ls);
	free(nx->shut);
	free(nx->pools);
	free(nx->ups);
	config_free(nx->conf);
	plan_free(nx->plan);
	free(nx);
}

/*
 * Undo a bind that failed, or was never done: the new sockets closed, the
 * old ones listening again, the new upstreams and pools freed.
 */
static void
daemon_next_abort(struct daemon_next *nx)
{
	char *cause = NULL;
	size_t i;

	if (nx == NULL)
		return;
	for (i = 0; nx->rl != NULL && i < nx->rl->nadded; i++)
		listener_free(nx->rl->added[i]);
	/* Rolled back: the old addresses listen again. */
	for (i = 0; i < nx->nshut; i++)
		if (listener_relisten(nx->shut[i], &cause) != 0) {
			daemon_reload_fail(cause);
			free(cause);
			cause = NULL;
		}
	for (i = 0; nx->ups != NULL && i < nx->plan->nupstreams; i++)
		if (nx->plan->upstreams[i].fate == PLAN_ADD)
			upstream_free(nx->ups[i]);
	for (i = 0; nx->pools != NULL && i < nx->plan->npools; i++)
		if (nx->plan->pools[i].fate == PLAN_ADD)
			pool_free(nx->pools[i]);
	daemon_next_free(nx);
}

/*
 * Point the upstreams, pools and listeners at the new config: kept ones
 * take their new sections, new ones their resolver; backups are linked
 * and each listener handed to its upstream or pool.
 */
static void
daemon_next_adopt(struct daemon *d, struct daemon_next *nx)
{
	const struct config *conf = nx->conf;
	const struct upstream_conf *uc;
	const struct plan_listen *pl;
	size_t i;

	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		if (nx->plan->upstreams[i].fate != PLAN_ADD)
			upstream_set_conf(nx->ups[i], conf, uc, nx->now);
		else
			upstream_set_resolver(nx->ups[i], d->resolver);
		atomic_store(&nx->ups[i]->backup,
		    uc->backup_index >= 0 ? nx->ups[uc->backup_index] : NULL);
	}
	for (i = 0; i < conf->npools; i++)
		if (nx->plan->pools[i].fate != PLAN_ADD)
			pool_set_conf(nx->pools[i], &conf->pools[i], nx->ups);
	for (i = 0; i < nx->plan->nlistens; i++) {
		pl = &nx->plan->listens[i];
		listener_set_owner(nx->ls[i],
		    pl->upstream != PLAN_NONE ? nx->ups[pl->upstream] : NULL,
		    pl->pool != PLAN_NONE ? nx->pools[pl->pool] : NULL);
	}
}

/*
 * Retire what the new config drops: its listeners refuse new clients now
 * (closed when the workers let go); the old config, its dropped upstreams
 * and pools are freed once no relay can reach them.
 */
static void
daemon_next_retire(struct daemon *d, struct daemon_next *nx)
{
	const struct plan *p = nx->plan;
	struct daemon_retired *rt;
	struct upstream *up;
	size_t i;

	nx->rl->removed = xcalloc(p->nbound + 1, sizeof(*nx->rl->removed));
	for (i = 0; i < p->nbound; i++)
		if (p->bound[i] != PLAN_KEEP) {
			listener_shutdown(d->listeners[i]);
			nx->rl->removed[nx->rl->nremoved++] = d->listeners[i];
		}
	if (d->conf == NULL)
		return;
	rt = xcalloc(1, sizeof(*rt));
	rt->conf = d->conf;
	rt->upstreams = xcalloc(p->nremoved + 1, sizeof(*rt->upstreams));
	for (i = 0; i < p->nremoved; i++) {
		up = d->upstreams[p->removed[i]];
		evtimer_del(up->tick_ev);
		upstream_stop_probes(up);
		rt->upstreams[rt->nupstreams++] = up;
	}
	rt->pools = xcalloc(p->npools_removed + 1, sizeof(*rt->pools));
	for (i = 0; i < p->npools_removed; i++)
		rt->pools[rt->npools++] = d->pools[p->pools_removed[i]];
	rt->next = d->retired;
	d->retired = rt;
}

/*
 * Switch to the new config's admin endpoint (after d->conf): the old socket
 * closes once the new one is bound; one kept where it was takes the token.
 */
static void
daemon_admin_commit(struct daemon *d, struct daemon_next *nx)
{
	switch (nx->plan->admin) {
	case PLAN_ADMIN_KEEP:
		admin_set_token(d->admin, d->conf->admin_token);
		return;
	case PLAN_ADMIN_CLOSE:
		log_info("event=admin state=off");
		break;
	case PLAN_ADMIN_NONE:
	case PLAN_ADMIN_BIND:
		break;
	}
	admin_free(d->admin);
	d->admin = nx->admin;
	nx->admin = NULL;
}

/*
 * Switch to the bound config; nothing here can fail. Kept upstreams keep
 * their breakers and totals, kept addresses their sockets, dropped
 * upstreams finish their relays. The listener changes are left in nx->rl
 * for the workers.
 */
static void
daemon_next_commit(struct daemon *d, struct daemon_next *nx)
{
	size_t i;

	if (d->conf != NULL)
		resolve_base_reload(d->resolver);
	daemon_next_adopt(d, nx);
	daemon_next_retire(d, nx);
	for (i = 0; i < nx->rl->nadded; i++)
		listener_log(nx->rl->added[i], "listen");
	for (i = 0; i < nx->rl->nremoved; i++)
		listener_log(nx->rl->removed[i], "unlisten");
	free(d->listeners);
	d->listeners = nx->ls;
	d->nlisteners = nx->plan->nlistens;
	free(d->upstreams);
	d->upstreams = nx->ups;
	d->nupstreams = nx->conf->nupstreams;
	free(d->pools);
	d->pools = nx->pools;
	d->npools = nx->conf->npools;
	d->conf = nx->conf;
	nx->ls = NULL;
	nx->ups = NULL;
	nx->pools = NULL;
	nx->conf = NULL;
	daemon_admin_commit(d, nx);
}

/* Load the file again for a reload; NULL (each error logged) if bad. */
static struct config *
daemon_reload_load(struct daemon *d)
{
	struct config_errors errs = { NULL, 0 };
	struct config *conf;
	size_t i;

	conf = config_load(d->conf_path, &errs);
	if (conf == NULL) {
		for (i = 0; i < errs.n; i++)
			daemon_reload_fail(errs.v[i].msg);
		config_errors_clear(&errs);
		return NULL;
	}
	daemon_config_check_mode(conf, d->conf_path);
	return conf;
}

/*
 * After a reload's commit: the new log settings and breaker timers, then
 * the workers apply the listener changes and acknowledge;
 * daemon_reload_done_cb() finishes.
 */
static void
daemon_reload_apply(struct daemon *d, struct daemon_next *nx)
{
	size_t i;

	log_init(d->log_level_override >= 0
		? (enum log_level)d->log_level_override
		: d->conf->log_level,
	    d->conf->log_target);
	for (i = 0; i < d->nupstreams; i++)
		upstream_tick(d->upstreams[i], nx->now);
	state_file_changed(d->state);

	d->reload = nx->rl;
	nx->rl = NULL;
	atomic_store(&d->reload_pending, d->nworkers);
	for (i = 0; i < d->nworkers; i++)
		worker_post_reload(d->workers[i], d->reload);
	log_info("event=reload result=ok upstreams=%zu added=%zu removed=%zu",
	    d->nupstreams, nx->plan->nadded, nx->plan->nremoved);
}

/*
 * Reload: load the file beside the running config; if it is good, plan,
 * bind the new addresses (any failure leaves everything as it was), then
 * commit (see daemon_next_commit()) and hand the workers the changes.
 */
static void
daemon_reload(struct daemon *d)
{
	struct daemon_next *nx;
	struct config *conf;
	char *cause = NULL;

	if (atomic_load(&d->phase) != DAEMON_RUNNING)
		return;
	/* One at a time: the file is read again once this one is done. */
	if (d->reload != NULL) {
		d->reload_queued = true;
		return;
	}
	notify_send("RELOADING=1");
	if ((conf = daemon_reload_load(d)) == NULL) {
		daemon_notify_status(d, "READY=1\n");
		return;
	}
	nx = daemon_next_new(d, conf, util_now_ms());
	daemon_reload_warn_restart(d->conf, nx);
	conf->workers = d->nworkers;
	daemon_next_prepare(d, nx);
	if (daemon_next_bind(d, nx, &cause) != 0) {
		daemon_reload_fail(cause);
		free(cause);
		daemon_next_abort(nx);
		daemon_notify_status(d, "READY=1\n");
		return;
	}
	daemon_next_commit(d, nx);
	daemon_reload_apply(d, nx);
	daemon_next_free(nx);
}

/* Free a reload the workers have applied: close the listeners let go. */
static void
daemon_reload_free(struct worker_reload *rl)
{
	size_t i;

	if (rl == NULL)
		return;
	for (i = 0; i < rl->nremoved; i++)
		listener_free(rl->removed[i]);
	free(rl->removed);
	free(rl->added);
	free(rl);
}

/* Every worker has applied the reload: close what they let go. */
static void
daemon_reload_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct worker_reload *rl = d->reload;
	struct daemon_retired *rt;

	(void)fd;
	(void)what;
	if (rl == NULL)
		return;
	daemon_reload_free(rl);
	d->reload = NULL;
	for (rt = d->retired; rt != NULL; rt = rt->next)
		rt->seen = true;
	daemon_retired_collect(d);
	daemon_notify_status(d, "READY=1\n");
	if (d->reload_queued) {
		d->reload_queued = false;
		daemon_reload(d);
	}
}

/* SIGTERM, SIGINT: stop; SIGHUP: reload. */
static void
daemon_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	(void)what;
	switch (sig) {
	case SIGTERM:
		daemon_stop(d, "SIGTERM");
		break;
	case SIGINT:
		daemon_stop(d, "SIGINT");
		break;
	case SIGHUP:
		daemon_reload(d);
		break;
	}
}

/* shutdown_timeout has passed: reset what is left. */
static void
daemon_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)what;
	atomic_store(&d->phase, DAEMON_CLOSING);
	daemon_post_all(d, WORKER_CMD_CLOSE_ALL);
}

/*
 * News from a worker, in its thread: the last one to apply a reload, or to
 * end, wakes the main thread.
 */
static void
daemon_worker_news(struct worker *w, enum worker_news news, void *arg)
{
	struct daemon *d = arg;

	(void)w;
	switch (news) {
	case WORKER_RELOADED:
		if (atomic_fetch_sub(&d->reload_pending, 1) == 1)
			event_active(d->reload_done_ev, EV_TIMEOUT, 0);
		break;
	case WORKER_EXITED:
		atomic_fetch_sub(&d->workers_running, 1);
		event_active(d->worker_exit_ev, EV_TIMEOUT, 0);
		break;
	}
}

/* A worker has ended; when all have, the main loop ends too. */
static void
daemon_worker_exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)what;
	if (atomic_load(&d->workers_running) == 0)
		event_base_loopbreak(d->base);
}

/* Once a second: the reject summaries. */
static void
daemon_summary_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	uint64_t now = util_now_ms();
	size_t i;

	(void)fd;
	(void)what;
	for (i = 0; i < d->nupstreams; i++)
		upstream_log_summary_flush(d->upstreams[i], now);
	for (i = 0; i < d->npools; i++)
		pool_log_summary_flush(d->pools[i], now);
	daemon_retired_collect(d);
	/* The counters in STATUS= move without a transition. */
	daemon_notify_status(d, "");
}

/*
 * Tell the service manager we are alive: only if every worker's loop has
 * turned since the last ping, so that a hung worker gets the daemon
 * restarted (SPEC 6).
 */
static void
daemon_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	unsigned i, stuck = d->nworkers;

	(void)fd;
	(void)what;
	for (i = 0; i < d->nworkers; i++)
		if (!worker_turning(d->workers[i], &d->watchdog_seen[i]) &&
		    stuck == d->nworkers)
			stuck = i;
	if (stuck < d->nworkers) {
		if (!d->watchdog_stalled)
			log_errorx("event=watchdog worker=%u error=\"its event "
				   "loop is not turning: no WATCHDOG=1 until "
				   "it "
				   "does\"",
			    stuck);
		d->watchdog_stalled = true;
		return;
	}
	if (d->watchdog_stalled)
		log_notice("event=watchdog result=ok");
	d->watchdog_stalled = false;
	notify_send("WATCHDOG=1");
}

/* Write the pid file. */
static int
daemon_write_pidfile(const char *path, char **cause)
{
	FILE *f;

	f = fopen(path, "w");
	if (f == NULL) {
		xasprintf(cause, "pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0) {
		xasprintf(cause, "pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Raise the soft RLIMIT_NOFILE to the hard one, so that a
 * unit's or a shell's low default (1024) does not cap the relays; at most
 * DAEMON_NOFILE_MAX, since a container's hard limit may be 2^30. What is
 * sized from the limit (the admin table, the splice pipes) reads it after
 * this, with caps of its own. Returns the soft limit now in force.
 */
static unsigned long long
daemon_nofile_raise(void)
{
	struct rlimit rl;
	rlim_t want, was;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return 0;
	want = rl.rlim_max;
	if (want == RLIM_INFINITY || want > DAEMON_NOFILE_MAX)
		want = DAEMON_NOFILE_MAX;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return (unsigned long long)rl.rlim_cur;
	/* The hard limit stays as given. */
	was = rl.rlim_cur;
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		return (unsigned long long)want;
	log_warnx("event=nofile result=error error=%s nofile=%llu",
	    util_errno_name(errno), (unsigned long long)was);
	return (unsigned long long)was;
}

/* The process-wide set-up: SIGPIPE, libevent's log and threads, notify. */
static int
daemon_start_process(char **cause)
{
	char q[256], sock[256];

	signal(SIGPIPE, SIG_IGN);
	event_set_log_callback(daemon_libevent_log);
	if (evthread_use_pthreads() == -1) {
		xasprintf(cause, "libevent has no thread support");
		return -1;
	}
	if (notify_open() != 0)
		log_warnx("event=notify_error socket=%s error=%s",
		    log_quote(sock, sizeof(sock), getenv("NOTIFY_SOCKET")),
		    log_quote(q, sizeof(q), strerror(errno)));
	return 0;
}

/* Create the worker threads' loops (not started yet). */
static int
daemon_start_workers(struct daemon *d, char **cause)
{
	unsigned i;

	d->workers = xcalloc(d->nworkers, sizeof(*d->workers));
	for (i = 0; i < d->nworkers; i++) {
		d->workers[i] =
		    worker_new(i, d->nworkers, daemon_worker_news, d, cause);
		if (d->workers[i] == NULL)
			return -1;
	}
	return 0;
}

/* The main loop's events: signals, timers, the watchdog. */
static void
daemon_start_events(struct daemon *d)
{
	struct timeval tv;
	uint64_t wd;
	unsigned i;

	d->sig_term = evsignal_new(d->base, SIGTERM, daemon_signal_cb, d);
	d->sig_int = evsignal_new(d->base, SIGINT, daemon_signal_cb, d);
	d->sig_hup = evsignal_new(d->base, SIGHUP, daemon_signal_cb, d);
	evsignal_add(d->sig_term, NULL);
	evsignal_add(d->sig_int, NULL);
	evsignal_add(d->sig_hup, NULL);
	d->drain_ev = evtimer_new(d->base, daemon_drain_cb, d);
	d->worker_exit_ev = event_new(d->base, -1, 0, daemon_worker_exit_cb, d);
	d->reload_done_ev = event_new(d->base, -1, 0, daemon_reload_done_cb, d);
	d->summary_ev =
	    event_new(d->base, -1, EV_PERSIST, daemon_summary_cb, d);
	event_add(d->summary_ev, util_timeval(&tv, 1000));
	if ((wd = notify_watchdog_usec()) != 0) {
		/* Each loop shows it turns four times per ping at least. */
		d->watchdog_seen =
		    xcalloc(d->nworkers, sizeof(*d->watchdog_seen));
		for (i = 0; i < d->nworkers; i++)
			worker_heartbeat_start(d->workers[i],
			    wd / 8 / 1000 > 0 ? wd / 8 / 1000 : 1);
		d->watchdog_ev =
		    event_new(d->base, -1, EV_PERSIST, daemon_watchdog_cb, d);
		event_add(d->watchdog_ev, util_timeval(&tv, wd / 2 / 1000));
	}
}

/* Start the worker threads; those started are stopped by daemon_free. */
static int
daemon_start_spawn(struct daemon *d, char **cause)
{
	unsigned i;

	for (i = 0; i < d->nworkers; i++) {
		atomic_fetch_add(&d->workers_running, 1);
		if (worker_spawn(d->workers[i], cause) != 0) {
			atomic_fetch_sub(&d->workers_running, 1);
			return -1;
		}
		d->nspawned++;
	}
	return 0;
}

/*
 * The start with the config in: host names settle, the state_file is read,
 * every worker accepts on every listener, then the threads run and the
 * service manager hears READY=1.
 */
static int
daemon_start_run(struct daemon *d, const char *pidfile, char **cause)
{
	uint64_t now = util_now_ms();
	unsigned i;
	size_t j;

	/* A name that resolves is ready before READY=1 (see resolve.h). */
	resolve_base_settle(d->resolver, DAEMON_RESOLVE_SETTLE_MS);
	if (d->conf->state_file != NULL) {
		d->state = state_file_new(d->base, d->conf->state_file,
		    daemon_running_upstreams, d, cause);
		if (d->state == NULL)
			return -1;
		state_file_load(d->state);
	}
	for (j = 0; j < d->nlisteners; j++)
		for (i = 0; i < d->nworkers; i++)
			worker_listen(d->workers[i], d->listeners[j]);
	daemon_start_events(d);
	if (pidfile != NULL) {
		if (daemon_write_pidfile(pidfile, cause) != 0)
			return -1;
		d->pidfile = pidfile;
	}
	if (daemon_start_spawn(d, cause) != 0)
		return -1;
	for (j = 0; j < d->nupstreams; j++)
		upstream_tick(d->upstreams[j], now);
	/* At once: a state_file that cannot be written shows at start. */
	state_file_changed(d->state);
	daemon_notify_status(d, "READY=1\n");
	return 0;
}

/*
 * Start everything: the plan from no config to conf, bound (sockets passed
 * by the service manager are taken by address) and committed as a reload
 * is; on failure, -1 with *cause and nothing left running.
 */
int
daemon_start(struct daemon **dp, struct config *conf, const char *path,
    int level_override, const char *pidfile, char **cause)
{
	struct daemon_next *nx;
	struct daemon *d;

	*dp = NULL;
	if (daemon_start_process(cause) != 0) {
		config_free(conf);
		return -1;
	}
	d = xcalloc(1, sizeof(*d));
	d->conf_path = path;
	d->log_level_override = level_override;
	d->start_ms = util_now_ms();
	d->nworkers = conf->workers;
	atomic_init(&d->phase, DAEMON_RUNNING);
	atomic_init(&d->workers_running, 0);
	nx = daemon_next_new(d, conf, d->start_ms);
	if ((d->base = event_base_new()) == NULL) {
		xasprintf(cause, "cannot create the main event base");
		goto fail;
	}
	log_info("event=start version=%s workers=%u upstreams=%zu nofile=%llu",
	    PACKAGE_VERSION, d->nworkers, conf->nupstreams,
	    daemon_nofile_raise());
	daemon_config_check_mode(conf, path);
	if ((d->resolver = resolve_base_new(d->base, conf->resolver, cause)) ==
		NULL ||
	    daemon_start_workers(d, cause) != 0)
		goto fail;
	listener_receive();
	daemon_next_prepare(d, nx);
	if (daemon_next_bind(d, nx, cause) != 0)
		goto fail;
	daemon_next_commit(d, nx);
	daemon_next_free(nx);
	nx = NULL;
	listener_receive_done();
	if (daemon_start_run(d, pidfile, cause) != 0)
		goto fail;
	*dp = d;
	return 0;

fail:
	daemon_next_abort(nx);
	daemon_free(d);
	return -1;
}

/* Run until every worker has ended; returns the exit status. */
int
daemon_run(struct daemon *d)
{
	uint64_t drained = 0, closed = 0;
	unsigned i;

	event_base_dispatch(d->base);
	for (i = 0; i < d->nworkers; i++) {
		worker_join(d->workers[i]);
		drained += worker_drained(d->workers[i]);
		closed += worker_closed(d->workers[i]);
	}
	d->nspawned = 0;
	state_file_stop(d->state);
	log_info("event=stop reason=%s drained=%" PRIu64 " closed=%" PRIu64,
	    d->stop_reason != NULL ? d->stop_reason : "unknown", drained,
	    closed);
	return 0;
}

/* Free the main loop's events (see daemon_start_events()). */
static void
daemon_events_free(struct daemon *d)
{
	struct event **evs[] = { &d->sig_term, &d->sig_int, &d->sig_hup,
		&d->drain_ev, &d->worker_exit_ev, &d->summary_ev,
		&d->watchdog_ev, &d->reload_done_ev };
	size_t i;

	for (i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (*evs[i] != NULL) {
			event_free(*evs[i]);
			*evs[i] = NULL;
		}
	free(d->watchdog_seen);
}

/* Free everything; workers still running are stopped first. */
void
daemon_free(struct daemon *d)
{
	unsigned i;
	size_t j;

	if (d == NULL)
		return;
	for (i = 0; i < d->nspawned; i++) {
		worker_post(d->workers[i], WORKER_CMD_CLOSE_ALL);
		worker_join(d->workers[i]);
	}
	d->nspawned = 0;
	daemon_reload_free(d->reload);
	while (d->retired != NULL) {
		struct daemon_retired *rt = d->retired;

		d->retired = rt->next;
		daemon_retired_free(rt);
	}
	admin_free(d->admin);
	for (j = 0; j < d->nlisteners; j++)
		listener_free(d->listeners[j]);
	free(d->listeners);
	listener_receive_free();
	for (i = 0; i < d->nworkers && d->workers != NULL; i++)
		worker_free(d->workers[i]);
	free(d->workers);
	for (j = 0; j < d->nupstreams; j++)
		upstream_free(d->upstreams[j]);
	free(d->upstreams);
	for (j = 0; j < d->npools; j++)
		pool_free(d->pools[j]);
	free(d->pools);
	if (d->pidfile != NULL)
		unlink(d->pidfile);
	daemon_events_free(d);
	state_file_free(d->state);
	resolve_base_free(d->resolver);
	if (d->base != NULL)
		event_base_free(d->base);
	config_free(d->conf);
	free(d->status);
	free(d);
}
