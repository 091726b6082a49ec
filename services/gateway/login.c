/*
 * login.c - the Login service: what apps call.
 *
 * CompleteLogin is DESIGN.md's flow: the app is registered and active, the
 * challenge is consumed (once, for that app), the vault verifies the ticket,
 * revocation allows the login, consent grants part of the requested scope,
 * the vault releases exactly that part, the pseudonym service derives the
 * app's pseudonym, and the gateway signs the assertion.  Revocation and
 * consent answers come from the caches when the change feeds vouch for them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "cache.h"
#include "gateway.h"
#include "store.h"
#include "veil/codec.h"
#include "veil/consent.pb-c.h"
#include "veil/jws.h"
#include "veil/log.h"
#include "veil/pseudonym.pb-c.h"
#include "veil/revocation.pb-c.h"
#include "veil/vault.pb-c.h"

#define MAX_REQUESTED 16

/* A BeginLogin in flight: deferred until its challenge is stored (hops.c). */
struct begin {
    struct gateway *gw;
    Veil__Gateway__BeginLoginResponse_Closure done;
    veil_call *call;
    gw_app app;
    unsigned char *challenge;
    int64_t expires;
};

static void begin_stored(void *arg, veil_err err)
{
    struct begin *b = arg;
    Veil__Gateway__BeginLoginResponse resp = VEIL__GATEWAY__BEGIN_LOGIN_RESPONSE__INIT;
    if (err) {
        err = gw_store_failed(b->call, err);
    } else {
        resp.challenge.data = b->challenge;
        resp.challenge.len = VEIL_CHALLENGE_BYTES;
        resp.expires_at_ms = b->expires;
        resp.app_id = (char *)b->app.id;
    }
    VEIL_REPLY(b->done, b->call, err, &resp); /* deferred: sent now, and the call may be gone */
}

static void begin_store(veil_call *call, void *arg)
{
    struct begin *b = arg;
    gw_put_challenge_then(b->gw, call, b->challenge, b->app.id, b->expires, begin_stored, b);
}

static void gw_login_begin_login(Veil__Gateway__Login_Service *svc,
                                 const Veil__Gateway__BeginLoginRequest *req,
                                 Veil__Gateway__BeginLoginResponse_Closure done, void *call)
{
    (void)req;
    struct gateway *gw = GW_OF(svc, login);
    struct begin *b = veil_call_alloc(call, sizeof *b);
    unsigned char *challenge = veil_call_alloc(call, VEIL_CHALLENGE_BYTES);
    gw_app app;
    veil_err err = b && challenge ? gw_calling_app(gw, call, &app) : VEIL_ERR_NOMEM;
    if (err) {
        Veil__Gateway__BeginLoginResponse resp = VEIL__GATEWAY__BEGIN_LOGIN_RESPONSE__INIT;
        VEIL_REPLY(done, call, err, &resp);
        return;
    }
    randombytes_buf(challenge, VEIL_CHALLENGE_BYTES);
    *b = (struct begin){.gw = gw,
                        .done = done,
                        .call = call,
                        .app = app,
                        .challenge = challenge,
                        .expires = veil_now_ms() + gw->challenge_ttl_s * 1000};
    gw_hops_begin(gw, call, begin_store, b);
}

/* Parses the requested attribute names into scope bits. */
static veil_err requested_scope(veil_call *call, const gw_login_in *req, unsigned *scope)
{
    *scope = 0;
    if (req->n_attributes > MAX_REQUESTED) {
        veil_call_fail(call, VEIL_ERR_INVALID, "attributes: at most %d may be requested",
                       MAX_REQUESTED);
        return VEIL_ERR_INVALID;
    }
    for (size_t i = 0; i < req->n_attributes; i++) {
        unsigned bit = gw_scope_bit(req->attributes[i]);
        if (!bit) {
            if (veil_ident_valid(req->attributes[i]))
                veil_call_fail(call, VEIL_ERR_INVALID,
                               "attributes: unknown attribute %s (attributes: %s)",
                               req->attributes[i], veil_attr_names());
            else
                veil_call_fail(call, VEIL_ERR_INVALID,
                               "attributes: unknown attribute (attributes: %s)", veil_attr_names());
            return VEIL_ERR_INVALID;
        }
        *scope |= bit;
    }
    return VEIL_OK;
}

/*
 * Whether the cache holds revocation's verdict for (subject, app):
 * the link records the key versions this login gives the app (so events
 * name the subject as the app knows it), so a cached verdict recorded under
 * other versions asks revocation again, once per link and rotation.
 */
static int authz_cached(struct gateway *gw, const ProtobufCBinaryData *subject, const char *app,
                        gw_authz *out)
{
    uint32_t kv = atomic_load(&gw->keys.pseudonym_current);
    uint32_t pkv = atomic_load(&gw->keys.pseudonym_previous);
    return gw_cache_get_authz(gw->cache, subject->data, app, out) &&
           (!out->allowed || (out->key_version == kv && out->previous_key_version == pkv));
}

/* Whether purpose is already one of the "; "-separated items of list (exactly, not as a part). */
static int purpose_listed(const char *list, const char *purpose)
{
    size_t n = strlen(purpose);
    for (const char *item = list; *item;) {
        const char *end = strstr(item, "; ");
        size_t len = end ? (size_t)(end - item) : strlen(item);
        if (len == n && memcmp(item, purpose, n) == 0)
            return 1;
        if (!end)
            break;
        item = end + 2;
    }
    return 0;
}

/* OpenID Connect's standard claim names for veil's raw attributes. */
static const char *oidc_name(const char *attribute)
{
    static const char *const names[][2] = {
        {"full_name", "name"}, {"birth_date", "birthdate"}, {"gender", "gender"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(attribute, names[i][0]) == 0)
            return names[i][1];
    return attribute;
}

/* Appends ,"key": (every member written here follows another). */
static void put_key(veil_buf *b, const char *key)
{
    veil_buf_put(b, ",", 1);
    veil_buf_json_str(b, key, strlen(key));
    veil_buf_put(b, ":", 1);
}

static int utf8(const char *s)
{
    return s && veil_utf8_valid(s, strlen(s));
}

/*
 * Whether the attribute becomes a claim: consent granted it and its value
 * can be written (jansson refused a string that is not UTF-8, and the claim
 * was left out; the written claims leave it out the same way).
 */
static int claimable(const Veil__Attribute *a, const gw_login_result *r)
{
    if (!(gw_scope_bit(a->name) & r->granted))
        return 0;
    switch (a->value_case) {
    case VEIL__ATTRIBUTE__VALUE_FLAG:
        return 1;
    case VEIL__ATTRIBUTE__VALUE_TEXT:
        return utf8(a->text);
    case VEIL__ATTRIBUTE__VALUE_PROVINCE:
        return a->province && utf8(a->province->code) && utf8(a->province->name) &&
               utf8(a->province->name_en);
    default:
        return 0;
    }
}

/* Appends one released attribute as a member (OpenID Connect's names when oidc). */
static void put_claim(veil_buf *b, const Veil__Attribute *a, int oidc)
{
    const Veil__Province *p = a->province;
    switch (a->value_case) {
    case VEIL__ATTRIBUTE__VALUE_FLAG:
        put_key(b, oidc ? oidc_name(a->name) : a->name);
        veil_buf_put(b, a->flag ? "true" : "false", a->flag ? 4 : 5);
        break;
    case VEIL__ATTRIBUTE__VALUE_TEXT:
        put_key(b, oidc ? oidc_name(a->name) : a->name);
        veil_buf_json_str(b, a->text, strlen(a->text));
        break;
    case VEIL__ATTRIBUTE__VALUE_PROVINCE: {
        /* oidc: the standard address claim, the province its region */
        const char *k[3] = {"region", "region_en", "region_code"};
        const char *v[3] = {p->name, p->name_en, p->code};
        if (!oidc) {
            k[0] = "code", k[1] = "name", k[2] = "name_en";
            v[0] = p->code, v[1] = p->name, v[2] = p->name_en;
        }
        put_key(b, oidc ? "address" : a->name);
        for (int i = 0; i < 3; i++) {
            veil_buf_put(b, i ? "," : "{", 1);
            veil_buf_json_str(b, k[i], strlen(k[i]));
            veil_buf_put(b, ":", 1);
            veil_buf_json_str(b, v[i], strlen(v[i]));
        }
        veil_buf_put(b, "}", 1);
        break;
    }
    default:
        break;
    }
}

void gw_login_claims(veil_buf *b, const gw_login_result *r, int oidc)
{
    size_t n = r->released ? r->released->n_attributes : 0;
    Veil__Attribute *const *at = n ? r->released->attributes : NULL;
    for (size_t i = 0; i < n; i++) {
        /* Defence in depth: only what consent granted leaves, whatever came back. */
        if (!(gw_scope_bit(at[i]->name) & r->granted)) {
            veil_log(VEIL_LOG_ERROR, "vault released an attribute that was not asked for",
                     VL_STR("attribute", at[i]->name), VL_END);
            continue;
        }
        if (!claimable(at[i], r))
            continue;
        /*
         * An attribute the vault sent twice is one claim, where it first
         * came, with the last value (as setting a jansson object's member
         * twice left it).
         */
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(at[j]->name, at[i]->name) == 0 && claimable(at[j], r);
        if (seen)
            continue;
        size_t last = i;
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(at[j]->name, at[i]->name) == 0 && claimable(at[j], r))
                last = j;
        put_claim(b, at[last], oidc);
    }
}

/* Appends ,"key":"value" (value already checked to be UTF-8). */
static void put_str(veil_buf *b, const char *key, const char *value)
{
    put_key(b, key);
    veil_buf_json_str(b, value, strlen(value));
}

static void put_int(veil_buf *b, const char *key, long long v)
{
    char text[24];
    put_key(b, key);
    veil_buf_put(b, text, (size_t)snprintf(text, sizeof text, "%lld", v));
}

int gw_assertion_payload(veil_buf *b, const char *iss, const char *aud, long long iat,
                         long long exp, const char *jti, const gw_login_result *r)
{
    if (!utf8(iss) || !utf8(aud) || !utf8(r->sub) || !utf8(jti))
        return -1;
    veil_buf_put(b, "{\"iss\":", 7);
    veil_buf_json_str(b, iss, strlen(iss));
    put_str(b, "aud", aud);
    put_str(b, "sub", r->sub);
    put_int(b, "iat", iat);
    put_int(b, "exp", exp);
    put_str(b, "jti", jti);
    if (r->previous_sub && *r->previous_sub && utf8(r->previous_sub))
        put_str(b, "previous_sub", r->previous_sub);
    /* How the citizen was authenticated, so an app needing more can refuse a card. */
    put_str(b, "acr", r->card ? GW_ACR_CARD : GW_ACR_PHONE);
    put_key(b, "amr");
    veil_buf_put(b, r->card ? "[\"pin\"]" : "[\"pop\"]", 7);
    gw_login_claims(b, r, 0);
    veil_buf_put(b, "}", 1);
    return b->failed ? -1 : 0;
}

char *gw_oidc_result_json(const gw_login_result *r)
{
    veil_buf b = {0};
    if (!utf8(r->sub))
        return NULL;
    veil_buf_put(&b, "{\"sub\":", 7);
    veil_buf_json_str(&b, r->sub, strlen(r->sub));
    put_int(&b, "auth_time", (long long)(r->auth_time_ms / 1000));
    put_str(&b, "acr", r->card ? GW_ACR_CARD : GW_ACR_PHONE);
    put_key(&b, "amr");
    veil_buf_put(&b, r->card ? "[\"pin\"]" : "[\"pop\"]", 7);
    gw_login_claims(&b, r, 1);
    veil_buf_put(&b, "}", 2); /* and the NUL */
    if (b.failed) {
        veil_buf_free(&b);
        return NULL;
    }
    return (char *)b.data; /* malloc'd: the caller wipes and frees it */
}

/*
 * Writes and signs the assertion; *out is in the call's arena.  The claims
 * are written directly (no jansson tree on the login's path), byte for
 * byte what json_dumps wrote of the tree that built them before
 * (check_gateway_claims).
 */
static veil_err sign_assertion(struct gateway *gw, veil_call *call, const gw_app *app,
                               const gw_login_result *r, char **out)
{
    unsigned char jti_raw[16];
    char jti[32];
    randombytes_buf(jti_raw, sizeof jti_raw);
    veil_b64url_encode(jti, sizeof jti, jti_raw, sizeof jti_raw);
    long long now = (long long)(veil_now_ms() / 1000);
    veil_buf claims = {0};
    if (gw_assertion_payload(&claims, gw->issuer, app->id, now, now + (long long)gw->assertion_ttl_s,
                             jti, r) != 0) {
        veil_buf_free(&claims);
        return VEIL_ERR_NOMEM;
    }
    veil_err err = VEIL_OK;
    char *token = NULL;
    const veil_signer *signer = gw_keys_signer(&gw->keys, atomic_load(&gw->keys.assertion_current));
    if (!signer) {
        veil_log(VEIL_LOG_ERROR, "the current assertion key is not loaded",
                 VL_INT("version", atomic_load(&gw->keys.assertion_current)), VL_END);
        veil_call_fail(call, VEIL_ERR_INTERNAL, "internal error");
        err = VEIL_ERR_INTERNAL;
    } else if ((err = veil_jws_sign_json(signer, "JWT", (const char *)claims.data, claims.len,
                                         &token)) == VEIL_OK) {
        *out = veil_call_strdup(call, token);
        if (!*out)
            err = VEIL_ERR_NOMEM;
    }
    if (token) /* the claims in base64url: a copy lives on in the call's arena, wiped with it */
        sodium_memzero(token, strlen(token));
    free(token);
    veil_buf_free(&claims); /* wiped: it holds the released attributes */
    return err;
}

size_t gw_login_withheld(veil_call *call, unsigned requested, unsigned registered,
                         unsigned granted, Veil__Gateway__Withheld ***out)
{
    char **names;
    size_t n = gw_scope_names(call, requested & ~granted, &names);
    Veil__Gateway__Withheld **w = veil_call_array(call, n, sizeof *w);
    Veil__Gateway__Withheld *cells = veil_call_array(call, n, sizeof *cells);
    *out = NULL;
    if (!w || !cells)
        return 0;
    for (size_t i = 0; i < n; i++) {
        veil__gateway__withheld__init(&cells[i]);
        cells[i].attribute = names[i];
        cells[i].reason = (gw_scope_bit(names[i]) & registered) ? "no_consent" : "not_registered";
        w[i] = &cells[i];
    }
    *out = w;
    return n;
}

/*
 * The app's first completed login fixes its sector (issue 12 item 5): from
 * then on its users hold pseudonyms of that sector.  Written once per app and
 * replica; the registry snapshot remembers it.
 */
static veil_err fix_sector(struct gateway *gw, veil_call *call, const gw_app *app)
{
    if (app->sector_fixed)
        return VEIL_OK;
    veil_err err = gw_store_fix_sector(gw->store, app->id);
    if (err)
        return gw_store_failed(call, err);
    gw_registry_fix_sector(&gw->registry, app->id);
    return VEIL_OK;
}

/* Whether more than one credential is present (none is a malformed ticket). */
static int several_credentials(const gw_login_in *in)
{
    return (in->ticket && *in->ticket) + (in->presentation && *in->presentation) +
               (in->card != NULL) >
           1;
}

/* The one refusal an app reads, whatever the reason (docs/gateway.md). */
static veil_err login_refused(veil_call *call)
{
    veil_call_fail(call, VEIL_ERR_DENIED, GW_LOGIN_REFUSED);
    return VEIL_ERR_DENIED;
}

/*
 * One login in flight (issue 15 lever 2): what it knows between its hops,
 * in its call's arena.  No thread waits for it: each hop's continuation
 * (on the hop's thread, hops.c) takes it one step further, a cache miss's
 * Authorize and Check included, and a step that must block (the
 * access-log entry of a refusal, fixing the app's sector) goes to the
 * door's `block`.  The steps, in order: login_start, after_take (phone
 * tickets only), after_verify, ask_authorize (after_authorize on a miss),
 * authorized, ask_grants (after_check on a miss), finish, after_finish,
 * and login_end, which hands the result to the door.
 */
struct gw_login_flow {
    struct gateway *gw;
    veil_call *call;
    gw_app app;
    gw_login_in in;
    int fresh_consent;
    gw_login_result *out;
    const gw_login_door *door;
    void *door_arg;
    unsigned requested;
    int card, in_person;
    veil_ticket *t;
    Veil__Vault__VerifyTicketRequest vt;
    Veil__Vault__VerifyTicketResponse *who;
    uint64_t ticket; /* the cache's, taken before a miss asks (cache.h) */
    Veil__Revocation__StatusRequest sr;
    Veil__Revocation__StatusResponse *verdict;
    Veil__Consent__CheckRequest cr;
    Veil__Consent__CheckResponse *consent;
    gw_authz authz;
    gw_grants g;
    unsigned granted;
    Veil__Pseudonym__DeriveRequest dr;
    Veil__Pseudonym__DeriveResponse *p;
    Veil__Vault__ReleaseAttributesRequest ra;
    Veil__Vault__ReleaseAttributesResponse *released;
};

static void after_verify(void *arg, veil_err err);
static void after_finish(void *arg, veil_err err);

static void login_end(gw_login_flow *f, veil_err err)
{
    f->door->finish(f->door_arg, f, err);
}

static void start_verify(gw_login_flow *f)
{
    gw_verify_ticket(f->gw, f->call, &f->vt, &f->who, after_verify, f);
}

/*
 * The door-specific first step: what the vault is asked to verify.  A phone's
 * ticket answers a challenge this app got from BeginLogin (consumed next, in
 * after_take); a presentation or a card has no BeginLogin, so the login gets
 * a fresh random challenge of its own (the vault binds what it mints to it).
 */
static veil_err verify_request(gw_login_flow *f)
{
    veil_call *call = f->call;
    const gw_login_in *in = &f->in;
    Veil__Vault__VerifyTicketRequest *vt = &f->vt;
    unsigned char *challenge = veil_call_alloc(call, VEIL_CHALLENGE_BYTES);
    if (!challenge)
        return VEIL_ERR_NOMEM;
    vt->app_id = (char *)f->app.id;
    vt->challenge.data = challenge;
    vt->challenge.len = VEIL_CHALLENGE_BYTES;
    if (in->presentation && *in->presentation) {
        if (strcmp(f->app.kind, "venue") != 0) {
            veil_call_fail(call, VEIL_ERR_DENIED, "only venue apps may redeem presentations");
            return VEIL_ERR_DENIED;
        }
        randombytes_buf(challenge, VEIL_CHALLENGE_BYTES);
        vt->presentation = (char *)in->presentation;
        return VEIL_OK;
    }
    if (in->card) {
        randombytes_buf(challenge, VEIL_CHALLENGE_BYTES);
        vt->card = (Veil__CardCredential *)in->card;
        return VEIL_OK;
    }
    veil_ticket *t = veil_call_alloc(call, sizeof *t);
    if (!t)
        return VEIL_ERR_NOMEM;
    veil_err err =
        in->ticket ? veil_ticket_parse(in->ticket, strlen(in->ticket), t) : VEIL_ERR_INVALID;
    if (err != VEIL_OK) {
        veil_call_fail(call, VEIL_ERR_INVALID, "%s",
                       err == VEIL_ERR_PRECONDITION ? VEIL_TICKET_RETIRED : "ticket is malformed");
        return VEIL_ERR_INVALID;
    }
    if (strcmp(t->app_id, f->app.id) != 0) {
        veil_call_fail(call, VEIL_ERR_UNAUTHENTICATED, "ticket was not made for this app");
        return VEIL_ERR_UNAUTHENTICATED;
    }
    f->t = t;
    return VEIL_OK;
}

/* The phone's challenge consumed (or not): on to the vault. */
static void after_take(void *arg, veil_err err)
{
    gw_login_flow *f = arg;
    if (err == VEIL_ERR_NOT_FOUND) {
        veil_call_fail(f->call, VEIL_ERR_PRECONDITION,
                       "challenge is unknown, expired or already used");
        return login_end(f, VEIL_ERR_PRECONDITION);
    }
    if (err)
        return login_end(f, gw_store_failed(f->call, err));
    f->vt.ticket = (char *)f->in.ticket;
    memcpy(f->vt.challenge.data, f->t->challenge, VEIL_CHALLENGE_BYTES);
    start_verify(f);
}

void gw_login_start(struct gateway *gw, veil_call *call, const gw_app *app,
                    const gw_login_in *in, int fresh_consent, gw_login_result *out,
                    const gw_login_door *door, void *door_arg)
{
    memset(out, 0, sizeof *out);
    gw_login_flow *f = veil_call_alloc(call, sizeof *f);
    if (!f) {
        gw_login_flow none = {.gw = gw, .call = call, .app = *app, .out = out};
        return door->finish(door_arg, &none, VEIL_ERR_NOMEM);
    }
    *f = (gw_login_flow){.gw = gw,
                         .call = call,
                         .app = *app,
                         .in = *in,
                         .fresh_consent = fresh_consent,
                         .out = out,
                         .door = door,
                         .door_arg = door_arg};
    veil__vault__verify_ticket_request__init(&f->vt);
    veil_err err;
    if (several_credentials(in)) {
        veil_call_fail(call, VEIL_ERR_INVALID,
                       "exactly one of ticket, presentation and card is required");
        return login_end(f, VEIL_ERR_INVALID);
    }
    if ((err = requested_scope(call, in, &f->requested)) || (err = verify_request(f)))
        return login_end(f, err);
    if (f->t)
        return gw_take_challenge(gw, call, f->t->challenge, f->app.id, after_take, f);
    start_verify(f);
}

static void finish(gw_login_flow *f);
static void after_authorize(void *arg, veil_err err);
static void authorized(gw_login_flow *f);
static void after_check(void *arg, veil_err err);

/*
 * Revocation's verdict for (subject, this app), from the cache or, on a
 * miss, with the other misses of this moment in one AuthorizeBatch.  No
 * device: the vault refused a revoked one, and does not say which it was.
 */
static void ask_authorize(gw_login_flow *f)
{
    struct gateway *gw = f->gw;
    if (authz_cached(gw, &f->who->subject_ref, f->app.id, &f->authz))
        return authorized(f);
    /*
     * This login's own ticket, taken before its item joins a batch: an
     * invalidation while the batch is out drops this put (cache.h), whoever
     * led the batch.
     */
    f->ticket = gw_cache_ticket(gw->cache);
    Veil__Revocation__StatusRequest *r = &f->sr;
    veil__revocation__status_request__init(r);
    r->subject_ref = f->who->subject_ref;
    r->device_id = "";
    r->app_id = (char *)f->app.id;
    r->key_version = atomic_load(&gw->keys.pseudonym_current);
    r->previous_key_version = atomic_load(&gw->keys.pseudonym_previous);
    gw_authorize(gw, f->call, r, &f->verdict, after_authorize, f);
}

static void after_authorize(void *arg, veil_err err)
{
    gw_login_flow *f = arg;
    if (err)
        return login_end(f, err);
    const Veil__Revocation__StatusResponse *s = f->verdict;
    memset(&f->authz, 0, sizeof f->authz);
    f->authz.allowed = s->allowed;
    f->authz.epoch = s->link_epoch;
    if (s->allowed) { /* Authorize recorded this login's versions on the link */
        f->authz.key_version = f->sr.key_version;
        f->authz.previous_key_version = f->sr.previous_key_version;
    }
    snprintf(f->authz.reason, sizeof f->authz.reason, "%s", s->reason_code);
    gw_cache_put_authz(f->gw->cache, f->ticket, f->who->subject_ref.data, f->app.id, &f->authz);
    authorized(f);
}

/* A refusal: one more call, so the citizen learns why (docs/gateway.md); it blocks. */
static void refuse_blocking(gw_login_flow *f)
{
    gw_change ch = {.action = "login_refused", .app_id = f->app.id, .detail = f->authz.reason};
    if (gw_log_change(f->gw, f->call, f->who->subject_ref, &ch) != VEIL_OK)
        veil_log(VEIL_LOG_WARN, "a refused login could not be recorded in the access log",
                 VL_STR("app_id", f->app.id), VL_STR("reason", f->authz.reason), VL_END);
    login_end(f, login_refused(f->call));
}

/*
 * Live consent for the app's whole registered scope, from the cache or, on
 * a miss (or when the login asks for fresh consent), with the other misses
 * of this moment in one CheckBatch.
 */
static void ask_grants(gw_login_flow *f)
{
    struct gateway *gw = f->gw;
    if (!f->fresh_consent &&
        gw_cache_get_grants(gw->cache, f->who->subject_ref.data, f->app.id, veil_now_ms(), &f->g)) {
        f->granted = f->requested & f->app.scope & f->g.granted;
        return finish(f);
    }
    f->ticket = gw_cache_ticket(gw->cache);
    Veil__Consent__CheckRequest *r = &f->cr;
    veil__consent__check_request__init(r);
    r->subject_ref = f->who->subject_ref;
    r->app_id = (char *)f->app.id;
    r->n_attributes = gw_scope_names(f->call, f->app.scope, &r->attributes);
    gw_check_consent(gw, f->call, r, &f->consent, after_check, f);
}

static void after_check(void *arg, veil_err err)
{
    gw_login_flow *f = arg;
    if (err)
        return login_end(f, err);
    const Veil__Consent__CheckResponse *c = f->consent;
    gw_grants *out = &f->g;
    memset(out, 0, sizeof *out);
    size_t used = 0;
    for (size_t i = 0; i < c->n_granted; i++) {
        const Veil__Consent__GrantedAttribute *g = c->granted[i];
        out->granted |= gw_scope_bit(g->attribute) & f->app.scope;
        if (g->expires_at_ms && (!out->expires_ms || g->expires_at_ms < out->expires_ms))
            out->expires_ms = g->expires_at_ms;
        /*
         * Whole purposes only: the buffer holds every distinct purpose the
         * catalogue allows (VEIL_RELEASE_PURPOSE_MAX), so nothing is ever cut
         * (a cut could split a UTF-8 character); one that would not fit -
         * longer than consent allows - is left out whole.
         */
        size_t pl = strlen(g->purpose), sep = used ? 2 : 0;
        if (!purpose_listed(out->purposes, g->purpose) && used + sep + pl < sizeof out->purposes) {
            memcpy(out->purposes + used, "; ", sep);
            memcpy(out->purposes + used + sep, g->purpose, pl + 1);
            used += sep + pl;
        }
    }
    gw_cache_put_grants(f->gw->cache, f->ticket, f->who->subject_ref.data, f->app.id, out);
    f->granted = f->requested & f->app.scope & out->granted;
    finish(f);
}

/*
 * Revocation allowed the login: what may be released.  Online with a
 * phone: what the citizen consented to in the wallet.  In person the
 * citizen decides on the spot: a presentation carries the attributes they
 * chose to show (a venue may narrow them further), and typing the PIN
 * approves what the app's form asked for.  Either way never beyond the
 * app's registered scope.
 */
static void authorized(gw_login_flow *f)
{
    if (!f->authz.allowed)
        return f->door->block(f->door_arg, f, refuse_blocking);
    unsigned in_scope = f->requested & f->app.scope;
    if (f->in_person) {
        f->granted = in_scope;
        snprintf(f->g.purposes, sizeof f->g.purposes, "%s",
                 f->card ? "approved with card and pin" : "shown in person");
        return finish(f);
    }
    if (!in_scope)
        return finish(f);
    ask_grants(f);
}

/*
 * The pseudonym and the release depend on nothing but what is known now,
 * so they are asked for at once: one wait instead of two.
 */
static void finish(gw_login_flow *f)
{
    struct gateway *gw = f->gw;
    const gw_app *app = &f->app;
    Veil__Pseudonym__DeriveRequest *dr = &f->dr;
    veil__pseudonym__derive_request__init(dr);
    dr->subject_ref = f->who->subject_ref;
    dr->sector_id = (char *)app->sector;
    dr->link_epoch = f->authz.epoch;
    dr->key_version = atomic_load(&gw->keys.pseudonym_current);
    dr->previous_key_version = atomic_load(&gw->keys.pseudonym_previous);
    Veil__Vault__ReleaseAttributesRequest *ra = &f->ra;
    veil__vault__release_attributes_request__init(ra);
    if (f->granted) {
        ra->subject_ref = f->who->subject_ref;
        ra->app_id = (char *)app->id;
        ra->n_attributes = gw_scope_names(f->call, f->granted, &ra->attributes);
        ra->purpose = f->g.purposes;
        ra->capability = f->who->release_capability;
        ra->challenge = f->vt.challenge;
    }
    gw_derive_release(gw, f->call, dr, f->granted ? ra : NULL, &f->p, &f->released, after_finish,
                      f);
}

/* The vault's verdict on the credential: who it is, or the uniform refusal. */
static void after_verify(void *arg, veil_err err)
{
    gw_login_flow *f = arg;
    /*
     * Whatever about the citizen stops a login - a revoked device, a phone
     * clock far off, an unknown (erased) device, a suspended or revoked
     * identity - the app reads one status and one message; the citizen's
     * wallet reads the reason in the access log.  In person, a mistyped PIN
     * or an expired code is still said (the person is at the counter).
     */
    if (err == VEIL_ERR_DENIED || (err == VEIL_ERR_UNAUTHENTICATED && f->vt.ticket[0]))
        return login_end(f, login_refused(f->call));
    if (err)
        return login_end(f, err);
    f->card = strcmp(f->who->credential, "card") == 0;
    f->in_person = f->card || !f->vt.ticket[0];
    if (f->vt.presentation[0]) {
        unsigned shown = 0;
        for (size_t i = 0; i < f->who->n_shown; i++)
            shown |= gw_scope_bit(f->who->shown[i]);
        f->requested = f->in.n_attributes ? f->requested & shown : shown;
    }
    ask_authorize(f);
}

static void login_done(gw_login_flow *f)
{
    gw_login_result *out = f->out;
    out->sub = f->p->pseudonym;
    out->previous_sub = f->p->previous_pseudonym;
    out->requested = f->requested;
    out->granted = f->granted;
    out->released = f->granted ? f->released : NULL;
    out->card = f->card;
    out->auth_time_ms = veil_now_ms();
    login_end(f, VEIL_OK);
}

static void fix_sector_blocking(gw_login_flow *f)
{
    veil_err err = fix_sector(f->gw, f->call, &f->app);
    if (err)
        return login_end(f, err);
    login_done(f);
}

/* The pseudonym and the release are back: the login is done (its sector fixed first). */
static void after_finish(void *arg, veil_err err)
{
    gw_login_flow *f = arg;
    if (err)
        return login_end(f, err);
    if (!f->app.sector_fixed)
        return f->door->block(f->door_arg, f, fix_sector_blocking);
    login_done(f);
}

/* ---- the synchronous door: gw_login_run waits on its own thread ---- */

struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*step)(gw_login_flow *f); /* a blocking step handed to the waiting thread */
    gw_login_flow *flow;
    int done;
    veil_err err;
};

static void sync_finish(void *arg, gw_login_flow *f, veil_err err)
{
    (void)f;
    struct sync_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void sync_block(void *arg, gw_login_flow *f, void (*step)(gw_login_flow *f))
{
    struct sync_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->step = step;
    w->flow = f;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static const gw_login_door sync_door = {sync_finish, sync_block};

veil_err gw_login_run(struct gateway *gw, veil_call *call, const gw_app *app,
                      const gw_login_in *in, int fresh_consent, gw_login_result *out)
{
    struct sync_wait w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    gw_login_start(gw, call, app, in, fresh_consent, out, &sync_door, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done) {
        if (w.step) { /* the flow's blocking steps run here, on the door's own thread */
            void (*step)(gw_login_flow *) = w.step;
            w.step = NULL;
            pthread_mutex_unlock(&w.mu);
            step(w.flow);
            pthread_mutex_lock(&w.mu);
            continue;
        }
        pthread_cond_wait(&w.cv, &w.mu);
    }
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return w.err;
}

/* ---- the gRPC door: CompleteLogin, deferred ---- */

struct complete {
    struct gateway *gw;
    veil_call *call;
    Veil__Gateway__CompleteLoginResponse_Closure done;
    gw_app app;
    gw_login_in in;
    gw_login_result r;
    void (*step)(gw_login_flow *f); /* a blocking step, for the worker that resumes it */
    gw_login_flow *flow;
};

/* Answers the app: the assertion signed (on the hop's thread: CPU only), or the failure. */
static void complete_finish(void *arg, gw_login_flow *f, veil_err err)
{
    struct complete *c = arg;
    veil_call *call = c->call;
    const gw_app *app = &f->app;
    Veil__Gateway__CompleteLoginResponse resp = VEIL__GATEWAY__COMPLETE_LOGIN_RESPONSE__INIT;
    if (!err && !(err = sign_assertion(c->gw, call, app, &c->r, &resp.assertion))) {
        resp.sub = (char *)c->r.sub;
        resp.previous_sub = (char *)c->r.previous_sub;
        resp.n_released = gw_scope_names(call, c->r.granted, &resp.released);
        resp.n_withheld =
            gw_login_withheld(call, c->r.requested, app->scope, c->r.granted, &resp.withheld);
    }
    gw_metrics_login(c->gw, call, err, &resp);
    VEIL_REPLY(c->done, call, err, &resp); /* deferred: sent now, and call may be gone */
}

static void complete_resumed(veil_call *call, void *arg)
{
    (void)call;
    struct complete *c = arg;
    c->step(c->flow);
}

static void complete_block(void *arg, gw_login_flow *f, void (*step)(gw_login_flow *f))
{
    struct complete *c = arg;
    c->step = step;
    c->flow = f;
    if (veil_call_resume(c->call, complete_resumed, c) != 0)
        step(f); /* the workers are full or stopped (a drain): here, then */
}

static const gw_login_door complete_door = {complete_finish, complete_block};

static void complete_start(veil_call *call, void *arg)
{
    struct complete *c = arg;
    gw_login_start(c->gw, call, &c->app, &c->in, 0, &c->r, &complete_door, c);
}

/* The gRPC door: the calling app by its certificate, then the one login function. */
static void gw_login_complete_login(Veil__Gateway__Login_Service *svc,
                                    const Veil__Gateway__CompleteLoginRequest *req,
                                    Veil__Gateway__CompleteLoginResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, login);
    Veil__Gateway__CompleteLoginResponse resp = VEIL__GATEWAY__COMPLETE_LOGIN_RESPONSE__INIT;
    gw_app app;
    struct complete *c = veil_call_alloc(call, sizeof *c);
    veil_err err = c ? gw_calling_app(gw, call, &app) : VEIL_ERR_NOMEM;
    if (err) {
        gw_metrics_login(gw, call, err, &resp);
        VEIL_REPLY(done, call, err, &resp);
        return;
    }
    *c = (struct complete){.gw = gw,
                           .call = call,
                           .done = done,
                           .app = app,
                           .in = {.ticket = req->ticket,
                                  .presentation = req->presentation,
                                  .card = req->card,
                                  .attributes = req->attributes,
                                  .n_attributes = req->n_attributes}};
    gw_hops_begin(gw, call, complete_start, c);
}

static void gw_login_get_jwks(Veil__Gateway__Login_Service *svc, const Veil__Empty *req,
                              Veil__Gateway__JwksResponse_Closure done, void *call)
{
    Veil__Gateway__JwksResponse resp = VEIL__GATEWAY__JWKS_RESPONSE__INIT;
    char *jwks = gw_keys_jwks(&GW_OF(svc, login)->keys);
    resp.jwks = jwks ? veil_call_strdup(call, jwks) : NULL;
    free(jwks);
    VEIL_REPLY(done, call, resp.jwks ? VEIL_OK : VEIL_ERR_NOMEM, &resp);
}

const Veil__Gateway__Login_Service gw_login_rpc = VEIL__GATEWAY__LOGIN__INIT(gw_login_);

const veil_method_policy gw_login_policy[] = {
    /* CPU only until its challenge is stored, then deferred (hops.c) */
    {"BeginLogin", VEIL_PEER_APP, VEIL_EXEC_INLINE},
    /* CPU only until its first hop, then deferred: no thread waits for a login (hops.c) */
    {"CompleteLogin", VEIL_PEER_APP, VEIL_EXEC_INLINE},
    /*
     * Apps (and the admin) with their certificates; phones get the same keys
     * from Wallet/GetKeys.  Served from memory (gw_keys_jwks), so inline.
     */
    {"GetJwks", VEIL_PEER_APP | VEIL_PEER_ADMIN, VEIL_EXEC_INLINE},
    {"PollEvents", VEIL_PEER_APP, VEIL_EXEC_WORKER},
};
const size_t gw_login_policy_len = sizeof gw_login_policy / sizeof gw_login_policy[0];

const veil_method_limit gw_login_limits[] = {
    {"BeginLogin", GW_REQ_SMALL},
    {"CompleteLogin", GW_REQ_SIGNED},
    {"GetJwks", GW_REQ_EMPTY},
    {"PollEvents", GW_REQ_SMALL},
};
const size_t gw_login_limits_len = sizeof gw_login_limits / sizeof gw_login_limits[0];
