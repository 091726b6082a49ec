/*
 * check_revocation.c - the revocation service over real gRPC and
 * PostgreSQL: the four kinds of revocation and reinstatement, the order of
 * refusal reasons, link epochs through unlink and relink (and what they do
 * to a real pseudonym), the caller policy, bad input, that a mutation
 * failing half-way leaves nothing behind, and AuthorizeBatch (issue 15):
 * each item answered as Authorize alone, bad items failing alone, the
 * batch's writes in one transaction.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtest.h"
#include "veil/pseudonym.pb-c.h"

#define ACTIVE      VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE
#define SUSPENDED   VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_SUSPENDED
#define REVOKED     VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_REVOKED
#define APP_ACTIVE  VEIL__REVOCATION__APP_STATE__APP_ACTIVE
#define APP_REVOKED VEIL__REVOCATION__APP_STATE__APP_REVOKED

static h_svc rev;
static veil_channel *gw;

static void setup(void)
{
    ck_assert_int_eq(h_svc_start(&rev, "revocation", NULL, NULL), 0);
    gw = rt_channel(&rev, "svc/gateway");
}

static void teardown(void)
{
    veil_channel_free(gw);
    ck_assert_int_eq(h_svc_stop(&rev), 0);
}

/* Status as the gateway; checks allowed/reason code/epoch in one line. */
static void expect_status(const char *method, const unsigned char *subject, const char *device,
                          const char *app, const char *code, uint32_t epoch)
{
    rt_status s;
    ck_assert_int_eq(rt_status_call(gw, method, subject, device, app, &s, NULL), VEIL_OK);
    ck_assert_str_eq(s.code, code);
    ck_assert_int_eq(s.allowed, code[0] == '\0');
    ck_assert_uint_eq(s.epoch, epoch);
}

START_TEST(test_unknown_subject_is_allowed)
{
    unsigned char s[32];
    char dev[33];
    rt_subject(s, 1);
    rt_device(dev, 1);
    rt_status st;
    ck_assert_int_eq(rt_status_call(gw, "Status", s, dev, "chat.wechat", &st, NULL), VEIL_OK);
    ck_assert(st.allowed);
    ck_assert_int_eq(st.reason, VEIL__REVOCATION__REASON__NONE);
    ck_assert_str_eq(st.code, "");
    ck_assert_uint_eq(st.epoch, 0);
    /* Status is read-only: no link appeared, nothing entered the feed */
    expect_status("Status", s, dev, "chat.wechat", "", 0);
    ck_assert_int_eq(h_svc_feed_head(gw), 0);
    /* device and app are optional for Status */
    expect_status("Status", s, "", "", "", 0);
}
END_TEST

START_TEST(test_device_revocation)
{
    unsigned char s[32];
    char lost[33], other[33];
    rt_subject(s, 2);
    rt_device(lost, 0xdead);
    rt_device(other, 0xbeef);
    expect_status("Authorize", s, lost, "chat.wechat", "", 0);
    ck_assert_int_eq(rt_revoke_device(gw, s, lost), VEIL_OK);
    int64_t head = h_svc_feed_head(gw);
    ck_assert_int_eq(head, 1);
    expect_status("Status", s, lost, "chat.wechat", "device_revoked", 0);
    rt_status st;
    ck_assert_int_eq(rt_status_call(gw, "Authorize", s, lost, "chat.wechat", &st, NULL), VEIL_OK);
    ck_assert(!st.allowed);
    ck_assert_int_eq(st.reason, VEIL__REVOCATION__REASON__DEVICE_REVOKED);
    /* idempotent: a second revocation records nothing */
    ck_assert_int_eq(rt_revoke_device(gw, s, lost), VEIL_OK);
    ck_assert_int_eq(h_svc_feed_head(gw), head);
    /* the citizen's other phone still works; the same device id of another person too */
    expect_status("Authorize", s, other, "chat.wechat", "", 0);
    unsigned char t[32];
    rt_subject(t, 3);
    expect_status("Status", t, lost, "chat.wechat", "", 0);
    /* a revoked device never comes back, whatever happens to the identity */
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "", NULL), VEIL_OK);
    ck_assert_int_eq(rt_set_identity(gw, s, ACTIVE, "", NULL), VEIL_OK);
    expect_status("Status", s, lost, "chat.wechat", "device_revoked", 0);
}
END_TEST

START_TEST(test_identity_states)
{
    unsigned char s[32];
    char dev[33];
    veil_status st;
    rt_subject(s, 4);
    rt_device(dev, 4);
    expect_status("Authorize", s, dev, "shop.taobao", "", 0);

    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "fraud report 2024-117", NULL), VEIL_OK);
    expect_status("Status", s, dev, "shop.taobao", "identity_suspended", 0);
    expect_status("Authorize", s, dev, "shop.taobao", "identity_suspended", 0);
    int64_t head = h_svc_feed_head(gw);
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "", NULL), VEIL_OK); /* no-op */
    ck_assert_int_eq(h_svc_feed_head(gw), head);

    ck_assert_int_eq(rt_set_identity(gw, s, ACTIVE, "cleared", NULL), VEIL_OK); /* reinstated */
    expect_status("Authorize", s, dev, "shop.taobao", "", 0);

    ck_assert_int_eq(rt_set_identity(gw, s, REVOKED, "erased at the citizen's request", NULL),
                     VEIL_OK);
    expect_status("Status", s, dev, "shop.taobao", "identity_revoked", 0);
    /* revoked is final */
    ck_assert_int_eq(rt_set_identity(gw, s, ACTIVE, "", &st), VEIL_ERR_PRECONDITION);
    ck_assert_str_eq(st.message,
                     "the identity is revoked, which is final: it cannot be reinstated");
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "", &st), VEIL_ERR_PRECONDITION);
    ck_assert_str_eq(st.message, "the identity is revoked, which is final: it cannot be suspended");
    expect_status("Status", s, dev, "shop.taobao", "identity_revoked", 0);
    ck_assert_int_eq(rt_set_identity(gw, s, REVOKED, "", NULL), VEIL_OK); /* no-op */

    /* the regulator's admin identity may suspend and reinstate directly */
    veil_channel *admin = rt_channel(&rev, "admin/ops");
    unsigned char t[32];
    rt_subject(t, 5);
    ck_assert_int_eq(rt_set_identity(admin, t, SUSPENDED, "court order", NULL), VEIL_OK);
    rt_status as;
    ck_assert_int_eq(rt_status_call(admin, "Status", t, "", "", &as, NULL), VEIL_OK);
    ck_assert_str_eq(as.code, "identity_suspended");
    ck_assert_int_eq(rt_set_identity(admin, t, ACTIVE, "order lifted", NULL), VEIL_OK);
    expect_status("Status", t, dev, "shop.taobao", "", 0);
    veil_channel_free(admin);
}
END_TEST

START_TEST(test_reason_order)
{
    unsigned char s[32];
    char dev[33];
    uint32_t epoch;
    rt_subject(s, 6);
    rt_device(dev, 6);
    expect_status("Authorize", s, dev, "game.tianfeng", "", 0);
    /* pile every reason up, weakest first, and watch the strongest win */
    ck_assert_int_eq(rt_unlink(gw, s, "game.tianfeng", &epoch, NULL), VEIL_OK);
    expect_status("Status", s, dev, "game.tianfeng", "app_unlinked", 0);
    ck_assert_int_eq(rt_set_app(gw, "game.tianfeng", APP_REVOKED), VEIL_OK);
    expect_status("Status", s, dev, "game.tianfeng", "app_revoked", 0);
    ck_assert_int_eq(rt_revoke_device(gw, s, dev), VEIL_OK);
    expect_status("Status", s, dev, "game.tianfeng", "device_revoked", 0);
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "", NULL), VEIL_OK);
    expect_status("Status", s, dev, "game.tianfeng", "identity_suspended", 0);
    ck_assert_int_eq(rt_set_identity(gw, s, REVOKED, "", NULL), VEIL_OK);
    rt_status st;
    ck_assert_int_eq(rt_status_call(gw, "Status", s, dev, "game.tianfeng", &st, NULL), VEIL_OK);
    ck_assert_str_eq(st.code, "identity_revoked");
    ck_assert_int_eq(st.reason, VEIL__REVOCATION__REASON__IDENTITY_REVOKED_REASON);
    /* a refused login changes nothing: the app stays unlinked */
    int64_t head = h_svc_feed_head(gw);
    expect_status("Authorize", s, dev, "game.tianfeng", "identity_revoked", 0);
    ck_assert_int_eq(h_svc_feed_head(gw), head);
    ck_assert_int_eq(rt_unlink(gw, s, "game.tianfeng", &epoch, NULL), VEIL_ERR_NOT_FOUND);
}
END_TEST

START_TEST(test_app_revocation)
{
    unsigned char a[32], b[32];
    char dev[33];
    rt_subject(a, 7);
    rt_subject(b, 8);
    rt_device(dev, 7);
    expect_status("Authorize", a, dev, "gov.tax", "", 0);
    veil_channel *admin = rt_channel(&rev, "admin/ops");
    ck_assert_int_eq(rt_set_app(admin, "gov.tax", APP_REVOKED), VEIL_OK);
    /* every citizen is refused at that app, and only at that app */
    expect_status("Authorize", a, dev, "gov.tax", "app_revoked", 0);
    expect_status("Authorize", b, dev, "gov.tax", "app_revoked", 0);
    expect_status("Authorize", b, dev, "gov.socialsecurity", "", 0);
    int64_t head = h_svc_feed_head(gw);
    ck_assert_int_eq(rt_set_app(admin, "gov.tax", APP_REVOKED), VEIL_OK); /* no-op */
    ck_assert_int_eq(h_svc_feed_head(gw), head);
    ck_assert_int_eq(rt_set_app(gw, "gov.tax", APP_ACTIVE), VEIL_OK); /* reinstated */
    expect_status("Authorize", a, dev, "gov.tax", "", 0);
    expect_status("Authorize", b, dev, "gov.tax", "", 0);
    veil_channel_free(admin);
}
END_TEST

/* The pseudonym the pseudonym service derives for (subject, sector, epoch). */
static void pseudonym_of(veil_channel *ps, const unsigned char *subject, uint32_t epoch,
                         char out[64])
{
    Veil__Pseudonym__DeriveRequest req = VEIL__PSEUDONYM__DERIVE_REQUEST__INIT;
    Veil__Pseudonym__DeriveResponse *resp;
    veil_status st;
    req.subject_ref.data = (uint8_t *)subject;
    req.subject_ref.len = 32;
    req.sector_id = "chat.wechat";
    req.link_epoch = epoch;
    req.key_version = 1;
    ck_assert_int_eq(veil_channel_call(ps, "Derive", &req.base, NULL, 5000, &resp, &st), VEIL_OK);
    snprintf(out, 64, "%s", resp->pseudonym);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

START_TEST(test_link_epochs)
{
    unsigned char s[32];
    char dev[33], p0[64], p1[64], p2[64], again[64];
    uint32_t epoch = 99;
    veil_status st;
    rt_subject(s, 9);
    rt_device(dev, 9);

    /* the pseudonym service, which puts the epoch into the derivation */
    char *keys = h_tempdir("pkeys"), env_keys[1100];
    h_keyfile(keys, "pseudonym", 1);
    snprintf(env_keys, sizeof env_keys, "VEIL_KEYS_DIR=%s", keys);
    const char *env[] = {env_keys, NULL};
    h_proc ps;
    ck_assert_int_eq(h_spawn(&ps, "pseudonym", "svc/pseudonym", env), 0);
    veil_channel *psc = h_channel(ps.addr, "svc/gateway", &veil__pseudonym__pseudonym__descriptor);

    /* never linked: unlink and relink have nothing to act on */
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, &st), VEIL_ERR_NOT_FOUND);
    ck_assert_str_eq(st.message, "app is not linked");
    ck_assert_int_eq(rt_relink(gw, s, "chat.wechat", 0, &epoch, &st), VEIL_ERR_NOT_FOUND);

    /* the first login creates the link at epoch 0, which is not a change */
    expect_status("Authorize", s, dev, "chat.wechat", "", 0);
    ck_assert_int_eq(h_svc_feed_head(gw), 0);
    pseudonym_of(psc, s, 0, p0);
    ck_assert_int_eq(rt_relink(gw, s, "chat.wechat", 0, &epoch, &st), VEIL_ERR_PRECONDITION);
    ck_assert_str_eq(st.message, "app is linked: unlink it first");

    /* unlink; the next login re-links under a fresh epoch, so a fresh pseudonym */
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, NULL), VEIL_OK);
    ck_assert_uint_eq(epoch, 0);
    expect_status("Status", s, dev, "chat.wechat", "app_unlinked", 0);
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, &st), VEIL_ERR_NOT_FOUND);
    expect_status("Authorize", s, dev, "chat.wechat", "", 1);
    expect_status("Status", s, dev, "chat.wechat", "", 1);
    pseudonym_of(psc, s, 1, p1);
    ck_assert_str_ne(p0, p1);

    /* unlink, then re-link keeping the pseudonym: same epoch, same pseudonym */
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, NULL), VEIL_OK);
    ck_assert_uint_eq(epoch, 1);
    ck_assert_int_eq(rt_relink(gw, s, "chat.wechat", 1, &epoch, NULL), VEIL_OK);
    ck_assert_uint_eq(epoch, 1);
    expect_status("Authorize", s, dev, "chat.wechat", "", 1);
    pseudonym_of(psc, s, epoch, again);
    ck_assert_str_eq(again, p1);

    /* unlink, then re-link asking for a fresh start */
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, NULL), VEIL_OK);
    ck_assert_int_eq(rt_relink(gw, s, "chat.wechat", 0, &epoch, NULL), VEIL_OK);
    ck_assert_uint_eq(epoch, 2);
    pseudonym_of(psc, s, epoch, p2);
    ck_assert_str_ne(p2, p0);
    ck_assert_str_ne(p2, p1);
    /* links are per app: another app of the same citizen is untouched */
    expect_status("Authorize", s, dev, "shop.taobao", "", 0);
    expect_status("Status", s, dev, "chat.wechat", "", 2);

    veil_channel_free(psc);
    ck_assert_int_eq(h_stop(&ps), 0);
    free(keys);
}
END_TEST

/* Every method, as every kind of caller: who is refused before anything runs. */
START_TEST(test_caller_policy)
{
    static const struct {
        const char *method;
        int admin;
    } methods[] = {
        {"RevokeDevice", 0}, {"SetIdentityState", 1}, {"UnlinkApp", 0},
        {"RelinkApp", 0},    {"SetAppState", 1},      {"Status", 1},
        {"Authorize", 0},    {"Changes", 0},          {"AppEvents", 0},
        {"AuthorizeBatch", 0},
    };
    static const char *const callers[] = {"svc/gateway", "admin/ops", "app/chat.wechat",
                                          "app/gov.tax", "svc/vault", "svc/consent"};
    char path[128];
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        snprintf(path, sizeof path, "/veil.revocation.Revocation/%s", methods[m].method);
        for (size_t c = 0; c < sizeof callers / sizeof callers[0]; c++) {
            int allowed = c == 0 || (c == 1 && methods[m].admin);
            h_expect_policy(rev.proc.addr, callers[c], path, allowed ? H_ALLOWED : H_REFUSED);
        }
        /* no certificate, or one from another CA: the handshake itself fails */
        h_expect_policy(rev.proc.addr, "none", path, H_NO_HANDSHAKE);
        h_expect_policy(rev.proc.addr, "foreign", path, H_NO_HANDSHAKE);
    }
    /* refused calls changed nothing */
    ck_assert_int_eq(h_svc_feed_head(gw), 0);
}
END_TEST

START_TEST(test_bad_input)
{
    unsigned char s[32];
    char dev[33];
    veil_status st;
    rt_status out;
    rt_subject(s, 10);
    rt_device(dev, 10);
    Veil__Revocation__StatusRequest req = VEIL__REVOCATION__STATUS_REQUEST__INIT;
    Veil__Revocation__StatusResponse *resp;

    /* a subject of the wrong length, for every method that takes one */
    req.subject_ref.data = s;
    req.subject_ref.len = 16;
    req.device_id = dev;
    req.app_id = "chat.wechat";
    ck_assert_int_eq(veil_channel_call(gw, "Status", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "subject_ref must be 32 bytes");
    ck_assert_int_eq(veil_channel_call(gw, "Authorize", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    Veil__Revocation__RevokeDeviceRequest rd = VEIL__REVOCATION__REVOKE_DEVICE_REQUEST__INIT;
    Veil__Empty *empty;
    rd.subject_ref = req.subject_ref;
    rd.device_id = dev;
    ck_assert_int_eq(veil_channel_call(gw, "RevokeDevice", &rd.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "subject_ref must be 32 bytes");
    Veil__Revocation__AppLinkRequest al = VEIL__REVOCATION__APP_LINK_REQUEST__INIT;
    Veil__Revocation__AppLinkResponse *alr;
    al.subject_ref = req.subject_ref;
    al.app_id = "chat.wechat";
    ck_assert_int_eq(veil_channel_call(gw, "UnlinkApp", &al.base, NULL, 5000, &alr, &st),
                     VEIL_ERR_INVALID);
    ck_assert_int_eq(veil_channel_call(gw, "RelinkApp", &al.base, NULL, 5000, &alr, &st),
                     VEIL_ERR_INVALID);
    Veil__Revocation__SetIdentityStateRequest si =
        VEIL__REVOCATION__SET_IDENTITY_STATE_REQUEST__INIT;
    si.subject_ref = req.subject_ref;
    ck_assert_int_eq(veil_channel_call(gw, "SetIdentityState", &si.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_INVALID);

    /* devices: 32 lowercase hex characters only */
    static const char *const bad_devices[] = {"", "0123", "0123456789ABCDEF0123456789ABCDEF",
                                              "0123456789abcdef0123456789abcdeg"};
    for (size_t i = 0; i < sizeof bad_devices / sizeof bad_devices[0]; i++) {
        ck_assert_int_eq(rt_revoke_device(gw, s, bad_devices[i]), VEIL_ERR_INVALID);
        if (i == 0) {
            /* Authorize may leave the device out: the gateway's logins do (the vault
             * refuses revoked devices itself and no longer names the device) */
            ck_assert_int_eq(
                rt_status_call(gw, "Authorize", s, bad_devices[i], "chat.wechat", &out, &st),
                VEIL_OK);
            continue;
        }
        ck_assert_int_eq(
            rt_status_call(gw, "Authorize", s, bad_devices[i], "chat.wechat", &out, &st),
            VEIL_ERR_INVALID);
        ck_assert_str_eq(st.message, "device_id must be 32 lowercase hex characters");
    }
    ck_assert_int_eq(rt_status_call(gw, "Authorize", s, "", "", &out, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "app_id is not a valid app id");
    ck_assert_int_eq(rt_status_call(gw, "Status", s, "XYZ", "", &out, &st), VEIL_ERR_INVALID);
    /* app ids */
    static const char *const bad_apps[] = {"Chat.WeChat", "", "-x", "a b"};
    for (size_t i = 0; i < sizeof bad_apps / sizeof bad_apps[0]; i++) {
        ck_assert_int_eq(rt_unlink(gw, s, bad_apps[i], NULL, &st), VEIL_ERR_INVALID);
        ck_assert_str_eq(st.message, "app_id is not a valid app id");
        ck_assert_int_eq(rt_set_app(gw, bad_apps[i], APP_REVOKED), VEIL_ERR_INVALID);
    }
    ck_assert_int_eq(rt_status_call(gw, "Authorize", s, dev, "", &out, &st), VEIL_ERR_INVALID);
    /* states outside the enums, and reasons that are not short printable text */
    ck_assert_int_eq(rt_set_identity(gw, s, 7, "", &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message,
                     "state must be IDENTITY_ACTIVE, IDENTITY_SUSPENDED or IDENTITY_REVOKED");
    ck_assert_int_eq(rt_set_app(gw, "chat.wechat", 5), VEIL_ERR_INVALID);
    char long_reason[202];
    memset(long_reason, 'r', 201);
    long_reason[201] = '\0';
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, long_reason, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "reason must be printable UTF-8 of at most 200 bytes");
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "line\nbreak", &st), VEIL_ERR_INVALID);
    /* feed and app event requests */
    Veil__ChangesRequest ch = VEIL__CHANGES_REQUEST__INIT;
    Veil__ChangesResponse *chr;
    ch.after_seq = -1;
    ck_assert_int_eq(veil_channel_call(gw, "Changes", &ch.base, NULL, 5000, &chr, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "after_seq must not be negative");
    ch.after_seq = 5; /* ahead of an empty feed: a consumer of some other database */
    ck_assert_int_eq(veil_channel_call(gw, "Changes", &ch.base, NULL, 5000, &chr, &st),
                     VEIL_ERR_PRECONDITION);
    ck_assert_ptr_nonnull(strstr(st.message, "ahead of the feed"));
    Veil__AppEventsRequest ae = VEIL__APP_EVENTS_REQUEST__INIT;
    Veil__AppEventsResponse *aer;
    ae.app_id = "NOT AN APP";
    ck_assert_int_eq(veil_channel_call(gw, "AppEvents", &ae.base, NULL, 5000, &aer, &st),
                     VEIL_ERR_INVALID);
    ae.app_id = "chat.wechat";
    ae.after_seq = -3;
    ck_assert_int_eq(veil_channel_call(gw, "AppEvents", &ae.base, NULL, 5000, &aer, &st),
                     VEIL_ERR_INVALID);
    /* nothing of it was written */
    ck_assert_int_eq(h_svc_feed_head(gw), 0);
    expect_status("Status", s, dev, "chat.wechat", "", 0);
}
END_TEST

/*
 * A failure injected into the last step of a mutation (a constraint the
 * test adds to the app event table) must roll back everything before it:
 * the state change, the feed entry and the events already fanned out.
 */
START_TEST(test_no_partial_writes)
{
    unsigned char s[32];
    char dev[33];
    uint32_t epoch;
    rt_subject(s, 11);
    rt_device(dev, 11);
    expect_status("Authorize", s, dev, "chat.wechat", "", 0);
    expect_status("Authorize", s, dev, "shop.taobao", "", 0);
    ck_assert_int_eq(rt_revoke_device(gw, s, "00000000000000000000000000000001"), VEIL_OK);
    int64_t head = h_svc_feed_head(gw);

    /* fan-out goes in app order: chat.wechat's event is written, shop.taobao's fails */
    ck_assert_int_eq(h_db_exec(rev.db, "ALTER TABLE veil_app_events ADD CONSTRAINT injected "
                                       "CHECK (app_id <> 'shop.taobao') NOT VALID"),
                     0);
    ck_assert_int_ne(rt_set_identity(gw, s, SUSPENDED, "", NULL), VEIL_OK);
    expect_status("Status", s, dev, "chat.wechat", "", 0); /* still active */
    ck_assert_int_eq(h_svc_feed_head(gw), head);           /* no feed entry */
    Veil__AppEventsResponse *ev = rt_app_events(gw, "chat.wechat", 0, 100);
    ck_assert_uint_eq(ev->n_events, 0); /* the event written before the failure is gone */
    ck_assert_int_eq(ev->head_seq, 0);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
    ck_assert_int_ne(rt_unlink(gw, s, "shop.taobao", &epoch, NULL), VEIL_OK);
    expect_status("Status", s, dev, "shop.taobao", "", 0); /* still linked */
    ck_assert_int_eq(h_svc_feed_head(gw), head);

    /* without the fault the same calls succeed, and the feed has no gap */
    ck_assert_int_eq(h_db_exec(rev.db, "ALTER TABLE veil_app_events DROP CONSTRAINT injected"), 0);
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "", NULL), VEIL_OK);
    ck_assert_int_eq(h_svc_feed_head(gw), head + 1);
    expect_status("Status", s, dev, "chat.wechat", "identity_suspended", 0);
    ev = rt_app_events(gw, "chat.wechat", 0, 100);
    ck_assert_uint_eq(ev->n_events, 1);
    ck_assert_int_eq(ev->events[0]->seq, 1);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
}
END_TEST

/* A StatusRequest of a batch (subject len 32 unless short, the key versions a login gives). */
static Veil__Revocation__StatusRequest *item(Veil__Revocation__StatusRequest *r,
                                             unsigned char *subject, size_t len,
                                             const char *device, const char *app, uint32_t kv,
                                             uint32_t pkv)
{
    veil__revocation__status_request__init(r);
    r->subject_ref.data = subject;
    r->subject_ref.len = len;
    r->device_id = (char *)device;
    r->app_id = (char *)app;
    r->key_version = kv;
    r->previous_key_version = pkv;
    return r;
}

/* What Status says the link (s, app) last recorded: the key versions. */
static void expect_keys(unsigned char *s, const char *app, uint32_t kv, uint32_t pkv)
{
    Veil__Revocation__StatusRequest r;
    Veil__Revocation__StatusResponse *resp;
    veil_status st;
    item(&r, s, 32, "", app, 0, 0);
    ck_assert_int_eq(veil_channel_call(gw, "Status", &r.base, NULL, 5000, &resp, &st), VEIL_OK);
    ck_assert_uint_eq(resp->key_version, kv);
    ck_assert_uint_eq(resp->previous_key_version, pkv);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/*
 * AuthorizeBatch (issue 15): eight logins' verdicts in one call - a first
 * login (link created, key versions recorded), the same login again in the
 * same batch, a re-link after an unlink (a fresh epoch, one feed change), a
 * suspended identity (refused), a key rotation on an existing link, and
 * three bad items (a short subject, a malformed device, no app).  Each item
 * gets exactly the status Authorize alone gives it, the bad ones fail alone,
 * and every link the batch wrote was written by one transaction.  An empty
 * or oversized batch is refused as a whole.
 */
START_TEST(test_authorize_batch)
{
    unsigned char a[32], b[32], c[32], d[32];
    uint32_t epoch;
    veil_status st;
    rt_subject(a, 21);
    rt_subject(b, 22);
    rt_subject(c, 23);
    rt_subject(d, 24);
    /* b linked then unlinked; c suspended; d linked at key version 1 */
    expect_status("Authorize", b, "", "shop.taobao", "", 0);
    ck_assert_int_eq(rt_unlink(gw, b, "shop.taobao", &epoch, NULL), VEIL_OK);
    ck_assert_int_eq(rt_set_identity(gw, c, SUSPENDED, "held", NULL), VEIL_OK);
    Veil__Revocation__StatusRequest cells[8], *items[8];
    Veil__Revocation__StatusResponse *one;
    items[0] = item(&cells[0], d, 32, "", "gov.tax", 1, 0);
    ck_assert_int_eq(veil_channel_call(gw, "Authorize", &items[0]->base, NULL, 5000, &one, &st),
                     VEIL_OK);
    protobuf_c_message_free_unpacked(&one->base, NULL);
    int64_t head = h_svc_feed_head(gw);

    items[0] = item(&cells[0], a, 32, "", "chat.wechat", 2, 1);
    items[1] = item(&cells[1], a, 16, "", "chat.wechat", 2, 1);
    items[2] = item(&cells[2], b, 32, "", "shop.taobao", 2, 1);
    items[3] = item(&cells[3], c, 32, "", "chat.wechat", 2, 1);
    items[4] = item(&cells[4], a, 32, "", "chat.wechat", 2, 1);
    items[5] = item(&cells[5], d, 32, "XYZ", "gov.tax", 2, 1);
    items[6] = item(&cells[6], d, 32, "", "", 2, 1);
    items[7] = item(&cells[7], d, 32, "", "gov.tax", 2, 1);
    /* the bad items alone first: the unbatched statuses the batch must repeat */
    static const int bad[] = {1, 5, 6};
    veil_status alone[8];
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(veil_channel_call(gw, "Authorize", &items[bad[k]]->base, NULL, 5000,
                                           &one, &alone[bad[k]]),
                         VEIL_ERR_INVALID);

    Veil__Revocation__AuthorizeBatchRequest req = VEIL__REVOCATION__AUTHORIZE_BATCH_REQUEST__INIT;
    Veil__Revocation__AuthorizeBatchResponse *resp;
    req.items = items;
    req.n_items = 8;
    ck_assert_int_eq(veil_channel_call(gw, "AuthorizeBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    ck_assert_uint_eq(resp->n_items, 8);
    ck_assert_uint_eq(resp->n_status, 8);
    static const struct {
        unsigned code;
        const char *reason;
        uint32_t epoch;
    } want[8] = {{0, "", 0},
                 {GRPC_STATUS_INVALID_ARGUMENT, NULL, 0},
                 {0, "", 1},
                 {0, "identity_suspended", 0},
                 {0, "", 0},
                 {GRPC_STATUS_INVALID_ARGUMENT, NULL, 0},
                 {GRPC_STATUS_INVALID_ARGUMENT, NULL, 0},
                 {0, "", 0}};
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(resp->status[i]->code == want[i].code, "item %d: status %u", i,
                      resp->status[i]->code);
        if (want[i].code) {
            ck_assert_str_eq(resp->status[i]->message, alone[i].message);
            continue;
        }
        ck_assert_str_eq(resp->items[i]->reason_code, want[i].reason);
        ck_assert_int_eq(resp->items[i]->allowed, want[i].reason[0] == '\0');
        ck_assert_uint_eq(resp->items[i]->link_epoch, want[i].epoch);
    }
    ck_assert_str_eq(resp->status[1]->message, "subject_ref must be 32 bytes");
    ck_assert_str_eq(resp->status[5]->message, "device_id must be 32 lowercase hex characters");
    ck_assert_str_eq(resp->status[6]->message, "app_id is not a valid app id");
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* what the logins recorded: the versions on each link, the re-link in the feed */
    expect_keys(a, "chat.wechat", 2, 1);
    expect_keys(b, "shop.taobao", 2, 1);
    expect_keys(d, "gov.tax", 2, 1);
    expect_status("Status", b, "", "shop.taobao", "", 1);
    ck_assert_int_eq(h_svc_feed_head(gw), head + 1);
    /* the three links written by the batch: one transaction wrote them all */
    ck_assert_int_eq(h_db_exec(rev.db, "DO $$ BEGIN IF (SELECT count(*) <> 3"
                                       " OR count(DISTINCT xmin::text) <> 1 FROM app_links) THEN"
                                       " RAISE EXCEPTION 'not one transaction'; END IF; END $$"),
                     0);

    /* an empty batch and one over the limit are refused as a whole */
    req.n_items = 0;
    ck_assert_int_eq(veil_channel_call(gw, "AuthorizeBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "items must hold 1 to 256 requests");
    Veil__Revocation__StatusRequest *many[257];
    for (int i = 0; i < 257; i++)
        many[i] = items[0];
    req.items = many;
    req.n_items = 257;
    ck_assert_int_eq(veil_channel_call(gw, "AuthorizeBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "items must hold 1 to 256 requests");
    /* 256 is a batch, every item answered */
    req.n_items = 256;
    ck_assert_int_eq(veil_channel_call(gw, "AuthorizeBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    ck_assert_uint_eq(resp->n_status, 256);
    for (int i = 0; i < 256; i++)
        ck_assert_uint_eq(resp->status[i]->code, 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_unknown_subject_is_allowed,
                                  test_device_revocation,
                                  test_identity_states,
                                  test_reason_order,
                                  test_app_revocation,
                                  test_link_epochs,
                                  test_caller_policy,
                                  test_bad_input,
                                  test_no_partial_writes,
                                  test_authorize_batch,
                                  NULL};
    const h_case cases[] = {{"revocation", 60, NULL, NULL, setup, teardown, tests}, {NULL}};
    return h_run_suite_forked(h_suite("revocation", cases));
}
