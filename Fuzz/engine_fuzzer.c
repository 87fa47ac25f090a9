/*
 * libFuzzer target for the engine's RSA and EC entry points and the
 * provider's private-key steps, differential: every input runs once through
 * swiftasync (inline, sync offload, in an ASYNC job woken by its wait fd, or
 * by a callback) and once through default OpenSSL (its software methods, or
 * its default provider in a library context of its own). Both must succeed with the same bytes (or a
 * signature that verifies), or both fail with the same first error on the
 * queue. A failure with an empty error queue, a mismatch, or a job that is
 * not woken within HANG_SECONDS aborts, which libFuzzer reports as a crash.
 *
 * The input is read front to back: operation, mode, then the operation's
 * parameters (key, sizes, padding, scalars, peer points, digests).
 * Build and run: scripts/fuzz.sh.
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/async.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#define HANG_SECONDS 20

/* ---- Reading the input -------------------------------------------------- */

typedef struct {
    const uint8_t *data;
    size_t left;
} input;

static unsigned take_byte(input *in)
{
    if (in->left == 0)
        return 0;
    in->left--;
    return *in->data++;
}

static unsigned take_u16(input *in)
{
    unsigned high = take_byte(in);
    return (high << 8) | take_byte(in);
}

/* Up to `wanted` bytes into `out` (zero-filled past the input's end). */
static void take_bytes(input *in, uint8_t *out, size_t wanted)
{
    size_t have = wanted < in->left ? wanted : in->left;
    memcpy(out, in->data, have);
    memset(out + have, 0, wanted - have);
    in->data += have;
    in->left -= have;
}

static BIGNUM *take_bignum(input *in, size_t max_bytes)
{
    uint8_t bytes[600];
    size_t length = take_byte(in) % (max_bytes + 1);
    take_bytes(in, bytes, length);
    return BN_bin2bn(bytes, (int)length, NULL);
}

static ENGINE *engine;

static void fail(const char *what)
{
    fprintf(stderr, "swiftasync fuzz: %s\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}

/* A job not woken: the engine's counters, and every thread's stack if asked (SWIFTASYNC_FUZZ_GDB=1). */
static void fail_hung(const char *what)
{
    char report[4096] = "";
    char command[128];

    if (getenv("SWIFTASYNC_FUZZ_GDB") != NULL) {
        snprintf(command, sizeof(command), "gdb -p %d -batch -ex 'thread apply all bt' 1>&2", (int)getpid());
        (void)!system(command);
    }
    if (ENGINE_ctrl_cmd(engine, "STATS", (long)sizeof(report), report, NULL, 0))
        fprintf(stderr, "engine counters when it hung:\n%s\n", report);
    fail(what);
}

/* ---- Running an operation in each of the engine's modes ----------------- */

typedef int (*operation_fn)(void *argument);

typedef struct {
    operation_fn operation;
    void *argument;
} job_call;

enum mode { MODE_INLINE, MODE_SYNC_OFFLOAD, MODE_WAIT_FD, MODE_CALLBACK, MODE_COUNT };

static atomic_int called_back;

static int job_entry(void *argument)
{
    job_call *call = argument;
    return call->operation(call->argument);
}

static int on_callback(void *argument)
{
    (void)argument;
    atomic_store(&called_back, 1);
    return 1;
}

static long now_milliseconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000L + now.tv_nsec / 1000000L;
}

static int milliseconds_left(long deadline)
{
    long left = deadline - now_milliseconds();
    return left > 0 ? (int)left : 0;
}

static void wait_for_wake(ASYNC_WAIT_CTX *wait_ctx, enum mode mode)
{
    long deadline = now_milliseconds() + HANG_SECONDS * 1000L;
    OSSL_ASYNC_FD fds[4];
    size_t count = 0;
    struct pollfd polled;
    int ready;

    if (mode == MODE_CALLBACK) {
        while (!atomic_exchange(&called_back, 0)) {
            if (milliseconds_left(deadline) == 0)
                fail_hung("hang: no async callback");
            usleep(100);
        }
        return;
    }
    if (!ASYNC_WAIT_CTX_get_all_fds(wait_ctx, NULL, &count) || count != 1
        || !ASYNC_WAIT_CTX_get_all_fds(wait_ctx, fds, &count))
        fail("a paused job registered no single wait fd");
    polled.fd = fds[0];
    polled.events = POLLIN;
    /* libFuzzer's timeout timer (SIGALRM) interrupts poll: not a hang, poll again. */
    while ((ready = poll(&polled, 1, milliseconds_left(deadline))) < 0 && errno == EINTR)
        continue;
    if (ready != 1)
        fail_hung("hang: the wait fd never became readable");
}

static int run_in_job(operation_fn operation, void *argument, enum mode mode)
{
    ASYNC_WAIT_CTX *wait_ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    job_call call = { operation, argument };
    int result = 0;

    if (wait_ctx == NULL)
        fail("ASYNC_WAIT_CTX_new");
    atomic_store(&called_back, 0);
    if (mode == MODE_CALLBACK)
        ASYNC_WAIT_CTX_set_callback(wait_ctx, on_callback, NULL);
    for (;;) {
        int status = ASYNC_start_job(&job, wait_ctx, &result, job_entry, &call, sizeof(call));
        if (status == ASYNC_FINISH)
            break;
        if (status != ASYNC_PAUSE)
            fail("ASYNC_start_job failed");
        wait_for_wake(wait_ctx, mode);
    }
    ASYNC_WAIT_CTX_free(wait_ctx);
    return result;
}

static void set_sync_offload(int on)
{
    if (!ENGINE_ctrl_cmd_string(engine, "SYNC_OFFLOAD", on ? "1" : "0", 0))
        fail("SYNC_OFFLOAD refused");
}

/* Runs `operation` through the engine in `mode`. */
static int run_on_engine(operation_fn operation, void *argument, enum mode mode)
{
    int result;
    switch (mode) {
    case MODE_INLINE:
        return operation(argument);
    case MODE_SYNC_OFFLOAD:
        set_sync_offload(1);
        result = operation(argument);
        set_sync_offload(0);
        return result;
    default:
        return run_in_job(operation, argument, mode);
    }
}

/* The first errors each run left on the queue. */
typedef struct {
    unsigned long engine;
    unsigned long software;
} first_errors;

/*
 * Both ran: the same success; a failure leaves the same first error as
 * software's (none only where software's left none either).
 */
static void compare_failures(int engine_ok, int software_ok, first_errors errors,
                             const char *what)
{
    unsigned long engine_error = errors.engine, software_error = errors.software;

    if (engine_ok != software_ok) {
        fprintf(stderr, "%s: engine %s, software %s\n", what,
                engine_ok ? "succeeded" : "failed", software_ok ? "succeeded" : "failed");
        fail("the engine and default OpenSSL disagree on success");
    }
    if (engine_ok)
        return;
    if (engine_error == 0 && software_error != 0)
        fail("the engine failed with nothing on the error queue");
    if (ERR_GET_LIB(engine_error) != ERR_GET_LIB(software_error)
        || ERR_GET_REASON(engine_error) != ERR_GET_REASON(software_error)) {
        fprintf(stderr, "%s: engine error %lx, software error %lx\n", what,
                engine_error, software_error);
        fail("the engine's first error differs from default OpenSSL's");
    }
}

/* `operation` on the engine's call in `mode`, then on software's call inline. */
static first_errors run_both(operation_fn operation, void *engine_call, void *software_call,
                             enum mode mode)
{
    first_errors errors;

    ERR_clear_error();
    run_on_engine(operation, engine_call, mode);
    errors.engine = ERR_peek_error();
    ERR_clear_error();
    operation(software_call);
    errors.software = ERR_peek_error();
    ERR_clear_error();
    return errors;
}

static int same_output(int length, const uint8_t *engine_out, int software_length,
                       const uint8_t *software_out)
{
    return length == software_length && memcmp(engine_out, software_out, (size_t)length) == 0;
}

/* ---- Keys --------------------------------------------------------------- */

#define RSA_KEYS 3
static RSA *rsa_keys[RSA_KEYS];   /* 512, 1024, 2048 bits: software method */

static const int curves[] = {
    NID_X9_62_prime256v1, NID_secp384r1, NID_secp521r1, NID_secp224r1,
    NID_secp256k1, NID_brainpoolP256r1, NID_sect233k1, NID_sect163r2,
    NID_X9_62_prime192v1, NID_brainpoolP512t1,
};
#define CURVES (sizeof(curves) / sizeof(curves[0]))

/*
 * A key from the fuzz input: one of ours, sometimes with one private
 * component replaced by fuzz bytes, so that d, the primes and the CRT values
 * disagree. Returns the pair: on the engine's method and on software's.
 */
static int take_rsa_pair(input *in, RSA **on_engine, RSA **on_software)
{
    const RSA *base = rsa_keys[take_byte(in) % RSA_KEYS];
    unsigned replace = take_byte(in) % 12;   /* 0..5: a component; else none */
    const BIGNUM *n, *e, *d, *p, *q, *dmp1, *dmq1, *iqmp;
    const BIGNUM *parts[6];
    BIGNUM *copies[2][8];
    RSA *pair[2];
    int which, i;

    RSA_get0_key(base, &n, &e, &d);
    RSA_get0_factors(base, &p, &q);
    RSA_get0_crt_params(base, &dmp1, &dmq1, &iqmp);
    parts[0] = d; parts[1] = p; parts[2] = q; parts[3] = dmp1; parts[4] = dmq1; parts[5] = iqmp;
    {
        BIGNUM *fuzzed = replace < 6 ? take_bignum(in, (size_t)BN_num_bytes(n)) : NULL;
        if (fuzzed == NULL)
            replace = 6;
        for (which = 0; which < 2; which++) {
            copies[which][0] = BN_dup(n);
            copies[which][1] = BN_dup(e);
            for (i = 0; i < 6; i++)
                copies[which][2 + i] = BN_dup(i == (int)replace ? fuzzed : parts[i]);
        }
        BN_free(fuzzed);
    }
    pair[0] = RSA_new_method(engine);
    pair[1] = RSA_new();
    for (which = 0; which < 2; which++) {
        BIGNUM **c = copies[which];
        if (pair[which] == NULL
            || !RSA_set0_key(pair[which], c[0], c[1], c[2])
            || !RSA_set0_factors(pair[which], c[3], c[4])
            || !RSA_set0_crt_params(pair[which], c[5], c[6], c[7]))
            fail("building an RSA key");
    }
    if (!RSA_set_method(pair[1], RSA_PKCS1_OpenSSL()))
        fail("RSA_set_method");
    *on_engine = pair[0];
    *on_software = pair[1];
    return 1;
}

/* ---- RSA private encrypt (sign) and decrypt ---------------------------- */

typedef struct {
    int decrypt;
    RSA *key;
    const uint8_t *from;
    int from_length;
    int padding;
    uint8_t *to;
    int result;
} rsa_call;

static int rsa_operation(void *argument)
{
    rsa_call *call = argument;
    call->result = call->decrypt
        ? RSA_private_decrypt(call->from_length, call->from, call->to, call->key, call->padding)
        : RSA_private_encrypt(call->from_length, call->from, call->to, call->key, call->padding);
    return call->result;
}

static void fuzz_rsa(input *in, enum mode mode, int decrypt)
{
    static const int paddings[] = {
        RSA_PKCS1_PADDING, RSA_NO_PADDING, RSA_X931_PADDING, RSA_PKCS1_OAEP_PADDING,
        RSA_PKCS1_PSS_PADDING, 2 /* SSLv23, gone in 3.0 */, 0, 99, -1,
    };
    RSA *on_engine, *on_software;
    uint8_t from[600], engine_out[512], software_out[512];
    rsa_call engine_call, software_call;
    first_errors errors;
    int size_choice;

    take_rsa_pair(in, &on_engine, &on_software);
    engine_call.decrypt = decrypt;
    engine_call.padding = paddings[take_byte(in) % (sizeof(paddings) / sizeof(paddings[0]))];
    size_choice = (int)take_byte(in);
    /* Mostly the key's size, exactly or nearly; sometimes anything. */
    engine_call.from_length = size_choice < 160 ? RSA_size(on_engine) - (size_choice % 4)
        : size_choice < 224 ? RSA_size(on_engine) - 11 - (size_choice % 48)
        : (int)(take_u16(in) % sizeof(from));
    if (engine_call.from_length < 0)
        engine_call.from_length = 0;
    take_bytes(in, from, (size_t)engine_call.from_length);
    engine_call.from = from;
    software_call = engine_call;
    engine_call.key = on_engine;
    engine_call.to = engine_out;
    software_call.key = on_software;
    software_call.to = software_out;

    errors = run_both(rsa_operation, &engine_call, &software_call, mode);
    compare_failures(engine_call.result > 0, software_call.result > 0, errors,
                     decrypt ? "RSA decrypt" : "RSA sign");
    if (engine_call.result > 0
        && !same_output(engine_call.result, engine_out, software_call.result, software_out))
        fail(decrypt ? "RSA decrypt: outputs differ" : "RSA sign: outputs differ");
    RSA_free(on_engine);
    RSA_free(on_software);
}

/* ---- EC: keygen, ECDH, ECDSA ------------------------------------------- */

typedef struct {
    EC_KEY *on_engine;
    EC_KEY *on_software;
    const EC_GROUP *group;
} ec_pair;

/* Same curve, same private scalar (from the input, or generated), two methods. */
static void take_ec_pair(input *in, ec_pair *pair, int with_scalar)
{
    int nid = curves[take_byte(in) % CURVES];
    pair->on_engine = EC_KEY_new_method(engine);
    pair->on_software = EC_KEY_new_by_curve_name(nid);
    if (pair->on_engine == NULL || pair->on_software == NULL
        || !EC_KEY_set_method(pair->on_software, EC_KEY_OpenSSL()))
        fail("EC_KEY_new");
    pair->group = EC_KEY_get0_group(pair->on_software);
    if (!EC_KEY_set_group(pair->on_engine, pair->group))
        fail("EC_KEY_set_group");
    if (with_scalar) {
        BIGNUM *scalar = take_bignum(in, 80);
        EC_POINT *public_point = EC_POINT_new(pair->group);
        /* A scalar OpenSSL refuses to set is no input to the engine: it stays keyless. */
        if (scalar != NULL && public_point != NULL
            && EC_KEY_set_private_key(pair->on_software, scalar)
            && EC_KEY_set_private_key(pair->on_engine, scalar)
            && EC_POINT_mul(pair->group, public_point, scalar, NULL, NULL, NULL)) {
            EC_KEY_set_public_key(pair->on_software, public_point);
            EC_KEY_set_public_key(pair->on_engine, public_point);
        }
        BN_clear_free(scalar);
        EC_POINT_free(public_point);
    }
    ERR_clear_error();
}

static void free_ec_pair(ec_pair *pair)
{
    EC_KEY_free(pair->on_engine);
    EC_KEY_free(pair->on_software);
}

typedef struct {
    EC_KEY *key;
    int result;
} ec_keygen_call;

static int ec_keygen_operation(void *argument)
{
    ec_keygen_call *call = argument;
    call->result = EC_KEY_generate_key(call->key);
    return call->result;
}

static void fuzz_ec_keygen(input *in, enum mode mode)
{
    ec_pair pair;
    ec_keygen_call engine_call, software_call;
    first_errors errors;

    take_ec_pair(in, &pair, 0);
    engine_call.key = pair.on_engine;
    software_call.key = pair.on_software;
    errors = run_both(ec_keygen_operation, &engine_call, &software_call, mode);
    compare_failures(engine_call.result == 1, software_call.result == 1, errors, "EC keygen");
    if (engine_call.result == 1 && EC_KEY_check_key(pair.on_engine) != 1)
        fail("EC keygen: the engine's key fails EC_KEY_check_key");
    free_ec_pair(&pair);
}

typedef struct {
    EC_KEY *key;
    const EC_POINT *peer;
    uint8_t *out;
    size_t out_length;
    int result;
} ecdh_call;

static int ecdh_operation(void *argument)
{
    ecdh_call *call = argument;
    call->result = ECDH_compute_key(call->out, call->out_length, call->peer, call->key, NULL);
    return call->result;
}

/* A peer point: decoded from the input, the point at infinity, or the generator. */
static EC_POINT *take_peer_point(input *in, const EC_GROUP *group)
{
    EC_POINT *point = EC_POINT_new(group);
    uint8_t encoded[200];
    unsigned choice = take_byte(in) % 8;
    size_t length = take_byte(in) % sizeof(encoded);

    take_bytes(in, encoded, length);
    if (point == NULL)
        fail("EC_POINT_new");
    if (choice == 0 && EC_POINT_set_to_infinity(group, point))
        return point;
    if (choice == 1 && EC_POINT_copy(point, EC_GROUP_get0_generator(group)))
        return point;
    if (EC_POINT_oct2point(group, point, encoded, length, NULL))
        return point;
    ERR_clear_error();          /* OpenSSL refused the encoding before any engine could see it */
    EC_POINT_free(point);
    return NULL;
}

static void fuzz_ecdh(input *in, enum mode mode)
{
    ec_pair pair;
    EC_POINT *peer;
    uint8_t engine_out[200], software_out[200];
    ecdh_call engine_call, software_call;
    first_errors errors;

    take_ec_pair(in, &pair, 1);
    peer = take_peer_point(in, pair.group);
    if (peer == NULL) {
        free_ec_pair(&pair);
        return;
    }
    engine_call.key = pair.on_engine;
    engine_call.peer = peer;
    engine_call.out = engine_out;
    engine_call.out_length = take_byte(in) % sizeof(engine_out);
    software_call = engine_call;
    software_call.key = pair.on_software;
    software_call.out = software_out;

    errors = run_both(ecdh_operation, &engine_call, &software_call, mode);
    compare_failures(engine_call.result > 0, software_call.result > 0, errors, "ECDH");
    if (engine_call.result > 0
        && !same_output(engine_call.result, engine_out, software_call.result, software_out))
        fail("ECDH: shared secrets differ");
    EC_POINT_free(peer);
    free_ec_pair(&pair);
}

typedef struct {
    EC_KEY *key;
    const uint8_t *digest;
    int digest_length;
    int with_setup;
    ECDSA_SIG *signature;
} ecdsa_call;

static int ecdsa_operation(void *argument)
{
    ecdsa_call *call = argument;
    BIGNUM *kinv = NULL, *r = NULL;

    call->signature = NULL;
    if (call->with_setup) {
        if (!ECDSA_sign_setup(call->key, NULL, &kinv, &r))
            return 0;
        call->signature = ECDSA_do_sign_ex(call->digest, call->digest_length, kinv, r, call->key);
        BN_clear_free(kinv);
        BN_clear_free(r);
    } else {
        call->signature = ECDSA_do_sign(call->digest, call->digest_length, call->key);
    }
    return call->signature != NULL;
}

static void fuzz_ecdsa(input *in, enum mode mode)
{
    ec_pair pair;
    uint8_t digest[100];
    ecdsa_call engine_call, software_call;
    first_errors errors;

    take_ec_pair(in, &pair, 1);
    engine_call.with_setup = take_byte(in) % 2;
    engine_call.digest_length = (int)(take_byte(in) % sizeof(digest));
    take_bytes(in, digest, (size_t)engine_call.digest_length);
    engine_call.digest = digest;
    engine_call.key = pair.on_engine;
    software_call = engine_call;
    software_call.key = pair.on_software;

    errors = run_both(ecdsa_operation, &engine_call, &software_call, mode);
    compare_failures(engine_call.signature != NULL, software_call.signature != NULL, errors,
                     "ECDSA sign");
    /* Signatures are randomised: the engine's must verify under software. */
    if (engine_call.signature != NULL
        && ECDSA_do_verify(digest, engine_call.digest_length, engine_call.signature,
                           pair.on_software) != 1)
        fail("ECDSA: the engine's signature does not verify");
    ECDSA_SIG_free(engine_call.signature);
    ECDSA_SIG_free(software_call.signature);
    free_ec_pair(&pair);
}

/* ---- X25519 and X448 derive -------------------------------------------- */

typedef struct {
    EVP_PKEY *own;
    EVP_PKEY *peer;
    ENGINE *through;            /* NULL: default OpenSSL */
    uint8_t out[64];
    size_t out_length;
    int result;
} ecx_call;

static int ecx_operation(void *argument)
{
    ecx_call *call = argument;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(call->own, call->through);

    call->result = ctx != NULL && EVP_PKEY_derive_init(ctx) > 0
        && EVP_PKEY_derive_set_peer(ctx, call->peer) > 0
        && EVP_PKEY_derive(ctx, call->out, &call->out_length) > 0;
    EVP_PKEY_CTX_free(ctx);
    return call->result;
}

static void fuzz_ecx(input *in, enum mode mode, int nid, size_t key_length)
{
    uint8_t own_bytes[56], peer_bytes[56];
    ecx_call engine_call, software_call;
    first_errors errors;

    take_bytes(in, own_bytes, key_length);
    take_bytes(in, peer_bytes, key_length);
    engine_call.own = EVP_PKEY_new_raw_private_key(nid, NULL, own_bytes, key_length);
    engine_call.peer = EVP_PKEY_new_raw_public_key(nid, NULL, peer_bytes, key_length);
    if (engine_call.own == NULL || engine_call.peer == NULL)
        fail("raw X25519/X448 keys");
    engine_call.through = engine;
    /* A short buffer, sometimes. */
    engine_call.out_length = take_byte(in) < 32 ? take_byte(in) % key_length : sizeof(engine_call.out);
    software_call = engine_call;
    software_call.through = NULL;

    errors = run_both(ecx_operation, &engine_call, &software_call, mode);
    compare_failures(engine_call.result, software_call.result, errors,
                     nid == NID_X25519 ? "X25519" : "X448");
    if (engine_call.result
        && !same_output((int)engine_call.out_length, engine_call.out,
                        (int)software_call.out_length, software_call.out))
        fail("X25519/X448: shared secrets differ");
    EVP_PKEY_free(engine_call.own);
    EVP_PKEY_free(engine_call.peer);
}

/* ---- The provider: the same inputs through EVP in a library context with it ---- */

static OSSL_LIB_CTX *provider_context;   /* default + swiftasync, swiftasync preferred */
static OSSL_LIB_CTX *plain_context;      /* default alone */

/* An RSA or EC key as key data of `context`'s key manager, from the numbers of `rsa` or `ec`. */
static EVP_PKEY *key_in(OSSL_LIB_CTX *context, const RSA *rsa, const EC_KEY *ec)
{
    OSSL_PARAM_BLD *build = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *maker = EVP_PKEY_CTX_new_from_name(context, rsa != NULL ? "RSA" : "EC", NULL);
    EVP_PKEY *key = NULL;
    uint8_t point[200];
    size_t point_length;
    int ok = build != NULL && maker != NULL;

    if (ok && rsa != NULL) {
        ok = OSSL_PARAM_BLD_push_BN(build, "n", RSA_get0_n(rsa))
            && OSSL_PARAM_BLD_push_BN(build, "e", RSA_get0_e(rsa))
            && OSSL_PARAM_BLD_push_BN(build, "d", RSA_get0_d(rsa))
            && OSSL_PARAM_BLD_push_BN(build, "rsa-factor1", RSA_get0_p(rsa))
            && OSSL_PARAM_BLD_push_BN(build, "rsa-factor2", RSA_get0_q(rsa))
            && OSSL_PARAM_BLD_push_BN(build, "rsa-exponent1", RSA_get0_dmp1(rsa))
            && OSSL_PARAM_BLD_push_BN(build, "rsa-exponent2", RSA_get0_dmq1(rsa))
            && OSSL_PARAM_BLD_push_BN(build, "rsa-coefficient1", RSA_get0_iqmp(rsa));
    } else if (ok) {
        const EC_GROUP *group = EC_KEY_get0_group(ec);
        ok = EC_KEY_get0_private_key(ec) != NULL && EC_KEY_get0_public_key(ec) != NULL
            && (point_length = EC_POINT_point2oct(group, EC_KEY_get0_public_key(ec),
                                                  POINT_CONVERSION_UNCOMPRESSED, point,
                                                  sizeof(point), NULL)) > 0
            && OSSL_PARAM_BLD_push_utf8_string(build, "group",
                                               OBJ_nid2sn(EC_GROUP_get_curve_name(group)), 0)
            && OSSL_PARAM_BLD_push_BN(build, "priv", EC_KEY_get0_private_key(ec))
            && OSSL_PARAM_BLD_push_octet_string(build, "pub", point, point_length);
    }
    ok = ok && (params = OSSL_PARAM_BLD_to_param(build)) != NULL
        && EVP_PKEY_fromdata_init(maker) > 0
        && EVP_PKEY_fromdata(maker, &key, EVP_PKEY_KEYPAIR, params) > 0;
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(build);
    EVP_PKEY_CTX_free(maker);
    ERR_clear_error();
    return ok ? key : NULL;
}

enum provider_step { STEP_SIGN, STEP_DIGEST_SIGN, STEP_DECRYPT, STEP_DERIVE };

typedef struct {
    OSSL_LIB_CTX *context;
    enum provider_step step;
    EVP_PKEY *key, *peer;
    int padding;                 /* RSA; 0: the default */
    int with_digest;             /* sign: SHA-256 set on the context */
    const uint8_t *in;
    size_t in_length;
    uint8_t out[600];
    size_t out_length;           /* the buffer's size offered, then the result's */
    int result;
} provider_call;

static int provider_operation(void *argument)
{
    provider_call *call = argument;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_MD_CTX *md_ctx = NULL;
    int ok;

    if (call->step == STEP_DIGEST_SIGN) {
        ok = (md_ctx = EVP_MD_CTX_new()) != NULL
            && EVP_DigestSignInit_ex(md_ctx, &ctx, "SHA256", call->context, NULL, call->key, NULL) > 0
            && (call->padding == 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, call->padding) > 0)
            && EVP_DigestSign(md_ctx, call->out, &call->out_length, call->in, call->in_length) > 0;
        EVP_MD_CTX_free(md_ctx);
        return call->result = ok;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(call->context, call->key, NULL);
    switch (call->step) {
    case STEP_SIGN:
        ok = ctx != NULL && EVP_PKEY_sign_init(ctx) > 0
            && (call->padding == 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, call->padding) > 0)
            && (!call->with_digest || EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0)
            && EVP_PKEY_sign(ctx, call->out, &call->out_length, call->in, call->in_length) > 0;
        break;
    case STEP_DECRYPT:
        ok = ctx != NULL && EVP_PKEY_decrypt_init(ctx) > 0
            && (call->padding == 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, call->padding) > 0)
            && EVP_PKEY_decrypt(ctx, call->out, &call->out_length, call->in, call->in_length) > 0;
        break;
    default:
        ok = ctx != NULL && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_derive_set_peer(ctx, call->peer) > 0
            && EVP_PKEY_derive(ctx, call->out, &call->out_length) > 0;
        break;
    }
    EVP_PKEY_CTX_free(ctx);
    return call->result = ok;
}

/* The provider's signature must verify under default OpenSSL (RSA PSS, ECDSA: randomised). */
static int verifies(const provider_call *call, EVP_PKEY *plain_key)
{
    EVP_PKEY_CTX *ctx = NULL;
    EVP_MD_CTX *md_ctx = NULL;
    int ok;

    if (call->step == STEP_DIGEST_SIGN) {
        ok = (md_ctx = EVP_MD_CTX_new()) != NULL
            && EVP_DigestVerifyInit_ex(md_ctx, &ctx, "SHA256", plain_context, NULL, plain_key, NULL) > 0
            && (call->padding == 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, call->padding) > 0)
            && EVP_DigestVerify(md_ctx, call->out, call->out_length, call->in, call->in_length) > 0;
        EVP_MD_CTX_free(md_ctx);
        return ok;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(plain_context, plain_key, NULL);
    ok = ctx != NULL && EVP_PKEY_verify_init(ctx) > 0
        && (call->padding == 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, call->padding) > 0)
        && (!call->with_digest || EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0)
        && EVP_PKEY_verify(ctx, call->out, call->out_length, call->in, call->in_length) > 0;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

/* Provider steps compared, and of those run in async jobs: said at exit, checked by fuzz.sh. */
static long provider_compared, provider_in_jobs;

static void say_provider_counts(void)
{
    fprintf(stderr, "swiftasync fuzz: provider steps compared: %ld, in async jobs: %ld\n",
            provider_compared, provider_in_jobs);
}

/* Runs `ours` in `mode` and `plain` inline, and compares: success, first error, output. */
static void compare_provider(provider_call *ours, provider_call *plain, EVP_PKEY *plain_key,
                             enum mode mode, int randomised, const char *what)
{
    first_errors errors = run_both(provider_operation, ours, plain, mode);

    provider_compared++;
    provider_in_jobs += mode == MODE_WAIT_FD || mode == MODE_CALLBACK;
    compare_failures(ours->result, plain->result, errors, what);
    if (!ours->result)
        return;
    if (randomised ? !verifies(ours, plain_key)
                   : !same_output((int)ours->out_length, ours->out, (int)plain->out_length, plain->out)) {
        fprintf(stderr, "%s\n", what);
        fail("the provider's result differs from default OpenSSL's");
    }
}

/* RSA through the provider: sign (PKCS#1, none, PSS; digest or not), digest-sign, decrypt. */
static void fuzz_provider_rsa(input *in, enum mode mode)
{
    static const int paddings[] = {
        0, RSA_PKCS1_PADDING, RSA_NO_PADDING, RSA_PKCS1_PSS_PADDING, RSA_PKCS1_OAEP_PADDING, RSA_X931_PADDING,
    };
    RSA *on_engine, *on_software;
    EVP_PKEY *ours_key, *plain_key;
    provider_call ours, plain;
    uint8_t from[600];
    unsigned choice;

    take_rsa_pair(in, &on_engine, &on_software);
    ours_key = key_in(provider_context, on_software, NULL);
    plain_key = key_in(plain_context, on_software, NULL);
    memset(&ours, 0, sizeof(ours));
    ours.step = (enum provider_step)(take_byte(in) % 3);
    ours.padding = paddings[take_byte(in) % (sizeof(paddings) / sizeof(paddings[0]))];
    ours.with_digest = take_byte(in) % 2;
    choice = take_byte(in);
    ours.in_length = ours.step == STEP_SIGN && ours.with_digest && choice < 200 ? 32
        : choice < 160 ? (size_t)RSA_size(on_software) - choice % 4
        : take_u16(in) % sizeof(from);
    if (ours.in_length > sizeof(from))
        ours.in_length = 0;
    take_bytes(in, from, ours.in_length);
    ours.in = from;
    ours.out_length = take_byte(in) < 16 ? take_byte(in) : sizeof(ours.out);
    ours.key = ours_key;
    plain = ours;
    ours.context = provider_context;
    plain.context = plain_context;
    plain.key = plain_key;
    if (ours_key != NULL && plain_key != NULL)
        compare_provider(&ours, &plain, plain_key, mode,
                         ours.step != STEP_DECRYPT && ours.padding == RSA_PKCS1_PSS_PADDING,
                         "provider RSA");
    EVP_PKEY_free(ours_key);
    EVP_PKEY_free(plain_key);
    RSA_free(on_engine);
    RSA_free(on_software);
}

/* ECDSA (sign, digest-sign) and ECDH through the provider, on every curve of the engine's list. */
static void fuzz_provider_ec(input *in, enum mode mode)
{
    ec_pair pair;
    EVP_PKEY *ours_key, *plain_key, *ours_peer = NULL, *plain_peer = NULL;
    provider_call ours, plain;
    uint8_t data[100];
    EC_POINT *peer_point;

    take_ec_pair(in, &pair, 1);
    ours_key = key_in(provider_context, NULL, pair.on_software);
    plain_key = key_in(plain_context, NULL, pair.on_software);
    memset(&ours, 0, sizeof(ours));
    ours.step = (enum provider_step)(take_byte(in) % 3);
    ours.step = ours.step == STEP_DECRYPT ? STEP_DERIVE : ours.step;
    ours.in_length = take_byte(in) % sizeof(data);
    take_bytes(in, data, ours.in_length);
    ours.in = data;
    ours.out_length = take_byte(in) < 16 ? take_byte(in) : sizeof(ours.out);
    if (ours.step == STEP_DERIVE && (peer_point = take_peer_point(in, pair.group)) != NULL) {
        EC_KEY *peer = EC_KEY_new_by_curve_name(EC_GROUP_get_curve_name(pair.group));
        uint8_t encoded[200];
        size_t length = peer != NULL ? EC_POINT_point2oct(pair.group, peer_point, POINT_CONVERSION_UNCOMPRESSED,
                                                          encoded, sizeof(encoded), NULL) : 0;
        /* The peer as a public key of each context (from its encoding). */
        if (length > 0) {
            OSSL_PARAM params[] = {
                OSSL_PARAM_utf8_string("group", (char *)OBJ_nid2sn(EC_GROUP_get_curve_name(pair.group)), 0),
                OSSL_PARAM_octet_string("pub", encoded, length), OSSL_PARAM_END
            };
            EVP_PKEY_CTX *maker = EVP_PKEY_CTX_new_from_name(provider_context, "EC", NULL);
            if (maker != NULL && EVP_PKEY_fromdata_init(maker) > 0)
                EVP_PKEY_fromdata(maker, &ours_peer, EVP_PKEY_PUBLIC_KEY, params);
            EVP_PKEY_CTX_free(maker);
            maker = EVP_PKEY_CTX_new_from_name(plain_context, "EC", NULL);
            if (maker != NULL && EVP_PKEY_fromdata_init(maker) > 0)
                EVP_PKEY_fromdata(maker, &plain_peer, EVP_PKEY_PUBLIC_KEY, params);
            EVP_PKEY_CTX_free(maker);
        }
        EC_KEY_free(peer);
        EC_POINT_free(peer_point);
        ERR_clear_error();
    }
    ours.key = ours_key;
    ours.peer = ours_peer;
    plain = ours;
    ours.context = provider_context;
    plain.context = plain_context;
    plain.key = plain_key;
    plain.peer = plain_peer;
    if (ours_key != NULL && plain_key != NULL && (ours.step != STEP_DERIVE || (ours_peer != NULL && plain_peer != NULL)))
        compare_provider(&ours, &plain, plain_key, mode, ours.step != STEP_DERIVE, "provider EC");
    EVP_PKEY_free(ours_key);
    EVP_PKEY_free(plain_key);
    EVP_PKEY_free(ours_peer);
    EVP_PKEY_free(plain_peer);
    free_ec_pair(&pair);
}

/* X25519 and X448 through the provider: raw keys from the input, a short buffer sometimes. */
static void fuzz_provider_ecx(input *in, enum mode mode)
{
    const char *name = take_byte(in) % 4 == 0 ? "X448" : "X25519";
    size_t length = name[1] == '4' ? 56 : 32;
    uint8_t own[56], peer[56];
    provider_call ours, plain;

    take_bytes(in, own, length);
    take_bytes(in, peer, length);
    memset(&ours, 0, sizeof(ours));
    ours.step = STEP_DERIVE;
    ours.out_length = take_byte(in) < 32 ? take_byte(in) % length : sizeof(ours.out);
    plain = ours;
    ours.context = provider_context;
    ours.key = EVP_PKEY_new_raw_private_key_ex(provider_context, name, NULL, own, length);
    ours.peer = EVP_PKEY_new_raw_public_key_ex(provider_context, name, NULL, peer, length);
    plain.context = plain_context;
    plain.key = EVP_PKEY_new_raw_private_key_ex(plain_context, name, NULL, own, length);
    plain.peer = EVP_PKEY_new_raw_public_key_ex(plain_context, name, NULL, peer, length);
    if (ours.key == NULL || ours.peer == NULL || plain.key == NULL || plain.peer == NULL)
        fail("raw X25519/X448 keys in the provider's and the plain context");
    compare_provider(&ours, &plain, plain.key, mode, 0, name);
    EVP_PKEY_free(ours.key);
    EVP_PKEY_free(ours.peer);
    EVP_PKEY_free(plain.key);
    EVP_PKEY_free(plain.peer);
}

/* The .so as a provider too, as openssl-provider.cnf loads it (the module's path made absolute). */
static void load_provider(const char *path)
{
    char file[] = "/tmp/swiftasync-fuzz-XXXXXX";
    int fd = mkstemp(file);
    FILE *cnf = fd >= 0 ? fdopen(fd, "w") : NULL;

    if (cnf == NULL)
        fail("a temporary cnf");
    fprintf(cnf, "openssl_conf = init\n[init]\nproviders = providers\nalg_section = algorithms\n"
                 "[providers]\ndefault = default_section\nswiftasync = swiftasync_section\n"
                 "[default_section]\nactivate = 1\n[swiftasync_section]\nmodule = %s\nactivate = 1\n"
                 "[algorithms]\ndefault_properties = ?provider=swiftasync\n", path);
    fclose(cnf);
    provider_context = OSSL_LIB_CTX_new();
    plain_context = OSSL_LIB_CTX_new();
    if (provider_context == NULL || plain_context == NULL
        || !OSSL_LIB_CTX_load_config(provider_context, file)
        || !OSSL_PROVIDER_available(provider_context, "swiftasync")
        || OSSL_PROVIDER_load(plain_context, "default") == NULL)
        fail("cannot load the provider");
    unlink(file);
    atexit(say_provider_counts);
}

/* ---- libFuzzer's entry points ------------------------------------------ */

static RSA *generate_rsa(int bits)
{
    RSA *rsa = RSA_new();
    BIGNUM *exponent = BN_new();
    if (rsa == NULL || exponent == NULL || !BN_set_word(exponent, RSA_F4)
        || !RSA_generate_key_ex(rsa, bits, exponent, NULL))
        fail("RSA key generation");
    BN_free(exponent);
    return rsa;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *path = getenv("SWIFTASYNC_SO");
    (void)argc; (void)argv;
    if (path == NULL)
        fail("set SWIFTASYNC_SO to the engine to fuzz");
    ENGINE_load_dynamic();
    engine = ENGINE_by_id("dynamic");
    if (engine == NULL
        || !ENGINE_ctrl_cmd_string(engine, "SO_PATH", path, 0)
        || !ENGINE_ctrl_cmd_string(engine, "ID", "swiftasync", 0)
        || !ENGINE_ctrl_cmd_string(engine, "LOAD", NULL, 0)
        || !ENGINE_init(engine))
        fail("cannot load the engine");
    load_provider(path);
    rsa_keys[0] = generate_rsa(512);
    rsa_keys[1] = generate_rsa(1024);
    rsa_keys[2] = generate_rsa(2048);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = { data, size };
    unsigned operation = take_byte(&in) % 10;
    enum mode mode = (enum mode)(take_byte(&in) % MODE_COUNT);

    switch (operation) {
    case 0: fuzz_rsa(&in, mode, 0); break;
    case 1: fuzz_rsa(&in, mode, 1); break;
    case 2: fuzz_ec_keygen(&in, mode); break;
    case 3: fuzz_ecdh(&in, mode); break;
    case 4: fuzz_ecdsa(&in, mode); break;
    case 5: fuzz_ecx(&in, mode, NID_X25519, 32); break;
    case 6: fuzz_ecx(&in, mode, NID_X448, 56); break;
    case 7: fuzz_provider_rsa(&in, mode); break;
    case 8: fuzz_provider_ec(&in, mode); break;
    default: fuzz_provider_ecx(&in, mode); break;
    }
    ERR_clear_error();
    return 0;
}
