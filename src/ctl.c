/*
 * circuitproxyctl: the operator's client of the admin endpoint (SPEC.md 2
 * and 7). It finds the endpoint and its token in the daemon's own config
 * file, sends one request with libcurl (TCP or a unix socket), and prints
 * the answer: a table for status, the JSON for stats.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>
#include <ini.h>

#include "addr.h"
#include "config.h"
#include "json.h"
#include "util.h"

#ifndef CP_CONFIG_PATH
#define CP_CONFIG_PATH "/etc/circuitproxy.ini"
#endif

/* Exit statuses of SPEC.md 2 beyond 0, EX_USAGE and EX_CONFIG. */
#define CTL_EXIT_NO_ANSWER 1
#define CTL_EXIT_UNKNOWN 2
#define CTL_EXIT_REFUSED 3

/* Limits on one exchange with the daemon. */
#define CTL_CONNECT_TIMEOUT_MS 3000
#define CTL_TIMEOUT_MS 10000
#define CTL_BODY_MAX (16 * 1024 * 1024)

static const char ctl_usage_text[] =
    "usage: circuitproxyctl [-c FILE] [-a ADDR] [-T TOKEN_FILE] [-j] COMMAND\n"
    "  -c, --config FILE      the daemon's config (default: " CP_CONFIG_PATH
    ")\n"
    "  -a, --admin ADDR       the admin endpoint: HOST:PORT, [IPv6]:PORT or "
    "unix:/path\n"
    "  -T, --token-file FILE  read the admin token from FILE\n"
    "  -j, --json             compact JSON, for every command (status: "
    "the /stats document)\n"
    "  -V, --version          print the version and exit\n"
    "  -h, --help             print this help and exit\n"
    "commands:\n"
    "  status                 one line per upstream: state, retry-after "
    "(or when a force ends), ...\n"
    "  stats [NAME]           the JSON of /stats or /stats/NAME\n"
    "  force-open NAME [FOR]  FOR is a duration (30s, 5m); none = until "
    "reset\n"
    "  force-closed NAME [FOR]\n"
    "  reset NAME | reset --all\n";

/* What one run needs: where to ask, with which token, how to print. */
struct ctl {
	struct addr admin;
	char *token; /* NULL: none */
	bool compact;
	CURL *curl;
};

/* Print the usage and exit with a status. */
static void __attribute__((noreturn)) ctl_usage(FILE *f, int status)
{
	fputs(ctl_usage_text, f);
	exit(status);
}

/* Complain about the command line and exit 64. */
static void __attribute__((noreturn, format(printf, 1, 2)))
ctl_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("circuitproxyctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	ctl_usage(stderr, EX_USAGE);
}

/* Read the token: the file's first line, without its line end. */
static char *
ctl_read_token(const char *path)
{
	char *token, *cause = NULL;

	if (config_read_token(path, &token, &cause) != 0) {
		fprintf(stderr, "circuitproxyctl: %s: %s\n", path, cause);
		free(cause);
		exit(EX_CONFIG);
	}
	return token;
}

/* What the config file says of the endpoint. */
struct ctl_found {
	char *admin; /* as written, or NULL */
	char *token;
	char *token_file;
};

/* inih: keep admin and admin_token of [global], skip everything else. */
static int
ctl_global_cb(void *arg, const char *section, const char *name,
    const char *value)
{
	struct ctl_found *f = arg;
	char **slot = NULL;

	if (strcmp(section, "global") != 0)
		return 1;
	if (strcmp(name, "admin") == 0)
		slot = &f->admin;
	else if (strcmp(name, "admin_token") == 0)
		slot = &f->token;
	else if (strcmp(name, "admin_token_file") == 0)
		slot = &f->token_file;
	if (slot != NULL) {
		free(*slot);
		*slot = value[0] != '\0' ? xstrdup(value) : NULL;
	}
	return 1;
}

/* Print the config's errors and exit 78. */
static void __attribute__((noreturn))
ctl_config_fail(struct config_errors *errs, struct ctl_found *f)
{
	config_errors_print(errs, stderr);
	config_errors_clear(errs);
	free(f->admin);
	free(f->token);
	free(f->token_file);
	exit(EX_CONFIG);
}

/*
 * Find the endpoint and the token: -a and -T first, then the config file,
 * read as the daemon reads it. A file with errors elsewhere (half edited,
 * or naming a host that no longer resolves) still gives its [global]
 * admin and admin_token, with a warning: the running daemon is the one to
 * ask. The file must be readable unless -a was given and -c was not.
 */
static void
ctl_setup(struct ctl *c, const char *path, bool path_given, const char *addr,
    const char *token_file)
{
	struct config_errors errs = { NULL, 0 };
	struct ctl_found f = { NULL, NULL, NULL };
	struct config *conf;
	bool partial = false;
	char *cause = NULL;

	if ((conf = config_load(path, &errs)) != NULL) {
		if (conf->admin_enabled)
			f.admin = xstrdup(conf->admin.text);
		if (conf->admin_token != NULL)
			f.token = xstrdup(conf->admin_token);
		config_free(conf);
	} else if (addr == NULL && ini_parse(path, ctl_global_cb, &f) >= 0 &&
	    f.admin != NULL)
		partial = true;
	else if (addr == NULL || path_given)
		ctl_config_fail(&errs, &f);

	if (addr != NULL) {
		if (addr_parse(addr, 0, &c->admin, &cause) != 0) {
			fprintf(stderr, "circuitproxyctl: -a %s: %s\n", addr,
			    cause);
			free(cause);
			free(f.admin);
			free(f.token);
			config_errors_clear(&errs);
			exit(EX_USAGE);
		}
	} else if (f.admin == NULL) {
		fprintf(stderr,
		    "circuitproxyctl: %s sets no admin endpoint (set admin "
		    "there, or give -a ADDR)\n",
		    path);
		free(f.token);
		exit(EX_CONFIG);
	} else if (addr_parse(f.admin, 0, &c->admin, &cause) != 0) {
		free(cause);
		ctl_config_fail(&errs, &f);
	}
	if (partial) {
		fprintf(stderr,
		    "circuitproxyctl: %s has errors (circuitproxyd -t "
		    "lists them); asking its admin = %s all the same\n",
		    path, f.admin);
	}
	config_errors_clear(&errs);
	free(f.admin);
	c->token = f.token;
	/* A file with errors: admin_token_file as the daemon would read it. */
	if (c->token == NULL && f.token_file != NULL && token_file == NULL)
		c->token = ctl_read_token(f.token_file);
	free(f.token_file);
	if (token_file != NULL) {
		free(c->token);
		c->token = ctl_read_token(token_file);
	}
}

/* Collect the answer's body, up to a limit. */
static size_t
ctl_write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct util_buf *b = arg;

	if (b->len + n > CTL_BODY_MAX)
		return 0;
	util_buf_add(b, data, n);
	(void)size;
	return n;
}

/*
 * curl could not connect to a unix socket: connect once more to learn why,
 * so the operator reads "permission denied" and what to do, not curl's
 * "Couldn't connect to server". Returns if there is nothing better to say.
 */
static void
ctl_unix_why(struct ctl *c)
{
	const char *path = c->admin.text + strlen("unix:");
	struct sockaddr_un sun;
	int fd, error;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path) ||
	    (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	memcpy(sun.sun_path, path, strlen(path));
	error =
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ? 0 : errno;
	close(fd);
	if (error == EACCES || error == EPERM) {
		fprintf(stderr,
		    "circuitproxyctl: permission denied on %s: this user may "
		    "not write to the socket or search its directory; run it "
		    "as the socket's owner or a member of its group (e.g. "
		    "with sudo), or use a TCP admin address (-a)\n",
		    c->admin.text);
		exit(CTL_EXIT_NO_ANSWER);
	}
	if (error != 0) {
		fprintf(stderr, "circuitproxyctl: no answer from %s: %s\n",
		    c->admin.text, strerror(error));
		exit(CTL_EXIT_NO_ANSWER);
	}
}

/*
 * Send one request. Returns the HTTP status with the body in *b, or exits
 * 1 saying which address did not answer.
 */
static long
ctl_request(struct ctl *c, const char *method, const char *path,
    struct util_buf *b)
{
	struct curl_slist *hdrs = NULL;
	char url[512], host[ADDR_TEXT_MAX + 8], *auth;
	long status = 0;
	CURLcode rc;

	if (c->admin.family == AF_UNIX) {
		snprintf(url, sizeof(url), "http://localhost%s", path);
		curl_easy_setopt(c->curl, CURLOPT_UNIX_SOCKET_PATH,
		    c->admin.text + strlen("unix:"));
	} else {
		addr_format((struct sockaddr *)&c->admin.ss, c->admin.len, host,
		    sizeof(host));
		snprintf(url, sizeof(url), "http://%s%s", host, path);
	}
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_PROXY, "");
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)CTL_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)CTL_TIMEOUT_MS);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, ctl_write_cb);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(c->curl, CURLOPT_USERAGENT,
	    "circuitproxyctl/" PACKAGE_VERSION);
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, 0L);
	} else
		curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
	if (c->token != NULL) {
		xasprintf(&auth, "Authorization: Bearer %s", c->token);
		hdrs = curl_slist_append(hdrs, auth);
		free(auth);
		if (hdrs == NULL)
			fatalx("out of memory");
		curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
	}
	*b = (struct util_buf){ 0 };
	util_buf_add(b, "", 0);
	rc = curl_easy_perform(c->curl);
	curl_slist_free_all(hdrs);
	if (rc == CURLE_COULDNT_CONNECT && c->admin.family == AF_UNIX)
		ctl_unix_why(c);
	if (rc != CURLE_OK) {
		fprintf(stderr, "circuitproxyctl: no answer from %s: %s\n",
		    c->admin.text, curl_easy_strerror(rc));
		exit(CTL_EXIT_NO_ANSWER);
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

/*
 * Exit with the status an answer other than 200 calls for: 3 for 401, 2
 * for a 404 about an upstream (name given), 1 for anything else.
 */
static void
ctl_check(struct ctl *c, long status, const char *name)
{
	if (status == 200)
		return;
	if (status == 401) {
		fprintf(stderr,
		    "circuitproxyctl: %s refused the request (401): %s\n",
		    c->admin.text,
		    c->token == NULL ? "it needs a token (admin_token, or -T)"
				     : "wrong token");
		exit(CTL_EXIT_REFUSED);
	}
	if (status == 404 && name != NULL) {
		fprintf(stderr, "circuitproxyctl: unknown upstream '%s'\n",
		    name);
		exit(CTL_EXIT_UNKNOWN);
	}
	fprintf(stderr, "circuitproxyctl: unexpected answer %ld from %s\n",
	    status, c->admin.text);
	exit(CTL_EXIT_NO_ANSWER);
}

/* Parse an answer's JSON, or exit 1. */
static struct json *
ctl_parse(struct ctl *c, const struct util_buf *b)
{
	struct json *j;
	char *cause = NULL;

	if ((j = json_parse(b->p, b->len, &cause)) == NULL) {
		fprintf(stderr, "circuitproxyctl: bad JSON from %s: %s\n",
		    c->admin.text, cause);
		exit(CTL_EXIT_NO_ANSWER);
	}
	return j;
}

/* The columns of status, as SPEC.md 2 lists them. */
enum ctl_col {
	COL_NAME,
	COL_STATE,
	COL_RETRY,
	COL_RATE,
	COL_ATTEMPTS,
	COL_REJECTS,
	COL_ACTIVE,
	COL_COUNT
};
static const char *ctl_col_names[COL_COUNT] = { "UPSTREAM", "STATE",
	"RETRY_AFTER", "FAILURE_RATE", "ATTEMPTS", "REJECTS", "ACTIVE" };

/* Format one member of a STATS object as a cell. */
static void
ctl_cell(const struct json *st, enum ctl_col col, char *buf, size_t len)
{
	const char *key[COL_COUNT] = { NULL, "state", "retry_after",
		"failure_rate", "attempts_total", "rejected_total",
		"active_connections" };
	const struct json *v = key[col] ? json_get(st, key[col]) : NULL;

	/* A forced_closed circuit has no retry-after, but may have an end. */
	if (col == COL_RETRY && (v == NULL || v->type == JSON_NULL))
		v = json_get(st, "expires_in");
	if (col == COL_NAME)
		snprintf(buf, len, "%s", st->key);
	else if (v == NULL || v->type == JSON_NULL)
		snprintf(buf, len, "-");
	else if (v->type == JSON_STRING)
		snprintf(buf, len, "%s", v->text);
	else if (v->type != JSON_NUMBER)
		snprintf(buf, len, "?");
	else if (col == COL_RETRY)
		snprintf(buf, len, "%.1fs", v->num);
	else if (col == COL_RATE)
		snprintf(buf, len, "%.1f%%", v->num * 100.0);
	else
		snprintf(buf, len, "%s", v->text);
}

/* Print a header and one aligned row per STATS object in the list. */
static void
ctl_table(const struct json *first, bool one)
{
	const struct json *u;
	char cell[128];
	int w[COL_COUNT], n, i;

	for (i = 0; i < COL_COUNT; i++)
		w[i] = (int)strlen(ctl_col_names[i]);
	for (u = first; u != NULL; u = one ? NULL : u->next)
		for (i = 0; i < COL_COUNT; i++) {
			ctl_cell(u, (enum ctl_col)i, cell, sizeof(cell));
			if ((n = (int)strlen(cell)) > w[i])
				w[i] = n;
		}
	for (i = 0; i < COL_COUNT; i++)
		printf(i <= COL_STATE ? "%-*s%s" : "%*s%s", w[i],
		    ctl_col_names[i], i + 1 < COL_COUNT ? "  " : "\n");
	for (u = first; u != NULL; u = one ? NULL : u->next)
		for (i = 0; i < COL_COUNT; i++) {
			ctl_cell(u, (enum ctl_col)i, cell, sizeof(cell));
			printf(i <= COL_STATE ? "%-*s%s" : "%*s%s", w[i], cell,
			    i + 1 < COL_COUNT ? "  " : "\n");
		}
}

/* A number member of a JSON object, or -1 if absent or not a number. */
static double
ctl_num(const struct json *o, const char *key)
{
	const struct json *v = json_get(o, key);

	return v != NULL && v->type == JSON_NUMBER ? v->num : -1;
}

/*
 * Print each pool as a group under the table: a line with its balance,
 * how many members admit, its counters and retry-after, then its members'
 * rows (found among the upstreams), indented.
 */
static void
ctl_pools(const struct json *pools, const struct json *ups)
{
	const struct json *p, *m, *members, *u, *r;
	char cell[128];
	int i, n;

	for (p = pools != NULL ? pools->child : NULL; p != NULL; p = p->next) {
		members = json_get(p, "members");
		n = 0;
		for (m = members != NULL ? members->child : NULL; m != NULL;
		     m = m->next)
			n++;
		r = json_get(p, "retry_after");
		printf("\npool %s (%s): %.0f of %d admitting, %.0f clients, "
		       "%.0f retried, %.0f rejected, %.0f active",
		    p->key,
		    json_get(p, "balance") != NULL
			? json_get(p, "balance")->text
			: "?",
		    ctl_num(p, "admitting"), n, ctl_num(p, "clients_total"),
		    ctl_num(p, "retried_total"), ctl_num(p, "rejected_total"),
		    ctl_num(p, "active_connections"));
		if (r != NULL && r->type == JSON_NUMBER)
			printf(", retry after %.1fs", r->num);
		printf("\n");
		for (m = members != NULL ? members->child : NULL; m != NULL;
		     m = m->next) {
			if (m->type != JSON_STRING ||
			    (u = json_get(ups, m->text)) == NULL)
				continue;
			printf("  ");
			for (i = 0; i < COL_COUNT; i++) {
				ctl_cell(u, (enum ctl_col)i, cell,
				    sizeof(cell));
				printf("%s%s", cell,
				    i + 1 < COL_COUNT ? "  " : "\n");
			}
		}
	}
}

/* GET /stats and print it as the status table, or with -j the JSON. */
static int
ctl_status(struct ctl *c)
{
	struct util_buf b;
	const struct json *ups;
	struct json *j;

	ctl_check(c, ctl_request(c, "GET", "/stats", &b), NULL);
	j = ctl_parse(c, &b);
	if (c->compact) {
		json_print(stdout, j, true);
		json_free(j);
		util_buf_free(&b);
		return 0;
	}
	ups = json_get(j, "upstreams");
	if (ups == NULL || ups->type != JSON_OBJECT) {
		fprintf(stderr,
		    "circuitproxyctl: no upstreams in the answer "
		    "of %s\n",
		    c->admin.text);
		exit(CTL_EXIT_NO_ANSWER);
	}
	ctl_table(ups->child, false);
	ctl_pools(json_get(j, "pools"), ups);
	json_free(j);
	util_buf_free(&b);
	return 0;
}

/* Print an upstream's STATS answer: its table row, or the JSON with -j. */
static void
ctl_print_stats(struct ctl *c, const struct util_buf *b, const char *name)
{
	struct json *j = ctl_parse(c, b);

	if (c->compact)
		json_print(stdout, j, true);
	else {
		free(j->key);
		j->key = xstrdup(name);
		ctl_table(j, true);
	}
	json_free(j);
}

/* GET /stats or /stats/NAME and print the JSON. */
static int
ctl_stats(struct ctl *c, const char *name)
{
	struct util_buf b;
	struct json *j;
	char path[128];

	snprintf(path, sizeof(path), "/stats%s%s", name ? "/" : "",
	    name ? name : "");
	ctl_check(c, ctl_request(c, "GET", path, &b), name);
	j = ctl_parse(c, &b);
	json_print(stdout, j, c->compact);
	json_free(j);
	util_buf_free(&b);
	return 0;
}

/* POST a force or a reset to one upstream and print what it is now. */
static int
ctl_action(struct ctl *c, const char *action, const char *name,
    const char *lifetime)
{
	struct util_buf b;
	char path[256];

	snprintf(path, sizeof(path), "/upstreams/%s/%s%s%s", name, action,
	    lifetime ? "?for=" : "", lifetime ? lifetime : "");
	ctl_check(c, ctl_request(c, "POST", path, &b), name);
	ctl_print_stats(c, &b, name);
	util_buf_free(&b);
	return 0;
}

/* POST /reset, then show every upstream as status does. */
static int
ctl_reset_all(struct ctl *c)
{
	struct util_buf b;

	ctl_check(c, ctl_request(c, "POST", "/reset", &b), NULL);
	util_buf_free(&b);
	if (c->compact) {
		ctl_check(c, ctl_request(c, "GET", "/stats", &b), NULL);
		json_free(ctl_parse(c, &b));
		fputs(b.p, stdout);
		util_buf_free(&b);
		return 0;
	}
	return ctl_status(c);
}

/* Check a command's words before anything is sent. */
static void
ctl_check_args(int argc, char **argv)
{
	const char *cmd = argv[0];
	uint64_t ms;
	char *cause = NULL;

	if (strcmp(cmd, "status") == 0) {
		if (argc != 1)
			ctl_usage_error("status takes no argument");
	} else if (strcmp(cmd, "stats") == 0) {
		if (argc > 2)
			ctl_usage_error("stats takes at most one NAME");
		if (argc == 2 && !config_name_valid(argv[1]))
			ctl_usage_error("'%s' is not an upstream name",
			    argv[1]);
	} else if (strcmp(cmd, "force-open") == 0 ||
	    strcmp(cmd, "force-closed") == 0) {
		if (argc < 2 || argc > 3)
			ctl_usage_error("%s takes NAME and an optional FOR",
			    cmd);
		if (!config_name_valid(argv[1]))
			ctl_usage_error("'%s' is not an upstream name",
			    argv[1]);
		if (argc == 3 &&
		    (parse_duration(argv[2], &ms, &cause) != 0 || ms == 0 ||
			strspn(argv[2], "0123456789.hms") != strlen(argv[2])))
			ctl_usage_error("FOR '%s' is not a duration like 30s "
					"or 5m",
			    argv[2]);
	} else if (strcmp(cmd, "reset") == 0) {
		if (argc != 2)
			ctl_usage_error("reset takes NAME or --all");
		if (strcmp(argv[1], "--all") != 0 &&
		    !config_name_valid(argv[1]))
			ctl_usage_error("'%s' is not an upstream name",
			    argv[1]);
	} else
		ctl_usage_error("unknown command '%s'", cmd);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "admin", required_argument, NULL, 'a' },
		{ "token-file", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = CP_CONFIG_PATH, *addr = NULL, *token_file = NULL;
	struct ctl c;
	bool path_given = false;
	int ch, status;

	memset(&c, 0, sizeof(c));
	/* "+": options stop at the command, so "reset --all" reaches it. */
	while ((ch = getopt_long(argc, argv, "+c:a:T:jVh", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			path_given = true;
			break;
		case 'a':
			addr = optarg;
			break;
		case 'T':
			token_file = optarg;
			break;
		case 'j':
			c.compact = true;
			break;
		case 'V':
			printf("circuitproxyctl %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			ctl_usage(stdout, 0);
		default:
			ctl_usage(stderr, EX_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0)
		ctl_usage_error("no command");
	ctl_check_args(argc, argv);
	ctl_setup(&c, path, path_given, addr, token_file);

	if (curl_global_init(CURL_GLOBAL_NOTHING) != 0 ||
	    (c.curl = curl_easy_init()) == NULL) {
		fprintf(stderr, "circuitproxyctl: cannot start libcurl\n");
		return CTL_EXIT_NO_ANSWER;
	}
	if (strcmp(argv[0], "status") == 0)
		status = ctl_status(&c);
	else if (strcmp(argv[0], "stats") == 0)
		status = ctl_stats(&c, argc == 2 ? argv[1] : NULL);
	else if (strcmp(argv[0], "reset") == 0 && strcmp(argv[1], "--all") == 0)
		status = ctl_reset_all(&c);
	else
		status = ctl_action(&c, argv[0], argv[1],
		    argc == 3 ? argv[2] : NULL);
	curl_easy_cleanup(c.curl);
	curl_global_cleanup();
	free(c.token);
	return status;
}
