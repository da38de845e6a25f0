/*
 * Helpers of the fuzz targets: a sink for formatted text, and name
 * resolution cut down to literals. The loader resolves host names; a
 * fuzzer that asked DNS for every random name would be slow and depend on
 * the network, so this getaddrinfo (the executable's own wins over libc's)
 * treats every host as a literal, "localhost" as 127.0.0.1 or ::1.
 */
#include <sys/socket.h>
#include <netdb.h>

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

/* /dev/null, opened once and kept. */
FILE *
fuzz_sink(void)
{
	static FILE *sink;

	if (sink == NULL && (sink = fopen("/dev/null", "w")) == NULL)
		abort();
	return sink;
}

/* Resolve literals only, through libc's own getaddrinfo. */
int
getaddrinfo(const char *host, const char *serv, const struct addrinfo *hints,
    struct addrinfo **res)
{
	typedef int (*gai_fn)(const char *, const char *,
	    const struct addrinfo *, struct addrinfo **);
	static gai_fn real;
	struct addrinfo h;

	if (real == NULL &&
	    (real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo")) == NULL)
		abort();
	memset(&h, 0, sizeof(h));
	if (hints != NULL)
		h = *hints;
	h.ai_flags |= AI_NUMERICHOST;
	if (host != NULL && strcmp(host, "localhost") == 0)
		host = h.ai_family == AF_INET6 ? "::1" : "127.0.0.1";
	return real(host, serv, &h, res);
}
