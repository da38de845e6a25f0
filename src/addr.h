/* Addresses, durations, percentages and booleans as written in the config. */
#ifndef CP_ADDR_H
#define CP_ADDR_H

#include <sys/socket.h>
#include <stdbool.h>
#include <stdint.h>

#define ADDR_TEXT_MAX 128

struct addr {
	char text
	    [ADDR_TEXT_MAX]; /* as written: "127.0.0.1:8080", "unix:/run/x" */
	int family;	     /* AF_INET, AF_INET6 or AF_UNIX */
	int wildcard;	     /* written as "*:PORT" (bound to 0.0.0.0) */
	int name;	     /* a host name left for the resolver (ss unset) */
	char host[ADDR_TEXT_MAX]; /* with name: the host part of text */
	uint16_t port;		  /* with name: the port, host order */
	socklen_t len;
	struct sockaddr_storage ss;
};

/* Flags for addr_parse. */
#define ADDR_ALLOW_WILDCARD 0x1 /* "*:PORT", for listeners */
#define ADDR_KEEP_NAME 0x2	/* a host name is kept, not resolved */
#define ADDR_NUMERIC 0x4	/* a host name is an error */

/*
 * Parse HOST:PORT, [IPv6]:PORT, *:PORT or unix:/path; host names are resolved
 * here unless a flag says otherwise. 0 on success, -1 with *cause (allocated)
 * on error.
 */
int addr_parse(const char *, int, struct addr *, char **);
/* Parse a DNS server as IP[:PORT] or [IPv6][:PORT] (port 53 if none). */
int addr_parse_nameserver(const char *, struct addr *, char **);
/* Set the port (host order) of an IPv4 or IPv6 address. */
void addr_set_port(struct addr *, uint16_t);
/* Do two listen addresses collide (same address, or "*:P" against any HOST:P)? */
int addr_overlap(const struct addr *, const struct addr *);
/* Are two addresses the same socket address (family, length and bytes)? */
bool addr_same(const struct addr *, const struct addr *);
/* Do two TCP addresses want the same family and port? */
bool addr_same_port(const struct addr *, const struct addr *);
/* Format a socket address as "127.0.0.1:5", "[::1]:5" or "unix:/path". */
const char *addr_format(const struct sockaddr *, socklen_t, char *, size_t);
/* Is this a loopback address (127.0.0.0/8, ::1) or a unix socket? */
int addr_is_local(const struct addr *);
/* Is this one address of the host (not unix, not *, 0.0.0.0 or ::)? */
bool addr_is_one(const struct addr *);

/* "250ms", "1.5s", "5m", "1h", bare seconds. Milliseconds out; 0 or -1+cause. */
int parse_duration(const char *, uint64_t *, char **);
/* Format milliseconds in the largest exact unit: "250ms", "30s", "10m", "0". */
const char *format_duration(uint64_t, char *, size_t);
/* "50", "12.5", "50%": 0..100. */
int parse_percent(const char *, double *, char **);
/* yes/no, true/false, on/off, 1/0. */
int parse_bool(const char *, int *, char **);

#endif
