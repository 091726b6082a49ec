/*
 * loginreq.c - OpenID Connect login requests: what the browser's page and the
 * citizen's phone share, and the phone's side of them on the Wallet API.
 *
 * /authorize creates a request with two secrets: its id (in the QR code and
 * the same-device link; whoever holds it may see what is asked) and a poll
 * token (only in the page; it opens the authorization code).  The database
 * keeps only their hashes, the public half of a key pair derived from the
 * poll token (the code is sealed to it) and, once approved, the login's
 * result sealed under a key derived from the code - see db/gateway/002_oidc.sql.
 *
 * ApproveLogin is where the login happens: the citizen's signed request is
 * verified, the binding code the browser shows must match (a phone that
 * scanned a QR code relayed from somebody else's browser sees a code it was
 * never shown: QR-login-jacking fails), consent decisions become ordinary
 * receipted grants through the consent service, and then gw_login_run - the
 * same function CompleteLogin uses - verifies the ticket, asks revocation,
 * releases the attributes and derives the pseudonym.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "oidc.h"
#include "store.h"
#include "veil/codec.h"
#include "veil/consent.pb-c.h"
#include "veil/log.h"

#define MAX_DECISIONS     16
#define MAX_REMEMBER_DAYS 3650
#define ONCE_GRANT_S      300 /* "this time only": a grant that outlives this login by minutes */

/* A domain-separated hash of a secret (lookup keys, seal keys). */
static void derive(unsigned char out[32], const char *context, const char *secret)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, (const unsigned char *)context, strlen(context), 32);
    crypto_generichash_update(&st, (const unsigned char *)secret, strlen(secret));
    crypto_generichash_final(&st, out, 32);
}

static void new_secret(char out[GW_SECRET_TEXT])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    veil_b64url_encode(out, GW_SECRET_TEXT, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
}

/* Whether s looks like one of our secrets (43 base64url characters). */
static int secret_ok(const char *s)
{
    if (!s || strlen(s) != GW_SECRET_TEXT - 1)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* The page's key pair: derived from the poll token, so only its holder can open. */
static void poll_keypair(const char *poll, unsigned char pk[32], unsigned char sk[32])
{
    unsigned char seed[32];
    derive(seed, "veil-oidc-poll-box", poll);
    crypto_box_seed_keypair(pk, sk, seed);
    sodium_memzero(seed, sizeof seed);
}

/* secretbox under a key derived from secret: nonce || ciphertext, malloc'd. */
static unsigned char *seal(const char *secret, const char *text, size_t *len)
{
    unsigned char key[32];
    size_t n = strlen(text);
    *len = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + n;
    unsigned char *out = malloc(*len);
    if (!out)
        return NULL;
    derive(key, "veil-oidc-seal", secret);
    randombytes_buf(out, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(out + crypto_secretbox_NONCEBYTES, (const unsigned char *)text, n, out,
                          key);
    sodium_memzero(key, sizeof key);
    return out;
}

static json_t *unseal_json(const char *secret, const unsigned char *box, size_t len)
{
    unsigned char key[32];
    if (len < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
        return NULL;
    size_t n = len - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    char *text = malloc(n + 1);
    json_t *j = NULL;
    derive(key, "veil-oidc-seal", secret);
    if (text && crypto_secretbox_open_easy((unsigned char *)text, box + crypto_secretbox_NONCEBYTES,
                                           len - crypto_secretbox_NONCEBYTES, box, key) == 0) {
        json_error_t je;
        j = json_loadb(text, n, 0, &je);
        sodium_memzero(text, n);
    }
    sodium_memzero(key, sizeof key);
    free(text);
    return j;
}

veil_err gw_loginreq_create(struct gateway *gw, gw_login_request *req, int64_t ttl_ms,
                            char id[GW_SECRET_TEXT], char poll[GW_SECRET_TEXT])
{
    unsigned char id_hash[32], poll_hash[32], sk[32];
    new_secret(id);
    new_secret(poll);
    derive(id_hash, "veil-oidc-request", id);
    derive(poll_hash, "veil-oidc-poll", poll);
    poll_keypair(poll, req->poll_pk, sk);
    sodium_memzero(sk, sizeof sk);
    snprintf(req->binding_code, sizeof req->binding_code, "%02u",
             10 + randombytes_uniform(90)); /* 10..99 */
    randombytes_buf(req->challenge, sizeof req->challenge);
    req->expires_at_ms = veil_now_ms() + ttl_ms;
    snprintf(req->status, sizeof req->status, "pending");
    veil_err err = gw_put_challenge(gw, req->challenge, req->app_id, req->expires_at_ms);
    if (!err)
        err = gw_store_request_put(gw->store, id_hash, poll_hash, req);
    return err;
}

veil_err gw_loginreq_by_id(struct gateway *gw, const char *id, gw_login_request *req)
{
    unsigned char h[32];
    if (!secret_ok(id))
        return VEIL_ERR_NOT_FOUND;
    derive(h, "veil-oidc-request", id);
    return gw_store_request_get(gw->store, 0, h, req, NULL, NULL);
}

veil_err gw_loginreq_poll(struct gateway *gw, const char *poll, gw_login_request *req,
                          char code[GW_SECRET_TEXT])
{
    unsigned char h[32], pk[32], sk[32], *sealed = NULL;
    size_t len = 0;
    code[0] = '\0';
    if (!secret_ok(poll))
        return VEIL_ERR_NOT_FOUND;
    derive(h, "veil-oidc-poll", poll);
    veil_err err = gw_store_request_get(gw->store, 1, h, req, &sealed, &len);
    if (!err && sealed && strcmp(req->status, "approved") == 0) {
        poll_keypair(poll, pk, sk);
        if (len != crypto_box_SEALBYTES + GW_SECRET_TEXT - 1 ||
            crypto_box_seal_open((unsigned char *)code, sealed, len, pk, sk) != 0) {
            code[0] = '\0';
            err = VEIL_ERR_INTERNAL;
        } else {
            code[GW_SECRET_TEXT - 1] = '\0';
        }
        sodium_memzero(sk, sizeof sk);
    }
    free(sealed);
    return err;
}

veil_err gw_loginreq_take_code(struct gateway *gw, const char *code, gw_code_grant *out)
{
    unsigned char h[32], *sealed = NULL;
    size_t len = 0;
    gw_login_request r;
    memset(out, 0, sizeof *out);
    if (!secret_ok(code))
        return VEIL_ERR_NOT_FOUND;
    derive(h, "veil-oidc-code", code);
    veil_err err = gw_store_code_take(gw->store, h, &r, &sealed, &len);
    if (err)
        return err;
    snprintf(out->app_id, sizeof out->app_id, "%s", r.app_id);
    snprintf(out->redirect_uri, sizeof out->redirect_uri, "%s", r.redirect_uri);
    snprintf(out->code_challenge, sizeof out->code_challenge, "%s", r.code_challenge);
    snprintf(out->nonce, sizeof out->nonce, "%s", r.nonce);
    out->expired = r.expires_at_ms <= veil_now_ms();
    out->result = unseal_json(code, sealed, len);
    free(sealed);
    return out->result ? VEIL_OK : VEIL_ERR_INTERNAL;
}

veil_err gw_loginreq_issue_token(struct gateway *gw, const char *code, const char *app_id,
                                 const json_t *claims, int64_t ttl_ms, char token[GW_SECRET_TEXT])
{
    unsigned char th[32], ch[32];
    size_t len;
    new_secret(token);
    derive(th, "veil-oidc-token", token);
    derive(ch, "veil-oidc-code", code);
    char *text = json_dumps(claims, JSON_COMPACT);
    unsigned char *sealed = text ? seal(token, text, &len) : NULL;
    veil_err err =
        sealed ? gw_store_token_put(gw->store, th, ch, app_id, sealed, len, veil_now_ms() + ttl_ms)
               : VEIL_ERR_NOMEM;
    free(text);
    free(sealed);
    return err;
}

veil_err gw_loginreq_token_claims(struct gateway *gw, const char *token, char app_id[65],
                                  json_t **claims)
{
    unsigned char th[32], *sealed = NULL;
    size_t len;
    *claims = NULL;
    if (!secret_ok(token))
        return VEIL_ERR_NOT_FOUND;
    derive(th, "veil-oidc-token", token);
    veil_err err = gw_store_token_get(gw->store, th, app_id, &sealed, &len);
    if (!err && !(*claims = unseal_json(token, sealed, len)))
        err = VEIL_ERR_INTERNAL;
    free(sealed);
    return err;
}

void gw_loginreq_code_choices(const char *id, const char *real, char out[3][4])
{
    /* Decoys derived from the id: the same choices however often the phone asks. */
    unsigned char h[32];
    unsigned vals[3] = {(unsigned)atoi(real), 0, 0};
    derive(h, "veil-oidc-decoys", id);
    for (int k = 1, i = 0; k < 3; i++) {
        unsigned v = 10 + (unsigned)(h[i % 32] + 7 * (unsigned)i) % 90;
        if (v != vals[0] && v != vals[1])
            vals[k++] = v;
    }
    for (int a = 0; a < 3; a++) /* sorted, so the real one's place says nothing */
        for (int b = a + 1; b < 3; b++)
            if (vals[b] < vals[a]) {
                unsigned t = vals[a];
                vals[a] = vals[b];
                vals[b] = t;
            }
    for (int i = 0; i < 3; i++)
        snprintf(out[i], 4, "%02u", vals[i]);
}

/* ---- the phone's side (Wallet API) ---- */

/* The purpose the app registered for an attribute, or a plain default. */
static const char *purpose_of(veil_call *call, const gw_app *app, const char *attribute)
{
    json_error_t je;
    json_t *p = json_loads(app->purposes ? app->purposes : "{}", 0, &je);
    const char *v = json_string_value(json_object_get(p, attribute));
    char *out = veil_call_strdup(call, v && *v ? v : "sign-in");
    json_decref(p);
    return out;
}

/* The live request a phone names, and its app (strings copied: gw_app_clear). */
static veil_err live_request(struct gateway *gw, veil_call *call, const char *id,
                             gw_login_request *req, gw_app *app)
{
    veil_err err = gw_loginreq_by_id(gw, id, req);
    if (err == VEIL_ERR_NOT_FOUND) {
        veil_call_fail(call, err, "login request is unknown");
        return err;
    }
    if (err)
        return gw_store_failed(call, err);
    if (strcmp(req->status, "expired") == 0) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "login request has expired");
        return VEIL_ERR_PRECONDITION;
    }
    if (strcmp(req->status, "pending") != 0) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "login request was already answered");
        return VEIL_ERR_PRECONDITION;
    }
    if (gw_registry_get_full(&gw->registry, req->app_id, app) != 0 ||
        strcmp(app->status, "active") != 0) {
        if (app->name)
            gw_app_clear(app);
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "app is suspended");
        return VEIL_ERR_PRECONDITION;
    }
    return VEIL_OK;
}

void gw_wallet_get_login_request(Veil__Gateway__Wallet_Service *svc,
                                 const Veil__Gateway__LoginRequestRef *req,
                                 Veil__Gateway__LoginRequestInfo_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__LoginRequestInfo resp = VEIL__GATEWAY__LOGIN_REQUEST_INFO__INIT;
    gw_login_request r;
    gw_app app = {0};
    veil_err err = live_request(gw, call, req->request_id, &r, &app);
    if (!err) {
        char **names;
        size_t n = gw_scope_names(call, r.scope, &names);
        Veil__Gateway__RequestedAttribute **a = veil_call_array(call, n, sizeof *a);
        Veil__Gateway__RequestedAttribute *cells = veil_call_array(call, n, sizeof *cells);
        char(*choices)[4] = veil_call_alloc(call, 3 * 4);
        char **codes = veil_call_array(call, 3, sizeof *codes);
        if (!a || !cells || !choices || !codes) {
            err = VEIL_ERR_NOMEM;
        } else {
            for (size_t i = 0; i < n; i++) {
                veil__gateway__requested_attribute__init(&cells[i]);
                cells[i].attribute = names[i];
                cells[i].purpose = (char *)purpose_of(call, &app, names[i]);
                cells[i].registered = (gw_scope_bit(names[i]) & app.scope) != 0;
                a[i] = &cells[i];
            }
            gw_loginreq_code_choices(req->request_id, r.binding_code, choices);
            for (int i = 0; i < 3; i++)
                codes[i] = choices[i];
            resp.app_id = veil_call_strdup(call, app.id);
            resp.app_name = veil_call_strdup(call, app.name);
            resp.app_kind = veil_call_strdup(call, app.kind);
            resp.organisation = veil_call_strdup(call, app.organisation);
            resp.attributes = a;
            resp.n_attributes = n;
            resp.binding_codes = codes;
            resp.n_binding_codes = 3;
            resp.challenge.data = veil_call_alloc(call, 32);
            if (resp.challenge.data) {
                memcpy(resp.challenge.data, r.challenge, 32);
                resp.challenge.len = 32;
            }
            resp.expires_at_ms = r.expires_at_ms;
        }
        gw_app_clear(&app);
    }
    VEIL_REPLY(done, call, err, &resp);
}

/* Records the answer; a request answered meanwhile is reported as such. */
static veil_err answer(struct gateway *gw, veil_call *call, const char *id, const char *status,
                       const unsigned char *code_hash, const unsigned char *sealed_code,
                       size_t sealed_code_len, const unsigned char *sealed_result,
                       size_t sealed_result_len)
{
    unsigned char h[32];
    derive(h, "veil-oidc-request", id);
    veil_err err = gw_store_request_answer(gw->store, h, status, code_hash, sealed_code,
                                           sealed_code_len, sealed_result, sealed_result_len,
                                           veil_now_ms() + GW_CODE_TTL_S * 1000);
    if (err == VEIL_ERR_PRECONDITION) {
        veil_call_fail(call, err, "login request was already answered or has expired");
        return err;
    }
    return err ? gw_store_failed(call, err) : VEIL_OK;
}

/*
 * Checks the decisions and splits them: the scope to log in with (once or
 * remember) and, per attribute, the grant's expiry.
 */
static veil_err decisions(veil_call *call, const Veil__Gateway__ApproveLoginPayload *p,
                          unsigned requested, unsigned *login_scope, int64_t expiry[MAX_DECISIONS],
                          const char *names[MAX_DECISIONS], size_t *n)
{
    *login_scope = 0;
    *n = 0;
    if (p->n_decisions > MAX_DECISIONS) {
        veil_call_fail(call, VEIL_ERR_INVALID, "decisions: at most %d", MAX_DECISIONS);
        return VEIL_ERR_INVALID;
    }
    int64_t now = veil_now_ms();
    for (size_t i = 0; i < p->n_decisions; i++) {
        const Veil__Gateway__AttributeDecision *d = p->decisions[i];
        unsigned bit = gw_scope_bit(d->attribute);
        if (!bit || !(bit & requested)) {
            veil_call_fail(call, VEIL_ERR_INVALID, "decisions: attribute was not requested");
            return VEIL_ERR_INVALID;
        }
        if (*login_scope & bit) {
            veil_call_fail(call, VEIL_ERR_INVALID, "decisions: attribute decided twice");
            return VEIL_ERR_INVALID;
        }
        if (strcmp(d->decision, "deny") == 0)
            continue;
        if (strcmp(d->decision, "once") == 0) {
            expiry[*n] = now + ONCE_GRANT_S * 1000;
        } else if (strcmp(d->decision, "remember") == 0 && d->days >= 1 &&
                   d->days <= MAX_REMEMBER_DAYS) {
            expiry[*n] = now + (int64_t)d->days * 86400000;
        } else {
            veil_call_fail(call, VEIL_ERR_INVALID,
                           "decisions: decision must be once, remember (days 1-%d) or deny",
                           MAX_REMEMBER_DAYS);
            return VEIL_ERR_INVALID;
        }
        *login_scope |= bit;
        names[(*n)++] = d->attribute;
    }
    return VEIL_OK;
}

/* One receipted grant per consented attribute, with the purpose the app registered. */
static veil_err grant_all(struct gateway *gw, veil_call *call, const ProtobufCBinaryData *subject,
                          const gw_app *app, const char *names[], const int64_t expiry[], size_t n,
                          Veil__Gateway__ApproveLoginResponse *resp)
{
    char **ids = veil_call_array(call, n, sizeof *ids);
    if (!ids)
        return VEIL_ERR_NOMEM;
    resp->receipt_ids = ids;
    for (size_t i = 0; i < n; i++) {
        if (!(gw_scope_bit(names[i]) & app->scope))
            continue; /* not registered: never granted, reported as withheld */
        Veil__Consent__GrantResponse *r;
        char *attr = (char *)names[i];
        const char *purpose = purpose_of(call, app, names[i]);
        veil_err err = gw_grant_consent(gw, call, *subject, app, &attr, 1, purpose, expiry[i], &r);
        /*
         * The consent service keeps one live grant per attribute: the same
         * citizen approving two logins to this app at once (two tabs) makes
         * the second insert collide.  Once more supersedes the first.
         */
        if (err == VEIL_ERR_EXISTS)
            err = gw_grant_consent(gw, call, *subject, app, &attr, 1, purpose, expiry[i], &r);
        if (err)
            return err;
        ids[resp->n_receipt_ids++] = r->receipt_id;
    }
    return VEIL_OK;
}

/* Makes the code, seals it to the page and the result under it, and records the approval. */
static veil_err approve(struct gateway *gw, veil_call *call, const char *id,
                        const gw_login_request *req, const gw_login_result *r)
{
    char code[GW_SECRET_TEXT], *text = gw_oidc_result_json(r);
    unsigned char code_hash[32], sealed_code[crypto_box_SEALBYTES + GW_SECRET_TEXT - 1];
    size_t result_len = 0;
    unsigned char *sealed_result = NULL;
    veil_err err = VEIL_ERR_NOMEM;
    new_secret(code);
    if (text && (sealed_result = seal(code, text, &result_len))) {
        derive(code_hash, "veil-oidc-code", code);
        crypto_box_seal(sealed_code, (const unsigned char *)code, GW_SECRET_TEXT - 1, req->poll_pk);
        err = answer(gw, call, id, "approved", code_hash, sealed_code, sizeof sealed_code,
                     sealed_result, result_len);
    }
    if (text) {
        sodium_memzero(text, strlen(text));
        free(text);
    }
    free(sealed_result);
    sodium_memzero(code, sizeof code);
    return err;
}

void gw_wallet_approve_login(Veil__Gateway__Wallet_Service *svc,
                             const Veil__Gateway__SignedRequest *req,
                             Veil__Gateway__ApproveLoginResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Gateway__ApproveLoginResponse resp = VEIL__GATEWAY__APPROVE_LOGIN_RESPONSE__INIT;
    Veil__Gateway__ApproveLoginPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    gw_login_request r;
    gw_app app = {0};
    unsigned login_scope = 0;
    int64_t expiry[MAX_DECISIONS];
    const char *names[MAX_DECISIONS];
    size_t n = 0;
    gw_login_result result;
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__approve_login_payload__descriptor, &p,
                              &subject, &device);
    if (err)
        goto out;
    if ((err = live_request(gw, call, p->request_id, &r, &app)))
        goto out;
    if (strlen(p->binding_code) != strlen(r.binding_code) ||
        sodium_memcmp(p->binding_code, r.binding_code, strlen(r.binding_code)) != 0) {
        /* One guess only: the request is cancelled, the page says so. */
        if (answer(gw, call, p->request_id, "failed", NULL, NULL, 0, NULL, 0) == VEIL_OK)
            veil_call_fail(call, VEIL_ERR_DENIED,
                           "binding code does not match the code shown in the browser; the login "
                           "request is cancelled");
        err = VEIL_ERR_DENIED;
        goto out;
    }
    if ((err = decisions(call, p, r.scope, &login_scope, expiry, names, &n)) ||
        (err = grant_all(gw, call, &subject, &app, names, expiry, n, &resp)))
        goto out;
    /* Only what was consented now is asked for: a standing grant the citizen denied stays shut. */
    gw_login_in in = {.ticket = p->ticket};
    in.n_attributes = gw_scope_names(call, login_scope, (char ***)&in.attributes);
    err = gw_login_run(gw, call, &app, &in, 1, &result);
    if (err) {
        if (answer(gw, call, p->request_id, "failed", NULL, NULL, 0, NULL, 0) != VEIL_OK)
            veil_log(VEIL_LOG_WARN, "cannot mark a failed login request", VL_END);
        goto out;
    }
    if ((err = approve(gw, call, p->request_id, &r, &result)))
        goto out;
    resp.sub = (char *)result.sub;
    resp.n_released = gw_scope_names(call, result.granted, &resp.released);
    resp.n_withheld = gw_login_withheld(call, r.scope, app.scope, result.granted, &resp.withheld);
    veil_log(VEIL_LOG_INFO, "login request approved", VL_STR("app", app.id),
             VL_INT("released", (long long)resp.n_released), VL_END);
out:
    if (app.name) { /* the request was found: a login through the OIDC door, counted */
        gw_metrics_login_done(app.kind, "oidc", err, resp.released, resp.n_released);
        gw_app_clear(&app);
    }
    VEIL_REPLY(done, call, err, &resp);
}

void gw_wallet_deny_login(Veil__Gateway__Wallet_Service *svc,
                          const Veil__Gateway__SignedRequest *req, Veil__Empty_Closure done,
                          void *call)
{
    struct gateway *gw = GW_OF(svc, wallet);
    Veil__Empty resp = VEIL__EMPTY__INIT;
    Veil__Gateway__DenyLoginPayload *p;
    ProtobufCBinaryData subject;
    char *device;
    gw_login_request r;
    gw_app app = {0};
    veil_err err = gw_citizen(gw, call, req, &veil__gateway__deny_login_payload__descriptor, &p,
                              &subject, &device);
    if (!err && !(err = live_request(gw, call, p->request_id, &r, &app))) {
        err = answer(gw, call, p->request_id, "denied", NULL, NULL, 0, NULL, 0);
        gw_app_clear(&app);
    }
    VEIL_REPLY(done, call, err, &resp);
}

veil_err gw_loginreq_card(struct gateway *gw, veil_call *call, const char *id, const char *poll,
                          const Veil__CardCredential *card)
{
    gw_login_request by_poll, r;
    gw_app app = {0};
    gw_login_result result;
    char code[GW_SECRET_TEXT];
    veil_err err = secret_ok(id) && secret_ok(poll) ? gw_loginreq_poll(gw, poll, &by_poll, code)
                                                    : VEIL_ERR_NOT_FOUND;
    sodium_memzero(code, sizeof code);
    if (err == VEIL_ERR_NOT_FOUND) {
        veil_call_fail(call, err, "login request is unknown");
        return err;
    }
    if (err)
        return gw_store_failed(call, err);
    /* The page's poll token and the request id must name the same request. */
    if ((err = live_request(gw, call, id, &r, &app)))
        return err;
    if (sodium_memcmp(r.challenge, by_poll.challenge, sizeof r.challenge) != 0) {
        gw_app_clear(&app);
        veil_call_fail(call, VEIL_ERR_NOT_FOUND, "login request is unknown");
        return VEIL_ERR_NOT_FOUND;
    }
    /*
     * Typing the PIN under the list of what the app asks for is the approval:
     * the one login function releases that, within the app's registered
     * scope.  A wrong PIN leaves the request pending, so the person can try
     * again (the vault counts the attempts).
     */
    gw_login_in in = {.card = card};
    in.n_attributes = gw_scope_names(call, r.scope, (char ***)&in.attributes);
    err = gw_login_run(gw, call, &app, &in, 1, &result);
    if (!err)
        err = approve(gw, call, id, &r, &result);
    char **released = NULL;
    size_t n_released = err ? 0 : gw_scope_names(call, result.granted, &released);
    gw_metrics_login_done(app.kind, "oidc", err, released, n_released);
    if (!err)
        veil_log(VEIL_LOG_INFO, "login request approved with a card", VL_STR("app", app.id),
                 VL_END);
    gw_app_clear(&app);
    return err;
}
