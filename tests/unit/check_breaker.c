/*
 * Check suite for the breaker (SPEC.md section 4): the rules as scenario
 * rows (config, a sequence of events, what must be seen after each), one
 * runner that plays a row, a reference model driven beside the breaker by
 * random event sequences, and threads hammering one breaker.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "unit.h"
#include "unit_breaker.h"

#define T0 1000000 /* a start time that is a whole number of buckets */
#define MAX_TR 64

/* The transitions a breaker reported, in order. */
struct trlog {
	int n;
	struct breaker_transition tr[MAX_TR];
};

/* Append one transition to the log the callback was given. */
static void
trlog_cb(const struct breaker_transition *tr, void *arg)
{
	struct trlog *l = arg;

	if (l->n < MAX_TR)
		l->tr[l->n] = *tr;
	l->n++;
}

/* Admit one client, which must be let through, and record a failure. */
static void
rec_fail(struct breaker *b, uint64_t now, enum breaker_error err)
{
	ck_assert(unit_breaker_attempt(b, now, false, err));
}

/*
 * The fields a scenario step may set or check, one list per object; each
 * list makes the keys (KC_failure_threshold, KS_window_attempts, ...), their
 * names for failure messages and the accessors.
 */
#define CONF_FIELDS(X)                                                         \
	X(failure_threshold)                                                   \
	X(failure_rate_threshold)                                              \
	X(window_calls)                                                        \
	X(window_ms)                                                           \
	X(minimum_calls)                                                       \
	X(recovery_timeout_ms)                                                 \
	X(recovery_backoff)                                                    \
	X(recovery_timeout_max_ms)                                             \
	X(recovery_jitter)                                                     \
	X(half_open_max_calls)                                                 \
	X(success_threshold)                                                   \
	X(recovery_probe)                                                      \
	X(dry_run)
#define STATS_FIELDS(X)                                                        \
	X(state)                                                               \
	X(state_since_ms)                                                      \
	X(retry_after_ms)                                                      \
	X(expires_in_ms)                                                       \
	X(recovery_timeout_ms)                                                 \
	X(consecutive_failures)                                                \
	X(window_attempts)                                                     \
	X(window_failures)                                                     \
	X(failure_rate)                                                        \
	X(success_rate)                                                        \
	X(attempts_total)                                                      \
	X(successes_total)                                                     \
	X(failures_total)                                                      \
	X(rejected_total)                                                      \
	X(rejected_open)                                                       \
	X(rejected_half_open)                                                  \
	X(rejected_forced_open)                                                \
	X(opened_total)                                                        \
	X(nchanges)
#define TICKET_FIELDS(X)                                                       \
	X(admitted)                                                            \
	X(verdict)                                                             \
	X(state)                                                               \
	X(trial)                                                               \
	X(probe)                                                               \
	X(retry_after_ms)
#define TRANSITION_FIELDS(X)                                                   \
	X(consecutive_failures)                                                \
	X(window_attempts)                                                     \
	X(window_failures)                                                     \
	X(retry_after_ms)                                                      \
	X(now_ms)
#define CHANGE_FIELDS(X)                                                       \
	X(at_ms)                                                               \
	X(from)                                                                \
	X(to)                                                                  \
	X(reason)
#define SAVED_FIELDS(X)                                                        \
	X(state)                                                               \
	X(age_ms)                                                              \
	X(remaining_ms)                                                        \
	X(open_ms)                                                             \
	X(backoff_steps)

#define KC_(f) KC_##f,
#define KS_(f) KS_##f,
#define KT_(f) KT_##f,
#define KR_(f) KR_##f,
#define KH_(f) KH_##f,
#define KV_(f) KV_##f,
enum { CONF_FIELDS(KC_) };
enum { STATS_FIELDS(KS_) KS_failures_by_error };
enum { TICKET_FIELDS(KT_) };
enum { TRANSITION_FIELDS(KR_) };
enum { CHANGE_FIELDS(KH_) };
enum { SAVED_FIELDS(KV_) };

/* How a field is stored (an enum is stored as an unsigned int here). */
enum ftype { F_BOOL, F_UINT, F_U64, F_I64, F_DOUBLE };

_Static_assert(sizeof(enum breaker_state) == sizeof(unsigned) &&
	sizeof(enum breaker_probe_mode) == sizeof(unsigned),
    "enum fields are read as unsigned int");

/* One field a step may set or check: its name, place and type. */
struct field {
	const char *name;
	size_t off;
	enum ftype type;
};

// clang-format off
#define FTYPE(x) _Generic((x), bool: F_BOOL, uint64_t: F_U64,                  \
	int64_t: F_I64, double: F_DOUBLE, default: F_UINT)
// clang-format on
#define FIELD(T, f) { #f, offsetof(T, f), FTYPE(((T *)0)->f) },
#define FC_(f) FIELD(struct breaker_conf, f)
#define FS_(f) FIELD(struct breaker_stats, f)
#define FT_(f) FIELD(struct breaker_ticket, f)
#define FR_(f) FIELD(struct breaker_transition, f)
#define FH_(f) FIELD(struct breaker_change, f)
#define FV_(f) FIELD(struct breaker_saved, f)
static const struct field conf_fields[] = { CONF_FIELDS(FC_) };
static const struct field stats_fields[] = { STATS_FIELDS(FS_) };
static const struct field ticket_fields[] = { TICKET_FIELDS(FT_) };
static const struct field tr_fields[] = { TRANSITION_FIELDS(FR_) };
static const struct field change_fields[] = { CHANGE_FIELDS(FH_) };
static const struct field saved_fields[] = { SAVED_FIELDS(FV_) };

/* Read field f of the object at obj. */
static double
field_get(const void *obj, const struct field *f)
{
	const char *at = (const char *)obj + f->off;

	switch (f->type) {
	case F_BOOL:
		return *(const bool *)(const void *)at;
	case F_UINT:
		return *(const unsigned *)(const void *)at;
	case F_U64:
		return (double)*(const uint64_t *)(const void *)at;
	case F_I64:
		return (double)*(const int64_t *)(const void *)at;
	default:
		return *(const double *)(const void *)at;
	}
}

/* Write v into field f of the object at obj. */
static void
field_set(void *obj, const struct field *f, double v)
{
	char *at = (char *)obj + f->off;

	switch (f->type) {
	case F_BOOL:
		*(bool *)(void *)at = v != 0;
		break;
	case F_UINT:
		*(unsigned *)(void *)at = (unsigned)v;
		break;
	case F_U64:
		*(uint64_t *)(void *)at = (uint64_t)v;
		break;
	case F_I64:
		*(int64_t *)(void *)at = (int64_t)v;
		break;
	default:
		*(double *)(void *)at = v;
	}
}

/* What one step of a scenario does (the first group) or checks. */
enum op {
	OP_END,
	OP_SET,	       /* a config field, before OP_RECONF or the first event */
	OP_ATTEMPTS,   /* n clients admitted (they must be) and recorded */
	OP_ADMIT,      /* one client into ticket slot n */
	OP_RECORD,     /* slot n's outcome */
	OP_CANCEL,     /* slot n given back */
	OP_UNREJECT,   /* slot n's reject taken back */
	OP_PROBE,      /* a probe's slot into ticket slot n; v: given or not */
	OP_TICK,       /* time-driven transitions */
	OP_FORCE_OPEN, /* for arg ms (0 = until reset) */
	OP_FORCE_CLOSED, /* for arg ms (0 = until reset) */
	OP_RESET,
	OP_RECONF,   /* the config as set so far */
	OP_RESTART,  /* saved at `at`, restored into a new breaker at arg */
	OP_SAVE_SET, /* a field of the saved record OP_RESTORE takes */
	OP_RESTORE,
	OP_STATE,    /* the state as of `at` */
	OP_RETRY,    /* breaker_retry_after at `at` */
	OP_DEADLINE, /* breaker_next_deadline */
	OP_NTR,	     /* how many transitions the callback saw */
	OP_TR,	     /* transition n: from, to, reason (in arg) */
	OP_TR_FIELD, /* a field of transition n */
	OP_SNAP,   /* take a snapshot at `at` for the OP_STAT/OP_CHANGE after */
	OP_STAT,   /* a field of the snapshot */
	OP_CHANGE, /* a field of the snapshot's change n */
	OP_TICKET, /* a field of ticket slot n */
	OP_SAVED,  /* a field of the saved record */
};

/* How a check compares what it sees with what it wants. */
enum cmp { EQ, GT };

/* One step of a scenario. */
struct step {
	enum op op;
	int key;     /* which field (OP_SET, OP_STAT, OP_TICKET, ...) */
	int n;	     /* a count, ticket slot, transition or change index */
	uint64_t at; /* when it happens or is looked at (monotonic ms) */
	uint64_t arg;
	int err;      /* the error kind of a failure */
	bool ok;      /* success or failure (OP_ATTEMPTS, OP_RECORD) */
	enum cmp cmp; /* for a check */
	double v;     /* the value set, or wanted */
};

/* A named scenario: its steps end with OP_END. */
struct scenario {
	const char *name;
	const struct step *steps;
};

/* One step, as designated initializers. */
#define STEP(...)                                                              \
	{                                                                      \
		__VA_ARGS__                                                    \
	}

/* Things that happen. Times are absolute (T0 is the breaker's birth). */
#define SET(f, val) STEP(.op = OP_SET, .key = KC_##f, .v = (val))
#define FAILS(cnt, t, e)                                                       \
	STEP(.op = OP_ATTEMPTS, .n = (cnt), .at = (t), .err = BREAKER_ERR_##e)
#define OKS(cnt, t) STEP(.op = OP_ATTEMPTS, .n = (cnt), .at = (t), .ok = true)
#define ADMIT(k, t) STEP(.op = OP_ADMIT, .n = (k), .at = (t))
#define REC(k, t, good, e)                                                     \
	STEP(.op = OP_RECORD, .n = (k), .at = (t), .ok = (good), .err = (e))
#define REC_OK(k, t) REC(k, t, true, BREAKER_ERR_OTHER)
#define REC_FAIL(k, t, e) REC(k, t, false, BREAKER_ERR_##e)
#define CANCEL(k) STEP(.op = OP_CANCEL, .n = (k))
#define UNREJECT(k) STEP(.op = OP_UNREJECT, .n = (k))
#define PROBE(k, t, given)                                                     \
	STEP(.op = OP_PROBE, .n = (k), .at = (t), .v = (given))
#define TICK(t) STEP(.op = OP_TICK, .at = (t))
#define FOPEN(life, t) STEP(.op = OP_FORCE_OPEN, .at = (t), .arg = (life))
#define FCLOSED(life, t) STEP(.op = OP_FORCE_CLOSED, .at = (t), .arg = (life))
#define RESET(t) STEP(.op = OP_RESET, .at = (t))
#define RECONF(t) STEP(.op = OP_RECONF, .at = (t))
#define RESTART(t, later) STEP(.op = OP_RESTART, .at = (t), .arg = (later))
#define SVSET(f, val) STEP(.op = OP_SAVE_SET, .key = KV_##f, .v = (val))
#define RESTORE(t) STEP(.op = OP_RESTORE, .at = (t))

/* Things to check. */
#define STATE(t, s) STEP(.op = OP_STATE, .at = (t), .v = BREAKER_##s)
#define RETRY(t, ms) STEP(.op = OP_RETRY, .at = (t), .v = (ms))
#define RETRY_GT(t, ms) STEP(.op = OP_RETRY, .at = (t), .cmp = GT, .v = (ms))
#define DEADLINE(t) STEP(.op = OP_DEADLINE, .v = (t))
#define DEADLINE_GT(t) STEP(.op = OP_DEADLINE, .cmp = GT, .v = (t))
#define NTR(cnt) STEP(.op = OP_NTR, .v = (cnt))
#define TR(i, from, to, why)                                                   \
	STEP(.op = OP_TR, .n = (i), .key = BREAKER_##from, .v = BREAKER_##to,  \
	    .arg = BREAKER_REASON_##why)
#define TRF(i, f, val)                                                         \
	STEP(.op = OP_TR_FIELD, .n = (i), .key = KR_##f, .v = (val))
#define SNAP(t) STEP(.op = OP_SNAP, .at = (t))
#define ST(f, val) STEP(.op = OP_STAT, .key = KS_##f, .v = (val))
#define ST_ERR(e, val)                                                         \
	STEP(.op = OP_STAT, .key = KS_failures_by_error, .n = BREAKER_ERR_##e, \
	    .v = (val))
#define CH(i, f, val) STEP(.op = OP_CHANGE, .n = (i), .key = KH_##f, .v = (val))
#define TK(k, f, val) STEP(.op = OP_TICKET, .n = (k), .key = KT_##f, .v = (val))
#define SV(f, val) STEP(.op = OP_SAVED, .key = KV_##f, .v = (val))

/* Short hands for what many rows do. */
#define TRIP(cnt, t) FAILS(cnt, t, REFUSED), STATE(t, OPEN)
#define REJECTED(t) ADMIT(9, t), TK(9, admitted, 0)
#define ADMITTED(t) ADMIT(9, t), TK(9, admitted, 1)
#define TRIAL(k, t)                                                            \
	ADMIT(k, t), TK(k, admitted, 1), TK(k, trial, 1),                      \
	    TK(k, verdict, BREAKER_ADMITTED)
/* A trial failed at t (when open ends); the next opening lasts ms. */
#define FAIL_TRIAL(t, ms) FAILS(1, t, REFUSED), RETRY(t, ms), STATE(t, OPEN)
#define TRX(i, from, to, why, retry, t)                                        \
	TR(i, from, to, why), TRF(i, retry_after_ms, retry), TRF(i, now_ms, t)
/* Force open twice (the second no change) and reset a ms later. */
#define FLAP(t) FOPEN(0, t), FOPEN(0, t), RESET((t) + 1)
/* nf failures then ns successes in a 10-call window judged by rate only. */
#define RATE_ROW(name, rate, nf, ns, s)                                        \
	SCENARIO(name, SET(failure_threshold, 0),                              \
	    SET(failure_rate_threshold, rate), SET(window_calls, 10),          \
	    SET(minimum_calls, 10), FAILS(nf, T0, REFUSED), OKS(ns, T0),       \
	    STATE(T0, s))

#define SCENARIO(name, ...)                                                    \
	{                                                                      \
		name, (const struct step[])                                    \
		{                                                              \
			__VA_ARGS__,                                           \
			{                                                      \
				.op = OP_END                                   \
			}                                                      \
		}                                                              \
	}

/* The rules of SPEC.md section 4, one scenario per rule or edge. */
static const struct scenario scenarios[] = {
	/* A new breaker is closed, admits, and has an empty window. */
	SCENARIO("new_closed", ADMIT(0, T0), TK(0, admitted, 1),
	    TK(0, verdict, BREAKER_ADMITTED), TK(0, state, BREAKER_CLOSED),
	    TK(0, trial, 0), TK(0, retry_after_ms, -1), RETRY(T0, -1),
	    DEADLINE(0), SNAP(T0), ST(state, BREAKER_CLOSED),
	    ST(state_since_ms, T0), ST(retry_after_ms, -1),
	    ST(recovery_timeout_ms, 30000), ST(window_attempts, 0),
	    ST(failure_rate, 0.0), ST(success_rate, 1.0),
	    ST(attempts_total, 0)),
	/*
	 * STATS "transitions": the last BREAKER_HISTORY changes, newest
	 * first, each with its time and reason; older ones fall out,
	 * repeated forces are no change.
	 */
	SCENARIO("history", SNAP(T0), ST(nchanges, 0), FAILS(5, T0, REFUSED),
	    TICK(T0 + 30000), OKS(1, T0 + 30001), OKS(1, T0 + 30002),
	    SNAP(T0 + 30003), ST(nchanges, 3), CH(0, from, BREAKER_HALF_OPEN),
	    CH(0, to, BREAKER_CLOSED),
	    CH(0, reason, BREAKER_REASON_TRIALS_SUCCEEDED),
	    CH(0, at_ms, T0 + 30002), CH(1, to, BREAKER_HALF_OPEN),
	    CH(1, reason, BREAKER_REASON_RECOVERY_TIMEOUT),
	    CH(1, at_ms, T0 + 30000), CH(2, from, BREAKER_CLOSED),
	    CH(2, to, BREAKER_OPEN), CH(2, reason, BREAKER_REASON_CONSECUTIVE),
	    CH(2, at_ms, T0),
	    /* 20 more changes: only the newest 16 are kept. */
	    FLAP(T0 + 30010), FLAP(T0 + 30012), FLAP(T0 + 30014),
	    FLAP(T0 + 30016), FLAP(T0 + 30018), FLAP(T0 + 30020),
	    FLAP(T0 + 30022), FLAP(T0 + 30024), FLAP(T0 + 30026),
	    FLAP(T0 + 30028), SNAP(T0 + 30100), ST(nchanges, BREAKER_HISTORY),
	    CH(0, to, BREAKER_CLOSED), CH(0, reason, BREAKER_REASON_MANUAL),
	    CH(0, at_ms, T0 + 30029), CH(1, to, BREAKER_FORCED_OPEN),
	    CH(1, at_ms, T0 + 30028), CH(15, at_ms, T0 + 30014)),
	/* failure_threshold - 1 failures keep it closed; the next opens it. */
	SCENARIO("consecutive_threshold", FAILS(1, T0, REFUSED),
	    FAILS(1, T0 + 1, REFUSED), FAILS(1, T0 + 2, REFUSED),
	    FAILS(1, T0 + 3, REFUSED), STATE(T0 + 4, CLOSED), NTR(0),
	    FAILS(1, T0 + 4, TIMEOUT), NTR(1), TR(0, CLOSED, OPEN, CONSECUTIVE),
	    TRF(0, consecutive_failures, 5), TRF(0, window_attempts, 5),
	    TRF(0, window_failures, 5), TRF(0, retry_after_ms, 30000),
	    TRF(0, now_ms, T0 + 4), SNAP(T0 + 4), ST(opened_total, 1),
	    ST(state_since_ms, T0 + 4), ST(failures_total, 5)),
	/* Any success resets the consecutive count. */
	SCENARIO("success_resets_consecutive", FAILS(4, T0, REFUSED),
	    OKS(1, T0), SNAP(T0), ST(consecutive_failures, 0),
	    FAILS(4, T0, REFUSED), SNAP(T0), ST(state, BREAKER_CLOSED),
	    ST(consecutive_failures, 4), ST(window_failures, 8),
	    FAILS(1, T0, REFUSED), STATE(T0, OPEN)),
	/* failure_threshold 0 turns the consecutive rule off. */
	SCENARIO("consecutive_off", SET(failure_threshold, 0),
	    SET(failure_rate_threshold, 50), SET(minimum_calls, 100),
	    SET(window_calls, 100), FAILS(99, T0, REFUSED), STATE(T0, CLOSED)),
	/* The rate is not judged on fewer than minimum_calls attempts. */
	SCENARIO("rate_too_few_calls", SET(failure_threshold, 0),
	    SET(failure_rate_threshold, 50), FAILS(9, T0, REFUSED),
	    STATE(T0, CLOSED), FAILS(1, T0, REFUSED), STATE(T0, OPEN),
	    TR(0, CLOSED, OPEN, RATE), TRF(0, window_attempts, 10)),
	/* Below the rate stays closed; at and above it opens. */
	RATE_ROW("rate_50_below", 50, 4, 6, CLOSED),
	RATE_ROW("rate_50_at", 50, 5, 5, OPEN),
	RATE_ROW("rate_50_above", 50, 6, 4, OPEN),
	RATE_ROW("rate_12.5_below", 12.5, 1, 9, CLOSED),
	RATE_ROW("rate_10_at", 10, 1, 9, OPEN),
	/* Five failures with only four calls more: too few to judge. */
	RATE_ROW("rate_50_nine_calls", 50, 5, 4, CLOSED),
	RATE_ROW("rate_100_below", 100, 9, 1, CLOSED),
	RATE_ROW("rate_100_at", 100, 10, 0, OPEN),
	/* When both rules fire on one outcome the reason is consecutive. */
	SCENARIO("both_rules_at_once", SET(failure_threshold, 3),
	    SET(failure_rate_threshold, 50), SET(minimum_calls, 3), TRIP(3, T0),
	    TR(0, CLOSED, OPEN, CONSECUTIVE)),
	/* A count window forgets the oldest outcome when it is full. */
	SCENARIO("window_count_eviction", SET(failure_threshold, 0),
	    SET(failure_rate_threshold, 75), SET(window_calls, 4),
	    SET(minimum_calls, 4), FAILS(2, T0, REFUSED),
	    OKS(3, T0), /* [F S S S] */
	    OKS(1, T0), /* [S S S S] */
	    SNAP(T0), ST(window_attempts, 4), ST(window_failures, 0),
	    FAILS(2, T0, REFUSED), /* [S S F F]: 50% */
	    SNAP(T0), ST(state, BREAKER_CLOSED), ST(window_failures, 2),
	    ST(failure_rate, 0.5), ST(success_rate, 0.5),
	    FAILS(1, T0, REFUSED), /* [S F F F]: 75% */
	    STATE(T0, OPEN)),
	/* A duration window drops outcomes bucket by bucket (20 of 500 ms). */
	SCENARIO("window_time_eviction", SET(failure_threshold, 0),
	    SET(failure_rate_threshold, 70), SET(window_ms, 10000),
	    SET(minimum_calls, 3), FAILS(1, T0, REFUSED),
	    FAILS(1, T0 + 499, REFUSED), /* same bucket */
	    OKS(1, T0 + 500), SNAP(T0 + 9999), ST(window_attempts, 3),
	    ST(window_failures, 2), SNAP(T0 + 10000), ST(window_attempts, 1),
	    ST(window_failures, 0),
	    /* With the two failures still in, this one would open it. */
	    FAILS(1, T0 + 10000, REFUSED), STATE(T0 + 10000, CLOSED),
	    SNAP(T0 + 10500), ST(window_attempts, 1),
	    /* A long silence empties it whole. */
	    SNAP(T0 + 1000000), ST(window_attempts, 0), ST(success_rate, 1.0),
	    FAILS(1, T0 + 1000000, REFUSED), FAILS(1, T0 + 1000001, REFUSED),
	    STATE(T0 + 1000001, CLOSED), FAILS(1, T0 + 1000002, REFUSED),
	    STATE(T0 + 1000002, OPEN)),
	/* A duration shorter than 20 ms gets 1 ms buckets. */
	SCENARIO("window_time_small", SET(failure_threshold, 0),
	    SET(failure_rate_threshold, 50), SET(window_ms, 5),
	    SET(minimum_calls, 100), FAILS(1, T0, REFUSED),
	    FAILS(1, T0 + 4, REFUSED), SNAP(T0 + 4), ST(window_attempts, 2),
	    SNAP(T0 + 5), ST(window_attempts, 1), SNAP(T0 + 9),
	    ST(window_attempts, 0)),
	/* An open circuit rejects with the time left and counts rejects. */
	SCENARIO("open_rejects", TRIP(5, T0), ADMIT(0, T0 + 1000),
	    TK(0, admitted, 0), TK(0, verdict, BREAKER_REJECT_OPEN),
	    TK(0, state, BREAKER_OPEN), TK(0, retry_after_ms, 29000),
	    ADMIT(0, T0 + 29999), TK(0, retry_after_ms, 1), SNAP(T0 + 29999),
	    ST(rejected_open, 2), ST(rejected_total, 2), ST(attempts_total, 5),
	    ST(retry_after_ms, 1), ST(recovery_timeout_ms, 30000)),
	/* breaker_tick moves open to half_open exactly at the deadline. */
	SCENARIO("tick_deadline", TRIP(5, T0), DEADLINE(T0 + 30000),
	    RETRY(T0 + 10000, 20000), TICK(T0 + 29999), NTR(1),
	    TICK(T0 + 30000), NTR(2), TR(1, OPEN, HALF_OPEN, RECOVERY_TIMEOUT),
	    TRF(1, retry_after_ms, 0), TRF(1, now_ms, T0 + 30000), DEADLINE(0),
	    RETRY(T0 + 30001, 0), TICK(T0 + 90000), NTR(2)),
	/* Without a tick, the first admit after the deadline finds half_open. */
	SCENARIO("admit_applies_due", TRIP(5, T0), ADMIT(0, T0 + 45000),
	    TK(0, admitted, 1), TK(0, trial, 1),
	    TK(0, state, BREAKER_HALF_OPEN), NTR(2),
	    TRF(1, now_ms, T0 + 45000)),
	/* half_open admits half_open_max_calls trials, then rejects. */
	SCENARIO("half_open_slots", TRIP(5, T0), TICK(T0 + 30000),
	    TRIAL(0, T0 + 30000), TRIAL(1, T0 + 30000), TRIAL(2, T0 + 30000),
	    ADMIT(3, T0 + 30001), TK(3, admitted, 0), TK(3, trial, 0),
	    TK(3, verdict, BREAKER_REJECT_HALF_OPEN), TK(3, retry_after_ms, 0),
	    SNAP(T0 + 30001), ST(rejected_half_open, 1), ST(rejected_total, 1),
	    ST(retry_after_ms, 0)),
	/* success_threshold trial successes close it and clear the rest. */
	SCENARIO("half_open_success_closes", SET(recovery_backoff, 2),
	    TRIP(5, T0), TICK(T0 + 30000),
	    FAILS(1, T0 + 30000, REFUSED), /* backoff step 1 */
	    TICK(T0 + 90000), ADMIT(1, T0 + 90000), ADMIT(2, T0 + 90000),
	    REC_OK(1, T0 + 90001), STATE(T0 + 90001, HALF_OPEN),
	    REC_OK(2, T0 + 90002), NTR(5),
	    TR(4, HALF_OPEN, CLOSED, TRIALS_SUCCEEDED),
	    TRF(4, retry_after_ms, -1), TRF(4, window_attempts, 0),
	    SNAP(T0 + 90002), ST(state, BREAKER_CLOSED),
	    ST(consecutive_failures, 0), ST(window_attempts, 0),
	    ST(recovery_timeout_ms, 30000), /* backoff gone */
	    ST(opened_total, 2),
	    /* The next trip opens for the base timeout again. */
	    TRIP(5, T0 + 100000), RETRY(T0 + 100000, 30000)),
	/* One trial failure opens it again, for the backed-off time. */
	SCENARIO("half_open_failure_reopens", SET(recovery_backoff, 1.5),
	    TRIP(5, T0), TICK(T0 + 30000), ADMIT(1, T0 + 30000),
	    ADMIT(2, T0 + 30000), REC_OK(1, T0 + 30001), SNAP(T0 + 30001),
	    ST(recovery_timeout_ms, 45000), /* if this fails */
	    REC_FAIL(2, T0 + 30002, TIMEOUT), NTR(3),
	    TR(2, HALF_OPEN, OPEN, HALF_OPEN_FAILURE),
	    TRF(2, retry_after_ms, 45000), SNAP(T0 + 30002),
	    ST(opened_total, 2), ST(recovery_timeout_ms, 45000),
	    DEADLINE(T0 + 30002 + 45000),
	    /* The next period starts with no trial successes. */
	    ADMIT(1, T0 + 75002), REC_OK(1, T0 + 75002),
	    STATE(T0 + 75002, HALF_OPEN)),
	/* The open duration doubles per failed trial up to the cap. */
	SCENARIO("backoff_growth_and_cap", SET(recovery_timeout_ms, 1000),
	    SET(recovery_backoff, 2), SET(recovery_timeout_max_ms, 5000),
	    TRIP(5, T0), RETRY(T0, 1000), FAIL_TRIAL(T0 + 1000, 2000),
	    FAIL_TRIAL(T0 + 3000, 4000), FAIL_TRIAL(T0 + 7000, 5000),
	    FAIL_TRIAL(T0 + 12000, 5000)),
	/* A cap below recovery_timeout caps the first opening too. */
	SCENARIO("backoff_cap_below_base", SET(recovery_timeout_max_ms, 1000),
	    TRIP(5, T0), RETRY(T0, 1000)),
	/* record applies a due expiry first, so its outcome lands after. */
	SCENARIO("record_applies_due", FCLOSED(1000, T0), ADMIT(0, T0),
	    REC_FAIL(0, T0 + 1000, REFUSED), NTR(2), TRF(1, now_ms, T0 + 1000),
	    SNAP(T0 + 5000), ST(failures_total, 1), ST(window_attempts, 0)),
	/* An outcome from an ended period counts in totals only. */
	SCENARIO("late_outcome", ADMIT(0, T0), TRIP(5, T0),
	    REC_FAIL(0, T0 + 1, UNREACHABLE), SNAP(T0 + 1),
	    ST(attempts_total, 6), ST_ERR(UNREACHABLE, 1),
	    ST(consecutive_failures, 5), ST(window_attempts, 5),
	    /* A trial of an ended half_open period cannot close a later one. */
	    ADMIT(0, T0 + 30000), /* the tick happens here: a trial */
	    TK(0, trial, 1), REC_FAIL(0, T0 + 30000, REFUSED),
	    STATE(T0 + 30000, OPEN), TICK(T0 + 60000), ADMIT(1, T0 + 60000),
	    REC_OK(1, T0 + 60000),
	    /* the first period's trial ticket, even reported twice */
	    REC_OK(0, T0 + 60001), REC_OK(0, T0 + 60001),
	    STATE(T0 + 60001, HALF_OPEN), SNAP(T0 + 60001),
	    ST(successes_total, 3), ST(attempts_total, 10)),
	/* force-open rejects everything until reset; not counted as opened. */
	SCENARIO("forced_open", FOPEN(0, T0),
	    TR(0, CLOSED, FORCED_OPEN, MANUAL), TRF(0, retry_after_ms, -1),
	    ADMIT(0, T0 + 1000000000), TK(0, admitted, 0),
	    TK(0, verdict, BREAKER_REJECT_FORCED_OPEN),
	    TK(0, retry_after_ms, -1), DEADLINE(0), SNAP(T0 + 1000000000),
	    ST(state, BREAKER_FORCED_OPEN), ST(opened_total, 0),
	    ST(rejected_forced_open, 1), ST(rejected_total, 1),
	    RESET(T0 + 1000000001), TR(1, FORCED_OPEN, CLOSED, MANUAL),
	    ADMITTED(T0 + 1000000001)),
	/* A force with a lifetime ends in closed, window cleared, on its own. */
	SCENARIO("forced_open_lifetime", FAILS(1, T0, REFUSED),
	    FOPEN(60000, T0), TRF(0, retry_after_ms, 60000),
	    DEADLINE(T0 + 60000), ADMIT(0, T0 + 20000),
	    TK(0, retry_after_ms, 40000), SNAP(T0 + 20000),
	    ST(expires_in_ms, 40000), RETRY(T0 + 59999, 1), TICK(T0 + 60000),
	    NTR(2), TR(1, FORCED_OPEN, CLOSED, EXPIRED), DEADLINE(0),
	    SNAP(T0 + 60000), ST(window_attempts, 0),
	    ST(consecutive_failures, 0), ST(attempts_total, 1)),
	/* force-closed admits through any failure rate, and counts. */
	SCENARIO("forced_closed", TRIP(5, T0), FCLOSED(5000, T0 + 1),
	    TR(1, OPEN, FORCED_CLOSED, MANUAL), TRF(1, retry_after_ms, -1),
	    FAILS(50, T0 + 2, SLOW), SNAP(T0 + 2),
	    ST(state, BREAKER_FORCED_CLOSED), ST(retry_after_ms, -1),
	    ST(expires_in_ms, 4999), ST(consecutive_failures, 55),
	    ST(window_attempts, 20), ST_ERR(SLOW, 50), DEADLINE(T0 + 5001),
	    ADMITTED(T0 + 5000), STATE(T0 + 5001, CLOSED),
	    TR(2, FORCED_CLOSED, CLOSED, EXPIRED), SNAP(T0 + 5001),
	    ST(expires_in_ms, -1), ST(window_attempts, 0),
	    ST(consecutive_failures, 0), ST(opened_total, 1)),
	/* Forcing the state it is already in only renews the lifetime. */
	SCENARIO("force_again", FOPEN(1000, T0), FOPEN(5000, T0 + 500), NTR(1),
	    DEADLINE(T0 + 5500), FOPEN(0, T0 + 600), DEADLINE(0),
	    STATE(T0 + 100000, FORCED_OPEN), FCLOSED(0, T0 + 100000), NTR(2),
	    /* An absurd lifetime is clamped, not wrapped round. */
	    FOPEN(UINT64_MAX, T0 + 100000), RETRY_GT(T0 + 100000, 0),
	    DEADLINE_GT(T0 + 100000)),
	/* reset goes back to closed from anywhere and keeps the totals. */
	SCENARIO("reset_keeps_totals", SET(recovery_backoff, 2), TRIP(5, T0),
	    FAIL_TRIAL(T0 + 30000, 60000), REJECTED(T0 + 30100),
	    RESET(T0 + 30100), NTR(4), TR(3, OPEN, CLOSED, MANUAL),
	    SNAP(T0 + 30100), ST(state, BREAKER_CLOSED),
	    ST(state_since_ms, T0 + 30100), ST(consecutive_failures, 0),
	    ST(window_attempts, 0), ST(recovery_timeout_ms, 30000),
	    ST(attempts_total, 6), ST(failures_total, 6), ST(rejected_open, 1),
	    ST(opened_total, 2),
	    /* A reset of a closed circuit clears the window, says nothing. */
	    ADMIT(1, T0 + 30200), FAILS(1, T0 + 30200, REFUSED),
	    RESET(T0 + 30300), NTR(4), REC_FAIL(1, T0 + 30300, REFUSED),
	    SNAP(T0 + 30300), ST(window_attempts, 0),
	    ST(consecutive_failures, 0), ST(state_since_ms, T0 + 30100),
	    ST(attempts_total, 8)),
	/* dry_run runs the machine and counts would-be rejects, admitting. */
	SCENARIO("dry_run", SET(dry_run, 1), TRIP(5, T0), ADMIT(0, T0 + 1),
	    TK(0, admitted, 1), TK(0, verdict, BREAKER_REJECT_OPEN),
	    TK(0, retry_after_ms, 29999), TK(0, trial, 0), REC_OK(0, T0 + 2),
	    SNAP(T0 + 2), ST(state, BREAKER_OPEN), ST(consecutive_failures, 5),
	    ST(rejected_open, 1), ST(attempts_total, 6), TICK(T0 + 30000),
	    ADMIT(1, T0 + 30000), TK(1, trial, 1), ADMIT(2, T0 + 30000),
	    TK(2, trial, 1), ADMIT(3, T0 + 30000), TK(3, trial, 1),
	    ADMIT(0, T0 + 30000), TK(0, admitted, 1), TK(0, trial, 0),
	    TK(0, verdict, BREAKER_REJECT_HALF_OPEN),
	    /* The would-be reject's outcome drives nothing, not a failure. */
	    REC_FAIL(0, T0 + 30001, REFUSED), STATE(T0 + 30001, HALF_OPEN),
	    REC_OK(1, T0 + 30001), REC_OK(2, T0 + 30001),
	    STATE(T0 + 30001, CLOSED), NTR(3), FOPEN(0, T0 + 30002),
	    ADMIT(0, T0 + 30002), TK(0, admitted, 1),
	    TK(0, verdict, BREAKER_REJECT_FORCED_OPEN), SNAP(T0 + 30002),
	    ST(rejected_total, 3)),
	/* cancel gives a half_open slot back and counts nothing. */
	SCENARIO("cancel", SET(half_open_max_calls, 1),
	    SET(success_threshold, 1), ADMIT(0, T0),
	    CANCEL(0), /* closed: nothing to give back */
	    TRIP(5, T0), TICK(T0 + 30000), ADMIT(0, T0 + 30000),
	    TK(0, trial, 1), REJECTED(T0 + 30000), CANCEL(0),
	    ADMIT(1, T0 + 30000), TK(1, admitted, 1), TK(1, trial, 1),
	    REC_FAIL(1, T0 + 30001, REFUSED), TICK(T0 + 60001),
	    ADMIT(0, T0 + 60001),
	    /* A ticket from an earlier period frees no slot in this one. */
	    CANCEL(1), REJECTED(T0 + 60001), SNAP(T0 + 60001),
	    ST(attempts_total, 6), ST(rejected_half_open, 2),
	    REC_OK(0, T0 + 60002), STATE(T0 + 60002, CLOSED)),
	/* unreject takes back exactly the reject its ticket counted. */
	SCENARIO("unreject", ADMIT(1, T0),
	    UNREJECT(1), /* admitted: nothing to take back */
	    TRIP(5, T0), ADMIT(0, T0 + 1), TK(0, verdict, BREAKER_REJECT_OPEN),
	    ADMIT(9, T0 + 1), SNAP(T0 + 1), ST(rejected_open, 2), UNREJECT(0),
	    SNAP(T0 + 1), ST(rejected_open, 1), ST(rejected_total, 1),
	    ST(state, BREAKER_OPEN), FOPEN(0, T0 + 2), ADMIT(0, T0 + 2),
	    UNREJECT(0), SNAP(T0 + 2), ST(rejected_forced_open, 0),
	    ST(rejected_total, 1)),
	/* The callback sees every change of a full cycle, in order. */
	SCENARIO("callback_sequence", SET(failure_threshold, 0),
	    SET(failure_rate_threshold, 50), SET(minimum_calls, 2),
	    SET(recovery_timeout_ms, 1000), SET(recovery_backoff, 3),
	    SET(half_open_max_calls, 1), SET(success_threshold, 1), OKS(1, T0),
	    FAILS(1, T0, REFUSED), TICK(T0 + 1000),
	    FAILS(1, T0 + 1001, REFUSED), TICK(T0 + 4001), OKS(1, T0 + 4002),
	    FOPEN(7000, T0 + 5000), TICK(T0 + 12000), FCLOSED(0, T0 + 12001),
	    RESET(T0 + 12002), NTR(9), TRX(0, CLOSED, OPEN, RATE, 1000, T0),
	    TRX(1, OPEN, HALF_OPEN, RECOVERY_TIMEOUT, 0, T0 + 1000),
	    TRX(2, HALF_OPEN, OPEN, HALF_OPEN_FAILURE, 3000, T0 + 1001),
	    TRX(3, OPEN, HALF_OPEN, RECOVERY_TIMEOUT, 0, T0 + 4001),
	    TRX(4, HALF_OPEN, CLOSED, TRIALS_SUCCEEDED, -1, T0 + 4002),
	    TRX(5, CLOSED, FORCED_OPEN, MANUAL, 7000, T0 + 5000),
	    TRX(6, FORCED_OPEN, CLOSED, EXPIRED, -1, T0 + 12000),
	    TRX(7, CLOSED, FORCED_CLOSED, MANUAL, -1, T0 + 12001),
	    TRX(8, FORCED_CLOSED, CLOSED, MANUAL, -1, T0 + 12002),
	    TRF(0, window_attempts, 2), TRF(0, window_failures, 1),
	    TRF(0, consecutive_failures, 1)),
	/* retry_after in each state. */
	SCENARIO("retry_after_states", RETRY(T0, -1), TRIP(5, T0),
	    RETRY(T0, 30000), RETRY(T0 + 29999, 1),
	    RETRY(T0 + 30000, 0), /* half_open */
	    STATE(T0 + 30000, HALF_OPEN), FOPEN(0, T0 + 30000),
	    RETRY(T0 + 30000, -1), FOPEN(2500, T0 + 30000),
	    RETRY(T0 + 31000, 1500), FCLOSED(2500, T0 + 31000),
	    RETRY(T0 + 31000, -1)),
	/* Each error kind is counted apart; a success ignores the kind. */
	SCENARIO("error_kinds", SET(failure_threshold, 0),
	    SET(failure_rate_threshold, 100), SET(minimum_calls, 1000),
	    FAILS(1, T0, REFUSED), FAILS(2, T0, TIMEOUT),
	    FAILS(3, T0, UNREACHABLE), FAILS(4, T0, EARLY_CLOSE),
	    FAILS(5, T0, SLOW), FAILS(6, T0, DNS), FAILS(7, T0, OTHER),
	    ADMIT(0, T0), REC(0, T0, false, 99), /* out of range: other */
	    ADMIT(0, T0), REC(0, T0, true, BREAKER_ERR_TIMEOUT), SNAP(T0),
	    ST_ERR(REFUSED, 1), ST_ERR(TIMEOUT, 2), ST_ERR(UNREACHABLE, 3),
	    ST_ERR(EARLY_CLOSE, 4), ST_ERR(SLOW, 5), ST_ERR(DNS, 6),
	    ST_ERR(OTHER, BREAKER_ERR_OTHER + 2),
	    ST(failures_total,
		BREAKER_ERR_COUNT *(BREAKER_ERR_COUNT + 1) / 2 + 1),
	    ST(successes_total, 1),
	    ST(attempts_total,
		BREAKER_ERR_COUNT *(BREAKER_ERR_COUNT + 1) / 2 + 2)),
	/* reconfigure keeps state and totals, reshapes the window. */
	SCENARIO("reconfigure", FAILS(2, T0, REFUSED),
	    SET(failure_threshold, 3), RECONF(T0), SNAP(T0),
	    ST(window_attempts, 2), /* same shape: kept */
	    ST(consecutive_failures, 2), FAILS(1, T0, REFUSED), STATE(T0, OPEN),
	    SET(window_calls, 50), SET(recovery_timeout_ms, 1000),
	    RECONF(T0 + 10), SNAP(T0 + 10), ST(state, BREAKER_OPEN),
	    ST(window_attempts, 0), /* new shape: cleared */
	    ST(attempts_total, 3), ST(opened_total, 1),
	    /* The running opening keeps its deadline. */
	    RETRY(T0 + 10, 29990), SET(window_ms, 1000), RECONF(T0 + 20),
	    SET(dry_run, 1), RECONF(T0 + 20), ADMITTED(T0 + 20)),
	/* A time older than one already seen is taken as the latest one. */
	SCENARIO("time_never_goes_back", TRIP(5, T0 + 1000), ADMIT(0, T0 + 500),
	    TK(0, retry_after_ms, 30000), RETRY(T0, 30000)),
	/* Nonsense configs are brought back into range, not wedging. */
	SCENARIO("conf_clamps", SET(half_open_max_calls, 0),
	    SET(success_threshold, 5), SET(recovery_backoff, 0.5),
	    SET(recovery_timeout_ms, 100), TRIP(5, T0), ADMIT(0, T0 + 100),
	    TK(0, trial, 1), REJECTED(T0 + 100), REC_FAIL(0, T0 + 100, REFUSED),
	    RETRY(T0 + 100, 100), ADMIT(0, T0 + 200), REC_OK(0, T0 + 200),
	    STATE(T0 + 200, CLOSED)),
	/* An open circuit saved and restored keeps the rest of its time. */
	SCENARIO("restore_open", TRIP(5, T0), RESTART(T0 + 10000, T0 + 500),
	    SV(state, BREAKER_OPEN), SV(age_ms, 10000), SV(remaining_ms, 20000),
	    SV(open_ms, 30000),
	    /* Here the new run's clock starts lower: only durations carry. */
	    SNAP(T0 + 500), ST(state, BREAKER_OPEN), ST(retry_after_ms, 20000),
	    ST(recovery_timeout_ms, 30000),
	    ST(state_since_ms, T0 + 500 - 10000), ST(opened_total, 0),
	    DEADLINE(T0 + 20500), REJECTED(T0 + 20499),
	    /* No callback for the restore itself; time moves it on. */
	    NTR(0), TICK(T0 + 20500), NTR(1),
	    TR(0, OPEN, HALF_OPEN, RECOVERY_TIMEOUT)),
	/* An open period that ended while down comes back half_open. */
	SCENARIO("restore_open_expired", SET(recovery_backoff, 2),
	    SVSET(state, BREAKER_OPEN), SVSET(remaining_ms, 0),
	    SVSET(open_ms, 60000), SVSET(backoff_steps, 1), RESTORE(T0),
	    SNAP(T0), ST(state, BREAKER_HALF_OPEN), ST(state_since_ms, T0),
	    /* The next opening, if this trial fails, is one step further. */
	    ST(recovery_timeout_ms, 120000), ADMIT(0, T0), TK(0, admitted, 1),
	    TK(0, trial, 1), REC_FAIL(0, T0 + 1, REFUSED),
	    RETRY(T0 + 1, 120000)),
	/* A force keeps the rest of its lifetime, or none. */
	SCENARIO("restore_forced_open_lifetime", FOPEN(60000, T0),
	    RESTART(T0 + 15000, T0), SV(state, BREAKER_FORCED_OPEN),
	    SV(remaining_ms, 45000), ADMIT(0, T0 + 1000),
	    TK(0, verdict, BREAKER_REJECT_FORCED_OPEN),
	    TK(0, retry_after_ms, 44000), STATE(T0 + 45000, CLOSED)),
	SCENARIO("restore_forced_open_until_reset", FOPEN(0, T0),
	    RESTART(T0 + 15000, T0), SV(remaining_ms, -1),
	    RETRY(T0 + 999999, -1), STATE(T0 + 999999, FORCED_OPEN)),
	SCENARIO("restore_forced_closed", FCLOSED(5000, T0),
	    RESTART(T0 + 1000, T0), STATE(T0 + 3999, FORCED_CLOSED),
	    STATE(T0 + 4000, CLOSED)),
	/* A force that ran out while down comes back closed. */
	SCENARIO("restore_forced_expired", SVSET(state, BREAKER_FORCED_OPEN),
	    SVSET(remaining_ms, 0), SVSET(backoff_steps, 3), RESTORE(T0),
	    STATE(T0, CLOSED), ADMITTED(T0)),
	/* Backoff comes back with the state: the next opening backs off. */
	SCENARIO("restore_backoff", SET(recovery_timeout_ms, 1000),
	    SET(recovery_backoff, 2), SET(recovery_timeout_max_ms, 60000),
	    TRIP(5, T0), FAIL_TRIAL(T0 + 1000, 2000),
	    FAIL_TRIAL(T0 + 3000, 4000), RESTART(T0 + 4000, T0),
	    SV(backoff_steps, 2), RETRY(T0, 3000), FAIL_TRIAL(T0 + 3000, 8000)),
	/* closed and half_open restore as themselves. */
	SCENARIO("restore_closed", RESTART(T0 + 5, T0),
	    SV(state, BREAKER_CLOSED), SV(remaining_ms, -1), STATE(T0, CLOSED)),
	SCENARIO("restore_half_open", TRIP(5, T0), TICK(T0 + 30000),
	    RESTART(T0 + 30001, T0), SV(state, BREAKER_HALF_OPEN),
	    STATE(T0, HALF_OPEN)),
	/* A saved state that is no state changes nothing. */
	SCENARIO("restore_bad_state", SVSET(state, BREAKER_STATE_COUNT),
	    RESTORE(T0), STATE(T0, CLOSED)),
	/*
	 * recovery_probe = connect: half_open turns every client away (told
	 * to retry after what is left of the probe's connect_timeout, at
	 * least 1 s) and hands its slot to one probe at a time;
	 * success_threshold probes close the circuit. No probe outside
	 * half_open.
	 */
	SCENARIO("probe_closes", SET(recovery_probe, BREAKER_PROBE_CONNECT),
	    PROBE(9, T0, 0),		      /* closed */
	    TRIP(5, T0), PROBE(9, T0 + 1, 0), /* open */
	    TICK(T0 + 30000), STATE(T0 + 30000, HALF_OPEN),
	    ADMIT(1, T0 + 30000), TK(1, admitted, 0),
	    TK(1, verdict, BREAKER_REJECT_HALF_OPEN),
	    TK(1, retry_after_ms, 1000), PROBE(0, T0 + 30000, 1),
	    TK(0, admitted, 1), TK(0, trial, 1), TK(0, probe, 1),
	    TK(0, verdict, BREAKER_ADMITTED),
	    PROBE(9, T0 + 30000, 0), /* one at a time */
	    REJECTED(T0 + 30000), ADMIT(9, T0 + 30000),
	    TK(9, retry_after_ms, 5000), ADMIT(9, T0 + 30001),
	    TK(9, retry_after_ms, 4999), REC_OK(0, T0 + 30001),
	    STATE(T0 + 30001, HALF_OPEN), REJECTED(T0 + 30001),
	    PROBE(0, T0 + 30001, 1), REC_OK(0, T0 + 30002),
	    STATE(T0 + 30002, CLOSED),
	    TR(2, HALF_OPEN, CLOSED, PROBES_SUCCEEDED), PROBE(9, T0 + 30002, 0),
	    ADMITTED(T0 + 30002), SNAP(T0 + 30002), ST(attempts_total, 5 + 2),
	    ST(successes_total, 2), ST(rejected_half_open, 5)),
	/* A failed probe opens it again, for recovery_timeout * backoff. */
	SCENARIO("probe_fails_backoff",
	    SET(recovery_probe, BREAKER_PROBE_CONNECT),
	    SET(recovery_backoff, 2), TRIP(5, T0), TICK(T0 + 30000),
	    PROBE(0, T0 + 30000, 1), REC_OK(0, T0 + 30005),
	    PROBE(0, T0 + 30005, 1), REC_FAIL(0, T0 + 30010, TIMEOUT),
	    TR(2, HALF_OPEN, OPEN, HALF_OPEN_FAILURE),
	    TRF(2, retry_after_ms, 60000), PROBE(9, T0 + 30010, 0),
	    TICK(T0 + 30010 + 59999), STATE(T0 + 30010 + 59999, OPEN),
	    TICK(T0 + 30010 + 60000), PROBE(0, T0 + 30010 + 60000, 1),
	    SNAP(T0 + 30010 + 60000), ST_ERR(TIMEOUT, 1)),
	/*
	 * A cancelled probe gives its slot back; a probe's outcome from an
	 * earlier period (a manual action came between) drives nothing and
	 * blocks nothing.
	 */
	SCENARIO("probe_cancel_and_late",
	    SET(recovery_probe, BREAKER_PROBE_CONNECT),
	    SET(success_threshold, 1), TRIP(5, T0), TICK(T0 + 30000),
	    PROBE(0, T0 + 30000, 1), CANCEL(0), PROBE(1, T0 + 30000, 1),
	    FOPEN(1000, T0 + 30001), PROBE(9, T0 + 30001, 0),
	    TICK(T0 + 31001), /* the force expires: closed */
	    TRIP(5, T0 + 31001), TICK(T0 + 61001), STATE(T0 + 61001, HALF_OPEN),
	    /* The old probe's failure is a total, not a transition. */
	    REC_FAIL(1, T0 + 61002, REFUSED), STATE(T0 + 61002, HALF_OPEN),
	    PROBE(0, T0 + 61002, 1), REC_OK(0, T0 + 61003),
	    STATE(T0 + 61003, CLOSED)),
	/*
	 * Probes off: half_open admits clients as trials and hands out no
	 * probe; a reload that turns probes on applies to the half_open
	 * period in progress.
	 */
	SCENARIO("probe_off_and_reload", TRIP(5, T0), TICK(T0 + 30000),
	    PROBE(9, T0 + 30000, 0), ADMIT(0, T0 + 30000), TK(0, admitted, 1),
	    TK(0, trial, 1), TK(0, probe, 0),
	    SET(recovery_probe, BREAKER_PROBE_CONNECT), RECONF(T0 + 30001),
	    REJECTED(T0 + 30001), PROBE(1, T0 + 30001, 1),
	    /* The client trial admitted before still counts. */
	    REC_OK(0, T0 + 30002), REC_OK(1, T0 + 30003),
	    STATE(T0 + 30003, CLOSED)),
};

#define SLOTS 10 /* ticket slots; 9 is the scratch one of REJECTED() */

/* A scenario being played: its breaker and what the steps look at. */
struct play {
	const struct scenario *sc;
	const struct step *s; /* the step being played */
	struct breaker_conf c;
	struct breaker *b;
	struct trlog l;
	struct breaker_stats st;
	struct breaker_saved sv;
	struct breaker_ticket tk[SLOTS];
};

/* Fail unless what the step looks at (got, named what) is what it wants. */
static void
play_expect(const struct play *p, const char *what, int idx, double got)
{
	const struct step *s = p->s;
	bool ok = s->cmp == GT ? got > s->v : got == s->v;

	ck_assert_msg(ok, "%s, step %d: %s[%d] is %.12g, want %s%.12g",
	    p->sc->name, (int)(s - p->sc->steps) + 1, what, idx, got,
	    s->cmp == GT ? "> " : "", s->v);
}

/* Check field key of the object at obj (table fields). */
static void
play_check_field(const struct play *p, const struct field *fields,
    const void *obj)
{
	const struct field *f = &fields[p->s->key];

	play_expect(p, f->name, p->s->n, field_get(obj, f));
}

/* Check transition n's from, to and reason, or one of its fields. */
static void
play_check_transition(struct play *p)
{
	const struct step *s = p->s;
	const struct breaker_transition *tr = &p->l.tr[s->n];

	ck_assert_msg(p->l.n > s->n && s->n < MAX_TR,
	    "%s, step %d: %d transitions, no [%d]", p->sc->name,
	    (int)(s - p->sc->steps) + 1, p->l.n, s->n);
	if (s->op == OP_TR) {
		ck_assert_msg(tr->from == (enum breaker_state)s->key &&
			tr->to == (enum breaker_state)s->v &&
			tr->reason == (enum breaker_reason)s->arg,
		    "%s, step %d: transition[%d] is %s -> %s (%s), want "
		    "%s -> %s (%s)",
		    p->sc->name, (int)(s - p->sc->steps) + 1, s->n,
		    breaker_state_name(tr->from), breaker_state_name(tr->to),
		    breaker_reason_name(tr->reason),
		    breaker_state_name((enum breaker_state)s->key),
		    breaker_state_name((enum breaker_state)s->v),
		    breaker_reason_name((enum breaker_reason)s->arg));
		return;
	}
	play_check_field(p, tr_fields, tr);
}

/* Make the breaker from the config set so far, born at T0. */
static void
play_breaker_new(struct play *p)
{
	p->b = breaker_new(&p->c, T0, 42);
	memset(&p->l, 0, sizeof(p->l));
	breaker_set_callback(p->b, trlog_cb, &p->l);
}

/* Play one step that makes something happen. */
static void
play_event(struct play *p)
{
	const struct step *s = p->s;
	struct breaker_ticket *t = &p->tk[s->n];
	bool given;
	int i;

	switch (s->op) {
	case OP_ATTEMPTS:
		for (i = 0; i < s->n; i++)
			ck_assert_msg(unit_breaker_attempt(p->b, s->at, s->ok,
					  (enum breaker_error)s->err),
			    "%s, step %d: attempt %d not admitted", p->sc->name,
			    (int)(s - p->sc->steps) + 1, i + 1);
		break;
	case OP_ADMIT:
		memset(t, 0xa5, sizeof(*t));
		breaker_admit(p->b, s->at, t);
		break;
	case OP_RECORD:
		breaker_record(p->b, t, s->ok, (enum breaker_error)s->err,
		    s->at);
		break;
	case OP_CANCEL:
		breaker_cancel(p->b, t);
		break;
	case OP_UNREJECT:
		breaker_unreject(p->b, t);
		break;
	case OP_PROBE:
		memset(t, 0xa5, sizeof(*t));
		given = breaker_probe_begin(p->b, s->at, 5000, t);
		play_expect(p, "probe given", s->n, given);
		break;
	case OP_TICK:
		breaker_tick(p->b, s->at);
		break;
	case OP_FORCE_OPEN:
		breaker_force_open(p->b, s->arg, s->at);
		break;
	case OP_FORCE_CLOSED:
		breaker_force_closed(p->b, s->arg, s->at);
		break;
	case OP_RESET:
		breaker_reset(p->b, s->at);
		break;
	case OP_RECONF:
		breaker_reconfigure(p->b, &p->c, s->at);
		break;
	case OP_RESTART:
		breaker_save(p->b, s->at, &p->sv);
		breaker_free(p->b);
		play_breaker_new(p);
		breaker_restore(p->b, &p->sv, s->arg);
		break;
	case OP_RESTORE:
		breaker_restore(p->b, &p->sv, s->at);
		break;
	default:
		ck_abort_msg("%s: step %d: op %d is no event", p->sc->name,
		    (int)(s - p->sc->steps) + 1, (int)s->op);
	}
}

/* Play one step that checks what the breaker shows. */
static void
play_check(struct play *p)
{
	const struct step *s = p->s;

	switch (s->op) {
	case OP_STATE:
		breaker_snapshot(p->b, s->at, &p->st);
		play_expect(p, "state", 0, p->st.state);
		break;
	case OP_RETRY:
		play_expect(p, "retry_after", 0,
		    (double)breaker_retry_after(p->b, s->at));
		break;
	case OP_DEADLINE:
		play_expect(p, "next_deadline", 0,
		    (double)breaker_next_deadline(p->b));
		break;
	case OP_NTR:
		play_expect(p, "transitions", 0, p->l.n);
		break;
	case OP_TR:
	case OP_TR_FIELD:
		play_check_transition(p);
		break;
	case OP_SNAP:
		breaker_snapshot(p->b, s->at, &p->st);
		break;
	case OP_STAT:
		if (s->key == KS_failures_by_error)
			play_expect(p, "failures_by_error", s->n,
			    (double)p->st.failures_by_error[s->n]);
		else
			play_check_field(p, stats_fields, &p->st);
		break;
	case OP_CHANGE:
		play_check_field(p, change_fields, &p->st.changes[s->n]);
		break;
	case OP_TICKET:
		play_check_field(p, ticket_fields, &p->tk[s->n]);
		break;
	case OP_SAVED:
		play_check_field(p, saved_fields, &p->sv);
		break;
	default:
		play_event(p);
	}
}

/* Play a scenario from SPEC.md's default config, step by step. */
static void
play_scenario(const struct scenario *sc)
{
	struct play p;

	memset(&p, 0, sizeof(p));
	p.sc = sc;
	p.c = unit_breaker_conf();
	for (p.s = sc->steps; p.s->op != OP_END; p.s++) {
		if (p.s->op == OP_SET)
			field_set(&p.c, &conf_fields[p.s->key], p.s->v);
		else if (p.s->op == OP_SAVE_SET)
			field_set(&p.sv, &saved_fields[p.s->key], p.s->v);
		else {
			if (p.b == NULL)
				play_breaker_new(&p);
			play_check(&p);
		}
	}
	breaker_free(p.b);
}

/* One scenario row, by its index (Check's loop variable _i). */
START_TEST(test_scenario)
{
	play_scenario(&scenarios[_i]);
}
END_TEST

/* The names are the ones the logs and STATS use; out of range, unknown. */
START_TEST(test_names)
{
	const struct {
		const char *got, *want;
	} rows[] = {
		{ breaker_state_name(BREAKER_CLOSED), "closed" },
		{ breaker_state_name(BREAKER_OPEN), "open" },
		{ breaker_state_name(BREAKER_HALF_OPEN), "half_open" },
		{ breaker_state_name(BREAKER_FORCED_OPEN), "forced_open" },
		{ breaker_state_name(BREAKER_FORCED_CLOSED), "forced_closed" },
		{ breaker_error_name(BREAKER_ERR_REFUSED), "refused" },
		{ breaker_error_name(BREAKER_ERR_TIMEOUT), "timeout" },
		{ breaker_error_name(BREAKER_ERR_UNREACHABLE), "unreachable" },
		{ breaker_error_name(BREAKER_ERR_EARLY_CLOSE), "early_close" },
		{ breaker_error_name(BREAKER_ERR_SLOW), "slow" },
		{ breaker_error_name(BREAKER_ERR_OTHER), "other" },
		{ breaker_reason_name(BREAKER_REASON_NONE), "none" },
		{ breaker_reason_name(BREAKER_REASON_CONSECUTIVE),
		    "consecutive_failures" },
		{ breaker_reason_name(BREAKER_REASON_RATE), "failure_rate" },
		{ breaker_reason_name(BREAKER_REASON_HALF_OPEN_FAILURE),
		    "half_open_failure" },
		{ breaker_reason_name(BREAKER_REASON_TRIALS_SUCCEEDED),
		    "trials_succeeded" },
		{ breaker_reason_name(BREAKER_REASON_MANUAL), "manual" },
		{ breaker_reason_name(BREAKER_REASON_EXPIRED), "expired" },
		{ breaker_reason_name(BREAKER_REASON_RECOVERY_TIMEOUT),
		    "recovery_timeout" },
		{ breaker_reason_name(BREAKER_REASON_PROBES_SUCCEEDED),
		    "probes_succeeded" },
		{ breaker_state_name(BREAKER_STATE_COUNT), "unknown" },
		{ breaker_error_name(BREAKER_ERR_COUNT), "unknown" },
		{ breaker_reason_name(BREAKER_REASON_COUNT), "unknown" },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_msg(strcmp(rows[i].got, rows[i].want) == 0,
		    "row %zu: %s, want %s", i, rows[i].got, rows[i].want);
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

/* A jittered recovery_timeout and what its draws must look like. */
struct jitter_row {
	const char *name;
	uint64_t seed, timeout_ms, max_ms;
	double jitter;
	int draws;
	int64_t lo, hi; /* every draw within */
	int64_t near;	/* -1, or draws reach within near of both ends */
	bool every;	/* every value from lo to hi drawn */
};

static const struct jitter_row jitter_rows[] = {
	/*
	 * Jitter stays within +-recovery_jitter; uniform over 4001 values,
	 * 2000 draws come within 100 of both ends.
	 */
	{ "jitter_bounds", 7, 10000, 600000, 20, 2000, 8000, 12000, 99, false },
	/* Jitter applies after the cap; 100% can reach zero, not below. */
	{ "jitter_after_cap", 1, 1000, 100, 100, 500, 0, 200, -1, false },
	/* A small spread reaches both of its ends. */
	{ "jitter_ends", 99, 10, 600000, 10, 300, 9, 11, 0, true },
};

/* Draw r->draws open durations with r's jitter and seed into d. */
static void
jitter_draws(const struct jitter_row *r, uint64_t seed, int64_t *d)
{
	struct breaker_conf c = unit_breaker_conf();
	struct breaker *b;
	int i;

	c.failure_threshold = 1;
	c.recovery_timeout_ms = r->timeout_ms;
	c.recovery_timeout_max_ms = r->max_ms;
	c.recovery_jitter = r->jitter;
	b = breaker_new(&c, T0, seed);
	for (i = 0; i < r->draws; i++) {
		rec_fail(b, T0, BREAKER_ERR_REFUSED);
		d[i] = breaker_retry_after(b, T0);
		breaker_reset(b, T0);
	}
	breaker_free(b);
}

#define JITTER_MAX_DRAWS 2000

/* Row _i's draws stay in bounds and reach their ends. */
START_TEST(test_jitter_range)
{
	const struct jitter_row *r = &jitter_rows[_i];
	static int64_t d[JITTER_MAX_DRAWS];
	int64_t lo = INT64_MAX, hi = INT64_MIN, v;
	int i;

	ck_assert_int_le(r->draws, JITTER_MAX_DRAWS);
	jitter_draws(r, r->seed, d);
	for (i = 0; i < r->draws; i++) {
		ck_assert_msg(d[i] >= r->lo && d[i] <= r->hi,
		    "%s: draw %d is %lld", r->name, i, (long long)d[i]);
		lo = d[i] < lo ? d[i] : lo;
		hi = d[i] > hi ? d[i] : hi;
	}
	if (r->near >= 0)
		ck_assert_msg(lo <= r->lo + r->near && hi >= r->hi - r->near,
		    "%s: draws only from %lld to %lld", r->name, (long long)lo,
		    (long long)hi);
	for (v = r->lo; r->every && v <= r->hi; v++) {
		for (i = 0; i < r->draws && d[i] != v; i++)
			;
		ck_assert_msg(i < r->draws, "%s: %lld never drawn", r->name,
		    (long long)v);
	}
}
END_TEST

/* The same seed draws the same durations, another seed others, varied. */
START_TEST(test_jitter_seed)
{
	const struct jitter_row *r = &jitter_rows[0];
	static int64_t a[JITTER_MAX_DRAWS], a2[JITTER_MAX_DRAWS],
	    z[JITTER_MAX_DRAWS];
	int i, same = 0, distinct = 0;

	jitter_draws(r, 7, a);
	jitter_draws(r, 7, a2);
	jitter_draws(r, 8, z);
	for (i = 0; i < r->draws; i++) {
		ck_assert_int_eq(a[i], a2[i]);
		same += a[i] == z[i];
		distinct += i == 0 || a[i] != a[i - 1];
	}
	ck_assert_int_gt(distinct, r->draws / 2);
	ck_assert_int_lt(same, r->draws / 10);
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
	struct breaker_conf c = unit_breaker_conf();
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

/* A local shortage (no socket, no port) is not the server's fault. */
START_TEST(test_errno_is_shortage)
{
	static const struct {
		int error;
		bool shortage;
	} rows[] = {
		{ EMFILE, true },
		{ ENFILE, true },
		{ ENOBUFS, true },
		{ ENOMEM, true },
		{ EADDRNOTAVAIL, true },
		{ ECONNREFUSED, false },
		{ ETIMEDOUT, false },
		{ EAGAIN, false },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_msg(breaker_errno_is_shortage(rows[i].error) ==
			rows[i].shortage,
		    "errno %d: shortage should be %d", rows[i].error,
		    rows[i].shortage);
}
END_TEST

/* The scenarios, the tables, the model and the threads. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_ROWS("rules", test_scenario, scenarios),
		UNIT_TEST("rules", test_names),
		UNIT_TEST("rules", test_error_from_errno),
		UNIT_TEST("rules", test_errno_is_shortage),
		UNIT_TEST("rules", test_state_parse),
		UNIT_ROWS("rules", test_jitter_range, jitter_rows),
		UNIT_TEST("rules", test_jitter_seed),
		{ "model", test_model, 0, 120 },
		{ "threads", test_concurrency, 0, 120 },
	};

	return unit_suite_new("breaker", tests, UNIT_NROWS(tests));
}
