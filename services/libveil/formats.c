/* formats.c - canonical signed bytes, tickets, web numbers, attributes (veil/formats.h). */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "veil/formats.h"

static void domain(veil_buf *b, const char *label)
{
    veil_buf_put(b, label, strlen(label) + 1); /* with its NUL */
}

void veil_attestation_bytes(veil_buf *b, const char *id_number, const char *full_name,
                            int face_match, const unsigned char device_pk[32],
                            int64_t attested_at_ms)
{
    /*
     * The ID number itself, not a hash of it: an unkeyed hash of one of ~10^11
     * numbers is the number to anyone who tries them all, so format 1's hash
     * protected nothing while inviting the authority to log it.  These bytes
     * and the signature over them are as secret as the number (a signature
     * checks guesses too): they travel only inside the sealed enrolment
     * identity, and veil_buf_free wipes them.
     */
    char norm[32];
    size_t n = strlen(id_number);
    if (n >= sizeof norm)
        n = sizeof norm - 1;
    for (size_t i = 0; i < n; i++)
        norm[i] = id_number[i] == 'x' ? 'X' : id_number[i];
    domain(b, "veil-proofing-attestation-v2");
    veil_buf_put_lp(b, norm, n);
    sodium_memzero(norm, sizeof norm);
    veil_buf_put_str(b, full_name);
    veil_buf_put_u8(b, face_match ? 1 : 0);
    veil_buf_put(b, device_pk, 32);
    veil_buf_put_i64(b, attested_at_ms);
}

void veil_ticket_signed_bytes(veil_buf *b, const char *app_id, const unsigned char *challenge,
                              size_t challenge_len, int64_t time_ms,
                              const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                              uint32_t key_version)
{
    domain(b, "veil-login-ticket-v2");
    veil_buf_put_str(b, app_id);
    veil_buf_put_lp(b, challenge, challenge_len);
    veil_buf_put_i64(b, time_ms);
    veil_buf_put(b, device_id, VEIL_DEVICE_ID_BYTES);
    veil_buf_put_u32(b, key_version);
}

veil_err veil_ticket_make(const char *app_id, const unsigned char *challenge, size_t challenge_len,
                          int64_t time_ms, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                          const unsigned char *device_sk, const unsigned char vault_pk[32],
                          uint32_t key_version, char **out)
{
    veil_err err = VEIL_ERR_NOMEM;
    veil_buf msg = {0}, inner = {0}, wire = {0};
    unsigned char sig[64];
    unsigned char sealed[VEIL_TICKET_INNER_BYTES + crypto_box_SEALBYTES];
    *out = NULL;

    veil_ticket_signed_bytes(&msg, app_id, challenge, challenge_len, time_ms, device_id,
                             key_version);
    if (msg.failed)
        goto out;
    crypto_sign_detached(sig, NULL, msg.data, msg.len, device_sk);
    veil_buf_put_u32(&inner, key_version);
    veil_buf_put_i64(&inner, time_ms);
    veil_buf_put(&inner, device_id, VEIL_DEVICE_ID_BYTES);
    veil_buf_put(&inner, sig, sizeof sig);
    if (inner.failed || inner.len != VEIL_TICKET_INNER_BYTES)
        goto out;
    if (crypto_box_seal(sealed, inner.data, inner.len, vault_pk) != 0) {
        err = VEIL_ERR_INVALID;
        goto out;
    }
    veil_buf_put_u8(&wire, VEIL_TICKET_FORMAT);
    veil_buf_put_str(&wire, app_id);
    veil_buf_put_lp(&wire, challenge, challenge_len);
    veil_buf_put_lp(&wire, sealed, sizeof sealed);
    if (wire.failed)
        goto out;
    size_t cap = veil_b64url_len(wire.len);
    char *s = malloc(cap);
    if (!s)
        goto out;
    veil_b64url_encode(s, cap, wire.data, wire.len);
    *out = s;
    err = VEIL_OK;
out:
    sodium_memzero(sig, sizeof sig);
    veil_buf_free(&msg);
    veil_buf_free(&inner);
    veil_buf_free(&wire);
    return err;
}

veil_err veil_ticket_parse(const char *s, size_t len, veil_ticket *t)
{
    size_t n;
    memset(t, 0, offsetof(veil_ticket, raw));
    if (len == 0 || len > VEIL_TICKET_MAX ||
        veil_b64url_decode(t->raw, sizeof t->raw, s, len, &n) != 0)
        return VEIL_ERR_INVALID;
    veil_reader r = {t->raw, n, 0};
    uint8_t format = veil_read_u8(&r);
    if (format == 1 && !r.bad)
        return VEIL_ERR_PRECONDITION;
    if (format != VEIL_TICKET_FORMAT)
        return VEIL_ERR_INVALID;
    size_t al, cl;
    const unsigned char *app = veil_read_lp(&r, &al);
    const unsigned char *ch = veil_read_lp(&r, &cl);
    t->sealed = veil_read_lp(&r, &t->sealed_len);
    if (r.bad || r.left != 0 || al == 0 || al >= sizeof t->app_id || memchr(app, '\0', al) ||
        cl != VEIL_CHALLENGE_BYTES ||
        t->sealed_len != VEIL_TICKET_INNER_BYTES + crypto_box_SEALBYTES)
        return VEIL_ERR_INVALID;
    memcpy(t->app_id, app, al);
    t->app_id[al] = '\0';
    memcpy(t->challenge, ch, cl);
    return VEIL_OK;
}

veil_err veil_ticket_open(const veil_ticket *t, const unsigned char vault_pk[32],
                          const unsigned char *vault_sk, veil_ticket_inner *out)
{
    unsigned char inner[VEIL_TICKET_INNER_BYTES];
    veil_err err = VEIL_ERR_UNAUTHENTICATED;
    if (t->sealed_len != sizeof inner + crypto_box_SEALBYTES ||
        crypto_box_seal_open(inner, t->sealed, t->sealed_len, vault_pk, vault_sk) != 0)
        goto out;
    veil_reader r = {inner, sizeof inner, 0};
    out->key_version = veil_read_u32(&r);
    out->time_ms = veil_read_i64(&r);
    memcpy(out->device_id, veil_read_bytes(&r, VEIL_DEVICE_ID_BYTES), VEIL_DEVICE_ID_BYTES);
    memcpy(out->sig, veil_read_bytes(&r, 64), 64);
    err = VEIL_OK;
out:
    sodium_memzero(inner, sizeof inner);
    return err;
}

#define ENROL_LABEL "veil-enrol-identity-v1"

veil_err veil_enrol_identity_seal(const veil_enrol_identity *id, const unsigned char vault_pk[32],
                                  unsigned char out[VEIL_ENROL_SEALED_BYTES])
{
    veil_buf b = {0};
    veil_err err = VEIL_ERR_INVALID;
    if (strlen(id->id_number) > 18 || strlen(id->full_name) > 200 || strlen(id->device_label) > 64)
        return VEIL_ERR_INVALID;
    domain(&b, ENROL_LABEL);
    veil_buf_put_u32(&b, id->key_version);
    veil_buf_put_str(&b, id->id_number);
    veil_buf_put_str(&b, id->full_name);
    veil_buf_put_lp(&b, id->device_pk, 32);
    veil_buf_put_u8(&b, id->face_match ? 1 : 0);
    veil_buf_put_i64(&b, id->attested_at_ms);
    veil_buf_put_lp(&b, id->signature, 64);
    veil_buf_put_str(&b, id->device_label);
    if (b.failed) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    if (b.len > VEIL_ENROL_IDENTITY_BYTES)
        goto out;
    static const unsigned char zeros[VEIL_ENROL_IDENTITY_BYTES];
    veil_buf_put(&b, zeros, VEIL_ENROL_IDENTITY_BYTES - b.len);
    if (b.failed) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    err = crypto_box_seal(out, b.data, b.len, vault_pk) == 0 ? VEIL_OK : VEIL_ERR_INVALID;
out:
    veil_buf_free(&b); /* wipes the plain text */
    return err;
}

/* Copies a length-prefixed text field of at most max bytes, without NUL, into out. */
static int read_text(veil_reader *r, char *out, size_t max)
{
    size_t n;
    const unsigned char *p = veil_read_lp(r, &n);
    if (!p || n > max || memchr(p, '\0', n))
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

veil_err veil_enrol_identity_open(const unsigned char *sealed, size_t len,
                                  const unsigned char vault_pk[32], const unsigned char *vault_sk,
                                  veil_enrol_identity *out)
{
    unsigned char plain[VEIL_ENROL_IDENTITY_BYTES];
    veil_err err = VEIL_ERR_UNAUTHENTICATED;
    memset(out, 0, sizeof *out);
    if (len != VEIL_ENROL_SEALED_BYTES ||
        crypto_box_seal_open(plain, sealed, len, vault_pk, vault_sk) != 0)
        goto out;
    err = VEIL_ERR_INVALID;
    veil_reader r = {plain, sizeof plain, 0};
    const unsigned char *label = veil_read_bytes(&r, sizeof ENROL_LABEL);
    if (!label || memcmp(label, ENROL_LABEL, sizeof ENROL_LABEL) != 0)
        goto out;
    out->key_version = veil_read_u32(&r);
    size_t n;
    const unsigned char *pk, *sig;
    if (read_text(&r, out->id_number, 18) || read_text(&r, out->full_name, 200) ||
        !(pk = veil_read_lp(&r, &n)) || n != 32)
        goto out;
    memcpy(out->device_pk, pk, 32);
    uint8_t face = veil_read_u8(&r);
    out->face_match = face == 1;
    out->attested_at_ms = veil_read_i64(&r);
    if (face > 1 || !(sig = veil_read_lp(&r, &n)) || n != 64)
        goto out;
    memcpy(out->signature, sig, 64);
    if (read_text(&r, out->device_label, 64) || r.bad)
        goto out;
    for (size_t i = 0; i < r.left; i++)
        if (r.p[i])
            goto out;
    err = VEIL_OK;
out:
    sodium_memzero(plain, sizeof plain);
    if (err)
        sodium_memzero(out, sizeof *out);
    return err;
}

void veil_citizen_signed_bytes(veil_buf *b, const char *method, const void *payload,
                               size_t payload_len, int64_t time_ms, const unsigned char *nonce,
                               size_t nonce_len, const char *device_id)
{
    domain(b, "veil-citizen-request-v1");
    veil_buf_put_str(b, method);
    veil_buf_put_u32(b, (uint32_t)payload_len);
    veil_buf_put(b, payload, payload_len);
    veil_buf_put_i64(b, time_ms);
    veil_buf_put_lp(b, nonce, nonce_len);
    veil_buf_put_str(b, device_id);
}

/* ---- web numbers ---- */

const char veil_crockford32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static int symbol_value(char c)
{
    const char *p = c ? strchr(veil_crockford32, c) : NULL;
    return p ? (int)(p - veil_crockford32) : -1;
}

int veil_luhn32_check(const int *v, size_t n)
{
    int factor = 2, sum = 0;
    for (size_t i = n; i-- > 0;) {
        int addend = factor * v[i];
        factor = factor == 2 ? 1 : 2;
        sum += addend / 32 + addend % 32;
    }
    return (32 - sum % 32) % 32;
}

void veil_web_number_new(char out[VEIL_WEB_NUMBER_LEN + 1])
{
    int v[16];
    for (int i = 0; i < 15; i++)
        v[i] = (int)randombytes_uniform(32);
    v[15] = veil_luhn32_check(v, 15);
    size_t k = 0;
    for (int i = 0; i < 16; i++) {
        if (i && i % 4 == 0)
            out[k++] = '-';
        out[k++] = veil_crockford32[v[i]];
    }
    out[k] = '\0';
}

int veil_web_number_valid(const char *s)
{
    int v[16];
    if (!s || strlen(s) != VEIL_WEB_NUMBER_LEN)
        return 0;
    for (int i = 0, k = 0; i < VEIL_WEB_NUMBER_LEN; i++) {
        if (i % 5 == 4) {
            if (s[i] != '-')
                return 0;
            continue;
        }
        if ((v[k++] = symbol_value(s[i])) < 0)
            return 0;
    }
    return veil_luhn32_check(v, 15) == v[15];
}

void veil_device_id_text(const unsigned char id[VEIL_DEVICE_ID_BYTES], char out[33])
{
    sodium_bin2hex(out, 33, id, VEIL_DEVICE_ID_BYTES);
}

int veil_device_id_parse(const char *text, unsigned char id[VEIL_DEVICE_ID_BYTES])
{
    size_t n;
    const char *end;
    if (!text || strlen(text) != 32)
        return -1;
    if (sodium_hex2bin(id, VEIL_DEVICE_ID_BYTES, text, 32, NULL, &n, &end) != 0 ||
        n != VEIL_DEVICE_ID_BYTES || *end)
        return -1;
    for (const char *p = text; *p; p++) /* lowercase only: one spelling per id */
        if (*p >= 'A' && *p <= 'F')
            return -1;
    return 0;
}

/* ---- attributes ---- */

static const veil_attr catalogue[] = {
    {"real_name_verified", VEIL_ATTR_DERIVED},
    {"age_over_14", VEIL_ATTR_DERIVED},
    {"age_over_18", VEIL_ATTR_DERIVED},
    {"age_over_60", VEIL_ATTR_DERIVED},
    {"province", VEIL_ATTR_DERIVED},
    {"full_name", VEIL_ATTR_RAW},
    {"gender", VEIL_ATTR_RAW},
    {"birth_date", VEIL_ATTR_RAW},
};

_Static_assert(sizeof catalogue / sizeof catalogue[0] == VEIL_ATTR_COUNT,
               "VEIL_ATTR_COUNT (and the release purpose bound) follow the catalogue");

const veil_attr *veil_attr_find(const char *name)
{
    for (size_t i = 0; i < sizeof catalogue / sizeof catalogue[0]; i++)
        if (strcmp(catalogue[i].name, name) == 0)
            return &catalogue[i];
    return NULL;
}

const veil_attr *veil_attr_catalogue(size_t *n)
{
    *n = sizeof catalogue / sizeof catalogue[0];
    return catalogue;
}

const char *veil_attr_names(void)
{
    return VEIL_ATTR_NAMES; /* check_formats holds it to the catalogue above */
}

int veil_ident_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '.' || c == '_' || c == '-'));
        if (!ok)
            return 0;
    }
    return 1;
}

void veil_checkpoint_bytes(veil_buf *b, const char *web_number, int64_t seq,
                           const unsigned char head[32], int64_t at_ms, int64_t retention_ms)
{
    domain(b, "veil-access-checkpoint-v2");
    veil_buf_put_str(b, web_number);
    veil_buf_put_i64(b, seq);
    veil_buf_put(b, head, 32);
    veil_buf_put_i64(b, at_ms);
    veil_buf_put_i64(b, retention_ms);
}
