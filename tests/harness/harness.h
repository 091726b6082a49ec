/*
 * harness.h - what the Check suites share: real service processes on
 * loopback, certificates made by tests/run, fresh databases on its private
 * PostgreSQL.  Nothing here is a mock; it only starts and finds real things.
 *
 * tests/run exports VEIL_TEST_DIR (scratch), VEIL_TEST_PGHOST (socket dir),
 * VEIL_TEST_PGDIR (cluster dir), VEIL_TEST_CERTS, VEIL_TEST_BIN (build dir)
 * and VEIL_SOURCE_DIR.
 */
#ifndef VEIL_HARNESS_H
#define VEIL_HARNESS_H

#include <check.h>
#include <sys/types.h>
#include "veil/client.h"
#include "veil/tls.h"

/* A required environment variable (the suite aborts when it is missing). */
const char *h_env(const char *name);

/*
 * How many times longer than usual to wait for processes to start and stop
 * (VEIL_TEST_TIMEOUT_SCALE, default 1): services under valgrind are slow.
 * h_spawn runs a service through VEIL_TEST_WRAPPER (a program taking the
 * binary and its arguments) when that is set.
 */
int h_timeout_scale(void);

/* TLS material for an identity: "svc/gateway", "app/<id>", "admin/ops",
 * "foreign" (a gateway certificate from an unrelated CA), "none" (CA only,
 * no client certificate) or "plaintext". */
typedef struct h_tls {
    char ca[512], cert[512], key[512];
    veil_tls_config cfg;
} h_tls;
void h_tls_for(h_tls *t, const char *identity);

/* A service process started by the harness. */
typedef struct h_proc {
    pid_t pid;
    int port;
    char addr[64];
    char log[512];
    char name[64];
    int exit_status; /* when h_spawn saw it exit during start-up: its status (-1: a signal) */
} h_proc;

/*
 * Starts build/<binary> as identity with the given extra NAME=VALUE
 * environment (NULL-terminated), on 127.0.0.1 and a free port, and waits
 * until its health check says SERVING.  Returns 0, or -1 after printing the
 * process's log.
 */
int h_spawn(h_proc *p, const char *binary, const char *identity, const char *const *env);

/* SIGTERM, then waits; returns the exit status, or -1 if it died by a signal. */
int h_stop(h_proc *p);
/* SIGKILL, then waits. */
void h_kill(h_proc *p);
/* Prints the last lines of the process's log to stderr. */
void h_dump_log(const h_proc *p);
/* Whether the log contains the text (for "was it logged" and "never logged" checks). */
int h_log_contains(const h_proc *p, const char *text);

/* Sleeps ms milliseconds (polling loops in tests; never a timing limit). */
void h_sleep_ms(long ms);

/* grpc.health.v1 Check over TLS as `identity`: 1 SERVING, 0 NOT_SERVING, -1 error. */
int h_health(const char *addr, const char *identity);

/* A channel to addr for svc's methods, as identity; aborts the test on failure. */
veil_channel *h_channel(const char *addr, const char *identity,
                        const ProtobufCServiceDescriptor *svc);

/* Creates a fresh database; returns a malloc'd libpq connection string. */
char *h_db_create(const char *prefix);
/* Runs one SQL statement (no parameters) as the cluster superuser; 0 on success. */
int h_db_exec(const char *conninfo, const char *sql);
/* Restarts the PostgreSQL cluster (fast mode) and waits until it is back. */
void h_pg_restart(void);
/* Stops the cluster in immediate mode (crash semantics: recovery replays the WAL at start). */
void h_pg_crash(void);
/* Starts the cluster after h_pg_crash and waits until it accepts connections. */
void h_pg_start(void);
/*
 * A teardown fixture: whatever a test did to the cluster, the next one finds
 * it running (a failure to start it is printed, not fatal).
 */
void h_pg_running(void);

/* A fresh directory under VEIL_TEST_DIR (malloc'd path). */
char *h_tempdir(const char *prefix);
/* Writes a fresh random key file DIR/<purpose>-<version>.key. */
void h_keyfile(const char *dir, const char *purpose, unsigned version);

/*
 * Sends raw bytes as the request of method path (e.g. "/veil.testing.Echo/Echo")
 * and returns the status code; message (if not NULL) receives the details.
 * For malformed, truncated and oversize inputs the typed client cannot send.
 */
int h_raw_call(const char *addr, const char *identity, const char *path, const void *bytes,
               size_t len, int timeout_ms, char *message, size_t msglen);

/*
 * Runs a suite in this process (grpc core must not be used across fork())
 * and returns the exit status for main: EXIT_SUCCESS when every test passed.
 */
int h_run_suite(Suite *s);

/*
 * The same with each test in a child process of its own (Check's default):
 * for suites whose main process never uses grpc core.
 */
int h_run_suite_forked(Suite *s);

/*
 * One test case of a suite, as a table row for h_suite: its name, timeout in
 * seconds (0: Check's default), a fixture run once around the case (up/down,
 * in this process: e.g. a stack of services), one run around every test
 * (setup/teardown) - any of them NULL for none - and its tests in order,
 * ending with NULL.
 */
typedef struct h_case {
    const char *name;
    int timeout;
    SFun up, down;
    SFun setup, teardown;
    const TTest *const *tests;
} h_case;

/* A suite named name of the cases, in order; the last case's name is NULL. */
Suite *h_suite(const char *name, const h_case *cases);

/*
 * The protected header of a compact JWS, decoded as text (a static buffer
 * the next call overwrites); the test fails unless it is base64url before
 * the first '.', under 1 KiB.
 */
const char *h_jws_header(const char *jws);

/*
 * The caller policy of method path at addr as identity, checked with an
 * empty request: H_ALLOWED - anything but PERMISSION_DENIED; H_REFUSED -
 * PERMISSION_DENIED; H_NO_HANDSHAKE - UNAVAILABLE (no or a foreign
 * certificate: TLS itself fails).
 */
enum h_policy { H_ALLOWED, H_REFUSED, H_NO_HANDSHAKE };
void h_expect_policy(const char *addr, const char *identity, const char *path, enum h_policy want);

/* A TCP port that was free a moment ago on 127.0.0.1. */
int h_free_port(void);

#endif
