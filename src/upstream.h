#ifndef CP_UPSTREAM_H
#define CP_UPSTREAM_H
#endif
