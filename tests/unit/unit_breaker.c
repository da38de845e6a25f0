/* The breaker config and attempt the unit suites and bench_breaker share. */
#include <string.h>

#include "unit_breaker.h"

/* Return SPEC.md's defaults: the config the tests start from. */
struct breaker_conf
unit_breaker_conf(void)
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

/* Admit one client at now and, if let through, record its outcome. */
bool
unit_breaker_attempt(struct breaker *b, uint64_t now, bool success,
    enum breaker_error err)
{
	struct breaker_ticket t;

	memset(&t, 0xa5, sizeof(t));
	breaker_admit(b, now, &t);
	if (!t.admitted)
		return false;
	breaker_record(b, &t, success, err, now);
	return true;
}
