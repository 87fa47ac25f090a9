/*
 * The operation record: heap-allocated, reference-counted, owned jointly by
 * the job that submitted it and the worker that runs it. Workers touch only
 * what the record captured, never the ASYNC_JOB or the ASYNC_WAIT_CTX.
 */
#ifndef SWIFTASYNC_OPERATION_H
#define SWIFTASYNC_OPERATION_H

#include <stdatomic.h>
#include "swiftasync_shim.h"
#include "wake_fd.h"

#define SA_MAX_CAPTURED_ERRORS 4

/* One entry of a worker's error queue, carried back to the caller's. */
typedef struct sa_captured_error {
    unsigned long code;
    char file[96];        /* copies: the worker's queue frees its own on clearing */
    int line;
    char func[64];
    char data[160];
} sa_captured_error;

typedef struct sa_record sa_record;

/* What distinguishes one kind of operation from another. */
typedef struct sa_record_kind {
    int (*compute)(sa_record *record);         /* the math; 1 on success; may run again after a fork */
    void (*release_inputs)(sa_record *record); /* drop key references once computed */
    void (*destroy)(sa_record *record);        /* cleanse secrets, free the rest */
    /*
     * The 8-lane math for up to SA_MAX_LANES records of one lane class (NULL:
     * none). Stores each result it computes with sa_record_store_lane and
     * sets in_lanes[i]; a record it leaves alone is computed by `compute`.
     * Returns how many records went through the 8-lane call.
     */
    int (*compute_lanes)(sa_record *records[], int count, int in_lanes[]);
    /*
     * On the worker, once it is done with a record whose caller stopped
     * waiting at the key store's deadline: after the late call returned, or
     * instead of a call never begun. NULL: nothing to settle.
     */
    void (*settle_late)(sa_record *record);
} sa_record_kind;

/* Who ended the caller's wait (the record's `done`). */
enum { SA_PENDING = 0, SA_DONE = 1, SA_PAST_DEADLINE = 2 };

struct sa_record {
    sa_operation public;                 /* first: Swift sees this part */
    const sa_record_kind *kind;
    atomic_int references;
    atomic_int done;                     /* SA_PENDING, SA_DONE or SA_PAST_DEADLINE */
    atomic_int started;                  /* a worker began the math */
    atomic_int computed;                 /* result stored; a forked child need not recompute */
    int succeeded;
    sa_wake_fd *wake_fd;                 /* held while a worker may write it */
    int error_count;
    sa_captured_error errors[SA_MAX_CAPTURED_ERRORS];
};

/* Initialises the common part; the caller holds the one reference. */
void sa_record_init(sa_record *record, const sa_record_kind *kind,
                    sa_algorithm algorithm);
/* Lets the record share 8-lane calls with others of its class. */
void sa_record_set_lane_class(sa_record *record, sa_lane_class lane_class);
void sa_record_retain(sa_record *record);
void sa_record_release(sa_record *record);
int sa_record_is_done(sa_record *record);
/* Whether the caller stopped waiting at the deadline: the result is not its to read. */
int sa_record_missed_deadline(sa_record *record);

/* Runs the math on the caller's thread; its errors stay on that thread. */
void sa_record_compute_here(sa_record *record);
/*
 * Stores a result computed in lanes, with the errors this thread's queue
 * holds for it, and clears the queue for the next lane. drop_last is 0 or 1,
 * from constant-time arithmetic: 1 forgets the newest error, as OpenSSL's
 * RSA decryption does for a padding that turned out good.
 */
void sa_record_store_lane(sa_record *record, int succeeded, unsigned int drop_last);
/* Puts the errors a worker saw onto the calling thread's error queue. */
void sa_record_replay_errors(const sa_record *record);
/*
 * For a key store's call that failed with nothing on the error queue
 * (pkcs11-provider 1.0 says nothing of a device's error): says so on it.
 */
void sa_raise_silent_key_store_failure(void);

/*
 * Runs the record to completion by the best route: inside an async job it
 * offloads and pauses; outside one it waits for a worker. Returns succeeded.
 * Call only after deciding the operation is not computed inline.
 */
int sa_record_run(sa_record *record);

/* Should this operation be computed on the calling thread, no record made? */
int sa_compute_inline(void);
/*
 * Around math computed on the application's thread without a record (the
 * provider's inline calls of its target): what it calls of ours, such as a
 * key with the engine's method, is part of it, not counted or offloaded again.
 */
void sa_math_enter(void);
void sa_math_leave(void);

#endif
