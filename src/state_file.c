/*
 * state_file at run time (SPEC.md 3). At start the file's states are taken
 * back (a file that cannot be used is kept as FILE.bad). After that every
 * breaker change makes the main thread encode the running states, at most
 * every 100ms, and hand the text to the writer: a thread of its own that
 * does the open, write, fsync and rename, so a slow or hung disk holds up
 * no breaker timer, admin answer, sd_notify or watchdog ping. The writer
 * holds only the newest text: a text not yet taken is replaced by a newer
 * one, never queued. A failed write is logged on the main thread and
 * retried with a wait that doubles up to 30s. At the stop the last text is
 * handed over and the thread joined: that write is waited for.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "breaker.h"
#include "log.h"
#include "state.h"
#include "state_file.h"
#include "upstream.h"
#include "util.h"

/* The first retry of a failed write, and the longest wait. */
#define STATE_FILE_RETRY_MS 1000
#define STATE_FILE_RETRY_MAX_MS 30000
/* Writes at most this often: a flapping circuit costs ten fsyncs a second. */
#define STATE_FILE_SPACING_MS 100

struct state_file {
	char *path;
	state_file_upstreams_cb upstreams;
	void *arg;

	/* The main thread's. */
	struct event *write_ev; /* hand a text over: now, spaced, or a retry */
	struct event *done_ev;	/* the writer finished a write */
	bool dirty;		/* a change not yet handed over */
	bool failing;		/* the last write failed */
	uint64_t retry_ms;	/* wait before the next retry */
	uint64_t handed_ms;	/* when a text was last handed over, or 0 */
	bool running;		/* the thread is started and not joined */
	pthread_t thread;

	/* The writer's, once started. */
	int reserve_fd; /* kept for a write with the table full, or -1 */

	/* Shared between the two, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	char *next;	   /* the newest text not yet taken, or NULL */
	bool stopping;	   /* write what is there, then end */
	int result;	   /* of the last write: 0 or -1 */
	unsigned failures; /* failed writes not yet logged */
	char *cause;	   /* of the last failed write, or NULL */
};

/* Find a running upstream by name. */
static struct upstream *
state_file_upstream(struct state_file *sf, const char *name)
{
	struct upstream *const *ups;
	size_t n, i;

	ups = sf->upstreams(sf->arg, &n);
	for (i = 0; i < n; i++)
		if (strcmp(ups[i]->name, name) == 0)
			return ups[i];
	return NULL;
}

/* Encode every running upstream's state as of now: a new string. */
static char *
state_file_encode(struct state_file *sf)
{
	struct upstream *const *ups;
	struct state_entry *v;
	uint64_t now = util_now_ms();
	size_t n, i;
	char *text;

	ups = sf->upstreams(sf->arg, &n);
	v = xcalloc(n == 0 ? 1 : n, sizeof(*v));
	for (i = 0; i < n; i++) {
		snprintf(v[i].name, sizeof(v[i].name), "%s", ups[i]->name);
		breaker_save(ups[i]->breaker, now, &v[i].saved);
	}
	text = state_encode(v, n, util_wall_ms());
	free(v);
	return text;
}

/* Write text to the file (writer thread): 0, or -1 + *cause. */
static int
state_file_write(struct state_file *sf, const char *text, char **cause)
{
	int rc;

	/*
	 * A worker may have taken the slot freed at the last shortage before
	 * the reserve was reopened: take one back whenever there is room.
	 */
	if (sf->reserve_fd == -1)
		sf->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	rc = state_write(sf->path, text, cause);
	/*
	 * Out of descriptors (SPEC 8: the write must still happen): give up
	 * the one kept for this and try again, then take it back.
	 */
	if (rc != 0 && (errno == EMFILE || errno == ENFILE) &&
	    sf->reserve_fd != -1) {
		free(*cause);
		*cause = NULL;
		close(sf->reserve_fd);
		rc = state_write(sf->path, text, cause);
		sf->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	return rc;
}

/*
 * The writer thread: take the newest text, write it outside the lock, say
 * how it went, until told to stop with nothing left.
 */
static void *
state_file_main(void *arg)
{
	struct state_file *sf = arg;
	char *text, *cause;
	int rc;

	for (;;) {
		pthread_mutex_lock(&sf->lock);
		while (sf->next == NULL && !sf->stopping)
			pthread_cond_wait(&sf->wake, &sf->lock);
		text = sf->next;
		sf->next = NULL;
		pthread_mutex_unlock(&sf->lock);
		if (text == NULL)
			break;
		cause = NULL;
		rc = state_file_write(sf, text, &cause);
		free(text);
		pthread_mutex_lock(&sf->lock);
		sf->result = rc;
		if (rc != 0) {
			sf->failures++;
			free(sf->cause);
			sf->cause = cause;
		}
		pthread_mutex_unlock(&sf->lock);
		event_active(sf->done_ev, EV_TIMEOUT, 0);
	}
	return NULL;
}

/* Give the writer a text, replacing one it has not taken yet. */
static void
state_file_hand(struct state_file *sf, char *text)
{
	pthread_mutex_lock(&sf->lock);
	free(sf->next);
	sf->next = text;
	pthread_cond_signal(&sf->wake);
	pthread_mutex_unlock(&sf->lock);
}

/* Time to write (main thread): hand the writer the states as of now. */
static void
state_file_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct state_file *sf = arg;

	(void)fd;
	(void)what;
	if (!sf->dirty || !sf->running)
		return;
	sf->dirty = false;
	sf->handed_ms = util_now_ms();
	state_file_hand(sf, state_file_encode(sf));
}

/*
 * The writer finished a write (main thread): log a failure and retry later,
 * with a wait that doubles up to 30s, for as long as the daemon runs.
 */
static void
state_file_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct state_file *sf = arg;
	struct timeval tv;
	char *cause, q[1024], retry[32];
	unsigned failures;
	int rc;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&sf->lock);
	rc = sf->result;
	failures = sf->failures;
	sf->failures = 0;
	cause = sf->cause;
	sf->cause = NULL;
	pthread_mutex_unlock(&sf->lock);
	if (rc == 0) {
		/* A failure the next write already made good: no retry. */
		if (failures > 0)
			log_errorx("event=state_file result=error error=%s",
			    log_quote(q, sizeof(q),
				cause != NULL ? cause : "unknown"));
		if (sf->failing || failures > 0)
			log_info("event=state_file result=ok path=%s",
			    sf->path);
		sf->failing = false;
		sf->retry_ms = STATE_FILE_RETRY_MS;
		free(cause);
		return;
	}
	sf->dirty = true;
	sf->failing = true;
	log_errorx("event=state_file result=error error=%s retry_in=%s",
	    log_quote(q, sizeof(q), cause != NULL ? cause : "unknown"),
	    util_fmt_secs(retry, sizeof(retry), (int64_t)sf->retry_ms));
	free(cause);
	evtimer_add(sf->write_ev, util_timeval(&tv, sf->retry_ms));
	sf->retry_ms *= 2;
	if (sf->retry_ms > STATE_FILE_RETRY_MAX_MS)
		sf->retry_ms = STATE_FILE_RETRY_MAX_MS;
}

/* Start the writer thread, with signals blocked (the main thread has them). */
struct state_file *
state_file_new(struct event_base *base, const char *path,
    state_file_upstreams_cb upstreams, void *arg, char **cause)
{
	struct state_file *sf = xcalloc(1, sizeof(*sf));
	sigset_t all, old;
	int rc;

	sf->path = xstrdup(path);
	sf->upstreams = upstreams;
	sf->arg = arg;
	sf->retry_ms = STATE_FILE_RETRY_MS;
	sf->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pthread_mutex_init(&sf->lock, NULL);
	pthread_cond_init(&sf->wake, NULL);
	sf->write_ev = evtimer_new(base, state_file_write_cb, sf);
	sf->done_ev = event_new(base, -1, 0, state_file_done_cb, sf);
	if (sf->write_ev == NULL || sf->done_ev == NULL) {
		xasprintf(cause, "state_file: cannot create its events");
		state_file_free(sf);
		return NULL;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&sf->thread, NULL, state_file_main, sf);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		xasprintf(cause, "cannot start the state_file writer: %s",
		    strerror(rc));
		state_file_free(sf);
		return NULL;
	}
#ifdef __linux__
	/* For top -H and ps -L. */
	pthread_setname_np(sf->thread, "cpd-state");
#endif
	sf->running = true;
	return sf;
}

/*
 * A file that cannot be used is logged and kept as FILE.bad, before the
 * first write would replace it.
 */
static void
state_file_reject(struct state_file *sf, const char *why)
{
	char *bad = NULL, *cause = NULL, q[1024], qb[1024];

	if (state_set_aside(sf->path, &bad, &cause) == 0) {
		log_warnx("event=state_file result=error path=%s error=%s "
			  "kept=%s",
		    sf->path, log_quote(q, sizeof(q), why),
		    log_quote(qb, sizeof(qb), bad));
		free(bad);
		return;
	}
	log_warnx("event=state_file result=error path=%s error=%s", sf->path,
	    log_quote(q, sizeof(q), why));
	log_errorx("event=state_file result=error path=%s error=%s", sf->path,
	    log_quote(q, sizeof(q), cause));
	free(cause);
}

/*
 * Take back the breaker states of the file at start. A missing file is a
 * first start; a bad one is logged, ignored and kept; upstreams no longer in
 * the config are dropped (the next write leaves them out).
 */
void
state_file_load(struct state_file *sf)
{
	uint64_t now;
	struct state_entry *v = NULL;
	struct breaker_stats st;
	struct upstream *up;
	char *text = NULL, *cause = NULL, retry[32];
	size_t len, n = 0, i;
	int rc;

	rc = state_read(sf->path, &text, &len, &cause);
	if (rc == 1) {
		log_info("event=state_file result=missing path=%s", sf->path);
		return;
	}
	/* The two clocks read together: what is left carries over exactly. */
	now = util_now_ms();
	if (rc == 0)
		rc = state_decode(text, len, util_wall_ms(), &v, &n, &cause);
	free(text);
	if (rc != 0) {
		state_file_reject(sf, cause);
		free(cause);
		return;
	}
	for (i = 0; i < n; i++) {
		if ((up = state_file_upstream(sf, v[i].name)) == NULL) {
			log_info("event=state_file result=dropped upstream=%s "
				 "error=\"not in the config\"",
			    v[i].name);
			continue;
		}
		breaker_restore(up->breaker, &v[i].saved, now);
		breaker_snapshot(up->breaker, now, &st);
		if (v[i].saved.state == BREAKER_CLOSED &&
		    st.state == BREAKER_CLOSED)
			continue;
		log_notice("event=state_file result=restored upstream=%s "
			   "saved=%s state=%s retry_after=%s backoff=%u",
		    up->name, breaker_state_name(v[i].saved.state),
		    breaker_state_name(st.state),
		    util_fmt_secs(retry, sizeof(retry), st.retry_after_ms),
		    v[i].saved.backoff_steps);
	}
	free(v);
}

/*
 * Something changed: write soon. At once, unless a retry waits or a text
 * was handed over less than STATE_FILE_SPACING_MS ago; changes in between
 * are written together.
 */
void
state_file_changed(struct state_file *sf)
{
	struct timeval tv;
	uint64_t since;

	if (sf == NULL || !sf->running)
		return;
	sf->dirty = true;
	if (evtimer_pending(sf->write_ev, NULL))
		return;
	since = util_now_ms() - sf->handed_ms;
	if (sf->handed_ms != 0 && since < STATE_FILE_SPACING_MS)
		evtimer_add(sf->write_ev,
		    util_timeval(&tv, STATE_FILE_SPACING_MS - since));
	else
		event_active(sf->write_ev, EV_TIMEOUT, 0);
}

/* End the thread; with stopping set it first writes what it was given. */
static void
state_file_join(struct state_file *sf)
{
	if (!sf->running)
		return;
	pthread_mutex_lock(&sf->lock);
	sf->stopping = true;
	pthread_cond_signal(&sf->wake);
	pthread_mutex_unlock(&sf->lock);
	pthread_join(sf->thread, NULL);
	sf->running = false;
}

/* The last write, at the stop: waited for, logged if it fails. */
void
state_file_stop(struct state_file *sf)
{
	char q[1024];

	if (sf == NULL || !sf->running)
		return;
	state_file_hand(sf, state_file_encode(sf));
	state_file_join(sf);
	if (sf->result != 0) {
		log_errorx("event=state_file result=error error=%s",
		    log_quote(q, sizeof(q),
			sf->cause != NULL ? sf->cause : "unknown"));
	}
}

/* Free it; a text not yet taken is dropped, a write under way finished. */
void
state_file_free(struct state_file *sf)
{
	if (sf == NULL)
		return;
	if (sf->running) {
		pthread_mutex_lock(&sf->lock);
		free(sf->next);
		sf->next = NULL;
		pthread_mutex_unlock(&sf->lock);
		state_file_join(sf);
	}
	if (sf->write_ev != NULL)
		event_free(sf->write_ev);
	if (sf->done_ev != NULL)
		event_free(sf->done_ev);
	free(sf->next);
	free(sf->cause);
	if (sf->reserve_fd != -1)
		close(sf->reserve_fd);
	pthread_cond_destroy(&sf->wake);
	pthread_mutex_destroy(&sf->lock);
	free(sf->path);
	free(sf);
}
