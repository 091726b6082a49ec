/*
 * veil/trace.h - W3C Trace Context (https://www.w3.org/TR/trace-context/)
 * through veil's calls.
 *
 * A call's trace travels in the gRPC metadata key `traceparent`:
 *
 *   00-<trace id: 32 lowercase hex>-<parent span id: 16 lowercase hex>-<flags: 2 hex>
 *
 * The RPC server adopts the trace id of an incoming traceparent (from apps,
 * the admin and the other services; a wallet's or a probe's is ignored) or
 * starts a fresh random one, gives the call a fresh span id, and makes it the
 * current trace of whichever thread runs the handler.  Every log line written
 * on that thread carries "trace_id" and "span_id", and every call the handler
 * makes through veil/client.h sends traceparent with the same trace id and
 * the handler's span as parent.
 */
#ifndef VEIL_TRACE_H
#define VEIL_TRACE_H

#include <stddef.h>

#define VEIL_TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */

typedef struct veil_trace {
    char trace_id[33]; /* 32 lowercase hex digits, NUL-terminated */
    char span_id[17];  /* 16 lowercase hex digits, NUL-terminated */
    unsigned flags;    /* trace-flags (bit 0: sampled) */
} veil_trace;

/*
 * Parses a traceparent value of len bytes (version 00, or a later version
 * read as 00 says).  An all-zero trace or span id, upper-case hex or any
 * other deviation is refused.  Returns 1 and fills *out, or 0.
 */
int veil_trace_parse(const char *value, size_t len, veil_trace *out);

/* A fresh trace: random trace id and span id, flags 01. */
void veil_trace_new(veil_trace *out);

/* A child of parent: the same trace id and flags, a fresh random span id. */
void veil_trace_child(const veil_trace *parent, veil_trace *out);

/* Writes t as a traceparent value (VEIL_TRACEPARENT_LEN characters and a NUL). */
void veil_trace_format(const veil_trace *t, char out[VEIL_TRACEPARENT_LEN + 1]);

/* Makes t (copied) the calling thread's current trace; NULL clears it. */
void veil_trace_set_current(const veil_trace *t);

/* The calling thread's current trace, or NULL. */
const veil_trace *veil_trace_current(void);

#endif
