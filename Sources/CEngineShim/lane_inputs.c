#include "lane_inputs.h"

#include <string.h>
#include <openssl/objects.h>
#include <openssl/rand.h>

/*
 * The 8-lane call takes odd primes of half the modulus size and CRT values
 * no larger. An even "prime" makes OpenSSL's software fail (no Montgomery
 * form, BN_R_NO_INVERSE) where the lanes would compute, and pass the public
 * check, for inputs like 0 (the fuzzer found it): such keys stay scalar.
 */
static int crt_fits(const BIGNUM *const values[5], int half)
{
    int i;

    for (i = 0; i < 5; i++)
        if (values[i] == NULL || BN_is_negative(values[i])
            || BN_num_bits(values[i]) > half
            || (i < 2 && (BN_num_bits(values[i]) != half || !BN_is_odd(values[i]))))
            return 0;
    return 1;
}

sa_lane_class sa_rsa_lane_class(const RSA *rsa)
{
    const BIGNUM *crt[5], *e;
    int bits = RSA_bits(rsa);

    RSA_get0_factors(rsa, &crt[0], &crt[1]);
    RSA_get0_crt_params(rsa, &crt[2], &crt[3], &crt[4]);
    RSA_get0_key(rsa, NULL, &e, NULL);
    if (e == NULL || !BN_is_word(e, RSA_F4) || !crt_fits(crt, bits / 2)
        || RSA_get_multi_prime_extra_count(rsa) != 0
        || RSA_test_flags(rsa, RSA_FLAG_EXT_PKEY))
        return SA_LANES_NONE;
    switch (bits) {
    case 2048: return SA_LANES_RSA2048;
    case 3072: return SA_LANES_RSA3072;
    case 4096: return SA_LANES_RSA4096;
    default: return SA_LANES_NONE;
    }
}

static int below_modulus(const unsigned char *value, const RSA *rsa, int size)
{
    unsigned char modulus[SA_RSA_LANE_MAX_BYTES];

    return size <= SA_RSA_LANE_MAX_BYTES && BN_bn2binpad(RSA_get0_n(rsa), modulus, size) == size
        && memcmp(value, modulus, (size_t)size) < 0;
}

int sa_rsa_lane_input(const RSA *rsa, int sign, int padding, const unsigned char *input,
                      int input_length, unsigned char *padded, int size)
{
    int ok;

    if (sign) {
        switch (padding) {
        case RSA_PKCS1_PADDING:
            ok = RSA_padding_add_PKCS1_type_1(padded, size, input, input_length);
            break;
        case RSA_X931_PADDING:
            ok = RSA_padding_add_X931(padded, size, input, input_length);
            break;
        case RSA_NO_PADDING:
            ok = RSA_padding_add_none(padded, size, input, input_length);
            break;
        default:
            ok = 0;
            break;
        }
    } else {
        ok = input_length <= size;
        if (ok) {
            size_t zeros = (size_t)(size - input_length);
            memset(padded, 0, zeros);
            memcpy(padded + zeros, input, (size_t)input_length);
        }
    }
    return ok > 0 && below_modulus(padded, rsa, size);
}

sa_lane_class sa_ec_lane_class(int curve_nid)
{
    switch (curve_nid) {
    case NID_X9_62_prime256v1: return SA_LANES_P256;
    case NID_secp384r1: return SA_LANES_P384;
    case NID_secp521r1: return SA_LANES_P521;
    default: return SA_LANES_NONE;
    }
}

const BIGNUM *sa_ec_lane_private_key(const EC_GROUP *group, const BIGNUM *d)
{
    const BIGNUM *order = EC_GROUP_get0_order(group);

    return d != NULL && !BN_is_zero(d) && !BN_is_negative(d) && BN_cmp(d, order) < 0 ? d : NULL;
}

BIGNUM *sa_ec_random_below_order(const EC_GROUP *group)
{
    BIGNUM *value = BN_secure_new();

    if (value == NULL)
        return NULL;
    do {
        if (!BN_priv_rand_range_ex(value, EC_GROUP_get0_order(group), 0, NULL)) {
            BN_clear_free(value);
            return NULL;
        }
    } while (BN_is_zero(value));
    return value;
}

/* The nonce from the digest cut to whole bytes of the order's length; the message cut to its bits. */
BIGNUM *sa_ec_nonce_and_message(const EC_GROUP *group, const BIGNUM *d,
                                const unsigned char *digest, int digest_length,
                                unsigned char *message, int size)
{
    const BIGNUM *order = EC_GROUP_get0_order(group);
    int bits = BN_num_bits(order), length = digest_length;
    BIGNUM *nonce = BN_secure_new(), *m = NULL;
    int ok = nonce != NULL;

    if (8 * length > bits)
        length = (bits + 7) / 8;
    while (ok) {
        ok = BN_generate_dsa_nonce(nonce, order, d, digest, (size_t)length, NULL);
        if (!BN_is_zero(nonce))
            break;
    }
    ok = ok && (m = BN_bin2bn(digest, length, NULL)) != NULL
        && (8 * length <= bits || BN_rshift(m, m, 8 - (bits & 7)))
        && BN_bn2binpad(m, message, size) == size;
    BN_free(m);
    if (!ok) {
        BN_clear_free(nonce);
        return NULL;
    }
    return nonce;
}

ECDSA_SIG *sa_ecdsa_lane_signature(const unsigned char *r, const unsigned char *s, int size)
{
    BIGNUM *r_number = BN_bin2bn(r, size, NULL), *s_number = BN_bin2bn(s, size, NULL);
    ECDSA_SIG *signature = NULL;

    if (r_number != NULL && s_number != NULL && !BN_is_zero(r_number) && !BN_is_zero(s_number)
        && (signature = ECDSA_SIG_new()) != NULL && ECDSA_SIG_set0(signature, r_number, s_number))
        return signature;
    ECDSA_SIG_free(signature);
    BN_free(r_number);
    BN_free(s_number);
    return NULL;
}

/*
 * The 8-lane X25519 gives a wrong secret for some peers whose u is nearly all
 * one bits (the fuzzer found two; in a sweep of 20,000 random dense peers
 * none with fewer than 240 one bits of 255 was wrong, up to 1% above 250).
 * An honest peer has about 128 (odds of 160 or more: 3 in 100,000), so a
 * peer with 160 or more goes to OpenSSL's code. u is public.
 */
int sa_x25519_peer_in_lanes(const unsigned char u[SA_X25519_BYTES])
{
    int i, ones = 0;

    for (i = 0; i < SA_X25519_BYTES; i++)
        ones += __builtin_popcount(i == SA_X25519_BYTES - 1 ? u[i] & 0x7f : u[i]);
    return ones < 160;
}

int sa_all_zero(const unsigned char *bytes, size_t length)
{
    unsigned int accumulated = 0;
    size_t i;

    for (i = 0; i < length; i++)
        accumulated |= bytes[i];
    return (int)(1u & ((accumulated - 1u) >> 8));
}
