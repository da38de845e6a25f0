/*
 * The PROXY protocol header (HAProxy's proxy-protocol.txt, version 1 text
 * and version 2 binary) that tells a server who the client is. Pure: bytes
 * built from two socket addresses, nothing sent.
 */
#ifndef CP_PROXYPROTO_H
#define CP_PROXYPROTO_H

#include <sys/socket.h>

#include <stddef.h>

enum proxyproto_version {
	PROXYPROTO_OFF,
	PROXYPROTO_V1,
	PROXYPROTO_V2,
};

/* Room for any header: v1's longest line is 107 bytes, v2's 52. */
#define PROXYPROTO_MAX 108

/*
 * Build the header naming src (the client) and dst (the address it
 * reached) into buf (PROXYPROTO_MAX bytes); returns its length, 0 for
 * PROXYPROTO_OFF. Addresses that are not both IPv4 or both IPv6 (a unix
 * client, or NULL for the daemon's own connection, as a probe's) give v1
 * "UNKNOWN" or v2 "LOCAL". An IPv4-mapped IPv6 pair is written as IPv4.
 */
size_t proxyproto_header_build(enum proxyproto_version,
    const struct sockaddr *src, const struct sockaddr *dst, char *buf);

#endif
