/*
 * veil/batch.h - natural micro-batching of one kind of work that many
 * calls need at once (issue 15 levers 1 and 2): no timer, and no caller need wait.
 *
 * Each batcher has a thread of its own.  A caller with one item of work
 * submits it and returns at once (its thread is free for other calls).
 * The batcher's thread takes every item queued at that moment (at most
 * max_batch), runs the batcher's function on them as one batch, and then
 * calls each item's continuation `done`, one after another, on that same
 * thread; then it takes whatever queued meanwhile.  Nothing waits on
 * purpose, so batches grow only with the load that is already there; a
 * lone item costs one wake-up of the batcher's thread.
 *
 *   struct my_item { veil_batch_item base; ...inputs...; veil_err err; };
 *   static void run(void *ctx, veil_batch_item *const *items, size_t n)
 *   {   ...one call for all n, then each ((struct my_item *)items[i])->err = ... }
 *   static void then(veil_batch_item *it) { ...continue with it's result... }
 *   b = veil_batcher_new("verify_ticket", 64, run, ctx);
 *   it->base.done = then;
 *   veil_batch_submit(b, &it->base);   // returns at once; then(it) runs later
 *
 * The function runs with the trace of the batch's first item current (the
 * trace current on the thread that submitted it, veil/trace.h): what it
 * logs and the calls it makes belong to that item's trace.  Each
 * continuation runs with its own item's trace current; one that is not the
 * batch's first logs first, at debug level, the trace id the batch went out
 * under (lead_trace_id), so a login's trace leads to the downstream lines
 * of its batched hops.  A continuation must be short and must not block
 * (the next batch waits for it): work that blocks goes elsewhere
 * (veil_call_resume).  It may free its item.  Each batch's size is
 * observed in the histogram veil_batch_items{hop=...}.
 */
#ifndef VEIL_BATCH_H
#define VEIL_BATCH_H

#include <pthread.h>
#include <stddef.h>

#include "veil/trace.h"

/* The batcher's part of an item: embed it first in the caller's item. */
typedef struct veil_batch_item {
    struct veil_batch_item *next;
    void (*done)(struct veil_batch_item *item); /* set by the caller: the continuation */
    size_t batch_items;  /* how many items its batch had */
    char lead_trace[33]; /* the trace id its batch was led under ("" when none) */
    veil_trace trace;    /* the submitter's trace (traced = 1) */
    int traced;
    void *wait;          /* veil_batch_run's waiter */
} veil_batch_item;

typedef void (*veil_batch_fn)(void *ctx, veil_batch_item *const *items, size_t n);

typedef struct veil_batcher veil_batcher;

/*
 * A batcher for one hop, with its thread started.  hop names it in the
 * metric (a literal, never personal); max_batch bounds a batch.  A
 * max_batch of 1 (or less) turns batching off: no thread, and
 * veil_batch_submit runs each item and its continuation at once on the
 * submitter's thread as a batch of one, side by side with the others.
 * NULL when out of memory or threads.
 */
veil_batcher *veil_batcher_new(const char *hop, size_t max_batch, veil_batch_fn fn, void *ctx);

/*
 * Runs every item still queued (and their continuations), then stops the
 * batcher's thread and frees it; accepts NULL.  Nothing may submit to it
 * any more.
 */
void veil_batcher_free(veil_batcher *b);

/* How many batches ran so far and how many items they held in all. */
void veil_batcher_stats(veil_batcher *b, unsigned long long *batches, unsigned long long *items);

/* Queues item (its `done` set) for the next batch; returns at once. */
void veil_batch_submit(veil_batcher *b, veil_batch_item *item);

/*
 * Submits item and waits on this thread until the batcher's function has
 * handled it (its `done` is the batcher's own): for a caller that may block
 * and has nothing else to do meanwhile (BeginLogin, a cache miss).
 */
void veil_batch_run(veil_batcher *b, veil_batch_item *item);

#endif
