/*
 * A client turned away by admission: reset, or told in its own protocol
 * (the bytes come from reject.c), then kept in its worker's room until it
 * closes its side. A postgres client's startup packet is read first. What
 * the client still sends is read and dropped, bounded per wake-up and in
 * all; replied clients are looked at again together, in batches.
 */
#include <sys/socket.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "addr.h"
#include "admit.h"
#include "log.h"
#include "pool.h"
#include "reject.h"
#include "turnaway.h"
#include "upstream.h"
#include "util.h"

/* How long a client sent a reject reply may take to close its side. */
#define TURNAWAY_LINGER_MS 2000
/*
 * When a client sent a reject reply is first looked at again: most have
 * closed by then, and are closed without ever entering epoll.
 */
#define TURNAWAY_LINGER_PEEK_MS 10
/*
 * What a client sent a reject reply may still send: read and dropped, at
 * most this much per wake-up, and this much in all before it is reset.
 */
#define TURNAWAY_LINGER_READ_MAX (16 * 1024)
#define TURNAWAY_LINGER_TOTAL_MAX (64 * 1024)
/* Queued clients looked at in one poll(2). */
#define TURNAWAY_LINGER_BATCH 64
#ifndef POLLRDHUP
#define POLLRDHUP 0 /* not Linux: POLLHUP tells once both sides are shut */
#endif
/* Rejected clients a worker reads from or waits for at once. */
#define TURNAWAY_LINGER_MAX 1024

enum turnaway_phase {
	TURNAWAY_READING, /* postgres reject: reading the startup packet */
	TURNAWAY_LINGER_QUEUED, /* reply sent, in the room's queue */
	TURNAWAY_LINGERING,	/* reply sent, waiting for the client's FIN */
};

/* Why a turned-away client ends. */
enum turnaway_end {
	TURNAWAY_END_DONE,	   /* it closed (or gave up first) */
	TURNAWAY_END_CLIENT_RESET, /* it reset, sent garbage or too much */
	TURNAWAY_END_SHUTDOWN,	   /* shutdown_timeout */
};

/* end= of event=conn when the client had no state, per turnaway_end. */
static const char *turnaway_end_names[] = { "done", "client_reset",
	"shutdown" };
/* reason= of the debug event=close line, per turnaway_end. */
static const char *turnaway_close_names[] = { "done", "reset", "shutdown" };

struct turnaway {
	LIST_ENTRY(turnaway) entry;
	TAILQ_ENTRY(turnaway) linger_entry; /* TURNAWAY_LINGER_QUEUED */
	struct turnaway_room *room;
	struct upstream *up; /* NULL for a pool's reject */
	struct pool *pool;
	enum turnaway_phase phase;
	int fd;
	bool log_conn;	    /* leaves an event=conn line when it ends */
	uint64_t accept_ms; /* the client was taken */
	uint64_t start_ms;  /* the reply went out */
	uint64_t bytes_out; /* the reply's bytes */
	struct reject_pg pg;
	const char *name;  /* the upstream or pool named in the reply */
	const char *state; /* "open", "half_open", "forced_open" */
	uint64_t secs;	   /* retry after */
	uint64_t read_ms;  /* how long the startup packet may take */
	size_t discarded;  /* bytes read and dropped after the reply */
	struct event ev_r, timer;
	struct turnaway_peer peer;
};

static void turnaway_read(struct turnaway *);

/* Close a socket so the peer sees a reset (RST) rather than a FIN. */
void
turnaway_close_rst(int fd)
{
	struct linger lg = { 1, 0 };

	if (fd == -1)
		return;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Keep a client's address (a unix peer has no name worth keeping). */
void
turnaway_peer_set(struct turnaway_peer *p, const struct sockaddr *sa,
    socklen_t len)
{
	if (sa->sa_family == AF_UNIX || len > sizeof(p->u))
		len = sizeof(sa_family_t);
	memcpy(&p->u, sa, len);
	p->len = len;
}

/* Format a client's address for a log line. */
const char *
turnaway_peer_str(const struct turnaway_peer *p, char *buf)
{
	return addr_format(&p->u.sa, p->len, buf, TURNAWAY_PEER_STR_MAX);
}

/* Append s to the line being built at *p, within end; returns the end. */
static char *
turnaway_put(char *p, const char *end, const char *s)
{
	size_t n = strlen(s);

	if (n > (size_t)(end - p))
		n = (size_t)(end - p);
	memcpy(p, s, n);
	return p + n;
}

/* Append a number in decimal, as turnaway_put(). */
static char *
turnaway_put_u64(char *p, const char *end, uint64_t v)
{
	char digits[24], *d = digits + sizeof(digits);

	*--d = '\0';
	do
		*--d = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	return turnaway_put(p, end, d);
}

/*
 * The client's event=conn line (log_connections), through the log queue
 * and never rate-limited: up is whose server it was given (NULL when a
 * pool turned it away), pool the pool it came through (or NULL). Built by
 * hand, not printf: a busy proxy writes one per client.
 */
void
turnaway_log_conn(struct upstream *up, struct pool *pool,
    const struct turnaway_peer *peer, const struct turnaway_conn *c)
{
	char client[TURNAWAY_PEER_STR_MAX], server[ADDR_TEXT_MAX + 8];
	char line[1536], *p = line;
	const char *e = line + sizeof(line);

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	p = turnaway_put(p, e, "event=conn upstream=");
	p = turnaway_put(p, e, up != NULL ? up->name : "-");
	if (pool != NULL) {
		p = turnaway_put(p, e, " pool=");
		p = turnaway_put(p, e, pool->name);
	}
	p = turnaway_put(p, e, " server=");
	p = turnaway_put(p, e,
	    c->tries > 0 && up != NULL ? log_quote(server, sizeof(server),
					     upstream_conf(up)->server.text)
				       : "-");
	p = turnaway_put(p, e, " client=");
	p = turnaway_put(p, e, turnaway_peer_str(peer, client));
	p = turnaway_put(p, e, " end=");
	p = turnaway_put(p, e, c->end);
	if (c->state != NULL) {
		p = turnaway_put(p, e, " state=");
		p = turnaway_put(p, e, c->state);
	}
	p = turnaway_put(p, e, " connect_ms=");
	if (c->connect_took_us < 0)
		p = turnaway_put(p, e, "-1");
	else {
		p = turnaway_put_u64(p, e, (uint64_t)c->connect_took_us / 1000);
		p = turnaway_put(p, e, ".");
		p = turnaway_put_u64(p, e,
		    (uint64_t)c->connect_took_us % 1000 / 100);
	}
	p = turnaway_put(p, e, " duration_ms=");
	p = turnaway_put_u64(p, e, c->duration_ms);
	p = turnaway_put(p, e, " bytes_in=");
	p = turnaway_put_u64(p, e, c->bytes_in);
	p = turnaway_put(p, e, " bytes_out=");
	p = turnaway_put_u64(p, e, c->bytes_out);
	p = turnaway_put(p, e, " tries=");
	p = turnaway_put_u64(p, e, c->tries);
	log_defer(LOG_LEVEL_INFO, line, (size_t)(p - line));
}

/* Does the entry a client came through (its pool, else its upstream) log? */
bool
turnaway_log_wanted(struct upstream *up, struct pool *pool)
{
	if (pool != NULL)
		return pool_conf(pool)->log_connections;
	return up != NULL && upstream_conf(up)->log_connections;
}

/* The event=conn line of a client turned away without a wait. */
void
turnaway_log_turned(const struct admit *a, const struct turnaway_peer *peer,
    const char *end, const char *state)
{
	struct turnaway_conn c = { .end = end,
		.state = state,
		.connect_took_us = -1 };

	turnaway_log_conn(a->up, a->pool, peer, &c);
}

/* The debug event=close line of a client (relayed or turned away). */
void
turnaway_log_close(struct upstream *up, struct pool *pool,
    const struct turnaway_peer *peer, const char *reason)
{
	char client[TURNAWAY_PEER_STR_MAX];

	log_debug("event=close %s=%s client=%s reason=%s",
	    up != NULL ? "upstream" : "pool",
	    up != NULL ? up->name : pool->name, turnaway_peer_str(peer, client),
	    reason);
}

/* The only way out of the room: log, close, release and tell the worker. */
static void
turnaway_close(struct turnaway *t, enum turnaway_end why)
{
	struct turnaway_room *room = t->room;
	struct upstream *up = t->up;
	struct pool *pool = t->pool;
	struct turnaway_conn c;

	if (t->log_conn) {
		c = (struct turnaway_conn){ .end = turnaway_end_names[why],
			.state = t->state,
			.connect_took_us = -1,
			.duration_ms = util_now_ms() - t->accept_ms,
			.bytes_out = t->bytes_out };
		if (t->state != NULL)
			c.end = "rejected";
		turnaway_log_conn(up, pool, &t->peer, &c);
	}
	event_del(&t->ev_r);
	event_del(&t->timer);
	if (why != TURNAWAY_END_DONE)
		turnaway_close_rst(t->fd);
	else
		close(t->fd);
	if (t->phase == TURNAWAY_LINGER_QUEUED)
		TAILQ_REMOVE(&room->queue, t, linger_entry);
	room->n--;
	LIST_REMOVE(t, entry);
	/* up and pool are not touched after this. */
	turnaway_client_end(up, pool, &t->peer, turnaway_close_names[why]);
	free(t);
	room->gone(room->gone_arg);
}

/* Reset every turned-away client: the shutdown timeout has passed. */
unsigned
turnaway_close_all(struct turnaway_room *room)
{
	struct turnaway *t;
	unsigned n = 0;

	while ((t = LIST_FIRST(&room->all)) != NULL) {
		n++;
		turnaway_close(t, TURNAWAY_END_SHUTDOWN);
	}
	return n;
}

/*
 * Discard what a client sent a reject reply still sends, a bounded amount
 * per wake-up so that a client that keeps sending cannot hold the worker:
 * 1 once it has closed its side, -1 when the connection failed or it sent
 * more than TURNAWAY_LINGER_TOTAL_MAX in all (reset it), 0 to wait on.
 */
static int
turnaway_linger_drain(struct turnaway *t)
{
	char buf[4096];
	size_t got = 0;
	ssize_t n;

	while (got < TURNAWAY_LINGER_READ_MAX) {
		n = recv(t->fd, buf, sizeof(buf), 0);
		if (n == 0)
			return 1;
		if (n == -1)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		got += (size_t)n;
		t->discarded += (size_t)n;
		if (t->discarded > TURNAWAY_LINGER_TOTAL_MAX)
			return -1;
	}
	return 0;
}

/*
 * The room's queue of clients sent a reject reply: those queued for
 * TURNAWAY_LINGER_PEEK_MS are looked at together, in one poll(2) per
 * TURNAWAY_LINGER_BATCH. One that has closed its side is closed (already
 * shut down both ways, it gets no reset whatever it left unread); the
 * others are waited for with a read event for the rest of
 * TURNAWAY_LINGER_MS.
 */
static void
turnaway_linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct turnaway_room *room = arg;
	uint64_t now = util_now_ms(), waited;
	struct pollfd pfd[TURNAWAY_LINGER_BATCH];
	struct turnaway *batch[TURNAWAY_LINGER_BATCH], *t;
	struct timeval tv;
	int i, n;

	(void)fd;
	(void)what;
	do {
		n = 0;
		while (n < TURNAWAY_LINGER_BATCH &&
		    (t = TAILQ_FIRST(&room->queue)) != NULL &&
		    t->start_ms + TURNAWAY_LINGER_PEEK_MS <= now) {
			TAILQ_REMOVE(&room->queue, t, linger_entry);
			t->phase = TURNAWAY_LINGERING;
			pfd[n].fd = t->fd;
			pfd[n].events = POLLIN | POLLRDHUP;
			pfd[n].revents = 0;
			batch[n++] = t;
		}
		if (n > 0 && poll(pfd, (nfds_t)n, 0) == -1)
			for (i = 0; i < n; i++)
				pfd[i].revents = 0;
		for (i = 0; i < n; i++) {
			t = batch[i];
			if (pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
				turnaway_close(t, TURNAWAY_END_DONE);
				continue;
			}
			waited = now - t->start_ms;
			event_add(&t->ev_r, NULL);
			event_add(&t->timer,
			    util_timeval(&tv,
				waited < TURNAWAY_LINGER_MS
				    ? TURNAWAY_LINGER_MS - waited
				    : 0));
		}
	} while (n == TURNAWAY_LINGER_BATCH);
	if ((t = TAILQ_FIRST(&room->queue)) != NULL)
		evtimer_add(room->linger_ev,
		    util_timeval(&tv,
			t->start_ms + TURNAWAY_LINGER_PEEK_MS - now));
}

/* Client readable: its startup packet, or what it sends after the reply. */
static void
turnaway_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct turnaway *t = arg;

	(void)fd;
	(void)what;
	if (t->phase == TURNAWAY_READING) {
		turnaway_read(t);
		return;
	}
	switch (turnaway_linger_drain(t)) {
	case 1:
		turnaway_close(t, TURNAWAY_END_DONE);
		break;
	case -1:
		turnaway_close(t, TURNAWAY_END_CLIENT_RESET);
		break;
	}
}

/* The wait is over: the linger time, or the startup packet's. */
static void
turnaway_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct turnaway *t = arg;

	(void)fd;
	(void)what;
	if (t->phase == TURNAWAY_READING)
		/* Nothing, or not all of it, within connect_timeout. */
		turnaway_close(t, TURNAWAY_END_CLIENT_RESET);
	else
		turnaway_close(t, TURNAWAY_END_DONE);
}

/*
 * A turned-away client the room reads from (until its reply is out) or
 * waits for, holding up (NULL for a pool's reject) and pool (or NULL)
 * until it ends; NULL past the cap (a flood) or short of memory.
 */
static struct turnaway *
turnaway_new(struct turnaway_room *room, const struct admit *a, int fd,
    const struct turnaway_peer *peer)
{
	struct turnaway *t;

	if (room->n >= TURNAWAY_LINGER_MAX ||
	    (t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->room = room;
	t->up = a->up;
	t->pool = a->pool;
	t->fd = fd;
	t->peer = *peer;
	t->log_conn = turnaway_log_wanted(a->up, a->pool);
	t->accept_ms = util_now_ms();
	t->name = a->name;
	t->state = a->state;
	t->read_ms = a->connect_timeout_ms;
	t->phase = TURNAWAY_READING;
	event_assign(&t->ev_r, room->base, fd, EV_READ | EV_PERSIST,
	    turnaway_read_cb, t);
	evtimer_assign(&t->timer, room->base, turnaway_timer_cb, t);
	LIST_INSERT_HEAD(&room->all, t, entry);
	room->n++;
	if (t->up != NULL)
		atomic_fetch_add_explicit(&t->up->refs, 1,
		    memory_order_relaxed);
	if (t->pool != NULL)
		atomic_fetch_add_explicit(&t->pool->refs, 1,
		    memory_order_relaxed);
	return t;
}

/*
 * The reply is out and our side shut: queue the client, to be looked at
 * again in TURNAWAY_LINGER_PEEK_MS (see turnaway_linger_cb).
 */
static void
turnaway_linger_queue(struct turnaway *t)
{
	struct turnaway_room *room = t->room;
	struct timeval tv;

	event_del(&t->ev_r);
	event_del(&t->timer);
	t->phase = TURNAWAY_LINGER_QUEUED;
	t->start_ms = util_now_ms();
	TAILQ_INSERT_TAIL(&room->queue, t, linger_entry);
	if (room->linger_ev == NULL)
		room->linger_ev =
		    evtimer_new(room->base, turnaway_linger_cb, room);
	if (!evtimer_pending(room->linger_ev, NULL))
		evtimer_add(room->linger_ev,
		    util_timeval(&tv, TURNAWAY_LINGER_PEEK_MS));
}

/* Send a reject reply whole and shut our side; false if it did not fit. */
static bool
turnaway_send(int fd, const char *reply, size_t n)
{
	/* MSG_MORE: the reply and the FIN leave in one segment. */
	if (send(fd, reply, n, MSG_NOSIGNAL | MSG_MORE) != (ssize_t)n)
		return false;
	shutdown(fd, SHUT_WR);
	return true;
}

/*
 * A postgres reject reads the client's first packets: 'N' answers an
 * SSLRequest or GSSENCRequest, the ErrorResponse the startup packet, and
 * the client is then waited for as after any reply. Garbage is reset; what
 * is read is bounded by the protocol's lengths, and how long by the timer
 * (connect_timeout). The answers to one read leave in one send.
 */
static void
turnaway_read(struct turnaway *t)
{
	struct turnaway_room *room = t->room;
	const uint8_t *buf = (const uint8_t *)room->scratch;
	char out[REJECT_PG_REQUESTS_MAX + REJECT_REPLY_MAX];
	size_t off, used, nout = 0;
	struct timeval tv;
	ssize_t n;

	for (;;) {
		n = recv(t->fd, room->scratch, room->scratch_len, 0);
		if (n == 0) {
			/* The client gave up first: nothing to tell it. */
			turnaway_close(t, TURNAWAY_END_DONE);
			return;
		}
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			turnaway_close(t, TURNAWAY_END_CLIENT_RESET);
			return;
		}
		for (off = 0; off < (size_t)n; off += used) {
			switch (reject_pg_feed(&t->pg, buf + off,
			    (size_t)n - off, &used)) {
			case REJECT_PG_MORE:
				break;
			case REJECT_PG_ANSWER_N:
				out[nout++] = 'N';
				break;
			case REJECT_PG_STARTUP:
				nout += reject_reply(REJECT_POSTGRES, t->name,
				    t->state, t->secs, out + nout,
				    sizeof(out) - nout);
				if (!turnaway_send(t->fd, out, nout))
					turnaway_close(t,
					    TURNAWAY_END_CLIENT_RESET);
				else {
					t->bytes_out += nout;
					turnaway_linger_queue(t);
				}
				return;
			case REJECT_PG_BAD:
				turnaway_close(t, TURNAWAY_END_CLIENT_RESET);
				return;
			}
		}
	}
	/* More to come: answer what came, and wait for the rest. */
	if (nout > 0 && send(t->fd, out, nout, MSG_NOSIGNAL) != (ssize_t)nout) {
		turnaway_close(t, TURNAWAY_END_CLIENT_RESET);
		return;
	}
	t->bytes_out += nout;
	if (!event_pending(&t->ev_r, EV_READ, NULL)) {
		event_add(&t->ev_r, NULL);
		event_add(&t->timer, util_timeval(&tv, t->read_ms));
	}
}

/*
 * Turn a client away as admission decided (the line is logged): reset it
 * or tell it in its own protocol (SPEC 4). A reply goes out at once,
 * except postgres's, which waits for the client's startup packet.
 */
void
turnaway_reject(struct turnaway_room *room, const struct admit *a, int fd,
    const struct turnaway_peer *peer)
{
	char reply[REJECT_REPLY_MAX];
	struct turnaway *t;
	uint64_t secs;
	size_t n;
	bool log_conn = turnaway_log_wanted(a->up, a->pool);

	if (a->reject == REJECT_RESET) {
		if (log_conn)
			turnaway_log_turned(a, peer, "rejected", a->state);
		turnaway_close_rst(fd);
		return;
	}
	secs = reject_retry_secs(a->retry_after_ms, a->recovery_timeout_ms);
	if (a->reject == REJECT_POSTGRES) {
		t = turnaway_new(room, a, fd, peer);
		if (t == NULL) {
			if (log_conn)
				turnaway_log_turned(a, peer, "rejected",
				    a->state);
			turnaway_close_rst(fd);
			return;
		}
		reject_pg_init(&t->pg);
		t->secs = secs;
		/* The packet is often in already: spare a trip through epoll. */
		turnaway_read(t);
		return;
	}
	n = reject_reply(a->reject, a->name, a->state, secs, reply,
	    sizeof(reply));
	if (!turnaway_send(fd, reply, n)) {
		if (log_conn)
			turnaway_log_turned(a, peer, "rejected", a->state);
		turnaway_close_rst(fd);
		return;
	}
	/* Past the cap, a flood of rejects gets its reply without the wait. */
	if ((t = turnaway_new(room, a, fd, peer)) == NULL) {
		if (log_conn)
			turnaway_log_turned(a, peer, "rejected", a->state);
		close(fd);
		return;
	}
	t->bytes_out = n;
	turnaway_linger_queue(t);
}

/* Set up a worker's room. */
void
turnaway_room_init(struct turnaway_room *room, struct event_base *base,
    char *scratch, size_t scratch_len, turnaway_gone_cb gone, void *arg)
{
	memset(room, 0, sizeof(*room));
	room->base = base;
	room->scratch = scratch;
	room->scratch_len = scratch_len;
	room->gone = gone;
	room->gone_arg = arg;
	LIST_INIT(&room->all);
	TAILQ_INIT(&room->queue);
}

/* Free what a room holds once its clients are gone. */
void
turnaway_room_free(struct turnaway_room *room)
{
	if (room->linger_ev != NULL)
		event_free(room->linger_ev);
	room->linger_ev = NULL;
}
