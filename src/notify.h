/* Service-manager notification (sd_notify) on one socket opened at start. */
#ifndef CP_NOTIFY_H
#define CP_NOTIFY_H

#include <stdint.h>

/* Open the socket named by $NOTIFY_SOCKET; 0 if unset or done, -1 on error. */
int notify_open(void);
/* Send "KEY=VALUE\n..." to $NOTIFY_SOCKET if set; -1 on error, 0 otherwise. */
int notify_send(const char *);
/* printf-style notify_send. */
int notify_sendf(const char *, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog interval asked for by the manager, in microseconds, or 0. */
uint64_t notify_watchdog_usec(void);

#endif
