/*
 * veil/pg.h - PostgreSQL for a service's store layer (and only for it).
 *
 * Each thread that touches the database gets its own connection, opened on
 * first use and closed when the thread exits.  Statements are declared once
 * in a table and prepared lazily on each connection; parameters are always
 * bound, never spliced into SQL.  Results come back in binary format and are
 * read with the typed getters below.
 *
 * When the server goes away, the statement in flight fails with
 * VEIL_ERR_UNAVAILABLE and the connection is dropped; the next call
 * reconnects, retrying no faster than an exponential backoff (100 ms up to
 * 2 s) so a database outage is not hammered.  A connection left unused for
 * more than 100 ms is checked before it is handed out and replaced if the
 * server closed it, so after a restart of an idle system no call fails for
 * it; a busy connection is not checked before each use (two system calls
 * saved per statement): if its server went away since its last use, its next
 * statement fails with VEIL_ERR_UNAVAILABLE and the call after reconnects,
 * except BEGIN, which is retried once on a new connection since nothing ran.
 * SQLSTATE is mapped to veil_err here, so no handler ever sees one.
 */
#ifndef VEIL_PG_H
#define VEIL_PG_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "veil/err.h"

typedef struct veil_pg_stmt {
    const char *name; /* unique per database, e.g. "find_device" */
    const char *sql;
} veil_pg_stmt;

typedef struct veil_pg_param {
    const char *value; /* NULL: SQL NULL (unless inline_value) */
    int length;
    int binary;        /* 1 for bytea and the fixed-width helpers */
    int inline_value;  /* the value is buf (vp_i64), wherever the struct was copied to */
    char buf[8];
} veil_pg_param;

/* Parameter helpers: text, bytes (bytea), int8 and NULL. */
veil_pg_param vp_text(const char *s);
veil_pg_param vp_bytes(const void *p, size_t n);
veil_pg_param vp_i64(int64_t v);
veil_pg_param vp_null(void);

typedef struct veil_db veil_db;
typedef struct veil_pg veil_pg;

/*
 * A database handle shared by all threads.  conninfo is a libpq connection
 * string or URI; stmts must outlive the handle.  No connection is made yet.
 */
veil_err veil_db_new(const char *conninfo, const veil_pg_stmt *stmts, size_t n, veil_db **out) VEIL_WUR;

/* Frees the handle and the calling thread's connection; other threads close theirs at exit. */
void veil_db_free(veil_db *db);

/* The calling thread's connection, (re)connecting if needed. */
veil_err veil_db_conn(veil_db *db, veil_pg **out) VEIL_WUR;

/* Closes the calling thread's connection now (e.g. before a thread exits). */
void veil_db_thread_done(veil_db *db);

/*
 * Runs statement number stmt (an index into the table) with params.  On
 * VEIL_OK *res holds the result (free with PQclear); otherwise *res is NULL.
 */
veil_err veil_pg_exec(veil_pg *c, int stmt, const veil_pg_param *params, int n,
                      PGresult **res) VEIL_WUR;

/* Runs one fixed SQL text without parameters (BEGIN, LOCK TABLE ...). */
veil_err veil_pg_simple(veil_pg *c, const char *sql) VEIL_WUR;

veil_err veil_pg_begin(veil_pg *c) VEIL_WUR;
veil_err veil_pg_commit(veil_pg *c) VEIL_WUR;
/* Rolls back if a transaction is open; never fails visibly. */
void veil_pg_rollback(veil_pg *c);

/* The calling thread's connection with a transaction begun on it (conn + BEGIN). */
veil_err veil_db_begin(veil_db *db, veil_pg **out) VEIL_WUR;

/*
 * Ends the transaction on c: commits when err is VEIL_OK, otherwise rolls
 * back.  Returns err, or the COMMIT's failure (after which nothing was
 * written either).  The one-line end of a store's mutation.
 */
veil_err veil_pg_end(veil_pg *c, veil_err err) VEIL_WUR;

/* The libpq connection, for LISTEN and the migration runner. */
PGconn *veil_pg_raw(veil_pg *c);

/* SQLSTATE -> veil_err (e.g. 23505 -> EXISTS, class 08 -> UNAVAILABLE). */
veil_err veil_pg_sqlstate_err(const char *sqlstate);

/* Typed getters over binary results; each checks the column's type. */
int veil_pg_is_null(const PGresult *r, int row, int col);
int64_t veil_pg_get_i64(const PGresult *r, int row, int col);       /* int2/int4/int8 */
int veil_pg_get_bool(const PGresult *r, int row, int col);
const char *veil_pg_get_text(const PGresult *r, int row, int col);  /* NUL-terminated */
/* bytea: returns a pointer into r and its length. */
const unsigned char *veil_pg_get_bytes(const PGresult *r, int row, int col, size_t *len);
/* timestamptz -> Unix milliseconds. */
int64_t veil_pg_get_time_ms(const PGresult *r, int row, int col);

#endif
