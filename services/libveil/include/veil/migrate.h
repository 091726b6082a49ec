/*
 * veil/migrate.h - versioned schema migrations.
 *
 * A service's migrations are db/<service>/NNN_<name>.sql, compiled into its
 * binary (cmake/VeilMigrations.cmake).  `<service> migrate` applies the
 * pending ones in order, each inside its own transaction together with its
 * row in veil_schema_migrations, under an advisory lock so two migrators
 * never interleave.  It is idempotent, refuses a database whose schema is
 * newer than the binary, and refuses one whose applied migrations differ from
 * the binary's (an edited migration).  `serve` checks the schema is exactly
 * the binary's before it takes a call.
 */
#ifndef VEIL_MIGRATE_H
#define VEIL_MIGRATE_H

#include <stddef.h>
#include "veil/err.h"

typedef struct veil_migration {
    int version;
    const char *name;
    const char *sql;
} veil_migration;

/* Applies what is pending; *applied receives how many were. */
veil_err veil_migrate_apply(const char *conninfo, const char *service, const veil_migration *m,
                            size_t n, int *applied, char *errbuf, size_t errlen) VEIL_WUR;

/* Checks the database is at exactly the binary's version. */
veil_err veil_migrate_check(const char *conninfo, const char *service, const veil_migration *m,
                            size_t n, char *errbuf, size_t errlen) VEIL_WUR;

#endif
