/* stack.c - all five services for end-to-end suites (stack.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sodium.h>

#include "stack.h"

static const char *const names[] = {"gateway", "vault", "consent", "revocation", "pseudonym"};

/* The NAME=VALUE strings of one service's environment, in static-enough storage. */
struct env {
    char v[24][1200];
    const char *p[25];
    int n;
};

static void env_add(struct env *e, const char *name, const char *value)
{
    if (name)
        snprintf(e->v[e->n], sizeof e->v[e->n], "%s=%s", name, value);
    else
        snprintf(e->v[e->n], sizeof e->v[e->n], "%s", value);
    e->p[e->n] = e->v[e->n];
    e->p[++e->n] = NULL;
}

/* Whether a NAME=VALUE list sets name. */
static int names_var(const char *const *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *const *x = list; x && *x; x++)
        if (strncmp(*x, name, n) == 0 && (*x)[n] == '=')
            return 1;
    return 0;
}

static void service_env(h_stack *s, int which, struct env *e)
{
    e->n = 0;
    e->p[0] = NULL;
    env_add(e, "VEIL_KEYS_DIR", s->keys[which]);
    if (s->health_port[which]) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", s->health_port[which]);
        env_add(e, "VEIL_HEALTH_ADDR", addr);
    }
    if (s->metrics_port[which]) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", s->metrics_port[which]);
        env_add(e, "VEIL_METRICS_ADDR", addr);
    }
    for (const char *const *x = s->service_env; x && *x && e->n < 23; x++)
        env_add(e, NULL, *x);
    if (which <= H_REVOCATION)
        env_add(e, "VEIL_DATABASE_URL", s->db[which]);
    if (which == H_VAULT) {
        char path[1100];
        snprintf(path, sizeof path, "%s/proofing.pub", s->dir);
        env_add(e, "VAULT_PROOFING_PUBLIC_KEY", path);
    }
    if (which == H_GATEWAY) {
        env_add(e, "GATEWAY_VAULT_ADDR", s->vault.addr);
        env_add(e, "GATEWAY_CONSENT_ADDR", s->consent.addr);
        env_add(e, "GATEWAY_REVOCATION_ADDR", s->revocation.addr);
        env_add(e, "GATEWAY_PSEUDONYM_ADDR", s->pseudonym.addr);
        env_add(e, "GATEWAY_ISSUER", "https://veil.test");
        env_add(e, "GATEWAY_ADMIN_ADDR", s->admin_addr);
        /* the admin listener's own certificate, not the gateway's (tests/run issues it) */
        char admin_tls[1100];
        snprintf(admin_tls, sizeof admin_tls, "%s/svc-gateway-admin.crt", h_env("VEIL_TEST_CERTS"));
        env_add(e, "GATEWAY_ADMIN_TLS_CERT", admin_tls);
        snprintf(admin_tls, sizeof admin_tls, "%s/svc-gateway-admin.key", h_env("VEIL_TEST_CERTS"));
        env_add(e, "GATEWAY_ADMIN_TLS_KEY", admin_tls);
        /*
         * Events in one-second batches, so suites see them within ~1.2 s (the
         * default is an hour) - unless the suite's gateway_env says otherwise
         * (getenv takes the first of two).
         */
        if (!names_var(s->gateway_env, "GATEWAY_EVENT_BATCH_MS"))
            env_add(e, "GATEWAY_EVENT_BATCH_MS", "1000");
        if (!names_var(s->gateway_env, "GATEWAY_EVENT_SETTLE_MS"))
            env_add(e, "GATEWAY_EVENT_SETTLE_MS", "200");
    }
}

int h_stack_command(h_stack *s, int which, const char *args)
{
    struct env e;
    service_env(s, which, &e);
    char cmd[8192] = "env";
    for (int i = 0; i < e.n; i++) {
        strncat(cmd, " '", sizeof cmd - strlen(cmd) - 1);
        strncat(cmd, e.p[i], sizeof cmd - strlen(cmd) - 1);
        strncat(cmd, "'", sizeof cmd - strlen(cmd) - 1);
    }
    char tail[2048];
    snprintf(tail, sizeof tail, " %s/%s %s >>%s/%s-commands.log 2>&1", h_env("VEIL_TEST_BIN"),
             names[which], args, s->dir, names[which]);
    strncat(cmd, tail, sizeof cmd - strlen(cmd) - 1);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "stack: `%s %s` failed (see %s/%s-commands.log)\n", names[which], args,
                s->dir, names[which]);
    return rc;
}

/* Starts one service; a port it had before is kept (the others know its address). */
static int spawn_service(h_stack *s, int which, struct env *e)
{
    h_proc *procs[] = {&s->gateway, &s->vault, &s->consent, &s->revocation, &s->pseudonym};
    char identity[64], listen[64];
    snprintf(identity, sizeof identity, "svc/%s", names[which]);
    if (procs[which]->port > 0 && e->n < 24) {
        snprintf(listen, sizeof listen, "127.0.0.1:%d", procs[which]->port);
        env_add(e, "VEIL_LISTEN_ADDR", listen); /* overrides h_spawn's port 0 */
    }
    return h_spawn(procs[which], names[which], identity, e->p);
}

int h_stack_restart(h_stack *s, int which)
{
    struct env e;
    service_env(s, which, &e);
    if (which == H_GATEWAY)
        for (const char *const *x = s->gateway_env; x && *x && e.n < 23; x++)
            env_add(&e, NULL, *x);
    return spawn_service(s, which, &e);
}

int h_stack_start(h_stack *s, const char *const *gateway_env)
{
    h_stack_opts o = {.gateway_env = gateway_env};
    return h_stack_start_opts(s, &o);
}

int h_stack_start_opts(h_stack *s, const h_stack_opts *opts)
{
    memset(s, 0, sizeof *s);
    if (opts) {
        s->gateway_env = opts->gateway_env;
        s->service_env = opts->service_env;
        for (int i = 0; opts->health_ports && i < 5; i++)
            s->health_port[i] = h_free_port();
        for (int i = 0; opts->metrics_ports && i < 5; i++)
            s->metrics_port[i] = h_free_port();
    }
    s->dir = h_tempdir("stack");
    snprintf(s->admin_addr, sizeof s->admin_addr, "127.0.0.1:%d", h_free_port());
    static const char *const purposes[5][6] = {
        {"assertion", "auditref", NULL},
        {"master", "blind", "audit", "webcert", "ticket", NULL},
        {"receipt", NULL},
        {NULL},
        {"pseudonym", NULL},
    };
    for (int i = 0; i < 5; i++) {
        snprintf(s->keys[i], sizeof s->keys[i], "%s/keys-%s", s->dir, names[i]);
        mkdir(s->keys[i], 0700);
        for (int k = 0; purposes[i][k]; k++)
            h_keyfile(s->keys[i], purposes[i][k], 1);
    }
    for (int i = 0; i <= H_REVOCATION; i++)
        s->db[i] = h_db_create(names[i]);

    /* The development proofing authority: its public key is the vault's to trust. */
    unsigned char pk[32], sk[64];
    char pk64[64], path[1100];
    randombytes_buf(s->proofing_seed, sizeof s->proofing_seed);
    crypto_sign_seed_keypair(pk, sk, s->proofing_seed);
    sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    snprintf(path, sizeof path, "%s/proofing.pub", s->dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", pk64);
    fclose(f);

    for (int i = 0; i <= H_REVOCATION; i++)
        if (h_stack_command(s, i, "migrate") != 0)
            return -1;
    char seed[2048];
    snprintf(seed, sizeof seed, "seed-apps %s/db/gateway/sample/first-deployment-apps.tsv",
             h_env("VEIL_SOURCE_DIR"));
    if (h_stack_command(s, H_GATEWAY, seed) != 0)
        return -1;
    for (int i = H_VAULT; i <= H_PSEUDONYM; i++)
        if (h_stack_restart(s, i) != 0)
            return -1;
    return h_stack_restart(s, H_GATEWAY);
}

int h_stack_stop(h_stack *s)
{
    h_proc *procs[] = {&s->gateway, &s->vault, &s->consent, &s->revocation, &s->pseudonym};
    int bad = 0;
    for (int i = 0; i < 5; i++)
        if (procs[i]->pid > 0 && h_stop(procs[i]) != 0)
            bad++;
    for (int i = 0; i < 4; i++)
        free(s->db[i]);
    free(s->dir);
    return bad;
}

void h_stack_veilctl_env(const h_stack *s, const char *dir)
{
    char path[1200], b64[64];
    snprintf(path, sizeof path, "%s/proofing-1.key", dir);
    sodium_bin2base64(b64, sizeof b64, s->proofing_seed, 32, sodium_base64_VARIANT_ORIGINAL);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%s\n", b64);
        fclose(f);
    }
    chmod(path, 0600);
    setenv("VEILCTL_PROOFING_KEY", path, 1);
    setenv("VEILCTL_GATEWAY", s->gateway.addr, 1);
    setenv("VEILCTL_ADMIN_ADDR", s->admin_addr, 1);
    snprintf(path, sizeof path, "%s/ca.crt", h_env("VEIL_TEST_CERTS"));
    setenv("VEILCTL_CA", path, 1);
    setenv("VEILCTL_CERTS", h_env("VEIL_TEST_CERTS"), 1);
    setenv("VEILCTL_ADMIN", "ops", 1);
}

void h_stack_oidc_env(const h_stack *s, const char *dir, const char *issuer)
{
    char path[1200];
    h_stack_veilctl_env(s, dir);
    snprintf(path, sizeof path, "%s/veilctl", h_env("VEIL_TEST_BIN"));
    setenv("VEILCTL", path, 1);
    setenv("VEIL_OIDC_ISSUER", issuer, 1);
    setenv("OIDC_SCRATCH", dir, 1);
    snprintf(path, sizeof path, "%d", h_free_port());
    setenv("OIDC_CALLBACK_PORT", path, 1);
}

int h_oidc_scenario(const h_stack *s, const char *name)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/gateway/oidc_rp.py %s",
             h_env("VEIL_SOURCE_DIR"), name);
    int st = system(cmd);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    h_dump_log(&s->gateway);
    return -1;
}

void h_stack_up(h_stack *s)
{
    if (h_stack_start(s, NULL) != 0)
        ck_abort_msg("the stack did not start");
}

void h_stack_down(h_stack *s)
{
    ck_assert_int_eq(h_stack_stop(s), 0);
}
