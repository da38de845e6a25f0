/*
 * Check suite for the reject replies and the postgres first-packet reader
 * (src/reject.c): every reply byte for byte, and the reader fed whole
 * packets, byte by byte, and every kind of garbage.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reject.h"
#include "unit.h"

/* Assert that a built reply is exactly the expected bytes. */
static void
expect_bytes(const char *got, size_t n, const char *want, size_t wn)
{
	size_t i;

	ck_assert_msg(n == wn, "length %zu, want %zu", n, wn);
	for (i = 0; i < n; i++)
		ck_assert_msg(got[i] == want[i],
		    "byte %zu is 0x%02x, want 0x%02x", i, (uint8_t)got[i],
		    (uint8_t)want[i]);
}

START_TEST(test_retry_secs)
{
	ck_assert_uint_eq(reject_retry_secs(0, 30000), 0);
	ck_assert_uint_eq(reject_retry_secs(1, 30000), 1);
	ck_assert_uint_eq(reject_retry_secs(999, 30000), 1);
	ck_assert_uint_eq(reject_retry_secs(1000, 30000), 1);
	ck_assert_uint_eq(reject_retry_secs(1001, 30000), 2);
	ck_assert_uint_eq(reject_retry_secs(11200, 30000), 12);
	/* forced_open without a lifetime names recovery_timeout */
	ck_assert_uint_eq(reject_retry_secs(-1, 30000), 30);
	ck_assert_uint_eq(reject_retry_secs(-1, 1500), 2);
}
END_TEST

START_TEST(test_reset_has_no_reply)
{
	char buf[REJECT_REPLY_MAX];

	ck_assert_uint_eq(reject_reply(REJECT_RESET, "a", "open", 3, buf,
			      sizeof(buf)),
	    0);
}
END_TEST

START_TEST(test_http503)
{
	static const char want[] = "HTTP/1.1 503 Service Unavailable\r\n"
				   "Content-Type: text/plain\r\n"
				   "Content-Length: 24\r\n"
				   "Retry-After: 12\r\n"
				   "Connection: close\r\n"
				   "\r\n"
				   "503 Service Unavailable\n";
	char buf[REJECT_REPLY_MAX];
	size_t n;

	n = reject_reply(REJECT_HTTP503, "api", "open", 12, buf, sizeof(buf));
	expect_bytes(buf, n, want, sizeof(want) - 1);
}
END_TEST

START_TEST(test_redis)
{
	static const char want[] = "-ERR circuitproxy: upstream 'cache' "
				   "unavailable (circuit open), retry after "
				   "12s\r\n";
	char buf[REJECT_REPLY_MAX];
	size_t n;

	n = reject_reply(REJECT_REDIS, "cache", "open", 12, buf, sizeof(buf));
	expect_bytes(buf, n, want, sizeof(want) - 1);
}
END_TEST

START_TEST(test_redis_half_open)
{
	static const char want[] = "-ERR circuitproxy: upstream 'c.1-x_y' "
				   "unavailable (circuit half_open), retry "
				   "after 0s\r\n";
	char buf[REJECT_REPLY_MAX];
	size_t n;

	n = reject_reply(REJECT_REDIS, "c.1-x_y", "half_open", 0, buf,
	    sizeof(buf));
	expect_bytes(buf, n, want, sizeof(want) - 1);
}
END_TEST

START_TEST(test_postgres)
{
	/* 'E', length, then the fields, each a type byte and a C string. */
	static const char fields[] = "SFATAL\0"
				     "VFATAL\0"
				     "C57P03\0"
				     "Mcircuitproxy: upstream 'db' unavailable "
				     "(circuit forced_open), retry after 30s\0"
				     "HA circuit breaker turns connections "
				     "away while the server fails; try again "
				     "in 30 seconds.\0";
	char want[REJECT_REPLY_MAX], buf[REJECT_REPLY_MAX];
	size_t n, flen = sizeof(fields); /* with the final NUL */
	uint32_t len = (uint32_t)(4 + flen);

	want[0] = 'E';
	want[1] = (char)(len >> 24);
	want[2] = (char)(len >> 16);
	want[3] = (char)(len >> 8);
	want[4] = (char)len;
	memcpy(want + 5, fields, flen);
	n = reject_reply(REJECT_POSTGRES, "db", "forced_open", 30, buf,
	    sizeof(buf));
	expect_bytes(buf, n, want, 5 + flen);
	ck_assert_uint_eq(n, 1 + len);
}
END_TEST

START_TEST(test_mysql)
{
	static const char text[] = "circuitproxy: upstream 'db' unavailable "
				   "(circuit open), retry after 7s";
	char want[REJECT_REPLY_MAX], buf[REJECT_REPLY_MAX];
	size_t n, payload = 1 + 2 + sizeof(text) - 1;

	want[0] = (char)payload;
	want[1] = 0;
	want[2] = 0;
	want[3] = 0;	      /* sequence id */
	want[4] = (char)0xff; /* ERR */
	want[5] = (char)0x10; /* 1040, little-endian */
	want[6] = (char)0x04;
	/* No '#' SQLSTATE marker before the handshake, as mysqld's own. */
	memcpy(want + 7, text, sizeof(text) - 1);
	n = reject_reply(REJECT_MYSQL, "db", "open", 7, buf, sizeof(buf));
	expect_bytes(buf, n, want, 4 + payload);
	ck_assert_int_ne(buf[7], '#');
}
END_TEST

START_TEST(test_long_name_fits)
{
	char name[UPSTREAM_NAME_MAX + 1], buf[REJECT_REPLY_MAX];
	enum reject_mode m;

	memset(name, 'n', UPSTREAM_NAME_MAX);
	name[UPSTREAM_NAME_MAX] = '\0';
	for (m = REJECT_HTTP503; m <= REJECT_MYSQL; m++) {
		size_t n = reject_reply(m, name, "forced_open",
		    UINT64_MAX / 1000, buf, sizeof(buf));

		ck_assert_msg(n > 0 && n <= sizeof(buf), "mode %d: %zu", m, n);
		if (m != REJECT_HTTP503)
			ck_assert_msg(memmem(buf, n, name, UPSTREAM_NAME_MAX) !=
				NULL,
			    "mode %d lost the name", m);
	}
}
END_TEST

/* A postgres packet: a length word, a code word and a body. */
static size_t
pg_packet(uint8_t *out, uint32_t code, const void *body, size_t blen)
{
	uint32_t len = (uint32_t)(8 + blen);

	out[0] = (uint8_t)(len >> 24);
	out[1] = (uint8_t)(len >> 16);
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
	out[4] = (uint8_t)(code >> 24);
	out[5] = (uint8_t)(code >> 16);
	out[6] = (uint8_t)(code >> 8);
	out[7] = (uint8_t)code;
	if (blen != 0)
		memcpy(out + 8, body, blen);
	return 8 + blen;
}

static const char startup_body[] = "user\0alice\0database\0app\0";
#define PG_V3 196608U
#define PG_SSL 80877103U
#define PG_GSS 80877104U
#define PG_CANCEL 80877102U

/*
 * Feed a stream in chunks of chunk bytes; return the steps said (one
 * letter each: N answer, S startup, B bad) and stop at S or B.
 */
static void
pg_run(const uint8_t *p, size_t n, size_t chunk, char *steps, size_t *taken)
{
	struct reject_pg pg;
	size_t off = 0, end, used, k = 0;
	enum reject_pg_step st;

	reject_pg_init(&pg);
	while (off < n) {
		end = off + chunk < n ? off + chunk : n;
		while (off < end) {
			st = reject_pg_feed(&pg, p + off, end - off, &used);
			ck_assert_uint_le(used, end - off);
			off += used;
			if (st == REJECT_PG_MORE) {
				ck_assert_uint_eq(off, end);
				continue;
			}
			steps[k++] = st == REJECT_PG_ANSWER_N ? 'N'
			    : st == REJECT_PG_STARTUP	      ? 'S'
							      : 'B';
			if (st != REJECT_PG_ANSWER_N)
				goto out;
		}
	}
out:
	steps[k] = '\0';
	*taken = off;
}

START_TEST(test_pg_startup)
{
	uint8_t p[64];
	size_t n = pg_packet(p, PG_V3, startup_body, sizeof(startup_body));
	size_t chunk, taken;
	char steps[8];

	for (chunk = 1; chunk <= n; chunk++) {
		pg_run(p, n, chunk, steps, &taken);
		ck_assert_str_eq(steps, "S");
		ck_assert_uint_eq(taken, n);
	}
}
END_TEST

START_TEST(test_pg_ssl_gss_then_startup)
{
	uint8_t p[128];
	size_t n = 0, chunk, taken;
	char steps[8];

	n += pg_packet(p + n, PG_GSS, NULL, 0);
	n += pg_packet(p + n, PG_SSL, NULL, 0);
	n += pg_packet(p + n, PG_V3, startup_body, sizeof(startup_body));
	for (chunk = 1; chunk <= n; chunk++) {
		pg_run(p, n, chunk, steps, &taken);
		ck_assert_str_eq(steps, "NNS");
		ck_assert_uint_eq(taken, n);
	}
}
END_TEST

START_TEST(test_pg_third_request_bad)
{
	uint8_t p[64];
	size_t n = 0, taken;
	char steps[8];

	n += pg_packet(p + n, PG_SSL, NULL, 0);
	n += pg_packet(p + n, PG_SSL, NULL, 0);
	n += pg_packet(p + n, PG_SSL, NULL, 0);
	pg_run(p, n, n, steps, &taken);
	ck_assert_str_eq(steps, "NNB");
}
END_TEST

START_TEST(test_pg_cancel)
{
	uint8_t p[32], key[8] = { 0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef };
	size_t n = pg_packet(p, PG_CANCEL, key, sizeof(key)), taken;
	char steps[8];

	pg_run(p, n, 3, steps, &taken);
	ck_assert_str_eq(steps, "S");
	/* A cancel is 16 bytes, no more, no less. */
	n = pg_packet(p, PG_CANCEL, key, 4);
	pg_run(p, n, n, steps, &taken);
	ck_assert_str_eq(steps, "B");
}
END_TEST

/* Garbage and out-of-bounds lengths: each is bad, after no more than 8 bytes. */
START_TEST(test_pg_bad)
{
	static const struct {
		const char *what;
		uint8_t p[16];
		size_t n;
	} cases[] = {
		{ "HTTP", "GET / HTTP/1.1\r\n", 16 },
		{ "TLS ClientHello",
		    { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01 }, 8 },
		{ "length 0", { 0, 0, 0, 0, 0, 3, 0, 0 }, 8 },
		{ "length 7", { 0, 0, 0, 7, 0, 3, 0, 0 }, 8 },
		{ "length 10001", { 0, 0, 0x27, 0x11, 0, 3, 0, 0 }, 8 },
		{ "length 2^31", { 0x80, 0, 0, 0, 0, 3, 0, 0 }, 8 },
		{ "protocol 2.0", { 0, 0, 0, 9, 0, 2, 0, 0, 0 }, 9 },
		{ "protocol 4.0", { 0, 0, 0, 9, 0, 4, 0, 0, 0 }, 9 },
		{ "v3 without a body", { 0, 0, 0, 8, 0, 3, 0, 0 }, 8 },
		{ "SSLRequest of 12 bytes",
		    { 0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f }, 8 },
	};
	size_t i, taken;
	char steps[8];

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pg_run(cases[i].p, cases[i].n, cases[i].n, steps, &taken);
		ck_assert_msg(strcmp(steps, "B") == 0, "%s: steps %s",
		    cases[i].what, steps);
		ck_assert_msg(taken <= 9, "%s: read %zu", cases[i].what, taken);
	}
}
END_TEST

START_TEST(test_pg_unterminated)
{
	uint8_t p[64];
	size_t n = pg_packet(p, PG_V3, "user\0alice", 10), taken;
	char steps[8];

	pg_run(p, n, 1, steps, &taken);
	ck_assert_str_eq(steps, "B");
	ck_assert_uint_eq(taken, n);
}
END_TEST

START_TEST(test_pg_limits)
{
	static uint8_t p[REJECT_PG_LEN_MAX + 8];
	static uint8_t body[REJECT_PG_LEN_MAX];
	size_t n, taken;
	char steps[8];

	memset(body, 'x', sizeof(body));
	body[REJECT_PG_LEN_MAX - 8 - 1] = '\0';
	n = pg_packet(p, PG_V3, body, REJECT_PG_LEN_MAX - 8);
	ck_assert_uint_eq(n, REJECT_PG_LEN_MAX);
	pg_run(p, n, 4096, steps, &taken);
	ck_assert_str_eq(steps, "S");
	ck_assert_uint_eq(taken, REJECT_PG_LEN_MAX);
	n = pg_packet(p, PG_V3, body, REJECT_PG_LEN_MAX - 7);
	pg_run(p, n, 4096, steps, &taken);
	ck_assert_str_eq(steps, "B");
	ck_assert_uint_eq(taken, 8);
}
END_TEST

START_TEST(test_pg_done_takes_nothing)
{
	struct reject_pg pg;
	uint8_t p[64];
	size_t n = pg_packet(p, PG_V3, startup_body, sizeof(startup_body));
	size_t used = 99;

	reject_pg_init(&pg);
	ck_assert_int_eq(reject_pg_feed(&pg, p, n, &used), REJECT_PG_STARTUP);
	ck_assert_uint_eq(used, n);
	ck_assert_int_eq(reject_pg_feed(&pg, p, n, &used), REJECT_PG_STARTUP);
	ck_assert_uint_eq(used, 0);
	ck_assert_int_eq(reject_pg_feed(&pg, NULL, 0, &used),
	    REJECT_PG_STARTUP);
	reject_pg_init(&pg);
	ck_assert_int_eq(reject_pg_feed(&pg, (const uint8_t *)"GET / HTTP", 10,
			     &used),
	    REJECT_PG_BAD);
	ck_assert_int_eq(reject_pg_feed(&pg, p, n, &used), REJECT_PG_BAD);
	ck_assert_uint_eq(used, 0);
	reject_pg_init(&pg);
	ck_assert_int_eq(reject_pg_feed(&pg, NULL, 0, &used), REJECT_PG_MORE);
	ck_assert_uint_eq(used, 0);
}
END_TEST

/* Build the suite. */
Suite *
unit_suite(void)
{
	Suite *s = suite_create("reject");
	TCase *tc = tcase_create("replies");
	TCase *tp = tcase_create("postgres reader");

	tcase_add_test(tc, test_retry_secs);
	tcase_add_test(tc, test_reset_has_no_reply);
	tcase_add_test(tc, test_http503);
	tcase_add_test(tc, test_redis);
	tcase_add_test(tc, test_redis_half_open);
	tcase_add_test(tc, test_postgres);
	tcase_add_test(tc, test_mysql);
	tcase_add_test(tc, test_long_name_fits);
	suite_add_tcase(s, tc);
	tcase_add_test(tp, test_pg_startup);
	tcase_add_test(tp, test_pg_ssl_gss_then_startup);
	tcase_add_test(tp, test_pg_third_request_bad);
	tcase_add_test(tp, test_pg_cancel);
	tcase_add_test(tp, test_pg_bad);
	tcase_add_test(tp, test_pg_unterminated);
	tcase_add_test(tp, test_pg_limits);
	tcase_add_test(tp, test_pg_done_takes_nothing);
	suite_add_tcase(s, tp);
	return s;
}
