/*
 * state_file (SPEC.md 3): the breaker states kept across a restart. The
 * text format is encoded and decoded here without I/O (wall-clock time is
 * passed in), and written atomically: temporary file, fsync, rename, fsync
 * of the directory.
 */
#ifndef CP_STATE_H
#define CP_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"

/* The first line of every state file; another version is refused. */
#define STATE_MAGIC "circuitproxyd-state"
#define STATE_VERSION 1
/* A larger file is not ours. */
#define STATE_SIZE_MAX (1024 * 1024)

/* One upstream's line. */
struct state_entry {
	char name[UPSTREAM_NAME_MAX + 1];
	struct breaker_saved saved;
};

/* Encode entries as of wall-clock time wall_ms; returns a new string. */
char *state_encode(const struct state_entry *, size_t, uint64_t wall_ms);
/*
 * Decode a file's text as of wall_ms into a new array (free() it). On a bad
 * text returns -1 with *cause ("line N: ...") and no entries.
 */
int state_decode(const char *, size_t, uint64_t wall_ms, struct state_entry **,
    size_t *, char **cause);
/* Read a state file: 0 with *text (free() it), 1 if missing, -1 + *cause. */
int state_read(const char *path, char **text, size_t *len, char **cause);
/* Rename a rejected file to PATH.bad (a new string): 0, or -1 + *cause. */
int state_set_aside(const char *path, char **bad, char **cause);
/* Replace the file atomically with text: 0, or -1 + *cause. */
int state_write(const char *path, const char *text, char **cause);

#endif
