/*
 * downstream.c - what every gateway handler shares: calls to the internal
 * services, citizen-request verification and finding the calling app.
 */
#include <stdio.h>
#include <string.h>

#include "gateway.h"
#include "veil/log.h"
#include "veil/vault.pb-c.h"

/* Records a failed downstream call on call: a status and a message safe for the caller. */
veil_err gw_downstream_failed(veil_call *call, const char *method, veil_err err,
                                  const veil_status *st)
{
    switch (err) {
    case VEIL_ERR_INVALID:
    case VEIL_ERR_NOT_FOUND:
    case VEIL_ERR_EXISTS:
    case VEIL_ERR_DENIED:
    case VEIL_ERR_UNAUTHENTICATED:
    case VEIL_ERR_PRECONDITION:
    case VEIL_ERR_ABORTED:
        /* The internal services' messages are written for the caller and
         * never carry personal data, so they pass through. */
        veil_call_fail(call, err, "%s", st->message);
        break;
    case VEIL_ERR_DEADLINE:
        veil_call_fail(call, err, "deadline exceeded");
        break;
    case VEIL_ERR_UNAVAILABLE:
    case VEIL_ERR_CANCELLED:
        err = VEIL_ERR_UNAVAILABLE;
        veil_call_fail(call, err, "a veil service is unavailable, retry later");
        break;
    default:
        veil_call_fail(call, VEIL_ERR_INTERNAL, "internal error");
        err = VEIL_ERR_INTERNAL;
    }
    if (err == VEIL_ERR_UNAVAILABLE || err == VEIL_ERR_INTERNAL || err == VEIL_ERR_DEADLINE)
        veil_log(VEIL_LOG_WARN, "downstream call failed", VL_STR("method", method),
                 VL_STR("status", veil_status_name(st->code)), VL_STR("message", st->message),
                 VL_END);
    return err;
}

veil_err gw_downstream(struct gateway *gw, veil_call *call, veil_channel *ch, const char *method,
                       const ProtobufCMessage *req, void *resp)
{
    veil_status st;
    int64_t budget = veil_call_budget_ms(call, gw->rpc_timeout_ms);
    veil_err err = veil_channel_call(ch, method, req, veil_call_allocator(call), budget, resp, &st);
    return err ? gw_downstream_failed(call, method, err, &st) : VEIL_OK;
}

veil_err gw_log_change(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject,
                       const gw_change *ch)
{
    Veil__Vault__AppendAccessLogRequest r = VEIL__VAULT__APPEND_ACCESS_LOG_REQUEST__INIT;
    Veil__Empty *ignored;
    r.subject_ref = subject;
    r.action = (char *)ch->action;
    r.app_id = (char *)(ch->app_id ? ch->app_id : "");
    r.attributes = ch->attributes;
    r.n_attributes = ch->n_attributes;
    r.purpose = (char *)(ch->purpose ? ch->purpose : "");
    r.actor = (char *)(ch->actor ? ch->actor : "");
    r.detail = (char *)(ch->detail ? ch->detail : "");
    return gw_downstream(gw, call, gw->vault, "AppendAccessLog", &r.base, &ignored);
}

veil_err gw_citizen(struct gateway *gw, veil_call *call, const Veil__Gateway__SignedRequest *req,
                    const ProtobufCMessageDescriptor *desc, void *payload,
                    ProtobufCBinaryData *subject, char **device_id)
{
    *(ProtobufCMessage **)payload = NULL;
    if (!req->auth) {
        veil_call_fail(call, VEIL_ERR_UNAUTHENTICATED, "auth is missing: requests must be signed");
        return VEIL_ERR_UNAUTHENTICATED;
    }
    /*
     * What needs no key and no database is checked here, so malformed
     * requests never cost the vault a device look-up or a signature check.
     */
    unsigned char id[VEIL_DEVICE_ID_BYTES];
    const char *bad = veil_device_id_parse(req->auth->device_id, id) != 0
                          ? "auth.device_id must be 32 lowercase hex characters"
                      : req->auth->nonce.len != VEIL_NONCE_BYTES ? "auth.nonce must be 16 bytes"
                      : req->auth->signature.len != 64           ? "auth.signature must be 64 bytes"
                                                                 : NULL;
    if (bad) {
        veil_call_fail(call, VEIL_ERR_INVALID, "%s", bad);
        return VEIL_ERR_INVALID;
    }
    Veil__Vault__VerifyCitizenRequestRequest vr = VEIL__VAULT__VERIFY_CITIZEN_REQUEST_REQUEST__INIT;
    Veil__Vault__VerifyCitizenRequestResponse *vresp;
    vr.method = (char *)veil_call_method(call);
    vr.payload = req->payload;
    vr.auth = req->auth;
    veil_err err = gw_downstream(gw, call, gw->vault, "VerifyCitizenRequest", &vr.base, &vresp);
    if (err)
        return err;
    ProtobufCMessage *p =
        veil_call_unpack(call, desc, req->payload.data, req->payload.len, "payload is malformed");
    if (!p)
        return VEIL_ERR_INVALID;
    *(ProtobufCMessage **)payload = p;
    *subject = vresp->subject_ref;
    *device_id = vresp->device_id;
    return VEIL_OK;
}

veil_err gw_calling_app(struct gateway *gw, veil_call *call, gw_app *app)
{
    const veil_peer *peer = veil_call_peer(call);
    /* The policy already admitted only app certificates; now the registry. */
    if (gw_registry_get(&gw->registry, peer->name, app) != 0 ||
        strcmp(app->cert_identity, peer->uri) != 0) {
        veil_call_fail(call, VEIL_ERR_DENIED, "app is not registered");
        return VEIL_ERR_DENIED;
    }
    if (strcmp(app->status, "active") != 0) {
        veil_call_fail(call, VEIL_ERR_DENIED, "app is suspended");
        return VEIL_ERR_DENIED;
    }
    return VEIL_OK;
}

int gw_text_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= max && veil_utf8_printable(s, n);
}

veil_err gw_store_failed(veil_call *call, veil_err err)
{
    if (err == VEIL_ERR_UNAVAILABLE || err == VEIL_ERR_DEADLINE) {
        veil_call_fail(call, VEIL_ERR_UNAVAILABLE, "database unavailable, retry later");
        return VEIL_ERR_UNAVAILABLE;
    }
    veil_call_fail(call, VEIL_ERR_INTERNAL, "internal error");
    return VEIL_ERR_INTERNAL;
}
