/*
 * The unit suites' one runner: each suite file builds its Suite in
 * unit_suite(), usually from a table given to unit_suite_new(), and
 * runner.c's main() runs it and sets the exit status.
 */
#ifndef CP_TEST_UNIT_H
#define CP_TEST_UNIT_H

#include <check.h>
#include <stddef.h>

/* The suite of this test program (defined by each check_*.c). */
Suite *unit_suite(void);

/* One test of a suite: its test case, and how many table rows it loops. */
struct unit_test {
	const char *tcase;
	const TTest *test;
	int rows;    /* 0: a plain test; else run once per row, _i = row */
	int timeout; /* seconds; 0: Check's default */
};

#define UNIT_NROWS(table) ((int)(sizeof(table) / sizeof((table)[0])))
/* A plain test, and a test run once per row of table. */
// clang-format off
#define UNIT_TEST(tc, t) { tc, t, 0, 0 }
#define UNIT_ROWS(tc, t, table) { tc, t, UNIT_NROWS(table), 0 }
// clang-format on

/* A suite of the n tests, one test case per run of the same tcase name. */
Suite *unit_suite_new(const char *name, const struct unit_test *, size_t n);

#endif
