/*
 * metrics.c - what the gateway exports besides the RPC layer's call counts
 * (veil/metrics.h): logins by app kind and outcome, releases by attribute,
 * the revocation/consent cache, the change feeds' lag, and the key versions
 * in use (assertion, pseudonym, receipt) with the age of an open assertion or
 * pseudonym rotation overlap.  Labels name kinds,
 * outcomes, attributes and feeds: never an app id, a subject or a pseudonym.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "gateway.h"
#include "store.h"
#include "veil/codec.h"
#include "veil/feed.h"
#include "veil/log.h"
#include "veil/metrics.h"

static veil_metric *m_logins, *m_releases;

static void collect(void *arg, veil_metrics_out *out)
{
    struct gateway *gw = arg;
    if (gw->cache) {
        uint64_t hits, misses;
        gw_cache_stats(gw->cache, &hits, &misses);
        veil_metrics_emit(out, "veil_gateway_cache_hits_total", "counter",
                          "revocation/consent answers served from the cache", NULL, (double)hits);
        veil_metrics_emit(out, "veil_gateway_cache_misses_total", "counter",
                          "revocation/consent answers that had to be asked for", NULL,
                          (double)misses);
    }
    static const char *const feeds[2] = {"revocation", "consent"};
    for (int i = 0; i < 2; i++) {
        if (!gw->feeds[i])
            continue;
        char labels[64];
        snprintf(labels, sizeof labels, "feed=\"%s\"", feeds[i]);
        veil_metrics_emit(out, "veil_feed_lag_seconds", "gauge",
                          "time since the change feed was last known current (a good poll)", labels,
                          (double)veil_follower_age_ms(gw->feeds[i]) / 1000.0);
    }
    for (int i = 0; i < 2; i++) {
        if (!gw->feeds[i])
            continue;
        char labels[64];
        snprintf(labels, sizeof labels, "feed=\"%s\"", feeds[i]);
        veil_metrics_emit(out, "veil_feed_healthy", "gauge",
                          "1 while the feed is current and the cache may answer", labels,
                          veil_follower_healthy(gw->feeds[i]));
    }
    struct {
        const char *kind;
        uint32_t current, previous;
    } keys[3] = {
        {"assertion", atomic_load(&gw->keys.assertion_current),
         atomic_load(&gw->keys.assertion_previous)},
        {"pseudonym", atomic_load(&gw->keys.pseudonym_current),
         atomic_load(&gw->keys.pseudonym_previous)},
        /* the version the gateway names in each consent grant; the consent service signs with it */
        {"receipt", atomic_load(&gw->keys.receipt_current),
         atomic_load(&gw->keys.receipt_previous)},
    };
    for (int i = 0; i < 3; i++) {
        veil_metrics_key_version(out, keys[i].kind, "current", keys[i].current);
        if (keys[i].previous)
            veil_metrics_key_version(out, keys[i].kind, "previous", keys[i].previous);
    }
    for (int i = 0; i < 2; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "kind=\"%s\"", keys[i].kind);
        veil_metrics_emit(out, "veil_key_overlap_started_timestamp_seconds", "gauge",
                          "when the open rotation overlap began (0: none open)", labels,
                          (double)atomic_load(&gw->key_overlap_since_ms[i]) / 1000.0);
    }
}

void gw_metrics_start(struct gateway *gw)
{
    m_logins = veil_metric_counter(
        "veil_logins_total",
        "logins by app kind, door (grpc: CompleteLogin; oidc: an OpenID Connect request approved "
        "by phone or card) and outcome (a gRPC status)",
        "app_kind,door,outcome");
    m_releases = veil_metric_counter("veil_releases_total",
                                     "attributes released to apps, by attribute", "attribute");
    gw_metrics_refresh_keys(gw);
    if (veil_metrics_add_collector(collect, gw) != 0)
        veil_log(VEIL_LOG_WARN, "no room for the gateway's metrics collector", VL_END);
}

void gw_metrics_stop(struct gateway *gw)
{
    veil_metrics_remove_collector(collect, gw);
}

void gw_metrics_login_done(const char *kind, const char *door, veil_err err,
                           char *const *released, size_t n_released)
{
    veil_metric_add(m_logins, 1,
                    (const char *[]){kind, door, veil_status_name(veil_err_status(err))});
    for (size_t i = 0; err == VEIL_OK && i < n_released; i++)
        veil_metric_add(m_releases, 1, (const char *[]){released[i]});
}

void gw_metrics_login(struct gateway *gw, veil_call *call, veil_err err,
                      const Veil__Gateway__CompleteLoginResponse *resp)
{
    gw_app app;
    const char *kind = gw_calling_app(gw, call, &app) == VEIL_OK ? app.kind : "unknown";
    gw_metrics_login_done(kind, "grpc", err, resp->released, resp->n_released);
}

void gw_metrics_refresh_keys(struct gateway *gw)
{
    static const char *const kinds[2] = {"assertion", "pseudonym"};
    for (int i = 0; i < 2; i++) {
        int64_t since;
        if (gw_store_key_overlap_since(gw->store, kinds[i], &since) == VEIL_OK)
            atomic_store(&gw->key_overlap_since_ms[i], since);
    }
}
