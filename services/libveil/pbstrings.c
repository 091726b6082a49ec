/*
 * pbstrings.c - the one check every string crossing a veil API passes.
 *
 * protobuf-c unpacks a `string` field into a NUL-terminated C string and
 * keeps no length, so "probe.update\0junk" reaches a handler as
 * "probe.update", and it does not validate UTF-8 at all.  Rather than have
 * every handler guess, the RPC layer walks the serialized message once, with
 * its descriptor, before the handler runs (and over every reply a client
 * receives): each string field, in nested messages too, must be well-formed
 * UTF-8 without NUL, overlong forms or surrogates (veil_utf8_valid).
 */
#include <stddef.h>
#include <stdint.h>

#include "veil/codec.h"
#include "veil/rpc.h"

#define MAX_DEPTH 32

/* Reads a base-128 varint; 0 on success. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

static int walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                int depth, const char **field)
{
    if (depth > MAX_DEPTH) {
        *field = d->name;
        return 0;
    }
    while (p < end) {
        uint64_t tag, n;
        if (read_varint(&p, end, &tag) != 0)
            return 0;
        const ProtobufCFieldDescriptor *f =
            tag >> 3 <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3))
                : NULL;
        switch (tag & 7) {
        case 0:
            if (read_varint(&p, end, &n) != 0)
                return 0;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return 0;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return 0;
            p += 4;
            break;
        case 2:
            if (read_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p))
                return 0;
            if (f && f->type == PROTOBUF_C_TYPE_STRING && !veil_utf8_valid((const char *)p, n)) {
                *field = f->name;
                return 0;
            }
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !walk(f->descriptor, p, p + n, depth + 1, field))
                return 0;
            p += n;
            break;
        default: /* groups: protobuf-c refuses them when unpacking */
            return 0;
        }
    }
    return 1;
}

int veil_pb_strings_valid(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                          const char **field)
{
    const char *ignored;
    if (!field)
        field = &ignored;
    *field = NULL;
    return walk(d, data, data + len, 0, field);
}
