/*
 * check_revocation_feed.c - the revocation service's change feed, followed
 * with libveil's follower (veil/feed.h) as the gateway follows it, and its
 * app event streams: every change kind, long-poll latency, commit order
 * under concurrent writers, resume after the consumer restarts and after
 * the service restarts, propagation under a second, and app events that
 * reach only the app they concern.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rtest.h"
#include "veil/codec.h"
#include "veil/feed.h"

#define SUSPENDED VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_SUSPENDED
#define ACTIVE    VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE
#define REVOKED   VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_REVOKED
#define MAX_SEEN  1024

static h_svc rev;
static veil_channel *gw;

static void setup(void)
{
    const char *env[] = {"VEIL_WAITERS=8", NULL};
    ck_assert_int_eq(h_svc_start(&rev, "revocation", NULL, env), 0);
    gw = rt_channel(&rev, "svc/gateway");
}

static void teardown(void)
{
    veil_channel_free(gw);
    ck_assert_int_eq(h_svc_stop(&rev), 0);
}

static int64_t now_ns(void)
{
    return veil_mono_ns();
}

/* ---- a consumer that records what the follower hands it ---- */

typedef struct seen {
    int64_t seq;
    char kind[32];
    unsigned subject; /* rt_subject's number; 0 when the change has no subject */
    char device[33];
    char app[65];
    int64_t applied_ns;
} seen;

typedef struct recorder {
    pthread_mutex_t mu;
    seen v[MAX_SEEN];
    size_t n;
} recorder;

static void record(const Veil__Change *c, void *ctx)
{
    recorder *r = ctx;
    pthread_mutex_lock(&r->mu);
    ck_assert_uint_lt(r->n, MAX_SEEN);
    seen *s = &r->v[r->n++];
    s->seq = c->seq;
    snprintf(s->kind, sizeof s->kind, "%s", c->kind);
    s->subject = 0;
    if (c->subject_ref.len == 32)
        memcpy(&s->subject, c->subject_ref.data, sizeof s->subject);
    snprintf(s->device, sizeof s->device, "%s", c->device_id);
    snprintf(s->app, sizeof s->app, "%s", c->app_id);
    s->applied_ns = now_ns();
    pthread_mutex_unlock(&r->mu);
}

static size_t recorded(recorder *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Waits until the recorder holds n changes (or fails the test after 30 s). */
static void wait_recorded(recorder *r, size_t n)
{
    for (int i = 0; i < 3000 && recorded(r) < n; i++)
        h_sleep_ms(10);
    ck_assert_uint_eq(recorded(r), n);
}

static veil_follower *follow(recorder *r, int64_t after, uint32_t wait_ms)
{
    veil_follower_config cfg = {.channel = gw,
                                .after_seq = after,
                                .wait_ms = wait_ms,
                                .apply = record,
                                .ctx = r,
                                .name = "revocation"};
    veil_follower *f;
    ck_assert_int_eq(veil_follower_start(&cfg, &f), VEIL_OK);
    return f;
}

static void wait_healthy(veil_follower *f)
{
    for (int i = 0; i < 500 && !veil_follower_healthy(f); i++)
        h_sleep_ms(10);
    ck_assert(veil_follower_healthy(f));
}

/* Sequence numbers first..first+n-1, each once, in order. */
static void assert_contiguous(const recorder *r, int64_t first)
{
    for (size_t i = 0; i < r->n; i++)
        ck_assert_int_eq(r->v[i].seq, first + (int64_t)i);
}

START_TEST(test_change_kinds)
{
    recorder r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    veil_follower *f = follow(&r, 0, 2000);
    unsigned char s[32];
    char dev[33], lost[33];
    uint32_t epoch;
    rt_subject(s, 21);
    rt_device(dev, 1);
    rt_device(lost, 2);
    rt_status st;
    ck_assert_int_eq(rt_status_call(gw, "Authorize", s, dev, "chat.wechat", &st, NULL), VEIL_OK);
    ck_assert_int_eq(rt_revoke_device(gw, s, lost), VEIL_OK);
    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "", NULL), VEIL_OK);
    ck_assert_int_eq(rt_set_identity(gw, s, ACTIVE, "", NULL), VEIL_OK);
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, NULL), VEIL_OK);
    ck_assert_int_eq(rt_status_call(gw, "Authorize", s, dev, "chat.wechat", &st, NULL), VEIL_OK);
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, NULL), VEIL_OK);
    ck_assert_int_eq(rt_relink(gw, s, "chat.wechat", 1, &epoch, NULL), VEIL_OK);
    ck_assert_int_eq(rt_set_app(gw, "game.tianfeng", VEIL__REVOCATION__APP_STATE__APP_REVOKED),
                     VEIL_OK);
    ck_assert_int_eq(rt_set_app(gw, "game.tianfeng", VEIL__REVOCATION__APP_STATE__APP_ACTIVE),
                     VEIL_OK);
    ck_assert_int_eq(rt_set_identity(gw, s, REVOKED, "", NULL), VEIL_OK);

    static const struct {
        const char *kind;
        int has_subject;
        const char *device, *app;
    } want[] = {
        {"device_revoked", 1, "00000000000000000000000000000002", ""},
        {"identity_suspended", 1, "", ""},
        {"identity_reinstated", 1, "", ""},
        {"app_unlinked", 1, "", "chat.wechat"},
        {"app_relinked", 1, "", "chat.wechat"}, /* by a login */
        {"app_unlinked", 1, "", "chat.wechat"},
        {"app_relinked", 1, "", "chat.wechat"}, /* by RelinkApp */
        {"app_revoked", 0, "", "game.tianfeng"},
        {"app_reinstated", 0, "", "game.tianfeng"},
        {"identity_revoked", 1, "", ""},
    };
    size_t n = sizeof want / sizeof want[0];
    wait_recorded(&r, n); /* the first login's link (epoch 0) is not a change */
    assert_contiguous(&r, 1);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(r.v[i].kind, want[i].kind);
        ck_assert_uint_eq(r.v[i].subject, want[i].has_subject ? 21 : 0);
        ck_assert_str_eq(r.v[i].device, want[i].device);
        ck_assert_str_eq(r.v[i].app, want[i].app);
    }
    wait_healthy(f);
    ck_assert_int_eq(veil_follower_last_seq(f), (int64_t)n);
    veil_follower_stop(f);
}
END_TEST

START_TEST(test_long_poll)
{
    unsigned char s[32];
    char dev[33];
    rt_subject(s, 22);
    rt_device(dev, 22);
    /* nothing new: the poll waits about as long as asked, then answers empty */
    h_feed_poll idle = {.ch = gw, .after = 0, .wait_ms = 300, .timeout_ms = 5000};
    int64_t t0 = now_ns();
    h_feed_poll_thread(&idle);
    ck_assert_int_eq(idle.err, VEIL_OK);
    ck_assert_uint_eq(idle.n, 0);
    ck_assert_int_ge(idle.returned_ns - t0, 250 * 1000000LL);
    ck_assert_int_lt(idle.returned_ns - t0, 2000 * 1000000LL);

    /* a change made while a poll waits ends the wait at once */
    h_feed_poll waiting = {.ch = gw, .after = 0, .wait_ms = 20000, .timeout_ms = 30000};
    pthread_t t;
    pthread_create(&t, NULL, h_feed_poll_thread, &waiting);
    h_sleep_ms(300);
    ck_assert_int_eq(rt_revoke_device(gw, s, dev), VEIL_OK);
    int64_t committed = now_ns();
    pthread_join(t, NULL);
    ck_assert_int_eq(waiting.err, VEIL_OK);
    ck_assert_uint_eq(waiting.n, 1);
    ck_assert_int_eq(waiting.first_seq, 1);
    ck_assert_int_lt(waiting.returned_ns - committed, 500 * 1000000LL);

    /* a wait longer than the caller's deadline ends before the deadline */
    h_feed_poll bounded = {.ch = gw, .after = 1, .wait_ms = 60000, .timeout_ms = 3000};
    t0 = now_ns();
    h_feed_poll_thread(&bounded);
    ck_assert_int_eq(bounded.err, VEIL_OK);
    ck_assert_uint_eq(bounded.n, 0);
    ck_assert_int_lt(bounded.returned_ns - t0, 3000 * 1000000LL);
}
END_TEST

/* ---- commit order under concurrent writers ---- */

enum { WRITERS = 4, PER_WRITER = 40 };

static void *writer(void *p)
{
    unsigned w = (unsigned)(size_t)p;
    unsigned char s[32];
    char dev[33];
    veil_channel *ch = rt_channel(&rev, "svc/gateway");
    for (unsigned i = 0; i < PER_WRITER; i++) {
        rt_subject(s, 100 + w);
        rt_device(dev, w << 16 | i);
        ck_assert_int_eq(rt_revoke_device(ch, s, dev), VEIL_OK);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    return NULL;
}

/* A raw consumer polling alongside: every reply must continue exactly where it asked. */
struct raw_consumer {
    int64_t after;
    int stop;
    int gaps;
    pthread_mutex_t mu;
};

static void *raw_consume(void *p)
{
    struct raw_consumer *c = p;
    veil_channel *ch = rt_channel(&rev, "svc/gateway");
    for (;;) {
        pthread_mutex_lock(&c->mu);
        int stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop && c->after >= WRITERS * PER_WRITER)
            break;
        Veil__ChangesRequest req = VEIL__CHANGES_REQUEST__INIT;
        Veil__ChangesResponse *resp;
        veil_status st;
        req.after_seq = c->after;
        req.max = 7; /* small pages: many reads while writers commit */
        req.wait_ms = 200;
        ck_assert_int_eq(veil_channel_call(ch, "Changes", &req.base, NULL, 5000, &resp, &st),
                         VEIL_OK);
        for (size_t i = 0; i < resp->n_changes; i++)
            if (resp->changes[i]->seq != c->after + 1 + (int64_t)i)
                c->gaps++;
        if (resp->n_changes)
            c->after = resp->changes[resp->n_changes - 1]->seq;
        ck_assert_int_ge(resp->head_seq, c->after);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    return NULL;
}

START_TEST(test_concurrent_writers)
{
    recorder *r = calloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    veil_follower *f = follow(r, 0, 2000);
    struct raw_consumer raw = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pthread_t rt, wt[WRITERS];
    pthread_create(&rt, NULL, raw_consume, &raw);
    for (size_t w = 0; w < WRITERS; w++)
        pthread_create(&wt[w], NULL, writer, (void *)w);
    for (size_t w = 0; w < WRITERS; w++)
        pthread_join(wt[w], NULL);
    pthread_mutex_lock(&raw.mu);
    raw.stop = 1;
    pthread_mutex_unlock(&raw.mu);
    pthread_join(rt, NULL);
    ck_assert_int_eq(raw.gaps, 0);
    ck_assert_int_eq(raw.after, WRITERS * PER_WRITER);

    wait_recorded(r, WRITERS * PER_WRITER);
    assert_contiguous(r, 1);
    /* every device exactly once */
    static unsigned char count[WRITERS][PER_WRITER];
    memset(count, 0, sizeof count);
    for (size_t i = 0; i < r->n; i++) {
        unsigned id = (unsigned)strtoul(r->v[i].device, NULL, 16);
        ck_assert_uint_lt(id >> 16, WRITERS);
        ck_assert_uint_lt(id & 0xffff, PER_WRITER);
        count[id >> 16][id & 0xffff]++;
    }
    for (size_t w = 0; w < WRITERS; w++)
        for (size_t i = 0; i < PER_WRITER; i++)
            ck_assert_uint_eq(count[w][i], 1);
    wait_healthy(f);
    veil_follower_stop(f);
    free(r);
}
END_TEST

static void revoke_numbered(unsigned from, unsigned n)
{
    unsigned char s[32];
    char dev[33];
    rt_subject(s, 30);
    for (unsigned i = from; i < from + n; i++) {
        rt_device(dev, i);
        /* Just after a restart the channel may still be reconnecting (UNAVAILABLE,
         * which is retryable); revoking a device is idempotent. */
        veil_err err = VEIL_ERR_UNAVAILABLE;
        for (int tries = 0; tries < 50 && err == VEIL_ERR_UNAVAILABLE; tries++) {
            if (tries)
                h_sleep_ms(100);
            err = rt_revoke_device(gw, s, dev);
        }
        ck_assert_int_eq(err, VEIL_OK);
    }
}

START_TEST(test_consumer_restart)
{
    recorder a = {.mu = PTHREAD_MUTEX_INITIALIZER};
    veil_follower *f = follow(&a, 0, 2000);
    revoke_numbered(1, 5);
    wait_recorded(&a, 5);
    veil_follower_stop(f);
    int64_t saved = a.v[a.n - 1].seq;
    ck_assert_int_eq(saved, 5);

    /* while no consumer runs, seven changes happen */
    revoke_numbered(6, 7);
    recorder b = {.mu = PTHREAD_MUTEX_INITIALIZER};
    f = follow(&b, saved, 2000);
    wait_recorded(&b, 7);
    wait_healthy(f);
    h_sleep_ms(300);
    ck_assert_uint_eq(recorded(&b), 7); /* exactly the missed ones, nothing twice */
    assert_contiguous(&b, saved + 1);
    for (size_t i = 0; i < b.n; i++)
        ck_assert_uint_eq(strtoul(b.v[i].device, NULL, 16), 6 + i);
    ck_assert_uint_eq(a.n, 5); /* the stopped follower was never called again */
    veil_follower_stop(f);

    /* a consumer with empty caches starts at the head and replays nothing */
    recorder c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    f = follow(&c, VEIL_FEED_FROM_HEAD, 2000);
    wait_healthy(f);
    ck_assert_int_eq(veil_follower_last_seq(f), 12);
    revoke_numbered(13, 1);
    wait_recorded(&c, 1);
    ck_assert_int_eq(c.v[0].seq, 13);
    veil_follower_stop(f);
}
END_TEST

START_TEST(test_service_restart)
{
    recorder r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    /* a long wait, so a poll is surely in flight when SIGTERM comes */
    veil_follower *f = follow(&r, 0, 20000);
    revoke_numbered(1, 3);
    wait_recorded(&r, 3);
    wait_healthy(f);
    h_sleep_ms(200);

    /* the drain ends the long-poll at once instead of waiting out its 10 s grace
     * (the time includes the sanitizers' exit checks) */
    int64_t t0 = now_ns();
    ck_assert_int_eq(h_stop(&rev.proc), 0);
    ck_assert_int_lt(now_ns() - t0, 5000 * 1000000LL);
    for (int i = 0; i < 300 && veil_follower_healthy(f); i++)
        h_sleep_ms(10);
    ck_assert(!veil_follower_healthy(f));

    /* back on the same port; changes made before the follower reconnects are not lost */
    ck_assert_int_eq(h_svc_respawn(&rev), 0);
    revoke_numbered(4, 4);
    wait_recorded(&r, 7);
    wait_healthy(f);
    revoke_numbered(8, 2);
    wait_recorded(&r, 9);
    assert_contiguous(&r, 1);
    for (size_t i = 0; i < r.n; i++)
        ck_assert_uint_eq(strtoul(r.v[i].device, NULL, 16), 1 + i);
    veil_follower_stop(f);
}
END_TEST

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

START_TEST(test_propagation_under_a_second)
{
    enum { N = 30 };
    recorder r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    veil_follower *f = follow(&r, 0, 5000);
    wait_healthy(f);
    unsigned char s[32];
    char dev[33];
    int64_t returned[N], lag[N];
    rt_subject(s, 40);
    for (int i = 0; i < N; i++) {
        h_sleep_ms(20); /* let the follower settle into its long-poll */
        rt_device(dev, (unsigned)i);
        ck_assert_int_eq(rt_revoke_device(gw, s, dev), VEIL_OK);
        returned[i] = now_ns();
        wait_recorded(&r, (size_t)i + 1);
    }
    for (int i = 0; i < N; i++) {
        lag[i] = r.v[i].applied_ns - returned[i];
        if (lag[i] < 0)
            lag[i] = 0; /* applied before the mutation's reply reached the test */
    }
    qsort(lag, N, sizeof lag[0], cmp_i64);
    printf("revocation feed propagation: p50 %.2f ms, max %.2f ms over %d changes\n",
           lag[N / 2] / 1e6, lag[N - 1] / 1e6, N);
    ck_assert_int_lt(lag[N - 1], 1000 * 1000000LL);
    veil_follower_stop(f);
}
END_TEST

/* ---- app events ---- */

/* The kinds, subjects and epochs of an app's events, as "kind:subject:epoch;...". */
static void app_stream(const char *app, char *out, size_t len, int64_t *head)
{
    Veil__AppEventsResponse *ev = rt_app_events(gw, app, 0, 100);
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < ev->n_events; i++) {
        unsigned subject = 0;
        ck_assert_uint_eq(ev->events[i]->subject_ref.len, 32);
        memcpy(&subject, ev->events[i]->subject_ref.data, sizeof subject);
        ck_assert_int_eq(ev->events[i]->seq, (int64_t)i + 1); /* the app's own numbering */
        used += (size_t)snprintf(out + used, len - used, "%s:%u:%u;", ev->events[i]->kind, subject,
                                 ev->events[i]->link_epoch);
    }
    if (head)
        *head = ev->head_seq;
    protobuf_c_message_free_unpacked(&ev->base, NULL);
}

START_TEST(test_app_events_scoped)
{
    unsigned char s[32], t[32];
    char dev[33], stream[1024];
    uint32_t epoch;
    int64_t head;
    rt_status st;
    rt_subject(s, 51);
    rt_subject(t, 52);
    rt_device(dev, 5);
    /* s uses chat.wechat (epoch 0) and shop.taobao (epoch 1 after a fresh re-link); t uses
     * game.tianfeng */
    ck_assert_int_eq(rt_status_call(gw, "Authorize", s, dev, "chat.wechat", &st, NULL), VEIL_OK);
    ck_assert_int_eq(rt_status_call(gw, "Authorize", s, dev, "shop.taobao", &st, NULL), VEIL_OK);
    ck_assert_int_eq(rt_unlink(gw, s, "shop.taobao", &epoch, NULL), VEIL_OK);
    ck_assert_int_eq(rt_relink(gw, s, "shop.taobao", 0, &epoch, NULL), VEIL_OK);
    ck_assert_uint_eq(epoch, 1);
    ck_assert_int_eq(rt_status_call(gw, "Authorize", t, dev, "game.tianfeng", &st, NULL), VEIL_OK);

    ck_assert_int_eq(rt_set_identity(gw, s, SUSPENDED, "", NULL), VEIL_OK);
    ck_assert_int_eq(rt_unlink(gw, s, "chat.wechat", &epoch, NULL), VEIL_OK);
    ck_assert_int_eq(rt_set_identity(gw, s, ACTIVE, "", NULL), VEIL_OK);
    ck_assert_int_eq(rt_revoke_device(gw, s, dev), VEIL_OK); /* not an app event */
    ck_assert_int_eq(rt_set_identity(gw, s, REVOKED, "", NULL), VEIL_OK);

    /* chat.wechat: suspended and unlinked, then nothing (it is no longer linked) */
    app_stream("chat.wechat", stream, sizeof stream, &head);
    ck_assert_str_eq(stream, "identity_suspended:51:0;app_unlinked:51:0;");
    ck_assert_int_eq(head, 2);
    /* shop.taobao: the first unlink, then every identity change, at its own epoch */
    app_stream("shop.taobao", stream, sizeof stream, &head);
    ck_assert_str_eq(stream, "app_unlinked:51:0;identity_suspended:51:1;identity_reinstated:51:1;"
                             "identity_revoked:51:1;");
    ck_assert_int_eq(head, 4);
    /* game.tianfeng hears nothing about s; an app nobody uses has an empty stream */
    app_stream("game.tianfeng", stream, sizeof stream, &head);
    ck_assert_str_eq(stream, "");
    ck_assert_int_eq(head, 0);
    app_stream("gov.tax", stream, sizeof stream, &head);
    ck_assert_str_eq(stream, "");

    /* paging: after_seq and max */
    Veil__AppEventsResponse *ev = rt_app_events(gw, "shop.taobao", 1, 2);
    ck_assert_uint_eq(ev->n_events, 2);
    ck_assert_int_eq(ev->events[0]->seq, 2);
    ck_assert_int_eq(ev->events[1]->seq, 3);
    ck_assert_int_eq(ev->head_seq, 4);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_change_kinds,       test_long_poll,
                                  test_concurrent_writers, test_consumer_restart,
                                  test_service_restart,    test_propagation_under_a_second,
                                  test_app_events_scoped,  NULL};
    const h_case cases[] = {{"feed", 90, NULL, NULL, setup, teardown, tests}, {NULL}};
    return h_run_suite_forked(h_suite("revocation_feed", cases));
}
