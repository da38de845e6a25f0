/*
 * One listening socket for one address of one upstream. Bound by the main
 * thread at start; every worker watches it with its own accept event. On a
 * shortage of file descriptors a worker pauses its accepts briefly.
 */
#ifndef CP_LISTENER_H
#define CP_LISTENER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "addr.h"

struct event;
struct event_base;
struct pool;
struct upstream;

/*
 * Told of each accepted client, in the thread of the slot's event base:
 * returns 0, or EMFILE/ENFILE when no descriptor was left for its server
 * (the slot's accepts then pause for a moment). local is the address the
 * client reached when the listener is bound to one, else NULL.
 */
typedef int (*listener_client_cb)(struct upstream *, struct pool *, int fd,
    const struct sockaddr *, socklen_t, const struct addr *local, void *);

/* One worker's share of a listener: its accept event and its callback. */
struct listener_slot {
	struct listener *listener;
	listener_client_cb accept;
	void *arg;
	struct event *accept_ev;
	struct event *resume_ev;
};

struct listener {
	struct addr addr;
	/*
	 * Whose clients it takes: a pool's when pool is set, else up's. A
	 * reload may hand it to another (see listener_set_owner()).
	 */
	_Atomic(struct upstream *) up;
	_Atomic(struct pool *) pool;
	int *fds; /* one per worker (TCP), or one */
	unsigned nfds;
	const char *received; /* the socket came from systemd: its name */
	bool one_addr;	      /* bound to one address: a client's local one */
	struct listener_slot *slots; /* one per worker */
	unsigned nslots;
};

/* Keep the sockets the service manager passed; how many were kept. */
size_t listener_receive(void);
/* Log and close the received sockets no listener took (after binding). */
void listener_receive_done(void);
/* Close the received sockets still kept, at exit. */
void listener_receive_free(void);
/* One plain listening socket, stale unix file removed; -1 with *cause. */
int listener_bind(const struct addr *, char **cause);
/* Bind and listen; -1 with *cause on failure. */
struct listener *listener_open(const struct addr *, struct upstream *,
    unsigned nworkers, char **cause);
/* Hand the listener to an upstream (pool NULL) or a pool (main thread). */
void listener_set_owner(struct listener *, struct upstream *, struct pool *);
/* Create and arm slot's accept event on base (before its thread runs). */
void listener_attach(struct listener *, unsigned slot, struct event_base *,
    listener_client_cb, void *);
/* Stop a slot's accepts and free its events (in the slot's thread). */
void listener_detach(struct listener *, unsigned slot);
/* Listen again on a listener shut down by listener_shutdown(). */
int listener_relisten(struct listener *, char **cause);
/* Log "event=EVENT upstream=NAME addr=ADDR" for a listener. */
void listener_log(struct listener *, const char *event);
/* Refuse new clients at once (main thread). */
void listener_shutdown(struct listener *);
void listener_free(struct listener *);

#endif
