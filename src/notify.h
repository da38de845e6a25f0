#ifndef CP_NOTIFY_H
#define CP_NOTIFY_H
#endif
