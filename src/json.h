/*
 * A small JSON reader for circuitproxyctl: the admin endpoint's answers
 * parsed into a tree, looked up by key, and printed again (indented or
 * compact). Numbers keep their text, so printing changes no digit. Its
 * string quoting is the one the daemon's JSON is written with too.
 */
#ifndef CP_JSON_H
#define CP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util.h"

/* Deeper nesting than this is refused. */
#define JSON_DEPTH_MAX 64

enum json_type {
	JSON_NULL,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};

struct json {
	enum json_type type;
	char *key;	    /* the member's name inside an object, else NULL */
	char *text;	    /* a string's value (UTF-8), a number's digits */
	size_t len;	    /* of text (a string may hold NUL) */
	double num;	    /* a number's value */
	bool boolean;	    /* a boolean's value */
	struct json *child; /* the first element or member */
	struct json *next;  /* the next one in the same array or object */
};

/* Parse a whole document; NULL with *cause ("offset N: ...") if invalid. */
struct json *json_parse(const char *, size_t, char **cause);
void json_free(struct json *);
/* The member of an object with that name, or NULL. */
const struct json *json_get(const struct json *, const char *);
/* Print a value: indented by two spaces per level, or compact; newline ends. */
void json_print(FILE *, const struct json *, bool compact);
/* Append len bytes as a quoted, escaped JSON string literal. */
void json_quote(struct util_buf *, const char *, size_t);

#endif
