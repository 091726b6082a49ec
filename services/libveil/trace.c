/* trace.c - W3C trace context: parsing, fresh ids, the thread's current trace (veil/trace.h). */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "veil/trace.h"

static _Thread_local veil_trace current;
static _Thread_local int has_current;

/* Whether s[0..n) is lowercase hex and not all zeros. */
static int hex_id_ok(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        nonzero |= c != '0';
    }
    return nonzero;
}

static int hex_byte(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 2; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9')
            v = v << 4 | (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v << 4 | (unsigned)(c - 'a' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

int veil_trace_parse(const char *v, size_t len, veil_trace *out)
{
    unsigned version, flags;
    if (len < VEIL_TRACEPARENT_LEN || !hex_byte(v, &version) || version == 0xff || v[2] != '-' ||
        v[35] != '-' || v[52] != '-' || !hex_id_ok(v + 3, 32) || !hex_id_ok(v + 36, 16) ||
        !hex_byte(v + 53, &flags))
        return 0;
    /* Version 00 is exactly 55 characters; a later version may append "-..." fields. */
    if (len != VEIL_TRACEPARENT_LEN && (version == 0 || v[VEIL_TRACEPARENT_LEN] != '-'))
        return 0;
    memcpy(out->trace_id, v + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->span_id, v + 36, 16);
    out->span_id[16] = '\0';
    out->flags = flags;
    return 1;
}

static void random_hex(char *out, size_t bytes)
{
    unsigned char raw[16];
    do
        randombytes_buf(raw, bytes);
    while (sodium_is_zero(raw, bytes));
    sodium_bin2hex(out, bytes * 2 + 1, raw, bytes);
}

void veil_trace_new(veil_trace *out)
{
    random_hex(out->trace_id, 16);
    random_hex(out->span_id, 8);
    out->flags = 1;
}

void veil_trace_child(const veil_trace *parent, veil_trace *out)
{
    memcpy(out->trace_id, parent->trace_id, sizeof out->trace_id);
    out->flags = parent->flags;
    random_hex(out->span_id, 8);
}

void veil_trace_format(const veil_trace *t, char out[VEIL_TRACEPARENT_LEN + 1])
{
    snprintf(out, VEIL_TRACEPARENT_LEN + 1, "00-%s-%s-%02x", t->trace_id, t->span_id,
             t->flags & 0xffu);
}

void veil_trace_set_current(const veil_trace *t)
{
    if (t)
        current = *t;
    has_current = t != NULL;
}

const veil_trace *veil_trace_current(void)
{
    return has_current ? &current : NULL;
}
