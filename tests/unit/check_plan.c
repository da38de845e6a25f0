/*
 * Check suite for the plan of a start or a reload (plan.c): two configs
 * and the sockets bound now in, what is kept, added, changed, removed,
 * bound, closed or shut first out, one row per story, no sockets opened.
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "plan.h"
#include "unit.h"

/* Sections the rows are written with. */
#define API "[upstream:api]\nlisten = 127.0.0.1:7001\nserver = 127.0.0.1:8001\n"
#define WEB "[upstream:web]\nlisten = 127.0.0.1:7002\nserver = 127.0.0.1:8002\n"
#define POOL "[pool:both]\nlisten = 127.0.0.1:7100\nmembers = api web\n"
#define ADMIN(a) "[global]\nadmin = " a "\n"

/* One story: the running config (NULL: start), the new one, the plan. */
struct plan_row {
	const char *what;
	const char *old; /* NULL at start */
	const char *conf;
	const char *bound; /* addresses bound now, space-separated; NULL none */
	const char *want;  /* plan_text() of the plan */
};

static const struct plan_row plan_rows[] = {
	{ "start: every section added, every address bound", NULL,
	    ADMIN("127.0.0.1:9000") API WEB POOL, NULL,
	    "up api=add web=add | pool both=add | listen 127.0.0.1:7001>api="
	    "bind 127.0.0.1:7002>web=bind 127.0.0.1:7100>both=bind | "
	    "admin=bind" },
	{ "the same config twice: nothing changes", API WEB POOL, API WEB POOL,
	    "127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7100",
	    "up api=keep web=keep | pool both=keep | listen 127.0.0.1:7001>"
	    "api=keep 127.0.0.1:7002>web=keep 127.0.0.1:7100>both=keep | "
	    "bound 127.0.0.1:7001=keep 127.0.0.1:7002=keep "
	    "127.0.0.1:7100=keep | admin=none" },
	{ "an upstream added", API, API WEB, "127.0.0.1:7001",
	    "up api=keep web=add | listen 127.0.0.1:7001>api=keep "
	    "127.0.0.1:7002>web=bind | bound 127.0.0.1:7001=keep | "
	    "admin=none" },
	{ "an upstream removed: its socket closed", API WEB, API,
	    "127.0.0.1:7001 127.0.0.1:7002",
	    "up api=keep | gone web | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep 127.0.0.1:7002=close | admin=none" },
	{ "an upstream renamed: a new one on the kept socket", API,
	    "[upstream:api2]\nlisten = 127.0.0.1:7001\n"
	    "server = 127.0.0.1:8001\n",
	    "127.0.0.1:7001",
	    "up api2=add | gone api | listen 127.0.0.1:7001>api2=keep | bound "
	    "127.0.0.1:7001=keep | admin=none" },
	{ "a listen address moved from one upstream to another", API WEB,
	    "[upstream:api]\nlisten = 127.0.0.1:7002\nserver = "
	    "127.0.0.1:8001\n[upstream:web]\nlisten = 127.0.0.1:7001\n"
	    "server = 127.0.0.1:8002\n",
	    "127.0.0.1:7001 127.0.0.1:7002",
	    "up api=change web=change | listen 127.0.0.1:7002>api=keep "
	    "127.0.0.1:7001>web=keep | bound 127.0.0.1:7001=keep "
	    "127.0.0.1:7002=keep | admin=none" },
	{ "a key changed: the upstream is kept, changed", API,
	    API "connect_timeout = 2s\n", "127.0.0.1:7001",
	    "up api=change | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep | admin=none" },
	{ "a pool added", API WEB, API WEB POOL,
	    "127.0.0.1:7001 127.0.0.1:7002",
	    "up api=keep web=keep | pool both=add | listen 127.0.0.1:7001>"
	    "api=keep 127.0.0.1:7002>web=keep 127.0.0.1:7100>both=bind | bound "
	    "127.0.0.1:7001=keep 127.0.0.1:7002=keep | admin=none" },
	{ "a pool removed: its socket closed", API WEB POOL, API WEB,
	    "127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7100",
	    "up api=keep web=keep | gone-pool both | listen 127.0.0.1:7001>"
	    "api=keep 127.0.0.1:7002>web=keep | bound 127.0.0.1:7001=keep "
	    "127.0.0.1:7002=keep 127.0.0.1:7100=close | admin=none" },
	{ "a pool's members changed", API WEB POOL,
	    API WEB "[pool:both]\nlisten = 127.0.0.1:7100\nmembers = web\n",
	    "127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7100",
	    "up api=keep web=keep | pool both=change | listen 127.0.0.1:7001>"
	    "api=keep 127.0.0.1:7002>web=keep 127.0.0.1:7100>both=keep | "
	    "bound 127.0.0.1:7001=keep 127.0.0.1:7002=keep "
	    "127.0.0.1:7100=keep | admin=none" },
	{ "127.0.0.1:P gives way to *:P: the old socket shut first", API,
	    "[upstream:api]\nlisten = *:7001\nserver = 127.0.0.1:8001\n",
	    "127.0.0.1:7001 127.0.0.1:7005",
	    "up api=change | listen *:7001>api=bind | bound 127.0.0.1:7001="
	    "shut 127.0.0.1:7005=close | admin=none" },
	{ "admin kept where it is", ADMIN("127.0.0.1:9000") API,
	    ADMIN("127.0.0.1:9000") "admin_token = t2\n" API, "127.0.0.1:7001",
	    "up api=keep | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep | admin=keep" },
	{ "admin moved: a new socket", ADMIN("127.0.0.1:9000") API,
	    ADMIN("127.0.0.1:9001") API, "127.0.0.1:7001",
	    "up api=keep | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep | admin=bind" },
	{ "admin turned on", API, ADMIN("127.0.0.1:9000") API, "127.0.0.1:7001",
	    "up api=keep | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep | admin=bind" },
	{ "admin turned off", ADMIN("127.0.0.1:9000") API, API,
	    "127.0.0.1:7001",
	    "up api=keep | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep | admin=close" },
	{ "restart-only keys changed: listed, nothing else",
	    "[global]\nworkers = 1\n" API,
	    "[global]\nworkers = 2\nstate_file = /tmp/x.state\n" API,
	    "127.0.0.1:7001",
	    "up api=keep | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep | admin=none | restart workers state_file" },
	{ "a reloadable global key changed: no restart needed", API,
	    "[global]\nlog_level = debug\n" API, "127.0.0.1:7001",
	    "up api=keep | listen 127.0.0.1:7001>api=keep | bound "
	    "127.0.0.1:7001=keep | admin=none" },
};

/* Append to a text buffer. */
static void __attribute__((format(printf, 3, 4)))
cat(char *buf, size_t len, const char *fmt, ...)
{
	size_t o = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + o, len - o, fmt, ap);
	va_end(ap);
}

/* The name of a fate, as the rows write it. */
static const char *
fate(enum plan_fate f)
{
	static const char *const names[] = { "keep", "change", "add", "close",
		"shut" };

	return names[f];
}

/* A plan as one line: what a reviewer of a row reads. */
static const char *
plan_text(const struct plan *p, const struct config *old,
    const struct config *conf, const struct addr *bound)
{
	static const char *const admin[] = { "none", "keep", "bind", "close" };
	static char buf[4096];
	const struct plan_listen *pl;
	size_t i;

	buf[0] = '\0';
	cat(buf, sizeof(buf), "up");
	for (i = 0; i < p->nupstreams; i++)
		cat(buf, sizeof(buf), " %s=%s", conf->upstreams[i].name,
		    fate(p->upstreams[i].fate));
	if (p->nremoved > 0)
		cat(buf, sizeof(buf), " | gone");
	for (i = 0; i < p->nremoved; i++)
		cat(buf, sizeof(buf), " %s",
		    old->upstreams[p->removed[i]].name);
	if (p->npools > 0)
		cat(buf, sizeof(buf), " | pool");
	for (i = 0; i < p->npools; i++)
		cat(buf, sizeof(buf), " %s=%s", conf->pools[i].name,
		    fate(p->pools[i].fate));
	if (p->npools_removed > 0)
		cat(buf, sizeof(buf), " | gone-pool");
	for (i = 0; i < p->npools_removed; i++)
		cat(buf, sizeof(buf), " %s",
		    old->pools[p->pools_removed[i]].name);
	cat(buf, sizeof(buf), " | listen");
	for (i = 0; i < p->nlistens; i++) {
		pl = &p->listens[i];
		cat(buf, sizeof(buf), " %s>%s=%s", pl->addr->text,
		    pl->pool != PLAN_NONE ? conf->pools[pl->pool].name
					  : conf->upstreams[pl->upstream].name,
		    pl->bound != PLAN_NONE ? "keep" : "bind");
	}
	if (p->nbound > 0)
		cat(buf, sizeof(buf), " | bound");
	for (i = 0; i < p->nbound; i++)
		cat(buf, sizeof(buf), " %s=%s", bound[i].text,
		    fate(p->bound[i]));
	cat(buf, sizeof(buf), " | admin=%s", admin[p->admin]);
	if (p->nrestart > 0)
		cat(buf, sizeof(buf), " | restart");
	for (i = 0; i < p->nrestart; i++)
		cat(buf, sizeof(buf), " %s", p->restart[i]->name);
	return buf;
}

/* Load a config that must be good. */
static struct config *
load(const char *text)
{
	struct config_errors errs = { NULL, 0 };
	struct config *conf;

	conf = config_load_string("t.ini", text, &errs);
	if (conf == NULL)
		ck_abort_msg("bad config: %s",
		    errs.n > 0 ? errs.v[0].msg : "?");
	return conf;
}

/* Parse the bound addresses of a row; how many. */
static size_t
parse_bound(const char *text, struct addr *v, size_t max)
{
	char copy[512], *tok, *save = NULL, *cause = NULL;
	size_t n = 0;

	if (text == NULL)
		return 0;
	snprintf(copy, sizeof(copy), "%s", text);
	for (tok = strtok_r(copy, " ", &save); tok != NULL && n < max;
	     tok = strtok_r(NULL, " ", &save))
		if (addr_parse(tok, ADDR_ALLOW_WILDCARD, &v[n++], &cause) != 0)
			ck_abort_msg("bad address %s: %s", tok, cause);
	return n;
}

/* Each row: its plan reads as the row says. */
START_TEST(plan_row)
{
	const struct plan_row *r = &plan_rows[_i];
	struct config *old = r->old != NULL ? load(r->old) : NULL;
	struct config *conf = load(r->conf);
	struct addr bound[8];
	size_t nbound = parse_bound(r->bound, bound, 8);
	struct plan *p = plan_new(old, conf, bound, nbound);

	ck_assert_msg(strcmp(plan_text(p, old, conf, bound), r->want) == 0,
	    "%s:\n got  %s\n want %s", r->what, plan_text(p, old, conf, bound),
	    r->want);
	plan_free(p);
	config_free(conf);
	config_free(old);
}
END_TEST

/* The counts the daemon logs agree with the fates. */
START_TEST(plan_counts)
{
	struct config *old = load(API WEB POOL);
	struct config *conf =
	    load("[upstream:new]\nlisten = 127.0.0.1:7003\nserver = "
		 "127.0.0.1:8003\n" API);
	struct addr bound[4];
	size_t nbound =
	    parse_bound("127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7100", bound,
		4);
	struct plan *p = plan_new(old, conf, bound, nbound);

	ck_assert_uint_eq(p->nadded, 1);
	ck_assert_uint_eq(p->nremoved, 1);
	ck_assert_uint_eq(p->npools_removed, 1);
	ck_assert_uint_eq(p->nbind, 1);
	ck_assert_uint_eq(p->upstreams[1].was, 0);
	ck_assert_uint_eq(p->upstreams[0].was, PLAN_NONE);
	plan_free(p);
	config_free(conf);
	config_free(old);
}
END_TEST

/* The plan's suite. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_ROWS("plan", plan_row, plan_rows),
		UNIT_TEST("plan", plan_counts),
	};

	return unit_suite_new("plan", tests, UNIT_NROWS(tests));
}
