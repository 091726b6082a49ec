/*
 * check_vault_enrol.c - enrolment over real gRPC and the real PostgreSQL:
 * ID numbers (valid and invalid, over the wire), forged, mismatched, stale
 * and future attestations, proofing-key rotation, idempotency, re-enrolment
 * with a new device, device keys bound to another person, the web
 * certificate (verified with the vault's published JWKS), the caller
 * policy, and that no ID number, name or birth date reaches the database in
 * plaintext (a pg_dump searched in several spellings) or the service log.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdint.h>
#include <sodium.h>

#include "veil/jws.h"
#include "vtest.h"

/* Enrols and expects failure with err and a message containing want; never echoing PII. */
static void expect_enrol_fails(vt *t, const Veil__Vault__EnrolRequest *req, veil_err err,
                               const char *want)
{
    Veil__Vault__EnrolResponse *resp;
    veil_status st;
    ck_assert_int_eq(vt_enrol_raw(t, req, &resp, &st), err);
    ck_assert_msg(strstr(st.message, want), "message \"%s\" lacks \"%s\"", st.message, want);
    if (req->id_number[0])
        ck_assert_ptr_null(strstr(st.message, req->id_number));
    if (req->full_name[0])
        ck_assert_ptr_null(strstr(st.message, req->full_name));
}

static void assert_not_logged(vt *t, const char *const *secrets, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(!h_log_contains(&t->proc, secrets[i]), "the vault logged a secret (#%zu)", i);
}

START_TEST(test_enrol_and_web_certificate)
{
    vt t;
    vt_start(&t, NULL);
    char id[19];
    vt_id_number(id, "440305", 1990, 3, 7, 1);
    vt_device d;
    vt_new_device(&d);
    unsigned char sig[64];
    int64_t at = veil_now_ms();
    vt_attest(&t, id, "王小明", 1, d.pk, at, sig);
    Veil__Vault__ProofingAttestation pa = vt_attestation(sig, 1, at);
    Veil__Vault__EnrolRequest req = vt_enrol_request("req-1", id, "王小明", &d, &pa);
    Veil__Vault__EnrolResponse *resp;
    veil_status st;
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &resp, &st), VEIL_OK);
    ck_assert(resp->new_identity);
    ck_assert(veil_web_number_valid(resp->web_number));
    unsigned char devid[16];
    ck_assert_int_eq(veil_device_id_parse(resp->device_id, devid), 0);
    ck_assert_uint_eq(resp->ticket_public_key.len, 32);
    ck_assert_mem_eq(resp->ticket_public_key.data, t.ticket_pk, 32);
    ck_assert_uint_eq(resp->ticket_key_version, 1);

    /* the certificate verifies with the vault's JWKS and binds web number and device key */
    Veil__Empty e = VEIL__EMPTY__INIT;
    Veil__Vault__GetWalletKeysResponse *keys;
    ck_assert_int_eq(veil_channel_call(t.ch, "GetWalletKeys", &e.base, NULL, 5000, &keys, &st),
                     VEIL_OK);
    veil_jwks jwks;
    ck_assert_int_eq(veil_jwks_parse(keys->vault_jwks, &jwks), VEIL_OK);
    ck_assert_uint_eq(jwks.n, 1);
    ck_assert_str_eq(jwks.keys[0].kid, "webcert-1");
    json_t *claims;
    const char *cert = resp->web_certificate;
    ck_assert_int_eq(
        veil_jws_verify(cert, strlen(cert), "veil-webcert+jwt", veil_jwks_find, &jwks, &claims),
        VEIL_OK);
    ck_assert_str_eq(json_string_value(json_object_get(claims, "iss")), "veil-vault");
    ck_assert_str_eq(json_string_value(json_object_get(claims, "wn")), resp->web_number);
    json_t *jwk = json_object_get(json_object_get(claims, "cnf"), "jwk");
    char x[64];
    veil_b64url_encode(x, sizeof x, d.pk, 32);
    ck_assert_str_eq(json_string_value(json_object_get(jwk, "x")), x);
    ck_assert_str_eq(json_string_value(json_object_get(jwk, "kty")), "OKP");
    ck_assert_str_eq(json_string_value(json_object_get(jwk, "crv")), "Ed25519");
    json_int_t iat = json_integer_value(json_object_get(claims, "iat"));
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    ck_assert(llabs((long long)iat - (long long)(veil_now_ms() / 1000)) < 60);
    ck_assert_int_eq(exp - iat, 365LL * 86400);
    /* nothing in the certificate is personal */
    char *payload = json_dumps(claims, JSON_COMPACT);
    ck_assert_ptr_null(strstr(payload, id));
    ck_assert_ptr_null(strstr(payload, "1990"));
    free(payload);
    json_decref(claims);
    /* a tampered certificate does not verify */
    char *bad = strdup(cert);
    char *dot = strchr(bad, '.');
    dot[5] = dot[5] == 'A' ? 'B' : 'A';
    ck_assert_int_ne(
        veil_jws_verify(bad, strlen(bad), "veil-webcert+jwt", veil_jwks_find, &jwks, &claims),
        VEIL_OK);
    free(bad);
    protobuf_c_message_free_unpacked(&keys->base, NULL);

    /* another person gets another web number */
    char id2[19];
    vt_id_number(id2, "110105", 1985, 1, 1, 3);
    vt_device d2;
    vt_new_device(&d2);
    ck_assert_int_eq(vt_enrol(&t, "req-2", id2, "李四", &d2, NULL, &st), VEIL_OK);
    ck_assert_str_ne(d2.web_number, resp->web_number);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    const char *secrets[] = {id, id2, "王小明", "李四", "19900307", "1990-03-07"};
    assert_not_logged(&t, secrets, 6);
    vt_stop(&t);
}
END_TEST

START_TEST(test_id_numbers_over_the_wire)
{
    vt t;
    vt_start(&t, NULL);
    static const struct {
        const char *id;
        const char *want; /* NULL: accepted */
    } cases[] = {
        {"11010519491231002X", NULL},
        {"440524188001010014", NULL},
        {"810000199001010019", NULL},
        {"", "id_number must be 18 characters"},
        {"11010519491231002", "id_number must be 18 characters"},
        {"110105194912310021X", "id_number must be 18 characters"},
        {"1101051949123100X2", "id_number must be 17 digits followed by a digit or X"},
        {"11010519491231002?", "id_number must be 17 digits followed by a digit or X"},
        {"990101199001010019", "id_number does not start with a known administrative division"},
        {"110000199001010013", "id_number does not start with a known administrative division"},
        {"110105199002300011", "id_number does not hold a valid birth date"},
        {"110105190002290017", "id_number does not hold a valid birth date"},
        {"110105199013010011", "id_number does not hold a valid birth date"},
        {"44030520990101001X", "id_number holds a birth date in the future"},
        {"110105194912310021", "id_number check character is wrong"},
        {"440305199003070041", "id_number check character is wrong"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vt_device d;
        vt_new_device(&d);
        unsigned char sig[64];
        int64_t at = veil_now_ms();
        char rid[32];
        snprintf(rid, sizeof rid, "case-%zu", i);
        /* a genuine attestation over the number: only the number's own rules reject it */
        vt_attest(&t, cases[i].id, "测试人", 1, d.pk, at, sig);
        Veil__Vault__ProofingAttestation pa = vt_attestation(sig, 1, at);
        Veil__Vault__EnrolRequest req = vt_enrol_request(rid, cases[i].id, "测试人", &d, &pa);
        if (cases[i].want) {
            expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, cases[i].want);
        } else {
            Veil__Vault__EnrolResponse *resp;
            veil_status st;
            ck_assert_msg(vt_enrol_raw(&t, &req, &resp, &st) == VEIL_OK, "%s: %s", cases[i].id,
                          st.message);
            ck_assert(resp->new_identity);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
    }
    /* 'x' and 'X' are one person: the lower-case spelling enrols a device, not an identity */
    vt_device d;
    vt_new_device(&d);
    int fresh = -1;
    veil_status st;
    ck_assert_int_eq(vt_enrol(&t, "lower-x", "11010519491231002x", "测试人", &d, &fresh, &st),
                     VEIL_OK);
    ck_assert_int_eq(fresh, 0);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 3);
    /* nothing rejected was logged, nor anything accepted */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cases[i].id[0])
            ck_assert_msg(!h_log_contains(&t.proc, cases[i].id), "logged %s", cases[i].id);
    ck_assert(!h_log_contains(&t.proc, "测试人"));
    vt_stop(&t);
}
END_TEST

START_TEST(test_attestations)
{
    vt t;
    vt_start(&t, NULL);
    char id[19];
    vt_id_number(id, "320102", 1978, 11, 23, 45);
    const char *name = "赵六";
    vt_device d, other;
    vt_new_device(&d);
    vt_new_device(&other);
    unsigned char sig[64];
    int64_t now = veil_now_ms();
    Veil__Vault__ProofingAttestation pa;
    Veil__Vault__EnrolRequest req;

    /* forged: signed by a key that is not the proofing authority's */
    unsigned char fpk[32], fsk[64];
    crypto_sign_keypair(fpk, fsk);
    veil_buf b = {0};
    veil_attestation_bytes(&b, id, name, 1, d.pk, now);
    crypto_sign_detached(sig, NULL, b.data, b.len, fsk);
    veil_buf_free(&b);
    pa = vt_attestation(sig, 1, now);
    req = vt_enrol_request("a1", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.signature does not verify");

    /* mismatched: genuine signatures over another name, number, device key, result or time */
    vt_attest(&t, id, "赵七", 1, d.pk, now, sig);
    pa = vt_attestation(sig, 1, now);
    req = vt_enrol_request("a2", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.signature does not verify");
    char other_id[19];
    vt_id_number(other_id, "320102", 1978, 11, 23, 47);
    vt_attest(&t, other_id, name, 1, d.pk, now, sig);
    req = vt_enrol_request("a3", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.signature does not verify");
    vt_attest(&t, id, name, 1, other.pk, now, sig);
    req = vt_enrol_request("a4", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.signature does not verify");
    vt_attest(&t, id, name, 0, d.pk, now, sig);
    req = vt_enrol_request("a5", id, name, &d, &pa); /* claims face_match=1 */
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.signature does not verify");
    vt_attest(&t, id, name, 1, d.pk, now - 1, sig);
    req = vt_enrol_request("a6", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.signature does not verify");

    /* a genuine "no face match" is refused */
    vt_attest(&t, id, name, 0, d.pk, now, sig);
    pa = vt_attestation(sig, 0, now);
    req = vt_enrol_request("a7", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_PRECONDITION, "attestation.face_match is false");

    /* stale: older than VAULT_ATTESTATION_MAX_AGE_S (600 s); just inside is fine */
    int64_t stale = now - 601 * 1000;
    vt_attest(&t, id, name, 1, d.pk, stale, sig);
    pa = vt_attestation(sig, 1, stale);
    req = vt_enrol_request("a8", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_PRECONDITION,
                       "attestation.attested_at_ms is older than 600 s");
    /* from the future beyond the clock skew */
    int64_t future = now + 200 * 1000;
    vt_attest(&t, id, name, 1, d.pk, future, sig);
    pa = vt_attestation(sig, 1, future);
    req = vt_enrol_request("a9", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.attested_at_ms is in the future");
    /* the extremes of i64, genuinely signed: refused without arithmetic overflow (issue 18
     * item 3: `now - attested_at_ms` was undefined behaviour for INT64_MIN; UBSan halts) */
    vt_attest(&t, id, name, 1, d.pk, INT64_MIN, sig);
    pa = vt_attestation(sig, 1, INT64_MIN);
    req = vt_enrol_request("a12", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_PRECONDITION, "attestation.attested_at_ms is older than");
    vt_attest(&t, id, name, 1, d.pk, INT64_MAX, sig);
    pa = vt_attestation(sig, 1, INT64_MAX);
    req = vt_enrol_request("a13", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.attested_at_ms is in the future");
    /* missing or malformed */
    req = vt_enrol_request("a10", id, name, &d, NULL);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation is required");
    pa = vt_attestation(sig, 1, now);
    pa.signature.len = 63;
    req = vt_enrol_request("a11", id, name, &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "attestation.signature must be 64 bytes");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 0);

    int64_t almost = veil_now_ms() - 590 * 1000;
    vt_attest(&t, id, name, 1, d.pk, almost, sig);
    pa = vt_attestation(sig, 1, almost);
    req = vt_enrol_request("a12", id, name, &d, &pa);
    Veil__Vault__EnrolResponse *resp;
    veil_status st;
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &resp, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* the authority rotates its key: a file of two keys accepts both */
    unsigned char npk[32], nsk[64];
    crypto_sign_keypair(npk, nsk);
    char b1[64], b2[64];
    sodium_bin2base64(b1, sizeof b1, npk, 32, sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2base64(b2, sizeof b2, t.proof_pk, 32, sodium_base64_VARIANT_ORIGINAL);
    FILE *f = fopen(t.proofing_file, "w");
    fprintf(f, "%s\n\n  %s  \n", b1, b2);
    fclose(f);
    vt_restart(&t);
    vt_device d3;
    vt_new_device(&d3);
    now = veil_now_ms();
    b = (veil_buf){0};
    veil_attestation_bytes(&b, id, name, 1, d3.pk, now);
    crypto_sign_detached(sig, NULL, b.data, b.len, nsk);
    veil_buf_free(&b);
    pa = vt_attestation(sig, 1, now);
    req = vt_enrol_request("a13", id, name, &d3, &pa);
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &resp, &st), VEIL_OK);
    ck_assert(!resp->new_identity);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    vt_device d4;
    vt_new_device(&d4);
    ck_assert_int_eq(vt_enrol(&t, "a14", id, name, &d4, NULL, &st), VEIL_OK); /* the old key */
    const char *secrets[] = {id, other_id, name, "赵七", "19781123"};
    assert_not_logged(&t, secrets, 5);
    vt_stop(&t);
}
END_TEST

START_TEST(test_bad_fields)
{
    vt t;
    vt_start(&t, NULL);
    char id[19];
    vt_id_number(id, "510107", 2001, 5, 5, 8);
    vt_device d;
    vt_new_device(&d);
    unsigned char sig[64];
    int64_t now = veil_now_ms();
    vt_attest(&t, id, "孙八", 1, d.pk, now, sig);
    Veil__Vault__ProofingAttestation pa = vt_attestation(sig, 1, now);
    Veil__Vault__EnrolRequest req = vt_enrol_request("", id, "孙八", &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "request_id must be");
    req = vt_enrol_request("r", id, "", &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "full_name must be");
    /* invalid UTF-8 is refused on the wire by the RPC layer, before the handler */
    req = vt_enrol_request("r", id, "bad\xff\xfe", &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "full_name: strings must be utf-8");
    req = vt_enrol_request("r", id, "line\nbreak", &d, &pa);
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "full_name must be");
    req = vt_enrol_request("r", id, "孙八", &d, &pa);
    req.device_public_key.len = 31;
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "device_public_key must be 32 bytes");
    req = vt_enrol_request("r", id, "孙八", &d, &pa);
    req.device_label = "a label that is much much longer than sixty-four bytes, which is the limit";
    expect_enrol_fails(&t, &req, VEIL_ERR_INVALID, "device_label must be");
    /* bytes that are not an EnrolRequest at all, and a truncated one */
    char msg[256];
    ck_assert_int_eq(h_raw_call(t.proc.addr, "svc/gateway", "/veil.vault.Vault/Enrol",
                                "\xff\xff\xff\xff", 4, 5000, msg, sizeof msg),
                     GRPC_STATUS_INVALID_ARGUMENT);
    req = vt_enrol_request("r", id, "孙八", &d, &pa);
    size_t n = protobuf_c_message_get_packed_size(&req.base);
    unsigned char *packed = malloc(n);
    protobuf_c_message_pack(&req.base, packed);
    ck_assert_int_eq(h_raw_call(t.proc.addr, "svc/gateway", "/veil.vault.Vault/Enrol", packed,
                                n - 5, 5000, msg, sizeof msg),
                     GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_null(strstr(msg, id));
    free(packed);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 0);
    ck_assert(!h_log_contains(&t.proc, id));
    ck_assert(!h_log_contains(&t.proc, "孙八"));
    vt_stop(&t);
}
END_TEST

START_TEST(test_idempotency)
{
    /* a short attestation window, so a retry can come after it closed */
    const char *env[] = {"VAULT_ATTESTATION_MAX_AGE_S=2", NULL};
    vt t;
    vt_start(&t, env);
    char id[19];
    vt_id_number(id, "330106", 1995, 8, 8, 11);
    vt_device d, other;
    vt_new_device(&d);
    vt_new_device(&other);
    unsigned char sig[64];
    int64_t now = veil_now_ms();
    vt_attest(&t, id, "周九", 1, d.pk, now, sig);
    Veil__Vault__ProofingAttestation pa = vt_attestation(sig, 1, now);
    Veil__Vault__EnrolRequest req = vt_enrol_request("same-request", id, "周九", &d, &pa);
    Veil__Vault__EnrolResponse *first, *again;
    veil_status st;
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &first, &st), VEIL_OK);
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &again, &st), VEIL_OK);
    ck_assert_str_eq(first->web_number, again->web_number);
    ck_assert_str_eq(first->device_id, again->device_id);
    ck_assert_str_eq(first->web_certificate, again->web_certificate);
    ck_assert_int_eq(first->new_identity, again->new_identity);
    ck_assert(again->new_identity);
    protobuf_c_message_free_unpacked(&again->base, NULL);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 1);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM devices"), 1);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM enrol_requests"), 1);

    /* the same id with different content */
    unsigned char sig2[64];
    vt_attest(&t, id, "周九", 1, other.pk, now, sig2);
    Veil__Vault__ProofingAttestation pa2 = vt_attestation(sig2, 1, now);
    Veil__Vault__EnrolRequest req2 = vt_enrol_request("same-request", id, "周九", &other, &pa2);
    expect_enrol_fails(&t, &req2, VEIL_ERR_EXISTS, "request_id was used for a different request");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM devices"), 1);

    /* after the window closed: a retry still gets its stored result, a new request does not */
    sleep(3);
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &again, &st), VEIL_OK);
    ck_assert_str_eq(first->device_id, again->device_id);
    ck_assert_str_eq(first->web_certificate, again->web_certificate);
    protobuf_c_message_free_unpacked(&again->base, NULL);
    req2.request_id = "fresh-request";
    expect_enrol_fails(&t, &req2, VEIL_ERR_PRECONDITION,
                       "attestation.attested_at_ms is older than 2 s");
    protobuf_c_message_free_unpacked(&first->base, NULL);
    vt_stop(&t);
}
END_TEST

START_TEST(test_new_device_and_device_keys)
{
    vt t;
    vt_start(&t, NULL);
    char id[19], id2[19];
    vt_id_number(id, "420102", 1970, 1, 20, 101);
    vt_id_number(id2, "420102", 1971, 2, 21, 102);
    vt_device a, b, c;
    vt_new_device(&a);
    vt_new_device(&b);
    vt_new_device(&c);
    veil_status st;
    int fresh = -1;
    ck_assert_int_eq(vt_enrol(&t, "p1-a", id, "吴十", &a, &fresh, &st), VEIL_OK);
    ck_assert_int_eq(fresh, 1);
    /* a new phone: the same identity, a second device */
    ck_assert_int_eq(vt_enrol(&t, "p1-b", id, "吴十", &b, &fresh, &st), VEIL_OK);
    ck_assert_int_eq(fresh, 0);
    ck_assert_str_eq(a.web_number, b.web_number);
    ck_assert_str_ne(a.device_id, b.device_id);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 1);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM devices"), 2);
    /* both devices log in as the same subject */
    ck_assert_int_eq(vt_login(&t, &a, "chat.wechat", &st), VEIL_OK);
    ck_assert_int_eq(vt_login(&t, &b, "chat.wechat", &st), VEIL_OK);
    ck_assert_mem_eq(a.subject, b.subject, 32);
    Veil__Vault__ListDevicesResponse *list;
    ck_assert_int_eq(vt_subject_call(&t, "ListDevices", a.subject, 32, &list, &st), VEIL_OK);
    ck_assert_uint_eq(list->n_devices, 2);
    for (size_t i = 0; i < 2; i++) {
        ck_assert_str_eq(list->devices[i]->status, "active");
        ck_assert_str_eq(list->devices[i]->label, "phone");
        ck_assert(list->devices[i]->created_at_ms > 0);
    }
    protobuf_c_message_free_unpacked(&list->base, NULL);

    /* a device key bound to this person cannot be enrolled by another */
    vt_device stolen = a;
    ck_assert_int_eq(vt_enrol(&t, "p2-a", id2, "郑十一", &stolen, NULL, &st), VEIL_ERR_EXISTS);
    ck_assert_str_eq(st.message, "device key already enrolled");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 1);
    /* the same phone enrolling its person again keeps its device */
    vt_device same = a;
    ck_assert_int_eq(vt_enrol(&t, "p1-a-again", id, "吴十", &same, &fresh, &st), VEIL_OK);
    ck_assert_str_eq(same.device_id, a.device_id);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM devices"), 2);
    /* a revoked device's key is not brought back by enrolling again */
    Veil__Vault__RevokeDeviceRequest rv = VEIL__VAULT__REVOKE_DEVICE_REQUEST__INIT;
    rv.subject_ref.data = a.subject;
    rv.subject_ref.len = 32;
    rv.device_id = a.device_id;
    Veil__Empty *empty;
    ck_assert_int_eq(veil_channel_call(t.ch, "RevokeDevice", &rv.base, NULL, 5000, &empty, &st),
                     VEIL_OK);
    protobuf_c_message_free_unpacked(&empty->base, NULL);
    same = a;
    ck_assert_int_eq(vt_enrol(&t, "p1-a-revoked", id, "吴十", &same, NULL, &st),
                     VEIL_ERR_PRECONDITION);
    ck_assert_ptr_nonnull(strstr(st.message, "revoked device"));
    /* the second person enrols with their own key */
    ck_assert_int_eq(vt_enrol(&t, "p2-c", id2, "郑十一", &c, &fresh, &st), VEIL_OK);
    ck_assert_int_eq(fresh, 1);
    ck_assert_str_ne(c.web_number, a.web_number);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 2);
    vt_stop(&t);
}
END_TEST

START_TEST(test_only_the_gateway)
{
    vt t;
    vt_start(&t, NULL);
    const char *others[] = {"svc/vault",     "svc/consent",     "svc/revocation",
                            "svc/pseudonym", "app/chat.wechat", "app/gov.socialsecurity",
                            "admin/ops"};
    const char *methods[] = {"Enrol", "VerifyTicket",  "ReleaseAttributes", "GetWalletKeys",
                             "Erase", "ListAccessLog", "LookupWebNumber"};
    Veil__Vault__EnrolRequest enrol = VEIL__VAULT__ENROL_REQUEST__INIT;
    Veil__Vault__VerifyTicketRequest ticket = VEIL__VAULT__VERIFY_TICKET_REQUEST__INIT;
    Veil__Vault__ReleaseAttributesRequest rel = VEIL__VAULT__RELEASE_ATTRIBUTES_REQUEST__INIT;
    Veil__Empty empty = VEIL__EMPTY__INIT;
    Veil__Vault__SubjectRequest subj = VEIL__VAULT__SUBJECT_REQUEST__INIT;
    Veil__Vault__LookupWebNumberRequest wn = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
    wn.admin = "admin/ops";
    const ProtobufCMessage *reqs[] = {&enrol.base, &ticket.base, &rel.base, &empty.base,
                                      &subj.base,  &subj.base,   &wn.base};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        veil_channel *ch = h_channel(t.proc.addr, others[i], &veil__vault__vault__descriptor);
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
            void *resp;
            veil_status st;
            ck_assert_msg(veil_channel_call(ch, methods[m], reqs[m], NULL, 5000, &resp, &st) ==
                              VEIL_ERR_DENIED,
                          "%s may call %s", others[i], methods[m]);
        }
        veil_channel_free(ch);
    }
    const char *strangers[] = {"foreign", "none"};
    for (size_t i = 0; i < 2; i++) {
        veil_channel *ch = h_channel(t.proc.addr, strangers[i], &veil__vault__vault__descriptor);
        void *resp;
        veil_status st;
        ck_assert_int_eq(
            veil_channel_call(ch, "GetWalletKeys", &empty.base, NULL, 5000, &resp, &st),
            VEIL_ERR_UNAVAILABLE);
        veil_channel_free(ch);
    }
    vt_stop(&t);
}
END_TEST

/* Whether the dump contains needle, as text or as the hex a bytea column would show. */
static int dump_has(const char *dump, const char *needle)
{
    char hex[512];
    size_t n = strlen(needle);
    if (strstr(dump, needle))
        return 1;
    if (2 * n + 1 > sizeof hex)
        return 0;
    veil_hex_encode(hex, sizeof hex, needle, n);
    return strstr(dump, hex) != NULL;
}

START_TEST(test_database_holds_no_plaintext)
{
    vt t;
    vt_start(&t, NULL);
    struct person {
        char id[19];
        const char *name;
        int y, m, d;
    } people[] = {
        {"", "王小明", 1990, 3, 7},
        {"", "欧阳娜娜", 2003, 12, 25},
        {"", "Zhang Wei", 1962, 6, 1},
    };
    vt_id_number(people[0].id, "440305", 1990, 3, 7, 1);
    vt_id_number(people[1].id, "310104", 2003, 12, 25, 22);
    vt_id_number(people[2].id, "110105", 1962, 6, 1, 5);
    veil_status st;
    for (size_t i = 0; i < 3; i++) {
        vt_device d, d2;
        vt_new_device(&d);
        vt_new_device(&d2);
        char rid[32], rid2[32];
        snprintf(rid, sizeof rid, "dump-%zu", i);
        snprintf(rid2, sizeof rid2, "dump-%zu-2", i);
        ck_assert_int_eq(vt_enrol(&t, rid, people[i].id, people[i].name, &d, NULL, &st), VEIL_OK);
        /* a second device whose label holds the name: labels are encrypted too */
        unsigned char sig[64];
        int64_t now = veil_now_ms();
        vt_attest(&t, people[i].id, people[i].name, 1, d2.pk, now, sig);
        Veil__Vault__ProofingAttestation pa = vt_attestation(sig, 1, now);
        char label[64];
        snprintf(label, sizeof label, "%s的手机", people[i].name);
        Veil__Vault__EnrolRequest req =
            vt_enrol_request(rid2, people[i].id, people[i].name, &d2, &pa);
        req.device_label = label;
        Veil__Vault__EnrolResponse *resp;
        ck_assert_int_eq(vt_enrol_raw(&t, &req, &resp, &st), VEIL_OK);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        ck_assert_int_eq(vt_login(&t, &d, "gov.tax", &st), VEIL_OK);
        const char *names[] = {"full_name", "birth_date", "gender", "province"};
        Veil__Vault__ReleaseAttributesResponse *rel;
        ck_assert_int_eq(vt_release(&t, d.subject, "gov.tax", names, 4, "tax filing", &rel, &st),
                         VEIL_OK);
        ck_assert_str_eq(rel->attributes[0]->text, people[i].name);
        protobuf_c_message_free_unpacked(&rel->base, NULL);
    }
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 3);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM devices"), 6);
    /* per person: two device_added, a login, a release */
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_log"), 12);

    char path[1024], cmd[2048];
    snprintf(path, sizeof path, "%s/vault-dump-%d.sql", h_env("VEIL_TEST_DIR"), (int)getpid());
    /* app_scopes is the app registry's copy (which apps exist, not who used them) */
    snprintf(cmd, sizeof cmd,
             "/usr/lib/postgresql/15/bin/pg_dump --no-owner --exclude-table-data=public.app_scopes "
             "-d '%s' -f '%s'",
             t.db, path);
    ck_assert_int_eq(system(cmd), 0);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *dump = malloc((size_t)size + 1);
    ck_assert_uint_eq(fread(dump, 1, (size_t)size, f), (size_t)size);
    dump[size] = '\0';
    fclose(f);
    /* the dump is real: it holds the tables and the rows */
    ck_assert_ptr_nonnull(strstr(dump, "COPY public.citizens"));
    ck_assert_ptr_nonnull(strstr(dump, "COPY public.access_log"));
    /* which apps a person used, and why, is sealed too */
    ck_assert(!dump_has(dump, "gov.tax"));
    ck_assert(!dump_has(dump, "tax filing"));

    for (size_t i = 0; i < 3; i++) {
        struct person *p = &people[i];
        char lower[19], spelling[8][64];
        snprintf(lower, sizeof lower, "%s", p->id);
        if (lower[17] == 'X')
            lower[17] = 'x';
        snprintf(spelling[0], 64, "%04d-%02d-%02d", p->y, p->m, p->d);
        snprintf(spelling[1], 64, "%04d%02d%02d", p->y, p->m, p->d);
        snprintf(spelling[2], 64, "%04d/%02d/%02d", p->y, p->m, p->d);
        snprintf(spelling[3], 64, "%04d.%02d.%02d", p->y, p->m, p->d);
        snprintf(spelling[4], 64, "%04d年%d月%d日", p->y, p->m, p->d);
        snprintf(spelling[5], 64, "%04d年%02d月%02d日", p->y, p->m, p->d);
        snprintf(spelling[6], 64, "%02d/%02d/%04d", p->d, p->m, p->y);
        snprintf(spelling[7], 64, "%.17s", p->id); /* the number without its check character */
        ck_assert_msg(!dump_has(dump, p->id), "ID number %zu in the dump", i);
        ck_assert_msg(!dump_has(dump, lower), "ID number %zu (lower case) in the dump", i);
        ck_assert_msg(!dump_has(dump, p->name), "name %zu in the dump", i);
        for (size_t k = 0; k < 8; k++)
            ck_assert_msg(!dump_has(dump, spelling[k]), "birth date %zu (%s) in the dump", i,
                          spelling[k]);
    }
    free(dump);
    remove(path);
    for (size_t i = 0; i < 3; i++) {
        const char *secrets[] = {people[i].id, people[i].name};
        assert_not_logged(&t, secrets, 2);
    }
    vt_stop(&t);
}
END_TEST

/* A sealed identity as a phone makes it: the fields of an attested request, sealed to pk. */
static void seal_identity(const Veil__Vault__EnrolRequest *clear, uint32_t version,
                          const unsigned char pk[32], unsigned char out[VEIL_ENROL_SEALED_BYTES])
{
    veil_enrol_identity id;
    memset(&id, 0, sizeof id);
    id.key_version = version;
    snprintf(id.id_number, sizeof id.id_number, "%s", clear->id_number);
    snprintf(id.full_name, sizeof id.full_name, "%s", clear->full_name);
    snprintf(id.device_label, sizeof id.device_label, "%s", clear->device_label);
    memcpy(id.device_pk, clear->device_public_key.data, 32);
    id.face_match = clear->attestation->face_match;
    id.attested_at_ms = clear->attestation->attested_at_ms;
    memcpy(id.signature, clear->attestation->signature.data, 64);
    ck_assert_int_eq(veil_enrol_identity_seal(&id, pk, out), VEIL_OK);
}

/* Issue 12 item 3: the identity arrives sealed to the vault's ticket key and enrols as in the clear. */
START_TEST(test_sealed_identity)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d;
    vt_new_device(&d);
    char id[19];
    vt_id_number(id, "440305", 1991, 7, 7, 271);
    unsigned char sig[64], sealed[VEIL_ENROL_SEALED_BYTES];
    int64_t now = veil_now_ms();
    vt_attest(&t, id, "封一", 1, d.pk, now, sig);
    Veil__Vault__ProofingAttestation pa = vt_attestation(sig, 1, now);
    Veil__Vault__EnrolRequest clear = vt_enrol_request("sealed-1", id, "封一", &d, &pa);
    clear.device_label = "封一的手机";
    seal_identity(&clear, t.ticket_version, t.ticket_pk, sealed);
    Veil__Vault__EnrolRequest req = VEIL__VAULT__ENROL_REQUEST__INIT;
    req.request_id = "sealed-1";
    req.sealed_identity.data = sealed;
    req.sealed_identity.len = sizeof sealed;
    Veil__Vault__EnrolResponse *resp;
    veil_status st;
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &resp, &st), VEIL_OK);
    ck_assert(resp->new_identity);
    snprintf(d.device_id, sizeof d.device_id, "%s", resp->device_id);
    ck_assert_int_eq(veil_device_id_parse(d.device_id, d.id), 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* the same request again is idempotent; the person logs in; the name was kept */
    ck_assert_int_eq(vt_enrol_raw(&t, &req, &resp, &st), VEIL_OK);
    ck_assert_str_eq(resp->device_id, d.device_id);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    ck_assert_int_eq(vt_login(&t, &d, "gov.tax", &st), VEIL_OK);
    const char *names[] = {"full_name"};
    Veil__Vault__ReleaseAttributesResponse *rel;
    ck_assert_int_eq(vt_release(&t, d.subject, "gov.tax", names, 1, "tax", &rel, &st), VEIL_OK);
    ck_assert_str_eq(rel->attributes[0]->text, "封一");
    protobuf_c_message_free_unpacked(&rel->base, NULL);

    /* sealed and clear at once */
    Veil__Vault__EnrolRequest both = clear;
    both.request_id = "sealed-2";
    both.sealed_identity = req.sealed_identity;
    expect_enrol_fails(&t, &both, VEIL_ERR_INVALID, "sealed_identity replaces id_number");
    /* the wrong size; sealed to a key that is not the vault's; naming another version */
    Veil__Vault__EnrolRequest bad = req;
    bad.request_id = "sealed-3";
    bad.sealed_identity.len = sizeof sealed - 1;
    expect_enrol_fails(&t, &bad, VEIL_ERR_INVALID, "sealed_identity must be 560 bytes");
    unsigned char other_pk[32], other_sk[32], other[VEIL_ENROL_SEALED_BYTES];
    crypto_box_keypair(other_pk, other_sk);
    seal_identity(&clear, t.ticket_version, other_pk, other);
    bad.sealed_identity.data = other;
    bad.sealed_identity.len = sizeof other;
    expect_enrol_fails(&t, &bad, VEIL_ERR_INVALID, "sealed_identity does not open");
    seal_identity(&clear, t.ticket_version + 1, t.ticket_pk, other);
    expect_enrol_fails(&t, &bad, VEIL_ERR_INVALID, "sealed_identity names another ticket key");
    /* what opens is not the layout: non-zero padding */
    unsigned char plain[VEIL_ENROL_IDENTITY_BYTES];
    memset(plain, 0, sizeof plain);
    memcpy(plain, "veil-enrol-identity-v1", sizeof "veil-enrol-identity-v1");
    plain[sizeof plain - 1] = 1;
    ck_assert_int_eq(crypto_box_seal(other, plain, sizeof plain, t.ticket_pk), 0);
    expect_enrol_fails(&t, &bad, VEIL_ERR_INVALID, "sealed_identity is malformed");
    /* a bad field inside is refused as in the clear, naming the field */
    Veil__Vault__EnrolRequest wrong = clear;
    wrong.id_number = "110105194912310028";
    seal_identity(&wrong, t.ticket_version, t.ticket_pk, other);
    expect_enrol_fails(&t, &bad, VEIL_ERR_INVALID, "id_number check character is wrong");
    vt_stop(&t);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_enrol_and_web_certificate,
                                  test_id_numbers_over_the_wire,
                                  test_attestations,
                                  test_bad_fields,
                                  test_sealed_identity,
                                  test_idempotency,
                                  test_new_device_and_device_keys,
                                  test_only_the_gateway,
                                  test_database_holds_no_plaintext,
                                  NULL};
    const h_case cases[] = {{"enrol", 60, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("vault_enrol", cases));
}
