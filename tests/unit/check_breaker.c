/*
 * Check suite for the breaker (SPEC.md section 4): one test per transition
 * and edge, a reference model driven beside it by random event sequences,
 * and threads hammering one breaker.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "unit.h"

#define T0 1000000 /* a start time that is a whole number of buckets */
#define MAX_TR 64

/* The transitions a breaker reported, in order. */
struct trlog {
	int n;
	struct breaker_transition tr[MAX_TR];
};

/* Return the config the tests start from: SPEC.md's defaults. */
static struct breaker_conf
conf_default(void)
{
	struct breaker_conf c;

	memset(&c, 0, sizeof(c));
	c.failure_threshold = 5;
	c.failure_rate_threshold = 0;
	c.window_calls = 20;
	c.minimum_calls = 10;
	c.recovery_timeout_ms = 30000;
	c.recovery_backoff = 1;
	c.recovery_timeout_max_ms = 600000;
	c.half_open_max_calls = 3;
	c.success_threshold = 2;
	return c;
}

/* Append one transition to the log the callback was given. */
static void
trlog_cb(const struct breaker_transition *tr, void *arg)
{
	struct trlog *l = arg;

	if (l->n < MAX_TR)
		l->tr[l->n] = *tr;
	l->n++;
}

/* Create a breaker at T0 that reports its transitions into l. */
static struct breaker *
mk(const struct breaker_conf *c, struct trlog *l)
{
	struct breaker *b = breaker_new(c, T0, 42);

	if (l != NULL) {
		memset(l, 0, sizeof(*l));
		breaker_set_callback(b, trlog_cb, l);
	}
	return b;
}

/* Admit one client and return its ticket. */
static struct breaker_ticket
admit(struct breaker *b, uint64_t now)
{
	struct breaker_ticket t;

	memset(&t, 0xa5, sizeof(t));
	breaker_admit(b, now, &t);
	return t;
}

/* Admit one client, which must be let through, and record a failure. */
static void
rec_fail(struct breaker *b, uint64_t now, enum breaker_error err)
{
	struct breaker_ticket t = admit(b, now);

	ck_assert(t.admitted);
	breaker_record(b, &t, false, err, now);
}

/* Admit one client, which must be let through, and record a success. */
static void
rec_ok(struct breaker *b, uint64_t now)
{
	struct breaker_ticket t = admit(b, now);

	ck_assert(t.admitted);
	breaker_record(b, &t, true, BREAKER_ERR_OTHER, now);
}

/* Return the breaker's state as of now. */
static enum breaker_state
state(struct breaker *b, uint64_t now)
{
	struct breaker_stats st;

	breaker_snapshot(b, now, &st);
	return st.state;
}

/* Check one transition's from, to and reason. */
static void
ck_tr(const struct trlog *l, int i, enum breaker_state from,
    enum breaker_state to, enum breaker_reason reason)
{
	ck_assert_int_gt(l->n, i);
	ck_assert_str_eq(breaker_state_name(l->tr[i].from),
	    breaker_state_name(from));
	ck_assert_str_eq(breaker_state_name(l->tr[i].to),
	    breaker_state_name(to));
	ck_assert_str_eq(breaker_reason_name(l->tr[i].reason),
	    breaker_reason_name(reason));
}

/* Trip a breaker with the default config open at now. */
static void
trip(struct breaker *b, uint64_t now, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		rec_fail(b, now, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, now), BREAKER_OPEN);
}

/* The names are the ones the logs and STATS use. */
START_TEST(test_names)
{
	ck_assert_str_eq(breaker_state_name(BREAKER_CLOSED), "closed");
	ck_assert_str_eq(breaker_state_name(BREAKER_OPEN), "open");
	ck_assert_str_eq(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
	ck_assert_str_eq(breaker_state_name(BREAKER_FORCED_OPEN),
	    "forced_open");
	ck_assert_str_eq(breaker_state_name(BREAKER_FORCED_CLOSED),
	    "forced_closed");
	ck_assert_str_eq(breaker_error_name(BREAKER_ERR_REFUSED), "refused");
	ck_assert_str_eq(breaker_error_name(BREAKER_ERR_TIMEOUT), "timeout");
	ck_assert_str_eq(breaker_error_name(BREAKER_ERR_UNREACHABLE),
	    "unreachable");
	ck_assert_str_eq(breaker_error_name(BREAKER_ERR_EARLY_CLOSE),
	    "early_close");
	ck_assert_str_eq(breaker_error_name(BREAKER_ERR_SLOW), "slow");
	ck_assert_str_eq(breaker_error_name(BREAKER_ERR_OTHER), "other");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_NONE), "none");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_CONSECUTIVE),
	    "consecutive_failures");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_RATE),
	    "failure_rate");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_HALF_OPEN_FAILURE),
	    "half_open_failure");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_TRIALS_SUCCEEDED),
	    "trials_succeeded");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_MANUAL), "manual");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_EXPIRED),
	    "expired");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_RECOVERY_TIMEOUT),
	    "recovery_timeout");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_PROBES_SUCCEEDED),
	    "probes_succeeded");
	ck_assert_str_eq(breaker_state_name(BREAKER_STATE_COUNT), "unknown");
	ck_assert_str_eq(breaker_error_name(BREAKER_ERR_COUNT), "unknown");
	ck_assert_str_eq(breaker_reason_name(BREAKER_REASON_COUNT), "unknown");
}
END_TEST

/*
 * A connect's errno names its failure (SPEC 4): refused (a gone unix path
 * too), timeout, unreachable for host and network, other for the rest.
 */
START_TEST(test_error_from_errno)
{
	static const struct {
		int error;
		enum breaker_error kind;
	} rows[] = {
		{ ECONNREFUSED, BREAKER_ERR_REFUSED },
		{ ENOENT, BREAKER_ERR_REFUSED },
		{ ETIMEDOUT, BREAKER_ERR_TIMEOUT },
		{ EHOSTUNREACH, BREAKER_ERR_UNREACHABLE },
		{ ENETUNREACH, BREAKER_ERR_UNREACHABLE },
		{ EHOSTDOWN, BREAKER_ERR_UNREACHABLE },
		{ ENETDOWN, BREAKER_ERR_UNREACHABLE },
		{ ECONNRESET, BREAKER_ERR_OTHER },
		{ EACCES, BREAKER_ERR_OTHER },
		{ EAFNOSUPPORT, BREAKER_ERR_OTHER },
		{ 0, BREAKER_ERR_OTHER },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_msg(breaker_error_from_errno(rows[i].error) ==
			rows[i].kind,
		    "errno %d: %s, not %s", rows[i].error,
		    breaker_error_name(breaker_error_from_errno(rows[i].error)),
		    breaker_error_name(rows[i].kind));
}
END_TEST

/*
 * STATS "transitions": the last BREAKER_HISTORY changes, newest first, each
 * with its time and reason; older ones fall out, repeated forces are no
 * change.
 */
START_TEST(test_history)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_stats st;
	uint64_t t = T0;
	int i;

	breaker_snapshot(b, t, &st);
	ck_assert_uint_eq(st.nchanges, 0);
	for (i = 0; i < 5; i++)
		rec_fail(b, t, BREAKER_ERR_REFUSED);
	t += 30000;
	breaker_tick(b, t);
	rec_ok(b, t + 1);
	rec_ok(b, t + 2);
	breaker_snapshot(b, t + 3, &st);
	ck_assert_uint_eq(st.nchanges, 3);
	ck_assert_int_eq(st.changes[0].from, BREAKER_HALF_OPEN);
	ck_assert_int_eq(st.changes[0].to, BREAKER_CLOSED);
	ck_assert_int_eq(st.changes[0].reason, BREAKER_REASON_TRIALS_SUCCEEDED);
	ck_assert_uint_eq(st.changes[0].at_ms, t + 2);
	ck_assert_int_eq(st.changes[1].to, BREAKER_HALF_OPEN);
	ck_assert_int_eq(st.changes[1].reason, BREAKER_REASON_RECOVERY_TIMEOUT);
	ck_assert_uint_eq(st.changes[1].at_ms, t);
	ck_assert_int_eq(st.changes[2].from, BREAKER_CLOSED);
	ck_assert_int_eq(st.changes[2].to, BREAKER_OPEN);
	ck_assert_int_eq(st.changes[2].reason, BREAKER_REASON_CONSECUTIVE);
	ck_assert_uint_eq(st.changes[2].at_ms, T0);

	/* 20 more changes: only the newest 16 are kept. */
	for (i = 0; i < 10; i++) {
		breaker_force_open(b, 0, t + 10 + 2 * (uint64_t)i);
		breaker_force_open(b, 0, t + 10 + 2 * (uint64_t)i);
		breaker_reset(b, t + 11 + 2 * (uint64_t)i);
	}
	breaker_snapshot(b, t + 100, &st);
	ck_assert_uint_eq(st.nchanges, BREAKER_HISTORY);
	ck_assert_int_eq(st.changes[0].to, BREAKER_CLOSED);
	ck_assert_int_eq(st.changes[0].reason, BREAKER_REASON_MANUAL);
	ck_assert_uint_eq(st.changes[0].at_ms, t + 29);
	ck_assert_int_eq(st.changes[1].to, BREAKER_FORCED_OPEN);
	ck_assert_uint_eq(st.changes[1].at_ms, t + 28);
	ck_assert_uint_eq(st.changes[15].at_ms, t + 14);
	breaker_free(b);
}
END_TEST

/* A new breaker is closed, admits, and has an empty window. */
START_TEST(test_new_closed)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_stats st;
	struct breaker_ticket t;

	t = admit(b, T0);
	ck_assert(t.admitted);
	ck_assert_int_eq(t.verdict, BREAKER_ADMITTED);
	ck_assert_int_eq(t.state, BREAKER_CLOSED);
	ck_assert(!t.trial);
	ck_assert_int_eq(t.retry_after_ms, -1);
	ck_assert_int_eq(breaker_retry_after(b, T0), -1);
	ck_assert_uint_eq(breaker_next_deadline(b), 0);
	breaker_snapshot(b, T0, &st);
	ck_assert_int_eq(st.state, BREAKER_CLOSED);
	ck_assert_uint_eq(st.state_since_ms, T0);
	ck_assert_int_eq(st.retry_after_ms, -1);
	ck_assert_uint_eq(st.recovery_timeout_ms, 30000);
	ck_assert_uint_eq(st.window_attempts, 0);
	ck_assert(st.failure_rate == 0.0);
	ck_assert(st.success_rate == 1.0);
	ck_assert_uint_eq(st.attempts_total, 0);
	breaker_free(b);
}
END_TEST

/* failure_threshold - 1 failures keep it closed; the next one opens it. */
START_TEST(test_consecutive_threshold)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);
	struct breaker_stats st;
	int i;

	for (i = 0; i < 4; i++)
		rec_fail(b, T0 + i, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0 + 4), BREAKER_CLOSED);
	ck_assert_int_eq(l.n, 0);
	rec_fail(b, T0 + 4, BREAKER_ERR_TIMEOUT);
	ck_assert_int_eq(l.n, 1);
	ck_tr(&l, 0, BREAKER_CLOSED, BREAKER_OPEN, BREAKER_REASON_CONSECUTIVE);
	ck_assert_uint_eq(l.tr[0].consecutive_failures, 5);
	ck_assert_uint_eq(l.tr[0].window_attempts, 5);
	ck_assert_uint_eq(l.tr[0].window_failures, 5);
	ck_assert_int_eq(l.tr[0].retry_after_ms, 30000);
	ck_assert_uint_eq(l.tr[0].now_ms, T0 + 4);
	breaker_snapshot(b, T0 + 4, &st);
	ck_assert_uint_eq(st.opened_total, 1);
	ck_assert_uint_eq(st.state_since_ms, T0 + 4);
	ck_assert_uint_eq(st.failures_total, 5);
	breaker_free(b);
}
END_TEST

/* Any success resets the consecutive count. */
START_TEST(test_success_resets_consecutive)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_stats st;
	int i;

	for (i = 0; i < 4; i++)
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
	rec_ok(b, T0);
	breaker_snapshot(b, T0, &st);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	for (i = 0; i < 4; i++)
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
	breaker_snapshot(b, T0, &st);
	ck_assert_int_eq(st.state, BREAKER_CLOSED);
	ck_assert_uint_eq(st.consecutive_failures, 4);
	ck_assert_uint_eq(st.window_failures, 8);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0), BREAKER_OPEN);
	breaker_free(b);
}
END_TEST

/* failure_threshold 0 turns the consecutive rule off. */
START_TEST(test_consecutive_off)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	int i;

	c.failure_threshold = 0;
	c.failure_rate_threshold = 50;
	c.minimum_calls = 100;
	c.window_calls = 100;
	b = mk(&c, NULL);
	for (i = 0; i < 99; i++)
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0), BREAKER_CLOSED);
	breaker_free(b);
}
END_TEST

/* The rate is not judged on fewer than minimum_calls attempts. */
START_TEST(test_rate_too_few_calls)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b;
	int i;

	c.failure_threshold = 0;
	c.failure_rate_threshold = 50;
	b = mk(&c, &l);
	for (i = 0; i < 9; i++)
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0), BREAKER_CLOSED);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0), BREAKER_OPEN);
	ck_tr(&l, 0, BREAKER_CLOSED, BREAKER_OPEN, BREAKER_REASON_RATE);
	ck_assert_uint_eq(l.tr[0].window_attempts, 10);
	breaker_free(b);
}
END_TEST

/* Feed nf failures then ns successes; return the state after. */
static enum breaker_state
rate_run(double threshold, int nf, int ns)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	enum breaker_state s;
	int i;

	c.failure_threshold = 0;
	c.failure_rate_threshold = threshold;
	c.window_calls = 10;
	c.minimum_calls = 10;
	b = mk(&c, NULL);
	for (i = 0; i < nf; i++)
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
	for (i = 0; i < ns; i++)
		rec_ok(b, T0);
	s = state(b, T0);
	breaker_free(b);
	return s;
}

/* Below the rate stays closed; at and above it opens, judged on a success. */
START_TEST(test_rate_below_at_above)
{
	ck_assert_int_eq(rate_run(50, 4, 6), BREAKER_CLOSED);
	ck_assert_int_eq(rate_run(50, 5, 5), BREAKER_OPEN);
	ck_assert_int_eq(rate_run(50, 6, 4), BREAKER_OPEN);
	ck_assert_int_eq(rate_run(12.5, 1, 9), BREAKER_CLOSED);
	ck_assert_int_eq(rate_run(10, 1, 9), BREAKER_OPEN);
	/* Five failures with only four calls more: too few to judge. */
	ck_assert_int_eq(rate_run(50, 5, 4), BREAKER_CLOSED);
	ck_assert_int_eq(rate_run(100, 9, 1), BREAKER_CLOSED);
	ck_assert_int_eq(rate_run(100, 10, 0), BREAKER_OPEN);
}
END_TEST

/* When both rules fire on one outcome the reason is consecutive_failures. */
START_TEST(test_both_rules_at_once)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b;

	c.failure_threshold = 3;
	c.failure_rate_threshold = 50;
	c.minimum_calls = 3;
	b = mk(&c, &l);
	trip(b, T0, 3);
	ck_tr(&l, 0, BREAKER_CLOSED, BREAKER_OPEN, BREAKER_REASON_CONSECUTIVE);
	breaker_free(b);
}
END_TEST

/* A count window forgets the oldest outcome when it is full. */
START_TEST(test_window_count_eviction)
{
	struct breaker_conf c = conf_default();
	struct breaker_stats st;
	struct breaker *b;

	c.failure_threshold = 0;
	c.failure_rate_threshold = 75;
	c.window_calls = 4;
	c.minimum_calls = 4;
	b = mk(&c, NULL);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	rec_ok(b, T0);
	rec_ok(b, T0);
	rec_ok(b, T0); /* [F S S S] */
	rec_ok(b, T0); /* [S S S S] */
	breaker_snapshot(b, T0, &st);
	ck_assert_uint_eq(st.window_attempts, 4);
	ck_assert_uint_eq(st.window_failures, 0);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	rec_fail(b, T0, BREAKER_ERR_REFUSED); /* [S S F F]: 50% */
	breaker_snapshot(b, T0, &st);
	ck_assert_int_eq(st.state, BREAKER_CLOSED);
	ck_assert_uint_eq(st.window_failures, 2);
	ck_assert(st.failure_rate == 0.5);
	ck_assert(st.success_rate == 0.5);
	rec_fail(b, T0, BREAKER_ERR_REFUSED); /* [S F F F]: 75% */
	ck_assert_int_eq(state(b, T0), BREAKER_OPEN);
	breaker_free(b);
}
END_TEST

/* A duration window drops outcomes bucket by bucket (20 of 500 ms here). */
START_TEST(test_window_time_eviction)
{
	struct breaker_conf c = conf_default();
	struct breaker_stats st;
	struct breaker *b;

	c.failure_threshold = 0;
	c.failure_rate_threshold = 70;
	c.window_ms = 10000;
	c.minimum_calls = 3;
	b = mk(&c, NULL);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	rec_fail(b, T0 + 499, BREAKER_ERR_REFUSED); /* same bucket */
	rec_ok(b, T0 + 500);
	breaker_snapshot(b, T0 + 9999, &st);
	ck_assert_uint_eq(st.window_attempts, 3);
	ck_assert_uint_eq(st.window_failures, 2);
	breaker_snapshot(b, T0 + 10000, &st);
	ck_assert_uint_eq(st.window_attempts, 1);
	ck_assert_uint_eq(st.window_failures, 0);
	/* With the two failures still in, this one would open it. */
	rec_fail(b, T0 + 10000, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0 + 10000), BREAKER_CLOSED);
	breaker_snapshot(b, T0 + 10500, &st);
	ck_assert_uint_eq(st.window_attempts, 1);
	/* A long silence empties it whole. */
	breaker_snapshot(b, T0 + 1000000, &st);
	ck_assert_uint_eq(st.window_attempts, 0);
	ck_assert(st.success_rate == 1.0);
	rec_fail(b, T0 + 1000000, BREAKER_ERR_REFUSED);
	rec_fail(b, T0 + 1000001, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0 + 1000001), BREAKER_CLOSED);
	rec_fail(b, T0 + 1000002, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0 + 1000002), BREAKER_OPEN);
	breaker_free(b);
}
END_TEST

/* A duration shorter than 20 ms gets 1 ms buckets, as many as it spans. */
START_TEST(test_window_time_small)
{
	struct breaker_conf c = conf_default();
	struct breaker_stats st;
	struct breaker *b;

	c.failure_threshold = 0;
	c.failure_rate_threshold = 50;
	c.window_ms = 5;
	c.minimum_calls = 100;
	b = mk(&c, NULL);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	rec_fail(b, T0 + 4, BREAKER_ERR_REFUSED);
	breaker_snapshot(b, T0 + 4, &st);
	ck_assert_uint_eq(st.window_attempts, 2);
	breaker_snapshot(b, T0 + 5, &st);
	ck_assert_uint_eq(st.window_attempts, 1);
	breaker_snapshot(b, T0 + 9, &st);
	ck_assert_uint_eq(st.window_attempts, 0);
	breaker_free(b);
}
END_TEST

/* An open circuit rejects with the time left and counts the rejects. */
START_TEST(test_open_rejects)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_stats st;
	struct breaker_ticket t;

	trip(b, T0, 5);
	t = admit(b, T0 + 1000);
	ck_assert(!t.admitted);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_OPEN);
	ck_assert_int_eq(t.state, BREAKER_OPEN);
	ck_assert_int_eq(t.retry_after_ms, 29000);
	t = admit(b, T0 + 29999);
	ck_assert_int_eq(t.retry_after_ms, 1);
	breaker_snapshot(b, T0 + 29999, &st);
	ck_assert_uint_eq(st.rejected_open, 2);
	ck_assert_uint_eq(st.rejected_total, 2);
	ck_assert_uint_eq(st.attempts_total, 5);
	ck_assert_int_eq(st.retry_after_ms, 1);
	ck_assert_uint_eq(st.recovery_timeout_ms, 30000);
	breaker_free(b);
}
END_TEST

/* breaker_tick moves open to half_open exactly at the deadline. */
START_TEST(test_tick_deadline)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);

	trip(b, T0, 5);
	ck_assert_uint_eq(breaker_next_deadline(b), T0 + 30000);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 10000), 20000);
	breaker_tick(b, T0 + 29999);
	ck_assert_int_eq(l.n, 1);
	breaker_tick(b, T0 + 30000);
	ck_assert_int_eq(l.n, 2);
	ck_tr(&l, 1, BREAKER_OPEN, BREAKER_HALF_OPEN,
	    BREAKER_REASON_RECOVERY_TIMEOUT);
	ck_assert_int_eq(l.tr[1].retry_after_ms, 0);
	ck_assert_uint_eq(l.tr[1].now_ms, T0 + 30000);
	ck_assert_uint_eq(breaker_next_deadline(b), 0);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 30001), 0);
	breaker_tick(b, T0 + 90000);
	ck_assert_int_eq(l.n, 2);
	breaker_free(b);
}
END_TEST

/* Without a tick, the first admit after the deadline finds half_open. */
START_TEST(test_admit_applies_due)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);
	struct breaker_ticket t;

	trip(b, T0, 5);
	t = admit(b, T0 + 45000);
	ck_assert(t.admitted);
	ck_assert(t.trial);
	ck_assert_int_eq(t.state, BREAKER_HALF_OPEN);
	ck_assert_int_eq(l.n, 2);
	ck_assert_uint_eq(l.tr[1].now_ms, T0 + 45000);
	breaker_free(b);
}
END_TEST

/* half_open admits half_open_max_calls trials, then rejects. */
START_TEST(test_half_open_slots)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_ticket t;
	struct breaker_stats st;
	int i;

	trip(b, T0, 5);
	breaker_tick(b, T0 + 30000);
	for (i = 0; i < 3; i++) {
		t = admit(b, T0 + 30000);
		ck_assert(t.admitted);
		ck_assert(t.trial);
		ck_assert_int_eq(t.verdict, BREAKER_ADMITTED);
	}
	t = admit(b, T0 + 30001);
	ck_assert(!t.admitted);
	ck_assert(!t.trial);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_HALF_OPEN);
	ck_assert_int_eq(t.retry_after_ms, 0);
	breaker_snapshot(b, T0 + 30001, &st);
	ck_assert_uint_eq(st.rejected_half_open, 1);
	ck_assert_uint_eq(st.rejected_total, 1);
	ck_assert_int_eq(st.retry_after_ms, 0);
	breaker_free(b);
}
END_TEST

/* success_threshold trial successes close it and clear what it carried. */
START_TEST(test_half_open_success_closes)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b;
	struct breaker_ticket t1, t2;
	struct breaker_stats st;

	c.recovery_backoff = 2;
	b = mk(&c, &l);
	trip(b, T0, 5);
	breaker_tick(b, T0 + 30000);
	rec_fail(b, T0 + 30000, BREAKER_ERR_REFUSED); /* backoff step 1 */
	breaker_tick(b, T0 + 90000);
	t1 = admit(b, T0 + 90000);
	t2 = admit(b, T0 + 90000);
	breaker_record(b, &t1, true, BREAKER_ERR_OTHER, T0 + 90001);
	ck_assert_int_eq(state(b, T0 + 90001), BREAKER_HALF_OPEN);
	breaker_record(b, &t2, true, BREAKER_ERR_OTHER, T0 + 90002);
	ck_assert_int_eq(l.n, 5);
	ck_tr(&l, 4, BREAKER_HALF_OPEN, BREAKER_CLOSED,
	    BREAKER_REASON_TRIALS_SUCCEEDED);
	ck_assert_int_eq(l.tr[4].retry_after_ms, -1);
	ck_assert_uint_eq(l.tr[4].window_attempts, 0);
	breaker_snapshot(b, T0 + 90002, &st);
	ck_assert_int_eq(st.state, BREAKER_CLOSED);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	ck_assert_uint_eq(st.window_attempts, 0);
	ck_assert_uint_eq(st.recovery_timeout_ms, 30000); /* backoff gone */
	ck_assert_uint_eq(st.opened_total, 2);
	/* The next trip opens for the base timeout again. */
	trip(b, T0 + 100000, 5);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 100000), 30000);
	breaker_free(b);
}
END_TEST

/* One trial failure opens it again, for the backed-off time. */
START_TEST(test_half_open_failure_reopens)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b;
	struct breaker_ticket t1, t2;
	struct breaker_stats st;

	c.recovery_backoff = 1.5;
	b = mk(&c, &l);
	trip(b, T0, 5);
	breaker_tick(b, T0 + 30000);
	t1 = admit(b, T0 + 30000);
	t2 = admit(b, T0 + 30000);
	breaker_record(b, &t1, true, BREAKER_ERR_OTHER, T0 + 30001);
	breaker_snapshot(b, T0 + 30001, &st);
	ck_assert_uint_eq(st.recovery_timeout_ms, 45000); /* if this fails */
	breaker_record(b, &t2, false, BREAKER_ERR_TIMEOUT, T0 + 30002);
	ck_assert_int_eq(l.n, 3);
	ck_tr(&l, 2, BREAKER_HALF_OPEN, BREAKER_OPEN,
	    BREAKER_REASON_HALF_OPEN_FAILURE);
	ck_assert_int_eq(l.tr[2].retry_after_ms, 45000);
	breaker_snapshot(b, T0 + 30002, &st);
	ck_assert_uint_eq(st.opened_total, 2);
	ck_assert_uint_eq(st.recovery_timeout_ms, 45000);
	ck_assert_uint_eq(breaker_next_deadline(b), T0 + 30002 + 45000);
	/* The next period starts with no trial successes. */
	t1 = admit(b, T0 + 75002);
	breaker_record(b, &t1, true, BREAKER_ERR_OTHER, T0 + 75002);
	ck_assert_int_eq(state(b, T0 + 75002), BREAKER_HALF_OPEN);
	breaker_free(b);
}
END_TEST

/* Fail one trial at now and return the open duration that follows. */
static int64_t
fail_trial(struct breaker *b, uint64_t *now)
{
	int64_t r;

	*now += (uint64_t)breaker_retry_after(b, *now);
	rec_fail(b, *now, BREAKER_ERR_REFUSED);
	r = breaker_retry_after(b, *now);
	ck_assert_int_eq(state(b, *now), BREAKER_OPEN);
	return r;
}

/* The open duration doubles per failed trial up to the cap. */
START_TEST(test_backoff_growth_and_cap)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	uint64_t now = T0;

	c.recovery_timeout_ms = 1000;
	c.recovery_backoff = 2;
	c.recovery_timeout_max_ms = 5000;
	b = mk(&c, NULL);
	trip(b, now, 5);
	ck_assert_int_eq(breaker_retry_after(b, now), 1000);
	ck_assert_int_eq(fail_trial(b, &now), 2000);
	ck_assert_int_eq(fail_trial(b, &now), 4000);
	ck_assert_int_eq(fail_trial(b, &now), 5000);
	ck_assert_int_eq(fail_trial(b, &now), 5000);
	breaker_free(b);
}
END_TEST

/* A cap below recovery_timeout caps the first opening too. */
START_TEST(test_backoff_cap_below_base)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;

	c.recovery_timeout_max_ms = 1000;
	b = mk(&c, NULL);
	trip(b, T0, 5);
	ck_assert_int_eq(breaker_retry_after(b, T0), 1000);
	breaker_free(b);
}
END_TEST

/* Draw n open durations from a breaker with jitter; store them in d. */
static void
jitter_draws(uint64_t seed, int64_t *d, int n)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	int i;

	c.recovery_timeout_ms = 10000;
	c.recovery_jitter = 20;
	c.failure_threshold = 1;
	b = breaker_new(&c, T0, seed);
	for (i = 0; i < n; i++) {
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
		d[i] = breaker_retry_after(b, T0);
		breaker_reset(b, T0);
	}
	breaker_free(b);
}

/* Jitter stays within +-recovery_jitter, varies, and follows the seed. */
START_TEST(test_jitter_bounds)
{
	enum { N = 2000 };
	static int64_t a[N], a2[N], z[N];
	int64_t lo = INT64_MAX, hi = 0;
	int i, same = 0, distinct = 0;

	jitter_draws(7, a, N);
	jitter_draws(7, a2, N);
	jitter_draws(8, z, N);
	for (i = 0; i < N; i++) {
		ck_assert_int_ge(a[i], 8000);
		ck_assert_int_le(a[i], 12000);
		lo = a[i] < lo ? a[i] : lo;
		hi = a[i] > hi ? a[i] : hi;
		ck_assert_int_eq(a[i], a2[i]);
		same += a[i] == z[i];
		distinct += i == 0 || a[i] != a[i - 1];
	}
	/* Uniform over 4001 values: 2000 draws reach near both ends. */
	ck_assert_int_lt(lo, 8100);
	ck_assert_int_gt(hi, 11900);
	ck_assert_int_gt(distinct, N / 2);
	ck_assert_int_lt(same, N / 10);
}
END_TEST

/* Jitter applies after the cap, and 100% can reach zero but not below. */
START_TEST(test_jitter_after_cap)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	int64_t r;
	int i;

	c.failure_threshold = 1;
	c.recovery_timeout_ms = 1000;
	c.recovery_timeout_max_ms = 100;
	c.recovery_jitter = 100;
	b = breaker_new(&c, T0, 1);
	for (i = 0; i < 500; i++) {
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
		r = breaker_retry_after(b, T0);
		ck_assert_int_ge(r, 0);
		ck_assert_int_le(r, 200);
		breaker_reset(b, T0);
	}
	breaker_free(b);
}
END_TEST

/* A small spread reaches both of its ends. */
START_TEST(test_jitter_ends)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	int seen[3] = { 0, 0, 0 };
	int64_t r;
	int i;

	c.failure_threshold = 1;
	c.recovery_timeout_ms = 10;
	c.recovery_jitter = 10;
	b = breaker_new(&c, T0, 99);
	for (i = 0; i < 300; i++) {
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
		r = breaker_retry_after(b, T0);
		ck_assert_int_ge(r, 9);
		ck_assert_int_le(r, 11);
		seen[r - 9]++;
		breaker_reset(b, T0);
	}
	ck_assert_int_gt(seen[0], 0);
	ck_assert_int_gt(seen[1], 0);
	ck_assert_int_gt(seen[2], 0);
	breaker_free(b);
}
END_TEST

/* record applies a due expiry first, so its outcome lands after it. */
START_TEST(test_record_applies_due)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);
	struct breaker_ticket t;
	struct breaker_stats st;

	breaker_force_closed(b, 1000, T0);
	t = admit(b, T0);
	breaker_record(b, &t, false, BREAKER_ERR_REFUSED, T0 + 1000);
	ck_assert_int_eq(l.n, 2);
	ck_assert_uint_eq(l.tr[1].now_ms, T0 + 1000);
	breaker_snapshot(b, T0 + 5000, &st);
	ck_assert_uint_eq(st.failures_total, 1);
	ck_assert_uint_eq(st.window_attempts, 0);
	breaker_free(b);
}
END_TEST

/* An outcome from an ended period counts in totals only. */
START_TEST(test_late_outcome)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_ticket old, trial;
	struct breaker_stats st;

	old = admit(b, T0);
	trip(b, T0, 5);
	breaker_record(b, &old, false, BREAKER_ERR_UNREACHABLE, T0 + 1);
	breaker_snapshot(b, T0 + 1, &st);
	ck_assert_uint_eq(st.attempts_total, 6);
	ck_assert_uint_eq(st.failures_by_error[BREAKER_ERR_UNREACHABLE], 1);
	ck_assert_uint_eq(st.consecutive_failures, 5);
	ck_assert_uint_eq(st.window_attempts, 5);

	/* A trial of an ended half_open period cannot close a later one. */
	old = admit(b, T0 + 30000); /* the tick happens here: a trial */
	ck_assert(old.trial);
	breaker_record(b, &old, false, BREAKER_ERR_REFUSED, T0 + 30000);
	ck_assert_int_eq(state(b, T0 + 30000), BREAKER_OPEN);
	breaker_tick(b, T0 + 60000);
	trial = admit(b, T0 + 60000);
	breaker_record(b, &trial, true, BREAKER_ERR_OTHER, T0 + 60000);
	/* the first period's trial ticket, even reported twice */
	breaker_record(b, &old, true, BREAKER_ERR_OTHER, T0 + 60001);
	breaker_record(b, &old, true, BREAKER_ERR_OTHER, T0 + 60001);
	ck_assert_int_eq(state(b, T0 + 60001), BREAKER_HALF_OPEN);
	breaker_snapshot(b, T0 + 60001, &st);
	ck_assert_uint_eq(st.successes_total, 3);
	ck_assert_uint_eq(st.attempts_total, 10);
	breaker_free(b);
}
END_TEST

/* force-open rejects everything until reset; not counted as opened. */
START_TEST(test_forced_open)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);
	struct breaker_ticket t;
	struct breaker_stats st;

	breaker_force_open(b, 0, T0);
	ck_tr(&l, 0, BREAKER_CLOSED, BREAKER_FORCED_OPEN,
	    BREAKER_REASON_MANUAL);
	ck_assert_int_eq(l.tr[0].retry_after_ms, -1);
	t = admit(b, T0 + 1000000000);
	ck_assert(!t.admitted);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_FORCED_OPEN);
	ck_assert_int_eq(t.retry_after_ms, -1);
	ck_assert_uint_eq(breaker_next_deadline(b), 0);
	breaker_snapshot(b, T0 + 1000000000, &st);
	ck_assert_int_eq(st.state, BREAKER_FORCED_OPEN);
	ck_assert_uint_eq(st.opened_total, 0);
	ck_assert_uint_eq(st.rejected_forced_open, 1);
	ck_assert_uint_eq(st.rejected_total, 1);
	breaker_reset(b, T0 + 1000000001);
	ck_tr(&l, 1, BREAKER_FORCED_OPEN, BREAKER_CLOSED,
	    BREAKER_REASON_MANUAL);
	ck_assert(admit(b, T0 + 1000000001).admitted);
	breaker_free(b);
}
END_TEST

/* A force with a lifetime ends in closed, window cleared, on its own. */
START_TEST(test_forced_open_lifetime)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);
	struct breaker_ticket t;
	struct breaker_stats st;

	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	breaker_force_open(b, 60000, T0);
	ck_assert_int_eq(l.tr[0].retry_after_ms, 60000);
	ck_assert_uint_eq(breaker_next_deadline(b), T0 + 60000);
	t = admit(b, T0 + 20000);
	ck_assert_int_eq(t.retry_after_ms, 40000);
	breaker_snapshot(b, T0 + 20000, &st);
	ck_assert_int_eq(st.expires_in_ms, 40000);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 59999), 1);
	breaker_tick(b, T0 + 60000);
	ck_assert_int_eq(l.n, 2);
	ck_tr(&l, 1, BREAKER_FORCED_OPEN, BREAKER_CLOSED,
	    BREAKER_REASON_EXPIRED);
	ck_assert_uint_eq(breaker_next_deadline(b), 0);
	breaker_snapshot(b, T0 + 60000, &st);
	ck_assert_uint_eq(st.window_attempts, 0);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	ck_assert_uint_eq(st.attempts_total, 1);
	breaker_free(b);
}
END_TEST

/* force-closed admits through any failure rate, and counts; expiry clears. */
START_TEST(test_forced_closed)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);
	struct breaker_stats st;
	int i;

	trip(b, T0, 5);
	breaker_force_closed(b, 5000, T0 + 1);
	ck_tr(&l, 1, BREAKER_OPEN, BREAKER_FORCED_CLOSED,
	    BREAKER_REASON_MANUAL);
	ck_assert_int_eq(l.tr[1].retry_after_ms, -1);
	for (i = 0; i < 50; i++)
		rec_fail(b, T0 + 2, BREAKER_ERR_SLOW);
	breaker_snapshot(b, T0 + 2, &st);
	ck_assert_int_eq(st.state, BREAKER_FORCED_CLOSED);
	ck_assert_int_eq(st.retry_after_ms, -1);
	ck_assert_int_eq(st.expires_in_ms, 4999);
	ck_assert_uint_eq(st.consecutive_failures, 55);
	ck_assert_uint_eq(st.window_attempts, 20);
	ck_assert_uint_eq(st.failures_by_error[BREAKER_ERR_SLOW], 50);
	ck_assert_uint_eq(breaker_next_deadline(b), T0 + 5001);
	ck_assert(admit(b, T0 + 5000).admitted);
	ck_assert_int_eq(state(b, T0 + 5001), BREAKER_CLOSED);
	ck_tr(&l, 2, BREAKER_FORCED_CLOSED, BREAKER_CLOSED,
	    BREAKER_REASON_EXPIRED);
	breaker_snapshot(b, T0 + 5001, &st);
	ck_assert_int_eq(st.expires_in_ms, -1);
	ck_assert_uint_eq(st.window_attempts, 0);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	ck_assert_uint_eq(st.opened_total, 1);
	breaker_free(b);
}
END_TEST

/* Forcing the state it is already in only renews the lifetime. */
START_TEST(test_force_again)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b = mk(&c, &l);

	breaker_force_open(b, 1000, T0);
	breaker_force_open(b, 5000, T0 + 500);
	ck_assert_int_eq(l.n, 1);
	ck_assert_uint_eq(breaker_next_deadline(b), T0 + 5500);
	breaker_force_open(b, 0, T0 + 600);
	ck_assert_uint_eq(breaker_next_deadline(b), 0);
	ck_assert_int_eq(state(b, T0 + 100000), BREAKER_FORCED_OPEN);
	breaker_force_closed(b, 0, T0 + 100000);
	ck_assert_int_eq(l.n, 2);
	/* An absurd lifetime is clamped, not wrapped round. */
	breaker_force_open(b, UINT64_MAX, T0 + 100000);
	ck_assert_int_gt(breaker_retry_after(b, T0 + 100000), 0);
	ck_assert_uint_gt(breaker_next_deadline(b), T0 + 100000);
	breaker_free(b);
}
END_TEST

/* reset goes back to closed from anywhere and keeps the totals. */
START_TEST(test_reset_keeps_totals)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b;
	struct breaker_stats st;
	struct breaker_ticket t;
	uint64_t now = T0;

	c.recovery_backoff = 2;
	b = mk(&c, &l);
	trip(b, now, 5);
	ck_assert_int_eq(fail_trial(b, &now), 60000);
	ck_assert(!admit(b, now + 100).admitted);
	breaker_reset(b, now + 100);
	ck_assert_int_eq(l.n, 4);
	ck_tr(&l, 3, BREAKER_OPEN, BREAKER_CLOSED, BREAKER_REASON_MANUAL);
	breaker_snapshot(b, now + 100, &st);
	ck_assert_int_eq(st.state, BREAKER_CLOSED);
	ck_assert_uint_eq(st.state_since_ms, now + 100);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	ck_assert_uint_eq(st.window_attempts, 0);
	ck_assert_uint_eq(st.recovery_timeout_ms, 30000);
	ck_assert_uint_eq(st.attempts_total, 6);
	ck_assert_uint_eq(st.failures_total, 6);
	ck_assert_uint_eq(st.rejected_open, 1);
	ck_assert_uint_eq(st.opened_total, 2);

	/* A reset of a closed circuit clears the window but says nothing. */
	t = admit(b, now + 200);
	rec_fail(b, now + 200, BREAKER_ERR_REFUSED);
	breaker_reset(b, now + 300);
	ck_assert_int_eq(l.n, 4);
	breaker_record(b, &t, false, BREAKER_ERR_REFUSED, now + 300);
	breaker_snapshot(b, now + 300, &st);
	ck_assert_uint_eq(st.window_attempts, 0);
	ck_assert_uint_eq(st.consecutive_failures, 0);
	ck_assert_uint_eq(st.state_since_ms, now + 100);
	ck_assert_uint_eq(st.attempts_total, 8);
	breaker_free(b);
}
END_TEST

/* dry_run runs the machine and counts would-be rejects, admitting all. */
START_TEST(test_dry_run)
{
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b;
	struct breaker_ticket t, tr[3];
	struct breaker_stats st;
	int i;

	c.dry_run = true;
	b = mk(&c, &l);
	trip(b, T0, 5);
	t = admit(b, T0 + 1);
	ck_assert(t.admitted);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_OPEN);
	ck_assert_int_eq(t.retry_after_ms, 29999);
	ck_assert(!t.trial);
	breaker_record(b, &t, true, BREAKER_ERR_OTHER, T0 + 2);
	breaker_snapshot(b, T0 + 2, &st);
	ck_assert_int_eq(st.state, BREAKER_OPEN);
	ck_assert_uint_eq(st.consecutive_failures, 5);
	ck_assert_uint_eq(st.rejected_open, 1);
	ck_assert_uint_eq(st.attempts_total, 6);

	breaker_tick(b, T0 + 30000);
	for (i = 0; i < 3; i++) {
		tr[i] = admit(b, T0 + 30000);
		ck_assert(tr[i].trial);
	}
	t = admit(b, T0 + 30000);
	ck_assert(t.admitted);
	ck_assert(!t.trial);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_HALF_OPEN);
	/* The would-be reject's outcome drives nothing, not even a failure. */
	breaker_record(b, &t, false, BREAKER_ERR_REFUSED, T0 + 30001);
	ck_assert_int_eq(state(b, T0 + 30001), BREAKER_HALF_OPEN);
	breaker_record(b, &tr[0], true, BREAKER_ERR_OTHER, T0 + 30001);
	breaker_record(b, &tr[1], true, BREAKER_ERR_OTHER, T0 + 30001);
	ck_assert_int_eq(state(b, T0 + 30001), BREAKER_CLOSED);
	ck_assert_int_eq(l.n, 3);

	breaker_force_open(b, 0, T0 + 30002);
	t = admit(b, T0 + 30002);
	ck_assert(t.admitted);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_FORCED_OPEN);
	breaker_snapshot(b, T0 + 30002, &st);
	ck_assert_uint_eq(st.rejected_total, 3);
	breaker_free(b);
}
END_TEST

/* cancel gives a half_open slot back and counts nothing. */
START_TEST(test_cancel)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	struct breaker_ticket t, t2;
	struct breaker_stats st;

	c.half_open_max_calls = 1;
	c.success_threshold = 1;
	b = mk(&c, NULL);
	t = admit(b, T0);
	breaker_cancel(b, &t); /* closed: nothing to give back */
	trip(b, T0, 5);
	breaker_tick(b, T0 + 30000);
	t = admit(b, T0 + 30000);
	ck_assert(t.trial);
	ck_assert(!admit(b, T0 + 30000).admitted);
	breaker_cancel(b, &t);
	t2 = admit(b, T0 + 30000);
	ck_assert(t2.admitted);
	ck_assert(t2.trial);
	breaker_record(b, &t2, false, BREAKER_ERR_REFUSED, T0 + 30001);
	breaker_tick(b, T0 + 60001);
	t = admit(b, T0 + 60001);
	/* A ticket from an earlier period frees no slot in this one. */
	breaker_cancel(b, &t2);
	ck_assert(!admit(b, T0 + 60001).admitted);
	breaker_snapshot(b, T0 + 60001, &st);
	ck_assert_uint_eq(st.attempts_total, 6);
	ck_assert_uint_eq(st.rejected_half_open, 2);
	breaker_record(b, &t, true, BREAKER_ERR_OTHER, T0 + 60002);
	ck_assert_int_eq(state(b, T0 + 60002), BREAKER_CLOSED);
	breaker_free(b);
}
END_TEST

/* unreject takes back exactly the reject its ticket counted. */
START_TEST(test_unreject)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	struct breaker_ticket t, ok;
	struct breaker_stats st;

	b = mk(&c, NULL);
	ok = admit(b, T0);
	breaker_unreject(b, &ok); /* admitted: nothing to take back */
	trip(b, T0, 5);
	t = admit(b, T0 + 1);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_OPEN);
	admit(b, T0 + 1);
	breaker_snapshot(b, T0 + 1, &st);
	ck_assert_uint_eq(st.rejected_open, 2);
	breaker_unreject(b, &t);
	breaker_snapshot(b, T0 + 1, &st);
	ck_assert_uint_eq(st.rejected_open, 1);
	ck_assert_uint_eq(st.rejected_total, 1);
	ck_assert_int_eq(st.state, BREAKER_OPEN);

	breaker_force_open(b, 0, T0 + 2);
	t = admit(b, T0 + 2);
	breaker_unreject(b, &t);
	breaker_snapshot(b, T0 + 2, &st);
	ck_assert_uint_eq(st.rejected_forced_open, 0);
	ck_assert_uint_eq(st.rejected_total, 1);
	breaker_free(b);
}
END_TEST

/* The callback sees every change of a full cycle, in order. */
START_TEST(test_callback_sequence)
{
	static const struct {
		enum breaker_state from, to;
		enum breaker_reason reason;
		int64_t retry_after;
		uint64_t now;
	} want[] = {
		{ BREAKER_CLOSED, BREAKER_OPEN, BREAKER_REASON_RATE, 1000, T0 },
		{ BREAKER_OPEN, BREAKER_HALF_OPEN,
		    BREAKER_REASON_RECOVERY_TIMEOUT, 0, T0 + 1000 },
		{ BREAKER_HALF_OPEN, BREAKER_OPEN,
		    BREAKER_REASON_HALF_OPEN_FAILURE, 3000, T0 + 1001 },
		{ BREAKER_OPEN, BREAKER_HALF_OPEN,
		    BREAKER_REASON_RECOVERY_TIMEOUT, 0, T0 + 4001 },
		{ BREAKER_HALF_OPEN, BREAKER_CLOSED,
		    BREAKER_REASON_TRIALS_SUCCEEDED, -1, T0 + 4002 },
		{ BREAKER_CLOSED, BREAKER_FORCED_OPEN, BREAKER_REASON_MANUAL,
		    7000, T0 + 5000 },
		{ BREAKER_FORCED_OPEN, BREAKER_CLOSED, BREAKER_REASON_EXPIRED,
		    -1, T0 + 12000 },
		{ BREAKER_CLOSED, BREAKER_FORCED_CLOSED, BREAKER_REASON_MANUAL,
		    -1, T0 + 12001 },
		{ BREAKER_FORCED_CLOSED, BREAKER_CLOSED, BREAKER_REASON_MANUAL,
		    -1, T0 + 12002 },
	};
	struct breaker_conf c = conf_default();
	struct trlog l;
	struct breaker *b;
	int i;

	c.failure_threshold = 0;
	c.failure_rate_threshold = 50;
	c.minimum_calls = 2;
	c.recovery_timeout_ms = 1000;
	c.recovery_backoff = 3;
	c.half_open_max_calls = 1;
	c.success_threshold = 1;
	b = mk(&c, &l);
	rec_ok(b, T0);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	breaker_tick(b, T0 + 1000);
	rec_fail(b, T0 + 1001, BREAKER_ERR_REFUSED);
	breaker_tick(b, T0 + 4001);
	rec_ok(b, T0 + 4002);
	breaker_force_open(b, 7000, T0 + 5000);
	breaker_tick(b, T0 + 12000);
	breaker_force_closed(b, 0, T0 + 12001);
	breaker_reset(b, T0 + 12002);
	ck_assert_int_eq(l.n, 9);
	for (i = 0; i < 9; i++) {
		ck_tr(&l, i, want[i].from, want[i].to, want[i].reason);
		ck_assert_int_eq(l.tr[i].retry_after_ms, want[i].retry_after);
		ck_assert_uint_eq(l.tr[i].now_ms, want[i].now);
	}
	ck_assert_uint_eq(l.tr[0].window_attempts, 2);
	ck_assert_uint_eq(l.tr[0].window_failures, 1);
	ck_assert_uint_eq(l.tr[0].consecutive_failures, 1);
	breaker_free(b);
}
END_TEST

/* retry_after in each state. */
START_TEST(test_retry_after_states)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);

	ck_assert_int_eq(breaker_retry_after(b, T0), -1);
	trip(b, T0, 5);
	ck_assert_int_eq(breaker_retry_after(b, T0), 30000);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 29999), 1);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 30000), 0); /* half_open */
	ck_assert_int_eq(state(b, T0 + 30000), BREAKER_HALF_OPEN);
	breaker_force_open(b, 0, T0 + 30000);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 30000), -1);
	breaker_force_open(b, 2500, T0 + 30000);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 31000), 1500);
	breaker_force_closed(b, 2500, T0 + 31000);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 31000), -1);
	breaker_free(b);
}
END_TEST

/* Each error kind is counted apart; a success ignores the kind. */
START_TEST(test_error_kinds)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	struct breaker_stats st;
	struct breaker_ticket t;
	int e, i;

	c.failure_threshold = 0;
	c.failure_rate_threshold = 100;
	c.minimum_calls = 1000;
	b = mk(&c, NULL);
	for (e = 0; e < BREAKER_ERR_COUNT; e++)
		for (i = 0; i <= e; i++)
			rec_fail(b, T0, (enum breaker_error)e);
	t = admit(b, T0);
	breaker_record(b, &t, false, (enum breaker_error)99, T0);
	t = admit(b, T0);
	breaker_record(b, &t, true, BREAKER_ERR_TIMEOUT, T0);
	breaker_snapshot(b, T0, &st);
	for (e = 0; e < BREAKER_ERR_COUNT - 1; e++)
		ck_assert_uint_eq(st.failures_by_error[e], (unsigned)e + 1);
	ck_assert_uint_eq(st.failures_by_error[BREAKER_ERR_OTHER],
	    BREAKER_ERR_OTHER + 2);
	ck_assert_uint_eq(st.failures_total,
	    BREAKER_ERR_COUNT * (BREAKER_ERR_COUNT + 1) / 2 + 1);
	ck_assert_uint_eq(st.successes_total, 1);
	ck_assert_uint_eq(st.attempts_total,
	    BREAKER_ERR_COUNT * (BREAKER_ERR_COUNT + 1) / 2 + 2);
	breaker_free(b);
}
END_TEST

/* reconfigure keeps state and totals, reshapes the window, new thresholds. */
START_TEST(test_reconfigure)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_stats st;

	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	c.failure_threshold = 3;
	breaker_reconfigure(b, &c, T0);
	breaker_snapshot(b, T0, &st);
	ck_assert_uint_eq(st.window_attempts, 2); /* same shape: kept */
	ck_assert_uint_eq(st.consecutive_failures, 2);
	rec_fail(b, T0, BREAKER_ERR_REFUSED);
	ck_assert_int_eq(state(b, T0), BREAKER_OPEN);

	c.window_calls = 50;
	c.recovery_timeout_ms = 1000;
	breaker_reconfigure(b, &c, T0 + 10);
	breaker_snapshot(b, T0 + 10, &st);
	ck_assert_int_eq(st.state, BREAKER_OPEN);
	ck_assert_uint_eq(st.window_attempts, 0); /* new shape: cleared */
	ck_assert_uint_eq(st.attempts_total, 3);
	ck_assert_uint_eq(st.opened_total, 1);
	/* The running opening keeps its deadline. */
	ck_assert_int_eq(breaker_retry_after(b, T0 + 10), 29990);

	c.window_ms = 1000;
	breaker_reconfigure(b, &c, T0 + 20);
	c.dry_run = true;
	breaker_reconfigure(b, &c, T0 + 20);
	ck_assert(admit(b, T0 + 20).admitted);
	breaker_free(b);
}
END_TEST

/* A time older than one already seen is taken as the latest one. */
START_TEST(test_time_never_goes_back)
{
	struct breaker_conf c = conf_default();
	struct breaker *b = mk(&c, NULL);
	struct breaker_ticket t;

	trip(b, T0 + 1000, 5);
	t = admit(b, T0 + 500);
	ck_assert_int_eq(t.retry_after_ms, 30000);
	ck_assert_int_eq(breaker_retry_after(b, T0), 30000);
	breaker_free(b);
}
END_TEST

/* Nonsense configs are brought back into range rather than wedging. */
START_TEST(test_conf_clamps)
{
	struct breaker_conf c = conf_default();
	struct breaker *b;
	struct breaker_ticket t;

	c.half_open_max_calls = 0;
	c.success_threshold = 5;
	c.recovery_backoff = 0.5;
	c.recovery_timeout_ms = 100;
	b = mk(&c, NULL);
	trip(b, T0, 5);
	t = admit(b, T0 + 100);
	ck_assert(t.trial);
	ck_assert(!admit(b, T0 + 100).admitted);
	breaker_record(b, &t, false, BREAKER_ERR_REFUSED, T0 + 100);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 100), 100);
	t = admit(b, T0 + 200);
	breaker_record(b, &t, true, BREAKER_ERR_OTHER, T0 + 200);
	ck_assert_int_eq(state(b, T0 + 200), BREAKER_CLOSED);
	breaker_free(b);
}
END_TEST

/*
 * The reference model: the rules of SPEC.md section 4 written out the
 * plainest way, with the whole history of outcomes kept and the window
 * recounted from it on every question. No jitter (recovery_jitter = 0).
 */
#define M_HIST 1024

/* A ticket as the model sees it. */
struct m_ticket {
	unsigned period;
	enum breaker_verdict verdict;
	bool trial;
};

/* The reference model's whole state. */
struct model {
	struct breaker_conf c;
	enum breaker_state st;
	unsigned period;
	uint64_t since;
	uint64_t ends; /* 0: no end of its own */
	unsigned steps;
	unsigned consec;
	unsigned slots_used, trial_wins;
	uint64_t hist_t[M_HIST];
	bool hist_fail[M_HIST];
	int nhist;
	uint64_t attempts, successes, failures, by_err[BREAKER_ERR_COUNT];
	uint64_t rej_open, rej_half, rej_forced, opened;
};

/* Count the outcomes the model's window holds at now. */
static void
m_window(const struct model *m, uint64_t now, unsigned *att, unsigned *fl)
{
	uint64_t w, nb;
	int i, from;

	*att = 0;
	*fl = 0;
	if (m->c.window_ms > 0) {
		w = m->c.window_ms / 20;
		if (w * 20 < m->c.window_ms)
			w++;
		nb = m->c.window_ms / w;
		if (nb * w < m->c.window_ms)
			nb++;
		for (i = 0; i < m->nhist; i++) {
			if (now / w - m->hist_t[i] / w < nb) {
				(*att)++;
				*fl += m->hist_fail[i];
			}
		}
		return;
	}
	from = m->nhist - (int)m->c.window_calls;
	if (from < 0)
		from = 0;
	for (i = from; i < m->nhist; i++) {
		(*att)++;
		*fl += m->hist_fail[i];
	}
}

/* How long the model's next opening lasts. */
static uint64_t
m_duration(const struct model *m)
{
	double d = (double)m->c.recovery_timeout_ms;
	double cap = (double)m->c.recovery_timeout_max_ms;
	unsigned i;

	if (d > cap)
		d = cap;
	for (i = 0; i < m->steps; i++) {
		d = d * m->c.recovery_backoff;
		if (d > cap)
			d = cap;
	}
	return (uint64_t)d;
}

/* Move the model to state s. */
static void
m_go(struct model *m, enum breaker_state s, uint64_t lifetime, uint64_t now)
{
	if (s != m->st)
		m->since = now;
	m->st = s;
	m->period++;
	m->ends = 0;
	if (s == BREAKER_CLOSED) {
		m->nhist = 0;
		m->consec = 0;
		m->steps = 0;
	} else if (s == BREAKER_OPEN) {
		m->opened++;
		m->ends = now + m_duration(m);
	} else if (s == BREAKER_HALF_OPEN) {
		m->slots_used = 0;
		m->trial_wins = 0;
	} else if (lifetime > 0)
		m->ends = now + lifetime;
}

/* Let the model's time pass to now. */
static void
m_time(struct model *m, uint64_t now)
{
	if (m->ends == 0 || now < m->ends)
		return;
	if (m->st == BREAKER_OPEN)
		m_go(m, BREAKER_HALF_OPEN, 0, now);
	else
		m_go(m, BREAKER_CLOSED, 0, now);
}

/* What retry_after the model says at now. */
static int64_t
m_retry(struct model *m, uint64_t now)
{
	m_time(m, now);
	if (m->st == BREAKER_HALF_OPEN)
		return 0;
	if (m->st == BREAKER_OPEN || m->st == BREAKER_FORCED_OPEN)
		return m->ends == 0 ? -1 : (int64_t)(m->ends - now);
	return -1;
}

/* Admit one client in the model. */
static struct m_ticket
m_admit(struct model *m, uint64_t now)
{
	struct m_ticket t = { 0, BREAKER_ADMITTED, false };

	m_time(m, now);
	t.period = m->period;
	if (m->st == BREAKER_OPEN) {
		t.verdict = BREAKER_REJECT_OPEN;
		m->rej_open++;
	} else if (m->st == BREAKER_FORCED_OPEN) {
		t.verdict = BREAKER_REJECT_FORCED_OPEN;
		m->rej_forced++;
	} else if (m->st == BREAKER_HALF_OPEN) {
		if (m->slots_used == m->c.half_open_max_calls) {
			t.verdict = BREAKER_REJECT_HALF_OPEN;
			m->rej_half++;
		} else {
			m->slots_used++;
			t.trial = true;
		}
	}
	return t;
}

/* Record one outcome in the model. */
static void
m_record(struct model *m, const struct m_ticket *t, bool ok,
    enum breaker_error e, uint64_t now)
{
	unsigned att, fl;
	bool by_count, by_rate;

	m_time(m, now);
	m->attempts++;
	if (ok)
		m->successes++;
	else {
		m->failures++;
		m->by_err[e]++;
	}
	if (t->period != m->period || t->verdict != BREAKER_ADMITTED)
		return;
	m->consec = ok ? 0 : m->consec + 1;
	if (m->st == BREAKER_HALF_OPEN) {
		if (!ok) {
			m->steps++;
			m_go(m, BREAKER_OPEN, 0, now);
		} else if (++m->trial_wins == m->c.success_threshold)
			m_go(m, BREAKER_CLOSED, 0, now);
		return;
	}
	if (m->nhist == M_HIST)
		ck_abort_msg("model history full");
	m->hist_t[m->nhist] = now;
	m->hist_fail[m->nhist] = !ok;
	m->nhist++;
	if (m->st != BREAKER_CLOSED)
		return;
	m_window(m, now, &att, &fl);
	by_count =
	    m->c.failure_threshold > 0 && m->consec >= m->c.failure_threshold;
	by_rate = m->c.failure_rate_threshold > 0 && att > 0 &&
	    att >= m->c.minimum_calls &&
	    fl * 100.0 >= m->c.failure_rate_threshold * att;
	if (by_count || by_rate)
		m_go(m, BREAKER_OPEN, 0, now);
}

/* A small deterministic PRNG for the tests (xorshift64*). */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* Return a random number in [0, n). */
static unsigned
rndn(uint64_t *s, unsigned n)
{
	return (unsigned)(rnd(s) % n);
}

/* Draw a random valid config without jitter. */
static struct breaker_conf
m_random_conf(uint64_t *s)
{
	static const double rates[] = { 0, 0, 25, 50, 60, 100 };
	static const uint64_t wms[] = { 1, 7, 20, 100, 1000, 5000 };
	static const uint64_t rts[] = { 0, 1, 100, 1000 };
	static const double backoffs[] = { 1, 1.5, 2, 3 };
	static const uint64_t caps[] = { 1, 500, 5000, 60000 };
	struct breaker_conf c;

	memset(&c, 0, sizeof(c));
	c.failure_threshold = rndn(s, 7);
	c.failure_rate_threshold = rates[rndn(s, 6)];
	if (c.failure_threshold == 0 && c.failure_rate_threshold == 0)
		c.failure_threshold = 3;
	if (rndn(s, 2))
		c.window_ms = wms[rndn(s, 6)];
	else
		c.window_calls = 1 + rndn(s, 10);
	c.minimum_calls = rndn(s, 9);
	c.recovery_timeout_ms = rts[rndn(s, 4)];
	c.recovery_backoff = backoffs[rndn(s, 4)];
	c.recovery_timeout_max_ms = caps[rndn(s, 4)];
	c.half_open_max_calls = 1 + rndn(s, 4);
	c.success_threshold = 1 + rndn(s, c.half_open_max_calls);
	c.dry_run = rndn(s, 5) == 0;
	return c;
}

/* Return a random amount of time to let pass. */
static uint64_t
m_random_delay(uint64_t *s)
{
	switch (rndn(s, 6)) {
	case 0:
		return 0;
	case 1:
		return 1;
	case 2:
		return rndn(s, 50);
	case 3:
		return rndn(s, 700);
	case 4:
		return rndn(s, 6000);
	default:
		return rndn(s, 70000);
	}
}

/*
 * Fail with the sequence and step when a != b. Plain compares: Check's
 * ck_assert records every passing check through a pipe, too slow for
 * millions of them.
 */
#define M_EQ(a, b)                                                             \
	do {                                                                   \
		if ((long long)(a) != (long long)(b))                          \
			ck_abort_msg("seq %d step %d: %s = %lld, model %lld",  \
			    seq, step, #a, (long long)(a), (long long)(b));    \
	} while (0)

/* Compare everything the breaker shows with the model at now. */
static void
m_compare(struct breaker *b, struct model *m, uint64_t now, int seq, int step)
{
	struct breaker_stats st;
	unsigned att, fl;
	int64_t r;
	int e;

	r = m_retry(m, now);
	breaker_snapshot(b, now, &st);
	m_window(m, now, &att, &fl);
	M_EQ(st.state, m->st);
	M_EQ(st.retry_after_ms, r);
	M_EQ(st.state_since_ms, m->since);
	M_EQ(breaker_next_deadline(b), m->ends);
	M_EQ(st.consecutive_failures, m->consec);
	M_EQ(st.window_attempts, att);
	M_EQ(st.window_failures, fl);
	M_EQ(st.attempts_total, m->attempts);
	M_EQ(st.successes_total, m->successes);
	M_EQ(st.failures_total, m->failures);
	for (e = 0; e < BREAKER_ERR_COUNT; e++)
		M_EQ(st.failures_by_error[e], m->by_err[e]);
	M_EQ(st.rejected_open, m->rej_open);
	M_EQ(st.rejected_half_open, m->rej_half);
	M_EQ(st.rejected_forced_open, m->rej_forced);
	M_EQ(st.opened_total, m->opened);
}

#define M_POOL 12

/* Drive one breaker and one model through one random sequence. */
static void
m_sequence(uint64_t *s, int seq, int nsteps)
{
	static struct model m;
	struct breaker_ticket bt[M_POOL], t;
	struct m_ticket mt[M_POOL], u;
	struct breaker *b;
	uint64_t now = T0 + rndn(s, 100000);
	enum breaker_error e;
	uint64_t life;
	int step, n = 0, i;
	bool ok;

	memset(&m, 0, sizeof(m));
	m.c = m_random_conf(s);
	m.since = now;
	b = breaker_new(&m.c, now, rnd(s));
	for (step = 0; step < nsteps; step++) {
		switch (rndn(s, 16)) {
		case 0:
		case 1:
		case 2:
			now += m_random_delay(s);
			break;
		case 3:
		case 4:
		case 5:
		case 6:
			breaker_admit(b, now, &t);
			u = m_admit(&m, now);
			M_EQ(t.verdict, u.verdict);
			M_EQ(t.trial, u.trial);
			M_EQ(t.state, m.st);
			M_EQ(t.admitted,
			    u.verdict == BREAKER_ADMITTED || m.c.dry_run);
			if (u.verdict != BREAKER_ADMITTED)
				M_EQ(t.retry_after_ms, m_retry(&m, now));
			if (!t.admitted)
				break;
			if (n == M_POOL) {
				/* the oldest is never heard of again */
				memmove(bt, bt + 1,
				    sizeof(bt[0]) * (M_POOL - 1));
				memmove(mt, mt + 1,
				    sizeof(mt[0]) * (M_POOL - 1));
				n--;
			}
			bt[n] = t;
			mt[n] = u;
			n++;
			break;
		case 7:
		case 8:
		case 9:
		case 10:
		case 11:
			if (n == 0)
				break;
			i = (int)rndn(s, (unsigned)n);
			ok = rndn(s, 2);
			e = (enum breaker_error)rndn(s, BREAKER_ERR_COUNT);
			breaker_record(b, &bt[i], ok, e, now);
			m_record(&m, &mt[i], ok, e, now);
			bt[i] = bt[n - 1];
			mt[i] = mt[n - 1];
			n--;
			break;
		case 12:
			if (n == 0)
				break;
			i = (int)rndn(s, (unsigned)n);
			breaker_cancel(b, &bt[i]);
			if (mt[i].trial && mt[i].period == m.period &&
			    m.st == BREAKER_HALF_OPEN)
				m.slots_used--;
			bt[i] = bt[n - 1];
			mt[i] = mt[n - 1];
			n--;
			break;
		case 13:
			breaker_tick(b, now);
			m_time(&m, now);
			break;
		case 14:
			if (rndn(s, 4) != 0)
				break;
			i = (int)rndn(s, 3);
			life = rndn(s, 2) * (1 + rndn(s, 3000));
			m_time(&m, now);
			if (i == 0) {
				breaker_force_open(b, life, now);
				m_go(&m, BREAKER_FORCED_OPEN, life, now);
			} else if (i == 1) {
				breaker_force_closed(b, life, now);
				m_go(&m, BREAKER_FORCED_CLOSED, life, now);
			} else {
				breaker_reset(b, now);
				m_go(&m, BREAKER_CLOSED, 0, now);
			}
			break;
		default:
			M_EQ(breaker_retry_after(b, now), m_retry(&m, now));
			break;
		}
		if (rndn(s, 3) == 0)
			m_compare(b, &m, now, seq, step);
	}
	m_compare(b, &m, now, seq, nsteps);
	breaker_free(b);
}

/* The breaker agrees with the model over many random sequences. */
START_TEST(test_model)
{
	const char *env = getenv("CP_MODEL_RUNS");
	uint64_t s = 0x5eed0fb4ea4e4ULL;
	int runs = 10000, i;

	if (env != NULL && atoi(env) > 0)
		runs = atoi(env);
	for (i = 0; i < runs; i++)
		m_sequence(&s, i, 40 + (int)rndn(&s, 160));
}
END_TEST

/*
 * Threads hammering one breaker. Each keeps its own counts; the test then
 * checks that the breaker's totals are exactly their sums.
 */
#define H_THREADS 4
#define H_OPS 40000

/* One hammering thread's counts. */
struct hammer {
	struct breaker *b;
	atomic_uint_fast64_t *clock;
	uint64_t seed;
	uint64_t admits, rejected, successes, failures, cancels;
};

/* What the transition callback saw while the threads ran. */
struct chain {
	long n;
	long broken;
	uint64_t opened;
	enum breaker_state last;
};

/* Follow the chain of transitions: each must start where the last ended. */
static void
chain_cb(const struct breaker_transition *tr, void *arg)
{
	struct chain *ch = arg;

	/* Called under the breaker's lock: no other callback runs now. */
	if (tr->from != ch->last || tr->from == tr->to)
		ch->broken++;
	ch->last = tr->to;
	ch->opened += tr->to == BREAKER_OPEN;
	ch->n++;
}

/* Stress the admit/record path with failure waves that trip it. */
static void *
hammer_run(void *arg)
{
	struct hammer *h = arg;
	struct breaker_ticket t;
	uint64_t now;
	unsigned r;
	int i;
	bool bad;

	for (i = 0; i < H_OPS; i++) {
		now = atomic_fetch_add(h->clock, 1) / 4;
		bad = (now / 2000) % 2 == 0;
		breaker_admit(h->b, now, &t);
		h->admits++;
		if (!t.admitted) {
			h->rejected++;
			continue;
		}
		r = rndn(&h->seed, 16);
		if (r == 0) {
			breaker_cancel(h->b, &t);
			h->cancels++;
		} else if (bad && r < 9) {
			breaker_record(h->b, &t, false, BREAKER_ERR_TIMEOUT,
			    now);
			h->failures++;
		} else {
			breaker_record(h->b, &t, true, BREAKER_ERR_OTHER, now);
			h->successes++;
		}
	}
	return NULL;
}

/* Check that a snapshot holds together. */
static void
stats_sane(const struct breaker_stats *st)
{
	uint64_t sum = 0;
	double one;
	int e;

	for (e = 0; e < BREAKER_ERR_COUNT; e++)
		sum += st->failures_by_error[e];
	ck_assert_uint_eq(sum, st->failures_total);
	ck_assert_uint_eq(st->attempts_total,
	    st->successes_total + st->failures_total);
	ck_assert_uint_eq(st->rejected_total,
	    st->rejected_open + st->rejected_half_open +
		st->rejected_forced_open);
	ck_assert_uint_le(st->window_failures, st->window_attempts);
	ck_assert_uint_le(st->window_attempts, 20);
	ck_assert_int_lt(st->state, BREAKER_STATE_COUNT);
	ck_assert(st->failure_rate >= 0 && st->failure_rate <= 1);
	one = st->failure_rate + st->success_rate;
	ck_assert(one > 1 - 1e-9 && one < 1 + 1e-9);
	if (st->state == BREAKER_OPEN)
		ck_assert_int_ge(st->retry_after_ms, 0);
}

/* Totals add up exactly after threads race on one breaker. */
START_TEST(test_concurrency)
{
	static struct hammer h[H_THREADS];
	struct chain ch = { 0, 0, 0, BREAKER_CLOSED };
	pthread_t th[H_THREADS];
	atomic_uint_fast64_t clock = T0 * 4;
	struct breaker_conf c = conf_default();
	struct breaker_stats st;
	struct breaker *b;
	uint64_t admits = 0, rejected = 0, ok = 0, bad = 0, cancels = 0;
	int i, k;

	c.failure_rate_threshold = 50;
	c.recovery_timeout_ms = 300;
	b = breaker_new(&c, T0, 3);
	breaker_set_callback(b, chain_cb, &ch);
	for (i = 0; i < H_THREADS; i++) {
		memset(&h[i], 0, sizeof(h[i]));
		h[i].b = b;
		h[i].clock = &clock;
		h[i].seed = 0x1234567 + (uint64_t)i;
		ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_run,
				     &h[i]),
		    0);
	}
	for (k = 0; k < 2000; k++) {
		breaker_snapshot(b, atomic_load(&clock) / 4, &st);
		stats_sane(&st);
		breaker_tick(b, atomic_load(&clock) / 4);
	}
	for (i = 0; i < H_THREADS; i++) {
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
		admits += h[i].admits;
		rejected += h[i].rejected;
		ok += h[i].successes;
		bad += h[i].failures;
		cancels += h[i].cancels;
	}
	breaker_snapshot(b, atomic_load(&clock) / 4, &st);
	stats_sane(&st);
	ck_assert_uint_eq(admits, (uint64_t)H_THREADS * H_OPS);
	ck_assert_uint_eq(st.successes_total, ok);
	ck_assert_uint_eq(st.failures_total, bad);
	ck_assert_uint_eq(st.failures_by_error[BREAKER_ERR_TIMEOUT], bad);
	ck_assert_uint_eq(st.rejected_total, rejected);
	ck_assert_uint_eq(st.attempts_total + cancels + st.rejected_total,
	    admits);
	/* The transitions form one chain, and every entry into open counts. */
	ck_assert_int_eq(ch.broken, 0);
	ck_assert_int_eq(ch.last, st.state);
	ck_assert_uint_eq(ch.opened, st.opened_total);
	ck_assert_uint_gt(st.opened_total, 2);
	ck_assert_uint_gt(st.rejected_open, 0);
	breaker_free(b);
}
END_TEST

/* Save a breaker at now into a new one created at later (a restart). */
static struct breaker *
restart(struct breaker *b, const struct breaker_conf *c, uint64_t now,
    uint64_t later, struct trlog *l, struct breaker_saved *sv)
{
	struct breaker *nb;

	breaker_save(b, now, sv);
	breaker_free(b);
	nb = mk(c, l);
	breaker_restore(nb, sv, later);
	return nb;
}

/* An open circuit saved and restored keeps the rest of its open time. */
START_TEST(test_restore_open)
{
	struct breaker_conf c = conf_default();
	struct breaker_saved sv;
	struct breaker_stats st;
	struct trlog l;
	struct breaker *b = mk(&c, NULL);

	trip(b, T0, 5);
	b = restart(b, &c, T0 + 10000, T0 + 500, &l, &sv);
	ck_assert_int_eq(sv.state, BREAKER_OPEN);
	ck_assert_uint_eq(sv.age_ms, 10000);
	ck_assert_int_eq(sv.remaining_ms, 20000);
	ck_assert_uint_eq(sv.open_ms, 30000);
	/* Here the new run's clock starts lower: only durations carry. */
	breaker_snapshot(b, T0 + 500, &st);
	ck_assert_int_eq(st.state, BREAKER_OPEN);
	ck_assert_int_eq(st.retry_after_ms, 20000);
	ck_assert_uint_eq(st.recovery_timeout_ms, 30000);
	ck_assert_uint_eq(st.state_since_ms, T0 + 500 - 10000);
	ck_assert_uint_eq(st.opened_total, 0);
	ck_assert_uint_eq(breaker_next_deadline(b), T0 + 20500);
	ck_assert(!admit(b, T0 + 20499).admitted);
	/* No callback for the restore itself; time moves it on as usual. */
	ck_assert_int_eq(l.n, 0);
	breaker_tick(b, T0 + 20500);
	ck_assert_int_eq(l.n, 1);
	ck_tr(&l, 0, BREAKER_OPEN, BREAKER_HALF_OPEN,
	    BREAKER_REASON_RECOVERY_TIMEOUT);
	breaker_free(b);
}
END_TEST

/* An open period that ended while down comes back half_open, backoff kept. */
START_TEST(test_restore_open_expired)
{
	struct breaker_conf c = conf_default();
	struct breaker_saved sv;
	struct breaker_ticket t;
	struct breaker_stats st;
	struct breaker *b;

	c.recovery_backoff = 2;
	memset(&sv, 0, sizeof(sv));
	sv.state = BREAKER_OPEN;
	sv.remaining_ms = 0;
	sv.open_ms = 60000;
	sv.backoff_steps = 1;
	b = mk(&c, NULL);
	breaker_restore(b, &sv, T0);
	breaker_snapshot(b, T0, &st);
	ck_assert_int_eq(st.state, BREAKER_HALF_OPEN);
	ck_assert_uint_eq(st.state_since_ms, T0);
	/* The next opening, if this trial fails, is one step further. */
	ck_assert_uint_eq(st.recovery_timeout_ms, 120000);
	t = admit(b, T0);
	ck_assert(t.admitted && t.trial);
	breaker_record(b, &t, false, BREAKER_ERR_REFUSED, T0 + 1);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 1), 120000);
	breaker_free(b);
}
END_TEST

/* A force keeps the rest of its lifetime, or none; expired, it is closed. */
START_TEST(test_restore_forced)
{
	struct breaker_conf c = conf_default();
	struct breaker_saved sv;
	struct breaker *b = mk(&c, NULL);
	struct breaker_ticket t;

	breaker_force_open(b, 60000, T0);
	b = restart(b, &c, T0 + 15000, T0, NULL, &sv);
	ck_assert_int_eq(sv.state, BREAKER_FORCED_OPEN);
	ck_assert_int_eq(sv.remaining_ms, 45000);
	t = admit(b, T0 + 1000);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_FORCED_OPEN);
	ck_assert_int_eq(t.retry_after_ms, 44000);
	ck_assert_int_eq(state(b, T0 + 45000), BREAKER_CLOSED);
	breaker_free(b);

	b = mk(&c, NULL);
	breaker_force_open(b, 0, T0);
	b = restart(b, &c, T0 + 15000, T0, NULL, &sv);
	ck_assert_int_eq(sv.remaining_ms, -1);
	ck_assert_int_eq(breaker_retry_after(b, T0 + 999999), -1);
	ck_assert_int_eq(state(b, T0 + 999999), BREAKER_FORCED_OPEN);
	breaker_free(b);

	b = mk(&c, NULL);
	breaker_force_closed(b, 5000, T0);
	b = restart(b, &c, T0 + 1000, T0, NULL, &sv);
	ck_assert_int_eq(state(b, T0 + 3999), BREAKER_FORCED_CLOSED);
	ck_assert_int_eq(state(b, T0 + 4000), BREAKER_CLOSED);
	breaker_free(b);

	memset(&sv, 0, sizeof(sv));
	sv.state = BREAKER_FORCED_OPEN;
	sv.remaining_ms = 0;
	sv.backoff_steps = 3;
	b = mk(&c, NULL);
	breaker_restore(b, &sv, T0);
	ck_assert_int_eq(state(b, T0), BREAKER_CLOSED);
	ck_assert(admit(b, T0).admitted);
	breaker_free(b);
}
END_TEST

/* Backoff comes back with the state: the next opening is backed off. */
START_TEST(test_restore_backoff)
{
	struct breaker_conf c = conf_default();
	struct breaker_saved sv;
	struct breaker *b;
	uint64_t now = T0;

	c.recovery_timeout_ms = 1000;
	c.recovery_backoff = 2;
	c.recovery_timeout_max_ms = 60000;
	b = mk(&c, NULL);
	trip(b, now, 5);
	ck_assert_int_eq(fail_trial(b, &now), 2000);
	ck_assert_int_eq(fail_trial(b, &now), 4000);
	b = restart(b, &c, now + 1000, T0, NULL, &sv);
	ck_assert_uint_eq(sv.backoff_steps, 2);
	ck_assert_int_eq(breaker_retry_after(b, T0), 3000);
	now = T0;
	ck_assert_int_eq(fail_trial(b, &now), 8000);
	breaker_free(b);
}
END_TEST

/* closed and half_open restore as themselves; a bad state changes nothing. */
START_TEST(test_restore_plain)
{
	struct breaker_conf c = conf_default();
	struct breaker_saved sv;
	struct breaker *b = mk(&c, NULL);

	b = restart(b, &c, T0 + 5, T0, NULL, &sv);
	ck_assert_int_eq(sv.state, BREAKER_CLOSED);
	ck_assert_int_eq(sv.remaining_ms, -1);
	ck_assert_int_eq(state(b, T0), BREAKER_CLOSED);
	breaker_free(b);

	b = mk(&c, NULL);
	trip(b, T0, 5);
	breaker_tick(b, T0 + 30000);
	b = restart(b, &c, T0 + 30001, T0, NULL, &sv);
	ck_assert_int_eq(sv.state, BREAKER_HALF_OPEN);
	ck_assert_int_eq(state(b, T0), BREAKER_HALF_OPEN);
	breaker_free(b);

	memset(&sv, 0, sizeof(sv));
	sv.state = BREAKER_STATE_COUNT;
	b = mk(&c, NULL);
	breaker_restore(b, &sv, T0);
	ck_assert_int_eq(state(b, T0), BREAKER_CLOSED);
	breaker_free(b);
}
END_TEST

/* State names parse back to their states; anything else does not. */
START_TEST(test_state_parse)
{
	enum breaker_state s;
	int i;

	for (i = 0; i < BREAKER_STATE_COUNT; i++) {
		ck_assert_int_eq(breaker_state_parse(breaker_state_name(
							 (enum breaker_state)i),
				     &s),
		    0);
		ck_assert_int_eq(s, i);
	}
	ck_assert_int_eq(breaker_state_parse("Open", &s), -1);
	ck_assert_int_eq(breaker_state_parse("", &s), -1);
	ck_assert_int_eq(breaker_state_parse("unknown", &s), -1);
}
END_TEST

/* Gather the tests into one suite. */
/* Take a probe's slot; the ticket, and whether it was given. */
static bool
probe_begin(struct breaker *b, uint64_t now, struct breaker_ticket *t)
{
	memset(t, 0xa5, sizeof(*t));
	return breaker_probe_begin(b, now, 5000, t);
}

/*
 * recovery_probe = connect: half_open turns every client away (told to
 * retry after what is left of the probe's connect_timeout, at least 1 s)
 * and hands its slot to one probe at a time; success_threshold probes
 * close the circuit. No probe outside half_open, nor with probes off.
 */
START_TEST(test_probe_closes)
{
	struct breaker_conf c = conf_default();
	struct breaker_ticket t, p;
	struct breaker_stats st;
	struct trlog l;
	struct breaker *b;
	uint64_t now = T0 + 30000;

	c.recovery_probe = BREAKER_PROBE_CONNECT;
	b = mk(&c, &l);
	ck_assert(!probe_begin(b, T0, &p)); /* closed */
	trip(b, T0, 5);
	ck_assert(!probe_begin(b, T0 + 1, &p)); /* open */
	breaker_tick(b, now);
	ck_assert_int_eq(state(b, now), BREAKER_HALF_OPEN);

	t = admit(b, now);
	ck_assert(!t.admitted);
	ck_assert_int_eq(t.verdict, BREAKER_REJECT_HALF_OPEN);
	ck_assert_int_eq(t.retry_after_ms, 1000);

	ck_assert(probe_begin(b, now, &p));
	ck_assert(p.admitted && p.trial && p.probe);
	ck_assert_int_eq(p.verdict, BREAKER_ADMITTED);
	ck_assert(!probe_begin(b, now, &t)); /* one at a time */
	ck_assert(!admit(b, now).admitted);
	ck_assert_int_eq(admit(b, now).retry_after_ms, 5000);
	ck_assert_int_eq(admit(b, now + 1).retry_after_ms, 4999);
	breaker_record(b, &p, true, BREAKER_ERR_OTHER, now + 1);
	ck_assert_int_eq(state(b, now + 1), BREAKER_HALF_OPEN);
	ck_assert(!admit(b, now + 1).admitted);

	ck_assert(probe_begin(b, now + 1, &p));
	breaker_record(b, &p, true, BREAKER_ERR_OTHER, now + 2);
	ck_assert_int_eq(state(b, now + 2), BREAKER_CLOSED);
	ck_tr(&l, 2, BREAKER_HALF_OPEN, BREAKER_CLOSED,
	    BREAKER_REASON_PROBES_SUCCEEDED);
	ck_assert(!probe_begin(b, now + 2, &p));
	ck_assert(admit(b, now + 2).admitted);

	breaker_snapshot(b, now + 2, &st);
	ck_assert_uint_eq(st.attempts_total, 5 + 2);
	ck_assert_uint_eq(st.successes_total, 2);
	ck_assert_uint_eq(st.rejected_half_open, 5);
	breaker_free(b);
}
END_TEST

/* A failed probe opens the circuit again, for recovery_timeout * backoff. */
START_TEST(test_probe_fails_backoff)
{
	struct breaker_conf c = conf_default();
	struct breaker_ticket p;
	struct breaker_stats st;
	struct trlog l;
	struct breaker *b;
	uint64_t now = T0 + 30000;

	c.recovery_probe = BREAKER_PROBE_CONNECT;
	c.recovery_backoff = 2;
	b = mk(&c, &l);
	trip(b, T0, 5);
	breaker_tick(b, now);
	ck_assert(probe_begin(b, now, &p));
	breaker_record(b, &p, true, BREAKER_ERR_OTHER, now + 5);
	ck_assert(probe_begin(b, now + 5, &p));
	breaker_record(b, &p, false, BREAKER_ERR_TIMEOUT, now + 10);
	ck_tr(&l, 2, BREAKER_HALF_OPEN, BREAKER_OPEN,
	    BREAKER_REASON_HALF_OPEN_FAILURE);
	ck_assert_int_eq(l.tr[2].retry_after_ms, 60000);
	ck_assert(!probe_begin(b, now + 10, &p));
	breaker_tick(b, now + 10 + 59999);
	ck_assert_int_eq(state(b, now + 10 + 59999), BREAKER_OPEN);
	breaker_tick(b, now + 10 + 60000);
	ck_assert(probe_begin(b, now + 10 + 60000, &p));
	breaker_snapshot(b, now + 10 + 60000, &st);
	ck_assert_uint_eq(st.failures_by_error[BREAKER_ERR_TIMEOUT], 1);
	breaker_free(b);
}
END_TEST

/*
 * A cancelled probe gives its slot back; a probe's outcome from an earlier
 * period (a manual action came between) drives nothing and blocks nothing.
 */
START_TEST(test_probe_cancel_and_late)
{
	struct breaker_conf c = conf_default();
	struct breaker_ticket p, old;
	struct breaker *b;
	uint64_t now = T0 + 30000;

	c.recovery_probe = BREAKER_PROBE_CONNECT;
	c.success_threshold = 1;
	b = mk(&c, NULL);
	trip(b, T0, 5);
	breaker_tick(b, now);
	ck_assert(probe_begin(b, now, &p));
	breaker_cancel(b, &p);
	ck_assert(probe_begin(b, now, &old));
	breaker_force_open(b, 1000, now + 1);
	ck_assert(!probe_begin(b, now + 1, &p));
	breaker_tick(b, now + 1001); /* the force expires: closed */
	trip(b, now + 1001, 5);
	breaker_tick(b, now + 1001 + 30000);
	ck_assert_int_eq(state(b, now + 31001), BREAKER_HALF_OPEN);
	/* The old probe's failure is a total, not a transition. */
	breaker_record(b, &old, false, BREAKER_ERR_REFUSED, now + 31002);
	ck_assert_int_eq(state(b, now + 31002), BREAKER_HALF_OPEN);
	ck_assert(probe_begin(b, now + 31002, &p));
	breaker_record(b, &p, true, BREAKER_ERR_OTHER, now + 31003);
	ck_assert_int_eq(state(b, now + 31003), BREAKER_CLOSED);
	breaker_free(b);
}
END_TEST

/*
 * Probes off: half_open admits clients as trials, exactly as before, and
 * no probe is handed out; a reload that turns probes on applies to the
 * half_open period in progress.
 */
START_TEST(test_probe_off_and_reload)
{
	struct breaker_conf c = conf_default();
	struct breaker_ticket t, p;
	struct breaker *b;
	uint64_t now = T0 + 30000;

	b = mk(&c, NULL);
	trip(b, T0, 5);
	breaker_tick(b, now);
	ck_assert(!probe_begin(b, now, &p));
	t = admit(b, now);
	ck_assert(t.admitted && t.trial && !t.probe);
	c.recovery_probe = BREAKER_PROBE_CONNECT;
	breaker_reconfigure(b, &c, now + 1);
	ck_assert(!admit(b, now + 1).admitted);
	ck_assert(probe_begin(b, now + 1, &p));
	/* The client trial admitted before still counts. */
	breaker_record(b, &t, true, BREAKER_ERR_OTHER, now + 2);
	breaker_record(b, &p, true, BREAKER_ERR_OTHER, now + 3);
	ck_assert_int_eq(state(b, now + 3), BREAKER_CLOSED);
	breaker_free(b);
}
END_TEST

/* A local shortage (no socket, no port) is not the server's fault. */
START_TEST(test_errno_is_shortage)
{
	ck_assert(breaker_errno_is_shortage(EMFILE));
	ck_assert(breaker_errno_is_shortage(ENFILE));
	ck_assert(breaker_errno_is_shortage(ENOBUFS));
	ck_assert(breaker_errno_is_shortage(ENOMEM));
	ck_assert(breaker_errno_is_shortage(EADDRNOTAVAIL));
	ck_assert(!breaker_errno_is_shortage(ECONNREFUSED));
	ck_assert(!breaker_errno_is_shortage(ETIMEDOUT));
	ck_assert(!breaker_errno_is_shortage(EAGAIN));
}
END_TEST

Suite *
unit_suite(void)
{
	Suite *s = suite_create("breaker");
	TCase *tc = tcase_create("rules");
	TCase *tm = tcase_create("model");
	TCase *tt = tcase_create("threads");

	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_error_from_errno);
	tcase_add_test(tc, test_new_closed);
	tcase_add_test(tc, test_history);
	tcase_add_test(tc, test_consecutive_threshold);
	tcase_add_test(tc, test_success_resets_consecutive);
	tcase_add_test(tc, test_consecutive_off);
	tcase_add_test(tc, test_rate_too_few_calls);
	tcase_add_test(tc, test_rate_below_at_above);
	tcase_add_test(tc, test_both_rules_at_once);
	tcase_add_test(tc, test_window_count_eviction);
	tcase_add_test(tc, test_window_time_eviction);
	tcase_add_test(tc, test_window_time_small);
	tcase_add_test(tc, test_open_rejects);
	tcase_add_test(tc, test_tick_deadline);
	tcase_add_test(tc, test_admit_applies_due);
	tcase_add_test(tc, test_half_open_slots);
	tcase_add_test(tc, test_half_open_success_closes);
	tcase_add_test(tc, test_half_open_failure_reopens);
	tcase_add_test(tc, test_backoff_growth_and_cap);
	tcase_add_test(tc, test_backoff_cap_below_base);
	tcase_add_test(tc, test_jitter_bounds);
	tcase_add_test(tc, test_jitter_after_cap);
	tcase_add_test(tc, test_jitter_ends);
	tcase_add_test(tc, test_record_applies_due);
	tcase_add_test(tc, test_late_outcome);
	tcase_add_test(tc, test_forced_open);
	tcase_add_test(tc, test_forced_open_lifetime);
	tcase_add_test(tc, test_forced_closed);
	tcase_add_test(tc, test_force_again);
	tcase_add_test(tc, test_reset_keeps_totals);
	tcase_add_test(tc, test_dry_run);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_unreject);
	tcase_add_test(tc, test_probe_closes);
	tcase_add_test(tc, test_probe_fails_backoff);
	tcase_add_test(tc, test_probe_cancel_and_late);
	tcase_add_test(tc, test_probe_off_and_reload);
	tcase_add_test(tc, test_errno_is_shortage);
	tcase_add_test(tc, test_callback_sequence);
	tcase_add_test(tc, test_retry_after_states);
	tcase_add_test(tc, test_error_kinds);
	tcase_add_test(tc, test_reconfigure);
	tcase_add_test(tc, test_time_never_goes_back);
	tcase_add_test(tc, test_conf_clamps);
	tcase_add_test(tc, test_restore_open);
	tcase_add_test(tc, test_restore_open_expired);
	tcase_add_test(tc, test_restore_forced);
	tcase_add_test(tc, test_restore_backoff);
	tcase_add_test(tc, test_restore_plain);
	tcase_add_test(tc, test_state_parse);
	suite_add_tcase(s, tc);
	tcase_add_test(tm, test_model);
	tcase_set_timeout(tm, 120);
	suite_add_tcase(s, tm);
	tcase_add_test(tt, test_concurrency);
	tcase_set_timeout(tt, 120);
	suite_add_tcase(s, tt);
	return s;
}
