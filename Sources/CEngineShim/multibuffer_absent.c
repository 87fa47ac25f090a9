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

sa_lane_mask sa_mb_ec_public_key(sa_lane_class curve, BIGNUM *const x[SA_MAX_LANES],
                                 BIGNUM *const y[SA_MAX_LANES], BIGNUM *const z[SA_MAX_LANES],
                                 const BIGNUM *const private_key[SA_MAX_LANES])
{
    (void)curve; (void)x; (void)y; (void)z; (void)private_key;
    return 0;
}

sa_lane_mask sa_mb_ecdh(sa_lane_class curve, unsigned char *const shared[SA_MAX_LANES],
                        const BIGNUM *const private_key[SA_MAX_LANES],
                        const BIGNUM *const peer_x[SA_MAX_LANES],
                        const BIGNUM *const peer_y[SA_MAX_LANES],
                        const BIGNUM *const peer_z[SA_MAX_LANES])
{
    (void)curve; (void)shared; (void)private_key; (void)peer_x; (void)peer_y; (void)peer_z;
    return 0;
}

sa_lane_mask sa_mb_ecdsa_sign(sa_lane_class curve, unsigned char *const r[SA_MAX_LANES],
                              unsigned char *const s[SA_MAX_LANES],
                              const unsigned char *const digest[SA_MAX_LANES],
                              const BIGNUM *const nonce[SA_MAX_LANES],
                              const BIGNUM *const private_key[SA_MAX_LANES])
{
    (void)curve; (void)r; (void)s; (void)digest; (void)nonce; (void)private_key;
    return 0;
}

sa_lane_mask sa_mb_ecdsa_sign_setup(sa_lane_class curve, BIGNUM *const kinv[SA_MAX_LANES],
                                    BIGNUM *const r[SA_MAX_LANES],
                                    const BIGNUM *const nonce[SA_MAX_LANES])
{
    (void)curve; (void)kinv; (void)r; (void)nonce;
    return 0;
}
#endif
