/* rtest.c - typed calls to the revocation service for its suites (rtest.h). */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "rtest.h"

#define TIMEOUT_MS 10000

void rt_subject(unsigned char out[32], unsigned n)
{
    memset(out, 0x5a, 32);
    memcpy(out, &n, sizeof n);
}

void rt_device(char out[33], unsigned n)
{
    snprintf(out, 33, "%032x", n);
}

veil_channel *rt_channel(const h_svc *s, const char *identity)
{
    return h_channel(s->proc.addr, identity, &veil__revocation__revocation__descriptor);
}

static ProtobufCBinaryData bin(const unsigned char *subject)
{
    ProtobufCBinaryData b = {32, (uint8_t *)subject};
    return b;
}

veil_err rt_revoke_device(veil_channel *ch, const unsigned char *subject, const char *device)
{
    Veil__Revocation__RevokeDeviceRequest req = VEIL__REVOCATION__REVOKE_DEVICE_REQUEST__INIT;
    Veil__Empty *resp;
    veil_status st;
    req.subject_ref = bin(subject);
    req.device_id = (char *)device;
    veil_err err = veil_channel_call(ch, "RevokeDevice", &req.base, NULL, TIMEOUT_MS, &resp, &st);
    if (!err)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return err;
}

veil_err rt_set_identity(veil_channel *ch, const unsigned char *subject, int state,
                         const char *reason, veil_status *st)
{
    Veil__Revocation__SetIdentityStateRequest req =
        VEIL__REVOCATION__SET_IDENTITY_STATE_REQUEST__INIT;
    Veil__Empty *resp;
    veil_status local;
    req.subject_ref = bin(subject);
    req.state = (Veil__Revocation__IdentityState)state;
    req.reason = (char *)reason;
    veil_err err = veil_channel_call(ch, "SetIdentityState", &req.base, NULL, TIMEOUT_MS, &resp,
                                     st ? st : &local);
    if (!err)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return err;
}

static veil_err link_call(veil_channel *ch, const char *method, const unsigned char *subject,
                          const char *app, int keep, uint32_t *epoch, veil_status *st)
{
    Veil__Revocation__AppLinkRequest req = VEIL__REVOCATION__APP_LINK_REQUEST__INIT;
    Veil__Revocation__AppLinkResponse *resp;
    veil_status local;
    req.subject_ref = bin(subject);
    req.app_id = (char *)app;
    req.keep_pseudonym = keep;
    veil_err err =
        veil_channel_call(ch, method, &req.base, NULL, TIMEOUT_MS, &resp, st ? st : &local);
    if (!err) {
        if (epoch)
            *epoch = resp->link_epoch;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return err;
}

veil_err rt_unlink(veil_channel *ch, const unsigned char *subject, const char *app, uint32_t *epoch,
                   veil_status *st)
{
    return link_call(ch, "UnlinkApp", subject, app, 0, epoch, st);
}

veil_err rt_relink(veil_channel *ch, const unsigned char *subject, const char *app, int keep,
                   uint32_t *epoch, veil_status *st)
{
    return link_call(ch, "RelinkApp", subject, app, keep, epoch, st);
}

veil_err rt_set_app(veil_channel *ch, const char *app, int state)
{
    Veil__Revocation__SetAppStateRequest req = VEIL__REVOCATION__SET_APP_STATE_REQUEST__INIT;
    Veil__Empty *resp;
    veil_status st;
    req.app_id = (char *)app;
    req.state = (Veil__Revocation__AppState)state;
    req.reason = "regulator order 17";
    veil_err err = veil_channel_call(ch, "SetAppState", &req.base, NULL, TIMEOUT_MS, &resp, &st);
    if (!err)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return err;
}

veil_err rt_status_call(veil_channel *ch, const char *method, const unsigned char *subject,
                        const char *device, const char *app, rt_status *out, veil_status *st)
{
    Veil__Revocation__StatusRequest req = VEIL__REVOCATION__STATUS_REQUEST__INIT;
    Veil__Revocation__StatusResponse *resp;
    veil_status local;
    req.subject_ref = bin(subject);
    req.device_id = (char *)device;
    req.app_id = (char *)app;
    memset(out, 0, sizeof *out);
    veil_err err =
        veil_channel_call(ch, method, &req.base, NULL, TIMEOUT_MS, &resp, st ? st : &local);
    if (!err) {
        out->allowed = resp->allowed;
        out->reason = resp->reason;
        out->epoch = resp->link_epoch;
        snprintf(out->code, sizeof out->code, "%s", resp->reason_code);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return err;
}

Veil__AppEventsResponse *rt_app_events(veil_channel *ch, const char *app, int64_t after_seq,
                                       uint32_t max)
{
    Veil__AppEventsRequest req = VEIL__APP_EVENTS_REQUEST__INIT;
    Veil__AppEventsResponse *resp;
    veil_status st;
    req.app_id = (char *)app;
    req.after_seq = after_seq;
    req.max = max;
    ck_assert_int_eq(veil_channel_call(ch, "AppEvents", &req.base, NULL, TIMEOUT_MS, &resp, &st),
                     VEIL_OK);
    return resp;
}
