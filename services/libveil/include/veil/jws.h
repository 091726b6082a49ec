/*
 * veil/jws.h - compact JWS (RFC 7515) with EdDSA/Ed25519 (RFC 8037), the one
 * signed-token format veil issues: login assertions, consent receipts, web
 * certificates and Security Event Tokens.  Any JOSE library verifies them
 * with the issuer's JWKS.
 */
#ifndef VEIL_JWS_H
#define VEIL_JWS_H

#include <stddef.h>
#include <jansson.h>

#include "veil/err.h"
#include "veil/keys.h"

#define VEIL_JWS_MAX 16384 /* longest token accepted for parsing */

/*
 * Signs payload (a JSON object) as a compact JWS with header
 * {"alg":"EdDSA","kid":<signer kid>,"typ":typ}.  *out is malloc'd.
 */
veil_err veil_jws_sign(const veil_signer *s, const char *typ, const json_t *payload,
                       char **out) VEIL_WUR;

/*
 * The same with the payload already serialised (payload[0..len), a JSON
 * object in UTF-8), for callers that write their claims without building a
 * jansson tree.  The header is written directly (veil_buf_json_str); the
 * token is byte-identical to veil_jws_sign's for the payload json_dumps
 * (JSON_COMPACT) would give.
 */
veil_err veil_jws_sign_json(const veil_signer *s, const char *typ, const char *payload,
                            size_t len, char **out) VEIL_WUR;

/*
 * Signs input[0..n) (the JWS signing input) into sig, at most *siglen bytes;
 * sets *siglen to the signature's length.  0 on success.
 */
typedef int (*veil_jws_sign_fn)(void *ctx, const unsigned char *input, size_t n,
                                unsigned char *sig, size_t *siglen);

/*
 * The compact JWS of payload[0..len) with header {"alg":alg,"kid":kid,"typ":typ}
 * (written directly, in that order) signed by sign(ctx, ...), whose
 * signatures are at most sig_max bytes: for algorithms other than EdDSA (the
 * gateway's RS256 ID tokens).  *out is malloc'd.  VEIL_ERR_INTERNAL when sign
 * fails.
 */
veil_err veil_jws_sign_with(const char *alg, const char *kid, const char *typ,
                            const char *payload, size_t len, veil_jws_sign_fn sign, void *ctx,
                            size_t sig_max, char **out) VEIL_WUR;

/*
 * json_decref that first zeroes every string value (object and array members
 * too) when this is the last reference: for claims that hold personal data.
 */
void veil_json_wipe_decref(json_t *j);

/* Finds the Ed25519 public key (32 bytes) of a kid, or NULL. */
typedef const unsigned char *(*veil_jws_key_fn)(void *ctx, const char *kid);

/*
 * Parses and verifies a compact JWS.  Requires alg EdDSA, a kid the lookup
 * knows, typ equal to want_typ when that is not NULL, and a JSON-object
 * payload without duplicate keys.  On VEIL_OK *payload is the payload (free
 * with json_decref); otherwise VEIL_ERR_INVALID (malformed) or
 * VEIL_ERR_UNAUTHENTICATED (unknown kid, bad signature).
 */
veil_err veil_jws_verify(const char *jws, size_t len, const char *want_typ, veil_jws_key_fn keys,
                         void *ctx, json_t **payload) VEIL_WUR;

/* A JWK for an Ed25519 public key, with kid, use "sig" and alg "EdDSA". */
json_t *veil_jwk_ed25519(const char *kid, const unsigned char pk[32]);

/* A parsed JWKS, for verifiers (veilctl, tests). */
typedef struct veil_jwks {
    size_t n;
    struct {
        char kid[48];
        unsigned char pk[32];
    } keys[16];
} veil_jwks;

/* Parses a JWKS; OKP/Ed25519 keys are kept, others skipped. */
veil_err veil_jwks_parse(const char *json, veil_jwks *out) VEIL_WUR;

/* veil_jws_key_fn over a veil_jwks (ctx is the veil_jwks). */
const unsigned char *veil_jwks_find(void *jwks, const char *kid);

#endif
