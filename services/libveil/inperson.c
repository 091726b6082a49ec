/* inperson.c - presentations shown to venues and card codes (veil/inperson.h). */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "veil/inperson.h"

/* The sealed plaintext: device id | field(nonce) | i64 time | u8 n | field(attr) x n | sig. */
#define INNER_MAX                                                                                  \
    (VEIL_DEVICE_ID_BYTES + 2 + VEIL_NONCE_BYTES + 8 + 1 +                                         \
     VEIL_PRESENT_ATTRS_MAX * (2 + VEIL_PRESENT_ATTR_LEN) + 64)

void veil_presentation_signed_bytes(veil_buf *b, const veil_presentation *p)
{
    static const char label[] = "veil-presentation-v1";
    veil_buf_put(b, label, sizeof label); /* with its NUL */
    veil_buf_put_lp(b, p->nonce, VEIL_NONCE_BYTES);
    veil_buf_put_i64(b, p->time_ms);
    veil_buf_put_u8(b, (uint8_t)p->n_attributes);
    for (size_t i = 0; i < p->n_attributes; i++)
        veil_buf_put_str(b, p->attributes[i]);
    veil_buf_put(b, p->device_id, VEIL_DEVICE_ID_BYTES);
}

/* Attribute names: 1..8 catalogue names, none repeated. */
static int attrs_ok(const char *const *attrs, size_t n)
{
    if (n == 0 || n > VEIL_PRESENT_ATTRS_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!attrs[i] || !veil_attr_find(attrs[i]) || strlen(attrs[i]) > VEIL_PRESENT_ATTR_LEN)
            return 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(attrs[i], attrs[j]) == 0)
                return 0;
    }
    return 1;
}

veil_err veil_presentation_make(const char *const *attrs, size_t n, int64_t time_ms,
                                const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                const unsigned char *device_sk, const unsigned char vault_pk[32],
                                char **out)
{
    veil_presentation p;
    veil_buf msg = {0}, inner = {0};
    unsigned char *wire = NULL;
    veil_err err = VEIL_ERR_NOMEM;
    *out = NULL;
    if (!attrs_ok(attrs, n))
        return VEIL_ERR_INVALID;
    memset(&p, 0, sizeof p);
    memcpy(p.device_id, device_id, VEIL_DEVICE_ID_BYTES);
    randombytes_buf(p.nonce, sizeof p.nonce);
    p.time_ms = time_ms;
    p.n_attributes = n;
    for (size_t i = 0; i < n; i++)
        memcpy(p.attributes[i], attrs[i], strlen(attrs[i]) + 1);
    veil_presentation_signed_bytes(&msg, &p);
    if (msg.failed)
        goto out;
    crypto_sign_detached(p.sig, NULL, msg.data, msg.len, device_sk);

    veil_buf_put(&inner, p.device_id, VEIL_DEVICE_ID_BYTES);
    veil_buf_put_lp(&inner, p.nonce, VEIL_NONCE_BYTES);
    veil_buf_put_i64(&inner, p.time_ms);
    veil_buf_put_u8(&inner, (uint8_t)n);
    for (size_t i = 0; i < n; i++)
        veil_buf_put_str(&inner, p.attributes[i]);
    veil_buf_put(&inner, p.sig, sizeof p.sig);
    if (inner.failed)
        goto out;
    size_t wl = 1 + inner.len + crypto_box_SEALBYTES;
    if (!(wire = malloc(wl)))
        goto out;
    wire[0] = VEIL_PRESENTATION_FORMAT;
    if (crypto_box_seal(wire + 1, inner.data, inner.len, vault_pk) != 0) {
        err = VEIL_ERR_INVALID;
        goto out;
    }
    size_t cap = veil_b64url_len(wl);
    char *s = malloc(cap);
    if (!s)
        goto out;
    veil_b64url_encode(s, cap, wire, wl);
    *out = s;
    err = VEIL_OK;
out:
    free(wire);
    sodium_memzero(&p, sizeof p);
    veil_buf_free(&inner);
    veil_buf_free(&msg);
    return err;
}

/* Decodes the outer form into raw (capacity VEIL_PRESENTATION_MAX); its length or 0. */
static size_t decode(const char *s, size_t len, unsigned char *raw)
{
    size_t n;
    if (len == 0 || len > VEIL_PRESENTATION_MAX ||
        veil_b64url_decode(raw, VEIL_PRESENTATION_MAX, s, len, &n) != 0)
        return 0;
    if (n < 1 + crypto_box_SEALBYTES + VEIL_DEVICE_ID_BYTES + 64 ||
        n > 1 + crypto_box_SEALBYTES + INNER_MAX || raw[0] != VEIL_PRESENTATION_FORMAT)
        return 0;
    return n;
}

int veil_presentation_well_formed(const char *s, size_t len)
{
    unsigned char raw[VEIL_PRESENTATION_MAX];
    return decode(s, len, raw) != 0;
}

veil_err veil_presentation_open(const char *s, size_t len, const unsigned char vault_pk[32],
                                const unsigned char *vault_sk, veil_presentation *out)
{
    unsigned char raw[VEIL_PRESENTATION_MAX], inner[INNER_MAX];
    size_t n = decode(s, len, raw);
    veil_err err = VEIL_ERR_UNAUTHENTICATED;
    memset(out, 0, sizeof *out);
    if (!n)
        return VEIL_ERR_INVALID;
    size_t il = n - 1 - crypto_box_SEALBYTES;
    if (crypto_box_seal_open(inner, raw + 1, n - 1, vault_pk, vault_sk) != 0)
        return VEIL_ERR_UNAUTHENTICATED;
    veil_reader r = {inner, il, 0};
    const unsigned char *id = veil_read_bytes(&r, VEIL_DEVICE_ID_BYTES);
    size_t nl;
    const unsigned char *nonce = veil_read_lp(&r, &nl);
    out->time_ms = veil_read_i64(&r);
    size_t count = veil_read_u8(&r);
    if (r.bad || !id || nl != VEIL_NONCE_BYTES || count == 0 || count > VEIL_PRESENT_ATTRS_MAX)
        goto out;
    memcpy(out->device_id, id, VEIL_DEVICE_ID_BYTES);
    memcpy(out->nonce, nonce, VEIL_NONCE_BYTES);
    const char *names[VEIL_PRESENT_ATTRS_MAX];
    for (size_t i = 0; i < count; i++) {
        size_t al;
        const unsigned char *a = veil_read_lp(&r, &al);
        if (r.bad || al == 0 || al > VEIL_PRESENT_ATTR_LEN)
            goto out;
        memcpy(out->attributes[i], a, al);
        out->attributes[i][al] = '\0';
        names[i] = out->attributes[i];
    }
    out->n_attributes = count;
    const unsigned char *sig = veil_read_bytes(&r, 64);
    if (r.bad || r.left != 0 || !attrs_ok(names, count))
        goto out;
    memcpy(out->sig, sig, 64);
    err = VEIL_OK;
out:
    sodium_memzero(inner, sizeof inner);
    if (err)
        memset(out, 0, sizeof *out);
    return err;
}

/* ---- card codes ---- */

void veil_card_code_text(const unsigned char secret[VEIL_CARD_SECRET_BYTES],
                         char out[VEIL_CARD_CODE_LEN + 1])
{
    int v[25];
    /* 120 bits, five at a time, most significant first. */
    for (int i = 0; i < 24; i++) {
        int bit = i * 5, value = 0;
        for (int k = 0; k < 5; k++, bit++)
            value = value << 1 | ((secret[bit / 8] >> (7 - bit % 8)) & 1);
        v[i] = value;
    }
    v[24] = veil_luhn32_check(v, 24);
    size_t k = 0;
    for (int i = 0; i < 25; i++) {
        if (i && i % 5 == 0)
            out[k++] = '-';
        out[k++] = veil_crockford32[v[i]];
    }
    out[k] = '\0';
}

int veil_card_code_parse(const char *text, unsigned char secret[VEIL_CARD_SECRET_BYTES])
{
    int v[25], n = 0;
    if (!text || strlen(text) > 64)
        return -1;
    for (const char *p = text; *p; p++) {
        char c = *p;
        if (c == '-' || c == ' ')
            continue;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c == 'O')
            c = '0';
        else if (c == 'I' || c == 'L')
            c = '1';
        const char *at = strchr(veil_crockford32, c);
        if (!c || !at || n == 25)
            return -1;
        v[n++] = (int)(at - veil_crockford32);
    }
    if (n != 25 || veil_luhn32_check(v, 24) != v[24])
        return -1;
    memset(secret, 0, VEIL_CARD_SECRET_BYTES);
    for (int i = 0; i < 24; i++)
        for (int k = 0; k < 5; k++) {
            int bit = i * 5 + k;
            if ((v[i] >> (4 - k)) & 1)
                secret[bit / 8] |= (unsigned char)(1u << (7 - bit % 8));
        }
    sodium_memzero(v, sizeof v);
    return 0;
}

void veil_card_keypair(const unsigned char secret[VEIL_CARD_SECRET_BYTES], unsigned char pk[32],
                       unsigned char sk[64])
{
    static const char label[] = "veil-card-key-v1";
    unsigned char seed[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof seed);
    crypto_generichash_update(&st, (const unsigned char *)label, sizeof label);
    crypto_generichash_update(&st, secret, VEIL_CARD_SECRET_BYTES);
    crypto_generichash_final(&st, seed, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(&st, sizeof st);
}

int veil_card_pin_valid(const char *pin)
{
    size_t n = pin ? strlen(pin) : 0;
    if (n < VEIL_CARD_PIN_MIN || n > VEIL_CARD_PIN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (pin[i] < '0' || pin[i] > '9')
            return 0;
    return 1;
}
