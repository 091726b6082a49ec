/*
 * e2e.h - helpers for suites that drive the whole stack as its users do: a
 * citizen's wallet, apps with their certificates, the admin.
 */
#ifndef VEIL_TEST_E2E_H
#define VEIL_TEST_E2E_H

#include <jansson.h>

#include "stack.h"
#include "veil/gateway.pb-c.h"
#include "wallet.h"

/* A valid GB 11643 ID number from its first 17 digits (writes the check character). */
void e2e_id_number(const char *first17, char out[19]);

/* Enrols a fresh wallet for (id number, name); returns it or fails the test. */
vw_wallet *e2e_enrol(h_stack *s, const char *id_number, const char *name);

/* Enrolment that may fail: the status code, response in *resp (NULL on error). */
/*
 * Seals the identity vw_attest put in req to the vault, as a phone does
 * (Wallet/GetKeys first when the wallet has no vault key yet); the sealed
 * bytes go into out.
 */
void e2e_seal(h_stack *s, vw_wallet *w, Veil__Gateway__WalletEnrolRequest *req,
              unsigned char out[VEIL_ENROL_SEALED_BYTES]);

veil_err e2e_try_enrol(h_stack *s, vw_wallet *w, const char *id_number, const char *name,
                       Veil__Gateway__WalletEnrolResponse **resp, veil_status *st);

/* The same with the proofing done at attested_at_ms (Unix ms), e.g. a while ago. */
veil_err e2e_try_enrol_at(h_stack *s, vw_wallet *w, const char *id_number, const char *name,
                          int64_t attested_at_ms, Veil__Gateway__WalletEnrolResponse **resp,
                          veil_status *st);

/*
 * An app's whole login: BeginLogin as app/<app_id>, a ticket from the wallet,
 * CompleteLogin requesting attrs (n of them).  *resp is malloc'd (free with
 * protobuf_c_message_free_unpacked) or NULL.
 */
veil_err e2e_login(h_stack *s, const char *app_id, const vw_wallet *w, const char *const *attrs,
                   size_t n, Veil__Gateway__CompleteLoginResponse **resp, veil_status *st);

/* BeginLogin only; the challenge is copied into out (32 bytes). */
veil_err e2e_challenge(h_stack *s, const char *app_id, unsigned char out[32]);

/* CompleteLogin with a given ticket, as app_id. */
veil_err e2e_complete(h_stack *s, const char *app_id, const char *ticket, const char *const *attrs,
                      size_t n, Veil__Gateway__CompleteLoginResponse **resp, veil_status *st);

/* A device-signed Wallet call (method name as in the .proto); *resp malloc'd or NULL. */
veil_err e2e_citizen(h_stack *s, const vw_wallet *w, const char *method,
                     const ProtobufCMessage *payload, void *resp, veil_status *st);

/* A call to the gateway's Admin (on its admin listener), Login or Wallet service as identity. */
veil_err e2e_call(h_stack *s, const char *identity, const ProtobufCServiceDescriptor *svc,
                  const char *method, const ProtobufCMessage *req, void *resp, veil_status *st);

/* Grants consent for attrs to app with a purpose, valid for a day. */
/* As e2e_citizen, asserting that it succeeded; the reply is freed. */
void e2e_citizen_ok(h_stack *s, const vw_wallet *w, const char *method,
                    const ProtobufCMessage *payload);
/* The citizen unlinks app (a fresh pseudonym at the next login unless relinked). */
void e2e_unlink(h_stack *s, const vw_wallet *w, const char *app);
/* The citizen withdraws consent to app for attrs (n 0: every attribute). */
void e2e_withdraw(h_stack *s, const vw_wallet *w, const char *app, const char *const *attrs,
                  size_t n);

/* e2e_call on the Admin API as admin/ops. */
veil_err e2e_admin(h_stack *s, const char *method, const ProtobufCMessage *req, void *resp,
                   veil_status *st);
/* An admin sets the identity of w's citizen to state ("suspended", "active", ...) for reason. */
void e2e_set_identity(h_stack *s, const vw_wallet *w, const char *state, const char *reason);

void e2e_grant(h_stack *s, const vw_wallet *w, const char *app, const char *const *attrs, size_t n);
/* The same with the purpose given. */
void e2e_grant_for(h_stack *s, const vw_wallet *w, const char *app, const char *const *attrs,
                   size_t n, const char *purpose);

/* The gateway's JWKS as JSON text (malloc'd). */
char *e2e_jwks(h_stack *s);

/* What follows "kid":" in a JWS's header (static storage), or "". */
const char *e2e_kid_of(const char *jws);

/*
 * Verifies assertions with an independent JOSE implementation (Debian's
 * python3-jwt) against jwks: signature, kid, alg EdDSA, audience, expiry.
 * Returns how many verified.
 */
int e2e_verify_with_pyjwt(const char *jwks, char *const *tokens, char *const *audiences, size_t n);

/*
 * Waits until every event made so far is released to apps: the harness runs
 * the gateway with one-second event batches settled for 200 ms
 * (tests/harness/stack.c), so 1.3 s after an event it is out.
 */
/* PollEvents as app (identity app/<app>) from cursor (NULL: the start); asserts it succeeded. */
Veil__Gateway__PollEventsResponse *e2e_poll(h_stack *s, const char *app, const char *cursor);

/*
 * How many of ev's events (polled as app) are of kind ("app_unlinked") with
 * subject sub; every event's signature must verify against the gateway's
 * JWKS and its audience must be app.
 */
int e2e_events_of(h_stack *s, const Veil__Gateway__PollEventsResponse *ev, const char *app,
                  const char *kind, const char *sub);

void e2e_await_events(void);

/* GET /metrics on 127.0.0.1:port (a service's VEIL_METRICS_ADDR); the body, malloc'd. */
char *e2e_scrape(int port);
/* The value of the sample whose line starts with series (name{labels}) in text, or -1. */
double e2e_sample(const char *text, const char *series);

/* Frees a message the calls above unpacked; NULL is fine. */
void e2e_free(void *m);

/* The claims of a compact JWS, not verified (tests check signatures with e2e_verify_with_pyjwt). */
json_t *e2e_claims(const char *token);

#endif
