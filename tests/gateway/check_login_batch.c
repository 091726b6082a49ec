/*
 * check_login_batch.c - the login's batched internal hops (issue 15 lever 1)
 * on a whole stack: many CompleteLogins at once go to the gateway's
 * database, the vault and the pseudonym service in batches (the gateway's
 * veil_batch_items histogram says so), and still every login gets its own
 * pseudonym, its own attributes and its own signed assertion; a bad ticket,
 * a replayed challenge in the same burst, fail only themselves, with the
 * status and message an unbatched login gives; and each login's log lines
 * keep its own trace, naming the trace its batch went out under.  With
 * GATEWAY_LOGIN_BATCH_MAX=1 batching is off: logins pass a hop side by
 * side, so one held in PostgreSQL holds up no other.
 *
 * The cache misses (issue 15, 100,000 active citizens): with the gateway's
 * cache holding nothing (GATEWAY_CACHE_ENTRIES=0), every login asks
 * revocation's Authorize and consent's Check, and concurrent logins ask in
 * batches (AuthorizeBatch, CheckBatch), each login still with its own
 * verdict, consent, pseudonym and assertion; a suspended citizen's logins
 * in the same bursts are refused alone.  That stack's gateway has one
 * worker too: a miss waits on no thread, so a burst's misses still go out
 * in batches of more than four.
 *
 * One stack per test case (an unchecked fixture), the gateway logging at
 * debug.  The first runs the gateway with a single worker thread
 * (VEIL_WORKERS=1): no login waits on a thread of its own (issue 15 lever
 * 2), so the logins of a burst are all in flight at once all the same.
 * The challenges are consumed by primary key even when the table's
 * statistics are older than a challenge's lifetime.  Tests run in one
 * process because grpc core must not be used across fork().
 */
#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "store.h"

static h_stack S;
static const char *const gateway_env[] = {"VEIL_LOG_LEVEL=debug", "VEIL_WORKERS=1", NULL};
static const char *const no_cache_env[] = {"VEIL_LOG_LEVEL=debug", "VEIL_WORKERS=1",
                                           "GATEWAY_CACHE_ENTRIES=0", NULL};

static void start(const char *const *env)
{
    h_stack_opts o = {.gateway_env = env, .metrics_ports = 1};
    if (h_stack_start_opts(&S, &o) != 0)
        ck_abort_msg("the stack did not start");
}

static void stack_up(void)
{
    start(gateway_env);
}

static void stack_up_no_cache(void)
{
    start(no_cache_env);
}

#define CITIZENS 3
#define BURST    24

static const char *const apps[2] = {"gov.services", "chat.lianxin"};
static const char *const age[] = {"age_over_18"};

/* Citizens, their pseudonym at each app (from a login alone), set up once. */
static vw_wallet *citizen[CITIZENS];
static char *expected_sub[CITIZENS][2];

static void citizens(void)
{
    static const char *const first17[CITIZENS] = {"11010519800101004", "11010519850202005",
                                                  "11010519900303006"};
    if (citizen[0])
        return;
    for (int c = 0; c < CITIZENS; c++) {
        char id[19], name[32];
        e2e_id_number(first17[c], id);
        snprintf(name, sizeof name, "Batch Citizen %d", c);
        citizen[c] = e2e_enrol(&S, id, name);
        e2e_grant(&S, citizen[c], apps[0], age, 1);
        for (int a = 0; a < 2; a++) {
            Veil__Gateway__CompleteLoginResponse *r;
            veil_status st;
            veil_err err = e2e_login(&S, apps[a], citizen[c], a ? NULL : age, a ? 0 : 1, &r, &st);
            ck_assert_msg(err == VEIL_OK, "a lone login failed: %s", st.message);
            expected_sub[c][a] = strdup(r->sub);
            e2e_free(r);
        }
    }
}

/* The stack goes, and with it the citizens enrolled in it. */
static void stack_down(void)
{
    h_stack_down(&S);
    for (int c = 0; c < CITIZENS; c++) {
        vw_wallet_free(citizen[c]);
        citizen[c] = NULL;
        for (int a = 0; a < 2; a++) {
            free(expected_sub[c][a]);
            expected_sub[c][a] = NULL;
        }
    }
}

/* One login of a burst: what is sent, and what came back. */
struct login {
    int citizen, app;
    char *ticket;
    veil_err err;
    veil_status st;
    Veil__Gateway__CompleteLoginResponse *resp;
};

/* A ticket for a fresh challenge of the login's app, made at at_ms by its citizen's phone. */
static void ticket(struct login *l, int64_t at_ms)
{
    unsigned char ch[32];
    ck_assert_int_eq(e2e_challenge(&S, apps[l->app], ch), VEIL_OK);
    ck_assert_int_eq(vw_ticket(citizen[l->citizen], apps[l->app], ch, sizeof ch, at_ms, &l->ticket),
                     VEIL_OK);
}

/*
 * The logins of a burst: citizens in turn, both apps, each with a fresh
 * ticket made now - except `skip` (no ticket; -1: none skipped) and `late`,
 * whose phone clock is an hour behind (-1: none).
 */
static void prepare(struct login *l, size_t n, int skip, int late)
{
    memset(l, 0, n * sizeof *l);
    for (size_t i = 0; i < n; i++) {
        l[i].citizen = (int)(i % CITIZENS);
        l[i].app = (int)((i / CITIZENS) % 2);
        if ((int)i != skip)
            ticket(&l[i], (int)i == late ? veil_now_ms() - 3600 * 1000 : veil_now_ms());
    }
}

/*
 * Sends every login's call at once (one channel per app, reqs[i] for l[i])
 * and hands each reply to got, with its login, as it lands.
 */
static void burst_calls(struct login *l, size_t n, const char *method,
                        ProtobufCMessage *const *reqs,
                        void (*got)(struct login *, veil_err, void *resp, const veil_status *))
{
    veil_channel *ch[2];
    veil_cq *cq;
    for (int a = 0; a < 2; a++) {
        char identity[64];
        snprintf(identity, sizeof identity, "app/%s", apps[a]);
        ch[a] = h_channel(S.gateway.addr, identity, &veil__gateway__login__descriptor);
    }
    ck_assert_int_eq(veil_cq_new(&cq), VEIL_OK);
    for (size_t i = 0; i < n; i++) {
        veil_pending *p;
        ck_assert_int_eq(veil_channel_start(ch[l[i].app], method, reqs[i],
                                            30000 * h_timeout_scale(), cq, &l[i], &p),
                         VEIL_OK);
    }
    for (size_t done = 0; done < n; done++) {
        veil_pending *p = veil_cq_next(cq, 60000 * h_timeout_scale());
        ck_assert_ptr_nonnull(p);
        void *user, *resp = NULL;
        veil_status st;
        veil_err err = veil_pending_finish(p, NULL, &resp, &st, &user);
        got(user, err, resp, &st);
    }
    veil_cq_free(cq);
    for (int a = 0; a < 2; a++)
        veil_channel_free(ch[a]);
}

static void got_login(struct login *l, veil_err err, void *resp, const veil_status *st)
{
    l->err = err;
    l->st = *st;
    l->resp = resp;
}

/* Sends every login's CompleteLogin at once and collects every reply. */
static void burst(struct login *l, size_t n)
{
    Veil__Gateway__CompleteLoginRequest req[n];
    ProtobufCMessage *reqs[n];
    for (size_t i = 0; i < n; i++) {
        veil__gateway__complete_login_request__init(&req[i]);
        req[i].ticket = l[i].ticket;
        req[i].attributes = l[i].app ? NULL : (char **)age;
        req[i].n_attributes = l[i].app ? 0 : 1;
        reqs[i] = &req[i].base;
    }
    burst_calls(l, n, "CompleteLogin", reqs, got_login);
}

/* Checks a login that succeeded: its own pseudonym, attributes and assertion. */
static void check_own_result(const struct login *l)
{
    ck_assert_msg(l->err == VEIL_OK, "login %d@%s failed: %s: %s", l->citizen, apps[l->app],
                  veil_status_name(l->st.code), l->st.message);
    const char *want = expected_sub[l->citizen][l->app];
    ck_assert_str_eq(l->resp->sub, want);
    json_t *claims = e2e_claims(l->resp->assertion);
    ck_assert_str_eq(json_string_value(json_object_get(claims, "sub")), want);
    ck_assert_str_eq(json_string_value(json_object_get(claims, "aud")), apps[l->app]);
    if (l->app == 0) {
        ck_assert_uint_eq(l->resp->n_released, 1);
        ck_assert_str_eq(l->resp->released[0], "age_over_18");
        ck_assert(json_is_true(json_object_get(claims, "age_over_18")));
    } else {
        ck_assert_uint_eq(l->resp->n_released, 0);
        ck_assert_ptr_null(json_object_get(claims, "age_over_18"));
    }
    json_decref(claims);
}

/* Batches of more than k items seen at a hop so far (histogram buckets above k). */
static double batches_above(const char *metrics, const char *hop, int k)
{
    char up_to[128], all[128];
    snprintf(up_to, sizeof up_to, "veil_batch_items_bucket{hop=\"%s\",le=\"%d\"}", hop, k);
    snprintf(all, sizeof all, "veil_batch_items_count{hop=\"%s\"}", hop);
    double nk = e2e_sample(metrics, up_to), n = e2e_sample(metrics, all);
    ck_assert_msg(nk >= 0 && n >= 0, "no veil_batch_items series for hop %s", hop);
    return n - nk;
}

/*
 * Each batch at a hop is timed in two parts (veil_batch_seconds: the
 * batched call, then handing the items on), once per batch: the counts
 * match the batch count and the call's time is not zero.  The hand-on is
 * recorded after the batch's last login was answered, so a scrape right
 * after a burst may be one short: 1 when they match, 0 to scrape again.
 */
static int batches_timed(const char *metrics, const char *hop)
{
    char items[128], call[128], call_sum[128], hand_on[128];
    snprintf(items, sizeof items, "veil_batch_items_count{hop=\"%s\"}", hop);
    snprintf(call, sizeof call, "veil_batch_seconds_count{hop=\"%s\",part=\"call\"}", hop);
    snprintf(call_sum, sizeof call_sum, "veil_batch_seconds_sum{hop=\"%s\",part=\"call\"}", hop);
    snprintf(hand_on, sizeof hand_on, "veil_batch_seconds_count{hop=\"%s\",part=\"hand_on\"}",
             hop);
    double n = e2e_sample(metrics, items);
    ck_assert_msg(n > 0, "no batch at hop %s", hop);
    ck_assert_msg(e2e_sample(metrics, call) == n, "hop %s: %.0f batches, %.0f calls timed", hop,
                  n, e2e_sample(metrics, call));
    ck_assert_msg(e2e_sample(metrics, call_sum) > 0, "hop %s: its calls took no time", hop);
    double on = e2e_sample(metrics, hand_on);
    ck_assert_msg(on == n || on == n - 1, "hop %s: %.0f batches, %.0f hand-ons timed", hop, n, on);
    return on == n;
}

/* Batches of more than one item seen at a hop so far. */
static double batched(const char *metrics, const char *hop)
{
    return batches_above(metrics, hop, 1);
}

static void free_logins(struct login *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(l[i].ticket);
        e2e_free(l[i].resp);
    }
}

/* A burst of n logins (at most BURST), each checked for its own result. */
static void burst_each_its_own(size_t n)
{
    struct login l[BURST];
    ck_assert_uint_le(n, BURST);
    prepare(l, n, -1, -1);
    burst(l, n);
    for (size_t i = 0; i < n; i++)
        check_own_result(&l[i]);
    free_logins(l, n);
}

/*
 * Bursts of `size` logins at once, of different citizens at different
 * apps, each checked for its own result and its assertion verified by
 * PyJWT, until every one of the n hops has formed a batch of more than
 * `above` logins (veil_batch_items): batching needs logins to overlap, so
 * a burst that does not show it is repeated, at most five times.  what
 * names the items in the failure message.
 */
static void bursts_until_batched(const char *const *hops, int n, const char *what, int size,
                                 int above)
{
    enum { MOST = 48 };
    char *jwks = e2e_jwks(&S);
    int seen[8] = {0}, all = 0;
    ck_assert_int_le(n, 8);
    ck_assert_int_le(size, MOST);
    for (int round = 0; round < 5 && !all; round++) {
        char *before = e2e_scrape(S.metrics_port[H_GATEWAY]);
        struct login l[MOST];
        prepare(l, (size_t)size, -1, -1);
        burst(l, (size_t)size);
        char *tokens[MOST], *auds[MOST];
        for (int i = 0; i < size; i++) {
            check_own_result(&l[i]);
            tokens[i] = l[i].resp->assertion;
            auds[i] = (char *)apps[l[i].app];
        }
        ck_assert_int_eq(e2e_verify_with_pyjwt(jwks, tokens, auds, size), size);
        char *after = e2e_scrape(S.metrics_port[H_GATEWAY]);
        all = 1;
        for (int h = 0; h < n; h++) {
            if (batches_above(after, hops[h], above) > batches_above(before, hops[h], above))
                seen[h] = 1;
            all &= seen[h];
        }
        free(before);
        free(after);
        free_logins(l, (size_t)size);
    }
    for (int h = 0; h < n; h++)
        ck_assert_msg(seen[h], "no batch of more than %d %s at hop %s", above, what, hops[h]);
    free(jwks);
}

START_TEST(test_concurrent_logins_batched_each_its_own)
{
    static const char *const hops[] = {"challenge_take", "verify_ticket", "derive_release"};
    citizens();
    bursts_until_batched(hops, 3, "logins", BURST, 1);
    int timed = 0;
    for (int tries = 0; tries < 50 && !timed; tries++) {
        char *metrics = e2e_scrape(S.metrics_port[H_GATEWAY]);
        timed = 1;
        for (int h = 0; h < 3; h++)
            timed &= batches_timed(metrics, hops[h]);
        free(metrics);
        if (!timed)
            usleep(20 * 1000);
    }
    ck_assert_msg(timed, "a batch's hand-on was never timed");
}
END_TEST

/*
 * Deferred logins (issue 15 lever 2): with one worker thread in the
 * gateway, a burst of 48 CompleteLogins still has many logins in flight at
 * once, a ticket verification batch holding more than four of them.
 */
START_TEST(test_logins_in_flight_beyond_workers)
{
    static const char *const hops[] = {"verify_ticket"};
    citizens();
    bursts_until_batched(hops, 1, "logins", 48, 4);
}
END_TEST

/* One number from the gateway's database (the first column of the first row). */
static double db_number(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql,
                  PQerrorMessage(db));
    double v = atof(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void db_ok(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
}

/*
 * The challenges table under statistics that do not describe it, as a busy
 * gateway's may be: autovacuum off, ANALYZE over `analyzed` challenges of
 * an app that then goes (their expiry the SQL expression `expiry`, of i),
 * and `live` live challenges of other.app (sha256 of "live1" ... ) added
 * after.  statistics_restored undoes it and closes the connection.
 */
static PGconn *misleading_statistics(const char *expiry, int analyzed, int live)
{
    char sql[512];
    PGconn *db = PQconnectdb(S.db[0]);
    ck_assert_int_eq(PQstatus(db), CONNECTION_OK);
    db_ok(db, "ALTER TABLE challenges SET (autovacuum_enabled = off)");
    snprintf(sql, sizeof sql,
             "INSERT INTO challenges (challenge, app_id, expires_at) SELECT"
             " sha256(('gone' || i)::bytea), 'gone.app', %s FROM generate_series(1, %d) i",
             expiry, analyzed);
    db_ok(db, sql);
    db_ok(db, "ANALYZE challenges");
    db_ok(db, "DELETE FROM challenges WHERE app_id = 'gone.app'");
    snprintf(sql, sizeof sql,
             "INSERT INTO challenges (challenge, app_id, expires_at) SELECT"
             " sha256(('live' || i)::bytea), 'other.app', now() + interval '2 minutes'"
             " FROM generate_series(1, %d) i",
             live);
    db_ok(db, sql);
    return db;
}

static void statistics_restored(PGconn *db)
{
    db_ok(db, "DELETE FROM challenges WHERE app_id = 'other.app'");
    db_ok(db, "ALTER TABLE challenges RESET (autovacuum_enabled)");
    PQfinish(db);
}

#define EXPIRY_READ                                                                              \
    "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'challenges_expiry'"
#define PKEY_SCANS                                                                               \
    "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'challenges_pkey'"

/*
 * The challenges are taken by primary key whatever the statistics say
 * (docs/performance.md, section 11).  A gateway that has run for more than
 * a challenge's two minutes since its table was last analyzed has
 * statistics in which every expiry lies in the past, so `expires_at >
 * now()` looks like no row at all: the take statement used to read every
 * live challenge through challenges_expiry and hash them, for each batch.
 * Here: statistics taken over 5,000 expired challenges, then 3,000 live
 * ones of logins in progress; a burst of logins must read (nearly) none of
 * them through the expiry index - the sweep reads only expired rows - and
 * each login still gets its own result.
 */
START_TEST(test_challenges_taken_by_key_with_stale_statistics)
{
    citizens();
    PGconn *db = misleading_statistics("now() - interval '1 hour' + i * interval '1 ms'", 5000,
                                       3000);
    double read0 = db_number(db, EXPIRY_READ), scans0 = db_number(db, PKEY_SCANS);
    burst_each_its_own(BURST);
    /* each backend reports its counts within ~10 s (PostgreSQL's idle flush) */
    double read = read0, scans = scans0;
    for (int tries = 0; tries < 150 && scans == scans0 && read - read0 < 3000; tries++) {
        usleep(100 * 1000);
        read = db_number(db, EXPIRY_READ);
        scans = db_number(db, PKEY_SCANS);
    }
    ck_assert_msg(read - read0 < 3000,
                  "the logins read %.0f challenges through challenges_expiry", read - read0);
    ck_assert_msg(scans > scans0, "no challenge was looked up by its primary key");
    statistics_restored(db);
}
END_TEST

#define SEQ_READ "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'challenges'"
#define TAKE_N   200
#define LIVE_N   28000

/*
 * A batch of claims never reads the table (docs/performance.md, section
 * 12): with 28,000 live challenges, as a busy gateway keeps, and statistics
 * taken when the table held 50, a join of 200 claims with the table was
 * planned as a hash of every live challenge read by sequential scan.  The
 * store's own statement is asked here, one batch of 200 claims on a fresh
 * connection: the challenges are found by primary key, each claim gets its
 * own result (its own app only, a repeat once, an unknown one never), and
 * the other app's live challenges stay.
 */
START_TEST(test_large_batch_taken_by_key_with_undercounting_statistics)
{
    PGconn *db = misleading_statistics("now() + interval '2 minutes'", 50, LIVE_N);

    struct gw_store *store;
    ck_assert_int_eq(gw_store_open(S.db[0], &store), VEIL_OK);
    static unsigned char ch[TAKE_N][32];
    gw_challenge_claim put[TAKE_N], take[TAKE_N + 3], *pp[TAKE_N], *tp[TAKE_N + 3];
    for (int i = 0; i < TAKE_N; i++) {
        randombytes_buf(ch[i], 32);
        put[i] = (gw_challenge_claim){.challenge = ch[i], .app_id = "mine.app",
                                      .expires_at_ms = veil_now_ms() + 120000};
        take[i] = (gw_challenge_claim){.challenge = ch[i], .app_id = "mine.app"};
        pp[i] = &put[i];
    }
    ck_assert_int_eq(gw_store_challenge_put(store, pp, TAKE_N), VEIL_OK);
    /* a repeat, another app's challenge claimed by this app, and an unknown one */
    static unsigned char other[32], unknown[32];
    crypto_hash_sha256(other, (const unsigned char *)"live7", 5);
    randombytes_buf(unknown, sizeof unknown);
    take[TAKE_N] = (gw_challenge_claim){.challenge = ch[3], .app_id = "mine.app"};
    take[TAKE_N + 1] = (gw_challenge_claim){.challenge = other, .app_id = "mine.app"};
    take[TAKE_N + 2] = (gw_challenge_claim){.challenge = unknown, .app_id = "mine.app"};
    for (int i = 0; i < TAKE_N + 3; i++)
        tp[i] = &take[i];

    double read0 = db_number(db, SEQ_READ);
    ck_assert_int_eq(gw_store_challenge_take(store, tp, TAKE_N + 3), VEIL_OK);
    gw_store_close(store); /* its backend reports its counts as it exits */
    for (int i = 0; i < TAKE_N; i++)
        ck_assert_msg(take[i].err == VEIL_OK, "claim %d was not taken", i);
    for (int i = TAKE_N; i < TAKE_N + 3; i++)
        ck_assert_msg(take[i].err == VEIL_ERR_NOT_FOUND, "claim %d was taken", i);
    double read = read0;
    for (int tries = 0; tries < 50 && read - read0 < LIVE_N; tries++) {
        usleep(100 * 1000);
        read = db_number(db, SEQ_READ);
    }
    ck_assert_msg(read - read0 < LIVE_N, "one batch read %.0f challenges by sequential scan",
                  read - read0);
    ck_assert_int_eq((int)db_number(db, "SELECT count(*) FROM challenges WHERE app_id = 'other.app'"),
                     LIVE_N);
    ck_assert_int_eq((int)db_number(db, "SELECT count(*) FROM challenges WHERE app_id = 'mine.app'"),
                     0);
    statistics_restored(db);
}
END_TEST

/* A BeginLogin's reply: the login's phone makes its ticket from the challenge. */
static void got_challenge(struct login *x, veil_err err, void *resp, const veil_status *st)
{
    Veil__Gateway__BeginLoginResponse *r = resp;
    ck_assert_msg(err == VEIL_OK, "BeginLogin failed: %s", st->message);
    ck_assert_uint_eq(r->challenge.len, 32);
    ck_assert_int_eq(vw_ticket(citizen[x->citizen], apps[x->app], r->challenge.data, 32,
                               veil_now_ms(), &x->ticket),
                     VEIL_OK);
    e2e_free(r);
}

/*
 * Many BeginLogins at once (both apps): their challenges are stored in
 * batches of more than one (repeated at most five times, as above), each
 * challenge is its own, and each serves exactly one login at its own app.
 */
START_TEST(test_concurrent_begin_logins_batched)
{
    citizens();
    int seen = 0;
    for (int round = 0; round < 5 && !seen; round++) {
        char *before = e2e_scrape(S.metrics_port[H_GATEWAY]);
        struct login l[BURST];
        memset(l, 0, sizeof l);
        Veil__Gateway__BeginLoginRequest req = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
        ProtobufCMessage *reqs[BURST];
        for (int i = 0; i < BURST; i++) {
            l[i].citizen = i % CITIZENS;
            l[i].app = (i / CITIZENS) % 2;
            reqs[i] = &req.base;
        }
        burst_calls(l, BURST, "BeginLogin", reqs, got_challenge);
        char *after = e2e_scrape(S.metrics_port[H_GATEWAY]);
        seen = batched(after, "challenge_put") > batched(before, "challenge_put");
        free(before);
        free(after);
        /* every challenge was stored for its own app and serves one login */
        burst(l, BURST);
        for (int i = 0; i < BURST; i++)
            check_own_result(&l[i]);
        free_logins(l, BURST);
    }
    ck_assert_msg(seen, "no batch of more than one challenge stored");
}
END_TEST

/*
 * In one burst: a ticket from a phone whose clock is an hour off (the vault
 * refuses it: the app reads the uniform refusal) and a challenge presented
 * twice (consumed once: the other is told it is used).  Only those fail,
 * with exactly the unbatched messages; every other login of the burst is
 * its citizen's.
 */
START_TEST(test_bad_items_fail_alone)
{
    citizens();
    enum { BAD_CLOCK = 4, FIRST = 7, REPLAY = 13 };
    struct login l[BURST];
    prepare(l, BURST, REPLAY, BAD_CLOCK);
    l[REPLAY].citizen = l[FIRST].citizen;
    l[REPLAY].app = l[FIRST].app;
    l[REPLAY].ticket = strdup(l[FIRST].ticket);
    burst(l, BURST);

    ck_assert_int_eq(l[BAD_CLOCK].err, VEIL_ERR_DENIED);
    ck_assert_str_eq(l[BAD_CLOCK].st.message, "login refused");
    /* the same challenge twice: exactly one of them logs in */
    struct login *won = l[FIRST].err == VEIL_OK ? &l[FIRST] : &l[REPLAY];
    struct login *lost = won == &l[FIRST] ? &l[REPLAY] : &l[FIRST];
    check_own_result(won);
    ck_assert_int_eq(lost->err, VEIL_ERR_PRECONDITION);
    ck_assert_str_eq(lost->st.message, "challenge is unknown, expired or already used");
    for (int i = 0; i < BURST; i++)
        if (i != BAD_CLOCK && i != FIRST && i != REPLAY)
            check_own_result(&l[i]);
    free_logins(l, BURST);
}
END_TEST

/*
 * Each login's log lines carry its own trace: a login answered in a batch
 * another login led says so under its own trace id (one of a BeginLogin or
 * CompleteLogin call), naming the leader's trace, under which the batched call went out.
 */
START_TEST(test_batched_logins_keep_their_traces)
{
    citizens();
    burst_each_its_own(BURST);

    FILE *f = fopen(S.gateway.log, "r");
    ck_assert_ptr_nonnull(f);
    char line[16384];
    json_t *logins = json_object(), *joined = json_array();
    while (fgets(line, sizeof line, f)) {
        if (line[0] != '{')
            continue;
        json_t *j = json_loads(line, 0, NULL);
        ck_assert_msg(j != NULL, "gateway log line is not JSON: %s", line);
        const char *msg = json_string_value(json_object_get(j, "msg"));
        const char *method = json_string_value(json_object_get(j, "method"));
        const char *trace = json_string_value(json_object_get(j, "trace_id"));
        if (msg && strcmp(msg, "call finished") == 0 && method &&
            (strcmp(method, "/veil.gateway.Login/CompleteLogin") == 0 ||
             strcmp(method, "/veil.gateway.Login/BeginLogin") == 0) &&
            trace)
            json_object_set_new(logins, trace, json_true());
        if (msg && strcmp(msg, "answered in a batched call") == 0)
            json_array_append(joined, j);
        json_decref(j);
    }
    fclose(f);
    ck_assert_msg(json_array_size(joined) > 0, "no login was answered in another's batch");
    size_t i;
    json_t *j;
    json_array_foreach(joined, i, j) {
        const char *trace = json_string_value(json_object_get(j, "trace_id"));
        const char *lead = json_string_value(json_object_get(j, "lead_trace_id"));
        ck_assert_ptr_nonnull(trace);
        ck_assert_ptr_nonnull(lead);
        ck_assert_str_ne(trace, lead);
        ck_assert_msg(json_object_get(logins, trace), "a batched hop logged outside its login");
        ck_assert_msg(json_object_get(logins, lead), "a batch led by no login");
        ck_assert_int_ge(json_integer_value(json_object_get(j, "batch_items")), 2);
    }
    json_decref(logins);
    json_decref(joined);
}
END_TEST

/* ---- batching off: a second stack with GATEWAY_LOGIN_BATCH_MAX=1 ---- */

static h_stack OFF;
static const char *const off_env[] = {"GATEWAY_LOGIN_BATCH_MAX=1", NULL};

static void off_up(void)
{
    h_stack_opts o = {.gateway_env = off_env};
    if (h_stack_start_opts(&OFF, &o) != 0)
        ck_abort_msg("the stack did not start");
}

static void off_down(void)
{
    h_stack_down(&OFF);
}

/*
 * Gateway statements waiting for a lock in its database, seen from a
 * session of its own (inside a transaction pg_stat_activity stays as it
 * was at the transaction's first look).
 */
static long lock_waiters(PGconn *db)
{
    PGresult *r = PQexec(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                             "current_database() AND wait_event_type = 'Lock'");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return n;
}

/*
 * With batching off, a login whose challenge row is locked by another
 * session (its DELETE waits in PostgreSQL) holds up no other login: a
 * second one completes meanwhile, and the first completes once the lock
 * goes.  With one batch in flight per hop - what a maximum of 1 meant
 * before - the second waited behind the first.
 */
START_TEST(test_batching_off_logins_pass_side_by_side)
{
    char id[19];
    e2e_id_number("11010519950505007", id);
    vw_wallet *w = e2e_enrol(&OFF, id, "Unbatched Citizen");
    unsigned char ch[2][32];
    char *tk[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(e2e_challenge(&OFF, apps[1], ch[i]), VEIL_OK);
        ck_assert_int_eq(vw_ticket(w, apps[1], ch[i], 32, veil_now_ms(), &tk[i]), VEIL_OK);
    }
    PGconn *db = PQconnectdb(OFF.db[0]), *watch = PQconnectdb(OFF.db[0]);
    ck_assert_int_eq(PQstatus(db), CONNECTION_OK);
    ck_assert_int_eq(PQstatus(watch), CONNECTION_OK);
    char hex[65], sql[256];
    sodium_bin2hex(hex, sizeof hex, ch[0], 32);
    snprintf(sql, sizeof sql,
             "SELECT 1 FROM challenges WHERE challenge = '\\x%s'::bytea FOR UPDATE", hex);
    PGresult *r = PQexec(db, "BEGIN");
    PQclear(r);
    r = PQexec(db, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    PQclear(r);

    char identity[64];
    snprintf(identity, sizeof identity, "app/%s", apps[1]);
    veil_channel *chan = h_channel(OFF.gateway.addr, identity, &veil__gateway__login__descriptor);
    veil_cq *cq;
    ck_assert_int_eq(veil_cq_new(&cq), VEIL_OK);
    Veil__Gateway__CompleteLoginRequest req[2];
    veil_pending *p;
    for (int i = 0; i < 2; i++) {
        veil__gateway__complete_login_request__init(&req[i]);
        req[i].ticket = tk[i];
        /*
         * The second starts once the first waits for the lock (polling the
         * queue meanwhile: grpc moves a client's calls while it is polled).
         */
        for (int tries = 0; i == 1 && lock_waiters(watch) == 0; tries++) {
            ck_assert_msg(tries < 300 * h_timeout_scale(),
                          "the first login never reached the locked challenge");
            ck_assert_ptr_null(veil_cq_next(cq, 100));
        }
        ck_assert_int_eq(veil_channel_start(chan, "CompleteLogin", &req[i].base,
                                            60000 * h_timeout_scale(), cq, &tk[i], &p),
                         VEIL_OK);
    }
    for (int done = 0; done < 2; done++) {
        /* the first reply must come while the lock is still held: the second login's */
        p = veil_cq_next(cq, (done ? 60000 : 20000) * h_timeout_scale());
        ck_assert_msg(p != NULL, done ? "the held login never completed"
                                      : "a login waited behind another's held hop");
        void *user;
        Veil__Gateway__CompleteLoginResponse *resp = NULL;
        veil_status st;
        veil_err err = veil_pending_finish(p, NULL, &resp, &st, &user);
        ck_assert_msg(err == VEIL_OK, "a login failed: %s", st.message);
        ck_assert_ptr_eq(user, done ? (void *)&tk[0] : (void *)&tk[1]);
        e2e_free(resp);
        if (!done) {
            ck_assert_int_eq(lock_waiters(watch), 1); /* the first still waits */
            r = PQexec(db, "ROLLBACK");
            PQclear(r);
        }
    }
    veil_cq_free(cq);
    veil_channel_free(chan);
    PQfinish(db);
    PQfinish(watch);
    free(tk[0]);
    free(tk[1]);
    vw_wallet_free(w);
}
END_TEST

/* The gateway's cache answered nothing (the suite's second stack holds no answer). */
static void assert_no_cache_hits(void)
{
    char *m = e2e_scrape(S.metrics_port[H_GATEWAY]);
    double hits = e2e_sample(m, "veil_gateway_cache_hits_total");
    ck_assert_msg(hits <= 0, "the gateway's cache answered %.0f look-ups", hits);
    free(m);
}

/*
 * Every login misses the cache: concurrent logins ask revocation and
 * consent in batches of more than one (AuthorizeBatch, CheckBatch; rounds
 * repeated at most five times, batching needs logins to overlap), and every
 * login gets its own pseudonym, consent-bound attributes and a verified
 * assertion.
 */
START_TEST(test_cache_misses_batched_each_its_own)
{
    static const char *const hops[] = {"authorize", "consent_check"};
    citizens();
    bursts_until_batched(hops, 2, "cache misses", BURST, 1);
    assert_no_cache_hits();
}
END_TEST

/*
 * The cache misses wait on no thread either (issue 15 lever 2): with one
 * worker in the gateway and every login missing the cache, a burst of 48
 * still sends AuthorizeBatch and CheckBatch calls of more than four logins
 * each (a gateway that asks on a worker per miss sends batches of one).
 */
START_TEST(test_cache_misses_in_flight_beyond_workers)
{
    static const char *const hops[] = {"authorize", "consent_check"};
    citizens();
    bursts_until_batched(hops, 2, "cache misses", 48, 4);
    assert_no_cache_hits();
}
END_TEST

/*
 * A suspended citizen's logins, in bursts with everyone else's: revocation
 * refuses exactly those (the app reads the uniform refusal), every other
 * login of the bursts is its citizen's, and batches of more than one went
 * to revocation meanwhile.  Reinstated, the citizen logs in again.
 */
START_TEST(test_refused_miss_fails_alone)
{
    citizens();
    e2e_set_identity(&S, citizen[2], "suspended", "batch test");
    int batched_seen = 0;
    for (int round = 0; round < 5 && !batched_seen; round++) {
        char *before = e2e_scrape(S.metrics_port[H_GATEWAY]);
        struct login l[BURST];
        prepare(l, BURST, -1, -1);
        burst(l, BURST);
        for (int i = 0; i < BURST; i++) {
            if (l[i].citizen == 2) {
                ck_assert_int_eq(l[i].err, VEIL_ERR_DENIED);
                ck_assert_str_eq(l[i].st.message, "login refused");
            } else {
                check_own_result(&l[i]);
            }
        }
        char *after = e2e_scrape(S.metrics_port[H_GATEWAY]);
        batched_seen = batched(after, "authorize") > batched(before, "authorize");
        free(before);
        free(after);
        free_logins(l, BURST);
    }
    ck_assert_msg(batched_seen, "no batch of more than one cache miss at hop authorize");
    e2e_set_identity(&S, citizen[2], "active", "batch test over");
    burst_each_its_own(CITIZENS * 2);
}
END_TEST

int main(void)
{
    const TTest *const batch[] = {test_concurrent_logins_batched_each_its_own,
                                  test_concurrent_begin_logins_batched,
                                  test_bad_items_fail_alone,
                                  test_batched_logins_keep_their_traces,
                                  test_logins_in_flight_beyond_workers,
                                  test_challenges_taken_by_key_with_stale_statistics,
                                  test_large_batch_taken_by_key_with_undercounting_statistics,
                                  NULL};
    const TTest *const off[] = {test_batching_off_logins_pass_side_by_side, NULL};
    const TTest *const miss[] = {test_cache_misses_batched_each_its_own,
                                 test_refused_miss_fails_alone,
                                 test_cache_misses_in_flight_beyond_workers, NULL};
    const h_case cases[] = {{"batch", 600, stack_up, stack_down, NULL, NULL, batch},
                            {"batching_off", 600, off_up, off_down, NULL, NULL, off},
                            {"cache_misses", 600, stack_up_no_cache, stack_down, NULL, NULL, miss},
                            {NULL}};
    return h_run_suite(h_suite("login_batch", cases));
}
