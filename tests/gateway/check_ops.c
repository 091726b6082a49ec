/*
 * check_ops.c - what an operator relies on, on a whole stack (issue 16):
 * a W3C traceparent from an app followed through every service's log; the
 * Admin API on its own listener and certificate and nowhere else; every
 * service's metrics after a few logins, through gRPC and OpenID Connect; a
 * Secret updated as the kubelet does reaching the running gateway; access-log
 * retention dropping a partition while every citizen's chain still verifies.
 *
 * One stack for the suite (an unchecked fixture), its services logging at
 * debug so every finished call is a line; tests run in one process because
 * grpc core must not be used across fork().
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "e2e.h"
#include "grpc/health/v1/health.pb-c.h"
#include "veil/codec.h"
#include "veil/trace.h"

static h_stack S;
/* One-second access-log partitions kept one second, for the retention test (the vault's
 * `access-log-retention` command reads them; serving ignores them). */
static const char *const service_env[] = {"VEIL_LOG_LEVEL=debug", "VAULT_ACCESS_LOG_PARTITION_S=1",
                                          "VAULT_ACCESS_LOG_RETENTION_S=1", NULL};

/* The gateway opens its OpenID Connect door too, for the OIDC login metrics. */
static char oidc_listen[64], oidc_issuer[96], *oidc_dir;
static const char *gateway_env[] = {oidc_listen, oidc_issuer, NULL};

static void stack_up(void)
{
    int port = h_free_port();
    snprintf(oidc_listen, sizeof oidc_listen, "GATEWAY_OIDC_LISTEN=127.0.0.1:%d", port);
    snprintf(oidc_issuer, sizeof oidc_issuer, "GATEWAY_OIDC_ISSUER=https://localhost:%d", port);
    h_stack_opts o = {.gateway_env = gateway_env, .service_env = service_env, .metrics_ports = 1};
    if (h_stack_start_opts(&S, &o) != 0)
        ck_abort_msg("the stack did not start");
    oidc_dir = h_tempdir("ops-oidc");
    h_stack_oidc_env(&S, oidc_dir, strchr(oidc_issuer, '=') + 1);
}

static void stack_down(void)
{
    h_stack_down(&S);
    free(oidc_dir);
}

/*
 * Counts the lines of p's log that carry trace_id (as the "trace_id" field
 * of a JSON line); fails the test on a line that is not JSON.  methods, when
 * not NULL, receives the "method" of the trace's "call finished" lines.
 */
static int lines_with_trace(const h_proc *p, const char *trace_id, char *methods, size_t mlen)
{
    FILE *f = fopen(p->log, "r");
    ck_assert_ptr_nonnull(f);
    char line[16384];
    int n = 0;
    if (methods && mlen)
        methods[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        if (line[0] != '{')
            continue; /* grpc's own messages, valgrind's */
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        ck_assert_msg(j != NULL, "%s log line is not JSON: %s", p->name, line);
        const char *t = json_string_value(json_object_get(j, "trace_id"));
        if (t && strcmp(t, trace_id) == 0) {
            n++;
            const char *span = json_string_value(json_object_get(j, "span_id"));
            ck_assert_msg(span && strlen(span) == 16, "a traced line without its span id");
            const char *m = json_string_value(json_object_get(j, "method"));
            if (methods && m) {
                strncat(methods, m, mlen - strlen(methods) - 1);
                strncat(methods, " ", mlen - strlen(methods) - 1);
            }
        }
        json_decref(j);
    }
    fclose(f);
    return n;
}

/* Waits (a call's last line is written just after its reply left) until p logged method in trace.
 */
static int wait_for_method(const h_proc *p, const char *trace_id, const char *method)
{
    char methods[4096];
    for (int i = 0; i < 100 * h_timeout_scale(); i++) {
        lines_with_trace(p, trace_id, methods, sizeof methods);
        if (strstr(methods, method))
            return 1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "%s: trace %s has only: %s\n", p->name, trace_id, methods);
    return 0;
}

/* Issue 16 item 3: an app's traceparent reaches every service's log through every hop. */
START_TEST(test_traceparent_through_every_hop)
{
    char id[19];
    e2e_id_number("11010519491231002", id);
    vw_wallet *w = e2e_enrol(&S, id, "Trace Test");
    const char *attrs[] = {"age_over_18"};
    e2e_grant(&S, w, "gov.services", attrs, 1);

    const char *traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const char *trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    veil_trace t;
    ck_assert(veil_trace_parse(traceparent, strlen(traceparent), &t));
    veil_trace_set_current(&t); /* this thread is the app: its calls send traceparent */
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    veil_err err = e2e_login(&S, "gov.services", w, attrs, 1, &r, &st);
    veil_trace_set_current(NULL);
    ck_assert_msg(err == VEIL_OK, "login failed: %s", st.message);
    e2e_free(r);

    ck_assert(wait_for_method(&S.gateway, trace_id, "/veil.gateway.Login/BeginLogin"));
    ck_assert(wait_for_method(&S.gateway, trace_id, "/veil.gateway.Login/CompleteLogin"));
    ck_assert(wait_for_method(&S.vault, trace_id, "/veil.vault.Vault/VerifyTicket"));
    ck_assert(wait_for_method(&S.vault, trace_id, "/veil.vault.Vault/ReleaseAttributes"));
    ck_assert(wait_for_method(&S.consent, trace_id, "/veil.consent.Consent/"));
    ck_assert(wait_for_method(&S.revocation, trace_id, "/veil.revocation.Revocation/"));
    ck_assert(wait_for_method(&S.pseudonym, trace_id, "/veil.pseudonym.Pseudonym/"));

    /* A wallet's traceparent is not adopted: its calls would become linkable in the logs. */
    const char *wallet_trace = "0af7651916cd43dd8448eb211c80319c";
    ck_assert(veil_trace_parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 55, &t));
    veil_trace_set_current(&t);
    Veil__Gateway__ListDevicesPayload ld = VEIL__GATEWAY__LIST_DEVICES_PAYLOAD__INIT;
    Veil__Gateway__ListDevicesResponse *devs = NULL;
    err = e2e_citizen(&S, w, "ListDevices", &ld.base, &devs, &st);
    veil_trace_set_current(NULL);
    ck_assert_int_eq(err, VEIL_OK);
    e2e_free(devs);
    ck_assert_int_eq(lines_with_trace(&S.gateway, wallet_trace, NULL, 0), 0);
    ck_assert_int_eq(lines_with_trace(&S.vault, wallet_trace, NULL, 0), 0);
    vw_wallet_free(w);
}
END_TEST

/* traceparent parsing follows the W3C rules. */
START_TEST(test_traceparent_parsing)
{
    veil_trace t;
    const char *good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ck_assert(veil_trace_parse(good, strlen(good), &t));
    ck_assert_str_eq(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    ck_assert_str_eq(t.span_id, "00f067aa0ba902b7");
    ck_assert_uint_eq(t.flags, 1);
    char out[VEIL_TRACEPARENT_LEN + 1];
    veil_trace_format(&t, out);
    ck_assert_str_eq(out, good);
    const char *bad[] = {
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 with a tail */
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",   /* misplaced dash */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",      "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!veil_trace_parse(bad[i], strlen(bad[i]), &t), "accepted %s", bad[i]);
    const char *later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
    ck_assert(veil_trace_parse(later, strlen(later), &t));
    veil_trace_new(&t);
    ck_assert_uint_eq(strlen(t.trace_id), 32);
    veil_trace child;
    veil_trace_child(&t, &child);
    ck_assert_str_eq(child.trace_id, t.trace_id);
    ck_assert_str_ne(child.span_id, t.span_id);
}
END_TEST

/* A ListApps call to addr as identity; the status code (st filled). */
static grpc_status_code list_apps_at(const char *addr, const char *identity, veil_status *st)
{
    veil_channel *ch = h_channel(addr, identity, &veil__gateway__admin__descriptor);
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__ListAppsResponse *resp = NULL;
    memset(st, 0, sizeof *st);
    veil_err err = veil_channel_call(ch, "ListApps", &req.base, NULL, 10000, &resp, st);
    veil_channel_free(ch);
    if (err == VEIL_OK) {
        ck_assert_uint_ge(resp->n_apps, 81);
        e2e_free(resp);
        return GRPC_STATUS_OK;
    }
    return st->code;
}

/*
 * The URI SANs of the certificate the TLS server at addr presents to a client
 * holding identity's certificate (openssl s_client; the test cluster's CA).
 */
static void presented_uris(const char *addr, const char *identity, char *out, size_t len)
{
    h_tls t;
    h_tls_for(&t, identity);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "openssl s_client -connect %s -CAfile %s -cert %s -key %s -alpn h2 </dev/null "
             "2>/dev/null | openssl x509 -noout -ext subjectAltName 2>/dev/null",
             addr, t.ca, t.cert, t.key);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    pclose(p);
}

/* Issue 16 item 4: admin calls are refused on the public port and work on the admin port. */
START_TEST(test_admin_listener_separate)
{
    veil_status st;
    /* each port presents its own certificate: the admin listener's is not the gateway's */
    char sans[2048];
    presented_uris(S.admin_addr, "admin/ops", sans, sizeof sans);
    ck_assert_msg(strstr(sans, "URI:spiffe://veil/svc/gateway-admin"),
                  "the admin port presents: %s", sans);
    presented_uris(S.gateway.addr, "admin/ops", sans, sizeof sans);
    ck_assert_msg(strstr(sans, "URI:spiffe://veil/svc/gateway,") ||
                      strstr(sans, "URI:spiffe://veil/svc/gateway\n"),
                  "the public port presents: %s", sans);
    ck_assert_ptr_null(strstr(sans, "gateway-admin"));
    /* the public port does not host the Admin service at all, whoever calls */
    ck_assert_int_eq(list_apps_at(S.gateway.addr, "admin/ops", &st), GRPC_STATUS_UNIMPLEMENTED);
    ck_assert_str_eq(st.message, "method not implemented");
    ck_assert_int_eq(list_apps_at(S.gateway.addr, "app/chat.lianxin", &st),
                     GRPC_STATUS_UNIMPLEMENTED);
    veil_channel *ch =
        h_channel(S.gateway.addr, "admin/ops", &grpc__health__v1__health__descriptor);
    Grpc__Health__V1__HealthCheckRequest hc = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *hr = NULL;
    hc.service = "veil.gateway.Admin";
    ck_assert_int_eq(veil_channel_call(ch, "Check", &hc.base, NULL, 10000, &hr, &st),
                     VEIL_ERR_NOT_FOUND);
    veil_channel_free(ch);

    /* the admin listener: the admin is served, an app is refused, a phone cannot connect */
    ck_assert_int_eq(list_apps_at(S.admin_addr, "admin/ops", &st), GRPC_STATUS_OK);
    ck_assert_int_eq(list_apps_at(S.admin_addr, "app/chat.lianxin", &st),
                     GRPC_STATUS_PERMISSION_DENIED);
    ck_assert_int_eq(list_apps_at(S.admin_addr, "none", &st), GRPC_STATUS_UNAVAILABLE);
    ck_assert_int_eq(list_apps_at(S.admin_addr, "foreign", &st), GRPC_STATUS_UNAVAILABLE);
    /* and the admin listener does not serve the apps' or the wallets' APIs */
    ch = h_channel(S.admin_addr, "app/chat.lianxin", &veil__gateway__login__descriptor);
    Veil__Empty e = VEIL__EMPTY__INIT;
    Veil__Gateway__JwksResponse *jr = NULL;
    ck_assert_int_eq(veil_channel_call(ch, "GetJwks", &e.base, NULL, 10000, &jr, &st),
                     VEIL_ERR_UNIMPLEMENTED);
    veil_channel_free(ch);
}
END_TEST

/* A series' value, 0 when the series has not appeared yet. */
static double count(const char *text, const char *series)
{
    double v = e2e_sample(text, series);
    return v < 0 ? 0 : v;
}

/* Issue 16 item 2: after a few logins, each service's metrics say what happened, and nothing
 * personal. */
START_TEST(test_metrics_after_logins)
{
    char id[19];
    e2e_id_number("11010519800101003", id);
    vw_wallet *w = e2e_enrol(&S, id, "Metric Test");
    const char *attrs[] = {"age_over_18"};
    e2e_grant(&S, w, "gov.services", attrs, 1);
    char *gw0 = e2e_scrape(S.metrics_port[H_GATEWAY]);
    double ok0 = e2e_sample(gw0, "veil_logins_total{app_kind=\"public_service\",door=\"grpc\",outcome=\"OK\"}");
    double rel0 = e2e_sample(gw0, "veil_releases_total{attribute=\"age_over_18\"}");
    free(gw0);
    char *subs[3];
    for (int i = 0; i < 3; i++) {
        Veil__Gateway__CompleteLoginResponse *r;
        veil_status st;
        ck_assert_int_eq(e2e_login(&S, "gov.services", w, attrs, 1, &r, &st), VEIL_OK);
        subs[i] = strdup(r->sub);
        e2e_free(r);
    }
    /* a refused login: a malformed ticket */
    veil_status st;
    Veil__Gateway__CompleteLoginResponse *refused = NULL;
    ck_assert_int_eq(e2e_complete(&S, "gov.services", "not-a-ticket", NULL, 0, &refused, &st),
                     VEIL_ERR_INVALID);
    e2e_free(refused);

    char *gw = e2e_scrape(S.metrics_port[H_GATEWAY]);
    ck_assert_double_eq(e2e_sample(gw, "veil_logins_total{app_kind=\"public_service\",door=\"grpc\",outcome=\"OK\"}"),
                        (ok0 < 0 ? 0 : ok0) + 3);
    ck_assert_double_ge(
        e2e_sample(gw, "veil_logins_total{app_kind=\"public_service\",door=\"grpc\",outcome=\"INVALID_ARGUMENT\"}"),
        1);
    ck_assert_double_eq(e2e_sample(gw, "veil_releases_total{attribute=\"age_over_18\"}"),
                        (rel0 < 0 ? 0 : rel0) + 3);
    ck_assert_double_ge(
        e2e_sample(gw,
               "veil_rpc_calls_total{method=\"/veil.gateway.Login/CompleteLogin\",status=\"OK\"}"),
        3);
    ck_assert_double_ge(e2e_sample(gw, "veil_rpc_duration_seconds_bucket{method=\"/veil.gateway.Login/"
                                   "CompleteLogin\",le=\"+Inf\"}"),
                        4);
    ck_assert_double_ge(e2e_sample(gw, "veil_gateway_cache_misses_total"), 1);
    ck_assert_double_ge(e2e_sample(gw, "veil_gateway_cache_hits_total"), 0);
    ck_assert_double_ge(e2e_sample(gw, "veil_feed_lag_seconds{feed=\"revocation\"}"), 0);
    ck_assert_double_ge(e2e_sample(gw, "veil_feed_lag_seconds{feed=\"consent\"}"), 0);
    ck_assert_double_eq(e2e_sample(gw, "veil_key_version{kind=\"assertion\",role=\"current\"}"), 1);
    ck_assert_double_eq(e2e_sample(gw, "veil_key_version{kind=\"pseudonym\",role=\"current\"}"), 1);
    ck_assert_double_eq(e2e_sample(gw, "veil_key_version{kind=\"receipt\",role=\"current\"}"), 1);
    ck_assert_double_eq(
        e2e_sample(gw, "veil_key_overlap_started_timestamp_seconds{kind=\"assertion\"}"), 0);
    ck_assert_double_ge(e2e_sample(gw, "veil_db_connections"), 1);
    ck_assert_double_ge(e2e_sample(gw, "veil_db_connects_total{result=\"ok\"}"), 1);
    ck_assert_ptr_nonnull(strstr(gw, "# TYPE veil_rpc_duration_seconds histogram\n"));
    /* nothing about the citizen: no pseudonym, no web number, no app id in any label */
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_null(strstr(gw, subs[i]));
        free(subs[i]);
    }
    ck_assert_ptr_null(strstr(gw, "gov.services"));
    ck_assert_ptr_null(strstr(gw, id));
    free(gw);

    char *vault = e2e_scrape(S.metrics_port[H_VAULT]);
    ck_assert_double_ge(e2e_sample(vault, "veil_vault_group_commit_entries_count"), 3);
    ck_assert_double_ge(e2e_sample(vault, "veil_vault_commit_seconds_bucket{le=\"+Inf\"}"), 3);
    static const char *const vault_kinds[] = {"webcert", "ticket", "master"};
    for (int i = 0; i < 3; i++) {
        char series[96];
        snprintf(series, sizeof series, "veil_key_version{kind=\"%s\",role=\"current\"}",
                 vault_kinds[i]);
        ck_assert_msg(e2e_sample(vault, series) == 1, "vault: %s", series);
    }
    ck_assert_double_ge(e2e_sample(vault, "veil_db_connections"), 1);
    /* the gateway's login hop: one VerifyTicket per login, or batched (VerifyTicketBatch) */
    ck_assert_double_ge(
        count(vault, "veil_rpc_calls_total{method=\"/veil.vault.Vault/VerifyTicket\",status=\"OK\"}") +
            count(vault, "veil_rpc_calls_total{method=\"/veil.vault.Vault/VerifyTicketBatch\","
                         "status=\"OK\"}"),
        1);
    free(vault);
    /* every service serves its calls' counts */
    static const char *const some[] = {NULL, NULL, "/veil.consent.Consent/",
                                       "/veil.revocation.Revocation/",
                                       "/veil.pseudonym.Pseudonym/Derive"};
    for (int i = H_CONSENT; i <= H_PSEUDONYM; i++) {
        char *t = e2e_scrape(S.metrics_port[i]);
        char want[128];
        snprintf(want, sizeof want, "veil_rpc_calls_total{method=\"%s", some[i]);
        ck_assert_msg(strstr(t, want), "service %d lacks %s", i, want);
        if (i == H_CONSENT) /* the receipt of the grant above was signed with version 1 */
            ck_assert_double_eq(
                e2e_sample(t, "veil_key_version{kind=\"receipt\",role=\"signed\"}"), 1);
        free(t);
    }
    vw_wallet_free(w);
}
END_TEST


/*
 * Logins through the OpenID Connect door are counted like CompleteLogin's:
 * by app kind and outcome, with door="oidc" (the phone's approval is where the
 * login runs), and /token's answer by outcome.
 */
START_TEST(test_metrics_oidc_logins)
{
    static const char *const oidc_ok =
        "veil_logins_total{app_kind=\"commercial\",door=\"oidc\",outcome=\"OK\"}";
    static const char *const grpc_ok =
        "veil_logins_total{app_kind=\"commercial\",door=\"grpc\",outcome=\"OK\"}";
    static const char *const token_ok = "veil_oidc_token_requests_total{outcome=\"ok\"}";
    static const char *const released =
        "veil_releases_total{attribute=\"age_over_18\"}";
    char *before = e2e_scrape(S.metrics_port[H_GATEWAY]);
    /* tls_client_auth, EdDSA: one OIDC login (approved on the phone, code exchanged at /token),
     * then the same app's gRPC login for the same citizen */
    ck_assert_int_eq(h_oidc_scenario(&S, "eddsa"), 0);
    char *after = e2e_scrape(S.metrics_port[H_GATEWAY]);
    ck_assert_double_eq(count(after, oidc_ok), count(before, oidc_ok) + 1);
    ck_assert_double_eq(count(after, grpc_ok), count(before, grpc_ok) + 1);
    ck_assert_double_eq(count(after, token_ok), count(before, token_ok) + 1);
    ck_assert_double_eq(count(after, released), count(before, released) + 2);
    ck_assert_ptr_null(strstr(after, "chat.wechat")); /* no app id in any label */
    free(before);
    free(after);
}
END_TEST

/* ---- a Secret volume as the kubelet lays it out, kept in step by secret-files ---- */

/* Copies every file of from into to with mode 0440 (what fsGroup makes of defaultMode 0400). */
/* The vault's veil_key_version{kind="ticket"} at its metrics port. */
static double vault_ticket_version(void)
{
    char *t = e2e_scrape(S.metrics_port[H_VAULT]);
    double v = e2e_sample(t, "veil_key_version{kind=\"ticket\",role=\"current\"}");
    free(t);
    return v;
}

/*
 * Issue 16 items 2 and 5: the vault's key version gauge follows a rotation in
 * the running process (as check_vault_login's test_rotation_without_restart
 * drives it: a new key file, then `vault rotate-key`), with no restart.
 */
START_TEST(test_metrics_follow_key_rotation)
{
    pid_t pid = S.vault.pid;
    ck_assert_double_eq(vault_ticket_version(), 1);
    h_keyfile(S.keys[H_VAULT], "ticket", 2);
    ck_assert_int_eq(h_stack_command(&S, H_VAULT, "rotate-key --kind ticket --to 2"), 0);
    double v = vault_ticket_version();
    for (int i = 0; i < 200 && v != 2; i++, h_sleep_ms(50))
        v = vault_ticket_version();
    ck_assert_double_eq(v, 2);
    ck_assert_int_eq(S.vault.pid, pid);
    ck_assert_int_eq(kill(pid, 0), 0);
    /* the others are untouched */
    char *t = e2e_scrape(S.metrics_port[H_VAULT]);
    ck_assert_double_eq(e2e_sample(t, "veil_key_version{kind=\"webcert\",role=\"current\"}"), 1);
    ck_assert_double_eq(e2e_sample(t, "veil_key_version{kind=\"master\",role=\"current\"}"), 1);
    free(t);
}
END_TEST

static void copy_files(const char *from, const char *to)
{
    DIR *d = opendir(from);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char a[2048], b[2048], buf[512];
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        int in = open(a, O_RDONLY), out = open(b, O_WRONLY | O_CREAT | O_EXCL, 0600);
        ck_assert(in >= 0 && out >= 0);
        ssize_t n = read(in, buf, sizeof buf);
        ck_assert(n > 0 && write(out, buf, (size_t)n) == n);
        close(in), close(out);
        ck_assert_int_eq(chmod(b, 0440), 0);
    }
    closedir(d);
}

/* Makes volume/..<stamp>/ holding from's files plus (when purpose) a new key file. */
static void kubelet_version(const char *volume, const char *stamp, const char *from,
                            const char *purpose, unsigned version, char *dir, size_t len)
{
    snprintf(dir, len, "%s/..%s", volume, stamp);
    ck_assert_int_eq(mkdir(dir, 0750), 0);
    copy_files(from, dir);
    if (purpose) {
        h_keyfile(dir, purpose, version);
        char path[2048];
        snprintf(path, sizeof path, "%s/%s-%u.key", dir, purpose, version);
        ck_assert_int_eq(chmod(path, 0440), 0);
    }
}

/* The user-visible name -> ..data/name symlinks for every file of dir. */
static void kubelet_links(const char *volume, const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char link[2048], target[512];
        snprintf(link, sizeof link, "%s/%s", volume, e->d_name);
        snprintf(target, sizeof target, "..data/%s", e->d_name);
        if (symlink(target, link) != 0)
            ck_assert_int_eq(errno, EEXIST); /* a name both versions have keeps its link */
    }
    closedir(d);
}

static void remove_folder(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            ck_assert_int_eq(unlink(path), 0);
    }
    closedir(d);
    ck_assert_int_eq(rmdir(dir), 0);
}

/* Waits up to 5 s (scaled) for text in a process's log. */
static int log_shows(const h_proc *p, const char *text)
{
    for (int i = 0; i < 100 * h_timeout_scale(); i++) {
        if (h_log_contains(p, text))
            return 1;
        h_sleep_ms(50);
    }
    return 0;
}

/* A login at chat.lianxin; the kid of its assertion (static storage). */
static const char *login_kid(const vw_wallet *w)
{
    static char kid[64];
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    ck_assert_int_eq(e2e_login(&S, "chat.lianxin", w, NULL, 0, &r, &st), VEIL_OK);
    const char *k = e2e_kid_of(r->assertion);
    snprintf(kid, sizeof kid, "%.*s", (int)strcspn(k, "\""), k);
    e2e_free(r);
    return kid;
}

/*
 * Gap 1 of issue 16 item 5: a Secret changed in place on Kubernetes reaches
 * the running gateway.  The Secret volume is laid out as the kubelet does
 * (a timestamped folder, "..data" pointing at it, one "name -> ..data/name"
 * link per file, files 0440 through fsGroup); secret-files --watch (the
 * pods' sidecar) keeps the gateway's key folder in step with it.  The kubelet's
 * update is replayed exactly: a new timestamped folder with a new key file,
 * "..data_tmp" renamed over "..data", the new link, the old folder removed.
 * The gateway loads the new key at once and publishes it, but signs with it
 * only after RotateKey.
 */
START_TEST(test_secret_update_reaches_the_service)
{
    char *src = h_tempdir("kubelet"), volume[1200], v1[1400], v2[1400], path[1500];
    const char *name = strrchr(S.keys[H_GATEWAY], '/') + 1; /* keys-gateway */
    snprintf(volume, sizeof volume, "%s/%s", src, name);
    ck_assert_int_eq(mkdir(volume, 01750), 0);
    kubelet_version(volume, "2026_12_05_06_00_00.000000001", S.keys[H_GATEWAY], NULL, 0, v1,
                    sizeof v1);
    snprintf(path, sizeof path, "%s/..data", volume);
    ck_assert_int_eq(symlink(strrchr(v1, '/') + 1, path), 0);
    kubelet_links(volume, v1);

    /* the sidecar: FROM holds the Secret volumes, TO the folders the services read */
    h_proc sidecar = {.name = "secret-files"};
    char bin[1200], to[1200], *log = sidecar.log;
    snprintf(bin, sizeof bin, "%s/secret-files", h_env("VEIL_TEST_BIN"));
    snprintf(to, sizeof to, "%.*s", (int)(strrchr(S.keys[H_GATEWAY], '/') - S.keys[H_GATEWAY]),
             S.keys[H_GATEWAY]);
    snprintf(log, sizeof sidecar.log, "%s/secret-files.log", src);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    char *argv[] = {bin, src, to, "--watch", NULL};
    extern char **environ;
    pid_t pid;
    ck_assert_int_eq(posix_spawn(&pid, bin, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    sidecar.pid = pid;

    /* the first pass makes the copies owner-only; the gateway's keys are unchanged */
    snprintf(path, sizeof path, "%s/assertion-1.key", S.keys[H_GATEWAY]);
    struct stat st;
    for (int i = 0; i < 100 && (stat(path, &st) != 0 || (st.st_mode & 0777) != 0400); i++)
        h_sleep_ms(50);
    ck_assert_uint_eq(st.st_mode & 0777, 0400);

    char id[19];
    e2e_id_number("11010519750505006", id);
    vw_wallet *w = e2e_enrol(&S, id, "Secret Test");
    ck_assert_str_eq(login_kid(w), "assertion-1");

    /* the kubelet's update: assertion-8.key added to the Secret */
    kubelet_version(volume, "2026_12_05_07_00_00.000000002", v1, "assertion", 8, v2, sizeof v2);
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s/..data_tmp", volume);
    ck_assert_int_eq(symlink(strrchr(v2, '/') + 1, tmp), 0);
    snprintf(path, sizeof path, "%s/..data", volume);
    ck_assert_int_eq(rename(tmp, path), 0);
    kubelet_links(volume, v2);
    remove_folder(v1);

    ck_assert_msg(log_shows(&sidecar, "\"file\":\"assertion-8.key\""), "secret-files did not copy");
    ck_assert_msg(log_shows(&S.gateway, "\"newest\":8"), "the gateway did not load the new key");
    snprintf(path, sizeof path, "%s/assertion-8.key", S.keys[H_GATEWAY]);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0400);
    ck_assert(S_ISREG(st.st_mode));
    /* loaded and published, not used */
    char *jwks = e2e_jwks(&S);
    ck_assert_ptr_nonnull(strstr(jwks, "\"assertion-8\""));
    free(jwks);
    ck_assert_str_eq(login_kid(w), "assertion-1");
    /* the rotation command, and only it, puts the new key to use */
    Veil__Gateway__RotateKeyRequest rk = VEIL__GATEWAY__ROTATE_KEY_REQUEST__INIT;
    Veil__Gateway__RotateKeyResponse *rr;
    veil_status vs;
    rk.kind = "assertion";
    rk.version = 8;
    ck_assert_int_eq(e2e_call(&S, "admin/ops", &veil__gateway__admin__descriptor, "RotateKey",
                              &rk.base, &rr, &vs),
                     VEIL_OK);
    e2e_free(rr);
    const char *kid = "";
    for (int i = 0; i < 40 && strcmp(kid, "assertion-8") != 0; i++, h_sleep_ms(100))
        kid = login_kid(w); /* every replica follows the database within half a second */
    ck_assert_str_eq(kid, "assertion-8");

    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    vw_wallet_free(w);
    free(src);
}
END_TEST

static Veil__Gateway__AccessLogResponse *access_log(const vw_wallet *w)
{
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *log = NULL;
    veil_status st;
    ck_assert_int_eq(e2e_citizen(&S, w, "AccessLog", &p.base, &log, &st), VEIL_OK);
    return log;
}

static void logins(const vw_wallet *w, int n)
{
    for (int i = 0; i < n; i++) {
        Veil__Gateway__CompleteLoginResponse *r;
        veil_status st;
        ck_assert_int_eq(e2e_login(&S, "chat.lianxin", w, NULL, 0, &r, &st), VEIL_OK);
        e2e_free(r);
    }
}

/* Issue 16 item 7: retention drops a partition of old entries; the chain still verifies. */
START_TEST(test_retention_drops_a_partition)
{
    char id[19];
    e2e_id_number("11010519700101004", id);
    vw_wallet *w = e2e_enrol(&S, id, "Retention Test");
    logins(w, 3);
    Veil__Gateway__AccessLogResponse *log = access_log(w);
    ck_assert(log->chain_valid);
    size_t all = log->n_entries;
    ck_assert_uint_ge(all, 4);
    ck_assert_int_eq(log->entries[0]->seq, 1);
    e2e_free(log);
    /* the first run moves the rows out of the default partition into one-second partitions */
    ck_assert_int_eq(h_stack_command(&S, H_VAULT, "access-log-retention"), 0);
    struct timespec ts = {2, 200 * 1000000L}; /* those seconds end more than the 1 s kept */
    nanosleep(&ts, NULL);
    logins(w, 2);
    ck_assert_int_eq(h_stack_command(&S, H_VAULT, "access-log-retention"), 0);

    log = access_log(w);
    ck_assert_msg(log->chain_valid, "chain broken at %lld after retention",
                  (long long)log->first_bad_seq);
    ck_assert_uint_eq(log->n_entries, 2); /* only the two recent logins are left */
    ck_assert_int_eq(log->entries[0]->seq, (int64_t)all + 1);
    ck_assert_int_eq(log->entries[1]->seq, (int64_t)all + 2);
    e2e_free(log);
    /* and the log goes on from there */
    logins(w, 1);
    log = access_log(w);
    ck_assert(log->chain_valid);
    ck_assert_uint_eq(log->n_entries, 3);
    e2e_free(log);

    /* a deletion that is not retention is still seen: the retained entry after the first goes */
    ck_assert_int_eq(h_db_exec(S.db[H_VAULT], "DELETE FROM access_log WHERE (subject_ref, seq) IN "
                                              "(SELECT subject_ref, min(seq) + 1 FROM access_log "
                                              "GROUP BY subject_ref)"),
                     0);
    log = access_log(w);
    ck_assert(!log->chain_valid);
    ck_assert_int_eq(log->first_bad_seq, (int64_t)all + 2);
    e2e_free(log);
    vw_wallet_free(w);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        test_traceparent_parsing,
        test_traceparent_through_every_hop,
        test_admin_listener_separate,
        test_metrics_after_logins,
        test_metrics_oidc_logins,
        test_metrics_follow_key_rotation,
        test_secret_update_reaches_the_service /* after the metrics: rotates */,
        test_retention_drops_a_partition /* last: it deletes log rows */,
        NULL};
    const h_case cases[] = {{"stack", 600, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("ops", cases));
}
