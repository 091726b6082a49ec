/*
 * hops.c - the login's internal hops, batched (issue 15 levers 1 and 2).
 *
 * Every door's login (gw_login_start) makes three hops that every other login
 * makes too: the challenge is consumed in the gateway's database, the vault
 * verifies the ticket, and at the end the pseudonym service derives the
 * pseudonym while the vault releases the granted attributes; before it,
 * BeginLogin (and the OpenID Connect door's login request) stores the
 * challenge in the gateway's database, a fourth hop.  A login whose
 * revocation verdict or consent the gateway's cache does not hold makes one
 * or two more: revocation's Authorize and consent's Check.  Each hop has a
 * batcher (veil/batch.h) with a thread of its own: the logins waiting for a
 * hop at one moment go as one statement or one batched call (DeriveBatch,
 * VerifyTicketBatch, ReleaseAttributesBatch, AuthorizeBatch, CheckBatch).
 * No thread waits for any of these hops, a cache miss's included: each
 * hop's item is allocated in its call's arena, and when the batch returns
 * the hop's thread runs the call's continuation (only the OpenID Connect
 * door's login request waits for its challenge, gw_put_challenge).  Each
 * login gets back exactly what its own call would have returned: its
 * reply, copied into its own call's arena, or its own status and message,
 * which its continuation turns into its call's failure under its own trace
 * (gw_downstream_failed).
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "gateway.h"
#include "store.h"
#include "veil/batch.h"
#include "veil/log.h"
#include "veil/pseudonym.pb-c.h"
#include "veil/revocation.pb-c.h"
#include "veil/vault.pb-c.h"

/* ---- replies shared by a batch: wiped when freed ---- */

/*
 * A batch's reply holds several citizens' released attributes; it lives
 * only until every item has its own copy, and is wiped when freed, as a
 * call's arena is.
 */
#define WIPE_HEADER 16

static void *wipe_alloc(void *data, size_t n)
{
    (void)data;
    unsigned char *p = malloc(WIPE_HEADER + n);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    return p + WIPE_HEADER;
}

static void wipe_free(void *data, void *ptr)
{
    (void)data;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - WIPE_HEADER;
    size_t n;
    memcpy(&n, p, sizeof n);
    sodium_memzero(ptr, n);
    free(p);
}

static ProtobufCAllocator wiping = {.alloc = wipe_alloc, .free = wipe_free};

static void batch_reply_free(void *reply)
{
    if (reply)
        protobuf_c_message_free_unpacked(reply, &wiping);
}

/* A copy of message m in call's arena (NULL when out of memory). */
static void *copy_into(veil_call *call, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    void *out = protobuf_c_message_unpack(m->descriptor, veil_call_allocator(call), len, buf);
    sodium_memzero(buf, len);
    free(buf);
    return out;
}

/* The longest budget among the calls of a batch: the batch serves them all. */
static int64_t batch_budget(struct gateway *gw, veil_call *const *calls, size_t n)
{
    int64_t budget = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t b = veil_call_budget_ms(calls[i], gw->rpc_timeout_ms);
        if (b > budget)
            budget = b;
    }
    return budget;
}

/* One item's outcome: a veil_channel_call result, decided by the batch. */
typedef struct hop_result {
    veil_err err;
    veil_status st;
} hop_result;

static void hop_fail(hop_result *r, veil_err err, const veil_status *st)
{
    r->err = err;
    r->st = *st;
}

/* A batch reply that does not answer every item: a defect of the peer. */
static void malformed_batch(hop_result *r, const char *method)
{
    static const veil_status st = {GRPC_STATUS_INTERNAL, "batch reply of the wrong size"};
    veil_log(VEIL_LOG_ERROR, "a batched call's reply does not answer each item",
             VL_STR("method", method), VL_END);
    hop_fail(r, VEIL_ERR_INTERNAL, &st);
}

static void out_of_memory(hop_result *r)
{
    static const veil_status st = {GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory"};
    hop_fail(r, VEIL_ERR_NOMEM, &st);
}

/* Where one item of a batch gets its answer. */
typedef struct item_slot {
    veil_call *call;
    void **out;     /* its reply, copied into its call's arena */
    hop_result *r;
} item_slot;

/*
 * Hands out a batch reply (VerifyTicketBatch, ReleaseAttributesBatch,
 * AuthorizeBatch, CheckBatch: `items` and `status` in the order asked) or
 * the whole call's failure (err, st): each item gets its own status,
 * exactly what its unbatched call would have returned, and on OK its own
 * copy of its reply.
 */
static void batch_answers(const char *method, veil_err err, const veil_status *st,
                          size_t n_items, void *const *items, size_t n_status,
                          Veil__ItemStatus *const *status, const item_slot *slots,
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        hop_result *r = slots[i].r;
        if (err) {
            hop_fail(r, err, st);
            continue;
        }
        if (n_items != n || n_status != n) {
            malformed_batch(r, method);
            continue;
        }
        r->err = status[i]->code ? veil_err_from_status((grpc_status_code)status[i]->code)
                                 : VEIL_OK;
        r->st.code = (grpc_status_code)status[i]->code;
        snprintf(r->st.message, sizeof r->st.message, "%s",
                 status[i]->message ? status[i]->message : "");
        if (!r->err && !(*slots[i].out = copy_into(slots[i].call, items[i])))
            out_of_memory(r);
    }
}

/* ---- the challenge ---- */

struct challenge_item {
    veil_batch_item base;
    gw_challenge_claim claim;
    gw_hop_then then;
    void *arg;
};

static void take_batch(void *ctx, veil_batch_item *const *items, size_t n)
{
    struct gateway *gw = ctx;
    gw_challenge_claim *claims[n];
    for (size_t i = 0; i < n; i++)
        claims[i] = &((struct challenge_item *)items[i])->claim;
    (void)gw_store_challenge_take(gw->store, claims, n); /* each claim has its own result */
}

static void challenge_done(veil_batch_item *item)
{
    struct challenge_item *it = (struct challenge_item *)item;
    it->then(it->arg, it->claim.err);
}

/* Submits claim to hop's batcher; then(arg, err) runs with its result. */
static void challenge_submit(struct gateway *gw, int hop, veil_call *call,
                             const gw_challenge_claim *claim, gw_hop_then then, void *arg)
{
    struct challenge_item *it = veil_call_alloc(call, sizeof *it);
    if (!it)
        return then(arg, VEIL_ERR_NOMEM);
    *it = (struct challenge_item){
        .base.done = challenge_done, .claim = *claim, .then = then, .arg = arg};
    veil_batch_submit(gw->hops[hop], &it->base);
}

void gw_take_challenge(struct gateway *gw, veil_call *call, const unsigned char challenge[32],
                       const char *app_id, gw_hop_then then, void *arg)
{
    gw_challenge_claim c = {.challenge = challenge, .app_id = app_id};
    challenge_submit(gw, GW_HOP_TAKE, call, &c, then, arg);
}

/* Fresh challenges (BeginLogin): one INSERT per batch, every item told its result. */
static void put_batch(void *ctx, veil_batch_item *const *items, size_t n)
{
    struct gateway *gw = ctx;
    gw_challenge_claim *claims[n];
    for (size_t i = 0; i < n; i++)
        claims[i] = &((struct challenge_item *)items[i])->claim;
    (void)gw_store_challenge_put(gw->store, claims, n); /* each claim has the result */
}

void gw_put_challenge_then(struct gateway *gw, veil_call *call, const unsigned char challenge[32],
                           const char *app_id, int64_t expires_at_ms, gw_hop_then then, void *arg)
{
    gw_challenge_claim c = {.challenge = challenge, .app_id = app_id, .expires_at_ms = expires_at_ms};
    challenge_submit(gw, GW_HOP_PUT, call, &c, then, arg);
}

veil_err gw_put_challenge(struct gateway *gw, const unsigned char challenge[32],
                          const char *app_id, int64_t expires_at_ms)
{
    struct challenge_item it = {
        .claim = {.challenge = challenge, .app_id = app_id, .expires_at_ms = expires_at_ms}};
    veil_batch_run(gw->hops[GW_HOP_PUT], &it.base);
    return it.claim.err;
}

void gw_hops_begin(struct gateway *gw, veil_call *call, void (*fn)(veil_call *call, void *arg),
                   void *arg)
{
    veil_call_defer(call);
    /* batching off: the hops run at once on this thread, which must then be able to block */
    if (gw->hops_alone && veil_call_resume(call, fn, arg) == 0)
        return;
    fn(call, arg);
}

/* ---- hops of one request per login: ticket, revocation, consent ---- */

/*
 * A login at a hop whose batched method takes the unbatched requests as its
 * `items` and answers with `items` and `status` (VerifyTicketBatch,
 * AuthorizeBatch, CheckBatch).
 */
struct one_item {
    veil_batch_item base;
    veil_call *call;
    ProtobufCMessage *req;
    const char *method; /* the unbatched method, named in a failure */
    void *resp;         /* in the call's arena */
    void **out;
    hop_result r;
    gw_hop_then then;
    void *arg;
};

/* The repeated message field `name` of m (its descriptor says where): count and array. */
static void **repeated(const ProtobufCMessage *m, const char *name, size_t *n)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    *n = 0;
    if (!f || f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return NULL;
    *n = *(const size_t *)((const char *)m + f->quantifier_offset);
    return *(void **const *)((const char *)m + f->offset);
}

/* The batch of n one_items as one call of method (request type desc) on ch. */
static void one_batch(struct gateway *gw, veil_channel *ch, const char *method,
                      const ProtobufCMessageDescriptor *desc, veil_batch_item *const *items,
                      size_t n)
{
    ProtobufCMessage *reqs[n];
    veil_call *calls[n];
    item_slot slots[n];
    for (size_t i = 0; i < n; i++) {
        struct one_item *it = (struct one_item *)items[i];
        reqs[i] = it->req;
        calls[i] = it->call;
        slots[i] = (item_slot){it->call, &it->resp, &it->r};
    }
    ProtobufCMessage *br = calloc(1, desc->sizeof_message), *reply = NULL;
    veil_status st = {GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory"};
    veil_err err = VEIL_ERR_NOMEM;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, "items");
    if (br && f) {
        protobuf_c_message_init(desc, br);
        *(size_t *)((char *)br + f->quantifier_offset) = n;
        *(ProtobufCMessage ***)((char *)br + f->offset) = reqs;
        err = veil_channel_call(ch, method, br, &wiping, batch_budget(gw, calls, n), &reply, &st);
    }
    size_t n_items = 0, n_status = 0;
    void **ri = reply ? repeated(reply, "items", &n_items) : NULL;
    void **rs = reply ? repeated(reply, "status", &n_status) : NULL;
    batch_answers(method, err, &st, n_items, ri, n_status, (Veil__ItemStatus *const *)rs, slots,
                  n);
    batch_reply_free(reply);
    free(br);
}

static void verify_batch(void *ctx, veil_batch_item *const *items, size_t n)
{
    struct gateway *gw = ctx;
    one_batch(gw, gw->vault, "VerifyTicketBatch",
              &veil__vault__verify_ticket_batch_request__descriptor, items, n);
}

static void one_done(veil_batch_item *item)
{
    struct one_item *it = (struct one_item *)item;
    *it->out = it->resp;
    it->then(it->arg, it->r.err ? gw_downstream_failed(it->call, it->method, it->r.err, &it->r.st)
                                : VEIL_OK);
}

/* Submits req to hop's batcher; then(arg, err) runs with the reply in *out (call's arena). */
static void one_submit(struct gateway *gw, int hop, const char *method, veil_call *call,
                       ProtobufCMessage *req, void **out, gw_hop_then then, void *arg)
{
    struct one_item *it = veil_call_alloc(call, sizeof *it);
    if (!it)
        return then(arg, VEIL_ERR_NOMEM);
    *it = (struct one_item){.base.done = one_done,
                            .call = call,
                            .req = req,
                            .method = method,
                            .out = out,
                            .then = then,
                            .arg = arg};
    veil_batch_submit(gw->hops[hop], &it->base);
}

void gw_verify_ticket(struct gateway *gw, veil_call *call, Veil__Vault__VerifyTicketRequest *req,
                      Veil__Vault__VerifyTicketResponse **out, gw_hop_then then, void *arg)
{
    one_submit(gw, GW_HOP_VERIFY, "VerifyTicket", call, &req->base, (void **)out, then, arg);
}

static void authorize_batch(void *ctx, veil_batch_item *const *items, size_t n)
{
    struct gateway *gw = ctx;
    one_batch(gw, gw->revocation, "AuthorizeBatch",
              &veil__revocation__authorize_batch_request__descriptor, items, n);
}

void gw_authorize(struct gateway *gw, veil_call *call, Veil__Revocation__StatusRequest *req,
                  Veil__Revocation__StatusResponse **out, gw_hop_then then, void *arg)
{
    one_submit(gw, GW_HOP_AUTHORIZE, "Authorize", call, &req->base, (void **)out, then, arg);
}

static void check_batch(void *ctx, veil_batch_item *const *items, size_t n)
{
    struct gateway *gw = ctx;
    one_batch(gw, gw->consent, "CheckBatch", &veil__consent__check_batch_request__descriptor,
              items, n);
}

void gw_check_consent(struct gateway *gw, veil_call *call, Veil__Consent__CheckRequest *req,
                      Veil__Consent__CheckResponse **out, gw_hop_then then, void *arg)
{
    one_submit(gw, GW_HOP_CHECK, "Check", call, &req->base, (void **)out, then, arg);
}

/* ---- the pseudonym and the release, at once ---- */

struct finish_item {
    veil_batch_item base;
    veil_call *call;
    const Veil__Pseudonym__DeriveRequest *dr;
    Veil__Vault__ReleaseAttributesRequest *ra; /* NULL: nothing to release */
    Veil__Pseudonym__DeriveResponse *p, **p_out;
    Veil__Vault__ReleaseAttributesResponse *released, **released_out;
    hop_result derive, release;
    gw_hop_then then;
    void *arg;
};

/* One DeriveBatch: the items of one key version pair (almost always all of them). */
struct derive_group {
    uint32_t kv, pkv;
    size_t n;
    struct finish_item **items;
    Veil__Pseudonym__DeriveItem **cells;
    Veil__Pseudonym__DeriveBatchRequest req;
    Veil__Pseudonym__DeriveBatchResponse *reply;
};

/* item's Derive alone, as before batching: for a batch the service refused as a whole. */
static void derive_alone(struct gateway *gw, struct finish_item *it)
{
    veil_err err = veil_channel_call(gw->pseudonym, "Derive", &it->dr->base,
                                     veil_call_allocator(it->call),
                                     veil_call_budget_ms(it->call, gw->rpc_timeout_ms), &it->p,
                                     &it->derive.st);
    it->derive.err = err;
}

/* Group g's answer for each of its items. */
static void derive_answers(struct gateway *gw, struct derive_group *g, const veil_call_one *c)
{
    const Veil__Pseudonym__DeriveBatchResponse *rep = g->reply;
    for (size_t j = 0; j < g->n; j++) {
        struct finish_item *it = g->items[j];
        if (c->err == VEIL_ERR_INVALID || c->err == VEIL_ERR_PRECONDITION) {
            /* one item's fault (or the key version's): each learns its own status */
            derive_alone(gw, it);
            continue;
        }
        if (c->err) {
            hop_fail(&it->derive, c->err, &c->st);
            continue;
        }
        if (rep->n_pseudonyms != g->n || (g->pkv && rep->n_previous_pseudonyms != g->n)) {
            malformed_batch(&it->derive, "DeriveBatch");
            continue;
        }
        Veil__Pseudonym__DeriveResponse *p = veil_call_alloc(it->call, sizeof *p);
        if (p) {
            veil__pseudonym__derive_response__init(p);
            p->pseudonym = veil_call_strdup(it->call, rep->pseudonyms[j]);
            p->previous_pseudonym =
                g->pkv ? veil_call_strdup(it->call, rep->previous_pseudonyms[j]) : "";
        }
        if (!p || !p->pseudonym || !p->previous_pseudonym)
            out_of_memory(&it->derive);
        else
            it->p = p;
    }
}

static void finish_batch(void *ctx, veil_batch_item *const *items, size_t n)
{
    struct gateway *gw = ctx;
    struct finish_item *all[n], *by_group[n];
    struct derive_group groups[n];
    Veil__Pseudonym__DeriveItem cells[n], *cellp[n];
    Veil__Vault__ReleaseAttributesRequest *ras[n];
    struct finish_item *releasing[n];
    veil_call *calls[n];
    veil_call_one one[n + 1];
    size_t n_groups = 0, n_release = 0, placed = 0;

    for (size_t i = 0; i < n; i++) {
        all[i] = (struct finish_item *)items[i];
        calls[i] = all[i]->call;
        if (all[i]->ra) {
            releasing[n_release] = all[i];
            ras[n_release++] = all[i]->ra;
        }
    }
    /* items grouped by key version pair, each group's cells contiguous */
    for (size_t i = 0; i < n; i++) {
        const Veil__Pseudonym__DeriveRequest *dr = all[i]->dr;
        size_t g = 0;
        while (g < n_groups && (groups[g].kv != dr->key_version ||
                                groups[g].pkv != dr->previous_key_version))
            g++;
        if (g < n_groups)
            continue; /* collected with the group's first item below */
        struct derive_group *G = &groups[n_groups++];
        memset(G, 0, sizeof *G);
        G->kv = dr->key_version;
        G->pkv = dr->previous_key_version;
        G->items = &by_group[placed];
        G->cells = &cellp[placed];
        for (size_t k = i; k < n; k++) {
            const Veil__Pseudonym__DeriveRequest *d = all[k]->dr;
            if (d->key_version != G->kv || d->previous_key_version != G->pkv)
                continue;
            veil__pseudonym__derive_item__init(&cells[placed]);
            cells[placed].subject_ref = d->subject_ref;
            cells[placed].sector_id = d->sector_id;
            cells[placed].link_epoch = d->link_epoch;
            cellp[placed] = &cells[placed];
            by_group[placed++] = all[k];
            G->n++;
        }
        veil__pseudonym__derive_batch_request__init(&G->req);
        G->req.items = G->cells;
        G->req.n_items = G->n;
        G->req.key_version = G->kv;
        G->req.previous_key_version = G->pkv;
        one[n_groups - 1] = (veil_call_one){
            .ch = gw->pseudonym, .method = "DeriveBatch", .req = &G->req.base, .resp = &G->reply};
    }
    Veil__Vault__ReleaseAttributesBatchRequest rb =
        VEIL__VAULT__RELEASE_ATTRIBUTES_BATCH_REQUEST__INIT;
    Veil__Vault__ReleaseAttributesBatchResponse *released = NULL;
    size_t n_calls = n_groups;
    if (n_release) {
        rb.items = ras;
        rb.n_items = n_release;
        one[n_calls++] = (veil_call_one){.ch = gw->vault,
                                         .method = "ReleaseAttributesBatch",
                                         .req = &rb.base,
                                         .resp = &released};
    }
    veil_channel_call_all(one, n_calls, &wiping, batch_budget(gw, calls, n));

    for (size_t g = 0; g < n_groups; g++)
        derive_answers(gw, &groups[g], &one[g]);
    item_slot slots[n];
    for (size_t i = 0; i < n_release; i++)
        slots[i] = (item_slot){releasing[i]->call, (void **)&releasing[i]->released,
                                &releasing[i]->release};
    const veil_call_one *rc = &one[n_groups];
    if (n_release)
        batch_answers("ReleaseAttributesBatch", rc->err, &rc->st,
                      released ? released->n_items : 0,
                      released ? (void *const *)released->items : NULL,
                      released ? released->n_status : 0, released ? released->status : NULL,
                      slots, n_release);
    for (size_t g = 0; g < n_groups; g++)
        batch_reply_free(groups[g].reply);
    batch_reply_free(released);
}

static void finish_done(veil_batch_item *item)
{
    struct finish_item *it = (struct finish_item *)item;
    veil_err err = VEIL_OK;
    *it->p_out = it->p;
    *it->released_out = it->released;
    /* the pseudonym's failure first, as when both were one gw_downstream_all */
    if (it->derive.err)
        err = gw_downstream_failed(it->call, "Derive", it->derive.err, &it->derive.st);
    else if (it->ra && it->release.err)
        err = gw_downstream_failed(it->call, "ReleaseAttributes", it->release.err,
                                   &it->release.st);
    it->then(it->arg, err);
}

void gw_derive_release(struct gateway *gw, veil_call *call,
                       const Veil__Pseudonym__DeriveRequest *dr,
                       Veil__Vault__ReleaseAttributesRequest *ra,
                       Veil__Pseudonym__DeriveResponse **p,
                       Veil__Vault__ReleaseAttributesResponse **released, gw_hop_then then,
                       void *arg)
{
    struct finish_item *it = veil_call_alloc(call, sizeof *it);
    if (!it)
        return then(arg, VEIL_ERR_NOMEM);
    *it = (struct finish_item){.base.done = finish_done,
                               .call = call,
                               .dr = dr,
                               .ra = ra,
                               .p_out = p,
                               .released_out = released,
                               .then = then,
                               .arg = arg};
    veil_batch_submit(gw->hops[GW_HOP_FINISH], &it->base);
}

/* ---- set-up ---- */

/* The hops' names in veil_batch_items{hop} (docs/operations.md). */
static const char *const hop_names[GW_HOP__COUNT] = {
    "challenge_take", "verify_ticket", "derive_release", "authorize", "consent_check", "challenge_put"};

veil_err gw_hops_start(struct gateway *gw, size_t max_batch)
{
    static const veil_batch_fn fns[GW_HOP__COUNT] = {take_batch, verify_batch, finish_batch,
                                                     authorize_batch, check_batch, put_batch};
    gw->hops_alone = max_batch <= 1;
    for (int h = 0; h < GW_HOP__COUNT; h++)
        if (!(gw->hops[h] = veil_batcher_new(hop_names[h], max_batch, fns[h], gw)))
            return VEIL_ERR_NOMEM;
    return VEIL_OK;
}

void gw_hops_stop(struct gateway *gw)
{
    for (int h = 0; h < GW_HOP__COUNT; h++) {
        unsigned long long batches, items;
        if (!gw->hops[h])
            continue;
        veil_batcher_stats(gw->hops[h], &batches, &items);
        veil_log(VEIL_LOG_INFO, "login batch statistics", VL_STR("hop", hop_names[h]),
                 VL_INT("batches", (long long)batches), VL_INT("items", (long long)items),
                 VL_END);
        veil_batcher_free(gw->hops[h]);
        gw->hops[h] = NULL;
    }
}
