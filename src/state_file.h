/*
 * state_file at run time (SPEC.md 3): taken back at start, written on every
 * breaker change and at the stop. The text is made on the main thread; a
 * thread of its own writes it, so a slow disk delays no event loop.
 */
#ifndef CP_STATE_FILE_H
#define CP_STATE_FILE_H

#include <stddef.h>

#include <event2/event.h>

struct upstream;

/* The running upstreams, at the moment of the call (main thread). */
typedef struct upstream *const *(*state_file_upstreams_cb)(void *, size_t *);

struct state_file;

/* Start the writer for path: NULL with *cause if it cannot be started. */
struct state_file *state_file_new(struct event_base *, const char *path,
    state_file_upstreams_cb, void *, char **cause);
/* Take back the states in the file, at start (main thread). */
void state_file_load(struct state_file *);
/* A breaker or the set of upstreams changed: write soon (main thread). */
void state_file_changed(struct state_file *);
/* The last write, at the stop: made and waited for; the thread ends. */
void state_file_stop(struct state_file *);
/* Free it; a write in progress is finished first, one waiting is dropped. */
void state_file_free(struct state_file *);

#endif
