/*
 * A worker's pool of pipes for splice(2): bounded, each pipe sized once
 * with F_SETPIPE_SZ, lent to a relay direction only while bytes move
 * through it and given back as soon as it is empty again.
 */
#ifndef CP_PIPE_H
#define CP_PIPE_H

#include <stdbool.h>
#include <stddef.h>

struct pipe_pool;

/* A pool of at most max pipes of size bytes each (max 0: never a pipe). */
struct pipe_pool *pipe_pool_new(unsigned max, size_t size);
/* Close every pipe the pool keeps and free it (none may be lent out). */
void pipe_pool_free(struct pipe_pool *);
/* Lend a pipe (fds[0] reads, fds[1] writes); false if none can be had. */
bool pipe_pool_get(struct pipe_pool *, int fds[2]);
/* Take a pipe back (fds set to -1); one still holding bytes is closed. */
void pipe_pool_put(struct pipe_pool *, int fds[2], bool empty);
/* Close the pipes kept for reuse (short of descriptors). */
void pipe_pool_trim(struct pipe_pool *);
/* What one pipe holds at most. */
size_t pipe_pool_size(const struct pipe_pool *);

#endif
