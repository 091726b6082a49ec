/* consent_test.c - typed calls to the consent service for its suites (consent_test.h). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consent_test.h"
#include "veil/codec.h"

#define TIMEOUT_MS 10000

void ct_subject(unsigned char out[32], unsigned n)
{
    memset(out, 0xc5, 32);
    memcpy(out, &n, sizeof n);
}

veil_channel *ct_channel(const h_svc *s, const char *identity)
{
    return h_channel(s->proc.addr, identity, &veil__consent__consent__descriptor);
}

veil_channel *ct_start(h_svc *s)
{
    ck_assert_int_eq(h_svc_start(s, "consent", "receipt", NULL), 0);
    return ct_channel(s, "svc/gateway");
}

void ct_stop(h_svc *s, veil_channel *gw)
{
    veil_channel_free(gw);
    ck_assert_int_eq(h_svc_stop(s), 0);
}

static size_t count(const char *const *names)
{
    size_t n = 0;
    while (names && names[n])
        n++;
    return n;
}

/* A call to the consent service; st may be NULL. */
static veil_err call(veil_channel *ch, const char *method, const ProtobufCMessage *req, void *resp,
                     veil_status *st)
{
    veil_status local;
    return veil_channel_call(ch, method, req, NULL, TIMEOUT_MS, resp, st ? st : &local);
}

/* The subject, app and attributes fields that Grant, Withdraw and Check requests share. */
#define FILL(req, subject, subject_bytes, app, attrs)                                              \
    ((req).subject_ref.data = (uint8_t *)(subject), (req).subject_ref.len = (subject_bytes),       \
     (req).app_id = (char *)(app), (req).attributes = (char **)(attrs),                            \
     (req).n_attributes = count(attrs))

int64_t ct_now_ms(void)
{
    return veil_now_ms();
}

veil_err ct_grant(veil_channel *ch, const unsigned char *subject, size_t subject_len,
                  const char *app, const char *const *attrs, const char *purpose,
                  int64_t expires_at_ms, const char *const *scope, char *receipt_id, char **receipt,
                  veil_status *st)
{
    Veil__Consent__GrantRequest req = VEIL__CONSENT__GRANT_REQUEST__INIT;
    Veil__Consent__GrantResponse *resp;
    FILL(req, subject, subject_len, app, attrs);
    req.purpose = (char *)purpose;
    req.expires_at_ms = expires_at_ms;
    req.app_scope = (char **)scope;
    req.n_app_scope = count(scope);
    veil_err err = call(ch, "Grant", &req.base, &resp, st);
    if (!err) {
        if (receipt_id)
            snprintf(receipt_id, 64, "%s", resp->receipt_id);
        if (receipt)
            *receipt = strdup(resp->receipt);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return err;
}

veil_err ct_withdraw(veil_channel *ch, const unsigned char *subject, const char *app,
                     const char *const *attrs, char *out, veil_status *st)
{
    Veil__Consent__WithdrawRequest req = VEIL__CONSENT__WITHDRAW_REQUEST__INIT;
    Veil__Consent__WithdrawResponse *resp;
    FILL(req, subject, 32, app, attrs);
    if (out)
        out[0] = '\0';
    veil_err err = call(ch, "Withdraw", &req.base, &resp, st);
    if (!err) {
        size_t used = 0;
        for (size_t i = 0; out && i < resp->n_withdrawn; i++)
            used +=
                (size_t)snprintf(out + used, 256 - used, "%s%s", i ? "," : "", resp->withdrawn[i]);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return err;
}

veil_err ct_check(veil_channel *ch, const unsigned char *subject, const char *app,
                  const char *const *attrs, char *out, veil_status *st)
{
    Veil__Consent__CheckRequest req = VEIL__CONSENT__CHECK_REQUEST__INIT;
    Veil__Consent__CheckResponse *resp;
    FILL(req, subject, 32, app, attrs);
    out[0] = '\0';
    veil_err err = call(ch, "Check", &req.base, &resp, st);
    if (!err) {
        size_t used = 0;
        for (size_t i = 0; i < resp->n_granted; i++)
            used += (size_t)snprintf(out + used, 1024 - used, "%s%s=%s", i ? "," : "",
                                     resp->granted[i]->attribute, resp->granted[i]->receipt_id);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return err;
}

Veil__Consent__ListResponse *ct_list(veil_channel *ch, const unsigned char *subject)
{
    Veil__Consent__ListRequest req = VEIL__CONSENT__LIST_REQUEST__INIT;
    Veil__Consent__ListResponse *resp;
    veil_status st;
    req.subject_ref.data = (uint8_t *)subject;
    req.subject_ref.len = 32;
    ck_assert_int_eq(veil_channel_call(ch, "List", &req.base, NULL, TIMEOUT_MS, &resp, &st),
                     VEIL_OK);
    return resp;
}

char *ct_jwks(veil_channel *ch)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Consent__KeysResponse *resp;
    veil_status st;
    ck_assert_int_eq(veil_channel_call(ch, "GetKeys", &req.base, NULL, TIMEOUT_MS, &resp, &st),
                     VEIL_OK);
    char *jwks = strdup(resp->jwks);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return jwks;
}
