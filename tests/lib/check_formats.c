/*
 * check_formats.c - veil's signed formats: JWS (checked against an
 * independent JOSE implementation, Debian's python3-jwt), login tickets,
 * citizen-request bytes, web numbers and the attribute catalogue.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "harness.h"
#include "veil/codec.h"
#include "veil/formats.h"
#include "veil/inperson.h"
#include "veil/jws.h"

static veil_keyring *ring;
static veil_signer *signer;

static void setup(void)
{
    char err[256];
    char *dir = h_tempdir("fmt");
    ck_assert_int_ge(sodium_init(), 0);
    h_keyfile(dir, "signing", 1);
    ck_assert_int_eq(veil_keyring_load(dir, "signing", &ring, err, sizeof err), VEIL_OK);
    ck_assert_int_eq(veil_signer_new(veil_keyring_get(ring, 1), "test", &signer), VEIL_OK);
    free(dir);
}

static void teardown(void)
{
    veil_signer_free(signer);
    veil_keyring_free(ring);
}

static const unsigned char *lookup(void *ctx, const char *kid)
{
    veil_signer *s = ctx;
    return strcmp(kid, s->kid) == 0 ? s->pk : NULL;
}

START_TEST(test_jws_roundtrip_and_tamper)
{
    json_t *claims = json_pack("{s:s, s:i, s:s}", "sub", "p1", "iat", 1700000000, "name", "王小明");
    char *token;
    ck_assert_int_eq(veil_jws_sign(signer, "JWT", claims, &token), VEIL_OK);
    json_t *back;
    ck_assert_int_eq(veil_jws_verify(token, strlen(token), "JWT", lookup, signer, &back), VEIL_OK);
    ck_assert_str_eq(json_string_value(json_object_get(back, "name")), "王小明");
    json_decref(back);
    /* wrong typ, unknown kid, flipped payload bit, truncated, extra segment */
    ck_assert_int_eq(veil_jws_verify(token, strlen(token), "secevent+jwt", lookup, signer, &back),
                     VEIL_ERR_INVALID);
    char *dot = strchr(token, '.');
    char saved = dot[3];
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    ck_assert_int_eq(veil_jws_verify(token, strlen(token), "JWT", lookup, signer, &back),
                     VEIL_ERR_UNAUTHENTICATED);
    dot[3] = saved;
    ck_assert_int_eq(veil_jws_verify(token, strlen(token) - 5, "JWT", lookup, signer, &back),
                     VEIL_ERR_INVALID);
    char *extra = malloc(strlen(token) + 3);
    sprintf(extra, "%s.x", token);
    ck_assert_int_eq(veil_jws_verify(extra, strlen(extra), NULL, lookup, signer, &back),
                     VEIL_ERR_INVALID);
    free(extra);
    /* alg "none" with an empty signature must never pass */
    const char *none = "eyJhbGciOiJub25lIiwia2lkIjoidGVzdC0xIn0.eyJzdWIiOiJ4In0.";
    ck_assert_int_eq(veil_jws_verify(none, strlen(none), NULL, lookup, signer, &back),
                     VEIL_ERR_INVALID);
    json_decref(claims);
    free(token);
}
END_TEST

/* header.payload signed with the test key, whatever the header and payload say (malloc'd). */
static char *signed_token(const char *header, const char *payload)
{
    char h64[512], p64[512], *token = malloc(1200);
    unsigned char sig[64];
    veil_b64url_encode(h64, sizeof h64, header, strlen(header));
    veil_b64url_encode(p64, sizeof p64, payload, strlen(payload));
    int n = snprintf(token, 1200, "%s.%s", h64, p64);
    veil_signer_sign(signer, sig, token, (size_t)n);
    token[n] = '.';
    veil_b64url_encode(token + n + 1, 1200 - (size_t)n - 1, sig, sizeof sig);
    return token;
}

/* The header and payload rules hold even behind a valid signature. */
/* jansson's own serialisation of one string, for comparison. */
static char *jansson_str(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    ck_assert_ptr_nonnull(j);
    char *d = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return d;
}

static char *written_str(const char *s, size_t n)
{
    veil_buf b = {0};
    veil_buf_json_str(&b, s, n);
    veil_buf_put(&b, "", 1);
    ck_assert(!b.failed);
    char *out = strdup((const char *)b.data);
    veil_buf_free(&b);
    return out;
}

/* JSON string escaping written directly: JSON's rules, byte for byte what jansson writes. */
START_TEST(test_json_string_escaping)
{
    /* the rules, spelled out */
    char *w = written_str("a\"b\\c/d\b\f\n\r\t\x01\x1f\x7f", 15);
    ck_assert_str_eq(w, "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001F\x7f\"");
    free(w);
    w = written_str("", 0);
    ck_assert_str_eq(w, "\"\"");
    free(w);
    w = written_str("a\0b", 3); /* a NUL inside the given length */
    ck_assert_str_eq(w, "\"a\\u0000b\"");
    free(w);
    /* every ASCII byte, and UTF-8 of 2, 3 and 4 bytes (U+2028 passes unescaped) */
    char all[128];
    for (int c = 1; c < 128; c++)
        all[c - 1] = (char)c;
    const char *cases[] = {"王小明", "Zoë O'Brien", "line\xe2\x80\xa8sep", "\xf0\x9f\x98\x80 ok",
                           "\"quoted\" \\path\\", "tab\there"};
    char *j = jansson_str(all, 127);
    w = written_str(all, 127);
    ck_assert_str_eq(w, j);
    free(w);
    free(j);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        j = jansson_str(cases[i], strlen(cases[i]));
        w = written_str(cases[i], strlen(cases[i]));
        ck_assert_str_eq(w, j);
        free(w);
        free(j);
    }
}
END_TEST

/* The token as the jansson-built header gave it before the header was written directly. */
static char *token_the_old_way(const veil_signer *s, const char *typ, const json_t *claims)
{
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "kid", s->kid, "typ", typ);
    char *h = json_dumps(header, JSON_COMPACT), *p = json_dumps(claims, JSON_COMPACT);
    size_t hl = veil_b64url_len(strlen(h)) - 1, pl = veil_b64url_len(strlen(p)) - 1;
    char *t = malloc(hl + pl + 2 + veil_b64url_len(64));
    veil_b64url_encode(t, hl + 1, h, strlen(h));
    t[hl] = '.';
    veil_b64url_encode(t + hl + 1, pl + 1, p, strlen(p));
    unsigned char sig[64];
    veil_signer_sign(s, sig, t, hl + 1 + pl);
    t[hl + 1 + pl] = '.';
    veil_b64url_encode(t + hl + pl + 2, veil_b64url_len(64), sig, 64);
    json_decref(header);
    free(h);
    free(p);
    return t;
}

/* veil_jws_sign and veil_jws_sign_json give the tokens the jansson header gave, byte for byte. */
START_TEST(test_jws_written_header_identical)
{
    char err[256];
    char *dir = h_tempdir("fmtkid");
    veil_keyring *r;
    veil_signer *odd;
    h_keyfile(dir, "signing", 3);
    ck_assert_int_eq(veil_keyring_load(dir, "signing", &r, err, sizeof err), VEIL_OK);
    /* a kid and a typ that need escaping */
    ck_assert_int_eq(veil_signer_new(veil_keyring_get(r, 3), "k\"\\/\x01王", &odd), VEIL_OK);
    const veil_signer *signers[] = {signer, odd};
    const char *typs[] = {"JWT", "secevent+jwt", "veil-webcert+jwt", "a\"b\\c\n"};
    json_t *claims = json_pack("{s:s, s:s, s:I, s:b, s:[s], s:{s:s}}", "sub", "p\"1\\", "name",
                               "王小明\t\x7f", "iat", (json_int_t)1700000000, "ok", 1, "amr",
                               "pop", "address", "region", "北京/Beijing");
    char *pjson = json_dumps(claims, JSON_COMPACT);
    for (size_t i = 0; i < 2; i++)
        for (size_t k = 0; k < sizeof typs / sizeof typs[0]; k++) {
            char *want = token_the_old_way(signers[i], typs[k], claims), *got, *got_json;
            ck_assert_int_eq(veil_jws_sign(signers[i], typs[k], claims, &got), VEIL_OK);
            ck_assert_int_eq(
                veil_jws_sign_json(signers[i], typs[k], pjson, strlen(pjson), &got_json), VEIL_OK);
            ck_assert_str_eq(got, want);
            ck_assert_str_eq(got_json, want);
            json_t *back;
            ck_assert_int_eq(veil_jws_verify(got, strlen(got), typs[k], lookup,
                                             (void *)signers[i], &back),
                             VEIL_OK);
            json_decref(back);
            free(want);
            free(got);
            free(got_json);
        }
    free(pjson);
    json_decref(claims);
    veil_signer_free(odd);
    veil_keyring_free(r);
    free(dir);
}
END_TEST

/* A stand-in algorithm for veil_jws_sign_with: BLAKE2b-512 of the signing input. */
static int hash_sign(void *ctx, const unsigned char *input, size_t n, unsigned char *sig,
                     size_t *siglen)
{
    if (ctx) /* the failing signer */
        return -1;
    ck_assert_uint_ge(*siglen, 64);
    crypto_generichash(sig, 64, input, n, NULL, 0);
    *siglen = 64;
    return 0;
}

/* Another algorithm's token (the gateway's RS256): the header jansson wrote, the signature in place. */
START_TEST(test_jws_sign_with_other_algorithm)
{
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", "RS256", "kid", "rs256-00aa\"", "typ", "JWT");
    char *hjson = json_dumps(header, JSON_COMPACT);
    const char *payload = "{\"sub\":\"x\",\"name\":\"王小明\"}";
    char *token;
    /* sig_max above the signature's length: the token carries only what was signed */
    ck_assert_int_eq(veil_jws_sign_with("RS256", "rs256-00aa\"", "JWT", payload, strlen(payload),
                                        hash_sign, NULL, 256, &token),
                     VEIL_OK);
    char *d1 = strchr(token, '.'), *d2 = strrchr(token, '.');
    ck_assert_ptr_ne(d1, d2);
    char h64[256], p64[256], s64[256];
    veil_b64url_encode(h64, sizeof h64, hjson, strlen(hjson));
    veil_b64url_encode(p64, sizeof p64, payload, strlen(payload));
    ck_assert_int_eq((int)(d1 - token), (int)strlen(h64));
    ck_assert_int_eq(strncmp(token, h64, strlen(h64)), 0);
    ck_assert_int_eq(strncmp(d1 + 1, p64, strlen(p64)), 0);
    unsigned char sig[64];
    crypto_generichash(sig, 64, (const unsigned char *)token, (size_t)(d2 - token), NULL, 0);
    veil_b64url_encode(s64, sizeof s64, sig, 64);
    ck_assert_str_eq(d2 + 1, s64);
    free(token);
    /* a signer that fails: no token */
    ck_assert_int_eq(veil_jws_sign_with("RS256", "k", "JWT", payload, strlen(payload), hash_sign,
                                        (void *)1, 256, &token),
                     VEIL_ERR_INTERNAL);
    ck_assert_ptr_null(token);
    free(hjson);
    json_decref(header);
}
END_TEST

START_TEST(test_jws_rules_behind_a_valid_signature)
{
    static const struct {
        const char *header, *payload;
        veil_err want;
    } cases[] = {
        {"{\"alg\":\"EdDSA\",\"kid\":\"test-1\",\"typ\":\"JWT\"}", "{\"sub\":\"x\"}", VEIL_OK},
        {"{\"alg\":\"EdDSA\",\"kid\":\"test-1\",\"crit\":[\"exp\"]}", "{}", VEIL_ERR_INVALID},
        {"{\"alg\":\"EdDSA\",\"alg\":\"none\",\"kid\":\"test-1\"}", "{}", VEIL_ERR_INVALID},
        {"{\"alg\":\"EdDSA\",\"kid\":\"test-1\"}", "{\"sub\":\"a\",\"sub\":\"b\"}",
         VEIL_ERR_INVALID},
        {"{\"alg\":\"EdDSA\",\"kid\":\"test-1\"}", "[\"not\",\"an\",\"object\"]", VEIL_ERR_INVALID},
        {"{\"alg\":\"HS256\",\"kid\":\"test-1\"}", "{}", VEIL_ERR_INVALID},
        {"{\"alg\":\"EdDSA\"}", "{}", VEIL_ERR_INVALID},
        {"{\"alg\":\"EdDSA\",\"kid\":\"someone-else\"}", "{}", VEIL_ERR_UNAUTHENTICATED},
        {"not json", "{}", VEIL_ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *token = signed_token(cases[i].header, cases[i].payload);
        json_t *back = NULL;
        veil_err err = veil_jws_verify(token, strlen(token), NULL, lookup, signer, &back);
        ck_assert_msg(err == cases[i].want, "case %zu: %s", i, veil_err_name(err));
        json_decref(back);
        free(token);
    }
}
END_TEST

START_TEST(test_jws_verifies_with_python_jwt)
{
    json_t *claims = json_pack("{s:s, s:s, s:I, s:I}", "iss", "veil", "aud", "app.one", "iat",
                               (json_int_t)1700000000, "exp", (json_int_t)4000000000LL);
    char *token;
    ck_assert_int_eq(veil_jws_sign(signer, "JWT", claims, &token), VEIL_OK);
    json_t *jwks = json_pack("{s:[o]}", "keys", veil_jwk_ed25519(signer->kid, signer->pk));
    char *dir = h_tempdir("jose"), path[1024];
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    ck_assert_int_eq(json_dump_file(jwks, path, 0), 0);
    snprintf(path, sizeof path, "%s/token", dir);
    FILE *f = fopen(path, "w");
    fputs(token, f);
    fclose(f);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import json,jwt,sys; d=sys.argv[1]; "
             "ks=json.load(open(d+\"/jwks.json\"))[\"keys\"]; t=open(d+\"/token\").read(); "
             "k=jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(ks[0])); "
             "c=jwt.decode(t,k,algorithms=[\"EdDSA\"],audience=\"app.one\"); "
             "assert c[\"iss\"]==\"veil\"' %s",
             dir);
    ck_assert_int_eq(system(cmd), 0);
    veil_jwks parsed;
    char *text = json_dumps(jwks, 0);
    ck_assert_int_eq(veil_jwks_parse(text, &parsed), VEIL_OK);
    ck_assert_uint_eq(parsed.n, 1);
    ck_assert_mem_eq(veil_jwks_find(&parsed, signer->kid), signer->pk, 32);
    free(text);
    json_decref(jwks);
    json_decref(claims);
    free(token);
    free(dir);
}
END_TEST

START_TEST(test_ticket_roundtrip)
{
    unsigned char dpk[32], dsk[64], vpk[32], vsk[32], ch[32], id[16];
    crypto_sign_keypair(dpk, dsk);
    crypto_box_keypair(vpk, vsk);
    randombytes_buf(ch, sizeof ch);
    randombytes_buf(id, sizeof id);
    char *s;
    ck_assert_int_eq(veil_ticket_make("shop.taobao", ch, 32, 1700000000123LL, id, dsk, vpk, 7, &s),
                     VEIL_OK);
    veil_ticket t;
    veil_ticket_inner in;
    ck_assert_int_eq(veil_ticket_parse(s, strlen(s), &t), VEIL_OK);
    ck_assert_str_eq(t.app_id, "shop.taobao");
    ck_assert_mem_eq(t.challenge, ch, 32);
    /* the device id is not visible in the ticket */
    ck_assert_ptr_null(memmem(t.raw, sizeof t.raw, id, sizeof id));
    ck_assert_int_eq(veil_ticket_open(&t, vpk, vsk, &in), VEIL_OK);
    ck_assert_mem_eq(in.device_id, id, 16);
    ck_assert_uint_eq(in.key_version, 7);
    ck_assert_int_eq(in.time_ms, 1700000000123LL);
    veil_buf msg = {0};
    veil_ticket_signed_bytes(&msg, "shop.taobao", ch, 32, 1700000000123LL, id, 7);
    ck_assert_int_eq(crypto_sign_verify_detached(in.sig, msg.data, msg.len, dpk), 0);
    veil_buf_free(&msg);
    /* another vault key cannot open it */
    unsigned char opk[32], osk[32];
    crypto_box_keypair(opk, osk);
    ck_assert_int_eq(veil_ticket_open(&t, opk, osk, &in), VEIL_ERR_UNAUTHENTICATED);
    /* every truncation is malformed */
    for (size_t n = 0; n < strlen(s); n += 7)
        ck_assert_int_eq(veil_ticket_parse(s, n, &t), VEIL_ERR_INVALID);
    ck_assert_int_eq(veil_ticket_parse("!!", 2, &t), VEIL_ERR_INVALID);
    free(s);
}
END_TEST

/*
 * Parses the clear part of a ticket exactly as docs/internals/signed-formats.md
 * lays it out (not with veil_ticket_parse): u8 format ‖ field(app id) ‖
 * field(challenge) ‖ field(sealed).  Returns the decoded length.
 */
static size_t doc_parse(const char *ticket, unsigned char *raw, size_t cap, size_t *app_len,
                        size_t *sealed_at, size_t *sealed_len)
{
    size_t n;
    ck_assert_int_eq(veil_b64url_decode(raw, cap, ticket, strlen(ticket), &n), 0);
    ck_assert_uint_eq(raw[0], 2);
    *app_len = (size_t)raw[1] << 8 | raw[2];
    size_t at = 3 + *app_len;
    ck_assert_uint_eq((size_t)raw[at] << 8 | raw[at + 1], 32);
    at += 2 + 32;
    *sealed_len = (size_t)raw[at] << 8 | raw[at + 1];
    *sealed_at = at + 2;
    ck_assert_uint_eq(*sealed_len, 4 + 8 + 16 + 64 + 48);
    ck_assert_uint_eq(*sealed_at + *sealed_len, n); /* nothing after the sealed part */
    return n;
}

/*
 * Issue 12 item 1: the bytes an app handles carry nothing per-person.  One
 * phone makes tickets for two apps of different sectors at one instant, with
 * its clock far off and an old ticket key version: in the clear part, read
 * per the doc, only format constants and each app's own id and challenge
 * appear; the time and the version appear nowhere in the ticket, and the
 * sealed parts share nothing.
 */
START_TEST(test_ticket_clear_part_has_nothing_per_person)
{
    unsigned char dpk[32], dsk[64], vpk[32], vsk[32], cha[32], chb[32], id[16];
    unsigned char ra[VEIL_TICKET_MAX], rb[VEIL_TICKET_MAX];
    crypto_sign_keypair(dpk, dsk);
    crypto_box_keypair(vpk, vsk);
    randombytes_buf(cha, sizeof cha);
    randombytes_buf(chb, sizeof chb);
    randombytes_buf(id, sizeof id);
    const int64_t phone_time = 1700000001777LL; /* 1.777 s off any round time */
    const uint32_t version = 0x0000BEEF;
    char *a, *b;
    ck_assert_int_eq(veil_ticket_make("gov.tax", cha, 32, phone_time, id, dsk, vpk, version, &a),
                     VEIL_OK);
    ck_assert_int_eq(
        veil_ticket_make("shop.taobao", chb, 32, phone_time, id, dsk, vpk, version, &b), VEIL_OK);
    size_t al, bl, sa, sb, la, lb;
    size_t na = doc_parse(a, ra, sizeof ra, &al, &sa, &la);
    size_t nb = doc_parse(b, rb, sizeof rb, &bl, &sb, &lb);
    ck_assert_uint_eq(al, strlen("gov.tax"));
    ck_assert_mem_eq(ra + 3, "gov.tax", al);
    ck_assert_uint_eq(bl, strlen("shop.taobao"));
    ck_assert_mem_eq(ra + 3 + al + 2, cha, 32);
    ck_assert_mem_eq(rb + 3 + bl + 2, chb, 32);
    /* neither the time nor the version, in any byte order or width, is anywhere in either */
    unsigned char t8[8], v4[4], t8le[8], v4le[4];
    for (int i = 0; i < 8; i++) {
        t8[i] = (unsigned char)((uint64_t)phone_time >> (56 - 8 * i));
        t8le[i] = t8[7 - i];
    }
    for (int i = 0; i < 4; i++) {
        v4[i] = (unsigned char)(version >> (24 - 8 * i));
        v4le[i] = v4[3 - i];
    }
    const unsigned char *raws[] = {ra, rb};
    size_t lens[] = {na, nb};
    for (int k = 0; k < 2; k++) {
        ck_assert_ptr_null(memmem(raws[k], lens[k], t8 + 2, 6)); /* the low 48 bits */
        ck_assert_ptr_null(memmem(raws[k], lens[k], t8le, 6));
        ck_assert_ptr_null(memmem(raws[k], lens[k], v4 + 2, 2));
        ck_assert_ptr_null(memmem(raws[k], lens[k], v4le, 2));
        ck_assert_ptr_null(memmem(raws[k], lens[k], id, 4));
    }
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)phone_time);
    ck_assert_ptr_null(strstr(a, digits));
    /* apart from the format byte and the length fields, the two share no 4 bytes */
    int same = 0;
    for (size_t i = sa; i + 4 <= sa + la; i++)
        same += memmem(rb + sb, lb, ra + i, 4) != NULL;
    ck_assert_int_le(same, 2); /* chance matches only */
    ck_assert_uint_eq(ra[0], rb[0]);
    ck_assert_uint_eq(la, lb); /* every ticket of a given app has one length */
    /* the vault reads both back */
    veil_ticket ta;
    veil_ticket_inner in;
    ck_assert_int_eq(veil_ticket_parse(b, strlen(b), &ta), VEIL_OK);
    ck_assert_int_eq(veil_ticket_open(&ta, vpk, vsk, &in), VEIL_OK);
    ck_assert_int_eq(in.time_ms, phone_time);
    ck_assert_uint_eq(in.key_version, version);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_old_ticket_format_refused)
{
    /* format 1: u8 1 | u32 version | field(app) | field(challenge) | i64 time | field(sealed) */
    veil_buf w = {0};
    unsigned char ch[32] = {0}, sealed[128] = {0};
    veil_buf_put_u8(&w, 1);
    veil_buf_put_u32(&w, 1);
    veil_buf_put_str(&w, "gov.tax");
    veil_buf_put_lp(&w, ch, sizeof ch);
    veil_buf_put_i64(&w, 1700000000000LL);
    veil_buf_put_lp(&w, sealed, sizeof sealed);
    char s[512];
    veil_b64url_encode(s, sizeof s, w.data, w.len);
    veil_ticket t;
    ck_assert_int_eq(veil_ticket_parse(s, strlen(s), &t), VEIL_ERR_PRECONDITION);
    veil_buf_free(&w);
}
END_TEST

START_TEST(test_two_tickets_share_nothing)
{
    /* Same device, same time, two apps: the sealed parts differ entirely. */
    unsigned char dpk[32], dsk[64], vpk[32], vsk[32], ch[32] = {0}, id[16] = {1};
    crypto_sign_keypair(dpk, dsk);
    crypto_box_keypair(vpk, vsk);
    char *a, *b;
    ck_assert_int_eq(veil_ticket_make("app.a", ch, 32, 1, id, dsk, vpk, 1, &a), VEIL_OK);
    ck_assert_int_eq(veil_ticket_make("app.a", ch, 32, 1, id, dsk, vpk, 1, &b), VEIL_OK);
    veil_ticket ta, tb;
    ck_assert_int_eq(veil_ticket_parse(a, strlen(a), &ta), VEIL_OK);
    ck_assert_int_eq(veil_ticket_parse(b, strlen(b), &tb), VEIL_OK);
    int same = 0;
    for (size_t i = 0; i + 4 <= ta.sealed_len; i++)
        same += memmem(tb.sealed, tb.sealed_len, ta.sealed + i, 4) != NULL;
    ck_assert_int_le(same, 2); /* chance 4-byte matches only */
    free(a);
    free(b);
}
END_TEST

START_TEST(test_signed_bytes_are_domain_separated)
{
    veil_buf a = {0}, c = {0}, p = {0};
    unsigned char pk[32] = {0}, id[16] = {0}, nonce[16] = {0};
    veil_ticket_signed_bytes(&a, "x", nonce, 16, 0, id, 1);
    veil_citizen_signed_bytes(&c, "x", "", 0, 0, nonce, 16, "x");
    veil_attestation_bytes(&p, "11010519491231002X", "x", 1, pk, 0);
    ck_assert_str_eq((const char *)a.data, "veil-login-ticket-v2");
    ck_assert_str_eq((const char *)c.data, "veil-citizen-request-v1");
    ck_assert_str_eq((const char *)p.data, "veil-proofing-attestation-v2");
    /* lowercase x signs like uppercase X */
    veil_buf q = {0};
    veil_attestation_bytes(&q, "11010519491231002x", "x", 1, pk, 0);
    ck_assert_uint_eq(p.len, q.len);
    ck_assert_mem_eq(p.data, q.data, p.len);
    /* issue 18 item 1: no unkeyed hash of the ID number (BLAKE2b or SHA-256) in the bytes */
    unsigned char h[32], s256[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)"11010519491231002X", 18, NULL, 0);
    crypto_hash_sha256(s256, (const unsigned char *)"11010519491231002X", 18);
    ck_assert_ptr_null(memmem(p.data, p.len, h, 8));
    ck_assert_ptr_null(memmem(p.data, p.len, s256, 8));
    ck_assert_ptr_nonnull(memmem(p.data, p.len,
                                 "\x00\x12"
                                 "11010519491231002X",
                                 20));
    veil_buf_free(&a);
    veil_buf_free(&c);
    veil_buf_free(&p);
    veil_buf_free(&q);
}
END_TEST

START_TEST(test_web_numbers)
{
    char wn[VEIL_WEB_NUMBER_LEN + 1], other[VEIL_WEB_NUMBER_LEN + 1];
    veil_web_number_new(wn);
    veil_web_number_new(other);
    ck_assert_uint_eq(strlen(wn), 19);
    ck_assert_str_ne(wn, other);
    ck_assert(veil_web_number_valid(wn));
    const char *alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    /* every single-symbol change is caught */
    for (int i = 0; i < 19; i++) {
        if (i % 5 == 4)
            continue;
        char saved = wn[i];
        for (const char *a = alphabet; *a; a++) {
            if (*a == saved)
                continue;
            wn[i] = *a;
            ck_assert(!veil_web_number_valid(wn));
        }
        wn[i] = saved;
    }
    ck_assert(!veil_web_number_valid("0000-0000-0000-000"));
    ck_assert(!veil_web_number_valid("0000 0000 0000 0000"));
    ck_assert(!veil_web_number_valid("IIII-LLLL-OOOO-UUUU"));
    ck_assert(veil_web_number_valid("0000-0000-0000-0000"));
}
END_TEST

START_TEST(test_device_ids_and_idents)
{
    unsigned char id[16], back[16];
    char text[33];
    randombytes_buf(id, sizeof id);
    veil_device_id_text(id, text);
    ck_assert_int_eq(veil_device_id_parse(text, back), 0);
    ck_assert_mem_eq(id, back, 16);
    ck_assert_int_eq(veil_device_id_parse("00112233445566778899AABBCCDDEEFF", back), -1);
    ck_assert_int_eq(veil_device_id_parse("0011", back), -1);
    ck_assert_int_eq(veil_device_id_parse(NULL, back), -1);
    ck_assert(veil_ident_valid("gov.tax"));
    ck_assert(veil_ident_valid("chat-2_x"));
    ck_assert(!veil_ident_valid(".hidden"));
    ck_assert(!veil_ident_valid("Upper"));
    ck_assert(!veil_ident_valid("a b"));
    ck_assert(!veil_ident_valid("x'; DROP TABLE apps;--"));
    ck_assert(!veil_ident_valid(""));
}
END_TEST

START_TEST(test_attribute_catalogue)
{
    size_t n;
    const veil_attr *all = veil_attr_catalogue(&n);
    ck_assert_uint_eq(n, 8);
    ck_assert_ptr_eq(veil_attr_find(all[0].name), &all[0]);
    ck_assert_int_eq(veil_attr_find("age_over_18")->kind, VEIL_ATTR_DERIVED);
    ck_assert_int_eq(veil_attr_find("province")->kind, VEIL_ATTR_DERIVED);
    ck_assert_int_eq(veil_attr_find("full_name")->kind, VEIL_ATTR_RAW);
    ck_assert_int_eq(veil_attr_find("birth_date")->kind, VEIL_ATTR_RAW);
    ck_assert_ptr_null(veil_attr_find("id_number")); /* never releasable */
    ck_assert_ptr_null(veil_attr_find("age_over_21"));
    /* the names help and error messages list are exactly the catalogue, in its order */
    char joined[512] = "";
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(joined);
        snprintf(joined + used, sizeof joined - used, "%s%s", i ? ", " : "", all[i].name);
    }
    ck_assert_str_eq(veil_attr_names(), joined);
}
END_TEST

/* The checkpoint's signed bytes are exactly the vector in docs/internals/signed-formats.md. */
/*
 * The card code and the card's key pair for the secret 01 02 … 0f - the
 * vector of docs/internals/signed-formats.md, computed independently with
 * Python's hashlib (BLAKE2b) and python3-cryptography (Ed25519).
 */
START_TEST(test_card_code_vector)
{
    unsigned char secret[VEIL_CARD_SECRET_BYTES], back[VEIL_CARD_SECRET_BYTES], pk[32], sk[64];
    char code[VEIL_CARD_CODE_LEN + 1], hex[65];
    for (int i = 0; i < VEIL_CARD_SECRET_BYTES; i++)
        secret[i] = (unsigned char)(i + 1);
    veil_card_code_text(secret, code);
    ck_assert_str_eq(code, "04106-1050R-3GG28-A1C60-T3GFK");
    veil_card_keypair(secret, pk, sk);
    sodium_bin2hex(hex, sizeof hex, pk, sizeof pk);
    ck_assert_str_eq(hex, "80249bf7a6675c8de85934b89ef3921bad01f8d2f72453440735c448c162c271");
    /* read back however it is typed; one wrong symbol is caught by the check symbol */
    static const char *const spellings[] = {
        "04106-1050R-3GG28-A1C60-T3GFK", "04106 1050r 3gg28 a1c60 t3gfk",
        "O41O6105OR3GG28A1C6OT3GFK", "041o6-lO5OR-3GG28-AIC60-T3GFK"};
    for (size_t i = 0; i < sizeof spellings / sizeof spellings[0]; i++) {
        ck_assert_msg(veil_card_code_parse(spellings[i], back) == 0, "%s", spellings[i]);
        ck_assert(memcmp(back, secret, sizeof secret) == 0);
    }
    static const char *const bad[] = {
        "04106-1050R-3GG28-A1C60-T3GFM", "14106-1050R-3GG28-A1C60-T3GFK",
        "04106-1050R-3GG28-A1C60-T3GF",  "04106-1050R-3GG28-A1C60-T3GFKK",
        "04106-1050R-3GG28-A1C60-T3GFU", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(veil_card_code_parse(bad[i], back) != 0, "%s accepted", bad[i]);
    ck_assert(veil_card_pin_valid("0000") && veil_card_pin_valid("123456789012"));
    ck_assert(!veil_card_pin_valid("123") && !veil_card_pin_valid("1234567890123") &&
              !veil_card_pin_valid("12a4") && !veil_card_pin_valid("") &&
              !veil_card_pin_valid(NULL));
}
END_TEST

/* A presentation: opens only with the vault's key, exactly as signed; nothing stable in it. */
START_TEST(test_presentation_roundtrip)
{
    unsigned char dpk[32], dsk[64], vpk[32], vsk[32], opk[32], osk[32], id[VEIL_DEVICE_ID_BYTES];
    crypto_sign_keypair(dpk, dsk);
    crypto_box_keypair(vpk, vsk);
    crypto_box_keypair(opk, osk);
    randombytes_buf(id, sizeof id);
    const char *attrs[] = {"age_over_18", "real_name_verified"};
    char *p1, *p2;
    ck_assert_int_eq(veil_presentation_make(attrs, 2, 1700000000123LL, id, dsk, vpk, &p1), VEIL_OK);
    ck_assert_int_eq(veil_presentation_make(attrs, 2, 1700000000123LL, id, dsk, vpk, &p2), VEIL_OK);
    ck_assert_uint_eq(strlen(p1), 252); /* 189 bytes, as docs/internals/signed-formats.md counts */
    ck_assert_str_ne(p1, p2);
    ck_assert(veil_presentation_well_formed(p1, strlen(p1)));
    veil_presentation p;
    ck_assert_int_eq(veil_presentation_open(p1, strlen(p1), vpk, vsk, &p), VEIL_OK);
    ck_assert_uint_eq(p.n_attributes, 2);
    ck_assert_str_eq(p.attributes[1], "real_name_verified");
    ck_assert(memcmp(p.device_id, id, sizeof id) == 0);
    ck_assert(p.time_ms == 1700000000123LL);
    veil_buf msg = {0};
    veil_presentation_signed_bytes(&msg, &p);
    ck_assert_int_eq(crypto_sign_verify_detached(p.sig, msg.data, msg.len, dpk), 0);
    ck_assert_int_eq(memcmp(msg.data, "veil-presentation-v1", 21), 0);
    veil_buf_free(&msg);
    ck_assert_int_eq(veil_presentation_open(p1, strlen(p1), opk, osk, &p),
                     VEIL_ERR_UNAUTHENTICATED);
    ck_assert_int_eq(veil_presentation_open("UAAA", 4, vpk, vsk, &p), VEIL_ERR_INVALID);
    /* bad attribute lists are refused at the source */
    const char *repeat[] = {"age_over_18", "age_over_18"}, *unknown[] = {"id_number"};
    char *bad;
    ck_assert_int_eq(veil_presentation_make(repeat, 2, 1, id, dsk, vpk, &bad), VEIL_ERR_INVALID);
    ck_assert_int_eq(veil_presentation_make(unknown, 1, 1, id, dsk, vpk, &bad), VEIL_ERR_INVALID);
    ck_assert_int_eq(veil_presentation_make(attrs, 0, 1, id, dsk, vpk, &bad), VEIL_ERR_INVALID);
    free(p1);
    free(p2);
}
END_TEST

START_TEST(test_checkpoint_bytes_vector)
{
    static const char hex[] = "7665696c2d6163636573732d636865636b706f696e742d763200"
                              "0013414243442d454647482d4a4b4d4e2d50515237"
                              "0000000000000005"
                              "1111111111111111111111111111111111111111111111111111111111111111"
                              "0000019b76daa800"
                              "00000001cf7c5800";
    unsigned char head[32], want[103];
    memset(head, 0x11, sizeof head);
    ck_assert_int_eq(sodium_hex2bin(want, sizeof want, hex, strlen(hex), NULL, NULL, NULL), 0);
    veil_buf b = {0};
    veil_checkpoint_bytes(&b, "ABCD-EFGH-JKMN-PQR7", 5, head, 1767225600000LL, 7776000000LL);
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.len, sizeof want);
    ck_assert_mem_eq(b.data, want, sizeof want);
    veil_buf_free(&b);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_jws_roundtrip_and_tamper,
                                  test_jws_rules_behind_a_valid_signature,
                                  test_json_string_escaping,
                                  test_jws_written_header_identical,
                                  test_jws_sign_with_other_algorithm,
                                  test_jws_verifies_with_python_jwt,
                                  test_ticket_roundtrip,
                                  test_two_tickets_share_nothing,
                                  test_ticket_clear_part_has_nothing_per_person,
                                  test_old_ticket_format_refused,
                                  test_signed_bytes_are_domain_separated,
                                  test_web_numbers,
                                  test_device_ids_and_idents,
                                  test_attribute_catalogue,
                                  test_checkpoint_bytes_vector,
                                  test_card_code_vector,
                                  test_presentation_roundtrip,
                                  NULL};
    const h_case cases[] = {{"formats", 60, NULL, NULL, setup, teardown, tests}, {NULL}};
    return h_run_suite_forked(h_suite("formats", cases));
}
