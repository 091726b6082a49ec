/* wallet.c - the simulated phone (wallet.h). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/codec.h"
#include "veil/inperson.h"
#include "wallet.h"

veil_err vw_wallet_new(vw_wallet **out)
{
    *out = NULL;
    if (sodium_init() < 0)
        return VEIL_ERR_INTERNAL;
    vw_wallet *w = calloc(1, sizeof *w);
    if (!w || !(w->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES))) {
        free(w);
        return VEIL_ERR_NOMEM;
    }
    crypto_sign_keypair(w->pk, w->sk);
    *out = w;
    return VEIL_OK;
}

void vw_wallet_free(vw_wallet *w)
{
    if (!w)
        return;
    sodium_free(w->sk);
    free(w->web_certificate);
    free(w);
}

static int b64_field(json_t *root, const char *key, unsigned char *out, size_t len)
{
    const char *s = json_string_value(json_object_get(root, key));
    size_t n;
    return s && veil_b64url_decode(out, len, s, strlen(s), &n) == 0 && n == len ? 0 : -1;
}

veil_err vw_wallet_load(const char *path, vw_wallet **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(errbuf, errlen, "wallet %s: %s", path, strerror(errno));
        return VEIL_ERR_NOT_FOUND;
    }
    if (st.st_mode & 077) {
        snprintf(errbuf, errlen, "wallet %s: readable by others (mode %04o); make it 0600", path,
                 (unsigned)(st.st_mode & 07777));
        return VEIL_ERR_INVALID;
    }
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    vw_wallet *w = NULL;
    unsigned char seed[32];
    veil_err err = VEIL_ERR_INVALID;
    if (!root || json_integer_value(json_object_get(root, "version")) != 1 ||
        b64_field(root, "device_seed", seed, sizeof seed) != 0) {
        snprintf(errbuf, errlen, "wallet %s: not a veil wallet file", path);
        goto out;
    }
    if ((err = vw_wallet_new(&w)))
        goto out;
    crypto_sign_seed_keypair(w->pk, w->sk, seed);
    const char *id = json_string_value(json_object_get(root, "device_id"));
    const char *wn = json_string_value(json_object_get(root, "web_number"));
    const char *cert = json_string_value(json_object_get(root, "web_certificate"));
    snprintf(w->device_id, sizeof w->device_id, "%s", id ? id : "");
    snprintf(w->web_number, sizeof w->web_number, "%s", wn ? wn : "");
    w->web_certificate = cert ? strdup(cert) : NULL;
    if (b64_field(root, "ticket_public_key", w->ticket_pk, 32) == 0)
        w->ticket_key_version = (uint32_t)json_integer_value(json_object_get(root, "ticket_key_version"));
    w->has_checkpoint_key = b64_field(root, "checkpoint_public_key", w->checkpoint_pk, 32) == 0;
    json_t *cp = json_object_get(root, "checkpoint");
    if (cp && b64_field(cp, "head", w->checkpoint_head, 32) == 0 &&
        json_is_integer(json_object_get(cp, "seq"))) {
        w->has_checkpoint = 1;
        w->checkpoint_seq = json_integer_value(json_object_get(cp, "seq"));
        w->checkpoint_at_ms = json_integer_value(json_object_get(cp, "at_ms"));
        w->checkpoint_entry_at_ms = json_integer_value(json_object_get(cp, "entry_at_ms"));
    }
    *out = w;
    w = NULL;
    err = VEIL_OK;
out:
    sodium_memzero(seed, sizeof seed);
    vw_wallet_free(w);
    json_decref(root);
    return err;
}

veil_err vw_wallet_save(const vw_wallet *w, const char *path, int exclusive, char *errbuf,
                        size_t errlen)
{
    char seed64[64], pk64[64], tpk64[64], tmp[4096];
    unsigned char seed[32];
    crypto_sign_ed25519_sk_to_seed(seed, w->sk);
    veil_b64url_encode(seed64, sizeof seed64, seed, sizeof seed);
    sodium_memzero(seed, sizeof seed);
    veil_b64url_encode(pk64, sizeof pk64, w->pk, 32);
    veil_b64url_encode(tpk64, sizeof tpk64, w->ticket_pk, 32);
    json_t *root = json_pack("{s:i, s:s, s:s, s:s, s:s}", "version", 1, "device_seed", seed64,
                             "device_public_key", pk64, "device_id", w->device_id, "web_number",
                             w->web_number);
    sodium_memzero(seed64, sizeof seed64);
    if (w->web_certificate)
        json_object_set_new(root, "web_certificate", json_string(w->web_certificate));
    if (w->ticket_key_version) {
        json_object_set_new(root, "ticket_public_key", json_string(tpk64));
        json_object_set_new(root, "ticket_key_version", json_integer(w->ticket_key_version));
    }
    if (w->has_checkpoint_key) {
        char ck64[64];
        veil_b64url_encode(ck64, sizeof ck64, w->checkpoint_pk, 32);
        json_object_set_new(root, "checkpoint_public_key", json_string(ck64));
    }
    if (w->has_checkpoint) {
        char head64[64];
        veil_b64url_encode(head64, sizeof head64, w->checkpoint_head, 32);
        json_object_set_new(root, "checkpoint",
                            json_pack("{s:I, s:s, s:I, s:I}", "seq", (json_int_t)w->checkpoint_seq,
                                      "head", head64, "at_ms", (json_int_t)w->checkpoint_at_ms,
                                      "entry_at_ms", (json_int_t)w->checkpoint_entry_at_ms));
    }
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!text)
        return VEIL_ERR_NOMEM;
    veil_err err = VEIL_OK;
    if (exclusive && access(path, F_OK) == 0) {
        snprintf(errbuf, errlen, "wallet %s already exists; refusing to overwrite it", path);
        err = VEIL_ERR_EXISTS;
        goto out;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0 || rename(tmp, path) != 0) {
        snprintf(errbuf, errlen, "wallet %s: cannot be written: %s", path, strerror(errno));
        err = VEIL_ERR_UNAVAILABLE;
        unlink(tmp);
    }
    if (fd >= 0)
        close(fd);
out:
    sodium_memzero(text, strlen(text));
    free(text);
    return err;
}

veil_err vw_wallet_enrolled(vw_wallet *w, const Veil__Gateway__WalletEnrolResponse *r)
{
    if (strlen(r->device_id) != 32 || r->ticket_public_key.len != 32 ||
        strlen(r->web_number) != VEIL_WEB_NUMBER_LEN)
        return VEIL_ERR_INVALID;
    memcpy(w->device_id, r->device_id, 33);
    memcpy(w->web_number, r->web_number, VEIL_WEB_NUMBER_LEN + 1);
    free(w->web_certificate);
    w->web_certificate = strdup(r->web_certificate);
    memcpy(w->ticket_pk, r->ticket_public_key.data, 32);
    w->ticket_key_version = r->ticket_key_version;
    if (r->checkpoint_public_key.len == 32) {
        memcpy(w->checkpoint_pk, r->checkpoint_public_key.data, 32);
        w->has_checkpoint_key = 1;
    }
    return w->web_certificate ? VEIL_OK : VEIL_ERR_NOMEM;
}

void vw_attest(const vw_wallet *w, const unsigned char authority_seed[32], const char *id_number,
               const char *full_name, int face_match, int64_t at_ms, unsigned char sig[64],
               Veil__Gateway__WalletEnrolRequest *req)
{
    unsigned char apk[32], ask[64];
    veil_buf b = {0};
    crypto_sign_seed_keypair(apk, ask, authority_seed);
    veil_attestation_bytes(&b, id_number, full_name, face_match, w->pk, at_ms);
    crypto_sign_detached(sig, NULL, b.data, b.len, ask);
    sodium_memzero(ask, sizeof ask);
    veil_buf_free(&b);
    req->id_number = (char *)id_number;
    req->full_name = (char *)full_name;
    req->device_public_key.data = (unsigned char *)w->pk;
    req->device_public_key.len = 32;
    req->face_match = face_match;
    req->attested_at_ms = at_ms;
    req->attestation_signature.data = sig;
    req->attestation_signature.len = 64;
}

veil_err vw_wallet_keys(vw_wallet *w, const Veil__Gateway__WalletKeysResponse *k)
{
    if (k->ticket_public_key.len != 32 || !k->ticket_key_version)
        return VEIL_ERR_INVALID;
    memcpy(w->ticket_pk, k->ticket_public_key.data, 32);
    w->ticket_key_version = k->ticket_key_version;
    return VEIL_OK;
}

veil_err vw_seal_enrolment(const vw_wallet *w, Veil__Gateway__WalletEnrolRequest *req,
                           unsigned char out[VEIL_ENROL_SEALED_BYTES])
{
    if (!w->ticket_key_version)
        return VEIL_ERR_PRECONDITION;
    if (req->device_public_key.len != 32 || req->attestation_signature.len != 64)
        return VEIL_ERR_INVALID;
    veil_enrol_identity *id = sodium_malloc(sizeof *id);
    if (!id)
        return VEIL_ERR_NOMEM;
    memset(id, 0, sizeof *id);
    id->key_version = w->ticket_key_version;
    snprintf(id->id_number, sizeof id->id_number, "%s", req->id_number);
    snprintf(id->full_name, sizeof id->full_name, "%s", req->full_name);
    snprintf(id->device_label, sizeof id->device_label, "%s", req->device_label);
    memcpy(id->device_pk, req->device_public_key.data, 32);
    id->face_match = req->face_match;
    id->attested_at_ms = req->attested_at_ms;
    memcpy(id->signature, req->attestation_signature.data, 64);
    veil_err err = VEIL_ERR_INVALID;
    /* a field that does not fit would be cut by snprintf: refuse rather than seal another one */
    if (strlen(req->id_number) < sizeof id->id_number &&
        strlen(req->full_name) < sizeof id->full_name &&
        strlen(req->device_label) < sizeof id->device_label)
        err = veil_enrol_identity_seal(id, w->ticket_pk, out);
    sodium_free(id);
    if (err)
        return err;
    req->sealed_identity.data = out;
    req->sealed_identity.len = VEIL_ENROL_SEALED_BYTES;
    req->id_number = req->full_name = req->device_label = (char *)"";
    req->device_public_key.data = req->attestation_signature.data = NULL;
    req->device_public_key.len = req->attestation_signature.len = 0;
    req->face_match = 0;
    req->attested_at_ms = 0;
    return VEIL_OK;
}

veil_err vw_ticket(const vw_wallet *w, const char *app_id, const unsigned char *challenge,
                   size_t challenge_len, int64_t time_ms, char **out)
{
    unsigned char id[VEIL_DEVICE_ID_BYTES];
    *out = NULL;
    if (veil_device_id_parse(w->device_id, id) != 0 || !w->ticket_key_version)
        return VEIL_ERR_PRECONDITION; /* not enrolled */
    return veil_ticket_make(app_id, challenge, challenge_len, time_ms, id, w->sk, w->ticket_pk,
                            w->ticket_key_version, out);
}

veil_err vw_present(const vw_wallet *w, const char *const *attrs, size_t n, int64_t time_ms,
                    char **out)
{
    unsigned char id[VEIL_DEVICE_ID_BYTES];
    *out = NULL;
    if (veil_device_id_parse(w->device_id, id) != 0 || !w->ticket_key_version)
        return VEIL_ERR_PRECONDITION; /* not enrolled */
    return veil_presentation_make(attrs, n, time_ms, id, w->sk, w->ticket_pk, out);
}

veil_err vw_sign(const vw_wallet *w, const char *method_path, const ProtobufCMessage *payload,
                 int64_t time_ms, Veil__Gateway__SignedRequest *req)
{
    veil__gateway__signed_request__init(req);
    size_t n = protobuf_c_message_get_packed_size(payload);
    unsigned char *packed = malloc(n ? n : 1);
    if (!packed)
        return VEIL_ERR_NOMEM;
    protobuf_c_message_pack(payload, packed);
    veil_err err = vw_sign_bytes(w, method_path, packed, n, time_ms, req);
    free(packed);
    return err;
}

veil_err vw_sign_bytes(const vw_wallet *w, const char *method_path, const void *payload, size_t n,
                       int64_t time_ms, Veil__Gateway__SignedRequest *req)
{
    veil__gateway__signed_request__init(req);
    if (!w->device_id[0])
        return VEIL_ERR_PRECONDITION;
    Veil__CitizenAuth *auth = calloc(1, sizeof *auth);
    unsigned char *bytes = malloc(n ? n : 1), *nonce = malloc(VEIL_NONCE_BYTES),
                  *sig = malloc(crypto_sign_BYTES);
    char *device = strdup(w->device_id);
    if (!auth || !bytes || !nonce || !sig || !device) {
        free(auth), free(bytes), free(nonce), free(sig), free(device);
        return VEIL_ERR_NOMEM;
    }
    if (n)
        memcpy(bytes, payload, n);
    randombytes_buf(nonce, VEIL_NONCE_BYTES);
    veil_buf b = {0};
    veil_citizen_signed_bytes(&b, method_path, bytes, n, time_ms, nonce, VEIL_NONCE_BYTES,
                              w->device_id);
    crypto_sign_detached(sig, NULL, b.data, b.len, w->sk);
    veil_buf_free(&b);
    veil__citizen_auth__init(auth);
    auth->device_id = device;
    auth->time_ms = time_ms;
    auth->nonce.data = nonce;
    auth->nonce.len = VEIL_NONCE_BYTES;
    auth->signature.data = sig;
    auth->signature.len = crypto_sign_BYTES;
    req->payload.data = bytes;
    req->payload.len = n;
    req->auth = auth;
    return VEIL_OK;
}

void vw_signed_free(Veil__Gateway__SignedRequest *req)
{
    if (req->auth) {
        free(req->auth->device_id);
        free(req->auth->nonce.data);
        free(req->auth->signature.data);
        free(req->auth);
    }
    free(req->payload.data);
    veil__gateway__signed_request__init(req);
}

/* The entry of seq in r, or NULL. */
static const Veil__Gateway__AccessLogEntry *entry_at(const Veil__Gateway__AccessLogResponse *r,
                                                     int64_t seq)
{
    for (size_t i = 0; i < r->n_entries; i++)
        if (r->entries[i]->seq == seq)
            return r->entries[i];
    return NULL;
}

static void check_result(vw_log_check *out, const char *status, int ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void check_result(vw_log_check *out, const char *status, int ok, const char *fmt, ...)
{
    va_list ap;
    out->status = status;
    out->ok = ok;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
}

/* Whether the checkpoint is the vault's signature over where these entries end. */
static int checkpoint_valid(const vw_wallet *w, const Veil__Gateway__AccessCheckpoint *cp,
                            const Veil__Gateway__AccessLogResponse *r)
{
    static const unsigned char empty[32];
    veil_buf b = {0};
    if (cp->head.len != 32 || cp->signature.len != crypto_sign_BYTES || cp->seq < 0 ||
        strcmp(cp->web_number, w->web_number) != 0)
        return 0;
    veil_checkpoint_bytes(&b, cp->web_number, cp->seq, cp->head.data, cp->at_ms,
                          cp->retention_ms);
    int good = !b.failed && crypto_sign_verify_detached(cp->signature.data, b.data, b.len,
                                                        w->checkpoint_pk) == 0;
    veil_buf_free(&b);
    if (!good)
        return 0;
    /* The entries end at the checkpoint: its seq is the last, its head that entry's chain value. */
    const Veil__Gateway__AccessLogEntry *last = r->n_entries ? r->entries[r->n_entries - 1] : NULL;
    if (cp->seq == 0)
        return !last && memcmp(cp->head.data, empty, 32) == 0;
    return last && last->seq == cp->seq && last->chain.len == 32 &&
           memcmp(last->chain.data, cp->head.data, 32) == 0;
}

void vw_checkpoint_check(const vw_wallet *w, const Veil__Gateway__AccessLogResponse *r,
                         vw_log_check *out)
{
    const Veil__Gateway__AccessCheckpoint *cp = r->checkpoint;
    memset(out, 0, sizeof *out);
    out->previous_seq = w->has_checkpoint ? w->checkpoint_seq : -1;
    out->seq = cp ? cp->seq : -1;
    if (!w->has_checkpoint_key) {
        check_result(out, "no_checkpoint", 0, "the wallet has no checkpoint key pinned");
        return;
    }
    if (!cp) {
        check_result(out, "no_checkpoint", 0, "the reply carries no checkpoint");
        return;
    }
    if (!checkpoint_valid(w, cp, r)) {
        check_result(out, "bad_checkpoint", 0,
                     "the checkpoint is not the vault's signature over these entries");
        return;
    }
    if (!w->has_checkpoint) {
        check_result(out, "first_read", 1,
                     "first read on this device: checkpoint at entry %lld kept",
                     (long long)cp->seq);
        return;
    }
    if (cp->seq == 0 && w->checkpoint_seq > 0) {
        check_result(out, "wiped", 0,
                     "the log was wiped: it held %lld entries when this device last read it",
                     (long long)w->checkpoint_seq);
        return;
    }
    if (cp->seq < w->checkpoint_seq) {
        check_result(out, "rolled_back", 0,
                     "the log was rolled back: it ended at entry %lld when this device last read "
                     "it, now at %lld",
                     (long long)w->checkpoint_seq, (long long)cp->seq);
        return;
    }
    const Veil__Gateway__AccessLogEntry *then = entry_at(r, w->checkpoint_seq);
    /*
     * Retention may have dropped the entry this device anchored on - but only
     * if it is older than the retention period the vault signed, and only
     * from the start of the log: every entry the vault returns is newer.
     */
    if (w->checkpoint_seq > 0 && !then && cp->retention_ms > 0 && r->n_entries &&
        r->entries[0]->seq > w->checkpoint_seq &&
        w->checkpoint_entry_at_ms < veil_now_ms() - cp->retention_ms) {
        check_result(out, "pruned", 1,
                     "entries up to %lld are past the retention period and were dropped; the log "
                     "goes on from entry %lld",
                     (long long)w->checkpoint_seq, (long long)r->entries[0]->seq);
        return;
    }
    if (w->checkpoint_seq > 0 &&
        (!then || then->chain.len != 32 || memcmp(then->chain.data, w->checkpoint_head, 32) != 0)) {
        check_result(out, "rewritten", 0,
                     "the log was rewritten: entry %lld is not the one this device saw last time",
                     (long long)w->checkpoint_seq);
        return;
    }
    check_result(out, "consistent", 1, "consistent with this device's last read (entry %lld)",
                 (long long)w->checkpoint_seq);
}

void vw_checkpoint_keep(vw_wallet *w, const Veil__Gateway__AccessLogResponse *r)
{
    if (!r->checkpoint || r->checkpoint->head.len != 32)
        return;
    w->has_checkpoint = 1;
    w->checkpoint_seq = r->checkpoint->seq;
    w->checkpoint_at_ms = r->checkpoint->at_ms;
    w->checkpoint_entry_at_ms = r->n_entries ? r->entries[r->n_entries - 1]->at_ms : 0;
    memcpy(w->checkpoint_head, r->checkpoint->head.data, 32);
}
