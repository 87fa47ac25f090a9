/*
 * Life of one provider signature: libssl calls EVP_DigestSignFinal -> OpenSSL
 * calls our digest_sign_final (a trampoline of the RSA or ECDSA slot) ->
 * forward_final() makes a record holding the target's function, the target's
 * operation context and a buffer of the caller's size -> sa_record_run
 * (async_job.c) submits it and pauses the job -> a worker runs the target's
 * function on the record (compute_call) -> the job resumes, copies the
 * signature out, and the record, cleansed, is released.
 *
 * Only private-key steps with an output buffer are forwarded this way: a
 * size query (no buffer) is answered inline, as are all other functions,
 * which stay the target's own entries in the dispatch table.
 */
#include "provider_calls.h"
#include "provider_lanes.h"
#include "provider_record.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>

typedef void *(*gen_init_fn)(void *provctx, int selection, const OSSL_PARAM params[]);
typedef void (*gen_cleanup_fn)(void *genctx);
typedef int (*gen_set_params_fn)(void *genctx, const OSSL_PARAM params[]);
typedef int (*gen_set_template_fn)(void *genctx, void *template_keydata);
typedef int (*key_init_fn)(void *ctx, void *provkey, const OSSL_PARAM params[]);
typedef int (*set_peer_fn)(void *ctx, void *provkey);
typedef void (*free_ctx_fn)(void *ctx);
typedef void *(*dup_ctx_fn)(void *ctx);

/* Function ids of OpenSSL 3.4 and later, stable in the ABI: named here so any headers build. */
#define SIGNATURE_SIGN_MESSAGE_INIT 27
#define SIGNATURE_VERIFY_MESSAGE_INIT 30
/* The highest function id we know, per operation: a table with others gets no lanes. */
#define SIGNATURE_HIGHEST_KNOWN 32
#define KEYEXCH_HIGHEST_KNOWN 11
#define KEYMGMT_HIGHEST_KNOWN 46
#define FUNCTION_IDS 64

/*
 * One target algorithm whose private-key steps we forward: the target's
 * original functions, by function id, for those we put trampolines in place of.
 */
typedef struct call_slot {
    const OSSL_DISPATCH *theirs;  /* the target's table: a target loaded again reuses its slot */
    OSSL_DISPATCH *ours;
    int pool;                 /* a key store's own workers, or 0: the default target's, on the engine's pool */
    sa_algorithm algorithm;
    int lanes;                /* its key steps may use the 8-lane math */
    void (*original[FUNCTION_IDS])(void);
} call_slot;

#define ORIGINAL(slot, type, id) ((type)(slot)->original[id])

static int compute_call(sa_record *base)
{
    call_record *record = (call_record *)base;

    switch (record->shape) {
    case CALL_IN_OUT:
        return record->in_out(record->ctx, record->output, &record->output_length,
                              record->output_capacity, record->input, record->input_length) > 0;
    case CALL_FINAL:
        return record->final(record->ctx, record->output, &record->output_length,
                             record->output_capacity) > 0;
    case CALL_GEN:
        record->generated = record->gen(record->ctx, record->callback, record->callback_arg);
        return record->generated != NULL;
    case CALL_DIGEST_INIT:
        return record->digest_init(record->ctx, record->digest_name, record->key, record->params) > 0;
    case CALL_UPDATE:
        return record->update(record->ctx, record->input, record->input_length) > 0;
    }
    return 0;
}

static void release_call_inputs(sa_record *base)
{
    (void)base;
}

/*
 * Buffers are never NULL, even for zero bytes: the target takes a NULL
 * output for a size query and would answer one where the caller offered a
 * buffer too small (the fuzzer found it: success where default OpenSSL fails).
 */
static size_t allocated(size_t length)
{
    return length > 0 ? length : 1;
}

static void destroy_call(sa_record *base)
{
    call_record *record = (call_record *)base;

    OPENSSL_free(record->digest_name);
    OSSL_PARAM_free(record->params);
    OPENSSL_clear_free(record->input, allocated(record->input_length));
    OPENSSL_clear_free(record->output, allocated(record->output_capacity));
    OPENSSL_clear_free(record, sizeof(*record));
}

/* ---- Calls their caller stopped waiting for ---------------------------- */

/*
 * A key store's call that outlived its deadline still uses the target's
 * operation context, and its caller, told of the failure, may free that
 * context meanwhile (a server frees the connection). Such a free waits for
 * the call: the worker frees the context when the call returns. Until then
 * the context takes no new call. The list is short: calls past a deadline.
 */
static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;
static call_record *late_calls;
static atomic_int late_count;

/* 1 if record was on the list. */
static int unlink_late_call(call_record *record)
{
    call_record **link;

    for (link = &late_calls; *link != NULL; link = &(*link)->late_next)
        if (*link == record) {
            *link = record->late_next;
            atomic_fetch_sub(&late_count, 1);
            return 1;
        }
    return 0;
}

static call_record *late_call_on(void *ctx)
{
    call_record *record;

    for (record = late_calls; record != NULL; record = record->late_next)
        if (record->ctx == ctx)
            return record;
    return NULL;
}

/* On the caller's thread, its wait ended by the deadline: the call may still run. */
static void keep_context_for_late_call(call_record *record)
{
    pthread_mutex_lock(&late_lock);
    if (!record->returned) {
        sa_record_retain(&record->base);
        record->late_next = late_calls;
        late_calls = record;
        atomic_fetch_add(&late_count, 1);
    }
    pthread_mutex_unlock(&late_lock);
}

/*
 * Whether a digest-signature's caller left the device's operation open: an
 * init that went through, an update (run or not), a final never begun.
 */
static int leaves_operation_open(const call_record *record)
{
    int started = atomic_load(&record->base.started);

    switch (record->shape) {
    case CALL_DIGEST_INIT:
        return started && record->base.succeeded;
    case CALL_UPDATE:
        return 1;
    case CALL_FINAL:
        return !started;
    default:
        return 0;
    }
}

/* Signs into scratch to end the operation; the result and any error are no one's. */
static void close_device_operation(call_record *record)
{
    size_t capacity = 16384, length = capacity;
    unsigned char *scratch = OPENSSL_malloc(capacity);

    if (scratch != NULL) {
        sa_math_enter();
        (void)record->close(record->ctx, scratch, &length, capacity);
        sa_math_leave();
        OPENSSL_clear_free(scratch, capacity);
    }
    ERR_clear_error();
}

/* On the worker: done with the context; frees it if its caller already let go. */
static void settle_late_call(sa_record *base)
{
    call_record *record = (call_record *)base;
    void (*free_ctx)(void *) = NULL;
    int listed;

    if (record->close != NULL && leaves_operation_open(record))
        close_device_operation(record);

    pthread_mutex_lock(&late_lock);
    record->returned = 1;
    if ((listed = unlink_late_call(record)))
        free_ctx = record->late_free;
    pthread_mutex_unlock(&late_lock);
    if (free_ctx != NULL)
        free_ctx(record->ctx);
    if (listed)
        sa_record_release(base);
}

/* 1 if a late call holds ctx: its free is left to that call's worker. */
static int defer_free_to_late_call(void *ctx, void (*free_ctx)(void *))
{
    call_record *record;

    if (atomic_load(&late_count) == 0)
        return 0;
    pthread_mutex_lock(&late_lock);
    if ((record = late_call_on(ctx)) != NULL)
        record->late_free = free_ctx;
    pthread_mutex_unlock(&late_lock);
    return record != NULL;
}

/* 1 (with an error on the queue) if a call past its deadline still uses ctx. */
static int held_by_late_call(void *ctx)
{
    int held;

    if (atomic_load(&late_count) == 0)
        return 0;
    pthread_mutex_lock(&late_lock);
    held = late_call_on(ctx) != NULL;
    pthread_mutex_unlock(&late_lock);
    if (held)
        ERR_raise_data(ERR_LIB_PROV, ERR_R_OPERATION_FAIL,
                       "the key store is still running a call on this context past its deadline");
    return held;
}

static const sa_record_kind call_kind = {
    compute_call, release_call_inputs, destroy_call, sa_provider_compute_lanes, settle_late_call
};

static call_record *call_record_new(const call_slot *slot, sa_algorithm algorithm, call_shape shape,
                                    void *ctx, const unsigned char *in, size_t inlen, size_t outsize)
{
    call_record *record;

    if (sa_compute_inline() || (record = OPENSSL_zalloc(sizeof(*record))) == NULL)
        return NULL;
    sa_record_init(&record->base, &call_kind, algorithm);
    record->base.public.pool = slot->pool;
    record->shape = shape;
    record->ctx = ctx;
    record->output_capacity = outsize;
    record->output_length = outsize;
    if ((record->input = OPENSSL_malloc(allocated(inlen))) == NULL
        || (shape != CALL_GEN && (record->output = OPENSSL_malloc(allocated(outsize))) == NULL)) {
        sa_record_release(&record->base);
        return NULL;
    }
    if (inlen > 0)
        memcpy(record->input, in, inlen);
    record->input_length = inlen;
    return record;
}

static int run_call(call_record *record)
{
    int ok = sa_record_run(&record->base);

    if (sa_record_missed_deadline(&record->base))
        keep_context_for_late_call(record);
    return ok;
}

/* A call made on the caller's thread; a key store's silent failure gets a word on the queue. */
static void note_inline(const call_slot *slot, sa_algorithm algorithm, int ok, unsigned long last_error_before)
{
    if (!ok && slot->pool > 0 && ERR_peek_last_error() == last_error_before)
        sa_raise_silent_key_store_failure();
    sa_stats_note_inline_in(slot->pool, algorithm, ok);
}

/* Runs the record by the best route, then hands its output to the caller. */
static int finish(call_record *record, unsigned char *out, size_t *outlen)
{
    int ok = run_call(record);

    if (ok && record->output_length <= record->output_capacity) {
        memcpy(out, record->output, record->output_length);
        *outlen = record->output_length;
    }
    sa_record_release(&record->base);
    return ok;
}

/* Runs a record that only succeeds or fails. */
static int finish_status(call_record *record)
{
    int ok = run_call(record);

    sa_record_release(&record->base);
    return ok;
}

/* The context's get_ctx_params, where this slot's key steps may use lanes. */
static get_params_fn lanes_params(const call_slot *slot, int id)
{
    return slot->lanes ? ORIGINAL(slot, get_params_fn, id) : NULL;
}

static int forward_in_out(const call_slot *slot, int id, void *ctx, unsigned char *out,
                          size_t *outlen, size_t outsize, const unsigned char *in, size_t inlen)
{
    in_out_fn original = ORIGINAL(slot, in_out_fn, id);
    call_record *record;
    int ok;

    if (out == NULL)                       /* a size query: nothing to compute */
        return original(ctx, out, outlen, outsize, in, inlen);
    if (slot->pool > 0 && held_by_late_call(ctx))
        return 0;
    if ((record = call_record_new(slot, slot->algorithm, CALL_IN_OUT, ctx, in, inlen, outsize)) == NULL) {
        unsigned long last_error = ERR_peek_last_error();

        sa_math_enter();
        ok = original(ctx, out, outlen, outsize, in, inlen);
        sa_math_leave();
        note_inline(slot, slot->algorithm, ok > 0, last_error);
        return ok;
    }
    record->in_out = original;
    if (id == OSSL_FUNC_SIGNATURE_SIGN || id == OSSL_FUNC_SIGNATURE_DIGEST_SIGN)
        sa_lanes_attach(record, id == OSSL_FUNC_SIGNATURE_SIGN ? LANES_SIGN_DIGEST : LANES_SIGN_MESSAGE,
                        lanes_params(slot, OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS));
    return finish(record, out, outlen);
}

static int forward_final(const call_slot *slot, int id, void *ctx, unsigned char *out,
                         size_t *outlen, size_t outsize)
{
    final_fn original = ORIGINAL(slot, final_fn, id);
    call_record *record;
    int ok;

    if (out == NULL)
        return original(ctx, out, outlen, outsize);
    if (slot->pool > 0 && held_by_late_call(ctx))
        return 0;
    if ((record = call_record_new(slot, slot->algorithm, CALL_FINAL, ctx, NULL, 0, outsize)) == NULL) {
        unsigned long last_error = ERR_peek_last_error();

        sa_math_enter();
        ok = original(ctx, out, outlen, outsize);
        sa_math_leave();
        note_inline(slot, slot->algorithm, ok > 0, last_error);
        return ok;
    }
    record->final = original;
    if (slot->pool > 0 && id == OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL)
        record->close = original;
    if (id == OSSL_FUNC_KEYEXCH_DERIVE)
        sa_lanes_attach(record, LANES_DERIVE, lanes_params(slot, OSSL_FUNC_KEYEXCH_GET_CTX_PARAMS));
    else
        sa_lanes_attach(record, LANES_SIGN_FINAL, lanes_params(slot, OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS));
    return finish(record, out, outlen);
}

/* ---- Which key each context holds, for the lanes ------------------------ */

static int forward_key_init(const call_slot *slot, int id, void *ctx, void *provkey,
                            const OSSL_PARAM params[])
{
    int ok;

    if (slot->pool > 0 && held_by_late_call(ctx))
        return 0;
    ok = ORIGINAL(slot, key_init_fn, id)(ctx, provkey, params);
    if (!slot->lanes)
        return ok;
    if (ok > 0 && provkey != NULL
        && (id == OSSL_FUNC_SIGNATURE_SIGN_INIT || id == OSSL_FUNC_KEYEXCH_INIT))
        sa_lanes_note_key(ctx, provkey);
    else
        sa_lanes_forget(ctx);      /* set for something else now: verify, a message, ... */
    return ok;
}

/*
 * A key store's digest-sign init may open its device's operation (PKCS#11's
 * C_SignInit): on the pool in a job, like the signature itself.
 */
static int store_digest_sign_init(const call_slot *slot, void *ctx, const char *mdname,
                                  void *provkey, const OSSL_PARAM params[])
{
    digest_init_fn original = ORIGINAL(slot, digest_init_fn, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT);
    call_record *record;
    int ok;

    if ((record = call_record_new(slot, SA_ALG_SIGN_STEP, CALL_DIGEST_INIT, ctx, NULL, 0, 0)) == NULL) {
        unsigned long last_error = ERR_peek_last_error();

        ok = original(ctx, mdname, provkey, params);
        note_inline(slot, SA_ALG_SIGN_STEP, ok > 0, last_error);
        return ok;
    }
    record->digest_init = original;
    record->close = ORIGINAL(slot, final_fn, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL);
    record->key = provkey;
    if ((mdname != NULL && (record->digest_name = OPENSSL_strdup(mdname)) == NULL)
        || (params != NULL && (record->params = OSSL_PARAM_dup(params)) == NULL)) {
        sa_record_release(&record->base);
        return 0;
    }
    return finish_status(record);
}

static int forward_digest_init(const call_slot *slot, int id, void *ctx, const char *mdname,
                               void *provkey, const OSSL_PARAM params[])
{
    int ok;

    if (slot->pool > 0 && held_by_late_call(ctx))
        return 0;
    if (slot->pool > 0 && provkey != NULL && id == OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT)
        return store_digest_sign_init(slot, ctx, mdname, provkey, params);
    ok = ORIGINAL(slot, digest_init_fn, id)(ctx, mdname, provkey, params);
    if (!slot->lanes)
        return ok;
    if (ok > 0 && provkey != NULL && id == OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT)
        sa_lanes_note_digest_sign(ctx, provkey, lanes_params(slot, OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS));
    else
        sa_lanes_forget(ctx);
    return ok;
}

/* A key store's digest-sign update may be a round trip to its device (C_SignUpdate). */
static int store_digest_sign_update(const call_slot *slot, void *ctx, const unsigned char *data,
                                    size_t length)
{
    digest_update_fn original = ORIGINAL(slot, digest_update_fn, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE);
    call_record *record;
    int ok;

    if ((record = call_record_new(slot, SA_ALG_SIGN_STEP, CALL_UPDATE, ctx, data, length, 0)) == NULL) {
        unsigned long last_error = ERR_peek_last_error();

        ok = original(ctx, data, length);
        note_inline(slot, SA_ALG_SIGN_STEP, ok > 0, last_error);
        return ok;
    }
    record->update = original;
    record->close = ORIGINAL(slot, final_fn, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL);
    return finish_status(record);
}

static int forward_digest_update(const call_slot *slot, void *ctx, const unsigned char *data,
                                 size_t length)
{
    int ok;

    if (slot->pool > 0)
        return !held_by_late_call(ctx) && store_digest_sign_update(slot, ctx, data, length);
    ok = ORIGINAL(slot, digest_update_fn, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE)(ctx, data, length);
    if (ok > 0 && slot->lanes)
        sa_lanes_digest_update(ctx, data, length);
    return ok;
}

static int forward_set_peer(const call_slot *slot, void *ctx, void *provkey)
{
    int ok = ORIGINAL(slot, set_peer_fn, OSSL_FUNC_KEYEXCH_SET_PEER)(ctx, provkey);

    if (ok > 0 && slot->lanes)
        sa_lanes_note_peer(ctx, provkey);
    return ok;
}

/*
 * pkcs11-provider 1.0 can leave an error behind on a call that succeeds
 * ("Failed to fetch login_session" while another thread holds the token's
 * login session; it goes on with another). On a TLS server's thread that
 * error turns the handshake's next SSL_get_error into SSL_ERROR_SSL and a
 * good connection is dropped. EVP_DigestSignFinal dups and frees the
 * target's context on the caller's thread, between the steps the pool runs:
 * there, a key store's call that succeeded leaves nothing on the queue.
 */
static void forget_errors_of(int succeeded)
{
    if (succeeded)
        ERR_pop_to_mark();
    else
        ERR_clear_last_mark();
}

static void forward_free_ctx(const call_slot *slot, int id, void *ctx)
{
    if (slot->lanes)
        sa_lanes_forget(ctx);
    if (slot->pool > 0 && defer_free_to_late_call(ctx, ORIGINAL(slot, free_ctx_fn, id)))
        return;
    ERR_set_mark();
    ORIGINAL(slot, free_ctx_fn, id)(ctx);
    forget_errors_of(slot->pool > 0);
}

static void *forward_dup_ctx(const call_slot *slot, int id, void *ctx)
{
    void *copy;

    if (slot->pool > 0 && held_by_late_call(ctx))
        return NULL;
    ERR_set_mark();
    copy = ORIGINAL(slot, dup_ctx_fn, id)(ctx);
    forget_errors_of(slot->pool > 0 && copy != NULL);

    if (copy != NULL && slot->lanes)
        sa_lanes_copy(ctx, copy);
    return copy;
}

static void *forward_gen_init(const call_slot *slot, void *provctx, int selection,
                              const OSSL_PARAM params[])
{
    void *genctx = ORIGINAL(slot, gen_init_fn, OSSL_FUNC_KEYMGMT_GEN_INIT)(provctx, selection, params);

    if (genctx != NULL)
        sa_lanes_note_generation(genctx, provctx, selection, params);
    return genctx;
}

static int forward_gen_set_params(const call_slot *slot, void *genctx, const OSSL_PARAM params[])
{
    int ok = ORIGINAL(slot, gen_set_params_fn, OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS)(genctx, params);

    if (slot->lanes)
        sa_lanes_note_generation_params(genctx, params);
    return ok;
}

static int forward_gen_set_template(const call_slot *slot, void *genctx, void *template_keydata)
{
    int ok = ORIGINAL(slot, gen_set_template_fn, OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE)(genctx, template_keydata);

    if (slot->lanes)
        sa_lanes_note_generation_template(genctx, template_keydata);
    return ok;
}

static void forward_gen_cleanup(const call_slot *slot, void *genctx)
{
    if (genctx != NULL)
        sa_lanes_forget(genctx);
    ORIGINAL(slot, gen_cleanup_fn, OSSL_FUNC_KEYMGMT_GEN_CLEANUP)(genctx);
}

static void *forward_gen(const call_slot *slot, void *genctx, OSSL_CALLBACK *callback, void *arg)
{
    gen_fn original = ORIGINAL(slot, gen_fn, OSSL_FUNC_KEYMGMT_GEN);
    call_record *record;
    void *generated;

    if (sa_lanes_makes_parameters_only(genctx))
        return original(genctx, callback, arg);
    if ((record = call_record_new(slot, slot->algorithm, CALL_GEN, genctx, NULL, 0, 0)) == NULL) {
        sa_math_enter();
        generated = original(genctx, callback, arg);
        sa_math_leave();
        sa_stats_note_inline_in(slot->pool, slot->algorithm, generated != NULL);
        return generated;
    }
    record->gen = original;
    if (slot->lanes)
        sa_lanes_attach(record, LANES_GENERATE, NULL);
    record->callback = callback;
    record->callback_arg = arg;
    generated = sa_record_run(&record->base) ? record->generated : NULL;
    record->generated = NULL;
    sa_record_release(&record->base);
    return generated;
}

/* ---- Trampolines: one set per slot, so each knows its originals -------- */

/* Enough for the default provider (9 algorithms) and a key store beside it. */
#define SLOTS 24
static call_slot slots[SLOTS];
static int slots_used;

#define SIG OSSL_FUNC_SIGNATURE_
#define TRAMPOLINES(i)                                                                      \
    static int sign_##i(void *c, unsigned char *o, size_t *ol, size_t os,                   \
                        const unsigned char *in, size_t il)                                 \
    { return forward_in_out(&slots[i], OSSL_FUNC_SIGNATURE_SIGN, c, o, ol, os, in, il); }   \
    static int digest_sign_##i(void *c, unsigned char *o, size_t *ol, size_t os,            \
                               const unsigned char *in, size_t il)                          \
    { return forward_in_out(&slots[i], OSSL_FUNC_SIGNATURE_DIGEST_SIGN, c, o, ol, os, in, il); } \
    static int decrypt_##i(void *c, unsigned char *o, size_t *ol, size_t os,                \
                           const unsigned char *in, size_t il)                              \
    { return forward_in_out(&slots[i], OSSL_FUNC_ASYM_CIPHER_DECRYPT, c, o, ol, os, in, il); } \
    static int digest_sign_final_##i(void *c, unsigned char *o, size_t *ol, size_t os)      \
    { return forward_final(&slots[i], OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, c, o, ol, os); } \
    static int derive_##i(void *c, unsigned char *o, size_t *ol, size_t os)                 \
    { return forward_final(&slots[i], OSSL_FUNC_KEYEXCH_DERIVE, c, o, ol, os); }            \
    static void *gen_##i(void *g, OSSL_CALLBACK *cb, void *arg)                             \
    { return forward_gen(&slots[i], g, cb, arg); }                                          \
    static void *gen_init_##i(void *p, int selection, const OSSL_PARAM params[])            \
    { return forward_gen_init(&slots[i], p, selection, params); }                           \
    static void gen_cleanup_##i(void *g)                                                    \
    { forward_gen_cleanup(&slots[i], g); }                                                  \
    static int gen_set_params_##i(void *g, const OSSL_PARAM p[])                            \
    { return forward_gen_set_params(&slots[i], g, p); }                                     \
    static int gen_set_template_##i(void *g, void *t)                                       \
    { return forward_gen_set_template(&slots[i], g, t); }                                   \
    KEY_INIT(i, sign_init, OSSL_FUNC_SIGNATURE_SIGN_INIT)                                   \
    KEY_INIT(i, verify_init, OSSL_FUNC_SIGNATURE_VERIFY_INIT)                               \
    KEY_INIT(i, verify_recover_init, OSSL_FUNC_SIGNATURE_VERIFY_RECOVER_INIT)               \
    KEY_INIT(i, sign_message_init, SIGNATURE_SIGN_MESSAGE_INIT)                             \
    KEY_INIT(i, verify_message_init, SIGNATURE_VERIFY_MESSAGE_INIT)                         \
    KEY_INIT(i, derive_init, OSSL_FUNC_KEYEXCH_INIT)                                        \
    static int digest_sign_init_##i(void *c, const char *md, void *k, const OSSL_PARAM p[]) \
    { return forward_digest_init(&slots[i], OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, c, md, k, p); } \
    static int digest_verify_init_##i(void *c, const char *md, void *k, const OSSL_PARAM p[]) \
    { return forward_digest_init(&slots[i], OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, c, md, k, p); } \
    static int digest_sign_update_##i(void *c, const unsigned char *d, size_t l)           \
    { return forward_digest_update(&slots[i], c, d, l); }                                   \
    static int set_peer_##i(void *c, void *k) { return forward_set_peer(&slots[i], c, k); } \
    static void signature_free_##i(void *c)                                                 \
    { forward_free_ctx(&slots[i], OSSL_FUNC_SIGNATURE_FREECTX, c); }                        \
    static void *signature_dup_##i(void *c)                                                 \
    { return forward_dup_ctx(&slots[i], OSSL_FUNC_SIGNATURE_DUPCTX, c); }                   \
    static void keyexch_free_##i(void *c)                                                   \
    { forward_free_ctx(&slots[i], OSSL_FUNC_KEYEXCH_FREECTX, c); }                          \
    static void *keyexch_dup_##i(void *c)                                                   \
    { return forward_dup_ctx(&slots[i], OSSL_FUNC_KEYEXCH_DUPCTX, c); }                     \
    static void cipher_free_##i(void *c)                                                    \
    { forward_free_ctx(&slots[i], OSSL_FUNC_ASYM_CIPHER_FREECTX, c); }                      \
    static void *cipher_dup_##i(void *c)                                                    \
    { return forward_dup_ctx(&slots[i], OSSL_FUNC_ASYM_CIPHER_DUPCTX, c); }
#define KEY_INIT(i, name, id)                                                               \
    static int name##_##i(void *c, void *k, const OSSL_PARAM p[])                           \
    { return forward_key_init(&slots[i], id, c, k, p); }
TRAMPOLINES(0) TRAMPOLINES(1) TRAMPOLINES(2) TRAMPOLINES(3) TRAMPOLINES(4) TRAMPOLINES(5)
TRAMPOLINES(6) TRAMPOLINES(7) TRAMPOLINES(8) TRAMPOLINES(9) TRAMPOLINES(10) TRAMPOLINES(11)
TRAMPOLINES(12) TRAMPOLINES(13) TRAMPOLINES(14) TRAMPOLINES(15) TRAMPOLINES(16) TRAMPOLINES(17)
TRAMPOLINES(18) TRAMPOLINES(19) TRAMPOLINES(20) TRAMPOLINES(21) TRAMPOLINES(22) TRAMPOLINES(23)

typedef void (*any_fn)(void);
#define ALL(name) { (any_fn)name##0, (any_fn)name##1, (any_fn)name##2, (any_fn)name##3,      \
                    (any_fn)name##4, (any_fn)name##5, (any_fn)name##6, (any_fn)name##7,      \
                    (any_fn)name##8, (any_fn)name##9, (any_fn)name##10, (any_fn)name##11,    \
                    (any_fn)name##12, (any_fn)name##13, (any_fn)name##14, (any_fn)name##15,  \
                    (any_fn)name##16, (any_fn)name##17, (any_fn)name##18, (any_fn)name##19,  \
                    (any_fn)name##20, (any_fn)name##21, (any_fn)name##22, (any_fn)name##23 }

/* Which of the target's functions we stand in for, per operation and function id. */
static const struct take_over {
    int operation;
    int id;
    any_fn trampolines[SLOTS];
} take_overs[] = {
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_SIGN, ALL(sign_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_DIGEST_SIGN, ALL(digest_sign_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, ALL(digest_sign_final_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_SIGN_INIT, ALL(sign_init_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_VERIFY_INIT, ALL(verify_init_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_VERIFY_RECOVER_INIT, ALL(verify_recover_init_) },
    { OSSL_OP_SIGNATURE, SIGNATURE_SIGN_MESSAGE_INIT, ALL(sign_message_init_) },
    { OSSL_OP_SIGNATURE, SIGNATURE_VERIFY_MESSAGE_INIT, ALL(verify_message_init_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, ALL(digest_sign_init_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, ALL(digest_verify_init_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, ALL(digest_sign_update_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_FREECTX, ALL(signature_free_) },
    { OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_DUPCTX, ALL(signature_dup_) },
    { OSSL_OP_KEYEXCH, OSSL_FUNC_KEYEXCH_DERIVE, ALL(derive_) },
    { OSSL_OP_KEYEXCH, OSSL_FUNC_KEYEXCH_INIT, ALL(derive_init_) },
    { OSSL_OP_KEYEXCH, OSSL_FUNC_KEYEXCH_SET_PEER, ALL(set_peer_) },
    { OSSL_OP_KEYEXCH, OSSL_FUNC_KEYEXCH_FREECTX, ALL(keyexch_free_) },
    { OSSL_OP_KEYEXCH, OSSL_FUNC_KEYEXCH_DUPCTX, ALL(keyexch_dup_) },
    { OSSL_OP_ASYM_CIPHER, OSSL_FUNC_ASYM_CIPHER_DECRYPT, ALL(decrypt_) },
    { OSSL_OP_ASYM_CIPHER, OSSL_FUNC_ASYM_CIPHER_FREECTX, ALL(cipher_free_) },
    { OSSL_OP_ASYM_CIPHER, OSSL_FUNC_ASYM_CIPHER_DUPCTX, ALL(cipher_dup_) },
    { OSSL_OP_KEYMGMT, OSSL_FUNC_KEYMGMT_GEN, ALL(gen_) },
    { OSSL_OP_KEYMGMT, OSSL_FUNC_KEYMGMT_GEN_INIT, ALL(gen_init_) },
    { OSSL_OP_KEYMGMT, OSSL_FUNC_KEYMGMT_GEN_CLEANUP, ALL(gen_cleanup_) },
    { OSSL_OP_KEYMGMT, OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, ALL(gen_set_params_) },
    { OSSL_OP_KEYMGMT, OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, ALL(gen_set_template_) },
};

/* ---- Which of the target's algorithms we forward ----------------------- */

/* The counter an algorithm's private-key step is counted under; -1: not forwarded. */
static int forwarded_algorithm(int operation, const char *names)
{
    switch (operation) {
    case OSSL_OP_SIGNATURE:
        return sa_first_name_is(names, "RSA") || sa_first_name_is(names, "RSA-PSS")
            ? SA_ALG_RSA_PRIVATE_ENCRYPT
            : sa_first_name_is(names, "ECDSA") ? SA_ALG_ECDSA_SIGN : -1;
    case OSSL_OP_ASYM_CIPHER:
        return sa_first_name_is(names, "RSA") ? SA_ALG_RSA_PRIVATE_DECRYPT : -1;
    case OSSL_OP_KEYEXCH:
        return sa_first_name_is(names, "ECDH") ? SA_ALG_ECDH_DERIVE
            : sa_first_name_is(names, "X25519") ? SA_ALG_X25519_DERIVE
            : sa_first_name_is(names, "X448") ? SA_ALG_X448_DERIVE : -1;
    case OSSL_OP_KEYMGMT:
        return sa_first_name_is(names, "EC") ? SA_ALG_EC_KEYGEN
            : sa_first_name_is(names, "X25519") ? SA_ALG_X25519_KEYGEN
            : sa_first_name_is(names, "X448") ? SA_ALG_X448_KEYGEN : -1;
    default:
        return -1;
    }
}

/*
 * Lanes read the context's key (or settings), noted at init: only where we
 * see every init of the table (no function id newer than we know).
 */
static int lanes_possible(int operation, const OSSL_DISPATCH *theirs)
{
    int highest = operation == OSSL_OP_SIGNATURE ? SIGNATURE_HIGHEST_KNOWN
        : operation == OSSL_OP_KEYEXCH ? KEYEXCH_HIGHEST_KNOWN
        : operation == OSSL_OP_KEYMGMT ? KEYMGMT_HIGHEST_KNOWN : 0;

    for (; theirs->function_id != 0; theirs++)
        if (theirs->function_id > highest)
            return 0;
    return 1;
}

/* Puts the slot's trampoline where the target's function was, keeping the original. */
static void take_over(int operation, OSSL_DISPATCH *function, int slot)
{
    size_t i;

    if (function->function_id <= 0 || function->function_id >= FUNCTION_IDS)
        return;
    slots[slot].original[function->function_id] = function->function;
    for (i = 0; i < sizeof(take_overs) / sizeof(take_overs[0]); i++)
        if (take_overs[i].operation == operation && take_overs[i].id == function->function_id)
            function->function = take_overs[i].trampolines[slot];
}

/* A slot already made for this table of the target's, or -1. */
static int slot_for(int pool, const OSSL_DISPATCH *theirs)
{
    int slot;

    for (slot = 0; slot < slots_used; slot++)
        if (slots[slot].theirs == theirs && slots[slot].pool == pool)
            return slot;
    return -1;
}

/* Called once per algorithm and loaded instance, under provider.c's lock. */
const OSSL_DISPATCH *sa_provider_dispatch(int pool, int operation, const char *names,
                                          const OSSL_DISPATCH *theirs)
{
    int algorithm = forwarded_algorithm(operation, names);
    size_t count = 0, i;
    OSSL_DISPATCH *ours;
    int slot;

    if (operation == OSSL_OP_KEYMGMT && pool == 0)
        sa_lanes_note_key_manager(names, theirs);
    if (operation == OSSL_OP_KEYMGMT && pool > 0)
        return theirs;            /* a key store's keys are made on the device, or only loaded */
    if ((slot = slot_for(pool, theirs)) >= 0)
        return slots[slot].ours;
    if (algorithm < 0 || slots_used == SLOTS)
        return theirs;
    while (theirs[count].function_id != 0)
        count++;
    if ((ours = OPENSSL_malloc((count + 1) * sizeof(*ours))) == NULL)
        return NULL;
    memcpy(ours, theirs, (count + 1) * sizeof(*ours));
    slot = slots_used++;
    slots[slot].theirs = theirs;
    slots[slot].ours = ours;
    slots[slot].pool = pool;
    slots[slot].algorithm = (sa_algorithm)algorithm;
    slots[slot].lanes = pool == 0 && lanes_possible(operation, theirs);
    for (i = 0; i < count; i++)
        take_over(operation, &ours[i], slot);
    return ours;
}
