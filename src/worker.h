/*
 * Event-loop threads. Each worker has its own event base (no locks inside
 * it), its share of every listener's accepts, its relays and a scratch
 * buffer; the main thread talks to it only through a pipe.
 */
#ifndef CP_WORKER_H
#define CP_WORKER_H

#include <sys/queue.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "turnaway.h"

struct event;
struct event_base;
struct listener;
struct pipe_pool;
struct relay;
struct worker;

LIST_HEAD(relay_list, relay);

/* Commands from the main thread, as bits in worker->cmd. */
#define WORKER_CMD_STOP_ACCEPT 0x1 /* drain: stop accepting */
#define WORKER_CMD_CLOSE_ALL 0x2   /* reset every relay and exit */
#define WORKER_CMD_RELOAD 0x4	   /* apply worker->reload's listener changes */

/* A reload's listener changes; read-only while the workers apply them. */
struct worker_reload {
	struct listener **added;
	size_t nadded;
	struct listener **removed;
	size_t nremoved;
};

/* What a worker tells its owner, from the worker's own thread. */
enum worker_news {
	WORKER_RELOADED, /* it applied the reload it was given */
	WORKER_EXITED,	 /* its loop has ended */
};
typedef void (*worker_news_cb)(struct worker *, enum worker_news, void *);

struct worker {
	unsigned id;
	worker_news_cb news;
	void *news_arg;
	const struct worker_reload *reload; /* set before WORKER_CMD_RELOAD */
	struct event_base *base;
	pthread_t thread;
	int ctl_pipe[2];
	struct event *ctl_ev;
	_Atomic unsigned cmd;

	struct listener **listeners; /* those this worker accepts on */
	size_t nlisteners;

	struct relay_list relays;
	unsigned nrelays;
	bool draining;
	uint64_t drained;	     /* relays that finished during a drain */
	uint64_t closed;	     /* relays reset at shutdown */
	struct turnaway_room turned; /* its turned-away clients */

	char *scratch; /* one read at a time passes through here */
	size_t scratch_len;

	/* Bumped by a timer of the loop: the watchdog sees it turn. */
	struct event *heartbeat_ev;
	_Atomic uint64_t heartbeat;
	_Atomic bool exited;	 /* the loop has ended (a stop) */
	struct pipe_pool *pipes; /* lent to directions that splice */
	bool splice_force;	 /* tests: splice from the first byte */
};

struct worker *worker_new(unsigned id, unsigned nworkers, worker_news_cb,
    void *, char **cause);
int worker_spawn(struct worker *, char **cause);
/* Accept on a listener (main thread before the worker runs, or the worker). */
void worker_listen(struct worker *, struct listener *);
/* Post a command (main thread). */
void worker_post(struct worker *, unsigned cmd);
/* Apply a reload's listener changes (main thread); WORKER_RELOADED follows. */
void worker_post_reload(struct worker *, const struct worker_reload *);
void worker_join(struct worker *);
void worker_free(struct worker *);
/* Bump the heartbeat every so many ms from the loop (before the spawn). */
void worker_heartbeat_start(struct worker *, uint64_t every_ms);
/* Has the loop turned (or ended) since *seen? Updates *seen (any thread). */
bool worker_turning(struct worker *, uint64_t *seen);
/* A relay of this worker has ended; exits the loop when drained. */
void worker_relay_gone(struct worker *);

#endif
