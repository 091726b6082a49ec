/*
 * veil/items.h - the serving side of a batched method (issue 15): the
 * vault's VerifyTicketBatch and ReleaseAttributesBatch, revocation's
 * AuthorizeBatch, consent's CheckBatch.  Items are independent: each is
 * checked and answered on its own and gets, as a veil.ItemStatus, the
 * status and message its unbatched call would have had; one bad item fails
 * only itself.  A batch that is empty or too large is refused as a whole.
 *
 *   veil_item_outcome *outs = veil_call_array(call, n, sizeof *outs);
 *   for each item i:  ...checks that call veil_call_fail...;
 *                     veil_item_end(call, &outs[i], err);
 *   veil_item_statuses(call, outs, n, &resp.status);  resp.n_status = n;
 */
#ifndef VEIL_ITEMS_H
#define VEIL_ITEMS_H

#include <stddef.h>

#include "veil/common.pb-c.h"
#include "veil/err.h"
#include "veil/rpc.h"

/* An item's outcome: what its unbatched call would reply (msg in the call's arena). */
typedef struct veil_item_outcome {
    veil_err err;
    const char *msg; /* when err: the client message */
} veil_item_outcome;

/* Refuses (INVALID_ARGUMENT, on call) a batch of no items or of more than max. */
veil_err veil_items_check(veil_call *call, size_t n, size_t max) VEIL_WUR;

/*
 * Ends an item with err and the message the call now carries for it (set by
 * veil_call_fail, else err's default), clearing the call for the next item
 * and for the batch's own reply.
 */
void veil_item_end(veil_call *call, veil_item_outcome *o, veil_err err);

/*
 * The unbatched door, a batch of one: the call's error from the batch's own
 * err (which wins) and its one item's outcome o, set on call.
 */
veil_err veil_item_single(veil_call *call, veil_err err, const veil_item_outcome *o);

/*
 * The items' outcomes as their statuses, in the call's arena (*status: n
 * pointers).  Refused items are counted in one info line naming the method
 * (the per-call log line says only OK); no item's content is logged.
 */
veil_err veil_item_statuses(veil_call *call, const veil_item_outcome *outs, size_t n,
                            Veil__ItemStatus ***status) VEIL_WUR;

#endif
