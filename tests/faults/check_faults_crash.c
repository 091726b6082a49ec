/*
 * check_faults_crash.c - crashes lose nothing acknowledged (issue 13).
 *
 * Three kinds of work run through the gateway at once: logins, consent
 * changes (a grant or a withdrawal of "province" for gov.tax, alternating
 * per citizen) and device revocations (a newer phone revoking its citizen's
 * older one).  Then PostgreSQL is stopped in immediate mode (crash
 * semantics: no shutdown checkpoint, the WAL is replayed at the next start)
 * and the internal services are killed with SIGKILL; in the second round the
 * gateway is killed too.  Everything comes back on its ports and the work
 * goes on; afterwards:
 *   - every login acknowledged with OK has its ticket_verified entry in the
 *     citizen's access log (whose chain is intact);
 *   - every acknowledged consent change is in force: the next login releases
 *     "province" exactly when the last acknowledged change was a grant;
 *   - every acknowledged revocation is in force: the revoked phone's login
 *     is refused, and its citizen's device list says revoked
 * - through the gateway's caches, which in the first round survive the crash
 * of the services behind them.  The suite prints the counts.  Serial: it
 * stops the shared cluster.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "e2e.h"
#include "load.h"

#define LOGIN_CITIZENS   4
#define CONSENT_CITIZENS 4
#define REVOKE_CITIZENS  60    /* half for each round */
#define RETRY_MS         60000 /* how long a change is retried until it is acknowledged */

static h_stack S;
static const char *const LOGIN_APP = "shop.jiale";
static const char *const CONSENT_APP = "gov.tax";
static char *const PROVINCE[] = {"province"};

static vw_wallet *login_w[LOGIN_CITIZENS], *consent_w[CONSENT_CITIZENS];
static vw_wallet *old_phone[REVOKE_CITIZENS], *new_phone[REVOKE_CITIZENS];

static void id_for(int series, int i, char out[19])
{
    char first17[64];
    snprintf(first17, sizeof first17, "3201021975%02d%02d%03d", 1 + series, 1 + i % 28,
             100 + i / 28);
    e2e_id_number(first17, out);
}

static void stack_up(void)
{
    if (h_stack_start(&S, NULL) != 0)
        ck_abort_msg("the stack did not start");
    char id[19];
    for (int i = 0; i < LOGIN_CITIZENS; i++) {
        id_for(0, i, id);
        login_w[i] = e2e_enrol(&S, id, "崩溃一");
    }
    for (int i = 0; i < CONSENT_CITIZENS; i++) {
        id_for(1, i, id);
        consent_w[i] = e2e_enrol(&S, id, "崩溃二");
    }
    for (int i = 0; i < REVOKE_CITIZENS; i++) {
        id_for(2, i, id);
        old_phone[i] = e2e_enrol(&S, id, "崩溃三");
        new_phone[i] = e2e_enrol(&S, id, "崩溃三");
    }
}

static void stack_down(void)
{
    for (int i = 0; i < LOGIN_CITIZENS; i++)
        vw_wallet_free(login_w[i]);
    for (int i = 0; i < CONSENT_CITIZENS; i++)
        vw_wallet_free(consent_w[i]);
    for (int i = 0; i < REVOKE_CITIZENS; i++) {
        vw_wallet_free(old_phone[i]);
        vw_wallet_free(new_phone[i]);
    }
    ck_assert_int_eq(h_stack_stop(&S), 0);
}

/* A device-signed Wallet call on ch; asserts nothing (worker threads use it). */
static veil_err signed_call(veil_channel *ch, const vw_wallet *w, const char *method,
                            const ProtobufCMessage *payload, void *resp, veil_status *st)
{
    char path[128];
    Veil__Gateway__SignedRequest req;
    snprintf(path, sizeof path, "/veil.gateway.Wallet/%s", method);
    if (vw_sign(w, path, payload, veil_now_ms(), &req) != VEIL_OK)
        return VEIL_ERR_NOMEM;
    veil_err err = veil_channel_call(ch, method, &req.base, NULL, LOAD_TIMEOUT_MS, resp, st);
    vw_signed_free(&req);
    return err;
}

/* What the workers did, for the checks once they stopped. */
struct work {
    atomic_int stop;
    pthread_t logins, consents, revocations;
    /* logins */
    int login_acked[LOGIN_CITIZENS], login_tried[LOGIN_CITIZENS];
    /* consent: the last acknowledged state (1 granted, 0 withdrawn, -1 none yet) */
    int consent_state[CONSENT_CITIZENS];
    int consent_acked, consent_failed;
    /* revocations: 1 once acknowledged */
    int revoked[REVOKE_CITIZENS];
    int next_revoke, end_revoke, revoke_failed; /* this round's citizens: [first, end) */
    atomic_int revokes_done;                    /* progress, read by the main thread */
    atomic_int logins_done, consents_done;
    int failures_not_unavailable;
    char odd_failure[160];
};

static void note_failure(struct work *w, veil_err err, const veil_status *st)
{
    /* what a crash may cause: the call could not be completed, retry */
    if (err == VEIL_ERR_UNAVAILABLE || err == VEIL_ERR_DEADLINE)
        return;
    w->failures_not_unavailable++;
    snprintf(w->odd_failure, sizeof w->odd_failure, "%s: %.120s", veil_err_name(err), st->message);
}

static void *login_worker(void *arg)
{
    struct work *w = arg;
    veil_channel *ch = load_channel(&S, "app/shop.jiale", &veil__gateway__login__descriptor);
    for (int n = 0; ch && !atomic_load(&w->stop); n++) {
        int i = n % LOGIN_CITIZENS;
        veil_status st;
        w->login_tried[i]++;
        veil_err err = load_login(ch, LOGIN_APP, login_w[i], NULL, 0, &st);
        if (!err) {
            w->login_acked[i]++;
            atomic_fetch_add(&w->logins_done, 1);
        } else
            note_failure(w, err, &st);
        h_sleep_ms(10);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    return NULL;
}

/* Grants or withdraws province for citizen i until acknowledged (or RETRY_MS passed). */
static int consent_change(struct work *w, veil_channel *ch, int i, int grant)
{
    int64_t deadline = veil_now_ms() + RETRY_MS;
    int tries = 0;
    for (;;) {
        veil_status st;
        veil_err err;
        if (grant) {
            Veil__Gateway__GrantConsentPayload p = VEIL__GATEWAY__GRANT_CONSENT_PAYLOAD__INIT;
            Veil__Gateway__GrantConsentResponse *r;
            p.app_id = (char *)CONSENT_APP;
            p.attributes = (char **)PROVINCE;
            p.n_attributes = 1;
            p.purpose = "crash test";
            p.expires_at_ms = veil_now_ms() + 86400000LL;
            err = signed_call(ch, consent_w[i], "GrantConsent", &p.base, &r, &st);
            if (!err)
                protobuf_c_message_free_unpacked(&r->base, NULL);
        } else {
            Veil__Gateway__WithdrawConsentPayload p = VEIL__GATEWAY__WITHDRAW_CONSENT_PAYLOAD__INIT;
            Veil__Gateway__WithdrawConsentResponse *r;
            p.app_id = (char *)CONSENT_APP;
            err = signed_call(ch, consent_w[i], "WithdrawConsent", &p.base, &r, &st);
            if (!err)
                protobuf_c_message_free_unpacked(&r->base, NULL);
        }
        if (!err)
            return 0;
        /*
         * A withdrawal retried after a failure may find nothing left to
         * withdraw: the failed attempt took effect (its reply was lost in
         * the crash). That is the state asked for.
         */
        if (!grant && err == VEIL_ERR_NOT_FOUND && tries > 0)
            return 0;
        tries++;
        w->consent_failed++;
        note_failure(w, err, &st);
        if (veil_now_ms() > deadline)
            return -1;
        h_sleep_ms(100);
    }
}

static void *consent_worker(void *arg)
{
    struct work *w = arg;
    veil_channel *ch = load_channel(&S, "none", &veil__gateway__wallet__descriptor);
    for (int n = 0; ch && !atomic_load(&w->stop); n++) {
        int i = n % CONSENT_CITIZENS;
        int grant = w->consent_state[i] != 1;
        if (consent_change(w, ch, i, grant) != 0) {
            w->consent_state[i] = -2; /* never acknowledged: unknown, reported as a failure */
            break;
        }
        w->consent_state[i] = grant;
        w->consent_acked++;
        atomic_fetch_add(&w->consents_done, 1);
        h_sleep_ms(20);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    return NULL;
}

static void *revocation_worker(void *arg)
{
    struct work *w = arg;
    veil_channel *ch = load_channel(&S, "none", &veil__gateway__wallet__descriptor);
    while (ch && !atomic_load(&w->stop) && w->next_revoke < w->end_revoke) {
        int i = w->next_revoke;
        Veil__Gateway__RevokeDevicePayload p = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
        Veil__Gateway__StepUpResult *r;
        veil_status st;
        p.device_id = old_phone[i]->device_id;
        veil_err err = signed_call(ch, new_phone[i], "RevokeDevice", &p.base, &r, &st);
        if (!err) {
            /* the newer phone outranks the older: done, never pending */
            w->revoked[i] = strcmp(r->status, "done") == 0;
            if (!w->revoked[i])
                snprintf(w->odd_failure, sizeof w->odd_failure, "revocation %d: %s", i, r->status);
            protobuf_c_message_free_unpacked(&r->base, NULL);
            w->next_revoke++;
        } else {
            w->revoke_failed++;
            note_failure(w, err, &st);
            w->next_revoke++; /* unknown outcome: not counted as acknowledged */
        }
        atomic_fetch_add(&w->revokes_done, 1);
        h_sleep_ms(300);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    return NULL;
}

static void work_start(struct work *w, int first_revoke, int end_revoke)
{
    memset(w, 0, sizeof *w);
    w->next_revoke = first_revoke;
    w->end_revoke = end_revoke;
    for (int i = 0; i < CONSENT_CITIZENS; i++)
        w->consent_state[i] = -1;
    ck_assert_int_eq(pthread_create(&w->logins, NULL, login_worker, w), 0);
    ck_assert_int_eq(pthread_create(&w->consents, NULL, consent_worker, w), 0);
    ck_assert_int_eq(pthread_create(&w->revocations, NULL, revocation_worker, w), 0);
}

static void work_stop(struct work *w)
{
    atomic_store(&w->stop, 1);
    pthread_join(w->logins, NULL);
    pthread_join(w->consents, NULL);
    pthread_join(w->revocations, NULL);
}

/* The crash: PostgreSQL stopped in immediate mode, services killed, everything back. */
static void crash(int kill_gateway)
{
    h_proc *internal[] = {&S.vault, &S.consent, &S.revocation, &S.pseudonym};
    int which[] = {H_VAULT, H_CONSENT, H_REVOCATION, H_PSEUDONYM};
    h_pg_crash();
    for (int i = 0; i < 4; i++)
        h_kill(internal[i]);
    if (kill_gateway)
        h_kill(&S.gateway);
    h_sleep_ms(500);
    h_pg_start();
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(h_stack_restart(&S, which[i]), 0);
    if (kill_gateway)
        ck_assert_int_eq(h_stack_restart(&S, H_GATEWAY), 0);
}

/* Retries a check-side call through an outage's tail: UNAVAILABLE for up to 20 s. */
#define RETRYING(call)                                                                             \
    ({                                                                                             \
        int64_t until_ = veil_now_ms() + 20000;                                                    \
        veil_err e_;                                                                               \
        while ((e_ = (call)) == VEIL_ERR_UNAVAILABLE && veil_now_ms() < until_)                    \
            h_sleep_ms(200);                                                                       \
        e_;                                                                                        \
    })

/* ticket_verified entries for the login app in w's access log (chain checked). */
static int logged_logins(veil_channel *ch, const vw_wallet *w)
{
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *r = NULL;
    veil_status st;
    ck_assert_int_eq(RETRYING(signed_call(ch, w, "AccessLog", &p.base, &r, &st)), VEIL_OK);
    ck_assert_msg(r->chain_valid, "chain broken at %lld", (long long)r->first_bad_seq);
    int n = 0;
    for (size_t i = 0; i < r->n_entries; i++)
        n += !strcmp(r->entries[i]->action, "ticket_verified") &&
             !strcmp(r->entries[i]->app_id, LOGIN_APP);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return n;
}

/* Whether a login of w at the consent app, asking for province, gets it. */
static int province_released(veil_channel *ch, const vw_wallet *w)
{
    unsigned char challenge[32];
    Veil__Gateway__BeginLoginRequest bl = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *b;
    Veil__Gateway__CompleteLoginRequest cl = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    Veil__Gateway__CompleteLoginResponse *c;
    veil_status st;
    char *ticket;
    ck_assert_int_eq(
        RETRYING(veil_channel_call(ch, "BeginLogin", &bl.base, NULL, LOAD_TIMEOUT_MS, &b, &st)),
        VEIL_OK);
    memcpy(challenge, b->challenge.data, 32);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    ck_assert_int_eq(vw_ticket(w, CONSENT_APP, challenge, 32, veil_now_ms(), &ticket), VEIL_OK);
    cl.ticket = ticket;
    cl.attributes = (char **)PROVINCE;
    cl.n_attributes = 1;
    veil_err err = veil_channel_call(ch, "CompleteLogin", &cl.base, NULL, LOAD_TIMEOUT_MS, &c, &st);
    free(ticket);
    ck_assert_msg(err == VEIL_OK, "login at %s: %s", CONSENT_APP, st.message);
    int released = c->n_released == 1 && !strcmp(c->released[0], "province");
    protobuf_c_message_free_unpacked(&c->base, NULL);
    return released;
}

/* The status of a login by the old phone (the check retries through the outage's tail). */
static veil_err old_phone_login(veil_channel *ch, const vw_wallet *w)
{
    veil_status st;
    return RETRYING(load_login(ch, LOGIN_APP, w, NULL, 0, &st));
}

/* Whether the citizen's device list (read with the newer phone) says the old one is revoked. */
static int listed_revoked(veil_channel *ch, int i)
{
    Veil__Gateway__ListDevicesPayload p = VEIL__GATEWAY__LIST_DEVICES_PAYLOAD__INIT;
    Veil__Gateway__ListDevicesResponse *r;
    veil_status st;
    ck_assert_int_eq(RETRYING(signed_call(ch, new_phone[i], "ListDevices", &p.base, &r, &st)),
                     VEIL_OK);
    int revoked = 0;
    for (size_t k = 0; k < r->n_devices; k++)
        if (!strcmp(r->devices[k]->device_id, old_phone[i]->device_id))
            revoked = !strcmp(r->devices[k]->status, "revoked");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return revoked;
}

static int logins_before_round[LOGIN_CITIZENS];

static void verify(const struct work *w, const char *round)
{
    veil_channel *wallet = load_channel(&S, "none", &veil__gateway__wallet__descriptor);
    veil_channel *shop = load_channel(&S, "app/shop.jiale", &veil__gateway__login__descriptor);
    veil_channel *tax = load_channel(&S, "app/gov.tax", &veil__gateway__login__descriptor);
    ck_assert(wallet && shop && tax);
    ck_assert_msg(w->failures_not_unavailable == 0,
                  "%s: %d calls failed otherwise than "
                  "UNAVAILABLE, e.g. %s",
                  round, w->failures_not_unavailable, w->odd_failure);

    /* logins: acknowledged <= logged <= tried, per citizen */
    int acked = 0, logged = 0, tried = 0;
    for (int i = 0; i < LOGIN_CITIZENS; i++) {
        int n = logged_logins(wallet, login_w[i]) - logins_before_round[i];
        ck_assert_msg(n >= w->login_acked[i],
                      "%s: citizen %d: %d logins acknowledged, %d in the access log", round, i,
                      w->login_acked[i], n);
        ck_assert_msg(n <= w->login_tried[i], "%s: citizen %d: %d logged, only %d tried", round, i,
                      n, w->login_tried[i]);
        acked += w->login_acked[i];
        logged += n;
        tried += w->login_tried[i];
        logins_before_round[i] += n;
    }

    /* consent: the last acknowledged change decides the next release */
    int consent_checked = 0;
    for (int i = 0; i < CONSENT_CITIZENS; i++) {
        ck_assert_msg(w->consent_state[i] != -2, "%s: a consent change was never acknowledged",
                      round);
        if (w->consent_state[i] < 0)
            continue;
        ck_assert_msg(province_released(tax, consent_w[i]) == w->consent_state[i],
                      "%s: citizen %d's acknowledged consent (%s) is not in force", round, i,
                      w->consent_state[i] ? "granted" : "withdrawn");
        consent_checked++;
    }

    /* revocations: the old phone stays refused, and is listed as revoked */
    int revoked = 0;
    for (int i = 0; i < REVOKE_CITIZENS; i++) {
        if (!w->revoked[i])
            continue;
        ck_assert_msg(old_phone_login(shop, old_phone[i]) == VEIL_ERR_DENIED,
                      "%s: revoked phone %d logs in after the crash", round, i);
        ck_assert_msg(listed_revoked(wallet, i), "%s: revoked phone %d is listed active", round, i);
        revoked++;
    }
    fprintf(stderr,
            "faults_crash %s: logins %d acknowledged, %d in access logs (%d tried); consent "
            "changes %d acknowledged (%d failed attempts), %d citizens' final state in force; "
            "revocations %d acknowledged and in force (%d failed, of %d tried)\n",
            round, acked, logged, tried, w->consent_acked, w->consent_failed, consent_checked,
            revoked, w->revoke_failed, atomic_load(&w->revokes_done));
    ck_assert_msg(acked > 0 && w->consent_acked > 0 && revoked > 0,
                  "%s: the work did not run (logins %d, consent %d, revocations %d)", round, acked,
                  w->consent_acked, revoked);
    veil_channel_free(tax);
    veil_channel_free(shop);
    veil_channel_free(wallet);
}

static void round_with(int kill_gateway, const char *name, int first_revoke, int end_revoke)
{
    struct work *w = calloc(1, sizeof *w);
    ck_assert_ptr_nonnull(w);
    work_start(w, first_revoke, end_revoke);
    /* the work is under way: some of each acknowledged */
    int64_t until = veil_now_ms() + 60000;
    while ((atomic_load(&w->logins_done) < 10 || atomic_load(&w->consents_done) < 4 ||
            atomic_load(&w->revokes_done) < 5) &&
           veil_now_ms() < until)
        h_sleep_ms(50);
    crash(kill_gateway);
    h_sleep_ms(3000); /* work goes on after the crash */
    work_stop(w);
    verify(w, name);
    free(w);
}

START_TEST(test_crash_loses_nothing_acknowledged)
{
    /* round 1: the gateway and its caches survive; round 2: the gateway is killed too */
    round_with(0, "services killed", 0, REVOKE_CITIZENS / 2);
    round_with(1, "gateway killed too", REVOKE_CITIZENS / 2, REVOKE_CITIZENS);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_crash_loses_nothing_acknowledged, NULL};
    const h_case cases[] = {{"crash", 600, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("faults_crash", cases));
}
