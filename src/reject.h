/*
 * How a client is turned away, in its own protocol: the bytes of each reply
 * (http503, redis, postgres, mysql) and the reader of a postgres client's
 * first packets. Pure C, no libevent and no sockets: the relay sends what
 * these build, and the fuzzer feeds the reader.
 */
#ifndef CP_REJECT_H
#define CP_REJECT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Room enough for any reply reject_reply() builds. */
#define REJECT_REPLY_MAX 512

/* Startup packet lengths a postgres server accepts (length word included). */
#define REJECT_PG_LEN_MIN 8
#define REJECT_PG_LEN_MAX 10000
/* SSLRequest and GSSENCRequest answered before the startup packet. */
#define REJECT_PG_REQUESTS_MAX 2

/* The seconds a reply names: retry_after_ms rounded up, or recovery_ms. */
uint64_t reject_retry_secs(int64_t retry_after_ms, uint64_t recovery_ms);

/*
 * Build the reply of a mode into buf (at least REJECT_REPLY_MAX bytes): the
 * upstream's name, the state that turned the client away ("open",
 * "half_open", "forced_open") and the seconds until a retry. Returns its
 * length; 0 for reset, which has no reply.
 */
size_t reject_reply(enum reject_mode, const char *upstream, const char *state,
    uint64_t secs, char *buf, size_t len);

/* What reject_pg_feed() found. */
enum reject_pg_step {
	REJECT_PG_MORE,	    /* all consumed: read on */
	REJECT_PG_ANSWER_N, /* an SSLRequest or GSSENCRequest: send 'N' */
	REJECT_PG_STARTUP,  /* the startup packet is complete: reply */
	REJECT_PG_BAD,	    /* not the protocol: reset */
};

/* A postgres client's first packets, read as they come. */
struct reject_pg {
	uint8_t hdr[8];	  /* length word and request code */
	uint8_t have;	  /* bytes of hdr read */
	uint8_t requests; /* SSL/GSSENC requests answered */
	uint8_t last;	  /* the last byte of the body read */
	uint8_t need_nul; /* the body must end in a NUL (a StartupMessage) */
	uint8_t done;	  /* STARTUP or BAD was said: nothing more is read */
	uint16_t left;	  /* body bytes still to come */
};

/* Start reading a client's first packet. */
void reject_pg_init(struct reject_pg *);
/*
 * Feed bytes as they arrive. Consumes up to the end of a packet and says
 * what to do; *used tells how many bytes it took (feed the rest again after
 * answering 'N'). After STARTUP or BAD the reader is done: it takes no
 * more bytes and says the same again.
 */
enum reject_pg_step reject_pg_feed(struct reject_pg *, const uint8_t *, size_t,
    size_t *used);

#endif
