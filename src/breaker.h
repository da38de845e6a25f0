/*
 * The circuit breaker of SPEC.md section 4, one per upstream. Pure C: no
 * libevent, no sockets, no clock of its own; the caller passes monotonic
 * milliseconds in. Thread-safe: every call takes the breaker's own lock.
 */
#ifndef CP_BREAKER_H
#define CP_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

enum breaker_state {
	BREAKER_CLOSED,
	BREAKER_OPEN,
	BREAKER_HALF_OPEN,
	BREAKER_FORCED_OPEN,
	BREAKER_FORCED_CLOSED,
	BREAKER_STATE_COUNT
};

enum breaker_error {
	BREAKER_ERR_REFUSED,
	BREAKER_ERR_TIMEOUT,
	BREAKER_ERR_UNREACHABLE,
	BREAKER_ERR_EARLY_CLOSE,
	BREAKER_ERR_SLOW,
	BREAKER_ERR_DNS, /* a host-name server with no address yet */
	BREAKER_ERR_OTHER,
	BREAKER_ERR_COUNT
};

enum breaker_reason {
	BREAKER_REASON_NONE,	    /* no transition due (breaker_judge) */
	BREAKER_REASON_CONSECUTIVE, /* "consecutive_failures" */
	BREAKER_REASON_RATE,	    /* "failure_rate" */
	BREAKER_REASON_HALF_OPEN_FAILURE, /* "half_open_failure" */
	BREAKER_REASON_TRIALS_SUCCEEDED,  /* half_open -> closed by clients */
	BREAKER_REASON_MANUAL,	/* "manual": force-open/force-closed/reset */
	BREAKER_REASON_EXPIRED, /* a force's lifetime ran out */
	BREAKER_REASON_RECOVERY_TIMEOUT, /* open -> half_open, on time */
	BREAKER_REASON_PROBES_SUCCEEDED, /* half_open -> closed by probes */
	BREAKER_REASON_COUNT
};

/* Who tries a half_open circuit (recovery_probe). */
enum breaker_probe_mode {
	BREAKER_PROBE_OFF,     /* clients are the trials */
	BREAKER_PROBE_CONNECT, /* the daemon's own connects; clients rejected */
};

/* What a breaker is configured with (a part of struct upstream_conf). */
struct breaker_conf {
	unsigned failure_threshold;    /* consecutive failures; 0 = off */
	double failure_rate_threshold; /* percent, 0 = off */
	unsigned window_calls; /* window as N attempts (if window_ms == 0) */
	uint64_t window_ms;    /* window as a duration; 0 = count window */
	unsigned minimum_calls;
	uint64_t recovery_timeout_ms;
	double recovery_backoff; /* >= 1 */
	uint64_t recovery_timeout_max_ms;
	double recovery_jitter; /* percent, 0..100 */
	unsigned half_open_max_calls;
	unsigned success_threshold;
	enum breaker_probe_mode recovery_probe;
	bool dry_run;
};

/* Why a client was or would have been turned away. */
enum breaker_verdict {
	BREAKER_ADMITTED,
	BREAKER_REJECT_OPEN,
	BREAKER_REJECT_HALF_OPEN,
	BREAKER_REJECT_FORCED_OPEN,
};

/*
 * Given by breaker_admit(); passed back to breaker_record(). An outcome whose
 * generation is no longer current counts in the totals only.
 */
struct breaker_ticket {
	uint64_t generation;
	enum breaker_state state;     /* the state it was admitted in */
	enum breaker_verdict verdict; /* != ADMITTED: rejected (or dry run) */
	bool admitted;		      /* go on and connect (true in dry run) */
	bool trial;		      /* holds a half_open slot */
	bool probe;		      /* a recovery probe's, not a client's */
	int64_t retry_after_ms; /* at a reject: until it leaves open; -1 none */
};

/*
 * Passed to the transition callback, which runs under the breaker's lock (so
 * an upstream's log lines come out in event order) in whichever thread made
 * the change. The callback must not call into the same breaker: it would
 * deadlock.
 */
struct breaker_transition {
	enum breaker_state from;
	enum breaker_state to;
	enum breaker_reason reason;
	unsigned consecutive_failures;
	unsigned window_attempts;
	unsigned window_failures;
	int64_t retry_after_ms; /* breaker_retry_after() in state to */
	uint64_t now_ms;
};

typedef void (
    *breaker_transition_cb)(const struct breaker_transition *, void *);

/* How many state changes a breaker remembers for STATS "transitions". */
#define BREAKER_HISTORY 16

/* One remembered state change. */
struct breaker_change {
	uint64_t at_ms; /* monotonic */
	enum breaker_state from;
	enum breaker_state to;
	enum breaker_reason reason;
};

/* A consistent snapshot for stats, admin and metrics. */
struct breaker_stats {
	enum breaker_state state;
	uint64_t state_since_ms; /* monotonic */
	int64_t retry_after_ms;	 /* as breaker_retry_after() */
	int64_t expires_in_ms; /* until a force with a lifetime ends; -1 none */
	uint64_t recovery_timeout_ms; /* the current (or next) open duration */
	unsigned consecutive_failures;
	unsigned window_attempts;
	unsigned window_failures;
	double failure_rate; /* 0..1, 0 on an empty window */
	double success_rate; /* 0..1, 1 on an empty window */
	uint64_t attempts_total;
	uint64_t successes_total;
	uint64_t failures_total;
	uint64_t failures_by_error[BREAKER_ERR_COUNT];
	uint64_t rejected_total; /* open + half_open + forced_open */
	uint64_t rejected_open;
	uint64_t rejected_half_open;
	uint64_t rejected_forced_open;
	uint64_t opened_total;
	struct breaker_change changes[BREAKER_HISTORY]; /* newest first */
	unsigned nchanges;
};

/*
 * What state_file keeps of a breaker across a restart: its state, how long
 * that state has lasted and has left, and the backoff level. Times are
 * durations, so the monotonic clock of one run never reaches the next.
 */
struct breaker_saved {
	enum breaker_state state;
	uint64_t age_ms;	/* time spent in the state so far */
	int64_t remaining_ms;	/* until open or a force ends; -1 none */
	uint64_t open_ms;	/* the drawn duration of the current opening */
	unsigned backoff_steps; /* failed half_open periods since closed */
};

struct breaker;

struct breaker *breaker_new(const struct breaker_conf *, uint64_t now_ms,
    uint64_t seed);
void breaker_free(struct breaker *);
void breaker_set_callback(struct breaker *, breaker_transition_cb, void *);
/* Apply a reloaded config, keeping state and totals. */
void breaker_reconfigure(struct breaker *, const struct breaker_conf *,
    uint64_t now_ms);

/* Decide on one client. Fills *t; t->admitted says whether to connect. */
void breaker_admit(struct breaker *, uint64_t now_ms, struct breaker_ticket *);
/* Record the outcome of an admitted attempt (err ignored on success). */
void breaker_record(struct breaker *, const struct breaker_ticket *,
    bool success, enum breaker_error, uint64_t now_ms);
/*
 * recovery_probe = connect: take the half_open slot for the daemon's own
 * connect, which ends within timeout_ms (what clients are told to wait).
 * False unless the circuit is half_open in that mode with no probe out; the
 * ticket goes back through breaker_record() or breaker_cancel().
 */
bool breaker_probe_begin(struct breaker *, uint64_t now_ms, uint64_t timeout_ms,
    struct breaker_ticket *);
/* Give back an admitted ticket that never became an attempt (local shortage). */
void breaker_cancel(struct breaker *, const struct breaker_ticket *);
/* Take back the reject counted for a ticket (the client went to a backup). */
void breaker_unreject(struct breaker *, const struct breaker_ticket *);

/* Apply time-driven transitions (open->half_open, force expiry). */
void breaker_tick(struct breaker *, uint64_t now_ms);
/* When breaker_tick() next has work to do (monotonic ms), or 0 for never. */
uint64_t breaker_next_deadline(struct breaker *);
/*
 * Milliseconds until the circuit leaves open, 0 in half_open, -1 if none.
 * A test seam: the daemon reads the same number from breaker_stats().
 */
int64_t breaker_retry_after(struct breaker *, uint64_t now_ms);

/* Manual overrides; lifetime_ms 0 = until reset. */
void breaker_force_open(struct breaker *, uint64_t lifetime_ms,
    uint64_t now_ms);
void breaker_force_closed(struct breaker *, uint64_t lifetime_ms,
    uint64_t now_ms);
void breaker_reset(struct breaker *, uint64_t now_ms);

void breaker_snapshot(struct breaker *, uint64_t now_ms,
    struct breaker_stats *);
/* What to keep of the breaker across a restart. */
void breaker_save(struct breaker *, uint64_t now_ms, struct breaker_saved *);
/*
 * Take back a saved state at start (no callback runs; totals stay zero). An
 * open period that has run out comes back half_open, a force that has run
 * out comes back closed.
 */
void breaker_restore(struct breaker *, const struct breaker_saved *,
    uint64_t now_ms);

const char *breaker_state_name(enum breaker_state);
int breaker_state_parse(const char *, enum breaker_state *);
const char *breaker_error_name(enum breaker_error);
const char *breaker_reason_name(enum breaker_reason);
/* The error kind of a connect's errno. */
enum breaker_error breaker_error_from_errno(int);
/* Is a socket() or connect() errno a local shortage, not the server's fault? */
bool breaker_errno_is_shortage(int);

#endif
