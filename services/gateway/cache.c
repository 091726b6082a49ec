/*
 * cache.c - subject-grouped caches with race-free fills (cache.h).
 *
 * A fixed table of buckets, chosen by the subject reference (random bytes, so
 * its first eight bytes are already a good hash); each bucket a short chain
 * of entries under one of 64 striped locks.  When the cache holds max
 * answers, new answers are simply not stored: a full cache costs a service
 * call, never a wrong answer.
 *
 * One entry per (subject, app) holds both answers a login needs about it -
 * revocation's verdict and consent's grants, each present or not - so the
 * subject and the app are stored once for the two.  The app id and a
 * refusal's reason code point into a table of interned strings (registered
 * apps and revocation's reason codes: a few hundred at most, kept until the
 * cache is freed; past INTERNED_MAX distinct strings nothing new is
 * stored), and the grants' purposes are kept at their own length (most are
 * a few words, the field allows 255 bytes).  An entry is ~100 bytes for two
 * answers, against ~200 for each answer before (docs/performance.md): with
 * 100,000 active citizens, the cache's memory is most of the gateway's.
 * Reads copy the value and never past the allocation.  max counts answers,
 * not entries, as GATEWAY_CACHE_ENTRIES always has.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define STRIPES      64
#define INTERNED_MAX 4096

struct entry {
    struct entry *next;
    unsigned char subject[32];
    const char *app;    /* interned */
    const char *reason; /* interned; NULL when none */
    int64_t expires_ms;
    uint32_t epoch, key_version, previous_key_version;
    unsigned granted;
    unsigned char has_authz, has_grants, allowed;
    char purposes[]; /* allocated to its length */
};

/* The bytes before the purposes: what an entry of any length holds. */
#define HEAD offsetof(struct entry, purposes)

/* Interned strings: a chained hash set, never shrinking until the cache is freed. */
struct interned {
    struct interned *next;
    char s[];
};

struct gw_cache {
    struct entry **buckets;
    size_t nbuckets;
    pthread_mutex_t stripes[STRIPES];
    _Atomic size_t count; /* answers held */
    size_t max;
    _Atomic uint64_t invalidations;
    _Atomic int usable;
    _Atomic uint64_t hits, misses;
    pthread_mutex_t intern_lock;
    struct interned *strings[256];
    size_t n_strings;
};

veil_err gw_cache_new(size_t max_entries, struct gw_cache **out)
{
    *out = NULL;
    struct gw_cache *c = calloc(1, sizeof *c);
    if (!c)
        return VEIL_ERR_NOMEM;
    c->nbuckets = 1;
    while (c->nbuckets < max_entries / 4)
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
    pthread_mutex_init(&c->intern_lock, NULL);
    c->max = max_entries;
    *out = c;
    return VEIL_OK;
}

/* The interned copy of s (NULL when out of memory or the table is full). */
static const char *intern(struct gw_cache *c, const char *s)
{
    unsigned h = 5381;
    for (const char *p = s; *p; p++)
        h = h * 33 + (unsigned char)*p;
    struct interned **head = &c->strings[h & 255];
    const char *found = NULL;
    pthread_mutex_lock(&c->intern_lock);
    for (struct interned *i = *head; i && !found; i = i->next)
        if (strcmp(i->s, s) == 0)
            found = i->s;
    if (!found && c->n_strings < INTERNED_MAX) {
        size_t len = strlen(s) + 1;
        struct interned *i = malloc(sizeof *i + len);
        if (i) {
            memcpy(i->s, s, len);
            i->next = *head;
            *head = i;
            c->n_strings++;
            found = i->s;
        }
    }
    pthread_mutex_unlock(&c->intern_lock);
    return found;
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

static size_t answers(const struct entry *e)
{
    return (size_t)e->has_authz + e->has_grants;
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
            atomic_fetch_sub(&c->count, answers(e));
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
    for (int h = 0; h < 256; h++) {
        for (struct interned *i = c->strings[h], *next; i; i = next) {
            next = i->next;
            free(i);
        }
    }
    pthread_mutex_destroy(&c->intern_lock);
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

/* The entry of (subject, app) in its bucket, locked by the caller; NULL when none. */
static struct entry **find(struct gw_cache *c, size_t b, const unsigned char subject[32],
                           const char *app)
{
    for (struct entry **pp = &c->buckets[b]; *pp; pp = &(*pp)->next)
        if (memcmp((*pp)->subject, subject, 32) == 0 && strcmp((*pp)->app, app) == 0)
            return pp;
    return NULL;
}

/*
 * A copy of (subject, app)'s entry into e, and of its purposes when
 * purposes is not NULL; 0 when there is none or the cache is unusable.
 */
static int lookup(struct gw_cache *c, const unsigned char subject[32], const char *app,
                  struct entry *e, char purposes[VEIL_RELEASE_PURPOSE_MAX + 1])
{
    int found = 0;
    if (atomic_load(&c->usable)) {
        size_t b = bucket_of(c, subject);
        pthread_mutex_lock(lock_of(c, b));
        struct entry **pp = find(c, b, subject, app);
        if (pp) {
            memcpy(e, *pp, HEAD);
            if (purposes)
                snprintf(purposes, VEIL_RELEASE_PURPOSE_MAX + 1, "%s", (*pp)->purposes);
            found = 1;
        }
        pthread_mutex_unlock(lock_of(c, b));
    }
    return found;
}

/* Counts a look-up's outcome; returns it. */
static int counted(struct gw_cache *c, int found)
{
    atomic_fetch_add(found ? &c->hits : &c->misses, 1);
    return found;
}

int gw_cache_get_authz(struct gw_cache *c, const unsigned char subject[32], const char *app,
                       gw_authz *out)
{
    struct entry e;
    if (!counted(c, lookup(c, subject, app, &e, NULL) && e.has_authz))
        return 0;
    memset(out, 0, sizeof *out);
    out->allowed = e.allowed;
    out->epoch = e.epoch;
    out->key_version = e.key_version;
    out->previous_key_version = e.previous_key_version;
    snprintf(out->reason, sizeof out->reason, "%s", e.reason ? e.reason : "");
    return 1;
}

int gw_cache_get_grants(struct gw_cache *c, const unsigned char subject[32], const char *app,
                        int64_t now_ms, gw_grants *out)
{
    struct entry e;
    char purposes[sizeof out->purposes];
    if (!counted(c, lookup(c, subject, app, &e, purposes) && e.has_grants))
        return 0;
    if (e.expires_ms && e.expires_ms <= now_ms)
        return 0; /* a grant inside it has expired: ask again */
    out->granted = e.granted;
    out->expires_ms = e.expires_ms;
    memcpy(out->purposes, purposes, sizeof out->purposes);
    return 1;
}

/*
 * Stores one answer for (subject, app): an authz verdict (a) or grants (g).
 * The entry is rebuilt at the size its purposes need and replaces the old
 * one, keeping the other answer it held.
 */
static void put(struct gw_cache *c, uint64_t ticket, const unsigned char subject[32],
                const char *app, const gw_authz *a, const gw_grants *g)
{
    if (!atomic_load(&c->usable) || atomic_load(&c->count) >= c->max)
        return;
    const char *app_i = intern(c, app);
    const char *reason_i = a && a->reason[0] ? intern(c, a->reason) : NULL;
    if (!app_i || (a && a->reason[0] && !reason_i))
        return;
    size_t b = bucket_of(c, subject);
    pthread_mutex_t *m = lock_of(c, b);
    pthread_mutex_lock(m);
    /* Checked under the lock that invalidation of this subject also takes. */
    if (atomic_load(&c->invalidations) != ticket) {
        pthread_mutex_unlock(m);
        return;
    }
    struct entry **pp = find(c, b, subject, app);
    struct entry *old = pp ? *pp : NULL;
    const char *purposes = g ? g->purposes : old && old->has_grants ? old->purposes : "";
    size_t plen = strnlen(purposes, VEIL_RELEASE_PURPOSE_MAX);
    struct entry *n = malloc(HEAD + plen + 1);
    if (!n) {
        pthread_mutex_unlock(m);
        return;
    }
    if (old)
        memcpy(n, old, HEAD);
    else
        memset(n, 0, HEAD);
    memcpy(n->purposes, purposes, plen);
    n->purposes[plen] = '\0';
    memcpy(n->subject, subject, 32);
    n->app = app_i;
    if (a) {
        n->has_authz = 1;
        n->allowed = a->allowed ? 1 : 0;
        n->epoch = a->epoch;
        n->key_version = a->key_version;
        n->previous_key_version = a->previous_key_version;
        n->reason = reason_i;
    }
    if (g) {
        n->has_grants = 1;
        n->granted = g->granted;
        n->expires_ms = g->expires_ms;
    }
    atomic_fetch_add(&c->count, answers(n) - (old ? answers(old) : 0));
    if (old) {
        n->next = old->next;
        *pp = n;
    } else {
        n->next = c->buckets[b];
        c->buckets[b] = n;
    }
    pthread_mutex_unlock(m);
    free(old);
}

void gw_cache_put_authz(struct gw_cache *c, uint64_t ticket, const unsigned char subject[32],
                        const char *app, const gw_authz *v)
{
    put(c, ticket, subject, app, v, NULL);
}

void gw_cache_put_grants(struct gw_cache *c, uint64_t ticket, const unsigned char subject[32],
                         const char *app, const gw_grants *v)
{
    put(c, ticket, subject, app, NULL, v);
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
            atomic_fetch_sub(&c->count, answers(e));
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
