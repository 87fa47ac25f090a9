/*
 * The 8-lane math through crypto_mb. Whether the CPU can run a class is
 * asked of crypto_mb itself (mbx_get_algo_info) once, at first use.
 */
#ifdef SA_WITH_CRYPTO_MB
#include "multibuffer.h"

#include <pthread.h>
#include <string.h>
#include <crypto_mb/cpu_features.h>
#include <crypto_mb/ec_nistp256.h>
#include <crypto_mb/ec_nistp384.h>
#include <crypto_mb/ec_nistp521.h>
#include <crypto_mb/rsa.h>
#include <crypto_mb/x25519.h>

static int supported[SA_LANES_CLASS_COUNT];

static int eight_lanes(enum MBX_ALGO algorithm)
{
    return (mbx_get_algo_info(algorithm) & MBX_WIDTH_MB8) != 0;
}

static void ask_the_cpu(void)
{
    supported[SA_LANES_RSA2048] = eight_lanes(MBX_ALGO_RSA_2K);
    supported[SA_LANES_RSA3072] = eight_lanes(MBX_ALGO_RSA_3K);
    supported[SA_LANES_RSA4096] = eight_lanes(MBX_ALGO_RSA_4K);
    supported[SA_LANES_X25519] = eight_lanes(MBX_ALGO_X25519);
    supported[SA_LANES_P256] = eight_lanes(MBX_ALGO_EC_NIST_P256);
    supported[SA_LANES_P384] = eight_lanes(MBX_ALGO_EC_NIST_P384);
    supported[SA_LANES_P521] = eight_lanes(MBX_ALGO_EC_NIST_P521);
}

int sa_mb_available(sa_lane_class lane_class)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, ask_the_cpu);
    return lane_class > SA_LANES_NONE && lane_class < SA_LANES_CLASS_COUNT
        && supported[lane_class];
}

const char *sa_mb_unavailable_reason(void)
{
    return sa_mb_available(SA_LANES_RSA2048) || sa_mb_available(SA_LANES_X25519)
        ? NULL : "cpu_lacks_avx512_ifma";
}

static sa_lane_mask succeeded_lanes(mbx_status status, const void *const used[SA_MAX_LANES])
{
    sa_lane_mask mask = 0;
    int lane;

    for (lane = 0; lane < SA_MAX_LANES; lane++)
        if (used[lane] != NULL && MBX_GET_STS(status, lane) == MBX_STATUS_OK)
            mask |= 1u << lane;
    return mask;
}

sa_lane_mask sa_mb_rsa_private(const unsigned char *const from[SA_MAX_LANES],
                               unsigned char *const to[SA_MAX_LANES],
                               const RSA *const keys[SA_MAX_LANES], int bits)
{
    const BIGNUM *p[SA_MAX_LANES] = { 0 }, *q[SA_MAX_LANES] = { 0 };
    const BIGNUM *dp[SA_MAX_LANES] = { 0 }, *dq[SA_MAX_LANES] = { 0 }, *qinv[SA_MAX_LANES] = { 0 };
    int lane;

    for (lane = 0; lane < SA_MAX_LANES; lane++)
        if (keys[lane] != NULL) {
            RSA_get0_factors(keys[lane], &p[lane], &q[lane]);
            RSA_get0_crt_params(keys[lane], &dp[lane], &dq[lane], &qinv[lane]);
        }
    return succeeded_lanes(mbx_rsa_private_crt_ssl_mb8(from, to, p, q, dp, dq, qinv, bits),
                           (const void *const *)keys);
}

sa_lane_mask sa_mb_rsa_public(const unsigned char *const from[SA_MAX_LANES],
                              unsigned char *const to[SA_MAX_LANES],
                              const RSA *const keys[SA_MAX_LANES], int bits)
{
    const BIGNUM *n[SA_MAX_LANES] = { 0 }, *e[SA_MAX_LANES] = { 0 };
    int lane;

    for (lane = 0; lane < SA_MAX_LANES; lane++)
        if (keys[lane] != NULL)
            RSA_get0_key(keys[lane], &n[lane], &e[lane], NULL);
    return succeeded_lanes(mbx_rsa_public_ssl_mb8(from, to, e, n, bits),
                           (const void *const *)keys);
}

sa_lane_mask sa_mb_x25519(unsigned char *const shared[SA_MAX_LANES],
                          const unsigned char *const private_key[SA_MAX_LANES],
                          const unsigned char *const peer[SA_MAX_LANES])
{
    return succeeded_lanes(mbx_x25519_mb8(shared, private_key, peer),
                           (const void *const *)private_key);
}

sa_lane_mask sa_mb_ec_public_key(sa_lane_class curve, BIGNUM *const x[SA_MAX_LANES],
                                 BIGNUM *const y[SA_MAX_LANES], BIGNUM *const z[SA_MAX_LANES],
                                 const BIGNUM *const private_key[SA_MAX_LANES])
{
    BIGNUM *px[SA_MAX_LANES], *py[SA_MAX_LANES], *pz[SA_MAX_LANES];
    mbx_status status;

    memcpy(px, x, sizeof(px));
    memcpy(py, y, sizeof(py));
    memcpy(pz, z, sizeof(pz));
    status = curve == SA_LANES_P256 ? mbx_nistp256_ecpublic_key_ssl_mb8(px, py, pz, private_key, NULL)
        : curve == SA_LANES_P384 ? mbx_nistp384_ecpublic_key_ssl_mb8(px, py, pz, private_key, NULL)
        : mbx_nistp521_ecpublic_key_ssl_mb8(px, py, pz, private_key, NULL);
    return succeeded_lanes(status, (const void *const *)private_key);
}

sa_lane_mask sa_mb_ecdh(sa_lane_class curve, unsigned char *const shared[SA_MAX_LANES],
                        const BIGNUM *const private_key[SA_MAX_LANES],
                        const BIGNUM *const peer_x[SA_MAX_LANES],
                        const BIGNUM *const peer_y[SA_MAX_LANES],
                        const BIGNUM *const peer_z[SA_MAX_LANES])
{
    unsigned char *out[SA_MAX_LANES];
    mbx_status status;

    memcpy(out, shared, sizeof(out));
    status = curve == SA_LANES_P256 ? mbx_nistp256_ecdh_ssl_mb8(out, private_key, peer_x, peer_y, peer_z, NULL)
        : curve == SA_LANES_P384 ? mbx_nistp384_ecdh_ssl_mb8(out, private_key, peer_x, peer_y, peer_z, NULL)
        : mbx_nistp521_ecdh_ssl_mb8(out, private_key, peer_x, peer_y, peer_z, NULL);
    return succeeded_lanes(status, (const void *const *)private_key);
}

sa_lane_mask sa_mb_ecdsa_sign(sa_lane_class curve, unsigned char *const r[SA_MAX_LANES],
                              unsigned char *const s[SA_MAX_LANES],
                              const unsigned char *const digest[SA_MAX_LANES],
                              const BIGNUM *const nonce[SA_MAX_LANES],
                              const BIGNUM *const private_key[SA_MAX_LANES])
{
    unsigned char *pr[SA_MAX_LANES], *ps[SA_MAX_LANES];
    mbx_status status;

    memcpy(pr, r, sizeof(pr));
    memcpy(ps, s, sizeof(ps));
    status = curve == SA_LANES_P256 ? mbx_nistp256_ecdsa_sign_ssl_mb8(pr, ps, digest, nonce, private_key, NULL)
        : curve == SA_LANES_P384 ? mbx_nistp384_ecdsa_sign_ssl_mb8(pr, ps, digest, nonce, private_key, NULL)
        : mbx_nistp521_ecdsa_sign_ssl_mb8(pr, ps, digest, nonce, private_key, NULL);
    return succeeded_lanes(status, (const void *const *)private_key);
}

sa_lane_mask sa_mb_ecdsa_sign_setup(sa_lane_class curve, BIGNUM *const kinv[SA_MAX_LANES],
                                    BIGNUM *const r[SA_MAX_LANES],
                                    const BIGNUM *const nonce[SA_MAX_LANES])
{
    BIGNUM *pk[SA_MAX_LANES], *pr[SA_MAX_LANES];
    mbx_status status;

    memcpy(pk, kinv, sizeof(pk));
    memcpy(pr, r, sizeof(pr));
    status = curve == SA_LANES_P256 ? mbx_nistp256_ecdsa_sign_setup_ssl_mb8(pk, pr, nonce, NULL)
        : curve == SA_LANES_P384 ? mbx_nistp384_ecdsa_sign_setup_ssl_mb8(pk, pr, nonce, NULL)
        : mbx_nistp521_ecdsa_sign_setup_ssl_mb8(pk, pr, nonce, NULL);
    return succeeded_lanes(status, (const void *const *)nonce);
}
#endif
