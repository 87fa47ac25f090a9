/*
 * The eventfd that wakes a paused job in wait-fd mode: one per
 * ASYNC_WAIT_CTX, created on first use, registered with a cleanup, reused.
 * Reference-counted so that a worker finishing after the wait ctx is freed
 * writes to our still-open eventfd, never to a reused fd number.
 */
#ifndef SWIFTASYNC_WAKE_FD_H
#define SWIFTASYNC_WAKE_FD_H

#include <stdatomic.h>
#include <openssl/async.h>

typedef struct sa_wake_fd {
    atomic_int references;
    int fd;
    struct sa_wake_fd *previous, *next;   /* every live one, for fork */
} sa_wake_fd;

/* The wait ctx's eventfd, created and registered if absent; NULL on error. */
sa_wake_fd *sa_wake_fd_for(ASYNC_WAIT_CTX *wait_ctx);
void sa_wake_fd_retain(sa_wake_fd *wake_fd);
void sa_wake_fd_release(sa_wake_fd *wake_fd);
/* Makes the fd readable now (used when asking the app to come back). */
void sa_wake_fd_signal(const sa_wake_fd *wake_fd);
/* Consumes any pending signal so select/epoll do not report it again. */
void sa_wake_fd_drain(const sa_wake_fd *wake_fd);

#endif
