/*
 * jose.c - the JOSE pieces OpenID Connect needs beyond veil's own EdDSA JWS
 * (veil/jws.h): RS256 signing with the gateway's RSA key and its JWK
 * (OpenID Connect Discovery requires RS256 to be offered; OpenSSL's libcrypto
 * does RSA, libsodium everything else), and verification of an app's
 * private_key_jwt client assertion against the JWK set it registered
 * (EdDSA/Ed25519 through libsodium, RS256 through libcrypto).
 */
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oidc.h"
#include "veil/codec.h"
#include "veil/jws.h"

#define MAX_JWT 8192

struct gw_rsa {
    EVP_PKEY *pkey;
    char kid[48];
};

static char *b64url_of(const void *p, size_t n)
{
    size_t len = veil_b64url_len(n);
    char *s = malloc(len);
    if (s)
        veil_b64url_encode(s, len, p, n);
    return s;
}

/* Decodes one base64url segment into a fresh NUL-terminated buffer. */
static unsigned char *unb64(const char *s, size_t n, size_t *outlen)
{
    unsigned char *buf = malloc(n + 1);
    size_t got = 0;
    if (!buf)
        return NULL;
    if (veil_b64url_decode(buf, n + 1, s, n, &got) != 0) {
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *outlen = got;
    return buf;
}

static char *bn_b64(const EVP_PKEY *k, const char *name)
{
    BIGNUM *bn = NULL;
    char *out = NULL;
    if (!EVP_PKEY_get_bn_param(k, name, &bn))
        return NULL;
    int n = BN_num_bytes(bn);
    unsigned char *bin = malloc((size_t)n);
    if (bin && BN_bn2bin(bn, bin) == n)
        out = b64url_of(bin, (size_t)n);
    free(bin);
    BN_free(bn);
    return out;
}

veil_err gw_rsa_load(const char *path, gw_rsa **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errbuf, errlen, "%s: cannot open the RS256 key", path);
        return VEIL_ERR_NOT_FOUND;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!k || EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA || EVP_PKEY_get_bits(k) < 2048) {
        EVP_PKEY_free(k);
        snprintf(errbuf, errlen, "%s: not an RSA private key of at least 2048 bits", path);
        return VEIL_ERR_INVALID;
    }
    gw_rsa *r = calloc(1, sizeof *r);
    char *n = bn_b64(k, OSSL_PKEY_PARAM_RSA_N);
    if (!r || !n) {
        free(r);
        free(n);
        EVP_PKEY_free(k);
        return VEIL_ERR_NOMEM;
    }
    /* kid: a short hash of the modulus, stable across restarts and replicas */
    unsigned char h[crypto_generichash_BYTES];
    crypto_generichash(h, sizeof h, (const unsigned char *)n, strlen(n), NULL, 0);
    char hex[17];
    veil_hex_encode(hex, sizeof hex, h, 8);
    snprintf(r->kid, sizeof r->kid, "rs256-%s", hex);
    free(n);
    r->pkey = k;
    *out = r;
    return VEIL_OK;
}

void gw_rsa_free(gw_rsa *r)
{
    if (!r)
        return;
    EVP_PKEY_free(r->pkey);
    free(r);
}

json_t *gw_rsa_jwk(const gw_rsa *r)
{
    char *n = bn_b64(r->pkey, OSSL_PKEY_PARAM_RSA_N), *e = bn_b64(r->pkey, OSSL_PKEY_PARAM_RSA_E);
    json_t *j = n && e ? json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "kid", r->kid,
                                   "use", "sig", "alg", "RS256", "n", n, "e", e)
                       : NULL;
    free(n);
    free(e);
    return j;
}

/* RSASSA-PKCS1-v1_5 with SHA-256 of the signing input (veil_jws_sign_fn). */
static int rsa_sign(void *ctx, const unsigned char *input, size_t n, unsigned char *sig,
                    size_t *siglen)
{
    const gw_rsa *r = ctx;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, r->pkey) == 1 &&
             EVP_DigestSign(md, sig, siglen, input, n) == 1;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

veil_err gw_rsa_sign(const gw_rsa *r, const char *typ, const json_t *claims, char **out)
{
    *out = NULL;
    char *p = json_dumps(claims, JSON_COMPACT);
    if (!p)
        return VEIL_ERR_NOMEM;
    size_t len = strlen(p);
    veil_err err = veil_jws_sign_with("RS256", r->kid, typ, p, len, rsa_sign, (void *)r,
                                      (size_t)EVP_PKEY_get_size(r->pkey), out);
    sodium_memzero(p, len); /* the claims: personal data */
    free(p);
    return err;
}

/* An RSA public key from a JWK's n and e, or NULL. */
static EVP_PKEY *rsa_from_jwk(const json_t *jwk)
{
    const char *n64 = json_string_value(json_object_get(jwk, "n"));
    const char *e64 = json_string_value(json_object_get(jwk, "e"));
    size_t nl, el;
    unsigned char *n = NULL, *e = NULL;
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *bn = NULL, *be = NULL;
    if (!n64 || !e64 || !(n = unb64(n64, strlen(n64), &nl)) || !(e = unb64(e64, strlen(e64), &el)))
        goto out;
    if (nl < 256 || nl > 1024 || el == 0 || el > 8)
        goto out; /* 2048 to 8192 bits */
    bn = BN_bin2bn(n, (int)nl, NULL);
    be = BN_bin2bn(e, (int)el, NULL);
    if (!bn || !be || !(bld = OSSL_PARAM_BLD_new()) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) ||
        EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
out:
    free(n);
    free(e);
    BN_free(bn);
    BN_free(be);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

static int okp_key(const json_t *jwk, unsigned char pk[32])
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const char *x = json_string_value(json_object_get(jwk, "x"));
    size_t n = 0;
    return crv && x && strcmp(crv, "Ed25519") == 0 &&
           veil_b64url_decode(pk, 32, x, strlen(x), &n) == 0 && n == 32;
}

/* Whether one JWK can verify alg ("EdDSA" or "RS256"); 1 yes. */
static int key_fits(const json_t *jwk, const char *alg)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *kalg = json_string_value(json_object_get(jwk, "alg"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    if (!kty || (use && strcmp(use, "sig") != 0) || (kalg && strcmp(kalg, alg) != 0))
        return 0;
    if (strcmp(alg, "EdDSA") == 0)
        return strcmp(kty, "OKP") == 0;
    return strcmp(kty, "RSA") == 0;
}

int gw_jwks_usable(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    json_t *keys = json_object_get(j, "keys");
    int usable = -1;
    if (json_is_array(keys) && json_array_size(keys) <= 16) {
        usable = 0;
        size_t i;
        json_t *k;
        json_array_foreach(keys, i, k)
        {
            unsigned char pk[32];
            if (key_fits(k, "EdDSA") && okp_key(k, pk)) {
                usable++;
            } else if (key_fits(k, "RS256")) {
                EVP_PKEY *p = rsa_from_jwk(k);
                usable += p != NULL;
                EVP_PKEY_free(p);
            }
        }
    }
    json_decref(j);
    return usable;
}

static int verify_with(const json_t *jwk, const char *alg, const char *input, size_t inlen,
                       const unsigned char *sig, size_t siglen)
{
    if (strcmp(alg, "EdDSA") == 0) {
        unsigned char pk[32];
        return okp_key(jwk, pk) && siglen == 64 &&
               crypto_sign_verify_detached(sig, (const unsigned char *)input, inlen, pk) == 0;
    }
    EVP_PKEY *pkey = rsa_from_jwk(jwk);
    EVP_MD_CTX *md = pkey ? EVP_MD_CTX_new() : NULL;
    int ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
             EVP_DigestVerify(md, sig, siglen, (const unsigned char *)input, inlen) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    return ok;
}

veil_err gw_jwt_verify_jwks(const char *jwks_text, const char *jwt, json_t **claims)
{
    veil_err err = VEIL_ERR_INVALID;
    size_t len = strlen(jwt), hl, pl, sl;
    unsigned char *hj = NULL, *pj = NULL, *sig = NULL;
    json_t *header = NULL, *payload = NULL, *jwks = NULL;
    json_error_t je;
    *claims = NULL;
    const char *d1 = memchr(jwt, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(jwt + len - d1 - 1)) : NULL;
    if (len > MAX_JWT || !d1 || !d2 || memchr(d2 + 1, '.', (size_t)(jwt + len - d2 - 1)))
        goto out;
    if (!(hj = unb64(jwt, (size_t)(d1 - jwt), &hl)) ||
        !(pj = unb64(d1 + 1, (size_t)(d2 - d1 - 1), &pl)) ||
        !(sig = unb64(d2 + 1, (size_t)(jwt + len - d2 - 1), &sl)))
        goto out;
    header = json_loadb((const char *)hj, hl, JSON_REJECT_DUPLICATES, &je);
    payload = json_loadb((const char *)pj, pl, JSON_REJECT_DUPLICATES, &je);
    const char *alg = json_string_value(json_object_get(header, "alg"));
    const char *kid = json_string_value(json_object_get(header, "kid"));
    if (!json_is_object(payload) || !alg || (strcmp(alg, "EdDSA") && strcmp(alg, "RS256")) ||
        json_object_get(header, "crit"))
        goto out;
    err = VEIL_ERR_UNAUTHENTICATED;
    jwks = json_loads(jwks_text, JSON_REJECT_DUPLICATES, &je);
    json_t *keys = json_object_get(jwks, "keys");
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *kkid = json_string_value(json_object_get(k, "kid"));
        if (!key_fits(k, alg) || (kid && (!kkid || strcmp(kid, kkid) != 0)))
            continue;
        if (verify_with(k, alg, jwt, (size_t)(d2 - jwt), sig, sl)) {
            *claims = payload;
            payload = NULL;
            err = VEIL_OK;
            break;
        }
    }
out:
    free(hj);
    free(pj);
    free(sig);
    json_decref(header);
    json_decref(payload);
    json_decref(jwks);
    return err;
}
