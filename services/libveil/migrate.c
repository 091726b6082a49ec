/*
 * migrate.c - applies the migrations compiled into a service (veil/migrate.h).
 *
 * This file runs fixed SQL of its own plus the migration scripts, which are
 * multi-statement by nature and so go through PQexec; every value it sends
 * is still a bound parameter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "veil/codec.h"
#include "veil/log.h"
#include "veil/migrate.h"
#include "veil/pg.h"

static const char create_table[] = "CREATE TABLE IF NOT EXISTS veil_schema_migrations ("
                                   " service text NOT NULL,"
                                   " version integer NOT NULL,"
                                   " name text NOT NULL,"
                                   " checksum text NOT NULL,"
                                   " applied_at timestamptz NOT NULL DEFAULT now(),"
                                   " PRIMARY KEY (service, version))";

static void checksum_hex(const char *sql, char out[65])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)sql, strlen(sql), NULL, 0);
    sodium_bin2hex(out, 65, h, sizeof h);
}

static int ok(PGresult *r)
{
    return r && (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
}

/* Runs fixed SQL with text parameters; returns the result or NULL (errbuf set). */
static PGresult *run(PGconn *conn, const char *sql, int n, const char *const *vals, char *errbuf,
                     size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
    if (ok(r))
        return r;
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(errbuf, errlen, "migration bookkeeping failed (SQLSTATE %s)", st ? st : "none");
    PQclear(r);
    return NULL;
}

static PGconn *open_conn(const char *conninfo, char *errbuf, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {conninfo, "5", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        snprintf(errbuf, errlen, "cannot connect to the database: %s",
                 conn ? PQerrorMessage(conn) : "out of memory");
        /* drop libpq's trailing newline */
        size_t l = strlen(errbuf);
        if (l && errbuf[l - 1] == '\n')
            errbuf[l - 1] = '\0';
        PQfinish(conn);
        return NULL;
    }
    PGresult *r = PQexec(conn, "SET client_min_messages = warning");
    PQclear(r);
    return conn;
}

/*
 * Compares the applied migrations with the binary's.  Returns the applied
 * version (0 for none), or -1 with errbuf set when the database is newer or
 * a migration was changed after it was applied.
 */
static int verify_applied(PGconn *conn, const char *service, const veil_migration *m, size_t n,
                          char *errbuf, size_t errlen)
{
    const char *vals[] = {service};
    PGresult *r = run(conn,
                      "SELECT version, checksum FROM veil_schema_migrations"
                      " WHERE service = $1 ORDER BY version",
                      1, vals, errbuf, errlen);
    if (!r)
        return -1;
    int binary_version = n ? m[n - 1].version : 0, applied = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int v = atoi(PQgetvalue(r, i, 0));
        applied = v;
        if (v > binary_version) {
            snprintf(errbuf, errlen,
                     "the %s database schema is at version %d, newer than this binary's %d: "
                     "refusing to touch it (deploy the newer binary)",
                     service, v, binary_version);
            PQclear(r);
            return -1;
        }
        const veil_migration *mm = NULL;
        for (size_t k = 0; k < n; k++)
            if (m[k].version == v)
                mm = &m[k];
        char sum[65];
        if (mm)
            checksum_hex(mm->sql, sum);
        if (!mm || strcmp(sum, PQgetvalue(r, i, 1)) != 0) {
            snprintf(errbuf, errlen,
                     "the %s database has migration %d applied as a different script than this "
                     "binary's; refusing to continue",
                     service, v);
            PQclear(r);
            return -1;
        }
    }
    PQclear(r);
    return applied;
}

veil_err veil_migrate_apply(const char *conninfo, const char *service, const veil_migration *m,
                            size_t n, int *applied_out, char *errbuf, size_t errlen)
{
    veil_err err = VEIL_ERR_UNAVAILABLE;
    int locked = 0;
    *applied_out = 0;
    PGconn *conn = open_conn(conninfo, errbuf, errlen);
    if (!conn)
        return VEIL_ERR_UNAVAILABLE;

    char lockname[96];
    snprintf(lockname, sizeof lockname, "veil_migrate_%s", service);
    const char *lockval[] = {lockname};
    PGresult *r = run(conn, "SELECT pg_advisory_lock(hashtext($1))", 1, lockval, errbuf, errlen);
    if (!r)
        goto out;
    PQclear(r);
    locked = 1;
    if (!(r = run(conn, create_table, 0, NULL, errbuf, errlen)))
        goto out;
    PQclear(r);

    int current = verify_applied(conn, service, m, n, errbuf, errlen);
    if (current < 0) {
        err = VEIL_ERR_PRECONDITION;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i].version <= current)
            continue;
        char sum[65], ver[16];
        checksum_hex(m[i].sql, sum);
        snprintf(ver, sizeof ver, "%d", m[i].version);
        r = PQexec(conn, "BEGIN");
        PQclear(r);
        r = PQexec(conn, m[i].sql);
        if (!ok(r)) {
            const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
            const char *pm = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
            /* Migration scripts hold no personal data, so the server's message may be shown. */
            snprintf(errbuf, errlen, "migration %03d_%s failed (SQLSTATE %s): %s", m[i].version,
                     m[i].name, st ? st : "none", pm ? pm : PQerrorMessage(conn));
            PQclear(r);
            r = PQexec(conn, "ROLLBACK");
            PQclear(r);
            err = VEIL_ERR_INTERNAL;
            goto out;
        }
        PQclear(r);
        const char *vals[] = {service, ver, m[i].name, sum};
        r = run(conn,
                "INSERT INTO veil_schema_migrations (service, version, name, checksum)"
                " VALUES ($1, $2::integer, $3, $4)",
                4, vals, errbuf, errlen);
        if (!r) {
            PGresult *rb = PQexec(conn, "ROLLBACK");
            PQclear(rb);
            goto out;
        }
        PQclear(r);
        r = PQexec(conn, "COMMIT");
        if (!ok(r)) {
            snprintf(errbuf, errlen, "migration %03d_%s failed to commit", m[i].version, m[i].name);
            PQclear(r);
            goto out;
        }
        PQclear(r);
        (*applied_out)++;
        veil_log(VEIL_LOG_INFO, "migration applied", VL_STR("service", service),
                 VL_INT("version", m[i].version), VL_STR("name", m[i].name), VL_END);
    }
    err = VEIL_OK;
out:
    if (locked) {
        r = PQexecParams(conn, "SELECT pg_advisory_unlock(hashtext($1))", 1, NULL, lockval, NULL,
                         NULL, 0);
        PQclear(r);
    }
    PQfinish(conn);
    return err;
}

veil_err veil_migrate_check(const char *conninfo, const char *service, const veil_migration *m,
                            size_t n, char *errbuf, size_t errlen)
{
    PGconn *conn = open_conn(conninfo, errbuf, errlen);
    if (!conn)
        return VEIL_ERR_UNAVAILABLE;
    veil_err err = VEIL_OK;
    PGresult *r = PQexec(conn, "SELECT to_regclass('veil_schema_migrations') IS NOT NULL");
    int have_table = ok(r) && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    int binary_version = n ? m[n - 1].version : 0;
    int current = have_table ? verify_applied(conn, service, m, n, errbuf, errlen) : 0;
    if (current < 0) {
        err = VEIL_ERR_PRECONDITION;
    } else if (current != binary_version) {
        snprintf(errbuf, errlen,
                 "the %s database schema is at version %d, this binary needs %d: run `%s migrate`",
                 service, current, binary_version, service);
        err = VEIL_ERR_PRECONDITION;
    }
    PQfinish(conn);
    return err;
}
