/*
 * The 8-lane math: Intel's crypto_mb (AVX-512 IFMA) where the build links it
 * and the CPU runs it. Each call takes up to eight lanes (unused lanes are
 * NULL) and returns a bit per lane that succeeded. The callers decide what a
 * lane is and what happens to a lane that failed; this layer only computes.
 * multibuffer_crypto_mb.c is the real one, multibuffer_absent.c stands in
 * for a build without crypto_mb (make MULTIBUFFER=0).
 */
#ifndef SWIFTASYNC_MULTIBUFFER_H
#define SWIFTASYNC_MULTIBUFFER_H

#include <openssl/bn.h>
#include <openssl/rsa.h>
#include "swiftasync_shim.h"

typedef unsigned int sa_lane_mask;   /* bit i: lane i succeeded */

int sa_mb_available(sa_lane_class lane_class);
const char *sa_mb_unavailable_reason(void);

/* to[i] = from[i]^d mod n by CRT with keys[i]'s p, q, dP, dQ, qInv; all keys of `bits` bits. */
sa_lane_mask sa_mb_rsa_private(const unsigned char *const from[SA_MAX_LANES],
                               unsigned char *const to[SA_MAX_LANES],
                               const RSA *const keys[SA_MAX_LANES], int bits);
/* to[i] = from[i]^e mod n: the check of a private result against its public key. */
sa_lane_mask sa_mb_rsa_public(const unsigned char *const from[SA_MAX_LANES],
                              unsigned char *const to[SA_MAX_LANES],
                              const RSA *const keys[SA_MAX_LANES], int bits);
/* shared[i] = X25519(private_key[i], peer[i]); 32-byte little-endian strings. */
sa_lane_mask sa_mb_x25519(unsigned char *const shared[SA_MAX_LANES],
                          const unsigned char *const private_key[SA_MAX_LANES],
                          const unsigned char *const peer[SA_MAX_LANES]);

/*
 * EC on one curve (SA_LANES_P256, SA_LANES_P384 or SA_LANES_P521). Points are Jacobian
 * (X:Y:Z) in plain form, Z = 1 for an affine point; byte strings are
 * big-endian and as long as the curve's field.
 */
/* (x, y, z)[i] = private_key[i] * G; x, y, z are the caller's BIGNUMs. */
sa_lane_mask sa_mb_ec_public_key(sa_lane_class curve, BIGNUM *const x[SA_MAX_LANES],
                                 BIGNUM *const y[SA_MAX_LANES], BIGNUM *const z[SA_MAX_LANES],
                                 const BIGNUM *const private_key[SA_MAX_LANES]);
/* shared[i] = the x coordinate of private_key[i] * peer[i]. */
sa_lane_mask sa_mb_ecdh(sa_lane_class curve, unsigned char *const shared[SA_MAX_LANES],
                        const BIGNUM *const private_key[SA_MAX_LANES],
                        const BIGNUM *const peer_x[SA_MAX_LANES],
                        const BIGNUM *const peer_y[SA_MAX_LANES],
                        const BIGNUM *const peer_z[SA_MAX_LANES]);
/* (r, s)[i]: the ECDSA signature of the truncated digest[i] with nonce[i]. */
sa_lane_mask sa_mb_ecdsa_sign(sa_lane_class curve, unsigned char *const r[SA_MAX_LANES],
                              unsigned char *const s[SA_MAX_LANES],
                              const unsigned char *const digest[SA_MAX_LANES],
                              const BIGNUM *const nonce[SA_MAX_LANES],
                              const BIGNUM *const private_key[SA_MAX_LANES]);
/* kinv[i] = 1 / nonce[i] and r[i] = x(nonce[i] * G), both mod the order. */
sa_lane_mask sa_mb_ecdsa_sign_setup(sa_lane_class curve, BIGNUM *const kinv[SA_MAX_LANES],
                                    BIGNUM *const r[SA_MAX_LANES],
                                    const BIGNUM *const nonce[SA_MAX_LANES]);

#endif
