#ifndef CP_DAEMON_H
#define CP_DAEMON_H
#endif
