/*
 * The status page: the document built in from src/admin_page.html, each
 * copy with a new CSP nonce in place of its @NONCE@ marks, so that only
 * its own inline style and script run.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "admin_page.h"

/* The page, made into a C string by the build (see Makefile.am). */
static const char admin_page_html[] =
#include "admin_page.inc"
    ;

#define ADMIN_PAGE_MARK "@NONCE@"

/* Append the page with a fresh nonce (128 random bits, in hex). */
int
admin_page_render(struct evbuffer *buf, char *nonce, size_t len)
{
	unsigned char rnd[16];
	const char *p = admin_page_html, *m;
	size_t i;

	if (len < 2 * sizeof(rnd) + 1 || getentropy(rnd, sizeof(rnd)) != 0)
		return -1;
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
	while ((m = strstr(p, ADMIN_PAGE_MARK)) != NULL) {
		evbuffer_add(buf, p, (size_t)(m - p));
		evbuffer_add(buf, nonce, 2 * sizeof(rnd));
		p = m + strlen(ADMIN_PAGE_MARK);
	}
	evbuffer_add(buf, p, strlen(p));
	return 0;
}
