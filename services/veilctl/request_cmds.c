/*
 * request_cmds.c - the phone's side of an OpenID Connect login: the citizen
 * scans the QR code of the login page (or follows its same-device link) and
 * gets a veil:login?request=<id> URL; these verbs show what the app asks
 * for, approve it (with the binding code the browser shows and a consent
 * decision per attribute) or deny it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "veilctl.h"

#define URL_PREFIX "veil:login?request="

/* The request id of a veil:login URL (or a bare id); NULL after printing why. */
static const char *request_id(const vc_opts *o)
{
    if (!o->request) {
        vc_fail(o, "INVALID_ARGUMENT", "--request URL is required");
        return NULL;
    }
    const char *id = o->request;
    if (strncmp(id, URL_PREFIX, strlen(URL_PREFIX)) == 0)
        id += strlen(URL_PREFIX);
    else if (strncmp(id, "veil:", 5) == 0) {
        vc_fail(o, "INVALID_ARGUMENT", "--request must be a veil:login?request=... URL");
        return NULL;
    }
    return id;
}

static int fetch(const vc_opts *o, const char *id, Veil__Gateway__LoginRequestInfo **out)
{
    Veil__Gateway__LoginRequestRef ref = VEIL__GATEWAY__LOGIN_REQUEST_REF__INIT;
    ref.request_id = (char *)id;
    veil_channel *ch = vc_channel(o, "citizen", &veil__gateway__wallet__descriptor);
    int rc = vc_call(ch, "GetLoginRequest", &ref.base, out, o);
    veil_channel_free(ch);
    return rc;
}

int vc_wallet_request_show(const vc_opts *o)
{
    const char *id = request_id(o);
    Veil__Gateway__LoginRequestInfo *r = NULL;
    if (!id)
        return 1;
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    int rc = fetch(o, id, &r);
    if (!rc) {
        char when[64];
        vc_time(r->expires_at_ms, when, sizeof when);
        if (o->json) {
            json_t *attrs = json_array(), *codes = json_array();
            for (size_t i = 0; i < r->n_attributes; i++)
                json_array_append_new(attrs, json_pack("{s:s, s:s, s:b}", "attribute",
                                                       r->attributes[i]->attribute, "purpose",
                                                       r->attributes[i]->purpose, "registered",
                                                       r->attributes[i]->registered));
            for (size_t i = 0; i < r->n_binding_codes; i++)
                json_array_append_new(codes, json_string(r->binding_codes[i]));
            vc_print_json(json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:s}", "app", r->app_id, "name",
                                    r->app_name, "kind", r->app_kind, "organisation",
                                    r->organisation, "attributes", attrs, "binding_codes", codes,
                                    "expires_at", when));
        } else {
            printf("%s (%s, %s) asks to log you in%s\n", r->app_name, r->app_id, r->app_kind,
                   r->n_attributes ? " and for:" : " (a pseudonym only)");
            for (size_t i = 0; i < r->n_attributes; i++)
                printf("  %-20s %s\n", r->attributes[i]->attribute,
                       r->attributes[i]->registered ? r->attributes[i]->purpose
                                                    : "(not registered: never released)");
            printf("the browser shows one of these codes:");
            for (size_t i = 0; i < r->n_binding_codes; i++)
                printf(" %s", r->binding_codes[i]);
            printf("\nexpires %s\n", when);
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    vw_wallet_free(w);
    return rc;
}

/* Whether name is in the comma-separated list. */
static int listed(const char *csv, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = csv; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

int vc_wallet_request_approve(const vc_opts *o)
{
    const char *id = request_id(o);
    if (!id)
        return 1;
    if (!o->code)
        return vc_usage("wallet request approve --wallet W --request URL --code CODE "
                        "[--attrs a,b] [--remember DAYS]");
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    Veil__Gateway__LoginRequestInfo *r = NULL;
    Veil__Gateway__ApproveLoginResponse *resp = NULL;
    char *ticket = NULL;
    int rc = fetch(o, id, &r);
    if (!rc && vw_ticket(w, r->app_id, r->challenge.data, r->challenge.len, veil_now_ms(),
                         &ticket) != VEIL_OK)
        rc = vc_fail(o, "FAILED_PRECONDITION", "wallet %s is not enrolled", o->wallet);
    if (rc)
        goto out;
    /* --attrs picks what to release (default: everything registered that is asked for) */
    size_t n = r->n_attributes;
    Veil__Gateway__AttributeDecision *cells = calloc(n ? n : 1, sizeof *cells);
    Veil__Gateway__AttributeDecision **d = calloc(n ? n : 1, sizeof *d);
    for (size_t i = 0; cells && d && i < n; i++) {
        veil__gateway__attribute_decision__init(&cells[i]);
        cells[i].attribute = r->attributes[i]->attribute;
        int yes = o->attrs ? listed(o->attrs, cells[i].attribute) : r->attributes[i]->registered;
        cells[i].decision = !yes ? "deny" : o->remember ? "remember" : "once";
        cells[i].days = (uint32_t)o->remember;
        d[i] = &cells[i];
    }
    Veil__Gateway__ApproveLoginPayload p = VEIL__GATEWAY__APPROVE_LOGIN_PAYLOAD__INIT;
    p.request_id = (char *)id;
    p.ticket = ticket;
    p.binding_code = (char *)o->code;
    p.decisions = d;
    p.n_decisions = n;
    rc = cells && d ? vc_citizen(o, w, "ApproveLogin", &p.base, &resp) : 1;
    if (!rc) {
        if (o->json) {
            json_t *rel = json_array(), *wh = json_array(), *rec = json_array();
            for (size_t i = 0; i < resp->n_released; i++)
                json_array_append_new(rel, json_string(resp->released[i]));
            for (size_t i = 0; i < resp->n_withheld; i++)
                json_array_append_new(wh, json_pack("{s:s, s:s}", "attribute",
                                                    resp->withheld[i]->attribute, "reason",
                                                    resp->withheld[i]->reason));
            for (size_t i = 0; i < resp->n_receipt_ids; i++)
                json_array_append_new(rec, json_string(resp->receipt_ids[i]));
            vc_print_json(json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "status", "approved", "app",
                                    r->app_id, "sub", resp->sub, "released", rel, "withheld", wh,
                                    "receipt_ids", rec));
        } else {
            printf("approved: %s logs you in as %s\n", r->app_id, resp->sub);
            for (size_t i = 0; i < resp->n_released; i++)
                printf("  released  %s\n", resp->released[i]);
            for (size_t i = 0; i < resp->n_withheld; i++)
                printf("  withheld  %s (%s)\n", resp->withheld[i]->attribute,
                       resp->withheld[i]->reason);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    free(cells);
    free(d);
out:
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    free(ticket);
    vw_wallet_free(w);
    return rc;
}

int vc_wallet_request_deny(const vc_opts *o)
{
    const char *id = request_id(o);
    if (!id)
        return 1;
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    Veil__Gateway__DenyLoginPayload p = VEIL__GATEWAY__DENY_LOGIN_PAYLOAD__INIT;
    Veil__Empty *resp = NULL;
    p.request_id = (char *)id;
    int rc = vc_citizen(o, w, "DenyLogin", &p.base, &resp);
    if (!rc) {
        if (o->json)
            vc_print_json(json_pack("{s:s}", "status", "denied"));
        else
            printf("denied: the app is told the login was declined\n");
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    vw_wallet_free(w);
    return rc;
}
