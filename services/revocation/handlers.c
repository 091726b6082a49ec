/*
 * handlers.c - the revocation service's RPCs: validate the request, ask the
 * store, answer.  Who may call what is the policy table at the end; the
 * dispatcher enforces it.  Citizen operations reach this service only
 * through the gateway, which has checked the citizen's device signature;
 * the regulator's admin identity may also set app and identity states and
 * read a status directly.
 */
#include <string.h>

#include "revocation.h"
#include "veil/codec.h"
#include "veil/formats.h"
#include "veil/items.h"

static struct revocation *self(Veil__Revocation__Revocation_Service *svc)
{
    return (struct revocation *)svc;
}

/* ---- validation: each check names the field it refuses ---- */

static veil_err check_subject(veil_call *call, const ProtobufCBinaryData *subject)
{
    if (subject->len == REVOCATION_SUBJECT_BYTES)
        return VEIL_OK;
    veil_call_fail(call, VEIL_ERR_INVALID, "subject_ref must be %d bytes",
                   REVOCATION_SUBJECT_BYTES);
    return VEIL_ERR_INVALID;
}

static veil_err check_device(veil_call *call, const char *device_id)
{
    unsigned char id[VEIL_DEVICE_ID_BYTES];
    if (veil_device_id_parse(device_id, id) == 0)
        return VEIL_OK;
    veil_call_fail(call, VEIL_ERR_INVALID, "device_id must be 32 lowercase hex characters");
    return VEIL_ERR_INVALID;
}

static veil_err check_app(veil_call *call, const char *app_id)
{
    if (veil_ident_valid(app_id))
        return VEIL_OK;
    veil_call_fail(call, VEIL_ERR_INVALID, "app_id is not a valid app id");
    return VEIL_ERR_INVALID;
}

static veil_err check_reason(veil_call *call, const char *reason)
{
    size_t n = strlen(reason);
    if (n <= REVOCATION_REASON_MAX && veil_utf8_printable(reason, n))
        return VEIL_OK;
    veil_call_fail(call, VEIL_ERR_INVALID, "reason must be printable UTF-8 of at most %d bytes",
                   REVOCATION_REASON_MAX);
    return VEIL_ERR_INVALID;
}

/* Status takes a subject and, optionally, a device and an app. */
static veil_err check_status_request(veil_call *call, const Veil__Revocation__StatusRequest *req,
                                     int all_required)
{
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err && (all_required || *req->device_id))
        err = check_device(call, req->device_id);
    if (!err && (all_required || *req->app_id))
        err = check_app(call, req->app_id);
    return err;
}

/* Unlink and relink take a subject and an app. */
static veil_err check_link_request(veil_call *call, const Veil__Revocation__AppLinkRequest *req)
{
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = check_app(call, req->app_id);
    return err;
}

/* ---- the decision ---- */

static const struct {
    Veil__Revocation__Reason reason;
    const char *code;
} reasons[] = {
    {VEIL__REVOCATION__REASON__NONE, ""},
    {VEIL__REVOCATION__REASON__IDENTITY_REVOKED_REASON, "identity_revoked"},
    {VEIL__REVOCATION__REASON__IDENTITY_SUSPENDED_REASON, "identity_suspended"},
    {VEIL__REVOCATION__REASON__DEVICE_REVOKED, "device_revoked"},
    {VEIL__REVOCATION__REASON__APP_REVOKED_REASON, "app_revoked"},
    {VEIL__REVOCATION__REASON__APP_UNLINKED, "app_unlinked"},
};

/* The first reason to refuse, in the documented order; NONE when allowed. */
static Veil__Revocation__Reason decide(const struct revocation_facts *f)
{
    if (f->identity == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_REVOKED)
        return VEIL__REVOCATION__REASON__IDENTITY_REVOKED_REASON;
    if (f->identity == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_SUSPENDED)
        return VEIL__REVOCATION__REASON__IDENTITY_SUSPENDED_REASON;
    if (f->device_revoked)
        return VEIL__REVOCATION__REASON__DEVICE_REVOKED;
    if (f->app_revoked)
        return VEIL__REVOCATION__REASON__APP_REVOKED_REASON;
    if (f->has_link && !f->linked)
        return VEIL__REVOCATION__REASON__APP_UNLINKED;
    return VEIL__REVOCATION__REASON__NONE;
}

static void set_decision(Veil__Revocation__StatusResponse *resp, Veil__Revocation__Reason reason,
                         uint32_t epoch)
{
    resp->allowed = reason == VEIL__REVOCATION__REASON__NONE;
    resp->reason = reason;
    resp->link_epoch = epoch;
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].reason == reason)
            resp->reason_code = (char *)reasons[i].code;
}

/* ---- the RPCs ---- */

static void revocation_revoke_device(Veil__Revocation__Revocation_Service *svc,
                                     const Veil__Revocation__RevokeDeviceRequest *req,
                                     Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    int changed;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = check_device(call, req->device_id);
    if (!err)
        err = revocation_store_revoke_device(self(svc)->store, req->subject_ref.data,
                                             req->device_id, &changed);
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_set_identity_state(Veil__Revocation__Revocation_Service *svc,
                                          const Veil__Revocation__SetIdentityStateRequest *req,
                                          Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    int changed;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err && (req->state < VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE ||
                 req->state > VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_REVOKED)) {
        veil_call_fail(call, VEIL_ERR_INVALID,
                       "state must be IDENTITY_ACTIVE, IDENTITY_SUSPENDED "
                       "or IDENTITY_REVOKED");
        err = VEIL_ERR_INVALID;
    }
    if (!err)
        err = check_reason(call, req->reason);
    if (!err)
        err = revocation_store_set_identity(self(svc)->store, req->subject_ref.data, req->state,
                                            req->reason, &changed);
    if (err == VEIL_ERR_PRECONDITION)
        veil_call_fail(call, err, "the identity is revoked, which is final: it cannot be %s",
                       req->state == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE
                           ? "reinstated"
                           : "suspended");
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_unlink_app(Veil__Revocation__Revocation_Service *svc,
                                  const Veil__Revocation__AppLinkRequest *req,
                                  Veil__Revocation__AppLinkResponse_Closure done, void *call)
{
    Veil__Revocation__AppLinkResponse resp = VEIL__REVOCATION__APP_LINK_RESPONSE__INIT;
    veil_err err = check_link_request(call, req);
    if (!err)
        err = revocation_store_unlink(self(svc)->store, req->subject_ref.data, req->app_id,
                                      &resp.link_epoch);
    if (err == VEIL_ERR_NOT_FOUND)
        veil_call_fail(call, err, "app is not linked");
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_relink_app(Veil__Revocation__Revocation_Service *svc,
                                  const Veil__Revocation__AppLinkRequest *req,
                                  Veil__Revocation__AppLinkResponse_Closure done, void *call)
{
    Veil__Revocation__AppLinkResponse resp = VEIL__REVOCATION__APP_LINK_RESPONSE__INIT;
    veil_err err = check_link_request(call, req);
    if (!err)
        err = revocation_store_relink(self(svc)->store, req->subject_ref.data, req->app_id,
                                      req->keep_pseudonym, &resp.link_epoch);
    if (err == VEIL_ERR_NOT_FOUND)
        veil_call_fail(call, err, "app was never linked");
    else if (err == VEIL_ERR_PRECONDITION)
        veil_call_fail(call, err, "app is linked: unlink it first");
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_set_app_state(Veil__Revocation__Revocation_Service *svc,
                                     const Veil__Revocation__SetAppStateRequest *req,
                                     Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    int changed;
    veil_err err = check_app(call, req->app_id);
    if (!err && req->state != VEIL__REVOCATION__APP_STATE__APP_ACTIVE &&
        req->state != VEIL__REVOCATION__APP_STATE__APP_REVOKED) {
        veil_call_fail(call, VEIL_ERR_INVALID, "state must be APP_ACTIVE or APP_REVOKED");
        err = VEIL_ERR_INVALID;
    }
    if (!err)
        err = check_reason(call, req->reason);
    if (!err)
        err = revocation_store_set_app(self(svc)->store, req->app_id, req->state, req->reason,
                                       &changed);
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_status(Veil__Revocation__Revocation_Service *svc,
                              const Veil__Revocation__StatusRequest *req,
                              Veil__Revocation__StatusResponse_Closure done, void *call)
{
    Veil__Revocation__StatusResponse resp = VEIL__REVOCATION__STATUS_RESPONSE__INIT;
    struct revocation_facts f;
    veil_err err = check_status_request(call, req, 0);
    if (!err)
        err = revocation_store_facts(self(svc)->store, req->subject_ref.data, req->device_id,
                                     req->app_id, &f);
    if (!err) {
        set_decision(&resp, decide(&f), f.epoch);
        resp.key_version = f.key_version;
        resp.previous_key_version = f.previous_key_version;
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* One Authorize of a batch on its way through authorize_batch. */
struct authz_item {
    const Veil__Revocation__StatusRequest *req;
    int pending;   /* passed the checks: looked up */
    int write;     /* index in the batch's writes, or -1 */
    Veil__Revocation__Reason reason;
    struct revocation_facts f;
};

/*
 * Authorize's logic for both doors: reqs[0..n) (1 to REVOCATION_BATCH_MAX),
 * each checked and decided exactly as Authorize alone, resps[i] and outs[i]
 * its reply and outcome.  The look-ups of all items are one statement, and
 * what the items write (links, key versions) one transaction.  Fails as a
 * whole only when the batch cannot be handled (memory, the database).
 */
static veil_err authorize_batch(struct revocation *rv, veil_call *call,
                                Veil__Revocation__StatusRequest *const *reqs, size_t n,
                                Veil__Revocation__StatusResponse **resps, veil_item_outcome *outs)
{
    struct authz_item *items = veil_call_array(call, n, sizeof *items);
    struct revocation_key *keys = veil_call_array(call, n, sizeof *keys);
    struct revocation_facts *facts = veil_call_array(call, n, sizeof *facts);
    struct revocation_link_write *w = veil_call_array(call, n, sizeof *w);
    size_t looked = 0, writes = 0;
    if (!items || !keys || !facts || !w)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const Veil__Revocation__StatusRequest *req = reqs[i];
        items[i] = (struct authz_item){.req = req, .write = -1};
        /* The device is optional: the gateway's logins leave it out (the vault refuses
         * revoked devices itself and no longer tells the gateway which device logged in). */
        veil_err e = check_status_request(call, req, 0);
        if (!e && !*req->app_id)
            e = check_app(call, req->app_id);
        veil_item_end(call, &outs[i], e);
        if (e)
            continue;
        items[i].pending = 1;
        keys[looked++] = (struct revocation_key){req->subject_ref.data, req->device_id, req->app_id};
    }
    veil_err err = looked ? revocation_store_facts_batch(rv->store, keys, looked, facts) : VEIL_OK;
    if (err)
        return err;
    for (size_t i = 0, k = 0; i < n; i++) {
        struct authz_item *it = &items[i];
        if (!it->pending)
            continue;
        it->f = facts[k++];
        it->reason = decide(&it->f);
        /* A login is the citizen's own act: it creates a missing link and re-links
         * an unlinked app under a fresh epoch.  Any other refusal changes nothing. */
        int link = it->reason == VEIL__REVOCATION__REASON__APP_UNLINKED ||
                   (it->reason == VEIL__REVOCATION__REASON__NONE && !it->f.has_link);
        if (link) {
            it->reason = VEIL__REVOCATION__REASON__NONE;
            it->f.key_version = it->f.previous_key_version = 0; /* none on a new or fresh link */
        }
        /* Once per link and key rotation: the versions this login gives the app. */
        int keys_differ = it->reason == VEIL__REVOCATION__REASON__NONE && it->req->key_version &&
                          (it->req->key_version != it->f.key_version ||
                           it->req->previous_key_version != it->f.previous_key_version);
        if (!link && !keys_differ)
            continue;
        it->write = (int)writes;
        w[writes++] = (struct revocation_link_write){
            .subject = it->req->subject_ref.data,
            .app_id = it->req->app_id,
            .link = link,
            .key_version = keys_differ ? it->req->key_version : 0,
            .previous_key_version = keys_differ ? it->req->previous_key_version : 0,
        };
    }
    if (writes && (err = revocation_store_login_writes(rv->store, w, writes)))
        return err;
    for (size_t i = 0; i < n; i++) {
        struct authz_item *it = &items[i];
        if (!it->pending)
            continue;
        if (it->write >= 0 && w[it->write].err) {
            veil_item_end(call, &outs[i], w[it->write].err);
            continue;
        }
        if (it->write >= 0 && w[it->write].link)
            it->f.epoch = w[it->write].epoch;
        set_decision(resps[i], it->reason, it->f.epoch);
    }
    return VEIL_OK;
}

static void revocation_authorize(Veil__Revocation__Revocation_Service *svc,
                                 const Veil__Revocation__StatusRequest *req,
                                 Veil__Revocation__StatusResponse_Closure done, void *call)
{
    Veil__Revocation__StatusResponse resp = VEIL__REVOCATION__STATUS_RESPONSE__INIT;
    Veil__Revocation__StatusRequest *reqs[] = {(Veil__Revocation__StatusRequest *)req};
    Veil__Revocation__StatusResponse *resps[] = {&resp};
    veil_item_outcome o;
    veil_err err = authorize_batch(self(svc), call, reqs, 1, resps, &o);
    VEIL_REPLY(done, call, veil_item_single(call, err, &o), &resp);
}

/* The gateway's cache misses, batched (issue 15): each item its own status. */
static void revocation_authorize_batch(Veil__Revocation__Revocation_Service *svc,
                                       const Veil__Revocation__AuthorizeBatchRequest *req,
                                       Veil__Revocation__AuthorizeBatchResponse_Closure done,
                                       void *call)
{
    Veil__Revocation__AuthorizeBatchResponse resp =
        VEIL__REVOCATION__AUTHORIZE_BATCH_RESPONSE__INIT;
    size_t n = req->n_items;
    Veil__Revocation__StatusResponse **items = NULL, *cells = NULL;
    veil_item_outcome *outs = NULL;
    veil_err err = veil_items_check(call, n, REVOCATION_BATCH_MAX);
    if (!err) {
        items = veil_call_array(call, n, sizeof *items);
        cells = veil_call_array(call, n, sizeof *cells);
        outs = veil_call_array(call, n, sizeof *outs);
        err = items && cells && outs ? VEIL_OK : VEIL_ERR_NOMEM;
    }
    for (size_t i = 0; !err && i < n; i++) {
        veil__revocation__status_response__init(&cells[i]);
        items[i] = &cells[i];
    }
    if (!err)
        err = authorize_batch(self(svc), call, req->items, n, items, outs);
    if (!err)
        err = veil_item_statuses(call, outs, n, &resp.status);
    if (!err) {
        resp.items = items;
        resp.n_items = resp.n_status = n;
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_changes(Veil__Revocation__Revocation_Service *svc,
                               const Veil__ChangesRequest *req, Veil__ChangesResponse_Closure done,
                               void *call)
{
    Veil__ChangesResponse resp = VEIL__CHANGES_RESPONSE__INIT;
    veil_err err = veil_feed_serve(self(svc)->notifier, call, req, revocation_store_changes,
                                   self(svc)->store, &resp);
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_app_events(Veil__Revocation__Revocation_Service *svc,
                                  const Veil__AppEventsRequest *req,
                                  Veil__AppEventsResponse_Closure done, void *call)
{
    Veil__AppEventsResponse resp = VEIL__APP_EVENTS_RESPONSE__INIT;
    uint32_t max;
    veil_err err = veil_feed_check_app_events(call, req, &max);
    if (!err)
        err = revocation_store_app_events(self(svc)->store, req->app_id, req->after_seq, max,
                                          veil_call_allocator(call), &resp);
    VEIL_REPLY(done, call, err, &resp);
}

static void revocation_erasure_plan(Veil__Revocation__Revocation_Service *svc,
                                    const Veil__Revocation__ErasurePlanRequest *req,
                                    Veil__Revocation__ErasurePlanResponse_Closure done, void *call)
{
    Veil__Revocation__ErasurePlanResponse resp = VEIL__REVOCATION__ERASURE_PLAN_RESPONSE__INIT;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err)
        err = revocation_store_erasure_plan(self(svc)->store, req->subject_ref.data,
                                            veil_call_allocator(call), &resp);
    VEIL_REPLY(done, call, err, &resp);
}

/* A pseudonym as the pseudonym service writes it: "v<N>." and base64url, at most 64 bytes. */
static int pseudonym_ok(const char *s, int required)
{
    size_t n = strlen(s);
    if (n == 0)
        return !required;
    if (n > 64 || s[0] != 'v')
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(s[i] >= '0' && s[i] <= '9') && !(s[i] >= 'a' && s[i] <= 'z') &&
            !(s[i] >= 'A' && s[i] <= 'Z') && s[i] != '.' && s[i] != '-' && s[i] != '_')
            return 0;
    return 1;
}

#define NOTICES_MAX 10000

static void revocation_forget_subject(Veil__Revocation__Revocation_Service *svc,
                                      const Veil__Revocation__ForgetSubjectRequest *req,
                                      Veil__Empty_Closure done, void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    veil_err err = check_subject(call, &req->subject_ref);
    if (!err && req->n_notices > NOTICES_MAX) {
        veil_call_fail(call, VEIL_ERR_INVALID, "notices must hold at most %d entries", NOTICES_MAX);
        err = VEIL_ERR_INVALID;
    }
    for (size_t i = 0; !err && i < req->n_notices; i++) {
        const Veil__Revocation__ErasureNotice *n = req->notices[i];
        if ((err = check_app(call, n->app_id)))
            break;
        if (!pseudonym_ok(n->pseudonym, 1) || !pseudonym_ok(n->previous_pseudonym, 0)) {
            veil_call_fail(call, VEIL_ERR_INVALID, "notices: pseudonym is malformed");
            err = VEIL_ERR_INVALID;
        }
    }
    if (!err)
        err = revocation_store_forget(self(svc)->store, req->subject_ref.data, req->notices,
                                      req->n_notices);
    VEIL_REPLY(done, call, err, &resp);
}

const Veil__Revocation__Revocation_Service revocation_rpc =
    VEIL__REVOCATION__REVOCATION__INIT(revocation_);

/* The regulator's admin identity may act on apps and identities directly. */
const veil_method_policy revocation_policy[] = {
    {"RevokeDevice", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"SetIdentityState", VEIL_PEER_GATEWAY | VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"UnlinkApp", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"RelinkApp", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"SetAppState", VEIL_PEER_GATEWAY | VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"Status", VEIL_PEER_GATEWAY | VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"Authorize", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"AuthorizeBatch", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"Changes", VEIL_PEER_GATEWAY, VEIL_EXEC_WAIT},
    {"AppEvents", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"ErasurePlan", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"ForgetSubject", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
};
const size_t revocation_policy_len = sizeof revocation_policy / sizeof revocation_policy[0];
