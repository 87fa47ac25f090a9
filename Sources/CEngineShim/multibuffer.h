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

#endif
