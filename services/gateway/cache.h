/*
 * cache.h - the gateway's caches of revocation and consent answers.
 *
 * Entries are grouped by subject so that a change about one citizen drops
 * exactly that citizen's entries.  Two rules keep them honest:
 *  - a fill races with invalidations: take a ticket before asking the
 *    service, and the put is dropped if any invalidation happened since;
 *  - the cache only answers while the change feeds are healthy; when a feed
 *    falls behind it is bypassed, and emptied when it recovers.
 */
#ifndef VEIL_GATEWAY_CACHE_H
#define VEIL_GATEWAY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "veil/formats.h"

#include "veil/err.h"

struct gw_cache;

typedef struct gw_authz {
    int allowed;
    uint32_t epoch;
    uint32_t key_version, previous_key_version; /* what the link has recorded (0: none) */
    char reason[32]; /* revocation's reason_code when refused */
} gw_authz;

typedef struct gw_grants {
    unsigned granted;      /* scope bits with live consent */
    int64_t expires_ms;    /* the earliest expiry among them (0: none granted) */
    char purposes[VEIL_RELEASE_PURPOSE_MAX + 1]; /* distinct purposes, "; "-separated */
} gw_grants;

veil_err gw_cache_new(size_t max_entries, struct gw_cache **out) VEIL_WUR;
void gw_cache_free(struct gw_cache *c);

/* Whether the cache may answer (both feeds healthy); turning usable empties it. */
void gw_cache_set_usable(struct gw_cache *c, int usable);

/* Read before asking a service; pass to the put that stores the answer. */
uint64_t gw_cache_ticket(struct gw_cache *c);

/*
 * Revocation's verdict and consent's grants for (subject, app): one entry
 * holds both.  The verdict is the login's, without a device (the vault
 * refuses a revoked device itself).  A get returns 1 and fills out when
 * the answer is held (grants: and none of them has expired at now_ms).
 */
int gw_cache_get_authz(struct gw_cache *c, const unsigned char subject[32], const char *app,
                       gw_authz *out);
void gw_cache_put_authz(struct gw_cache *c, uint64_t ticket, const unsigned char subject[32],
                        const char *app, const gw_authz *v);
int gw_cache_get_grants(struct gw_cache *c, const unsigned char subject[32], const char *app,
                        int64_t now_ms, gw_grants *out);
void gw_cache_put_grants(struct gw_cache *c, uint64_t ticket, const unsigned char subject[32],
                         const char *app, const gw_grants *v);

/* Drops everything about one subject / everything. */
void gw_cache_invalidate_subject(struct gw_cache *c, const unsigned char subject[32]);
void gw_cache_invalidate_all(struct gw_cache *c);

/* Hits and misses since start (for the logs and the benchmark). */
void gw_cache_stats(struct gw_cache *c, uint64_t *hits, uint64_t *misses);

#endif
