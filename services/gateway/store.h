/*
 * store.h - the gateway's database: app registry, challenges, key state.
 * store.c is the only file of the gateway that speaks SQL.
 */
#ifndef VEIL_GATEWAY_STORE_H
#define VEIL_GATEWAY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "gateway.h"

struct gw_store;

veil_err gw_store_open(const char *conninfo, struct gw_store **out) VEIL_WUR;
void gw_store_close(struct gw_store *s);

/* Every app, sorted by id, and the registry version they belong to; free with gw_apps_free. */
veil_err gw_store_load_apps(struct gw_store *s, gw_app **apps, size_t *n,
                            int64_t *version) VEIL_WUR;

/*
 * Adds an app (VEIL_ERR_EXISTS if the id or certificate identity is taken).
 * Both this and gw_store_update_app enforce the sector rules in the same
 * transaction (db/gateway/003_sector_owners.sql): VEIL_ERR_PRECONDITION, with
 * *refusal (if not NULL) set to a client message, when the sector belongs to
 * another organisation or the app's sector is fixed by its first login.
 */
veil_err gw_store_insert_app(struct gw_store *s, const gw_app *app, const char *name,
                             const char *organisation, const char **refusal) VEIL_WUR;
/* Changes an app's descriptive fields and scope (VEIL_ERR_NOT_FOUND if absent). */
veil_err gw_store_update_app(struct gw_store *s, const gw_app *app, const char *name,
                             const char *organisation, const char **refusal) VEIL_WUR;
/* Records that the app completed a login: its sector is fixed from now on. */
veil_err gw_store_fix_sector(struct gw_store *s, const char *app_id) VEIL_WUR;
/* Sets "active" or "suspended" (VEIL_ERR_NOT_FOUND if absent). */
veil_err gw_store_set_app_status(struct gw_store *s, const char *id, const char *status) VEIL_WUR;

/* One challenge in a batched statement: issued (put) or claimed (take). */
typedef struct gw_challenge_claim {
    const unsigned char *challenge; /* 32 bytes */
    const char *app_id;             /* an identifier (veil_ident_valid) */
    int64_t expires_at_ms;          /* put: when it expires */
    veil_err err; /* set: VEIL_OK when stored / consumed, VEIL_ERR_NOT_FOUND when not consumed */
} gw_challenge_claim;
/*
 * Records n fresh challenges, each for its app, in one statement (BeginLogin's
 * batched hop): all are stored or none, and every claim gets the result.
 */
veil_err gw_store_challenge_put(struct gw_store *s, gw_challenge_claim *const *claims, size_t n);
/*
 * Consumes n challenges in one statement (the login's batched hop): each
 * claim succeeds once, only for the app its challenge was issued to and only
 * before it expires, and gets VEIL_ERR_NOT_FOUND otherwise, whatever the
 * other claims are.  When the statement itself fails every claim gets that
 * error, which is also returned.
 */
veil_err gw_store_challenge_take(struct gw_store *s, gw_challenge_claim *const *claims, size_t n);
/* Deletes expired challenges; *removed receives how many. */
veil_err gw_store_challenge_sweep(struct gw_store *s, int64_t *removed) VEIL_WUR;

/* The rotation state of "assertion" or "pseudonym" keys (a row per kind since migration 2). */
/* ---- OpenID Connect login requests and access tokens (loginreq.c) ---- */
struct gw_login_request;
/* Records a login request under the hashes of its id and poll token. */
veil_err gw_store_request_put(struct gw_store *s, const unsigned char id_hash[32],
                              const unsigned char poll_hash[32],
                              const struct gw_login_request *r) VEIL_WUR;
/* Reads a request by the hash of its id (by_poll 0) or poll token (1); NOT_FOUND if none.
 * sealed_code (malloc'd, may be NULL) receives the code sealed to the page. */
veil_err gw_store_request_get(struct gw_store *s, int by_poll, const unsigned char hash[32],
                              struct gw_login_request *r, unsigned char **sealed_code,
                              size_t *sealed_len) VEIL_WUR;
/*
 * Answers a pending, unexpired request: status "approved" (with the code's
 * hash, the code sealed to the page, the result sealed under the code and a
 * new expiry: the code's), "denied" or "failed".  VEIL_ERR_PRECONDITION when
 * it was answered or expired already.
 */
veil_err gw_store_request_answer(struct gw_store *s, const unsigned char id_hash[32],
                                 const char *status, const unsigned char *code_hash,
                                 const unsigned char *sealed_code, size_t sealed_code_len,
                                 const unsigned char *sealed_result, size_t sealed_result_len,
                                 int64_t expires_at_ms) VEIL_WUR;
/*
 * Marks a code used and returns its request (sealed result malloc'd).
 * VEIL_ERR_ABORTED when it had been used: the access tokens issued from it
 * are deleted.  VEIL_ERR_NOT_FOUND when unknown.
 */
veil_err gw_store_code_take(struct gw_store *s, const unsigned char code_hash[32],
                            struct gw_login_request *r, unsigned char **sealed_result,
                            size_t *sealed_len) VEIL_WUR;
veil_err gw_store_token_put(struct gw_store *s, const unsigned char token_hash[32],
                            const unsigned char code_hash[32], const char *app_id,
                            const unsigned char *sealed, size_t sealed_len,
                            int64_t expires_at_ms) VEIL_WUR;
/* A live token's app and sealed claims (malloc'd); NOT_FOUND if none or expired. */
veil_err gw_store_token_get(struct gw_store *s, const unsigned char token_hash[32], char app_id[65],
                            unsigned char **sealed, size_t *sealed_len) VEIL_WUR;
/* Deletes requests and tokens expired for a while; *removed receives how many. */
veil_err gw_store_oidc_sweep(struct gw_store *s, int64_t *removed) VEIL_WUR;

/* The rotation state of "assertion" or "pseudonym" keys (VEIL_ERR_NOT_FOUND if unset). */
veil_err gw_store_key_state(struct gw_store *s, const char *kind, uint32_t *current,
                            uint32_t *previous) VEIL_WUR;
/* Records a new state (previous 0: none). */
veil_err gw_store_key_state_set(struct gw_store *s, const char *kind, uint32_t current,
                                uint32_t previous) VEIL_WUR;
/* One row of the admin audit log (strings borrowed). */
typedef struct gw_audit_row {
    int64_t seq, at_ms; /* set when read */
    const char *actor, *method, *app_id, *identity_ref, *detail, *reason, *result;
} gw_audit_row;

/* Appends a row to the admin audit log (append-only: a trigger refuses changes). */
veil_err gw_store_audit_append(struct gw_store *s, const gw_audit_row *row) VEIL_WUR;

/*
 * Calls fn for up to max rows after after_seq, in order, about identity_ref
 * only unless it is ""; the row's strings live until fn returns.
 */
veil_err gw_store_audit_list(struct gw_store *s, int64_t after_seq, uint32_t max,
                             const char *identity_ref,
                             void (*fn)(const gw_audit_row *row, void *ctx), void *ctx) VEIL_WUR;

/* Cheap change detection: the registry version and a version of the key state. */
veil_err gw_store_versions(struct gw_store *s, int64_t *registry, int64_t *keys) VEIL_WUR;

/* When the overlap of kind's key rotation began (ms since the epoch), 0 when none is open. */
veil_err gw_store_key_overlap_since(struct gw_store *s, const char *kind, int64_t *since_ms);

#endif
