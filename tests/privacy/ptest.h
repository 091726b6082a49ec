/*
 * ptest.h - what the privacy suites share: a stack whose gateway releases
 * events in eight-second batches (long enough for a test's fan-outs to fit
 * in one), waits on those batches, and the admin's identity states.
 */
#ifndef VEIL_TEST_PTEST_H
#define VEIL_TEST_PTEST_H

#include <stdint.h>

#include "e2e.h"

#define PT_BATCH_MS 8000
#define PT_SETTLE_MS 300

/* Starts s with PT_BATCH_MS event batches, or fails the test. */
void pt_stack_up(h_stack *s);

void pt_sleep_ms(int64_t ms);

/* Waits for the start of a batch, so what follows within a few seconds shares one. */
void pt_batch_start(void);

/* Waits until the batch of everything done so far has been released. */
void pt_batch_released(void);

/* The admin sets the identity of w to "active", "suspended" or "revoked". */
void pt_set_identity(h_stack *s, const vw_wallet *w, const char *state);

#endif
