/*
 * pg.c - per-thread PostgreSQL connections, prepared statements, SQLSTATE
 * mapping and reconnection with backoff (veil/pg.h).
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "veil/codec.h"
#include "veil/log.h"
#include "veil/metrics.h"
#include "veil/pg.h"

#define MAX_PARAMS     24
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* A connection unused for longer is checked before it is handed out (idle_conn_alive). */
#define IDLE_CHECK_NS (INT64_C(100) * 1000000)

/* OIDs of the built-in types the getters accept (pg_type.h). */
enum {
    BOOLOID = 16,
    BYTEAOID = 17,
    NAMEOID = 19,
    INT8OID = 20,
    INT2OID = 21,
    INT4OID = 23,
    TEXTOID = 25,
    VARCHAROID = 1043,
    TIMESTAMPTZOID = 1184
};

struct veil_db {
    char *conninfo;
    const veil_pg_stmt *stmts;
    size_t n_stmts;
    pthread_key_t key;
};

struct veil_pg {
    veil_db *db;
    PGconn *conn;
    unsigned char *prepared; /* one flag per statement of the table */
    int64_t retry_at_ns;     /* no reconnect attempt before this */
    int64_t handed_out_ns;   /* when veil_db_conn last handed it out */
    int backoff_ms;
    int counted; /* counted in veil_db_connections */
};

/* Pool state for the metrics: open connections, connection attempts by result. */
static veil_metric *m_open, *m_connects;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    m_open = veil_metric_gauge("veil_db_connections",
                               "open PostgreSQL connections (one per worker thread that used one)",
                               NULL);
    m_connects = veil_metric_counter("veil_db_connects_total",
                                     "PostgreSQL connection attempts by result", "result");
}

veil_pg_param vp_text(const char *s)
{
    veil_pg_param p = {.value = s, .length = 0, .binary = 0};
    return p;
}

veil_pg_param vp_bytes(const void *ptr, size_t n)
{
    /* A zero-length bytea must not be NULL. */
    veil_pg_param p = {.value = n ? (const char *)ptr : "", .length = (int)n, .binary = 1};
    return p;
}

veil_pg_param vp_i64(int64_t v)
{
    veil_pg_param p = {.value = NULL, .length = 8, .binary = 1, .inline_value = 1};
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--, u >>= 8)
        p.buf[i] = (char)(u & 0xff);
    return p;
}

veil_pg_param vp_null(void)
{
    veil_pg_param p = {.value = NULL, .length = 0, .binary = 0};
    return p;
}

static void conn_close(veil_pg *c)
{
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    if (c->counted)
        veil_metric_add(m_open, -1, NULL);
    c->counted = 0;
    memset(c->prepared, 0, c->db->n_stmts);
}

static void conn_destructor(void *p)
{
    veil_pg *c = p;
    conn_close(c);
    free(c->prepared);
    free(c);
}

veil_err veil_db_new(const char *conninfo, const veil_pg_stmt *stmts, size_t n, veil_db **out)
{
    *out = NULL;
    veil_db *db = calloc(1, sizeof *db);
    if (!db || !(db->conninfo = strdup(conninfo))) {
        free(db);
        return VEIL_ERR_NOMEM;
    }
    db->stmts = stmts;
    db->n_stmts = n;
    if (pthread_key_create(&db->key, conn_destructor) != 0) {
        free(db->conninfo);
        free(db);
        return VEIL_ERR_NOMEM;
    }
    *out = db;
    return VEIL_OK;
}

void veil_db_thread_done(veil_db *db)
{
    veil_pg *c = pthread_getspecific(db->key);
    if (c) {
        pthread_setspecific(db->key, NULL);
        conn_destructor(c);
    }
}

void veil_db_free(veil_db *db)
{
    if (!db)
        return;
    veil_db_thread_done(db);
    pthread_key_delete(db->key);
    free(db->conninfo);
    free(db);
}

static veil_err connect_now(veil_pg *c)
{
    int64_t now = veil_mono_ns();
    if (now < c->retry_at_ns)
        return VEIL_ERR_UNAVAILABLE;
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {c->db->conninfo, "3", NULL};
    c->conn = PQconnectdbParams(keys, vals, 1);
    pthread_once(&metrics_once, metrics_init);
    int good = c->conn && PQstatus(c->conn) == CONNECTION_OK;
    veil_metric_add(m_connects, 1, (const char *[]){good ? "ok" : "failed"});
    if (good) {
        veil_metric_add(m_open, 1, NULL);
        c->counted = 1;
        if (c->backoff_ms)
            veil_log(VEIL_LOG_INFO, "database connection restored", VL_END);
        c->backoff_ms = 0;
        c->retry_at_ns = 0;
        return VEIL_OK;
    }
    /* PQerrorMessage names host and socket, never data: fine for the log. */
    veil_log(VEIL_LOG_WARN, "cannot connect to the database",
             VL_STR("error", c->conn ? PQerrorMessage(c->conn) : "out of memory"),
             VL_INT("retry_ms", c->backoff_ms ? c->backoff_ms : BACKOFF_MIN_MS), VL_END);
    conn_close(c);
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    c->retry_at_ns = now + (int64_t)c->backoff_ms * 1000000;
    return VEIL_ERR_UNAVAILABLE;
}

/*
 * Whether an idle connection is still there.  A server that restarts or fails
 * over ends its sessions with a FATAL message and end of file; reading them
 * here means the next call reconnects instead of failing.  PQconsumeInput
 * never blocks (libpq's socket is non-blocking): the first read takes the
 * farewell, if any, the second then meets the end of file.  Two system calls,
 * so only for a connection idle longer than IDLE_CHECK_NS: a busy one is not
 * probed before every statement (issue 15); when its server went away since
 * its last use, the statement fails with VEIL_ERR_UNAVAILABLE (result_err
 * drops the connection) and the next call reconnects.  BEGIN, which changes
 * nothing, is retried once on a new connection (veil_pg_begin).
 */
static int idle_conn_alive(PGconn *conn)
{
    for (int i = 0; i < 2; i++)
        if (PQstatus(conn) != CONNECTION_OK || !PQconsumeInput(conn))
            return 0;
    return PQstatus(conn) == CONNECTION_OK;
}

veil_err veil_db_conn(veil_db *db, veil_pg **out)
{
    *out = NULL;
    veil_pg *c = pthread_getspecific(db->key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c || !(c->prepared = calloc(db->n_stmts ? db->n_stmts : 1, 1))) {
            free(c);
            return VEIL_ERR_NOMEM;
        }
        c->db = db;
        pthread_setspecific(db->key, c);
    }
    int64_t now = veil_mono_ns();
    if (c->conn && now - c->handed_out_ns > IDLE_CHECK_NS && !idle_conn_alive(c->conn)) {
        veil_log(VEIL_LOG_INFO, "the database closed an idle connection; reconnecting", VL_END);
        conn_close(c);
    }
    c->handed_out_ns = now;
    if (!c->conn) {
        veil_err err = connect_now(c);
        if (err)
            return err;
    }
    if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
        /* A previous user left a transaction open: a bug, but not this call's. */
        veil_log(VEIL_LOG_ERROR, "connection handed back inside a transaction; rolling back",
                 VL_END);
        veil_pg_rollback(c);
    }
    *out = c;
    return VEIL_OK;
}

PGconn *veil_pg_raw(veil_pg *c)
{
    return c->conn;
}

veil_err veil_pg_sqlstate_err(const char *st)
{
    if (!st || strlen(st) != 5)
        return VEIL_ERR_INTERNAL;
    if (strcmp(st, "23505") == 0)
        return VEIL_ERR_EXISTS; /* unique_violation */
    if (strcmp(st, "23503") == 0)
        return VEIL_ERR_PRECONDITION; /* foreign_key_violation */
    if (strncmp(st, "23", 2) == 0 || strncmp(st, "22", 2) == 0)
        return VEIL_ERR_INVALID; /* integrity / data exceptions */
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0)
        return VEIL_ERR_ABORTED; /* serialization failure, deadlock */
    if (strcmp(st, "57014") == 0)
        return VEIL_ERR_DEADLINE; /* query_canceled (statement_timeout) */
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0)
        return VEIL_ERR_UNAVAILABLE; /* connection lost, server shutting down */
    if (strncmp(st, "53", 2) == 0)
        return VEIL_ERR_UNAVAILABLE; /* insufficient resources: retry later */
    if (strcmp(st, "55P03") == 0)
        return VEIL_ERR_ABORTED; /* lock_not_available */
    return VEIL_ERR_INTERNAL;
}

/* Maps a failed result (or none) to veil_err, dropping a dead connection. */
static veil_err result_err(veil_pg *c, PGresult *r, const char *what)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *constraint = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
    veil_err err = veil_pg_sqlstate_err(st);
    /*
     * A failure without a SQLSTATE was made by libpq itself, not the server:
     * the connection broke (a server stopping says so in a notice, then the
     * socket closes), even while PQstatus still reads OK.
     */
    if (PQstatus(c->conn) != CONNECTION_OK || !r ||
        (!st && PQresultStatus(r) == PGRES_FATAL_ERROR)) {
        err = VEIL_ERR_UNAVAILABLE;
        conn_close(c);
    }
    /* SQLSTATE and names only: server messages may quote parameter values. */
    veil_log(err == VEIL_ERR_EXISTS ? VEIL_LOG_DEBUG : VEIL_LOG_WARN, "database statement failed",
             VL_STR("statement", what), VL_STR("sqlstate", st ? st : "none"),
             VL_STR("constraint", constraint ? constraint : ""),
             VL_STR("error", veil_err_name(err)), VL_END);
    return err;
}

static veil_err prepare(veil_pg *c, int stmt)
{
    const veil_pg_stmt *s = &c->db->stmts[stmt];
    PGresult *r = PQprepare(c->conn, s->name, s->sql, 0, NULL);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        veil_err err = result_err(c, r, s->name);
        PQclear(r);
        return err;
    }
    PQclear(r);
    c->prepared[stmt] = 1;
    return VEIL_OK;
}

veil_err veil_pg_exec(veil_pg *c, int stmt, const veil_pg_param *params, int n, PGresult **res)
{
    *res = NULL;
    if (stmt < 0 || (size_t)stmt >= c->db->n_stmts || n > MAX_PARAMS || !c->conn)
        return c->conn ? VEIL_ERR_INTERNAL : VEIL_ERR_UNAVAILABLE;
    if (!c->prepared[stmt]) {
        veil_err err = prepare(c, stmt);
        if (err)
            return err;
    }
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS], formats[MAX_PARAMS];
    for (int i = 0; i < n; i++) {
        /* vp_i64 keeps its bytes inside the parameter itself, which may have been copied. */
        values[i] = params[i].inline_value ? params[i].buf : params[i].value;
        lengths[i] = params[i].length;
        formats[i] = params[i].binary;
    }
    const char *name = c->db->stmts[stmt].name;
    PGresult *r = PQexecPrepared(c->conn, name, n, values, lengths, formats, 1);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        *res = r;
        return VEIL_OK;
    }
    veil_err err = result_err(c, r, name);
    PQclear(r);
    return err;
}

veil_err veil_pg_simple(veil_pg *c, const char *sql)
{
    if (!c->conn)
        return VEIL_ERR_UNAVAILABLE;
    PGresult *r = PQexec(c->conn, sql);
    if (r && (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)) {
        PQclear(r);
        return VEIL_OK;
    }
    veil_err err = result_err(c, r, sql);
    PQclear(r);
    return err;
}

veil_err veil_pg_begin(veil_pg *c)
{
    int had_conn = c->conn != NULL;
    veil_err err = veil_pg_simple(c, "BEGIN");
    /*
     * The server had closed the connection (restart, failover, a terminated
     * backend) and BEGIN found out: nothing ran, so once more on a new one.
     */
    if (err == VEIL_ERR_UNAVAILABLE && had_conn && !c->conn && !(err = connect_now(c)))
        err = veil_pg_simple(c, "BEGIN");
    return err;
}

veil_err veil_pg_commit(veil_pg *c)
{
    return veil_pg_simple(c, "COMMIT");
}

void veil_pg_rollback(veil_pg *c)
{
    if (c->conn && PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(c->conn, "ROLLBACK");
        PQclear(r);
    }
}

veil_err veil_db_begin(veil_db *db, veil_pg **out)
{
    veil_err err = veil_db_conn(db, out);
    if (!err && (err = veil_pg_begin(*out)) != VEIL_OK)
        *out = NULL;
    return err;
}

veil_err veil_pg_end(veil_pg *c, veil_err err)
{
    if (!err)
        err = veil_pg_commit(c);
    if (err)
        veil_pg_rollback(c);
    return err;
}

/* ---- typed getters ---- */

static int type_ok(const PGresult *r, int col, const Oid *ok, size_t n)
{
    Oid t = PQftype(r, col);
    for (size_t i = 0; i < n; i++)
        if (t == ok[i])
            return 1;
    veil_log(VEIL_LOG_ERROR, "result column has an unexpected type",
             VL_STR("column", PQfname(r, col)), VL_INT("oid", t), VL_END);
    return 0;
}

int veil_pg_is_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col);
}

int64_t veil_pg_get_i64(const PGresult *r, int row, int col)
{
    static const Oid ok[] = {INT2OID, INT4OID, INT8OID};
    if (PQgetisnull(r, row, col) || !type_ok(r, col, ok, 3))
        return 0;
    const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    uint64_t u = 0;
    for (int i = 0; i < len; i++)
        u = u << 8 | p[i];
    /* sign-extend the narrower types */
    if (len == 2)
        return (int16_t)u;
    if (len == 4)
        return (int32_t)u;
    return (int64_t)u;
}

int veil_pg_get_bool(const PGresult *r, int row, int col)
{
    static const Oid ok[] = {BOOLOID};
    if (PQgetisnull(r, row, col) || !type_ok(r, col, ok, 1))
        return 0;
    return PQgetvalue(r, row, col)[0] != 0;
}

const char *veil_pg_get_text(const PGresult *r, int row, int col)
{
    static const Oid ok[] = {TEXTOID, VARCHAROID, NAMEOID};
    if (PQgetisnull(r, row, col) || !type_ok(r, col, ok, 3))
        return "";
    return PQgetvalue(r, row, col); /* libpq NUL-terminates binary values too */
}

const unsigned char *veil_pg_get_bytes(const PGresult *r, int row, int col, size_t *len)
{
    static const Oid ok[] = {BYTEAOID};
    *len = 0;
    if (PQgetisnull(r, row, col) || !type_ok(r, col, ok, 1))
        return NULL;
    *len = (size_t)PQgetlength(r, row, col);
    return (const unsigned char *)PQgetvalue(r, row, col);
}

int64_t veil_pg_get_time_ms(const PGresult *r, int row, int col)
{
    static const Oid ok[] = {TIMESTAMPTZOID};
    if (PQgetisnull(r, row, col) || !type_ok(r, col, ok, 1) || PQgetlength(r, row, col) != 8)
        return 0;
    const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    /* microseconds since 2000-01-01 00:00:00 UTC */
    return (int64_t)u / 1000 + INT64_C(946684800000);
}
