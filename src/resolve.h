/*
 * Host names on libevent's evdns (SPEC.md section 3): one resolve_base per
 * daemon on the main loop, and one resolve per upstream whose server is a
 * name. A resolve looks the name up at once, again every resolve_interval
 * (every second while it has no address), keeps the last good addresses
 * when a lookup fails, logs event=resolve, and tells its owner. Main thread
 * only: workers never see this module, they read the owner's copy.
 */
#ifndef CP_RESOLVE_H
#define CP_RESOLVE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct addr;
struct config;
struct event_base;
struct resolve;
struct resolve_base;

/* What a lookup brought. */
enum resolve_news {
	RESOLVE_CHANGED, /* a new set of addresses (n > 0) */
	RESOLVE_FAILED,	 /* a lookup failed; addrs is the kept set (n >= 0) */
};

/* Told on the main thread after each lookup that changed something. */
typedef void (
    *resolve_cb)(void *, enum resolve_news, const struct addr *, size_t);

/*
 * The daemon's resolver: servers is "IP:PORT ..." (the resolver key), or
 * NULL for /etc/resolv.conf and /etc/hosts. NULL with *cause on error.
 */
struct resolve_base *resolve_base_new(struct event_base *, const char *servers,
    char **cause);
/* A reload: the system's resolver reads its files again. */
void resolve_base_reload(struct resolve_base *);
/* Free the resolver; every resolve must have been freed before. */
void resolve_base_free(struct resolve_base *);
/*
 * Run the loop until every resolve has had its first answer, or max_ms
 * passed (start-up, before READY=1, so a resolvable name is ready).
 */
void resolve_base_settle(struct resolve_base *, uint64_t max_ms);

/*
 * Start looking up server (a name, see addr.h) for the upstream named
 * upstream, every interval_ms (0: once until it resolves). cb hears of it.
 */
struct resolve *resolve_new(struct resolve_base *, const char *upstream,
    const struct addr *server, uint64_t interval_ms, resolve_cb, void *);
/* A reload: take the new interval and look the name up again now. */
void resolve_reload(struct resolve *, uint64_t interval_ms);
/* Stop looking up; a lookup in flight is cancelled, cb is not called again. */
void resolve_free(struct resolve *);

/*
 * Look up every host-name server of a config once, on a loop of its own
 * (for -t), and print "FILE:LINE: warning: ..." for each that does not
 * resolve. Returns the count of warnings.
 */
unsigned resolve_check(const struct config *, FILE *);

#endif
