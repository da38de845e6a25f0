/*
 * The daemon's lifecycle: start (bind, spawn workers), run, drain and stop.
 * The main thread owns signals, breaker timers and the reject summaries;
 * worker threads own listeners' accept events and relays.
 */
#ifndef CP_DAEMON_H
#define CP_DAEMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct admin;
struct event;
struct event_base;
struct listener;
struct upstream;
struct worker;
struct worker_reload;

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
	bool seen; /* every worker has passed the swap */
};

struct daemon {
	struct config *conf; /* owned; swapped by a reload */
	const char *conf_path;
	int log_level_override; /* -l, or -1 */
	struct event_base *base;
	const char *pidfile;

	struct upstream **upstreams;
	size_t nupstreams;
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

	/* state_file: written on the main thread when dirty, retried. */
	char *state_path; /* as at start: a reload changes it at restart */
	struct event *state_ev;
	bool state_dirty;
	bool state_failing;	 /* the last write failed */
	uint64_t state_retry_ms; /* wait before the next retry */

	struct worker_reload *reload;	 /* in progress, or NULL */
	bool reload_queued;		 /* a SIGHUP came meanwhile */
	_Atomic unsigned reload_pending; /* workers yet to apply it */
	struct event *reload_done_ev;
	struct daemon_retired *retired;

	struct admin *admin; /* NULL: admin is off */
	char *status;	     /* the last STATUS= text sent */
};

/*
 * Bind every listener and start the workers; the daemon owns the config
 * from here on. On failure returns -1 with *cause set (the daemon exits 1
 * with it). path is reread on SIGHUP; level_override is -l, or -1.
 */
int daemon_start(struct daemon **, struct config *, const char *path,
    int level_override, const char *pidfile, char **cause);
/* Run until stopped; returns the exit status. */
int daemon_run(struct daemon *);
void daemon_free(struct daemon *);

/* Find a running upstream by name. */
struct upstream *daemon_upstream(struct daemon *, const char *);

#endif
