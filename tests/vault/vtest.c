/* vtest.c - the vault suites' shared set-up and wallet side (vtest.h). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/codec.h"
#include "vtest.h"

/* Adds NAME=VALUE (name includes the '=') to the process's environment. */
static void add_env(vt *t, const char *name, const char *value)
{
    ck_assert_uint_lt(t->n_env, sizeof t->env / sizeof t->env[0]);
    snprintf(t->env[t->n_env++], sizeof t->env[0], "%s%s", name, value);
}

static void spawn(vt *t)
{
    const char *env[16];
    size_t i;
    for (i = 0; i < t->n_env; i++)
        env[i] = t->env[i];
    env[i] = NULL;
    ck_assert_int_eq(h_spawn(&t->proc, "vault", "svc/vault", env), 0);
    /*
     * Its own connection: h_spawn's health probe, as the same identity, just
     * closed a channel whose shared connection a new channel could pick up
     * while it is being torn down (the first call then fails UNAVAILABLE).
     */
    h_tls tls;
    char errbuf[512];
    veil_channel_options opt = {.own_connection = 1};
    h_tls_for(&tls, "svc/gateway");
    ck_assert_msg(veil_channel_new(t->proc.addr, &tls.cfg, &veil__vault__vault__descriptor, &opt,
                                   &t->ch, errbuf, sizeof errbuf) == VEIL_OK,
                  "channel: %s", errbuf);
    vt_wallet_keys(t, NULL, 0);
}

void vt_wallet_keys(vt *t, char *jwks, size_t cap)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Vault__GetWalletKeysResponse *resp;
    veil_status st;
    veil_err err = veil_channel_call(t->ch, "GetWalletKeys", &req.base, NULL, 5000, &resp, &st);
    if (err)
        h_dump_log(&t->proc);
    ck_assert_msg(err == VEIL_OK, "GetWalletKeys: %s (%s)", veil_err_name(err), st.message);
    ck_assert_uint_eq(resp->ticket_public_key.len, 32);
    memcpy(t->ticket_pk, resp->ticket_public_key.data, 32);
    t->ticket_version = resp->ticket_key_version;
    if (jwks)
        snprintf(jwks, cap, "%s", resp->vault_jwks);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

void vt_start(vt *t, const char *const *env)
{
    char out[4096];
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->caps_lock, NULL);
    ck_assert_int_ge(sodium_init(), 0);
    t->db = h_db_create("vault");
    t->keys = h_tempdir("vkeys");
    h_keyfile(t->keys, "master", 1);
    h_keyfile(t->keys, "blind", 1);
    h_keyfile(t->keys, "audit", 1);
    h_keyfile(t->keys, "webcert", 1);
    h_keyfile(t->keys, "ticket", 1);

    crypto_sign_keypair(t->proof_pk, t->proof_sk);
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, t->proof_pk, 32, sodium_base64_VARIANT_ORIGINAL);
    snprintf(t->proofing_file, sizeof t->proofing_file, "%s/proofing.pub", t->keys);
    FILE *f = fopen(t->proofing_file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "# test proofing authority\n%s\n", b64);
    fclose(f);

    add_env(t, "VEIL_DATABASE_URL=", t->db);
    add_env(t, "VEIL_KEYS_DIR=", t->keys);
    add_env(t, "VAULT_PROOFING_PUBLIC_KEY=", t->proofing_file);
    for (const char *const *e = env; e && *e; e++)
        add_env(t, "", *e);
    ck_assert_msg(vt_command(t, "migrate", out, sizeof out) == 0, "vault migrate: %s", out);
    spawn(t);
}

void vt_stop(vt *t)
{
    veil_channel_free(t->ch);
    t->ch = NULL;
    ck_assert_int_eq(h_stop(&t->proc), 0);
    free(t->db);
    free(t->keys);
}

void vt_restart(vt *t)
{
    veil_channel_free(t->ch);
    t->ch = NULL;
    ck_assert_int_eq(h_stop(&t->proc), 0);
    spawn(t);
}

void vt_crash_restart(vt *t)
{
    veil_channel_free(t->ch);
    t->ch = NULL;
    h_kill(&t->proc);
    spawn(t);
}

int vt_command(vt *t, const char *args, char *out, size_t cap)
{
    char cmd[8192], path[1024];
    size_t k = 0;
    h_tls tls;
    h_tls_for(&tls, "svc/vault");
    snprintf(path, sizeof path, "%s/vault-cmd-%d.out", h_env("VEIL_TEST_DIR"), (int)getpid());
    k += (size_t)snprintf(cmd + k, sizeof cmd - k,
                          "env VEIL_TLS_CA='%s' VEIL_TLS_CERT='%s' "
                          "VEIL_TLS_KEY='%s'",
                          tls.ca, tls.cert, tls.key);
    for (size_t i = 0; i < t->n_env; i++) {
        const char *eq = strchr(t->env[i], '=');
        k += (size_t)snprintf(cmd + k, sizeof cmd - k, " %.*s='%s'", (int)(eq - t->env[i]),
                              t->env[i], eq + 1);
    }
    snprintf(cmd + k, sizeof cmd - k, " '%s/vault' %s >'%s' 2>&1", h_env("VEIL_TEST_BIN"), args,
             path);
    int rc = system(cmd);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(out, 1, cap - 1, f);
        out[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

void vt_id_number(char out[19], const char *region, int y, int m, int d, int seq)
{
    /* ISO 7064 MOD 11-2 written as the standard states it: weights 2^(17-i) mod 11. */
    snprintf(out, 19, "%.6s%04d%02d%02d%03d", region, y, m, d, seq);
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        int w = 1;
        for (int k = 0; k < 17 - i; k++)
            w = w * 2 % 11;
        sum += (out[i] - '0') * w;
    }
    int c = (12 - sum % 11) % 11;
    out[17] = c == 10 ? 'X' : (char)('0' + c);
    out[18] = '\0';
}

void vt_new_device(vt_device *d)
{
    memset(d, 0, sizeof *d);
    crypto_sign_keypair(d->pk, d->sk);
}

void vt_attest(const vt *t, const char *id, const char *name, int face_match,
               const unsigned char pk[32], int64_t at_ms, unsigned char sig[64])
{
    veil_buf b = {0};
    veil_attestation_bytes(&b, id, name, face_match, pk, at_ms);
    ck_assert(!b.failed);
    crypto_sign_detached(sig, NULL, b.data, b.len, t->proof_sk);
    veil_buf_free(&b);
}

veil_err vt_enrol_raw(vt *t, const Veil__Vault__EnrolRequest *req,
                      Veil__Vault__EnrolResponse **resp, veil_status *st)
{
    return veil_channel_call(t->ch, "Enrol", &req->base, NULL, 10000, resp, st);
}

Veil__Vault__ProofingAttestation vt_attestation(unsigned char sig[64], int face_match,
                                                int64_t at_ms)
{
    Veil__Vault__ProofingAttestation pa = VEIL__VAULT__PROOFING_ATTESTATION__INIT;
    pa.face_match = face_match;
    pa.attested_at_ms = at_ms;
    pa.signature.data = sig;
    pa.signature.len = 64;
    return pa;
}

Veil__Vault__EnrolRequest vt_enrol_request(const char *request_id, const char *id, const char *name,
                                           vt_device *d, Veil__Vault__ProofingAttestation *pa)
{
    Veil__Vault__EnrolRequest req = VEIL__VAULT__ENROL_REQUEST__INIT;
    req.request_id = (char *)request_id;
    req.id_number = (char *)id;
    req.full_name = (char *)name;
    req.device_public_key.data = d->pk;
    req.device_public_key.len = 32;
    req.attestation = pa;
    return req;
}

veil_err vt_enrol(vt *t, const char *request_id, const char *id, const char *name, vt_device *d,
                  int *new_identity, veil_status *st)
{
    return vt_enrol_cert(t, request_id, id, name, d, new_identity, NULL, st);
}

veil_err vt_enrol_cert(vt *t, const char *request_id, const char *id, const char *name,
                       vt_device *d, int *new_identity, char **certificate, veil_status *st)
{
    unsigned char sig[64];
    int64_t at = veil_now_ms();
    vt_attest(t, id, name, 1, d->pk, at, sig);
    Veil__Vault__ProofingAttestation pa = vt_attestation(sig, 1, at);
    Veil__Vault__EnrolRequest req = vt_enrol_request(request_id, id, name, d, &pa);
    req.device_label = "phone";
    Veil__Vault__EnrolResponse *resp;
    veil_err err = vt_enrol_raw(t, &req, &resp, st);
    if (err)
        return err;
    snprintf(d->device_id, sizeof d->device_id, "%s", resp->device_id);
    ck_assert_int_eq(veil_device_id_parse(d->device_id, d->id), 0);
    snprintf(d->web_number, sizeof d->web_number, "%s", resp->web_number);
    if (new_identity)
        *new_identity = resp->new_identity;
    if (certificate)
        *certificate = strdup(resp->web_certificate);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return VEIL_OK;
}

char *vt_ticket(const vt *t, const vt_device *d, const char *app, const unsigned char challenge[32],
                int64_t time_ms)
{
    char *s;
    ck_assert_int_eq(veil_ticket_make(app, challenge, 32, time_ms, d->id, d->sk, t->ticket_pk,
                                      t->ticket_version, &s),
                     VEIL_OK);
    return s;
}

veil_err vt_verify(vt *t, const char *ticket, const char *app, const unsigned char *challenge,
                   size_t challenge_len, unsigned char *subject, char *device_id, veil_status *st)
{
    Veil__Vault__VerifyTicketRequest req = VEIL__VAULT__VERIFY_TICKET_REQUEST__INIT;
    req.ticket = (char *)ticket;
    req.app_id = (char *)app;
    req.challenge.data = (unsigned char *)challenge;
    req.challenge.len = challenge_len;
    Veil__Vault__VerifyTicketResponse *resp;
    veil_err err = veil_channel_call(t->ch, "VerifyTicket", &req.base, NULL, 5000, &resp, st);
    if (err)
        return err;
    ck_assert_uint_eq(resp->subject_ref.len, 32);
    ck_assert_uint_eq(resp->release_capability.len, 57);
    if (subject)
        memcpy(subject, resp->subject_ref.data, 32);
    if (device_id)
        snprintf(device_id, 33, "%s", resp->device_id);
    if (challenge_len == 32) {
        pthread_mutex_lock(&t->caps_lock);
        struct vt_cap *c = &t->caps[t->n_caps++ % VT_CAPS];
        memset(c, 0, sizeof *c);
        memcpy(c->subject, resp->subject_ref.data, 32);
        snprintf(c->app, sizeof c->app, "%s", app);
        memcpy(c->challenge, challenge, 32);
        memcpy(c->cap, resp->release_capability.data, resp->release_capability.len);
        c->cap_len = resp->release_capability.len;
        pthread_mutex_unlock(&t->caps_lock);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return VEIL_OK;
}

veil_err vt_login(vt *t, vt_device *d, const char *app, veil_status *st)
{
    unsigned char challenge[32];
    char device_id[33];
    randombytes_buf(challenge, sizeof challenge);
    char *ticket = vt_ticket(t, d, app, challenge, veil_now_ms());
    veil_err err = vt_verify(t, ticket, app, challenge, 32, d->subject, device_id, st);
    free(ticket);
    if (!err) {
        ck_assert_str_eq(device_id, ""); /* the vault does not say which device it was */
        pthread_mutex_lock(&t->caps_lock);
        for (size_t i = 0; i < VT_CAPS; i++)
            if (memcmp(t->caps[i].challenge, challenge, 32) == 0)
                t->caps[i].dev = d;
        pthread_mutex_unlock(&t->caps_lock);
    }
    return err;
}

veil_err vt_release_raw(vt *t, const unsigned char *subject, const char *app,
                        const char *const *names, size_t n, const char *purpose,
                        const unsigned char *cap, size_t cap_len, const unsigned char *challenge,
                        Veil__Vault__ReleaseAttributesResponse **resp, veil_status *st)
{
    Veil__Vault__ReleaseAttributesRequest req = VEIL__VAULT__RELEASE_ATTRIBUTES_REQUEST__INIT;
    req.subject_ref.data = (unsigned char *)subject;
    req.subject_ref.len = 32;
    req.app_id = (char *)app;
    req.attributes = (char **)names;
    req.n_attributes = n;
    req.purpose = (char *)purpose;
    req.capability.data = (unsigned char *)cap;
    req.capability.len = cap ? cap_len : 0;
    req.challenge.data = (unsigned char *)challenge;
    req.challenge.len = challenge ? 32 : 0;
    return veil_channel_call(t->ch, "ReleaseAttributes", &req.base, NULL, 5000, resp, st);
}

veil_err vt_set_scope(vt *t, const char *app, const char *const *names, size_t n, veil_status *st)
{
    Veil__Vault__AppScope a = VEIL__VAULT__APP_SCOPE__INIT;
    Veil__Vault__AppScope *apps[] = {&a};
    Veil__Vault__SetAppScopesRequest req = VEIL__VAULT__SET_APP_SCOPES_REQUEST__INIT;
    Veil__Empty *resp;
    a.app_id = (char *)app;
    a.attributes = (char **)names;
    a.n_attributes = n;
    req.apps = apps;
    req.n_apps = 1;
    veil_err err = veil_channel_call(t->ch, "SetAppScopes", &req.base, NULL, 5000, &resp, st);
    if (!err)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return err;
}

/* Copies an unused capability for (subject, app); 0 if there is one. */
static int take_cap(vt *t, const unsigned char *subject, const char *app, struct vt_cap *out)
{
    int found = 0;
    pthread_mutex_lock(&t->caps_lock);
    for (size_t i = 0; !found && i < VT_CAPS; i++) {
        struct vt_cap *c = &t->caps[i];
        if (c->cap_len && !c->used && memcmp(c->subject, subject, 32) == 0 &&
            strcmp(c->app, app) == 0) {
            *out = *c;
            found = 1;
        }
    }
    pthread_mutex_unlock(&t->caps_lock);
    return found ? 0 : -1;
}

/* A device vt_login used for subject, or NULL. */
static vt_device *known_device(vt *t, const unsigned char *subject)
{
    vt_device *d = NULL;
    pthread_mutex_lock(&t->caps_lock);
    for (size_t i = 0; !d && i < VT_CAPS; i++)
        if (t->caps[i].dev && memcmp(t->caps[i].subject, subject, 32) == 0)
            d = t->caps[i].dev;
    pthread_mutex_unlock(&t->caps_lock);
    return d;
}

veil_err vt_release(vt *t, const unsigned char *subject, const char *app, const char *const *names,
                    size_t n, const char *purpose, Veil__Vault__ReleaseAttributesResponse **resp,
                    veil_status *st)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_scopes WHERE app_id = '%s'", app);
    if (veil_ident_valid(app) && vt_sql_int(t, sql) == 0) {
        size_t n_cat;
        const veil_attr *cat = veil_attr_catalogue(&n_cat);
        const char *all[16];
        for (size_t i = 0; i < n_cat && i < 16; i++)
            all[i] = cat[i].name;
        ck_assert_int_eq(vt_set_scope(t, app, all, n_cat, st), VEIL_OK);
    }
    struct vt_cap c;
    int have = take_cap(t, subject, app, &c) == 0;
    vt_device *d = have ? NULL : known_device(t, subject);
    if (d && vt_login(t, d, app, st) == VEIL_OK)
        have = take_cap(t, subject, app, &c) == 0;
    veil_err err = vt_release_raw(t, subject, app, names, n, purpose, have ? c.cap : NULL,
                                  have ? c.cap_len : 0, have ? c.challenge : NULL, resp, st);
    /* Malformed requests are refused before the capability is looked at: it stays unused. */
    if (have && err != VEIL_ERR_INVALID) {
        pthread_mutex_lock(&t->caps_lock);
        for (size_t i = 0; i < VT_CAPS; i++)
            if (memcmp(t->caps[i].cap, c.cap, c.cap_len) == 0)
                t->caps[i].used = 1;
        pthread_mutex_unlock(&t->caps_lock);
    }
    return err;
}

veil_err vt_subject_call(vt *t, const char *method, const unsigned char *subject, size_t len,
                         void *resp, veil_status *st)
{
    Veil__Vault__SubjectRequest req = VEIL__VAULT__SUBJECT_REQUEST__INIT;
    req.subject_ref.data = (unsigned char *)subject;
    req.subject_ref.len = len;
    return veil_channel_call(t->ch, method, &req.base, NULL, 5000, resp, st);
}

static PGconn *connect_db(const vt *t)
{
    PGconn *c = PQconnectdb(t->db);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "cannot connect: %s", PQerrorMessage(c));
    return c;
}

PGresult *vt_sql(const vt *t, const char *sql)
{
    PGconn *c = connect_db(t);
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
                  "%s: %s", sql, PQerrorMessage(c));
    PQfinish(c);
    return r;
}

long long vt_sql_int(const vt *t, const char *sql)
{
    PGresult *r = vt_sql(t, sql);
    ck_assert_int_eq(PQntuples(r), 1);
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

PGresult *vt_sql_bytes(const vt *t, const char *sql, const unsigned char *p, size_t n)
{
    PGconn *c = connect_db(t);
    const char *values[] = {(const char *)p};
    int lengths[] = {(int)n}, formats[] = {1};
    PGresult *r = PQexecParams(c, sql, 1, NULL, values, lengths, formats, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
                  "%s: %s", sql, PQerrorMessage(c));
    PQfinish(c);
    return r;
}

void vt_today_cst(int *y, int *m, int *d)
{
    time_t now = time(NULL) + 8 * 3600;
    struct tm tm;
    gmtime_r(&now, &tm);
    *y = tm.tm_year + 1900;
    *m = tm.tm_mon + 1;
    *d = tm.tm_mday;
}

int vt_group_stats(const h_proc *p, long long *batches, long long *entries)
{
    FILE *f = fopen(p->log, "r");
    char line[8192];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *b = strstr(line, "\"batches\":"), *e = strstr(line, "\"entries\":");
        if (strstr(line, "access-log group commit statistics") && b && e) {
            *batches = atoll(b + 10);
            *entries = atoll(e + 10);
            found = 1;
        }
    }
    if (f)
        fclose(f);
    return found;
}
