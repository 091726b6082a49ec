/*
 * wallet_cmds.c - the citizen's verbs: a simulated phone's wallet file,
 * enrolment through the (development) proofing authority, consent, devices,
 * app links, the access log and erasure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "veil/codec.h"
#include "veil/keys.h"
#include "veilctl.h"

static json_t *str_array(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static void join(char **v, size_t n, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i ? "," : "", v[i]);
    }
}

int vc_wallet_create(const vc_opts *o)
{
    if (!o->wallet)
        return vc_usage("wallet create --wallet FILE");
    vw_wallet *w;
    char err[512], pk[64];
    if (vw_wallet_new(&w) != VEIL_OK)
        return vc_fail(o, "INTERNAL", "cannot make a key pair");
    int rc = 0;
    if (vw_wallet_save(w, o->wallet, 1, err, sizeof err) != VEIL_OK) {
        rc = vc_fail(o, "ALREADY_EXISTS", "%s", err);
    } else {
        veil_b64url_encode(pk, sizeof pk, w->pk, 32);
        if (o->json)
            vc_print_json(json_pack("{s:s, s:s}", "wallet", o->wallet, "device_public_key", pk));
        else
            printf("wallet %s created (mode 0600)\ndevice public key %s\n", o->wallet, pk);
    }
    vw_wallet_free(w);
    return rc;
}

int vc_proofing_seed(const vc_opts *o, veil_key **key)
{
    const char *path = getenv("VEILCTL_PROOFING_KEY");
    char err[512];
    if (!path || !*path)
        return vc_fail(o, "FAILED_PRECONDITION",
                       "VEILCTL_PROOFING_KEY is not set (run: eval \"$(deploy/local/stack env)\")");
    if (veil_key_load(path, 1, key, err, sizeof err) != VEIL_OK)
        return vc_fail(o, "FAILED_PRECONDITION", "%s", err);
    return 0;
}

int vc_wallet_enroll(const vc_opts *o)
{
    if (!o->wallet || !o->id_number || !o->name)
        return vc_usage("wallet enroll --wallet FILE --id-number N --name NAME");
    vw_wallet *w = vc_wallet(o);
    veil_key *seed = NULL;
    if (!w || vc_proofing_seed(o, &seed) != 0) {
        vw_wallet_free(w);
        return 1;
    }
    Veil__Gateway__WalletEnrolRequest req = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    Veil__Gateway__WalletEnrolResponse *resp = NULL;
    Veil__Gateway__WalletKeysResponse *keys = NULL;
    Veil__Empty empty = VEIL__EMPTY__INIT;
    unsigned char sig[64], rid[16], sealed[VEIL_ENROL_SEALED_BYTES];
    char request_id[32], err[512];
    /* The proofing authority checked the card and the face; here it only signs. */
    vw_attest(w, seed->bytes, o->id_number, o->name, 1, veil_now_ms(), sig, &req);
    veil_key_free(seed);
    randombytes_buf(rid, sizeof rid);
    veil_b64url_encode(request_id, sizeof request_id, rid, sizeof rid);
    req.request_id = request_id;
    req.device_label = (char *)(o->label ? o->label : "veilctl wallet");
    veil_channel *ch = vc_channel(o, "citizen", &veil__gateway__wallet__descriptor);
    /* The identity goes sealed to the vault's ticket key: the gateway relays it unread. */
    int rc = vc_call(ch, "GetKeys", &empty.base, &keys, o);
    if (!rc && vw_wallet_keys(w, keys) != VEIL_OK)
        rc = vc_fail(o, "INTERNAL", "the gateway's keys reply is incomplete");
    if (!rc) {
        veil_err se = vw_seal_enrolment(w, &req, sealed);
        if (se)
            rc = vc_fail(o, "INVALID_ARGUMENT",
                         "the identity does not fit the enrolment format (name at most 200 bytes, "
                         "label at most 64)");
    }
    if (!rc)
        rc = vc_call(ch, "Enrol", &req.base, &resp, o);
    if (keys)
        protobuf_c_message_free_unpacked(&keys->base, NULL);
    sodium_memzero(sealed, sizeof sealed);
    veil_channel_free(ch);
    if (!rc && vw_wallet_enrolled(w, resp) != VEIL_OK)
        rc = vc_fail(o, "INTERNAL", "the gateway's reply is incomplete");
    if (!rc && vw_wallet_save(w, o->wallet, 0, err, sizeof err) != VEIL_OK)
        rc = vc_fail(o, "UNAVAILABLE", "%s", err);
    if (!rc) {
        if (o->json) {
            vc_print_json(json_pack("{s:s, s:s, s:b, s:s}", "web_number", resp->web_number,
                                    "device_id", resp->device_id, "new_identity",
                                    resp->new_identity, "web_certificate", resp->web_certificate));
        } else {
            printf("%s\nweb number  %s\ndevice      %s\n",
                   resp->new_identity ? "enrolled: a new identity" : "enrolled: a new device "
                                                                      "for a known identity",
                   resp->web_number, resp->device_id);
            printf("web certificate (show this QR code when asked for your web certificate):\n");
            vc_print_qr(resp->web_certificate);
        }
    }
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    vw_wallet_free(w);
    return rc;
}

int vc_wallet_show(const vc_opts *o)
{
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    char pk[64];
    veil_b64url_encode(pk, sizeof pk, w->pk, 32);
    if (o->json)
        vc_print_json(json_pack("{s:s, s:s, s:s, s:b}", "device_public_key", pk, "device_id",
                                w->device_id, "web_number", w->web_number, "enrolled",
                                w->device_id[0] != 0));
    else
        printf("device public key  %s\ndevice id          %s\nweb number         %s\n", pk,
               w->device_id[0] ? w->device_id : "(not enrolled)",
               w->web_number[0] ? w->web_number : "-");
    vw_wallet_free(w);
    return 0;
}

/*
 * Opens the wallet, sends payload as the device-signed call method, and
 * hands the reply to show, whose result is the exit status; frees both.
 */
typedef int (*reply_fn)(const vc_opts *o, vw_wallet *w, void *resp, void *ctx);

static int wallet_call(const vc_opts *o, const char *method, const ProtobufCMessage *payload,
                       reply_fn show, void *ctx)
{
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    ProtobufCMessage *resp = NULL;
    int rc = vc_citizen(o, w, method, payload, &resp);
    if (!rc) {
        rc = show(o, w, resp, ctx);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    vw_wallet_free(w);
    return rc;
}

static int show_granted(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)w;
    const Veil__Gateway__GrantConsentResponse *resp = reply;
    const Veil__Gateway__GrantConsentPayload *p = ctx;
    char when[64];
    vc_time(p->expires_at_ms, when, sizeof when);
    if (o->json)
        vc_print_json(json_pack("{s:s, s:s, s:o, s:s, s:s}", "receipt_id", resp->receipt_id, "app",
                                o->app, "attributes", str_array(p->attributes, p->n_attributes),
                                "expires_at", when, "receipt", resp->receipt));
    else
        printf("consent granted to %s for %s until %s\nreceipt %s\n", o->app, o->attrs, when,
               resp->receipt_id);
    return 0;
}

int vc_consent_grant(const vc_opts *o)
{
    if (!o->app || !o->attrs || !o->purpose)
        return vc_usage(
            "wallet consent grant --wallet FILE --app APP_ID --attrs a,b --purpose TEXT");
    if (o->days <= 0)
        return vc_fail(o, "INVALID_ARGUMENT", "--days must be positive");
    size_t n;
    char **attrs = vc_split_attrs(o, &n);
    if (!attrs)
        return 1;
    Veil__Gateway__GrantConsentPayload p = VEIL__GATEWAY__GRANT_CONSENT_PAYLOAD__INIT;
    p.app_id = (char *)o->app;
    p.attributes = attrs;
    p.n_attributes = n;
    p.purpose = (char *)o->purpose;
    p.expires_at_ms = veil_now_ms() + o->days * 86400000LL;
    int rc = wallet_call(o, "GrantConsent", &p.base, show_granted, &p);
    vc_split_free(attrs);
    return rc;
}

static int show_withdrawn(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)w;
    (void)ctx;
    const Veil__Gateway__WithdrawConsentResponse *resp = reply;
    char list[512];
    join(resp->withdrawn, resp->n_withdrawn, list, sizeof list);
    if (o->json)
        vc_print_json(json_pack("{s:s, s:o}", "app", o->app, "withdrawn",
                                str_array(resp->withdrawn, resp->n_withdrawn)));
    else
        printf("consent withdrawn from %s: %s\n", o->app, list);
    return 0;
}

int vc_consent_withdraw(const vc_opts *o)
{
    if (!o->app)
        return vc_usage("wallet consent withdraw --wallet FILE --app APP_ID [--attrs a,b]");
    size_t n;
    char **attrs = vc_split_attrs(o, &n);
    if (!attrs)
        return 1;
    Veil__Gateway__WithdrawConsentPayload p = VEIL__GATEWAY__WITHDRAW_CONSENT_PAYLOAD__INIT;
    p.app_id = (char *)o->app;
    p.attributes = attrs;
    p.n_attributes = n;
    int rc = wallet_call(o, "WithdrawConsent", &p.base, show_withdrawn, NULL);
    vc_split_free(attrs);
    return rc;
}

static int show_consents(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)w;
    (void)ctx;
    const Veil__Gateway__ListConsentsResponse *resp = reply;
    json_t *all = json_array();
    vc_table t;
    vc_table_init(&t, 6, "RECEIPT", "APP", "ATTRIBUTES", "PURPOSE", "EXPIRES", "STATUS");
    for (size_t i = 0; i < resp->n_grants; i++) {
        const Veil__Gateway__ConsentGrant *g = resp->grants[i];
        char granted[64], expires[64], attrs[512];
        join(g->attributes, g->n_attributes, attrs, sizeof attrs);
        vc_time(g->granted_at_ms, granted, sizeof granted);
        vc_time(g->expires_at_ms, expires, sizeof expires);
        json_array_append_new(
            all,
            json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:o, s:s}", "receipt_id", g->receipt_id,
                      "app", g->app_id, "attributes", str_array(g->attributes, g->n_attributes),
                      "purpose", g->purpose, "granted_at", granted, "expires_at", expires, "status",
                      g->status, "withdrawn", str_array(g->withdrawn, g->n_withdrawn), "receipt",
                      g->receipt));
        vc_table_row(&t, g->receipt_id, g->app_id, attrs, g->purpose, expires, g->status);
    }
    vc_emit(o, all, &t);
    return 0;
}

int vc_consent_list(const vc_opts *o)
{
    Veil__Gateway__ListConsentsPayload p = VEIL__GATEWAY__LIST_CONSENTS_PAYLOAD__INIT;
    return wallet_call(o, "ListConsents", &p.base, show_consents, NULL);
}

/* A pending action as JSON. */
static json_t *pending_json(const Veil__Gateway__WalletPendingAction *p)
{
    char req[64], eff[64];
    vc_time(p->requested_at_ms, req, sizeof req);
    vc_time(p->effective_at_ms, eff, sizeof eff);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", p->id, "action", p->action,
                     "target_device", p->target_device_id, "requested_by", p->requested_by,
                     "requested_at", req, "effective_at", eff);
}

/*
 * Prints what an erase or a device revocation did.  Pending is not a
 * failure of the call, but the action has not happened: exit status 3 says
 * so to scripts (docs/veilctl.md).  Takes ownership of done_json.
 */
static int step_up_result(const vc_opts *o, const Veil__Gateway__StepUpResult *r, json_t *done_json,
                          const char *done_text)
{
    if (strcmp(r->status, "pending") != 0 || !r->pending) {
        if (o->json) {
            json_object_set_new(done_json, "status", json_string("done"));
            json_object_set_new(done_json, "reason", json_string(r->reason));
            vc_print_json(done_json);
        } else {
            json_decref(done_json);
            printf("%s\n", done_text);
        }
        return 0;
    }
    json_decref(done_json);
    char eff[64];
    vc_time(r->pending->effective_at_ms, eff, sizeof eff);
    if (o->json)
        vc_print_json(json_pack("{s:s, s:s, s:o}", "status", "pending", "reason", r->reason,
                                "pending", pending_json(r->pending)));
    else
        printf("PENDING: this phone was not freshly proofed, so the %s waits until %s.\n"
               "Your other devices see it (`veilctl wallet pending`) and can cancel it; a "
               "re-proofing cancels it too.\n"
               "Run the same command from this phone after that time to confirm it, or re-enrol "
               "this phone (ID card and face) and run it again to do it now.\n",
               strcmp(r->pending->action, "erase") == 0 ? "erasure" : "revocation", eff);
    return 3;
}

static int show_revoked(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)ctx;
    const char *which = o->device ? o->device : w->device_id;
    char text[256];
    snprintf(text, sizeof text,
             "device %s revoked: its tickets and requests are refused from now on", which);
    return step_up_result(o, reply, json_pack("{s:s}", "revoked", which), text);
}

int vc_wallet_revoke_device(const vc_opts *o)
{
    Veil__Gateway__RevokeDevicePayload p = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    p.device_id = (char *)(o->device ? o->device : "");
    return wallet_call(o, "RevokeDevice", &p.base, show_revoked, NULL);
}

static int show_pending(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)ctx;
    const Veil__Gateway__ListPendingResponse *resp = reply;
    json_t *all = json_array();
    vc_table t;
    size_t n = resp->n_pending;
    vc_table_init(&t, 5, "ID", "ACTION", "TARGET", "REQUESTED BY", "TAKES EFFECT");
    for (size_t i = 0; i < n; i++) {
        const Veil__Gateway__WalletPendingAction *a = resp->pending[i];
        int mine = strcmp(a->requested_by, w->device_id) == 0;
        char eff[64], by[64];
        vc_time(a->effective_at_ms, eff, sizeof eff);
        snprintf(by, sizeof by, "%s%s", a->requested_by, mine ? " (this device)" : "");
        json_t *j = pending_json(a);
        json_object_set_new(j, "this_device", json_boolean(mine));
        json_array_append_new(all, j);
        vc_table_row(&t, a->id, a->action, a->target_device_id[0] ? a->target_device_id : "-", by,
                     eff);
    }
    vc_emit(o, all, &t);
    if (!o->json)
        printf(n ? "cancel with: veilctl wallet cancel-pending --wallet FILE [--id ID]\n"
                 : "nothing pending\n");
    return 0;
}

int vc_wallet_pending(const vc_opts *o)
{
    Veil__Gateway__ListPendingPayload p = VEIL__GATEWAY__LIST_PENDING_PAYLOAD__INIT;
    return wallet_call(o, "ListPending", &p.base, show_pending, NULL);
}

static int show_cancelled(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)w;
    (void)ctx;
    const Veil__Gateway__CancelPendingResponse *resp = reply;
    if (o->json)
        vc_print_json(json_pack("{s:i}", "cancelled", (int)resp->cancelled));
    else
        printf("%u pending action%s cancelled\n", resp->cancelled, resp->cancelled == 1 ? "" : "s");
    return 0;
}

int vc_wallet_cancel_pending(const vc_opts *o)
{
    Veil__Gateway__CancelPendingPayload p = VEIL__GATEWAY__CANCEL_PENDING_PAYLOAD__INIT;
    p.id = (char *)(o->id ? o->id : "");
    return wallet_call(o, "CancelPending", &p.base, show_cancelled, NULL);
}

static int show_devices(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)ctx;
    const Veil__Gateway__ListDevicesResponse *resp = reply;
    json_t *all = json_array();
    vc_table t;
    vc_table_init(&t, 4, "DEVICE", "STATUS", "LABEL", "ENROLLED");
    for (size_t i = 0; i < resp->n_devices; i++) {
        const Veil__Gateway__WalletDevice *d = resp->devices[i];
        char created[64];
        vc_time(d->created_at_ms, created, sizeof created);
        json_array_append_new(all, json_pack("{s:s, s:s, s:s, s:s, s:b}", "device", d->device_id,
                                             "status", d->status, "label", d->label, "enrolled_at",
                                             created, "this_device",
                                             strcmp(d->device_id, w->device_id) == 0));
        vc_table_row(&t, d->device_id, d->status, d->label, created);
    }
    vc_emit(o, all, &t);
    return 0;
}

int vc_wallet_devices(const vc_opts *o)
{
    Veil__Gateway__ListDevicesPayload p = VEIL__GATEWAY__LIST_DEVICES_PAYLOAD__INIT;
    return wallet_call(o, "ListDevices", &p.base, show_devices, NULL);
}

/* ctx: {method, done_text} of app_link. */
static int show_app_link(const vc_opts *o, vw_wallet *w, void *reply, void *ctx)
{
    (void)w;
    (void)reply;
    const char *const *what = ctx;
    if (o->json)
        vc_print_json(json_pack("{s:s, s:s}",
                                strcmp(what[0], "UnlinkApp") ? "relinked" : "unlinked", o->app,
                                "pseudonym", o->keep ? "kept" : "fresh on next login"));
    else
        printf("%s %s\n", o->app, what[1]);
    return 0;
}

static int app_link(const vc_opts *o, const char *method, const char *done_text)
{
    if (!o->app)
        return vc_usage("wallet unlink|relink --wallet FILE --app APP_ID");
    Veil__Gateway__AppLinkPayload p = VEIL__GATEWAY__APP_LINK_PAYLOAD__INIT;
    p.app_id = (char *)o->app;
    p.keep_pseudonym = o->keep;
    const char *what[] = {method, done_text};
    return wallet_call(o, method, &p.base, show_app_link, (void *)what);
}

int vc_wallet_unlink(const vc_opts *o)
{
    return app_link(o, "UnlinkApp",
                    "unlinked: the app is told to close the account; a later login starts afresh");
}

int vc_wallet_relink(const vc_opts *o)
{
    return app_link(o, "RelinkApp",
                    o->keep ? "relinked with the old pseudonym" : "relinked with a fresh pseudonym");
}

/* Pins the vault's checkpoint key from GetKeys for a wallet enrolled before it existed. */
static int pin_checkpoint_key(const vc_opts *o, vw_wallet *w)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__WalletKeysResponse *keys = NULL;
    veil_channel *ch = vc_channel(o, "citizen", &veil__gateway__wallet__descriptor);
    int rc = vc_call(ch, "GetKeys", &req.base, &keys, o);
    veil_channel_free(ch);
    if (rc)
        return rc;
    if (keys->checkpoint_public_key.len == 32) {
        memcpy(w->checkpoint_pk, keys->checkpoint_public_key.data, 32);
        w->has_checkpoint_key = 1;
    }
    protobuf_c_message_free_unpacked(&keys->base, NULL);
    return 0;
}

int vc_wallet_access_log(const vc_opts *o)
{
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *resp = NULL;
    char err[512];
    int rc = w->has_checkpoint_key ? 0 : pin_checkpoint_key(o, w);
    if (!rc)
        rc = vc_citizen(o, w, "AccessLog", &p.base, &resp);
    if (!rc) {
        vw_log_check chk;
        vw_checkpoint_check(w, resp, &chk);
        json_t *entries = json_array();
        vc_table t;
        vc_table_init(&t, 6, "TIME", "APP", "ACTION", "ATTRIBUTES", "PURPOSE", "BY");
        for (size_t i = 0; i < resp->n_entries; i++) {
            const Veil__Gateway__AccessLogEntry *e = resp->entries[i];
            char at[64], attrs[512];
            vc_time(e->at_ms, at, sizeof at);
            join(e->attributes, e->n_attributes, attrs, sizeof attrs);
            json_array_append_new(entries,
                                  json_pack("{s:I, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "seq",
                                            (json_int_t)e->seq, "at", at, "app", e->app_id,
                                            "action", e->action, "attributes",
                                            str_array(e->attributes, e->n_attributes), "purpose",
                                            e->purpose, "actor", e->actor, "detail", e->detail));
            vc_table_row(&t, at, e->app_id[0] ? e->app_id : "-", e->action, attrs, e->purpose,
                         e->actor[0] ? e->actor : "-");
        }
        json_t *cp = json_pack("{s:s, s:b, s:I, s:I, s:s}", "status", chk.status, "ok", chk.ok,
                               "seq", (json_int_t)chk.seq, "previous_seq",
                               (json_int_t)chk.previous_seq, "message", chk.message);
        vc_emit(o,
                json_pack("{s:o, s:b, s:I, s:o}", "entries", entries, "chain_valid",
                          resp->chain_valid, "first_bad_seq", (json_int_t)resp->first_bad_seq,
                          "checkpoint", cp),
                &t);
        if (!o->json) {
            printf(resp->chain_valid ? "log intact: every entry matches its hash chain\n"
                                     : "LOG TAMPERED: the hash chain breaks at entry %lld\n",
                   (long long)resp->first_bad_seq);
            printf(chk.ok ? "checkpoint: %s\n" : "LOG TAMPERED: %s\n", chk.message);
        }
        /*
         * Only a read that extends the last one becomes the new checkpoint:
         * after tampering the wallet keeps the old one, so it keeps saying so.
         */
        if (chk.ok && resp->chain_valid) {
            vw_checkpoint_keep(w, resp);
            if (vw_wallet_save(w, o->wallet, 0, err, sizeof err) != VEIL_OK)
                rc = vc_fail(o, "UNAVAILABLE", "%s", err);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    vw_wallet_free(w);
    return rc;
}

int vc_wallet_erase(const vc_opts *o)
{
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    char what[128];
    snprintf(what, sizeof what, "erasing identity %s", w->web_number);
    int asked = vc_confirm(o, what);
    if (asked) {
        vw_wallet_free(w);
        return asked;
    }
    Veil__Gateway__ErasePayload p = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    Veil__Gateway__StepUpResult *resp = NULL;
    p.confirm = "erase my identity";
    int rc = vc_citizen(o, w, "Erase", &p.base, &resp);
    if (!rc) {
        char text[256];
        snprintf(text, sizeof text,
                 "identity %s erased: its record is crypto-shredded, apps are told, consent "
                 "forgotten",
                 w->web_number);
        rc = step_up_result(
            o, resp, json_pack("{s:b, s:s}", "erased", 1, "web_number", w->web_number), text);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    vw_wallet_free(w);
    return rc;
}
