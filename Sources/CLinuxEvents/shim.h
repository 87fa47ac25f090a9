#ifndef SWIFTASYNC_CLINUXEVENTS_H
#define SWIFTASYNC_CLINUXEVENTS_H
/* Linux event APIs the Glibc module leaves out: for engine-loader serve. */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif
