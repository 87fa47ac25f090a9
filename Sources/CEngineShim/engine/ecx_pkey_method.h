#ifndef SWIFTASYNC_ECX_PKEY_METHOD_H
#define SWIFTASYNC_ECX_PKEY_METHOD_H

#include <openssl/engine.h>

/* Registers our X25519 and X448 EVP_PKEY_METHODs with the engine. */
int sa_ecx_bind(ENGINE *engine);

#endif
