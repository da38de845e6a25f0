/*
 * The admin HTTP endpoint of SPEC.md section 7, on libevent's evhttp in the
 * main thread: the status page, /health, /stats, /metrics and the manual
 * overrides. Bounded: header and body sizes, a deadline per request, a cap
 * on connections at once.
 */
#ifndef CP_ADMIN_H
#define CP_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct admin;
struct event_base;
struct pool;
struct upstream;

/* The running upstreams, as the owner has them now (main thread). */
typedef struct upstream *const *(*admin_upstreams_cb)(void *, size_t *);
/* The running pools, likewise. */
typedef struct pool *const *(*admin_pools_cb)(void *, size_t *);

/*
 * Bind and serve on addr; token NULL = none. -1 with *cause on failure.
 * start_ms (monotonic) is when the daemon started, for uptime_s.
 */
struct admin *admin_new(struct event_base *, const struct addr *,
    const char *token, uint64_t start_ms, admin_upstreams_cb, void *,
    char **cause);
/*
 * A reload that moves the endpoint: a new one bound on the address with
 * the new token (the old one keeps serving until freed); NULL with *cause
 * if the bind fails, the old one as it was.
 */
struct admin *admin_rebind(struct admin *, const struct addr *,
    const char *token, char **cause);
/* Show pools too (kept by admin_rebind). */
void admin_set_pools(struct admin *, admin_pools_cb, void *);
/* Take a reloaded admin_token (NULL = none). */
void admin_set_token(struct admin *, const char *);
/* Close every admin connection and the socket. */
void admin_free(struct admin *);

#endif
