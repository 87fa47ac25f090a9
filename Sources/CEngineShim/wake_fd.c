#define _GNU_SOURCE
#include "wake_fd.h"
#include "swiftasync_shim.h"

#include <pthread.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <openssl/crypto.h>

/* Its address identifies our fd among those other engines register. */
static const char wake_fd_key = 0;

void sa_wake_fd_begin_wait(sa_wake_fd *wake_fd)
{
    atomic_fetch_add_explicit(&wake_fd->jobs_waiting, 1, memory_order_relaxed);
}

void sa_wake_fd_end_wait(sa_wake_fd *wake_fd)
{
    atomic_fetch_sub_explicit(&wake_fd->jobs_waiting, 1, memory_order_relaxed);
}

/* Every live eventfd, so a forked child can give itself its own. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static sa_wake_fd *registry;

static void registry_add(sa_wake_fd *wake_fd)
{
    pthread_mutex_lock(&registry_lock);
    wake_fd->previous = NULL;
    wake_fd->next = registry;
    if (registry != NULL)
        registry->previous = wake_fd;
    registry = wake_fd;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(sa_wake_fd *wake_fd)
{
    pthread_mutex_lock(&registry_lock);
    if (wake_fd->previous != NULL)
        wake_fd->previous->next = wake_fd->next;
    else
        registry = wake_fd->next;
    if (wake_fd->next != NULL)
        wake_fd->next->previous = wake_fd->previous;
    pthread_mutex_unlock(&registry_lock);
}

/*
 * The wait ctx is being freed: nothing may be delivered from now on, and the
 * eventfd goes now. A job paused when its connection was freed is never
 * resumed and keeps its reference, so waiting for the last one would leak
 * the fd.
 */
static void wake_fd_cleanup(ASYNC_WAIT_CTX *wait_ctx, const void *key,
                            OSSL_ASYNC_FD fd, void *custom)
{
    sa_wake_fd *wake_fd = custom;

    (void)wait_ctx; (void)key; (void)fd;
    sa_stats_note_jobs_abandoned(atomic_load_explicit(&wake_fd->jobs_waiting, memory_order_relaxed));
    pthread_mutex_lock(&wake_fd->lock);
    wake_fd->wait_ctx_alive = 0;
    close(wake_fd->fd);
    wake_fd->fd = -1;
    pthread_mutex_unlock(&wake_fd->lock);
    sa_wake_fd_release(wake_fd);
}

int sa_wake_deliver(const sa_wake *wake)
{
    sa_wake_fd *wake_fd = wake->guard;
    int alive;

    pthread_mutex_lock(&wake_fd->lock);
    alive = wake_fd->wait_ctx_alive;
    if (alive) {
        if (wake->callback != NULL)
            wake->callback(wake->callback_arg);
        else
            sa_wake_fd_signal(wake_fd);
    }
    pthread_mutex_unlock(&wake_fd->lock);
    return alive;
}

static sa_wake_fd *wake_fd_create(ASYNC_WAIT_CTX *wait_ctx)
{
    sa_wake_fd *wake_fd = OPENSSL_malloc(sizeof(*wake_fd));
    if (wake_fd == NULL)
        return NULL;
    wake_fd->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd->fd < 0) {
        sa_stats_note_wait_fd_refused();
        OPENSSL_free(wake_fd);
        return NULL;
    }
    atomic_init(&wake_fd->references, 1);   /* the wait ctx's reference */
    atomic_init(&wake_fd->jobs_waiting, 0);
    pthread_mutex_init(&wake_fd->lock, NULL);
    wake_fd->wait_ctx_alive = 1;
    registry_add(wake_fd);
    if (!ASYNC_WAIT_CTX_set_wait_fd(wait_ctx, &wake_fd_key, wake_fd->fd,
                                    wake_fd, wake_fd_cleanup)) {
        sa_wake_fd_release(wake_fd);
        return NULL;
    }
    return wake_fd;
}

sa_wake_fd *sa_wake_fd_for(ASYNC_WAIT_CTX *wait_ctx, int *created)
{
    OSSL_ASYNC_FD fd;
    void *custom = NULL;

    *created = 0;
    if (ASYNC_WAIT_CTX_get_fd(wait_ctx, &wake_fd_key, &fd, &custom))
        return custom;
    custom = wake_fd_create(wait_ctx);
    *created = custom != NULL;
    return custom;
}

/*
 * The wait ctx counts the fds added since its job last paused (its
 * documented "changed fds"): none once a pause has shown ours to the
 * application. An entry the application has not seen is dropped from the
 * list without a trace (ASYNC_WAIT_CTX_clear_fd), and we do the cleanup the
 * wait ctx would have done.
 */
void sa_wake_fd_withdraw_if_unannounced(ASYNC_WAIT_CTX *wait_ctx)
{
    size_t added = 0, deleted = 0;
    OSSL_ASYNC_FD fd;
    void *custom = NULL;

    if (!ASYNC_WAIT_CTX_get_changed_fds(wait_ctx, NULL, &added, NULL, &deleted)
        || added == 0
        || !ASYNC_WAIT_CTX_get_fd(wait_ctx, &wake_fd_key, &fd, &custom)
        || !ASYNC_WAIT_CTX_clear_fd(wait_ctx, &wake_fd_key))
        return;
    wake_fd_cleanup(wait_ctx, &wake_fd_key, fd, custom);
}

void sa_wake_fd_retain(sa_wake_fd *wake_fd)
{
    atomic_fetch_add_explicit(&wake_fd->references, 1, memory_order_relaxed);
}

void sa_wake_fd_release(sa_wake_fd *wake_fd)
{
    if (atomic_fetch_sub_explicit(&wake_fd->references, 1, memory_order_acq_rel) != 1)
        return;
    registry_remove(wake_fd);
    pthread_mutex_destroy(&wake_fd->lock);
    if (wake_fd->fd >= 0)
        close(wake_fd->fd);
    OPENSSL_free(wake_fd);
}

void sa_wake_fd_signal(const sa_wake_fd *wake_fd)
{
    uint64_t one = 1;
    /* Only fails when the counter would overflow: it is readable then anyway. */
    (void)!write(wake_fd->fd, &one, sizeof(one));
}

void sa_wake_fd_drain(const sa_wake_fd *wake_fd)
{
    uint64_t count;
    (void)!read(wake_fd->fd, &count, sizeof(count));
}

int sa_eventfd_new_blocking(void)
{
    return eventfd(0, EFD_CLOEXEC);
}

/*
 * After fork, parent and child share each eventfd: a wake-up meant for one
 * could be consumed by the other. The child swaps in eventfds of its own
 * under the same numbers (which its wait ctxs and event loops know), and
 * signals each once: a job whose operation finished unseen resumes, any
 * other pauses again. Called in the child, where no other thread exists.
 */
void sa_wake_fds_renew_after_fork(void)
{
    sa_wake_fd *wake_fd;

    pthread_mutex_init(&registry_lock, NULL);
    for (wake_fd = registry; wake_fd != NULL; wake_fd = wake_fd->next) {
        int fresh;

        pthread_mutex_init(&wake_fd->lock, NULL);   /* no worker held it at fork */
        if (wake_fd->fd < 0 || (fresh = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
            continue;
        if (dup3(fresh, wake_fd->fd, O_CLOEXEC) >= 0)
            sa_wake_fd_signal(wake_fd);
        close(fresh);
    }
}
