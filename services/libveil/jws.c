/* jws.c - compact JWS with EdDSA (veil/jws.h). */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "veil/codec.h"
#include "veil/jws.h"

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

veil_err veil_jws_sign_with(const char *alg, const char *kid, const char *typ,
                            const char *payload, size_t len, veil_jws_sign_fn sign, void *ctx,
                            size_t sig_max, char **out)
{
    *out = NULL;
    /* {"alg":<alg>,"kid":<kid>,"typ":<typ>}: the order json_pack gave it */
    veil_buf h = {0};
    veil_buf_put(&h, "{\"alg\":", 7);
    veil_buf_json_str(&h, alg, strlen(alg));
    veil_buf_put(&h, ",\"kid\":", 7);
    veil_buf_json_str(&h, kid, strlen(kid));
    veil_buf_put(&h, ",\"typ\":", 7);
    veil_buf_json_str(&h, typ, strlen(typ));
    veil_buf_put(&h, "}", 1);
    unsigned char *sig = malloc(sig_max ? sig_max : 1);
    if (h.failed || !sig) {
        veil_buf_free(&h);
        free(sig);
        return VEIL_ERR_NOMEM;
    }
    /* one buffer: header.payload.signature, each base64url written in place */
    size_t hl = veil_b64url_len(h.len) - 1, pl = veil_b64url_len(len) - 1;
    size_t sl = veil_b64url_len(sig_max);
    char *token = malloc(hl + 1 + pl + 1 + sl);
    if (!token) {
        veil_buf_free(&h);
        free(sig);
        return VEIL_ERR_NOMEM;
    }
    veil_b64url_encode(token, hl + 1, h.data, h.len);
    veil_buf_free(&h);
    token[hl] = '.';
    veil_b64url_encode(token + hl + 1, pl + 1, payload, len);
    size_t siglen = sig_max;
    if (sign(ctx, (const unsigned char *)token, hl + 1 + pl, sig, &siglen) != 0 ||
        siglen > sig_max) {
        sodium_memzero(token, hl + 1 + pl);
        free(token);
        free(sig);
        return VEIL_ERR_INTERNAL;
    }
    token[hl + 1 + pl] = '.';
    veil_b64url_encode(token + hl + 1 + pl + 1, sl, sig, siglen);
    free(sig);
    *out = token;
    return VEIL_OK;
}

static int sign_ed25519(void *ctx, const unsigned char *input, size_t n, unsigned char *sig,
                        size_t *siglen)
{
    veil_signer_sign(ctx, sig, input, n);
    *siglen = crypto_sign_BYTES;
    return 0;
}

veil_err veil_jws_sign_json(const veil_signer *s, const char *typ, const char *payload,
                            size_t len, char **out)
{
    return veil_jws_sign_with("EdDSA", s->kid, typ, payload, len, sign_ed25519, (void *)s,
                              crypto_sign_BYTES, out);
}

veil_err veil_jws_sign(const veil_signer *s, const char *typ, const json_t *payload, char **out)
{
    *out = NULL;
    char *pjson = json_dumps(payload, JSON_COMPACT);
    if (!pjson)
        return VEIL_ERR_NOMEM;
    veil_err err = veil_jws_sign_json(s, typ, pjson, strlen(pjson), out);
    wipe_free(pjson);
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
