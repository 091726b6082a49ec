/*
 * jws_bench.c - the cost of one login assertion's JWS, claims included.
 *
 *   jws_bench tree|written|both N
 *
 * tree: the claims built as a jansson tree and signed with veil_jws_sign
 * (how the gateway's sign_assertion does it); written: the same claims
 * written straight into a buffer with veil_buf_json_str and signed with
 * veil_jws_sign_json.  The claims have the assertion's shape: iss, aud, sub,
 * iat, exp, jti, acr, amr, a name in Chinese, a flag and the province
 * object.  "both" also checks that the two tokens are byte-identical (exit 1
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

static int run(const char *mode, const veil_signer *s, int n)
{
    double t0 = bench_cpu_s();
    for (int i = 0; i < n; i++) {
        char *t = strcmp(mode, "tree") == 0 ? tree_token(s, 1700000000LL + i)
                                            : written_token(s, 1700000000LL + i);
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
        fprintf(stderr, "usage: %s tree|written|both N\n", argv[0]);
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
        int same = a && b && strcmp(a, b) == 0;
        printf("jws: identical=%d\n", same);
        status = !same || run("tree", s, n) || run("written", s, n);
        free(a);
        free(b);
    } else {
        status = run(argv[1], s, n);
    }
    veil_signer_free(s);
    sodium_free(seed);
    return status;
}
