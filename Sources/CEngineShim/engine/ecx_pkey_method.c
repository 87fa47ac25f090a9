/*
 * X25519 and X448 on the pool. They reach an engine only through an
 * EVP_PKEY_METHOD for their NIDs: ours is a copy of OpenSSL's built-in one
 * whose keygen and derive run the built-in functions on a worker. Derive
 * runs on a duplicate of the caller's EVP_PKEY_CTX that the record owns.
 * Keygen cannot (OpenSSL 3.0 refuses to duplicate a keygen context, and
 * leaks an ENGINE reference doing so); the built-in keygen only reads the
 * key type and library context from the caller's, which a paused job keeps
 * alive. A TLS 1.3
 * server asks for parameters first (EVP_PKEY_paramgen_init), so we give the
 * method a paramgen that only sets the key type.
 *
 * X25519 derives queued together run in one 8-lane call (compute_ecx_lanes);
 * a lane that fails there, as a low-order peer does, is derived again by the
 * built-in method, which gives default OpenSSL's error; so is a peer the
 * 8-lane code gets wrong (sa_x25519_peer_in_lanes). X25519 keygen stays
 * scalar: a legacy method must hand back a key that OpenSSL builds itself,
 * and every public way to build one computes the public key again.
 *
 * OpenSSL frees an ENGINE's EVP_PKEY_METHODs with the ENGINE, so each ENGINE
 * gets its own pair, kept in its ex_data.
 */
#include "ecx_pkey_method.h"
#include "lane_inputs.h"
#include "multibuffer.h"
#include "operation.h"

#include <pthread.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/proverr.h>

typedef int (*pkey_keygen_fn)(EVP_PKEY_CTX *ctx, EVP_PKEY *pkey);
typedef int (*pkey_derive_fn)(EVP_PKEY_CTX *ctx, unsigned char *key, size_t *key_length);

typedef struct ecx_variant {
    int nid;
    size_t secret_length;
    sa_algorithm keygen_algorithm;
    sa_algorithm derive_algorithm;
    pkey_keygen_fn software_keygen;
    pkey_derive_fn software_derive;
} ecx_variant;

static ecx_variant x25519 = { NID_X25519, 32, SA_ALG_X25519_KEYGEN, SA_ALG_X25519_DERIVE, NULL, NULL };
static ecx_variant x448 = { NID_X448, 56, SA_ALG_X448_KEYGEN, SA_ALG_X448_DERIVE, NULL, NULL };

/* One ENGINE's methods. */
typedef struct ecx_methods {
    EVP_PKEY_METHOD *x25519;
    EVP_PKEY_METHOD *x448;
} ecx_methods;

static int methods_index = -1;

#define ECX_MAX_SECRET 64

typedef struct ecx_record {
    sa_record base;
    const ecx_variant *variant;
    EVP_PKEY_CTX *ctx;        /* derive: our duplicate, holding both keys */
    EVP_PKEY_CTX *keygen_ctx; /* keygen: the caller's, read only */
    EVP_PKEY *pkey;           /* keygen: the caller's new key, filled in place */
    unsigned char secret[ECX_MAX_SECRET];
    size_t secret_length;
} ecx_record;

/*
 * The built-in method fails an all-zero X25519/X448 result (a low-order peer
 * point) without a word; default OpenSSL's provider reports it. Say what it says.
 */
static int software_derive(const ecx_variant *variant, EVP_PKEY_CTX *ctx,
                           unsigned char *key, size_t *key_length)
{
    unsigned long last_before = ERR_peek_last_error();
    int ok = variant->software_derive(ctx, key, key_length) > 0;

    if (!ok && ERR_peek_last_error() == last_before)
        ERR_raise(ERR_LIB_PROV, PROV_R_FAILED_DURING_DERIVATION);
    return ok;
}

static int compute_ecx(sa_record *base)
{
    ecx_record *record = (ecx_record *)base;
    int ok;

    if (base->public.algorithm == record->variant->keygen_algorithm) {
        ok = record->variant->software_keygen(record->keygen_ctx, record->pkey);
    } else {
        record->secret_length = sizeof(record->secret);
        ok = software_derive(record->variant, record->ctx, record->secret,
                             &record->secret_length);
    }
    return ok > 0;
}

/* Both may hold references to the ENGINE. */
static void release_ecx_inputs(sa_record *base)
{
    ecx_record *record = (ecx_record *)base;
    EVP_PKEY_CTX_free(record->ctx);
    EVP_PKEY_free(record->pkey);
    record->ctx = NULL;
    record->keygen_ctx = NULL;
    record->pkey = NULL;
}

static void destroy_ecx(sa_record *base)
{
    release_ecx_inputs(base);
    OPENSSL_clear_free(base, sizeof(ecx_record));
}

/* Our raw copies of the lane's keys; 0 if the keys do not give them. */
static int raw_x25519_keys(const ecx_record *record, unsigned char *private_key,
                           unsigned char *peer)
{
    size_t private_length = SA_X25519_BYTES, peer_length = SA_X25519_BYTES;

    if (EVP_PKEY_get_raw_private_key(EVP_PKEY_CTX_get0_pkey(record->ctx), private_key,
                                     &private_length) != 1
        || EVP_PKEY_get_raw_public_key(EVP_PKEY_CTX_get0_peerkey(record->ctx), peer,
                                       &peer_length) != 1
        || private_length != SA_X25519_BYTES || peer_length != SA_X25519_BYTES)
        return 0;
    return sa_x25519_peer_in_lanes(peer);
}

static int compute_ecx_lanes(sa_record *records[], int count, int in_lanes[])
{
    unsigned char private_keys[SA_MAX_LANES][SA_X25519_BYTES], peers[SA_MAX_LANES][SA_X25519_BYTES];
    unsigned char shared[SA_MAX_LANES][SA_X25519_BYTES];
    const unsigned char *private_key[SA_MAX_LANES] = { 0 }, *peer[SA_MAX_LANES] = { 0 };
    unsigned char *out[SA_MAX_LANES] = { 0 };
    int lane, used = 0, filled = 0;
    sa_lane_mask computed;

    for (lane = 0; lane < count; lane++) {
        ecx_record *record = (ecx_record *)records[lane];
        if (record->ctx == NULL
            || !raw_x25519_keys(record, private_keys[lane], peers[lane])) {
            ERR_clear_error();
            continue;
        }
        private_key[lane] = private_keys[lane];
        peer[lane] = peers[lane];
        out[lane] = shared[lane];
        filled++;
    }
    computed = filled > 0 ? sa_mb_x25519(out, private_key, peer) : 0;
    for (lane = 0; lane < count; lane++) {
        ecx_record *record = (ecx_record *)records[lane];
        if (private_key[lane] == NULL || (computed & (1u << lane)) == 0
            || sa_all_zero(shared[lane], SA_X25519_BYTES))
            continue;
        memcpy(record->secret, shared[lane], SA_X25519_BYTES);
        record->secret_length = SA_X25519_BYTES;
        sa_record_store_lane(&record->base, 1, 0);
        in_lanes[lane] = 1;
        used++;
    }
    OPENSSL_cleanse(private_keys, sizeof(private_keys));
    OPENSSL_cleanse(shared, sizeof(shared));
    return used;
}

static const sa_record_kind ecx_kind = {
    compute_ecx, release_ecx_inputs, destroy_ecx, compute_ecx_lanes
};

static ecx_record *ecx_record_new(const ecx_variant *variant, sa_algorithm algorithm)
{
    ecx_record *record;

    if (sa_compute_inline() || (record = OPENSSL_zalloc(sizeof(*record))) == NULL)
        return NULL;
    sa_record_init(&record->base, &ecx_kind, algorithm);
    record->variant = variant;
    return record;
}

static int ecx_keygen(const ecx_variant *variant, EVP_PKEY_CTX *ctx, EVP_PKEY *pkey)
{
    ecx_record *record = ecx_record_new(variant, variant->keygen_algorithm);
    int ok;

    if (record == NULL || !EVP_PKEY_up_ref(pkey)) {
        if (record != NULL)
            sa_record_release(&record->base);
        ok = variant->software_keygen(ctx, pkey) > 0;
        sa_stats_note_inline(variant->keygen_algorithm, ok);
        return ok;
    }
    record->keygen_ctx = ctx;
    record->pkey = pkey;
    ok = sa_record_run(&record->base);
    sa_record_release(&record->base);
    return ok;
}

static int ecx_derive(const ecx_variant *variant, EVP_PKEY_CTX *ctx,
                      unsigned char *key, size_t *key_length)
{
    ecx_record *record;
    int ok;

    if (key == NULL)            /* a length query: nothing to compute */
        return variant->software_derive(ctx, key, key_length);
    /* The built-in method writes a whole secret whatever the buffer's size. */
    if (*key_length < variant->secret_length) {
        ERR_raise(ERR_LIB_PROV, PROV_R_OUTPUT_BUFFER_TOO_SMALL);
        return 0;
    }
    if ((record = ecx_record_new(variant, variant->derive_algorithm)) != NULL
        && (record->ctx = EVP_PKEY_CTX_dup(ctx)) == NULL) {
        sa_record_release(&record->base);
        record = NULL;
    }
    if (record != NULL && variant == &x25519)
        sa_record_set_lane_class(&record->base, SA_LANES_X25519);
    if (record == NULL) {
        ok = software_derive(variant, ctx, key, key_length);
        sa_stats_note_inline(variant->derive_algorithm, ok);
        return ok;
    }
    ok = sa_record_run(&record->base);
    if (ok) {
        memcpy(key, record->secret, record->secret_length);
        *key_length = record->secret_length;
    }
    sa_record_release(&record->base);
    return ok;
}

static int x25519_keygen(EVP_PKEY_CTX *ctx, EVP_PKEY *pkey) { return ecx_keygen(&x25519, ctx, pkey); }
static int x448_keygen(EVP_PKEY_CTX *ctx, EVP_PKEY *pkey) { return ecx_keygen(&x448, ctx, pkey); }

static int x25519_derive(EVP_PKEY_CTX *ctx, unsigned char *key, size_t *key_length)
{
    return ecx_derive(&x25519, ctx, key, key_length);
}

static int x448_derive(EVP_PKEY_CTX *ctx, unsigned char *key, size_t *key_length)
{
    return ecx_derive(&x448, ctx, key, key_length);
}

/* Parameters of an X25519/X448 key are just its type. */
static int paramgen_init(EVP_PKEY_CTX *ctx) { (void)ctx; return 1; }
static int x25519_paramgen(EVP_PKEY_CTX *ctx, EVP_PKEY *pkey) { (void)ctx; return EVP_PKEY_set_type(pkey, NID_X25519); }
static int x448_paramgen(EVP_PKEY_CTX *ctx, EVP_PKEY *pkey) { (void)ctx; return EVP_PKEY_set_type(pkey, NID_X448); }

/* The built-in method keeps no per-context data, so a copy has nothing to copy. */
static int copy_context(EVP_PKEY_CTX *dst, const EVP_PKEY_CTX *src) { (void)dst; (void)src; return 1; }

/* The software functions of OpenSSL's built-in methods, looked up once. */
static int find_software(ecx_variant *variant)
{
    const EVP_PKEY_METHOD *builtin = EVP_PKEY_meth_find(variant->nid);
    int (*init)(EVP_PKEY_CTX *) = NULL;

    if (builtin == NULL)
        return 0;
    EVP_PKEY_meth_get_keygen(builtin, &init, &variant->software_keygen);
    EVP_PKEY_meth_get_derive(builtin, &init, &variant->software_derive);
    return variant->software_keygen != NULL && variant->software_derive != NULL;
}

static EVP_PKEY_METHOD *new_method(const ecx_variant *variant, pkey_keygen_fn keygen,
                                   pkey_derive_fn derive,
                                   int (*paramgen)(EVP_PKEY_CTX *, EVP_PKEY *))
{
    const EVP_PKEY_METHOD *builtin = EVP_PKEY_meth_find(variant->nid);
    int (*keygen_init)(EVP_PKEY_CTX *) = NULL;
    int (*derive_init)(EVP_PKEY_CTX *) = NULL;
    pkey_keygen_fn unused_keygen;
    pkey_derive_fn unused_derive;
    EVP_PKEY_METHOD *method = EVP_PKEY_meth_new(variant->nid, 0);

    if (method == NULL)
        return NULL;
    EVP_PKEY_meth_copy(method, builtin);
    EVP_PKEY_meth_get_keygen(builtin, &keygen_init, &unused_keygen);
    EVP_PKEY_meth_get_derive(builtin, &derive_init, &unused_derive);
    EVP_PKEY_meth_set_keygen(method, keygen_init, keygen);
    EVP_PKEY_meth_set_derive(method, derive_init, derive);
    EVP_PKEY_meth_set_paramgen(method, paramgen_init, paramgen);
    EVP_PKEY_meth_set_copy(method, copy_context);
    return method;
}

/* The methods themselves are OpenSSL's to free; only the holder is ours. */
static void free_holder(void *parent, void *holder, CRYPTO_EX_DATA *ad, int index,
                        long argl, void *argp)
{
    (void)parent; (void)ad; (void)index; (void)argl; (void)argp;
    OPENSSL_free(holder);
}

static void find_software_and_index(void)
{
    if (find_software(&x25519) && find_software(&x448))
        methods_index = ENGINE_get_ex_new_index(0, NULL, NULL, NULL, free_holder);
}

static int pkey_methods(ENGINE *engine, EVP_PKEY_METHOD **method, const int **nids, int nid)
{
    static const int supported[] = { NID_X25519, NID_X448 };
    const ecx_methods *methods = ENGINE_get_ex_data(engine, methods_index);

    if (method == NULL) {
        *nids = supported;
        return (int)(sizeof(supported) / sizeof(supported[0]));
    }
    *method = methods == NULL ? NULL
        : nid == NID_X25519 ? methods->x25519 : nid == NID_X448 ? methods->x448 : NULL;
    return *method != NULL;
}

int sa_ecx_bind(ENGINE *engine)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    ecx_methods *methods;

    pthread_once(&once, find_software_and_index);
    if (methods_index < 0 || (methods = OPENSSL_zalloc(sizeof(*methods))) == NULL)
        return 0;
    methods->x25519 = new_method(&x25519, x25519_keygen, x25519_derive, x25519_paramgen);
    methods->x448 = new_method(&x448, x448_keygen, x448_derive, x448_paramgen);
    if (methods->x25519 == NULL || methods->x448 == NULL
        || !ENGINE_set_ex_data(engine, methods_index, methods)) {
        EVP_PKEY_meth_free(methods->x25519);
        EVP_PKEY_meth_free(methods->x448);
        OPENSSL_free(methods);
        return 0;
    }
    return ENGINE_set_pkey_meths(engine, pkey_methods);
}
