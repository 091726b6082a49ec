/*
 * oidc.h - the OpenID Connect door of the gateway.
 *
 * oidc.c is the HTTP door (discovery, JWKS, /authorize and its page, /token,
 * /userinfo, SET polling) over veil/http.h; it only translates HTTP to the
 * login requests of loginreq.c and back.  loginreq.c holds what the browser
 * and the phone share: a login request created at /authorize, fetched,
 * approved or denied by the phone over the Wallet API (where the one login
 * function, gw_login_run, runs), and its authorization code.  jose.c signs
 * RS256 and verifies private_key_jwt client assertions.
 */
#ifndef VEIL_GATEWAY_OIDC_H
#define VEIL_GATEWAY_OIDC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "veil/common.pb-c.h"
#include "veil/err.h"
#include "veil/rpc.h"

struct gateway;
struct veil_service_ctx;

/* ---- jose.c ---- */

typedef struct gw_rsa gw_rsa;
/* Loads an RSA private key (PEM, >= 2048 bits); its kid is derived from the modulus. */
veil_err gw_rsa_load(const char *path, gw_rsa **out, char *errbuf, size_t errlen) VEIL_WUR;
void gw_rsa_free(gw_rsa *r);
/* The public JWK (kty RSA, alg RS256, use sig). */
json_t *gw_rsa_jwk(const gw_rsa *r);
/* Signs claims as a compact JWS {"alg":"RS256","kid":...,"typ":typ}; *out malloc'd. */
veil_err gw_rsa_sign(const gw_rsa *r, const char *typ, const json_t *claims, char **out) VEIL_WUR;
/* How many keys of a JWK set can verify (OKP/Ed25519, RSA >= 2048 bits); -1 if malformed. */
int gw_jwks_usable(const char *jwks_text);
/*
 * Verifies a compact JWS (EdDSA or RS256) with a key of the JWK set (the
 * header's kid when it names one); *claims is its payload (json_decref).
 * VEIL_ERR_INVALID: malformed; VEIL_ERR_UNAUTHENTICATED: no key verifies it.
 */
veil_err gw_jwt_verify_jwks(const char *jwks_text, const char *jwt, json_t **claims) VEIL_WUR;

/* ---- oidc.c: the HTTP door ---- */

typedef struct gw_oidc_config {
    const char *listen;     /* host:port; empty: no OpenID Connect door */
    const char *issuer;     /* the issuer URL; default scheme://127.0.0.1:<port> */
    const char *cert, *key; /* HTTPS; default the gateway's own TLS files */
    const char *rs256_key;  /* RSA private key (PEM) for RS256 ID tokens; empty: EdDSA only */
    int64_t request_ttl_s;  /* how long the login page waits for the phone */
    int64_t id_token_ttl_s, access_token_ttl_s;
    int64_t rate_per_addr, rate_per_client; /* requests a minute at /authorize and /token */
} gw_oidc_config;

/* Starts the HTTP listener when cfg->listen is set (no-op otherwise); gw_oidc_stop undoes it. */
veil_err gw_oidc_start(struct gateway *gw, const struct veil_service_ctx *ctx,
                       const gw_oidc_config *cfg, char *errbuf, size_t errlen) VEIL_WUR;
void gw_oidc_stop(struct gateway *gw);
/* The bound port (0 when the door is closed). */
int gw_oidc_port(const struct gateway *gw);

/* Whether a redirect URI may be registered: https, or http on a loopback host; no fragment. */
int gw_oidc_redirect_uri_ok(const char *uri);

/* ---- loginreq.c: the login requests ---- */

#define GW_SECRET_TEXT 44 /* 32 random bytes as unpadded base64url, plus NUL */
#define GW_CODE_TTL_S  60

/* A login request as /authorize records it. */
typedef struct gw_login_request {
    char app_id[65];
    char redirect_uri[513];
    char state[513];
    char nonce[513];
    char code_challenge[64];
    unsigned scope;
    char binding_code[4];
    unsigned char challenge[32];
    char status[12]; /* pending, approved, denied, failed; "expired" when read after expiry */
    int64_t expires_at_ms;
    unsigned char poll_pk[32];
} gw_login_request;

/*
 * Creates a login request (its challenge recorded for the app as BeginLogin
 * does); *req is filled in (binding code, challenge, expiry), and id and poll
 * receive its two secrets: the id goes into the QR code, the poll token only
 * into the browser's page.
 */
veil_err gw_loginreq_create(struct gateway *gw, gw_login_request *req, int64_t ttl_ms,
                            char id[GW_SECRET_TEXT], char poll[GW_SECRET_TEXT]) VEIL_WUR;

/*
 * What the page learns with its poll token: the request, and when approved
 * the authorization code (opened with the poll token) into code.
 * VEIL_ERR_NOT_FOUND when there is no such request.
 */
veil_err gw_loginreq_poll(struct gateway *gw, const char *poll, gw_login_request *req,
                          char code[GW_SECRET_TEXT]) VEIL_WUR;

/*
 * The login page's card form (issue 17): the request named by id and
 * proven by the page's poll token is logged in with the card and its PIN
 * through gw_login_run and approved as the phone would approve it.  A wrong
 * PIN fails the call and leaves the request pending.
 */
veil_err gw_loginreq_card(struct gateway *gw, veil_call *call, const char *id, const char *poll,
                          const Veil__CardCredential *card) VEIL_WUR;

/* The request with this id (VEIL_ERR_NOT_FOUND if none). */
veil_err gw_loginreq_by_id(struct gateway *gw, const char *id, gw_login_request *req) VEIL_WUR;

/* A code exchange's view of the login: what /token needs. */
typedef struct gw_code_grant {
    char app_id[65];
    char redirect_uri[513];
    char code_challenge[64];
    char nonce[513];
    int expired;
    json_t *result; /* the login's claims (sub, auth_time, attributes); json_decref */
} gw_code_grant;

/*
 * Consumes a code: VEIL_OK once; VEIL_ERR_ABORTED when it was used before
 * (everything issued from it is revoked); VEIL_ERR_NOT_FOUND when unknown.
 */
veil_err gw_loginreq_take_code(struct gateway *gw, const char *code, gw_code_grant *out) VEIL_WUR;

/* Issues an access token for the claims, bound to the app; token receives it. */
veil_err gw_loginreq_issue_token(struct gateway *gw, const char *code, const char *app_id,
                                 const json_t *claims, int64_t ttl_ms,
                                 char token[GW_SECRET_TEXT]) VEIL_WUR;

/* The claims of a live access token and its app (VEIL_ERR_NOT_FOUND if none or expired). */
veil_err gw_loginreq_token_claims(struct gateway *gw, const char *token, char app_id[65],
                                  json_t **claims) VEIL_WUR;

/* The binding codes the phone offers: the real one among decoys (sorted). */
void gw_loginreq_code_choices(const char *id, const char *real, char out[3][4]);

/* Parses an OIDC scope string into catalogue bits; -1 on an unknown name, 0 ok, and
 * *has_openid tells whether "openid" was there. */
int gw_oidc_scope_parse(const char *scope, unsigned *bits, int *has_openid);

#endif
