/*
 * End-to-end stories of the admin endpoint (SPEC.md section 7): the real
 * daemon with its admin address, spoken to with a small HTTP client of our
 * own (to send what curl would not: garbage, huge headers, a trickle), and
 * with the operators' tools where they are installed: curl, promtool and a
 * headless Chromium for the status page. A story whose tool is missing
 * says so ("SKIP") and checks nothing else.
 */
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* The admin endpoint's bounds, as src/admin.c sets them. */
#define ADMIN_DEADLINE_MS 5000
#define ADMIN_MAX_CONNECTIONS 64 /* with RLIMIT_NOFILE 256: a quarter */

#define ALEN(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ */
/* Configs */

/* [global] with an admin address and, unless NULL, a token. */
static const char *
global_admin(const char *admin, const char *token)
{
	return h_strf("[global]\n"
		      "log_level = info\n"
		      "workers = 2\n"
		      "admin = %s\n"
		      "%s%s%s"
		      "shutdown_timeout = 3s\n"
		      "\n",
	    admin, token != NULL ? "admin_token = " : "",
	    token != NULL ? token : "", token != NULL ? "\n" : "");
}

/* Start the daemon with admin (and a token) and one upstream "api". */
#define start_api(admin, token, listen, server)                                \
	h_daemon_start(h_strf("%s%s", global_admin((admin), (token)),          \
	    h_upstream("api", (listen), h_backend_addr(server), NULL)))

/* ------------------------------------------------------------------ */
/* A small HTTP/1.1 client: one request per connection. */

struct resp {
	int status; /* 0: no status line came */
	char *head; /* status line and headers */
	char *body;
	size_t body_len;
	enum h_outcome end;
};

/* Split a raw reply into status, head and body. */
static void
resp_parse(struct resp *r, char *raw, size_t len)
{
	char *sep = strstr(raw, "\r\n\r\n");

	r->status = 0;
	r->head = raw;
	r->body = raw + len;
	r->body_len = 0;
	if (sep == NULL)
		return;
	*sep = '\0';
	r->body = sep + 4;
	r->body_len = len - (size_t)(r->body - raw);
	if (strncmp(raw, "HTTP/1.", 7) == 0 && strlen(raw) > 12)
		r->status = atoi(raw + 9);
}

/* A header's value in a reply (case-insensitive name), or NULL. */
static const char *
resp_header(const struct resp *r, const char *name)
{
	const char *p = r->head;
	size_t n = strlen(name);
	char *v, *e;

	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			p += n + 1;
			while (*p == ' ')
				p++;
			e = strstr(p, "\r\n");
			v = h_strf("%.*s",
			    e != NULL ? (int)(e - p) : (int)strlen(p), p);
			return v;
		}
	}
	return NULL;
}

/* Send raw bytes to addr and read until the server closes. */
static void
http_raw(const char *addr, const char *req, size_t len, struct resp *r)
{
	char *raw;
	size_t got;
	int fd = h_connect_ok(addr);

	h_assert(h_send_all(fd, req, len, H_WAIT_MS) == 0, "send to %s", addr);
	r->end = h_recv_all(fd, &raw, &got, 2 * H_WAIT_MS);
	close(fd);
	resp_parse(r, raw, got);
}

/* The Host header a client of addr sends, as curl would. */
static const char *
host_of(const char *addr)
{
	return strncmp(addr, "unix:", 5) == 0 ? "localhost" : addr;
}

/*
 * Send one request (Connection: close) with extra header lines; a Host
 * among them replaces the usual one.
 */
static struct resp
http(const char *addr, const char *method, const char *path,
    const char *headers)
{
	struct resp r;
	bool host = headers != NULL &&
	    (strncasecmp(headers, "Host:", 5) == 0 ||
		strcasestr(headers, "\nHost:") != NULL);
	char *req =
	    h_strf("%s %s HTTP/1.1\r\n%s%s%sConnection: close\r\n%s\r\n",
		method, path, host ? "" : "Host: ", host ? "" : host_of(addr),
		host ? "" : "\r\n", headers != NULL ? headers : "");

	http_raw(addr, req, strlen(req), &r);
	return r;
}

/* A request that must get the given status; returns the reply. */
#define http_expect(addr, method, path, headers, want)                         \
	http_expect_at(H_WHERE, (addr), (method), (path), (headers), (want))
static struct resp
http_expect_at(const char *where, const char *addr, const char *method,
    const char *path, const char *headers, int want)
{
	struct resp r = http(addr, method, path, headers);

	if (r.status != want)
		h_fail(where, "%s %s: status %d, %d expected\n%s\n\n%.*s",
		    method, path, r.status, want, r.head, (int)r.body_len,
		    r.body);
	return r;
}

/* ------------------------------------------------------------------ */
/* A strict JSON reader (RFC 8259), enough to check STATS. */

enum jt { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jt t;
	double num;
	const char *str;
	size_t n;
	const char **keys; /* J_OBJ */
	struct jv **items; /* J_ARR, J_OBJ */
};

struct jp {
	const char *p;
	const char *err;
};

static struct jv *json_value(struct jp *);

/* Skip JSON whitespace. */
static void
json_ws(struct jp *j)
{
	while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
		j->p++;
}

/* A new value of a type. */
static struct jv *
json_new(enum jt t)
{
	struct jv *v = h_track(calloc(1, sizeof(*v)));

	v->t = t;
	return v;
}

/* A string literal, escapes decoded (\u as '?' beyond ASCII). */
static const char *
json_string(struct jp *j)
{
	char *out = h_track(malloc(strlen(j->p) + 1)), *o = out;

	if (*j->p++ != '"') {
		j->err = "string expected";
		return NULL;
	}
	for (;;) {
		unsigned char c = (unsigned char)*j->p++;

		if (c == '"')
			break;
		if (c < 0x20) {
			j->err = c == 0 ? "unterminated string"
					: "raw control character in string";
			return NULL;
		}
		if (c != '\\') {
			*o++ = (char)c;
			continue;
		}
		c = (unsigned char)*j->p++;
		switch (c) {
		case '"':
		case '\\':
		case '/':
			*o++ = (char)c;
			break;
		case 'b':
			*o++ = '\b';
			break;
		case 'f':
			*o++ = '\f';
			break;
		case 'n':
			*o++ = '\n';
			break;
		case 'r':
			*o++ = '\r';
			break;
		case 't':
			*o++ = '\t';
			break;
		case 'u': {
			unsigned v = 0;
			int k;

			for (k = 0; k < 4; k++) {
				if (!isxdigit((unsigned char)j->p[k])) {
					j->err = "bad \\u escape";
					return NULL;
				}
				v = v * 16 +
				    (unsigned)(isdigit((unsigned char)j->p[k])
					    ? j->p[k] - '0'
					    : tolower((unsigned char)j->p[k]) -
						'a' + 10);
			}
			j->p += 4;
			*o++ = v < 0x80 ? (char)v : '?';
			break;
		}
		default:
			j->err = "bad escape";
			return NULL;
		}
	}
	*o = '\0';
	return out;
}

/* A number, by the RFC's grammar. */
static struct jv *
json_number(struct jp *j)
{
	const char *s = j->p;
	struct jv *v;

	if (*j->p == '-')
		j->p++;
	if (*j->p == '0')
		j->p++;
	else if (*j->p >= '1' && *j->p <= '9')
		while (isdigit((unsigned char)*j->p))
			j->p++;
	else {
		j->err = "bad number";
		return NULL;
	}
	if (*j->p == '.') {
		j->p++;
		if (!isdigit((unsigned char)*j->p)) {
			j->err = "bad fraction";
			return NULL;
		}
		while (isdigit((unsigned char)*j->p))
			j->p++;
	}
	if (*j->p == 'e' || *j->p == 'E') {
		j->p++;
		if (*j->p == '+' || *j->p == '-')
			j->p++;
		if (!isdigit((unsigned char)*j->p)) {
			j->err = "bad exponent";
			return NULL;
		}
		while (isdigit((unsigned char)*j->p))
			j->p++;
	}
	v = json_new(J_NUM);
	v->num = strtod(s, NULL);
	v->str = h_strf("%.*s", (int)(j->p - s), s);
	return v;
}

/* An array or object body after its opening bracket. */
static struct jv *
json_container(struct jp *j, bool obj)
{
	struct jv *v = json_new(obj ? J_OBJ : J_ARR), *item;
	const char *key = NULL;

	json_ws(j);
	if (*j->p == (obj ? '}' : ']')) {
		j->p++;
		return v;
	}
	for (;;) {
		json_ws(j);
		if (obj) {
			if ((key = json_string(j)) == NULL)
				return NULL;
			json_ws(j);
			if (*j->p++ != ':') {
				j->err = "':' expected";
				return NULL;
			}
		}
		if ((item = json_value(j)) == NULL)
			return NULL;
		v->items = realloc(v->items, (v->n + 1) * sizeof(*v->items));
		v->keys = realloc(v->keys, (v->n + 1) * sizeof(*v->keys));
		v->items[v->n] = item;
		v->keys[v->n] = key;
		v->n++;
		json_ws(j);
		if (*j->p == ',') {
			j->p++;
			continue;
		}
		if (*j->p++ != (obj ? '}' : ']')) {
			j->err =
			    obj ? "',' or '}' expected" : "',' or ']' expected";
			return NULL;
		}
		h_track(v->items);
		h_track(v->keys);
		return v;
	}
}

/* Any value. */
static struct jv *
json_value(struct jp *j)
{
	struct jv *v;

	json_ws(j);
	switch (*j->p) {
	case '{':
		j->p++;
		return json_container(j, true);
	case '[':
		j->p++;
		return json_container(j, false);
	case '"':
		v = json_new(J_STR);
		if ((v->str = json_string(j)) == NULL)
			return NULL;
		return v;
	case 'n':
		if (strncmp(j->p, "null", 4) == 0) {
			j->p += 4;
			return json_new(J_NULL);
		}
		break;
	case 't':
	case 'f':
		if (strncmp(j->p, "true", 4) == 0 ||
		    strncmp(j->p, "false", 5) == 0) {
			v = json_new(J_BOOL);
			v->num = *j->p == 't';
			j->p += *j->p == 't' ? 4 : 5;
			return v;
		}
		break;
	default:
		return json_number(j);
	}
	j->err = "unexpected character";
	return NULL;
}

/* Parse a whole document or fail the test, naming the place. */
#define json_parse(text) json_parse_at(H_WHERE, (text))
static struct jv *
json_parse_at(const char *where, const char *text)
{
	struct jp j = { text, NULL };
	struct jv *v = json_value(&j);

	if (v != NULL) {
		json_ws(&j);
		if (*j.p != '\0') {
			j.err = "text after the document";
			v = NULL;
		}
	}
	if (v == NULL)
		h_fail(where, "bad JSON (%s) at offset %ld: %.60s\n%s", j.err,
		    (long)(j.p - text), j.p, text);
	return v;
}

/* A member of an object, or NULL. */
static struct jv *
jget(const struct jv *o, const char *key)
{
	size_t i;

	if (o == NULL || o->t != J_OBJ)
		return NULL;
	for (i = 0; i < o->n; i++)
		if (strcmp(o->keys[i], key) == 0)
			return o->items[i];
	return NULL;
}

/* A member that must be there, of a type. */
#define jmust(o, key, type) jmust_at(H_WHERE, (o), (key), (type))
static struct jv *
jmust_at(const char *where, const struct jv *o, const char *key, enum jt t)
{
	static const char *names[] = { "null", "bool", "number", "string",
		"array", "object" };
	struct jv *v = jget(o, key);

	if (v == NULL)
		h_fail(where, "no \"%s\" in the object", key);
	if (v->t != t)
		h_fail(where, "\"%s\" is a %s, a %s expected", key, names[v->t],
		    names[t]);
	return v;
}

/* A member that must be a whole number >= 0. */
#define jcount(o, key) jcount_at(H_WHERE, (o), (key))
static double
jcount_at(const char *where, const struct jv *o, const char *key)
{
	struct jv *v = jmust_at(where, o, key, J_NUM);

	if (v->num < 0 || v->num != floor(v->num) || strchr(v->str, '.') ||
	    strchr(v->str, 'e') || strchr(v->str, 'E'))
		h_fail(where, "\"%s\" = %s, a whole number >= 0 expected", key,
		    v->str);
	return v->num;
}

/* GET /stats/NAME (with the token header, or NULL), parsed. */
static struct jv *
stats_of(const char *admin, const char *name, const char *auth)
{
	struct resp r =
	    http_expect(admin, "GET", h_strf("/stats/%s", name), auth, 200);

	return json_parse(r.body);
}

/* ------------------------------------------------------------------ */
/* A strict reader of the Prometheus text format 0.0.4. */

struct sample {
	char *name;   /* as written */
	char *labels; /* as written between the braces, or "" */
	char *le;     /* the le label of a bucket, or NULL */
	char *family;
	double v;
};

struct prom {
	struct sample *s;
	size_t n;
	char **fam; /* families in order, each once */
	char **fam_type;
	size_t nfam;
};

/* Is c a character of a metric name (first: no digit)? */
static bool
prom_name_char(char c, bool first)
{
	return isalpha((unsigned char)c) || c == '_' || c == ':' ||
	    (!first && isdigit((unsigned char)c));
}

/* A family index by name, or -1. */
static long
prom_family(const struct prom *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nfam; i++)
		if (strcmp(p->fam[i], name) == 0)
			return (long)i;
	return -1;
}

/* The family a sample name belongs to (histogram suffixes taken off). */
static const char *
prom_sample_family(const struct prom *p, const char *name)
{
	static const char *suffix[] = { "_bucket", "_sum", "_count" };
	size_t i, n = strlen(name), k;

	for (i = 0; i < ALEN(suffix); i++) {
		k = strlen(suffix[i]);
		if (n > k && strcmp(name + n - k, suffix[i]) == 0) {
			char *base = h_strf("%.*s", (int)(n - k), name);
			long f = prom_family(p, base);

			if (f >= 0 && strcmp(p->fam_type[f], "histogram") == 0)
				return base;
		}
	}
	return name;
}

/* Parse a whole exposition or fail the test at the offending line. */
#define prom_parse(text) prom_parse_at(H_WHERE, (text))
static struct prom
prom_parse_at(const char *where, const char *text)
{
	struct prom p = { NULL, 0, NULL, NULL, 0 };
	const char *line = text, *eol, *q;
	const char *types[] = { "counter", "gauge", "histogram", "summary",
		"untyped" };
	char *cur = NULL; /* the family being written */
	unsigned lineno = 0;
	size_t i;

	if (*text == '\0' || text[strlen(text) - 1] != '\n')
		h_fail(where, "the exposition does not end with a newline");
	for (; *line != '\0'; line = eol + 1) {
		char *l;

		eol = strchr(line, '\n');
		l = h_strf("%.*s", (int)(eol - line), line);
		lineno++;
#define PFAIL(...)                                                             \
	h_fail(where, "metrics line %u: %s: %s", lineno, h_strf(__VA_ARGS__), l)
		if (*l == '\0')
			PFAIL("empty line");
		if (*l == '#') {
			char kind[8], name[256];
			int off = 0;

			if (sscanf(l, "# %7s %255s %n", kind, name, &off) < 2)
				PFAIL(
				    "a comment that is neither HELP nor TYPE");
			for (q = name; *q; q++)
				if (!prom_name_char(*q, q == name))
					PFAIL("bad metric name");
			if (strcmp(kind, "HELP") == 0) {
				if (off == 0 || l[off] == '\0')
					PFAIL("HELP without text");
				for (q = l + off; *q; q++)
					if (*q == '\\' && q[1] != '\\' &&
					    q[1] != 'n')
						PFAIL("bad escape in HELP");
					else if (*q == '\\')
						q++;
				if (cur == NULL || strcmp(cur, name) != 0) {
					if (prom_family(&p, name) >= 0)
						PFAIL("family %s again", name);
					cur = h_strf("%s", name);
				}
				continue;
			}
			if (strcmp(kind, "TYPE") != 0)
				PFAIL(
				    "a comment that is neither HELP nor TYPE");
			for (i = 0; i < ALEN(types); i++)
				if (strcmp(l + off, types[i]) == 0)
					break;
			if (i == ALEN(types))
				PFAIL("unknown type");
			if (prom_family(&p, name) >= 0)
				PFAIL("second TYPE of %s", name);
			if (cur != NULL && strcmp(cur, name) != 0)
				PFAIL("TYPE of %s inside family %s", name, cur);
			cur = h_strf("%s", name);
			p.fam = realloc(p.fam, (p.nfam + 1) * sizeof(*p.fam));
			p.fam_type = realloc(p.fam_type,
			    (p.nfam + 1) * sizeof(*p.fam_type));
			p.fam[p.nfam] = cur;
			p.fam_type[p.nfam] = h_strf("%s", l + off);
			p.nfam++;
			continue;
		}
		{
			struct sample s = { NULL, NULL, NULL, NULL, 0 };
			const char *c = l, *fam;
			char *end;

			while (prom_name_char(*c, c == l))
				c++;
			if (c == l)
				PFAIL("no metric name");
			s.name = h_strf("%.*s", (int)(c - l), l);
			s.labels = "";
			if (*c == '{') {
				const char *lb = ++c;

				while (*c != '}') {
					const char *ln = c;

					while (isalnum((unsigned char)*c) ||
					    *c == '_')
						c++;
					if (c == ln ||
					    isdigit((unsigned char)*ln))
						PFAIL("bad label name");
					if (strncmp(ln, "__", 2) == 0)
						PFAIL("reserved label name");
					if (c[0] != '=' || c[1] != '"')
						PFAIL("label without =\"");
					c += 2;
					{
						const char *vs = c;

						while (*c != '"') {
							if (*c == '\0')
								PFAIL("untermin"
								      "ated "
								      "label "
								      "value");
							if (*c == '\\') {
								if (c[1] !=
									'\\' &&
								    c[1] !=
									'"' &&
								    c[1] != 'n')
									PFAIL(
									    "ba"
									    "d "
									    "es"
									    "ca"
									    "p"
									    "e");
								c++;
							}
							c++;
						}
						if ((size_t)(c - ln) > 3 &&
						    strncmp(ln, "le=", 3) == 0)
							s.le = h_strf("%.*s",
							    (int)(c - vs), vs);
					}
					c++;
					if (*c == ',')
						c++;
					else if (*c != '}')
						PFAIL("',' or '}' expected");
				}
				s.labels = h_strf("%.*s", (int)(c - lb), lb);
				c++;
			}
			if (*c != ' ')
				PFAIL("no space before the value");
			c++;
			if (strcmp(c, "+Inf") == 0)
				s.v = INFINITY;
			else if (strcmp(c, "-Inf") == 0)
				s.v = -INFINITY;
			else if (strcmp(c, "NaN") == 0)
				s.v = NAN;
			else {
				errno = 0;
				s.v = strtod(c, &end);
				if (end == c || errno != 0 ||
				    (*end != '\0' && *end != ' '))
					PFAIL("bad value");
				if (*end == ' ') {
					/* A timestamp: an integer. */
					for (q = end + 1; *q; q++)
						if (!isdigit(
							(unsigned char)*q) &&
						    !(q == end + 1 &&
							*q == '-'))
							PFAIL("bad timestamp");
				}
			}
			fam = prom_sample_family(&p, s.name);
			if (prom_family(&p, fam) < 0)
				PFAIL("sample before its TYPE");
			if (cur == NULL || strcmp(cur, fam) != 0)
				PFAIL("sample of %s inside family %s", fam,
				    cur != NULL ? cur : "none");
			s.family = h_strf("%s", fam);
			if (strcmp(p.fam_type[prom_family(&p, fam)],
				"counter") == 0 &&
			    !(s.v >= 0))
				PFAIL("a counter below 0");
			for (i = 0; i < p.n; i++)
				if (strcmp(p.s[i].name, s.name) == 0 &&
				    strcmp(p.s[i].labels, s.labels) == 0)
					PFAIL("the same series twice");
			p.s = realloc(p.s, (p.n + 1) * sizeof(*p.s));
			p.s[p.n++] = s;
		}
#undef PFAIL
	}
	h_track(p.s);
	h_track(p.fam);
	h_track(p.fam_type);
	return p;
}

/* A series' value, or NAN if there is none. */
static double
prom_value(const struct prom *p, const char *name, const char *labels)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		if (strcmp(p->s[i].name, name) == 0 &&
		    strcmp(p->s[i].labels, labels) == 0)
			return p->s[i].v;
	return NAN;
}

/* ------------------------------------------------------------------ */
/* Operators' tools, run as they are installed. */

/* The full path of an installed program, or NULL. */
static const char *
tool(const char *name)
{
	const char *path = h_which(name);

	return strchr(path, '/') != NULL && access(path, X_OK) == 0 ? path
								    : NULL;
}

/*
 * Run a program with input on its stdin, within ms; its exit status (or
 * -1 when it had to be killed), stdout and stderr.
 */
static int
tool_run(const char *const *argv, const char *input, int ms, char **out,
    char **err)
{
	int ip[2], op[2], ep[2], st = -1, fl;
	size_t olen = 0, elen = 0, ilen = input != NULL ? strlen(input) : 0;
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	char *ob = calloc(1, 1), *eb = calloc(1, 1), buf[16384];
	struct pollfd pfd[3];
	pid_t pid;

	h_assert(pipe(ip) == 0 && pipe(op) == 0 && pipe(ep) == 0, "pipe");
	pid = fork();
	h_assert(pid != -1, "fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(ip[0], 0);
		dup2(op[1], 1);
		dup2(ep[1], 2);
		close(ip[1]);
		close(op[0]);
		close(ep[0]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(ip[0]);
	close(op[1]);
	close(ep[1]);
	fl = fcntl(ip[1], F_GETFL);
	fcntl(ip[1], F_SETFL, fl | O_NONBLOCK);
	pfd[0].fd = ilen > 0 ? ip[1] : -1;
	if (ilen == 0)
		close(ip[1]);
	pfd[1].fd = op[0];
	pfd[2].fd = ep[0];
	pfd[0].events = POLLOUT;
	pfd[1].events = pfd[2].events = POLLIN;
	while ((pfd[1].fd != -1 || pfd[2].fd != -1) && h_now_ms() < deadline) {
		int i;

		if (poll(pfd, 3, (int)(deadline - h_now_ms())) <= 0)
			continue;
		if (pfd[0].fd != -1 && pfd[0].revents != 0) {
			ssize_t w = write(ip[1], input, ilen);

			if (w > 0) {
				input += w;
				ilen -= (size_t)w;
			}
			if (w < 0 || ilen == 0) {
				close(ip[1]);
				pfd[0].fd = -1;
			}
		}
		for (i = 1; i < 3; i++) {
			ssize_t n;

			if (pfd[i].fd == -1 || pfd[i].revents == 0)
				continue;
			n = read(pfd[i].fd, buf, sizeof(buf));
			if (n > 0) {
				char **b = i == 1 ? &ob : &eb;
				size_t *bl = i == 1 ? &olen : &elen;

				*b = realloc(*b, *bl + (size_t)n + 1);
				memcpy(*b + *bl, buf, (size_t)n);
				*bl += (size_t)n;
				(*b)[*bl] = '\0';
			} else if (n == 0 || errno != EINTR) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
			}
		}
	}
	if (pfd[0].fd != -1)
		close(ip[1]);
	if (pfd[1].fd != -1 || pfd[2].fd != -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		st = -1;
	} else if (waitpid(pid, &st, 0) == pid)
		st = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (pfd[1].fd != -1)
		close(op[0]);
	if (pfd[2].fd != -1)
		close(ep[0]);
	*out = h_track(ob);
	*err = h_track(eb);
	return st;
}

/* The URL of an admin address ("127.0.0.1:P" -> "http://127.0.0.1:P"). */
static const char *
url(const char *admin, const char *path)
{
	return h_strf("http://%s%s", admin, path);
}

/* ------------------------------------------------------------------ */
/* Stories */

/* Trip an upstream whose server refuses: n clients are reset. */
static void
trip(const char *listen, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		h_client_expect_reset(listen, H_WAIT_MS, NULL);
}

/*
 * Every route and status code of SPEC.md 7: the page, /health, /stats,
 * /stats/NAME, /metrics, the three overrides, /reset; 404 for unknown
 * paths and names, 405 (with Allow) for a known path with the wrong
 * method, 400 for a bad ?for=.
 */
START_TEST(admin_routes)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, NULL, l1, echo);
	static const struct {
		const char *method, *path, *allow;
	} wrong[] = {
		{ "POST", "/", "GET, HEAD" },
		{ "PUT", "/", "GET, HEAD" },
		{ "POST", "/health", "GET, HEAD" },
		{ "DELETE", "/stats", "GET, HEAD" },
		{ "POST", "/stats/api", "GET, HEAD" },
		{ "PATCH", "/metrics", "GET, HEAD" },
		{ "GET", "/upstreams/api/force-open", "POST" },
		{ "GET", "/upstreams/api/force-closed", "POST" },
		{ "PUT", "/upstreams/api/reset", "POST" },
		{ "GET", "/reset", "POST" },
	};
	static const char *missing[] = { "/nope", "/stats/", "/stats/nope",
		"/stats/api/x", "/Stats", "/upstreams", "/upstreams/api",
		"/upstreams/api/", "/upstreams/api/open", "/health/x",
		"/metrics/" };
	struct resp r, r2;
	const char *csp, *type, *nonce;
	struct jv *j;
	size_t i;

	r = http_expect(admin, "GET", "/", NULL, 200);
	type = resp_header(&r, "Content-Type");
	h_assert(type != NULL && strncmp(type, "text/html", 9) == 0,
	    "page type %s", type);
	csp = resp_header(&r, "Content-Security-Policy");
	h_assert(csp != NULL, "no CSP on the page:\n%s", r.head);
	h_assert(strstr(csp, "default-src 'none'") != NULL &&
		strstr(csp, "unsafe-inline") == NULL &&
		strstr(csp, "unsafe-eval") == NULL &&
		strstr(csp, "connect-src 'self'") != NULL &&
		strstr(csp, "frame-ancestors 'none'") != NULL,
	    "CSP not strict: %s", csp);
	nonce = strstr(csp, "script-src 'nonce-");
	h_assert(nonce != NULL, "no script nonce: %s", csp);
	nonce = h_strf("%.32s", nonce + strlen("script-src 'nonce-"));
	h_assert(strstr(r.body, h_strf("<script nonce=\"%s\">", nonce)) != NULL,
	    "the page's script does not carry the CSP nonce %s", nonce);
	h_assert(strstr(r.body, h_strf("<style nonce=\"%s\">", nonce)) != NULL,
	    "the page's style does not carry the CSP nonce %s", nonce);
	h_assert(strstr(r.body, "src=") == NULL &&
		strstr(r.body, "http://") == NULL &&
		strstr(r.body, "https://") == NULL &&
		strstr(r.body, "@NONCE@") == NULL,
	    "the page refers to something outside itself");
	r2 = http_expect(admin, "GET", "/", NULL, 200);
	h_assert(strstr(r2.body, nonce) == NULL, "the nonce did not change");
	r = http_expect(admin, "HEAD", "/", NULL, 200);
	h_assert(r.body_len == 0, "HEAD / sent a body");

	r = http_expect(admin, "GET", "/health", NULL, 200);
	h_assert(strcmp(r.body, "ok\n") == 0, "/health said '%s'", r.body);
	r = http_expect(admin, "HEAD", "/health", NULL, 200);
	h_assert(r.body_len == 0, "HEAD /health sent a body");

	r = http_expect(admin, "GET", "/stats", NULL, 200);
	type = resp_header(&r, "Content-Type");
	h_assert(type != NULL && strcmp(type, "application/json") == 0,
	    "/stats type %s", type);
	j = json_parse(r.body);
	h_assert(jget(jget(j, "upstreams"), "api") != NULL, "no api in /stats");
	r = http_expect(admin, "GET", "/stats?pretty=1", NULL, 400);
	h_assert(strstr(r.body, "'pretty'") != NULL,
	    "the 400 does not name the parameter: %.*s", (int)r.body_len,
	    r.body);
	r = http_expect(admin, "GET", "/stats/api", NULL, 200);
	j = json_parse(r.body);
	h_assert(strcmp(jmust(j, "state", J_STR)->str, "closed") == 0,
	    "state %s", jget(j, "state")->str);

	r = http_expect(admin, "GET", "/metrics", NULL, 200);
	type = resp_header(&r, "Content-Type");
	h_assert(type != NULL &&
		strncmp(type, "text/plain; version=0.0.4", 25) == 0,
	    "/metrics type %s", type);

	r = http_expect(admin, "POST", "/upstreams/api/force-open", NULL, 200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(j, "state")->str, "forced_open") == 0 &&
		jmust(j, "retry_after", J_NULL) != NULL,
	    "after force-open: %s", r.body);
	r = http_expect(admin, "POST", "/upstreams/api/force-closed", NULL,
	    200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(j, "state")->str, "forced_closed") == 0,
	    "after force-closed: %s", r.body);
	r = http_expect(admin, "POST", "/upstreams/api/reset", NULL, 200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(j, "state")->str, "closed") == 0,
	    "after reset: %s", r.body);
	r = http_expect(admin, "POST", "/reset", NULL, 200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(jget(jget(j, "upstreams"), "api"), "state")->str,
		     "closed") == 0,
	    "after POST /reset: %s", r.body);

	http_expect(admin, "POST", "/upstreams/nope/force-open", NULL, 404);
	http_expect(admin, "POST", "/upstreams/nope/force-closed", NULL, 404);
	http_expect(admin, "POST", "/upstreams/nope/reset", NULL, 404);
	for (i = 0; i < ALEN(missing); i++)
		http_expect(admin, "GET", missing[i], NULL, 404);
	for (i = 0; i < ALEN(wrong); i++) {
		const char *allow;

		r = http_expect(admin, wrong[i].method, wrong[i].path, NULL,
		    405);
		allow = resp_header(&r, "Allow");
		h_assert(allow != NULL && strcmp(allow, wrong[i].allow) == 0,
		    "%s %s: Allow: %s", wrong[i].method, wrong[i].path,
		    allow != NULL ? allow : "(none)");
	}
	r = http_expect(admin, "POST", "/upstreams/api/force-open?for=soon",
	    NULL, 400);
	r = http_expect(admin, "POST", "/upstreams/api/force-open?for=0", NULL,
	    400);
	j = stats_of(admin, "api", NULL);
	h_assert(strcmp(jget(j, "state")->str, "closed") == 0,
	    "a refused force changed the state: %s", jget(j, "state")->str);
	h_assert(h_echo_roundtrip(l1, "still", H_WAIT_MS),
	    "the proxy stopped relaying");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * SPEC.md 7, issue 18: a query parameter other than the route's, or the
 * route's given twice, is 400 naming it, and changes nothing: a typo
 * (?fro=5m) must never force a circuit open until reset.
 */
START_TEST(admin_query_params)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, NULL, l1, echo);
	static const struct {
		const char *method, *path, *named;
	} bad[] = {
		{ "POST", "/upstreams/api/force-open?fro=5m", "'fro'" },
		{ "POST", "/upstreams/api/force-open?for=5m&for=1s", "'for'" },
		{ "POST", "/upstreams/api/force-open?for=5m&x=1", "'x'" },
		{ "POST", "/upstreams/api/force-closed?FOR=5m", "'FOR'" },
		{ "POST", "/upstreams/api/reset?for=5m", "'for'" },
		{ "POST", "/reset?all=1", "'all'" },
		{ "GET", "/stats?x", "'x'" },
		{ "GET", "/stats/api?for=1s", "'for'" },
		{ "GET", "/metrics?name[]=x", "'name[]'" },
		{ "GET", "/health?probe=1", "'probe'" },
	};
	struct resp r;
	struct jv *j;
	size_t i;

	for (i = 0; i < ALEN(bad); i++) {
		r = http_expect(admin, bad[i].method, bad[i].path, NULL, 400);
		h_assert(strstr(r.body, bad[i].named) != NULL,
		    "%s %s: the 400 does not name %s: %.*s", bad[i].method,
		    bad[i].path, bad[i].named, (int)r.body_len, r.body);
		j = stats_of(admin, "api", NULL);
		h_assert(strcmp(jget(j, "state")->str, "closed") == 0,
		    "%s %s changed the state to %s", bad[i].method, bad[i].path,
		    jget(j, "state")->str);
	}
	/* The right one still works; an empty query is no parameter. */
	r = http_expect(admin, "POST", "/upstreams/api/force-open?for=5m", NULL,
	    200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(j, "state")->str, "forced_open") == 0 &&
		jget(j, "retry_after")->t == J_NUM &&
		jget(j, "retry_after")->num > 290,
	    "force-open?for=5m: %s", r.body);
	http_expect(admin, "POST", "/upstreams/api/reset?", NULL, 200);
	http_expect(admin, "GET", "/stats?", NULL, 200);
	/*
	 * Empty pairs are no parameter, as most HTTP servers read them: the
	 * "for" among them still counts, and alone they force with no
	 * lifetime (as with no query at all).
	 */
	http_expect(admin, "GET", "/stats?&&&", NULL, 200);
	http_expect(admin, "GET", "/health?&&&", NULL, 200);
	r = http_expect(admin, "POST", "/upstreams/api/force-open?&for=5m&&",
	    NULL, 200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(j, "state")->str, "forced_open") == 0 &&
		jget(j, "expires_in")->t == J_NUM &&
		jget(j, "expires_in")->num > 290,
	    "force-open?&for=5m&&: %s", r.body);
	r = http_expect(admin, "POST", "/upstreams/api/force-closed?&&&", NULL,
	    200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(j, "state")->str, "forced_closed") == 0 &&
		jget(j, "expires_in")->t == J_NULL,
	    "force-closed?&&&: %s", r.body);
	http_expect(admin, "POST", "/upstreams/api/reset?&&&", NULL, 200);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * SPEC.md 7, issue 18: refused requests (401, 403) are logged, at most one
 * line a second for each status, with a count that adds up to every one.
 */
START_TEST(admin_refused_logged)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, "s3cret-t0ken", l1, echo);
	const char *good = "Authorization: Bearer s3cret-t0ken\r\n";
	enum { N = 40 };
	unsigned i, sum = 0;
	uint64_t t0 = h_now_ms();
	int64_t at, last;
	size_t mark = h_log_mark(d), k;
	const char *line;
	char v[32];

	for (i = 0; i < N; i++)
		http_expect(admin, "GET", i % 2 ? "/stats" : "/metrics",
		    i % 4 == 0 ? "Authorization: Bearer wrong\r\n" : NULL, 401);
	/* A cross-site POST with the token is a 403. */
	http_expect(admin, "POST", "/reset",
	    h_strf("%sOrigin: http://evil.example\r\n", good), 403);
	h_expect_log_after(d, mark, 3000, "event=admin_refused", "status=403",
	    "count=1", "path=/reset");
	/* Every 401 is told within a second of the last. */
	for (t0 = h_now_ms(); h_now_ms() - t0 < 3000; poll(NULL, 0, 50)) {
		sum = 0;
		last = -1;
		for (k = mark; (line = h_log_line(d, k)) != NULL; k++) {
			if (!h_line_has(line, "event=admin_refused") ||
			    !h_line_has(line, "status=401"))
				continue;
			h_assert(h_log_value(line, "count", v, sizeof(v)) &&
				strstr(line, " client=127.0.0.1:") != NULL &&
				h_log_value(line, "path", v + 16, 16),
			    "admin_refused without count, client or path: %s",
			    line);
			sum += (unsigned)atoi(v);
			at = h_log_time_ms(line);
			h_assert(last < 0 || at - last >= 999,
			    "two admin_refused lines %lld ms apart",
			    (long long)(at - last));
			last = at;
		}
		if (sum == N)
			break;
	}
	h_assert(sum == N, "admin_refused counts add up to %u, not %d", sum, N);
	h_daemon_stop_ok(d);
}
END_TEST

/* Check one STATS object against SPEC.md 7: every field, its type. */
static void
check_stats_object(const char *name, const struct jv *u)
{
	static const char *states[] = { "closed", "open", "half_open",
		"forced_open", "forced_closed" };
	static const char *errors[] = { "refused", "timeout", "unreachable",
		"early_close", "slow", "dns", "other" };
	static const char *counts[] = { "consecutive_failures",
		"window_attempts", "window_failures", "attempts_total",
		"successes_total", "failures_total", "rejected_total",
		"rejected_overload_total", "failover_total", "opened_total",
		"active_connections", "bytes_sent_total",
		"bytes_received_total", "resolve_errors_total" };
	const struct jv *v, *t, *fe;
	const char *state;
	double fr, sr, sum = 0, now = h_wall_ms() / 1000.0;
	size_t i, k;

	state = jmust(u, "state", J_STR)->str;
	for (i = 0; i < ALEN(states); i++)
		if (strcmp(state, states[i]) == 0)
			break;
	h_assert(i < ALEN(states), "%s: state %s", name, state);
	v = jmust(u, "state_since", J_NUM);
	h_assert(v->num > now - 120 && v->num <= now + 1,
	    "%s: state_since %s is not unix seconds of the last minutes", name,
	    v->str);
	v = jget(u, "retry_after");
	h_assert(v != NULL &&
		(v->t == J_NULL || (v->t == J_NUM && v->num >= 0)),
	    "%s: retry_after is neither null nor seconds", name);
	if (strcmp(state, "open") == 0)
		h_assert(v->t == J_NUM, "%s: open without retry_after", name);
	if (strcmp(state, "closed") == 0 || strcmp(state, "half_open") == 0 ||
	    strcmp(state, "forced_closed") == 0)
		h_assert(v->t == J_NULL, "%s: %s with a retry_after", name,
		    state);
	v = jget(u, "expires_in");
	h_assert(v != NULL &&
		(v->t == J_NULL || (v->t == J_NUM && v->num >= 0)),
	    "%s: expires_in is neither null nor seconds", name);
	if (strncmp(state, "forced_", 7) != 0)
		h_assert(v->t == J_NULL, "%s: %s with an expires_in", name,
		    state);
	v = jmust(u, "recovery_timeout", J_NUM);
	h_assert(v->num > 0, "%s: recovery_timeout %s", name, v->str);
	for (i = 0; i < ALEN(counts); i++)
		jcount(u, counts[i]);
	fr = jmust(u, "failure_rate", J_NUM)->num;
	sr = jmust(u, "success_rate", J_NUM)->num;
	h_assert(fr >= 0 && fr <= 1 && sr >= 0 && sr <= 1 &&
		fabs(fr + sr - 1) < 1e-6,
	    "%s: failure_rate %g, success_rate %g", name, fr, sr);
	fe = jmust(u, "failures_by_error", J_OBJ);
	h_assert(fe->n == ALEN(errors), "%s: %zu error kinds", name, fe->n);
	for (i = 0; i < ALEN(errors); i++)
		sum += jcount(fe, errors[i]);
	h_assert(sum == jget(u, "failures_total")->num,
	    "%s: failures_by_error adds up to %g, failures_total %g", name, sum,
	    jget(u, "failures_total")->num);
	h_assert(jget(u, "attempts_total")->num ==
		jget(u, "successes_total")->num +
		    jget(u, "failures_total")->num,
	    "%s: attempts != successes + failures", name);
	v = jmust(u, "listen", J_ARR);
	h_assert(v->n >= 1, "%s: no listen address", name);
	for (i = 0; i < v->n; i++)
		h_assert(v->items[i]->t == J_STR, "%s: listen[%zu]", name, i);
	jmust(u, "server", J_STR);
	v = jget(u, "backup");
	h_assert(v != NULL && (v->t == J_NULL || v->t == J_STR),
	    "%s: backup is neither null nor a name", name);
	v = jmust(u, "transitions", J_ARR);
	h_assert(v->n <= 16, "%s: %zu transitions", name, v->n);
	for (i = 0; i < v->n; i++) {
		t = v->items[i];
		h_assert(t->t == J_OBJ, "%s: transition %zu", name, i);
		h_assert(jmust(t, "at", J_NUM)->num <= now + 1,
		    "%s: transition in the future", name);
		if (i > 0)
			h_assert(jget(t, "at")->num <=
				jget(v->items[i - 1], "at")->num,
			    "%s: transitions not newest first", name);
		for (k = 0; k < 2; k++) {
			const char *s =
			    jmust(t, k == 0 ? "from" : "to", J_STR)->str;
			size_t m;

			for (m = 0; m < ALEN(states); m++)
				if (strcmp(s, states[m]) == 0)
					break;
			h_assert(m < ALEN(states), "%s: transition state %s",
			    name, s);
		}
		h_assert(jget(t, "reason") != NULL &&
			(jget(t, "reason")->t == J_NULL ||
			    jget(t, "reason")->t == J_STR),
		    "%s: transition reason", name);
	}
}

/*
 * STATS field by field (SPEC.md 7), with what a user did: a relay to a
 * good server counted both ways, a refused server opened, a backup named,
 * two listen addresses (one a unix path).
 */
START_TEST(admin_stats_fields)
{
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *refuse = h_backend(H_REFUSE);
	char *admin = h_free_addr4(), *l1 = h_free_addr4(),
	     *l2 = h_free_addr(AF_UNIX), *l3 = h_free_addr4();
	double t0 = h_wall_ms() / 1000.0;
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s%s", global_admin(admin, NULL),
		h_upstream("api", h_strf("%s\nlisten = %s", l1, l2),
		    h_backend_addr(echo), NULL),
		h_upstream("db", l3, h_backend_addr(refuse),
		    "failure_threshold = 2\nrecovery_timeout = 60s\n"
		    "backup = api\n")));
	struct jv *doc, *ups, *api, *db, *v, *tr;
	struct resp r;

	h_assert(h_echo_roundtrip(l1, "hello", H_WAIT_MS), "echo via %s", l1);
	h_assert(h_backend_wait_idle(echo, H_WAIT_MS), "echo not idle");
	trip(l3, 2);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db", "to=open");

	r = http_expect(admin, "GET", "/stats", NULL, 200);
	doc = json_parse(r.body);
	h_assert(doc->t == J_OBJ, "/stats is not an object");
	h_assert(strlen(jmust(doc, "version", J_STR)->str) > 0, "no version");
	v = jmust(doc, "uptime_s", J_NUM);
	h_assert(v->num >= 0 && v->num < h_wall_ms() / 1000.0 - t0 + 1,
	    "uptime_s %s", v->str);
	ups = jmust(doc, "upstreams", J_OBJ);
	h_assert(ups->n == 2, "%zu upstreams", ups->n);
	api = jmust(ups, "api", J_OBJ);
	db = jmust(ups, "db", J_OBJ);
	check_stats_object("api", api);
	check_stats_object("db", db);

	/* api: one relay, both ways, no failure. */
	h_assert(strcmp(jget(api, "state")->str, "closed") == 0, "api %s",
	    jget(api, "state")->str);
	h_assert(jget(api, "attempts_total")->num == 1 &&
		jget(api, "successes_total")->num == 1 &&
		jget(api, "connections_total")->num == 1,
	    "api counts: %s", r.body);
	h_assert(jget(api, "bytes_sent_total")->num == 5 &&
		jget(api, "bytes_received_total")->num == 5,
	    "api bytes %g/%g, 5 each way expected",
	    jget(api, "bytes_sent_total")->num,
	    jget(api, "bytes_received_total")->num);
	h_assert(jget(api, "active_connections")->num == 0, "api active");
	v = jget(api, "listen");
	h_assert(v->n == 2 && strcmp(v->items[0]->str, l1) == 0 &&
		strcmp(v->items[1]->str, l2) == 0,
	    "api listen is not [%s, %s]", l1, l2);
	h_assert(strcmp(jget(api, "server")->str, h_backend_addr(echo)) == 0,
	    "api server %s", jget(api, "server")->str);
	h_assert(jget(api, "backup")->t == J_NULL, "api has a backup");
	h_assert(jget(api, "transitions")->n == 0, "api has transitions");

	/* db: two refused, open, backup api. */
	h_assert(strcmp(jget(db, "state")->str, "open") == 0, "db %s",
	    jget(db, "state")->str);
	h_assert(jget(jget(db, "failures_by_error"), "refused")->num == 2 &&
		jget(db, "failures_total")->num == 2 &&
		jget(db, "consecutive_failures")->num == 2 &&
		jget(db, "opened_total")->num == 1 &&
		jget(db, "failure_rate")->num == 1 &&
		jget(db, "success_rate")->num == 0,
	    "db counts: %s", r.body);
	v = jget(db, "retry_after");
	h_assert(v->t == J_NUM && v->num > 50 && v->num <= 60,
	    "db retry_after %s", v->t == J_NUM ? v->str : "null");
	h_assert(jget(db, "recovery_timeout")->num == 60, "db recovery %s",
	    jget(db, "recovery_timeout")->str);
	h_assert(strcmp(jget(db, "backup")->str, "api") == 0, "db backup");
	tr = jget(db, "transitions");
	h_assert(tr->n == 1, "db: %zu transitions", tr->n);
	h_assert(strcmp(jget(tr->items[0], "from")->str, "closed") == 0 &&
		strcmp(jget(tr->items[0], "to")->str, "open") == 0 &&
		strcmp(jget(tr->items[0], "reason")->str,
		    "consecutive_failures") == 0,
	    "db transition: %s", r.body);
	h_assert(jget(tr->items[0], "at")->num >= t0 - 1 &&
		jget(tr->items[0], "at")->num <= h_wall_ms() / 1000.0 + 1 &&
		fabs(jget(tr->items[0], "at")->num -
		    jget(db, "state_since")->num) < 0.002,
	    "db transition at %s, state_since %s, test began %.3f",
	    jget(tr->items[0], "at")->str, jget(db, "state_since")->str, t0);

	/* /stats/NAME is the same object as in /stats. */
	v = stats_of(admin, "db", NULL);
	check_stats_object("db", v);
	h_assert(jget(v, "opened_total")->num == 1, "/stats/db");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * /metrics through a strict reader of the exposition format: every family
 * of SPEC.md 7 with its TYPE, one-hot states, the histogram cumulative and
 * counted, and the numbers those of /stats.
 */
START_TEST(admin_metrics_format)
{
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *refuse = h_backend(H_REFUSE);
	char *admin = h_free_addr4(), *l1 = h_free_addr4(),
	     *l2 = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s%s", global_admin(admin, NULL),
		h_upstream("api", l1, h_backend_addr(echo), NULL),
		h_upstream("db", l2, h_backend_addr(refuse),
		    "failure_threshold = 2\nrecovery_timeout = 60s\n")));
	static const struct {
		const char *name, *type;
	} want[] = {
		{ "circuitproxy_breaker_state", "gauge" },
		{ "circuitproxy_breaker_retry_after_seconds", "gauge" },
		{ "circuitproxy_breaker_opened_total", "counter" },
		{ "circuitproxy_upstream_attempts_total", "counter" },
		{ "circuitproxy_upstream_failures_total", "counter" },
		{ "circuitproxy_upstream_rejected_total", "counter" },
		{ "circuitproxy_upstream_failovers_total", "counter" },
		{ "circuitproxy_upstream_active_connections", "gauge" },
		{ "circuitproxy_upstream_sent_bytes_total", "counter" },
		{ "circuitproxy_upstream_received_bytes_total", "counter" },
		{ "circuitproxy_upstream_connect_duration_seconds",
		    "histogram" },
		{ "circuitproxy_build_info", "gauge" },
	};
	static const char *les[] = { "0.0005", "0.001", "0.0025", "0.005",
		"0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
		"+Inf" };
	static const char *states[] = { "closed", "open", "half_open",
		"forced_open", "forced_closed" };
	struct prom p;
	struct resp r;
	struct jv *api, *db;
	double prev, v, ones;
	size_t i, k;
	long f;
	int n;

	for (n = 0; n < 3; n++)
		h_assert(h_echo_roundtrip(l1, "abc", H_WAIT_MS), "echo");
	h_assert(h_backend_wait_idle(echo, H_WAIT_MS), "echo not idle");
	trip(l2, 3);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db", "to=open");
	/* The relays end a moment after their clients close: wait for it. */
	for (n = 0;
	     jget(stats_of(admin, "api", NULL), "active_connections")->num != 0;
	     n++) {
		h_assert(n < 100, "api relays still active after 5 s");
		poll(NULL, 0, 50);
	}

	r = http_expect(admin, "GET", "/metrics", NULL, 200);
	p = prom_parse(r.body);
	api = stats_of(admin, "api", NULL);
	db = stats_of(admin, "db", NULL);
	for (i = 0; i < ALEN(want); i++) {
		f = prom_family(&p, want[i].name);
		h_assert(f >= 0, "no %s in /metrics", want[i].name);
		h_assert(strcmp(p.fam_type[f], want[i].type) == 0,
		    "%s is a %s, a %s expected", want[i].name, p.fam_type[f],
		    want[i].type);
	}
	h_assert(prom_value(&p, "circuitproxy_build_info",
		     "version=\"" PACKAGE_VERSION "\"") == 1,
	    "build_info");
	for (k = 0; k < 2; k++) {
		const char *up = k == 0 ? "api" : "db";
		const char *cur = k == 0 ? "closed" : "open";

		ones = 0;
		for (i = 0; i < ALEN(states); i++) {
			v = prom_value(&p, "circuitproxy_breaker_state",
			    h_strf("upstream=\"%s\",state=\"%s\"", up,
				states[i]));
			h_assert(v == (strcmp(states[i], cur) == 0),
			    "%s state %s = %g", up, states[i], v);
			ones += v;
		}
		h_assert(ones == 1, "%s: %g states at 1", up, ones);
	}
	h_assert(prom_value(&p, "circuitproxy_upstream_attempts_total",
		     "upstream=\"api\"") == 3,
	    "api attempts");
	h_assert(prom_value(&p, "circuitproxy_upstream_failures_total",
		     "upstream=\"db\",error=\"refused\"") == 2,
	    "db refused");
	h_assert(prom_value(&p, "circuitproxy_upstream_rejected_total",
		     "upstream=\"db\",reason=\"open\"") ==
		    jget(jget(db, "rejected_by_state"), "open")->num &&
		jget(db, "rejected_total")->num == 1,
	    "db rejects");
	h_assert(prom_value(&p, "circuitproxy_breaker_opened_total",
		     "upstream=\"db\"") == 1,
	    "db opened");
	v = prom_value(&p, "circuitproxy_breaker_retry_after_seconds",
	    "upstream=\"db\"");
	h_assert(v > 50 && v <= 60, "db retry_after_seconds %g", v);
	h_assert(prom_value(&p, "circuitproxy_breaker_retry_after_seconds",
		     "upstream=\"api\"") == 0,
	    "api retry_after_seconds");
	h_assert(prom_value(&p, "circuitproxy_upstream_sent_bytes_total",
		     "upstream=\"api\"") == 9 &&
		prom_value(&p, "circuitproxy_upstream_received_bytes_total",
		    "upstream=\"api\"") == 9 &&
		jget(api, "bytes_sent_total")->num == 9,
	    "api bytes");
	h_assert(prom_value(&p, "circuitproxy_upstream_active_connections",
		     "upstream=\"api\"") == 0,
	    "api active");
	/* The histogram: every bound, cumulative, +Inf = count = successes. */
	for (k = 0; k < 2; k++) {
		const char *up = k == 0 ? "api" : "db";
		double successes = k == 0 ? 3 : 0;

		prev = 0;
		for (i = 0; i < ALEN(les); i++) {
			v = prom_value(&p,
			    "circuitproxy_upstream_connect_duration_seconds_"
			    "bucket",
			    h_strf("upstream=\"%s\",le=\"%s\"", up, les[i]));
			h_assert(v >= prev, "%s le=%s: %g after %g", up, les[i],
			    v, prev);
			prev = v;
		}
		h_assert(prev == successes, "%s +Inf bucket %g", up, prev);
		h_assert(prom_value(&p,
			     "circuitproxy_upstream_connect_duration_seconds_"
			     "count",
			     h_strf("upstream=\"%s\"", up)) == successes,
		    "%s histogram count", up);
		v = prom_value(&p,
		    "circuitproxy_upstream_connect_duration_seconds_sum",
		    h_strf("upstream=\"%s\"", up));
		h_assert(successes == 0 ? v == 0 : (v > 0 && v < 3 * 5),
		    "%s histogram sum %g", up, v);
	}
	h_daemon_stop_ok(d);
}
END_TEST

/* /metrics passes promtool's own check (Debian: prometheus). */
START_TEST(admin_metrics_promtool)
{
	const char *promtool = tool("promtool");
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4(), *out, *err;
	struct h_daemon *d;
	struct resp r;
	int st;

	if (promtool == NULL)
		h_skip("promtool is not installed (Debian package prometheus)");
	d = start_api(admin, NULL, l1, echo);
	h_assert(h_echo_roundtrip(l1, "abc", H_WAIT_MS), "echo");
	r = http_expect(admin, "GET", "/metrics", NULL, 200);
	{
		const char *argv[] = { promtool, "check", "metrics", NULL };

		st = tool_run(argv, r.body, 2 * H_WAIT_MS, &out, &err);
	}
	h_assert(st == 0 && *out == '\0' && *err == '\0',
	    "promtool check metrics: exit %d\n%s%s", st, out, err);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * admin_token: 401 (with WWW-Authenticate) without the right bearer token,
 * for every route but /health and the page; the token compared whole; a
 * reload brings a new one.
 */
START_TEST(admin_token)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	const char *good = "Authorization: Bearer s3cret-t0ken\r\n";
	static const char *bad[] = { NULL, "Authorization: Bearer wrong\r\n",
		"Authorization: Bearer s3cret-t0ke\r\n",
		"Authorization: Bearer s3cret-t0kenX\r\n",
		"Authorization: Basic czNjcmV0LXQwa2Vu\r\n",
		"Authorization: s3cret-t0ken\r\n",
		"Authorization: Bearer\r\n" };
	static const struct {
		const char *method, *path;
	} guarded[] = { { "GET", "/stats" }, { "GET", "/stats/api" },
		{ "GET", "/metrics" }, { "POST", "/upstreams/api/force-open" },
		{ "POST", "/upstreams/api/force-closed" },
		{ "POST", "/upstreams/api/reset" }, { "POST", "/reset" },
		{ "GET", "/nope" }, { "POST", "/" } };
	struct h_daemon *d = start_api(admin, "s3cret-t0ken", l1, echo);
	struct resp r;
	const char *www;
	size_t i, k;
	size_t mark;

	for (i = 0; i < ALEN(guarded); i++)
		for (k = 0; k < ALEN(bad); k++) {
			r = http_expect(admin, guarded[i].method,
			    guarded[i].path, bad[k], 401);
			www = resp_header(&r, "WWW-Authenticate");
			h_assert(www != NULL && strncmp(www, "Bearer", 6) == 0,
			    "401 without WWW-Authenticate: Bearer");
		}
	h_assert(strcmp(jget(stats_of(admin, "api", good), "state")->str,
		     "closed") == 0,
	    "a refused force-open changed the state");
	http_expect(admin, "GET", "/health", NULL, 200);
	http_expect(admin, "GET", "/", NULL, 200);
	http_expect(admin, "HEAD", "/", NULL, 200);
	http_expect(admin, "GET", "/stats", good, 200);
	http_expect(admin, "GET", "/metrics", good, 200);
	http_expect(admin, "GET", "/stats",
	    "Authorization: bearer s3cret-t0ken\r\n", 200);
	http_expect(admin, "GET", "/nope", good, 404);
	r = http_expect(admin, "POST", "/upstreams/api/force-open", good, 200);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api",
	    "to=forced_open", "reason=manual");

	/* admin_token is reloadable. */
	mark = h_log_mark(d);
	h_write_file(h_daemon_config(d),
	    h_strf("%s%s", global_admin(admin, "n3w"),
		h_upstream("api", l1, h_backend_addr(echo), NULL)));
	h_daemon_signal(d, SIGHUP);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	http_expect(admin, "GET", "/stats", good, 401);
	http_expect(admin, "GET", "/stats", "Authorization: Bearer n3w\r\n",
	    200);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * One request (Connection: close) that may find nobody listening: its
 * status, or -1 when the connection is refused.
 */
static int
http_status_or_refused(const char *addr, const char *method, const char *path,
    const char *headers)
{
	const char *req = h_strf("%s %s HTTP/1.1\r\nHost: %s\r\n%s"
				 "Connection: close\r\n\r\n",
	    method, path, host_of(addr), headers != NULL ? headers : "");
	struct resp r;
	size_t got;
	char *raw;
	int fd = h_connect(addr, 1000);

	if (fd == -1)
		return -1;
	if (h_send_all(fd, req, strlen(req), H_WAIT_MS) != 0) {
		close(fd);
		return 0;
	}
	r.end = h_recv_all(fd, &raw, &got, 2 * H_WAIT_MS);
	close(fd);
	resp_parse(&r, raw, got);
	return r.status;
}

/* "127.0.0.1:P" -> "HOST:P". */
static const char *
on_host(const char *addr, const char *host)
{
	return h_strf("%s%s", host, strrchr(addr, ':'));
}

/*
 * Reload a config (admin, token) and, while the daemon takes it in, keep
 * asking `outside` without a token for POST /reset: never is it done.
 * Returns the reload's log mark.
 */
static size_t
reload_hammering(struct h_daemon *d, const char *config, const char *outside)
{
	size_t lmark = h_log_mark(d), nmark = h_notify_mark(d);
	long ready = -1;
	uint64_t t0 = h_now_ms();
	unsigned tries = 0;
	int st;

	h_write_file(h_daemon_config(d), config);
	h_daemon_signal(d, SIGHUP);
	/* Until READY=1 after the reload, and a few requests beyond. */
	while (h_now_ms() - t0 < H_WAIT_MS && tries < 2000) {
		st = http_status_or_refused(outside, "POST", "/reset", NULL);
		tries++;
		h_assert(st != 200,
		    "POST /reset without the token done (200) from %s "
		    "%llu ms after SIGHUP (request %u)",
		    outside, (unsigned long long)(h_now_ms() - t0), tries);
		if (ready < 0) {
			long reloading =
			    h_wait_notify_after(d, nmark, "RELOADING=1", 0);

			if (reloading >= 0)
				ready = h_wait_notify_after(d,
				    (size_t)reloading + 1, "READY=1", 0);
		} else if (tries > 20)
			break;
	}
	h_assert(ready >= 0, "no READY=1 after the reload");
	return lmark;
}

/*
 * SPEC.md 7: a reload that moves admin applies address and token
 * together. From 0.0.0.0:P with a token to 127.0.0.1:P without one, the
 * token must not be dropped while 0.0.0.0:P still serves (issue 15: anyone
 * who could reach the host could force or reset every circuit): 127.0.0.2
 * stands for the outside, it reaches a socket bound to 0.0.0.0 but not one
 * bound to 127.0.0.1. And back: the move to 0.0.0.0:P with a token serves
 * the outside only with the token.
 */
START_TEST(admin_reload_moves_with_token)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	const char *any = on_host(admin, "0.0.0.0"),
		   *outside = on_host(admin, "127.0.0.2");
	const char *good = "Authorization: Bearer s3cret-t0ken\r\n";
	const char *up = h_upstream("api", l1, h_backend_addr(echo), NULL);
	struct h_daemon *d = h_daemon_start(
	    h_strf("%s%s", global_admin(any, "s3cret-t0ken"), up));
	size_t mark;
	int st;

	http_expect(outside, "GET", "/stats", NULL, 401);
	http_expect(outside, "GET", "/stats", good, 200);

	/* Token removed, moved to loopback: the outside is not served. */
	mark = reload_hammering(d,
	    h_strf("%s%s", global_admin(admin, NULL), up), outside);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(h_count_log_after(d, mark, "changes at the next restart") == 0,
	    "admin is said to change at the next restart");
	st = http_status_or_refused(outside, "POST", "/reset", NULL);
	h_assert(st == -1, "%s still answers (%d) once admin is %s", outside,
	    st, admin);
	http_expect(admin, "GET", "/stats", NULL, 200);
	http_expect(admin, "POST", "/reset", NULL, 200);

	/* Token added, moved to every address: the outside needs it. */
	mark =
	    h_reload(d, h_strf("%s%s", global_admin(any, "s3cret-t0ken"), up));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	http_expect(outside, "POST", "/reset", NULL, 401);
	http_expect(outside, "GET", "/stats", good, 200);
	http_expect(admin, "GET", "/stats", NULL, 401);
	http_expect(admin, "GET", "/health", NULL, 200);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * admin turned on and off by reloads, moved between unix sockets (the old
 * file removed), and a move to an address in use: a reload error, the old
 * endpoint untouched, serving with its own token.
 */
START_TEST(admin_reload_on_off_unix)
{
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *taken = h_backend(H_SILENT);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	char *u1 = h_free_addr(AF_UNIX), *u2 = h_free_addr(AF_UNIX);
	const char *up = h_upstream("api", l1, h_backend_addr(echo), NULL);
	const char *off = "[global]\nworkers = 2\nshutdown_timeout = 3s\n\n";
	struct h_daemon *d = h_daemon_start(h_strf("%s%s", off, up));
	struct stat sb;
	size_t mark;

	h_assert(http_status_or_refused(admin, "GET", "/health", NULL) == -1,
	    "%s answers with admin off", admin);
	/* off -> on */
	mark = h_reload(d, h_strf("%s%s", global_admin(admin, NULL), up));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	http_expect(admin, "GET", "/stats", NULL, 200);
	/* TCP -> unix, then unix -> another unix path */
	mark = h_reload(d, h_strf("%s%s", global_admin(u1, "t1"), up));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(http_status_or_refused(admin, "GET", "/health", NULL) == -1,
	    "%s still answers after the move to %s", admin, u1);
	http_expect(u1, "GET", "/stats", NULL, 401);
	http_expect(u1, "GET", "/stats", "Authorization: Bearer t1\r\n", 200);
	mark = h_reload(d, h_strf("%s%s", global_admin(u2, "t2"), up));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(stat(u1 + 5, &sb) == -1 && errno == ENOENT,
	    "the old socket file %s is still there", u1 + 5);
	http_expect(u2, "GET", "/stats", "Authorization: Bearer t1\r\n", 401);
	http_expect(u2, "GET", "/stats", "Authorization: Bearer t2\r\n", 200);

	/* A move to an address in use fails; the old endpoint stays. */
	mark = h_reload(d,
	    h_strf("%s%s", global_admin(h_backend_addr(taken), NULL), up));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=error",
	    h_strf("%s:", h_backend_addr(taken)));
	http_expect(u2, "GET", "/stats", NULL, 401);
	http_expect(u2, "GET", "/stats", "Authorization: Bearer t2\r\n", 200);

	/* on -> off: the socket and its file are gone. */
	mark = h_reload(d, h_strf("%s%s", off, up));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_assert(stat(u2 + 5, &sb) == -1 && errno == ENOENT,
	    "the socket file %s is still there with admin off", u2 + 5);
	h_assert(h_echo_roundtrip(l1, "still", H_WAIT_MS), "relay");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * What a browser may be tricked into: a page of another site POSTing an
 * override (CSRF), or reading /stats through a name rebound to 127.0.0.1
 * (DNS rebinding). Both are refused (403) and change nothing; curl, the
 * page itself and circuitproxyctl go through.
 */
START_TEST(admin_foreign_requests)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, NULL, l1, echo);
	const char *self = h_strf("Origin: http://%s\r\n", admin);
	static const char *posts[] = { "/upstreams/api/force-open",
		"/upstreams/api/force-closed", "/upstreams/api/reset",
		"/reset" };
	struct resp r;
	size_t i;

	for (i = 0; i < ALEN(posts); i++) {
		r = http_expect(admin, "POST", posts[i],
		    "Origin: http://evil.example\r\n", 403);
		h_assert(strstr(r.body, "another origin") != NULL, "%s: %s",
		    posts[i], r.body);
		http_expect(admin, "POST", posts[i], "Origin: null\r\n", 403);
		http_expect(admin, "POST", posts[i],
		    "Sec-Fetch-Site: cross-site\r\n", 403);
	}
	h_assert(strcmp(jget(stats_of(admin, "api", NULL), "state")->str,
		     "closed") == 0 &&
		jget(stats_of(admin, "api", NULL), "transitions")->n == 0,
	    "a refused POST changed the breaker");
	h_assert(h_count_log(d, "event=admin", "action=force-open") == 0,
	    "a refused POST was carried out");

	/* A rebound name is refused; an address or localhost is not. */
	http_expect(admin, "GET", "/stats", "Host: evil.example:80\r\n", 403);
	http_expect(admin, "GET", "/", "Host: rebind.example\r\n", 403);
	http_expect(admin, "GET", "/health", "Host: any.example\r\n", 200);
	http_expect(admin, "GET", "/stats",
	    h_strf("Host: localhost:%s\r\n", h_port_of(admin)), 200);
	http_expect(admin, "GET", "/stats", "Host: [::1]:9901\r\n", 200);

	/* The page's own POST (same origin) and a plain client's. */
	r = http_expect(admin, "POST", "/upstreams/api/force-open",
	    h_strf("%sSec-Fetch-Site: same-origin\r\n", self), 200);
	http_expect(admin, "POST", "/upstreams/api/reset", NULL, 200);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * force-open?for=1s: the circuit rejects at once, says when it will end,
 * and goes back to closed on its own after the second (logged with
 * reason=manual, and told to the service manager).
 */
START_TEST(admin_force_open_expires)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, NULL, l1, echo);
	struct jv *j, *tr;
	struct resp r;
	uint64_t t0, took;
	double ra;
	const char *line;
	size_t mark;

	h_assert(h_wait_notify(d, "STATUS=1 upstream, 0 open,*", H_WAIT_MS),
	    "no STATUS at the start");
	t0 = h_now_ms();
	r = http_expect(admin, "POST", "/upstreams/api/force-open?for=1s", NULL,
	    200);
	j = json_parse(r.body);
	h_assert(strcmp(jget(j, "state")->str, "forced_open") == 0, "state %s",
	    jget(j, "state")->str);
	ra = jmust(j, "retry_after", J_NUM)->num;
	h_assert(ra > 0.5 && ra <= 1.0, "retry_after %g after for=1s", ra);
	line = h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api",
	    "from=closed", "to=forced_open", "reason=manual",
	    "retry_after=1.000");
	(void)line;
	h_expect_log(d, H_WAIT_MS, "event=admin", "action=force-open",
	    "upstream=api", "for=1s");
	h_assert(h_wait_notify(d, "STATUS=1 upstream, 1 open,*", H_WAIT_MS),
	    "no STATUS with the forced circuit");
	h_client_expect_reset(l1, H_WAIT_MS, NULL);

	h_expect_log(d, 5000, "event=state", "upstream=api", "from=forced_open",
	    "to=closed", "reason=expired");
	took = h_now_ms() - t0;
	h_assert(took >= 900 && took <= 3000,
	    "the 1s force ended after %llu ms", (unsigned long long)took);
	j = stats_of(admin, "api", NULL);
	h_assert(strcmp(jget(j, "state")->str, "closed") == 0 &&
		jget(j, "retry_after")->t == J_NULL,
	    "after the force: %s", jget(j, "state")->str);
	tr = jget(j, "transitions");
	h_assert(tr->n == 2 &&
		strcmp(jget(tr->items[0], "to")->str, "closed") == 0 &&
		strcmp(jget(tr->items[0], "reason")->str, "expired") == 0 &&
		strcmp(jget(tr->items[1], "to")->str, "forced_open") == 0 &&
		strcmp(jget(tr->items[1], "reason")->str, "manual") == 0,
	    "transitions after the force");
	h_assert(jget(j, "rejected_total")->num == 1 &&
		jget(jget(j, "rejected_by_state"), "forced_open")->num == 1,
	    "the forced reject was not counted");
	h_assert(h_echo_roundtrip(l1, "back", H_WAIT_MS),
	    "no relay after the force ended");
	h_assert(h_wait_notify(d, "STATUS=1 upstream, 0 open,*", H_WAIT_MS),
	    "no STATUS once the force ended");

	/* A shorter lifetime replaces a longer one. */
	mark = h_log_mark(d);
	t0 = h_now_ms();
	http_expect(admin, "POST", "/upstreams/api/force-open?for=1h", NULL,
	    200);
	http_expect(admin, "POST", "/upstreams/api/force-open?for=500ms", NULL,
	    200);
	h_expect_log_after(d, mark, 5000, "event=state", "upstream=api",
	    "from=forced_open", "to=closed");
	took = h_now_ms() - t0;
	h_assert(took >= 400 && took <= 2500,
	    "the 500ms force ended after %llu ms", (unsigned long long)took);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * force-closed admits every client (and counts its failures) while the
 * server refuses; reset of one upstream leaves the others; POST /reset
 * closes them all, with totals kept and windows cleared.
 */
START_TEST(admin_force_closed_and_reset)
{
	struct h_backend *refuse = h_backend(H_REFUSE);
	char *admin = h_free_addr4(), *l1 = h_free_addr4(),
	     *l2 = h_free_addr4();
	const char *keys = "failure_threshold = 2\nrecovery_timeout = 60s\n";
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s%s", global_admin(admin, NULL),
		h_upstream("api", l1, h_backend_addr(refuse), keys),
		h_upstream("db", l2, h_backend_addr(refuse), keys)));
	struct jv *j;
	size_t mark;

	http_expect(admin, "POST", "/upstreams/api/force-closed", NULL, 200);
	trip(l1, 4);
	j = stats_of(admin, "api", NULL);
	h_assert(strcmp(jget(j, "state")->str, "forced_closed") == 0,
	    "api %s after 4 failures while forced closed",
	    jget(j, "state")->str);
	h_assert(jget(j, "attempts_total")->num == 4 &&
		jget(j, "failures_total")->num == 4 &&
		jget(j, "rejected_total")->num == 0,
	    "forced closed: attempts %g failures %g rejects %g",
	    jget(j, "attempts_total")->num, jget(j, "failures_total")->num,
	    jget(j, "rejected_total")->num);

	/* Reset one: closed, counts cleared, totals kept. */
	mark = h_log_mark(d);
	j = json_parse(
	    http_expect(admin, "POST", "/upstreams/api/reset", NULL, 200).body);
	h_assert(strcmp(jget(j, "state")->str, "closed") == 0 &&
		jget(j, "consecutive_failures")->num == 0 &&
		jget(j, "window_attempts")->num == 0 &&
		jget(j, "attempts_total")->num == 4,
	    "after reset: state %s consecutive %g window %g attempts %g",
	    jget(j, "state")->str, jget(j, "consecutive_failures")->num,
	    jget(j, "window_attempts")->num, jget(j, "attempts_total")->num);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=state", "upstream=api",
	    "from=forced_closed", "to=closed", "reason=manual");

	/* Both open; reset api alone. */
	trip(l1, 2);
	trip(l2, 2);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db", "to=open");
	http_expect(admin, "POST", "/upstreams/api/reset", NULL, 200);
	h_assert(strcmp(jget(stats_of(admin, "api", NULL), "state")->str,
		     "closed") == 0,
	    "api not closed by its reset");
	h_assert(strcmp(jget(stats_of(admin, "db", NULL), "state")->str,
		     "open") == 0,
	    "db changed by api's reset");

	/* Reset all. */
	trip(l1, 2);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open",
	    "failures=2");
	mark = h_log_mark(d);
	j = json_parse(http_expect(admin, "POST", "/reset", NULL, 200).body);
	h_assert(strcmp(jget(jget(jget(j, "upstreams"), "api"), "state")->str,
		     "closed") == 0 &&
		strcmp(jget(jget(jget(j, "upstreams"), "db"), "state")->str,
		    "closed") == 0,
	    "POST /reset left a circuit open");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=state", "upstream=api",
	    "from=open", "to=closed", "reason=manual");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=state", "upstream=db",
	    "from=open", "to=closed", "reason=manual");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=admin",
	    "action=reset_all");
	j = stats_of(admin, "api", NULL);
	h_assert(jget(j, "attempts_total")->num == 8 &&
		jget(j, "opened_total")->num == 2 &&
		jget(j, "window_attempts")->num == 0,
	    "api totals after reset all: attempts %g opened %g window %g",
	    jget(j, "attempts_total")->num, jget(j, "opened_total")->num,
	    jget(j, "window_attempts")->num);
	/* Closed again: the next client is tried (and refused). */
	trip(l2, 1);
	j = stats_of(admin, "db", NULL);
	h_assert(jget(j, "attempts_total")->num == 3 &&
		jget(j, "consecutive_failures")->num == 1,
	    "db after reset all: attempts %g consecutive %g",
	    jget(j, "attempts_total")->num,
	    jget(j, "consecutive_failures")->num);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * transitions after open -> half_open -> closed, newest first, each with
 * its reason (SPEC.md 5): recovery_timeout and trials_succeeded too.
 */
START_TEST(admin_transitions)
{
	struct h_backend *b = h_backend(H_REFUSE);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_strf("%s%s", global_admin(admin, NULL),
		h_upstream("api", l1, h_backend_addr(b),
		    "failure_threshold = 1\nrecovery_timeout = 300ms\n"
		    "half_open_max_calls = 1\nsuccess_threshold = 1\n")));
	double t0 = h_wall_ms() / 1000.0, t1;
	struct jv *j, *tr;
	static const char *want[][3] = { { "half_open", "closed",
					     "trials_succeeded" },
		{ "open", "half_open", "recovery_timeout" },
		{ "closed", "open", "consecutive_failures" } };
	size_t i;

	trip(l1, 1);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api", "to=open");
	h_backend_set_kind(b, H_ECHO);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api",
	    "to=half_open");
	h_assert(h_echo_roundtrip(l1, "trial", H_WAIT_MS), "trial");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=api",
	    "from=half_open", "to=closed");
	t1 = h_wall_ms() / 1000.0;
	j = stats_of(admin, "api", NULL);
	check_stats_object("api", j);
	tr = jget(j, "transitions");
	h_assert(tr->n == 3, "%zu transitions", tr->n);
	for (i = 0; i < 3; i++) {
		const struct jv *t = tr->items[i], *why = jget(t, "reason");

		h_assert(strcmp(jget(t, "from")->str, want[i][0]) == 0 &&
			strcmp(jget(t, "to")->str, want[i][1]) == 0,
		    "transition %zu: %s -> %s, %s -> %s expected", i,
		    jget(t, "from")->str, jget(t, "to")->str, want[i][0],
		    want[i][1]);
		h_assert(why->t == J_STR && strcmp(why->str, want[i][2]) == 0,
		    "transition %zu: reason %s, %s expected", i,
		    why->t == J_STR ? why->str : "null", want[i][2]);
		h_assert(jget(t, "at")->num >= t0 - 0.01 &&
			jget(t, "at")->num <= t1 + 0.01,
		    "transition %zu at %s, outside [%.3f, %.3f]", i,
		    jget(t, "at")->str, t0, t1);
	}
	/* open lasted recovery_timeout (300ms, no jitter). */
	h_assert(jget(tr->items[1], "at")->num -
			jget(tr->items[2], "at")->num >=
		    0.299 &&
		jget(tr->items[1], "at")->num - jget(tr->items[2], "at")->num <=
		    1.5,
	    "open lasted %.3f s",
	    jget(tr->items[1], "at")->num - jget(tr->items[2], "at")->num);
	h_assert(jget(j, "state_since")->num == jget(tr->items[0], "at")->num,
	    "state_since is not the last transition");
	h_daemon_stop_ok(d);
}
END_TEST

/* After each hostile client: the endpoint answers and the proxy relays. */
static void
still_answers(const char *admin, const char *listen, const char *after)
{
	uint64_t t0 = h_now_ms();
	struct resp r = http(admin, "GET", "/health", NULL);

	h_assert(r.status == 200 && h_now_ms() - t0 < 2000,
	    "after %s: /health got %d in %llu ms", after, r.status,
	    (unsigned long long)(h_now_ms() - t0));
	h_assert(h_echo_roundtrip(listen, "x", H_WAIT_MS),
	    "after %s: the proxy stopped relaying", after);
}

/*
 * Garbage, oversized headers and an oversized body: each is refused or cut
 * off, never answered 200, and the endpoint goes on answering.
 */
START_TEST(admin_garbage)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, "tok", l1, echo);
	static const char *const garbage[] = { "\x00\x01\x02\xff\r\n\r\n",
		"GET\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
		"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
		"BREW /pot HTCPCP/1.0\r\n\r\n", "\r\n\r\n\r\n",
		"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n" };
	char *big, *req;
	struct resp r;
	size_t i;
	int fd;

	for (i = 0; i < ALEN(garbage); i++) {
		http_raw(admin, garbage[i], i == 0 ? 8 : strlen(garbage[i]),
		    &r);
		h_assert(r.status != 200, "garbage %zu answered 200", i);
		h_assert(r.end == H_OUT_EOF || r.end == H_OUT_RESET,
		    "garbage %zu: %s", i, h_outcome_name(r.end));
		still_answers(admin, l1, h_strf("garbage %zu", i));
	}

	/* 64 KiB of headers, against a limit of 8 KiB. */
	big = malloc(65536 + 1);
	memset(big, 'a', 65536);
	big[65536] = '\0';
	req =
	    h_strf("GET /health HTTP/1.1\r\nHost: a\r\nX-Big: %s\r\n\r\n", big);
	http_raw(admin, req, strlen(req), &r);
	h_assert(r.status != 200, "oversized headers answered 200");
	still_answers(admin, l1, "oversized headers");

	/* A 1 MB body on a POST, against a limit of 1 KiB. */
	fd = h_connect_ok(admin);
	req = "POST /reset HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer tok\r\n"
	      "Content-Length: 1048576\r\n\r\n";
	h_assert(h_send_all(fd, req, strlen(req), H_WAIT_MS) == 0, "send");
	for (i = 0; i < 16; i++)
		if (h_send_all(fd, big, 65536, 1000) != 0)
			break;
	{
		char *raw;
		size_t len;

		r.end = h_recv_all(fd, &raw, &len, H_WAIT_MS);
		resp_parse(&r, raw, len);
	}
	close(fd);
	h_assert(r.status != 200, "an oversized body was answered 200");
	h_assert(h_count_log(d, "event=admin", "action=reset_all") == 0,
	    "an oversized body reset the breakers");
	still_answers(admin, l1, "an oversized body");
	free(big);
	h_assert(h_daemon_running(d), "the daemon died");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A client that trickles its request is cut off at the deadline; one that
 * says nothing too; meanwhile the endpoint answers others at once.
 */
START_TEST(admin_slow_clients)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, NULL, l1, echo);
	const char *head =
	    h_strf("GET /health HTTP/1.1\r\nHost: %s\r\nX-Slow: ", admin);
	int slow = h_connect_ok(admin), silent = h_connect_ok(admin);
	uint64_t t0 = h_now_ms(), cut = 0;
	enum h_outcome out = H_OUT_TIMEOUT;

	h_assert(h_send_all(slow, head, strlen(head), H_WAIT_MS) == 0, "send");
	while (h_now_ms() - t0 < ADMIN_DEADLINE_MS + 4000) {
		/* One byte every 400 ms: always within evhttp's read timeout. */
		if (send(slow, "a", 1, MSG_NOSIGNAL) != 1) {
			out = H_OUT_RESET;
			cut = h_now_ms() - t0;
			break;
		}
		out = h_next_event(slow, 400);
		if (out != H_OUT_TIMEOUT) {
			cut = h_now_ms() - t0;
			break;
		}
		if (h_now_ms() - t0 < 3000)
			still_answers(admin, l1, "a trickling client");
	}
	h_assert(out != H_OUT_TIMEOUT, "a trickling client was never cut off");
	h_assert(cut >= ADMIN_DEADLINE_MS - 500 &&
		cut <= ADMIN_DEADLINE_MS + 3000,
	    "the trickling client was cut off after %llu ms",
	    (unsigned long long)cut);
	if (out == H_OUT_DATA) {
		/* Anything it got must not be a 200 for the unfinished request. */
		char *raw;
		size_t len;

		h_recv_all(slow, &raw, &len, H_WAIT_MS);
		h_assert(strncmp(raw, "HTTP/1.1 200", 12) != 0,
		    "the unfinished request was answered: %s", raw);
	}
	out = h_next_event(silent, 2000);
	h_assert(out == H_OUT_EOF || out == H_OUT_RESET,
	    "the silent client: %s after %llu ms", h_outcome_name(out),
	    (unsigned long long)(h_now_ms() - t0));
	close(slow);
	close(silent);
	still_answers(admin, l1, "the slow clients");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * More silent connections than the table holds (64 with nofile 256): the
 * listener is never turned off; the oldest silent ones are closed for the
 * newcomers, /health answers at once, and the daemon holds no more
 * descriptors than the table; the proxy is untouched throughout.
 */
START_TEST(admin_connection_cap)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	const char *wrapper = getenv("CP_TEST_WRAPPER");
	struct h_opts opts = { 0 };
	struct h_daemon *d;
	enum { N = ADMIN_MAX_CONNECTIONS + 16 };
	int fds[N], nfds0, nfds1, closed = 0, evicted = 0;
	uint64_t t0, took;
	struct resp r;
	size_t i;

	if (wrapper != NULL && *wrapper != '\0')
		h_skip("under %s the descriptor limit is the wrapper's",
		    wrapper);
	opts.nofile = 4 * ADMIN_MAX_CONNECTIONS;
	d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_admin(admin, NULL),
		h_upstream("api", l1, h_backend_addr(echo), NULL)));
	nfds0 = h_daemon_nfds(d);
	t0 = h_now_ms();
	for (i = 0; i < N; i++)
		fds[i] = h_connect_ok(admin);
	/* The proxy is not held up by the admin endpoint's trouble. */
	h_assert(h_echo_roundtrip(l1, "busy", H_WAIT_MS), "relay");
	r = http(admin, "GET", "/health", NULL);
	took = h_now_ms() - t0;
	h_assert(r.status == 200, "/health after the flood: %d", r.status);
	h_assert(took < 2000, "/health answered %llu ms after the flood began",
	    (unsigned long long)took);
	/* The oldest silent ones made room. */
	for (i = 0; i < 16; i++) {
		enum h_outcome out = h_next_event(fds[i], 1000);

		closed += out == H_OUT_EOF || out == H_OUT_RESET;
	}
	h_assert(closed == 16, "%d of the 16 oldest silent clients closed",
	    closed);
	/* Logged, summed: the counts add up to the clients closed. */
	for (t0 = h_now_ms(); h_now_ms() - t0 < 3000; poll(NULL, 0, 50)) {
		const char *line;
		char v[32];
		size_t k;

		evicted = closed = 0;
		for (k = 0; (line = h_log_line(d, k)) != NULL; k++)
			if (h_line_has(line, "event=admin_evicted") &&
			    h_log_value(line, "count", v, sizeof(v)))
				evicted += atoi(v);
		for (i = 0; i < N; i++) {
			enum h_outcome out = h_next_event(fds[i], 0);

			closed += out == H_OUT_EOF || out == H_OUT_RESET;
		}
		if (evicted == closed)
			break;
	}
	h_assert(evicted == closed,
	    "admin_evicted counts add up to %d, %d clients were closed",
	    evicted, closed);
	nfds1 = h_daemon_nfds(d);
	h_assert(nfds1 <= nfds0 + ADMIN_MAX_CONNECTIONS + 2,
	    "%d descriptors with %d admin clients (from %d): no cap", nfds1, N,
	    nfds0);
	for (i = 0; i < N; i++)
		close(fds[i]);
	still_answers(admin, l1, "the flood");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Started with a soft RLIMIT_NOFILE of 256 under a hard one of 4096 (as
 * `prlimit --nofile=256:4096 circuitproxyd` would), the daemon raises its
 * soft limit to the hard one and says so at start; it then holds 300
 * relays (600 descriptors), and 300 silent admin clients on top, all kept:
 * the admin table is a quarter of the raised limit, not of 256 (64).
 */
START_TEST(admin_nofile_raised)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	const char *wrapper = getenv("CP_TEST_WRAPPER");
	struct h_opts opts = { .nofile = 256, .nofile_hard = 4096 };
	enum { NRELAYS = 300, NADMIN = 300 };
	int relays[NRELAYS], idle[NADMIN], nfds;
	struct rlimit rl;
	struct h_daemon *d;
	char c;
	size_t i;

	if (wrapper != NULL && *wrapper != '\0')
		h_skip("under %s the daemon sees a hard limit equal to the "
		       "soft one: nothing to raise",
		    wrapper);
	h_assert(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 4096)
		h_skip("the hard RLIMIT_NOFILE is %llu: the story needs 4096",
		    (unsigned long long)rl.rlim_max);
	/* Ours: the clients, the echo backend's ends, the admin clients. */
	if (rl.rlim_cur < 4096) {
		rl.rlim_cur = 4096;
		h_assert(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s",
		    strerror(errno));
	}
	d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_admin(admin, NULL),
		h_upstream("api", l1, h_backend_addr(echo), NULL)));
	h_assert_fields(h_expect_log(d, H_WAIT_MS, "event=start"),
	    "nofile=4096");
	h_assert(prlimit(h_daemon_pid(d), RLIMIT_NOFILE, NULL, &rl) == 0 &&
		rl.rlim_cur == 4096 && rl.rlim_max == 4096,
	    "the daemon's RLIMIT_NOFILE is %llu/%llu, not 4096/4096",
	    (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);

	for (i = 0; i < NRELAYS; i++) {
		relays[i] = h_connect_ok(l1);
		h_assert(h_send_all(relays[i], "x", 1, H_WAIT_MS) == 0 &&
			h_recv_exact(relays[i], &c, 1, H_WAIT_MS) == H_OUT_DATA,
		    "relay %zu of %d got no echo (%d descriptors in the "
		    "daemon)",
		    i + 1, NRELAYS, h_daemon_nfds(d));
	}
	for (i = 0; i < NADMIN; i++)
		idle[i] = h_connect_ok(admin);
	h_assert(http(admin, "GET", "/health", NULL).status == 200,
	    "/health with %d relays and %d silent admin clients", NRELAYS,
	    NADMIN);
	nfds = h_daemon_nfds(d);
	h_assert(nfds > 2 * NRELAYS + NADMIN,
	    "the daemon holds %d descriptors for %d relays and %d admin "
	    "clients",
	    nfds, NRELAYS, NADMIN);
	/* All there: none was closed for room (the table is 1024). */
	for (i = 0; i < NADMIN; i++)
		h_assert(h_next_event(idle[i], 0) == H_OUT_TIMEOUT,
		    "silent admin client %zu of %d was closed", i + 1, NADMIN);
	h_assert(h_count_log(d, "event=admin_evicted") == 0,
	    "admin clients were evicted with a table of 1024");
	for (i = 0; i < NADMIN; i++)
		close(idle[i]);
	for (i = 0; i < NRELAYS; i++)
		close(relays[i]);
	still_answers(admin, l1, "300 relays");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * One request on a kept-alive connection: the status of its answer (whose
 * whole body is read), or 0 when none came within ms.
 */
static int
http_keepalive(int fd, const char *addr, const char *path, int ms)
{
	char *req =
	    h_strf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host_of(addr));
	char buf[65536], *end, *cl;
	size_t len = 0, want;
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct pollfd pfd;
	ssize_t n;

	if (h_send_all(fd, req, strlen(req), ms) != 0)
		return 0;
	pfd.fd = fd;
	pfd.events = POLLIN;
	while (h_now_ms() < deadline && len < sizeof(buf) - 1) {
		if (poll(&pfd, 1, (int)(deadline - h_now_ms())) <= 0)
			continue;
		n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (n <= 0)
			return 0;
		len += (size_t)n;
		buf[len] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) == NULL)
			continue;
		cl = strcasestr(buf, "\r\nContent-Length:");
		want = cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
		if (len >= (size_t)(end + 4 - buf) + want)
			return atoi(buf + 9);
	}
	return 0;
}

/*
 * A full table never closes a client whose request has come in: with 64
 * kept-alive clients in the table (each has had an answer), the daemon is
 * stopped while a /health request is sent on a new connection and ten
 * silent clients connect after it. When it runs again, the eleven come in
 * over the table's size: the ten silent ones are closed, and one idle
 * kept-alive connection, but the /health is answered. (Before the fix it
 * was the oldest waiting connection, and was closed unanswered.)
 */
START_TEST(admin_evict_spares_a_request)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_opts opts = { .nofile = 4 * ADMIN_MAX_CONNECTIONS };
	enum { NSILENT = 10 };
	int kept[ADMIN_MAX_CONNECTIONS], silent[NSILENT], probe, closed = 0;
	int evicted = 0;
	char *raw = NULL, v[32];
	size_t i, k, len = 0;
	const char *req, *line;
	uint64_t t0;
	struct h_daemon *d;

	d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_admin(admin, NULL),
		h_upstream("api", l1, h_backend_addr(echo), NULL)));
	for (i = 0; i < ADMIN_MAX_CONNECTIONS; i++) {
		kept[i] = h_connect_ok(admin);
		h_assert(http_keepalive(kept[i], admin, "/health", H_WAIT_MS) ==
			200,
		    "kept-alive client %zu: no answer", i);
	}

	h_daemon_signal(d, SIGSTOP);
	probe = h_connect_ok(admin);
	req = h_strf("GET /health HTTP/1.1\r\nHost: %s\r\n"
		     "Connection: close\r\n\r\n",
	    host_of(admin));
	h_assert(h_send_all(probe, req, strlen(req), H_WAIT_MS) == 0,
	    "send /health");
	for (i = 0; i < NSILENT; i++)
		silent[i] = h_connect_ok(admin);
	h_daemon_signal(d, SIGCONT);

	h_assert(h_recv_all(probe, &raw, &len, H_WAIT_MS) == H_OUT_EOF &&
		raw != NULL && strncmp(raw, "HTTP/1.1 200", 12) == 0,
	    "the /health that came in with the table full: %.*s", (int)len,
	    raw != NULL ? raw : "(closed unanswered)");
	for (i = 0; i < NSILENT; i++) {
		enum h_outcome out = h_next_event(silent[i], H_WAIT_MS);

		closed += out == H_OUT_EOF || out == H_OUT_RESET;
	}
	h_assert(closed == NSILENT, "%d of the %d silent newcomers closed",
	    closed, NSILENT);
	/* Logged, summed: eleven in all (the first at once, then a sum). */
	for (t0 = h_now_ms(); evicted < NSILENT + 1 && h_now_ms() - t0 < 3000;
	     poll(NULL, 0, 50))
		for (evicted = 0, k = 0; (line = h_log_line(d, k)) != NULL; k++)
			if (h_line_has(line, "event=admin_evicted") &&
			    h_log_value(line, "count", v, sizeof(v)))
				evicted += atoi(v);
	h_assert(evicted == NSILENT + 1, "admin_evicted counts add up to %d",
	    evicted);
	for (i = 0; i < ADMIN_MAX_CONNECTIONS; i++)
		close(kept[i]);
	for (i = 0; i < NSILENT; i++)
		close(silent[i]);
	close(probe);
	still_answers(admin, l1, "the evictions");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * With admin_token set, requests without it cannot hold the admin
 * connection slots: a 401 closes its connection at once (not after the 5 s
 * idle deadline), and a client that fills every slot with refused
 * requests leaves a fresh /health answered.
 */
START_TEST(admin_unauthenticated_cannot_hold_slots)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, "s3cret-t0ken", l1, echo);
	int fds[64], i;
	char c;

	for (i = 0; i < 64; i++) {
		fds[i] = h_connect_ok(admin);
		h_assert(http_keepalive(fds[i], admin, "/stats", H_WAIT_MS) ==
			401,
		    "connection %d: no 401 without the token", i);
	}
	for (i = 0; i < 64; i++)
		h_assert(h_recv_exact(fds[i], &c, 1, 1000) == H_OUT_EOF,
		    "connection %d stays open after its 401", i);
	http_expect(admin, "GET", "/health", NULL, 200);
	for (i = 0; i < 64; i++)
		close(fds[i]);
	h_daemon_stop_ok(d);
}
END_TEST

/* The daemon's CPU time so far, in clock ticks (utime + stime). */
static unsigned long
daemon_cpu(struct h_daemon *d)
{
	char *path = h_strf("/proc/%ld/stat", (long)h_daemon_pid(d)), buf[1024];
	unsigned long ut = 0, st = 0;
	const char *p;
	FILE *f = fopen(path, "r");
	size_t n;
	int field;

	h_assert(f != NULL, "cannot read %s", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields after the command name: state is field 3, utime 14. */
	p = strrchr(buf, ')');
	h_assert(p != NULL, "%s: %s", path, buf);
	for (field = 2; *p != '\0' && field < 14; p++)
		if (*p == ' ')
			field++;
	h_assert(sscanf(p, "%lu %lu", &ut, &st) == 2, "%s: %s", path, buf);
	return ut + st;
}

/*
 * Out of file descriptors (SPEC.md 8): a kept-alive admin connection is
 * still answered; a new one is served or waits in the backlog, failed
 * accepts are logged at most once a second and do not spin; once
 * descriptors are free new clients are answered again.
 */
START_TEST(admin_full_table)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	const char *wrapper = getenv("CP_TEST_WRAPPER");
	struct h_opts opts = { 0 };
	struct h_daemon *d;
	enum { MAX_RELAYS = 64 };
	int kept, waiting, relays[MAX_RELAYS], n = 0, i;
	unsigned long cpu0, cpu1;
	uint64_t t0, took;
	char buf[4];
	size_t mark;

	if (wrapper != NULL && *wrapper != '\0')
		h_skip("under %s the descriptor limit is the wrapper's",
		    wrapper);
	opts.nofile = 48;
	d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_admin(admin, NULL),
		h_upstream("api", l1, h_backend_addr(echo), NULL)));
	kept = h_connect_ok(admin);
	h_assert(http_keepalive(kept, admin, "/health", H_WAIT_MS) == 200,
	    "kept-alive /health");

	/* Relays until one is not served: the table is full. */
	for (;;) {
		h_assert(n < MAX_RELAYS, "%d relays and the table is not full",
		    n);
		if ((relays[n] = h_connect(l1, H_WAIT_MS)) == -1)
			break;
		if (h_send_all(relays[n], "x", 1, H_WAIT_MS) != 0 ||
		    h_recv_exact(relays[n++], buf, 1, 500) != H_OUT_DATA)
			break;
	}
	mark = h_log_mark(d);
	h_assert(http_keepalive(kept, admin, "/stats", H_WAIT_MS) == 200,
	    "no /stats on the kept-alive connection with the table full");

	/*
	 * A new admin client is served all the same: the endpoint gives up
	 * its spare descriptor for it (SPEC 8), and the main loop does not
	 * spin.
	 */
	cpu0 = daemon_cpu(d);
	t0 = h_now_ms();
	waiting = h_connect_ok(admin);
	h_assert(http_keepalive(waiting, admin, "/health", 1000) == 200,
	    "a new admin client is not served with the table full");
	poll(NULL, 0, 1000);
	cpu1 = daemon_cpu(d);
	took = h_now_ms() - t0;
	h_assert((cpu1 - cpu0) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK) <
		took / 2,
	    "the daemon used %lu ticks of CPU in %llu ms with the table full",
	    cpu1 - cpu0, (unsigned long long)took);
	h_assert(h_count_log_after(d, mark, "event=admin_accept_error") <=
		(took + 999) / 1000 + 1,
	    "%u admin_accept_error lines in %llu ms",
	    h_count_log_after(d, mark, "event=admin_accept_error"),
	    (unsigned long long)took);
	h_assert(http_keepalive(kept, admin, "/metrics", H_WAIT_MS) == 200,
	    "no /metrics on the kept-alive connection with the table full");

	for (i = 0; i < n; i++)
		close(relays[i]);
	t0 = h_now_ms();
	h_assert(http(admin, "GET", "/health", NULL).status == 200,
	    "the endpoint did not answer once descriptors were free");
	h_assert(h_now_ms() - t0 < 3000, "answered %llu ms after",
	    (unsigned long long)(h_now_ms() - t0));
	close(kept);
	close(waiting);
	still_answers(admin, l1, "the full table");
	h_daemon_stop_ok(d);
}
END_TEST

/* What the attacker of admin_starvation did, shared with the test. */
struct attack {
	unsigned open;	     /* connections open now */
	unsigned reconnects; /* connections made again after a close */
	unsigned opened;     /* slots whose connection was open once */
	bool ready;	     /* every slot's connection was open once */
};

/*
 * The attacker (a child process): nidle connections that send nothing and
 * ntrickle that send an unfinished request a byte every 200 ms, each made
 * again at once when the server closes it, for at most secs seconds.
 */
static void
attack_run(const char *addr, unsigned nidle, unsigned ntrickle, int secs,
    volatile struct attack *at)
{
	const char *head = "GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ";
	unsigned n = nidle + ntrickle, i, j, tick = 0, k, cursor = 0;
	struct pollfd *pfd = calloc(n, sizeof(*pfd));
	bool *once = calloc(n, sizeof(*once));
	uint64_t end = h_now_ms() + (uint64_t)secs * 1000, next = 0;
	char buf[4096];

	for (i = 0; i < n; i++) {
		pfd[i].fd = -1;
		pfd[i].events = POLLIN;
	}
	while (h_now_ms() < end) {
		/* A few at a time, round the slots: poll in between. */
		for (j = 0, k = 0; j < n && k < 64; j++) {
			i = cursor;
			cursor = (cursor + 1) % n;
			if (pfd[i].fd != -1)
				continue;
			k++;
			pfd[i].fd = h_connect(addr, 200);
			if (pfd[i].fd == -1)
				continue;
			at->open++;
			if (once[i])
				at->reconnects++;
			else
				at->opened++;
			once[i] = true;
			if (i >= nidle)
				send(pfd[i].fd, head, strlen(head),
				    MSG_NOSIGNAL);
		}
		if (at->opened == n)
			at->ready = true;
		if (poll(pfd, n, 20) > 0)
			for (i = 0; i < n; i++) {
				if (pfd[i].fd == -1 || pfd[i].revents == 0)
					continue;
				if (recv(pfd[i].fd, buf, sizeof(buf), 0) > 0)
					continue;
				close(pfd[i].fd);
				pfd[i].fd = -1;
				at->open--;
			}
		if (h_now_ms() >= next) {
			/* Each trickling connection, a byte every 200 ms. */
			next = h_now_ms() + 20;
			tick++;
			for (i = nidle; i < n; i++)
				if (pfd[i].fd != -1 && i % 10 == tick % 10)
					send(pfd[i].fd, "a", 1, MSG_NOSIGNAL);
		}
	}
	_exit(0);
}

/* Order two durations, for qsort. */
static int
cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

/*
 * Latencies of 80 /health and 80 authorized /stats, 30 ms apart; worst_own
 * is the worst less the time the daemon's main thread or the client
 * waited for a CPU (the machine's delay, not the daemon's).
 */
struct probes {
	uint64_t health[80], stats[80], worst, worst_own;
	unsigned nh, ns; /* asked before the deadline */
};

/* Milliseconds a thread has waited on a run queue (its schedstat), or 0. */
static uint64_t
runq_wait_ms(const char *path)
{
	unsigned long long run, wait;
	FILE *f = fopen(path, "r");
	int n;

	if (f == NULL)
		return 0;
	n = fscanf(f, "%llu %llu", &run, &wait);
	fclose(f);
	return n == 2 ? wait / 1000000 : 0;
}

/*
 * Ask /health and /stats (with the token) in turn, each must be 200: 80 of
 * each, or as many (10 at least) as were asked before until (ms).
 */
static void
probe_admin(struct h_daemon *d, const char *admin, const char *auth,
    const char *when, uint64_t until, struct probes *p)
{
	const char *main_thread = h_strf("/proc/%ld/task/%ld/schedstat",
	    (long)h_daemon_pid(d), (long)h_daemon_pid(d));
	uint64_t t0 = h_now_ms(), t, w0, s0, w, own;
	unsigned i, nh = 0, ns = 0;
	struct resp r;

	p->worst = p->worst_own = 0;
	for (i = 0; i < 2 * ALEN(p->health) && (i < 20 || h_now_ms() < until);
	     i++) {
		bool is_health = i % 2 == 0;

		w0 = runq_wait_ms(main_thread);
		s0 = runq_wait_ms("/proc/thread-self/schedstat");
		t = h_now_ms();
		r = http(admin, "GET", is_health ? "/health" : "/stats",
		    is_health ? NULL : auth);
		t = h_now_ms() - t;
		w = runq_wait_ms(main_thread) - w0;
		s0 = runq_wait_ms("/proc/thread-self/schedstat") - s0;
		w = w > s0 ? w : s0;
		own = t > w ? t - w : 0;
		h_assert(r.status == 200, "%s: %d %s",
		    is_health ? "/health" : "/stats", r.status, when);
		if (t >= 50)
			fprintf(stderr,
			    "%s: %s took %llu ms (%llu waiting for a CPU) at "
			    "%llu ms %s\n",
			    H_WHERE, is_health ? "/health" : "/stats",
			    (unsigned long long)t, (unsigned long long)w,
			    (unsigned long long)(h_now_ms() - t0), when);
		if (is_health)
			p->health[nh++] = t;
		else
			p->stats[ns++] = t;
		if (t > p->worst)
			p->worst = t;
		if (own > p->worst_own)
			p->worst_own = own;
		poll(NULL, 0, 30);
	}
	qsort(p->health, nh, sizeof(uint64_t), cmp_u64);
	qsort(p->stats, ns, sizeof(uint64_t), cmp_u64);
	p->nh = nh;
	p->ns = ns;
}

/*
 * SPEC.md 7, issue 15: clients that send nothing or trickle cannot starve
 * the endpoint. With 1,000 idle and 1,000 trickling connections held open
 * (each made again when the daemon closes it), /health and an authorized
 * /stats answer within limit_ms, every time, over 5 s (across the cut of
 * them all at the 5 s deadline). On a loaded machine, the time the daemon's
 * main thread (or the client) waited for a CPU is the machine's, and is
 * not counted.
 * With nofile, the daemon's descriptor limit is low enough that the table
 * is full, and the oldest waiting connections are closed for newcomers.
 */
static void
starvation_story(unsigned nofile, uint64_t limit_ms)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	const char *good = "Authorization: Bearer s3cret-t0ken\r\n";
	const char *wrapper = getenv("CP_TEST_WRAPPER");
	/* Under valgrind, fewer: ten times the table of 128 all the same. */
	bool wrapped = wrapper != NULL && *wrapper != '\0';
	unsigned nidle = wrapped ? 640 : 1000, ntrickle = nidle;
	volatile struct attack *at;
	struct probes p;
	struct h_opts opts = { 0 };
	struct rlimit rl;
	struct h_daemon *d;
	/* Asking stops here; the attacker outlasts it (and its 20 s start). */
	int probe_ms = h_slow_ms(20000), nfds, st;
	uint64_t t0;
	pid_t pid;

	/*
	 * Under valgrind the held case is skipped (valgrind is slower than the
	 * 100 ms it asserts); the full-table one runs, its limit stretched:
	 * what it asserts first is that no request is closed unanswered.
	 */
	if (wrapped && nofile == 0)
		h_skip("a latency story: not under %s", wrapper);
	limit_ms = (uint64_t)h_slow_ms((int)limit_ms);
	h_assert(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 8192)
		h_skip("the hard RLIMIT_NOFILE is %llu: 8192 are needed for "
		       "2,000 connections on both sides",
		    (unsigned long long)rl.rlim_max);
	rl.rlim_cur = 8192;
	h_assert(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s",
	    strerror(errno));
	opts.nofile = nofile != 0 ? nofile : 8192;
	d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_admin(admin, "s3cret-t0ken"),
		h_upstream("api", l1, h_backend_addr(echo), NULL)));

	at = mmap(NULL, sizeof(*at), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	h_assert(at != MAP_FAILED, "mmap");
	memset((void *)at, 0, sizeof(*at));
	pid = fork();
	h_assert(pid != -1, "fork");
	if (pid == 0)
		attack_run(admin, nidle, ntrickle, 30 + probe_ms / 1000, at);
	for (t0 = h_now_ms(); !at->ready && h_now_ms() - t0 < 20000;)
		poll(NULL, 0, 20);
	h_assert(at->ready, "the attacker opened %u of %u connections",
	    at->opened, nidle + ntrickle);
	nfds = h_daemon_nfds(d);
	probe_admin(d, admin, good, "with the attacker on",
	    h_now_ms() + (uint64_t)probe_ms, &p);
	fprintf(stderr,
	    "%s: nofile %u: %u idle + %u trickling held (%u open at the end, "
	    "%u made again; daemon %d fds at the start): %u /health p50 %llu "
	    "ms p99 %llu ms, %u /stats p50 %llu ms p99 %llu ms, worst %llu "
	    "ms (%llu ms without the waits for a CPU)\n",
	    H_WHERE, opts.nofile, nidle, ntrickle, at->open, at->reconnects,
	    nfds, p.nh, (unsigned long long)p.health[p.nh / 2],
	    (unsigned long long)p.health[p.nh * 99 / 100], p.ns,
	    (unsigned long long)p.stats[p.ns / 2],
	    (unsigned long long)p.stats[p.ns * 99 / 100],
	    (unsigned long long)p.worst, (unsigned long long)p.worst_own);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	h_assert(p.worst_own < limit_ms,
	    "an answer took %llu ms, %llu without the waits for a CPU "
	    "(limit %llu) with %u idle and %u trickling connections",
	    (unsigned long long)p.worst, (unsigned long long)p.worst_own,
	    (unsigned long long)limit_ms, nidle, ntrickle);
	still_answers(admin, l1, "the attacker");
	h_daemon_stop_ok(d);
}

/* 2,000 connections held, all of them in the daemon's table: 100 ms. */
START_TEST(admin_starvation)
{
	starvation_story(0, 100);
}
END_TEST

/*
 * The same with a table of 128 (nofile 512): the oldest waiting go, the
 * attacker comes back thousands of times a second, and every answer still
 * comes within 500 ms (223 ms seen under ASan; on the old code: none in
 * 10 s). No /health or /stats is ever closed unanswered: a connection
 * whose request has come in is not closed for room, however old.
 */
START_TEST(admin_starvation_table_full)
{
	starvation_story(512, 500);
}
END_TEST

/* SIGTERM: while relays drain, the endpoint answers until the exit. */
START_TEST(admin_during_drain)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4();
	struct h_daemon *d = start_api(admin, NULL, l1, echo);
	struct jv *j;
	int fd = h_connect_ok(l1), st;
	char buf[2];

	h_assert(h_send_all(fd, "hi", 2, H_WAIT_MS) == 0 &&
		h_recv_exact(fd, buf, 2, H_WAIT_MS) == H_OUT_DATA,
	    "relay");
	h_daemon_signal(d, SIGTERM);
	h_expect_log(d, H_WAIT_MS, "event=stopping");
	http_expect(admin, "GET", "/health", NULL, 200);
	j = stats_of(admin, "api", NULL);
	h_assert(jget(j, "active_connections")->num == 1,
	    "active_connections %g while draining",
	    jget(j, "active_connections")->num);
	http_expect(admin, "GET", "/metrics", NULL, 200);
	close(fd);
	st = h_daemon_wait_exit(d, H_STOP_MS);
	h_assert(st == 0, "exit %d", st);
	h_assert(h_connect(admin, 1000) == -1,
	    "the admin address still accepts after the exit");
}
END_TEST

/* admin on a unix socket; the file is removed at the exit. */
START_TEST(admin_unix_socket)
{
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr(AF_UNIX), *l1 = h_free_addr4();
	const char *curl = tool("curl");
	struct h_daemon *d = start_api(admin, NULL, l1, echo);
	struct stat sb;
	char *out, *err;
	int st;

	http_expect(admin, "GET", "/health", NULL, 200);
	json_parse(http_expect(admin, "GET", "/stats", NULL, 200).body);
	if (curl != NULL) {
		const char *argv[] = { curl, "-sS", "--unix-socket", admin + 5,
			"http://admin/stats/api", NULL };

		st = tool_run(argv, NULL, H_WAIT_MS, &out, &err);
		h_assert(st == 0, "curl --unix-socket: %d %s", st, err);
		json_parse(out);
	} else
		fprintf(stderr,
		    "%s: curl is not installed: not tried with "
		    "curl --unix-socket\n",
		    H_WHERE);
	h_assert(stat(admin + 5, &sb) == 0, "no socket file %s", admin + 5);
	h_daemon_stop_ok(d);
	h_assert(stat(admin + 5, &sb) == -1 && errno == ENOENT,
	    "the socket file %s is still there", admin + 5);
}
END_TEST

/* An admin address in use: exit 1 with a reason naming it. */
START_TEST(admin_address_in_use)
{
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *taken = h_backend(H_SILENT);
	char *l1 = h_free_addr4();
	const char *path = h_write_file("in-use.ini",
	    h_strf("%s%s", global_admin(h_backend_addr(taken), NULL),
		h_upstream("api", l1, h_backend_addr(echo), NULL)));
	struct h_run r;

	h_run(&r, "-c", path);
	h_assert(r.status == 1, "exit %d, 1 expected:\n%s", r.status, r.err);
	h_assert(strstr(r.err, h_backend_addr(taken)) != NULL &&
		strstr(r.err, "in use") != NULL,
	    "no reason naming %s:\n%s", h_backend_addr(taken), r.err);
}
END_TEST

/* The operator's client: curl against /stats, /metrics and an override. */
START_TEST(admin_curl)
{
	const char *curl = tool("curl");
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4(), *out, *err;
	struct h_daemon *d;
	struct jv *j;
	int st;

	if (curl == NULL)
		h_skip("curl is not installed");
	d = start_api(admin, "k3y", l1, echo);
	{
		const char *argv[] = { curl, "-sS", "-H",
			"Authorization: Bearer k3y", url(admin, "/stats"),
			NULL };

		st = tool_run(argv, NULL, H_WAIT_MS, &out, &err);
		h_assert(st == 0, "curl /stats: %d %s", st, err);
		j = json_parse(out);
		check_stats_object("api", jget(jget(j, "upstreams"), "api"));
	}
	{
		const char *argv[] = { curl, "-sS", "-o", "/dev/null", "-w",
			"%{http_code}", url(admin, "/stats"), NULL };

		st = tool_run(argv, NULL, H_WAIT_MS, &out, &err);
		h_assert(st == 0 && strcmp(out, "401") == 0,
		    "curl /stats without the token: %s", out);
	}
	{
		const char *argv[] = { curl, "-sS", "-X", "POST", "-H",
			"Authorization: Bearer k3y",
			url(admin, "/upstreams/api/force-open?for=30s"), NULL };

		st = tool_run(argv, NULL, H_WAIT_MS, &out, &err);
		h_assert(st == 0, "curl force-open: %d %s", st, err);
		j = json_parse(out);
		h_assert(strcmp(jget(j, "state")->str, "forced_open") == 0 &&
			jget(j, "retry_after")->num > 29,
		    "curl force-open: %s", out);
	}
	{
		const char *argv[] = { curl, "-sS", "-f", url(admin, "/health"),
			NULL };

		st = tool_run(argv, NULL, H_WAIT_MS, &out, &err);
		h_assert(st == 0 && strcmp(out, "ok\n") == 0,
		    "curl /health: %d %s", st, out);
	}
	h_daemon_stop_ok(d);
}
END_TEST

/* The installed Chromium, or NULL. */
static const char *
chromium(void)
{
	const char *c = tool("/usr/bin/chromium");

	if (c == NULL)
		c = tool("chromium");
	if (c == NULL)
		c = tool("chromium-browser");
	return c;
}

/*
 * Load a page in headless Chromium (a fresh profile, no network beyond
 * loopback, 3 s of virtual time for its script) and return the DOM after
 * the script ran; with shot, save a screenshot there instead.
 */
static char *
chromium_run(const char *browser, const char *page, const char *shot)
{
	static unsigned profiles;
	const char *argv[] = { browser, "--headless", "--no-sandbox",
		"--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--hide-scrollbars",
		h_strf("--user-data-dir=%s",
		    h_path(h_strf("chromium-%u", ++profiles))),
		"--virtual-time-budget=3000", "--window-size=1560,300",
		shot != NULL ? h_strf("--screenshot=%s", shot) : "--dump-dom",
		page, NULL };
	char *out, *err;
	int st;

	st = tool_run(argv, NULL, 45000, &out, &err);
	h_assert(st == 0, "chromium %s: exit %d\n%s", page, st, err);
	return out;
}

/*
 * The status page in a real browser: one upstream closed, one open; after
 * its script ran, the DOM shows both with their states, and a screenshot
 * is kept in the test directory's parent (tests/tmp/status-page.png).
 */
START_TEST(admin_status_page_chromium)
{
	const char *browser = chromium();
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *refuse = h_backend(H_REFUSE);
	char *admin = h_free_addr4(), *l1 = h_free_addr4(),
	     *l2 = h_free_addr4(), *out, *shot;
	const char *top = getenv("CP_TEST_TMPDIR");
	struct h_daemon *d;
	unsigned char png[8];
	FILE *f;

	if (browser == NULL)
		h_skip("no chromium installed (Debian package chromium)");
	d = h_daemon_start(h_strf("%s%s%s", global_admin(admin, NULL),
	    h_upstream("api", l1, h_backend_addr(echo), NULL),
	    h_upstream("db", l2, h_backend_addr(refuse),
		"failure_threshold = 2\nrecovery_timeout = 10m\n")));
	h_assert(h_echo_roundtrip(l1, "hi", H_WAIT_MS), "echo");
	trip(l2, 3);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=db", "to=open");

	out = chromium_run(browser, url(admin, "/"), NULL);
	h_assert(strstr(out,
		     "<tr data-upstream=\"api\" data-state=\"closed\">") !=
		NULL,
	    "the page does not show api closed:\n%s", out);
	h_assert(strstr(out, "<tr data-upstream=\"db\" data-state=\"open\">") !=
		NULL,
	    "the page does not show db open:\n%s", out);
	h_assert(strstr(out, "class=\"state s-open\">open</span>") != NULL &&
		strstr(out, "class=\"state s-closed\">closed</span>") != NULL,
	    "the states are not shown in colour:\n%s", out);
	h_assert(strstr(out, "consecutive_failures") != NULL,
	    "db's last transition is not shown:\n%s", out);
	h_assert(strstr(out, "loading…") == NULL,
	    "the page never loaded /stats:\n%s", out);
	h_assert(strstr(out, " · 2 upstreams · ") != NULL,
	    "the header does not count 2 upstreams:\n%s", out);
	h_assert(strstr(out,
		     "<button id=\"token\" type=\"button\" hidden=\"\">") !=
		NULL,
	    "token… is offered with no token set:\n%s", out);

	shot = h_strf("%s/status-page.png", top != NULL ? top : h_tmpdir());
	unlink(shot);
	chromium_run(browser, url(admin, "/"), shot);
	f = fopen(shot, "rb");
	h_assert(f != NULL && fread(png, 1, 8, f) == 8 &&
		memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0,
	    "no PNG screenshot at %s", shot);
	fclose(f);
	fprintf(stderr, "check_admin: the status page is in %s\n", shot);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Lay the page out at 1280 and at 420 pixels in one browser; the JSON
 * report of each in *wide and *phone, the screenshots kept in dir.
 */
static void
page_layout(const char *browser, const char *python, const char *page,
    const char *dir, char **wide, char **phone)
{
	const char *argv[] = { python, h_srcpath("tests/e2e/page_layout.py"),
		browser, page, h_path("layout-profile"),
		h_strf("1280:%s/status-page-wide.png", dir),
		h_strf("420:%s/status-page-phone.png", dir), NULL };
	char *out, *err, *nl;
	int st;

	st = tool_run(argv, NULL, 25000, &out, &err);
	h_assert(st == 0, "page_layout.py %s: exit %d\n%s", page, st, err);
	nl = strchr(out, '\n');
	h_assert(nl != NULL && h_count_lines(out) == 2,
	    "page_layout.py printed:\n%s", out);
	*wide = h_strf("%.*s", (int)(nl - out), out);
	*phone = h_strf("%s", nl + 1);
}

/*
 * The status page with 20 upstreams (open, closed, forced_closed for a
 * while, with traffic), laid out by a real Chromium: at 1280 pixels no
 * element reaches past the window (no horizontal scrollbar) and every
 * upstream is a table row; at 420 pixels (a phone) nothing does either,
 * and each upstream is a card. It shows connect latency and bytes each
 * way, ends in for the forced_closed one, and no "token..." button (none
 * is set). Both screenshots are kept beside the test directory
 * (status-page-wide.png, status-page-phone.png), as in docs/.
 */
START_TEST(admin_status_page_layout)
{
	const char *browser = chromium(), *python = tool("python3");
	const char *top = getenv("CP_TEST_TMPDIR");
	struct h_backend *echo = h_backend(H_ECHO);
	struct h_backend *refuse = h_backend(H_REFUSE);
	char *admin = h_free_addr4(), *lis[20], *wide, *phone;
	const char *conf;
	const char *name = "orders-service-04-eu-west";
	struct h_daemon *d;
	unsigned i;

	if (browser == NULL)
		h_skip("no chromium installed (Debian package chromium)");
	if (python == NULL)
		h_skip(
		    "no python3 to drive chromium (tests/e2e/page_layout.py)");
	conf = global_admin(admin, NULL);
	for (i = 0; i < 20; i++) {
		lis[i] = h_free_addr4();
		conf = h_strf("%s%s", conf,
		    h_upstream(h_strf("orders-service-%02u-eu-west", i), lis[i],
			h_backend_addr(i < 3 ? refuse : echo),
			"failure_threshold = 1\nrecovery_timeout = 10m\n"));
	}
	d = h_daemon_start(conf);
	for (i = 0; i < 3; i++)
		trip(lis[i], 1);
	for (i = 3; i < 8; i++)
		h_assert(h_echo_roundtrip(lis[i], "hello", H_WAIT_MS), "echo");
	http_expect(admin, "POST",
	    h_strf("/upstreams/%s/force-closed?for=5m", name), NULL, 200);
	h_expect_log(d, H_WAIT_MS, "event=state",
	    "upstream=orders-service-02-eu-west", "to=open");

	page_layout(browser, python, url(admin, "/"),
	    top != NULL ? top : h_tmpdir(), &wide, &phone);
	h_assert(strstr(wide, "\"viewport\": 1280, \"scroll_width\": 1280,") !=
		    NULL &&
		strstr(wide, "\"wider\": []") != NULL,
	    "at 1280 px something is wider than the window:\n%.2000s", wide);
	h_assert(strstr(wide, "\"rows\": 20, \"row_display\": \"table-row\"") !=
		NULL,
	    "at 1280 px not 20 table rows:\n%.600s", wide);
	h_assert(strstr(wide, " 20 upstreams ") != NULL,
	    "the header does not say 20 upstreams:\n%.600s", wide);
	h_assert(strstr(wide, "\"token_button_hidden\": true") != NULL,
	    "token... shown with no token set:\n%.600s", wide);
	h_assert(strstr(wide, " ms\\n") != NULL &&
		strstr(wide, "CONNECT P50 / P99") != NULL &&
		strstr(wide, "BYTES IN / OUT") != NULL &&
		strstr(wide, "5 B\\n") != NULL,
	    "no connect latency or bytes shown:\n%.3000s", wide);

	h_assert(strstr(phone, "\"viewport\": 420, \"scroll_width\": 420,") !=
		    NULL &&
		strstr(phone, "\"wider\": []") != NULL,
	    "at 420 px something is wider than the window:\n%.2000s", phone);
	h_assert(strstr(phone, "\"rows\": 20, \"row_display\": \"block\"") !=
		NULL,
	    "at 420 px the upstreams are not cards:\n%.600s", phone);
	h_assert(strstr(phone, "forced_closed\\n4 m ") != NULL &&
		strstr(wide, "forced_closed\\t4 m ") != NULL,
	    "the forced_closed lifetime is not shown:\n%.3000s", phone);
	fprintf(stderr,
	    "check_admin: the status page is in %s/status-page-"
	    "{wide,phone}.png\n",
	    top != NULL ? top : h_tmpdir());
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * With admin_token set, the page itself loads without it, shows no data
 * and asks for the token in the page (a browser's prompt would block);
 * given it (here in the address, "#token=..."), it shows the upstreams.
 */
START_TEST(admin_status_page_token)
{
	const char *browser = chromium();
	struct h_backend *echo = h_backend(H_ECHO);
	char *admin = h_free_addr4(), *l1 = h_free_addr4(), *out;
	struct h_daemon *d;

	if (browser == NULL)
		h_skip("no chromium installed (Debian package chromium)");
	d = start_api(admin, "p4ge-t0ken", l1, echo);
	out = chromium_run(browser, url(admin, "/"), NULL);
	h_assert(strstr(out, "401: the admin token is needed") != NULL &&
		strstr(out, "<form id=\"tokenform\">") != NULL,
	    "the page does not ask for the token:\n%s", out);
	h_assert(strstr(out, "data-upstream=") == NULL,
	    "the page shows upstreams without the token:\n%s", out);
	out = chromium_run(browser, url(admin, "/#token=wrong"), NULL);
	h_assert(strstr(out, "401: the admin token is needed") != NULL &&
		strstr(out, "data-upstream=") == NULL,
	    "a wrong token was taken:\n%s", out);
	out = chromium_run(browser, url(admin, "/#token=p4ge-t0ken"), NULL);
	h_assert(strstr(out,
		     "<tr data-upstream=\"api\" data-state=\"closed\">") !=
		NULL,
	    "the page does not show api with the token:\n%s", out);
	h_assert(strstr(out, "<form id=\"tokenform\" hidden") != NULL,
	    "the token form is still out:\n%s", out);
	h_assert(strstr(out, " · 1 upstream · ") != NULL,
	    "the header does not say \"1 upstream\":\n%s", out);
	h_assert(strstr(out, "<button id=\"token\" type=\"button\">") != NULL,
	    "token… is not offered with a token in use:\n%s", out);
	h_daemon_stop_ok(d);
}
END_TEST

/* The suite. */
static Suite *
admin_suite(void)
{
	Suite *s = suite_create("admin");

	H_TEST(s, admin_routes);
	H_TEST(s, admin_stats_fields);
	H_TEST(s, admin_metrics_format);
	H_TEST(s, admin_metrics_promtool);
	H_TEST(s, admin_token);
	H_TEST(s, admin_query_params);
	H_TEST(s, admin_refused_logged);
	H_TEST(s, admin_reload_moves_with_token);
	H_TEST(s, admin_reload_on_off_unix);
	H_TEST(s, admin_unauthenticated_cannot_hold_slots);
	H_TEST(s, admin_foreign_requests);
	H_TEST(s, admin_force_open_expires);
	H_TEST(s, admin_force_closed_and_reset);
	H_TEST(s, admin_transitions);
	H_TEST(s, admin_garbage);
	H_TEST(s, admin_slow_clients);
	H_TEST(s, admin_connection_cap);
	H_TEST_LONG(s, admin_starvation, 90);
	H_TEST_LONG(s, admin_starvation_table_full, 90);
	H_TEST(s, admin_nofile_raised);
	H_TEST(s, admin_evict_spares_a_request);
	H_TEST(s, admin_full_table);
	H_TEST(s, admin_during_drain);
	H_TEST(s, admin_unix_socket);
	H_TEST(s, admin_address_in_use);
	H_TEST(s, admin_curl);
	/* Each starts Chromium up to three times: 30 s is too short on a busy box. */
	H_TEST_LONG(s, admin_status_page_chromium, 120);
	H_TEST_LONG(s, admin_status_page_layout, 120);
	H_TEST_LONG(s, admin_status_page_token, 120);
	return s;
}

H_MAIN(admin_suite)
