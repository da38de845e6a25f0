/*
 * One client: admission through the breaker, the connect to the server, the
 * relay of bytes both ways, and its end. relay_close() is the only way out.
 * A worker's relays live in its relay room, which borrows the worker's event
 * base, scratch buffer and pipe pool and tells the worker when one ends.
 */
#ifndef CP_RELAY_H
#define CP_RELAY_H

#include <sys/queue.h>
#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>

struct addr;
struct event_base;
struct pipe_pool;
struct pool;
struct relay;
struct turnaway_room;
struct upstream;

/* A relay has ended (news up, from the worker's thread). */
typedef void (*relay_gone_cb)(void *);

LIST_HEAD(relay_list, relay);

/* A worker's relays and what they borrow from it. */
struct relay_room {
	struct event_base *base;
	unsigned worker; /* the worker's id: its counters' slot */
	char *scratch;	 /* the worker's: one read at a time */
	size_t scratch_len;
	struct pipe_pool *pipes;      /* the worker's: lent while splicing */
	bool splice_force;	      /* tests: splice from the first byte */
	struct turnaway_room *turned; /* where admission's rejects go */
	relay_gone_cb gone;
	void *gone_arg;
	struct relay_list all;
	unsigned n;
};

/* What a relay room borrows from its worker. */
struct relay_room_lend {
	struct event_base *base;
	unsigned worker;
	char *scratch;
	size_t scratch_len;
	struct pipe_pool *pipes;
	struct turnaway_room *turned;
};

/* Set up a worker's relay room; gone is told of each relay that ends. */
void relay_room_init(struct relay_room *, const struct relay_room_lend *,
    relay_gone_cb, void *);
/*
 * Take a client accepted on an upstream's listener (pool NULL) or a pool's
 * (upstream NULL); EMFILE/ENFILE if no descriptor was left for its server.
 * local: the address it reached, when its listener is bound to one (the
 * PROXY header's destination, with no question to the socket), or NULL.
 */
int relay_accept(struct relay_room *, struct upstream *, struct pool *, int fd,
    const struct sockaddr *, socklen_t, const struct addr *local);
/* Reset every relay of a room (shutdown timeout); returns how many. */
unsigned relay_close_all(struct relay_room *);

#endif
