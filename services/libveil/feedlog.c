/*
 * feedlog.c - the change feed and app event tables (veil/feedlog.h).
 *
 * Attribute lists travel to and from PostgreSQL as one comma-separated text
 * (string_to_array / array_to_string): attribute names are catalogue names
 * and never contain a comma.
 */
#include <stdlib.h>
#include <string.h>

#include "veil/codec.h"
#include "veil/feed.h"
#include "veil/feedlog.h"

/* The counter row's lock serialises feed writers until they commit. */
const char veil_feedlog_sql_append[] =
    "WITH n AS (UPDATE veil_feed_counter SET last_seq = last_seq + 1 RETURNING last_seq),"
    " i AS (INSERT INTO veil_feed_changes"
    "       (seq, kind, subject_ref, device_id, app_id, attributes, at)"
    "       SELECT last_seq, $1, $2, $3, $4, string_to_array($5, ','), now() FROM n RETURNING seq)"
    " SELECT i.seq FROM i"
    " CROSS JOIN LATERAL pg_notify('" VEIL_FEED_CHANNEL "', i.seq::text) AS sent";

const char veil_feedlog_sql_app_event[] =
    "WITH n AS (INSERT INTO veil_app_event_counters AS c (app_id, last_seq) VALUES ($1, 1)"
    "           ON CONFLICT (app_id) DO UPDATE SET last_seq = c.last_seq + 1 RETURNING last_seq)"
    " INSERT INTO veil_app_events (app_id, seq, kind, subject_ref, link_epoch, attributes, at,"
    "                              key_version, previous_key_version)"
    " SELECT $1, last_seq, $2, $3, $4::int8, string_to_array($5, ','), now(), $6::int8, $7::int8"
    " FROM n RETURNING seq";

/* An erasure notice: the app's pseudonyms instead of a subject reference. */
const char veil_feedlog_sql_app_notice[] =
    "WITH n AS (INSERT INTO veil_app_event_counters AS c (app_id, last_seq) VALUES ($1, 1)"
    "           ON CONFLICT (app_id) DO UPDATE SET last_seq = c.last_seq + 1 RETURNING last_seq)"
    " INSERT INTO veil_app_events (app_id, seq, kind, subject_ref, link_epoch, attributes, at,"
    "                              pseudonym, previous_pseudonym)"
    " SELECT $1, last_seq, $2, NULL, 0, '{}', now(), $3, $4 FROM n RETURNING seq";

const char veil_feedlog_sql_changes[] =
    "SELECT seq, kind, subject_ref, device_id, app_id, array_to_string(attributes, ','), at"
    " FROM veil_feed_changes WHERE seq > $1::int8 ORDER BY seq LIMIT $2::int8";

const char veil_feedlog_sql_head[] = "SELECT last_seq FROM veil_feed_counter";

const char veil_feedlog_sql_app_events[] =
    "SELECT seq, kind, subject_ref, link_epoch, array_to_string(attributes, ','), at,"
    " key_version, previous_key_version, pseudonym, previous_pseudonym FROM veil_app_events"
    " WHERE app_id = $1 AND seq > $2::int8 ORDER BY seq LIMIT $3::int8";

const char veil_feedlog_sql_app_head[] =
    "SELECT coalesce((SELECT last_seq FROM veil_app_event_counters WHERE app_id = $1), 0)";

const char veil_feedlog_sql_redact[] =
    "UPDATE veil_feed_changes SET kind = 'redacted', subject_ref = NULL, device_id = '',"
    " app_id = '', attributes = '{}' WHERE subject_ref = $1";

const char veil_feedlog_sql_drop_app_events[] =
    "DELETE FROM veil_app_events WHERE subject_ref = $1";

enum {
    S_APPEND,
    S_APP_EVENT,
    S_CHANGES,
    S_HEAD,
    S_APP_EVENTS,
    S_APP_HEAD,
    S_REDACT,
    S_DROP,
    S_APP_NOTICE
};

void *veil_reply_alloc(ProtobufCAllocator *alloc, size_t n)
{
    return alloc->alloc(alloc->allocator_data, n ? n : 1);
}

char *veil_reply_strdup(ProtobufCAllocator *alloc, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = veil_reply_alloc(alloc, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

veil_err veil_feedlog_join_names(veil_buf *b, char *const *attrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strchr(attrs[i], ','))
            return VEIL_ERR_INVALID;
        if (i)
            veil_buf_put(b, ",", 1);
        veil_buf_put(b, attrs[i], strlen(attrs[i]));
    }
    veil_buf_put(b, "", 1);
    return b->failed ? VEIL_ERR_NOMEM : VEIL_OK;
}

veil_err veil_feedlog_split_names(ProtobufCAllocator *a, const char *text, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!*text)
        return VEIL_OK;
    size_t count = 1;
    for (const char *p = text; *p; p++)
        count += *p == ',';
    char *copy = veil_reply_strdup(a, text);
    char **v = veil_reply_alloc(a, count * sizeof *v);
    if (!copy || !v)
        return VEIL_ERR_NOMEM;
    size_t k = 0;
    for (char *p = copy;;) {
        v[k++] = p;
        char *comma = strchr(p, ',');
        if (!comma)
            break;
        *comma = '\0';
        p = comma + 1;
    }
    *out = v;
    *n = k;
    return VEIL_OK;
}

veil_err veil_feedlog_append(veil_pg *c, int base, const veil_feed_change *ch, int64_t *seq)
{
    veil_buf attrs = {0};
    PGresult *r = NULL;
    *seq = 0;
    veil_err err = veil_feedlog_join_names(&attrs, ch->attributes, ch->n_attributes);
    if (err)
        goto out;
    veil_pg_param p[] = {
        vp_text(ch->kind),
        ch->subject_ref ? vp_bytes(ch->subject_ref, 32) : vp_null(),
        vp_text(ch->device_id ? ch->device_id : ""),
        vp_text(ch->app_id ? ch->app_id : ""),
        vp_text((const char *)attrs.data),
    };
    err = veil_pg_exec(c, base + S_APPEND, p, 5, &r);
    if (err)
        goto out;
    if (PQntuples(r) != 1) {
        err = VEIL_ERR_INTERNAL;
        goto out;
    }
    *seq = veil_pg_get_i64(r, 0, 0);
out:
    PQclear(r);
    veil_buf_free(&attrs);
    return err;
}

veil_err veil_feedlog_app_event(veil_pg *c, int base, const char *app_id, const char *kind,
                                const unsigned char subject_ref[32], const veil_app_view *view,
                                char *const *attributes, size_t n_attributes)
{
    veil_buf attrs = {0};
    PGresult *r = NULL;
    veil_err err = veil_feedlog_join_names(&attrs, attributes, n_attributes);
    if (err)
        goto out;
    veil_pg_param p[] = {vp_text(app_id),
                         vp_text(kind),
                         vp_bytes(subject_ref, 32),
                         vp_i64(view->link_epoch),
                         vp_text((const char *)attrs.data),
                         vp_i64(view->key_version),
                         vp_i64(view->previous_key_version)};
    err = veil_pg_exec(c, base + S_APP_EVENT, p, 7, &r);
out:
    PQclear(r);
    veil_buf_free(&attrs);
    return err;
}

/* The one-value result of a head query. */
static veil_err read_head(veil_pg *c, int stmt, const veil_pg_param *p, int n, int64_t *head)
{
    PGresult *r;
    veil_err err = veil_pg_exec(c, stmt, p, n, &r);
    if (err)
        return err;
    *head = PQntuples(r) == 1 ? veil_pg_get_i64(r, 0, 0) : 0;
    PQclear(r);
    return VEIL_OK;
}

/*
 * Runs a feed query and makes room for its rows' replies: *rows is an array
 * of *n pointers from alloc.  *c stays usable for the head that follows.
 */
static veil_err feed_rows(veil_db *db, int stmt, const veil_pg_param *p, int n_params,
                          ProtobufCAllocator *alloc, veil_pg **c, PGresult **r, void **rows,
                          size_t *n)
{
    veil_err err = veil_db_conn(db, c);
    if (!err)
        err = veil_pg_exec(*c, stmt, p, n_params, r);
    if (err)
        return err;
    *n = (size_t)PQntuples(*r);
    *rows = veil_reply_alloc(alloc, *n * sizeof(void *));
    return *rows ? VEIL_OK : VEIL_ERR_NOMEM;
}

veil_err veil_feedlog_changes(veil_db *db, int base, int64_t after_seq, uint32_t max,
                              ProtobufCAllocator *alloc, Veil__ChangesResponse *resp)
{
    PGresult *r = NULL;
    veil_pg *c;
    resp->n_changes = 0;
    veil_pg_param p[] = {vp_i64(after_seq), vp_i64(max)};
    void *rows = NULL;
    size_t n;
    veil_err err = feed_rows(db, base + S_CHANGES, p, 2, alloc, &c, &r, &rows, &n);
    resp->changes = rows;
    if (err)
        goto out;
    for (size_t i = 0; i < n; i++) {
        Veil__Change *ch = veil_reply_alloc(alloc, sizeof *ch);
        if (!ch) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
        veil__change__init(ch);
        int row = (int)i;
        size_t len;
        const unsigned char *subject = veil_pg_get_bytes(r, row, 2, &len);
        ch->seq = veil_pg_get_i64(r, row, 0);
        ch->kind = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 1));
        ch->subject_ref.data = len ? veil_reply_alloc(alloc, len) : NULL;
        ch->device_id = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 3));
        ch->app_id = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 4));
        ch->at_ms = veil_pg_get_time_ms(r, row, 6);
        if (!ch->kind || !ch->device_id || !ch->app_id || (len && !ch->subject_ref.data)) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
        if (len) {
            memcpy(ch->subject_ref.data, subject, len);
            ch->subject_ref.len = len;
        }
        err = veil_feedlog_split_names(alloc, veil_pg_get_text(r, row, 5), &ch->attributes,
                                       &ch->n_attributes);
        if (err)
            goto out;
        resp->changes[i] = ch;
        resp->n_changes = i + 1;
    }
    err = read_head(c, base + S_HEAD, NULL, 0, &resp->head_seq);
out:
    PQclear(r);
    return err;
}

veil_err veil_feedlog_app_events(veil_db *db, int base, const char *app_id, int64_t after_seq,
                                 uint32_t max, ProtobufCAllocator *alloc,
                                 Veil__AppEventsResponse *resp)
{
    PGresult *r = NULL;
    veil_pg *c;
    resp->n_events = 0;
    veil_pg_param p[] = {vp_text(app_id), vp_i64(after_seq), vp_i64(max)};
    void *rows = NULL;
    size_t n;
    veil_err err = feed_rows(db, base + S_APP_EVENTS, p, 3, alloc, &c, &r, &rows, &n);
    resp->events = rows;
    if (err)
        goto out;
    for (size_t i = 0; i < n; i++) {
        Veil__AppEvent *ev = veil_reply_alloc(alloc, sizeof *ev);
        if (!ev) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
        veil__app_event__init(ev);
        int row = (int)i;
        size_t len;
        const unsigned char *subject = veil_pg_get_bytes(r, row, 2, &len);
        ev->seq = veil_pg_get_i64(r, row, 0);
        ev->kind = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 1));
        ev->subject_ref.data = veil_reply_alloc(alloc, len);
        ev->link_epoch = (uint32_t)veil_pg_get_i64(r, row, 3);
        ev->at_ms = veil_pg_get_time_ms(r, row, 5);
        ev->key_version = (uint32_t)veil_pg_get_i64(r, row, 6);
        ev->previous_key_version = (uint32_t)veil_pg_get_i64(r, row, 7);
        ev->pseudonym = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 8));
        ev->previous_pseudonym = veil_reply_strdup(alloc, veil_pg_get_text(r, row, 9));
        if (!ev->kind || !ev->subject_ref.data || !ev->pseudonym || !ev->previous_pseudonym) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
        if (len)
            memcpy(ev->subject_ref.data, subject, len);
        ev->subject_ref.len = len;
        err = veil_feedlog_split_names(alloc, veil_pg_get_text(r, row, 4), &ev->attributes,
                                       &ev->n_attributes);
        if (err)
            goto out;
        resp->events[i] = ev;
        resp->n_events = i + 1;
    }
    veil_pg_param app = vp_text(app_id);
    err = read_head(c, base + S_APP_HEAD, &app, 1, &resp->head_seq);
out:
    PQclear(r);
    return err;
}

veil_err veil_feedlog_app_notice(veil_pg *c, int base, const char *app_id, const char *kind,
                                 const char *pseudonym, const char *previous_pseudonym)
{
    PGresult *r = NULL;
    veil_pg_param p[] = {vp_text(app_id), vp_text(kind), vp_text(pseudonym),
                         vp_text(previous_pseudonym ? previous_pseudonym : "")};
    veil_err err = veil_pg_exec(c, base + S_APP_NOTICE, p, 4, &r);
    PQclear(r);
    return err;
}

veil_err veil_feedlog_forget(veil_pg *c, int base, const unsigned char subject_ref[32],
                             const char *notice_kind, int64_t deleted)
{
    PGresult *r;
    veil_pg_param p[] = {vp_bytes(subject_ref, 32)};
    int64_t affected = deleted, seq;
    veil_err err = veil_pg_exec(c, base + S_REDACT, p, 1, &r);
    if (err)
        return err;
    affected += strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    err = veil_pg_exec(c, base + S_DROP, p, 1, &r);
    if (err)
        return err;
    affected += strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    /* No subject in the notice: consumers drop every cached answer (erasures are rare). */
    veil_feed_change ch = {.kind = notice_kind};
    return affected > 0 ? veil_feedlog_append(c, base, &ch, &seq) : VEIL_OK;
}
