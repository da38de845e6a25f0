/*
 * The unit suites' one runner: each suite file builds its Suite in
 * unit_suite(), and runner.c's main() runs it and sets the exit status.
 */
#ifndef CP_TEST_UNIT_H
#define CP_TEST_UNIT_H

#include <check.h>

/* The suite of this test program (defined by each check_*.c). */
Suite *unit_suite(void);

#endif
