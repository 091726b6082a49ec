/*
 * check_pg.c - libveil's PostgreSQL layer and migration runner against the
 * real cluster of tests/run: migrations idempotent and version-guarded,
 * reconnection after the server restarts, SQLSTATE mapping, binary results.
 * Runs serially: it restarts the shared cluster.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "veil/migrate.h"
#include "veil/pg.h"

static const veil_migration two[] = {
    {1, "things", "CREATE TABLE things (id bigint PRIMARY KEY, name text NOT NULL);"},
    {2, "more", "ALTER TABLE things ADD COLUMN note text; CREATE INDEX ON things (name);"},
};

START_TEST(test_migrations_apply_once)
{
    char *db = h_db_create("mig");
    char err[512];
    int applied = -1;
    ck_assert_int_eq(veil_migrate_check(db, "svc", two, 2, err, sizeof err), VEIL_ERR_PRECONDITION);
    ck_assert_ptr_nonnull(strstr(err, "at version 0, this binary needs 2: run `svc migrate`"));
    ck_assert_int_eq(veil_migrate_apply(db, "svc", two, 2, &applied, err, sizeof err), VEIL_OK);
    ck_assert_int_eq(applied, 2);
    ck_assert_int_eq(veil_migrate_apply(db, "svc", two, 2, &applied, err, sizeof err), VEIL_OK);
    ck_assert_int_eq(applied, 0); /* idempotent */
    ck_assert_int_eq(veil_migrate_check(db, "svc", two, 2, err, sizeof err), VEIL_OK);
    ck_assert_int_eq(h_db_exec(db, "INSERT INTO things VALUES (1, 'a', 'n')"), 0);
    /* an older binary (knows only migration 1) refuses the newer database */
    ck_assert_int_eq(veil_migrate_apply(db, "svc", two, 1, &applied, err, sizeof err),
                     VEIL_ERR_PRECONDITION);
    ck_assert_ptr_nonnull(strstr(err, "newer than this binary"));
    ck_assert_int_eq(veil_migrate_check(db, "svc", two, 1, err, sizeof err), VEIL_ERR_PRECONDITION);
    /* a migration edited after it was applied is refused */
    veil_migration edited[] = {two[0], {2, "more", "ALTER TABLE things ADD COLUMN other text;"}};
    ck_assert_int_eq(veil_migrate_apply(db, "svc", edited, 2, &applied, err, sizeof err),
                     VEIL_ERR_PRECONDITION);
    ck_assert_ptr_nonnull(strstr(err, "different script"));
    free(db);
}
END_TEST

START_TEST(test_failed_migration_rolls_back)
{
    char *db = h_db_create("migfail");
    char err[512];
    int applied;
    veil_migration bad[] = {two[0],
                            {2, "broken", "CREATE TABLE half (x int); SELECT no_such_function();"}};
    ck_assert_int_eq(veil_migrate_apply(db, "svc", bad, 2, &applied, err, sizeof err),
                     VEIL_ERR_INTERNAL);
    ck_assert_int_eq(applied, 1);
    ck_assert_ptr_nonnull(strstr(err, "migration 002_broken failed"));
    /* nothing of migration 2 stayed: its table is absent and it is not recorded */
    ck_assert_int_eq(h_db_exec(db, "SELECT 1 FROM half"), -1);
    ck_assert_int_eq(veil_migrate_check(db, "svc", two, 1, err, sizeof err), VEIL_OK);
    free(db);
}
END_TEST

enum { ST_PING, ST_INSERT, ST_GET, ST_TYPES, ST_CHILD, ST_DIV, ST_PID, ST_DIE };
static const veil_pg_stmt stmts[] = {
    [ST_PING] = {"ping", "SELECT 42::int8"},
    [ST_INSERT] = {"ins", "INSERT INTO t (id, blob, label) VALUES ($1::int8, $2, $3)"},
    [ST_GET] = {"get", "SELECT id, blob, label FROM t WHERE id = $1::int8"},
    [ST_TYPES] = {"types", "SELECT (-7)::int2, (-70000)::int4, (-5000000000)::int8, true, "
                           "'2024-02-29 16:00:00+00'::timestamptz, NULL::text"},
    [ST_CHILD] = {"child", "INSERT INTO c (parent) VALUES ($1::int8)"},
    [ST_DIV] = {"div", "SELECT 1 / $1::int8"},
    [ST_PID] = {"pid", "SELECT pg_backend_pid()::int8"},
    [ST_DIE] = {"die", "SELECT pg_terminate_backend(pg_backend_pid())"},
};
#define N_STMTS (sizeof stmts / sizeof stmts[0])

static veil_db *open_db(char **ci)
{
    *ci = h_db_create("pg");
    ck_assert_int_eq(h_db_exec(*ci, "CREATE TABLE t (id bigint PRIMARY KEY, blob bytea, label text "
                                    "CHECK (label <> 'forbidden'));"
                                    "CREATE TABLE c (parent bigint REFERENCES t (id))"),
                     0);
    veil_db *db;
    ck_assert_int_eq(veil_db_new(*ci, stmts, N_STMTS, &db), VEIL_OK);
    return db;
}

static veil_err run(veil_db *db, int stmt, const veil_pg_param *p, int n, PGresult **r)
{
    veil_pg *c;
    veil_err err = veil_db_conn(db, &c);
    if (err)
        return err;
    return veil_pg_exec(c, stmt, p, n, r);
}

START_TEST(test_binary_params_and_results)
{
    char *ci;
    veil_db *db = open_db(&ci);
    PGresult *r;
    const unsigned char blob[] = {0, 1, 2, 0xff, 0};
    veil_pg_param p[] = {vp_i64(-123456789012LL), vp_bytes(blob, sizeof blob),
                         vp_text("Robert'); DROP TABLE t;--")};
    ck_assert_int_eq(run(db, ST_INSERT, p, 3, &r), VEIL_OK);
    PQclear(r);
    veil_pg_param key = vp_i64(-123456789012LL);
    ck_assert_int_eq(run(db, ST_GET, &key, 1, &r), VEIL_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_int_eq(veil_pg_get_i64(r, 0, 0), -123456789012LL);
    size_t len;
    const unsigned char *b = veil_pg_get_bytes(r, 0, 1, &len);
    ck_assert_uint_eq(len, sizeof blob);
    ck_assert_mem_eq(b, blob, sizeof blob);
    /* the SQL metacharacters stayed data */
    ck_assert_str_eq(veil_pg_get_text(r, 0, 2), "Robert'); DROP TABLE t;--");
    PQclear(r);

    ck_assert_int_eq(run(db, ST_TYPES, NULL, 0, &r), VEIL_OK);
    ck_assert_int_eq(veil_pg_get_i64(r, 0, 0), -7);
    ck_assert_int_eq(veil_pg_get_i64(r, 0, 1), -70000);
    ck_assert_int_eq(veil_pg_get_i64(r, 0, 2), -5000000000LL);
    ck_assert_int_eq(veil_pg_get_bool(r, 0, 3), 1);
    ck_assert_int_eq(veil_pg_get_time_ms(r, 0, 4), 1709222400000LL);
    ck_assert(veil_pg_is_null(r, 0, 5));
    ck_assert_str_eq(veil_pg_get_text(r, 0, 5), "");
    PQclear(r);
    veil_db_free(db);
    free(ci);
}
END_TEST

START_TEST(test_sqlstate_mapping)
{
    char *ci;
    veil_db *db = open_db(&ci);
    PGresult *r;
    veil_pg_param p[] = {vp_i64(1), vp_bytes("", 0), vp_text("x")};
    ck_assert_int_eq(run(db, ST_INSERT, p, 3, &r), VEIL_OK);
    PQclear(r);
    ck_assert_int_eq(run(db, ST_INSERT, p, 3, &r), VEIL_ERR_EXISTS); /* 23505 */
    ck_assert_ptr_null(r);
    veil_pg_param child = vp_i64(99);
    ck_assert_int_eq(run(db, ST_CHILD, &child, 1, &r), VEIL_ERR_PRECONDITION); /* 23503 */
    veil_pg_param bad[] = {vp_i64(2), vp_bytes("", 0), vp_text("forbidden")};
    ck_assert_int_eq(run(db, ST_INSERT, bad, 3, &r), VEIL_ERR_INVALID); /* 23514 */
    veil_pg_param zero = vp_i64(0);
    ck_assert_int_eq(run(db, ST_DIV, &zero, 1, &r), VEIL_ERR_INVALID); /* 22012 */
    /* the connection is still usable after each error */
    ck_assert_int_eq(run(db, ST_PING, NULL, 0, &r), VEIL_OK);
    PQclear(r);

    ck_assert_int_eq(veil_pg_sqlstate_err("08006"), VEIL_ERR_UNAVAILABLE);
    ck_assert_int_eq(veil_pg_sqlstate_err("57P01"), VEIL_ERR_UNAVAILABLE);
    ck_assert_int_eq(veil_pg_sqlstate_err("40001"), VEIL_ERR_ABORTED);
    ck_assert_int_eq(veil_pg_sqlstate_err("40P01"), VEIL_ERR_ABORTED);
    ck_assert_int_eq(veil_pg_sqlstate_err("57014"), VEIL_ERR_DEADLINE);
    ck_assert_int_eq(veil_pg_sqlstate_err("53300"), VEIL_ERR_UNAVAILABLE);
    ck_assert_int_eq(veil_pg_sqlstate_err("42P01"), VEIL_ERR_INTERNAL);
    ck_assert_int_eq(veil_pg_sqlstate_err(NULL), VEIL_ERR_INTERNAL);
    veil_db_free(db);
    free(ci);
}
END_TEST

START_TEST(test_transaction_rollback)
{
    char *ci;
    veil_db *db = open_db(&ci);
    veil_pg *c;
    PGresult *r;
    ck_assert_int_eq(veil_db_conn(db, &c), VEIL_OK);
    ck_assert_int_eq(veil_pg_begin(c), VEIL_OK);
    veil_pg_param p[] = {vp_i64(5), vp_bytes("", 0), vp_text("in tx")};
    ck_assert_int_eq(veil_pg_exec(c, ST_INSERT, p, 3, &r), VEIL_OK);
    PQclear(r);
    veil_pg_rollback(c);
    veil_pg_param key = vp_i64(5);
    ck_assert_int_eq(veil_pg_exec(c, ST_GET, &key, 1, &r), VEIL_OK);
    ck_assert_int_eq(PQntuples(r), 0);
    PQclear(r);
    /* a transaction left open by a careless caller is rolled back on the next checkout */
    ck_assert_int_eq(veil_pg_begin(c), VEIL_OK);
    ck_assert_int_eq(veil_pg_exec(c, ST_INSERT, p, 3, &r), VEIL_OK);
    PQclear(r);
    ck_assert_int_eq(veil_db_conn(db, &c), VEIL_OK);
    ck_assert_int_eq(veil_pg_exec(c, ST_GET, &key, 1, &r), VEIL_OK);
    ck_assert_int_eq(PQntuples(r), 0);
    PQclear(r);
    veil_db_free(db);
    free(ci);
}
END_TEST

START_TEST(test_begin_and_end)
{
    char *ci;
    veil_db *db = open_db(&ci);
    veil_pg *c;
    PGresult *r;
    veil_pg_param p[] = {vp_i64(7), vp_bytes("", 0), vp_text("kept")};
    veil_pg_param key = vp_i64(7);
    /* an error: veil_pg_end rolls back and hands the error on */
    ck_assert_int_eq(veil_db_begin(db, &c), VEIL_OK);
    ck_assert_int_eq(veil_pg_exec(c, ST_INSERT, p, 3, &r), VEIL_OK);
    PQclear(r);
    ck_assert_int_eq(veil_pg_end(c, VEIL_ERR_PRECONDITION), VEIL_ERR_PRECONDITION);
    ck_assert_int_eq(veil_pg_exec(c, ST_GET, &key, 1, &r), VEIL_OK);
    ck_assert_int_eq(PQntuples(r), 0);
    PQclear(r);
    /* success: it commits */
    ck_assert_int_eq(veil_db_begin(db, &c), VEIL_OK);
    ck_assert_int_eq(veil_pg_exec(c, ST_INSERT, p, 3, &r), VEIL_OK);
    PQclear(r);
    ck_assert_int_eq(veil_pg_end(c, VEIL_OK), VEIL_OK);
    veil_db_thread_done(db); /* a fresh connection sees it */
    ck_assert_int_eq(run(db, ST_GET, &key, 1, &r), VEIL_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    PQclear(r);
    veil_db_free(db);
    free(ci);
}
END_TEST

static veil_db *shared_db;
static int64_t thread_pid;

static void *other_thread(void *arg)
{
    PGresult *r;
    if (run(shared_db, ST_PID, NULL, 0, &r) == VEIL_OK) {
        thread_pid = veil_pg_get_i64(r, 0, 0);
        PQclear(r);
    }
    return NULL; /* the thread's connection is closed by its destructor */
}

START_TEST(test_connection_per_thread)
{
    char *ci;
    shared_db = open_db(&ci);
    PGresult *r;
    ck_assert_int_eq(run(shared_db, ST_PID, NULL, 0, &r), VEIL_OK);
    int64_t mine = veil_pg_get_i64(r, 0, 0);
    PQclear(r);
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    ck_assert(thread_pid > 0 && thread_pid != mine);
    veil_db_free(shared_db);
    free(ci);
}
END_TEST

START_TEST(test_reconnect_after_restart)
{
    char *ci;
    veil_db *db = open_db(&ci);
    PGresult *r;
    ck_assert_int_eq(run(db, ST_PING, NULL, 0, &r), VEIL_OK);
    ck_assert_int_eq(veil_pg_get_i64(r, 0, 0), 42);
    PQclear(r);

    h_pg_restart();
    /* the connection the restart closed while idle is replaced: the next call succeeds */
    ck_assert_int_eq(run(db, ST_PING, NULL, 0, &r), VEIL_OK);
    ck_assert_int_eq(veil_pg_get_i64(r, 0, 0), 42);
    PQclear(r);
    /* a statement whose connection dies under it fails as retryable ... */
    ck_assert_int_eq(run(db, ST_DIE, NULL, 0, &r), VEIL_ERR_UNAVAILABLE);
    /* ... and the next one reconnects, re-prepares and succeeds */
    ck_assert_int_eq(run(db, ST_PING, NULL, 0, &r), VEIL_OK);
    ck_assert_int_eq(veil_pg_get_i64(r, 0, 0), 42);
    PQclear(r);
    veil_db_free(db);
    free(ci);
}
END_TEST

/* Terminates the backend behind db's connection on this thread from another session. */
static void terminate_my_backend(veil_db *db, const char *ci)
{
    PGresult *r;
    ck_assert_int_eq(run(db, ST_PID, NULL, 0, &r), VEIL_OK);
    int64_t pid = veil_pg_get_i64(r, 0, 0);
    PQclear(r);
    char sql[128];
    /* the second argument waits (up to 5 s) until the backend is gone */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld, 5000)", (long long)pid);
    ck_assert_int_eq(h_db_exec(ci, sql), 0);
}

/*
 * No liveness probe before each statement (issue 15): a backend killed under
 * a busy connection costs at most that connection's next statement, which
 * fails cleanly as retryable; the call after reconnects and succeeds.  A
 * BEGIN on such a connection is retried on a new one and succeeds.
 */
START_TEST(test_terminated_backend)
{
    char *ci;
    veil_db *db = open_db(&ci);
    PGresult *r;
    for (int round = 0; round < 3; round++) {
        terminate_my_backend(db, ci);
        veil_err err = run(db, ST_PING, NULL, 0, &r);
        ck_assert_msg(err == VEIL_OK || err == VEIL_ERR_UNAVAILABLE, "first call after: %s",
                      veil_err_name(err));
        if (!err)
            PQclear(r);
        ck_assert_int_eq(run(db, ST_PING, NULL, 0, &r), VEIL_OK);
        ck_assert_int_eq(veil_pg_get_i64(r, 0, 0), 42);
        PQclear(r);
    }
    /* a transaction begun on a killed backend's connection: BEGIN goes to a new one */
    for (int round = 0; round < 3; round++) {
        terminate_my_backend(db, ci);
        veil_pg *c;
        ck_assert_int_eq(veil_db_begin(db, &c), VEIL_OK);
        ck_assert_int_eq(veil_pg_exec(c, ST_PING, NULL, 0, &r), VEIL_OK);
        PQclear(r);
        ck_assert_int_eq(veil_pg_end(c, VEIL_OK), VEIL_OK);
    }
    veil_db_free(db);
    free(ci);
}
END_TEST

START_TEST(test_backoff_while_down)
{
    char *ci;
    veil_db *db = open_db(&ci);
    PGresult *r;
    char cmd[1024];
    ck_assert_int_eq(run(db, ST_PING, NULL, 0, &r), VEIL_OK);
    PQclear(r);
    snprintf(cmd, sizeof cmd, "%s/deploy/local/pgcluster stop %s", h_env("VEIL_SOURCE_DIR"),
             h_env("VEIL_TEST_PGDIR"));
    ck_assert_int_eq(system(cmd), 0);
    /* down: every call fails fast with UNAVAILABLE, none hangs */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(run(db, ST_PING, NULL, 0, &r), VEIL_ERR_UNAVAILABLE);
    snprintf(cmd, sizeof cmd, "%s/deploy/local/pgcluster start %s", h_env("VEIL_SOURCE_DIR"),
             h_env("VEIL_TEST_PGDIR"));
    ck_assert_int_eq(system(cmd), 0);
    /* back: within the longest backoff (2 s) calls succeed again */
    veil_err err = VEIL_ERR_UNAVAILABLE;
    for (int i = 0; i < 60 && err; i++) {
        err = run(db, ST_PING, NULL, 0, &r);
        if (err) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
        }
    }
    ck_assert_int_eq(err, VEIL_OK);
    PQclear(r);
    veil_db_free(db);
    free(ci);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_migrations_apply_once,
                                  test_failed_migration_rolls_back,
                                  test_binary_params_and_results,
                                  test_sqlstate_mapping,
                                  test_transaction_rollback,
                                  test_begin_and_end,
                                  test_connection_per_thread,
                                  test_reconnect_after_restart,
                                  test_terminated_backend,
                                  test_backoff_while_down,
                                  NULL};
    const h_case cases[] = {{"pg", 120, NULL, NULL, NULL, h_pg_running, tests}, {NULL}};
    return h_run_suite_forked(h_suite("pg", cases));
}
