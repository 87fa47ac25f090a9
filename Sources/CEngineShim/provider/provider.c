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
#include "provider_target.h"
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

/*
 * One loaded instance: the target in a library context of our own. A second
 * target (a PKCS#11 token beside default) is a second instance: the same
 * module under another name in openssl.cnf's providers section. Why not one
 * instance with several targets: OpenSSL hands every function of a provider
 * one provider context, and a target's functions need their own; keys bind
 * their operations to the provider of their key manager, so each key finds
 * its target by itself.
 */
typedef struct provider_instance {
    OSSL_LIB_CTX *context;
    OSSL_PROVIDER *target;
    /* 0: the target is the default provider; else it is a key store, with these workers of its own */
    int pool;
    /* Our algorithm tables, per operation, made from the target's. */
    OSSL_ALGORITHM *tables[OSSL_OP__HIGHEST + 1];
    struct provider_instance *next;
} provider_instance;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static provider_instance *instances;

/* Room for the settings an instance's openssl.cnf section may give (Swift names them). */
#define SETTINGS 32

static provider_instance *instance_of(void *provctx)
{
    provider_instance *instance;

    for (instance = instances; instance != NULL; instance = instance->next)
        if (OSSL_PROVIDER_get0_provider_ctx(instance->target) == provctx)
            return instance;
    return NULL;
}

/* The target's property definition with its provider= replaced by ours (allocated). */
static char *our_properties(const char *theirs)
{
    char buffer[256];
    const char *rest = theirs, *end;
    size_t used;

    OPENSSL_strlcpy(buffer, PROPERTIES, sizeof(buffer));
    while (rest != NULL && *rest != '\0') {
        end = strchr(rest, ',');
        used = end != NULL ? (size_t)(end - rest) : strlen(rest);
        if (used > 0 && strncmp(rest, "provider=", 9) != 0 && strlen(buffer) + used + 2 < sizeof(buffer)) {
            strcat(buffer, ",");
            strncat(buffer, rest, used);
        }
        rest = end != NULL ? end + 1 : NULL;
    }
    return OPENSSL_strdup(buffer);
}

static void free_algorithms(OSSL_ALGORITHM *ours)
{
    OSSL_ALGORITHM *algorithm;

    for (algorithm = ours; algorithm != NULL && algorithm->algorithm_names != NULL; algorithm++)
        OPENSSL_free((char *)algorithm->property_definition);
    OPENSSL_free(ours);
}

/* A copy of the target's algorithms under our property, private-key steps replaced. */
static OSSL_ALGORITHM *our_algorithms(const provider_instance *instance, int operation,
                                      const OSSL_ALGORITHM *theirs)
{
    size_t count = 0, i;
    OSSL_ALGORITHM *ours;

    while (theirs[count].algorithm_names != NULL)
        count++;
    if ((ours = OPENSSL_zalloc((count + 1) * sizeof(*ours))) == NULL)
        return NULL;
    for (i = 0; i < count; i++) {
        ours[i] = theirs[i];
        ours[i].property_definition = our_properties(theirs[i].property_definition);
        ours[i].implementation = sa_provider_dispatch(instance->pool, operation, theirs[i].algorithm_names,
                                                      theirs[i].implementation);
        if (ours[i].implementation == NULL || ours[i].property_definition == NULL) {
            free_algorithms(ours);
            return NULL;
        }
    }
    return ours;
}

/*
 * Which of the target's operations we offer: those with private-key steps;
 * from a key store also its loaders, decoders and encoders, so that its keys
 * (pkcs11: URIs, PEM files holding one) load as keys of ours. The default
 * provider's keys are plain data OpenSSL copies to us itself.
 */
static int offered(const provider_instance *instance, int operation)
{
    switch (operation) {
    case OSSL_OP_KEYMGMT:
    case OSSL_OP_SIGNATURE:
    case OSSL_OP_KEYEXCH:
    case OSSL_OP_ASYM_CIPHER:
        return 1;
    case OSSL_OP_STORE:
    case OSSL_OP_DECODER:
    case OSSL_OP_ENCODER:
        return instance->pool > 0;
    default:
        return 0;
    }
}

static const OSSL_ALGORITHM *query_operation(void *provctx, int operation, int *no_cache)
{
    provider_instance *instance;
    const OSSL_ALGORITHM *theirs;
    const OSSL_ALGORITHM *result = NULL;

    *no_cache = 0;
    if (operation < 0 || operation > OSSL_OP__HIGHEST)
        return NULL;
    pthread_mutex_lock(&lock);
    if ((instance = instance_of(provctx)) != NULL && offered(instance, operation)) {
        if (instance->tables[operation] == NULL
            && (theirs = OSSL_PROVIDER_query_operation(instance->target, operation, no_cache)) != NULL) {
            instance->tables[operation] = our_algorithms(instance, operation, theirs);
            OSSL_PROVIDER_unquery_operation(instance->target, operation, theirs);
            *no_cache = 0;
        }
        result = instance->tables[operation];
    }
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
    int operation;

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
    for (operation = 0; operation <= OSSL_OP__HIGHEST; operation++)
        free_algorithms(instance->tables[operation]);
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

/* What the application's openssl.cnf says of this instance. */
typedef struct instance_configuration {
    const char *values[SETTINGS];   /* the settings given, by sa_config_setting_name index (the core keeps them) */
    char target[64];          /* `forward = provider=NAME`; default: the default provider */
    char name[64];            /* ours in its providers section, where forward_section is looked up */
    char file[512];           /* `forward_config`: the file to look in; default: the application's */
} instance_configuration;

/* The provider's openssl.cnf section: the engine's settings by the same names, and the target. */
static void read_configuration(const OSSL_CORE_HANDLE *handle,
                               OSSL_FUNC_core_get_params_fn *get_core_params,
                               instance_configuration *configuration)
{
    const char *values[SETTINGS + 3] = { 0 };
    OSSL_PARAM params[SETTINGS + 4];
    const char *forward, *name;
    size_t count = 0;

    memset(configuration->values, 0, sizeof(configuration->values));
    OPENSSL_strlcpy(configuration->target, "default", sizeof(configuration->target));
    OPENSSL_strlcpy(configuration->name, PROVIDER_NAME, sizeof(configuration->name));
    configuration->file[0] = '\0';
    for (; count < SETTINGS && (name = sa_config_setting_name((int)count)) != NULL; count++)
        params[count] = OSSL_PARAM_construct_utf8_ptr(name, (char **)&values[count], 0);
    params[count] = OSSL_PARAM_construct_utf8_ptr(SA_PROVIDER_PARAM_FORWARD,
                                                  (char **)&values[SETTINGS], 0);
    params[count + 1] = OSSL_PARAM_construct_utf8_ptr(OSSL_PROV_PARAM_CORE_PROV_NAME,
                                                      (char **)&values[SETTINGS + 1], 0);
    params[count + 2] = OSSL_PARAM_construct_utf8_ptr(SA_PROVIDER_PARAM_FORWARD_CONFIG,
                                                      (char **)&values[SETTINGS + 2], 0);
    params[count + 3] = OSSL_PARAM_construct_end();
    if (get_core_params == NULL || !get_core_params(handle, params))
        return;
    memcpy(configuration->values, values, sizeof(configuration->values));
    if (values[SETTINGS + 1] != NULL)
        OPENSSL_strlcpy(configuration->name, values[SETTINGS + 1], sizeof(configuration->name));
    if (values[SETTINGS + 2] != NULL)
        OPENSSL_strlcpy(configuration->file, values[SETTINGS + 2], sizeof(configuration->file));
    if ((forward = values[SETTINGS]) == NULL)
        return;
    /* Written "provider=NAME": a bare "default" would name openssl.cnf's default section. */
    if (strncmp(forward, "provider=", 9) == 0)
        forward += 9;
    OPENSSL_strlcpy(configuration->target, forward, sizeof(configuration->target));
}

/* The engine's settings to the pool; a key store's to its own workers. */
static void apply_settings(const provider_instance *instance, const instance_configuration *configuration)
{
    size_t i;

    for (i = 0; i < SETTINGS; i++) {
        const char *name = sa_config_setting_name((int)i);

        if (name == NULL || configuration->values[i] == NULL)
            continue;
        if (instance->pool > 0)
            sa_config_set_string_in(instance->pool, name, configuration->values[i]);
        else
            sa_config_set_string(name, configuration->values[i]);
    }
}

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    OSSL_FUNC_core_get_params_fn *get_core_params = NULL;
    const OSSL_DISPATCH *function;
    instance_configuration configuration;
    provider_instance *instance;

    for (function = in; function->function_id != 0; function++)
        if (function->function_id == OSSL_FUNC_CORE_GET_PARAMS)
            get_core_params = OSSL_FUNC_core_get_params(function);
    read_configuration(handle, get_core_params, &configuration);
    if ((instance = OPENSSL_zalloc(sizeof(*instance))) == NULL)
        return 0;
    if (strcmp(configuration.target, "default") != 0)
        instance->pool = sa_pool_register_key_store(configuration.name);
    apply_settings(instance, &configuration);
    if ((instance->context = OSSL_LIB_CTX_new()) == NULL
        || !sa_target_configure(instance->context, configuration.name, configuration.target,
                                configuration.file[0] != '\0' ? configuration.file : NULL)
        || (instance->target = OSSL_PROVIDER_load(instance->context, configuration.target)) == NULL) {
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
