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
 */
#include "rsa_method.h"
#include "operation.h"

#include <pthread.h>
#include <string.h>
#include <openssl/crypto.h>
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

static const sa_record_kind rsa_kind = { compute_rsa, release_rsa_inputs, destroy_rsa };

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
