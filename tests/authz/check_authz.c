/*
 * check_authz.c - the authorization matrix: every RPC of every veil service,
 * called over real gRPC against a running stack by every kind of caller -
 * registered apps, an app the registry does not know, the admin, each
 * service's own identity, a certificate from a foreign CA, no certificate, a
 * plaintext connection, and a plaintext probe on each service's health port -
 * and the outcome checked against the policy tables the services are built
 * with (linked from their libraries, so a new RPC or a changed row is seen
 * here at once).
 *
 * "Allowed" means the call got past the RPC layer's dispatcher: the handler
 * may then refuse an empty request (INVALID_ARGUMENT and the like), but never
 * with one of the dispatcher's own refusals, whose messages no handler uses.
 * "Denied" means exactly the dispatcher's refusal, or the TLS handshake
 * failing (UNAVAILABLE) for callers a port does not let in at all.
 *
 * Also here: the structural rules of the tables (internal services answer
 * only the gateway and, where the design says so, the admin; only Health
 * admits probes; apps never reach the Wallet; Admin is the admin's alone),
 * veil_server_add refusing a table with a missing, repeated or unknown row,
 * and apps kept away from each other's logins and events through the gateway.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consent.h"
#include "e2e.h"
#include "gateway.h"
#include "grpc/health/v1/health.pb-c.h"
#include "pseudonym.h"
#include "revocation.h"
#include "vault.h"
#include "veil/codec.h"

/* One service's descriptor and the policy table its server enforces. */
struct table {
    const ProtobufCServiceDescriptor *desc;
    const veil_method_policy *policy;
    const size_t *n;
};

/* One server of the stack and the services it hosts (Health on every one). */
struct server {
    int which;         /* H_GATEWAY ... */
    int cert_required; /* internal services: no client certificate, no handshake */
    struct table tables[4];
    int admin_listener; /* the gateway's Admin listener rather than its public port */
};

#define HEALTH                                                                                     \
    {                                                                                              \
        &grpc__health__v1__health__descriptor, veil_health_policy, &veil_health_policy_len         \
    }

static const struct server servers[] = {
    {H_GATEWAY,
     0,
     {{&veil__gateway__login__descriptor, gw_login_policy, &gw_login_policy_len},
      {&veil__gateway__wallet__descriptor, gw_wallet_policy, &gw_wallet_policy_len},
      {&veil__gateway__counter__descriptor, gw_counter_policy, &gw_counter_policy_len},
      HEALTH},
     0},
    /* the Admin API has a listener of its own, which demands a client certificate */
    {H_GATEWAY,
     1,
     {{&veil__gateway__admin__descriptor, gw_admin_policy, &gw_admin_policy_len}, HEALTH},
     1},
    {H_VAULT, 1, {{&veil__vault__vault__descriptor, vault_policy, &vault_policy_len}, HEALTH}, 0},
    {H_CONSENT,
     1,
     {{&veil__consent__consent__descriptor, consent_policy, &consent_policy_len}, HEALTH},
     0},
    {H_REVOCATION,
     1,
     {{&veil__revocation__revocation__descriptor, revocation_policy, &revocation_policy_len},
      HEALTH},
     0},
    {H_PSEUDONYM,
     1,
     {{&veil__pseudonym__pseudonym__descriptor, pseudonym_policy, &pseudonym_policy_len}, HEALTH},
     0},
};
#define N_SERVERS  (sizeof servers / sizeof servers[0])
#define MAX_TABLES 4

/* How a caller reaches a server. */
enum reach {
    R_CERT,      /* TLS with a client certificate of our CA */
    R_NO_CERT,   /* TLS, no client certificate: a citizen's phone */
    R_FOREIGN,   /* TLS with a certificate from another CA */
    R_PLAINTEXT, /* plaintext against the TLS port */
    R_PROBE,     /* plaintext against the health port */
};

static const struct caller {
    const char *identity; /* for h_tls_for */
    enum reach reach;
    unsigned role; /* the role the dispatcher gives it (when it gets that far) */
} callers[] = {
    {"app/chat.lianxin", R_CERT, VEIL_PEER_APP},
    {"app/shop.jiale", R_CERT, VEIL_PEER_APP},
    {"app/chat.wechat", R_CERT, VEIL_PEER_APP}, /* a certificate the registry does not know */
    {"admin/ops", R_CERT, VEIL_PEER_ADMIN},
    {"counter/desk1", R_CERT, VEIL_PEER_COUNTER},
    {"auditor/audit", R_CERT, VEIL_PEER_AUDITOR},
    {"svc/gateway", R_CERT, VEIL_PEER_GATEWAY},
    {"svc/vault", R_CERT, VEIL_PEER_VAULT},
    {"svc/consent", R_CERT, VEIL_PEER_CONSENT},
    {"svc/revocation", R_CERT, VEIL_PEER_REVOCATION},
    {"svc/pseudonym", R_CERT, VEIL_PEER_PSEUDONYM},
    {"none", R_NO_CERT, VEIL_PEER_CITIZEN},
    {"foreign", R_FOREIGN, 0},
    {"plaintext", R_PLAINTEXT, 0},
    {"plaintext", R_PROBE, VEIL_PEER_PROBE},
};
#define N_CALLERS (sizeof callers / sizeof callers[0])

/* What a call ends in, as far as authorization goes. */
enum outcome {
    O_ALLOWED,   /* past the dispatcher */
    O_POLICY,    /* PERMISSION_DENIED "caller may not call <path>" */
    O_NO_CERT,   /* UNAUTHENTICATED "a client certificate is required" */
    O_PROBE,     /* UNAUTHENTICATED "this port serves health checks only" */
    O_TRANSPORT, /* UNAVAILABLE: the TLS handshake refused the caller */
    O_UNSERVED,  /* UNIMPLEMENTED: a method the layer does not serve (streaming) */
    O_OTHER,     /* anything else: never expected */
};
static const char *const outcome_names[] = {
    "allowed",        "denied by policy", "denied: no cert", "denied: health port only",
    "refused by TLS", "unimplemented",    "unexpected"};

static h_stack S;

static void stack_up(void)
{
    h_stack_opts o = {.health_ports = 1};
    if (h_stack_start_opts(&S, &o) != 0)
        ck_abort_msg("the stack did not start");
}

static void stack_down(void)
{
    h_stack_down(&S);
}

static const h_proc *proc_of(int which)
{
    const h_proc *procs[] = {&S.gateway, &S.vault, &S.consent, &S.revocation, &S.pseudonym};
    return procs[which];
}

/* Where a server listens. */
static const char *addr_of(const struct server *sv)
{
    return sv->admin_listener ? S.admin_addr : proc_of(sv->which)->addr;
}

static size_t n_tables(const struct server *sv)
{
    size_t n = 0;
    while (n < MAX_TABLES && sv->tables[n].desc)
        n++;
    return n;
}

/* The row of a method, or NULL when there is none or more than one. */
static const veil_method_policy *row_of(const struct table *t, const char *method)
{
    const veil_method_policy *found = NULL;
    for (size_t i = 0; i < *t->n; i++) {
        if (strcmp(t->policy[i].method, method) != 0)
            continue;
        if (found)
            return NULL;
        found = &t->policy[i];
    }
    return found;
}

/* What the policy says must happen when caller c calls a method with row r on server sv. */
static enum outcome expected(const struct server *sv, const veil_method_policy *r,
                             const struct caller *c)
{
    if (c->reach == R_FOREIGN || c->reach == R_PLAINTEXT ||
        (c->reach == R_NO_CERT && sv->cert_required))
        return O_TRANSPORT;
    if (r->exec == VEIL_EXEC_UNSERVED)
        return O_UNSERVED;
    if (r->allow & c->role)
        return O_ALLOWED;
    if (c->role == VEIL_PEER_PROBE)
        return O_PROBE;
    if (c->role == VEIL_PEER_CITIZEN)
        return O_NO_CERT;
    return O_POLICY;
}

/* What a call's status says happened. */
static enum outcome observed(const veil_status *st, const char *path)
{
    char denial[256];
    snprintf(denial, sizeof denial, "caller may not call %s", path);
    switch (st->code) {
    case GRPC_STATUS_PERMISSION_DENIED:
        return strcmp(st->message, denial) == 0 ? O_POLICY : O_ALLOWED;
    case GRPC_STATUS_UNAUTHENTICATED:
        if (strcmp(st->message, "a client certificate is required") == 0)
            return O_NO_CERT;
        if (strcmp(st->message, "this port serves health checks only") == 0)
            return O_PROBE;
        return O_ALLOWED;
    case GRPC_STATUS_UNAVAILABLE:
        return O_TRANSPORT;
    case GRPC_STATUS_UNIMPLEMENTED:
        return O_UNSERVED;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_INTERNAL:
    case GRPC_STATUS_UNKNOWN:
    case GRPC_STATUS_CANCELLED:
        return O_OTHER;
    default: /* OK, INVALID_ARGUMENT, NOT_FOUND ...: the handler answered */
        return O_ALLOWED;
    }
}

/* An empty (all-default) request of a method's input type, in malloc'd memory. */
static ProtobufCMessage *empty_request(const ProtobufCMethodDescriptor *m)
{
    ProtobufCMessage *msg = calloc(1, m->input->sizeof_message);
    ck_assert_ptr_nonnull(msg);
    m->input->message_init(msg);
    return msg;
}

/* Every table row names a method and every method has exactly one row. */
START_TEST(test_every_method_has_one_policy_row)
{
    size_t methods = 0;
    for (size_t s = 0; s < N_SERVERS; s++) {
        for (size_t t = 0; t < n_tables(&servers[s]); t++) {
            const struct table *tb = &servers[s].tables[t];
            for (unsigned i = 0; i < tb->desc->n_methods; i++) {
                const char *m = tb->desc->methods[i].name;
                ck_assert_msg(row_of(tb, m), "%s/%s has no policy row, or more than one",
                              tb->desc->name, m);
                methods++;
            }
            for (size_t i = 0; i < *tb->n; i++)
                ck_assert_msg(protobuf_c_service_descriptor_get_method_by_name(
                                  tb->desc, tb->policy[i].method),
                              "the policy of %s names %s, which it does not have", tb->desc->name,
                              tb->policy[i].method);
            ck_assert_uint_eq(*tb->n, tb->desc->n_methods);
        }
    }
    fprintf(stderr, "authz: %zu methods on %zu servers, each with one policy row\n", methods,
            N_SERVERS);
}
END_TEST

/* The rules the design gives the tables, whatever a row says. */
START_TEST(test_table_invariants)
{
    const unsigned internal_callers = VEIL_PEER_GATEWAY | VEIL_PEER_ADMIN;
    const unsigned never_inside =
        VEIL_PEER_APP | VEIL_PEER_CITIZEN | VEIL_PEER_PROBE | VEIL_PEER_COUNTER | VEIL_PEER_AUDITOR;
    /* docs/revocation.md: the regulator's admin identity may also call these */
    static const char *const admin_at_revocation[] = {"SetIdentityState", "SetAppState", "Status"};
    int health_admits_probe = 0;

    for (size_t s = 0; s < N_SERVERS; s++) {
        for (size_t t = 0; t < n_tables(&servers[s]); t++) {
            const struct table *tb = &servers[s].tables[t];
            int is_health = tb->desc == &grpc__health__v1__health__descriptor;
            for (size_t i = 0; i < *tb->n; i++) {
                const veil_method_policy *r = &tb->policy[i];
                const char *svc = tb->desc->name;
                ck_assert_msg(r->allow != 0, "%s/%s admits nobody", svc, r->method);
                ck_assert_msg((r->allow & ~VEIL_PEER_ANYONE) == 0, "%s/%s: unknown role bits", svc,
                              r->method);
                if (is_health) {
                    health_admits_probe |= (r->allow & VEIL_PEER_PROBE) != 0;
                    continue;
                }
                ck_assert_msg(!(r->allow & VEIL_PEER_PROBE), "%s/%s admits health probes", svc,
                              r->method);
                if (servers[s].which != H_GATEWAY) {
                    ck_assert_msg(!(r->allow & never_inside),
                                  "internal %s/%s admits an app, a citizen or a probe", svc,
                                  r->method);
                    ck_assert_msg(!(r->allow & ~internal_callers),
                                  "internal %s/%s admits another internal service", svc, r->method);
                    ck_assert_msg(r->allow & VEIL_PEER_GATEWAY,
                                  "internal %s/%s does not answer the gateway", svc, r->method);
                    int admin_ok = 0;
                    for (size_t k = 0; servers[s].which == H_REVOCATION && k < 3; k++)
                        admin_ok |= strcmp(r->method, admin_at_revocation[k]) == 0;
                    ck_assert_msg(!(r->allow & VEIL_PEER_ADMIN) || admin_ok,
                                  "internal %s/%s admits the admin, which the design does not "
                                  "say",
                                  svc, r->method);
                }
                if (tb->desc == &veil__gateway__wallet__descriptor)
                    ck_assert_msg(!(r->allow & VEIL_PEER_APP), "Wallet/%s admits apps", r->method);
                /* Separation of duties: the auditor reads the audit log and does nothing else. */
                if (tb->desc == &veil__gateway__admin__descriptor &&
                    strcmp(r->method, "ListAudit") == 0)
                    ck_assert_msg(r->allow == VEIL_PEER_AUDITOR,
                                  "Admin/ListAudit admits someone besides the auditor");
                else if (tb->desc == &veil__gateway__admin__descriptor)
                    ck_assert_msg(r->allow == VEIL_PEER_ADMIN,
                                  "Admin/%s admits someone besides the admin", r->method);
                else
                    ck_assert_msg(!(r->allow & VEIL_PEER_AUDITOR) || is_health,
                                  "%s/%s admits the auditor", svc, r->method);
                /* A counter issues cards and nothing else; only a counter issues them. */
                if (tb->desc == &veil__gateway__counter__descriptor)
                    ck_assert_msg(r->allow == VEIL_PEER_COUNTER,
                                  "Counter/%s admits someone besides a counter", r->method);
                else
                    ck_assert_msg(!(r->allow & VEIL_PEER_COUNTER) || is_health,
                                  "%s/%s admits a counter", svc, r->method);
                if (tb->desc == &veil__gateway__login__descriptor ||
                    tb->desc == &veil__gateway__wallet__descriptor)
                    ck_assert_msg(
                        !(r->allow & ~(VEIL_PEER_APP | VEIL_PEER_CITIZEN | VEIL_PEER_ADMIN)),
                        "%s/%s admits an internal service", svc, r->method);
            }
        }
    }
    ck_assert_msg(health_admits_probe, "Health does not admit probes");
}
END_TEST

/* veil_server_add refuses a table that misses, repeats or invents a row. */
START_TEST(test_server_add_refuses_bad_tables)
{
    static Veil__Vault__Vault_Service svc;
    svc = vault_rpc;
    size_t n = vault_policy_len;
    veil_method_policy *rows = calloc(n + 1, sizeof *rows);
    memcpy(rows, vault_policy, n * sizeof *rows);
    veil_server_config cfg = {.listen_addr = "127.0.0.1:0", .tls = {.plaintext = 1}};
    char err[512];
    veil_server *srv;

    /* the real table is accepted */
    ck_assert_int_eq(veil_server_new(&cfg, &srv, err, sizeof err), VEIL_OK);
    ck_assert_int_eq(veil_server_add(srv, &svc.base, rows, n, err, sizeof err), VEIL_OK);
    veil_server_free(srv);

    for (int c = 0; c < 3; c++) {
        memcpy(rows, vault_policy, n * sizeof *rows);
        size_t len = n;
        const char *want;
        if (c == 0) { /* a method without a row: the last row left out */
            len = n - 1;
            want = "has no policy row";
        } else if (c == 1) { /* the first method twice, the last not at all */
            rows[n - 1] = rows[0];
            want = "has no policy row (or more than one)";
        } else { /* a row for a method the service does not have */
            rows[n] = (veil_method_policy){"Backdoor", VEIL_PEER_ANYONE, VEIL_EXEC_INLINE};
            len = n + 1;
            want = "names unknown method Backdoor";
        }
        err[0] = '\0';
        ck_assert_int_eq(veil_server_new(&cfg, &srv, err, sizeof err), VEIL_OK);
        ck_assert_int_eq(veil_server_add(srv, &svc.base, rows, len, err, sizeof err),
                         VEIL_ERR_INTERNAL);
        ck_assert_msg(strstr(err, want), "case %d: %s", c, err);
        veil_server_free(srv);
    }
    free(rows);
}
END_TEST

/* Every server hosts exactly the services its tables say (Health answers for each by name). */
START_TEST(test_servers_host_their_tables)
{
    for (size_t s = 0; s < N_SERVERS; s++) {
        veil_channel *ch =
            h_channel(addr_of(&servers[s]), "svc/gateway", &grpc__health__v1__health__descriptor);
        for (size_t t = 0; t < n_tables(&servers[s]); t++) {
            Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
            Grpc__Health__V1__HealthCheckResponse *resp;
            veil_status st;
            req.service = (char *)servers[s].tables[t].desc->name;
            ck_assert_msg(veil_channel_call(ch, "Check", &req.base, NULL, 5000, &resp, &st) ==
                              VEIL_OK,
                          "%s does not host %s: %s", proc_of(servers[s].which)->name, req.service,
                          st.message);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        veil_channel_free(ch);
    }
}
END_TEST

/* The matrix itself: every method of every server, every caller. */
START_TEST(test_matrix)
{
    size_t counts[O_OTHER + 1] = {0}, calls = 0, methods = 0, bad = 0, skipped = 0;
    char *report = NULL;
    size_t report_len = 0;
    FILE *out = open_memstream(&report, &report_len);
    int64_t t0 = veil_now_ms();

    for (size_t s = 0; s < N_SERVERS; s++) {
        const struct server *sv = &servers[s];
        const h_proc *p = proc_of(sv->which);
        char health_addr[64];
        snprintf(health_addr, sizeof health_addr, "127.0.0.1:%d", S.health_port[sv->which]);
        for (size_t t = 0; t < n_tables(sv); t++) {
            const struct table *tb = &sv->tables[t];
            methods += tb->desc->n_methods;
            for (size_t c = 0; c < N_CALLERS; c++) {
                const struct caller *cl = &callers[c];
                if (cl->reach == R_PROBE && sv->admin_listener) {
                    skipped += tb->desc->n_methods; /* the health port is the public listener's */
                    continue;
                }
                /* one channel (one connection) per caller, reused for every method */
                veil_channel *ch = h_channel(cl->reach == R_PROBE ? health_addr : addr_of(sv),
                                             cl->identity, tb->desc);
                for (unsigned i = 0; i < tb->desc->n_methods; i++) {
                    const ProtobufCMethodDescriptor *m = &tb->desc->methods[i];
                    const veil_method_policy *r = row_of(tb, m->name);
                    ck_assert_ptr_nonnull(r);
                    char path[160];
                    snprintf(path, sizeof path, "/%s/%s", tb->desc->name, m->name);
                    ProtobufCMessage *req = empty_request(m), *resp = NULL;
                    veil_status st;
                    memset(&st, 0, sizeof st);
                    (void)veil_channel_call(ch, m->name, req, NULL, 5000, &resp, &st);
                    if (resp)
                        protobuf_c_message_free_unpacked(resp, NULL);
                    free(req);
                    enum outcome want = expected(sv, r, cl), got = observed(&st, path);
                    calls++;
                    counts[got]++;
                    if (got != want) {
                        bad++;
                        fprintf(out, "  %s%s -> %s at %s: expected %s, got %s (%s: %s)\n",
                                cl->identity, cl->reach == R_PROBE ? " (health port)" : "", path,
                                p->name, outcome_names[want], outcome_names[got],
                                veil_status_name(st.code), st.message);
                    }
                }
                veil_channel_free(ch);
            }
        }
    }
    fclose(out);
    fprintf(stderr,
            "authz: %zu methods x %zu callers = %zu calls in %lld ms: %zu allowed, %zu denied by "
            "policy, %zu denied for want of a certificate, %zu on health ports, %zu refused by "
            "TLS, %zu unimplemented\n",
            methods, N_CALLERS, calls, (long long)(veil_now_ms() - t0), counts[O_ALLOWED],
            counts[O_POLICY], counts[O_NO_CERT], counts[O_PROBE], counts[O_TRANSPORT],
            counts[O_UNSERVED]);
    ck_assert_uint_eq(calls + skipped, methods * N_CALLERS);
    if (bad)
        ck_abort_msg("%zu calls disagree with the policy tables:\n%s", bad, report);
    free(report);
}
END_TEST

/* An app the registry does not know gets past the dispatcher, and no further. */
START_TEST(test_unregistered_app_gets_nothing)
{
    static const char *const methods[] = {"BeginLogin", "CompleteLogin", "PollEvents"};
    for (size_t i = 0; i < 3; i++) {
        const ProtobufCMethodDescriptor *m = protobuf_c_service_descriptor_get_method_by_name(
            &veil__gateway__login__descriptor, methods[i]);
        ProtobufCMessage *req = empty_request(m), *resp = NULL;
        veil_status st;
        veil_err err = e2e_call(&S, "app/chat.wechat", &veil__gateway__login__descriptor,
                                methods[i], req, &resp, &st);
        free(req);
        ck_assert_int_eq(err, VEIL_ERR_DENIED);
        ck_assert_str_eq(st.message, "app is not registered");
    }
}
END_TEST

/* How many of the events name sub; every one must be addressed to app. */
static int events_naming(const Veil__Gateway__PollEventsResponse *ev, const char *app,
                         const char *sub)
{
    int n = 0;
    for (size_t i = 0; i < ev->n_events; i++) {
        const char *t = ev->events[i], *d1 = strchr(t, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
        ck_assert_ptr_nonnull(d2);
        char buf[8192];
        size_t len;
        ck_assert_int_eq(
            veil_b64url_decode(buf, sizeof buf - 1, d1 + 1, (size_t)(d2 - d1 - 1), &len), 0);
        buf[len] = '\0';
        json_error_t je;
        json_t *claims = json_loads(buf, 0, &je);
        ck_assert_ptr_nonnull(claims);
        ck_assert_str_eq(json_string_value(json_object_get(claims, "aud")), app);
        json_decref(claims);
        n += strstr(buf, sub) != NULL;
    }
    return n;
}

/*
 * App A cannot use app B's logins or events: not B's challenge (and trying
 * does not burn it), not a ticket made for B, not B's event stream (there is
 * no way to name B: the stream is the certificate's), not even with B's cursor.
 */
START_TEST(test_apps_kept_apart)
{
    const char *a = "chat.lianxin", *b = "shop.jiale";
    char id[19], *ticket;
    e2e_id_number("44010619880808123", id);
    vw_wallet *w = e2e_enrol(&S, id, "何敏");
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    unsigned char ch_b[32];

    /* A ticket naming A but answering B's challenge: the challenge is B's, not A's. */
    ck_assert_int_eq(e2e_challenge(&S, b, ch_b), VEIL_OK);
    ck_assert_int_eq(vw_ticket(w, a, ch_b, 32, veil_now_ms(), &ticket), VEIL_OK);
    ck_assert_int_eq(e2e_complete(&S, a, ticket, NULL, 0, &r, &st), VEIL_ERR_PRECONDITION);
    ck_assert_str_eq(st.message, "challenge is unknown, expired or already used");
    free(ticket);
    /* A ticket made for B, shown by A. */
    ck_assert_int_eq(vw_ticket(w, b, ch_b, 32, veil_now_ms(), &ticket), VEIL_OK);
    ck_assert_int_eq(e2e_complete(&S, a, ticket, NULL, 0, &r, &st), VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, "ticket was not made for this app");
    /* Neither attempt used B's challenge up. */
    ck_assert_int_eq(e2e_complete(&S, b, ticket, NULL, 0, &r, &st), VEIL_OK);
    char *sub_b = strdup(r->sub);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    free(ticket);
    ck_assert_int_eq(e2e_login(&S, a, w, NULL, 0, &r, &st), VEIL_OK);
    char *sub_a = strdup(r->sub);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* The citizen leaves B: B is told, A sees nothing of it, even from B's cursor. */
    e2e_unlink(&S, w, b);
    e2e_await_events();
    Veil__Gateway__PollEventsResponse *evb = e2e_poll(&S, b, NULL);
    ck_assert_int_eq(events_naming(evb, b, sub_b), 1);
    Veil__Gateway__PollEventsResponse *eva = e2e_poll(&S, a, NULL);
    ck_assert_int_eq(events_naming(eva, a, sub_b), 0);
    ck_assert_int_eq(events_naming(eva, a, sub_a), 0);
    protobuf_c_message_free_unpacked(&eva->base, NULL);
    /* B's own cursor means nothing at A: past A's end, it is refused, and shows nothing */
    Veil__Gateway__PollEventsRequest pr = VEIL__GATEWAY__POLL_EVENTS_REQUEST__INIT;
    pr.cursor = evb->cursor;
    eva = NULL;
    ck_assert_int_eq(e2e_call(&S, "app/chat.lianxin", &veil__gateway__login__descriptor,
                              "PollEvents", &pr.base, &eva, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "cursor is beyond the end of this app's events");
    ck_assert_ptr_null(eva);
    protobuf_c_message_free_unpacked(&evb->base, NULL);
    free(sub_a);
    free(sub_b);
    vw_wallet_free(w);
}
END_TEST

int main(void)
{
    const TTest *const tables[] = {test_every_method_has_one_policy_row, test_table_invariants,
                                   test_server_add_refuses_bad_tables, NULL};
    const TTest *const wire[] = {test_servers_host_their_tables, test_matrix,
                                 test_unregistered_app_gets_nothing, test_apps_kept_apart, NULL};
    const h_case cases[] = {{"tables", 0, NULL, NULL, NULL, NULL, tables},
                            {"wire", 300, stack_up, stack_down, NULL, NULL, wire},
                            {NULL}};
    return h_run_suite(h_suite("authz", cases));
}
