/* e2e.c - driving the stack as a citizen, an app and the admin do (e2e.h). */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>

#include "e2e.h"
#include "veil/codec.h"
#include "veil/jws.h"

void e2e_id_number(const char *first17, char out[19])
{
    static const int weights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char checks[] = "10X98765432";
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += (first17[i] - '0') * weights[i];
    memcpy(out, first17, 17);
    out[17] = checks[sum % 11];
    out[18] = '\0';
}

veil_err e2e_call(h_stack *s, const char *identity, const ProtobufCServiceDescriptor *svc,
                  const char *method, const ProtobufCMessage *req, void *resp, veil_status *st)
{
    /* The Admin API is served on the gateway's admin listener only. */
    const char *addr = svc == &veil__gateway__admin__descriptor ? s->admin_addr : s->gateway.addr;
    veil_channel *ch = h_channel(addr, identity, svc);
    veil_err err = veil_channel_call(ch, method, req, NULL, 10000 * h_timeout_scale(), resp, st);
    veil_channel_free(ch);
    return err;
}

veil_err e2e_admin(h_stack *s, const char *method, const ProtobufCMessage *req, void *resp,
                   veil_status *st)
{
    return e2e_call(s, "admin/ops", &veil__gateway__admin__descriptor, method, req, resp, st);
}

void e2e_set_identity(h_stack *s, const vw_wallet *w, const char *state, const char *reason)
{
    Veil__Gateway__IdentityStateRequest r = VEIL__GATEWAY__IDENTITY_STATE_REQUEST__INIT;
    Veil__Empty *e;
    veil_status st;
    r.web_number = (char *)w->web_number;
    r.state = (char *)state;
    r.reason = (char *)reason;
    veil_err err = e2e_admin(s, "SetIdentityState", &r.base, &e, &st);
    ck_assert_msg(err == VEIL_OK, "SetIdentityState %s: %s: %s", state, veil_status_name(st.code),
                  st.message);
    e2e_free(e);
}

Veil__Gateway__PollEventsResponse *e2e_poll(h_stack *s, const char *app, const char *cursor)
{
    char identity[128];
    snprintf(identity, sizeof identity, "app/%s", app);
    Veil__Gateway__PollEventsRequest pr = VEIL__GATEWAY__POLL_EVENTS_REQUEST__INIT;
    Veil__Gateway__PollEventsResponse *ev;
    veil_status st;
    pr.cursor = (char *)(cursor ? cursor : "");
    veil_err err =
        e2e_call(s, identity, &veil__gateway__login__descriptor, "PollEvents", &pr.base, &ev, &st);
    ck_assert_msg(err == VEIL_OK, "PollEvents as %s: %s: %s", identity, veil_status_name(st.code),
                  st.message);
    return ev;
}

int e2e_events_of(h_stack *s, const Veil__Gateway__PollEventsResponse *ev, const char *app,
                  const char *kind, const char *sub)
{
    char type[96];
    snprintf(type, sizeof type, "urn:veil:event:%s", kind);
    char *jwks_text = e2e_jwks(s);
    veil_jwks jwks;
    ck_assert_int_eq(veil_jwks_parse(jwks_text, &jwks), VEIL_OK);
    int found = 0;
    for (size_t i = 0; i < ev->n_events; i++) {
        json_t *set;
        ck_assert_int_eq(veil_jws_verify(ev->events[i], strlen(ev->events[i]), "secevent+jwt",
                                         veil_jwks_find, &jwks, &set),
                         VEIL_OK);
        ck_assert_str_eq(json_string_value(json_object_get(set, "aud")), app);
        json_t *e = json_object_get(json_object_get(set, "events"), type);
        const char *got = json_string_value(json_object_get(json_object_get(e, "subject"), "sub"));
        found += got && strcmp(got, sub) == 0;
        json_decref(set);
    }
    free(jwks_text);
    return found;
}

void e2e_seal(h_stack *s, vw_wallet *w, Veil__Gateway__WalletEnrolRequest *req,
              unsigned char out[VEIL_ENROL_SEALED_BYTES])
{
    if (!w->ticket_key_version) {
        Veil__Empty empty = VEIL__EMPTY__INIT;
        Veil__Gateway__WalletKeysResponse *keys;
        veil_status st;
        ck_assert_int_eq(e2e_call(s, "none", &veil__gateway__wallet__descriptor, "GetKeys",
                                  &empty.base, &keys, &st),
                         VEIL_OK);
        ck_assert_int_eq(vw_wallet_keys(w, keys), VEIL_OK);
        protobuf_c_message_free_unpacked(&keys->base, NULL);
    }
    ck_assert_int_eq(vw_seal_enrolment(w, req, out), VEIL_OK);
}

veil_err e2e_try_enrol(h_stack *s, vw_wallet *w, const char *id_number, const char *name,
                       Veil__Gateway__WalletEnrolResponse **resp, veil_status *st)
{
    return e2e_try_enrol_at(s, w, id_number, name, veil_now_ms(), resp, st);
}

veil_err e2e_try_enrol_at(h_stack *s, vw_wallet *w, const char *id_number, const char *name,
                          int64_t attested_at_ms, Veil__Gateway__WalletEnrolResponse **resp,
                          veil_status *st)
{
    Veil__Gateway__WalletEnrolRequest req = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    unsigned char sig[64], rid[16], sealed[VEIL_ENROL_SEALED_BYTES];
    char request_id[40];
    randombytes_buf(rid, sizeof rid);
    veil_b64url_encode(request_id, sizeof request_id, rid, sizeof rid);
    vw_attest(w, s->proofing_seed, id_number, name, 1, attested_at_ms, sig, &req);
    req.request_id = request_id;
    req.device_label = "test phone";
    e2e_seal(s, w, &req, sealed);
    veil_err err =
        e2e_call(s, "none", &veil__gateway__wallet__descriptor, "Enrol", &req.base, resp, st);
    if (!err)
        ck_assert_int_eq(vw_wallet_enrolled(w, *resp), VEIL_OK);
    return err;
}

vw_wallet *e2e_enrol(h_stack *s, const char *id_number, const char *name)
{
    vw_wallet *w;
    Veil__Gateway__WalletEnrolResponse *resp;
    veil_status st;
    ck_assert_int_eq(vw_wallet_new(&w), VEIL_OK);
    veil_err err = e2e_try_enrol(s, w, id_number, name, &resp, &st);
    if (err)
        ck_abort_msg("enrolment failed: %s: %s", veil_status_name(st.code), st.message);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return w;
}

/* BeginLogin as the app; st receives the gateway's status when it refuses. */
static veil_err challenge(h_stack *s, const char *app_id, unsigned char out[32], veil_status *st)
{
    char identity[128];
    snprintf(identity, sizeof identity, "app/%s", app_id);
    Veil__Gateway__BeginLoginRequest req = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *resp;
    veil_err err = e2e_call(s, identity, &veil__gateway__login__descriptor, "BeginLogin", &req.base,
                            &resp, st);
    if (err)
        return err;
    ck_assert_uint_eq(resp->challenge.len, 32);
    ck_assert_str_eq(resp->app_id, app_id);
    memcpy(out, resp->challenge.data, 32);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return VEIL_OK;
}

veil_err e2e_challenge(h_stack *s, const char *app_id, unsigned char out[32])
{
    veil_status st;
    return challenge(s, app_id, out, &st);
}

veil_err e2e_complete(h_stack *s, const char *app_id, const char *ticket, const char *const *attrs,
                      size_t n, Veil__Gateway__CompleteLoginResponse **resp, veil_status *st)
{
    char identity[128];
    snprintf(identity, sizeof identity, "app/%s", app_id);
    Veil__Gateway__CompleteLoginRequest req = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    req.ticket = (char *)ticket;
    req.attributes = (char **)attrs;
    req.n_attributes = n;
    return e2e_call(s, identity, &veil__gateway__login__descriptor, "CompleteLogin", &req.base,
                    resp, st);
}

veil_err e2e_login(h_stack *s, const char *app_id, const vw_wallet *w, const char *const *attrs,
                   size_t n, Veil__Gateway__CompleteLoginResponse **resp, veil_status *st)
{
    unsigned char ch[32];
    char *ticket;
    *resp = NULL;
    veil_err err = challenge(s, app_id, ch, st); /* a refusal keeps the gateway's message */
    if (err)
        return err;
    ck_assert_int_eq(vw_ticket(w, app_id, ch, sizeof ch, veil_now_ms(), &ticket), VEIL_OK);
    err = e2e_complete(s, app_id, ticket, attrs, n, resp, st);
    free(ticket);
    return err;
}

veil_err e2e_citizen(h_stack *s, const vw_wallet *w, const char *method,
                     const ProtobufCMessage *payload, void *resp, veil_status *st)
{
    char path[128];
    snprintf(path, sizeof path, "/veil.gateway.Wallet/%s", method);
    Veil__Gateway__SignedRequest req;
    ck_assert_int_eq(vw_sign(w, path, payload, veil_now_ms(), &req), VEIL_OK);
    veil_err err =
        e2e_call(s, "none", &veil__gateway__wallet__descriptor, method, &req.base, resp, st);
    vw_signed_free(&req);
    return err;
}

void e2e_citizen_ok(h_stack *s, const vw_wallet *w, const char *method,
                    const ProtobufCMessage *payload)
{
    ProtobufCMessage *resp;
    veil_status st;
    veil_err err = e2e_citizen(s, w, method, payload, &resp, &st);
    ck_assert_msg(err == VEIL_OK, "%s: %s: %s", method, veil_status_name(st.code), st.message);
    e2e_free(resp);
}

void e2e_unlink(h_stack *s, const vw_wallet *w, const char *app)
{
    Veil__Gateway__AppLinkPayload lp = VEIL__GATEWAY__APP_LINK_PAYLOAD__INIT;
    lp.app_id = (char *)app;
    e2e_citizen_ok(s, w, "UnlinkApp", &lp.base);
}

void e2e_withdraw(h_stack *s, const vw_wallet *w, const char *app, const char *const *attrs,
                  size_t n)
{
    Veil__Gateway__WithdrawConsentPayload wp = VEIL__GATEWAY__WITHDRAW_CONSENT_PAYLOAD__INIT;
    wp.app_id = (char *)app;
    wp.attributes = (char **)attrs;
    wp.n_attributes = n;
    e2e_citizen_ok(s, w, "WithdrawConsent", &wp.base);
}

void e2e_grant(h_stack *s, const vw_wallet *w, const char *app, const char *const *attrs, size_t n)
{
    e2e_grant_for(s, w, app, attrs, n, "account opening");
}

void e2e_grant_for(h_stack *s, const vw_wallet *w, const char *app, const char *const *attrs,
                   size_t n, const char *purpose)
{
    Veil__Gateway__GrantConsentPayload p = VEIL__GATEWAY__GRANT_CONSENT_PAYLOAD__INIT;
    Veil__Gateway__GrantConsentResponse *resp;
    veil_status st;
    p.app_id = (char *)app;
    p.attributes = (char **)attrs;
    p.n_attributes = n;
    p.purpose = (char *)purpose;
    p.expires_at_ms = veil_now_ms() + 86400000LL;
    veil_err err = e2e_citizen(s, w, "GrantConsent", &p.base, &resp, &st);
    if (err)
        ck_abort_msg("grant to %s failed: %s: %s", app, veil_status_name(st.code), st.message);
    ck_assert_str_ne(resp->receipt, "");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

char *e2e_jwks(h_stack *s)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__JwksResponse *resp;
    veil_status st;
    ck_assert_int_eq(e2e_call(s, "app/chat.lianxin", &veil__gateway__login__descriptor, "GetJwks",
                              &req.base, &resp, &st),
                     VEIL_OK);
    char *jwks = strdup(resp->jwks);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return jwks;
}

int e2e_verify_with_pyjwt(const char *jwks, char *const *tokens, char *const *audiences, size_t n)
{
    char *dir = h_tempdir("pyjwt"), path[1200], cmd[4096];
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(jwks, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokens", dir);
    f = fopen(path, "w");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s %s\n", audiences[i], tokens[i]);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 %s/tests/gateway/verify_jwt.py %s/jwks.json %s > %s/out",
             h_env("VEIL_SOURCE_DIR"), dir, path, dir);
    int rc = system(cmd);
    snprintf(path, sizeof path, "%s/out", dir);
    f = fopen(path, "r");
    int ok = -1;
    if (!f || fscanf(f, "verified %d", &ok) != 1)
        ok = -1;
    if (f)
        fclose(f);
    free(dir);
    return rc == 0 ? ok : -1;
}

void e2e_free(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

json_t *e2e_claims(const char *token)
{
    const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    ck_assert_ptr_nonnull(d2);
    size_t n, len = (size_t)(d2 - d1 - 1);
    char *buf = malloc(len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(veil_b64url_decode(buf, len + 1, d1 + 1, len, &n), 0);
    json_error_t je;
    json_t *j = json_loadb(buf, n, 0, &je);
    free(buf);
    ck_assert_ptr_nonnull(j);
    return j;
}

void e2e_await_events(void)
{
    struct timespec ts = {1, 300000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

char *e2e_scrape(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *rq = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    ck_assert_int_eq(write(fd, rq, strlen(rq)), (ssize_t)strlen(rq));
    size_t cap = 1 << 20, got = 0;
    char *buf = calloc(1, cap);
    ck_assert_ptr_nonnull(buf);
    ssize_t r;
    while ((r = read(fd, buf + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "scrape of port %d: %.80s", port, buf);
    ck_assert_ptr_nonnull(strstr(buf, "Content-Type: text/plain; version=0.0.4"));
    char *body = strstr(buf, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    char *out = strdup(body + 4);
    free(buf);
    return out;
}

double e2e_sample(const char *text, const char *series)
{
    for (const char *p = text; (p = strstr(p, series)); p++)
        if ((p == text || p[-1] == '\n') && p[strlen(series)] == ' ')
            return strtod(p + strlen(series) + 1, NULL);
    return -1;
}

const char *e2e_kid_of(const char *jws)
{
    const char *header = h_jws_header(jws);
    return strstr(header, "\"kid\":\"") ? strstr(header, "\"kid\":\"") + 7 : "";
}
