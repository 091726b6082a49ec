/*
 * load.h - background load on a running stack for the fault-injection
 * suites: threads that keep enrolling new citizens or logging existing ones
 * in through the gateway, each on its own channels, recording every
 * operation's outcome and timing for the suite to judge once they stop.
 * Nothing here asserts (Check's asserts belong to the test's own thread).
 */
#ifndef VEIL_TEST_LOAD_H
#define VEIL_TEST_LOAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "stack.h"
#include "wallet.h"

#define LOAD_TIMEOUT_MS 5000 /* each call's deadline */

/* One operation (an enrolment, or BeginLogin + CompleteLogin). */
typedef struct load_op {
    int64_t start_ms, end_ms;
    veil_err err;     /* VEIL_OK or the first failing call's status */
    char message[96]; /* its message */
} load_op;

typedef enum load_kind { LOAD_ENROL, LOAD_LOGIN } load_kind;

typedef struct load_thread {
    /* set by the caller */
    h_stack *stack;
    load_kind kind;
    int id;          /* distinguishes the ID numbers enrolment threads make */
    const char *app; /* logins: the app, and the attributes it asks for */
    const char *const *attrs;
    size_t n_attrs;
    vw_wallet *const *wallets; /* logins: citizens to log in, round robin */
    size_t n_wallets;
    int pause_ms; /* between operations */
    /* results, read after load_stop */
    load_op *ops;
    size_t n_ops, cap_ops;
    vw_wallet **enrolled; /* enrolments acknowledged with OK (owned) */
    size_t n_enrolled, cap_enrolled;
    atomic_size_t n_ok; /* operations that succeeded so far (readable any time) */
    /* private */
    atomic_int stop;
    pthread_t thread;
} load_thread;

/* Starts the thread; 0 or -1. */
int load_start(load_thread *t);

/* Waits until t has had n successful operations; 0, or -1 after timeout_ms. */
int load_wait_ok(load_thread *t, size_t n, int timeout_ms);

/* Asks the thread to stop after its current operation and joins it. */
void load_stop(load_thread *t);

/* Frees the results (and the enrolled wallets). */
void load_free(load_thread *t);

/*
 * One enrolment through the gateway on channel ch (Wallet): a valid ID number
 * from (series, n), attested by the stack's proofing authority.  On VEIL_OK
 * the wallet is recorded as enrolled.  Thread-safe, asserts nothing.
 */
veil_err load_enrol(h_stack *s, veil_channel *ch, vw_wallet *w, int series, int n, veil_status *st);

/* One login of w at app through the Login channel ch (as app/<app>); asserts nothing. */
veil_err load_login(veil_channel *ch, const char *app, const vw_wallet *w, const char *const *attrs,
                    size_t n, veil_status *st);

/* A fresh channel to the stack's gateway for svc as identity, or NULL. */
veil_channel *load_channel(h_stack *s, const char *identity, const ProtobufCServiceDescriptor *svc);

/*
 * Starts a stack (gateway_env as for h_stack_start) and enrols n citizens into out (born on
 * days 1..n of the month that first12, the first twelve digits of their ID numbers, names); aborts
 * the test case when that fails.  load_stack_down frees and stops.
 */
void load_stack_up(h_stack *s, const char *const *gateway_env, vw_wallet **out, size_t n,
                   const char *first12, const char *name);
void load_stack_down(h_stack *s, vw_wallet **known, size_t n);

/* Counts ops in [from_ms, to_ms) (by start time) with err (or, with err < 0, all). */
size_t load_count(const load_thread *t, int err, int64_t from_ms, int64_t to_ms);

#endif
