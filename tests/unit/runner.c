/* The main() of every unit suite: run unit_suite(), fail if a test did. */
#include <stdlib.h>

#include "unit.h"

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
