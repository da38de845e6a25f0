/*
 * The daemon's lifecycle. Start: upstreams and their breakers, every
 * listener bound (a failure here is a clean exit 1), workers spawned, then
 * READY=1. Run: the main thread handles signals, breaker timers, reject
 * summaries and the watchdog. Stop: stop accepting, let relays finish for
 * up to shutdown_timeout, reset the rest, exit 0.
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

/* Find a running pool by name. */
static struct pool *
daemon_pool(struct daemon *d, const char *name)
{
	size_t i;

	for (i = 0; i < d->npools; i++)
		if (strcmp(d->pools[i]->name, name) == 0)
			return d->pools[i];
	return NULL;
}

/* Find a running upstream by name. */
static struct upstream *
daemon_upstream(struct daemon *d, const char *name)
{
	size_t i;

	for (i = 0; i < d->nupstreams; i++)
		if (strcmp(d->upstreams[i]->name, name) == 0)
			return d->upstreams[i];
	return NULL;
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

/* Find the listener already bound to an address, or NULL. */
static struct listener *
daemon_find_listener(struct daemon *d, const struct addr *a)
{
	size_t i;

	for (i = 0; i < d->nlisteners; i++)
		if (listener_same_addr(d->listeners[i], a))
			return d->listeners[i];
	return NULL;
}

/* Is this listener in the array? */
static bool
daemon_has_listener(struct listener **v, size_t n, struct listener *l)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i] == l)
			return true;
	return false;
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
 * Warn about changed keys a reload cannot apply (workers,
 * state_file): the key table says which; they change at the next restart.
 */
static void
daemon_reload_check_restart_keys(const struct config *old,
    const struct config *conf)
{
	const struct config_key *keys;
	char was[256], now[256], q[300], q2[300];
	size_t i, n;

	keys = config_keys(&n);
	for (i = 0; i < n; i++) {
		if (keys[i].scope != CONFIG_SCOPE_GLOBAL ||
		    (keys[i].flags & CONFIG_KEY_RELOADABLE))
			continue;
		config_key_value(old, NULL, &keys[i], was, sizeof(was));
		config_key_value(conf, NULL, &keys[i], now, sizeof(now));
		if (strcmp(was, now) == 0)
			continue;
		log_warnx("event=reload key=%s value=%s running=%s "
			  "error=\"%s changes at the next restart\"",
		    keys[i].name, log_quote(q, sizeof(q), now),
		    log_quote(q2, sizeof(q2), was), keys[i].name);
	}
}

/*
 * Is this running listener about to go, and does it hold a port a new
 * address needs (127.0.0.1:P giving way to *:P, or the other way round)?
 */
static bool
daemon_listener_in_the_way(const struct listener *l, const struct config *conf)
{
	const struct upstream_conf *uc;
	bool conflict = false;
	size_t i, j;

	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		for (j = 0; j < uc->nlisten; j++) {
			if (listener_same_addr(l, &uc->listen[j]))
				return false; /* kept */
			if (listener_same_port(l, &uc->listen[j]))
				conflict = true;
		}
	}
	for (i = 0; i < conf->npools; i++)
		for (j = 0; j < conf->pools[i].nlisten; j++) {
			if (listener_same_addr(l, &conf->pools[i].listen[j]))
				return false; /* kept */
			if (listener_same_port(l, &conf->pools[i].listen[j]))
				conflict = true;
		}
	return conflict;
}

/*
 * Before binding a reload's new addresses, stop listening on the old ones
 * in their way: shut down, such a socket keeps its port but no longer
 * blocks a bind (both have SO_REUSEADDR), and listen() takes it back if
 * the reload fails. Clients knocking in between are refused. Returns how
 * many were shut, stored in shut.
 */
static size_t
daemon_reload_make_room(struct daemon *d, const struct config *conf,
    struct listener **shut)
{
	size_t i, n = 0;

	for (i = 0; i < d->nlisteners; i++)
		if (daemon_listener_in_the_way(d->listeners[i], conf)) {
			listener_shutdown(d->listeners[i]);
			shut[n++] = d->listeners[i];
		}
	return n;
}

/*
 * The admin endpoint of a reload (SPEC.md 7): a new one bound when admin is
 * turned on or moves (*next), none when it stays where it is or goes off.
 * Address and token take effect together in daemon_admin_commit().
 */
static int
daemon_admin_bind(struct daemon *d, const struct config *conf,
    struct admin **next, char **cause)
{
	*next = NULL;
	if (!conf->admin_enabled ||
	    (d->admin != NULL && admin_same_addr(d->admin, &conf->admin)))
		return 0;
	if (d->admin == NULL)
		*next = admin_new(d->base, &conf->admin, conf->admin_token,
		    d->start_ms, daemon_running_upstreams, d, cause);
	if (d->admin == NULL)
		admin_set_pools(*next, daemon_admin_pools, d);
	else
		*next = admin_rebind(d->admin, &conf->admin, conf->admin_token,
		    cause);
	return *next == NULL ? -1 : 0;
}

/*
 * Switch to the reload's admin endpoint: the old socket closes once the new
 * one is bound; one kept where it was takes the new token.
 */
static void
daemon_admin_commit(struct daemon *d, const struct config *conf,
    struct admin *next)
{
	if (next == NULL && conf->admin_enabled) {
		admin_set_token(d->admin, conf->admin_token);
		return;
	}
	if (d->admin != NULL && next == NULL)
		log_info("event=admin state=off");
	admin_free(d->admin);
	d->admin = next;
}

/*
 * Reload: load the file beside the running config; if it is good, bind the
 * new addresses (any failure leaves everything as it was), then swap: kept
 * upstreams keep their breakers and totals, kept addresses their sockets,
 * dropped upstreams finish their relays. Workers apply the listener
 * changes and acknowledge; daemon_reload_done() finishes.
 */
static void
daemon_reload(struct daemon *d)
{
	struct config *conf, *old = d->conf;
	struct config_errors errs = { NULL, 0 };
	struct upstream **ups, *up;
	struct pool **pools;
	struct listener **ls, *l;
	struct worker_reload *rl;
	struct daemon_retired *rt;
	const struct upstream_conf *uc;
	uint64_t now = util_now_ms();
	size_t i, j, n, nls = 0, nnew = 0, nshut = 0;
	struct listener **shut = NULL;
	struct admin *admin;
	char *cause = NULL;
	bool *created, *pcreated;

	if (atomic_load(&d->phase) != DAEMON_RUNNING)
		return;
	/* One at a time: the file is read again once this one is done. */
	if (d->reload != NULL) {
		d->reload_queued = true;
		return;
	}
	notify_send("RELOADING=1");
	conf = config_load(d->conf_path, &errs);
	if (conf == NULL) {
		for (i = 0; i < errs.n; i++)
			daemon_reload_fail(errs.v[i].msg);
		config_errors_clear(&errs);
		daemon_notify_status(d, "READY=1\n");
		return;
	}
	daemon_config_check_mode(conf, d->conf_path);
	daemon_reload_check_restart_keys(old, conf);
	conf->workers = d->nworkers;

	/* The new upstream set: kept ones by name, new ones created. */
	ups = xcalloc(conf->nupstreams, sizeof(*ups));
	created = xcalloc(conf->nupstreams, sizeof(*created));
	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		if ((ups[i] = daemon_upstream(d, uc->name)) == NULL) {
			ups[i] = upstream_new(d->base, conf, uc, d->nworkers,
			    now, daemon_upstream_changed, d);
			created[i] = true;
		}
	}
	/* The new pool set: kept ones by name (members set at the swap). */
	pools = xcalloc(conf->npools + 1, sizeof(*pools));
	pcreated = xcalloc(conf->npools + 1, sizeof(*pcreated));
	for (i = 0; i < conf->npools; i++)
		if ((pools[i] = daemon_pool(d, conf->pools[i].name)) == NULL) {
			pools[i] = pool_new(&conf->pools[i], ups, now);
			pcreated[i] = true;
		}
	/* The new listener set: kept sockets, and new ones bound now. */
	for (i = 0, n = 0; i < conf->nupstreams; i++)
		n += conf->upstreams[i].nlisten;
	for (i = 0; i < conf->npools; i++)
		n += conf->pools[i].nlisten;
	ls = xcalloc(n, sizeof(*ls));
	rl = xcalloc(1, sizeof(*rl));
	rl->added = xcalloc(n, sizeof(*rl->added));
	shut = xcalloc(d->nlisteners + 1, sizeof(*shut));
	nshut = daemon_reload_make_room(d, conf, shut);
	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		for (j = 0; j < uc->nlisten; j++) {
			if ((l = daemon_find_listener(d, &uc->listen[j])) ==
			    NULL) {
				l = listener_open(&uc->listen[j], ups[i],
				    d->nworkers, &cause);
				if (l == NULL)
					goto fail;
				rl->added[rl->nadded++] = l;
			}
			ls[nls++] = l;
		}
	}
	for (i = 0; i < conf->npools; i++)
		for (j = 0; j < conf->pools[i].nlisten; j++) {
			if ((l = daemon_find_listener(d,
				 &conf->pools[i].listen[j])) == NULL) {
				l = listener_open(&conf->pools[i].listen[j],
				    NULL, d->nworkers, &cause);
				if (l == NULL)
					goto fail;
				listener_set_owner(l, NULL, pools[i]);
				rl->added[rl->nadded++] = l;
			}
			ls[nls++] = l;
		}

	if (daemon_admin_bind(d, conf, &admin, &cause) != 0)
		goto fail;

	/* Nothing can fail from here: swap. */
	resolve_base_reload(d->resolver);
	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		if (!created[i])
			upstream_set_conf(ups[i], conf, uc, now);
		else
			upstream_set_resolver(ups[i], d->resolver);
		atomic_store(&ups[i]->backup,
		    uc->backup_index >= 0 ? ups[uc->backup_index] : NULL);
	}
	for (i = 0; i < conf->nupstreams; i++)
		for (j = 0; j < conf->upstreams[i].nlisten; j++) {
			l = daemon_find_listener(d,
			    &conf->upstreams[i].listen[j]);
			if (l != NULL)
				listener_set_owner(l, ups[i], NULL);
		}
	for (i = 0; i < conf->npools; i++) {
		if (!pcreated[i])
			pool_set_conf(pools[i], &conf->pools[i], ups);
		for (j = 0; j < conf->pools[i].nlisten; j++) {
			l = daemon_find_listener(d, &conf->pools[i].listen[j]);
			if (l != NULL)
				listener_set_owner(l, NULL, pools[i]);
		}
	}
	free(shut);
	rl->removed = xcalloc(d->nlisteners, sizeof(*rl->removed));
	for (i = 0; i < d->nlisteners; i++) {
		l = d->listeners[i];
		if (daemon_has_listener(ls, nls, l))
			continue;
		/* Refuse new clients now; closed when the workers let go. */
		listener_shutdown(l);
		rl->removed[rl->nremoved++] = l;
	}
	rt = xcalloc(1, sizeof(*rt));
	rt->conf = old;
	rt->upstreams = xcalloc(d->nupstreams, sizeof(*rt->upstreams));
	for (i = 0; i < d->nupstreams; i++) {
		up = d->upstreams[i];
		if (config_find_upstream(conf, up->name) == NULL) {
			evtimer_del(up->tick_ev);
			upstream_stop_probes(up);
			rt->upstreams[rt->nupstreams++] = up;
		}
	}
	rt->pools = xcalloc(d->npools + 1, sizeof(*rt->pools));
	for (i = 0; i < d->npools; i++)
		if (config_find_pool(conf, d->pools[i]->name) == NULL)
			rt->pools[rt->npools++] = d->pools[i];
	free(d->pools);
	d->pools = pools;
	d->npools = conf->npools;
	free(pcreated);
	rt->next = d->retired;
	d->retired = rt;
	for (i = 0; i < rl->nadded; i++)
		listener_log(rl->added[i], "listen");
	for (i = 0; i < rl->nremoved; i++)
		listener_log(rl->removed[i], "unlisten");
	for (i = 0; i < conf->nupstreams; i++)
		nnew += created[i];

	free(d->listeners);
	d->listeners = ls;
	d->nlisteners = nls;
	free(d->upstreams);
	d->upstreams = ups;
	d->nupstreams = conf->nupstreams;
	d->conf = conf;
	daemon_admin_commit(d, conf, admin);
	free(created);
	log_init(d->log_level_override >= 0
		? (enum log_level)d->log_level_override
		: conf->log_level,
	    conf->log_target);
	for (i = 0; i < d->nupstreams; i++)
		upstream_tick(d->upstreams[i], now);
	state_file_changed(d->state);

	d->reload = rl;
	atomic_store(&d->reload_pending, d->nworkers);
	for (i = 0; i < d->nworkers; i++)
		worker_post_reload(d->workers[i], rl);
	log_info("event=reload result=ok upstreams=%zu added=%zu removed=%zu",
	    d->nupstreams, nnew, rt->nupstreams);
	return;

fail:
	daemon_reload_fail(cause);
	free(cause);
	for (i = 0; i < rl->nadded; i++)
		listener_free(rl->added[i]);
	/* Rolled back: the old addresses listen again. */
	for (i = 0; i < nshut; i++)
		if (listener_relisten(shut[i], &cause) != 0) {
			daemon_reload_fail(cause);
			free(cause);
			cause = NULL;
		}
	free(shut);
	for (i = 0; i < conf->nupstreams; i++)
		if (created[i])
			upstream_free(ups[i]);
	for (i = 0; i < conf->npools; i++)
		if (pcreated[i])
			pool_free(pools[i]);
	free(pools);
	free(pcreated);
	free(rl->added);
	free(rl);
	free(ls);
	free(ups);
	free(created);
	config_free(conf);
	daemon_notify_status(d, "READY=1\n");
}

/* Every worker has applied the reload: close what they let go. */
static void
daemon_reload_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct worker_reload *rl = d->reload;
	struct daemon_retired *rt;
	size_t i;

	(void)fd;
	(void)what;
	if (rl == NULL)
		return;
	for (i = 0; i < rl->nremoved; i++)
		listener_free(rl->removed[i]);
	free(rl->removed);
	free(rl->added);
	free(rl);
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

/* Create the upstreams of the config and link their backups. */
static void
daemon_make_upstreams(struct daemon *d, uint64_t now)
{
	const struct config *conf = d->conf;
	const struct upstream_conf *uc;
	size_t i;

	d->nupstreams = conf->nupstreams;
	d->upstreams = xcalloc(conf->nupstreams, sizeof(*d->upstreams));
	for (i = 0; i < conf->nupstreams; i++)
		d->upstreams[i] =
		    upstream_new(d->base, conf, &conf->upstreams[i],
			d->nworkers, now, daemon_upstream_changed, d);
	for (i = 0; i < conf->nupstreams; i++)
		upstream_set_resolver(d->upstreams[i], d->resolver);
	for (i = 0; i < conf->nupstreams; i++) {
		uc = &conf->upstreams[i];
		if (uc->backup_index >= 0)
			atomic_store(&d->upstreams[i]->backup,
			    d->upstreams[uc->backup_index]);
	}
	d->npools = conf->npools;
	d->pools = xcalloc(conf->npools + 1, sizeof(*d->pools));
	for (i = 0; i < conf->npools; i++)
		d->pools[i] = pool_new(&conf->pools[i], d->upstreams, now);
}

/*
 * Name where a listen address that failed to bind is written, as a config
 * error would: "FILE:LINE: upstream 'NAME': " before the cause.
 */
static void
daemon_cause_at(const struct config *conf, const struct upstream_conf *uc,
    size_t j, char **cause)
{
	char *why = *cause;

	xasprintf(cause, "%s:%d: upstream '%s': %s", conf->path,
	    uc->listen_line != NULL ? uc->listen_line[j] : uc->line, uc->name,
	    why);
	free(why);
}

/* Bind every listen address of every upstream. */
static int
daemon_bind(struct daemon *d, char **cause)
{
	const struct upstream_conf *uc;
	struct listener *l;
	size_t i, j, n = 0;

	for (i = 0; i < d->conf->nupstreams; i++)
		n += d->conf->upstreams[i].nlisten;
	for (i = 0; i < d->conf->npools; i++)
		n += d->conf->pools[i].nlisten;
	d->listeners = xcalloc(n + 1, sizeof(*d->listeners));
	for (i = 0; i < d->conf->nupstreams; i++) {
		uc = &d->conf->upstreams[i];
		for (j = 0; j < uc->nlisten; j++) {
			l = listener_open(&uc->listen[j], d->upstreams[i],
			    d->nworkers, cause);
			if (l == NULL) {
				daemon_cause_at(d->conf, uc, j, cause);
				return -1;
			}
			d->listeners[d->nlisteners++] = l;
			listener_log(l, "listen");
		}
	}
	for (i = 0; i < d->conf->npools; i++)
		for (j = 0; j < d->conf->pools[i].nlisten; j++) {
			l = listener_open(&d->conf->pools[i].listen[j], NULL,
			    d->nworkers, cause);
			if (l == NULL)
				return -1;
			listener_set_owner(l, NULL, d->pools[i]);
			d->listeners[d->nlisteners++] = l;
			listener_log(l, "listen");
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

/* Start everything; on failure, -1 with *cause and nothing left running. */
int
daemon_start(struct daemon **dp, struct config *conf, const char *path,
    int level_override, const char *pidfile, char **cause)
{
	struct daemon *d;
	struct timeval tv;
	uint64_t now = util_now_ms(), wd;
	unsigned i;
	size_t j;

	*dp = NULL;
	signal(SIGPIPE, SIG_IGN);
	event_set_log_callback(daemon_libevent_log);
	if (evthread_use_pthreads() == -1) {
		xasprintf(cause, "libevent has no thread support");
		config_free(conf);
		return -1;
	}
	if (notify_open() != 0) {
		char q[256], sock[256];

		log_warnx("event=notify_error socket=%s error=%s",
		    log_quote(sock, sizeof(sock), getenv("NOTIFY_SOCKET")),
		    log_quote(q, sizeof(q), strerror(errno)));
	}
	d = xcalloc(1, sizeof(*d));
	d->conf = conf;
	d->conf_path = path;
	d->log_level_override = level_override;
	d->start_ms = now;
	atomic_init(&d->phase, DAEMON_RUNNING);
	atomic_init(&d->workers_running, 0);
	d->base = event_base_new();
	if (d->base == NULL) {
		xasprintf(cause, "cannot create the main event base");
		goto fail;
	}
	d->nworkers = conf->workers;
	log_info("event=start version=%s workers=%u upstreams=%zu nofile=%llu",
	    PACKAGE_VERSION, d->nworkers, conf->nupstreams,
	    daemon_nofile_raise());
	daemon_config_check_mode(conf, path);

	if ((d->resolver = resolve_base_new(d->base, conf->resolver, cause)) ==
	    NULL)
		goto fail;
	daemon_make_upstreams(d, now);
	/* A name that resolves is ready before READY=1 (see resolve.h). */
	resolve_base_settle(d->resolver, DAEMON_RESOLVE_SETTLE_MS);
	if (conf->state_file != NULL) {
		d->state = state_file_new(d->base, conf->state_file,
		    daemon_running_upstreams, d, cause);
		if (d->state == NULL)
			goto fail;
		state_file_load(d->state);
	}
	d->workers = xcalloc(d->nworkers, sizeof(*d->workers));
	for (i = 0; i < d->nworkers; i++) {
		d->workers[i] =
		    worker_new(i, d->nworkers, daemon_worker_news, d, cause);
		if (d->workers[i] == NULL)
			goto fail;
	}
	listener_receive();
	if (daemon_bind(d, cause) != 0)
		goto fail;
	listener_receive_done();
	if (conf->admin_enabled &&
	    (d->admin = admin_new(d->base, &conf->admin, conf->admin_token,
		 d->start_ms, daemon_running_upstreams, d, cause)) == NULL)
		goto fail;
	admin_set_pools(d->admin, daemon_admin_pools, d);
	for (j = 0; j < d->nlisteners; j++)
		for (i = 0; i < d->nworkers; i++)
			worker_listen(d->workers[i], d->listeners[j]);

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

	if (pidfile != NULL) {
		if (daemon_write_pidfile(pidfile, cause) != 0)
			goto fail;
		d->pidfile = pidfile;
	}
	for (i = 0; i < d->nworkers; i++) {
		atomic_fetch_add(&d->workers_running, 1);
		if (worker_spawn(d->workers[i], cause) != 0) {
			atomic_fetch_sub(&d->workers_running, 1);
			/* Those already running are stopped by daemon_free. */
			goto fail;
		}
		d->nspawned++;
	}
	for (j = 0; j < d->nupstreams; j++)
		upstream_tick(d->upstreams[j], now);
	/* At once: a state_file that cannot be written shows at start. */
	state_file_changed(d->state);
	daemon_notify_status(d, "READY=1\n");
	*dp = d;
	return 0;

fail:
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
	if (d->reload != NULL) {
		for (j = 0; j < d->reload->nremoved; j++)
			listener_free(d->reload->removed[j]);
		free(d->reload->removed);
		free(d->reload->added);
		free(d->reload);
	}
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
	if (d->sig_term != NULL)
		event_free(d->sig_term);
	if (d->sig_int != NULL)
		event_free(d->sig_int);
	if (d->sig_hup != NULL)
		event_free(d->sig_hup);
	if (d->drain_ev != NULL)
		event_free(d->drain_ev);
	if (d->worker_exit_ev != NULL)
		event_free(d->worker_exit_ev);
	if (d->summary_ev != NULL)
		event_free(d->summary_ev);
	if (d->watchdog_ev != NULL)
		event_free(d->watchdog_ev);
	free(d->watchdog_seen);
	if (d->reload_done_ev != NULL)
		event_free(d->reload_done_ev);
	state_file_free(d->state);
	resolve_base_free(d->resolver);
	if (d->base != NULL)
		event_base_free(d->base);
	config_free(d->conf);
	free(d->status);
	free(d);
}
