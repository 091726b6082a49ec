/*
 * handlers.c - the vault's RPCs, one function each, and the caller policy:
 * only the gateway may call the vault (it forwards citizens' and admins'
 * requests after authenticating them).  Everything that touches the
 * database runs on a worker; GetWalletKeys is answered from memory.
 *
 * Failure messages name the field at fault and never echo a value: no ID
 * number, name, ticket, signature or subject reference reaches a client or
 * the log.  Ticket and citizen-request failures that could tell whether a
 * person or device exists share one message (and one code path cost).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "veil/items.h"
#include "veil/log.h"
#include "vault.h"

#define TICKET_FAILED  "login ticket could not be verified"
#define CITIZEN_FAILED "citizen request could not be verified"
#define METHOD_MAX     256
#define PURGE_EVERY_MS 60000

static struct vault *self(Veil__Vault__Vault_Service *svc)
{
    return (struct vault *)svc;
}

static veil_err fail(veil_call *call, veil_err err, const char *msg)
{
    veil_call_fail(call, err, "%s", msg);
    return err;
}

static veil_err check_subject(veil_call *call, const ProtobufCBinaryData *subject)
{
    if (subject->len != VAULT_SUBJECT_BYTES)
        return fail(call, VEIL_ERR_INVALID, "subject_ref must be 32 bytes");
    return VEIL_OK;
}

/* The caller's clock (t) and ours (now) agree within the configured skew. */
static int within_skew_at(const struct vault *v, int64_t t, int64_t now)
{
    return t >= now - v->cfg.skew_ms && t <= now + v->cfg.skew_ms;
}

static int within_skew(const struct vault *v, int64_t t)
{
    return within_skew_at(v, t, veil_now_ms());
}

/*
 * Deletes expired nonces and day-old enrol requests, at most once a minute
 * per process, on the worker that just replied to a citizen request (so no
 * caller waits for it).
 */
static void maybe_purge(struct vault *v)
{
    vault_conn *c;
    int64_t now = veil_now_ms(), next = atomic_load(&v->next_purge_ms);
    if (now < next ||
        !atomic_compare_exchange_strong(&v->next_purge_ms, &next, now + PURGE_EVERY_MS))
        return;
    if (vault_store_conn(v->store, &c) != VEIL_OK || vault_store_purge(c, now) != VEIL_OK)
        veil_log(VEIL_LOG_WARN, "housekeeping failed; retrying in a minute", VL_END);
}

/* Unwraps a citizen's data key; any failure is the operator's problem, not the caller's. */
static veil_err unwrap(struct vault *v, const unsigned char *subject, uint32_t version,
                       const unsigned char *wrapped, unsigned char dk[VAULT_DEK_BYTES])
{
    const veil_key *master = vault_master_key(v->keys, version);
    if (master && vault_dek_unwrap(master, subject, wrapped, VAULT_WRAPPED_BYTES, dk) == VEIL_OK)
        return VEIL_OK;
    veil_log(VEIL_LOG_ERROR, "cannot unwrap a data key (master key missing or wrong)",
             VL_INT("key_version", version), VL_END);
    return VEIL_ERR_INTERNAL;
}

/*
 * Looks up a device and verifies its signature over msg.  Unknown devices
 * still cost one full verification (against a valid key nobody holds), so
 * the time taken does not tell whether a device exists.  A card's key is
 * derived from the code printed on it, so a card never signs: whoever holds
 * the code must also pass the PIN check (inperson.c).
 */
static int signed_by(const struct vault *v, int found, const struct vault_device_row *row,
                     const unsigned char sig[64], const veil_buf *msg)
{
    const unsigned char *pk = found ? row->public_key : v->keys->decoy_pk;
    int good = crypto_sign_verify_detached(sig, msg->data, msg->len, pk) == 0;
    return good && found && !row->card;
}

veil_err vault_device_signed(struct vault *v, vault_conn *c,
                             const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                             const unsigned char sig[64], const veil_buf *msg,
                             struct vault_device_row *row)
{
    veil_err err = vault_store_device(c, device_id, row);
    if (err && err != VEIL_ERR_NOT_FOUND)
        return err;
    if (msg->failed)
        return VEIL_ERR_NOMEM;
    return signed_by(v, !err, row, sig, msg) ? VEIL_OK : VEIL_ERR_UNAUTHENTICATED;
}

/* ---- Enrol ---- */

static void vault_enrol(Veil__Vault__Vault_Service *svc, const Veil__Vault__EnrolRequest *req,
                        Veil__Vault__EnrolResponse_Closure done, void *call)
{
    Veil__Vault__EnrolResponse resp = VEIL__VAULT__ENROL_RESPONSE__INIT;
    struct vault *v = self(svc);
    struct vault_enrolment en;
    veil_err err = vault_enrolment_run(v, call, req, &en);
    if (!err) {
        const struct vault_boxkey *tk =
            vault_ticket_key(v->keys, atomic_load(&v->keys->ticket_current));
        resp.web_number = en.web_number;
        resp.web_certificate = en.certificate;
        resp.device_id = en.device_id;
        resp.new_identity = en.new_identity;
        resp.cards_revoked = en.cards_revoked;
        resp.ticket_public_key.data = (unsigned char *)tk->pk;
        resp.ticket_public_key.len = sizeof tk->pk;
        resp.ticket_key_version = tk->version;
        resp.checkpoint_public_key.data = v->keys->checkpoint_pk;
        resp.checkpoint_public_key.len = sizeof v->keys->checkpoint_pk;
        veil_log(VEIL_LOG_INFO, "enrolled", VL_BOOL("new_identity", en.new_identity), VL_END);
    }
    VEIL_REPLY(done, call, err, &resp);
    if (!err)
        free(en.certificate);
}

/* ---- VerifyTicket and VerifyTicketBatch ---- */

/* One ticket of a batch on its way through verify_tickets. */
struct ticket_item {
    const Veil__Vault__VerifyTicketRequest *req;
    Veil__Vault__VerifyTicketResponse *resp;
    veil_item_outcome out;
    int to_open; /* a phone ticket whose sealed box is to be opened */
    uint32_t opened; /* the version of the ticket key that opened it (0: none) */
    int pending; /* a phone ticket, opened, still to be checked against its device */
    veil_ticket t;
    veil_ticket_inner in; /* wiped once checked */
    veil_buf signed_bytes;
    struct vault_device_row row;
    int found;
    const char *refused; /* a genuine ticket the vault refuses, and why (logged) */
    struct vault_entry entry;
    unsigned char dk[VAULT_DEK_BYTES]; /* wiped once the entry is appended */
    struct vault_access_item log;
};

/*
 * The checks that need neither the database nor a device nor a key: the
 * request's shape and the ticket's binding to app and challenge; a phone
 * ticket that passes is left to_open.  An in-person item (presentation or
 * card) is verified here, whole.
 */
static veil_err ticket_check(struct vault *v, veil_call *call, struct ticket_item *it,
                             unsigned char *subject)
{
    const Veil__Vault__VerifyTicketRequest *req = it->req;
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    veil_err err;
    if (!veil_ident_valid(req->app_id))
        return fail(call, VEIL_ERR_INVALID, "app_id is not a valid app id");
    if (req->challenge.len != VEIL_CHALLENGE_BYTES)
        return fail(call, VEIL_ERR_INVALID, "challenge must be 32 bytes");
    if ((req->ticket[0] != '\0') + (req->presentation[0] != '\0') + (req->card != NULL) > 1)
        return fail(call, VEIL_ERR_INVALID,
                         "exactly one of ticket, presentation and card is required");
    if (req->presentation[0] || req->card) { /* in person (inperson.c) */
        err = vault_inperson_verify(v, call, req, subject, device_id, it->resp);
        sodium_memzero(device_id, sizeof device_id);
        return err;
    }
    err = veil_ticket_parse(req->ticket, strlen(req->ticket), &it->t);
    if (err == VEIL_ERR_PRECONDITION)
        return fail(call, VEIL_ERR_INVALID, VEIL_TICKET_RETIRED);
    if (err)
        return fail(call, VEIL_ERR_INVALID, "ticket is malformed");
    if (strcmp(it->t.app_id, req->app_id) != 0)
        return fail(call, VEIL_ERR_UNAUTHENTICATED,
                         "ticket was not made for this app");
    if (sodium_memcmp(it->t.challenge, req->challenge.data, VEIL_CHALLENGE_BYTES) != 0)
        return fail(call, VEIL_ERR_UNAUTHENTICATED,
                         "ticket does not answer this challenge");
    it->to_open = 1;
    return VEIL_OK;
}

/* The costly steps of a batch, item by item on the helpers (veil/parallel.h): no call touched. */
struct spread {
    const struct vault *v;
    struct ticket_item *items;
};

/* Opens an item's sealed box if it is a phone ticket left to_open. */
static void open_one(void *arg, size_t i)
{
    struct spread *s = arg;
    struct ticket_item *it = &s->items[i];
    if (it->to_open)
        it->opened = vault_ticket_open(s->v->keys, &it->t, &it->in);
}

/* After its sealed box: a phone ticket whose inner key version is the key's is left pending. */
static veil_err ticket_opened(veil_call *call, struct ticket_item *it)
{
    if (!it->opened || it->in.key_version != it->opened)
        return fail(call, VEIL_ERR_UNAUTHENTICATED, TICKET_FAILED);
    veil_ticket_signed_bytes(&it->signed_bytes, it->t.app_id, it->t.challenge,
                             VEIL_CHALLENGE_BYTES, it->in.time_ms, it->in.device_id,
                             it->in.key_version);
    if (it->signed_bytes.failed)
        return VEIL_ERR_NOMEM;
    it->pending = 1;
    return VEIL_OK;
}

/*
 * Verifies a pending item's signature against its device (an unknown device
 * against the decoy key: the time taken does not tell whether a device
 * exists); an item whose signature fails is treated as unknown.
 */
static void check_one(void *arg, size_t i)
{
    struct spread *s = arg;
    struct ticket_item *it = &s->items[i];
    if (it->pending && !signed_by(s->v, it->found, &it->row, it->in.sig, &it->signed_bytes))
        it->found = 0;
}

/*
 * A genuine ticket of a known device that is refused is the citizen's
 * business: the refusal and its reason go to their access log (the app is
 * told only "login refused" by the gateway).  The time is checked after the
 * signature so that only the phone's own tickets are logged.
 */
static veil_err ticket_entry(struct vault *v, struct ticket_item *it)
{
    it->refused = it->row.revoked                   ? "device_revoked"
                  : !within_skew(v, it->in.time_ms) ? "ticket_time_outside_skew"
                                                    : NULL;
    it->entry = (struct vault_entry){.app_id = it->req->app_id,
                                     .action = it->refused ? "login_refused" : "ticket_verified",
                                     .purpose = "login",
                                     .detail = it->refused};
    it->log = (struct vault_access_item){.subject = it->row.subject,
                                         .dk = it->dk,
                                         .head_seq = it->row.head_seq,
                                         .head = it->row.head,
                                         .e = &it->entry};
    return unwrap(v, it->row.subject, it->row.key_version, it->row.wrapped, it->dk);
}

/* The outcome of a checked ticket once its entry's append returned. */
static veil_err ticket_close(veil_call *call, struct ticket_item *it, unsigned char *subject)
{
    veil_err err = it->log.result;
    if (err == VEIL_ERR_NOT_FOUND) /* erased between the lookup and the append: as unknown */
        return fail(call, VEIL_ERR_UNAUTHENTICATED, TICKET_FAILED);
    if (err)
        return err;
    if (it->row.revoked)
        return fail(call, VEIL_ERR_DENIED, "device revoked");
    if (it->refused)
        return fail(call, VEIL_ERR_UNAUTHENTICATED,
                         "ticket time is outside the allowed clock skew");
    memcpy(subject, it->row.subject, VAULT_SUBJECT_BYTES);
    return VEIL_OK;
}

/*
 * Verifies n tickets (1 to VAULT_BATCH_MAX), each exactly as VerifyTicket
 * alone would, but sharing the costly steps: one device look-up (= ANY) for
 * every phone ticket, the sealed boxes opened and the signatures checked on
 * this worker and the helper threads together (VAULT_CRYPTO_THREADS: both
 * cores, not one, for the CPU-bound part of a batch), and one group commit
 * for every access-log entry.  subjects holds n * VAULT_SUBJECT_BYTES.
 */
static veil_err verify_tickets(struct vault *v, veil_call *call, struct ticket_item *items,
                               size_t n, unsigned char *subjects)
{
    unsigned char(*ids)[VEIL_DEVICE_ID_BYTES] = veil_call_array(call, n, sizeof *ids);
    struct vault_device_row *rows = veil_call_array(call, n, sizeof *rows);
    int *found = veil_call_array(call, n, sizeof *found);
    struct vault_access_item *logs = veil_call_array(call, n, sizeof *logs);
    struct spread spread = {.v = v, .items = items};
    size_t pending = 0, appends = 0;
    vault_conn *c = NULL;
    veil_err err = VEIL_OK;
    if (!ids || !rows || !found || !logs)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        veil_err e = ticket_check(v, call, &items[i], subjects + i * VAULT_SUBJECT_BYTES);
        if (!items[i].to_open)
            veil_item_end(call, &items[i].out, e);
    }
    veil_helpers_for(v->helpers, n, open_one, &spread);
    for (size_t i = 0; i < n; i++) {
        struct ticket_item *it = &items[i];
        if (!it->to_open)
            continue;
        veil_err e = ticket_opened(call, it);
        if (!it->pending)
            veil_item_end(call, &it->out, e);
        else
            memcpy(ids[pending++], it->in.device_id, VEIL_DEVICE_ID_BYTES);
    }
    if (!err && pending && !(err = vault_store_conn(v->store, &c)))
        err = vault_store_devices(c, (const unsigned char(*)[VEIL_DEVICE_ID_BYTES])ids, pending,
                                  rows, found);
    for (size_t i = 0, k = 0; !err && i < n; i++) {
        if (!items[i].pending)
            continue;
        items[i].found = found[k];
        items[i].row = rows[k++];
    }
    if (!err)
        veil_helpers_for(v->helpers, n, check_one, &spread);
    for (size_t i = 0; i < n; i++) {
        struct ticket_item *it = &items[i];
        if (!it->pending)
            continue;
        veil_err e = err;
        if (!e && !it->found)
            e = fail(call, VEIL_ERR_UNAUTHENTICATED, TICKET_FAILED);
        if (!e)
            e = ticket_entry(v, it);
        if (e) {
            it->pending = 0;
            veil_item_end(call, &it->out, e);
        } else {
            logs[appends++] = it->log;
        }
    }
    if (appends)
        vault_access_append_many(v, c, logs, appends);
    for (size_t i = 0, k = 0; i < n; i++) {
        struct ticket_item *it = &items[i];
        if (it->pending) {
            it->log.result = logs[k++].result;
            veil_item_end(call, &it->out, ticket_close(call, it, subjects + i * VAULT_SUBJECT_BYTES));
        }
        sodium_memzero(&it->in, sizeof it->in);
        sodium_memzero(it->dk, sizeof it->dk);
        veil_buf_free(&it->signed_bytes);
    }
    return VEIL_OK;
}

/*
 * The release capability for (subject, app, challenge): version 1, expiry,
 * a random id and the keyed hash binding them (docs/vault.md).  Nothing is
 * stored: any vault replica can check it, and the id is recorded only when
 * it is used.
 */
static void mint_capability(const struct vault *v, const unsigned char *subject, const char *app_id,
                            const unsigned char *challenge, unsigned char out[VAULT_CAP_BYTES])
{
    unsigned char *id = out + 9;
    int64_t expires = veil_now_ms() + VAULT_CAP_TTL_MS;
    out[0] = 1;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (unsigned char)((uint64_t)expires >> (56 - 8 * i));
    randombytes_buf(id, VAULT_CAP_ID_BYTES);
    vault_capability_mac(v->keys->audit_key, expires, id, subject, app_id, challenge,
                         out + 9 + VAULT_CAP_ID_BYTES);
}

/*
 * VerifyTicket's logic for both doors: reqs[0..n) checked by verify_tickets,
 * each verified one answered with its subject and a fresh capability (in the
 * call's arena).  The device id is not returned: the vault itself refused a
 * revoked device, so the gateway has no use for knowing which of a
 * citizen's devices logged in, and keeps no device <-> subject mapping.
 * Fails only when the batch as a whole cannot be handled (memory).
 */
static veil_err verify_batch(struct vault *v, veil_call *call,
                             Veil__Vault__VerifyTicketRequest *const *reqs, size_t n,
                             Veil__Vault__VerifyTicketResponse **resps, veil_item_outcome *outs)
{
    struct ticket_item *items = veil_call_array(call, n, sizeof *items);
    unsigned char *subjects = veil_call_array(call, n, VAULT_SUBJECT_BYTES);
    unsigned char *caps = veil_call_array(call, n, VAULT_CAP_BYTES);
    if (!items || !subjects || !caps)
        return VEIL_ERR_NOMEM;
    memset(items, 0, n * sizeof *items);
    for (size_t i = 0; i < n; i++) {
        items[i].req = reqs[i];
        items[i].resp = resps[i];
    }
    veil_err err = verify_tickets(v, call, items, n, subjects);
    for (size_t i = 0; !err && i < n; i++) {
        Veil__Vault__VerifyTicketResponse *r = resps[i];
        outs[i] = items[i].out;
        if (outs[i].err)
            continue;
        if (!r->credential[0])
            r->credential = "phone";
        r->subject_ref.data = subjects + i * VAULT_SUBJECT_BYTES;
        r->subject_ref.len = VAULT_SUBJECT_BYTES;
        r->release_capability.data = caps + i * VAULT_CAP_BYTES;
        r->release_capability.len = VAULT_CAP_BYTES;
        mint_capability(v, r->subject_ref.data, reqs[i]->app_id, reqs[i]->challenge.data,
                        r->release_capability.data);
    }
    return err;
}

static void vault_verify_ticket(Veil__Vault__Vault_Service *svc,
                                const Veil__Vault__VerifyTicketRequest *req,
                                Veil__Vault__VerifyTicketResponse_Closure done, void *call)
{
    Veil__Vault__VerifyTicketResponse resp = VEIL__VAULT__VERIFY_TICKET_RESPONSE__INIT;
    Veil__Vault__VerifyTicketRequest *reqs[] = {(Veil__Vault__VerifyTicketRequest *)req};
    Veil__Vault__VerifyTicketResponse *resps[] = {&resp};
    veil_item_outcome o;
    veil_err err = verify_batch(self(svc), call, reqs, 1, resps, &o);
    VEIL_REPLY(done, call, veil_item_single(call, err, &o), &resp);
}

/* ---- VerifyCitizenRequest ---- */

static veil_err verify_citizen(struct vault *v, veil_call *call,
                               const Veil__Vault__VerifyCitizenRequestRequest *req,
                               unsigned char subject[VAULT_SUBJECT_BYTES])
{
    const Veil__CitizenAuth *auth = req->auth;
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    struct vault_device_row row;
    veil_buf msg = {0};
    vault_conn *c;
    veil_err err;
    size_t ml = strlen(req->method);

    if (ml < 3 || ml > METHOD_MAX || req->method[0] != '/' || !veil_utf8_printable(req->method, ml))
        return fail(call, VEIL_ERR_INVALID, "method must be a full gRPC method path");
    if (!auth)
        return fail(call, VEIL_ERR_INVALID, "auth is required");
    if (veil_device_id_parse(auth->device_id, device_id) != 0)
        return fail(call, VEIL_ERR_INVALID, "auth.device_id must be 32 lowercase hex characters");
    if (auth->nonce.len != VEIL_NONCE_BYTES)
        return fail(call, VEIL_ERR_INVALID, "auth.nonce must be 16 bytes");
    if (auth->signature.len != 64)
        return fail(call, VEIL_ERR_INVALID, "auth.signature must be 64 bytes");
    /* One clock for the skew check and the nonce's expiry: the service's, read once. */
    int64_t now = veil_now_ms();
    if (!within_skew_at(v, auth->time_ms, now))
        return fail(call, VEIL_ERR_UNAUTHENTICATED,
                    "request time is outside the allowed clock skew");

    if ((err = vault_store_conn(v->store, &c)))
        goto out;
    veil_citizen_signed_bytes(&msg, req->method, req->payload.data, req->payload.len, auth->time_ms,
                              auth->nonce.data, auth->nonce.len, auth->device_id);
    err = vault_device_signed(v, c, device_id, auth->signature.data, &msg, &row);
    if (err == VEIL_ERR_UNAUTHENTICATED)
        fail(call, err, CITIZEN_FAILED);
    if (err)
        goto out;
    if (row.revoked) {
        err = fail(call, VEIL_ERR_DENIED, "device revoked");
        goto out;
    }
    /* Twice the skew: a nonce outlives every time the skew check still accepts. */
    err = vault_store_use_nonce(c, device_id, auth->nonce.data, auth->nonce.len, now,
                                2 * v->cfg.skew_ms);
    if (err == VEIL_ERR_EXISTS)
        err = fail(call, VEIL_ERR_UNAUTHENTICATED, "request replayed");
    else if (err == VEIL_ERR_NOT_FOUND)
        err = fail(call, VEIL_ERR_UNAUTHENTICATED, CITIZEN_FAILED);
    if (err)
        goto out;
    memcpy(subject, row.subject, VAULT_SUBJECT_BYTES);
out:
    veil_buf_free(&msg);
    return err;
}

static void vault_verify_citizen_request(Veil__Vault__Vault_Service *svc,
                                         const Veil__Vault__VerifyCitizenRequestRequest *req,
                                         Veil__Vault__VerifyCitizenRequestResponse_Closure done,
                                         void *call)
{
    Veil__Vault__VerifyCitizenRequestResponse resp =
        VEIL__VAULT__VERIFY_CITIZEN_REQUEST_RESPONSE__INIT;
    unsigned char subject[VAULT_SUBJECT_BYTES];
    veil_err err = verify_citizen(self(svc), call, req, subject);
    if (!err) {
        resp.subject_ref.data = subject;
        resp.subject_ref.len = sizeof subject;
        resp.device_id = req->auth->device_id;
    }
    VEIL_REPLY(done, call, err, &resp);
    maybe_purge(self(svc));
}

/* ---- ReleaseAttributes ---- */

static veil_err check_release(veil_call *call, const Veil__Vault__ReleaseAttributesRequest *req)
{
    veil_err err = check_subject(call, &req->subject_ref);
    if (err)
        return err;
    if (!veil_ident_valid(req->app_id))
        return fail(call, VEIL_ERR_INVALID, "app_id is not a valid app id");
    if (req->n_attributes == 0 || req->n_attributes > VAULT_ENTRY_ATTRS_MAX)
        return fail(call, VEIL_ERR_INVALID, "attributes must name 1 to 32 attributes");
    for (size_t i = 0; i < req->n_attributes; i++) {
        if (!veil_attr_find(req->attributes[i])) {
            veil_call_fail(call, VEIL_ERR_INVALID, "attributes[%zu] is not a known attribute", i);
            return VEIL_ERR_INVALID;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(req->attributes[i], req->attributes[j]) == 0) {
                veil_call_fail(call, VEIL_ERR_INVALID, "attributes[%zu] repeats attributes[%zu]", i,
                               j);
                return VEIL_ERR_INVALID;
            }
    }
    /* The gateway joins the purposes of every grant a release serves (veil/formats.h). */
    size_t pl = strlen(req->purpose);
    if (pl == 0 || pl > VEIL_RELEASE_PURPOSE_MAX || !veil_utf8_printable(req->purpose, pl)) {
        veil_call_fail(call, VEIL_ERR_INVALID, "purpose must be 1 to %d bytes of printable UTF-8",
                       VEIL_RELEASE_PURPOSE_MAX);
        return VEIL_ERR_INVALID;
    }
    if (req->capability.len == 0)
        return fail(call, VEIL_ERR_DENIED,
                    "capability is required: VerifyTicket of this subject's ticket mints it");
    if (req->capability.len != VAULT_CAP_BYTES || req->capability.data[0] != 1)
        return fail(call, VEIL_ERR_INVALID,
                    "capability must be the 57 bytes VerifyTicket returned");
    if (req->challenge.len != VEIL_CHALLENGE_BYTES)
        return fail(call, VEIL_ERR_INVALID, "challenge must be 32 bytes");
    return VEIL_OK;
}

/*
 * The capability was minted by a vault for this subject, app and challenge
 * and has not expired (its single use is recorded by the release itself);
 * *expires_ms receives its expiry.
 */
static veil_err check_capability(const struct vault *v, veil_call *call,
                                 const Veil__Vault__ReleaseAttributesRequest *req,
                                 int64_t *expires_ms)
{
    const unsigned char *cap = req->capability.data;
    unsigned char mac[VAULT_HASH_BYTES];
    uint64_t e = 0;
    for (int i = 0; i < 8; i++)
        e = e << 8 | cap[1 + i];
    *expires_ms = (int64_t)e;
    vault_capability_mac(v->keys->audit_key, *expires_ms, cap + 9, req->subject_ref.data,
                         req->app_id, req->challenge.data, mac);
    if (sodium_memcmp(mac, cap + 9 + VAULT_CAP_ID_BYTES, sizeof mac) != 0)
        return fail(call, VEIL_ERR_DENIED,
                    "capability was not minted for this subject, app and challenge");
    if (*expires_ms < veil_now_ms())
        return fail(call, VEIL_ERR_DENIED, "capability expired: verify a fresh ticket");
    return VEIL_OK;
}

/* Every requested attribute is in the app's registered scope (comma-separated names). */
static veil_err within_scope(veil_call *call, const Veil__Vault__ReleaseAttributesRequest *req,
                             const char *scope)
{
    for (size_t i = 0; i < req->n_attributes; i++) {
        const char *a = req->attributes[i], *p = scope;
        size_t n = strlen(a);
        int found = 0;
        while (!found && *p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            found = len == n && memcmp(p, a, n) == 0;
            p += len + (comma ? 1 : 0);
        }
        if (!found) {
            veil_log(VEIL_LOG_WARN, "release outside the app's registered scope refused",
                     VL_STR("app_id", req->app_id), VL_STR("attribute", a), VL_END);
            veil_call_fail(call, VEIL_ERR_DENIED,
                           "attributes[%zu] is outside the app's registered scope", i);
            return VEIL_ERR_DENIED;
        }
    }
    return VEIL_OK;
}

/* A citizen's row, data key and decrypted profile.  Personal: guarded memory, wiped after use. */
struct opened {
    struct vault_citizen_row row;
    unsigned char dk[VAULT_DEK_BYTES];
    struct vault_profile profile;
    char birth_date[11];
};

/* Loads the citizen and unwraps its data key into o; a missing subject fails the call. */
static veil_err open_citizen(struct vault *v, veil_call *call, vault_conn *c,
                             const unsigned char *subject, struct opened *o)
{
    veil_err err = vault_store_citizen(c, subject, &o->row);
    if (err == VEIL_ERR_NOT_FOUND)
        return fail(call, err, "subject not found");
    if (err)
        return err;
    return unwrap(v, subject, o->row.key_version, o->row.wrapped, o->dk);
}

/* One release of a batch on its way through release_batch. */
struct release_item {
    const Veil__Vault__ReleaseAttributesRequest *req;
    veil_item_outcome out;
    int pending;          /* passed the checks; its capability goes to the statement */
    int used_before;      /* its capability is an earlier item's: used by that one */
    Veil__Attribute **attrs;
    struct vault_entry entry;
};

/* The checks before the database: the request's shape and the capability's binding and expiry. */
static veil_err release_check(struct vault *v, veil_call *call, struct release_item *it,
                              struct vault_release_item *st, struct opened *o)
{
    const Veil__Vault__ReleaseAttributesRequest *req = it->req;
    veil_err err = check_release(call, req);
    if (!err && !(it->attrs = veil_call_array(call, req->n_attributes, sizeof *it->attrs)))
        err = VEIL_ERR_NOMEM;
    if (!err)
        err = check_capability(v, call, req, &st->expires_ms);
    if (err)
        return err;
    st->subject = req->subject_ref.data;
    st->cap_id = req->capability.data + 9;
    st->app_id = req->app_id;
    st->row = &o->row;
    it->pending = 1;
    return VEIL_OK;
}

/*
 * After the statement: the capability's single use, the app's scope, the
 * attributes computed and the entry prepared (into log).  An item that
 * fails here has used its capability, as an unbatched release would have.
 */
static veil_err release_compute(struct vault *v, veil_call *call, struct release_item *it,
                                const struct vault_release_item *st, struct opened *o,
                                struct vault_access_item *log)
{
    const Veil__Vault__ReleaseAttributesRequest *req = it->req;
    const unsigned char *subject = req->subject_ref.data;
    veil_err err = st->result;
    if (err && err != VEIL_ERR_NOT_FOUND && err != VEIL_ERR_PRECONDITION)
        return err;
    if (!st->fresh)
        return fail(call, VEIL_ERR_DENIED, "capability already used");
    if (err == VEIL_ERR_PRECONDITION)
        return fail(call, VEIL_ERR_DENIED, "app has no registered scope in the vault");
    if (err == VEIL_ERR_NOT_FOUND)
        return fail(call, err, "subject not found");
    if ((err = within_scope(call, req, st->scope)) ||
        (err = unwrap(v, subject, o->row.key_version, o->row.wrapped, o->dk)))
        return err;
    if (vault_profile_open(o->dk, subject, o->row.profile, o->row.profile_len, &o->profile) !=
        VEIL_OK) {
        veil_log(VEIL_LOG_ERROR, "a stored profile does not decrypt", VL_END);
        return VEIL_ERR_INTERNAL;
    }
    if ((err = vault_attrs_compute(call, &o->profile, vault_today_cst(veil_now_ms()),
                                   req->attributes, req->n_attributes, o->birth_date, it->attrs)))
        return err;
    it->entry = (struct vault_entry){.app_id = req->app_id,
                                     .action = "attributes_released",
                                     .attributes = (const char *const *)req->attributes,
                                     .n_attributes = req->n_attributes,
                                     .purpose = req->purpose};
    *log = (struct vault_access_item){.subject = subject,
                                      .dk = o->dk,
                                      .head_seq = o->row.head_seq,
                                      .head = o->row.head,
                                      .e = &it->entry};
    return VEIL_OK;
}

/*
 * ReleaseAttributes' logic for both doors: reqs[0..n) (1 to VAULT_BATCH_MAX)
 * each checked and answered exactly as alone, sharing one statement for
 * every capability's use and citizen (one commit) and one group commit for
 * every entry; nothing is released without its entry.  Released attributes
 * go to resps[i] (raw values point into o[i], which the caller wipes after
 * the reply).  Fails only when the batch as a whole cannot be handled.
 */
static veil_err release_batch(struct vault *v, veil_call *call,
                              Veil__Vault__ReleaseAttributesRequest *const *reqs, size_t n,
                              struct opened *o, Veil__Vault__ReleaseAttributesResponse **resps,
                              veil_item_outcome *outs)
{
    struct release_item *items = veil_call_array(call, n, sizeof *items);
    struct vault_release_item *st = veil_call_array(call, n, sizeof *st);
    struct vault_release_item *stmt = veil_call_array(call, n, sizeof *stmt);
    struct vault_access_item *logs = veil_call_array(call, n, sizeof *logs);
    size_t pending = 0, appends = 0;
    vault_conn *c = NULL;
    veil_err err = VEIL_OK;
    if (!items || !st || !stmt || !logs)
        return VEIL_ERR_NOMEM;
    memset(items, 0, n * sizeof *items);
    for (size_t i = 0; i < n; i++) {
        items[i].req = reqs[i];
        veil_err e = release_check(v, call, &items[i], &st[i], &o[i]);
        if (e)
            veil_item_end(call, &items[i].out, e);
        /* a capability twice: the first use is the earlier item's (its MAC binds the same) */
        for (size_t j = 0; items[i].pending && j < i; j++)
            if (items[j].pending && !items[j].used_before &&
                sodium_memcmp(st[j].cap_id, st[i].cap_id, VAULT_CAP_ID_BYTES) == 0)
                items[i].used_before = 1;
        if (items[i].pending && !items[i].used_before)
            stmt[pending++] = st[i];
    }
    if (pending && !(err = vault_store_conn(v->store, &c)))
        err = vault_store_release_batch(c, stmt, pending);
    for (size_t i = 0, k = 0; i < n; i++) {
        struct release_item *it = &items[i];
        if (!it->pending)
            continue;
        veil_err e = err;
        if (it->used_before && !e)
            e = fail(call, VEIL_ERR_DENIED, "capability already used");
        else if (!e)
            e = release_compute(v, call, it, &stmt[k], &o[i], &logs[appends]);
        k += !it->used_before;
        if (e) {
            it->pending = 0;
            veil_item_end(call, &it->out, e);
        } else {
            appends++;
        }
    }
    if (appends)
        vault_access_append_many(v, c, logs, appends);
    for (size_t i = 0, k = 0; i < n; i++) {
        struct release_item *it = &items[i];
        if (!it->pending)
            continue;
        veil_err e = logs[k++].result;
        if (e == VEIL_ERR_NOT_FOUND) /* erased in between */
            fail(call, e, "subject not found");
        veil_item_end(call, &it->out, e);
    }
    for (size_t i = 0; i < n; i++) {
        outs[i] = items[i].out;
        if (outs[i].err)
            continue;
        resps[i]->attributes = items[i].attrs;
        resps[i]->n_attributes = reqs[i]->n_attributes;
    }
    return VEIL_OK;
}

static void vault_release_attributes(Veil__Vault__Vault_Service *svc,
                                     const Veil__Vault__ReleaseAttributesRequest *req,
                                     Veil__Vault__ReleaseAttributesResponse_Closure done,
                                     void *call)
{
    Veil__Vault__ReleaseAttributesResponse resp = VEIL__VAULT__RELEASE_ATTRIBUTES_RESPONSE__INIT;
    Veil__Vault__ReleaseAttributesRequest *reqs[] = {(Veil__Vault__ReleaseAttributesRequest *)req};
    Veil__Vault__ReleaseAttributesResponse *resps[] = {&resp};
    struct opened *o = veil_guarded_take(sizeof *o); /* no mmap per release (veil/keys.h) */
    veil_item_outcome out;
    veil_err err = o ? release_batch(self(svc), call, reqs, 1, o, resps, &out) : VEIL_ERR_NOMEM;
    VEIL_REPLY(done, call, veil_item_single(call, err, &out), &resp);
    veil_guarded_give(o); /* wipes the profile, the birth date and the data key */
}

/* ---- VerifyTicketBatch, ReleaseAttributesBatch ---- */

/*
 * The gateway's batched login hops (issue 15; veil/items.h): arena arrays
 * for a batch's reply, n item replies (each initialised by init) and n
 * outcomes.
 */
static veil_err batch_arrays(veil_call *call, size_t n, size_t size, void (*init)(void *),
                             void ***items, veil_item_outcome **outs)
{
    *items = veil_call_array(call, n, sizeof **items);
    *outs = veil_call_array(call, n, sizeof **outs);
    if (!*items || !*outs)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!((*items)[i] = veil_call_alloc(call, size)))
            return VEIL_ERR_NOMEM;
        init((*items)[i]);
    }
    return VEIL_OK;
}

static void init_verify_resp(void *m)
{
    veil__vault__verify_ticket_response__init(m);
}

static void init_release_resp(void *m)
{
    veil__vault__release_attributes_response__init(m);
}

static void vault_verify_ticket_batch(Veil__Vault__Vault_Service *svc,
                                      const Veil__Vault__VerifyTicketBatchRequest *req,
                                      Veil__Vault__VerifyTicketBatchResponse_Closure done,
                                      void *call)
{
    Veil__Vault__VerifyTicketBatchResponse resp = VEIL__VAULT__VERIFY_TICKET_BATCH_RESPONSE__INIT;
    void **items = NULL;
    veil_item_outcome *outs = NULL;
    veil_err err = veil_items_check(call, req->n_items, VAULT_BATCH_MAX);
    if (!err)
        err = batch_arrays(call, req->n_items, sizeof(Veil__Vault__VerifyTicketResponse),
                           init_verify_resp, &items, &outs);
    if (!err)
        err = verify_batch(self(svc), call, req->items, req->n_items,
                           (Veil__Vault__VerifyTicketResponse **)items, outs);
    if (!err)
        err = veil_item_statuses(call, outs, req->n_items, &resp.status);
    if (!err) {
        resp.items = (Veil__Vault__VerifyTicketResponse **)items;
        resp.n_items = resp.n_status = req->n_items;
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void vault_release_attributes_batch(Veil__Vault__Vault_Service *svc,
                                           const Veil__Vault__ReleaseAttributesBatchRequest *req,
                                           Veil__Vault__ReleaseAttributesBatchResponse_Closure done,
                                           void *call)
{
    Veil__Vault__ReleaseAttributesBatchResponse resp =
        VEIL__VAULT__RELEASE_ATTRIBUTES_BATCH_RESPONSE__INIT;
    void **items = NULL;
    veil_item_outcome *outs = NULL;
    struct opened *o = NULL;
    veil_err err = veil_items_check(call, req->n_items, VAULT_BATCH_MAX);
    if (!err)
        err = batch_arrays(call, req->n_items, sizeof(Veil__Vault__ReleaseAttributesResponse),
                           init_release_resp, &items, &outs);
    /* one guarded block for the whole batch's personal data (veil/keys.h) */
    if (!err && !(o = veil_guarded_take(req->n_items * sizeof *o)))
        err = VEIL_ERR_NOMEM;
    if (!err)
        err = release_batch(self(svc), call, req->items, req->n_items, o,
                            (Veil__Vault__ReleaseAttributesResponse **)items, outs);
    if (!err)
        err = veil_item_statuses(call, outs, req->n_items, &resp.status);
    if (!err) {
        resp.items = (Veil__Vault__ReleaseAttributesResponse **)items;
        resp.n_items = resp.n_status = req->n_items;
    }
    VEIL_REPLY(done, call, err, &resp);
    veil_guarded_give(o); /* wipes the profiles, birth dates and data keys */
}

/* ---- ListDevices ---- */

struct device_list {
    veil_call *call;
    const unsigned char *subject;
    const unsigned char *dk;
    size_t n, cap;
    Veil__Vault__Device **items;
};

static veil_err add_device(void *ctx, const struct vault_device_info *d)
{
    struct device_list *l = ctx;
    char label[VAULT_LABEL_MAX + 1], id[33];
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        Veil__Vault__Device **grown = veil_call_alloc(l->call, cap * sizeof *grown);
        if (!grown)
            return VEIL_ERR_NOMEM;
        if (l->n)
            memcpy(grown, l->items, l->n * sizeof *grown);
        l->items = grown;
        l->cap = cap;
    }
    Veil__Vault__Device *dev = veil_call_alloc(l->call, sizeof *dev);
    if (!dev)
        return VEIL_ERR_NOMEM;
    veil__vault__device__init(dev);
    if (vault_label_open(l->dk, l->subject, d->device_id, d->label, d->label_len, label) !=
        VEIL_OK) {
        veil_log(VEIL_LOG_ERROR, "a stored device label does not decrypt", VL_END);
        return VEIL_ERR_INTERNAL;
    }
    veil_device_id_text(d->device_id, id);
    if (!(dev->device_id = veil_call_strdup(l->call, id)) ||
        !(dev->label = veil_call_strdup(l->call, label)))
        return VEIL_ERR_NOMEM;
    dev->status = d->revoked_at_ms ? "revoked" : "active";
    dev->created_at_ms = d->created_at_ms;
    dev->revoked_at_ms = d->revoked_at_ms;
    l->items[l->n++] = dev;
    return VEIL_OK;
}

static void vault_list_devices(Veil__Vault__Vault_Service *svc,
                               const Veil__Vault__SubjectRequest *req,
                               Veil__Vault__ListDevicesResponse_Closure done, void *call)
{
    Veil__Vault__ListDevicesResponse resp = VEIL__VAULT__LIST_DEVICES_RESPONSE__INIT;
    struct vault *v = self(svc);
    struct opened *o = veil_guarded_take(sizeof *o);
    struct device_list l = {.call = call, .subject = req->subject_ref.data};
    vault_conn *c;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err && !o)
        err = VEIL_ERR_NOMEM;
    if (!err && !(err = vault_store_conn(v->store, &c)) &&
        !(err = open_citizen(v, call, c, req->subject_ref.data, o))) {
        l.dk = o->dk;
        err = vault_store_list_devices(c, req->subject_ref.data, add_device, &l);
    }
    if (!err) {
        resp.devices = l.items;
        resp.n_devices = l.n;
    }
    VEIL_REPLY(done, call, err, &resp);
    veil_guarded_give(o); /* wipes the data key */
}

/* ---- RevokeDevice ---- */

/* Revokes the device and logs it in one transaction: no revocation without its entry. */
static veil_err revoke_device(struct vault *v, veil_call *call, const unsigned char *subject,
                              const unsigned char device_id[VEIL_DEVICE_ID_BYTES])
{
    char id[33];
    int now = 0;
    vault_conn *c;
    veil_err err = vault_store_conn(v->store, &c);
    if (err || (err = vault_store_begin(c)))
        return err;
    veil_device_id_text(device_id, id);
    struct vault_entry e = {.action = "device_revoked", .detail = id};
    err = vault_store_revoke_device(c, subject, device_id, &now);
    if (!err && now)
        err = vault_access_record(v, c, subject, &e, 1);
    if (!err)
        err = vault_store_commit(c);
    if (err)
        vault_store_rollback(c);
    if (err == VEIL_ERR_NOT_FOUND)
        fail(call, err, "device not found");
    if (!err)
        veil_log(VEIL_LOG_INFO, "device revoked", VL_BOOL("already_revoked", !now), VL_END);
    return err;
}

static void vault_revoke_device(Veil__Vault__Vault_Service *svc,
                                const Veil__Vault__RevokeDeviceRequest *req,
                                Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err && veil_device_id_parse(req->device_id, device_id) != 0)
        err = fail(call, VEIL_ERR_INVALID, "device_id must be 32 lowercase hex characters");
    if (!err)
        err = revoke_device(self(svc), call, req->subject_ref.data, device_id);
    VEIL_REPLY(done, call, err, &resp);
}

/* ---- ListAccessLog ---- */

static void vault_list_access_log(Veil__Vault__Vault_Service *svc,
                                  const Veil__Vault__SubjectRequest *req,
                                  Veil__Vault__ListAccessLogResponse_Closure done, void *call)
{
    Veil__Vault__ListAccessLogResponse resp = VEIL__VAULT__LIST_ACCESS_LOG_RESPONSE__INIT;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err) {
        err = vault_access_list(self(svc), call, req->subject_ref.data, &resp);
        if (err == VEIL_ERR_NOT_FOUND)
            fail(call, err, "subject not found");
        if (!err && !resp.chain_valid)
            veil_log(VEIL_LOG_WARN, "an access log failed verification",
                     VL_INT("first_bad_seq", resp.first_bad_seq), VL_END);
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* ---- Erase ---- */

static void vault_erase(Veil__Vault__Vault_Service *svc, const Veil__Vault__SubjectRequest *req,
                        Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    vault_conn *c;
    int erased_now = 0;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err && !(err = vault_store_conn(self(svc)->store, &c))) {
        err = vault_store_erase(c, req->subject_ref.data, &erased_now);
        if (!err)
            veil_log(VEIL_LOG_INFO, "subject erased", VL_BOOL("already_erased", !erased_now),
                     VL_END);
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* ---- HoldIdentity ---- */

static void vault_hold_identity(Veil__Vault__Vault_Service *svc,
                                const Veil__Vault__HoldIdentityRequest *req,
                                Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    vault_conn *c;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err && strcmp(req->state, "suspended") != 0 && strcmp(req->state, "revoked") != 0)
        err = fail(call, VEIL_ERR_INVALID, "state must be suspended or revoked");
    if (!err && (strlen(req->legal_basis) > 200 ||
                 !veil_utf8_printable(req->legal_basis, strlen(req->legal_basis))))
        err = fail(call, VEIL_ERR_INVALID,
                   "legal_basis must be printable UTF-8 of at most 200 bytes");
    if (!err && !(err = vault_store_conn(self(svc)->store, &c))) {
        err = vault_store_hold(c, req->subject_ref.data, req->state, req->legal_basis);
        if (err == VEIL_ERR_NOT_FOUND)
            fail(call, err, "subject not found");
        if (!err)
            veil_log(VEIL_LOG_INFO, "authority hold recorded", VL_STR("state", req->state), VL_END);
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* ---- LookupWebNumber ---- */

static veil_err check_web_number(veil_call *call, const char *in, char out[VEIL_WEB_NUMBER_LEN + 1])
{
    static const char symbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    size_t n = strlen(in);
    int shape = n == VEIL_WEB_NUMBER_LEN;
    /* People type it: lower case is accepted. */
    for (size_t i = 0; shape && i < n; i++) {
        char ch = in[i] >= 'a' && in[i] <= 'z' ? (char)(in[i] - 'a' + 'A') : in[i];
        shape = i % 5 == 4 ? ch == '-' : ch && strchr(symbols, ch) != NULL;
        out[i] = ch;
    }
    if (!shape)
        return fail(call, VEIL_ERR_INVALID,
                    "web_number must be four groups of four symbols (XXXX-XXXX-XXXX-XXXX)");
    out[n] = '\0';
    if (!veil_web_number_valid(out))
        return fail(call, VEIL_ERR_INVALID, "web_number check symbol is wrong");
    return VEIL_OK;
}

static int text_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n <= max && veil_utf8_printable(s, n);
}

/* An admin's look-up is itself an access: the citizen's log records who, why and what for. */
static veil_err lookup(struct vault *v, veil_call *call,
                       const Veil__Vault__LookupWebNumberRequest *req,
                       unsigned char subject[VAULT_SUBJECT_BYTES])
{
    char wn[VEIL_WEB_NUMBER_LEN + 1];
    vault_conn *c;
    veil_err err = check_web_number(call, req->web_number, wn);
    if (err)
        return err;
    if (!req->admin[0] || !text_ok(req->admin, VAULT_ACTOR_MAX))
        return fail(call, VEIL_ERR_INVALID, "admin must be 1 to 160 bytes of printable UTF-8");
    if (!text_ok(req->reason, VAULT_PURPOSE_MAX))
        return fail(call, VEIL_ERR_INVALID, "reason must be at most 200 bytes of printable UTF-8");
    if (!text_ok(req->purpose, VAULT_DETAIL_MAX))
        return fail(call, VEIL_ERR_INVALID, "purpose must be at most 64 bytes of printable UTF-8");
    if ((err = vault_store_conn(v->store, &c)))
        return err;
    err = vault_store_lookup_web_number(c, wn, subject);
    struct vault_entry e = {.action = "admin_lookup",
                            .purpose = req->reason,
                            .actor = req->admin,
                            .detail = req->purpose};
    if (!err)
        err = vault_access_record(v, c, subject, &e, 0);
    if (err == VEIL_ERR_NOT_FOUND)
        fail(call, err, "web number not found");
    return err;
}

static void vault_lookup_web_number(Veil__Vault__Vault_Service *svc,
                                    const Veil__Vault__LookupWebNumberRequest *req,
                                    Veil__Vault__LookupWebNumberResponse_Closure done, void *call)
{
    Veil__Vault__LookupWebNumberResponse resp = VEIL__VAULT__LOOKUP_WEB_NUMBER_RESPONSE__INIT;
    unsigned char subject[VAULT_SUBJECT_BYTES];
    veil_err err = lookup(self(svc), call, req, subject);
    if (!err) {
        resp.subject_ref.data = subject;
        resp.subject_ref.len = sizeof subject;
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* ---- GetWalletKeys ---- */

static void vault_get_wallet_keys(Veil__Vault__Vault_Service *svc, const Veil__Empty *req,
                                  Veil__Vault__GetWalletKeysResponse_Closure done, void *call)
{
    Veil__Vault__GetWalletKeysResponse resp = VEIL__VAULT__GET_WALLET_KEYS_RESPONSE__INIT;
    struct vault_keys *k = self(svc)->keys;
    const struct vault_boxkey *tk = vault_ticket_key(k, atomic_load(&k->ticket_current));
    resp.ticket_public_key.data = (unsigned char *)tk->pk;
    resp.ticket_public_key.len = sizeof tk->pk;
    resp.ticket_key_version = tk->version;
    resp.vault_jwks = atomic_load(&k->jwks);
    resp.checkpoint_public_key.data = k->checkpoint_pk;
    resp.checkpoint_public_key.len = sizeof k->checkpoint_pk;
    VEIL_REPLY(done, call, VEIL_OK, &resp);
}

/* ---- SetAppScopes ---- */

/* An app's scope as "a,b,c" from catalogue names (each known, none twice). */
static veil_err scope_text(veil_call *call, const Veil__Vault__AppScope *a, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    if (!veil_ident_valid(a->app_id))
        return fail(call, VEIL_ERR_INVALID, "apps[].app_id is not a valid app id");
    for (size_t i = 0; i < a->n_attributes; i++) {
        if (!veil_attr_find(a->attributes[i]))
            return fail(call, VEIL_ERR_INVALID, "apps[].attributes holds an unknown attribute");
        for (size_t j = 0; j < i; j++)
            if (strcmp(a->attributes[i], a->attributes[j]) == 0)
                return fail(call, VEIL_ERR_INVALID, "apps[].attributes repeats an attribute");
        int w = snprintf(out + used, len - used, "%s%s", i ? "," : "", a->attributes[i]);
        if (w < 0 || (size_t)w >= len - used)
            return fail(call, VEIL_ERR_INVALID, "apps[].attributes is too long");
        used += (size_t)w;
    }
    return VEIL_OK;
}

static void vault_set_app_scopes(Veil__Vault__Vault_Service *svc,
                                 const Veil__Vault__SetAppScopesRequest *req,
                                 Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    char scope[VAULT_SCOPE_MAX];
    vault_conn *c;
    veil_err err = VEIL_OK;
    for (size_t i = 0; !err && i < req->n_apps; i++)
        err = scope_text(call, req->apps[i], scope, sizeof scope);
    if (!err && !(err = vault_store_conn(self(svc)->store, &c)) && !(err = vault_store_begin(c))) {
        for (size_t i = 0; !err && i < req->n_apps; i++) {
            int changed = 0;
            if ((err = scope_text(call, req->apps[i], scope, sizeof scope)) ||
                (err = vault_store_set_scope(c, req->apps[i]->app_id, scope, &changed)))
                break;
            if (changed)
                veil_log(VEIL_LOG_INFO, "app scope recorded",
                         VL_STR("app_id", req->apps[i]->app_id), VL_STR("attributes", scope),
                         VL_END);
        }
        if (!err)
            err = vault_store_commit(c);
        if (err)
            vault_store_rollback(c);
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* ---- StepUp, ListPending, CancelPending (stepup.c) ---- */

static void vault_step_up(Veil__Vault__Vault_Service *svc, const Veil__Vault__StepUpRequest *req,
                          Veil__Vault__StepUpResponse_Closure done, void *call)
{
    Veil__Vault__StepUpResponse resp = VEIL__VAULT__STEP_UP_RESPONSE__INIT;
    veil_err err = vault_stepup(self(svc), call, req, &resp);
    VEIL_REPLY(done, call, err, &resp);
}

static void vault_list_pending(Veil__Vault__Vault_Service *svc,
                               const Veil__Vault__SubjectRequest *req,
                               Veil__Vault__ListPendingResponse_Closure done, void *call)
{
    Veil__Vault__ListPendingResponse resp = VEIL__VAULT__LIST_PENDING_RESPONSE__INIT;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = vault_pending_list(self(svc), call, req->subject_ref.data, &resp);
    VEIL_REPLY(done, call, err, &resp);
}

static void vault_cancel_pending(Veil__Vault__Vault_Service *svc,
                                 const Veil__Vault__CancelPendingRequest *req,
                                 Veil__Vault__CancelPendingResponse_Closure done, void *call)
{
    Veil__Vault__CancelPendingResponse resp = VEIL__VAULT__CANCEL_PENDING_RESPONSE__INIT;
    unsigned n = 0;
    veil_err err = vault_pending_cancel(self(svc), call, req, &n);
    resp.cancelled = n;
    VEIL_REPLY(done, call, err, &resp);
}

/* ---- AppendAccessLog ---- */

/* The entries the gateway may record (changes made through it), docs/vault.md. */
static const char *const gateway_actions[] = {
    "consent_granted", "consent_withdrawn", "app_unlinked",
    "app_relinked",    "identity_state_set", "login_refused",
};

static veil_err check_append(veil_call *call, const Veil__Vault__AppendAccessLogRequest *req)
{
    size_t i, n = sizeof gateway_actions / sizeof gateway_actions[0];
    veil_err err = check_subject(call, &req->subject_ref);
    if (err)
        return err;
    for (i = 0; i < n && strcmp(req->action, gateway_actions[i]) != 0; i++)
        ;
    if (i == n)
        return fail(call, VEIL_ERR_INVALID, "action is not one the gateway records");
    if (req->app_id[0] && !veil_ident_valid(req->app_id))
        return fail(call, VEIL_ERR_INVALID, "app_id is not a valid app id");
    if (req->n_attributes > VAULT_ENTRY_ATTRS_MAX)
        return fail(call, VEIL_ERR_INVALID, "attributes must name at most 32 attributes");
    for (i = 0; i < req->n_attributes; i++)
        if (!veil_attr_find(req->attributes[i])) {
            veil_call_fail(call, VEIL_ERR_INVALID, "attributes[%zu] is not a known attribute", i);
            return VEIL_ERR_INVALID;
        }
    if (!text_ok(req->purpose, VAULT_PURPOSE_MAX))
        return fail(call, VEIL_ERR_INVALID, "purpose must be at most 200 bytes of printable UTF-8");
    if (!text_ok(req->actor, VAULT_ACTOR_MAX))
        return fail(call, VEIL_ERR_INVALID, "actor must be at most 160 bytes of printable UTF-8");
    if (!text_ok(req->detail, VAULT_DETAIL_MAX))
        return fail(call, VEIL_ERR_INVALID, "detail must be at most 64 bytes of printable UTF-8");
    return VEIL_OK;
}

static void vault_append_access_log(Veil__Vault__Vault_Service *svc,
                                    const Veil__Vault__AppendAccessLogRequest *req,
                                    Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    struct vault *v = self(svc);
    vault_conn *c;
    struct vault_entry e = {.app_id = req->app_id,
                            .action = req->action,
                            .attributes = (const char *const *)req->attributes,
                            .n_attributes = req->n_attributes,
                            .purpose = req->purpose,
                            .actor = req->actor,
                            .detail = req->detail};
    veil_err err = check_append(call, req);
    if (!err && !(err = vault_store_conn(v->store, &c))) {
        err = vault_access_record(v, c, req->subject_ref.data, &e, 0);
        if (err == VEIL_ERR_NOT_FOUND)
            fail(call, err, "subject not found");
    }
    VEIL_REPLY(done, call, err, &resp);
}

const Veil__Vault__Vault_Service vault_rpc = VEIL__VAULT__VAULT__INIT(vault_);

const veil_method_policy vault_policy[] = {
    {"Enrol", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"VerifyTicket", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"VerifyCitizenRequest", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"ReleaseAttributes", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"ListDevices", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"RevokeDevice", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"ListAccessLog", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"Erase", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"HoldIdentity", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"LookupWebNumber", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"GetWalletKeys", VEIL_PEER_GATEWAY, VEIL_EXEC_INLINE},
    {"SetAppScopes", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"StepUp", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"ListPending", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"CancelPending", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"AppendAccessLog", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"CardStatus", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"VerifyTicketBatch", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"ReleaseAttributesBatch", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
};
const size_t vault_policy_len = sizeof vault_policy / sizeof vault_policy[0];
