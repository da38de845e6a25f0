/* The main() of every unit suite and the suite builder they share. */
#include <stdlib.h>
#include <string.h>

#include "unit.h"

/* Build a suite from a table of tests, grouped into test cases by name. */
Suite *
unit_suite_new(const char *name, const struct unit_test *t, size_t n)
{
	Suite *s = suite_create(name);
	TCase *tc = NULL;
	size_t i;

	for (i = 0; i < n; i++) {
		if (tc == NULL || strcmp(t[i].tcase, t[i - 1].tcase) != 0) {
			tc = tcase_create(t[i].tcase);
			suite_add_tcase(s, tc);
		}
		if (t[i].timeout > 0)
			tcase_set_timeout(tc, t[i].timeout);
		if (t[i].rows > 0)
			tcase_add_loop_test(tc, t[i].test, 0, t[i].rows);
		else
			tcase_add_test(tc, t[i].test);
	}
	return s;
}

/* Run the program's suite; exit 0 only if every test passed. */
int
main(void)
{
	SRunner *sr = srunner_create(unit_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
