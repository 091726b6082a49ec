/*
 * admin.c - the Admin service: the app registry, key rotation and identity
 * states, for the admin identity only (spiffe://<domain>/admin/<name>).
 *
 * Registry rules: ids and sectors are lowercase identifiers; the scope is a
 * set of catalogue attributes; commercial apps may hold derived attributes
 * only (predicates and province), never raw personal data; an app is by
 * default alone in its own sector (pseudonyms shared with no other app).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway.h"
#include "oidc.h"
#include "store.h"
#include "veil/log.h"
#include "veil/consent.pb-c.h"
#include "veil/pseudonym.pb-c.h"
#include "veil/revocation.pb-c.h"
#include "veil/vault.pb-c.h"

static veil_err invalid(veil_call *call, const char *msg)
{
    veil_call_fail(call, VEIL_ERR_INVALID, "%s", msg);
    return VEIL_ERR_INVALID;
}

#define MAX_REDIRECT_URIS 8
#define MAX_JWKS_BYTES    16384

/*
 * The OpenID Connect part of a registration: redirect URIs (exact, https
 * except loopback), client authentication, the app's JWK set, the ID-token
 * algorithm and a purpose per registered attribute.  Strings go to the
 * call's arena.
 */
static veil_err oidc_from_message(veil_call *call, const Veil__Gateway__App *m, gw_app *out)
{
    size_t total = 1;
    if (m->n_redirect_uris > MAX_REDIRECT_URIS)
        return invalid(call, "redirect_uris: at most 8");
    for (size_t i = 0; i < m->n_redirect_uris; i++) {
        if (!gw_oidc_redirect_uri_ok(m->redirect_uris[i]))
            return invalid(call, "redirect_uris: each must be an absolute https URL (http only "
                                 "on 127.0.0.1, [::1] or localhost), without a fragment, at "
                                 "most 512 bytes");
        total += strlen(m->redirect_uris[i]) + 1;
    }
    out->redirect_uris = veil_call_alloc(call, total);
    if (!out->redirect_uris)
        return VEIL_ERR_NOMEM;
    out->redirect_uris[0] = '\0';
    for (size_t i = 0; i < m->n_redirect_uris; i++) {
        if (i)
            strcat(out->redirect_uris, " ");
        strcat(out->redirect_uris, m->redirect_uris[i]);
    }
    const char *auth = m->token_auth[0] ? m->token_auth : "tls_client_auth";
    if (strcmp(auth, "tls_client_auth") != 0 && strcmp(auth, "private_key_jwt") != 0)
        return invalid(call, "token_auth must be tls_client_auth or private_key_jwt");
    snprintf(out->token_auth, sizeof out->token_auth, "%s", auth);
    const char *alg = m->id_token_alg[0] ? m->id_token_alg : "EdDSA";
    if (strcmp(alg, "EdDSA") != 0 && strcmp(alg, "RS256") != 0)
        return invalid(call, "id_token_alg must be EdDSA or RS256");
    snprintf(out->id_token_alg, sizeof out->id_token_alg, "%s", alg);
    if (m->jwks[0]) {
        if (strlen(m->jwks) > MAX_JWKS_BYTES || gw_jwks_usable(m->jwks) <= 0)
            return invalid(call, "jwks must be a JSON Web Key Set with at least one usable "
                                 "signing key (OKP Ed25519, or RSA of 2048 bits or more)");
    } else if (strcmp(auth, "private_key_jwt") == 0) {
        return invalid(call, "private_key_jwt needs the app's jwks");
    }
    out->jwks = veil_call_strdup(call, m->jwks);
    json_t *p = json_object();
    for (size_t i = 0; p && i < m->n_purposes; i++) {
        const Veil__Gateway__AttributePurpose *ap = m->purposes[i];
        if (!veil_attr_find(ap->attribute)) {
            json_decref(p);
            return invalid(call, "purposes: unknown attribute");
        }
        if (!gw_text_ok(ap->purpose, 200)) {
            json_decref(p);
            return invalid(call, "purposes: each must be 1-200 bytes of printable UTF-8");
        }
        json_object_set_new(p, ap->attribute, json_string(ap->purpose));
    }
    char *text = p ? json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(p);
    out->purposes = text ? veil_call_strdup(call, text) : NULL;
    free(text);
    return out->purposes && out->jwks ? VEIL_OK : VEIL_ERR_NOMEM;
}

/* Checks an App message and turns it into a registry entry (status active). */
static veil_err app_from_message(struct gateway *gw, veil_call *call,
                                 const Veil__Gateway__App *m, gw_app *out)
{
    memset(out, 0, sizeof *out);
    if (!veil_ident_valid(m->app_id))
        return invalid(call, "app_id must be 1-64 of [a-z0-9._-], starting with a letter or digit");
    if (!gw_text_ok(m->name, 200))
        return invalid(call, "name must be 1-200 bytes of printable UTF-8");
    if (m->organisation[0] && !gw_text_ok(m->organisation, 200))
        return invalid(call, "organisation must be at most 200 bytes of printable UTF-8");
    if (!gw_kind_valid(m->kind))
        return invalid(call, "kind must be public_service, commercial or venue");
    const char *sector = m->sector_id[0] ? m->sector_id : m->app_id;
    if (!veil_ident_valid(sector))
        return invalid(call, "sector_id must be 1-64 of [a-z0-9._-]");
    for (size_t i = 0; i < m->n_attributes; i++) {
        const veil_attr *a = veil_attr_find(m->attributes[i]);
        if (!a) {
            if (veil_ident_valid(m->attributes[i]))
                veil_call_fail(call, VEIL_ERR_INVALID,
                               "attributes: unknown attribute %s (attributes: %s)",
                               m->attributes[i], veil_attr_names());
            else
                veil_call_fail(call, VEIL_ERR_INVALID,
                               "attributes: unknown attribute (attributes: %s)", veil_attr_names());
            return VEIL_ERR_INVALID;
        }
        if (a->kind == VEIL_ATTR_RAW && gw_kind_derived_only(m->kind)) {
            veil_call_fail(call, VEIL_ERR_PRECONDITION,
                           "attributes: %s apps may hold derived attributes only, "
                           "%s is raw personal data",
                           m->kind, a->name);
            return VEIL_ERR_PRECONDITION;
        }
        out->scope |= gw_scope_bit(a->name);
    }
    /*
     * An app's certificate names the app itself: anything else would let an
     * admin hand one app's (or a service's) certificate another app's id.
     */
    snprintf(out->cert_identity, sizeof out->cert_identity, "spiffe://%s/app/%s", gw->trust_domain,
             m->app_id);
    if (m->cert_identity[0] && strcmp(m->cert_identity, out->cert_identity) != 0) {
        veil_call_fail(call, VEIL_ERR_INVALID, "cert_identity must be %s (the app's own identity)",
                       out->cert_identity);
        return VEIL_ERR_INVALID;
    }
    veil_err err = oidc_from_message(call, m, out);
    if (err)
        return err;
    snprintf(out->id, sizeof out->id, "%s", m->app_id);
    snprintf(out->sector, sizeof out->sector, "%s", sector);
    snprintf(out->kind, sizeof out->kind, "%s", m->kind);
    snprintf(out->status, sizeof out->status, "active");
    return VEIL_OK;
}

/* The registry entry as an App message in the call's arena. */
static void app_to_message(veil_call *call, const gw_app *a, const char *name, const char *org,
                           Veil__Gateway__App *m)
{
    veil__gateway__app__init(m);
    m->app_id = veil_call_strdup(call, a->id);
    m->name = veil_call_strdup(call, name ? name : "");
    m->kind = veil_call_strdup(call, a->kind);
    m->sector_id = veil_call_strdup(call, a->sector);
    m->n_attributes = gw_scope_names(call, a->scope, &m->attributes);
    m->cert_identity = veil_call_strdup(call, a->cert_identity);
    m->status = veil_call_strdup(call, a->status);
    m->organisation = veil_call_strdup(call, org ? org : "");
    /* OpenID Connect (absent from snapshot copies made without their strings) */
    m->token_auth = veil_call_strdup(call, a->token_auth[0] ? a->token_auth : "tls_client_auth");
    m->id_token_alg = veil_call_strdup(call, a->id_token_alg[0] ? a->id_token_alg : "EdDSA");
    m->jwks = veil_call_strdup(call, a->jwks ? a->jwks : "");
    size_t n = 0;
    for (const char *p = a->redirect_uris; p && *p; p++)
        n += (p == a->redirect_uris || p[-1] == ' ') && *p != ' ';
    m->redirect_uris = veil_call_array(call, n, sizeof *m->redirect_uris);
    for (const char *p = a->redirect_uris; m->redirect_uris && p && *p;) {
        size_t len = strcspn(p, " ");
        char *u = veil_call_alloc(call, len + 1);
        if (!u)
            break;
        memcpy(u, p, len);
        u[len] = '\0';
        m->redirect_uris[m->n_redirect_uris++] = u;
        p += len;
        while (*p == ' ')
            p++;
    }
    json_error_t je;
    json_t *purposes = json_loads(a->purposes ? a->purposes : "{}", 0, &je);
    size_t np = json_object_size(purposes);
    m->purposes = veil_call_array(call, np, sizeof *m->purposes);
    const char *key;
    json_t *val;
    json_object_foreach(purposes, key, val)
    {
        Veil__Gateway__AttributePurpose *ap = veil_call_alloc(call, sizeof *ap);
        if (!ap || !m->purposes)
            break;
        veil__gateway__attribute_purpose__init(ap);
        ap->attribute = veil_call_strdup(call, key);
        ap->purpose = veil_call_strdup(call, json_string_value(val));
        m->purposes[m->n_purposes++] = ap;
    }
    json_decref(purposes);
}

/* After a registry change: reload now, so this replica answers with it at once. */
static veil_err changed(struct gateway *gw, veil_call *call, veil_err err, const char *refusal,
                        const char *what)
{
    if (err == VEIL_ERR_PRECONDITION && refusal) {
        veil_call_fail(call, err, "%s", refusal);
        return err;
    }
    if (err == VEIL_ERR_EXISTS) {
        veil_call_fail(call, err, "app_id or cert_identity is already registered");
        return err;
    }
    if (err == VEIL_ERR_NOT_FOUND) {
        veil_call_fail(call, err, "app_id: unknown app");
        return err;
    }
    if (err)
        return gw_store_failed(call, err);
    if (gw_refresh(gw, 1) != VEIL_OK)
        veil_log(VEIL_LOG_WARN, "registry reload failed after a change; the poller will retry",
                 VL_STR("change", what), VL_END);
    return VEIL_OK;
}

static void gw_admin_register_app(Veil__Gateway__Admin_Service *svc, const Veil__Gateway__App *req,
                                  Veil__Gateway__App_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, admin);
    Veil__Gateway__App resp;
    gw_app app;
    const char *refusal = NULL;
    veil_err err = app_from_message(gw, call, req, &app);
    if (!err) {
        err = gw_store_insert_app(gw->store, &app, req->name, req->organisation, &refusal);
        err = changed(gw, call, err, refusal, "register");
    }
    if (!err) {
        app_to_message(call, &app, req->name, req->organisation, &resp);
        veil_log(VEIL_LOG_INFO, "app registered", VL_STR("app", app.id),
                 VL_STR("admin", veil_call_peer(call)->name), VL_END);
    }
    err =
        gw_audit(gw, call, &(gw_audit_entry){.method = "RegisterApp", .app_id = req->app_id}, err);
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_admin_update_app(Veil__Gateway__Admin_Service *svc, const Veil__Gateway__App *req,
                                Veil__Gateway__App_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, admin);
    Veil__Gateway__App resp;
    gw_app app, old;
    veil_err err = VEIL_OK;
    if (gw_registry_get_named(&gw->registry, call, req->app_id, &old) != 0) {
        veil_call_fail(call, VEIL_ERR_NOT_FOUND, "app_id: unknown app");
        err = VEIL_ERR_NOT_FOUND;
    }
    if (!err)
        err = app_from_message(gw, call, req, &app);
    /*
     * An update that says nothing about OpenID Connect (an older client, a
     * registry file without those fields) keeps the app's registration for it.
     */
    if (!err && !req->n_redirect_uris && !req->token_auth[0] && !req->jwks[0] &&
        !req->id_token_alg[0] && !req->n_purposes) {
        app.redirect_uris = old.redirect_uris;
        app.jwks = old.jwks;
        app.purposes = old.purposes;
        snprintf(app.token_auth, sizeof app.token_auth, "%s", old.token_auth);
        snprintf(app.id_token_alg, sizeof app.id_token_alg, "%s", old.id_token_alg);
    }
    if (!err) {
        snprintf(app.status, sizeof app.status, "%s", old.status);
        const char *refusal = NULL;
        err = gw_store_update_app(gw->store, &app, req->name, req->organisation, &refusal);
        err = changed(gw, call, err, refusal, "update");
    }
    if (!err) {
        app_to_message(call, &app, req->name, req->organisation, &resp);
        veil_log(VEIL_LOG_INFO, "app updated", VL_STR("app", app.id),
                 VL_STR("admin", veil_call_peer(call)->name), VL_END);
    }
    err = gw_audit(gw, call, &(gw_audit_entry){.method = "UpdateApp", .app_id = req->app_id}, err);
    VEIL_REPLY(done, call, err, &resp);
}

/* Suspend or reinstate: revocation first (every replica learns it from the feed), then the
 * registry. */
static veil_err set_app_state(struct gateway *gw, veil_call *call,
                              const Veil__Gateway__AppRequest *req, int suspend,
                              Veil__Gateway__App *resp)
{
    gw_app app;
    if (gw_registry_get(&gw->registry, req->app_id, &app) != 0) {
        veil_call_fail(call, VEIL_ERR_NOT_FOUND, "app_id: unknown app");
        return VEIL_ERR_NOT_FOUND;
    }
    if (req->reason[0] && !gw_text_ok(req->reason, 200))
        return invalid(call, "reason must be at most 200 bytes of printable UTF-8");
    if (!gw_audit_reason_ok(req->reason))
        return invalid(call, "reason must not hold an ID number or a web number");
    Veil__Revocation__SetAppStateRequest r = VEIL__REVOCATION__SET_APP_STATE_REQUEST__INIT;
    Veil__Empty *ignored;
    r.app_id = app.id;
    r.state = suspend ? VEIL__REVOCATION__APP_STATE__APP_REVOKED
                      : VEIL__REVOCATION__APP_STATE__APP_ACTIVE;
    r.reason = req->reason;
    veil_err err = gw_downstream(gw, call, gw->revocation, "SetAppState", &r.base, &ignored);
    if (!err)
        err = changed(gw, call,
                      gw_store_set_app_status(gw->store, app.id, suspend ? "suspended" : "active"),
                      NULL, suspend ? "suspend" : "reinstate");
    if (!err) {
        gw_registry_get_named(&gw->registry, call, req->app_id, &app);
        app_to_message(call, &app, app.name, app.organisation, resp);
        veil_log(VEIL_LOG_INFO, suspend ? "app suspended" : "app reinstated", VL_STR("app", app.id),
                 VL_STR("admin", veil_call_peer(call)->name), VL_END);
    }
    return err;
}

static void gw_admin_suspend_app(Veil__Gateway__Admin_Service *svc,
                                 const Veil__Gateway__AppRequest *req,
                                 Veil__Gateway__App_Closure done, void *call)
{
    Veil__Gateway__App resp;
    veil_err err = set_app_state(GW_OF(svc, admin), call, req, 1, &resp);
    err = gw_audit(
        GW_OF(svc, admin), call,
        &(gw_audit_entry){.method = "SuspendApp", .app_id = req->app_id, .reason = req->reason},
        err);
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_admin_reinstate_app(Veil__Gateway__Admin_Service *svc,
                                   const Veil__Gateway__AppRequest *req,
                                   Veil__Gateway__App_Closure done, void *call)
{
    Veil__Gateway__App resp;
    veil_err err = set_app_state(GW_OF(svc, admin), call, req, 0, &resp);
    err = gw_audit(
        GW_OF(svc, admin), call,
        &(gw_audit_entry){.method = "ReinstateApp", .app_id = req->app_id, .reason = req->reason},
        err);
    VEIL_REPLY(done, call, err, &resp);
}

struct full_list {
    veil_call *call;
    Veil__Gateway__App **apps;
    size_t n;
};

static void add_full(const gw_app *a, void *ctx)
{
    struct full_list *l = ctx;
    Veil__Gateway__App *m = veil_call_alloc(l->call, sizeof *m);
    if (!m)
        return;
    app_to_message(l->call, a, a->name, a->organisation, m);
    l->apps[l->n++] = m;
}

static void gw_admin_list_apps(Veil__Gateway__Admin_Service *svc, const Veil__Empty *req,
                               Veil__Gateway__ListAppsResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, admin);
    Veil__Gateway__ListAppsResponse resp = VEIL__GATEWAY__LIST_APPS_RESPONSE__INIT;
    struct full_list l = {call, NULL, 0};
    veil_err err = gw_registry_each(&gw->registry, call, (void ***)&l.apps, add_full, &l);
    resp.apps = l.apps;
    resp.n_apps = l.n;
    err = gw_audit(gw, call, &(gw_audit_entry){.method = "ListApps"}, err);
    VEIL_REPLY(done, call, err, &resp);
}

/*
 * Checks the pseudonym service holds a key version, asking it to load new
 * key files first (a Derive naming the version does).
 */
static veil_err pseudonym_has(struct gateway *gw, veil_call *call, uint32_t version)
{
    Veil__Pseudonym__DeriveRequest d = VEIL__PSEUDONYM__DERIVE_REQUEST__INIT;
    Veil__Pseudonym__DeriveResponse *ignored;
    static const unsigned char probe[32];
    d.subject_ref.data = (unsigned char *)probe;
    d.subject_ref.len = sizeof probe;
    d.sector_id = "veil.key-probe";
    d.key_version = version;
    veil_err err = gw_downstream(gw, call, gw->pseudonym, "Derive", &d.base, &ignored);
    if (err == VEIL_ERR_PRECONDITION)
        veil_call_fail(call, err, "the pseudonym service has no key file pseudonym-%u.key", version);
    return err;
}

/* Checks the consent service publishes receipt key version (it loads new files as they appear). */
static veil_err receipt_has(struct gateway *gw, veil_call *call, uint32_t version)
{
    Veil__Empty e = VEIL__EMPTY__INIT;
    Veil__Consent__KeysResponse *k;
    veil_err err = gw_downstream(gw, call, gw->consent, "GetKeys", &e.base, &k);
    if (err)
        return err;
    char kid[48];
    snprintf(kid, sizeof kid, "\"receipt-%u\"", version);
    if (!strstr(k->jwks, kid)) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION,
                       "the consent service has no key file receipt-%u.key", version);
        return VEIL_ERR_PRECONDITION;
    }
    return VEIL_OK;
}

/*
 * RotateKey: version N makes key N current and the old current previous
 * (apps see both: assertions carry previous_sub, the JWKS both keys), so a
 * rotation always starts an overlap; only end_overlap (with version 0) ends
 * it.  A request naming neither is refused: a client that forgot the version
 * must not end an overlap by accident.  The state is in the database (one row
 * per kind since the first start), so every replica follows within its poll
 * interval and a restart changes nothing.
 */
static veil_err rotate(struct gateway *gw, veil_call *call, const Veil__Gateway__RotateKeyRequest *req,
                       Veil__Gateway__RotateKeyResponse *resp)
{
    int assertion = strcmp(req->kind, "assertion") == 0,
        receipt = strcmp(req->kind, "receipt") == 0;
    if (!assertion && !receipt && strcmp(req->kind, "pseudonym") != 0)
        return invalid(call, "kind must be assertion, pseudonym or receipt");
    if (req->version == 0 && !req->end_overlap)
        return invalid(call, "version must be a key version of 1 or more (or end_overlap set)");
    if (req->version != 0 && req->end_overlap)
        return invalid(call, "end_overlap takes no version");
    uint32_t old_cur, old_prev, new_cur, new_prev;
    veil_err err = gw_store_key_state(gw->store, req->kind, &old_cur, &old_prev);
    if (err)
        return gw_store_failed(call, err);
    if (req->version && assertion && !gw_keys_signer(&gw->keys, req->version)) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "no key file assertion-%u.key is loaded",
                       req->version);
        return VEIL_ERR_PRECONDITION;
    }
    if (req->version && receipt && (err = receipt_has(gw, call, req->version)))
        return err;
    if (req->version && !assertion && !receipt && (err = pseudonym_has(gw, call, req->version)))
        return err;
    if (req->end_overlap) {
        if (old_prev == 0) {
            veil_call_fail(call, VEIL_ERR_PRECONDITION, "no rotation is in progress");
            return VEIL_ERR_PRECONDITION;
        }
        new_cur = old_cur;
        new_prev = 0;
    } else {
        new_cur = req->version;
        new_prev = old_cur == req->version ? old_prev : old_cur;
    }
    if ((err = gw_store_key_state_set(gw->store, req->kind, new_cur, new_prev)))
        return gw_store_failed(call, err);
    _Atomic uint32_t *cur = assertion ? &gw->keys.assertion_current
                            : receipt ? &gw->keys.receipt_current
                                      : &gw->keys.pseudonym_current;
    _Atomic uint32_t *prev = assertion ? &gw->keys.assertion_previous
                             : receipt ? &gw->keys.receipt_previous
                                       : &gw->keys.pseudonym_previous;
    atomic_store(cur, new_cur);
    atomic_store(prev, new_prev);
    resp->kind = req->kind;
    resp->current = new_cur;
    resp->previous = new_prev;
    veil_log(VEIL_LOG_INFO, "key rotation", VL_STR("kind", req->kind), VL_INT("current", new_cur),
             VL_INT("previous", new_prev), VL_STR("admin", veil_call_peer(call)->name), VL_END);
    return VEIL_OK;
}

static void gw_admin_rotate_key(Veil__Gateway__Admin_Service *svc,
                                const Veil__Gateway__RotateKeyRequest *req,
                                Veil__Gateway__RotateKeyResponse_Closure done, void *call)
{
    Veil__Gateway__RotateKeyResponse resp = VEIL__GATEWAY__ROTATE_KEY_RESPONSE__INIT;
    veil_err err = rotate(GW_OF(svc, admin), call, req, &resp);
    char detail[96];
    snprintf(detail, sizeof detail, "kind=%.16s version=%u%s", req->kind, req->version,
             req->end_overlap ? " end_overlap" : "");
    err = gw_audit(GW_OF(svc, admin), call,
                   &(gw_audit_entry){.method = "RotateKey", .detail = detail}, err);
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_admin_set_identity_state(Veil__Gateway__Admin_Service *svc,
                                        const Veil__Gateway__IdentityStateRequest *req,
                                        Veil__Empty_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, admin);
    Veil__Empty resp = VEIL__EMPTY__INIT, *ignored;
    Veil__Revocation__IdentityState state;
    veil_err err = VEIL_OK;
    char admin[160]; /* "admin/" and the peer name (at most 127 bytes) */
    snprintf(admin, sizeof admin, "admin/%s", veil_call_peer(call)->name);
    if (strcmp(req->state, "active") == 0)
        state = VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE;
    else if (strcmp(req->state, "suspended") == 0)
        state = VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_SUSPENDED;
    else if (strcmp(req->state, "revoked") == 0)
        state = VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_REVOKED;
    else
        err = invalid(call, "state must be active, suspended or revoked");
    /* A change to a person needs a stated reason: it goes to the audit log and their access log. */
    if (!err && !req->reason[0])
        err = invalid(call, "reason is required for a change to an identity");
    if (!err && !gw_text_ok(req->reason, 200))
        err = invalid(call, "reason must be at most 200 bytes of printable UTF-8");
    if (!err && !gw_audit_reason_ok(req->reason))
        err = invalid(call, "reason must not hold an ID number or a web number");
    Veil__Vault__LookupWebNumberResponse *who = NULL;
    if (!err) {
        Veil__Vault__LookupWebNumberRequest l = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
        l.web_number = req->web_number;
        l.admin = admin;
        l.reason = req->reason;
        l.purpose = "set_identity_state";
        err = gw_downstream(gw, call, gw->vault, "LookupWebNumber", &l.base, &who);
    }
    if (!err) {
        Veil__Revocation__SetIdentityStateRequest s =
            VEIL__REVOCATION__SET_IDENTITY_STATE_REQUEST__INIT;
        s.subject_ref = who->subject_ref;
        s.state = state;
        s.reason = req->reason;
        err = gw_downstream(gw, call, gw->revocation, "SetIdentityState", &s.base, &ignored);
    }
    /* The citizen sees who changed their identity's state, to what, and why. */
    gw_change ch = {.action = "identity_state_set",
                    .purpose = req->reason,
                    .actor = admin,
                    .detail = req->state};
    if (!err)
        err = gw_log_change(gw, call, who->subject_ref, &ch);
    if (!err)
        veil_log(VEIL_LOG_INFO, "identity state set by an admin", VL_STR("state", req->state),
                 VL_STR("admin", veil_call_peer(call)->name), VL_END);
    char detail[48];
    snprintf(detail, sizeof detail, "state=%.16s", req->state);
    err =
        gw_audit(gw, call,
                 &(gw_audit_entry){
                     .method = "SetIdentityState",
                     .web_number = veil_web_number_valid(req->web_number) ? req->web_number : NULL,
                     .detail = detail,
                     .reason = req->reason},
                 err);
    VEIL_REPLY(done, call, err, &resp);
}

struct audit_list {
    veil_call *call;
    Veil__Gateway__AuditEntry **entries;
    size_t n;
};

static void add_audit(const gw_audit_row *row, void *ctx)
{
    struct audit_list *l = ctx;
    Veil__Gateway__AuditEntry *e = veil_call_alloc(l->call, sizeof *e);
    if (!e)
        return;
    veil__gateway__audit_entry__init(e);
    e->seq = row->seq;
    e->at_ms = row->at_ms;
    e->actor = veil_call_strdup(l->call, row->actor);
    e->method = veil_call_strdup(l->call, row->method);
    e->app_id = veil_call_strdup(l->call, row->app_id);
    e->identity_ref = veil_call_strdup(l->call, row->identity_ref);
    e->detail = veil_call_strdup(l->call, row->detail);
    e->reason = veil_call_strdup(l->call, row->reason);
    e->result = veil_call_strdup(l->call, row->result);
    if (e->actor && e->method && e->app_id && e->identity_ref && e->detail && e->reason &&
        e->result)
        l->entries[l->n++] = e;
}

#define AUDIT_PAGE     100
#define AUDIT_PAGE_MAX 1000

/* ListAudit: the auditor's read of the log, itself recorded. */
static void gw_admin_list_audit(Veil__Gateway__Admin_Service *svc,
                                const Veil__Gateway__AuditRequest *req,
                                Veil__Gateway__AuditResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, admin);
    Veil__Gateway__AuditResponse resp = VEIL__GATEWAY__AUDIT_RESPONSE__INIT;
    char ref[GW_AUDIT_REF_LEN + 1] = "";
    veil_err err = VEIL_OK;
    uint32_t max = req->max == 0               ? AUDIT_PAGE
                   : req->max > AUDIT_PAGE_MAX ? AUDIT_PAGE_MAX
                                               : req->max;
    if (req->after_seq < 0)
        err = invalid(call, "after_seq must not be negative");
    else if (req->web_number[0] && !veil_web_number_valid(req->web_number))
        err = invalid(call, "web_number is not a valid web number");
    struct audit_list l = {call, veil_call_array(call, max, sizeof *l.entries), 0};
    if (!err && !l.entries)
        err = VEIL_ERR_NOMEM;
    if (!err && req->web_number[0])
        gw_audit_ref(gw->keys.auditref, req->web_number, ref);
    if (!err && (err = gw_store_audit_list(gw->store, req->after_seq, max, ref, add_audit, &l)))
        err = gw_store_failed(call, err);
    resp.entries = l.entries;
    resp.n_entries = err ? 0 : l.n;
    char detail[48];
    snprintf(detail, sizeof detail, "after=%lld", (long long)req->after_seq);
    err = gw_audit(
        gw, call,
        &(gw_audit_entry){.method = "ListAudit",
                          .web_number = req->web_number[0] && !err ? req->web_number : NULL,
                          .detail = detail},
        err);
    VEIL_REPLY(done, call, err, &resp);
}

const Veil__Gateway__Admin_Service gw_admin_rpc = VEIL__GATEWAY__ADMIN__INIT(gw_admin_);

const veil_method_policy gw_admin_policy[] = {
    {"RegisterApp", VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"UpdateApp", VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"SuspendApp", VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"ReinstateApp", VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"ListApps", VEIL_PEER_ADMIN, VEIL_EXEC_WORKER}, /* writes its audit row */
    {"RotateKey", VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    {"SetIdentityState", VEIL_PEER_ADMIN, VEIL_EXEC_WORKER},
    /* Separation of duties: admins act, auditors read what they did. */
    {"ListAudit", VEIL_PEER_AUDITOR, VEIL_EXEC_WORKER},
};
const size_t gw_admin_policy_len = sizeof gw_admin_policy / sizeof gw_admin_policy[0];
