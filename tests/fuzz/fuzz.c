/* fuzz.c - what the fuzz targets share (fuzz.h). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>

#include "fuzz.h"
#include "gateway.h"
#include "grpc/health/v1/health.pb-c.h"
#include "veil/codec.h"
#include "veil/log.h"

/* A database nobody listens on: handlers fail with UNAVAILABLE once they need it. */
#define DEAD_DB "host=/nonexistent/veil-fuzz dbname=veil connect_timeout=1"

const unsigned char fz_challenge[VEIL_CHALLENGE_BYTES] = {
    0x76, 0x65, 0x69, 0x6c, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x63, 0x68, 0x61, 0x6c, 0x6c, 0x65,
    0x6e, 0x67, 0x65, 0x2d, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x31};

const veil_peer fz_gateway_peer = {VEIL_PEER_GATEWAY, "gateway", "spiffe://veil/svc/gateway"};

/* ---- reading the fuzzer's bytes ---- */

size_t fz_copy(fz_reader *r, void *out, size_t n)
{
    size_t k = r->n < n ? r->n : n;
    if (k)
        memcpy(out, r->p, k);
    if (k < n)
        memset((unsigned char *)out + k, 0, n - k);
    r->p += k;
    r->n -= k;
    return k;
}

uint8_t fz_u8(fz_reader *r)
{
    uint8_t v;
    fz_copy(r, &v, 1);
    return v;
}

uint16_t fz_u16(fz_reader *r)
{
    unsigned char b[2];
    fz_copy(r, b, 2);
    return (uint16_t)(b[0] << 8 | b[1]);
}

uint32_t fz_u32(fz_reader *r)
{
    unsigned char b[4];
    fz_copy(r, b, 4);
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

int64_t fz_i64(fz_reader *r)
{
    unsigned char b[8];
    uint64_t v = 0;
    fz_copy(r, b, 8);
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return (int64_t)v;
}

void fz_str(fz_reader *r, char *out, size_t max)
{
    size_t n = fz_u8(r);
    if (n > max)
        n = max;
    n = fz_copy(r, out, n);
    out[n] = '\0';
}

/* ---- files ---- */

static char tmpdir[256];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}

static void remove_tmpdir(void)
{
    if (tmpdir[0])
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fz_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/veil-fuzz.XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(tmpdir))
            abort();
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

const char *fz_write_file(const char *name, const void *data, size_t n, unsigned mode)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fz_tmpdir(), name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || (n && write(fd, data, n) != (ssize_t)n) || fchmod(fd, mode) != 0)
        abort();
    close(fd);
    return path;
}

/* ---- keys ---- */

void fz_key(const char *purpose, unsigned version, unsigned char out[32])
{
    char label[96];
    int n = snprintf(label, sizeof label, "veil-fuzz-key:%s-%u", purpose, version);
    crypto_generichash(out, 32, (const unsigned char *)label, (size_t)n, NULL, 0);
}

const char *fz_keys_dir(void)
{
    static char dir[300];
    if (dir[0])
        return dir;
    static const char *const purposes[] = {"master", "blind",   "audit",    "webcert",
                                           "ticket", "receipt", "pseudonym"};
    snprintf(dir, sizeof dir, "%s/keys", fz_tmpdir());
    if (mkdir(dir, 0700) != 0)
        abort();
    for (size_t i = 0; i < sizeof purposes / sizeof purposes[0]; i++) {
        unsigned char key[32];
        char b64[64], name[64], path[400];
        fz_key(purposes[i], 1, key);
        sodium_bin2base64(b64, sizeof b64, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
        snprintf(name, sizeof name, "%s-1.key", purposes[i]);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, b64, strlen(b64)) != (ssize_t)strlen(b64))
            abort();
        close(fd);
    }
    return dir;
}

const char *fz_proofing_file(void)
{
    static char path[400];
    if (path[0])
        return path;
    unsigned char seed[32], pk[32], sk[64];
    char b64[64], text[128];
    fz_key("proofing", 1, seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    sodium_bin2base64(b64, sizeof b64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    int n = snprintf(text, sizeof text, "# the fuzzers' proofing authority\n%s\n", b64);
    snprintf(path, sizeof path, "%s", fz_write_file("proofing.pub", text, (size_t)n, 0600));
    return path;
}

void fz_device(unsigned char pk[32], unsigned char sk[64], unsigned char id[VEIL_DEVICE_ID_BYTES])
{
    unsigned char seed[32], idbytes[32];
    fz_key("device", 1, seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    fz_key("device-id", 1, idbytes);
    memcpy(id, idbytes, VEIL_DEVICE_ID_BYTES);
}

void fz_ticket_pk(unsigned char pk[32])
{
    unsigned char seed[32], sk[32];
    fz_key("ticket", 1, seed);
    crypto_box_seed_keypair(pk, sk, seed);
    sodium_memzero(sk, sizeof sk);
}

/* ---- the services ---- */

static void quiet(void)
{
    static int done;
    if (!done) {
        done = 1;
        if (sodium_init() < 0)
            abort();
        veil_log_init("fuzz", VEIL_LOG_ERROR);
    }
}

struct vault *fz_vault(void)
{
    static struct vault *v;
    char err[512];
    if (v)
        return v;
    quiet();
    v = calloc(1, sizeof *v);
    v->rpc = vault_rpc;
    v->cfg = (struct vault_config){
        .attestation_max_age_ms = 600000, .skew_ms = 120000, .webcert_days = 365};
    if (vault_keys_load(fz_keys_dir(), fz_proofing_file(), 0, &v->keys, err, sizeof err) ||
        vault_store_open(DEAD_DB, &v->store)) {
        fprintf(stderr, "fuzz: cannot build the vault: %s\n", err);
        abort();
    }
    return v;
}

struct consent *fz_consent(void)
{
    static struct consent *c;
    char err[512];
    if (c)
        return c;
    quiet();
    c = calloc(1, sizeof *c);
    c->rpc = consent_rpc;
    if (veil_keyring_load(fz_keys_dir(), "receipt", &c->keys, err, sizeof err) ||
        consent_signers_update(c, err, sizeof err) || consent_store_open(DEAD_DB, &c->store)) {
        fprintf(stderr, "fuzz: cannot build consent: %s\n", err);
        abort();
    }
    return c;
}

struct revocation *fz_revocation(void)
{
    static struct revocation *r;
    if (r)
        return r;
    quiet();
    r = calloc(1, sizeof *r);
    r->rpc = revocation_rpc;
    if (revocation_store_open(DEAD_DB, &r->store))
        abort();
    return r;
}

struct pseudonym *fz_pseudonym(void)
{
    static struct pseudonym *p;
    char err[512];
    if (p)
        return p;
    quiet();
    p = calloc(1, sizeof *p);
    p->rpc = pseudonym_rpc;
    if (veil_keyring_load(fz_keys_dir(), "pseudonym", &p->keys, err, sizeof err)) {
        fprintf(stderr, "fuzz: cannot build pseudonym: %s\n", err);
        abort();
    }
    return p;
}

veil_err fz_call(ProtobufCService *svc, const char *method, const void *request, size_t len)
{
    char msg[256];
    veil_err err =
        veil_call_local(svc, method, &fz_gateway_peer, request, len, 0, NULL, msg, sizeof msg);
    if (err == VEIL_ERR_INTERNAL || (err && !msg[0])) {
        fprintf(stderr, "fuzz: %s/%s answered %s \"%s\"\n", svc->descriptor->name, method,
                veil_err_name(err), msg);
        abort();
    }
    return err;
}

void fz_issue(char **cert, char **receipt)
{
    unsigned char pk[32], sk[64], id[VEIL_DEVICE_ID_BYTES];
    char wn[VEIL_WEB_NUMBER_LEN + 1];
    fz_device(pk, sk, id);
    veil_web_number_new(wn);
    if (vault_webcert_issue(fz_vault()->keys, wn, pk, veil_now_ms(), 365, cert) != VEIL_OK)
        abort();
    char *attrs[] = {"age_over_18", "province"};
    struct consent_new_grant g = {.app_id = FZ_APP,
                                  .attributes = attrs,
                                  .n_attributes = 2,
                                  .purpose = "age check",
                                  .granted_at_ms = veil_now_ms(),
                                  .expires_at_ms = veil_now_ms() + 86400000,
                                  .receipt_id = "q3Fh8Zk0m1Vb2wH7yC9dLg"};
    if (consent_receipt_sign(atomic_load(&fz_consent()->signers.current), &g, receipt) != VEIL_OK)
        abort();
}

uint8_t *fz_pack(const ProtobufCMessage *m, size_t *n)
{
    *n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*n ? *n : 1);
    if (!buf || protobuf_c_message_pack(m, buf) != *n)
        abort();
    return buf;
}

/* ---- every method ---- */

static ProtobufCService *vault_svc(void)
{
    return &fz_vault()->rpc.base;
}

static ProtobufCService *consent_svc(void)
{
    return &fz_consent()->rpc.base;
}

static ProtobufCService *revocation_svc(void)
{
    return &fz_revocation()->rpc.base;
}

static ProtobufCService *pseudonym_svc(void)
{
    return &fz_pseudonym()->rpc.base;
}

static const struct {
    const ProtobufCServiceDescriptor *desc;
    const veil_method_policy *policy;
    const size_t *n;
    ProtobufCService *(*local)(void);
} tables[] = {
    {&veil__gateway__login__descriptor, gw_login_policy, &gw_login_policy_len, NULL},
    {&veil__gateway__wallet__descriptor, gw_wallet_policy, &gw_wallet_policy_len, NULL},
    {&veil__gateway__admin__descriptor, gw_admin_policy, &gw_admin_policy_len, NULL},
    {&veil__gateway__counter__descriptor, gw_counter_policy, &gw_counter_policy_len, NULL},
    {&veil__vault__vault__descriptor, vault_policy, &vault_policy_len, vault_svc},
    {&veil__consent__consent__descriptor, consent_policy, &consent_policy_len, consent_svc},
    {&veil__revocation__revocation__descriptor, revocation_policy, &revocation_policy_len,
     revocation_svc},
    {&veil__pseudonym__pseudonym__descriptor, pseudonym_policy, &pseudonym_policy_len,
     pseudonym_svc},
    {&grpc__health__v1__health__descriptor, veil_health_policy, &veil_health_policy_len, NULL},
};

size_t fz_methods(const fz_method **out)
{
    static fz_method all[128];
    static size_t n;
    if (!n) {
        for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
            for (unsigned i = 0; i < tables[t].desc->n_methods; i++) {
                const veil_method_policy *row = NULL;
                for (size_t k = 0; k < *tables[t].n; k++)
                    if (strcmp(tables[t].policy[k].method, tables[t].desc->methods[i].name) == 0)
                        row = &tables[t].policy[k];
                if (!row || n == sizeof all / sizeof all[0])
                    abort(); /* a method without a policy row: check_authz says the same */
                all[n++] =
                    (fz_method){tables[t].desc, &tables[t].desc->methods[i], row, tables[t].local};
            }
        }
    }
    *out = all;
    return n;
}

int fz_method_index(const char *service, const char *method)
{
    const fz_method *all;
    size_t n = fz_methods(&all);
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].service->name, service) == 0 && strcmp(all[i].method->name, method) == 0)
            return (int)i;
    return -1;
}
