/*
 * state_file: encode and decode the breaker states kept across a restart,
 * and read and write the file. The format, one upstream per line after a
 * version line, times as unix seconds with milliseconds:
 *
 *   circuitproxyd-state 1
 *   # NAME state= since= until= open= backoff=
 *   api state=open since=1764630000.123 until=1764630030.123 open=30.000 backoff=1
 *   db state=forced_open since=1764629000.000 until=none open=0.000 backoff=0
 *
 * since is when the state began, until when it ends on its own (none:
 * never), open the drawn length of the current opening, backoff the
 * failed half_open periods since the circuit last closed.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "state.h"
#include "util.h"

/* The fields of a line, each required once. */
enum state_field {
	STATE_F_STATE,
	STATE_F_SINCE,
	STATE_F_UNTIL,
	STATE_F_OPEN,
	STATE_F_BACKOFF,
	STATE_F_COUNT
};

/* Encode entries as of wall_ms: when a state began and when it ends. */
char *
state_encode(const struct state_entry *v, size_t n, uint64_t wall_ms)
{
	const struct breaker_saved *sv;
	char since[32], until[32], open[32];
	struct util_buf b = { 0 };
	size_t i;

	util_buf_printf(&b,
	    "%s %d\n# NAME state= since= until= open= backoff= "
	    "(unix seconds; rewritten by circuitproxyd)\n",
	    STATE_MAGIC, STATE_VERSION);
	for (i = 0; i < n; i++) {
		sv = &v[i].saved;
		util_fmt_secs(since, sizeof(since),
		    (int64_t)(wall_ms > sv->age_ms ? wall_ms - sv->age_ms : 0));
		util_fmt_secs(until, sizeof(until),
		    sv->remaining_ms < 0 ? -1
					 : (int64_t)wall_ms + sv->remaining_ms);
		util_fmt_secs(open, sizeof(open), (int64_t)sv->open_ms);
		util_buf_printf(&b,
		    "%s state=%s since=%s until=%s open=%s backoff=%u\n",
		    v[i].name, breaker_state_name(sv->state), since, until,
		    open, sv->backoff_steps);
	}
	return b.p;
}

/* Parse "S" or "S.mmm" (at most three decimals) as milliseconds. */
static int
state_parse_ms(const char *s, uint64_t *out)
{
	uint64_t v = 0, frac = 0;
	unsigned nint = 0, nfrac = 0;

	for (; *s >= '0' && *s <= '9'; s++) {
		if (++nint > 15)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (nint == 0)
		return -1;
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9'; s++) {
			if (++nfrac > 3)
				return -1;
			frac = frac * 10 + (uint64_t)(*s - '0');
		}
		if (nfrac == 0)
			return -1;
		for (; nfrac < 3; nfrac++)
			frac *= 10;
	}
	if (*s != '\0')
		return -1;
	*out = v * 1000 + frac;
	return 0;
}

/* When a state ends: a time, or none (never on its own). */
struct state_until {
	uint64_t ms;
	bool none;
};

/* What the fields of one line say, before they are checked together. */
struct state_line {
	bool seen[STATE_F_COUNT];
	enum breaker_state state;
	uint64_t since;
	struct state_until until;
	uint64_t open;
	uint64_t backoff;
};

/* Decode a breaker state's name (state=). */
static int
state_field_state(const char *val, void *field)
{
	return breaker_state_parse(val, field);
}

/* Decode seconds with at most three decimals (since=, open=). */
static int
state_field_ms(const char *val, void *field)
{
	return state_parse_ms(val, field);
}

/* Decode a time or none (until=). */
static int
state_field_until(const char *val, void *field)
{
	struct state_until *until = field;

	if (strcmp(val, "none") == 0) {
		until->none = true;
		return 0;
	}
	return state_parse_ms(val, &until->ms);
}

/* Decode a count of at most four digits (backoff=). */
static int
state_field_backoff(const char *val, void *field)
{
	if (val[0] == '\0' || strspn(val, "0123456789") != strlen(val) ||
	    strlen(val) > 4)
		return -1;
	*(uint64_t *)field = strtoull(val, NULL, 10);
	return 0;
}

/* Each field of a line: its name, its decoder, where it goes. */
/* clang-format off */
#define STATE_FIELD(f, decode) { #f, decode, offsetof(struct state_line, f) }
/* clang-format on */
static const struct state_field_row {
	const char *name;
	int (*decode)(const char *, void *);
	size_t off;
} state_fields[STATE_F_COUNT] = {
	[STATE_F_STATE] = STATE_FIELD(state, state_field_state),
	[STATE_F_SINCE] = STATE_FIELD(since, state_field_ms),
	[STATE_F_UNTIL] = STATE_FIELD(until, state_field_until),
	[STATE_F_OPEN] = STATE_FIELD(open, state_field_ms),
	[STATE_F_BACKOFF] = STATE_FIELD(backoff, state_field_backoff),
};
#undef STATE_FIELD

/* Decode the key=value fields after the name, each once, all of them. */
static int
state_decode_fields(char **save, const char *name, struct state_line *sl,
    char **cause)
{
	char *tok, *val;
	int f;

	while ((tok = strtok_r(NULL, " \t", save)) != NULL) {
		if ((val = strchr(tok, '=')) == NULL) {
			xasprintf(cause, "'%s' is not key=value", tok);
			return -1;
		}
		*val++ = '\0';
		for (f = 0; f < STATE_F_COUNT; f++)
			if (strcmp(tok, state_fields[f].name) == 0)
				break;
		if (f == STATE_F_COUNT) {
			xasprintf(cause, "unknown field '%s'", tok);
			return -1;
		}
		if (sl->seen[f]) {
			xasprintf(cause, "field '%s' given twice", tok);
			return -1;
		}
		sl->seen[f] = true;
		if (state_fields[f].decode(val,
			(char *)sl + state_fields[f].off) != 0) {
			xasprintf(cause, "upstream %s: bad %s '%s'", name,
			    state_fields[f].name, val);
			return -1;
		}
	}
	for (f = 0; f < STATE_F_COUNT; f++)
		if (!sl->seen[f]) {
			xasprintf(cause, "upstream %s: no %s=", name,
			    state_fields[f].name);
			return -1;
		}
	return 0;
}

/* Check the fields of a line against each other. */
static int
state_line_check(const char *name, const struct state_line *sl, char **cause)
{
	if (sl->state == BREAKER_OPEN && sl->until.none) {
		xasprintf(cause, "upstream %s: open with until=none", name);
		return -1;
	}
	if (!sl->until.none && sl->until.ms < sl->since) {
		xasprintf(cause, "upstream %s: until before since", name);
		return -1;
	}
	/* An opening lasts open= from since: a longer one was not ours. */
	if (sl->state == BREAKER_OPEN && sl->until.ms - sl->since > sl->open) {
		xasprintf(cause,
		    "upstream %s: until - since is longer than open=", name);
		return -1;
	}
	return 0;
}

/* Restore a breaker's saved state from a checked line, as of wall_ms. */
static void
state_line_restore(const struct state_line *sl, uint64_t wall_ms,
    struct breaker_saved *saved)
{
	uint64_t since = sl->since, until = sl->until.ms;

	saved->state = sl->state;
	saved->age_ms = wall_ms > since ? wall_ms - since : 0;
	/*
	 * What is left is never more than was given (SPEC 3): at most until -
	 * since (for an opening, at most open=), whatever the wall clock did
	 * between the write and now.
	 */
	if (sl->until.none)
		saved->remaining_ms = -1;
	else if (until <= wall_ms)
		saved->remaining_ms = 0;
	else if (until - wall_ms > until - since)
		saved->remaining_ms = (int64_t)(until - since);
	else
		saved->remaining_ms = (int64_t)(until - wall_ms);
	/* And what has passed is at most the whole less what is left. */
	if (!sl->until.none &&
	    saved->age_ms > until - since - (uint64_t)saved->remaining_ms)
		saved->age_ms = until - since - (uint64_t)saved->remaining_ms;
	saved->open_ms = sl->open;
	saved->backoff_steps = (unsigned)sl->backoff;
}

/* Decode one upstream's line (modified in place) as of wall_ms. */
static int
state_decode_line(char *line, uint64_t wall_ms, struct state_entry *e,
    char **cause)
{
	struct state_line sl;
	char *tok, *save = NULL;

	memset(e, 0, sizeof(*e));
	memset(&sl, 0, sizeof(sl));
	tok = strtok_r(line, " \t", &save);
	if (tok == NULL || !config_name_valid(tok)) {
		xasprintf(cause, "bad upstream name '%s'", tok ? tok : "");
		return -1;
	}
	snprintf(e->name, sizeof(e->name), "%s", tok);
	if (state_decode_fields(&save, e->name, &sl, cause) != 0 ||
	    state_line_check(e->name, &sl, cause) != 0)
		return -1;
	state_line_restore(&sl, wall_ms, &e->saved);
	return 0;
}

/* Check the version line: ours, another version, or not a state file. */
static int
state_decode_magic(const char *line, char **cause)
{
	size_t n = strlen(STATE_MAGIC);
	char want[64];

	snprintf(want, sizeof(want), "%s %d", STATE_MAGIC, STATE_VERSION);
	if (strcmp(line, want) == 0)
		return 0;
	if (strncmp(line, STATE_MAGIC, n) == 0 && line[n] == ' ')
		xasprintf(cause, "version '%.16s' is not %d", line + n + 1,
		    STATE_VERSION);
	else
		xasprintf(cause, "not a %s file", STATE_MAGIC);
	return -1;
}

/* Decode a whole file's text; all or nothing. */
int
state_decode(const char *text, size_t len, uint64_t wall_ms,
    struct state_entry **vp, size_t *np, char **cause)
{
	struct state_entry *v = NULL;
	size_t n = 0, lineno = 0, i;
	char *copy, *line, *next, *why = NULL;

	*vp = NULL;
	*np = 0;
	if (len == 0 || memchr(text, '\0', len) != NULL ||
	    text[len - 1] != '\n') {
		xasprintf(cause,
		    len == 0 ? "empty file"
			: memchr(text, '\0', len) != NULL
			? "NUL byte in the file"
			: "truncated (no newline at the end)");
		return -1;
	}
	copy = xmalloc(len + 1);
	memcpy(copy, text, len);
	copy[len] = '\0';
	for (line = copy; *line != '\0'; line = next) {
		next = strchr(line, '\n');
		*next++ = '\0';
		lineno++;
		if (lineno == 1) {
			if (state_decode_magic(line, &why) != 0)
				goto fail;
			continue;
		}
		if (line[strspn(line, " \t")] == '\0' || line[0] == '#')
			continue;
		v = xrealloc(v, (n + 1) * sizeof(*v));
		if (state_decode_line(line, wall_ms, &v[n], &why) != 0)
			goto fail;
		for (i = 0; i < n; i++)
			if (strcmp(v[i].name, v[n].name) == 0) {
				xasprintf(&why, "upstream %s listed twice",
				    v[n].name);
				goto fail;
			}
		n++;
	}
	free(copy);
	*vp = v;
	*np = n;
	return 0;

fail:
	xasprintf(cause, "line %zu: %s", lineno, why);
	free(why);
	free(copy);
	free(v);
	return -1;
}

/* Read the whole file (NUL-terminated), refusing all but a small file. */
int
state_read(const char *path, char **textp, size_t *lenp, char **cause)
{
	struct stat sb;
	size_t len = 0;
	ssize_t r;
	char *text;
	int fd;

	*textp = NULL;
	*lenp = 0;
	/* Non-blocking: a FIFO at the path is refused, not waited on. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) ==
	    -1) {
		if (errno == ENOENT)
			return 1;
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) ||
	    sb.st_size > STATE_SIZE_MAX) {
		xasprintf(cause, "%s: %s", path,
		    !S_ISREG(sb.st_mode) ? "not a regular file"
					 : "larger than 1 MiB");
		close(fd);
		return -1;
	}
	text = xmalloc((size_t)sb.st_size + 1);
	while (len <= (size_t)sb.st_size) {
		r = read(fd, text + len, (size_t)sb.st_size + 1 - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			xasprintf(cause, "%s: %s", path, strerror(errno));
			free(text);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (len > (size_t)sb.st_size) {
		xasprintf(cause, "%s: grew while read", path);
		free(text);
		return -1;
	}
	text[len] = '\0';
	*textp = text;
	*lenp = len;
	return 0;
}

/*
 * Keep a file the loader refused as PATH.bad, so the first write does not
 * replace what a newer version (or a person) may still want (SPEC 3).
 */
int
state_set_aside(const char *path, char **bad, char **cause)
{
	xasprintf(bad, "%s.bad", path);
	if (rename(path, *bad) == 0)
		return 0;
	xasprintf(cause, "rename to %s: %s", *bad, strerror(errno));
	free(*bad);
	*bad = NULL;
	return -1;
}

/* Write all of buf to fd. */
static int
state_write_all(int fd, const char *buf, size_t len)
{
	ssize_t r;

	while (len > 0) {
		r = write(fd, buf, len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -1;
		buf += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Flush the directory that holds path, so the rename survives a crash. */
static int
state_sync_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, rc;

	if (slash == NULL)
		dir = xstrdup(".");
	else if (slash == path)
		dir = xstrdup("/");
	else
		dir = strndup(path, (size_t)(slash - path));
	if (dir == NULL)
		fatalx("out of memory");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd == -1)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/*
 * Write PATH.tmp, fsync it, rename it over PATH, fsync the directory: a
 * reader sees the old file or the new one, never a part.
 */
int
state_write(const char *path, const char *text, char **cause)
{
	const char *step = "open";
	char *tmp;
	int fd, saved;

	xasprintf(&tmp, "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0644);
	if (fd == -1)
		goto fail;
	step = "write";
	if (state_write_all(fd, text, strlen(text)) != 0)
		goto fail;
	step = "fsync";
	if (fsync(fd) != 0)
		goto fail;
	step = "close";
	saved = close(fd);
	fd = -1;
	if (saved != 0)
		goto fail;
	step = "rename";
	if (rename(tmp, path) != 0)
		goto fail;
	free(tmp);
	if (state_sync_dir(path) != 0) {
		xasprintf(cause, "%s: fsync of its directory: %s", path,
		    strerror(errno));
		return -1;
	}
	return 0;

fail:
	saved = errno;
	xasprintf(cause, "%s: %s: %s", tmp, step, strerror(saved));
	if (fd != -1)
		close(fd);
	if (strcmp(step, "open") != 0)
		unlink(tmp);
	free(tmp);
	errno = saved;
	return -1;
}
