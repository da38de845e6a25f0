/* daemon: placeholder until the module lands. */
extern int cp_placeholder_daemon;
