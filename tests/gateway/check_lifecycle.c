/*
 * check_lifecycle.c - a citizen's identity against a thief with the phone
 * (issue 13 item 3) and the access log that records every access and change
 * (item 5), end to end through the gateway over real gRPC.
 *
 * The stack runs with a short step-up window (VAULT_STEPUP_FRESH_S=60) and
 * cooling-off period (VAULT_COOLING_OFF_S=3), so "a phone proofed two
 * minutes ago" is not freshly proofed and the owner's wait is seconds.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>

#include "e2e.h"
#include "veil/formats.h"
#include "veil/vault.pb-c.h"

#define COOLING_OFF_S 3
#define LONG_AGO_MS   (120 * 1000) /* proofed two minutes ago: not fresh (window 60 s) */

static h_stack S;
/* One-second access-log partitions kept one second, for test_checkpoint_across_retention (the
 * vault's `access-log-retention` command drops them; the served checkpoint names the period). */
static const char *const env[] = {"VAULT_STEPUP_FRESH_S=60", "VAULT_COOLING_OFF_S=3",
                                  "VAULT_ACCESS_LOG_PARTITION_S=1",
                                  "VAULT_ACCESS_LOG_RETENTION_S=1", NULL};

static void stack_up(void)
{
    h_stack_opts o = {.service_env = env};
    if (h_stack_start_opts(&S, &o) != 0)
        ck_abort_msg("the stack did not start");
}

static void stack_down(void)
{
    h_stack_down(&S);
}

/* A phone of the person of id_number, proofed ago_ms before now. */
static vw_wallet *phone(const char *id_number, const char *name, int64_t ago_ms)
{
    vw_wallet *w;
    Veil__Gateway__WalletEnrolResponse *r;
    veil_status st;
    ck_assert_int_eq(vw_wallet_new(&w), VEIL_OK);
    veil_err err = e2e_try_enrol_at(&S, w, id_number, name, veil_now_ms() - ago_ms, &r, &st);
    ck_assert_msg(err == VEIL_OK, "enrolment failed: %s", st.message);
    e2e_free(r);
    return w;
}

/* The same phone proofed again now (ID card and face): a re-proofing. */
static void reproof(vw_wallet *w, const char *id_number, const char *name)
{
    Veil__Gateway__WalletEnrolResponse *r;
    veil_status st;
    ck_assert_int_eq(e2e_try_enrol_at(&S, w, id_number, name, veil_now_ms(), &r, &st), VEIL_OK);
    ck_assert(!r->new_identity);
    e2e_free(r);
}

static veil_err login(const vw_wallet *w, const char *app)
{
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    veil_err err = e2e_login(&S, app, w, NULL, 0, &r, &st);
    e2e_free(r);
    return err;
}

/* Erase from w: the result (caller frees) or NULL with *err set. */
static Veil__Gateway__StepUpResult *erase(const vw_wallet *w, veil_err *err)
{
    Veil__Gateway__ErasePayload p = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    Veil__Gateway__StepUpResult *r = NULL;
    veil_status st;
    p.confirm = "erase my identity";
    *err = e2e_citizen(&S, w, "Erase", &p.base, &r, &st);
    return r;
}

static Veil__Gateway__StepUpResult *revoke_device(const vw_wallet *w, const char *device,
                                                  veil_err *err)
{
    Veil__Gateway__RevokeDevicePayload p = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    Veil__Gateway__StepUpResult *r = NULL;
    veil_status st;
    p.device_id = (char *)device;
    *err = e2e_citizen(&S, w, "RevokeDevice", &p.base, &r, &st);
    return r;
}

static Veil__Gateway__ListPendingResponse *pending(const vw_wallet *w)
{
    Veil__Gateway__ListPendingPayload p = VEIL__GATEWAY__LIST_PENDING_PAYLOAD__INIT;
    Veil__Gateway__ListPendingResponse *r;
    veil_status st;
    ck_assert_int_eq(e2e_citizen(&S, w, "ListPending", &p.base, &r, &st), VEIL_OK);
    return r;
}

static Veil__Gateway__AccessLogResponse *access_log(const vw_wallet *w)
{
    Veil__Gateway__AccessLogPayload p = VEIL__GATEWAY__ACCESS_LOG_PAYLOAD__INIT;
    Veil__Gateway__AccessLogResponse *r;
    veil_status st;
    ck_assert_int_eq(e2e_citizen(&S, w, "AccessLog", &p.base, &r, &st), VEIL_OK);
    ck_assert(r->chain_valid);
    return r;
}

/* The first entry with action at or after index from, or NULL. */
static const Veil__Gateway__AccessLogEntry *find(const Veil__Gateway__AccessLogResponse *r,
                                                 const char *action, size_t *from)
{
    for (size_t i = from ? *from : 0; i < r->n_entries; i++)
        if (strcmp(r->entries[i]->action, action) == 0) {
            if (from)
                *from = i + 1;
            return r->entries[i];
        }
    return NULL;
}

static void expect_status(Veil__Gateway__StepUpResult *r, veil_err err, const char *status,
                          const char *reason)
{
    ck_assert_int_eq(err, VEIL_OK);
    ck_assert_str_eq(r->status, status);
    ck_assert_str_eq(r->reason, reason);
}

/* Sleeps until the cooling-off period of a pending action is over. */
static void wait_until(int64_t effective_at_ms)
{
    while (veil_now_ms() < effective_at_ms + 50)
        usleep(100 * 1000);
}

START_TEST(test_stolen_old_phone_cannot_erase_or_revoke)
{
    char id[19];
    e2e_id_number("11010519800101333", id);
    /* the phone stolen later was proofed a while ago; the owner's new phone just now */
    vw_wallet *old = phone(id, "周强", LONG_AGO_MS);
    vw_wallet *fresh = phone(id, "周强", 0);
    veil_err err;

    /* the thief revokes the new phone: pending, the new phone keeps working */
    Veil__Gateway__StepUpResult *r = revoke_device(old, fresh->device_id, &err);
    expect_status(r, err, "pending", "cooling_off");
    ck_assert_str_eq(r->pending->action, "revoke_device");
    ck_assert_str_eq(r->pending->target_device_id, fresh->device_id);
    ck_assert_str_eq(r->pending->requested_by, old->device_id);
    ck_assert_int_ge(r->pending->effective_at_ms,
                     r->pending->requested_at_ms + COOLING_OFF_S * 1000 - 5);
    e2e_free(r);
    ck_assert_int_eq(login(fresh, "chat.qingyu"), VEIL_OK);

    /* then erases the identity: pending too, and asking again changes nothing */
    r = erase(old, &err);
    expect_status(r, err, "pending", "cooling_off");
    char erase_id[33];
    snprintf(erase_id, sizeof erase_id, "%s", r->pending->id);
    int64_t erase_due = r->pending->effective_at_ms;
    e2e_free(r);
    r = erase(old, &err);
    expect_status(r, err, "pending", "cooling_off");
    ck_assert_str_eq(r->pending->id, erase_id);
    ck_assert_int_eq(r->pending->effective_at_ms, erase_due);
    e2e_free(r);
    ck_assert_int_eq(login(fresh, "chat.qingyu"), VEIL_OK);

    /* the owner's phone shows both, and the access log names them */
    Veil__Gateway__ListPendingResponse *pl = pending(fresh);
    ck_assert_uint_eq(pl->n_pending, 2);
    ck_assert_str_eq(pl->pending[0]->action, "revoke_device");
    ck_assert_str_eq(pl->pending[1]->action, "erase");
    ck_assert_str_eq(pl->pending[1]->requested_by, old->device_id);
    e2e_free(pl);
    Veil__Gateway__AccessLogResponse *log = access_log(fresh);
    ck_assert_ptr_nonnull(find(log, "device_revoke_requested", NULL));
    ck_assert_ptr_nonnull(find(log, "erase_requested", NULL));
    e2e_free(log);

    /* the owner's freshly proofed phone outranks the stolen one: revoked at once */
    r = revoke_device(fresh, old->device_id, &err);
    expect_status(r, err, "done", "outranks");
    e2e_free(r);
    ck_assert_int_eq(login(old, "chat.qingyu"), VEIL_ERR_DENIED);
    /* and the thief's requests went with the stolen phone */
    pl = pending(fresh);
    ck_assert_uint_eq(pl->n_pending, 0);
    e2e_free(pl);

    /* after the cooling-off the stolen phone cannot confirm anything */
    wait_until(erase_due);
    r = erase(old, &err);
    ck_assert_int_eq(err, VEIL_ERR_DENIED);
    e2e_free(r);
    r = revoke_device(old, fresh->device_id, &err);
    ck_assert_int_eq(err, VEIL_ERR_DENIED);
    e2e_free(r);
    ck_assert_int_eq(login(fresh, "chat.qingyu"), VEIL_OK);
    vw_wallet_free(old);
    vw_wallet_free(fresh);
}
END_TEST

START_TEST(test_another_device_cancels)
{
    char id[19];
    e2e_id_number("44030519850505777", id);
    /* two phones, neither proofed recently; the tablet a little later than the phone */
    vw_wallet *phone1 = phone(id, "郑敏", LONG_AGO_MS);
    vw_wallet *tablet = phone(id, "郑敏", LONG_AGO_MS - 10000);
    veil_err err;

    /* the phone (outranked by the tablet, not fresh) asks to erase and to revoke the tablet */
    Veil__Gateway__StepUpResult *r = erase(phone1, &err);
    expect_status(r, err, "pending", "cooling_off");
    int64_t due = r->pending->effective_at_ms;
    e2e_free(r);
    r = revoke_device(phone1, tablet->device_id, &err);
    expect_status(r, err, "pending", "cooling_off");
    e2e_free(r);

    /* the tablet cancels both */
    Veil__Gateway__CancelPendingPayload cp = VEIL__GATEWAY__CANCEL_PENDING_PAYLOAD__INIT;
    Veil__Gateway__CancelPendingResponse *cr;
    veil_status st;
    ck_assert_int_eq(e2e_citizen(&S, tablet, "CancelPending", &cp.base, &cr, &st), VEIL_OK);
    ck_assert_uint_eq(cr->cancelled, 2);
    e2e_free(cr);
    /* an unknown id is not found; a malformed one is refused */
    cp.id = "00000000000000000000000000000000";
    ck_assert_int_eq(e2e_citizen(&S, tablet, "CancelPending", &cp.base, &cr, &st),
                     VEIL_ERR_NOT_FOUND);
    ck_assert_str_eq(st.message, "id: no such pending action");
    cp.id = "not-an-id";
    ck_assert_int_eq(e2e_citizen(&S, tablet, "CancelPending", &cp.base, &cr, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "id must be 32 lowercase hex characters");

    /* after the period, asking again starts a new cooling-off: nothing was erased */
    wait_until(due);
    r = erase(phone1, &err);
    expect_status(r, err, "pending", "cooling_off");
    ck_assert_int_gt(r->pending->effective_at_ms, due);
    e2e_free(r);
    ck_assert_int_eq(login(phone1, "news.xinwen"), VEIL_OK);
    Veil__Gateway__AccessLogResponse *log = access_log(tablet);
    ck_assert_ptr_nonnull(find(log, "pending_cancelled", NULL));
    e2e_free(log);

    /* the tablet outranks the phone: it revokes it at once; the reverse needed the wait */
    r = revoke_device(tablet, phone1->device_id, &err);
    expect_status(r, err, "done", "outranks");
    e2e_free(r);
    /* revoking oneself never needs a step-up */
    r = revoke_device(tablet, "", &err);
    expect_status(r, err, "done", "own_device");
    e2e_free(r);
    ck_assert_int_eq(login(tablet, "news.xinwen"), VEIL_ERR_DENIED);
    vw_wallet_free(phone1);
    vw_wallet_free(tablet);
}
END_TEST

START_TEST(test_owner_erases_after_the_cooling_off)
{
    char id[19];
    e2e_id_number("51010719900909888", id);
    vw_wallet *w = phone(id, "何丽", LONG_AGO_MS);
    veil_err err;
    Veil__Gateway__StepUpResult *r = erase(w, &err);
    expect_status(r, err, "pending", "cooling_off");
    int64_t due = r->pending->effective_at_ms;
    e2e_free(r);
    ck_assert_int_eq(login(w, "shop.jiale"), VEIL_OK);
    wait_until(due);
    r = erase(w, &err);
    expect_status(r, err, "done", "cooling_off_over");
    e2e_free(r);
    err = login(w, "shop.jiale");
    ck_assert(err == VEIL_ERR_UNAUTHENTICATED || err == VEIL_ERR_DENIED);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_owner_erases_after_reproofing)
{
    char id[19];
    e2e_id_number("32058319770303222", id);
    vw_wallet *w = phone(id, "蒋华", LONG_AGO_MS);
    veil_err err;
    Veil__Gateway__StepUpResult *r = erase(w, &err);
    expect_status(r, err, "pending", "cooling_off");
    e2e_free(r);
    /* ID card and face again on this phone: the pending request is cancelled ... */
    reproof(w, id, "蒋华");
    Veil__Gateway__ListPendingResponse *pl = pending(w);
    ck_assert_uint_eq(pl->n_pending, 0);
    e2e_free(pl);
    Veil__Gateway__AccessLogResponse *log = access_log(w);
    const Veil__Gateway__AccessLogEntry *e = find(log, "pending_cancelled", NULL);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->purpose, "re-proofing");
    e2e_free(log);
    /* ... and the erasure happens at once */
    r = erase(w, &err);
    expect_status(r, err, "done", "fresh_proofing");
    e2e_free(r);
    err = login(w, "shop.jiale");
    ck_assert(err == VEIL_ERR_UNAUTHENTICATED || err == VEIL_ERR_DENIED);
    vw_wallet_free(w);
}
END_TEST

START_TEST(test_owner_revokes_after_the_cooling_off)
{
    char id[19];
    e2e_id_number("37020219830707444", id);
    /* the owner's old phone, and a tablet proofed after it (now stolen) */
    vw_wallet *phone1 = phone(id, "孔亮", LONG_AGO_MS);
    vw_wallet *tablet = phone(id, "孔亮", LONG_AGO_MS - 10000);
    veil_err err;
    Veil__Gateway__StepUpResult *r = revoke_device(phone1, tablet->device_id, &err);
    expect_status(r, err, "pending", "cooling_off");
    int64_t due = r->pending->effective_at_ms;
    e2e_free(r);
    ck_assert_int_eq(login(tablet, "news.xinwen"), VEIL_OK);
    /* nobody cancels: after the period the owner's phone confirms */
    wait_until(due);
    r = revoke_device(phone1, tablet->device_id, &err);
    expect_status(r, err, "done", "cooling_off_over");
    e2e_free(r);
    ck_assert_int_eq(login(tablet, "news.xinwen"), VEIL_ERR_DENIED);
    ck_assert_int_eq(login(phone1, "news.xinwen"), VEIL_OK);
    vw_wallet_free(phone1);
    vw_wallet_free(tablet);
}
END_TEST

/* The checkpoint verifies with the key the wallet API publishes. */
static void expect_signed_checkpoint(const vw_wallet *w, const Veil__Gateway__AccessLogResponse *r)
{
    Veil__Empty req = VEIL__EMPTY__INIT;
    Veil__Gateway__WalletKeysResponse *keys;
    veil_status st;
    ck_assert_int_eq(
        e2e_call(&S, "none", &veil__gateway__wallet__descriptor, "GetKeys", &req.base, &keys, &st),
        VEIL_OK);
    ck_assert_uint_eq(keys->checkpoint_public_key.len, 32);
    const Veil__Gateway__AccessCheckpoint *cp = r->checkpoint;
    ck_assert_ptr_nonnull(cp);
    ck_assert_str_eq(cp->web_number, w->web_number);
    ck_assert_int_eq(cp->seq, r->entries[r->n_entries - 1]->seq);
    ck_assert_uint_eq(cp->head.len, 32);
    ck_assert_mem_eq(cp->head.data, r->entries[r->n_entries - 1]->chain.data, 32);
    veil_buf b = {0};
    veil_checkpoint_bytes(&b, cp->web_number, cp->seq, cp->head.data, cp->at_ms, cp->retention_ms);
    ck_assert_int_eq(crypto_sign_verify_detached(cp->signature.data, b.data, b.len,
                                                 keys->checkpoint_public_key.data),
                     0);
    veil_buf_free(&b);
    e2e_free(keys);
}

START_TEST(test_access_log_records_every_access_and_change)
{
    char id[19];
    e2e_id_number("42010619920202666", id);
    vw_wallet *a = phone(id, "程刚", LONG_AGO_MS);
    const char *attrs[] = {"full_name", "province"};
    e2e_grant_for(&S, a, "gov.tax", attrs, 2, "annual return");
    Veil__Gateway__CompleteLoginResponse *lr;
    veil_status st;
    ck_assert_int_eq(e2e_login(&S, "gov.tax", a, attrs, 2, &lr, &st), VEIL_OK);
    e2e_free(lr);
    const char *const province[] = {"province"};
    e2e_withdraw(&S, a, "gov.tax", province, 1);
    /* a second device, revoked from the first (which it does not outrank) */
    vw_wallet *b = phone(id, "程刚", LONG_AGO_MS + 1000);
    veil_err err;
    Veil__Gateway__StepUpResult *r = revoke_device(a, b->device_id, &err);
    expect_status(r, err, "done", "outranks");
    e2e_free(r);
    /* an admin suspends and reinstates the identity, saying why */
    e2e_set_identity(&S, a, "suspended", "court order 2026-117");
    e2e_set_identity(&S, a, "active", "order lifted");
    /* an app unlinked; an erasure asked for (pending) */
    e2e_unlink(&S, a, "gov.tax");
    r = erase(a, &err);
    expect_status(r, err, "pending", "cooling_off");
    e2e_free(r);

    Veil__Gateway__AccessLogResponse *log = access_log(a);
    size_t at = 0;
    const Veil__Gateway__AccessLogEntry *e = find(log, "device_added", &at);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->detail, a->device_id);
    e = find(log, "consent_granted", &at);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->app_id, "gov.tax");
    ck_assert_uint_eq(e->n_attributes, 2);
    ck_assert_str_eq(e->purpose, "annual return");
    ck_assert_ptr_nonnull(find(log, "ticket_verified", &at));
    e = find(log, "attributes_released", &at);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->n_attributes, 2);
    e = find(log, "consent_withdrawn", &at);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->n_attributes, 1);
    ck_assert_str_eq(e->attributes[0], "province");
    e = find(log, "device_added", &at);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->detail, b->device_id);
    e = find(log, "device_revoked", &at);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->detail, b->device_id);
    for (int k = 0; k < 2; k++) {
        e = find(log, "admin_lookup", &at);
        ck_assert_ptr_nonnull(e);
        ck_assert_str_eq(e->actor, "admin/ops");
        ck_assert_str_eq(e->purpose, k ? "order lifted" : "court order 2026-117");
        ck_assert_str_eq(e->detail, "set_identity_state");
        e = find(log, "identity_state_set", &at);
        ck_assert_ptr_nonnull(e);
        ck_assert_str_eq(e->actor, "admin/ops");
        ck_assert_str_eq(e->detail, k ? "active" : "suspended");
        ck_assert_str_eq(e->purpose, k ? "order lifted" : "court order 2026-117");
    }
    e = find(log, "app_unlinked", &at);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->app_id, "gov.tax");
    ck_assert_ptr_nonnull(find(log, "erase_requested", &at));
    /* a chain the vault checked, ending where its signed checkpoint says */
    for (size_t i = 0; i < log->n_entries; i++)
        ck_assert_int_eq(log->entries[i]->seq, (int64_t)i + 1);
    expect_signed_checkpoint(a, log);
    e2e_free(log);
    vw_wallet_free(a);
    vw_wallet_free(b);
}
END_TEST

START_TEST(test_step_up_bad_input)
{
    char id[19];
    e2e_id_number("61010319880808555", id);
    vw_wallet *w = phone(id, "贺军", LONG_AGO_MS);
    veil_err err;
    veil_status st;
    Veil__Gateway__RevokeDevicePayload p = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    Veil__Gateway__StepUpResult *r;
    p.device_id = "XYZ";
    ck_assert_int_eq(e2e_citizen(&S, w, "RevokeDevice", &p.base, &r, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "target_device_id must be 32 lowercase hex characters");
    /* another citizen's device, or none, is not found (and nothing becomes pending) */
    p.device_id = "0123456789abcdef0123456789abcdef";
    ck_assert_int_eq(e2e_citizen(&S, w, "RevokeDevice", &p.base, &r, &st), VEIL_ERR_NOT_FOUND);
    ck_assert_str_eq(st.message, "target_device_id: device not found");
    Veil__Gateway__ListPendingResponse *pl = pending(w);
    ck_assert_uint_eq(pl->n_pending, 0);
    e2e_free(pl);
    /* the erase confirmation is still checked before any step-up */
    Veil__Gateway__ErasePayload ep = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    ep.confirm = "yes";
    ck_assert_int_eq(e2e_citizen(&S, w, "Erase", &ep.base, &r, &st), VEIL_ERR_PRECONDITION);
    pl = pending(w);
    ck_assert_uint_eq(pl->n_pending, 0);
    e2e_free(pl);
    (void)err;
    vw_wallet_free(w);
}
END_TEST

/* What only the gateway may send the vault, malformed. */
START_TEST(test_vault_bad_input)
{
    veil_channel *ch = h_channel(S.vault.addr, "svc/gateway", &veil__vault__vault__descriptor);
    veil_status st;
    Veil__Empty *empty;
    unsigned char subject[32];
    randombytes_buf(subject, sizeof subject);
    Veil__Vault__AppendAccessLogRequest a = VEIL__VAULT__APPEND_ACCESS_LOG_REQUEST__INIT;
    a.subject_ref.data = subject;
    a.subject_ref.len = sizeof subject;
    /* an entry only the vault writes (a login) cannot be forged through AppendAccessLog */
    a.action = "ticket_verified";
    ck_assert_int_eq(veil_channel_call(ch, "AppendAccessLog", &a.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "action is not one the gateway records");
    a.action = "consent_granted";
    char *attrs[] = {"shoe_size"};
    a.attributes = attrs;
    a.n_attributes = 1;
    ck_assert_int_eq(veil_channel_call(ch, "AppendAccessLog", &a.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "attributes[0] is not a known attribute");
    a.n_attributes = 0;
    a.app_id = "NOT AN APP";
    ck_assert_int_eq(veil_channel_call(ch, "AppendAccessLog", &a.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "app_id is not a valid app id");
    a.app_id = "gov.tax";
    ck_assert_int_eq(veil_channel_call(ch, "AppendAccessLog", &a.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_NOT_FOUND);
    ck_assert_str_eq(st.message, "subject not found");

    /* a look-up must say who looks up */
    Veil__Vault__LookupWebNumberRequest l = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
    Veil__Vault__LookupWebNumberResponse *lr;
    char wn[VEIL_WEB_NUMBER_LEN + 1];
    veil_web_number_new(wn);
    l.web_number = wn;
    ck_assert_int_eq(veil_channel_call(ch, "LookupWebNumber", &l.base, NULL, 5000, &lr, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "admin must be 1 to 160 bytes of printable UTF-8");

    Veil__Vault__StepUpRequest su = VEIL__VAULT__STEP_UP_REQUEST__INIT;
    Veil__Vault__StepUpResponse *sr;
    su.subject_ref = a.subject_ref;
    su.action = "delete_everything";
    su.device_id = "0123456789abcdef0123456789abcdef";
    ck_assert_int_eq(veil_channel_call(ch, "StepUp", &su.base, NULL, 5000, &sr, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "action must be erase or revoke_device");
    su.action = "erase";
    su.target_device_id = "0123456789abcdef0123456789abcdef";
    ck_assert_int_eq(veil_channel_call(ch, "StepUp", &su.base, NULL, 5000, &sr, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "target_device_id is for revoke_device only");
    su.target_device_id = "";
    ck_assert_int_eq(veil_channel_call(ch, "StepUp", &su.base, NULL, 5000, &sr, &st),
                     VEIL_ERR_NOT_FOUND);
    ck_assert_str_eq(st.message, "device_id: device not found");
    veil_channel_free(ch);
}
END_TEST

static void logins(const vw_wallet *w, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(login(w, "chat.lianxin"), VEIL_OK);
}

/*
 * The wallet's checkpoint across a dropped partition: entries older than the
 * signed retention period may go from the start of the log (check_veilctl's
 * checkpoint tests show that without retention any missing entry is
 * tampering).  Last in the suite: retention drops every citizen's old entries.
 */
START_TEST(test_checkpoint_across_retention)
{
    char id[19];
    e2e_id_number("11010819760606321", id);
    vw_wallet *w = phone(id, "田园", 0);
    logins(w, 2);
    Veil__Gateway__AccessLogResponse *log = access_log(w);
    ck_assert_int_eq(log->checkpoint->retention_ms, 1000);
    vw_log_check chk;
    vw_checkpoint_check(w, log, &chk);
    ck_assert_str_eq(chk.status, "first_read");
    vw_checkpoint_keep(w, log);
    int64_t anchored = log->checkpoint->seq;
    e2e_free(log);

    /* the first run moves the rows into one-second partitions; the next drops the old ones */
    ck_assert_int_eq(h_stack_command(&S, H_VAULT, "access-log-retention"), 0);
    struct timespec ts = {2, 200 * 1000000L};
    nanosleep(&ts, NULL);
    logins(w, 2);
    ck_assert_int_eq(h_stack_command(&S, H_VAULT, "access-log-retention"), 0);
    log = access_log(w);
    ck_assert_int_gt(log->entries[0]->seq, anchored); /* the anchored entry is gone */
    vw_checkpoint_check(w, log, &chk);
    ck_assert_msg(!strcmp(chk.status, "pruned") && chk.ok, "%s: %s", chk.status, chk.message);
    vw_checkpoint_keep(w, log);
    e2e_free(log);

    vw_wallet_free(w);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_stolen_old_phone_cannot_erase_or_revoke,
                                  test_another_device_cancels,
                                  test_owner_erases_after_the_cooling_off,
                                  test_owner_erases_after_reproofing,
                                  test_owner_revokes_after_the_cooling_off,
                                  test_access_log_records_every_access_and_change,
                                  test_step_up_bad_input,
                                  test_vault_bad_input,
                                  test_checkpoint_across_retention /* last: drops old entries */,
                                  NULL};
    const h_case cases[] = {{"lifecycle", 300, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("lifecycle", cases));
}
