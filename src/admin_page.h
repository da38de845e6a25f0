/*
 * The status page of SPEC.md section 7: one self-contained HTML document
 * (src/admin_page.html, built in), its inline style and script allowed by
 * a nonce fresh for every copy.
 */
#ifndef CP_ADMIN_PAGE_H
#define CP_ADMIN_PAGE_H

#include <stddef.h>

struct evbuffer;

/*
 * Append the page to buf with a new nonce, which is also written to nonce
 * (at least 33 bytes) for the Content-Security-Policy header. -1 if no
 * randomness could be had.
 */
int admin_page_render(struct evbuffer *, char *nonce, size_t);

#endif
