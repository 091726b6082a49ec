/*
 * handlers.c - the consent service's RPCs: validate, sign, store, answer.
 *
 * Only the gateway may call them (the policy table at the end): citizen
 * operations arrive there signed by the citizen's device and are checked
 * before they are forwarded.  The gateway owns the app registry, so it also
 * passes the app's registered scope with each grant; this service only
 * enforces it (docs/consent.md).  Subjects are the vault's opaque
 * subject_refs: this service cannot know whether one exists, and a subject
 * it has no grants for is simply one without consent.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "consent.h"
#include "veil/codec.h"
#include "veil/formats.h"
#include "veil/items.h"

static struct consent *self(Veil__Consent__Consent_Service *svc)
{
    return (struct consent *)svc;
}

/* ---- validation: each check names the field it refuses ---- */

static veil_err refuse(veil_call *call, veil_err err, const char *msg)
{
    veil_call_fail(call, err, "%s", msg);
    return err;
}

static veil_err check_subject(veil_call *call, const ProtobufCBinaryData *subject)
{
    if (subject->len == CONSENT_SUBJECT_BYTES)
        return VEIL_OK;
    veil_call_fail(call, VEIL_ERR_INVALID, "subject_ref must be %d bytes", CONSENT_SUBJECT_BYTES);
    return VEIL_ERR_INVALID;
}

static veil_err check_app(veil_call *call, const char *app_id)
{
    return veil_ident_valid(app_id)
               ? VEIL_OK
               : refuse(call, VEIL_ERR_INVALID, "app_id is not a valid app id");
}

/* Catalogue names, each at most once; an unknown one is named if it looks like a name. */
static veil_err check_names(veil_call *call, const char *field, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!veil_attr_find(names[i])) {
            if (veil_ident_valid(names[i]))
                veil_call_fail(call, VEIL_ERR_INVALID, "%s: unknown attribute %s (attributes: %s)",
                               field, names[i], veil_attr_names());
            else
                veil_call_fail(call, VEIL_ERR_INVALID, "%s[%zu] is not an attribute name", field,
                               i);
            return VEIL_ERR_INVALID;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(names[i], names[j]) == 0) {
                veil_call_fail(call, VEIL_ERR_INVALID, "%s: attribute %s is listed twice", field,
                               names[i]);
                return VEIL_ERR_INVALID;
            }
        }
    }
    return VEIL_OK;
}

static veil_err check_purpose(veil_call *call, const char *purpose)
{
    size_t n = strlen(purpose);
    if (n == 0)
        return refuse(call, VEIL_ERR_INVALID, "purpose is required");
    if (n > CONSENT_PURPOSE_MAX) {
        veil_call_fail(call, VEIL_ERR_INVALID, "purpose must be at most %d bytes",
                       CONSENT_PURPOSE_MAX);
        return VEIL_ERR_INVALID;
    }
    if (!veil_utf8_printable(purpose, n))
        return refuse(call, VEIL_ERR_INVALID, "purpose must be printable UTF-8");
    return VEIL_OK;
}

/* Receipts carry whole seconds: the expiry is cut to the second before it is checked. */
static veil_err check_expiry(veil_call *call, int64_t expires_at_ms, int64_t now_ms)
{
    if (expires_at_ms - expires_at_ms % 1000 <= now_ms)
        return refuse(call, VEIL_ERR_INVALID, "expires_at_ms must be in the future");
    if (expires_at_ms > now_ms + CONSENT_EXPIRY_MAX_MS)
        return refuse(call, VEIL_ERR_INVALID, "expires_at_ms must be at most 5 years ahead");
    return VEIL_OK;
}

/* The gateway's registered scope: every granted attribute must be in it. */
static veil_err check_scope(veil_call *call, const Veil__Consent__GrantRequest *req)
{
    veil_err err = check_names(call, "app_scope", req->app_scope, req->n_app_scope);
    if (err)
        return err;
    if (req->n_app_scope == 0)
        return refuse(call, VEIL_ERR_PRECONDITION, "app has no registered scope");
    for (size_t i = 0; i < req->n_attributes; i++) {
        size_t j = 0;
        while (j < req->n_app_scope && strcmp(req->attributes[i], req->app_scope[j]) != 0)
            j++;
        if (j == req->n_app_scope) {
            veil_call_fail(call, VEIL_ERR_PRECONDITION,
                           "attribute %s is outside the app's registered scope",
                           req->attributes[i]);
            return VEIL_ERR_PRECONDITION;
        }
    }
    return VEIL_OK;
}

static veil_err check_grant(veil_call *call, const Veil__Consent__GrantRequest *req, int64_t now_ms)
{
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = check_app(call, req->app_id);
    if (!err && req->n_attributes == 0)
        err = refuse(call, VEIL_ERR_INVALID, "attributes must not be empty");
    if (!err && req->n_attributes > CONSENT_ATTRIBUTES_MAX) {
        veil_call_fail(call, VEIL_ERR_INVALID, "attributes must hold at most %d names",
                       CONSENT_ATTRIBUTES_MAX);
        err = VEIL_ERR_INVALID;
    }
    if (!err)
        err = check_names(call, "attributes", req->attributes, req->n_attributes);
    if (!err)
        err = check_purpose(call, req->purpose);
    if (!err)
        err = check_expiry(call, req->expires_at_ms, now_ms);
    if (!err)
        err = check_scope(call, req);
    return err;
}

/* ---- the RPCs ---- */

static void consent_grant(Veil__Consent__Consent_Service *svc,
                          const Veil__Consent__GrantRequest *req,
                          Veil__Consent__GrantResponse_Closure done, void *call)
{
    Veil__Consent__GrantResponse resp = VEIL__CONSENT__GRANT_RESPONSE__INIT;
    struct consent *c = self(svc);
    unsigned char rnd[CONSENT_RECEIPT_ID_BYTES];
    char receipt_id[32], *receipt = NULL;
    int64_t now_ms = veil_now_ms();
    veil_err err = check_grant(call, req, now_ms);
    if (err)
        goto out;
    randombytes_buf(rnd, sizeof rnd);
    veil_b64url_encode(receipt_id, sizeof receipt_id, rnd, sizeof rnd);
    struct consent_new_grant g = {
        .subject_ref = req->subject_ref.data,
        .app_id = req->app_id,
        .attributes = req->attributes,
        .n_attributes = req->n_attributes,
        .purpose = req->purpose,
        .granted_at_ms = now_ms - now_ms % 1000,
        .expires_at_ms = req->expires_at_ms - req->expires_at_ms % 1000,
        .receipt_id = receipt_id,
    };
    veil_signer *signer = consent_signer_for(c, req->receipt_key_version);
    if (!signer) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "receipt key version %u is not loaded",
                       req->receipt_key_version);
        err = VEIL_ERR_PRECONDITION;
        goto out;
    }
    err = consent_receipt_sign(signer, &g, &receipt);
    if (err)
        goto out;
    atomic_store(&c->signed_version, signer->version);
    g.receipt = receipt;
    err = consent_store_grant(c->store, &g);
    if (err)
        goto out;
    resp.receipt_id = receipt_id;
    resp.receipt = receipt;
out:
    VEIL_REPLY(done, call, err, &resp);
    free(receipt);
}

static void consent_withdraw(Veil__Consent__Consent_Service *svc,
                             const Veil__Consent__WithdrawRequest *req,
                             Veil__Consent__WithdrawResponse_Closure done, void *call)
{
    Veil__Consent__WithdrawResponse resp = VEIL__CONSENT__WITHDRAW_RESPONSE__INIT;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = check_app(call, req->app_id);
    if (!err)
        err = check_names(call, "attributes", req->attributes, req->n_attributes);
    veil_app_view view = {req->link_epoch, req->key_version, req->previous_key_version};
    if (!err)
        err = consent_store_withdraw(self(svc)->store, req->subject_ref.data, req->app_id,
                                     req->attributes, req->n_attributes, &view, veil_now_ms(),
                                     veil_call_allocator(call), &resp.withdrawn, &resp.n_withdrawn);
    if (err == VEIL_ERR_NOT_FOUND)
        veil_call_fail(call, err, "no live consent for this app");
    VEIL_REPLY(done, call, err, &resp);
}

static void consent_list(Veil__Consent__Consent_Service *svc, const Veil__Consent__ListRequest *req,
                         Veil__Consent__ListResponse_Closure done, void *call)
{
    Veil__Consent__ListResponse resp = VEIL__CONSENT__LIST_RESPONSE__INIT;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = consent_store_list(self(svc)->store, req->subject_ref.data, veil_now_ms(),
                                 veil_call_allocator(call), &resp);
    VEIL_REPLY(done, call, err, &resp);
}

/*
 * Check's logic for both doors: reqs[0..n) (1 to CONSENT_BATCH_MAX), each
 * checked and answered exactly as Check alone, resps[i] (initialised) and
 * outs[i] its reply and outcome; the items that ask for something are
 * looked up in one statement.  Fails as a whole only when the batch cannot
 * be handled (memory, the database).
 */
static veil_err check_batch(struct consent *c, veil_call *call,
                            Veil__Consent__CheckRequest *const *reqs, size_t n,
                            Veil__Consent__CheckResponse **resps, veil_item_outcome *outs)
{
    struct consent_check_item *items = veil_call_array(call, n, sizeof *items);
    size_t asked = 0;
    if (!items)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const Veil__Consent__CheckRequest *req = reqs[i];
        veil_err e = check_subject(call, &req->subject_ref);
        if (!e)
            e = check_app(call, req->app_id);
        if (!e)
            e = check_names(call, "attributes", req->attributes, req->n_attributes);
        veil_item_end(call, &outs[i], e);
        /* Asking for nothing is not an error, and needs no database. */
        if (!e && req->n_attributes > 0)
            items[asked++] = (struct consent_check_item){req->subject_ref.data, req->app_id,
                                                         req->attributes, req->n_attributes,
                                                         resps[i]};
    }
    return asked ? consent_store_check(c->store, items, asked, veil_now_ms(),
                                       veil_call_allocator(call))
                 : VEIL_OK;
}

static void consent_check(Veil__Consent__Consent_Service *svc,
                          const Veil__Consent__CheckRequest *req,
                          Veil__Consent__CheckResponse_Closure done, void *call)
{
    Veil__Consent__CheckResponse resp = VEIL__CONSENT__CHECK_RESPONSE__INIT;
    Veil__Consent__CheckRequest *reqs[] = {(Veil__Consent__CheckRequest *)req};
    Veil__Consent__CheckResponse *resps[] = {&resp};
    veil_item_outcome o;
    veil_err err = check_batch(self(svc), call, reqs, 1, resps, &o);
    VEIL_REPLY(done, call, veil_item_single(call, err, &o), &resp);
}

/* The gateway's cache misses, batched (issue 15): each item its own status. */
static void consent_check_batch(Veil__Consent__Consent_Service *svc,
                                const Veil__Consent__CheckBatchRequest *req,
                                Veil__Consent__CheckBatchResponse_Closure done, void *call)
{
    Veil__Consent__CheckBatchResponse resp = VEIL__CONSENT__CHECK_BATCH_RESPONSE__INIT;
    size_t n = req->n_items;
    Veil__Consent__CheckResponse **items = NULL, *cells = NULL;
    veil_item_outcome *outs = NULL;
    veil_err err = veil_items_check(call, n, CONSENT_BATCH_MAX);
    if (!err) {
        items = veil_call_array(call, n, sizeof *items);
        cells = veil_call_array(call, n, sizeof *cells);
        outs = veil_call_array(call, n, sizeof *outs);
        err = items && cells && outs ? VEIL_OK : VEIL_ERR_NOMEM;
    }
    for (size_t i = 0; !err && i < n; i++) {
        veil__consent__check_response__init(&cells[i]);
        items[i] = &cells[i];
    }
    if (!err)
        err = check_batch(self(svc), call, req->items, n, items, outs);
    if (!err)
        err = veil_item_statuses(call, outs, n, &resp.status);
    if (!err) {
        resp.items = items;
        resp.n_items = resp.n_status = n;
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void consent_forget(Veil__Consent__Consent_Service *svc,
                           const Veil__Consent__ForgetRequest *req, Veil__Empty_Closure done,
                           void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = consent_store_forget(self(svc)->store, req->subject_ref.data);
    VEIL_REPLY(done, call, err, &resp);
}

static void consent_get_keys(Veil__Consent__Consent_Service *svc, const Veil__Empty *req,
                             Veil__Consent__KeysResponse_Closure done, void *call)
{
    Veil__Consent__KeysResponse resp = VEIL__CONSENT__KEYS_RESPONSE__INIT;
    char *jwks = consent_signers_jwks(&self(svc)->signers);
    resp.jwks = jwks;
    VEIL_REPLY(done, call, jwks ? VEIL_OK : VEIL_ERR_NOMEM, &resp);
    free(jwks);
}

static void consent_changes(Veil__Consent__Consent_Service *svc, const Veil__ChangesRequest *req,
                            Veil__ChangesResponse_Closure done, void *call)
{
    Veil__ChangesResponse resp = VEIL__CHANGES_RESPONSE__INIT;
    veil_err err = veil_feed_serve(self(svc)->notifier, call, req, consent_store_changes,
                                   self(svc)->store, &resp);
    VEIL_REPLY(done, call, err, &resp);
}

static void consent_app_events(Veil__Consent__Consent_Service *svc,
                               const Veil__AppEventsRequest *req,
                               Veil__AppEventsResponse_Closure done, void *call)
{
    Veil__AppEventsResponse resp = VEIL__APP_EVENTS_RESPONSE__INIT;
    uint32_t max;
    veil_err err = veil_feed_check_app_events(call, req, &max);
    if (!err)
        err = consent_store_app_events(self(svc)->store, req->app_id, req->after_seq, max,
                                       veil_call_allocator(call), &resp);
    VEIL_REPLY(done, call, err, &resp);
}

const Veil__Consent__Consent_Service consent_rpc = VEIL__CONSENT__CONSENT__INIT(consent_);

const veil_method_policy consent_policy[] = {
    {"Grant", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"Withdraw", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"List", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"Check", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"CheckBatch", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"Forget", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"GetKeys", VEIL_PEER_GATEWAY, VEIL_EXEC_INLINE},
    {"Changes", VEIL_PEER_GATEWAY, VEIL_EXEC_WAIT},
    {"AppEvents", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
};
const size_t consent_policy_len = sizeof consent_policy / sizeof consent_policy[0];
