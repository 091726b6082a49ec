/*
 * fuzz_dispatch - request decoding through the dispatcher.
 *
 * The first byte picks one method of one of veil's services (every method of
 * every descriptor the servers register); the rest is the request as it
 * would arrive in a gRPC message.  For the vault, consent, revocation and
 * pseudonym services the bytes go through veil_call_local: the RPC layer's
 * own unpack into the call arena, the real handler (with the real key
 * material and an unreachable database) and the reply's packing - and a
 * handler answering INTERNAL, or refusing without a message, is a finding.
 * Long-polls (they block by design) and the gateway's services (whose
 * handlers need the whole stack) are unpacked as the dispatcher unpacks
 * them.  Every request that unpacks must pack back to bytes that unpack to
 * the same encoding.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

/*
 * Whether m or a message inside it kept an unknown field numbered 0.
 * protobuf-c 1.4.1 accepts field number 0 written as an overlong varint
 * (0x80 0x00), keeps it as an unknown field and packs it back as 0x00, which
 * it then refuses (docs/fuzzing.md, finding 3).
 */
static int has_field_zero(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 1;
    for (unsigned i = 0; i < m->descriptor->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *at = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)at;
            for (size_t k = 0; k < n; k++)
                if (has_field_zero(items[k]))
                    return 1;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)at;
            if (sub && has_field_zero(sub))
                return 1;
        }
    }
    return 0;
}

/* Unpack, pack, unpack, pack: the second encoding must equal the first. */
static void round_trip(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t size)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size, data);
    if (!m)
        return;
    size_t n1, n2;
    uint8_t *once = fz_pack(m, &n1);
    ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, n1, once);
    if (!again && has_field_zero(m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        free(once);
        return;
    }
    if (!again)
        abort(); /* what we packed does not unpack */
    uint8_t *twice = fz_pack(again, &n2);
    if (n1 != n2 || memcmp(once, twice, n1) != 0)
        abort();
    protobuf_c_message_free_unpacked(again, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    free(once);
    free(twice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fz_method *all;
    size_t total = fz_methods(&all);
    if (size < 1)
        return 0;
    const fz_method *m = &all[data[0] % total];
    round_trip(m->method->input, data + 1, size - 1);
    if (m->local && (m->row->exec == VEIL_EXEC_INLINE || m->row->exec == VEIL_EXEC_WORKER))
        fz_call(m->local(), m->method->name, data + 1, size - 1);
    return 0;
}
