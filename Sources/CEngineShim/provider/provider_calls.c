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
#include "operation.h"
#include "provider_calls.h"

#include <pthread.h>
#include <string.h>
#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>

typedef enum call_shape {
    CALL_IN_OUT,             /* (ctx, out, outlen, outsize, in, inlen): sign, digest_sign, decrypt */
    CALL_FINAL,              /* (ctx, out, outlen, outsize): digest_sign_final, derive */
    CALL_GEN,                /* (genctx, callback, arg) -> key data */
} call_shape;

typedef int (*in_out_fn)(void *ctx, unsigned char *out, size_t *outlen, size_t outsize,
                         const unsigned char *in, size_t inlen);
typedef int (*final_fn)(void *ctx, unsigned char *out, size_t *outlen, size_t outsize);
typedef void *(*gen_fn)(void *genctx, OSSL_CALLBACK *callback, void *arg);
typedef void *(*gen_init_fn)(void *provctx, int selection, const OSSL_PARAM params[]);
typedef void (*gen_cleanup_fn)(void *genctx);

/* One target algorithm whose private-key steps we forward, and its originals. */
typedef struct call_slot {
    sa_algorithm algorithm;
    in_out_fn sign, digest_sign, decrypt;
    final_fn digest_sign_final, derive;
    gen_fn gen;
    gen_init_fn gen_init;
    gen_cleanup_fn gen_cleanup;
} call_slot;

typedef struct call_record {
    sa_record base;
    call_shape shape;
    in_out_fn in_out;
    final_fn final;
    gen_fn gen;
    void *ctx;                    /* the target's operation context; the paused caller keeps it */
    OSSL_CALLBACK *callback;
    void *callback_arg;
    unsigned char *input;         /* our copy */
    size_t input_length;
    unsigned char *output;        /* the caller's size; copied out on resume */
    size_t output_capacity;
    size_t output_length;
    void *generated;
} call_record;

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
    }
    return 0;
}

static void release_call_inputs(sa_record *base)
{
    (void)base;
}

static void destroy_call(sa_record *base)
{
    call_record *record = (call_record *)base;

    OPENSSL_clear_free(record->input, record->input_length);
    OPENSSL_clear_free(record->output, record->output_capacity);
    OPENSSL_clear_free(record, sizeof(*record));
}

static const sa_record_kind call_kind = { compute_call, release_call_inputs, destroy_call, NULL };

static call_record *call_record_new(sa_algorithm algorithm, call_shape shape, void *ctx,
                                    const unsigned char *in, size_t inlen, size_t outsize)
{
    call_record *record;

    if (sa_compute_inline() || (record = OPENSSL_zalloc(sizeof(*record))) == NULL)
        return NULL;
    sa_record_init(&record->base, &call_kind, algorithm);
    record->shape = shape;
    record->ctx = ctx;
    record->output_capacity = outsize;
    record->output_length = outsize;
    if ((inlen > 0 && (record->input = OPENSSL_memdup(in, inlen)) == NULL)
        || (outsize > 0 && (record->output = OPENSSL_malloc(outsize)) == NULL)) {
        sa_record_release(&record->base);
        return NULL;
    }
    record->input_length = inlen;
    return record;
}

/* Runs the record by the best route, then hands its output to the caller. */
static int finish(call_record *record, unsigned char *out, size_t *outlen)
{
    int ok = sa_record_run(&record->base);

    if (ok && record->output_length <= record->output_capacity) {
        memcpy(out, record->output, record->output_length);
        *outlen = record->output_length;
    }
    sa_record_release(&record->base);
    return ok;
}

static int forward_in_out(const call_slot *slot, in_out_fn original, void *ctx, unsigned char *out,
                          size_t *outlen, size_t outsize, const unsigned char *in, size_t inlen)
{
    call_record *record;
    int ok;

    if (out == NULL)                       /* a size query: nothing to compute */
        return original(ctx, out, outlen, outsize, in, inlen);
    if ((record = call_record_new(slot->algorithm, CALL_IN_OUT, ctx, in, inlen, outsize)) == NULL) {
        ok = original(ctx, out, outlen, outsize, in, inlen);
        sa_stats_note_inline(slot->algorithm, ok > 0);
        return ok;
    }
    record->in_out = original;
    return finish(record, out, outlen);
}

static int forward_final(const call_slot *slot, final_fn original, void *ctx, unsigned char *out,
                         size_t *outlen, size_t outsize)
{
    call_record *record;
    int ok;

    if (out == NULL)
        return original(ctx, out, outlen, outsize);
    if ((record = call_record_new(slot->algorithm, CALL_FINAL, ctx, NULL, 0, outsize)) == NULL) {
        ok = original(ctx, out, outlen, outsize);
        sa_stats_note_inline(slot->algorithm, ok > 0);
        return ok;
    }
    record->final = original;
    return finish(record, out, outlen);
}

/*
 * Generation contexts that make parameters only (a TLS 1.3 server makes the
 * peer's X25519 "parameters" this way): nothing to offload, nothing to count.
 * Learnt at gen_init, forgotten at gen_cleanup.
 */
#define PARAMETER_CONTEXTS 64
static void *parameter_contexts[PARAMETER_CONTEXTS];
static pthread_mutex_t parameter_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_parameter_context(void *genctx, int remember)
{
    void *wanted = remember ? NULL : genctx, *put = remember ? genctx : NULL;
    int i;

    pthread_mutex_lock(&parameter_lock);
    for (i = 0; i < PARAMETER_CONTEXTS; i++)
        if (parameter_contexts[i] == wanted) {
            parameter_contexts[i] = put;
            break;
        }
    pthread_mutex_unlock(&parameter_lock);
}

static int makes_parameters_only(void *genctx)
{
    int i, found = 0;

    pthread_mutex_lock(&parameter_lock);
    for (i = 0; i < PARAMETER_CONTEXTS && !found; i++)
        found = parameter_contexts[i] == genctx;
    pthread_mutex_unlock(&parameter_lock);
    return found;
}

static void *forward_gen_init(const call_slot *slot, void *provctx, int selection,
                              const OSSL_PARAM params[])
{
    void *genctx = slot->gen_init(provctx, selection, params);

    if (genctx != NULL && (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        note_parameter_context(genctx, 1);
    return genctx;
}

static void forward_gen_cleanup(const call_slot *slot, void *genctx)
{
    if (genctx != NULL)
        note_parameter_context(genctx, 0);
    slot->gen_cleanup(genctx);
}

static void *forward_gen(const call_slot *slot, void *genctx, OSSL_CALLBACK *callback, void *arg)
{
    call_record *record;
    void *generated;

    if (makes_parameters_only(genctx))
        return slot->gen(genctx, callback, arg);
    if ((record = call_record_new(slot->algorithm, CALL_GEN, genctx, NULL, 0, 0)) == NULL) {
        generated = slot->gen(genctx, callback, arg);
        sa_stats_note_inline(slot->algorithm, generated != NULL);
        return generated;
    }
    record->gen = slot->gen;
    record->callback = callback;
    record->callback_arg = arg;
    generated = sa_record_run(&record->base) ? record->generated : NULL;
    record->generated = NULL;
    sa_record_release(&record->base);
    return generated;
}

/* ---- Trampolines: one set per slot, so each knows its originals -------- */

#define SLOTS 12
static call_slot slots[SLOTS];
static int slots_used;

#define TRAMPOLINES(i)                                                                  \
    static int sign_##i(void *c, unsigned char *o, size_t *ol, size_t os,               \
                        const unsigned char *in, size_t il)                             \
    { return forward_in_out(&slots[i], slots[i].sign, c, o, ol, os, in, il); }          \
    static int digest_sign_##i(void *c, unsigned char *o, size_t *ol, size_t os,        \
                               const unsigned char *in, size_t il)                      \
    { return forward_in_out(&slots[i], slots[i].digest_sign, c, o, ol, os, in, il); }   \
    static int decrypt_##i(void *c, unsigned char *o, size_t *ol, size_t os,            \
                           const unsigned char *in, size_t il)                          \
    { return forward_in_out(&slots[i], slots[i].decrypt, c, o, ol, os, in, il); }       \
    static int digest_sign_final_##i(void *c, unsigned char *o, size_t *ol, size_t os)  \
    { return forward_final(&slots[i], slots[i].digest_sign_final, c, o, ol, os); }      \
    static int derive_##i(void *c, unsigned char *o, size_t *ol, size_t os)             \
    { return forward_final(&slots[i], slots[i].derive, c, o, ol, os); }                 \
    static void *gen_##i(void *g, OSSL_CALLBACK *cb, void *arg)                         \
    { return forward_gen(&slots[i], g, cb, arg); }                                      \
    static void *gen_init_##i(void *p, int selection, const OSSL_PARAM params[])        \
    { return forward_gen_init(&slots[i], p, selection, params); }                       \
    static void gen_cleanup_##i(void *g)                                                \
    { forward_gen_cleanup(&slots[i], g); }
TRAMPOLINES(0) TRAMPOLINES(1) TRAMPOLINES(2) TRAMPOLINES(3) TRAMPOLINES(4) TRAMPOLINES(5)
TRAMPOLINES(6) TRAMPOLINES(7) TRAMPOLINES(8) TRAMPOLINES(9) TRAMPOLINES(10) TRAMPOLINES(11)

#define ALL(name) { name##0, name##1, name##2, name##3, name##4, name##5, \
                    name##6, name##7, name##8, name##9, name##10, name##11 }
static const in_out_fn sign_trampolines[SLOTS] = ALL(sign_);
static const in_out_fn digest_sign_trampolines[SLOTS] = ALL(digest_sign_);
static const in_out_fn decrypt_trampolines[SLOTS] = ALL(decrypt_);
static const final_fn digest_sign_final_trampolines[SLOTS] = ALL(digest_sign_final_);
static const final_fn derive_trampolines[SLOTS] = ALL(derive_);
static const gen_fn gen_trampolines[SLOTS] = ALL(gen_);
static const gen_init_fn gen_init_trampolines[SLOTS] = ALL(gen_init_);
static const gen_cleanup_fn gen_cleanup_trampolines[SLOTS] = ALL(gen_cleanup_);

/* ---- Which of the target's algorithms we forward ----------------------- */

static int first_name_is(const char *names, const char *name)
{
    size_t length = strlen(name);
    return strncmp(names, name, length) == 0 && (names[length] == '\0' || names[length] == ':');
}

/* The counter an algorithm's private-key step is counted under; -1: not forwarded. */
static int forwarded_algorithm(int operation, const char *names)
{
    switch (operation) {
    case OSSL_OP_SIGNATURE:
        return first_name_is(names, "RSA") ? SA_ALG_RSA_PRIVATE_ENCRYPT
            : first_name_is(names, "ECDSA") ? SA_ALG_ECDSA_SIGN : -1;
    case OSSL_OP_ASYM_CIPHER:
        return first_name_is(names, "RSA") ? SA_ALG_RSA_PRIVATE_DECRYPT : -1;
    case OSSL_OP_KEYEXCH:
        return first_name_is(names, "ECDH") ? SA_ALG_ECDH_DERIVE
            : first_name_is(names, "X25519") ? SA_ALG_X25519_DERIVE
            : first_name_is(names, "X448") ? SA_ALG_X448_DERIVE : -1;
    case OSSL_OP_KEYMGMT:
        return first_name_is(names, "EC") ? SA_ALG_EC_KEYGEN
            : first_name_is(names, "X25519") ? SA_ALG_X25519_KEYGEN
            : first_name_is(names, "X448") ? SA_ALG_X448_KEYGEN : -1;
    default:
        return -1;
    }
}

/* Puts the slot's trampoline where the target's private-key step was, keeping the original. */
static void take_over(int operation, OSSL_DISPATCH *function, int slot)
{
    call_slot *s = &slots[slot];
    int id = function->function_id;

    if (operation == OSSL_OP_SIGNATURE && id == OSSL_FUNC_SIGNATURE_SIGN) {
        s->sign = (in_out_fn)function->function;
        function->function = (void (*)(void))sign_trampolines[slot];
    } else if (operation == OSSL_OP_SIGNATURE && id == OSSL_FUNC_SIGNATURE_DIGEST_SIGN) {
        s->digest_sign = (in_out_fn)function->function;
        function->function = (void (*)(void))digest_sign_trampolines[slot];
    } else if (operation == OSSL_OP_SIGNATURE && id == OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL) {
        s->digest_sign_final = (final_fn)function->function;
        function->function = (void (*)(void))digest_sign_final_trampolines[slot];
    } else if (operation == OSSL_OP_KEYEXCH && id == OSSL_FUNC_KEYEXCH_DERIVE) {
        s->derive = (final_fn)function->function;
        function->function = (void (*)(void))derive_trampolines[slot];
    } else if (operation == OSSL_OP_ASYM_CIPHER && id == OSSL_FUNC_ASYM_CIPHER_DECRYPT) {
        s->decrypt = (in_out_fn)function->function;
        function->function = (void (*)(void))decrypt_trampolines[slot];
    } else if (operation == OSSL_OP_KEYMGMT && id == OSSL_FUNC_KEYMGMT_GEN) {
        s->gen = (gen_fn)function->function;
        function->function = (void (*)(void))gen_trampolines[slot];
    } else if (operation == OSSL_OP_KEYMGMT && id == OSSL_FUNC_KEYMGMT_GEN_INIT) {
        s->gen_init = (gen_init_fn)function->function;
        function->function = (void (*)(void))gen_init_trampolines[slot];
    } else if (operation == OSSL_OP_KEYMGMT && id == OSSL_FUNC_KEYMGMT_GEN_CLEANUP) {
        s->gen_cleanup = (gen_cleanup_fn)function->function;
        function->function = (void (*)(void))gen_cleanup_trampolines[slot];
    }
}

/* Called once per algorithm, under provider.c's lock. */
const OSSL_DISPATCH *sa_provider_dispatch(int operation, const char *names,
                                          const OSSL_DISPATCH *theirs)
{
    int algorithm = forwarded_algorithm(operation, names);
    size_t count = 0, i;
    OSSL_DISPATCH *ours;
    int slot;

    if (algorithm < 0 || slots_used == SLOTS)
        return theirs;
    while (theirs[count].function_id != 0)
        count++;
    if ((ours = OPENSSL_malloc((count + 1) * sizeof(*ours))) == NULL)
        return NULL;
    memcpy(ours, theirs, (count + 1) * sizeof(*ours));
    slot = slots_used++;
    slots[slot].algorithm = (sa_algorithm)algorithm;
    for (i = 0; i < count; i++)
        take_over(operation, &ours[i], slot);
    return ours;
}
