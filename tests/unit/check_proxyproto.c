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

/* An IPv4 socket address. */
static struct sockaddr_in
v4(const char *ip, unsigned port)
{
	struct sockaddr_in s = { .sin_family = AF_INET };

	ck_assert_int_eq(inet_pton(AF_INET, ip, &s.sin_addr), 1);
	s.sin_port = htons((uint16_t)port);
	return s;
}

/* An IPv6 socket address. */
static struct sockaddr_in6
v6(const char *ip, unsigned port)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6 };

	ck_assert_int_eq(inet_pton(AF_INET6, ip, &s.sin6_addr), 1);
	s.sin6_port = htons((uint16_t)port);
	return s;
}

/* Assert that a built header is exactly the expected bytes. */
static void
expect_bytes(const char *got, size_t n, const void *want, size_t wn)
{
	const uint8_t *w = want;
	size_t i;

	ck_assert_msg(n == wn, "length %zu, want %zu", n, wn);
	for (i = 0; i < n; i++)
		ck_assert_msg((uint8_t)got[i] == w[i],
		    "byte %zu is 0x%02x, want 0x%02x", i, (uint8_t)got[i],
		    w[i]);
}

#define SIG                                                                    \
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a

START_TEST(test_off_is_nothing)
{
	struct sockaddr_in c = v4("192.0.2.4", 51234), l = v4("127.0.0.1", 80);
	char buf[PROXYPROTO_MAX];

	ck_assert_uint_eq(proxyproto_header_build(PROXYPROTO_OFF,
			      (struct sockaddr *)&c, (struct sockaddr *)&l,
			      buf),
	    0);
}
END_TEST

START_TEST(test_v1_tcp4)
{
	struct sockaddr_in c = v4("192.0.2.4", 51234),
			   l = v4("127.0.0.1", 8080);
	char buf[PROXYPROTO_MAX];
	const char *want = "PROXY TCP4 192.0.2.4 127.0.0.1 51234 8080\r\n";
	size_t n = proxyproto_header_build(PROXYPROTO_V1, (struct sockaddr *)&c,
	    (struct sockaddr *)&l, buf);

	expect_bytes(buf, n, want, strlen(want));
}
END_TEST

START_TEST(test_v1_tcp6)
{
	struct sockaddr_in6 c = v6("2001:db8::4", 1), l = v6("::1", 65535);
	char buf[PROXYPROTO_MAX];
	const char *want = "PROXY TCP6 2001:db8::4 ::1 1 65535\r\n";
	size_t n = proxyproto_header_build(PROXYPROTO_V1, (struct sockaddr *)&c,
	    (struct sockaddr *)&l, buf);

	expect_bytes(buf, n, want, strlen(want));
}
END_TEST

START_TEST(test_v1_longest_fits)
{
	struct sockaddr_in6 c = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
				65535),
			    l = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
				65535);
	char buf[PROXYPROTO_MAX];
	const char *want =
	    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	size_t n = proxyproto_header_build(PROXYPROTO_V1, (struct sockaddr *)&c,
	    (struct sockaddr *)&l, buf);

	/* The longest address line: 104 bytes, under the spec's 107. */
	ck_assert_uint_eq(strlen(want), 104);
	expect_bytes(buf, n, want, strlen(want));
}
END_TEST

START_TEST(test_v1_mapped_is_tcp4)
{
	struct sockaddr_in6 c = v6("::ffff:192.0.2.4", 4000),
			    l = v6("::ffff:127.0.0.1", 80);
	char buf[PROXYPROTO_MAX];
	const char *want = "PROXY TCP4 192.0.2.4 127.0.0.1 4000 80\r\n";
	size_t n = proxyproto_header_build(PROXYPROTO_V1, (struct sockaddr *)&c,
	    (struct sockaddr *)&l, buf);

	expect_bytes(buf, n, want, strlen(want));
}
END_TEST

START_TEST(test_v1_unix_and_local_unknown)
{
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	char buf[PROXYPROTO_MAX];
	size_t n;

	n = proxyproto_header_build(PROXYPROTO_V1, (struct sockaddr *)&u,
	    (struct sockaddr *)&u, buf);
	expect_bytes(buf, n, "PROXY UNKNOWN\r\n", 15);
	n = proxyproto_header_build(PROXYPROTO_V1, NULL, NULL, buf);
	expect_bytes(buf, n, "PROXY UNKNOWN\r\n", 15);
}
END_TEST

START_TEST(test_v2_tcp4)
{
	struct sockaddr_in c = v4("192.0.2.4", 51234),
			   l = v4("127.0.0.1", 8080);
	char buf[PROXYPROTO_MAX];
	static const uint8_t want[] = { SIG, 0x21, 0x11, 0x00, 12, 192, 0, 2, 4,
		127, 0, 0, 1, 0xc8, 0x22, 0x1f, 0x90 };
	size_t n = proxyproto_header_build(PROXYPROTO_V2, (struct sockaddr *)&c,
	    (struct sockaddr *)&l, buf);

	expect_bytes(buf, n, want, sizeof(want));
}
END_TEST

START_TEST(test_v2_tcp6)
{
	struct sockaddr_in6 c = v6("2001:db8::4", 443), l = v6("::1", 8443);
	char buf[PROXYPROTO_MAX];
	static const uint8_t want[] = { SIG, 0x21, 0x21, 0x00, 36, 0x20, 0x01,
		0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb, 0x20, 0xfb };
	size_t n = proxyproto_header_build(PROXYPROTO_V2, (struct sockaddr *)&c,
	    (struct sockaddr *)&l, buf);

	expect_bytes(buf, n, want, sizeof(want));
}
END_TEST

START_TEST(test_v2_unix_and_local)
{
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	struct sockaddr_in l = v4("127.0.0.1", 80);
	char buf[PROXYPROTO_MAX];
	static const uint8_t want[] = { SIG, 0x20, 0x00, 0x00, 0x00 };
	size_t n;

	n = proxyproto_header_build(PROXYPROTO_V2, (struct sockaddr *)&u,
	    (struct sockaddr *)&u, buf);
	expect_bytes(buf, n, want, sizeof(want));
	n = proxyproto_header_build(PROXYPROTO_V2, NULL, NULL, buf);
	expect_bytes(buf, n, want, sizeof(want));
	/* Families that differ cannot be told: LOCAL. */
	n = proxyproto_header_build(PROXYPROTO_V2, (struct sockaddr *)&u,
	    (struct sockaddr *)&l, buf);
	expect_bytes(buf, n, want, sizeof(want));
}
END_TEST

/* Build the suite. */
Suite *
unit_suite(void)
{
	Suite *s = suite_create("proxyproto");
	TCase *tc = tcase_create("header");

	tcase_add_test(tc, test_off_is_nothing);
	tcase_add_test(tc, test_v1_tcp4);
	tcase_add_test(tc, test_v1_tcp6);
	tcase_add_test(tc, test_v1_longest_fits);
	tcase_add_test(tc, test_v1_mapped_is_tcp4);
	tcase_add_test(tc, test_v1_unix_and_local_unknown);
	tcase_add_test(tc, test_v2_tcp4);
	tcase_add_test(tc, test_v2_tcp6);
	tcase_add_test(tc, test_v2_unix_and_local);
	suite_add_tcase(s, tc);
	return s;
}
