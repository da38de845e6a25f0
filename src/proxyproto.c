/*
 * The PROXY protocol header of version 1 (a text line) and version 2
 * (binary), built from the client's address and the one it connected to.
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

/* The twelve bytes that open a version 2 header. */
static const uint8_t proxyproto_v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
	0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

#define PROXYPROTO_V2_LOCAL 0x20
#define PROXYPROTO_V2_PROXY 0x21
#define PROXYPROTO_V2_UNSPEC 0x00
#define PROXYPROTO_V2_TCP4 0x11
#define PROXYPROTO_V2_TCP6 0x21

/* An address pair reduced to one family, with ports in host order. */
struct proxyproto_pair {
	int family; /* AF_INET, AF_INET6, or AF_UNSPEC (not expressible) */
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
};

/* Take one address: its family, raw bytes and port (mapped IPv4 unmapped). */
static int
proxyproto_addr_take(const struct sockaddr *sa, uint8_t *raw, uint16_t *port)
{
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;

	if (sa == NULL)
		return AF_UNSPEC;
	if (sa->sa_family == AF_INET) {
		sin = (const struct sockaddr_in *)(const void *)sa;
		memcpy(raw, &sin->sin_addr, 4);
		*port = ntohs(sin->sin_port);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		*port = ntohs(sin6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			memcpy(raw, &sin6->sin6_addr.s6_addr[12], 4);
			return AF_INET;
		}
		memcpy(raw, &sin6->sin6_addr, 16);
		return AF_INET6;
	}
	return AF_UNSPEC;
}

/* Reduce src and dst to one family, or AF_UNSPEC. */
static void
proxyproto_pair_take(struct proxyproto_pair *p, const struct sockaddr *src,
    const struct sockaddr *dst)
{
	int fs, fd;

	memset(p, 0, sizeof(*p));
	fs = proxyproto_addr_take(src, p->src, &p->sport);
	fd = proxyproto_addr_take(dst, p->dst, &p->dport);
	p->family = fs == fd ? fs : AF_UNSPEC;
}

/* Write the version 1 line. */
static size_t
proxyproto_v1_build(const struct proxyproto_pair *p, char *buf)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int n;

	if (p->family == AF_UNSPEC) {
		memcpy(buf, "PROXY UNKNOWN\r\n", 15);
		return 15;
	}
	inet_ntop(p->family, p->src, s, sizeof(s));
	inet_ntop(p->family, p->dst, d, sizeof(d));
	n = snprintf(buf, PROXYPROTO_MAX, "PROXY %s %s %s %u %u\r\n",
	    p->family == AF_INET ? "TCP4" : "TCP6", s, d, p->sport, p->dport);
	return n > 0 && n < PROXYPROTO_MAX ? (size_t)n : 0;
}

/* Write the version 2 header. */
static size_t
proxyproto_v2_build(const struct proxyproto_pair *p, char *buf)
{
	uint8_t *b = (uint8_t *)buf;
	size_t alen, off = 16;

	memcpy(b, proxyproto_v2_sig, sizeof(proxyproto_v2_sig));
	if (p->family == AF_UNSPEC) {
		b[12] = PROXYPROTO_V2_LOCAL;
		b[13] = PROXYPROTO_V2_UNSPEC;
		b[14] = b[15] = 0;
		return 16;
	}
	alen = p->family == AF_INET ? 4 : 16;
	b[12] = PROXYPROTO_V2_PROXY;
	b[13] = p->family == AF_INET ? PROXYPROTO_V2_TCP4 : PROXYPROTO_V2_TCP6;
	b[14] = 0;
	b[15] = (uint8_t)(2 * alen + 4);
	memcpy(b + off, p->src, alen);
	off += alen;
	memcpy(b + off, p->dst, alen);
	off += alen;
	b[off++] = (uint8_t)(p->sport >> 8);
	b[off++] = (uint8_t)p->sport;
	b[off++] = (uint8_t)(p->dport >> 8);
	b[off++] = (uint8_t)p->dport;
	return off;
}

/* Build the header of a version for a client src that reached dst. */
size_t
proxyproto_header_build(enum proxyproto_version v, const struct sockaddr *src,
    const struct sockaddr *dst, char *buf)
{
	struct proxyproto_pair p;

	if (v == PROXYPROTO_OFF)
		return 0;
	proxyproto_pair_take(&p, src, dst);
	if (v == PROXYPROTO_V1)
		return proxyproto_v1_build(&p, buf);
	return proxyproto_v2_build(&p, buf);
}
