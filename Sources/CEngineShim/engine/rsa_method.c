/*
 * RSA private-key operations on the pool. The math is OpenSSL's own software
 * method, run on a worker thread; public-key operations stay inline.
 *
 * Life of one RSA sign inside an async job: the provider calls
 * RSA_private_encrypt -> rsa_private_encrypt below -> a record holding a copy
 * of the input and a reference to the key -> sa_record_run (async_job.c)
 * submits it to the Swift pool and pauses the job -> a worker runs
 * compute_rsa and wakes the job -> the result is copied out and the record,
 * with its secrets cleansed, released.
 *
 * When other signs of the same key size are queued, a worker may take up to
 * eight at once (compute_rsa_lanes): OpenSSL's padding functions per lane,
 * the exponentiation in one 8-lane call, every result checked with the
 * public key in 8 lanes. A lane that fails anywhere is computed again by
 * OpenSSL's software method, which gives it default OpenSSL's error.
 */
#include "rsa_method.h"
#include "lane_inputs.h"
#include "multibuffer.h"
#include "operation.h"

#include <pthread.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

typedef int (*rsa_private_fn)(int flen, const unsigned char *from,
                              unsigned char *to, RSA *rsa, int padding);

typedef struct rsa_record {
    sa_record base;
    rsa_private_fn software;
    RSA *rsa;
    int padding;
    int input_length;
    int result;               /* software's return: length, or -1 */
    size_t output_capacity;
    unsigned char *input;     /* both point into this allocation */
    unsigned char *output;
} rsa_record;

static RSA_METHOD *rsa_method;

static int compute_rsa(sa_record *base)
{
    rsa_record *record = (rsa_record *)base;
    record->result = record->software(record->input_length, record->input,
                                      record->output, record->rsa,
                                      record->padding);
    return record->result >= 0;
}

static void release_rsa_inputs(sa_record *base)
{
    rsa_record *record = (rsa_record *)base;
    RSA_free(record->rsa);
    record->rsa = NULL;
}

static void destroy_rsa(sa_record *base)
{
    rsa_record *record = (rsa_record *)base;
    size_t size = sizeof(*record) + (size_t)record->input_length
                  + record->output_capacity;
    release_rsa_inputs(base);
    OPENSSL_clear_free(record, size);
}

/* ---- Up to eight private operations in one 8-lane call ------------------ */

typedef struct rsa_lane_buffers {
    unsigned char padded[SA_RSA_LANE_MAX_BYTES];        /* what is raised to d */
    unsigned char exponentiated[SA_RSA_LANE_MAX_BYTES];
    unsigned char check[SA_RSA_LANE_MAX_BYTES];         /* exponentiated^e: must be padded */
} rsa_lane_buffers;

static int is_sign(const rsa_record *record)
{
    return record->base.public.algorithm == SA_ALG_RSA_PRIVATE_ENCRYPT;
}

/* Paddings whose lanes we form and finish; any other goes to the software method. */
static int padding_in_lanes(sa_algorithm algorithm, int padding)
{
    if (algorithm == SA_ALG_RSA_PRIVATE_ENCRYPT)
        return padding == RSA_PKCS1_PADDING || padding == RSA_X931_PADDING
            || padding == RSA_NO_PADDING;
    return padding == RSA_PKCS1_PADDING || padding == RSA_PKCS1_OAEP_PADDING
        || padding == RSA_NO_PADDING;
}

/* X9.31 signs with the smaller of s and n - s, as the software method does. */
static int x931_smaller(const unsigned char *exponentiated, unsigned char *to,
                        const RSA *rsa, int size)
{
    BIGNUM *s = BN_bin2bn(exponentiated, size, NULL), *other = BN_new();
    int ok = s != NULL && other != NULL && BN_sub(other, RSA_get0_n(rsa), s)
        && BN_bn2binpad(BN_cmp(s, other) > 0 ? other : s, to, size) == size;

    BN_clear_free(s);
    BN_clear_free(other);
    return ok;
}

/*
 * Decryption checks its padding with OpenSSL's constant-time functions in
 * the software method's order, and always raises the padding error: a good
 * padding drops it again by arithmetic, not by a branch.
 */
static void finish_rsa_lane(rsa_record *record, const unsigned char *exponentiated, int size)
{
    unsigned int good;

    if (is_sign(record)) {
        int ok = 1;
        if (record->padding == RSA_X931_PADDING)
            ok = x931_smaller(exponentiated, record->output, record->rsa, size);
        else
            memcpy(record->output, exponentiated, (size_t)size);
        record->result = ok ? size : -1;
        sa_record_store_lane(&record->base, ok, 0);
        return;
    }
    switch (record->padding) {
    case RSA_PKCS1_PADDING:
        record->result = RSA_padding_check_PKCS1_type_2(record->output, size, exponentiated,
                                                        size, size);
        break;
    case RSA_PKCS1_OAEP_PADDING:
        record->result = RSA_padding_check_PKCS1_OAEP(record->output, size, exponentiated,
                                                      size, size, NULL, 0);
        break;
    default:
        memcpy(record->output, exponentiated, (size_t)size);
        record->result = size;
        break;
    }
    ERR_raise(ERR_LIB_RSA, RSA_R_PADDING_CHECK_FAILED);
    good = 1u & ~((unsigned int)record->result >> (sizeof(unsigned int) * 8 - 1));
    sa_record_store_lane(&record->base, (int)good, good);
}

static int compute_rsa_lanes(sa_record *records[], int count, int in_lanes[])
{
    rsa_lane_buffers lanes[SA_MAX_LANES];
    const unsigned char *padded[SA_MAX_LANES] = { 0 }, *exponentiated[SA_MAX_LANES] = { 0 };
    unsigned char *to[SA_MAX_LANES] = { 0 }, *check[SA_MAX_LANES] = { 0 };
    const RSA *keys[SA_MAX_LANES] = { 0 };
    int bits = RSA_bits(((rsa_record *)records[0])->rsa);
    int size = RSA_size(((rsa_record *)records[0])->rsa);
    int lane, used = 0, filled = 0;
    sa_lane_mask computed;

    if (size > SA_RSA_LANE_MAX_BYTES)
        return 0;
    for (lane = 0; lane < count; lane++) {
        rsa_record *record = (rsa_record *)records[lane];
        if (RSA_size(record->rsa) != size
            || !sa_rsa_lane_input(record->rsa, is_sign(record), record->padding, record->input,
                                  record->input_length, lanes[lane].padded, size)) {
            ERR_clear_error();
            continue;
        }
        keys[lane] = record->rsa;
        padded[lane] = lanes[lane].padded;
        to[lane] = lanes[lane].exponentiated;
        exponentiated[lane] = lanes[lane].exponentiated;
        check[lane] = lanes[lane].check;
        filled++;
    }
    if (filled > 0) {
        computed = sa_mb_rsa_private(padded, to, keys, bits);
        computed &= sa_mb_rsa_public(exponentiated, check, keys, bits);
        for (lane = 0; lane < count; lane++) {
            if (keys[lane] == NULL || (computed & (1u << lane)) == 0
                || CRYPTO_memcmp(lanes[lane].check, lanes[lane].padded, (size_t)size) != 0)
                continue;
            finish_rsa_lane((rsa_record *)records[lane], lanes[lane].exponentiated, size);
            in_lanes[lane] = 1;
            used++;
        }
    }
    OPENSSL_cleanse(lanes, sizeof(lanes));
    return used;
}

static const sa_record_kind rsa_kind = {
    compute_rsa, release_rsa_inputs, destroy_rsa, compute_rsa_lanes
};

static rsa_record *rsa_record_new(sa_algorithm algorithm, rsa_private_fn software,
                                  int flen, const unsigned char *from,
                                  RSA *rsa, int padding)
{
    size_t capacity = (size_t)RSA_size(rsa);
    rsa_record *record = OPENSSL_malloc(sizeof(*record) + (size_t)flen + capacity);

    if (record == NULL)
        return NULL;
    sa_record_init(&record->base, &rsa_kind, algorithm);
    record->software = software;
    record->rsa = rsa;
    RSA_up_ref(rsa);
    record->padding = padding;
    record->input_length = flen;
    record->result = -1;
    record->output_capacity = capacity;
    record->input = (unsigned char *)(record + 1);
    record->output = record->input + flen;
    memcpy(record->input, from, (size_t)flen);
    if (padding_in_lanes(algorithm, padding))
        sa_record_set_lane_class(&record->base, sa_rsa_lane_class(rsa));
    return record;
}

/* Inputs we cannot copy safely go to the software method here, which rejects
 * them exactly as default OpenSSL does. */
static int worth_offloading(int flen, const RSA *rsa)
{
    return RSA_get0_n(rsa) != NULL && flen >= 0 && flen <= RSA_size(rsa);
}

static int run_private_op(sa_algorithm algorithm, rsa_private_fn software,
                          int flen, const unsigned char *from,
                          unsigned char *to, RSA *rsa, int padding)
{
    rsa_record *record;
    int result;

    if (sa_compute_inline() || !worth_offloading(flen, rsa)
        || (record = rsa_record_new(algorithm, software, flen, from, rsa,
                                    padding)) == NULL) {
        result = software(flen, from, to, rsa, padding);
        sa_stats_note_inline(algorithm, result >= 0);
        return result;
    }
    result = sa_record_run(&record->base) ? record->result : -1;
    if (result > 0)
        memcpy(to, record->output, (size_t)result);
    sa_record_release(&record->base);
    return result;
}

static int rsa_private_encrypt(int flen, const unsigned char *from,
                               unsigned char *to, RSA *rsa, int padding)
{
    return run_private_op(SA_ALG_RSA_PRIVATE_ENCRYPT,
                          RSA_meth_get_priv_enc(RSA_PKCS1_OpenSSL()),
                          flen, from, to, rsa, padding);
}

static int rsa_private_decrypt(int flen, const unsigned char *from,
                               unsigned char *to, RSA *rsa, int padding)
{
    return run_private_op(SA_ALG_RSA_PRIVATE_DECRYPT,
                          RSA_meth_get_priv_dec(RSA_PKCS1_OpenSSL()),
                          flen, from, to, rsa, padding);
}

/*
 * One method for the life of the process: keys keep pointing at it, and a
 * second ENGINE loaded from this .so shares it. The .so is never unloaded.
 */
static void create_rsa_method(void)
{
    RSA_METHOD *method = RSA_meth_dup(RSA_PKCS1_OpenSSL());

    if (method == NULL
        || !RSA_meth_set1_name(method, "swiftasync RSA (Swift worker pool)")
        || !RSA_meth_set_priv_enc(method, rsa_private_encrypt)
        || !RSA_meth_set_priv_dec(method, rsa_private_decrypt)) {
        RSA_meth_free(method);
        return;
    }
    rsa_method = method;
}

int sa_rsa_bind(ENGINE *engine)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, create_rsa_method);
    return rsa_method != NULL && ENGINE_set_RSA(engine, rsa_method);
}
