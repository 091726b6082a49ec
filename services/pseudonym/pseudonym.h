/*
 * pseudonym.h - the pseudonym service: per-sector pseudonyms under versioned
 * keys, with no database.  A pseudonym is
 *
 *   "v" <key version> "." base64url(first 20 bytes of
 *       BLAKE2b-256(key = pseudonym key <version>,
 *                   "veil-pseudonym-v1\0" | field(sector id) | subject ref (32)
 *                   | u32 link epoch)))
 *
 * so it is stable for one (citizen, sector, link epoch), unlinkable across
 * sectors without the key, irreversible, and says which key made it.
 */
#ifndef VEIL_PSEUDONYM_H
#define VEIL_PSEUDONYM_H

#include <stdint.h>

#include "veil/keys.h"
#include "veil/pseudonym.pb-c.h"
#include "veil/rpc.h"

#define PSEUDONYM_SUBJECT_BYTES 32
#define PSEUDONYM_MAX_LEN 48     /* "v" + 10 digits + "." + 27 + NUL, rounded up */
#define PSEUDONYM_BATCH_MAX 10000

struct pseudonym {
    Veil__Pseudonym__Pseudonym_Service rpc; /* first: handlers cast the service to this */
    veil_keyring *keys; /* every version found; which one derives is the caller's choice */
};

/* Writes the pseudonym of (subject, sector, epoch) under key into out. */
void pseudonym_compute(const veil_key *key, const unsigned char *subject, const char *sector,
                      uint32_t epoch, char out[PSEUDONYM_MAX_LEN]);

/* The handler table and its policy (handlers.c). */
extern const Veil__Pseudonym__Pseudonym_Service pseudonym_rpc;
extern const veil_method_policy pseudonym_policy[];
extern const size_t pseudonym_policy_len;

#endif
