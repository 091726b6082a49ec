/*
 * verify_cmds.c - what anyone can check offline with veil's public keys: the
 * keys themselves (Wallet.GetKeys, no certificate needed), a consent receipt
 * (signed by the consent service) and a web certificate (signed by the vault),
 * for instance the text a venue's scanner reads from a citizen's QR code.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "veil/codec.h"
#include "veil/formats.h"
#include "veil/jws.h"
#include "veilctl.h"

/* The public keys as the gateway hands them to phones; NULL after printing why. */
static Veil__Gateway__WalletKeysResponse *fetch_keys(const vc_opts *o)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__WalletKeysResponse *resp = NULL;
    veil_channel *ch = vc_channel(o, "citizen", &veil__gateway__wallet__descriptor);
    int rc = vc_call(ch, "GetKeys", &req.base, &resp, o);
    veil_channel_free(ch);
    return rc ? NULL : resp;
}

static json_t *jwks_json(const char *text)
{
    json_t *j = json_loads(text ? text : "", 0, NULL);
    return j ? j : json_null();
}

int vc_wallet_keys(const vc_opts *o)
{
    Veil__Gateway__WalletKeysResponse *k = fetch_keys(o);
    if (!k)
        return 1;
    char tk[64] = "";
    if (k->ticket_public_key.len == 32)
        veil_b64url_encode(tk, sizeof tk, k->ticket_public_key.data, 32);
    json_t *j = json_pack("{s:o, s:o, s:o, s:s, s:i}", "gateway_jwks", jwks_json(k->gateway_jwks),
                          "vault_jwks", jwks_json(k->vault_jwks), "consent_jwks",
                          jwks_json(k->consent_jwks), "ticket_public_key", tk, "ticket_key_version",
                          (int)k->ticket_key_version);
    if (o->json) {
        vc_print_json(j);
    } else {
        char *text = json_dumps(j, JSON_INDENT(2));
        printf("%s\n", text ? text : "{}");
        free(text);
        json_decref(j);
    }
    protobuf_c_message_free_unpacked(&k->base, NULL);
    return 0;
}

/* The token from the option, or from stdin when it is "-" (a QR reader's output). */
static char *token_text(const char *opt)
{
    if (strcmp(opt, "-") != 0)
        return strdup(opt);
    char *buf = malloc(VEIL_JWS_MAX + 2);
    size_t n = buf ? fread(buf, 1, VEIL_JWS_MAX + 1, stdin) : 0;
    if (!buf)
        return NULL;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    return buf;
}

/* Verifies token against the JWKS text with typ; the claims, or NULL after printing why. */
static json_t *verify_with(const vc_opts *o, const char *jwks_text, const char *token,
                           const char *typ, const char *signer)
{
    veil_jwks jwks;
    json_t *claims = NULL;
    if (veil_jwks_parse(jwks_text, &jwks) != VEIL_OK) {
        vc_fail(o, "INTERNAL", "the %s's keys cannot be parsed", signer);
        return NULL;
    }
    veil_err err = veil_jws_verify(token, strlen(token), typ, veil_jwks_find, &jwks, &claims);
    if (err == VEIL_ERR_INVALID) {
        vc_fail(o, "INVALID_ARGUMENT", "not a %s token (compact JWS, typ %s)", signer, typ);
        return NULL;
    }
    if (err) {
        vc_fail(o, "UNAUTHENTICATED", "the signature does not verify against the %s's keys",
                signer);
        return NULL;
    }
    return claims;
}

/* Runs one verification verb: fetch the keys, verify, then check(claims) and print. */
static int verify_verb(const vc_opts *o, const char *opt, const char *name, int webcert)
{
    if (!opt) {
        char line[128];
        snprintf(line, sizeof line, "wallet verify-%s --%s JWS|-", name, name);
        return vc_usage(line);
    }
    char *token = token_text(opt);
    if (!token)
        return vc_fail(o, "INTERNAL", "out of memory");
    Veil__Gateway__WalletKeysResponse *k = fetch_keys(o);
    json_t *claims = NULL;
    int rc = 1;
    if (!k)
        goto out;
    if (webcert)
        claims = verify_with(o, k->vault_jwks, token, "veil-webcert+jwt", "vault");
    else
        claims =
            verify_with(o, k->consent_jwks, token, "veil-consent-receipt+jwt", "consent service");
    if (!claims)
        goto out;
    if (webcert) {
        const char *wn = json_string_value(json_object_get(claims, "wn"));
        json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
        if (!wn || !veil_web_number_valid(wn)) {
            rc = vc_fail(o, "INVALID_ARGUMENT", "the certificate holds no valid web number");
            goto out;
        }
        if (exp * 1000 <= (json_int_t)veil_now_ms()) {
            rc = vc_fail(o, "FAILED_PRECONDITION", "the web certificate has expired");
            goto out;
        }
    }
    if (o->json) {
        vc_print_json(json_pack("{s:b, s:O}", "verified", 1, "claims", claims));
    } else if (webcert) {
        char when[64];
        vc_time(json_integer_value(json_object_get(claims, "exp")) * 1000, when, sizeof when);
        printf("web certificate verified (signed by the vault)\nweb number  %s\nvalid until "
               "%s\ndevice key  %s\n",
               json_string_value(json_object_get(claims, "wn")), when,
               json_string_value(
                   json_object_get(json_object_get(json_object_get(claims, "cnf"), "jwk"), "x")));
    } else {
        char *text = json_dumps(claims, JSON_INDENT(2));
        printf("consent receipt verified (signed by the consent service)\n%s\n", text ? text : "");
        free(text);
    }
    rc = 0;
out:
    json_decref(claims);
    if (k)
        protobuf_c_message_free_unpacked(&k->base, NULL);
    free(token);
    return rc;
}

int vc_verify_receipt(const vc_opts *o)
{
    return verify_verb(o, o->receipt, "receipt", 0);
}

int vc_verify_webcert(const vc_opts *o)
{
    return verify_verb(o, o->webcert, "webcert", 1);
}
