/*
 * The daemon's lifecycle: start (bind, spawn workers), run, drain and stop.
 * The main thread owns signals, breaker timers and the reject summaries;
 * worker threads own listeners' accept events and relays. struct daemon
 * is private to daemon.c: the rooms below it get callbacks, not a pointer.
 */
#ifndef CP_DAEMON_H
#define CP_DAEMON_H

struct config;
struct daemon;

/*
 * Bind every listener and start the workers; the daemon owns the config
 * from here on. On failure returns -1 with *cause set (the daemon exits 1
 * with it). path is reread on SIGHUP; level_override is -l, or -1.
 */
int daemon_start(struct daemon **, struct config *, const char *path,
    int level_override, const char *pidfile, char **cause);
/* Run until stopped; returns the exit status. */
int daemon_run(struct daemon *);
void daemon_free(struct daemon *);

#endif
