/*
 * receipt.c - consent receipts: the signers (one Ed25519 key pair per
 * receipt key version, VEIL_KEYS_DIR/receipt-<N>.key), the receipt itself
 * and the JWKS that verifies it.
 *
 * A receipt is a compact JWS (typ veil-consent-receipt+jwt, alg EdDSA, kid
 * receipt-<N>) over
 *   {"iss":"veil-consent","receipt_id":...,"app":...,"attributes":[...],
 *    "purpose":...,"granted_at":<unix s>,"expires_at":<unix s>,"iat":<unix s>}
 * It names no subject: a receipt shown to anyone says what was granted to
 * whom among apps, never by whom.
 */
#include <stdio.h>
#include <stdlib.h>

#include "consent.h"
#include "veil/jws.h"

veil_err consent_receipt_sign(const veil_signer *s, const struct consent_new_grant *g, char **out)
{
    veil_err err = VEIL_ERR_NOMEM;
    *out = NULL;
    json_t *attrs = json_array();
    json_t *payload = NULL;
    for (size_t i = 0; attrs && i < g->n_attributes; i++)
        if (json_array_append_new(attrs, json_string(g->attributes[i])) != 0)
            goto out;
    json_int_t granted = g->granted_at_ms / 1000, expires = g->expires_at_ms / 1000;
    payload =
        json_pack("{s:s, s:s, s:s, s:O, s:s, s:I, s:I, s:I}", "iss", CONSENT_RECEIPT_ISS,
                  "receipt_id", g->receipt_id, "app", g->app_id, "attributes", attrs, "purpose",
                  g->purpose, "granted_at", granted, "expires_at", expires, "iat", granted);
    if (payload)
        err = veil_jws_sign(s, CONSENT_RECEIPT_TYP, payload, out);
out:
    json_decref(attrs);
    json_decref(payload);
    return err;
}

static veil_signer *signer_of(struct consent_signers *s, uint32_t version)
{
    size_t n = atomic_load(&s->count);
    for (size_t i = 0; i < n; i++)
        if (s->by_index[i]->version == version)
            return s->by_index[i];
    return NULL;
}

veil_err consent_signers_update(struct consent *c, char *errbuf, size_t errlen)
{
    struct consent_signers *s = &c->signers;
    uint32_t versions[VEIL_KEYRING_MAX];
    size_t n = veil_keyring_versions(c->keys, versions, VEIL_KEYRING_MAX);
    for (size_t i = 0; i < n; i++) {
        if (signer_of(s, versions[i]))
            continue;
        size_t slot = atomic_load(&s->count);
        veil_err err =
            veil_signer_new(veil_keyring_get(c->keys, versions[i]), "receipt", &s->by_index[slot]);
        if (err) {
            snprintf(errbuf, errlen, "cannot derive receipt key %u (%s)", versions[i],
                     veil_err_name(err));
            return err;
        }
        atomic_store(&s->count, slot + 1);
    }
    /* Chosen once, at start: a key file loaded later is published, never used by itself. */
    if (atomic_load(&s->current))
        return VEIL_OK;
    uint32_t want = c->pinned_version ? c->pinned_version : versions[n - 1];
    veil_signer *current = signer_of(s, want);
    if (!current) {
        snprintf(errbuf, errlen,
                 "CONSENT_RECEIPT_KEY_VERSION: no key file receipt-%u.key is loaded", want);
        return VEIL_ERR_INVALID;
    }
    atomic_store(&s->current, current);
    return VEIL_OK;
}

veil_signer *consent_signer_for(struct consent *c, uint32_t version)
{
    if (version == 0)
        return atomic_load(&c->signers.current);
    veil_signer *s = signer_of(&c->signers, version);
    char err[256];
    /* Named before this replica saw its file: load new key files, once. */
    if (!s && veil_keyring_refresh(c->keys, err, sizeof err) == VEIL_OK &&
        consent_signers_update(c, err, sizeof err) == VEIL_OK)
        s = signer_of(&c->signers, version);
    return s;
}

char *consent_signers_jwks(struct consent_signers *s)
{
    char *text = NULL;
    json_t *keys = json_array();
    size_t n = atomic_load(&s->count);
    for (size_t i = 0; keys && i < n; i++)
        if (json_array_append_new(keys,
                                  veil_jwk_ed25519(s->by_index[i]->kid, s->by_index[i]->pk)) != 0)
            goto out;
    json_t *jwks = json_pack("{s:O}", "keys", keys);
    if (jwks)
        text = json_dumps(jwks, JSON_COMPACT);
    json_decref(jwks);
out:
    json_decref(keys);
    return text;
}

void consent_signers_free(struct consent_signers *s)
{
    size_t n = atomic_load(&s->count);
    for (size_t i = 0; i < n; i++)
        veil_signer_free(s->by_index[i]);
    atomic_store(&s->count, 0);
}
