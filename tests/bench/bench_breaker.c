/*
 * Micro-benchmark of the breaker: nanoseconds per admit+record on one
 * thread and on two, and per admit on the reject path of an open circuit
 * (the hot path under a flood). Fixed iteration counts, each run three
 * times and the best kept, since a shared machine only ever adds time;
 * a second or two in all.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../unit/unit_breaker.h"
#include "breaker.h"

#define N_ONE (2 * 1000 * 1000)
#define N_EACH (1000 * 1000)
#define N_REJECT (5 * 1000 * 1000)
#define N_THREADS 2
#define N_RUNS 3

/* One benchmark thread's breaker and iteration count. */
struct bench_arg {
	struct breaker *b;
	long n;
};

/* Return monotonic time in nanoseconds. */
static double
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/*
 * Return the config this bench has always timed: SPEC.md's defaults plus
 * a 50% rate rule and backoff 2. Successes keep it closed.
 */
static struct breaker_conf
bench_conf(void)
{
	struct breaker_conf c = unit_breaker_conf();

	c.failure_rate_threshold = 50;
	c.recovery_backoff = 2;
	return c;
}

/* Admit and record n successful attempts, time advancing 1 ms per 1000. */
static void *
bench_admit_record(void *arg)
{
	struct bench_arg *a = arg;
	struct breaker_ticket t;
	long i;

	for (i = 0; i < a->n; i++) {
		breaker_admit(a->b, 1000 + (uint64_t)i / 1000, &t);
		if (!t.admitted)
			abort();
		breaker_record(a->b, &t, true, BREAKER_ERR_OTHER,
		    1000 + (uint64_t)i / 1000);
	}
	return NULL;
}

/* Time admit+record on one thread; return ns per op. */
static double
bench_uncontended(void)
{
	struct breaker_conf c = bench_conf();
	struct bench_arg a;
	double t0, t1;

	a.b = breaker_new(&c, 1000, 1);
	a.n = N_ONE;
	t0 = bench_now_ns();
	bench_admit_record(&a);
	t1 = bench_now_ns();
	breaker_free(a.b);
	return (t1 - t0) / N_ONE;
}

/* Time admit+record on threads sharing one breaker; return wall ns per op. */
static double
bench_contended(void)
{
	struct breaker_conf c = bench_conf();
	struct bench_arg a;
	pthread_t th[N_THREADS];
	double t0, t1;
	int i;

	a.b = breaker_new(&c, 1000, 1);
	a.n = N_EACH;
	t0 = bench_now_ns();
	for (i = 0; i < N_THREADS; i++)
		if (pthread_create(&th[i], NULL, bench_admit_record, &a) != 0)
			abort();
	for (i = 0; i < N_THREADS; i++)
		pthread_join(th[i], NULL);
	t1 = bench_now_ns();
	breaker_free(a.b);
	return (t1 - t0) / ((double)N_EACH * N_THREADS);
}

/* Time admit on an open circuit (every call a reject); return ns per op. */
static double
bench_reject(void)
{
	struct breaker_conf c = bench_conf();
	struct breaker_ticket t;
	struct breaker *b;
	double t0, t1;
	long i;

	c.recovery_timeout_ms = 1000 * 1000 * 1000;
	b = breaker_new(&c, 1000, 1);
	for (i = 0; i < 5; i++)
		unit_breaker_attempt(b, 1000, false, BREAKER_ERR_REFUSED);
	t0 = bench_now_ns();
	for (i = 0; i < N_REJECT; i++) {
		breaker_admit(b, 1000 + (uint64_t)i / 1000, &t);
		if (t.admitted)
			abort();
	}
	t1 = bench_now_ns();
	breaker_free(b);
	return (t1 - t0) / N_REJECT;
}

/* Return the best of N_RUNS runs of one measurement. */
static double
bench_best(double (*fn)(void))
{
	double best = 0, t;
	int i;

	for (i = 0; i < N_RUNS; i++) {
		t = fn();
		if (i == 0 || t < best)
			best = t;
	}
	return best;
}

/* Run the three measurements and print them. */
int
main(void)
{
	double one, two, rej;

	one = bench_best(bench_uncontended);
	two = bench_best(bench_contended);
	rej = bench_best(bench_reject);
	printf("breaker admit+record, 1 thread:   %6.1f ns/op\n", one);
	printf("breaker admit+record, %d threads:  %6.1f ns/op "
	       "(wall time / all ops; %.1f ns per op per thread)\n",
	    N_THREADS, two, two * N_THREADS);
	printf("breaker admit, reject path (open): %5.1f ns/op\n", rej);
	return 0;
}
