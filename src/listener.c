/*
 * One listening socket for one address of one upstream. Bound by the main
 * thread at start; each worker accepts from it with its own event. Running
 * out of file descriptors pauses that worker's accepts for a moment (the
 * clients wait in the backlog) and is logged at most once a second.
 * Sockets received from the service manager (LISTEN_FDS, socket
 * activation) are kept here and taken by the address they are bound to.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "listener.h"
#include "log.h"
#include "pool.h"
#include "upstream.h"
#include "util.h"

#define LISTENER_BACKLOG 4096
#define LISTENER_ACCEPT_BATCH 64
#define LISTENER_PAUSE_MS 100

/* The first descriptor the service manager passes (SD_LISTEN_FDS_START). */
#define LISTENER_FDS_START 3
#define LISTENER_RECEIVED_MAX 256

/*
 * A socket received from the service manager. It outlives the listeners
 * that take it: a reload that drops its address hands it back here, and
 * one that names it again takes it back; it is never shut down, so the
 * clients that arrive while the daemon restarts wait in its backlog.
 */
struct listener_received {
	int fd;
	struct addr addr; /* as bound (getsockname) */
	char name[64];	  /* from LISTEN_FDNAMES, or "unknown" */
	bool taken;
};

static struct listener_received *listener_received;
static size_t listener_nreceived;

/* The second of the last such line, shared by every worker. */
static _Atomic uint64_t listener_shortage_logged;
static _Atomic uint64_t listener_error_logged;

/* Is this the first line of its kind this second? */
static bool
listener_log_once_a_second(_Atomic uint64_t *last_second)
{
	uint64_t second = util_now_ms() / 1000, last;

	last = atomic_load(last_second);
	return last != second &&
	    atomic_compare_exchange_strong(last_second, &last, second);
}

/* Remove a stale unix socket file nobody listens on. */
static void
listener_unlink_stale(const struct addr *a)
{
	const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
	struct stat sb;
	int fd, rc;

	if (stat(sun->sun_path, &sb) != 0 || !S_ISSOCK(sb.st_mode))
		return;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return;
	rc = connect(fd, (const struct sockaddr *)&a->ss, a->len);
	close(fd);
	if (rc == -1 && errno == ECONNREFUSED)
		unlink(sun->sun_path);
}

/* Open one listening socket; reuseport shares the address with siblings. */
static int
listener_socket(const struct addr *a, bool reuseport, bool do_listen,
    char **cause)
{
	int fd, on = 1;

	fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		xasprintf(cause, "listen %s: socket: %s", a->text,
		    strerror(errno));
		return -1;
	}
	if (a->family != AF_UNIX) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		/* Small writes go out at once; accepted sockets inherit it. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	}
#ifdef SO_REUSEPORT
	if (reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) == -1) {
		xasprintf(cause, "listen %s: SO_REUSEPORT: %s", a->text,
		    strerror(errno));
		close(fd);
		return -1;
	}
#else
	(void)reuseport;
#endif
	if (a->family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1 ||
	    (do_listen && listen(fd, LISTENER_BACKLOG) == -1)) {
		xasprintf(cause, "listen %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Do a received socket's address and a config address name the same? */
static bool
listener_addr_equal(const struct addr *r, const struct addr *a)
{
	const struct sockaddr_un *x = (const struct sockaddr_un *)&r->ss,
				 *y = (const struct sockaddr_un *)&a->ss;
	const struct sockaddr_in *x4 = (const struct sockaddr_in *)&r->ss,
				 *y4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *x6 = (const struct sockaddr_in6 *)&r->ss,
				  *y6 = (const struct sockaddr_in6 *)&a->ss;

	if (r->family != a->family)
		return false;
	if (a->family == AF_UNIX)
		return strncmp(x->sun_path, y->sun_path, sizeof(x->sun_path)) ==
		    0;
	if (a->family == AF_INET)
		return x4->sin_port == y4->sin_port &&
		    x4->sin_addr.s_addr == y4->sin_addr.s_addr;
	return x6->sin6_port == y6->sin6_port &&
	    memcmp(&x6->sin6_addr, &y6->sin6_addr, sizeof(x6->sin6_addr)) == 0;
}

/*
 * The descriptors and names the service manager passed, if it passed any
 * to this process: *names is a colon-separated list or NULL. The variables
 * are removed, so that nothing started later takes them for its own.
 */
static int
listener_received_fds(char **names)
{
#ifdef HAVE_LIBSYSTEMD
	char **v = NULL;
	size_t i, len = 0;
	int n;

	*names = NULL;
	n = sd_listen_fds_with_names(1, &v);
	if (n <= 0 || v == NULL)
		return n < 0 ? 0 : n;
	for (i = 0; v[i] != NULL; i++)
		len += strlen(v[i]) + 1;
	*names = xcalloc(1, len + 1);
	for (i = 0; v[i] != NULL; i++) {
		if (i > 0)
			strcat(*names, ":");
		strcat(*names, v[i]);
		free(v[i]);
	}
	free(v);
	return n;
#else
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char *fdnames = getenv("LISTEN_FDNAMES");
	char *end;
	long n = 0;

	*names = NULL;
	if (pid != NULL && fds != NULL &&
	    strtol(pid, &end, 10) == (long)getpid() && *end == '\0') {
		n = strtol(fds, &end, 10);
		if (*end != '\0' || n < 0 || n > LISTENER_RECEIVED_MAX)
			n = 0;
		if (fdnames != NULL)
			*names = xstrdup(fdnames);
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)n;
#endif
}

/* Is this descriptor a listening stream socket we can take? */
static bool
listener_received_usable(int fd, struct addr *a)
{
	int type = 0, listening = 0, on = 1;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
	    type != SOCK_STREAM)
		return false;
	len = sizeof(listening);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == -1 ||
	    !listening)
		return false;
	memset(a, 0, sizeof(*a));
	a->len = sizeof(a->ss);
	if (getsockname(fd, (struct sockaddr *)&a->ss, &a->len) == -1)
		return false;
	a->family = a->ss.ss_family;
	if (a->family != AF_INET && a->family != AF_INET6 &&
	    a->family != AF_UNIX)
		return false;
	addr_format((struct sockaddr *)&a->ss, a->len, a->text,
	    sizeof(a->text));
	/* Accepts are batched: never block. Accepted sockets inherit it. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) == -1)
		return false;
	if (a->family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	return true;
}

/*
 * Take the sockets the service manager passed (socket activation), once,
 * at start. Each is logged; one that is not a listening stream socket is
 * closed at once. Returns how many are kept.
 */
size_t
listener_receive(void)
{
	char *names, *name, *save = NULL, q[ADDR_TEXT_MAX + 8], nq[80];
	struct listener_received *r;
	int i, n;

	n = listener_received_fds(&names);
	if (n <= 0) {
		free(names);
		return 0;
	}
	listener_received = xcalloc((size_t)n, sizeof(*listener_received));
	name = names != NULL ? strtok_r(names, ":", &save) : NULL;
	for (i = 0; i < n; i++) {
		r = &listener_received[listener_nreceived];
		r->fd = LISTENER_FDS_START + i;
		snprintf(r->name, sizeof(r->name), "%s",
		    name != NULL ? name : "unknown");
		if (name != NULL)
			name = strtok_r(NULL, ":", &save);
		if (!listener_received_usable(r->fd, &r->addr)) {
			log_warnx("event=socket_received fd=%d name=%s "
				  "error=\"not a listening stream socket: "
				  "closed\"",
			    r->fd, log_quote(nq, sizeof(nq), r->name));
			close(r->fd);
			continue;
		}
		log_info("event=socket_received fd=%d name=%s addr=%s", r->fd,
		    log_quote(nq, sizeof(nq), r->name),
		    log_quote(q, sizeof(q), r->addr.text));
		listener_nreceived++;
	}
	free(names);
	return listener_nreceived;
}

/*
 * Close the received sockets no listen address of the config took (at
 * start, once every listener is bound): nobody would accept from them.
 */
void
listener_receive_done(void)
{
	char q[ADDR_TEXT_MAX + 8], nq[80];
	size_t i;

	for (i = 0; i < listener_nreceived; i++) {
		if (listener_received[i].taken || listener_received[i].fd == -1)
			continue;
		log_warnx("event=socket_received fd=%d name=%s addr=%s "
			  "error=\"no listen address of the config names it: "
			  "closed\"",
		    listener_received[i].fd,
		    log_quote(nq, sizeof(nq), listener_received[i].name),
		    log_quote(q, sizeof(q), listener_received[i].addr.text));
		close(listener_received[i].fd);
		listener_received[i].fd = -1;
	}
}

/* Free what is left of the received sockets, at exit. */
void
listener_receive_free(void)
{
	size_t i;

	for (i = 0; i < listener_nreceived; i++)
		if (listener_received[i].fd != -1)
			close(listener_received[i].fd);
	free(listener_received);
	listener_received = NULL;
	listener_nreceived = 0;
}

/* The received socket bound to this address and still free, or NULL. */
static struct listener_received *
listener_received_find(const struct addr *a)
{
	size_t i;

	for (i = 0; i < listener_nreceived; i++)
		if (!listener_received[i].taken &&
		    listener_received[i].fd != -1 &&
		    listener_addr_equal(&listener_received[i].addr, a))
			return &listener_received[i];
	return NULL;
}

/* One plain listening socket (the admin endpoint's); -1 with *cause. */
int
listener_bind(const struct addr *a, char **cause)
{
	if (a->family == AF_UNIX)
		listener_unlink_stale(a);
	return listener_socket(a, false, true, cause);
}

/*
 * Bind and listen on an address. A TCP address gets one socket per worker
 * (SO_REUSEPORT): the kernel spreads new clients evenly over the workers,
 * and no worker wakes for a client another one takes. A unix path has one
 * socket, shared.
 */
struct listener *
listener_open(const struct addr *a, struct upstream *up, unsigned nworkers,
    char **cause)
{
	struct listener_received *r;
	struct listener *l;
	unsigned i, nfds = 1;
	int probe;

	if ((r = listener_received_find(a)) != NULL) {
		/* One socket, shared by every worker, as a unix path's. */
		r->taken = true;
		l = xcalloc(1, sizeof(*l));
		l->addr = *a;
		l->one_addr = addr_is_one(a);
		atomic_init(&l->up, up);
		l->received = r->name;
		l->fds = xcalloc(1, sizeof(*l->fds));
		l->fds[0] = r->fd;
		l->nfds = 1;
		l->nslots = nworkers;
		l->slots = xcalloc(nworkers, sizeof(*l->slots));
		return l;
	}
	if (a->family == AF_UNIX)
		listener_unlink_stale(a);
#ifdef SO_REUSEPORT
	if (a->family != AF_UNIX && nworkers > 1) {
		/*
		 * Sockets with SO_REUSEPORT would share the address with
		 * another process that has it too; a plain bind first makes
		 * an address in use an error, as it is for one worker.
		 */
		probe = listener_socket(a, false, false, cause);
		if (probe == -1)
			return NULL;
		close(probe);
		nfds = nworkers;
	}
#else
	(void)probe;
#endif
	l = xcalloc(1, sizeof(*l));
	l->addr = *a;
	l->one_addr = addr_is_one(a);
	atomic_init(&l->up, up);
	l->fds = xcalloc(nfds, sizeof(*l->fds));
	for (i = 0; i < nfds; i++) {
		l->fds[i] = listener_socket(a, nfds > 1, true, cause);
		if (l->fds[i] == -1) {
			while (i-- > 0)
				close(l->fds[i]);
			free(l->fds);
			free(l);
			return NULL;
		}
	}
	l->nfds = nfds;
	l->nslots = nworkers;
	l->slots = xcalloc(nworkers, sizeof(*l->slots));
	return l;
}

/* Re-arm accepts after a pause for a shortage of descriptors. */
static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener_slot *s = arg;

	(void)fd;
	(void)what;
	if (s->accept_ev != NULL)
		event_add(s->accept_ev, NULL);
}

/* "upstream=NAME" or "pool=NAME": whose clients the listener takes. */
static const char *
listener_owner(struct listener *l, char *buf, size_t len)
{
	struct pool *p = atomic_load(&l->pool);

	if (p != NULL)
		snprintf(buf, len, "pool=%s", p->name);
	else
		snprintf(buf, len, "upstream=%s", atomic_load(&l->up)->name);
	return buf;
}

/*
 * Hand the listener to an upstream or a pool. up is never cleared, and a
 * pool is cleared only after up is set: an accept that reads pool, then
 * up, always finds an owner.
 */
void
listener_set_owner(struct listener *l, struct upstream *up, struct pool *p)
{
	if (up != NULL)
		atomic_store(&l->up, up);
	atomic_store(&l->pool, p);
}

/* Pause a worker's accepts briefly: out of descriptors or memory, or shut. */
static void
listener_slot_pause(struct listener_slot *s, int error)
{
	char owner[UPSTREAM_NAME_MAX + 16];
	struct timeval tv;

	if (s->accept_ev == NULL)
		return;
	event_del(s->accept_ev);
	event_add(s->resume_ev, util_timeval(&tv, LISTENER_PAUSE_MS));
	if (error != EINVAL &&
	    listener_log_once_a_second(&listener_shortage_logged))
		log_errorx("event=accept_paused %s addr=%s error=%s "
			   "pause_ms=%d",
		    listener_owner(s->listener, owner, sizeof(owner)),
		    s->listener->addr.text, util_errno_name(error),
		    LISTENER_PAUSE_MS);
}

/* Log "event=EVENT upstream=NAME addr=ADDR" for a listener. */
void
listener_log(struct listener *l, const char *event)
{
	char addr[ADDR_TEXT_MAX + 8], name[80], owner[UPSTREAM_NAME_MAX + 16];

	listener_owner(l, owner, sizeof(owner));
	if (l->received != NULL)
		log_info("event=%s %s addr=%s socket=received name=%s", event,
		    owner, log_quote(addr, sizeof(addr), l->addr.text),
		    log_quote(name, sizeof(name), l->received));
	else
		log_info("event=%s %s addr=%s", event, owner,
		    log_quote(addr, sizeof(addr), l->addr.text));
}

/* Log an unexpected accept error, once a second at most. */
static void
listener_log_error(struct listener_slot *s, int error)
{
	char addr[ADDR_TEXT_MAX + 8], msg[128], owner[UPSTREAM_NAME_MAX + 16];

	if (!listener_log_once_a_second(&listener_error_logged))
		return;
	log_warnx("event=accept_error %s addr=%s error=%s",
	    listener_owner(s->listener, owner, sizeof(owner)),
	    log_quote(addr, sizeof(addr), s->listener->addr.text),
	    log_quote(msg, sizeof(msg), strerror(error)));
}

/* Accept what is waiting, up to a batch, and hand each client on. */
static void
listener_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener_slot *s = arg;
	struct sockaddr_storage ss;
	struct upstream *up;
	struct pool *p;
	socklen_t len;
	int cfd, i, error;

	(void)what;
	for (i = 0; i < LISTENER_ACCEPT_BATCH; i++) {
		len = sizeof(ss);
		cfd = accept4(fd, (struct sockaddr *)&ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1) {
			switch (errno) {
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
			/* A client's network error surfacing here: next one. */
			case ENETDOWN:
			case ENETUNREACH:
			case EHOSTDOWN:
			case EHOSTUNREACH:
			case ENOPROTOOPT:
			case EOPNOTSUPP:
				continue;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				listener_slot_pause(s, errno);
				return;
			case EAGAIN:
				return;
			case EINVAL:
				/*
				 * Shut by the main thread: the daemon is
				 * stopping, or a reload moves the port (and
				 * may listen again if it fails): look again
				 * later, until the worker lets go of it.
				 */
				listener_slot_pause(s, errno);
				return;
			default:
				listener_log_error(s, errno);
				return;
			}
		}
		p = atomic_load(&s->listener->pool);
		up = p != NULL ? NULL : atomic_load(&s->listener->up);
		error = s->accept(up, p, cfd, (struct sockaddr *)&ss, len,
		    s->listener->one_addr ? &s->listener->addr : NULL, s->arg);
		/* Out of descriptors for the server: wait in the backlog. */
		if (error != 0) {
			listener_slot_pause(s, error);
			return;
		}
	}
}

/* Create and arm a slot's accept event; cb is told of each client. */
void
listener_attach(struct listener *l, unsigned slot, struct event_base *base,
    listener_client_cb cb, void *arg)
{
	struct listener_slot *s = &l->slots[slot];

	s->listener = l;
	s->accept = cb;
	s->arg = arg;
	s->accept_ev = event_new(base, l->fds[slot % l->nfds],
	    EV_READ | EV_PERSIST, listener_accept_cb, s);
	s->resume_ev = evtimer_new(base, listener_resume_cb, s);
	if (s->accept_ev == NULL || s->resume_ev == NULL)
		fatalx("out of memory");
	event_add(s->accept_ev, NULL);
}

/* Stop a slot's accepts and free its events; runs in the slot's thread. */
void
listener_detach(struct listener *l, unsigned slot)
{
	struct listener_slot *s = &l->slots[slot];

	if (s->accept_ev != NULL)
		event_free(s->accept_ev);
	if (s->resume_ev != NULL)
		event_free(s->resume_ev);
	s->accept_ev = s->resume_ev = NULL;
}

/* Listen again after listener_shutdown(), for a reload rolled back. */
int
listener_relisten(struct listener *l, char **cause)
{
	unsigned i;

	for (i = 0; i < l->nfds; i++)
		if (l->fds[i] != -1 &&
		    listen(l->fds[i], LISTENER_BACKLOG) == -1) {
			xasprintf(cause, "listen %s again: %s", l->addr.text,
			    strerror(errno));
			return -1;
		}
	return 0;
}

/*
 * Refuse new clients at once. shutdown() does that without freeing the
 * descriptors, which workers may still be polling; they are closed when
 * the workers have let go. A received socket is left listening: the
 * service manager holds it too, and the clients that arrive meanwhile
 * wait in its backlog for the next process (the workers stop accepting).
 */
void
listener_shutdown(struct listener *l)
{
	unsigned i;

	if (l->received != NULL)
		return;
	for (i = 0; i < l->nfds; i++)
		if (l->fds[i] != -1)
			shutdown(l->fds[i], SHUT_RDWR);
}

/*
 * Close the sockets; a unix socket file is removed. A received socket is
 * handed back, open, for a later reload that names its address again.
 */
static void
listener_close(struct listener *l)
{
	unsigned i;
	size_t k;

	if (l->received != NULL) {
		for (k = 0; k < listener_nreceived; k++)
			if (listener_received[k].fd == l->fds[0])
				listener_received[k].taken = false;
		l->nfds = 0;
		return;
	}
	for (i = 0; i < l->nfds; i++) {
		if (l->fds[i] != -1)
			close(l->fds[i]);
		l->fds[i] = -1;
	}
	if (l->nfds > 0 && l->addr.family == AF_UNIX)
		unlink(((struct sockaddr_un *)&l->addr.ss)->sun_path);
	l->nfds = 0;
}

/* Free a listener whose workers have ended. */
void
listener_free(struct listener *l)
{
	unsigned i;

	if (l == NULL)
		return;
	listener_close(l);
	for (i = 0; i < l->nslots; i++) {
		if (l->slots[i].accept_ev != NULL)
			event_free(l->slots[i].accept_ev);
		if (l->slots[i].resume_ev != NULL)
			event_free(l->slots[i].resume_ev);
	}
	free(l->slots);
	free(l->fds);
	free(l);
}
