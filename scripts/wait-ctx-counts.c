/*
 * What the engine's withdrawal of unannounced wait fds (async_job.c) relies
 * on: a wait ctx counts the fds added since its job last paused. The
 * application sees an added fd at the pause; after a real pause the count
 * is 0 again; after a blocked pause (ASYNC_block_pause) it is not; and
 * ASYNC_WAIT_CTX_clear_fd drops an entry, announced or not, from the list
 * of all fds. Exits 0 when this libcrypto behaves so.
 */
#include <openssl/async.h>
#include <openssl/crypto.h>
#include <stdio.h>

static const char keys[2];
static ASYNC_WAIT_CTX *wait_ctx;
static size_t added_after_pause = 99, added_after_blocked_pause = 99;

static size_t added_since_pause(void)
{
    size_t added = 0, deleted = 0;
    ASYNC_WAIT_CTX_get_changed_fds(wait_ctx, NULL, &added, NULL, &deleted);
    return added;
}

static int job_body(void *argument)
{
    (void)argument;
    ASYNC_WAIT_CTX_set_wait_fd(wait_ctx, &keys[0], 100, NULL, NULL);
    ASYNC_pause_job();
    added_after_pause = added_since_pause();
    ASYNC_WAIT_CTX_clear_fd(wait_ctx, &keys[0]);
    ASYNC_WAIT_CTX_set_wait_fd(wait_ctx, &keys[1], 101, NULL, NULL);
    ASYNC_block_pause();
    ASYNC_pause_job();
    ASYNC_unblock_pause();
    added_after_blocked_pause = added_since_pause();
    ASYNC_WAIT_CTX_clear_fd(wait_ctx, &keys[1]);
    return 1;
}

int main(void)
{
    ASYNC_JOB *job = NULL;
    size_t seen_at_pause, left = 99;
    int returned;

    wait_ctx = ASYNC_WAIT_CTX_new();
    if (wait_ctx == NULL || ASYNC_start_job(&job, wait_ctx, &returned, job_body, NULL, 0) != ASYNC_PAUSE)
        return 2;
    seen_at_pause = added_since_pause();
    if (ASYNC_start_job(&job, wait_ctx, &returned, job_body, NULL, 0) != ASYNC_FINISH)
        return 3;
    ASYNC_WAIT_CTX_get_all_fds(wait_ctx, NULL, &left);
    printf("%s: added fds seen at the pause %zu, after a real pause %zu, after a blocked pause %zu; left %zu\n",
           OpenSSL_version(OPENSSL_VERSION), seen_at_pause, added_after_pause, added_after_blocked_pause, left);
    ASYNC_WAIT_CTX_free(wait_ctx);
    return !(seen_at_pause == 1 && added_after_pause == 0 && added_after_blocked_pause == 1 && left == 0);
}
