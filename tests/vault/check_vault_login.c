/*
 * check_vault_login.c - the login path over real gRPC and PostgreSQL:
 * tickets (binding to app, challenge and time; forged, tampered, unknown,
 * mis-sealed and wrong-version tickets all failing alike), revoked devices,
 * citizen requests (signature, skew, single-use nonces), device listing and
 * revocation, web-number lookup, ticket key versions, concurrent logins of
 * one citizen (the access-log chain stays whole), and a latency figure.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <sodium.h>

#include "veil/codec.h"
#include "veil/keys.h"
#include "vault.h"
#include "vtest.h"

#define GENERIC "login ticket could not be verified"

static void enrolled(vt *t, vt_device *d, const char *rid, const char *region, int seq)
{
    char id[19];
    veil_status st;
    vt_id_number(id, region, 1988, 4, 4, seq);
    vt_new_device(d);
    ck_assert_int_eq(vt_enrol(t, rid, id, "钱一", d, NULL, &st), VEIL_OK);
}

/* Enrols a new person; kid = the key id in the header of the web certificate issued. */
static void cert_kid(vt *t, const char *rid, int seq, char kid[64])
{
    char id[19], *cert;
    vt_device d;
    veil_status st;
    vt_id_number(id, "230102", 1990, 5, 5, seq);
    vt_new_device(&d);
    ck_assert_int_eq(vt_enrol_cert(t, rid, id, "钱二", &d, NULL, &cert, &st), VEIL_OK);
    json_t *h = json_loads(h_jws_header(cert), 0, NULL);
    ck_assert_ptr_nonnull(h);
    snprintf(kid, 64, "%s", json_string_value(json_object_get(h, "kid")));
    json_decref(h);
    free(cert);
}

static void expect_ticket(vt *t, const char *ticket, const char *app, const unsigned char *ch,
                          size_t chlen, veil_err want, const char *msg)
{
    veil_status st;
    ck_assert_int_eq(vt_verify(t, ticket, app, ch, chlen, NULL, NULL, &st), want);
    ck_assert_str_eq(st.message, msg);
}

/* Decodes a ticket, lets edit() change the wire bytes, re-encodes it. */
static char *edited(const char *ticket, void (*edit)(unsigned char *w, size_t n))
{
    unsigned char wire[VEIL_TICKET_MAX];
    size_t n;
    ck_assert_int_eq(veil_b64url_decode(wire, sizeof wire, ticket, strlen(ticket), &n), 0);
    edit(wire, n);
    size_t cap = veil_b64url_len(n);
    char *s = malloc(cap);
    veil_b64url_encode(s, cap, wire, n);
    return s;
}

/* Wire layout (format 2): u8 2 | u16 len app | app | u16 32 | challenge | u16 len | sealed */
static size_t challenge_at(const unsigned char *w)
{
    return 1 + 2 + ((size_t)w[1] << 8 | w[2]) + 2;
}
static void flip_challenge(unsigned char *w, size_t n)
{
    (void)n;
    w[challenge_at(w)] ^= 1;
}
static void flip_sealed(unsigned char *w, size_t n)
{
    w[n - 20] ^= 1;
}
static void flip_ephemeral_key(unsigned char *w, size_t n)
{
    (void)n;
    w[challenge_at(w) + 32 + 2] ^= 0x10; /* the sealed box's ephemeral public key */
}
static void format_1(unsigned char *w, size_t n)
{
    (void)n;
    w[0] = 1;
}

START_TEST(test_ticket_binding)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d;
    enrolled(&t, &d, "r1", "440305", 1);
    unsigned char ch[32], other[32];
    randombytes_buf(ch, 32);
    randombytes_buf(other, 32);
    int64_t now = veil_now_ms();
    char *ticket = vt_ticket(&t, &d, "chat.wechat", ch, now);
    unsigned char subject[32];
    char device_id[33];
    veil_status st;
    ck_assert_int_eq(vt_verify(&t, ticket, "chat.wechat", ch, 32, subject, device_id, &st),
                     VEIL_OK);
    /* the gateway is not told which device it was: it keeps no device <-> subject mapping */
    ck_assert_str_eq(device_id, "");
    /* the ticket names neither the device nor the person: an app sees only its own fields */
    ck_assert_ptr_null(strstr(ticket, d.device_id));

    expect_ticket(&t, ticket, "shop.taobao", ch, 32, VEIL_ERR_UNAUTHENTICATED,
                  "ticket was not made for this app");
    expect_ticket(&t, ticket, "chat.wechat", other, 32, VEIL_ERR_UNAUTHENTICATED,
                  "ticket does not answer this challenge");
    expect_ticket(&t, ticket, "chat.wechat", ch, 31, VEIL_ERR_INVALID,
                  "challenge must be 32 bytes");
    expect_ticket(&t, ticket, "Chat WeChat", ch, 32, VEIL_ERR_INVALID,
                  "app_id is not a valid app id");
    free(ticket);

    /* time: within VAULT_TICKET_SKEW_S (120 s) either way, not beyond */
    const int64_t offsets[] = {-121000, 121000, -110000, 110000};
    for (int i = 0; i < 4; i++) {
        ticket = vt_ticket(&t, &d, "chat.wechat", ch, veil_now_ms() + offsets[i]);
        if (i < 2)
            expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_UNAUTHENTICATED,
                          "ticket time is outside the allowed clock skew");
        else
            ck_assert_int_eq(vt_verify(&t, ticket, "chat.wechat", ch, 32, NULL, NULL, &st),
                             VEIL_OK);
        free(ticket);
    }

    /* malformed */
    const char *junk[] = {"", "!!!!", "AAAA", "AgALY2hhdC53ZWNoYXQ"};
    for (int i = 0; i < 4; i++)
        expect_ticket(&t, junk[i], "chat.wechat", ch, 32, VEIL_ERR_INVALID, "ticket is malformed");
    /* format 1 (time and key version in the clear) is retired */
    expect_ticket(&t, "AQAAAAEAC2NoYXQud2VjaGF0", "chat.wechat", ch, 32, VEIL_ERR_INVALID,
                  VEIL_TICKET_RETIRED);
    ticket = vt_ticket(&t, &d, "chat.wechat", ch, veil_now_ms());
    char *old = edited(ticket, format_1);
    expect_ticket(&t, old, "chat.wechat", ch, 32, VEIL_ERR_INVALID, VEIL_TICKET_RETIRED);
    free(old);
    free(ticket);
    ticket = vt_ticket(&t, &d, "chat.wechat", ch, veil_now_ms());
    ticket[strlen(ticket) - 6] = '\0';
    expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_INVALID, "ticket is malformed");
    free(ticket);
    vt_stop(&t);
}
END_TEST

START_TEST(test_ticket_forgery)
{
    vt t;
    vt_start(&t, NULL);
    vt_device victim, thief;
    enrolled(&t, &victim, "r1", "440305", 1);
    enrolled(&t, &thief, "r2", "440305", 3);
    unsigned char ch[32];
    randombytes_buf(ch, 32);
    char *ticket;

    /* the thief signs with their own key but names the victim's device */
    vt_device forged = victim;
    memcpy(forged.sk, thief.sk, 64);
    ticket = vt_ticket(&t, &forged, "chat.wechat", ch, veil_now_ms());
    expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_UNAUTHENTICATED, GENERIC);
    free(ticket);
    /* a device id that does not exist */
    vt_device ghost = victim;
    randombytes_buf(ghost.id, sizeof ghost.id);
    ticket = vt_ticket(&t, &ghost, "chat.wechat", ch, veil_now_ms());
    expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_UNAUTHENTICATED, GENERIC);
    free(ticket);
    /* sealed to a key that is not the vault's */
    unsigned char wrong_pk[32], wrong_sk[32];
    crypto_box_keypair(wrong_pk, wrong_sk);
    ck_assert_int_eq(veil_ticket_make("chat.wechat", ch, 32, veil_now_ms(), victim.id, victim.sk,
                                      wrong_pk, t.ticket_version, &ticket),
                     VEIL_OK);
    expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_UNAUTHENTICATED, GENERIC);
    free(ticket);

    /* a genuine ticket with its wire fields changed: the signature covers them */
    char *good = vt_ticket(&t, &victim, "chat.wechat", ch, veil_now_ms());
    unsigned char flipped[32];
    memcpy(flipped, ch, 32);
    flipped[0] ^= 1;
    ticket = edited(good, flip_challenge);
    expect_ticket(&t, ticket, "chat.wechat", flipped, 32, VEIL_ERR_UNAUTHENTICATED, GENERIC);
    free(ticket);
    ticket = edited(good, flip_sealed);
    expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_UNAUTHENTICATED, GENERIC);
    free(ticket);
    ticket = edited(good, flip_ephemeral_key);
    expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_UNAUTHENTICATED, GENERIC);
    free(ticket);
    /* the untouched ticket still works, and nothing failed was logged as an access */
    veil_status st;
    ck_assert_int_eq(vt_verify(&t, good, "chat.wechat", ch, 32, victim.subject, NULL, &st),
                     VEIL_OK);
    free(good);
    Veil__Vault__ListAccessLogResponse *log;
    ck_assert_int_eq(vt_subject_call(&t, "ListAccessLog", victim.subject, 32, &log, &st), VEIL_OK);
    /* the enrolment's device_added, then the one login */
    ck_assert_uint_eq(log->n_entries, 2);
    ck_assert_str_eq(log->entries[0]->action, "device_added");
    ck_assert_str_eq(log->entries[1]->action, "ticket_verified");
    ck_assert(log->chain_valid);
    protobuf_c_message_free_unpacked(&log->base, NULL);
    vt_stop(&t);
}
END_TEST

static veil_err revoke_device(vt *t, const unsigned char *subject, const char *device_id,
                              veil_status *st)
{
    Veil__Vault__RevokeDeviceRequest req = VEIL__VAULT__REVOKE_DEVICE_REQUEST__INIT;
    req.subject_ref.data = (unsigned char *)subject;
    req.subject_ref.len = 32;
    req.device_id = (char *)device_id;
    Veil__Empty *resp;
    veil_err err = veil_channel_call(t->ch, "RevokeDevice", &req.base, NULL, 5000, &resp, st);
    if (!err)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return err;
}

static veil_err citizen(vt *t, const vt_device *d, const char *method, const char *payload,
                        const unsigned char nonce[16], int64_t time_ms, const unsigned char *sk,
                        unsigned char *subject, veil_status *st)
{
    veil_buf b = {0};
    unsigned char sig[64];
    veil_citizen_signed_bytes(&b, method, payload, strlen(payload), time_ms, nonce, 16,
                              d->device_id);
    crypto_sign_detached(sig, NULL, b.data, b.len, sk);
    veil_buf_free(&b);
    Veil__CitizenAuth auth = VEIL__CITIZEN_AUTH__INIT;
    auth.device_id = (char *)d->device_id;
    auth.time_ms = time_ms;
    auth.nonce.data = (unsigned char *)nonce;
    auth.nonce.len = 16;
    auth.signature.data = sig;
    auth.signature.len = 64;
    Veil__Vault__VerifyCitizenRequestRequest req =
        VEIL__VAULT__VERIFY_CITIZEN_REQUEST_REQUEST__INIT;
    req.method = (char *)method;
    req.payload.data = (unsigned char *)payload;
    req.payload.len = strlen(payload);
    req.auth = &auth;
    Veil__Vault__VerifyCitizenRequestResponse *resp;
    veil_err err =
        veil_channel_call(t->ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, st);
    if (!err) {
        ck_assert_uint_eq(resp->subject_ref.len, 32);
        ck_assert_str_eq(resp->device_id, d->device_id);
        if (subject)
            memcpy(subject, resp->subject_ref.data, 32);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return err;
}

START_TEST(test_revoked_devices)
{
    vt t;
    vt_start(&t, NULL);
    char id[19];
    vt_id_number(id, "370102", 1999, 9, 9, 33);
    vt_device a, b, stranger;
    vt_new_device(&a);
    vt_new_device(&b);
    veil_status st;
    ck_assert_int_eq(vt_enrol(&t, "ra", id, "孔二", &a, NULL, &st), VEIL_OK);
    ck_assert_int_eq(vt_enrol(&t, "rb", id, "孔二", &b, NULL, &st), VEIL_OK);
    enrolled(&t, &stranger, "rs", "610113", 7);
    ck_assert_int_eq(vt_login(&t, &a, "shop.taobao", &st), VEIL_OK);
    ck_assert_int_eq(vt_login(&t, &stranger, "shop.taobao", &st), VEIL_OK);

    /* only the owner's subject can revoke; bad and unknown ids say so */
    ck_assert_int_eq(revoke_device(&t, stranger.subject, a.device_id, &st), VEIL_ERR_NOT_FOUND);
    ck_assert_str_eq(st.message, "device not found");
    ck_assert_int_eq(revoke_device(&t, a.subject, "00000000000000000000000000000000", &st),
                     VEIL_ERR_NOT_FOUND);
    ck_assert_int_eq(revoke_device(&t, a.subject, "not-a-device", &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "device_id must be 32 lowercase hex characters");
    ck_assert_int_eq(revoke_device(&t, a.subject, "ABCDEF00000000000000000000000000", &st),
                     VEIL_ERR_INVALID);
    ck_assert_int_eq(revoke_device(&t, a.subject, a.device_id, &st), VEIL_OK);
    ck_assert_int_eq(revoke_device(&t, a.subject, a.device_id, &st), VEIL_OK); /* idempotent */

    /* the revoked device's tickets and requests fail; the other device still works */
    ck_assert_int_eq(vt_login(&t, &a, "shop.taobao", &st), VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "device revoked");
    unsigned char nonce[16];
    randombytes_buf(nonce, 16);
    ck_assert_int_eq(citizen(&t, &a, "/veil.gateway.Wallet/ListDevices", "", nonce, veil_now_ms(),
                             a.sk, NULL, &st),
                     VEIL_ERR_DENIED);
    ck_assert_int_eq(vt_login(&t, &b, "shop.taobao", &st), VEIL_OK);
    /* a forged ticket for the revoked device says nothing about revocation */
    vt_device forged = a;
    memcpy(forged.sk, stranger.sk, 64);
    ck_assert_int_eq(vt_login(&t, &forged, "shop.taobao", &st), VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, GENERIC);

    Veil__Vault__ListDevicesResponse *list;
    ck_assert_int_eq(vt_subject_call(&t, "ListDevices", b.subject, 32, &list, &st), VEIL_OK);
    ck_assert_uint_eq(list->n_devices, 2);
    int revoked = 0;
    for (size_t i = 0; i < 2; i++) {
        Veil__Vault__Device *dev = list->devices[i];
        if (strcmp(dev->device_id, a.device_id) == 0) {
            ck_assert_str_eq(dev->status, "revoked");
            ck_assert(dev->revoked_at_ms >= dev->created_at_ms && dev->revoked_at_ms > 0);
            revoked++;
        } else {
            ck_assert_str_eq(dev->device_id, b.device_id);
            ck_assert_str_eq(dev->status, "active");
            ck_assert_int_eq(dev->revoked_at_ms, 0);
        }
    }
    ck_assert_int_eq(revoked, 1);
    protobuf_c_message_free_unpacked(&list->base, NULL);
    unsigned char unknown[32] = {7};
    ck_assert_int_eq(vt_subject_call(&t, "ListDevices", unknown, 32, &list, &st),
                     VEIL_ERR_NOT_FOUND);
    ck_assert_int_eq(vt_subject_call(&t, "ListDevices", unknown, 31, &list, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "subject_ref must be 32 bytes");
    vt_stop(&t);
}
END_TEST

START_TEST(test_citizen_requests)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d, other;
    enrolled(&t, &d, "r1", "500103", 5);
    enrolled(&t, &other, "r2", "500103", 9);
    ck_assert_int_eq(vt_login(&t, &d, "gov.tax", &(veil_status){0}), VEIL_OK);
    /* housekeeping's work: an expired nonce and a day-old enrol request */
    PQclear(
        vt_sql_bytes(&t,
                     "INSERT INTO used_nonces VALUES ($1, '\\x00112233445566778899aabbccddeeff', "
                     "now() - interval '1 minute')",
                     d.id, 16));
    PQclear(vt_sql_bytes(&t,
                         "UPDATE enrol_requests SET created_at = now() - interval '25 hours' "
                         "WHERE device_id = $1",
                         d.id, 16));
    const char *m = "/veil.gateway.Wallet/GrantConsent";
    unsigned char nonce[16], subject[32];
    veil_status st;
    randombytes_buf(nonce, 16);
    int64_t now = veil_now_ms();
    ck_assert_int_eq(citizen(&t, &d, m, "payload", nonce, now, d.sk, subject, &st), VEIL_OK);
    ck_assert_mem_eq(subject, d.subject, 32);
    /* the first citizen request after start runs it, right after its reply */
    for (int i = 0; i < 100 && vt_sql_int(&t, "SELECT count(*) FROM used_nonces WHERE "
                                              "expires_at < now()") > 0;
         i++)
        usleep(20000);
    /* both are gone, nothing else is */
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM used_nonces WHERE expires_at < now()"),
                     0);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM used_nonces"), 1);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM enrol_requests"), 1);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 2);
    /* the same nonce again is a replay, whatever else changed */
    ck_assert_int_eq(citizen(&t, &d, m, "payload", nonce, now, d.sk, NULL, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, "request replayed");
    ck_assert_int_eq(citizen(&t, &d, m, "other", nonce, veil_now_ms(), d.sk, NULL, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, "request replayed");
    /* the same nonce from another device is that device's own */
    ck_assert_int_eq(citizen(&t, &other, m, "payload", nonce, now, other.sk, NULL, &st), VEIL_OK);
    randombytes_buf(nonce, 16);
    ck_assert_int_eq(citizen(&t, &d, m, "payload", nonce, now, d.sk, NULL, &st), VEIL_OK);

    /* someone else's signature, or an unknown device, fail alike */
    randombytes_buf(nonce, 16);
    ck_assert_int_eq(citizen(&t, &d, m, "payload", nonce, now, other.sk, NULL, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, "citizen request could not be verified");
    vt_device ghost = d;
    snprintf(ghost.device_id, sizeof ghost.device_id, "0123456789abcdef0123456789abcdef");
    ck_assert_int_eq(citizen(&t, &ghost, m, "payload", nonce, now, d.sk, NULL, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, "citizen request could not be verified");
    /* clock skew */
    randombytes_buf(nonce, 16);
    ck_assert_int_eq(citizen(&t, &d, m, "payload", nonce, now - 130000, d.sk, NULL, &st),
                     VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, "request time is outside the allowed clock skew");

    /* the signature covers method and payload: built for one, presented as another */
    veil_buf b = {0};
    unsigned char sig[64];
    randombytes_buf(nonce, 16);
    veil_citizen_signed_bytes(&b, m, "payload", 7, now, nonce, 16, d.device_id);
    crypto_sign_detached(sig, NULL, b.data, b.len, d.sk);
    veil_buf_free(&b);
    Veil__CitizenAuth auth = VEIL__CITIZEN_AUTH__INIT;
    auth.device_id = d.device_id;
    auth.time_ms = now;
    auth.nonce.data = nonce;
    auth.nonce.len = 16;
    auth.signature.data = sig;
    auth.signature.len = 64;
    Veil__Vault__VerifyCitizenRequestRequest req =
        VEIL__VAULT__VERIFY_CITIZEN_REQUEST_REQUEST__INIT;
    req.method = "/veil.gateway.Wallet/Erase";
    req.payload.data = (unsigned char *)"payload";
    req.payload.len = 7;
    req.auth = &auth;
    void *resp;
    ck_assert_int_eq(
        veil_channel_call(t.ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, &st),
        VEIL_ERR_UNAUTHENTICATED);
    req.method = (char *)m;
    req.payload.data = (unsigned char *)"PAYLOAD";
    ck_assert_int_eq(
        veil_channel_call(t.ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, &st),
        VEIL_ERR_UNAUTHENTICATED);
    /* malformed fields */
    req.payload.data = (unsigned char *)"payload";
    auth.nonce.len = 15;
    ck_assert_int_eq(
        veil_channel_call(t.ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, &st),
        VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "auth.nonce must be 16 bytes");
    auth.nonce.len = 16;
    auth.device_id = "xyz";
    ck_assert_int_eq(
        veil_channel_call(t.ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, &st),
        VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "auth.device_id must be 32 lowercase hex characters");
    auth.device_id = d.device_id;
    auth.signature.len = 10;
    ck_assert_int_eq(
        veil_channel_call(t.ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, &st),
        VEIL_ERR_INVALID);
    req.auth = NULL;
    ck_assert_int_eq(
        veil_channel_call(t.ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, &st),
        VEIL_ERR_INVALID);
    req.method = "";
    ck_assert_int_eq(
        veil_channel_call(t.ch, "VerifyCitizenRequest", &req.base, NULL, 5000, &resp, &st),
        VEIL_ERR_INVALID);
    /* nonces are kept for twice the skew */
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM used_nonces WHERE expires_at BETWEEN "
                                    "now() + interval '230 s' AND now() + interval '241 s'"),
                     3);
    vt_stop(&t);
}
END_TEST

/*
 * issue 18 item 7: a nonce's expiry is on the clock the skew check used (the
 * service's), never the database's.  The store is driven directly with a
 * service clock ten days ahead of the database's: the nonce is a replay
 * until that clock passes its lifetime, and free again after - whatever
 * now() in PostgreSQL says.
 */
START_TEST(test_nonce_expiry_on_the_service_clock)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d;
    enrolled(&t, &d, "r1", "500103", 7);
    vault_store *store;
    vault_conn *c;
    ck_assert_int_eq(vault_store_open(t.db, &store), VEIL_OK);
    ck_assert_int_eq(vault_store_conn(store, &c), VEIL_OK);
    unsigned char nonce[16];
    randombytes_buf(nonce, sizeof nonce);
    const int64_t life = 240000, ahead = veil_now_ms() + 10LL * 86400000;
    ck_assert_int_eq(vault_store_use_nonce(c, d.id, nonce, 16, ahead, life), VEIL_OK);
    ck_assert_int_eq(vault_store_use_nonce(c, d.id, nonce, 16, ahead + 1000, life),
                     VEIL_ERR_EXISTS);
    ck_assert_int_eq(vault_store_use_nonce(c, d.id, nonce, 16, ahead + life - 1, life),
                     VEIL_ERR_EXISTS);
    /* expired on the service's clock (the database's is still ten days behind) */
    ck_assert_int_eq(vault_store_use_nonce(c, d.id, nonce, 16, ahead + life + 1, life), VEIL_OK);
    /* the stored expiry is the service's time plus the lifetime, to the millisecond */
    PGresult *r = vt_sql_bytes(&t,
                               "SELECT (extract(epoch FROM expires_at) * 1000)::int8 FROM "
                               "used_nonces WHERE device_id = $1",
                               d.id, 16);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_int_eq(strtoll(PQgetvalue(r, 0, 0), NULL, 10), ahead + life + 1 + life);
    PQclear(r);
    /* housekeeping on the service's clock: not yet at the database's now, gone after */
    ck_assert_int_eq(vault_store_purge(c, veil_now_ms()), VEIL_OK);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM used_nonces"), 1);
    ck_assert_int_eq(vault_store_purge(c, ahead + 3 * life), VEIL_OK);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM used_nonces"), 0);
    vault_store_close(store);
    vt_stop(&t);
}
END_TEST

START_TEST(test_web_number_lookup)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d;
    enrolled(&t, &d, "r1", "650102", 21);
    veil_status st;
    ck_assert_int_eq(vt_login(&t, &d, "gov.socialsecurity", &st), VEIL_OK);
    Veil__Vault__LookupWebNumberRequest req = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
    req.admin = "admin/ops";
    Veil__Vault__LookupWebNumberResponse *resp;
    req.web_number = d.web_number;
    ck_assert_int_eq(veil_channel_call(t.ch, "LookupWebNumber", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    ck_assert_uint_eq(resp->subject_ref.len, 32);
    ck_assert_mem_eq(resp->subject_ref.data, d.subject, 32);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* typed in lower case */
    char lower[24];
    snprintf(lower, sizeof lower, "%s", d.web_number);
    for (char *p = lower; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    req.web_number = lower;
    ck_assert_int_eq(veil_channel_call(t.ch, "LookupWebNumber", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* a mistyped symbol is caught by the check symbol */
    char typo[24];
    snprintf(typo, sizeof typo, "%s", d.web_number);
    typo[2] = typo[2] == '7' ? '8' : '7';
    req.web_number = typo;
    ck_assert_int_eq(veil_channel_call(t.ch, "LookupWebNumber", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "web_number check symbol is wrong");
    req.web_number = "ABCD-EFGH";
    ck_assert_int_eq(veil_channel_call(t.ch, "LookupWebNumber", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(st.message, "four groups of four"));
    char fresh[VEIL_WEB_NUMBER_LEN + 1];
    veil_web_number_new(fresh);
    req.web_number = fresh;
    ck_assert_int_eq(veil_channel_call(t.ch, "LookupWebNumber", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_NOT_FOUND);
    vt_stop(&t);
}
END_TEST

START_TEST(test_ticket_key_versions)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d;
    enrolled(&t, &d, "r1", "230102", 13);
    veil_status st;
    unsigned char ch[32];
    randombytes_buf(ch, 32);
    /* a ticket key added while serving: tickets sealed to it open without a restart */
    h_keyfile(t.keys, "ticket", 2);
    unsigned char seed[32], pk2[32], sk2[32];
    {
        char path[1200];
        snprintf(path, sizeof path, "%s/ticket-2.key", t.keys);
        veil_key *k;
        char err[256];
        ck_assert_int_eq(veil_key_load(path, 2, &k, err, sizeof err), VEIL_OK);
        memcpy(seed, k->bytes, 32);
        veil_key_free(k);
    }
    crypto_box_seed_keypair(pk2, sk2, seed);
    char *ticket;
    ck_assert_int_eq(
        veil_ticket_make("chat.wechat", ch, 32, veil_now_ms(), d.id, d.sk, pk2, 2, &ticket),
        VEIL_OK);
    /* no loaded key opens it: the key directory is rescanned (at most once a second) */
    ck_assert_int_eq(vt_verify(&t, ticket, "chat.wechat", ch, 32, NULL, NULL, &st), VEIL_OK);
    free(ticket);
    /* issue 13: new key files present at a restart change nothing until rotated */
    ck_assert_uint_eq(t.ticket_version, 1);
    unsigned char pk1[32];
    memcpy(pk1, t.ticket_pk, 32);
    h_keyfile(t.keys, "webcert", 2);
    vt_restart(&t);
    ck_assert_uint_eq(t.ticket_version, 1);
    ck_assert_mem_eq(t.ticket_pk, pk1, 32);
    char kid[64];
    cert_kid(&t, "r2", 14, kid);
    ck_assert_str_eq(kid, "webcert-1");
    char out[4096];
    ck_assert_int_ne(vt_command(&t, "rotate-key --kind ticket --to 3", out, sizeof out), 0);
    ck_assert_msg(strstr(out, "no key file ticket-3.key"), "%s", out);
    ck_assert_int_ne(vt_command(&t, "rotate-key --kind tickets --to 2", out, sizeof out), 0);
    ck_assert_int_ne(vt_command(&t, "rotate-key --kind ticket --to 2x", out, sizeof out), 0);
    vt_restart(&t);
    ck_assert_uint_eq(t.ticket_version, 1);
    /* the rotation command (the running vault switches too: test_rotation_without_restart) */
    ck_assert_msg(vt_command(&t, "rotate-key --kind ticket --to 2", out, sizeof out) == 0, "%s",
                  out);
    ck_assert_msg(strstr(out, "previous 1"), "%s", out);
    ck_assert_msg(vt_command(&t, "rotate-key --kind webcert --to 2", out, sizeof out) == 0, "%s",
                  out);
    vt_restart(&t);
    ck_assert_uint_eq(t.ticket_version, 2);
    ck_assert_mem_eq(t.ticket_pk, pk2, 32);
    cert_kid(&t, "r3", 15, kid);
    ck_assert_str_eq(kid, "webcert-2");
    /* tickets sealed to version 1 (phones not yet refreshed) still open */
    ck_assert_int_eq(
        veil_ticket_make("chat.wechat", ch, 32, veil_now_ms(), d.id, d.sk, pk1, 1, &ticket),
        VEIL_OK);
    ck_assert_int_eq(vt_verify(&t, ticket, "chat.wechat", ch, 32, NULL, NULL, &st), VEIL_OK);
    free(ticket);
    /* a ticket naming version 2 but sealed to version 1's key does not open */
    ck_assert_int_eq(
        veil_ticket_make("chat.wechat", ch, 32, veil_now_ms(), d.id, d.sk, pk1, 2, &ticket),
        VEIL_OK);
    expect_ticket(&t, ticket, "chat.wechat", ch, 32, VEIL_ERR_UNAUTHENTICATED, GENERIC);
    free(ticket);
    vt_stop(&t);
}
END_TEST

/* The X25519 public key of the ticket key file <version> in dir. */
static void ticket_pk_of(const char *dir, uint32_t version, unsigned char pk[32])
{
    char path[1200], err[256];
    unsigned char sk[32];
    veil_key *k;
    snprintf(path, sizeof path, "%s/ticket-%u.key", dir, version);
    ck_assert_int_eq(veil_key_load(path, version, &k, err, sizeof err), VEIL_OK);
    crypto_box_seed_keypair(pk, sk, k->bytes);
    sodium_memzero(sk, sizeof sk);
    veil_key_free(k);
}

/* Polls GetWalletKeys (up to 10 s) until the running vault hands out ticket key version. */
static void await_ticket_version(vt *t, uint32_t version)
{
    for (int i = 0; i < 200 && t->ticket_version != version; i++) {
        usleep(50 * 1000);
        vt_wallet_keys(t, NULL, 0);
    }
    if (t->ticket_version != version)
        h_dump_log(&t->proc);
    ck_assert_uint_eq(t->ticket_version, version);
}

/* Waits (up to 10 s) for text in the vault's log. */
static void await_log(vt *t, const char *text)
{
    for (int i = 0; i < 200 && !h_log_contains(&t->proc, text); i++)
        usleep(50 * 1000);
    if (!h_log_contains(&t->proc, text))
        h_dump_log(&t->proc);
    ck_assert_msg(h_log_contains(&t->proc, text), "not logged: %s", text);
}

/* Issue 16 item 5: a rotation takes effect in the running vault, with no restart. */
START_TEST(test_rotation_without_restart)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d;
    veil_status st;
    char out[4096], jwks[4096], kid[64], *ticket;
    unsigned char ch[32], pk1[32], pk2[32], pk3[32];
    randombytes_buf(ch, 32);
    enrolled(&t, &d, "r1", "230102", 21);
    ck_assert_uint_eq(t.ticket_version, 1);
    memcpy(pk1, t.ticket_pk, 32);
    pid_t pid = t.proc.pid;

    /* new key files in the (mounted) key folder, then the rotation commands */
    h_keyfile(t.keys, "ticket", 2);
    h_keyfile(t.keys, "webcert", 2);
    h_keyfile(t.keys, "master", 2);
    ticket_pk_of(t.keys, 2, pk2);
    ck_assert_msg(vt_command(&t, "rotate-key --kind ticket --to 2", out, sizeof out) == 0, "%s",
                  out);
    await_ticket_version(&t, 2);
    ck_assert_msg(strstr(out, "running vaults switch now"), "%s", out);
    ck_assert_mem_eq(t.ticket_pk, pk2, 32);
    await_log(&t, "vault key versions switched");
    /* phones that still hold version 1 log in during the overlap */
    ck_assert_int_eq(
        veil_ticket_make("chat.wechat", ch, 32, veil_now_ms(), d.id, d.sk, pk1, 1, &ticket),
        VEIL_OK);
    ck_assert_int_eq(vt_verify(&t, ticket, "chat.wechat", ch, 32, NULL, NULL, &st), VEIL_OK);
    free(ticket);
    /* and with version 2, as GetWalletKeys now hands out */
    ck_assert_int_eq(vt_login(&t, &d, "chat.wechat", &st), VEIL_OK);

    ck_assert_msg(vt_command(&t, "rotate-key --kind webcert --to 2", out, sizeof out) == 0, "%s",
                  out);
    await_log(&t, "\"webcert_kid\":\"webcert-2\"");
    cert_kid(&t, "r2", 22, kid);
    ck_assert_str_eq(kid, "webcert-2");
    /* certificates signed by webcert-1 stay verifiable: both keys are published */
    vt_wallet_keys(&t, jwks, sizeof jwks);
    ck_assert_msg(strstr(jwks, "\"webcert-1\"") && strstr(jwks, "\"webcert-2\""), "%s", jwks);

    /* the master key: data keys enrolled after the rotation are wrapped under version 2 */
    ck_assert_msg(vt_command(&t, "rotate-master-key --to 2", out, sizeof out) == 0, "%s", out);
    await_log(&t, "\"master_version\":2");
    vt_device d2;
    enrolled(&t, &d2, "r3", "230102", 23);
    ck_assert_msg(vt_command(&t, "rotate-master-key --to 2", out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "vault: 0 re-wrapped"), "enrolled under an old version: %s", out);

    /* refused: no key file for the version */
    ck_assert_int_ne(vt_command(&t, "rotate-key --kind ticket --to 3", out, sizeof out), 0);
    ck_assert_msg(strstr(out, "no key file ticket-3.key"), "%s", out);
    /* held: key_state names a version this replica has no file for yet (the command ran
     * where the file was; this replica's Secret has not caught up) */
    ck_assert_int_eq(h_db_exec(t.db, "UPDATE key_state SET version = 3 WHERE kind = 'ticket'; "
                                     "NOTIFY " VAULT_KEYS_CHANNEL ", 'ticket 3'"),
                     0);
    await_log(&t, "ticket-3.key missing; the version used before stays in use");
    vt_wallet_keys(&t, NULL, 0);
    ck_assert_uint_eq(t.ticket_version, 2);
    ck_assert_int_eq(vt_login(&t, &d, "chat.wechat", &st), VEIL_OK);
    /* the file arrives: the held rotation takes effect */
    h_keyfile(t.keys, "ticket", 3);
    ticket_pk_of(t.keys, 3, pk3);
    await_ticket_version(&t, 3);
    ck_assert_mem_eq(t.ticket_pk, pk3, 32);
    ck_assert_int_eq(vt_login(&t, &d, "chat.wechat", &st), VEIL_OK);
    /* all of it without a restart */
    ck_assert_int_eq(t.proc.pid, pid);
    vt_stop(&t);
}
END_TEST

struct worker {
    vt *t;
    vt_device d;
    int ok;
};

static void *login_loop(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 25; i++) {
        veil_status st;
        if (vt_login(w->t, &w->d, i % 2 ? "chat.wechat" : "game.tianfeng", &st) == VEIL_OK)
            w->ok++;
    }
    veil_client_thread_done();
    return NULL;
}

START_TEST(test_concurrent_logins_keep_the_chain)
{
    vt t;
    vt_start(&t, NULL);
    char id[19];
    vt_id_number(id, "450103", 2000, 2, 29, 77);
    vt_device phones[4];
    veil_status st;
    for (int i = 0; i < 4; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "p%d", i);
        vt_new_device(&phones[i]);
        ck_assert_int_eq(vt_enrol(&t, rid, id, "冯三", &phones[i], NULL, &st), VEIL_OK);
    }
    /* four devices of one citizen log in at once: every append lands, in one chain */
    pthread_t th[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.t = &t, .d = phones[i]};
        pthread_create(&th[i], NULL, login_loop, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(w[i].ok, 25);
    }
    Veil__Vault__ListAccessLogResponse *log;
    ck_assert_int_eq(vt_subject_call(&t, "ListAccessLog", w[0].d.subject, 32, &log, &st), VEIL_OK);
    /* four device_added entries from the enrolments, then the 100 logins */
    ck_assert_uint_eq(log->n_entries, 104);
    ck_assert(log->chain_valid);
    ck_assert_int_eq(log->first_bad_seq, 0);
    for (size_t i = 0; i < log->n_entries; i++) {
        ck_assert_int_eq(log->entries[i]->seq, (int64_t)i + 1);
        if (i < 4) {
            ck_assert_str_eq(log->entries[i]->action, "device_added");
            continue;
        }
        ck_assert_str_eq(log->entries[i]->action, "ticket_verified");
        ck_assert_str_eq(log->entries[i]->purpose, "login");
        ck_assert(strcmp(log->entries[i]->app_id, "chat.wechat") == 0 ||
                  strcmp(log->entries[i]->app_id, "game.tianfeng") == 0);
    }
    protobuf_c_message_free_unpacked(&log->base, NULL);
    vt_stop(&t);
}
END_TEST

struct bench {
    vt *t;
    vt_device d;
    unsigned char ch[32];
    int n, ok;
};

static void *bench_loop(void *arg)
{
    struct bench *b = arg;
    for (int i = 0; i < b->n; i++) {
        veil_status st;
        char *ticket = vt_ticket(b->t, &b->d, "shop.taobao", b->ch, veil_now_ms());
        if (vt_verify(b->t, ticket, "shop.taobao", b->ch, 32, NULL, NULL, &st) == VEIL_OK)
            b->ok++;
        free(ticket);
    }
    veil_client_thread_done();
    return NULL;
}

/*
 * Not a pass/fail limit: prints what VerifyTicket costs end to end on this
 * machine, serially and with 8 callers (8 citizens), and checks every call
 * succeeded and was logged.
 */
START_TEST(test_verify_ticket_latency)
{
    vt t;
    vt_start(&t, NULL);
    vt_device d;
    enrolled(&t, &d, "r1", "130102", 17);
    enum { N = 300, THREADS = 8, PER_THREAD = 100 };
    unsigned char ch[32];
    randombytes_buf(ch, 32);
    char *tickets[N];
    for (int i = 0; i < N; i++)
        tickets[i] = vt_ticket(&t, &d, "shop.taobao", ch, veil_now_ms());
    veil_status st;
    for (int i = 0; i < 20; i++) /* warm up: connection, prepared statements */
        ck_assert_int_eq(vt_verify(&t, tickets[i], "shop.taobao", ch, 32, NULL, NULL, &st),
                         VEIL_OK);
    int64_t t0 = veil_mono_ns();
    for (int i = 20; i < N; i++)
        ck_assert_int_eq(vt_verify(&t, tickets[i], "shop.taobao", ch, 32, NULL, NULL, &st),
                         VEIL_OK);
    double us = (double)(veil_mono_ns() - t0) / 1e3 / (N - 20);
    for (int i = 0; i < N; i++)
        free(tickets[i]);
    /* the enrolment's device_added entry, then the N logins */
    ck_assert_int_eq(vt_sql_int(&t, "SELECT max(seq) FROM access_log"), N + 1);

    struct bench b[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "b%d", i);
        b[i] = (struct bench){.t = &t, .n = PER_THREAD};
        randombytes_buf(b[i].ch, 32);
        enrolled(&t, &b[i].d, rid, "130102", 19 + 2 * i);
    }
    t0 = veil_mono_ns();
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, bench_loop, &b[i]);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(b[i].ok, PER_THREAD);
    }
    double secs = (double)(veil_mono_ns() - t0) / 1e9;
    fprintf(stderr,
            "check_vault_login: VerifyTicket %.0f us per serial call; %.0f calls/s with %d "
            "concurrent callers (tickets made by the same process, mTLS, synchronous "
            "commit, one log entry each)\n",
            us, THREADS * PER_THREAD / secs, THREADS);
    /* and one device_added per enrolment: the first device's and each thread's */
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_log"),
                     N + THREADS * PER_THREAD + 1 + THREADS);
    vt_stop(&t);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_ticket_binding,
                                  test_ticket_forgery,
                                  test_revoked_devices,
                                  test_citizen_requests,
                                  test_nonce_expiry_on_the_service_clock,
                                  test_web_number_lookup,
                                  test_ticket_key_versions,
                                  test_rotation_without_restart,
                                  test_concurrent_logins_keep_the_chain,
                                  test_verify_ticket_latency,
                                  NULL};
    const h_case cases[] = {{"login", 60, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("vault_login", cases));
}
