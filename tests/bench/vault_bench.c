/*
 * vault_bench - the vault's two login hops alone, as the gateway makes them:
 * VerifyTicket then ReleaseAttributes per login (batch 1), or
 * VerifyTicketBatch then ReleaseAttributesBatch of `batch` logins (issue 15,
 * lever 1), closed loop, over mTLS as svc/gateway against a vault loaded by
 * `vault bulk-enrol` (tests/bench/vault_run starts it).
 *
 *   vault_bench ADDR IDENTITIES LOGINS BATCH CALLS_IN_FLIGHT VAULT_PID
 *
 * The tickets are made before the clock starts (a wallet's work, not the
 * vault's); the vault's own CPU per login is read from /proc/VAULT_PID/stat.
 * Prints one line:
 *
 *   vault_bench: batch=B in_flight=D logins=N seconds=S logins_per_s=R
 *                vault_cpu_us_per_login=C errors=E
 *
 * where in_flight counts logins (calls in flight x batch).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "common.h"
#include "veil/client.h"
#include "veil/codec.h"
#include "veil/formats.h"
#include "veil/rpc.h"
#include "veil/vault.pb-c.h"

#define APP     "bench.vault"
#define CALL_MS 30000

struct login {
    char *ticket;
    unsigned char challenge[32];
};

static struct {
    veil_channel *ch;
    struct login *logins;
    size_t n, batch;
    _Atomic size_t next;
    _Atomic long errors;
} B;

static void die(const char *what)
{
    fprintf(stderr, "vault_bench: %s\n", what);
    exit(1);
}

/* Ticks of CPU (user + system) the process has used so far. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(buf, sizeof buf, f))
        die("cannot read the vault's /proc stat");
    fclose(f);
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after ")": state is field 3; utime and stime are fields 14 and 15 */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        die("cannot parse the vault's /proc stat");
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int load_identities(const char *path, unsigned char (**ids)[VEIL_DEVICE_ID_BYTES],
                           unsigned char (**seeds)[32])
{
    FILE *f = fopen(path, "r");
    char line[256], id[64], seed[64], wn[64];
    size_t n = 0, cap = 0;
    if (!f)
        die("cannot read the identities file");
    while (fgets(line, sizeof line, f)) {
        size_t len;
        if (line[0] == '#' || sscanf(line, "%63s %63s %63s", id, seed, wn) != 3)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            *ids = realloc(*ids, cap * sizeof **ids);
            *seeds = realloc(*seeds, cap * sizeof **seeds);
            if (!*ids || !*seeds)
                die("out of memory");
        }
        if (veil_device_id_parse(id, (*ids)[n]) != 0 ||
            sodium_base642bin((*seeds)[n], 32, seed, strlen(seed), NULL, &len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            len != 32)
            die("identities file: a malformed device id or seed");
        n++;
    }
    fclose(f);
    if (!n)
        die("the identities file holds no identity");
    return (int)n;
}

static void release_req(Veil__Vault__ReleaseAttributesRequest *r, const struct login *l,
                        const Veil__Vault__VerifyTicketResponse *v, char **attrs)
{
    veil__vault__release_attributes_request__init(r);
    r->subject_ref = v->subject_ref;
    r->app_id = APP;
    r->attributes = attrs;
    r->n_attributes = 1;
    r->purpose = "login";
    r->capability = v->release_capability;
    r->challenge.data = (unsigned char *)l->challenge;
    r->challenge.len = 32;
}

/* One batch of 1 logins through the unbatched methods. */
static void one(const struct login *l)
{
    static char *attrs[] = {"age_over_18"};
    Veil__Vault__VerifyTicketRequest req = VEIL__VAULT__VERIFY_TICKET_REQUEST__INIT;
    Veil__Vault__VerifyTicketResponse *v;
    Veil__Vault__ReleaseAttributesRequest rr;
    Veil__Vault__ReleaseAttributesResponse *r;
    veil_status st;
    req.ticket = l->ticket;
    req.app_id = APP;
    req.challenge.data = (unsigned char *)l->challenge;
    req.challenge.len = 32;
    if (veil_channel_call(B.ch, "VerifyTicket", &req.base, NULL, CALL_MS, &v, &st) != VEIL_OK) {
        atomic_fetch_add(&B.errors, 1);
        return;
    }
    release_req(&rr, l, v, attrs);
    if (veil_channel_call(B.ch, "ReleaseAttributes", &rr.base, NULL, CALL_MS, &r, &st) != VEIL_OK)
        atomic_fetch_add(&B.errors, 1);
    else
        protobuf_c_message_free_unpacked(&r->base, NULL);
    protobuf_c_message_free_unpacked(&v->base, NULL);
}

/* n logins through the batched methods. */
static void batch(const struct login *l, size_t n)
{
    static char *attrs[] = {"age_over_18"};
    Veil__Vault__VerifyTicketRequest *vreq = calloc(n, sizeof *vreq), **vp = calloc(n, sizeof *vp);
    Veil__Vault__ReleaseAttributesRequest *rreq = calloc(n, sizeof *rreq),
                                          **rp = calloc(n, sizeof *rp);
    Veil__Vault__VerifyTicketBatchRequest vb = VEIL__VAULT__VERIFY_TICKET_BATCH_REQUEST__INIT;
    Veil__Vault__ReleaseAttributesBatchRequest rb =
        VEIL__VAULT__RELEASE_ATTRIBUTES_BATCH_REQUEST__INIT;
    Veil__Vault__VerifyTicketBatchResponse *v;
    Veil__Vault__ReleaseAttributesBatchResponse *r;
    veil_status st;
    if (!vreq || !vp || !rreq || !rp)
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        veil__vault__verify_ticket_request__init(&vreq[i]);
        vreq[i].ticket = l[i].ticket;
        vreq[i].app_id = APP;
        vreq[i].challenge.data = (unsigned char *)l[i].challenge;
        vreq[i].challenge.len = 32;
        vp[i] = &vreq[i];
    }
    vb.items = vp;
    vb.n_items = n;
    if (veil_channel_call(B.ch, "VerifyTicketBatch", &vb.base, NULL, CALL_MS, &v, &st) !=
        VEIL_OK) {
        atomic_fetch_add(&B.errors, (long)n);
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v->status[i]->code) {
            atomic_fetch_add(&B.errors, 1);
            continue;
        }
        release_req(&rreq[k], &l[i], v->items[i], attrs);
        rp[k] = &rreq[k];
        k++;
    }
    rb.items = rp;
    rb.n_items = k;
    if (k && veil_channel_call(B.ch, "ReleaseAttributesBatch", &rb.base, NULL, CALL_MS, &r, &st) !=
                 VEIL_OK) {
        atomic_fetch_add(&B.errors, (long)k);
    } else if (k) {
        for (size_t i = 0; i < k; i++)
            if (r->status[i]->code)
                atomic_fetch_add(&B.errors, 1);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    protobuf_c_message_free_unpacked(&v->base, NULL);
out:
    free(vreq);
    free(vp);
    free(rreq);
    free(rp);
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        size_t at = atomic_fetch_add(&B.next, B.batch);
        if (at >= B.n)
            return NULL;
        size_t n = at + B.batch <= B.n ? B.batch : B.n - at;
        if (B.batch == 1)
            one(&B.logins[at]);
        else
            batch(&B.logins[at], n);
    }
}

int main(int argc, char **argv)
{
    if (argc != 7)
        die("usage: vault_bench ADDR IDENTITIES LOGINS BATCH CALLS_IN_FLIGHT VAULT_PID");
    const char *addr = argv[1];
    B.n = (size_t)atol(argv[3]);
    B.batch = (size_t)atol(argv[4]);
    int depth = atoi(argv[5]);
    long pid = atol(argv[6]);
    if (sodium_init() < 0 || B.n == 0 || B.batch == 0 || B.batch > 256 || depth < 1 ||
        depth > 512)
        die("bad arguments");

    char ca[512], cert[512], key[512], err[512];
    veil_tls_config t;
    bench_tls(&t, "svc/gateway", ca, cert, key, sizeof ca);
    veil_channel_options opt = {.own_connection = 1};
    if (veil_channel_new(addr, &t, &veil__vault__vault__descriptor, &opt, &B.ch, err,
                         sizeof err) != VEIL_OK)
        die(err);

    Veil__Empty empty = VEIL__EMPTY__INIT;
    Veil__Vault__GetWalletKeysResponse *keys;
    veil_status st;
    if (veil_channel_call(B.ch, "GetWalletKeys", &empty.base, NULL, CALL_MS, &keys, &st) !=
        VEIL_OK)
        die("GetWalletKeys failed");
    unsigned char ticket_pk[32];
    uint32_t version = keys->ticket_key_version;
    memcpy(ticket_pk, keys->ticket_public_key.data, 32);
    protobuf_c_message_free_unpacked(&keys->base, NULL);

    /* the bench app's scope: the one attribute each login releases */
    static char *age[] = {"age_over_18"};
    Veil__Vault__AppScope a = VEIL__VAULT__APP_SCOPE__INIT;
    Veil__Vault__AppScope *apps[] = {&a};
    Veil__Vault__SetAppScopesRequest sreq = VEIL__VAULT__SET_APP_SCOPES_REQUEST__INIT;
    Veil__Empty *none;
    a.app_id = APP;
    a.attributes = age;
    a.n_attributes = 1;
    sreq.apps = apps;
    sreq.n_apps = 1;
    if (veil_channel_call(B.ch, "SetAppScopes", &sreq.base, NULL, CALL_MS, &none, &st) != VEIL_OK)
        die("SetAppScopes failed");
    protobuf_c_message_free_unpacked(&none->base, NULL);

    unsigned char(*ids)[VEIL_DEVICE_ID_BYTES] = NULL, (*seeds)[32] = NULL;
    int n_ids = load_identities(argv[2], &ids, &seeds);
    B.logins = calloc(B.n, sizeof *B.logins);
    if (!B.logins)
        die("out of memory");
    for (size_t i = 0; i < B.n; i++) {
        unsigned char pk[32], sk[64];
        size_t who = randombytes_uniform((uint32_t)n_ids);
        crypto_sign_seed_keypair(pk, sk, seeds[who]);
        randombytes_buf(B.logins[i].challenge, 32);
        if (veil_ticket_make(APP, B.logins[i].challenge, 32, veil_now_ms(), ids[who], sk,
                             ticket_pk, version, &B.logins[i].ticket) != VEIL_OK)
            die("cannot make a ticket");
        sodium_memzero(sk, sizeof sk);
    }

    pthread_t th[512];
    double cpu0 = proc_cpu_s(pid), t0 = bench_now_s();
    for (int i = 0; i < depth; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < depth; i++)
        pthread_join(th[i], NULL);
    double wall = bench_now_s() - t0, cpu = proc_cpu_s(pid) - cpu0;
    printf("vault_bench: batch=%zu in_flight=%zu logins=%zu seconds=%.2f logins_per_s=%.0f "
           "vault_cpu_us_per_login=%.1f errors=%ld\n",
           B.batch, B.batch * (size_t)depth, B.n, wall, (double)B.n / wall, cpu * 1e6 / (double)B.n,
           atomic_load(&B.errors));
    for (size_t i = 0; i < B.n; i++)
        free(B.logins[i].ticket);
    free(B.logins);
    free(ids);
    free(seeds);
    veil_channel_free(B.ch);
    return atomic_load(&B.errors) ? 1 : 0;
}
