/* admin_cmds.c - the administrator's verbs: the app registry, key rotation, identity states. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appfile.h"
#include "veilctl.h"

static json_t *app_json(const Veil__Gateway__App *a)
{
    json_t *attrs = json_array(), *uris = json_array(), *purposes = json_object();
    for (size_t i = 0; i < a->n_attributes; i++)
        json_array_append_new(attrs, json_string(a->attributes[i]));
    for (size_t i = 0; i < a->n_redirect_uris; i++)
        json_array_append_new(uris, json_string(a->redirect_uris[i]));
    for (size_t i = 0; i < a->n_purposes; i++)
        json_object_set_new(purposes, a->purposes[i]->attribute,
                            json_string(a->purposes[i]->purpose));
    json_t *j =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "app", a->app_id, "name", a->name,
                  "kind", a->kind, "sector", a->sector_id, "attributes", attrs, "status", a->status,
                  "organisation", a->organisation, "cert_identity", a->cert_identity);
    /* OpenID Connect, added beside the existing keys */
    json_object_set_new(j, "redirect_uris", uris);
    json_object_set_new(j, "token_auth", json_string(a->token_auth));
    json_object_set_new(j, "id_token_alg", json_string(a->id_token_alg));
    json_object_set_new(j, "purposes", purposes);
    return j;
}

static void print_app(const vc_opts *o, const Veil__Gateway__App *a)
{
    if (o->json) {
        vc_print_json(app_json(a));
        return;
    }
    printf("%s  %s  %s  sector %s  status %s\n", a->app_id, a->kind, a->name, a->sector_id,
           a->status);
}

static int admin_call(const vc_opts *o, const char *method, const ProtobufCMessage *req, void *resp)
{
    veil_channel *ch = vc_channel(o, "admin", &veil__gateway__admin__descriptor);
    int rc = vc_call(ch, method, req, resp, o);
    veil_channel_free(ch);
    return rc;
}

int vc_admin_apps_list(const vc_opts *o)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__ListAppsResponse *resp = NULL;
    if (admin_call(o, "ListApps", &req.base, &resp))
        return 1;
    if (o->json) {
        json_t *all = json_array();
        for (size_t i = 0; i < resp->n_apps; i++)
            json_array_append_new(all, app_json(resp->apps[i]));
        vc_print_json(all);
    } else {
        vc_table t;
        vc_table_init(&t, 6, "APP", "KIND", "SECTOR", "STATUS", "ATTRIBUTES", "NAME");
        for (size_t i = 0; i < resp->n_apps; i++) {
            const Veil__Gateway__App *a = resp->apps[i];
            char attrs[512] = "";
            for (size_t k = 0; k < a->n_attributes; k++) {
                size_t used = strlen(attrs);
                snprintf(attrs + used, sizeof attrs - used, "%s%s", k ? "," : "", a->attributes[k]);
            }
            vc_table_row(&t, a->app_id, a->kind, a->sector_id, a->status, attrs, a->name);
        }
        vc_table_print(&t);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

/* RegisterApp or UpdateApp: the whole entry from the options (UpdateApp keeps the status). */
static int app_write(const vc_opts *o, const char *method, const char *verb)
{
    if (!o->app || !o->name || !o->kind) {
        char line[256];
        snprintf(line, sizeof line,
                 "admin apps %s --app ID --name NAME --kind public_service|commercial "
                 "[--sector S] [--attrs a,b] [--org O]",
                 verb);
        return vc_usage(line);
    }
    size_t n;
    char **attrs = vc_split_attrs(o, &n);
    if (!attrs)
        return 1;
    Veil__Gateway__App req = VEIL__GATEWAY__APP__INIT, *resp = NULL;
    req.app_id = (char *)o->app;
    req.name = (char *)o->name;
    req.kind = (char *)o->kind;
    req.sector_id = (char *)(o->sector ? o->sector : "");
    req.organisation = (char *)(o->org ? o->org : "");
    req.attributes = attrs;
    req.n_attributes = n;
    /* OpenID Connect */
    char *jwks = NULL;
    Veil__Gateway__AttributePurpose purposes[16], *pp[16];
    req.redirect_uris = (char **)o->redirect_uris;
    req.n_redirect_uris = o->n_redirect_uris;
    req.token_auth = (char *)(o->auth ? o->auth : "");
    req.id_token_alg = (char *)(o->id_token_alg ? o->id_token_alg : "");
    for (size_t i = 0; i < o->n_attr_purposes; i++) {
        const char *eq = strchr(o->attr_purposes[i], '=');
        if (!eq) {
            vc_split_free(attrs);
            return vc_fail(o, "INVALID_ARGUMENT", "--attr-purpose takes ATTRIBUTE=TEXT");
        }
        veil__gateway__attribute_purpose__init(&purposes[i]);
        purposes[i].attribute = strndup(o->attr_purposes[i], (size_t)(eq - o->attr_purposes[i]));
        purposes[i].purpose = (char *)eq + 1;
        pp[i] = &purposes[i];
    }
    req.purposes = pp;
    req.n_purposes = o->n_attr_purposes;
    int rc = 0;
    if (o->jwks && !(jwks = vc_read_file(o->jwks, 16384)))
        rc = vc_fail(o, "INVALID_ARGUMENT", "--jwks %s: cannot read (at most 16 KiB)", o->jwks);
    req.jwks = jwks ? jwks : "";
    if (!rc)
        rc = admin_call(o, method, &req.base, &resp);
    if (!rc) {
        print_app(o, resp);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    for (size_t i = 0; i < o->n_attr_purposes; i++)
        free(purposes[i].attribute);
    free(jwks);
    vc_split_free(attrs);
    return rc;
}

int vc_admin_apps_register(const vc_opts *o)
{
    return app_write(o, "RegisterApp", "register");
}

int vc_admin_apps_update(const vc_opts *o)
{
    return app_write(o, "UpdateApp", "update");
}

static int app_state(const vc_opts *o, const char *method)
{
    if (!o->app)
        return vc_usage("admin apps suspend|reinstate --app ID [--reason TEXT]");
    Veil__Gateway__AppRequest req = VEIL__GATEWAY__APP_REQUEST__INIT;
    Veil__Gateway__App *resp = NULL;
    req.app_id = (char *)o->app;
    req.reason = (char *)(o->reason ? o->reason : "");
    if (admin_call(o, method, &req.base, &resp))
        return 1;
    print_app(o, resp);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int vc_admin_apps_suspend(const vc_opts *o)
{
    return app_state(o, "SuspendApp");
}

int vc_admin_apps_reinstate(const vc_opts *o)
{
    return app_state(o, "ReinstateApp");
}

int vc_admin_keys_rotate(const vc_opts *o)
{
    if (!o->kind || o->version < 0)
        return vc_usage("admin keys rotate --kind assertion|pseudonym|receipt --version N "
                        "(N = 0 ends the overlap with the previous key)");
    if (o->version == 0) {
        /* Apps still holding tokens or pseudonyms of the previous key lose them: ask first. */
        char what[128];
        snprintf(what, sizeof what, "ending the %s key overlap", o->kind);
        int asked = vc_confirm(o, what);
        if (asked)
            return asked;
    }
    Veil__Gateway__RotateKeyRequest req = VEIL__GATEWAY__ROTATE_KEY_REQUEST__INIT;
    Veil__Gateway__RotateKeyResponse *resp = NULL;
    req.kind = (char *)o->kind;
    req.version = (uint32_t)o->version;
    req.end_overlap = o->version == 0; /* only an explicit --version 0 ends an overlap */
    if (admin_call(o, "RotateKey", &req.base, &resp))
        return 1;
    if (o->json)
        vc_print_json(json_pack("{s:s, s:i, s:i}", "kind", resp->kind, "current", resp->current,
                                "previous", resp->previous));
    else
        printf("%s keys: current version %u, previous %u%s\n", resp->kind, resp->current,
               resp->previous, resp->previous ? " (still honoured during the overlap)" : "");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int vc_admin_identity(const vc_opts *o)
{
    if (!o->web_number || !o->state || !o->reason)
        return vc_usage("admin identity --web-number W --state active|suspended|revoked "
                        "--reason TEXT");
    Veil__Gateway__IdentityStateRequest req = VEIL__GATEWAY__IDENTITY_STATE_REQUEST__INIT;
    Veil__Empty *resp = NULL;
    req.web_number = (char *)o->web_number;
    req.state = (char *)o->state;
    req.reason = (char *)(o->reason ? o->reason : "");
    if (admin_call(o, "SetIdentityState", &req.base, &resp))
        return 1;
    if (o->json)
        vc_print_json(json_pack("{s:s, s:s}", "web_number", o->web_number, "state", o->state));
    else
        printf("identity %s is now %s\n", o->web_number, o->state);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

/* Carries out one step of an apply plan through the Admin API. */
static int apply_step(const vc_opts *o, const gw_plan_step *s)
{
    Veil__Gateway__App *done = NULL;
    int rc;
    if (s->op == GW_PLAN_ADD || s->op == GW_PLAN_UPDATE) {
        rc = admin_call(o, s->op == GW_PLAN_ADD ? "RegisterApp" : "UpdateApp", &s->want->base,
                        &done);
    } else {
        Veil__Gateway__AppRequest req = VEIL__GATEWAY__APP_REQUEST__INIT;
        req.app_id = s->want ? s->want->app_id : s->have->app_id;
        req.reason = (char *)(o->reason         ? o->reason
                              : s->want == NULL ? "not in the applied registry file"
                                                : "applied registry file");
        rc = admin_call(o, s->op == GW_PLAN_SUSPEND ? "SuspendApp" : "ReinstateApp", &req.base,
                        &done);
    }
    if (done)
        protobuf_c_message_free_unpacked(&done->base, NULL);
    return rc;
}

/*
 * admin apps apply --file F [--dry-run]: makes the registry match the file.
 * The diff is printed first (stderr, or the JSON's "diff"); with --dry-run
 * nothing changes.  Steps run in order through the Admin API, so each is
 * checked and audited like the single verbs; the first refusal stops the run
 * and says how many steps were applied before it.
 */
int vc_admin_apps_apply(const vc_opts *o)
{
    if (!o->file)
        return vc_usage("admin apps apply --file apps.yaml|apps.json [--dry-run] [--reason TEXT]");
    char err[512];
    gw_appfile want;
    if (gw_appfile_load(o->file, &want, err, sizeof err) != VEIL_OK)
        return vc_fail(o, "INVALID_ARGUMENT", "%s", err);
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__ListAppsResponse *have = NULL;
    gw_plan plan = {0};
    int rc = admin_call(o, "ListApps", &req.base, &have);
    if (rc)
        goto out;
    if (gw_plan_make(&want, have->apps, have->n_apps, 0, &plan) != VEIL_OK) {
        rc = vc_fail(o, "INTERNAL", "out of memory");
        goto out;
    }
    if (!o->json)
        gw_plan_print(&plan, o->dry_run ? stdout : stderr);
    size_t applied = 0;
    for (; !o->dry_run && applied < plan.n; applied++)
        if ((rc = apply_step(o, &plan.steps[applied])) != 0) {
            fprintf(stderr, "veilctl: stopped after %zu of %zu change(s)\n", applied, plan.n);
            goto out;
        }
    if (o->json)
        vc_print_json(json_pack("{s:o, s:b, s:I}", "diff", gw_plan_json(&plan), "dry_run",
                                o->dry_run, "applied", (json_int_t)applied));
    else if (!o->dry_run)
        printf("applied %zu change(s)\n", applied);
out:
    gw_plan_free(&plan);
    if (have)
        protobuf_c_message_free_unpacked(&have->base, NULL);
    gw_appfile_free(&want);
    return rc;
}

/* The admin audit log, read as the auditor (VEILCTL_AUDITOR, certificate auditor-<name>). */
int vc_admin_audit(const vc_opts *o)
{
    Veil__Gateway__AuditRequest req = VEIL__GATEWAY__AUDIT_REQUEST__INIT;
    Veil__Gateway__AuditResponse *resp = NULL;
    if (o->cursor) {
        char *end;
        long long after = strtoll(o->cursor, &end, 10);
        if (!o->cursor[0] || *end || after < 0)
            return vc_usage("admin audit [--web-number W] [--cursor SEQ] (SEQ: a whole number)");
        req.after_seq = after;
    }
    req.web_number = (char *)(o->web_number ? o->web_number : "");
    veil_channel *ch = vc_channel(o, "auditor", &veil__gateway__admin__descriptor);
    int rc = vc_call(ch, "ListAudit", &req.base, &resp, o);
    veil_channel_free(ch);
    if (rc)
        return rc;
    json_t *all = json_array();
    vc_table t;
    vc_table_init(&t, 8, "SEQ", "AT", "ACTOR", "METHOD", "APP", "IDENTITY", "REASON", "RESULT");
    for (size_t i = 0; i < resp->n_entries; i++) {
        const Veil__Gateway__AuditEntry *e = resp->entries[i];
        char at[40], seq[24];
        vc_time(e->at_ms, at, sizeof at);
        snprintf(seq, sizeof seq, "%lld", (long long)e->seq);
        json_array_append_new(all, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "seq",
                                             (json_int_t)e->seq, "at", at, "actor", e->actor,
                                             "method", e->method, "app", e->app_id, "identity_ref",
                                             e->identity_ref, "detail", e->detail, "reason",
                                             e->reason, "result", e->result));
        vc_table_row(&t, seq, at, e->actor, e->method, e->app_id, e->identity_ref, e->reason,
                     e->result);
    }
    vc_emit(o, all, &t);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}
