/*
 * check_inperson.c - in person (issue 17), against the whole stack over real
 * gRPC: a phone showing a code at a venue's scanner, and a counter-issued
 * card with its PIN - at an online app and at a venue.
 *
 * Each reproduction of the issue is a test here: the venue's pseudonym
 * differs from every online app's; two venues cannot link one citizen's
 * presentations; an expired, replayed or twice-redeemed presentation, one
 * redeemed by a non-venue app or made by a revoked phone is refused with
 * nothing released; a card gives the phone's pseudonyms and says so in
 * acr/amr; wrong PINs are counted, shown and logged, five lock the card; a
 * revoked card is refused; a card's key never signs a ticket.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "e2e.h"
#include "veil/codec.h"
#include "veil/inperson.h"

static h_stack S;

#define BAR    "venue.netbar.feiyu"
#define HOTEL  "venue.hotel.jinjiang"
#define OFFICE "venue.tickets.railway"

static void stack_up(void)
{
    h_stack_up(&S);
}

static void stack_down(void)
{
    h_stack_down(&S);
}

/* A fresh citizen with a phone; id from the 17 digits given. */
static vw_wallet *citizen(const char *first17, const char *name)
{
    char id[19];
    e2e_id_number(first17, id);
    return e2e_enrol(&S, id, name);
}

/* A presentation of "a,b" made at time t. */
static char *present_at(const vw_wallet *w, const char *const *attrs, size_t n, int64_t t)
{
    char *p;
    ck_assert_int_eq(vw_present(w, attrs, n, t, &p), VEIL_OK);
    return p;
}

/* CompleteLogin as app with the given request; the reply or NULL and the status. */
static Veil__Gateway__CompleteLoginResponse *
complete(const char *app, const Veil__Gateway__CompleteLoginRequest *req, veil_status *st)
{
    char identity[128];
    Veil__Gateway__CompleteLoginResponse *r = NULL;
    snprintf(identity, sizeof identity, "app/%s", app);
    if (e2e_call(&S, identity, &veil__gateway__login__descriptor, "CompleteLogin", &req->base, &r,
                 st) != VEIL_OK)
        return NULL;
    return r;
}

static Veil__Gateway__CompleteLoginResponse *redeem(const char *app, const char *presentation,
                                                    veil_status *st)
{
    Veil__Gateway__CompleteLoginRequest req = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    req.presentation = (char *)presentation;
    return complete(app, &req, st);
}

static Veil__Gateway__CompleteLoginResponse *redeem_ok(const char *app, const char *presentation)
{
    veil_status st;
    Veil__Gateway__CompleteLoginResponse *r = redeem(app, presentation, &st);
    if (!r)
        ck_abort_msg("redeeming at %s failed: %s: %s", app, veil_status_name(st.code), st.message);
    return r;
}

/* Expects a refusal with this status name and message. */
static void refused(const char *what, Veil__Gateway__CompleteLoginResponse *r,
                    const veil_status *st, const char *code, const char *message)
{
    ck_assert_msg(r == NULL, "%s was not refused", what);
    ck_assert_msg(strcmp(veil_status_name(st->code), code) == 0 && strstr(st->message, message),
                  "%s: got %s: %s; wanted %s: %s", what, veil_status_name(st->code), st->message,
                  code, message);
}

static Veil__Gateway__AccessLogResponse *access_log(const vw_wallet *w)
{
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *r;
    veil_status st;
    if (e2e_citizen(&S, w, "AccessLog", &p.base, &r, &st) != VEIL_OK)
        ck_abort_msg("access log: %s", st.message);
    return r;
}

/* How many entries of the log have this app and action (and purpose, when given). */
static int log_count(const vw_wallet *w, const char *app, const char *action, const char *purpose)
{
    Veil__Gateway__AccessLogResponse *r = access_log(w);
    int n = 0;
    ck_assert(r->chain_valid);
    for (size_t i = 0; i < r->n_entries; i++)
        n += !strcmp(r->entries[i]->app_id, app) && !strcmp(r->entries[i]->action, action) &&
             (!purpose || strstr(r->entries[i]->purpose, purpose));
    e2e_free(r);
    return n;
}

static const char *claim_str(json_t *c, const char *k)
{
    return json_string_value(json_object_get(c, k));
}

/* ---- show the code ---- */

START_TEST(test_venue_checks_age_from_a_phone)
{
    vw_wallet *w = citizen("44030419900307211", "王小明");
    const char *show[] = {"age_over_18", "real_name_verified", "province"};
    char *p = present_at(w, show, 3, veil_now_ms());
    Veil__Gateway__CompleteLoginResponse *r = redeem_ok(BAR, p);
    json_t *c = e2e_claims(r->assertion);
    /* chosen ∩ registered: the bar is not registered for province */
    ck_assert(json_is_true(json_object_get(c, "age_over_18")));
    ck_assert(json_is_true(json_object_get(c, "real_name_verified")));
    ck_assert_ptr_null(json_object_get(c, "province"));
    ck_assert_uint_eq(r->n_released, 2);
    ck_assert_uint_eq(r->n_withheld, 1);
    ck_assert_str_eq(r->withheld[0]->attribute, "province");
    ck_assert_str_eq(r->withheld[0]->reason, "not_registered");
    ck_assert_str_eq(claim_str(c, "aud"), BAR);
    ck_assert_str_eq(claim_str(c, "acr"), "urn:veil:acr:phone");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(c, "amr"), 0)), "pop");
    /* signed like any assertion: an independent JOSE library verifies it */
    char *jwks = e2e_jwks(&S), *aud = BAR;
    ck_assert_int_eq(e2e_verify_with_pyjwt(jwks, &r->assertion, &aud, 1), 1);
    free(jwks);
    /* the access log names the venue and what was shown */
    ck_assert_int_eq(log_count(w, BAR, "presentation_redeemed", "shown in person"), 1);
    ck_assert_int_eq(log_count(w, BAR, "attributes_released", NULL), 1);
    /* a presentation of one attribute only shows that one */
    const char *age[] = {"age_over_18"};
    char *p2 = present_at(w, age, 1, veil_now_ms());
    Veil__Gateway__CompleteLoginResponse *r2 = redeem_ok(BAR, p2);
    json_t *c2 = e2e_claims(r2->assertion);
    ck_assert_ptr_null(json_object_get(c2, "real_name_verified"));
    ck_assert_str_eq(r2->sub, r->sub); /* the venue's own stable pseudonym */
    json_decref(c2);
    json_decref(c);
    e2e_free(r2);
    e2e_free(r);
    free(p2);
    free(p);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_venue_pseudonym_differs_from_every_online_app)
{
    vw_wallet *w = citizen("11010519491231002", "李华");
    const char *show[] = {"real_name_verified"};
    char *subs[3];
    const char *venues[] = {BAR, HOTEL, OFFICE};
    for (int i = 0; i < 3; i++) {
        char *p = present_at(w, show, 1, veil_now_ms());
        Veil__Gateway__CompleteLoginResponse *r = redeem_ok(venues[i], p);
        subs[i] = strdup(r->sub);
        e2e_free(r);
        free(p);
    }
    ck_assert_str_ne(subs[0], subs[1]);
    ck_assert_str_ne(subs[0], subs[2]);
    ck_assert_str_ne(subs[1], subs[2]);
    /* every online app of the registry: another pseudonym */
    Veil__Empty e = VEIL__EMPTY__INIT;
    Veil__Gateway__ListAppsResponse *apps;
    veil_status st;
    ck_assert_int_eq(e2e_admin(&S, "ListApps", &e.base, &apps, &st), VEIL_OK);
    int online = 0;
    for (size_t i = 0; i < apps->n_apps; i++) {
        if (!strcmp(apps->apps[i]->kind, "venue"))
            continue;
        Veil__Gateway__CompleteLoginResponse *r;
        ck_assert_int_eq(e2e_login(&S, apps->apps[i]->app_id, w, NULL, 0, &r, &st), VEIL_OK);
        for (int k = 0; k < 3; k++)
            ck_assert_str_ne(r->sub, subs[k]);
        online++;
        e2e_free(r);
    }
    ck_assert_int_eq(online, 81);
    for (int i = 0; i < 3; i++)
        free(subs[i]);
    e2e_free(apps);
    vw_wallet_free(w);
}
END_TEST

/* Whether a and b share a run of 6 bytes or more. */
static int share_run(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    for (size_t i = 0; i + 6 <= na; i++)
        for (size_t j = 0; j + 6 <= nb; j++)
            if (memcmp(a + i, b + j, 6) == 0)
                return 1;
    return 0;
}

START_TEST(test_two_venues_cannot_link_presentations)
{
    vw_wallet *w = citizen("31010419850615123", "张伟");
    const char *show[] = {"real_name_verified", "age_over_18"};
    char *p1 = present_at(w, show, 2, veil_now_ms()), *p2 = present_at(w, show, 2, veil_now_ms());
    /* what each venue scans: the same length, one format byte, nothing else in common */
    unsigned char b1[VEIL_PRESENTATION_MAX], b2[VEIL_PRESENTATION_MAX];
    size_t n1, n2;
    ck_assert_int_eq(veil_b64url_decode(b1, sizeof b1, p1, strlen(p1), &n1), 0);
    ck_assert_int_eq(veil_b64url_decode(b2, sizeof b2, p2, strlen(p2), &n2), 0);
    ck_assert_uint_eq(n1, n2);
    ck_assert_int_eq(b1[0], VEIL_PRESENTATION_FORMAT);
    ck_assert_msg(!share_run(b1 + 1, n1 - 1, b2 + 1, n2 - 1), "two presentations share bytes");
    /* no web number, no device id, no device key in it */
    unsigned char dev[VEIL_DEVICE_ID_BYTES];
    ck_assert_int_eq(veil_device_id_parse(w->device_id, dev), 0);
    ck_assert(!share_run(b1, n1, dev, sizeof dev));
    ck_assert(!share_run(b1, n1, w->pk, 32));
    ck_assert(!share_run(b1, n1, (const unsigned char *)w->web_number, strlen(w->web_number)));
    ck_assert_ptr_null(strstr(p1, w->web_number));
    ck_assert_ptr_null(strstr(p1, w->device_id));

    /* what the two venues receive: no claim in common but iss, times, acr, amr */
    Veil__Gateway__CompleteLoginResponse *r1 = redeem_ok(BAR, p1), *r2 = redeem_ok(HOTEL, p2);
    json_t *c1 = e2e_claims(r1->assertion), *c2 = e2e_claims(r2->assertion);
    const char *key;
    json_t *v;
    json_object_foreach(c1, key, v)
    {
        if (!strcmp(key, "iss") || !strcmp(key, "iat") || !strcmp(key, "exp") ||
            !strcmp(key, "acr") || !strcmp(key, "amr") || json_is_boolean(v))
            continue;
        const char *k2;
        json_t *v2;
        json_object_foreach(c2, k2, v2) ck_assert_msg(!json_equal(v, v2), "%s repeats", key);
    }
    ck_assert_str_ne(r1->sub, r2->sub);
    json_decref(c1);
    json_decref(c2);
    e2e_free(r1);
    e2e_free(r2);
    free(p1);
    free(p2);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_presentation_bad_input)
{
    vw_wallet *w = citizen("44010619880808123", "陈静");
    const char *show[] = {"age_over_18"};
    veil_status st;
    Veil__Gateway__CompleteLoginResponse *r;

    /* a non-venue app may not redeem, and the refusal consumes nothing */
    char *p = present_at(w, show, 1, veil_now_ms());
    r = redeem("shop.jiale", p, &st);
    refused("a shop redeeming", r, &st, "PERMISSION_DENIED",
            "only venue apps may redeem presentations");
    r = redeem("gov.tax", p, &st);
    refused("a public service redeeming", r, &st, "PERMISSION_DENIED",
            "only venue apps may redeem presentations");
    r = redeem_ok(BAR, p);
    e2e_free(r);

    /* replayed (a screenshot) at the same venue, or redeemed at a second one */
    r = redeem(BAR, p, &st);
    refused("a replay", r, &st, "UNAUTHENTICATED", "presentation already used");
    r = redeem(HOTEL, p, &st);
    refused("a second redemption", r, &st, "UNAUTHENTICATED", "presentation already used");
    free(p);

    /* 30 s old is fine (the default lifetime is 60 s); 61 s old has expired */
    p = present_at(w, show, 1, veil_now_ms() - 30000);
    e2e_free(redeem_ok(BAR, p));
    free(p);
    p = present_at(w, show, 1, veil_now_ms() - 61000);
    r = redeem(BAR, p, &st);
    refused("an expired presentation", r, &st, "UNAUTHENTICATED",
            "presentation expired: show a new code");
    free(p);
    /* made in the future beyond the clock skew */
    p = present_at(w, show, 1, veil_now_ms() + 3600000);
    r = redeem(BAR, p, &st);
    refused("a future presentation", r, &st, "UNAUTHENTICATED", "outside the allowed clock skew");
    free(p);

    /* malformed, tampered with, or both a ticket and a presentation */
    r = redeem(BAR, "not-a-presentation", &st);
    refused("garbage", r, &st, "INVALID_ARGUMENT", "presentation is malformed");
    p = present_at(w, show, 1, veil_now_ms());
    p[20] = p[20] == 'A' ? 'B' : 'A';
    r = redeem(BAR, p, &st);
    refused("a tampered presentation", r, &st, "UNAUTHENTICATED",
            "presentation could not be verified");
    free(p);
    Veil__Gateway__CompleteLoginRequest both = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    p = present_at(w, show, 1, veil_now_ms());
    both.presentation = p;
    both.ticket = "x";
    r = complete(BAR, &both, &st);
    refused("two credentials", r, &st, "INVALID_ARGUMENT",
            "exactly one of ticket, presentation and card is required");
    Veil__Gateway__CompleteLoginRequest none = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    r = complete(BAR, &none, &st);
    refused("no credential", r, &st, "INVALID_ARGUMENT", "ticket is malformed");

    /* a revoked phone's presentation (made before it was reported lost) */
    Veil__Gateway__RevokeDevicePayload rp = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    Veil__Empty *ok;
    ck_assert_int_eq(e2e_citizen(&S, w, "RevokeDevice", &rp.base, &ok, &st), VEIL_OK);
    e2e_free(ok);
    r = redeem(BAR, p, &st);
    refused("a revoked phone", r, &st, "PERMISSION_DENIED", "login refused");
    free(p);
    vw_wallet_free(w);
}
END_TEST

/* ---- cards ---- */

/* Issues a card as counter/desk1; its code into code, its device id into device. */
static veil_err issue_card_as(const char *id_number, const char *name, const char *pin, int replace,
                              char code[VEIL_CARD_CODE_LEN + 1], char device[33], unsigned *revoked,
                              veil_status *st)
{
    unsigned char secret[VEIL_CARD_SECRET_BYTES], sig[64], sk[64];
    vw_wallet card = {0};
    randombytes_buf(secret, sizeof secret);
    veil_card_code_text(secret, code);
    veil_card_keypair(secret, card.pk, sk);
    Veil__Gateway__WalletEnrolRequest att = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    vw_attest(&card, S.proofing_seed, id_number, name, 1, veil_now_ms(), sig, &att);
    att.device_label = "card";
    /* the counter seals the identity to the vault, as a phone does */
    Veil__Empty e = VEIL__EMPTY__INIT;
    Veil__Gateway__WalletKeysResponse *keys;
    unsigned char sealed[VEIL_ENROL_SEALED_BYTES];
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "GetKeys", &e.base, &keys, st),
        VEIL_OK);
    ck_assert_int_eq(vw_wallet_keys(&card, keys), VEIL_OK);
    e2e_free(keys);
    ck_assert_int_eq(vw_seal_enrolment(&card, &att, sealed), VEIL_OK);
    Veil__Gateway__IssueCardRequest req = VEIL__GATEWAY__ISSUE_CARD_REQUEST__INIT;
    Veil__Gateway__IssueCardResponse *resp;
    char rid[40];
    snprintf(rid, sizeof rid, "card-%u", randombytes_random());
    req.request_id = rid;
    req.sealed_identity = att.sealed_identity;
    req.pin = (char *)pin;
    req.replace = replace;
    veil_err err = e2e_call(&S, "counter/desk1", &veil__gateway__counter__descriptor, "IssueCard",
                            &req.base, &resp, st);
    if (!err) {
        snprintf(device, 33, "%s", resp->device_id);
        if (revoked)
            *revoked = resp->cards_revoked;
        e2e_free(resp);
    }
    return err;
}

static veil_err issue_card(const char *id_number, const char *name, const char *pin,
                           char code[VEIL_CARD_CODE_LEN + 1], char device[33], veil_status *st)
{
    return issue_card_as(id_number, name, pin, 0, code, device, NULL, st);
}

static Veil__Gateway__CompleteLoginResponse *card_login(const char *app, const char *code,
                                                        const char *pin, const char *const *attrs,
                                                        size_t n, veil_status *st)
{
    Veil__CardCredential card = VEIL__CARD_CREDENTIAL__INIT;
    card.code = (char *)code;
    card.pin = (char *)pin;
    Veil__Gateway__CompleteLoginRequest req = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    req.card = &card;
    req.attributes = (char **)attrs;
    req.n_attributes = n;
    return complete(app, &req, st);
}

static Veil__Gateway__CardStatusResponse *card_status(const char *code)
{
    Veil__Gateway__CardStatusRequest req = VEIL__GATEWAY__CARD_STATUS_REQUEST__INIT;
    Veil__Gateway__CardStatusResponse *r;
    veil_status st;
    req.code = (char *)code;
    if (e2e_call(&S, "counter/desk1", &veil__gateway__counter__descriptor, "CardStatus", &req.base,
                 &r, &st) != VEIL_OK)
        ck_abort_msg("card status: %s", st.message);
    return r;
}

START_TEST(test_card_is_a_device_of_the_identity)
{
    char id[19], code[VEIL_CARD_CODE_LEN + 1], device[33];
    veil_status st;
    e2e_id_number("32010219450101123", id);
    vw_wallet *phone = e2e_enrol(&S, id, "赵秀英"); /* her daughter set up a phone once */
    ck_assert_int_eq(issue_card(id, "赵秀英", "482916", code, device, &st), VEIL_OK);

    /* the tax platform: the same pseudonym as her phone gets, acr/amr say "card" */
    const char *ask[] = {"real_name_verified", "full_name"};
    Veil__Gateway__CompleteLoginResponse *r = card_login("gov.tax", code, "482916", ask, 2, &st);
    ck_assert_msg(r != NULL, "card login: %s", st.message);
    Veil__Gateway__CompleteLoginResponse *byphone;
    ck_assert_int_eq(e2e_login(&S, "gov.tax", phone, NULL, 0, &byphone, &st), VEIL_OK);
    ck_assert_str_eq(r->sub, byphone->sub);
    json_t *c = e2e_claims(r->assertion);
    ck_assert_str_eq(claim_str(c, "acr"), "urn:veil:acr:card");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(c, "amr"), 0)), "pin");
    ck_assert_str_eq(claim_str(c, "full_name"), "赵秀英");
    ck_assert(json_is_true(json_object_get(c, "real_name_verified")));
    char *jwks = e2e_jwks(&S), *aud = "gov.tax";
    ck_assert_int_eq(e2e_verify_with_pyjwt(jwks, &r->assertion, &aud, 1), 1);
    free(jwks);
    json_decref(c);
    e2e_free(r);
    e2e_free(byphone);

    /* at a venue: scan the card, type the PIN; a commercial app: its own pseudonym */
    const char *age[] = {"age_over_18"};
    r = card_login(BAR, code, "482916", age, 1, &st);
    ck_assert_msg(r != NULL, "card at a venue: %s", st.message);
    ck_assert_uint_eq(r->n_released, 1);
    char *bar_sub = strdup(r->sub);
    e2e_free(r);
    r = card_login("shop.jiale", code, "482916", NULL, 0, &st);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_ne(r->sub, bar_sub);
    e2e_free(r);
    free(bar_sub);

    /* typed in lower case with spaces instead of dashes: the same card */
    char typed[64];
    size_t k = 0;
    for (const char *p = code; *p; p++)
        typed[k++] = *p == '-' ? ' ' : (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    typed[k] = '\0';
    r = card_login("gov.tax", typed, "482916", NULL, 0, &st);
    ck_assert_msg(r != NULL, "typed card code: %s", st.message);
    e2e_free(r);

    /* listed among her devices and in her access log */
    Veil__Gateway__ListDevicesPayload lp = VEIL__GATEWAY__LIST_DEVICES_PAYLOAD__INIT;
    Veil__Gateway__ListDevicesResponse *devs;
    ck_assert_int_eq(e2e_citizen(&S, phone, "ListDevices", &lp.base, &devs, &st), VEIL_OK);
    int listed = 0;
    for (size_t i = 0; i < devs->n_devices; i++)
        listed += !strcmp(devs->devices[i]->device_id, device) &&
                  !strcmp(devs->devices[i]->label, "card") &&
                  !strcmp(devs->devices[i]->status, "active");
    ck_assert_int_eq(listed, 1);
    e2e_free(devs);
    ck_assert_int_eq(log_count(phone, "gov.tax", "card_used", NULL), 2);
    ck_assert_int_eq(log_count(phone, BAR, "card_used", NULL), 1);

    /* revocable like a device: her phone revokes it, the card is refused */
    Veil__Gateway__RevokeDevicePayload rp = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    Veil__Empty *ok;
    rp.device_id = device;
    ck_assert_int_eq(e2e_citizen(&S, phone, "RevokeDevice", &rp.base, &ok, &st), VEIL_OK);
    e2e_free(ok);
    r = card_login("gov.tax", code, "482916", ask, 2, &st);
    refused("a revoked card", r, &st, "PERMISSION_DENIED", "login refused");
    Veil__Gateway__CardStatusResponse *cs = card_status(code);
    ck_assert_str_eq(cs->status, "revoked");
    e2e_free(cs);
    /* the app read "login refused"; her log says a revoked card was tried at gov.tax */
    Veil__Gateway__AccessLogResponse *log = access_log(phone);
    int said = 0;
    for (size_t i = 0; i < log->n_entries; i++)
        said += !strcmp(log->entries[i]->action, "login_refused") &&
                !strcmp(log->entries[i]->app_id, "gov.tax") &&
                !strcmp(log->entries[i]->detail, "card_revoked");
    ck_assert_int_eq(said, 1);
    e2e_free(log);
    vw_wallet_free(phone);
}
END_TEST

START_TEST(test_card_pin_attempts_and_lock)
{
    char id[19], code[VEIL_CARD_CODE_LEN + 1], device[33];
    veil_status st;
    e2e_id_number("51010719400202234", id);
    vw_wallet *phone = e2e_enrol(&S, id, "刘建国");
    ck_assert_int_eq(issue_card(id, "刘建国", "2468", code, device, &st), VEIL_OK);
    const char *ask[] = {"real_name_verified"};
    Veil__Gateway__CompleteLoginResponse *r;

    /* two wrong PINs: counted, said, logged; the right one gives the attempts back */
    r = card_login("gov.tax", code, "1111", ask, 1, &st);
    refused("wrong pin 1", r, &st, "UNAUTHENTICATED", "wrong pin: 4 of 5 attempts left");
    r = card_login("gov.tax", code, "1112", ask, 1, &st);
    refused("wrong pin 2", r, &st, "UNAUTHENTICATED", "wrong pin: 3 of 5 attempts left");
    Veil__Gateway__CardStatusResponse *cs = card_status(code);
    ck_assert_str_eq(cs->status, "active");
    ck_assert_uint_eq(cs->wrong_pins, 2);
    ck_assert_uint_eq(cs->attempts_left, 3);
    e2e_free(cs);
    ck_assert_int_eq(log_count(phone, "gov.tax", "card_pin_wrong", "attempt 2 of 5"), 1);
    r = card_login("gov.tax", code, "2468", ask, 1, &st);
    ck_assert_ptr_nonnull(r);
    e2e_free(r);
    cs = card_status(code);
    ck_assert_uint_eq(cs->wrong_pins, 0);
    e2e_free(cs);

    /* five wrong in a row lock it; then even the right PIN is refused, nothing released */
    for (int i = 1; i <= 4; i++) {
        r = card_login(BAR, code, "0000", ask, 1, &st);
        ck_assert_ptr_null(r);
        ck_assert_str_eq(veil_status_name(st.code), "UNAUTHENTICATED");
    }
    r = card_login(BAR, code, "0000", ask, 1, &st);
    refused("the fifth wrong pin", r, &st, "FAILED_PRECONDITION", "the card is now locked");
    r = card_login("gov.tax", code, "2468", ask, 1, &st);
    refused("a locked card", r, &st, "FAILED_PRECONDITION", "card is locked after 5 wrong pins");
    cs = card_status(code);
    ck_assert_str_eq(cs->status, "locked");
    ck_assert_uint_eq(cs->wrong_pins, 5);
    ck_assert_uint_eq(cs->attempts_left, 0);
    e2e_free(cs);
    ck_assert_int_eq(log_count(phone, BAR, "card_locked", "attempt 5 of 5: card locked"), 1);
    ck_assert_int_eq(log_count(phone, BAR, "card_pin_wrong", NULL), 4);
    /* the locked attempts released nothing: one release only, the good login's */
    ck_assert_int_eq(log_count(phone, "gov.tax", "attributes_released", NULL), 1);
    ck_assert_int_eq(log_count(phone, BAR, "attributes_released", NULL), 0);

    /* malformed input */
    r = card_login("gov.tax", code, "12a4", ask, 1, &st);
    refused("a pin with a letter", r, &st, "INVALID_ARGUMENT", "card.pin must be 4 to 12 digits");
    r = card_login("gov.tax", "ABCDE-FGHJK", "1234", ask, 1, &st);
    refused("a short code", r, &st, "INVALID_ARGUMENT", "card.code is malformed");
    char wrong[VEIL_CARD_CODE_LEN + 1];
    memcpy(wrong, code, sizeof wrong);
    wrong[0] = wrong[0] == '1' ? '2' : '1'; /* the check symbol catches a mistyped symbol */
    r = card_login("gov.tax", wrong, "1234", ask, 1, &st);
    refused("a mistyped code", r, &st, "INVALID_ARGUMENT", "check symbol");
    unsigned char other[VEIL_CARD_SECRET_BYTES];
    char unknown[VEIL_CARD_CODE_LEN + 1];
    randombytes_buf(other, sizeof other);
    veil_card_code_text(other, unknown);
    r = card_login("gov.tax", unknown, "1234", ask, 1, &st);
    refused("an unknown card", r, &st, "UNAUTHENTICATED", "card could not be verified");
    vw_wallet_free(phone);
}
END_TEST

START_TEST(test_counter_replaces_a_locked_card)
{
    /* a card locked (or lost): the counter proofs her again and issues a new one */
    char id[19], code[VEIL_CARD_CODE_LEN + 1], device[33], code2[VEIL_CARD_CODE_LEN + 1],
        device2[33], code3[VEIL_CARD_CODE_LEN + 1], device3[33];
    veil_status st;
    unsigned revoked = 99;
    e2e_id_number("33010219410909234", id);
    vw_wallet *phone = e2e_enrol(&S, id, "周玉珍");
    ck_assert_int_eq(issue_card(id, "周玉珍", "112233", code, device, &st), VEIL_OK);
    for (int i = 0; i < 5; i++)
        e2e_free(card_login("gov.tax", code, "999999", NULL, 0, &st));
    Veil__Gateway__CardStatusResponse *cs = card_status(code);
    ck_assert_str_eq(cs->status, "locked");
    e2e_free(cs);
    /* a second card without replace leaves the first as it is */
    ck_assert_int_eq(issue_card_as(id, "周玉珍", "445566", 0, code2, device2, &revoked, &st),
                     VEIL_OK);
    ck_assert_uint_eq(revoked, 0);
    /* with replace: every other card of hers is revoked, her phone is not */
    ck_assert_int_eq(issue_card_as(id, "周玉珍", "778899", 1, code3, device3, &revoked, &st),
                     VEIL_OK);
    ck_assert_uint_eq(revoked, 2);
    Veil__Gateway__CompleteLoginResponse *r = card_login("gov.tax", code2, "445566", NULL, 0, &st);
    refused("a replaced card", r, &st, "PERMISSION_DENIED", "login refused");
    r = card_login("gov.tax", code, "112233", NULL, 0, &st);
    refused("the locked card, replaced", r, &st, "PERMISSION_DENIED", "login refused");
    cs = card_status(code);
    ck_assert_str_eq(cs->status, "revoked");
    e2e_free(cs);
    r = card_login("gov.tax", code3, "778899", NULL, 0, &st);
    ck_assert_msg(r != NULL, "the new card: %s", st.message);
    e2e_free(r);
    ck_assert_int_eq(e2e_login(&S, "gov.tax", phone, NULL, 0, &r, &st), VEIL_OK);
    e2e_free(r);
    /* her access log: both revocations, by device id */
    Veil__Gateway__AccessLogResponse *log = access_log(phone);
    int revoked_logged = 0;
    for (size_t i = 0; i < log->n_entries; i++)
        revoked_logged +=
            !strcmp(log->entries[i]->action, "device_revoked") &&
            (!strcmp(log->entries[i]->detail, device) || !strcmp(log->entries[i]->detail, device2));
    ck_assert_int_eq(revoked_logged, 2);
    e2e_free(log);
    vw_wallet_free(phone);
}
END_TEST

START_TEST(test_card_key_never_signs)
{
    /* whoever reads the code can derive the card's key: it must not pass for a phone */
    char id[19], code[VEIL_CARD_CODE_LEN + 1], device[33];
    veil_status st;
    e2e_id_number("11010119380303345", id);
    ck_assert_int_eq(issue_card(id, "孙桂兰", "975310", code, device, &st), VEIL_OK);
    unsigned char secret[VEIL_CARD_SECRET_BYTES];
    ck_assert_int_eq(veil_card_code_parse(code, secret), 0);
    vw_wallet *thief;
    ck_assert_int_eq(vw_wallet_new(&thief), VEIL_OK);
    veil_card_keypair(secret, thief->pk, thief->sk);
    snprintf(thief->device_id, sizeof thief->device_id, "%s", device);
    Veil__Empty e = VEIL__EMPTY__INIT;
    Veil__Gateway__WalletKeysResponse *keys;
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "GetKeys", &e.base, &keys, &st),
        VEIL_OK);
    memcpy(thief->ticket_pk, keys->ticket_public_key.data, 32);
    thief->ticket_key_version = keys->ticket_key_version;
    e2e_free(keys);
    Veil__Gateway__CompleteLoginResponse *r;
    ck_assert_int_ne(e2e_login(&S, "gov.tax", thief, NULL, 0, &r, &st), VEIL_OK);
    ck_assert_str_eq(st.message, "login refused");
    const char *show[] = {"age_over_18"};
    char *p = present_at(thief, show, 1, veil_now_ms());
    r = redeem(BAR, p, &st);
    refused("a presentation by a card key", r, &st, "UNAUTHENTICATED",
            "presentation could not be verified");
    free(p);
    Veil__Gateway__ListDevicesPayload lp = VEIL__GATEWAY__LIST_DEVICES_PAYLOAD__INIT;
    Veil__Gateway__ListDevicesResponse *devs;
    ck_assert_int_ne(e2e_citizen(&S, thief, "ListDevices", &lp.base, &devs, &st), VEIL_OK);
    ck_assert_str_eq(st.message, "citizen request could not be verified");
    vw_wallet_free(thief);
}
END_TEST

START_TEST(test_pin_not_brute_forceable_from_the_database)
{
    /* a database reader has the card's public key and pin_mac: no PIN hashes to it */
    char id[19], code[VEIL_CARD_CODE_LEN + 1], device[33];
    veil_status st;
    e2e_id_number("44010219500505456", id);
    ck_assert_int_eq(issue_card(id, "黄美玲", "7391", code, device, &st), VEIL_OK);
    unsigned char secret[VEIL_CARD_SECRET_BYTES], pk[32], sk[64];
    ck_assert_int_eq(veil_card_code_parse(code, secret), 0);
    veil_card_keypair(secret, pk, sk);
    char sql[512], hex[65], stored_hex[80] = "";
    sodium_bin2hex(hex, sizeof hex, pk, 32);
    snprintf(sql, sizeof sql,
             "SELECT encode(pin_mac, 'hex') FROM devices WHERE public_key = decode('%s', 'hex')",
             hex);
    PGconn *db = PQconnectdb(S.db[1]);
    ck_assert_int_eq(PQstatus(db), CONNECTION_OK);
    PGresult *res = PQexec(db, sql);
    ck_assert_int_eq(PQntuples(res), 1);
    snprintf(stored_hex, sizeof stored_hex, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(db);
    ck_assert_uint_eq(strlen(stored_hex), 64);
    ck_assert_ptr_null(strstr(stored_hex, "7391"));
    /* every 4-digit PIN, hashed as a reader without the vault's key could */
    int hits = 0;
    for (int pin = 0; pin < 10000; pin++) {
        char text[8], h[65];
        unsigned char out[32];
        snprintf(text, sizeof text, "%04d", pin);
        crypto_generichash_state s;
        crypto_generichash_init(&s, NULL, 0, sizeof out);
        crypto_generichash_update(&s, (const unsigned char *)"veil-card-pin-v1", 17);
        crypto_generichash_update(&s, pk, 32);
        crypto_generichash_update(&s, (const unsigned char *)text, strlen(text));
        crypto_generichash_final(&s, out, sizeof out);
        sodium_bin2hex(h, sizeof h, out, sizeof out);
        hits += strcmp(h, stored_hex) == 0;
        crypto_generichash(out, sizeof out, (const unsigned char *)text, strlen(text), NULL, 0);
        sodium_bin2hex(h, sizeof h, out, sizeof out);
        hits += strcmp(h, stored_hex) == 0;
    }
    ck_assert_int_eq(hits, 0);
}
END_TEST

START_TEST(test_counter_role)
{
    char id[19], code[VEIL_CARD_CODE_LEN + 1], device[33];
    veil_status st;
    e2e_id_number("44030419900307211", id);
    /* a bad PIN at issuance: refused, nothing enrolled */
    ck_assert_int_ne(issue_card(id, "王小明", "12", code, device, &st), VEIL_OK);
    ck_assert_str_eq(veil_status_name(st.code), "INVALID_ARGUMENT");
    ck_assert_str_eq(st.message, "pin must be 4 to 12 digits");
    /* the identity only sealed: a request without it is refused */
    Veil__Gateway__IssueCardRequest bare = VEIL__GATEWAY__ISSUE_CARD_REQUEST__INIT;
    Veil__Gateway__IssueCardResponse *none;
    bare.request_id = "bare";
    bare.pin = "1234";
    ck_assert_int_ne(e2e_call(&S, "counter/desk1", &veil__gateway__counter__descriptor, "IssueCard",
                              &bare.base, &none, &st),
                     VEIL_OK);
    ck_assert_str_eq(st.message, "sealed_identity is required");
    /* an app or a citizen may not issue cards */
    Veil__Gateway__IssueCardRequest req = VEIL__GATEWAY__ISSUE_CARD_REQUEST__INIT;
    Veil__Gateway__IssueCardResponse *resp;
    ck_assert_int_ne(e2e_call(&S, "app/gov.tax", &veil__gateway__counter__descriptor, "IssueCard",
                              &req.base, &resp, &st),
                     VEIL_OK);
    ck_assert_str_eq(veil_status_name(st.code), "PERMISSION_DENIED");
    ck_assert_int_ne(e2e_call(&S, "none", &veil__gateway__counter__descriptor, "IssueCard",
                              &req.base, &resp, &st),
                     VEIL_OK);
    ck_assert_str_eq(veil_status_name(st.code), "UNAUTHENTICATED");
    ck_assert_str_eq(st.message, "a client certificate is required");
    /* a counter is not an app: it cannot log anyone in */
    Veil__Gateway__BeginLoginRequest bl = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *ch;
    ck_assert_int_ne(e2e_call(&S, "counter/desk1", &veil__gateway__login__descriptor, "BeginLogin",
                              &bl.base, &ch, &st),
                     VEIL_OK);
    ck_assert_str_eq(veil_status_name(st.code), "PERMISSION_DENIED");
}
END_TEST

/* The lifetime is configurable: a stack whose vault keeps presentations 10 s. */
static void short_ttl_up(void)
{
    static const char *const env[] = {"VAULT_PRESENTATION_TTL_S=10", NULL};
    h_stack_opts o = {.service_env = env};
    if (h_stack_start_opts(&S, &o) != 0)
        ck_abort_msg("the stack did not start");
}

START_TEST(test_presentation_lifetime_is_configurable)
{
    vw_wallet *w = citizen("44030419900307211", "王小明");
    const char *show[] = {"age_over_18"};
    veil_status st;
    char *p = present_at(w, show, 1, veil_now_ms() - 5000);
    e2e_free(redeem_ok(BAR, p));
    free(p);
    /* 15 s old: fine with the default 60 s, expired with 10 s */
    p = present_at(w, show, 1, veil_now_ms() - 15000);
    Veil__Gateway__CompleteLoginResponse *r = redeem(BAR, p, &st);
    refused("a presentation older than the configured 10 s", r, &st, "UNAUTHENTICATED",
            "presentation expired: show a new code");
    free(p);
    vw_wallet_free(w);
}
END_TEST

int main(void)
{
    const TTest *const t[] = {test_venue_checks_age_from_a_phone,
                              test_venue_pseudonym_differs_from_every_online_app,
                              test_two_venues_cannot_link_presentations,
                              test_presentation_bad_input,
                              test_card_is_a_device_of_the_identity,
                              test_card_pin_attempts_and_lock,
                              test_counter_replaces_a_locked_card,
                              test_card_key_never_signs,
                              test_pin_not_brute_forceable_from_the_database,
                              test_counter_role,
                              NULL};
    const TTest *const ttl[] = {test_presentation_lifetime_is_configurable, NULL};
    const h_case cases[] = {{"inperson", 300, stack_up, stack_down, NULL, NULL, t},
                            {"ttl", 300, short_ttl_up, stack_down, NULL, NULL, ttl},
                            {NULL}};
    return h_run_suite(h_suite("inperson", cases));
}
