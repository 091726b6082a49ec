/*
 * check_vectors.c - the test vectors of docs/internals/signed-formats.md,
 * checked against libveil, so the document a wallet vendor builds from and
 * the code cannot drift apart (issue 18 item 12).
 *
 * The document holds blocks
 *
 *   ```vector <name>
 *   <key>  <value>
 *   ```
 *
 * with the inputs (keys, times, ids; binary values in lowercase hex) and the
 * expected outputs (the exact bytes signed, signatures, sealed boxes that
 * open to the given plain text, tokens).  Each block is read here, every
 * output recomputed from its inputs with libveil (and sealed boxes opened
 * with the given vault key), and compared byte for byte; a missing block or
 * key fails.  VEIL_VECTORS_PRINT=1 prints the blocks instead (how they were
 * made: the inputs below, the outputs from libveil).
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "harness.h"
#include "veil/codec.h"
#include "veil/formats.h"
#include "veil/inperson.h"
#include "veil/jws.h"
#include "veil/keys.h"

#define MAX_KEYS 24

typedef struct vector {
    char name[32];
    size_t n;
    char key[MAX_KEYS][32];
    char *value[MAX_KEYS];
} vector;

static char *doc;
static int printing;

static const char *get(const vector *v, const char *key)
{
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->key[i], key) == 0)
            return v->value[i];
    ck_abort_msg("vector %s has no %s", v->name, key);
    return NULL;
}

/* Hex of the vector's key into out (exactly len bytes). */
static void hex(const vector *v, const char *key, unsigned char *out, size_t len)
{
    const char *h = get(v, key);
    size_t n;
    ck_assert_msg(sodium_hex2bin(out, len, h, strlen(h), NULL, &n, NULL) == 0 && n == len,
                  "vector %s: %s is not %zu bytes of hex", v->name, key, len);
}

/* Compares computed bytes with the vector's hex (or prints them). */
static void expect(const vector *v, const char *key, const unsigned char *b, size_t len)
{
    char *h = malloc(2 * len + 1);
    sodium_bin2hex(h, 2 * len + 1, b, len);
    if (printing)
        printf("%-18s %s\n", key, h);
    else
        ck_assert_msg(strcmp(get(v, key), h) == 0, "vector %s: %s differs:\n doc  %s\n code %s",
                      v->name, key, get(v, key), h);
    free(h);
}

static void expect_text(const vector *v, const char *key, const char *text)
{
    if (printing)
        printf("%-18s %s\n", key, text);
    else
        ck_assert_msg(strcmp(get(v, key), text) == 0, "vector %s: %s differs:\n doc  %s\n code %s",
                      v->name, key, get(v, key), text);
}

/* Finds ```vector <name> in the document and reads its lines. */
static void load(const char *name, vector *v)
{
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s", name);
    char head[64];
    snprintf(head, sizeof head, "```vector %s\n", name);
    const char *p = strstr(doc, head);
    ck_assert_msg(p != NULL, "docs/internals/signed-formats.md has no vector %s", name);
    p += strlen(head);
    while (strncmp(p, "```", 3) != 0) {
        const char *eol = strchr(p, '\n');
        ck_assert_ptr_nonnull(eol);
        size_t k = strcspn(p, " ");
        ck_assert_msg(k < sizeof v->key[0] && v->n < MAX_KEYS, "vector %s: bad line", name);
        memcpy(v->key[v->n], p, k);
        const char *val = p + k;
        while (*val == ' ')
            val++;
        v->value[v->n] = strndup(val, (size_t)(eol - val));
        v->n++;
        p = eol + 1;
    }
}

static void unload(vector *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->value[i]);
}

/* In print mode the inputs come from here; in test mode from the document. */
static const char *in(const vector *v, const char *key, const char *fixed)
{
    if (printing) {
        printf("%-18s %s\n", key, fixed);
        return fixed;
    }
    return get(v, key);
}

static void begin(const char *name, vector *v)
{
    if (printing) {
        memset(v, 0, sizeof *v);
        snprintf(v->name, sizeof v->name, "%s", name);
        printf("```vector %s\n", name);
    } else {
        load(name, v);
    }
}

static void end(vector *v)
{
    if (printing)
        printf("```\n\n");
    unload(v);
}

static void in_hex(const vector *v, const char *key, const char *fixed, unsigned char *out,
                   size_t len)
{
    const char *h = in(v, key, fixed);
    size_t n;
    ck_assert_msg(sodium_hex2bin(out, len, h, strlen(h), NULL, &n, NULL) == 0 && n == len,
                  "vector %s: %s is not %zu bytes of hex", v->name, key, len);
}

#define SEED_AUTHORITY "0101010101010101010101010101010101010101010101010101010101010101"
#define SEED_DEVICE    "0202020202020202020202020202020202020202020202020202020202020202"
#define SEED_VAULT_BOX "0303030303030303030303030303030303030303030303030303030303030303"
#define SEED_SIGNER    "0404040404040404040404040404040404040404040404040404040404040404"
#define DEVICE_ID      "00112233445566778899aabbccddeeff"
#define CHALLENGE      "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"

START_TEST(test_proofing_attestation)
{
    vector v;
    unsigned char seed[32], pk[32], sk[64], dseed[32], dpk[32], dsk[64], sig[64];
    begin("proofing-attestation", &v);
    in_hex(&v, "authority_seed", SEED_AUTHORITY, seed, 32);
    in_hex(&v, "device_seed", SEED_DEVICE, dseed, 32);
    const char *id = in(&v, "id_number", "11010519491231002x");
    const char *name = in(&v, "full_name", "王小明");
    int face = atoi(in(&v, "face_match", "1"));
    long long at = atoll(in(&v, "attested_at_ms", "1767225600000"));
    crypto_sign_seed_keypair(pk, sk, seed);
    crypto_sign_seed_keypair(dpk, dsk, dseed);
    expect(&v, "authority_pk", pk, 32);
    /* as a line of VAULT_PROOFING_PUBLIC_KEY's file (vault.md, "The proofing authority") */
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, pk, 32, sodium_base64_VARIANT_ORIGINAL);
    expect_text(&v, "authority_pk_file", b64);
    expect(&v, "device_pk", dpk, 32);
    veil_buf b = {0};
    veil_attestation_bytes(&b, id, name, face, dpk, at);
    expect(&v, "signed_bytes", b.data, b.len);
    crypto_sign_detached(sig, NULL, b.data, b.len, sk);
    expect(&v, "signature", sig, 64);
    ck_assert_int_eq(crypto_sign_verify_detached(sig, b.data, b.len, pk), 0);
    veil_buf_free(&b);
    end(&v);
}
END_TEST

START_TEST(test_login_ticket)
{
    vector v;
    unsigned char dseed[32], dpk[32], dsk[64], bseed[32], bpk[32], bsk[32], id[16], ch[32], sig[64];
    begin("login-ticket", &v);
    in_hex(&v, "device_seed", SEED_DEVICE, dseed, 32);
    in_hex(&v, "vault_box_seed", SEED_VAULT_BOX, bseed, 32);
    const char *app = in(&v, "app_id", "gov.tax");
    in_hex(&v, "challenge", CHALLENGE, ch, 32);
    long long t = atoll(in(&v, "time_ms", "1767225601000"));
    in_hex(&v, "device_id", DEVICE_ID, id, 16);
    uint32_t version = (uint32_t)atol(in(&v, "key_version", "1"));
    crypto_sign_seed_keypair(dpk, dsk, dseed);
    crypto_box_seed_keypair(bpk, bsk, bseed);
    expect(&v, "vault_box_pk", bpk, 32);
    veil_buf b = {0};
    veil_ticket_signed_bytes(&b, app, ch, 32, t, id, version);
    expect(&v, "signed_bytes", b.data, b.len);
    crypto_sign_detached(sig, NULL, b.data, b.len, dsk);
    expect(&v, "signature", sig, 64);
    /* the sealed part's plain text: u32 version | i64 time | device id | signature */
    veil_buf inner = {0};
    veil_buf_put_u32(&inner, version);
    veil_buf_put_i64(&inner, t);
    veil_buf_put(&inner, id, 16);
    veil_buf_put(&inner, sig, 64);
    expect(&v, "inner", inner.data, inner.len);
    /* a whole ticket (its seal is random: checked by opening, not by comparing) */
    char *ticket = NULL;
    if (printing) {
        ck_assert_int_eq(veil_ticket_make(app, ch, 32, t, id, dsk, bpk, version, &ticket), VEIL_OK);
        expect_text(&v, "ticket", ticket);
    } else {
        ticket = strdup(get(&v, "ticket"));
    }
    veil_ticket parsed;
    veil_ticket_inner opened;
    ck_assert_int_eq(veil_ticket_parse(ticket, strlen(ticket), &parsed), VEIL_OK);
    ck_assert_str_eq(parsed.app_id, app);
    ck_assert_mem_eq(parsed.challenge, ch, 32);
    ck_assert_int_eq(veil_ticket_open(&parsed, bpk, bsk, &opened), VEIL_OK);
    ck_assert_uint_eq(opened.key_version, version);
    ck_assert_int_eq(opened.time_ms, t);
    ck_assert_mem_eq(opened.device_id, id, 16);
    ck_assert_mem_eq(opened.sig, sig, 64); /* Ed25519 is deterministic */
    /* and the clear part is byte for byte the layout: 2 | field(app) | field(challenge) */
    unsigned char raw[VEIL_TICKET_MAX];
    size_t rl;
    ck_assert_int_eq(veil_b64url_decode(raw, sizeof raw, ticket, strlen(ticket), &rl), 0);
    veil_buf clear = {0};
    veil_buf_put_u8(&clear, 2);
    veil_buf_put_str(&clear, app);
    veil_buf_put_lp(&clear, ch, 32);
    veil_buf_put_u16(&clear, VEIL_TICKET_INNER_BYTES + crypto_box_SEALBYTES);
    expect(&v, "clear_part", clear.data, clear.len);
    ck_assert_mem_eq(raw, clear.data, clear.len);
    ck_assert_uint_eq(rl, clear.len + VEIL_TICKET_INNER_BYTES + crypto_box_SEALBYTES);
    free(ticket);
    veil_buf_free(&b);
    veil_buf_free(&inner);
    veil_buf_free(&clear);
    end(&v);
}
END_TEST

START_TEST(test_enrolment_identity)
{
    vector v;
    unsigned char bseed[32], bpk[32], bsk[32];
    veil_enrol_identity id = {0}, back;
    begin("enrolment-identity", &v);
    in_hex(&v, "vault_box_seed", SEED_VAULT_BOX, bseed, 32);
    crypto_box_seed_keypair(bpk, bsk, bseed);
    id.key_version = (uint32_t)atol(in(&v, "key_version", "1"));
    snprintf(id.id_number, sizeof id.id_number, "%s", in(&v, "id_number", "11010519491231002X"));
    snprintf(id.full_name, sizeof id.full_name, "%s", in(&v, "full_name", "王小明"));
    in_hex(&v, "device_pk", "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
           id.device_pk, 32);
    id.face_match = atoi(in(&v, "face_match", "1"));
    id.attested_at_ms = atoll(in(&v, "attested_at_ms", "1767225600000"));
    in_hex(&v, "signature",
           "0505050505050505050505050505050505050505050505050505050505050505"
           "0505050505050505050505050505050505050505050505050505050505050505",
           id.signature, 64);
    snprintf(id.device_label, sizeof id.device_label, "%s", in(&v, "device_label", "phone"));
    unsigned char sealed[VEIL_ENROL_SEALED_BYTES], plain[VEIL_ENROL_IDENTITY_BYTES];
    if (printing)
        ck_assert_int_eq(veil_enrol_identity_seal(&id, bpk, sealed), VEIL_OK);
    else
        hex(&v, "sealed", sealed, sizeof sealed);
    ck_assert_int_eq(crypto_box_seal_open(plain, sealed, sizeof sealed, bpk, bsk), 0);
    expect(&v, "plain", plain, sizeof plain);
    if (printing)
        expect(&v, "sealed", sealed, sizeof sealed);
    ck_assert_int_eq(veil_enrol_identity_open(sealed, sizeof sealed, bpk, bsk, &back), VEIL_OK);
    ck_assert_str_eq(back.id_number, id.id_number);
    ck_assert_str_eq(back.full_name, id.full_name);
    ck_assert_str_eq(back.device_label, id.device_label);
    ck_assert_mem_eq(back.signature, id.signature, 64);
    ck_assert_int_eq(back.attested_at_ms, id.attested_at_ms);
    end(&v);
}
END_TEST

START_TEST(test_citizen_request)
{
    vector v;
    unsigned char dseed[32], dpk[32], dsk[64], nonce[16], payload[64], sig[64];
    begin("citizen-request", &v);
    in_hex(&v, "device_seed", SEED_DEVICE, dseed, 32);
    const char *method = in(&v, "method", "/veil.gateway.Wallet/ListConsents");
    const char *ph = in(&v, "payload", "0a07676f762e746178");
    size_t pl;
    ck_assert_int_eq(sodium_hex2bin(payload, sizeof payload, ph, strlen(ph), NULL, &pl, NULL), 0);
    long long t = atoll(in(&v, "time_ms", "1767225602000"));
    in_hex(&v, "nonce", "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf", nonce, 16);
    const char *device = in(&v, "device_id", DEVICE_ID);
    crypto_sign_seed_keypair(dpk, dsk, dseed);
    veil_buf b = {0};
    veil_citizen_signed_bytes(&b, method, payload, pl, t, nonce, 16, device);
    expect(&v, "signed_bytes", b.data, b.len);
    crypto_sign_detached(sig, NULL, b.data, b.len, dsk);
    expect(&v, "signature", sig, 64);
    veil_buf_free(&b);
    end(&v);
}
END_TEST

START_TEST(test_checkpoint)
{
    vector v;
    unsigned char seed[32], pk[32], sk[64], head[32], sig[64];
    begin("access-checkpoint", &v);
    in_hex(&v, "checkpoint_seed", SEED_SIGNER, seed, 32);
    const char *wn = in(&v, "web_number", "0123-4567-89AB-CDEZ");
    long long seq = atoll(in(&v, "seq", "7"));
    in_hex(&v, "head", "0606060606060606060606060606060606060606060606060606060606060606", head,
           32);
    long long at = atoll(in(&v, "at_ms", "1767225603000"));
    long long retention = atoll(in(&v, "retention_ms", "7776000000"));
    crypto_sign_seed_keypair(pk, sk, seed);
    expect(&v, "checkpoint_pk", pk, 32);
    veil_buf b = {0};
    veil_checkpoint_bytes(&b, wn, seq, head, at, retention);
    expect(&v, "signed_bytes", b.data, b.len);
    crypto_sign_detached(sig, NULL, b.data, b.len, sk);
    expect(&v, "signature", sig, 64);
    veil_buf_free(&b);
    end(&v);
}
END_TEST

START_TEST(test_jws)
{
    vector v;
    unsigned char seed[32];
    begin("jws-webcert", &v);
    in_hex(&v, "signer_seed", SEED_SIGNER, seed, 32);
    uint32_t version = (uint32_t)atol(in(&v, "key_version", "1"));
    const char *payload =
        in(&v, "payload",
           "{\"iss\":\"veil-vault\",\"wn\":\"0123-4567-89AB-CDEZ\",\"cnf\":{\"jwk\":"
           "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":"
           "\"gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q\"}},"
           "\"iat\":1767225600,\"exp\":1798761600}");
    veil_key key = {.version = version, .bytes = seed};
    veil_signer *s;
    ck_assert_int_eq(veil_signer_new(&key, "webcert", &s), VEIL_OK);
    expect(&v, "signer_pk", s->pk, 32);
    json_error_t je;
    json_t *claims = json_loads(payload, 0, &je);
    ck_assert_ptr_nonnull(claims);
    char *token;
    ck_assert_int_eq(veil_jws_sign(s, "veil-webcert+jwt", claims, &token), VEIL_OK);
    expect_text(&v, "token", token);
    /* and it verifies as veil verifies */
    veil_jwks jwks = {.n = 1};
    snprintf(jwks.keys[0].kid, sizeof jwks.keys[0].kid, "%s", s->kid);
    memcpy(jwks.keys[0].pk, s->pk, 32);
    json_t *back = NULL;
    ck_assert_int_eq(
        veil_jws_verify(token, strlen(token), "veil-webcert+jwt", veil_jwks_find, &jwks, &back),
        VEIL_OK);
    json_decref(back);
    json_decref(claims);
    free(token);
    veil_signer_free(s);
    end(&v);
}
END_TEST

START_TEST(test_web_number)
{
    vector v;
    begin("web-number", &v);
    const char *body = in(&v, "symbols", "0123456789ABCDE");
    int vals[15];
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    ck_assert_uint_eq(strlen(body), 15);
    for (int i = 0; i < 15; i++)
        vals[i] = (int)(strchr(alphabet, body[i]) - alphabet);
    int check = veil_luhn32_check(vals, 15);
    char wn[20];
    snprintf(wn, sizeof wn, "%.4s-%.4s-%.4s-%.3s%c", body, body + 4, body + 8, body + 12,
             alphabet[check]);
    expect_text(&v, "web_number", wn);
    ck_assert(veil_web_number_valid(wn));
    end(&v);
}
END_TEST

START_TEST(test_presentation)
{
    vector v;
    unsigned char dseed[32], dpk[32], dsk[64], bseed[32], bpk[32], bsk[32];
    veil_presentation p = {0}, back;
    begin("presentation", &v);
    in_hex(&v, "device_seed", SEED_DEVICE, dseed, 32);
    in_hex(&v, "vault_box_seed", SEED_VAULT_BOX, bseed, 32);
    in_hex(&v, "nonce", "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf", p.nonce, 16);
    p.time_ms = atoll(in(&v, "time_ms", "1767225604000"));
    const char *names = in(&v, "attributes", "age_over_18,real_name_verified");
    char list[128];
    snprintf(list, sizeof list, "%s", names);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
        snprintf(p.attributes[p.n_attributes++], sizeof p.attributes[0], "%s", tok);
    in_hex(&v, "device_id", DEVICE_ID, p.device_id, 16);
    crypto_sign_seed_keypair(dpk, dsk, dseed);
    crypto_box_seed_keypair(bpk, bsk, bseed);
    veil_buf b = {0};
    veil_presentation_signed_bytes(&b, &p);
    expect(&v, "signed_bytes", b.data, b.len);
    crypto_sign_detached(p.sig, NULL, b.data, b.len, dsk);
    expect(&v, "signature", p.sig, 64);
    /* inner: device id | field(nonce) | i64 time | u8 n | fields | signature */
    veil_buf inner = {0};
    veil_buf_put(&inner, p.device_id, 16);
    veil_buf_put_lp(&inner, p.nonce, 16);
    veil_buf_put_i64(&inner, p.time_ms);
    veil_buf_put_u8(&inner, (uint8_t)p.n_attributes);
    for (size_t i = 0; i < p.n_attributes; i++)
        veil_buf_put_str(&inner, p.attributes[i]);
    veil_buf_put(&inner, p.sig, 64);
    expect(&v, "inner", inner.data, inner.len);
    char *text;
    if (printing) {
        size_t wl = 1 + inner.len + crypto_box_SEALBYTES, cap = veil_b64url_len(wl);
        unsigned char *wire = malloc(wl);
        wire[0] = VEIL_PRESENTATION_FORMAT;
        ck_assert_int_eq(crypto_box_seal(wire + 1, inner.data, inner.len, bpk), 0);
        text = malloc(cap);
        veil_b64url_encode(text, cap, wire, wl);
        free(wire);
        expect_text(&v, "presentation", text);
    } else {
        text = strdup(get(&v, "presentation"));
    }
    ck_assert_int_eq(veil_presentation_open(text, strlen(text), bpk, bsk, &back), VEIL_OK);
    ck_assert_mem_eq(back.nonce, p.nonce, 16);
    ck_assert_int_eq(back.time_ms, p.time_ms);
    ck_assert_uint_eq(back.n_attributes, p.n_attributes);
    ck_assert_str_eq(back.attributes[1], p.attributes[1]);
    ck_assert_mem_eq(back.sig, p.sig, 64);
    free(text);
    veil_buf_free(&b);
    veil_buf_free(&inner);
    end(&v);
}
END_TEST

START_TEST(test_card_code)
{
    vector v;
    unsigned char secret[VEIL_CARD_SECRET_BYTES], back[VEIL_CARD_SECRET_BYTES], pk[32], sk[64];
    begin("card-code", &v);
    in_hex(&v, "secret", "0f1e2d3c4b5a69788796a5b4c3d2e1", secret, sizeof secret);
    char code[VEIL_CARD_CODE_LEN + 1];
    veil_card_code_text(secret, code);
    expect_text(&v, "code", code);
    ck_assert_int_eq(veil_card_code_parse(code, back), 0);
    ck_assert_mem_eq(back, secret, sizeof secret);
    veil_card_keypair(secret, pk, sk);
    expect(&v, "card_pk", pk, 32);
    sodium_memzero(sk, sizeof sk);
    end(&v);
}
END_TEST

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    printing = getenv("VEIL_VECTORS_PRINT") != NULL;
    if (!printing) {
        char path[1100];
        snprintf(path, sizeof path, "%s/docs/internals/signed-formats.md",
                 h_env("VEIL_SOURCE_DIR"));
        FILE *f = fopen(path, "r");
        if (!f) {
            fprintf(stderr, "check_vectors: cannot read %s\n", path);
            return 1;
        }
        size_t cap = 1 << 20, n = fread(doc = malloc(cap), 1, cap - 1, f);
        doc[n] = '\0';
        fclose(f);
    }
    const TTest *const tests[] = {test_proofing_attestation,
                                  test_login_ticket,
                                  test_enrolment_identity,
                                  test_presentation,
                                  test_card_code,
                                  test_citizen_request,
                                  test_checkpoint,
                                  test_jws,
                                  test_web_number,
                                  NULL};
    const h_case cases[] = {{"vectors", 0, NULL, NULL, NULL, NULL, tests}, {NULL}};
    Suite *s = h_suite("vectors", cases);
    int rc = printing ? (srunner_run_all(srunner_create(s), CK_SILENT), 0) : h_run_suite(s);
    free(doc);
    return rc;
}
