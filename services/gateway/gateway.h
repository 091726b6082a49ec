/*
 * gateway.h - the gateway: veil's only ingress.
 *
 * Three gRPC services share one port: Login (apps, by client certificate),
 * Wallet (citizens' phones, TLS without a client certificate, each request
 * device-signed) and Admin (the admin identity).  The gateway owns the app
 * registry, the login challenges and the choice of signing and pseudonym key
 * versions; everything about people lives in the vault, consent and
 * revocation services, which it calls with its own certificate.
 *
 * Files: main.c (configuration, wiring, background threads), login.c,
 * wallet.c, admin.c, events.c (the RPC handlers), registry.c (the in-memory
 * app registry), keys.c (assertion keys, JWKS, key rotation state), cache.c
 * (revocation and consent caches fed by the change feeds), downstream.c
 * (calls to the internal services), store.c (the only file speaking SQL).
 */
#ifndef VEIL_GATEWAY_H
#define VEIL_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "veil/client.h"
#include "veil/common.pb-c.h"
#include "veil/consent.pb-c.h"
#include "veil/formats.h"
#include "veil/gateway.pb-c.h"
#include "veil/keys.h"
#include "veil/revocation.pb-c.h"
#include "veil/rpc.h"
#include "veil/vault.pb-c.h"

struct gw_store;
struct gw_cache;
struct veil_follower;

/* ---- the app registry (registry.c) ---- */

typedef struct gw_app {
    char id[65];
    char sector[65];
    char kind[16];          /* "public_service", "commercial" or "venue" */
    char status[16];        /* "active" or "suspended" */
    unsigned scope;         /* bit i: catalogue entry i is registered */
    char cert_identity[256];
    int sector_fixed;       /* a login completed: the sector may not change */
    char *name;             /* owned by the registry snapshot */
    char *organisation;
    /* OpenID Connect registration (oidc.c); the strings are owned like name */
    char token_auth[24];  /* "tls_client_auth" or "private_key_jwt" */
    char id_token_alg[8]; /* "EdDSA" or "RS256" */
    char *redirect_uris;  /* space-separated; "" when the app does not use OIDC */
    char *jwks;           /* the app's public JWK set, or "" */
    char *purposes;       /* JSON object: attribute -> purpose */
} gw_app;

typedef struct gw_registry {
    pthread_rwlock_t lock;
    gw_app *apps;           /* sorted by id */
    size_t n;
    int64_t version;        /* registry_version it was loaded at */
} gw_registry;

/* Looks an app up by id and copies it into *out (names not copied). 0 if found. */
int gw_registry_get(gw_registry *r, const char *id, gw_app *out);
/* The same, with the name and organisation copied into the call's arena. */
int gw_registry_get_named(gw_registry *r, veil_call *call, const char *id, gw_app *out);

/* Marks an app's sector fixed in the loaded snapshot (after gw_store_fix_sector). */
void gw_registry_fix_sector(gw_registry *r, const char *id);

/*
 * As gw_registry_get, with every string copied (malloc'd): release them with
 * gw_app_clear.
 */
int gw_registry_get_full(gw_registry *r, const char *id, gw_app *out);
void gw_app_clear(gw_app *app);

/* Replaces the contents (takes ownership of apps, an array of n sorted by id). */
void gw_registry_replace(gw_registry *r, gw_app *apps, size_t n, int64_t version);

void gw_registry_free(gw_registry *r);

/*
 * Allocates *slots (one pointer per app) in the call's arena, then calls fn
 * for every app under the read lock; fn copies what it needs into the arena.
 */
veil_err gw_registry_each(gw_registry *r, veil_call *call, void ***slots,
                          void (*fn)(const gw_app *app, void *ctx), void *ctx);

/* Frees an array of apps as gw_store_load_apps returns it. */
void gw_apps_free(gw_app *apps, size_t n);

/* Whether kind is an app kind: public_service, commercial or venue (issue 17). */
int gw_kind_valid(const char *kind);
/* Whether apps of this kind may hold derived attributes only (commercial apps, venues). */
int gw_kind_derived_only(const char *kind);

/* Attribute names <-> scope bits over the catalogue of veil/formats.h. */
unsigned gw_scope_bit(const char *attribute); /* 0 when not in the catalogue */
/* The scope bits of raw personal data (full_name, gender, birth_date). */
unsigned gw_scope_raw(void);
/* Parses "a,b,c"; returns -1 on an unknown name (its name into bad, if given). */
int gw_scope_parse(const char *csv, unsigned *scope, char *bad, size_t badlen);
/* Writes the names of a scope, comma-separated, into out. */
void gw_scope_format(unsigned scope, char *out, size_t len);
/* The names of a scope as a call-arena array; returns how many. */
size_t gw_scope_names(veil_call *call, unsigned scope, char ***names);

/* ---- keys (keys.c) ---- */

typedef struct gw_keys {
    veil_keyring *ring;                     /* assertion-<N>.key */
    pthread_mutex_t lock;                   /* serialises growing `signers` */
    veil_signer *signers[VEIL_KEYRING_MAX]; /* append-only, like the keyring */
    _Atomic size_t n_signers;
    _Atomic uint32_t assertion_current, assertion_previous;
    _Atomic uint32_t pseudonym_current, pseudonym_previous;
    _Atomic uint32_t receipt_current, receipt_previous; /* the consent service's receipt keys */
    _Atomic int64_t state_version;          /* key_state rows as last loaded */
    /* The JWKS text as last built, for these current/previous versions and signers (lock). */
    char *jwks;
    uint32_t jwks_current, jwks_previous;
    size_t jwks_signers;
    veil_keyring *auditref_ring;            /* auditref-1.key: keys identity references */
    const veil_key *auditref;               /* its version 1 (never rotated: see audit.c) */
} gw_keys;

veil_err gw_keys_open(gw_keys *k, const char *dir, char *errbuf, size_t errlen);
void gw_keys_close(gw_keys *k);
/* The signer of a version (loading new key files on a miss), or NULL. */
const veil_signer *gw_keys_signer(gw_keys *k, uint32_t version);
/* Loads assertion key files added since (SIGHUP, key folder watch); the one in use stays. */
void gw_keys_reload(gw_keys *k);
/*
 * The JWKS: current, previous and any newer (pre-published) assertion keys.
 * Built once per change of those (rotation, a reload that added a key) and
 * served from memory: a call never scans the key folder.
 */
char *gw_keys_jwks(gw_keys *k); /* malloc'd JSON */

/*
 * Largest requests the public port accepts, per method (the policy tables'
 * max_request_bytes; the dispatcher refuses bigger ones on arrival with
 * RESOURCE_EXHAUSTED, before a worker, the database or a signature check):
 * empty requests, small ones (an enrolment's sealed identity, a challenge
 * request, an event cursor), and device-signed requests or logins (a ticket
 * of at most 1 KiB, a signed payload, attribute names and a purpose).
 */
#define GW_REQ_EMPTY  256
#define GW_REQ_SMALL  4096
#define GW_REQ_SIGNED 8192

/* ---- the gateway ---- */

/*
 * The login's batched hops (hops.c): challenge, ticket, pseudonym and
 * release, BeginLogin's challenge, and the cache misses' revocation verdict and consent.
 */
enum {
    GW_HOP_TAKE,
    GW_HOP_VERIFY,
    GW_HOP_FINISH,
    GW_HOP_AUTHORIZE,
    GW_HOP_CHECK,
    GW_HOP_PUT,
    GW_HOP__COUNT
};
#define GW_BATCH_MAX 256 /* the vault's, revocation's and consent's limit for one batched call */

struct gateway {
    Veil__Gateway__Login_Service login;
    Veil__Gateway__Wallet_Service wallet;
    Veil__Gateway__Admin_Service admin;
    Veil__Gateway__Counter_Service counter; /* counter.c: cards (issue 17) */
    struct gw_store *store;
    veil_channel *vault, *consent, *revocation, *pseudonym;
    gw_registry registry;
    gw_keys keys;
    struct gw_cache *cache;
    struct veil_follower *feeds[2]; /* revocation, consent: invalidate the cache */
    veil_server *admin_server;      /* the Admin API's own listener (GATEWAY_ADMIN_ADDR) */
    _Atomic int64_t key_overlap_since_ms[2]; /* assertion, pseudonym: 0 when no overlap */
    const char *issuer;
    const char *trust_domain;
    int64_t assertion_ttl_s, challenge_ttl_s, rpc_timeout_ms;
    int64_t event_batch_ms, event_settle_ms; /* PollEvents' release (events.c) */
    pthread_t poller;
    int poller_started;
    struct gw_oidc *oidc; /* the OpenID Connect door (oidc.c), or NULL */
    _Atomic int stopping;
    _Atomic int64_t scopes_version; /* registry version the vault last accepted (-1: none) */
    struct veil_batcher *hops[GW_HOP__COUNT];   /* the login's batched hops (hops.c, GW_HOP_*) */
    int hops_alone; /* GATEWAY_LOGIN_BATCH_MAX=1: each hop runs at once on its login's thread */
};

#define GW_OF(svc, member) ((struct gateway *)((char *)(svc)-offsetof(struct gateway, member)))

/* Handler tables and policies (login.c, wallet.c, admin.c); PollEvents is in events.c. */
void gw_login_poll_events(Veil__Gateway__Login_Service *svc,
                          const Veil__Gateway__PollEventsRequest *req,
                          Veil__Gateway__PollEventsResponse_Closure done, void *call);
extern const Veil__Gateway__Login_Service gw_login_rpc;
extern const veil_method_policy gw_login_policy[];
extern const size_t gw_login_policy_len;
/* The phone's side of OpenID Connect login requests (loginreq.c). */
void gw_wallet_get_login_request(Veil__Gateway__Wallet_Service *svc,
                                 const Veil__Gateway__LoginRequestRef *req,
                                 Veil__Gateway__LoginRequestInfo_Closure done, void *call);
void gw_wallet_approve_login(Veil__Gateway__Wallet_Service *svc,
                             const Veil__Gateway__SignedRequest *req,
                             Veil__Gateway__ApproveLoginResponse_Closure done, void *call);
void gw_wallet_deny_login(Veil__Gateway__Wallet_Service *svc,
                          const Veil__Gateway__SignedRequest *req, Veil__Empty_Closure done,
                          void *call);
extern const Veil__Gateway__Wallet_Service gw_wallet_rpc;
extern const veil_method_policy gw_wallet_policy[];
extern const size_t gw_wallet_policy_len;
/* The public port's request size limits (GW_REQ_*), beside the policies. */
extern const veil_method_limit gw_login_limits[], gw_wallet_limits[];
extern const size_t gw_login_limits_len, gw_wallet_limits_len;
extern const Veil__Gateway__Admin_Service gw_admin_rpc;
extern const veil_method_policy gw_admin_policy[];
extern const size_t gw_admin_policy_len;
extern const Veil__Gateway__Counter_Service gw_counter_rpc;
extern const veil_method_policy gw_counter_policy[];
extern const size_t gw_counter_policy_len;

/*
 * Calls method on one of the internal services on behalf of call, within the
 * call's remaining budget; the reply is allocated in the call's arena.  A
 * failure is recorded on call (status and a message safe to show the
 * caller) and returned.
 */
veil_err gw_downstream(struct gateway *gw, veil_call *call, veil_channel *ch, const char *method,
                       const ProtobufCMessage *req, void *resp);

/*
 * Enrols through the vault with an identity the phone (or the counter's
 * device) sealed to it: refuses an empty seal (INVALID_ARGUMENT), otherwise
 * sets vr->sealed_identity and forwards vr unread; *out as gw_downstream.
 * Shared by Wallet/Enrol and Counter/IssueCard.
 */
veil_err gw_enrol_sealed(struct gateway *gw, veil_call *call, Veil__Vault__EnrolRequest *vr,
                         ProtobufCBinaryData sealed, Veil__Vault__EnrolResponse **out);

/*
 * Records a failed downstream call of method (err and the peer's status st,
 * as veil_channel_call gives them) on call, as gw_downstream does, and
 * returns the error the caller reads.
 */
veil_err gw_downstream_failed(veil_call *call, const char *method, veil_err err,
                              const veil_status *st);

/*
 * The login's batched hops (hops.c, issue 15 levers 1 and 2): each goes
 * with the other logins at that hop in one statement or batched call, and
 * answers exactly as the unbatched call did.  None waits: each returns at
 * once, and then(arg, err) runs later on the hop's thread (at once, on the
 * caller's, when out of memory).  Every input and output must live until
 * then (in the call's arena).
 */
typedef void (*gw_hop_then)(void *arg, veil_err err);
veil_err gw_hops_start(struct gateway *gw, size_t max_batch);
void gw_hops_stop(struct gateway *gw);
/* Consumes a challenge (gw_store_challenge_take): VEIL_ERR_NOT_FOUND, a store error or OK. */
void gw_take_challenge(struct gateway *gw, veil_call *call, const unsigned char challenge[32],
                       const char *app_id, gw_hop_then then, void *arg);
/*
 * Stores a fresh challenge for app_id, batched: then(arg, err) later
 * (BeginLogin), or waiting on this thread (the OpenID Connect door).
 */
void gw_put_challenge_then(struct gateway *gw, veil_call *call, const unsigned char challenge[32],
                           const char *app_id, int64_t expires_at_ms, gw_hop_then then, void *arg);
veil_err gw_put_challenge(struct gateway *gw, const unsigned char challenge[32],
                          const char *app_id, int64_t expires_at_ms);
/*
 * Defers call and runs fn(call, arg) where its hops may run: at once on
 * this thread, or on a worker when batching is off (hops_alone: the hops
 * then run on the thread that submits them, which must be able to block).
 */
void gw_hops_begin(struct gateway *gw, veil_call *call, void (*fn)(veil_call *call, void *arg),
                   void *arg);
/* The vault's VerifyTicket, as gw_downstream would make it (failure recorded on call). */
void gw_verify_ticket(struct gateway *gw, veil_call *call, Veil__Vault__VerifyTicketRequest *req,
                      Veil__Vault__VerifyTicketResponse **out, gw_hop_then then, void *arg);
/*
 * A cache miss's revocation Authorize and consent Check (issue 15), as
 * gw_downstream would make them, batched with the other misses at that hop
 * (AuthorizeBatch, CheckBatch).
 */
void gw_authorize(struct gateway *gw, veil_call *call, Veil__Revocation__StatusRequest *req,
                  Veil__Revocation__StatusResponse **out, gw_hop_then then, void *arg);
void gw_check_consent(struct gateway *gw, veil_call *call, Veil__Consent__CheckRequest *req,
                      Veil__Consent__CheckResponse **out, gw_hop_then then, void *arg);
/*
 * The pseudonym service's Derive and, when ra is not NULL, the vault's
 * ReleaseAttributes, at once (one wait); replies in call's arena, the
 * first failure (Derive's, then the release's) recorded on call.
 */
struct Veil__Pseudonym__DeriveRequest;
struct Veil__Pseudonym__DeriveResponse;
void gw_derive_release(struct gateway *gw, veil_call *call,
                       const struct Veil__Pseudonym__DeriveRequest *dr,
                       Veil__Vault__ReleaseAttributesRequest *ra,
                       struct Veil__Pseudonym__DeriveResponse **p,
                       Veil__Vault__ReleaseAttributesResponse **released, gw_hop_then then,
                       void *arg);

/*
 * Verifies a citizen's signed request through the vault and unpacks its
 * payload (of type desc) into the call's arena.  On VEIL_OK *payload, the
 * subject reference (32 bytes) and the device id are set.
 */
veil_err gw_citizen(struct gateway *gw, veil_call *call, const Veil__Gateway__SignedRequest *req,
                    const ProtobufCMessageDescriptor *desc, void *payload,
                    ProtobufCBinaryData *subject, char **device_id);

/* A change made through the gateway, for the citizen's access log (docs/vault.md). */
typedef struct gw_change {
    const char *action; /* one of the vault's gateway actions, e.g. "consent_granted" */
    const char *app_id; /* NULL: no app concerned */
    char **attributes;
    size_t n_attributes;
    const char *purpose, *actor, *detail; /* NULL reads as "" */
} gw_change;

/*
 * A receipted consent grant through the consent service, recorded in the
 * access log: what GrantConsent and an approved OpenID Connect login share.
 * *out (the receipt) is in the call's arena.
 */
struct Veil__Consent__GrantResponse;
veil_err gw_grant_consent(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject,
                          const gw_app *app, char **attributes, size_t n, const char *purpose,
                          int64_t expires_at_ms, struct Veil__Consent__GrantResponse **out);

/*
 * What an app reads when a login is refused for anything about the citizen
 * (identity, device, phone clock, an erased or unknown device): one status
 * (PERMISSION_DENIED) and this message; the reason goes to the citizen's
 * access log ("login_refused", detail = the reason).
 */
#define GW_LOGIN_REFUSED "login refused"

/* Records ch in the subject's access log through the vault; fails the call if it cannot. */
veil_err gw_log_change(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject,
                       const gw_change *ch);
/*
 * The one login function every door goes through (gRPC CompleteLogin,
 * OpenID Connect, a venue redeeming a presentation, a card): a door only
 * translates its input into this.  Exactly one credential: a phone's
 * ticket (answering BeginLogin's challenge), a presentation shown in person
 * (venue apps only) or a card and its PIN.  Strings are borrowed.
 */
typedef struct gw_login_in {
    const char *ticket;
    const char *presentation;
    const Veil__CardCredential *card;
    char *const *attributes; /* requested attribute names */
    size_t n_attributes;
} gw_login_in;

/* acr values of assertions (amr: ["pop"] for a phone's key, ["pin"] for a card). */
#define GW_ACR_PHONE "urn:veil:acr:phone"
#define GW_ACR_CARD  "urn:veil:acr:card"


/*
 * Erases the identity of subject everywhere (erase.c): keeps an authority's
 * hold, stops logins, forgets it in consent and revocation (each linked app
 * gets an identity_erased event holding its pseudonyms), then the vault
 * record.  Idempotent: a failed call can be repeated.
 */
veil_err gw_erase_identity(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject);

/* What a login produced, before any door turns it into its token. */
typedef struct gw_login_result {
    const char *sub, *previous_sub; /* the app's pseudonym(s), in the call's arena */
    unsigned requested, granted;    /* scope bits */
    const Veil__Vault__ReleaseAttributesResponse *released; /* NULL when nothing granted */
    int card;                       /* authenticated by card and PIN (acr) */
    int64_t auth_time_ms;
} gw_login_result;

/*
 * The login itself, for every door (login.c): verifies the credential
 * through the vault, checks revocation, decides the release and derives the
 * pseudonym into out (strings in the call's arena); each door turns it
 * into its own token (CompleteLogin's assertion, OpenID Connect's ID token
 * at /token).  fresh_consent asks the consent service rather than the cache
 * (the caller has just granted).  On failure the call carries the status
 * and message.
 *
 * gw_login_start returns at once (issue 15 lever 2): the login goes on in
 * the batched hops' continuations (hops.c), and no thread waits for it.  A
 * door says how it ends and where its blocking steps run:
 *   finish(arg, flow, err)   the login's end, once: out is set on VEIL_OK;
 *   block(arg, flow, step)   runs step(flow) on a thread that may block
 *                            (the access log of a refusal, the app's first
 *                            login fixing its sector), never on the hop's.
 * gw_login_run is the synchronous door (OpenID Connect, login requests):
 * it waits on the calling thread, which also runs the blocking steps.
 */
typedef struct gw_login_flow gw_login_flow;
typedef struct gw_login_door {
    void (*finish)(void *arg, gw_login_flow *flow, veil_err err);
    void (*block)(void *arg, gw_login_flow *flow, void (*step)(gw_login_flow *flow));
} gw_login_door;
void gw_login_start(struct gateway *gw, veil_call *call, const gw_app *app,
                    const gw_login_in *in, int fresh_consent, gw_login_result *out,
                    const gw_login_door *door, void *door_arg);
veil_err gw_login_run(struct gateway *gw, veil_call *call, const gw_app *app,
                      const gw_login_in *in, int fresh_consent, gw_login_result *out) VEIL_WUR;

/*
 * Appends the released attributes to a JSON object being written, each as
 * ",name:value": veil's names, or OpenID Connect's when oidc.  Only what
 * consent granted; byte for byte what json_dumps(JSON_COMPACT) wrote of the
 * jansson members that carried them before.  One function for both doors.
 */
struct veil_buf;
void gw_login_claims(struct veil_buf *b, const gw_login_result *r, int oidc);

/*
 * The login assertion's claims as compact JSON (docs/internals/signed-
 * formats.md): iss, aud, sub, iat, exp, jti, previous_sub (when there is
 * one), acr, amr, then the released attributes.  Returns -1 when a string
 * that must be there is not UTF-8 or memory ran out.
 */
int gw_assertion_payload(struct veil_buf *b, const char *iss, const char *aud, long long iat,
                         long long exp, const char *jti, const gw_login_result *r);

/*
 * The login's result as the OpenID Connect ID token and /userinfo carry it:
 * {"sub","auth_time","acr","amr", then the claims under OpenID Connect's
 * names}; malloc'd (wipe and free it), NULL on failure.
 */
char *gw_oidc_result_json(const gw_login_result *r);

/* The requested attributes not released, and why, as a call-arena array; returns how many. */
size_t gw_login_withheld(veil_call *call, unsigned requested, unsigned registered, unsigned granted,
                         Veil__Gateway__Withheld ***out);

/* ---- the admin audit log (audit.c) ---- */

#define GW_AUDIT_REF_LEN 32 /* hex characters of an identity reference */

/* What one admin call did, for gw_audit (NULL reads as ""). */
typedef struct gw_audit_entry {
    const char *method;     /* the Admin RPC */
    const char *app_id;     /* the app acted on */
    const char *web_number; /* the identity acted on: recorded only as its reference */
    const char *detail;     /* e.g. "state=revoked" */
    const char *reason;     /* the admin's stated reason */
} gw_audit_entry;

/* The identity reference of a web number: keyed BLAKE2b-128 under key, in hex. */
void gw_audit_ref(const veil_key *key, const char *web_number, char out[GW_AUDIT_REF_LEN + 1]);

/* Whether a reason holds neither an ID number (15+ digits in a row) nor a web number. */
int gw_audit_reason_ok(const char *reason);

/*
 * Records the admin call in the audit log with its result (err) and returns
 * err; when the log cannot be written a successful call is failed with
 * UNAVAILABLE (the change is made; an unaudited success must not look like
 * one).  Call it last in every Admin handler.
 */
veil_err gw_audit(struct gateway *gw, veil_call *call, const gw_audit_entry *e, veil_err err);

/* The app calling (registered, certificate identity matching); fails the call if not. */
veil_err gw_calling_app(struct gateway *gw, veil_call *call, gw_app *app);

/* Reloads the registry and key state from the database when they changed. */
veil_err gw_refresh(struct gateway *gw, int force);

/*
 * Tells the vault every app's registered scope (Vault/SetAppScopes) when the
 * registry changed since the vault last accepted it: the vault releases
 * nothing outside it.  A failure is returned and retried by the next refresh.
 */
veil_err gw_push_scopes(struct gateway *gw);

/* Fails the call for an unexpected store error: UNAVAILABLE when retrying may help. */
veil_err gw_store_failed(veil_call *call, veil_err err);

/* Validates a purpose / display text: 1..max bytes of printable UTF-8. */
int gw_text_ok(const char *s, size_t max);

/* ---- metrics (metrics.c) ---- */

/* Registers the gateway's families and its scrape-time collector. */
void gw_metrics_start(struct gateway *gw);
/* Removes the collector (before gw is freed). */
void gw_metrics_stop(struct gateway *gw);
/*
 * Counts a finished login: by app kind, door ("grpc", "oidc") and outcome,
 * and (when err is VEIL_OK) the attributes it released.
 */
void gw_metrics_login_done(const char *kind, const char *door, veil_err err,
                           char *const *released, size_t n_released);
/* Counts a finished CompleteLogin (door "grpc"). */
void gw_metrics_login(struct gateway *gw, veil_call *call, veil_err err,
                      const Veil__Gateway__CompleteLoginResponse *resp);
/* Refreshes when each key kind's overlap began (the poller, every 30 s). */
void gw_metrics_refresh_keys(struct gateway *gw);

#endif
