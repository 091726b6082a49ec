/*
 * fuzz_jws - the web certificate and consent receipt parsers: compact JWS
 * verification (veil_jws_verify: segments, base64url, the JSON header and its
 * alg/kid/typ/crit rules, the signature, then the JSON payload), the claims a
 * wallet reads from a verified certificate or receipt, and JWKS parsing.
 * The first byte picks a mode:
 *
 *   0  the rest is a token, verified as a web certificate, a consent
 *      receipt, an assertion and a Security Event Token;
 *   1  the rest is a header and a payload (u16 length of the header first),
 *      signed with the web-certificate key, so the fuzzer reaches the
 *      header rules and the payload parser behind the signature;
 *   2  the rest is a JWKS;
 *   3  a certificate and a receipt made by the vault's and consent's own
 *      code, one byte of each changed (or none, by the flag).
 *
 * The oracle: what the vault and consent issue verifies and reads back; a
 * token with any byte changed never verifies.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "fuzz.h"
#include "veil/codec.h"
#include "veil/jws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static veil_signer *signer(const char *purpose)
{
    static veil_signer *s[2];
    int i = strcmp(purpose, "webcert") == 0 ? 0 : 1;
    if (!s[i]) {
        char err[256], path[512];
        veil_key *k;
        snprintf(path, sizeof path, "%s/%s-1.key", fz_keys_dir(), purpose);
        if (veil_key_load(path, 1, &k, err, sizeof err) || veil_signer_new(k, purpose, &s[i]))
            abort();
        veil_key_free(k);
    }
    return s[i];
}

/* The keys a wallet knows: the vault's web-certificate key and consent's receipt key. */
static const unsigned char *known_key(void *ctx, const char *kid)
{
    (void)ctx;
    if (strcmp(kid, "webcert-1") == 0)
        return signer("webcert")->pk;
    if (strcmp(kid, "receipt-1") == 0)
        return signer("receipt")->pk;
    return NULL;
}

static int is_int(const json_t *j)
{
    return json_is_integer(j);
}

/* What a wallet reads from a verified web certificate; 1 when it is one. */
static int webcert_claims(const json_t *c)
{
    const char *iss = json_string_value(json_object_get(c, "iss"));
    const char *wn = json_string_value(json_object_get(c, "wn"));
    json_t *jwk = json_object_get(json_object_get(c, "cnf"), "jwk");
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const char *x = json_string_value(json_object_get(jwk, "x"));
    unsigned char pk[32];
    size_t n;
    return iss && !strcmp(iss, "veil-vault") && wn && veil_web_number_valid(wn) && kty &&
           !strcmp(kty, "OKP") && crv && !strcmp(crv, "Ed25519") && x &&
           veil_b64url_decode(pk, sizeof pk, x, strlen(x), &n) == 0 && n == 32 &&
           is_int(json_object_get(c, "iat")) && is_int(json_object_get(c, "exp")) &&
           json_integer_value(json_object_get(c, "exp")) >
               json_integer_value(json_object_get(c, "iat"));
}

/* What a wallet reads from a verified consent receipt; 1 when it is one. */
static int receipt_claims(const json_t *c)
{
    const char *iss = json_string_value(json_object_get(c, "iss"));
    const char *app = json_string_value(json_object_get(c, "app"));
    const char *purpose = json_string_value(json_object_get(c, "purpose"));
    const char *rid = json_string_value(json_object_get(c, "receipt_id"));
    json_t *attrs = json_object_get(c, "attributes"), *a;
    size_t i;
    if (!iss || strcmp(iss, "veil-consent") || !app || !veil_ident_valid(app) || !purpose ||
        !veil_utf8_printable(purpose, strlen(purpose)) || !rid || !json_is_array(attrs) ||
        !is_int(json_object_get(c, "granted_at")) || !is_int(json_object_get(c, "expires_at")))
        return 0;
    json_array_foreach(attrs, i,
                       a) if (!json_is_string(a) || !veil_attr_find(json_string_value(a))) return 0;
    return 1;
}

static const char *const typs[] = {"veil-webcert+jwt", "veil-consent-receipt+jwt", "JWT",
                                   "secevent+jwt"};

/* Verifies token as each kind; reads the claims of what verifies. */
static int verify_all(const char *token, size_t len)
{
    int verified = 0;
    for (size_t i = 0; i < sizeof typs / sizeof typs[0]; i++) {
        json_t *claims;
        if (veil_jws_verify(token, len, typs[i], known_key, NULL, &claims) != VEIL_OK)
            continue;
        verified++;
        if (i == 0)
            webcert_claims(claims);
        else if (i == 1)
            receipt_claims(claims);
        json_decref(claims);
    }
    return verified;
}

static char *b64(const uint8_t *p, size_t n)
{
    size_t cap = veil_b64url_len(n);
    char *s = malloc(cap);
    veil_b64url_encode(s, cap, p, n);
    return s;
}

static void mode_signed(fz_reader *r)
{
    size_t hl = fz_u16(r) % (r->n + 1);
    char *h = b64(r->p, hl), *p = b64(r->p + hl, r->n - hl);
    size_t len = strlen(h) + 1 + strlen(p), cap = len + 1 + veil_b64url_len(64);
    char *token = malloc(cap);
    snprintf(token, cap, "%s.%s", h, p);
    unsigned char sig[64];
    veil_signer_sign(signer("webcert"), sig, token, len);
    token[len] = '.';
    veil_b64url_encode(token + len + 1, cap - len - 1, sig, sizeof sig);
    verify_all(token, strlen(token));
    free(token);
    free(h);
    free(p);
}

static void mode_jwks(fz_reader *r)
{
    char *text = malloc(r->n + 1);
    size_t n = fz_copy(r, text, r->n);
    text[n] = '\0';
    veil_jwks jwks;
    if (veil_jwks_parse(text, &jwks) == VEIL_OK)
        for (size_t i = 0; i < jwks.n; i++) {
            const unsigned char *pk = veil_jwks_find(&jwks, jwks.keys[i].kid);
            if (!pk || strcmp(jwks.keys[(size_t)(pk - jwks.keys[0].pk) / sizeof jwks.keys[0]].kid,
                              jwks.keys[i].kid) != 0)
                abort(); /* every key kept is found by its kid */
        }
    free(text);
}

/* Flips one byte of token (unless x is 0) and checks what verifies. */
static void tampered(char *token, uint16_t at, uint8_t x, int (*claims)(const json_t *),
                     const char *typ)
{
    size_t len = strlen(token);
    if (x)
        token[at % len] ^= x;
    json_t *c;
    veil_err err = veil_jws_verify(token, len, typ, known_key, NULL, &c);
    if (!x) {
        if (err != VEIL_OK || !claims(c))
            abort(); /* what veil issues must verify and read back */
        json_decref(c);
    } else if (err == VEIL_OK) {
        abort(); /* a changed token verified */
    }
}

static void mode_issued(fz_reader *r)
{
    char *cert, *receipt;
    fz_issue(&cert, &receipt);
    uint16_t at = fz_u16(r);
    uint8_t x = fz_u8(r);
    tampered(cert, at, x, webcert_claims, "veil-webcert+jwt");
    tampered(receipt, at, x, receipt_claims, "veil-consent-receipt+jwt");
    free(cert);
    free(receipt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader r = {data, size};
    switch (fz_u8(&r) % 4) {
    case 0:
        verify_all((const char *)r.p, r.n);
        break;
    case 1:
        mode_signed(&r);
        break;
    case 2:
        mode_jwks(&r);
        break;
    default:
        mode_issued(&r);
        break;
    }
    return 0;
}
