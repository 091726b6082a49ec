/*
 * check_consent.c - the consent service over real gRPC and PostgreSQL:
 * grant, check, withdraw, supersession, expiry, the citizen's list,
 * receipts verified by libveil and by an independent JOSE library
 * (Debian's python3-jwt) including tampered ones, key rotation, forgetting
 * a subject, the caller policy, bad input, that a grant failing half-way
 * leaves nothing behind, and CheckBatch (issue 15): each item answered as
 * Check alone, bad items failing alone.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <jansson.h>

#include "consent_test.h"
#include "veil/codec.h"
#include "veil/jws.h"
#include "veil/formats.h"

static h_svc con;
static veil_channel *gw;

static const char *const wechat_scope[] = {"real_name_verified", "age_over_18", "province", NULL};
static const char *const gov_scope[] = {"real_name_verified", "full_name", "birth_date", "province",
                                        NULL};

static void setup(void)
{
    gw = ct_start(&con);
}

static void teardown(void)
{
    ct_stop(&con, gw);
}

static veil_err grant(const unsigned char *s, const char *app, const char *const *attrs,
                      const char *const *scope, char *rid, char **receipt)
{
    return ct_grant(gw, s, 32, app, attrs, "account age check for the chat service",
                    ct_now_ms() + 30 * CT_DAY_MS, scope, rid, receipt, NULL);
}

START_TEST(test_grant_check_withdraw)
{
    unsigned char s[32], t[32];
    char rid[64], out[1024], want[256];
    veil_status st;
    ct_subject(s, 1);
    ct_subject(t, 2);
    const char *const asked[] = {"age_over_18", "province", "real_name_verified", NULL};
    /* nothing granted yet */
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", asked, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "");

    const char *const attrs[] = {"age_over_18", "province", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, rid, NULL), VEIL_OK);
    ck_assert_uint_eq(strlen(rid), 22); /* 16 random bytes, base64url */
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", asked, out, NULL), VEIL_OK);
    snprintf(want, sizeof want, "age_over_18=%s,province=%s", rid, rid);
    ck_assert_str_eq(out, want);
    /* the answer follows the request's order, and carries purpose and expiry */
    Veil__Consent__CheckRequest req = VEIL__CONSENT__CHECK_REQUEST__INIT;
    Veil__Consent__CheckResponse *resp;
    const char *const reversed[] = {"province", "age_over_18"};
    req.subject_ref.data = s;
    req.subject_ref.len = 32;
    req.app_id = "chat.wechat";
    req.attributes = (char **)reversed;
    req.n_attributes = 2;
    ck_assert_int_eq(veil_channel_call(gw, "Check", &req.base, NULL, 5000, &resp, &st), VEIL_OK);
    ck_assert_uint_eq(resp->n_granted, 2);
    ck_assert_str_eq(resp->granted[0]->attribute, "province");
    ck_assert_str_eq(resp->granted[0]->purpose, "account age check for the chat service");
    ck_assert_int_gt(resp->granted[0]->expires_at_ms, ct_now_ms() + 29 * CT_DAY_MS);
    ck_assert_int_eq(resp->granted[0]->expires_at_ms % 1000, 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* consent is per subject and per app */
    ck_assert_int_eq(ct_check(gw, t, "chat.wechat", asked, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(ct_check(gw, s, "shop.taobao", asked, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "");

    /* withdraw one attribute: it is gone from the next check, the other stays */
    const char *const province[] = {"province", NULL};
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", province, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "province");
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", asked, out, NULL), VEIL_OK);
    snprintf(want, sizeof want, "age_over_18=%s", rid);
    ck_assert_str_eq(out, want);
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", province, out, &st), VEIL_ERR_NOT_FOUND);
    ck_assert_str_eq(st.message, "no live consent for this app");
    /* withdraw everything (an empty list) */
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", NULL, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "age_over_18");
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", asked, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", NULL, out, &st), VEIL_ERR_NOT_FOUND);
    /* a subject this service has never heard of has nothing to withdraw */
    ck_assert_int_eq(ct_withdraw(gw, t, "chat.wechat", NULL, out, &st), VEIL_ERR_NOT_FOUND);
    /* asking for nothing is answered with nothing */
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", NULL, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_supersession_and_list)
{
    unsigned char s[32];
    char r1[64], r2[64], r3[64], out[1024], want[256];
    ct_subject(s, 3);
    Veil__Consent__ListResponse *l = ct_list(gw, s);
    ck_assert_uint_eq(l->n_grants, 0); /* an unknown subject: nothing recorded */
    protobuf_c_message_free_unpacked(&l->base, NULL);

    const char *const a1[] = {"age_over_18", "real_name_verified", NULL};
    const char *const a2[] = {"age_over_18", "province", NULL};
    const char *const a3[] = {"full_name", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", a1, wechat_scope, r1, NULL), VEIL_OK);
    h_sleep_ms(1100); /* grants are stamped in whole seconds: keep the order visible */
    ck_assert_int_eq(grant(s, "chat.wechat", a2, wechat_scope, r2, NULL), VEIL_OK);
    ck_assert_int_eq(grant(s, "gov.tax", a3, gov_scope, r3, NULL), VEIL_OK);
    /* the newer grant of age_over_18 supersedes the older one; real_name_verified stays */
    const char *const asked[] = {"age_over_18", "real_name_verified", "province", NULL};
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", asked, out, NULL), VEIL_OK);
    snprintf(want, sizeof want, "age_over_18=%s,real_name_verified=%s,province=%s", r2, r1, r2);
    ck_assert_str_eq(out, want);
    const char *const rnv[] = {"real_name_verified", NULL};
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", rnv, out, NULL), VEIL_OK);

    /* the citizen's view: every grant, newest first, with what is left of it */
    l = ct_list(gw, s);
    ck_assert_uint_eq(l->n_grants, 3);
    Veil__Consent__Grant *g1 = NULL, *g2 = NULL, *g3 = NULL;
    for (size_t i = 0; i < l->n_grants; i++) {
        Veil__Consent__Grant *g = l->grants[i];
        if (strcmp(g->receipt_id, r1) == 0)
            g1 = g;
        if (strcmp(g->receipt_id, r2) == 0)
            g2 = g;
        if (strcmp(g->receipt_id, r3) == 0)
            g3 = g;
    }
    ck_assert(g1 && g2 && g3);
    ck_assert_ptr_eq(l->grants[2], g1);        /* oldest last */
    ck_assert_str_eq(g1->status, "withdrawn"); /* age_over_18 superseded, the rest withdrawn */
    ck_assert_uint_eq(g1->n_attributes, 0);
    ck_assert_uint_eq(g1->n_withdrawn, 1);
    ck_assert_str_eq(g1->withdrawn[0], "real_name_verified");
    ck_assert_str_eq(g2->status, "active");
    ck_assert_uint_eq(g2->n_attributes, 2);
    ck_assert_str_eq(g2->attributes[0], "age_over_18");
    ck_assert_str_eq(g2->attributes[1], "province");
    ck_assert_str_eq(g2->app_id, "chat.wechat");
    ck_assert_str_eq(g3->app_id, "gov.tax");
    ck_assert_str_eq(g3->status, "active");
    ck_assert_int_eq(g2->granted_at_ms % 1000, 0);
    ck_assert_int_gt(g2->granted_at_ms, g1->granted_at_ms);
    ck_assert_ptr_nonnull(strchr(g2->receipt, '.'));
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* a grant wholly replaced by a newer one says so */
    const char *const only_age[] = {"age_over_18", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", only_age, wechat_scope, r1, NULL), VEIL_OK);
    const char *const prov[] = {"province", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", prov, wechat_scope, r1, NULL), VEIL_OK);
    l = ct_list(gw, s);
    for (size_t i = 0; i < l->n_grants; i++)
        if (strcmp(l->grants[i]->receipt_id, r2) == 0)
            ck_assert_str_eq(l->grants[i]->status, "superseded");
    protobuf_c_message_free_unpacked(&l->base, NULL);
}
END_TEST

START_TEST(test_expiry)
{
    unsigned char s[32];
    char rid[64], out[1024];
    veil_status st;
    ct_subject(s, 4);
    const char *const attrs[] = {"age_over_18", NULL};
    /* expiry is kept to the second, as the receipt states it */
    int64_t expires = ct_now_ms() + 2500;
    ck_assert_int_eq(ct_grant(gw, s, 32, "chat.wechat", attrs, "a short trial", expires,
                              wechat_scope, rid, NULL, NULL),
                     VEIL_OK);
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", attrs, out, NULL), VEIL_OK);
    ck_assert_ptr_nonnull(strstr(out, rid));
    int64_t until = expires - expires % 1000;
    while (ct_now_ms() < until + 100)
        h_sleep_ms(50);
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", attrs, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, ""); /* expired: no longer granted */
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", NULL, out, &st), VEIL_ERR_NOT_FOUND);
    Veil__Consent__ListResponse *l = ct_list(gw, s);
    ck_assert_uint_eq(l->n_grants, 1);
    ck_assert_str_eq(l->grants[0]->status, "expired");
    ck_assert_int_eq(l->grants[0]->expires_at_ms, until);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    /* a new grant after expiry is live again */
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, rid, NULL), VEIL_OK);
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", attrs, out, NULL), VEIL_OK);
    ck_assert_ptr_nonnull(strstr(out, rid));
}
END_TEST

/* Verifies a receipt with libveil against a JWKS; returns the payload or NULL. */
static json_t *verify(const char *jwks_text, const char *receipt, veil_err *err)
{
    veil_jwks jwks;
    json_t *payload = NULL;
    ck_assert_int_eq(veil_jwks_parse(jwks_text, &jwks), VEIL_OK);
    *err = veil_jws_verify(receipt, strlen(receipt), "veil-consent-receipt+jwt", veil_jwks_find,
                           &jwks, &payload);
    return payload;
}

/* The receipt with its payload rewritten (one attribute swapped), signature kept. */
static char *tamper(const char *receipt, const char *from, const char *to)
{
    const char *d1 = strchr(receipt, '.'), *d2 = strrchr(receipt, '.');
    unsigned char json[2048];
    size_t n;
    ck_assert_int_eq(veil_b64url_decode(json, sizeof json - 1, d1 + 1, (size_t)(d2 - d1 - 1), &n),
                     0);
    json[n] = '\0';
    char edited[2048];
    char *at = strstr((char *)json, from);
    ck_assert_ptr_nonnull(at);
    snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - (char *)json), json, to,
             at + strlen(from));
    char b64[4096];
    veil_b64url_encode(b64, sizeof b64, edited, strlen(edited));
    size_t len = (size_t)(d1 - receipt) + 1 + strlen(b64) + strlen(d2) + 1;
    char *out = malloc(len);
    snprintf(out, len, "%.*s.%s%s", (int)(d1 - receipt), receipt, b64, d2);
    return out;
}

START_TEST(test_receipt_verifies)
{
    unsigned char s[32];
    char rid[64], *receipt;
    veil_err err;
    ct_subject(s, 5);
    const char *const attrs[] = {"age_over_18", "province", NULL};
    int64_t expires = ct_now_ms() + 90 * CT_DAY_MS;
    int64_t before = ct_now_ms() / 1000;
    ck_assert_int_eq(ct_grant(gw, s, 32, "chat.wechat", attrs, "年龄核验 (age check)", expires,
                              wechat_scope, rid, &receipt, NULL),
                     VEIL_OK);
    int64_t after = ct_now_ms() / 1000;
    char *jwks = ct_jwks(gw);
    json_t *p = verify(jwks, receipt, &err);
    ck_assert_int_eq(err, VEIL_OK);
    ck_assert_str_eq(json_string_value(json_object_get(p, "iss")), "veil-consent");
    ck_assert_str_eq(json_string_value(json_object_get(p, "receipt_id")), rid);
    ck_assert_str_eq(json_string_value(json_object_get(p, "app")), "chat.wechat");
    ck_assert_str_eq(json_string_value(json_object_get(p, "purpose")), "年龄核验 (age check)");
    json_t *a = json_object_get(p, "attributes");
    ck_assert_uint_eq(json_array_size(a), 2);
    ck_assert_str_eq(json_string_value(json_array_get(a, 0)), "age_over_18");
    ck_assert_str_eq(json_string_value(json_array_get(a, 1)), "province");
    json_int_t granted = json_integer_value(json_object_get(p, "granted_at"));
    ck_assert(granted >= before && granted <= after);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "iat")), granted);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "expires_at")), expires / 1000);
    /* exactly these claims: nothing names or links the subject */
    ck_assert_uint_eq(json_object_size(p), 8);
    json_decref(p);

    /* tampered: an attribute swapped for a more revealing one, or the signature changed */
    char *forged = tamper(receipt, "\"province\"", "\"birth_date\"");
    p = verify(jwks, forged, &err);
    ck_assert_int_eq(err, VEIL_ERR_UNAUTHENTICATED);
    ck_assert_ptr_null(p);
    char *badsig = strdup(receipt);
    char *last = badsig + strlen(badsig) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    p = verify(jwks, badsig, &err);
    ck_assert_int_eq(err, VEIL_ERR_UNAUTHENTICATED);
    free(badsig);
    free(forged);
    free(receipt);
    free(jwks);
}
END_TEST

/* Writes text to a fresh file in dir; returns its path (malloc'd). */
static char *write_file(const char *dir, const char *name, const char *text)
{
    char *path = malloc(1200);
    snprintf(path, 1200, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* What an independent JOSE library makes of a receipt: its exit status and output. */
static int pyjwt(const char *dir, const char *jwks, const char *receipt, char *out, size_t len)
{
    static const char script[] =
        "import json, sys, jwt\n"
        "jwks = jwt.PyJWKSet.from_json(open(sys.argv[1]).read())\n"
        "token = open(sys.argv[2]).read().strip()\n"
        "header = jwt.get_unverified_header(token)\n"
        "if header.get('alg') != 'EdDSA' or header.get('typ') != 'veil-consent-receipt+jwt':\n"
        "    print('unexpected header'); sys.exit(2)\n"
        "key = [k for k in jwks.keys if k.key_id == header['kid']][0]\n"
        "try:\n"
        "    claims = jwt.decode(token, key.key, algorithms=['EdDSA'])\n"
        "except jwt.InvalidSignatureError:\n"
        "    print('invalid signature'); sys.exit(3)\n"
        "print(json.dumps(claims, sort_keys=True, ensure_ascii=False))\n";
    char *py = write_file(dir, "verify.py", script);
    char *jf = write_file(dir, "jwks.json", jwks);
    char *rf = write_file(dir, "receipt.jws", receipt);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s' '%s' 2>&1", py, jf, rf);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    free(py);
    free(jf);
    free(rf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

START_TEST(test_receipt_verifies_with_pyjwt)
{
    unsigned char s[32];
    char rid[64], *receipt, out[2048], want[1024];
    ct_subject(s, 6);
    const char *const attrs[] = {"real_name_verified", "full_name", NULL};
    int64_t expires = ct_now_ms() + 365 * CT_DAY_MS;
    ck_assert_int_eq(ct_grant(gw, s, 32, "gov.tax", attrs, "filing the annual tax return", expires,
                              gov_scope, rid, &receipt, NULL),
                     VEIL_OK);
    Veil__Consent__ListResponse *l = ct_list(gw, s);
    int64_t granted = l->grants[0]->granted_at_ms / 1000;
    protobuf_c_message_free_unpacked(&l->base, NULL);
    char *jwks = ct_jwks(gw);
    char *dir = h_tempdir("pyjwt");

    ck_assert_int_eq(pyjwt(dir, jwks, receipt, out, sizeof out), 0);
    snprintf(want, sizeof want,
             "{\"app\": \"gov.tax\", \"attributes\": [\"real_name_verified\", \"full_name\"], "
             "\"expires_at\": %lld, \"granted_at\": %lld, \"iat\": %lld, \"iss\": "
             "\"veil-consent\", \"purpose\": \"filing the annual tax return\", \"receipt_id\": "
             "\"%s\"}\n",
             (long long)(expires / 1000), (long long)granted, (long long)granted, rid);
    ck_assert_str_eq(out, want);

    char *forged = tamper(receipt, "\"full_name\"", "\"birth_date\"");
    ck_assert_int_eq(pyjwt(dir, jwks, forged, out, sizeof out), 3);
    ck_assert_str_eq(out, "invalid signature\n");
    free(forged);
    free(receipt);
    free(jwks);
    free(dir);
}
END_TEST

/* Restarts the consent service with CONSENT_RECEIPT_KEY_VERSION set. */
static int con_restart_pinned(unsigned version)
{
    ck_assert_uint_lt(con.n_env, H_SVC_ENV_MAX);
    snprintf(con.env[con.n_env], sizeof con.env[con.n_env], "CONSENT_RECEIPT_KEY_VERSION=%u",
             version);
    con.envp[con.n_env] = con.env[con.n_env];
    con.envp[++con.n_env] = NULL;
    int rc = h_svc_restart(&con);
    veil_channel_free(gw);
    gw = ct_channel(&con, "svc/gateway");
    return rc;
}

START_TEST(test_receipt_key_rotation)
{
    unsigned char s[32];
    char rid[64], *old, *fresh;
    veil_err err;
    ct_subject(s, 7);
    const char *const attrs[] = {"age_over_18", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, rid, &old), VEIL_OK);
    char *jwks = ct_jwks(gw);
    ck_assert_ptr_nonnull(strstr(jwks, "\"receipt-1\""));
    ck_assert_ptr_null(strstr(jwks, "\"receipt-2\""));
    free(jwks);

    /*
     * A new key file is loaded without a restart or SIGHUP (the key folder is
     * watched) and published at once, but signs nothing by itself: the key
     * in use changes only when the operator says so.
     */
    h_keyfile(con.keys, "receipt", 2);
    for (int i = 0; i < 100; i++) {
        jwks = ct_jwks(gw);
        if (strstr(jwks, "\"receipt-2\""))
            break;
        free(jwks);
        jwks = NULL;
        h_sleep_ms(50);
    }
    ck_assert_ptr_nonnull(jwks);
    ck_assert_ptr_nonnull(strstr(jwks, "\"receipt-1\""));
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, rid, &fresh), VEIL_OK);
    ck_assert_ptr_nonnull(strstr(h_jws_header(fresh), "\"kid\":\"receipt-1\""));
    free(fresh);
    /* SIGHUP loads, never switches, either */
    kill(con.proc.pid, SIGHUP);
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, rid, &fresh), VEIL_OK);
    ck_assert_ptr_nonnull(strstr(h_jws_header(fresh), "\"kid\":\"receipt-1\""));
    free(fresh);
    /* the operator's switch (pinning the version; a restart) makes it sign */
    ck_assert_int_eq(con_restart_pinned(2), 0);
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, rid, &fresh), VEIL_OK);
    json_t *p = verify(jwks, fresh, &err);
    ck_assert_int_eq(err, VEIL_OK);
    json_decref(p);
    p = verify(jwks, old, &err);
    ck_assert_int_eq(err, VEIL_OK);
    json_decref(p);
    /* the header names the key */
    ck_assert_ptr_nonnull(strstr(h_jws_header(fresh), "\"kid\":\"receipt-2\""));
    free(old);
    free(fresh);
    free(jwks);
}
END_TEST

START_TEST(test_forget)
{
    unsigned char s[32], t[32];
    char out[1024];
    ct_subject(s, 8);
    ct_subject(t, 9);
    const char *const attrs[] = {"age_over_18", "province", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, NULL, NULL), VEIL_OK);
    ck_assert_int_eq(grant(t, "chat.wechat", attrs, wechat_scope, NULL, NULL), VEIL_OK);
    const char *const prov[] = {"province", NULL};
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", prov, out, NULL), VEIL_OK);
    int64_t head = h_svc_feed_head(gw);
    ck_assert_int_eq(head, 3);

    Veil__Consent__ForgetRequest req = VEIL__CONSENT__FORGET_REQUEST__INIT;
    Veil__Empty *resp;
    veil_status st;
    req.subject_ref.data = s;
    req.subject_ref.len = 32;
    ck_assert_int_eq(veil_channel_call(gw, "Forget", &req.base, NULL, 5000, &resp, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    Veil__Consent__ListResponse *l = ct_list(gw, s);
    ck_assert_uint_eq(l->n_grants, 0);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", attrs, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(ct_check(gw, t, "chat.wechat", attrs, out, NULL), VEIL_OK);
    ck_assert_ptr_nonnull(strstr(out, "province=")); /* others untouched */

    /* the feed keeps its numbers but not the forgotten subject's history */
    Veil__ChangesRequest cr = VEIL__CHANGES_REQUEST__INIT;
    Veil__ChangesResponse *changes;
    ck_assert_int_eq(veil_channel_call(gw, "Changes", &cr.base, NULL, 5000, &changes, &st),
                     VEIL_OK);
    ck_assert_uint_eq(changes->n_changes, 4);
    static const char *const kinds[] = {"redacted", "consent_granted", "redacted",
                                        "subject_forgotten"};
    for (size_t i = 0; i < 4; i++) {
        Veil__Change *c = changes->changes[i];
        ck_assert_int_eq(c->seq, (int64_t)i + 1);
        ck_assert_str_eq(c->kind, kinds[i]);
        if (i == 0 || i == 2) {
            ck_assert_uint_eq(c->subject_ref.len, 0);
            ck_assert_str_eq(c->app_id, "");
            ck_assert_uint_eq(c->n_attributes, 0);
        }
    }
    ck_assert_mem_eq(changes->changes[1]->subject_ref.data, t, 32);
    /* the notice names no subject: nothing keeps the erased subject reference */
    ck_assert_uint_eq(changes->changes[3]->subject_ref.len, 0);
    protobuf_c_message_free_unpacked(&changes->base, NULL);
    /* and the app's stream no longer holds its withdrawal */
    Veil__AppEventsRequest ar = VEIL__APP_EVENTS_REQUEST__INIT;
    Veil__AppEventsResponse *events;
    ar.app_id = "chat.wechat";
    ck_assert_int_eq(veil_channel_call(gw, "AppEvents", &ar.base, NULL, 5000, &events, &st),
                     VEIL_OK);
    ck_assert_uint_eq(events->n_events, 0);
    protobuf_c_message_free_unpacked(&events->base, NULL);

    /* forgetting again (or someone never seen) records nothing */
    ck_assert_int_eq(veil_channel_call(gw, "Forget", &req.base, NULL, 5000, &resp, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    ck_assert_int_eq(h_svc_feed_head(gw), 4);
}
END_TEST

/* Every method, as every kind of caller: only the gateway gets through. */
START_TEST(test_caller_policy)
{
    static const char *const methods[] = {"Grant",   "Withdraw", "List",      "Check",
                                          "Forget",  "GetKeys",  "Changes", "AppEvents",
                                          "CheckBatch"};
    static const char *const refused[] = {"admin/ops", "app/chat.wechat", "app/gov.tax",
                                          "svc/vault", "svc/revocation",  "svc/pseudonym"};
    char path[128];
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        snprintf(path, sizeof path, "/veil.consent.Consent/%s", methods[m]);
        for (size_t c = 0; c < sizeof refused / sizeof refused[0]; c++)
            h_expect_policy(con.proc.addr, refused[c], path, H_REFUSED);
        h_expect_policy(con.proc.addr, "svc/gateway", path, H_ALLOWED);
        h_expect_policy(con.proc.addr, "none", path, H_NO_HANDSHAKE);
    }
    ck_assert_int_eq(h_svc_feed_head(gw), 0);
}
END_TEST

START_TEST(test_bad_input)
{
    unsigned char s[32];
    veil_status st;
    ct_subject(s, 10);
    int64_t day = ct_now_ms() + CT_DAY_MS;
    const char *const ok[] = {"age_over_18", NULL};
    const char *const none[] = {NULL};
    const char *const unknown[] = {"age_over_18", "shoe_size", NULL};
    const char *const garbage[] = {"Robert'); DROP TABLE grants;--", NULL};
    const char *const twice[] = {"age_over_18", "province", "age_over_18", NULL};
    const char *const outside[] = {"age_over_18", "birth_date", NULL};
    const char *const seventeen[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i",
                                     "j", "k", "l", "m", "n", "o", "p", "q", NULL};
    const char *const bad_scope[] = {"age_over_18", "favourite_colour", NULL};
    char long_purpose[202];
    memset(long_purpose, 'p', 201);
    long_purpose[201] = '\0';
    const struct {
        size_t subject_len;
        const char *app;
        const char *const *attrs;
        const char *purpose;
        int64_t expires; /* 0: a day ahead; 1: in the past; 2: six years ahead */
        const char *const *scope;
        veil_err err;
        const char *message;
    } cases[] = {
        {16, "chat.wechat", ok, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "subject_ref must be 32 bytes"},
        {0, "chat.wechat", ok, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "subject_ref must be 32 bytes"},
        {32, "Chat WeChat", ok, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "app_id is not a valid app id"},
        {32, "chat.wechat", none, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "attributes must not be empty"},
        {32, "chat.wechat", unknown, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "attributes: unknown attribute shoe_size (attributes: " VEIL_ATTR_NAMES ")"},
        {32, "chat.wechat", garbage, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "attributes[0] is not an attribute name"},
        {32, "chat.wechat", twice, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "attributes: attribute age_over_18 is listed twice"},
        {32, "chat.wechat", seventeen, "p", 0, wechat_scope, VEIL_ERR_INVALID,
         "attributes must hold at most 16 names"},
        {32, "chat.wechat", ok, "", 0, wechat_scope, VEIL_ERR_INVALID, "purpose is required"},
        {32, "chat.wechat", ok, NULL, 0, wechat_scope, VEIL_ERR_INVALID,
         "purpose must be at most 200 bytes"},
        {32, "chat.wechat", ok, "line one\nline two", 0, wechat_scope, VEIL_ERR_INVALID,
         "purpose must be printable UTF-8"},
        {32, "chat.wechat", ok, "caf\xc3", 0, wechat_scope, VEIL_ERR_INVALID,
         "purpose: strings must be utf-8 without nul, overlong forms or surrogates"},
        {32, "chat.wechat", ok, "p", 1, wechat_scope, VEIL_ERR_INVALID,
         "expires_at_ms must be in the future"},
        {32, "chat.wechat", ok, "p", 2, wechat_scope, VEIL_ERR_INVALID,
         "expires_at_ms must be at most 5 years ahead"},
        {32, "chat.wechat", ok, "p", 0, bad_scope, VEIL_ERR_INVALID,
         "app_scope: unknown attribute favourite_colour (attributes: " VEIL_ATTR_NAMES ")"},
        {32, "chat.wechat", ok, "p", 0, none, VEIL_ERR_PRECONDITION, "app has no registered scope"},
        {32, "chat.wechat", outside, "p", 0, wechat_scope, VEIL_ERR_PRECONDITION,
         "attribute birth_date is outside the app's registered scope"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t exp = cases[i].expires == 0   ? day
                      : cases[i].expires == 1 ? ct_now_ms() - 1000
                                              : ct_now_ms() + 6 * 366 * CT_DAY_MS;
        ck_assert_int_eq(ct_grant(gw, s, cases[i].subject_len, cases[i].app, cases[i].attrs,
                                  cases[i].purpose ? cases[i].purpose : long_purpose, exp,
                                  cases[i].scope, NULL, NULL, &st),
                         cases[i].err);
        if (cases[i].message)
            ck_assert_msg(strcmp(st.message, cases[i].message) == 0, "case %zu: %s", i, st.message);
    }
    /* the same checks guard Withdraw and Check */
    char out[1024];
    ck_assert_int_eq(ct_withdraw(gw, s, "chat.wechat", unknown, out, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message,
                     "attributes: unknown attribute shoe_size (attributes: " VEIL_ATTR_NAMES ")");
    ck_assert_int_eq(ct_check(gw, s, "not an app", ok, out, &st), VEIL_ERR_INVALID);
    Veil__Consent__ListRequest lr = VEIL__CONSENT__LIST_REQUEST__INIT;
    Veil__Consent__ListResponse *l;
    lr.subject_ref.data = s;
    lr.subject_ref.len = 31;
    ck_assert_int_eq(veil_channel_call(gw, "List", &lr.base, NULL, 5000, &l, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "subject_ref must be 32 bytes");
    /* nothing of it was written */
    l = ct_list(gw, s);
    ck_assert_uint_eq(l->n_grants, 0);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    ck_assert_int_eq(h_svc_feed_head(gw), 0);
}
END_TEST

/*
 * A failure injected into the last step of a grant (a constraint the test
 * adds to the feed table) must undo the steps before it: the new grant and
 * the supersession of the older one.
 */
START_TEST(test_no_partial_writes)
{
    unsigned char s[32];
    char r1[64], out[1024], want[256];
    ct_subject(s, 11);
    const char *const attrs[] = {"age_over_18", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, r1, NULL), VEIL_OK);
    ck_assert_int_eq(h_db_exec(con.db, "ALTER TABLE veil_feed_changes ADD CONSTRAINT injected "
                                       "CHECK (kind <> 'consent_granted') NOT VALID"),
                     0);
    ck_assert_int_ne(grant(s, "chat.wechat", attrs, wechat_scope, NULL, NULL), VEIL_OK);
    snprintf(want, sizeof want, "age_over_18=%s", r1);
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", attrs, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, want); /* the old grant is still the live one */
    Veil__Consent__ListResponse *l = ct_list(gw, s);
    ck_assert_uint_eq(l->n_grants, 1);
    ck_assert_str_eq(l->grants[0]->status, "active");
    protobuf_c_message_free_unpacked(&l->base, NULL);
    ck_assert_int_eq(h_svc_feed_head(gw), 1);
    /* the same for a withdrawal, whose app event comes after its feed entry */
    ck_assert_int_eq(h_db_exec(con.db, "ALTER TABLE veil_app_events ADD CONSTRAINT injected2 "
                                       "CHECK (kind <> 'consent_withdrawn') NOT VALID"),
                     0);
    ck_assert_int_ne(ct_withdraw(gw, s, "chat.wechat", NULL, out, NULL), VEIL_OK);
    ck_assert_int_eq(ct_check(gw, s, "chat.wechat", attrs, out, NULL), VEIL_OK);
    ck_assert_str_eq(out, want);
    ck_assert_int_eq(h_svc_feed_head(gw), 1);

    ck_assert_int_eq(h_db_exec(con.db, "ALTER TABLE veil_feed_changes DROP CONSTRAINT injected;"
                                       "ALTER TABLE veil_app_events DROP CONSTRAINT injected2"),
                     0);
    ck_assert_int_eq(grant(s, "chat.wechat", attrs, wechat_scope, NULL, NULL), VEIL_OK);
    ck_assert_int_eq(h_svc_feed_head(gw), 2); /* no gap where the failed grant was */
}
END_TEST

/* A CheckRequest of a batch (attrs NULL-terminated, or NULL for none). */
static Veil__Consent__CheckRequest *check_item(Veil__Consent__CheckRequest *r, unsigned char *subject,
                                               size_t len, const char *app,
                                               const char *const *attrs)
{
    veil__consent__check_request__init(r);
    r->subject_ref.data = subject;
    r->subject_ref.len = len;
    r->app_id = (char *)app;
    r->attributes = (char **)attrs;
    while (attrs && attrs[r->n_attributes])
        r->n_attributes++;
    return r;
}

/*
 * CheckBatch (issue 15): eight Checks in one call - two subjects with
 * grants (answers in the order asked, with receipt, purpose and expiry),
 * one without, one asking for nothing, another app, and two bad items (a
 * short subject, an unknown attribute).  Every item gets exactly what
 * Check alone answers for it, status and message or grants field by field;
 * the bad ones fail alone.  An empty or oversized batch is refused whole.
 */
START_TEST(test_check_batch)
{
    unsigned char s[32], t[32], u[32];
    char rid_s[64], rid_t[64];
    veil_status st;
    ct_subject(s, 31);
    ct_subject(t, 32);
    ct_subject(u, 33);
    const char *const age_province[] = {"age_over_18", "province", NULL};
    const char *const real_name[] = {"real_name_verified", NULL};
    ck_assert_int_eq(grant(s, "chat.wechat", age_province, wechat_scope, rid_s, NULL), VEIL_OK);
    ck_assert_int_eq(ct_grant(gw, t, 32, "chat.wechat", real_name, "a second purpose",
                              ct_now_ms() + 10 * CT_DAY_MS, wechat_scope, rid_t, NULL, NULL),
                     VEIL_OK);
    const char *const reversed[] = {"province", "age_over_18", NULL};
    const char *const age_real[] = {"age_over_18", "real_name_verified", NULL};
    const char *const age[] = {"age_over_18", NULL};
    const char *const bogus[] = {"bogus", NULL};
    const char *const all[] = {"age_over_18", "province", "real_name_verified", NULL};
    Veil__Consent__CheckRequest cells[8], *items[8];
    items[0] = check_item(&cells[0], s, 32, "chat.wechat", reversed);
    items[1] = check_item(&cells[1], s, 16, "chat.wechat", age);
    items[2] = check_item(&cells[2], t, 32, "chat.wechat", age_real);
    items[3] = check_item(&cells[3], u, 32, "chat.wechat", age);
    items[4] = check_item(&cells[4], s, 32, "chat.wechat", NULL);
    items[5] = check_item(&cells[5], s, 32, "chat.wechat", bogus);
    items[6] = check_item(&cells[6], s, 32, "shop.taobao", age);
    items[7] = check_item(&cells[7], s, 32, "chat.wechat", all);

    Veil__Consent__CheckBatchRequest req = VEIL__CONSENT__CHECK_BATCH_REQUEST__INIT;
    Veil__Consent__CheckBatchResponse *resp;
    req.items = items;
    req.n_items = 8;
    ck_assert_int_eq(veil_channel_call(gw, "CheckBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    ck_assert_uint_eq(resp->n_items, 8);
    ck_assert_uint_eq(resp->n_status, 8);
    /* each item as Check alone answers it */
    for (int i = 0; i < 8; i++) {
        Veil__Consent__CheckResponse *one = NULL;
        veil_status alone;
        veil_err err = veil_channel_call(gw, "Check", &items[i]->base, NULL, 5000, &one, &alone);
        ck_assert_msg(resp->status[i]->code == (unsigned)veil_err_status(err), "item %d: %u", i,
                      resp->status[i]->code);
        if (err) {
            ck_assert_str_eq(resp->status[i]->message, alone.message);
            continue;
        }
        const Veil__Consent__CheckResponse *b = resp->items[i];
        ck_assert_uint_eq(b->n_granted, one->n_granted);
        for (size_t k = 0; k < one->n_granted; k++) {
            ck_assert_str_eq(b->granted[k]->attribute, one->granted[k]->attribute);
            ck_assert_str_eq(b->granted[k]->receipt_id, one->granted[k]->receipt_id);
            ck_assert_str_eq(b->granted[k]->purpose, one->granted[k]->purpose);
            ck_assert_int_eq(b->granted[k]->expires_at_ms, one->granted[k]->expires_at_ms);
        }
        protobuf_c_message_free_unpacked(&one->base, NULL);
    }
    /* and what that is */
    ck_assert_uint_eq(resp->status[1]->code, GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(resp->status[1]->message, "subject_ref must be 32 bytes");
    ck_assert_uint_eq(resp->status[5]->code, GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(resp->status[5]->message, "unknown attribute bogus"));
    ck_assert_uint_eq(resp->items[0]->n_granted, 2);
    ck_assert_str_eq(resp->items[0]->granted[0]->attribute, "province");
    ck_assert_str_eq(resp->items[0]->granted[1]->receipt_id, rid_s);
    ck_assert_uint_eq(resp->items[2]->n_granted, 1);
    ck_assert_str_eq(resp->items[2]->granted[0]->attribute, "real_name_verified");
    ck_assert_str_eq(resp->items[2]->granted[0]->receipt_id, rid_t);
    ck_assert_str_eq(resp->items[2]->granted[0]->purpose, "a second purpose");
    ck_assert_uint_eq(resp->items[3]->n_granted, 0);
    ck_assert_uint_eq(resp->items[4]->n_granted, 0);
    ck_assert_uint_eq(resp->items[6]->n_granted, 0);
    ck_assert_uint_eq(resp->items[7]->n_granted, 2);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* an empty batch and one over the limit are refused as a whole */
    req.n_items = 0;
    ck_assert_int_eq(veil_channel_call(gw, "CheckBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "items must hold 1 to 256 requests");
    Veil__Consent__CheckRequest *many[257];
    for (int i = 0; i < 257; i++)
        many[i] = items[i % 2 ? 2 : 0];
    req.items = many;
    req.n_items = 257;
    ck_assert_int_eq(veil_channel_call(gw, "CheckBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "items must hold 1 to 256 requests");
    req.n_items = 256; /* the limit itself: every item answered, each its own */
    ck_assert_int_eq(veil_channel_call(gw, "CheckBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    ck_assert_uint_eq(resp->n_items, 256);
    for (int i = 0; i < 256; i++)
        ck_assert_uint_eq(resp->items[i]->n_granted, i % 2 ? 1 : 2);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_grant_check_withdraw,
                                  test_supersession_and_list,
                                  test_expiry,
                                  test_receipt_verifies,
                                  test_receipt_verifies_with_pyjwt,
                                  test_receipt_key_rotation,
                                  test_forget,
                                  test_caller_policy,
                                  test_bad_input,
                                  test_no_partial_writes,
                                  test_check_batch,
                                  NULL};
    const h_case cases[] = {{"consent", 60, NULL, NULL, setup, teardown, tests}, {NULL}};
    return h_run_suite_forked(h_suite("consent", cases));
}
