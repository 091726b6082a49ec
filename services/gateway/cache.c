/*
 * cache.c - subject-grouped caches with race-free fills (cache.h).
 *
 * A fixed table of buckets, chosen by the subject reference (random bytes, so
 * its first eight bytes are already a good hash); each bucket a short chain
 * of entries under one of 64 striped locks.  When the cache holds max
 * entries, new answers are simply not stored: a full cache costs a service
 * call, never a wrong answer.
 *
 * An entry is allocated only as long as its kind needs: a revocation verdict
 * has no purposes, and a consent answer's purposes are kept at their own
 * length (most are a few words, the field allows 255 bytes).  That keeps an
 * entry near 190 bytes instead of 430, which is most of the gateway's memory
 * once many citizens log in (docs/performance.md).  Reads copy the value by
 * kind and never past the allocation.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define STRIPES 64

enum kind { AUTHZ, GRANTS };

struct entry {
    struct entry *next;
    unsigned char subject[32];
    enum kind kind;
    char device[33];
    char app[65];
    union {
        gw_authz authz;
        gw_grants grants; /* purposes allocated to its length (entry_size) */
    } v;
};

/* The bytes an entry of this content occupies: its key and its kind's value. */
static size_t entry_size(const struct entry *e)
{
    size_t head = offsetof(struct entry, v);
    if (e->kind == AUTHZ)
        return head + sizeof(gw_authz);
    return head + offsetof(gw_grants, purposes) +
           strnlen(e->v.grants.purposes, sizeof e->v.grants.purposes - 1) + 1;
}

/* Copies a stored entry's value into a full-size entry, reading only what was stored. */
static void copy_value(struct entry *out, const struct entry *e)
{
    out->kind = e->kind;
    if (e->kind == AUTHZ) {
        out->v.authz = e->v.authz;
        return;
    }
    out->v.grants.granted = e->v.grants.granted;
    out->v.grants.expires_ms = e->v.grants.expires_ms;
    snprintf(out->v.grants.purposes, sizeof out->v.grants.purposes, "%s", e->v.grants.purposes);
}

struct gw_cache {
    struct entry **buckets;
    size_t nbuckets;
    pthread_mutex_t stripes[STRIPES];
    _Atomic size_t count;
    size_t max;
    _Atomic uint64_t invalidations;
    _Atomic int usable;
    _Atomic uint64_t hits, misses;
};

veil_err gw_cache_new(size_t max_entries, struct gw_cache **out)
{
    *out = NULL;
    struct gw_cache *c = calloc(1, sizeof *c);
    if (!c)
        return VEIL_ERR_NOMEM;
    c->nbuckets = 1;
    while (c->nbuckets < max_entries / 2)
        c->nbuckets *= 2;
    if (c->nbuckets < STRIPES)
        c->nbuckets = STRIPES;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return VEIL_ERR_NOMEM;
    }
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&c->stripes[i], NULL);
    c->max = max_entries;
    *out = c;
    return VEIL_OK;
}

static size_t bucket_of(const struct gw_cache *c, const unsigned char subject[32])
{
    uint64_t h;
    memcpy(&h, subject, sizeof h);
    return (size_t)(h & (c->nbuckets - 1));
}

static pthread_mutex_t *lock_of(struct gw_cache *c, size_t bucket)
{
    return &c->stripes[bucket % STRIPES];
}

static void free_chain(struct entry *e)
{
    while (e) {
        struct entry *next = e->next;
        free(e);
        e = next;
    }
}

/* Empties every bucket. */
static void clear(struct gw_cache *c)
{
    for (size_t b = 0; b < c->nbuckets; b++) {
        pthread_mutex_t *m = lock_of(c, b);
        pthread_mutex_lock(m);
        struct entry *chain = c->buckets[b];
        c->buckets[b] = NULL;
        for (struct entry *e = chain; e; e = e->next)
            atomic_fetch_sub(&c->count, 1);
        pthread_mutex_unlock(m);
        free_chain(chain);
    }
}

void gw_cache_free(struct gw_cache *c)
{
    if (!c)
        return;
    clear(c);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&c->stripes[i]);
    free(c->buckets);
    free(c);
}

void gw_cache_set_usable(struct gw_cache *c, int usable)
{
    int was = atomic_exchange(&c->usable, usable ? 1 : 0);
    if (was != usable) {
        /* Whatever was stored before may have missed changes: start over. */
        atomic_fetch_add(&c->invalidations, 1);
        clear(c);
    }
}

uint64_t gw_cache_ticket(struct gw_cache *c)
{
    return atomic_load(&c->invalidations);
}

static int same(const struct entry *e, const unsigned char subject[32], enum kind kind,
                const char *device, const char *app)
{
    return e->kind == kind && memcmp(e->subject, subject, 32) == 0 &&
           strcmp(e->app, app) == 0 && (kind != AUTHZ || strcmp(e->device, device) == 0);
}

static int get(struct gw_cache *c, const unsigned char subject[32], enum kind kind,
               const char *device, const char *app, struct entry *out)
{
    if (!atomic_load(&c->usable)) {
        atomic_fetch_add(&c->misses, 1);
        return 0;
    }
    size_t b = bucket_of(c, subject);
    int found = 0;
    pthread_mutex_lock(lock_of(c, b));
    for (struct entry *e = c->buckets[b]; e; e = e->next) {
        if (same(e, subject, kind, device, app)) {
            copy_value(out, e);
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(lock_of(c, b));
    atomic_fetch_add(found ? &c->hits : &c->misses, 1);
    return found;
}

static void put(struct gw_cache *c, uint64_t ticket, const struct entry *proto)
{
    if (!atomic_load(&c->usable) || atomic_load(&c->count) >= c->max)
        return;
    size_t size = entry_size(proto);
    struct entry *n = malloc(size);
    if (!n)
        return;
    memcpy(n, proto, size);
    if (proto->kind == GRANTS)
        ((char *)n)[size - 1] = '\0'; /* the purposes end inside the allocation, always */
    size_t b = bucket_of(c, proto->subject);
    pthread_mutex_t *m = lock_of(c, b);
    pthread_mutex_lock(m);
    /* Checked under the lock that invalidation of this subject also takes. */
    if (atomic_load(&c->invalidations) != ticket) {
        pthread_mutex_unlock(m);
        free(n);
        return;
    }
    struct entry **pp = &c->buckets[b];
    for (; *pp; pp = &(*pp)->next) {
        if (same(*pp, proto->subject, proto->kind, proto->device, proto->app)) {
            n->next = (*pp)->next;
            free(*pp);
            *pp = n;
            pthread_mutex_unlock(m);
            return;
        }
    }
    n->next = NULL;
    *pp = n;
    atomic_fetch_add(&c->count, 1);
    pthread_mutex_unlock(m);
}

static void key(struct entry *e, const unsigned char subject[32], enum kind kind,
                const char *device, const char *app)
{
    memset(e, 0, sizeof *e);
    memcpy(e->subject, subject, 32);
    e->kind = kind;
    if (device)
        strncpy(e->device, device, sizeof e->device - 1);
    strncpy(e->app, app, sizeof e->app - 1);
}

int gw_cache_get_authz(struct gw_cache *c, const unsigned char subject[32], const char *device,
                       const char *app, gw_authz *out)
{
    struct entry e;
    if (!get(c, subject, AUTHZ, device, app, &e))
        return 0;
    *out = e.v.authz;
    return 1;
}

void gw_cache_put_authz(struct gw_cache *c, uint64_t ticket, const unsigned char subject[32],
                        const char *device, const char *app, const gw_authz *v)
{
    struct entry e;
    key(&e, subject, AUTHZ, device, app);
    e.v.authz = *v;
    put(c, ticket, &e);
}

int gw_cache_get_grants(struct gw_cache *c, const unsigned char subject[32], const char *app,
                        int64_t now_ms, gw_grants *out)
{
    struct entry e;
    if (!get(c, subject, GRANTS, NULL, app, &e))
        return 0;
    if (e.v.grants.expires_ms && e.v.grants.expires_ms <= now_ms)
        return 0; /* a grant inside it has expired: ask again */
    *out = e.v.grants;
    return 1;
}

void gw_cache_put_grants(struct gw_cache *c, uint64_t ticket, const unsigned char subject[32],
                         const char *app, const gw_grants *v)
{
    struct entry e;
    key(&e, subject, GRANTS, NULL, app);
    e.v.grants = *v;
    put(c, ticket, &e);
}

void gw_cache_invalidate_subject(struct gw_cache *c, const unsigned char subject[32])
{
    size_t b = bucket_of(c, subject);
    pthread_mutex_t *m = lock_of(c, b);
    struct entry *dead = NULL;
    pthread_mutex_lock(m);
    atomic_fetch_add(&c->invalidations, 1);
    struct entry **pp = &c->buckets[b];
    while (*pp) {
        struct entry *e = *pp;
        if (memcmp(e->subject, subject, 32) == 0) {
            *pp = e->next;
            e->next = dead;
            dead = e;
            atomic_fetch_sub(&c->count, 1);
        } else {
            pp = &e->next;
        }
    }
    pthread_mutex_unlock(m);
    free_chain(dead);
}

void gw_cache_invalidate_all(struct gw_cache *c)
{
    atomic_fetch_add(&c->invalidations, 1);
    clear(c);
}

void gw_cache_stats(struct gw_cache *c, uint64_t *hits, uint64_t *misses)
{
    *hits = atomic_load(&c->hits);
    *misses = atomic_load(&c->misses);
}
