/*
 * What the breaker's tests and its micro-benchmark share: SPEC.md's default
 * breaker config and one admitted, recorded attempt. Plain C, no Check, so
 * tests/bench/bench_breaker links it too.
 */
#ifndef CP_TEST_UNIT_BREAKER_H
#define CP_TEST_UNIT_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"

/* SPEC.md's breaker defaults (consecutive rule only, no backoff). */
struct breaker_conf unit_breaker_conf(void);
/* Admit one client at now and record its outcome; false if turned away. */
bool unit_breaker_attempt(struct breaker *, uint64_t now, bool success,
    enum breaker_error);

#endif
