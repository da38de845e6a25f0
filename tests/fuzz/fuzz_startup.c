/*
 * libFuzzer target: the reader of a postgres client's first packets
 * (reject_pg_feed), as the relay drives it for reject = postgres: bytes fed
 * in pieces of every size, 'N' answered to SSL and GSSENC requests and the
 * rest fed again. Input: one byte that picks the piece sizes, eight that
 * give the retry-after seconds of the replies built too, then what the
 * client sends. Every promise of reject.h is checked; a broken one aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "reject.h"

/* The reply of every mode, for the seconds given: within its bound. */
static void
fuzz_startup_replies(uint64_t secs)
{
	static const enum reject_mode modes[] = { REJECT_RESET, REJECT_HTTP503,
		REJECT_REDIS, REJECT_POSTGRES, REJECT_MYSQL };
	static const char *states[] = { "open", "half_open", "forced_open" };
	char buf[REJECT_REPLY_MAX];
	size_t i, n;

	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		n = reject_reply(modes[i], "up.stream-1", states[secs % 3],
		    secs, buf, sizeof(buf));
		if (n > sizeof(buf) || (modes[i] == REJECT_RESET) != (n == 0))
			abort();
	}
}

/* One input: feed the client's bytes in pieces, check every step. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reject_pg pg;
	enum reject_pg_step step = REJECT_PG_MORE, again;
	size_t pos = 0, piece, used, answered = 0;
	uint32_t rng;
	uint64_t secs = 0;

	if (size < 9)
		return 0;
	rng = data[0] * 2654435761u + 1;
	memcpy(&secs, data + 1, sizeof(secs));
	fuzz_startup_replies(secs % 100000000);
	data += 9;
	size -= 9;

	reject_pg_init(&pg);
	while (pos < size) {
		rng = rng * 1103515245u + 12345u;
		piece = 1 + (rng >> 16) % 64;
		if (piece > size - pos)
			piece = size - pos;
		used = (size_t)-1;
		step = reject_pg_feed(&pg, data + pos, piece, &used);
		if (used > piece)
			abort();
		pos += used;
		if (step == REJECT_PG_MORE && used != piece)
			abort();
		if (step == REJECT_PG_ANSWER_N &&
		    ++answered > REJECT_PG_REQUESTS_MAX)
			abort();
		if (step == REJECT_PG_STARTUP || step == REJECT_PG_BAD)
			break;
	}
	/* Bounded: no more than the requests and one startup packet. */
	if (pos > REJECT_PG_REQUESTS_MAX * 8 + REJECT_PG_LEN_MAX)
		abort();
	/* Done means done: nothing more is taken, the same is said. */
	if (step == REJECT_PG_STARTUP || step == REJECT_PG_BAD) {
		used = (size_t)-1;
		again = reject_pg_feed(&pg, data, size, &used);
		if (again != step || used != 0)
			abort();
	}
	return 0;
}
