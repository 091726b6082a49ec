/*
 * stack.h - the whole of veil for end-to-end suites: fresh databases for the
 * four data-owning services, migrated; key directories; a development
 * proofing authority; the five services started over mTLS on loopback; the
 * first deployment's 81 apps seeded into the gateway.
 */
#ifndef VEIL_HARNESS_STACK_H
#define VEIL_HARNESS_STACK_H

#include "harness.h"

typedef struct h_stack {
    h_proc gateway, vault, consent, revocation, pseudonym;
    char *dir;                       /* scratch folder of this stack */
    char keys[5][1024];              /* key folders: gateway, vault, consent, revocation, pseudonym */
    char *db[4];                     /* gateway, vault, consent, revocation */
    unsigned char proofing_seed[32]; /* the development proofing authority's key */
    int health_port[5];              /* plaintext health ports (0: none), by H_* */
    char admin_addr[64];             /* the gateway's Admin listener (GATEWAY_ADMIN_ADDR) */
    int metrics_port[5];             /* VEIL_METRICS_ADDR ports (0: none), by H_* */
    const char *const *service_env;  /* h_stack_opts.service_env (must outlive the stack) */
    const char *const *gateway_env;  /* h_stack_opts.gateway_env (must outlive the stack) */
} h_stack;

enum { H_GATEWAY, H_VAULT, H_CONSENT, H_REVOCATION, H_PSEUDONYM };

/*
 * Starts everything; extra_env (NULL-terminated NAME=VALUE list) goes to the
 * gateway only.  Returns 0 or -1 (logs were printed).
 */
int h_stack_start(h_stack *s, const char *const *gateway_env);

/* What h_stack_start_opts may add to a plain stack. */
typedef struct h_stack_opts {
    const char *const *gateway_env; /* NAME=VALUE list for the gateway, NULL-terminated */
    const char *const *service_env; /* NAME=VALUE list for every service, NULL-terminated */
    int health_ports;               /* give every service a plaintext VEIL_HEALTH_ADDR */
    int metrics_ports;              /* give every service a VEIL_METRICS_ADDR (GET /metrics) */
} h_stack_opts;

/* As h_stack_start, with the options above (NULL: none). */
int h_stack_start_opts(h_stack *s, const h_stack_opts *opts);

/* Stops every process (SIGTERM) and checks each exited 0; returns the number that did not. */
int h_stack_stop(h_stack *s);

/* A suite's fixture: the plain stack, or the test fails (aborts) when it does not start. */
void h_stack_up(h_stack *s);
/* A suite's fixture: h_stack_stop, and the test fails unless every process exited 0. */
void h_stack_down(h_stack *s);

/* Runs `<binary> <args...>` with the service's database (and keys) in its environment. */
int h_stack_command(h_stack *s, int which, const char *args);

/*
 * (Re)starts one service of a running stack, e.g. after h_kill: on the port
 * it had before, so the other services find it again without a restart.
 */
int h_stack_restart(h_stack *s, int which);

/*
 * Sets the environment veilctl reads (VEILCTL_*), as `deploy/local/stack env`
 * does for a developer: this stack's gateway, the test CA and certificates,
 * the admin "ops", and the proofing authority's seed written to dir.
 */
void h_stack_veilctl_env(const h_stack *s, const char *dir);

/*
 * What tests/gateway/oidc_rp.py reads, for a stack whose gateway serves the
 * OpenID Connect door at issuer: h_stack_veilctl_env, the veilctl binary, the
 * issuer, dir as scratch and a free port for the relying party's callback.
 */
void h_stack_oidc_env(const h_stack *s, const char *dir, const char *issuer);
/* Runs one oidc_rp.py scenario (output to the test log); 0 when it passed, else the gateway's
 * log is dumped and -1 returned. */
int h_oidc_scenario(const h_stack *s, const char *name);

#endif
