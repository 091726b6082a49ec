/*
 * valgrind_scenario.c - one citizen's whole story through the gateway, for
 * tests/valgrind/run, which starts every service under valgrind (through
 * VEIL_TEST_WRAPPER) and reads their reports afterwards: enrolment (and a
 * second phone), consent granted and withdrawn, logins to several apps with
 * attribute release, events, an unlinked app, a revoked phone, the admin
 * suspending and reinstating the identity, the access log, erasure.  Then
 * every service is stopped with SIGTERM and must exit 0 - valgrind turns any
 * error it found, a definitely lost block included, into exit status 99.
 *
 * Small but complete: valgrind runs the services some twenty times slower.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

static h_stack S;

/* After a failure: no service may outlive the test (SIGKILL; their reports are moot). */
static void kill_leftovers(void)
{
    h_proc *procs[] = {&S.gateway, &S.vault, &S.consent, &S.revocation, &S.pseudonym};
    for (int i = 0; i < 5; i++)
        h_kill(procs[i]);
}

/* A call that must succeed; *resp (read after the call, hence the pointer) is freed. */
static void ok(veil_err err, const veil_status *st, void *resp, const char *what)
{
    if (err)
        ck_abort_msg("%s: %s: %s", what, veil_status_name(st->code), st->message);
    e2e_free(*(ProtobufCMessage **)resp);
}

static void login(const char *app, const vw_wallet *w, const char *const *attrs, size_t n,
                  size_t released)
{
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    veil_err err = e2e_login(&S, app, w, attrs, n, &r, &st);
    if (err)
        ck_abort_msg("login to %s: %s: %s", app, veil_status_name(st.code), st.message);
    ck_assert_uint_eq(r->n_released, released);
    e2e_free(r);
}

START_TEST(test_a_citizens_story)
{
    static const char *const env[] = {"VEIL_RPC_TIMEOUT_MS=30000", NULL};
    h_stack_opts o = {.service_env = env};
    ck_assert_int_eq(h_stack_start_opts(&S, &o), 0);
    char id[19];
    e2e_id_number("44030419900307211", id);
    vw_wallet *w = e2e_enrol(&S, id, "王小明");
    veil_status st;
    Veil__Empty *empty;

    /* consent, logins with and without attributes, a second app, events */
    const char *attrs[] = {"real_name_verified", "province"};
    e2e_grant(&S, w, "shop.jiale", attrs, 2);
    login("shop.jiale", w, attrs, 2, 2);
    login("chat.lianxin", w, NULL, 0, 0);
    const char *raw[] = {"full_name"};
    e2e_grant(&S, w, "gov.tax", raw, 1);
    login("gov.tax", w, raw, 1, 1);
    Veil__Gateway__WithdrawConsentPayload wp = VEIL__GATEWAY__WITHDRAW_CONSENT_PAYLOAD__INIT;
    Veil__Gateway__WithdrawConsentResponse *wr;
    wp.app_id = "shop.jiale";
    ok(e2e_citizen(&S, w, "WithdrawConsent", &wp.base, &wr, &st), &st, &wr, "WithdrawConsent");
    login("shop.jiale", w, attrs, 2, 0);
    Veil__Gateway__AppLinkPayload lp = VEIL__GATEWAY__APP_LINK_PAYLOAD__INIT;
    lp.app_id = "chat.lianxin";
    ok(e2e_citizen(&S, w, "UnlinkApp", &lp.base, &empty, &st), &st, &empty, "UnlinkApp");
    e2e_await_events(); /* released, so the poll derives and signs SETs */
    Veil__Gateway__PollEventsRequest pr = VEIL__GATEWAY__POLL_EVENTS_REQUEST__INIT;
    Veil__Gateway__PollEventsResponse *ev;
    ok(e2e_call(&S, "app/chat.lianxin", &veil__gateway__login__descriptor, "PollEvents", &pr.base,
                &ev, &st),
       &st, &ev, "PollEvents");

    /* a second phone; the first one reported lost */
    vw_wallet *phone2 = e2e_enrol(&S, id, "王小明");
    Veil__Gateway__RevokeDevicePayload rd = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    rd.device_id = w->device_id;
    ok(e2e_citizen(&S, phone2, "RevokeDevice", &rd.base, &empty, &st), &st, &empty, "RevokeDevice");
    Veil__Gateway__CompleteLoginResponse *r;
    ck_assert_int_eq(e2e_login(&S, "shop.jiale", w, NULL, 0, &r, &st), VEIL_ERR_DENIED);
    Veil__Gateway__ListDevicesPayload dp = VEIL__GATEWAY__LIST_DEVICES_PAYLOAD__INIT;
    Veil__Gateway__ListDevicesResponse *devices;
    ck_assert_int_eq(e2e_citizen(&S, phone2, "ListDevices", &dp.base, &devices, &st), VEIL_OK);
    ck_assert_uint_eq(devices->n_devices, 2);
    e2e_free(devices);

    /* the admin suspends and reinstates the identity */
    Veil__Gateway__IdentityStateRequest is = VEIL__GATEWAY__IDENTITY_STATE_REQUEST__INIT;
    is.web_number = phone2->web_number;
    is.state = "suspended";
    is.reason = "valgrind scenario";
    ok(e2e_call(&S, "admin/ops", &veil__gateway__admin__descriptor, "SetIdentityState", &is.base,
                &empty, &st),
       &st, &empty, "suspend");
    ck_assert_int_eq(e2e_login(&S, "shop.jiale", phone2, NULL, 0, &r, &st), VEIL_ERR_DENIED);
    is.state = "active";
    ok(e2e_call(&S, "admin/ops", &veil__gateway__admin__descriptor, "SetIdentityState", &is.base,
                &empty, &st),
       &st, &empty, "reinstate");
    login("gov.tax", phone2, raw, 1, 1);

    /* the access log, then erasure */
    Veil__Gateway__AccessLogPayload ap = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *log;
    ck_assert_int_eq(e2e_citizen(&S, phone2, "AccessLog", &ap.base, &log, &st), VEIL_OK);
    ck_assert(log->chain_valid);
    ck_assert_uint_ge(log->n_entries, 6);
    ck_assert_ptr_nonnull(log->checkpoint);
    e2e_free(log);
    /* the step-up's pending list and its cancellation (nothing pending: fresh phones) */
    Veil__Gateway__ListPendingPayload pp = VEIL__GATEWAY__LIST_PENDING_PAYLOAD__INIT;
    Veil__Gateway__ListPendingResponse *pending;
    ok(e2e_citizen(&S, phone2, "ListPending", &pp.base, &pending, &st), &st, &pending,
       "ListPending");
    Veil__Gateway__CancelPendingPayload cp = VEIL__GATEWAY__CANCEL_PENDING_PAYLOAD__INIT;
    Veil__Gateway__CancelPendingResponse *cancelled;
    ok(e2e_citizen(&S, phone2, "CancelPending", &cp.base, &cancelled, &st), &st, &cancelled,
       "CancelPending");
    Veil__Gateway__ErasePayload ep = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    ep.confirm = "erase my identity";
    ok(e2e_citizen(&S, phone2, "Erase", &ep.base, &empty, &st), &st, &empty, "Erase");
    ck_assert_int_ne(e2e_login(&S, "gov.tax", phone2, NULL, 0, &r, &st), VEIL_OK);

    vw_wallet_free(w);
    vw_wallet_free(phone2);
    /* SIGTERM to each; under valgrind a non-zero exit means it found something */
    ck_assert_int_eq(h_stack_stop(&S), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("valgrind");
    TCase *tc = tcase_create("scenario");
    tcase_set_timeout(tc, 1200);
    tcase_add_checked_fixture(tc, NULL, kill_leftovers);
    tcase_add_test(tc, test_a_citizens_story);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
