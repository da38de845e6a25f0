/*
 * Unit tests of the config loader and its value parsers (SPEC.md section 3).
 * Table-driven: one row per input; a good row names the value it must give,
 * a bad row the exact "FILE:LINE: message" it must produce.
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "config.h"
#include "util.h"
#include "unit.h"

#ifndef CP_SRCDIR
#define CP_SRCDIR "."
#endif

/* A valid upstream on lines 1 to 3; rows add lines from line 4 on. */
#define BASE                                                                   \
	"[upstream:a]\n"                                                       \
	"listen = 127.0.0.1:8080\n"                                            \
	"server = 127.0.0.1:9090\n"
#define UP(x) BASE x

/* Return an address's port in host order, 0 for a unix socket. */
static unsigned
test_port(const struct addr *a)
{
	if (a->family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return 0;
}

/* Load a text that must be valid; fail the test with its errors if not. */
static struct config *
test_load_ok(const char *text)
{
	struct config_errors errs;
	struct config *cfg;

	cfg = config_load_string("t.ini", text, &errs);
	if (cfg == NULL) {
		ck_abort_msg("unexpected error: %s (%zu in all)",
		    errs.n > 0 ? errs.v[0].msg : "none", errs.n);
	}
	ck_assert_uint_eq(errs.n, 0);
	return cfg;
}

/* How a field of a loaded config is read. */
enum test_kind {
	TEST_U64,
	TEST_UINT,
	TEST_DOUBLE,
	TEST_BOOL,
	TEST_INT, /* an int or an int-sized enum */
	TEST_SIZE,
	TEST_PORT, /* a struct addr: its port, host name or not */
	TEST_TEXT, /* a char array */
	TEST_PTR,  /* a char *; NULL reads as "" */
};

/* clang-format off */
/*
 * The fields a row may name: of [global] (G), of an upstream (U), of its
 * breaker (B), of its listen address number n (L); named as the field.
 * A port is read from its whole address, which the row points at.
 */
#define G(f, k) { #f, 0, -1, offsetof(struct config, f), TEST_##k }
#define U(f, k) { #f, 1, -1, offsetof(struct upstream_conf, f), TEST_##k }
#define B(f, k)                                                                \
	{ #f, 1, -1, offsetof(struct upstream_conf, breaker.f), TEST_##k }
#define L(n, f, k)                                                             \
	{ "listen" #n "." #f, 1, n, offsetof(struct addr, f), TEST_##k }
static const struct test_field_row {
	const char *name;
	int upstream;
	int listen; /* -1, or the field is of that listen address */
	size_t off;
	enum test_kind kind;
} test_fields[] = {
	G(log_level, INT), G(log_target, INT), G(workers, UINT),
	G(workers_auto, BOOL), G(admin_enabled, BOOL),
	G(admin.family, INT), G(shutdown_timeout_ms, U64),
	G(log_rejects_per_second, UINT),
	G(admin.text, TEXT), G(admin_token, PTR), G(state_file, PTR),
	G(resolver, PTR),

	U(connect_timeout_ms, U64), U(idle_timeout_ms, U64),
	U(max_connections, UINT), U(failure_on_early_close, BOOL),
	U(slow_connect_ms, U64), U(reject, INT), U(splice, INT),
	U(nlisten, SIZE), U(server.name, INT),
	U(server_line, INT), U(resolve_interval_ms, U64),
	U(server.family, INT), U(backup_index, INT), U(line, INT),
	U(name, TEXT), U(backup, PTR), U(server.text, TEXT),
	U(server.host, TEXT),

	B(failure_threshold, UINT), B(failure_rate_threshold, DOUBLE),
	B(window_calls, UINT), B(window_ms, U64), B(minimum_calls, UINT),
	B(recovery_timeout_ms, U64), B(recovery_backoff, DOUBLE),
	B(recovery_timeout_max_ms, U64), B(recovery_jitter, DOUBLE),
	B(half_open_max_calls, UINT), B(success_threshold, UINT),
	B(recovery_probe, INT), B(dry_run, BOOL),

	L(0, family, INT), L(0, wildcard, INT), L(0, text, TEXT), L(1, text, TEXT),

	{ "admin.port", 0, -1, offsetof(struct config, admin), TEST_PORT },
	{ "server.port", 1, -1, offsetof(struct upstream_conf, server), TEST_PORT },
	{ "listen0.port", 1, 0, 0, TEST_PORT },
};
/* clang-format on */
#undef G
#undef U
#undef B
#undef L

/*
 * Find a field by its row name (up NULL: a [global] one) and where it is
 * in cfg; NULL where it cannot be (a listen address not there).
 */
static const char *
test_field_find(const struct config *cfg, const char *up, const char *f,
    const struct test_field_row **rowp)
{
	const struct upstream_conf *u = NULL;
	const struct test_field_row *row;
	size_t i;

	if (up != NULL) {
		u = config_find_upstream(cfg, up);
		ck_assert_msg(u != NULL, "no upstream %s", up);
	}
	for (i = 0; i < CP_ARRAY_LEN(test_fields); i++) {
		row = &test_fields[i];
		if (row->upstream != (up != NULL) || strcmp(row->name, f) != 0)
			continue;
		*rowp = row;
		if (u == NULL)
			return (const char *)cfg + row->off;
		if (row->listen < 0)
			return (const char *)u + row->off;
		if ((size_t)row->listen >= u->nlisten)
			return NULL;
		return (const char *)&u->listen[row->listen] + row->off;
	}
	ck_abort_msg("no field %s of %s", f,
	    up != NULL ? "an upstream" : "[global]");
	return NULL;
}

/* Read one value of a loaded config, by a test-side name for its field. */
static double
test_field(const struct config *cfg, const char *up, const char *f)
{
	const struct test_field_row *row;
	const char *p = test_field_find(cfg, up, f, &row);
	const struct addr *a = (const struct addr *)p;

	ck_assert_msg(p != NULL, "%s is not there", f);
	switch (row->kind) {
	case TEST_U64:
		return (double)*(const uint64_t *)p;
	case TEST_UINT:
		return *(const unsigned *)p;
	case TEST_DOUBLE:
		return *(const double *)p;
	case TEST_BOOL:
		return *(const bool *)p;
	case TEST_INT:
		return *(const int *)p;
	case TEST_SIZE:
		return (double)*(const size_t *)p;
	case TEST_PORT:
		return a->name ? a->port : test_port(a);
	default:
		ck_abort_msg("%s is a string", f);
	}
	return 0;
}

/* Read one string of a loaded config ("" for NULL or not there). */
static const char *
test_sfield(const struct config *cfg, const char *up, const char *f)
{
	const struct test_field_row *row;
	const char *p = test_field_find(cfg, up, f, &row);

	if (p == NULL)
		return "";
	if (row->kind == TEST_TEXT)
		return p;
	ck_assert_msg(row->kind == TEST_PTR, "%s is not a string", f);
	return *(const char *const *)p != NULL ? *(const char *const *)p : "";
}

/* Durations: text in, milliseconds or the exact cause out. */
static const struct {
	const char *in;
	uint64_t ms;
	const char *cause;
} duration_rows[] = {
	{ "0", 0, NULL },
	{ "250ms", 250, NULL },
	{ "1.5s", 1500, NULL },
	{ "5m", 300000, NULL },
	{ "1h", 3600000, NULL },
	{ "30", 30000, NULL },
	{ "0.25", 250, NULL },
	{ "2.5m", 150000, NULL },
	{ "0.001s", 1, NULL },
	{ "1.25h", 4500000, NULL },
	{ "007s", 7000, NULL },
	{ "0ms", 0, NULL },
	{ "5x", 0, "invalid duration '5x'" },
	{ "", 0, "invalid duration ''" },
	{ "-1s", 0, "invalid duration '-1s'" },
	{ "+1s", 0, "invalid duration '+1s'" },
	{ ".5s", 0, "invalid duration '.5s'" },
	{ "5.s", 0, "invalid duration '5.s'" },
	{ "5 s", 0, "invalid duration '5 s'" },
	{ "1m30s", 0, "invalid duration '1m30s'" },
	{ "5S", 0, "invalid duration '5S'" },
	{ "ms", 0, "invalid duration 'ms'" },
	{ "1d", 0, "invalid duration '1d'" },
	{ "1.5ms", 0, "invalid duration '1.5ms': finer than 1ms" },
	{ "0.0001s", 0, "invalid duration '0.0001s': finer than 1ms" },
	{ "1.0000000001s", 0, "invalid duration '1.0000000001s'" },
	{ "99999999999999999999", 0,
	    "duration '99999999999999999999' is too long" },
	{ "18446744073709551h", 0,
	    "duration '18446744073709551h' is too long" },
};

/* Check one duration row. */
START_TEST(test_duration)
{
	uint64_t ms = 12345;
	char *cause = NULL;
	int r;

	r = parse_duration(duration_rows[_i].in, &ms, &cause);
	if (duration_rows[_i].cause == NULL) {
		ck_assert_msg(r == 0, "%s: %s", duration_rows[_i].in, cause);
		ck_assert_uint_eq(ms, duration_rows[_i].ms);
		ck_assert_ptr_null(cause);
	} else {
		ck_assert_int_eq(r, -1);
		ck_assert_str_eq(cause, duration_rows[_i].cause);
	}
	free(cause);
}
END_TEST

/* format_duration: the largest exact unit. */
static const struct {
	uint64_t ms;
	const char *out;
} format_duration_rows[] = {
	{ 0, "0" },
	{ 1, "1ms" },
	{ 250, "250ms" },
	{ 1500, "1500ms" },
	{ 30000, "30s" },
	{ 90000, "90s" },
	{ 600000, "10m" },
	{ 3600000, "1h" },
	{ 5400000, "90m" },
};

/* Check one format_duration row. */
START_TEST(test_format_duration)
{
	char buf[32];

	ck_assert_str_eq(format_duration(format_duration_rows[_i].ms, buf,
			     sizeof(buf)),
	    format_duration_rows[_i].out);
}
END_TEST

/* Percentages. */
static const struct {
	const char *in;
	double v;
	const char *cause;
} percent_rows[] = {
	{ "50", 50, NULL },
	{ "12.5", 12.5, NULL },
	{ "50%", 50, NULL },
	{ "0", 0, NULL },
	{ "0%", 0, NULL },
	{ "100", 100, NULL },
	{ "100%", 100, NULL },
	{ "0.01", 0.01, NULL },
	{ "150", 0, "'150' out of range (0..100)" },
	{ "100.5%", 0, "'100.5%' out of range (0..100)" },
	{ "-5", 0, "invalid percentage '-5'" },
	{ "5.%", 0, "invalid percentage '5.%'" },
	{ "abc", 0, "invalid percentage 'abc'" },
	{ "50 %", 0, "invalid percentage '50 %'" },
	{ "%", 0, "invalid percentage '%'" },
	{ "", 0, "invalid percentage ''" },
	{ "1e2", 0, "invalid percentage '1e2'" },
	{ "50%%", 0, "invalid percentage '50%%'" },
};

/* Check one percentage row. */
START_TEST(test_percent)
{
	char *cause = NULL;
	double v = -1;
	int r;

	r = parse_percent(percent_rows[_i].in, &v, &cause);
	if (percent_rows[_i].cause == NULL) {
		ck_assert_msg(r == 0, "%s: %s", percent_rows[_i].in, cause);
		ck_assert_double_eq_tol(v, percent_rows[_i].v, 1e-9);
	} else {
		ck_assert_int_eq(r, -1);
		ck_assert_str_eq(cause, percent_rows[_i].cause);
	}
	free(cause);
}
END_TEST

/* Booleans. */
static const struct {
	const char *in;
	int v; /* -1: invalid */
} bool_rows[] = {
	{ "yes", 1 },
	{ "no", 0 },
	{ "true", 1 },
	{ "false", 0 },
	{ "on", 1 },
	{ "off", 0 },
	{ "1", 1 },
	{ "0", 0 },
	{ "YES", 1 },
	{ "Off", 0 },
	{ "maybe", -1 },
	{ "", -1 },
	{ "2", -1 },
	{ "y", -1 },
};

/* Check one boolean row. */
START_TEST(test_bool)
{
	char *cause = NULL, *want;
	int v = -1, r;

	r = parse_bool(bool_rows[_i].in, &v, &cause);
	if (bool_rows[_i].v >= 0) {
		ck_assert_int_eq(r, 0);
		ck_assert_int_eq(v, bool_rows[_i].v);
	} else {
		ck_assert_int_eq(r, -1);
		xasprintf(&want,
		    "invalid boolean '%s' (expected yes/no, "
		    "true/false, on/off or 1/0)",
		    bool_rows[_i].in);
		ck_assert_str_eq(cause, want);
		free(want);
	}
	free(cause);
}
END_TEST

/* Good addresses: family, port, wildcard and how they format back. */
static const struct {
	const char *in;
	int flags;
	int family;
	unsigned port;
	int wildcard;
	const char *formatted;
} addr_good_rows[] = {
	{ "127.0.0.1:8080", 0, AF_INET, 8080, 0, "127.0.0.1:8080" },
	{ "10.1.2.3:1", 0, AF_INET, 1, 0, "10.1.2.3:1" },
	{ "0.0.0.0:65535", 0, AF_INET, 65535, 0, "0.0.0.0:65535" },
	{ "[::1]:5", 0, AF_INET6, 5, 0, "[::1]:5" },
	{ "[::]:443", 0, AF_INET6, 443, 0, "[::]:443" },
	{ "[2001:db8::10]:80", 0, AF_INET6, 80, 0, "[2001:db8::10]:80" },
	{ "*:8080", ADDR_ALLOW_WILDCARD, AF_INET, 8080, 1, "0.0.0.0:8080" },
	{ "unix:/tmp/cp.sock", 0, AF_UNIX, 0, 0, "unix:/tmp/cp.sock" },
	{ "unix:/run/circuitproxy/admin.sock", ADDR_ALLOW_WILDCARD, AF_UNIX, 0,
	    0, "unix:/run/circuitproxy/admin.sock" },
};

/* Parse one good address and format it back. */
START_TEST(test_addr_good)
{
	char *cause = NULL, buf[ADDR_TEXT_MAX + 8];
	struct addr a;

	ck_assert_int_eq(addr_parse(addr_good_rows[_i].in,
			     addr_good_rows[_i].flags, &a, &cause),
	    0);
	ck_assert_ptr_null(cause);
	ck_assert_str_eq(a.text, addr_good_rows[_i].in);
	ck_assert_int_eq(a.family, addr_good_rows[_i].family);
	ck_assert_uint_eq(test_port(&a), addr_good_rows[_i].port);
	ck_assert_int_eq(a.wildcard, addr_good_rows[_i].wildcard);
	ck_assert_int_eq(a.ss.ss_family, a.family);
	ck_assert_str_eq(addr_format((struct sockaddr *)&a.ss, a.len, buf,
			     sizeof(buf)),
	    addr_good_rows[_i].formatted);
}
END_TEST

#define LONG40 "0123456789012345678901234567890123456789"

/* Bad addresses, with the exact cause. */
static const struct {
	const char *in;
	int flags;
	const char *cause;
} addr_bad_rows[] = {
	{ "127.0.0.1", 0,
	    "invalid address '127.0.0.1' (expected HOST:PORT, [IPv6]:PORT "
	    "or unix:/path)" },
	{ "127.0.0.1", ADDR_ALLOW_WILDCARD,
	    "invalid address '127.0.0.1' (expected *:PORT, HOST:PORT, "
	    "[IPv6]:PORT or unix:/path)" },
	{ "", 0,
	    "invalid address '' (expected HOST:PORT, [IPv6]:PORT or "
	    "unix:/path)" },
	{ ":80", 0,
	    "invalid address ':80' (expected HOST:PORT, [IPv6]:PORT or "
	    "unix:/path)" },
	{ "127.0.0.1:0", 0,
	    "invalid port in '127.0.0.1:0' (expected 1..65535)" },
	{ "127.0.0.1:65536", 0,
	    "invalid port in '127.0.0.1:65536' (expected 1..65535)" },
	{ "127.0.0.1:http", 0,
	    "invalid port in '127.0.0.1:http' (expected 1..65535)" },
	{ "127.0.0.1:", 0, "invalid port in '127.0.0.1:' (expected 1..65535)" },
	{ "127.0.0.1:-1", 0,
	    "invalid port in '127.0.0.1:-1' (expected 1..65535)" },
	{ "127.0.0.1:080800", 0,
	    "invalid port in '127.0.0.1:080800' (expected 1..65535)" },
	{ "*:80", 0, "invalid address '*:80': '*' is only allowed in listen" },
	{ "::1:80", 0,
	    "invalid address '::1:80': write an IPv6 address in brackets, as "
	    "[::1]:PORT" },
	{ "[::1]", 0, "invalid address '[::1]' (expected [IPv6]:PORT)" },
	{ "[::1]80", 0, "invalid address '[::1]80' (expected [IPv6]:PORT)" },
	{ "[::1:80", 0, "invalid address '[::1:80' (expected [IPv6]:PORT)" },
	{ "[1.2.3.4]:80", 0, "invalid IPv6 address in '[1.2.3.4]:80'" },
	{ "[]:80", 0, "invalid address '[]:80': empty host" },
	{ "256.1.1.1:80", 0, "invalid IPv4 address in '256.1.1.1:80'" },
	{ "1.2.3:80", 0, "invalid IPv4 address in '1.2.3:80'" },
	{ "unix:", 0, "invalid address 'unix:': empty socket path" },
	{ "unix:run/x.sock", 0,
	    "invalid address 'unix:run/x.sock': socket path must be absolute" },
	{ "unix:/" LONG40 LONG40 LONG40, 0,
	    "invalid address 'unix:/" LONG40 LONG40 LONG40
	    "': socket path longer than 107 bytes" },
	{ LONG40 LONG40 LONG40 LONG40 ":1", 0,
	    "address longer than 127 characters" },
};

/* Refuse one bad address with its exact cause. */
START_TEST(test_addr_bad)
{
	char *cause = NULL;
	struct addr a;

	ck_assert_int_eq(addr_parse(addr_bad_rows[_i].in,
			     addr_bad_rows[_i].flags, &a, &cause),
	    -1);
	ck_assert_ptr_nonnull(cause);
	ck_assert_str_eq(cause, addr_bad_rows[_i].cause);
	free(cause);
}
END_TEST

/* A host name is resolved at load; a name that does not exist is an error. */
START_TEST(test_addr_resolve)
{
	char *cause = NULL;
	struct addr a;

	ck_assert_int_eq(addr_parse("localhost:80", 0, &a, &cause), 0);
	ck_assert(a.family == AF_INET || a.family == AF_INET6);
	ck_assert_uint_eq(test_port(&a), 80);
	ck_assert_int_eq(addr_is_local(&a), 1);
	ck_assert_str_eq(a.text, "localhost:80");

	ck_assert_int_eq(addr_parse("nosuch.invalid:80", 0, &a, &cause), -1);
	ck_assert_msg(strncmp(cause, "cannot resolve 'nosuch.invalid': ", 33) ==
		    0 &&
		strlen(cause) > 33,
	    "cause: %s", cause);
	free(cause);
}
END_TEST

/* Listen addresses that collide, and those that do not. */
static const struct {
	const char *a, *b;
	int overlap;
} overlap_rows[] = {
	{ "*:80", "127.0.0.1:80", 1 },
	{ "127.0.0.1:80", "*:80", 1 },
	{ "*:80", "[::1]:80", 0 },
	{ "*:80", "[::]:80", 0 },
	{ "[::]:80", "127.0.0.1:80", 0 },
	{ "[::]:80", "[::]:80", 1 },
	{ "*:80", "0.0.0.0:80", 1 },
	{ "*:80", "*:80", 1 },
	{ "*:80", "*:81", 0 },
	{ "*:80", "127.0.0.1:81", 0 },
	{ "127.0.0.1:80", "127.0.0.1:80", 1 },
	{ "127.0.0.1:80", "127.0.0.2:80", 0 },
	{ "127.0.0.1:80", "127.0.0.1:81", 0 },
	{ "0.0.0.0:80", "10.0.0.1:80", 1 },
	{ "[::]:80", "[::1]:80", 1 },
	{ "[::1]:80", "[::1]:80", 1 },
	{ "[::1]:80", "[::2]:80", 0 },
	{ "[::1]:80", "127.0.0.1:80", 0 },
	{ "unix:/run/a", "unix:/run/a", 1 },
	{ "unix:/run/a", "unix:/run/b", 0 },
	{ "unix:/run/a", "127.0.0.1:80", 0 },
	{ "*:80", "unix:/run/a", 0 },
};

/* Check one pair of listen addresses. */
START_TEST(test_overlap)
{
	struct addr a, b;
	char *cause;

	ck_assert_int_eq(addr_parse(overlap_rows[_i].a, ADDR_ALLOW_WILDCARD, &a,
			     &cause),
	    0);
	ck_assert_int_eq(addr_parse(overlap_rows[_i].b, ADDR_ALLOW_WILDCARD, &b,
			     &cause),
	    0);
	ck_assert_int_eq(addr_overlap(&a, &b), overlap_rows[_i].overlap);
}
END_TEST

/* Loopback and unix addresses are local; the rest are not. */
static const struct {
	const char *in;
	int local;
} local_rows[] = {
	{ "127.0.0.1:1", 1 },
	{ "127.9.9.9:1", 1 },
	{ "[::1]:1", 1 },
	{ "[::ffff:127.0.0.1]:1", 1 },
	{ "unix:/run/x.sock", 1 },
	{ "10.0.0.1:1", 0 },
	{ "0.0.0.0:1", 0 },
	{ "*:1", 0 },
	{ "[::]:1", 0 },
	{ "[::ffff:10.0.0.1]:1", 0 },
};

/* Check whether one address counts as loopback. */
START_TEST(test_local)
{
	char *cause;
	struct addr a;

	ck_assert_int_eq(addr_parse(local_rows[_i].in, ADDR_ALLOW_WILDCARD, &a,
			     &cause),
	    0);
	ck_assert_int_eq(addr_is_local(&a), local_rows[_i].local);
}
END_TEST

/* addr_format on peers that did not come from addr_parse. */
START_TEST(test_addr_format)
{
	struct sockaddr_in sin;
	struct sockaddr_un sun;
	struct sockaddr_storage ss;
	char buf[128];

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(51234);
	sin.sin_addr.s_addr = htonl(0x7f000001);
	ck_assert_str_eq(addr_format((struct sockaddr *)&sin, sizeof(sin), buf,
			     sizeof(buf)),
	    "127.0.0.1:51234");

	/* An unnamed unix peer: accept() gives just the family. */
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert_str_eq(addr_format((struct sockaddr *)&sun,
			     sizeof(sa_family_t), buf, sizeof(buf)),
	    "unix");
	memcpy(sun.sun_path, "/run/x", 7);
	ck_assert_str_eq(addr_format((struct sockaddr *)&sun,
			     (socklen_t)(offsetof(struct sockaddr_un,
					     sun_path) +
				 7),
			     buf, sizeof(buf)),
	    "unix:/run/x");

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_APPLETALK;
	ck_assert_str_eq(addr_format((struct sockaddr *)&ss, sizeof(ss), buf,
			     sizeof(buf)),
	    "unknown");
	ck_assert_str_eq(addr_format(NULL, 0, buf, sizeof(buf)), "unknown");

	/* A short buffer truncates, never overflows. */
	ck_assert_str_eq(addr_format((struct sockaddr *)&sin, sizeof(sin), buf,
			     6),
	    "127.0");
}
END_TEST

/* Good configs: one value each, read straight from the struct. */
static const struct {
	const char *ini;
	const char *up; /* NULL: a [global] field */
	const char *field;
	double num;
	const char *str; /* non-NULL: compare a string */
} good_rows[] = {
	/* Host names: kept for the resolver, never a load error. */
	{ "[upstream:a]\nlisten = 127.0.0.1:8080\nserver = "
	  "api.internal:9090\n",
	    "a", "server.name", 1, NULL },
	{ "[upstream:a]\nlisten = 127.0.0.1:8080\nserver = "
	  "nosuch.invalid:9090\n",
	    "a", "server.host", 0, "nosuch.invalid" },
	{ "[upstream:a]\nlisten = 127.0.0.1:8080\n\nserver = "
	  "api.internal:9090\n",
	    "a", "server_line", 4, NULL },
	{ BASE, "a", "server.name", 0, NULL },
	{ BASE, "a", "resolve_interval_ms", 30000, NULL },
	{ UP("resolve_interval = 0\n"), "a", "resolve_interval_ms", 0, NULL },
	{ UP("resolve_interval = 5m\n"), "a", "resolve_interval_ms", 300000,
	    NULL },
	{ "[defaults]\nresolve_interval = 10s\n" BASE, "a",
	    "resolve_interval_ms", 10000, NULL },
	{ "[global]\nresolver = 127.0.0.1:5353\n", NULL, "resolver", 0,
	    "127.0.0.1:5353" },
	{ "[global]\nresolver = 10.0.0.1 [::1]:5353 ::2\n", NULL, "resolver", 0,
	    "10.0.0.1:53 [::1]:5353 [::2]:53" },
	{ "[global]\nresolver = 10.0.0.1\nresolver = 10.0.0.2:54\n", NULL,
	    "resolver", 0, "10.0.0.1:53 10.0.0.2:54" },
	{ "[global]\nresolver =\n", NULL, "resolver", 0, "" },
	/* Upstream keys and their units. */
	{ UP("connect_timeout = 250ms\n"), "a", "connect_timeout_ms", 250,
	    NULL },
	{ UP("connect_timeout = 1.5s\n"), "a", "connect_timeout_ms", 1500,
	    NULL },
	{ UP("connect_timeout = 2\n"), "a", "connect_timeout_ms", 2000, NULL },
	{ UP("idle_timeout = 5m\n"), "a", "idle_timeout_ms", 300000, NULL },
	{ UP("idle_timeout = 0\n"), "a", "idle_timeout_ms", 0, NULL },
	{ UP("slow_connect = 1h\n"), "a", "slow_connect_ms", 3600000, NULL },
	{ UP("max_connections = 100\n"), "a", "max_connections", 100, NULL },
	{ UP("max_connections = 1000000\n"), "a", "max_connections", 1000000,
	    NULL },
	{ UP("failure_threshold = 0\nfailure_rate_threshold = 50\n"), "a",
	    "failure_threshold", 0, NULL },
	{ UP("failure_threshold = 1\n"), "a", "failure_threshold", 1, NULL },
	{ UP("failure_rate_threshold = 12.5\n"), "a", "failure_rate_threshold",
	    12.5, NULL },
	{ UP("failure_rate_threshold = 50%\n"), "a", "failure_rate_threshold",
	    50, NULL },
	{ UP("window = 100\n"), "a", "window_calls", 100, NULL },
	{ UP("window = 100\n"), "a", "window_ms", 0, NULL },
	{ UP("window = 60s\n"), "a", "window_ms", 60000, NULL },
	{ UP("window = 60s\n"), "a", "window_calls", 0, NULL },
	{ UP("window = 1.5m\n"), "a", "window_ms", 90000, NULL },
	{ UP("window = 1h\n"), "a", "window_ms", 3600000, NULL },
	{ UP("minimum_calls = 0\n"), "a", "minimum_calls", 0, NULL },
	{ UP("failure_rate_threshold = 50\nwindow = 10\n"), "a",
	    "minimum_calls", 10, NULL },
	{ UP("failure_rate_threshold = 50\nwindow = 30s\nminimum_calls = "
	     "500\n"),
	    "a", "minimum_calls", 500, NULL },
	{ UP("recovery_timeout = 1s\n"), "a", "recovery_timeout_ms", 1000,
	    NULL },
	{ UP("recovery_timeout = 10m\n"), "a", "recovery_timeout_ms", 600000,
	    NULL },
	{ UP("recovery_backoff = 1.5\n"), "a", "recovery_backoff", 1.5, NULL },
	{ UP("recovery_backoff = 2\n"), "a", "recovery_backoff", 2, NULL },
	{ UP("recovery_timeout_max = 1h\n"), "a", "recovery_timeout_max_ms",
	    3600000, NULL },
	{ UP("recovery_timeout = 30s\nrecovery_timeout_max = 30s\n"), "a",
	    "recovery_timeout_max_ms", 30000, NULL },
	{ UP("recovery_jitter = 10%\n"), "a", "recovery_jitter", 10, NULL },
	{ UP("recovery_jitter = 0.5\n"), "a", "recovery_jitter", 0.5, NULL },
	{ UP("half_open_max_calls = 10\n"), "a", "half_open_max_calls", 10,
	    NULL },
	{ UP("success_threshold = 3\n"), "a", "success_threshold", 3, NULL },
	{ UP("half_open_max_calls = 1\nsuccess_threshold = 1\n"), "a",
	    "success_threshold", 1, NULL },
	{ UP("failure_on_early_close = yes\n"), "a", "failure_on_early_close",
	    1, NULL },
	{ UP("failure_on_early_close = on\n"), "a", "failure_on_early_close", 1,
	    NULL },
	{ UP("failure_on_early_close = false\n"), "a", "failure_on_early_close",
	    0, NULL },
	{ UP("dry_run = true\n"), "a", "dry_run", 1, NULL },
	{ UP("dry_run = 0\n"), "a", "dry_run", 0, NULL },
	{ UP("reject = http503\n"), "a", "reject", REJECT_HTTP503, NULL },
	{ UP("reject = reset\n"), "a", "reject", REJECT_RESET, NULL },
	{ UP("reject = redis\n"), "a", "reject", REJECT_REDIS, NULL },
	{ UP("reject = postgres\n"), "a", "reject", REJECT_POSTGRES, NULL },
	{ UP("reject = mysql\n"), "a", "reject", REJECT_MYSQL, NULL },
	{ BASE, "a", "recovery_probe", BREAKER_PROBE_OFF, NULL },
	{ UP("recovery_probe = connect\n"), "a", "recovery_probe",
	    BREAKER_PROBE_CONNECT, NULL },
	{ UP("recovery_probe = off\n"), "a", "recovery_probe",
	    BREAKER_PROBE_OFF, NULL },
	{ BASE, "a", "splice", SPLICE_AUTO, NULL },
	{ UP("splice = off\n"), "a", "splice", SPLICE_OFF, NULL },
	{ UP("splice = auto\n"), "a", "splice", SPLICE_AUTO, NULL },

	/* Addresses. */
	{ BASE, "a", "listen0.text", 0, "127.0.0.1:8080" },
	{ BASE, "a", "listen0.port", 8080, NULL },
	{ BASE, "a", "listen0.family", AF_INET, NULL },
	{ BASE, "a", "server.text", 0, "127.0.0.1:9090" },
	{ BASE, "a", "server.port", 9090, NULL },
	{ UP("listen = [::1]:8081\n"), "a", "nlisten", 2, NULL },
	{ UP("listen = [::1]:8081\n"), "a", "listen1.text", 0, "[::1]:8081" },
	{ "[upstream:a]\nlisten = *:7000\nserver = [::1]:9090\n", "a",
	    "listen0.wildcard", 1, NULL },
	{ "[upstream:a]\nlisten = *:7000\nserver = [::1]:9090\n", "a",
	    "server.family", AF_INET6, NULL },
	{ "[upstream:a]\nlisten = unix:/run/a.sock\nserver = "
	  "unix:/run/b.sock\n",
	    "a", "server.family", AF_UNIX, NULL },
	{ "[upstream:a]\nlisten = unix:/run/a.sock\nlisten = *:80\nserver "
	  "= localhost:9090\n",
	    "a", "server.port", 9090, NULL },

	/* Syntax: comments, spaces, line endings. */
	{ UP("connect_timeout = 7s ; the inline comment\n"), "a",
	    "connect_timeout_ms", 7000, NULL },
	{ UP("connect_timeout=   8s   \n"), "a", "connect_timeout_ms", 8000,
	    NULL },
	{ UP("  connect_timeout = 9s\n"), "a", "connect_timeout_ms", 9000,
	    NULL },
	{ UP("; connect_timeout = 1s\n# connect_timeout = 2s\n  ; x\n"), "a",
	    "connect_timeout_ms", 5000, NULL },
	{ "[upstream:a]\r\nlisten = 127.0.0.1:8080\r\nserver = "
	  "127.0.0.1:9090\r\nconnect_timeout = 3s\r\n",
	    "a", "connect_timeout_ms", 3000, NULL },
	{ "\xEF\xBB\xBF" BASE, "a", "server.port", 9090, NULL },
	{ "[ upstream:a ]   ; a comment\nlisten = 127.0.0.1:8080\nserver = "
	  "127.0.0.1:9090\n",
	    "a", "line", 1, NULL },
	{ "\n\n" BASE, "a", "line", 3, NULL },
	{ "[upstream:" LONG40 "012345678901234567890123]\nlisten = "
	  "127.0.0.1:1\nserver = 127.0.0.1:2\n",
	    LONG40 "012345678901234567890123", "name", 0,
	    LONG40 "012345678901234567890123" },
	{ "[upstream:A-z_0.9]\nlisten = 127.0.0.1:1\nserver = 127.0.0.1:2\n",
	    "A-z_0.9", "server.port", 2, NULL },

	/* [defaults], before or after the upstreams, and overrides. */
	{ "[defaults]\nconnect_timeout = 3s\n" BASE, "a", "connect_timeout_ms",
	    3000, NULL },
	{ BASE "[defaults]\nconnect_timeout = 3s\n", "a", "connect_timeout_ms",
	    3000, NULL },
	{ "[defaults]\nconnect_timeout = 3s\n" UP("connect_timeout = 4s\n"),
	    "a", "connect_timeout_ms", 4000, NULL },
	{ UP("connect_timeout = 4s\n") "[defaults]\nconnect_timeout = 3s\n",
	    "a", "connect_timeout_ms", 4000, NULL },
	{ BASE "[defaults]\nwindow = 2m\n", "a", "window_ms", 120000, NULL },
	{ "[defaults]\nwindow = 2m\n" UP("window = 50\n"), "a", "window_ms", 0,
	    NULL },
	{ "[defaults]\nwindow = 2m\n" UP("window = 50\n"), "a", "window_calls",
	    50, NULL },
	{ BASE "[defaults]\nreject = http503\n[upstream:b]\nlisten = "
	       "127.0.0.1:8081\nserver = 127.0.0.1:9090\n",
	    "b", "reject", REJECT_HTTP503, NULL },
	{ BASE "[defaults]\nreject = http503\n[upstream:b]\nlisten = "
	       "127.0.0.1:8081\nserver = 127.0.0.1:9090\n",
	    "a", "reject", REJECT_HTTP503, NULL },
	{ "[defaults]\nfailure_threshold = 0\nfailure_rate_threshold = 25\n"
	  "[defaults]\ndry_run = yes\n" BASE,
	    "a", "dry_run", 1, NULL },
	{ "[defaults]\nfailure_threshold = 0\nfailure_rate_threshold = 25\n"
	  "[defaults]\ndry_run = yes\n" BASE,
	    "a", "failure_rate_threshold", 25, NULL },
	{ "[defaults]\nsuccess_threshold = 5\n" UP("half_open_max_calls = 5\n"),
	    "a", "success_threshold", 5, NULL },

	/* Backups. */
	{ UP("backup = b\n") "[upstream:b]\nserver = 127.0.0.1:9091\n", "a",
	    "backup_index", 1, NULL },
	{ UP("backup = b\n") "[upstream:b]\nserver = 127.0.0.1:9091\n", "a",
	    "backup", 0, "b" },
	{ UP("backup = b\n") "[upstream:b]\nserver = 127.0.0.1:9091\n", "b",
	    "backup_index", -1, NULL },
	{ UP("backup = b\n") "[upstream:b]\nserver = 127.0.0.1:9091\n", "b",
	    "nlisten", 0, NULL },
	{ "[upstream:c]\nserver = 127.0.0.1:3\n" UP(
	      "backup = b\n") "[upstream:b]\nserver = 127.0.0.1:2\nbackup = "
			      "c\n",
	    "b", "backup_index", 0, NULL },
	{ "[upstream:c]\nserver = 127.0.0.1:3\n" UP(
	      "backup = b\n") "[upstream:b]\nserver = 127.0.0.1:2\nbackup = "
			      "c\n",
	    "a", "backup_index", 2, NULL },
	{ UP("backup =\n"), "a", "backup_index", -1, NULL },
	{ UP("backup =\n"), "a", "backup", 0, "" },

	/* [global]. */
	{ "[global]\nlog_level = debug\n", NULL, "log_level", LOG_LEVEL_DEBUG,
	    NULL },
	{ "[global]\nlog_level = warning\n", NULL, "log_level",
	    LOG_LEVEL_WARNING, NULL },
	{ "[global]\nlog_level = error\n", NULL, "log_level", LOG_LEVEL_ERROR,
	    NULL },
	{ "[global]\nlog_target = syslog\n", NULL, "log_target",
	    LOG_TARGET_SYSLOG, NULL },
	{ "[global]\nworkers = 4\n", NULL, "workers", 4, NULL },
	{ "[global]\nworkers = 256\n", NULL, "workers", 256, NULL },
	{ "[global]\nworkers = 4\n", NULL, "workers_auto", 0, NULL },
	{ "[global]\nworkers = auto\n", NULL, "workers_auto", 1, NULL },
	{ "[global]\nshutdown_timeout = 0\n", NULL, "shutdown_timeout_ms", 0,
	    NULL },
	{ "[global]\nshutdown_timeout = 45s\n", NULL, "shutdown_timeout_ms",
	    45000, NULL },
	{ "[global]\nlog_rejects_per_second = 0\n", NULL,
	    "log_rejects_per_second", 0, NULL },
	{ "[global]\nadmin = 127.0.0.1:9901\n", NULL, "admin_enabled", 1,
	    NULL },
	{ "[global]\nadmin = 127.0.0.1:9901\n", NULL, "admin.port", 9901,
	    NULL },
	{ "[global]\nadmin = 127.0.0.1:9901\n", NULL, "admin.text", 0,
	    "127.0.0.1:9901" },
	{ "[global]\nadmin = [::1]:9901\n", NULL, "admin.family", AF_INET6,
	    NULL },
	{ "[global]\nadmin =\n", NULL, "admin_enabled", 0, NULL },
	{ "[global]\nadmin = unix:/run/cp/admin.sock\n", NULL, "admin.family",
	    AF_UNIX, NULL },
	{ "[global]\nadmin = 10.0.0.1:9901\nadmin_token = s3cret\n", NULL,
	    "admin_enabled", 1, NULL },
	{ "[global]\nadmin = 10.0.0.1:9901\nadmin_token = s3cret\n", NULL,
	    "admin_token", 0, "s3cret" },
	{ "[global]\nadmin_token =\n", NULL, "admin_token", 0, "" },
	{ "[global]\nstate_file = /var/lib/circuitproxy/state\n", NULL,
	    "state_file", 0, "/var/lib/circuitproxy/state" },
	{ "[global]\nworkers = 2\n[global]\nlog_level = notice\n", NULL,
	    "log_level", LOG_LEVEL_NOTICE, NULL },
	{ BASE "[global]\nworkers = 3\n", NULL, "workers", 3, NULL },
};

/*
 * A row's text as a whole file: a row about [global] alone gets an upstream
 * after it (a file with no upstream is an error of its own, see
 * test_no_upstream); line numbers stay as written.
 */
static char *
test_with_upstream(const char *ini)
{
	char *text;

	if (strstr(ini, "upstream:") != NULL)
		xasprintf(&text, "%s", ini);
	else
		xasprintf(&text, "%s\n" BASE, ini);
	return text;
}

/* Load one good config and check its value. */
START_TEST(test_good)
{
	char *text = test_with_upstream(good_rows[_i].ini);
	struct config *cfg = test_load_ok(text);

	if (good_rows[_i].str != NULL)
		ck_assert_str_eq(test_sfield(cfg, good_rows[_i].up,
				     good_rows[_i].field),
		    good_rows[_i].str);
	else
		ck_assert_double_eq_tol(test_field(cfg, good_rows[_i].up,
					    good_rows[_i].field),
		    good_rows[_i].num, 1e-9);
	config_free(cfg);
	free(text);
}
END_TEST

#define LONGNAME LONG40 "0123456789012345678901234" /* 65 characters */

/* Bad configs: exactly one error, with its line and exact text. */
static const struct {
	const char *ini;
	int line;
	const char *msg; /* without "t.ini:LINE: " */
} bad_rows[] = {
	/* Host names: the resolver and the interval. */
	{ "[global]\nresolver = dns.example\n" BASE, 2,
	    "resolver: invalid address 'dns.example:53' (expected an IP "
	    "address, not a host name)" },
	{ "[global]\nresolver = 127.0.0.1:0\n" BASE, 2,
	    "resolver: invalid port in '127.0.0.1:0' (expected 1..65535)" },
	{ "[global]\nresolver = 10.0.0.1 300.0.0.1\n" BASE, 2,
	    "resolver: invalid IPv4 address in '300.0.0.1:53'" },
	{ "[global]\nresolver = unix:/run/dns\n" BASE, 2,
	    "resolver: invalid address 'unix:/run/dns' (expected IP[:PORT] "
	    "or [IPv6][:PORT])" },
	{ UP("resolve_interval = 500ms\n"), 4,
	    "resolve_interval: '500ms' is too short (0, or at least 1s)" },
	{ UP("resolve_interval = soon\n"), 4,
	    "resolve_interval: invalid duration 'soon'" },
	{ "[defaults]\nresolve_interval = 1ms\n" BASE
	  "[upstream:b]\nlisten = 127.0.0.1:8081\nserver = 127.0.0.1:9091\n",
	    2, "resolve_interval: '1ms' is too short (0, or at least 1s)" },
	{ "[upstream:a]\nlisten = 127.0.0.1:8080\nserver = bad..name:90\n", 3,
	    "server: invalid host name in 'bad..name:90'" },
	{ "[upstream:a]\nlisten = 127.0.0.1:8080\nserver = a!b:90\n", 3,
	    "server: invalid host name in 'a!b:90'" },
	/* Syntax and sections. */
	{ "garbage\n", 1, "expected 'key = value' or '[section]': 'garbage'" },
	{ "[global]\nworkers: 2\n", 2,
	    "expected 'key = value' or '[section]': 'workers: 2'" },
	{ "[global]\nworkers ; = 2\n", 2,
	    "expected 'key = value' or '[section]': 'workers ; = 2'" },
	{ "[global]\n= 5\n", 2, "missing key before '=': '= 5'" },
	{ "[global\nworkers = 2\n", 1,
	    "unterminated section header '[global'" },
	{ "[global] junk\n", 1,
	    "unexpected text after section header: 'junk'" },
	{ "workers = 2\n[global]\n", 1,
	    "key 'workers' is outside of any section" },
	{ "[foo]\nx = 1\ny = 2\n", 1,
	    "unknown section '[foo]' (expected [global], [defaults], "
	    "[upstream:NAME] or [pool:NAME])" },
	{ "[Global]\n", 1,
	    "unknown section '[Global]' (expected [global], [defaults], "
	    "[upstream:NAME] or [pool:NAME])" },
	{ "[upstream:]\n", 1,
	    "invalid upstream name '' (1 to 64 letters, digits, '_', '.' or "
	    "'-')" },
	{ "[upstream:a b]\nserver = 127.0.0.1:1\n", 1,
	    "invalid upstream name 'a b' (1 to 64 letters, digits, '_', '.' "
	    "or '-')" },
	{ "[upstream:a/b]\n", 1,
	    "invalid upstream name 'a/b' (1 to 64 letters, digits, '_', '.' "
	    "or '-')" },
	{ "[upstream:" LONGNAME "]\n", 1,
	    "invalid upstream name '" LONGNAME "' (1 to 64 letters, digits, "
	    "'_', '.' or '-')" },
	{ BASE "[upstream:a]\nlisten = 127.0.0.1:8081\nserver = "
	       "127.0.0.1:9090\n",
	    4, "duplicate upstream 'a' (first defined on line 1)" },

	/* Keys. */
	{ "[global]\ntimeout = 5\n", 2, "unknown key 'timeout' in [global]" },
	{ UP("timeout = 5\n"), 4, "unknown key 'timeout' in [upstream:a]" },
	{ UP("Connect_timeout = 5s\n"), 4,
	    "unknown key 'Connect_timeout' in [upstream:a]" },
	{ UP("connect timeout = 5s\n"), 4,
	    "unknown key 'connect timeout' in [upstream:a]" },
	{ UP("workers = 2\n"), 4,
	    "unknown key 'workers' in [upstream:a] (it belongs in [global])" },
	{ "[global]\nconnect_timeout = 5s\n", 2,
	    "unknown key 'connect_timeout' in [global] (it belongs in "
	    "[defaults] or [upstream:NAME])" },
	{ "[defaults]\nadmin = 127.0.0.1:1\n", 2,
	    "unknown key 'admin' in [defaults] (it belongs in [global])" },
	{ "[defaults]\nlisten = 127.0.0.1:1\n" BASE, 2,
	    "listen '127.0.0.1:1' is not allowed in [defaults] (set it in "
	    "each [upstream:NAME])" },
	{ "[defaults]\nserver = 127.0.0.1:1\n" BASE, 2,
	    "server '127.0.0.1:1' is not allowed in [defaults] (set it in "
	    "each [upstream:NAME])" },
	{ BASE "[defaults]\nbackup = a\n", 5,
	    "backup 'a' is not allowed in [defaults] (set it in each "
	    "[upstream:NAME])" },
	{ UP("connect_timeout = 1s\nconnect_timeout = 2s\n"), 5,
	    "duplicate key 'connect_timeout' in [upstream:a] (first set on "
	    "line 4)" },
	{ UP("server = 127.0.0.1:1\n"), 4,
	    "duplicate key 'server' in [upstream:a] (first set on line 3)" },
	{ "[global]\nworkers = 1\n[global]\nworkers = 2\n", 4,
	    "duplicate key 'workers' in [global] (first set on line 2)" },
	{ "[defaults]\ndry_run = no\n" BASE "[defaults]\ndry_run = yes\n", 7,
	    "duplicate key 'dry_run' in [defaults] (first set on line 2)" },

	/* Values. */
	{ UP("connect_timeout = 5x\n"), 4,
	    "connect_timeout: invalid duration '5x'" },
	{ UP("connect_timeout =\n"), 4,
	    "connect_timeout: invalid duration ''" },
	{ UP("connect_timeout = 0\n"), 4,
	    "connect_timeout: '0' out of range (1ms..168h)" },
	{ UP("connect_timeout = 200h\n"), 4,
	    "connect_timeout: '200h' out of range (1ms..168h)" },
	{ UP("connect_timeout = 5s # note\n"), 4,
	    "connect_timeout: invalid duration '5s # note'" },
	{ UP("connect_timeout = 5s;note\n"), 4,
	    "connect_timeout: invalid duration '5s;note'" },
	{ UP("idle_timeout = -1\n"), 4, "idle_timeout: invalid duration '-1'" },
	{ UP("slow_connect = 1.5ms\n"), 4,
	    "slow_connect: invalid duration '1.5ms': finer than 1ms" },
	{ UP("max_connections = 1000001\n"), 4,
	    "max_connections: '1000001' out of range (0..1000000)" },
	{ UP("max_connections = 99999999999999999999999\n"), 4,
	    "max_connections: '99999999999999999999999' out of range "
	    "(0..1000000)" },
	{ UP("max_connections = -1\n"), 4,
	    "max_connections: invalid number '-1'" },
	{ UP("failure_threshold = 5.5\n"), 4,
	    "failure_threshold: invalid number '5.5'" },
	{ UP("failure_threshold = five\n"), 4,
	    "failure_threshold: invalid number 'five'" },
	{ UP("failure_rate_threshold = 101\n"), 4,
	    "failure_rate_threshold: '101' out of range (0..100)" },
	{ UP("failure_rate_threshold = x\n"), 4,
	    "failure_rate_threshold: invalid percentage 'x'" },
	{ UP("window = 0\n"), 4, "window: '0' out of range (1..1000000)" },
	{ UP("window = 500ms\n"), 4, "window: '500ms' out of range (1s..1h)" },
	{ UP("window = 2h\n"), 4, "window: '2h' out of range (1s..1h)" },
	{ UP("window = 1.5\n"), 4,
	    "window: invalid value '1.5' (expected a number of attempts or a "
	    "duration)" },
	{ UP("window = -1\n"), 4,
	    "window: invalid value '-1' (expected a number of attempts or a "
	    "duration)" },
	{ UP("minimum_calls = x\n"), 4, "minimum_calls: invalid number 'x'" },
	{ UP("recovery_timeout = 0\n"), 4,
	    "recovery_timeout: '0' out of range (1ms..168h)" },
	{ UP("recovery_backoff = 0.5\n"), 4,
	    "recovery_backoff: '0.5' out of range (1..100)" },
	{ UP("recovery_backoff = 101\n"), 4,
	    "recovery_backoff: '101' out of range (1..100)" },
	{ UP("recovery_backoff = x\n"), 4,
	    "recovery_backoff: invalid number 'x'" },
	{ UP("recovery_timeout_max = 0\n"), 4,
	    "recovery_timeout_max: '0' out of range (1ms..168h)" },
	{ UP("recovery_jitter = 120%\n"), 4,
	    "recovery_jitter: '120%' out of range (0..100)" },
	{ UP("half_open_max_calls = 0\n"), 4,
	    "half_open_max_calls: '0' out of range (1..1000000)" },
	{ UP("success_threshold = 0\n"), 4,
	    "success_threshold: '0' out of range (1..1000000)" },
	{ UP("failure_on_early_close = maybe\n"), 4,
	    "failure_on_early_close: invalid boolean 'maybe' (expected "
	    "yes/no, true/false, on/off or 1/0)" },
	{ UP("dry_run = 2\n"), 4,
	    "dry_run: invalid boolean '2' (expected yes/no, true/false, "
	    "on/off or 1/0)" },
	{ UP("reject = drop\n"), 4,
	    "reject: invalid value 'drop' (expected reset, http503, redis, "
	    "postgres or mysql)" },
	{ UP("recovery_probe = tcp\n"), 4,
	    "recovery_probe: invalid value 'tcp' (expected off or connect)" },
	{ UP("reject = Redis\n"), 4,
	    "reject: invalid value 'Redis' (expected reset, http503, redis, "
	    "postgres or mysql)" },
	{ UP("splice = on\n"), 4,
	    "splice: invalid value 'on' (expected auto or off)" },
	{ "[global]\nlog_level = loud\n", 2,
	    "log_level: invalid value 'loud' (expected debug, info, notice, "
	    "warning or error)" },
	{ "[global]\nlog_level = INFO\n", 2,
	    "log_level: invalid value 'INFO' (expected debug, info, notice, "
	    "warning or error)" },
	{ "[global]\nlog_target = file\n", 2,
	    "log_target: invalid value 'file' (expected stderr or syslog)" },
	{ "[global]\nworkers = 0\n", 2, "workers: '0' out of range (1..256)" },
	{ "[global]\nworkers = 257\n", 2,
	    "workers: '257' out of range (1..256)" },
	{ "[global]\nworkers = many\n", 2,
	    "workers: invalid value 'many' (expected a number or auto)" },
	{ "[global]\nshutdown_timeout = 1d\n", 2,
	    "shutdown_timeout: invalid duration '1d'" },
	{ "[global]\nlog_rejects_per_second = lots\n", 2,
	    "log_rejects_per_second: invalid number 'lots'" },
	{ "[global]\nadmin = nohostport\n", 2,
	    "admin: invalid address 'nohostport' (expected HOST:PORT, "
	    "[IPv6]:PORT or unix:/path)" },
	{ "[global]\nadmin = *:9901\n", 2,
	    "admin: invalid address '*:9901': '*' is only allowed in listen" },
	{ "[upstream:a]\nlisten = 127.0.0.1\nserver = 127.0.0.1:9090\n"
	  "listen = 127.0.0.1:1\n",
	    2,
	    "listen: invalid address '127.0.0.1' (expected *:PORT, HOST:PORT, "
	    "[IPv6]:PORT or unix:/path)" },
	{ "[upstream:a]\nlisten = 127.0.0.1:1\nserver = *:80\n", 3,
	    "server: invalid address '*:80': '*' is only allowed in listen" },
	{ "[upstream:a]\nlisten = 127.0.0.1:1\nserver = 127.0.0.1:99999\n", 3,
	    "server: invalid port in '127.0.0.1:99999' (expected 1..65535)" },

	/* Rules over a whole section or several keys. */
	{ "[upstream:a]\nlisten = 127.0.0.1:8080\n", 1,
	    "upstream 'a': 'server' is not set" },
	{ "[upstream:a]\nserver = 127.0.0.1:9090\n", 1,
	    "upstream 'a': 'listen' is not set and no other upstream names it "
	    "as backup and no pool lists it" },
	{ UP("backup = nope\n"), 4,
	    "upstream 'a': backup 'nope' is not a defined upstream" },
	{ UP("backup = a\n"), 4, "upstream 'a': backup cycle a -> a" },
	{ UP("backup = b\n") "[upstream:b]\nserver = 127.0.0.1:1\nbackup = a\n",
	    4, "upstream 'a': backup cycle a -> b -> a" },
	{ "[upstream:c]\nserver = 127.0.0.1:3\nbackup = a\n" UP(
	      "backup = b\n") "[upstream:b]\nserver = 127.0.0.1:2\nbackup = "
			      "c\n",
	    3, "upstream 'c': backup cycle c -> a -> b -> c" },
	{ UP("success_threshold = 4\n"), 4,
	    "upstream 'a': success_threshold 4 is greater than "
	    "half_open_max_calls 3" },
	{ "[defaults]\nhalf_open_max_calls = 1\n" BASE, 2,
	    "upstream 'a': success_threshold 2 is greater than "
	    "half_open_max_calls 1" },
	{ UP("half_open_max_calls = 5\nsuccess_threshold = 6\n") "[defaults]\n"
								 "half_open_"
								 "max_"
								 "calls = 9\n",
	    5,
	    "upstream 'a': success_threshold 6 is greater than "
	    "half_open_max_calls 5" },
	{ UP("failure_threshold = 0\n"), 4,
	    "upstream 'a': failure_threshold and failure_rate_threshold are "
	    "both 0, so the circuit can never open" },
	{ "[defaults]\nfailure_threshold = 0\n" BASE, 2,
	    "upstream 'a': failure_threshold and failure_rate_threshold are "
	    "both 0, so the circuit can never open" },
	{ UP("recovery_timeout = 20m\n"), 4,
	    "upstream 'a': recovery_timeout_max 10m is less than "
	    "recovery_timeout 20m" },
	{ UP("failure_rate_threshold = 50\nwindow = 5\n"), 5,
	    "upstream 'a': minimum_calls 10 is greater than window 5, so "
	    "failure_rate_threshold can never apply" },
	{ BASE "[upstream:b]\nlisten = *:8080\nserver = 127.0.0.1:9090\n", 5,
	    "upstream 'b': listen '*:8080' overlaps listen '127.0.0.1:8080' "
	    "of upstream 'a' (line 2)" },
	{ "[upstream:b]\nlisten = *:8080\nserver = 127.0.0.1:9090\n" BASE, 5,
	    "upstream 'a': listen '127.0.0.1:8080' overlaps listen '*:8080' "
	    "of upstream 'b' (line 2)" },
	{ UP("listen = 127.0.0.1:8080\n"), 4,
	    "upstream 'a': listen '127.0.0.1:8080' overlaps listen "
	    "'127.0.0.1:8080' of upstream 'a' (line 2)" },
	{ "[upstream:a]\nlisten = unix:/run/a\nlisten = unix:/run/a\nserver = "
	  "127.0.0.1:1\n",
	    3,
	    "upstream 'a': listen 'unix:/run/a' overlaps listen 'unix:/run/a' "
	    "of upstream 'a' (line 2)" },
	{ "[global]\nadmin = 127.0.0.1:8080\n" BASE, 4,
	    "upstream 'a': listen '127.0.0.1:8080' overlaps admin "
	    "'127.0.0.1:8080' (line 2)" },
	{ BASE "[global]\nadmin = 127.0.0.1:8080\n", 5,
	    "admin '127.0.0.1:8080' overlaps listen '127.0.0.1:8080' of "
	    "upstream 'a' (line 2)" },
	{ "[global]\nadmin = 0.0.0.0:9901\n", 2,
	    "admin '0.0.0.0:9901' is not a loopback address and admin_token "
	    "is not set" },
	{ "[global]\nadmin = [2001:db8::1]:9901\nadmin_token =\n", 2,
	    "admin '[2001:db8::1]:9901' is not a loopback address and "
	    "admin_token is not set" },
	/* Pools (BASE is upstream a, lines 1-3). */
	{ UP("[pool:p]\nmembers = a\n"), 4, "pool 'p': 'listen' is not set" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\n"), 4,
	    "pool 'p': 'members' is not set (at least one upstream name)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers =\n"), 6,
	    "members: no member named (at least one upstream name)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a zz\n"), 6,
	    "pool 'p': member 'zz' is not a defined upstream" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a a\n"), 6,
	    "pool 'p': member 'a' is listed twice" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\n"
	     "balance = random\n"),
	    7,
	    "balance: invalid value 'random' (expected roundrobin, "
	    "leastconn or first)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\nretries = 9\n"), 7,
	    "retries: '9' out of range (0..8)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\nretries = x\n"), 7,
	    "retries: invalid number 'x'" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\n"
	     "reject = teapot\n"),
	    7,
	    "reject: invalid value 'teapot' (expected reset, http503, "
	    "redis, postgres or mysql)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\n"
	     "log_rejects_per_second = -1\n"),
	    7, "log_rejects_per_second: invalid number '-1'" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\n"
	     "log_connections = maybe\n"),
	    7,
	    "log_connections: invalid boolean 'maybe' (expected yes/no, "
	    "true/false, on/off or 1/0)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\n"
	     "server = 127.0.0.1:1\n"),
	    7,
	    "unknown key 'server' in [pool:p] (it belongs in [defaults] or "
	    "[upstream:NAME])" },
	{ UP("retries = 1\n"), 4,
	    "unknown key 'retries' in [upstream:a] (it belongs in "
	    "[pool:NAME])" },
	{ "[defaults]\nmembers = a\n" BASE, 2,
	    "unknown key 'members' in [defaults] (it belongs in "
	    "[pool:NAME])" },
	{ UP("[pool:a]\nlisten = 127.0.0.1:81\nmembers = a\n"), 4,
	    "pool 'a': the name is taken by the upstream on line 1 "
	    "(upstreams and pools share one namespace)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:81\nmembers = a\n"
	     "[pool:p]\nlisten = 127.0.0.1:82\nmembers = a\n"),
	    7, "duplicate pool 'p' (first defined on line 4)" },
	{ UP("[pool:p]\nlisten = 127.0.0.1:8080\nmembers = a\n"), 5,
	    "pool 'p': listen '127.0.0.1:8080' overlaps listen "
	    "'127.0.0.1:8080' of upstream 'a' (line 2)" },
	{ UP("[pool:p]\nlisten = *:8080\nmembers = a\n"), 5,
	    "pool 'p': listen '*:8080' overlaps listen '127.0.0.1:8080' of "
	    "upstream 'a' (line 2)" },
	{ UP("[pool:bad name]\n"), 4,
	    "invalid pool name 'bad name' (1 to 64 letters, digits, '_', "
	    "'.' or '-')" },
};

/* Load one bad config and check its only error. */
START_TEST(test_bad)
{
	struct config_errors errs;
	struct config *cfg;
	char *want;

	char *text = test_with_upstream(bad_rows[_i].ini);

	cfg = config_load_string("t.ini", text, &errs);
	free(text);
	ck_assert_ptr_null(cfg);
	ck_assert_msg(errs.n == 1, "%zu errors, first: %s", errs.n,
	    errs.n > 0 ? errs.v[0].msg : "none");
	xasprintf(&want, "t.ini:%d: %s", bad_rows[_i].line, bad_rows[_i].msg);
	ck_assert_str_eq(errs.v[0].msg, want);
	ck_assert_int_eq(errs.v[0].line, bad_rows[_i].line);
	free(want);
	config_errors_clear(&errs);
	ck_assert_ptr_null(errs.v);
	ck_assert_uint_eq(errs.n, 0);
}
END_TEST

/* Every error in a file is reported, sorted by line, whatever found it. */
START_TEST(test_many_errors)
{
	static const char *text = "[global]\n"		      /* 1 */
				  "workers = 0\n"	      /* 2 */
				  "timeout = 5\n"	      /* 3 */
				  "[upstream:a]\n"	      /* 4 */
				  "listen = *:8080\n"	      /* 5 */
				  "backup = nope\n"	      /* 6 */
				  "connect_timeout = 5x\n"    /* 7 */
				  "[upstream:b]\n"	      /* 8 */
				  "listen = 127.0.0.1:8080\n" /* 9 */
				  "junk\n"		      /* 10 */
				  "[bogus]\n"		      /* 11 */
				  "[defaults]\n"	      /* 12 */
				  "success_threshold = 9\n";  /* 13 */
	static const struct {
		int line;
		const char *msg;
	} want[] = {
		{ 2, "t.ini:2: workers: '0' out of range (1..256)" },
		{ 3, "t.ini:3: unknown key 'timeout' in [global]" },
		{ 4, "t.ini:4: upstream 'a': 'server' is not set" },
		{ 6,
		    "t.ini:6: upstream 'a': backup 'nope' is not a defined "
		    "upstream" },
		{ 7, "t.ini:7: connect_timeout: invalid duration '5x'" },
		{ 8, "t.ini:8: upstream 'b': 'server' is not set" },
		{ 9,
		    "t.ini:9: upstream 'b': listen '127.0.0.1:8080' overlaps "
		    "listen '*:8080' of upstream 'a' (line 5)" },
		{ 10,
		    "t.ini:10: expected 'key = value' or '[section]': "
		    "'junk'" },
		{ 11,
		    "t.ini:11: unknown section '[bogus]' (expected [global], "
		    "[defaults], [upstream:NAME] or [pool:NAME])" },
		{ 13,
		    "t.ini:13: upstream 'a': success_threshold 9 is greater "
		    "than half_open_max_calls 3" },
		{ 13,
		    "t.ini:13: upstream 'b': success_threshold 9 is greater "
		    "than half_open_max_calls 3" },
	};
	struct config_errors errs;
	size_t i;

	ck_assert_ptr_null(config_load_string("t.ini", text, &errs));
	for (i = 0; i < errs.n && i < CP_ARRAY_LEN(want); i++) {
		ck_assert_int_eq(errs.v[i].line, want[i].line);
		ck_assert_str_eq(errs.v[i].msg, want[i].msg);
	}
	ck_assert_uint_eq(errs.n, CP_ARRAY_LEN(want));
	config_errors_clear(&errs);
}
END_TEST

/*
 * A file with no upstream at all is an error (SPEC 3): empty, comments
 * only, [global] alone. A badly named upstream is its own error, not this.
 */
START_TEST(test_no_upstream)
{
	static const struct {
		const char *ini;
		int line;
	} rows[] = {
		{ "", 1 },
		{ "\n", 1 },
		{ "; only a comment\n# and another\n", 2 },
		{ "[global]\nworkers = 2\n", 2 },
		{ "[defaults]\nconnect_timeout = 1s\n\n", 3 },
	};
	struct config_errors errs;
	char *want;
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		ck_assert_ptr_null(
		    config_load_string("t.ini", rows[i].ini, &errs));
		ck_assert_msg(errs.n == 1, "%zu errors for \"%s\"", errs.n,
		    rows[i].ini);
		xasprintf(&want,
		    "t.ini:%d: no upstream: add an [upstream:NAME] section "
		    "with listen and server",
		    rows[i].line);
		ck_assert_str_eq(errs.v[0].msg, want);
		free(want);
		config_errors_clear(&errs);
	}
	ck_assert_ptr_null(
	    config_load_string("t.ini", "[upstream:a b]\n", &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_ptr_nonnull(strstr(errs.v[0].msg, "invalid upstream name"));
	config_errors_clear(&errs);
}
END_TEST

/* An empty upstream section misses both server and listen. */
START_TEST(test_empty_upstream)
{
	struct config_errors errs;

	ck_assert_ptr_null(
	    config_load_string("t.ini", "[upstream:x]\n", &errs));
	ck_assert_uint_eq(errs.n, 2);
	ck_assert_str_eq(errs.v[0].msg,
	    "t.ini:1: upstream 'x': 'server' is "
	    "not set");
	ck_assert_str_eq(errs.v[1].msg,
	    "t.ini:1: upstream 'x': 'listen' is not set and no other "
	    "upstream names it as backup and no pool lists it");
	config_errors_clear(&errs);
}
END_TEST

/* A line longer than inih's buffer is an error, not misread; counting goes on. */
START_TEST(test_long_line)
{
	struct config_errors errs;
	struct config *cfg;
	char *text, comment[200], value[210];

	/* 199 characters fit. */
	memset(comment, 'x', sizeof(comment));
	comment[0] = ';';
	comment[199] = '\0';
	xasprintf(&text, "%s\n" BASE, comment);
	cfg = test_load_ok(text);
	config_free(cfg);
	free(text);

	/* 200 do not: the value would have been cut. */
	memset(value, '1', sizeof(value));
	memcpy(value, "connect_timeout = ", 18);
	value[200] = '\0';
	xasprintf(&text, BASE "%s\nworkers = 1\n", value);
	ck_assert_ptr_null(config_load_string("t.ini", text, &errs));
	ck_assert_uint_eq(errs.n, 2);
	ck_assert_str_eq(errs.v[0].msg,
	    "t.ini:4: line too long (max 199 characters)");
	ck_assert_int_eq(errs.v[0].line, 4);
	ck_assert_str_eq(errs.v[1].msg,
	    "t.ini:5: unknown key 'workers' in "
	    "[upstream:a] (it belongs in [global])");
	config_errors_clear(&errs);
	free(text);
}
END_TEST

/* Write a file in the temp directory; returns its path (allocated). */
static char *
test_write_file(const void *data, size_t len)
{
	const char *dir = getenv("TMPDIR");
	char *path;
	int fd;

	xasprintf(&path, "%s/check_config.XXXXXX",
	    dir != NULL && *dir != '\0' ? dir : "/tmp");
	fd = mkstemp(path);
	ck_assert_int_ne(fd, -1);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

/* A file loads like the same string, with its path in the messages. */
START_TEST(test_load_file)
{
	struct config_errors errs;
	struct config *cfg;
	char *path;

	path = test_write_file(BASE, strlen(BASE));
	cfg = config_load(path, &errs);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->path, path);
	ck_assert_uint_eq(cfg->nupstreams, 1);
	config_free(cfg);
	unlink(path);
	free(path);
}
END_TEST

/* Bad files: their one error, "FILE:LINE: message" with FILE their path. */
static const struct {
	const char *text;
	size_t len; /* with a NUL inside */
	int line;
	const char *msg;
} bad_file_rows[] = {
	{ UP("connect_timeout = 5x\n"), 0, 4,
	    "connect_timeout: invalid duration '5x'" },
	{ "[global]\nworkers = 1\0junk\n" BASE,
	    sizeof("[global]\nworkers = 1\0junk\n" BASE) - 1, 2,
	    "line contains a NUL byte" },
};

/* Load one bad file and check its only error. */
START_TEST(test_load_file_bad)
{
	const char *text = bad_file_rows[_i].text;
	size_t len = bad_file_rows[_i].len;
	struct config_errors errs;
	char *path, *want;

	path = test_write_file(text, len != 0 ? len : strlen(text));
	ck_assert_ptr_null(config_load(path, &errs));
	ck_assert_uint_eq(errs.n, 1);
	xasprintf(&want, "%s:%d: %s", path, bad_file_rows[_i].line,
	    bad_file_rows[_i].msg);
	ck_assert_str_eq(errs.v[0].msg, want);
	config_errors_clear(&errs);
	unlink(path);
	free(path);
	free(want);
}
END_TEST

/* Unreadable files: one error at line 0, "FILE: cannot open: REASON". */
static const struct {
	const char *path;
	const char *msg;
} unreadable_rows[] = {
	{ "/nonexistent/circuitproxy.ini",
	    "/nonexistent/circuitproxy.ini: cannot open: No such file or "
	    "directory" },
	{ "/", "/: cannot open: Is a directory" },
};

/* Refuse one unreadable file with its exact error. */
START_TEST(test_cannot_open)
{
	struct config_errors errs;

	ck_assert_ptr_null(config_load(unreadable_rows[_i].path, &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_int_eq(errs.v[0].line, 0);
	ck_assert_str_eq(errs.v[0].msg, unreadable_rows[_i].msg);
	config_errors_clear(&errs);
}
END_TEST

/* errs may be NULL when the caller only wants yes or no. */
START_TEST(test_errors_unwanted)
{
	ck_assert_ptr_null(config_load("/nonexistent/x.ini", NULL));
	ck_assert_ptr_null(config_load_string("t.ini", "junk\n", NULL));
}
END_TEST

/* Every default is the one SPEC.md section 3 gives. */
START_TEST(test_defaults)
{
	struct config *cfg = test_load_ok(BASE);
	const struct upstream_conf *u = &cfg->upstreams[0];
	const struct breaker_conf *b = &u->breaker;

	ck_assert_int_eq(cfg->log_level, LOG_LEVEL_INFO);
	ck_assert_int_eq(cfg->log_target, LOG_TARGET_STDERR);
	ck_assert_uint_eq(cfg->workers, 1);
	ck_assert(!cfg->workers_auto);
	ck_assert(!cfg->admin_enabled);
	ck_assert_ptr_null(cfg->admin_token);
	ck_assert_uint_eq(cfg->shutdown_timeout_ms, 30000);
	ck_assert_uint_eq(cfg->log_rejects_per_second, 10);
	ck_assert_ptr_null(cfg->state_file);
	ck_assert_str_eq(cfg->path, "t.ini");

	ck_assert_str_eq(u->name, "a");
	ck_assert_int_eq(u->line, 1);
	ck_assert_ptr_null(u->backup);
	ck_assert_int_eq(u->backup_index, -1);
	ck_assert_uint_eq(u->connect_timeout_ms, 5000);
	ck_assert_uint_eq(u->idle_timeout_ms, 0);
	ck_assert_uint_eq(u->max_connections, 0);
	ck_assert(!u->failure_on_early_close);
	ck_assert_uint_eq(u->slow_connect_ms, 0);
	ck_assert_int_eq(u->reject, REJECT_RESET);
	ck_assert_int_eq(u->splice, SPLICE_AUTO);
	ck_assert_uint_eq(b->failure_threshold, 5);
	ck_assert_double_eq(b->failure_rate_threshold, 0);
	ck_assert_uint_eq(b->window_calls, 20);
	ck_assert_uint_eq(b->window_ms, 0);
	ck_assert_uint_eq(b->minimum_calls, 10);
	ck_assert_uint_eq(b->recovery_timeout_ms, 30000);
	ck_assert_double_eq(b->recovery_backoff, 1);
	ck_assert_uint_eq(b->recovery_timeout_max_ms, 600000);
	ck_assert_double_eq(b->recovery_jitter, 0);
	ck_assert_uint_eq(b->half_open_max_calls, 3);
	ck_assert_uint_eq(b->success_threshold, 2);
	ck_assert(!b->dry_run);
	config_free(cfg);
}
END_TEST

/* workers = auto is the number of CPUs online. */
START_TEST(test_workers_auto)
{
	struct config *cfg = test_load_ok(BASE "[global]\nworkers = auto\n");
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	if (n > 256)
		n = 256;
	ck_assert_uint_eq(cfg->workers, (unsigned)n);
	ck_assert(cfg->workers_auto);
	config_free(cfg);
}
END_TEST

/* The keys SPEC.md section 3 names, each in the table with its scope. */
static const struct {
	const char *name;
	enum config_scope scope;
} key_rows[] = {
	{ "log_level", CONFIG_SCOPE_GLOBAL },
	{ "log_target", CONFIG_SCOPE_GLOBAL },
	{ "workers", CONFIG_SCOPE_GLOBAL },
	{ "admin", CONFIG_SCOPE_GLOBAL },
	{ "admin_token", CONFIG_SCOPE_GLOBAL },
	{ "admin_token_file", CONFIG_SCOPE_GLOBAL },
	{ "shutdown_timeout", CONFIG_SCOPE_GLOBAL },
	{ "log_rejects_per_second", CONFIG_SCOPE_GLOBAL },
	{ "state_file", CONFIG_SCOPE_GLOBAL },
	{ "resolver", CONFIG_SCOPE_GLOBAL },
	{ "listen", CONFIG_SCOPE_UPSTREAM },
	{ "server", CONFIG_SCOPE_UPSTREAM },
	{ "backup", CONFIG_SCOPE_UPSTREAM },
	{ "connect_timeout", CONFIG_SCOPE_UPSTREAM },
	{ "idle_timeout", CONFIG_SCOPE_UPSTREAM },
	{ "max_connections", CONFIG_SCOPE_UPSTREAM },
	{ "failure_threshold", CONFIG_SCOPE_UPSTREAM },
	{ "failure_rate_threshold", CONFIG_SCOPE_UPSTREAM },
	{ "window", CONFIG_SCOPE_UPSTREAM },
	{ "minimum_calls", CONFIG_SCOPE_UPSTREAM },
	{ "recovery_timeout", CONFIG_SCOPE_UPSTREAM },
	{ "recovery_backoff", CONFIG_SCOPE_UPSTREAM },
	{ "recovery_timeout_max", CONFIG_SCOPE_UPSTREAM },
	{ "recovery_jitter", CONFIG_SCOPE_UPSTREAM },
	{ "half_open_max_calls", CONFIG_SCOPE_UPSTREAM },
	{ "success_threshold", CONFIG_SCOPE_UPSTREAM },
	{ "failure_on_early_close", CONFIG_SCOPE_UPSTREAM },
	{ "slow_connect", CONFIG_SCOPE_UPSTREAM },
	{ "reject", CONFIG_SCOPE_UPSTREAM },
	{ "recovery_probe", CONFIG_SCOPE_UPSTREAM },
	{ "splice", CONFIG_SCOPE_UPSTREAM },
	{ "dry_run", CONFIG_SCOPE_UPSTREAM },
	{ "log_connections", CONFIG_SCOPE_UPSTREAM },
	{ "send_proxy", CONFIG_SCOPE_UPSTREAM },
	{ "resolve_interval", CONFIG_SCOPE_UPSTREAM },
	{ "listen", CONFIG_SCOPE_POOL },
	{ "members", CONFIG_SCOPE_POOL },
	{ "balance", CONFIG_SCOPE_POOL },
	{ "retries", CONFIG_SCOPE_POOL },
	{ "reject", CONFIG_SCOPE_POOL },
	{ "log_rejects_per_second", CONFIG_SCOPE_POOL },
	{ "log_connections", CONFIG_SCOPE_POOL },
};

/* A key of the table by name and scope (a pool repeats some names). */
static const struct config_key *
test_key_find(const char *name, enum config_scope scope)
{
	const struct config_key *keys;
	size_t n, i;

	keys = config_keys(&n);
	for (i = 0; i < n; i++)
		if (keys[i].scope == scope && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* Find one key of SPEC.md in the table. */
START_TEST(test_key_table)
{
	const struct config_key *k =
	    test_key_find(key_rows[_i].name, key_rows[_i].scope);
	size_t n;

	ck_assert_ptr_nonnull(k);
	ck_assert_int_eq(k->scope, key_rows[_i].scope);
	ck_assert_ptr_nonnull(k->help);
	if (k->scope == CONFIG_SCOPE_POOL)
		ck_assert((k->flags & CONFIG_KEY_RELOADABLE) &&
		    (k->def != NULL || k->type == CONFIG_T_LISTEN ||
			k->type == CONFIG_T_MEMBERS ||
			k->type == CONFIG_T_UINT));
	else if (k->type == CONFIG_T_LISTEN || k->type == CONFIG_T_SERVER ||
	    k->type == CONFIG_T_BACKUP)
		ck_assert(k->flags & CONFIG_KEY_NO_DEFAULTS);
	else
		ck_assert_ptr_nonnull(k->def);
	config_keys(&n);
	ck_assert_uint_eq(n, CP_ARRAY_LEN(key_rows));
}
END_TEST

/*
 * Is there a dump line "KEYVALUE<spaces> ; ORIGIN - help" (after the start
 * of the dump or a newline)?
 */
static bool
test_dump_has(const char *out, const char *kv, const char *origin)
{
	const char *p = out, *q;
	size_t n = strlen(kv), o = strlen(origin);

	for (; p != NULL; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, kv, n) != 0)
			continue;
		q = p + n;
		if (*q != ' ')
			continue;
		q += strspn(q, " ");
		if (strncmp(q, "; ", 2) == 0 &&
		    strncmp(q + 2, origin, o) == 0 &&
		    strncmp(q + 2 + o, " - ", 3) == 0)
			return true;
	}
	return false;
}

/* The dump without its comments: what a parser makes of it. */
static char *
test_dump_values(const char *out)
{
	char *v = xstrdup(out), *r = v, *w = v, *c;
	size_t n;

	while (*r != '\0') {
		n = strcspn(r, "\n");
		if (*r == '#') {
			r += n + (r[n] == '\n');
			continue;
		}
		c = memmem(r, n, " ;", 2);
		memmove(w, r, c != NULL ? (size_t)(c - r) : n);
		w += c != NULL ? (size_t)(c - r) : n;
		while (w > v && w[-1] == ' ')
			w--;
		*w++ = '\n';
		r += n + (r[n] == '\n');
	}
	*w = '\0';
	return v;
}

/*
 * config_dump (circuitproxyd -T) prints every effective key, secrets
 * hidden, each with where it came from (FILE:LINE, [defaults] FILE:LINE or
 * built in) and the key table's help.
 */
START_TEST(test_dump)
{
	struct config *cfg = test_load_ok(
	    "[global]\nadmin = 127.0.0.1:9901\nadmin_token = s3cret\n"
	    "[defaults]\nwindow = 60s\n" UP("listen = [::1]:8080\n"
					    "recovery_jitter = 12.5\n"));
	const struct config_key *k;
	char *out = NULL, *values, buf[64];
	size_t len = 0;
	FILE *f;

	f = open_memstream(&out, &len);
	ck_assert_ptr_nonnull(f);
	config_dump(cfg, f);
	fclose(f);
	ck_assert_msg(test_dump_has(out, "admin = 127.0.0.1:9901", "t.ini:2"),
	    "%s", out);
	ck_assert(test_dump_has(out, "admin_token = (hidden)", "t.ini:3"));
	ck_assert_ptr_null(strstr(out, "s3cret"));
	ck_assert(test_dump_has(out, "log_level = info", "built in"));
	ck_assert_ptr_nonnull(
	    strstr(out, "; built in - least severe level logged\n"));
	ck_assert(test_dump_has(out, "state_file =", "built in"));
	ck_assert(test_dump_has(out, "listen = 127.0.0.1:8080", "t.ini:7"));
	ck_assert(test_dump_has(out, "listen = [::1]:8080", "t.ini:9"));
	ck_assert(test_dump_has(out, "window = 1m", "[defaults] t.ini:5"));
	ck_assert(test_dump_has(out, "recovery_jitter = 12.5%", "t.ini:10"));
	ck_assert(test_dump_has(out, "recovery_timeout_max = 10m", "built in"));
	ck_assert_ptr_nonnull(strstr(out, "\n# t.ini:6\n[upstream:a]\n"));

	values = test_dump_values(out);
	ck_assert_ptr_nonnull(strstr(values, "\n[global]\nlog_level = info\n"));
	ck_assert_ptr_nonnull(strstr(values,
	    "\n[upstream:a]\nlisten = "
	    "127.0.0.1:8080\nlisten = "
	    "[::1]:8080\nserver = "
	    "127.0.0.1:9090\nbackup =\n"));
	ck_assert_ptr_nonnull(strstr(values,
	    "\nreject = reset\nrecovery_probe = off\nsplice = auto\n"
	    "dry_run = no\n"));
	free(values);
	free(out);

	k = config_key_find("listen");
	ck_assert_str_eq(config_key_value(cfg, &cfg->upstreams[0], k, buf,
			     sizeof(buf)),
	    "127.0.0.1:8080, [::1]:8080");
	k = config_key_find("connect_timeout");
	ck_assert_str_eq(config_key_value(cfg, &cfg->upstreams[0], k, buf,
			     sizeof(buf)),
	    "5s");
	ck_assert_ptr_null(config_key_find("timeout"));
	config_free(cfg);
}
END_TEST

/*
 * The dump of a config, comments and all, loads back to the same values,
 * every one of them now from a line of the file.
 */
START_TEST(test_dump_roundtrip)
{
	struct config *cfg = test_load_ok(
	    "[global]\nworkers = auto\nlog_level = debug\n"
	    "[defaults]\nwindow = 90s\nfailure_rate_threshold = 33.3\n"
	    "recovery_backoff = 1.5\nslow_connect = 250ms\n" UP(
		"backup = b\n") "[upstream:b]\nserver = unix:/run/b.sock\n");
	struct config *again;
	char *one = NULL, *two = NULL, *v1, *v2;
	size_t len;
	FILE *f;

	f = open_memstream(&one, &len);
	config_dump(cfg, f);
	fclose(f);
	again = test_load_ok(one);
	f = open_memstream(&two, &len);
	config_dump(again, f);
	fclose(f);
	v1 = test_dump_values(one);
	v2 = test_dump_values(two);
	ck_assert_str_eq(v1, v2);
	ck_assert_ptr_null(strstr(two, "; built in"));
	ck_assert_ptr_null(strstr(two, "; [defaults]"));
	ck_assert_int_eq(again->upstreams[0].backup_index, 1);
	free(v1);
	free(v2);
	free(one);
	free(two);
	config_free(cfg);
	config_free(again);
}
END_TEST

/* config_find_upstream finds by exact name. */
START_TEST(test_find_upstream)
{
	struct config *cfg =
	    test_load_ok(BASE "[upstream:b]\nlisten = 127.0.0.1:8081\nserver = "
			      "127.0.0.1:9090\n");

	ck_assert_ptr_eq(config_find_upstream(cfg, "a"), &cfg->upstreams[0]);
	ck_assert_ptr_eq(config_find_upstream(cfg, "b"), &cfg->upstreams[1]);
	ck_assert_ptr_null(config_find_upstream(cfg, "A"));
	ck_assert_ptr_null(config_find_upstream(cfg, "c"));
	ck_assert_int_eq(cfg->upstreams[1].line, 4);
	config_free(cfg);
}
END_TEST

/*
 * A pool: members resolved in order, a member with no listen of its own,
 * one in two pools and listening on its own; the pool's defaults, its
 * log_rejects_per_second inherited from [global]; the dump loads back.
 */
START_TEST(test_pool_good)
{
	struct config *cfg = test_load_ok(
	    "[global]\nlog_rejects_per_second = 7\n" BASE
	    "[upstream:b]\nserver = 127.0.0.1:9091\n"
	    "[upstream:c]\nserver = unix:/run/c.sock\n"
	    "[pool:web]\nlisten = 127.0.0.1:80\nlisten = [::1]:80\n"
	    "members = c, a b\n"
	    "[pool:second]\nlisten = 127.0.0.1:81\nmembers = a\n"
	    "balance = leastconn\nretries = 0\nreject = http503\n"
	    "log_rejects_per_second = 2\nlog_connections = yes\n");
	const struct pool_conf *pc = config_find_pool(cfg, "web"), *p2;
	struct config *again;
	char *one = NULL, *two = NULL, *v1, *v2;
	size_t len;
	FILE *f;

	ck_assert_ptr_nonnull(pc);
	ck_assert_uint_eq(cfg->npools, 2);
	ck_assert_uint_eq(pc->nlisten, 2);
	ck_assert_uint_eq(pc->nmembers, 3);
	ck_assert_str_eq(pc->members[0], "c");
	ck_assert_uint_eq(pc->member_index[0], 2);
	ck_assert_uint_eq(pc->member_index[1], 0);
	ck_assert_uint_eq(pc->member_index[2], 1);
	ck_assert_int_eq(pc->balance, POOL_BALANCE_ROUNDROBIN);
	ck_assert_uint_eq(pc->retries, 1);
	ck_assert_int_eq(pc->reject, REJECT_RESET);
	ck_assert_uint_eq(pc->log_rejects_per_second, 7);
	ck_assert(!pc->log_connections);
	ck_assert_int_eq(pc->line, 10);
	p2 = config_find_pool(cfg, "second");
	ck_assert_int_eq(p2->balance, POOL_BALANCE_LEASTCONN);
	ck_assert_uint_eq(p2->retries, 0);
	ck_assert_int_eq(p2->reject, REJECT_HTTP503);
	ck_assert_uint_eq(p2->log_rejects_per_second, 2);
	ck_assert(p2->log_connections);
	ck_assert_ptr_null(config_find_pool(cfg, "a"));

	f = open_memstream(&one, &len);
	config_dump(cfg, f);
	fclose(f);
	ck_assert_ptr_nonnull(
	    strstr(one, "[pool:web]\nlisten = 127.0.0.1:80 "));
	/* -T's origins: the line, [global]'s for an inherited budget, built in. */
	ck_assert(test_dump_has(one, "listen = [::1]:80", "t.ini:12"));
	ck_assert(test_dump_has(one, "members = c a b", "t.ini:13"));
	ck_assert(test_dump_has(one, "balance = roundrobin", "built in"));
	ck_assert(test_dump_has(one, "log_rejects_per_second = 7",
	    "[global] t.ini:2"));
	ck_assert(test_dump_has(one, "log_rejects_per_second = 2", "t.ini:20"));
	ck_assert_ptr_nonnull(strstr(one, "\nmembers = c a b "));
	ck_assert_ptr_nonnull(strstr(one, "\nbalance = roundrobin "));
	again = test_load_ok(one);
	f = open_memstream(&two, &len);
	config_dump(again, f);
	fclose(f);
	v1 = test_dump_values(one);
	v2 = test_dump_values(two);
	ck_assert(strcmp(v1, v2) == 0);
	free(v1);
	free(v2);
	free(one);
	free(two);
	config_free(again);
	config_free(cfg);
}
END_TEST

/* Read a file of the source tree whole (NUL-terminated). */
static char *
test_read_source(const char *rel)
{
	const char *dir = getenv("CP_SRCDIR");
	char *path, *text;
	size_t len = 0, cap = 1 << 16, n;
	FILE *f;

	xasprintf(&path, "%s/%s", dir != NULL && *dir != '\0' ? dir : CP_SRCDIR,
	    rel);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	text = malloc(cap);
	ck_assert_ptr_nonnull(text);
	while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 == cap) {
			cap *= 2;
			text = realloc(text, cap);
			ck_assert_ptr_nonnull(text);
		}
	}
	text[len] = '\0';
	fclose(f);
	free(path);
	return text;
}

/*
 * The key table is the documented one: every key has its entry in
 * circuitproxy.ini(5) (".It Ic KEY No =", each value of an enum as "Cm
 * VALUE" there) and its line in the example config, and the man page
 * describes no key the table lacks. A key added to one and not the others
 * fails here.
 */
START_TEST(test_key_table_documented)
{
	char *man = test_read_source("man/circuitproxy.ini.5");
	char *ini = test_read_source("conf/circuitproxy.ini");
	const struct config_key *keys, *k;
	char *entry, *at, *eol, *p, name[64], *want;
	size_t n, i, j, documented = 0;

	keys = config_keys(&n);
	for (i = 0; i < n; i++) {
		k = &keys[i];
		xasprintf(&want, "\n.It Ic %s No = ", k->name);
		at = strstr(man, want);
		ck_assert_msg(at != NULL,
		    "%s: no \".It Ic %s No =\" in the man page", k->name,
		    k->name);
		free(want);
		/* The entry: up to the next key's. */
		eol = strstr(at + 1, "\n.It Ic ");
		entry = strndup(at + 1,
		    eol != NULL ? (size_t)(eol - at - 1) : strlen(at + 1));
		for (j = 0; k->type == CONFIG_T_ENUM && k->names[j] != NULL;
		     j++) {
			xasprintf(&want, "Cm %s", k->names[j]);
			for (p = entry; (p = strstr(p, want)) != NULL; p++)
				if (strchr(" \n,.|", p[strlen(want)]) != NULL)
					break;
			ck_assert_msg(p != NULL,
			    "%s = %s is not in its man page entry", k->name,
			    k->names[j]);
			free(want);
		}
		free(entry);
		xasprintf(&want, "\n%s = ", k->name);
		at = strstr(ini, want);
		free(want);
		xasprintf(&want, "\n;%s = ", k->name);
		ck_assert_msg(at != NULL || strstr(ini, want) != NULL,
		    "%s is not in conf/circuitproxy.ini", k->name);
		free(want);
	}
	for (at = man; (at = strstr(at, "\n.It Ic ")) != NULL; at++) {
		if (sscanf(at, "\n.It Ic %63s No =", name) != 1 ||
		    strstr(at, " No = ") == NULL ||
		    strchr(at + 1, '\n') < strstr(at, " No = "))
			continue;
		documented++;
		ck_assert_msg(config_key_find(name) != NULL,
		    "the man page describes \"%s\", which is no key", name);
	}
	ck_assert_uint_eq(documented, n);
	free(man);
	free(ini);
}
END_TEST

/* The example config in conf/ loads as it is shipped. */
START_TEST(test_example_conf)
{
	const char *dir = getenv("CP_SRCDIR");
	const struct upstream_conf *u;
	struct config_errors errs;
	struct config *cfg;
	char *path;
	size_t i;

	xasprintf(&path, "%s/conf/circuitproxy.ini",
	    dir != NULL && *dir != '\0' ? dir : CP_SRCDIR);
	cfg = config_load(path, &errs);
	for (i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.v[i].msg);
	ck_assert_msg(cfg != NULL, "%s does not load", path);
	/* Set for the tour, the status page and circuitproxyctl. */
	ck_assert(cfg->admin_enabled);
	ck_assert_str_eq(cfg->admin.text, "127.0.0.1:9901");
	ck_assert_int_eq(addr_is_local(&cfg->admin), 1);
	ck_assert_uint_eq(cfg->workers, 1);
	ck_assert_uint_eq(cfg->nupstreams, 1);
	u = config_find_upstream(cfg, "demo");
	ck_assert_ptr_nonnull(u);
	ck_assert_uint_eq(u->nlisten, 1);
	ck_assert_str_eq(u->listen[0].text, "127.0.0.1:8080");
	ck_assert_int_eq(addr_is_local(&u->listen[0]), 1);
	ck_assert_str_eq(u->server.text, "127.0.0.1:9090");
	ck_assert_uint_eq(u->breaker.recovery_timeout_ms, 10000);
	ck_assert_uint_eq(u->breaker.failure_threshold, 5);
	ck_assert_uint_eq(u->connect_timeout_ms, 5000);
	config_free(cfg);
	free(path);
}
END_TEST

/* Build the suite: one loop test per table. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_ROWS("values", test_duration, duration_rows),
		UNIT_ROWS("values", test_format_duration, format_duration_rows),
		UNIT_ROWS("values", test_percent, percent_rows),
		UNIT_ROWS("values", test_bool, bool_rows),

		UNIT_ROWS("addresses", test_addr_good, addr_good_rows),
		UNIT_ROWS("addresses", test_addr_bad, addr_bad_rows),
		UNIT_ROWS("addresses", test_overlap, overlap_rows),
		UNIT_ROWS("addresses", test_local, local_rows),
		UNIT_TEST("addresses", test_addr_format),
		UNIT_TEST("addresses", test_addr_resolve),

		UNIT_ROWS("load", test_good, good_rows),
		UNIT_ROWS("load", test_bad, bad_rows),
		UNIT_TEST("load", test_many_errors),
		UNIT_TEST("load", test_empty_upstream),
		UNIT_TEST("load", test_no_upstream),
		UNIT_TEST("load", test_long_line),
		UNIT_TEST("load", test_load_file),
		UNIT_ROWS("load", test_load_file_bad, bad_file_rows),
		UNIT_ROWS("load", test_cannot_open, unreadable_rows),
		UNIT_TEST("load", test_errors_unwanted),
		UNIT_TEST("load", test_defaults),
		UNIT_TEST("load", test_workers_auto),
		UNIT_TEST("load", test_find_upstream),
		UNIT_TEST("load", test_pool_good),
		UNIT_TEST("load", test_example_conf),
		UNIT_TEST("load", test_key_table_documented),

		UNIT_ROWS("table", test_key_table, key_rows),
		UNIT_TEST("table", test_dump),
		UNIT_TEST("table", test_dump_roundtrip),
	};

	return unit_suite_new("config", tests, UNIT_NROWS(tests));
}
