/*
 * pgarray.c - PostgreSQL's binary array format for bound parameters
 * (veil/pgarray.h).
 */
#include "veil/pgarray.h"

void veil_pgarray_begin(veil_buf *b, uint32_t oid, size_t n)
{
    veil_buf_put_u32(b, 1); /* dimensions */
    veil_buf_put_u32(b, 0); /* no NULLs */
    veil_buf_put_u32(b, oid);
    veil_buf_put_u32(b, (uint32_t)n);
    veil_buf_put_u32(b, 1); /* lower bound */
}

void veil_pgarray_put(veil_buf *b, const void *p, size_t n)
{
    veil_buf_put_u32(b, (uint32_t)n);
    veil_buf_put(b, p, n);
}

void veil_pgarray_put_i64(veil_buf *b, int64_t v)
{
    veil_buf_put_u32(b, 8);
    veil_buf_put_i64(b, v);
}
