#ifndef SWIFTASYNC_COPENSSL_H
#define SWIFTASYNC_COPENSSL_H
/* The ENGINE API is deprecated in OpenSSL 3.0 but is what this project is. */
#ifndef OPENSSL_API_COMPAT
#define OPENSSL_API_COMPAT 0x10101000L
#endif
#include <openssl/async.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>

/* Function forms of the macros Swift cannot import (harness and tools only). */
static inline int harness_ctx_set_max_proto_version(SSL_CTX *ctx, int version)
{ return (int)SSL_CTX_set_max_proto_version(ctx, version); }
static inline long harness_ctx_set_mode(SSL_CTX *ctx, long mode)
{ return SSL_CTX_set_mode(ctx, mode); }
static inline long harness_ctx_disable_resumption(SSL_CTX *ctx)
{
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}
static inline int harness_ctx_set1_groups_list(SSL_CTX *ctx, const char *groups)
{ return (int)SSL_CTX_set1_groups_list(ctx, groups); }
static inline unsigned int harness_engine_method_all(void) { return ENGINE_METHOD_ALL; }

#endif
