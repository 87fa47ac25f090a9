/*
 * The provider front end: OSSL_provider_init, on the same pool as the engine.
 *
 * Keys stay the forward target's (the default provider, or the one named by
 * `forward` in the provider's openssl.cnf section). At init we load the
 * target into a library context of our own and hand OpenSSL the target's own
 * provider context as ours, and the target's algorithms as ours, under
 * "provider=swiftasync". So every key-manager call, every verify, encrypt,
 * init, parameter and digest-update call is the target's own function,
 * called by OpenSSL directly, with nothing of ours in between and no copy of
 * any OpenSSL structure. Only the private-key steps are replaced
 * (provider_calls.c): they run the target's function on a worker.
 *
 * Why the target's provider context: the target's functions expect it, and
 * nothing of ours needs one (our state is the pool's). Why a library context
 * of our own, not a child of the application's: the target's random
 * generators in a child draw on the parent's, and our workers then hold
 * per-thread state of the parent, which OpenSSL frees with the parent before
 * it tears us down; a worker leaving later crashed on it (TSan found it).
 * A context of our own is freed only here, after the workers that used it
 * have gone (sa_pool_retire). Its fetches never see us either.
 */
#include "provider_calls.h"
#include "swiftasync_shim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#define PROVIDER_NAME "swiftasync"
#define PROPERTIES "provider=swiftasync"

/* One loaded instance: the target in a library context of our own. */
typedef struct provider_instance {
    OSSL_LIB_CTX *context;
    OSSL_PROVIDER *target;
    struct provider_instance *next;
} provider_instance;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static provider_instance *instances;
/* Our algorithm tables, per operation, made from the first target's. */
static OSSL_ALGORITHM *tables[OSSL_OP__HIGHEST + 1];

/* The settings every instance reads from its openssl.cnf section. */
static const char *const settings[] = {
    "THREADS", "QUEUE_DEPTH", "SYNC_OFFLOAD", "NOTIFY_BATCH", "NOTIFY_DELAY_USEC",
    "IDLE_SPIN_USEC", "WORKER_DELAY_USEC", "MULTIBUFFER", "MULTIBUFFER_MIN_FILL",
    "STATS_FILE", "STATS_DIR",
};
#define SETTINGS (sizeof(settings) / sizeof(settings[0]))

static provider_instance *instance_of(void *provctx)
{
    provider_instance *instance;

    for (instance = instances; instance != NULL; instance = instance->next)
        if (OSSL_PROVIDER_get0_provider_ctx(instance->target) == provctx)
            return instance;
    return NULL;
}

/* A copy of the target's algorithms under our property, private-key steps replaced. */
static OSSL_ALGORITHM *our_algorithms(int operation, const OSSL_ALGORITHM *theirs)
{
    size_t count = 0, i;
    OSSL_ALGORITHM *ours;

    while (theirs[count].algorithm_names != NULL)
        count++;
    if ((ours = OPENSSL_zalloc((count + 1) * sizeof(*ours))) == NULL)
        return NULL;
    for (i = 0; i < count; i++) {
        ours[i] = theirs[i];
        ours[i].property_definition = PROPERTIES;
        ours[i].implementation = sa_provider_dispatch(operation, theirs[i].algorithm_names,
                                                      theirs[i].implementation);
        if (ours[i].implementation == NULL) {
            OPENSSL_free(ours);
            return NULL;
        }
    }
    return ours;
}

static const OSSL_ALGORITHM *query_operation(void *provctx, int operation, int *no_cache)
{
    provider_instance *instance;
    const OSSL_ALGORITHM *theirs;
    const OSSL_ALGORITHM *result = NULL;

    *no_cache = 0;
    if (operation != OSSL_OP_KEYMGMT && operation != OSSL_OP_SIGNATURE
        && operation != OSSL_OP_KEYEXCH && operation != OSSL_OP_ASYM_CIPHER)
        return NULL;
    pthread_mutex_lock(&lock);
    if (tables[operation] == NULL && (instance = instance_of(provctx)) != NULL
        && (theirs = OSSL_PROVIDER_query_operation(instance->target, operation, no_cache)) != NULL) {
        tables[operation] = our_algorithms(operation, theirs);
        OSSL_PROVIDER_unquery_operation(instance->target, operation, theirs);
        *no_cache = 0;
    }
    result = tables[operation];
    pthread_mutex_unlock(&lock);
    return result;
}

/* TLS groups and signature algorithms: libssl uses a group only from the provider of its key manager. */
static int get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg)
{
    provider_instance *instance;

    pthread_mutex_lock(&lock);
    instance = instance_of(provctx);
    pthread_mutex_unlock(&lock);
    return instance != NULL && OSSL_PROVIDER_get_capabilities(instance->target, capability, cb, arg);
}

static const OSSL_PARAM *gettable_params(void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
        OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
        OSSL_PARAM_utf8_string(SA_PROVIDER_PARAM_STATS, NULL, 0),
        OSSL_PARAM_END
    };
    (void)provctx;
    return gettable;
}

/* Our name, our status, and the counters as STATS prints them (into the caller's buffer). */
static int get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *param;
    (void)provctx;

    if ((param = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(param, PROVIDER_NAME))
        return 0;
    if ((param = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL
        && !OSSL_PARAM_set_int(param, 1))
        return 0;
    if ((param = OSSL_PARAM_locate(params, SA_PROVIDER_PARAM_STATS)) != NULL) {
        if (param->data == NULL || param->data_size == 0)
            return 0;
        param->return_size = sa_stats_format(param->data, param->data_size);
        return param->return_size < param->data_size;
    }
    return 1;
}

static void teardown(void *provctx)
{
    provider_instance **link, *instance = NULL;

    pthread_mutex_lock(&lock);
    for (link = &instances; *link != NULL; link = &(*link)->next)
        if (OSSL_PROVIDER_get0_provider_ctx((*link)->target) == provctx) {
            instance = *link;
            *link = instance->next;
            break;
        }
    pthread_mutex_unlock(&lock);
    if (instance == NULL)
        return;
    sa_engine_did_finish();
    sa_pool_retire();
    OSSL_PROVIDER_unload(instance->target);
    OSSL_LIB_CTX_free(instance->context);
    OPENSSL_free(instance);
}

static const OSSL_DISPATCH provider_functions[] = {
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))query_operation },
    { OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))get_capabilities },
    { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))gettable_params },
    { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))get_params },
    { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))teardown },
    { 0, NULL }
};

/*
 * The provider's openssl.cnf section: the engine's settings by the same
 * names, and `forward = provider=NAME`, the target (default: the default
 * provider). Returns the target's name.
 */
static const char *apply_configuration(const OSSL_CORE_HANDLE *handle,
                                       OSSL_FUNC_core_get_params_fn *get_core_params)
{
    static char forward[64];
    const char *values[SETTINGS + 1] = { 0 };
    OSSL_PARAM params[SETTINGS + 2];
    size_t i;

    for (i = 0; i < SETTINGS; i++)
        params[i] = OSSL_PARAM_construct_utf8_ptr(settings[i], (char **)&values[i], 0);
    params[SETTINGS] = OSSL_PARAM_construct_utf8_ptr(SA_PROVIDER_PARAM_FORWARD,
                                                     (char **)&values[SETTINGS], 0);
    params[SETTINGS + 1] = OSSL_PARAM_construct_end();
    if (get_core_params == NULL || !get_core_params(handle, params))
        return "default";
    for (i = 0; i < SETTINGS; i++)
        if (values[i] != NULL)
            sa_config_set_string(settings[i], values[i]);
    if (values[SETTINGS] == NULL)
        return "default";
    /* Written "provider=NAME": a bare "default" would name openssl.cnf's default section. */
    if (strncmp(values[SETTINGS], "provider=", 9) == 0)
        values[SETTINGS] += 9;
    OPENSSL_strlcpy(forward, values[SETTINGS], sizeof(forward));
    return forward;
}

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    OSSL_FUNC_core_get_params_fn *get_core_params = NULL;
    const OSSL_DISPATCH *function;
    provider_instance *instance;
    const char *target;

    for (function = in; function->function_id != 0; function++)
        if (function->function_id == OSSL_FUNC_CORE_GET_PARAMS)
            get_core_params = OSSL_FUNC_core_get_params(function);
    target = apply_configuration(handle, get_core_params);
    if ((instance = OPENSSL_zalloc(sizeof(*instance))) == NULL)
        return 0;
    if ((instance->context = OSSL_LIB_CTX_new()) == NULL
        || (instance->target = OSSL_PROVIDER_load(instance->context, target)) == NULL) {
        OSSL_LIB_CTX_free(instance->context);
        OPENSSL_free(instance);
        return 0;
    }
    pthread_mutex_lock(&lock);
    instance->next = instances;
    instances = instance;
    pthread_mutex_unlock(&lock);
    sa_engine_did_init();
    *provctx = OSSL_PROVIDER_get0_provider_ctx(instance->target);
    *out = provider_functions;
    return 1;
}
