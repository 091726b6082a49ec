/*
 * main.c - the gateway: configuration, keys, channels to the internal
 * services, the background poller, and the `seed-apps` command.
 *
 * The poller reloads the app registry and the key rotation state when
 * another replica changed them (every 500 ms), sweeps expired challenges,
 * and trusts the revocation/consent caches only while both change feeds
 * are healthy (checked every 100 ms).  The feed followers drop cached
 * answers about a subject as soon as a change about it commits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "gateway.h"
#include "store.h"
#include "veil/feed.h"
#include "veil/log.h"
#include "veil/consent.pb-c.h"
#include "veil/pseudonym.pb-c.h"
#include "veil/revocation.pb-c.h"
#include "veil/service.h"
#include "veil/vault.pb-c.h"

static struct {
    char *vault, *consent, *revocation, *pseudonym, *issuer;
    char *admin_addr, *admin_cert, *admin_key, *admin_ca;
    int64_t assertion_ttl_s, challenge_ttl_s, cache_entries, event_batch_ms, event_settle_ms;
} cfg;

static const veil_config_var gateway_vars[] = {
    {"GATEWAY_VAULT_ADDR", VEIL_CFG_ADDR, "127.0.0.1:7101", 0, &cfg.vault, 0, 0,
     "host:port of the vault"},
    {"GATEWAY_CONSENT_ADDR", VEIL_CFG_ADDR, "127.0.0.1:7102", 0, &cfg.consent, 0, 0,
     "host:port of the consent service"},
    {"GATEWAY_REVOCATION_ADDR", VEIL_CFG_ADDR, "127.0.0.1:7103", 0, &cfg.revocation, 0, 0,
     "host:port of the revocation service"},
    {"GATEWAY_PSEUDONYM_ADDR", VEIL_CFG_ADDR, "127.0.0.1:7104", 0, &cfg.pseudonym, 0, 0,
     "host:port of the pseudonym service"},
    {"GATEWAY_ISSUER", VEIL_CFG_STRING, "https://veil.invalid", 0, &cfg.issuer, 0, 0,
     "the iss of assertions and events"},
    {"GATEWAY_ASSERTION_TTL_S", VEIL_CFG_INT, "300", 0, &cfg.assertion_ttl_s, 30, 3600,
     "lifetime of an assertion"},
    {"GATEWAY_CHALLENGE_TTL_S", VEIL_CFG_INT, "120", 0, &cfg.challenge_ttl_s, 10, 900,
     "lifetime of a login challenge"},
    {"GATEWAY_ADMIN_ADDR", VEIL_CFG_ADDR, "127.0.0.1:7110", 0, &cfg.admin_addr, 0, 0,
     "host:port of the Admin API's own listener (never the public port)"},
    {"GATEWAY_ADMIN_TLS_CERT", VEIL_CFG_FILE, NULL, 0, &cfg.admin_cert, 0, 0,
     "certificate of the admin listener (PEM; default VEIL_TLS_CERT)"},
    {"GATEWAY_ADMIN_TLS_KEY", VEIL_CFG_FILE, NULL, 0, &cfg.admin_key, 0, 0,
     "its private key (PEM; default VEIL_TLS_KEY)"},
    {"GATEWAY_ADMIN_TLS_CA", VEIL_CFG_FILE, NULL, 0, &cfg.admin_ca, 0, 0,
     "CA that signs admin client certificates (PEM; default VEIL_TLS_CA)"},
    {"GATEWAY_CACHE_ENTRIES", VEIL_CFG_INT, "200000", 0, &cfg.cache_entries, 0, 100000000,
     "revocation/consent answers kept in memory (0: no cache)"},
    {"GATEWAY_EVENT_BATCH_MS", VEIL_CFG_INT, "3600000", 0, &cfg.event_batch_ms, 1000, 86400000,
     "events reach apps in batches of this period, the same for every app (docs/threat-model.md)"},
    {"GATEWAY_EVENT_SETTLE_MS", VEIL_CFG_INT, "30000", 0, &cfg.event_settle_ms, 0, 600000,
     "a batch is released this long after it closes, once every event in it has committed"},
};

/*
 * A change from revocation or consent: drop what the cache holds about its
 * subject, or everything when it concerns an app as a whole.
 */
static void apply_change(const Veil__Change *c, void *ctx)
{
    struct gateway *gw = ctx;
    if (c->subject_ref.len == 32)
        gw_cache_invalidate_subject(gw->cache, c->subject_ref.data);
    else
        gw_cache_invalidate_all(gw->cache);
}

/* The caches answer only while both feeds are current. */
static void check_feeds(struct gateway *gw)
{
    int healthy = gw->feeds[0] && gw->feeds[1] && veil_follower_healthy(gw->feeds[0]) &&
                  veil_follower_healthy(gw->feeds[1]);
    gw_cache_set_usable(gw->cache, healthy);
}

static veil_err start_feeds(struct gateway *gw, char *errbuf, size_t errlen)
{
    veil_channel *channels[2] = {gw->revocation, gw->consent};
    const char *names[2] = {"revocation", "consent"};
    for (int i = 0; i < 2; i++) {
        veil_follower_config fc = {
            .channel = channels[i],
            .after_seq = VEIL_FEED_FROM_HEAD, /* the cache starts empty: history is not needed */
            .wait_ms = 800,                   /* a quiet feed still answers this often ... */
            .stale_ms = 1200,                 /* ... so a silent one is distrusted within ~1 s */
            .apply = apply_change,
            .ctx = gw,
            .name = names[i],
        };
        if (veil_follower_start(&fc, &gw->feeds[i]) != VEIL_OK) {
            snprintf(errbuf, errlen, "cannot follow the %s change feed", names[i]);
            return VEIL_ERR_NOMEM;
        }
    }
    return VEIL_OK;
}

static void *poller_main(void *arg)
{
    struct gateway *gw = arg;
    int ticks = 0, failing = 0;
    while (!atomic_load(&gw->stopping)) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        check_feeds(gw);
        if (++ticks % 5)
            continue;
        veil_err err = gw_refresh(gw, 0);
        if (err && !failing)
            veil_log(VEIL_LOG_WARN, "cannot refresh the registry", VL_STR("error", veil_err_name(err)),
                     VL_END);
        failing = err != VEIL_OK;
        if (ticks % 300 == 0) { /* every 30 s */
            gw_metrics_refresh_keys(gw);
            int64_t removed;
            if (gw_store_challenge_sweep(gw->store, &removed) == VEIL_OK && removed)
                veil_log(VEIL_LOG_DEBUG, "expired challenges removed", VL_INT("count", removed),
                         VL_END);
        }
    }
    veil_client_thread_done();
    return NULL;
}

static veil_err open_channel(const veil_service_ctx *ctx, const char *addr,
                             const ProtobufCServiceDescriptor *d, veil_channel **out, char *errbuf,
                             size_t errlen)
{
    return veil_channel_new(addr, &ctx->tls, d, NULL, out, errbuf, errlen);
}

static void stop(void *state);

/*
 * The Admin API on a listener of its own: its own port (reachable only where
 * the network lets operators in, never through the public Service) and its
 * own certificate and client CA if configured.  A client certificate is
 * required; the public port does not host the Admin service at all.
 */
static veil_err start_admin_listener(struct gateway *gw, const veil_service_ctx *ctx, char *errbuf,
                                     size_t errlen)
{
    if ((cfg.admin_cert == NULL) != (cfg.admin_key == NULL)) {
        snprintf(errbuf, errlen, "GATEWAY_ADMIN_TLS_CERT and GATEWAY_ADMIN_TLS_KEY go together");
        return VEIL_ERR_INVALID;
    }
    veil_server_config sc = {
        .listen_addr = cfg.admin_addr,
        .tls = ctx->tls,
        .trust_domain = ctx->trust_domain,
        .workers = 2,
        .waiters = 1,
        .max_message_bytes = 1 << 20,
    };
    if (cfg.admin_cert) {
        sc.tls.cert_file = cfg.admin_cert;
        sc.tls.key_file = cfg.admin_key;
    }
    if (cfg.admin_ca)
        sc.tls.ca_file = cfg.admin_ca;
    int port = 0;
    veil_err err;
    if ((err = veil_server_new(&sc, &gw->admin_server, errbuf, errlen)) ||
        (err = veil_server_add(gw->admin_server, &gw->admin.base, gw_admin_policy,
                               gw_admin_policy_len, errbuf, errlen)) ||
        (err = veil_server_start(gw->admin_server, &port, errbuf, errlen)))
        return err;
    veil_log(VEIL_LOG_INFO, "admin listener serving", VL_STR("addr", cfg.admin_addr),
             VL_INT("port", port), VL_END);
    return VEIL_OK;
}

static veil_err start(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen)
{
    struct gateway *gw = calloc(1, sizeof *gw);
    if (!gw)
        return VEIL_ERR_NOMEM;
    *state = gw;
    gw->login = gw_login_rpc;
    gw->wallet = gw_wallet_rpc;
    gw->admin = gw_admin_rpc;
    gw->counter = gw_counter_rpc;
    gw->issuer = cfg.issuer;
    gw->trust_domain = ctx->trust_domain;
    gw->assertion_ttl_s = cfg.assertion_ttl_s;
    gw->challenge_ttl_s = cfg.challenge_ttl_s;
    gw->event_batch_ms = cfg.event_batch_ms;
    gw->event_settle_ms = cfg.event_settle_ms;
    gw->rpc_timeout_ms = ctx->rpc_timeout_ms;
    pthread_rwlock_init(&gw->registry.lock, NULL);
    gw->registry.version = -1;
    atomic_store(&gw->scopes_version, -1);

    veil_err err;
    if ((err = gw_keys_open(&gw->keys, ctx->keys_dir, errbuf, errlen)))
        return err;
    atomic_store(&gw->keys.state_version, -1);
    if ((err = gw_store_open(ctx->database_url, &gw->store)) ||
        (err = gw_cache_new((size_t)cfg.cache_entries, &gw->cache))) {
        snprintf(errbuf, errlen, "cannot set up the gateway's store");
        return err;
    }
    /* Which key versions are in use is in the database (key_state), never the newest file. */
    if ((err = gw_refresh(gw, 1))) {
        snprintf(errbuf, errlen, "cannot read the registry and key state from the database (%s)",
                 veil_err_name(err));
        return err;
    }
    if (!gw_keys_signer(&gw->keys, atomic_load(&gw->keys.assertion_current))) {
        snprintf(errbuf, errlen, "no key file assertion-%u.key for the current assertion key",
                 atomic_load(&gw->keys.assertion_current));
        return VEIL_ERR_PRECONDITION;
    }
    if ((err = open_channel(ctx, cfg.vault, &veil__vault__vault__descriptor, &gw->vault, errbuf,
                            errlen)) ||
        (err = open_channel(ctx, cfg.consent, &veil__consent__consent__descriptor, &gw->consent,
                            errbuf, errlen)) ||
        (err = open_channel(ctx, cfg.revocation, &veil__revocation__revocation__descriptor,
                            &gw->revocation, errbuf, errlen)) ||
        (err = open_channel(ctx, cfg.pseudonym, &veil__pseudonym__pseudonym__descriptor,
                            &gw->pseudonym, errbuf, errlen)))
        return err;
    if (cfg.cache_entries > 0 && (err = start_feeds(gw, errbuf, errlen)))
        return err;
    (void)gw_push_scopes(gw); /* the vault may not be up yet: the poller retries */
    if (pthread_create(&gw->poller, NULL, poller_main, gw) != 0) {
        snprintf(errbuf, errlen, "cannot start the registry poller");
        return VEIL_ERR_NOMEM;
    }
    gw->poller_started = 1;
    gw_metrics_start(gw);
    veil_log(VEIL_LOG_INFO, "gateway ready", VL_INT("apps", (long long)gw->registry.n),
             VL_INT("assertion_key", atomic_load(&gw->keys.assertion_current)), VL_END);
    if ((err = veil_server_add(ctx->server, &gw->login.base, gw_login_policy, gw_login_policy_len,
                               errbuf, errlen)) ||
        (err = veil_server_add(ctx->server, &gw->wallet.base, gw_wallet_policy,
                               gw_wallet_policy_len, errbuf, errlen)) ||
        (err = veil_server_add(ctx->server, &gw->counter.base, gw_counter_policy,
                               gw_counter_policy_len, errbuf, errlen)) ||
        (err = start_admin_listener(gw, ctx, errbuf, errlen)))
        return err;
    return VEIL_OK;
}

static void reload(void *state)
{
    gw_keys_reload(&((struct gateway *)state)->keys);
}

static void stop(void *state)
{
    struct gateway *gw = state;
    veil_server_free(gw->admin_server); /* drains it first: the public port already drained */
    gw_metrics_stop(gw);
    atomic_store(&gw->stopping, 1);
    if (gw->poller_started)
        pthread_join(gw->poller, NULL);
    for (int i = 0; i < 2; i++)
        veil_follower_stop(gw->feeds[i]);
    if (gw->cache) {
        uint64_t hits, misses;
        gw_cache_stats(gw->cache, &hits, &misses);
        veil_log(VEIL_LOG_INFO, "cache statistics", VL_INT("cache_hits", (long long)hits),
                 VL_INT("cache_misses", (long long)misses), VL_END);
    }
    veil_channel_free(gw->vault);
    veil_channel_free(gw->consent);
    veil_channel_free(gw->revocation);
    veil_channel_free(gw->pseudonym);
    gw_cache_free(gw->cache);
    gw_store_close(gw->store);
    gw_registry_free(&gw->registry);
    pthread_rwlock_destroy(&gw->registry.lock);
    if (gw->keys.ring)
        gw_keys_close(&gw->keys);
    free(gw);
    veil_client_thread_done();
}

/* ---- gateway seed-apps FILE ---- */

/* Splits a TSV line in place into at most max fields; returns how many. */
static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; n < max;) {
        f[n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab)
            break;
        *tab = '\0';
        p = tab + 1;
    }
    return n;
}

/*
 * Registers every app of a registry TSV file (see db/gateway/sample/) that is
 * not registered yet; apps already present are left as they are, so running
 * it again is safe and never undoes an administrator's change.
 */
static int seed_apps(const veil_service_ctx *ctx, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gateway seed-apps FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        fprintf(stderr, "gateway seed-apps: cannot open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    struct gw_store *store;
    if (gw_store_open(ctx->database_url, &store) != VEIL_OK) {
        fclose(f);
        return 1;
    }
    char line[4096];
    int lineno = 0, added = 0, kept = 0, status = 0, header = 1;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (header) { /* the column names */
            header = 0;
            continue;
        }
        char *c[6];
        gw_app app = {0};
        char bad[64] = "";
        if (split_tabs(line, c, 6) != 6 || !veil_ident_valid(c[0]) || !veil_ident_valid(c[2]) ||
            !gw_kind_valid(c[1]) ||
            gw_scope_parse(c[4], &app.scope, bad, sizeof bad) != 0 || !gw_text_ok(c[5], 200)) {
            fprintf(stderr, "gateway seed-apps: %s:%d: malformed line%s%s\n", argv[1], lineno,
                    bad[0] ? ", unknown attribute " : "", bad);
            status = 1;
            break;
        }
        if (gw_kind_derived_only(c[1]) && (app.scope & gw_scope_raw())) {
            fprintf(stderr, "gateway seed-apps: %s:%d: a %s app may not hold raw attributes\n",
                    argv[1], lineno, c[1]);
            status = 1;
            break;
        }
        snprintf(app.id, sizeof app.id, "%s", c[0]);
        snprintf(app.kind, sizeof app.kind, "%s", c[1]);
        snprintf(app.sector, sizeof app.sector, "%s", c[2]);
        snprintf(app.status, sizeof app.status, "active");
        snprintf(app.cert_identity, sizeof app.cert_identity, "spiffe://%s/app/%s",
                 ctx->trust_domain, app.id);
        const char *refusal = NULL;
        veil_err err = gw_store_insert_app(store, &app, c[5], c[3], &refusal);
        if (err == VEIL_ERR_EXISTS) {
            kept++;
        } else if (err) {
            fprintf(stderr, "gateway seed-apps: %s:%d: %s\n", argv[1], lineno,
                    refusal ? refusal : veil_err_message(err));
            status = 1;
            break;
        } else {
            added++;
        }
    }
    fclose(f);
    gw_store_close(store);
    if (!status)
        printf("gateway seed-apps: %d app(s) registered, %d already present\n", added, kept);
    return status;
}

static const veil_command commands[] = {
    {"seed-apps", "seed-apps FILE   register the apps of a registry file (idempotent)", seed_apps},
};

extern const veil_migration gateway_migrations[];
extern const size_t gateway_migrations_count;

static const veil_service_spec spec = {
    .name = "gateway",
    .default_listen = "127.0.0.1:7100",
    .client_cert_optional = 1, /* wallets connect without a client certificate */
    .needs_keys = 1,
    .migrations = gateway_migrations,
    .n_migrations = &gateway_migrations_count,
    .vars = gateway_vars,
    .n_vars = sizeof gateway_vars / sizeof gateway_vars[0],
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
