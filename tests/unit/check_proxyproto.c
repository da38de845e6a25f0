/*
 * Check suite for the PROXY protocol header (src/proxyproto.c): every byte
 * of version 1 and version 2 for IPv4, IPv6, IPv4-mapped IPv6, unix
 * clients and the daemon's own connections, against HAProxy's spec.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"
#include "unit.h"

/* One end of a connection as a row gives it: family 0 is none (NULL). */
struct end {
	int family;
	const char *ip;
	unsigned port;
};

/* One header: the version, both ends and every byte expected. */
struct header_row {
	const char *name;
	enum proxyproto_version version;
	struct end client, local;
	const void *want;
	size_t wn;
};

#define SIG                                                                    \
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
#define TEXT(s) s, sizeof(s) - 1
#define BYTES(...)                                                             \
	(const uint8_t[]){ __VA_ARGS__ },                                      \
	    sizeof((const uint8_t[]){ __VA_ARGS__ })
#define ENDPOINT(...)                                                          \
	{                                                                      \
		__VA_ARGS__                                                    \
	}
#define V4(ip, port) ENDPOINT(AF_INET, ip, port)
#define V6(ip, port) ENDPOINT(AF_INET6, ip, port)
#define UNIX ENDPOINT(AF_UNIX, NULL, 0)
#define NONE ENDPOINT(0, NULL, 0)

/* Every header version 1 and 2 can carry, against HAProxy's spec. */
static const struct header_row rows[] = {
	{ "off_is_nothing", PROXYPROTO_OFF, V4("192.0.2.4", 51234),
	    V4("127.0.0.1", 80), TEXT("") },
	{ "v1_tcp4", PROXYPROTO_V1, V4("192.0.2.4", 51234),
	    V4("127.0.0.1", 8080),
	    TEXT("PROXY TCP4 192.0.2.4 127.0.0.1 51234 8080\r\n") },
	{ "v1_tcp6", PROXYPROTO_V1, V6("2001:db8::4", 1), V6("::1", 65535),
	    TEXT("PROXY TCP6 2001:db8::4 ::1 1 65535\r\n") },
	/* The longest address line: 104 bytes, under the spec's 107. */
	{ "v1_longest_fits", PROXYPROTO_V1,
	    V6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535),
	    V6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
	    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	    104 },
	{ "v1_mapped_is_tcp4", PROXYPROTO_V1, V6("::ffff:192.0.2.4", 4000),
	    V6("::ffff:127.0.0.1", 80),
	    TEXT("PROXY TCP4 192.0.2.4 127.0.0.1 4000 80\r\n") },
	{ "v1_unix_unknown", PROXYPROTO_V1, UNIX, UNIX,
	    TEXT("PROXY UNKNOWN\r\n") },
	{ "v1_own_connection_unknown", PROXYPROTO_V1, NONE, NONE,
	    TEXT("PROXY UNKNOWN\r\n") },
	{ "v2_tcp4", PROXYPROTO_V2, V4("192.0.2.4", 51234),
	    V4("127.0.0.1", 8080),
	    BYTES(SIG, 0x21, 0x11, 0x00, 12, 192, 0, 2, 4, 127, 0, 0, 1, 0xc8,
		0x22, 0x1f, 0x90) },
	{ "v2_tcp6", PROXYPROTO_V2, V6("2001:db8::4", 443), V6("::1", 8443),
	    BYTES(SIG, 0x21, 0x21, 0x00, 36, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 1, 0x01, 0xbb, 0x20, 0xfb) },
	{ "v2_unix_local", PROXYPROTO_V2, UNIX, UNIX,
	    BYTES(SIG, 0x20, 0x00, 0x00, 0x00) },
	{ "v2_own_connection_local", PROXYPROTO_V2, NONE, NONE,
	    BYTES(SIG, 0x20, 0x00, 0x00, 0x00) },
	/* Families that differ cannot be told: LOCAL. */
	{ "v2_families_differ_local", PROXYPROTO_V2, UNIX, V4("127.0.0.1", 80),
	    BYTES(SIG, 0x20, 0x00, 0x00, 0x00) },
};

/* Fill ss with end e; return it as a sockaddr, or NULL for none. */
static struct sockaddr *
end_sockaddr(const struct end *e, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	ss->ss_family = (sa_family_t)e->family;
	if (e->family == AF_INET) {
		ck_assert_int_eq(inet_pton(AF_INET, e->ip, &s4->sin_addr), 1);
		s4->sin_port = htons((uint16_t)e->port);
	} else if (e->family == AF_INET6) {
		ck_assert_int_eq(inet_pton(AF_INET6, e->ip, &s6->sin6_addr), 1);
		s6->sin6_port = htons((uint16_t)e->port);
	}
	return e->family == 0 ? NULL : (struct sockaddr *)ss;
}

/* Build row _i's header and compare it byte by byte. */
START_TEST(test_header)
{
	const struct header_row *r = &rows[_i];
	struct sockaddr_storage c, l;
	const uint8_t *w = r->want;
	char buf[PROXYPROTO_MAX];
	size_t n, i;

	n = proxyproto_header_build(r->version, end_sockaddr(&r->client, &c),
	    end_sockaddr(&r->local, &l), buf);
	ck_assert_msg(n == r->wn, "%s: length %zu, want %zu", r->name, n,
	    r->wn);
	for (i = 0; i < n; i++)
		ck_assert_msg((uint8_t)buf[i] == w[i],
		    "%s: byte %zu is 0x%02x, want 0x%02x", r->name, i,
		    (uint8_t)buf[i], w[i]);
}
END_TEST

/* The header rows, one test each. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_ROWS("header", test_header, rows),
	};

	return unit_suite_new("proxyproto", tests, UNIT_NROWS(tests));
}
