/*
 * Elliptic-curve private-key operations on the pool, for every named curve:
 * key generation (an ECDHE handshake's ephemeral key), ECDH, and ECDSA
 * signing. The math is OpenSSL's own software EC_KEY_METHOD, run on a worker;
 * verification stays inline. ECDSA_sign reaches the pool through sign_sig.
 *
 * Each record holds its own references (key, peer point, nonce inputs), so a
 * worker never touches memory the caller may free; results are handed over
 * after the job resumes.
 */
#include "ec_key_method.h"
#include "operation.h"

#include <pthread.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>

typedef int (*keygen_fn)(EC_KEY *key);
typedef int (*compute_key_fn)(unsigned char **secret, size_t *secret_length,
                              const EC_POINT *peer, const EC_KEY *key);
typedef int (*sign_fn)(int type, const unsigned char *digest, int digest_length,
                       unsigned char *signature, unsigned int *signature_length,
                       const BIGNUM *kinv, const BIGNUM *r, EC_KEY *key);
typedef int (*sign_setup_fn)(EC_KEY *key, BN_CTX *bn_ctx, BIGNUM **kinv, BIGNUM **r);
typedef ECDSA_SIG *(*sign_sig_fn)(const unsigned char *digest, int digest_length,
                                  const BIGNUM *kinv, const BIGNUM *r, EC_KEY *key);

static EC_KEY_METHOD *ec_method;
static struct {
    keygen_fn keygen;
    compute_key_fn compute_key;
    sign_fn sign;
    sign_setup_fn sign_setup;
    sign_sig_fn sign_sig;
} software;

/* ---- One record kind for all EC operations ----------------------------- */

typedef struct ec_record {
    sa_record base;
    EC_KEY *key;                    /* dropped as soon as the result is stored */
    EC_POINT *peer;                 /* ECDH: our copy of the peer's point */
    unsigned char *digest;          /* ECDSA: our copy of the digest */
    int digest_length;
    BIGNUM *kinv, *r;               /* ECDSA: nonce inputs, or sign_setup's outputs */
    unsigned char *secret;          /* ECDH output until handed over */
    size_t secret_length;
    ECDSA_SIG *signature;           /* ECDSA output until handed over */
} ec_record;

static int compute_ec(sa_record *base)
{
    ec_record *record = (ec_record *)base;
    int ok = 0;

    switch (base->public.algorithm) {
    case SA_ALG_EC_KEYGEN:
        ok = software.keygen(record->key);
        break;
    case SA_ALG_ECDH_DERIVE:
        ok = software.compute_key(&record->secret, &record->secret_length,
                                  record->peer, record->key);
        break;
    case SA_ALG_ECDSA_SIGN:
        record->signature = software.sign_sig(record->digest, record->digest_length,
                                              record->kinv, record->r, record->key);
        ok = record->signature != NULL;
        break;
    case SA_ALG_ECDSA_SIGN_SETUP:
        ok = software.sign_setup(record->key, NULL, &record->kinv, &record->r);
        break;
    default:
        break;
    }
    return ok;
}

static void release_ec_inputs(sa_record *base)
{
    ec_record *record = (ec_record *)base;
    EC_KEY_free(record->key);
    record->key = NULL;
}

static void destroy_ec(sa_record *base)
{
    ec_record *record = (ec_record *)base;
    release_ec_inputs(base);
    EC_POINT_free(record->peer);
    OPENSSL_clear_free(record->digest, (size_t)record->digest_length);
    BN_clear_free(record->kinv);
    BN_clear_free(record->r);
    OPENSSL_clear_free(record->secret, record->secret_length);
    ECDSA_SIG_free(record->signature);
    OPENSSL_clear_free(record, sizeof(*record));
}

static const sa_record_kind ec_kind = { compute_ec, release_ec_inputs, destroy_ec };

/* A record for key, or NULL (then the caller computes inline). */
static ec_record *ec_record_new(sa_algorithm algorithm, const EC_KEY *key)
{
    ec_record *record;

    if (sa_compute_inline() || EC_KEY_get0_group(key) == NULL
        || (record = OPENSSL_zalloc(sizeof(*record))) == NULL)
        return NULL;
    sa_record_init(&record->base, &ec_kind, algorithm);
    record->key = (EC_KEY *)key;
    EC_KEY_up_ref(record->key);
    return record;
}

/* ---- The EC_KEY_METHOD ------------------------------------------------- */

static int ec_keygen(EC_KEY *key)
{
    ec_record *record = ec_record_new(SA_ALG_EC_KEYGEN, key);
    int ok;

    if (record == NULL) {
        ok = software.keygen(key);
        sa_stats_note_inline(SA_ALG_EC_KEYGEN, ok);
        return ok;
    }
    ok = sa_record_run(&record->base);
    sa_record_release(&record->base);
    return ok;
}

static int ec_compute_key(unsigned char **secret, size_t *secret_length,
                          const EC_POINT *peer, const EC_KEY *key)
{
    ec_record *record = ec_record_new(SA_ALG_ECDH_DERIVE, key);
    int ok;

    if (record != NULL
        && (record->peer = EC_POINT_dup(peer, EC_KEY_get0_group(key))) == NULL) {
        sa_record_release(&record->base);
        record = NULL;
    }
    if (record == NULL) {
        ok = software.compute_key(secret, secret_length, peer, key);
        sa_stats_note_inline(SA_ALG_ECDH_DERIVE, ok);
        return ok;
    }
    ok = sa_record_run(&record->base);
    if (ok) {
        *secret = record->secret;
        *secret_length = record->secret_length;
        record->secret = NULL;
        record->secret_length = 0;
    }
    sa_record_release(&record->base);
    return ok;
}

static ECDSA_SIG *ec_sign_sig(const unsigned char *digest, int digest_length,
                              const BIGNUM *kinv, const BIGNUM *r, EC_KEY *key)
{
    ec_record *record = digest_length >= 0 ? ec_record_new(SA_ALG_ECDSA_SIGN, key) : NULL;
    ECDSA_SIG *signature;

    if (record != NULL) {
        record->digest_length = digest_length;
        record->digest = OPENSSL_malloc(digest_length > 0 ? (size_t)digest_length : 1);
        if (record->digest != NULL)
            memcpy(record->digest, digest, (size_t)digest_length);
        record->kinv = kinv != NULL ? BN_dup(kinv) : NULL;
        record->r = r != NULL ? BN_dup(r) : NULL;
        if (record->digest == NULL || (kinv != NULL && record->kinv == NULL)
            || (r != NULL && record->r == NULL)) {
            sa_record_release(&record->base);
            record = NULL;
        }
    }
    if (record == NULL) {
        signature = software.sign_sig(digest, digest_length, kinv, r, key);
        sa_stats_note_inline(SA_ALG_ECDSA_SIGN, signature != NULL);
        return signature;
    }
    signature = sa_record_run(&record->base) ? record->signature : NULL;
    record->signature = NULL;
    sa_record_release(&record->base);
    return signature;
}

static int ec_sign_setup(EC_KEY *key, BN_CTX *bn_ctx, BIGNUM **kinv, BIGNUM **r)
{
    ec_record *record = ec_record_new(SA_ALG_ECDSA_SIGN_SETUP, key);
    int ok;

    if (record == NULL) {
        ok = software.sign_setup(key, bn_ctx, kinv, r);
        sa_stats_note_inline(SA_ALG_ECDSA_SIGN_SETUP, ok);
        return ok;
    }
    ok = sa_record_run(&record->base);
    if (ok) {
        BN_clear_free(*kinv);
        BN_clear_free(*r);
        *kinv = record->kinv;
        *r = record->r;
        record->kinv = NULL;
        record->r = NULL;
    }
    sa_record_release(&record->base);
    return ok;
}

/* One method for the life of the process, like the RSA method. */
static void create_ec_method(void)
{
    const EC_KEY_METHOD *openssl = EC_KEY_OpenSSL();
    EC_KEY_METHOD *method;

    EC_KEY_METHOD_get_keygen(openssl, &software.keygen);
    EC_KEY_METHOD_get_compute_key(openssl, &software.compute_key);
    EC_KEY_METHOD_get_sign(openssl, &software.sign, &software.sign_setup,
                           &software.sign_sig);
    if (software.keygen == NULL || software.compute_key == NULL
        || software.sign == NULL || software.sign_setup == NULL
        || software.sign_sig == NULL
        || (method = EC_KEY_METHOD_new(openssl)) == NULL)
        return;
    EC_KEY_METHOD_set_keygen(method, ec_keygen);
    EC_KEY_METHOD_set_compute_key(method, ec_compute_key);
    EC_KEY_METHOD_set_sign(method, software.sign, ec_sign_setup, ec_sign_sig);
    ec_method = method;
}

int sa_ec_bind(ENGINE *engine)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, create_ec_method);
    return ec_method != NULL && ENGINE_set_EC(engine, ec_method);
}
