/*
 * Elliptic-curve private-key operations on the pool, for every named curve:
 * key generation (an ECDHE handshake's ephemeral key), ECDH, and ECDSA
 * signing. The math is OpenSSL's own software EC_KEY_METHOD, run on a worker;
 * verification stays inline. ECDSA_sign reaches the pool through sign_sig.
 *
 * Each record holds its own references (key, peer point, nonce inputs), so a
 * worker never touches memory the caller may free; results are handed over
 * after the job resumes.
 *
 * On P-256, P-384 and P-521, like operations queued together run in one 8-lane call
 * (compute_ec_lanes): the private key or nonce is drawn as OpenSSL draws it,
 * the point multiplications run in lanes. A lane that fails there is
 * computed again by OpenSSL's software method, which gives it default
 * OpenSSL's error.
 */
#include "ec_key_method.h"
#include "lane_inputs.h"
#include "multibuffer.h"
#include "operation.h"

#include <pthread.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rand.h>

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

/* ---- Up to eight operations of one curve in one 8-lane call ------------- */

static sa_lane_class ec_lane_class(const EC_KEY *key)
{
    return sa_ec_lane_class(EC_GROUP_get_curve_name(EC_KEY_get0_group(key)));
}

static const BIGNUM *lane_private_key(const EC_KEY *key)
{
    return sa_ec_lane_private_key(EC_KEY_get0_group(key), EC_KEY_get0_private_key(key));
}

/* Per lane: what goes into the call, and what comes out. */
typedef struct ec_lane {
    const BIGNUM *d;                  /* the key's, or `drawn` */
    BIGNUM *drawn;                    /* keygen's new private key; a nonce */
    BIGNUM *x, *y, *z;                /* keygen's point; ECDH's peer (z = 1) */
    BIGNUM *kinv, *r;                 /* sign_setup */
    unsigned char message[SA_EC_LANE_MAX_BYTES];
    unsigned char out[SA_EC_LANE_MAX_BYTES], out_s[SA_EC_LANE_MAX_BYTES];
} ec_lane;

static void free_ec_lane(ec_lane *lane)
{
    BN_clear_free(lane->drawn);
    BN_free(lane->x);
    BN_free(lane->y);
    BN_free(lane->z);
    BN_clear_free(lane->kinv);
    BN_free(lane->r);
    OPENSSL_cleanse(lane, sizeof(*lane));
}

/* The lane's inputs; 0 if it goes to the software method. */
static int prepare_ec_lane(ec_record *record, ec_lane *lane, int size)
{
    const EC_GROUP *group = EC_KEY_get0_group(record->key);

    switch (record->base.public.algorithm) {
    case SA_ALG_EC_KEYGEN:
        lane->d = lane->drawn = sa_ec_random_below_order(group);
        return lane->d != NULL && (lane->x = BN_new()) != NULL
            && (lane->y = BN_new()) != NULL && (lane->z = BN_new()) != NULL;
    case SA_ALG_ECDH_DERIVE:
        lane->d = lane_private_key(record->key);
        return lane->d != NULL && (lane->x = BN_new()) != NULL && (lane->y = BN_new()) != NULL
            && (lane->z = BN_new()) != NULL && BN_one(lane->z)
            && EC_POINT_get_affine_coordinates(group, record->peer, lane->x, lane->y, NULL);
    case SA_ALG_ECDSA_SIGN:
        lane->d = lane_private_key(record->key);
        return lane->d != NULL
            && (lane->drawn = sa_ec_nonce_and_message(group, lane->d, record->digest,
                                                         record->digest_length, lane->message, size)) != NULL;
    case SA_ALG_ECDSA_SIGN_SETUP:
        lane->d = lane_private_key(record->key);
        return lane->d != NULL && (lane->drawn = sa_ec_random_below_order(group)) != NULL
            && (lane->kinv = BN_secure_new()) != NULL && (lane->r = BN_new()) != NULL;
    default:
        return 0;
    }
}

/* One call for every prepared lane; bit i set where lane i succeeded. */
static sa_lane_mask call_ec_lanes(sa_algorithm algorithm, sa_lane_class curve,
                                  ec_lane lanes[], const int prepared[])
{
    const BIGNUM *d[SA_MAX_LANES] = { 0 }, *drawn[SA_MAX_LANES] = { 0 };
    const BIGNUM *x[SA_MAX_LANES] = { 0 }, *y[SA_MAX_LANES] = { 0 }, *z[SA_MAX_LANES] = { 0 };
    BIGNUM *out_x[SA_MAX_LANES] = { 0 }, *out_y[SA_MAX_LANES] = { 0 }, *out_z[SA_MAX_LANES] = { 0 };
    BIGNUM *kinv[SA_MAX_LANES] = { 0 }, *r[SA_MAX_LANES] = { 0 };
    const unsigned char *message[SA_MAX_LANES] = { 0 };
    unsigned char *out[SA_MAX_LANES] = { 0 }, *out_s[SA_MAX_LANES] = { 0 };
    int i;

    for (i = 0; i < SA_MAX_LANES; i++) {
        if (!prepared[i])
            continue;
        d[i] = lanes[i].d;
        drawn[i] = lanes[i].drawn;
        x[i] = out_x[i] = lanes[i].x;
        y[i] = out_y[i] = lanes[i].y;
        z[i] = out_z[i] = lanes[i].z;
        kinv[i] = lanes[i].kinv;
        r[i] = lanes[i].r;
        message[i] = lanes[i].message;
        out[i] = lanes[i].out;
        out_s[i] = lanes[i].out_s;
    }
    switch (algorithm) {
    case SA_ALG_EC_KEYGEN: return sa_mb_ec_public_key(curve, out_x, out_y, out_z, d);
    case SA_ALG_ECDH_DERIVE: return sa_mb_ecdh(curve, out, d, x, y, z);
    case SA_ALG_ECDSA_SIGN: return sa_mb_ecdsa_sign(curve, out, out_s, message, drawn, d);
    case SA_ALG_ECDSA_SIGN_SETUP: return sa_mb_ecdsa_sign_setup(curve, kinv, r, drawn);
    default: return 0;
    }
}

static int finish_keygen_lane(ec_record *record, ec_lane *lane)
{
    const EC_GROUP *group = EC_KEY_get0_group(record->key);
    EC_POINT *point = EC_POINT_new(group);
    int ok = point != NULL
        && EC_POINT_set_Jprojective_coordinates_GFp(group, point, lane->x, lane->y, lane->z, NULL)
        && EC_KEY_set_private_key(record->key, lane->d)
        && EC_KEY_set_public_key(record->key, point);

    EC_POINT_free(point);
    return ok;
}

static int finish_ecdh_lane(ec_record *record, const ec_lane *lane, int size)
{
    if ((record->secret = OPENSSL_malloc((size_t)size)) == NULL)
        return 0;
    memcpy(record->secret, lane->out, (size_t)size);
    record->secret_length = (size_t)size;
    return 1;
}

static int finish_sign_lane(ec_record *record, const ec_lane *lane, int size)
{
    return (record->signature = sa_ecdsa_lane_signature(lane->out, lane->out_s, size)) != NULL;
}

static int finish_sign_setup_lane(ec_record *record, ec_lane *lane)
{
    if (BN_is_zero(lane->r))
        return 0;
    record->kinv = lane->kinv;
    record->r = lane->r;
    lane->kinv = lane->r = NULL;
    return 1;
}

static int finish_ec_lane(ec_record *record, ec_lane *lane, int size)
{
    switch (record->base.public.algorithm) {
    case SA_ALG_EC_KEYGEN: return finish_keygen_lane(record, lane);
    case SA_ALG_ECDH_DERIVE: return finish_ecdh_lane(record, lane, size);
    case SA_ALG_ECDSA_SIGN: return finish_sign_lane(record, lane, size);
    case SA_ALG_ECDSA_SIGN_SETUP: return finish_sign_setup_lane(record, lane);
    default: return 0;
    }
}

static int compute_ec_lanes(sa_record *records[], int count, int in_lanes[])
{
    ec_lane lanes[SA_MAX_LANES];
    int prepared[SA_MAX_LANES] = { 0 };
    ec_record *first = (ec_record *)records[0];
    sa_lane_class curve = first->base.public.lane_class;
    int size = (EC_GROUP_get_degree(EC_KEY_get0_group(first->key)) + 7) / 8;
    int lane, filled = 0, used = 0;
    sa_lane_mask computed = 0;

    memset(lanes, 0, sizeof(lanes));
    for (lane = 0; lane < count && size <= SA_EC_LANE_MAX_BYTES; lane++) {
        ec_record *record = (ec_record *)records[lane];
        prepared[lane] = ec_lane_class(record->key) == curve
            && prepare_ec_lane(record, &lanes[lane], size);
        if (!prepared[lane])
            ERR_clear_error();
        filled += prepared[lane];
    }
    if (filled > 0)
        computed = call_ec_lanes(first->base.public.algorithm, curve, lanes, prepared);
    for (lane = 0; lane < count; lane++) {
        ec_record *record = (ec_record *)records[lane];
        if (prepared[lane] && (computed & (1u << lane)) != 0
            && finish_ec_lane(record, &lanes[lane], size)) {
            sa_record_store_lane(&record->base, 1, 0);
            in_lanes[lane] = 1;
            used++;
        } else {
            ERR_clear_error();
        }
        free_ec_lane(&lanes[lane]);
    }
    return used;
}

static const sa_record_kind ec_kind = {
    compute_ec, release_ec_inputs, destroy_ec, compute_ec_lanes
};

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
    sa_record_set_lane_class(&record->base, ec_lane_class(key));
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
        if (kinv != NULL || r != NULL)    /* the caller's nonce: one scalar step */
            sa_record_set_lane_class(&record->base, SA_LANES_NONE);
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
