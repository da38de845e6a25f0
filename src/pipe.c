/*
 * The pipe pool. A relay direction that moves bulk bytes with splice(2)
 * borrows a pipe here and gives it back when the pipe is empty, so pipes
 * follow traffic, not connections. Pipes that come back empty are kept for
 * the next borrower, up to a few, while the worker has relays at all; the
 * pool never opens more than its bound. When the process is short of descriptors, no pipe is made for a
 * second and callers copy through user space meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "pipe.h"
#include "util.h"

/* Empty pipes kept for reuse at most. */
#define PIPE_POOL_KEEP 32
/* How long to make no pipe after a shortage of descriptors. */
#define PIPE_POOL_BACKOFF_MS 1000

struct pipe_pool {
	unsigned max;	   /* pipes open at most */
	unsigned nopen;	   /* lent out or kept */
	unsigned nkept;	   /* in kept[] */
	size_t size;	   /* asked of F_SETPIPE_SZ */
	uint64_t retry_ms; /* no pipe2() before this (after EMFILE) */
	int kept[PIPE_POOL_KEEP][2];
};

/* A pool of at most max pipes of size bytes each (max 0: never a pipe). */
struct pipe_pool *
pipe_pool_new(unsigned max, size_t size)
{
	struct pipe_pool *pp = xcalloc(1, sizeof(*pp));

	pp->max = max;
	pp->size = size;
	return pp;
}

/* Close the pipes kept for reuse (short of descriptors). */
void
pipe_pool_trim(struct pipe_pool *pp)
{
	while (pp->nkept > 0) {
		pp->nkept--;
		close(pp->kept[pp->nkept][0]);
		close(pp->kept[pp->nkept][1]);
		pp->nopen--;
	}
}

/* Close every pipe the pool keeps and free it (none may be lent out). */
void
pipe_pool_free(struct pipe_pool *pp)
{
	if (pp == NULL)
		return;
	pipe_pool_trim(pp);
	free(pp);
}

/* Lend a pipe (fds[0] reads, fds[1] writes); false if none can be had. */
bool
pipe_pool_get(struct pipe_pool *pp, int fds[2])
{
	if (pp->nkept > 0) {
		pp->nkept--;
		fds[0] = pp->kept[pp->nkept][0];
		fds[1] = pp->kept[pp->nkept][1];
		return true;
	}
	if (pp->nopen >= pp->max)
		return false;
	if (pp->retry_ms != 0) {
		if (util_now_ms() < pp->retry_ms)
			return false;
		pp->retry_ms = 0;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1) {
		/* EMFILE, ENFILE: the relay copies instead; try again later. */
		pp->retry_ms = util_now_ms() + PIPE_POOL_BACKOFF_MS;
		fds[0] = fds[1] = -1;
		return false;
	}
#ifdef F_SETPIPE_SZ
	/* A smaller pipe (pipe-max-size, a user's quota) still works. */
	(void)fcntl(fds[1], F_SETPIPE_SZ, (int)pp->size);
#endif
	pp->nopen++;
	return true;
}

/* Take a pipe back (fds set to -1); one still holding bytes is closed. */
void
pipe_pool_put(struct pipe_pool *pp, int fds[2], bool empty)
{
	if (fds[0] == -1)
		return;
	if (empty && pp->nkept < PIPE_POOL_KEEP) {
		pp->kept[pp->nkept][0] = fds[0];
		pp->kept[pp->nkept][1] = fds[1];
		pp->nkept++;
	} else {
		close(fds[0]);
		close(fds[1]);
		pp->nopen--;
	}
	fds[0] = fds[1] = -1;
}

/* What one pipe holds at most. */
size_t
pipe_pool_size(const struct pipe_pool *pp)
{
	return pp->size;
}
