/* jws.c - compact JWS with EdDSA (veil/jws.h). */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "veil/codec.h"
#include "veil/jws.h"

static char *b64url_of(const void *p, size_t n)
{
    size_t cap = veil_b64url_len(n);
    char *s = malloc(cap);
    if (s)
        veil_b64url_encode(s, cap, p, n);
    return s;
}

/* Frees a string that held claims (personal data), zeroed first. */
static void wipe_free(char *p)
{
    if (p) {
        sodium_memzero(p, strlen(p));
        free(p);
    }
}

/* Zeroes the string values of j and of members nothing else references. */
static void wipe_values(json_t *j)
{
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_string(j))
        sodium_memzero((char *)json_string_value(j), json_string_length(j));
    else if (json_is_object(j)) {
        json_object_foreach(j, key, v) if (v->refcount == 1) wipe_values(v);
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v) if (v->refcount == 1) wipe_values(v);
    }
}

void veil_json_wipe_decref(json_t *j)
{
    /* Only the last reference wipes: others still use the values. */
    if (j && j->refcount == 1)
        wipe_values(j);
    json_decref(j);
}

veil_err veil_jws_sign(const veil_signer *s, const char *typ, const json_t *payload, char **out)
{
    veil_err err = VEIL_ERR_NOMEM;
    char *hjson = NULL, *pjson = NULL, *h64 = NULL, *p64 = NULL, *token = NULL;
    *out = NULL;
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "kid", s->kid, "typ", typ);
    if (!header)
        goto out;
    hjson = json_dumps(header, JSON_COMPACT);
    pjson = json_dumps(payload, JSON_COMPACT);
    if (!hjson || !pjson)
        goto out;
    h64 = b64url_of(hjson, strlen(hjson));
    p64 = b64url_of(pjson, strlen(pjson));
    if (!h64 || !p64)
        goto out;
    size_t hl = strlen(h64), pl = strlen(p64);
    size_t siglen64 = veil_b64url_len(64);
    token = malloc(hl + 1 + pl + 1 + siglen64);
    if (!token)
        goto out;
    memcpy(token, h64, hl);
    token[hl] = '.';
    memcpy(token + hl + 1, p64, pl);
    unsigned char sig[64];
    veil_signer_sign(s, sig, token, hl + 1 + pl);
    token[hl + 1 + pl] = '.';
    veil_b64url_encode(token + hl + 1 + pl + 1, siglen64, sig, sizeof sig);
    *out = token;
    token = NULL;
    err = VEIL_OK;
out:
    json_decref(header);
    free(hjson);
    wipe_free(pjson);
    free(h64);
    wipe_free(p64);
    free(token);
    return err;
}

/* Decodes one base64url segment into a fresh NUL-terminated buffer. */
static unsigned char *segment(const char *s, size_t n, size_t *outlen)
{
    unsigned char *buf = malloc(n + 1);
    if (!buf)
        return NULL;
    if (veil_b64url_decode(buf, n + 1, s, n, outlen) != 0) {
        free(buf);
        return NULL;
    }
    buf[*outlen] = '\0';
    return buf;
}

veil_err veil_jws_verify(const char *jws, size_t len, const char *want_typ, veil_jws_key_fn keys,
                         void *ctx, json_t **payload)
{
    veil_err err = VEIL_ERR_INVALID;
    unsigned char *hbuf = NULL, *pbuf = NULL, *sbuf = NULL;
    json_t *header = NULL, *body = NULL;
    *payload = NULL;

    if (len == 0 || len > VEIL_JWS_MAX || memchr(jws, '\0', len))
        goto out;
    const char *d1 = memchr(jws, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - jws)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - jws)))
        goto out;
    size_t hl, pl, sl;
    hbuf = segment(jws, (size_t)(d1 - jws), &hl);
    pbuf = segment(d1 + 1, (size_t)(d2 - d1 - 1), &pl);
    sbuf = segment(d2 + 1, len - (size_t)(d2 + 1 - jws), &sl);
    if (!hbuf || !pbuf || !sbuf || sl != crypto_sign_BYTES)
        goto out;
    json_error_t je;
    header = json_loadb((const char *)hbuf, hl, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(header))
        goto out;
    const char *alg = json_string_value(json_object_get(header, "alg"));
    const char *kid = json_string_value(json_object_get(header, "kid"));
    const char *typ = json_string_value(json_object_get(header, "typ"));
    if (!alg || strcmp(alg, "EdDSA") != 0 || !kid || json_object_get(header, "crit"))
        goto out;
    if (want_typ && (!typ || strcmp(typ, want_typ) != 0))
        goto out;
    const unsigned char *pk = keys(ctx, kid);
    if (!pk) {
        err = VEIL_ERR_UNAUTHENTICATED;
        goto out;
    }
    if (crypto_sign_verify_detached(sbuf, (const unsigned char *)jws, (size_t)(d2 - jws), pk) !=
        0) {
        err = VEIL_ERR_UNAUTHENTICATED;
        goto out;
    }
    body = json_loadb((const char *)pbuf, pl, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(body))
        goto out;
    *payload = body;
    body = NULL;
    err = VEIL_OK;
out:
    json_decref(header);
    json_decref(body);
    free(hbuf);
    free(pbuf);
    free(sbuf);
    return err;
}

json_t *veil_jwk_ed25519(const char *kid, const unsigned char pk[32])
{
    char x[64];
    veil_b64url_encode(x, sizeof x, pk, 32);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", x,
                     "kid", kid, "use", "sig", "alg", "EdDSA");
}

veil_err veil_jwks_parse(const char *json, veil_jwks *out)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        json_decref(root);
        return VEIL_ERR_INVALID;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *crv = json_string_value(json_object_get(k, "crv"));
        const char *x = json_string_value(json_object_get(k, "x"));
        const char *kid = json_string_value(json_object_get(k, "kid"));
        size_t n;
        if (!kty || !crv || !x || !kid || strcmp(kty, "OKP") || strcmp(crv, "Ed25519") ||
            strlen(kid) >= sizeof out->keys[0].kid || out->n == 16)
            continue;
        if (veil_b64url_decode(out->keys[out->n].pk, 32, x, strlen(x), &n) != 0 || n != 32)
            continue;
        memcpy(out->keys[out->n].kid, kid, strlen(kid) + 1);
        out->n++;
    }
    json_decref(root);
    return VEIL_OK;
}

const unsigned char *veil_jwks_find(void *ctx, const char *kid)
{
    const veil_jwks *j = ctx;
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->keys[i].kid, kid) == 0)
            return j->keys[i].pk;
    return NULL;
}
