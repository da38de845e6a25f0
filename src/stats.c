/*
 * Rendering of the counter list (stats.h): STATS JSON, the Prometheus text
 * exposition and the STATUS= line, from snapshots taken elsewhere. Pure:
 * the same snapshot always gives the same bytes, which the unit tests
 * compare whole.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "stats.h"
#include "util.h"

/* clang-format off */
const struct stats_counter stats_counters[UC_COUNT] = {
#define STATS_COUNTER_ROW(id, from, field, group, json, metric, label, type,  \
    reset, status, help)                                                      \
	{ group, json, metric, label, #type, status, help, STATS_##reset,     \
	  STATS_FROM_##from },
#define STATS_FROM_BR true
#define STATS_FROM_WK false
#define STATS_FROM_AC false
#define STATS_FROM_RS false
	STATS_COUNTERS(STATS_COUNTER_ROW)
#undef STATS_COUNTER_ROW
};

/* clang-format on */

/* The upper bounds of the histogram's finite buckets, in microseconds. */
static const uint64_t stats_hist_bounds_us[STATS_HIST_BUCKETS] = { 500, 1000,
	2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
	2500000, 5000000 };

/* The bucket a connect of us microseconds falls in. */
unsigned
stats_hist_bucket(uint64_t us)
{
	unsigned i;

	for (i = 0; i < STATS_HIST_BUCKETS; i++)
		if (us <= stats_hist_bounds_us[i])
			break;
	return i;
}

/* Copy a breaker snapshot into the rows it feeds, times made wall-clock. */
void
stats_from_breaker(struct stats_upstream *su, const struct breaker_stats *st,
    int64_t wall_offset_ms)
{
	unsigned i;

	su->state = st->state;
	su->state_since_ms = (int64_t)st->state_since_ms + wall_offset_ms;
	su->retry_after_ms = st->retry_after_ms;
	su->expires_in_ms = st->expires_in_ms;
	su->recovery_timeout_ms = st->recovery_timeout_ms;
	su->failure_rate = st->failure_rate;
	su->success_rate = st->success_rate;
#define STATS_COPY_BR(id, field) su->v[UC_##id] = st->field;
#define STATS_COPY_WK(id, field)
#define STATS_COPY_AC(id, field)
#define STATS_COPY_RS(id, field)
#define STATS_COPY(id, from, field, ...) STATS_COPY_##from(id, field)
	STATS_COUNTERS(STATS_COPY)
#undef STATS_COPY
	su->nchanges = st->nchanges;
	for (i = 0; i < st->nchanges && i < BREAKER_HISTORY; i++) {
		su->changes[i].at_ms =
		    (int64_t)st->changes[i].at_ms + wall_offset_ms;
		su->changes[i].from = st->changes[i].from;
		su->changes[i].to = st->changes[i].to;
		su->changes[i].reason = st->changes[i].reason;
	}
}

/* Append a NUL-terminated string as a JSON string literal. */
static void
stats_json_string(struct util_buf *b, const char *s)
{
	json_quote(b, s, strlen(s));
}

/* Append milliseconds (>= 0) as seconds with three decimals. */
static void
stats_seconds(struct util_buf *b, int64_t ms)
{
	char tmp[32];

	util_buf_printf(b, "%s", util_fmt_secs(tmp, sizeof(tmp), ms));
}

/* Append a ratio 0..1 as JSON: at most six decimals, no exponent. */
static void
stats_ratio(struct util_buf *b, double r)
{
	char tmp[32], *e;

	if (!(r >= 0.0))
		r = 0.0;
	if (r > 1.0)
		r = 1.0;
	snprintf(tmp, sizeof(tmp), "%.6f", r);
	/* Trim trailing zeros but keep one digit after the point. */
	e = tmp + strlen(tmp) - 1;
	while (*e == '0' && e[-1] != '.')
		*e-- = '\0';
	util_buf_printf(b, "%s", tmp);
}

/*
 * The q-quantile (0..1) of an upstream's successful connects, in
 * microseconds, from the histogram as Prometheus' histogram_quantile()
 * reads it: linear within the bucket it falls in, the last finite bound
 * for the +Inf bucket; -1 with no connect yet.
 */
static int64_t
stats_hist_quantile_us(const struct stats_upstream *su, double q)
{
	uint64_t total = 0, cum = 0, lo;
	double rank;
	unsigned k;

	for (k = 0; k <= STATS_HIST_BUCKETS; k++)
		total += su->hist[k];
	if (total == 0)
		return -1;
	rank = q * (double)total;
	for (k = 0; k < STATS_HIST_BUCKETS; k++) {
		if ((double)(cum + su->hist[k]) >= rank && su->hist[k] > 0) {
			lo = k == 0 ? 0 : stats_hist_bounds_us[k - 1];
			return (int64_t)((double)lo +
			    (double)(stats_hist_bounds_us[k] - lo) *
				(rank - (double)cum) / (double)su->hist[k]);
		}
		cum += su->hist[k];
	}
	return (int64_t)stats_hist_bounds_us[STATS_HIST_BUCKETS - 1];
}

/* Append a quantile in seconds (six decimals), or null. */
static void
stats_quantile(struct util_buf *b, const struct stats_upstream *su, double q)
{
	int64_t us = stats_hist_quantile_us(su, q);

	if (us < 0)
		util_buf_printf(b, "null");
	else
		util_buf_printf(b, "%" PRId64 ".%06" PRId64, us / 1000000,
		    us % 1000000);
}

/* retry_after: seconds until it leaves open or forced_open, else none. */
static int64_t
stats_retry_after(const struct stats_upstream *su)
{
	if (su->state == BREAKER_OPEN || su->state == BREAKER_FORCED_OPEN)
		return su->retry_after_ms;
	return -1;
}

/* Append one upstream's STATS object. */
void
stats_json_upstream(struct util_buf *b, const struct stats_upstream *su)
{
	const struct stats_counter *c;
	const char *group = NULL;
	int64_t retry = stats_retry_after(su);
	size_t i;

	util_buf_printf(b, "{\"state\":\"%s\",\"state_since\":",
	    breaker_state_name(su->state));
	stats_seconds(b, su->state_since_ms);
	util_buf_printf(b, ",\"retry_after\":");
	if (retry < 0)
		util_buf_printf(b, "null");
	else
		stats_seconds(b, retry);
	util_buf_printf(b, ",\"expires_in\":");
	if (su->expires_in_ms < 0)
		util_buf_printf(b, "null");
	else
		stats_seconds(b, su->expires_in_ms);
	util_buf_printf(b, ",\"recovery_timeout\":");
	stats_seconds(b, (int64_t)su->recovery_timeout_ms);
	util_buf_printf(b, ",\"failure_rate\":");
	stats_ratio(b, su->failure_rate);
	util_buf_printf(b, ",\"success_rate\":");
	stats_ratio(b, su->success_rate);
	for (i = 0; i < UC_COUNT; i++) {
		c = &stats_counters[i];
		if (group != NULL &&
		    (c->group == NULL || strcmp(c->group, group) != 0)) {
			util_buf_add(b, "}", 1);
			group = NULL;
		}
		if (c->group != NULL && group == NULL) {
			util_buf_printf(b, ",\"%s\":{", c->group);
			group = c->group;
		} else
			util_buf_add(b, ",", 1);
		util_buf_printf(b, "\"%s\":%" PRIu64, c->json, su->v[i]);
	}
	if (group != NULL)
		util_buf_add(b, "}", 1);
	util_buf_printf(b, ",\"connect_latency\":{\"p50\":");
	stats_quantile(b, su, 0.5);
	util_buf_printf(b, ",\"p99\":");
	stats_quantile(b, su, 0.99);
	util_buf_printf(b, "},\"listen\":[");
	for (i = 0; i < su->nlisten; i++) {
		if (i > 0)
			util_buf_add(b, ",", 1);
		stats_json_string(b, su->listen[i].text);
	}
	util_buf_printf(b, "],\"server\":");
	stats_json_string(b, su->server);
	util_buf_printf(b, ",\"backup\":");
	if (su->backup == NULL)
		util_buf_printf(b, "null");
	else
		stats_json_string(b, su->backup);
	util_buf_printf(b, ",\"transitions\":[");
	for (i = 0; i < su->nchanges; i++) {
		const struct stats_change *ch = &su->changes[i];

		util_buf_printf(b, "%s{\"at\":", i > 0 ? "," : "");
		stats_seconds(b, ch->at_ms);
		util_buf_printf(b,
		    ",\"from\":\"%s\",\"to\":\"%s\",\"reason\":\"%s\"}",
		    breaker_state_name(ch->from), breaker_state_name(ch->to),
		    breaker_reason_name(ch->reason));
	}
	util_buf_printf(b, "]}");
}

/* Fill in a pool's admitting and retry_after from its members' figures. */
void
stats_pool_members(struct stats_pool *sp, const struct stats_upstream *ups,
    size_t n)
{
	const struct stats_upstream *su;
	int64_t r, soonest = -1;
	size_t m, i;

	sp->admitting = 0;
	for (m = 0; m < sp->nmembers; m++) {
		for (i = 0; i < n; i++)
			if (strcmp(ups[i].name, sp->members[m]) == 0)
				break;
		if (i == n)
			continue;
		su = &ups[i];
		if (su->state == BREAKER_CLOSED ||
		    su->state == BREAKER_HALF_OPEN ||
		    su->state == BREAKER_FORCED_CLOSED) {
			sp->admitting++;
			continue;
		}
		r = stats_retry_after(su);
		if (r >= 0 && (soonest < 0 || r < soonest))
			soonest = r;
	}
	sp->retry_after_ms = sp->admitting == 0 ? soonest : -1;
}

/* Append one pool's POOLSTATS object. */
void
stats_json_pool(struct util_buf *b, const struct stats_pool *sp)
{
	size_t i;

	util_buf_printf(b, "{\"members\":[");
	for (i = 0; i < sp->nmembers; i++) {
		if (i > 0)
			util_buf_add(b, ",", 1);
		stats_json_string(b, sp->members[i]);
	}
	util_buf_printf(b, "],\"balance\":\"%s\",\"listen\":[", sp->balance);
	for (i = 0; i < sp->nlisten; i++) {
		if (i > 0)
			util_buf_add(b, ",", 1);
		stats_json_string(b, sp->listen[i].text);
	}
	util_buf_printf(b,
	    "],\"clients_total\":%" PRIu64 ",\"rejected_total\":%" PRIu64
	    ",\"retried_total\":%" PRIu64
	    ",\"active_connections\":%u,\"admitting\":%u,\"retry_after\":",
	    sp->clients_total, sp->rejected_total, sp->retried_total,
	    sp->active, sp->admitting);
	if (sp->retry_after_ms < 0)
		util_buf_printf(b, "null}");
	else {
		stats_seconds(b, sp->retry_after_ms);
		util_buf_add(b, "}", 1);
	}
}

/* Append the /stats document. */
void
stats_json(struct util_buf *b, const struct stats_info *info,
    const struct stats_upstream *ups, size_t n)
{
	size_t i;

	util_buf_printf(b, "{\"version\":");
	stats_json_string(b, info->version);
	util_buf_printf(b, ",\"uptime_s\":");
	stats_seconds(b, (int64_t)info->uptime_ms);
	util_buf_printf(b, ",\"upstreams\":{");
	for (i = 0; i < n; i++) {
		if (i > 0)
			util_buf_add(b, ",", 1);
		stats_json_string(b, ups[i].name);
		util_buf_add(b, ":", 1);
		stats_json_upstream(b, &ups[i]);
	}
	util_buf_printf(b, "},\"pools\":{");
	for (i = 0; i < info->npools; i++) {
		if (i > 0)
			util_buf_add(b, ",", 1);
		stats_json_string(b, info->pools[i].name);
		util_buf_add(b, ":", 1);
		stats_json_pool(b, &info->pools[i]);
	}
	util_buf_printf(b, "}}\n");
}

/* Append a Prometheus label value, escaped. */
static void
stats_prom_label(struct util_buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			util_buf_printf(b, "\\%c", *s);
		else if (*s == '\n')
			util_buf_add(b, "\\n", 2);
		else
			util_buf_add(b, s, 1);
	}
}

/* Append "# HELP" and "# TYPE" of a family. */
static void
stats_prom_family(struct util_buf *b, const char *name, const char *type,
    const char *help)
{
	util_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

/* Append "NAME{upstream="U"" without the closing brace. */
static void
stats_prom_series(struct util_buf *b, const char *name, const char *up)
{
	util_buf_printf(b, "%s{upstream=\"", name);
	stats_prom_label(b, up);
	util_buf_add(b, "\"", 1);
}

/* Append bucket k's Prometheus "le" label: its bound in seconds, or +Inf. */
static void
stats_prom_le(struct util_buf *b, unsigned k)
{
	char frac[8];
	uint64_t us;
	size_t n;

	if (k >= STATS_HIST_BUCKETS) {
		util_buf_printf(b, ",le=\"+Inf\"");
		return;
	}
	us = stats_hist_bounds_us[k];
	snprintf(frac, sizeof(frac), ".%06" PRIu64, us % 1000000);
	for (n = strlen(frac); frac[n - 1] == '0'; n--)
		frac[n - 1] = '\0';
	if (n == 1)
		frac[0] = '\0';
	util_buf_printf(b, ",le=\"%" PRIu64 "%s\"", us / 1000000, frac);
}

/* Append the connect-duration histogram of every upstream. */
static void
stats_prom_histogram(struct util_buf *b, const struct stats_upstream *ups,
    size_t n)
{
	static const char name[] =
	    "circuitproxy_upstream_connect_duration_seconds";
	uint64_t cum;
	size_t i;
	unsigned k;

	stats_prom_family(b, name, "histogram",
	    "Time to establish the connection to the server.");
	for (i = 0; i < n; i++) {
		cum = 0;
		for (k = 0; k <= STATS_HIST_BUCKETS; k++) {
			cum += ups[i].hist[k];
			stats_prom_series(b,
			    "circuitproxy_upstream_connect_"
			    "duration_seconds_bucket",
			    ups[i].name);
			stats_prom_le(b, k);
			util_buf_printf(b, "} %" PRIu64 "\n", cum);
		}
		stats_prom_series(b,
		    "circuitproxy_upstream_connect_duration_"
		    "seconds_sum",
		    ups[i].name);
		util_buf_printf(b, "} %" PRIu64 ".%06" PRIu64 "\n",
		    ups[i].hist_sum_us / 1000000, ups[i].hist_sum_us % 1000000);
		stats_prom_series(b,
		    "circuitproxy_upstream_connect_duration_"
		    "seconds_count",
		    ups[i].name);
		util_buf_printf(b, "} %" PRIu64 "\n", cum);
	}
}

/* The pool families of /metrics, each series labelled pool="NAME". */
static void
stats_prom_pools(struct util_buf *b, const struct stats_pool *ps, size_t n)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "circuitproxy_pool_clients_total", "counter",
		    "Clients accepted on the pool's listeners." },
		{ "circuitproxy_pool_rejected_total", "counter",
		    "Clients no member admitted, turned away by the pool." },
		{ "circuitproxy_pool_retried_total", "counter",
		    "Clients tried on another member after a failed connect." },
		{ "circuitproxy_pool_admitting_members", "gauge",
		    "Members whose breaker admits clients now." },
	};
	uint64_t v;
	size_t f, i;

	if (n == 0)
		return;
	for (f = 0; f < CP_ARRAY_LEN(fam); f++) {
		stats_prom_family(b, fam[f].name, fam[f].type, fam[f].help);
		for (i = 0; i < n; i++) {
			v = f == 0   ? ps[i].clients_total
			    : f == 1 ? ps[i].rejected_total
			    : f == 2 ? ps[i].retried_total
				     : ps[i].admitting;
			util_buf_printf(b, "%s{pool=\"", fam[f].name);
			stats_prom_label(b, ps[i].name);
			util_buf_printf(b, "\"} %" PRIu64 "\n", v);
		}
	}
}

/* Append the /metrics text. */
void
stats_prometheus(struct util_buf *b, const struct stats_info *info,
    const struct stats_upstream *ups, size_t n)
{
	const struct stats_counter *c;
	size_t i, first, last;
	int s;

	stats_prom_family(b, "circuitproxy_build_info", "gauge",
	    "The running version, always 1.");
	util_buf_printf(b, "circuitproxy_build_info{version=\"");
	stats_prom_label(b, info->version);
	util_buf_printf(b, "\"} 1\n");
	stats_prom_family(b, "circuitproxy_uptime_seconds", "gauge",
	    "Seconds since the daemon started.");
	util_buf_printf(b, "circuitproxy_uptime_seconds ");
	stats_seconds(b, (int64_t)info->uptime_ms);
	util_buf_add(b, "\n", 1);

	stats_prom_family(b, "circuitproxy_breaker_state", "gauge",
	    "The circuit's state: 1 for the current one, 0 for the others.");
	for (i = 0; i < n; i++)
		for (s = 0; s < BREAKER_STATE_COUNT; s++) {
			stats_prom_series(b, "circuitproxy_breaker_state",
			    ups[i].name);
			util_buf_printf(b, ",state=\"%s\"} %d\n",
			    breaker_state_name((enum breaker_state)s),
			    ups[i].state == (enum breaker_state)s);
		}
	stats_prom_family(b, "circuitproxy_breaker_retry_after_seconds",
	    "gauge",
	    "Seconds until the circuit leaves open or forced_open; 0 if it "
	    "is in neither or has no end.");
	for (i = 0; i < n; i++) {
		int64_t r = stats_retry_after(&ups[i]);

		stats_prom_series(b, "circuitproxy_breaker_retry_after_seconds",
		    ups[i].name);
		util_buf_add(b, "} ", 2);
		stats_seconds(b, r < 0 ? 0 : r);
		util_buf_add(b, "\n", 1);
	}
	stats_prom_family(b, "circuitproxy_breaker_recovery_timeout_seconds",
	    "gauge", "The current (or next) open duration.");
	for (i = 0; i < n; i++) {
		stats_prom_series(b,
		    "circuitproxy_breaker_recovery_timeout_seconds",
		    ups[i].name);
		util_buf_add(b, "} ", 2);
		stats_seconds(b, (int64_t)ups[i].recovery_timeout_ms);
		util_buf_add(b, "\n", 1);
	}

	/* Each family: its rows are consecutive in the list. */
	for (first = 0; first < UC_COUNT; first = last) {
		c = &stats_counters[first];
		last = first + 1;
		if (c->metric == NULL)
			continue;
		while (last < UC_COUNT && stats_counters[last].metric != NULL &&
		    strcmp(stats_counters[last].metric, c->metric) == 0)
			last++;
		stats_prom_family(b, c->metric, c->type, c->help);
		for (i = 0; i < n; i++) {
			size_t k;

			for (k = first; k < last; k++) {
				stats_prom_series(b, c->metric, ups[i].name);
				if (stats_counters[k].label != NULL)
					util_buf_printf(b, ",%s",
					    stats_counters[k].label);
				util_buf_printf(b, "} %" PRIu64 "\n",
				    ups[i].v[k]);
			}
		}
	}
	stats_prom_histogram(b, ups, n);
	stats_prom_pools(b, info->pools, info->npools);
}

/* Append ", 1 pool, 0 without a member" to the STATUS= summary. */
void
stats_status_pools(struct util_buf *b, const struct stats_pool *ps, size_t n)
{
	unsigned none = 0;
	size_t i;

	if (n == 0)
		return;
	for (i = 0; i < n; i++)
		if (ps[i].admitting == 0)
			none++;
	util_buf_printf(b, ", %zu pool%s, %u without a member", n,
	    n == 1 ? "" : "s", none);
}

/* Append the STATUS= summary: "3 upstreams, 1 open, 9 rejected, 2 active". */
void
stats_status_line(struct util_buf *b, const struct stats_upstream *ups,
    size_t n)
{
	unsigned open = 0;
	uint64_t sum;
	size_t i, k;

	for (i = 0; i < n; i++)
		if (ups[i].state == BREAKER_OPEN ||
		    ups[i].state == BREAKER_FORCED_OPEN)
			open++;
	util_buf_printf(b, "%zu upstream%s, %u open", n, n == 1 ? "" : "s",
	    open);
	for (k = 0; k < UC_COUNT; k++) {
		if (stats_counters[k].status == NULL)
			continue;
		for (sum = 0, i = 0; i < n; i++)
			sum += ups[i].v[k];
		util_buf_printf(b, ", %" PRIu64 " %s", sum,
		    stats_counters[k].status);
	}
}
