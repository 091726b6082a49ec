/*
 * batch.c - natural micro-batching on a thread of the hop's own (veil/batch.h).
 *
 * One mutex guards a FIFO of submitted items.  The batcher's thread sleeps
 * while the FIFO is empty; otherwise it takes every item queued (at most
 * max_batch), runs the batch function on them, and then each item's
 * continuation, one after another, before it looks at the FIFO again.  A
 * submitter never waits: it queues its item, and wakes the thread only when
 * the thread is asleep - one wake-up per batch, none per item.  With
 * batching off (a maximum of 1) there is no thread and no FIFO: each item
 * runs at once on its submitter's thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "veil/batch.h"
#include "veil/client.h"
#include "veil/codec.h"
#include "veil/log.h"
#include "veil/metrics.h"

#define BATCH_LIMIT 1024 /* the most any batcher takes at once, whatever it asks */

struct veil_batcher {
    const char *hop;
    size_t max_batch;
    veil_batch_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    veil_batch_item *head, *tail;
    int asleep;   /* the thread waits on `wake` */
    int stopping; /* veil_batcher_free: run what is queued, then end */
    int threaded; /* max_batch > 1: the batcher's thread runs */
    pthread_t thread;
    unsigned long long batches, items; /* under mu */
};

static veil_metric *m_items, *m_seconds;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    m_items = veil_metric_histogram("veil_batch_items",
                                    "items per batched internal call, by hop (issue 15)", "hop",
                                    sizes, sizeof sizes / sizeof sizes[0]);
    m_seconds = veil_metric_histogram("veil_batch_seconds",
                                      "time a hop's thread spent on one batch, by hop and part: "
                                      "the batched call (call) and handing each item on to its "
                                      "continuation (hand_on) (issue 15)",
                                      "hop,part", veil_metric_latency_bounds,
                                      veil_metric_latency_bounds_len);
}

static void count_batch(veil_batcher *b, size_t n)
{
    veil_metric_observe(m_items, (double)n, (const char *[]){b->hop});
    pthread_mutex_lock(&b->mu);
    b->batches++;
    b->items += n;
    pthread_mutex_unlock(&b->mu);
}

/* Runs one batch (mu not held) and hands every item to its continuation. */
static void run_batch(veil_batcher *b, veil_batch_item **taken, size_t n)
{
    /* the batch goes out under its first item's trace, which leads it */
    int64_t t0 = veil_mono_ns();
    veil_trace_set_current(taken[0]->traced ? &taken[0]->trace : NULL);
    b->fn(b->ctx, taken, n);
    int64_t t1 = veil_mono_ns();
    veil_metric_observe(m_seconds, (double)(t1 - t0) / 1e9, (const char *[]){b->hop, "call"});
    count_batch(b, n);
    char lead[sizeof taken[0]->lead_trace];
    snprintf(lead, sizeof lead, "%s", taken[0]->traced ? taken[0]->trace.trace_id : "");
    int debug = veil_log_enabled(VEIL_LOG_DEBUG);
    for (size_t i = 0; i < n; i++) {
        veil_batch_item *it = taken[i];
        memcpy(it->lead_trace, lead, sizeof lead);
        it->batch_items = n;
        veil_trace_set_current(it->traced ? &it->trace : NULL);
        if (i > 0 && debug)
            veil_log(VEIL_LOG_DEBUG, "answered in a batched call", VL_STR("hop", b->hop),
                     VL_INT("batch_items", (long long)n), VL_STR("lead_trace_id", lead), VL_END);
        it->done(it); /* it may be gone once this returns */
    }
    veil_trace_set_current(NULL);
    veil_metric_observe(m_seconds, (double)(veil_mono_ns() - t1) / 1e9,
                        (const char *[]){b->hop, "hand_on"});
}

static void *batcher_main(void *arg)
{
    veil_batcher *b = arg;
    veil_batch_item *taken[BATCH_LIMIT];
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping) {
            b->asleep = 1;
            pthread_cond_wait(&b->wake, &b->mu);
            b->asleep = 0;
        }
        if (!b->head)
            break; /* stopping, and nothing left */
        size_t n = 0;
        while (b->head && n < b->max_batch) {
            taken[n++] = b->head;
            b->head = b->head->next;
        }
        if (!b->head)
            b->tail = NULL;
        pthread_mutex_unlock(&b->mu);
        run_batch(b, taken, n);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    veil_client_thread_done();
    return NULL;
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
    pthread_cond_init(&b->wake, NULL);
    b->threaded = b->max_batch > 1;
    if (b->threaded && pthread_create(&b->thread, NULL, batcher_main, b) != 0) {
        veil_log(VEIL_LOG_ERROR, "cannot start a batcher's thread", VL_STR("hop", hop), VL_END);
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->wake);
        free(b);
        return NULL;
    }
    return b;
}

void veil_batcher_free(veil_batcher *b)
{
    if (!b)
        return;
    if (b->threaded) {
        pthread_mutex_lock(&b->mu);
        b->stopping = 1;
        pthread_cond_signal(&b->wake);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->wake);
    free(b);
}

void veil_batcher_stats(veil_batcher *b, unsigned long long *batches, unsigned long long *items)
{
    pthread_mutex_lock(&b->mu);
    *batches = b->batches;
    *items = b->items;
    pthread_mutex_unlock(&b->mu);
}

void veil_batch_submit(veil_batcher *b, veil_batch_item *it)
{
    it->next = NULL;
    it->batch_items = 0;
    it->lead_trace[0] = '\0';
    if (!b->threaded) {
        /*
         * Batching off: a batch of one at once, on this thread, side by side
         * with every other submitter - a hop never passes one item at a time.
         */
        it->traced = 0;
        veil_batch_item *one[1] = {it};
        b->fn(b->ctx, one, 1);
        count_batch(b, 1);
        it->batch_items = 1;
        it->done(it);
        return;
    }
    const veil_trace *t = veil_trace_current();
    it->traced = t != NULL;
    if (t)
        it->trace = *t;
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    if (b->asleep)
        pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->mu);
}

/* ---- waiting for one item: veil_batch_run ---- */

struct batch_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void wait_done(veil_batch_item *it)
{
    struct batch_wait *w = it->wait;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu); /* w (on the waiter's stack) may be gone now */
}

void veil_batch_run(veil_batcher *b, veil_batch_item *it)
{
    struct batch_wait w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    it->done = wait_done;
    it->wait = &w;
    veil_batch_submit(b, it);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
}
