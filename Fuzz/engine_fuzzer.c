/*
 * libFuzzer target for the engine's RSA and EC entry points, differential:
 * every input runs once through swiftasync (inline, sync offload, in an
 * ASYNC job woken by its wait fd, or by a callback) and once through default
 * OpenSSL's software methods. Both must succeed with the same bytes (or a
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
    rsa_keys[0] = generate_rsa(512);
    rsa_keys[1] = generate_rsa(1024);
    rsa_keys[2] = generate_rsa(2048);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = { data, size };
    unsigned operation = take_byte(&in) % 7;
    enum mode mode = (enum mode)(take_byte(&in) % MODE_COUNT);

    switch (operation) {
    case 0: fuzz_rsa(&in, mode, 0); break;
    case 1: fuzz_rsa(&in, mode, 1); break;
    case 2: fuzz_ec_keygen(&in, mode); break;
    case 3: fuzz_ecdh(&in, mode); break;
    case 4: fuzz_ecdsa(&in, mode); break;
    case 5: fuzz_ecx(&in, mode, NID_X25519, 32); break;
    default: fuzz_ecx(&in, mode, NID_X448, 56); break;
    }
    ERR_clear_error();
    return 0;
}
