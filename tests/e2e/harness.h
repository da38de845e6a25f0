#ifndef CP_HARNESS_H
#define CP_HARNESS_H
#endif
