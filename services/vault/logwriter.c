/*
 * logwriter.c - group commit of access-log appends.
 *
 * Every verified ticket and every release appends an entry to the citizen's
 * access log before the call is answered, and that entry must survive a
 * crash, so each append waits for a synchronous commit.  One commit per
 * login costs PostgreSQL a transaction, a WAL flush (an fdatasync) and the
 * executor's start-up per statement.  Here concurrent appends share commits,
 * the way PostgreSQL groups WAL flushes, without a thread of their own:
 * a caller that finds no append in progress becomes the leader, takes every
 * entry queued so far (its own first), appends them in one statement
 * (vault_store_append_batch) on its own connection and wakes the others with
 * their own entries' results once the commit returned; callers that arrive
 * meanwhile queue and wait, and one of them leads the next batch.  No entry
 * is acknowledged before the commit that holds it, nothing waits on purpose,
 * and a lone caller pays no hand-off: it appends as it did before.
 * A caller may bring several entries at once (a batched call: issue 15);
 * they queue together, so they usually share one commit, and the caller
 * returns once every one of them is committed (or refused).
 *
 * Entries of one batch are sorted by subject, so concurrent batches (other
 * vault replicas) lock head rows in the same order.  When the batch
 * statement fails for any reason but the database being unreachable, each
 * entry is appended alone, so one bad entry cannot fail its neighbours.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "veil/codec.h"
#include "veil/log.h"
#include "veil/metrics.h"
#include "vault.h"

/* A caller waiting for its entries: how many are not written yet. */
struct waiter {
    size_t left;
};

struct item {
    struct vault_log_append *e;
    struct waiter *owner;
    struct item *next;
};

struct vault_logw {
    size_t max_batch;
    pthread_mutex_t mu;
    pthread_cond_t finished;
    struct item *head, *tail;
    int leading; /* a batch is being appended */
    _Atomic uint64_t batches, entries;
};

static int by_subject(const void *a, const void *b)
{
    const struct vault_log_append *x = *(struct vault_log_append *const *)a;
    const struct vault_log_append *y = *(struct vault_log_append *const *)b;
    int c = memcmp(x->subject, y->subject, VAULT_SUBJECT_BYTES);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static veil_err append_one(vault_conn *c, const struct vault_log_append *e)
{
    return vault_store_append_log(c, e->subject, e->seq, e->at_ms, e->sealed, e->sealed_len,
                                  e->mac);
}

/* Appends the batch on c (outside any transaction) and sets every entry's result. */
static void write_batch(vault_conn *c, struct vault_log_append **batch, size_t n)
{
    if (n == 1) {
        batch[0]->result = append_one(c, batch[0]);
        return;
    }
    qsort(batch, n, sizeof *batch, by_subject);
    veil_err err = vault_store_append_batch(c, batch, n);
    if (err && err != VEIL_ERR_UNAVAILABLE && err != VEIL_ERR_DEADLINE) {
        veil_log(VEIL_LOG_WARN, "access-log batch failed; appending its entries one by one",
                 VL_STR("error", veil_err_name(err)), VL_INT("entries", (long long)n), VL_END);
        for (size_t i = 0; i < n; i++)
            batch[i]->result = append_one(c, batch[i]);
        return;
    }
    for (size_t i = 0; err && i < n; i++)
        batch[i]->result = err;
}

/* Group-commit sizes and commit latency (veil/metrics.h). */
static veil_metric *m_batch, *m_commit;

veil_err vault_logw_new(size_t max_batch, struct vault_logw **out)
{
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
    m_batch = veil_metric_histogram("veil_vault_group_commit_entries",
                                    "access-log entries written per group commit", NULL, sizes,
                                    sizeof sizes / sizeof sizes[0]);
    m_commit = veil_metric_histogram("veil_vault_commit_seconds",
                                     "time to write and commit one access-log group commit", NULL,
                                     veil_metric_latency_bounds, veil_metric_latency_bounds_len);
    *out = NULL;
    struct vault_logw *w = calloc(1, sizeof *w);
    if (!w)
        return VEIL_ERR_NOMEM;
    w->max_batch = max_batch ? max_batch : 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->finished, NULL);
    *out = w;
    return VEIL_OK;
}

void vault_logw_free(struct vault_logw *w)
{
    if (!w)
        return;
    uint64_t batches = atomic_load(&w->batches), entries = atomic_load(&w->entries);
    veil_log(VEIL_LOG_INFO, "access-log group commit statistics",
             VL_INT("batches", (long long)batches), VL_INT("entries", (long long)entries), VL_END);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->finished);
    free(w);
}

veil_err vault_logw_append(struct vault_logw *w, vault_conn *c, struct vault_log_append *const *e,
                           size_t n)
{
    struct waiter me = {.left = n};
    /* on the stack: a batch is bounded by max_batch, which the configuration caps */
    struct vault_log_append *batch[VAULT_LOG_BATCH_LIMIT];
    struct item *taken[VAULT_LOG_BATCH_LIMIT];
    size_t limit = w->max_batch < VAULT_LOG_BATCH_LIMIT ? w->max_batch : VAULT_LOG_BATCH_LIMIT;
    if (n == 0)
        return VEIL_OK;
    /* a lone entry (every unbatched call) queues without an allocation */
    struct item one, *its = n == 1 ? &one : calloc(n, sizeof *its);
    if (!its)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        its[i] = (struct item){.e = e[i], .owner = &me, .next = i + 1 < n ? &its[i + 1] : NULL};
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = &its[0];
    else
        w->head = &its[0];
    w->tail = &its[n - 1];
    while (me.left) {
        if (w->leading) {
            pthread_cond_wait(&w->finished, &w->mu);
            continue;
        }
        /* lead: everything queued so far (up to the limit), this caller's first entry among it */
        w->leading = 1;
        size_t k = 0;
        while (w->head && k < limit) {
            struct item *x = w->head;
            w->head = x->next;
            taken[k] = x;
            batch[k++] = x->e;
        }
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        int64_t t0 = veil_mono_ns();
        write_batch(c, batch, k);
        veil_metric_observe(m_commit, (double)(veil_mono_ns() - t0) / 1e9, NULL);
        veil_metric_observe(m_batch, (double)k, NULL);
        atomic_fetch_add(&w->batches, 1);
        atomic_fetch_add(&w->entries, k);
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < k; i++)
            taken[i]->owner->left--;
        w->leading = 0;
        /* the others: their results, or the lead of the next batch */
        pthread_cond_broadcast(&w->finished);
    }
    pthread_mutex_unlock(&w->mu);
    if (its != &one)
        free(its);
    return VEIL_OK;
}
