/*
 * One client: admission through the breaker, the connect to the server, the
 * relay of bytes both ways, and its end. relay_close() is the only way out.
 */
#ifndef CP_RELAY_H
#define CP_RELAY_H

#include <sys/socket.h>

struct pool;
struct upstream;
struct worker;

/*
 * Take a client accepted on an upstream's listener (pool NULL) or a pool's
 * (upstream NULL); EMFILE/ENFILE if no descriptor was left for its server.
 */
int relay_accept(struct worker *, struct upstream *, struct pool *, int fd,
    const struct sockaddr *, socklen_t);
/* Reset every relay and turned-away client of a worker (shutdown timeout). */
void relay_close_all(struct worker *);

#endif
