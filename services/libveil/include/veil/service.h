/*
 * veil/service.h - what every veil service's main() shares.
 *
 *   int main(int argc, char **argv) { return veil_service_main(argc, argv, &vault_spec); }
 *
 * gives the binary these commands:
 *   serve     (the default) check the schema, listen, serve until SIGTERM, drain, exit 0
 *   migrate   apply the migrations compiled into the binary
 *   probe     ask the instance at VEIL_LISTEN_ADDR whether it is SERVING (exit 0 if so)
 *   config    validate the configuration and print it (no secrets: it holds none)
 *   help      list commands and environment variables
 * plus the service's own commands (e.g. `vault rotate-master-key`).
 *
 * Exit status: 0 success, 1 runtime failure, 2 bad configuration or usage.
 */
#ifndef VEIL_SERVICE_H
#define VEIL_SERVICE_H

#include <stddef.h>

#include "veil/config.h"
#include "veil/migrate.h"
#include "veil/rpc.h"

/* What the scaffolding hands the service. */
typedef struct veil_service_ctx {
    const char *name;          /* "vault" */
    veil_server *server;       /* add services to it in start(); NULL for commands */
    const char *database_url;  /* NULL when the service has no database */
    const char *keys_dir;      /* VEIL_KEYS_DIR, or NULL */
    const char *trust_domain;  /* VEIL_TRUST_DOMAIN: identities are spiffe://<it>/... */
    veil_tls_config tls;       /* this service's identity, for its outbound channels too */
    int64_t rpc_timeout_ms;    /* default budget of an outbound call */
} veil_service_ctx;

typedef struct veil_command {
    const char *name;
    const char *usage; /* one line */
    int (*run)(const veil_service_ctx *ctx, int argc, char **argv); /* returns the exit status */
} veil_command;

typedef struct veil_service_spec {
    const char *name;
    const char *default_listen;          /* e.g. "127.0.0.1:7101" */
    int client_cert_optional;            /* gateway only */
    int needs_keys;                      /* VEIL_KEYS_DIR is required */
    const veil_migration *migrations;    /* NULL: no database */
    const size_t *n_migrations;
    const veil_config_var *vars;         /* the service's own variables */
    size_t n_vars;
    /* Builds the service and adds it to ctx->server; *state comes back to stop(). */
    veil_err (*start)(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen);
    void (*stop)(void *state);           /* after the server drained */
    /*
     * Optional: load key files added since.  Runs on the main thread on
     * SIGHUP and whenever a file appears in VEIL_KEYS_DIR (watched with
     * inotify).  It must never change which key version is in use: only the
     * rotation commands do.
     */
    void (*reload)(void *state);
    const veil_command *commands;
    size_t n_commands;
} veil_service_spec;

int veil_service_main(int argc, char **argv, const veil_service_spec *spec);

#endif
