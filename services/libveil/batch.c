/*
 * batch.c - leader/follower micro-batching (veil/batch.h).
 *
 * One mutex guards a FIFO of waiting items and a flag saying a batch is in
 * flight.  Every waiter sleeps on its own condition variable, so the end of
 * a batch wakes exactly the threads it answered and the one that leads
 * next, not every waiter (the access-log group commit in the vault wakes
 * all of its waiters at once; here a login hop may have many more).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "veil/batch.h"
#include "veil/log.h"
#include "veil/metrics.h"
#include "veil/trace.h"

#define BATCH_LIMIT 1024 /* the most any batcher takes at once, whatever it asks */

struct veil_batcher {
    const char *hop;
    size_t max_batch;
    veil_batch_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    veil_batch_item *head, *tail;
    int leading; /* a batch is in flight */
    unsigned long long batches, items; /* under mu */
};

static veil_metric *m_items;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    m_items = veil_metric_histogram("veil_batch_items",
                                    "items per batched internal call, by hop (issue 15)", "hop",
                                    sizes, sizeof sizes / sizeof sizes[0]);
}

veil_batcher *veil_batcher_new(const char *hop, size_t max_batch, veil_batch_fn fn, void *ctx)
{
    pthread_once(&metrics_once, metrics_init);
    veil_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->hop = hop;
    b->max_batch = max_batch < 1 ? 1 : max_batch > BATCH_LIMIT ? BATCH_LIMIT : max_batch;
    b->fn = fn;
    b->ctx = ctx;
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

void veil_batcher_free(veil_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* Leads one batch: called and returns with b->mu held and b->leading clear. */
static void lead(veil_batcher *b)
{
    veil_batch_item *taken[BATCH_LIMIT];
    size_t n = 0;
    b->leading = 1;
    while (b->head && n < b->max_batch) {
        taken[n++] = b->head;
        b->head = b->head->next;
    }
    if (!b->head)
        b->tail = NULL;
    pthread_mutex_unlock(&b->mu);

    b->fn(b->ctx, taken, n);
    veil_metric_observe(m_items, (double)n, (const char *[]){b->hop});
    const veil_trace *t = veil_trace_current();

    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < n; i++) {
        snprintf(taken[i]->lead_trace, sizeof taken[i]->lead_trace, "%s", t ? t->trace_id : "");
        taken[i]->batch_items = n;
        taken[i]->done = 1;
        pthread_cond_signal(&taken[i]->wake); /* the leader's own item: nobody waits on it */
    }
    b->leading = 0;
    b->batches++;
    b->items += n;
    if (b->head) /* the first of those that queued meanwhile leads next */
        pthread_cond_signal(&b->head->wake);
}

void veil_batcher_stats(veil_batcher *b, unsigned long long *batches, unsigned long long *items)
{
    pthread_mutex_lock(&b->mu);
    *batches = b->batches;
    *items = b->items;
    pthread_mutex_unlock(&b->mu);
}

/*
 * Batching off (a maximum of 1): the item runs at once on its own thread as
 * a batch of one, concurrently with every other caller - no queue and no
 * batch in flight, so a hop is never passed one login at a time.
 */
static void run_alone(veil_batcher *b, veil_batch_item *it)
{
    veil_batch_item *one[1] = {it};
    b->fn(b->ctx, one, 1);
    veil_metric_observe(m_items, 1.0, (const char *[]){b->hop});
    it->batch_items = 1;
    it->done = 1;
    pthread_mutex_lock(&b->mu);
    b->batches++;
    b->items++;
    pthread_mutex_unlock(&b->mu);
}

void veil_batch_run(veil_batcher *b, veil_batch_item *it)
{
    int led = 0;
    it->next = NULL;
    it->done = 0;
    it->batch_items = 0;
    it->lead_trace[0] = '\0';
    if (b->max_batch == 1) {
        run_alone(b, it);
        return;
    }
    pthread_cond_init(&it->wake, NULL);
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    while (!it->done) {
        if (!b->leading && b->head == it) {
            lead(b);
            led = 1;
        } else {
            pthread_cond_wait(&it->wake, &b->mu);
        }
    }
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&it->wake);
    if (!led && veil_log_enabled(VEIL_LOG_DEBUG))
        veil_log(VEIL_LOG_DEBUG, "answered in a batched call", VL_STR("hop", b->hop),
                 VL_INT("batch_items", (long long)it->batch_items),
                 VL_STR("lead_trace_id", it->lead_trace), VL_END);
}
