/*
 * The counters of an upstream, listed once, and everything rendered from
 * them: STATS JSON, the Prometheus text, the systemd STATUS= line (SPEC.md
 * sections 6 and 7). Pure C: it renders a snapshot taken elsewhere (under
 * the breaker's lock and from the per-worker counters) into a buffer, with
 * no lock held and no libevent.
 */
#ifndef CP_STATS_H
#define CP_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "breaker.h"
#include "util.h"

/*
 * Every counter and gauge of an upstream, once. This list makes the enum
 * (UC_*), the per-worker counter slots, the copy from a breaker snapshot,
 * the STATS JSON, the Prometheus series and the STATUS= line, and says what
 * a reset does to each. Columns:
 *
 *   id      the name in C (UC_id)
 *   from    BR: copied from struct breaker_stats (field), WK: summed over
 *           the workers' slots, AC: the upstream's count of active relays,
 *           RS: the upstream's count of failed host-name lookups
 *   field   the breaker_stats member for BR (else 0)
 *   group   the JSON object it sits in (consecutive rows share it), or NULL
 *   json    its JSON key
 *   metric  its Prometheus family (consecutive rows share it), or NULL
 *   label   the extra label of its series, or NULL
 *   type    counter or gauge (Prometheus TYPE)
 *   reset   CLEARED or KEPT by a reset (SPEC.md 4: totals are kept)
 *   status  its word in the STATUS= line (summed over upstreams), or NULL
 *   help    the Prometheus HELP text (first row of a family)
 */
/* clang-format off */
#define STATS_COUNTERS(X) \
X(consecutive_failures, BR, consecutive_failures, NULL, "consecutive_failures", \
  "circuitproxy_breaker_consecutive_failures", NULL, gauge, CLEARED, NULL, \
  "Failed attempts in a row since the last success.") \
X(window_attempts, BR, window_attempts, NULL, "window_attempts", \
  "circuitproxy_breaker_window_attempts", NULL, gauge, CLEARED, NULL, \
  "Attempts in the sliding window.") \
X(window_failures, BR, window_failures, NULL, "window_failures", \
  "circuitproxy_breaker_window_failures", NULL, gauge, CLEARED, NULL, \
  "Failed attempts in the sliding window.") \
X(attempts_total, BR, attempts_total, NULL, "attempts_total", \
  "circuitproxy_upstream_attempts_total", NULL, counter, KEPT, NULL, \
  "Connects to the server, successful or not.") \
X(successes_total, BR, successes_total, NULL, "successes_total", \
  "circuitproxy_upstream_successes_total", NULL, counter, KEPT, NULL, \
  "Successful connects to the server.") \
X(failures_total, BR, failures_total, NULL, "failures_total", \
  NULL, NULL, counter, KEPT, NULL, NULL) \
X(failures_refused, BR, failures_by_error[BREAKER_ERR_REFUSED], "failures_by_error", "refused", \
  "circuitproxy_upstream_failures_total", "error=\"refused\"", counter, KEPT, NULL, \
  "Failed connects to the server, by error.") \
X(failures_timeout, BR, failures_by_error[BREAKER_ERR_TIMEOUT], "failures_by_error", "timeout", \
  "circuitproxy_upstream_failures_total", "error=\"timeout\"", counter, KEPT, NULL, NULL) \
X(failures_unreachable, BR, failures_by_error[BREAKER_ERR_UNREACHABLE], "failures_by_error", "unreachable", \
  "circuitproxy_upstream_failures_total", "error=\"unreachable\"", counter, KEPT, NULL, NULL) \
X(failures_early_close, BR, failures_by_error[BREAKER_ERR_EARLY_CLOSE], "failures_by_error", "early_close", \
  "circuitproxy_upstream_failures_total", "error=\"early_close\"", counter, KEPT, NULL, NULL) \
X(failures_slow, BR, failures_by_error[BREAKER_ERR_SLOW], "failures_by_error", "slow", \
  "circuitproxy_upstream_failures_total", "error=\"slow\"", counter, KEPT, NULL, NULL) \
X(failures_dns, BR, failures_by_error[BREAKER_ERR_DNS], "failures_by_error", "dns", \
  "circuitproxy_upstream_failures_total", "error=\"dns\"", counter, KEPT, NULL, NULL) \
X(failures_other, BR, failures_by_error[BREAKER_ERR_OTHER], "failures_by_error", "other", \
  "circuitproxy_upstream_failures_total", "error=\"other\"", counter, KEPT, NULL, NULL) \
X(rejected_total, BR, rejected_total, NULL, "rejected_total", \
  NULL, NULL, counter, KEPT, "rejected", NULL) \
X(rejected_open, BR, rejected_open, "rejected_by_state", "open", \
  "circuitproxy_upstream_rejected_total", "reason=\"open\"", counter, KEPT, NULL, \
  "Clients turned away, by reason.") \
X(rejected_half_open, BR, rejected_half_open, "rejected_by_state", "half_open", \
  "circuitproxy_upstream_rejected_total", "reason=\"half_open\"", counter, KEPT, NULL, NULL) \
X(rejected_forced_open, BR, rejected_forced_open, "rejected_by_state", "forced_open", \
  "circuitproxy_upstream_rejected_total", "reason=\"forced_open\"", counter, KEPT, NULL, NULL) \
X(rejected_overload_total, WK, 0, NULL, "rejected_overload_total", \
  "circuitproxy_upstream_rejected_total", "reason=\"overload\"", counter, KEPT, NULL, NULL) \
X(failover_total, WK, 0, NULL, "failover_total", \
  "circuitproxy_upstream_failovers_total", NULL, counter, KEPT, NULL, \
  "Clients relayed to the backup while this circuit was open.") \
X(opened_total, BR, opened_total, NULL, "opened_total", \
  "circuitproxy_breaker_opened_total", NULL, counter, KEPT, NULL, \
  "Times the circuit opened.") \
X(connections_total, WK, 0, NULL, "connections_total", \
  "circuitproxy_upstream_connections_total", NULL, counter, KEPT, NULL, \
  "Clients accepted on the upstream's listeners.") \
X(active_connections, AC, 0, NULL, "active_connections", \
  "circuitproxy_upstream_active_connections", NULL, gauge, KEPT, "active", \
  "Open relays.") \
X(bytes_sent_total, WK, 0, NULL, "bytes_sent_total", \
  "circuitproxy_upstream_sent_bytes_total", NULL, counter, KEPT, NULL, \
  "Bytes relayed from clients to the server.") \
X(bytes_received_total, WK, 0, NULL, "bytes_received_total", \
  "circuitproxy_upstream_received_bytes_total", NULL, counter, KEPT, NULL, \
  "Bytes relayed from the server to clients.") \
X(resolve_errors_total, RS, 0, NULL, "resolve_errors_total", \
  "circuitproxy_upstream_resolve_errors_total", NULL, counter, KEPT, NULL, \
  "Failed lookups of the server's host name.")

enum upstream_counter {
#define STATS_COUNTER_ENUM(id, ...) UC_##id,
	STATS_COUNTERS(STATS_COUNTER_ENUM)
#undef STATS_COUNTER_ENUM
	UC_COUNT
};
/* clang-format on */

/* What a reset does to a counter. */
enum stats_reset {
	STATS_KEPT,
	STATS_CLEARED,
};

/* One row of STATS_COUNTERS, for code that walks the list at run time. */
struct stats_counter {
	const char *group, *json, *metric, *label, *type, *status, *help;
	enum stats_reset reset;
	bool from_breaker;
};
extern const struct stats_counter stats_counters[UC_COUNT];

/*
 * The connect-duration histogram: this many finite buckets (their bounds,
 * SPEC.md 7, are in stats.c); one more bucket counts what lies above.
 */
#define STATS_HIST_BUCKETS 13
/* The bucket a connect of us microseconds falls in (STATS_HIST_BUCKETS: +Inf). */
unsigned stats_hist_bucket(uint64_t us);

/* One state change, in wall-clock time. */
struct stats_change {
	int64_t at_ms; /* unix milliseconds */
	enum breaker_state from, to;
	enum breaker_reason reason;
};

/* Everything rendered about one upstream, copied out before rendering. */
struct stats_upstream {
	const char *name;
	const struct addr *listen; /* nlisten addresses */
	size_t nlisten;
	const char *server;
	const char *backup; /* NULL: none */
	enum breaker_state state;
	int64_t state_since_ms; /* unix milliseconds */
	int64_t retry_after_ms; /* -1: none */
	int64_t expires_in_ms;	/* a force's lifetime left; -1: none */
	uint64_t recovery_timeout_ms;
	double failure_rate, success_rate;
	uint64_t v[UC_COUNT];
	uint64_t hist[STATS_HIST_BUCKETS + 1]; /* per bucket, not cumulative */
	uint64_t hist_sum_us;
	struct stats_change changes[BREAKER_HISTORY]; /* newest first */
	unsigned nchanges;
};

/* The daemon-wide part of /stats and /metrics. */
struct stats_info {
	const char *version;
	uint64_t uptime_ms;
	const struct stats_pool *pools; /* npools, rendered after upstreams */
	size_t npools;
};

/* Everything rendered about one pool (POOLSTATS), copied out before. */
struct stats_pool {
	const char *name;
	const char *balance;
	char *const *members; /* nmembers upstream names, in order */
	size_t nmembers;
	const struct addr *listen; /* nlisten addresses */
	size_t nlisten;
	uint64_t clients_total, rejected_total, retried_total;
	unsigned active;    /* open relays of its clients */
	unsigned admitting; /* members whose breaker admits now */
	int64_t
	    retry_after_ms; /* soonest of its members when none admits; -1 */
};

/*
 * Copy a breaker snapshot in; wall_offset_ms turns its monotonic times into
 * unix milliseconds (wall clock minus monotonic clock, both now).
 */
void stats_from_breaker(struct stats_upstream *, const struct breaker_stats *,
    int64_t wall_offset_ms);

/* Append one upstream's STATS object. */
void stats_json_upstream(struct util_buf *, const struct stats_upstream *);
/* Append the /stats document. */
void stats_json(struct util_buf *, const struct stats_info *,
    const struct stats_upstream *, size_t n);
/*
 * Fill in a pool's admitting and retry_after from its members' figures
 * (ups: every upstream, found by name).
 */
void stats_pool_members(struct stats_pool *, const struct stats_upstream *,
    size_t n);
/* Append one pool's POOLSTATS object. */
void stats_json_pool(struct util_buf *, const struct stats_pool *);
/* Append the /metrics text (Prometheus exposition format 0.0.4). */
void stats_prometheus(struct util_buf *, const struct stats_info *,
    const struct stats_upstream *, size_t n);
/* Append ", 1 pool, 0 without a member" to the STATUS= summary (none: nothing). */
void stats_status_pools(struct util_buf *, const struct stats_pool *, size_t n);
/* Append the STATUS= summary: "3 upstreams, 1 open, 9 rejected, 2 active". */
void stats_status_line(struct util_buf *, const struct stats_upstream *,
    size_t n);

#endif
