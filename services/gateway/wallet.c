/*
 * wallet.c - the Wallet service: what a citizen's phone calls.
 *
 * Phones connect with TLS but without a client certificate (the policy role
 * VEIL_PEER_CITIZEN); apps can never call these methods.  Enrolment carries
 * its own proof (the proofing authority's attestation); every other request
 * that touches a citizen's data is a SignedRequest whose device signature the
 * vault verifies (gw_citizen) before anything is done on the subject's
 * behalf.  The subject is always the one the signature proves - never a
 * value the phone sends.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "veil/consent.pb-c.h"
#include "veil/revocation.pb-c.h"
#include "veil/vault.pb-c.h"

#define ERASE_CONFIRMATION "erase my identity"

veil_err gw_enrol_sealed(struct gateway *gw, veil_call *call, Veil__Vault__EnrolRequest *vr,
                         ProtobufCBinaryData sealed, Veil__Vault__EnrolResponse **out)
{
    if (!sealed.len) {
        veil_call_fail(call, VEIL_ERR_INVALID, "sealed_identity is required");
        return VEIL_ERR_INVALID;
    }
    vr->sealed_identity = sealed;
    return gw_downstream(gw, call, gw->vault, "Enrol", &vr->base, out);
}

/*
 * The identity travels sealed by the phone to the vault (sealed_identity):
 * the gateway forwards bytes it cannot read and refuses the old clear
 * fields, so it never holds an ID number, a name or an attestation (which
 * signs the ID number itself).
 */
static void gw_wallet_enrol(Veil__Gateway__Wallet_Service *svc,
                            const Veil__Gateway__WalletEnrolRequest *req,
                            Veil__Gateway__WalletEnrolResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__WalletEnrolResponse resp = VEIL__GATEWAY__WALLET_ENROL_RESPONSE__INIT;
    Veil__Vault__EnrolRequest vr = VEIL__VAULT__ENROL_REQUEST__INIT;
    Veil__Vault__EnrolResponse *v;
    veil_err err = VEIL_OK;
    if (*req->id_number || *req->full_name || req->device_public_key.len || req->face_match ||
        req->attested_at_ms || req->attestation_signature.len || *req->device_label) {
        veil_call_fail(call, VEIL_ERR_INVALID,
                       "identity fields are not accepted in the clear: seal them to the vault "
                       "in sealed_identity");
        err = VEIL_ERR_INVALID;
    }
    if (!err) {
        vr.request_id = req->request_id;
        err = gw_enrol_sealed(gw, call, &vr, req->sealed_identity, &v);
    }
    if (!err) {
        resp.web_number = v->web_number;
        resp.web_certificate = v->web_certificate;
        resp.device_id = v->device_id;
        resp.new_identity = v->new_identity;
        resp.ticket_public_key = v->ticket_public_key;
        resp.ticket_key_version = v->ticket_key_version;
        resp.checkpoint_public_key = v->checkpoint_public_key;
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_wallet_get_keys(Veil__Gateway__Wallet_Service *svc, const Veil__Empty *req,
                               Veil__Gateway__WalletKeysResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__WalletKeysResponse resp = VEIL__GATEWAY__WALLET_KEYS_RESPONSE__INIT;
    Veil__Empty empty = VEIL__EMPTY__INIT;
    Veil__Vault__GetWalletKeysResponse *vk;
    Veil__Consent__KeysResponse *ck;
    veil_err err = gw_downstream(gw, call, gw->vault, "GetWalletKeys", &empty.base, &vk);
    if (!err)
        err = gw_downstream(gw, call, gw->consent, "GetKeys", &empty.base, &ck);
    if (!err) {
        char *jwks = gw_keys_jwks(&gw->keys);
        resp.gateway_jwks = jwks ? veil_call_strdup(call, jwks) : NULL;
        free(jwks);
        resp.ticket_public_key = vk->ticket_public_key;
        resp.ticket_key_version = vk->ticket_key_version;
        resp.vault_jwks = vk->vault_jwks;
        resp.consent_jwks = ck->jwks;
        resp.checkpoint_public_key = vk->checkpoint_public_key;
        if (!resp.gateway_jwks)
            err = VEIL_ERR_NOMEM;
    }
    VEIL_REPLY(done, call, err, &resp);
}

struct app_list {
    veil_call *call;
    Veil__Gateway__PublicApp **apps;
    size_t n;
};

static void add_public(const gw_app *a, void *ctx)
{
    struct app_list *l = ctx;
    Veil__Gateway__PublicApp *p = veil_call_alloc(l->call, sizeof *p);
    if (!p || strcmp(a->status, "active") != 0)
        return;
    veil__gateway__public_app__init(p);
    p->app_id = veil_call_strdup(l->call, a->id);
    p->name = veil_call_strdup(l->call, a->name);
    p->kind = veil_call_strdup(l->call, a->kind);
    p->status = veil_call_strdup(l->call, a->status);
    p->n_attributes = gw_scope_names(l->call, a->scope, &p->attributes);
    l->apps[l->n++] = p;
}

static void gw_wallet_list_apps(Veil__Gateway__Wallet_Service *svc, const Veil__Empty *req,
                                Veil__Gateway__PublicAppsResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__PublicAppsResponse resp = VEIL__GATEWAY__PUBLIC_APPS_RESPONSE__INIT;
    struct app_list l = {call, NULL, 0};
    veil_err err = gw_registry_each(&gw->registry, call, (void ***)&l.apps, add_public, &l);
    resp.apps = l.apps;
    resp.n_apps = l.n;
    VEIL_REPLY(done, call, err, &resp);
}

/* The app a citizen names: registered (NOT_FOUND otherwise). */
static veil_err named_app(struct gateway *gw, veil_call *call, const char *id, gw_app *app)
{
    if (!veil_ident_valid(id) || gw_registry_get(&gw->registry, id, app) != 0) {
        veil_call_fail(call, VEIL_ERR_NOT_FOUND, "app_id: unknown app");
        return VEIL_ERR_NOT_FOUND;
    }
    return VEIL_OK;
}

veil_err gw_grant_consent(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject,
                          const gw_app *app, char **attributes, size_t n, const char *purpose,
                          int64_t expires_at_ms, Veil__Consent__GrantResponse **out)
{
    Veil__Consent__GrantRequest g = VEIL__CONSENT__GRANT_REQUEST__INIT;
    g.subject_ref = subject;
    g.app_id = (char *)app->id;
    g.n_attributes = n;
    g.attributes = attributes;
    g.purpose = (char *)purpose;
    g.expires_at_ms = expires_at_ms;
    g.n_app_scope = gw_scope_names(call, app->scope, &g.app_scope);
    g.receipt_key_version = atomic_load(&gw->keys.receipt_current);
    veil_err err = gw_downstream(gw, call, gw->consent, "Grant", &g.base, out);
    gw_change ch = {.action = "consent_granted",
                    .app_id = app->id,
                    .attributes = attributes,
                    .n_attributes = n,
                    .purpose = purpose};
    if (!err)
        err = gw_log_change(gw, call, subject, &ch);
    return err;
}

static void gw_wallet_grant_consent(Veil__Gateway__Wallet_Service *svc,
                                    const Veil__Gateway__SignedRequest *req,
                                    Veil__Gateway__GrantConsentResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__GrantConsentResponse resp = VEIL__GATEWAY__GRANT_CONSENT_RESPONSE__INIT;
    Veil__Gateway__GrantConsentPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    gw_app app;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__grant_consent_payload__descriptor, &p,
                              &subject, &device);
    if (!err)
        err = named_app(gw, call, p->app_id, &app);
    if (!err && strcmp(app.status, "active") != 0) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "app is suspended");
        err = VEIL_ERR_PRECONDITION;
    }
    if (!err) {
        Veil__Consent__GrantResponse *r;
        err = gw_grant_consent(gw, call, subject, &app, p->attributes, p->n_attributes, p->purpose,
                               p->expires_at_ms, &r);
        if (!err) {
            resp.receipt_id = r->receipt_id;
            resp.receipt = r->receipt;
        }
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_wallet_withdraw_consent(Veil__Gateway__Wallet_Service *svc,
                                       const Veil__Gateway__SignedRequest *req,
                                       Veil__Gateway__WithdrawConsentResponse_Closure done,
                                       void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__WithdrawConsentResponse resp = VEIL__GATEWAY__WITHDRAW_CONSENT_RESPONSE__INIT;
    Veil__Gateway__WithdrawConsentPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    gw_app app;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__withdraw_consent_payload__descriptor,
                              &p, &subject, &device);
    if (!err)
        err = named_app(gw, call, p->app_id, &app);
    /* How the app knows this citizen now: recorded with the event (issue 12 item 6). */
    Veil__Revocation__StatusResponse *view = NULL;
    if (!err) {
        Veil__Revocation__StatusRequest s = VEIL__REVOCATION__STATUS_REQUEST__INIT;
        s.subject_ref = subject;
        s.device_id = "";
        s.app_id = app.id;
        err = gw_downstream(gw, call, gw->revocation, "Status", &s.base, &view);
    }
    if (!err) {
        Veil__Consent__WithdrawRequest w = VEIL__CONSENT__WITHDRAW_REQUEST__INIT;
        Veil__Consent__WithdrawResponse *r;
        w.subject_ref = subject;
        w.app_id = app.id;
        w.link_epoch = view->link_epoch;
        w.key_version = view->key_version;
        w.previous_key_version = view->previous_key_version;
        w.n_attributes = p->n_attributes;
        w.attributes = p->attributes;
        err = gw_downstream(gw, call, gw->consent, "Withdraw", &w.base, &r);
        /* What was actually withdrawn; nothing withdrawn changed nothing to log. */
        gw_change ch = {.action = "consent_withdrawn", .app_id = app.id};
        if (!err && r->n_withdrawn) {
            ch.attributes = r->withdrawn;
            ch.n_attributes = r->n_withdrawn;
            err = gw_log_change(gw, call, subject, &ch);
        }
        if (!err) {
            resp.n_withdrawn = r->n_withdrawn;
            resp.withdrawn = r->withdrawn;
        }
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_wallet_list_consents(Veil__Gateway__Wallet_Service *svc,
                                    const Veil__Gateway__SignedRequest *req,
                                    Veil__Gateway__ListConsentsResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__ListConsentsResponse resp = VEIL__GATEWAY__LIST_CONSENTS_RESPONSE__INIT;
    Veil__Gateway__ListConsentsPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__list_consents_payload__descriptor, &p,
                              &subject, &device);
    Veil__Consent__ListResponse *r = NULL;
    if (!err) {
        Veil__Consent__ListRequest l = VEIL__CONSENT__LIST_REQUEST__INIT;
        l.subject_ref = subject;
        err = gw_downstream(gw, call, gw->consent, "List", &l.base, &r);
    }
    if (!err) {
        size_t n = r->n_grants;
        resp.grants = veil_call_array(call, n, sizeof *resp.grants);
        Veil__Gateway__ConsentGrant *cells = veil_call_array(call, n, sizeof *cells);
        if (!resp.grants || !cells)
            err = VEIL_ERR_NOMEM;
        for (size_t i = 0; !err && i < n; i++) {
            const Veil__Consent__Grant *g = r->grants[i];
            veil__gateway__consent_grant__init(&cells[i]);
            cells[i].receipt_id = g->receipt_id;
            cells[i].app_id = g->app_id;
            cells[i].n_attributes = g->n_attributes;
            cells[i].attributes = g->attributes;
            cells[i].purpose = g->purpose;
            cells[i].granted_at_ms = g->granted_at_ms;
            cells[i].expires_at_ms = g->expires_at_ms;
            cells[i].n_withdrawn = g->n_withdrawn;
            cells[i].withdrawn = g->withdrawn;
            cells[i].status = g->status;
            cells[i].receipt = g->receipt;
            resp.grants[i] = &cells[i];
        }
        resp.n_grants = err ? 0 : n;
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* A pending action as the wallet sees it (in the call's arena), or NULL. */
static Veil__Gateway__WalletPendingAction *wallet_pending(veil_call *call,
                                                          const Veil__Vault__PendingAction *p)
{
    Veil__Gateway__WalletPendingAction *w = veil_call_alloc(call, sizeof *w);
    if (!w || !p)
        return NULL;
    veil__gateway__wallet_pending_action__init(w);
    w->id = p->id;
    w->action = p->action;
    w->target_device_id = p->target_device_id;
    w->requested_by = p->requested_by;
    w->requested_at_ms = p->requested_at_ms;
    w->effective_at_ms = p->effective_at_ms;
    return w;
}

/*
 * Asks the vault whether the signing device may do action now (stepup.c).
 * *now is 1 when it may; otherwise res says what is pending.
 */
static veil_err step_up(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject,
                        const char *device, const char *action, const char *target,
                        Veil__Gateway__StepUpResult *res, int *now)
{
    Veil__Vault__StepUpRequest q = VEIL__VAULT__STEP_UP_REQUEST__INIT;
    Veil__Vault__StepUpResponse *r;
    q.subject_ref = subject;
    q.device_id = (char *)device;
    q.action = (char *)action;
    q.target_device_id = (char *)target;
    veil_err err = gw_downstream(gw, call, gw->vault, "StepUp", &q.base, &r);
    *now = 0;
    if (err)
        return err;
    *now = r->allowed;
    res->status = r->allowed ? "done" : "pending";
    res->reason = r->reason;
    if (!r->allowed && !(res->pending = wallet_pending(call, r->pending)))
        return VEIL_ERR_NOMEM;
    return VEIL_OK;
}

static void gw_wallet_revoke_device(Veil__Gateway__Wallet_Service *svc,
                                    const Veil__Gateway__SignedRequest *req,
                                    Veil__Gateway__StepUpResult_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__StepUpResult resp = VEIL__GATEWAY__STEP_UP_RESULT__INIT;
    Veil__Empty *ignored;
    Veil__Gateway__RevokeDevicePayload *p;
    ProtobufCBinaryData subject;
    char *device;
    int now = 0;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__revoke_device_payload__descriptor, &p,
                              &subject, &device);
    const char *target = err ? NULL : p->device_id[0] ? p->device_id : device;
    /* Revoking another device may need a step-up (the vault decides); one's own never does. */
    if (!err)
        err = step_up(gw, call, subject, device, "revoke_device", target, &resp, &now);
    if (!err && now) {
        /* The vault first: once it says revoked, that device's tickets fail. */
        Veil__Vault__RevokeDeviceRequest v = VEIL__VAULT__REVOKE_DEVICE_REQUEST__INIT;
        v.subject_ref = subject;
        v.device_id = (char *)target;
        err = gw_downstream(gw, call, gw->vault, "RevokeDevice", &v.base, &ignored);
        if (!err) {
            Veil__Revocation__RevokeDeviceRequest r = VEIL__REVOCATION__REVOKE_DEVICE_REQUEST__INIT;
            r.subject_ref = subject;
            r.device_id = (char *)target;
            err = gw_downstream(gw, call, gw->revocation, "RevokeDevice", &r.base, &ignored);
        }
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_wallet_list_pending(Veil__Gateway__Wallet_Service *svc,
                                   const Veil__Gateway__SignedRequest *req,
                                   Veil__Gateway__ListPendingResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__ListPendingResponse resp = VEIL__GATEWAY__LIST_PENDING_RESPONSE__INIT;
    Veil__Gateway__ListPendingPayload *p;
    Veil__Vault__ListPendingResponse *r = NULL;
    ProtobufCBinaryData subject;
    char *device;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__list_pending_payload__descriptor, &p,
                              &subject, &device);
    if (!err) {
        Veil__Vault__SubjectRequest s = VEIL__VAULT__SUBJECT_REQUEST__INIT;
        s.subject_ref = subject;
        err = gw_downstream(gw, call, gw->vault, "ListPending", &s.base, &r);
    }
    if (!err && r->n_pending &&
        !(resp.pending = veil_call_array(call, r->n_pending, sizeof *resp.pending)))
        err = VEIL_ERR_NOMEM;
    for (size_t i = 0; !err && i < r->n_pending; i++)
        if (!(resp.pending[resp.n_pending++] = wallet_pending(call, r->pending[i])))
            err = VEIL_ERR_NOMEM;
    if (err)
        resp.n_pending = 0;
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_wallet_cancel_pending(Veil__Gateway__Wallet_Service *svc,
                                     const Veil__Gateway__SignedRequest *req,
                                     Veil__Gateway__CancelPendingResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__CancelPendingResponse resp = VEIL__GATEWAY__CANCEL_PENDING_RESPONSE__INIT;
    Veil__Gateway__CancelPendingPayload *p;
    Veil__Vault__CancelPendingResponse *r;
    ProtobufCBinaryData subject;
    char *device;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__cancel_pending_payload__descriptor, &p,
                              &subject, &device);
    if (!err) {
        Veil__Vault__CancelPendingRequest c = VEIL__VAULT__CANCEL_PENDING_REQUEST__INIT;
        c.subject_ref = subject;
        c.device_id = device;
        c.id = p->id;
        err = gw_downstream(gw, call, gw->vault, "CancelPending", &c.base, &r);
        if (!err)
            resp.cancelled = r->cancelled;
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_wallet_list_devices(Veil__Gateway__Wallet_Service *svc,
                                   const Veil__Gateway__SignedRequest *req,
                                   Veil__Gateway__ListDevicesResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__ListDevicesResponse resp = VEIL__GATEWAY__LIST_DEVICES_RESPONSE__INIT;
    Veil__Gateway__ListDevicesPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    Veil__Vault__ListDevicesResponse *r = NULL;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__list_devices_payload__descriptor, &p,
                              &subject, &device);
    if (!err) {
        Veil__Vault__SubjectRequest s = VEIL__VAULT__SUBJECT_REQUEST__INIT;
        s.subject_ref = subject;
        err = gw_downstream(gw, call, gw->vault, "ListDevices", &s.base, &r);
    }
    if (!err) {
        size_t n = r->n_devices;
        resp.devices = veil_call_array(call, n, sizeof *resp.devices);
        Veil__Gateway__WalletDevice *cells = veil_call_array(call, n, sizeof *cells);
        if (!resp.devices || !cells)
            err = VEIL_ERR_NOMEM;
        for (size_t i = 0; !err && i < n; i++) {
            veil__gateway__wallet_device__init(&cells[i]);
            cells[i].device_id = r->devices[i]->device_id;
            cells[i].status = r->devices[i]->status;
            cells[i].label = r->devices[i]->label;
            cells[i].created_at_ms = r->devices[i]->created_at_ms;
            cells[i].revoked_at_ms = r->devices[i]->revoked_at_ms;
            resp.devices[i] = &cells[i];
        }
        resp.n_devices = err ? 0 : n;
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* UnlinkApp and RelinkApp: the same request to revocation's method of that name. */
static veil_err app_link(struct gateway *gw, veil_call *call,
                         const Veil__Gateway__SignedRequest *req, const char *method)
{
    Veil__Gateway__AppLinkPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    gw_app app;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__app_link_payload__descriptor, &p,
                              &subject, &device);
    if (!err)
        err = named_app(gw, call, p->app_id, &app);
    if (!err) {
        Veil__Revocation__AppLinkRequest r = VEIL__REVOCATION__APP_LINK_REQUEST__INIT;
        Veil__Revocation__AppLinkResponse *out;
        r.subject_ref = subject;
        r.app_id = app.id;
        r.keep_pseudonym = p->keep_pseudonym;
        err = gw_downstream(gw, call, gw->revocation, method, &r.base, &out);
    }
    if (!err) {
        int unlink = strcmp(method, "UnlinkApp") == 0;
        gw_change ch = {.action = unlink ? "app_unlinked" : "app_relinked",
                        .app_id = app.id,
                        .detail = unlink              ? NULL
                                  : p->keep_pseudonym ? "pseudonym kept"
                                                      : "fresh pseudonym"};
        err = gw_log_change(gw, call, subject, &ch);
    }
    return err;
}

static void gw_wallet_unlink_app(Veil__Gateway__Wallet_Service *svc,
                                 const Veil__Gateway__SignedRequest *req, Veil__Empty_Closure done,
                                 void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    VEIL_REPLY(done, call, app_link(GW_OF(svc, wallet), call, req, "UnlinkApp"), &resp);
}

static void gw_wallet_relink_app(Veil__Gateway__Wallet_Service *svc,
                                 const Veil__Gateway__SignedRequest *req, Veil__Empty_Closure done,
                                 void *call)
{
    Veil__Empty resp = VEIL__EMPTY__INIT;
    VEIL_REPLY(done, call, app_link(GW_OF(svc, wallet), call, req, "RelinkApp"), &resp);
}

static void gw_wallet_access_log(Veil__Gateway__Wallet_Service *svc,
                                 const Veil__Gateway__SignedRequest *req,
                                 Veil__Gateway__AccessLogResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__AccessLogResponse resp = VEIL__GATEWAY__ACCESS_LOG_RESPONSE__INIT;
    Veil__Gateway__AccessLogPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    Veil__Vault__ListAccessLogResponse *r = NULL;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__access_log_payload__descriptor, &p,
                              &subject, &device);
    if (!err) {
        Veil__Vault__SubjectRequest s = VEIL__VAULT__SUBJECT_REQUEST__INIT;
        s.subject_ref = subject;
        err = gw_downstream(gw, call, gw->vault, "ListAccessLog", &s.base, &r);
    }
    if (!err) {
        size_t n = r->n_entries;
        resp.entries = veil_call_array(call, n, sizeof *resp.entries);
        Veil__Gateway__AccessLogEntry *cells = veil_call_array(call, n, sizeof *cells);
        if (!resp.entries || !cells)
            err = VEIL_ERR_NOMEM;
        for (size_t i = 0; !err && i < n; i++) {
            const Veil__Vault__AccessLogEntry *e = r->entries[i];
            veil__gateway__access_log_entry__init(&cells[i]);
            cells[i].seq = e->seq;
            cells[i].app_id = e->app_id;
            cells[i].action = e->action;
            cells[i].n_attributes = e->n_attributes;
            cells[i].attributes = e->attributes;
            cells[i].purpose = e->purpose;
            cells[i].at_ms = e->at_ms;
            cells[i].chain = e->chain;
            cells[i].actor = e->actor;
            cells[i].detail = e->detail;
            resp.entries[i] = &cells[i];
        }
        resp.n_entries = err ? 0 : n;
        resp.chain_valid = r->chain_valid;
        resp.first_bad_seq = r->first_bad_seq;
        const Veil__Vault__Checkpoint *cp = r->checkpoint;
        Veil__Gateway__AccessCheckpoint *out = cp ? veil_call_alloc(call, sizeof *out) : NULL;
        if (cp && !out)
            err = VEIL_ERR_NOMEM;
        if (out) {
            veil__gateway__access_checkpoint__init(out);
            out->web_number = cp->web_number;
            out->seq = cp->seq;
            out->head = cp->head;
            out->at_ms = cp->at_ms;
            out->signature = cp->signature;
            out->retention_ms = cp->retention_ms;
            resp.checkpoint = out;
        }
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_wallet_erase(Veil__Gateway__Wallet_Service *svc,
                            const Veil__Gateway__SignedRequest *req,
                            Veil__Gateway__StepUpResult_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__StepUpResult resp = VEIL__GATEWAY__STEP_UP_RESULT__INIT;
    int now = 0;
    Veil__Gateway__ErasePayload *p;
    ProtobufCBinaryData subject;
    char *device;
    veil_err err =
        gw_citizen(gw, call, req, &veil__gateway__erase_payload__descriptor, &p, &subject, &device);
    if (!err && strcmp(p->confirm, ERASE_CONFIRMATION) != 0) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "confirm must be \"%s\"", ERASE_CONFIRMATION);
        err = VEIL_ERR_PRECONDITION;
    }
    /* A step-up a thief does not have, or the cooling-off period (stepup.c in the vault). */
    if (!err)
        err = step_up(gw, call, subject, device, "erase", "", &resp, &now);
    if (!err && now) /* everywhere, and idempotent: erase.c */
        err = gw_erase_identity(gw, call, subject);
    VEIL_REPLY(done, call, err, &resp);
}

const Veil__Gateway__Wallet_Service gw_wallet_rpc = VEIL__GATEWAY__WALLET__INIT(gw_wallet_);

/*
 * The keys and the app list are public, but the Wallet is the citizens' API
 * and apps never reach it (they have Login/GetJwks); the admin may read.
 */
#define PUBLIC (VEIL_PEER_CITIZEN | VEIL_PEER_ADMIN)
const veil_method_policy gw_wallet_policy[] = {
    {"Enrol", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"GetKeys", PUBLIC, VEIL_EXEC_WORKER},
    {"ListApps", PUBLIC, VEIL_EXEC_INLINE},
    {"GrantConsent", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"WithdrawConsent", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"ListConsents", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"RevokeDevice", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"ListDevices", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"UnlinkApp", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"RelinkApp", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"AccessLog", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"Erase", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"ListPending", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"CancelPending", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    /* OpenID Connect login requests: the id in the QR code is the bearer secret */
    {"GetLoginRequest", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"ApproveLogin", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
    {"DenyLogin", VEIL_PEER_CITIZEN, VEIL_EXEC_WORKER},
};
const size_t gw_wallet_policy_len = sizeof gw_wallet_policy / sizeof gw_wallet_policy[0];

/* What fits each request (gateway.h, GW_REQ_*); methods not named get the server's limit. */
const veil_method_limit gw_wallet_limits[] = {
    {"Enrol", GW_REQ_SMALL},
    {"GetKeys", GW_REQ_EMPTY},
    {"ListApps", GW_REQ_EMPTY},
    {"GrantConsent", GW_REQ_SIGNED},
    {"WithdrawConsent", GW_REQ_SIGNED},
    {"ListConsents", GW_REQ_SIGNED},
    {"RevokeDevice", GW_REQ_SIGNED},
    {"ListDevices", GW_REQ_SIGNED},
    {"UnlinkApp", GW_REQ_SIGNED},
    {"RelinkApp", GW_REQ_SIGNED},
    {"AccessLog", GW_REQ_SIGNED},
    {"Erase", GW_REQ_SIGNED},
    {"ListPending", GW_REQ_SIGNED},
    {"CancelPending", GW_REQ_SIGNED},
};
const size_t gw_wallet_limits_len = sizeof gw_wallet_limits / sizeof gw_wallet_limits[0];
