/* A build without crypto_mb (make MULTIBUFFER=0): every operation is scalar. */
#ifndef SA_WITH_CRYPTO_MB
#include "multibuffer.h"

int sa_mb_available(sa_lane_class lane_class)
{
    (void)lane_class;
    return 0;
}

const char *sa_mb_unavailable_reason(void)
{
    return "not_built";
}

sa_lane_mask sa_mb_rsa_private(const unsigned char *const from[SA_MAX_LANES],
                               unsigned char *const to[SA_MAX_LANES],
                               const RSA *const keys[SA_MAX_LANES], int bits)
{
    (void)from; (void)to; (void)keys; (void)bits;
    return 0;
}

sa_lane_mask sa_mb_rsa_public(const unsigned char *const from[SA_MAX_LANES],
                              unsigned char *const to[SA_MAX_LANES],
                              const RSA *const keys[SA_MAX_LANES], int bits)
{
    (void)from; (void)to; (void)keys; (void)bits;
    return 0;
}

sa_lane_mask sa_mb_x25519(unsigned char *const shared[SA_MAX_LANES],
                          const unsigned char *const private_key[SA_MAX_LANES],
                          const unsigned char *const peer[SA_MAX_LANES])
{
    (void)shared; (void)private_key; (void)peer;
    return 0;
}
#endif
