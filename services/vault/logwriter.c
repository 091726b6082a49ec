/*
 * logwriter.c - group commit of access-log appends.
 *
 * Every verified ticket and every release appends an entry to the citizen's
 * access log before the call is answered, and that entry must survive a
 * crash, so each append waits for a synchronous commit.  One commit per
 * login costs PostgreSQL a transaction, a WAL flush (an fdatasync) and the
 * executor's start-up per statement.  Here the callers hand their sealed,
 * chained entries to one writer thread, which appends everything queued
 * since its last commit in one statement (vault_store_append_batch) on its
 * own connection and wakes each caller with its own entry's result once the
 * commit returned.  No entry is acknowledged before the commit that holds
 * it, and nothing waits on purpose: a batch is whatever arrived while the
 * previous commit was flushing.
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

#include "veil/log.h"
#include "vault.h"

struct item {
    struct vault_log_append e;
    int done;
    struct item *next;
};

struct vault_logw {
    vault_store *store;
    size_t max_batch;
    pthread_mutex_t mu;
    pthread_cond_t work, finished;
    struct item *head, *tail;
    int stopping;
    struct vault_log_append **batch; /* the writer's: max_batch of each */
    struct item **taken;
    pthread_t thread;
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

/* Appends the batch and sets every entry's result. */
static void write_batch(struct vault_logw *w, struct vault_log_append **batch, size_t n)
{
    vault_conn *c;
    veil_err err = vault_store_conn(w->store, &c);
    if (!err && n == 1) {
        batch[0]->result = append_one(c, batch[0]);
        return;
    }
    if (!err) {
        qsort(batch, n, sizeof *batch, by_subject);
        err = vault_store_append_batch(c, batch, n);
        if (err && err != VEIL_ERR_UNAVAILABLE && err != VEIL_ERR_DEADLINE) {
            veil_log(VEIL_LOG_WARN, "access-log batch failed; appending its entries one by one",
                     VL_STR("error", veil_err_name(err)), VL_INT("entries", (long long)n),
                     VL_END);
            for (size_t i = 0; i < n; i++)
                batch[i]->result = append_one(c, batch[i]);
            return;
        }
    }
    for (size_t i = 0; err && i < n; i++)
        batch[i]->result = err;
}

static void *writer(void *arg)
{
    struct vault_logw *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->work, &w->mu);
        if (!w->head)
            break; /* stopping, and everything queued was written */
        size_t n = 0;
        while (w->head && n < w->max_batch) {
            struct item *it = w->head;
            w->head = it->next;
            w->taken[n] = it;
            w->batch[n++] = &it->e;
        }
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        write_batch(w, w->batch, n);
        atomic_fetch_add(&w->batches, 1);
        atomic_fetch_add(&w->entries, n);
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < n; i++)
            w->taken[i]->done = 1;
        pthread_cond_broadcast(&w->finished);
    }
    pthread_mutex_unlock(&w->mu);
    vault_store_thread_done(w->store);
    return NULL;
}

static void logw_free(struct vault_logw *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->finished);
    free(w->batch);
    free(w->taken);
    free(w);
}

veil_err vault_logw_start(vault_store *st, size_t max_batch, struct vault_logw **out)
{
    *out = NULL;
    struct vault_logw *w = calloc(1, sizeof *w);
    if (!w)
        return VEIL_ERR_NOMEM;
    w->store = st;
    w->max_batch = max_batch ? max_batch : 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->finished, NULL);
    w->batch = calloc(w->max_batch, sizeof *w->batch);
    w->taken = calloc(w->max_batch, sizeof *w->taken);
    if (!w->batch || !w->taken) {
        logw_free(w);
        return VEIL_ERR_NOMEM;
    }
    if (pthread_create(&w->thread, NULL, writer, w) != 0) {
        logw_free(w);
        return VEIL_ERR_INTERNAL;
    }
    *out = w;
    return VEIL_OK;
}

void vault_logw_stop(struct vault_logw *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    uint64_t batches = atomic_load(&w->batches), entries = atomic_load(&w->entries);
    veil_log(VEIL_LOG_INFO, "access-log group commit statistics",
             VL_INT("batches", (long long)batches), VL_INT("entries", (long long)entries), VL_END);
    logw_free(w);
}

veil_err vault_logw_append(struct vault_logw *w, const unsigned char subject[VAULT_SUBJECT_BYTES],
                           int64_t seq, int64_t at_ms, const unsigned char *sealed, size_t len,
                           const unsigned char mac[VAULT_HASH_BYTES])
{
    struct item it = {.e = {.subject = subject, .seq = seq, .at_ms = at_ms, .sealed = sealed,
                            .sealed_len = len, .mac = mac}};
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = &it;
    else
        w->head = &it;
    w->tail = &it;
    pthread_cond_signal(&w->work);
    while (!it.done)
        pthread_cond_wait(&w->finished, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return it.e.result;
}
