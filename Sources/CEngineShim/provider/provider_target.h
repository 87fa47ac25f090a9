/*
 * The forward target's own configuration, read from the application's
 * openssl.cnf (provider_target.c).
 */
#ifndef SWIFTASYNC_PROVIDER_TARGET_H
#define SWIFTASYNC_PROVIDER_TARGET_H

#include <openssl/types.h>

/*
 * Declares TARGET in CONTEXT with the lines of the section that
 * `forward_section` names in the section of the provider loaded as
 * PROVIDER_NAME, in FILE (NULL: the application's configuration file),
 * activating it if those lines say so. 1 also when there is no such
 * section; 0, with an error raised, when it cannot be loaded.
 */
int sa_target_configure(OSSL_LIB_CTX *context, const char *provider_name, const char *target,
                        const char *file);

#endif
