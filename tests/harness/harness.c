/* harness.c - real processes, certificates and databases for the suites (harness.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "veil/codec.h"
#include "veil/keys.h"

const char *h_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "harness: %s is not set; run the suites through tests/run\n", name);
        abort();
    }
    return v;
}

void h_tls_for(h_tls *t, const char *identity)
{
    const char *certs = h_env("VEIL_TEST_CERTS");
    memset(t, 0, sizeof *t);
    snprintf(t->ca, sizeof t->ca, "%s/ca.crt", certs);
    t->cfg.ca_file = t->ca;
    if (strcmp(identity, "plaintext") == 0) {
        t->cfg.plaintext = 1;
        return;
    }
    if (strcmp(identity, "none") == 0)
        return;
    char base[256];
    if (strcmp(identity, "foreign") == 0) {
        snprintf(base, sizeof base, "foreign-svc-gateway");
    } else {
        snprintf(base, sizeof base, "%s", identity);
        for (char *p = base; *p; p++)
            if (*p == '/')
                *p = '-';
    }
    snprintf(t->cert, sizeof t->cert, "%s/%s.crt", certs, base);
    snprintf(t->key, sizeof t->key, "%s/%s.key", certs, base);
    t->cfg.cert_file = t->cert;
    t->cfg.key_file = t->key;
}

static int run_suite(Suite *s, enum fork_status fork)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, fork);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

int h_run_suite(Suite *s)
{
    return run_suite(s, CK_NOFORK);
}

int h_run_suite_forked(Suite *s)
{
    return run_suite(s, CK_FORK);
}

Suite *h_suite(const char *name, const h_case *cases)
{
    Suite *s = suite_create(name);
    for (const h_case *c = cases; c->name; c++) {
        TCase *tc = tcase_create(c->name);
        if (c->timeout > 0)
            tcase_set_timeout(tc, c->timeout);
        if (c->up || c->down)
            tcase_add_unchecked_fixture(tc, c->up, c->down);
        if (c->setup || c->teardown)
            tcase_add_checked_fixture(tc, c->setup, c->teardown);
        for (const TTest *const *t = c->tests; *t; t++)
            tcase_add_test(tc, *t);
        suite_add_tcase(s, tc);
    }
    return s;
}

const char *h_jws_header(const char *jws)
{
    static char header[1024];
    const char *dot = strchr(jws, '.');
    size_t n;
    ck_assert_msg(dot != NULL, "not a compact JWS: %.40s", jws);
    ck_assert_int_eq(veil_b64url_decode(header, sizeof header - 1, jws, (size_t)(dot - jws), &n),
                     0);
    header[n] = '\0';
    return header;
}

int h_timeout_scale(void)
{
    const char *v = getenv("VEIL_TEST_TIMEOUT_SCALE");
    int k = v ? atoi(v) : 1;
    return k >= 1 && k <= 100 ? k : 1;
}

void h_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void h_dump_log(const h_proc *p)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return;
    char line[4096];
    long count = 0;
    while (fgets(line, sizeof line, f))
        count++;
    rewind(f);
    long skip = count > 60 ? count - 60 : 0, i = 0;
    fprintf(stderr, "---- last lines of %s ----\n", p->log);
    while (fgets(line, sizeof line, f))
        if (i++ >= skip)
            fputs(line, stderr);
    fprintf(stderr, "----\n");
    fclose(f);
}

int h_log_contains(const h_proc *p, const char *text)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return 0;
    char line[8192];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

int h_spawn(h_proc *p, const char *binary, const char *identity, const char *const *env)
{
    const char *dir = h_env("VEIL_TEST_DIR"), *bin = h_env("VEIL_TEST_BIN");
    static unsigned seq;
    char portfile[512], exe[512];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", binary);
    unsigned n = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
    snprintf(portfile, sizeof portfile, "%s/%s-%d-%u.port", dir, binary, (int)getpid(), n);
    snprintf(p->log, sizeof p->log, "%s/%s-%d-%u.log", dir, binary, (int)getpid(), n);
    snprintf(exe, sizeof exe, "%s/%s", bin, binary);
    unlink(portfile);

    h_tls t;
    h_tls_for(&t, identity);
    p->pid = fork();
    if (p->pid < 0)
        return -1;
    if (p->pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
            close(fd);
        }
        setenv("VEIL_LISTEN_ADDR", "127.0.0.1:0", 1);
        setenv("VEIL_PORT_FILE", portfile, 1);
        setenv("VEIL_LOG_LEVEL", "info", 0);
        if (t.cfg.plaintext) {
            setenv("VEIL_DEV_PLAINTEXT", "true", 1);
        } else {
            setenv("VEIL_TLS_CA", t.ca, 1);
            setenv("VEIL_TLS_CERT", t.cert, 1);
            setenv("VEIL_TLS_KEY", t.key, 1);
        }
        for (const char *const *e = env; e && *e; e++) {
            char name[256];
            const char *eq = strchr(*e, '=');
            if (!eq || (size_t)(eq - *e) >= sizeof name)
                continue;
            memcpy(name, *e, (size_t)(eq - *e));
            name[eq - *e] = '\0';
            setenv(name, eq + 1, 1);
        }
        /* e.g. tests/valgrind/wrap: runs the service under a checker */
        const char *wrapper = getenv("VEIL_TEST_WRAPPER");
        if (wrapper && *wrapper)
            execl(wrapper, wrapper, exe, "serve", (char *)NULL);
        else
            execl(exe, exe, "serve", (char *)NULL);
        fprintf(stderr, "harness: cannot exec %s: %s\n", wrapper ? wrapper : exe, strerror(errno));
        _exit(127);
    }
    /* Wait for the port file, then for SERVING. */
    int scale = h_timeout_scale();
    for (int i = 0; i < 1000 * scale; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int ok = fscanf(f, "%d", &p->port) == 1;
            fclose(f);
            if (ok && p->port > 0)
                break;
        }
        int status;
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            fprintf(stderr, "harness: %s exited during start-up (status %d)\n", binary,
                    p->exit_status);
            h_dump_log(p);
            p->pid = 0;
            return -1;
        }
        h_sleep_ms(20);
    }
    if (p->port <= 0) {
        fprintf(stderr, "harness: %s did not report a port\n", binary);
        h_dump_log(p);
        h_kill(p);
        return -1;
    }
    snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", p->port);
    const char *probe = t.cfg.plaintext ? "plaintext" : "svc/gateway";
    for (int i = 0; i < 500 * scale; i++) {
        if (h_health(p->addr, probe) == 1)
            return 0;
        h_sleep_ms(20);
    }
    fprintf(stderr, "harness: %s never reported SERVING\n", binary);
    h_dump_log(p);
    h_kill(p);
    return -1;
}

static int wait_exit(h_proc *p, int timeout_ms)
{
    int status;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        h_sleep_ms(10);
    }
    return -2;
}

int h_stop(h_proc *p)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    int rc = wait_exit(p, 30000 * h_timeout_scale());
    if (rc == -2) {
        fprintf(stderr, "harness: %s did not stop on SIGTERM\n", p->name);
        h_dump_log(p);
        h_kill(p);
        return -1;
    }
    if (rc != 0)
        h_dump_log(p);
    return rc;
}

void h_kill(h_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

veil_channel *h_channel(const char *addr, const char *identity,
                        const ProtobufCServiceDescriptor *svc)
{
    h_tls t;
    char err[512];
    veil_channel *ch = NULL;
    h_tls_for(&t, identity);
    if (t.cfg.plaintext)
        t.cfg.dev_identity = NULL;
    if (veil_channel_new(addr, &t.cfg, svc, NULL, &ch, err, sizeof err) != VEIL_OK) {
        fprintf(stderr, "harness: channel to %s as %s: %s\n", addr, identity, err);
        abort();
    }
    return ch;
}

int h_health(const char *addr, const char *identity)
{
    veil_channel *ch = h_channel(addr, identity, &grpc__health__v1__health__descriptor);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    veil_status st;
    int rc = -1;
    if (veil_channel_call(ch, "Check", &req.base, NULL, 1000, &resp, &st) == VEIL_OK) {
        rc = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    veil_channel_free(ch);
    return rc;
}

static PGconn *super_conn(const char *dbname)
{
    char ci[1024];
    snprintf(ci, sizeof ci, "host=%s user=veil dbname=%s", h_env("VEIL_TEST_PGHOST"), dbname);
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: cannot connect to the test cluster: %s", PQerrorMessage(c));
        abort();
    }
    return c;
}

char *h_db_create(const char *prefix)
{
    unsigned char rnd[6];
    char hex[13], name[128], sql[256];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    snprintf(name, sizeof name, "%s_%s", prefix, hex);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PGconn *c = super_conn("postgres");
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "harness: %s failed: %s", sql, PQerrorMessage(c));
        abort();
    }
    PQclear(r);
    PQfinish(c);
    char *ci = malloc(1024);
    snprintf(ci, 1024, "host=%s user=veil dbname=%s", h_env("VEIL_TEST_PGHOST"), name);
    return ci;
}

int h_db_exec(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        rc = (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK) ? 0
                                                                                             : -1;
        if (rc)
            fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}

/* Runs `deploy/local/pgcluster <verb>` on the test cluster; aborts when it fails. */
/* Runs deploy/local/pgcluster VERB on the test cluster; 0 on success, else after saying so. */
static int pgcluster_run(const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/deploy/local/pgcluster %s %s", h_env("VEIL_SOURCE_DIR"), verb,
             h_env("VEIL_TEST_PGDIR"));
    if (system(cmd) == 0)
        return 0;
    fprintf(stderr, "harness: %s failed\n", cmd);
    return -1;
}

static void pgcluster(const char *verb)
{
    if (pgcluster_run(verb) != 0)
        abort();
}

void h_pg_restart(void)
{
    pgcluster("restart");
}

void h_pg_crash(void)
{
    pgcluster("crash");
}

void h_pg_start(void)
{
    pgcluster("start");
}

void h_pg_running(void)
{
    pgcluster_run("start");
}

char *h_tempdir(const char *prefix)
{
    char *path = malloc(1024);
    snprintf(path, 1024, "%s/%s.XXXXXX", h_env("VEIL_TEST_DIR"), prefix);
    if (!mkdtemp(path))
        abort();
    return path;
}

void h_keyfile(const char *dir, const char *purpose, unsigned version)
{
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/%s-%u.key", dir, purpose, version);
    if (veil_key_generate_file(path, err, sizeof err) != VEIL_OK) {
        fprintf(stderr, "harness: %s\n", err);
        abort();
    }
}

#include <arpa/inet.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netinet/in.h>
#include <sys/socket.h>

int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

int h_raw_call(const char *addr, const char *identity, const char *path, const void *bytes,
               size_t len, int timeout_ms, char *message, size_t msglen)
{
    h_tls t;
    h_tls_for(&t, identity);
    grpc_init();
    grpc_channel_credentials *creds;
    char *ca = NULL, *cert = NULL, *key = NULL, err[256];
    if (t.cfg.plaintext) {
        creds = grpc_insecure_credentials_create();
    } else {
        if (veil_pem_read(t.ca, &ca, err, sizeof err) != VEIL_OK)
            abort();
        if (t.cfg.cert_file && (veil_pem_read(t.cert, &cert, err, sizeof err) != VEIL_OK ||
                                veil_pem_read(t.key, &key, err, sizeof err) != VEIL_OK))
            abort();
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    }
    grpc_arg args[] = {{GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = 64 << 20}}};
    grpc_channel_args cargs = {1, args};
    grpc_channel *ch = grpc_channel_create(addr, creds, &cargs);
    grpc_channel_credentials_release(creds);
    veil_pem_free(ca);
    veil_pem_free(cert);
    veil_pem_free(key);

    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice method = grpc_slice_from_copied_string(path);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                               deadline, NULL);
    grpc_slice_unref(method);
    grpc_slice s = grpc_slice_from_copied_buffer(bytes, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    void *tag = &status;
    if (grpc_call_start_batch(call, ops, 6, tag, NULL) == GRPC_CALL_OK)
        grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (message) {
        size_t n =
            GRPC_SLICE_LENGTH(details) < msglen - 1 ? GRPC_SLICE_LENGTH(details) : msglen - 1;
        memcpy(message, GRPC_SLICE_START_PTR(details), n);
        message[n] = '\0';
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_byte_buffer_destroy(send);
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return (int)status;
}

void h_expect_policy(const char *addr, const char *identity, const char *path, enum h_policy want)
{
    char msg[256] = "";
    int code = h_raw_call(addr, identity, path, "", 0, 5000, msg, sizeof msg);
    int ok = want == H_ALLOWED   ? code != GRPC_STATUS_PERMISSION_DENIED
             : want == H_REFUSED ? code == GRPC_STATUS_PERMISSION_DENIED
                                 : code == GRPC_STATUS_UNAVAILABLE;
    ck_assert_msg(ok, "%s as %s: %d %s", path, identity, code, msg);
}
