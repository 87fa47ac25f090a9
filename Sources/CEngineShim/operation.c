#include "operation.h"
#include "multibuffer.h"

#include <string.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

void sa_record_init(sa_record *record, const sa_record_kind *kind,
                    sa_algorithm algorithm)
{
    sa_stats_note_records(1);
    record->public.algorithm = algorithm;
    record->public.lane_class = SA_LANES_NONE;
    record->public.pool = 0;
    record->public.submitted_ns = 0;
    record->public.wake.fd = -1;
    record->public.wake.callback = NULL;
    record->public.wake.callback_arg = NULL;
    record->public.wake.guard = NULL;
    record->kind = kind;
    atomic_init(&record->references, 1);
    atomic_init(&record->done, SA_PENDING);
    atomic_init(&record->started, 0);
    atomic_init(&record->computed, 0);
    record->succeeded = 0;
    record->wake_fd = NULL;
    record->error_count = 0;
}

void sa_record_set_lane_class(sa_record *record, sa_lane_class lane_class)
{
    record->public.lane_class = record->kind->compute_lanes != NULL
        && sa_mb_available(lane_class) ? lane_class : SA_LANES_NONE;
}

void sa_record_retain(sa_record *record)
{
    atomic_fetch_add_explicit(&record->references, 1, memory_order_relaxed);
}

void sa_record_release(sa_record *record)
{
    if (atomic_fetch_sub_explicit(&record->references, 1, memory_order_acq_rel) != 1)
        return;
    if (record->wake_fd != NULL)
        sa_wake_fd_release(record->wake_fd);
    OPENSSL_cleanse(record->errors, sizeof(record->errors));
    record->kind->destroy(record);
    sa_stats_note_records(-1);
}

int sa_record_is_done(sa_record *record)
{
    return atomic_load_explicit(&record->done, memory_order_acquire) != SA_PENDING;
}

int sa_record_missed_deadline(sa_record *record)
{
    return atomic_load_explicit(&record->done, memory_order_acquire) == SA_PAST_DEADLINE;
}

static void copy_or_empty(char *to, const char *from, size_t size)
{
    to[0] = '\0';
    if (from != NULL)
        OPENSSL_strlcpy(to, from, size);
}

static void capture_errors(sa_record *record)
{
    const char *file, *func, *data;
    int line, flags;
    unsigned long code;

    while ((code = ERR_get_error_all(&file, &line, &func, &data, &flags)) != 0) {
        sa_captured_error *slot;
        if (record->error_count == SA_MAX_CAPTURED_ERRORS)
            continue;   /* keep the oldest: they name the cause */
        slot = &record->errors[record->error_count++];
        slot->code = code;
        copy_or_empty(slot->file, file, sizeof(slot->file));
        slot->line = line;
        copy_or_empty(slot->func, func, sizeof(slot->func));
        copy_or_empty(slot->data, (flags & ERR_TXT_STRING) != 0 ? data : NULL,
                      sizeof(slot->data));
    }
}

/*
 * Keys are let go as soon as the result is stored, before anyone is woken:
 * a key's reference can be the last one to the ENGINE, whose finish must not
 * run on a worker. Marking the result first means a child forked at any
 * point either recomputes from intact inputs or keeps the stored result.
 */
static void store_result(sa_record *record, int succeeded)
{
    record->succeeded = succeeded;
    atomic_store_explicit(&record->computed, 1, memory_order_release);
    record->kind->release_inputs(record);
}

/* Nonzero while this thread computes a record: the math's own calls into us stay on it. */
static _Thread_local int computing;

int sa_worker_is_computing(void)
{
    return computing;
}

void sa_math_enter(void)
{
    computing++;
}

void sa_math_leave(void)
{
    computing--;
}

static int compute(sa_record *record)
{
    int succeeded;

    computing++;
    succeeded = record->kind->compute(record);
    computing--;
    return succeeded;
}

void sa_record_store_lane(sa_record *record, int succeeded, unsigned int drop_last)
{
    capture_errors(record);
    record->error_count -= (int)(drop_last & 1u);
    ERR_clear_error();
    store_result(record, succeeded);
}

void sa_record_compute_here(sa_record *record)
{
    store_result(record, compute(record));
}

void sa_record_replay_errors(const sa_record *record)
{
    int i;
    for (i = 0; i < record->error_count; i++) {
        const sa_captured_error *error = &record->errors[i];
        ERR_new();
        ERR_set_debug(error->file, error->line, error->func);
        if (error->data[0] != '\0')
            ERR_set_error(ERR_GET_LIB(error->code), ERR_GET_REASON(error->code),
                          "%s", error->data);
        else
            ERR_set_error(ERR_GET_LIB(error->code), ERR_GET_REASON(error->code),
                          NULL);
    }
}

void sa_raise_silent_key_store_failure(void)
{
    ERR_raise_data(ERR_LIB_PROV, ERR_R_OPERATION_FAIL, "the key store's call failed and gave no reason");
}

/* ---- The Swift pool's side of the contract ---------------------------- */

int sa_operation_execute(sa_operation *op)
{
    sa_record *record = (sa_record *)op;
    int succeeded;

    if (atomic_load_explicit(&record->computed, memory_order_acquire))
        return record->succeeded;      /* re-queued in a forked child */
    if (sa_record_missed_deadline(record))
        return 0;                      /* its caller has gone: never call the device for it */
    atomic_store_explicit(&record->started, 1, memory_order_release);
    /* A worker's error queue is its own: whatever is on it is not ours. */
    ERR_clear_error();
    succeeded = compute(record);
    if (!succeeded)
        capture_errors(record);
    ERR_clear_error();
    store_result(record, succeeded);
    return succeeded;
}

int sa_operations_execute_lanes(sa_operation *const ops[], int count, int succeeded[])
{
    sa_record *pending[SA_MAX_LANES];
    int in_lanes[SA_MAX_LANES] = { 0 };
    int pending_count = 0, lanes_used = 0, i;

    if (count > SA_MAX_LANES)
        count = SA_MAX_LANES;
    for (i = 0; i < count; i++) {
        sa_record *record = (sa_record *)ops[i];
        if (!atomic_load_explicit(&record->computed, memory_order_acquire))
            pending[pending_count++] = record;
    }
    ERR_clear_error();
    if (pending_count > 0 && pending[0]->kind->compute_lanes != NULL) {
        computing++;
        lanes_used = pending[0]->kind->compute_lanes(pending, pending_count, in_lanes);
        computing--;
    }
    ERR_clear_error();
    for (i = 0; i < pending_count; i++)
        if (!in_lanes[i])
            sa_operation_execute(&pending[i]->public);
    for (i = 0; i < count; i++)
        succeeded[i] = ((sa_record *)ops[i])->succeeded;
    return lanes_used;
}

int sa_lanes_available(sa_lane_class lane_class)
{
    return sa_mb_available(lane_class);
}

const char *sa_lanes_unavailable_reason(void)
{
    return sa_mb_unavailable_reason();
}

int sa_operation_publish_done(sa_operation *op)
{
    sa_record *record = (sa_record *)op;
    int pending = SA_PENDING;

    if (atomic_compare_exchange_strong_explicit(&record->done, &pending, SA_DONE,
                                                memory_order_acq_rel, memory_order_acquire))
        return 1;
    if (record->kind->settle_late != NULL)
        record->kind->settle_late(record);
    return 0;
}

int sa_operation_expire(sa_operation *op)
{
    int pending = SA_PENDING;

    return atomic_compare_exchange_strong_explicit(&((sa_record *)op)->done, &pending, SA_PAST_DEADLINE,
                                                   memory_order_acq_rel, memory_order_acquire);
}

int sa_operation_missed_deadline(sa_operation *op)
{
    return sa_record_missed_deadline((sa_record *)op);
}

int sa_operation_started(sa_operation *op)
{
    return atomic_load_explicit(&((sa_record *)op)->started, memory_order_acquire);
}

void sa_operation_release(sa_operation *op)
{
    sa_record_release((sa_record *)op);
}

/* The per-thread DRBGs and error queue a worker's math created. */
void sa_worker_will_exit(void)
{
    OPENSSL_thread_stop();
}
