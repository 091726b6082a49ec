/*
 * veil/http.h - a small HTTP/1.1 server over libmicrohttpd.
 *
 *   static const veil_http_route routes[] = {
 *       {"GET", "/metrics", serve_metrics, 0},
 *       {"POST", "/token", serve_token, 16384},
 *   };
 *   veil_http_config cfg = {.addr = "0.0.0.0:9100", .routes = routes,
 *                           .n_routes = 2, .ctx = my_state};
 *   veil_http_server *srv;
 *   if (veil_http_start(&cfg, &srv, err, sizeof err) != VEIL_OK) ...
 *   ...
 *   veil_http_stop(srv);
 *
 * One thread per connection, so a handler may block (a long poll) as long as
 * it gives up when its owner is shutting down.  HTTPS is served by the
 * listener itself from a certificate and key file; with a client CA file the
 * listener also asks for (but does not require) a client certificate and
 * hands its verified URI SAN to the handler.  Limits are enforced before a
 * handler runs: header size (431), body size per route (413), unknown path
 * (404) and wrong method (405, with Allow).
 *
 * A handler answers exactly once through veil_http_respond* and may add
 * headers before that with veil_http_add_header; a handler that does not
 * answer gets a 500.  Every response carries X-Content-Type-Options: nosniff.
 */
#ifndef VEIL_HTTP_H
#define VEIL_HTTP_H

#include <stddef.h>

#include "veil/err.h"

typedef struct veil_http_server veil_http_server;
typedef struct veil_http_request veil_http_request;

/* Serves one request; ctx is veil_http_config.ctx. */
typedef void (*veil_http_handler)(void *ctx, veil_http_request *req);

typedef struct veil_http_route {
    const char *method; /* "GET", "POST", ...; HEAD is not served */
    const char *path;   /* exact match on the path (no query); a final '*' matches a prefix */
    veil_http_handler fn;
    size_t max_body;    /* bytes of request body accepted; 0 refuses any body */
} veil_http_route;

typedef struct veil_http_config {
    const char *addr;           /* "host:port" or "[v6]:port"; port 0 picks a free one */
    const char *cert_file;      /* PEM; with key_file: HTTPS, else plain HTTP */
    const char *key_file;       /* PEM, read once at start and wiped from memory */
    const char *client_ca_file; /* PEM; optional (HTTPS only): verify client certificates */
    const veil_http_route *routes;
    size_t n_routes;
    void *ctx;
    size_t max_header_bytes;    /* request line + headers; default 8192 */
    unsigned max_connections;   /* default 256 */
    unsigned per_ip_connections; /* default 0: no per-address limit */
    unsigned idle_timeout_s;    /* default 30 */
} veil_http_config;

/*
 * Starts listening and serving in background threads.  On VEIL_OK *out is
 * the server (stop it with veil_http_stop); on failure *out is NULL and
 * errbuf says why (unreadable files, address in use, bad address).
 */
veil_err veil_http_start(const veil_http_config *cfg, veil_http_server **out, char *errbuf,
                         size_t errlen) VEIL_WUR;

/* The port actually bound (useful with port 0). */
int veil_http_port(const veil_http_server *srv);

/* Whether the server serves HTTPS. */
int veil_http_is_tls(const veil_http_server *srv);

/*
 * Stops accepting, waits for the connections' threads (handlers blocked in a
 * long poll must return on their own) and frees the server.  NULL is a no-op.
 */
void veil_http_stop(veil_http_server *srv);

/* ---- reading a request (valid until the handler returns) ---- */

const char *veil_http_method(const veil_http_request *req);
/* The path without the query string, percent-decoded by libmicrohttpd. */
const char *veil_http_path(const veil_http_request *req);
/* A request header (case-insensitive name), or NULL. */
const char *veil_http_header(const veil_http_request *req, const char *name);
/* The body and its length (NULL and 0 when there is none). */
const char *veil_http_body(const veil_http_request *req, size_t *len);
/* The client's address as text ("127.0.0.1", "::1"); never NULL. */
const char *veil_http_remote_addr(const veil_http_request *req);
/*
 * The URI SAN of a client certificate that verified against the configured
 * client CA (e.g. "spiffe://veil/app/x"), or NULL when the client sent none,
 * it did not verify or it has no URI SAN.
 */
const char *veil_http_peer_uri(const veil_http_request *req);

/*
 * One parameter of the query string (where = VEIL_HTTP_QUERY) or of an
 * application/x-www-form-urlencoded body (VEIL_HTTP_FORM), percent-decoded.
 * Returns how many times the name occurs (0: *value NULL, 1: *value set),
 * more than 1 when repeated (*value is the first), or -1 when the request's
 * parameters are malformed (bad percent escape, a NUL byte, a name or value
 * that is not UTF-8 or holds an overlong form or a surrogate, a form body of
 * another content type).
 */
typedef enum veil_http_where { VEIL_HTTP_QUERY, VEIL_HTTP_FORM } veil_http_where;
int veil_http_param(veil_http_request *req, veil_http_where where, const char *name,
                    const char **value);

/* The names of all parameters there (for rejecting unknown or repeated ones). */
size_t veil_http_param_count(veil_http_request *req, veil_http_where where);
const char *veil_http_param_name(veil_http_request *req, veil_http_where where, size_t i);

/* ---- answering ---- */

/* Adds a response header (copied); returns VEIL_ERR_INVALID for CR/LF in either. */
veil_err veil_http_add_header(veil_http_request *req, const char *name, const char *value);

/* Answers with a body (copied; len bytes) of the given content type. */
void veil_http_respond(veil_http_request *req, int status, const char *content_type,
                       const void *body, size_t len);

/* Answers with a text/plain; charset=utf-8 body. */
void veil_http_respond_text(veil_http_request *req, int status, const char *text);

/* Answers with application/json (compact); does not take the reference. */
struct json_t;
void veil_http_respond_json(veil_http_request *req, int status, const struct json_t *json);

/* Whether the handler has answered already. */
int veil_http_responded(const veil_http_request *req);

/*
 * Percent-decodes [s, s+len) into a malloc'd NUL-terminated string ('+' is a
 * space when plus_space).  Returns NULL on a bad escape, a NUL byte or no
 * memory.  Exposed for parsing URLs built by clients.
 */
char *veil_http_unescape(const char *s, size_t len, int plus_space);

/* Percent-encodes s for a query value (unreserved characters kept); malloc'd. */
char *veil_http_escape(const char *s);

#endif
