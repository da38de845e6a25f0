/*
 * The replies of the protocol-aware rejects and the reader of a postgres
 * client's first packets (SPEC.md section 4). Every reply names the
 * upstream, the state that turned the client away and the seconds until a
 * retry, in the client's own protocol, so its user reads why and how long.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "reject.h"

/* Postgres request codes of the 8-byte (16 for cancel) first packets. */
#define REJECT_PG_SSL 80877103U
#define REJECT_PG_GSSENC 80877104U
#define REJECT_PG_CANCEL 80877102U
#define REJECT_PG_CANCEL_LEN 16U
/* The protocol major version of a StartupMessage we can answer. */
#define REJECT_PG_MAJOR 3U

/*
 * MySQL: "too many connections", which clients show as a refusal. Before
 * the handshake a client does not know yet that the server speaks
 * protocol 4.1, so the ERR packet has no '#' SQLSTATE marker (as mysqld's
 * own refusal): libmysqlclient would show the marker as part of the text.
 */
#define REJECT_MYSQL_ERRNO 1040U

/* Round milliseconds up to seconds; -1 (no end in sight) is recovery_ms. */
uint64_t
reject_retry_secs(int64_t retry_after_ms, uint64_t recovery_ms)
{
	uint64_t ms =
	    retry_after_ms < 0 ? recovery_ms : (uint64_t)retry_after_ms;

	return (ms + 999) / 1000;
}

/* The sentence every protocol-aware reply carries. */
static size_t
reject_text(const char *upstream, const char *state, uint64_t secs, char *buf,
    size_t len)
{
	int n;

	n = snprintf(buf, len,
	    "circuitproxy: upstream '%s' unavailable (circuit %s), "
	    "retry after %" PRIu64 "s",
	    upstream, state, secs);
	if (n < 0)
		return 0;
	return (size_t)n < len ? (size_t)n : len - 1;
}

/* Append a string and its NUL, if it fits; advance *o either way. */
static void
reject_put_cstr(char *buf, size_t len, size_t *o, const char *s)
{
	size_t n = strlen(s) + 1;

	if (*o + n <= len)
		memcpy(buf + *o, s, n);
	*o += n;
}

/* Write a 32-bit big-endian word. */
static void
reject_put_be32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

/*
 * A postgres ErrorResponse: severity FATAL, SQLSTATE 57P03
 * (cannot_connect_now), the sentence as the message and a hint.
 */
static size_t
reject_reply_postgres(const char *upstream, const char *state, uint64_t secs,
    char *buf, size_t len)
{
	char msg[256], hint[160];
	size_t o = 5;

	reject_text(upstream, state, secs, msg, sizeof(msg));
	snprintf(hint, sizeof(hint),
	    "A circuit breaker turns connections away while the server "
	    "fails; try again in %" PRIu64 " seconds.",
	    secs);
	if (len < o)
		return 0;
	buf[0] = 'E';
	buf[o++] = 'S';
	reject_put_cstr(buf, len, &o, "FATAL");
	buf[o++] = 'V';
	reject_put_cstr(buf, len, &o, "FATAL");
	buf[o++] = 'C';
	reject_put_cstr(buf, len, &o, "57P03");
	buf[o++] = 'M';
	reject_put_cstr(buf, len, &o, msg);
	buf[o++] = 'H';
	reject_put_cstr(buf, len, &o, hint);
	if (o + 1 > len)
		return 0;
	buf[o++] = '\0';
	reject_put_be32(buf + 1, (uint32_t)(o - 1));
	return o;
}

/*
 * A MySQL ERR packet in place of the server greeting (sequence id 0): error
 * 1040, then the sentence, with no SQLSTATE marker (see the top).
 */
static size_t
reject_reply_mysql(const char *upstream, const char *state, uint64_t secs,
    char *buf, size_t len)
{
	size_t n, payload;

	if (len < 7)
		return 0;
	n = reject_text(upstream, state, secs, buf + 7, len - 7);
	payload = 3 + n;
	buf[0] = (char)(payload & 0xff);
	buf[1] = (char)((payload >> 8) & 0xff);
	buf[2] = (char)((payload >> 16) & 0xff);
	buf[3] = 0; /* sequence id */
	buf[4] = (char)0xff;
	buf[5] = (char)(REJECT_MYSQL_ERRNO & 0xff);
	buf[6] = (char)(REJECT_MYSQL_ERRNO >> 8);
	return 4 + payload;
}

/* Build the reply of a mode; 0 for reset. */
size_t
reject_reply(enum reject_mode mode, const char *upstream, const char *state,
    uint64_t secs, char *buf, size_t len)
{
	static const char body[] = "503 Service Unavailable\n";
	char text[256];
	int n;

	switch (mode) {
	case REJECT_HTTP503:
		n = snprintf(buf, len,
		    "HTTP/1.1 503 Service Unavailable\r\n"
		    "Content-Type: text/plain\r\n"
		    "Content-Length: %zu\r\n"
		    "Retry-After: %" PRIu64 "\r\n"
		    "Connection: close\r\n"
		    "\r\n%s",
		    sizeof(body) - 1, secs, body);
		break;
	case REJECT_REDIS:
		reject_text(upstream, state, secs, text, sizeof(text));
		n = snprintf(buf, len, "-ERR %s\r\n", text);
		break;
	case REJECT_POSTGRES:
		return reject_reply_postgres(upstream, state, secs, buf, len);
	case REJECT_MYSQL:
		return reject_reply_mysql(upstream, state, secs, buf, len);
	default:
		return 0;
	}
	if (n < 0 || (size_t)n >= len)
		return 0;
	return (size_t)n;
}

/* Start reading a client's first packet. */
void
reject_pg_init(struct reject_pg *pg)
{
	memset(pg, 0, sizeof(*pg));
}

/* Read a 32-bit big-endian word. */
static uint32_t
reject_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The header is complete: judge it, and say how much body is to come. */
static enum reject_pg_step
reject_pg_header(struct reject_pg *pg)
{
	uint32_t len = reject_get_be32(pg->hdr);
	uint32_t code = reject_get_be32(pg->hdr + 4);

	if (len < REJECT_PG_LEN_MIN || len > REJECT_PG_LEN_MAX)
		return REJECT_PG_BAD;
	if (code == REJECT_PG_SSL || code == REJECT_PG_GSSENC) {
		if (len != REJECT_PG_LEN_MIN ||
		    pg->requests >= REJECT_PG_REQUESTS_MAX)
			return REJECT_PG_BAD;
		pg->requests++;
		pg->have = 0;
		return REJECT_PG_ANSWER_N;
	}
	if (code == REJECT_PG_CANCEL) {
		if (len != REJECT_PG_CANCEL_LEN)
			return REJECT_PG_BAD;
	} else if (code >> 16 != REJECT_PG_MAJOR || len == REJECT_PG_LEN_MIN)
		return REJECT_PG_BAD; /* a startup packet ends in a NUL */
	pg->left = (uint16_t)(len - REJECT_PG_LEN_MIN);
	pg->need_nul = code != REJECT_PG_CANCEL;
	return REJECT_PG_MORE;
}

/*
 * Feed bytes as they arrive: the 8-byte header first (length and code),
 * then the body, counted but not kept, of which only the last byte matters
 * (a StartupMessage's list of parameters ends in a NUL).
 */
enum reject_pg_step
reject_pg_feed(struct reject_pg *pg, const uint8_t *buf, size_t len,
    size_t *used)
{
	enum reject_pg_step step;
	size_t o = 0, n;

	*used = 0;
	if (pg->done)
		return pg->done == 1 ? REJECT_PG_STARTUP : REJECT_PG_BAD;
	while (o < len) {
		if (pg->have < sizeof(pg->hdr)) {
			n = sizeof(pg->hdr) - pg->have;
			if (n > len - o)
				n = len - o;
			memcpy(pg->hdr + pg->have, buf + o, n);
			pg->have = (uint8_t)(pg->have + n);
			o += n;
			if (pg->have < sizeof(pg->hdr))
				break;
			step = reject_pg_header(pg);
			if (step == REJECT_PG_BAD)
				pg->done = 2;
			if (step != REJECT_PG_MORE) {
				*used = o;
				return step;
			}
			continue;
		}
		n = pg->left;
		if (n > len - o)
			n = len - o;
		o += n;
		pg->left = (uint16_t)(pg->left - n);
		pg->last = buf[o - 1];
		if (pg->left == 0) {
			*used = o;
			pg->done = pg->need_nul && pg->last != 0 ? 2 : 1;
			return pg->done == 1 ? REJECT_PG_STARTUP
					     : REJECT_PG_BAD;
		}
	}
	*used = o;
	return REJECT_PG_MORE;
}
