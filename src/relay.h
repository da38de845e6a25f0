#ifndef CP_RELAY_H
#define CP_RELAY_H
#endif
