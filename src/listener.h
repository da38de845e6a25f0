#ifndef CP_LISTENER_H
#define CP_LISTENER_H
#endif
