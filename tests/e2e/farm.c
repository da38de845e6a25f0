/*
 * The load side of the end-to-end tests: a backend farm in a child process
 * (one epoll loop for thousands of connections, a descriptor table of its
 * own, counters in shared memory, SIGKILL for a server that dies) and a
 * crowd of non-blocking clients driven together with epoll. Every wait
 * has a deadline; the farm dies with its test (PR_SET_PDEATHSIG) and is
 * killed by the fixture's teardown.
 */
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "farm.h"
#include "harness.h"

/* How many client connects are in flight at once. */
#define H_CROWD_INFLIGHT 256
/* The farm's chunk for reads and flood writes. */
#define H_FARM_CHUNK 65536

/* Counters the farm writes and the test reads. */
struct h_farm_shared {
	_Atomic bool up;    /* what the test wants: listening or refusing */
	_Atomic bool is_up; /* what the farm does now */
	_Atomic unsigned accepted;
	_Atomic unsigned active;
	_Atomic uint64_t sent;
};

struct h_farm {
	pid_t pid;
	struct sockaddr_in sin;
	enum h_farm_kind kind;
	char addr[64];
	struct h_farm_shared *sh;
};

/* One connection of the farm: bytes an echo could not send yet. */
struct h_farm_conn {
	char *pend;
	size_t off, len;
};

/* Raise the soft descriptor limit to the hard one; returns it. */
unsigned
h_nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur > 1u << 20 ? 1u << 20 : (unsigned)rl.rlim_cur;
}

/* Close a farm connection and count it gone. */
static void
h_farm_drop(struct h_farm *f, struct h_farm_conn *conns, int fd)
{
	close(fd);
	free(conns[fd].pend);
	memset(&conns[fd], 0, sizeof(conns[fd]));
	atomic_fetch_sub(&f->sh->active, 1);
}

/* Echo what a connection sends; false when it is to be closed. */
static bool
h_farm_echo(int ep, struct h_farm_conn *c, int fd, uint32_t events, char *buf)
{
	struct epoll_event ev;
	ssize_t n;

	if (c->len > 0 && (events & EPOLLOUT)) {
		n = send(fd, c->pend + c->off, c->len - c->off, MSG_NOSIGNAL);
		if (n == -1 && errno != EAGAIN)
			return false;
		if (n > 0)
			c->off += (size_t)n;
		if (c->off < c->len)
			return true;
		c->off = c->len = 0;
		ev.events = EPOLLIN | EPOLLRDHUP;
		ev.data.fd = fd;
		epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
		return true;
	}
	if (c->len > 0)
		return true;
	n = recv(fd, buf, H_FARM_CHUNK, 0);
	if (n == 0 || (n == -1 && errno != EAGAIN))
		return false;
	if (n == -1)
		return (events & (EPOLLERR | EPOLLHUP)) == 0;
	{
		ssize_t w = send(fd, buf, (size_t)n, MSG_NOSIGNAL);

		if (w == -1 && errno != EAGAIN)
			return false;
		if (w < 0)
			w = 0;
		if (w == n)
			return true;
		c->pend = realloc(c->pend, (size_t)(n - w));
		if (c->pend == NULL)
			abort();
		memcpy(c->pend, buf + w, (size_t)(n - w));
		c->off = 0;
		c->len = (size_t)(n - w);
		ev.events = EPOLLOUT;
		ev.data.fd = fd;
		epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
	}
	return true;
}

/* Send to a flooding connection until the kernel says stop. */
static bool
h_farm_flood(struct h_farm *f, int fd, uint32_t events, char *buf)
{
	ssize_t n;

	if (events & (EPOLLIN | EPOLLRDHUP)) {
		while ((n = recv(fd, buf, H_FARM_CHUNK, 0)) > 0)
			;
		if (n == 0 || errno != EAGAIN)
			return false;
	}
	if (events & EPOLLOUT) {
		while ((n = send(fd, buf, H_FARM_CHUNK, MSG_NOSIGNAL)) > 0)
			atomic_fetch_add(&f->sh->sent, (uint64_t)n);
		if (errno != EAGAIN)
			return false;
	}
	return (events & (EPOLLERR | EPOLLHUP)) == 0;
}

/* Listen on sin (its port 0: any), filling in the port; the fd or -1. */
static int
h_farm_listen(struct sockaddr_in *sin)
{
	socklen_t len = sizeof(*sin);
	int lfd, one = 1;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd == -1 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ==
		-1 ||
	    bind(lfd, (struct sockaddr *)sin, sizeof(*sin)) == -1 ||
	    getsockname(lfd, (struct sockaddr *)sin, &len) == -1 ||
	    listen(lfd, 4096) == -1) {
		if (lfd != -1)
			close(lfd);
		return -1;
	}
	return lfd;
}

/* The farm's child process: accept and serve until killed. */
static void __attribute__((noreturn))
h_farm_main(struct h_farm *f, int lfd, pid_t parent)
{
	struct epoll_event ev, evs[256];
	struct h_farm_conn *conns;
	unsigned limit;
	char *buf;
	int ep, i, n, fd;

#ifdef __linux__
	prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
	if (getppid() != parent)
		_exit(0);
	limit = h_nofile_raise();
	conns = calloc(limit, sizeof(*conns));
	buf = malloc(H_FARM_CHUNK);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (conns == NULL || buf == NULL || ep == -1)
		_exit(1);
	memset(buf, 'f', H_FARM_CHUNK);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		if (atomic_load(&f->sh->up) != atomic_load(&f->sh->is_up)) {
			if (lfd != -1) {
				close(lfd);
				lfd = -1;
			} else if ((lfd = h_farm_listen(&f->sin)) == -1)
				_exit(1);
			else {
				ev.events = EPOLLIN;
				ev.data.fd = lfd;
				epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
			}
			atomic_store(&f->sh->is_up, lfd != -1);
		}
		n = epoll_wait(ep, evs, 256, 10);
		for (i = 0; i < n; i++) {
			fd = evs[i].data.fd;
			if (fd == lfd && lfd != -1) {
				while (
				    (fd = accept4(lfd, NULL, NULL,
					 SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					if ((unsigned)fd >= limit) {
						close(fd);
						continue;
					}
					atomic_fetch_add(&f->sh->accepted, 1);
					atomic_fetch_add(&f->sh->active, 1);
					ev.data.fd = fd;
					if (f->kind == H_FARM_ECHO)
						ev.events =
						    EPOLLIN | EPOLLRDHUP;
					else if (f->kind == H_FARM_STALL)
						ev.events =
						    EPOLLRDHUP | EPOLLET;
					else
						ev.events = EPOLLIN | EPOLLOUT |
						    EPOLLRDHUP;
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			if ((f->kind == H_FARM_ECHO &&
				!h_farm_echo(ep, &conns[fd], fd, evs[i].events,
				    buf)) ||
			    (f->kind == H_FARM_STALL &&
				(evs[i].events &
				    (EPOLLRDHUP | EPOLLERR | EPOLLHUP))) ||
			    (f->kind == H_FARM_FLOOD &&
				!h_farm_flood(f, fd, evs[i].events, buf)))
				h_farm_drop(f, conns, fd);
		}
	}
}

/* Kill the farm if it still runs (the fixture's teardown). */
static void
h_farm_cleanup(void *arg)
{
	h_farm_kill(arg);
	munmap(((struct h_farm *)arg)->sh, sizeof(struct h_farm_shared));
}

/* Start a farm of the given kind on a free 127.0.0.1 port. */
struct h_farm *
h_farm_start(enum h_farm_kind kind)
{
	struct h_farm *f = calloc(1, sizeof(*f));
	pid_t parent = getpid();
	int lfd;

	if (f == NULL)
		abort();
	f->kind = kind;
	f->sh = mmap(NULL, sizeof(*f->sh), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (f->sh == MAP_FAILED)
		h_fail(H_WHERE, "mmap: %s", strerror(errno));
	f->sin.sin_family = AF_INET;
	f->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = h_farm_listen(&f->sin)) == -1)
		h_fail(H_WHERE, "farm listener: %s", strerror(errno));
	snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u",
	    ntohs(f->sin.sin_port));
	atomic_store(&f->sh->up, true);
	atomic_store(&f->sh->is_up, true);
	f->pid = fork();
	if (f->pid == -1)
		h_fail(H_WHERE, "fork: %s", strerror(errno));
	if (f->pid == 0)
		h_farm_main(f, lfd, parent);
	close(lfd);
	h_defer(h_farm_cleanup, f);
	return f;
}

/* The farm's address, "127.0.0.1:PORT". */
const char *
h_farm_addr(const struct h_farm *f)
{
	return f->addr;
}

/* Connections the farm accepted so far. */
unsigned
h_farm_accepted(const struct h_farm *f)
{
	return atomic_load(&f->sh->accepted);
}

/* Connections the farm holds open now. */
unsigned
h_farm_active(const struct h_farm *f)
{
	return atomic_load(&f->sh->active);
}

/* Bytes a flooding farm has handed to the kernel so far. */
uint64_t
h_farm_bytes_sent(const struct h_farm *f)
{
	return atomic_load(&f->sh->sent);
}

/* Wait until the farm holds exactly n connections; false at the deadline. */
bool
h_farm_wait_active(struct h_farm *f, unsigned n, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;

	while (h_farm_active(f) != n) {
		if (h_now_ms() >= deadline)
			return false;
		usleep(2000);
	}
	return true;
}

/*
 * Listen again (up) or close the listener, so that connects are refused
 * (connections already made go on); returns once the farm has done it.
 */
void
h_farm_set_up(struct h_farm *f, bool up)
{
	uint64_t deadline = h_now_ms() + H_WAIT_MS;

	atomic_store(&f->sh->up, up);
	while (atomic_load(&f->sh->is_up) != up) {
		if (h_now_ms() >= deadline)
			h_fail(H_WHERE, "the farm did not %s",
			    up ? "listen again" : "stop listening");
		usleep(1000);
	}
}

/* The server dies: SIGKILL, and reap it. */
void
h_farm_kill(struct h_farm *f)
{
	if (f->pid <= 0)
		return;
	kill(f->pid, SIGKILL);
	waitpid(f->pid, NULL, 0);
	f->pid = 0;
}

/* Close every client still open (the fixture's teardown). */
static void
h_crowd_cleanup(void *arg)
{
	struct h_crowd *c = arg;

	h_crowd_close(c, 0, c->n);
	free(c->fd);
	free(c);
}

/*
 * Connect n clients to addr, at most H_CROWD_INFLIGHT at a time, all within
 * ms. A client whose connect fails is -1 in the crowd.
 */
struct h_crowd *
h_crowd_connect(const char *addr, size_t n, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct h_crowd *c = calloc(1, sizeof(*c));
	struct epoll_event ev, evs[64];
	struct sockaddr_in sin;
	unsigned port;
	size_t next = 0, done = 0, inflight = 0;
	int ep, i, k, err;
	socklen_t elen;
	char host[64];

	if (c == NULL || (c->fd = malloc(n * sizeof(int))) == NULL)
		abort();
	c->n = n;
	for (next = 0; next < n; next++)
		c->fd[next] = -1;
	h_defer(h_crowd_cleanup, c);
	if (sscanf(addr, "%63[0-9.]:%u", host, &port) != 2)
		h_fail(H_WHERE, "a crowd connects to IPv4 only, not %s", addr);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sin.sin_addr);
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
		h_fail(H_WHERE, "epoll_create1: %s", strerror(errno));
	next = 0;
	while (done < n && h_now_ms() < deadline) {
		while (inflight < H_CROWD_INFLIGHT && next < n) {
			int fd = socket(AF_INET,
			    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

			if (fd == -1)
				h_fail(H_WHERE, "client %zu: socket: %s", next,
				    strerror(errno));
			c->fd[next] = fd;
			if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) ==
			    0) {
				next++;
				done++;
				continue;
			}
			if (errno != EINPROGRESS) {
				close(fd);
				c->fd[next++] = -1;
				done++;
				continue;
			}
			ev.events = EPOLLOUT;
			ev.data.u64 = next++;
			epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
			inflight++;
		}
		k = epoll_wait(ep, evs, 64, 100);
		for (i = 0; i < k; i++) {
			size_t j = evs[i].data.u64;

			err = 0;
			elen = sizeof(err);
			epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[j], NULL);
			getsockopt(c->fd[j], SOL_SOCKET, SO_ERROR, &err, &elen);
			if (err != 0) {
				close(c->fd[j]);
				c->fd[j] = -1;
			}
			inflight--;
			done++;
		}
	}
	close(ep);
	if (done < n)
		h_fail(H_WHERE,
		    "%zu of %zu clients connected to %s within %d ms", done, n,
		    addr, ms);
	return c;
}

/*
 * Send msg on every open client, then read it back from each, all within
 * ms. Returns how many got exactly msg back; a client that saw anything
 * else (EOF, reset, other bytes, nothing) is closed and becomes -1.
 */
size_t
h_crowd_echo(struct h_crowd *c, const char *msg, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	size_t len = strlen(msg), i, ok = 0, waiting = 0;
	struct epoll_event ev, evs[64];
	size_t *got = calloc(c->n, sizeof(size_t));
	char buf[256];
	int ep, k, j;

	if (got == NULL || len == 0 || len > sizeof(buf))
		abort();
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
		h_fail(H_WHERE, "epoll_create1: %s", strerror(errno));
	for (i = 0; i < c->n; i++) {
		if (c->fd[i] == -1)
			continue;
		if (send(c->fd[i], msg, len, MSG_NOSIGNAL) != (ssize_t)len) {
			h_close(c->fd[i]);
			c->fd[i] = -1;
			continue;
		}
		ev.events = EPOLLIN | EPOLLRDHUP;
		ev.data.u64 = i;
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[i], &ev);
		waiting++;
	}
	while (waiting > 0 && h_now_ms() < deadline) {
		k = epoll_wait(ep, evs, 64, 100);
		for (j = 0; j < k; j++) {
			ssize_t n;

			i = evs[j].data.u64;
			n = recv(c->fd[i], buf, len - got[i], 0);
			if (n == -1 && errno == EAGAIN)
				continue;
			if (n > 0 &&
			    memcmp(buf, msg + got[i], (size_t)n) == 0) {
				got[i] += (size_t)n;
				if (got[i] < len)
					continue;
				ok++;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[i], NULL);
			} else {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[i], NULL);
				h_close(c->fd[i]);
				c->fd[i] = -1;
			}
			waiting--;
		}
	}
	for (i = 0; i < c->n; i++)
		if (c->fd[i] != -1 && got[i] < len) {
			h_close(c->fd[i]);
			c->fd[i] = -1;
		}
	close(ep);
	free(got);
	return ok;
}

/* How many clients are still open. */
size_t
h_crowd_alive(const struct h_crowd *c)
{
	size_t i, n = 0;

	for (i = 0; i < c->n; i++)
		n += c->fd[i] != -1;
	return n;
}

/*
 * Wait until at least want open clients have seen their connection end
 * (EOF or an error; bytes that arrive are read and dropped), within ms.
 * Those are closed and become -1. Returns how many ended.
 */
size_t
h_crowd_wait_closed(struct h_crowd *c, size_t want, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct epoll_event ev, evs[64];
	size_t i, ended = 0;
	char buf[4096];
	int ep, k, j;

	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
		h_fail(H_WHERE, "epoll_create1: %s", strerror(errno));
	for (i = 0; i < c->n; i++) {
		if (c->fd[i] == -1)
			continue;
		ev.events = EPOLLIN | EPOLLRDHUP;
		ev.data.u64 = i;
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[i], &ev);
	}
	while (ended < want && h_now_ms() < deadline) {
		k = epoll_wait(ep, evs, 64, 50);
		for (j = 0; j < k; j++) {
			ssize_t n;

			i = evs[j].data.u64;
			while ((n = recv(c->fd[i], buf, sizeof(buf), 0)) > 0)
				;
			if (n == -1 && errno == EAGAIN)
				continue;
			epoll_ctl(ep, EPOLL_CTL_DEL, c->fd[i], NULL);
			close(c->fd[i]);
			c->fd[i] = -1;
			ended++;
		}
	}
	close(ep);
	return ended;
}

/* Close clients from..to-1 (an orderly close; those gone are skipped). */
void
h_crowd_close(struct h_crowd *c, size_t from, size_t to)
{
	size_t i;

	for (i = from; i < to && i < c->n; i++)
		if (c->fd[i] != -1) {
			close(c->fd[i]);
			c->fd[i] = -1;
		}
}
