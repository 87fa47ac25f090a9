/*
 * The contract between the C shim (which knows OpenSSL) and the Swift pool
 * (which knows only this file). Nothing of ENGINE, RSA or ASYNC crosses it:
 * Swift sees operations as opaque records with a header it may read.
 */
#ifndef SWIFTASYNC_SHIM_H
#define SWIFTASYNC_SHIM_H

#include <stddef.h>
#include <stdint.h>

/* What an operation computes; statistics are kept per algorithm. */
typedef enum sa_algorithm {
    SA_ALG_RSA_PRIVATE_ENCRYPT = 0, /* RSA sign: PKCS#1 v1.5, raw (TLS 1.3 PSS), X9.31 */
    SA_ALG_RSA_PRIVATE_DECRYPT = 1, /* RSA decrypt: PKCS#1 v1.5, OAEP, raw */
    SA_ALG_EC_KEYGEN = 2,           /* EC_KEY keygen: an ECDHE handshake's ephemeral key */
    SA_ALG_ECDH_DERIVE = 3,         /* EC_KEY compute_key */
    SA_ALG_ECDSA_SIGN = 4,          /* EC_KEY sign_sig (sign reaches it too) */
    SA_ALG_ECDSA_SIGN_SETUP = 5,    /* EC_KEY sign_setup: kinv and r ahead of time */
    SA_ALG_X25519_KEYGEN = 6,
    SA_ALG_X25519_DERIVE = 7,
    SA_ALG_X448_KEYGEN = 8,
    SA_ALG_X448_DERIVE = 9,
    SA_ALG_SIGN_STEP = 10,          /* a key store's digest-sign init or update (a device round trip) */
    SA_ALG_COUNT
} sa_algorithm;

/*
 * Like operations that may share one 8-lane (multi-buffer) call: lanes of a
 * call are of one algorithm and one class. Keys may differ per lane.
 */
typedef enum sa_lane_class {
    SA_LANES_NONE = 0,       /* always computed one at a time */
    SA_LANES_RSA2048 = 1,    /* two-prime RSA with e = 65537, by modulus size */
    SA_LANES_RSA3072 = 2,
    SA_LANES_RSA4096 = 3,
    SA_LANES_X25519 = 4,
    SA_LANES_P256 = 5,       /* EC on the NIST curves, by algorithm */
    SA_LANES_P384 = 6,
    SA_LANES_P521 = 7,
    SA_LANES_CLASS_COUNT
} sa_lane_class;

/* At most this many operations share one multi-buffer call. */
#define SA_MAX_LANES 8

/* Who is told when an operation completes: exactly one of the two is set. */
typedef struct sa_wake {
    int fd;                          /* an eventfd to add 1 to, or -1 */
    int (*callback)(void *arg);      /* ASYNC_WAIT_CTX callback, or NULL */
    void *callback_arg;
    void *guard;                     /* set: deliver through sa_wake_deliver, which knows
                                        whether the wait ctx still exists */
} sa_wake;

/*
 * The part of an operation record Swift may read. The shim's records begin
 * with it; the rest (key, input, result, errors) is private to the shim.
 */
typedef struct sa_operation {
    sa_algorithm algorithm;
    sa_lane_class lane_class;
    sa_wake wake;
    int pool;                        /* 0: the engine's pool; else a key store's (sa_pool_register_key_store) */
    uint64_t submitted_ns;           /* set by the pool when queued (monotonic): its latency counters */
} sa_operation;

/* How sa_pool_submit went. */
typedef enum sa_submit_result {
    SA_SUBMIT_QUEUED = 0,      /* the pool owns one reference now */
    SA_SUBMIT_FULL = 1,        /* queue full: try again later (counted as a retry) */
    SA_SUBMIT_UNAVAILABLE = 2, /* compute on this thread: no worker can run, or all are busy (CALLER_RUNS_DEPTH) */
} sa_submit_result;

/* ---- Implemented in C, called by the Swift pool ---------------------- */

/* Runs the math on the calling (worker) thread; 1 on success. */
int sa_operation_execute(sa_operation *op);
/*
 * Runs count (at most SA_MAX_LANES) operations of one algorithm and lane
 * class together: one 8-lane call for every lane that qualifies, OpenSSL's
 * scalar math for the rest (bad input, a failed lane, a fault caught by the
 * public-key check). Sets succeeded[i] per operation; returns how many went
 * through the 8-lane call.
 */
int sa_operations_execute_lanes(sa_operation *const ops[], int count, int succeeded[]);
/* Whether this build and this CPU can run the class in 8 lanes. */
int sa_lanes_available(sa_lane_class lane_class);
/* Why the 8-lane path cannot run at all here, as a word: "not_built" (no
 * crypto_mb in this build) or "cpu_lacks_avx512_ifma"; NULL when it can. */
const char *sa_lanes_unavailable_reason(void);
/*
 * Makes the result visible to the waiting job (release ordering); 1 if it
 * stands, 0 if the caller stopped waiting at the deadline first (the result
 * is dropped and the owner must not be woken).
 */
int sa_operation_publish_done(sa_operation *op);
/*
 * The key store's deadline passed: ends the caller's wait with an error
 * unless the result came first. 1 if it did end it (then wake the owner).
 */
int sa_operation_expire(sa_operation *op);
/* Whether the deadline ended the caller's wait (set by sa_operation_expire). */
int sa_operation_missed_deadline(sa_operation *op);
/* Whether a worker has begun the operation's call. */
int sa_operation_started(sa_operation *op);
/* Drops the worker's reference; the record may be freed here. */
void sa_operation_release(sa_operation *op);
/*
 * Calls wake->callback or signals wake->fd, unless the application has freed
 * the wait ctx (and with it the connection behind the callback's argument,
 * and the eventfd) meanwhile. Returns 0 if it withheld the wake-up.
 */
int sa_wake_deliver(const sa_wake *wake);
/* A worker thread is about to exit: frees OpenSSL's state for the thread. */
void sa_worker_will_exit(void);
/*
 * 1 while this thread computes an operation's math: whatever that math calls of
 * ours (a key with the engine's method, the engine and the provider loaded
 * together) runs there, uncounted, and never waits for the pool.
 */
int sa_worker_is_computing(void);
/* A blocking eventfd for a thread that waits outside async jobs; -1 on error. */
int sa_eventfd_new_blocking(void);
/* In a forked child: gives every wait ctx's eventfd a private successor. */
void sa_wake_fds_renew_after_fork(void);

/* ---- Implemented in Swift, called by the C shim ---------------------- */

/*
 * For operations outside an async job: 1 to compute on the calling thread
 * (the default), 0 to offload and wait (the SYNC_OFFLOAD switch).
 */
int sa_pool_prefers_inline(void);
/* Queues op for a worker, never blocking. The caller retains op first. */
sa_submit_result sa_pool_submit(sa_operation *op);
/*
 * Queues op (waiting for room) and blocks the calling thread until a worker
 * has run it; sets op->wake itself. The caller retains op first. Returns 1
 * when it ran, 0 if no worker can run (the reference is then still the caller's).
 */
int sa_pool_run_and_wait(sa_operation *op);
/* Counts an operation computed on the application's thread. */
void sa_stats_note_inline(sa_algorithm algorithm, int succeeded);
/* The same, in the counters of POOL (0: the engine's pool). */
void sa_stats_note_inline_in(int pool, sa_algorithm algorithm, int succeeded);
/*
 * Workers of their own for a slow forward target: returns the pool id of the
 * key store NAME (a provider instance's name), made on first use, with its
 * own counters; records whose `pool` is that id run there.
 */
int sa_pool_register_key_store(const char *name);
/* A key store's own settings (THREADS, QUEUE_DEPTH, WORKER_DELAY_USEC, DEADLINE_MSEC, SPARE_THREADS); 0 if refused. */
int sa_config_set_string_in(int pool, const char *name, const char *value);
/*
 * Operation records made (+1) and freed (-1). One held by a job that is never
 * resumed is never freed: at rest, those alive are the abandoned jobs'.
 */
void sa_stats_note_records(int change);
/*
 * Jobs whose wait ctx the application freed while they waited for their
 * operation (OpenSSL never resumes such a job; each holds one record).
 */
void sa_stats_note_jobs_abandoned(int count);
/*
 * A job for which no eventfd could be made (the process at its fd limit): its
 * operation is computed on the calling thread, as without the engine.
 */
void sa_stats_note_wait_fd_refused(void);

/*
 * Drains the running pool and joins its workers (a new pool starts on the
 * next operation): their per-thread OpenSSL state goes with them, before a
 * library context they used is freed.
 */
void sa_pool_retire(void);

/* Engine life: the pool starts lazily; the last finish drains and joins. */
void sa_engine_did_init(void);
void sa_engine_did_finish(void);

/* Configuration by name (ctrl commands, openssl.cnf, environment). */
/* Returns 1 if accepted, 0 if the name is unknown or the value is invalid. */
int sa_config_set(const char *name, long value);
int sa_config_set_string(const char *name, const char *value);
/* The index-th setting a provider's openssl.cnf section may give; NULL past the last. */
const char *sa_config_setting_name(int index);
/* Writes the statistics as text (NUL-terminated); returns the length needed. */
size_t sa_stats_format(char *buffer, size_t capacity);

#endif
