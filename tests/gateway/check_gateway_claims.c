/*
 * check_gateway_claims.c - the login assertion's claims and the OpenID
 * Connect result, written directly (services/gateway/login.c:
 * gw_assertion_payload, gw_oidc_result_json, gw_login_claims), are byte for
 * byte what the jansson trees that built them before gave (issue 15 lever
 * 4: no jansson tree on the login's path).  The reference below is the
 * removed tree-building code, kept here as the definition of the old bytes;
 * the inputs cover Chinese and other non-ASCII text, every character that
 * needs escaping, a previous pseudonym, card and phone, an attribute
 * consent did not grant, one the vault sent twice, one that is not UTF-8
 * and one without a value.  The signed tokens are compared too.
 */
#include <check.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "harness.h"
#include "veil/codec.h"
#include "veil/jws.h"

/* ---- the old code: the claims as jansson trees ---- */

static const char *old_oidc_name(const char *attribute)
{
    static const char *const names[][2] = {
        {"full_name", "name"}, {"birth_date", "birthdate"}, {"gender", "gender"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(attribute, names[i][0]) == 0)
            return names[i][1];
    return attribute;
}

static void old_add_claim(json_t *claims, const Veil__Attribute *a, int oidc)
{
    const char *name = oidc ? old_oidc_name(a->name) : a->name;
    switch (a->value_case) {
    case VEIL__ATTRIBUTE__VALUE_FLAG:
        json_object_set_new(claims, name, json_boolean(a->flag));
        break;
    case VEIL__ATTRIBUTE__VALUE_TEXT:
        json_object_set_new(claims, name, json_string(a->text));
        break;
    case VEIL__ATTRIBUTE__VALUE_PROVINCE:
        if (oidc)
            json_object_set_new(claims, "address",
                                json_pack("{s:s, s:s, s:s}", "region", a->province->name,
                                          "region_en", a->province->name_en, "region_code",
                                          a->province->code));
        else
            json_object_set_new(claims, a->name,
                                json_pack("{s:s, s:s, s:s}", "code", a->province->code, "name",
                                          a->province->name, "name_en", a->province->name_en));
        break;
    default:
        break;
    }
}

static void old_login_claims(json_t *claims, const gw_login_result *r, int oidc)
{
    for (size_t i = 0; r->released && i < r->released->n_attributes; i++) {
        const Veil__Attribute *a = r->released->attributes[i];
        if (!(gw_scope_bit(a->name) & r->granted))
            continue;
        old_add_claim(claims, a, oidc);
    }
}

static json_t *old_assertion(const char *iss, const char *aud, long long now, long long ttl,
                             const char *jti, const gw_login_result *r)
{
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", iss, "aud", aud, "sub", r->sub, "iat",
                  (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jti);
    ck_assert_ptr_nonnull(claims);
    if (r->previous_sub && *r->previous_sub)
        json_object_set_new(claims, "previous_sub", json_string(r->previous_sub));
    json_object_set_new(claims, "acr", json_string(r->card ? GW_ACR_CARD : GW_ACR_PHONE));
    json_object_set_new(claims, "amr", json_pack("[s]", r->card ? "pin" : "pop"));
    old_login_claims(claims, r, 0);
    return claims;
}

static char *old_result_json(const gw_login_result *r)
{
    json_t *j = json_pack("{s:s, s:I, s:s, s:[s]}", "sub", r->sub, "auth_time",
                          (json_int_t)(r->auth_time_ms / 1000), "acr",
                          r->card ? GW_ACR_CARD : GW_ACR_PHONE, "amr", r->card ? "pin" : "pop");
    ck_assert_ptr_nonnull(j);
    old_login_claims(j, r, 1);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* ---- the inputs ---- */

static Veil__Attribute attr[12];
static Veil__Attribute *attrs[12];
static Veil__Province prov[2];
static Veil__Vault__ReleaseAttributesResponse released;

static void text(size_t i, const char *name, const char *value)
{
    veil__attribute__init(&attr[i]);
    attr[i].name = (char *)name;
    attr[i].value_case = VEIL__ATTRIBUTE__VALUE_TEXT;
    attr[i].text = (char *)value;
}

static void flag(size_t i, const char *name, int v)
{
    veil__attribute__init(&attr[i]);
    attr[i].name = (char *)name;
    attr[i].value_case = VEIL__ATTRIBUTE__VALUE_FLAG;
    attr[i].flag = v;
}

static void province(size_t i, size_t p, const char *code, const char *name, const char *name_en)
{
    veil__province__init(&prov[p]);
    prov[p].code = (char *)code;
    prov[p].name = (char *)name;
    prov[p].name_en = (char *)name_en;
    veil__attribute__init(&attr[i]);
    attr[i].name = "province";
    attr[i].value_case = VEIL__ATTRIBUTE__VALUE_PROVINCE;
    attr[i].province = &prov[p];
}

static void release(size_t n)
{
    veil__vault__release_attributes_response__init(&released);
    for (size_t i = 0; i < n; i++)
        attrs[i] = &attr[i];
    released.attributes = attrs;
    released.n_attributes = n;
}

static unsigned all_scope(void)
{
    return gw_scope_bit("real_name_verified") | gw_scope_bit("age_over_14") |
           gw_scope_bit("age_over_18") | gw_scope_bit("age_over_60") |
           gw_scope_bit("province") | gw_scope_bit("full_name") | gw_scope_bit("gender") |
           gw_scope_bit("birth_date");
}

/* The three login results compared: a plain phone login, a hostile one, a card login. */
static void make_result(int which, gw_login_result *r)
{
    memset(r, 0, sizeof *r);
    r->sub = "Hq3Jd8pX0cV7aL2mN5bR1tY4uE6wZ9sK";
    r->auth_time_ms = 1764921600123;
    r->granted = all_scope();
    r->requested = r->granted;
    switch (which) {
    case 0: /* what most logins release */
        text(0, "full_name", "王小明");
        flag(1, "age_over_18", 1);
        province(2, 0, "11", "北京市", "Beijing");
        text(3, "gender", "女");
        text(4, "birth_date", "1990-01-02");
        release(5);
        break;
    case 1: /* every escape, non-ASCII of 2-4 bytes, duplicates, invalid UTF-8, no value */
        r->sub = "p\"1\\/\x01\x7f";
        r->previous_sub = "prev-王-\xf0\x9f\x98\x80";
        text(0, "full_name", "Zoë \"O'Brien\" \\ \b\f\n\r\t\x01\x1f\x7f / é\xe2\x80\xa8王");
        flag(1, "age_over_14", 0);
        text(2, "gender", "\xff\xfe not UTF-8"); /* jansson refused it: no claim */
        province(3, 0, "4\"4", "广东省\\", "Guang\tdong");
        flag(4, "age_over_60", 1);
        text(5, "birth_date", "\xf0\x9f\x8e\x82 1950");
        text(6, "gender", "男"); /* the first gender could not be written: this one counts */
        flag(7, "age_over_14", 1); /* twice: the first place, the last value */
        veil__attribute__init(&attr[8]);
        attr[8].name = "real_name_verified"; /* no value at all */
        province(9, 1, "31", "上海市", "Shanghai"); /* twice */
        text(10, "full_name", "\xc3"); /* truncated UTF-8: the earlier name stays */
        release(11);
        r->granted &= ~gw_scope_bit("age_over_60"); /* sent, not granted: left out */
        break;
    default: /* a card login with a previous pseudonym and nothing released */
        r->card = 1;
        r->previous_sub = "Old-Pseudonym_0123456789abcdefghijklm";
        r->granted = 0;
        r->released = NULL;
        return;
    }
    r->released = &released;
}

/* ---- the tests ---- */

START_TEST(test_assertion_claims_identical)
{
    ck_assert_int_ge(sodium_init(), 0);
    char err[256];
    char *dir = h_tempdir("gwclaims");
    veil_keyring *ring;
    veil_signer *signer;
    h_keyfile(dir, "assertion", 1);
    ck_assert_int_eq(veil_keyring_load(dir, "assertion", &ring, err, sizeof err), VEIL_OK);
    ck_assert_int_eq(veil_signer_new(veil_keyring_get(ring, 1), "gw-1", &signer), VEIL_OK);
    const char *issuers[] = {"https://veil.local", "https://veil.example/\"x\"\\/\t王"};
    const char *auds[] = {"shop.taobao", "app-é-\x1f"};
    for (int which = 0; which < 3; which++)
        for (size_t k = 0; k < 2; k++) {
            gw_login_result r;
            make_result(which, &r);
            const char *jti = k ? "AAECAwQFBgcICQoLDA0ODw" : "_-_-AAECAwQFBgcICQoLDA";
            long long now = k ? 1764921600 : 4102444800LL;
            json_t *tree = old_assertion(issuers[k], auds[k], now, 300, jti, &r);
            char *want = json_dumps(tree, JSON_COMPACT);
            veil_buf b = {0};
            ck_assert_int_eq(gw_assertion_payload(&b, issuers[k], auds[k], now, now + 300, jti, &r),
                             0);
            ck_assert_uint_eq(b.len, strlen(want));
            ck_assert_msg(memcmp(b.data, want, b.len) == 0, "case %d/%zu: %.*s\n against %s",
                          which, k, (int)b.len, (const char *)b.data, want);
            /* the tokens: the old path (veil_jws_sign of the tree) and the new one */
            char *old_token, *new_token;
            ck_assert_int_eq(veil_jws_sign(signer, "JWT", tree, &old_token), VEIL_OK);
            ck_assert_int_eq(veil_jws_sign_json(signer, "JWT", (const char *)b.data, b.len,
                                                &new_token),
                             VEIL_OK);
            ck_assert_str_eq(new_token, old_token);
            free(old_token);
            free(new_token);
            veil_buf_free(&b);
            free(want);
            json_decref(tree);
        }
    veil_signer_free(signer);
    veil_keyring_free(ring);
    free(dir);
}
END_TEST

START_TEST(test_oidc_result_identical)
{
    for (int which = 0; which < 3; which++) {
        gw_login_result r;
        make_result(which, &r);
        char *want = old_result_json(&r), *got = gw_oidc_result_json(&r);
        ck_assert_ptr_nonnull(want);
        ck_assert_ptr_nonnull(got);
        ck_assert_str_eq(got, want);
        free(want);
        free(got);
    }
}
END_TEST

/* Strings jansson could not write fail the assertion, as json_pack failing did. */
START_TEST(test_required_strings_must_be_utf8)
{
    gw_login_result r;
    make_result(0, &r);
    veil_buf b = {0};
    ck_assert_int_eq(gw_assertion_payload(&b, "https://veil.local", "shop\xff", 1, 2, "j", &r), -1);
    veil_buf_free(&b);
    r.sub = "\xc0\x80"; /* overlong NUL */
    ck_assert_int_eq(gw_assertion_payload(&b, "https://veil.local", "shop", 1, 2, "j", &r), -1);
    veil_buf_free(&b);
    ck_assert_ptr_null(gw_oidc_result_json(&r));
    /* an invalid previous pseudonym is left out, as json_string's NULL was */
    make_result(0, &r);
    r.previous_sub = "\xff";
    ck_assert_int_eq(gw_assertion_payload(&b, "i", "a", 1, 2, "j", &r), 0);
    veil_buf_put(&b, "", 1);
    ck_assert_ptr_null(strstr((const char *)b.data, "previous_sub"));
    veil_buf_free(&b);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_assertion_claims_identical, test_oidc_result_identical,
                                  test_required_strings_must_be_utf8, NULL};
    const h_case cases[] = {{"claims", 0, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("gateway_claims", cases));
}
