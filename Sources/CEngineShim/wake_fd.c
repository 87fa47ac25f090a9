#include "wake_fd.h"
#include "swiftasync_shim.h"

#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <openssl/crypto.h>

/* Its address identifies our fd among those other engines register. */
static const char wake_fd_key = 0;

static void wake_fd_cleanup(ASYNC_WAIT_CTX *wait_ctx, const void *key,
                            OSSL_ASYNC_FD fd, void *custom)
{
    (void)wait_ctx; (void)key; (void)fd;
    sa_wake_fd_release(custom);
}

static sa_wake_fd *wake_fd_create(ASYNC_WAIT_CTX *wait_ctx)
{
    sa_wake_fd *wake_fd = OPENSSL_malloc(sizeof(*wake_fd));
    if (wake_fd == NULL)
        return NULL;
    wake_fd->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd->fd < 0) {
        OPENSSL_free(wake_fd);
        return NULL;
    }
    atomic_init(&wake_fd->references, 1);   /* the wait ctx's reference */
    if (!ASYNC_WAIT_CTX_set_wait_fd(wait_ctx, &wake_fd_key, wake_fd->fd,
                                    wake_fd, wake_fd_cleanup)) {
        sa_wake_fd_release(wake_fd);
        return NULL;
    }
    return wake_fd;
}

sa_wake_fd *sa_wake_fd_for(ASYNC_WAIT_CTX *wait_ctx)
{
    OSSL_ASYNC_FD fd;
    void *custom = NULL;
    if (ASYNC_WAIT_CTX_get_fd(wait_ctx, &wake_fd_key, &fd, &custom))
        return custom;
    return wake_fd_create(wait_ctx);
}

void sa_wake_fd_retain(sa_wake_fd *wake_fd)
{
    atomic_fetch_add_explicit(&wake_fd->references, 1, memory_order_relaxed);
}

void sa_wake_fd_release(sa_wake_fd *wake_fd)
{
    if (atomic_fetch_sub_explicit(&wake_fd->references, 1, memory_order_acq_rel) != 1)
        return;
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
