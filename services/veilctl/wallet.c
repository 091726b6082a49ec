/* wallet.c - the simulated phone (wallet.h). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/codec.h"
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
