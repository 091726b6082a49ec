/*
 * store.c - the vault's SQL, and the only file that talks to PostgreSQL.
 *
 * Every statement is declared once in the table below and prepared on each
 * worker's connection the first time it runs; parameters are always bound.
 * The login path costs two round trips: one join that returns the device,
 * its citizen's wrapped data key and the log head, and one statement that
 * appends the log entry and advances the head (row-locking only that
 * citizen's head).  Results are copied into the caller's structs, so no
 * PGresult outlives a function here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "veil/pg.h"
#include "veil/pgarray.h"
#include "vault.h"

enum {
    ST_CITIZEN,
    ST_DEVICE,
    ST_APPEND,
    ST_APPEND_BATCH,
    ST_HEAD,
    ST_LIST_LOG,
    ST_LIST_DEVICES,
    ST_REVOKE,
    ST_NONCE,
    ST_PURGE,
    ST_ERASE,
    ST_HOLD,
    ST_HELD,
    ST_LOOKUP_WN,
    ST_FIND_REQUEST,
    ST_LOCK_CITIZEN,
    ST_FIND_DEVICE_KEY,
    ST_INSERT_CITIZEN,
    ST_UPDATE_PROFILE,
    ST_INSERT_DEVICE,
    ST_INSERT_REQUEST,
    ST_ROTATION_BATCH,
    ST_REWRAP,
    ST_VERSION_COUNTS,
    ST_RELEASE,
    ST_SET_SCOPE,
    ST_RANK,
    ST_PENDING_FIND,
    ST_PENDING_INSERT,
    ST_PENDING_DELETE,
    ST_PENDING_LIST,
    ST_PENDING_CANCEL,
    ST_SET_PROOFED,
    ST_CARD,
    ST_SET_PIN,
    ST_PIN_TRY,
    ST_PIN_RESET,
    ST_LOG_BASE,
    ST_LOG_MAINTAIN,
    ST_REVOKE_CARDS,
    ST_KEY_VERSION,
    ST_SET_KEY_VERSION,
};

static const veil_pg_stmt stmts[] = {
    [ST_CITIZEN] = {"citizen",
                    "SELECT c.web_number, c.key_version, c.wrapped_key, c.profile, h.seq, h.head "
                    "FROM citizens c JOIN access_heads h ON h.subject_ref = c.subject_ref "
                    "WHERE c.subject_ref = $1::bytea"},
    /* Every device of a batch of tickets (or one) at once; ids may repeat. */
    [ST_DEVICE] = {"devices",
                   "SELECT d.subject_ref, d.public_key, d.revoked_at IS NOT NULL, c.key_version, "
                   "c.wrapped_key, h.seq, h.head, d.pin_mac IS NOT NULL, d.device_id "
                   "FROM devices d JOIN citizens c ON c.subject_ref = d.subject_ref "
                   "JOIN access_heads h ON h.subject_ref = d.subject_ref "
                   "WHERE d.device_id = ANY($1::bytea[])"},
    /* Advances the head only from seq - 1, so of two concurrent appends one wins. */
    [ST_APPEND] = {"append_log",
                   "WITH head AS (UPDATE access_heads SET seq = $2::int8, head = $5::bytea "
                   "WHERE subject_ref = $1::bytea AND seq = $2::int8 - 1 RETURNING subject_ref) "
                   "INSERT INTO access_log (subject_ref, seq, at_ms, entry, mac) "
                   "SELECT subject_ref, $2::int8, $3::int8, $4::bytea, $5::bytea FROM head"},
    /*
     * Many citizens' appends in one statement (logwriter.c's group
     * commit): each entry advances its citizen's head from seq - 1 exactly as
     * append_log does.  Entries whose head moved (or whose citizen is gone)
     * are not inserted; two entries for one head in the same batch update it
     * once, and only the one whose mac became the head is inserted.  The
     * macs of the inserted entries come back.
     */
    [ST_APPEND_BATCH] = {"append_log_batch",
                         "WITH e AS (SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], "
                         "$4::bytea[], $5::bytea[]) AS e(subject_ref, seq, at_ms, entry, mac)), "
                         "h AS (UPDATE access_heads a SET seq = e.seq, head = e.mac FROM e "
                         "WHERE a.subject_ref = e.subject_ref AND a.seq = e.seq - 1 "
                         "RETURNING a.subject_ref, a.seq, a.head), "
                         "i AS (INSERT INTO access_log (subject_ref, seq, at_ms, entry, mac) "
                         "SELECT e.subject_ref, e.seq, e.at_ms, e.entry, e.mac FROM e JOIN h "
                         "ON h.subject_ref = e.subject_ref AND h.seq = e.seq AND h.head = e.mac "
                         "RETURNING mac) SELECT mac FROM i"},
    [ST_HEAD] = {"lock_log_head",
                 "SELECT seq, head FROM access_heads WHERE subject_ref = $1::bytea FOR UPDATE"},
    [ST_LIST_LOG] = {"list_log", "SELECT seq, at_ms, entry, mac FROM access_log "
                                 "WHERE subject_ref = $1::bytea ORDER BY seq"},
    [ST_LIST_DEVICES] = {"list_devices",
                         "SELECT device_id, label, created_at, revoked_at FROM devices "
                         "WHERE subject_ref = $1::bytea ORDER BY created_at, device_id"},
    /*
     * A revoked device's own pending actions go with it (a thief's request
     * ends when the owner revokes the stolen phone), and so do requests to
     * revoke it (done).  Returns whether it was active until now and whether
     * it is the subject's device at all.
     */
    [ST_REVOKE] = {"revoke_device",
                   "WITH p AS (DELETE FROM pending_actions WHERE subject_ref = $2::bytea AND "
                   "(requested_by = $1::bytea OR target_device = $1::bytea)), "
                   "u AS (UPDATE devices SET revoked_at = now() WHERE device_id = $1::bytea "
                   "AND subject_ref = $2::bytea AND revoked_at IS NULL RETURNING 1) "
                   "SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM devices "
                   "WHERE device_id = $1::bytea AND subject_ref = $2::bytea)"},
    /*
     * A nonce may be reused only once its record expired (the time check rejects it anyway).
     * Expiry is on the service's clock ($3 its now, $4 the lifetime), the clock the skew
     * check used: the database's own clock may differ from it.
     */
    [ST_NONCE] = {"use_nonce",
                  "INSERT INTO used_nonces (device_id, nonce, expires_at) "
                  "VALUES ($1::bytea, $2::bytea, to_timestamp(($3::int8 + $4::int8) / 1000.0)) "
                  "ON CONFLICT (device_id, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at "
                  "WHERE used_nonces.expires_at < to_timestamp($3::int8 / 1000.0) RETURNING 1"},
    [ST_PURGE] = {"purge",
                  "WITH n AS (DELETE FROM used_nonces "
                  "WHERE expires_at < to_timestamp($1::int8 / 1000.0)), "
                  "r AS (DELETE FROM enrol_requests WHERE created_at < now() - interval '1 day'), "
                  "u AS (DELETE FROM used_capabilities WHERE expires_at < now()) "
                  "SELECT 1"},
    /*
     * Deleting the citizen row destroys the wrapped data key, the profile,
     * the blind index and the web number; devices, nonces, the log head and
     * enrol requests go with it (ON DELETE CASCADE); the log has no foreign
     * key and is deleted here.  Nothing about the subject is left behind (an
     * authority's hold, written before, has no subject reference).
     */
    [ST_ERASE] = {"erase", "WITH gone AS (DELETE FROM citizens WHERE subject_ref = $1::bytea "
                           "RETURNING subject_ref), "
                           "log AS (DELETE FROM access_log WHERE subject_ref = $1::bytea) "
                           "SELECT count(*) FROM gone"},
    /* The hold is keyed by the blind index alone: no subject, web number or number. */
    [ST_HOLD] = {"hold", "INSERT INTO authority_holds (blind_index, state, legal_basis, held_at)"
                         " SELECT blind_index, $2::text, $3::text, now() FROM citizens"
                         " WHERE subject_ref = $1::bytea ON CONFLICT (blind_index) DO UPDATE"
                         " SET state = EXCLUDED.state, legal_basis = EXCLUDED.legal_basis,"
                         " held_at = EXCLUDED.held_at RETURNING 1"},
    [ST_HELD] = {"held", "SELECT state FROM authority_holds WHERE blind_index = $1::bytea"},
    [ST_LOOKUP_WN] = {"lookup_web_number",
                      "SELECT subject_ref FROM citizens WHERE web_number = $1::text"},
    [ST_FIND_REQUEST] = {"find_request",
                         "SELECT r.request_mac, r.subject_ref, r.device_id, r.new_identity, "
                         "r.certificate, c.web_number FROM enrol_requests r "
                         "JOIN citizens c ON c.subject_ref = r.subject_ref "
                         "WHERE r.request_key = $1::bytea"},
    /* NO KEY UPDATE: enrolments of one person serialise, logins (key-share locks) do not wait. */
    [ST_LOCK_CITIZEN] = {"lock_citizen",
                         "SELECT subject_ref, web_number, key_version, wrapped_key FROM citizens "
                         "WHERE blind_index = $1::bytea FOR NO KEY UPDATE"},
    [ST_FIND_DEVICE_KEY] = {"find_device_key",
                            "SELECT device_id, subject_ref, revoked_at IS NOT NULL FROM devices "
                            "WHERE public_key = $1::bytea"},
    [ST_INSERT_CITIZEN] = {"insert_citizen",
                           "WITH c AS (INSERT INTO citizens (subject_ref, blind_index, web_number, "
                           "key_version, wrapped_key, profile) VALUES ($1::bytea, $2::bytea, "
                           "$3::text, $4::int8, $5::bytea, $6::bytea) RETURNING subject_ref) "
                           "INSERT INTO access_heads (subject_ref, seq, head) "
                           "SELECT subject_ref, 0, $7::bytea FROM c"},
    [ST_UPDATE_PROFILE] = {"update_profile",
                           "UPDATE citizens SET profile = $2::bytea WHERE subject_ref = $1::bytea"},
    [ST_INSERT_DEVICE] = {"insert_device",
                          "INSERT INTO devices (device_id, subject_ref, public_key, label, "
                          "proofed_at) VALUES ($1::bytea, $2::bytea, $3::bytea, $4::bytea, "
                          "to_timestamp($5::int8 / 1000.0))"},
    [ST_INSERT_REQUEST] = {"insert_request",
                           "INSERT INTO enrol_requests (request_key, request_mac, subject_ref, "
                           "device_id, new_identity, certificate) VALUES ($1::bytea, $2::bytea, "
                           "$3::bytea, $4::bytea, $5::int8 <> 0, $6::text)"},
    [ST_ROTATION_BATCH] = {"rotation_batch",
                           "SELECT subject_ref, key_version, wrapped_key FROM citizens "
                           "WHERE subject_ref > $1::bytea AND key_version <> $2::int8 "
                           "ORDER BY subject_ref LIMIT $3::int8"},
    /* Only if the row is still as read: a concurrent erase or rotation wins. */
    [ST_REWRAP] = {"rewrap", "UPDATE citizens SET key_version = $2::int8, wrapped_key = $3::bytea "
                             "WHERE subject_ref = $1::bytea AND key_version = $4::int8 "
                             "AND wrapped_key = $5::bytea"},
    [ST_VERSION_COUNTS] = {"version_counts", "SELECT key_version, count(*) FROM citizens "
                                             "GROUP BY key_version ORDER BY key_version"},
    /*
     * A release in one round trip: uses the capability (its id is inserted
     * once; a second use inserts nothing), reads the app's scope and loads
     * the citizen.  Always one row: the citizen's columns are NULL when the
     * subject is gone, the scope when the vault does not know the app.
     */
    /*
     * A batch of releases (or one) in one statement: uses each capability id
     * (the caller sends each id once), returns per item, in order, the
     * citizen, whether the id was fresh, and the app's scope.
     */
    [ST_RELEASE] =
        {"release",
         "WITH r AS (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::text[]) "
         "WITH ORDINALITY AS r(subject_ref, cap_id, expires_ms, app_id, i)), "
         "used AS (INSERT INTO used_capabilities (id, expires_at) "
         "SELECT cap_id, to_timestamp(expires_ms / 1000.0) FROM r ON CONFLICT DO NOTHING "
         "RETURNING id) "
         "SELECT c.web_number, c.key_version, c.wrapped_key, c.profile, h.seq, h.head, "
         "r.cap_id IN (SELECT id FROM used), s.attributes, r.i "
         "FROM r LEFT JOIN citizens c ON c.subject_ref = r.subject_ref "
         "LEFT JOIN access_heads h ON h.subject_ref = c.subject_ref "
         "LEFT JOIN app_scopes s ON s.app_id = r.app_id ORDER BY r.i"},
    /* Returns a row only when the scope is new or changed. */
    [ST_SET_SCOPE] =
        {"set_scope",
         "INSERT INTO app_scopes AS s (app_id, attributes) VALUES ($1::text, $2::text) "
         "ON CONFLICT (app_id) DO UPDATE SET attributes = EXCLUDED.attributes, "
         "updated_at = now() WHERE s.attributes <> EXCLUDED.attributes "
         "RETURNING 1"},
    [ST_RANK] = {"device_rank", "SELECT subject_ref, revoked_at IS NOT NULL, proofed_at "
                                "FROM devices WHERE device_id = $1::bytea"},
    [ST_PENDING_FIND] =
        {"pending_find",
         "SELECT id, requested_at, effective_at, effective_at <= now() "
         "FROM pending_actions WHERE requested_by = $1::bytea AND action = $2::text "
         "AND target_device IS NOT DISTINCT FROM $3::bytea"},
    [ST_PENDING_INSERT] = {"pending_insert",
                           "INSERT INTO pending_actions (id, subject_ref, action, target_device, "
                           "requested_by, effective_at) VALUES ($1::bytea, $2::bytea, $3::text, "
                           "$4::bytea, $5::bytea, now() + $6::int8 * interval '1 millisecond') "
                           "RETURNING requested_at, effective_at"},
    [ST_PENDING_DELETE] =
        {"pending_delete",
         "DELETE FROM pending_actions WHERE requested_by = $1::bytea "
         "AND action = $2::text AND target_device IS NOT DISTINCT FROM $3::bytea"},
    [ST_PENDING_LIST] = {"pending_list",
                         "SELECT id, action, target_device, requested_by, requested_at, "
                         "effective_at FROM pending_actions WHERE subject_ref = $1::bytea "
                         "ORDER BY requested_at, id"},
    /* $2 NULL: every pending action of the citizen (a re-proofing cancels them all). */
    [ST_PENDING_CANCEL] = {"pending_cancel",
                           "DELETE FROM pending_actions WHERE subject_ref = $1::bytea "
                           "AND ($2::bytea IS NULL OR id = $2::bytea) RETURNING 1"},
    /* A re-proofing from the same phone: it ranks from the new attestation on. */
    [ST_SET_PROOFED] = {"set_proofed",
                        "UPDATE devices SET proofed_at = GREATEST(proofed_at, "
                        "to_timestamp($2::int8 / 1000.0)) WHERE device_id = $1::bytea"},
    /* Cards (issue 17): found by the public key derived from the printed secret. */
    [ST_CARD] = {"card",
                 "SELECT d.subject_ref, d.public_key, d.revoked_at IS NOT NULL, c.key_version, "
                 "c.wrapped_key, h.seq, h.head, true, d.device_id, d.pin_mac, d.pin_failures "
                 "FROM devices d JOIN citizens c ON c.subject_ref = d.subject_ref "
                 "JOIN access_heads h ON h.subject_ref = d.subject_ref "
                 "WHERE d.public_key = $1::bytea AND d.pin_mac IS NOT NULL"},
    [ST_SET_PIN] = {"set_pin", "UPDATE devices SET pin_mac = $2::bytea, pin_failures = 0 "
                               "WHERE device_id = $1::bytea"},
    /* Takes one attempt before the PIN is compared, so parallel guesses cannot exceed the limit. */
    [ST_PIN_TRY] = {"pin_try", "UPDATE devices SET pin_failures = pin_failures + 1 "
                               "WHERE device_id = $1::bytea AND pin_failures < $2::int8 "
                               "RETURNING pin_failures"},
    [ST_LOG_BASE] = {"log_base",
                     "SELECT base_seq, base_mac FROM access_heads WHERE subject_ref = $1::bytea"},
    [ST_LOG_MAINTAIN] = {"log_maintain",
                         "SELECT created, dropped, refused, rows_dropped "
                         "FROM access_log_maintain($1::int8, $2::int8, ($3::int8)::int4)"},
    [ST_REVOKE_CARDS] = {"revoke_cards",
                         "UPDATE devices SET revoked_at = now() WHERE subject_ref = $1::bytea "
                         "AND pin_mac IS NOT NULL AND device_id <> $2::bytea "
                         "AND revoked_at IS NULL RETURNING device_id"},
    [ST_PIN_RESET] = {"pin_reset",
                      "UPDATE devices SET pin_failures = 0 WHERE device_id = $1::bytea"},
    /* The first start records the given version; later starts read what is there. */
    [ST_KEY_VERSION] = {"key_version",
                        "WITH ins AS (INSERT INTO key_state (kind, version) VALUES ($1, $2::int8) "
                        "ON CONFLICT (kind) DO NOTHING RETURNING version) "
                        "SELECT version FROM ins UNION ALL "
                        "SELECT version FROM key_state WHERE kind = $1"},
    /* The NOTIFY ("kind version", nothing secret) reaches every running vault at commit. */
    [ST_SET_KEY_VERSION] = {"set_key_version",
                            "INSERT INTO key_state (kind, version) VALUES ($1, $2::int8) "
                            "ON CONFLICT (kind) DO UPDATE SET version = EXCLUDED.version, "
                            "rotated_at = now() RETURNING (SELECT version FROM key_state "
                            "WHERE kind = $1), pg_notify('" VAULT_KEYS_CHANNEL "', "
                            "$1::text || ' ' || $2::int8::text)"},
};
#define N_STMTS (sizeof stmts / sizeof stmts[0])

struct vault_store {
    veil_db *db;
};

/* A vault_conn is the thread's veil_pg; the cast keeps libpq out of vault.h. */
static veil_pg *pg(vault_conn *c)
{
    return (veil_pg *)c;
}

veil_err vault_store_open(const char *url, vault_store **out)
{
    *out = NULL;
    vault_store *st = calloc(1, sizeof *st);
    if (!st)
        return VEIL_ERR_NOMEM;
    veil_err err = veil_db_new(url, stmts, N_STMTS, &st->db);
    if (err) {
        free(st);
        return err;
    }
    *out = st;
    return VEIL_OK;
}

void vault_store_close(vault_store *st)
{
    if (!st)
        return;
    veil_db_free(st->db);
    free(st);
}

veil_err vault_store_conn(vault_store *st, vault_conn **out)
{
    veil_pg *c;
    veil_err err = veil_db_conn(st->db, &c);
    *out = err ? NULL : (vault_conn *)c;
    return err;
}

veil_err vault_store_begin(vault_conn *c)
{
    return veil_pg_begin(pg(c));
}

veil_err vault_store_begin_snapshot(vault_conn *c)
{
    return veil_pg_simple(pg(c), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
}

veil_err vault_store_commit(vault_conn *c)
{
    return veil_pg_commit(pg(c));
}

void vault_store_rollback(vault_conn *c)
{
    veil_pg_rollback(pg(c));
}

/* Copies a bytea column of exactly n bytes; -1 when it has another length. */
static int copy_bytes(const PGresult *r, int row, int col, void *dst, size_t n)
{
    size_t len;
    const unsigned char *p = veil_pg_get_bytes(r, row, col, &len);
    if (!p || len != n)
        return -1;
    memcpy(dst, p, n);
    return 0;
}

static veil_err exec(vault_conn *c, int stmt, const veil_pg_param *p, int n, PGresult **r)
{
    return veil_pg_exec(pg(c), stmt, p, n, r);
}

static veil_err exec_any_row(vault_conn *c, int stmt, const veil_pg_param *p, int n, int *any);

/*
 * Copies a citizen's columns (of row `row`, from column col on) into out; -1
 * when they are NULL or malformed.
 */
static int citizen_columns(const PGresult *r, int row, int col, const unsigned char *subject,
                           struct vault_citizen_row *out)
{
    size_t plen;
    const unsigned char *profile = veil_pg_get_bytes(r, row, col + 3, &plen);
    if (PQgetisnull(r, row, col) || !profile || plen > VAULT_PROFILE_MAX ||
        copy_bytes(r, row, col + 2, out->wrapped, VAULT_WRAPPED_BYTES) != 0 ||
        copy_bytes(r, row, col + 5, out->head, VAULT_HASH_BYTES) != 0)
        return -1;
    memcpy(out->subject, subject, VAULT_SUBJECT_BYTES);
    snprintf(out->web_number, sizeof out->web_number, "%s", veil_pg_get_text(r, row, col));
    out->key_version = (uint32_t)veil_pg_get_i64(r, row, col + 1);
    memcpy(out->profile, profile, plen);
    out->profile_len = plen;
    out->head_seq = veil_pg_get_i64(r, row, col + 4);
    return 0;
}

veil_err vault_store_citizen(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                             struct vault_citizen_row *out)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    veil_err err = exec(c, ST_CITIZEN, p, 1, &r);
    if (err)
        return err;
    err = VEIL_ERR_NOT_FOUND;
    if (PQntuples(r) != 1)
        goto out;
    err = citizen_columns(r, 0, 0, subject, out) == 0 ? VEIL_OK : VEIL_ERR_INTERNAL;
out:
    PQclear(r);
    return err;
}

/* The item's outcome from its row of ST_RELEASE. */
static veil_err release_row(const PGresult *r, int row, struct vault_release_item *it)
{
    it->fresh = veil_pg_get_bool(r, row, 6);
    it->scope[0] = '\0';
    if (!PQgetisnull(r, row, 7))
        snprintf(it->scope, sizeof it->scope, "%s", veil_pg_get_text(r, row, 7));
    if (PQgetisnull(r, row, 0))
        return VEIL_ERR_NOT_FOUND;
    if (citizen_columns(r, row, 0, it->subject, it->row) != 0)
        return VEIL_ERR_INTERNAL;
    /* the app is unknown to the vault */
    return PQgetisnull(r, row, 7) ? VEIL_ERR_PRECONDITION : VEIL_OK;
}

veil_err vault_store_release_batch(vault_conn *c, struct vault_release_item *items, size_t n)
{
    veil_buf a[4] = {{0}};
    PGresult *r = NULL;
    veil_err err = VEIL_ERR_NOMEM;
    veil_pgarray_begin(&a[0], VEIL_OID_BYTEA, n);
    veil_pgarray_begin(&a[1], VEIL_OID_BYTEA, n);
    veil_pgarray_begin(&a[2], VEIL_OID_INT8, n);
    veil_pgarray_begin(&a[3], VEIL_OID_TEXT, n);
    for (size_t i = 0; i < n; i++) {
        veil_pgarray_put(&a[0], items[i].subject, VAULT_SUBJECT_BYTES);
        veil_pgarray_put(&a[1], items[i].cap_id, VAULT_CAP_ID_BYTES);
        veil_pgarray_put_i64(&a[2], items[i].expires_ms);
        veil_pgarray_put(&a[3], items[i].app_id, strlen(items[i].app_id));
        items[i].fresh = 0;
        items[i].result = VEIL_ERR_INTERNAL;
    }
    for (int k = 0; k < 4; k++)
        if (a[k].failed)
            goto out;
    veil_pg_param p[4];
    for (int k = 0; k < 4; k++)
        p[k] = vp_bytes(a[k].data, a[k].len);
    if ((err = exec(c, ST_RELEASE, p, 4, &r)))
        goto out;
    err = (size_t)PQntuples(r) == n ? VEIL_OK : VEIL_ERR_INTERNAL;
    for (int row = 0; !err && row < PQntuples(r); row++)
        items[row].result = release_row(r, row, &items[row]);
out:
    PQclear(r);
    for (int k = 0; k < 4; k++)
        veil_buf_free(&a[k]);
    return err;
}

veil_err vault_store_set_scope(vault_conn *c, const char *app_id, const char *attributes,
                               int *changed)
{
    veil_pg_param p[] = {vp_text(app_id), vp_text(attributes)};
    return exec_any_row(c, ST_SET_SCOPE, p, 2, changed);
}

/* Columns 0-7 of ST_DEVICE and ST_CARD (row `row`) into out. */
static veil_err device_row(const PGresult *r, int row, struct vault_device_row *out)
{
    if (copy_bytes(r, row, 0, out->subject, VAULT_SUBJECT_BYTES) != 0 ||
        copy_bytes(r, row, 1, out->public_key, 32) != 0 ||
        copy_bytes(r, row, 4, out->wrapped, VAULT_WRAPPED_BYTES) != 0 ||
        copy_bytes(r, row, 6, out->head, VAULT_HASH_BYTES) != 0)
        return VEIL_ERR_INTERNAL;
    out->revoked = veil_pg_get_bool(r, row, 2);
    out->key_version = (uint32_t)veil_pg_get_i64(r, row, 3);
    out->head_seq = veil_pg_get_i64(r, row, 5);
    out->card = veil_pg_get_bool(r, row, 7);
    return VEIL_OK;
}

veil_err vault_store_devices(vault_conn *c, const unsigned char (*ids)[VEIL_DEVICE_ID_BYTES],
                             size_t n, struct vault_device_row *rows, int *found)
{
    veil_buf a = {0};
    PGresult *r = NULL;
    veil_err err = VEIL_ERR_NOMEM;
    veil_pgarray_begin(&a, VEIL_OID_BYTEA, n);
    for (size_t i = 0; i < n; i++) {
        veil_pgarray_put(&a, ids[i], VEIL_DEVICE_ID_BYTES);
        found[i] = 0;
    }
    if (a.failed)
        goto out;
    veil_pg_param p[] = {vp_bytes(a.data, a.len)};
    if ((err = exec(c, ST_DEVICE, p, 1, &r)))
        goto out;
    for (int row = 0; !err && row < PQntuples(r); row++) {
        size_t len;
        const unsigned char *id = veil_pg_get_bytes(r, row, 8, &len);
        for (size_t i = 0; !err && id && len == VEIL_DEVICE_ID_BYTES && i < n; i++) {
            if (memcmp(ids[i], id, VEIL_DEVICE_ID_BYTES) != 0)
                continue;
            err = device_row(r, row, &rows[i]);
            found[i] = 1;
        }
    }
out:
    PQclear(r);
    veil_buf_free(&a);
    return err;
}

veil_err vault_store_device(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                            struct vault_device_row *out)
{
    int found;
    veil_err err = vault_store_devices(c, (const unsigned char(*)[VEIL_DEVICE_ID_BYTES])device_id,
                                       1, out, &found);
    return err ? err : found ? VEIL_OK : VEIL_ERR_NOT_FOUND;
}

veil_err vault_store_card(vault_conn *c, const unsigned char pk[32], struct vault_card_row *out)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(pk, 32)};
    veil_err err = exec(c, ST_CARD, p, 1, &r);
    if (err)
        return err;
    if (PQntuples(r) != 1)
        err = VEIL_ERR_NOT_FOUND;
    else if ((err = device_row(r, 0, &out->device)) == VEIL_OK &&
             (copy_bytes(r, 0, 8, out->device_id, VEIL_DEVICE_ID_BYTES) != 0 ||
              copy_bytes(r, 0, 9, out->pin_mac, VAULT_HASH_BYTES) != 0))
        err = VEIL_ERR_INTERNAL;
    else
        out->failures = (int)veil_pg_get_i64(r, 0, 10);
    PQclear(r);
    return err;
}

veil_err vault_store_pin_try(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                             int limit, int *failures)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES), vp_i64(limit)};
    veil_err err = exec(c, ST_PIN_TRY, p, 2, &r);
    if (err)
        return err;
    if (PQntuples(r) != 1)
        err = VEIL_ERR_NOT_FOUND;
    else
        *failures = (int)veil_pg_get_i64(r, 0, 0);
    PQclear(r);
    return err;
}

static veil_err exec_command(vault_conn *c, int stmt, const veil_pg_param *p, int n);

veil_err vault_store_revoke_cards(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                  const unsigned char keep[VEIL_DEVICE_ID_BYTES],
                                  veil_err (*fn)(void *ctx, const unsigned char *device_id),
                                  void *ctx)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES),
                         vp_bytes(keep, VEIL_DEVICE_ID_BYTES)};
    veil_err err = exec(c, ST_REVOKE_CARDS, p, 2, &r);
    if (err)
        return err;
    for (int i = 0; !err && i < PQntuples(r); i++) {
        unsigned char id[VEIL_DEVICE_ID_BYTES];
        err = copy_bytes(r, i, 0, id, sizeof id) != 0 ? VEIL_ERR_INTERNAL : fn(ctx, id);
    }
    PQclear(r);
    return err;
}

veil_err vault_store_pin_reset(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES])
{
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES)};
    return exec_command(c, ST_PIN_RESET, p, 1);
}

/* Runs a key_state statement ($1 kind, $2 version); *out = the version returned, 0 if none. */
static veil_err key_state_exec(vault_conn *c, int stmt, const char *kind, uint32_t version,
                               uint32_t *out)
{
    PGresult *r;
    veil_pg_param p[] = {vp_text(kind), vp_i64(version)};
    veil_err err = exec(c, stmt, p, 2, &r);
    if (!err)
        *out = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? (uint32_t)veil_pg_get_i64(r, 0, 0) : 0;
    PQclear(r);
    return err;
}

veil_err vault_store_key_version(vault_conn *c, const char *kind, uint32_t newest,
                                 uint32_t *version)
{
    veil_err err = key_state_exec(c, ST_KEY_VERSION, kind, newest, version);
    return err || *version ? err : VEIL_ERR_INTERNAL;
}

veil_err vault_store_set_key_version(vault_conn *c, const char *kind, uint32_t version,
                                     uint32_t *previous)
{
    return key_state_exec(c, ST_SET_KEY_VERSION, kind, version, previous);
}

veil_err vault_store_append_log(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                int64_t seq, int64_t at_ms, const unsigned char *sealed, size_t len,
                                const unsigned char mac[VAULT_HASH_BYTES])
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES), vp_i64(seq), vp_i64(at_ms),
                         vp_bytes(sealed, len), vp_bytes(mac, VAULT_HASH_BYTES)};
    veil_err err = exec(c, ST_APPEND, p, 5, &r);
    if (err)
        return err == VEIL_ERR_EXISTS ? VEIL_ERR_ABORTED : err;
    err = strcmp(PQcmdTuples(r), "1") == 0 ? VEIL_OK : VEIL_ERR_ABORTED;
    PQclear(r);
    return err;
}

veil_err vault_store_append_batch(vault_conn *c, struct vault_log_append *const *e, size_t n)
{
    veil_buf a[5] = {{0}};
    PGresult *r = NULL;
    veil_err err = VEIL_ERR_NOMEM;
    veil_pgarray_begin(&a[0], VEIL_OID_BYTEA, n);
    veil_pgarray_begin(&a[1], VEIL_OID_INT8, n);
    veil_pgarray_begin(&a[2], VEIL_OID_INT8, n);
    veil_pgarray_begin(&a[3], VEIL_OID_BYTEA, n);
    veil_pgarray_begin(&a[4], VEIL_OID_BYTEA, n);
    for (size_t i = 0; i < n; i++) {
        veil_pgarray_put(&a[0], e[i]->subject, VAULT_SUBJECT_BYTES);
        veil_pgarray_put_i64(&a[1], e[i]->seq);
        veil_pgarray_put_i64(&a[2], e[i]->at_ms);
        veil_pgarray_put(&a[3], e[i]->sealed, e[i]->sealed_len);
        veil_pgarray_put(&a[4], e[i]->mac, VAULT_HASH_BYTES);
        e[i]->result = VEIL_ERR_ABORTED; /* until the statement says it was inserted */
    }
    for (int k = 0; k < 5; k++)
        if (a[k].failed)
            goto out;
    veil_pg_param p[5];
    for (int k = 0; k < 5; k++)
        p[k] = vp_bytes(a[k].data, a[k].len);
    if ((err = exec(c, ST_APPEND_BATCH, p, 5, &r)))
        goto out;
    for (int row = 0; row < PQntuples(r); row++) {
        size_t len;
        const unsigned char *mac = veil_pg_get_bytes(r, row, 0, &len);
        for (size_t i = 0; mac && len == VAULT_HASH_BYTES && i < n; i++)
            if (memcmp(e[i]->mac, mac, VAULT_HASH_BYTES) == 0)
                e[i]->result = VEIL_OK;
    }
out:
    PQclear(r);
    for (int k = 0; k < 5; k++)
        veil_buf_free(&a[k]);
    return err;
}

veil_err vault_store_lock_log_head(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                   int64_t *seq, unsigned char head[VAULT_HASH_BYTES])
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    veil_err err = exec(c, ST_HEAD, p, 1, &r);
    if (err)
        return err;
    if (PQntuples(r) != 1)
        err = VEIL_ERR_NOT_FOUND;
    else if (copy_bytes(r, 0, 1, head, VAULT_HASH_BYTES) != 0)
        err = VEIL_ERR_INTERNAL;
    else
        *seq = veil_pg_get_i64(r, 0, 0);
    PQclear(r);
    return err;
}

veil_err vault_store_list_log(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                              vault_log_fn fn, void *ctx)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    veil_err err = exec(c, ST_LIST_LOG, p, 1, &r);
    if (err)
        return err;
    for (int i = 0; !err && i < PQntuples(r); i++) {
        struct vault_log_row row = {
            .seq = veil_pg_get_i64(r, i, 0),
            .at_ms = veil_pg_get_i64(r, i, 1),
        };
        row.entry = veil_pg_get_bytes(r, i, 2, &row.entry_len);
        row.mac = veil_pg_get_bytes(r, i, 3, &row.mac_len);
        err = fn(ctx, &row);
    }
    PQclear(r);
    return err;
}

veil_err vault_store_list_devices(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                  vault_device_fn fn, void *ctx)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    veil_err err = exec(c, ST_LIST_DEVICES, p, 1, &r);
    if (err)
        return err;
    for (int i = 0; !err && i < PQntuples(r); i++) {
        struct vault_device_info d = {
            .created_at_ms = veil_pg_get_time_ms(r, i, 2),
            .revoked_at_ms = veil_pg_is_null(r, i, 3) ? 0 : veil_pg_get_time_ms(r, i, 3),
        };
        if (copy_bytes(r, i, 0, d.device_id, VEIL_DEVICE_ID_BYTES) != 0) {
            err = VEIL_ERR_INTERNAL;
            break;
        }
        d.label = veil_pg_get_bytes(r, i, 1, &d.label_len);
        err = fn(ctx, &d);
    }
    PQclear(r);
    return err;
}

/* Runs a statement that returns rows and reports whether it returned any. */
static veil_err exec_any_row(vault_conn *c, int stmt, const veil_pg_param *p, int n, int *any)
{
    PGresult *r;
    veil_err err = exec(c, stmt, p, n, &r);
    if (err)
        return err;
    *any = PQntuples(r) > 0;
    PQclear(r);
    return VEIL_OK;
}

veil_err vault_store_revoke_device(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                   const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                   int *revoked_now)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES),
                         vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    veil_err err = exec(c, ST_REVOKE, p, 2, &r);
    if (err)
        return err;
    if (PQntuples(r) != 1 || !veil_pg_get_bool(r, 0, 1))
        err = VEIL_ERR_NOT_FOUND;
    else
        *revoked_now = veil_pg_get_bool(r, 0, 0);
    PQclear(r);
    return err;
}

veil_err vault_store_use_nonce(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                               const unsigned char *nonce, size_t len, int64_t now_ms,
                               int64_t lifetime_ms)
{
    int fresh = 0;
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES), vp_bytes(nonce, len),
                         vp_i64(now_ms), vp_i64(lifetime_ms)};
    veil_err err = exec_any_row(c, ST_NONCE, p, 4, &fresh);
    /* The device was deleted between the lookup and here (an erase): treat as unknown. */
    if (err == VEIL_ERR_PRECONDITION)
        return VEIL_ERR_NOT_FOUND;
    return err ? err : fresh ? VEIL_OK : VEIL_ERR_EXISTS;
}

veil_err vault_store_purge(vault_conn *c, int64_t now_ms)
{
    PGresult *r;
    veil_pg_param p[] = {vp_i64(now_ms)};
    veil_err err = exec(c, ST_PURGE, p, 1, &r);
    PQclear(r);
    return err;
}

veil_err vault_store_erase(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                           int *erased_now)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    veil_err err = exec(c, ST_ERASE, p, 1, &r);
    if (err)
        return err;
    *erased_now = veil_pg_get_i64(r, 0, 0) > 0;
    PQclear(r);
    return VEIL_OK;
}

veil_err vault_store_hold(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const char *state, const char *legal_basis)
{
    int any = 0;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES), vp_text(state),
                         vp_text(legal_basis)};
    veil_err err = exec_any_row(c, ST_HOLD, p, 3, &any);
    return err ? err : any ? VEIL_OK : VEIL_ERR_NOT_FOUND;
}

veil_err vault_store_held(vault_conn *c, const unsigned char blind[VAULT_HASH_BYTES], char *state,
                          size_t len)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(blind, VAULT_HASH_BYTES)};
    veil_err err = exec(c, ST_HELD, p, 1, &r);
    if (err)
        return err;
    if (PQntuples(r) == 1)
        snprintf(state, len, "%s", veil_pg_get_text(r, 0, 0));
    else
        err = VEIL_ERR_NOT_FOUND;
    PQclear(r);
    return err;
}

veil_err vault_store_lookup_web_number(vault_conn *c, const char *web_number,
                                       unsigned char subject[VAULT_SUBJECT_BYTES])
{
    PGresult *r;
    veil_pg_param p[] = {vp_text(web_number)};
    veil_err err = exec(c, ST_LOOKUP_WN, p, 1, &r);
    if (err)
        return err;
    if (PQntuples(r) != 1)
        err = VEIL_ERR_NOT_FOUND;
    else if (copy_bytes(r, 0, 0, subject, VAULT_SUBJECT_BYTES) != 0)
        err = VEIL_ERR_INTERNAL;
    PQclear(r);
    return err;
}

veil_err vault_store_find_request(vault_conn *c, const unsigned char key[VAULT_HASH_BYTES],
                                  struct vault_request_row *out)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(key, VAULT_HASH_BYTES)};
    out->certificate = NULL;
    veil_err err = exec(c, ST_FIND_REQUEST, p, 1, &r);
    if (err)
        return err;
    err = VEIL_ERR_NOT_FOUND;
    if (PQntuples(r) != 1)
        goto out;
    err = VEIL_ERR_INTERNAL;
    if (copy_bytes(r, 0, 0, out->mac, VAULT_HASH_BYTES) != 0 ||
        copy_bytes(r, 0, 1, out->subject, VAULT_SUBJECT_BYTES) != 0 ||
        copy_bytes(r, 0, 2, out->device_id, VEIL_DEVICE_ID_BYTES) != 0)
        goto out;
    out->new_identity = veil_pg_get_bool(r, 0, 3);
    snprintf(out->web_number, sizeof out->web_number, "%s", veil_pg_get_text(r, 0, 5));
    if (!(out->certificate = strdup(veil_pg_get_text(r, 0, 4)))) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    err = VEIL_OK;
out:
    PQclear(r);
    return err;
}

veil_err vault_store_lock_citizen(vault_conn *c, const unsigned char blind[VAULT_HASH_BYTES],
                                  struct vault_citizen_row *out)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(blind, VAULT_HASH_BYTES)};
    veil_err err = exec(c, ST_LOCK_CITIZEN, p, 1, &r);
    if (err)
        return err;
    if (PQntuples(r) != 1) {
        err = VEIL_ERR_NOT_FOUND;
    } else if (copy_bytes(r, 0, 0, out->subject, VAULT_SUBJECT_BYTES) != 0 ||
               copy_bytes(r, 0, 3, out->wrapped, VAULT_WRAPPED_BYTES) != 0) {
        err = VEIL_ERR_INTERNAL;
    } else {
        snprintf(out->web_number, sizeof out->web_number, "%s", veil_pg_get_text(r, 0, 1));
        out->key_version = (uint32_t)veil_pg_get_i64(r, 0, 2);
        out->profile_len = 0;
    }
    PQclear(r);
    return err;
}

veil_err vault_store_find_device_key(vault_conn *c, const unsigned char pk[32],
                                     unsigned char subject[VAULT_SUBJECT_BYTES],
                                     unsigned char device_id[VEIL_DEVICE_ID_BYTES], int *revoked)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(pk, 32)};
    veil_err err = exec(c, ST_FIND_DEVICE_KEY, p, 1, &r);
    if (err)
        return err;
    if (PQntuples(r) != 1)
        err = VEIL_ERR_NOT_FOUND;
    else if (copy_bytes(r, 0, 0, device_id, VEIL_DEVICE_ID_BYTES) != 0 ||
             copy_bytes(r, 0, 1, subject, VAULT_SUBJECT_BYTES) != 0)
        err = VEIL_ERR_INTERNAL;
    else
        *revoked = veil_pg_get_bool(r, 0, 2);
    PQclear(r);
    return err;
}

static veil_err exec_command(vault_conn *c, int stmt, const veil_pg_param *p, int n)
{
    PGresult *r;
    veil_err err = exec(c, stmt, p, n, &r);
    PQclear(r);
    return err;
}

veil_err vault_store_insert_citizen(vault_conn *c, const struct vault_new_citizen *n)
{
    static const unsigned char zero[VAULT_HASH_BYTES];
    veil_pg_param p[] = {vp_bytes(n->subject, VAULT_SUBJECT_BYTES),
                         vp_bytes(n->blind, VAULT_HASH_BYTES),
                         vp_text(n->web_number),
                         vp_i64(n->key_version),
                         vp_bytes(n->wrapped, VAULT_WRAPPED_BYTES),
                         vp_bytes(n->profile, n->profile_len),
                         vp_bytes(zero, sizeof zero)};
    return exec_command(c, ST_INSERT_CITIZEN, p, 7);
}

veil_err vault_store_update_profile(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                    const unsigned char *profile, size_t len)
{
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES), vp_bytes(profile, len)};
    return exec_command(c, ST_UPDATE_PROFILE, p, 2);
}

veil_err vault_store_insert_device(vault_conn *c,
                                   const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                   const unsigned char subject[VAULT_SUBJECT_BYTES],
                                   const unsigned char pk[32], const unsigned char *label,
                                   size_t label_len, int64_t proofed_at_ms)
{
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES),
                         vp_bytes(subject, VAULT_SUBJECT_BYTES), vp_bytes(pk, 32),
                         vp_bytes(label, label_len), vp_i64(proofed_at_ms)};
    return exec_command(c, ST_INSERT_DEVICE, p, 5);
}

veil_err vault_store_set_proofed(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                 int64_t proofed_at_ms)
{
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES), vp_i64(proofed_at_ms)};
    return exec_command(c, ST_SET_PROOFED, p, 2);
}

/* ---- step-up ---- */

veil_err vault_store_device_rank(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                 struct vault_rank *out)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES)};
    veil_err err = exec(c, ST_RANK, p, 1, &r);
    if (err)
        return err;
    err = VEIL_ERR_NOT_FOUND;
    if (PQntuples(r) == 1) {
        err = copy_bytes(r, 0, 0, out->subject, VAULT_SUBJECT_BYTES) ? VEIL_ERR_INTERNAL : VEIL_OK;
        out->revoked = veil_pg_get_bool(r, 0, 1);
        out->proofed_at_ms = veil_pg_get_time_ms(r, 0, 2);
    }
    PQclear(r);
    return err;
}

/* The parameters naming one device's pending action; target NULL for an erase. */
static void pending_key(veil_pg_param p[3], const unsigned char *by, const char *action,
                        const unsigned char *target)
{
    p[0] = vp_bytes(by, VEIL_DEVICE_ID_BYTES);
    p[1] = vp_text(action);
    p[2] = target ? vp_bytes(target, VEIL_DEVICE_ID_BYTES) : vp_null();
}

veil_err vault_store_pending_find(vault_conn *c, const unsigned char by[VEIL_DEVICE_ID_BYTES],
                                  const char *action, const unsigned char *target,
                                  struct vault_pending *out, int *due)
{
    PGresult *r;
    veil_pg_param p[3];
    pending_key(p, by, action, target);
    veil_err err = exec(c, ST_PENDING_FIND, p, 3, &r);
    if (err)
        return err;
    err = VEIL_ERR_NOT_FOUND;
    if (PQntuples(r) == 1) {
        err = copy_bytes(r, 0, 0, out->id, VEIL_DEVICE_ID_BYTES) ? VEIL_ERR_INTERNAL : VEIL_OK;
        out->requested_at_ms = veil_pg_get_time_ms(r, 0, 1);
        out->effective_at_ms = veil_pg_get_time_ms(r, 0, 2);
        *due = veil_pg_get_bool(r, 0, 3);
    }
    PQclear(r);
    return err;
}

veil_err vault_store_pending_insert(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                    struct vault_pending *pa, int64_t cooling_ms)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(pa->id, VEIL_DEVICE_ID_BYTES),
                         vp_bytes(subject, VAULT_SUBJECT_BYTES),
                         vp_text(pa->action),
                         pa->has_target ? vp_bytes(pa->target, VEIL_DEVICE_ID_BYTES) : vp_null(),
                         vp_bytes(pa->requested_by, VEIL_DEVICE_ID_BYTES),
                         vp_i64(cooling_ms)};
    veil_err err = exec(c, ST_PENDING_INSERT, p, 6, &r);
    if (err)
        return err == VEIL_ERR_EXISTS ? VEIL_ERR_ABORTED : err;
    pa->requested_at_ms = veil_pg_get_time_ms(r, 0, 0);
    pa->effective_at_ms = veil_pg_get_time_ms(r, 0, 1);
    PQclear(r);
    return VEIL_OK;
}

veil_err vault_store_pending_delete(vault_conn *c, const unsigned char by[VEIL_DEVICE_ID_BYTES],
                                    const char *action, const unsigned char *target)
{
    veil_pg_param p[3];
    pending_key(p, by, action, target);
    return exec_command(c, ST_PENDING_DELETE, p, 3);
}

veil_err vault_store_pending_list(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                  vault_pending_fn fn, void *ctx)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    veil_err err = exec(c, ST_PENDING_LIST, p, 1, &r);
    if (err)
        return err;
    for (int i = 0; !err && i < PQntuples(r); i++) {
        struct vault_pending pa = {.action = veil_pg_get_text(r, i, 1),
                                   .has_target = !veil_pg_is_null(r, i, 2),
                                   .requested_at_ms = veil_pg_get_time_ms(r, i, 4),
                                   .effective_at_ms = veil_pg_get_time_ms(r, i, 5)};
        if (copy_bytes(r, i, 0, pa.id, VEIL_DEVICE_ID_BYTES) ||
            (pa.has_target && copy_bytes(r, i, 2, pa.target, VEIL_DEVICE_ID_BYTES)) ||
            copy_bytes(r, i, 3, pa.requested_by, VEIL_DEVICE_ID_BYTES)) {
            err = VEIL_ERR_INTERNAL;
            break;
        }
        err = fn(ctx, &pa);
    }
    PQclear(r);
    return err;
}

veil_err vault_store_pending_cancel(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                    const unsigned char *id, unsigned *cancelled)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES),
                         id ? vp_bytes(id, VEIL_DEVICE_ID_BYTES) : vp_null()};
    veil_err err = exec(c, ST_PENDING_CANCEL, p, 2, &r);
    if (err)
        return err;
    *cancelled = (unsigned)PQntuples(r);
    PQclear(r);
    return VEIL_OK;
}

veil_err vault_store_set_pin(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                             const unsigned char mac[VAULT_HASH_BYTES])
{
    veil_pg_param p[] = {vp_bytes(device_id, VEIL_DEVICE_ID_BYTES),
                         vp_bytes(mac, VAULT_HASH_BYTES)};
    return exec_command(c, ST_SET_PIN, p, 2);
}

veil_err vault_store_insert_request(vault_conn *c, const unsigned char key[VAULT_HASH_BYTES],
                                    const struct vault_request_row *q)
{
    veil_pg_param p[] = {
        vp_bytes(key, VAULT_HASH_BYTES),           vp_bytes(q->mac, VAULT_HASH_BYTES),
        vp_bytes(q->subject, VAULT_SUBJECT_BYTES), vp_bytes(q->device_id, VEIL_DEVICE_ID_BYTES),
        vp_i64(q->new_identity ? 1 : 0),           vp_text(q->certificate)};
    return exec_command(c, ST_INSERT_REQUEST, p, 6);
}

veil_err vault_store_rotation_batch(vault_conn *c, const unsigned char after[VAULT_SUBJECT_BYTES],
                                    uint32_t to, struct vault_wrap_row *rows, size_t max, size_t *n)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(after, VAULT_SUBJECT_BYTES), vp_i64(to), vp_i64((int64_t)max)};
    *n = 0;
    veil_err err = exec(c, ST_ROTATION_BATCH, p, 3, &r);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r) && (size_t)i < max; i++) {
        if (copy_bytes(r, i, 0, rows[i].subject, VAULT_SUBJECT_BYTES) != 0 ||
            copy_bytes(r, i, 2, rows[i].wrapped, VAULT_WRAPPED_BYTES) != 0) {
            err = VEIL_ERR_INTERNAL;
            break;
        }
        rows[i].key_version = (uint32_t)veil_pg_get_i64(r, i, 1);
        (*n)++;
    }
    PQclear(r);
    return err;
}

veil_err vault_store_rewrap(vault_conn *c, const struct vault_wrap_row *old, uint32_t to,
                            const unsigned char wrapped[VAULT_WRAPPED_BYTES], int *updated)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(old->subject, VAULT_SUBJECT_BYTES), vp_i64(to),
                         vp_bytes(wrapped, VAULT_WRAPPED_BYTES), vp_i64(old->key_version),
                         vp_bytes(old->wrapped, VAULT_WRAPPED_BYTES)};
    *updated = 0;
    veil_err err = exec(c, ST_REWRAP, p, 5, &r);
    if (err)
        return err;
    *updated = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    return VEIL_OK;
}

veil_err vault_store_version_counts(vault_conn *c, void (*fn)(void *ctx, uint32_t v, int64_t n),
                                    void *ctx)
{
    PGresult *r;
    veil_err err = exec(c, ST_VERSION_COUNTS, NULL, 0, &r);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(r); i++)
        fn(ctx, (uint32_t)veil_pg_get_i64(r, i, 0), veil_pg_get_i64(r, i, 1));
    PQclear(r);
    return VEIL_OK;
}

/* ---- bulk loading with COPY (text format; bytea as \\x hex) ---- */

static void copy_hex(veil_buf *b, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    veil_buf_put(b, "\\\\x", 3);
    for (size_t i = 0; i < n; i++) {
        char two[2] = {hex[p[i] >> 4], hex[p[i] & 15]};
        veil_buf_put(b, two, 2);
    }
}

void vault_bulk_add(struct vault_bulk *b, const struct vault_new_citizen *n,
                    const unsigned char device_id[VEIL_DEVICE_ID_BYTES], const unsigned char pk[32],
                    const unsigned char *label, size_t label_len)
{
    static const unsigned char zero[VAULT_HASH_BYTES];
    char version[16];
    int vl = snprintf(version, sizeof version, "%u", n->key_version);

    /* citizens: subject_ref, blind_index, web_number, key_version, wrapped_key, profile */
    copy_hex(&b->citizens, n->subject, VAULT_SUBJECT_BYTES);
    veil_buf_put_u8(&b->citizens, '\t');
    copy_hex(&b->citizens, n->blind, VAULT_HASH_BYTES);
    veil_buf_put_u8(&b->citizens, '\t');
    veil_buf_put(&b->citizens, n->web_number, strlen(n->web_number));
    veil_buf_put_u8(&b->citizens, '\t');
    veil_buf_put(&b->citizens, version, (size_t)vl);
    veil_buf_put_u8(&b->citizens, '\t');
    copy_hex(&b->citizens, n->wrapped, VAULT_WRAPPED_BYTES);
    veil_buf_put_u8(&b->citizens, '\t');
    copy_hex(&b->citizens, n->profile, n->profile_len);
    veil_buf_put_u8(&b->citizens, '\n');

    /* access_heads: subject_ref, seq, head */
    copy_hex(&b->heads, n->subject, VAULT_SUBJECT_BYTES);
    veil_buf_put(&b->heads, "\t0\t", 3);
    copy_hex(&b->heads, zero, sizeof zero);
    veil_buf_put_u8(&b->heads, '\n');

    /* devices: device_id, subject_ref, public_key, label */
    copy_hex(&b->devices, device_id, VEIL_DEVICE_ID_BYTES);
    veil_buf_put_u8(&b->devices, '\t');
    copy_hex(&b->devices, n->subject, VAULT_SUBJECT_BYTES);
    veil_buf_put_u8(&b->devices, '\t');
    copy_hex(&b->devices, pk, 32);
    veil_buf_put_u8(&b->devices, '\t');
    copy_hex(&b->devices, label, label_len);
    veil_buf_put_u8(&b->devices, '\n');
    b->rows++;
}

/* Streams one buffer into COPY <sql> FROM STDIN. */
static veil_err copy_in(PGconn *conn, const char *sql, const veil_buf *data, char *errbuf,
                        size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    int ok = r && PQresultStatus(r) == PGRES_COPY_IN;
    PQclear(r);
    if (!ok) {
        snprintf(errbuf, errlen, "cannot start %s", sql);
        return VEIL_ERR_INTERNAL;
    }
    const size_t chunk = 1 << 20;
    for (size_t off = 0; ok && off < data->len; off += chunk) {
        size_t n = data->len - off < chunk ? data->len - off : chunk;
        ok = PQputCopyData(conn, (const char *)data->data + off, (int)n) == 1;
    }
    ok = PQputCopyEnd(conn, ok ? NULL : "client failed") == 1 && ok;
    while ((r = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            /* the SQLSTATE only: a server message may quote row values */
            const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            snprintf(errbuf, errlen, "%s failed (SQLSTATE %s)", sql, st ? st : "none");
            ok = 0;
        }
        PQclear(r);
    }
    return ok ? VEIL_OK : VEIL_ERR_INTERNAL;
}

veil_err vault_store_bulk_flush(vault_conn *c, struct vault_bulk *b, char *errbuf, size_t errlen)
{
    veil_err err = VEIL_OK;
    PGconn *conn = veil_pg_raw(pg(c));
    if (b->rows == 0)
        return VEIL_OK;
    if (b->citizens.failed || b->heads.failed || b->devices.failed) {
        snprintf(errbuf, errlen, "out of memory building the batch");
        return VEIL_ERR_NOMEM;
    }
    if ((err = veil_pg_begin(pg(c))) ||
        (err = copy_in(conn,
                       "COPY citizens (subject_ref, blind_index, web_number, key_version, "
                       "wrapped_key, profile) FROM STDIN",
                       &b->citizens, errbuf, errlen)) ||
        (err = copy_in(conn, "COPY access_heads (subject_ref, seq, head) FROM STDIN", &b->heads,
                       errbuf, errlen)) ||
        (err = copy_in(conn, "COPY devices (device_id, subject_ref, public_key, label) FROM STDIN",
                       &b->devices, errbuf, errlen)) ||
        (err = veil_pg_commit(pg(c)))) {
        veil_pg_rollback(pg(c));
        if (!errbuf[0])
            snprintf(errbuf, errlen, "the batch could not be committed");
    }
    b->citizens.len = b->heads.len = b->devices.len = 0;
    b->rows = 0;
    return err;
}

void vault_bulk_free(struct vault_bulk *b)
{
    veil_buf_free(&b->citizens);
    veil_buf_free(&b->heads);
    veil_buf_free(&b->devices);
    b->rows = 0;
}

veil_err vault_store_log_base(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                              int64_t *base_seq, unsigned char base_mac[VAULT_HASH_BYTES])
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject, VAULT_SUBJECT_BYTES)};
    *base_seq = 0;
    memset(base_mac, 0, VAULT_HASH_BYTES);
    veil_err err = exec(c, ST_LOG_BASE, p, 1, &r);
    if (err)
        return err;
    size_t len = 0;
    const unsigned char *mac = PQntuples(r) == 1 ? veil_pg_get_bytes(r, 0, 1, &len) : NULL;
    if (PQntuples(r) != 1)
        err = VEIL_ERR_NOT_FOUND;
    else if (!mac || len != VAULT_HASH_BYTES)
        err = VEIL_ERR_INTERNAL;
    else {
        *base_seq = veil_pg_get_i64(r, 0, 0);
        memcpy(base_mac, mac, VAULT_HASH_BYTES);
    }
    PQclear(r);
    return err;
}

veil_err vault_store_log_maintain(vault_conn *c, int64_t period_ms, int64_t drop_before_ms,
                                  int ahead, struct vault_log_maintenance *out)
{
    PGresult *r;
    veil_pg_param p[] = {vp_i64(period_ms), vp_i64(drop_before_ms), vp_i64(ahead)};
    memset(out, 0, sizeof *out);
    veil_err err = exec(c, ST_LOG_MAINTAIN, p, 3, &r);
    if (err)
        return err;
    if (PQntuples(r) == 1) {
        out->created = veil_pg_get_i64(r, 0, 0);
        out->dropped = veil_pg_get_i64(r, 0, 1);
        out->refused = veil_pg_get_i64(r, 0, 2);
        out->rows_dropped = veil_pg_get_i64(r, 0, 3);
    } else {
        err = VEIL_ERR_INTERNAL;
    }
    PQclear(r);
    return err;
}
