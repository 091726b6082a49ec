/*
 * check_gateway.c - the login flow end to end: all five services over mTLS,
 * the real PostgreSQL, the 84 sample apps (3 of them venues), citizens with simulated phones.
 *
 * Each test case starts one stack (an unchecked fixture) and its tests use
 * their own citizens, so they do not disturb each other; tests run in one
 * process because grpc core must not be used across fork().
 */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "e2e.h"
#include "veil/codec.h"
#include "veil/jws.h"
#include "veil/formats.h"

static h_stack S;

static void stack_up(void)
{
    h_stack_up(&S);
}

static void stack_down(void)
{
    h_stack_down(&S);
}

/* The apps of the sample registry, as the admin lists them. */
static Veil__Gateway__ListAppsResponse *list_apps(void)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__ListAppsResponse *apps;
    veil_status st;
    ck_assert_int_eq(e2e_admin(&S, "ListApps", &req.base, &apps, &st), VEIL_OK);
    return apps;
}

static Veil__Gateway__CompleteLoginResponse *login_ok(const char *app, const vw_wallet *w,
                                                      const char *const *attrs, size_t n)
{
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    veil_err err = e2e_login(&S, app, w, attrs, n, &r, &st);
    if (err)
        ck_abort_msg("login to %s failed: %s: %s", app, veil_status_name(st.code), st.message);
    return r;
}

static veil_err login_err(const char *app, const vw_wallet *w, veil_status *st)
{
    Veil__Gateway__CompleteLoginResponse *r;
    veil_err err = e2e_login(&S, app, w, NULL, 0, &r, st);
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return err;
}

static char *sub_at(const char *app, const vw_wallet *w)
{
    Veil__Gateway__CompleteLoginResponse *r = login_ok(app, w, NULL, 0);
    char *sub = strdup(r->sub);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return sub;
}

START_TEST(test_81_apps_81_pseudonyms)
{
    char id[19];
    e2e_id_number("44030419900307211", id);
    vw_wallet *w = e2e_enrol(&S, id, "王小明");
    e2e_id_number("11010519491231002", id);
    vw_wallet *other = e2e_enrol(&S, id, "李华");
    Veil__Gateway__ListAppsResponse *apps = list_apps();
    ck_assert_uint_eq(apps->n_apps, 84); /* 81 online apps and 3 venues (issue 17) */

    size_t n = apps->n_apps;
    char **subs = calloc(n, sizeof *subs), **tokens = calloc(n, sizeof *tokens),
         **auds = calloc(n, sizeof *auds);
    json_t **claims = calloc(n, sizeof *claims);
    size_t public_service = 0;
    for (size_t i = 0; i < n; i++) {
        const Veil__Gateway__App *a = apps->apps[i];
        public_service += strcmp(a->kind, "public_service") == 0;
        /* ask for the whole registered scope plus all raw attributes */
        const char *ask[16];
        size_t k = 0;
        for (size_t j = 0; j < a->n_attributes; j++)
            ask[k++] = a->attributes[j];
        ask[k++] = "full_name";
        ask[k++] = "birth_date";
        Veil__Gateway__CompleteLoginResponse *r = login_ok(a->app_id, w, ask, k);
        subs[i] = strdup(r->sub);
        tokens[i] = strdup(r->assertion);
        auds[i] = a->app_id;
        claims[i] = e2e_claims(r->assertion);
        /* nothing is released without consent; raw data never to a commercial app */
        ck_assert_uint_eq(r->n_released, 0);
        for (size_t j = 0; j < r->n_withheld; j++) {
            const char *attr = r->withheld[j]->attribute, *why = r->withheld[j]->reason;
            if (strcmp(a->kind, "commercial") == 0 &&
                (!strcmp(attr, "full_name") || !strcmp(attr, "birth_date")))
                ck_assert_str_eq(why, "not_registered");
        }
        ck_assert_str_eq(json_string_value(json_object_get(claims[i], "aud")), a->app_id);
        ck_assert_str_eq(json_string_value(json_object_get(claims[i], "sub")), r->sub);
        e2e_free(r);
    }
    ck_assert_uint_eq(public_service, 10);

    /* 84 apps, 83 distinct pseudonyms: the Haipeng group's two shops share a sector */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            int shared = (!strcmp(auds[i], "shop.haigou") && !strcmp(auds[j], "shop.youpin")) ||
                         (!strcmp(auds[j], "shop.haigou") && !strcmp(auds[i], "shop.youpin"));
            if (shared)
                ck_assert_str_eq(subs[i], subs[j]);
            else
                ck_assert_str_ne(subs[i], subs[j]);
        }

    /*
     * No claim value repeats across two apps, except iss and the time claims
     * (every token issued in the same second has the same iat and exp; they
     * say when, never who), acr and amr (the same for every phone login: they
     * say how, never who) - and the shared sector's sub.
     */
    for (size_t i = 0; i < n; i++) {
        const char *key;
        json_t *v;
        json_object_foreach(claims[i], key, v)
        {
            if (!strcmp(key, "iss") || !strcmp(key, "iat") || !strcmp(key, "exp") ||
                !strcmp(key, "acr") || !strcmp(key, "amr"))
                continue;
            for (size_t j = 0; j < n; j++) {
                if (j == i)
                    continue;
                const char *k2;
                json_t *v2;
                json_object_foreach(claims[j], k2, v2)
                {
                    if (!json_equal(v, v2))
                        continue;
                    int shared_sub = !strcmp(key, "sub") && !strcmp(k2, "sub") &&
                                     strstr(auds[i], "shop.") && strstr(auds[j], "shop.") &&
                                     !strcmp(subs[i], subs[j]);
                    if (!shared_sub)
                        ck_abort_msg("claim %s of %s repeats as %s at %s", key, auds[i], k2,
                                     auds[j]);
                }
            }
        }
    }

    /* the same app again gives the same pseudonym; another person another */
    for (size_t i = 0; i < n; i += 20) {
        char *again = sub_at(auds[i], w), *theirs = sub_at(auds[i], other);
        ck_assert_str_eq(again, subs[i]);
        ck_assert_str_ne(theirs, subs[i]);
        free(again);
        free(theirs);
    }

    /* every assertion verifies with an independent JOSE implementation */
    char *jwks = e2e_jwks(&S);
    ck_assert_int_eq(e2e_verify_with_pyjwt(jwks, tokens, auds, n), (int)n);
    free(jwks);
    for (size_t i = 0; i < n; i++) {
        free(subs[i]);
        free(tokens[i]);
        json_decref(claims[i]);
    }
    free(subs);
    free(tokens);
    free(auds);
    free(claims);
    e2e_free(apps);
    vw_wallet_free(w);
    vw_wallet_free(other);
}
END_TEST

START_TEST(test_consent_releases_minimal_attributes)
{
    char id[19];
    e2e_id_number("44030419900307211", id); /* Guangdong, born 1990-03-07, male */
    vw_wallet *w = e2e_enrol(&S, id, "陈静");
    const char *ask[] = {"full_name", "province", "gender"};
    Veil__Gateway__CompleteLoginResponse *r = login_ok("gov.tax", w, ask, 3);
    ck_assert_uint_eq(r->n_released, 0);
    ck_assert_uint_eq(r->n_withheld, 3);
    for (size_t i = 0; i < r->n_withheld; i++) {
        if (!strcmp(r->withheld[i]->attribute, "gender"))
            ck_assert_str_eq(r->withheld[i]->reason, "not_registered"); /* not in gov.tax's scope */
        else
            ck_assert_str_eq(r->withheld[i]->reason, "no_consent");
    }
    e2e_free(r);

    const char *grant[] = {"full_name", "province"};
    e2e_grant(&S, w, "gov.tax", grant, 2);
    r = login_ok("gov.tax", w, ask, 3);
    ck_assert_uint_eq(r->n_released, 2);
    json_t *c = e2e_claims(r->assertion);
    ck_assert_str_eq(json_string_value(json_object_get(c, "full_name")), "陈静");
    json_t *prov = json_object_get(c, "province");
    ck_assert_str_eq(json_string_value(json_object_get(prov, "code")), "44");
    ck_assert_str_eq(json_string_value(json_object_get(prov, "name_en")), "Guangdong");
    ck_assert_ptr_null(json_object_get(c, "gender"));
    ck_assert_ptr_null(json_object_get(c, "birth_date"));
    json_decref(c);
    e2e_free(r);

    /* a game gets age_over_18 and nothing else once consented */
    const char *adult[] = {"age_over_18"};
    e2e_grant(&S, w, "game.tianfeng", adult, 1);
    const char *greedy[] = {"age_over_18", "province", "full_name"};
    r = login_ok("game.tianfeng", w, greedy, 3);
    c = e2e_claims(r->assertion);
    ck_assert(json_is_true(json_object_get(c, "age_over_18")));
    ck_assert_ptr_null(json_object_get(c, "province"));
    ck_assert_ptr_null(json_object_get(c, "full_name"));
    json_decref(c);
    e2e_free(r);

    /* a commercial app can never be granted raw data: outside its scope */
    Veil__Gateway__GrantConsentPayload p = VEIL__GATEWAY__GRANT_CONSENT_PAYLOAD__INIT;
    const char *raw[] = {"full_name"};
    Veil__Gateway__GrantConsentResponse *gr;
    veil_status st;
    p.app_id = "shop.jiale";
    p.attributes = (char **)raw;
    p.n_attributes = 1;
    p.purpose = "delivery";
    p.expires_at_ms = veil_now_ms() + 3600000;
    ck_assert_int_eq(e2e_citizen(&S, w, "GrantConsent", &p.base, &gr, &st), VEIL_ERR_PRECONDITION);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_withdrawn_consent_stops_release)
{
    char id[19];
    e2e_id_number("31010119851111222", id);
    vw_wallet *w = e2e_enrol(&S, id, "赵敏");
    const char *attrs[] = {"real_name_verified", "province"};
    e2e_grant(&S, w, "shop.jiale", attrs, 2);
    Veil__Gateway__CompleteLoginResponse *r = login_ok("shop.jiale", w, attrs, 2);
    ck_assert_uint_eq(r->n_released, 2);
    e2e_free(r);
    const char *which[] = {"province"};
    e2e_withdraw(&S, w, "shop.jiale", which, 1);
    r = login_ok("shop.jiale", w, attrs, 2);
    ck_assert_uint_eq(r->n_released, 1);
    ck_assert_str_eq(r->released[0], "real_name_verified");
    ck_assert_str_eq(r->withheld[0]->reason, "no_consent");
    e2e_free(r);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_ticket_bound_to_app_and_challenge)
{
    char id[19], *ticket;
    e2e_id_number("51010719920101333", id);
    vw_wallet *w = e2e_enrol(&S, id, "周杰");
    unsigned char ch[32];
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    /* made for shop.jiale, presented by chat.lianxin */
    ck_assert_int_eq(e2e_challenge(&S, "shop.jiale", ch), VEIL_OK);
    ck_assert_int_eq(vw_ticket(w, "shop.jiale", ch, 32, veil_now_ms(), &ticket), VEIL_OK);
    ck_assert_int_eq(e2e_complete(&S, "chat.lianxin", ticket, NULL, 0, &r, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    /* ... and still good at shop.jiale, once */
    ck_assert_int_eq(e2e_complete(&S, "shop.jiale", ticket, NULL, 0, &r, &st), VEIL_OK);
    e2e_free(r);
    ck_assert_int_eq(e2e_complete(&S, "shop.jiale", ticket, NULL, 0, &r, &st),
                     VEIL_ERR_PRECONDITION); /* replay */
    ck_assert_str_eq(st.message, "challenge is unknown, expired or already used");
    free(ticket);
    /* a challenge the gateway never issued */
    randombytes_buf(ch, sizeof ch);
    ck_assert_int_eq(vw_ticket(w, "shop.jiale", ch, 32, veil_now_ms(), &ticket), VEIL_OK);
    ck_assert_int_eq(e2e_complete(&S, "shop.jiale", ticket, NULL, 0, &r, &st),
                     VEIL_ERR_PRECONDITION);
    free(ticket);
    /* an expired challenge */
    ck_assert_int_eq(e2e_challenge(&S, "shop.jiale", ch), VEIL_OK);
    ck_assert_int_eq(h_db_exec(S.db[H_GATEWAY],
                               "UPDATE challenges SET expires_at = now() - interval '1 second'"),
                     0);
    ck_assert_int_eq(vw_ticket(w, "shop.jiale", ch, 32, veil_now_ms(), &ticket), VEIL_OK);
    ck_assert_int_eq(e2e_complete(&S, "shop.jiale", ticket, NULL, 0, &r, &st),
                     VEIL_ERR_PRECONDITION);
    free(ticket);
    /* a forged ticket: another device key signs for the same device id */
    vw_wallet *forger;
    ck_assert_int_eq(vw_wallet_new(&forger), VEIL_OK);
    memcpy(forger->device_id, w->device_id, sizeof w->device_id);
    memcpy(forger->ticket_pk, w->ticket_pk, 32);
    forger->ticket_key_version = w->ticket_key_version;
    ck_assert_int_eq(e2e_challenge(&S, "shop.jiale", ch), VEIL_OK);
    ck_assert_int_eq(vw_ticket(forger, "shop.jiale", ch, 32, veil_now_ms(), &ticket), VEIL_OK);
    ck_assert_int_eq(e2e_complete(&S, "shop.jiale", ticket, NULL, 0, &r, &st), VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "login refused"); /* as for any refusal about the person */
    free(ticket);
    /* garbage */
    ck_assert_int_eq(e2e_complete(&S, "shop.jiale", "not-a-ticket", NULL, 0, &r, &st),
                     VEIL_ERR_INVALID);
    vw_wallet_free(forger);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_every_revocation_kind)
{
    char id[19];
    e2e_id_number("32010219880808444", id);
    vw_wallet *w = e2e_enrol(&S, id, "孙丽");
    veil_status st;
    Veil__Empty *empty;

    /* the app link: unlink, and the next login is a fresh pseudonym */
    char *before = sub_at("chat.qingyu", w);
    e2e_unlink(&S, w, "chat.qingyu");
    char *after = sub_at("chat.qingyu", w);
    ck_assert_str_ne(before, after);
    /* unlink again, but relink keeping the pseudonym */
    e2e_unlink(&S, w, "chat.qingyu");
    Veil__Gateway__AppLinkPayload lp = VEIL__GATEWAY__APP_LINK_PAYLOAD__INIT;
    lp.app_id = "chat.qingyu";
    lp.keep_pseudonym = 1;
    ck_assert_int_eq(e2e_citizen(&S, w, "RelinkApp", &lp.base, &empty, &st), VEIL_OK);
    e2e_free(empty);
    char *kept = sub_at("chat.qingyu", w);
    ck_assert_str_eq(kept, after);
    free(before), free(after), free(kept);

    /* the identity: suspended by the admin, then reinstated */
    e2e_set_identity(&S, w, "suspended", "court order 2026-117");
    ck_assert_int_eq(login_err("chat.huiliao", w, &st), VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "login refused");
    e2e_set_identity(&S, w, "active", "court order 2026-117");
    free(sub_at("chat.huiliao", w));

    /* the app itself: suspended by the admin */
    Veil__Gateway__AppRequest ar = VEIL__GATEWAY__APP_REQUEST__INIT;
    Veil__Gateway__App *app;
    ar.app_id = "ride.huoyun";
    ar.reason = "licence withdrawn";
    ck_assert_int_eq(e2e_admin(&S, "SuspendApp", &ar.base, &app, &st), VEIL_OK);
    ck_assert_str_eq(app->status, "suspended");
    e2e_free(app);
    ck_assert_int_eq(login_err("ride.huoyun", w, &st), VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "app is suspended");
    ck_assert_int_eq(e2e_admin(&S, "ReinstateApp", &ar.base, &app, &st), VEIL_OK);
    e2e_free(app);
    free(sub_at("ride.huoyun", w));

    /* the device: a lost phone, revoked from the phone itself */
    Veil__Gateway__RevokeDevicePayload rd = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    ck_assert_int_eq(e2e_citizen(&S, w, "RevokeDevice", &rd.base, &empty, &st), VEIL_OK);
    e2e_free(empty);
    ck_assert_int_eq(login_err("chat.huiliao", w, &st), VEIL_ERR_DENIED);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_new_phone_same_pseudonyms)
{
    char id[19];
    e2e_id_number("33010619750505555", id);
    vw_wallet *old = e2e_enrol(&S, id, "钱伟");
    char *sub = sub_at("travel.jiudian", old);
    vw_wallet *fresh;
    Veil__Gateway__WalletEnrolResponse *er;
    veil_status st;
    ck_assert_int_eq(vw_wallet_new(&fresh), VEIL_OK);
    ck_assert_int_eq(e2e_try_enrol(&S, fresh, id, "钱伟", &er, &st), VEIL_OK);
    ck_assert(!er->new_identity);
    ck_assert_str_eq(er->web_number, old->web_number);
    e2e_free(er);
    char *again = sub_at("travel.jiudian", fresh);
    ck_assert_str_eq(again, sub);
    /* revoking the old phone leaves the new one working */
    Veil__Gateway__RevokeDevicePayload rd = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    Veil__Empty *empty;
    rd.device_id = old->device_id;
    ck_assert_int_eq(e2e_citizen(&S, fresh, "RevokeDevice", &rd.base, &empty, &st), VEIL_OK);
    e2e_free(empty);
    ck_assert_int_eq(login_err("travel.jiudian", old, &st), VEIL_ERR_DENIED);
    free(sub_at("travel.jiudian", fresh));
    free(sub), free(again);
    vw_wallet_free(old);
    vw_wallet_free(fresh);
}
END_TEST

START_TEST(test_callers_kept_apart)
{
    char id[19];
    e2e_id_number("42010219950909666", id);
    vw_wallet *w = e2e_enrol(&S, id, "吴磊");
    veil_status st;
    Veil__Gateway__ListConsentsPayload lp = VEIL__GATEWAY__LIST_CONSENTS_PAYLOAD__INIT;
    Veil__Gateway__SignedRequest req;
    Veil__Gateway__ListConsentsResponse *lr;
    ck_assert_int_eq(vw_sign(w, "/veil.gateway.Wallet/ListConsents", &lp.base, veil_now_ms(), &req),
                     VEIL_OK);
    /* an app may not use the citizen API, even with a valid citizen signature */
    ck_assert_int_eq(e2e_call(&S, "app/chat.lianxin", &veil__gateway__wallet__descriptor,
                              "ListConsents", &req.base, &lr, &st),
                     VEIL_ERR_DENIED);
    /* the citizen may, once */
    ck_assert_int_eq(e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "ListConsents",
                              &req.base, &lr, &st),
                     VEIL_OK);
    e2e_free(lr);
    ck_assert_int_eq(e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "ListConsents",
                              &req.base, &lr, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    /* a signature made for one method does not work for another */
    Veil__Gateway__ListDevicesResponse *ld;
    ck_assert_int_eq(e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "ListDevices",
                              &req.base, &ld, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    vw_signed_free(&req);
    /* unsigned */
    Veil__Gateway__SignedRequest bare = VEIL__GATEWAY__SIGNED_REQUEST__INIT;
    ck_assert_int_eq(e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "ListConsents",
                              &bare.base, &lr, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    /* citizens and apps may not administer; a citizen may not log apps in */
    Veil__Empty e = VEIL__EMPTY__INIT;
    Veil__Gateway__ListAppsResponse *apps;
    ck_assert_int_eq(e2e_call(&S, "app/chat.lianxin", &veil__gateway__admin__descriptor, "ListApps",
                              &e.base, &apps, &st),
                     VEIL_ERR_DENIED);
    /* the admin listener demands a client certificate: a phone cannot even connect */
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__admin__descriptor, "ListApps", &e.base, &apps, &st),
        VEIL_ERR_UNAVAILABLE);
    Veil__Gateway__BeginLoginRequest bl = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *blr;
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__login__descriptor, "BeginLogin", &bl.base, &blr, &st),
        VEIL_ERR_UNAUTHENTICATED);
    /* an app certificate the registry does not know */
    ck_assert_int_eq(e2e_call(&S, "app/chat.wechat", &veil__gateway__login__descriptor,
                              "BeginLogin", &bl.base, &blr, &st),
                     VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "app is not registered");
    /* an unknown attribute */
    const char *bad[] = {"id_number"};
    Veil__Gateway__CompleteLoginResponse *r;
    ck_assert_int_eq(e2e_login(&S, "shop.jiale", w, bad, 1, &r, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message,
                     "attributes: unknown attribute id_number (attributes: " VEIL_ATTR_NAMES ")");
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_access_log_names_apps)
{
    char id[19];
    e2e_id_number("35020319700707777", id);
    vw_wallet *w = e2e_enrol(&S, id, "郑强");
    const char *attrs[] = {"age_over_18"};
    e2e_grant(&S, w, "video.zhibo", attrs, 1);
    e2e_free(login_ok("video.zhibo", w, attrs, 1));
    e2e_free(login_ok("music.kge", w, NULL, 0));
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *log;
    veil_status st;
    ck_assert_int_eq(e2e_citizen(&S, w, "AccessLog", &p.base, &log, &st), VEIL_OK);
    ck_assert(log->chain_valid);
    int zhibo_release = 0, kge_login = 0;
    for (size_t i = 0; i < log->n_entries; i++) {
        const Veil__Gateway__AccessLogEntry *e = log->entries[i];
        if (!strcmp(e->app_id, "video.zhibo") && !strcmp(e->action, "attributes_released"))
            zhibo_release = e->n_attributes == 1 && !strcmp(e->attributes[0], "age_over_18");
        if (!strcmp(e->app_id, "music.kge") && !strcmp(e->action, "ticket_verified"))
            kge_login = 1;
    }
    ck_assert(zhibo_release && kge_login);
    e2e_free(log);
    vw_wallet_free(w);
}
END_TEST

/*
 * The purpose the wallet's access log gives its (last) attribute release;
 * *log holds the text until e2e_free.
 */
static const char *released_purpose(vw_wallet *w, Veil__Gateway__AccessLogResponse **log)
{
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    veil_status st;
    ck_assert_int_eq(e2e_citizen(&S, w, "AccessLog", &p.base, log, &st), VEIL_OK);
    const char *purpose = NULL;
    for (size_t i = 0; i < (*log)->n_entries; i++)
        if (!strcmp((*log)->entries[i]->action, "attributes_released"))
            purpose = (*log)->entries[i]->purpose;
    ck_assert_ptr_nonnull(purpose);
    return purpose;
}

/* Grants for different purposes: the release names each purpose once, even
 * when one purpose is a part of another's text. */
START_TEST(test_release_names_every_purpose)
{
    char id[19];
    e2e_id_number("44030419881212121", id);
    vw_wallet *w = e2e_enrol(&S, id, "黄蓉");
    const char *first[] = {"real_name_verified"}, *second[] = {"province"};
    const char *both[] = {"real_name_verified", "province"};
    e2e_grant_for(&S, w, "shop.jiale", first, 1, "account opening");
    e2e_grant_for(&S, w, "shop.jiale", second, 1, "account");
    Veil__Gateway__CompleteLoginResponse *r = login_ok("shop.jiale", w, both, 2);
    ck_assert_uint_eq(r->n_released, 2);
    e2e_free(r);
    Veil__Gateway__AccessLogResponse *log;
    const char *purpose = released_purpose(w, &log);
    ck_assert_msg(!strcmp(purpose, "account opening; account") ||
                      !strcmp(purpose, "account; account opening"),
                  "the release's purposes are \"%s\"", purpose);
    e2e_free(log);
    vw_wallet_free(w);
}
END_TEST

/*
 * issue 18 item 2: purposes long enough that their join exceeds one grant's
 * 200 bytes and the old 256-byte buffer - three grants of 100-byte purposes
 * of three-byte characters - still log in, and the release names each
 * purpose whole (no cut inside a character).
 */
START_TEST(test_long_purposes_join_whole)
{
    char id[19], p[3][101];
    e2e_id_number("44030419870707070", id);
    vw_wallet *w = e2e_enrol(&S, id, "郭靖");
    const char *attrs[3][1] = {{"real_name_verified"}, {"province"}, {"full_name"}};
    const char *all[] = {"real_name_verified", "province", "full_name"};
    for (int k = 0; k < 3; k++) {
        /* 33 times "税" (3 bytes) and a digit: 100 bytes, different for each grant */
        size_t n = 0;
        for (int i = 0; i < 33; i++, n += 3)
            memcpy(p[k] + n, "\xe7\xa8\x8e", 3);
        p[k][n++] = (char)('1' + k);
        p[k][n] = '\0';
        ck_assert_uint_eq(strlen(p[k]), 100);
        e2e_grant_for(&S, w, "gov.housingfund", attrs[k], 1, p[k]);
    }
    Veil__Gateway__CompleteLoginResponse *r = login_ok("gov.housingfund", w, all, 3);
    ck_assert_uint_eq(r->n_released, 3);
    e2e_free(r);
    Veil__Gateway__AccessLogResponse *log;
    const char *purpose = released_purpose(w, &log);
    ck_assert_uint_eq(strlen(purpose), 3 * 100 + 2 * 2);
    for (int k = 0; k < 3; k++)
        ck_assert_msg(strstr(purpose, p[k]), "purpose %d is not whole in the release", k);
    e2e_free(log);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_app_events_after_unlink)
{
    char id[19];
    e2e_id_number("12010119830303888", id);
    vw_wallet *w = e2e_enrol(&S, id, "冯军");
    char *sub = sub_at("social.shequ", w);
    free(sub_at("social.xiangqin", w));
    e2e_unlink(&S, w, "social.shequ");
    e2e_await_events();

    Veil__Gateway__PollEventsResponse *ev = e2e_poll(&S, "social.shequ", NULL);
    ck_assert_int_eq(e2e_events_of(&S, ev, "social.shequ", "app_unlinked", sub), 1);
    /* resuming from the cursor gives nothing new */
    Veil__Gateway__PollEventsResponse *again = e2e_poll(&S, "social.shequ", ev->cursor);
    for (size_t i = 0; i < again->n_events; i++)
        ck_assert_ptr_null(strstr(again->events[i], sub));
    e2e_free(again);
    e2e_free(ev);
    /* another app never sees this citizen's event for social.shequ */
    ev = e2e_poll(&S, "social.xiangqin", NULL);
    ck_assert_int_eq(e2e_events_of(&S, ev, "social.xiangqin", "app_unlinked", sub), 0);
    e2e_free(ev);
    free(sub);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_key_rotation)
{
    char id[19];
    e2e_id_number("65010219990101999", id);
    vw_wallet *w = e2e_enrol(&S, id, "马丽");
    Veil__Gateway__CompleteLoginResponse *first = login_ok("edu.xuexi", w, NULL, 0);
    veil_status st;
    Veil__Gateway__RotateKeyRequest rk = VEIL__GATEWAY__ROTATE_KEY_REQUEST__INIT;
    Veil__Gateway__RotateKeyResponse *rr;

    /*
     * Issue 13 reproduction: a new key file and a restart change nothing -
     * the version in use is the gateway's key_state, changed only by RotateKey.
     */
    h_keyfile(S.keys[H_PSEUDONYM], "pseudonym", 2);
    h_keyfile(S.keys[H_GATEWAY], "assertion", 2);
    ck_assert_int_eq(h_stop(&S.pseudonym), 0);
    ck_assert_int_eq(h_stack_restart(&S, H_PSEUDONYM), 0);
    ck_assert_int_eq(h_stop(&S.gateway), 0);
    ck_assert_int_eq(h_stack_restart(&S, H_GATEWAY), 0);
    Veil__Gateway__CompleteLoginResponse *restarted = login_ok("edu.xuexi", w, NULL, 0);
    ck_assert_str_eq(restarted->sub, first->sub);
    ck_assert_str_eq(restarted->previous_sub, "");
    /* and the restarted gateway still signs with assertion-1 although assertion-2 is present */
    ck_assert_ptr_nonnull(strstr(h_jws_header(restarted->assertion), "\"kid\":\"assertion-1\""));
    e2e_free(restarted);
    /* a request naming no version is refused: it must not end or start anything */
    rk.kind = "pseudonym";
    rk.version = 0;
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "version must be a key version of 1 or more (or end_overlap set)");
    rk.end_overlap = 1; /* and there is no overlap to end */
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_ERR_PRECONDITION);
    rk.end_overlap = 0;

    /* pseudonym keys: v2 becomes current, with v1 as the overlap; assertions carry previous_sub */
    rk.version = 2;
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_OK);
    ck_assert_uint_eq(rr->current, 2);
    ck_assert_uint_eq(rr->previous, 1);
    e2e_free(rr);
    Veil__Gateway__CompleteLoginResponse *second = login_ok("edu.xuexi", w, NULL, 0);
    ck_assert_str_ne(second->sub, first->sub);
    ck_assert_str_eq(second->previous_sub, first->sub);
    json_t *c = e2e_claims(second->assertion);
    ck_assert_str_eq(json_string_value(json_object_get(c, "previous_sub")), first->sub);
    json_decref(c);

    /* assertion keys: a new key is published before it signs */
    char *jwks = e2e_jwks(&S);
    ck_assert_ptr_nonnull(strstr(jwks, "\"assertion-2\""));
    ck_assert_ptr_nonnull(strstr(jwks, "\"assertion-1\""));
    free(jwks);
    rk.kind = "assertion";
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_OK);
    e2e_free(rr);
    Veil__Gateway__CompleteLoginResponse *third = login_ok("edu.xuexi", w, NULL, 0);
    jwks = e2e_jwks(&S);
    char *tokens[] = {first->assertion, third->assertion};
    char *auds[] = {"edu.xuexi", "edu.xuexi"};
    ck_assert_int_eq(e2e_verify_with_pyjwt(jwks, tokens, auds, 2), 2);
    free(jwks);

    /* ending the overlap (explicitly) stops previous_sub */
    rk.kind = "pseudonym";
    rk.version = 0;
    rk.end_overlap = 1;
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_OK);
    e2e_free(rr);
    Veil__Gateway__CompleteLoginResponse *fourth = login_ok("edu.xuexi", w, NULL, 0);
    ck_assert_str_eq(fourth->sub, second->sub);
    ck_assert_str_eq(fourth->previous_sub, "");
    /* unknown versions are refused */
    rk.version = 7;
    rk.end_overlap = 0;
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_ERR_PRECONDITION);
    e2e_free(first), e2e_free(second), e2e_free(third), e2e_free(fourth);
    vw_wallet_free(w);
}
END_TEST

/* A consent grant through the gateway; the receipt (malloc'd). */
static char *grant_receipt(const vw_wallet *w)
{
    Veil__Gateway__GrantConsentPayload p = VEIL__GATEWAY__GRANT_CONSENT_PAYLOAD__INIT;
    Veil__Gateway__GrantConsentResponse *r;
    veil_status st;
    char *attrs[] = {"province"};
    p.app_id = "shop.jiale";
    p.attributes = attrs;
    p.n_attributes = 1;
    p.purpose = "delivery";
    p.expires_at_ms = veil_now_ms() + 86400000;
    veil_err err = VEIL_ERR_UNAVAILABLE;
    /* the gateway's channel to a just restarted consent service may still be reconnecting */
    for (int i = 0; i < 30 && err == VEIL_ERR_UNAVAILABLE; i++)
        if ((err = e2e_citizen(&S, w, "GrantConsent", &p.base, &r, &st)) == VEIL_ERR_UNAVAILABLE)
            usleep(100 * 1000);
    ck_assert_msg(err == VEIL_OK, "grant: %s", st.message);
    char *receipt = strdup(r->receipt);
    e2e_free(r);
    return receipt;
}

/*
 * The consent service's receipt key (issue 13 item 1, issue 16 item 5): a new
 * key file is loaded and published but signs nothing, through a restart too,
 * until `RotateKey receipt`; then it signs at once, with no restart.
 */
START_TEST(test_receipt_key_rotation)
{
    char id[19];
    e2e_id_number("65010219990101975", id);
    vw_wallet *w = e2e_enrol(&S, id, "马可");
    h_keyfile(S.keys[H_CONSENT], "receipt", 2);
    ck_assert_int_eq(h_stop(&S.consent), 0);
    ck_assert_int_eq(h_stack_restart(&S, H_CONSENT), 0);
    char *r = grant_receipt(w);
    ck_assert_int_eq(strncmp(e2e_kid_of(r), "receipt-1\"", 10), 0);
    free(r);
    Veil__Gateway__RotateKeyRequest rk = VEIL__GATEWAY__ROTATE_KEY_REQUEST__INIT;
    Veil__Gateway__RotateKeyResponse *rr;
    veil_status st;
    rk.kind = "receipt";
    rk.version = 9;
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_ERR_PRECONDITION);
    ck_assert_str_eq(st.message, "the consent service has no key file receipt-9.key");
    rk.version = 2;
    ck_assert_int_eq(e2e_admin(&S, "RotateKey", &rk.base, &rr, &st), VEIL_OK);
    ck_assert_uint_eq(rr->current, 2);
    ck_assert_uint_eq(rr->previous, 1);
    e2e_free(rr);
    r = grant_receipt(w);
    ck_assert_int_eq(strncmp(e2e_kid_of(r), "receipt-2\"", 10), 0);
    free(r);
    vw_wallet_free(w);
}
END_TEST

/* Waits up to 5 s for text in a process's log. */
static int log_shows(const h_proc *p, const char *text)
{
    for (int i = 0; i < 100; i++) {
        if (h_log_contains(p, text))
            return 1;
        usleep(50 * 1000);
    }
    return 0;
}

/*
 * Issue 16 item 5: key files added to a running stack's key folders are
 * loaded by the gateway and the vault without a restart or SIGHUP, and the
 * versions in use stay where the rotation commands put them.
 */
START_TEST(test_key_files_reload_without_restart)
{
    char id[19];
    e2e_id_number("65010219990101983", id);
    vw_wallet *w = e2e_enrol(&S, id, "马兰");
    Veil__Gateway__CompleteLoginResponse *before = login_ok("edu.xuexi", w, NULL, 0);
    h_keyfile(S.keys[H_GATEWAY], "assertion", 5);
    h_keyfile(S.keys[H_VAULT], "master", 5);
    h_keyfile(S.keys[H_PSEUDONYM], "pseudonym", 5);
    ck_assert(log_shows(&S.gateway, "assertion keys reloaded"));
    ck_assert(log_shows(&S.gateway, "\"newest\":5"));
    ck_assert(log_shows(&S.vault, "vault keys reloaded"));
    ck_assert(log_shows(&S.pseudonym, "pseudonym keys reloaded"));
    ck_assert(log_shows(&S.pseudonym, "\"newest\":5"));
    ck_assert(!h_log_contains(&S.gateway, "reloading on SIGHUP"));
    Veil__Gateway__CompleteLoginResponse *after = login_ok("edu.xuexi", w, NULL, 0);
    ck_assert_str_eq(after->sub, before->sub);
    ck_assert_ptr_null(strstr(h_jws_header(after->assertion), "assertion-5"));
    /* published ahead of its use, like any newer key */
    char *jwks = e2e_jwks(&S);
    ck_assert_ptr_nonnull(strstr(jwks, "\"assertion-5\""));
    free(jwks);
    e2e_free(before), e2e_free(after);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_erase_then_enrol_anew)
{
    char id[19];
    e2e_id_number("21010219860606123", id);
    vw_wallet *w = e2e_enrol(&S, id, "刘洋");
    char *sub = sub_at("news.xinwen", w);
    Veil__Gateway__ErasePayload ep = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    Veil__Empty *empty;
    veil_status st;
    ep.confirm = "yes";
    ck_assert_int_eq(e2e_citizen(&S, w, "Erase", &ep.base, &empty, &st), VEIL_ERR_PRECONDITION);
    ep.confirm = "erase my identity";
    ck_assert_int_eq(e2e_citizen(&S, w, "Erase", &ep.base, &empty, &st), VEIL_OK);
    e2e_free(empty);
    veil_err err = login_err("news.xinwen", w, &st);
    ck_assert(err == VEIL_ERR_UNAUTHENTICATED || err == VEIL_ERR_DENIED);
    /* the same person enrols again: a new identity, new pseudonyms */
    vw_wallet *again = e2e_enrol(&S, id, "刘洋");
    ck_assert_str_ne(again->web_number, w->web_number);
    char *sub2 = sub_at("news.xinwen", again);
    ck_assert_str_ne(sub2, sub);
    free(sub), free(sub2);
    vw_wallet_free(w);
    vw_wallet_free(again);
}
END_TEST

START_TEST(test_revocation_stops_cached_logins_within_a_second)
{
    char id[19];
    e2e_id_number("37020219910202246", id);
    vw_wallet *w = e2e_enrol(&S, id, "黄蓉");
    /* warm the cache: these answers now come from the gateway's memory */
    for (int i = 0; i < 3; i++)
        free(sub_at("ride.kuaiche", w));
    e2e_set_identity(&S, w, "suspended", "test");
    veil_status st;
    int64_t t0 = veil_now_ms();
    veil_err err = VEIL_OK;
    while (err == VEIL_OK && veil_now_ms() - t0 < 3000)
        err = login_err("ride.kuaiche", w, &st);
    int64_t took = veil_now_ms() - t0;
    ck_assert_int_eq(err, VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "login refused");
    ck_assert_msg(took < 1000, "the suspension took %lld ms to stop logins", (long long)took);
    vw_wallet_free(w);
}
END_TEST

/* The caches really answer: the gateway reports hits when it stops. */
START_TEST(test_cache_is_used)
{
    h_stack s;
    ck_assert_int_eq(h_stack_start(&s, NULL), 0);
    h_stack saved = S;
    S = s;
    char id[19];
    e2e_id_number("45010219930303357", id);
    vw_wallet *w = e2e_enrol(&S, id, "覃云");
    for (int i = 0; i < 5; i++)
        free(sub_at("music.yinyue", w));
    vw_wallet_free(w);
    h_proc gateway = S.gateway;
    ck_assert_int_eq(h_stack_stop(&S), 0);
    S = saved;
    ck_assert(h_log_contains(&gateway, "\"cache_hits\":"));
    ck_assert(!h_log_contains(&gateway, "\"cache_hits\":0,"));
}
END_TEST

/*
 * Whether the running process pid holds needle anywhere in its readable
 * memory: every readable mapping of at most 1 GiB (larger ones are
 * AddressSanitizer's shadow, which holds no data), read through
 * /proc/<pid>/mem in chunks that overlap by len - 1.  Freed memory is read
 * too: what the process ever received and did not wipe is still there.
 */
static int process_holds(pid_t pid, const void *needle, size_t len)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *maps = fopen(path, "r");
    snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
    int mem = open(path, O_RDONLY);
    ck_assert_ptr_nonnull(maps);
    ck_assert_int_ge(mem, 0);
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK + len);
    int found = 0;
    while (!found && fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r' ||
            hi - lo > (1ul << 30))
            continue;
        for (unsigned long at = lo; !found && at < hi; at += CHUNK) {
            size_t want = hi - at < CHUNK + len - 1 ? hi - at : CHUNK + len - 1;
            ssize_t got = pread(mem, buf, want, (off_t)at);
            if (got <= 0)
                break; /* a mapping the kernel does not let us read (e.g. vvar) */
            found = memmem(buf, (size_t)got, needle, len) != NULL;
        }
    }
    free(buf);
    close(mem);
    fclose(maps);
    return found;
}

/*
 * Issue 12 item 3: the gateway relays an enrolment without ever holding the
 * citizen's ID number, name or the attestation's hash of the number: the
 * phone seals them to the vault.  After an enrolment through the real
 * gateway, its whole memory is searched.  The request id, which travels in
 * the clear in the same message, is found there: the search sees what the
 * gateway received.
 */
START_TEST(test_gateway_never_holds_the_identity)
{
    char first17[18], id[19], name[64], request_id[40];
    unsigned char rid[16], sig[64], sealed[VEIL_ENROL_SEALED_BYTES], hash[32];
    snprintf(first17, sizeof first17, "110105%04u%02u%02u%03u", 1950 + randombytes_uniform(50),
             1 + randombytes_uniform(9), 10 + randombytes_uniform(18),
             100 + randombytes_uniform(900));
    e2e_id_number(first17, id);
    snprintf(name, sizeof name, "甄%08x", randombytes_random());
    randombytes_buf(rid, sizeof rid);
    veil_b64url_encode(request_id, sizeof request_id, rid, sizeof rid);
    crypto_generichash(hash, sizeof hash, (const unsigned char *)id, 18, NULL, 0);

    vw_wallet *w;
    ck_assert_int_eq(vw_wallet_new(&w), VEIL_OK);
    Veil__Gateway__WalletEnrolRequest req = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    Veil__Gateway__WalletEnrolResponse *resp;
    veil_status st;
    vw_attest(w, S.proofing_seed, id, name, 1, veil_now_ms(), sig, &req);
    req.request_id = request_id;
    req.device_label = name; /* a label may hold a name: sealed too */
    e2e_seal(&S, w, &req, sealed);
    ck_assert_ptr_null(memmem(sealed, sizeof sealed, id, 18));
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "Enrol", &req.base, &resp, &st),
        VEIL_OK);
    ck_assert(resp->new_identity);
    ck_assert_int_eq(vw_wallet_enrolled(w, resp), VEIL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    ck_assert_msg(process_holds(S.gateway.pid, request_id, strlen(request_id)),
                  "the search did not find the request id the gateway received");
    ck_assert_msg(!process_holds(S.gateway.pid, id, 18), "the gateway holds the ID number");
    ck_assert_msg(!process_holds(S.gateway.pid, name, strlen(name)), "the gateway holds the name");
    ck_assert_msg(!process_holds(S.gateway.pid, hash, sizeof hash),
                  "the gateway holds the hash of the ID number");
    /* the vault, which opened it, did hold them: the person exists and logs in */
    Veil__Gateway__CompleteLoginResponse *r = login_ok("gov.tax", w, NULL, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* the clear fields are refused, so no phone can send them through the gateway */
    Veil__Gateway__WalletEnrolRequest clear = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    vw_attest(w, S.proofing_seed, id, name, 1, veil_now_ms(), sig, &clear);
    clear.request_id = "clear-fields";
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "Enrol", &clear.base, &resp, &st),
        VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "identity fields are not accepted in the clear: seal them to the "
                                 "vault in sealed_identity");
    Veil__Gateway__WalletEnrolRequest none = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    none.request_id = "no-identity";
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "Enrol", &none.base, &resp, &st),
        VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "sealed_identity is required");
    vw_wallet_free(w);
}
END_TEST

/* A login at app by w whose ticket carries time_ms (the phone's clock); its status. */
static veil_err login_at_time(const char *app, const vw_wallet *w, int64_t time_ms,
                              veil_status *st)
{
    unsigned char ch[32];
    char *ticket;
    Veil__Gateway__CompleteLoginResponse *r = NULL;
    ck_assert_int_eq(e2e_challenge(&S, app, ch), VEIL_OK);
    ck_assert_int_eq(vw_ticket(w, app, ch, sizeof ch, time_ms, &ticket), VEIL_OK);
    veil_err err = e2e_complete(&S, app, ticket, NULL, 0, &r, st);
    e2e_free(r);
    free(ticket);
    return err;
}

/* Whether w's access log holds a refused login at app with this reason. */
static int log_has_refusal(const vw_wallet *w, const char *app, const char *reason)
{
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *log;
    veil_status st;
    int found = 0;
    ck_assert_int_eq(e2e_citizen(&S, w, "AccessLog", &p.base, &log, &st), VEIL_OK);
    for (size_t i = 0; i < log->n_entries; i++) {
        const Veil__Gateway__AccessLogEntry *e = log->entries[i];
        found |= strcmp(e->action, "login_refused") == 0 && strcmp(e->app_id, app) == 0 &&
                 strcmp(e->detail, reason) == 0;
    }
    e2e_free(log);
    return found;
}

/*
 * Issue 12 item 7: whatever about the citizen stops a login, the app reads
 * the same status and message, byte for byte; the citizen's wallet reads
 * the reason in its access log.
 */
START_TEST(test_one_refusal_for_apps_the_reason_for_the_wallet)
{
    const char *app = "shop.youpin";
    char id[5][19];
    const char *first17[] = {"41010219850101111", "41010219850202222", "41010219850303333",
                             "41010219850404444", "41010219850505555"};
    vw_wallet *w[5];
    for (int i = 0; i < 5; i++) {
        e2e_id_number(first17[i], id[i]);
        w[i] = e2e_enrol(&S, id[i], "郑和");
        free(sub_at(app, w[i])); /* each logs in once: a known user of the app */
    }
    veil_status st[5];
    veil_err err[5];
    Veil__Empty *empty;

    /* 0: the identity suspended by the admin */
    Veil__Gateway__IdentityStateRequest is = VEIL__GATEWAY__IDENTITY_STATE_REQUEST__INIT;
    is.web_number = w[0]->web_number;
    is.state = "suspended";
    is.reason = "court order 2026-118";
    ck_assert_int_eq(e2e_admin(&S, "SetIdentityState", &is.base, &empty, &st[0]), VEIL_OK);
    e2e_free(empty);
    err[0] = login_err(app, w[0], &st[0]);
    /* 1: the identity revoked by the admin */
    is.web_number = w[1]->web_number;
    is.state = "revoked";
    ck_assert_int_eq(e2e_admin(&S, "SetIdentityState", &is.base, &empty, &st[1]), VEIL_OK);
    e2e_free(empty);
    err[1] = login_err(app, w[1], &st[1]);
    /* 2: the phone revoked (a second phone of the same person reads the log) */
    vw_wallet *second;
    Veil__Gateway__WalletEnrolResponse *er;
    ck_assert_int_eq(vw_wallet_new(&second), VEIL_OK);
    ck_assert_int_eq(e2e_try_enrol(&S, second, id[2], "郑和", &er, &st[2]), VEIL_OK);
    e2e_free(er);
    Veil__Gateway__RevokeDevicePayload rd = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    ck_assert_int_eq(e2e_citizen(&S, w[2], "RevokeDevice", &rd.base, &empty, &st[2]), VEIL_OK);
    e2e_free(empty);
    err[2] = login_err(app, w[2], &st[2]);
    /* 3: the phone's clock 10 minutes ahead */
    err[3] = login_at_time(app, w[3], veil_now_ms() + 600000, &st[3]);
    /* 4: the identity erased: its phone's tickets name a device that no longer exists */
    Veil__Gateway__ErasePayload ep = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    ep.confirm = "erase my identity";
    ck_assert_int_eq(e2e_citizen(&S, w[4], "Erase", &ep.base, &empty, &st[4]), VEIL_OK);
    e2e_free(empty);
    err[4] = login_err(app, w[4], &st[4]);

    for (int i = 0; i < 5; i++) {
        ck_assert_msg(err[i] == VEIL_ERR_DENIED && st[i].code == GRPC_STATUS_PERMISSION_DENIED,
                      "reason %d: %s %s", i, veil_status_name(st[i].code), st[i].message);
        ck_assert_str_eq(st[i].message, "login refused");
        ck_assert_str_eq(st[i].message, st[0].message);
    }

    /* the citizen's wallet has the reason */
    ck_assert(log_has_refusal(w[0], app, "identity_suspended"));
    ck_assert(log_has_refusal(second, app, "device_revoked"));
    ck_assert(log_has_refusal(w[3], app, "ticket_time_outside_skew"));
    /* a revoked identity's phone may still read its own log */
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *log;
    if (e2e_citizen(&S, w[1], "AccessLog", &p.base, &log, &st[1]) == VEIL_OK) {
        e2e_free(log);
        ck_assert(log_has_refusal(w[1], app, "identity_revoked"));
    }
    for (int i = 0; i < 5; i++)
        vw_wallet_free(w[i]);
    vw_wallet_free(second);
}
END_TEST

int main(void)
{
    const TTest *const flow[] = {test_81_apps_81_pseudonyms,
                                 test_gateway_never_holds_the_identity,
                                 test_consent_releases_minimal_attributes,
                                 test_withdrawn_consent_stops_release,
                                 test_ticket_bound_to_app_and_challenge,
                                 test_every_revocation_kind,
                                 test_one_refusal_for_apps_the_reason_for_the_wallet,
                                 test_new_phone_same_pseudonyms,
                                 test_callers_kept_apart,
                                 test_access_log_names_apps,
                                 test_release_names_every_purpose,
                                 test_long_purposes_join_whole,
                                 test_app_events_after_unlink,
                                 test_erase_then_enrol_anew,
                                 test_revocation_stops_cached_logins_within_a_second,
                                 NULL};
    const TTest *const rot[] = {test_key_rotation, test_key_files_reload_without_restart,
                                test_receipt_key_rotation, NULL};
    const TTest *const cache[] = {test_cache_is_used, NULL};
    const h_case cases[] = {{"flow", 300, stack_up, stack_down, NULL, NULL, flow},
                            {"rotation", 300, stack_up, stack_down, NULL, NULL, rot},
                            {"cache", 300, NULL, NULL, NULL, NULL, cache},
                            {NULL}};
    return h_run_suite(h_suite("gateway", cases));
}
