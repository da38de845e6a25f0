/*
 * The circuit breaker of SPEC.md section 4: states, trip rules, the sliding
 * window, recovery backoff with jitter, half_open trials and the counters
 * behind STATS. Pure C with time passed in; one mutex per breaker.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "log.h"
#include "util.h"

/*
 * A window given as a duration is kept in BREAKER_BUCKETS time buckets of
 * bucket_ms = ceil(window_ms / 20) each (at least 1 ms), so it spans
 * nbuckets * bucket_ms >= window_ms. An outcome recorded at t is in the
 * window at now while now / bucket_ms - t / bucket_ms < nbuckets: it falls
 * out with its whole bucket, between span - bucket_ms and span after t. For
 * window = 60s that is a granularity of 3s.
 */
#define BREAKER_BUCKETS 20

/* Longer than any duration we mean (31,000 years), short of overflow. */
#define BREAKER_FOREVER_MS 1000000000000000.0
/* The least wait a client turned away in half_open with probes is told. */
#define BREAKER_PROBE_WAIT_MS 1000

/* One time bucket of a duration window. */
struct breaker_bucket {
	unsigned attempts;
	unsigned failures;
};

struct breaker {
	/*
	 * Every field below is guarded by lock. The critical sections are a
	 * few dozen instructions (no allocation, no division on admit), so a
	 * plain mutex costs ~25 ns uncontended (make bench): far below one
	 * accept(), and a lock-free open path would not pay for itself.
	 */
	pthread_mutex_t lock;
	struct breaker_conf conf;
	breaker_transition_cb cb;
	void *cb_arg;

	enum breaker_state state;
	uint64_t state_since_ms;
	uint64_t generation;  /* bumped on every change and manual action */
	uint64_t last_now_ms; /* the latest time seen: time never goes back */

	/* When time alone changes the state: open ends, a force expires. */
	bool has_deadline;
	uint64_t deadline_ms;
	uint64_t open_ms; /* the open duration drawn at the last opening */
	unsigned backoff_steps; /* failed half_open periods since closed */
	uint64_t rng;		/* splitmix64 state */

	unsigned consecutive;
	unsigned trials;	  /* half_open slots taken this period */
	bool probing;		  /* a recovery probe is out this period */
	uint64_t probe_end_ms;	  /* when the probe out ends at the latest */
	unsigned trial_successes; /* half_open successes this period */

	/* The window: a ring of outcomes, or time buckets. */
	unsigned win_attempts;
	unsigned win_failures;
	uint8_t *ring; /* 1 = failure */
	unsigned ring_size;
	unsigned ring_len;
	unsigned ring_next;
	struct breaker_bucket buckets[BREAKER_BUCKETS];
	uint64_t bucket_ms; /* 0: count window */
	unsigned nbuckets;
	uint64_t bucket_last; /* index (time / bucket_ms) of the newest */

	uint64_t attempts_total;
	uint64_t successes_total;
	uint64_t failures_total;
	uint64_t failures_by_error[BREAKER_ERR_COUNT];
	uint64_t rejected_open;
	uint64_t rejected_half_open;
	uint64_t rejected_forced_open;
	uint64_t opened_total;

	/* The last BREAKER_HISTORY state changes, a ring; hist_n in all. */
	struct breaker_change hist[BREAKER_HISTORY];
	uint64_t hist_n;
};

static const char *breaker_state_names[] = { "closed", "open", "half_open",
	"forced_open", "forced_closed" };
static const char *breaker_error_names[] = { "refused", "timeout",
	"unreachable", "early_close", "slow", "dns", "other" };
static const char *breaker_reason_names[] = { "none", "consecutive_failures",
	"failure_rate", "half_open_failure", "trials_succeeded", "manual",
	"expired", "recovery_timeout", "probes_succeeded" };

/* Take the lock, or die: a mutex that fails is a broken invariant. */
static void
breaker_lock(struct breaker *b)
{
	if (pthread_mutex_lock(&b->lock) != 0)
		fatalx("breaker: mutex lock failed");
}

/* Release the lock. */
static void
breaker_unlock(struct breaker *b)
{
	if (pthread_mutex_unlock(&b->lock) != 0)
		fatalx("breaker: mutex unlock failed");
}

/*
 * Clamp a caller's time to the latest one seen. Worker threads read the
 * clock before they take the lock, so two calls may arrive out of order by
 * a few microseconds; the breaker's own time must not go backwards.
 */
static uint64_t
breaker_clock(struct breaker *b, uint64_t now)
{
	if (now < b->last_now_ms)
		return b->last_now_ms;
	b->last_now_ms = now;
	return now;
}

/* Draw the next 64 random bits (splitmix64). */
static uint64_t
breaker_random(struct breaker *b)
{
	uint64_t z;

	b->rng += 0x9e3779b97f4a7c15ULL;
	z = b->rng;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Copy a config in, bringing out-of-range values back into range. */
static void
breaker_conf_set(struct breaker *b, const struct breaker_conf *conf)
{
	b->conf = *conf;
	if (b->conf.recovery_backoff < 1.0)
		b->conf.recovery_backoff = 1.0;
	if (b->conf.recovery_jitter < 0.0)
		b->conf.recovery_jitter = 0.0;
	if (b->conf.recovery_jitter > 100.0)
		b->conf.recovery_jitter = 100.0;
	/* Without a slot or a needed success half_open could never end. */
	if (b->conf.half_open_max_calls == 0)
		b->conf.half_open_max_calls = 1;
	if (b->conf.success_threshold == 0)
		b->conf.success_threshold = 1;
	if (b->conf.success_threshold > b->conf.half_open_max_calls)
		b->conf.success_threshold = b->conf.half_open_max_calls;
}

/* Empty the window, starting its buckets at now. */
static void
breaker_window_clear(struct breaker *b, uint64_t now)
{
	b->win_attempts = 0;
	b->win_failures = 0;
	if (b->ring_size != 0)
		memset(b->ring, 0, b->ring_size);
	b->ring_len = 0;
	b->ring_next = 0;
	memset(b->buckets, 0, sizeof(b->buckets));
	if (b->bucket_ms != 0)
		b->bucket_last = now / b->bucket_ms;
}

/* Give the window the shape the config asks for, empty. */
static void
breaker_window_setup(struct breaker *b, uint64_t now)
{
	free(b->ring);
	b->ring = NULL;
	b->ring_size = 0;
	b->bucket_ms = 0;
	b->nbuckets = 0;
	if (b->conf.window_ms != 0) {
		b->bucket_ms =
		    (b->conf.window_ms + BREAKER_BUCKETS - 1) / BREAKER_BUCKETS;
		b->nbuckets =
		    (unsigned)((b->conf.window_ms + b->bucket_ms - 1) /
			b->bucket_ms);
	} else if (b->conf.window_calls != 0) {
		b->ring_size = b->conf.window_calls;
		b->ring = xcalloc(b->ring_size, 1);
	}
	breaker_window_clear(b, now);
}

/* Drop the time buckets that have rotated out by now. */
static void
breaker_window_advance(struct breaker *b, uint64_t now)
{
	struct breaker_bucket *bk;
	uint64_t k, i;

	if (b->bucket_ms == 0)
		return;
	k = now / b->bucket_ms;
	if (k <= b->bucket_last)
		return;
	if (k - b->bucket_last >= b->nbuckets) {
		memset(b->buckets, 0, sizeof(b->buckets));
		b->win_attempts = 0;
		b->win_failures = 0;
	} else {
		for (i = b->bucket_last + 1; i <= k; i++) {
			bk = &b->buckets[i % b->nbuckets];
			b->win_attempts -= bk->attempts;
			b->win_failures -= bk->failures;
			bk->attempts = 0;
			bk->failures = 0;
		}
	}
	b->bucket_last = k;
}

/* Put one outcome into the window. */
static void
breaker_window_add(struct breaker *b, bool failed, uint64_t now)
{
	struct breaker_bucket *bk;

	if (b->bucket_ms != 0) {
		breaker_window_advance(b, now);
		bk = &b->buckets[b->bucket_last % b->nbuckets];
		bk->attempts++;
		bk->failures += failed;
	} else if (b->ring_size != 0) {
		if (b->ring_len == b->ring_size) {
			b->win_attempts--;
			b->win_failures -= b->ring[b->ring_next];
		} else
			b->ring_len++;
		b->ring[b->ring_next] = failed;
		if (++b->ring_next == b->ring_size)
			b->ring_next = 0;
	} else
		return;
	b->win_attempts++;
	b->win_failures += failed;
}

/* Should a closed circuit open now, and why? */
static enum breaker_reason
breaker_judge(struct breaker *b)
{
	const struct breaker_conf *c = &b->conf;

	if (c->failure_threshold != 0 && b->consecutive >= c->failure_threshold)
		return BREAKER_REASON_CONSECUTIVE;
	if (c->failure_rate_threshold > 0 && b->win_attempts != 0 &&
	    b->win_attempts >= c->minimum_calls &&
	    (double)b->win_failures * 100.0 >=
		c->failure_rate_threshold * (double)b->win_attempts)
		return BREAKER_REASON_RATE;
	return BREAKER_REASON_NONE;
}

/* Return the open duration after steps failed trials, before jitter. */
static uint64_t
breaker_base_duration(const struct breaker *b, unsigned steps)
{
	const struct breaker_conf *c = &b->conf;
	double d = (double)c->recovery_timeout_ms;
	double cap = (double)c->recovery_timeout_max_ms;
	unsigned i;

	/* Without a cap, stop well before the double leaves uint64_t. */
	if (c->recovery_timeout_max_ms == 0)
		cap = BREAKER_FOREVER_MS;
	for (i = 0; i < steps && d < cap && c->recovery_backoff > 1.0; i++)
		d *= c->recovery_backoff;
	if (d > cap)
		d = cap;
	return (uint64_t)d;
}

/* Draw the duration of the opening that starts now. */
static uint64_t
breaker_draw_duration(struct breaker *b)
{
	uint64_t d, spread;

	d = breaker_base_duration(b, b->backoff_steps);
	spread = (uint64_t)((double)d * b->conf.recovery_jitter / 100.0);
	if (spread == 0)
		return d;
	/* Uniform in [d - spread, d + spread]; modulo bias < 2^-36 below a day. */
	return d - spread + breaker_random(b) % (2 * spread + 1);
}

/* Milliseconds until the state ends on its own, 0 in half_open, or -1. */
static int64_t
breaker_remaining(const struct breaker *b, uint64_t now)
{
	switch (b->state) {
	case BREAKER_OPEN:
	case BREAKER_FORCED_OPEN:
		if (!b->has_deadline)
			return -1;
		return b->deadline_ms > now ? (int64_t)(b->deadline_ms - now)
					    : 0;
	case BREAKER_HALF_OPEN:
		return 0;
	default:
		return -1;
	}
}

/*
 * What a client turned away in half_open is told: 0 while clients are the
 * trials; with recovery probes, what is left of the running probe's
 * connect_timeout, at least BREAKER_PROBE_WAIT_MS (a retry sooner would
 * only be turned away again).
 */
static int64_t
breaker_half_open_wait(const struct breaker *b, uint64_t now)
{
	uint64_t left = 0;

	if (b->conf.recovery_probe != BREAKER_PROBE_CONNECT)
		return 0;
	if (b->probing && b->probe_end_ms > now)
		left = b->probe_end_ms - now;
	return left > BREAKER_PROBE_WAIT_MS ? (int64_t)left
					    : BREAKER_PROBE_WAIT_MS;
}

/*
 * Enter state to at now. Every call starts a new period (the generation
 * moves on, so outcomes of earlier tickets count in the totals only); the
 * callback hears only of real changes. It runs under the lock, which keeps
 * each upstream's log lines in event order; it must not call back into the
 * breaker (the mutex is not recursive).
 */
static void
breaker_enter(struct breaker *b, enum breaker_state to,
    enum breaker_reason reason, uint64_t lifetime_ms, uint64_t now)
{
	struct breaker_transition tr;
	enum breaker_state from = b->state;

	b->state = to;
	b->generation++;
	b->has_deadline = false;
	b->deadline_ms = 0;
	b->probing = false;
	switch (to) {
	case BREAKER_CLOSED:
		b->consecutive = 0;
		b->backoff_steps = 0;
		breaker_window_clear(b, now);
		break;
	case BREAKER_OPEN:
		b->open_ms = breaker_draw_duration(b);
		b->has_deadline = true;
		b->deadline_ms = now + b->open_ms;
		b->opened_total++;
		break;
	case BREAKER_HALF_OPEN:
		b->trials = 0;
		b->trial_successes = 0;
		break;
	case BREAKER_FORCED_OPEN:
	case BREAKER_FORCED_CLOSED:
		if (lifetime_ms != 0) {
			if (lifetime_ms > (uint64_t)BREAKER_FOREVER_MS)
				lifetime_ms = (uint64_t)BREAKER_FOREVER_MS;
			b->has_deadline = true;
			b->deadline_ms = now + lifetime_ms;
		}
		break;
	default:
		fatalx("breaker: bad state %d", (int)to);
	}
	if (from == to)
		return;
	b->state_since_ms = now;
	b->hist[b->hist_n % BREAKER_HISTORY] =
	    (struct breaker_change){ now, from, to, reason };
	b->hist_n++;
	if (b->cb == NULL)
		return;
	tr.from = from;
	tr.to = to;
	tr.reason = reason;
	tr.consecutive_failures = b->consecutive;
	tr.window_attempts = b->win_attempts;
	tr.window_failures = b->win_failures;
	tr.retry_after_ms = breaker_remaining(b, now);
	tr.now_ms = now;
	b->cb(&tr, b->cb_arg);
}

/* Apply the transition that time has made due, if any. */
static void
breaker_apply_due(struct breaker *b, uint64_t now)
{
	if (!b->has_deadline || now < b->deadline_ms)
		return;
	if (b->state == BREAKER_OPEN)
		breaker_enter(b, BREAKER_HALF_OPEN,
		    BREAKER_REASON_RECOVERY_TIMEOUT, 0, now);
	else
		breaker_enter(b, BREAKER_CLOSED, BREAKER_REASON_EXPIRED, 0,
		    now);
}

/* Create a closed breaker; seed drives its jitter. */
struct breaker *
breaker_new(const struct breaker_conf *conf, uint64_t now_ms, uint64_t seed)
{
	struct breaker *b;

	b = xcalloc(1, sizeof(*b));
	if (pthread_mutex_init(&b->lock, NULL) != 0)
		fatalx("breaker: mutex init failed");
	breaker_conf_set(b, conf);
	b->state = BREAKER_CLOSED;
	b->state_since_ms = now_ms;
	b->last_now_ms = now_ms;
	b->rng = seed;
	breaker_window_setup(b, now_ms);
	return b;
}

/* Free a breaker no thread uses any more. */
void
breaker_free(struct breaker *b)
{
	if (b == NULL)
		return;
	pthread_mutex_destroy(&b->lock);
	free(b->ring);
	free(b);
}

/* Set the transition callback (NULL for none). */
void
breaker_set_callback(struct breaker *b, breaker_transition_cb cb, void *arg)
{
	breaker_lock(b);
	b->cb = cb;
	b->cb_arg = arg;
	breaker_unlock(b);
}

/*
 * Apply a reloaded config, keeping state and totals. A window whose shape
 * changes is cleared: carrying outcomes across shapes would need guesses
 * about when they happened, and an empty window only delays the rate rule.
 * A running open duration keeps its deadline; the new thresholds are
 * judged from the next outcome on.
 */
void
breaker_reconfigure(struct breaker *b, const struct breaker_conf *conf,
    uint64_t now_ms)
{
	bool reshape;

	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	reshape = conf->window_ms != b->conf.window_ms ||
	    (conf->window_ms == 0 &&
		conf->window_calls != b->conf.window_calls);
	breaker_conf_set(b, conf);
	if (reshape)
		breaker_window_setup(b, now_ms);
	breaker_unlock(b);
}

/*
 * Decide on one client. Under a flood against an open circuit this is the
 * hot path: a compare against the deadline, a counter and a subtraction.
 */
void
breaker_admit(struct breaker *b, uint64_t now_ms, struct breaker_ticket *t)
{
	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	t->generation = b->generation;
	t->state = b->state;
	t->trial = false;
	t->probe = false;
	t->retry_after_ms = -1;
	switch (b->state) {
	case BREAKER_CLOSED:
	case BREAKER_FORCED_CLOSED:
		t->verdict = BREAKER_ADMITTED;
		break;
	case BREAKER_OPEN:
		t->verdict = BREAKER_REJECT_OPEN;
		t->retry_after_ms = breaker_remaining(b, now_ms);
		b->rejected_open++;
		break;
	case BREAKER_HALF_OPEN:
		/* With recovery probes, clients are never trials. */
		if (b->conf.recovery_probe == BREAKER_PROBE_OFF &&
		    b->trials < b->conf.half_open_max_calls) {
			b->trials++;
			t->trial = true;
			t->verdict = BREAKER_ADMITTED;
		} else {
			t->verdict = BREAKER_REJECT_HALF_OPEN;
			t->retry_after_ms = breaker_half_open_wait(b, now_ms);
			b->rejected_half_open++;
		}
		break;
	case BREAKER_FORCED_OPEN:
		t->verdict = BREAKER_REJECT_FORCED_OPEN;
		t->retry_after_ms = breaker_remaining(b, now_ms);
		b->rejected_forced_open++;
		break;
	default:
		fatalx("breaker: bad state %d", (int)b->state);
	}
	t->admitted = t->verdict == BREAKER_ADMITTED || b->conf.dry_run;
	breaker_unlock(b);
}

/*
 * Record the outcome of an admitted attempt. Every outcome counts in the
 * totals; only one of the current period that was truly admitted (not a
 * dry-run reject) moves the window and the state.
 */
void
breaker_record(struct breaker *b, const struct breaker_ticket *t, bool success,
    enum breaker_error err, uint64_t now_ms)
{
	enum breaker_reason why;

	if ((unsigned)err >= BREAKER_ERR_COUNT)
		err = BREAKER_ERR_OTHER;
	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	b->attempts_total++;
	if (success)
		b->successes_total++;
	else {
		b->failures_total++;
		b->failures_by_error[err]++;
	}
	if (t->generation != b->generation || t->verdict != BREAKER_ADMITTED)
		goto out;
	if (t->probe)
		b->probing = false;

	if (success)
		b->consecutive = 0;
	else
		b->consecutive++;
	switch (b->state) {
	case BREAKER_CLOSED:
		breaker_window_add(b, !success, now_ms);
		why = breaker_judge(b);
		if (why != BREAKER_REASON_NONE)
			breaker_enter(b, BREAKER_OPEN, why, 0, now_ms);
		break;
	case BREAKER_FORCED_CLOSED:
		/* Counted so stats show what the circuit would see; no trip. */
		breaker_window_add(b, !success, now_ms);
		break;
	case BREAKER_HALF_OPEN:
		if (!success) {
			b->backoff_steps++;
			breaker_enter(b, BREAKER_OPEN,
			    BREAKER_REASON_HALF_OPEN_FAILURE, 0, now_ms);
		} else if (++b->trial_successes >= b->conf.success_threshold)
			breaker_enter(b, BREAKER_CLOSED,
			    t->probe ? BREAKER_REASON_PROBES_SUCCEEDED
				     : BREAKER_REASON_TRIALS_SUCCEEDED,
			    0, now_ms);
		break;
	default:
		/* Open and forced_open admit nobody: no current ticket. */
		break;
	}
out:
	breaker_unlock(b);
}

/*
 * Take back the reject breaker_admit() counted for a ticket: the client was
 * not turned away after all (a backup took it), or was another upstream's.
 */
void
breaker_unreject(struct breaker *b, const struct breaker_ticket *t)
{
	breaker_lock(b);
	switch (t->verdict) {
	case BREAKER_REJECT_OPEN:
		if (b->rejected_open > 0)
			b->rejected_open--;
		break;
	case BREAKER_REJECT_HALF_OPEN:
		if (b->rejected_half_open > 0)
			b->rejected_half_open--;
		break;
	case BREAKER_REJECT_FORCED_OPEN:
		if (b->rejected_forced_open > 0)
			b->rejected_forced_open--;
		break;
	default:
		break;
	}
	breaker_unlock(b);
}

/*
 * Take the half_open slot for a recovery probe: one probe at a time, each
 * a trial like a client's would be, until success_threshold of them
 * succeeded or one failed.
 */
bool
breaker_probe_begin(struct breaker *b, uint64_t now_ms, uint64_t timeout_ms,
    struct breaker_ticket *t)
{
	bool ok;

	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	ok = b->state == BREAKER_HALF_OPEN &&
	    b->conf.recovery_probe == BREAKER_PROBE_CONNECT && !b->probing;
	if (ok) {
		b->probing = true;
		b->probe_end_ms = now_ms + timeout_ms;
		b->trials++;
		t->generation = b->generation;
		t->state = b->state;
		t->verdict = BREAKER_ADMITTED;
		t->admitted = true;
		t->trial = true;
		t->probe = true;
		t->retry_after_ms = -1;
	}
	breaker_unlock(b);
	return ok;
}

/* Give back the half_open slot of a ticket that never became an attempt. */
void
breaker_cancel(struct breaker *b, const struct breaker_ticket *t)
{
	breaker_lock(b);
	if (t->trial && t->generation == b->generation &&
	    b->state == BREAKER_HALF_OPEN && b->trials > 0)
		b->trials--;
	if (t->probe && t->generation == b->generation)
		b->probing = false;
	breaker_unlock(b);
}

/* Apply time-driven transitions (open->half_open, force expiry). */
void
breaker_tick(struct breaker *b, uint64_t now_ms)
{
	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	breaker_unlock(b);
}

/* When breaker_tick() next has work to do (monotonic ms), or 0 for never. */
uint64_t
breaker_next_deadline(struct breaker *b)
{
	uint64_t d = 0;

	breaker_lock(b);
	if (b->has_deadline)
		d = b->deadline_ms == 0 ? 1 : b->deadline_ms;
	breaker_unlock(b);
	return d;
}

/* Milliseconds until the circuit leaves open, 0 in half_open, -1 if none. */
int64_t
breaker_retry_after(struct breaker *b, uint64_t now_ms)
{
	int64_t r;

	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	r = breaker_remaining(b, now_ms);
	breaker_unlock(b);
	return r;
}

/* Enter a forced state until reset, or for lifetime_ms if not 0. */
static void
breaker_force(struct breaker *b, enum breaker_state state, uint64_t lifetime_ms,
    uint64_t now_ms)
{
	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	breaker_enter(b, state, BREAKER_REASON_MANUAL, lifetime_ms, now_ms);
	breaker_unlock(b);
}

/* Force the circuit open until reset, or for lifetime_ms if not 0. */
void
breaker_force_open(struct breaker *b, uint64_t lifetime_ms, uint64_t now_ms)
{
	breaker_force(b, BREAKER_FORCED_OPEN, lifetime_ms, now_ms);
}

/* Force the circuit closed until reset, or for lifetime_ms if not 0. */
void
breaker_force_closed(struct breaker *b, uint64_t lifetime_ms, uint64_t now_ms)
{
	breaker_force(b, BREAKER_FORCED_CLOSED, lifetime_ms, now_ms);
}

/* Back to closed with window, counts and backoff cleared; totals kept. */
void
breaker_reset(struct breaker *b, uint64_t now_ms)
{
	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	breaker_enter(b, BREAKER_CLOSED, BREAKER_REASON_MANUAL, 0, now_ms);
	breaker_unlock(b);
}

/* Fill *st with a consistent view as of now. */
void
breaker_snapshot(struct breaker *b, uint64_t now_ms, struct breaker_stats *st)
{
	unsigned steps, n;
	int i;

	memset(st, 0, sizeof(*st));
	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	breaker_window_advance(b, now_ms);
	st->state = b->state;
	st->state_since_ms = b->state_since_ms;
	st->retry_after_ms = breaker_remaining(b, now_ms);
	st->expires_in_ms = -1;
	if ((b->state == BREAKER_FORCED_OPEN ||
		b->state == BREAKER_FORCED_CLOSED) &&
	    b->has_deadline)
		st->expires_in_ms = b->deadline_ms > now_ms
		    ? (int64_t)(b->deadline_ms - now_ms)
		    : 0;
	if (b->state == BREAKER_OPEN)
		st->recovery_timeout_ms = b->open_ms;
	else {
		/* The next opening's: one step more if this trial fails. */
		steps = b->backoff_steps + (b->state == BREAKER_HALF_OPEN);
		st->recovery_timeout_ms = breaker_base_duration(b, steps);
	}
	st->consecutive_failures = b->consecutive;
	st->window_attempts = b->win_attempts;
	st->window_failures = b->win_failures;
	if (b->win_attempts != 0)
		st->failure_rate =
		    (double)b->win_failures / (double)b->win_attempts;
	st->success_rate = 1.0 - st->failure_rate;
	st->attempts_total = b->attempts_total;
	st->successes_total = b->successes_total;
	st->failures_total = b->failures_total;
	for (i = 0; i < BREAKER_ERR_COUNT; i++)
		st->failures_by_error[i] = b->failures_by_error[i];
	st->rejected_open = b->rejected_open;
	st->rejected_half_open = b->rejected_half_open;
	st->rejected_forced_open = b->rejected_forced_open;
	st->rejected_total =
	    b->rejected_open + b->rejected_half_open + b->rejected_forced_open;
	st->opened_total = b->opened_total;
	for (n = 0; n < BREAKER_HISTORY && n < b->hist_n; n++)
		st->changes[n] = b->hist[(b->hist_n - 1 - n) % BREAKER_HISTORY];
	st->nchanges = n;
	breaker_unlock(b);
}

/* Fill *sv with what a restart needs to take this breaker's state back. */
void
breaker_save(struct breaker *b, uint64_t now_ms, struct breaker_saved *sv)
{
	memset(sv, 0, sizeof(*sv));
	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	breaker_apply_due(b, now_ms);
	sv->state = b->state;
	sv->age_ms = now_ms - b->state_since_ms;
	/* Any deadline: a forced_closed lifetime has no retry_after. */
	sv->remaining_ms = -1;
	if (b->has_deadline)
		sv->remaining_ms = b->deadline_ms > now_ms
		    ? (int64_t)(b->deadline_ms - now_ms)
		    : 0;
	sv->open_ms = b->state == BREAKER_OPEN ? b->open_ms : 0;
	sv->backoff_steps = b->backoff_steps;
	breaker_unlock(b);
}

/*
 * Take back a saved state. It starts a new period like any change, but it
 * is no transition of this run: the caller logs it, the callback stays
 * silent, and opened_total is not counted again.
 */
void
breaker_restore(struct breaker *b, const struct breaker_saved *sv,
    uint64_t now_ms)
{
	enum breaker_state to = sv->state;
	uint64_t left = sv->remaining_ms > 0 ? (uint64_t)sv->remaining_ms : 0;

	breaker_lock(b);
	now_ms = breaker_clock(b, now_ms);
	switch (to) {
	case BREAKER_OPEN:
		if (left == 0)
			to = BREAKER_HALF_OPEN;
		break;
	case BREAKER_FORCED_OPEN:
	case BREAKER_FORCED_CLOSED:
		if (sv->remaining_ms == 0)
			to = BREAKER_CLOSED;
		break;
	case BREAKER_CLOSED:
	case BREAKER_HALF_OPEN:
		break;
	default:
		breaker_unlock(b);
		return;
	}
	b->state = to;
	b->generation++;
	b->has_deadline = false;
	b->deadline_ms = 0;
	b->consecutive = 0;
	b->trials = 0;
	b->trial_successes = 0;
	b->probing = false;
	b->backoff_steps = to == BREAKER_CLOSED ? 0 : sv->backoff_steps;
	breaker_window_clear(b, now_ms);
	switch (to) {
	case BREAKER_OPEN:
		b->open_ms = sv->open_ms >= left ? sv->open_ms : left;
		b->has_deadline = true;
		b->deadline_ms = now_ms + left;
		break;
	case BREAKER_FORCED_OPEN:
	case BREAKER_FORCED_CLOSED:
		if (sv->remaining_ms > 0) {
			if (left > (uint64_t)BREAKER_FOREVER_MS)
				left = (uint64_t)BREAKER_FOREVER_MS;
			b->has_deadline = true;
			b->deadline_ms = now_ms + left;
		}
		break;
	default:
		break;
	}
	/* The state's age carries over only when the state itself did. */
	if (to == sv->state && sv->age_ms <= now_ms)
		b->state_since_ms = now_ms - sv->age_ms;
	else
		b->state_since_ms = now_ms;
	breaker_unlock(b);
}

/* Return the name of a state as the logs and STATS spell it. */
const char *
breaker_state_name(enum breaker_state s)
{
	if ((unsigned)s >= BREAKER_STATE_COUNT)
		return "unknown";
	return breaker_state_names[s];
}

/* Find a state by its name: 0, or -1 if there is none of that name. */
int
breaker_state_parse(const char *s, enum breaker_state *out)
{
	unsigned i;

	for (i = 0; i < BREAKER_STATE_COUNT; i++)
		if (strcmp(s, breaker_state_names[i]) == 0) {
			*out = (enum breaker_state)i;
			return 0;
		}
	return -1;
}

/* Return the name of an error kind as failures_by_error spells it. */
const char *
breaker_error_name(enum breaker_error e)
{
	if ((unsigned)e >= BREAKER_ERR_COUNT)
		return "unknown";
	return breaker_error_names[e];
}

/* Map a connect errno to an error kind (SPEC 4: refused, unreachable...). */
enum breaker_error
breaker_error_from_errno(int error)
{
	switch (error) {
	case ECONNREFUSED:
	case ENOENT: /* unix socket path gone */
		return BREAKER_ERR_REFUSED;
	case ETIMEDOUT:
		return BREAKER_ERR_TIMEOUT;
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EHOSTDOWN:
	case ENETDOWN:
		return BREAKER_ERR_UNREACHABLE;
	default:
		return BREAKER_ERR_OTHER;
	}
}

/*
 * Is a socket() or connect() errno a local shortage (SPEC 4: EMFILE,
 * ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL)? Then there was no attempt. A
 * TCP connect's EAGAIN (no local port) is one too; the caller knows.
 */
bool
breaker_errno_is_shortage(int error)
{
	return error == EMFILE || error == ENFILE || error == ENOBUFS ||
	    error == ENOMEM || error == EADDRNOTAVAIL;
}

/* Return the name of a transition reason as the logs spell it. */
const char *
breaker_reason_name(enum breaker_reason r)
{
	if ((unsigned)r >= BREAKER_REASON_COUNT)
		return "unknown";
	return breaker_reason_names[r];
}
