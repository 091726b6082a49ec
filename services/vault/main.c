/*
 * main.c - the identity vault: configuration, keys, wiring.
 *
 * Keys come from VEIL_KEYS_DIR (keys.c lists them); the proofing
 * authority's public keys from the file VAULT_PROOFING_PUBLIC_KEY names.
 * New key files are picked up while serving (the key folder watcher, SIGHUP;
 * a master key version named by a stored row, or a ticket key version named
 * by a ticket, is also loaded on demand) but not used by themselves: the
 * versions in use are key_state's, which the rotation commands change.  A
 * thread here LISTENs on VAULT_KEYS_CHANNEL and re-reads key_state on every
 * notification and every (re)connection, so a rotation takes effect in every
 * running vault without a restart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "veil/log.h"
#include "veil/metrics.h"
#include "vault.h"

/* Defined by veil_embed_migrations(vault_lib vault). */
extern const veil_migration vault_migrations[];
extern const size_t vault_migrations_count;

static char *cfg_proofing_file;
static int64_t cfg_attestation_max_age_s, cfg_skew_s, cfg_webcert_days, cfg_master_version,
    cfg_log_batch, cfg_stepup_fresh_s, cfg_cooling_off_s, cfg_presentation_ttl_s,
    cfg_log_partition_s, cfg_log_retention_s, cfg_crypto_threads;
static struct vault_config config;

static const veil_config_var vault_vars[] = {
    /* A path checked when serving starts, so `vault migrate` runs without the file. */
    {"VAULT_PROOFING_PUBLIC_KEY", VEIL_CFG_STRING, NULL, 0, &cfg_proofing_file, 0, 0,
     "file of the proofing authority's Ed25519 public keys (base64, one a line); required to "
     "serve"},
    {"VAULT_ATTESTATION_MAX_AGE_S", VEIL_CFG_INT, "600", 0, &cfg_attestation_max_age_s, 1, 86400,
     "oldest proofing attestation accepted, seconds"},
    {"VAULT_TICKET_SKEW_S", VEIL_CFG_INT, "120", 0, &cfg_skew_s, 1, 3600,
     "a ticket's or citizen request's time must be within this many seconds of now"},
    {"VAULT_PRESENTATION_TTL_S", VEIL_CFG_INT, "60", 0, &cfg_presentation_ttl_s, 5, 600,
     "how long a presentation a phone shows at a venue stays redeemable, seconds"},
    {"VAULT_WEBCERT_DAYS", VEIL_CFG_INT, "365", 0, &cfg_webcert_days, 1, 3650,
     "validity of a web certificate, days"},
    {"VAULT_MASTER_KEY_VERSION", VEIL_CFG_INT, "0", 0, &cfg_master_version, 0, 1000000,
     "master key version new data keys are wrapped under (0: the newest loaded)"},
    {"VAULT_LOG_BATCH_MAX", VEIL_CFG_INT, "256", 0, &cfg_log_batch, 0, VAULT_LOG_BATCH_LIMIT,
     "access-log entries committed together at most (group commit; 0: each append commits "
     "alone on its worker's connection)"},
    {"VAULT_CRYPTO_THREADS", VEIL_CFG_INT, "-1", 0, &cfg_crypto_threads, -1, 16,
     "helper threads that open and check a batch of tickets beside the worker holding it "
     "(-1: one fewer than the cores, 0: none)"},
    {"VAULT_ACCESS_LOG_PARTITION_S", VEIL_CFG_INT, "86400", 0, &cfg_log_partition_s, 1, 31 * 86400,
     "period of one access-log partition, seconds (vault access-log-retention)"},
    {"VAULT_ACCESS_LOG_RETENTION_S", VEIL_CFG_INT, "0", 0, &cfg_log_retention_s, 0,
     100LL * 365 * 86400,
     "access-log entries older than this are dropped a partition at a time by `vault "
     "access-log-retention`, seconds (0: kept for ever)"},
    {"VAULT_STEPUP_FRESH_S", VEIL_CFG_INT, "900", 0, &cfg_stepup_fresh_s, 0, 86400,
     "a device proofed (ID card and face) this many seconds ago may erase the identity or "
     "revoke another device at once"},
    {"VAULT_COOLING_OFF_S", VEIL_CFG_INT, "604800", 0, &cfg_cooling_off_s, 1, 90 * 86400,
     "how long an erasure or revocation without step-up waits, seconds (another device or a "
     "re-proofing cancels it meanwhile)"},
};

const struct vault_config *vault_config_current(void)
{
    config.attestation_max_age_ms = cfg_attestation_max_age_s * 1000;
    config.skew_ms = cfg_skew_s * 1000;
    config.webcert_days = cfg_webcert_days;
    config.stepup_fresh_ms = cfg_stepup_fresh_s * 1000;
    config.cooling_off_ms = cfg_cooling_off_s * 1000;
    config.presentation_ttl_ms = cfg_presentation_ttl_s * 1000;
    config.log_partition_s = cfg_log_partition_s;
    config.log_retention_s = cfg_log_retention_s;
    return &config;
}

const char *vault_proofing_file(void)
{
    return cfg_proofing_file;
}

uint32_t vault_master_version(void)
{
    return (uint32_t)cfg_master_version;
}

/* veil_key_version for the webcert, ticket and master versions in use (key_state's, live). */
static void collect(void *arg, veil_metrics_out *out)
{
    struct vault_keys *k = ((struct vault *)arg)->keys;
    veil_metrics_key_version(out, "webcert", "current", atomic_load(&k->webcert_signer)->version);
    veil_metrics_key_version(out, "ticket", "current", atomic_load(&k->ticket_current));
    veil_metrics_key_version(out, "master", "current", atomic_load(&k->master_current));
}

static void stop(void *state)
{
    struct vault *v = state;
    if (!v)
        return;
    veil_metrics_remove_collector(collect, v);
    if (v->key_notifier)
        veil_notifier_shutdown(v->key_notifier);
    if (v->key_watcher_started)
        pthread_join(v->key_watcher, NULL);
    veil_notifier_free(v->key_notifier);
    vault_logw_free(v->logw); /* the server drained: nobody can append any more */
    veil_helpers_free(v->helpers);
    vault_store_close(v->store);
    vault_keys_free(v->keys);
    free(v);
}

/*
 * The webcert, ticket and master versions in use come from key_state, never
 * from which files are present; the first start records the newest of each.
 * An explicitly set VAULT_MASTER_KEY_VERSION is an operator's decision: it is
 * used and recorded at start.  On c, the calling thread's connection.
 */
static veil_err use_key_versions(struct vault *v, int at_start, char *errbuf, size_t errlen)
{
    vault_conn *c;
    uint32_t webcert = 0, ticket = 0, master = at_start ? (uint32_t)cfg_master_version : 0,
             previous;
    if (vault_store_conn(v->store, &c) != VEIL_OK ||
        vault_store_key_version(c, "webcert", veil_keyring_latest(v->keys->webcert), &webcert) !=
            VEIL_OK ||
        vault_store_key_version(c, "ticket", veil_keyring_latest(v->keys->ticket), &ticket) !=
            VEIL_OK ||
        (master ? vault_store_set_key_version(c, "master", master, &previous)
                : vault_store_key_version(c, "master", veil_keyring_latest(v->keys->master),
                                          &master)) != VEIL_OK) {
        snprintf(errbuf, errlen, "cannot read the key versions in use from the database");
        return VEIL_ERR_UNAVAILABLE;
    }
    return vault_keys_use(v->keys, webcert, ticket, master, errbuf, errlen);
}

static void log_key_versions(const char *msg, struct vault_keys *k)
{
    veil_log(VEIL_LOG_INFO, msg, VL_INT("master_version", atomic_load(&k->master_current)),
             VL_INT("ticket_version", atomic_load(&k->ticket_current)),
             VL_STR("webcert_kid", atomic_load(&k->webcert_signer)->kid),
             VL_INT("proofing_keys", (long long)k->n_proofing), VL_END);
}

#define KEY_RETRY_MS   1000 /* a version whose file is missing is tried again this often */
#define KEY_RECHECK_MS 60000

/*
 * The key_state follower: re-reads it whenever the notifier's generation
 * moves (a NOTIFY from a rotation, or a (re)connection, after which a
 * notification may have been missed), and every second while a version in
 * use has no key file yet.  Each problem is logged once, not every retry.
 */
static void *key_watch_main(void *arg)
{
    struct vault *v = arg;
    uint64_t seen = veil_notifier_generation(v->key_notifier);
    int pending = 0;
    char err[256], last[256] = "";
    for (;;) {
        uint64_t gen = veil_notifier_generation(v->key_notifier);
        if (gen != seen || pending) {
            struct vault_keys *k = v->keys;
            uint32_t m = atomic_load(&k->master_current), t = atomic_load(&k->ticket_current);
            veil_signer *w = atomic_load(&k->webcert_signer);
            seen = gen;
            veil_err e = use_key_versions(v, 0, err, sizeof err);
            pending = e != VEIL_OK;
            if (pending && strcmp(err, last) != 0)
                veil_log(VEIL_LOG_ERROR, "key rotation held back", VL_STR("error", err), VL_END);
            snprintf(last, sizeof last, "%s", pending ? err : "");
            if (m != atomic_load(&k->master_current) || t != atomic_load(&k->ticket_current) ||
                w != atomic_load(&k->webcert_signer))
                log_key_versions("vault key versions switched", k);
        }
        if (veil_notifier_wait(v->key_notifier, gen, pending ? KEY_RETRY_MS : KEY_RECHECK_MS) ==
            VEIL_WAIT_STOPPING)
            break;
    }
    return NULL;
}

/* VAULT_CRYPTO_THREADS, -1 resolved: one fewer than the cores online. */
static unsigned crypto_threads(void)
{
    if (cfg_crypto_threads >= 0)
        return (unsigned)cfg_crypto_threads;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores > 1 ? (unsigned)(cores - 1 < 16 ? cores - 1 : 16) : 0;
}

static veil_err start(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen)
{
    struct vault *v = calloc(1, sizeof *v);
    veil_err err;
    if (!v)
        return VEIL_ERR_NOMEM;
    *state = v;
    v->rpc = vault_rpc;
    v->cfg = *vault_config_current();
    if (!cfg_proofing_file) {
        snprintf(errbuf, errlen,
                 "VAULT_PROOFING_PUBLIC_KEY: must be set (the proofing "
                 "authority's public key file)");
        return VEIL_ERR_INVALID;
    }
    if ((err = vault_keys_load(ctx->keys_dir, cfg_proofing_file, vault_master_version(), &v->keys,
                               errbuf, errlen)))
        return err;
    if ((err = vault_store_open(ctx->database_url, &v->store))) {
        snprintf(errbuf, errlen, "cannot set up the database handle");
        return err;
    }
    if ((err = use_key_versions(v, 1, errbuf, errlen)))
        return err;
    if (cfg_log_batch > 0 && (err = vault_logw_new((size_t)cfg_log_batch, &v->logw)))
        return err;
    if ((err = veil_helpers_new(crypto_threads(), &v->helpers))) {
        snprintf(errbuf, errlen, "cannot start the crypto helper threads");
        return err;
    }
    log_key_versions("vault keys loaded", v->keys);
    if ((err = veil_notifier_start(ctx->database_url, VAULT_KEYS_CHANNEL, &v->key_notifier)) ||
        (err = veil_server_on_drain(ctx->server, veil_notifier_shutdown, v->key_notifier)) ||
        (pthread_create(&v->key_watcher, NULL, key_watch_main, v) != 0 && (err = VEIL_ERR_NOMEM))) {
        snprintf(errbuf, errlen, "cannot start following key rotations (%s)", veil_err_name(err));
        return err;
    }
    v->key_watcher_started = 1;
    if (veil_metrics_add_collector(collect, v) != 0)
        veil_log(VEIL_LOG_WARN, "no room for the vault's metrics collector", VL_END);
    return veil_server_add(ctx->server, &v->rpc.base, vault_policy, vault_policy_len, errbuf,
                           errlen);
}

static void reload(void *state)
{
    struct vault *v = state;
    char err[256];
    if (vault_keys_refresh(v->keys, err, sizeof err) != VEIL_OK)
        veil_log(VEIL_LOG_ERROR, "cannot reload keys", VL_STR("error", err), VL_END);
    else /* loaded, not used: the versions in use change only with key_state */
        veil_log(VEIL_LOG_INFO, "vault keys reloaded",
                 VL_INT("master_version", atomic_load(&v->keys->master_current)),
                 VL_INT("ticket_version", atomic_load(&v->keys->ticket_current)), VL_END);
}

static const veil_command commands[] = {
    {"rotate-master-key", "rotate-master-key --to N [--batch 500]   re-wrap every data key",
     vault_cmd_rotate_master_key},
    {"rotate-key",
     "rotate-key --kind webcert|ticket --to N   use key version N (every running vault switches)",
     vault_cmd_rotate_key},
    {"bulk-enrol",
     "bulk-enrol --count N --out FILE [--batch 5000] [--first K]   load synthetic identities",
     vault_cmd_bulk_enrol},
    {"access-log-retention",
     "access-log-retention   make the access log's time partitions, drop those past "
     "VAULT_ACCESS_LOG_RETENTION_S",
     vault_cmd_access_log_retention},
};

static const veil_service_spec spec = {
    .name = "vault",
    .default_listen = "127.0.0.1:7101",
    .needs_keys = 1,
    .migrations = vault_migrations,
    .n_migrations = &vault_migrations_count,
    .vars = vault_vars,
    .n_vars = sizeof vault_vars / sizeof vault_vars[0],
    .start = start,
    .stop = stop,
    .reload = reload,
    .commands = commands,
    .n_commands = sizeof commands / sizeof commands[0],
};

int main(int argc, char **argv)
{
    return veil_service_main(argc, argv, &spec);
}
