/*
 * Check suite for state_file (SPEC.md 3): the text format both ways, with
 * wall-clock time passed in, every kind of bad file refused with its line,
 * and the atomic write and the read on real files.
 */
#include <sys/stat.h>

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state.h"
#include "unit.h"
#include "util.h"

#define W0 1764630000000ULL /* a wall-clock time, ms */

/* A file of one line (a new string). */
static const char *
file_of_line(const char *line)
{
	size_t len = strlen("circuitproxyd-state 1\n") + strlen(line) + 2;
	char *text = malloc(len);

	ck_assert_ptr_nonnull(text);
	snprintf(text, len, "circuitproxyd-state 1\n%s\n", line);
	return text;
}

/* Decode text, which must be good, as of W0. */
static struct state_entry *
decode_ok(const char *text, size_t *n)
{
	struct state_entry *v;
	char *cause = NULL;

	if (state_decode(text, strlen(text), W0, &v, n, &cause) != 0)
		ck_abort_msg("decode failed: %s", cause);
	return v;
}

/* Check a decoded entry against the one expected, field by field. */
static void
entry_check(const struct state_entry *got, const struct state_entry *want)
{
	ck_assert_str_eq(got->name, want->name);
	ck_assert_int_eq(got->saved.state, want->saved.state);
	ck_assert_uint_eq(got->saved.age_ms, want->saved.age_ms);
	ck_assert_int_eq(got->saved.remaining_ms, want->saved.remaining_ms);
	ck_assert_uint_eq(got->saved.open_ms, want->saved.open_ms);
	ck_assert_uint_eq(got->saved.backoff_steps, want->saved.backoff_steps);
}

/* One entry as a row: name, state, age, remaining, open, backoff. */
#define ENTRY(n, s, age, rem, open, steps)                                     \
	{                                                                      \
		.name = (n), .saved = {                                        \
			.state = BREAKER_##s,                                  \
			.age_ms = (age),                                       \
			.remaining_ms = (rem),                                 \
			.open_ms = (open),                                     \
			.backoff_steps = (steps),                              \
		}                                                              \
	}

/* Encoding writes the version line and one line per upstream. */
START_TEST(test_encode)
{
	static const struct state_entry v[] = {
		ENTRY("api", OPEN, 10000, 20500, 30000, 2),
		ENTRY("db.main-1", FORCED_OPEN, 1, -1, 0, 0),
		ENTRY("web", CLOSED, 5000, -1, 0, 0),
	};
	char *text;

	text = state_encode(v, 3, W0);
	ck_assert_str_eq(text,
	    "circuitproxyd-state 1\n"
	    "# NAME state= since= until= open= backoff= (unix seconds; "
	    "rewritten by circuitproxyd)\n"
	    "api state=open since=1764629990.000 until=1764630020.500 "
	    "open=30.000 backoff=2\n"
	    "db.main-1 state=forced_open since=1764629999.999 until=none "
	    "open=0.000 backoff=0\n"
	    "web state=closed since=1764629995.000 until=none open=0.000 "
	    "backoff=0\n");
	free(text);
	text = state_encode(NULL, 0, W0);
	ck_assert_str_eq(strchr(text, '\n') + 1,
	    "# NAME state= since= until= open= backoff= (unix seconds; "
	    "rewritten by circuitproxyd)\n");
	free(text);
}
END_TEST

/*
 * Decoding as of a later time gives what is left then: a state that begins
 * after now (the clock went back) is new; a time already past is 0 left,
 * not none.
 */
START_TEST(test_decode)
{
	static const struct state_entry want[] = {
		ENTRY("api", OPEN, 10000, 20000, 30500, 2),
		ENTRY("db", FORCED_CLOSED, 0, -1, 0, 0),
		ENTRY("web", HALF_OPEN, 100, -1, 0, 7),
		ENTRY("old", FORCED_OPEN, 1764628999000ULL, 0, 0, 0),
	};
	struct state_entry *v;
	size_t n, i;

	v = decode_ok("circuitproxyd-state 1\n"
		      "# a comment\n"
		      "\n"
		      "api state=open since=1764629990 until=1764630020 "
		      "open=30.500 backoff=2\n"
		      "db  state=forced_closed\tbackoff=0 open=0 until=none "
		      "since=1764630001.000\n"
		      "web state=half_open since=1764629999.9 until=none "
		      "open=0.000 backoff=7\n"
		      "old state=forced_open since=1 until=1764629000.000 "
		      "open=0 backoff=0\n",
	    &n);
	ck_assert_uint_eq(n, CP_ARRAY_LEN(want));
	for (i = 0; i < n; i++)
		entry_check(&v[i], &want[i]);
	free(v);

	v = decode_ok("circuitproxyd-state 1\n", &n);
	ck_assert_uint_eq(n, 0);
	free(v);
}
END_TEST

#define NAME64                                                                 \
	"n234567890123456789012345678901234567890123456789012345678901234"

/* What is encoded decodes to the same, a second later a second less. */
START_TEST(test_roundtrip)
{
	static const struct state_entry in[] = {
		ENTRY("a", OPEN, 1234, 98765, 100000, 9999),
		ENTRY(NAME64, FORCED_CLOSED, 0, 1, 0, 0),
	};
	static const struct state_entry want[] = {
		ENTRY("a", OPEN, 2234, 97765, 100000, 9999),
		/* A force of 1 ms: no more than that has passed. */
		ENTRY(NAME64, FORCED_CLOSED, 1, 0, 0, 0),
	};
	struct state_entry *out;
	char *text, *cause = NULL;
	size_t n, i;

	text = state_encode(in, CP_ARRAY_LEN(in), W0);
	ck_assert_int_eq(state_decode(text, strlen(text), W0 + 1000, &out, &n,
			     &cause),
	    0);
	ck_assert_uint_eq(n, CP_ARRAY_LEN(want));
	for (i = 0; i < n; i++)
		entry_check(&out[i], &want[i]);
	free(out);
	free(text);
}
END_TEST

#define YEAR_MS (365ULL * 86400 * 1000)

/*
 * What is left of an opening or a force is capped by what was given (SPEC
 * 3): a file written by a clock that was ahead, or read by one that is
 * behind, never restores more than open= or until - since.
 */
static const struct {
	const char *line;
	uint64_t wall_ms; /* as of when it is read */
	int64_t remaining_ms;
	uint64_t age_ms;
} capped[] = {
	/* The plain case: the rest of the opening, uncapped. */
	{ "api state=open since=1764629990 until=1764630020 open=30 "
	  "backoff=0",
	    W0, 20000, 10000 },
	/* Read by a clock a year behind: the whole opening, no more. */
	{ "api state=open since=1764630000 until=1764630030 open=30 "
	  "backoff=0",
	    W0 - YEAR_MS, 30000, 0 },
	/* Written by a clock a year ahead: the same. */
	{ "api state=open since=1795766400 until=1795766430.5 open=30.500 "
	  "backoff=4",
	    W0, 30500, 0 },
	/* An opening shorter than open= (it was restored): until - since. */
	{ "api state=open since=1764630000 until=1764630010 open=30 "
	  "backoff=0",
	    W0 - 5000, 10000, 0 },
	/* A force keeps the rest of its lifetime... */
	{ "api state=forced_open since=1764629990 until=1764630050 open=0 "
	  "backoff=0",
	    W0, 50000, 10000 },
	/* ...and never more than the whole of it. */
	{ "api state=forced_open since=1795766400 until=1795766460 open=0 "
	  "backoff=0",
	    W0, 60000, 0 },
	{ "api state=forced_closed since=1764630000 until=1764633600 open=0 "
	  "backoff=0",
	    W0 - 86400000, 3600000, 0 },
	/* A force for good stays for good. */
	{ "api state=forced_open since=1764629000 until=none open=0 "
	  "backoff=0",
	    W0 - YEAR_MS, -1, 0 },
	/* Ended while the daemon was down: nothing left, 30 s passed. */
	{ "api state=open since=1764629900 until=1764629930 open=30 "
	  "backoff=1",
	    W0, 0, 30000 },
	/* A force for 10 s that ended a minute ago. */
	{ "api state=forced_closed since=1764629930 until=1764629940 open=0 "
	  "backoff=0",
	    W0, 0, 10000 },
};

/* Each row of the table decodes to its capped rest and age. */
START_TEST(test_decode_capped)
{
	const char *text = file_of_line(capped[_i].line);
	struct state_entry *v = NULL;
	char *cause = NULL;
	size_t n = 0;

	if (state_decode(text, strlen(text), capped[_i].wall_ms, &v, &n,
		&cause) != 0)
		ck_abort_msg("row %d: %s", _i, cause);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(v[0].saved.remaining_ms, capped[_i].remaining_ms);
	ck_assert_uint_eq(v[0].saved.age_ms, capped[_i].age_ms);
	free(v);
	free((void *)text);
}
END_TEST

/* Every bad file is refused whole, with the line and what is wrong. */
static const struct {
	const char *text;
	const char *cause;
} bad_files[] = {
	{ "", "empty file" },
	{ "circuitproxyd-state 1", "truncated (no newline at the end)" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=2 open=1 "
	  "backoff=0",
	    "truncated (no newline at the end)" },
	{ "circuitproxyd-state 1\n\0\n", "NUL byte in the file" },
	{ "circuitproxyd-state 2\n", "line 1: version '2' is not 1" },
	{ "circuitproxyd-state 1.0\n", "line 1: version '1.0' is not 1" },
	{ "hello world\n", "line 1: not a circuitproxyd-state file" },
	{ "\ncircuitproxyd-state 1\n",
	    "line 1: not a circuitproxyd-state file" },
	{ "circuitproxyd-state 1\nbad/name state=closed\n",
	    "line 2: bad upstream name 'bad/name'" },
	{ "circuitproxyd-state 1\n"
	  "n2345678901234567890123456789012345678901234567890123456789012345 "
	  "state=closed\n",
	    "line 2: bad upstream name "
	    "'n2345678901234567890123456789012345678901234567890123456789012345"
	    "'" },
	{ "circuitproxyd-state 1\napi state\n",
	    "line 2: 'state' is not key=value" },
	{ "circuitproxyd-state 1\napi color=red\n",
	    "line 2: unknown field 'color'" },
	{ "circuitproxyd-state 1\napi state=open state=open\n",
	    "line 2: field 'state' given twice" },
	{ "circuitproxyd-state 1\napi state=opened since=1 until=2 open=1 "
	  "backoff=0\n",
	    "line 2: upstream api: bad state 'opened'" },
	{ "circuitproxyd-state 1\napi state=open since=-1 until=2 open=1 "
	  "backoff=0\n",
	    "line 2: upstream api: bad since '-1'" },
	{ "circuitproxyd-state 1\napi state=open since=1.2345 until=2 open=1 "
	  "backoff=0\n",
	    "line 2: upstream api: bad since '1.2345'" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=2. open=1 "
	  "backoff=0\n",
	    "line 2: upstream api: bad until '2.'" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=2 open=1e3 "
	  "backoff=0\n",
	    "line 2: upstream api: bad open '1e3'" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=2 open=1 "
	  "backoff=x\n",
	    "line 2: upstream api: bad backoff 'x'" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=2 open=1 "
	  "backoff=99999\n",
	    "line 2: upstream api: bad backoff '99999'" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=2 "
	  "open=9999999999999999 backoff=0\n",
	    "line 2: upstream api: bad open '9999999999999999'" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=2 open=1\n",
	    "line 2: upstream api: no backoff=" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=none open=1 "
	  "backoff=0\n",
	    "line 2: upstream api: open with until=none" },
	{ "circuitproxyd-state 1\napi state=open since=1 until=32 open=30 "
	  "backoff=0\n",
	    "line 2: upstream api: until - since is longer than open=" },
	{ "circuitproxyd-state 1\napi state=open since=1764630000 "
	  "until=1795766400 open=30.000 backoff=3\n",
	    "line 2: upstream api: until - since is longer than open=" },
	{ "circuitproxyd-state 1\napi state=forced_open since=100 until=99 "
	  "open=0 backoff=0\n",
	    "line 2: upstream api: until before since" },
	{ "circuitproxyd-state 1\n"
	  "api state=closed since=1 until=none open=0 backoff=0\n"
	  "api state=closed since=1 until=none open=0 backoff=0\n",
	    "line 3: upstream api listed twice" },
};

/* Each bad file of the table gives its cause and no entries. */
START_TEST(test_decode_bad)
{
	const char *text = bad_files[_i].text;
	size_t len = strlen(text), n = 99;
	struct state_entry *v = (void *)1;
	char *cause = NULL;

	if (strstr(bad_files[_i].cause, "NUL") != NULL)
		len = strlen(text) + 2;
	ck_assert_int_eq(state_decode(text, len, W0, &v, &n, &cause), -1);
	ck_assert_ptr_null(v);
	ck_assert_uint_eq(n, 0);
	ck_assert_str_eq(cause, bad_files[_i].cause);
	free(cause);
}
END_TEST

/* A directory of our own for the file tests. */
static char *
mkdir_tmp(void)
{
	char tmpl[] = "/tmp/check_state.XXXXXX";
	char *d = mkdtemp(tmpl);

	ck_assert_ptr_nonnull(d);
	return strdup(d);
}

/* Write, read back, replace; no temporary file is left behind. */
START_TEST(test_write_read)
{
	char *dir = mkdir_tmp(), path[256], tmp[300], *text, *cause = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	ck_assert_int_eq(state_read(path, &text, &len, &cause), 1);
	ck_assert_int_eq(state_write(path, "one\n", &cause), 0);
	ck_assert_int_eq(state_read(path, &text, &len, &cause), 0);
	ck_assert_uint_eq(len, 4);
	ck_assert_str_eq(text, "one\n");
	free(text);
	ck_assert_int_eq(state_write(path, "two, longer\n", &cause), 0);
	ck_assert_int_eq(state_read(path, &text, &len, &cause), 0);
	ck_assert_str_eq(text, "two, longer\n");
	free(text);
	ck_assert_int_eq(access(tmp, F_OK), -1);
	unlink(path);
	rmdir(dir);
	free(dir);
}
END_TEST

/* A write that cannot happen says where and why, and leaves the old file. */
START_TEST(test_write_fails)
{
	char *dir = mkdir_tmp(), path[256], tmp[300], want[400];
	char *text, *cause = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/nodir/state", dir);
	ck_assert_int_eq(state_write(path, "x\n", &cause), -1);
	snprintf(want, sizeof(want), "%s.tmp: open: %s", path,
	    strerror(ENOENT));
	ck_assert_str_eq(cause, want);
	free(cause);

	/* The temporary name taken by a directory: the old file stays. */
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	ck_assert_int_eq(state_write(path, "old\n", &cause), 0);
	ck_assert_int_eq(mkdir(tmp, 0700), 0);
	ck_assert_int_eq(state_write(path, "new\n", &cause), -1);
	ck_assert_ptr_nonnull(strstr(cause, ": open: "));
	free(cause);
	ck_assert_int_eq(state_read(path, &text, &len, &cause), 0);
	ck_assert_str_eq(text, "old\n");
	free(text);
	rmdir(tmp);

	/* Not a regular file, or too large: refused on read. */
	ck_assert_int_eq(state_read(dir, &text, &len, &cause), -1);
	snprintf(want, sizeof(want), "%s: not a regular file", dir);
	ck_assert_str_eq(cause, want);
	free(cause);
	ck_assert_int_eq(truncate(path, STATE_SIZE_MAX + 1), 0);
	ck_assert_int_eq(state_read(path, &text, &len, &cause), -1);
	snprintf(want, sizeof(want), "%s: larger than 1 MiB", path);
	ck_assert_str_eq(cause, want);
	free(cause);
	unlink(path);
	rmdir(dir);
	free(dir);
}
END_TEST

/* Gather the tests into one suite. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_TEST("format", test_encode),
		UNIT_TEST("format", test_decode),
		UNIT_TEST("format", test_roundtrip),
		UNIT_ROWS("format", test_decode_capped, capped),
		UNIT_ROWS("format", test_decode_bad, bad_files),
		UNIT_TEST("files", test_write_read),
		UNIT_TEST("files", test_write_fails),
	};

	return unit_suite_new("state", tests, UNIT_NROWS(tests));
}
