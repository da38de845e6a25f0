/*
 * Event-loop threads: each runs its own lock-free event base with its share
 * of the accepts and its relays. The main thread posts commands through a
 * pipe, so worker bases need no locking at all.
 */
#include <sys/resource.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>
#include <stdatomic.h>

#include <event2/event.h>

#include "listener.h"
#include "log.h"
#include "pipe.h"
#include "relay.h"
#include "turnaway.h"
#include "util.h"
#include "worker.h"

#define WORKER_SCRATCH_LEN (64 * 1024)
/* One splice pipe: four scratch buffers' worth per pair of splice calls. */
#define WORKER_PIPE_SIZE (256 * 1024)
/* Pipes per worker at most, and the share of the descriptors they may use. */
#define WORKER_PIPES_MAX 256
#define WORKER_PIPES_FD_SHARE 8

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

	struct relay_room relays;    /* its relays */
	struct turnaway_room turned; /* its turned-away clients */
	bool draining;
	uint64_t drained; /* clients that finished during a drain */
	uint64_t closed;  /* clients reset at shutdown */

	char *scratch; /* one read at a time passes through here */
	size_t scratch_len;
	struct pipe_pool *pipes; /* lent to relay directions that splice */

	/* Bumped by a timer of the loop: the watchdog sees it turn. */
	struct event *heartbeat_ev;
	_Atomic uint64_t heartbeat;
	_Atomic bool exited; /* the loop has ended (a stop) */
};

/*
 * How many pipes a worker may open: at most an eighth of the descriptors
 * (two per pipe), shared by the workers, so that pipes never crowd out
 * connections.
 */
static unsigned
worker_pipes_max(unsigned nworkers)
{
	struct rlimit rl;
	rlim_t n;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY)
		return WORKER_PIPES_MAX;
	n = rl.rlim_cur / (2 * WORKER_PIPES_FD_SHARE) /
	    (nworkers ? nworkers : 1);
	return n < WORKER_PIPES_MAX ? (unsigned)n : WORKER_PIPES_MAX;
}

static void worker_client_gone(void *);

/* A listener of this worker accepted a client: relay it. */
static int
worker_accept_cb(struct upstream *up, struct pool *pool, int fd,
    const struct sockaddr *sa, socklen_t salen, const struct addr *local,
    void *arg)
{
	struct worker *w = arg;

	return relay_accept(&w->relays, up, pool, fd, sa, salen, local);
}

/* Accept on a listener from now on. */
void
worker_listen(struct worker *w, struct listener *l)
{
	w->listeners =
	    xrealloc(w->listeners, (w->nlisteners + 1) * sizeof(*w->listeners));
	w->listeners[w->nlisteners++] = l;
	listener_attach(l, w->id, w->base, worker_accept_cb, w);
}

/* Stop accepting on a listener. */
static void
worker_unlisten(struct worker *w, struct listener *l)
{
	size_t i;

	for (i = 0; i < w->nlisteners; i++) {
		if (w->listeners[i] != l)
			continue;
		listener_detach(l, w->id);
		w->listeners[i] = w->listeners[--w->nlisteners];
		return;
	}
}

/*
 * Apply a reload's listener changes, then tell the main thread; once every
 * worker has, no worker can still hold a pointer into the old config.
 */
static void
worker_reload(struct worker *w)
{
	const struct worker_reload *rl = w->reload;
	size_t i;

	for (i = 0; i < rl->nremoved; i++)
		worker_unlisten(w, rl->removed[i]);
	for (i = 0; i < rl->nadded; i++)
		if (!w->draining)
			worker_listen(w, rl->added[i]);
	w->news(w, WORKER_RELOADED, w->news_arg);
}

/* Run the commands posted by the main thread. */
static void
worker_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	char buf[64];
	unsigned cmd;

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	cmd = atomic_exchange(&w->cmd, 0);
	if (cmd & WORKER_CMD_RELOAD)
		worker_reload(w);
	if (cmd & WORKER_CMD_STOP_ACCEPT) {
		while (w->nlisteners > 0)
			worker_unlisten(w, w->listeners[0]);
		w->draining = true;
	}
	if (cmd & WORKER_CMD_CLOSE_ALL) {
		/* Not a drain any more: the clients reset are not drained. */
		w->draining = false;
		w->closed += relay_close_all(&w->relays);
		w->closed += turnaway_close_all(&w->turned);
		event_base_loopbreak(w->base);
		return;
	}
	if (w->draining && w->relays.n == 0 && w->turned.n == 0)
		event_base_loopbreak(w->base);
}

/*
 * Create a worker (one of nworkers) and its event base; news tells the
 * owner what it did.
 */
struct worker *
worker_new(unsigned id, unsigned nworkers, worker_news_cb news, void *arg,
    char **cause)
{
	struct event_config *cfg;
	struct worker *w;

	w = xcalloc(1, sizeof(*w));
	w->id = id;
	w->news = news;
	w->news_arg = arg;
	atomic_init(&w->cmd, 0);
	atomic_init(&w->heartbeat, 0);
	atomic_init(&w->exited, false);
	w->scratch_len = WORKER_SCRATCH_LEN;
	w->scratch = xmalloc(w->scratch_len);
	w->pipes = pipe_pool_new(worker_pipes_max(nworkers), WORKER_PIPE_SIZE);
	w->ctl_pipe[0] = w->ctl_pipe[1] = -1;

	cfg = event_config_new();
	if (cfg == NULL)
		fatalx("out of memory");
	/*
	 * Only this thread touches the base: no locks needed. The epoll
	 * changelist folds the event changes of one loop turn into one
	 * epoll_ctl per descriptor (a connect's write-then-read is one MOD);
	 * its one hazard, descriptors cloned with dup(), does not arise here.
	 */
	event_config_set_flag(cfg,
	    EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	w->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (w->base == NULL) {
		xasprintf(cause, "cannot create an event base for worker %u",
		    id);
		goto fail;
	}
	turnaway_room_init(&w->turned, w->base, w->scratch, w->scratch_len,
	    worker_client_gone, w);
	relay_room_init(&w->relays,
	    &(struct relay_room_lend){ .base = w->base,
		.worker = id,
		.scratch = w->scratch,
		.scratch_len = w->scratch_len,
		.pipes = w->pipes,
		.turned = &w->turned },
	    worker_client_gone, w);
	if (pipe(w->ctl_pipe) == -1) {
		xasprintf(cause, "pipe: %s", strerror(errno));
		goto fail;
	}
	evutil_make_socket_nonblocking(w->ctl_pipe[0]);
	evutil_make_socket_nonblocking(w->ctl_pipe[1]);
	evutil_make_socket_closeonexec(w->ctl_pipe[0]);
	evutil_make_socket_closeonexec(w->ctl_pipe[1]);
	w->ctl_ev = event_new(w->base, w->ctl_pipe[0], EV_READ | EV_PERSIST,
	    worker_ctl_cb, w);
	event_add(w->ctl_ev, NULL);
	return w;

fail:
	worker_free(w);
	return NULL;
}

/* The loop turns: say so to the watchdog. */
static void
worker_heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	atomic_fetch_add_explicit(&w->heartbeat, 1, memory_order_relaxed);
}

/* Bump the heartbeat every so many ms from the loop (before the spawn). */
void
worker_heartbeat_start(struct worker *w, uint64_t every_ms)
{
	struct timeval tv;

	w->heartbeat_ev =
	    event_new(w->base, -1, EV_PERSIST, worker_heartbeat_cb, w);
	if (w->heartbeat_ev == NULL)
		fatalx("out of memory");
	event_add(w->heartbeat_ev, util_timeval(&tv, every_ms));
}

/* Has the loop turned (or ended) since *seen? Updates *seen (any thread). */
bool
worker_turning(struct worker *w, uint64_t *seen)
{
	uint64_t now =
	    atomic_load_explicit(&w->heartbeat, memory_order_relaxed);
	bool turned = now != *seen;

	*seen = now;
	return turned || atomic_load(&w->exited);
}

/* The thread: run the loop, then tell the main thread. */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->base);
	atomic_store(&w->exited, true);
	w->news(w, WORKER_EXITED, w->news_arg);
	return NULL;
}

/* Start the worker's thread, with signals blocked (the main thread has them). */
int
worker_spawn(struct worker *w, char **cause)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
#ifdef __linux__
	if (rc == 0) {
		char name[16];

		/* For top -H and ps -L: which thread is which worker. */
		snprintf(name, sizeof(name), "cpd-worker-%u", w->id);
		pthread_setname_np(w->thread, name);
	}
#endif
	if (rc != 0) {
		xasprintf(cause, "cannot start worker %u: %s", w->id,
		    strerror(rc));
		return -1;
	}
	return 0;
}

/* Post a command to the worker; any thread. */
void
worker_post(struct worker *w, unsigned cmd)
{
	char c = 1;

	atomic_fetch_or(&w->cmd, cmd);
	while (write(w->ctl_pipe[1], &c, 1) == -1 && errno == EINTR)
		;
}

/*
 * Hand the worker a reload's listener changes. The pipe write behind the
 * command orders the pointer's store before the worker reads it.
 */
void
worker_post_reload(struct worker *w, const struct worker_reload *rl)
{
	w->reload = rl;
	worker_post(w, WORKER_CMD_RELOAD);
}

/* Wait for the worker's thread to end. */
void
worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}

/* Free a worker whose thread has ended. */
void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->ctl_ev != NULL)
		event_free(w->ctl_ev);
	turnaway_room_free(&w->turned);
	if (w->heartbeat_ev != NULL)
		event_free(w->heartbeat_ev);
	if (w->ctl_pipe[0] != -1)
		close(w->ctl_pipe[0]);
	if (w->ctl_pipe[1] != -1)
		close(w->ctl_pipe[1]);
	if (w->base != NULL)
		event_base_free(w->base);
	free(w->listeners);
	free(w->scratch);
	pipe_pool_free(w->pipes);
	free(w);
}

/* A client (relayed or turned away) has ended: a draining worker counts it. */
static void
worker_client_gone(void *arg)
{
	struct worker *w = arg;

	if (w->draining) {
		w->drained++;
		if (w->relays.n == 0 && w->turned.n == 0)
			event_base_loopbreak(w->base);
	}
}

/* Clients that finished during a drain (after the thread has ended). */
uint64_t
worker_drained(const struct worker *w)
{
	return w->drained;
}

/* Clients reset at shutdown (after the thread has ended). */
uint64_t
worker_closed(const struct worker *w)
{
	return w->closed;
}
