/*
 * svc.h - a database-backed service under test: its own fresh database,
 * migrated with the binary's own `migrate` command, an optional key
 * directory, and the process itself, which can be restarted on the same
 * port (to test clients that must survive a restart).
 */
#ifndef VEIL_HARNESS_SVC_H
#define VEIL_HARNESS_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

#define H_SVC_ENV_MAX 12

typedef struct h_svc {
    char binary[64];
    h_proc proc;
    char *db;   /* libpq connection string of its database */
    char *keys; /* VEIL_KEYS_DIR, or NULL */
    char env[H_SVC_ENV_MAX][1200];
    const char *envp[H_SVC_ENV_MAX + 2];
    size_t n_env;
} h_svc;

/*
 * Creates a database, runs `<binary> migrate` on it and starts the service
 * as svc/<binary>.  keys_purpose, when not NULL, gives it a key directory
 * holding <purpose>-1.key.  extra_env (NAME=VALUE, NULL-terminated) is
 * added to its environment.  Returns 0, or -1 after printing why.
 */
int h_svc_start(h_svc *s, const char *binary, const char *keys_purpose,
                const char *const *extra_env);

/* Runs `<binary> migrate` against conninfo; returns its exit status. */
int h_svc_migrate(const char *binary, const char *conninfo, const char *keys_dir);

/* Starts a stopped service again on its old port and database; 0 or -1. */
int h_svc_respawn(h_svc *s);

/* A feed service's head (consent, revocation), read with a Changes call that does not wait. */
int64_t h_svc_feed_head(veil_channel *ch);

/*
 * One Changes call on ch (after_seq after, waiting up to wait_ms, the call's
 * deadline timeout_ms) for a thread of its own: pthread_create(&t, NULL,
 * h_feed_poll_thread, &poll).  It fills in err, n, first_seq (the first
 * change's seq, 0 for none) and returned_ns (veil_mono_ns at the reply).
 */
typedef struct h_feed_poll {
    veil_channel *ch;
    int64_t after;
    uint32_t wait_ms;
    int64_t timeout_ms;
    veil_err err;
    size_t n;
    int64_t first_seq;
    int64_t returned_ns;
} h_feed_poll;
void *h_feed_poll_thread(void *poll);

/* SIGTERM, then h_svc_respawn; 0 or -1. */
int h_svc_restart(h_svc *s);

/* SIGTERM and waits; returns the exit status (0 after a clean drain). */
int h_svc_stop(h_svc *s);

#endif
