/*
 * libFuzzer target: the JSON reader of circuitproxyctl (json_parse), which
 * reads whatever answers on the admin address. A document it accepts is
 * looked up and printed both ways; the compact print must parse again and
 * print the same.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "json.h"

/* Print compactly into a new string (the caller frees it). */
static char *
fuzz_json_compact(const struct json *j, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (f == NULL)
		abort();
	json_print(f, j, true);
	fclose(f);
	return buf;
}

/* One input: parse, look up, print, parse the print again. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json *j, *again;
	char *cause = NULL, *one, *two;
	size_t len1, len2;

	j = json_parse((const char *)data, size, &cause);
	if (j == NULL) {
		if (cause == NULL)
			abort();
		free(cause);
		return 0;
	}
	(void)json_get(j, "upstreams");
	(void)json_get(j, "state");
	json_print(fuzz_sink(), j, false);
	one = fuzz_json_compact(j, &len1);
	again = json_parse(one, len1, &cause);
	if (again == NULL)
		abort();
	two = fuzz_json_compact(again, &len2);
	if (len1 != len2 || memcmp(one, two, len1) != 0)
		abort();
	json_free(again);
	json_free(j);
	free(one);
	free(two);
	return 0;
}
