/*
 * parallel.h - one batch's independent items spread over the cores: the
 * calling thread and a fixed set of helper threads run a function over the
 * items together, and the call returns when every item is done (fork-join).
 *
 * Made for the CPU-bound part of a batched call (the vault's sealed-box opens
 * and signature checks of a batch of tickets, issue 15 lever 5): the worker
 * that holds the batch would otherwise do them one after another while the
 * other core waits.  Several callers may spread their batches at once; the
 * helpers serve them in order of arrival, and each caller also works on its
 * own items, so a batch never waits for a helper to be free.
 *
 * The function must be safe to run on several threads at once for different
 * items (no shared state written, no veil_call touched).
 */
#ifndef VEIL_PARALLEL_H
#define VEIL_PARALLEL_H

#include <stddef.h>

#include "veil/err.h"

typedef struct veil_helpers veil_helpers;

/* Starts `threads` helper threads (0: none, every item runs on its caller). */
veil_err veil_helpers_new(unsigned threads, veil_helpers **out) VEIL_WUR;
/* Stops and joins the helpers; no veil_helpers_for may be running. */
void veil_helpers_free(veil_helpers *h);

/*
 * Runs fn(ctx, i) once for each i in [0, n), on the calling thread and on
 * the helpers, and returns when all n have returned.  With no helpers (h
 * NULL or made with 0 threads) or fewer than two items, all run here, in
 * order.
 */
void veil_helpers_for(veil_helpers *h, size_t n, void (*fn)(void *ctx, size_t i), void *ctx);

#endif
