/*
 * The configuration loader: an INI file read with inih into one immutable
 * struct config, built whole, validated, then handed out (SPEC.md section 3).
 *
 * It works in two passes. The first reads the text line by line through our
 * own inih reader, which counts lines, catches what inih would misread (an
 * over-long line, a stray character, a section header) and keeps every
 * key = value pair with its line. The second walks the pairs through the key
 * table below, which drives parsing, defaults and [defaults] inheritance,
 * then checks the rules that span keys and sections. Every error is kept
 * as "FILE:LINE: message" and all of them are returned, sorted by line.
 *
 * Pure C: no libevent.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define WORKERS_MAX 256
#define DURATION_MAX (7ULL * 24 * 3600 * 1000) /* 168h */
#define WINDOW_MS_MIN 1000ULL
#define WINDOW_MS_MAX (3600ULL * 1000)
#define COUNT_MAX 1000000ULL

/* clang-format off */
static const char *const config_log_targets[] = { "stderr", "syslog", NULL };
static const char *const config_probes[] = { "off", "connect", NULL };
static const char *const config_rejects[] = {
	"reset", "http503", "redis", "postgres", "mysql", NULL
};
static const char *const config_splices[] = { "auto", "off", NULL };
static const char *const config_balances[] = {
	"roundrobin", "leastconn", "first", NULL
};
static const char *const config_send_proxies[] = { "off", "v1", "v2", NULL };

#define G(f) offsetof(struct config, f)
#define U(f) offsetof(struct upstream_conf, f)
#define B(f) offsetof(struct upstream_conf, breaker.f)
#define P(f) offsetof(struct pool_conf, f)
/* A row's name, scope and type; the rest is named by designated fields. */
#define KEY(s, n, t) .name = (n), .scope = CONFIG_SCOPE_##s, .type = CONFIG_T_##t
#define RELOADABLE CONFIG_KEY_RELOADABLE
#define NO_DEFAULTS CONFIG_KEY_NO_DEFAULTS
#define REPEATABLE CONFIG_KEY_REPEATABLE
#define SECRET CONFIG_KEY_SECRET

/*
 * Every key of SPEC.md section 3, one row each. Defaults are written as in
 * the file; a field not named is 0 (no flags, no bounds) or NULL.
 */
static const struct config_key config_key_table[] = {
	{ KEY(GLOBAL, "log_level", ENUM), .flags = RELOADABLE, .def = "info",
	  .off = G(log_level), .names = log_level_names,
	  .help = "least severe level logged" },
	{ KEY(GLOBAL, "log_target", ENUM), .flags = RELOADABLE, .def = "stderr",
	  .off = G(log_target), .names = config_log_targets,
	  .help = "where log lines go" },
	{ KEY(GLOBAL, "workers", WORKERS), .min = 1, .max = WORKERS_MAX,
	  .def = "1", .off = G(workers), .off2 = G(workers_auto),
	  .help = "event-loop threads, or auto for one per CPU" },
	{ KEY(GLOBAL, "admin", ADMIN), .flags = RELOADABLE, .def = "",
	  .off = G(admin), .off2 = G(admin_enabled),
	  .help = "admin HTTP endpoint address; empty = off" },
	{ KEY(GLOBAL, "admin_token", STRING), .flags = RELOADABLE | SECRET,
	  .def = "", .off = G(admin_token),
	  .help = "bearer token every admin request but /health needs" },
	{ KEY(GLOBAL, "admin_token_file", STRING), .flags = RELOADABLE,
	  .def = "", .off = G(admin_token_file),
	  .help = "read admin_token from this file's first line" },
	{ KEY(GLOBAL, "shutdown_timeout", DURATION), .flags = RELOADABLE,
	  .max = DURATION_MAX, .def = "30s", .off = G(shutdown_timeout_ms),
	  .help = "how long a stop waits for open relays" },
	{ KEY(GLOBAL, "log_rejects_per_second", UINT), .flags = RELOADABLE,
	  .max = COUNT_MAX, .def = "10", .off = G(log_rejects_per_second),
	  .help = "reject lines per upstream per second; more are summed" },
	{ KEY(GLOBAL, "state_file", STRING), .def = "", .off = G(state_file),
	  .help = "where breaker states are kept across restarts" },
	{ KEY(GLOBAL, "resolver", RESOLVER), .flags = REPEATABLE, .def = "",
	  .off = G(resolver),
	  .help = "DNS servers for host names; empty = /etc/resolv.conf" },

	{ KEY(UPSTREAM, "listen", LISTEN),
	  .flags = RELOADABLE | NO_DEFAULTS | REPEATABLE, .off = U(listen),
	  .off2 = U(nlisten),
	  .help = "address clients connect to; repeatable" },
	{ KEY(UPSTREAM, "server", SERVER), .flags = RELOADABLE | NO_DEFAULTS,
	  .off = U(server),
	  .help = "the backend server address" },
	{ KEY(UPSTREAM, "backup", BACKUP), .flags = RELOADABLE | NO_DEFAULTS,
	  .off = U(backup),
	  .help = "upstream used while this circuit is open" },
	{ KEY(UPSTREAM, "connect_timeout", DURATION), .flags = RELOADABLE,
	  .min = 1, .max = DURATION_MAX, .def = "5s",
	  .off = U(connect_timeout_ms),
	  .help = "how long a connect to the server may take" },
	{ KEY(UPSTREAM, "idle_timeout", DURATION), .flags = RELOADABLE,
	  .max = DURATION_MAX, .def = "0", .off = U(idle_timeout_ms),
	  .help = "close a relay idle this long both ways; 0 = never" },
	{ KEY(UPSTREAM, "max_connections", UINT), .flags = RELOADABLE,
	  .max = COUNT_MAX, .def = "0", .off = U(max_connections),
	  .help = "open relays allowed at once; 0 = no limit" },
	{ KEY(UPSTREAM, "failure_threshold", UINT), .flags = RELOADABLE,
	  .max = COUNT_MAX, .def = "5", .off = B(failure_threshold),
	  .help = "consecutive failures that open the circuit; 0 = off" },
	{ KEY(UPSTREAM, "failure_rate_threshold", PERCENT), .flags = RELOADABLE,
	  .max = 100, .def = "0", .off = B(failure_rate_threshold),
	  .help = "percent of failures in the window that opens it; 0 = off" },
	{ KEY(UPSTREAM, "window", WINDOW), .flags = RELOADABLE, .min = 1,
	  .max = COUNT_MAX, .def = "20", .off = B(window_ms),
	  .off2 = B(window_calls),
	  .help = "sliding window: N attempts, or a duration" },
	{ KEY(UPSTREAM, "minimum_calls", UINT), .flags = RELOADABLE,
	  .max = COUNT_MAX, .def = "10", .off = B(minimum_calls),
	  .help = "attempts the window needs before the rate is judged" },
	{ KEY(UPSTREAM, "recovery_timeout", DURATION), .flags = RELOADABLE,
	  .min = 1, .max = DURATION_MAX, .def = "30s",
	  .off = B(recovery_timeout_ms),
	  .help = "how long open lasts before half_open" },
	{ KEY(UPSTREAM, "recovery_backoff", FACTOR), .flags = RELOADABLE,
	  .min = 1, .max = 100, .def = "1", .off = B(recovery_backoff),
	  .help = "factor on the open duration after each failed trial" },
	{ KEY(UPSTREAM, "recovery_timeout_max", DURATION), .flags = RELOADABLE,
	  .min = 1, .max = DURATION_MAX, .def = "10m",
	  .off = B(recovery_timeout_max_ms),
	  .help = "cap for the backoff" },
	{ KEY(UPSTREAM, "recovery_jitter", PERCENT), .flags = RELOADABLE,
	  .max = 100, .def = "0%", .off = B(recovery_jitter),
	  .help = "random spread on each open duration" },
	{ KEY(UPSTREAM, "half_open_max_calls", UINT), .flags = RELOADABLE,
	  .min = 1, .max = COUNT_MAX, .def = "3", .off = B(half_open_max_calls),
	  .help = "trial connections per half_open period" },
	{ KEY(UPSTREAM, "success_threshold", UINT), .flags = RELOADABLE,
	  .min = 1, .max = COUNT_MAX, .def = "2", .off = B(success_threshold),
	  .help = "trial successes that close the circuit" },
	{ KEY(UPSTREAM, "failure_on_early_close", BOOL), .flags = RELOADABLE,
	  .def = "no", .off = U(failure_on_early_close),
	  .help = "count a server that hangs up before its first byte" },
	{ KEY(UPSTREAM, "slow_connect", DURATION), .flags = RELOADABLE,
	  .max = DURATION_MAX, .def = "0", .off = U(slow_connect_ms),
	  .help = "a connect slower than this is a failure; 0 = off" },
	{ KEY(UPSTREAM, "reject", ENUM), .flags = RELOADABLE, .def = "reset",
	  .off = U(reject), .names = config_rejects,
	  .help = "how a turned-away client is told" },
	{ KEY(UPSTREAM, "recovery_probe", ENUM), .flags = RELOADABLE,
	  .def = "off", .off = B(recovery_probe), .names = config_probes,
	  .help = "off | connect: half_open is tried by the daemon's own connects" },
	{ KEY(UPSTREAM, "splice", ENUM), .flags = RELOADABLE, .def = "auto",
	  .off = U(splice), .names = config_splices,
	  .help = "bulk flows move through a pipe by splice(2)" },
	{ KEY(UPSTREAM, "dry_run", BOOL), .flags = RELOADABLE, .def = "no",
	  .off = B(dry_run),
	  .help = "run the breaker but never reject" },
	{ KEY(UPSTREAM, "log_connections", BOOL), .flags = RELOADABLE,
	  .def = "no", .off = U(log_connections),
	  .help = "one event=conn line per client when it ends" },
	{ KEY(UPSTREAM, "send_proxy", ENUM), .flags = RELOADABLE, .def = "off",
	  .off = U(send_proxy), .names = config_send_proxies,
	  .help = "off | v1 | v2: a PROXY protocol header starts each server connection" },
	{ KEY(UPSTREAM, "resolve_interval", DURATION), .flags = RELOADABLE,
	  .max = DURATION_MAX, .def = "30s", .off = U(resolve_interval_ms),
	  .help = "how often a host-name server is resolved again; 0 = at load" },

	{ KEY(POOL, "listen", LISTEN), .flags = RELOADABLE | REPEATABLE,
	  .off = P(listen), .off2 = P(nlisten),
	  .help = "address the pool's clients connect to; repeatable" },
	{ KEY(POOL, "members", MEMBERS), .flags = RELOADABLE, .off = P(members),
	  .off2 = P(nmembers),
	  .help = "upstream names, in order, a client may be given to" },
	{ KEY(POOL, "balance", ENUM), .flags = RELOADABLE, .def = "roundrobin",
	  .off = P(balance), .names = config_balances,
	  .help = "how a member is chosen among those that admit" },
	{ KEY(POOL, "retries", UINT), .flags = RELOADABLE,
	  .max = POOL_RETRIES_MAX, .def = "1", .off = P(retries),
	  .help = "other members a client whose connect failed is tried on" },
	{ KEY(POOL, "reject", ENUM), .flags = RELOADABLE, .def = "reset",
	  .off = P(reject), .names = config_rejects,
	  .help = "how a client no member admits is told" },
	{ KEY(POOL, "log_rejects_per_second", UINT), .flags = RELOADABLE,
	  .max = COUNT_MAX, .off = P(log_rejects_per_second),
	  .help = "the pool's reject lines per second; [global]'s unless set" },
	{ KEY(POOL, "log_connections", BOOL), .flags = RELOADABLE, .def = "no",
	  .off = P(log_connections),
	  .help = "one event=conn line per client of the pool's listeners" },
};
/* clang-format on */

#undef G
#undef U
#undef B
#undef P
#undef KEY
#undef RELOADABLE
#undef NO_DEFAULTS
#undef REPEATABLE
#undef SECRET

#define CONFIG_NKEYS CP_ARRAY_LEN(config_key_table)

enum config_section_kind {
	CONFIG_SECTION_GLOBAL,
	CONFIG_SECTION_DEFAULTS,
	CONFIG_SECTION_UPSTREAM,
	CONFIG_SECTION_POOL,
	CONFIG_SECTION_IGNORED, /* unknown or badly named: skipped */
};

/* One key = value line, kept from the first pass. */
struct config_pair {
	char *key;
	char *value;
	int line;
};

/* One section header and the pairs under it. */
struct config_section {
	enum config_section_kind kind;
	char name[UPSTREAM_NAME_MAX + 1];
	int line;
	int duplicate; /* an upstream or pool name seen before */
	struct config_pair *pairs;
	size_t npairs;
};

/* The first pass: the text, where the reader is, and what it found. */
struct config_parse {
	const char *path;
	const char *text;
	size_t len;
	size_t pos;
	int line;
	struct config_section *sections;
	size_t nsections;
	int current;		   /* section index, -1 before any */
	unsigned upstream_headers; /* "[upstream:...]" lines, good or bad */
	struct config_errors *errs;
};

/* What the second pass knows about one upstream beyond its conf. */
struct config_upinfo {
	int seen[CONFIG_NKEYS]; /* line each key was set on, 0 unset */
	int *listen_line;	/* line of each listen address */
	int backup_of;		/* another upstream names it as backup */
	int member_of;		/* a pool lists it in members */
};

/* What the second pass knows about one pool beyond its conf. */
struct config_poolinfo {
	int seen[CONFIG_NKEYS];
	int *listen_line;
};

/* Return the key table. */
const struct config_key *
config_keys(size_t *n)
{
	*n = CONFIG_NKEYS;
	return config_key_table;
}

/* Find a key by name, or NULL. */
const struct config_key *
config_key_find(const char *name)
{
	size_t i;

	for (i = 0; i < CONFIG_NKEYS; i++) {
		if (strcmp(config_key_table[i].name, name) == 0)
			return &config_key_table[i];
	}
	return NULL;
}

/* Find a key by name in one scope, or NULL. */
static const struct config_key *
config_key_find_scope(const char *name, enum config_scope scope)
{
	size_t i;

	for (i = 0; i < CONFIG_NKEYS; i++) {
		if (config_key_table[i].scope == scope &&
		    strcmp(config_key_table[i].name, name) == 0)
			return &config_key_table[i];
	}
	return NULL;
}

/* Add an error, as "FILE:LINE: message" or "FILE: message" at line 0. */
static void __attribute__((format(printf, 4, 5)))
config_error_add(struct config_errors *errs, const char *path, int line,
    const char *fmt, ...)
{
	struct config_error *e;
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatalx("out of memory");
	va_end(ap);
	errs->v = xrealloc(errs->v, (errs->n + 1) * sizeof(*errs->v));
	e = &errs->v[errs->n++];
	e->line = line;
	if (line > 0)
		xasprintf(&e->msg, "%s:%d: %s", path, line, msg);
	else
		xasprintf(&e->msg, "%s: %s", path, msg);
	free(msg);
}

/* Sort errors by line, keeping the order of those on the same line. */
static void
config_errors_sort(struct config_errors *errs)
{
	struct config_error e;
	size_t i, j;

	for (i = 1; i < errs->n; i++) {
		e = errs->v[i];
		for (j = i; j > 0 && errs->v[j - 1].line > e.line; j--)
			errs->v[j] = errs->v[j - 1];
		errs->v[j] = e;
	}
}

/* Free every error message and the list itself. */
void
config_errors_clear(struct config_errors *errs)
{
	size_t i;

	if (errs == NULL)
		return;
	for (i = 0; i < errs->n; i++)
		free(errs->v[i].msg);
	free(errs->v);
	errs->v = NULL;
	errs->n = 0;
}

/* Print each error on its own line. */
void
config_errors_print(const struct config_errors *errs, FILE *f)
{
	size_t i;

	for (i = 0; i < errs->n; i++)
		fprintf(f, "%s\n", errs->v[i].msg);
}

/* Is this a valid upstream name: [A-Za-z0-9_.-]{1,64}? */
bool
config_name_valid(const char *name)
{
	size_t n = strspn(name,
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_."
	    "-");

	return n >= 1 && n <= UPSTREAM_NAME_MAX && name[n] == '\0';
}

/*
 * Mark a new upstream or pool section a duplicate if its name is taken:
 * upstreams and pools share one namespace.
 */
static void
config_section_name_check(struct config_parse *cp, struct config_section *sec)
{
	const struct config_section *o;
	int pool = sec->kind == CONFIG_SECTION_POOL;
	size_t i;

	for (i = 0; i + 1 < cp->nsections; i++) {
		o = &cp->sections[i];
		if ((o->kind != CONFIG_SECTION_UPSTREAM &&
			o->kind != CONFIG_SECTION_POOL) ||
		    o->duplicate || strcmp(o->name, sec->name) != 0)
			continue;
		if (o->kind == sec->kind)
			config_error_add(cp->errs, cp->path, cp->line,
			    "duplicate %s '%s' (first defined on line %d)",
			    pool ? "pool" : "upstream", sec->name, o->line);
		else
			config_error_add(cp->errs, cp->path, cp->line,
			    "%s '%s': the name is taken by the %s on line %d "
			    "(upstreams and pools share one namespace)",
			    pool ? "pool" : "upstream", sec->name,
			    pool ? "upstream" : "pool", o->line);
		sec->duplicate = 1;
		return;
	}
}

/* Name an "upstream:NAME" or "pool:NAME" section, if the name is valid. */
static void
config_section_name_set(struct config_parse *cp, struct config_section *sec,
    const char *text)
{
	int pool = text[0] == 'p';
	const char *name = text + (pool ? 5 : 9);

	if (!pool)
		cp->upstream_headers++;
	if (!config_name_valid(name)) {
		config_error_add(cp->errs, cp->path, cp->line,
		    "invalid %s name '%s' (1 to 64 letters, digits, '_', '.' "
		    "or '-')",
		    pool ? "pool" : "upstream", name);
		return;
	}
	sec->kind = pool ? CONFIG_SECTION_POOL : CONFIG_SECTION_UPSTREAM;
	memcpy(sec->name, name, strlen(name) + 1);
	config_section_name_check(cp, sec);
}

/* Copy what is between '[' (at p) and close, trimmed, into text. */
static void
config_section_text(const char *p, const char *close, char *text, size_t size)
{
	size_t len;

	p++;
	while (p < close && isspace((unsigned char)*p))
		p++;
	len = (size_t)(close - p);
	if (len >= size)
		len = size - 1;
	while (len > 0 && isspace((unsigned char)p[len - 1]))
		len--;
	memcpy(text, p, len);
	text[len] = '\0';
}

/* Start a new section from a "[...]" line; p points at the '['. */
static void
config_parse_section(struct config_parse *cp, const char *p)
{
	struct config_section *sec;
	const char *close = strchr(p, ']'), *after;
	char text[256];

	cp->sections =
	    xrealloc(cp->sections, (cp->nsections + 1) * sizeof(*cp->sections));
	sec = &cp->sections[cp->nsections];
	memset(sec, 0, sizeof(*sec));
	sec->line = cp->line;
	sec->kind = CONFIG_SECTION_IGNORED;
	cp->current = (int)cp->nsections++;

	/* The keys under a header we cannot use are skipped, not reported. */
	if (close == NULL) {
		config_error_add(cp->errs, cp->path, cp->line,
		    "unterminated section header '%s'", p);
		return;
	}
	after = close + 1;
	while (isspace((unsigned char)*after))
		after++;
	if (*after != '\0' && *after != ';') {
		config_error_add(cp->errs, cp->path, cp->line,
		    "unexpected text after section header: '%s'", after);
	}
	config_section_text(p, close, text, sizeof(text));
	if (strcmp(text, "global") == 0)
		sec->kind = CONFIG_SECTION_GLOBAL;
	else if (strcmp(text, "defaults") == 0)
		sec->kind = CONFIG_SECTION_DEFAULTS;
	else if (strncmp(text, "upstream:", 9) == 0 ||
	    strncmp(text, "pool:", 5) == 0)
		config_section_name_set(cp, sec, text);
	else
		config_error_add(cp->errs, cp->path, cp->line,
		    "unknown section '[%s]' (expected [global], [defaults], "
		    "[upstream:NAME] or [pool:NAME])",
		    text);
}

/*
 * Check a "key = value" line before inih sees it: inih splits at the first
 * '=' or ':' and stops at an inline comment, so a key part holding either
 * would be misread. 0 if the line is fine.
 */
static int
config_check_pair(struct config_parse *cp, const char *p)
{
	const char *eq = strchr(p, '='), *k;

	if (eq != NULL) {
		for (k = p; k < eq; k++) {
			if (*k == ':' ||
			    (*k == ';' && k > p &&
				isspace((unsigned char)k[-1])))
				break;
		}
		if (k == eq && eq != p)
			return 0;
		if (eq == p) {
			config_error_add(cp->errs, cp->path, cp->line,
			    "missing key before '=': '%s'", p);
			return -1;
		}
	}
	config_error_add(cp->errs, cp->path, cp->line,
	    "expected 'key = value' or '[section]': '%s'", p);
	return -1;
}

/*
 * inih's reader: hand over one line per call, counting lines so the handler
 * knows where it is. Section headers are taken here (inih's own section
 * buffer would cut long upstream names short) and lines inih would misread
 * are reported and replaced by an empty line.
 */
static char *
config_read_line(char *str, int num, void *arg)
{
	struct config_parse *cp = arg;
	const char *start, *nl, *p;
	size_t len, max = (size_t)num - 1;

	if (cp->pos >= cp->len)
		return NULL;
	start = cp->text + cp->pos;
	nl = memchr(start, '\n', cp->len - cp->pos);
	len = nl != NULL ? (size_t)(nl - start) : cp->len - cp->pos;
	cp->pos += len + (nl != NULL);
	cp->line++;
	str[0] = '\0';

	if (len > 0 && start[len - 1] == '\r')
		len--;
	if (cp->line == 1 && len >= 3 &&
	    memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
		start += 3;
		len -= 3;
	}
	if (memchr(start, '\0', len) != NULL) {
		config_error_add(cp->errs, cp->path, cp->line,
		    "line contains a NUL byte");
		return str;
	}
	if (len > max) {
		config_error_add(cp->errs, cp->path, cp->line,
		    "line too long (max %zu characters)", max);
		return str;
	}
	memcpy(str, start, len);
	str[len] = '\0';
	while (len > 0 && isspace((unsigned char)str[len - 1]))
		str[--len] = '\0';

	for (p = str; isspace((unsigned char)*p); p++)
		;
	if (*p == '\0' || *p == ';' || *p == '#')
		return str;
	if (*p == '[') {
		config_parse_section(cp, p);
		str[0] = '\0';
		return str;
	}
	if (config_check_pair(cp, p) != 0)
		str[0] = '\0';
	return str;
}

/* inih's handler: keep the pair, with its line, in the current section. */
static int
config_ini_handler(void *arg, const char *section, const char *name,
    const char *value)
{
	struct config_parse *cp = arg;
	struct config_section *sec;
	struct config_pair *pair;

	(void)section;
	if (cp->current < 0) {
		config_error_add(cp->errs, cp->path, cp->line,
		    "key '%s' is outside of any section", name);
		return 1;
	}
	sec = &cp->sections[cp->current];
	if (sec->kind == CONFIG_SECTION_IGNORED)
		return 1;
	sec->pairs = xrealloc(sec->pairs, (sec->npairs + 1) * sizeof(*pair));
	pair = &sec->pairs[sec->npairs++];
	pair->key = xstrdup(name);
	pair->value = xstrdup(value);
	pair->line = cp->line;
	return 1;
}

/* Free what the first pass kept. */
static void
config_parse_free(struct config_parse *cp)
{
	size_t i, j;

	for (i = 0; i < cp->nsections; i++) {
		for (j = 0; j < cp->sections[i].npairs; j++) {
			free(cp->sections[i].pairs[j].key);
			free(cp->sections[i].pairs[j].value);
		}
		free(cp->sections[i].pairs);
	}
	free(cp->sections);
}

/* Format a bound of a key for a message. */
static const char *
config_bound_format(uint64_t v, int duration, char *buf, size_t len)
{
	if (duration)
		return format_duration(v, buf, len);
	snprintf(buf, len, "%llu", (unsigned long long)v);
	return buf;
}

/* Set *cause to "'VALUE' out of range (MIN..MAX)". */
static int
config_out_of_range(const char *value, uint64_t min, uint64_t max, int duration,
    char **cause)
{
	char lo[32], hi[32];

	xasprintf(cause, "'%s' out of range (%s..%s)", value,
	    config_bound_format(min, duration, lo, sizeof(lo)),
	    config_bound_format(max, duration, hi, sizeof(hi)));
	return -1;
}

/* Parse a whole decimal number with no sign; -2 if it overflows. */
static int
config_parse_uint(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	const char *p;

	if (*s == '\0')
		return -1;
	for (p = s; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		if (v > (UINT64_MAX - 9) / 10)
			return -2;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*out = v;
	return 0;
}

/* Parse a decimal number with an optional fraction ("1", "1.5"). */
static int
config_parse_factor(const char *s, double *out)
{
	size_t n = strspn(s, "0123456789"), f;

	if (n == 0 || n > 16)
		return -1;
	if (s[n] == '.') {
		f = strspn(s + n + 1, "0123456789");
		if (f == 0 || f > 16)
			return -1;
		n += 1 + f;
	}
	if (s[n] != '\0')
		return -1;
	*out = strtod(s, NULL);
	return 0;
}

/* Set *cause to "invalid value 'V' (expected a, b or c)". */
static int
config_enum_invalid(const struct config_key *k, const char *value, char **cause)
{
	char list[256];
	size_t i, o = 0;

	list[0] = '\0';
	for (i = 0; k->names[i] != NULL; i++) {
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
		    i == 0 ? "" : (k->names[i + 1] == NULL ? " or " : ", "),
		    k->names[i]);
		if (o >= sizeof(list))
			break;
	}
	xasprintf(cause, "invalid value '%s' (expected %s)", value, list);
	return -1;
}

/* Return the number of CPUs online, within 1..WORKERS_MAX. */
static unsigned
config_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	if (n > WORKERS_MAX)
		return WORKERS_MAX;
	return (unsigned)n;
}

/*
 * Parse window: a bare number (even "1.5", which is then refused) counts
 * attempts; a number with a unit is a duration.
 */
static int
config_window_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	unsigned *calls = (unsigned *)((char *)base + k->off2);
	uint64_t *ms = (uint64_t *)((char *)base + k->off);
	uint64_t u;
	int r;

	*cause = NULL;
	if (value[0] != '\0' && value[strspn(value, "0123456789.")] == '\0') {
		r = config_parse_uint(value, &u);
		if (r == 0 && u >= k->min && u <= k->max) {
			*calls = (unsigned)u;
			*ms = 0;
			return 0;
		}
		if (r != -1)
			return config_out_of_range(value, k->min, k->max, 0,
			    cause);
	} else if (parse_duration(value, &u, cause) == 0) {
		if (u < WINDOW_MS_MIN || u > WINDOW_MS_MAX)
			return config_out_of_range(value, WINDOW_MS_MIN,
			    WINDOW_MS_MAX, 1, cause);
		*calls = 0;
		*ms = u;
		return 0;
	}
	free(*cause);
	xasprintf(cause,
	    "invalid value '%s' (expected a number of attempts or a duration)",
	    value);
	return -1;
}

/* Set a pool's members from "a b c"; names are checked against upstreams later. */
static int
config_members_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	char ***mv = (char ***)((char *)base + k->off);
	size_t *mn = (size_t *)((char *)base + k->off2), len;
	const char *p = value, *end;

	while (*p != '\0') {
		while (isspace((unsigned char)*p) || *p == ',')
			p++;
		if (*p == '\0')
			break;
		for (end = p; *end != '\0' && !isspace((unsigned char)*end) &&
		     *end != ',';
		     end++)
			;
		len = (size_t)(end - p);
		if (*mn >= POOL_MEMBERS_MAX) {
			xasprintf(cause, "more than %d members",
			    POOL_MEMBERS_MAX);
			return -1;
		}
		*mv = xrealloc(*mv, (*mn + 1) * sizeof(**mv));
		(*mv)[*mn] = xmalloc(len + 1);
		memcpy((*mv)[*mn], p, len);
		(*mv)[(*mn)++][len] = '\0';
		p = end;
	}
	if (*mn == 0) {
		xasprintf(cause,
		    "no member named (at least one upstream name)");
		return -1;
	}
	return 0;
}

/*
 * Add the DNS servers of one resolver line (IP[:PORT], space-separated) to
 * the list; an empty line empties it.
 */
static int
config_resolver_add(char **list, const char *value, char **cause)
{
	char *copy, *tok, *save = NULL, *joined;
	struct addr a;

	if (value[strspn(value, " \t")] == '\0') {
		free(*list);
		*list = NULL;
		return 0;
	}
	copy = xstrdup(value);
	for (tok = strtok_r(copy, " \t", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t", &save)) {
		if (addr_parse_nameserver(tok, &a, cause) != 0) {
			free(copy);
			return -1;
		}
		if (*list == NULL)
			joined = xstrdup(a.text);
		else
			xasprintf(&joined, "%s %s", *list, a.text);
		free(*list);
		*list = joined;
	}
	free(copy);
	return 0;
}

/* The field a key's value lives in (off), or its companion (off2). */
#define CONFIG_FIELD(base, off, type) ((type *)((char *)(base) + (off)))
#define CONFIG_CFIELD(base, off, type) ((const type *)((base) + (off)))

/* Set a duration in milliseconds, within the key's bounds. */
static int
config_duration_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	uint64_t u;

	if (parse_duration(value, &u, cause) != 0)
		return -1;
	if (u < k->min || u > k->max)
		return config_out_of_range(value, k->min, k->max, 1, cause);
	*CONFIG_FIELD(base, k->off, uint64_t) = u;
	return 0;
}

/* Set a percentage, 0 to 100. */
static int
config_percent_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	double d;

	if (parse_percent(value, &d, cause) != 0)
		return -1;
	*CONFIG_FIELD(base, k->off, double) = d;
	return 0;
}

/* Set a factor ("1.5"), within the key's bounds. */
static int
config_factor_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	double d;

	if (config_parse_factor(value, &d) != 0) {
		xasprintf(cause, "invalid number '%s'", value);
		return -1;
	}
	if (d < (double)k->min || d > (double)k->max)
		return config_out_of_range(value, k->min, k->max, 0, cause);
	*CONFIG_FIELD(base, k->off, double) = d;
	return 0;
}

/* Set a boolean: yes/no, true/false, on/off, 1/0. */
static int
config_bool_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	int b;

	if (parse_bool(value, &b, cause) != 0)
		return -1;
	*CONFIG_FIELD(base, k->off, bool) = b;
	return 0;
}

/*
 * Parse a whole number within the key's bounds: 0, -1 with *cause when out
 * of range, or -2 when it is no number at all (the caller says what was
 * expected).
 */
static int
config_count_parse(const struct config_key *k, const char *value, unsigned *out,
    char **cause)
{
	uint64_t u;
	int r;

	r = config_parse_uint(value, &u);
	if (r == -1)
		return -2;
	if (r != 0 || u < k->min || u > k->max)
		return config_out_of_range(value, k->min, k->max, 0, cause);
	*out = (unsigned)u;
	return 0;
}

/* Set a whole number within the key's bounds. */
static int
config_uint_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	unsigned n;
	int r;

	r = config_count_parse(k, value, &n, cause);
	if (r == -2)
		xasprintf(cause, "invalid number '%s'", value);
	if (r != 0)
		return -1;
	*CONFIG_FIELD(base, k->off, unsigned) = n;
	return 0;
}

/* Set an enum to the index of its name in the key's list. */
static int
config_enum_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	int i;

	for (i = 0; k->names[i] != NULL; i++) {
		if (strcmp(value, k->names[i]) == 0) {
			memcpy(CONFIG_FIELD(base, k->off, char), &i, sizeof(i));
			return 0;
		}
	}
	return config_enum_invalid(k, value, cause);
}

/* Set workers: a number, or auto for one per CPU. */
static int
config_workers_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	bool *is_auto = CONFIG_FIELD(base, k->off2, bool);
	unsigned n;
	int r;

	if (strcmp(value, "auto") == 0) {
		*CONFIG_FIELD(base, k->off, unsigned) = config_cpu_count();
		*is_auto = true;
		return 0;
	}
	r = config_count_parse(k, value, &n, cause);
	if (r == -2)
		xasprintf(cause,
		    "invalid value '%s' (expected a number or auto)", value);
	if (r != 0)
		return -1;
	*CONFIG_FIELD(base, k->off, unsigned) = n;
	*is_auto = false;
	return 0;
}

/* Set the admin address; empty turns admin off. */
static int
config_admin_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	struct addr *field = CONFIG_FIELD(base, k->off, struct addr), a;
	bool *enabled = CONFIG_FIELD(base, k->off2, bool);

	if (value[0] == '\0') {
		memset(field, 0, sizeof(*field));
		*enabled = false;
		return 0;
	}
	if (addr_parse(value, 0, &a, cause) != 0)
		return -1;
	*field = a;
	*enabled = true;
	return 0;
}

/* Set a string (a path, a token, a backup's name); empty is NULL. */
static int
config_string_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	char **field = CONFIG_FIELD(base, k->off, char *);

	(void)cause;
	free(*field);
	*field = value[0] == '\0' ? NULL : xstrdup(value);
	return 0;
}

/* Add one listen address ("*:PORT" allowed) to the list. */
static int
config_listen_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	struct addr **lv = CONFIG_FIELD(base, k->off, struct addr *), a;
	size_t *ln = CONFIG_FIELD(base, k->off2, size_t);

	if (addr_parse(value, ADDR_ALLOW_WILDCARD, &a, cause) != 0)
		return -1;
	*lv = xrealloc(*lv, (*ln + 1) * sizeof(**lv));
	(*lv)[(*ln)++] = a;
	return 0;
}

/* Set the server address; a host name is kept to be resolved. */
static int
config_server_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	struct addr a;

	if (addr_parse(value, ADDR_KEEP_NAME, &a, cause) != 0)
		return -1;
	*CONFIG_FIELD(base, k->off, struct addr) = a;
	return 0;
}

/* Add one resolver line's DNS servers (see config_resolver_add). */
static int
config_resolver_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	return config_resolver_add(CONFIG_FIELD(base, k->off, char *), value,
	    cause);
}

/* Format a duration as it could be written. */
static void
config_duration_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	format_duration(*CONFIG_CFIELD(base, k->off, uint64_t), buf, len);
}

/* Format a window: a duration, or else the number of attempts. */
static void
config_window_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	uint64_t ms = *CONFIG_CFIELD(base, k->off, uint64_t);

	if (ms != 0)
		format_duration(ms, buf, len);
	else
		snprintf(buf, len, "%u",
		    *CONFIG_CFIELD(base, k->off2, unsigned));
}

/* Format a percentage with its sign. */
static void
config_percent_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	snprintf(buf, len, "%g%%", *CONFIG_CFIELD(base, k->off, double));
}

/* Format a factor. */
static void
config_factor_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	snprintf(buf, len, "%g", *CONFIG_CFIELD(base, k->off, double));
}

/* Format a boolean as yes or no. */
static void
config_bool_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	snprintf(buf, len, "%s",
	    *CONFIG_CFIELD(base, k->off, bool) ? "yes" : "no");
}

/* Format a whole number. */
static void
config_uint_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	snprintf(buf, len, "%u", *CONFIG_CFIELD(base, k->off, unsigned));
}

/* Format an enum by its name. */
static void
config_enum_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	int e;

	memcpy(&e, base + k->off, sizeof(e));
	snprintf(buf, len, "%s", k->names[e]);
}

/* Format workers: auto, or the number. */
static void
config_workers_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	if (*CONFIG_CFIELD(base, k->off2, bool))
		snprintf(buf, len, "auto");
	else
		snprintf(buf, len, "%u",
		    *CONFIG_CFIELD(base, k->off, unsigned));
}

/* Format the admin address; nothing when admin is off. */
static void
config_admin_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	if (*CONFIG_CFIELD(base, k->off2, bool))
		snprintf(buf, len, "%s",
		    CONFIG_CFIELD(base, k->off, struct addr)->text);
}

/* Format a string, a secret as "(hidden)"; nothing for NULL. */
static void
config_string_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	const char *s = *CONFIG_CFIELD(base, k->off, char *);

	if (s != NULL)
		snprintf(buf, len, "%s",
		    (k->flags & CONFIG_KEY_SECRET) ? "(hidden)" : s);
}

/* Format the listen addresses, comma-separated. */
static void
config_listen_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	const struct addr *lv = *CONFIG_CFIELD(base, k->off, struct addr *);
	size_t n = *CONFIG_CFIELD(base, k->off2, size_t), i, o;

	for (i = 0, o = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s",
		    i == 0 ? "" : ", ", lv[i].text);
}

/* Format a pool's members, space-separated. */
static void
config_members_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	char *const *mv = *(char *const *const *)(base + k->off);
	size_t n = *CONFIG_CFIELD(base, k->off2, size_t), i, o;

	for (i = 0, o = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s",
		    i == 0 ? "" : " ", mv[i]);
}

/* Format the server address as written. */
static void
config_server_format(const struct config_key *k, const char *base, char *buf,
    size_t len)
{
	snprintf(buf, len, "%s",
	    CONFIG_CFIELD(base, k->off, struct addr)->text);
}

/* How each type of value is read from the file and written back. */
static const struct config_type_ops {
	int (*set)(const struct config_key *, void *, const char *, char **);
	void (*format)(const struct config_key *, const char *, char *, size_t);
} config_types[] = {
	[CONFIG_T_DURATION] = { config_duration_set, config_duration_format },
	[CONFIG_T_WINDOW] = { config_window_set, config_window_format },
	[CONFIG_T_PERCENT] = { config_percent_set, config_percent_format },
	[CONFIG_T_FACTOR] = { config_factor_set, config_factor_format },
	[CONFIG_T_BOOL] = { config_bool_set, config_bool_format },
	[CONFIG_T_UINT] = { config_uint_set, config_uint_format },
	[CONFIG_T_ENUM] = { config_enum_set, config_enum_format },
	[CONFIG_T_WORKERS] = { config_workers_set, config_workers_format },
	[CONFIG_T_ADMIN] = { config_admin_set, config_admin_format },
	[CONFIG_T_STRING] = { config_string_set, config_string_format },
	[CONFIG_T_LISTEN] = { config_listen_set, config_listen_format },
	[CONFIG_T_SERVER] = { config_server_set, config_server_format },
	[CONFIG_T_BACKUP] = { config_string_set, config_string_format },
	[CONFIG_T_MEMBERS] = { config_members_set, config_members_format },
	[CONFIG_T_RESOLVER] = { config_resolver_set, config_string_format },
};

/* A key's type, which must be one of the table's. */
static const struct config_type_ops *
config_key_type(const struct config_key *k)
{
	if ((size_t)k->type >= CP_ARRAY_LEN(config_types) ||
	    config_types[k->type].set == NULL)
		fatalx("config: key %s has an unknown type", k->name);
	return &config_types[k->type];
}

/*
 * Parse one value into the struct a key lives in (struct config for global
 * keys, struct upstream_conf for upstream ones, struct pool_conf for pool
 * ones). 0, or -1 with *cause.
 */
static int
config_key_set(const struct config_key *k, void *base, const char *value,
    char **cause)
{
	*cause = NULL;
	return config_key_type(k)->set(k, base, value, cause);
}

/* Apply the default of every key of a scope to a struct. */
static void
config_defaults_apply(enum config_scope scope, void *base)
{
	const struct config_key *k;
	char *cause;
	size_t i;

	for (i = 0; i < CONFIG_NKEYS; i++) {
		k = &config_key_table[i];
		if (k->scope != scope || k->def == NULL)
			continue;
		if (config_key_set(k, base, k->def, &cause) != 0)
			fatalx("config: bad default for %s: %s", k->name,
			    cause);
	}
}

/* Name a section as it is written, for messages. */
static const char *
config_section_label(const struct config_section *sec, char *buf, size_t len)
{
	switch (sec->kind) {
	case CONFIG_SECTION_GLOBAL:
		snprintf(buf, len, "[global]");
		break;
	case CONFIG_SECTION_DEFAULTS:
		snprintf(buf, len, "[defaults]");
		break;
	case CONFIG_SECTION_POOL:
		snprintf(buf, len, "[pool:%s]", sec->name);
		break;
	default:
		snprintf(buf, len, "[upstream:%s]", sec->name);
		break;
	}
	return buf;
}

/*
 * The key a pair of a section names, or NULL after saying why it has none
 * there: unknown, of another scope, or not allowed in [defaults].
 */
static const struct config_key *
config_section_key(struct config_parse *cp, const struct config_section *sec,
    enum config_scope scope, const struct config_pair *pair, const char *label)
{
	const struct config_key *k;

	k = config_key_find_scope(pair->key, scope);
	if (k == NULL)
		k = config_key_find(pair->key);
	if (k == NULL) {
		config_error_add(cp->errs, cp->path, pair->line,
		    "unknown key '%s' in %s", pair->key, label);
		return NULL;
	}
	if (k->scope != scope) {
		config_error_add(cp->errs, cp->path, pair->line,
		    "unknown key '%s' in %s (it belongs in %s)", pair->key,
		    label,
		    k->scope == CONFIG_SCOPE_GLOBAL ? "[global]"
			: k->scope == CONFIG_SCOPE_POOL
			? "[pool:NAME]"
			: "[defaults] or [upstream:NAME]");
		return NULL;
	}
	if (sec->kind == CONFIG_SECTION_DEFAULTS &&
	    (k->flags & CONFIG_KEY_NO_DEFAULTS)) {
		config_error_add(cp->errs, cp->path, pair->line,
		    "%s '%s' is not allowed in [defaults] (set it in "
		    "each [upstream:NAME])",
		    k->name, pair->value);
		return NULL;
	}
	return k;
}

/*
 * Apply the pairs of one section to base, recording in seen[] the line each
 * key was set on (and for listen, each address's line in *lines).
 */
static void
config_section_apply(struct config_parse *cp, const struct config_section *sec,
    void *base, int *seen, int **lines)
{
	enum config_scope scope = sec->kind == CONFIG_SECTION_GLOBAL
	    ? CONFIG_SCOPE_GLOBAL
	    : sec->kind == CONFIG_SECTION_POOL ? CONFIG_SCOPE_POOL
					       : CONFIG_SCOPE_UPSTREAM;
	const struct config_pair *pair;
	const struct config_key *k;
	size_t *nlisten;
	char label[UPSTREAM_NAME_MAX + 16], *cause;
	size_t i, ki;

	config_section_label(sec, label, sizeof(label));
	for (i = 0; i < sec->npairs; i++) {
		pair = &sec->pairs[i];
		k = config_section_key(cp, sec, scope, pair, label);
		if (k == NULL)
			continue;
		ki = (size_t)(k - config_key_table);
		if (seen[ki] != 0 && !(k->flags & CONFIG_KEY_REPEATABLE)) {
			config_error_add(cp->errs, cp->path, pair->line,
			    "duplicate key '%s' in %s (first set on line %d)",
			    k->name, label, seen[ki]);
			continue;
		}
		/* Set even if the value is bad: "not set" would be noise. */
		if (seen[ki] == 0)
			seen[ki] = pair->line;
		if (config_key_set(k, base, pair->value, &cause) != 0) {
			config_error_add(cp->errs, cp->path, pair->line,
			    "%s: %s", k->name, cause);
			free(cause);
			continue;
		}
		if (k->type == CONFIG_T_LISTEN && lines != NULL) {
			nlisten = (size_t *)((char *)base + k->off2);
			*lines = xrealloc(*lines, *nlisten * sizeof(**lines));
			(*lines)[*nlisten - 1] = pair->line;
		}
	}
}

/* Free the allocated parts of one upstream. */
static void
config_upstream_free(struct upstream_conf *uc)
{
	free(uc->listen);
	free(uc->listen_line);
	free(uc->backup);
	free(uc->key_line);
}

/* Free the allocated parts of one pool. */
static void
config_pool_free(struct pool_conf *pc)
{
	size_t i;

	free(pc->listen);
	for (i = 0; i < pc->nmembers; i++)
		free(pc->members[i]);
	free(pc->members);
	free(pc->member_index);
	free(pc->key_line);
	free(pc->listen_line);
}

/* Free a config. */
void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nupstreams; i++)
		config_upstream_free(&cfg->upstreams[i]);
	free(cfg->upstreams);
	for (i = 0; i < cfg->npools; i++)
		config_pool_free(&cfg->pools[i]);
	free(cfg->pools);
	free(cfg->admin_token);
	free(cfg->admin_token_file);
	free(cfg->state_file);
	free(cfg->resolver);
	free(cfg->path);
	free(cfg->key_line);
	free(cfg);
}

/* Find an upstream by name, or NULL. */
const struct upstream_conf *
config_find_upstream(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nupstreams; i++) {
		if (strcmp(cfg->upstreams[i].name, name) == 0)
			return &cfg->upstreams[i];
	}
	return NULL;
}

/* Find a pool by name, or NULL. */
const struct pool_conf *
config_find_pool(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->npools; i++) {
		if (strcmp(cfg->pools[i].name, name) == 0)
			return &cfg->pools[i];
	}
	return NULL;
}

/* Return the index of a key in the table (it must exist). */
static size_t
config_key_index(const char *name)
{
	const struct config_key *k = config_key_find(name);

	if (k == NULL)
		fatalx("config: no key %s", name);
	return (size_t)(k - config_key_table);
}

/*
 * The line to blame for a rule about keys a and b of an upstream: the later
 * of the lines they were set on, in the section or else in [defaults]; the
 * section header if neither was set.
 */
static int
config_rule_line(const struct upstream_conf *uc, const struct config_upinfo *ui,
    const int *dseen, const char *a, const char *b)
{
	size_t ka = config_key_index(a), kb = config_key_index(b);
	int la = ui->seen[ka] != 0 ? ui->seen[ka] : dseen[ka];
	int lb = ui->seen[kb] != 0 ? ui->seen[kb] : dseen[kb];
	int line = la > lb ? la : lb;

	return line != 0 ? line : uc->line;
}

/* A resolve_interval under a second (but not 0) would flood the DNS server. */
static void
config_check_resolve_interval(struct config_parse *cp,
    const struct upstream_conf *uc, const struct config_upinfo *ui,
    const int *dseen, bool *told)
{
	size_t k = config_key_index("resolve_interval");
	char buf[32];

	if (uc->resolve_interval_ms == 0 || uc->resolve_interval_ms >= 1000)
		return;
	/* Set in [defaults]: said once, there. */
	if (ui->seen[k] == 0) {
		if (*told)
			return;
		*told = true;
	}
	config_error_add(cp->errs, cp->path,
	    ui->seen[k] != 0 ? ui->seen[k] : dseen[k],
	    "resolve_interval: '%s' is too short (0, or at least 1s)",
	    format_duration(uc->resolve_interval_ms, buf, sizeof(buf)));
}

/* Check the breaker settings of one upstream against each other. */
static void
config_check_breaker(struct config_parse *cp, const struct upstream_conf *uc,
    const struct config_upinfo *ui, const int *dseen)
{
	const struct breaker_conf *bc = &uc->breaker;
	char a[32], b[32];

	if (bc->success_threshold > bc->half_open_max_calls) {
		config_error_add(cp->errs, cp->path,
		    config_rule_line(uc, ui, dseen, "success_threshold",
			"half_open_max_calls"),
		    "upstream '%s': success_threshold %u is greater than "
		    "half_open_max_calls %u",
		    uc->name, bc->success_threshold, bc->half_open_max_calls);
	}
	if (bc->failure_threshold == 0 && bc->failure_rate_threshold == 0) {
		config_error_add(cp->errs, cp->path,
		    config_rule_line(uc, ui, dseen, "failure_threshold",
			"failure_rate_threshold"),
		    "upstream '%s': failure_threshold and "
		    "failure_rate_threshold are both 0, so the circuit can "
		    "never open",
		    uc->name);
	}
	if (bc->recovery_timeout_max_ms < bc->recovery_timeout_ms) {
		config_error_add(cp->errs, cp->path,
		    config_rule_line(uc, ui, dseen, "recovery_timeout_max",
			"recovery_timeout"),
		    "upstream '%s': recovery_timeout_max %s is less than "
		    "recovery_timeout %s",
		    uc->name,
		    format_duration(bc->recovery_timeout_max_ms, a, sizeof(a)),
		    format_duration(bc->recovery_timeout_ms, b, sizeof(b)));
	}
	if (bc->failure_rate_threshold > 0 && bc->window_ms == 0 &&
	    bc->minimum_calls > bc->window_calls) {
		config_error_add(cp->errs, cp->path,
		    config_rule_line(uc, ui, dseen, "minimum_calls", "window"),
		    "upstream '%s': minimum_calls %u is greater than window "
		    "%u, so failure_rate_threshold can never apply",
		    uc->name, bc->minimum_calls, bc->window_calls);
	}
}

/* Resolve backup names to indexes and report unknown names and cycles. */
static void
config_check_backups(struct config_parse *cp, struct config *cfg,
    struct config_upinfo *info)
{
	size_t bk = config_key_index("backup"), i, j, n, steps;
	struct upstream_conf *uc;
	char *chain, *tmp;
	int lowest;

	for (i = 0; i < cfg->nupstreams; i++) {
		uc = &cfg->upstreams[i];
		uc->backup_index = -1;
		if (uc->backup == NULL)
			continue;
		for (j = 0; j < cfg->nupstreams; j++) {
			if (strcmp(cfg->upstreams[j].name, uc->backup) == 0)
				break;
		}
		if (j == cfg->nupstreams) {
			config_error_add(cp->errs, cp->path, info[i].seen[bk],
			    "upstream '%s': backup '%s' is not a defined "
			    "upstream",
			    uc->name, uc->backup);
			continue;
		}
		uc->backup_index = (int)j;
		if (j != i)
			info[j].backup_of = 1;
	}

	/* A cycle is reported once, at its first upstream in the file. */
	n = cfg->nupstreams;
	for (i = 0; i < n; i++) {
		j = i;
		lowest = 1;
		for (steps = 0; steps < n; steps++) {
			if (cfg->upstreams[j].backup_index < 0)
				break;
			j = (size_t)cfg->upstreams[j].backup_index;
			if (j == i)
				break;
			if (j < i)
				lowest = 0;
		}
		if (j != i || steps == n || !lowest ||
		    cfg->upstreams[i].backup_index < 0)
			continue;
		chain = xstrdup(cfg->upstreams[i].name);
		j = i;
		do {
			j = (size_t)cfg->upstreams[j].backup_index;
			xasprintf(&tmp, "%s -> %s", chain,
			    cfg->upstreams[j].name);
			free(chain);
			chain = tmp;
		} while (j != i);
		config_error_add(cp->errs, cp->path, info[i].seen[bk],
		    "upstream '%s': backup cycle %s", cfg->upstreams[i].name,
		    chain);
		free(chain);
	}
}

/* One address a socket will be bound to, for the overlap check. */
struct config_bind {
	const struct addr *addr;
	const char *upstream; /* NULL for admin */
	const char *kind;     /* "upstream" or "pool" */
	int line;
};

/* Describe a bound address for a message: "listen 'X' of upstream 'u'". */
static void
config_bind_describe(const struct config_bind *b, char *buf, size_t len)
{
	if (b->upstream == NULL)
		snprintf(buf, len, "admin '%s'", b->addr->text);
	else
		snprintf(buf, len, "listen '%s' of %s '%s'", b->addr->text,
		    b->kind, b->upstream);
}

/* Report every listen (or admin) address that collides with an earlier one. */
static void
config_check_binds(struct config_parse *cp, const struct config *cfg,
    const struct config_upinfo *info, const struct config_poolinfo *pinfo,
    int admin_line)
{
	struct config_bind *v, *later, *earlier;
	char desc[ADDR_TEXT_MAX + UPSTREAM_NAME_MAX + 32];
	size_t n = 0, i, j, l;

	for (i = 0; i < cfg->nupstreams; i++)
		n += cfg->upstreams[i].nlisten;
	for (i = 0; i < cfg->npools; i++)
		n += cfg->pools[i].nlisten;
	v = xcalloc(n + 1, sizeof(*v));
	n = 0;
	if (cfg->admin_enabled) {
		v[n].addr = &cfg->admin;
		v[n].line = admin_line;
		n++;
	}
	for (i = 0; i < cfg->nupstreams; i++) {
		for (l = 0; l < cfg->upstreams[i].nlisten; l++) {
			v[n].addr = &cfg->upstreams[i].listen[l];
			v[n].upstream = cfg->upstreams[i].name;
			v[n].kind = "upstream";
			v[n].line = info[i].listen_line[l];
			n++;
		}
	}
	for (i = 0; i < cfg->npools; i++) {
		for (l = 0; l < cfg->pools[i].nlisten; l++) {
			v[n].addr = &cfg->pools[i].listen[l];
			v[n].upstream = cfg->pools[i].name;
			v[n].kind = "pool";
			v[n].line = pinfo[i].listen_line[l];
			n++;
		}
	}
	for (i = 0; i < n; i++) {
		for (j = i + 1; j < n; j++) {
			if (!addr_overlap(v[i].addr, v[j].addr))
				continue;
			later = v[i].line > v[j].line ? &v[i] : &v[j];
			earlier = later == &v[i] ? &v[j] : &v[i];
			config_bind_describe(earlier, desc, sizeof(desc));
			if (later->upstream == NULL) {
				config_error_add(cp->errs, cp->path,
				    later->line,
				    "admin '%s' overlaps %s "
				    "(line %d)",
				    later->addr->text, desc, earlier->line);
			} else {
				config_error_add(cp->errs, cp->path,
				    later->line,
				    "%s '%s': listen '%s' "
				    "overlaps %s (line %d)",
				    later->kind, later->upstream,
				    later->addr->text, desc, earlier->line);
			}
		}
	}
	free(v);
}

/*
 * Keep where every value came from, for config_dump and for messages at
 * start (an address in use names its line): a line of the section, minus
 * the line of [defaults], or 0 for built in. The listen lines move over.
 */
static void
config_origins_keep(struct config *cfg, struct config_upinfo *info,
    const int *gseen, const int *dseen)
{
	struct upstream_conf *uc;
	size_t i, k;

	cfg->key_line = xcalloc(CONFIG_NKEYS, sizeof(*cfg->key_line));
	memcpy(cfg->key_line, gseen, CONFIG_NKEYS * sizeof(*gseen));
	for (i = 0; i < cfg->nupstreams; i++) {
		uc = &cfg->upstreams[i];
		uc->key_line = xcalloc(CONFIG_NKEYS, sizeof(*uc->key_line));
		for (k = 0; k < CONFIG_NKEYS; k++)
			uc->key_line[k] =
			    info[i].seen[k] != 0 ? info[i].seen[k] : -dseen[k];
		uc->listen_line = info[i].listen_line;
		info[i].listen_line = NULL;
	}
}

/*
 * Build the pools from their sections (duplicates are read for their errors
 * and dropped); their member names are checked by config_check_pools().
 */
static struct config_poolinfo *
config_build_pools(struct config_parse *cp, struct config *cfg, size_t np)
{
	const struct config_key *lk =
	    config_key_find_scope("log_rejects_per_second", CONFIG_SCOPE_POOL);
	size_t lrps = (size_t)(lk - config_key_table), i;
	const struct config_section *sec;
	struct config_poolinfo *pinfo, scratch;
	struct pool_conf *pc, tmp;

	cfg->pools = xcalloc(np + 1, sizeof(*cfg->pools));
	pinfo = xcalloc(np + 1, sizeof(*pinfo));
	for (i = 0; i < cp->nsections; i++) {
		sec = &cp->sections[i];
		if (sec->kind != CONFIG_SECTION_POOL)
			continue;
		if (sec->duplicate) {
			memset(&tmp, 0, sizeof(tmp));
			memset(&scratch, 0, sizeof(scratch));
			config_defaults_apply(CONFIG_SCOPE_POOL, &tmp);
			config_section_apply(cp, sec, &tmp, scratch.seen,
			    &scratch.listen_line);
			config_pool_free(&tmp);
			free(scratch.listen_line);
			continue;
		}
		pc = &cfg->pools[cfg->npools];
		config_defaults_apply(CONFIG_SCOPE_POOL, pc);
		memcpy(pc->name, sec->name, sizeof(pc->name));
		pc->line = sec->line;
		config_section_apply(cp, sec, pc, pinfo[cfg->npools].seen,
		    &pinfo[cfg->npools].listen_line);
		/* The pool's own budget, else [global]'s. */
		if (pinfo[cfg->npools].seen[lrps] == 0)
			pc->log_rejects_per_second =
			    cfg->log_rejects_per_second;
		cfg->npools++;
	}
	return pinfo;
}

/*
 * Resolve each pool's members to upstream indexes: a pool needs a listen
 * and at least one member, each a defined upstream, none listed twice.
 */
static void
config_check_pools(struct config_parse *cp, struct config *cfg,
    struct config_upinfo *info, const struct config_poolinfo *pinfo)
{
	const struct config_key *mk =
	    config_key_find_scope("members", CONFIG_SCOPE_POOL);
	size_t mki = (size_t)(mk - config_key_table), i, j, m;
	struct pool_conf *pc;
	int line;

	for (i = 0; i < cfg->npools; i++) {
		pc = &cfg->pools[i];
		line = pinfo[i].seen[mki] != 0 ? pinfo[i].seen[mki] : pc->line;
		if (pc->nlisten == 0)
			config_error_add(cp->errs, cp->path, pc->line,
			    "pool '%s': 'listen' is not set", pc->name);
		if (pinfo[i].seen[mki] == 0)
			config_error_add(cp->errs, cp->path, pc->line,
			    "pool '%s': 'members' is not set (at least one "
			    "upstream name)",
			    pc->name);
		pc->member_index =
		    xcalloc(pc->nmembers + 1, sizeof(*pc->member_index));
		for (m = 0; m < pc->nmembers; m++) {
			for (j = 0; j < m; j++)
				if (strcmp(pc->members[j], pc->members[m]) == 0)
					break;
			if (j < m) {
				config_error_add(cp->errs, cp->path, line,
				    "pool '%s': member '%s' is listed twice",
				    pc->name, pc->members[m]);
				continue;
			}
			for (j = 0; j < cfg->nupstreams; j++)
				if (strcmp(cfg->upstreams[j].name,
					pc->members[m]) == 0)
					break;
			if (j == cfg->nupstreams) {
				config_error_add(cp->errs, cp->path, line,
				    "pool '%s': member '%s' is not a defined "
				    "upstream",
				    pc->name, pc->members[m]);
				continue;
			}
			pc->member_index[m] = j;
			info[j].member_of = 1;
		}
	}
}

/*
 * Read an admin token: the file's first line without its line end. 0, or
 * -1 with *cause (allocated). The file may be 0600 root: it is read at
 * start and at each reload, before any privilege is given up.
 */
int
config_read_token(const char *path, char **token, char **cause)
{
	char buf[CONFIG_TOKEN_MAX + 2];
	size_t n;
	FILE *f;

	*token = NULL;
	if ((f = fopen(path, "re")) == NULL) {
		xasprintf(cause, "cannot open: %s", strerror(errno));
		return -1;
	}
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	fclose(f);
	n = strcspn(buf, "\r\n");
	if (n == 0 || n > CONFIG_TOKEN_MAX) {
		xasprintf(cause, "%s",
		    n == 0 ? "no token on its first line" : "token too long");
		return -1;
	}
	buf[n] = '\0';
	*token = xstrdup(buf);
	return 0;
}

/*
 * Where the admin token comes from (SPEC 3): admin_token, or the file
 * admin_token_file names, or, with neither, the credential systemd passes
 * as $CREDENTIALS_DIRECTORY/admin_token (LoadCredential=). A missing
 * credential is no token; a named file that cannot be read is an error.
 */
static void
config_token_resolve(struct config_parse *cp, struct config *cfg,
    const int *gseen)
{
	int tline = gseen[config_key_index("admin_token")];
	int fline = gseen[config_key_index("admin_token_file")];
	const char *dir;
	char *path = NULL, *cause = NULL;

	cfg->admin_token_inline = cfg->admin_token != NULL;
	if (cfg->admin_token_file != NULL) {
		if (cfg->admin_token != NULL) {
			config_error_add(cp->errs, cp->path, fline,
			    "admin_token_file '%s': admin_token is set too "
			    "(set one of them)",
			    cfg->admin_token_file);
			return;
		}
		if (config_read_token(cfg->admin_token_file, &cfg->admin_token,
			&cause) != 0) {
			config_error_add(cp->errs, cp->path, fline,
			    "admin_token_file '%s': %s", cfg->admin_token_file,
			    cause);
			free(cause);
		}
		return;
	}
	if (tline != 0 || (dir = getenv("CREDENTIALS_DIRECTORY")) == NULL ||
	    *dir == '\0')
		return;
	xasprintf(&path, "%s/admin_token", dir);
	if (access(path, F_OK) == 0 &&
	    config_read_token(path, &cfg->admin_token, &cause) != 0) {
		config_error_add(cp->errs, cp->path, 0,
		    "credential admin_token '%s': %s", path, cause);
		free(cause);
	}
	free(path);
}

/*
 * Apply [global] and [defaults] (upstreams inherit wherever they are) and
 * count the upstream (*n, duplicates not counted) and pool (*np) sections.
 */
static void
config_build_globals(struct config_parse *cp, struct config *cfg,
    struct upstream_conf *defaults, int *gseen, int *dseen, size_t *n,
    size_t *np)
{
	const struct config_section *sec;
	size_t i;

	for (i = 0; i < cp->nsections; i++) {
		sec = &cp->sections[i];
		if (sec->kind == CONFIG_SECTION_GLOBAL)
			config_section_apply(cp, sec, cfg, gseen, NULL);
		else if (sec->kind == CONFIG_SECTION_DEFAULTS)
			config_section_apply(cp, sec, defaults, dseen, NULL);
		else if (sec->kind == CONFIG_SECTION_UPSTREAM &&
		    !sec->duplicate)
			(*n)++;
		else if (sec->kind == CONFIG_SECTION_POOL)
			(*np)++;
	}
}

/*
 * Build the n upstreams from their sections over the defaults (duplicates
 * are read for their errors and dropped); returns what each section set.
 */
static struct config_upinfo *
config_build_upstreams(struct config_parse *cp, struct config *cfg,
    const struct upstream_conf *defaults, size_t n)
{
	const struct config_section *sec;
	struct config_upinfo *info, scratch;
	struct upstream_conf *uc, tmp;
	size_t i;

	cfg->upstreams = xcalloc(n + 1, sizeof(*cfg->upstreams));
	info = xcalloc(n + 1, sizeof(*info));
	for (i = 0; i < cp->nsections; i++) {
		sec = &cp->sections[i];
		if (sec->kind != CONFIG_SECTION_UPSTREAM)
			continue;
		if (sec->duplicate) {
			tmp = *defaults;
			memset(&scratch, 0, sizeof(scratch));
			config_section_apply(cp, sec, &tmp, scratch.seen,
			    &scratch.listen_line);
			config_upstream_free(&tmp);
			free(scratch.listen_line);
			continue;
		}
		uc = &cfg->upstreams[cfg->nupstreams];
		*uc = *defaults;
		memcpy(uc->name, sec->name, sizeof(uc->name));
		uc->line = sec->line;
		config_section_apply(cp, sec, uc, info[cfg->nupstreams].seen,
		    &info[cfg->nupstreams].listen_line);
		cfg->nupstreams++;
	}
	return info;
}

/* Check each upstream: server set, listen set or reached, breaker rules. */
static void
config_check_upstreams(struct config_parse *cp, struct config *cfg,
    const struct config_upinfo *info, const int *dseen)
{
	size_t i, server = config_key_index("server");
	size_t listen = config_key_index("listen");
	struct upstream_conf *uc;
	bool interval_told = false;

	for (i = 0; i < cfg->nupstreams; i++) {
		uc = &cfg->upstreams[i];
		if (info[i].seen[server] == 0)
			config_error_add(cp->errs, cp->path, uc->line,
			    "upstream '%s': 'server' is not set", uc->name);
		uc->server_line = info[i].seen[server];
		config_check_resolve_interval(cp, uc, &info[i], dseen,
		    &interval_told);
		if (info[i].seen[listen] == 0 && !info[i].backup_of &&
		    !info[i].member_of)
			config_error_add(cp->errs, cp->path, uc->line,
			    "upstream '%s': 'listen' is not set and no other "
			    "upstream names it as backup and no pool lists it",
			    uc->name);
		config_check_breaker(cp, uc, &info[i], dseen);
	}
}

/* An admin address beyond loopback needs a token. */
static void
config_check_admin(struct config_parse *cp, const struct config *cfg,
    const int *gseen)
{
	if (cfg->admin_enabled && !addr_is_local(&cfg->admin) &&
	    cfg->admin_token == NULL) {
		config_error_add(cp->errs, cp->path,
		    gseen[config_key_index("admin")],
		    "admin '%s' is not a loopback address and admin_token is "
		    "not set",
		    cfg->admin.text);
	}
}

/* Keep the line each pool key was set on, and each listen's line. */
static void
config_pool_origins_keep(struct config *cfg, struct config_poolinfo *pinfo)
{
	size_t i;

	for (i = 0; i < cfg->npools; i++) {
		cfg->pools[i].key_line =
		    xcalloc(CONFIG_NKEYS, sizeof(*cfg->pools[i].key_line));
		memcpy(cfg->pools[i].key_line, pinfo[i].seen,
		    CONFIG_NKEYS * sizeof(*pinfo[i].seen));
		cfg->pools[i].listen_line = pinfo[i].listen_line;
	}
}

/*
 * The second pass: build the config from the sections, then check the rules
 * that span keys and sections. Errors go to cp->errs.
 */
static struct config *
config_build(struct config_parse *cp)
{
	struct config *cfg;
	struct config_upinfo *info;
	struct config_poolinfo *pinfo;
	struct upstream_conf defaults;
	int gseen[CONFIG_NKEYS], dseen[CONFIG_NKEYS];
	size_t n = 0, np = 0;

	cfg = xcalloc(1, sizeof(*cfg));
	cfg->path = xstrdup(cp->path);
	config_defaults_apply(CONFIG_SCOPE_GLOBAL, cfg);
	memset(&defaults, 0, sizeof(defaults));
	config_defaults_apply(CONFIG_SCOPE_UPSTREAM, &defaults);
	defaults.backup_index = -1;
	memset(gseen, 0, sizeof(gseen));
	memset(dseen, 0, sizeof(dseen));

	config_build_globals(cp, cfg, &defaults, gseen, dseen, &n, &np);
	info = config_build_upstreams(cp, cfg, &defaults, n);
	pinfo = config_build_pools(cp, cfg, np);

	/* A file that proxies nothing is a mistake (an empty or wrong file). */
	if (cp->upstream_headers == 0)
		config_error_add(cp->errs, cp->path,
		    cp->line > 0 ? cp->line : 1,
		    "no upstream: add an [upstream:NAME] section with listen "
		    "and server");
	config_check_backups(cp, cfg, info);
	config_check_pools(cp, cfg, info, pinfo);
	config_check_upstreams(cp, cfg, info, dseen);
	config_check_binds(cp, cfg, info, pinfo,
	    gseen[config_key_index("admin")]);
	config_token_resolve(cp, cfg, gseen);
	config_check_admin(cp, cfg, gseen);

	config_origins_keep(cfg, info, gseen, dseen);
	free(info);
	config_pool_origins_keep(cfg, pinfo);
	free(pinfo);
	return cfg;
}

/*
 * Load and validate a config from len bytes of text (not NUL-terminated;
 * a NUL inside is an error): both passes, NULL and errors in *errs on failure.
 */
struct config *
config_load_buffer(const char *path, const char *text, size_t len,
    struct config_errors *errs)
{
	struct config_errors local = { NULL, 0 };
	struct config_parse cp;
	struct config *cfg;
	int r;

	if (errs == NULL)
		errs = &local;
	errs->v = NULL;
	errs->n = 0;

	memset(&cp, 0, sizeof(cp));
	cp.path = path;
	cp.text = text;
	cp.len = len;
	cp.current = -1;
	cp.errs = errs;

	/* Debian's inih reads these at run time: no silent line joining. */
	ini_allow_multiline = false;
	ini_allow_inline_comments = true;
	ini_allow_bom = false;
	ini_allow_realloc = false;
	ini_allow_no_value = false;
	ini_stop_on_first_error = false;

	r = ini_parse_stream(config_read_line, &cp, config_ini_handler, &cp);
	if (r > 0 && errs->n == 0)
		config_error_add(errs, path, r, "cannot parse line");
	cfg = config_build(&cp);
	config_parse_free(&cp);

	if (errs->n > 0) {
		config_free(cfg);
		config_errors_sort(errs);
		if (errs == &local)
			config_errors_clear(&local);
		return NULL;
	}
	return cfg;
}

/* Load and validate a config from a string; path is for messages only. */
struct config *
config_load_string(const char *path, const char *text,
    struct config_errors *errs)
{
	return config_load_buffer(path, text, strlen(text), errs);
}

/*
 * Open a config file (not a directory) and read it whole into *text. 0, or
 * -1 with the error in errs; *sb is the file as opened.
 */
static int
config_file_read(const char *path, struct stat *sb, char **text, size_t *lenp,
    struct config_errors *errs)
{
	size_t len = 0, size = 8192;
	ssize_t r;
	int fd, saved;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	saved = errno;
	if (fd != -1 && fstat(fd, sb) != 0) {
		saved = errno;
		close(fd);
		fd = -1;
	} else if (fd != -1 && S_ISDIR(sb->st_mode)) {
		saved = EISDIR;
		close(fd);
		fd = -1;
	}
	if (fd == -1) {
		config_error_add(errs, path, 0, "cannot open: %s",
		    strerror(saved));
		return -1;
	}
	*text = xmalloc(size);
	for (;;) {
		if (len == size)
			*text = xrealloc(*text, size *= 2);
		r = read(fd, *text + len, size - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	saved = errno;
	close(fd);
	if (r == -1) {
		free(*text);
		config_error_add(errs, path, 0, "cannot read: %s",
		    strerror(saved));
		return -1;
	}
	*lenp = len;
	return 0;
}

/* Load and validate a config file. */
struct config *
config_load(const char *path, struct config_errors *errs)
{
	struct config_errors local = { NULL, 0 };
	struct config *cfg;
	struct stat sb;
	size_t len;
	char *text;

	if (errs == NULL)
		errs = &local;
	errs->v = NULL;
	errs->n = 0;

	if (config_file_read(path, &sb, &text, &len, errs) != 0) {
		config_errors_clear(&local);
		return NULL;
	}
	cfg = config_load_buffer(path, text, len, errs);
	free(text);
	/* The file as read (fstat of that descriptor), for a warning. */
	if (cfg != NULL) {
		cfg->world_writable = (sb.st_mode & S_IWOTH) != 0;
		cfg->secret_readable = cfg->admin_token_inline &&
		    (sb.st_mode & (S_IRGRP | S_IROTH)) != 0;
	}
	return cfg;
}

/* Format the value of a key that lives in base (its section's struct). */
static const char *
config_key_value_in(const char *base, const struct config_key *k, char *buf,
    size_t len)
{
	buf[0] = '\0';
	config_key_type(k)->format(k, base, buf, len);
	return buf;
}

/* Format a key's effective value as it could be written in the file. */
const char *
config_key_value(const struct config *cfg, const struct upstream_conf *uc,
    const struct config_key *k, char *buf, size_t len)
{
	return config_key_value_in(k->scope == CONFIG_SCOPE_GLOBAL
		? (const char *)cfg
		: (const char *)uc,
	    k, buf, len);
}

/* Format a key's value in its section: a config, upstream_conf or pool_conf. */
const char *
config_section_key_value(const void *section, const struct config_key *k,
    char *buf, size_t len)
{
	return config_key_value_in(section, k, buf, len);
}

/* Where a key's value came from, as config_dump shows it. */
static const char *
config_key_origin(const struct config *cfg, const struct upstream_conf *uc,
    const struct config_key *k, size_t l, char *buf, size_t len)
{
	size_t ki = (size_t)(k - config_key_table);
	const int *lines =
	    k->scope == CONFIG_SCOPE_GLOBAL ? cfg->key_line : uc->key_line;
	int line = lines != NULL ? lines[ki] : 0;

	if (k->type == CONFIG_T_LISTEN && uc->listen_line != NULL)
		line = uc->listen_line[l];
	if (line > 0)
		snprintf(buf, len, "%s:%d", cfg->path, line);
	else if (line < 0)
		snprintf(buf, len, "[defaults] %s:%d", cfg->path, -line);
	else
		snprintf(buf, len, "built in");
	return buf;
}

/* Print one "key = value ; origin - help" line. */
static void
config_dump_line(const struct config_key *k, const char *value,
    const char *origin, FILE *f)
{
	int n;

	n = fprintf(f, "%s =%s%s", k->name, value[0] != '\0' ? " " : "", value);
	fprintf(f, "%*s ; %s - %s\n", n < 36 ? 36 - n : 0, "", origin, k->help);
}

/* Print the keys of one scope, each with its origin and help. */
static void
config_dump_scope(const struct config *cfg, const struct upstream_conf *uc,
    enum config_scope scope, FILE *f)
{
	const struct config_key *k;
	char buf[1024], origin[1024];
	size_t i, l;

	for (i = 0; i < CONFIG_NKEYS; i++) {
		k = &config_key_table[i];
		if (k->scope != scope)
			continue;
		if (k->type == CONFIG_T_LISTEN) {
			for (l = 0; l < uc->nlisten; l++)
				config_dump_line(k, uc->listen[l].text,
				    config_key_origin(cfg, uc, k, l, origin,
					sizeof(origin)),
				    f);
			continue;
		}
		config_key_value(cfg, uc, k, buf, sizeof(buf));
		config_dump_line(k, buf,
		    config_key_origin(cfg, uc, k, 0, origin, sizeof(origin)),
		    f);
	}
}

/*
 * Where a pool key's value came from: its line, [global]'s line for a
 * log_rejects_per_second taken from there, or built in.
 */
static const char *
config_pool_origin(const struct config *cfg, const struct pool_conf *pc,
    const struct config_key *k, size_t l, char *buf, size_t len)
{
	const struct config_key *g;
	int line =
	    pc->key_line != NULL ? pc->key_line[k - config_key_table] : 0;

	if (k->type == CONFIG_T_LISTEN && pc->listen_line != NULL)
		line = pc->listen_line[l];
	if (line > 0) {
		snprintf(buf, len, "%s:%d", cfg->path, line);
		return buf;
	}
	g = config_key_find_scope(k->name, CONFIG_SCOPE_GLOBAL);
	if (g != NULL && cfg->key_line != NULL &&
	    (line = cfg->key_line[g - config_key_table]) > 0)
		snprintf(buf, len, "[global] %s:%d", cfg->path, line);
	else
		snprintf(buf, len, "built in");
	return buf;
}

/* Print a pool's keys, each with its origin and help. */
static void
config_dump_pool(const struct config *cfg, const struct pool_conf *pc, FILE *f)
{
	const struct config_key *k;
	char buf[1024], origin[1024];
	size_t i, l;

	for (i = 0; i < CONFIG_NKEYS; i++) {
		k = &config_key_table[i];
		if (k->scope != CONFIG_SCOPE_POOL)
			continue;
		if (k->type == CONFIG_T_LISTEN) {
			for (l = 0; l < pc->nlisten; l++)
				config_dump_line(k, pc->listen[l].text,
				    config_pool_origin(cfg, pc, k, l, origin,
					sizeof(origin)),
				    f);
			continue;
		}
		config_key_value_in((const char *)pc, k, buf, sizeof(buf));
		config_dump_line(k, buf,
		    config_pool_origin(cfg, pc, k, 0, origin, sizeof(origin)),
		    f);
	}
}

/* Print every effective key = value: [global], each upstream, each pool. */
void
config_dump(const struct config *cfg, FILE *f)
{
	size_t i;

	fprintf(f,
	    "# %s as circuitproxyd reads it: every key with its effective\n"
	    "# value; after \";\" where it came from and what it does.\n"
	    "\n[global]\n",
	    cfg->path);
	config_dump_scope(cfg, NULL, CONFIG_SCOPE_GLOBAL, f);
	for (i = 0; i < cfg->nupstreams; i++) {
		fprintf(f, "\n# %s:%d\n[upstream:%s]\n", cfg->path,
		    cfg->upstreams[i].line, cfg->upstreams[i].name);
		config_dump_scope(cfg, &cfg->upstreams[i],
		    CONFIG_SCOPE_UPSTREAM, f);
	}
	for (i = 0; i < cfg->npools; i++) {
		fprintf(f, "\n# %s:%d\n[pool:%s]\n", cfg->path,
		    cfg->pools[i].line, cfg->pools[i].name);
		config_dump_pool(cfg, &cfg->pools[i], f);
	}
}
