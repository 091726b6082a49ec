/*
 * revocation.h - the revocation service: the state of identities, devices,
 * app links and apps, the login-time decision built from it, and the change
 * feed that keeps the gateway's caches honest (docs/revocation.md).
 *
 * handlers.c validates and decides; store.c, the only file that talks to
 * PostgreSQL, reads and changes state, one transaction per mutation, and
 * records every change in the feed within that transaction.
 */
#ifndef VEIL_REVOCATION_H
#define VEIL_REVOCATION_H

#include <stddef.h>
#include <stdint.h>

#include "veil/feed.h"
#include "veil/migrate.h"
#include "veil/revocation.pb-c.h"
#include "veil/rpc.h"

#define REVOCATION_SUBJECT_BYTES 32
#define REVOCATION_REASON_MAX    200 /* bytes of an admin's free-text reason */
#define REVOCATION_BATCH_MAX     256 /* items of one AuthorizeBatch */

typedef Veil__Revocation__IdentityState revocation_identity_state;
typedef Veil__Revocation__AppState revocation_app_state;

struct revocation_store;

/* Everything a login decision depends on, read in one statement. */
struct revocation_facts {
    revocation_identity_state identity; /* ACTIVE when the subject has no row */
    int device_revoked;
    int app_revoked;
    int has_link;
    int linked;
    uint32_t epoch; /* 0 without a link */
    uint32_t key_version, previous_key_version; /* the link's last login's; 0: none */
};

struct revocation {
    Veil__Revocation__Revocation_Service rpc; /* first: handlers cast the service to this */
    struct revocation_store *store;
    veil_notifier *notifier;
};

/* ---- store.c ---- */

/* Opens the store on conninfo (no connection yet).  Caller closes it. */
veil_err revocation_store_open(const char *conninfo, struct revocation_store **out) VEIL_WUR;
void revocation_store_close(struct revocation_store *s);

/*
 * The facts about (subject, device, app); an empty device_id or app_id
 * leaves that part out (not revoked, no link).
 */
veil_err revocation_store_facts(struct revocation_store *s, const unsigned char *subject,
                                const char *device_id, const char *app_id,
                                struct revocation_facts *out) VEIL_WUR;

/* One look-up's key: a subject (32 bytes), a device id and an app id ("" leaves it out). */
struct revocation_key {
    const unsigned char *subject;
    const char *device_id;
    const char *app_id;
};

/* The facts of n keys in one statement: out[i] for keys[i]. */
veil_err revocation_store_facts_batch(struct revocation_store *s, const struct revocation_key *keys,
                                      size_t n, struct revocation_facts *out) VEIL_WUR;

/* Revokes a device; *changed is 0 when it already was (nothing recorded). */
veil_err revocation_store_revoke_device(struct revocation_store *s, const unsigned char *subject,
                                        const char *device_id, int *changed) VEIL_WUR;

/*
 * Moves the identity to state, fanning an app event out to every app the
 * subject is linked with; *changed is 0 when it already was in that state.
 * VEIL_ERR_PRECONDITION: the identity is revoked, which is final.
 */
veil_err revocation_store_set_identity(struct revocation_store *s, const unsigned char *subject,
                                       revocation_identity_state state, const char *reason,
                                       int *changed) VEIL_WUR;

/*
 * What an erasure of subject needs: its identity state and reason (ACTIVE and
 * "" without a row) and its linked apps with their epochs, allocated with
 * alloc into resp.
 */
veil_err revocation_store_erasure_plan(struct revocation_store *s, const unsigned char *subject,
                                       ProtobufCAllocator *alloc,
                                       Veil__Revocation__ErasurePlanResponse *resp) VEIL_WUR;

/*
 * Forgets subject in one transaction: its identity, revoked devices and app
 * links are deleted, its feed changes redacted and app events dropped; one
 * "subject_forgotten" change without a subject, then one identity_erased
 * event per notice (the app's pseudonyms, no subject reference).
 */
veil_err revocation_store_forget(struct revocation_store *s, const unsigned char *subject,
                                 Veil__Revocation__ErasureNotice *const *notices,
                                 size_t n) VEIL_WUR;

/* Unlinks an app; *epoch is the link's epoch.  VEIL_ERR_NOT_FOUND: not linked. */
veil_err revocation_store_unlink(struct revocation_store *s, const unsigned char *subject,
                                 const char *app_id, uint32_t *epoch) VEIL_WUR;

/*
 * Re-links an unlinked app, under a fresh epoch unless keep; *epoch is the
 * result.  VEIL_ERR_NOT_FOUND: never linked; VEIL_ERR_PRECONDITION: linked.
 */
veil_err revocation_store_relink(struct revocation_store *s, const unsigned char *subject,
                                 const char *app_id, int keep, uint32_t *epoch) VEIL_WUR;

/*
 * What a batch of logins writes (AuthorizeBatch; Authorize is its batch of
 * one), all in one transaction: for each item with link set, the login's
 * link - a missing one created at epoch 0 (not a change: nothing cached
 * becomes wrong) or an unlinked one re-linked under a fresh epoch (a change)
 * - and *epoch the link's epoch afterwards; for each item with key_version
 * set, the pseudonym key versions the login gives the app recorded on the
 * link (not a change anything caches: no feed entry), so events name the
 * subject as the app knows it.  An item whose link vanished meanwhile (an
 * erasure) gets err VEIL_ERR_ABORTED alone; any other failure fails the
 * whole transaction and is returned.
 */
struct revocation_link_write {
    const unsigned char *subject;
    const char *app_id;
    int link;
    uint32_t key_version, previous_key_version; /* 0: none to record */
    uint32_t epoch; /* out, when link */
    veil_err err;   /* out */
};

veil_err revocation_store_login_writes(struct revocation_store *s,
                                       struct revocation_link_write *w, size_t n) VEIL_WUR;

/* Sets an app's state; *changed is 0 when it already was in it. */
veil_err revocation_store_set_app(struct revocation_store *s, const char *app_id,
                                  revocation_app_state state, const char *reason,
                                  int *changed) VEIL_WUR;

/* The feed (a veil_feed_read_fn; ctx is the store) and one app's events. */
veil_err revocation_store_changes(void *store, int64_t after_seq, uint32_t max,
                                  ProtobufCAllocator *alloc, Veil__ChangesResponse *resp);
veil_err revocation_store_app_events(struct revocation_store *s, const char *app_id,
                                     int64_t after_seq, uint32_t max, ProtobufCAllocator *alloc,
                                     Veil__AppEventsResponse *resp) VEIL_WUR;

/* ---- handlers.c ---- */

extern const Veil__Revocation__Revocation_Service revocation_rpc;
extern const veil_method_policy revocation_policy[];
extern const size_t revocation_policy_len;

/* ---- generated from db/revocation ---- */

extern const veil_migration revocation_migrations[];
extern const size_t revocation_migrations_count;

#endif
