/*
 * A small JSON reader (RFC 8259): recursive descent into a tree of nodes,
 * with a depth limit, strict number and string grammar (escapes and
 * surrogate pairs decoded to UTF-8), and a printer for that tree.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

/* Where the parser is, and why it stopped. */
struct json_parser {
	const char *s;
	size_t len;
	size_t pos;
	char *cause;
};

static struct json *json_value(struct json_parser *, unsigned depth);

/* Stop with a reason at the current offset; returns NULL. */
static struct json *
json_fail(struct json_parser *p, const char *why)
{
	if (p->cause == NULL)
		xasprintf(&p->cause, "offset %zu: %s", p->pos, why);
	return NULL;
}

/* Skip the whitespace JSON allows. */
static void
json_skip(struct json_parser *p)
{
	while (p->pos < p->len &&
	    (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
		p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
		p->pos++;
}

/* The next byte, or 0 at the end. */
static char
json_peek(struct json_parser *p)
{
	return p->pos < p->len ? p->s[p->pos] : '\0';
}

/* Consume a literal word (true, false, null) if it is there. */
static bool
json_word(struct json_parser *p, const char *w)
{
	size_t n = strlen(w);

	if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0)
		return false;
	p->pos += n;
	return true;
}

/* A new node of a type. */
static struct json *
json_node(enum json_type type)
{
	struct json *j = xcalloc(1, sizeof(*j));

	j->type = type;
	return j;
}

/* Read four hex digits of a \u escape. */
static int
json_hex4(struct json_parser *p, unsigned *out)
{
	unsigned v = 0, i;
	char c;

	if (p->len - p->pos < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		c = p->s[p->pos++];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* Append a code point as UTF-8. */
static size_t
json_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * Read the code point of a \u escape, its 'u' just read; a surrogate pair
 * is one. 0, or -1 after json_fail.
 */
static int
json_escape_u(struct json_parser *p, unsigned *cpp)
{
	unsigned cp, lo;

	if (json_hex4(p, &cp) != 0) {
		json_fail(p, "bad \\u escape");
		return -1;
	}
	if (cp >= 0xdc00 && cp <= 0xdfff) {
		json_fail(p, "lone low surrogate");
		return -1;
	}
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (!json_word(p, "\\u") || json_hex4(p, &lo) != 0 ||
		    lo < 0xdc00 || lo > 0xdfff) {
			json_fail(p, "lone high surrogate");
			return -1;
		}
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	*cpp = cp;
	return 0;
}

/*
 * Decode the escape after a '\\' into out: the bytes written (at most 4),
 * or -1 after json_fail.
 */
static int
json_escape(struct json_parser *p, char *out)
{
	static const char names[] = "\"\\/bfnrt";
	static const char bytes[] = "\"\\/\b\f\n\r\t";
	const char *at;
	unsigned cp;
	char c;

	c = p->pos < p->len ? p->s[p->pos++] : '\0';
	if (c == 'u') {
		if (json_escape_u(p, &cp) != 0)
			return -1;
		return (int)json_utf8(out, cp);
	}
	if (c == '\0' || (at = strchr(names, c)) == NULL) {
		p->pos--;
		json_fail(p, "bad escape");
		return -1;
	}
	*out = bytes[at - names];
	return 1;
}

/* Read a string (the opening quote is next) into a new buffer. */
static char *
json_string(struct json_parser *p, size_t *lenp)
{
	size_t o = 0;
	char *out, c;
	int n;

	p->pos++;
	/* Decoded, a string is never longer than its source. */
	out = xmalloc(p->len - p->pos + 1);
	for (;;) {
		if (p->pos >= p->len) {
			json_fail(p, "unterminated string");
			goto fail;
		}
		c = p->s[p->pos++];
		if (c == '"')
			break;
		if ((unsigned char)c < 0x20) {
			p->pos--;
			json_fail(p, "control character in a string");
			goto fail;
		}
		if (c != '\\') {
			out[o++] = c;
			continue;
		}
		if ((n = json_escape(p, out + o)) < 0)
			goto fail;
		o += (size_t)n;
	}
	out[o] = '\0';
	*lenp = o;
	return out;

fail:
	free(out);
	return NULL;
}

/* Read a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static struct json *
json_number(struct json_parser *p)
{
	size_t start = p->pos, n;
	struct json *j;

	if (json_peek(p) == '-')
		p->pos++;
	if (json_peek(p) == '0')
		p->pos++;
	else if (json_peek(p) >= '1' && json_peek(p) <= '9')
		while (json_peek(p) >= '0' && json_peek(p) <= '9')
			p->pos++;
	else
		return json_fail(p, "bad number");
	if (json_peek(p) == '.') {
		p->pos++;
		if (!(json_peek(p) >= '0' && json_peek(p) <= '9'))
			return json_fail(p, "bad number");
		while (json_peek(p) >= '0' && json_peek(p) <= '9')
			p->pos++;
	}
	if (json_peek(p) == 'e' || json_peek(p) == 'E') {
		p->pos++;
		if (json_peek(p) == '+' || json_peek(p) == '-')
			p->pos++;
		if (!(json_peek(p) >= '0' && json_peek(p) <= '9'))
			return json_fail(p, "bad number");
		while (json_peek(p) >= '0' && json_peek(p) <= '9')
			p->pos++;
	}
	n = p->pos - start;
	j = json_node(JSON_NUMBER);
	j->text = xmalloc(n + 1);
	memcpy(j->text, p->s + start, n);
	j->text[n] = '\0';
	j->len = n;
	j->num = strtod(j->text, NULL);
	return j;
}

/* Read the elements of an array or the members of an object. */
static struct json *
json_container(struct json_parser *p, unsigned depth)
{
	bool object = json_peek(p) == '{';
	char close = object ? '}' : ']';
	struct json *j, *item, **tail;
	char *key = NULL;
	size_t klen;

	if (depth >= JSON_DEPTH_MAX)
		return json_fail(p, "nested too deep");
	j = json_node(object ? JSON_OBJECT : JSON_ARRAY);
	tail = &j->child;
	p->pos++;
	json_skip(p);
	if (json_peek(p) == close) {
		p->pos++;
		return j;
	}
	for (;;) {
		if (object) {
			json_skip(p);
			if (json_peek(p) != '"') {
				json_fail(p, "expected a member name");
				goto fail;
			}
			if ((key = json_string(p, &klen)) == NULL)
				goto fail;
			json_skip(p);
			if (json_peek(p) != ':') {
				json_fail(p, "expected ':'");
				goto fail;
			}
			p->pos++;
		}
		if ((item = json_value(p, depth + 1)) == NULL)
			goto fail;
		item->key = key;
		key = NULL;
		*tail = item;
		tail = &item->next;
		json_skip(p);
		if (json_peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (json_peek(p) == close) {
			p->pos++;
			return j;
		}
		json_fail(p,
		    object ? "expected ',' or '}'" : "expected ',' or ']'");
		goto fail;
	}

fail:
	free(key);
	json_free(j);
	return NULL;
}

/* Read any value, whitespace around it skipped. */
static struct json *
json_value(struct json_parser *p, unsigned depth)
{
	struct json *j = NULL;
	char c;

	json_skip(p);
	c = json_peek(p);
	if (c == '{' || c == '[')
		j = json_container(p, depth);
	else if (c == '"') {
		j = json_node(JSON_STRING);
		if ((j->text = json_string(p, &j->len)) == NULL) {
			free(j);
			j = NULL;
		}
	} else if (c == '-' || (c >= '0' && c <= '9'))
		j = json_number(p);
	else if (json_word(p, "true") || json_word(p, "false")) {
		j = json_node(JSON_BOOL);
		j->boolean = c == 't';
	} else if (json_word(p, "null"))
		j = json_node(JSON_NULL);
	else
		json_fail(p,
		    p->pos >= p->len ? "unexpected end" : "unexpected byte");
	json_skip(p);
	return j;
}

/* Parse a whole document: one value and nothing after it. */
struct json *
json_parse(const char *s, size_t len, char **cause)
{
	struct json_parser p = { s, len, 0, NULL };
	struct json *j;

	j = json_value(&p, 0);
	if (j != NULL && p.pos != len) {
		json_free(j);
		j = json_fail(&p, "trailing bytes");
	}
	if (j == NULL)
		*cause = p.cause;
	return j;
}

/* Free a tree. */
void
json_free(struct json *j)
{
	struct json *next;

	for (; j != NULL; j = next) {
		next = j->next;
		json_free(j->child);
		free(j->key);
		free(j->text);
		free(j);
	}
}

/* Find an object's member by name. */
const struct json *
json_get(const struct json *j, const char *key)
{
	const struct json *c;

	if (j == NULL || j->type != JSON_OBJECT)
		return NULL;
	for (c = j->child; c != NULL; c = c->next)
		if (strcmp(c->key, key) == 0)
			return c;
	return NULL;
}

/*
 * Append len bytes as a JSON string literal: quoted, with '"', '\\' and the
 * control characters escaped; DEL (0x7f) too, which JSON allows raw but a
 * terminal would act on.
 */
void
json_quote(struct util_buf *b, const char *s, size_t len)
{
	unsigned char c;
	size_t i;

	util_buf_add(b, "\"", 1);
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			util_buf_printf(b, "\\%c", c);
		else if (c == '\n')
			util_buf_add(b, "\\n", 2);
		else if (c == '\t')
			util_buf_add(b, "\\t", 2);
		else if (c == '\r')
			util_buf_add(b, "\\r", 2);
		else if (c < 0x20 || c == 0x7f)
			util_buf_printf(b, "\\u%04x", c);
		else
			util_buf_add(b, &s[i], 1);
	}
	util_buf_add(b, "\"", 1);
}

/* Print a string with the escapes JSON needs. */
static void
json_print_string(FILE *f, const char *s, size_t len)
{
	struct util_buf b = { 0 };

	json_quote(&b, s, len);
	fwrite(b.p, 1, b.len, f);
	util_buf_free(&b);
}

/* Print a value at an indentation level. */
static void
json_print_value(FILE *f, const struct json *j, bool compact, unsigned level)
{
	const struct json *c;
	bool object = j->type == JSON_OBJECT;

	switch (j->type) {
	case JSON_NULL:
		fputs("null", f);
		return;
	case JSON_BOOL:
		fputs(j->boolean ? "true" : "false", f);
		return;
	case JSON_NUMBER:
		fputs(j->text, f);
		return;
	case JSON_STRING:
		json_print_string(f, j->text, j->len);
		return;
	default:
		break;
	}
	fputc(object ? '{' : '[', f);
	for (c = j->child; c != NULL; c = c->next) {
		if (!compact)
			fprintf(f, "\n%*s", (int)(level + 1) * 2, "");
		if (object) {
			json_print_string(f, c->key, strlen(c->key));
			fputs(compact ? ":" : ": ", f);
		}
		json_print_value(f, c, compact, level + 1);
		if (c->next != NULL)
			fputc(',', f);
	}
	if (!compact && j->child != NULL)
		fprintf(f, "\n%*s", (int)level * 2, "");
	fputc(object ? '}' : ']', f);
}

/* Print a value and a newline. */
void
json_print(FILE *f, const struct json *j, bool compact)
{
	json_print_value(f, j, compact, 0);
	fputc('\n', f);
}
