/*
 * The configuration: an INI file read into one immutable struct config,
 * built whole and validated before anyone sees it (SPEC.md section 3).
 * Pure C: no libevent. One table of keys in config.c drives parsing,
 * validation, [defaults] inheritance and display.
 */
#ifndef CP_CONFIG_H
#define CP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "addr.h"
#include "breaker.h"
#include "log.h"
#include "proxyproto.h"

#define UPSTREAM_NAME_MAX 64

enum reject_mode {
	REJECT_RESET,
	REJECT_HTTP503,
	REJECT_REDIS,
	REJECT_POSTGRES,
	REJECT_MYSQL,
};

enum splice_mode {
	SPLICE_AUTO, /* bulk directions move by splice(2) */
	SPLICE_OFF,  /* always recv/send */
};

struct upstream_conf {
	char name[UPSTREAM_NAME_MAX + 1];
	int line;	     /* of its [upstream:NAME] header */
	struct addr *listen; /* nlisten entries */
	int *listen_line;    /* the line each listen address is on */
	size_t nlisten;
	struct addr server; /* server.name: a host name for the resolver */
	int server_line;    /* of its server key */
	uint64_t resolve_interval_ms; /* 0 = only at start and reload */
	char *backup;		      /* NULL if none */
	int backup_index;	      /* index in config->upstreams, or -1 */
	uint64_t connect_timeout_ms;
	uint64_t idle_timeout_ms; /* 0 = never */
	unsigned max_connections; /* 0 = no limit */
	bool failure_on_early_close;
	uint64_t slow_connect_ms; /* 0 = off */
	enum reject_mode reject;
	enum splice_mode splice;
	bool log_connections; /* event=conn for its listeners' clients */
	enum proxyproto_version send_proxy; /* PROXY header to the server */
	struct breaker_conf breaker;
	/* Per key of the table: where its value came from (config_key_origin). */
	int *key_line;
};

enum pool_balance {
	POOL_BALANCE_ROUNDROBIN, /* rotate over the admitting members */
	POOL_BALANCE_LEASTCONN,	 /* the fewest active relays, ties in order */
	POOL_BALANCE_FIRST,	 /* the first member that admits */
};

/* Members a pool may list, and retries it may make. */
#define POOL_MEMBERS_MAX 64
#define POOL_RETRIES_MAX 8

struct pool_conf {
	char name[UPSTREAM_NAME_MAX + 1];
	int line;	     /* of its [pool:NAME] header */
	struct addr *listen; /* nlisten entries */
	size_t nlisten;
	char **members; /* upstream names, in order */
	size_t nmembers;
	size_t *member_index; /* index of each in config->upstreams */
	enum pool_balance balance;
	unsigned retries;
	enum reject_mode reject;
	unsigned log_rejects_per_second; /* [global]'s unless set */
	bool log_connections;
	int *key_line;	  /* per key of the table: its line, 0 unset */
	int *listen_line; /* the line each listen address is on */
};

struct config {
	char *path;
	bool world_writable;  /* the file read: anyone may change it */
	bool secret_readable; /* it holds admin_token, group/others read it */
	enum log_level log_level;
	enum log_target log_target;
	unsigned workers; /* resolved: "auto" is the CPU count */
	bool workers_auto;
	bool admin_enabled;
	struct addr admin;
	char *
	    admin_token; /* NULL if unset; else from the key, the file or the credential */
	bool admin_token_inline; /* admin_token itself is in the file */
	char *admin_token_file;	 /* NULL if unset */
	uint64_t shutdown_timeout_ms;
	unsigned log_rejects_per_second;
	char *state_file; /* NULL if unset */
	char *resolver;	  /* DNS servers "IP:PORT ..."; NULL: the system's */
	struct upstream_conf *upstreams;
	size_t nupstreams;
	int *key_line; /* per [global] key: its line, 0 built in */
	struct pool_conf *pools;
	size_t npools;
};

/* One error, as "FILE:LINE: message" (or "FILE: message" with line 0). */
struct config_error {
	int line;
	char *msg; /* the full text, file and line included */
};

struct config_errors {
	struct config_error *v;
	size_t n;
};

/* How a key's value is written, parsed and shown. */
enum config_type {
	CONFIG_T_DURATION, /* uint64_t ms: "250ms", "1.5s", bare seconds */
	CONFIG_T_WINDOW,   /* bare count of attempts, or a duration */
	CONFIG_T_PERCENT,  /* double 0..100: "12.5", "50%" */
	CONFIG_T_FACTOR,   /* double: "1", "1.5" */
	CONFIG_T_BOOL,	   /* bool: yes/no, true/false, on/off, 1/0 */
	CONFIG_T_UINT,	   /* unsigned */
	CONFIG_T_ENUM,	   /* an int-sized enum; names in the key */
	CONFIG_T_WORKERS,  /* unsigned, or "auto" */
	CONFIG_T_ADMIN,	   /* struct addr; empty = off */
	CONFIG_T_STRING,   /* char *; empty = NULL */
	CONFIG_T_LISTEN,   /* struct addr, repeatable, "*:PORT" allowed */
	CONFIG_T_SERVER,   /* struct addr */
	CONFIG_T_BACKUP,   /* another upstream's name; empty = none */
	CONFIG_T_MEMBERS,  /* char **, space-separated upstream names */
	CONFIG_T_RESOLVER, /* char *: IP[:PORT] list, repeatable; empty = NULL */
};

enum config_scope {
	CONFIG_SCOPE_GLOBAL,   /* [global], field of struct config */
	CONFIG_SCOPE_UPSTREAM, /* [defaults] or [upstream:NAME] */
	CONFIG_SCOPE_POOL,     /* [pool:NAME], field of struct pool_conf */
};

#define CONFIG_KEY_RELOADABLE 0x1  /* SIGHUP applies it without a restart */
#define CONFIG_KEY_NO_DEFAULTS 0x2 /* not allowed in [defaults] */
#define CONFIG_KEY_REPEATABLE 0x4  /* may appear more than once */
#define CONFIG_KEY_SECRET 0x8	   /* never shown by config_dump */

/* One row of the key table: everything the loader knows about a key. */
struct config_key {
	const char *name;
	enum config_scope scope;
	enum config_type type;
	int flags;	   /* CONFIG_KEY_* */
	uint64_t min, max; /* bounds: ms for durations, counts else */
	const char *def;   /* default as written in the file; NULL none */
	size_t off;	   /* field in struct config or upstream_conf */
	size_t off2;	   /* window_calls, admin_enabled, workers_auto */
	const char *const *names; /* CONFIG_T_ENUM: NULL-terminated names */
	const char *help;	  /* one line for docs and "show config" */
};

/* The key table, read-only; *n is set to its length. */
const struct config_key *config_keys(size_t *n);
/* Find a key by name, or NULL. Exported as a test seam (check_config). */
const struct config_key *config_key_find(const char *);
/* Format a key's effective value (up is ignored for global keys). */
const char *config_key_value(const struct config *,
    const struct upstream_conf *, const struct config_key *, char *, size_t);
/* The same from the struct of the key's scope (config, upstream or pool). */
const char *config_section_key_value(const void *section,
    const struct config_key *, char *, size_t);
/*
 * Print the config as it is understood: [global] then each upstream, every
 * key with its effective value and, as a trailing comment, where it came
 * from (FILE:LINE, [defaults] at FILE:LINE, or built in) and what it does.
 */
void config_dump(const struct config *, FILE *);
/* The longest admin token read from a file. */
#define CONFIG_TOKEN_MAX 4096
/* Read a token file's first line: 0, or -1 with *cause (allocated). */
int config_read_token(const char *path, char **token, char **cause);
/* Print each error on its own line. */
void config_errors_print(const struct config_errors *, FILE *);

/*
 * Load and validate a file. On success returns the config; on failure NULL
 * and every error found in *errs (sorted by line). An unreadable file is
 * one error "FILE: cannot open: REASON" with line 0. *errs is overwritten
 * (it may be NULL); free it with config_errors_clear().
 */
struct config *config_load(const char *path, struct config_errors *errs);
/* The same from len bytes in memory (path is for messages only). */
struct config *config_load_buffer(const char *path, const char *text,
    size_t len, struct config_errors *errs);
/* The same from a string (path is for messages only). A test seam. */
struct config *config_load_string(const char *path, const char *text,
    struct config_errors *errs);
void config_free(struct config *);
void config_errors_clear(struct config_errors *);

/* Is this a name an upstream can have: [A-Za-z0-9_.-]{1,64}? */
bool config_name_valid(const char *);
/* Find an upstream by name, or NULL. */
const struct upstream_conf *config_find_upstream(const struct config *,
    const char *);
/* Find a pool by name, or NULL. */
const struct pool_conf *config_find_pool(const struct config *, const char *);

#endif
