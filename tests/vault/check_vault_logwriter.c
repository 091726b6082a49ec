/*
 * check_vault_logwriter.c - the access log's group commit (logwriter.c)
 * over real gRPC and PostgreSQL: many citizens' logins and releases at once
 * still give every citizen one whole chain (including one citizen's four
 * devices racing for the same head), and the appends were really grouped;
 * every acknowledged login's entry is still there after the vault is killed
 * mid-load and restarted; an entry the database refuses fails only its own
 * login, not the others committed with it; and the vault without group commit
 * (VAULT_LOG_BATCH_MAX=0) keeps the same guarantees.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/codec.h"
#include "vtest.h"

enum { CITIZENS = 6, DEVICES0 = 4, ROUNDS = 20 };

struct citizen {
    vt_device dev[DEVICES0]; /* citizen 0 has four phones, the others one */
    int n_dev;
    unsigned char subject[32];
};

struct job {
    vt *t;
    int citizen;
    vt_device d;
    int release; /* ReleaseAttributes instead of logins */
    unsigned char subject[32];
    int rounds;
    _Atomic int *stop;
    _Atomic int ok; /* read by the crash test while the job runs */
};

static void enrol_all(vt *t, struct citizen *c)
{
    veil_status st;
    for (int i = 0; i < CITIZENS; i++) {
        char id[19];
        vt_id_number(id, "510104", 1979 + i, 6, 15, 100 + i);
        c[i].n_dev = i == 0 ? DEVICES0 : 1;
        for (int k = 0; k < c[i].n_dev; k++) {
            char rid[32];
            snprintf(rid, sizeof rid, "lw-%d-%d", i, k);
            vt_new_device(&c[i].dev[k]);
            ck_assert_int_eq(vt_enrol(t, rid, id, "孙二", &c[i].dev[k], NULL, &st), VEIL_OK);
        }
        /* learn the subject with a first login: entry 1 of every chain */
        ck_assert_int_eq(vt_login(t, &c[i].dev[0], "chat.wechat", &st), VEIL_OK);
        memcpy(c[i].subject, c[i].dev[0].subject, 32);
    }
}

/* A vault (with the extra environment env) and the enrolled citizens, each logged in once. */
static void start_with_citizens(vt *t, const char *const *env, struct citizen *c)
{
    vt_start(t, env);
    enrol_all(t, c);
}

static void *run_job(void *arg)
{
    struct job *j = arg;
    static const char *const names[] = {"age_over_18", "province"};
    for (int i = 0; i < j->rounds && !(j->stop && atomic_load(j->stop)); i++) {
        veil_status st;
        if (j->release) {
            /* each release needs its own login: the capability it mints is single use */
            Veil__Vault__ReleaseAttributesResponse *r;
            if (vt_login(j->t, &j->d, "shop.taobao", &st) == VEIL_OK &&
                vt_release(j->t, j->subject, "shop.taobao", names, 2, "delivery", &r, &st) ==
                    VEIL_OK) {
                protobuf_c_message_free_unpacked(&r->base, NULL);
                j->ok++;
            }
        } else if (vt_login(j->t, &j->d, i % 2 ? "chat.wechat" : "game.tianfeng", &st) == VEIL_OK) {
            j->ok++;
        }
    }
    veil_client_thread_done();
    return NULL;
}

/* Every device of every citizen logging in at once, plus releases for two of them. */
static int make_jobs(vt *t, struct citizen *c, struct job *jobs, int rounds, _Atomic int *stop)
{
    int n = 0;
    for (int i = 0; i < CITIZENS; i++)
        for (int k = 0; k < c[i].n_dev; k++)
            jobs[n++] = (struct job){
                .t = t, .citizen = i, .d = c[i].dev[k], .rounds = rounds, .stop = stop};
    for (int i = 1; i <= 2; i++) {
        jobs[n] = (struct job){
            .t = t, .citizen = i, .d = c[i].dev[0], .release = 1, .rounds = rounds, .stop = stop};
        memcpy(jobs[n++].subject, c[i].subject, 32);
    }
    return n;
}

static void run_jobs(struct job *jobs, int n)
{
    pthread_t th[CITIZENS + DEVICES0 + 2];
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* Entries every citizen's log starts with: one device_added per phone, then the first login. */
static int first_entries(int i)
{
    return (i == 0 ? DEVICES0 : 1) + 1;
}

/* Entries acknowledged for citizen i (including its enrolments and first login). */
static int acknowledged(const struct job *jobs, int n, int i)
{
    int count = first_entries(i);
    for (int k = 0; k < n; k++)
        if (jobs[k].citizen == i)
            count += jobs[k].release ? 2 * jobs[k].ok : jobs[k].ok; /* a login, then a release */
    return count;
}

/* Entries of citizen i after make_jobs' jobs all succeeded: the enrolments and first
 * login, then every device's logins, and the releases of citizens 1 and 2 (each after a login). */
static size_t expected_entries(int i)
{
    return (size_t)first_entries(i) + (size_t)ROUNDS * (i == 0 ? DEVICES0 : (i <= 2 ? 3 : 1));
}

/* The citizen's log: a valid chain of seq 1..n; returns n. */
static size_t whole_chain(vt *t, const unsigned char *subject)
{
    Veil__Vault__ListAccessLogResponse *log;
    veil_status st;
    ck_assert_int_eq(vt_subject_call(t, "ListAccessLog", subject, 32, &log, &st), VEIL_OK);
    ck_assert_msg(log->chain_valid, "chain broken at %lld", (long long)log->first_bad_seq);
    for (size_t i = 0; i < log->n_entries; i++)
        ck_assert_int_eq(log->entries[i]->seq, (int64_t)i + 1);
    size_t n = log->n_entries;
    protobuf_c_message_free_unpacked(&log->base, NULL);
    return n;
}

static void concurrent_chains(const char *const *env, int expect_groups)
{
    vt t;
    struct citizen c[CITIZENS];
    struct job jobs[CITIZENS + DEVICES0 + 2];
    start_with_citizens(&t, env, c);
    int n = make_jobs(&t, c, jobs, ROUNDS, NULL);
    run_jobs(jobs, n);
    long long total = 0;
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(jobs[i].ok, ROUNDS);
    /* no capability was lost to the ring, so no release logged in again (vtest.h) */
    ck_assert_uint_lt(t.n_caps, VT_CAPS);
    for (int i = 0; i < CITIZENS; i++) {
        size_t expect = expected_entries(i);
        ck_assert_uint_eq(whole_chain(&t, c[i].subject), expect);
        total += (long long)expect;
    }
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_log"), total);
    h_proc proc = t.proc;
    vt_stop(&t);
    long long batches = 0, entries = 0;
    int found = vt_group_stats(&proc, &batches, &entries);
    if (expect_groups) {
        ck_assert_msg(found, "the vault did not report its group commits");
        /*
         * every login and release append was in one batch once (a lost race
         * then retries alone); the enrolments' device_added entries commit
         * with their enrolment, outside the group commit
         */
        ck_assert_int_eq(entries, total - (DEVICES0 + CITIZENS - 1));
        ck_assert_msg(batches < entries,
                      "no two appends shared a commit (%lld batches, %lld "
                      "entries)",
                      batches, entries);
    } else {
        ck_assert_msg(!found, "VAULT_LOG_BATCH_MAX=0 still grouped appends");
    }
}

START_TEST(test_group_commit_keeps_every_chain)
{
    concurrent_chains(NULL, 1);
}
END_TEST

START_TEST(test_without_group_commit)
{
    const char *env[] = {"VAULT_LOG_BATCH_MAX=0", NULL};
    concurrent_chains(env, 0);
}
END_TEST

START_TEST(test_acknowledged_entries_survive_a_crash)
{
    vt t;
    struct citizen c[CITIZENS];
    struct job jobs[CITIZENS + DEVICES0 + 2];
    _Atomic int stop = 0;
    start_with_citizens(&t, NULL, c);
    int n = make_jobs(&t, c, jobs, 1000000, &stop);
    pthread_t th[CITIZENS + DEVICES0 + 2];
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    /* let some commits happen, then kill the vault with calls in flight */
    for (int waited = 0; waited < 10000; waited += 20) {
        int ok = 0;
        for (int i = 0; i < n; i++)
            ok += jobs[i].ok;
        if (ok >= 60)
            break;
        usleep(20000);
    }
    h_proc dead = t.proc;
    h_kill(&dead);
    t.proc.pid = 0;
    atomic_store(&stop, 1);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    vt_crash_restart(&t);
    int acked = 0;
    for (int i = 0; i < CITIZENS; i++) {
        size_t stored = whole_chain(&t, c[i].subject);
        int want = acknowledged(jobs, n, i);
        acked += want;
        /* more may be stored (committed, reply lost in the kill), never fewer */
        ck_assert_msg((int)stored >= want, "citizen %d: %zu entries stored, %d acknowledged", i,
                      stored, want);
    }
    ck_assert_int_ge(acked, 60);
    /* and logging in goes on where the chains ended */
    veil_status st;
    ck_assert_int_eq(vt_login(&t, &c[3].dev[0], "chat.wechat", &st), VEIL_OK);
    whole_chain(&t, c[3].subject);
    vt_stop(&t);
}
END_TEST

START_TEST(test_a_refused_entry_fails_only_its_login)
{
    vt t;
    struct citizen c[CITIZENS];
    struct job jobs[CITIZENS + DEVICES0 + 2];
    start_with_citizens(&t, NULL, c);
    /* the database refuses every further entry of citizen 4 */
    char hex[65], sql[1024];
    veil_hex_encode(hex, sizeof hex, c[4].subject, 32);
    snprintf(sql, sizeof sql,
             "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "IF NEW.subject_ref = '\\x%s'::bytea THEN RAISE EXCEPTION 'refused'; END IF; "
             "RETURN NEW; END $$; CREATE TRIGGER refuse BEFORE INSERT ON access_log "
             "FOR EACH ROW EXECUTE FUNCTION refuse()",
             hex);
    PQclear(vt_sql(&t, sql));
    int n = make_jobs(&t, c, jobs, ROUNDS, NULL);
    run_jobs(jobs, n);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(jobs[i].ok, jobs[i].citizen == 4 ? 0 : ROUNDS);
    ck_assert_uint_lt(t.n_caps, VT_CAPS); /* no release logged in again (vtest.h) */
    for (int i = 0; i < CITIZENS; i++)
        ck_assert_uint_eq(whole_chain(&t, c[i].subject),
                          i == 4 ? (size_t)first_entries(4) : expected_entries(i));
    vt_stop(&t);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_group_commit_keeps_every_chain, test_without_group_commit,
                                  test_acknowledged_entries_survive_a_crash,
                                  test_a_refused_entry_fails_only_its_login, NULL};
    const h_case cases[] = {{"logwriter", 120, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("vault_logwriter", cases));
}
