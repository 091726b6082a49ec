/*
 * main.c - the consent service: configuration, receipt keys, wiring.
 *
 * Receipt keys: VEIL_KEYS_DIR/receipt-<N>.key, each the seed of an Ed25519
 * key pair with kid receipt-<N>.  New receipts are signed with
 * CONSENT_RECEIPT_KEY_VERSION, or the newest key loaded at start when it is
 * 0; every loaded key stays in the published JWKS so older receipts still
 * verify.  Key files added later (SIGHUP, or the watched key folder) are
 * loaded and published but never switch the signing key by themselves.
 *
 * Grants live in the service's own database (VEIL_DATABASE_URL, schema from
 * db/consent); one more connection is the feed notifier's LISTEN.
 */
#include <stdio.h>
#include <stdlib.h>

#include "consent.h"
#include "veil/log.h"
#include "veil/metrics.h"
#include "veil/service.h"

static int64_t cfg_version;

static const veil_config_var consent_vars[] = {
    {"CONSENT_RECEIPT_KEY_VERSION", VEIL_CFG_INT, "0", 0, &cfg_version, 0, 1000000,
     "receipt key version that signs new receipts (0: the newest loaded)"},
};

/*
 * veil_key_version{kind="receipt",role="signed"}: the version that signed the
 * latest receipt since start (no sample before the first).  The gateway names
 * the version in each grant, from key_state, and exports it as role
 * "current"; this says the consent service followed.
 */
static void collect(void *arg, veil_metrics_out *out)
{
    uint32_t v = atomic_load(&((struct consent *)arg)->signed_version);
    if (v)
        veil_metrics_key_version(out, "receipt", "signed", v);
}

static void stop(void *state)
{
    struct consent *c = state;
    if (!c)
        return;
    veil_metrics_remove_collector(collect, c);
    veil_notifier_free(c->notifier);
    consent_store_close(c->store);
    consent_signers_free(&c->signers);
    veil_keyring_free(c->keys);
    free(c);
}

static veil_err start(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen)
{
    struct consent *c = calloc(1, sizeof *c);
    if (!c)
        return VEIL_ERR_NOMEM;
    *state = c;
    c->rpc = consent_rpc;
    c->pinned_version = (uint32_t)cfg_version;
    veil_err err = veil_keyring_load(ctx->keys_dir, "receipt", &c->keys, errbuf, errlen);
    if (!err)
        err = consent_signers_update(c, errbuf, errlen);
    if (err)
        return err;
    veil_log(VEIL_LOG_INFO, "receipt keys loaded",
             VL_STR("current", atomic_load(&c->signers.current)->kid), VL_END);
    if (veil_metrics_add_collector(collect, c) != 0)
        veil_log(VEIL_LOG_WARN, "no room for the consent service's metrics collector", VL_END);
    err = consent_store_open(ctx->database_url, &c->store);
    if (!err)
        err = veil_notifier_start(ctx->database_url, VEIL_FEED_CHANNEL, &c->notifier);
    /* Long-polls return as soon as SIGTERM starts the drain. */
    if (!err)
        err = veil_server_on_drain(ctx->server, veil_notifier_shutdown, c->notifier);
    if (err) {
        snprintf(errbuf, errlen, "cannot set up the store and feed notifier (%s)",
                 veil_err_name(err));
        return err;
    }
    return veil_server_add(ctx->server, &c->rpc.base, consent_policy, consent_policy_len, errbuf,
                           errlen);
}

static void reload(void *state)
{
    struct consent *c = state;
    char err[256];
    if (veil_keyring_refresh(c->keys, err, sizeof err) != VEIL_OK ||
        consent_signers_update(c, err, sizeof err) != VEIL_OK) {
        veil_log(VEIL_LOG_ERROR, "cannot reload receipt keys", VL_STR("error", err), VL_END);
        return;
    }
    veil_log(VEIL_LOG_INFO, "receipt keys reloaded",
             VL_STR("current", atomic_load(&c->signers.current)->kid), VL_END);
}

static const veil_service_spec spec = {
    .name = "consent",
    .default_listen = "127.0.0.1:7102",
    .needs_keys = 1,
    .migrations = consent_migrations,
    .n_migrations = &consent_migrations_count,
    .vars = consent_vars,
    .n_vars = sizeof consent_vars / sizeof consent_vars[0],
    .start = start,
    .stop = stop,
    .reload = reload,
};

int main(int argc, char **argv)
{
    return veil_service_main(argc, argv, &spec);
}
