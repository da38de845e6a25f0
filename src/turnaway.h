/*
 * A turned-away client: the reject reply (reject.c builds the bytes), the
 * postgres startup reader, and the linger queue that waits for the client
 * to close. Also the client's address and its event=conn line, which a
 * relay (one floor up) writes the same way.
 */
#ifndef CP_TURNAWAY_H
#define CP_TURNAWAY_H

#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "pool.h"
#include "upstream.h"

struct admit;
struct event;
struct event_base;
struct turnaway;

/*
 * A client's address, kept raw: it is formatted only for a log line, and
 * most clients never get one.
 */
struct turnaway_peer {
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} u;
	socklen_t len;
};

#define TURNAWAY_PEER_STR_MAX 64

/* What an event=conn line says of one client. */
struct turnaway_conn {
	const char *end;
	const char *state;	 /* rejected: the circuit's state, else NULL */
	unsigned tries;		 /* 0: no connect, server=- */
	int64_t connect_took_us; /* -1: never connected */
	uint64_t duration_ms;
	uint64_t bytes_in, bytes_out;
};

/* A turned-away client has ended (news up, from the worker's thread). */
typedef void (*turnaway_gone_cb)(void *);

LIST_HEAD(turnaway_list, turnaway);
TAILQ_HEAD(turnaway_queue, turnaway);

/* A worker's turned-away clients. */
struct turnaway_room {
	struct event_base *base;
	char *scratch; /* the worker's: one read at a time */
	size_t scratch_len;
	turnaway_gone_cb gone;
	void *gone_arg;
	struct turnaway_list all;
	unsigned n;		     /* read from or waited for */
	struct turnaway_queue queue; /* replied, not yet looked at again */
	struct event *linger_ev;     /* when to look at them */
};

/* Keep a client's address (a unix peer has no name worth keeping). */
void turnaway_peer_set(struct turnaway_peer *, const struct sockaddr *,
    socklen_t);
/* Format a client's address for a log line. */
const char *turnaway_peer_str(const struct turnaway_peer *, char *);
/* Does the entry a client came through (its pool, else its upstream) log? */
bool turnaway_log_wanted(struct upstream *, struct pool *);
/* Write a client's event=conn line. */
void turnaway_log_conn(struct upstream *, struct pool *,
    const struct turnaway_peer *, const struct turnaway_conn *);
/* The event=conn line of a client turned away without a wait. */
void turnaway_log_turned(const struct admit *, const struct turnaway_peer *,
    const char *end, const char *state);
/* The debug event=close line of a client (relayed or turned away). */
void turnaway_log_close(struct upstream *, struct pool *,
    const struct turnaway_peer *, const char *reason);

/*
 * A client (relayed or turned away) has ended: its debug event=close line,
 * then its hold on its upstream and pool is let go. Last: once refs is 0
 * the main thread may free a retired upstream or pool, so the caller may
 * not touch them after this. Inline: every relay's end passes here.
 */
static inline void
turnaway_client_end(struct upstream *up, struct pool *pool,
    const struct turnaway_peer *peer, const char *reason)
{
	if (log_enabled(LOG_LEVEL_DEBUG))
		turnaway_log_close(up, pool, peer, reason);
	if (up != NULL)
		atomic_fetch_sub_explicit(&up->refs, 1, memory_order_release);
	if (pool != NULL)
		atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_release);
}
/* Close a socket so the peer sees a reset (RST) rather than a FIN. */
void turnaway_close_rst(int fd);

/* Set up a worker's room. */
void turnaway_room_init(struct turnaway_room *, struct event_base *,
    char *scratch, size_t scratch_len, turnaway_gone_cb, void *);
/* Free what a room holds once its clients are gone. */
void turnaway_room_free(struct turnaway_room *);
/* Turn a client away as admission decided (SPEC 4). */
void turnaway_reject(struct turnaway_room *, const struct admit *, int fd,
    const struct turnaway_peer *);
/* Reset every turned-away client (shutdown timeout); returns how many. */
unsigned turnaway_close_all(struct turnaway_room *);

#endif
