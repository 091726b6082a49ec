/*
 * app_cmds.c - the app's verbs: log a citizen in exactly as an integrating
 * app would (its client certificate, BeginLogin, the phone's ticket,
 * CompleteLogin, then verifying the assertion offline against the JWKS),
 * fetch the JWKS, and follow the app's Security Event Token stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "veil/inperson.h"
#include "veil/jws.h"
#include "veilctl.h"

/* The gateway's JWKS text (malloc'd), fetched as identity `as`. */
static char *fetch_jwks(const vc_opts *o, const char *as)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__JwksResponse *resp = NULL;
    veil_channel *ch = vc_channel(o, as, &veil__gateway__login__descriptor);
    int rc = vc_call(ch, "GetJwks", &req.base, &resp, o);
    veil_channel_free(ch);
    if (rc)
        return NULL;
    char *text = strdup(resp->jwks);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return text;
}

/* Verifies a token as an app does offline; returns its claims or NULL after printing why. */
static json_t *verify(const vc_opts *o, const char *jwks_text, const char *token, const char *typ,
                      const char *audience)
{
    veil_jwks jwks;
    json_t *claims = NULL;
    if (veil_jwks_parse(jwks_text, &jwks) != VEIL_OK) {
        vc_fail(o, "INTERNAL", "the JWKS cannot be parsed");
        return NULL;
    }
    if (veil_jws_verify(token, strlen(token), typ, veil_jwks_find, &jwks, &claims) != VEIL_OK) {
        vc_fail(o, "UNAUTHENTICATED", "the token does not verify against the gateway's JWKS");
        return NULL;
    }
    const char *aud = json_string_value(json_object_get(claims, "aud"));
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    if (!aud || strcmp(aud, audience) != 0 ||
        (!strcmp(typ, "JWT") && exp * 1000 <= (json_int_t)veil_now_ms())) {
        vc_fail(o, "UNAUTHENTICATED", "the token is not for %s or has expired", audience);
        json_decref(claims);
        return NULL;
    }
    return claims;
}

/*
 * What every login verb ends with, whatever the credential: verify the
 * assertion offline against the JWKS as the app would, then print it (the
 * same JSON for `app login --wallet`, `app login --card` and `app redeem`).
 */
static int print_login(const vc_opts *o, const char *as,
                       const Veil__Gateway__CompleteLoginResponse *resp)
{
    char *jwks = fetch_jwks(o, as);
    json_t *claims = jwks ? verify(o, jwks, resp->assertion, "JWT", o->app) : NULL;
    free(jwks);
    if (!claims)
        return 1;
    json_t *withheld = json_array();
    for (size_t i = 0; i < resp->n_withheld; i++)
        json_array_append_new(withheld,
                              json_pack("{s:s, s:s}", "attribute", resp->withheld[i]->attribute,
                                        "reason", resp->withheld[i]->reason));
    if (o->json) {
        vc_print_json(json_pack("{s:s, s:s, s:O, s:o, s:b}", "app", o->app, "assertion",
                                resp->assertion, "claims", claims, "withheld", withheld, "verified",
                                1));
    } else {
        printf("%s logged the citizen in; the assertion verifies against the JWKS.\n", o->app);
        printf("  sub           %s\n", resp->sub);
        if (resp->previous_sub[0])
            printf("  previous_sub  %s\n", resp->previous_sub);
        const char *key;
        json_t *v;
        json_object_foreach(claims, key, v)
        {
            static const char *const std[] = {"iss", "aud", "sub",         "iat",
                                              "exp", "jti", "previous_sub"};
            int standard = 0;
            for (size_t i = 0; i < sizeof std / sizeof std[0]; i++)
                standard |= strcmp(key, std[i]) == 0;
            if (standard)
                continue;
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf("  %-13s %s\n", key, text ? text : "?");
            free(text);
        }
        for (size_t i = 0; i < resp->n_withheld; i++)
            printf("  withheld      %s (%s)\n", resp->withheld[i]->attribute,
                   resp->withheld[i]->reason);
        json_decref(withheld);
    }
    json_decref(claims);
    return 0;
}

/* CompleteLogin as app `as` with req, then print_login. */
static int complete(const vc_opts *o, veil_channel *ch, const char *as,
                    const Veil__Gateway__CompleteLoginRequest *req)
{
    Veil__Gateway__CompleteLoginResponse *resp = NULL;
    int rc = vc_call(ch, "CompleteLogin", &req->base, &resp, o);
    if (!rc)
        rc = print_login(o, as, resp);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

/* A card login: the code from the card file, the PIN as typed; no BeginLogin. */
static int login_with_card(const vc_opts *o, veil_channel *ch, const char *as, char **attrs,
                           size_t n)
{
    char code[VEIL_CARD_CODE_LEN + 1];
    if (vc_card_read(o, code) != 0)
        return 1;
    Veil__CardCredential card = VEIL__CARD_CREDENTIAL__INIT;
    card.code = code;
    card.pin = (char *)o->pin;
    Veil__Gateway__CompleteLoginRequest cl = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    cl.card = &card;
    cl.attributes = attrs;
    cl.n_attributes = n;
    int rc = complete(o, ch, as, &cl);
    sodium_memzero(code, sizeof code);
    return rc;
}

int vc_app_login(const vc_opts *o)
{
    if (!o->app || (!o->wallet == !o->card) || (o->card && !o->pin))
        return vc_usage("app login --app APP_ID (--wallet FILE | --card FILE --pin PIN) "
                        "[--attrs a,b]");
    size_t n;
    char **attrs = vc_split_attrs(o, &n);
    if (!attrs)
        return 1;
    char as[128], *ticket = NULL;
    snprintf(as, sizeof as, "app/%s", o->app);
    veil_channel *ch = vc_channel(o, as, &veil__gateway__login__descriptor);
    int rc;
    if (o->card) {
        rc = login_with_card(o, ch, as, attrs, n);
        goto out;
    }
    vw_wallet *w = vc_wallet(o);
    if (!w) {
        rc = 1;
        goto out;
    }
    Veil__Gateway__BeginLoginRequest bl = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *challenge = NULL;
    rc = vc_call(ch, "BeginLogin", &bl.base, &challenge, o);
    if (!rc && vw_ticket(w, o->app, challenge->challenge.data, challenge->challenge.len,
                         veil_now_ms(), &ticket) != VEIL_OK)
        rc = vc_fail(o, "FAILED_PRECONDITION", "wallet %s is not enrolled", o->wallet);
    if (!rc) {
        Veil__Gateway__CompleteLoginRequest cl = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
        cl.ticket = ticket;
        cl.attributes = attrs;
        cl.n_attributes = n;
        rc = complete(o, ch, as, &cl);
    }
    free(ticket);
    if (challenge)
        protobuf_c_message_free_unpacked(&challenge->base, NULL);
    vw_wallet_free(w);
out:
    veil_channel_free(ch);
    vc_split_free(attrs);
    return rc;
}

int vc_app_redeem(const vc_opts *o)
{
    if (!o->app || !o->presentation)
        return vc_usage("app redeem --app APP_ID --presentation STRING [--attrs a,b]");
    char as[128];
    snprintf(as, sizeof as, "app/%s", o->app);
    size_t n;
    char **attrs = vc_split_attrs(o, &n);
    if (!attrs)
        return 1;
    veil_channel *ch = vc_channel(o, as, &veil__gateway__login__descriptor);
    Veil__Gateway__CompleteLoginRequest cl = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    cl.presentation = (char *)o->presentation;
    cl.attributes = attrs;
    cl.n_attributes = n;
    int rc = ch ? complete(o, ch, as, &cl) : 1;
    veil_channel_free(ch);
    vc_split_free(attrs);
    return rc;
}

int vc_app_jwks(const vc_opts *o)
{
    /* Any registered app may fetch it; so may the admin. */
    char *jwks = fetch_jwks(o, "admin");
    if (!jwks)
        return 1;
    if (o->json) {
        json_error_t je;
        vc_print_json(json_loads(jwks, 0, &je));
    } else {
        veil_jwks parsed;
        if (veil_jwks_parse(jwks, &parsed) == VEIL_OK)
            for (size_t i = 0; i < parsed.n; i++)
                printf("%s  OKP Ed25519\n", parsed.keys[i].kid);
    }
    free(jwks);
    return 0;
}

int vc_app_events(const vc_opts *o)
{
    if (!o->app)
        return vc_usage("app events --app APP_ID [--cursor C]");
    char as[128], *jwks = NULL;
    snprintf(as, sizeof as, "app/%s", o->app);
    Veil__Gateway__PollEventsRequest req = VEIL__GATEWAY__POLL_EVENTS_REQUEST__INIT;
    Veil__Gateway__PollEventsResponse *resp = NULL;
    req.cursor = (char *)(o->cursor ? o->cursor : "");
    veil_channel *ch = vc_channel(o, as, &veil__gateway__login__descriptor);
    int rc = vc_call(ch, "PollEvents", &req.base, &resp, o);
    veil_channel_free(ch);
    if (!rc && !(jwks = fetch_jwks(o, as)))
        rc = 1;
    json_t *events = json_array();
    for (size_t i = 0; !rc && i < resp->n_events; i++) {
        json_t *set = verify(o, jwks, resp->events[i], "secevent+jwt", o->app);
        if (!set) {
            rc = 1;
            break;
        }
        json_array_append_new(events, set);
    }
    if (!rc) {
        if (o->json) {
            vc_print_json(json_pack("{s:o, s:s}", "events", events, "cursor", resp->cursor));
            events = NULL;
        } else {
            size_t i;
            json_t *set;
            json_array_foreach(events, i, set)
            {
                const char *type;
                json_t *body;
                json_object_foreach(json_object_get(set, "events"), type, body)
                {
                    const char *sub =
                        json_string_value(json_object_get(json_object_get(body, "subject"), "sub"));
                    printf("%s  %s\n", type, sub ? sub : "?");
                }
            }
            printf("cursor %s\n", resp->cursor);
        }
    }
    json_decref(events);
    free(jwks);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}
