/*
 * Check suite for the reject replies and the postgres first-packet reader
 * (src/reject.c): every reply byte for byte, and the reader fed whole
 * packets, byte by byte, and every kind of garbage.
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reject.h"
#include "unit.h"

/* One reject reply: what it is built from and every byte expected. */
struct reply_row {
	const char *name;
	enum reject_mode mode;
	const char *upstream, *state;
	uint64_t retry_secs;
	const char *want;
	size_t wn;
};

#define TEXT(s) s, sizeof(s) - 1

/* Every reply, byte for byte. */
static const struct reply_row replies[] = {
	{ "reset_has_no_reply", REJECT_RESET, "a", "open", 3, TEXT("") },
	{ "http503", REJECT_HTTP503, "api", "open", 12,
	    TEXT("HTTP/1.1 503 Service Unavailable\r\n"
		 "Content-Type: text/plain\r\n"
		 "Content-Length: 24\r\n"
		 "Retry-After: 12\r\n"
		 "Connection: close\r\n"
		 "\r\n"
		 "503 Service Unavailable\n") },
	{ "redis", REJECT_REDIS, "cache", "open", 12,
	    TEXT("-ERR circuitproxy: upstream 'cache' unavailable (circuit "
		 "open), retry after 12s\r\n") },
	{ "redis_half_open", REJECT_REDIS, "c.1-x_y", "half_open", 0,
	    TEXT("-ERR circuitproxy: upstream 'c.1-x_y' unavailable (circuit "
		 "half_open), retry after 0s\r\n") },
	/*
	 * 'E', the length (4 + 193), then the fields, each a type byte and a
	 * C string, and the NUL that ends them.
	 */
	{ "postgres", REJECT_POSTGRES, "db", "forced_open", 30,
	    TEXT("E\0\0\0\xc5"
		 "SFATAL\0"
		 "VFATAL\0"
		 "C57P03\0"
		 "Mcircuitproxy: upstream 'db' unavailable (circuit "
		 "forced_open), retry after 30s\0"
		 "HA circuit breaker turns connections away while the server "
		 "fails; try again in 30 seconds.\0"
		 "\0") },
	/*
	 * The payload length (73), sequence id 0, ERR, 1040 little-endian,
	 * and no '#' SQLSTATE marker before the handshake, as mysqld's own.
	 */
	{ "mysql", REJECT_MYSQL, "db", "open", 7,
	    TEXT("\x49\0\0\0"
		 "\xff\x10\x04"
		 "circuitproxy: upstream 'db' unavailable (circuit open), "
		 "retry after 7s") },
};

/* Build reply row _i and compare it byte by byte. */
START_TEST(test_reply)
{
	const struct reply_row *r = &replies[_i];
	char buf[REJECT_REPLY_MAX];
	size_t n, i;

	n = reject_reply(r->mode, r->upstream, r->state, r->retry_secs, buf,
	    sizeof(buf));
	ck_assert_msg(n == r->wn, "%s: length %zu, want %zu", r->name, n,
	    r->wn);
	for (i = 0; i < n; i++)
		ck_assert_msg(buf[i] == r->want[i],
		    "%s: byte %zu is 0x%02x, want 0x%02x", r->name, i,
		    (uint8_t)buf[i], (uint8_t)r->want[i]);
}
END_TEST

/* Retry-After in whole seconds, rounded up; forced_open names the timeout. */
START_TEST(test_retry_secs)
{
	static const struct {
		int64_t retry_ms;
		uint64_t timeout_ms, secs;
	} rows[] = {
		{ 0, 30000, 0 },
		{ 1, 30000, 1 },
		{ 999, 30000, 1 },
		{ 1000, 30000, 1 },
		{ 1001, 30000, 2 },
		{ 11200, 30000, 12 },
		/* forced_open without a lifetime names recovery_timeout */
		{ -1, 30000, 30 },
		{ -1, 1500, 2 },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_msg(reject_retry_secs(rows[i].retry_ms,
				  rows[i].timeout_ms) == rows[i].secs,
		    "%lld ms (timeout %llu): want %llu s",
		    (long long)rows[i].retry_ms,
		    (unsigned long long)rows[i].timeout_ms,
		    (unsigned long long)rows[i].secs);
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

/* One packet of a pg_row: a code word and a body (code 0: none). */
struct pg_packet_spec {
	uint32_t code;
	const char *body;
	size_t blen;
};

/* A stream of packets, how it is cut, and what the reader must say. */
struct pg_row {
	const char *name;
	struct pg_packet_spec pkt[3];
	size_t chunk; /* bytes per feed; 0: every size from 1 to the whole */
	const char *steps;
	bool takes_all; /* the reader took every byte */
};

#define WHOLE ((size_t)1 << 20)
#define STARTUP PG_V3, startup_body, sizeof(startup_body)
#define CANCEL_KEY "\0\0\x30\x39\xde\xad\xbe\xef"

/* Startup, its SSL/GSS preludes and cancels, cut every way. */
static const struct pg_row pg_rows[] = {
	{ "startup", { { STARTUP } }, 0, "S", true },
	{ "ssl_gss_then_startup",
	    { { PG_GSS, NULL, 0 }, { PG_SSL, NULL, 0 }, { STARTUP } }, 0, "NNS",
	    true },
	{ "third_request_bad",
	    { { PG_SSL, NULL, 0 }, { PG_SSL, NULL, 0 }, { PG_SSL, NULL, 0 } },
	    WHOLE, "NNB", false },
	{ "cancel", { { PG_CANCEL, CANCEL_KEY, 8 } }, 3, "S", false },
	/* A cancel is 16 bytes, no more, no less. */
	{ "cancel_short", { { PG_CANCEL, CANCEL_KEY, 4 } }, WHOLE, "B", false },
	{ "unterminated", { { PG_V3, "user\0alice", 10 } }, 1, "B", true },
};

/* Feed pg_row _i's stream to the reader, cut as the row says. */
START_TEST(test_pg_stream)
{
	const struct pg_row *r = &pg_rows[_i];
	uint8_t p[128];
	size_t n = 0, chunk, last, taken;
	char steps[8];
	int k;

	for (k = 0; k < 3 && r->pkt[k].code != 0; k++)
		n += pg_packet(p + n, r->pkt[k].code, r->pkt[k].body,
		    r->pkt[k].blen);
	chunk = r->chunk == 0 ? 1 : r->chunk;
	last = r->chunk == 0 ? n : r->chunk;
	for (; chunk <= last; chunk++) {
		pg_run(p, n, chunk, steps, &taken);
		ck_assert_msg(strcmp(steps, r->steps) == 0,
		    "%s, %zu-byte feeds: steps %s, want %s", r->name, chunk,
		    steps, r->steps);
		ck_assert_msg(!r->takes_all || taken == n,
		    "%s, %zu-byte feeds: took %zu of %zu", r->name, chunk,
		    taken, n);
	}
}
END_TEST

/* Garbage and out-of-bounds lengths. */
static const struct {
	const char *what;
	uint8_t p[16];
	size_t n;
} pg_bad[] = {
	{ "HTTP", "GET / HTTP/1.1\r\n", 16 },
	{ "TLS ClientHello", { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01 },
	    8 },
	{ "length 0", { 0, 0, 0, 0, 0, 3, 0, 0 }, 8 },
	{ "length 7", { 0, 0, 0, 7, 0, 3, 0, 0 }, 8 },
	{ "length 10001", { 0, 0, 0x27, 0x11, 0, 3, 0, 0 }, 8 },
	{ "length 2^31", { 0x80, 0, 0, 0, 0, 3, 0, 0 }, 8 },
	{ "protocol 2.0", { 0, 0, 0, 9, 0, 2, 0, 0, 0 }, 9 },
	{ "protocol 4.0", { 0, 0, 0, 9, 0, 4, 0, 0, 0 }, 9 },
	{ "v3 without a body", { 0, 0, 0, 8, 0, 3, 0, 0 }, 8 },
	{ "SSLRequest of 12 bytes", { 0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f },
	    8 },
};

/* Each pg_bad row is bad, said after no more than 9 bytes. */
START_TEST(test_pg_bad)
{
	size_t taken;
	char steps[8];

	pg_run(pg_bad[_i].p, pg_bad[_i].n, pg_bad[_i].n, steps, &taken);
	ck_assert_msg(strcmp(steps, "B") == 0, "%s: steps %s", pg_bad[_i].what,
	    steps);
	ck_assert_msg(taken <= 9, "%s: read %zu", pg_bad[_i].what, taken);
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

/* The replies and the postgres reader, each table's rows one test each. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_TEST("replies", test_retry_secs),
		UNIT_ROWS("replies", test_reply, replies),
		UNIT_TEST("replies", test_long_name_fits),
		UNIT_ROWS("postgres reader", test_pg_stream, pg_rows),
		UNIT_ROWS("postgres reader", test_pg_bad, pg_bad),
		UNIT_TEST("postgres reader", test_pg_limits),
		UNIT_TEST("postgres reader", test_pg_done_takes_nothing),
	};

	return unit_suite_new("reject", tests, UNIT_NROWS(tests));
}
