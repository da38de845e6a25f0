/*
 * Recovery probes (SPEC.md section 4, recovery_probe = connect): while a
 * circuit is half_open, the daemon itself connects to the server, one
 * probe after another, on the main thread's event loop. Each probe is a
 * plain non-blocking connect under connect_timeout (and slow_connect),
 * closed at once, logged as event=probe and recorded in the breaker like an
 * attempt; the breaker's transitions decide when probing ends.
 */
#ifndef CP_PROBE_H
#define CP_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include "proxyproto.h"

struct addr;
struct breaker;
struct event_base;
struct probe;

/* A probe ended (or could not start): the owner may start the next one. */
typedef void (*probe_done_cb)(void *);

/* The prober of one upstream's server; name is the upstream's. */
struct probe *probe_new(struct event_base *, struct breaker *, const char *name,
    probe_done_cb, void *);
/* Stop any probe in progress and free. */
void probe_free(struct probe *);
/*
 * Start a probe of server if none is in progress and the breaker hands
 * out the half_open slot; the settings are copied. A server that is still
 * a host name (no address) fails at once as dns. Main thread.
 */
void probe_start(struct probe *, const struct addr *server,
    uint64_t connect_timeout_ms, uint64_t slow_connect_ms,
    enum proxyproto_version send_proxy);
/* Stop a probe in progress, its slot given back; none starts after. */
void probe_stop(struct probe *);

#endif
