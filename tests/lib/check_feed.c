/*
 * check_feed.c - libveil's feed notifier (veil/feed.h) against the real
 * cluster of tests/run: a NOTIFY wakes a waiter at once, a notification
 * that arrived before the wait is not lost, a rolled-back one wakes nobody,
 * shutdown releases every waiter, and the LISTEN connection survives the
 * database going away and coming back.  The follower and veil_feed_serve
 * are exercised end to end by the consent and revocation suites.  Runs
 * serially: it stops and starts the shared cluster.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"
#include "veil/codec.h"
#include "veil/feed.h"

static int64_t ms_since(int64_t t0_ns)
{
    return (veil_mono_ns() - t0_ns) / 1000000;
}

/* Waits until the generation moves past gen (the notifier connected, or lost it). */
static uint64_t await_generation_after(veil_notifier *n, uint64_t gen, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        uint64_t now = veil_notifier_generation(n);
        if (now != gen)
            return now;
        h_sleep_ms(10);
    }
    ck_abort_msg("the notifier's generation did not move within %d ms", timeout_ms);
    return gen;
}

static veil_notifier *listening(char **db)
{
    veil_notifier *n;
    *db = h_db_create("feed");
    ck_assert_int_eq(veil_notifier_start(*db, VEIL_FEED_CHANNEL, &n), VEIL_OK);
    await_generation_after(n, 0, 5000); /* connected and listening */
    return n;
}

struct waiter {
    veil_notifier *n;
    uint64_t gen;
    int64_t timeout_ms;
    veil_wait_result result;
    int64_t woke_ns;
};

static void *wait_thread(void *p)
{
    struct waiter *w = p;
    w->result = veil_notifier_wait(w->n, w->gen, w->timeout_ms);
    w->woke_ns = veil_mono_ns();
    return NULL;
}

START_TEST(test_notify_wakes_a_waiter)
{
    char *db;
    veil_notifier *n = listening(&db);
    struct waiter w = {.n = n, .gen = veil_notifier_generation(n), .timeout_ms = 10000};
    pthread_t t;
    pthread_create(&t, NULL, wait_thread, &w);
    h_sleep_ms(200);
    ck_assert_int_eq(h_db_exec(db, "NOTIFY " VEIL_FEED_CHANNEL ", '17'"), 0);
    int64_t sent = veil_mono_ns();
    pthread_join(t, NULL);
    ck_assert_int_eq(w.result, VEIL_WAIT_NOTIFIED);
    ck_assert_int_lt(w.woke_ns - sent, 500 * 1000000LL);
    veil_notifier_free(n);
    free(db);
}
END_TEST

START_TEST(test_timeout_and_no_lost_wakeup)
{
    char *db;
    veil_notifier *n = listening(&db);
    uint64_t gen = veil_notifier_generation(n);
    int64_t t0 = veil_mono_ns();
    ck_assert_int_eq(veil_notifier_wait(n, gen, 300), VEIL_WAIT_TIMEOUT);
    ck_assert_int_ge(ms_since(t0), 290);
    /* a change committed between reading the generation and waiting is not missed */
    gen = veil_notifier_generation(n);
    ck_assert_int_eq(h_db_exec(db, "NOTIFY " VEIL_FEED_CHANNEL), 0);
    h_sleep_ms(300);
    t0 = veil_mono_ns();
    ck_assert_int_eq(veil_notifier_wait(n, gen, 10000), VEIL_WAIT_NOTIFIED);
    ck_assert_int_lt(ms_since(t0), 500); /* at once, not after the 10 s */
    veil_notifier_free(n);
    free(db);
}
END_TEST

START_TEST(test_only_committed_notifications_on_its_channel)
{
    char *db;
    veil_notifier *n = listening(&db);
    uint64_t gen = veil_notifier_generation(n);
    ck_assert_int_eq(h_db_exec(db, "BEGIN; NOTIFY " VEIL_FEED_CHANNEL "; ROLLBACK"), 0);
    ck_assert_int_eq(h_db_exec(db, "NOTIFY some_other_channel"), 0);
    ck_assert_int_eq(veil_notifier_wait(n, gen, 500), VEIL_WAIT_TIMEOUT);
    /* delivered at commit, not before */
    ck_assert_int_eq(h_db_exec(db, "BEGIN; NOTIFY " VEIL_FEED_CHANNEL "; SELECT pg_sleep(0.3); "
                                   "COMMIT"),
                     0);
    ck_assert_int_eq(veil_notifier_wait(n, gen, 2000), VEIL_WAIT_NOTIFIED);
    veil_notifier_free(n);
    free(db);
}
END_TEST

START_TEST(test_shutdown_releases_waiters)
{
    char *db;
    veil_notifier *n = listening(&db);
    struct waiter w[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct waiter){.n = n, .gen = veil_notifier_generation(n), .timeout_ms = 20000};
        pthread_create(&t[i], NULL, wait_thread, &w[i]);
    }
    h_sleep_ms(200);
    int64_t t0 = veil_mono_ns();
    veil_notifier_shutdown(n);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].result, VEIL_WAIT_STOPPING);
        ck_assert_int_lt(w[i].woke_ns - t0, 1000 * 1000000LL); /* not their 20 s */
    }
    /* and every later wait returns at once */
    t0 = veil_mono_ns();
    ck_assert_int_eq(veil_notifier_wait(n, veil_notifier_generation(n), 5000), VEIL_WAIT_STOPPING);
    ck_assert_int_lt(ms_since(t0), 500);
    veil_notifier_free(n);
    free(db);
}
END_TEST

static void cluster(const char *cmd)
{
    char line[1024];
    snprintf(line, sizeof line, "%s/deploy/local/pgcluster %s %s", h_env("VEIL_SOURCE_DIR"), cmd,
             h_env("VEIL_TEST_PGDIR"));
    ck_assert_int_eq(system(line), 0);
}

START_TEST(test_survives_the_database_going_away)
{
    char *db;
    veil_notifier *n = listening(&db);
    uint64_t gen = veil_notifier_generation(n);
    cluster("stop");
    /* losing the connection wakes waiters, so they look again */
    gen = await_generation_after(n, gen, 5000);
    /* while it is down, waits are short: handlers fall back to polling */
    int64_t t0 = veil_mono_ns();
    ck_assert_int_eq(veil_notifier_wait(n, gen, 10000), VEIL_WAIT_TIMEOUT);
    ck_assert_int_lt(ms_since(t0), 1000);
    cluster("start");
    /* back: the reconnection wakes waiters too, and notifications flow again */
    gen = await_generation_after(n, gen, 10000);
    ck_assert_int_eq(h_db_exec(db, "NOTIFY " VEIL_FEED_CHANNEL), 0);
    ck_assert_int_eq(veil_notifier_wait(n, gen, 5000), VEIL_WAIT_NOTIFIED);
    veil_notifier_free(n);
    free(db);
}
END_TEST

START_TEST(test_unreachable_database_at_start)
{
    veil_notifier *n;
    char ci[512];
    snprintf(ci, sizeof ci, "host=%s user=veil dbname=no_such_database_here",
             h_env("VEIL_TEST_PGHOST"));
    /* start-up does not wait for the database; waits then poll */
    ck_assert_int_eq(veil_notifier_start(ci, VEIL_FEED_CHANNEL, &n), VEIL_OK);
    int64_t t0 = veil_mono_ns();
    ck_assert_int_eq(veil_notifier_wait(n, veil_notifier_generation(n), 10000), VEIL_WAIT_TIMEOUT);
    ck_assert_int_lt(ms_since(t0), 1000);
    t0 = veil_mono_ns();
    veil_notifier_free(n); /* stops promptly even while it retries */
    ck_assert_int_lt(ms_since(t0), 1000);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_notify_wakes_a_waiter,
                                  test_timeout_and_no_lost_wakeup,
                                  test_only_committed_notifications_on_its_channel,
                                  test_shutdown_releases_waiters,
                                  test_survives_the_database_going_away,
                                  test_unreachable_database_at_start,
                                  NULL};
    const h_case cases[] = {{"notifier", 60, NULL, NULL, NULL, h_pg_running, tests}, {NULL}};
    return h_run_suite_forked(h_suite("feed", cases));
}
