/*
 * check_faults_pg.c - PostgreSQL restarted while enrolments and logins run.
 *
 * The whole stack is under load (two threads enrolling new citizens, two
 * logging existing ones in) when the test cluster is restarted (fast mode:
 * every connection is terminated, the server is down for a moment).  Then:
 * calls that failed failed with UNAVAILABLE - never INTERNAL, never a hang
 * (DEADLINE_EXCEEDED); the services recover on their own, without a restart;
 * and every enrolment that was acknowledged with OK is still there: each of
 * those citizens logs in afterwards.  Then the same with the stack idle: once
 * the database is back, not one call fails (connections the server closed
 * while idle are replaced before use).  Serial: it restarts the shared cluster.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "e2e.h"
#include "load.h"

#define ENROLLERS      2
#define LOGGERS        2
#define RECOVERY_MS    10000 /* how long the stack may take to serve everyone again */
#define BACKOFF_MAX_MS 2000  /* libveil's reconnect backoff (pg.c): the longest a worker waits */
#define KNOWN          4

static h_stack S;
static vw_wallet *known[KNOWN]; /* citizens enrolled before any fault */
static const char *const APP = "shop.jiale";

static void stack_up(void)
{
    load_stack_up(&S, NULL, known, KNOWN, "310101198506", "钱多多");
}

static void stack_down(void)
{
    load_stack_down(&S, known, KNOWN);
}

/* Every failure is UNAVAILABLE with one of the gateway's retry messages; returns the count. */
static size_t check_failures(const load_thread *t)
{
    size_t failed = 0;
    for (size_t i = 0; i < t->n_ops; i++) {
        const load_op *op = &t->ops[i];
        if (op->err == VEIL_OK)
            continue;
        failed++;
        ck_assert_msg(op->err == VEIL_ERR_UNAVAILABLE, "a call failed with %s (%s) after %lld ms",
                      veil_err_name(op->err), op->message, (long long)(op->end_ms - op->start_ms));
        ck_assert_msg(!strcmp(op->message, "a veil service is unavailable, retry later") ||
                          !strcmp(op->message, "database unavailable, retry later"),
                      "UNAVAILABLE with an unexpected message: %s", op->message);
    }
    return failed;
}

/* Logs w in at app, retrying UNAVAILABLE until deadline_ms; the final status. */
static veil_err login_until(veil_channel *ch, const char *app, const vw_wallet *w,
                            int64_t deadline_ms, int *tries)
{
    veil_status st;
    veil_err err;
    *tries = 0;
    do {
        ++*tries;
        err = load_login(ch, app, w, NULL, 0, &st);
        if (err == VEIL_ERR_UNAVAILABLE)
            h_sleep_ms(50);
    } while (err == VEIL_ERR_UNAVAILABLE && veil_now_ms() < deadline_ms);
    if (err)
        fprintf(stderr, "login failed: %s: %s\n", veil_err_name(err), st.message);
    return err;
}

START_TEST(test_pg_restart_under_load)
{
    load_thread t[ENROLLERS + LOGGERS];
    memset(t, 0, sizeof t);
    for (int i = 0; i < ENROLLERS + LOGGERS; i++) {
        t[i].stack = &S;
        t[i].id = i;
        t[i].kind = i < ENROLLERS ? LOAD_ENROL : LOAD_LOGIN;
        t[i].app = APP;
        t[i].wallets = known;
        t[i].n_wallets = KNOWN;
        t[i].pause_ms = 5;
        ck_assert_int_eq(load_start(&t[i]), 0);
    }
    for (int i = 0; i < ENROLLERS + LOGGERS; i++) /* the load is under way */
        ck_assert_int_eq(load_wait_ok(&t[i], 5, 30000), 0);
    int64_t down = veil_now_ms();
    h_pg_restart();
    int64_t up = veil_now_ms();
    h_sleep_ms(3000);
    for (int i = 0; i < ENROLLERS + LOGGERS; i++)
        load_stop(&t[i]);

    size_t ops = 0, failed = 0, before = 0, after = 0, acked = 0, late = 0;
    for (int i = 0; i < ENROLLERS + LOGGERS; i++) {
        ops += t[i].n_ops;
        failed += check_failures(&t[i]);
        before += load_count(&t[i], VEIL_OK, 0, down);
        after += load_count(&t[i], VEIL_OK, up, INT64_MAX);
        acked += t[i].n_enrolled;
        /* a worker whose reconnect failed during the outage waits out its backoff */
        late += load_count(&t[i], -1, up + BACKOFF_MAX_MS + 1500, INT64_MAX) -
                load_count(&t[i], VEIL_OK, up + BACKOFF_MAX_MS + 1500, INT64_MAX);
    }
    fprintf(stderr,
            "faults: PostgreSQL restart took %lld ms; %zu operations, %zu failed (all "
            "UNAVAILABLE), %zu succeeded before it and %zu after it; %zu enrolments acknowledged\n",
            (long long)(up - down), ops, failed, before, after, acked);
    ck_assert_msg(before > 0, "no operation succeeded before the restart");
    ck_assert_msg(failed > 0, "the restart went unnoticed: the fault was not injected");
    ck_assert_msg(after > 0, "nothing succeeded in the 3 s after the restart");
    ck_assert_msg(late == 0, "%zu calls failed more than %d ms after the database was back", late,
                  BACKOFF_MAX_MS + 1500);

    /* Recovery without a restart, and nothing acknowledged was lost. */
    veil_channel *ch = load_channel(&S, "app/shop.jiale", &veil__gateway__login__descriptor);
    ck_assert_ptr_nonnull(ch);
    int64_t deadline = veil_now_ms() + RECOVERY_MS;
    int max_tries = 0, tries;
    for (int i = 0; i < ENROLLERS; i++)
        for (size_t k = 0; k < t[i].n_enrolled; k++) {
            ck_assert_int_eq(login_until(ch, APP, t[i].enrolled[k], deadline, &tries), VEIL_OK);
            if (tries > max_tries)
                max_tries = tries;
        }
    fprintf(stderr, "faults: every acknowledged enrolment logs in (at most %d tries each)\n",
            max_tries);
    veil_channel_free(ch);
    for (int i = 0; i < ENROLLERS + LOGGERS; i++)
        load_free(&t[i]);
}
END_TEST

/*
 * Restarted while nothing runs: every worker of every service holds a
 * connection the server closed.  Once the database is back, no call fails.
 */
START_TEST(test_pg_restart_while_idle)
{
    veil_channel *ch = load_channel(&S, "app/shop.jiale", &veil__gateway__login__descriptor);
    veil_channel *wallet = load_channel(&S, "none", &veil__gateway__wallet__descriptor);
    ck_assert(ch && wallet);
    /* use every worker's connection first: 4 threads x 8 workers would do, this is simpler */
    for (int i = 0; i < 3 * KNOWN; i++) {
        veil_status st;
        ck_assert_int_eq(load_login(ch, APP, known[i % KNOWN], NULL, 0, &st), VEIL_OK);
    }
    h_pg_restart();
    int failed = 0;
    for (int i = 0; i < 40; i++) {
        veil_status st;
        veil_err err = load_login(ch, APP, known[i % KNOWN], NULL, 0, &st);
        if (err)
            fprintf(stderr, "login %d after the restart: %s: %s\n", i, veil_err_name(err),
                    st.message);
        failed += err != VEIL_OK;
        vw_wallet *w;
        ck_assert_int_eq(vw_wallet_new(&w), VEIL_OK);
        err = load_enrol(&S, wallet, w, 7, i, &st);
        if (err)
            fprintf(stderr, "enrolment %d after the restart: %s: %s\n", i, veil_err_name(err),
                    st.message);
        failed += err != VEIL_OK;
        vw_wallet_free(w);
    }
    ck_assert_msg(failed == 0, "%d of 80 calls failed after the database was back", failed);
    veil_channel_free(wallet);
    veil_channel_free(ch);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_pg_restart_under_load, test_pg_restart_while_idle, NULL};
    const h_case cases[] = {{"restart", 300, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("faults_pg", cases));
}
