/*
 * One provider private-key step as a record: the target's function and
 * operation context (computed one at a time), and, where the key qualifies,
 * what the 8-lane math needs (provider_lanes.c), found on the worker from
 * the target's key data. The paused caller keeps the context and the keys.
 */
#ifndef SWIFTASYNC_PROVIDER_RECORD_H
#define SWIFTASYNC_PROVIDER_RECORD_H

#include "operation.h"

#include <openssl/core.h>
#include <openssl/evp.h>

typedef enum call_shape {
    CALL_IN_OUT,             /* (ctx, out, outlen, outsize, in, inlen): sign, digest_sign, decrypt */
    CALL_FINAL,              /* (ctx, out, outlen, outsize): digest_sign_final, derive */
    CALL_GEN,                /* (genctx, callback, arg) -> key data */
    CALL_DIGEST_INIT,        /* (ctx, mdname, key, params): a key store's digest_sign_init */
    CALL_UPDATE,             /* (ctx, in, inlen): a key store's digest_sign_update */
} call_shape;

typedef int (*in_out_fn)(void *ctx, unsigned char *out, size_t *outlen, size_t outsize,
                         const unsigned char *in, size_t inlen);
typedef int (*final_fn)(void *ctx, unsigned char *out, size_t *outlen, size_t outsize);
typedef void *(*gen_fn)(void *genctx, OSSL_CALLBACK *callback, void *arg);
typedef int (*digest_init_fn)(void *ctx, const char *mdname, void *provkey, const OSSL_PARAM params[]);
typedef int (*digest_update_fn)(void *ctx, const unsigned char *data, size_t length);
typedef int (*export_fn)(void *keydata, int selection, OSSL_CALLBACK *callback, void *arg);

/* What a lane needs beyond the record's input: the keys, and how to form the input. */
typedef struct call_lane_inputs {
    export_fn export_key;         /* the target's key manager's */
    void *keydata;                /* ours; the caller's context holds it */
    void *peer;                   /* derive: the peer's */
    void *provctx;                /* key generation: the target's provider context the key is made in */
    int padding;                  /* RSA sign: PKCS#1, PSS or none */
    const unsigned char *prefix;  /* RSA PKCS#1 with a digest: its DigestInfo prefix */
    size_t prefix_length;
    const EVP_MD *pss_digest;     /* RSA PSS: the digest, the mask's digest, the salt's length */
    const EVP_MD *mgf1_digest;
    int salt_length;
    int digested;                 /* digest-sign: what is signed is `digest`, not the input */
    unsigned char digest[EVP_MAX_MD_SIZE];
    size_t digest_length;
} call_lane_inputs;

typedef struct call_record {
    sa_record base;
    call_shape shape;
    in_out_fn in_out;
    final_fn final;
    gen_fn gen;
    digest_init_fn digest_init;
    digest_update_fn update;
    char *digest_name;            /* digest_sign_init's, copied: a late call outlives the caller's */
    void *key;
    OSSL_PARAM *params;           /* the same */
    void *ctx;                    /* the target's operation context; the paused caller keeps it */
    OSSL_CALLBACK *callback;
    void *callback_arg;
    unsigned char *input;         /* our copy */
    size_t input_length;
    unsigned char *output;        /* the caller's size; copied out on resume */
    size_t output_capacity;
    size_t output_length;
    void *generated;
    call_lane_inputs lanes;
    final_fn close;               /* a key store's digest-sign step: ends the device's operation
                                     if its caller went at the deadline (pkcs11-provider would hand
                                     the session back with the operation open, refused ever after) */
    /* A call past its deadline: provider_calls.c's list, under its lock. */
    int returned;                 /* the worker is done with ctx */
    void (*late_free)(void *ctx); /* the caller freed ctx meanwhile: the worker frees it */
    struct call_record *late_next;
} call_record;

#endif
