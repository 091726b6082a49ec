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
} h_stack;

enum { H_GATEWAY, H_VAULT, H_CONSENT, H_REVOCATION, H_PSEUDONYM };

/*
 * Starts everything; extra_env (NULL-terminated NAME=VALUE list) goes to the
 * gateway only.  Returns 0 or -1 (logs were printed).
 */
int h_stack_start(h_stack *s, const char *const *gateway_env);

/* Stops every process (SIGTERM) and checks each exited 0; returns the number that did not. */
int h_stack_stop(h_stack *s);

/* Runs `<binary> <args...>` with the service's database (and keys) in its environment. */
int h_stack_command(h_stack *s, int which, const char *args);

/* (Re)starts one service of a running stack, e.g. after h_kill. */
int h_stack_restart(h_stack *s, int which);

#endif
