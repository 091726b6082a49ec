/*
 * events.c - PollEvents: the Security Event Token stream (RFC 8417) an app
 * follows to close accounts.  Events come from revocation (identity revoked,
 * suspended or reinstated; app unlinked) and consent (consent withdrawn),
 * each already scoped to this app's own users; here the subject becomes the
 * app's own pseudonym and each event is signed.
 *
 * Nothing in a SET, or in when it arrives, is shared across apps for one
 * person (issue 12 items 2 and 6; docs/threat-model.md):
 * - no `toe`: one erasure fans out to every app in one transaction, so its
 *   instant would match the person's accounts;
 * - events are released in batches of GATEWAY_EVENT_BATCH_MS, the same
 *   boundaries for every app, GATEWAY_EVENT_SETTLE_MS after a batch closes:
 *   two apps comparing arrivals learn only that two events fell in one batch;
 * - within a release, events are ordered by the app's own pseudonym (then
 *   time), so their order says nothing about which person's came first,
 *   while one person's events stay in time order across both feeds;
 * - the subject is named with the link epoch and pseudonym key versions the
 *   app knew when the event happened, recorded with the event, never the
 *   ones current at poll time.
 *
 * The cursor is "r<revocation seq>.c<consent seq>": opaque to apps, resumable.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "gateway.h"
#include "veil/jws.h"
#include "veil/pseudonym.pb-c.h"
#include "veil/revocation.pb-c.h"

#define MAX_EVENTS 200

static int parse_cursor(const char *s, int64_t *r, int64_t *c)
{
    *r = *c = 0;
    if (!s || !*s)
        return 0;
    char tail;
    if (sscanf(s, "r%" SCNd64 ".c%" SCNd64 "%c", r, c, &tail) != 2 || *r < 0 || *c < 0)
        return -1;
    return 0;
}

/* The events of one source after seq. */
static veil_err fetch(struct gateway *gw, veil_call *call, veil_channel *ch, const char *app,
                      int64_t after, uint32_t max, Veil__AppEventsResponse **out)
{
    Veil__AppEventsRequest r = VEIL__APP_EVENTS_REQUEST__INIT;
    r.app_id = (char *)app;
    r.after_seq = after;
    r.max = max;
    return gw_downstream(gw, call, ch, "AppEvents", &r.base, out);
}

/* One event on its way out: where it came from, and the app's name for its subject. */
struct outgoing {
    const Veil__AppEvent *e;
    int feed; /* 0 revocation, 1 consent */
    const char *sub, *previous_sub;
};

/*
 * How many of a feed's events (in seq order) go out: the longest prefix
 * released by `until` (at_ms < until) and at or before `upto`.  A prefix,
 * not a filter, so the seq cursor never steps over an event still held back.
 */
static size_t released(const Veil__AppEventsResponse *r, int64_t until, int64_t upto)
{
    size_t k = 0;
    while (k < r->n_events && r->events[k]->at_ms < until && r->events[k]->at_ms <= upto)
        k++;
    return k;
}

/* The latest time among a full page's released events: what both feeds are cut at. */
static int64_t page_end(const Veil__AppEventsResponse *r, size_t k, uint32_t max)
{
    int64_t end = INT64_MAX;
    if (k == max && k == r->n_events) {
        end = 0;
        for (size_t i = 0; i < k; i++)
            if (r->events[i]->at_ms > end)
                end = r->events[i]->at_ms;
    }
    return end;
}

/*
 * Names the subjects of o[0..n) as the app knew them when each event
 * happened: one DeriveBatch per set of recorded key versions (0: the current
 * ones, for events recorded before versions were).
 */
static veil_err name_subjects(struct gateway *gw, veil_call *call, const gw_app *app,
                              struct outgoing *o, size_t n)
{
    uint32_t cur = atomic_load(&gw->keys.pseudonym_current);
    uint32_t prev = atomic_load(&gw->keys.pseudonym_previous);
    Veil__Pseudonym__DeriveItem *items = veil_call_array(call, n, sizeof *items);
    Veil__Pseudonym__DeriveItem **ptrs = veil_call_array(call, n, sizeof *ptrs);
    size_t *which = veil_call_array(call, n, sizeof *which);
    if (!items || !ptrs || !which)
        return VEIL_ERR_NOMEM;
    for (size_t first = 0; first < n; first++) {
        if (o[first].sub)
            continue;
        uint32_t kv = o[first].e->key_version, pkv = o[first].e->previous_key_version;
        size_t m = 0;
        for (size_t i = first; i < n; i++) {
            if (o[i].sub || o[i].e->key_version != kv || o[i].e->previous_key_version != pkv)
                continue;
            veil__pseudonym__derive_item__init(&items[m]);
            items[m].subject_ref = o[i].e->subject_ref;
            items[m].sector_id = (char *)app->sector;
            items[m].link_epoch = o[i].e->link_epoch;
            ptrs[m] = &items[m];
            which[m++] = i;
        }
        Veil__Pseudonym__DeriveBatchRequest dr = VEIL__PSEUDONYM__DERIVE_BATCH_REQUEST__INIT;
        Veil__Pseudonym__DeriveBatchResponse *p;
        dr.n_items = m;
        dr.items = ptrs;
        dr.key_version = kv ? kv : cur;
        dr.previous_key_version = kv ? pkv : prev;
        veil_err err = gw_downstream(gw, call, gw->pseudonym, "DeriveBatch", &dr.base, &p);
        if (err)
            return err;
        for (size_t j = 0; j < m; j++) {
            o[which[j]].sub = p->pseudonyms[j];
            o[which[j]].previous_sub = p->n_previous_pseudonyms ? p->previous_pseudonyms[j] : NULL;
        }
    }
    return VEIL_OK;
}

/* The app's order within a release: by its own pseudonym, then time, feed and seq. */
static int by_sub_then_time(const void *a, const void *b)
{
    const struct outgoing *x = a, *y = b;
    int c = strcmp(x->sub, y->sub);
    if (c)
        return c;
    if (x->e->at_ms != y->e->at_ms)
        return x->e->at_ms < y->e->at_ms ? -1 : 1;
    if (x->feed != y->feed)
        return x->feed - y->feed;
    return x->e->seq < y->e->seq ? -1 : x->e->seq > y->e->seq;
}

/* Signs one SET; the token goes into the call's arena. */
static char *sign_set(struct gateway *gw, veil_call *call, const gw_app *app,
                      const struct outgoing *o, int64_t iat)
{
    unsigned char raw[16];
    char jti[32], type[96];
    randombytes_buf(raw, sizeof raw);
    veil_b64url_encode(jti, sizeof jti, raw, sizeof raw);
    snprintf(type, sizeof type, "urn:veil:event:%s", o->e->kind);
    json_t *subject =
        json_pack("{s:s, s:s, s:s}", "format", "iss_sub", "iss", gw->issuer, "sub", o->sub);
    json_t *body = json_pack("{s:o}", "subject", subject);
    if (o->previous_sub && *o->previous_sub)
        json_object_set_new(body, "previous_sub", json_string(o->previous_sub));
    if (o->e->n_attributes) {
        json_t *attrs = json_array();
        for (size_t i = 0; i < o->e->n_attributes; i++)
            json_array_append_new(attrs, json_string(o->e->attributes[i]));
        json_object_set_new(body, "attributes", attrs);
    }
    json_t *events = json_object();
    json_object_set_new(events, type, body);
    /* No toe: see the file comment.  iat is when this poll signed it, the same for every SET of it.
     */
    json_t *claims = json_pack("{s:s, s:s, s:I, s:s, s:o}", "iss", gw->issuer, "aud", app->id,
                               "iat", (json_int_t)iat, "jti", jti, "events", events);
    char *token = NULL, *out = NULL;
    const veil_signer *s = gw_keys_signer(&gw->keys, atomic_load(&gw->keys.assertion_current));
    if (claims && s && veil_jws_sign(s, "secevent+jwt", claims, &token) == VEIL_OK)
        out = veil_call_strdup(call, token);
    free(token);
    json_decref(claims);
    return out;
}

static veil_err poll_events(struct gateway *gw, veil_call *call,
                            const Veil__Gateway__PollEventsRequest *req,
                            Veil__Gateway__PollEventsResponse *resp)
{
    gw_app app;
    int64_t rseq, cseq;
    veil_err err = gw_calling_app(gw, call, &app);
    if (err)
        return err;
    if (parse_cursor(req->cursor, &rseq, &cseq) != 0) {
        veil_call_fail(call, VEIL_ERR_INVALID, "cursor is malformed");
        return VEIL_ERR_INVALID;
    }
    uint32_t max = req->max == 0 || req->max > MAX_EVENTS ? MAX_EVENTS : req->max;
    Veil__AppEventsResponse *rev, *con;
    if ((err = fetch(gw, call, gw->revocation, app.id, rseq, max, &rev)) ||
        (err = fetch(gw, call, gw->consent, app.id, cseq, max, &con)))
        return err;
    /*
     * A cursor past the end was never handed out: resuming from it would
     * silently skip the events still to come up to that number.
     */
    if (rseq > rev->head_seq || cseq > con->head_seq) {
        veil_call_fail(call, VEIL_ERR_INVALID, "cursor is beyond the end of this app's events");
        return VEIL_ERR_INVALID;
    }

    /* Released: every event of the batches closed and settled by now. */
    int64_t now = veil_now_ms(), settled = now - gw->event_settle_ms;
    int64_t until = settled - settled % gw->event_batch_ms;
    /* Both feeds are cut at the same time, so the two go out in time order. */
    int64_t upto = page_end(rev, released(rev, until, INT64_MAX), max);
    int64_t cend = page_end(con, released(con, until, INT64_MAX), max);
    if (cend < upto)
        upto = cend;
    size_t nr = released(rev, until, upto), nc = released(con, until, upto), n = nr + nc;

    struct outgoing *o = veil_call_array(call, n, sizeof *o);
    char **tokens = veil_call_array(call, n, sizeof *tokens);
    if (!o || !tokens)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const Veil__AppEvent *e = i < nr ? rev->events[i] : con->events[i - nr];
        o[i] = (struct outgoing){.e = e, .feed = i < nr ? 0 : 1};
        if (e->pseudonym[0]) { /* an erasure notice: named at the erasure, nothing to derive */
            o[i].sub = e->pseudonym;
            o[i].previous_sub = e->previous_pseudonym;
        }
    }
    if (n && (err = name_subjects(gw, call, &app, o, n)))
        return err;
    qsort(o, n, sizeof *o, by_sub_then_time);
    for (size_t i = 0; i < n; i++) {
        if (!(tokens[i] = sign_set(gw, call, &app, &o[i], now / 1000))) {
            veil_call_fail(call, VEIL_ERR_INTERNAL, "internal error");
            return VEIL_ERR_INTERNAL;
        }
    }
    int64_t r_next = nr ? rev->events[nr - 1]->seq : rseq;
    int64_t c_next = nc ? con->events[nc - 1]->seq : cseq;
    char cursor[64];
    snprintf(cursor, sizeof cursor, "r%" PRId64 ".c%" PRId64, r_next, c_next);
    resp->cursor = veil_call_strdup(call, cursor);
    resp->events = tokens;
    resp->n_events = n;
    return resp->cursor ? VEIL_OK : VEIL_ERR_NOMEM;
}

void gw_login_poll_events(Veil__Gateway__Login_Service *svc,
                          const Veil__Gateway__PollEventsRequest *req,
                          Veil__Gateway__PollEventsResponse_Closure done, void *call)
{
    Veil__Gateway__PollEventsResponse resp = VEIL__GATEWAY__POLL_EVENTS_RESPONSE__INIT;
    veil_err err = poll_events(GW_OF(svc, login), call, req, &resp);
    VEIL_REPLY(done, call, err, &resp);
}
