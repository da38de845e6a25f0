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

#include "addr.h"
#include "breaker.h"
#include "log.h"

#define UPSTREAM_NAME_MAX 64

enum reject_mode {
	REJECT_RESET,
	REJECT_HTTP503,
};

struct upstream_conf {
	char name[UPSTREAM_NAME_MAX + 1];
	int line;                        /* of its [upstream:NAME] header */
	struct addr *listen;             /* nlisten entries */
	size_t nlisten;
	struct addr server;
	char *backup;                    /* NULL if none */
	int backup_index;                /* index in config->upstreams, or -1 */
	uint64_t connect_timeout_ms;
	uint64_t idle_timeout_ms;        /* 0 = never */
	unsigned max_connections;        /* 0 = no limit */
	bool failure_on_early_close;
	uint64_t slow_connect_ms;        /* 0 = off */
	enum reject_mode reject;
	struct breaker_conf breaker;
};

struct config {
	char *path;
	enum log_level log_level;
	enum log_target log_target;
	unsigned workers;                /* resolved: "auto" is the CPU count */
	bool workers_auto;
	bool admin_enabled;
	struct addr admin;
	char *admin_token;               /* NULL if unset */
	uint64_t shutdown_timeout_ms;
	unsigned log_rejects_per_second;
	char *state_file;                /* NULL if unset */
	struct upstream_conf *upstreams;
	size_t nupstreams;
};

/* One error, as "FILE:LINE: message" (or "FILE: message" with line 0). */
struct config_error {
	int line;
	char *msg;                       /* the full text, file and line included */
};

struct config_errors {
	struct config_error *v;
	size_t n;
};

/*
 * Load and validate a file. On success returns the config; on failure NULL
 * and every error found in *errs (sorted by line). An unreadable file is
 * one error "FILE: cannot open: REASON" with line 0.
 */
struct config *config_load(const char *path, struct config_errors *errs);
/* The same from a string (path is used in messages only); for tests. */
struct config *config_load_string(const char *path, const char *text,
    struct config_errors *errs);
void config_free(struct config *);
void config_errors_clear(struct config_errors *);

/* Find an upstream by name, or NULL. */
const struct upstream_conf *config_find_upstream(const struct config *, const char *);

#endif
