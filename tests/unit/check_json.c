/*
 * Check suite for the JSON reader of circuitproxyctl: every kind of value,
 * escapes and surrogates, lookups, printing both ways, and a table of
 * invalid documents refused with the offset and the reason.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "unit.h"

/* Parse text that must be valid. */
static struct json *
parse_ok(const char *text)
{
	char *cause = NULL;
	struct json *j = json_parse(text, strlen(text), &cause);

	if (j == NULL)
		ck_abort_msg("'%s': %s", text, cause);
	return j;
}

/* Print a tree into a new string. */
static char *
print(const struct json *j, bool compact)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	json_print(f, j, compact);
	fclose(f);
	return buf;
}

/* A STATS-like document: types, lookups, numbers kept as written. */
START_TEST(test_values)
{
	struct json *j = parse_ok(
	    " {\"version\":\"0.1.0\", \"uptime_s\": 12.5,\n"
	    "\"upstreams\": {\"api\": {\"state\": \"open\", \"retry_after\": "
	    "29.412, \"backup\": null, \"dry\": false, \"on\": true, "
	    "\"listen\": [\"127.0.0.1:8080\", \"[::1]:8080\"], \"big\": "
	    "18446744073709551615, \"neg\": -0.5e-3, \"e\": [] , \"o\": "
	    "{}}}} ");
	const struct json *api, *v;

	ck_assert_int_eq(j->type, JSON_OBJECT);
	ck_assert_str_eq(json_get(j, "version")->text, "0.1.0");
	ck_assert(json_get(j, "uptime_s")->num == 12.5);
	api = json_get(json_get(j, "upstreams"), "api");
	ck_assert_ptr_nonnull(api);
	ck_assert_str_eq(api->key, "api");
	ck_assert_str_eq(json_get(api, "state")->text, "open");
	ck_assert(json_get(api, "retry_after")->num == 29.412);
	ck_assert_int_eq(json_get(api, "backup")->type, JSON_NULL);
	ck_assert_int_eq(json_get(api, "dry")->type, JSON_BOOL);
	ck_assert(!json_get(api, "dry")->boolean);
	ck_assert(json_get(api, "on")->boolean);
	v = json_get(api, "listen");
	ck_assert_int_eq(v->type, JSON_ARRAY);
	ck_assert_str_eq(v->child->text, "127.0.0.1:8080");
	ck_assert_str_eq(v->child->next->text, "[::1]:8080");
	ck_assert_ptr_null(v->child->next->next);
	ck_assert_str_eq(json_get(api, "big")->text, "18446744073709551615");
	ck_assert(json_get(api, "neg")->num == -0.0005);
	ck_assert_ptr_null(json_get(api, "e")->child);
	ck_assert_ptr_null(json_get(api, "missing"));
	ck_assert_ptr_null(json_get(json_get(api, "listen"), "x"));
	ck_assert_ptr_null(json_get(NULL, "x"));
	json_free(j);
}
END_TEST

/* Escapes decode to the bytes they stand for, surrogates to UTF-8. */
START_TEST(test_strings)
{
	struct json *j = parse_ok("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", "
				  "\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\", "
				  "\"x\\u0000y\", \"\xc3\xa9\"]");
	const struct json *s = j->child;

	ck_assert_str_eq(s->text, "a\"b\\c/d\b\f\n\r\t");
	s = s->next;
	ck_assert_str_eq(s->text, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	s = s->next;
	ck_assert_uint_eq(s->len, 3);
	ck_assert(memcmp(s->text, "x\0y", 3) == 0);
	ck_assert_str_eq(s->next->text, "\xc3\xa9");
	json_free(j);
}
END_TEST

/* Printing: indented by two, or compact; strings escaped again. */
static const struct {
	const char *name, *text;
	bool compact;
	const char *want;
} prints[] = {
	{ "compact",
	    "{\"a\": [1, 2.50, {\"b\": null}], \"c\": \"q\\\"\\n\\u0001\", "
	    "\"d\": {}, \"e\": [], \"f\": true}",
	    true,
	    "{\"a\":[1,2.50,{\"b\":null}],\"c\":\"q\\\"\\n\\u0001\","
	    "\"d\":{},\"e\":[],\"f\":true}\n" },
	{ "indented",
	    "{\"a\": [1, 2.50, {\"b\": null}], \"c\": \"q\\\"\\n\\u0001\", "
	    "\"d\": {}, \"e\": [], \"f\": true}",
	    false,
	    "{\n"
	    "  \"a\": [\n"
	    "    1,\n"
	    "    2.50,\n"
	    "    {\n"
	    "      \"b\": null\n"
	    "    }\n"
	    "  ],\n"
	    "  \"c\": \"q\\\"\\n\\u0001\",\n"
	    "  \"d\": {},\n"
	    "  \"e\": [],\n"
	    "  \"f\": true\n"
	    "}\n" },
	{ "scalar", "7", false, "7\n" },
};

/* Parse prints row _i and print it back. */
START_TEST(test_print)
{
	struct json *j = parse_ok(prints[_i].text);
	char *out = print(j, prints[_i].compact);

	ck_assert_msg(strcmp(out, prints[_i].want) == 0, "%s: printed\n%s",
	    prints[_i].name, out);
	free(out);
	json_free(j);
}
END_TEST

/* Quoting: quotes, backslashes, control characters, DEL and NUL escaped. */
START_TEST(test_quote)
{
	struct util_buf b = { 0 };
	struct json *j;
	char *out;

	json_quote(&b, "a\"b\\c\nd\te\r\x01\x1f\x7f/\xc3\xa9\0z", 18);
	ck_assert_str_eq(b.p,
	    "\"a\\\"b\\\\c\\nd\\te\\r\\u0001\\u001f\\u007f/\xc3\xa9\\u0000z\"");
	j = parse_ok(b.p);
	ck_assert_uint_eq(j->len, 18);
	ck_assert_mem_eq(j->text, "a\"b\\c\nd\te\r\x01\x1f\x7f/\xc3\xa9\0z",
	    18);
	out = print(j, true);
	ck_assert_str_eq(out,
	    "\"a\\\"b\\\\c\\nd\\te\\r\\u0001\\u001f\\u007f/"
	    "\xc3\xa9\\u0000z\"\n");
	free(out);
	json_free(j);
	util_buf_free(&b);
}
END_TEST

#define TEXT(s) s, sizeof(s) - 1

/* Invalid documents, each refused with where and why. */
static const struct {
	const char *text;
	size_t len; /* a NUL byte may be inside */
	const char *cause;
} bad[] = {
	{ TEXT(""), "offset 0: unexpected end" },
	{ TEXT("   "), "offset 3: unexpected end" },
	{ TEXT("{"), "offset 1: expected a member name" },
	{ TEXT("{\"a\"}"), "offset 4: expected ':'" },
	{ TEXT("{\"a\":1,}"), "offset 7: expected a member name" },
	{ TEXT("{\"a\":1 \"b\":2}"), "offset 7: expected ',' or '}'" },
	{ TEXT("[1,]"), "offset 3: unexpected byte" },
	{ TEXT("[1 2]"), "offset 3: expected ',' or ']'" },
	{ TEXT("[1"), "offset 2: expected ',' or ']'" },
	{ TEXT("{} x"), "offset 3: trailing bytes" },
	{ TEXT("01"), "offset 1: trailing bytes" },
	{ TEXT("-"), "offset 1: bad number" },
	{ TEXT("1."), "offset 2: bad number" },
	{ TEXT("1e+"), "offset 3: bad number" },
	{ TEXT(".5"), "offset 0: unexpected byte" },
	{ TEXT("+1"), "offset 0: unexpected byte" },
	{ TEXT("tru"), "offset 0: unexpected byte" },
	{ TEXT("nul"), "offset 0: unexpected byte" },
	{ TEXT("\"abc"), "offset 4: unterminated string" },
	{ TEXT("\"a\nb\""), "offset 2: control character in a string" },
	{ TEXT("\"\\x\""), "offset 2: bad escape" },
	{ TEXT("\"\\u12g4\""), "offset 6: bad \\u escape" },
	{ TEXT("\"\\ud800\""), "offset 7: lone high surrogate" },
	{ TEXT("\"\\ud800\\u0041\""), "offset 13: lone high surrogate" },
	{ TEXT("\"\\udc00\""), "offset 7: lone low surrogate" },
	{ TEXT("{1:2}"), "offset 1: expected a member name" },
	/* A NUL byte inside the length is an error, not the end of the text. */
	{ TEXT("{}\0"), "offset 2: trailing bytes" },
};

/* Each invalid document gives its cause and no tree. */
START_TEST(test_bad)
{
	char *cause = NULL;

	ck_assert_ptr_null(json_parse(bad[_i].text, bad[_i].len, &cause));
	ck_assert_str_eq(cause, bad[_i].cause);
	free(cause);
}
END_TEST

/* Nesting is limited; at the limit it still parses. */
START_TEST(test_depth)
{
	char deep[2 * JSON_DEPTH_MAX + 8], *cause = NULL;
	struct json *j;
	int i;

	for (i = 0; i < JSON_DEPTH_MAX; i++) {
		deep[i] = '[';
		deep[JSON_DEPTH_MAX + i] = ']';
	}
	deep[2 * JSON_DEPTH_MAX] = '\0';
	j = json_parse(deep, strlen(deep), &cause);
	ck_assert_ptr_nonnull(j);
	json_free(j);
	memmove(deep + 1, deep, strlen(deep) + 1);
	deep[0] = '[';
	strcat(deep, "]");
	ck_assert_ptr_null(json_parse(deep, strlen(deep), &cause));
	ck_assert_str_eq(cause, "offset 64: nested too deep");
	free(cause);
}
END_TEST

/* The reader's tests; the print and bad tables one test per row. */
Suite *
unit_suite(void)
{
	const struct unit_test tests[] = {
		UNIT_TEST("reader", test_values),
		UNIT_TEST("reader", test_strings),
		UNIT_ROWS("reader", test_print, prints),
		UNIT_TEST("reader", test_quote),
		UNIT_ROWS("reader", test_bad, bad),
		UNIT_TEST("reader", test_depth),
	};

	return unit_suite_new("json", tests, UNIT_NROWS(tests));
}
