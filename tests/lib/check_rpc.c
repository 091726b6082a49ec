/*
 * check_rpc.c - the RPC layer over real loopback gRPC: a veil-echo process
 * (tests/lib/echo_server.c) called through libveil's client with
 * certificates made by tests/run.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "veil/client.h"
#include "veil/codec.h"
#include "grpc/health/v1/health.pb-c.h"
#include "veil/testing.pb-c.h"
#include "veil/vault.pb-c.h"

static h_proc echo;

static void start_echo(const char *identity, const char *const *env)
{
    ck_assert_int_eq(h_spawn(&echo, "veil-echo", identity, env), 0);
}

static void stop_echo(void)
{
    ck_assert_int_eq(h_stop(&echo), 0);
}

static veil_err call_echo(const char *identity, const char *method,
                          const Veil__Testing__EchoRequest *req, int64_t timeout_ms,
                          Veil__Testing__EchoReply **resp, veil_status *st)
{
    veil_channel *ch = h_channel(echo.addr, identity, &veil__testing__echo__descriptor);
    veil_err err = veil_channel_call(ch, method, &req->base, NULL, timeout_ms, resp, st);
    veil_channel_free(ch);
    if (err == VEIL_ERR_UNAVAILABLE)
        fprintf(stderr, "call_echo %s as %s: UNAVAILABLE: %s\n", method, identity, st->message);
    return err;
}

static void free_reply(Veil__Testing__EchoReply *r)
{
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

START_TEST(test_success)
{
    start_echo("svc/vault", NULL);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.text = "hello veil";
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(call_echo("svc/gateway", "Echo", &req, 2000, &resp, &st), VEIL_OK);
    ck_assert_str_eq(resp->text, "hello veil");
    ck_assert(resp->remaining_ms > 0 && resp->remaining_ms <= 2000);
    free_reply(resp);
    stop_echo();
}
END_TEST

START_TEST(test_error_status_and_message)
{
    start_echo("svc/vault", NULL);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.fail_code = VEIL_ERR_NOT_FOUND;
    req.fail_message = "device not found";
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(call_echo("svc/gateway", "Fail", &req, 2000, &resp, &st), VEIL_ERR_NOT_FOUND);
    ck_assert_ptr_null(resp);
    ck_assert_int_eq(st.code, GRPC_STATUS_NOT_FOUND);
    ck_assert_str_eq(st.message, "device not found");

    /* Without a message the enum's default is sent. */
    req.fail_code = VEIL_ERR_PRECONDITION;
    req.fail_message = "";
    ck_assert_int_eq(call_echo("svc/gateway", "Fail", &req, 2000, &resp, &st),
                     VEIL_ERR_PRECONDITION);
    ck_assert_int_eq(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    ck_assert_str_eq(st.message, "failed precondition");
    stop_echo();
}
END_TEST

START_TEST(test_error_map_is_complete)
{
    /* Every error has a name, a message and a status, and maps back. */
    for (int e = 0; e < VEIL_ERR__COUNT; e++) {
        ck_assert_ptr_nonnull(veil_err_name(e));
        ck_assert_ptr_nonnull(veil_err_message(e));
        grpc_status_code s = veil_err_status(e);
        ck_assert_int_eq(veil_err_status(veil_err_from_status(s)), s);
    }
    ck_assert_int_eq(veil_err_status(VEIL_ERR_UNAVAILABLE), GRPC_STATUS_UNAVAILABLE);
    ck_assert_int_eq(veil_err_status(VEIL_ERR_EXISTS), GRPC_STATUS_ALREADY_EXISTS);
    ck_assert_str_eq(veil_status_name(GRPC_STATUS_PERMISSION_DENIED), "PERMISSION_DENIED");
}
END_TEST

START_TEST(test_deadline_exceeded)
{
    start_echo("svc/vault", NULL);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.sleep_ms = 1500;
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(call_echo("svc/gateway", "Sleep", &req, 200, &resp, &st), VEIL_ERR_DEADLINE);
    ck_assert_int_eq(st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    stop_echo();
}
END_TEST

START_TEST(test_unknown_method)
{
    start_echo("svc/vault", NULL);
    /* A vault method path sent to the echo server. */
    veil_channel *ch = h_channel(echo.addr, "svc/gateway", &veil__vault__vault__descriptor);
    Veil__Vault__LookupWebNumberRequest req = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
    Veil__Vault__LookupWebNumberResponse *resp;
    veil_status st;
    veil_err err = veil_channel_call(ch, "LookupWebNumber", &req.base, NULL, 2000, &resp, &st);
    ck_assert_msg(err == VEIL_ERR_UNIMPLEMENTED, "got %s: %s", veil_err_name(err), st.message);
    ck_assert_int_eq(st.code, GRPC_STATUS_UNIMPLEMENTED);
    veil_channel_free(ch);
    /* Health/Watch is streaming and deliberately not served. */
    char msg[256];
    ck_assert_int_eq(h_raw_call(echo.addr, "svc/gateway", "/grpc.health.v1.Health/Watch", "", 0,
                                2000, msg, sizeof msg),
                     GRPC_STATUS_UNIMPLEMENTED);
    stop_echo();
}
END_TEST

START_TEST(test_oversize_message)
{
    const char *env[] = {"VEIL_MAX_MESSAGE_BYTES=4096", NULL};
    start_echo("svc/vault", env);
    char *big = malloc(8192 + 1);
    memset(big, 'a', 8192);
    big[8192] = '\0';
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.text = big;
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(call_echo("svc/gateway", "Echo", &req, 2000, &resp, &st), VEIL_ERR_EXHAUSTED);
    ck_assert_int_eq(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    /* An oversize reply is refused by the server, not sent. */
    req.text = "";
    req.reply_bytes = 10000;
    ck_assert_int_eq(call_echo("svc/gateway", "Big", &req, 2000, &resp, &st), VEIL_ERR_EXHAUSTED);
    /* And the server still works. */
    req.reply_bytes = 1000;
    ck_assert_int_eq(call_echo("svc/gateway", "Big", &req, 2000, &resp, &st), VEIL_OK);
    ck_assert_uint_eq(resp->payload.len, 1000);
    free_reply(resp);
    free(big);
    stop_echo();
}
END_TEST

START_TEST(test_malformed_protobuf)
{
    start_echo("svc/vault", NULL);
    char msg[256];
    /* field 1 (string) with a length running past the end */
    const unsigned char truncated[] = {0x0a, 0x7f, 'a', 'b'};
    ck_assert_int_eq(h_raw_call(echo.addr, "svc/gateway", "/veil.testing.Echo/Echo", truncated,
                                sizeof truncated, 2000, msg, sizeof msg),
                     GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(msg, "malformed request message");
    /* field 1 sent as a varint: wrong wire type */
    const unsigned char wiretype[] = {0x08, 0x01};
    ck_assert_int_eq(h_raw_call(echo.addr, "svc/gateway", "/veil.testing.Echo/Echo", wiretype,
                                sizeof wiretype, 2000, msg, sizeof msg),
                     GRPC_STATUS_INVALID_ARGUMENT);
    /* An empty message is a valid (all-default) request. */
    ck_assert_int_eq(h_raw_call(echo.addr, "svc/gateway", "/veil.testing.Echo/Empty", "", 0, 2000,
                                msg, sizeof msg),
                     GRPC_STATUS_OK);
    stop_echo();
}
END_TEST

START_TEST(test_mtls_identity)
{
    start_echo("svc/vault", NULL);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(call_echo("svc/gateway", "Whoami", &req, 2000, &resp, &st), VEIL_OK);
    ck_assert_str_eq(resp->peer, "role=1 name=gateway uri=spiffe://veil/svc/gateway");
    free_reply(resp);
    ck_assert_int_eq(call_echo("app/chat.wechat", "Whoami", &req, 2000, &resp, &st), VEIL_OK);
    ck_assert_str_eq(resp->peer, "role=64 name=chat.wechat uri=spiffe://veil/app/chat.wechat");
    free_reply(resp);
    /* TLS without a client certificate (allowed by this server): a citizen. */
    ck_assert_int_eq(call_echo("none", "Whoami", &req, 2000, &resp, &st), VEIL_OK);
    ck_assert_str_eq(resp->peer, "role=128 name= uri=");
    free_reply(resp);
    stop_echo();
}
END_TEST

START_TEST(test_mtls_rejections)
{
    const char *env[] = {"ECHO_REQUIRE_CLIENT_CERT=1", NULL};
    start_echo("svc/vault", env);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(call_echo("svc/gateway", "Echo", &req, 2000, &resp, &st), VEIL_OK);
    free_reply(resp);
    /* a certificate from another CA */
    ck_assert_int_eq(call_echo("foreign", "Echo", &req, 2000, &resp, &st), VEIL_ERR_UNAVAILABLE);
    /* no client certificate at all */
    ck_assert_int_eq(call_echo("none", "Echo", &req, 2000, &resp, &st), VEIL_ERR_UNAVAILABLE);
    /* plaintext against a TLS port */
    ck_assert_int_eq(call_echo("plaintext", "Echo", &req, 2000, &resp, &st), VEIL_ERR_UNAVAILABLE);
    stop_echo();
}
END_TEST

/* Calls Echo as svc/gateway, requiring the server to be `expect` (a URI; NULL: any). */
static veil_err call_expecting(const char *expect, veil_status *st)
{
    h_tls t;
    h_tls_for(&t, "svc/gateway");
    t.cfg.server_name = "localhost";
    t.cfg.peer_identity = expect;
    char err[512];
    veil_channel *ch = NULL;
    ck_assert_int_eq(veil_channel_new(echo.addr, &t.cfg, &veil__testing__echo__descriptor, NULL,
                                      &ch, err, sizeof err),
                     VEIL_OK);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    Veil__Testing__EchoReply *resp = NULL;
    veil_err e = veil_channel_call(ch, "Echo", &req.base, NULL, 5000, &resp, st);
    free_reply(resp);
    veil_channel_free(ch);
    return e;
}

/*
 * issue 18 item 5: a client checks the server's SPIFFE identity, not only its
 * name: a certificate of the same CA for another service (here the consent
 * service answering where the vault was meant) is refused before any request.
 */
START_TEST(test_client_checks_server_identity)
{
    start_echo("svc/consent", NULL);
    veil_status st;
    ck_assert_int_eq(call_expecting("spiffe://veil/svc/consent", &st), VEIL_OK);
    ck_assert_int_eq(call_expecting("spiffe://veil/svc/vault", &st), VEIL_ERR_UNAVAILABLE);
    ck_assert_int_eq(call_expecting("spiffe://veil/svc/consen", &st), VEIL_ERR_UNAVAILABLE);
    ck_assert_int_eq(call_expecting(NULL, &st), VEIL_OK); /* chain and name only, as before */
    stop_echo();
    /* the certificate parser itself: exactly one URI SAN, equal to the one expected */
    char path[1100], *pem = NULL, err[256];
    snprintf(path, sizeof path, "%s/svc-vault.crt", h_env("VEIL_TEST_CERTS"));
    ck_assert_int_eq(veil_pem_read(path, &pem, err, sizeof err), VEIL_OK);
    ck_assert(veil_cert_has_only_uri(pem, "spiffe://veil/svc/vault"));
    ck_assert(!veil_cert_has_only_uri(pem, "spiffe://veil/svc/gateway"));
    ck_assert(!veil_cert_has_only_uri(pem, "spiffe://veil/svc/vaul"));
    ck_assert(!veil_cert_has_only_uri("not a certificate", "spiffe://veil/svc/vault"));
    veil_pem_free(pem);
}
END_TEST

START_TEST(test_policy_enforced)
{
    start_echo("svc/vault", NULL);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(call_echo("svc/gateway", "AdminOnly", &req, 2000, &resp, &st),
                     VEIL_ERR_DENIED);
    ck_assert_int_eq(st.code, GRPC_STATUS_PERMISSION_DENIED);
    ck_assert_int_eq(call_echo("app/chat.wechat", "AdminOnly", &req, 2000, &resp, &st),
                     VEIL_ERR_DENIED);
    ck_assert_int_eq(call_echo("none", "AdminOnly", &req, 2000, &resp, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    ck_assert_int_eq(call_echo("admin/ops", "AdminOnly", &req, 2000, &resp, &st), VEIL_OK);
    ck_assert_str_eq(resp->text, "admin ok");
    free_reply(resp);
    stop_echo();
}
END_TEST

START_TEST(test_health)
{
    int hp = h_free_port();
    char env_health[64], addr[64];
    snprintf(env_health, sizeof env_health, "VEIL_HEALTH_ADDR=127.0.0.1:%d", hp);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", hp);
    const char *env[] = {env_health, NULL};
    start_echo("svc/vault", env);
    ck_assert_int_eq(h_health(echo.addr, "svc/gateway"), 1);
    ck_assert_int_eq(h_health(echo.addr, "none"), 1);
    /* The plaintext health port answers health and nothing else. */
    ck_assert_int_eq(h_health(addr, "plaintext"), 1);
    char msg[256];
    ck_assert_int_eq(
        h_raw_call(addr, "plaintext", "/veil.testing.Echo/Empty", "", 0, 2000, msg, sizeof msg),
        GRPC_STATUS_UNAUTHENTICATED);
    /* A named service: known -> SERVING, unknown -> NOT_FOUND. */
    veil_channel *ch = h_channel(echo.addr, "svc/gateway", &grpc__health__v1__health__descriptor);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp;
    veil_status st;
    req.service = "veil.testing.Echo";
    ck_assert_int_eq(veil_channel_call(ch, "Check", &req.base, NULL, 2000, &resp, &st), VEIL_OK);
    ck_assert_int_eq(resp->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    req.service = "veil.nothing.Here";
    ck_assert_int_eq(veil_channel_call(ch, "Check", &req.base, NULL, 2000, &resp, &st),
                     VEIL_ERR_NOT_FOUND);
    veil_channel_free(ch);
    stop_echo();
}
END_TEST

struct slow_call {
    const char *addr;
    unsigned sleep_ms;
    veil_err err;
    int done;
};

static void *slow_call_main(void *arg)
{
    struct slow_call *sc = arg;
    veil_channel *ch = h_channel(sc->addr, "svc/gateway", &veil__testing__echo__descriptor);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.sleep_ms = sc->sleep_ms;
    req.text = "finished";
    Veil__Testing__EchoReply *resp;
    veil_status st;
    sc->err = veil_channel_call(ch, "Sleep", &req.base, NULL, 10000, &resp, &st);
    if (sc->err == VEIL_OK) {
        ck_assert_str_eq(resp->text, "finished");
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    __atomic_store_n(&sc->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

START_TEST(test_worker_does_not_block_cq)
{
    start_echo("svc/vault", NULL);
    struct slow_call sc = {echo.addr, 3000, VEIL_ERR_INTERNAL, 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_call_main, &sc);
    h_sleep_ms(300);
    /* While a worker sleeps inside a handler, inline calls are still answered. */
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.text = "not blocked";
    Veil__Testing__EchoReply *resp;
    veil_status st;
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(call_echo("svc/gateway", "Echo", &req, 2000, &resp, &st), VEIL_OK);
        free_reply(resp);
    }
    ck_assert_int_eq(__atomic_load_n(&sc.done, __ATOMIC_SEQ_CST), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(sc.err, VEIL_OK);
    stop_echo();
}
END_TEST

START_TEST(test_sigterm_drains_in_flight_call)
{
    const char *env[] = {"VEIL_DRAIN_DELAY_MS=600", NULL};
    start_echo("svc/vault", env);
    struct slow_call sc = {echo.addr, 1500, VEIL_ERR_INTERNAL, 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_call_main, &sc);
    h_sleep_ms(200);
    kill(echo.pid, SIGTERM);
    h_sleep_ms(150);
    /* During the drain delay the server says NOT_SERVING but still answers. */
    ck_assert_int_eq(h_health(echo.addr, "svc/gateway"), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(sc.err, VEIL_OK);  /* the in-flight call completed */
    ck_assert_int_eq(h_stop(&echo), 0); /* and the process exited 0 */
    ck_assert(h_log_contains(&echo, "\"msg\":\"drained\""));
}
END_TEST

/* n Later calls at once on one queue (every `resume_every`-th answered by a worker). */
struct later_call {
    veil_err err;
    veil_status st;
    char text[64];
};

static void later_calls(struct later_call *out, int n, unsigned sleep_ms, int resume_every)
{
    veil_channel *ch = h_channel(echo.addr, "svc/gateway", &veil__testing__echo__descriptor);
    veil_cq *cq;
    ck_assert_int_eq(veil_cq_new(&cq), VEIL_OK);
    Veil__Testing__EchoRequest req[n];
    for (int i = 0; i < n; i++) {
        veil__testing__echo_request__init(&req[i]);
        req[i].sleep_ms = sleep_ms;
        req[i].text = resume_every && i % resume_every == 0 ? "resume" : "";
        veil_pending *p;
        ck_assert_int_eq(
            veil_channel_start(ch, "Later", &req[i].base, 30000, cq, &out[i], &p), VEIL_OK);
    }
    for (int done = 0; done < n; done++) {
        veil_pending *p = veil_cq_next(cq, 60000);
        ck_assert_msg(p != NULL, "a deferred call was never answered");
        void *user;
        Veil__Testing__EchoReply *resp;
        veil_status st;
        veil_err err = veil_pending_finish(p, NULL, &resp, &st, &user);
        struct later_call *l = user;
        l->err = err;
        l->st = st;
        snprintf(l->text, sizeof l->text, "%s", resp ? resp->text : "");
        free_reply(resp);
    }
    veil_cq_free(cq);
    veil_channel_free(ch);
}

/* How many "call finished" lines the server logged for method. */
static int finished_lines(const char *method)
{
    FILE *f = fopen(echo.log, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096], want[128];
    snprintf(want, sizeof want, "\"method\":\"%s\"", method);
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "\"msg\":\"call finished\"") && strstr(line, want))
            n++;
    fclose(f);
    return n;
}

/*
 * Deferred replies: 16 calls whose handler defers and returns, answered
 * 1.5 s later by one finisher thread (every fourth handed to a worker with
 * veil_call_resume), with a single worker: all 16 are in flight at once -
 * no thread waits for any of them - and each gets its own reply.
 */
START_TEST(test_deferred_calls)
{
    const char *env[] = {"VEIL_WORKERS=1", "VEIL_LOG_LEVEL=debug", NULL};
    start_echo("svc/vault", env);
    struct later_call l[16];
    int64_t t0 = veil_mono_ns();
    later_calls(l, 16, 1500, 4);
    double s = (double)(veil_mono_ns() - t0) / 1e9;
    for (int i = 0; i < 16; i++) {
        ck_assert_msg(l[i].err == VEIL_OK, "deferred call %d: %s", i, l[i].st.message);
        ck_assert_str_eq(l[i].text, i % 4 == 0 ? "answered by a worker" : "answered later");
    }
    /* one after another they would take 24 s; at once, 1.5 s and the machine's delays */
    ck_assert_msg(s < 12.0, "16 deferred calls of 1.5 s took %.1f s: they did not overlap", s);
    stop_echo();
    ck_assert_int_eq(finished_lines("/veil.testing.Echo/Later"), 16);
}
END_TEST

/*
 * SIGTERM with deferred calls in flight.  Within the grace period they are
 * answered (those resumed on a worker too); when the grace period ends
 * first, grpc cancels them and their clients read UNAVAILABLE or CANCELLED,
 * but the server still waits for every deferred reply before it goes (it
 * logs the wait), and every call finishes: never a hang, never a lost call
 * (a call never freed would also fail the leak check at exit).
 */
struct later_kill {
    pid_t pid;
    unsigned after_ms;
};

static void *kill_later(void *arg)
{
    struct later_kill *k = arg;
    h_sleep_ms(k->after_ms);
    kill(k->pid, SIGTERM);
    return NULL;
}

START_TEST(test_sigterm_drains_deferred_calls)
{
    for (int cancelled = 0; cancelled < 2; cancelled++) {
        const char *env[] = {"VEIL_DRAIN_DELAY_MS=300", "VEIL_LOG_LEVEL=debug",
                             cancelled ? "VEIL_DRAIN_GRACE_MS=300" : NULL, NULL};
        start_echo("svc/vault", env);
        /* SIGTERM while the 8 calls wait: answered at 1.5 s, or at 3 s after a 0.6 s drain */
        struct later_kill k = {echo.pid, 400};
        pthread_t t;
        pthread_create(&t, NULL, kill_later, &k);
        struct later_call l[8];
        later_calls(l, 8, cancelled ? 3000 : 1500, 2);
        pthread_join(t, NULL);
        for (int i = 0; i < 8; i++) {
            if (!cancelled) {
                ck_assert_msg(l[i].err == VEIL_OK, "deferred call %d: %s", i, l[i].st.message);
                ck_assert_str_eq(l[i].text, i % 2 ? "answered later" : "answered by a worker");
            } else {
                ck_assert_msg(l[i].err == VEIL_ERR_UNAVAILABLE || l[i].err == VEIL_ERR_CANCELLED,
                              "deferred call %d after the grace period: %s %s", i,
                              veil_err_name(l[i].err), l[i].st.message);
            }
        }
        ck_assert_int_eq(h_stop(&echo), 0); /* exited 0, no leak */
        ck_assert(h_log_contains(&echo, "\"msg\":\"drained\""));
        if (cancelled)
            ck_assert(h_log_contains(&echo, "\"msg\":\"waiting for deferred calls\""));
        ck_assert_int_eq(finished_lines("/veil.testing.Echo/Later"), 8);
    }
}
END_TEST

START_TEST(test_new_calls_refused_after_stop)
{
    start_echo("svc/vault", NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "%s", echo.addr);
    ck_assert_int_eq(h_stop(&echo), 0);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    veil_channel *ch = h_channel(addr, "svc/gateway", &veil__testing__echo__descriptor);
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(veil_channel_call(ch, "Echo", &req.base, NULL, 1000, &resp, &st),
                     VEIL_ERR_UNAVAILABLE);
    veil_channel_free(ch);
}
END_TEST

START_TEST(test_plaintext_dev_mode)
{
    start_echo("plaintext", NULL);
    ck_assert(h_log_contains(&echo, "DEVELOPMENT MODE: PLAINTEXT TRANSPORT"));
    /* the mangled name of absl::SetMutexDeadlockDetectionMode was found and called */
    ck_assert(h_log_contains(&echo, "abseil's mutex deadlock detection off"));
    h_tls t;
    h_tls_for(&t, "plaintext");
    t.cfg.dev_identity = "spiffe://veil/admin/ops";
    veil_channel *ch;
    char err[256];
    ck_assert_int_eq(veil_channel_new(echo.addr, &t.cfg, &veil__testing__echo__descriptor, NULL,
                                      &ch, err, sizeof err),
                     VEIL_OK);
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.metadata_key = VEIL_DEV_PEER_HEADER;
    Veil__Testing__EchoReply *resp;
    veil_status st;
    ck_assert_int_eq(veil_channel_call(ch, "AdminOnly", &req.base, NULL, 2000, &resp, &st),
                     VEIL_OK);
    free_reply(resp);
    /* metadata is readable by handlers */
    ck_assert_int_eq(veil_channel_call(ch, "Echo", &req.base, NULL, 2000, &resp, &st), VEIL_OK);
    ck_assert_str_eq(resp->metadata_value, "spiffe://veil/admin/ops");
    free_reply(resp);
    veil_channel_free(ch);
    stop_echo();
}
END_TEST

struct hammer {
    const char *addr;
    veil_channel *ch;
    int ok;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    req.text = "x";
    for (int i = 0; i < 200; i++) {
        Veil__Testing__EchoReply *resp;
        veil_status st;
        if (veil_channel_call(h->ch, i % 2 ? "Echo" : "Sleep", &req.base, NULL, 5000, &resp, &st) ==
            VEIL_OK) {
            __atomic_add_fetch(&h->ok, 1, __ATOMIC_SEQ_CST);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
    }
    veil_client_thread_done();
    return NULL;
}

START_TEST(test_one_channel_many_threads)
{
    start_echo("svc/vault", NULL);
    struct hammer h = {echo.addr,
                       h_channel(echo.addr, "svc/gateway", &veil__testing__echo__descriptor), 0};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer_main, &h);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(h.ok, 800);
    veil_channel_free(h.ch);
    stop_echo();
}
END_TEST

START_TEST(test_bad_configuration_refused)
{
    /* A bad variable: exit status 2 and a message naming it. */
    const char *env[] = {"VEIL_WORKERS=lots", NULL};
    h_proc p;
    ck_assert_int_eq(h_spawn(&p, "veil-echo", "svc/vault", env), -1);
    ck_assert(h_log_contains(&p, "VEIL_WORKERS: must be an integer from 1 to 256"));
    const char *env2[] = {"VEIL_TLS_CA=/nonexistent/ca.crt", NULL};
    ck_assert_int_eq(h_spawn(&p, "veil-echo", "svc/vault", env2), -1);
    ck_assert(h_log_contains(&p, "VEIL_TLS_CA: must name an existing file"));
}
END_TEST

START_TEST(test_port_in_use_refused)
{
    start_echo("svc/vault", NULL);
    char env_addr[96];
    snprintf(env_addr, sizeof env_addr, "VEIL_LISTEN_ADDR=%s", echo.addr);
    /* SO_REUSEPORT is off, so a second server on the same port must fail to start. */
    const char *env[] = {env_addr, NULL};
    h_proc second;
    /* h_spawn sets VEIL_LISTEN_ADDR first; our env entry overrides it. */
    ck_assert_int_eq(h_spawn(&second, "veil-echo", "svc/vault", env), -1);
    ck_assert(h_log_contains(&second, "cannot listen on"));
    stop_echo();
}
END_TEST

/* veil_channel_call_all: calls made at once, each with its own outcome. */
START_TEST(test_call_all)
{
    start_echo("svc/vault", NULL);
    veil_channel *ch = h_channel(echo.addr, "svc/gateway", &veil__testing__echo__descriptor);
    Veil__Testing__EchoRequest slow = VEIL__TESTING__ECHO_REQUEST__INIT,
                               fail = VEIL__TESTING__ECHO_REQUEST__INIT;
    slow.text = "slept";
    slow.sleep_ms = 400;
    fail.fail_code = VEIL_ERR_NOT_FOUND;
    fail.fail_message = "no such thing";
    Veil__Testing__EchoReply *r[3];
    veil_call_one calls[3] = {
        {.ch = ch, .method = "Sleep", .req = &slow.base, .resp = &r[0]},
        {.ch = ch, .method = "Fail", .req = &fail.base, .resp = &r[1]},
        {.ch = ch, .method = "Sleep", .req = &slow.base, .resp = &r[2]},
    };
    int64_t t0 = veil_mono_ns();
    veil_channel_call_all(calls, 3, NULL, 5000);
    int64_t ms = (veil_mono_ns() - t0) / 1000000;
    /* both sleeps ran at once: serially they would take 800 ms */
    ck_assert_msg(ms < 780, "the calls took %lld ms", (long long)ms);
    for (int i = 0; i < 3; i += 2) {
        ck_assert_int_eq(calls[i].err, VEIL_OK);
        ck_assert_str_eq(r[i]->text, "slept");
        free_reply(r[i]);
    }
    ck_assert_int_eq(calls[1].err, VEIL_ERR_NOT_FOUND);
    ck_assert_ptr_null(r[1]);
    ck_assert_int_eq(calls[1].st.code, GRPC_STATUS_NOT_FOUND);
    ck_assert_str_eq(calls[1].st.message, "no such thing");
    /* and the thread's queue is clean for the next synchronous call */
    Veil__Testing__EchoReply *one;
    veil_status st;
    ck_assert_int_eq(veil_channel_call(ch, "Echo", &slow.base, NULL, 2000, &one, &st), VEIL_OK);
    free_reply(one);
    veil_channel_free(ch);
    stop_echo();
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_success,
                                  test_error_status_and_message,
                                  test_error_map_is_complete,
                                  test_deadline_exceeded,
                                  test_unknown_method,
                                  test_oversize_message,
                                  test_malformed_protobuf,
                                  test_mtls_identity,
                                  test_mtls_rejections,
                                  test_client_checks_server_identity,
                                  test_policy_enforced,
                                  test_health,
                                  test_worker_does_not_block_cq,
                                  test_sigterm_drains_in_flight_call,
                                  test_deferred_calls, test_sigterm_drains_deferred_calls,
                                  test_new_calls_refused_after_stop,
                                  test_plaintext_dev_mode,
                                  test_one_channel_many_threads,
                                  test_bad_configuration_refused,
                                  test_port_in_use_refused,
                                  test_call_all,
                                  NULL};
    const h_case cases[] = {{"layer", 60, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("rpc", cases));
}
