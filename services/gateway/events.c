/*
 * events.c - PollEvents: the Security Event Token stream (RFC 8417) an app
 * follows to close accounts.  Events come from revocation (identity revoked,
 * suspended or reinstated; app unlinked) and consent (consent withdrawn),
 * each already scoped to this app's own users; here the subject becomes the
 * app's own pseudonym and each event is signed.  Nothing in a SET is shared
 * across apps: the subject is the per-app pseudonym and jti is random.
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

/* The events of one source after seq, appended to *all (arena array, n entries). */
static veil_err fetch(struct gateway *gw, veil_call *call, veil_channel *ch, const char *app,
                      int64_t after, uint32_t max, Veil__AppEventsResponse **out)
{
    Veil__AppEventsRequest r = VEIL__APP_EVENTS_REQUEST__INIT;
    r.app_id = (char *)app;
    r.after_seq = after;
    r.max = max;
    return gw_downstream(gw, call, ch, "AppEvents", &r.base, out);
}

/* The link epoch of (subject, app) now, for consent events which carry none. */
static veil_err epoch_of(struct gateway *gw, veil_call *call, const ProtobufCBinaryData *subject,
                         const char *app, uint32_t *epoch)
{
    Veil__Revocation__StatusRequest r = VEIL__REVOCATION__STATUS_REQUEST__INIT;
    Veil__Revocation__StatusResponse *s;
    r.subject_ref = *subject;
    r.device_id = "";
    r.app_id = (char *)app;
    veil_err err = gw_downstream(gw, call, gw->revocation, "Status", &r.base, &s);
    if (!err)
        *epoch = s->link_epoch;
    return err;
}

/* Signs one SET; the token goes into the call's arena. */
static char *sign_set(struct gateway *gw, veil_call *call, const gw_app *app,
                      const Veil__AppEvent *e, const char *sub, const char *previous_sub)
{
    unsigned char raw[16];
    char jti[32], type[96];
    randombytes_buf(raw, sizeof raw);
    veil_b64url_encode(jti, sizeof jti, raw, sizeof raw);
    snprintf(type, sizeof type, "urn:veil:event:%s", e->kind);
    json_t *subject =
        json_pack("{s:s, s:s, s:s}", "format", "iss_sub", "iss", gw->issuer, "sub", sub);
    json_t *body = json_pack("{s:o}", "subject", subject);
    if (previous_sub && *previous_sub)
        json_object_set_new(body, "previous_sub", json_string(previous_sub));
    if (e->n_attributes) {
        json_t *attrs = json_array();
        for (size_t i = 0; i < e->n_attributes; i++)
            json_array_append_new(attrs, json_string(e->attributes[i]));
        json_object_set_new(body, "attributes", attrs);
    }
    json_t *events = json_object();
    json_object_set_new(events, type, body);
    json_t *claims = json_pack("{s:s, s:s, s:I, s:s, s:I, s:o}", "iss", gw->issuer, "aud", app->id,
                               "iat", (json_int_t)(veil_now_ms() / 1000), "jti", jti, "toe",
                               (json_int_t)(e->at_ms / 1000), "events", events);
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

    size_t n = rev->n_events + con->n_events;
    Veil__AppEvent **all = veil_call_array(call, n, sizeof *all);
    Veil__Pseudonym__DeriveItem *items = veil_call_array(call, n, sizeof *items);
    Veil__Pseudonym__DeriveItem **ptrs = veil_call_array(call, n, sizeof *ptrs);
    char **tokens = veil_call_array(call, n, sizeof *tokens);
    if (!all || !items || !ptrs || !tokens)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        all[i] = i < rev->n_events ? rev->events[i] : con->events[i - rev->n_events];
        veil__pseudonym__derive_item__init(&items[i]);
        items[i].subject_ref = all[i]->subject_ref;
        items[i].sector_id = app.sector;
        items[i].link_epoch = all[i]->link_epoch;
        /* consent events carry no epoch: the app knows the subject by its current one */
        if (i >= rev->n_events &&
            (err = epoch_of(gw, call, &all[i]->subject_ref, app.id, &items[i].link_epoch)))
            return err;
        ptrs[i] = &items[i];
    }
    if (n) {
        Veil__Pseudonym__DeriveBatchRequest dr = VEIL__PSEUDONYM__DERIVE_BATCH_REQUEST__INIT;
        Veil__Pseudonym__DeriveBatchResponse *p;
        dr.n_items = n;
        dr.items = ptrs;
        dr.key_version = atomic_load(&gw->keys.pseudonym_current);
        dr.previous_key_version = atomic_load(&gw->keys.pseudonym_previous);
        if ((err = gw_downstream(gw, call, gw->pseudonym, "DeriveBatch", &dr.base, &p)))
            return err;
        for (size_t i = 0; i < n; i++) {
            tokens[i] = sign_set(gw, call, &app, all[i], p->pseudonyms[i],
                                 p->n_previous_pseudonyms ? p->previous_pseudonyms[i] : NULL);
            if (!tokens[i]) {
                veil_call_fail(call, VEIL_ERR_INTERNAL, "internal error");
                return VEIL_ERR_INTERNAL;
            }
        }
    }
    int64_t r_next = rev->n_events ? rev->events[rev->n_events - 1]->seq : rseq;
    int64_t c_next = con->n_events ? con->events[con->n_events - 1]->seq : cseq;
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
