/*
 * Our entry in an ASYNC_WAIT_CTX: one per wait ctx, created on first use,
 * registered with a cleanup, reused. In wait-fd mode its eventfd wakes the
 * paused job; in callback mode its cleanup tells a worker that the wait ctx
 * (and the connection behind the callback's argument) is gone.
 * Reference-counted so that a worker finishing after the wait ctx is freed
 * writes to our still-open eventfd, never to a reused fd number, and never
 * calls back into a freed connection.
 */
#ifndef SWIFTASYNC_WAKE_FD_H
#define SWIFTASYNC_WAKE_FD_H

#include <pthread.h>
#include <stdatomic.h>
#include <openssl/async.h>

typedef struct sa_wake_fd {
    atomic_int references;
    atomic_int jobs_waiting;              /* jobs between submitting and resuming done */
    int fd;                               /* -1 once the wait ctx is gone */
    pthread_mutex_t lock;                 /* held while delivering, and to mark it gone */
    int wait_ctx_alive;
    struct sa_wake_fd *previous, *next;   /* every live one, for fork */
} sa_wake_fd;

/*
 * The wait ctx's eventfd, created and registered if absent (*created = 1);
 * NULL on error.
 */
sa_wake_fd *sa_wake_fd_for(ASYNC_WAIT_CTX *wait_ctx, int *created);
/*
 * Takes our entry out of the wait ctx again if no pause has announced it to
 * the application since it went in; the worker's late wake-up is withheld.
 */
void sa_wake_fd_withdraw_if_unannounced(ASYNC_WAIT_CTX *wait_ctx);
void sa_wake_fd_retain(sa_wake_fd *wake_fd);
void sa_wake_fd_release(sa_wake_fd *wake_fd);
/*
 * Around a job's wait for its operation: a wait ctx freed while a job waits
 * abandons that job (OpenSSL never resumes it): sa_stats_note_jobs_abandoned.
 */
void sa_wake_fd_begin_wait(sa_wake_fd *wake_fd);
void sa_wake_fd_end_wait(sa_wake_fd *wake_fd);
/* Makes the fd readable now (used when asking the app to come back). */
void sa_wake_fd_signal(const sa_wake_fd *wake_fd);
/* Consumes any pending signal so select/epoll do not report it again. */
void sa_wake_fd_drain(const sa_wake_fd *wake_fd);

#endif
