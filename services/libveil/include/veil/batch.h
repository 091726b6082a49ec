/*
 * veil/batch.h - natural micro-batching of one kind of work that many
 * threads do at once (issue 15 lever 1): leader/follower, no timer.
 *
 * A thread with one item of work calls veil_batch_run.  When no batch is in
 * flight it becomes the leader: it takes every item queued at that moment
 * (its own first, at most max_batch), runs the batcher's function on them as
 * one batch, hands every item its own result and returns.  Items that
 * arrive while a batch is in flight queue and wait; when it ends, the first
 * of them leads the next batch.  A lone caller pays no hand-off and no
 * wait: it leads a batch of one at once.  Nothing waits on purpose, so
 * batches grow only with the load that is already there.
 *
 *   struct my_item { veil_batch_item base; ...inputs...; veil_err err; };
 *   static void run(void *ctx, veil_batch_item *const *items, size_t n)
 *   {   ...one call for all n, then each ((struct my_item *)items[i])->err = ... }
 *   b = veil_batcher_new("verify_ticket", 64, run, ctx);
 *   struct my_item it = {...};
 *   veil_batch_run(b, &it.base);      // returns once run() has set it.err
 *
 * The function runs on the leader's thread, with the leader's trace current
 * (veil/trace.h): what it logs and the calls it makes belong to the
 * leader's trace.  It must set each item's results without touching
 * thread-local state of the items' own threads; each caller acts on its
 * results (logs, fails its call) on its own thread after veil_batch_run.
 * Each batch's size is observed in the histogram veil_batch_items{hop=...};
 * a caller whose item another thread led logs, at debug level and under its
 * own trace, the trace id the batch went out under (lead_trace_id), so a
 * login's trace leads to the downstream lines of its batched hops.
 */
#ifndef VEIL_BATCH_H
#define VEIL_BATCH_H

#include <pthread.h>
#include <stddef.h>

/* The batcher's part of an item: embed it first in the caller's item. */
typedef struct veil_batch_item {
    struct veil_batch_item *next;
    pthread_cond_t wake; /* this item's waiter: its result, or its turn to lead */
    int done;
    size_t batch_items;  /* how many items its batch had */
    char lead_trace[33]; /* the trace id its batch was led under ("" when none) */
} veil_batch_item;

typedef void (*veil_batch_fn)(void *ctx, veil_batch_item *const *items, size_t n);

typedef struct veil_batcher veil_batcher;

/*
 * A batcher for one hop.  hop names it in the metric (a literal, never
 * personal); max_batch bounds a batch.  A max_batch of 1 (or less) turns
 * batching off: veil_batch_run then runs each item at once on its caller's
 * thread as a batch of one, concurrently with the others, with no queue.
 * NULL when out of memory.
 */
veil_batcher *veil_batcher_new(const char *hop, size_t max_batch, veil_batch_fn fn, void *ctx);

/* Frees a batcher no thread is using any more; accepts NULL. */
void veil_batcher_free(veil_batcher *b);

/* How many batches ran so far and how many items they held in all. */
void veil_batcher_stats(veil_batcher *b, unsigned long long *batches, unsigned long long *items);

/* Runs item as part of a batch; returns when the batcher's function has handled it. */
void veil_batch_run(veil_batcher *b, veil_batch_item *item);

#endif
