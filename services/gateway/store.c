/*
 * store.c - the gateway's SQL (store.h).  Every statement is prepared once
 * per connection and every value bound.  A change to the registry bumps
 * registry_version in the same transaction, which is how other replicas
 * learn of it.
 */
#include <stdlib.h>
#include <string.h>

#include "oidc.h"
#include "store.h"
#include "veil/pg.h"

struct gw_store {
    veil_db *db;
};

enum {
    ST_LOAD_APPS,
    ST_REGISTRY_VERSION,
    ST_INSERT_APP,
    ST_UPDATE_APP,
    ST_SET_STATUS,
    ST_BUMP_REGISTRY,
    ST_CHALLENGE_PUT,
    ST_CHALLENGE_TAKE,
    ST_CHALLENGE_SWEEP,
    ST_KEY_STATE,
    ST_KEY_STATE_SET,
    ST_VERSIONS,
    ST_AUDIT_APPEND,
    ST_AUDIT_LIST,
    ST_SECTOR_CLAIM,
    ST_SECTOR_OWNER,
    ST_APP_SECTOR,
    ST_FIX_SECTOR,
    ST_KEY_OVERLAP_SINCE,
    ST_REQUEST_PUT,
    ST_REQUEST_BY_ID,
    ST_REQUEST_BY_POLL,
    ST_REQUEST_ANSWER,
    ST_CODE_TAKE,
    ST_CODE_REPLAYED,
    ST_TOKENS_REVOKE,
    ST_TOKEN_PUT,
    ST_TOKEN_GET,
    ST_OIDC_SWEEP,
};

#define REQUEST_COLUMNS                                                                            \
    "app_id, redirect_uri, state, nonce, code_challenge, scope, binding_code, challenge,"          \
    " CASE WHEN expires_at <= now() AND status = 'pending' THEN 'expired' ELSE status END,"        \
    " (extract(epoch FROM expires_at) * 1000)::int8, poll_pk, sealed_code"

static const veil_pg_stmt stmts[] = {
    [ST_LOAD_APPS] = {"gw_load_apps",
                      "SELECT app_id, name, kind, sector_id, attributes, cert_identity,"
                      " organisation, status, sector_fixed, redirect_uris, token_auth, jwks,"
                      " id_token_alg, purposes FROM apps ORDER BY app_id"},
    [ST_REGISTRY_VERSION] = {"gw_registry_version", "SELECT version FROM registry_version"},
    [ST_INSERT_APP] = {"gw_insert_app",
                       "INSERT INTO apps (app_id, name, kind, sector_id, attributes,"
                       " cert_identity, organisation, status, redirect_uris, token_auth, jwks,"
                       " id_token_alg, purposes)"
                       " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"},
    [ST_UPDATE_APP] = {"gw_update_app",
                       "UPDATE apps SET name = $2, kind = $3, sector_id = $4, attributes = $5,"
                       " cert_identity = $6, organisation = $7, redirect_uris = $9,"
                       " token_auth = $10, jwks = $11, id_token_alg = $12, purposes = $13,"
                       " status = $8, updated_at = now() WHERE app_id = $1"},
    [ST_SET_STATUS] = {"gw_set_status",
                       "UPDATE apps SET status = $2, updated_at = now() WHERE app_id = $1"},
    [ST_BUMP_REGISTRY] = {"gw_bump_registry", "UPDATE registry_version SET version = version + 1"},
    /*
     * A batch of fresh challenges (gw_store_challenge_put): $1 and $2 as for
     * gw_challenge_take below, $3 each one's expiry in ms since the epoch,
     * one space between, in the same order.
     */
    [ST_CHALLENGE_PUT] = {"gw_challenge_put",
                          "INSERT INTO challenges (challenge, app_id, expires_at)"
                          " SELECT substring($1::bytea FROM 32 * t.i::int - 31 FOR 32), t.app_id,"
                          " to_timestamp(t.ms / 1000.0)"
                          " FROM unnest(string_to_array($2::text, ' '),"
                          " string_to_array($3::text, ' ')::int8[])"
                          " WITH ORDINALITY AS t(app_id, ms, i)"},
    /*
     * A batch of claims (gw_store_challenge_take): $1 the challenges, 32
     * bytes each, end to end; $2 the app ids in the same order, one space
     * between (app ids are identifiers, never holding a space).  A row goes
     * only to a claim naming both its challenge and its app, as one claim's
     * statement did, so an app never consumes another app's challenge.
     * Whether it was still live comes back with it (an expired one is
     * deleted too, as the sweep would, and serves no claim): in the WHERE
     * clause, under statistics older than a challenge's two minutes, the
     * expiry looked like no row at all and steered the planner to
     * challenges_expiry (docs/performance.md, section 11).
     *
     * Each claim finds its row by primary key in a lateral subquery of its
     * own (LIMIT 1 keeps the planner from flattening it into a join), and the
     * rows found are deleted by their ctid: a plan no statistics can turn
     * into a scan of the table.  A join of the batch with the table, as this
     * statement was, let the planner hash every live challenge for a batch
     * of 60 or more claims, and for fewer when the statistics were older
     * than the challenges (6.6-10.8 ms against ~1 ms for 200 claims with
     * 28,000 live: docs/performance.md, section 12).  Two batches claiming
     * one challenge: the second finds its row deleted when it gets the lock
     * and takes nothing, as before.
     */
    [ST_CHALLENGE_TAKE] = {"gw_challenge_take",
                           "DELETE FROM challenges c WHERE c.ctid = ANY (ARRAY ("
                           "SELECT k.ctid FROM unnest(string_to_array($2::text, ' '))"
                           " WITH ORDINALITY AS t(app_id, i) CROSS JOIN LATERAL ("
                           "SELECT ctid FROM challenges"
                           " WHERE challenge = substring($1::bytea FROM 32 * t.i::int - 31 FOR 32)"
                           " AND app_id = t.app_id LIMIT 1) k))"
                           " RETURNING c.challenge, c.app_id, c.expires_at > now()"},
    [ST_CHALLENGE_SWEEP] = {"gw_challenge_sweep",
                            "DELETE FROM challenges WHERE expires_at <= now()"},
    [ST_KEY_STATE] = {"gw_key_state", "SELECT current_version, coalesce(previous_version, 0)"
                                      " FROM key_state WHERE kind = $1"},
    [ST_KEY_STATE_SET] = {"gw_key_state_set",
                          "UPDATE key_state SET current_version = $2::int8,"
                          " previous_version = nullif($3::int8, 0), version = version + 1,"
                          " updated_at = now() WHERE kind = $1"},
    [ST_AUDIT_APPEND] = {"gw_audit_append",
                         "INSERT INTO admin_audit (actor, method, app_id, identity_ref, detail,"
                         " reason, result) VALUES ($1, $2, $3, $4, $5, $6, $7)"},
    /* $4: an identity reference to match, or '' for every entry. */
    [ST_AUDIT_LIST] = {"gw_audit_list",
                       "SELECT seq, at, actor, method, app_id, identity_ref, detail, reason, result"
                       " FROM admin_audit WHERE seq > $1::int8 AND ($3 = '' OR identity_ref = $3)"
                       " ORDER BY seq LIMIT $2::int8"},
    [ST_VERSIONS] = {"gw_versions", "SELECT (SELECT version FROM registry_version),"
                                    " (SELECT coalesce(sum(version), 0)::int8 FROM key_state)"},
    [ST_KEY_OVERLAP_SINCE] = {"gw_key_overlap_since",
                              "SELECT CASE WHEN previous_version IS NULL THEN 0 ELSE"
                              " (extract(epoch FROM updated_at) * 1000)::int8 END"
                              " FROM key_state WHERE kind = $1"},
    [ST_SECTOR_CLAIM] = {"gw_sector_claim",
                         "INSERT INTO sectors (sector_id, organisation, owner_app)"
                         " VALUES ($1, $2, $3) ON CONFLICT (sector_id) DO NOTHING"},
    [ST_SECTOR_OWNER] = {"gw_sector_owner",
                         "SELECT organisation, owner_app FROM sectors WHERE sector_id = $1"
                         " FOR UPDATE"},
    [ST_APP_SECTOR] = {"gw_app_sector",
                       "SELECT sector_id, sector_fixed FROM apps WHERE app_id = $1 FOR UPDATE"},
    [ST_FIX_SECTOR] =
        {"gw_fix_sector",
         "UPDATE apps SET sector_fixed = true WHERE app_id = $1 AND NOT sector_fixed"},
    [ST_REQUEST_PUT] = {"gw_request_put",
                        "INSERT INTO login_requests (id_hash, poll_hash, poll_pk, app_id,"
                        " redirect_uri, state, nonce, code_challenge, scope, binding_code,"
                        " challenge, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                        " $11, to_timestamp($12::int8 / 1000.0))"},
    [ST_REQUEST_BY_ID] = {"gw_request_by_id",
                          "SELECT " REQUEST_COLUMNS " FROM login_requests WHERE id_hash = $1"},
    [ST_REQUEST_BY_POLL] = {"gw_request_by_poll",
                            "SELECT " REQUEST_COLUMNS " FROM login_requests WHERE poll_hash = $1"},
    [ST_REQUEST_ANSWER] = {"gw_request_answer",
                           "UPDATE login_requests SET status = $2,"
                           " code_hash = nullif($3::bytea, ''::bytea),"
                           " sealed_code = nullif($4::bytea, ''::bytea),"
                           " sealed_result = nullif($5::bytea, ''::bytea),"
                           " expires_at = CASE WHEN $2 = 'approved'"
                           " THEN to_timestamp($6::int8 / 1000.0) ELSE expires_at END"
                           " WHERE id_hash = $1 AND status = 'pending' AND expires_at > now()"},
    [ST_CODE_TAKE] = {"gw_code_take",
                      "UPDATE login_requests SET code_used = true"
                      " WHERE code_hash = $1 AND status = 'approved' AND NOT code_used"
                      " RETURNING " REQUEST_COLUMNS ", sealed_result"},
    [ST_CODE_REPLAYED] = {"gw_code_replayed",
                          "SELECT 1 FROM login_requests WHERE code_hash = $1 AND code_used"},
    [ST_TOKENS_REVOKE] = {"gw_tokens_revoke", "DELETE FROM access_tokens WHERE code_hash = $1"},
    [ST_TOKEN_PUT] = {"gw_token_put",
                      "INSERT INTO access_tokens (token_hash, code_hash, app_id, sealed_claims,"
                      " expires_at) VALUES ($1, $2, $3, $4, to_timestamp($5::int8 / 1000.0))"},
    [ST_TOKEN_GET] = {"gw_token_get", "SELECT app_id, sealed_claims FROM access_tokens"
                                      " WHERE token_hash = $1 AND expires_at > now()"},
    /* Used codes stay a while after they expire, so a late replay still revokes. */
    [ST_OIDC_SWEEP] = {"gw_oidc_sweep",
                       "WITH r AS (DELETE FROM login_requests"
                       " WHERE expires_at <= now() - interval '15 minutes' RETURNING 1),"
                       " t AS (DELETE FROM access_tokens WHERE expires_at <= now() RETURNING 1)"
                       " SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM t)"},
};

veil_err gw_store_open(const char *conninfo, struct gw_store **out)
{
    *out = NULL;
    struct gw_store *s = calloc(1, sizeof *s);
    if (!s)
        return VEIL_ERR_NOMEM;
    veil_err err = veil_db_new(conninfo, stmts, sizeof stmts / sizeof stmts[0], &s->db);
    if (err) {
        free(s);
        return err;
    }
    *out = s;
    return VEIL_OK;
}

void gw_store_close(struct gw_store *s)
{
    if (!s)
        return;
    veil_db_free(s->db);
    free(s);
}

/* Runs one statement on this thread's connection; *res is NULL or a result to PQclear. */
static veil_err run(struct gw_store *s, int stmt, const veil_pg_param *p, int n, PGresult **res)
{
    veil_pg *c;
    veil_err err = veil_db_conn(s->db, &c);
    if (err) {
        *res = NULL;
        return err;
    }
    return veil_pg_exec(c, stmt, p, n, res);
}

/*
 * The sector rules, inside the registry change's transaction (so two admins
 * cannot race an app into a sector): the app's sector is claimed for its
 * organisation if nobody holds it, and must then belong to that organisation
 * (an app without one: be its own); an app that has completed a login keeps
 * its sector.  VEIL_ERR_PRECONDITION with *refusal set when a rule refuses.
 */
static veil_err sector_guard(veil_pg *c, const gw_app *app, const char *organisation, int update,
                             const char **refusal)
{
    PGresult *r = NULL;
    veil_err err;
    if (update) {
        veil_pg_param a[] = {vp_text(app->id)};
        if ((err = veil_pg_exec(c, ST_APP_SECTOR, a, 1, &r)))
            return err;
        int moved = PQntuples(r) == 1 && strcmp(veil_pg_get_text(r, 0, 0), app->sector) != 0;
        int fixed = PQntuples(r) == 1 && veil_pg_get_bool(r, 0, 1);
        PQclear(r);
        if (moved && fixed) {
            *refusal = "sector_id cannot change after the app's first login";
            return VEIL_ERR_PRECONDITION;
        }
    }
    veil_pg_param p[] = {vp_text(app->sector), vp_text(organisation), vp_text(app->id)};
    if ((err = veil_pg_exec(c, ST_SECTOR_CLAIM, p, 3, &r)))
        return err;
    PQclear(r);
    if ((err = veil_pg_exec(c, ST_SECTOR_OWNER, p, 1, &r)))
        return err;
    const char *owner_org = PQntuples(r) == 1 ? veil_pg_get_text(r, 0, 0) : "";
    const char *owner_app = PQntuples(r) == 1 ? veil_pg_get_text(r, 0, 1) : "";
    int ours =
        owner_org[0] ? strcmp(owner_org, organisation) == 0 : strcmp(owner_app, app->id) == 0;
    PQclear(r);
    if (!ours) {
        *refusal = "sector_id belongs to another organisation: an app may join only its own "
                   "organisation's sector";
        return VEIL_ERR_PRECONDITION;
    }
    return VEIL_OK;
}

/*
 * Runs a statement that must change exactly one row, then bumps the registry
 * version; with app set, under the sector rules (sector_guard).
 */
static veil_err change_registry(struct gw_store *s, int stmt, const veil_pg_param *p, int n,
                                const gw_app *app, const char *organisation, const char **refusal)
{
    veil_pg *c;
    PGresult *r = NULL;
    veil_err err = veil_db_conn(s->db, &c);
    if (err)
        return err;
    if ((err = veil_pg_begin(c)))
        return err;
    /* An update checks the old sector before changing it; an insert after (a taken id first). */
    int update = stmt == ST_UPDATE_APP;
    if (app && update && (err = sector_guard(c, app, organisation, 1, refusal)))
        goto out;
    if ((err = veil_pg_exec(c, stmt, p, n, &r)))
        goto out;
    if (atoi(PQcmdTuples(r)) != 1) {
        err = VEIL_ERR_NOT_FOUND;
        goto out;
    }
    PQclear(r);
    r = NULL;
    if (app && !update && (err = sector_guard(c, app, organisation, 0, refusal)))
        goto out;
    if ((err = veil_pg_exec(c, ST_BUMP_REGISTRY, NULL, 0, &r)))
        goto out;
    err = veil_pg_commit(c);
out:
    PQclear(r);
    if (err)
        veil_pg_rollback(c);
    return err;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

veil_err gw_store_load_apps(struct gw_store *s, gw_app **apps, size_t *n, int64_t *version)
{
    PGresult *r = NULL, *v = NULL;
    veil_pg *c;
    *apps = NULL;
    *n = 0;
    veil_err err = veil_db_conn(s->db, &c);
    if (err)
        return err;
    /* One snapshot for the version and the rows. */
    if ((err = veil_pg_simple(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")))
        return err;
    if ((err = veil_pg_exec(c, ST_REGISTRY_VERSION, NULL, 0, &v)) ||
        (err = veil_pg_exec(c, ST_LOAD_APPS, NULL, 0, &r)))
        goto out;
    if ((err = veil_pg_commit(c)))
        goto out;
    int rows = PQntuples(r);
    gw_app *a = calloc(rows ? (size_t)rows : 1, sizeof *a);
    if (!a) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < rows; i++) {
        snprintf(a[i].id, sizeof a[i].id, "%s", veil_pg_get_text(r, i, 0));
        a[i].name = dup_or_empty(veil_pg_get_text(r, i, 1));
        snprintf(a[i].kind, sizeof a[i].kind, "%s", veil_pg_get_text(r, i, 2));
        snprintf(a[i].sector, sizeof a[i].sector, "%s", veil_pg_get_text(r, i, 3));
        if (gw_scope_parse(veil_pg_get_text(r, i, 4), &a[i].scope, NULL, 0) != 0)
            a[i].scope = 0; /* a name no longer in the catalogue grants nothing */
        snprintf(a[i].cert_identity, sizeof a[i].cert_identity, "%s", veil_pg_get_text(r, i, 5));
        a[i].organisation = dup_or_empty(veil_pg_get_text(r, i, 6));
        snprintf(a[i].status, sizeof a[i].status, "%s", veil_pg_get_text(r, i, 7));
        a[i].sector_fixed = veil_pg_get_bool(r, i, 8);
        a[i].redirect_uris = dup_or_empty(veil_pg_get_text(r, i, 9));
        snprintf(a[i].token_auth, sizeof a[i].token_auth, "%s", veil_pg_get_text(r, i, 10));
        a[i].jwks = dup_or_empty(veil_pg_get_text(r, i, 11));
        snprintf(a[i].id_token_alg, sizeof a[i].id_token_alg, "%s", veil_pg_get_text(r, i, 12));
        a[i].purposes = dup_or_empty(veil_pg_get_text(r, i, 13));
        if (!a[i].name || !a[i].organisation || !a[i].redirect_uris || !a[i].jwks ||
            !a[i].purposes) {
            gw_apps_free(a, (size_t)i + 1);
            err = VEIL_ERR_NOMEM;
            goto out;
        }
    }
    *apps = a;
    *n = (size_t)rows;
    *version = veil_pg_get_i64(v, 0, 0);
out:
    PQclear(r);
    PQclear(v);
    if (err)
        veil_pg_rollback(c);
    return err;
}

static void app_params(const gw_app *app, const char *name, const char *organisation, char *scope,
                       size_t scope_len, veil_pg_param p[13])
{
    gw_scope_format(app->scope, scope, scope_len);
    p[0] = vp_text(app->id);
    p[1] = vp_text(name);
    p[2] = vp_text(app->kind);
    p[3] = vp_text(app->sector);
    p[4] = vp_text(scope);
    p[5] = vp_text(app->cert_identity);
    p[6] = vp_text(organisation);
    p[7] = vp_text(app->status);
    p[8] = vp_text(app->redirect_uris ? app->redirect_uris : "");
    p[9] = vp_text(app->token_auth[0] ? app->token_auth : "tls_client_auth");
    p[10] = vp_text(app->jwks ? app->jwks : "");
    p[11] = vp_text(app->id_token_alg[0] ? app->id_token_alg : "EdDSA");
    p[12] = vp_text(app->purposes ? app->purposes : "{}");
}

veil_err gw_store_insert_app(struct gw_store *s, const gw_app *app, const char *name,
                             const char *organisation, const char **refusal)
{
    char scope[512];
    veil_pg_param p[13];
    const char *ignored;
    app_params(app, name, organisation, scope, sizeof scope, p);
    return change_registry(s, ST_INSERT_APP, p, 13, app, organisation ? organisation : "",
                           refusal ? refusal : &ignored);
}

veil_err gw_store_update_app(struct gw_store *s, const gw_app *app, const char *name,
                             const char *organisation, const char **refusal)
{
    char scope[512];
    veil_pg_param p[13];
    const char *ignored;
    app_params(app, name, organisation, scope, sizeof scope, p);
    return change_registry(s, ST_UPDATE_APP, p, 13, app, organisation ? organisation : "",
                           refusal ? refusal : &ignored);
}

veil_err gw_store_set_app_status(struct gw_store *s, const char *id, const char *status)
{
    veil_pg_param p[] = {vp_text(id), vp_text(status)};
    return change_registry(s, ST_SET_STATUS, p, 2, NULL, NULL, NULL);
}

veil_err gw_store_fix_sector(struct gw_store *s, const char *app_id)
{
    PGresult *r;
    veil_pg_param p[] = {vp_text(app_id)};
    veil_err err = run(s, ST_FIX_SECTOR, p, 1, &r);
    PQclear(r);
    return err;
}

/*
 * The batched statements' parameters: the challenges end to end, the app ids
 * one space between, and (when expiries is not NULL) the expiries likewise.
 */
static veil_err claims_params(gw_challenge_claim *const *claims, size_t n, veil_buf *bytes,
                              veil_buf *apps, veil_buf *expiries)
{
    for (size_t i = 0; i < n; i++) {
        veil_buf_put(bytes, claims[i]->challenge, 32);
        if (i)
            veil_buf_put_u8(apps, ' ');
        veil_buf_put(apps, claims[i]->app_id, strlen(claims[i]->app_id));
        if (expiries) {
            char ms[24];
            int len = snprintf(ms, sizeof ms, "%s%lld", i ? " " : "",
                               (long long)claims[i]->expires_at_ms);
            veil_buf_put(expiries, ms, (size_t)len);
        }
    }
    veil_buf_put_u8(apps, 0);
    if (expiries)
        veil_buf_put_u8(expiries, 0);
    return bytes->failed || apps->failed || (expiries && expiries->failed) ? VEIL_ERR_NOMEM
                                                                           : VEIL_OK;
}

veil_err gw_store_challenge_put(struct gw_store *s, gw_challenge_claim *const *claims, size_t n)
{
    veil_buf bytes = {0}, apps = {0}, expiries = {0};
    PGresult *r = NULL;
    veil_err err = claims_params(claims, n, &bytes, &apps, &expiries);
    if (!err) {
        veil_pg_param p[] = {vp_bytes(bytes.data, bytes.len), vp_text((const char *)apps.data),
                             vp_text((const char *)expiries.data)};
        err = run(s, ST_CHALLENGE_PUT, p, 3, &r);
    }
    for (size_t i = 0; i < n; i++)
        claims[i]->err = err;
    PQclear(r);
    veil_buf_free(&bytes);
    veil_buf_free(&apps);
    veil_buf_free(&expiries);
    return err;
}

veil_err gw_store_challenge_take(struct gw_store *s, gw_challenge_claim *const *claims, size_t n)
{
    veil_buf bytes = {0}, apps = {0};
    PGresult *r = NULL;
    for (size_t i = 0; i < n; i++)
        claims[i]->err = VEIL_ERR_NOT_FOUND; /* until a returned row says it was taken */
    veil_err err = claims_params(claims, n, &bytes, &apps, NULL);
    if (!err) {
        veil_pg_param p[] = {vp_bytes(bytes.data, bytes.len), vp_text((const char *)apps.data)};
        err = run(s, ST_CHALLENGE_TAKE, p, 2, &r);
    }
    /* each row taken goes to the first claim naming it (the same challenge twice: once) */
    for (int row = 0; !err && row < PQntuples(r); row++) {
        size_t len;
        const unsigned char *c = veil_pg_get_bytes(r, row, 0, &len);
        const char *app = veil_pg_get_text(r, row, 1);
        if (!veil_pg_get_bool(r, row, 2))
            continue; /* expired: deleted, and no claim's */
        for (size_t i = 0; len == 32 && i < n; i++)
            if (claims[i]->err == VEIL_ERR_NOT_FOUND && memcmp(claims[i]->challenge, c, 32) == 0 &&
                strcmp(claims[i]->app_id, app) == 0) {
                claims[i]->err = VEIL_OK;
                break;
            }
    }
    for (size_t i = 0; err && i < n; i++)
        claims[i]->err = err;
    PQclear(r);
    veil_buf_free(&bytes);
    veil_buf_free(&apps);
    return err;
}

veil_err gw_store_challenge_sweep(struct gw_store *s, int64_t *removed)
{
    PGresult *r;
    veil_err err = run(s, ST_CHALLENGE_SWEEP, NULL, 0, &r);
    *removed = err ? 0 : atoll(PQcmdTuples(r));
    PQclear(r);
    return err;
}

veil_err gw_store_key_state(struct gw_store *s, const char *kind, uint32_t *current,
                            uint32_t *previous)
{
    PGresult *r;
    veil_pg_param p[] = {vp_text(kind)};
    veil_err err = run(s, ST_KEY_STATE, p, 1, &r);
    if (!err && PQntuples(r) != 1)
        err = VEIL_ERR_NOT_FOUND;
    if (!err) {
        *current = (uint32_t)veil_pg_get_i64(r, 0, 0);
        *previous = (uint32_t)veil_pg_get_i64(r, 0, 1);
    }
    PQclear(r);
    return err;
}

veil_err gw_store_key_state_set(struct gw_store *s, const char *kind, uint32_t current,
                                uint32_t previous)
{
    PGresult *r;
    veil_pg_param p[] = {vp_text(kind), vp_i64(current), vp_i64(previous)};
    veil_err err = run(s, ST_KEY_STATE_SET, p, 3, &r);
    if (!err && atoi(PQcmdTuples(r)) != 1)
        err = VEIL_ERR_NOT_FOUND;
    PQclear(r);
    return err;
}

veil_err gw_store_versions(struct gw_store *s, int64_t *registry, int64_t *keys)
{
    PGresult *r;
    veil_err err = run(s, ST_VERSIONS, NULL, 0, &r);
    if (!err) {
        *registry = veil_pg_get_i64(r, 0, 0);
        *keys = veil_pg_get_i64(r, 0, 1);
    }
    PQclear(r);
    return err;
}

veil_err gw_store_key_overlap_since(struct gw_store *s, const char *kind, int64_t *since_ms)
{
    PGresult *r;
    veil_pg_param p[] = {vp_text(kind)};
    *since_ms = 0;
    veil_err err = run(s, ST_KEY_OVERLAP_SINCE, p, 1, &r);
    if (!err && PQntuples(r) == 1)
        *since_ms = veil_pg_get_i64(r, 0, 0);
    PQclear(r);
    return err;
}

/* ---- OpenID Connect login requests and access tokens ---- */

veil_err gw_store_request_put(struct gw_store *s, const unsigned char id_hash[32],
                              const unsigned char poll_hash[32], const gw_login_request *r)
{
    PGresult *res;
    char scope[512];
    gw_scope_format(r->scope, scope, sizeof scope);
    veil_pg_param p[] = {
        vp_bytes(id_hash, 32),    vp_bytes(poll_hash, 32),    vp_bytes(r->poll_pk, 32),
        vp_text(r->app_id),       vp_text(r->redirect_uri),   vp_text(r->state),
        vp_text(r->nonce),        vp_text(r->code_challenge), vp_text(scope),
        vp_text(r->binding_code), vp_bytes(r->challenge, 32), vp_i64(r->expires_at_ms)};
    veil_err err = run(s, ST_REQUEST_PUT, p, 12, &res);
    PQclear(res);
    return err;
}

static unsigned char *dup_bytes(const PGresult *r, int col, size_t *len)
{
    *len = 0;
    if (PQgetisnull(r, 0, col))
        return NULL;
    const unsigned char *b = veil_pg_get_bytes(r, 0, col, len);
    unsigned char *out = malloc(*len ? *len : 1);
    if (out)
        memcpy(out, b, *len);
    return out;
}

/* Fills a request from the columns of REQUEST_COLUMNS in row 0. */
static void request_from_row(const PGresult *res, gw_login_request *r)
{
    size_t n;
    memset(r, 0, sizeof *r);
    snprintf(r->app_id, sizeof r->app_id, "%s", veil_pg_get_text(res, 0, 0));
    snprintf(r->redirect_uri, sizeof r->redirect_uri, "%s", veil_pg_get_text(res, 0, 1));
    snprintf(r->state, sizeof r->state, "%s", veil_pg_get_text(res, 0, 2));
    snprintf(r->nonce, sizeof r->nonce, "%s", veil_pg_get_text(res, 0, 3));
    snprintf(r->code_challenge, sizeof r->code_challenge, "%s", veil_pg_get_text(res, 0, 4));
    if (gw_scope_parse(veil_pg_get_text(res, 0, 5), &r->scope, NULL, 0) != 0)
        r->scope = 0;
    snprintf(r->binding_code, sizeof r->binding_code, "%s", veil_pg_get_text(res, 0, 6));
    const unsigned char *c = veil_pg_get_bytes(res, 0, 7, &n);
    if (n == 32)
        memcpy(r->challenge, c, 32);
    snprintf(r->status, sizeof r->status, "%s", veil_pg_get_text(res, 0, 8));
    r->expires_at_ms = veil_pg_get_i64(res, 0, 9);
    c = veil_pg_get_bytes(res, 0, 10, &n);
    if (n == 32)
        memcpy(r->poll_pk, c, 32);
}

veil_err gw_store_request_get(struct gw_store *s, int by_poll, const unsigned char hash[32],
                              gw_login_request *r, unsigned char **sealed_code, size_t *sealed_len)
{
    PGresult *res;
    veil_pg_param p[] = {vp_bytes(hash, 32)};
    if (sealed_code)
        *sealed_code = NULL;
    veil_err err = run(s, by_poll ? ST_REQUEST_BY_POLL : ST_REQUEST_BY_ID, p, 1, &res);
    if (!err && PQntuples(res) != 1)
        err = VEIL_ERR_NOT_FOUND;
    if (!err) {
        request_from_row(res, r);
        if (sealed_code) {
            *sealed_code = dup_bytes(res, 11, sealed_len);
            if (!*sealed_code && !PQgetisnull(res, 0, 11))
                err = VEIL_ERR_NOMEM;
        }
    }
    PQclear(res);
    return err;
}

veil_err gw_store_request_answer(struct gw_store *s, const unsigned char id_hash[32],
                                 const char *status, const unsigned char *code_hash,
                                 const unsigned char *sealed_code, size_t sealed_code_len,
                                 const unsigned char *sealed_result, size_t sealed_result_len,
                                 int64_t expires_at_ms)
{
    PGresult *res;
    veil_pg_param p[] = {vp_bytes(id_hash, 32),
                         vp_text(status),
                         vp_bytes(code_hash, code_hash ? 32 : 0),
                         vp_bytes(sealed_code, sealed_code_len),
                         vp_bytes(sealed_result, sealed_result_len),
                         vp_i64(expires_at_ms)};
    veil_err err = run(s, ST_REQUEST_ANSWER, p, 6, &res);
    if (!err && atoi(PQcmdTuples(res)) != 1)
        err = VEIL_ERR_PRECONDITION;
    PQclear(res);
    return err;
}

veil_err gw_store_code_take(struct gw_store *s, const unsigned char code_hash[32],
                            gw_login_request *r, unsigned char **sealed_result, size_t *sealed_len)
{
    PGresult *res;
    veil_pg_param p[] = {vp_bytes(code_hash, 32)};
    *sealed_result = NULL;
    veil_err err = run(s, ST_CODE_TAKE, p, 1, &res);
    if (err)
        return err;
    if (PQntuples(res) == 1) {
        request_from_row(res, r);
        *sealed_result = dup_bytes(res, 12, sealed_len);
        PQclear(res);
        return *sealed_result ? VEIL_OK : VEIL_ERR_INTERNAL;
    }
    PQclear(res);
    /* Not takeable: a replay of a used code revokes what was issued from it. */
    if ((err = run(s, ST_CODE_REPLAYED, p, 1, &res)))
        return err;
    int replayed = PQntuples(res) == 1;
    PQclear(res);
    if (!replayed)
        return VEIL_ERR_NOT_FOUND;
    if ((err = run(s, ST_TOKENS_REVOKE, p, 1, &res)))
        return err;
    PQclear(res);
    return VEIL_ERR_ABORTED;
}

veil_err gw_store_token_put(struct gw_store *s, const unsigned char token_hash[32],
                            const unsigned char code_hash[32], const char *app_id,
                            const unsigned char *sealed, size_t sealed_len, int64_t expires_at_ms)
{
    PGresult *res;
    veil_pg_param p[] = {vp_bytes(token_hash, 32), vp_bytes(code_hash, 32), vp_text(app_id),
                         vp_bytes(sealed, sealed_len), vp_i64(expires_at_ms)};
    veil_err err = run(s, ST_TOKEN_PUT, p, 5, &res);
    PQclear(res);
    return err;
}

veil_err gw_store_token_get(struct gw_store *s, const unsigned char token_hash[32], char app_id[65],
                            unsigned char **sealed, size_t *sealed_len)
{
    PGresult *res;
    veil_pg_param p[] = {vp_bytes(token_hash, 32)};
    *sealed = NULL;
    veil_err err = run(s, ST_TOKEN_GET, p, 1, &res);
    if (!err && PQntuples(res) != 1)
        err = VEIL_ERR_NOT_FOUND;
    if (!err) {
        snprintf(app_id, 65, "%s", veil_pg_get_text(res, 0, 0));
        if (!(*sealed = dup_bytes(res, 1, sealed_len)))
            err = VEIL_ERR_NOMEM;
    }
    PQclear(res);
    return err;
}

veil_err gw_store_oidc_sweep(struct gw_store *s, int64_t *removed)
{
    PGresult *res;
    veil_err err = run(s, ST_OIDC_SWEEP, NULL, 0, &res);
    *removed = err ? 0 : veil_pg_get_i64(res, 0, 0);
    PQclear(res);
    return err;
}

veil_err gw_store_audit_append(struct gw_store *s, const gw_audit_row *row)
{
    PGresult *r;
    veil_pg_param p[] = {vp_text(row->actor),        vp_text(row->method), vp_text(row->app_id),
                         vp_text(row->identity_ref), vp_text(row->detail), vp_text(row->reason),
                         vp_text(row->result)};
    veil_err err = run(s, ST_AUDIT_APPEND, p, 7, &r);
    PQclear(r);
    return err;
}

veil_err gw_store_audit_list(struct gw_store *s, int64_t after_seq, uint32_t max,
                             const char *identity_ref,
                             void (*fn)(const gw_audit_row *row, void *ctx), void *ctx)
{
    PGresult *r;
    veil_pg_param p[] = {vp_i64(after_seq), vp_i64(max), vp_text(identity_ref)};
    veil_err err = run(s, ST_AUDIT_LIST, p, 3, &r);
    for (int i = 0; !err && i < PQntuples(r); i++) {
        gw_audit_row row = {
            .seq = veil_pg_get_i64(r, i, 0),
            .at_ms = veil_pg_get_time_ms(r, i, 1),
            .actor = veil_pg_get_text(r, i, 2),
            .method = veil_pg_get_text(r, i, 3),
            .app_id = veil_pg_get_text(r, i, 4),
            .identity_ref = veil_pg_get_text(r, i, 5),
            .detail = veil_pg_get_text(r, i, 6),
            .reason = veil_pg_get_text(r, i, 7),
            .result = veil_pg_get_text(r, i, 8),
        };
        fn(&row, ctx);
    }
    PQclear(r);
    return err;
}
