/*
 * system_bench.c - the whole stack under load, as apps and citizens use it.
 *
 * A load generator on libveil's asynchronous client (mTLS, one client
 * thread, many calls in flight) against a running local stack
 * (deploy/local/stack) whose vault was loaded by `vault bulk-enrol`:
 *
 *   system_bench --certs DIR --identities FILE --proofing-seed FILE
 *                [--gateway ADDR] [--admin ADDR] [--pseudonym ADDR] [--seconds S] [--active N]
 *                [--in-flight D] [--enrol N] [--revocations N] [--rate R] [--apps N]
 *                [--gateway-metrics ADDR]
 *                [--scale-active N --scale-links CMD --cache-entries N]
 *
 * Phases, each printing one `key=value` line (tests/bench/run reads them):
 *   floor:      the libsodium work one login must do (the ticket's sealed
 *               box opened + its signature verified + pseudonym PRF +
 *               assertion signature), one core and two threads
 *   enrol:      Wallet Enrol of fresh identities through the gateway
 *   consent:    the set-up grants (Wallet GrantConsent, device-signed)
 *   login:      CompleteLogin closed loop at maximum for S seconds, then open
 *               loop at a fixed offered rate (half the maximum unless --rate),
 *               then whole logins (mode=full: BeginLogin, the simulated
 *               phone's ticket, CompleteLogin) closed loop for S seconds;
 *               each line gives the load generator's own CPU per login
 *               (getrusage) and the share of the machine it took
 *   verify:     every assertion counted is verified afterwards (EdDSA over
 *               the JWKS, aud = the app, sub = the returned pseudonym)
 *   derive:     Derive and DeriveBatch straight at the pseudonym service
 *   revocation: identity revoked through the Admin API until the next login
 *               of that citizen is refused
 *   scale:      with --scale-active N, the login phases again with N other
 *               active citizens set up as returning users (phase_scale), and
 *               the ratio to the base set's figures
 *
 * With --gateway-metrics (the gateway's Prometheus listener), every login
 * line also gives the share of revocation/consent look-ups the gateway's
 * cache answered during that phase (cache_hit_rate; -1: not known).
 *
 * For the closed and open phases, tickets (BeginLogin + the wallet's
 * signature) are prepared before the phase, so it measures CompleteLogin
 * alone; the full phase makes each ticket inside the timed job, from the
 * challenge BeginLogin just returned, as a phone would.  The open loop never
 * spins: it blocks on the completion queue until the next call is due, or
 * sleeps when that is under 1 ms away.  Logins draw on
 * --active citizens spread evenly over the whole identity file, each using
 * three of the 81 apps; one of the three holds the citizen's consent for the
 * app's whole registered scope, so a third of the logins release attributes.
 * Every login requests the app's registered scope.  --apps N uses only the
 * first N active apps (each app is one mTLS connection to the gateway).
 */
#include <getopt.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "veil/client.h"
#include "veil/codec.h"
#include "veil/formats.h"
#include "veil/gateway.pb-c.h"
#include "veil/jws.h"
#include "veil/pseudonym.pb-c.h"
#include "vault.h"
#include "wallet.h"

#define APPS_MAX       128
#define APPS_PER_USER  3
#define CALL_MS        30000
#define OPEN_MAX_FLIGHT 4096
#define SCALE_WARM_PART 20000 /* logins per verified part of the large set's warm-up */
/*
 * Tickets prepared for a closed loop: 1.6 x its expected rate x its seconds,
 * the rate expected at least TICKETS_MIN_RATE: a warm-up's rate (short,
 * caches filling) under-guesses, and a loop that runs out of tickets stops
 * early ("every prepared ticket was used").
 */
#define TICKETS_MIN_RATE 3500

static size_t closed_tickets(double expected_per_s, double seconds)
{
    double rate = expected_per_s > TICKETS_MIN_RATE ? expected_per_s : TICKETS_MIN_RATE;
    return (size_t)(rate * 1.6 * seconds) + 1000;
}

struct ident {
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    unsigned char seed[32];
    char web_number[VEIL_WEB_NUMBER_LEN + 1];
};

struct app {
    char id[65];
    char **attrs;
    size_t n_attrs;
    veil_channel *ch;
};

struct bench {
    const char *gateway, *admin_addr, *pseudonym, *certs;
    double seconds, rate;
    int depth;
    long active, n_enrol, n_revocations, max_apps;
    struct ident *ids;
    size_t n_ids;
    struct app apps[APPS_MAX];
    size_t n_apps;
    unsigned char ticket_pk[32];
    uint32_t ticket_version;
    veil_jwks jwks;
    unsigned char proofing_seed[32];
    veil_channel *wallet, *admin, *pseudo;
    veil_cq *cq;
    long errors; /* every failed call or assertion, set-up and warm-ups included */
    /* the large-population part (--scale-active): see phase_scale */
    const char *metrics_addr, *scale_links;
    long scale_active, cache_entries;
    double last_hit_rate; /* the last login phase's cache hit rate (-1: not known) */
};

/* ---- set-up ---- */

static void die(const char *what)
{
    fprintf(stderr, "system_bench: %s\n", what);
    exit(1);
}

static veil_channel *channel(struct bench *b, const char *addr, const char *identity,
                             const ProtobufCServiceDescriptor *svc)
{
    char ca[512], cert[512], key[512], err[512], base[200];
    veil_tls_config t = {0};
    snprintf(ca, sizeof ca, "%s/ca.crt", b->certs);
    t.ca_file = ca;
    if (identity) { /* NULL: a citizen's phone, TLS without a client certificate */
        snprintf(base, sizeof base, "%s", identity);
        for (char *p = base; *p; p++)
            if (*p == '/')
                *p = '-';
        snprintf(cert, sizeof cert, "%s/%s.crt", b->certs, base);
        snprintf(key, sizeof key, "%s/%s.key", b->certs, base);
        t.cert_file = cert;
        t.key_file = key;
    }
    veil_channel *ch;
    veil_channel_options opt = {.own_connection = 1};
    if (veil_channel_new(addr, &t, svc, &opt, &ch, err, sizeof err) != VEIL_OK)
        die(err);
    return ch;
}

static void load_identities(struct bench *b, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[256], id[64], seed[64], wn[64];
    size_t cap = 0;
    if (!f)
        die("cannot read the identities file");
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        if (sscanf(line, "%63s %63s %63s", id, seed, wn) != 3)
            die("identities file: a line is not `device_id seed web_number`");
        if (b->n_ids == cap) {
            cap = cap ? cap * 2 : 4096;
            struct ident *grown = realloc(b->ids, cap * sizeof *grown);
            if (!grown)
                die("out of memory");
            b->ids = grown;
        }
        struct ident *x = &b->ids[b->n_ids];
        size_t len;
        if (veil_device_id_parse(id, x->device_id) != 0 ||
            sodium_base642bin(x->seed, sizeof x->seed, seed, strlen(seed), NULL, &len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            len != 32)
            die("identities file: a malformed device id or seed");
        if (strlen(wn) != VEIL_WEB_NUMBER_LEN)
            die("identities file: a malformed web number");
        memcpy(x->web_number, wn, VEIL_WEB_NUMBER_LEN + 1);
        b->n_ids++;
    }
    fclose(f);
    if (b->n_ids == 0)
        die("the identities file holds no identity");
}

static void read_seed(struct bench *b, const char *path)
{
    FILE *f = fopen(path, "r");
    char text[128];
    size_t len;
    if (!f || !fgets(text, sizeof text, f))
        die("cannot read the proofing seed");
    fclose(f);
    text[strcspn(text, "\r\n")] = '\0';
    if (sodium_base642bin(b->proofing_seed, 32, text, strlen(text), NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        len != 32)
        die("the proofing seed is not 32 bytes of base64");
}

/* The ticket key, the assertion JWKS and the apps with their registered scopes. */
static void fetch_public(struct bench *b)
{
    Veil__Empty empty = VEIL__EMPTY__INIT;
    Veil__Gateway__WalletKeysResponse *keys;
    Veil__Gateway__PublicAppsResponse *apps;
    veil_status st;
    if (veil_channel_call(b->wallet, "GetKeys", &empty.base, NULL, CALL_MS, &keys, &st) != VEIL_OK)
        die(st.message);
    if (keys->ticket_public_key.len != 32 || veil_jwks_parse(keys->gateway_jwks, &b->jwks))
        die("GetKeys returned an unusable ticket key or JWKS");
    memcpy(b->ticket_pk, keys->ticket_public_key.data, 32);
    b->ticket_version = keys->ticket_key_version;
    protobuf_c_message_free_unpacked(&keys->base, NULL);
    if (veil_channel_call(b->wallet, "ListApps", &empty.base, NULL, CALL_MS, &apps, &st) != VEIL_OK)
        die(st.message);
    size_t cap = b->max_apps > 0 && b->max_apps < APPS_MAX ? (size_t)b->max_apps : APPS_MAX;
    for (size_t i = 0; i < apps->n_apps && b->n_apps < cap; i++) {
        const Veil__Gateway__PublicApp *pa = apps->apps[i];
        if (strcmp(pa->status, "active") != 0)
            continue;
        struct app *a = &b->apps[b->n_apps++];
        char identity[80];
        snprintf(a->id, sizeof a->id, "%s", pa->app_id);
        a->n_attrs = pa->n_attributes;
        a->attrs = calloc(a->n_attrs + 1, sizeof *a->attrs);
        for (size_t k = 0; a->attrs && k < a->n_attrs; k++)
            a->attrs[k] = strdup(pa->attributes[k]);
        snprintf(identity, sizeof identity, "app/%s", a->id);
        a->ch = channel(b, b->gateway, identity, &veil__gateway__login__descriptor);
    }
    protobuf_c_message_free_unpacked(&apps->base, NULL);
    if (b->n_apps == 0)
        die("the gateway lists no active app");
}

/* ---- the gateway's metrics (plain HTTP on loopback, deploy/local/stack) ---- */

struct gw_metrics {
    int ok;                      /* 0: no --gateway-metrics, or it could not be read */
    double hits, misses;         /* veil_gateway_cache_{hits,misses}_total */
    double pseudo_cur, pseudo_prev; /* veil_key_version{kind="pseudonym",...} (0: none) */
};

/* The value of the sample line starting with name (labels included), or -1. */
static double metric_value(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        if (strncmp(l, name, n) == 0 && l[n] == ' ')
            return atof(l + n + 1);
    return -1;
}

/* GET /metrics from the gateway's metrics listener (HOST:PORT). */
static struct gw_metrics read_metrics(const struct bench *b)
{
    struct gw_metrics m = {0};
    char host[128], req[256];
    const char *colon = b->metrics_addr ? strrchr(b->metrics_addr, ':') : NULL;
    if (!colon || (size_t)(colon - b->metrics_addr) >= sizeof host)
        return m;
    memcpy(host, b->metrics_addr, (size_t)(colon - b->metrics_addr));
    host[colon - b->metrics_addr] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
        return m;
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return m;
    }
    freeaddrinfo(ai);
    struct timeval limit = {5, 0}; /* a listener that does not answer costs 5 s, not the run */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    int len = snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", host);
    size_t cap = 1 << 16, used = 0;
    char *buf = malloc(cap);
    if (buf && write(fd, req, (size_t)len) == len) {
        ssize_t got;
        while ((got = read(fd, buf + used, cap - used - 1)) > 0) {
            used += (size_t)got;
            if (used + 1 == cap) {
                char *grown = realloc(buf, cap * 2);
                if (!grown)
                    break;
                buf = grown, cap *= 2;
            }
        }
        buf[used] = '\0';
        m.hits = metric_value(buf, "veil_gateway_cache_hits_total");
        m.misses = metric_value(buf, "veil_gateway_cache_misses_total");
        m.pseudo_cur = metric_value(buf, "veil_key_version{kind=\"pseudonym\",role=\"current\"}");
        m.pseudo_prev = metric_value(buf, "veil_key_version{kind=\"pseudonym\",role=\"previous\"}");
        if (m.pseudo_prev < 0)
            m.pseudo_prev = 0; /* no rotation overlap open */
        m.ok = m.hits >= 0 && m.misses >= 0 && m.pseudo_cur > 0;
    }
    free(buf);
    close(fd);
    return m;
}

/* The share of the gateway's revocation/consent look-ups the cache answered between a and b. */
static double hit_rate(const struct gw_metrics *a, const struct gw_metrics *b)
{
    double h = b->hits - a->hits, n = h + b->misses - a->misses;
    return a->ok && b->ok && n > 0 ? h / n : -1;
}

/* ---- the call driver: closed loop (rate 0) or open loop at a fixed rate ---- */

typedef veil_err (*start_fn)(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p);
/*
 * Takes the reply (freeing it); returns 1 when the job counts as a success,
 * 0 when it failed, 2 when the job goes on with its next call (run.next).
 */
typedef int (*done_fn)(struct bench *b, void *ctx, size_t i, veil_err e, void *resp,
                       const veil_status *st);

struct run {
    size_t n;        /* jobs available */
    int depth;       /* closed loop: calls in flight */
    double rate;     /* open loop: calls started per second (0: closed loop) */
    double seconds;  /* no call starts after this */
    start_fn start;
    done_fn done;
    start_fn next; /* a job's following call, when done returned 2 (NULL: none) */
    void *ctx;
    /* results */
    bench_lat lat; /* per job: from its first call's start (open loop: due) to its last reply */
    long ok, failed, started;
    double elapsed;
    double cpu_s; /* the load generator's own CPU (user + system, all threads) in the run */
    /* open loop: whether the generator kept its schedule (else its figures are its own) */
    double send_lag_p99_ms; /* p99 of started - due, per call */
    long max_inflight;
    int cap_hit;         /* OPEN_MAX_FLIGHT reached */
    double max_poll_gap; /* longest time between two polls of the queue while sending (s) */
    char first_error[300];
};

struct slot {
    size_t i;
    double t0;
};

/*
 * An open loop whose generator fell behind: a call sent over a millisecond
 * late (p99), the queue left unpolled for over 10 ms while sending, or the
 * in-flight cap reached.  Its latencies then measure the generator.
 */
static int generator_bound(const struct run *r)
{
    return r->rate > 0 && (r->cap_hit || r->max_poll_gap > 0.010 || r->send_lag_p99_ms > 1.0);
}

static void run_calls(struct bench *b, struct run *r)
{
    struct slot *slots = calloc(r->n ? r->n : 1, sizeof *slots);
    double begin = bench_now_s(), end = begin + r->seconds, last_poll = begin;
    bench_lat send_lag = {0};
    long inflight = 0;
    size_t next = 0;
    int open = r->rate > 0;
    int cap = open ? OPEN_MAX_FLIGHT : r->depth;
    if (!slots)
        die("out of memory");
    double cpu0 = bench_cpu_s();
    for (;;) {
        double now = bench_now_s();
        /* start what is due */
        while (next < r->n && inflight < cap && now < end) {
            double due = open ? begin + (double)next / r->rate : now;
            if (due > now)
                break;
            struct slot *s = &slots[next];
            veil_pending *p;
            s->i = next;
            s->t0 = due; /* open loop: latency counts from when the call was due */
            if (r->start(b, r->ctx, next, s, &p) != VEIL_OK) {
                r->failed++;
                next++;
                continue;
            }
            next++;
            inflight++;
            r->started++;
            if (open)
                bench_lat_add(&send_lag, (bench_now_s() - due) * 1000.0);
            if (inflight > r->max_inflight)
                r->max_inflight = inflight;
            if (inflight >= cap)
                r->cap_hit = 1;
        }
        if (inflight == 0 && (next >= r->n || now >= end))
            break;
        int64_t wait_ms = 100;
        double nap_until = 0; /* open loop: sleep until then when no reply is waiting */
        if (open && next < r->n && now < end && inflight < cap) {
            double due = begin + (double)next / r->rate;
            if (due - now < 0.001) {
                /*
                 * The next call is under 1 ms away (the queue's timeout is
                 * in whole milliseconds).  First take every reply that has
                 * landed (a zero-timeout poll, which also drives the
                 * channels' reads: this is the generator's only thread), and
                 * only when none is waiting sleep until the call is due -
                 * no spinning.  Sleeping without polling starved the queue
                 * whenever calls were under 1 ms apart: replies then waited
                 * for OPEN_MAX_FLIGHT or the phase's end, and the p99 was
                 * the phase's length (performance.md, the open loop).
                 */
                wait_ms = 0;
                nap_until = due;
            } else {
                wait_ms = (int64_t)((due - now) * 1000.0); /* >= 1: sleeps on the queue */
            }
        }
        if (open && now < end && now - last_poll > r->max_poll_gap)
            r->max_poll_gap = now - last_poll;
        veil_pending *p = veil_cq_next(b->cq, wait_ms);
        last_poll = bench_now_s();
        if (!p) {
            double left = nap_until - last_poll;
            if (left > 0) {
                struct timespec ts = {0, (long)(left * 1e9)};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        void *user, *resp = NULL;
        veil_status st;
        veil_err e = veil_pending_finish(p, NULL, &resp, &st, &user);
        struct slot *s = user;
        double t = bench_now_s();
        int verdict = r->done(b, r->ctx, s->i, e, resp, &st);
        if (verdict == 2 && r->next) {
            veil_pending *np;
            if (r->next(b, r->ctx, s->i, s, &np) == VEIL_OK)
                continue; /* still in flight: its next call */
            verdict = 0;
            snprintf(st.message, sizeof st.message, "%s", "the next call did not start");
            e = VEIL_ERR_INVALID;
        }
        inflight--;
        if (verdict == 1) {
            r->ok++;
            bench_lat_add(&r->lat, (t - s->t0) * 1000.0);
        } else {
            if (!r->first_error[0])
                snprintf(r->first_error, sizeof r->first_error, "%s: %s",
                         veil_status_name(st.code), e ? st.message : "rejected reply");
            r->failed++;
        }
        r->elapsed = t - begin;
    }
    r->cpu_s = bench_cpu_s() - cpu0;
    r->send_lag_p99_ms = open ? bench_lat_pct(&send_lag, 99) : 0;
    bench_lat_free(&send_lag);
    free(slots);
}

static void report_failures(const char *phase, const struct run *r)
{
    if (r->failed)
        fprintf(stderr, "system_bench: %s: %ld failed calls, the first: %s\n", phase, r->failed,
                r->first_error);
}

/* ---- the crypto floor ---- */

struct floor_arg {
    double seconds;
    long count;
};

#define FLOOR_BOXES 64

/*
 * One login's libsodium work: open the ticket's sealed box (format 2: the
 * vault does crypto_box_seal_open on every ticket), verify the ticket's
 * signature, the pseudonym PRF, sign the assertion.  The boxes are sealed
 * beforehand (sealing is the phone's work) and opened in rotation.
 */
static void *floor_thread(void *arg)
{
    struct floor_arg *fa = arg;
    unsigned char pk[32], sk[64], key[32], msg[300], sig[64], prf[32], asig[64];
    unsigned char box_pk[crypto_box_PUBLICKEYBYTES], box_sk[crypto_box_SECRETKEYBYTES];
    unsigned char inner[VEIL_TICKET_INNER_BYTES];
    static __thread unsigned char boxes[FLOOR_BOXES]
                                       [VEIL_TICKET_INNER_BYTES + crypto_box_SEALBYTES];
    randombytes_buf(msg, sizeof msg);
    randombytes_buf(key, sizeof key);
    crypto_sign_keypair(pk, sk);
    crypto_sign_detached(sig, NULL, msg, sizeof msg, sk);
    crypto_box_keypair(box_pk, box_sk);
    for (int k = 0; k < FLOOR_BOXES; k++) {
        randombytes_buf(inner, sizeof inner);
        if (crypto_box_seal(boxes[k], inner, sizeof inner, box_pk) != 0)
            die("floor: cannot seal a box");
    }
    double end = bench_now_s() + fa->seconds;
    long n = 0;
    while (bench_now_s() < end) {
        for (int k = 0; k < 64; k++) {
            if (crypto_box_seal_open(inner, boxes[k % FLOOR_BOXES], sizeof boxes[0], box_pk,
                                     box_sk) != 0)
                die("floor: a sealed box did not open");
            if (crypto_sign_verify_detached(sig, msg, sizeof msg, pk) != 0)
                die("floor: a signature did not verify");
            crypto_generichash(prf, sizeof prf, msg, 64, key, sizeof key);
            msg[0] = prf[0];
            crypto_sign_detached(asig, NULL, msg + 1, 250, sk);
            msg[1] ^= asig[0];
            crypto_sign_detached(sig, NULL, msg, sizeof msg, sk); /* keep the verify honest */
            n++;
        }
    }
    fa->count = n;
    return NULL;
}

/* The floor without the extra re-signing the loop needs to keep verifying fresh input. */
static double floor_rate(int threads, double seconds)
{
    pthread_t t[4];
    struct floor_arg fa[4];
    long total = 0;
    for (int i = 0; i < threads; i++) {
        fa[i] = (struct floor_arg){.seconds = seconds};
        pthread_create(&t[i], NULL, floor_thread, &fa[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += fa[i].count;
    }
    return (double)total / seconds;
}

/* Times the re-signing alone, to take it out of floor_rate's figure. */
static double sign_seconds_each(void)
{
    unsigned char pk[32], sk[64], msg[300], sig[64];
    crypto_sign_keypair(pk, sk);
    randombytes_buf(msg, sizeof msg);
    long n = 0;
    double t0 = bench_now_s();
    while (bench_now_s() - t0 < 0.5)
        for (int k = 0; k < 64; k++, n++) {
            crypto_sign_detached(sig, NULL, msg, sizeof msg, sk);
            msg[0] ^= sig[0];
        }
    return (bench_now_s() - t0) / (double)n;
}

static void phase_floor(void)
{
    double resign = sign_seconds_each();
    double r1 = floor_rate(1, 2.0), r2 = floor_rate(2, 2.0);
    /* each counted iteration also re-signed the verified message once */
    double one = 1.0 / (1.0 / r1 - resign), two = 2.0 / (2.0 / r2 - resign);
    printf("floor: crypto_login_per_s_1core=%.0f crypto_login_per_s_2threads=%.0f "
           "work=seal_open+verify+prf+sign\n",
           one, two);
    fflush(stdout);
}

/* ---- tickets ---- */

struct ticket {
    int app;
    char *ticket;
    char *assertion; /* the reply's assertion, verified after the phase */
    char *sub;
};

struct pair {
    size_t ident;
    int app;
    int consented;
};

struct tickets {
    struct pair *pairs;
    size_t n_pairs;
    struct ticket *t;
    size_t n;
    uint64_t seed;
    size_t next_pair; /* where the next in-order (every_pair) set of jobs starts */
};

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The app slot k of citizen c: three distinct apps, all apps used across citizens. */
static int app_of(const struct bench *b, size_t c, int k)
{
    return (int)((c * 7 + (size_t)k * 29) % b->n_apps);
}

/* Whether ident is a citizen of tk's pairs (citizen-major, in ascending identity order). */
static int has_citizen(const struct tickets *tk, size_t ident)
{
    size_t lo = 0, hi = tk->n_pairs / APPS_PER_USER;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, at = tk->pairs[mid * APPS_PER_USER].ident;
        if (at == ident)
            return 1;
        if (at < ident)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/*
 * `active` citizens spread evenly over the identity file, with their three
 * apps each; none of them a citizen of avoid (when given), so that setting up
 * one set changes nothing the other's logins read.
 */
static void make_pairs(struct bench *b, struct tickets *tk, size_t active,
                       const struct tickets *avoid)
{
    if (active > b->n_ids)
        active = b->n_ids;
    tk->n_pairs = active * APPS_PER_USER;
    tk->pairs = calloc(tk->n_pairs, sizeof *tk->pairs);
    if (!tk->pairs)
        die("out of memory");
    for (size_t c = 0; c < active; c++) {
        size_t ident = (size_t)((double)c * (double)b->n_ids / (double)active);
        size_t next = (size_t)((double)(c + 1) * (double)b->n_ids / (double)active);
        while (avoid && has_citizen(avoid, ident) && ident + 1 < next)
            ident++;
        for (int k = 0; k < APPS_PER_USER; k++)
            tk->pairs[c * APPS_PER_USER + (size_t)k] =
                (struct pair){.ident = ident, .app = app_of(b, c, k), .consented = k == 0};
    }
    tk->seed = 0x9e3779b97f4a7c15ULL;
}

static void tickets_free(struct tickets *tk)
{
    for (size_t i = 0; i < tk->n; i++) {
        free(tk->t[i].ticket);
        free(tk->t[i].assertion);
        free(tk->t[i].sub);
    }
    free(tk->t);
    tk->t = NULL;
    tk->n = 0;
}

struct begin_ctx {
    struct tickets *tk;
    size_t *which; /* pair of each ticket */
};

static veil_err begin_start(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p)
{
    struct begin_ctx *bc = ctx;
    Veil__Gateway__BeginLoginRequest req = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    const struct pair *pr = &bc->tk->pairs[bc->which[i]];
    return veil_channel_start(b->apps[pr->app].ch, "BeginLogin", &req.base, CALL_MS, b->cq, user,
                              p);
}

static int begin_done(struct bench *b, void *ctx, size_t i, veil_err e, void *resp,
                      const veil_status *st)
{
    struct begin_ctx *bc = ctx;
    Veil__Gateway__BeginLoginResponse *r = resp;
    const struct pair *pr = &bc->tk->pairs[bc->which[i]];
    int ok = 0;
    if (!e && r->challenge.len == VEIL_CHALLENGE_BYTES) {
        const struct ident *x = &b->ids[pr->ident];
        unsigned char pk[32], sk[64];
        crypto_sign_seed_keypair(pk, sk, x->seed);
        ok = veil_ticket_make(b->apps[pr->app].id, r->challenge.data, r->challenge.len,
                              veil_now_ms(), x->device_id, sk, b->ticket_pk, b->ticket_version,
                              &bc->tk->t[i].ticket) == VEIL_OK;
        bc->tk->t[i].app = pr->app;
        sodium_memzero(sk, sizeof sk);
    }
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return ok;
}

/*
 * n empty ticket slots, each naming its pair: random, or the pairs in order
 * from where the previous in-order set stopped (every_pair).
 */
static struct begin_ctx job_slots(struct tickets *tk, size_t n, int every_pair)
{
    struct begin_ctx bc = {.tk = tk, .which = calloc(n, sizeof(size_t))};
    tickets_free(tk);
    tk->t = calloc(n, sizeof *tk->t);
    if (!tk->t || !bc.which)
        die("out of memory");
    tk->n = n;
    for (size_t i = 0; i < n; i++)
        bc.which[i] = every_pair ? (tk->next_pair + i) % tk->n_pairs
                                 : next_rand(&tk->seed) % tk->n_pairs;
    if (every_pair)
        tk->next_pair = (tk->next_pair + n) % tk->n_pairs;
    return bc;
}

/* n fresh tickets over the active pairs (all pairs in order when every_pair). */
static void prepare_tickets(struct bench *b, struct tickets *tk, size_t n, int every_pair)
{
    struct begin_ctx bc = job_slots(tk, n, every_pair);
    struct run r = {.n = n, .depth = 64, .seconds = 1e9, .start = begin_start,
                    .done = begin_done, .ctx = &bc};
    double t0 = bench_now_s();
    run_calls(b, &r);
    report_failures("BeginLogin", &r);
    if (r.failed)
        die("could not prepare the tickets");
    fprintf(stderr, "   %zu tickets prepared in %.1f s\n", n, bench_now_s() - t0);
    free(bc.which);
    bench_lat_free(&r.lat);
}

/* ---- CompleteLogin ---- */

static veil_err login_start(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p)
{
    struct tickets *tk = ctx;
    struct app *a = &b->apps[tk->t[i].app];
    Veil__Gateway__CompleteLoginRequest req = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    req.ticket = tk->t[i].ticket;
    req.attributes = a->attrs;
    req.n_attributes = a->n_attrs;
    return veil_channel_start(a->ch, "CompleteLogin", &req.base, CALL_MS, b->cq, user, p);
}

static int login_done(struct bench *b, void *ctx, size_t i, veil_err e, void *resp,
                      const veil_status *st)
{
    struct tickets *tk = ctx;
    Veil__Gateway__CompleteLoginResponse *r = resp;
    int ok = 0;
    if (!e && r->assertion && *r->assertion && r->sub && *r->sub) {
        tk->t[i].assertion = strdup(r->assertion);
        tk->t[i].sub = strdup(r->sub);
        ok = tk->t[i].assertion && tk->t[i].sub;
    }
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return ok;
}

/* Verifies every assertion the phase received; returns how many failed. */
static long verify_assertions(struct bench *b, struct tickets *tk, long *verified, double *secs)
{
    long bad = 0;
    int64_t now_s = veil_now_ms() / 1000;
    double t0 = bench_now_s();
    *verified = 0;
    for (size_t i = 0; i < tk->n; i++) {
        const char *jws = tk->t[i].assertion;
        json_t *claims = NULL;
        if (!jws)
            continue;
        if (veil_jws_verify(jws, strlen(jws), "JWT", veil_jwks_find, &b->jwks, &claims) !=
            VEIL_OK) {
            bad++;
            continue;
        }
        const char *aud = json_string_value(json_object_get(claims, "aud"));
        const char *sub = json_string_value(json_object_get(claims, "sub"));
        json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
        if (aud && sub && strcmp(aud, b->apps[tk->t[i].app].id) == 0 &&
            strcmp(sub, tk->t[i].sub) == 0 && exp > now_s)
            (*verified)++;
        else
            bad++;
        json_decref(claims);
    }
    *secs = bench_now_s() - t0;
    return bad;
}

/* One login phase over prepared tickets; prints its line; returns the verified rate. */
/*
 * $BENCH_PHASE_HOOK, when set, runs (through the shell) before each timed
 * phase with the phase's name and length as arguments: a way to start a
 * profiler (perf record) on exactly that phase.  It must return at once.
 */
static void phase_hook(const char *phase, double seconds)
{
    const char *hook = getenv("BENCH_PHASE_HOOK");
    char cmd[1024];
    if (!hook || !*hook)
        return;
    snprintf(cmd, sizeof cmd, "%s %s %.0f", hook, phase, seconds);
    if (system(cmd) != 0)
        fprintf(stderr, "system_bench: the phase hook failed\n");
}

/*
 * The whole login as one job: BeginLogin; the simulated phone makes the
 * ticket from the challenge (seed keypair, signature, sealed box to the
 * vault: veil_ticket_make, as a wallet does); CompleteLogin.
 */
static veil_err full_next(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p)
{
    struct begin_ctx *bc = ctx;
    return login_start(b, bc->tk, i, user, p);
}

static int full_done(struct bench *b, void *ctx, size_t i, veil_err e, void *resp,
                     const veil_status *st)
{
    struct begin_ctx *bc = ctx;
    if (!bc->tk->t[i].ticket) /* BeginLogin's reply: the phone makes the ticket */
        return begin_done(b, ctx, i, e, resp, st) ? 2 : 0;
    return login_done(b, bc->tk, i, e, resp, st);
}

/*
 * One login phase; prints its line; returns the verified rate.  full NULL:
 * CompleteLogin alone over tk's prepared tickets.  full set: whole logins,
 * tk->t a slot per job without a ticket, full->which each job's pair.
 */
static double login_phase_run(struct bench *b, struct tickets *tk, struct begin_ctx *full,
                              const char *mode, double rate, double seconds, double *p50,
                              double *p99)
{
    struct run r = {.n = tk->n, .depth = b->depth, .rate = rate, .seconds = seconds,
                    .start = login_start, .done = login_done, .ctx = tk};
    double la[3] = {0};
    if (full)
        r.start = begin_start, r.done = full_done, r.next = full_next, r.ctx = full;
    int warmup = strstr(mode, "warmup") != NULL;
    if (!warmup)
        phase_hook(mode, seconds);
    struct gw_metrics m0 = read_metrics(b);
    run_calls(b, &r);
    struct gw_metrics m1 = read_metrics(b);
    getloadavg(la, 3);
    long verified;
    double vsecs;
    long bad = verify_assertions(b, tk, &verified, &vsecs);
    report_failures(mode, &r);
    if (bad)
        fprintf(stderr, "system_bench: %s: %ld assertions did not verify\n", mode, bad);
    double per_s = r.elapsed > 0 ? (double)verified / r.elapsed : 0;
    *p50 = bench_lat_pct(&r.lat, 50);
    *p99 = bench_lat_pct(&r.lat, 99);
    printf("login: mode=%s per_s=%.0f offered_per_s=%.0f ok=%ld verified=%ld failed=%ld "
           "unverified=%ld seconds=%.2f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f "
           "in_flight=%d verify_per_s=%.0f load=%.2f gen_cpu_us_per_login=%.0f "
           "gen_machine_share=%.3f cache_hit_rate=%.3f send_lag_p99_ms=%.2f max_poll_gap_ms=%.1f "
           "max_in_flight=%ld generator_bound=%d\n",
           mode, per_s, rate, r.ok, verified, r.failed, bad, r.elapsed, *p50,
           bench_lat_pct(&r.lat, 90), *p99, bench_lat_pct(&r.lat, 100), rate > 0 ? 0 : b->depth,
           vsecs > 0 ? (double)verified / vsecs : 0, la[0],
           r.ok > 0 ? r.cpu_s * 1e6 / (double)r.ok : 0,
           r.elapsed > 0 ? r.cpu_s / (r.elapsed * bench_cores()) : 0, hit_rate(&m0, &m1),
           r.send_lag_p99_ms, r.max_poll_gap * 1000.0, r.max_inflight,
           generator_bound(&r));
    if (generator_bound(&r))
        fprintf(stderr,
                "system_bench: %s: the load generator did not keep its schedule (calls sent late, "
                "replies taken late or %d in flight): its latencies are its own, not the stack's\n",
                mode, OPEN_MAX_FLIGHT);
    fflush(stdout);
    b->errors += r.failed + bad; /* warm-ups too: every failed call is an error */
    b->last_hit_rate = hit_rate(&m0, &m1);
    if (r.started < (long)tk->n && r.elapsed < seconds * 0.9)
        fprintf(stderr, "system_bench: %s: stopped early\n", mode);
    if (r.started == (long)tk->n && rate <= 0 && !warmup)
        fprintf(stderr, "system_bench: %s: every prepared ticket was used (%.1f s)\n", mode,
                r.elapsed);
    bench_lat_free(&r.lat);
    return per_s;
}

static double login_phase(struct bench *b, struct tickets *tk, const char *mode, double rate,
                          double seconds, double *p50, double *p99)
{
    return login_phase_run(b, tk, NULL, mode, rate, seconds, p50, p99);
}

/*
 * Whole logins (BeginLogin + the phone's ticket + CompleteLogin), closed
 * loop, n jobs: random active pairs, or every pair in order (every_pair).
 */
static double full_phase(struct bench *b, struct tickets *tk, const char *mode, size_t n,
                         int every_pair, double seconds, double *p50, double *p99)
{
    struct begin_ctx bc = job_slots(tk, n, every_pair);
    double per_s = login_phase_run(b, tk, &bc, mode, 0, seconds, p50, p99);
    free(bc.which);
    return per_s;
}

/* ---- consent set-up: Wallet GrantConsent for each active citizen's first app ---- */

struct grant_ctx {
    struct tickets *tk;
};

static void wallet_of(const struct bench *b, const struct ident *x, unsigned char sk[64],
                      vw_wallet *w)
{
    memset(w, 0, sizeof *w);
    crypto_sign_seed_keypair(w->pk, sk, x->seed);
    w->sk = sk;
    veil_device_id_text(x->device_id, w->device_id);
    memcpy(w->ticket_pk, b->ticket_pk, 32);
    w->ticket_key_version = b->ticket_version;
}

/*
 * Citizen i grants its first app's whole scope.  Signed when it is sent, as
 * a phone does: a signed request carries its time, and one signed long
 * before it is sent is refused (outside the allowed clock skew).
 */
static veil_err grant_start(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p)
{
    struct grant_ctx *g = ctx;
    const struct pair *pr = &g->tk->pairs[i * APPS_PER_USER];
    Veil__Gateway__GrantConsentPayload pl = VEIL__GATEWAY__GRANT_CONSENT_PAYLOAD__INIT;
    Veil__Gateway__SignedRequest req;
    unsigned char sk[64];
    vw_wallet w;
    wallet_of(b, &b->ids[pr->ident], sk, &w);
    pl.app_id = b->apps[pr->app].id;
    pl.attributes = b->apps[pr->app].attrs;
    pl.n_attributes = b->apps[pr->app].n_attrs;
    pl.purpose = "benchmark account";
    pl.expires_at_ms = veil_now_ms() + 86400000LL;
    veil_err e = vw_sign(&w, "/veil.gateway.Wallet/GrantConsent", &pl.base, veil_now_ms(), &req);
    sodium_memzero(sk, sizeof sk);
    if (e)
        die("cannot sign a consent request");
    e = veil_channel_start(b->wallet, "GrantConsent", &req.base, CALL_MS, b->cq, user, p);
    vw_signed_free(&req); /* the request was packed when the call started */
    return e;
}

static int plain_done(struct bench *b, void *ctx, size_t i, veil_err e, void *resp,
                      const veil_status *st)
{
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return e == VEIL_OK;
}

static void phase_consent(struct bench *b, struct tickets *tk, const char *set)
{
    size_t n = tk->n_pairs / APPS_PER_USER;
    struct grant_ctx g = {.tk = tk};
    struct run r = {.n = n, .depth = b->depth, .seconds = 1e9, .start = grant_start,
                    .done = plain_done, .ctx = &g};
    run_calls(b, &r);
    report_failures("GrantConsent", &r);
    double la[3] = {0};
    getloadavg(la, 3);
    printf("consent: set=%s grants=%ld per_s=%.0f failed=%ld load=%.2f\n", set, r.ok,
           r.elapsed > 0 ? (double)r.ok / r.elapsed : 0, r.failed, la[0]);
    fflush(stdout);
    b->errors += r.failed;
    bench_lat_free(&r.lat);
}

/* ---- enrolment ---- */

struct enrol_ctx {
    Veil__Gateway__WalletEnrolRequest *reqs;
    unsigned char (*sigs)[64];
    unsigned char (*pks)[32];
    char (*numbers)[19];
    char (*rids)[24];
    unsigned char (*sealed)[VEIL_ENROL_SEALED_BYTES];
};

static void id_number(long i, char out[19])
{
    char digits[32];
    /* Guangzhou Tianhe (440106): a region bulk-enrol never uses, so no person repeats;
     * (birth date, sequence) is unique for the first 16.8 million i */
    snprintf(digits, sizeof digits, "440106%04ld%02ld%02ld%03ld", 1950 + (i / 336000) % 50,
             1 + (i / 28000) % 12, 1 + (i / 1000) % 28, i % 1000);
    memcpy(out, digits, 17);
    out[17] = vault_idnumber_check_char(digits);
    out[18] = '\0';
}

static veil_err enrol_start(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p)
{
    struct enrol_ctx *ec = ctx;
    return veil_channel_start(b->wallet, "Enrol", &ec->reqs[i].base, CALL_MS, b->cq, user, p);
}

static void phase_enrol(struct bench *b)
{
    size_t n = (size_t)b->n_enrol;
    struct enrol_ctx ec = {
        .reqs = calloc(n, sizeof *ec.reqs), .sigs = calloc(n, sizeof *ec.sigs),
        .pks = calloc(n, sizeof *ec.pks), .numbers = calloc(n, sizeof *ec.numbers),
        .rids = calloc(n, sizeof *ec.rids), .sealed = calloc(n, sizeof *ec.sealed)};
    if (!ec.reqs || !ec.sigs || !ec.pks || !ec.numbers || !ec.rids || !ec.sealed)
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        vw_wallet w = {0};
        unsigned char sk[64], rid[16];
        veil__gateway__wallet_enrol_request__init(&ec.reqs[i]);
        crypto_sign_keypair(ec.pks[i], sk);
        memcpy(w.pk, ec.pks[i], 32);
        id_number((long)i, ec.numbers[i]);
        vw_attest(&w, b->proofing_seed, ec.numbers[i], "基准测试", 1, veil_now_ms(), ec.sigs[i],
                  &ec.reqs[i]);
        ec.reqs[i].device_public_key.data = ec.pks[i]; /* w lives only in this iteration */
        randombytes_buf(rid, sizeof rid);
        veil_b64url_encode(ec.rids[i], sizeof ec.rids[i], rid, sizeof rid);
        ec.reqs[i].request_id = ec.rids[i];
        ec.reqs[i].device_label = "bench phone";
        /* sealed to the vault, as a phone does: the gateway relays it unread */
        memcpy(w.ticket_pk, b->ticket_pk, 32);
        w.ticket_key_version = b->ticket_version;
        if (vw_seal_enrolment(&w, &ec.reqs[i], ec.sealed[i]) != VEIL_OK)
            die("cannot seal an enrolment");
        sodium_memzero(sk, sizeof sk);
    }
    struct run r = {.n = n, .depth = 32, .seconds = 1e9, .start = enrol_start,
                    .done = plain_done, .ctx = &ec};
    run_calls(b, &r);
    report_failures("Enrol", &r);
    double la[3] = {0};
    getloadavg(la, 3);
    printf("enrol: per_s=%.0f ok=%ld failed=%ld p50_ms=%.2f p99_ms=%.2f load=%.2f\n",
           r.elapsed > 0 ? (double)r.ok / r.elapsed : 0, r.ok, r.failed,
           bench_lat_pct(&r.lat, 50), bench_lat_pct(&r.lat, 99), la[0]);
    fflush(stdout);
    b->errors += r.failed;
    bench_lat_free(&r.lat);
    free(ec.reqs), free(ec.sigs), free(ec.pks), free(ec.numbers), free(ec.rids), free(ec.sealed);
}

/* ---- pseudonyms ---- */

struct derive_ctx {
    Veil__Pseudonym__DeriveRequest one;
    Veil__Pseudonym__DeriveBatchRequest batch;
    size_t batch_items;
};

static veil_err derive_start(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p)
{
    struct derive_ctx *dc = ctx;
    return veil_channel_start(b->pseudo, "Derive", &dc->one.base, CALL_MS, b->cq, user, p);
}

static veil_err batch_start(struct bench *b, void *ctx, size_t i, void *user, veil_pending **p)
{
    struct derive_ctx *dc = ctx;
    return veil_channel_start(b->pseudo, "DeriveBatch", &dc->batch.base, CALL_MS, b->cq, user, p);
}

static int batch_done(struct bench *b, void *ctx, size_t i, veil_err e, void *resp,
                      const veil_status *st)
{
    struct derive_ctx *dc = ctx;
    Veil__Pseudonym__DeriveBatchResponse *r = resp;
    int ok = !e && r->n_pseudonyms == dc->batch_items;
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return ok;
}

static void phase_derive(struct bench *b)
{
    struct derive_ctx dc;
    unsigned char subject[32];
    randombytes_buf(subject, sizeof subject);
    veil__pseudonym__derive_request__init(&dc.one);
    dc.one.subject_ref = (ProtobufCBinaryData){sizeof subject, subject};
    dc.one.sector_id = "bench.sector";
    dc.one.link_epoch = 1;
    dc.one.key_version = 1; /* the gateway always names it */
    double secs = b->seconds / 2 > 2 ? b->seconds / 2 : 2;
    struct run r = {.n = (size_t)1 << 30, .depth = 64, .seconds = secs, .start = derive_start,
                    .done = plain_done, .ctx = &dc};
    run_calls(b, &r);
    report_failures("Derive", &r);
    double one_per_s = r.elapsed > 0 ? (double)r.ok / r.elapsed : 0;
    b->errors += r.failed;
    bench_lat_free(&r.lat);

    dc.batch_items = 1000;
    Veil__Pseudonym__DeriveItem *items = calloc(dc.batch_items, sizeof *items);
    Veil__Pseudonym__DeriveItem **ptrs = calloc(dc.batch_items, sizeof *ptrs);
    unsigned char(*subjects)[32] = calloc(dc.batch_items, 32);
    if (!items || !ptrs || !subjects)
        die("out of memory");
    veil__pseudonym__derive_batch_request__init(&dc.batch);
    for (size_t k = 0; k < dc.batch_items; k++) {
        veil__pseudonym__derive_item__init(&items[k]);
        randombytes_buf(subjects[k], 32);
        items[k].subject_ref = (ProtobufCBinaryData){32, subjects[k]};
        items[k].sector_id = b->apps[k % b->n_apps].id;
        items[k].link_epoch = 1;
        ptrs[k] = &items[k];
    }
    dc.batch.items = ptrs;
    dc.batch.n_items = dc.batch_items;
    dc.batch.key_version = 1;
    struct run rb = {.n = (size_t)1 << 30, .depth = 4, .seconds = secs, .start = batch_start,
                     .done = batch_done, .ctx = &dc};
    run_calls(b, &rb);
    report_failures("DeriveBatch", &rb);
    double la[3] = {0};
    getloadavg(la, 3);
    printf("derive: derive_per_s=%.0f batch_pseudonyms_per_s=%.0f batch_items=%zu "
           "batch_p50_ms=%.2f load=%.2f\n",
           one_per_s, rb.elapsed > 0 ? (double)rb.ok * (double)dc.batch_items / rb.elapsed : 0,
           dc.batch_items, bench_lat_pct(&rb.lat, 50), la[0]);
    fflush(stdout);
    b->errors += rb.failed;
    bench_lat_free(&rb.lat);
    free(items), free(ptrs), free(subjects);
}

/* ---- revocation propagation ---- */

/* One whole login of citizen x at app a (synchronous); the status code. */
static grpc_status_code login_once(struct bench *b, const struct ident *x, struct app *a)
{
    Veil__Gateway__BeginLoginRequest breq = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *br;
    Veil__Gateway__CompleteLoginRequest creq = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    Veil__Gateway__CompleteLoginResponse *cr;
    veil_status st;
    unsigned char pk[32], sk[64];
    char *ticket = NULL;
    if (veil_channel_call(a->ch, "BeginLogin", &breq.base, NULL, CALL_MS, &br, &st) != VEIL_OK)
        return st.code;
    crypto_sign_seed_keypair(pk, sk, x->seed);
    veil_err e = veil_ticket_make(a->id, br->challenge.data, br->challenge.len, veil_now_ms(),
                                  x->device_id, sk, b->ticket_pk, b->ticket_version, &ticket);
    sodium_memzero(sk, sizeof sk);
    protobuf_c_message_free_unpacked(&br->base, NULL);
    if (e)
        die("cannot make a ticket");
    creq.ticket = ticket;
    grpc_status_code code = GRPC_STATUS_OK;
    if (veil_channel_call(a->ch, "CompleteLogin", &creq.base, NULL, CALL_MS, &cr, &st) != VEIL_OK)
        code = st.code;
    else
        protobuf_c_message_free_unpacked(&cr->base, NULL);
    free(ticket);
    return code;
}

/* Sets an identity's state through the Admin API; 0 on success. */
static int set_state(struct bench *b, const struct ident *x, const char *state)
{
    Veil__Gateway__IdentityStateRequest req = VEIL__GATEWAY__IDENTITY_STATE_REQUEST__INIT;
    Veil__Empty *resp;
    veil_status st;
    req.web_number = (char *)x->web_number;
    req.state = (char *)state;
    req.reason = "benchmark";
    if (veil_channel_call(b->admin, "SetIdentityState", &req.base, NULL, CALL_MS, &resp, &st) !=
        VEIL_OK) {
        fprintf(stderr, "system_bench: SetIdentityState %s: %s\n", state, st.message);
        return -1;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static void phase_revocation(struct bench *b, size_t first_ident)
{
    bench_lat lat = {0};
    long failed = 0;
    for (long k = 0; k < b->n_revocations; k++) {
        size_t idx = first_ident + (size_t)k;
        if (idx >= b->n_ids)
            break;
        const struct ident *x = &b->ids[idx];
        struct app *a = &b->apps[(size_t)k % b->n_apps];
        /* a login first, so the gateway has the citizen's allowed verdict cached
         * (revocation is final: a data set can be measured once) */
        grpc_status_code first = login_once(b, x, a);
        if (first != GRPC_STATUS_OK) {
            fprintf(stderr, "system_bench: the login before a revocation ended with %s%s\n",
                    veil_status_name(first),
                    first == GRPC_STATUS_PERMISSION_DENIED ? " (revoked by an earlier run?)" : "");
            failed++;
            continue;
        }
        if (set_state(b, x, "revoked") != 0) {
            failed++;
            continue;
        }
        double t0 = bench_now_s(), t;
        grpc_status_code code;
        while ((code = login_once(b, x, a)) == GRPC_STATUS_OK && bench_now_s() - t0 < 10)
            ;
        t = bench_now_s();
        if (code != GRPC_STATUS_PERMISSION_DENIED) {
            fprintf(stderr, "system_bench: a revoked identity's login ended with %s\n",
                    veil_status_name(code));
            failed++;
            continue;
        }
        bench_lat_add(&lat, (t - t0) * 1000.0);
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    printf("revocation: n=%zu p50_ms=%.1f p99_ms=%.1f max_ms=%.1f failed=%ld "
           "measured=admin_reply_to_first_refused_login\n",
           lat.n, bench_lat_pct(&lat, 50), bench_lat_pct(&lat, 99), bench_lat_pct(&lat, 100),
           failed);
    fflush(stdout);
    b->errors += failed;
    bench_lat_free(&lat);
}

/* ---- the large population (--scale-active) ---- */

/*
 * The app links of the scale set, made in bulk by --scale-links CMD: the
 * rows revocation's Authorize writes at each pair's first login (docs/
 * performance.md, "Scale").  CMD gets a file of `device_id<TAB>app_id` lines
 * and the pseudonym key versions the gateway's logins would record.
 */
static void scale_links(struct bench *b, const struct tickets *tk)
{
    struct gw_metrics m = read_metrics(b);
    char path[] = "/tmp/veil-bench-pairs.XXXXXX", cmd[1024], dev[33];
    if (!b->scale_links || !m.ok || b->cache_entries < 0)
        die("--scale-active needs --scale-links, --cache-entries and a readable "
            "--gateway-metrics");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f)
        die("cannot write the pairs file");
    for (size_t i = 0; i < tk->n_pairs; i++) {
        veil_device_id_text(b->ids[tk->pairs[i].ident].device_id, dev);
        fprintf(f, "%s\t%s\n", dev, b->apps[tk->pairs[i].app].id);
    }
    if (fclose(f) != 0)
        die("cannot write the pairs file");
    snprintf(cmd, sizeof cmd, "%s %s %.0f %.0f", b->scale_links, path, m.pseudo_cur,
             m.pseudo_prev);
    double t0 = bench_now_s();
    int rc = system(cmd);
    unlink(path);
    if (rc != 0)
        die("the scale links command failed");
    printf("links: pairs=%zu seconds=%.1f key_version=%.0f previous_key_version=%.0f "
           "made_by=bulk_insert\n",
           tk->n_pairs, bench_now_s() - t0, m.pseudo_cur, m.pseudo_prev);
    fflush(stdout);
}

/* The base run's figures the scale set is compared with. */
struct base_figures {
    double closed, full, open_p99, hit;
    size_t identities; /* loaded, the revoked ones included */
};

/*
 * --scale-active N: the same phases again with N active citizens (disjoint
 * from the base set), after setting up what those citizens would have as
 * returning users: the consent of their first app (Wallet GrantConsent,
 * device-signed, as the base set's), the app links of their three apps
 * (bulk, scale_links), and the gateway's cache as a gateway that has served
 * them for a while holds it: it keeps the first answers it sees until it is
 * full, so the warm-up logs in the first cache_entries / 2 pairs (one
 * revocation verdict and one consent answer each) and the cache holds what it
 * can.  Then CompleteLogin closed, open, whole logins; then the base set's
 * closed loop and the scale set's again, interleaved, for the ratio.
 */
static void phase_scale(struct bench *b, struct tickets *base, const struct base_figures *bf)
{
    long errors0 = b->errors;
    double t0 = bench_now_s(), p50, p99, op50, op99, fp50, fp99;
    struct tickets tk = {0};
    make_pairs(b, &tk, (size_t)b->scale_active, base);
    size_t citizens = tk.n_pairs / APPS_PER_USER;
    printf("scale_setup: citizens=%zu pairs=%zu base_citizens=%zu cache_entries=%ld\n",
           citizens, tk.n_pairs, base->n_pairs / APPS_PER_USER, b->cache_entries);
    fflush(stdout);
    phase_consent(b, &tk, "scale");
    scale_links(b, &tk);
    size_t warm_n = (size_t)(b->cache_entries > 0 ? b->cache_entries / 2 : 0);
    if (warm_n > tk.n_pairs)
        warm_n = tk.n_pairs;
    if (warm_n < 1000)
        warm_n = tk.n_pairs < 1000 ? tk.n_pairs : 1000;
    /*
     * In parts of at most SCALE_WARM_PART logins, each verified as soon as it
     * ends: an assertion lives GATEWAY_ASSERTION_TTL_S (300 s), and the whole
     * warm-up takes longer than that on this machine.
     */
    double warm = 0;
    int parts = 0;
    for (size_t done = 0; done < warm_n; done += SCALE_WARM_PART, parts++)
        warm += full_phase(b, &tk, "scale_warmup",
                           warm_n - done < SCALE_WARM_PART ? warm_n - done : SCALE_WARM_PART, 1,
                           1e9, &p50, &p99);
    warm /= parts;
    double setup_s = bench_now_s() - t0;

    double ref = warm > bf->closed ? warm : bf->closed;
    size_t n = closed_tickets(ref, b->seconds);
    size_t n_base = closed_tickets(bf->closed, b->seconds);
    prepare_tickets(b, &tk, n, 0);
    double b1 = login_phase(b, &tk, "scale_closed", 0, b->seconds, &p50, &p99);
    double b1_hit = b->last_hit_rate;
    double rate = b->rate > 0 ? b->rate : b1 / 2;
    prepare_tickets(b, &tk, (size_t)(rate * b->seconds) + 1, 0);
    login_phase(b, &tk, "scale_open", rate, b->seconds, &op50, &op99);
    double full = full_phase(b, &tk, "scale_full", n, 0, b->seconds, &fp50, &fp99);

    /* interleaved: base, scale - the machine is shared, so the ratio uses both pairs */
    prepare_tickets(b, base, n_base, 0);
    double a2 = login_phase(b, base, "closed_repeat", 0, b->seconds, &p50, &p99);
    double a2_hit = b->last_hit_rate;
    prepare_tickets(b, &tk, n, 0);
    double b2 = login_phase(b, &tk, "scale_closed_repeat", 0, b->seconds, &p50, &p99);
    double b2_hit = b->last_hit_rate;
    tickets_free(base);
    tickets_free(&tk);
    free(tk.pairs);

    /*
     * The ratio is against the base set as it ran (its answers all in the
     * cache: that is what 1,000 active citizens get).  The repeat of the base
     * set after the set-up is printed beside it: by then the cache may be
     * full of the large set's answers, so it shows what cache misses alone
     * cost; its hit rate says which it was.
     */
    double bs = (b1 + b2) / 2;
    size_t base_n = base->n_pairs / APPS_PER_USER;
    printf("scale: identities=%zu active=%zu complete_login_per_s=%.0f full_login_per_s=%.0f "
           "p50_ms=%.2f p99_ms=%.2f at_rate=%.0f cache_hit_rate=%.3f base_active=%zu "
           "base_complete_login_per_s=%.0f base_full_login_per_s=%.0f base_p99_ms=%.2f "
           "base_cache_hit_rate=%.3f vs_%zu_active=%.2f full_vs_%zu_active=%.2f "
           "closed_runs=%.0f,%.0f,%.0f base_repeat_per_s=%.0f base_repeat_cache_hit_rate=%.3f "
           "setup_s=%.0f errors=%ld\n",
           bf->identities, citizens, bs, full, op50, op99, rate, (b1_hit + b2_hit) / 2, base_n,
           bf->closed, bf->full, bf->open_p99, bf->hit, base_n,
           bf->closed > 0 ? bs / bf->closed : 0, base_n, bf->full > 0 ? full / bf->full : 0, b1,
           a2, b2, a2, a2_hit, setup_s, b->errors - errors0);
    fflush(stdout);
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    static struct bench b = {.gateway = "127.0.0.1:7100", .admin_addr = "127.0.0.1:7110",
                             .pseudonym = "127.0.0.1:7104",
                             .seconds = 10, .depth = 64, .active = 5000, .n_enrol = 2000,
                             .n_revocations = 30, .cache_entries = -1, .last_hit_rate = -1};
    const char *ids = NULL, *seed = NULL;
    static const struct option opts[] = {
        {"gateway", required_argument, NULL, 'g'},   {"pseudonym", required_argument, NULL, 'p'},
        {"admin", required_argument, NULL, 'G'},
        {"certs", required_argument, NULL, 'c'},     {"identities", required_argument, NULL, 'i'},
        {"proofing-seed", required_argument, NULL, 'k'},
        {"seconds", required_argument, NULL, 's'},   {"active", required_argument, NULL, 'a'},
        {"in-flight", required_argument, NULL, 'd'}, {"enrol", required_argument, NULL, 'e'},
        {"revocations", required_argument, NULL, 'r'}, {"rate", required_argument, NULL, 'R'},
        {"apps", required_argument, NULL, 'A'},
        {"scale-active", required_argument, NULL, 'S'},
        {"gateway-metrics", required_argument, NULL, 'M'},
        {"cache-entries", required_argument, NULL, 'C'},
        {"scale-links", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'g': b.gateway = optarg; break;
        case 'G': b.admin_addr = optarg; break;
        case 'p': b.pseudonym = optarg; break;
        case 'c': b.certs = optarg; break;
        case 'i': ids = optarg; break;
        case 'k': seed = optarg; break;
        case 's': b.seconds = atof(optarg); break;
        case 'a': b.active = atol(optarg); break;
        case 'd': b.depth = atoi(optarg); break;
        case 'e': b.n_enrol = atol(optarg); break;
        case 'r': b.n_revocations = atol(optarg); break;
        case 'R': b.rate = atof(optarg); break;
        case 'A': b.max_apps = atol(optarg); break;
        case 'S': b.scale_active = atol(optarg); break;
        case 'M': b.metrics_addr = optarg; break;
        case 'C': b.cache_entries = atol(optarg); break;
        case 'L': b.scale_links = optarg; break;
        default: return 2;
        }
    }
    if (!b.certs || !ids || !seed || b.seconds <= 0 || b.depth <= 0 || b.active <= 0) {
        fprintf(stderr, "usage: system_bench --certs DIR --identities FILE --proofing-seed FILE "
                        "[--gateway ADDR] [--admin ADDR] [--pseudonym ADDR] [--seconds S] [--active N] "
                        "[--in-flight D] [--enrol N] [--revocations N] [--rate R] [--apps N] "
                        "[--gateway-metrics ADDR] [--scale-active N --scale-links CMD "
                        "--cache-entries N]\n");
        return 2;
    }
    if (b.scale_active > 0 && (!b.scale_links || !b.metrics_addr || b.cache_entries < 0)) {
        fprintf(stderr, "system_bench: --scale-active needs --scale-links, --gateway-metrics "
                        "and --cache-entries\n");
        return 2;
    }
    if (sodium_init() < 0)
        die("sodium_init failed");
    setvbuf(stdout, NULL, _IOLBF, 0);

    phase_floor();
    load_identities(&b, ids);
    read_seed(&b, seed);
    b.wallet = channel(&b, b.gateway, NULL, &veil__gateway__wallet__descriptor);
    b.admin = channel(&b, b.admin_addr, "admin/ops", &veil__gateway__admin__descriptor);
    b.pseudo = channel(&b, b.pseudonym, "svc/gateway", &veil__pseudonym__pseudonym__descriptor);
    if (veil_cq_new(&b.cq) != VEIL_OK)
        die("cannot create a completion queue");
    fetch_public(&b);
    /* the last identities are kept out of the logins: the revocation phase revokes them */
    size_t reserve = (size_t)b.n_revocations < b.n_ids / 2 ? (size_t)b.n_revocations : 0;
    size_t loadable = b.n_ids - reserve;
    printf("setup: identities=%zu apps=%zu active=%ld\n", b.n_ids, b.n_apps,
           b.active < (long)loadable ? b.active : (long)loadable);

    if (b.n_enrol > 0)
        phase_enrol(&b);

    struct tickets tk = {0};
    size_t all = b.n_ids;
    b.n_ids = loadable;
    make_pairs(&b, &tk, (size_t)b.active, NULL);
    b.n_ids = all;
    phase_consent(&b, &tk, "base");

    /*
     * Warm-up, every active pair twice: the first pass is every pair's first
     * login (revocation creates the app link; the gateway's caches are
     * filled), the second runs as returning citizens' logins do, and its
     * rate sizes the tickets of the timed phase.
     */
    double p50, p99, warm = 0;
    for (int pass = 0; pass < 2; pass++) {
        prepare_tickets(&b, &tk, tk.n_pairs, 1);
        warm = login_phase(&b, &tk, "warmup", 0, 1e9, &p50, &p99);
    }

    size_t n = closed_tickets(warm, b.seconds);
    prepare_tickets(&b, &tk, n, 0);
    double max = login_phase(&b, &tk, "closed", 0, b.seconds, &p50, &p99);
    double closed_hit = b.last_hit_rate;
    size_t n_full = n; /* a whole login is never faster than its CompleteLogin */
    double closed_p50 = p50, closed_p99 = p99;

    double rate = b.rate > 0 ? b.rate : max / 2;
    n = (size_t)(rate * b.seconds) + 1;
    prepare_tickets(&b, &tk, n, 0);
    login_phase(&b, &tk, "open", rate, b.seconds, &p50, &p99);
    double full_p50, full_p99;
    double full = full_phase(&b, &tk, "full", n_full, 0, b.seconds, &full_p50, &full_p99);
    tickets_free(&tk);

    phase_derive(&b);
    if (reserve)
        phase_revocation(&b, loadable);
    if (b.scale_active > 0) {
        struct base_figures bf = {.closed = max, .full = full, .open_p99 = p99,
                                  .hit = closed_hit, .identities = all};
        b.n_ids = loadable; /* the revoked identities stay out */
        phase_scale(&b, &tk, &bf);
        b.n_ids = all;
    }
    free(tk.pairs);

    printf("summary: complete_login_per_s=%.0f full_login_per_s=%.0f closed_p50_ms=%.2f "
           "closed_p99_ms=%.2f full_p50_ms=%.2f full_p99_ms=%.2f open_rate=%.0f open_p50_ms=%.2f "
           "open_p99_ms=%.2f errors=%ld\n",
           max, full, closed_p50, closed_p99, full_p50, full_p99, rate, p50, p99, b.errors);

    for (size_t i = 0; i < b.n_apps; i++) {
        veil_channel_free(b.apps[i].ch);
        for (size_t k = 0; k < b.apps[i].n_attrs; k++)
            free(b.apps[i].attrs[k]);
        free(b.apps[i].attrs);
    }
    veil_channel_free(b.wallet);
    veil_channel_free(b.admin);
    veil_channel_free(b.pseudo);
    veil_cq_free(b.cq);
    free(b.ids);
    return 0;
}
