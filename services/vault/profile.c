/*
 * profile.c - every encryption and keyed hash the vault stores.
 *
 * Boxes are XChaCha20-Poly1305 (IETF) with a random 24-byte nonce, stored
 * as nonce | ciphertext | tag.  Each kind of box has its own associated
 * data, starting with a NUL-terminated domain label and binding the box to
 * its owner (the subject reference, and the device or log position), so a
 * box copied to another row or another column does not open.  Plaintexts
 * are veil's canonical encoding (u16 length-prefixed fields, big-endian
 * integers, veil/codec.h).  docs/vault.md lists the layouts.
 *
 *   data key  under a master key  AD "veil-vault-dek-v1"     | subject | u32 version
 *   profile   under the data key  AD "veil-vault-profile-v1" | subject
 *   label     under the data key  AD "veil-vault-label-v1"   | subject | device id
 *   log entry under the data key  AD "veil-vault-access-v1"  | subject | i64 seq
 *
 * Plaintext that holds personal data lives in veil_buf (wiped when freed)
 * or on the stack and is wiped before returning.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "vault.h"

#define NONCE  crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG    crypto_aead_xchacha20poly1305_ietf_ABYTES
#define AD_MAX 96

_Static_assert(NONCE + TAG == VAULT_BOX_OVERHEAD, "box overhead");

/* Associated data: a domain label with its NUL, then the binding bytes. */
typedef struct ad {
    unsigned char b[AD_MAX];
    size_t n;
} ad;

static void ad_put(ad *a, const void *p, size_t n)
{
    memcpy(a->b + a->n, p, n);
    a->n += n;
}

static void ad_label(ad *a, const char *label)
{
    a->n = 0;
    ad_put(a, label, strlen(label) + 1);
}

static void ad_u64(ad *a, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        a->b[a->n++] = (unsigned char)(v >> (i * 8));
}

/* Writes nonce | ciphertext | tag of pt[0..n) into out (n + 40 bytes). */
static void box_seal(const unsigned char *key, const ad *a, const unsigned char *pt, size_t n,
                     unsigned char *out)
{
    randombytes_buf(out, NONCE);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + NONCE, NULL, pt, n, a->b, a->n, NULL, out,
                                               key);
}

/* Opens a box into pt (len - 40 bytes); 0 on success. */
static int box_open(const unsigned char *key, const ad *a, const unsigned char *in, size_t len,
                    unsigned char *pt)
{
    if (len < NONCE + TAG)
        return -1;
    return crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, in + NONCE, len - NONCE, a->b,
                                                      a->n, in, key);
}

/* ---- data keys ---- */

static void dek_ad(ad *a, const unsigned char *subject, uint32_t version)
{
    ad_label(a, "veil-vault-dek-v1");
    ad_put(a, subject, VAULT_SUBJECT_BYTES);
    unsigned char v[4] = {(unsigned char)(version >> 24), (unsigned char)(version >> 16),
                          (unsigned char)(version >> 8), (unsigned char)version};
    ad_put(a, v, sizeof v);
}

void vault_dek_wrap(const veil_key *master, const unsigned char subject[VAULT_SUBJECT_BYTES],
                    const unsigned char dk[VAULT_DEK_BYTES], unsigned char out[VAULT_WRAPPED_BYTES])
{
    ad a;
    dek_ad(&a, subject, master->version);
    box_seal(master->bytes, &a, dk, VAULT_DEK_BYTES, out);
}

veil_err vault_dek_unwrap(const veil_key *master, const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const unsigned char *wrapped, size_t len,
                          unsigned char dk[VAULT_DEK_BYTES])
{
    ad a;
    if (len != VAULT_WRAPPED_BYTES)
        return VEIL_ERR_INTERNAL;
    dek_ad(&a, subject, master->version);
    if (box_open(master->bytes, &a, wrapped, len, dk) != 0) {
        sodium_memzero(dk, VAULT_DEK_BYTES);
        return VEIL_ERR_INTERNAL;
    }
    return VEIL_OK;
}

/* ---- profiles ---- */

static void profile_ad(ad *a, const unsigned char *subject)
{
    ad_label(a, "veil-vault-profile-v1");
    ad_put(a, subject, VAULT_SUBJECT_BYTES);
}

veil_err vault_profile_seal(const unsigned char dk[VAULT_DEK_BYTES],
                            const unsigned char subject[VAULT_SUBJECT_BYTES],
                            const struct vault_profile *p, unsigned char out[VAULT_PROFILE_MAX],
                            size_t *out_len)
{
    /* u8 format 1 | field(ID number) | field(full name) | u8 face match | i64 proofed at */
    veil_buf pt = {0};
    veil_err err = VEIL_ERR_NOMEM;
    ad a;
    *out_len = 0;
    veil_buf_put_u8(&pt, 1);
    veil_buf_put_str(&pt, p->id_number);
    veil_buf_put_str(&pt, p->full_name);
    veil_buf_put_u8(&pt, p->face_match ? 1 : 0);
    veil_buf_put_i64(&pt, p->proofed_at_ms);
    if (pt.failed)
        goto out;
    err = VEIL_ERR_INVALID;
    if (pt.len + VAULT_BOX_OVERHEAD > VAULT_PROFILE_MAX)
        goto out;
    profile_ad(&a, subject);
    box_seal(dk, &a, pt.data, pt.len, out);
    *out_len = pt.len + VAULT_BOX_OVERHEAD;
    err = VEIL_OK;
out:
    veil_buf_free(&pt);
    return err;
}

/* Copies a length-prefixed field into dst (capacity cap, NUL-terminated); 0 on success. */
static int read_string(veil_reader *r, char *dst, size_t cap)
{
    size_t n;
    const unsigned char *p = veil_read_lp(r, &n);
    if (!p || n >= cap || memchr(p, '\0', n))
        return -1;
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

veil_err vault_profile_open(const unsigned char dk[VAULT_DEK_BYTES],
                            const unsigned char subject[VAULT_SUBJECT_BYTES],
                            const unsigned char *sealed, size_t len, struct vault_profile *out)
{
    unsigned char pt[VAULT_PROFILE_MAX];
    veil_err err = VEIL_ERR_INTERNAL;
    ad a;
    memset(out, 0, sizeof *out);
    if (len < VAULT_BOX_OVERHEAD || len > VAULT_PROFILE_MAX)
        return VEIL_ERR_INTERNAL;
    profile_ad(&a, subject);
    if (box_open(dk, &a, sealed, len, pt) != 0)
        goto out;
    veil_reader r = {pt, len - VAULT_BOX_OVERHEAD, 0};
    if (veil_read_u8(&r) != 1 || read_string(&r, out->id_number, sizeof out->id_number) != 0 ||
        read_string(&r, out->full_name, sizeof out->full_name) != 0)
        goto out;
    out->face_match = veil_read_u8(&r) != 0;
    out->proofed_at_ms = veil_read_i64(&r);
    if (r.bad || r.left != 0)
        goto out;
    err = VEIL_OK;
out:
    sodium_memzero(pt, sizeof pt);
    if (err)
        sodium_memzero(out, sizeof *out);
    return err;
}

/* ---- device labels ---- */

static void label_ad(ad *a, const unsigned char *subject, const unsigned char *device_id)
{
    ad_label(a, "veil-vault-label-v1");
    ad_put(a, subject, VAULT_SUBJECT_BYTES);
    ad_put(a, device_id, VEIL_DEVICE_ID_BYTES);
}

veil_err vault_label_seal(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const unsigned char device_id[VEIL_DEVICE_ID_BYTES], const char *label,
                          veil_buf *out)
{
    unsigned char box[VAULT_LABEL_MAX + VAULT_BOX_OVERHEAD];
    size_t n = strlen(label);
    ad a;
    if (n > VAULT_LABEL_MAX)
        return VEIL_ERR_INVALID;
    label_ad(&a, subject, device_id);
    box_seal(dk, &a, (const unsigned char *)label, n, box);
    veil_buf_put(out, box, n + VAULT_BOX_OVERHEAD);
    return out->failed ? VEIL_ERR_NOMEM : VEIL_OK;
}

veil_err vault_label_open(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                          const unsigned char *sealed, size_t len, char out[VAULT_LABEL_MAX + 1])
{
    ad a;
    out[0] = '\0';
    if (len < VAULT_BOX_OVERHEAD || len > VAULT_LABEL_MAX + VAULT_BOX_OVERHEAD)
        return VEIL_ERR_INTERNAL;
    label_ad(&a, subject, device_id);
    if (box_open(dk, &a, sealed, len, (unsigned char *)out) != 0)
        return VEIL_ERR_INTERNAL;
    out[len - VAULT_BOX_OVERHEAD] = '\0';
    return VEIL_OK;
}

/* ---- access-log entries ---- */

static void entry_ad(ad *a, const unsigned char *subject, int64_t seq)
{
    ad_label(a, "veil-vault-access-v1");
    ad_put(a, subject, VAULT_SUBJECT_BYTES);
    ad_u64(a, (uint64_t)seq);
}

veil_err vault_entry_seal(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES], int64_t seq,
                          const struct vault_entry *e, veil_buf *out)
{
    /*
     * u8 format 2 | field(app id) | field(action) | u16 n | n fields(attribute) |
     * field(purpose) | field(actor) | field(detail).  Format 1 (written
     * before actor and detail existed) ends after the purpose.
     */
    veil_buf pt = {0};
    unsigned char *box = NULL;
    veil_err err = VEIL_ERR_NOMEM;
    ad a;
    if (e->n_attributes > VAULT_ENTRY_ATTRS_MAX)
        return VEIL_ERR_INVALID;
    veil_buf_put_u8(&pt, 2);
    veil_buf_put_str(&pt, e->app_id ? e->app_id : "");
    veil_buf_put_str(&pt, e->action);
    veil_buf_put_u16(&pt, (uint16_t)e->n_attributes);
    for (size_t i = 0; i < e->n_attributes; i++)
        veil_buf_put_str(&pt, e->attributes[i]);
    veil_buf_put_str(&pt, e->purpose ? e->purpose : "");
    veil_buf_put_str(&pt, e->actor ? e->actor : "");
    veil_buf_put_str(&pt, e->detail ? e->detail : "");
    if (pt.failed || !(box = malloc(pt.len + VAULT_BOX_OVERHEAD)))
        goto out;
    entry_ad(&a, subject, seq);
    box_seal(dk, &a, pt.data, pt.len, box);
    veil_buf_put(out, box, pt.len + VAULT_BOX_OVERHEAD);
    if (!out->failed)
        err = VEIL_OK;
out:
    free(box);
    veil_buf_free(&pt);
    return err;
}

/* Copies the next length-prefixed field to text + *used as a C string; NULL when it does not fit.
 */
static const char *next_field(veil_reader *r, char *text, size_t cap, size_t *used)
{
    size_t n;
    const unsigned char *f = veil_read_lp(r, &n);
    if (!f || *used + n + 1 > cap || memchr(f, '\0', n))
        return NULL;
    char *dst = text + *used;
    memcpy(dst, f, n);
    dst[n] = '\0';
    *used += n + 1;
    return dst;
}

veil_err vault_entry_open(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES], int64_t seq,
                          const unsigned char *sealed, size_t len, char *text, size_t cap,
                          struct vault_entry *e, const char **attrs, size_t max_attrs)
{
    veil_err err = VEIL_ERR_INTERNAL;
    unsigned char *pt = NULL;
    size_t used = 0;
    ad a;
    memset(e, 0, sizeof *e);
    if (len < VAULT_BOX_OVERHEAD)
        return VEIL_ERR_INTERNAL;
    size_t ptlen = len - VAULT_BOX_OVERHEAD;
    if (!(pt = malloc(ptlen ? ptlen : 1)))
        return VEIL_ERR_NOMEM;
    entry_ad(&a, subject, seq);
    if (box_open(dk, &a, sealed, len, pt) != 0)
        goto out;
    veil_reader r = {pt, ptlen, 0};
    uint8_t format = veil_read_u8(&r);
    if ((format != 1 && format != 2) || !(e->app_id = next_field(&r, text, cap, &used)) ||
        !(e->action = next_field(&r, text, cap, &used)))
        goto out;
    uint16_t n = veil_read_u16(&r);
    if (r.bad || n > max_attrs)
        goto out;
    for (uint16_t k = 0; k < n; k++)
        if (!(attrs[k] = next_field(&r, text, cap, &used)))
            goto out;
    e->attributes = attrs;
    e->n_attributes = n;
    if (!(e->purpose = next_field(&r, text, cap, &used)))
        goto out;
    e->actor = e->detail = "";
    if (format == 2 && (!(e->actor = next_field(&r, text, cap, &used)) ||
                        !(e->detail = next_field(&r, text, cap, &used))))
        goto out;
    if (r.left != 0)
        goto out;
    err = VEIL_OK;
out:
    sodium_memzero(pt, ptlen ? ptlen : 1);
    free(pt);
    if (err)
        memset(e, 0, sizeof *e);
    return err;
}

/* ---- keyed hashes ---- */

void vault_chain_hash(const veil_key *audit, const unsigned char subject[VAULT_SUBJECT_BYTES],
                      const unsigned char prev[VAULT_HASH_BYTES], int64_t seq, int64_t at_ms,
                      const unsigned char *sealed, size_t len, unsigned char out[VAULT_HASH_BYTES])
{
    static const char label[] = "veil-vault-access-chain-v1";
    crypto_generichash_state st;
    ad a;
    a.n = 0;
    ad_u64(&a, (uint64_t)seq);
    ad_u64(&a, (uint64_t)at_ms);
    unsigned char n4[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                           (unsigned char)(len >> 8), (unsigned char)len};
    ad_put(&a, n4, sizeof n4);
    crypto_generichash_init(&st, audit->bytes, VEIL_KEY_BYTES, VAULT_HASH_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)label, sizeof label);
    crypto_generichash_update(&st, subject, VAULT_SUBJECT_BYTES);
    crypto_generichash_update(&st, prev, VAULT_HASH_BYTES);
    crypto_generichash_update(&st, a.b, a.n);
    crypto_generichash_update(&st, sealed, len);
    crypto_generichash_final(&st, out, VAULT_HASH_BYTES);
}

void vault_capability_mac(const veil_key *audit, int64_t expires_ms,
                          const unsigned char id[VAULT_CAP_ID_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES], const char *app_id,
                          const unsigned char challenge[VEIL_CHALLENGE_BYTES],
                          unsigned char out[VAULT_HASH_BYTES])
{
    static const char label[] = "veil-vault-release-capability-v1";
    veil_buf b = {0};
    veil_buf_put(&b, label, sizeof label);
    veil_buf_put_u8(&b, 1);
    veil_buf_put_i64(&b, expires_ms);
    veil_buf_put(&b, id, VAULT_CAP_ID_BYTES);
    veil_buf_put(&b, subject, VAULT_SUBJECT_BYTES);
    veil_buf_put_str(&b, app_id);
    veil_buf_put(&b, challenge, VEIL_CHALLENGE_BYTES);
    if (b.failed) /* no memory: a value no capability can match */
        randombytes_buf(out, VAULT_HASH_BYTES);
    else
        crypto_generichash(out, VAULT_HASH_BYTES, b.data, b.len, audit->bytes, VEIL_KEY_BYTES);
    veil_buf_free(&b);
}

void vault_blind_index(const veil_key *blind, const char id_number[18],
                       unsigned char out[VAULT_HASH_BYTES])
{
    static const char label[] = "veil-vault-blind-index-v1";
    crypto_generichash_state st;
    crypto_generichash_init(&st, blind->bytes, VEIL_KEY_BYTES, VAULT_HASH_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)label, sizeof label);
    crypto_generichash_update(&st, (const unsigned char *)id_number, 18);
    crypto_generichash_final(&st, out, VAULT_HASH_BYTES);
    sodium_memzero(&st, sizeof st);
}

void vault_request_key(const veil_key *blind, const char *request_id,
                       unsigned char out[VAULT_HASH_BYTES])
{
    static const char label[] = "veil-vault-request-id-v1";
    crypto_generichash_state st;
    crypto_generichash_init(&st, blind->bytes, VEIL_KEY_BYTES, VAULT_HASH_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)label, sizeof label);
    crypto_generichash_update(&st, (const unsigned char *)request_id, strlen(request_id));
    crypto_generichash_final(&st, out, VAULT_HASH_BYTES);
}

void vault_request_mac(const veil_key *blind, const Veil__Vault__EnrolRequest *req,
                       const char id_number[18], unsigned char out[VAULT_HASH_BYTES])
{
    static const char label[] = "veil-vault-enrol-request-v1";
    const Veil__Vault__ProofingAttestation *at = req->attestation;
    veil_buf b = {0};
    veil_buf_put(&b, label, sizeof label);
    veil_buf_put_str(&b, req->request_id);
    veil_buf_put(&b, id_number, 18);
    veil_buf_put_str(&b, req->full_name);
    veil_buf_put_lp(&b, req->device_public_key.data, req->device_public_key.len);
    veil_buf_put_u8(&b, at && at->face_match ? 1 : 0);
    veil_buf_put_i64(&b, at ? at->attested_at_ms : 0);
    veil_buf_put_lp(&b, at ? at->signature.data : NULL, at ? at->signature.len : 0);
    veil_buf_put_str(&b, req->device_label);
    /* On allocation failure the MAC is of a marker no request can match. */
    if (b.failed)
        randombytes_buf(out, VAULT_HASH_BYTES);
    else
        crypto_generichash(out, VAULT_HASH_BYTES, b.data, b.len, blind->bytes, VEIL_KEY_BYTES);
    veil_buf_free(&b);
}
