/*
 * check_gateway_cache.c - the gateway's revocation and consent caches
 * (services/gateway/cache.c) linked directly: answers come back exactly as
 * stored whatever their size (entries are allocated to their content's
 * length), kinds and apps never answer for one another while the two
 * answers about one (subject, app) share an entry without disturbing each
 * other, a fill
 * that raced an invalidation is dropped, a subject's invalidation drops only
 * that subject, the cache answers nothing while unusable, and a full cache
 * stores nothing more.  Run under AddressSanitizer by tests/run, so a read
 * past a short entry fails the suite.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "harness.h"

static void subject_of(int i, unsigned char s[32])
{
    memset(s, 0, 32);
    s[0] = (unsigned char)i; /* the bucket comes from the first bytes */
    s[31] = (unsigned char)(i >> 8);
}

static struct gw_cache *usable_cache(size_t max)
{
    struct gw_cache *c;
    ck_assert_int_eq(gw_cache_new(max, &c), VEIL_OK);
    gw_cache_set_usable(c, 1);
    return c;
}

START_TEST(test_answers_come_back_as_stored)
{
    struct gw_cache *c = usable_cache(1000);
    unsigned char s[32];
    subject_of(1, s);
    gw_authz a = {.allowed = 0, .epoch = 7}, ga;
    snprintf(a.reason, sizeof a.reason, "DEVICE_REVOKED");
    gw_cache_put_authz(c, gw_cache_ticket(c), s, "shop.taobao",
                       &a);
    /* purposes of every length up to the field's limit, each in its own app */
    for (int len = 0; len < 256; len += 17) {
        char app[32];
        snprintf(app, sizeof app, "app.len%d", len);
        gw_grants g = {.granted = 5u + (unsigned)len, .expires_ms = 1000 + len};
        memset(g.purposes, 'p', (size_t)(len < 255 ? len : 255));
        gw_cache_put_grants(c, gw_cache_ticket(c), s, app, &g);
    }
    gw_grants longest = {.granted = 1};
    memset(longest.purposes, 'q', 255);
    gw_cache_put_grants(c, gw_cache_ticket(c), s, "app.longest", &longest);

    ck_assert(gw_cache_get_authz(c, s, "shop.taobao", &ga));
    ck_assert_int_eq(ga.allowed, 0);
    ck_assert_uint_eq(ga.epoch, 7);
    ck_assert_str_eq(ga.reason, "DEVICE_REVOKED");
    for (int len = 0; len < 256; len += 17) {
        char app[32];
        gw_grants g;
        snprintf(app, sizeof app, "app.len%d", len);
        ck_assert(gw_cache_get_grants(c, s, app, 0, &g));
        ck_assert_uint_eq(g.granted, 5u + (unsigned)len);
        ck_assert_int_eq(g.expires_ms, 1000 + len);
        ck_assert_uint_eq(strlen(g.purposes), (size_t)len);
    }
    gw_grants g;
    ck_assert(gw_cache_get_grants(c, s, "app.longest", 0, &g));
    ck_assert_uint_eq(strlen(g.purposes), 255);
    ck_assert_int_eq(g.purposes[0], 'q');
    /* an expired grant inside the answer makes it a miss */
    ck_assert(!gw_cache_get_grants(c, s, "app.len17", 1017, &g));
    gw_cache_free(c);
}
END_TEST

/* (s, app)'s entry holds this verdict and these grants. */
static void holds(struct gw_cache *c, const unsigned char s[32], const char *app, int allowed,
                  const char *reason, unsigned granted, const char *purposes)
{
    gw_authz out;
    gw_grants gout;
    ck_assert(gw_cache_get_authz(c, s, app, &out));
    ck_assert_int_eq(out.allowed, allowed);
    ck_assert_uint_eq(out.epoch, 1);
    ck_assert_str_eq(out.reason, reason);
    ck_assert(gw_cache_get_grants(c, s, app, 0, &gout));
    ck_assert_uint_eq(gout.granted, granted);
    ck_assert_str_eq(gout.purposes, purposes);
}

START_TEST(test_keys_do_not_cross)
{
    struct gw_cache *c = usable_cache(1000);
    unsigned char s[32], t[32];
    subject_of(2, s);
    subject_of(2 + 256, t); /* same bucket, another subject */
    gw_authz a = {.allowed = 1, .epoch = 1}, out;
    gw_grants g = {.granted = 3}, gout;
    snprintf(g.purposes, sizeof g.purposes, "delivery");
    gw_cache_put_authz(c, gw_cache_ticket(c), s, "chat.wechat", &a);
    gw_cache_put_grants(c, gw_cache_ticket(c), s, "chat.wechat", &g);
    ck_assert(!gw_cache_get_authz(c, s, "shop.taobao", &out));
    ck_assert(!gw_cache_get_authz(c, t, "chat.wechat", &out));
    ck_assert(!gw_cache_get_grants(c, t, "chat.wechat", 0, &gout));
    holds(c, s, "chat.wechat", 1, "", 3, "delivery");
    /*
     * A newer answer replaces the old one; the verdict and the grants of
     * one (subject, app) share an entry, and each keeps the other.
     */
    a.allowed = 0;
    snprintf(a.reason, sizeof a.reason, "IDENTITY_REVOKED");
    gw_cache_put_authz(c, gw_cache_ticket(c), s, "chat.wechat", &a);
    holds(c, s, "chat.wechat", 0, "IDENTITY_REVOKED", 3, "delivery");
    g.granted = 1;
    snprintf(g.purposes, sizeof g.purposes, "a purpose much longer than the one before it");
    gw_cache_put_grants(c, gw_cache_ticket(c), s, "chat.wechat", &g);
    holds(c, s, "chat.wechat", 0, "IDENTITY_REVOKED", 1,
          "a purpose much longer than the one before it");
    /* an allowed verdict has no reason, whatever the refusal before it said */
    a.allowed = 1;
    a.reason[0] = '\0';
    gw_cache_put_authz(c, gw_cache_ticket(c), s, "chat.wechat", &a);
    holds(c, s, "chat.wechat", 1, "", 1, "a purpose much longer than the one before it");
    gw_cache_free(c);
}
END_TEST

START_TEST(test_invalidation)
{
    struct gw_cache *c = usable_cache(1000);
    unsigned char s[32], t[32];
    subject_of(3, s);
    subject_of(3 + 256, t);
    gw_authz a = {.allowed = 1}, out;
    uint64_t ticket = gw_cache_ticket(c);
    gw_cache_put_authz(c, ticket, s, "chat.wechat", &a);
    gw_cache_put_authz(c, ticket, t, "chat.wechat", &a);
    /* a fill that started before an invalidation is dropped */
    uint64_t stale = gw_cache_ticket(c);
    gw_cache_invalidate_subject(c, s);
    gw_cache_put_authz(c, stale, s, "shop.taobao", &a);
    ck_assert(!gw_cache_get_authz(c, s, "shop.taobao", &out));
    /* only that subject went */
    ck_assert(!gw_cache_get_authz(c, s, "chat.wechat", &out));
    ck_assert(gw_cache_get_authz(c, t, "chat.wechat", &out));
    /* unusable: no answers; usable again: starts empty */
    gw_cache_set_usable(c, 0);
    ck_assert(!gw_cache_get_authz(c, t, "chat.wechat", &out));
    gw_cache_set_usable(c, 1);
    ck_assert(!gw_cache_get_authz(c, t, "chat.wechat", &out));
    gw_cache_put_authz(c, gw_cache_ticket(c), t, "chat.wechat", &a);
    gw_cache_invalidate_all(c);
    ck_assert(!gw_cache_get_authz(c, t, "chat.wechat", &out));
    uint64_t hits, misses;
    gw_cache_stats(c, &hits, &misses);
    ck_assert_uint_eq(hits, 1);
    gw_cache_free(c);
}
END_TEST

START_TEST(test_full_cache_stores_nothing_more)
{
    struct gw_cache *c = usable_cache(10);
    gw_authz a = {.allowed = 1}, out;
    unsigned char s[32];
    for (int i = 0; i < 20; i++) {
        subject_of(i, s);
        gw_cache_put_authz(c, gw_cache_ticket(c), s, "chat.wechat", &a);
    }
    int found = 0;
    for (int i = 0; i < 20; i++) {
        subject_of(i, s);
        found += gw_cache_get_authz(c, s, "chat.wechat", &out);
    }
    ck_assert_int_eq(found, 10);
    gw_cache_free(c);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_answers_come_back_as_stored, test_keys_do_not_cross,
                                  test_invalidation, test_full_cache_stores_nothing_more, NULL};
    const h_case cases[] = {{"cache", 0, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("gateway_cache", cases));
}
