/*
 * oidc.c - the OpenID Connect door: an HTTPS listener (veil/http.h) in the
 * gateway process serving discovery, the JWKS, /authorize and its login
 * page, /token, /userinfo and RFC 8936 SET polling.  See docs/gateway.md.
 *
 * A door only translates: the login itself runs once, in gw_login_run, when
 * the phone approves the request (loginreq.c); /token exchanges the code for
 * what that login produced; SET polling runs the gRPC PollEvents handler
 * in-process (veil_call_local) as the authenticated app.
 *
 * Every OAuth error carries its RFC 6749 / OIDC code.  Errors before the
 * client and its redirect URI are known are shown on a page and never
 * redirected; later /authorize errors go back to the registered URI.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <qrencode.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway.h"
#include "oidc.h"
#include "veil/codec.h"
#include "veil/http.h"
#include "veil/jws.h"
#include "veil/log.h"
#include "veil/metrics.h"
#include "veil/service.h"

#define FORM_MAX        16384
#define LONG_POLL_MS    20000
#define RATE_SLOTS      4096
#define ASSERTION_MAX_S 3660 /* an hour (what common libraries use) and a minute of clock skew */

typedef struct bucket {
    char key[96];
    double tokens;
    int64_t at_ms;
} bucket;

typedef struct seen_jti {
    char key[160]; /* client id and jti */
    int64_t until_ms;
} seen_jti;

struct gw_oidc {
    struct gateway *gw;
    veil_http_server *http;
    gw_rsa *rsa;
    gw_oidc_config cfg;
    char issuer[256];
    int plaintext;
    pthread_mutex_t rate_lock;
    bucket *buckets;
    seen_jti *jtis; /* under rate_lock */
};

/* ---- small output helpers ---- */

typedef struct sb {
    char *s;
    size_t len, cap;
    int failed;
} sb;

static void sb_putn(sb *b, const char *p, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(sb *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_putn(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* HTML-escaped text. */
static void sb_html(sb *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            sb_puts(b, "&lt;");
            break;
        case '>':
            sb_puts(b, "&gt;");
            break;
        case '&':
            sb_puts(b, "&amp;");
            break;
        case '"':
            sb_puts(b, "&quot;");
            break;
        case '\'':
            sb_puts(b, "&#39;");
            break;
        default:
            sb_putn(b, s, 1);
        }
    }
}

/* An URL with parameters appended to its query: base?k=v&k=v (values escaped). */
static char *url_with(const char *base, ...)
{
    sb b = {0};
    va_list ap;
    sb_puts(&b, base);
    char sep = strchr(base, '?') ? '&' : '?';
    va_start(ap, base);
    for (const char *k; (k = va_arg(ap, const char *));) {
        const char *v = va_arg(ap, const char *);
        char *e = veil_http_escape(v ? v : "");
        sb_printf(&b, "%c%s=", sep, k);
        sb_puts(&b, e ? e : "");
        free(e);
        sep = '&';
    }
    va_end(ap);
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---- rate limits: a token bucket per key, in a fixed table ---- */

/*
 * Whether one more request under key is allowed: per_min requests a minute,
 * bursts up to per_min.  A slot taken by another key is reset, so a flood of
 * distinct keys can at worst forget limits, never block anybody wrongly.
 */
static int rate_ok(struct gw_oidc *o, const char *key, int64_t per_min)
{
    if (per_min <= 0)
        return 1;
    unsigned char h[8];
    crypto_generichash(h, sizeof h, (const unsigned char *)key, strlen(key), NULL, 0);
    uint64_t slot;
    memcpy(&slot, h, sizeof slot);
    int64_t now = veil_now_ms();
    pthread_mutex_lock(&o->rate_lock);
    bucket *b = &o->buckets[slot % RATE_SLOTS];
    if (strncmp(b->key, key, sizeof b->key) != 0) {
        snprintf(b->key, sizeof b->key, "%s", key);
        b->tokens = (double)per_min;
        b->at_ms = now;
    }
    b->tokens += (double)(now - b->at_ms) * (double)per_min / 60000.0;
    if (b->tokens > (double)per_min)
        b->tokens = (double)per_min;
    b->at_ms = now;
    int ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    pthread_mutex_unlock(&o->rate_lock);
    return ok;
}

/*
 * Whether a client assertion's jti is new (and records it until exp).  A
 * fixed table per replica: a slot still live is never overwritten, so a
 * replay within the assertion's lifetime is refused unless this replica has
 * seen more than RATE_SLOTS other live assertions hashing to that slot.
 */
static int jti_fresh(struct gw_oidc *o, const char *client, const char *jti, int64_t exp_s)
{
    char key[160];
    unsigned char h[8];
    uint64_t slot;
    int64_t now = veil_now_ms();
    snprintf(key, sizeof key, "%s %s", client, jti);
    crypto_generichash(h, sizeof h, (const unsigned char *)key, strlen(key), NULL, 0);
    memcpy(&slot, h, sizeof slot);
    pthread_mutex_lock(&o->rate_lock);
    seen_jti *e = &o->jtis[slot % RATE_SLOTS];
    int fresh = !(e->until_ms > now && strcmp(e->key, key) == 0);
    if (fresh && e->until_ms <= now) {
        snprintf(e->key, sizeof e->key, "%s", key);
        e->until_ms = exp_s * 1000;
    }
    pthread_mutex_unlock(&o->rate_lock);
    return fresh;
}

/* ---- JSON answers ---- */

static void no_store(veil_http_request *req)
{
    (void)veil_http_add_header(req, "Cache-Control", "no-store");
    (void)veil_http_add_header(req, "Pragma", "no-cache");
}

/* An OAuth error response (RFC 6749 5.2): {"error": code, "error_description": text}. */
/* /token's answers by outcome: "ok" or the OAuth error code (a fixed set; never a client id). */
static veil_metric *m_token;

static void oauth_error(veil_http_request *req, int status, const char *code, const char *desc)
{
    if (strcmp(veil_http_path(req), "/token") == 0)
        veil_metric_add(m_token, 1, (const char *[]){code});
    json_t *j = json_pack("{s:s, s:s}", "error", code, "error_description", desc);
    no_store(req);
    if (status == 401 && strcmp(code, "invalid_token") == 0) {
        char h[256];
        snprintf(h, sizeof h, "Bearer error=\"invalid_token\", error_description=\"%s\"", desc);
        (void)veil_http_add_header(req, "WWW-Authenticate", h);
    }
    if (status == 429)
        (void)veil_http_add_header(req, "Retry-After", "60");
    veil_http_respond_json(req, status, j);
    json_decref(j);
    veil_log(VEIL_LOG_INFO, "oidc request refused", VL_STR("path", veil_http_path(req)),
             VL_STR("error", code), VL_STR("detail", desc), VL_END);
}

/* ---- discovery and keys ---- */

static void serve_discovery(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    char u[5][320];
    const char *paths[5] = {"/authorize", "/token", "/userinfo", "/jwks", "/events"};
    for (int i = 0; i < 5; i++)
        snprintf(u[i], sizeof u[i], "%s%s", o->issuer, paths[i]);
    json_t *scopes = json_array(), *claims = json_array();
    json_array_append_new(scopes, json_string("openid"));
    size_t n;
    const veil_attr *cat = veil_attr_catalogue(&n);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(scopes, json_string(cat[i].name));
    static const char *const aliases[] = {"address", "name", "birthdate"};
    for (size_t i = 0; i < 3; i++)
        json_array_append_new(scopes, json_string(aliases[i]));
    static const char *const cl[] = {
        "sub",       "iss",     "aud",         "azp",         "exp",         "iat",
        "auth_time", "nonce",   "acr",         "amr",         "name",        "birthdate",
        "gender",    "address", "age_over_14", "age_over_18", "age_over_60", "real_name_verified"};
    for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++)
        json_array_append_new(claims, json_string(cl[i]));
    json_t *d = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:[s], s:[s], s:[s], s:[s], s:[s,s], s:[s,s], s:[s,s],"
        " s:[s], s:o, s:o, s:[s], s:b, s:b, s:b, s:s, s:[s]}",
        "issuer", o->issuer, "authorization_endpoint", u[0], "token_endpoint", u[1],
        "userinfo_endpoint", u[2], "jwks_uri", u[3], "response_types_supported", "code",
        "response_modes_supported", "query", "grant_types_supported", "authorization_code",
        "subject_types_supported", "pairwise", "id_token_signing_alg_values_supported", "EdDSA",
        "RS256", "token_endpoint_auth_methods_supported", "tls_client_auth", "private_key_jwt",
        "token_endpoint_auth_signing_alg_values_supported", "EdDSA", "RS256",
        "code_challenge_methods_supported", "S256", "scopes_supported", scopes, "claims_supported",
        claims, "acr_values_supported", GW_ACR_PHONE, "tls_client_certificate_bound_access_tokens",
        1, "request_parameter_supported", 0, "claims_parameter_supported", 0, "set_poll_endpoint",
        u[4], "set_delivery_methods_supported", "urn:ietf:rfc:8936");
    if (!d) {
        veil_http_respond_text(req, 500, "internal error\n");
        return;
    }
    veil_http_respond_json(req, 200, d);
    json_decref(d);
}

static void serve_jwks(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    char *text = gw_keys_jwks(&o->gw->keys);
    json_error_t je;
    json_t *j = text ? json_loads(text, 0, &je) : NULL;
    free(text);
    if (j && o->rsa)
        json_array_append_new(json_object_get(j, "keys"), gw_rsa_jwk(o->rsa));
    if (!j) {
        veil_http_respond_text(req, 500, "internal error\n");
        return;
    }
    (void)veil_http_add_header(req, "Cache-Control", "max-age=300");
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s)
        veil_http_respond(req, 200, "application/jwk-set+json", s, strlen(s));
    else
        veil_http_respond_text(req, 500, "internal error\n");
    free(s);
}

/* ---- the login page ---- */

/* The QR code of text as inline SVG (no external resources). */
static void sb_qr_svg(sb *b, const char *text)
{
    QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (!q) {
        sb_puts(b, "<p>(QR code unavailable: use the link below)</p>");
        return;
    }
    int w = q->width, quiet = 4;
    sb_printf(b,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"qr\" role=\"img\" "
              "aria-label=\"QR code of the login request\" viewBox=\"0 0 %d %d\" "
              "shape-rendering=\"crispEdges\"><rect width=\"100%%\" height=\"100%%\" "
              "fill=\"#fff\"/><path fill=\"#000\" d=\"",
              w + 2 * quiet, w + 2 * quiet);
    for (int y = 0; y < w; y++)
        for (int x = 0; x < w; x++)
            if (q->data[y * w + x] & 1)
                sb_printf(b, "M%d %dh1v1h-1z", x + quiet, y + quiet);
    sb_puts(b, "\"/></svg>");
    QRcode_free(q);
}

/* What a page section needs; sections are listed in login_sections below. */
typedef struct page_ctx {
    struct gw_oidc *o;
    const gw_app *app;
    const gw_login_request *lr;
    const char *request_id, *poll, *script_nonce;
} page_ctx;

typedef void (*page_section)(sb *b, const page_ctx *c);

static void section_app(sb *b, const page_ctx *c)
{
    sb_puts(b, "<header><h1>Log in to ");
    sb_html(b, c->app->name);
    sb_puts(b, "</h1><p class=\"kind\">");
    sb_puts(b, strcmp(c->app->kind, "public_service") == 0 ? "Public service"
               : strcmp(c->app->kind, "venue") == 0        ? "Venue"
                                                           : "Commercial app");
    if (c->app->organisation && *c->app->organisation) {
        sb_puts(b, " &middot; ");
        sb_html(b, c->app->organisation);
    }
    sb_puts(b, "</p></header>");
}

static void section_attributes(sb *b, const page_ctx *c)
{
    json_error_t je;
    json_t *purposes = json_loads(c->app->purposes ? c->app->purposes : "{}", 0, &je);
    size_t n;
    const veil_attr *cat = veil_attr_catalogue(&n);
    int any = 0;
    sb_puts(b, "<section><h2>What it asks for, and why</h2><ul class=\"attrs\">");
    for (size_t i = 0; i < n; i++) {
        unsigned bit = gw_scope_bit(cat[i].name);
        if (!(bit & c->lr->scope))
            continue;
        any = 1;
        sb_puts(b, "<li><b>");
        sb_html(b, cat[i].name);
        sb_puts(b, "</b>");
        if (bit & c->app->scope) {
            const char *p = json_string_value(json_object_get(purposes, cat[i].name));
            sb_puts(b, ": ");
            sb_html(b, p && *p ? p : "sign-in");
        } else {
            sb_puts(b, " &mdash; not registered for this app: it will not be released");
        }
        sb_puts(b, "</li>");
    }
    if (!any)
        sb_puts(b, "<li>Only a pseudonym for this app: no personal details.</li>");
    sb_puts(b, "</ul><p>Your phone asks you to agree to each, for this time only or longer."
               "</p></section>");
    json_decref(purposes);
}

static void section_scan(sb *b, const page_ctx *c)
{
    char url[128];
    snprintf(url, sizeof url, "veil:login?request=%s", c->request_id);
    sb_puts(b, "<section class=\"scan\"><h2>Scan with your veil app</h2>");
    sb_qr_svg(b, url);
    sb_puts(b, "<p><a id=\"same-device\" href=\"");
    sb_html(b, url);
    sb_puts(b, "\">On this device? Open the veil app</a></p></section>");
}

static void section_code(sb *b, const page_ctx *c)
{
    sb_puts(b, "<section><h2>Your phone will ask for this code</h2><p class=\"code\" "
               "id=\"binding-code\">");
    sb_html(b, c->lr->binding_code);
    sb_puts(b, "</p><p>Pick it only if this is the page where you are logging in.</p></section>");
}

static void section_wait(sb *b, const page_ctx *c)
{
    sb_puts(b, "<section><p id=\"status\" role=\"status\">Waiting for your phone&hellip;</p>"
               "<form method=\"get\" action=\"/authorize/continue\">"
               "<input type=\"hidden\" name=\"request\" value=\"");
    sb_html(b, c->request_id);
    sb_puts(b, "\"><input type=\"hidden\" name=\"poll\" value=\"");
    sb_html(b, c->poll);
    sb_puts(b, "\"><button type=\"submit\" id=\"continue\">I have approved on my phone &mdash; "
               "continue</button></form></section>");
    /* Long-poll the status; without JavaScript the button above does the same. */
    sb_printf(b, "<script nonce=\"%s\">", c->script_nonce);
    sb_puts(b, "(function(){var poll=");
    sb_puts(b, "\"");
    sb_puts(b, c->poll); /* base64url: safe inside a JS string */
    sb_puts(b, "\";var st=document.getElementById('status');"
               "function go(){fetch('/authorize/status?wait=1&poll='+poll,{cache:'no-store'})"
               ".then(function(r){return r.json();}).then(function(j){"
               "if(j.redirect){st.textContent='Approved. Returning to the app\\u2026';"
               "window.location.replace(j.redirect);return;}"
               "if(j.status==='pending'){go();return;}"
               "st.textContent=j.message||'This login cannot continue.';})"
               ".catch(function(){setTimeout(go,2000);});}go();})();</script>");
}

/* The hidden fields that name the request and prove the page (its poll token). */
static void request_fields(sb *b, const page_ctx *c)
{
    sb_puts(b, "<input type=\"hidden\" name=\"request\" value=\"");
    sb_html(b, c->request_id);
    sb_puts(b, "\"><input type=\"hidden\" name=\"poll\" value=\"");
    sb_html(b, c->poll);
    sb_puts(b, "\">");
}

/*
 * Log in with a card (issue 17): for citizens without a smartphone, the code
 * printed on the card and its PIN.  Typing the PIN approves what the page
 * lists above; the vault checks the PIN and counts wrong ones.
 */
static void section_card(sb *b, const page_ctx *c)
{
    sb_puts(b, "<section id=\"card\"><h2>No smartphone? Log in with your card</h2>"
               "<form method=\"post\" action=\"/authorize/card\" autocomplete=\"off\">");
    request_fields(b, c);
    sb_puts(b, "<p><label for=\"card-code\">Card code</label><br><input id=\"card-code\" "
               "name=\"code\" size=\"32\" maxlength=\"64\" spellcheck=\"false\" "
               "placeholder=\"XXXXX-XXXXX-XXXXX-XXXXX-XXXXX\" required></p>"
               "<p><label for=\"card-pin\">PIN</label><br><input id=\"card-pin\" name=\"pin\" "
               "type=\"password\" inputmode=\"numeric\" size=\"12\" maxlength=\"12\" "
               "required></p><p>Typing your PIN gives this app what is listed above.</p>"
               "<button type=\"submit\" id=\"card-login\">Log in with card</button></form>"
               "</section>");
}

/*
 * The sections of the login page, in order.  Another way to log in is one
 * more function here.
 */
static const page_section login_sections[] = {
    section_app, section_attributes, section_scan, section_code, section_wait, section_card,
};

static const char page_css[] =
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;"
    "color:#111}h1{font-size:1.5rem;margin-bottom:.2rem}.kind{color:#555;margin-top:0}"
    "h2{font-size:1.05rem}.qr{width:14rem;height:14rem}.code{font-size:2.5rem;"
    "letter-spacing:.3rem;font-weight:bold;margin:.3rem 0}.error{border-left:4px solid #b00;"
    "padding-left:1rem}button{font-size:1rem;padding:.5rem 1rem}";

/*
 * Sends a whole page with a strict content security policy.  form_target is
 * the origin the page's form may end up at besides our own (the app's
 * redirect URI: browsers apply form-action to the redirect too), or NULL.
 */
static void send_page(veil_http_request *req, int status, const char *title, const sb *body,
                      const char *nonce, const char *form_target)
{
    sb page = {0};
    sb_puts(&page, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                   "<meta name=\"referrer\" content=\"no-referrer\"><title>");
    sb_html(&page, title);
    sb_printf(&page, "</title><style nonce=\"%s\">%s</style></head><body>", nonce, page_css);
    sb_puts(&page, body->s ? body->s : "");
    sb_puts(&page, "</body></html>");
    char csp[1024], origin[520] = "";
    if (form_target) { /* scheme://host[:port] of an already validated redirect URI */
        const char *host = strstr(form_target, "://");
        size_t n = host ? (size_t)(host + 3 - form_target) + strcspn(host + 3, "/?") : 0;
        if (n && n < sizeof origin - 1) {
            origin[0] = ' ';
            memcpy(origin + 1, form_target, n);
            origin[n + 1] = '\0';
        }
    }
    snprintf(csp, sizeof csp,
             "default-src 'none'; script-src 'nonce-%s'; style-src 'nonce-%s'; img-src data:; "
             "connect-src 'self'; form-action 'self'%s; frame-ancestors 'none'; base-uri 'none'",
             nonce, nonce, origin);
    (void)veil_http_add_header(req, "Content-Security-Policy", csp);
    (void)veil_http_add_header(req, "X-Frame-Options", "DENY");
    (void)veil_http_add_header(req, "Referrer-Policy", "no-referrer");
    no_store(req);
    if (page.failed)
        veil_http_respond_text(req, 500, "internal error\n");
    else
        veil_http_respond(req, status, "text/html; charset=utf-8", page.s, page.len);
    free(page.s);
}

static void new_nonce(char out[24])
{
    unsigned char raw[16];
    randombytes_buf(raw, sizeof raw);
    veil_b64url_encode(out, 24, raw, sizeof raw);
}

/* An error shown on the page, never redirected (unknown client or redirect URI). */
static void error_page(veil_http_request *req, int status, const char *code, const char *msg)
{
    sb b = {0};
    char nonce[24];
    new_nonce(nonce);
    sb_puts(&b, "<section class=\"error\"><h1>This login cannot continue</h1><p id=\"error\">");
    sb_html(&b, msg);
    sb_puts(&b, "</p><p>Error code: <code id=\"error-code\">");
    sb_html(&b, code);
    sb_puts(&b, "</code></p><p>Return to the app and start again.</p></section>");
    send_page(req, status, "Login error", &b, nonce, NULL);
    free(b.s);
    veil_log(VEIL_LOG_INFO, "oidc request refused", VL_STR("path", veil_http_path(req)),
             VL_STR("error", code), VL_STR("detail", msg), VL_END);
}

static void render_login(veil_http_request *req, const page_ctx *c)
{
    sb b = {0};
    for (size_t i = 0; i < sizeof login_sections / sizeof login_sections[0]; i++)
        login_sections[i](&b, c);
    char title[300];
    snprintf(title, sizeof title, "Log in to %s", c->app->name);
    send_page(req, 200, title, &b, c->script_nonce, c->lr->redirect_uri);
    free(b.s);
}

/* ---- /authorize ---- */

int gw_oidc_redirect_uri_ok(const char *uri)
{
    size_t n = strlen(uri);
    if (n < 10 || n > 512 || strchr(uri, '#') || !veil_utf8_printable(uri, n))
        return 0;
    for (const char *p = uri; *p; p++)
        if (*p == ' ' || (unsigned char)*p >= 0x7f)
            return 0;
    if (strncmp(uri, "https://", 8) == 0)
        return uri[8] != '\0' && uri[8] != '/';
    static const char *const loopback[] = {"http://127.0.0.1", "http://[::1]", "http://localhost"};
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(loopback[i]);
        if (strncmp(uri, loopback[i], l) == 0 && (uri[l] == ':' || uri[l] == '/'))
            return 1;
    }
    return 0;
}

/* Whether uri is one of the app's registered redirect URIs (exact match). */
static int redirect_registered(const gw_app *app, const char *uri)
{
    size_t n = strlen(uri);
    for (const char *p = app->redirect_uris; p && *p;) {
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, uri, n) == 0)
            return 1;
        p += len;
        while (*p == ' ')
            p++;
    }
    return 0;
}

int gw_oidc_scope_parse(const char *scope, unsigned *bits, int *has_openid)
{
    static const char *const aliases[][2] = {
        {"address", "province"}, {"name", "full_name"}, {"birthdate", "birth_date"}};
    *bits = 0;
    *has_openid = 0;
    for (const char *p = scope; *p;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        if (!len)
            break;
        char word[64];
        if (len >= sizeof word)
            return -1;
        memcpy(word, p, len);
        word[len] = '\0';
        p += len;
        if (strcmp(word, "openid") == 0) {
            *has_openid = 1;
            continue;
        }
        for (size_t i = 0; i < 3; i++)
            if (strcmp(word, aliases[i][0]) == 0)
                snprintf(word, sizeof word, "%s", aliases[i][1]);
        unsigned bit = gw_scope_bit(word);
        if (!bit)
            return -1;
        *bits |= bit;
    }
    return 0;
}

/* A redirect to the registered redirect URI with an error (RFC 6749 4.1.2.1). */
static void redirect_error(veil_http_request *req, const char *redirect_uri, const char *state,
                           const char *code, const char *desc)
{
    char *loc = url_with(redirect_uri, "error", code, "error_description", desc, "state",
                         state ? state : "", (const char *)NULL);
    if (!loc || veil_http_add_header(req, "Location", loc) != VEIL_OK) {
        error_page(req, 400, code, desc);
    } else {
        no_store(req);
        veil_http_respond_text(req, 303, "see the app\n");
        veil_log(VEIL_LOG_INFO, "oidc request refused", VL_STR("path", "/authorize"),
                 VL_STR("error", code), VL_STR("detail", desc), VL_END);
    }
    free(loc);
}

/* A single-valued query parameter: 1 present, 0 absent, -1 repeated or malformed. */
static int one(veil_http_request *req, veil_http_where where, const char *name, const char **v)
{
    int n = veil_http_param(req, where, name, v);
    if (n > 1 || n < 0) {
        *v = NULL;
        return -1;
    }
    return n;
}

static int pkce_challenge_ok(const char *s)
{
    size_t n = strlen(s);
    if (n != 43)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return 0;
    return 1;
}

static void serve_authorize(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    const char *client_id, *redirect_uri, *response_type, *scope, *state, *nonce, *challenge,
        *method, *prompt;
    char key[128];
    gw_app app = {0};

    snprintf(key, sizeof key, "a:%s", veil_http_remote_addr(req));
    if (!rate_ok(o, key, o->cfg.rate_per_addr)) {
        error_page(req, 429, "too_many_requests",
                   "too many login attempts from this address; wait a minute and try again");
        return;
    }
    if (veil_http_param_count(req, VEIL_HTTP_QUERY) == 0 &&
        veil_http_param(req, VEIL_HTTP_QUERY, "x", &client_id) < 0) {
        error_page(req, 400, "invalid_request", "the query string is malformed");
        return;
    }
    if (one(req, VEIL_HTTP_QUERY, "client_id", &client_id) != 1 || !veil_ident_valid(client_id)) {
        error_page(req, 400, "invalid_request", "client_id is missing, repeated or malformed");
        return;
    }
    if (gw_registry_get_full(&o->gw->registry, client_id, &app) != 0 || !app.redirect_uris[0]) {
        if (app.name)
            gw_app_clear(&app);
        error_page(req, 400, "invalid_client", "this app is not registered for OpenID Connect");
        return;
    }
    if (one(req, VEIL_HTTP_QUERY, "redirect_uri", &redirect_uri) != 1 ||
        !redirect_registered(&app, redirect_uri)) {
        error_page(req, 400, "invalid_request",
                   "redirect_uri is missing or not registered for this app");
        goto out;
    }
    snprintf(key, sizeof key, "c:%s", app.id);
    if (!rate_ok(o, key, o->cfg.rate_per_client)) {
        error_page(req, 429, "too_many_requests",
                   "too many login attempts for this app; wait a minute and try again");
        goto out;
    }
    /* From here on the redirect URI is the app's own: errors go back to it. */
    int st = one(req, VEIL_HTTP_QUERY, "state", &state);
    if (st < 0) {
        redirect_error(req, redirect_uri, NULL, "invalid_request", "state is repeated");
        goto out;
    }
    if (strcmp(app.status, "active") != 0) {
        redirect_error(req, redirect_uri, state, "unauthorized_client", "the app is suspended");
        goto out;
    }
    if (one(req, VEIL_HTTP_QUERY, "response_type", &response_type) != 1) {
        redirect_error(req, redirect_uri, state, "invalid_request",
                       "response_type is missing or repeated");
        goto out;
    }
    if (strcmp(response_type, "code") != 0) {
        redirect_error(req, redirect_uri, state, "unsupported_response_type",
                       "only the authorization code flow (response_type=code) is supported");
        goto out;
    }
    if (st != 1 || !*state || strlen(state) > 512 || !veil_utf8_printable(state, strlen(state))) {
        redirect_error(req, redirect_uri, NULL, "invalid_request",
                       "state is required (1-512 printable characters)");
        goto out;
    }
    if (one(req, VEIL_HTTP_QUERY, "nonce", &nonce) != 1 || !*nonce || strlen(nonce) > 512 ||
        !veil_utf8_printable(nonce, strlen(nonce))) {
        redirect_error(req, redirect_uri, state, "invalid_request",
                       "nonce is required (1-512 printable characters)");
        goto out;
    }
    if (one(req, VEIL_HTTP_QUERY, "code_challenge_method", &method) != 1 ||
        strcmp(method, "S256") != 0 ||
        one(req, VEIL_HTTP_QUERY, "code_challenge", &challenge) != 1 ||
        !pkce_challenge_ok(challenge)) {
        redirect_error(req, redirect_uri, state, "invalid_request",
                       "PKCE is required: code_challenge (43 base64url characters) with "
                       "code_challenge_method=S256");
        goto out;
    }
    unsigned bits;
    int openid;
    if (one(req, VEIL_HTTP_QUERY, "scope", &scope) != 1 ||
        gw_oidc_scope_parse(scope, &bits, &openid) != 0 || !openid) {
        redirect_error(req, redirect_uri, state, "invalid_scope",
                       "scope must contain openid and name only known attributes");
        goto out;
    }
    if (one(req, VEIL_HTTP_QUERY, "prompt", &prompt) == 1 && strstr(prompt, "none")) {
        redirect_error(req, redirect_uri, state, "login_required",
                       "every veil login needs the citizen's phone; prompt=none cannot succeed");
        goto out;
    }
    gw_login_request lr = {0};
    char id[GW_SECRET_TEXT], poll[GW_SECRET_TEXT], nonce_page[24];
    snprintf(lr.app_id, sizeof lr.app_id, "%s", app.id);
    snprintf(lr.redirect_uri, sizeof lr.redirect_uri, "%s", redirect_uri);
    snprintf(lr.state, sizeof lr.state, "%s", state);
    snprintf(lr.nonce, sizeof lr.nonce, "%s", nonce);
    snprintf(lr.code_challenge, sizeof lr.code_challenge, "%s", challenge);
    lr.scope = bits;
    veil_err err = gw_loginreq_create(o->gw, &lr, o->cfg.request_ttl_s * 1000, id, poll);
    if (err) {
        error_page(req, 503, "temporarily_unavailable",
                   "the login service is busy; try again in a moment");
        goto out;
    }
    new_nonce(nonce_page);
    page_ctx c = {o, &app, &lr, id, poll, nonce_page};
    render_login(req, &c);
    sodium_memzero(poll, sizeof poll);
out:
    gw_app_clear(&app);
}

/* The page's view of its request: status, and where to go when it is answered. */
static json_t *request_status(struct gw_oidc *o, const char *poll, gw_login_request *lr)
{
    char code[GW_SECRET_TEXT];
    veil_err err = gw_loginreq_poll(o->gw, poll, lr, code);
    if (err == VEIL_ERR_NOT_FOUND)
        return json_pack("{s:s, s:s}", "status", "unknown", "message",
                         "This login request is unknown. Return to the app and start again.");
    if (err)
        return NULL;
    json_t *j = json_pack("{s:s}", "status", lr->status);
    if (strcmp(lr->status, "approved") == 0 && code[0]) {
        char *loc = url_with(lr->redirect_uri, "code", code, "state", lr->state, "iss", o->issuer,
                             (const char *)NULL);
        json_object_set_new(j, "redirect", json_string(loc));
        free(loc);
    } else if (strcmp(lr->status, "denied") == 0) {
        char *loc =
            url_with(lr->redirect_uri, "error", "access_denied", "error_description",
                     "the citizen declined the login", "state", lr->state, (const char *)NULL);
        json_object_set_new(j, "redirect", json_string(loc));
        free(loc);
    } else if (strcmp(lr->status, "failed") == 0) {
        json_object_set_new(j, "message",
                            json_string("The login was refused on the phone (a wrong code or a "
                                        "refused login). Return to the app and start again."));
    } else if (strcmp(lr->status, "expired") == 0) {
        json_object_set_new(j, "message",
                            json_string("This login request has expired. Return to the app and "
                                        "start again."));
    }
    sodium_memzero(code, sizeof code);
    return j;
}

static void serve_status(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    const char *poll, *wait;
    if (one(req, VEIL_HTTP_QUERY, "poll", &poll) != 1) {
        oauth_error(req, 400, "invalid_request", "poll is missing or repeated");
        return;
    }
    int waiting = one(req, VEIL_HTTP_QUERY, "wait", &wait) == 1 && strcmp(wait, "1") == 0;
    int64_t until = veil_now_ms() + LONG_POLL_MS;
    gw_login_request lr;
    json_t *j;
    for (;;) {
        j = request_status(o, poll, &lr);
        if (!j || !waiting || strcmp(lr.status, "pending") != 0 || veil_now_ms() >= until ||
            atomic_load(&o->gw->stopping) ||
            strcmp(json_string_value(json_object_get(j, "status")), "unknown") == 0)
            break;
        json_decref(j);
        struct timespec ts = {0, 250 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!j) {
        oauth_error(req, 503, "temporarily_unavailable", "try again in a moment");
        return;
    }
    no_store(req);
    veil_http_respond_json(req, 200, j);
    json_decref(j);
}

/* Without JavaScript: the button re-renders the page, or follows the answer. */
/* What the card form's call needs (veil_call_run). */
struct card_form {
    struct gateway *gw;
    const char *id, *poll;
    Veil__CardCredential card;
};

static veil_err card_login(veil_call *call, void *ctx)
{
    struct card_form *f = ctx;
    return gw_loginreq_card(f->gw, call, f->id, f->poll, &f->card);
}

/*
 * POST /authorize/card: the card form.  Approved: on to the app as after a
 * phone's approval.  Refused (a wrong PIN, a locked or revoked card): the
 * reason on a page that leads back to the same login page.
 */
static void serve_card(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    struct card_form f = {.gw = o->gw};
    veil__card_credential__init(&f.card);
    const char *code, *pin;
    if (one(req, VEIL_HTTP_FORM, "request", &f.id) != 1 ||
        one(req, VEIL_HTTP_FORM, "poll", &f.poll) != 1 ||
        one(req, VEIL_HTTP_FORM, "code", &code) != 1 ||
        one(req, VEIL_HTTP_FORM, "pin", &pin) != 1) {
        error_page(req, 400, "invalid_request", "request, poll, code and pin are required");
        return;
    }
    f.card.code = (char *)code;
    f.card.pin = (char *)pin;
    char msg[256] = "";
    veil_peer door = {.role = 0};
    snprintf(door.uri, sizeof door.uri, "oidc-login-page");
    veil_err err = veil_call_run(&door, "/oidc/authorize/card", card_login, &f, msg, sizeof msg);
    sb b = {0}, back = {0};
    sb_puts(&back, "/authorize/continue?request=");
    sb_puts(&back, f.id); /* both checked to be base64url secrets by the login request */
    sb_puts(&back, "&poll=");
    sb_puts(&back, f.poll);
    if (!err) {
        (void)veil_http_add_header(req, "Location", back.s);
        no_store(req);
        veil_http_respond_text(req, 303, "logged in with the card\n");
    } else {
        char nonce[24];
        new_nonce(nonce);
        sb_puts(&b, "<section class=\"error\"><h1>The card was not accepted</h1>"
                    "<p id=\"card-error\">");
        sb_html(&b, msg);
        sb_puts(&b, "</p>");
        if (err != VEIL_ERR_NOT_FOUND) {
            sb_puts(&b, "<p><a id=\"card-back\" href=\"");
            sb_html(&b, back.s);
            sb_puts(&b, "\">Back to the login page</a></p>");
        }
        sb_puts(&b, "</section>");
        send_page(req, err == VEIL_ERR_UNAVAILABLE ? 503 : 400, "Card not accepted", &b, nonce,
                  NULL);
        veil_log(VEIL_LOG_INFO, "oidc card login refused", VL_STR("detail", msg), VL_END);
    }
    free(b.s);
    free(back.s);
}

static void serve_continue(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    const char *poll, *id;
    gw_login_request lr;
    if (one(req, VEIL_HTTP_QUERY, "poll", &poll) != 1 ||
        one(req, VEIL_HTTP_QUERY, "request", &id) != 1) {
        error_page(req, 400, "invalid_request", "request and poll are required");
        return;
    }
    json_t *j = request_status(o, poll, &lr);
    const char *status = json_string_value(json_object_get(j, "status"));
    const char *redirect = json_string_value(json_object_get(j, "redirect"));
    if (!j) {
        error_page(req, 503, "temporarily_unavailable", "try again in a moment");
    } else if (redirect) {
        (void)veil_http_add_header(req, "Location", redirect);
        no_store(req);
        veil_http_respond_text(req, 303, "see the app\n");
    } else if (strcmp(status, "pending") == 0) {
        gw_app app = {0};
        gw_login_request by_id;
        if (gw_loginreq_by_id(o->gw, id, &by_id) != VEIL_OK ||
            strcmp(by_id.app_id, lr.app_id) != 0 ||
            gw_registry_get_full(&o->gw->registry, lr.app_id, &app) != 0) {
            error_page(req, 400, "invalid_request", "this login request is unknown");
        } else {
            char nonce_page[24];
            new_nonce(nonce_page);
            page_ctx c = {o, &app, &lr, id, poll, nonce_page};
            render_login(req, &c);
        }
        if (app.name)
            gw_app_clear(&app);
    } else {
        const char *msg = json_string_value(json_object_get(j, "message"));
        error_page(req, 400, status, msg ? msg : "this login cannot continue");
    }
    json_decref(j);
}

/* ---- client authentication (/token, /events) ---- */

#define JWT_BEARER "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

/* The payload of a compact JWS, not verified (to learn who claims to sign it). */
static json_t *jwt_payload_unverified(const char *jwt)
{
    json_t *j = NULL;
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (d1 && d2) {
        size_t n = (size_t)(d2 - d1 - 1), got;
        unsigned char *buf = malloc(n + 1);
        json_error_t je;
        if (buf && veil_b64url_decode(buf, n + 1, d1 + 1, n, &got) == 0)
            j = json_loadb((const char *)buf, got, 0, &je);
        free(buf);
    }
    return j;
}

/* Whether aud (a string or an array) names one of our endpoints or the issuer. */
static int audience_ok(struct gw_oidc *o, const json_t *aud, const char *endpoint)
{
    char url[320];
    snprintf(url, sizeof url, "%s%s", o->issuer, endpoint);
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), url) == 0 ||
               strcmp(json_string_value(aud), o->issuer) == 0;
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a) if (json_is_string(a) &&
                                      (strcmp(json_string_value(a), url) == 0 ||
                                       strcmp(json_string_value(a), o->issuer) == 0)) return 1;
    return 0;
}

/*
 * Authenticates the client of a request by its registered method, the
 * client parameters read from where (the form body at /token, the query at
 * /events, whose body is JSON); on failure answers (invalid_client /
 * unauthorized_client) and returns -1.  On success app holds copies
 * (gw_app_clear).
 */
static int authenticate_client(struct gw_oidc *o, veil_http_request *req, const char *endpoint,
                               veil_http_where where, gw_app *app)
{
    const char *client_id = NULL, *type = NULL, *assertion = NULL;
    char from_assertion[65];
    int has_id = one(req, where, "client_id", &client_id);
    int has_type = one(req, where, "client_assertion_type", &type);
    int has_assertion = one(req, where, "client_assertion", &assertion);
    json_t *claims = NULL;
    if (has_id < 0 || has_type < 0 || has_assertion < 0) {
        oauth_error(req, 400, "invalid_request", "a client parameter is repeated or malformed");
        return -1;
    }
    if (has_id != 1 && has_assertion == 1) {
        /* private_key_jwt may name the client in the assertion only (verified below) */
        json_t *unverified = jwt_payload_unverified(assertion);
        const char *iss = json_string_value(json_object_get(unverified, "iss"));
        if (iss && veil_ident_valid(iss)) {
            snprintf(from_assertion, sizeof from_assertion, "%s", iss);
            client_id = from_assertion;
            has_id = 1;
        }
        json_decref(unverified);
    }
    if (has_id != 1 || !veil_ident_valid(client_id)) {
        oauth_error(req, 401, "invalid_client", "client_id is required");
        return -1;
    }
    if (gw_registry_get_full(&o->gw->registry, client_id, app) != 0) {
        oauth_error(req, 401, "invalid_client", "client authentication failed");
        return -1;
    }
    if (!app->redirect_uris[0] || strcmp(app->status, "active") != 0) {
        gw_app_clear(app);
        oauth_error(req, 400, "unauthorized_client",
                    "the app is suspended or not registered for OpenID Connect");
        return -1;
    }
    if (strcmp(app->token_auth, "tls_client_auth") == 0) {
        const char *peer =
            o->plaintext ? veil_http_header(req, VEIL_DEV_PEER_HEADER) : veil_http_peer_uri(req);
        if (has_assertion == 1 || !peer || strcmp(peer, app->cert_identity) != 0) {
            gw_app_clear(app);
            oauth_error(req, 401, "invalid_client",
                        "client authentication failed: tls_client_auth needs the app's own "
                        "client certificate");
            return -1;
        }
        return 0;
    }
    /* private_key_jwt (RFC 7523): signed by a key of the app's registered JWK set */
    int64_t now_s = veil_now_ms() / 1000;
    const char *why = NULL;
    if (has_type != 1 || strcmp(type, JWT_BEARER) != 0 || has_assertion != 1)
        why = "private_key_jwt needs client_assertion_type jwt-bearer and client_assertion";
    else if (gw_jwt_verify_jwks(app->jwks, assertion, &claims) != VEIL_OK)
        why = "the client assertion does not verify with the app's registered keys";
    else {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        const char *sub = json_string_value(json_object_get(claims, "sub"));
        json_t *exp = json_object_get(claims, "exp");
        if (!iss || !sub || strcmp(iss, app->id) || strcmp(sub, app->id))
            why = "the client assertion's iss and sub must be the client_id";
        else if (!audience_ok(o, json_object_get(claims, "aud"), endpoint))
            why = "the client assertion's aud must be this endpoint";
        else if (!json_is_integer(exp) || json_integer_value(exp) <= now_s ||
                 json_integer_value(exp) > now_s + ASSERTION_MAX_S)
            why = "the client assertion has expired or lives too long";
        else if (!json_is_string(json_object_get(claims, "jti")))
            why = "the client assertion needs a jti";
        else if (!jti_fresh(o, app->id, json_string_value(json_object_get(claims, "jti")),
                            json_integer_value(exp)))
            why = "the client assertion was used before (jti)";
    }
    json_decref(claims);
    if (why) {
        gw_app_clear(app);
        oauth_error(req, 401, "invalid_client", why);
        return -1;
    }
    return 0;
}

/* ---- /token ---- */

static int pkce_ok(const char *verifier, const char *challenge)
{
    size_t n = strlen(verifier);
    if (n < 43 || n > 128)
        return 0;
    for (const char *p = verifier; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_' || *p == '~'))
            return 0;
    unsigned char h[32];
    char b64[48];
    crypto_hash_sha256(h, (const unsigned char *)verifier, n);
    veil_b64url_encode(b64, sizeof b64, h, sizeof h);
    return strlen(b64) == strlen(challenge) && sodium_memcmp(b64, challenge, strlen(b64)) == 0;
}

static char *sign_id_token(struct gw_oidc *o, const gw_app *app, const json_t *claims)
{
    char *token = NULL;
    if (strcmp(app->id_token_alg, "RS256") == 0) {
        if (!o->rsa || gw_rsa_sign(o->rsa, "JWT", claims, &token) != VEIL_OK)
            return NULL;
        return token;
    }
    const veil_signer *s =
        gw_keys_signer(&o->gw->keys, atomic_load(&o->gw->keys.assertion_current));
    if (!s || veil_jws_sign(s, "JWT", claims, &token) != VEIL_OK)
        return NULL;
    return token;
}

static void serve_token(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    const char *grant_type, *code, *redirect_uri, *verifier;
    char key[128], token[GW_SECRET_TEXT];
    gw_app app = {0};
    gw_code_grant g = {0};
    json_t *id = NULL, *info = NULL;
    char *id_token = NULL;

    snprintf(key, sizeof key, "a:%s", veil_http_remote_addr(req));
    if (!rate_ok(o, key, o->cfg.rate_per_addr)) {
        oauth_error(req, 429, "too_many_requests", "too many token requests from this address");
        return;
    }
    if (veil_http_param_count(req, VEIL_HTTP_FORM) == 0 &&
        veil_http_param(req, VEIL_HTTP_FORM, "grant_type", &grant_type) < 0) {
        oauth_error(req, 400, "invalid_request",
                    "the body must be application/x-www-form-urlencoded");
        return;
    }
    if (one(req, VEIL_HTTP_FORM, "grant_type", &grant_type) != 1) {
        oauth_error(req, 400, "invalid_request", "grant_type is missing or repeated");
        return;
    }
    if (strcmp(grant_type, "authorization_code") != 0) {
        oauth_error(req, 400, "unsupported_grant_type",
                    "only the authorization_code grant is supported");
        return;
    }
    if (authenticate_client(o, req, "/token", VEIL_HTTP_FORM, &app) != 0)
        return;
    snprintf(key, sizeof key, "c:%s", app.id);
    if (!rate_ok(o, key, o->cfg.rate_per_client)) {
        oauth_error(req, 429, "too_many_requests", "too many token requests for this client");
        goto out;
    }
    if (one(req, VEIL_HTTP_FORM, "code", &code) != 1 ||
        one(req, VEIL_HTTP_FORM, "redirect_uri", &redirect_uri) != 1 ||
        one(req, VEIL_HTTP_FORM, "code_verifier", &verifier) != 1) {
        oauth_error(req, 400, "invalid_request",
                    "code, redirect_uri and code_verifier are each required once");
        goto out;
    }
    veil_err err = gw_loginreq_take_code(o->gw, code, &g);
    if (err == VEIL_ERR_ABORTED) {
        oauth_error(req, 400, "invalid_grant",
                    "the code was already used; the tokens issued from it are revoked");
        veil_log(VEIL_LOG_WARN, "authorization code replayed", VL_STR("app", app.id), VL_END);
        goto out;
    }
    if (err == VEIL_ERR_NOT_FOUND) {
        oauth_error(req, 400, "invalid_grant", "the code is unknown or was never issued");
        goto out;
    }
    if (err) {
        oauth_error(req, 503, "temporarily_unavailable", "try again in a moment");
        goto out;
    }
    if (strcmp(g.app_id, app.id) != 0) {
        oauth_error(req, 400, "invalid_grant", "the code was issued to another client");
        goto out;
    }
    if (g.expired) {
        oauth_error(req, 400, "invalid_grant", "the code has expired");
        goto out;
    }
    if (strcmp(g.redirect_uri, redirect_uri) != 0) {
        oauth_error(req, 400, "invalid_grant", "redirect_uri does not match the authorization");
        goto out;
    }
    if (!pkce_ok(verifier, g.code_challenge)) {
        oauth_error(req, 400, "invalid_grant", "code_verifier does not match the code_challenge");
        goto out;
    }
    json_int_t now = (json_int_t)(veil_now_ms() / 1000);
    id = json_deep_copy(g.result);
    json_t *std =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", o->issuer, "aud", app.id, "azp", app.id,
                  "iat", now, "exp", now + (json_int_t)o->cfg.id_token_ttl_s, "nonce",
                  g.nonce); /* acr and amr come with the login's result */
    if (id && std)
        json_object_update(id, std);
    json_decref(std);
    if (!id || !std || !(id_token = sign_id_token(o, &app, id))) {
        oauth_error(req, 500, "server_error", "the ID token cannot be signed");
        goto out;
    }
    info = json_deep_copy(g.result);
    json_object_del(info, "auth_time");
    json_object_del(info, "acr");
    json_object_del(info, "amr");
    if (gw_loginreq_issue_token(o->gw, code, app.id, info, o->cfg.access_token_ttl_s * 1000,
                                token) != VEIL_OK) {
        oauth_error(req, 503, "temporarily_unavailable", "try again in a moment");
        goto out;
    }
    json_t *resp =
        json_pack("{s:s, s:s, s:I, s:s}", "access_token", token, "token_type", "Bearer",
                  "expires_in", (json_int_t)o->cfg.access_token_ttl_s, "id_token", id_token);
    no_store(req);
    veil_http_respond_json(req, 200, resp);
    veil_metric_add(m_token, 1, (const char *[]){"ok"});
    json_decref(resp);
    sodium_memzero(token, sizeof token);
out:
    json_decref(g.result);
    json_decref(id);
    json_decref(info);
    free(id_token);
    gw_app_clear(&app);
}

/* ---- /userinfo ---- */

static void serve_userinfo(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    const char *auth = veil_http_header(req, "Authorization");
    char app_id[65];
    json_t *claims = NULL;
    gw_app app = {0};
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        oauth_error(req, 401, "invalid_token", "a bearer access token is required");
        return;
    }
    veil_err err = gw_loginreq_token_claims(o->gw, auth + 7, app_id, &claims);
    if (err == VEIL_ERR_NOT_FOUND) {
        oauth_error(req, 401, "invalid_token", "the access token is unknown, expired or revoked");
        return;
    }
    if (err || gw_registry_get_full(&o->gw->registry, app_id, &app) != 0) {
        json_decref(claims);
        oauth_error(req, 503, "temporarily_unavailable", "try again in a moment");
        return;
    }
    /* Certificate-bound (RFC 8705 3): an mTLS client's token works only with its certificate. */
    if (strcmp(app.token_auth, "tls_client_auth") == 0) {
        const char *peer =
            o->plaintext ? veil_http_header(req, VEIL_DEV_PEER_HEADER) : veil_http_peer_uri(req);
        if (!peer || strcmp(peer, app.cert_identity) != 0) {
            oauth_error(req, 401, "invalid_token",
                        "the access token is bound to the client's certificate");
            goto out;
        }
    }
    no_store(req);
    veil_http_respond_json(req, 200, claims);
out:
    json_decref(claims);
    gw_app_clear(&app);
}

/* ---- RFC 8936 SET polling: PollEvents, in-process, as the app ---- */

static void serve_events(void *ctx, veil_http_request *req)
{
    struct gw_oidc *o = ctx;
    gw_app app = {0};
    size_t len;
    const char *body = veil_http_body(req, &len);
    json_error_t je;
    json_t *in = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : json_object();
    if (!json_is_object(in)) {
        json_decref(in);
        oauth_error(req, 400, "invalid_request", "the body must be a JSON object (RFC 8936)");
        return;
    }
    /* The client authenticates as at /token, by its registered method (the
       certificate, or a single-use client assertion); the body is JSON, so
       the client parameters come in the query. */
    if (authenticate_client(o, req, "/events", VEIL_HTTP_QUERY, &app) != 0) {
        json_decref(in);
        return;
    }
    Veil__Gateway__PollEventsRequest pr = VEIL__GATEWAY__POLL_EVENTS_REQUEST__INIT;
    json_t *max = json_object_get(in, "maxEvents");
    const char *cursor = json_string_value(json_object_get(in, "cursor"));
    pr.cursor = (char *)(cursor ? cursor : "");
    pr.max = json_is_integer(max) && json_integer_value(max) > 0 && json_integer_value(max) <= 200
                 ? (uint32_t)json_integer_value(max)
                 : 100;
    size_t plen = protobuf_c_message_get_packed_size(&pr.base);
    uint8_t *packed = malloc(plen ? plen : 1);
    ProtobufCBinaryData reply = {0, NULL};
    char msg[256] = "";
    veil_peer vp = {.role = VEIL_PEER_APP};
    snprintf(vp.name, sizeof vp.name, "%s", app.id);
    snprintf(vp.uri, sizeof vp.uri, "%s", app.cert_identity);
    veil_err err = packed ? VEIL_OK : VEIL_ERR_NOMEM;
    if (!err) {
        protobuf_c_message_pack(&pr.base, packed);
        err = veil_call_local(&o->gw->login.base, "PollEvents", &vp, packed, plen, 0, &reply, msg,
                              sizeof msg);
    }
    free(packed);
    json_decref(in);
    Veil__Gateway__PollEventsResponse *r =
        err ? NULL : veil__gateway__poll_events_response__unpack(NULL, reply.len, reply.data);
    free(reply.data);
    if (!r) {
        oauth_error(req, err == VEIL_ERR_INVALID ? 400 : 503,
                    err == VEIL_ERR_INVALID ? "invalid_request" : "temporarily_unavailable",
                    msg[0] ? msg : "try again in a moment");
        gw_app_clear(&app);
        return;
    }
    json_t *sets = json_object();
    for (size_t i = 0; i < r->n_events; i++) {
        char jti[64];
        snprintf(jti, sizeof jti, "%zu", i); /* fallback key; every SET carries its jti */
        json_t *claims = jwt_payload_unverified(r->events[i]);
        const char *real = json_string_value(json_object_get(claims, "jti"));
        json_object_set_new(sets, real ? real : jti, json_string(r->events[i]));
        json_decref(claims);
    }
    json_t *out = json_pack("{s:o, s:b, s:s}", "sets", sets, "moreAvailable", r->n_events >= pr.max,
                            "cursor", r->cursor);
    no_store(req);
    veil_http_respond_json(req, 200, out);
    json_decref(out);
    veil__gateway__poll_events_response__free_unpacked(r, NULL);
    gw_app_clear(&app);
}

static const veil_http_route routes[] = {
    {"GET", "/.well-known/openid-configuration", serve_discovery, 0},
    {"GET", "/jwks", serve_jwks, 0},
    {"GET", "/authorize", serve_authorize, 0},
    {"GET", "/authorize/status", serve_status, 0},
    {"GET", "/authorize/continue", serve_continue, 0},
    {"POST", "/authorize/card", serve_card, FORM_MAX},
    {"POST", "/token", serve_token, FORM_MAX},
    {"GET", "/userinfo", serve_userinfo, 0},
    {"POST", "/userinfo", serve_userinfo, FORM_MAX},
    {"POST", "/events", serve_events, FORM_MAX},
};

veil_err gw_oidc_start(struct gateway *gw, const veil_service_ctx *ctx, const gw_oidc_config *cfg,
                       char *errbuf, size_t errlen)
{
    if (!cfg->listen || !*cfg->listen)
        return VEIL_OK;
    struct gw_oidc *o = calloc(1, sizeof *o);
    if (!o || !(o->buckets = calloc(RATE_SLOTS, sizeof *o->buckets)) ||
        !(o->jtis = calloc(RATE_SLOTS, sizeof *o->jtis))) {
        if (o)
            free(o->buckets);
        free(o);
        return VEIL_ERR_NOMEM;
    }
    o->gw = gw;
    o->cfg = *cfg;
    o->plaintext = ctx->tls.plaintext;
    m_token = veil_metric_counter("veil_oidc_token_requests_total",
                                  "OpenID Connect /token answers by outcome (ok or the OAuth error)",
                                  "outcome");
    pthread_mutex_init(&o->rate_lock, NULL);
    gw->oidc = o;
    veil_err err;
    if (cfg->rs256_key && *cfg->rs256_key &&
        (err = gw_rsa_load(cfg->rs256_key, &o->rsa, errbuf, errlen)))
        return err;
    veil_http_config hc = {
        .addr = cfg->listen,
        .cert_file =
            o->plaintext ? NULL : (cfg->cert && *cfg->cert ? cfg->cert : ctx->tls.cert_file),
        .key_file = o->plaintext ? NULL : (cfg->key && *cfg->key ? cfg->key : ctx->tls.key_file),
        .client_ca_file = o->plaintext ? NULL : ctx->tls.ca_file,
        .routes = routes,
        .n_routes = sizeof routes / sizeof routes[0],
        .ctx = o,
        .max_header_bytes = 8192,
        .max_connections = 512,
        .per_ip_connections = 0,
        .idle_timeout_s = 30,
    };
    if ((err = veil_http_start(&hc, &o->http, errbuf, errlen)))
        return err;
    if (cfg->issuer && *cfg->issuer)
        snprintf(o->issuer, sizeof o->issuer, "%s", cfg->issuer);
    else
        snprintf(o->issuer, sizeof o->issuer, "%s://127.0.0.1:%d", o->plaintext ? "http" : "https",
                 veil_http_port(o->http));
    veil_log(VEIL_LOG_INFO, "openid connect listening", VL_STR("issuer", o->issuer),
             VL_INT("port", veil_http_port(o->http)), VL_BOOL("tls", !o->plaintext),
             VL_BOOL("rs256", o->rsa != NULL), VL_END);
    return VEIL_OK;
}

void gw_oidc_stop(struct gateway *gw)
{
    struct gw_oidc *o = gw->oidc;
    if (!o)
        return;
    veil_http_stop(o->http);
    gw_rsa_free(o->rsa);
    pthread_mutex_destroy(&o->rate_lock);
    free(o->buckets);
    free(o->jtis);
    free(o);
    gw->oidc = NULL;
}

int gw_oidc_port(const struct gateway *gw)
{
    return gw->oidc && gw->oidc->http ? veil_http_port(gw->oidc->http) : 0;
}
