/*
 * The provider's private-key steps: the forward target's own functions, run
 * on the pool inside async jobs (and inline outside them, as the engine does).
 */
#ifndef SWIFTASYNC_PROVIDER_CALLS_H
#define SWIFTASYNC_PROVIDER_CALLS_H

#include <openssl/core.h>

/* Provider parameters of ours: the counters as text, and the forward target. */
#define SA_PROVIDER_PARAM_STATS "swiftasync-stats"
#define SA_PROVIDER_PARAM_FORWARD "forward"

/*
 * The dispatch table we offer for one of the target's algorithms of
 * `operation` (its names as the target gives them): the target's own table,
 * or a copy whose private-key steps go through the pool. NULL if out of memory.
 */
const OSSL_DISPATCH *sa_provider_dispatch(int operation, const char *names,
                                          const OSSL_DISPATCH *theirs);

#endif
