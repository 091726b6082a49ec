/*
 * check_http.c - the HTTP listener of veil/http.h: routing, parameters,
 * size limits, headers, HTTPS with and without a client certificate, and a
 * clean stop while a handler is blocked.  Plain HTTP is driven over a raw
 * socket (so malformed requests can be sent byte for byte); HTTPS by curl.
 */
#include <arpa/inet.h>
#include <check.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "veil/http.h"

static _Atomic int blocked_until_stop;

static void echo(void *ctx, veil_http_request *req)
{
    const char *v = NULL;
    json_t *j = json_object();
    int n = veil_http_param(req, VEIL_HTTP_QUERY, "q", &v);
    json_object_set_new(j, "ctx", json_string(ctx));
    json_object_set_new(j, "method", json_string(veil_http_method(req)));
    json_object_set_new(j, "path", json_string(veil_http_path(req)));
    json_object_set_new(j, "q_count", json_integer(n));
    if (v)
        json_object_set_new(j, "q", json_string(v));
    n = veil_http_param(req, VEIL_HTTP_FORM, "f", &v);
    json_object_set_new(j, "f_count", json_integer(n));
    if (v)
        json_object_set_new(j, "f", json_string(v));
    size_t len;
    const char *body = veil_http_body(req, &len);
    json_object_set_new(j, "body_len", json_integer((json_int_t)len));
    (void)body;
    json_object_set_new(j, "remote", json_string(veil_http_remote_addr(req)));
    const char *peer = veil_http_peer_uri(req);
    if (peer)
        json_object_set_new(j, "peer", json_string(peer));
    const char *h = veil_http_header(req, "x-test");
    if (h)
        json_object_set_new(j, "x_test", json_string(h));
    ck_assert_int_eq(veil_http_add_header(req, "X-Bad", "a\r\nInjected: 1"), VEIL_ERR_INVALID);
    ck_assert_int_eq(veil_http_add_header(req, "Cache-Control", "no-store"), VEIL_OK);
    veil_http_respond_json(req, 200, j);
    json_decref(j);
}

static void silent(void *ctx, veil_http_request *req)
{
    (void)ctx;
    (void)req; /* answers nothing: the listener must send a 500 */
}

static void wait_stop(void *ctx, veil_http_request *req)
{
    (void)ctx;
    while (!atomic_load(&blocked_until_stop))
        usleep(10000);
    veil_http_respond_text(req, 200, "released\n");
}

static const veil_http_route routes[] = {
    {"GET", "/echo", echo, 0},     {"POST", "/echo", echo, 64},     {"GET", "/prefix/*", echo, 0},
    {"GET", "/silent", silent, 0}, {"GET", "/block", wait_stop, 0},
};

static veil_http_server *start(const char *cert, const char *key, const char *ca)
{
    veil_http_config cfg = {.addr = "127.0.0.1:0",
                            .cert_file = cert,
                            .key_file = key,
                            .client_ca_file = ca,
                            .routes = routes,
                            .n_routes = sizeof routes / sizeof routes[0],
                            .ctx = "the-ctx",
                            .max_header_bytes = 2048};
    veil_http_server *srv = NULL;
    char err[256];
    veil_err e = veil_http_start(&cfg, &srv, err, sizeof err);
    ck_assert_msg(e == VEIL_OK, "start: %s", err);
    ck_assert_int_gt(veil_http_port(srv), 0);
    return srv;
}

/* Sends raw bytes, reads the whole answer (the request asks to close). */
static char *raw(int port, const char *request, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    size_t sent = 0;
    while (sent < len) {
        ssize_t w = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may close early on a refused body */
        sent += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    size_t cap = 65536, got = 0;
    char *buf = calloc(1, cap);
    ssize_t r;
    while (got < cap - 1 && (r = recv(fd, buf + got, cap - 1 - got, 0)) > 0)
        got += (size_t)r;
    close(fd);
    return buf;
}

static char *get(int port, const char *target, const char *extra)
{
    char req[4096];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n",
                     target, extra ? extra : "");
    return raw(port, req, (size_t)n);
}

static int status_of(const char *resp)
{
    int s = 0;
    ck_assert_msg(sscanf(resp, "HTTP/1.1 %d", &s) == 1, "no status line in: %.200s", resp);
    return s;
}

static json_t *json_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(b);
    json_error_t je;
    json_t *j = json_loads(b + 4, 0, &je);
    ck_assert_msg(j != NULL, "not json: %s", b + 4);
    return j;
}

START_TEST(test_routes_and_params)
{
    veil_http_server *srv = start(NULL, NULL, NULL);
    int port = veil_http_port(srv);
    ck_assert(!veil_http_is_tls(srv));

    char *r = get(port, "/echo?q=a%20b+c&other=1", "X-Test: hello\r\n");
    ck_assert_int_eq(status_of(r), 200);
    ck_assert_ptr_nonnull(strstr(r, "Content-Type: application/json"));
    ck_assert_ptr_nonnull(strstr(r, "X-Content-Type-Options: nosniff"));
    ck_assert_ptr_nonnull(strstr(r, "Cache-Control: no-store"));
    ck_assert_ptr_null(strstr(r, "Injected"));
    json_t *j = json_of(r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "ctx")), "the-ctx");
    ck_assert_str_eq(json_string_value(json_object_get(j, "path")), "/echo");
    ck_assert_str_eq(json_string_value(json_object_get(j, "q")), "a b c");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "q_count")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(j, "remote")), "127.0.0.1");
    ck_assert_str_eq(json_string_value(json_object_get(j, "x_test")), "hello");
    ck_assert_ptr_null(json_object_get(j, "peer"));
    json_decref(j);
    free(r);

    /* a repeated parameter is counted, so a handler can refuse it */
    r = get(port, "/echo?q=1&q=2", NULL);
    j = json_of(r);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "q_count")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(j, "q")), "1");
    json_decref(j);
    free(r);

    /* an encoded NUL makes the parameters malformed */
    r = get(port, "/echo?q=a%00b", NULL);
    j = json_of(r);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "q_count")), -1);
    json_decref(j);
    free(r);
    /* so do bytes that are not UTF-8, overlong forms and surrogates, in a value or a name */
    static const char *const not_utf8[] = {"/echo?q=a%FFb", "/echo?q=%C0%AE", "/echo?q=%E0%80%AE",
                                           "/echo?q=%ED%A0%80", "/echo?%ED%BF%BF=1&q=x"};
    for (size_t i = 0; i < sizeof not_utf8 / sizeof not_utf8[0]; i++) {
        r = get(port, not_utf8[i], NULL);
        j = json_of(r);
        ck_assert_msg(json_integer_value(json_object_get(j, "q_count")) == -1, "%s", not_utf8[i]);
        json_decref(j);
        free(r);
    }
    /* while a character outside ASCII is a character */
    r = get(port, "/echo?q=%E7%8E%8B", NULL);
    j = json_of(r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "q")), "王");
    json_decref(j);
    free(r);

    /* prefix routes */
    r = get(port, "/prefix/any/thing", NULL);
    ck_assert_int_eq(status_of(r), 200);
    j = json_of(r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "path")), "/prefix/any/thing");
    json_decref(j);
    free(r);

    /* unknown path, wrong method */
    r = get(port, "/nope", NULL);
    ck_assert_int_eq(status_of(r), 404);
    free(r);
    const char *del = "DELETE /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    r = raw(port, del, strlen(del));
    ck_assert_int_eq(status_of(r), 405);
    ck_assert_ptr_nonnull(strstr(r, "Allow: GET, POST"));
    free(r);

    /* a handler that answers nothing yields a 500, not a hang */
    r = get(port, "/silent", NULL);
    ck_assert_int_eq(status_of(r), 500);
    free(r);
    veil_http_stop(srv);
}
END_TEST

START_TEST(test_forms_and_limits)
{
    veil_http_server *srv = start(NULL, NULL, NULL);
    int port = veil_http_port(srv);
    char req[8192];

    const char *form = "f=x%2By+z&g=";
    int n = snprintf(req, sizeof req,
                     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     "application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     strlen(form), form);
    char *r = raw(port, req, (size_t)n);
    ck_assert_int_eq(status_of(r), 200);
    json_t *j = json_of(r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "f")), "x+y z");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "body_len")), (json_int_t)strlen(form));
    json_decref(j);
    free(r);

    /* a form parameter of a body that is not a form is malformed */
    n = snprintf(req, sizeof req,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 7\r\nConnection: close\r\n\r\n{\"f\":1}");
    r = raw(port, req, (size_t)n);
    j = json_of(r);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "f_count")), -1);
    json_decref(j);
    free(r);

    /* a bad percent escape in a form is malformed */
    n = snprintf(req, sizeof req,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 "application/x-www-form-urlencoded\r\nContent-Length: 4\r\n"
                 "Connection: close\r\n\r\nf=%%G");
    r = raw(port, req, (size_t)n);
    j = json_of(r);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "f_count")), -1);
    json_decref(j);
    free(r);

    /* over the route's body limit, declared: 413 before the body is read */
    n = snprintf(req, sizeof req,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n"
                 "Connection: close\r\n\r\n%065d",
                 0);
    r = raw(port, req, (size_t)n);
    ck_assert_int_eq(status_of(r), 413);
    free(r);

    /* over the limit, chunked (no length announced): 413 too */
    char chunk[200];
    memset(chunk, 'a', 100);
    chunk[100] = '\0';
    n = snprintf(req, sizeof req,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 "Connection: close\r\n\r\n64\r\n%s\r\n0\r\n\r\n",
                 chunk);
    r = raw(port, req, (size_t)n);
    ck_assert_int_eq(status_of(r), 413);
    free(r);

    /* a body where the route takes none */
    n = snprintf(req, sizeof req,
                 "GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                 "Connection: close\r\n\r\nabc");
    r = raw(port, req, (size_t)n);
    ck_assert_int_eq(status_of(r), 413);
    free(r);

    /* headers beyond max_header_bytes: refused by the listener */
    char big[4000];
    memset(big, 'h', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char extra[4100];
    snprintf(extra, sizeof extra, "X-Big: %s\r\n", big);
    r = get(port, "/echo", extra);
    int s = status_of(r);
    ck_assert_msg(s == 431 || s == 413 || s == 414, "status %d", s);
    free(r);

    /* and the listener still serves afterwards */
    r = get(port, "/echo?q=ok", NULL);
    ck_assert_int_eq(status_of(r), 200);
    free(r);
    veil_http_stop(srv);
}
END_TEST

START_TEST(test_bad_config)
{
    veil_http_server *srv = (veil_http_server *)1;
    char err[256];
    veil_http_config cfg = {.addr = "127.0.0.1:notaport", .routes = routes, .n_routes = 1};
    ck_assert_int_eq(veil_http_start(&cfg, &srv, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_null(srv);
    ck_assert_ptr_nonnull(strstr(err, "bad listen address"));

    cfg.addr = "127.0.0.1:0";
    cfg.cert_file = "/nonexistent.crt";
    ck_assert_int_eq(veil_http_start(&cfg, &srv, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "both a certificate and a key"));

    cfg.key_file = "/nonexistent.key";
    ck_assert_int_ne(veil_http_start(&cfg, &srv, err, sizeof err), VEIL_OK);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent.crt"));

    /* the same port twice */
    veil_http_server *a = start(NULL, NULL, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", veil_http_port(a));
    veil_http_config again = {.addr = addr, .routes = routes, .n_routes = 1};
    ck_assert_int_eq(veil_http_start(&again, &srv, err, sizeof err), VEIL_ERR_UNAVAILABLE);
    ck_assert_ptr_null(srv);
    veil_http_stop(a);
    veil_http_stop(NULL);
}
END_TEST

/* Runs curl; returns its stdout (malloc'd) and the exit status in *rc. */
static char *curl(const char *const *argv, int *rc)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execvp("curl", (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t cap = 65536, got = 0;
    char *buf = calloc(1, cap);
    ssize_t r;
    while (got < cap - 1 && (r = read(fds[0], buf + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

START_TEST(test_https_and_client_certificates)
{
    const char *certs = h_env("VEIL_TEST_CERTS");
    char cert[512], key[512], ca[512], url[128], app_cert[512], app_key[512], foreign[512],
        foreign_key[512];
    snprintf(cert, sizeof cert, "%s/svc-gateway.crt", certs);
    snprintf(key, sizeof key, "%s/svc-gateway.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.crt", certs);
    snprintf(app_cert, sizeof app_cert, "%s/app-chat.wechat.crt", certs);
    snprintf(app_key, sizeof app_key, "%s/app-chat.wechat.key", certs);
    snprintf(foreign, sizeof foreign, "%s/foreign-svc-gateway.crt", certs);
    snprintf(foreign_key, sizeof foreign_key, "%s/foreign-svc-gateway.key", certs);

    veil_http_server *srv = start(cert, key, ca);
    ck_assert(veil_http_is_tls(srv));
    snprintf(url, sizeof url, "https://localhost:%d/echo?q=tls", veil_http_port(srv));
    int rc;

    /* no client certificate: served, no peer */
    const char *plain[] = {"curl", "-sS", "--cacert", ca, url, NULL};
    char *out = curl(plain, &rc);
    ck_assert_int_eq(rc, 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "q")), "tls");
    ck_assert_ptr_null(json_object_get(j, "peer"));
    json_decref(j);
    free(out);

    /* the app's certificate: its URI SAN */
    const char *withcert[] = {"curl",   "-sS",   "--cacert", ca,  "--cert",
                              app_cert, "--key", app_key,    url, NULL};
    out = curl(withcert, &rc);
    ck_assert_int_eq(rc, 0);
    j = json_loads(out, 0, &je);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "peer")),
                     "spiffe://veil/app/chat.wechat");
    json_decref(j);
    free(out);

    /* a certificate from another CA: not a peer identity */
    const char *foreigncert[] = {"curl",  "-sS",   "--cacert",  ca,  "--cert",
                                 foreign, "--key", foreign_key, url, NULL};
    out = curl(foreigncert, &rc);
    if (rc == 0) {
        j = json_loads(out, 0, &je);
        ck_assert_ptr_nonnull(j);
        ck_assert_ptr_null(json_object_get(j, "peer"));
        json_decref(j);
    } /* or the handshake was refused outright: equally not an identity */
    free(out);

    /* plain HTTP to the TLS port is not served */
    char plainurl[128];
    snprintf(plainurl, sizeof plainurl, "http://127.0.0.1:%d/echo", veil_http_port(srv));
    const char *downgrade[] = {"curl", "-s",           "-o",     "/dev/null",
                               "-w",   "%{http_code}", plainurl, NULL};
    out = curl(downgrade, &rc);
    ck_assert(rc != 0 || strcmp(out, "200") != 0);
    free(out);
    veil_http_stop(srv);
}
END_TEST

static int block_port;

static void *blocked_request(void *arg)
{
    (void)arg;
    return get(block_port, "/block", NULL);
}

START_TEST(test_blocking_handler_and_stop)
{
    veil_http_server *srv = start(NULL, NULL, NULL);
    block_port = veil_http_port(srv);
    atomic_store(&blocked_until_stop, 0);
    pthread_t t;
    pthread_create(&t, NULL, blocked_request, NULL);
    usleep(100000);
    /* while /block waits, another connection is served */
    char *r = get(block_port, "/echo?q=meanwhile", NULL);
    ck_assert_int_eq(status_of(r), 200);
    free(r);
    atomic_store(&blocked_until_stop, 1);
    void *blocked;
    pthread_join(t, &blocked);
    ck_assert_int_eq(status_of(blocked), 200);
    ck_assert_ptr_nonnull(strstr(blocked, "released"));
    free(blocked);
    veil_http_stop(srv);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_routes_and_params,
                                  test_forms_and_limits,
                                  test_bad_config,
                                  test_https_and_client_certificates,
                                  test_blocking_handler_and_stop,
                                  NULL};
    const h_case cases[] = {{"http", 60, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("http", cases));
}
