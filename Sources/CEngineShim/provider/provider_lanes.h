/*
 * The provider's way into the 8-lane math. The target's operation contexts
 * are opaque, so we remember which key each was initialised with (noted at
 * sign/derive init and set_peer, forgotten at free and at any other init),
 * and read a key's numbers with the target's own key-manager export, on the
 * worker, just before the lanes run. Anything unusual leaves the record to
 * the target's function, which then gives the target's result and errors.
 */
#ifndef SWIFTASYNC_PROVIDER_LANES_H
#define SWIFTASYNC_PROVIDER_LANES_H

#include "provider_record.h"

typedef int (*get_params_fn)(void *object, OSSL_PARAM params[]);

/* Is `name` the first of the target's names (separated by ':')? */
int sa_first_name_is(const char *names, const char *name);

/* The target's key managers whose keys the lanes read (RSA, EC, X25519). */
void sa_lanes_note_key_manager(const char *names, const OSSL_DISPATCH *functions);

/* The key (or peer) an operation context was initialised with. */
void sa_lanes_note_key(void *ctx, void *keydata);
/*
 * A digest-sign context: its key, and a digest of our own that follows the
 * data (the target's is out of reach), of the digest the context names.
 */
void sa_lanes_note_digest_sign(void *ctx, void *keydata, get_params_fn get_ctx_params);
void sa_lanes_digest_update(void *ctx, const unsigned char *data, size_t length);
void sa_lanes_note_peer(void *ctx, void *peer);
void sa_lanes_forget(void *ctx);
void sa_lanes_copy(void *from, void *to);

/*
 * Gives the record a lane class, and what its lanes need, where its key,
 * the context's settings (read with the target's get_ctx_params) and the
 * sizes qualify; else leaves it to be computed one at a time.
 */
/*
 * A generation context of the EC, X25519 or X448 key manager: the provider
 * context its keys are made in, whether it makes parameters only (a TLS 1.3
 * server makes the peer's X25519 "parameters" this way: nothing to offload,
 * nothing to count), and whether its settings are ones the lanes reproduce
 * (EC: a named curve, from its parameters or its template). Forgotten with
 * sa_lanes_forget at gen_cleanup.
 */
void sa_lanes_note_generation(void *genctx, void *provctx, int selection, const OSSL_PARAM params[]);
int sa_lanes_makes_parameters_only(void *genctx);
void sa_lanes_note_generation_params(void *genctx, const OSSL_PARAM params[]);
void sa_lanes_note_generation_template(void *genctx, void *template_keydata);

typedef enum lanes_input {
    LANES_SIGN_DIGEST,            /* sign: the record's input is the digest */
    LANES_SIGN_MESSAGE,           /* one-shot digest-sign: the input is the message */
    LANES_SIGN_FINAL,             /* digest-sign final: the digest is ours, of what went by */
    LANES_DERIVE,
    LANES_GENERATE,               /* key-pair generation: the record's ctx is the generation context */
} lanes_input;

void sa_lanes_attach(call_record *record, lanes_input input, get_params_fn get_ctx_params);

/* The record kind's 8-lane step: see sa_record_kind.compute_lanes. */
int sa_provider_compute_lanes(sa_record *records[], int count, int in_lanes[]);

#endif
