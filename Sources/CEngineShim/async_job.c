/*
 * How an operation reaches a worker and how its caller waits: the engine's
 * side of SSL_set_async_callback(3). Inside an ASYNC_JOB the job is paused
 * and woken by the wait ctx's callback or our eventfd; outside one the
 * caller blocks until a worker is done.
 */
#include "operation.h"

#include <sched.h>
#include <openssl/async.h>
#include <openssl/err.h>

int sa_compute_inline(void)
{
    return sa_worker_is_computing()
        || (ASYNC_get_current_job() == NULL && sa_pool_prefers_inline());
}

static int uses_callback(const sa_record *record)
{
    return record->public.wake.callback != NULL;
}

/*
 * The app's callback if it set one (SSL_CTX_set_async_callback), else our
 * eventfd. Our entry in the wait ctx is made either way: in callback mode it
 * is how a worker learns that the app freed the connection. *created says
 * whether the entry is new: the app has not been told of it yet.
 */
static int attach_wake(sa_record *record, ASYNC_WAIT_CTX *wait_ctx, int *created)
{
    ASYNC_callback_fn callback;
    void *callback_arg;

    record->wake_fd = sa_wake_fd_for(wait_ctx, created);
    if (record->wake_fd == NULL)
        return 0;
    sa_wake_fd_retain(record->wake_fd);
    record->public.wake.guard = record->wake_fd;
    if (ASYNC_WAIT_CTX_get_callback(wait_ctx, &callback, &callback_arg)) {
        record->public.wake.callback = callback;
        record->public.wake.callback_arg = callback_arg;
    } else {
        record->public.wake.fd = record->wake_fd->fd;
    }
    return 1;
}

/* Queue full: make the application come back soon, without a worker. */
static void ask_to_come_back(sa_record *record, ASYNC_WAIT_CTX *wait_ctx)
{
    if (uses_callback(record)) {
        ASYNC_WAIT_CTX_set_status(wait_ctx, ASYNC_STATUS_EAGAIN);
        record->public.wake.callback(record->public.wake.callback_arg);
    } else {
        sa_wake_fd_signal(record->wake_fd);
    }
}

/*
 * SSL_get_error reads the error queue before it looks for a paused job, so
 * an error left on it at a pause turns SSL_ERROR_WANT_ASYNC into
 * SSL_ERROR_SSL and the application drops a connection whose operation is
 * still out. Whatever is on this thread's queue here came from calls that
 * succeeded (one that fails ends the handshake before it asks us for work):
 * pkcs11-provider leaves "Failed to fetch login_session" behind when a
 * token's sessions are busy and it goes on with another.
 */
static int pause_with_nothing_queued(void)
{
    ERR_clear_error();
    return ASYNC_pause_job();
}

static void after_resume(sa_record *record)
{
    if (record->wake_fd != NULL && !uses_callback(record))
        sa_wake_fd_drain(record->wake_fd);
}

/* 1 once a worker holds the record; 0 if this thread must compute it. */
static int submit_from_job(sa_record *record, ASYNC_WAIT_CTX *wait_ctx)
{
    for (;;) {
        sa_submit_result result;

        if (uses_callback(record))
            ASYNC_WAIT_CTX_set_status(wait_ctx, ASYNC_STATUS_OK);
        sa_record_retain(record);
        result = sa_pool_submit(&record->public);
        if (result == SA_SUBMIT_QUEUED)
            return 1;
        sa_record_release(record);
        if (result == SA_SUBMIT_UNAVAILABLE)
            return 0;
        ask_to_come_back(record, wait_ctx);
        if (!pause_with_nothing_queued())
            return 0;
        after_resume(record);
    }
}

/*
 * A resume before the worker is done is spurious: pause again. When pausing
 * is blocked (ASYNC_block_pause) ASYNC_pause_job returns at once, so this
 * loop yields the CPU until the worker is done.
 */
static void wait_for_worker(sa_record *record)
{
    while (!sa_record_is_done(record)) {
        if (pause_with_nothing_queued())
            after_resume(record);
        if (!sa_record_is_done(record))
            sched_yield();
    }
}

/* What the caller learns once its wait is over: the worker's result, or the deadline's error. */
static int outcome(sa_record *record)
{
    if (sa_record_missed_deadline(record)) {
        ERR_raise_data(ERR_LIB_PROV, ERR_R_OPERATION_FAIL,
                       "the key store did not answer within its deadline (DEADLINE_MSEC)");
        return 0;
    }
    sa_record_replay_errors(record);
    if (!record->succeeded && record->error_count == 0 && record->public.pool > 0)
        sa_raise_silent_key_store_failure();
    return record->succeeded;
}

static int run_on_this_thread(sa_record *record)
{
    sa_record_compute_here(record);
    sa_stats_note_inline_in(record->public.pool, record->public.algorithm, record->succeeded);
    return record->succeeded;
}

/*
 * An application learns of the fds in a wait ctx only when its job pauses
 * (SSL_get_changed_async_fds), and HAProxy deletes every fd it finds there
 * (SSL_get_all_async_fds) at close as one it was told of: an fd it never saw
 * crashes it. So an entry made for this operation leaves again unless the
 * job paused after making it: the worker was done before the job came to
 * pause, the operation was computed here, or pausing was blocked.
 */
static int run_in_job(sa_record *record, ASYNC_WAIT_CTX *wait_ctx)
{
    int created = 0, succeeded;

    if (!attach_wake(record, wait_ctx, &created))
        return run_on_this_thread(record);
    sa_wake_fd_begin_wait(record->wake_fd);
    if (submit_from_job(record, wait_ctx)) {
        wait_for_worker(record);
        succeeded = outcome(record);
    } else {
        succeeded = run_on_this_thread(record);
    }
    sa_wake_fd_end_wait(record->wake_fd);
    if (created)
        sa_wake_fd_withdraw_if_unannounced(wait_ctx);
    return succeeded;
}

static int run_and_wait(sa_record *record)
{
    sa_record_retain(record);
    if (!sa_pool_run_and_wait(&record->public)) {
        sa_record_release(record);
        return run_on_this_thread(record);
    }
    return outcome(record);
}

int sa_record_run(sa_record *record)
{
    ASYNC_JOB *job = ASYNC_get_current_job();

    if (job == NULL)
        return run_and_wait(record);
    return run_in_job(record, ASYNC_get_wait_ctx(job));
}
