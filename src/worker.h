#ifndef CP_WORKER_H
#define CP_WORKER_H
#endif
