/*
 * Event-loop threads. Each worker has its own event base (no locks inside
 * it), its share of every listener's accepts, its relays and a scratch
 * buffer; the main thread talks to it only through a pipe.
 */
#ifndef CP_WORKER_H
#define CP_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct listener;
struct worker;

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
/* Relays that finished during a drain, and those reset at shutdown. */
uint64_t worker_drained(const struct worker *);
uint64_t worker_closed(const struct worker *);

#endif
