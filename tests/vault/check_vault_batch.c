/*
 * check_vault_batch.c - VerifyTicketBatch and ReleaseAttributesBatch (issue
 * 15) over real gRPC and PostgreSQL: a batch mixing good items with a forged
 * signature, an unknown and a revoked device, a malformed ticket and a
 * replayed capability answers each item exactly as the unbatched call does,
 * in order, and the good ones succeed; released entries reach the citizen's
 * access log with a valid chain; empty and oversized batches are refused.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <libpq-fe.h>

#include "veil/codec.h"
#include "vtest.h"

#define GENERIC "login ticket could not be verified"

static void enrolled(vt *t, vt_device *d, const char *rid, const char *region, int seq)
{
    char id[19];
    veil_status st;
    vt_id_number(id, region, 1987, 6, 6, seq);
    vt_new_device(d);
    ck_assert_int_eq(vt_enrol(t, rid, id, "孙三", d, NULL, &st), VEIL_OK);
}

/* One VerifyTicket item; ticket is kept by the caller. */
struct vitem {
    const char *ticket, *app;
    unsigned char challenge[32];
    size_t challenge_len;
};

static Veil__Vault__VerifyTicketBatchResponse *verify_batch(vt *t, const struct vitem *it, size_t n,
                                                            veil_err want, veil_status *st)
{
    Veil__Vault__VerifyTicketRequest *reqs = calloc(n ? n : 1, sizeof *reqs);
    Veil__Vault__VerifyTicketRequest **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        veil__vault__verify_ticket_request__init(&reqs[i]);
        reqs[i].ticket = (char *)it[i].ticket;
        reqs[i].app_id = (char *)it[i].app;
        reqs[i].challenge.data = (unsigned char *)it[i].challenge;
        reqs[i].challenge.len = it[i].challenge_len;
        ptrs[i] = &reqs[i];
    }
    Veil__Vault__VerifyTicketBatchRequest req = VEIL__VAULT__VERIFY_TICKET_BATCH_REQUEST__INIT;
    req.items = ptrs;
    req.n_items = n;
    Veil__Vault__VerifyTicketBatchResponse *resp = NULL;
    ck_assert_int_eq(veil_channel_call(t->ch, "VerifyTicketBatch", &req.base, NULL, 10000, &resp,
                                       st),
                     want);
    free(reqs);
    free(ptrs);
    if (resp) {
        ck_assert_uint_eq(resp->n_items, n);
        ck_assert_uint_eq(resp->n_status, n);
    }
    return resp;
}

/* The batch item's status equals the unbatched call's, which is want (and msg). */
static void same_as_unbatched(vt *t, const struct vitem *it, const Veil__ItemStatus *s,
                              veil_err want, const char *msg)
{
    veil_status st;
    ck_assert_int_eq(vt_verify(t, it->ticket, it->app, it->challenge, it->challenge_len, NULL,
                               NULL, &st),
                     want);
    ck_assert_uint_eq(s->code, (unsigned)veil_err_status(want));
    if (want) {
        ck_assert_str_eq(st.message, msg);
        ck_assert_str_eq(s->message, msg);
    }
}

static void revoke(vt *t, const unsigned char *subject, const char *device_id)
{
    Veil__Vault__RevokeDeviceRequest req = VEIL__VAULT__REVOKE_DEVICE_REQUEST__INIT;
    req.subject_ref.data = (unsigned char *)subject;
    req.subject_ref.len = 32;
    req.device_id = (char *)device_id;
    Veil__Empty *resp;
    veil_status st;
    ck_assert_int_eq(veil_channel_call(t->ch, "RevokeDevice", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* How many entries of subject's access log have action; asserts the chain is valid. */
static size_t log_count(vt *t, const unsigned char *subject, const char *action)
{
    Veil__Vault__ListAccessLogResponse *log;
    veil_status st;
    size_t n = 0;
    ck_assert_int_eq(vt_subject_call(t, "ListAccessLog", subject, 32, &log, &st), VEIL_OK);
    ck_assert(log->chain_valid);
    for (size_t i = 0; i < log->n_entries; i++)
        n += strcmp(log->entries[i]->action, action) == 0;
    protobuf_c_message_free_unpacked(&log->base, NULL);
    return n;
}

enum { GOOD_A, FORGED, GHOST, REVOKED, MALFORMED, WRONG_APP, GOOD_B, SKEW, SHORT_CH, N_ITEMS };

START_TEST(test_verify_batch_items_as_unbatched)
{
    vt t;
    vt_start(&t, NULL);
    vt_device a, b, r, thief;
    veil_status st;
    enrolled(&t, &a, "ra", "440305", 1);
    enrolled(&t, &b, "rb", "440305", 2);
    enrolled(&t, &r, "rr", "440305", 3);
    enrolled(&t, &thief, "rt", "440305", 4);
    ck_assert_int_eq(vt_login(&t, &a, "chat.wechat", &st), VEIL_OK);
    ck_assert_int_eq(vt_login(&t, &b, "chat.wechat", &st), VEIL_OK);
    ck_assert_int_eq(vt_login(&t, &r, "chat.wechat", &st), VEIL_OK);
    revoke(&t, r.subject, r.device_id);
    size_t verified_a = log_count(&t, a.subject, "ticket_verified");

    struct vitem it[N_ITEMS];
    char *tickets[N_ITEMS] = {0};
    vt_device forged = a, ghost = a;
    memcpy(forged.sk, thief.sk, 64);
    randombytes_buf(ghost.id, sizeof ghost.id);
    const vt_device *by[N_ITEMS] = {[GOOD_A] = &a,  [FORGED] = &forged, [GHOST] = &ghost,
                                    [REVOKED] = &r, [WRONG_APP] = &a,   [GOOD_B] = &b,
                                    [SKEW] = &a,    [SHORT_CH] = &a};
    for (int i = 0; i < N_ITEMS; i++) {
        it[i].app = "chat.wechat";
        it[i].challenge_len = 32;
        randombytes_buf(it[i].challenge, 32);
        if (by[i])
            tickets[i] = vt_ticket(&t, by[i], i == WRONG_APP ? "shop.taobao" : "chat.wechat",
                                   it[i].challenge, veil_now_ms() + (i == SKEW ? 300000 : 0));
        it[i].ticket = tickets[i] ? tickets[i] : "!!!!";
    }
    it[SHORT_CH].challenge_len = 31;

    Veil__Vault__VerifyTicketBatchResponse *resp = verify_batch(&t, it, N_ITEMS, VEIL_OK, &st);
    /* the good ones: their own subject and a capability each */
    ck_assert_uint_eq(resp->status[GOOD_A]->code, 0);
    ck_assert_uint_eq(resp->status[GOOD_B]->code, 0);
    ck_assert_str_eq(resp->status[GOOD_A]->message, "");
    ck_assert_uint_eq(resp->items[GOOD_A]->subject_ref.len, 32);
    ck_assert_mem_eq(resp->items[GOOD_A]->subject_ref.data, a.subject, 32);
    ck_assert_mem_eq(resp->items[GOOD_B]->subject_ref.data, b.subject, 32);
    ck_assert_uint_eq(resp->items[GOOD_A]->release_capability.len, 57);
    ck_assert_uint_eq(resp->items[GOOD_B]->release_capability.len, 57);
    ck_assert_str_eq(resp->items[GOOD_A]->credential, "phone");
    ck_assert_str_eq(resp->items[GOOD_A]->device_id, "");
    ck_assert(memcmp(resp->items[GOOD_A]->release_capability.data,
                     resp->items[GOOD_B]->release_capability.data, 57) != 0);
    /* a failed item carries nothing */
    ck_assert_uint_eq(resp->items[FORGED]->subject_ref.len, 0);
    ck_assert_uint_eq(resp->items[REVOKED]->release_capability.len, 0);

    /* every item: the unbatched call's code and message, in the order given */
    same_as_unbatched(&t, &it[GOOD_A], resp->status[GOOD_A], VEIL_OK, "");
    same_as_unbatched(&t, &it[FORGED], resp->status[FORGED], VEIL_ERR_UNAUTHENTICATED, GENERIC);
    same_as_unbatched(&t, &it[GHOST], resp->status[GHOST], VEIL_ERR_UNAUTHENTICATED, GENERIC);
    same_as_unbatched(&t, &it[REVOKED], resp->status[REVOKED], VEIL_ERR_DENIED, "device revoked");
    same_as_unbatched(&t, &it[MALFORMED], resp->status[MALFORMED], VEIL_ERR_INVALID,
                      "ticket is malformed");
    same_as_unbatched(&t, &it[WRONG_APP], resp->status[WRONG_APP], VEIL_ERR_UNAUTHENTICATED,
                      "ticket was not made for this app");
    same_as_unbatched(&t, &it[GOOD_B], resp->status[GOOD_B], VEIL_OK, "");
    same_as_unbatched(&t, &it[SKEW], resp->status[SKEW], VEIL_ERR_UNAUTHENTICATED,
                      "ticket time is outside the allowed clock skew");
    same_as_unbatched(&t, &it[SHORT_CH], resp->status[SHORT_CH], VEIL_ERR_INVALID,
                      "challenge must be 32 bytes");

    /*
     * The access log holds what the unbatched calls record: for a, one
     * ticket_verified per good ticket (batch and unbatched) and one
     * login_refused per genuine ticket out of skew; the revoked device's
     * refusals are r's; the forged ticket logs nothing for a.
     */
    ck_assert_uint_eq(log_count(&t, a.subject, "ticket_verified"), verified_a + 2);
    ck_assert_uint_eq(log_count(&t, a.subject, "login_refused"), 2);
    ck_assert_uint_eq(log_count(&t, r.subject, "login_refused"), 2);
    ck_assert_uint_eq(log_count(&t, b.subject, "ticket_verified"), 3);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* the same citizen's device many times in one batch: every item verified, the chain whole */
    struct vitem many[20];
    char *mt[20];
    for (int i = 0; i < 20; i++) {
        many[i].app = "chat.wechat";
        many[i].challenge_len = 32;
        randombytes_buf(many[i].challenge, 32);
        mt[i] = vt_ticket(&t, i % 2 ? &a : &b, "chat.wechat", many[i].challenge, veil_now_ms());
        many[i].ticket = mt[i];
    }
    resp = verify_batch(&t, many, 20, VEIL_OK, &st);
    for (int i = 0; i < 20; i++) {
        ck_assert_uint_eq(resp->status[i]->code, 0);
        ck_assert_mem_eq(resp->items[i]->subject_ref.data, i % 2 ? a.subject : b.subject, 32);
        free(mt[i]);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    ck_assert_uint_eq(log_count(&t, a.subject, "ticket_verified"), verified_a + 12);
    ck_assert_uint_eq(log_count(&t, b.subject, "ticket_verified"), 13);

    for (int i = 0; i < N_ITEMS; i++)
        free(tickets[i]);
    vt_stop(&t);
}
END_TEST

/* One ReleaseAttributes item. */
struct ritem {
    const unsigned char *subject;
    const char *app;
    const char *const *names;
    size_t n;
    unsigned char cap[57];
    unsigned char challenge[32];
};

static Veil__Vault__ReleaseAttributesBatchResponse *release_batch(vt *t, const struct ritem *it,
                                                                  size_t n, veil_err want,
                                                                  veil_status *st)
{
    Veil__Vault__ReleaseAttributesRequest *reqs = calloc(n ? n : 1, sizeof *reqs);
    Veil__Vault__ReleaseAttributesRequest **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        veil__vault__release_attributes_request__init(&reqs[i]);
        reqs[i].subject_ref.data = (unsigned char *)it[i].subject;
        reqs[i].subject_ref.len = 32;
        reqs[i].app_id = (char *)it[i].app;
        reqs[i].attributes = (char **)it[i].names;
        reqs[i].n_attributes = it[i].n;
        reqs[i].purpose = "login";
        reqs[i].capability.data = (unsigned char *)it[i].cap;
        reqs[i].capability.len = 57;
        reqs[i].challenge.data = (unsigned char *)it[i].challenge;
        reqs[i].challenge.len = 32;
        ptrs[i] = &reqs[i];
    }
    Veil__Vault__ReleaseAttributesBatchRequest req =
        VEIL__VAULT__RELEASE_ATTRIBUTES_BATCH_REQUEST__INIT;
    req.items = ptrs;
    req.n_items = n;
    Veil__Vault__ReleaseAttributesBatchResponse *resp = NULL;
    ck_assert_int_eq(veil_channel_call(t->ch, "ReleaseAttributesBatch", &req.base, NULL, 10000,
                                       &resp, st),
                     want);
    free(reqs);
    free(ptrs);
    if (resp) {
        ck_assert_uint_eq(resp->n_items, n);
        ck_assert_uint_eq(resp->n_status, n);
    }
    return resp;
}

/* A fresh capability for d at app (VerifyTicket), into it. */
static void fresh_cap(vt *t, const vt_device *d, const char *app, const char *const *names,
                      size_t n, struct ritem *it)
{
    Veil__Vault__VerifyTicketRequest req = VEIL__VAULT__VERIFY_TICKET_REQUEST__INIT;
    Veil__Vault__VerifyTicketResponse *resp;
    veil_status st;
    randombytes_buf(it->challenge, 32);
    char *ticket = vt_ticket(t, d, app, it->challenge, veil_now_ms());
    req.ticket = ticket;
    req.app_id = (char *)app;
    req.challenge.data = it->challenge;
    req.challenge.len = 32;
    ck_assert_int_eq(veil_channel_call(t->ch, "VerifyTicket", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    ck_assert_uint_eq(resp->release_capability.len, 57);
    memcpy(it->cap, resp->release_capability.data, 57);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(ticket);
    it->subject = d->subject;
    it->app = app;
    it->names = names;
    it->n = n;
}

/* The unbatched ReleaseAttributes of it gives want and msg. */
static void release_unbatched(vt *t, const struct ritem *it, veil_err want, const char *msg)
{
    Veil__Vault__ReleaseAttributesResponse *r = NULL;
    veil_status st;
    ck_assert_int_eq(vt_release_raw(t, it->subject, it->app, it->names, it->n, "login", it->cap,
                                    57, it->challenge, &r, &st),
                     want);
    if (want)
        ck_assert_str_eq(st.message, msg);
    else
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

enum { R_GOOD_A, R_REPLAY, R_TWICE_1, R_TWICE_2, R_FORGED, R_SCOPE, R_GOOD_B, R_SUBJECT, R_N };

START_TEST(test_release_batch_items_as_unbatched)
{
    vt t;
    vt_start(&t, NULL);
    vt_device a, b;
    veil_status st;
    enrolled(&t, &a, "ra", "440305", 5);
    enrolled(&t, &b, "rb", "110101", 6);
    ck_assert_int_eq(vt_login(&t, &a, "gov.tax", &st), VEIL_OK);
    ck_assert_int_eq(vt_login(&t, &b, "gov.tax", &st), VEIL_OK);
    static const char *const scope[] = {"age_over_18", "province"};
    ck_assert_int_eq(vt_set_scope(&t, "gov.tax", scope, 2, &st), VEIL_OK);
    static const char *const age[] = {"age_over_18"}, *const both[] = {"age_over_18", "province"},
                             *const name[] = {"full_name"};

    struct ritem it[R_N];
    fresh_cap(&t, &a, "gov.tax", both, 2, &it[R_GOOD_A]);
    fresh_cap(&t, &a, "gov.tax", age, 1, &it[R_REPLAY]);
    release_unbatched(&t, &it[R_REPLAY], VEIL_OK, ""); /* used before the batch */
    fresh_cap(&t, &b, "gov.tax", age, 1, &it[R_TWICE_1]);
    it[R_TWICE_2] = it[R_TWICE_1]; /* the same capability twice in one batch */
    fresh_cap(&t, &a, "gov.tax", age, 1, &it[R_FORGED]);
    it[R_FORGED].cap[40] ^= 1;
    fresh_cap(&t, &b, "gov.tax", name, 1, &it[R_SCOPE]);
    fresh_cap(&t, &b, "gov.tax", both, 2, &it[R_GOOD_B]);
    fresh_cap(&t, &a, "gov.tax", age, 1, &it[R_SUBJECT]);
    it[R_SUBJECT].subject = b.subject; /* a's capability for b */
    size_t released_a = log_count(&t, a.subject, "attributes_released");
    size_t released_b = log_count(&t, b.subject, "attributes_released");

    Veil__Vault__ReleaseAttributesBatchResponse *resp = release_batch(&t, it, R_N, VEIL_OK, &st);
    const unsigned ok = 0, denied = (unsigned)veil_err_status(VEIL_ERR_DENIED);
    const unsigned want[R_N] = {ok, denied, ok, denied, denied, denied, ok, denied};
    const char *msg[R_N] = {
        [R_REPLAY] = "capability already used",
        [R_TWICE_2] = "capability already used",
        [R_FORGED] = "capability was not minted for this subject, app and challenge",
        [R_SCOPE] = "attributes[0] is outside the app's registered scope",
        [R_SUBJECT] = "capability was not minted for this subject, app and challenge",
    };
    for (int i = 0; i < R_N; i++) {
        ck_assert_msg(resp->status[i]->code == want[i], "item %d: %u %s", i, resp->status[i]->code,
                      resp->status[i]->message);
        ck_assert_str_eq(resp->status[i]->message, msg[i] ? msg[i] : "");
        ck_assert_uint_eq(resp->items[i]->n_attributes, want[i] == ok ? it[i].n : 0);
    }
    ck_assert_str_eq(resp->items[R_GOOD_A]->attributes[0]->name, "age_over_18");
    ck_assert(resp->items[R_GOOD_A]->attributes[0]->flag);
    ck_assert_str_eq(resp->items[R_GOOD_A]->attributes[1]->name, "province");
    ck_assert_str_eq(resp->items[R_GOOD_A]->attributes[1]->province->name, "广东省");
    ck_assert_str_eq(resp->items[R_GOOD_B]->attributes[1]->province->name, "北京市");
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /*
     * The unbatched call answers each the same, except that every capability
     * the batch spent (released or refused for scope) is now used.
     */
    for (int i = 0; i < R_N; i++)
        release_unbatched(&t, &it[i], VEIL_ERR_DENIED,
                          want[i] == ok || i == R_SCOPE ? "capability already used" : msg[i]);
    struct ritem out_of_scope;
    fresh_cap(&t, &b, "gov.tax", name, 1, &out_of_scope);
    release_unbatched(&t, &out_of_scope, VEIL_ERR_DENIED, msg[R_SCOPE]);

    /* one entry per released item, in each citizen's own log, chains valid */
    ck_assert_uint_eq(log_count(&t, a.subject, "attributes_released"), released_a + 1);
    ck_assert_uint_eq(log_count(&t, b.subject, "attributes_released"), released_b + 2);
    vt_stop(&t);
}
END_TEST

/*
 * The point of the batch: n logins of n citizens cost one group commit for
 * their ticket_verified entries and one for their releases (the vault's own
 * statistics), where unbatched calls from one caller commit one by one.
 */
START_TEST(test_a_batch_shares_one_commit)
{
    enum { N = 12 };
    vt t;
    vt_start(&t, NULL);
    vt_device d[N];
    veil_status st;
    static const char *const age[] = {"age_over_18"};
    ck_assert_int_eq(vt_set_scope(&t, "gov.tax", age, 1, &st), VEIL_OK);
    struct vitem v[N];
    char *tickets[N];
    for (int i = 0; i < N; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "r%d", i);
        enrolled(&t, &d[i], rid, "320102", 20 + i);
        v[i].app = "gov.tax";
        v[i].challenge_len = 32;
        randombytes_buf(v[i].challenge, 32);
        tickets[i] = vt_ticket(&t, &d[i], "gov.tax", v[i].challenge, veil_now_ms());
        v[i].ticket = tickets[i];
    }
    Veil__Vault__VerifyTicketBatchResponse *vr = verify_batch(&t, v, N, VEIL_OK, &st);
    struct ritem r[N];
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(vr->status[i]->code, 0);
        ck_assert_uint_eq(vr->items[i]->release_capability.len, 57);
        memcpy(r[i].cap, vr->items[i]->release_capability.data, 57);
        memcpy(r[i].challenge, v[i].challenge, 32);
        memcpy(d[i].subject, vr->items[i]->subject_ref.data, 32);
        r[i].subject = d[i].subject;
        r[i].app = "gov.tax";
        r[i].names = age;
        r[i].n = 1;
        free(tickets[i]);
    }
    protobuf_c_message_free_unpacked(&vr->base, NULL);
    Veil__Vault__ReleaseAttributesBatchResponse *rr = release_batch(&t, r, N, VEIL_OK, &st);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(rr->status[i]->code, 0);
        ck_assert(rr->items[i]->attributes[0]->flag);
    }
    protobuf_c_message_free_unpacked(&rr->base, NULL);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(log_count(&t, d[i].subject, "ticket_verified"), 1);
        ck_assert_uint_eq(log_count(&t, d[i].subject, "attributes_released"), 1);
    }
    h_proc proc = t.proc;
    vt_stop(&t);
    long long batches = 0, entries = 0;
    ck_assert(vt_group_stats(&proc, &batches, &entries));
    ck_assert_int_eq(entries, 2 * N);
    ck_assert_int_eq(batches, 2);
}
END_TEST

/* An entry the database refuses fails its own item only, with the unbatched call's status. */
START_TEST(test_a_refused_entry_fails_only_its_item)
{
    enum { N = 6, BAD = 2 };
    vt t;
    vt_start(&t, NULL);
    vt_device d[N];
    veil_status st;
    struct vitem v[N];
    char *tickets[N], hex[65], sql[1024];
    for (int i = 0; i < N; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "r%d", i);
        enrolled(&t, &d[i], rid, "320102", 40 + i);
        ck_assert_int_eq(vt_login(&t, &d[i], "chat.wechat", &st), VEIL_OK);
    }
    veil_hex_encode(hex, sizeof hex, d[BAD].subject, 32);
    snprintf(sql, sizeof sql,
             "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "IF NEW.subject_ref = '\\x%s'::bytea THEN RAISE EXCEPTION 'refused'; END IF; "
             "RETURN NEW; END $$; CREATE TRIGGER refuse BEFORE INSERT ON access_log "
             "FOR EACH ROW EXECUTE FUNCTION refuse()",
             hex);
    PQclear(vt_sql(&t, sql));
    for (int i = 0; i < N; i++) {
        v[i].app = "chat.wechat";
        v[i].challenge_len = 32;
        randombytes_buf(v[i].challenge, 32);
        tickets[i] = vt_ticket(&t, &d[i], "chat.wechat", v[i].challenge, veil_now_ms());
        v[i].ticket = tickets[i];
    }
    Veil__Vault__VerifyTicketBatchResponse *vr = verify_batch(&t, v, N, VEIL_OK, &st);
    for (int i = 0; i < N; i++) {
        if (i != BAD) {
            ck_assert_uint_eq(vr->status[i]->code, 0);
            ck_assert_mem_eq(vr->items[i]->subject_ref.data, d[i].subject, 32);
            ck_assert_uint_eq(log_count(&t, d[i].subject, "ticket_verified"), 2);
        }
    }
    ck_assert_uint_ne(vr->status[BAD]->code, 0);
    /* the unbatched call fails alike, and nothing was logged for the refused citizen */
    veil_status one;
    veil_err err = vt_verify(&t, tickets[BAD], "chat.wechat", v[BAD].challenge, 32, NULL, NULL, &one);
    ck_assert_uint_eq(vr->status[BAD]->code, (unsigned)veil_err_status(err));
    ck_assert_str_eq(vr->status[BAD]->message, one.message);
    ck_assert_uint_eq(log_count(&t, d[BAD].subject, "ticket_verified"), 1);
    protobuf_c_message_free_unpacked(&vr->base, NULL);
    for (int i = 0; i < N; i++)
        free(tickets[i]);
    vt_stop(&t);
}
END_TEST

START_TEST(test_batch_size_limits)
{
    vt t;
    vt_start(&t, NULL);
    veil_status st;
    const char *msg = "items must hold 1 to 256 requests";
    verify_batch(&t, NULL, 0, VEIL_ERR_INVALID, &st);
    ck_assert_str_eq(st.message, msg);
    release_batch(&t, NULL, 0, VEIL_ERR_INVALID, &st);
    ck_assert_str_eq(st.message, msg);

    static struct vitem v[257];
    static struct ritem r[257];
    static const char *const age[] = {"age_over_18"};
    for (size_t i = 0; i < 257; i++) {
        v[i].ticket = "AAAA";
        v[i].app = "chat.wechat";
        v[i].challenge_len = 32;
        r[i].subject = (const unsigned char *)"0123456789abcdef0123456789abcdef";
        r[i].app = "chat.wechat";
        r[i].names = age;
        r[i].n = 1;
        r[i].cap[0] = 1;
    }
    verify_batch(&t, v, 257, VEIL_ERR_INVALID, &st);
    ck_assert_str_eq(st.message, msg);
    release_batch(&t, r, 257, VEIL_ERR_INVALID, &st);
    ck_assert_str_eq(st.message, msg);

    /* the largest batch: every item answered on its own */
    Veil__Vault__VerifyTicketBatchResponse *vr = verify_batch(&t, v, 256, VEIL_OK, &st);
    for (size_t i = 0; i < 256; i++) {
        ck_assert_uint_eq(vr->status[i]->code, (unsigned)veil_err_status(VEIL_ERR_INVALID));
        ck_assert_str_eq(vr->status[i]->message, "ticket is malformed");
    }
    protobuf_c_message_free_unpacked(&vr->base, NULL);
    Veil__Vault__ReleaseAttributesBatchResponse *rr = release_batch(&t, r, 256, VEIL_OK, &st);
    for (size_t i = 0; i < 256; i++) {
        ck_assert_uint_eq(rr->status[i]->code, (unsigned)veil_err_status(VEIL_ERR_DENIED));
        ck_assert_str_eq(rr->status[i]->message,
                         "capability was not minted for this subject, app and challenge");
    }
    protobuf_c_message_free_unpacked(&rr->base, NULL);
    vt_stop(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vault_batch");
    TCase *tc = tcase_create("batch");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_verify_batch_items_as_unbatched);
    tcase_add_test(tc, test_release_batch_items_as_unbatched);
    tcase_add_test(tc, test_a_batch_shares_one_commit);
    tcase_add_test(tc, test_a_refused_entry_fails_only_its_item);
    tcase_add_test(tc, test_batch_size_limits);
    suite_add_tcase(s, tc);
    return h_run_suite_forked(s);
}
