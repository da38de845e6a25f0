/*
 * One client from accept to close: the verdict of admission (admit.c:
 * which upstream; a client turned away goes to turnaway.c), the
 * non-blocking connect under connect_timeout (a pool's client whose connect fails is handed to
 * another member while it has retries), the byte relay both ways, and the
 * end.
 *
 * The data path uses plain persistent read events and one scratch buffer per
 * worker: bytes read are written straight to the other side. Only what the
 * other side cannot take right now is kept, in a buffer allocated for the
 * occasion; meanwhile the source is not read (backpressure), so memory per
 * relay is bounded by one read, and an idle relay holds no buffer at all.
 * Write events are armed only while such a remainder waits.
 *
 * A direction whose read filled the scratch buffer is bulk: with splice =
 * auto it then moves socket -> pipe -> socket with splice(2), the bytes
 * never copied to user space. The pipe is borrowed from the worker's pool
 * and given back as soon as it is empty and the source has nothing more,
 * so an idle relay holds no pipe either. Bytes left in the pipe are the
 * remainder then, with the same backpressure. A small read turns the
 * direction back to recv/send; no pipe to be had, or a socket splice(2)
 * refuses (EINVAL), means copying as before.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "admit.h"
#include "log.h"
#include "pipe.h"
#include "pool.h"
#include "proxyproto.h"
#include "relay.h"
#include "turnaway.h"
#include "upstream.h"
#include "util.h"

/*
 * A server's last words (SPEC 8): when a write to it fails, what it had
 * sent is still delivered to the client, this much at most and within this
 * long, before the client is reset.
 */
#define RELAY_LAST_WORDS_MAX (64 * 1024)
#define RELAY_LAST_WORDS_MS 100
/* relay->queued before the first look at the send queues. */
#define RELAY_QUEUED_UNKNOWN UINT32_MAX
/* How often a source that is not read (paused or finished) is checked. */
#define RELAY_PAUSED_CHECK_MS 1000
/* Reads per wakeup before giving other relays their turn. */
#define RELAY_READS_PER_WAKEUP 4
/* A splice that moved less than this turns the direction back to copying. */
#define RELAY_SPLICE_SMALL 16384
#ifdef SPLICE_F_MOVE
#define RELAY_SPLICE_FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
#endif

enum relay_phase {
	RELAY_CONNECTING,
	RELAY_RELAYING,
	RELAY_LAST_WORDS, /* a write to the server failed: see relay_last_words */
};

struct relay;

/* One direction: bytes read from src, written to dst. */
struct relay_dir {
	struct relay *relay; /* its relay (the direction is its events' arg) */
	int src, dst;
	struct event *rev; /* src readable */
	struct event *wev; /* dst writable, armed only with a remainder */
	char *buf;	   /* the remainder dst could not take yet */
	uint32_t off, len; /* of buf: at most one read */
	int pipe[2];	   /* borrowed while bytes move by splice, else -1 */
	uint32_t inpipe;   /* bytes in the pipe: the remainder when spliced */
	bool bulk;	   /* moves by splice(2) */
	bool no_splice;	   /* splice(2) refused these sockets: copy */
	bool eof;	   /* src sent its FIN */
	bool fin_near;	   /* epoll saw src's FIN behind its bytes (RDHUP) */
	bool done;	   /* FIN passed on: dst's write side shut */
	enum upstream_counter counter;
};

struct relay {
	LIST_ENTRY(relay) entry;
	struct relay_room *room;
	/* Whose server (a backup, a pool's member). */
	struct upstream *up;
	enum relay_phase phase;
	int cfd, sfd;
	struct admit adm;	 /* the verdict, and the attempt it is on */
	bool outcome_pending;	 /* attempt not yet recorded */
	bool server_spoke;	 /* the server has sent a byte */
	bool client_ready;	 /* read the client once connected */
	bool log_conn;		 /* leaves an event=conn line when it ends */
	uint64_t accept_ms;	 /* the client was taken */
	int64_t connect_took_us; /* connect to established; -1 never */
	uint64_t bytes_in, bytes_out; /* client->server, server->client */
	uint64_t start_ms;	      /* connect began */
	uint64_t connect_us;	      /* connect() called, for the histogram */
	uint64_t connected_ms;
	uint64_t last_active_ms;
	uint32_t queued;	  /* kernel send queues at the last look */
	uint64_t last_words_ms;	  /* their deadline (RELAY_LAST_WORDS) */
	uint32_t last_words_left; /* bytes the server may still have said */
	struct relay_dir c2s, s2c;
	struct event cev_r, cev_w, sev_r, sev_w, timer;
	struct turnaway_peer peer;
	struct turnaway_peer local; /* the address it reached; len 0: ask */
};

/* Why a relay ends: the end= of its event=conn line (SPEC 5). */
enum relay_end {
	RELAY_END_DONE,		/* both directions finished */
	RELAY_END_CLIENT_RESET, /* the client reset (or left while connecting) */
	RELAY_END_SERVER_RESET, /* the server reset */
	RELAY_END_IDLE,		/* idle_timeout */
	RELAY_END_SHUTDOWN,	/* shutdown_timeout */
	RELAY_END_CONNECT_FAIL, /* the connect to the server failed */
	RELAY_END_OVERLOAD,	/* no slot, descriptor or memory for it */
};

/* end= of event=conn, per relay_end. */
static const char *relay_end_names[] = { "done", "client_reset", "server_reset",
	"idle_timeout", "shutdown", "connect_fail", "overload" };
/* reason= of the debug event=close line, per relay_end. */
static const char *relay_close_names[] = { "done", "reset", "reset", "idle",
	"shutdown", "reset", "reset" };

static void relay_close(struct relay *, enum relay_end);
static void relay_timer_arm(struct relay *, uint64_t);
static void relay_forward(struct relay *, struct relay_dir *);
static void relay_pipe_put(struct relay *, struct relay_dir *);
static void relay_last_words(struct relay *);
static int relay_connect(struct relay *);

/* Record the pending attempt's outcome once. */
static void
relay_record(struct relay *r, bool success, enum breaker_error err)
{
	if (!r->outcome_pending)
		return;
	r->outcome_pending = false;
	admit_record(&r->adm, success, err, util_now_ms());
}

/* Log a failed attempt (before recording it, so the state line follows). */
static void
relay_log_fail(struct relay *r, enum breaker_error err, uint64_t elapsed_ms)
{
	char client[TURNAWAY_PEER_STR_MAX], server[ADDR_TEXT_MAX + 8];

	log_warnx("event=connect_fail upstream=%s server=%s client=%s "
		  "error=%s elapsed_ms=%" PRIu64,
	    r->up->name,
	    log_quote(server, sizeof(server),
		upstream_conf(r->up)->server.text),
	    turnaway_peer_str(&r->peer, client), breaker_error_name(err),
	    elapsed_ms);
}

/* The whole and only way out: release both sides, timers and counters. */
static void
relay_close(struct relay *r, enum relay_end why)
{
	struct relay_room *room = r->room;
	struct upstream *up = r->up;
	struct pool *pool = r->adm.pool;
	struct turnaway_conn c;

	if (r->log_conn) {
		c = (struct turnaway_conn){ .end = relay_end_names[why],
			.tries = r->adm.tries,
			.connect_took_us = r->connect_took_us,
			.duration_ms = util_now_ms() - r->accept_ms,
			.bytes_in = r->bytes_in,
			.bytes_out = r->bytes_out };
		turnaway_log_conn(up, pool, &r->peer, &c);
	}
	if (r->outcome_pending) {
		/*
		 * Cut short while connecting (the client left, or
		 * shutdown): the attempt has no outcome.
		 */
		if (r->phase == RELAY_CONNECTING) {
			admit_cancel(&r->adm);
			r->outcome_pending = false;
		} else
			relay_record(r, true, BREAKER_ERR_OTHER);
	}
	event_del(&r->cev_r);
	event_del(&r->cev_w);
	event_del(&r->timer);
	if (r->sfd != -1) {
		event_del(&r->sev_r);
		event_del(&r->sev_w);
	}
	if (why != RELAY_END_DONE && why != RELAY_END_IDLE) {
		turnaway_close_rst(r->cfd);
		turnaway_close_rst(r->sfd);
	} else {
		close(r->cfd);
		if (r->sfd != -1)
			close(r->sfd);
	}
	free(r->c2s.buf);
	free(r->s2c.buf);
	relay_pipe_put(r, &r->c2s);
	relay_pipe_put(r, &r->s2c);
	admit_release(&r->adm);
	LIST_REMOVE(r, entry);
	/* up and pool are not touched after this. */
	turnaway_client_end(up, pool, &r->peer, relay_close_names[why]);
	free(r);
	/* No relay left to reuse them: spare pipes go back to the system. */
	if (--room->n == 0)
		pipe_pool_trim(room->pipes);
	room->gone(room->gone_arg);
}

/*
 * For tests only: CIRCUITPROXYD_TEST_SPLICE=force makes every direction
 * splice from its first byte, so that the relay stories run on both paths.
 */
static bool
relay_splice_forced(void)
{
	const char *v = getenv("CIRCUITPROXYD_TEST_SPLICE");

	return v != NULL && strcmp(v, "force") == 0;
}

/* Set up a worker's relay room; gone is told of each relay that ends. */
void
relay_room_init(struct relay_room *room, const struct relay_room_lend *lend,
    relay_gone_cb gone, void *arg)
{
	memset(room, 0, sizeof(*room));
	room->base = lend->base;
	room->worker = lend->worker;
	room->scratch = lend->scratch;
	room->scratch_len = lend->scratch_len;
	room->pipes = lend->pipes;
	room->turned = lend->turned;
	room->splice_force = relay_splice_forced();
	room->gone = gone;
	room->gone_arg = arg;
	LIST_INIT(&room->all);
}

/* Reset every relay of a room: the shutdown timeout has passed. */
unsigned
relay_close_all(struct relay_room *room)
{
	struct relay *r;
	unsigned n = 0;

	while ((r = LIST_FIRST(&room->all)) != NULL) {
		n++;
		relay_close(r, RELAY_END_SHUTDOWN);
	}
	return n;
}

/* A direction is finished: pass the FIN on; end the relay when both are. */
static void
relay_dir_finish(struct relay *r, struct relay_dir *d)
{
	struct relay_dir *other = d == &r->c2s ? &r->s2c : &r->c2s;

	d->done = true;
	/* The last direction to finish needs no shutdown: close sends FIN. */
	if (other->done) {
		relay_close(r, RELAY_END_DONE);
		return;
	}
	shutdown(d->dst, SHUT_WR);
	/* d->src is no longer read: the timer watches it for a reset. */
	relay_timer_arm(r, util_now_ms());
}

/* The server closed or reset before its first byte: maybe an early close. */
static bool
relay_early_close(struct relay *r)
{
	if (!r->outcome_pending || r->server_spoke)
		return false;
	relay_log_fail(r, BREAKER_ERR_EARLY_CLOSE, util_now_ms() - r->start_ms);
	relay_record(r, false, BREAKER_ERR_EARLY_CLOSE);
	relay_close(r, RELAY_END_SERVER_RESET);
	return true;
}

/* Bytes moved: the relay is not idle (kept only with an idle_timeout). */
static void
relay_touch(struct relay *r)
{
	r->last_active_ms = util_now_ms();
	r->queued = RELAY_QUEUED_UNKNOWN;
	/* A reload may have set idle_timeout since this relay started. */
	if (!evtimer_pending(&r->timer, NULL))
		relay_timer_arm(r, r->last_active_ms);
}

/*
 * A write failed (a reset): the relay ends. A write to the server that
 * fails first hands the client what the server had said (its last words);
 * a server that resets before its first byte is an early close, whichever
 * side noticed first.
 */
static void
relay_write_error(struct relay *r, struct relay_dir *d)
{
	if (d->dst == r->sfd) {
		relay_last_words(r);
		return;
	}
	relay_close(r, RELAY_END_CLIENT_RESET);
}

/* Give a direction's pipe back to the pool (closed if bytes are left). */
static void
relay_pipe_put(struct relay *r, struct relay_dir *d)
{
	pipe_pool_put(r->room->pipes, d->pipe, d->inpipe == 0);
	d->inpipe = 0;
}

/* May this direction move by splice(2) (splice = auto, sockets willing)? */
static bool
relay_splice_ok(struct relay *r, struct relay_dir *d)
{
#ifdef SPLICE_F_MOVE
	return !d->no_splice && upstream_conf(r->up)->splice == SPLICE_AUTO;
#else
	(void)r;
	(void)d;
	return false;
#endif
}

/* n bytes came from a direction's source: count them, judge the attempt. */
static void
relay_got(struct relay *r, struct relay_dir *d, size_t n)
{
	upstream_count(r->up, r->room->worker, d->counter, (uint64_t)n);
	if (d == &r->c2s)
		r->bytes_in += n;
	else
		r->bytes_out += n;
	if (d == &r->s2c && !r->server_spoke) {
		r->server_spoke = true;
		relay_record(r, true, BREAKER_ERR_OTHER);
	}
	if (upstream_conf(r->up)->idle_timeout_ms != 0)
		relay_touch(r);
}

/* The source sent its FIN: pass it on (nothing of it is left to write). */
static void
relay_src_eof(struct relay *r, struct relay_dir *d)
{
	if (d == &r->s2c && relay_early_close(r))
		return;
	/* A client that hangs up first ends its attempt well. */
	if (d == &r->c2s)
		relay_record(r, true, BREAKER_ERR_OTHER);
	d->eof = true;
	event_del(d->rev);
	relay_dir_finish(r, d);
}

/* Reading the source failed (a reset): the relay ends. */
static void
relay_read_error(struct relay *r, struct relay_dir *d)
{
	if (d == &r->s2c && relay_early_close(r))
		return;
	relay_close(r,
	    d == &r->s2c ? RELAY_END_SERVER_RESET : RELAY_END_CLIENT_RESET);
}

/* dst cannot take more now: stop reading src until the remainder is gone. */
static void
relay_pause(struct relay *r, struct relay_dir *d)
{
	event_del(d->rev);
	event_add(d->wev, NULL);
	relay_timer_arm(r, util_now_ms());
}

/* What a step of a direction's forwarding left to do. */
enum relay_step {
	RELAY_STEP_MORE, /* read again: the source may have more */
	RELAY_STEP_STOP, /* wait for the next event (or the relay ended) */
};

/* Copy one read from src to dst through the scratch buffer. */
static enum relay_step
relay_copy_step(struct relay *r, struct relay_dir *d)
{
	char *buf = r->room->scratch;
	size_t cap = r->room->scratch_len;
	ssize_t n, m;

	n = recv(d->src, buf, cap, 0);
	if (n == 0) {
		relay_src_eof(r, d);
		return RELAY_STEP_STOP;
	}
	if (n == -1) {
		if (errno != EAGAIN && errno != EINTR)
			relay_read_error(r, d);
		return RELAY_STEP_STOP;
	}
	relay_got(r, d, (size_t)n);
	m = send(d->dst, buf, (size_t)n, MSG_NOSIGNAL);
	if (m == -1) {
		if (errno != EAGAIN && errno != EINTR) {
			relay_write_error(r, d);
			return RELAY_STEP_STOP;
		}
		m = 0;
	}
	if (m < n) {
		/* Keep the rest; stop reading until it is gone. */
		d->len = (uint32_t)(n - m);
		d->off = 0;
		if ((d->buf = malloc(d->len)) == NULL) {
			relay_close(r, RELAY_END_OVERLOAD);
			return RELAY_STEP_STOP;
		}
		memcpy(d->buf, buf + m, d->len);
		relay_pause(r, d);
		return RELAY_STEP_STOP;
	}
	/*
	 * A short read drained the source, unless its FIN waits behind the
	 * bytes: then read it now and pass it on in the same wakeup.
	 */
	if ((size_t)n < cap)
		return d->fin_near ? RELAY_STEP_MORE : RELAY_STEP_STOP;
	/* A full read: a bulk flow, from now on spliced. */
	if (relay_splice_ok(r, d))
		d->bulk = true;
	return RELAY_STEP_MORE;
}

/*
 * splice(2) refused a pipe's bytes for dst: read them back into a remainder
 * and copy from now on. False when the relay ended.
 */
static bool
relay_pipe_unsplice(struct relay *r, struct relay_dir *d)
{
	ssize_t n;

	d->no_splice = true;
	d->bulk = false;
	if (d->inpipe > 0) {
		if ((d->buf = malloc(d->inpipe)) == NULL ||
		    (n = read(d->pipe[0], d->buf, d->inpipe)) !=
			(ssize_t)d->inpipe) {
			relay_close(r, RELAY_END_OVERLOAD);
			return false;
		}
		d->off = 0;
		d->len = d->inpipe;
		d->inpipe = 0;
	}
	relay_pipe_put(r, d);
	return true;
}

/*
 * The server's last words are out (or their time is up): reset the client
 * once its send queue has handed them to the network, as a reset drops
 * what is still unsent. A server that said nothing closed early.
 */
static void
relay_last_words_end(struct relay *r, uint64_t now)
{
	struct timeval tv;
	int unsent = 0;

#ifdef SIOCOUTQNSD
	if (now < r->last_words_ms &&
	    ioctl(r->cfd, SIOCOUTQNSD, &unsent) == 0 && unsent > 0) {
		event_del(&r->sev_r);
		event_del(&r->cev_w);
		event_add(&r->timer, util_timeval(&tv, 1));
		return;
	}
#else
	(void)now;
	(void)tv;
	(void)unsent;
#endif
	if (relay_early_close(r))
		return;
	relay_close(r, RELAY_END_SERVER_RESET);
}

/*
 * Deliver the server's last words: its remainder first, then what waits
 * on its socket, up to RELAY_LAST_WORDS_MAX in all; wait for either side
 * while the deadline allows.
 */
static void
relay_last_words_step(struct relay *r)
{
	struct relay_dir *d = &r->s2c;
	char *buf = r->room->scratch;
	size_t cap;
	ssize_t n, m;

	for (;;) {
		if (d->buf != NULL) {
			m = send(r->cfd, d->buf + d->off, d->len - d->off,
			    MSG_NOSIGNAL);
			if (m == -1 && errno != EAGAIN && errno != EINTR)
				break;
			if (m > 0)
				d->off += (uint32_t)m;
			if (d->off < d->len) {
				/* The client cannot take more yet. */
				event_del(&r->sev_r);
				event_add(&r->cev_w, NULL);
				return;
			}
			free(d->buf);
			d->buf = NULL;
			d->off = d->len = 0;
		}
		if (d->eof || r->last_words_left == 0)
			break;
		cap = r->room->scratch_len < r->last_words_left
		    ? r->room->scratch_len
		    : r->last_words_left;
		n = recv(r->sfd, buf, cap, 0);
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			event_del(&r->cev_w);
			event_add(&r->sev_r, NULL);
			return;
		}
		if (n <= 0) {
			d->eof = true;
			break;
		}
		relay_got(r, d, (size_t)n);
		r->last_words_left -= (uint32_t)n;
		m = send(r->cfd, buf, (size_t)n, MSG_NOSIGNAL);
		if (m == -1 && errno != EAGAIN && errno != EINTR)
			break;
		if (m < 0)
			m = 0;
		if (m < n) {
			d->len = (uint32_t)(n - m);
			d->off = 0;
			if ((d->buf = malloc(d->len)) == NULL)
				break;
			memcpy(d->buf, buf + m, d->len);
		}
	}
	relay_last_words_end(r, util_now_ms());
}

/*
 * A write to the server failed: it closed or reset, but what it sent
 * before may still wait unread on its socket (an error reply, say).
 * Stop reading the client and deliver those bytes, bounded in size and
 * time, before the client is reset (SPEC 8).
 */
static void
relay_last_words(struct relay *r)
{
	struct relay_dir *c2s = &r->c2s, *s2c = &r->s2c;
	struct timeval tv;

	event_del(c2s->rev);
	event_del(c2s->wev);
	event_del(&r->timer);
	free(c2s->buf);
	c2s->buf = NULL;
	relay_pipe_put(r, c2s);
	/* The server's FIN was passed on: all it said was delivered. */
	if (s2c->done) {
		relay_close(r, RELAY_END_SERVER_RESET);
		return;
	}
	/* Its bytes parked in a pipe become a remainder, sent first. */
	if (s2c->inpipe > 0 && !relay_pipe_unsplice(r, s2c))
		return;
	relay_pipe_put(r, s2c);
	r->phase = RELAY_LAST_WORDS;
	r->last_words_ms = util_now_ms() + RELAY_LAST_WORDS_MS;
	r->last_words_left = RELAY_LAST_WORDS_MAX;
	event_add(&r->timer, util_timeval(&tv, RELAY_LAST_WORDS_MS));
	relay_last_words_step(r);
}

/*
 * Write what the pipe holds to dst: the bytes written, or -1 when the relay
 * ended. Should splice(2) refuse dst, the bytes become a remainder (d->buf)
 * and the direction copies from then on.
 */
static ssize_t
relay_pipe_write(struct relay *r, struct relay_dir *d)
{
	ssize_t m = -1;

#ifdef SPLICE_F_MOVE
	m = splice(d->pipe[0], NULL, d->dst, NULL, d->inpipe,
	    RELAY_SPLICE_FLAGS);
#endif
	if (m >= 0) {
		d->inpipe -= (uint32_t)m;
		return m;
	}
	if (errno == EAGAIN || errno == EINTR)
		return 0;
	if (errno == EINVAL || errno == ENOSYS)
		return relay_pipe_unsplice(r, d) ? 0 : -1;
	relay_write_error(r, d);
	return -1;
}

/* The remainder is gone: read the source again, or pass its FIN on. */
static void
relay_resume(struct relay *r, struct relay_dir *d)
{
	event_del(d->wev);
	if (d->eof)
		relay_dir_finish(r, d);
	else
		event_add(d->rev, NULL);
}

/* Splice one read from src into a pipe, and the pipe on to dst. */
static enum relay_step
relay_splice_step(struct relay *r, struct relay_dir *d)
{
#ifdef SPLICE_F_MOVE
	size_t cap = pipe_pool_size(r->room->pipes);
	ssize_t n;

	/* No pipe to be had (pool used up, no descriptor): copy this time. */
	if (d->pipe[0] == -1 && !pipe_pool_get(r->room->pipes, d->pipe))
		return relay_copy_step(r, d);
	n = splice(d->src, NULL, d->pipe[1], NULL, cap, RELAY_SPLICE_FLAGS);
	if (n > 0) {
		relay_got(r, d, (size_t)n);
		d->inpipe = (uint32_t)n;
		if (relay_pipe_write(r, d) == -1)
			return RELAY_STEP_STOP;
		if (d->inpipe > 0 || d->buf != NULL) {
			relay_pause(r, d);
			return RELAY_STEP_STOP;
		}
		if ((size_t)n == cap)
			return RELAY_STEP_MORE;
		/* Drained and the source had no more: give the pipe back. */
		relay_pipe_put(r, d);
		if (n < RELAY_SPLICE_SMALL && !r->room->splice_force)
			d->bulk = false;
		return RELAY_STEP_STOP;
	}
	relay_pipe_put(r, d);
	if (n == 0) {
		relay_src_eof(r, d);
		return RELAY_STEP_STOP;
	}
	if (errno == EAGAIN || errno == EINTR)
		return RELAY_STEP_STOP;
	if (errno == EINVAL) {
		/* These sockets do not splice (nothing was read): copy. */
		d->no_splice = true;
		d->bulk = false;
		return relay_copy_step(r, d);
	}
	relay_read_error(r, d);
#else
	(void)r;
	(void)d;
#endif
	return RELAY_STEP_STOP;
}

/* The source of a direction is readable: forward what it has. */
static void
relay_forward(struct relay *r, struct relay_dir *d)
{
	enum relay_step st;
	int i;

	for (i = 0; i < RELAY_READS_PER_WAKEUP; i++) {
		if (d->bulk && relay_splice_ok(r, d))
			st = relay_splice_step(r, d);
		else
			st = relay_copy_step(r, d);
		if (st == RELAY_STEP_STOP)
			return;
	}
	/* Its turn is over: an empty pipe need not wait for the next one. */
	if (d->pipe[0] != -1 && d->inpipe == 0)
		relay_pipe_put(r, d);
}

/* The destination of a direction can take more: write the remainder. */
static void
relay_flush(struct relay *r, struct relay_dir *d)
{
	ssize_t m;

	if (d->inpipe > 0) {
		if ((m = relay_pipe_write(r, d)) == -1 || d->buf != NULL)
			return;
		/* Bytes delivered are activity, even while the source waits. */
		if (m > 0 && upstream_conf(r->up)->idle_timeout_ms != 0)
			relay_touch(r);
		if (d->inpipe > 0)
			return;
		relay_pipe_put(r, d);
		relay_resume(r, d);
		return;
	}
	m = send(d->dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
	if (m == -1) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		relay_write_error(r, d);
		return;
	}
	/* Bytes delivered are activity, even while the source waits. */
	if (m > 0 && upstream_conf(r->up)->idle_timeout_ms != 0)
		relay_touch(r);
	d->off += (uint32_t)m;
	if (d->off < d->len)
		return;
	free(d->buf);
	d->buf = NULL;
	d->off = d->len = 0;
	relay_resume(r, d);
}

/*
 * The client is readable while its server connect is in progress: if it
 * went away (FIN or reset), the attempt ends with no outcome and a
 * half_open trial slot is given back (SPEC 4). Bytes it sent wait for the
 * server; the client is not watched again until then. The first time it
 * is only noted: the connect on loopback is most often done in the same
 * wakeup, and relay_connected() then forwards the bytes at once.
 */
static void
relay_client_wait(struct relay *r)
{
	char c;
	ssize_t n;

	if (!r->client_ready) {
		r->client_ready = true;
		return;
	}
	n = recv(r->cfd, &c, 1, MSG_PEEK);
	if (n > 0) {
		event_del(&r->cev_r);
		return;
	}
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	relay_close(r, RELAY_END_CLIENT_RESET);
}

/*
 * A direction's source is readable: forward its bytes; while connecting
 * (only the client is watched then), see whether the client left; after a
 * failed write to the server, go on with its last words.
 */
static void
relay_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay_dir *d = arg;
	struct relay *r = d->relay;

	(void)fd;
	if (r->phase == RELAY_RELAYING) {
		d->fin_near = (what & EV_CLOSED) != 0;
		relay_forward(r, d);
	} else if (r->phase == RELAY_CONNECTING)
		relay_client_wait(r);
	else
		relay_last_words_step(r);
}

/*
 * A direction's destination is writable: its remainder can go on (after a
 * failed write to the server, the server's last words to the client).
 */
static void
relay_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay_dir *d = arg;
	struct relay *r = d->relay;

	(void)fd;
	(void)what;
	if (r->phase == RELAY_LAST_WORDS)
		relay_last_words_step(r);
	else
		relay_flush(r, d);
}

/*
 * Is the direction's source out of epoll: paused behind a remainder (in a
 * buffer or a pipe), or finished (a socket that sent its FIN stays
 * readable, so watching it would spin)? Then only the timer can notice
 * that it resets.
 */
static bool
relay_dir_unwatched(const struct relay_dir *d)
{
	return d->buf != NULL || d->inpipe > 0 || d->eof;
}

/* Arm the relay's timer for the nearest of its deadlines, if any. */
static void
relay_timer_arm(struct relay *r, uint64_t now)
{
	const struct upstream_conf *uc = upstream_conf(r->up);
	uint64_t due = 0, t;
	struct timeval tv;

	if (r->outcome_pending)
		due = r->connected_ms + uc->connect_timeout_ms;
	if (uc->idle_timeout_ms != 0) {
		t = r->last_active_ms + uc->idle_timeout_ms;
		if (due == 0 || t < due)
			due = t;
	}
	if (relay_dir_unwatched(&r->c2s) || relay_dir_unwatched(&r->s2c)) {
		t = now + RELAY_PAUSED_CHECK_MS;
		if (due == 0 || t < due)
			due = t;
	}
	if (due == 0)
		return;
	event_add(&r->timer, util_timeval(&tv, due > now ? due - now : 0));
}

/*
 * A paused or finished source is not read, so nothing tells us when it
 * resets: meanwhile the timer asks the source's socket now and then (after
 * a FIN, a reset shows only in SO_ERROR, as EPIPE). True when the relay
 * was closed.
 */
static bool
relay_paused_source_gone(struct relay *r)
{
	struct relay_dir *d, *dirs[2] = { &r->c2s, &r->s2c };
	socklen_t len;
	int i, error;

	for (i = 0; i < 2; i++) {
		d = dirs[i];
		if (!relay_dir_unwatched(d))
			continue;
		error = 0;
		len = sizeof(error);
		if (getsockopt(d->src, SOL_SOCKET, SO_ERROR, &error, &len) ==
			-1 ||
		    error == 0)
			continue;
		if (d->src == r->sfd && relay_early_close(r))
			return true;
		relay_close(r,
		    d->src == r->sfd ? RELAY_END_SERVER_RESET
				     : RELAY_END_CLIENT_RESET);
		return true;
	}
	return false;
}

/*
 * Bytes already written sit in the kernel's send queues and reach a slow
 * reader long after our last write. When idle_timeout is due with bytes
 * still queued, look again a little later: if the queues shrank, a peer is
 * reading and the relay is not idle.
 */
static bool
relay_peers_draining(struct relay *r, uint64_t now, uint64_t idle_ms)
{
#ifdef SIOCOUTQ
	int cq = 0, sq = 0;
	uint32_t queued, before = r->queued;

	if (ioctl(r->cfd, SIOCOUTQ, &cq) == -1 ||
	    ioctl(r->sfd, SIOCOUTQ, &sq) == -1)
		return false;
	/* Bytes parked in a pipe wait for a reader just the same. */
	queued = (uint32_t)cq + (uint32_t)sq + (uint32_t)r->c2s.inpipe +
	    (uint32_t)r->s2c.inpipe;
	r->queued = queued;
	if (queued == 0)
		return false;
	if (before == RELAY_QUEUED_UNKNOWN) {
		/*
		 * Look again in half the timeout, at most 5s: a reader with
		 * a large receive buffer opens its window only now and then.
		 */
		r->last_active_ms = now - idle_ms +
		    (idle_ms / 2 < 5000 ? idle_ms / 2 + 1 : 5000);
		return true;
	}
	if (queued < before) {
		r->last_active_ms = now;
		return true;
	}
#else
	(void)r;
	(void)now;
	(void)idle_ms;
#endif
	return false;
}

/*
 * The relay's timer: the early-close window has passed (the attempt counts
 * as a success), or the relay may have been idle too long.
 */
static void
relay_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	const struct upstream_conf *uc;
	uint64_t now = util_now_ms();

	(void)fd;
	(void)what;
	if (r->phase == RELAY_LAST_WORDS) {
		relay_last_words_end(r, now);
		return;
	}
	if (relay_paused_source_gone(r))
		return;
	uc = upstream_conf(r->up);
	if (r->outcome_pending &&
	    now >= r->connected_ms + uc->connect_timeout_ms)
		relay_record(r, true, BREAKER_ERR_OTHER);
	if (uc->idle_timeout_ms != 0 &&
	    now >= r->last_active_ms + uc->idle_timeout_ms &&
	    !relay_peers_draining(r, now, uc->idle_timeout_ms)) {
		char client[TURNAWAY_PEER_STR_MAX];

		log_info("event=idle_timeout upstream=%s client=%s "
			 "idle_ms=%" PRIu64,
		    r->up->name, turnaway_peer_str(&r->peer, client),
		    uc->idle_timeout_ms);
		relay_close(r, RELAY_END_IDLE);
		return;
	}
	relay_timer_arm(r, now);
}

/*
 * The server hung up (reset) as the connection was made, before a byte: an
 * early close if failure_on_early_close says so, else a success.
 */
static void
relay_server_hung_up(struct relay *r, uint64_t now)
{
	if (upstream_conf(r->up)->failure_on_early_close) {
		relay_log_fail(r, BREAKER_ERR_EARLY_CLOSE, now - r->start_ms);
		relay_record(r, false, BREAKER_ERR_EARLY_CLOSE);
	} else
		relay_record(r, true, BREAKER_ERR_OTHER);
	relay_close(r, RELAY_END_SERVER_RESET);
}

/*
 * send_proxy: the PROXY header naming the client and the address it
 * reached, first on the new server connection (SPEC 8). When the client
 * was readable, what it has sent goes in the same send (one segment, one
 * wakeup of the server); nothing is waited for, so a server that speaks
 * first has the header at once. Returns the client's bytes taken (what a
 * partial send left becomes the remainder), or -1 if the server is gone
 * already; *rerr is the errno of a failed client read, for the caller.
 */
static ssize_t
relay_proxy_send(struct relay *r, enum proxyproto_version v, int *rerr)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	const struct sockaddr *dst = NULL;
	struct relay_dir *d = &r->c2s;
	char *buf = r->room->scratch;
	size_t hlen;
	ssize_t n = 0, m;

	/* A listener bound to one address said it; else the socket says. */
	if (r->local.len != 0)
		dst = &r->local.u.sa;
	else if (r->peer.u.sa.sa_family != AF_UNIX &&
	    getsockname(r->cfd, (struct sockaddr *)&local, &len) == 0)
		dst = (const struct sockaddr *)&local;
	hlen = proxyproto_header_build(v, &r->peer.u.sa, dst, buf);
	*rerr = 0;
	if (r->client_ready)
		n = recv(r->cfd, buf + hlen, r->room->scratch_len - hlen, 0);
	if (n == -1 && errno != EAGAIN && errno != EINTR)
		*rerr = errno;
	/* A FIN stays readable: the read event passes it on. */
	if (n < 0)
		n = 0;
	m = send(r->sfd, buf, hlen + (size_t)n, MSG_NOSIGNAL);
	if (m < (ssize_t)hlen)
		return -1;
	if ((size_t)m < hlen + (size_t)n) {
		d->len = (uint32_t)(hlen + (size_t)n - (size_t)m);
		d->off = 0;
		/* Short of memory: the bytes are lost, so is the relay. */
		if ((d->buf = malloc(d->len)) == NULL)
			*rerr = ENOMEM;
		else
			memcpy(d->buf, buf + m, d->len);
	}
	return n;
}

/* The server accepted: judge the attempt and start relaying. */
static void
relay_connected(struct relay *r, uint64_t now)
{
	const struct upstream_conf *uc = upstream_conf(r->up);
	struct event_base *base = r->room->base;
	uint64_t took = now - r->start_ms;
	ssize_t early = -1;
	int rerr = 0;

	r->connect_took_us = (int64_t)(util_now_us() - r->connect_us);
	upstream_count_connect(r->up, r->room->worker,
	    (uint64_t)r->connect_took_us);
	r->phase = RELAY_RELAYING;
	r->c2s = (struct relay_dir){ .relay = r,
		.src = r->cfd,
		.dst = r->sfd,
		.rev = &r->cev_r,
		.wev = &r->sev_w,
		.pipe = { -1, -1 },
		.bulk = r->room->splice_force,
		.counter = UC_bytes_sent_total };
	r->s2c = (struct relay_dir){ .relay = r,
		.src = r->sfd,
		.dst = r->cfd,
		.rev = &r->sev_r,
		.wev = &r->cev_w,
		.pipe = { -1, -1 },
		.bulk = r->room->splice_force,
		.counter = UC_bytes_received_total };
	event_assign(&r->sev_w, base, r->sfd, EV_WRITE | EV_PERSIST,
	    relay_write_cb, &r->c2s);
	if (uc->send_proxy != PROXYPROTO_OFF &&
	    (early = relay_proxy_send(r, uc->send_proxy, &rerr)) == -1) {
		relay_server_hung_up(r, now);
		return;
	}
	r->connected_ms = now;
	r->last_active_ms = now;
	r->queued = RELAY_QUEUED_UNKNOWN;
	if (uc->slow_connect_ms != 0 && took > uc->slow_connect_ms) {
		relay_log_fail(r, BREAKER_ERR_SLOW, took);
		relay_record(r, false, BREAKER_ERR_SLOW);
	} else if (!uc->failure_on_early_close)
		relay_record(r, true, BREAKER_ERR_OTHER);
	event_add(&r->cev_r, NULL);
	event_add(&r->sev_r, NULL);
	relay_timer_arm(r, now);
	/* The client's first bytes went out behind the PROXY header. */
	if (early >= 0) {
		if (early > 0)
			relay_got(r, &r->c2s, (size_t)early);
		if (rerr == ENOMEM)
			relay_close(r, RELAY_END_OVERLOAD);
		else if (rerr != 0)
			relay_read_error(r, &r->c2s);
		else if (r->c2s.buf != NULL)
			relay_pause(r, &r->c2s);
		return;
	}
	/*
	 * The client was readable while connecting, or the connect was over
	 * at once: its bytes go on to the server now (this may end r). The
	 * first read copies: it may find nothing, and then borrows no pipe.
	 */
	if (r->client_ready && relay_copy_step(r, &r->c2s) == RELAY_STEP_MORE)
		relay_forward(r, &r->c2s);
}

/*
 * The attempt failed before a byte was relayed (and was recorded): a pool's
 * client is tried on another admitting member while it has tries left,
 * else reset. Returns as relay_connect() does.
 */
static int
relay_retry(struct relay *r)
{
	struct upstream *old = r->up;

	if (!admit_retry(&r->adm, r->room->worker, &r->peer.u.sa, r->peer.len,
		util_now_ms())) {
		relay_close(r, RELAY_END_CONNECT_FAIL);
		return 0;
	}
	/* No socket yet when the attempt failed before one (no address). */
	if (r->sfd != -1) {
		event_del(&r->sev_r);
		event_del(&r->sev_w);
		close(r->sfd);
		r->sfd = -1;
	}
	r->up = r->adm.up;
	atomic_fetch_add_explicit(&r->up->refs, 1, memory_order_relaxed);
	/* old may be a retired upstream: not touched after this. */
	atomic_fetch_sub_explicit(&old->refs, 1, memory_order_release);
	r->outcome_pending = true;
	r->start_ms = util_now_ms();
	return relay_connect(r);
}

/*
 * The connect is over: error is 0 when it succeeded, else its errno, and
 * ETIMEDOUT also when connect_timeout passed. Returns as relay_connect()
 * does.
 */
static int
relay_connect_done(struct relay *r, int error, uint64_t now)
{
	enum breaker_error kind;

	if (error == 0) {
		relay_connected(r, now);
		return 0;
	}
	if (error == ECONNRESET || error == EPIPE) {
		/*
		 * Established, then reset before we saw it: the server hung
		 * up before a byte.
		 */
		relay_server_hung_up(r, now);
		return 0;
	}
	kind = breaker_error_from_errno(error);
	relay_log_fail(r, kind, now - r->start_ms);
	relay_record(r, false, kind);
	return relay_retry(r);
}

/* The connect finished one way or the other, or connect_timeout passed. */
static void
relay_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	socklen_t len = sizeof(int);
	int error = 0;

	if (what & EV_TIMEOUT)
		error = ETIMEDOUT;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == -1)
		error = errno;
	relay_connect_done(arg, error, util_now_ms());
}

/*
 * No socket for the server: not the server's fault. The ticket is given
 * back, the client is reset and counted as an overload. Returns the errno
 * when the process is out of descriptors, so that the accept path stops
 * accepting for a moment (SPEC 8) rather than accept clients it can only
 * reset; else 0.
 */
static int
relay_shortage(struct relay *r, int error)
{
	struct pipe_pool *pipes = r->room->pipes;
	char client[TURNAWAY_PEER_STR_MAX];

	admit_cancel(&r->adm);
	r->outcome_pending = false;
	upstream_count(r->up, r->room->worker, UC_rejected_overload_total, 1);
	if (upstream_log_allowed(r->up, UPSTREAM_LOG_REJECT, util_now_ms()))
		log_notice("event=reject upstream=%s client=%s reason=overload "
			   "error=%s",
		    r->up->name, turnaway_peer_str(&r->peer, client),
		    util_errno_name(error));
	relay_close(r, RELAY_END_OVERLOAD);
	if (error != EMFILE && error != ENFILE)
		return 0;
	/* Spare pipes are descriptors the next clients can use. */
	pipe_pool_trim(pipes);
	return error;
}

/* Open the connection to the server; as relay_shortage() says, or 0. */
static int
relay_connect(struct relay *r)
{
	struct event_base *base = r->room->base;
	struct addr addr, *sa = &addr;
	struct timeval tv;
	enum breaker_error kind;
	int on = 1, error;

	if (upstream_server_addr(r->up, sa) != 0) {
		/* A host name with no address yet: the attempt fails (SPEC 3). */
		relay_log_fail(r, BREAKER_ERR_DNS, 0);
		relay_record(r, false, BREAKER_ERR_DNS);
		return relay_retry(r);
	}
	r->sfd =
	    socket(sa->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (r->sfd == -1) {
		error = errno;
		if (breaker_errno_is_shortage(error))
			return relay_shortage(r, error);
		/* Say EAFNOSUPPORT: persistent, and worth opening the circuit. */
		relay_log_fail(r, BREAKER_ERR_OTHER, 0);
		relay_record(r, false, BREAKER_ERR_OTHER);
		return relay_retry(r);
	}
	if (sa->family != AF_UNIX)
		setsockopt(r->sfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	event_assign(&r->sev_r, base, r->sfd, EV_READ | EV_CLOSED | EV_PERSIST,
	    relay_read_cb, &r->s2c);
	event_assign(&r->sev_w, base, r->sfd, EV_WRITE, relay_connect_cb, r);
	r->connect_us = util_now_us();
	if (connect(r->sfd, (const struct sockaddr *)&sa->ss, sa->len) == 0) {
		relay_connected(r, util_now_ms());
		return 0;
	}
	if (errno == EINPROGRESS) {
		/*
		 * On loopback the handshake is most often over by the time
		 * connect() returns: asked again, it says so (0 on Linux,
		 * EISCONN on the BSDs) or how it failed, and the relay starts
		 * now, reading the client at once, without a wakeup for
		 * writability. EALREADY: still under way. A server beyond
		 * this host is a round trip away: not asked again.
		 */
		error = EALREADY;
		if (addr_is_local(sa)) {
			if (connect(r->sfd, (const struct sockaddr *)&sa->ss,
				sa->len) == 0 ||
			    errno == EISCONN) {
				r->client_ready = true;
				return relay_connect_done(r, 0, util_now_ms());
			}
			error = errno;
		}
		if (error != EALREADY && error != EINPROGRESS)
			return relay_connect_done(r, error, util_now_ms());
		event_add(&r->sev_w,
		    util_timeval(&tv,
			upstream_conf(r->up)->connect_timeout_ms));
		/* Meanwhile, notice a client that leaves. */
		event_add(&r->cev_r, NULL);
		return 0;
	}
	error = errno;
	/*
	 * EAGAIN: on TCP, no local port was free; on a unix socket, the
	 * server's backlog is full, which is the server's fault.
	 */
	if (breaker_errno_is_shortage(error) ||
	    (error == EAGAIN && sa->family != AF_UNIX))
		return relay_shortage(r, error);
	kind = breaker_error_from_errno(error);
	relay_log_fail(r, kind, 0);
	relay_record(r, false, kind);
	return relay_retry(r);
}

/*
 * Allocate a relay for a client, owned by the worker, holding up and pool
 * (or NULL) until it ends.
 */
static struct relay *
relay_new(struct relay_room *room, struct upstream *up, struct pool *pool,
    int cfd, const struct turnaway_peer *peer)
{
	struct relay *r;

	/* Short of memory: the caller resets this one client. */
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->room = room;
	r->up = up;
	r->cfd = cfd;
	r->sfd = -1;
	r->c2s.relay = r->s2c.relay = r;
	r->c2s.pipe[0] = r->c2s.pipe[1] = -1;
	r->s2c.pipe[0] = r->s2c.pipe[1] = -1;
	r->peer = *peer;
	r->log_conn = turnaway_log_wanted(up, pool);
	r->accept_ms = util_now_ms();
	r->connect_took_us = -1;
	event_assign(&r->cev_r, room->base, cfd,
	    EV_READ | EV_CLOSED | EV_PERSIST, relay_read_cb, &r->c2s);
	event_assign(&r->cev_w, room->base, cfd, EV_WRITE | EV_PERSIST,
	    relay_write_cb, &r->s2c);
	evtimer_assign(&r->timer, room->base, relay_timer_cb, r);
	LIST_INSERT_HEAD(&room->all, r, entry);
	room->n++;
	r->adm.pool = pool;
	if (up != NULL)
		atomic_fetch_add_explicit(&up->refs, 1, memory_order_relaxed);
	if (pool != NULL)
		atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
	return r;
}

/*
 * Take an accepted client of up's listener (pool NULL) or pool's (up
 * NULL): relay it as admission decides, or turn it away. Returns EMFILE or
 * ENFILE when no descriptor was left for its server (the caller pauses
 * accepting), else 0.
 */
int
relay_accept(struct relay_room *room, struct upstream *up, struct pool *pool,
    int fd, const struct sockaddr *sa, socklen_t salen,
    const struct addr *local)
{
	struct admit a;
	struct relay *r;
	struct turnaway_peer peer;
	uint64_t now = util_now_ms();
#ifndef __linux__
	int on = 1;
#endif

	turnaway_peer_set(&peer, sa, salen);
	admit_client(&a, up, pool, room->worker, &peer.u.sa, peer.len, now);
	if (a.kind == ADMIT_OVERLOAD) {
		if (turnaway_log_wanted(a.up, pool))
			turnaway_log_turned(&a, &peer, "overload", NULL);
		turnaway_close_rst(fd);
		return 0;
	}
	if (a.kind == ADMIT_REJECT) {
		turnaway_reject(room->turned, &a, fd, &peer);
		return 0;
	}
#ifndef __linux__
	/* Linux hands it down from the listening socket. */
	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
#endif
	if ((r = relay_new(room, a.up, pool, fd, &peer)) == NULL) {
		admit_cancel(&a);
		admit_release(&a);
		upstream_count(a.up, room->worker, UC_rejected_overload_total,
		    1);
		if (turnaway_log_wanted(a.up, pool))
			turnaway_log_turned(&a, &peer, "overload", NULL);
		turnaway_close_rst(fd);
		return 0;
	}
	r->adm = a;
	r->outcome_pending = true;
	r->start_ms = now;
	if (local != NULL)
		turnaway_peer_set(&r->local,
		    (const struct sockaddr *)&local->ss, local->len);
	return relay_connect(r);
}
