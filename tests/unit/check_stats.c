/*
 * Check suite for stats.c: the STATS JSON, the Prometheus text and the
 * STATUS= line of fixed snapshots, compared whole; the counter list
 * against a real breaker (what a reset clears and keeps).
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "unit.h"
#include "unit_breaker.h"

/* A busy upstream: open, with a backup, failures of two kinds. */
static void
snap_api(struct stats_upstream *su, struct addr *listen)
{
	memset(su, 0, sizeof(*su));
	memset(listen, 0, 2 * sizeof(*listen));
	snprintf(listen[0].text, sizeof(listen[0].text), "127.0.0.1:8080");
	snprintf(listen[1].text, sizeof(listen[1].text), "unix:/run/a\"b");
	su->name = "api";
	su->listen = listen;
	su->nlisten = 2;
	su->server = "127.0.0.1:9090";
	su->backup = "spare";
	su->state = BREAKER_OPEN;
	su->state_since_ms = 1700000000123;
	su->retry_after_ms = 29412;
	su->expires_in_ms = -1;
	su->recovery_timeout_ms = 30000;
	su->failure_rate = 0.25;
	su->success_rate = 0.75;
	su->v[UC_consecutive_failures] = 5;
	su->v[UC_window_attempts] = 20;
	su->v[UC_window_failures] = 5;
	su->v[UC_attempts_total] = 120;
	su->v[UC_successes_total] = 110;
	su->v[UC_failures_total] = 10;
	su->v[UC_failures_refused] = 7;
	su->v[UC_failures_timeout] = 3;
	su->v[UC_rejected_total] = 1450;
	su->v[UC_rejected_open] = 1400;
	su->v[UC_rejected_half_open] = 50;
	su->v[UC_rejected_overload_total] = 2;
	su->v[UC_failover_total] = 4;
	su->v[UC_opened_total] = 1;
	su->v[UC_connections_total] = 1576;
	su->v[UC_active_connections] = 3;
	su->v[UC_bytes_sent_total] = 1000;
	su->v[UC_bytes_received_total] = 2000000;
	su->hist[0] = 100; /* <= 0.5 ms */
	su->hist[2] = 9;   /* <= 2.5 ms */
	su->hist[13] = 1;  /* > 5 s */
	su->hist_sum_us = 6012345;
	su->nchanges = 2;
	su->changes[0] = (struct stats_change){ 1700000000123, BREAKER_CLOSED,
		BREAKER_OPEN, BREAKER_REASON_CONSECUTIVE };
	su->changes[1] =
	    (struct stats_change){ 1699999990000, BREAKER_HALF_OPEN,
		    BREAKER_CLOSED, BREAKER_REASON_TRIALS_SUCCEEDED };
}

/* A quiet upstream: closed, nothing yet. */
static void
snap_db(struct stats_upstream *su, struct addr *listen)
{
	memset(su, 0, sizeof(*su));
	memset(listen, 0, sizeof(*listen));
	snprintf(listen->text, sizeof(listen->text), "[::1]:5432");
	su->name = "db";
	su->listen = listen;
	su->nlisten = 1;
	su->server = "unix:/run/postgresql/.s.PGSQL.5432";
	su->state = BREAKER_CLOSED;
	su->state_since_ms = 1700000000000;
	su->retry_after_ms = -1;
	su->expires_in_ms = -1;
	su->recovery_timeout_ms = 1500;
	su->failure_rate = 0;
	su->success_rate = 1;
}

/* The db snapshot's upstream object, alone and inside a document. */
#define DB_JSON                                                                \
	"{\"state\":\"closed\",\"state_since\":1700000000.000,"                \
	"\"retry_after\":null,\"expires_in\":null,\"recovery_timeout\":1.500," \
	"\"failure_rate\":0.0,\"success_rate\":1.0,"                           \
	"\"consecutive_failures\":0,\"window_attempts\":0,"                    \
	"\"window_failures\":0,\"attempts_total\":0,"                          \
	"\"successes_total\":0,\"failures_total\":0,"                          \
	"\"failures_by_error\":{\"refused\":0,\"timeout\":0,"                  \
	"\"unreachable\":0,\"early_close\":0,\"slow\":0,\"dns\":0,"            \
	"\"other\":0},"                                                        \
	"\"rejected_total\":0,"                                                \
	"\"rejected_by_state\":{\"open\":0,\"half_open\":0,"                   \
	"\"forced_open\":0},"                                                  \
	"\"rejected_overload_total\":0,\"failover_total\":0,"                  \
	"\"opened_total\":0,\"connections_total\":0,"                          \
	"\"active_connections\":0,\"bytes_sent_total\":0,"                     \
	"\"bytes_received_total\":0,\"resolve_errors_total\":0,"               \
	"\"connect_latency\":{\"p50\":null,\"p99\":null},"                     \
	"\"listen\":[\"[::1]:5432\"],"                                         \
	"\"server\":\"unix:/run/postgresql/.s.PGSQL.5432\","                   \
	"\"backup\":null,\"transitions\":[]}"

/* What a render row renders: one upstream, a /stats document, STATUS=. */
enum render { R_UPSTREAM, R_DOCUMENT, R_STATUS };

/* A fixed snapshot rendered whole and compared whole. */
struct render_row {
	const char *name;
	enum render render;
	const char *upstreams; /* "a" api, "d" db, in order */
	bool db_forced_open;
	const char *want;
};

/* The renderings of the api and db snapshots. */
static const struct render_row renders[] = {
	{ "json_upstream_api", R_UPSTREAM, "a", false,
	    "{\"state\":\"open\",\"state_since\":1700000000.123,"
	    "\"retry_after\":29.412,\"expires_in\":null,"
	    "\"recovery_timeout\":30.000,"
	    "\"failure_rate\":0.25,\"success_rate\":0.75,"
	    "\"consecutive_failures\":5,\"window_attempts\":20,"
	    "\"window_failures\":5,\"attempts_total\":120,"
	    "\"successes_total\":110,\"failures_total\":10,"
	    "\"failures_by_error\":{\"refused\":7,\"timeout\":3,"
	    "\"unreachable\":0,\"early_close\":0,\"slow\":0,\"dns\":0,"
	    "\"other\":0},"
	    "\"rejected_total\":1450,"
	    "\"rejected_by_state\":{\"open\":1400,\"half_open\":50,"
	    "\"forced_open\":0},"
	    "\"rejected_overload_total\":2,\"failover_total\":4,"
	    "\"opened_total\":1,\"connections_total\":1576,"
	    "\"active_connections\":3,\"bytes_sent_total\":1000,"
	    "\"bytes_received_total\":2000000,\"resolve_errors_total\":0,"
	    "\"connect_latency\":{\"p50\":0.000275,\"p99\":0.002483},"
	    "\"listen\":[\"127.0.0.1:8080\",\"unix:/run/a\\\"b\"],"
	    "\"server\":\"127.0.0.1:9090\",\"backup\":\"spare\","
	    "\"transitions\":["
	    "{\"at\":1700000000.123,\"from\":\"closed\",\"to\":\"open\","
	    "\"reason\":\"consecutive_failures\"},"
	    "{\"at\":1699999990.000,\"from\":\"half_open\",\"to\":\"closed\","
	    "\"reason\":\"trials_succeeded\"}]}" },
	{ "json_upstream_db", R_UPSTREAM, "d", false, DB_JSON },
	{ "json_document", R_DOCUMENT, "d", false,
	    "{\"version\":\"0.1.0\",\"uptime_s\":61.005,\"upstreams\":{"
	    "\"db\":" DB_JSON "},\"pools\":{}}\n" },
	/* No upstream at all is still a document. */
	{ "json_document_empty", R_DOCUMENT, "", false,
	    "{\"version\":\"0.1.0\",\"uptime_s\":61.005,\"upstreams\":{},"
	    "\"pools\":{}}\n" },
	{ "status_line", R_STATUS, "ad", false,
	    "2 upstreams, 1 open, 1450 rejected, 3 active" },
	{ "status_line_one", R_STATUS, "d", false,
	    "1 upstream, 0 open, 0 rejected, 0 active" },
	{ "status_line_forced_open", R_STATUS, "ad", true,
	    "2 upstreams, 2 open, 1450 rejected, 3 active" },
};

/* Render row _i's snapshots and compare the text whole. */
START_TEST(test_render)
{
	const struct render_row *r = &renders[_i];
	struct util_buf b = { NULL, 0, 0 };
	struct stats_info info = { "0.1.0", 61005, NULL, 0 };
	struct stats_upstream su[2];
	struct addr l[2][2];
	size_t n;

	for (n = 0; r->upstreams[n] != '\0'; n++) {
		if (r->upstreams[n] == 'a')
			snap_api(&su[n], l[n]);
		else
			snap_db(&su[n], l[n]);
		if (r->upstreams[n] == 'd' && r->db_forced_open)
			su[n].state = BREAKER_FORCED_OPEN;
	}
	if (r->render == R_UPSTREAM)
		stats_json_upstream(&b, &su[0]);
	else if (r->render == R_DOCUMENT)
		stats_json(&b, &info, su, n);
	else
		stats_status_line(&b, su, n);
	ck_assert_msg(strcmp(b.p, r->want) == 0, "%s: got\n%s\nwant\n%s",
	    r->name, b.p, r->want);
	util_buf_free(&b);
}
END_TEST

/* retry_after: open and forced_open with a lifetime have one; no others. */
static const struct {
	enum breaker_state state;
	int64_t retry_after_ms, expires_in_ms;
	const char *want;
} retry_rows[] = {
	{ BREAKER_FORCED_OPEN, -1, -1, "\"retry_after\":null," },
	{ BREAKER_FORCED_OPEN, 999, -1, "\"retry_after\":0.999," },
	{ BREAKER_HALF_OPEN, 0, -1, "\"retry_after\":null," },
	{ BREAKER_FORCED_CLOSED, 5000, 4200,
	    "\"retry_after\":null,\"expires_in\":4.200," },
};

/* The db snapshot in retry_rows[_i]'s state shows its retry_after. */
START_TEST(test_json_retry_after)
{
	struct util_buf b = { NULL, 0, 0 };
	struct stats_upstream su;
	struct addr l[1];

	snap_db(&su, l);
	su.state = retry_rows[_i].state;
	su.retry_after_ms = retry_rows[_i].retry_after_ms;
	su.expires_in_ms = retry_rows[_i].expires_in_ms;
	stats_json_upstream(&b, &su);
	ck_assert_msg(strstr(b.p, retry_rows[_i].want) != NULL,
	    "%s, retry_after %lld: no %s in %s",
	    breaker_state_name(retry_rows[_i].state),
	    (long long)retry_rows[_i].retry_after_ms, retry_rows[_i].want, b.p);
	util_buf_free(&b);
}
END_TEST

START_TEST(test_prometheus)
{
	struct util_buf b = { NULL, 0, 0 };
	struct stats_upstream su[2];
	struct stats_info info = { "0.1.0", 61005, NULL, 0 };
	struct addr l1[2], l2[1];
	FILE *f;
	char *want;
	long n;

	snap_api(&su[0], l1);
	snap_db(&su[1], l2);
	stats_prometheus(&b, &info, su, 2);
	f = fopen(CP_SRCDIR "/tests/unit/stats_metrics.txt", "r");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	want = calloc(1, (size_t)n + 1);
	ck_assert_uint_eq(fread(want, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	if (strcmp(b.p, want) != 0) {
		f = fopen("stats_metrics.got", "w");
		if (f != NULL) {
			fputs(b.p, f);
			fclose(f);
		}
	}
	ck_assert_msg(strcmp(b.p, want) == 0,
	    "metrics differ from tests/unit/stats_metrics.txt; see "
	    "stats_metrics.got");
	free(want);
	util_buf_free(&b);
}
END_TEST

/*
 * A pool: admitting counts the members whose breaker admits, retry_after
 * is the soonest of its members only when none admits; POOLSTATS, its
 * place in /stats, the pool metrics and the STATUS= words.
 */
START_TEST(test_pool)
{
	struct util_buf b = { NULL, 0, 0 };
	struct stats_upstream su[2];
	struct addr l1[2], l2[1], pl[1];
	char *members[] = { "api", "db", "gone" };
	struct stats_pool sp = { .name = "web",
		.balance = "leastconn",
		.members = members,
		.nmembers = 3,
		.listen = pl,
		.nlisten = 1,
		.clients_total = 10,
		.rejected_total = 2,
		.retried_total = 3,
		.active = 1 };
	struct stats_info info = { "0.1.0", 1000, &sp, 1 };

	memset(pl, 0, sizeof(pl));
	snprintf(pl[0].text, sizeof(pl[0].text), "127.0.0.1:80");
	snap_api(&su[0], l1);
	snap_db(&su[1], l2);
	stats_pool_members(&sp, su, 2);
	ck_assert_uint_eq(sp.admitting, 1);
	ck_assert_int_eq(sp.retry_after_ms, -1);
	stats_json_pool(&b, &sp);
	ck_assert_str_eq(b.p,
	    "{\"members\":[\"api\",\"db\",\"gone\"],\"balance\":\"leastconn\","
	    "\"listen\":[\"127.0.0.1:80\"],\"clients_total\":10,"
	    "\"rejected_total\":2,\"retried_total\":3,"
	    "\"active_connections\":1,\"admitting\":1,\"retry_after\":null}");
	util_buf_free(&b);
	stats_status_pools(&b, &sp, 1);
	ck_assert_str_eq(b.p, ", 1 pool, 0 without a member");
	util_buf_free(&b);

	su[1].state = BREAKER_FORCED_OPEN;
	su[1].retry_after_ms = 40000;
	stats_pool_members(&sp, su, 2);
	ck_assert_uint_eq(sp.admitting, 0);
	ck_assert_int_eq(sp.retry_after_ms, 29412);
	stats_json(&b, &info, su, 0);
	ck_assert_str_eq(b.p,
	    "{\"version\":\"0.1.0\",\"uptime_s\":1.000,\"upstreams\":{},"
	    "\"pools\":{\"web\":{\"members\":[\"api\",\"db\",\"gone\"],"
	    "\"balance\":\"leastconn\",\"listen\":[\"127.0.0.1:80\"],"
	    "\"clients_total\":10,\"rejected_total\":2,\"retried_total\":3,"
	    "\"active_connections\":1,\"admitting\":0,"
	    "\"retry_after\":29.412}}}\n");
	util_buf_free(&b);
	stats_prometheus(&b, &info, su, 0);
	ck_assert_ptr_nonnull(strstr(b.p,
	    "# TYPE circuitproxy_pool_clients_total counter\n"
	    "circuitproxy_pool_clients_total{pool=\"web\"} 10\n"));
	ck_assert_ptr_nonnull(
	    strstr(b.p, "circuitproxy_pool_rejected_total{pool=\"web\"} 2\n"));
	ck_assert_ptr_nonnull(
	    strstr(b.p, "circuitproxy_pool_retried_total{pool=\"web\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(b.p,
	    "# TYPE circuitproxy_pool_admitting_members gauge\n"
	    "circuitproxy_pool_admitting_members{pool=\"web\"} 0\n"));
	util_buf_free(&b);
	stats_status_pools(&b, &sp, 1);
	ck_assert_str_eq(b.p, ", 1 pool, 1 without a member");
	util_buf_free(&b);
}
END_TEST

/* A connect time falls in the first bucket whose bound it does not pass. */
START_TEST(test_hist_bucket)
{
	static const struct {
		uint64_t us;
		unsigned bucket;
	} rows[] = {
		{ 0, 0 },
		{ 500, 0 },
		{ 501, 1 },
		{ 1000, 1 },
		{ 99999, 7 },
		{ 5000000, 12 },
		{ 5000001, STATS_HIST_BUCKETS },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_msg(stats_hist_bucket(rows[i].us) == rows[i].bucket,
		    "%llu us: bucket %u, want %u",
		    (unsigned long long)rows[i].us,
		    (unsigned)stats_hist_bucket(rows[i].us), rows[i].bucket);
}
END_TEST

/*
 * The list against a real breaker: after failures, rejects and a reset,
 * every row marked CLEARED reads 0 and every KEPT one is as before.
 */
START_TEST(test_reset_column)
{
	struct breaker_conf c;
	struct breaker *br;
	struct breaker_ticket t;
	struct breaker_stats st;
	struct stats_upstream before, after;
	unsigned i, cleared = 0, kept = 0;

	c = unit_breaker_conf();
	br = breaker_new(&c, 1000, 1);
	for (i = 0; i < 3; i++)
		ck_assert(
		    unit_breaker_attempt(br, 1000, true, BREAKER_ERR_OTHER));
	for (i = 0; i < 4; i++)
		ck_assert(
		    unit_breaker_attempt(br, 1001, false, BREAKER_ERR_REFUSED));
	breaker_force_open(br, 0, 1002);
	breaker_admit(br, 1003, &t);
	memset(&before, 0, sizeof(before));
	breaker_snapshot(br, 1004, &st);
	stats_from_breaker(&before, &st, 0);
	breaker_reset(br, 1005);
	memset(&after, 0, sizeof(after));
	breaker_snapshot(br, 1006, &st);
	stats_from_breaker(&after, &st, 0);
	for (i = 0; i < UC_COUNT; i++) {
		if (!stats_counters[i].from_breaker)
			continue;
		if (stats_counters[i].reset == STATS_CLEARED) {
			ck_assert_msg(before.v[i] != 0, "%s: 0 before",
			    stats_counters[i].json);
			ck_assert_msg(after.v[i] == 0, "%s: not cleared",
			    stats_counters[i].json);
			cleared++;
		} else {
			ck_assert_msg(after.v[i] == before.v[i],
			    "%s: %llu became %llu", stats_counters[i].json,
			    (unsigned long long)before.v[i],
			    (unsigned long long)after.v[i]);
			kept++;
		}
	}
	ck_assert_uint_eq(cleared, 3);
	ck_assert_uint_gt(kept, 10);
	ck_assert_uint_eq(after.v[UC_attempts_total], 7);
	ck_assert_uint_eq(after.v[UC_failures_refused], 4);
	ck_assert_uint_eq(after.v[UC_rejected_forced_open], 1);
	ck_assert_int_eq(after.state, BREAKER_CLOSED);
	ck_assert_uint_eq(after.nchanges, 2);
	ck_assert_int_eq(after.changes[0].reason, BREAKER_REASON_MANUAL);
	ck_assert_int_eq(after.changes[0].at_ms, 1005);
	breaker_free(br);
}
END_TEST

/* The list is well formed: families consecutive, HELP on their first row. */
START_TEST(test_list_shape)
{
	unsigned i, j;

	for (i = 0; i < UC_COUNT; i++) {
		const struct stats_counter *c = &stats_counters[i];

		ck_assert_ptr_nonnull(c->json);
		if (c->metric == NULL)
			continue;
		if (i == 0 || stats_counters[i - 1].metric == NULL ||
		    strcmp(stats_counters[i - 1].metric, c->metric) != 0) {
			ck_assert_msg(c->help != NULL, "%s: no help", c->json);
			for (j = 0; j < i; j++)
				ck_assert_msg(stats_counters[j].metric ==
					    NULL ||
					strcmp(stats_counters[j].metric,
					    c->metric) != 0,
				    "%s: family split", c->metric);
		}
		if (strcmp(c->type, "counter") == 0)
			ck_assert_msg(strlen(c->metric) > 6 &&
				strcmp(c->metric + strlen(c->metric) - 6,
				    "_total") == 0,
			    "%s: a counter not named _total", c->metric);
	}
}
END_TEST

/* The renderings and the counter list. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_ROWS("render", test_render, renders),
		UNIT_ROWS("render", test_json_retry_after, retry_rows),
		UNIT_TEST("render", test_prometheus),
		UNIT_TEST("render", test_hist_bucket),
		UNIT_TEST("render", test_pool),
		UNIT_TEST("render", test_reset_column),
		UNIT_TEST("render", test_list_shape),
	};

	return unit_suite_new("stats", tests, UNIT_NROWS(tests));
}
