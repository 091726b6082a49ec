/*
 * fuzz_seeds - writes the seed corpora of the fuzz targets into
 * DIR/<target>/ (tests/fuzz/run --seeds DIR; the committed corpora under
 * tests/fuzz/corpus/ came from it): valid examples built by veil's own code
 * with the fuzzers' fixed keys (so tickets open and requests verify), in each
 * target's input layout, and a few malformed ones.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sodium.h>

#include "fuzz.h"
#include "veil/codec.h"
#include "veil/gateway.pb-c.h"
#include "wallet.h"

static const char *out_dir;
static int written;

/* Writes one seed file: DIR/target/name holding prefix (prefix_len bytes) then data. */
static void seed(const char *target, const char *name, const void *prefix, size_t prefix_len,
                 const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        abort();
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(prefix, 1, prefix_len, f) != prefix_len ||
        (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0)
        abort();
    written++;
}

static void seed_mode(const char *target, const char *name, uint8_t mode, const void *data,
                      size_t len)
{
    seed(target, name, &mode, 1, data, len);
}

/* A request of the dispatch target: the method's number, then the message. */
static void dispatch(const char *name, const char *service, const char *method,
                     const ProtobufCMessage *m)
{
    int i = fz_method_index(service, method);
    if (i < 0 || i > 255)
        abort();
    uint8_t pick = (uint8_t)i;
    size_t n;
    uint8_t *bytes = m ? fz_pack(m, &n) : NULL;
    seed("fuzz_dispatch", name, &pick, 1, bytes, m ? n : 0);
    free(bytes);
}

static char *ticket_now(const char *app, const unsigned char *challenge)
{
    unsigned char pk[32], sk[64], id[VEIL_DEVICE_ID_BYTES], tpk[32];
    char *t;
    fz_device(pk, sk, id);
    fz_ticket_pk(tpk);
    if (veil_ticket_make(app, challenge, VEIL_CHALLENGE_BYTES, veil_now_ms(), id, sk, tpk, 1, &t) !=
        VEIL_OK)
        abort();
    return t;
}

static void id_numbers(void)
{
    static const char *const good[] = {
        "44030419900307211X", "110105194912310029", "11010519491231002x", "650102199901019995",
        "710000200001011235", "810000199505055551", "830000198808081238", "540102200402290013"};
    static const char *const bad[] = {
        "44030419900307211",  "4403041990030721100", "44030419900230211X", "990304199003072113",
        "44030420990307211X", "44030417990307211X",  "440304199003072110", "44030419900307211Y",
        "4403041990０30721",  "710101200001011230"};
    char name[32];
    uint8_t today = 25; /* 2025-01-01 */
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char fixed[19];
        memcpy(fixed, good[i], 18);
        fixed[17] = vault_idnumber_check_char(fixed);
        if (good[i][17] == 'x')
            fixed[17] = fixed[17] == 'X' ? 'x' : fixed[17];
        snprintf(name, sizeof name, "valid-%zu", i);
        seed("fuzz_idnumber", name, &today, 1, fixed, 18);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(name, sizeof name, "invalid-%zu", i);
        seed("fuzz_idnumber", name, &today, 1, bad[i], strlen(bad[i]));
    }
}

static void dispatch_seeds(void)
{
    const fz_method *all;
    size_t n = fz_methods(&all);
    char name[128];
    /* every method with an empty request */
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "empty-%s-%s", all[i].service->name, all[i].method->name);
        dispatch(name, all[i].service->name, all[i].method->name, NULL);
    }
    unsigned char subject[32], pk[32], sk[64], id[VEIL_DEVICE_ID_BYTES], sig[64], aseed[32];
    memset(subject, 7, sizeof subject);
    fz_device(pk, sk, id);
    char device[33], *ticket = ticket_now(FZ_APP, fz_challenge);
    veil_device_id_text(id, device);

    /* the vault: an enrolment attested by the fuzzers' proofing authority */
    Veil__Vault__EnrolRequest en = VEIL__VAULT__ENROL_REQUEST__INIT;
    Veil__Vault__ProofingAttestation at = VEIL__VAULT__PROOFING_ATTESTATION__INIT;
    veil_buf msg = {0};
    at.face_match = 1;
    at.attested_at_ms = veil_now_ms();
    veil_attestation_bytes(&msg, "44030419900307211X", "王小明", 1, pk, at.attested_at_ms);
    fz_key("proofing", 1, aseed);
    unsigned char apk[32], ask[64];
    crypto_sign_seed_keypair(apk, ask, aseed);
    crypto_sign_detached(sig, NULL, msg.data, msg.len, ask);
    veil_buf_free(&msg);
    at.signature.data = sig;
    at.signature.len = 64;
    en.request_id = "seed-request-1";
    en.id_number = "44030419900307211X";
    en.full_name = "王小明";
    en.device_public_key.data = pk;
    en.device_public_key.len = 32;
    en.device_label = "phone";
    en.attestation = &at;
    dispatch("vault-enrol", "veil.vault.Vault", "Enrol", &en.base);
    Veil__Vault__VerifyTicketRequest vt = VEIL__VAULT__VERIFY_TICKET_REQUEST__INIT;
    vt.ticket = ticket;
    vt.app_id = FZ_APP;
    vt.challenge.data = (unsigned char *)fz_challenge;
    vt.challenge.len = 32;
    dispatch("vault-verify-ticket", "veil.vault.Vault", "VerifyTicket", &vt.base);
    Veil__Vault__ReleaseAttributesRequest ra = VEIL__VAULT__RELEASE_ATTRIBUTES_REQUEST__INIT;
    char *attrs[] = {"age_over_18", "province", "full_name"};
    ra.subject_ref.data = subject;
    ra.subject_ref.len = 32;
    ra.app_id = FZ_APP;
    ra.attributes = attrs;
    ra.n_attributes = 3;
    ra.purpose = "account opening";
    dispatch("vault-release", "veil.vault.Vault", "ReleaseAttributes", &ra.base);
    Veil__Vault__LookupWebNumberRequest lw = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
    char wn[VEIL_WEB_NUMBER_LEN + 1];
    veil_web_number_new(wn);
    lw.web_number = wn;
    dispatch("vault-lookup", "veil.vault.Vault", "LookupWebNumber", &lw.base);
    Veil__Vault__RevokeDeviceRequest rd = VEIL__VAULT__REVOKE_DEVICE_REQUEST__INIT;
    rd.subject_ref.data = subject;
    rd.subject_ref.len = 32;
    rd.device_id = device;
    dispatch("vault-revoke-device", "veil.vault.Vault", "RevokeDevice", &rd.base);

    /* consent */
    Veil__Consent__GrantRequest gr = VEIL__CONSENT__GRANT_REQUEST__INIT;
    char *scope[] = {"age_over_18", "province", "real_name_verified"};
    gr.subject_ref.data = subject;
    gr.subject_ref.len = 32;
    gr.app_id = FZ_APP;
    gr.attributes = attrs;
    gr.n_attributes = 2;
    gr.purpose = "age check for the chat service";
    gr.expires_at_ms = veil_now_ms() + 86400000;
    gr.app_scope = scope;
    gr.n_app_scope = 3;
    dispatch("consent-grant", "veil.consent.Consent", "Grant", &gr.base);
    Veil__Consent__CheckRequest ck = VEIL__CONSENT__CHECK_REQUEST__INIT;
    ck.subject_ref = gr.subject_ref;
    ck.app_id = FZ_APP;
    ck.attributes = attrs;
    ck.n_attributes = 2;
    dispatch("consent-check", "veil.consent.Consent", "Check", &ck.base);

    /* revocation */
    Veil__Revocation__SetIdentityStateRequest is =
        VEIL__REVOCATION__SET_IDENTITY_STATE_REQUEST__INIT;
    is.subject_ref = gr.subject_ref;
    is.state = VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_SUSPENDED;
    is.reason = "court order";
    dispatch("revocation-identity", "veil.revocation.Revocation", "SetIdentityState", &is.base);
    Veil__Revocation__StatusRequest sr = VEIL__REVOCATION__STATUS_REQUEST__INIT;
    sr.subject_ref = gr.subject_ref;
    sr.device_id = device;
    sr.app_id = FZ_APP;
    dispatch("revocation-authorize", "veil.revocation.Revocation", "Authorize", &sr.base);

    /* pseudonym */
    Veil__Pseudonym__DeriveRequest dr = VEIL__PSEUDONYM__DERIVE_REQUEST__INIT;
    dr.subject_ref = gr.subject_ref;
    dr.sector_id = "chat.lianxin";
    dr.link_epoch = 2;
    dr.key_version = 1;
    dispatch("pseudonym-derive", "veil.pseudonym.Pseudonym", "Derive", &dr.base);
    Veil__Pseudonym__DeriveItem item = VEIL__PSEUDONYM__DERIVE_ITEM__INIT,
                                *items[] = {&item, &item};
    Veil__Pseudonym__DeriveBatchRequest db = VEIL__PSEUDONYM__DERIVE_BATCH_REQUEST__INIT;
    item.subject_ref = gr.subject_ref;
    item.sector_id = "shop.jiale";
    db.items = items;
    db.n_items = 2;
    db.key_version = 1;
    dispatch("pseudonym-batch", "veil.pseudonym.Pseudonym", "DeriveBatch", &db.base);

    /* the gateway */
    Veil__Gateway__CompleteLoginRequest cl = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    cl.ticket = ticket;
    cl.attributes = attrs;
    cl.n_attributes = 3;
    dispatch("gateway-complete-login", "veil.gateway.Login", "CompleteLogin", &cl.base);
    Veil__Gateway__App app = VEIL__GATEWAY__APP__INIT;
    app.app_id = "news.xinwen";
    app.name = "新闻";
    app.kind = "commercial";
    app.attributes = attrs;
    app.n_attributes = 2;
    dispatch("gateway-register-app", "veil.gateway.Admin", "RegisterApp", &app.base);

    /* malformed: a length running past the end, a wrong wire type */
    static const uint8_t truncated[] = {0x0a, 0x7f, 'a', 'b'}, wiretype[] = {0x08, 0x01};
    uint8_t pick = (uint8_t)fz_method_index("veil.vault.Vault", "VerifyTicket");
    seed("fuzz_dispatch", "malformed-truncated", &pick, 1, truncated, sizeof truncated);
    seed("fuzz_dispatch", "malformed-wiretype", &pick, 1, wiretype, sizeof wiretype);
    free(ticket);
}

static void ticket_seeds(void)
{
    char *ticket = ticket_now(FZ_APP, fz_challenge);
    seed_mode("fuzz_ticket", "raw-valid", 0, ticket, strlen(ticket));
    seed_mode("fuzz_ticket", "raw-garbage", 0, "not-a-ticket", 12);
    seed_mode("fuzz_ticket", "raw-empty", 0, "", 0);
    /* mode 1: flags, app, challenge (unless flag 1), offset, version (if flag 2) */
    struct {
        const char *name;
        uint8_t flags;
        int64_t offset;
    } made[] = {{"made-now", 1, 0},         {"made-own", 5, 0},     {"made-late", 1, 130000},
                {"made-early", 1, -125000}, {"made-version", 3, 0}, {"made-fresh", 4, 1000}};
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
        uint8_t buf[128];
        size_t n = 0;
        buf[n++] = 1;
        buf[n++] = made[i].flags;
        buf[n++] = (uint8_t)strlen(FZ_APP);
        memcpy(buf + n, FZ_APP, strlen(FZ_APP));
        n += strlen(FZ_APP);
        if (!(made[i].flags & 1)) {
            memset(buf + n, 0x42, 32);
            n += 32;
        }
        for (int k = 7; k >= 0; k--)
            buf[n++] = (uint8_t)((uint64_t)made[i].offset >> (8 * k));
        if (made[i].flags & 2) {
            static const uint8_t v2[] = {0, 0, 0, 2};
            memcpy(buf + n, v2, 4);
            n += 4;
        }
        seed("fuzz_ticket", made[i].name, buf, n, NULL, 0);
    }
    static const uint8_t mutated[] = {2, 0, 9, 0x55};
    seed("fuzz_ticket", "mutated", mutated, sizeof mutated, NULL, 0);
    free(ticket);
}

static void citizen_seeds(void)
{
    unsigned char pk[32], sk[64], id[VEIL_DEVICE_ID_BYTES], sig[64], nonce[16];
    char device[33];
    fz_device(pk, sk, id);
    veil_device_id_text(id, device);
    memset(nonce, 0x33, sizeof nonce);
    Veil__Gateway__GrantConsentPayload gp = VEIL__GATEWAY__GRANT_CONSENT_PAYLOAD__INIT;
    char *attrs[] = {"age_over_18"};
    gp.app_id = FZ_APP;
    gp.attributes = attrs;
    gp.n_attributes = 1;
    gp.purpose = "age check";
    gp.expires_at_ms = veil_now_ms() + 86400000;
    size_t plen;
    uint8_t *payload = fz_pack(&gp.base, &plen);
    const char *method = "/veil.gateway.Wallet/GrantConsent";
    int64_t now = veil_now_ms();
    veil_buf msg = {0};
    veil_citizen_signed_bytes(&msg, method, payload, plen, now, nonce, sizeof nonce, device);
    crypto_sign_detached(sig, NULL, msg.data, msg.len, sk);
    veil_buf_free(&msg);
    Veil__CitizenAuth auth = VEIL__CITIZEN_AUTH__INIT;
    Veil__Vault__VerifyCitizenRequestRequest req =
        VEIL__VAULT__VERIFY_CITIZEN_REQUEST_REQUEST__INIT;
    auth.device_id = device;
    auth.time_ms = now;
    auth.nonce.data = nonce;
    auth.nonce.len = sizeof nonce;
    auth.signature.data = sig;
    auth.signature.len = sizeof sig;
    req.method = (char *)method;
    req.payload.data = payload;
    req.payload.len = plen;
    req.auth = &auth;
    size_t n;
    uint8_t *bytes = fz_pack(&req.base, &n);
    seed_mode("fuzz_citizen", "raw-grant", 0, bytes, n);
    free(bytes);
    /* mode 1 and 2: method pick, nonce length pick, offset, nonce (32), at, flip, payload */
    uint8_t buf[256];
    for (int mode = 1; mode <= 2; mode++) {
        for (uint8_t pick = 0; pick < 9; pick += 4) {
            size_t k = 0;
            buf[k++] = (uint8_t)mode;
            buf[k++] = pick;
            buf[k++] = 1; /* a 16-byte nonce */
            memset(buf + k, 0, 8);
            k += 8;
            memset(buf + k, 0x33, 32);
            k += 32;
            buf[k++] = 0;
            buf[k++] = (uint8_t)(pick * 3);
            buf[k++] = 0x20;
            memcpy(buf + k, payload, plen);
            k += plen;
            char name[32];
            snprintf(name, sizeof name, "%s-%u", mode == 1 ? "signed" : "tampered", pick);
            seed("fuzz_citizen", name, buf, k, NULL, 0);
        }
    }
    free(payload);
}

static void jws_seeds(void)
{
    char *cert, *receipt;
    fz_issue(&cert, &receipt);
    seed_mode("fuzz_jws", "webcert", 0, cert, strlen(cert));
    seed_mode("fuzz_jws", "receipt", 0, receipt, strlen(receipt));
    seed_mode("fuzz_jws", "three-dots", 0, "a.b.c.d", 7);
    /* mode 1: header length, header, payload - signed by the target */
    static const char *const pairs[][2] = {
        {"{\"alg\":\"EdDSA\",\"kid\":\"webcert-1\",\"typ\":\"veil-webcert+jwt\"}",
         "{\"iss\":\"veil-vault\",\"wn\":\"0000-0000-0000-0000\",\"cnf\":{\"jwk\":{\"kty\":\"OKP\","
         "\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}},\"iat\":1,"
         "\"exp\":2}"},
        {"{\"alg\":\"EdDSA\",\"kid\":\"webcert-1\",\"typ\":\"veil-consent-receipt+jwt\"}",
         "{\"iss\":\"veil-consent\",\"app\":\"chat.lianxin\",\"attributes\":[\"province\"],"
         "\"purpose\":\"p\",\"receipt_id\":\"r\",\"granted_at\":1,\"expires_at\":2,\"iat\":1}"},
        {"{\"alg\":\"none\",\"kid\":\"webcert-1\"}", "{}"},
        {"{\"alg\":\"EdDSA\",\"kid\":\"webcert-1\",\"crit\":[\"x\"]}", "{}"},
        {"{\"alg\":\"EdDSA\",\"alg\":\"EdDSA\",\"kid\":\"webcert-1\"}", "{\"a\":1,\"a\":2}"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        uint8_t buf[512];
        size_t hl = strlen(pairs[i][0]), pl = strlen(pairs[i][1]);
        buf[0] = 1;
        buf[1] = (uint8_t)(hl >> 8);
        buf[2] = (uint8_t)hl;
        memcpy(buf + 3, pairs[i][0], hl);
        memcpy(buf + 3 + hl, pairs[i][1], pl);
        char name[32];
        snprintf(name, sizeof name, "signed-%zu", i);
        seed("fuzz_jws", name, buf, 3 + hl + pl, NULL, 0);
    }
    const char *jwks = fz_vault()->keys->jwks;
    seed_mode("fuzz_jws", "jwks", 2, jwks, strlen(jwks));
    seed_mode("fuzz_jws", "jwks-empty", 2, "{\"keys\":[]}", 11);
    static const uint8_t issued[] = {3, 0, 40, 0}, tampered[] = {3, 0, 40, 0x10};
    seed("fuzz_jws", "issued", issued, sizeof issued, NULL, 0);
    seed("fuzz_jws", "issued-tampered", tampered, sizeof tampered, NULL, 0);
    free(cert);
    free(receipt);
}

static void config_seeds(void)
{
    static const char good[] = "127.0.0.1:7101\0"
                               "0.0.0.0:8080\0"
                               "/etc/hostname\0"
                               "/tmp\0"
                               "true\0"
                               "8\0"
                               "1048576\0"
                               "0\0"
                               "veil\0"
                               "info";
    static const char bad[] = "localhost\0"
                              ":80\0"
                              "/nonexistent\0"
                              "/etc/hostname\0"
                              "maybe\0"
                              "lots\0"
                              "1e9\0"
                              "-1\0"
                              "\0"
                              "loud";
    static const char edge[] = "[::1]:65535\0"
                               "h:0\0"
                               "/dev/null\0"
                               "/\0"
                               "OFF\0"
                               "256\0"
                               "67108864\0"
                               "600000\0"
                               "spiffe\0"
                               "debug";
    seed("fuzz_config", "good", good, sizeof good - 1, NULL, 0);
    seed("fuzz_config", "bad", bad, sizeof bad - 1, NULL, 0);
    seed("fuzz_config", "edge", edge, sizeof edge - 1, NULL, 0);
}

static void keyfile_seeds(void)
{
    unsigned char key[32];
    char b64[64], text[256];
    fz_key("master", 1, key);
    sodium_bin2base64(b64, sizeof b64, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
    seed_mode("fuzz_keyfile", "key", 0, b64, strlen(b64));
    int n = snprintf(text, sizeof text, "  %.*s\n%s\n", 20, b64, b64 + 20);
    seed_mode("fuzz_keyfile", "key-wrapped", 0, text, (size_t)n);
    seed_mode("fuzz_keyfile", "key-short", 0, "c2hvcnQ=", 8);
    n = snprintf(text, sizeof text, "# proofing authority, 2025\n\n  %s  \r\n# next\n%s\n", b64,
                 b64);
    seed_mode("fuzz_keyfile", "proofing", 1, text, (size_t)n);
    seed_mode("fuzz_keyfile", "proofing-bad", 1, "# nothing\nnot base64\n", 21);
    vw_wallet *w;
    char err[256], path[512];
    if (vw_wallet_new(&w) != VEIL_OK)
        abort();
    snprintf(path, sizeof path, "%s/w.json", fz_tmpdir());
    if (vw_wallet_save(w, path, 0, err, sizeof err) != VEIL_OK)
        abort();
    vw_wallet_free(w);
    FILE *f = fopen(path, "rb");
    char json[4096];
    size_t len = f ? fread(json, 1, sizeof json, f) : 0;
    if (f)
        fclose(f);
    seed_mode("fuzz_keyfile", "wallet", 2, json, len);
    seed_mode("fuzz_keyfile", "wallet-bad", 2, "{\"version\":1,\"device_seed\":7}", 29);
    static const char pem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    seed_mode("fuzz_keyfile", "pem", 3, pem, sizeof pem - 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    out_dir = argv[1];
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz_seeds: cannot create %s\n", out_dir);
        return 1;
    }
    id_numbers();
    dispatch_seeds();
    ticket_seeds();
    citizen_seeds();
    jws_seeds();
    config_seeds();
    keyfile_seeds();
    printf("fuzz_seeds: %d seeds written to %s\n", written, out_dir);
    return 0;
}
