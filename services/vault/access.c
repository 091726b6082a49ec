/*
 * access.c - the citizen's access log: who saw what, when, and why.
 *
 * Entries are sealed under the citizen's data key (so the operator cannot
 * read which apps a person uses, and erasure shreds them) and chained per
 * citizen with a keyed BLAKE2b over (previous value, seq, time, sealed
 * entry) under the audit key, which the database never sees: someone who
 * can only write the database cannot produce a consistent chain.  The head
 * (last seq and value) is stored apart, so a deleted last entry is noticed
 * too.  What the chain cannot notice - a rollback of rows and head together
 * to an earlier state, or a wipe - the citizen's wallet notices: each read
 * returns a checkpoint (web number, seq, head, time) signed with the
 * vault's checkpoint key, which the wallet keeps and compares with the next
 * read (docs/vault.md, "Checkpoints").
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "veil/log.h"
#include "vault.h"

#define APPEND_ATTEMPTS 3
#define ENTRY_TEXT_MAX  4096

/* Seals e as entry head_seq + 1 after prev into a (its bytes in sealed, its chain value in mac). */
static veil_err seal_after(struct vault *v, const unsigned char *subject, const unsigned char *dk,
                           int64_t head_seq, const unsigned char *prev,
                           const struct vault_entry *e, veil_buf *sealed,
                           unsigned char mac[VAULT_HASH_BYTES], struct vault_log_append *a)
{
    int64_t seq = head_seq + 1, at = veil_now_ms();
    veil_err err = vault_entry_seal(dk, subject, seq, e, sealed);
    if (err)
        return err;
    vault_chain_hash(v->keys->audit_key, subject, prev, seq, at, sealed->data, sealed->len, mac);
    *a = (struct vault_log_append){.subject = subject,
                                   .seq = seq,
                                   .at_ms = at,
                                   .sealed = sealed->data,
                                   .sealed_len = sealed->len,
                                   .mac = mac};
    return VEIL_OK;
}

/*
 * Seals e as entry head_seq + 1 after prev and appends it alone on c (inside
 * the caller's transaction, which holds the head lock); ABORTED when the
 * head moved.
 */
static veil_err append_after(struct vault *v, vault_conn *c, const unsigned char *subject,
                             const unsigned char *dk, int64_t head_seq, const unsigned char *prev,
                             const struct vault_entry *e)
{
    unsigned char mac[VAULT_HASH_BYTES];
    struct vault_log_append a;
    veil_buf sealed = {0};
    veil_err err = seal_after(v, subject, dk, head_seq, prev, e, &sealed, mac, &a);
    if (!err)
        err = vault_store_append_log(c, subject, a.seq, a.at_ms, a.sealed, a.sealed_len, mac);
    veil_buf_free(&sealed);
    return err;
}

/* When another append for the same citizen won: behind the locked head, which cannot lose again. */
static veil_err append_locked(struct vault *v, vault_conn *c, const unsigned char *subject,
                              const unsigned char *dk, const struct vault_entry *e)
{
    unsigned char prev[VAULT_HASH_BYTES];
    int64_t head_seq;
    veil_err err = VEIL_ERR_ABORTED;
    for (int attempt = 0; err == VEIL_ERR_ABORTED && attempt < APPEND_ATTEMPTS; attempt++) {
        if ((err = vault_store_begin(c)))
            break;
        if (!(err = vault_store_lock_log_head(c, subject, &head_seq, prev)) &&
            !(err = append_after(v, c, subject, dk, head_seq, prev, e)))
            err = vault_store_commit(c);
        if (err)
            vault_store_rollback(c); /* ABORTED here is a deadlock or serialization failure */
    }
    return err;
}

/*
 * The common case costs one statement (or one entry of a group commit): the
 * head read with the device or citizen is still current.  The entries of a
 * batch enter the group commit together (so they share its commit unless
 * concurrent ones fill it); each one whose head moved is appended again
 * alone behind the locked head.
 */
void vault_access_append_many(struct vault *v, vault_conn *c, struct vault_access_item *items,
                              size_t n)
{
    struct vault_log_append *grouped[VAULT_BATCH_MAX];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct vault_access_item *it = &items[i];
        it->sealed = (veil_buf){0};
        it->result = seal_after(v, it->subject, it->dk, it->head_seq, it->head, it->e,
                                &it->sealed, it->mac, &it->log);
        if (it->result)
            continue;
        it->log.result = VEIL_ERR_INTERNAL;
        if (v->logw && k < VAULT_BATCH_MAX)
            grouped[k++] = &it->log;
        else /* group commit off: each append commits alone */
            it->log.result = vault_store_append_log(c, it->subject, it->log.seq, it->log.at_ms,
                                                    it->log.sealed, it->log.sealed_len, it->mac);
    }
    veil_err err = k ? vault_logw_append(v->logw, c, grouped, k) : VEIL_OK;
    for (size_t i = 0; i < k && err; i++)
        grouped[i]->result = err;
    for (size_t i = 0; i < n; i++) {
        struct vault_access_item *it = &items[i];
        if (!it->result)
            it->result = it->log.result;
        veil_buf_free(&it->sealed);
        if (it->result == VEIL_ERR_ABORTED)
            it->result = append_locked(v, c, it->subject, it->dk, it->e);
    }
}

veil_err vault_access_append_dk(struct vault *v, vault_conn *c,
                                const unsigned char subject[VAULT_SUBJECT_BYTES],
                                const unsigned char dk[VAULT_DEK_BYTES], int64_t head_seq,
                                const unsigned char head[VAULT_HASH_BYTES],
                                const struct vault_entry *e)
{
    struct vault_access_item it = {
        .subject = subject, .dk = dk, .head_seq = head_seq, .head = head, .e = e};
    vault_access_append_many(v, c, &it, 1);
    return it.result;
}

veil_err vault_access_append(struct vault *v, vault_conn *c,
                             const unsigned char subject[VAULT_SUBJECT_BYTES], uint32_t key_version,
                             const unsigned char wrapped[VAULT_WRAPPED_BYTES], int64_t head_seq,
                             const unsigned char head[VAULT_HASH_BYTES],
                             const struct vault_entry *e)
{
    unsigned char dk[VAULT_DEK_BYTES];
    const veil_key *master = vault_master_key(v->keys, key_version);
    if (!master || vault_dek_unwrap(master, subject, wrapped, VAULT_WRAPPED_BYTES, dk) != VEIL_OK) {
        veil_log(VEIL_LOG_ERROR, "cannot unwrap a data key", VL_INT("key_version", key_version),
                 VL_END);
        return VEIL_ERR_INTERNAL;
    }
    veil_err err = vault_access_append_dk(v, c, subject, dk, head_seq, head, e);
    sodium_memzero(dk, sizeof dk);
    return err;
}

veil_err vault_access_record_dk(struct vault *v, vault_conn *c,
                                const unsigned char subject[VAULT_SUBJECT_BYTES],
                                const unsigned char dk[VAULT_DEK_BYTES],
                                const struct vault_entry *e)
{
    unsigned char prev[VAULT_HASH_BYTES];
    int64_t seq;
    veil_err err = vault_store_lock_log_head(c, subject, &seq, prev);
    return err ? err : append_after(v, c, subject, dk, seq, prev, e);
}

veil_err vault_access_record(struct vault *v, vault_conn *c,
                             const unsigned char subject[VAULT_SUBJECT_BYTES],
                             const struct vault_entry *e, int in_tx)
{
    struct vault_citizen_row *row = veil_guarded_take(sizeof *row);
    veil_err err = VEIL_ERR_NOMEM;
    if (row && !(err = vault_store_citizen(c, subject, row))) {
        if (!in_tx) {
            err = vault_access_append(v, c, subject, row->key_version, row->wrapped, row->head_seq,
                                      row->head, e);
        } else {
            unsigned char dk[VAULT_DEK_BYTES];
            const veil_key *master = vault_master_key(v->keys, row->key_version);
            if (!master ||
                vault_dek_unwrap(master, subject, row->wrapped, VAULT_WRAPPED_BYTES, dk) != VEIL_OK)
                err = VEIL_ERR_INTERNAL;
            else
                err = vault_access_record_dk(v, c, subject, dk, e);
            sodium_memzero(dk, sizeof dk);
        }
    }
    veil_guarded_give(row);
    return err;
}

/* Signs where the log ends into resp->checkpoint (in the call's arena). */
static veil_err checkpoint(struct vault *v, veil_call *call, const struct vault_citizen_row *row,
                           Veil__Vault__ListAccessLogResponse *resp)
{
    Veil__Vault__Checkpoint *cp = veil_call_alloc(call, sizeof *cp);
    unsigned char *head = veil_call_alloc(call, VAULT_HASH_BYTES);
    unsigned char *sig = veil_call_alloc(call, crypto_sign_BYTES);
    veil_buf msg = {0};
    if (!cp || !head || !sig)
        return VEIL_ERR_NOMEM;
    veil__vault__checkpoint__init(cp);
    if (!(cp->web_number = veil_call_strdup(call, row->web_number)))
        return VEIL_ERR_NOMEM;
    memcpy(head, row->head, VAULT_HASH_BYTES);
    cp->seq = row->head_seq;
    cp->at_ms = veil_now_ms();
    cp->retention_ms = v->cfg.log_retention_s * 1000;
    cp->head.data = head;
    cp->head.len = VAULT_HASH_BYTES;
    veil_checkpoint_bytes(&msg, cp->web_number, cp->seq, head, cp->at_ms, cp->retention_ms);
    if (msg.failed) {
        veil_buf_free(&msg);
        return VEIL_ERR_NOMEM;
    }
    crypto_sign_detached(sig, NULL, msg.data, msg.len, v->keys->checkpoint_sk);
    veil_buf_free(&msg);
    cp->signature.data = sig;
    cp->signature.len = crypto_sign_BYTES;
    resp->checkpoint = cp;
    return VEIL_OK;
}

/* Walks the stored rows, checking the chain and opening each entry. */
struct walk {
    struct vault *v;
    veil_call *call;
    const unsigned char *subject;
    const unsigned char *dk;
    unsigned char prev[VAULT_HASH_BYTES];
    int64_t expect_seq;
    int64_t first_bad;
    size_t n, cap;
    Veil__Vault__AccessLogEntry **entries;
};

static void mark_bad(struct walk *w, int64_t seq)
{
    if (w->first_bad == 0)
        w->first_bad = seq;
}

static veil_err add_entry(struct walk *w, const struct vault_log_row *row)
{
    char text[ENTRY_TEXT_MAX];
    const char *attrs[VAULT_ENTRY_ATTRS_MAX];
    struct vault_entry e;
    unsigned char mac[VAULT_HASH_BYTES];

    /* A gap (deleted row) or a row whose value does not chain: the first bad seq. */
    if (row->seq != w->expect_seq)
        mark_bad(w, w->expect_seq);
    vault_chain_hash(w->v->keys->audit_key, w->subject, w->prev, row->seq, row->at_ms, row->entry,
                     row->entry_len, mac);
    if (row->mac_len != VAULT_HASH_BYTES || sodium_memcmp(mac, row->mac, VAULT_HASH_BYTES) != 0)
        mark_bad(w, row->seq);
    /* Continue from the stored value, so one bad row is reported once, not for every later one. */
    if (row->mac_len == VAULT_HASH_BYTES)
        memcpy(w->prev, row->mac, VAULT_HASH_BYTES);
    w->expect_seq = row->seq + 1;

    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        Veil__Vault__AccessLogEntry **grown = veil_call_alloc(w->call, cap * sizeof *grown);
        if (!grown)
            return VEIL_ERR_NOMEM;
        if (w->n)
            memcpy(grown, w->entries, w->n * sizeof *grown);
        w->entries = grown;
        w->cap = cap;
    }
    Veil__Vault__AccessLogEntry *out = veil_call_alloc(w->call, sizeof *out);
    if (!out)
        return VEIL_ERR_NOMEM;
    veil__vault__access_log_entry__init(out);
    out->seq = row->seq;
    out->at_ms = row->at_ms;
    if (row->mac_len == VAULT_HASH_BYTES) {
        if (!(out->chain.data = veil_call_alloc(w->call, VAULT_HASH_BYTES)))
            return VEIL_ERR_NOMEM;
        memcpy(out->chain.data, row->mac, VAULT_HASH_BYTES);
        out->chain.len = VAULT_HASH_BYTES;
    }
    if (vault_entry_open(w->dk, w->subject, row->seq, row->entry, row->entry_len, text, sizeof text,
                         &e, attrs, VAULT_ENTRY_ATTRS_MAX) != VEIL_OK) {
        /* Shown, so the citizen sees that something is there, but flagged. */
        mark_bad(w, row->seq);
        out->action = "unreadable";
    } else {
        char **names =
            e.n_attributes ? veil_call_alloc(w->call, e.n_attributes * sizeof *names) : NULL;
        if ((e.n_attributes && !names) || !(out->app_id = veil_call_strdup(w->call, e.app_id)) ||
            !(out->action = veil_call_strdup(w->call, e.action)) ||
            !(out->purpose = veil_call_strdup(w->call, e.purpose)) ||
            !(out->actor = veil_call_strdup(w->call, e.actor)) ||
            !(out->detail = veil_call_strdup(w->call, e.detail)))
            return VEIL_ERR_NOMEM;
        for (size_t i = 0; i < e.n_attributes; i++)
            if (!(names[i] = veil_call_strdup(w->call, e.attributes[i])))
                return VEIL_ERR_NOMEM;
        out->n_attributes = e.n_attributes;
        out->attributes = names;
    }
    w->entries[w->n++] = out;
    return VEIL_OK;
}

static veil_err on_row(void *ctx, const struct vault_log_row *row)
{
    return add_entry(ctx, row);
}

veil_err vault_access_list(struct vault *v, veil_call *call,
                           const unsigned char subject[VAULT_SUBJECT_BYTES],
                           Veil__Vault__ListAccessLogResponse *resp)
{
    struct vault_citizen_row *row = veil_guarded_take(sizeof *row);
    unsigned char dk[VAULT_DEK_BYTES];
    vault_conn *c = NULL;
    struct walk w = {.v = v, .call = call, .subject = subject, .dk = dk, .expect_seq = 1};
    veil_err err = VEIL_ERR_NOMEM;
    if (!row)
        goto out;
    /* One snapshot: the rows and the head must describe the same moment. */
    if ((err = vault_store_conn(v->store, &c)) || (err = vault_store_begin_snapshot(c)))
        goto out;
    if ((err = vault_store_citizen(c, subject, row)))
        goto out;
    const veil_key *master = vault_master_key(v->keys, row->key_version);
    if (!master ||
        vault_dek_unwrap(master, subject, row->wrapped, VAULT_WRAPPED_BYTES, dk) != VEIL_OK) {
        veil_log(VEIL_LOG_ERROR, "cannot unwrap a data key",
                 VL_INT("key_version", row->key_version), VL_END);
        err = VEIL_ERR_INTERNAL;
        goto out;
    }
    /* After retention dropped old entries, the chain continues from its recorded base. */
    int64_t base_seq;
    if ((err = vault_store_log_base(c, subject, &base_seq, w.prev)))
        goto out;
    w.expect_seq = base_seq + 1;
    if ((err = vault_store_list_log(c, subject, on_row, &w)))
        goto out;
    /* The stored head must be where the rows end: catches deleted last entries. */
    if (w.expect_seq - 1 != row->head_seq)
        mark_bad(&w, w.expect_seq - 1 < row->head_seq ? w.expect_seq : row->head_seq + 1);
    else if (row->head_seq > 0 && sodium_memcmp(w.prev, row->head, VAULT_HASH_BYTES) != 0)
        mark_bad(&w, row->head_seq);
    resp->entries = w.entries;
    resp->n_entries = w.n;
    resp->chain_valid = w.first_bad == 0;
    resp->first_bad_seq = w.first_bad;
    err = checkpoint(v, call, row, resp);
out:
    if (c)
        vault_store_rollback(c); /* read-only: ends the snapshot */
    sodium_memzero(dk, sizeof dk);
    veil_guarded_give(row);
    return err;
}
