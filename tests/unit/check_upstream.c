/*
 * Check suite for the upstream's breaker timer (SPEC.md section 4: a timer,
 * not a client, moves an open circuit to half_open). upstream.c is linked
 * alone with a real breaker and a real event base; the linker's --wrap of
 * breaker_next_deadline() lets a "worker" open the circuit at the one
 * moment that used to lose its wake-up: after the main thread read the
 * next deadline, before it armed the timer.
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "breaker.h"
#include "config.h"
#include "upstream.h"
#include "util.h"
#include "unit.h"

/* The open state's length in the story, and how long the test waits. */
#define RECOVERY_MS 50
#define WAIT_MS 2000
#define STR(x) STR2(x)
#define STR2(x) #x

uint64_t __real_breaker_next_deadline(struct breaker *);
uint64_t __wrap_breaker_next_deadline(struct breaker *);

/* Set to have the next deadline read followed by a "worker's" failures. */
static struct breaker *race_breaker;

/* The real deadline, then, once, the circuit opened behind the reader. */
uint64_t
__wrap_breaker_next_deadline(struct breaker *b)
{
	uint64_t next = __real_breaker_next_deadline(b);
	struct breaker_ticket t;
	int i;

	if (b == race_breaker) {
		race_breaker = NULL;
		for (i = 0; i < 5; i++) {
			breaker_admit(b, util_now_ms(), &t);
			breaker_record(b, &t, false, BREAKER_ERR_REFUSED,
			    util_now_ms());
		}
	}
	return next;
}

/* When the circuit was seen in half_open by the news callback, or 0. */
static uint64_t half_open_ms;

/* The news of a transition, on the main thread: stop at half_open. */
static void
changed_cb(struct upstream *up, void *arg)
{
	struct breaker_stats st;

	breaker_snapshot(up->breaker, util_now_ms(), &st);
	if (st.state == BREAKER_HALF_OPEN && half_open_ms == 0) {
		half_open_ms = util_now_ms();
		event_base_loopbreak(arg);
	}
}

/* Ends the loop when the test has waited long enough. */
static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/*
 * A worker opens the circuit right after the main thread found no
 * deadline: the circuit must still move to half_open on its own, by the
 * timer, within the recovery timeout (and some).
 */
START_TEST(tick_race_keeps_the_timer)
{
	struct config_errors errs = { NULL, 0 };
	struct config *conf = config_load_string("race.ini",
	    "[upstream:api]\n"
	    "listen = 127.0.0.1:1\n"
	    "server = 127.0.0.1:2\n"
	    "recovery_timeout = " STR(RECOVERY_MS) "ms\n",
	    &errs);
	struct event_base *base = event_base_new();
	struct timeval guard_tv = { WAIT_MS / 1000, 0 };
	struct event *guard;
	struct upstream *up;
	uint64_t t0;

	ck_assert_msg(conf != NULL, "config: %s",
	    errs.n > 0 ? errs.v[0].msg : "?");
	up = upstream_new(base, conf, &conf->upstreams[0], 1, util_now_ms(),
	    changed_cb, base);
	upstream_tick(up, util_now_ms()); /* closed: no deadline */

	race_breaker = up->breaker;
	t0 = util_now_ms();
	upstream_tick(up, t0);
	ck_assert_ptr_null(race_breaker);

	/* Only the timer may call the breaker now (a read would apply it). */
	guard = evtimer_new(base, guard_cb, base);
	evtimer_add(guard, &guard_tv);
	event_base_dispatch(base);
	ck_assert_msg(half_open_ms != 0,
	    "still open %d ms after the circuit opened with a %d ms "
	    "recovery_timeout: the timer's wake-up was lost",
	    WAIT_MS, RECOVERY_MS);
	ck_assert_msg(half_open_ms - t0 >= RECOVERY_MS - 10,
	    "half_open after %llu ms, before the deadline",
	    (unsigned long long)(half_open_ms - t0));

	event_free(guard);
	upstream_free(up);
	event_base_free(base);
	config_free(conf);
}
END_TEST

/* The suite: one test. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_TEST("tick", tick_race_keeps_the_timer),
	};

	return unit_suite_new("upstream", tests, UNIT_NROWS(tests));
}
