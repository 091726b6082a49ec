/*
 * http.c - the HTTP/1.1 listener of veil/http.h over libmicrohttpd.
 *
 * libmicrohttpd calls access_cb several times per request: once when the
 * headers are in (where the route is chosen and the declared body size is
 * checked), once per piece of body, and once more with no body left, when
 * the handler runs.  One thread per connection keeps blocking handlers (long
 * polls) from stalling others.  TLS is libmicrohttpd's, through GnuTLS; the
 * client certificate is verified against the configured CA with GnuTLS too,
 * and only its URI SAN is handed on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "veil/codec.h"
#include "veil/http.h"
#include "veil/log.h"

#define DEFAULT_HEADER_BYTES 8192
#define DEFAULT_CONNECTIONS  256
#define DEFAULT_TIMEOUT_S    30
#define MAX_PARAMS           64

struct veil_http_server {
    struct MHD_Daemon *daemon;
    veil_http_config cfg;
    int port;
    int tls;
};

typedef struct param {
    char *name, *value;
} param;

typedef struct param_list {
    int parsed; /* 0 not yet, 1 ok, -1 malformed */
    param items[MAX_PARAMS];
    size_t n;
} param_list;

typedef struct hdr {
    char *name, *value;
    struct hdr *next;
} hdr;

struct veil_http_request {
    veil_http_server *srv;
    struct MHD_Connection *conn;
    const veil_http_route *route;
    const char *method, *path;
    char *body;
    size_t body_len, body_cap;
    int too_large; /* the body went over the route's limit */
    int early;     /* an answer was chosen before the body (404, 405, 413) */
    int status;
    char remote[INET6_ADDRSTRLEN];
    char *peer_uri;
    int peer_checked;
    param_list lists[2];
    hdr *headers;
    struct MHD_Response *response;
};

/* ---- small helpers ---- */

static void errf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    if (!buf || !len)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

static char *read_file(const char *path, size_t *len, int secret, char *errbuf, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    if (fd < 0) {
        errf(errbuf, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > 1 << 20) {
        errf(errbuf, errlen, "%s: empty or too large", path);
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size, got = 0;
    buf = secret ? sodium_malloc(n + 1) : malloc(n + 1);
    if (!buf) {
        errf(errbuf, errlen, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) {
            errf(errbuf, errlen, "%s: read failed", path);
            close(fd);
            if (secret) {
                sodium_free(buf);
            } else {
                free(buf);
            }
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *veil_http_unescape(const char *s, size_t len, int plus_space)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= len || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0) {
                free(out);
                return NULL;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c == '\0') {
            free(out);
            return NULL;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

char *veil_http_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *p = out;
    if (!out)
        return NULL;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
            *c == '-' || *c == '.' || *c == '_' || *c == '~') {
            *p++ = (char)*c;
        } else {
            *p++ = '%';
            *p++ = hex[*c >> 4];
            *p++ = hex[*c & 15];
        }
    }
    *p = '\0';
    return out;
}

/* ---- parameters ---- */

/*
 * Adds a decoded parameter; refuses (the whole request's parameters become
 * malformed) one that is not UTF-8 without NUL, overlong forms or surrogates:
 * the same rule as every gRPC string (veil_pb_strings_valid, issue 12 item 8).
 */
static int list_add(param_list *l, char *name, char *value)
{
    if (!name || !value || l->n == MAX_PARAMS || !veil_utf8_valid(name, strlen(name)) ||
        !veil_utf8_valid(value, strlen(value))) {
        free(name);
        free(value);
        return -1;
    }
    l->items[l->n].name = name;
    l->items[l->n].value = value;
    l->n++;
    return 0;
}

/* Splits a=b&c=d (already raw, still escaped) into the list. */
static int parse_urlencoded(param_list *l, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && s[end] != '&')
            end++;
        if (end > i) {
            const char *eq = memchr(s + i, '=', end - i);
            size_t klen = eq ? (size_t)(eq - (s + i)) : end - i;
            const char *v = eq ? eq + 1 : s + end;
            size_t vlen = eq ? (size_t)(s + end - v) : 0;
            if (list_add(l, veil_http_unescape(s + i, klen, 1), veil_http_unescape(v, vlen, 1)))
                return -1;
        }
        i = end + 1;
    }
    return 0;
}

static enum MHD_Result query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                size_t key_size, const char *value, size_t value_size)
{
    param_list *l = cls;
    (void)kind;
    if (l->parsed < 0)
        return MHD_NO;
    if (memchr(key, '\0', key_size) || (value && memchr(value, '\0', value_size))) {
        l->parsed = -1;
        return MHD_NO;
    }
    char *k = strndup(key, key_size), *v = strndup(value ? value : "", value ? value_size : 0);
    if (list_add(l, k, v))
        l->parsed = -1;
    return l->parsed < 0 ? MHD_NO : MHD_YES;
}

static param_list *params(veil_http_request *req, veil_http_where where)
{
    param_list *l = &req->lists[where == VEIL_HTTP_FORM];
    if (l->parsed)
        return l;
    l->parsed = 1;
    if (where == VEIL_HTTP_QUERY) {
        MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND, query_cb, l);
        return l;
    }
    const char *ct = veil_http_header(req, "Content-Type");
    size_t base = ct ? strcspn(ct, ";") : 0;
    while (base > 0 && ct[base - 1] == ' ')
        base--;
    if (!ct || base != strlen("application/x-www-form-urlencoded") ||
        strncasecmp(ct, "application/x-www-form-urlencoded", base) != 0) {
        l->parsed = req->body_len ? -1 : 1;
        return l;
    }
    if (req->body && memchr(req->body, '\0', req->body_len))
        l->parsed = -1;
    else if (parse_urlencoded(l, req->body ? req->body : "", req->body_len))
        l->parsed = -1;
    return l;
}

int veil_http_param(veil_http_request *req, veil_http_where where, const char *name,
                    const char **value)
{
    param_list *l = params(req, where);
    int count = 0;
    *value = NULL;
    if (l->parsed < 0)
        return -1;
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->items[i].name, name) == 0) {
            if (!count)
                *value = l->items[i].value;
            count++;
        }
    }
    return count;
}

size_t veil_http_param_count(veil_http_request *req, veil_http_where where)
{
    param_list *l = params(req, where);
    return l->parsed < 0 ? 0 : l->n;
}

const char *veil_http_param_name(veil_http_request *req, veil_http_where where, size_t i)
{
    param_list *l = params(req, where);
    return l->parsed < 0 || i >= l->n ? NULL : l->items[i].name;
}

/* ---- request accessors ---- */

const char *veil_http_method(const veil_http_request *req)
{
    return req->method;
}

const char *veil_http_path(const veil_http_request *req)
{
    return req->path;
}

const char *veil_http_header(const veil_http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *veil_http_body(const veil_http_request *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body_len ? req->body : NULL;
}

const char *veil_http_remote_addr(const veil_http_request *req)
{
    return req->remote;
}

/* The first URI SAN of a verified client certificate, or NULL. */
static char *peer_uri_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return NULL;
    gnutls_session_t session = (gnutls_session_t)ci->tls_session;
    unsigned status = 0, n = 0;
    if (gnutls_certificate_type_get(session) != GNUTLS_CRT_X509 ||
        gnutls_certificate_verify_peers2(session, &status) != GNUTLS_E_SUCCESS || status != 0)
        return NULL;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
    if (!certs || n == 0)
        return NULL;
    gnutls_x509_crt_t crt;
    char *uri = NULL;
    if (gnutls_x509_crt_init(&crt) != GNUTLS_E_SUCCESS)
        return NULL;
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == GNUTLS_E_SUCCESS) {
        for (unsigned i = 0; !uri; i++) {
            char name[512];
            size_t len = sizeof name - 1;
            int type = gnutls_x509_crt_get_subject_alt_name(crt, i, name, &len, NULL);
            if (type < 0)
                break;
            if (type == GNUTLS_SAN_URI && len < sizeof name && !memchr(name, '\0', len)) {
                name[len] = '\0';
                uri = strdup(name);
            }
        }
    }
    gnutls_x509_crt_deinit(crt);
    return uri;
}

const char *veil_http_peer_uri(const veil_http_request *req)
{
    veil_http_request *r = (veil_http_request *)req;
    if (!r->peer_checked) {
        r->peer_checked = 1;
        if (r->srv->tls && r->srv->cfg.client_ca_file)
            r->peer_uri = peer_uri_of(r->conn);
    }
    return r->peer_uri;
}

/* ---- answering ---- */

veil_err veil_http_add_header(veil_http_request *req, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return VEIL_ERR_INVALID;
    hdr *h = calloc(1, sizeof *h);
    if (!h)
        return VEIL_ERR_NOMEM;
    h->name = strdup(name);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        free(h);
        return VEIL_ERR_NOMEM;
    }
    h->next = req->headers;
    req->headers = h;
    return VEIL_OK;
}

void veil_http_respond(veil_http_request *req, int status, const char *content_type,
                       const void *body, size_t len)
{
    if (req->response)
        return;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return;
    if (content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    for (hdr *h = req->headers; h; h = h->next)
        MHD_add_response_header(r, h->name, h->value);
    req->response = r;
    req->status = status;
}

void veil_http_respond_text(veil_http_request *req, int status, const char *text)
{
    veil_http_respond(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

void veil_http_respond_json(veil_http_request *req, int status, const struct json_t *json)
{
    char *s = json_dumps((const json_t *)json, JSON_COMPACT);
    if (!s) {
        veil_http_respond_text(req, 500, "internal error\n");
        return;
    }
    veil_http_respond(req, status, "application/json", s, strlen(s));
    free(s);
}

int veil_http_responded(const veil_http_request *req)
{
    return req->response != NULL;
}

/* ---- the libmicrohttpd callbacks ---- */

static void request_free(veil_http_request *req)
{
    if (!req)
        return;
    free(req->body);
    free(req->peer_uri);
    for (int w = 0; w < 2; w++)
        for (size_t i = 0; i < req->lists[w].n; i++) {
            free(req->lists[w].items[i].name);
            free(req->lists[w].items[i].value);
        }
    while (req->headers) {
        hdr *h = req->headers;
        req->headers = h->next;
        free(h->name);
        free(h->value);
        free(h);
    }
    if (req->response)
        MHD_destroy_response(req->response);
    free(req);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    request_free(*con_cls);
    *con_cls = NULL;
}

static int route_match(const veil_http_route *r, const char *path)
{
    size_t n = strlen(r->path);
    if (n && r->path[n - 1] == '*')
        return strncmp(path, r->path, n - 1) == 0;
    return strcmp(path, r->path) == 0;
}

static void remote_of(struct MHD_Connection *conn, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, len, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

/* Picks the route, or an early answer (404, 405, 413) that skips the body. */
static void choose_route(veil_http_request *req)
{
    const veil_http_config *cfg = &req->srv->cfg;
    int path_known = 0;
    char allow[128] = "";
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const veil_http_route *r = &cfg->routes[i];
        if (!route_match(r, req->path))
            continue;
        path_known = 1;
        if (strcmp(r->method, req->method) == 0) {
            req->route = r;
            break;
        }
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof allow - used, "%s%s", used ? ", " : "", r->method);
    }
    if (req->route) {
        const char *cl = veil_http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || *end || n > req->route->max_body) {
                req->early = 1;
                veil_http_respond_text(req, 413, "request body too large\n");
            }
        }
        return;
    }
    req->early = 1;
    if (path_known) {
        (void)veil_http_add_header(req, "Allow", allow);
        veil_http_respond_text(req, 405, "method not allowed\n");
    } else {
        veil_http_respond_text(req, 404, "not found\n");
    }
}

static enum MHD_Result queue(veil_http_request *req)
{
    if (!req->response)
        veil_http_respond_text(req, 500, "internal error\n");
    if (!req->response)
        return MHD_NO;
    enum MHD_Result r = MHD_queue_response(req->conn, (unsigned)req->status, req->response);
    MHD_destroy_response(req->response);
    req->response = NULL;
    return r;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    veil_http_server *srv = cls;
    veil_http_request *req = *con_cls;
    (void)version;

    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->srv = srv;
        req->conn = conn;
        req->method = method;
        req->path = url;
        remote_of(conn, req->remote, sizeof req->remote);
        *con_cls = req;
        choose_route(req);
        if (req->early)
            return queue(req);
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (req->too_large)
            return MHD_YES;
        if (n > req->route->max_body - req->body_len || req->route->max_body == 0) {
            req->too_large = 1;
            free(req->body);
            req->body = NULL;
            req->body_len = 0;
            return MHD_YES;
        }
        if (req->body_len + n + 1 > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap : 1024;
            while (cap < req->body_len + n + 1)
                cap *= 2;
            char *b = realloc(req->body, cap);
            if (!b)
                return MHD_NO;
            req->body = b;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }
    if (req->too_large) {
        veil_http_respond_text(req, 413, "request body too large\n");
        return queue(req);
    }
    req->route->fn(srv->cfg.ctx, req);
    return queue(req);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    veil_log(VEIL_LOG_DEBUG, "http listener", VL_STR("detail", line), VL_END);
}

/* Parses "host:port" / "[v6]:port" into a socket address. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *sl)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof *ss);
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return -1;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof *s6;
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &s4->sin_addr) != 1)
        return -1;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *sl = sizeof *s4;
    return 0;
}

veil_err veil_http_start(const veil_http_config *cfg, veil_http_server **out, char *errbuf,
                         size_t errlen)
{
    veil_http_server *srv = NULL;
    char *cert = NULL, *key = NULL, *ca = NULL;
    size_t cert_len = 0, key_len = 0, ca_len = 0;
    struct sockaddr_storage ss;
    socklen_t sl;
    veil_err err = VEIL_ERR_INVALID;

    *out = NULL;
    if (!cfg->addr || parse_addr(cfg->addr, &ss, &sl) != 0) {
        errf(errbuf, errlen, "bad listen address %s", cfg->addr ? cfg->addr : "(none)");
        return VEIL_ERR_INVALID;
    }
    if (!cfg->cert_file != !cfg->key_file || (cfg->client_ca_file && !cfg->cert_file)) {
        errf(errbuf, errlen, "https needs both a certificate and a key file");
        return VEIL_ERR_INVALID;
    }
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (!cfg->routes[i].method || !cfg->routes[i].path || !cfg->routes[i].fn) {
            errf(errbuf, errlen, "route %zu is incomplete", i);
            return VEIL_ERR_INVALID;
        }
    if (cfg->cert_file) {
        if (sodium_init() < 0) {
            errf(errbuf, errlen, "libsodium failed to initialise");
            return VEIL_ERR_INTERNAL;
        }
        if (!(cert = read_file(cfg->cert_file, &cert_len, 0, errbuf, errlen)) ||
            !(key = read_file(cfg->key_file, &key_len, 1, errbuf, errlen)) ||
            (cfg->client_ca_file &&
             !(ca = read_file(cfg->client_ca_file, &ca_len, 0, errbuf, errlen))))
            goto out;
    }
    srv = calloc(1, sizeof *srv);
    if (!srv) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    srv->cfg = *cfg;
    srv->tls = cert != NULL;
    size_t mem = (cfg->max_header_bytes ? cfg->max_header_bytes : DEFAULT_HEADER_BYTES);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    struct MHD_OptionItem opts[16];
    size_t o = 0;
    opts[o++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &ss};
    opts[o++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed_cb, NULL};
    opts[o++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
    /* libmicrohttpd reads headers into this much memory and answers 431 beyond it. */
    opts[o++] =
        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)(mem + 1024), NULL};
    opts[o++] = (struct MHD_OptionItem){
        MHD_OPTION_CONNECTION_LIMIT,
        (intptr_t)(cfg->max_connections ? cfg->max_connections : DEFAULT_CONNECTIONS), NULL};
    opts[o++] = (struct MHD_OptionItem){
        MHD_OPTION_CONNECTION_TIMEOUT,
        (intptr_t)(cfg->idle_timeout_s ? cfg->idle_timeout_s : DEFAULT_TIMEOUT_S), NULL};
    if (cfg->per_ip_connections)
        opts[o++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                            (intptr_t)cfg->per_ip_connections, NULL};
    if (cert) {
        flags |= MHD_USE_TLS;
        opts[o++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, cert};
        opts[o++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, key};
        opts[o++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                            "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"};
        if (ca)
            opts[o++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, ca};
    }
    opts[o++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, srv, MHD_OPTION_ARRAY, opts,
                                   MHD_OPTION_END);
    if (!srv->daemon) {
        errf(errbuf, errlen, "cannot listen on %s (address in use, or bad certificate or key)",
             cfg->addr);
        err = VEIL_ERR_UNAVAILABLE;
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : 0;
    *out = srv;
    srv = NULL;
    err = VEIL_OK;
out:
    free(srv);
    free(cert);
    free(ca);
    if (key) {
        sodium_memzero(key, key_len);
        sodium_free(key);
    }
    return err;
}

int veil_http_port(const veil_http_server *srv)
{
    return srv->port;
}

int veil_http_is_tls(const veil_http_server *srv)
{
    return srv->tls;
}

void veil_http_stop(veil_http_server *srv)
{
    if (!srv)
        return;
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
