/*
 * veil/pgarray.h - PostgreSQL arrays as bound parameters, for the stores'
 * batched statements (`= ANY($1::bytea[])`, `unnest($1::bytea[], ...)`):
 * the binary array format, built in a veil_buf and bound with vp_bytes
 * (binary) as one parameter.  One dimension, no NULL elements.
 *
 *   veil_buf a = {0};
 *   veil_pgarray_begin(&a, VEIL_OID_BYTEA, n);
 *   for (i ...) veil_pgarray_put(&a, ids[i], 32);
 *   if (a.failed) ...out of memory...;  p = vp_bytes(a.data, a.len);
 */
#ifndef VEIL_PGARRAY_H
#define VEIL_PGARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "veil/codec.h"

#define VEIL_OID_BYTEA 17
#define VEIL_OID_INT8  20
#define VEIL_OID_TEXT  25

/* Starts an array of n elements of type oid (its header). */
void veil_pgarray_begin(veil_buf *b, uint32_t oid, size_t n);

/* Appends one element of n bytes (text without its NUL; int8 via veil_pgarray_put_i64). */
void veil_pgarray_put(veil_buf *b, const void *p, size_t n);

/* Appends one int8 element. */
void veil_pgarray_put_i64(veil_buf *b, int64_t v);

#endif
