/*
 * libFuzzer target: the state_file reader (state_decode), as the daemon
 * reads the file at start, and what it feeds: every decoded entry is
 * restored into a breaker, which is then asked what it is, ticked and
 * admitted on. A file that decodes must survive a round trip: encoding the
 * entries and decoding that again gives the same entries.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "config.h"
#include "fuzz.h"
#include "state.h"

/* The wall clock and the monotonic clock the target runs at. */
#define FUZZ_WALL_MS UINT64_C(1764633600000)
#define FUZZ_NOW_MS UINT64_C(5000000)

/* A breaker configuration with backoff and jitter, loaded once. */
static const struct breaker_conf *
fuzz_state_conf(void)
{
	static struct config *cfg;

	if (cfg == NULL &&
	    (cfg = config_load_string("fuzz.ini",
		 "[upstream:api]\n"
		 "listen = 127.0.0.1:1\n"
		 "server = 127.0.0.1:2\n"
		 "recovery_timeout = 5s\n"
		 "recovery_backoff = 2\n"
		 "recovery_timeout_max = 1m\n"
		 "recovery_jitter = 10%\n",
		 NULL)) == NULL)
		abort();
	return &cfg->upstreams[0].breaker;
}

/* Are two decoded entries the same? */
static int
fuzz_state_same(const struct state_entry *a, const struct state_entry *b)
{
	return strcmp(a->name, b->name) == 0 &&
	    a->saved.state == b->saved.state &&
	    a->saved.age_ms == b->saved.age_ms &&
	    a->saved.remaining_ms == b->saved.remaining_ms &&
	    a->saved.open_ms == b->saved.open_ms &&
	    a->saved.backoff_steps == b->saved.backoff_steps;
}

/* Restore an entry into a fresh breaker and use it a little. */
static void
fuzz_state_restore(const struct breaker_saved *saved)
{
	struct breaker *b = breaker_new(fuzz_state_conf(), FUZZ_NOW_MS, 1);
	struct breaker_ticket t;
	struct breaker_stats st;

	breaker_restore(b, saved, FUZZ_NOW_MS);
	breaker_snapshot(b, FUZZ_NOW_MS, &st);
	(void)breaker_retry_after(b, FUZZ_NOW_MS);
	breaker_tick(b, FUZZ_NOW_MS + 1000);
	breaker_admit(b, FUZZ_NOW_MS + 1000, &t);
	if (t.admitted)
		breaker_record(b, &t, false, BREAKER_ERR_REFUSED,
		    FUZZ_NOW_MS + 1001);
	(void)breaker_next_deadline(b);
	breaker_free(b);
}

/* One input: decode, round-trip, restore. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state_entry *v = NULL, *w = NULL;
	size_t n = 0, m = 0, i;
	char *cause = NULL, *text;

	if (state_decode((const char *)data, size, FUZZ_WALL_MS, &v, &n,
		&cause) != 0) {
		if (cause == NULL || v != NULL || n != 0)
			abort();
		free(cause);
		return 0;
	}
	text = state_encode(v, n, FUZZ_WALL_MS);
	if (state_decode(text, strlen(text), FUZZ_WALL_MS, &w, &m, &cause) !=
		0 ||
	    m != n)
		abort();
	for (i = 0; i < n; i++) {
		if (!fuzz_state_same(&v[i], &w[i]))
			abort();
		fuzz_state_restore(&v[i].saved);
	}
	free(text);
	free(v);
	free(w);
	return 0;
}
