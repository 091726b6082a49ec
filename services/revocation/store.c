/*
 * store.c - the revocation service's PostgreSQL store, the only file of the
 * service that speaks SQL.  Every mutation is one transaction that ends by
 * appending its change to the feed (veil/feedlog.h), so a change is either
 * committed together with its feed entry and app events or not at all.
 */
#include <stdlib.h>
#include <string.h>

#include "revocation.h"
#include "veil/feedlog.h"
#include "veil/pg.h"
#include "veil/pgarray.h"

enum {
    ST_FACTS,
    ST_REVOKE_DEVICE,
    ST_IDENTITY_ENSURE,
    ST_IDENTITY_LOCK,
    ST_IDENTITY_SET,
    ST_LINKED_APPS,
    ST_LINK_KEYS,
    ST_UNLINK,
    ST_LINK_LOCK,
    ST_RELINK,
    ST_LOGIN_RELINK,
    ST_LOGIN_CREATE,
    ST_LINK_EPOCH,
    ST_APP_ENSURE,
    ST_APP_LOCK,
    ST_APP_SET,
    ST_IDENTITY_OF,
    ST_FORGET,
    ST_FEED,
    ST_COUNT = ST_FEED + VEIL_FEEDLOG_N_STMTS
};

static const veil_pg_stmt stmts[ST_COUNT] = {
    /*
     * The facts of a batch of (subject, device, app) triples, or of one, in
     * one statement: one row per triple, in the order given ($1 the
     * subjects, $2 the devices, $3 the apps, arrays of the same length).
     */
    [ST_FACTS] =
        {"facts",
         "SELECT i.state,"
         " EXISTS (SELECT 1 FROM revoked_devices d WHERE d.subject_ref = q.s AND d.device_id = q.d),"
         " a.state, l.linked, l.epoch, l.key_version, l.previous_key_version"
         " FROM unnest($1::bytea[], $2::text[], $3::text[]) WITH ORDINALITY AS q(s, d, a, n)"
         " LEFT JOIN identities i ON i.subject_ref = q.s"
         " LEFT JOIN apps a ON a.app_id = q.a"
         " LEFT JOIN app_links l ON l.subject_ref = q.s AND l.app_id = q.a"
         " ORDER BY q.n"},
    [ST_REVOKE_DEVICE] = {"revoke_device",
                          "INSERT INTO revoked_devices (subject_ref, device_id, revoked_at)"
                          " VALUES ($1, $2, now()) ON CONFLICT DO NOTHING RETURNING 1"},
    /* A row to lock even for a subject never seen: concurrent first changes then queue. */
    [ST_IDENTITY_ENSURE] = {"identity_ensure",
                            "INSERT INTO identities (subject_ref, state, changed_at)"
                            " VALUES ($1, 'active', now()) ON CONFLICT DO NOTHING"},
    [ST_IDENTITY_LOCK] = {"identity_lock",
                          "SELECT state FROM identities WHERE subject_ref = $1 FOR UPDATE"},
    [ST_IDENTITY_SET] = {"identity_set",
                         "UPDATE identities SET state = $2, reason = $3, changed_at = now()"
                         " WHERE subject_ref = $1"},
    [ST_LINKED_APPS] = {"linked_apps",
                        "SELECT app_id, epoch, key_version, previous_key_version FROM app_links"
                        " WHERE subject_ref = $1 AND linked"
                        " ORDER BY app_id"},
    [ST_UNLINK] = {"unlink", "UPDATE app_links SET linked = false, changed_at = now()"
                             " WHERE subject_ref = $1 AND app_id = $2 AND linked"
                             " RETURNING epoch, key_version, previous_key_version"},
    [ST_LINK_LOCK] = {"link_lock",
                      "SELECT linked, epoch FROM app_links WHERE subject_ref = $1 AND app_id = $2"
                      " FOR UPDATE"},
    [ST_RELINK] =
        {"relink",
         "UPDATE app_links SET linked = true, epoch = epoch + $3::int8, changed_at = now()"
         " WHERE subject_ref = $1 AND app_id = $2 RETURNING epoch"},
    /* Only if still unlinked: two logins racing re-link once, not twice. */
    [ST_LOGIN_RELINK] = {"login_relink",
                         "UPDATE app_links SET linked = true, epoch = epoch + 1, changed_at = now()"
                         " WHERE subject_ref = $1 AND app_id = $2 AND NOT linked RETURNING epoch"},
    [ST_LOGIN_CREATE] = {"login_create",
                         "INSERT INTO app_links (subject_ref, app_id, epoch, linked, changed_at)"
                         " VALUES ($1, $2, 0, true, now()) ON CONFLICT DO NOTHING RETURNING epoch"},
    [ST_LINK_EPOCH] = {"link_epoch",
                       "SELECT epoch FROM app_links WHERE subject_ref = $1 AND app_id = $2"},
    [ST_LINK_KEYS] = {"link_keys",
                      "UPDATE app_links SET key_version = $3::int8,"
                      " previous_key_version = $4::int8 WHERE subject_ref = $1 AND app_id = $2"},
    [ST_APP_ENSURE] = {"app_ensure",
                       "INSERT INTO apps (app_id, state, changed_at) VALUES ($1, 'active', now())"
                       " ON CONFLICT DO NOTHING"},
    [ST_APP_LOCK] = {"app_lock", "SELECT state FROM apps WHERE app_id = $1 FOR UPDATE"},
    [ST_APP_SET] =
        {"app_set",
         "UPDATE apps SET state = $2, reason = $3, changed_at = now() WHERE app_id = $1"},
    [ST_IDENTITY_OF] = {"identity_of",
                        "SELECT state, reason FROM identities WHERE subject_ref = $1"},
    /* Everything this service holds about one subject, in one statement. */
    [ST_FORGET] = {"forget",
                   "WITH i AS (DELETE FROM identities WHERE subject_ref = $1 RETURNING 1),"
                   " d AS (DELETE FROM revoked_devices WHERE subject_ref = $1 RETURNING 1),"
                   " l AS (DELETE FROM app_links WHERE subject_ref = $1 RETURNING 1)"
                   " SELECT (SELECT count(*) FROM i) + (SELECT count(*) FROM d)"
                   " + (SELECT count(*) FROM l)"},
    VEIL_FEEDLOG_STMTS(ST_FEED),
};

struct revocation_store {
    veil_db *db;
};

static const char *const identity_names[] = {"active", "suspended", "revoked"};
static const char *const app_names[] = {"active", "revoked"};

static revocation_identity_state identity_from(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, identity_names[i]) == 0)
            return (revocation_identity_state)i;
    return VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE;
}

veil_err revocation_store_open(const char *conninfo, struct revocation_store **out)
{
    *out = NULL;
    struct revocation_store *s = calloc(1, sizeof *s);
    if (!s)
        return VEIL_ERR_NOMEM;
    veil_err err = veil_db_new(conninfo, stmts, ST_COUNT, &s->db);
    if (err) {
        free(s);
        return err;
    }
    *out = s;
    return VEIL_OK;
}

void revocation_store_close(struct revocation_store *s)
{
    if (!s)
        return;
    veil_db_free(s->db);
    free(s);
}

/*
 * Ends a transaction that may have found nothing to do: commits only when
 * *changed, otherwise (nothing to change, or a failure) rolls back.
 */
static veil_err finish_if_changed(veil_pg *c, veil_err err, int *changed)
{
    if (!*changed) {
        veil_pg_rollback(c);
        return err;
    }
    err = veil_pg_end(c, err);
    if (err)
        *changed = 0;
    return err;
}

/* Runs a statement that returns at most one row; *found says whether it did. */
static veil_err one_row(veil_pg *c, int stmt, const veil_pg_param *p, int n, PGresult **r,
                        int *found)
{
    veil_err err = veil_pg_exec(c, stmt, p, n, r);
    *found = !err && PQntuples(*r) > 0;
    return err;
}

veil_err revocation_store_facts(struct revocation_store *s, const unsigned char *subject,
                                const char *device_id, const char *app_id,
                                struct revocation_facts *out)
{
    struct revocation_key k = {subject, device_id, app_id};
    return revocation_store_facts_batch(s, &k, 1, out);
}

veil_err revocation_store_facts_batch(struct revocation_store *s, const struct revocation_key *keys,
                                      size_t n, struct revocation_facts *out)
{
    veil_buf a[3] = {{0}};
    veil_pg *c;
    PGresult *r = NULL;
    veil_err err = VEIL_ERR_NOMEM;
    memset(out, 0, n * sizeof *out);
    veil_pgarray_begin(&a[0], VEIL_OID_BYTEA, n);
    veil_pgarray_begin(&a[1], VEIL_OID_TEXT, n);
    veil_pgarray_begin(&a[2], VEIL_OID_TEXT, n);
    for (size_t i = 0; i < n; i++) {
        veil_pgarray_put(&a[0], keys[i].subject, REVOCATION_SUBJECT_BYTES);
        veil_pgarray_put(&a[1], keys[i].device_id, strlen(keys[i].device_id));
        veil_pgarray_put(&a[2], keys[i].app_id, strlen(keys[i].app_id));
    }
    if (a[0].failed || a[1].failed || a[2].failed)
        goto out;
    if ((err = veil_db_conn(s->db, &c)))
        goto out;
    veil_pg_param p[] = {vp_bytes(a[0].data, a[0].len), vp_bytes(a[1].data, a[1].len),
                         vp_bytes(a[2].data, a[2].len)};
    if ((err = veil_pg_exec(c, ST_FACTS, p, 3, &r)))
        goto out;
    err = (size_t)PQntuples(r) == n ? VEIL_OK : VEIL_ERR_INTERNAL;
    for (int row = 0; !err && row < (int)n; row++) {
        struct revocation_facts *f = &out[row];
        f->identity = identity_from(veil_pg_get_text(r, row, 0));
        f->device_revoked = veil_pg_get_bool(r, row, 1);
        f->app_revoked = strcmp(veil_pg_get_text(r, row, 2), "revoked") == 0;
        f->has_link = !veil_pg_is_null(r, row, 3);
        f->linked = veil_pg_get_bool(r, row, 3);
        f->epoch = (uint32_t)veil_pg_get_i64(r, row, 4);
        f->key_version = f->has_link ? (uint32_t)veil_pg_get_i64(r, row, 5) : 0;
        f->previous_key_version = f->has_link ? (uint32_t)veil_pg_get_i64(r, row, 6) : 0;
    }
out:
    PQclear(r);
    for (int k = 0; k < 3; k++)
        veil_buf_free(&a[k]);
    return err;
}

veil_err revocation_store_revoke_device(struct revocation_store *s, const unsigned char *subject,
                                        const char *device_id, int *changed)
{
    veil_pg *c;
    PGresult *r = NULL;
    int64_t seq;
    *changed = 0;
    veil_err err = veil_db_begin(s->db, &c);
    if (err)
        return err;
    veil_pg_param p[] = {vp_bytes(subject, REVOCATION_SUBJECT_BYTES), vp_text(device_id)};
    err = one_row(c, ST_REVOKE_DEVICE, p, 2, &r, changed);
    if (!err && *changed) {
        veil_feed_change ch = {
            .kind = "device_revoked", .subject_ref = subject, .device_id = device_id};
        err = veil_feedlog_append(c, ST_FEED, &ch, &seq);
    }
    PQclear(r);
    return veil_pg_end(c, err);
}

/* Tells every app the subject is linked with, each at its own link epoch. */
static veil_err fan_out(veil_pg *c, const unsigned char *subject, const char *kind)
{
    PGresult *r;
    veil_pg_param p = vp_bytes(subject, REVOCATION_SUBJECT_BYTES);
    veil_err err = veil_pg_exec(c, ST_LINKED_APPS, &p, 1, &r);
    for (int i = 0; !err && i < PQntuples(r); i++) {
        veil_app_view view = {(uint32_t)veil_pg_get_i64(r, i, 1),
                              (uint32_t)veil_pg_get_i64(r, i, 2),
                              (uint32_t)veil_pg_get_i64(r, i, 3)};
        err = veil_feedlog_app_event(c, ST_FEED, veil_pg_get_text(r, i, 0), kind, subject, &view,
                                     NULL, 0);
    }
    PQclear(r);
    return err;
}

veil_err revocation_store_set_identity(struct revocation_store *s, const unsigned char *subject,
                                       revocation_identity_state state, const char *reason,
                                       int *changed)
{
    veil_pg *c;
    PGresult *r = NULL;
    int found;
    int64_t seq;
    *changed = 0;
    veil_err err = veil_db_begin(s->db, &c);
    if (err)
        return err;
    veil_pg_param key = vp_bytes(subject, REVOCATION_SUBJECT_BYTES);
    err = veil_pg_exec(c, ST_IDENTITY_ENSURE, &key, 1, &r);
    PQclear(r);
    r = NULL;
    if (!err)
        err = one_row(c, ST_IDENTITY_LOCK, &key, 1, &r, &found);
    if (err)
        goto out;
    revocation_identity_state now = found ? identity_from(veil_pg_get_text(r, 0, 0))
                                          : VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE;
    if (now == state)
        goto out; /* nothing to change: no change recorded, rolled back */
    if (now == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_REVOKED) {
        err = VEIL_ERR_PRECONDITION;
        goto out;
    }
    PQclear(r);
    veil_pg_param p[] = {key, vp_text(identity_names[state]), vp_text(reason)};
    err = veil_pg_exec(c, ST_IDENTITY_SET, p, 3, &r);
    const char *kind =
        state == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE      ? "identity_reinstated"
        : state == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_SUSPENDED ? "identity_suspended"
                                                                        : "identity_revoked";
    veil_feed_change ch = {.kind = kind, .subject_ref = subject};
    if (!err)
        err = veil_feedlog_append(c, ST_FEED, &ch, &seq);
    if (!err)
        err = fan_out(c, subject, kind);
    *changed = !err;
out:
    PQclear(r);
    return finish_if_changed(c, err, changed);
}

veil_err revocation_store_erasure_plan(struct revocation_store *s, const unsigned char *subject,
                                       ProtobufCAllocator *alloc,
                                       Veil__Revocation__ErasurePlanResponse *resp)
{
    veil_pg *c;
    PGresult *r = NULL;
    veil_pg_param key = vp_bytes(subject, REVOCATION_SUBJECT_BYTES);
    veil_err err = veil_db_conn(s->db, &c);
    if (!err)
        err = veil_pg_exec(c, ST_IDENTITY_OF, &key, 1, &r);
    if (err)
        goto out;
    if (PQntuples(r) == 1) {
        resp->state = identity_from(veil_pg_get_text(r, 0, 0));
        resp->reason = veil_reply_strdup(alloc, veil_pg_get_text(r, 0, 1));
        if (!resp->reason) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
    }
    PQclear(r);
    if ((err = veil_pg_exec(c, ST_LINKED_APPS, &key, 1, &r)))
        goto out;
    size_t n = (size_t)PQntuples(r);
    resp->links = alloc->alloc(alloc->allocator_data, (n ? n : 1) * sizeof *resp->links);
    if (!resp->links) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        Veil__Revocation__LinkedApp *l = alloc->alloc(alloc->allocator_data, sizeof *l);
        if (!l) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
        veil__revocation__linked_app__init(l);
        l->app_id = veil_reply_strdup(alloc, veil_pg_get_text(r, (int)i, 0));
        l->link_epoch = (uint32_t)veil_pg_get_i64(r, (int)i, 1);
        l->key_version = (uint32_t)veil_pg_get_i64(r, (int)i, 2);
        l->previous_key_version = (uint32_t)veil_pg_get_i64(r, (int)i, 3);
        if (!l->app_id) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
        resp->links[resp->n_links++] = l;
    }
out:
    PQclear(r);
    return err;
}

veil_err revocation_store_forget(struct revocation_store *s, const unsigned char *subject,
                                 Veil__Revocation__ErasureNotice *const *notices, size_t n)
{
    veil_pg *c;
    PGresult *r = NULL;
    veil_err err = veil_db_begin(s->db, &c);
    if (err)
        return err;
    veil_pg_param key = vp_bytes(subject, REVOCATION_SUBJECT_BYTES);
    err = veil_pg_exec(c, ST_FORGET, &key, 1, &r);
    /* the notices to queue count as something to tell, even for a subject with no rows left */
    if (!err)
        err = veil_feedlog_forget(c, ST_FEED, subject, "subject_forgotten",
                                  veil_pg_get_i64(r, 0, 0) + (int64_t)n);
    for (size_t i = 0; !err && i < n; i++)
        err = veil_feedlog_app_notice(c, ST_FEED, notices[i]->app_id, "identity_erased",
                                      notices[i]->pseudonym, notices[i]->previous_pseudonym);
    PQclear(r);
    return veil_pg_end(c, err);
}

/* Begins a transaction that changes a link; *epoch is 0 until it succeeds. */
static veil_err begin_link(struct revocation_store *s, veil_pg **c, uint32_t *epoch)
{
    *epoch = 0;
    return veil_db_begin(s->db, c);
}

/* Appends the feed change of a link (kind app_unlinked or app_relinked). */
static veil_err link_change(veil_pg *c, const char *kind, const unsigned char *subject,
                            const char *app_id)
{
    int64_t seq;
    veil_feed_change ch = {.kind = kind, .subject_ref = subject, .app_id = app_id};
    return veil_feedlog_append(c, ST_FEED, &ch, &seq);
}

veil_err revocation_store_unlink(struct revocation_store *s, const unsigned char *subject,
                                 const char *app_id, uint32_t *epoch)
{
    veil_pg *c;
    PGresult *r = NULL;
    int found;
    veil_err err = begin_link(s, &c, epoch);
    if (err)
        return err;
    veil_pg_param p[] = {vp_bytes(subject, REVOCATION_SUBJECT_BYTES), vp_text(app_id)};
    err = one_row(c, ST_UNLINK, p, 2, &r, &found);
    if (!err && !found)
        err = VEIL_ERR_NOT_FOUND;
    if (err)
        goto out;
    *epoch = (uint32_t)veil_pg_get_i64(r, 0, 0);
    veil_app_view view = {*epoch, (uint32_t)veil_pg_get_i64(r, 0, 1),
                          (uint32_t)veil_pg_get_i64(r, 0, 2)};
    err = link_change(c, "app_unlinked", subject, app_id);
    if (!err)
        err = veil_feedlog_app_event(c, ST_FEED, app_id, "app_unlinked", subject, &view, NULL, 0);
out:
    PQclear(r);
    return veil_pg_end(c, err);
}

veil_err revocation_store_relink(struct revocation_store *s, const unsigned char *subject,
                                 const char *app_id, int keep, uint32_t *epoch)
{
    veil_pg *c;
    PGresult *r = NULL;
    int found;
    veil_err err = begin_link(s, &c, epoch);
    if (err)
        return err;
    veil_pg_param p[] = {vp_bytes(subject, REVOCATION_SUBJECT_BYTES), vp_text(app_id),
                         vp_i64(keep ? 0 : 1)};
    err = one_row(c, ST_LINK_LOCK, p, 2, &r, &found);
    if (!err && !found)
        err = VEIL_ERR_NOT_FOUND;
    else if (!err && veil_pg_get_bool(r, 0, 0))
        err = VEIL_ERR_PRECONDITION;
    PQclear(r);
    r = NULL;
    if (err)
        goto out;
    err = one_row(c, ST_RELINK, p, 3, &r, &found);
    if (err)
        goto out;
    *epoch = (uint32_t)veil_pg_get_i64(r, 0, 0);
    err = link_change(c, "app_relinked", subject, app_id);
out:
    PQclear(r);
    return veil_pg_end(c, err);
}

/*
 * A login's link, inside the caller's transaction: re-links an unlinked one
 * under a fresh epoch (a change), or creates a missing one at epoch 0;
 * *epoch is the link's epoch afterwards.  VEIL_ERR_ABORTED: the link was
 * neither there nor creatable (an erasure raced the login).
 */
static veil_err login_link(veil_pg *c, const unsigned char *subject, const char *app_id,
                           uint32_t *epoch)
{
    PGresult *r = NULL;
    int found;
    veil_pg_param p[] = {vp_bytes(subject, REVOCATION_SUBJECT_BYTES), vp_text(app_id)};
    veil_err err = one_row(c, ST_LOGIN_RELINK, p, 2, &r, &found);
    if (!err && found) {
        err = link_change(c, "app_relinked", subject, app_id);
    }
    if (!err && !found) {
        PQclear(r);
        r = NULL;
        err = one_row(c, ST_LOGIN_CREATE, p, 2, &r, &found);
    }
    if (!err && !found) { /* a concurrent login made or re-linked it: take its epoch */
        PQclear(r);
        r = NULL;
        err = one_row(c, ST_LINK_EPOCH, p, 2, &r, &found);
        if (!err && !found)
            err = VEIL_ERR_ABORTED;
    }
    if (!err)
        *epoch = (uint32_t)veil_pg_get_i64(r, 0, 0);
    PQclear(r);
    return err;
}

/* The order a batch's writes lock links in: by subject, then app. */
static int write_order(const void *a, const void *b)
{
    const struct revocation_link_write *x = *(const struct revocation_link_write *const *)a;
    const struct revocation_link_write *y = *(const struct revocation_link_write *const *)b;
    int d = memcmp(x->subject, y->subject, REVOCATION_SUBJECT_BYTES);
    return d ? d : strcmp(x->app_id, y->app_id);
}

veil_err revocation_store_login_writes(struct revocation_store *s,
                                       struct revocation_link_write *w, size_t n)
{
    veil_pg *c;
    struct revocation_link_write **order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        order[i] = &w[i];
        w[i].err = VEIL_OK;
    }
    /*
     * Every transaction that writes several links takes their row locks in
     * one order, so two batches (of two gateways) never wait on each other
     * in a cycle.
     */
    qsort(order, n, sizeof *order, write_order);
    veil_err err = veil_db_begin(s->db, &c);
    if (err) {
        free(order);
        return err;
    }
    for (size_t i = 0; !err && i < n; i++) {
        struct revocation_link_write *x = order[i];
        if (x->link) {
            veil_err e = login_link(c, x->subject, x->app_id, &x->epoch);
            if (e == VEIL_ERR_ABORTED) { /* this item's alone: the others go on */
                x->err = e;
                continue;
            }
            if ((err = e))
                break;
        }
        if (x->key_version) {
            PGresult *r = NULL;
            veil_pg_param p[] = {vp_bytes(x->subject, REVOCATION_SUBJECT_BYTES),
                                 vp_text(x->app_id), vp_i64(x->key_version),
                                 vp_i64(x->previous_key_version)};
            err = veil_pg_exec(c, ST_LINK_KEYS, p, 4, &r);
            PQclear(r);
        }
    }
    free(order);
    return veil_pg_end(c, err);
}

veil_err revocation_store_set_app(struct revocation_store *s, const char *app_id,
                                  revocation_app_state state, const char *reason, int *changed)
{
    veil_pg *c;
    PGresult *r = NULL;
    int found;
    int64_t seq;
    *changed = 0;
    veil_err err = veil_db_begin(s->db, &c);
    if (err)
        return err;
    veil_pg_param key = vp_text(app_id);
    err = veil_pg_exec(c, ST_APP_ENSURE, &key, 1, &r);
    PQclear(r);
    r = NULL;
    if (!err)
        err = one_row(c, ST_APP_LOCK, &key, 1, &r, &found);
    if (err || (found && strcmp(veil_pg_get_text(r, 0, 0), app_names[state]) == 0))
        goto out;
    PQclear(r);
    veil_pg_param p[] = {key, vp_text(app_names[state]), vp_text(reason)};
    err = veil_pg_exec(c, ST_APP_SET, p, 3, &r);
    veil_feed_change ch = {.kind = state == VEIL__REVOCATION__APP_STATE__APP_REVOKED
                                       ? "app_revoked"
                                       : "app_reinstated",
                           .app_id = app_id};
    if (!err)
        err = veil_feedlog_append(c, ST_FEED, &ch, &seq);
    *changed = !err;
out:
    PQclear(r);
    return finish_if_changed(c, err, changed);
}

veil_err revocation_store_changes(void *store, int64_t after_seq, uint32_t max,
                                  ProtobufCAllocator *alloc, Veil__ChangesResponse *resp)
{
    struct revocation_store *s = store;
    return veil_feedlog_changes(s->db, ST_FEED, after_seq, max, alloc, resp);
}

veil_err revocation_store_app_events(struct revocation_store *s, const char *app_id,
                                     int64_t after_seq, uint32_t max, ProtobufCAllocator *alloc,
                                     Veil__AppEventsResponse *resp)
{
    return veil_feedlog_app_events(s->db, ST_FEED, app_id, after_seq, max, alloc, resp);
}
