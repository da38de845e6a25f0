/*
 * The fuzz corpus as a regression suite: every file under
 * tests/fuzz/corpus/TARGET (the seeds, the inputs the fuzzer kept, and
 * every crash it ever found) is fed through the same entry point the
 * fuzzer calls. Built with the ordinary compiler and run by make check, so
 * a crash once found stays fixed in every build, sanitizers and valgrind
 * included. FUZZ_TARGET names the target at compile time.
 */
#include <sys/stat.h>

#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef CP_SRCDIR
#define CP_SRCDIR "."
#endif

/* The file being replayed, named by the signal handler if it crashes. */
static char replay_current[4096];

/* Say which input crashed, then die of the same signal. */
static void
replay_crashed(int sig)
{
	static const char msg[] = "replay: crashed on ";

	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)!write(STDERR_FILENO, replay_current, strlen(replay_current));
	(void)!write(STDERR_FILENO, "\n", 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Read a whole file; NULL if it cannot be read. */
static unsigned char *
replay_read(const char *path, size_t *len)
{
	unsigned char *buf = NULL;
	struct stat sb;
	FILE *f;

	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) &&
	    (buf = malloc(sb.st_size > 0 ? (size_t)sb.st_size : 1)) != NULL &&
	    fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
		free(buf);
		buf = NULL;
	}
	*len = (size_t)sb.st_size;
	fclose(f);
	return buf;
}

/* Every file of the target's corpus goes through the entry point. */
START_TEST(replay_corpus)
{
	const char *src = getenv("CP_SRCDIR");
	char dir[2048];
	struct dirent *de;
	unsigned n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s",
	    src != NULL && *src != '\0' ? src : CP_SRCDIR, FUZZ_TARGET);
	d = opendir(dir);
	ck_assert_msg(d != NULL, "cannot open the corpus %s", dir);
	signal(SIGSEGV, replay_crashed);
	signal(SIGABRT, replay_crashed);
	signal(SIGBUS, replay_crashed);
	signal(SIGFPE, replay_crashed);
	while ((de = readdir(d)) != NULL) {
		unsigned char *buf;
		size_t len;

		if (de->d_name[0] == '.')
			continue;
		snprintf(replay_current, sizeof(replay_current), "%s/%s", dir,
		    de->d_name);
		/* Exactly the file's size: an overread is caught as in the fuzzer. */
		buf = replay_read(replay_current, &len);
		ck_assert_msg(buf != NULL, "cannot read %s", replay_current);
		LLVMFuzzerTestOneInput(buf, len);
		free(buf);
		n++;
	}
	closedir(d);
	printf("replay %s: %u inputs from %s\n", FUZZ_TARGET, n, dir);
	ck_assert_msg(n >= 10, "only %u inputs in %s", n, dir);
}
END_TEST

/* Run the one test; exit 0 when it passed. */
int
main(void)
{
	Suite *s = suite_create("replay_" FUZZ_TARGET);
	TCase *tc = tcase_create("corpus");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, replay_corpus);
	tcase_set_timeout(tc, 300);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
