/*
 * What a lane takes, formed as OpenSSL's own code would form it: which keys
 * qualify for the 8-lane math, the padded number an RSA lane raises, the
 * nonce an ECDSA lane signs with, the X25519 peers the lanes compute right.
 * Both front ends (engine/ and provider/) build their lanes with these.
 */
#ifndef SWIFTASYNC_LANE_INPUTS_H
#define SWIFTASYNC_LANE_INPUTS_H

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include "swiftasync_shim.h"

#define SA_RSA_LANE_MAX_BYTES 512      /* RSA-4096 */
#define SA_EC_LANE_MAX_BYTES 66        /* P-521 */
#define SA_X25519_BYTES 32

/* Two-prime keys with CRT parameters, e = 65537 and odd primes of half the size, by modulus size. */
sa_lane_class sa_rsa_lane_class(const RSA *rsa);
/*
 * The number an RSA lane raises to d: `input` padded as OpenSSL's software
 * method pads it for a sign (PKCS#1 type 1, X9.31, none), or as is for a
 * decryption; `size` bytes, below the modulus. 0: the lane goes to OpenSSL's code.
 */
int sa_rsa_lane_input(const RSA *rsa, int sign, int padding, const unsigned char *input,
                      int input_length, unsigned char *padded, int size);

/* P-256, P-384, P-521 by curve NID; else none. */
sa_lane_class sa_ec_lane_class(int curve_nid);
/* A private key the lanes take as OpenSSL's code would: 0 < d < order; else NULL. */
const BIGNUM *sa_ec_lane_private_key(const EC_GROUP *group, const BIGNUM *d);
/* OpenSSL's draw of a private key or a nonce without a digest: uniform in [1, order). */
BIGNUM *sa_ec_random_below_order(const EC_GROUP *group);
/*
 * A signing nonce as OpenSSL's software ECDSA makes one (from d, the digest
 * and fresh randomness), and in `message` (`size` bytes) the digest cut to
 * the order's bits, as the lanes sign it. NULL on failure.
 */
BIGNUM *sa_ec_nonce_and_message(const EC_GROUP *group, const BIGNUM *d,
                                const unsigned char *digest, int digest_length,
                                unsigned char *message, int size);

/*
 * The signature an ECDSA lane computed, from its r and s (`size` bytes each);
 * NULL for a zero r or s, which makes OpenSSL draw another nonce: left to it.
 */
ECDSA_SIG *sa_ecdsa_lane_signature(const unsigned char *r, const unsigned char *s, int size);

/* Whether the 8-lane X25519 computes this peer's u right (see lane_inputs.c). */
int sa_x25519_peer_in_lanes(const unsigned char u[SA_X25519_BYTES]);
/* Constant-time: 1 if all bytes are zero (a low-order peer's X25519 result). */
int sa_all_zero(const unsigned char *bytes, size_t length);

#endif
