/*
 * jws_bench.c - the cost of one login assertion's JWS, claims included.
 *
 *   jws_bench tree|written|gateway|both N
 *
 * tree: the claims built as a jansson tree and signed with veil_jws_sign
 * (how the gateway's sign_assertion does it); written: the same claims
 * written straight into a buffer with veil_buf_json_str and signed with
 * veil_jws_sign_json; gateway: the gateway's own writer (gw_assertion_payload,
 * what sign_assertion runs since issue 15 lever 4) and veil_jws_sign_json.
 * The claims have the assertion's shape: iss, aud, sub,
 * iat, exp, jti, acr, amr, a name in Chinese, a flag and the province
 * object.  "both" also checks that the three tokens are byte-identical (exit 1
 * if not).  Prints CPU microseconds per token; for instruction counts run a
 * mode under `valgrind --tool=callgrind` with N and N + 1000 and divide the
 * difference by 1000 (docs/performance.md, section 4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <sodium.h>

#include "common.h"
#include "gateway.h"
#include "veil/codec.h"
#include "veil/jws.h"
#include "veil/keys.h"

static const char *const NAME = "王小明", *const SUB = "Hq3Jd8pX0cV7aL2mN5bR1tY4uE6wZ9sK";

static char *tree_token(const veil_signer *s, long long now)
{
    json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", "https://veil.local", "aud",
                          "shop.taobao", "sub", SUB, "iat", (json_int_t)now, "exp",
                          (json_int_t)(now + 300), "jti", "AAECAwQFBgcICQoLDA0ODw");
    json_object_set_new(c, "acr", json_string("urn:veil:acr:phone"));
    json_object_set_new(c, "amr", json_pack("[s]", "pop"));
    json_object_set_new(c, "full_name", json_string(NAME));
    json_object_set_new(c, "age_over_18", json_true());
    json_object_set_new(c, "province", json_pack("{s:s, s:s, s:s}", "code", "11", "name",
                                                 "北京市", "name_en", "Beijing"));
    char *token = NULL;
    if (veil_jws_sign(s, "JWT", c, &token) != VEIL_OK)
        token = NULL;
    veil_json_wipe_decref(c);
    return token;
}

static void member(veil_buf *b, const char *key, const char *value)
{
    veil_buf_json_str(b, key, strlen(key));
    veil_buf_put(b, ":", 1);
    veil_buf_json_str(b, value, strlen(value));
}

static void number(veil_buf *b, const char *key, long long v)
{
    char text[24];
    veil_buf_json_str(b, key, strlen(key));
    veil_buf_put(b, ":", 1);
    veil_buf_put(b, text, (size_t)snprintf(text, sizeof text, "%lld", v));
}

static char *written_token(const veil_signer *s, long long now)
{
    veil_buf b = {0};
    veil_buf_put(&b, "{", 1);
    member(&b, "iss", "https://veil.local");
    veil_buf_put(&b, ",", 1);
    member(&b, "aud", "shop.taobao");
    veil_buf_put(&b, ",", 1);
    member(&b, "sub", SUB);
    veil_buf_put(&b, ",", 1);
    number(&b, "iat", now);
    veil_buf_put(&b, ",", 1);
    number(&b, "exp", now + 300);
    veil_buf_put(&b, ",", 1);
    member(&b, "jti", "AAECAwQFBgcICQoLDA0ODw");
    veil_buf_put(&b, ",", 1);
    member(&b, "acr", "urn:veil:acr:phone");
    veil_buf_put(&b, ",\"amr\":[\"pop\"],", 15);
    member(&b, "full_name", NAME);
    veil_buf_put(&b, ",\"age_over_18\":true,\"province\":{", 32);
    member(&b, "code", "11");
    veil_buf_put(&b, ",", 1);
    member(&b, "name", "北京市");
    veil_buf_put(&b, ",", 1);
    member(&b, "name_en", "Beijing");
    veil_buf_put(&b, "}}", 2);
    char *token = NULL;
    if (b.failed ||
        veil_jws_sign_json(s, "JWT", (const char *)b.data, b.len, &token) != VEIL_OK)
        token = NULL;
    veil_buf_free(&b); /* wipes the claims */
    return token;
}

/* The same claims through the gateway's writer. */
static char *gateway_token(const veil_signer *s, long long now)
{
    Veil__Attribute a[3];
    Veil__Province p;
    Veil__Attribute *list[3] = {&a[0], &a[1], &a[2]};
    Veil__Vault__ReleaseAttributesResponse rel;
    veil__vault__release_attributes_response__init(&rel);
    rel.attributes = list;
    rel.n_attributes = 3;
    for (int i = 0; i < 3; i++)
        veil__attribute__init(&a[i]);
    veil__province__init(&p);
    a[0].name = "full_name", a[0].value_case = VEIL__ATTRIBUTE__VALUE_TEXT, a[0].text = (char *)NAME;
    a[1].name = "age_over_18", a[1].value_case = VEIL__ATTRIBUTE__VALUE_FLAG, a[1].flag = 1;
    p.code = "11", p.name = "北京市", p.name_en = "Beijing";
    a[2].name = "province", a[2].value_case = VEIL__ATTRIBUTE__VALUE_PROVINCE, a[2].province = &p;
    gw_login_result r = {.sub = SUB,
                         .released = &rel,
                         .granted = gw_scope_bit("full_name") | gw_scope_bit("age_over_18") |
                                    gw_scope_bit("province")};
    veil_buf b = {0};
    char *token = NULL;
    if (gw_assertion_payload(&b, "https://veil.local", "shop.taobao", now, now + 300,
                             "AAECAwQFBgcICQoLDA0ODw", &r) != 0 ||
        veil_jws_sign_json(s, "JWT", (const char *)b.data, b.len, &token) != VEIL_OK)
        token = NULL;
    veil_buf_free(&b);
    return token;
}

static int run(const char *mode, const veil_signer *s, int n)
{
    double t0 = bench_cpu_s();
    for (int i = 0; i < n; i++) {
        long long now = 1700000000LL + i;
        char *t = strcmp(mode, "tree") == 0      ? tree_token(s, now)
                  : strcmp(mode, "gateway") == 0 ? gateway_token(s, now)
                                                 : written_token(s, now);
        if (!t)
            return 1;
        sodium_memzero(t, strlen(t));
        free(t);
    }
    printf("jws: mode=%s tokens=%d cpu_us_per_token=%.2f\n", mode, n,
           n ? (bench_cpu_s() - t0) * 1e6 / n : 0.0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || sodium_init() < 0) {
        fprintf(stderr, "usage: %s tree|written|gateway|both N\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]);
    unsigned char *seed = sodium_malloc(VEIL_KEY_BYTES);
    if (!seed)
        return 1;
    memset(seed, 7, VEIL_KEY_BYTES);
    veil_key key = {.version = 1, .bytes = seed};
    veil_signer *s;
    if (veil_signer_new(&key, "gw-assertion", &s) != VEIL_OK)
        return 1;
    int status = 0;
    if (strcmp(argv[1], "both") == 0) {
        char *a = tree_token(s, 1700000000LL), *b = written_token(s, 1700000000LL);
        char *g = gateway_token(s, 1700000000LL);
        int same = a && b && g && strcmp(a, b) == 0 && strcmp(a, g) == 0;
        printf("jws: identical=%d\n", same);
        status = !same || run("tree", s, n) || run("written", s, n) || run("gateway", s, n);
        free(a);
        free(b);
        free(g);
    } else {
        status = run(argv[1], s, n);
    }
    veil_signer_free(s);
    sodium_free(seed);
    return status;
}
