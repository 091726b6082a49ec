/*
 * store.c - the consent service's PostgreSQL store, the only file of the
 * service that speaks SQL.  Every mutation is one transaction that ends by
 * appending its change to the feed (veil/feedlog.h).
 *
 * Times are the service's clock, passed in as Unix milliseconds, so a grant
 * expires exactly when its signed receipt says it does.  Attribute lists
 * travel as one comma-separated text (veil_feedlog_join_names).
 */
#include <stdlib.h>
#include <string.h>

#include "consent.h"
#include "veil/codec.h"
#include "veil/feedlog.h"
#include "veil/pg.h"
#include "veil/pgarray.h"

/* The change that tells consumers a subject was erased. */
#define FORGOTTEN "subject_forgotten"

enum {
    ST_SUPERSEDE,
    ST_INSERT_GRANT,
    ST_INSERT_ATTRS,
    ST_WITHDRAW,
    ST_LIST,
    ST_CHECK,
    ST_FORGET,
    ST_FEED,
    ST_COUNT = ST_FEED + VEIL_FEEDLOG_N_STMTS
};

static const veil_pg_stmt stmts[ST_COUNT] = {
    [ST_SUPERSEDE] =
        {"supersede",
         "UPDATE grant_attributes SET state = 'superseded', ended_at = ms_time($4::int8)"
         " WHERE subject_ref = $1 AND app_id = $2 AND state = 'live'"
         " AND attribute = ANY (string_to_array($3, ','))"},
    [ST_INSERT_GRANT] = {"insert_grant",
                         "INSERT INTO grants (receipt_id, subject_ref, app_id, purpose, granted_at,"
                         " expires_at, receipt)"
                         " VALUES ($1, $2, $3, $4, ms_time($5::int8), ms_time($6::int8), $7)"},
    [ST_INSERT_ATTRS] = {"insert_attrs",
                         "INSERT INTO grant_attributes (receipt_id, pos, attribute, subject_ref,"
                         " app_id, state) SELECT $1, a.pos, a.name, $2, $3, 'live'"
                         " FROM unnest(string_to_array($4, ',')) WITH ORDINALITY AS a (name, pos)"},
    /* Live means not ended and not expired; $3 = '' withdraws every attribute. */
    [ST_WITHDRAW] = {"withdraw",
                     "WITH w AS (UPDATE grant_attributes a"
                     "  SET state = 'withdrawn', ended_at = ms_time($4::int8)"
                     "  FROM grants g WHERE g.receipt_id = a.receipt_id AND a.subject_ref = $1"
                     "  AND a.app_id = $2 AND a.state = 'live' AND g.expires_at > ms_time($4::int8)"
                     "  AND ($3 = '' OR a.attribute = ANY (string_to_array($3, ',')))"
                     "  RETURNING a.attribute)"
                     " SELECT attribute FROM w ORDER BY attribute"},
    [ST_LIST] = {"list",
                 "SELECT g.receipt_id, g.app_id, g.purpose, g.granted_at, g.expires_at, g.receipt,"
                 " coalesce(string_agg(a.attribute, ',' ORDER BY a.pos)"
                 "          FILTER (WHERE a.state = 'live'), ''),"
                 " coalesce(string_agg(a.attribute, ',' ORDER BY a.pos)"
                 "          FILTER (WHERE a.state = 'withdrawn'), '')"
                 " FROM grants g JOIN grant_attributes a USING (receipt_id)"
                 " WHERE g.subject_ref = $1"
                 " GROUP BY g.receipt_id ORDER BY g.granted_at DESC, g.receipt_id"},
    /*
     * Check for a batch of (subject, app, attributes), or for one, in one
     * statement: $1 the subjects, $2 the apps, $3 each item's attribute
     * names comma-separated, arrays of the same length; rows by item (its
     * position, from 1), then in the order its names were asked.
     */
    [ST_CHECK] = {"check",
                  "SELECT q.n, a.attribute, g.receipt_id, g.purpose, g.expires_at"
                  " FROM unnest($1::bytea[], $2::text[], $3::text[]) WITH ORDINALITY"
                  "  AS q(s, app, names, n)"
                  " JOIN grant_attributes a ON a.subject_ref = q.s AND a.app_id = q.app"
                  "  AND a.state = 'live' AND a.attribute = ANY (string_to_array(q.names, ','))"
                  " JOIN grants g ON g.receipt_id = a.receipt_id"
                  " WHERE g.expires_at > ms_time($4::int8)"
                  " ORDER BY q.n, array_position(string_to_array(q.names, ','), a.attribute)"},
    [ST_FORGET] = {"forget", "DELETE FROM grants WHERE subject_ref = $1"},
    VEIL_FEEDLOG_STMTS(ST_FEED),
};

struct consent_store {
    veil_db *db;
};

veil_err consent_store_open(const char *conninfo, struct consent_store **out)
{
    *out = NULL;
    struct consent_store *s = calloc(1, sizeof *s);
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

void consent_store_close(struct consent_store *s)
{
    if (!s)
        return;
    veil_db_free(s->db);
    free(s);
}

/* Runs a statement whose result is not needed. */
static veil_err run(veil_pg *c, int stmt, const veil_pg_param *p, int n)
{
    PGresult *r;
    veil_err err = veil_pg_exec(c, stmt, p, n, &r);
    PQclear(r);
    return err;
}

veil_err consent_store_grant(struct consent_store *s, const struct consent_new_grant *g)
{
    veil_buf attrs = {0};
    veil_pg *c;
    int64_t seq;
    veil_err err = veil_feedlog_join_names(&attrs, g->attributes, g->n_attributes);
    if (err)
        goto out;
    err = veil_db_begin(s->db, &c);
    if (err)
        goto out;
    veil_pg_param subject = vp_bytes(g->subject_ref, CONSENT_SUBJECT_BYTES);
    veil_pg_param app = vp_text(g->app_id), names = vp_text((const char *)attrs.data);
    veil_pg_param supersede[] = {subject, app, names, vp_i64(g->granted_at_ms)};
    veil_pg_param grant[] = {vp_text(g->receipt_id),
                             subject,
                             app,
                             vp_text(g->purpose),
                             vp_i64(g->granted_at_ms),
                             vp_i64(g->expires_at_ms),
                             vp_text(g->receipt)};
    veil_pg_param rows[] = {vp_text(g->receipt_id), subject, app, names};
    veil_feed_change ch = {.kind = "consent_granted",
                           .subject_ref = g->subject_ref,
                           .app_id = g->app_id,
                           .attributes = g->attributes,
                           .n_attributes = g->n_attributes};
    err = run(c, ST_SUPERSEDE, supersede, 4);
    if (!err)
        err = run(c, ST_INSERT_GRANT, grant, 7);
    if (!err)
        err = run(c, ST_INSERT_ATTRS, rows, 4);
    if (!err)
        err = veil_feedlog_append(c, ST_FEED, &ch, &seq);
    err = veil_pg_end(c, err);
out:
    veil_buf_free(&attrs);
    return err;
}

veil_err consent_store_withdraw(struct consent_store *s, const unsigned char *subject_ref,
                                const char *app_id, char *const *attributes, size_t n,
                                const veil_app_view *view, int64_t now_ms,
                                ProtobufCAllocator *alloc, char ***withdrawn, size_t *n_withdrawn)
{
    veil_buf names = {0};
    veil_pg *c;
    PGresult *r = NULL;
    int64_t seq;
    *withdrawn = NULL;
    *n_withdrawn = 0;
    veil_err err = veil_feedlog_join_names(&names, attributes, n);
    if (err)
        goto out;
    err = veil_db_begin(s->db, &c);
    if (err)
        goto out;
    veil_pg_param p[] = {vp_bytes(subject_ref, CONSENT_SUBJECT_BYTES), vp_text(app_id),
                         vp_text((const char *)names.data), vp_i64(now_ms)};
    err = veil_pg_exec(c, ST_WITHDRAW, p, 4, &r);
    if (!err && PQntuples(r) == 0)
        err = VEIL_ERR_NOT_FOUND;
    size_t k = err ? 0 : (size_t)PQntuples(r);
    char **v = k ? veil_reply_alloc(alloc, k * sizeof *v) : NULL;
    if (k && !v)
        err = VEIL_ERR_NOMEM;
    for (size_t i = 0; !err && i < k; i++)
        if (!(v[i] = veil_reply_strdup(alloc, veil_pg_get_text(r, (int)i, 0))))
            err = VEIL_ERR_NOMEM;
    veil_feed_change ch = {.kind = "consent_withdrawn",
                           .subject_ref = subject_ref,
                           .app_id = app_id,
                           .attributes = v,
                           .n_attributes = k};
    if (!err)
        err = veil_feedlog_append(c, ST_FEED, &ch, &seq);
    /* The app hears of it too, through its own event stream, under the pseudonym it knows now. */
    if (!err)
        err = veil_feedlog_app_event(c, ST_FEED, app_id, "consent_withdrawn", subject_ref, view, v,
                                     k);
    err = veil_pg_end(c, err);
    if (!err) {
        *withdrawn = v;
        *n_withdrawn = k;
    }
out:
    PQclear(r);
    veil_buf_free(&names);
    return err;
}

/* What a grant is now, given what is left of it. */
static const char *grant_status(int64_t expires_at_ms, int64_t now_ms, size_t live,
                                size_t withdrawn)
{
    if (expires_at_ms <= now_ms)
        return "expired";
    if (live)
        return "active";
    return withdrawn ? "withdrawn" : "superseded";
}

veil_err consent_store_list(struct consent_store *s, const unsigned char *subject_ref,
                            int64_t now_ms, ProtobufCAllocator *alloc,
                            Veil__Consent__ListResponse *resp)
{
    veil_pg *c;
    PGresult *r = NULL;
    veil_err err = veil_db_conn(s->db, &c);
    if (err)
        return err;
    veil_pg_param p = vp_bytes(subject_ref, CONSENT_SUBJECT_BYTES);
    err = veil_pg_exec(c, ST_LIST, &p, 1, &r);
    if (err)
        return err;
    size_t n = (size_t)PQntuples(r);
    resp->grants = veil_reply_alloc(alloc, n * sizeof *resp->grants);
    if (!resp->grants)
        err = VEIL_ERR_NOMEM;
    for (size_t i = 0; !err && i < n; i++) {
        int row = (int)i;
        Veil__Consent__Grant *g = veil_reply_alloc(alloc, sizeof *g);
        if (!g) {
            err = VEIL_ERR_NOMEM;
            break;
        }
        veil__consent__grant__init(g);
        g->receipt_id = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 0));
        g->app_id = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 1));
        g->purpose = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 2));
        g->granted_at_ms = veil_pg_get_time_ms(r, row, 3);
        g->expires_at_ms = veil_pg_get_time_ms(r, row, 4);
        g->receipt = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 5));
        if (!g->receipt_id || !g->app_id || !g->purpose || !g->receipt)
            err = VEIL_ERR_NOMEM;
        if (!err)
            err = veil_feedlog_split_names(alloc, veil_pg_get_text(r, row, 6), &g->attributes,
                                           &g->n_attributes);
        if (!err)
            err = veil_feedlog_split_names(alloc, veil_pg_get_text(r, row, 7), &g->withdrawn,
                                           &g->n_withdrawn);
        g->status = (char *)grant_status(g->expires_at_ms, now_ms, g->n_attributes, g->n_withdrawn);
        resp->grants[i] = g;
        resp->n_grants = i + 1;
    }
    PQclear(r);
    return err;
}

/* Row `row` of ST_CHECK as a granted attribute allocated with alloc (NULL: out of memory). */
static Veil__Consent__GrantedAttribute *granted_row(const PGresult *r, int row,
                                                    ProtobufCAllocator *alloc)
{
    Veil__Consent__GrantedAttribute *a = veil_reply_alloc(alloc, sizeof *a);
    if (!a)
        return NULL;
    veil__consent__granted_attribute__init(a);
    a->attribute = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 1));
    a->receipt_id = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 2));
    a->purpose = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 3));
    a->expires_at_ms = veil_pg_get_time_ms(r, row, 4);
    return a->attribute && a->receipt_id && a->purpose ? a : NULL;
}

veil_err consent_store_check(struct consent_store *s, struct consent_check_item *items, size_t n,
                             int64_t now_ms, ProtobufCAllocator *alloc)
{
    veil_buf a[3] = {{0}}, names = {0};
    veil_pg *c;
    PGresult *r = NULL;
    veil_err err = VEIL_OK;
    veil_pgarray_begin(&a[0], VEIL_OID_BYTEA, n);
    veil_pgarray_begin(&a[1], VEIL_OID_TEXT, n);
    veil_pgarray_begin(&a[2], VEIL_OID_TEXT, n);
    for (size_t i = 0; !err && i < n; i++) {
        names.len = 0;
        err = veil_feedlog_join_names(&names, items[i].attributes, items[i].n_attributes);
        veil_pgarray_put(&a[0], items[i].subject_ref, CONSENT_SUBJECT_BYTES);
        veil_pgarray_put(&a[1], items[i].app_id, strlen(items[i].app_id));
        if (!err)
            veil_pgarray_put(&a[2], names.data, names.len - 1); /* without the NUL */
    }
    if (!err && (a[0].failed || a[1].failed || a[2].failed))
        err = VEIL_ERR_NOMEM;
    if (!err)
        err = veil_db_conn(s->db, &c);
    if (err)
        goto out;
    veil_pg_param p[] = {vp_bytes(a[0].data, a[0].len), vp_bytes(a[1].data, a[1].len),
                         vp_bytes(a[2].data, a[2].len), vp_i64(now_ms)};
    if ((err = veil_pg_exec(c, ST_CHECK, p, 4, &r)))
        goto out;
    /* rows come grouped by item, in item order: each item's run of rows */
    int rows = PQntuples(r);
    for (int row = 0; !err && row < rows;) {
        int64_t pos = veil_pg_get_i64(r, row, 0);
        int end = row;
        while (end < rows && veil_pg_get_i64(r, end, 0) == pos)
            end++;
        if (pos < 1 || (size_t)pos > n) {
            err = VEIL_ERR_INTERNAL;
            break;
        }
        Veil__Consent__CheckResponse *resp = items[pos - 1].resp;
        resp->granted = veil_reply_alloc(alloc, (size_t)(end - row) * sizeof *resp->granted);
        if (!resp->granted)
            err = VEIL_ERR_NOMEM;
        for (; !err && row < end; row++) {
            if (!(resp->granted[resp->n_granted] = granted_row(r, row, alloc)))
                err = VEIL_ERR_NOMEM;
            else
                resp->n_granted++;
        }
    }
out:
    PQclear(r);
    veil_buf_free(&names);
    for (int k = 0; k < 3; k++)
        veil_buf_free(&a[k]);
    return err;
}

veil_err consent_store_forget(struct consent_store *s, const unsigned char *subject_ref)
{
    veil_pg *c;
    PGresult *r = NULL;
    veil_err err = veil_db_begin(s->db, &c);
    if (err)
        return err;
    veil_pg_param p = vp_bytes(subject_ref, CONSENT_SUBJECT_BYTES);
    err = veil_pg_exec(c, ST_FORGET, &p, 1, &r);
    if (!err)
        err = veil_feedlog_forget(c, ST_FEED, subject_ref, FORGOTTEN,
                                  strtoll(PQcmdTuples(r), NULL, 10));
    PQclear(r);
    return veil_pg_end(c, err);
}

veil_err consent_store_changes(void *store, int64_t after_seq, uint32_t max,
                               ProtobufCAllocator *alloc, Veil__ChangesResponse *resp)
{
    struct consent_store *s = store;
    return veil_feedlog_changes(s->db, ST_FEED, after_seq, max, alloc, resp);
}

veil_err consent_store_app_events(struct consent_store *s, const char *app_id, int64_t after_seq,
                                  uint32_t max, ProtobufCAllocator *alloc,
                                  Veil__AppEventsResponse *resp)
{
    return veil_feedlog_app_events(s->db, ST_FEED, app_id, after_seq, max, alloc, resp);
}
