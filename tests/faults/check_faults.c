/*
 * check_faults.c - faults injected into a running stack, and into a start.
 *
 * - kill -9 of each internal service (vault, pseudonym, consent, revocation)
 *   while logins run: the gateway answers UNAVAILABLE within the call's
 *   deadline - never DEADLINE_EXCEEDED, never INTERNAL, never a login served
 *   from a cache whose feed is gone - and recovers by itself once the
 *   service is back on its port;
 * - SIGTERM of the gateway with logins in flight (held up inside the vault,
 *   which is stopped with SIGSTOP for a moment, so they are really in
 *   flight): they complete OK, new calls are refused with UNAVAILABLE at
 *   once, and the gateway exits 0;
 * - a full disk and a read-only file system under VEIL_PORT_FILE, and a key
 *   file the service's user cannot read: each a clear refusal to start that
 *   names the file, and a non-zero exit (a key file open to others is
 *   check_pseudonym's test_refuses_to_start_without_keys).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "load.h"

#define KNOWN 4
/* From a killed service being back on its port to every login succeeding. */
#define RECOVERY_MS 5000

static h_stack S;
static vw_wallet *known[KNOWN];
static const char *const APP = "shop.jiale";
static const char *const ATTRS[] = {"province"}; /* in its scope: consent is asked too */

static void stack_up(void)
{
    /* room for logins held in flight by a stopped vault (test_gateway_sigterm_in_flight) */
    static const char *const env[] = {"VEIL_RPC_TIMEOUT_MS=15000", NULL};
    load_stack_up(&S, env, known, KNOWN, "440305199201", "林一");
}

static void stack_down(void)
{
    load_stack_down(&S, known, KNOWN);
}

static h_proc *proc_of(int which)
{
    h_proc *procs[] = {&S.gateway, &S.vault, &S.consent, &S.revocation, &S.pseudonym};
    return procs[which];
}

static void start_logins(load_thread *t, size_t n)
{
    memset(t, 0, n * sizeof *t);
    for (size_t i = 0; i < n; i++) {
        t[i].stack = &S;
        t[i].kind = LOAD_LOGIN;
        t[i].app = APP;
        t[i].attrs = ATTRS;
        t[i].n_attrs = 1;
        t[i].wallets = known;
        t[i].n_wallets = KNOWN;
        t[i].pause_ms = 5;
        ck_assert_int_eq(load_start(&t[i]), 0);
    }
}

/*
 * Stops and frees n load threads: before a failed check leaves the frame
 * that holds them (the suite runs without fork, so a failure longjmps out
 * while they would go on writing into it).
 */
static void stop_logins(load_thread *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        load_stop(&t[i]);
        load_free(&t[i]);
    }
}

/*
 * kill -9 of one internal service under load, then the service back on its
 * port: what the logins saw before, during and after.
 */
static void kill_and_return(int which)
{
    const char *name = proc_of(which)->name;
    load_thread t[2];
    start_logins(t, 2);
    /* the load is under way (on a busy machine the first logins take a while) */
    for (int i = 0; i < 2; i++) {
        if (load_wait_ok(&t[i], 2, 30000) != 0) {
            stop_logins(t, 2);
            ck_abort_msg("the logins did not get under way before %s was killed", name);
        }
    }
    int64_t killed = veil_now_ms();
    h_kill(proc_of(which));
    h_sleep_ms(2500);
    int64_t restart = veil_now_ms();
    if (h_stack_restart(&S, which) != 0) {
        stop_logins(t, 2);
        ck_abort_msg("%s did not come back on its port (see the harness's lines above)", name);
    }
    int64_t back = veil_now_ms();
    h_sleep_ms(RECOVERY_MS + 1000);
    for (int i = 0; i < 2; i++)
        load_stop(&t[i]);

    size_t before = 0, down = 0, down_failed = 0;
    int64_t slowest_failure = 0, first_ok_after = INT64_MAX;
    for (int i = 0; i < 2; i++) {
        before += load_count(&t[i], VEIL_OK, 0, killed);
        /* the gateway may take a moment to see a follower's feed break: a second */
        down += load_count(&t[i], -1, killed + 1000, restart);
        down_failed += load_count(&t[i], VEIL_ERR_UNAVAILABLE, killed + 1000, restart);
        for (size_t k = 0; k < t[i].n_ops; k++) {
            const load_op *op = &t[i].ops[k];
            if (op->err) {
                ck_assert_msg(op->err == VEIL_ERR_UNAVAILABLE,
                              "%s down: a login failed with %s (%s)", name, veil_err_name(op->err),
                              op->message);
                ck_assert_str_eq(op->message, "a veil service is unavailable, retry later");
                if (op->end_ms - op->start_ms > slowest_failure)
                    slowest_failure = op->end_ms - op->start_ms;
            } else if (op->start_ms >= back && op->start_ms < first_ok_after) {
                first_ok_after = op->start_ms;
            }
        }
        ck_assert_msg(load_count(&t[i], -1, back + RECOVERY_MS, INT64_MAX) ==
                          load_count(&t[i], VEIL_OK, back + RECOVERY_MS, INT64_MAX),
                      "%s back: logins still fail %d ms later", name, RECOVERY_MS);
    }
    fprintf(stderr,
            "faults: %s killed: %zu logins while down, all UNAVAILABLE, the slowest refusal in "
            "%lld ms; restarted in %lld ms; logins succeed again %lld ms after it serves\n",
            name, down, (long long)slowest_failure, (long long)(back - restart),
            (long long)(first_ok_after - back));
    ck_assert_msg(before > 0, "no login succeeded before %s was killed", name);
    ck_assert_msg(down > 0 && down_failed == down, "%s down: %zu of %zu logins did not fail", name,
                  down - down_failed, down);
    ck_assert_msg(slowest_failure < LOAD_TIMEOUT_MS, "%s down: a refusal took %lld ms", name,
                  (long long)slowest_failure);
    ck_assert_msg(first_ok_after != INT64_MAX, "%s back: no login succeeded", name);
    for (int i = 0; i < 2; i++)
        load_free(&t[i]);
}

START_TEST(test_kill_vault)
{
    kill_and_return(H_VAULT);
}
END_TEST

START_TEST(test_kill_pseudonym)
{
    kill_and_return(H_PSEUDONYM);
}
END_TEST

START_TEST(test_kill_consent)
{
    kill_and_return(H_CONSENT);
}
END_TEST

START_TEST(test_kill_revocation)
{
    kill_and_return(H_REVOCATION);
}
END_TEST

/* One BeginLogin on ch: its status and how long it took. */
static veil_err begin_login(veil_channel *ch, int64_t *took_ms, veil_status *st)
{
    Veil__Gateway__BeginLoginRequest req = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *resp = NULL;
    int64_t t0 = veil_now_ms();
    veil_err err = veil_channel_call(ch, "BeginLogin", &req.base, NULL, LOAD_TIMEOUT_MS, &resp, st);
    *took_ms = veil_now_ms() - t0;
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return err;
}

/* One CompleteLogin with a ticket made beforehand, on its own thread. */
struct in_flight {
    char *ticket;
    atomic_int sending; /* set just before the call goes out */
    veil_err err;
    char message[128];
    pthread_t thread;
};

static void *complete_in_flight(void *arg)
{
    struct in_flight *f = arg;
    char identity[96];
    snprintf(identity, sizeof identity, "app/%s", APP);
    veil_channel *ch = load_channel(&S, identity, &veil__gateway__login__descriptor);
    Veil__Gateway__CompleteLoginRequest req = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    Veil__Gateway__CompleteLoginResponse *resp = NULL;
    veil_status st;
    memset(&st, 0, sizeof st);
    req.ticket = f->ticket;
    atomic_store(&f->sending, 1);
    f->err = ch ? veil_channel_call(ch, "CompleteLogin", &req.base, NULL, LOAD_TIMEOUT_MS * 4,
                                    &resp, &st)
                : VEIL_ERR_INTERNAL;
    snprintf(f->message, sizeof f->message, "%.120s", st.message);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    veil_channel_free(ch);
    veil_client_thread_done();
    return NULL;
}

START_TEST(test_gateway_sigterm_in_flight)
{
    enum { IN_FLIGHT = 4 };
    char identity[96];
    snprintf(identity, sizeof identity, "app/%s", APP);
    veil_channel *old = load_channel(&S, identity, &veil__gateway__login__descriptor);
    ck_assert_ptr_nonnull(old);
    veil_status st;
    int64_t took;
    ck_assert_int_eq(begin_login(old, &took, &st), VEIL_OK); /* connected before the stop */

    /* Logins held inside the vault: in flight at the gateway when SIGTERM comes. */
    struct in_flight f[IN_FLIGHT];
    memset(f, 0, sizeof f);
    for (int i = 0; i < IN_FLIGHT; i++) {
        unsigned char ch[32];
        ck_assert_int_eq(e2e_challenge(&S, APP, ch), VEIL_OK);
        ck_assert_int_eq(vw_ticket(known[i], APP, ch, sizeof ch, veil_now_ms(), &f[i].ticket),
                         VEIL_OK);
    }
    ck_assert_int_eq(kill(S.vault.pid, SIGSTOP), 0);
    for (int i = 0; i < IN_FLIGHT; i++)
        ck_assert_int_eq(pthread_create(&f[i].thread, NULL, complete_in_flight, &f[i]), 0);
    for (int i = 0; i < IN_FLIGHT; i++)
        while (!atomic_load(&f[i].sending))
            h_sleep_ms(10);
    h_sleep_ms(500); /* the calls reach the gateway, which waits for the vault */
    h_proc gateway = S.gateway;
    int64_t term = veil_now_ms();
    ck_assert_int_eq(kill(gateway.pid, SIGTERM), 0);
    h_sleep_ms(200);

    /* New calls: refused at once, on the old connection and on a new one. */
    veil_err on_old = begin_login(old, &took, &st);
    ck_assert_msg(on_old == VEIL_ERR_UNAVAILABLE, "a new call on the old connection: %s (%s)",
                  veil_err_name(on_old), st.message);
    ck_assert_int_lt(took, 3000);
    veil_channel *fresh = load_channel(&S, identity, &veil__gateway__login__descriptor);
    veil_err on_new = begin_login(fresh, &took, &st);
    ck_assert_msg(on_new == VEIL_ERR_UNAVAILABLE, "a call on a new connection: %s (%s)",
                  veil_err_name(on_new), st.message);
    ck_assert_int_lt(took, 3000);
    veil_channel_free(fresh);

    /* The vault resumes; the logins in flight finish. */
    ck_assert_int_eq(kill(S.vault.pid, SIGCONT), 0);
    for (int i = 0; i < IN_FLIGHT; i++) {
        pthread_join(f[i].thread, NULL);
        ck_assert_msg(f[i].err == VEIL_OK, "a login in flight failed: %s (%s)",
                      veil_err_name(f[i].err), f[i].message);
        free(f[i].ticket);
    }
    int status = h_stop(&S.gateway);
    fprintf(stderr,
            "faults: gateway SIGTERM: %d logins in flight completed OK, new calls refused "
            "UNAVAILABLE, exit status %d, %lld ms from SIGTERM to exit\n",
            IN_FLIGHT, status, (long long)(veil_now_ms() - term));
    ck_assert_int_eq(status, 0);
    ck_assert(h_log_contains(&gateway, "\"msg\":\"drained\""));
    veil_channel_free(old);
    /* the stack goes on, for the fixture's tidy stop */
    ck_assert_int_eq(h_stack_restart(&S, H_GATEWAY), 0);
}
END_TEST

/* ---- refusals to start ---- */

/* A key directory for the pseudonym service, with pseudonym-1.key. */
static char *pseudonym_keys(void)
{
    char *dir = h_tempdir("faultkeys");
    h_keyfile(dir, "pseudonym", 1);
    return dir;
}

/*
 * Starts the pseudonym service with env; it must refuse: exit non-zero with
 * a log line holding `message`.
 */
static void refused(const char *identity, const char *const *env, const char *message)
{
    h_proc p;
    ck_assert_int_eq(h_spawn(&p, "pseudonym", identity, env), -1);
    ck_assert_msg(p.exit_status > 0, "exit status %d", p.exit_status);
    ck_assert_msg(h_log_contains(&p, message), "the log does not say: %s", message);
    ck_assert(h_log_contains(&p, "refusing to start"));
    fprintf(stderr, "faults: refused to start (exit %d): %s\n", p.exit_status, message);
}

/* Mounts a tmpfs of 16 KiB at a fresh directory (the suites run as root). */
static char *small_disk(const char *options)
{
    char *dir = h_tempdir("disk");
    char opts[128];
    snprintf(opts, sizeof opts, "size=16k,mode=0755%s", options);
    if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0)
        ck_abort_msg("cannot mount a tmpfs at %s: %s (tests/run runs as root)", dir,
                     strerror(errno));
    return dir;
}

/*
 * The pseudonym service with VEIL_PORT_FILE on a small tmpfs (mount options;
 * filled first if fill): it must refuse to start, saying why.
 */
static void port_file_refused(const char *options, int fill, const char *why)
{
    char *disk = small_disk(options), *keys = pseudonym_keys(), path[1200], env_keys[1200],
         env_port[1200], want[1300];
    if (fill) {
        snprintf(path, sizeof path, "%s/filler", disk);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        static char block[4096];
        while (fwrite(block, 1, sizeof block, f) == sizeof block && fflush(f) == 0)
            ;
        fclose(f);
    }
    snprintf(env_keys, sizeof env_keys, "VEIL_KEYS_DIR=%s", keys);
    snprintf(env_port, sizeof env_port, "VEIL_PORT_FILE=%s/port", disk);
    const char *env[] = {env_keys, env_port, NULL};
    snprintf(want, sizeof want, "cannot write VEIL_PORT_FILE %s/port: %s", disk, why);
    refused("svc/pseudonym", env, want);
    ck_assert_int_eq(umount(disk), 0);
    free(disk);
    free(keys);
}

START_TEST(test_full_disk_refuses_to_start)
{
    port_file_refused("", 1, "No space left on device");
}
END_TEST

START_TEST(test_read_only_disk_refuses_to_start)
{
    port_file_refused(",ro", 0, "Read-only file system");
}
END_TEST

/*
 * The key file belongs to root with mode 0400, as a Secret mounted without
 * the right fsGroup would; the service runs as nobody (tests/faults/as-nobody).
 */
START_TEST(test_unreadable_key_file_refuses_to_start)
{
    char *keys = pseudonym_keys(), key[1200], env_keys[1200], env_wrap[1200];
    snprintf(key, sizeof key, "%s/pseudonym-1.key", keys);
    ck_assert_int_eq(chmod(key, 0400), 0);
    ck_assert_int_eq(chown(keys, 65534, 65534), 0); /* the directory is nobody's */
    ck_assert_int_eq(chmod(keys, 0700), 0);
    snprintf(env_keys, sizeof env_keys, "VEIL_KEYS_DIR=%s", keys);
    snprintf(env_wrap, sizeof env_wrap, "VEIL_TEST_WRAPPER=%s/tests/faults/as-nobody",
             h_env("VEIL_SOURCE_DIR"));
    const char *env[] = {env_keys, env_wrap, NULL};
    char want[1300];
    snprintf(want, sizeof want, "key file %s: cannot be opened for reading", key);
    refused("plaintext", env, want);
    free(keys);
}
END_TEST

int main(void)
{
    const TTest *const running[] = {test_kill_vault,
                                    test_kill_pseudonym,
                                    test_kill_consent,
                                    test_kill_revocation,
                                    test_gateway_sigterm_in_flight,
                                    NULL};
    const TTest *const start[] = {test_full_disk_refuses_to_start,
                                  test_read_only_disk_refuses_to_start,
                                  test_unreadable_key_file_refuses_to_start, NULL};
    const h_case cases[] = {{"running", 300, stack_up, stack_down, NULL, NULL, running},
                            {"start", 60, NULL, NULL, NULL, NULL, start},
                            {NULL}};
    return h_run_suite(h_suite("faults", cases));
}
