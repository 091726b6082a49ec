/*
 * stepup.c - what a stolen phone must not be able to do alone: erase the
 * identity, or revoke another device of the citizen (docs/vault.md,
 * "Step-up"; docs/citizen-guide.md, "When your phone is stolen").
 *
 * A device's rank is the time of the proofing (ID card and face) that last
 * bound it: the attestation of the enrolment that added it, or of a later
 * enrolment from the same phone.  An action is allowed at once when
 *   - the device revokes itself,
 *   - the device outranks the device it revokes (proofed more recently),
 *   - the device was proofed within VAULT_STEPUP_FRESH_S (a re-proofing),
 * and otherwise is recorded as pending for VAULT_COOLING_OFF_S, visible to
 * every device of the citizen (Wallet ListPending) and in the access log.
 * Any device of the citizen or a re-proofing cancels it; revoking the
 * requesting device drops it; after the period the requesting device
 * confirms it by asking again.
 */
#include <string.h>
#include <sodium.h>

#include "veil/log.h"
#include "vault.h"

static veil_err fail(veil_call *call, veil_err err, const char *msg)
{
    veil_call_fail(call, err, "%s", msg);
    return err;
}

/* An active device of the subject, or the call fails as the request would. */
static veil_err own_device(vault_conn *c, veil_call *call, const unsigned char *subject,
                           const unsigned char id[VEIL_DEVICE_ID_BYTES], const char *field,
                           struct vault_rank *r)
{
    veil_err err = vault_store_device_rank(c, id, r);
    if (err == VEIL_ERR_NOT_FOUND ||
        (!err && sodium_memcmp(r->subject, subject, VAULT_SUBJECT_BYTES) != 0)) {
        veil_call_fail(call, VEIL_ERR_NOT_FOUND, "%s: device not found", field);
        return VEIL_ERR_NOT_FOUND;
    }
    return err;
}

static Veil__Vault__PendingAction *pending_message(veil_call *call, const struct vault_pending *p)
{
    Veil__Vault__PendingAction *m = veil_call_alloc(call, sizeof *m);
    char id[33], target[33], by[33];
    if (!m)
        return NULL;
    veil__vault__pending_action__init(m);
    veil_device_id_text(p->id, id);
    veil_device_id_text(p->requested_by, by);
    if (p->has_target)
        veil_device_id_text(p->target, target);
    else
        target[0] = '\0';
    if (!(m->id = veil_call_strdup(call, id)) || !(m->action = veil_call_strdup(call, p->action)) ||
        !(m->target_device_id = veil_call_strdup(call, target)) ||
        !(m->requested_by = veil_call_strdup(call, by)))
        return NULL;
    m->requested_at_ms = p->requested_at_ms;
    m->effective_at_ms = p->effective_at_ms;
    return m;
}

/* Why the action may happen now, or NULL when it must wait. */
static const char *allowed_now(const struct vault *v, const unsigned char *by,
                               const struct vault_rank *me, const unsigned char *target,
                               const struct vault_rank *them)
{
    if (target && memcmp(target, by, VEIL_DEVICE_ID_BYTES) == 0)
        return "own_device";
    if (target && them->revoked)
        return "already_revoked";
    if (target && me->proofed_at_ms > them->proofed_at_ms)
        return "outranks";
    if (veil_now_ms() - me->proofed_at_ms <= v->cfg.stepup_fresh_ms)
        return "fresh_proofing";
    return NULL;
}

/* Records a new pending action and its access-log entry, in one transaction. */
static veil_err start_pending(struct vault *v, vault_conn *c, const unsigned char *subject,
                              struct vault_pending *p)
{
    char target[33] = "";
    if (p->has_target)
        veil_device_id_text(p->target, target);
    struct vault_entry e = {
        .action = p->has_target ? "device_revoke_requested" : "erase_requested",
        .purpose = "waiting for the cooling-off period",
        .detail = target,
    };
    randombytes_buf(p->id, sizeof p->id);
    veil_err err = vault_store_begin(c);
    if (err)
        return err;
    if (!(err = vault_store_pending_insert(c, subject, p, v->cfg.cooling_off_ms)) &&
        !(err = vault_access_record(v, c, subject, &e, 1)))
        err = vault_store_commit(c);
    if (err)
        vault_store_rollback(c);
    return err;
}

veil_err vault_stepup(struct vault *v, veil_call *call, const Veil__Vault__StepUpRequest *req,
                      Veil__Vault__StepUpResponse *resp)
{
    unsigned char by[VEIL_DEVICE_ID_BYTES], target[VEIL_DEVICE_ID_BYTES];
    struct vault_rank me, them = {0};
    const unsigned char *subject = req->subject_ref.data;
    int revoke = strcmp(req->action, "revoke_device") == 0, due = 0;
    vault_conn *c;
    veil_err err;

    if (req->subject_ref.len != VAULT_SUBJECT_BYTES)
        return fail(call, VEIL_ERR_INVALID, "subject_ref must be 32 bytes");
    if (!revoke && strcmp(req->action, "erase") != 0)
        return fail(call, VEIL_ERR_INVALID, "action must be erase or revoke_device");
    if (veil_device_id_parse(req->device_id, by) != 0)
        return fail(call, VEIL_ERR_INVALID, "device_id must be 32 lowercase hex characters");
    if (revoke && veil_device_id_parse(req->target_device_id, target) != 0)
        return fail(call, VEIL_ERR_INVALID, "target_device_id must be 32 lowercase hex characters");
    if (!revoke && req->target_device_id[0])
        return fail(call, VEIL_ERR_INVALID, "target_device_id is for revoke_device only");
    if ((err = vault_store_conn(v->store, &c)) ||
        (err = own_device(c, call, subject, by, "device_id", &me)) ||
        (revoke && (err = own_device(c, call, subject, target, "target_device_id", &them))))
        return err;
    if (me.revoked)
        return fail(call, VEIL_ERR_DENIED, "device revoked");

    const unsigned char *t = revoke ? target : NULL;
    struct vault_pending p = {.action = req->action, .has_target = revoke};
    memcpy(p.requested_by, by, sizeof by);
    if (revoke)
        memcpy(p.target, target, sizeof target);
    const char *why = allowed_now(v, by, &me, t, &them);
    if (!why) {
        err = vault_store_pending_find(c, by, req->action, t, &p, &due);
        if (!err && due)
            why = "cooling_off_over";
        else if (err == VEIL_ERR_NOT_FOUND)
            err = start_pending(v, c, subject, &p);
        if (err == VEIL_ERR_ABORTED) /* the same request twice at once: the other recorded it */
            err = vault_store_pending_find(c, by, req->action, t, &p, &due);
        if (err)
            return err;
    }
    if (why) {
        /* Done now: a pending copy of the same request has served its purpose. */
        if ((err = vault_store_pending_delete(c, by, req->action, t)))
            return err;
        resp->allowed = 1;
        resp->reason = (char *)why;
        veil_log(VEIL_LOG_INFO, "step-up passed", VL_STR("action", req->action),
                 VL_STR("reason", why), VL_END);
        return VEIL_OK;
    }
    resp->reason = "cooling_off";
    if (!(resp->pending = pending_message(call, &p)))
        return VEIL_ERR_NOMEM;
    veil_log(VEIL_LOG_INFO, "step-up pending", VL_STR("action", req->action), VL_END);
    return VEIL_OK;
}

struct pending_list {
    veil_call *call;
    size_t n, cap;
    Veil__Vault__PendingAction **items;
};

static veil_err add_pending(void *ctx, const struct vault_pending *p)
{
    struct pending_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        Veil__Vault__PendingAction **grown = veil_call_array(l->call, cap, sizeof *grown);
        if (!grown)
            return VEIL_ERR_NOMEM;
        if (l->n)
            memcpy(grown, l->items, l->n * sizeof *grown);
        l->items = grown;
        l->cap = cap;
    }
    if (!(l->items[l->n] = pending_message(l->call, p)))
        return VEIL_ERR_NOMEM;
    l->n++;
    return VEIL_OK;
}

veil_err vault_pending_list(struct vault *v, veil_call *call,
                            const unsigned char subject[VAULT_SUBJECT_BYTES],
                            Veil__Vault__ListPendingResponse *resp)
{
    struct pending_list l = {.call = call};
    vault_conn *c;
    veil_err err = vault_store_conn(v->store, &c);
    if (!err)
        err = vault_store_pending_list(c, subject, add_pending, &l);
    if (!err) {
        resp->pending = l.items;
        resp->n_pending = l.n;
    }
    return err;
}

veil_err vault_pending_cancel(struct vault *v, veil_call *call,
                              const Veil__Vault__CancelPendingRequest *req, unsigned *cancelled)
{
    unsigned char by[VEIL_DEVICE_ID_BYTES], id[VEIL_DEVICE_ID_BYTES];
    struct vault_rank me;
    const unsigned char *subject = req->subject_ref.data;
    vault_conn *c;
    veil_err err;
    char who[33];
    *cancelled = 0;
    if (req->subject_ref.len != VAULT_SUBJECT_BYTES)
        return fail(call, VEIL_ERR_INVALID, "subject_ref must be 32 bytes");
    if (veil_device_id_parse(req->device_id, by) != 0)
        return fail(call, VEIL_ERR_INVALID, "device_id must be 32 lowercase hex characters");
    if (req->id[0] && veil_device_id_parse(req->id, id) != 0)
        return fail(call, VEIL_ERR_INVALID, "id must be 32 lowercase hex characters");
    if ((err = vault_store_conn(v->store, &c)) ||
        (err = own_device(c, call, subject, by, "device_id", &me)))
        return err;
    if (me.revoked)
        return fail(call, VEIL_ERR_DENIED, "device revoked");
    if ((err = vault_store_begin(c)))
        return err;
    err = vault_store_pending_cancel(c, subject, req->id[0] ? id : NULL, cancelled);
    veil_device_id_text(by, who);
    struct vault_entry e = {
        .action = "pending_cancelled", .purpose = "cancelled by a device", .detail = who};
    if (!err && *cancelled)
        err = vault_access_record(v, c, subject, &e, 1);
    if (!err)
        err = vault_store_commit(c);
    if (err) {
        vault_store_rollback(c);
        *cancelled = 0;
    }
    if (!err && req->id[0] && !*cancelled)
        return fail(call, VEIL_ERR_NOT_FOUND, "id: no such pending action");
    return err;
}
