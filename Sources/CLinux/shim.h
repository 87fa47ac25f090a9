#ifndef SWIFTASYNC_CLINUX_H
#define SWIFTASYNC_CLINUX_H
/* Linux APIs the Glibc module leaves out: epoll and eventfd for
 * engine-loader serve, thread names and a bounded join for the engine's own threads. */
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

/* <pthread.h> declares it only under _GNU_SOURCE; the Glibc module is built without. */
int pthread_setname_np(pthread_t thread, const char *name);
int pthread_timedjoin_np(pthread_t thread, void **result, const struct timespec *until);
#endif
