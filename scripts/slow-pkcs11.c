/*
 * A test fixture, not part of swiftasync: a PKCS#11 module that forwards
 * every call to a real one (SLOW_PKCS11_MODULE, e.g. SoftHSM) and sleeps
 * SLOW_PKCS11_DELAY_MS before each call that a network HSM or a TPM would
 * spend waiting on the device: signing, decrypting and deriving. Everything
 * else is the real module's own function, called directly. It gives the
 * benchmarks and tests a token of any latency (+5 ms: a network HSM, +20 ms:
 * a busy one, +100 ms: a TPM) with SoftHSM's real keys and results.
 *
 * Faults, switched while a test runs: SLOW_PKCS11_FAULT_FILE names a file
 * read before each such call. "fail": the device errs (CKR_DEVICE_ERROR,
 * after the real call, so the token's own state stays whole); "hang": the
 * call does not return while the file says so (a device that stopped
 * answering; the test lets it go at the end). Anything else, or no file: normal.
 *
 *   cc -shared -fPIC -I/usr/include/p11-kit-1 -o slow-pkcs11.so slow-pkcs11.c -ldl
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST forwarded;
static CK_FUNCTION_LIST_PTR real;
static long delay_ms;
static const char *fault_file;

static void sleep_ms(long ms)
{
    struct timespec pause = { ms / 1000, (ms % 1000) * 1000000L };

    while (ms > 0 && nanosleep(&pause, &pause) != 0)
        ;
}

/* The fault file's first word; "" when there is none. */
static void read_fault(char word[16])
{
    FILE *file;

    word[0] = '\0';
    if (fault_file == NULL || (file = fopen(fault_file, "r")) == NULL)
        return;
    if (fscanf(file, "%15s", word) != 1)
        word[0] = '\0';
    fclose(file);
}

/* Waits as the device would; 1 if this call is to fail. */
static int wait_on_the_device(void)
{
    char fault[16];

    sleep_ms(delay_ms);
    for (read_fault(fault); strcmp(fault, "hang") == 0; read_fault(fault))
        sleep_ms(10);
    return strcmp(fault, "fail") == 0;
}

static CK_RV as_the_device(int fails, CK_RV rv)
{
    return fails ? CKR_DEVICE_ERROR : rv;
}

static CK_RV slow_sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG length, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
    int fails = wait_on_the_device();
    return as_the_device(fails && sig != NULL, real->C_Sign(s, data, length, sig, siglen));
}

/* An update that failed would leave the token's operation open: updates never fail here. */
static CK_RV slow_sign_update(CK_SESSION_HANDLE s, CK_BYTE_PTR part, CK_ULONG length)
{
    (void)wait_on_the_device();
    return real->C_SignUpdate(s, part, length);
}

static CK_RV slow_sign_final(CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
    int fails = wait_on_the_device();
    return as_the_device(fails && sig != NULL, real->C_SignFinal(s, sig, siglen));
}

static CK_RV slow_decrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG length, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
    int fails = wait_on_the_device();
    return as_the_device(fails && out != NULL, real->C_Decrypt(s, in, length, out, outlen));
}

static CK_RV slow_derive(CK_SESSION_HANDLE s, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE base,
                         CK_ATTRIBUTE_PTR template, CK_ULONG count, CK_OBJECT_HANDLE_PTR key)
{
    int fails = wait_on_the_device();
    return as_the_device(fails, real->C_DeriveKey(s, mechanism, base, template, count, key));
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static CK_RV loaded = CKR_GENERAL_ERROR;

static void load_real_module(void)
{
    const char *path = getenv("SLOW_PKCS11_MODULE");
    const char *delay = getenv("SLOW_PKCS11_DELAY_MS");
    CK_C_GetFunctionList get_list;
    void *module;

    delay_ms = delay != NULL ? atol(delay) : 0;
    fault_file = getenv("SLOW_PKCS11_FAULT_FILE");
    if (path == NULL || (module = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL
        || (get_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList")) == NULL
        || get_list(&real) != CKR_OK)
        return;
    forwarded = *real;
    forwarded.C_Sign = slow_sign;
    forwarded.C_SignUpdate = slow_sign_update;
    forwarded.C_SignFinal = slow_sign_final;
    forwarded.C_Decrypt = slow_decrypt;
    forwarded.C_DeriveKey = slow_derive;
    loaded = CKR_OK;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    pthread_once(&once, load_real_module);
    if (loaded != CKR_OK)
        return loaded;
    *list = &forwarded;
    return CKR_OK;
}
