/*
 * Load for the end-to-end tests: a backend farm that holds thousands of
 * connections in a child process of its own (one epoll loop, its own
 * descriptor table, killed with SIGKILL for a server that dies), and a
 * crowd of clients opened and driven together from one thread. Counters
 * of the farm live in shared memory, so the test reads them as they move.
 */
#ifndef CP_FARM_H
#define CP_FARM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What every connection to the farm gets. */
enum h_farm_kind {
	H_FARM_ECHO,  /* echoes every byte back; closes after the client */
	H_FARM_STALL, /* never reads nor sends; closes after the client */
	H_FARM_FLOOD, /* sends without end, discards what it reads */
};

struct h_farm;
struct h_farm *h_farm_start(enum h_farm_kind);
const char *h_farm_addr(const struct h_farm *);
unsigned h_farm_accepted(const struct h_farm *);
unsigned h_farm_active(const struct h_farm *);
uint64_t h_farm_bytes_sent(const struct h_farm *);
bool h_farm_wait_active(struct h_farm *, unsigned, int);
void h_farm_set_up(struct h_farm *, bool);
void h_farm_kill(struct h_farm *);

/* Raise the soft RLIMIT_NOFILE to the hard one; returns the new limit. */
unsigned h_nofile_raise(void);

/* A crowd of clients: connect n at once, all within ms. */
struct h_crowd {
	int *fd; /* -1 for a client that is gone */
	size_t n;
};
struct h_crowd *h_crowd_connect(const char *, size_t, int);
size_t h_crowd_echo(struct h_crowd *, const char *, int);
size_t h_crowd_alive(const struct h_crowd *);
size_t h_crowd_wait_closed(struct h_crowd *, size_t, int);
void h_crowd_close(struct h_crowd *, size_t, size_t);

#endif
