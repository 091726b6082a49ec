/*
 * feed_propagation.c - how long a committed change takes to reach a
 * consumer of the change feed, measured from the outside.
 *
 * Against a running revocation service it starts a follower (veil/feed.h,
 * as the gateway runs one), then makes N device revocations one at a time,
 * each after a pause so the follower is parked in its long-poll, and takes
 * for each the time from the mutation RPC's return (the change is
 * committed) to the follower's callback for it.  A callback that comes
 * before the client has seen its own reply counts as 0.  It starts nothing
 * itself:
 *
 *   feed_propagation --addr HOST:PORT --ca CA --cert CERT --key KEY [-n N] [--pause-ms MS]
 *                    [--writers W]
 *
 * (or VEIL_BENCH_ADDR, VEIL_BENCH_CA, VEIL_BENCH_CERT, VEIL_BENCH_KEY), as
 * an identity the service lets call RevokeDevice and Changes (the gateway's
 * certificate).  With --writers W it first measures how many mutations per
 * second W concurrent writers get through the feed's serialised append
 * (each writes for about 3 seconds).  The last line of its output is
 *
 *   feed: propagation_p50_ms=... p99_ms=... max_ms=... n=...
 */
#include <getopt.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "veil/codec.h"
#include "veil/feed.h"
#include "veil/revocation.pb-c.h"

#define TIMEOUT_MS 10000

/* The change the benchmark waits for, and when the follower handed it over. */
struct probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char device[33];
    int64_t seen_ns; /* 0 until the follower applies the change */
};

static void apply(const Veil__Change *c, void *ctx)
{
    struct probe *p = ctx;
    int64_t now = veil_mono_ns();
    pthread_mutex_lock(&p->mu);
    if (strcmp(c->kind, "device_revoked") == 0 && strcmp(c->device_id, p->device) == 0) {
        p->seen_ns = now;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

/* One concurrent writer of the throughput phase. */
struct writer {
    veil_channel *ch;
    int64_t until_ns;
    long done;
    int failed;
};

/* Revokes random devices of random subjects until the time is up. */
static void *write_loop(void *arg)
{
    struct writer *w = arg;
    unsigned char subject[32], id[16];
    char device[33];
    while (veil_mono_ns() < w->until_ns) {
        Veil__Revocation__RevokeDeviceRequest req = VEIL__REVOCATION__REVOKE_DEVICE_REQUEST__INIT;
        Veil__Empty *resp;
        veil_status st;
        randombytes_buf(subject, sizeof subject);
        randombytes_buf(id, sizeof id);
        veil_hex_encode(device, sizeof device, id, sizeof id);
        req.subject_ref.data = subject;
        req.subject_ref.len = sizeof subject;
        req.device_id = device;
        if (veil_channel_call(w->ch, "RevokeDevice", &req.base, NULL, TIMEOUT_MS, &resp, &st) !=
            VEIL_OK) {
            w->failed = 1;
            break;
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        w->done++;
    }
    veil_client_thread_done();
    return NULL;
}

/* Runs n writers for about 3 s; prints mutations per second.  Returns 0 or -1. */
static int throughput(veil_channel *ch, long n)
{
    struct writer w[64];
    pthread_t t[64];
    int64_t t0 = veil_mono_ns();
    long total = 0;
    int failed = 0;
    for (long i = 0; i < n; i++) {
        w[i] = (struct writer){.ch = ch, .until_ns = t0 + 3000000000LL};
        pthread_create(&t[i], NULL, write_loop, &w[i]);
    }
    for (long i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        total += w[i].done;
        failed |= w[i].failed;
    }
    double secs = (double)(veil_mono_ns() - t0) / 1e9;
    if (failed) {
        fprintf(stderr, "feed_propagation: a writer's RevokeDevice failed\n");
        return -1;
    }
    printf("feed: writers=%ld mutations=%ld mutations_per_s=%.0f\n", n, total, total / secs);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *opt_or_env(const char *opt, const char *env)
{
    return opt ? opt : getenv(env);
}

static void usage(void)
{
    fprintf(stderr, "usage: feed_propagation --addr HOST:PORT --ca CA --cert CERT --key KEY "
                    "[-n N] [--pause-ms MS] [--writers W]\n");
    exit(2);
}

/* Waits up to 10 s for the probe's change; returns the time it was seen, or 0. */
static int64_t await_change(struct probe *p)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&p->mu);
    while (!p->seen_ns)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) != 0)
            break;
    int64_t seen = p->seen_ns;
    pthread_mutex_unlock(&p->mu);
    return seen;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *ca = NULL, *cert = NULL, *key = NULL;
    long n = 200, pause_ms = 20, writers = 0;
    static const struct option opts[] = {
        {"addr", required_argument, NULL, 'a'},
        {"ca", required_argument, NULL, 'c'},
        {"cert", required_argument, NULL, 'e'},
        {"key", required_argument, NULL, 'k'},
        {"pause-ms", required_argument, NULL, 'p'},
        {"writers", required_argument, NULL, 'w'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        switch (o) {
        case 'a':
            addr = optarg;
            break;
        case 'c':
            ca = optarg;
            break;
        case 'e':
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'p':
            pause_ms = strtol(optarg, NULL, 10);
            break;
        case 'n':
            n = strtol(optarg, NULL, 10);
            break;
        case 'w':
            writers = strtol(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    addr = opt_or_env(addr, "VEIL_BENCH_ADDR");
    ca = opt_or_env(ca, "VEIL_BENCH_CA");
    cert = opt_or_env(cert, "VEIL_BENCH_CERT");
    key = opt_or_env(key, "VEIL_BENCH_KEY");
    if (!addr || !ca || !cert || !key || n < 1 || n > 100000 || pause_ms < 0 || writers < 0 ||
        writers > 64)
        usage();
    if (sodium_init() < 0)
        return 1;

    char err[512];
    veil_tls_config tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    veil_channel *ch;
    if (veil_channel_new(addr, &tls, &veil__revocation__revocation__descriptor, NULL, &ch, err,
                         sizeof err) != VEIL_OK) {
        fprintf(stderr, "feed_propagation: %s\n", err);
        return 1;
    }
    if (writers && throughput(ch, writers) != 0)
        return 1;
    struct probe probe = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    veil_follower_config cfg = {.channel = ch,
                                .after_seq = VEIL_FEED_FROM_HEAD,
                                .wait_ms = 10000,
                                .apply = apply,
                                .ctx = &probe,
                                .name = "revocation"};
    veil_follower *f;
    if (veil_follower_start(&cfg, &f) != VEIL_OK)
        return 1;
    for (int i = 0; i < 500 && !veil_follower_healthy(f); i++)
        sleep_ms(10);
    if (!veil_follower_healthy(f)) {
        fprintf(stderr, "feed_propagation: the follower did not catch up with %s\n", addr);
        return 1;
    }

    bench_lat lag = {0};
    long early = 0;
    unsigned char subject[32];
    int status = 0;
    for (long i = 0; i < n; i++) {
        sleep_ms(pause_ms);
        Veil__Revocation__RevokeDeviceRequest req = VEIL__REVOCATION__REVOKE_DEVICE_REQUEST__INIT;
        Veil__Empty *resp;
        veil_status st;
        unsigned char id[16];
        randombytes_buf(subject, sizeof subject); /* a fresh citizen each time */
        randombytes_buf(id, sizeof id);
        pthread_mutex_lock(&probe.mu);
        veil_hex_encode(probe.device, sizeof probe.device, id, sizeof id);
        probe.seen_ns = 0;
        pthread_mutex_unlock(&probe.mu);
        req.subject_ref.data = subject;
        req.subject_ref.len = sizeof subject;
        req.device_id = probe.device;
        if (veil_channel_call(ch, "RevokeDevice", &req.base, NULL, TIMEOUT_MS, &resp, &st) !=
            VEIL_OK) {
            fprintf(stderr, "feed_propagation: RevokeDevice: %s %s\n", veil_status_name(st.code),
                    st.message);
            status = 1;
            break;
        }
        int64_t committed = veil_mono_ns();
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        int64_t seen = await_change(&probe);
        if (!seen) {
            fprintf(stderr, "feed_propagation: change %ld never reached the follower\n", i);
            status = 1;
            break;
        }
        bench_lat_add(&lag, seen > committed ? (double)(seen - committed) / 1e6 : 0);
        early += seen <= committed;
    }
    veil_follower_stop(f);
    veil_channel_free(ch);
    veil_client_thread_done();
    if (status == 0 && lag.n == (size_t)n) {
        printf("feed: %ld changes, one every %ld ms plus a round trip; %ld seen by the follower "
               "before their own reply\n",
               n, pause_ms, early);
        double p50 = bench_lat_pct(&lag, 50), p99 = bench_lat_pct(&lag, 99);
        double max = bench_lat_pct(&lag, 100);
        printf("feed: propagation_p50_ms=%.3f p99_ms=%.3f max_ms=%.3f n=%ld\n", p50, p99, max, n);
    } else if (status == 0) {
        fprintf(stderr, "feed_propagation: out of memory recording latencies\n");
        status = 1;
    }
    bench_lat_free(&lag);
    return status;
}
