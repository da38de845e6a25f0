/*
 * Service-manager notification: the sd_notify datagram protocol, spoken
 * here on one socket opened at start. A socket per message, as
 * sd_notify(3) opens, fails with EMFILE once clients have filled the
 * descriptor table, and the manager would then kill a daemon that is
 * merely busy for want of WATCHDOG=1 (SPEC 8). $NOTIFY_SOCKET names an
 * AF_UNIX path, or an abstract socket with a leading '@'. Built with
 * libsystemd (--with-systemd), sd_notify(3) is tried first, for whatever
 * address forms it knows beyond those, and this socket takes a message
 * that it could not send. (sd_notify sends on a blocking socket of its
 * own: that is the main thread waiting for PID 1 to read, never a worker.)
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "notify.h"

/* The socket and the manager's address; fd -1 when nobody listens. */
static int notify_fd = -1;
static struct sockaddr_un notify_sun;
static socklen_t notify_sunlen;

/*
 * Open the socket for $NOTIFY_SOCKET, if set: before the descriptor table
 * can fill. 0 when there is nothing to open; -1 with errno on a bad
 * address (EINVAL) or error.
 */
int
notify_open(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t plen;

	if (notify_fd != -1 || path == NULL || *path == '\0')
		return 0;
	plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') ||
	    plen >= sizeof(notify_sun.sun_path)) {
		errno = EINVAL;
		return -1;
	}
	memset(&notify_sun, 0, sizeof(notify_sun));
	notify_sun.sun_family = AF_UNIX;
	memcpy(notify_sun.sun_path, path, plen);
	if (path[0] == '@')
		notify_sun.sun_path[0] = '\0';
	notify_sunlen =
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
	/* Non-blocking: a stalled manager must not stall the main loop. */
	notify_fd =
	    socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	return notify_fd == -1 ? -1 : 0;
}

/* Send a notification if a service manager listens. */
int
notify_send(const char *msg)
{
	ssize_t n;

#ifdef HAVE_LIBSYSTEMD
	/* > 0 sent, 0 no manager; < 0 (EMFILE, say): our own socket. */
	if (sd_notify(0, msg) >= 0)
		return 0;
#endif
	if (notify_fd == -1)
		return getenv("NOTIFY_SOCKET") == NULL ? 0 : -1;
	do
		n = sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
		    (struct sockaddr *)&notify_sun, notify_sunlen);
	while (n == -1 && errno == EINTR);
	return n == -1 ? -1 : 0;
}

/* Format and send a notification. */
int
notify_sendf(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return notify_send(msg);
}

/* Return the watchdog interval the manager wants, in microseconds, or 0. */
uint64_t
notify_watchdog_usec(void)
{
	const char *s = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	unsigned long long v;
	char *end;
#ifdef HAVE_LIBSYSTEMD
	uint64_t usec;

	/* It checks WATCHDOG_PID and the value as the manager means them. */
	if (sd_watchdog_enabled(0, &usec) > 0)
		return usec;
#endif

	if (s == NULL)
		return 0;
	if (pid != NULL && strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return 0;
	return v;
}
