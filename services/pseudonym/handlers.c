/*
 * handlers.c - the pseudonym service's RPCs.  Only the gateway may call
 * them (the policy below); Derive is a few microseconds of hashing and runs
 * on the completion-queue thread, DeriveBatch goes to a worker.
 */
#include <string.h>

#include "pseudonym.h"
#include "veil/formats.h"

static struct pseudonym *self(Veil__Pseudonym__Pseudonym_Service *svc)
{
    return (struct pseudonym *)svc;
}

/*
 * The key of a requested version, loading new key files on a miss.  The
 * caller always names the version (the gateway's key_state): this service
 * has no default, so a new key file can never change a pseudonym by itself.
 */
static veil_err key_for(struct pseudonym *p, veil_call *call, uint32_t version,
                        const veil_key **out)
{
    char err[256];
    *out = NULL;
    if (version == 0) {
        veil_call_fail(call, VEIL_ERR_INVALID, "key_version is required");
        return VEIL_ERR_INVALID;
    }
    *out = veil_keyring_get(p->keys, version);
    if (!*out && veil_keyring_refresh(p->keys, err, sizeof err) == VEIL_OK)
        *out = veil_keyring_get(p->keys, version);
    if (!*out) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION, "pseudonym key version %u is not loaded",
                       version);
        return VEIL_ERR_PRECONDITION;
    }
    return VEIL_OK;
}

/* The current key and, when the caller names one (previous != 0), the previous; else *kp NULL. */
static veil_err keys_for(struct pseudonym *p, veil_call *call, uint32_t current, uint32_t previous,
                         const veil_key **kc, const veil_key **kp)
{
    *kp = NULL;
    veil_err err = key_for(p, call, current, kc);
    if (!err && previous)
        err = key_for(p, call, previous, kp);
    return err;
}

/* A subject's pseudonym in a sector under kc, and under kp into prev when there is one. */
static void derive(const veil_key *kc, const veil_key *kp, const ProtobufCBinaryData *subject,
                   const char *sector, uint32_t epoch, char *cur, char *prev)
{
    pseudonym_compute(kc, subject->data, sector, epoch, cur);
    if (kp)
        pseudonym_compute(kp, subject->data, sector, epoch, prev);
}

static veil_err check_item(veil_call *call, const ProtobufCBinaryData *subject, const char *sector)
{
    if (subject->len != PSEUDONYM_SUBJECT_BYTES) {
        veil_call_fail(call, VEIL_ERR_INVALID, "subject_ref must be %d bytes",
                       PSEUDONYM_SUBJECT_BYTES);
        return VEIL_ERR_INVALID;
    }
    if (!veil_ident_valid(sector)) {
        veil_call_fail(call, VEIL_ERR_INVALID, "sector_id is not a valid identifier");
        return VEIL_ERR_INVALID;
    }
    return VEIL_OK;
}

static void pseudonym_derive(Veil__Pseudonym__Pseudonym_Service *svc,
                                 const Veil__Pseudonym__DeriveRequest *req,
                                 Veil__Pseudonym__DeriveResponse_Closure done, void *call)
{
    Veil__Pseudonym__DeriveResponse resp = VEIL__PSEUDONYM__DERIVE_RESPONSE__INIT;
    char cur[PSEUDONYM_MAX_LEN], prev[PSEUDONYM_MAX_LEN];
    const veil_key *kc, *kp;
    veil_err err = check_item(call, &req->subject_ref, req->sector_id);
    if (!err)
        err = keys_for(self(svc), call, req->key_version, req->previous_key_version, &kc, &kp);
    if (!err) {
        derive(kc, kp, &req->subject_ref, req->sector_id, req->link_epoch, cur, prev);
        resp.pseudonym = cur;
        if (kp)
            resp.previous_pseudonym = prev;
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void pseudonym_derive_batch(Veil__Pseudonym__Pseudonym_Service *svc,
                                   const Veil__Pseudonym__DeriveBatchRequest *req,
                                   Veil__Pseudonym__DeriveBatchResponse_Closure done, void *call)
{
    Veil__Pseudonym__DeriveBatchResponse resp = VEIL__PSEUDONYM__DERIVE_BATCH_RESPONSE__INIT;
    const veil_key *kc, *kp = NULL;
    veil_err err = VEIL_OK;
    size_t n = req->n_items;

    if (n == 0 || n > PSEUDONYM_BATCH_MAX) {
        veil_call_fail(call, VEIL_ERR_INVALID, "items must hold 1 to %d entries",
                       PSEUDONYM_BATCH_MAX);
        err = VEIL_ERR_INVALID;
    }
    for (size_t i = 0; !err && i < n; i++)
        err = check_item(call, &req->items[i]->subject_ref, req->items[i]->sector_id);
    if (!err)
        err = keys_for(self(svc), call, req->key_version, req->previous_key_version, &kc, &kp);
    if (!err) {
        /* One arena block for all strings: n pseudonyms, twice during a rotation. */
        size_t per = kp ? 2 : 1;
        char *text = veil_call_alloc(call, n * per * PSEUDONYM_MAX_LEN);
        char **cur = veil_call_alloc(call, n * sizeof *cur);
        char **prev = kp ? veil_call_alloc(call, n * sizeof *prev) : NULL;
        if (!text || !cur || (kp && !prev)) {
            err = VEIL_ERR_NOMEM;
        } else {
            for (size_t i = 0; i < n; i++) {
                const Veil__Pseudonym__DeriveItem *it = req->items[i];
                cur[i] = text + i * per * PSEUDONYM_MAX_LEN;
                if (kp)
                    prev[i] = cur[i] + PSEUDONYM_MAX_LEN;
                derive(kc, kp, &it->subject_ref, it->sector_id, it->link_epoch, cur[i],
                       kp ? prev[i] : NULL);
            }
            resp.n_pseudonyms = n;
            resp.pseudonyms = cur;
            resp.n_previous_pseudonyms = kp ? n : 0;
            resp.previous_pseudonyms = prev;
        }
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void pseudonym_key_versions(Veil__Pseudonym__Pseudonym_Service *svc,
                                   const Veil__Pseudonym__KeyVersionsRequest *req,
                                   Veil__Pseudonym__KeyVersionsResponse_Closure done, void *call)
{
    Veil__Pseudonym__KeyVersionsResponse resp = VEIL__PSEUDONYM__KEY_VERSIONS_RESPONSE__INIT;
    uint32_t v[VEIL_KEYRING_MAX];
    resp.n_loaded = veil_keyring_versions(self(svc)->keys, v, VEIL_KEYRING_MAX);
    resp.loaded = v;
    VEIL_REPLY(done, call, VEIL_OK, &resp);
}

const Veil__Pseudonym__Pseudonym_Service pseudonym_rpc = VEIL__PSEUDONYM__PSEUDONYM__INIT(pseudonym_);

const veil_method_policy pseudonym_policy[] = {
    {"Derive", VEIL_PEER_GATEWAY, VEIL_EXEC_INLINE},
    {"DeriveBatch", VEIL_PEER_GATEWAY, VEIL_EXEC_WORKER},
    {"KeyVersions", VEIL_PEER_GATEWAY, VEIL_EXEC_INLINE},
};
const size_t pseudonym_policy_len = sizeof pseudonym_policy / sizeof pseudonym_policy[0];
