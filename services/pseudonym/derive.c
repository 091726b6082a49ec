/* derive.c - the pseudonym PRF (see pseudonym.h for the construction). */
#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "pseudonym.h"
#include "veil/codec.h"

void pseudonym_compute(const veil_key *key, const unsigned char *subject, const char *sector,
                      uint32_t epoch, char out[PSEUDONYM_MAX_LEN])
{
    static const char domain[] = "veil-pseudonym-v1";
    unsigned char msg[sizeof domain + 2 + 64 + PSEUDONYM_SUBJECT_BYTES + 4];
    size_t sl = strlen(sector), n = 0; /* sector ids are at most 64 bytes (validated) */
    memcpy(msg, domain, sizeof domain);
    n += sizeof domain;
    msg[n++] = (unsigned char)(sl >> 8);
    msg[n++] = (unsigned char)sl;
    memcpy(msg + n, sector, sl);
    n += sl;
    memcpy(msg + n, subject, PSEUDONYM_SUBJECT_BYTES);
    n += PSEUDONYM_SUBJECT_BYTES;
    for (int shift = 24; shift >= 0; shift -= 8)
        msg[n++] = (unsigned char)(epoch >> shift);

    unsigned char h[32];
    crypto_generichash(h, sizeof h, msg, n, key->bytes, VEIL_KEY_BYTES);
    int prefix = snprintf(out, PSEUDONYM_MAX_LEN, "v%u.", key->version);
    veil_b64url_encode(out + prefix, PSEUDONYM_MAX_LEN - (size_t)prefix, h, 20);
    sodium_memzero(h, sizeof h);
}
