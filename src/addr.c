/*
 * Addresses, durations, percentages and booleans as an operator writes them
 * in the config, parsed into plain values. Pure C: no libevent. Causes of
 * errors are short allocated phrases that config.c puts after "KEY: ".
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "util.h"

#define ADDR_UNIX_PREFIX "unix:"

/* Fill a unix socket address from "unix:/path". */
static int
addr_parse_unix(const char *s, struct addr *a, char **cause)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&a->ss;
	const char *path = s + strlen(ADDR_UNIX_PREFIX);
	size_t len = strlen(path);

	if (len == 0) {
		xasprintf(cause, "invalid address '%s': empty socket path", s);
		return -1;
	}
	if (path[0] != '/') {
		xasprintf(cause,
		    "invalid address '%s': socket path must be "
		    "absolute",
		    s);
		return -1;
	}
	if (len >= sizeof(sun->sun_path)) {
		xasprintf(cause,
		    "invalid address '%s': socket path longer than %zu bytes",
		    s, sizeof(sun->sun_path) - 1);
		return -1;
	}
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, len + 1);
	a->family = AF_UNIX;
	a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	return 0;
}

/* Parse a decimal port 1..65535. */
static int
addr_parse_port(const char *p, in_port_t *port)
{
	unsigned long v = 0;
	size_t n;

	for (n = 0; p[n] != '\0'; n++) {
		if (!isdigit((unsigned char)p[n]) || n == 5)
			return -1;
		v = v * 10 + (unsigned long)(p[n] - '0');
	}
	if (n == 0 || v == 0 || v > 65535)
		return -1;
	*port = htons((in_port_t)v);
	return 0;
}

/* Does a host look like an IPv4 literal (digits and dots only)? */
static int
addr_looks_ipv4(const char *host)
{
	return host[strspn(host, "0123456789.")] == '\0';
}

/* Is this a host name as DNS writes it (letters, digits, '-', '_', '.')? */
static int
addr_valid_name(const char *host)
{
	size_t n = strlen(host);

	if (n == 0 || n > 253 || host[0] == '.' || host[0] == '-' ||
	    strstr(host, "..") != NULL)
		return 0;
	return strspn(host,
		   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "0123456789-_.") == n;
}

/*
 * Resolve a host (literal or name) into a->ss; the port is set later. With
 * ADDR_KEEP_NAME a name is kept for the resolver; with ADDR_NUMERIC it is an
 * error.
 */
static int
addr_resolve(const char *s, const char *host, int v6only, int flags,
    struct addr *a, char **cause)
{
	struct addrinfo hints, *res;
	int error;

	if (!v6only && addr_looks_ipv4(host)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			xasprintf(cause, "invalid IPv4 address in '%s'", s);
			return -1;
		}
		sin->sin_family = AF_INET;
		a->family = AF_INET;
		a->len = sizeof(*sin);
		return 0;
	}
	if (!v6only && (flags & (ADDR_KEEP_NAME | ADDR_NUMERIC))) {
		if (flags & ADDR_NUMERIC) {
			xasprintf(cause,
			    "invalid address '%s' (expected an IP address, "
			    "not a host name)",
			    s);
			return -1;
		}
		if (!addr_valid_name(host)) {
			xasprintf(cause, "invalid host name in '%s'", s);
			return -1;
		}
		a->name = 1;
		a->family = AF_UNSPEC;
		memcpy(a->host, host, strlen(host) + 1);
		return 0;
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = v6only ? AF_INET6 : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = v6only ? AI_NUMERICHOST : 0;
	error = getaddrinfo(host, NULL, &hints, &res);
	if (error != 0) {
		if (v6only)
			xasprintf(cause, "invalid IPv6 address in '%s'", s);
		else if (error == EAI_SYSTEM)
			xasprintf(cause, "cannot resolve '%s': %s", host,
			    strerror(errno));
		else
			xasprintf(cause, "cannot resolve '%s': %s", host,
			    gai_strerror(error));
		return -1;
	}
	if (res->ai_addrlen > sizeof(a->ss) ||
	    (res->ai_family != AF_INET && res->ai_family != AF_INET6)) {
		freeaddrinfo(res);
		xasprintf(cause, "cannot resolve '%s': no IPv4 or IPv6 address",
		    host);
		return -1;
	}
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->family = res->ai_family;
	a->len = (socklen_t)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/*
 * Split HOST:PORT or [IPv6]:PORT: the host, unbracketed, into host (at
 * least ADDR_TEXT_MAX bytes), *colon at the ':' before the port, *v6 set
 * for a bracketed host. 0, or -1 with *cause.
 */
static int
addr_split(const char *s, int flags, char *host, const char **colon, int *v6,
    char **cause)
{
	const char *end;
	size_t hlen;

	*v6 = s[0] == '[';
	if (*v6) {
		end = strchr(s, ']');
		if (end == NULL || end[1] != ':') {
			xasprintf(cause,
			    "invalid address '%s' (expected [IPv6]:PORT)", s);
			return -1;
		}
		*colon = end + 1;
		hlen = (size_t)(end - (s + 1));
		memcpy(host, s + 1, hlen);
	} else {
		*colon = strrchr(s, ':');
		if (*colon == NULL || *colon == s) {
			xasprintf(cause,
			    "invalid address '%s' (expected "
			    "%sHOST:PORT, [IPv6]:PORT or unix:/path)",
			    s, (flags & ADDR_ALLOW_WILDCARD) ? "*:PORT, " : "");
			return -1;
		}
		hlen = (size_t)(*colon - s);
		memcpy(host, s, hlen);
	}
	host[hlen] = '\0';
	if (!*v6 && strchr(host, ':') != NULL) {
		xasprintf(cause,
		    "invalid address '%s': write an IPv6 address "
		    "in brackets, as [::1]:PORT",
		    s);
		return -1;
	}
	return 0;
}

/* Make a "*:PORT" address 0.0.0.0, where the flags allow it. */
static int
addr_wildcard_set(const char *s, int flags, struct addr *a, char **cause)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

	if (!(flags & ADDR_ALLOW_WILDCARD)) {
		xasprintf(cause,
		    "invalid address '%s': '*' is only allowed in listen", s);
		return -1;
	}
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_ANY);
	a->family = AF_INET;
	a->len = sizeof(*sin);
	a->wildcard = 1;
	return 0;
}

/*
 * Parse HOST:PORT, [IPv6]:PORT, *:PORT (with ADDR_ALLOW_WILDCARD) or
 * unix:/path. Host names are resolved now; the first answer is kept.
 */
int
addr_parse(const char *s, int flags, struct addr *a, char **cause)
{
	char host[ADDR_TEXT_MAX];
	const char *colon;
	in_port_t port;
	int v6;

	memset(a, 0, sizeof(*a));
	*cause = NULL;
	if (strlen(s) >= sizeof(a->text)) {
		xasprintf(cause, "address longer than %zu characters",
		    sizeof(a->text) - 1);
		return -1;
	}
	memcpy(a->text, s, strlen(s) + 1);
	if (strncmp(s, ADDR_UNIX_PREFIX, strlen(ADDR_UNIX_PREFIX)) == 0)
		return addr_parse_unix(s, a, cause);
	if (addr_split(s, flags, host, &colon, &v6, cause) != 0)
		return -1;
	if (addr_parse_port(colon + 1, &port) != 0) {
		xasprintf(cause, "invalid port in '%s' (expected 1..65535)", s);
		return -1;
	}

	if (!v6 && strcmp(host, "*") == 0) {
		if (addr_wildcard_set(s, flags, a, cause) != 0)
			return -1;
	} else if (host[0] == '\0') {
		xasprintf(cause, "invalid address '%s': empty host", s);
		return -1;
	} else if (addr_resolve(s, host, v6, flags, a, cause) != 0)
		return -1;

	if (a->name) {
		a->port = ntohs(port);
		return 0;
	}
	if (a->family == AF_INET)
		((struct sockaddr_in *)&a->ss)->sin_port = port;
	else
		((struct sockaddr_in6 *)&a->ss)->sin6_port = port;
	return 0;
}

/* Set the port (host order) of an IPv4 or IPv6 address. */
void
addr_set_port(struct addr *a, uint16_t port)
{
	if (a->family == AF_INET)
		((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
	else if (a->family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
}

/*
 * Parse a DNS server: IP:PORT, [IPv6]:PORT, or an IP alone (port 53), as
 * the resolver key lists them. Host names are refused.
 */
int
addr_parse_nameserver(const char *s, struct addr *a, char **cause)
{
	char buf[ADDR_TEXT_MAX + 8];
	const char *colon = strrchr(s, ':');

	if (strlen(s) >= ADDR_TEXT_MAX) {
		xasprintf(cause, "address longer than %d characters",
		    ADDR_TEXT_MAX - 1);
		return -1;
	}
	if (strncmp(s, ADDR_UNIX_PREFIX, strlen(ADDR_UNIX_PREFIX)) == 0) {
		xasprintf(cause,
		    "invalid address '%s' (expected IP[:PORT] or "
		    "[IPv6][:PORT])",
		    s);
		return -1;
	}
	if (colon == NULL)
		snprintf(buf, sizeof(buf), "%s:53", s);
	else if (s[0] == '[' && s[strlen(s) - 1] == ']')
		snprintf(buf, sizeof(buf), "%s:53", s);
	else if (s[0] != '[' && strchr(s, ':') != colon)
		snprintf(buf, sizeof(buf), "[%s]:53", s);
	else
		snprintf(buf, sizeof(buf), "%s", s);
	return addr_parse(buf, ADDR_NUMERIC, a, cause);
}

/* Is this address the IPv4 or IPv6 "any" address? */
static int
addr_is_any(const struct addr *a)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;

	if (a->wildcard)
		return 1;
	if (a->family == AF_INET)
		return sin->sin_addr.s_addr == htonl(INADDR_ANY);
	if (a->family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
	return 0;
}

/* Return the port of an IPv4 or IPv6 address, in host order. */
static unsigned
addr_port(const struct addr *a)
{
	if (a->family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

/*
 * Do two listen addresses collide? The same unix path, the same address and
 * port, or an "any" address ("*", 0.0.0.0, [::]) against any address of its
 * family on the same port.
 */
int
addr_overlap(const struct addr *a, const struct addr *b)
{
	const struct sockaddr_in *ain, *bin;
	const struct sockaddr_in6 *ain6, *bin6;

	if (a->family == AF_UNIX || b->family == AF_UNIX) {
		if (a->family != b->family)
			return 0;
		return strcmp(((const struct sockaddr_un *)&a->ss)->sun_path,
			   ((const struct sockaddr_un *)&b->ss)->sun_path) == 0;
	}
	if (addr_port(a) != addr_port(b))
		return 0;
	/* "*:P" is 0.0.0.0 and "[::]:P" IPv6 only (IPV6_V6ONLY): per family. */
	if (a->family != b->family)
		return 0;
	if (addr_is_any(a) || addr_is_any(b))
		return 1;
	if (a->family == AF_INET) {
		ain = (const struct sockaddr_in *)&a->ss;
		bin = (const struct sockaddr_in *)&b->ss;
		return ain->sin_addr.s_addr == bin->sin_addr.s_addr;
	}
	ain6 = (const struct sockaddr_in6 *)&a->ss;
	bin6 = (const struct sockaddr_in6 *)&b->ss;
	return IN6_ARE_ADDR_EQUAL(&ain6->sin6_addr, &bin6->sin6_addr) &&
	    ain6->sin6_scope_id == bin6->sin6_scope_id;
}

/* Are two addresses the same socket address (family, length and bytes)? */
bool
addr_same(const struct addr *a, const struct addr *b)
{
	return a->family == b->family && a->len == b->len &&
	    memcmp(&a->ss, &b->ss, b->len) == 0;
}

/* Do two TCP addresses want the same family and port? */
bool
addr_same_port(const struct addr *a, const struct addr *b)
{
	if (a->family != b->family ||
	    (a->family != AF_INET && a->family != AF_INET6))
		return false;
	return addr_port(a) == addr_port(b);
}

/* Is this a loopback address (127.0.0.0/8, ::1, ::ffff:127.x) or unix? */
int
addr_is_local(const struct addr *a)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;

	if (a->family == AF_UNIX)
		return 1;
	if (a->wildcard)
		return 0;
	if (a->family == AF_INET)
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	if (a->family == AF_INET6) {
		if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
		    sin6->sin6_addr.s6_addr[12] == 127;
	}
	return 0;
}

/* Is this one address of the host (not unix, not *, 0.0.0.0 or ::)? */
bool
addr_is_one(const struct addr *a)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;

	if (a->wildcard)
		return false;
	if (a->family == AF_INET)
		return sin->sin_addr.s_addr != htonl(INADDR_ANY);
	if (a->family == AF_INET6)
		return !IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
	return false;
}

/* Write v in decimal at p; returns the end. */
static char *
addr_put_uint(char *p, unsigned v)
{
	char digits[8], *d = digits + sizeof(digits);

	do
		*--d = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (d < digits + sizeof(digits))
		*p++ = *d++;
	return p;
}

/* Write "a.b.c.d:port" and its NUL at buf (22 bytes at most). */
static void
addr_format_in(const struct in_addr *in, unsigned port, char *buf)
{
	const uint8_t *b = (const uint8_t *)&in->s_addr;
	char *p = buf;
	int i;

	for (i = 0; i < 4; i++) {
		p = addr_put_uint(p, b[i]);
		*p++ = i < 3 ? '.' : ':';
	}
	p = addr_put_uint(p, port);
	*p = '\0';
}

/* Format a socket address as "127.0.0.1:5", "[::1]:5" or "unix:/path". */
const char *
addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t size)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
	size_t off = offsetof(struct sockaddr_un, sun_path), plen;
	char ip[INET6_ADDRSTRLEN];

	if (size == 0)
		return buf;
	if (sa == NULL || len < sizeof(sa_family_t)) {
		snprintf(buf, size, "unknown");
		return buf;
	}
	switch (sa->sa_family) {
	case AF_INET:
		if (len < sizeof(*sin))
			break;
		/* By hand, not printf: a busy proxy logs one per client. */
		addr_format_in(&sin->sin_addr, ntohs(sin->sin_port), ip);
		plen = strlen(ip);
		if (plen >= size)
			plen = size - 1;
		memcpy(buf, ip, plen);
		buf[plen] = '\0';
		return buf;
	case AF_INET6:
		if (len < sizeof(*sin6) ||
		    inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip)) ==
			NULL)
			break;
		snprintf(buf, size, "[%s]:%u", ip, ntohs(sin6->sin6_port));
		return buf;
	case AF_UNIX:
		/* An unnamed or abstract peer has no path to show. */
		if (len <= off || sun->sun_path[0] == '\0') {
			snprintf(buf, size, "unix");
			return buf;
		}
		plen = strnlen(sun->sun_path, len - off);
		snprintf(buf, size, "unix:%.*s", (int)plen, sun->sun_path);
		return buf;
	}
	snprintf(buf, size, "unknown");
	return buf;
}

/*
 * Parse a duration: digits, an optional fraction and a unit (ms, s, m, h;
 * none means seconds). Exact integer arithmetic; a result finer than a
 * millisecond is refused rather than rounded.
 */
int
parse_duration(const char *s, uint64_t *ms, char **cause)
{
	static const struct {
		const char *name;
		uint64_t ms;
	} units[] = {
		{ "ms", 1 },
		{ "s", 1000 },
		{ "m", 60 * 1000 },
		{ "h", 60 * 60 * 1000 },
		{ "", 1000 },
	};
	uint64_t whole = 0, frac = 0, scale = 1, unit = 0, fracms;
	const char *p = s;
	size_t i;

	*cause = NULL;
	if (!isdigit((unsigned char)*p))
		goto invalid;
	for (; isdigit((unsigned char)*p); p++) {
		if (whole > (UINT64_MAX - 9) / 10)
			goto toolong;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			goto invalid;
		for (; isdigit((unsigned char)*p); p++) {
			if (scale == 1000000000)
				goto invalid;
			frac = frac * 10 + (uint64_t)(*p - '0');
			scale *= 10;
		}
	}
	for (i = 0; i < CP_ARRAY_LEN(units); i++) {
		if (strcmp(p, units[i].name) == 0) {
			unit = units[i].ms;
			break;
		}
	}
	if (unit == 0)
		goto invalid;
	if ((frac * unit) % scale != 0) {
		xasprintf(cause, "invalid duration '%s': finer than 1ms", s);
		return -1;
	}
	fracms = frac * unit / scale;
	if (whole > (UINT64_MAX - fracms) / unit)
		goto toolong;
	*ms = whole * unit + fracms;
	return 0;

invalid:
	xasprintf(cause, "invalid duration '%s'", s);
	return -1;
toolong:
	xasprintf(cause, "duration '%s' is too long", s);
	return -1;
}

/* Format milliseconds in the largest unit that divides them exactly. */
const char *
format_duration(uint64_t ms, char *buf, size_t len)
{
	unsigned long long v = (unsigned long long)ms;

	if (v == 0)
		snprintf(buf, len, "0");
	else if (v % 3600000 == 0)
		snprintf(buf, len, "%lluh", v / 3600000);
	else if (v % 60000 == 0)
		snprintf(buf, len, "%llum", v / 60000);
	else if (v % 1000 == 0)
		snprintf(buf, len, "%llus", v / 1000);
	else
		snprintf(buf, len, "%llums", v);
	return buf;
}

/* Parse a percentage: "50", "12.5" or "50%", from 0 to 100. */
int
parse_percent(const char *s, double *out, char **cause)
{
	char num[32];
	size_t n, f;
	double v;

	*cause = NULL;
	n = strspn(s, "0123456789");
	if (n > 0 && s[n] == '.') {
		f = strspn(s + n + 1, "0123456789");
		n = f == 0 ? 0 : n + 1 + f;
	}
	if (n == 0 || n >= sizeof(num) ||
	    (s[n] != '\0' && strcmp(s + n, "%") != 0)) {
		xasprintf(cause, "invalid percentage '%s'", s);
		return -1;
	}
	memcpy(num, s, n);
	num[n] = '\0';
	v = strtod(num, NULL);
	if (v > 100) {
		xasprintf(cause, "'%s' out of range (0..100)", s);
		return -1;
	}
	*out = v;
	return 0;
}

/* Parse a boolean: yes/no, true/false, on/off or 1/0, in any case. */
int
parse_bool(const char *s, int *out, char **cause)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };
	size_t i;

	*cause = NULL;
	for (i = 0; i < CP_ARRAY_LEN(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	xasprintf(cause,
	    "invalid boolean '%s' (expected yes/no, true/false, "
	    "on/off or 1/0)",
	    s);
	return -1;
}
