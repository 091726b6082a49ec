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

#include "appfile.h"
#include "cache.h"
#include "gateway.h"
#include "oidc.h"
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
    int64_t login_batch_max;
    char *oidc_listen, *oidc_issuer, *oidc_cert, *oidc_key, *oidc_rs256;
    int64_t oidc_request_ttl_s, oidc_id_token_ttl_s, oidc_access_ttl_s, oidc_rate_addr,
        oidc_rate_client;
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
    {"GATEWAY_LOGIN_BATCH_MAX", VEIL_CFG_INT, "64", 0, &cfg.login_batch_max, 1, GW_BATCH_MAX,
     "most logins one batched internal call carries (1: every login alone)"},
    {"GATEWAY_CACHE_ENTRIES", VEIL_CFG_INT, "200000", 0, &cfg.cache_entries, 0, 100000000,
     "revocation/consent answers kept in memory (0: no cache)"},
    {"GATEWAY_EVENT_BATCH_MS", VEIL_CFG_INT, "3600000", 0, &cfg.event_batch_ms, 1000, 86400000,
     "events reach apps in batches of this period, the same for every app (docs/threat-model.md)"},
    {"GATEWAY_EVENT_SETTLE_MS", VEIL_CFG_INT, "30000", 0, &cfg.event_settle_ms, 0, 600000,
     "a batch is released this long after it closes, once every event in it has committed"},
    {"GATEWAY_OIDC_LISTEN", VEIL_CFG_STRING, "", 0, &cfg.oidc_listen, 0, 0,
     "host:port of the OpenID Connect door (HTTPS; empty: closed)"},
    {"GATEWAY_OIDC_ISSUER", VEIL_CFG_STRING, "", 0, &cfg.oidc_issuer, 0, 0,
     "its issuer URL (default https://127.0.0.1:<port>)"},
    {"GATEWAY_OIDC_CERT", VEIL_CFG_STRING, "", 0, &cfg.oidc_cert, 0, 0,
     "HTTPS certificate (PEM; default VEIL_TLS_CERT)"},
    {"GATEWAY_OIDC_KEY", VEIL_CFG_STRING, "", 0, &cfg.oidc_key, 0, 0,
     "HTTPS key (PEM; default VEIL_TLS_KEY)"},
    {"GATEWAY_OIDC_RS256_KEY", VEIL_CFG_STRING, "", 0, &cfg.oidc_rs256, 0, 0,
     "RSA private key (PEM) for RS256 ID tokens (empty: EdDSA only)"},
    {"GATEWAY_OIDC_REQUEST_TTL_S", VEIL_CFG_INT, "300", 0, &cfg.oidc_request_ttl_s, 2, 3600,
     "how long a login page waits for the phone"},
    {"GATEWAY_OIDC_ID_TOKEN_TTL_S", VEIL_CFG_INT, "300", 0, &cfg.oidc_id_token_ttl_s, 30, 3600,
     "lifetime of an ID token"},
    {"GATEWAY_OIDC_ACCESS_TOKEN_TTL_S", VEIL_CFG_INT, "120", 0, &cfg.oidc_access_ttl_s, 10, 3600,
     "lifetime of an access token (for /userinfo)"},
    {"GATEWAY_OIDC_RATE_PER_ADDR", VEIL_CFG_INT, "120", 0, &cfg.oidc_rate_addr, 0, 100000000,
     "requests a minute per client address at /authorize and /token (0: no limit)"},
    {"GATEWAY_OIDC_RATE_PER_CLIENT", VEIL_CFG_INT, "600", 0, &cfg.oidc_rate_client, 0, 100000000,
     "requests a minute per app at /authorize and /token (0: no limit)"},
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
            if (gw->oidc && gw_store_oidc_sweep(gw->store, &removed) == VEIL_OK && removed)
                veil_log(VEIL_LOG_DEBUG, "expired login requests and tokens removed",
                         VL_INT("count", removed), VL_END);
        }
    }
    veil_client_thread_done();
    return NULL;
}

/* A channel to one service, which must present that service's own identity (not just a name). */
static veil_err open_channel(const veil_service_ctx *ctx, const char *addr, const char *service,
                             const ProtobufCServiceDescriptor *d, veil_channel **out, char *errbuf,
                             size_t errlen)
{
    char identity[256];
    veil_tls_config tls = ctx->tls;
    snprintf(identity, sizeof identity, "spiffe://%s/svc/%s", ctx->trust_domain, service);
    tls.peer_identity = identity;
    return veil_channel_new(addr, &tls, d, NULL, out, errbuf, errlen);
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
        (err = gw_cache_new((size_t)cfg.cache_entries, &gw->cache)) ||
        (err = gw_hops_start(gw, (size_t)cfg.login_batch_max))) {
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
    if ((err = open_channel(ctx, cfg.vault, "vault", &veil__vault__vault__descriptor, &gw->vault,
                            errbuf, errlen)) ||
        (err = open_channel(ctx, cfg.consent, "consent", &veil__consent__consent__descriptor,
                            &gw->consent, errbuf, errlen)) ||
        (err = open_channel(ctx, cfg.revocation, "revocation",
                            &veil__revocation__revocation__descriptor, &gw->revocation, errbuf,
                            errlen)) ||
        (err =
             open_channel(ctx, cfg.pseudonym, "pseudonym", &veil__pseudonym__pseudonym__descriptor,
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
        (err = veil_server_limit(ctx->server, "veil.gateway.Login", gw_login_limits,
                                 gw_login_limits_len, errbuf, errlen)) ||
        (err = veil_server_limit(ctx->server, "veil.gateway.Wallet", gw_wallet_limits,
                                 gw_wallet_limits_len, errbuf, errlen)) ||
        (err = veil_server_add(ctx->server, &gw->counter.base, gw_counter_policy,
                               gw_counter_policy_len, errbuf, errlen)) ||
        (err = start_admin_listener(gw, ctx, errbuf, errlen)))
        return err;
    gw_oidc_config oc = {
        .listen = cfg.oidc_listen,
        .issuer = cfg.oidc_issuer,
        .cert = cfg.oidc_cert,
        .key = cfg.oidc_key,
        .rs256_key = cfg.oidc_rs256,
        .request_ttl_s = cfg.oidc_request_ttl_s,
        .id_token_ttl_s = cfg.oidc_id_token_ttl_s,
        .access_token_ttl_s = cfg.oidc_access_ttl_s,
        .rate_per_addr = cfg.oidc_rate_addr,
        .rate_per_client = cfg.oidc_rate_client,
    };
    return gw_oidc_start(gw, ctx, &oc, errbuf, errlen);
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
    gw_oidc_stop(gw);
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
    gw_hops_stop(gw); /* its threads finish what is queued, through the channels */
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

/* A file entry as a registry entry, checked as the Admin API checks one; 0 or -1 with why. */
static int seed_entry(const veil_service_ctx *ctx, const Veil__Gateway__App *m, gw_app *app,
                      char *why, size_t len)
{
    char csv[1024] = "", bad[64] = "";
    memset(app, 0, sizeof *app);
    for (size_t i = 0; i < m->n_attributes; i++) {
        if (i)
            strncat(csv, ",", sizeof csv - strlen(csv) - 1);
        strncat(csv, m->attributes[i], sizeof csv - strlen(csv) - 1);
    }
    if (!veil_ident_valid(m->app_id) || !veil_ident_valid(m->sector_id) ||
        !gw_kind_valid(m->kind) || !gw_text_ok(m->name, 200) ||
        (m->organisation[0] && !gw_text_ok(m->organisation, 200))) {
        snprintf(why, len, "malformed entry");
        return -1;
    }
    if (gw_scope_parse(csv, &app->scope, bad, sizeof bad) != 0) {
        snprintf(why, len, "unknown attribute %s", bad);
        return -1;
    }
    if (gw_kind_derived_only(m->kind) && (app->scope & gw_scope_raw())) {
        snprintf(why, len, "a %s app may not hold raw attributes", m->kind);
        return -1;
    }
    snprintf(app->id, sizeof app->id, "%s", m->app_id);
    snprintf(app->kind, sizeof app->kind, "%s", m->kind);
    snprintf(app->sector, sizeof app->sector, "%s", m->sector_id);
    snprintf(app->status, sizeof app->status, "active");
    snprintf(app->cert_identity, sizeof app->cert_identity, "spiffe://%s/app/%s", ctx->trust_domain,
             app->id);
    return 0;
}

/*
 * Registers every app of a registry file (JSON, YAML or the sample TSV: see
 * appfile.h) that is not registered yet, with the plan `veilctl admin apps
 * apply` uses, restricted to additions: apps already present are left as
 * they are, so running it again is safe and never undoes an administrator's
 * change.  New apps start active (a status in the file is applied by
 * `veilctl admin apps apply`, which also tells the revocation service).
 */
static int seed_apps(const veil_service_ctx *ctx, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gateway seed-apps FILE\n");
        return 2;
    }
    char err[512];
    gw_appfile want;
    if (gw_appfile_load(argv[1], &want, err, sizeof err) != VEIL_OK) {
        fprintf(stderr, "gateway seed-apps: %s\n", err);
        return 1;
    }
    struct gw_store *store = NULL;
    gw_app *apps = NULL;
    size_t n_apps = 0;
    int64_t version;
    Veil__Gateway__App *have_msgs = NULL, **have = NULL;
    gw_plan plan = {0};
    int status = 1;
    if (gw_store_open(ctx->database_url, &store) != VEIL_OK ||
        gw_store_load_apps(store, &apps, &n_apps, &version) != VEIL_OK)
        goto out;
    /* additions need the ids alone */
    have_msgs = calloc(n_apps ? n_apps : 1, sizeof *have_msgs);
    have = calloc(n_apps ? n_apps : 1, sizeof *have);
    if (!have_msgs || !have)
        goto out;
    for (size_t i = 0; i < n_apps; i++) {
        veil__gateway__app__init(&have_msgs[i]);
        have_msgs[i].app_id = apps[i].id;
        have_msgs[i].status = apps[i].status;
        have[i] = &have_msgs[i];
    }
    if (gw_plan_make(&want, have, n_apps, 1, &plan) != VEIL_OK)
        goto out;
    for (size_t i = 0; i < plan.n; i++) {
        const Veil__Gateway__App *m = plan.steps[i].want;
        gw_app app;
        const char *refusal = NULL;
        if (seed_entry(ctx, m, &app, err, sizeof err) != 0) {
            fprintf(stderr, "gateway seed-apps: %s: app %s: %s\n", argv[1], m->app_id, err);
            goto out;
        }
        veil_err e = gw_store_insert_app(store, &app, m->name, m->organisation, &refusal);
        if (e) {
            fprintf(stderr, "gateway seed-apps: %s: app %s: %s\n", argv[1], m->app_id,
                    refusal ? refusal : veil_err_message(e));
            goto out;
        }
    }
    printf("gateway seed-apps: %zu app(s) registered, %zu already present\n", plan.n,
           want.n - plan.n);
    status = 0;
out:
    gw_plan_free(&plan);
    free(have);
    free(have_msgs);
    gw_apps_free(apps, n_apps);
    gw_store_close(store);
    gw_appfile_free(&want);
    return status;
}

static const veil_command commands[] = {
    {"seed-apps",
     "seed-apps FILE   register the apps of a registry file (.json, .yaml or .tsv) not yet "
     "registered (idempotent)",
     seed_apps},
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
