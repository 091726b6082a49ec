/*
 * enrol.c - enrolment: a proofed person gets (or, enrolling again, keeps)
 * an identity and a new device, and a web certificate for that device.
 *
 * Order of checks: every field's syntax and the ID number, then the
 * attestation's signature (no database work for a forged request), then
 * idempotency (so a retry of a request that succeeded gets its result even
 * after the attestation went stale), then the attestation's age, then the
 * transaction.  Two enrolments racing on the same person, device key, web
 * number or request id meet a unique constraint; the loser retries the
 * whole transaction and finds the winner's rows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <sodium.h>

#include "veil/jws.h"
#include "veil/log.h"
#include "veil/inperson.h"
#include "vault.h"

#define ATTEMPTS 3

static veil_err fail(veil_call *call, veil_err err, const char *msg)
{
    veil_call_fail(call, err, "%s", msg);
    return err;
}

static int printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n <= max && veil_utf8_printable(s, n);
}

/* Syntax of every field; the ID number is parsed into *id. */
static veil_err check_request(veil_call *call, const Veil__Vault__EnrolRequest *req,
                              struct vault_idnumber *id)
{
    const Veil__Vault__ProofingAttestation *at = req->attestation;
    size_t rl = strlen(req->request_id), nl = strlen(req->full_name);
    if (rl == 0 || !printable(req->request_id, VAULT_REQUEST_ID_MAX))
        return fail(call, VEIL_ERR_INVALID, "request_id must be 1 to 128 printable characters");
    vault_id_status st = vault_idnumber_parse(req->id_number, strlen(req->id_number),
                                              vault_today_cst(veil_now_ms()), id);
    if (st != VAULT_ID_OK)
        return fail(call, VEIL_ERR_INVALID, vault_id_status_message(st));
    if (nl == 0 || !printable(req->full_name, VAULT_NAME_MAX))
        return fail(call, VEIL_ERR_INVALID, "full_name must be 1 to 200 bytes of printable UTF-8");
    if (req->device_public_key.len != 32)
        return fail(call, VEIL_ERR_INVALID, "device_public_key must be 32 bytes (Ed25519)");
    if (!printable(req->device_label, VAULT_LABEL_MAX))
        return fail(call, VEIL_ERR_INVALID,
                    "device_label must be at most 64 bytes of printable UTF-8");
    if (!at)
        return fail(call, VEIL_ERR_INVALID, "attestation is required");
    if (at->signature.len != 64)
        return fail(call, VEIL_ERR_INVALID, "attestation.signature must be 64 bytes (Ed25519)");
    if (req->card_pin[0] && !veil_card_pin_valid(req->card_pin))
        return fail(call, VEIL_ERR_INVALID, "card_pin must be 4 to 12 digits");
    return VEIL_OK;
}

/* The proofing authority signed exactly this ID number, name, result and device key. */
static veil_err check_signature(struct vault *v, veil_call *call,
                                const Veil__Vault__EnrolRequest *req)
{
    const Veil__Vault__ProofingAttestation *at = req->attestation;
    veil_buf msg = {0};
    veil_attestation_bytes(&msg, req->id_number, req->full_name, at->face_match,
                           req->device_public_key.data, at->attested_at_ms);
    int good = !msg.failed && vault_proofing_verify(v->keys, at->signature.data, msg.data, msg.len);
    veil_buf_free(&msg);
    if (msg.failed)
        return VEIL_ERR_NOMEM;
    if (!good)
        return fail(call, VEIL_ERR_INVALID,
                    "attestation.signature does not verify for this id_number, full_name, "
                    "face_match, device_public_key and attested_at_ms");
    if (!at->face_match)
        return fail(
            call, VEIL_ERR_PRECONDITION,
            "attestation.face_match is false: the proofing authority did not match the face");
    return VEIL_OK;
}

static veil_err check_fresh(struct vault *v, veil_call *call, int64_t attested_at_ms)
{
    int64_t now = veil_now_ms();
    if (attested_at_ms > now + v->cfg.skew_ms)
        return fail(call, VEIL_ERR_INVALID, "attestation.attested_at_ms is in the future");
    /* Compared without subtracting the caller's value: INT64_MIN must not overflow (UB). */
    if (attested_at_ms < now - v->cfg.attestation_max_age_ms) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION,
                       "attestation.attested_at_ms is older than %lld s: proof the person again",
                       (long long)(v->cfg.attestation_max_age_ms / 1000));
        return VEIL_ERR_PRECONDITION;
    }
    return VEIL_OK;
}

veil_err vault_webcert_issue(const struct vault_keys *k, const char *web_number,
                             const unsigned char device_pk[32], int64_t now_ms, int64_t days,
                             char **out)
{
    char x[64];
    veil_b64url_encode(x, sizeof x, device_pk, 32);
    json_int_t iat = (json_int_t)(now_ms / 1000);
    json_t *claims = json_pack("{s:s, s:s, s:{s:{s:s, s:s, s:s}}, s:I, s:I}", "iss", "veil-vault",
                               "wn", web_number, "cnf", "jwk", "kty", "OKP", "crv", "Ed25519", "x",
                               x, "iat", iat, "exp", iat + (json_int_t)days * 86400);
    *out = NULL;
    if (!claims)
        return VEIL_ERR_NOMEM;
    veil_err err = veil_jws_sign(atomic_load(&k->webcert_signer), "veil-webcert+jwt", claims, out);
    json_decref(claims);
    return err;
}

veil_err vault_citizen_build(struct vault_keys *k, const struct vault_profile *p,
                             struct vault_new_citizen *out, unsigned char dk[VAULT_DEK_BYTES])
{
    const veil_key *master = vault_master_key(k, atomic_load(&k->master_current));
    if (!master)
        return VEIL_ERR_INTERNAL;
    randombytes_buf(out->subject, VAULT_SUBJECT_BYTES);
    randombytes_buf(dk, VAULT_DEK_BYTES);
    vault_blind_index(k->blind_key, p->id_number, out->blind);
    veil_web_number_new(out->web_number);
    out->key_version = master->version;
    vault_dek_wrap(master, out->subject, dk, out->wrapped);
    return vault_profile_seal(dk, out->subject, p, out->profile, &out->profile_len);
}

/* Everything one enrolment computes before and inside its transaction. */
struct enrol {
    struct vault *v;
    veil_call *call;
    const Veil__Vault__EnrolRequest *req;
    struct vault_profile profile; /* personal: wiped at the end */
    unsigned char blind[VAULT_HASH_BYTES];
    unsigned char request_key[VAULT_HASH_BYTES];
    struct vault_request_row result;
    vault_conn *conn; /* while ensure_device revokes replaced cards: their log entries */
    const unsigned char *dk;
    unsigned cards_revoked; /* replace_cards: how many other cards this enrolment revoked */
};

/* The citizen of e->profile: the existing one (profile refreshed) or a new one. */
static veil_err ensure_citizen(struct enrol *e, vault_conn *c, unsigned char dk[VAULT_DEK_BYTES])
{
    struct vault_citizen_row *row = veil_guarded_take(sizeof *row);
    struct vault_new_citizen *n = sodium_malloc(sizeof *n);
    veil_err err = VEIL_ERR_NOMEM;
    if (!row || !n)
        goto out;
    err = vault_store_lock_citizen(c, e->blind, row);
    if (err == VEIL_OK) {
        /* Known person: a fresh proofing refreshes the stored profile (name changes, time). */
        const veil_key *master = vault_master_key(e->v->keys, row->key_version);
        if (!master || vault_dek_unwrap(master, row->subject, row->wrapped, VAULT_WRAPPED_BYTES,
                                        dk) != VEIL_OK) {
            veil_log(VEIL_LOG_ERROR, "cannot unwrap a data key",
                     VL_INT("key_version", row->key_version), VL_END);
            err = VEIL_ERR_INTERNAL;
            goto out;
        }
        unsigned char sealed[VAULT_PROFILE_MAX];
        size_t len;
        if ((err = vault_profile_seal(dk, row->subject, &e->profile, sealed, &len)) ||
            (err = vault_store_update_profile(c, row->subject, sealed, len)))
            goto out;
        memcpy(e->result.subject, row->subject, VAULT_SUBJECT_BYTES);
        memcpy(e->result.web_number, row->web_number, sizeof row->web_number);
        e->result.new_identity = 0;
        /* A re-proofing cancels every pending erasure or revocation (stepup.c). */
        unsigned cancelled = 0;
        struct vault_entry le = {.action = "pending_cancelled", .purpose = "re-proofing"};
        if (!(err = vault_store_pending_cancel(c, row->subject, NULL, &cancelled)) && cancelled)
            err = vault_access_record_dk(e->v, c, row->subject, dk, &le);
        goto out;
    }
    if (err != VEIL_ERR_NOT_FOUND)
        goto out;
    /* An authority's suspension or revocation outlives an erasure: it binds the person. */
    char held[16];
    if ((err = vault_store_held(c, e->blind, held, sizeof held)) == VEIL_OK) {
        veil_call_fail(e->call, VEIL_ERR_PRECONDITION,
                       "this identity is %s by the authority: the citizen must contact the "
                       "authority",
                       held);
        err = VEIL_ERR_PRECONDITION;
        goto out;
    }
    if (err != VEIL_ERR_NOT_FOUND)
        goto out;
    if ((err = vault_citizen_build(e->v->keys, &e->profile, n, dk)))
        goto out;
    err = vault_store_insert_citizen(c, n);
    if (err == VEIL_ERR_EXISTS) /* same person or web number inserted concurrently */
        err = VEIL_ERR_ABORTED;
    if (err)
        goto out;
    memcpy(e->result.subject, n->subject, VAULT_SUBJECT_BYTES);
    memcpy(e->result.web_number, n->web_number, sizeof n->web_number);
    e->result.new_identity = 1;
out:
    veil_guarded_give(row);
    sodium_free(n);
    return err;
}

/* Logs one card revoked by a replacement (issue 17), in the enrolment's transaction. */
static veil_err card_revoked(void *ctx, const unsigned char *device_id)
{
    struct enrol *e = ctx;
    char id[33];
    veil_device_id_text(device_id, id);
    struct vault_entry le = {.action = "device_revoked", .detail = id};
    e->cards_revoked++;
    return vault_access_record_dk(e->v, e->conn, e->result.subject, e->dk, &le);
}

/* The device of the request's key: a new one, or this person's existing active one. */
static veil_err ensure_device(struct enrol *e, vault_conn *c,
                              const unsigned char dk[VAULT_DEK_BYTES])
{
    const unsigned char *pk = e->req->device_public_key.data;
    int64_t attested_at = e->req->attestation->attested_at_ms;
    e->cards_revoked = 0; /* an attempt that lost a race rolled its revocations back */
    unsigned char owner[VAULT_SUBJECT_BYTES];
    int revoked = 0;
    veil_err err = vault_store_find_device_key(c, pk, owner, e->result.device_id, &revoked);
    if (err == VEIL_OK) {
        if (sodium_memcmp(owner, e->result.subject, VAULT_SUBJECT_BYTES) != 0)
            return fail(e->call, VEIL_ERR_EXISTS, "device key already enrolled");
        if (revoked)
            return fail(e->call, VEIL_ERR_PRECONDITION,
                        "device_public_key belongs to a revoked device: enrol with a new key");
        /* The same phone enrolling again: keep its device, which now ranks from this proofing. */
        return vault_store_set_proofed(c, e->result.device_id, attested_at);
    }
    if (err != VEIL_ERR_NOT_FOUND)
        return err;
    veil_buf label = {0};
    char id[33];
    randombytes_buf(e->result.device_id, VEIL_DEVICE_ID_BYTES);
    veil_device_id_text(e->result.device_id, id);
    struct vault_entry le = {.action = "device_added", .detail = id};
    err =
        vault_label_seal(dk, e->result.subject, e->result.device_id, e->req->device_label, &label);
    if (!err)
        err = vault_store_insert_device(c, e->result.device_id, e->result.subject, pk, label.data,
                                        label.len, attested_at);
    if (!err && e->req->card_pin[0]) { /* a counter-issued card (issue 17) */
        unsigned char mac[VAULT_HASH_BYTES];
        vault_card_pin_mac(e->v->keys->blind_key, pk, e->req->card_pin, mac);
        err = vault_store_set_pin(c, e->result.device_id, mac);
        e->conn = c;
        e->dk = dk;
        if (!err && e->req->replace_cards)
            err = vault_store_revoke_cards(c, e->result.subject, e->result.device_id, card_revoked,
                                           e);
        e->conn = NULL;
        e->dk = NULL;
    }
    veil_buf_free(&label);
    if (!err)
        err = vault_access_record_dk(e->v, c, e->result.subject, dk, &le);
    return err == VEIL_ERR_EXISTS ? VEIL_ERR_ABORTED : err;
}

/* One attempt at the whole transaction; VEIL_ERR_ABORTED means "lost a race, try again". */
static veil_err enrol_once(struct enrol *e, vault_conn *c,
                           const unsigned char mac[VAULT_HASH_BYTES])
{
    unsigned char dk[VAULT_DEK_BYTES];
    veil_err err = vault_store_begin(c);
    if (err)
        return err;
    struct vault_request_row *r = &e->result;
    err = vault_store_find_request(c, e->request_key, r);
    if (err == VEIL_OK) {
        if (sodium_memcmp(r->mac, mac, VAULT_HASH_BYTES) != 0)
            err = fail(e->call, VEIL_ERR_EXISTS, "request_id was used for a different request");
        goto out; /* the same request again: its stored result */
    }
    if (err != VEIL_ERR_NOT_FOUND)
        goto out;
    if ((err = check_fresh(e->v, e->call, e->req->attestation->attested_at_ms)) ||
        (err = ensure_citizen(e, c, dk)) || (err = ensure_device(e, c, dk)))
        goto out;
    if ((err = vault_webcert_issue(e->v->keys, r->web_number, e->req->device_public_key.data,
                                   veil_now_ms(), e->v->cfg.webcert_days, &r->certificate)))
        goto out;
    memcpy(r->mac, mac, VAULT_HASH_BYTES);
    err = vault_store_insert_request(c, e->request_key, r);
    if (err == VEIL_ERR_EXISTS)
        err = VEIL_ERR_ABORTED;
out:
    sodium_memzero(dk, sizeof dk);
    if (!err)
        err = vault_store_commit(c);
    if (err) {
        vault_store_rollback(c);
        free(r->certificate);
        r->certificate = NULL;
    }
    return err;
}

/* A sealed identity once opened, and the request rebuilt from it.  Personal: sodium_free. */
struct unsealed {
    veil_enrol_identity id;
    Veil__Vault__EnrolRequest req;
    Veil__Vault__ProofingAttestation at;
};

struct open_ctx {
    const ProtobufCBinaryData *sealed;
    veil_enrol_identity *out;
    veil_err parsed; /* of the key that opened it */
};

/* Opened (VEIL_OK) even when what opened is malformed: that is ctx->parsed's to say. */
static veil_err open_identity(const struct vault_boxkey *key, int keep, void *arg)
{
    struct open_ctx *c = arg;
    veil_enrol_identity *tmp = sodium_malloc(sizeof *tmp);
    if (!tmp)
        return VEIL_ERR_NOMEM;
    veil_err err = veil_enrol_identity_open(c->sealed->data, c->sealed->len, key->pk, key->sk, tmp);
    if (err != VEIL_ERR_UNAUTHENTICATED && keep) {
        c->parsed = err;
        *c->out = *tmp;
    }
    sodium_free(tmp);
    return err == VEIL_ERR_UNAUTHENTICATED ? err : VEIL_OK;
}

/*
 * When the phone sealed the identity to the vault (the gateway's only way):
 * opens it into u and points *req at a request rebuilt from it.  A request
 * with no sealed_identity is used as it is.
 */
static veil_err unseal(struct vault *v, veil_call *call, const Veil__Vault__EnrolRequest **req,
                       struct unsealed *u)
{
    const Veil__Vault__EnrolRequest *in = *req;
    if (!in->sealed_identity.len)
        return VEIL_OK;
    if (*in->id_number || *in->full_name || in->device_public_key.len || in->attestation ||
        *in->device_label)
        return fail(call, VEIL_ERR_INVALID,
                    "sealed_identity replaces id_number, full_name, device_public_key, "
                    "attestation and device_label: send them only inside it");
    if (in->sealed_identity.len != VEIL_ENROL_SEALED_BYTES)
        return fail(call, VEIL_ERR_INVALID, "sealed_identity must be 560 bytes");
    struct open_ctx c = {&in->sealed_identity, &u->id, VEIL_OK};
    uint32_t opened = vault_box_open_any(v->keys, open_identity, &c);
    if (!opened)
        return fail(
            call, VEIL_ERR_INVALID,
            "sealed_identity does not open: seal it to the ticket key Wallet/GetKeys gives");
    if (c.parsed)
        return fail(call, VEIL_ERR_INVALID, "sealed_identity is malformed");
    if (u->id.key_version != opened)
        return fail(call, VEIL_ERR_INVALID,
                    "sealed_identity names another ticket key version than it is sealed to");
    u->req = *in;
    veil__vault__proofing_attestation__init(&u->at);
    u->at.face_match = u->id.face_match;
    u->at.attested_at_ms = u->id.attested_at_ms;
    u->at.signature.data = u->id.signature;
    u->at.signature.len = sizeof u->id.signature;
    u->req.id_number = u->id.id_number;
    u->req.full_name = u->id.full_name;
    u->req.device_public_key.data = u->id.device_pk;
    u->req.device_public_key.len = sizeof u->id.device_pk;
    u->req.attestation = &u->at;
    u->req.device_label = u->id.device_label;
    *req = &u->req;
    return VEIL_OK;
}

veil_err vault_enrolment_run(struct vault *v, veil_call *call, const Veil__Vault__EnrolRequest *req,
                             struct vault_enrolment *out)
{
    struct vault_idnumber id;
    unsigned char mac[VAULT_HASH_BYTES];
    vault_conn *c;
    struct enrol *e = NULL;
    struct unsealed *u = sodium_malloc(sizeof *u);
    veil_err err;
    memset(out, 0, sizeof *out);
    memset(&id, 0, sizeof id);

    if (!u) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    if ((err = unseal(v, call, &req, u)) || (err = check_request(call, req, &id)) ||
        (err = check_signature(v, call, req)))
        goto out;
    if (!(e = sodium_malloc(sizeof *e))) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    memset(e, 0, sizeof *e);
    e->v = v;
    e->call = call;
    e->req = req;
    memcpy(e->profile.id_number, id.text, sizeof id.text);
    snprintf(e->profile.full_name, sizeof e->profile.full_name, "%s", req->full_name);
    e->profile.face_match = req->attestation->face_match;
    e->profile.proofed_at_ms = req->attestation->attested_at_ms;
    vault_blind_index(v->keys->blind_key, id.text, e->blind);
    vault_request_key(v->keys->blind_key, req->request_id, e->request_key);
    vault_request_mac(v->keys->blind_key, req, id.text, mac);

    if ((err = vault_store_conn(v->store, &c)))
        goto out;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++)
        if ((err = enrol_once(e, c, mac)) != VEIL_ERR_ABORTED)
            break;
    if (err == VEIL_ERR_ABORTED)
        veil_call_fail(call, err, "a concurrent enrolment of the same person or device won: retry");
    if (err)
        goto out;
    memcpy(out->web_number, e->result.web_number, sizeof out->web_number);
    veil_device_id_text(e->result.device_id, out->device_id);
    out->new_identity = e->result.new_identity;
    out->cards_revoked = e->cards_revoked;
    out->certificate = e->result.certificate;
out:
    sodium_memzero(&id, sizeof id);
    sodium_free(e);
    sodium_free(u); /* wipes the opened identity */
    return err;
}
