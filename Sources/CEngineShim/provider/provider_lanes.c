/*
 * Life of one provider RSA sign in lanes: OpenSSL calls our sign_init
 * trampoline -> sa_lanes_note_key remembers the context's key data -> our
 * sign trampoline makes a record, and sa_lanes_attach gives it the RSA-2048
 * lane class (the key's size), the padding and DigestInfo prefix the
 * context is set to -> a worker that finds like records queued calls
 * sa_provider_compute_lanes -> each key's numbers are read with the target's
 * export into an RSA of our own, the input is padded as OpenSSL pads it,
 * raised in one 8-lane call and checked with the public key in another ->
 * each signature goes into its record's output. A lane that fails anywhere
 * is computed by the target's own sign.
 */
#include "provider_lanes.h"
#include "lane_inputs.h"
#include "multibuffer.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

int sa_first_name_is(const char *names, const char *name)
{
    size_t length = strlen(name);
    return strncmp(names, name, length) == 0 && (names[length] == '\0' || names[length] == ':');
}

/* ---- The target's key managers ----------------------------------------- */

typedef enum key_type { KEY_RSA, KEY_EC, KEY_X25519, KEY_TYPES } key_type;

static const char *const key_type_names[KEY_TYPES] = { "RSA", "EC", "X25519" };
typedef void *(*new_key_fn)(void *provctx);
typedef int (*import_key_fn)(void *keydata, int selection, const OSSL_PARAM params[]);
typedef void (*free_key_fn)(void *keydata);

static struct {
    export_fn export_key;
    get_params_fn get_params;
    new_key_fn new_key;           /* key generation in lanes: a key made of the lanes' numbers */
    import_key_fn import_key;
    free_key_fn free_key;
} key_managers[KEY_TYPES];

void sa_lanes_note_key_manager(const char *names, const OSSL_DISPATCH *functions)
{
    int type;

    for (type = 0; type < KEY_TYPES; type++) {
        if (!sa_first_name_is(names, key_type_names[type]))
            continue;
        for (; functions->function_id != 0; functions++) {
            if (functions->function_id == OSSL_FUNC_KEYMGMT_EXPORT)
                key_managers[type].export_key = (export_fn)functions->function;
            else if (functions->function_id == OSSL_FUNC_KEYMGMT_GET_PARAMS)
                key_managers[type].get_params = (get_params_fn)functions->function;
            else if (functions->function_id == OSSL_FUNC_KEYMGMT_NEW)
                key_managers[type].new_key = (new_key_fn)functions->function;
            else if (functions->function_id == OSSL_FUNC_KEYMGMT_IMPORT)
                key_managers[type].import_key = (import_key_fn)functions->function;
            else if (functions->function_id == OSSL_FUNC_KEYMGMT_FREE)
                key_managers[type].free_key = (free_key_fn)functions->function;
        }
        return;
    }
}

static int curve_nid(const char *name)
{
    int nid = EC_curve_nist2nid(name);
    return nid != NID_undef ? nid : OBJ_sn2nid(name);
}

/* ---- Reading a key's numbers with the target's export ---------------- */

typedef struct exported_key {
    BIGNUM *numbers[8];            /* RSA: n e d p q dP dQ qInv; EC: d, or the point's x and y */
    int extra_primes;
    unsigned char octets[SA_EC_LANE_MAX_BYTES * 2 + 1];   /* EC public point; X25519 key */
    size_t octets_length;
    int curve;
} exported_key;

static const char *const rsa_names[8] = {
    OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
    OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
    OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
};

static int take_rsa(const OSSL_PARAM params[], void *arg)
{
    exported_key *key = arg;
    int i;

    for (i = 0; i < 8; i++) {
        const OSSL_PARAM *param = OSSL_PARAM_locate_const(params, rsa_names[i]);
        if (param == NULL || !OSSL_PARAM_get_BN(param, &key->numbers[i]))
            return 0;
    }
    key->extra_primes = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_FACTOR3) != NULL;
    return 1;
}

static int take_octets(const OSSL_PARAM *param, exported_key *key)
{
    const void *octets;

    if (param == NULL || !OSSL_PARAM_get_octet_string_ptr(param, &octets, &key->octets_length)
        || key->octets_length > sizeof(key->octets))
        return 0;
    memcpy(key->octets, octets, key->octets_length);
    return 1;
}

/* EC: the curve, and the private key or the public point (whichever was asked for). */
static int take_ec(const OSSL_PARAM params[], void *arg)
{
    exported_key *key = arg;
    const OSSL_PARAM *group = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME);
    const OSSL_PARAM *private_key = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY);
    const char *name = NULL;

    if (group == NULL || !OSSL_PARAM_get_utf8_string_ptr(group, &name))
        return 0;
    key->curve = curve_nid(name);
    if (private_key != NULL)
        return OSSL_PARAM_get_BN(private_key, &key->numbers[0]);
    return take_octets(OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY), key);
}

static int take_x25519(const OSSL_PARAM params[], void *arg)
{
    const OSSL_PARAM *private_key = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY);

    return take_octets(private_key != NULL ? private_key
                       : OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY), arg);
}

static void forget_exported(exported_key *key)
{
    int i;

    for (i = 0; i < 8; i++)
        BN_clear_free(key->numbers[i]);
    OPENSSL_cleanse(key, sizeof(*key));
}

/* An RSA of our own with the key's numbers; NULL if it has more than two primes. */
static RSA *exported_rsa(const call_record *record)
{
    exported_key key = { 0 };
    BIGNUM **n = key.numbers;
    RSA *rsa = NULL;

    if (record->lanes.export_key(record->lanes.keydata, OSSL_KEYMGMT_SELECT_KEYPAIR, take_rsa, &key)
        && !key.extra_primes && (rsa = RSA_new()) != NULL
        && RSA_set0_key(rsa, n[0], n[1], n[2]) && (n[0] = n[1] = n[2] = NULL, 1)
        && RSA_set0_factors(rsa, n[3], n[4]) && (n[3] = n[4] = NULL, 1)
        && RSA_set0_crt_params(rsa, n[5], n[6], n[7]) && (n[5] = n[6] = n[7] = NULL, 1)) {
        forget_exported(&key);
        return rsa;
    }
    RSA_free(rsa);
    forget_exported(&key);
    return NULL;
}

/* ---- Which key each operation context holds ------------------------------ */

/*
 * A context keeps its key until it is initialised again or freed, so what
 * the export gave is kept with it: a context signing many times (openssl
 * speed's, an application's own) reads its key once.
 */
typedef struct known_context {
    void *ctx;
    void *keydata;
    void *peer;
    sa_lane_class lane_class;       /* of keydata, once asked; SA_LANES_NONE until then */
    RSA *rsa;                       /* read from keydata, for RSA lanes */
    exported_key *own, *peer_key;   /* read from keydata and peer, for EC and X25519 lanes */
    EVP_MD_CTX *digest;             /* digest-sign: ours, of the data so far */
    void *provctx;                  /* key generation: where its keys are made */
    int curve;                      /* key generation, EC: the curve set, NID_undef if none yet */
    int unusual;                    /* key generation: set to something the lanes do not make */
    int parameters_only;            /* key generation: of parameters, not a key pair */
    struct known_context *next;
} known_context;

static void drop_exported(exported_key **key)
{
    if (*key != NULL) {
        forget_exported(*key);
        OPENSSL_free(*key);
        *key = NULL;
    }
}

static void drop_own(known_context *entry)
{
    EVP_MD_CTX_free(entry->digest);
    entry->digest = NULL;
    entry->lane_class = SA_LANES_NONE;
    RSA_free(entry->rsa);
    entry->rsa = NULL;
    drop_exported(&entry->own);
}

#define BUCKETS 1024
static known_context *buckets[BUCKETS];
static pthread_mutex_t contexts_lock = PTHREAD_MUTEX_INITIALIZER;

static known_context **link_of(void *ctx)
{
    known_context **link = &buckets[((uintptr_t)ctx >> 4) % BUCKETS];

    while (*link != NULL && (*link)->ctx != ctx)
        link = &(*link)->next;
    return link;
}

/* Under the lock: the context's entry, made if absent (NULL if out of memory). */
static known_context *entry_of(void *ctx)
{
    known_context **link = link_of(ctx);

    if (*link == NULL && (*link = OPENSSL_zalloc(sizeof(**link))) != NULL)
        (*link)->ctx = ctx;
    return *link;
}

/* Under the lock: the context's entry, holding `keydata` and nothing read from an earlier key. */
static known_context *entry_for_key(void *ctx, void *keydata)
{
    known_context *entry = entry_of(ctx);

    if (entry != NULL) {
        drop_own(entry);
        drop_exported(&entry->peer_key);
        entry->keydata = keydata;
        entry->peer = NULL;
    }
    return entry;
}

void sa_lanes_note_key(void *ctx, void *keydata)
{
    pthread_mutex_lock(&contexts_lock);
    entry_for_key(ctx, keydata);
    pthread_mutex_unlock(&contexts_lock);
}

void sa_lanes_note_peer(void *ctx, void *peer)
{
    known_context *entry;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = *link_of(ctx)) != NULL) {
        drop_exported(&entry->peer_key);
        entry->peer = peer;
    }
    pthread_mutex_unlock(&contexts_lock);
}

/* The digest the context names; NULL for none or one we cannot make. */
static const EVP_MD *context_digest(void *ctx, get_params_fn get_ctx_params, const char *parameter)
{
    char name[64] = "";
    OSSL_PARAM params[] = { OSSL_PARAM_utf8_string(parameter, name, sizeof(name)), OSSL_PARAM_END };

    if (get_ctx_params == NULL || !get_ctx_params(ctx, params) || name[0] == '\0')
        return NULL;
    return EVP_get_digestbyname(name);
}

void sa_lanes_note_digest_sign(void *ctx, void *keydata, get_params_fn get_ctx_params)
{
    const EVP_MD *md = context_digest(ctx, get_ctx_params, OSSL_SIGNATURE_PARAM_DIGEST);
    EVP_MD_CTX *digest = md != NULL ? EVP_MD_CTX_new() : NULL;
    known_context *entry;

    if (digest != NULL && !EVP_DigestInit_ex(digest, md, NULL)) {
        EVP_MD_CTX_free(digest);
        digest = NULL;
    }
    ERR_clear_error();
    pthread_mutex_lock(&contexts_lock);
    if ((entry = entry_for_key(ctx, keydata)) != NULL) {
        entry->digest = digest;
        digest = NULL;
    }
    pthread_mutex_unlock(&contexts_lock);
    EVP_MD_CTX_free(digest);
}

/* Only the thread using the context updates or frees its digest: used outside the lock. */
static EVP_MD_CTX *running_digest(void *ctx)
{
    known_context *entry;
    EVP_MD_CTX *digest = NULL;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = *link_of(ctx)) != NULL)
        digest = entry->digest;
    pthread_mutex_unlock(&contexts_lock);
    return digest;
}

void sa_lanes_digest_update(void *ctx, const unsigned char *data, size_t length)
{
    EVP_MD_CTX *digest = running_digest(ctx);

    if (digest != NULL && !EVP_DigestUpdate(digest, data, length)) {
        sa_lanes_forget(ctx);      /* no digest of ours, no lanes: the target signs */
        ERR_clear_error();
    }
}

/*
 * Only a curve (EC) and the properties are settings the lanes make keys
 * with; anything else (a seed for DHKEM, an encoding, ...) is the target's.
 */
static void note_settings(known_context *entry, const OSSL_PARAM params[])
{
    const OSSL_PARAM *param;
    const char *name;

    for (param = params; param != NULL && param->key != NULL; param++) {
        if (strcmp(param->key, OSSL_PKEY_PARAM_GROUP_NAME) == 0
            && OSSL_PARAM_get_utf8_string_ptr(param, &name))
            entry->curve = curve_nid(name);
        else if (strcmp(param->key, OSSL_KDF_PARAM_PROPERTIES) != 0)
            entry->unusual = 1;
    }
}

void sa_lanes_note_generation(void *genctx, void *provctx, int selection, const OSSL_PARAM params[])
{
    known_context *entry;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = entry_of(genctx)) != NULL) {
        entry->provctx = provctx;
        entry->curve = NID_undef;
        entry->unusual = 0;
        entry->parameters_only = (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0;
        note_settings(entry, params);
    }
    pthread_mutex_unlock(&contexts_lock);
}

int sa_lanes_makes_parameters_only(void *genctx)
{
    known_context *entry;
    int parameters_only;

    pthread_mutex_lock(&contexts_lock);
    parameters_only = (entry = *link_of(genctx)) != NULL && entry->parameters_only;
    pthread_mutex_unlock(&contexts_lock);
    return parameters_only;
}

void sa_lanes_note_generation_params(void *genctx, const OSSL_PARAM params[])
{
    known_context *entry;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = *link_of(genctx)) != NULL)
        note_settings(entry, params);
    pthread_mutex_unlock(&contexts_lock);
}

/* A template (a TLS server's peer parameters) gives its curve. */
void sa_lanes_note_generation_template(void *genctx, void *template_keydata)
{
    char group[64] = "";
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group)), OSSL_PARAM_END
    };
    int ok = key_managers[KEY_EC].get_params != NULL && template_keydata != NULL
        && key_managers[KEY_EC].get_params(template_keydata, params) && group[0] != '\0';
    known_context *entry;

    ERR_clear_error();
    pthread_mutex_lock(&contexts_lock);
    if ((entry = *link_of(genctx)) != NULL) {
        if (ok)
            entry->curve = curve_nid(group);
        else
            entry->unusual = 1;
    }
    pthread_mutex_unlock(&contexts_lock);
}

void sa_lanes_forget(void *ctx)
{
    known_context **link, *entry;

    pthread_mutex_lock(&contexts_lock);
    link = link_of(ctx);
    if ((entry = *link) != NULL)
        *link = entry->next;
    pthread_mutex_unlock(&contexts_lock);
    if (entry != NULL) {
        drop_own(entry);
        drop_exported(&entry->peer_key);
        OPENSSL_free(entry);
    }
}

void sa_lanes_copy(void *from, void *to)
{
    known_context *source, *copy;

    pthread_mutex_lock(&contexts_lock);
    if ((source = *link_of(from)) != NULL && (copy = entry_of(to)) != NULL) {
        copy->keydata = source->keydata;
        copy->peer = source->peer;
        if (source->digest != NULL && (copy->digest = EVP_MD_CTX_new()) != NULL
            && !EVP_MD_CTX_copy_ex(copy->digest, source->digest)) {
            EVP_MD_CTX_free(copy->digest);
            copy->digest = NULL;
        }
    }
    pthread_mutex_unlock(&contexts_lock);
}

static int known_keys(void *ctx, void **keydata, void **peer, sa_lane_class *lane_class)
{
    known_context *entry;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = *link_of(ctx)) != NULL) {
        *keydata = entry->keydata;
        *peer = entry->peer;
        *lane_class = entry->lane_class;
    }
    pthread_mutex_unlock(&contexts_lock);
    return entry != NULL && *keydata != NULL;
}

static void note_lane_class(void *ctx, void *keydata, sa_lane_class lane_class)
{
    known_context *entry;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = *link_of(ctx)) != NULL && entry->keydata == keydata)
        entry->lane_class = lane_class;
    pthread_mutex_unlock(&contexts_lock);
}

/* A copy of what the export gave: the numbers duplicated, the rest as is. */
static int copy_exported(const exported_key *from, exported_key *to)
{
    int i;

    *to = *from;
    for (i = 0; i < 8; i++)
        if (from->numbers[i] != NULL && (to->numbers[i] = BN_dup(from->numbers[i])) == NULL) {
            while (--i >= 0)
                BN_clear_free(to->numbers[i]);
            OPENSSL_cleanse(to, sizeof(*to));
            return 0;
        }
    return 1;
}

/* The entry of the record's context, if it still holds this key (or peer); under the lock. */
static known_context *entry_holding(const call_record *record, int peer_side)
{
    known_context *entry = *link_of(record->ctx);
    void *keydata = peer_side ? record->lanes.peer : record->lanes.keydata;

    return entry != NULL && (peer_side ? entry->peer : entry->keydata) == keydata ? entry : NULL;
}

typedef int (*complete_fn)(exported_key *key, const void *arg);

/*
 * The numbers of the record's key (or its peer), read with the target's
 * export once per context; `complete`, if any, adds to what the export gave
 * (once, before it is kept).
 */
static int read_key(const call_record *record, int peer_side, int selection, OSSL_CALLBACK *take,
                    exported_key *key, complete_fn complete, const void *arg)
{
    known_context *entry;
    exported_key **cached, *copy;
    int found = 0;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = entry_holding(record, peer_side)) != NULL
        && *(cached = peer_side ? &entry->peer_key : &entry->own) != NULL)
        found = copy_exported(*cached, key);
    pthread_mutex_unlock(&contexts_lock);
    if (found)
        return 1;
    if (!record->lanes.export_key(peer_side ? record->lanes.peer : record->lanes.keydata,
                                  selection, take, key)
        || (complete != NULL && !complete(key, arg)))
        return 0;
    if ((copy = OPENSSL_zalloc(sizeof(*copy))) == NULL || !copy_exported(key, copy)) {
        OPENSSL_free(copy);
        return 1;
    }
    pthread_mutex_lock(&contexts_lock);
    if ((entry = entry_holding(record, peer_side)) != NULL
        && *(cached = peer_side ? &entry->peer_key : &entry->own) == NULL) {
        *cached = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&contexts_lock);
    if (copy != NULL)
        drop_exported(&copy);
    return 1;
}

/* An RSA of our own with the record's key's numbers, made once per context; the caller frees it. */
static RSA *read_rsa(const call_record *record)
{
    known_context *entry;
    RSA *rsa = NULL;

    pthread_mutex_lock(&contexts_lock);
    if ((entry = entry_holding(record, 0)) != NULL && entry->rsa != NULL && RSA_up_ref(entry->rsa))
        rsa = entry->rsa;
    pthread_mutex_unlock(&contexts_lock);
    if (rsa != NULL || (rsa = exported_rsa(record)) == NULL)
        return rsa;
    pthread_mutex_lock(&contexts_lock);
    if ((entry = entry_holding(record, 0)) != NULL && entry->rsa == NULL && RSA_up_ref(rsa))
        entry->rsa = rsa;
    pthread_mutex_unlock(&contexts_lock);
    return rsa;
}

/* ---- Which records qualify --------------------------------------------- */

/* DigestInfo prefixes of RFC 8017 (section 9.2, note 1), by digest. */
typedef struct digest_info {
    int nid;
    size_t length;
    unsigned char prefix[19];
    size_t prefix_length;
} digest_info;

static const digest_info digest_infos[] = {
    { NID_sha1, 20, { 0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
                      0x04, 0x14 }, 15 },
    { NID_sha224, 28, { 0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                        0x02, 0x04, 0x05, 0x00, 0x04, 0x1c }, 19 },
    { NID_sha256, 32, { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                        0x02, 0x01, 0x05, 0x00, 0x04, 0x20 }, 19 },
    { NID_sha384, 48, { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                        0x02, 0x02, 0x05, 0x00, 0x04, 0x30 }, 19 },
    { NID_sha512, 64, { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                        0x02, 0x03, 0x05, 0x00, 0x04, 0x40 }, 19 },
};

/* The digest a context names ("" for none); NULL: one the lanes do not know. */
static const digest_info *named_digest(const char *name, const digest_info *none)
{
    const EVP_MD *md;
    size_t i;
    int nid;

    if (name[0] == '\0')
        return none;
    /* By any of its names ("SHA256", "SHA2-256", "sha256"): OpenSSL's name map knows them all. */
    md = EVP_get_digestbyname(name);
    nid = md != NULL ? EVP_MD_get_type(md) : NID_undef;
    for (i = 0; i < sizeof(digest_infos) / sizeof(digest_infos[0]); i++)
        if (digest_infos[i].nid == nid)
            return &digest_infos[i];
    return NULL;
}

/* The key's size in bits, or its curve's lane class, from the target's key manager. */
static sa_lane_class key_lane_class(key_type type, void *keydata)
{
    char group[64] = "";
    int bits = 0;
    OSSL_PARAM params[2] = { OSSL_PARAM_END, OSSL_PARAM_END };

    if (key_managers[type].export_key == NULL || key_managers[type].get_params == NULL)
        return SA_LANES_NONE;
    switch (type) {
    case KEY_RSA:
        params[0] = OSSL_PARAM_construct_int(OSSL_PKEY_PARAM_BITS, &bits);
        if (!key_managers[type].get_params(keydata, params))
            return SA_LANES_NONE;
        return bits == 2048 ? SA_LANES_RSA2048 : bits == 3072 ? SA_LANES_RSA3072
            : bits == 4096 ? SA_LANES_RSA4096 : SA_LANES_NONE;
    case KEY_EC:
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group));
        if (!key_managers[type].get_params(keydata, params))
            return SA_LANES_NONE;
        return sa_ec_lane_class(curve_nid(group));
    default:
        return SA_LANES_X25519;
    }
}

/* The modulus size of an RSA lane class, in bytes. */
static int rsa_lane_bytes(sa_lane_class lane_class)
{
    return lane_class == SA_LANES_RSA2048 ? 256 : lane_class == SA_LANES_RSA3072 ? 384 : 512;
}

/* What the private key signs: the record's input, or the digest we made of it. */
static const unsigned char *signed_input(const call_record *record, size_t *length)
{
    *length = record->lanes.digested ? record->lanes.digest_length : record->input_length;
    return record->lanes.digested ? record->lanes.digest : record->input;
}

/*
 * RSA PSS: the context's digest (set), mask digest (or the same) and a salt
 * length OpenSSL's public padding function takes (-1 digest, -2 auto, -3
 * max, or a length).
 */
static int rsa_pss_qualifies(call_record *record, get_params_fn get_ctx_params, const char *digest,
                             size_t signed_length)
{
    int salt_length = 0;
    OSSL_PARAM params[] = { OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &salt_length), OSSL_PARAM_END };
    const EVP_MD *md = digest[0] != '\0' ? EVP_get_digestbyname(digest) : NULL;
    const EVP_MD *mgf1 = context_digest(record->ctx, get_ctx_params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);

    if (md == NULL || (size_t)EVP_MD_get_size(md) != signed_length
        || !get_ctx_params(record->ctx, params) || salt_length < -3)
        return 0;
    record->lanes.padding = RSA_PKCS1_PSS_PADDING;
    record->lanes.pss_digest = md;
    record->lanes.mgf1_digest = mgf1 != NULL ? mgf1 : md;
    record->lanes.salt_length = salt_length;
    return 1;
}

/* RSA sign: PKCS#1 v1.5 (with a known digest, or none), PSS, or no padding, of the right length. */
static int rsa_sign_qualifies(call_record *record, get_params_fn get_ctx_params, int size)
{
    static const digest_info no_digest = { NID_undef, 0, { 0 }, 0 };
    char digest[64] = "";
    int padding = 0;
    size_t length;
    const digest_info *info;
    OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &padding),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, digest, sizeof(digest)),
        OSSL_PARAM_END
    };

    signed_input(record, &length);
    if (!get_ctx_params(record->ctx, params) || record->output_capacity < (size_t)size)
        return 0;
    if (padding == RSA_PKCS1_PSS_PADDING)
        return rsa_pss_qualifies(record, get_ctx_params, digest, length);
    if (padding == RSA_NO_PADDING)
        return digest[0] == '\0' && length == (size_t)size;
    if (padding != RSA_PKCS1_PADDING || (info = named_digest(digest, &no_digest)) == NULL
        || (info != &no_digest && length != info->length))
        return 0;
    record->lanes.padding = padding;
    record->lanes.prefix = info->prefix;
    record->lanes.prefix_length = info->prefix_length;
    return 1;
}

/* ECDSA: random nonces (not RFC 6979's) and a digest of the named digest's length. */
static int ecdsa_qualifies(call_record *record, get_params_fn get_ctx_params)
{
    char digest[64] = "";
    unsigned int nonce_type = 0;
    const digest_info *info;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, digest, sizeof(digest)),
        OSSL_PARAM_uint("nonce-type", &nonce_type),
        OSSL_PARAM_END
    };
    size_t length;

    signed_input(record, &length);
    if (!get_ctx_params(record->ctx, params) || nonce_type != 0 || length == 0)
        return 0;
    info = named_digest(digest, NULL);
    return digest[0] == '\0' || (info != NULL && length == info->length);
}

/* ECDH: the plain shared x coordinate, no KDF, into a buffer that holds it. */
static int ecdh_qualifies(call_record *record, get_params_fn get_ctx_params, sa_lane_class curve)
{
    char kdf[32] = "";
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, kdf, sizeof(kdf)),
        OSSL_PARAM_END
    };
    size_t size = curve == SA_LANES_P256 ? 32 : curve == SA_LANES_P384 ? 48 : 66;

    return get_ctx_params(record->ctx, params) && kdf[0] == '\0' && record->output_capacity >= size;
}

/* Key generation: a context we saw made, set only to what the lanes make, and a key manager to make keys with. */
static void attach_generation(call_record *record)
{
    key_type type = record->base.public.algorithm == SA_ALG_X25519_KEYGEN ? KEY_X25519 : KEY_EC;
    sa_lane_class lane_class = SA_LANES_NONE;
    known_context *entry;

    if (record->base.public.algorithm != SA_ALG_X25519_KEYGEN
        && record->base.public.algorithm != SA_ALG_EC_KEYGEN)
        return;
    if (key_managers[type].new_key == NULL || key_managers[type].import_key == NULL
        || key_managers[type].free_key == NULL)
        return;
    pthread_mutex_lock(&contexts_lock);
    if ((entry = *link_of(record->ctx)) != NULL && entry->provctx != NULL && !entry->unusual) {
        lane_class = type == KEY_X25519 ? SA_LANES_X25519 : sa_ec_lane_class(entry->curve);
        record->lanes.provctx = entry->provctx;
    }
    pthread_mutex_unlock(&contexts_lock);
    if (lane_class != SA_LANES_NONE && sa_lanes_available(lane_class))
        sa_record_set_lane_class(&record->base, lane_class);
}

/* Digest-sign: the digest of the message, or of what went by; 0 if we have none. */
static int make_digest(call_record *record, lanes_input input, get_params_fn get_ctx_params)
{
    unsigned int length = 0;
    EVP_MD_CTX *running, *copy;
    const EVP_MD *md;
    int ok;

    if (input == LANES_SIGN_MESSAGE) {
        md = context_digest(record->ctx, get_ctx_params, OSSL_SIGNATURE_PARAM_DIGEST);
        ok = md != NULL && EVP_Digest(record->input, record->input_length, record->lanes.digest,
                                      &length, md, NULL);
    } else {
        running = running_digest(record->ctx);
        copy = running != NULL ? EVP_MD_CTX_new() : NULL;
        ok = copy != NULL && EVP_MD_CTX_copy_ex(copy, running)
            && EVP_DigestFinal_ex(copy, record->lanes.digest, &length);
        EVP_MD_CTX_free(copy);
    }
    record->lanes.digested = ok;
    record->lanes.digest_length = length;
    return ok;
}

void sa_lanes_attach(call_record *record, lanes_input input, get_params_fn get_ctx_params)
{
    sa_algorithm algorithm = record->base.public.algorithm;
    sa_lane_class lane_class;
    void *keydata = NULL, *peer = NULL;
    key_type type;
    int ok;

    if (input == LANES_GENERATE) {
        attach_generation(record);
        return;
    }
    switch (algorithm) {
    case SA_ALG_RSA_PRIVATE_ENCRYPT: type = KEY_RSA; break;
    case SA_ALG_ECDSA_SIGN:
    case SA_ALG_ECDH_DERIVE: type = KEY_EC; break;
    case SA_ALG_X25519_DERIVE: type = KEY_X25519; break;
    default: return;               /* X448 and the rest: one at a time */
    }
    if (!known_keys(record->ctx, &keydata, &peer, &lane_class))
        return;
    if (lane_class == SA_LANES_NONE) {
        if ((lane_class = key_lane_class(type, keydata)) == SA_LANES_NONE)
            return;
        note_lane_class(record->ctx, keydata, lane_class);
    }
    if (!sa_lanes_available(lane_class))
        return;
    if ((get_ctx_params == NULL && type != KEY_X25519)
        || ((input == LANES_SIGN_MESSAGE || input == LANES_SIGN_FINAL)
            && !make_digest(record, input, get_ctx_params))) {
        ERR_clear_error();
        return;
    }
    switch (algorithm) {
    case SA_ALG_RSA_PRIVATE_ENCRYPT:
        ok = rsa_sign_qualifies(record, get_ctx_params, rsa_lane_bytes(lane_class));
        break;
    case SA_ALG_ECDSA_SIGN:
        ok = ecdsa_qualifies(record, get_ctx_params);
        break;
    case SA_ALG_ECDH_DERIVE:
        ok = peer != NULL && ecdh_qualifies(record, get_ctx_params, lane_class);
        break;
    case SA_ALG_X25519_DERIVE:
        ok = peer != NULL && record->output_capacity >= SA_X25519_BYTES;
        break;
    default:
        ok = 0;
        break;
    }
    if (!ok) {
        ERR_clear_error();
        return;
    }
    record->lanes.export_key = key_managers[type].export_key;
    record->lanes.keydata = keydata;
    record->lanes.peer = peer;
    sa_record_set_lane_class(&record->base, lane_class);
}

/* ---- The lanes ----------------------------------------------------------- */

static void store_output(call_record *record, const unsigned char *output, size_t length)
{
    memcpy(record->output, output, length);
    record->output_length = length;
}

/* The record's result is in place: it is done, and counted as computed in lanes. */
static int done_in_lanes(call_record *record, int *in_lane)
{
    sa_record_store_lane(&record->base, 1, 0);
    *in_lane = 1;
    return 1;
}

typedef struct rsa_lane {
    RSA *rsa;
    unsigned char input[SA_RSA_LANE_MAX_BYTES];
    unsigned char padded[SA_RSA_LANE_MAX_BYTES];
    unsigned char exponentiated[SA_RSA_LANE_MAX_BYTES];
    unsigned char check[SA_RSA_LANE_MAX_BYTES];
} rsa_lane;

/* The number the lane raises: PSS-encoded here (random salt), else padded as the engine pads. */
static int rsa_lane_padding(const call_record *record, rsa_lane *lane, int length, int size)
{
    if (record->lanes.padding != RSA_PKCS1_PSS_PADDING)
        return sa_rsa_lane_input(lane->rsa, 1, record->lanes.padding, lane->input, length,
                                 lane->padded, size);
    return RSA_padding_add_PKCS1_PSS_mgf1(lane->rsa, lane->check, lane->input,
                                          record->lanes.pss_digest, record->lanes.mgf1_digest,
                                          record->lanes.salt_length)
        && sa_rsa_lane_input(lane->rsa, 1, RSA_NO_PADDING, lane->check, size, lane->padded, size);
}

static int rsa_sign_lanes(call_record *records[], int count, int in_lanes[])
{
    rsa_lane lanes[SA_MAX_LANES];
    const unsigned char *padded[SA_MAX_LANES] = { 0 }, *exponentiated[SA_MAX_LANES] = { 0 };
    unsigned char *to[SA_MAX_LANES] = { 0 }, *check[SA_MAX_LANES] = { 0 };
    const RSA *keys[SA_MAX_LANES] = { 0 };
    sa_lane_class lane_class = records[0]->base.public.lane_class;
    int size = rsa_lane_bytes(lane_class), bits = 8 * size, lane, used = 0;
    sa_lane_mask computed = 0;

    memset(lanes, 0, sizeof(lanes));
    for (lane = 0; lane < count; lane++) {
        call_record *record = records[lane];
        rsa_lane *l = &lanes[lane];
        size_t signed_length;
        const unsigned char *signed_bytes = signed_input(record, &signed_length);
        size_t length = record->lanes.prefix_length + signed_length;

        if (length > sizeof(l->input) || (l->rsa = read_rsa(record)) == NULL
            || sa_rsa_lane_class(l->rsa) != lane_class)
            continue;
        if (record->lanes.prefix_length > 0)
            memcpy(l->input, record->lanes.prefix, record->lanes.prefix_length);
        memcpy(l->input + record->lanes.prefix_length, signed_bytes, signed_length);
        if (!rsa_lane_padding(record, l, (int)length, size))
            continue;
        keys[lane] = l->rsa;
        padded[lane] = l->padded;
        to[lane] = l->exponentiated;
        exponentiated[lane] = l->exponentiated;
        check[lane] = l->check;
    }
    ERR_clear_error();
    for (lane = 0; lane < count && keys[lane] == NULL; lane++)
        ;
    if (lane < count) {
        computed = sa_mb_rsa_private(padded, to, keys, bits);
        computed &= sa_mb_rsa_public(exponentiated, check, keys, bits);
    }
    for (lane = 0; lane < count; lane++) {
        if (keys[lane] != NULL && (computed & (1u << lane)) != 0
            && CRYPTO_memcmp(lanes[lane].check, lanes[lane].padded, (size_t)size) == 0) {
            store_output(records[lane], lanes[lane].exponentiated, (size_t)size);
            used += done_in_lanes(records[lane], &in_lanes[lane]);
        }
        RSA_free(lanes[lane].rsa);
    }
    OPENSSL_cleanse(lanes, sizeof(lanes));
    return used;
}

/* The curves' groups, made once: for orders, sizes and point decoding. */
static EC_GROUP *groups[SA_LANES_CLASS_COUNT];
static pthread_once_t groups_once = PTHREAD_ONCE_INIT;

static void make_groups(void)
{
    groups[SA_LANES_P256] = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    groups[SA_LANES_P384] = EC_GROUP_new_by_curve_name(NID_secp384r1);
    groups[SA_LANES_P521] = EC_GROUP_new_by_curve_name(NID_secp521r1);
}

typedef struct ec_lane {
    BIGNUM *d, *nonce, *x, *y, *z;
    unsigned char message[SA_EC_LANE_MAX_BYTES];
    unsigned char r[SA_EC_LANE_MAX_BYTES], s[SA_EC_LANE_MAX_BYTES];
} ec_lane;

/* A peer's encoded point decoded once per context: its affine x and y in numbers[1] and [2]. */
static int decode_point(exported_key *key, const void *arg)
{
    const EC_GROUP *group = arg;
    EC_POINT *point = EC_POINT_new(group);
    int ok = point != NULL && key->curve == EC_GROUP_get_curve_name(group)
        && EC_POINT_oct2point(group, point, key->octets, key->octets_length, NULL)
        && (key->numbers[1] = BN_new()) != NULL && (key->numbers[2] = BN_new()) != NULL
        && EC_POINT_get_affine_coordinates(group, point, key->numbers[1], key->numbers[2], NULL);

    EC_POINT_free(point);
    return ok;
}

/*
 * The lane's private key, and for ECDH the peer's point (affine, z = 1); 0:
 * not in lanes. The key is exported whole: OpenSSL 3.0 exports no private
 * EC key without its public one.
 */
static int prepare_ec_lane(call_record *record, ec_lane *lane, const EC_GROUP *group, int size)
{
    exported_key own = { 0 }, peer = { 0 };
    int ok = read_key(record, 0, OSSL_KEYMGMT_SELECT_KEYPAIR | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS,
                      take_ec, &own, NULL, NULL)
        && own.curve == EC_GROUP_get_curve_name(group)
        && sa_ec_lane_private_key(group, own.numbers[0]) != NULL;

    if (ok) {
        lane->d = own.numbers[0];
        own.numbers[0] = NULL;
    }
    if (ok && record->base.public.algorithm == SA_ALG_ECDSA_SIGN) {
        size_t length;
        const unsigned char *digest = signed_input(record, &length);
        ok = (lane->nonce = sa_ec_nonce_and_message(group, lane->d, digest, (int)length,
                                                    lane->message, size)) != NULL;
    }
    else if (ok && (ok = read_key(record, 1, OSSL_KEYMGMT_SELECT_PUBLIC_KEY
                                  | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS, take_ec, &peer,
                                  decode_point, group)
                    && peer.curve == own.curve && (lane->z = BN_new()) != NULL && BN_one(lane->z))) {
        lane->x = peer.numbers[1];
        lane->y = peer.numbers[2];
        peer.numbers[1] = peer.numbers[2] = NULL;
    }
    forget_exported(&own);
    forget_exported(&peer);
    return ok;
}

static void free_ec_lane(ec_lane *lane)
{
    BN_clear_free(lane->d);
    BN_clear_free(lane->nonce);
    BN_free(lane->x);
    BN_free(lane->y);
    BN_free(lane->z);
    OPENSSL_cleanse(lane, sizeof(*lane));
}

/* (r, s) as DER into the record's buffer, if it holds it. */
static int finish_signature(call_record *record, const ec_lane *lane, int size)
{
    ECDSA_SIG *signature = sa_ecdsa_lane_signature(lane->r, lane->s, size);
    unsigned char *der = NULL;
    int length = signature != NULL ? i2d_ECDSA_SIG(signature, &der) : -1;
    int ok = length > 0 && (size_t)length <= record->output_capacity;

    if (ok)
        store_output(record, der, (size_t)length);
    OPENSSL_free(der);
    ECDSA_SIG_free(signature);
    return ok;
}

static int ec_lanes(call_record *records[], int count, int in_lanes[])
{
    sa_lane_class curve = records[0]->base.public.lane_class;
    sa_algorithm algorithm = records[0]->base.public.algorithm;
    const BIGNUM *d[SA_MAX_LANES] = { 0 }, *nonce[SA_MAX_LANES] = { 0 };
    const BIGNUM *x[SA_MAX_LANES] = { 0 }, *y[SA_MAX_LANES] = { 0 }, *z[SA_MAX_LANES] = { 0 };
    const unsigned char *message[SA_MAX_LANES] = { 0 };
    unsigned char *r[SA_MAX_LANES] = { 0 }, *s[SA_MAX_LANES] = { 0 };
    ec_lane lanes[SA_MAX_LANES];
    const EC_GROUP *group;
    int size, lane, filled = 0, used = 0;
    sa_lane_mask computed = 0;

    pthread_once(&groups_once, make_groups);
    if ((group = groups[curve]) == NULL)
        return 0;
    size = (EC_GROUP_get_degree(group) + 7) / 8;
    memset(lanes, 0, sizeof(lanes));
    for (lane = 0; lane < count; lane++) {
        if (!prepare_ec_lane(records[lane], &lanes[lane], group, size)) {
            free_ec_lane(&lanes[lane]);
            continue;
        }
        d[lane] = lanes[lane].d;
        nonce[lane] = lanes[lane].nonce;
        x[lane] = lanes[lane].x;
        y[lane] = lanes[lane].y;
        z[lane] = lanes[lane].z;
        message[lane] = lanes[lane].message;
        r[lane] = lanes[lane].r;
        s[lane] = lanes[lane].s;
        filled++;
    }
    ERR_clear_error();
    if (filled > 0)
        computed = algorithm == SA_ALG_ECDSA_SIGN ? sa_mb_ecdsa_sign(curve, r, s, message, nonce, d)
            : sa_mb_ecdh(curve, r, d, x, y, z);
    for (lane = 0; lane < count; lane++) {
        int ok = d[lane] != NULL && (computed & (1u << lane)) != 0;

        if (ok && algorithm == SA_ALG_ECDSA_SIGN)
            ok = finish_signature(records[lane], &lanes[lane], size);
        else if (ok)
            store_output(records[lane], lanes[lane].r, (size_t)size);
        if (ok)
            used += done_in_lanes(records[lane], &in_lanes[lane]);
        ERR_clear_error();
        free_ec_lane(&lanes[lane]);
    }
    return used;
}

static int x25519_lanes(call_record *records[], int count, int in_lanes[])
{
    unsigned char private_keys[SA_MAX_LANES][SA_X25519_BYTES], shared[SA_MAX_LANES][SA_X25519_BYTES];
    unsigned char peers[SA_MAX_LANES][SA_X25519_BYTES];
    const unsigned char *private_key[SA_MAX_LANES] = { 0 }, *peer[SA_MAX_LANES] = { 0 };
    unsigned char *out[SA_MAX_LANES] = { 0 };
    int lane, filled = 0, used = 0;
    sa_lane_mask computed = 0;

    for (lane = 0; lane < count; lane++) {
        call_record *record = records[lane];
        exported_key own = { 0 }, theirs = { 0 };
        int ok = read_key(record, 0, OSSL_KEYMGMT_SELECT_PRIVATE_KEY, take_x25519, &own, NULL, NULL)
            && own.octets_length == SA_X25519_BYTES
            && read_key(record, 1, OSSL_KEYMGMT_SELECT_PUBLIC_KEY, take_x25519, &theirs, NULL, NULL)
            && theirs.octets_length == SA_X25519_BYTES && sa_x25519_peer_in_lanes(theirs.octets);

        if (ok) {
            memcpy(private_keys[lane], own.octets, SA_X25519_BYTES);
            memcpy(peers[lane], theirs.octets, SA_X25519_BYTES);
            private_key[lane] = private_keys[lane];
            peer[lane] = peers[lane];
            out[lane] = shared[lane];
            filled++;
        }
        forget_exported(&own);
        forget_exported(&theirs);
    }
    ERR_clear_error();
    if (filled > 0)
        computed = sa_mb_x25519(out, private_key, peer);
    for (lane = 0; lane < count; lane++) {
        if (private_key[lane] == NULL || (computed & (1u << lane)) == 0
            || sa_all_zero(shared[lane], SA_X25519_BYTES))
            continue;
        store_output(records[lane], shared[lane], SA_X25519_BYTES);
        used += done_in_lanes(records[lane], &in_lanes[lane]);
    }
    OPENSSL_cleanse(private_keys, sizeof(private_keys));
    OPENSSL_cleanse(shared, sizeof(shared));
    return used;
}

/* ---- Key generation in lanes: the numbers here, the key the target's ---- */

/* A key of the target's key manager holding both halves: imported, so nothing is computed again. */
static void *made_key(key_type type, void *provctx, const OSSL_PARAM params[])
{
    void *keydata = key_managers[type].new_key(provctx);

    if (keydata != NULL && !key_managers[type].import_key(keydata, OSSL_KEYMGMT_SELECT_ALL, params)) {
        key_managers[type].free_key(keydata);
        keydata = NULL;
    }
    return keydata;
}

static int finish_ec_key(call_record *record, const EC_GROUP *group, const BIGNUM *d,
                         BIGNUM *x, BIGNUM *y, BIGNUM *z)
{
    unsigned char encoded[SA_EC_LANE_MAX_BYTES * 2 + 1];
    EC_POINT *point = EC_POINT_new(group);
    size_t length = 0;
    OSSL_PARAM_BLD *build = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    int ok = point != NULL && build != NULL
        && EC_POINT_set_Jprojective_coordinates_GFp(group, point, x, y, z, NULL)
        && (length = EC_POINT_point2oct(group, point, POINT_CONVERSION_UNCOMPRESSED, encoded,
                                        sizeof(encoded), NULL)) > 0
        && OSSL_PARAM_BLD_push_utf8_string(build, OSSL_PKEY_PARAM_GROUP_NAME,
                                           OBJ_nid2sn(EC_GROUP_get_curve_name(group)), 0)
        && OSSL_PARAM_BLD_push_BN(build, OSSL_PKEY_PARAM_PRIV_KEY, d)
        && OSSL_PARAM_BLD_push_octet_string(build, OSSL_PKEY_PARAM_PUB_KEY, encoded, length)
        && (params = OSSL_PARAM_BLD_to_param(build)) != NULL
        && (record->generated = made_key(KEY_EC, record->lanes.provctx, params)) != NULL;

    OSSL_PARAM_free(params);       /* d is a secure BIGNUM: its copy sits in a block this clear-frees */
    OSSL_PARAM_BLD_free(build);
    EC_POINT_free(point);
    return ok;
}

static int ec_keygen_lanes(call_record *records[], int count, int in_lanes[])
{
    sa_lane_class curve = records[0]->base.public.lane_class;
    BIGNUM *d[SA_MAX_LANES] = { 0 }, *x[SA_MAX_LANES] = { 0 }, *y[SA_MAX_LANES] = { 0 };
    BIGNUM *z[SA_MAX_LANES] = { 0 };
    const EC_GROUP *group;
    int lane, filled = 0, used = 0;
    sa_lane_mask computed = 0;

    pthread_once(&groups_once, make_groups);
    if ((group = groups[curve]) == NULL)
        return 0;
    for (lane = 0; lane < count; lane++) {
        if ((d[lane] = sa_ec_random_below_order(group)) == NULL || (x[lane] = BN_new()) == NULL
            || (y[lane] = BN_new()) == NULL || (z[lane] = BN_new()) == NULL) {
            BN_clear_free(d[lane]);
            d[lane] = NULL;
            continue;
        }
        filled++;
    }
    ERR_clear_error();
    if (filled > 0)
        computed = sa_mb_ec_public_key(curve, x, y, z, (const BIGNUM *const *)d);
    for (lane = 0; lane < count; lane++) {
        if (d[lane] != NULL && (computed & (1u << lane)) != 0
            && finish_ec_key(records[lane], group, d[lane], x[lane], y[lane], z[lane]))
            used += done_in_lanes(records[lane], &in_lanes[lane]);
        ERR_clear_error();
        BN_clear_free(d[lane]);
        BN_free(x[lane]);
        BN_free(y[lane]);
        BN_free(z[lane]);
    }
    return used;
}

/* X25519 key pairs: random private keys, clamped as OpenSSL clamps them; public keys X25519(k, 9). */
static int x25519_keygen_lanes(call_record *records[], int count, int in_lanes[])
{
    static const unsigned char base_point[SA_X25519_BYTES] = { 9 };
    unsigned char private_keys[SA_MAX_LANES][SA_X25519_BYTES], public_keys[SA_MAX_LANES][SA_X25519_BYTES];
    const unsigned char *private_key[SA_MAX_LANES] = { 0 }, *peer[SA_MAX_LANES] = { 0 };
    unsigned char *out[SA_MAX_LANES] = { 0 };
    int lane, filled = 0, used = 0;
    sa_lane_mask computed = 0;

    for (lane = 0; lane < count; lane++) {
        if (RAND_priv_bytes(private_keys[lane], SA_X25519_BYTES) <= 0)
            continue;
        private_keys[lane][0] &= 248;
        private_keys[lane][SA_X25519_BYTES - 1] &= 127;
        private_keys[lane][SA_X25519_BYTES - 1] |= 64;
        private_key[lane] = private_keys[lane];
        peer[lane] = base_point;
        out[lane] = public_keys[lane];
        filled++;
    }
    ERR_clear_error();
    if (filled > 0)
        computed = sa_mb_x25519(out, private_key, peer);
    for (lane = 0; lane < count; lane++) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, private_keys[lane], SA_X25519_BYTES),
            OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, public_keys[lane], SA_X25519_BYTES),
            OSSL_PARAM_END
        };
        if (private_key[lane] == NULL || (computed & (1u << lane)) == 0
            || (records[lane]->generated = made_key(KEY_X25519, records[lane]->lanes.provctx, params)) == NULL) {
            ERR_clear_error();
            continue;
        }
        used += done_in_lanes(records[lane], &in_lanes[lane]);
    }
    OPENSSL_cleanse(private_keys, sizeof(private_keys));
    return used;
}

int sa_provider_compute_lanes(sa_record *records[], int count, int in_lanes[])
{
    call_record **calls = (call_record **)records;

    switch (records[0]->public.algorithm) {
    case SA_ALG_RSA_PRIVATE_ENCRYPT: return rsa_sign_lanes(calls, count, in_lanes);
    case SA_ALG_ECDSA_SIGN:
    case SA_ALG_ECDH_DERIVE: return ec_lanes(calls, count, in_lanes);
    case SA_ALG_X25519_DERIVE: return x25519_lanes(calls, count, in_lanes);
    case SA_ALG_EC_KEYGEN: return ec_keygen_lanes(calls, count, in_lanes);
    case SA_ALG_X25519_KEYGEN: return x25519_keygen_lanes(calls, count, in_lanes);
    default: return 0;
    }
}
