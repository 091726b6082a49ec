/*
 * consent.h - the consent service: purpose-bound, expiring grants of
 * attributes to apps, each with a receipt signed by the service, and the
 * change feed and app events that follow them (docs/consent.md).
 *
 * handlers.c validates and answers; receipt.c builds and signs receipts;
 * store.c, the only file that talks to PostgreSQL, keeps the grants, one
 * transaction per mutation, recording every change in the feed within it.
 */
#ifndef VEIL_CONSENT_H
#define VEIL_CONSENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "veil/consent.pb-c.h"
#include "veil/feed.h"
#include "veil/feedlog.h"
#include "veil/keys.h"
#include "veil/migrate.h"
#include "veil/rpc.h"

#define CONSENT_SUBJECT_BYTES    32
#define CONSENT_ATTRIBUTES_MAX   16
#define CONSENT_BATCH_MAX        256 /* items of one CheckBatch */
#define CONSENT_PURPOSE_MAX      200                        /* bytes */
#define CONSENT_EXPIRY_MAX_MS    (INT64_C(1826) * 86400000) /* five years, leap days included */
#define CONSENT_RECEIPT_ID_BYTES 16                         /* random; base64url in text */
#define CONSENT_RECEIPT_TYP      "veil-consent-receipt+jwt"
#define CONSENT_RECEIPT_ISS      "veil-consent"

struct consent_store;

/* The receipt signers, one per loaded key version; append-only. */
struct consent_signers {
    veil_signer *by_index[VEIL_KEYRING_MAX];
    atomic_size_t count;            /* published after the slot is written */
    _Atomic(veil_signer *) current; /* signs new receipts */
};

struct consent {
    Veil__Consent__Consent_Service rpc; /* first: handlers cast the service to this */
    struct consent_store *store;
    veil_notifier *notifier;
    veil_keyring *keys;
    uint32_t pinned_version; /* CONSENT_RECEIPT_KEY_VERSION, 0: follow the newest */
    struct consent_signers signers;
    _Atomic uint32_t signed_version; /* signed the last receipt (the gateway names it); metrics */
};

/* A grant about to be recorded; everything borrowed. */
struct consent_new_grant {
    const unsigned char *subject_ref;
    const char *app_id;
    char *const *attributes;
    size_t n_attributes;
    const char *purpose;
    int64_t granted_at_ms;
    int64_t expires_at_ms;
    const char *receipt_id;
    const char *receipt;
};

/* ---- receipt.c ---- */

/*
 * Signs the receipt of g (its receipt field is ignored) as a compact JWS;
 * *out is malloc'd.  The payload names the app, attributes, purpose and
 * times, never the subject.
 */
veil_err consent_receipt_sign(const veil_signer *s, const struct consent_new_grant *g,
                              char **out) VEIL_WUR;

/*
 * Creates signers for key versions loaded since the last call, then picks the
 * current one: the pinned version, or the newest when none is pinned.  Fails
 * (errbuf says why) when the pinned version is not loaded.
 */
veil_err consent_signers_update(struct consent *c, char *errbuf, size_t errlen) VEIL_WUR;

/*
 * The signer of a receipt key version (loading new key files on a miss), or
 * NULL; version 0 is the one chosen at start.  The gateway names the version
 * (its key_state "receipt", changed only by RotateKey).
 */
veil_signer *consent_signer_for(struct consent *c, uint32_t version);

/* The JWKS of every loaded receipt key; malloc'd JSON text, or NULL. */
char *consent_signers_jwks(struct consent_signers *s);

void consent_signers_free(struct consent_signers *s);

/* ---- store.c ---- */

/* Opens the store on conninfo (no connection yet).  Caller closes it. */
veil_err consent_store_open(const char *conninfo, struct consent_store **out) VEIL_WUR;
void consent_store_close(struct consent_store *s);

/* Records g; older live grants of the same attributes to the app end as superseded. */
veil_err consent_store_grant(struct consent_store *s, const struct consent_new_grant *g) VEIL_WUR;

/*
 * Withdraws the live grants of the listed attributes (n == 0: all of them)
 * to the app.  *withdrawn receives the names ended (arena memory from
 * alloc).  The app's event records view: how the app knows the subject now,
 * as the gateway tells it.  VEIL_ERR_NOT_FOUND: nothing was live.
 */
veil_err consent_store_withdraw(struct consent_store *s, const unsigned char *subject_ref,
                                const char *app_id, char *const *attributes, size_t n,
                                const veil_app_view *view, int64_t now_ms,
                                ProtobufCAllocator *alloc, char ***withdrawn,
                                size_t *n_withdrawn) VEIL_WUR;

/* Every grant of the subject, newest first, as List returns it. */
veil_err consent_store_list(struct consent_store *s, const unsigned char *subject_ref,
                            int64_t now_ms, ProtobufCAllocator *alloc,
                            Veil__Consent__ListResponse *resp) VEIL_WUR;

/* One Check's question, and where its answer goes; everything borrowed. */
struct consent_check_item {
    const unsigned char *subject_ref;
    const char *app_id;
    char *const *attributes; /* at least one */
    size_t n_attributes;
    Veil__Consent__CheckResponse *resp; /* initialised; granted filled with alloc */
};

/*
 * For each of n items (Check, or CheckBatch's items), of its listed
 * attributes those live for its app now, as Check returns them: all n in
 * one statement.
 */
veil_err consent_store_check(struct consent_store *s, struct consent_check_item *items, size_t n,
                             int64_t now_ms, ProtobufCAllocator *alloc) VEIL_WUR;

/* Deletes everything about the subject, redacting its feed history. */
veil_err consent_store_forget(struct consent_store *s, const unsigned char *subject_ref) VEIL_WUR;

/* The feed (a veil_feed_read_fn; ctx is the store) and one app's events. */
veil_err consent_store_changes(void *store, int64_t after_seq, uint32_t max,
                               ProtobufCAllocator *alloc, Veil__ChangesResponse *resp);
veil_err consent_store_app_events(struct consent_store *s, const char *app_id, int64_t after_seq,
                                  uint32_t max, ProtobufCAllocator *alloc,
                                  Veil__AppEventsResponse *resp) VEIL_WUR;

/* ---- handlers.c ---- */

extern const Veil__Consent__Consent_Service consent_rpc;
extern const veil_method_policy consent_policy[];
extern const size_t consent_policy_len;

/* ---- generated from db/consent ---- */

extern const veil_migration consent_migrations[];
extern const size_t consent_migrations_count;

#endif
