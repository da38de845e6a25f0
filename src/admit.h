/*
 * Admission: which upstream gets this client, or how it is turned away. It
 * knows upstreams, their backups, pools and breakers, max_connections and
 * dry_run, and hands relay.c a verdict; relay.c connects and reports the
 * attempt's outcome back through it, and asks it for another member when a
 * pool's client may be retried (SPEC.md 4). A backup chain is the same walk
 * as a pool with balance = first.
 */
#ifndef CP_ADMIT_H
#define CP_ADMIT_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"

struct pool;
struct upstream;

enum admit_kind {
	ADMIT_RELAY,	/* connect to up's server under ticket */
	ADMIT_REJECT,	/* turned away by a breaker: the reject reply */
	ADMIT_OVERLOAD, /* over max_connections: reset, not the server's fault */
};

/* A verdict, and for a relay the attempt it is on. */
struct admit {
	enum admit_kind kind;
	struct upstream *up; /* RELAY: whose server; else who counted it */
	struct pool *pool;   /* the pool the client came through, or NULL */
	struct breaker_ticket ticket; /* RELAY: the attempt's */
	bool holds_slot;	      /* RELAY: counted in up->active */
	bool holds_pool;	      /* RELAY: counted in pool->active */
	unsigned tries;		      /* attempts made for this client */
	struct upstream *tried[POOL_RETRIES_MAX + 1];
	/* REJECT: what the reply says, and on whose behalf. */
	const char *name;
	const char *state; /* "open", "half_open", "forced_open" */
	enum reject_mode reject;
	int64_t retry_after_ms; /* -1: none */
	uint64_t recovery_timeout_ms;
	uint64_t connect_timeout_ms; /* bounds a postgres startup reader */
};

/*
 * Decide for a client accepted on up's listener (pool NULL) or on pool's
 * (up NULL), from worker w; logs and counts the reject, failover or
 * dry-run line. sa is the client, for those lines.
 */
void admit_client(struct admit *, struct upstream *up, struct pool *pool,
    unsigned w, const struct sockaddr *sa, socklen_t salen, uint64_t now_ms);
/*
 * The attempt failed before a byte was relayed (already recorded): if the
 * client came through a pool with a try left, move it to another admitting
 * member (true: a->up and a->ticket are the new attempt's; the slot on the
 * old member is given back).
 */
bool admit_retry(struct admit *, unsigned w, const struct sockaddr *sa,
    socklen_t salen, uint64_t now_ms);
/* Record the attempt's outcome on its member's breaker. */
void admit_record(struct admit *, bool success, enum breaker_error,
    uint64_t now_ms);
/* End the attempt with no outcome (the client left, a local shortage). */
void admit_cancel(struct admit *);
/* Give back the max_connections slot (and the pool's count) the relay held. */
void admit_release(struct admit *);

#endif
