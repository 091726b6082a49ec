/*
 * token_bench.c - authorization code exchanges per second at the OpenID
 * Connect door's /token, with codes made beforehand (tests/bench/token_run).
 *
 *   token_bench HOST PORT CA CERT KEY CLIENT_ID REDIRECT_URI CODES_FILE THREADS
 *
 * CODES_FILE holds one "code verifier" pair per line.  THREADS keep-alive
 * HTTPS connections (OpenSSL, the app's client certificate:
 * tls_client_auth) each take the next unused pair and POST it, until none is
 * left.  Prints one line:
 *
 *   token_bench: exchanges=N ok=N errors=N seconds=S exchanges_per_s=R p50_ms=… p99_ms=…
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CODES 200000

static char **codes, **verifiers;
static size_t n_codes;
static _Atomic size_t next_code;
static _Atomic long ok_count, err_count;
static const char *host, *client_id, *redirect_uri;
static int port;
static SSL_CTX *ctx;
static double *lat_ms;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static SSL *connect_tls(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &sa.sin_addr) != 1)
        return NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, host);
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

/* Reads one HTTP/1.1 response with Content-Length; returns its status or -1. */
static int read_response(SSL *ssl)
{
    char buf[16384];
    size_t got = 0;
    for (;;) {
        int r = SSL_read(ssl, buf + got, (int)(sizeof buf - 1 - got));
        if (r <= 0)
            return -1;
        got += (size_t)r;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        char *cl = strcasestr(buf, "Content-Length:");
        size_t need = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
        if (got >= need) {
            int status = 0;
            sscanf(buf, "HTTP/1.1 %d", &status);
            return status;
        }
        if (got >= sizeof buf - 1)
            return -1;
    }
}

static void *worker(void *arg)
{
    (void)arg;
    SSL *ssl = connect_tls();
    char body[1024], req[2048];
    for (size_t i; (i = atomic_fetch_add(&next_code, 1)) < n_codes;) {
        if (!ssl && !(ssl = connect_tls())) {
            atomic_fetch_add(&err_count, 1);
            continue;
        }
        int bl = snprintf(body, sizeof body,
                          "grant_type=authorization_code&code=%s&redirect_uri=%s&code_verifier=%s"
                          "&client_id=%s",
                          codes[i], redirect_uri, verifiers[i], client_id);
        int rl = snprintf(req, sizeof req,
                          "POST /token HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                          "application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
                          host, port, bl, body);
        double t0 = now_s();
        int status = SSL_write(ssl, req, rl) == rl ? read_response(ssl) : -1;
        lat_ms[i] = (now_s() - t0) * 1000.0;
        if (status == 200) {
            atomic_fetch_add(&ok_count, 1);
        } else {
            atomic_fetch_add(&err_count, 1);
            if (status < 0) {
                SSL_free(ssl);
                ssl = NULL;
            }
        }
    }
    if (ssl)
        SSL_free(ssl);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: token_bench HOST PORT CA CERT KEY CLIENT_ID REDIRECT_URI "
                        "CODES_FILE THREADS\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    client_id = argv[6];
    redirect_uri = argv[7];
    int threads = atoi(argv[9]);
    FILE *f = fopen(argv[8], "r");
    if (!f || threads < 1 || threads > 256)
        return 2;
    codes = calloc(MAX_CODES, sizeof *codes);
    verifiers = calloc(MAX_CODES, sizeof *verifiers);
    char c[128], v[160];
    while (n_codes < MAX_CODES && fscanf(f, "%127s %159s", c, v) == 2) {
        codes[n_codes] = strdup(c);
        verifiers[n_codes++] = strdup(v);
    }
    fclose(f);
    lat_ms = calloc(n_codes ? n_codes : 1, sizeof *lat_ms);
    ctx = SSL_CTX_new(TLS_client_method());
    if (SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, argv[4]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[5], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    double t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double secs = now_s() - t0;
    qsort(lat_ms, n_codes, sizeof *lat_ms, cmp_double);
    printf("token_bench: exchanges=%zu ok=%ld errors=%ld seconds=%.2f exchanges_per_s=%.0f "
           "p50_ms=%.1f p99_ms=%.1f threads=%d\n",
           n_codes, atomic_load(&ok_count), atomic_load(&err_count), secs,
           (double)atomic_load(&ok_count) / secs, n_codes ? lat_ms[n_codes / 2] : 0.0,
           n_codes ? lat_ms[(size_t)((double)n_codes * 0.99)] : 0.0, threads);
    return atomic_load(&err_count) ? 1 : 0;
}
