/*
 * connflood: a small epoll load generator for the proxy benchmark.
 *
 * flood mode keeps -c connects in flight against one loopback address and
 * times each from the connect() call to the moment the connection ends
 * (refused, reset or closed by the peer); it is how the benchmark measures
 * how fast a proxy turns clients away from a dead server.
 *
 * hold mode opens -n connections, optionally sends a request on each and
 * waits for the first byte of the answer (so every connection is known to be
 * relayed to the backend), prints one JSON line, then keeps them all open
 * until its stdin closes or -d seconds pass.
 *
 * Both modes are bounded by a count and a time, and refuse any address that
 * is not loopback. Results are one JSON object per line on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CF_MAX_EVENTS 256
#define CF_TICK_MS 10
#define CF_MAX_SAMPLES 20000000UL

enum cf_mode { CF_FLOOD, CF_HOLD };

enum cf_state { CF_FREE, CF_CONNECTING, CF_WAITING, CF_HELD };

/* One client connection, indexed by its file descriptor. */
struct cf_conn {
	enum cf_state state;
	uint64_t start_ns;
	size_t sent;
	size_t wrote; /* flood: bytes of the request written */
};

/* Everything one run needs: options, connection table and counters. */
struct cf {
	enum cf_mode mode;
	struct sockaddr_storage ss;
	socklen_t sslen;
	unsigned concurrency;
	unsigned long count;
	double duration;
	unsigned timeout_ms;
	const char *request;
	size_t request_len;

	int ep;
	struct cf_conn *conns;
	int nconns;
	unsigned inflight;
	unsigned long started;

	unsigned long refused, reset, fin, data, timeouts, errors, connected;
	unsigned long held, failed, dropped;

	uint32_t *samples;
	unsigned long nsamples, capsamples;
};

/* Monotonic time in nanoseconds. */
static uint64_t
cf_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Print usage and exit. */
static void
cf_usage(int status)
{
	fprintf(status == 0 ? stdout : stderr,
	    "usage: connflood [-m flood|hold] -a HOST:PORT [-c CONCURRENCY]\n"
	    "                 [-n COUNT] [-d SECONDS] [-t TIMEOUT_MS]"
	    " [-r REQUEST]\n"
	    "  flood: connect (send REQUEST), wait for refuse/reset/close,"
	    " repeat; report closes/s, p50/p99\n"
	    "  hold:  open COUNT connections (send REQUEST, wait for a reply"
	    " byte), print a line,\n"
	    "         keep them open until stdin closes or SECONDS pass\n"
	    "  HOST must be loopback (127.0.0.0/8 or ::1); REQUEST may use"
	    " \\r, \\n and \\xHH\n");
	exit(status);
}

/* Parse HOST:PORT or [V6]:PORT into a loopback socket address. */
static int
cf_parse_addr(struct cf *cf, const char *arg)
{
	char host[128];
	const char *colon, *h = arg;
	size_t hl;
	long port;
	char *end;

	colon = strrchr(arg, ':');
	if (colon == NULL)
		return -1;
	hl = (size_t)(colon - arg);
	if (hl >= 2 && arg[0] == '[' && arg[hl - 1] == ']') {
		h = arg + 1;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof host)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port < 1 || port > 65535)
		return -1;

	memset(&cf->ss, 0, sizeof cf->ss);
	struct sockaddr_in *sin = (struct sockaddr_in *)&cf->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&cf->ss;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127)
			return -2;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		cf->sslen = sizeof *sin;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return -2;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		cf->sslen = sizeof *sin6;
		return 0;
	}
	return -1;
}

/* Turn the escapes \r, \n, \\ and \xHH of a request into bytes. */
static char *
cf_unescape(const char *s, size_t *lenp)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (; *s != '\0'; s++) {
		if (s[0] == '\\' && s[1] == 'r') {
			*o++ = '\r';
			s++;
		} else if (s[0] == '\\' && s[1] == 'n') {
			*o++ = '\n';
			s++;
		} else if (s[0] == '\\' && s[1] == '\\') {
			*o++ = '\\';
			s++;
		} else if (s[0] == '\\' && s[1] == 'x' && isxdigit(s[2]) &&
		    isxdigit(s[3])) {
			char hex[3] = { s[2], s[3], '\0' };

			*o++ = (char)strtol(hex, NULL, 16);
			s += 3;
		} else
			*o++ = *s;
	}
	*o = '\0';
	*lenp = (size_t)(o - out);
	return out;
}

/* Record one connect-to-end time. */
static void
cf_sample(struct cf *cf, uint64_t ns)
{
	uint64_t us = ns / 1000;

	if (cf->nsamples == cf->capsamples) {
		unsigned long cap = cf->capsamples ? cf->capsamples * 2 : 65536;
		uint32_t *p;

		if (cap > CF_MAX_SAMPLES)
			cap = CF_MAX_SAMPLES;
		if (cap == cf->capsamples)
			return;
		p = realloc(cf->samples, cap * sizeof *p);
		if (p == NULL)
			return;
		cf->samples = p;
		cf->capsamples = cap;
	}
	cf->samples[cf->nsamples++] =
	    us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* Close a connection and forget it; abort it with RST if asked. */
static void
cf_conn_close(struct cf *cf, int fd, int abort_it)
{
	if (abort_it) {
		struct linger lg = { 1, 0 };

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	}
	close(fd); /* the only reference: this also leaves the epoll set */
	cf->conns[fd].state = CF_FREE;
	cf->inflight--;
}

/* Start one non-blocking connect; 0 on success, -1 when out of resources. */
static int
cf_conn_start(struct cf *cf)
{
	struct epoll_event ev;
	uint64_t t0;
	int fd, one = 1;

	fd = socket(cf->ss.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (fd >= cf->nconns) {
		close(fd);
		errno = EMFILE;
		return -1;
	}
	if (cf->mode == CF_HOLD)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	t0 = cf_now();
	cf->started++;
	if (connect(fd, (struct sockaddr *)&cf->ss, cf->sslen) == -1 &&
	    errno != EINPROGRESS) {
		int err = errno;

		close(fd);
		if (err == ECONNREFUSED) {
			cf->refused++;
			if (cf->mode == CF_FLOOD)
				cf_sample(cf, cf_now() - t0);
			else
				cf->failed++;
			return 0;
		}
		if (err == EADDRNOTAVAIL || err == EAGAIN || err == ENOBUFS) {
			cf->started--;
			errno = err;
			return -1;
		}
		cf->errors++;
		if (cf->mode == CF_HOLD)
			cf->failed++;
		return 0;
	}
	cf->conns[fd].state = CF_CONNECTING;
	cf->conns[fd].start_ns = t0;
	cf->conns[fd].sent = 0;
	cf->conns[fd].wrote = 0;
	memset(&ev, 0, sizeof ev);
	ev.data.fd = fd;
	ev.events = EPOLLIN | EPOLLRDHUP;
	if (cf->mode == CF_HOLD || cf->request_len != 0)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(cf->ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
		close(fd);
		cf->conns[fd].state = CF_FREE;
		cf->errors++;
		return 0;
	}
	cf->inflight++;
	return 0;
}

/* Handle an event on a flood connection: it ends on error, reset or EOF. */
static void
cf_flood_event(struct cf *cf, int fd, uint32_t events)
{
	struct cf_conn *c = &cf->conns[fd];
	char buf[4096];
	ssize_t n;
	int err = 0;
	socklen_t len = sizeof err;

	if (events & EPOLLERR) {
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err == ECONNREFUSED)
			cf->refused++;
		else if (err == ECONNRESET)
			cf->reset++;
		else
			cf->errors++;
		cf_sample(cf, cf_now() - c->start_ns);
		cf_conn_close(cf, fd, 0);
		return;
	}
	if ((events & EPOLLOUT) && c->wrote < cf->request_len) {
		/* Connected: send the request (-r), then only read. */
		struct epoll_event ev;

		n = write(fd, cf->request + c->wrote,
		    cf->request_len - c->wrote);
		if (n > 0)
			c->wrote += (size_t)n;
		if (c->wrote >= cf->request_len ||
		    (n == -1 && errno != EAGAIN)) {
			memset(&ev, 0, sizeof ev);
			ev.data.fd = fd;
			ev.events = EPOLLIN | EPOLLRDHUP;
			epoll_ctl(cf->ep, EPOLL_CTL_MOD, fd, &ev);
		}
	}
	for (;;) {
		n = read(fd, buf, sizeof buf);
		if (n > 0) {
			if (c->sent == 0)
				cf->data++;
			c->sent = 1;
			continue;
		}
		if (n == 0) {
			cf->fin++;
			break;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (!(events & (EPOLLHUP | EPOLLRDHUP)))
				return;
			cf->fin++;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET)
			cf->reset++;
		else if (errno == ECONNREFUSED)
			cf->refused++;
		else
			cf->errors++;
		break;
	}
	cf_sample(cf, cf_now() - c->start_ns);
	cf_conn_close(cf, fd, 0);
}

/* Handle an event on a hold connection: connect, send, wait, then hold. */
static void
cf_hold_event(struct cf *cf, int fd, uint32_t events)
{
	struct cf_conn *c = &cf->conns[fd];
	struct epoll_event ev;
	char buf[4096];
	ssize_t n;

	if (events & EPOLLERR) {
		if (c->state == CF_HELD)
			cf->dropped++;
		else
			cf->failed++;
		cf_conn_close(cf, fd, 0);
		return;
	}
	if (events & EPOLLOUT) {
		if (c->state == CF_CONNECTING) {
			c->state = CF_WAITING;
			cf->connected++;
			if (cf->request_len == 0) {
				c->state = CF_HELD;
				cf->held++;
			}
		}
		if (c->state == CF_WAITING && c->sent < cf->request_len) {
			n = write(fd, cf->request + c->sent,
			    cf->request_len - c->sent);
			if (n > 0)
				c->sent += (size_t)n;
			else if (n == -1 && errno != EAGAIN && errno != EINTR) {
				cf->failed++;
				cf_conn_close(cf, fd, 0);
				return;
			}
		}
		if (c->sent >= cf->request_len) {
			/* Nothing left to write: watch for the answer only. */
			memset(&ev, 0, sizeof ev);
			ev.data.fd = fd;
			ev.events = EPOLLIN | EPOLLRDHUP;
			epoll_ctl(cf->ep, EPOLL_CTL_MOD, fd, &ev);
		}
	}
	if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)))
		return;
	for (;;) {
		n = read(fd, buf, sizeof buf);
		if (n > 0) {
			if (c->state == CF_WAITING) {
				c->state = CF_HELD;
				cf->held++;
			}
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n == -1 && errno == EINTR)
			continue;
		break;
	}
	if (c->state == CF_HELD) {
		cf->held--;
		cf->dropped++;
	} else
		cf->failed++;
	cf_conn_close(cf, fd, 0);
}

/* Give up on connections older than the timeout (flood, or not yet held). */
static void
cf_expire(struct cf *cf, uint64_t now)
{
	uint64_t limit = (uint64_t)cf->timeout_ms * 1000000ULL;
	int fd;

	if (cf->timeout_ms == 0 || cf->inflight == 0)
		return;
	for (fd = 0; fd < cf->nconns; fd++) {
		struct cf_conn *c = &cf->conns[fd];

		if (c->state == CF_FREE || c->state == CF_HELD)
			continue;
		/* Started after now was read: not old, and no wrap-around. */
		if (c->start_ns >= now || now - c->start_ns < limit)
			continue;
		cf->timeouts++;
		if (cf->mode == CF_HOLD)
			cf->failed++;
		cf_conn_close(cf, fd, 1);
	}
}

/* Compare two samples for qsort. */
static int
cf_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of the sorted samples, nearest rank. */
static uint32_t
cf_quantile(const struct cf *cf, double q)
{
	unsigned long i;

	if (cf->nsamples == 0)
		return 0;
	i = (unsigned long)(q * (double)cf->nsamples);
	if (i >= cf->nsamples)
		i = cf->nsamples - 1;
	return cf->samples[i];
}

/* Wait for events for at most ms milliseconds and dispatch them. */
static void
cf_poll(struct cf *cf, int ms)
{
	struct epoll_event evs[CF_MAX_EVENTS];
	int i, n;

	n = epoll_wait(cf->ep, evs, CF_MAX_EVENTS, ms);
	for (i = 0; i < n; i++) {
		int fd = evs[i].data.fd;

		if (cf->conns[fd].state == CF_FREE)
			continue;
		if (cf->mode == CF_FLOOD)
			cf_flood_event(cf, fd, evs[i].events);
		else
			cf_hold_event(cf, fd, evs[i].events);
	}
}

/* Run flood mode and print its result line. */
static void
cf_run_flood(struct cf *cf)
{
	uint64_t t0 = cf_now(), deadline, now, last_expire = 0, elapsed;
	unsigned long closes;
	double secs;

	deadline = t0 + (uint64_t)(cf->duration * 1e9);
	for (;;) {
		now = cf_now();
		if (now >= deadline)
			break;
		while (
		    cf->inflight < cf->concurrency && cf->started < cf->count) {
			if (cf_conn_start(cf) == -1)
				break;
		}
		if (cf->inflight == 0 && cf->started >= cf->count)
			break;
		cf_poll(cf, CF_TICK_MS);
		now = cf_now();
		if (now - last_expire > 50000000ULL) {
			cf_expire(cf, now);
			last_expire = now;
		}
	}
	elapsed = cf_now() - t0;
	secs = (double)elapsed / 1e9;
	closes = cf->refused + cf->reset + cf->fin;
	qsort(cf->samples, cf->nsamples, sizeof *cf->samples, cf_cmp);
	printf("{\"mode\":\"flood\",\"elapsed_s\":%.3f,\"attempts\":%lu,"
	       "\"closes\":%lu,\"closes_per_s\":%.1f,\"refused\":%lu,"
	       "\"reset\":%lu,\"fin\":%lu,\"with_data\":%lu,\"timeouts\":%lu,"
	       "\"errors\":%lu,\"unfinished\":%u,\"p50_us\":%u,\"p90_us\":%u,"
	       "\"p99_us\":%u,\"max_us\":%u}\n",
	    secs, cf->started, closes, secs > 0 ? (double)closes / secs : 0.0,
	    cf->refused, cf->reset, cf->fin, cf->data, cf->timeouts, cf->errors,
	    cf->inflight, cf_quantile(cf, 0.50), cf_quantile(cf, 0.90),
	    cf_quantile(cf, 0.99), cf_quantile(cf, 1.0));
}

/* Run hold mode: open, report, hold until stdin closes or time runs out. */
static void
cf_run_hold(struct cf *cf)
{
	uint64_t t0 = cf_now(), deadline, now, last_expire = 0;
	struct epoll_event ev;
	double secs;
	int stdin_open = 1;

	deadline = t0 + (uint64_t)(cf->duration * 1e9);
	for (;;) {
		now = cf_now();
		if (now >= deadline)
			break;
		while (cf->inflight - cf->held < cf->concurrency &&
		    cf->started < cf->count) {
			if (cf_conn_start(cf) == -1)
				break;
		}
		if (cf->started >= cf->count && cf->inflight == cf->held)
			break;
		cf_poll(cf, CF_TICK_MS);
		now = cf_now();
		if (now - last_expire > 50000000ULL) {
			cf_expire(cf, now);
			last_expire = now;
		}
	}
	secs = (double)(cf_now() - t0) / 1e9;
	printf("{\"mode\":\"hold\",\"phase\":\"ready\",\"elapsed_s\":%.3f,"
	       "\"attempts\":%lu,\"connected\":%lu,\"held\":%lu,\"failed\":%lu,"
	       "\"timeouts\":%lu,\"refused\":%lu,\"errors\":%lu}\n",
	    secs, cf->started, cf->connected, cf->held, cf->failed,
	    cf->timeouts, cf->refused, cf->errors);
	fflush(stdout);

	memset(&ev, 0, sizeof ev);
	ev.data.fd = -1;
	ev.events = EPOLLIN;
	if (epoll_ctl(cf->ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == -1)
		stdin_open = 0;
	while (cf_now() < deadline) {
		struct epoll_event evs[CF_MAX_EVENTS];
		int i, n;

		n = epoll_wait(cf->ep, evs, CF_MAX_EVENTS, 100);
		for (i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == -1) {
				char b[256];

				if (read(STDIN_FILENO, b, sizeof b) <= 0)
					stdin_open = 0;
				continue;
			}
			if (cf->conns[fd].state != CF_FREE)
				cf_hold_event(cf, fd, evs[i].events);
		}
		if (!stdin_open)
			break;
	}
	printf("{\"mode\":\"hold\",\"phase\":\"done\",\"held\":%lu,"
	       "\"dropped\":%lu}\n",
	    cf->held, cf->dropped);
}

/* Parse the options, run one mode and print its result. */
int
main(int argc, char **argv)
{
	struct cf cf;
	struct rlimit rl;
	int ch, rc;
	char *end;

	memset(&cf, 0, sizeof cf);
	cf.mode = CF_FLOOD;
	cf.concurrency = 64;
	cf.count = 1000000;
	cf.duration = 5;
	cf.timeout_ms = 5000;

	while ((ch = getopt(argc, argv, "m:a:c:n:d:t:r:h")) != -1) {
		switch (ch) {
		case 'm':
			if (strcmp(optarg, "flood") == 0)
				cf.mode = CF_FLOOD;
			else if (strcmp(optarg, "hold") == 0)
				cf.mode = CF_HOLD;
			else
				cf_usage(64);
			break;
		case 'a':
			rc = cf_parse_addr(&cf, optarg);
			if (rc == -2) {
				fprintf(stderr,
				    "connflood: %s: not a loopback"
				    " address\n",
				    optarg);
				return 64;
			}
			if (rc != 0) {
				fprintf(stderr, "connflood: %s: bad address\n",
				    optarg);
				return 64;
			}
			break;
		case 'c':
			cf.concurrency = (unsigned)strtoul(optarg, &end, 10);
			if (*end != '\0' || cf.concurrency == 0 ||
			    cf.concurrency > 100000)
				cf_usage(64);
			break;
		case 'n':
			cf.count = strtoul(optarg, &end, 10);
			if (*end != '\0' || cf.count == 0 ||
			    cf.count > 100000000UL)
				cf_usage(64);
			break;
		case 'd':
			cf.duration = strtod(optarg, &end);
			if (*end != '\0' || !(cf.duration > 0) ||
			    cf.duration > 3600)
				cf_usage(64);
			break;
		case 't':
			cf.timeout_ms = (unsigned)strtoul(optarg, &end, 10);
			if (*end != '\0' || cf.timeout_ms > 600000)
				cf_usage(64);
			break;
		case 'r':
			cf.request = cf_unescape(optarg, &cf.request_len);
			if (cf.request == NULL)
				return 1;
			break;
		case 'h':
			cf_usage(0);
			break;
		default:
			cf_usage(64);
		}
	}
	if (cf.sslen == 0 || optind != argc)
		cf_usage(64);

	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur > 1048576)
		rl.rlim_cur = 1048576;
	cf.nconns = (int)rl.rlim_cur;
	if (cf.mode == CF_HOLD && cf.count + 16 > (unsigned long)cf.nconns) {
		fprintf(stderr,
		    "connflood: -n %lu needs more file descriptors"
		    " than RLIMIT_NOFILE (%d)\n",
		    cf.count, cf.nconns);
		return 1;
	}
	cf.conns = calloc((size_t)cf.nconns, sizeof *cf.conns);
	cf.ep = epoll_create1(EPOLL_CLOEXEC);
	if (cf.conns == NULL || cf.ep == -1) {
		perror("connflood");
		return 1;
	}
	if (cf.mode == CF_FLOOD)
		cf_run_flood(&cf);
	else
		cf_run_hold(&cf);
	return 0;
}
