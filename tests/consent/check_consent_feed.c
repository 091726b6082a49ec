/*
 * check_consent_feed.c - the consent service's change feed, followed with
 * libveil's follower as the gateway follows it (kinds, content, long-poll
 * wake-up, resume), and its app events: a withdrawal reaches the app it
 * concerns and no other.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consent_test.h"
#include "veil/codec.h"
#include "veil/feed.h"

static h_svc con;
static veil_channel *gw;

static const char *const scope[] = {"real_name_verified", "age_over_18", "province", NULL};

static void setup(void)
{
    gw = ct_start(&con);
}

static void teardown(void)
{
    ct_stop(&con, gw);
}

/* What the follower applied, one line per change: "seq kind subject app attrs". */
typedef struct journal {
    pthread_mutex_t mu;
    char lines[64][160];
    size_t n;
} journal;

static void apply(const Veil__Change *c, void *ctx)
{
    journal *l = ctx;
    unsigned subject = 0;
    char attrs[100] = "";
    size_t used = 0;
    if (c->subject_ref.len == 32)
        memcpy(&subject, c->subject_ref.data, sizeof subject);
    for (size_t i = 0; i < c->n_attributes; i++)
        used += (size_t)snprintf(attrs + used, sizeof attrs - used, "%s%s", i ? "," : "",
                                 c->attributes[i]);
    pthread_mutex_lock(&l->mu);
    ck_assert_uint_lt(l->n, 64);
    snprintf(l->lines[l->n++], sizeof l->lines[0], "%lld %s %u %s %s", (long long)c->seq, c->kind,
             subject, c->app_id, attrs);
    pthread_mutex_unlock(&l->mu);
}

static void wait_lines(journal *l, size_t n)
{
    size_t have = 0;
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&l->mu);
        have = l->n;
        pthread_mutex_unlock(&l->mu);
        if (have >= n)
            break;
        h_sleep_ms(10);
    }
    ck_assert_uint_eq(have, n);
}

static veil_follower *follow(journal *l, int64_t after)
{
    veil_follower_config cfg = {.channel = gw,
                                .after_seq = after,
                                .wait_ms = 2000,
                                .apply = apply,
                                .ctx = l,
                                .name = "consent"};
    veil_follower *f;
    ck_assert_int_eq(veil_follower_start(&cfg, &f), VEIL_OK);
    return f;
}

static veil_err grant(unsigned subject, const char *app, const char *const *attrs)
{
    unsigned char s[32];
    ct_subject(s, subject);
    return ct_grant(gw, s, 32, app, attrs, "service terms", ct_now_ms() + CT_DAY_MS, scope, NULL,
                    NULL, NULL);
}

START_TEST(test_feed_follows_consent)
{
    journal l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    veil_follower *f = follow(&l, 0);
    unsigned char s[32];
    char out[256];
    ct_subject(s, 1);
    const char *const both[] = {"age_over_18", "province", NULL};
    const char *const prov[] = {"province", NULL};
    ck_assert_int_eq(grant(1, "chat.wechat", both), VEIL_OK);
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", prov, out, NULL), VEIL_OK);
    /* seen before the forget redacts them (else the follower may read them redacted) */
    wait_lines(&l, 2);
    Veil__Consent__ForgetRequest req = VEIL__CONSENT__FORGET_REQUEST__INIT;
    Veil__Empty *resp;
    veil_status st;
    req.subject_ref.data = s;
    req.subject_ref.len = 32;
    ck_assert_int_eq(veil_channel_call(gw, "Forget", &req.base, NULL, 5000, &resp, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    wait_lines(&l, 3);
    ck_assert_str_eq(l.lines[0], "1 consent_granted 1 chat.wechat age_over_18,province");
    ck_assert_str_eq(l.lines[1], "2 consent_withdrawn 1 chat.wechat province");
    /* the erasure notice names no subject: the follower drops everything it cached */
    ck_assert_str_eq(l.lines[2], "3 subject_forgotten 0  ");
    for (int i = 0; i < 300 && !veil_follower_healthy(f); i++)
        h_sleep_ms(10);
    ck_assert(veil_follower_healthy(f));
    int64_t saved = veil_follower_last_seq(f);
    veil_follower_stop(f);

    /* a consumer restarted from its saved position gets exactly what it missed */
    ck_assert_int_eq(grant(2, "shop.taobao", prov), VEIL_OK);
    ck_assert_int_eq(grant(3, "chat.wechat", prov), VEIL_OK);
    journal m = {.mu = PTHREAD_MUTEX_INITIALIZER};
    f = follow(&m, saved);
    wait_lines(&m, 2);
    h_sleep_ms(200);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_str_eq(m.lines[0], "4 consent_granted 2 shop.taobao province");
    ck_assert_str_eq(m.lines[1], "5 consent_granted 3 chat.wechat province");
    veil_follower_stop(f);
}
END_TEST

START_TEST(test_long_poll_wakes_on_grant)
{
    h_feed_poll a = {.ch = gw, .after = 0, .wait_ms = 20000, .timeout_ms = 30000};
    pthread_t t;
    pthread_create(&t, NULL, h_feed_poll_thread, &a);
    h_sleep_ms(300);
    const char *const age[] = {"age_over_18", NULL};
    ck_assert_int_eq(grant(4, "chat.wechat", age), VEIL_OK);
    int64_t committed = veil_mono_ns();
    pthread_join(t, NULL);
    ck_assert_int_eq(a.err, VEIL_OK);
    ck_assert_uint_eq(a.n, 1);
    ck_assert_int_lt(a.returned_ns - committed, 500 * 1000000LL);
}
END_TEST

/* An app's stream as "kind:subject:epoch:attrs;...". */
static void app_stream(const char *app, char *out, size_t len)
{
    Veil__AppEventsRequest req = VEIL__APP_EVENTS_REQUEST__INIT;
    Veil__AppEventsResponse *resp;
    veil_status st;
    req.app_id = (char *)app;
    ck_assert_int_eq(veil_channel_call(gw, "AppEvents", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < resp->n_events; i++) {
        Veil__AppEvent *e = resp->events[i];
        unsigned subject;
        ck_assert_int_eq(e->seq, (int64_t)i + 1);
        ck_assert_uint_eq(e->subject_ref.len, 32);
        memcpy(&subject, e->subject_ref.data, sizeof subject);
        used +=
            (size_t)snprintf(out + used, len - used, "%s:%u:%u:", e->kind, subject, e->link_epoch);
        for (size_t k = 0; k < e->n_attributes; k++)
            used +=
                (size_t)snprintf(out + used, len - used, "%s%s", k ? "," : "", e->attributes[k]);
        used += (size_t)snprintf(out + used, len - used, ";");
    }
    ck_assert_int_eq(resp->head_seq, (int64_t)resp->n_events);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

START_TEST(test_app_events_scoped)
{
    unsigned char s[32], t[32];
    char out[1024];
    ct_subject(s, 5);
    ct_subject(t, 6);
    const char *const both[] = {"age_over_18", "province", NULL};
    const char *const age[] = {"age_over_18", NULL};
    const char *const prov[] = {"province", NULL};
    ck_assert_int_eq(grant(5, "chat.wechat", both), VEIL_OK);
    ck_assert_int_eq(grant(5, "shop.taobao", age), VEIL_OK);
    ck_assert_int_eq(grant(6, "chat.wechat", age), VEIL_OK);
    /* grants are not app events */
    app_stream("chat.wechat", out, sizeof out);
    ck_assert_str_eq(out, "");

    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", prov, out, NULL), VEIL_OK);
    ck_assert_int_eq(ct_withdraw(gw, t, "chat.wechat", NULL, out, NULL), VEIL_OK);
    app_stream("chat.wechat", out, sizeof out);
    ck_assert_str_eq(out, "consent_withdrawn:5:0:province;consent_withdrawn:6:0:age_over_18;");
    /* shop.taobao, where s still consents, hears nothing of chat.wechat's */
    app_stream("shop.taobao", out, sizeof out);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(ct_withdraw(gw, s, "shop.taobao", NULL, out, NULL), VEIL_OK);
    app_stream("shop.taobao", out, sizeof out);
    ck_assert_str_eq(out, "consent_withdrawn:5:0:age_over_18;"); /* its own numbering: seq 1 */
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_feed_follows_consent, test_long_poll_wakes_on_grant,
                                  test_app_events_scoped, NULL};
    const h_case cases[] = {{"feed", 60, NULL, NULL, setup, teardown, tests}, {NULL}};
    return h_run_suite_forked(h_suite("consent_feed", cases));
}
