/*
 * The provider's private-key steps: the forward target's own functions, run
 * on the pool inside async jobs (and inline outside them, as the engine does).
 */
#ifndef SWIFTASYNC_PROVIDER_CALLS_H
#define SWIFTASYNC_PROVIDER_CALLS_H

#include <openssl/core.h>

/* Provider parameters of ours: the counters as text, the forward target, the file of its section. */
#define SA_PROVIDER_PARAM_STATS "swiftasync-stats"
#define SA_PROVIDER_PARAM_FORWARD "forward"
#define SA_PROVIDER_PARAM_FORWARD_CONFIG "forward_config"

/*
 * The dispatch table we offer for one of the target's algorithms of
 * `operation` (its names as the target gives them): the target's own table,
 * or a copy whose private-key steps go through the pool. POOL says what the
 * target is: 0, OpenSSL's default provider (its math, in lanes where they
 * apply, on the engine's pool); else a key store (a PKCS#11 token) whose every
 * step that may reach its device runs on that pool of its own
 * (sa_pool_register_key_store). NULL if out of memory.
 */
const OSSL_DISPATCH *sa_provider_dispatch(int pool, int operation, const char *names,
                                          const OSSL_DISPATCH *theirs);

#endif
