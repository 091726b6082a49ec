/*
 * cache_bench.c - the memory the gateway's revocation and consent cache
 * (services/gateway/cache.c) takes per answer it holds.
 *
 *   cache_bench CITIZENS [APPS]
 *
 * Fills a cache sized to hold everything with the answers a login needs for
 * CITIZENS citizens at APPS apps each (default 3, as tests/bench/run --scale
 * sets up): revocation's verdict and consent's grants with a purpose of a
 * few words, as the bench's consents carry.  Prints the heap the cache took
 * (glibc's mallinfo2: bytes in use and mapped, so the figure does not
 * depend on what the allocator kept from earlier; each allocation's own
 * header included), per answer, and the time a hit takes:
 *
 *   cache: answers=N heap_mib=… bytes_per_answer=… get_ns=…
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>

#include "cache.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2 || sodium_init() < 0) {
        fprintf(stderr, "usage: cache_bench CITIZENS [APPS]\n");
        return 2;
    }
    size_t citizens = strtoul(argv[1], NULL, 10), apps = argc > 2 ? strtoul(argv[2], NULL, 10) : 3;
    if (!citizens || !apps || apps > 81)
        return 2;
    static const char *const app_ids[] = {"gov.services", "chat.lianxin", "shop.taobao"};
    size_t answers = citizens * apps * 2;
    unsigned char (*subjects)[32] = malloc(citizens * 32);
    if (!subjects)
        return 1;
    randombytes_buf(subjects, citizens * 32);
    struct mallinfo2 m0 = mallinfo2();
    size_t before = m0.uordblks + m0.hblkhd;
    struct gw_cache *c;
    if (gw_cache_new(answers, &c) != VEIL_OK)
        return 1;
    gw_cache_set_usable(c, 1);
    gw_authz a = {.allowed = 1, .epoch = 0, .key_version = 1};
    gw_grants g = {.granted = 3, .expires_ms = 0};
    snprintf(g.purposes, sizeof g.purposes, "account and delivery");
    char app[32];
    for (size_t i = 0; i < citizens; i++) {
        for (size_t k = 0; k < apps; k++) {
            if (k < 3)
                snprintf(app, sizeof app, "%s", app_ids[k]);
            else
                snprintf(app, sizeof app, "app.%zu", k);
            gw_cache_put_authz(c, gw_cache_ticket(c), subjects[i], app, &a);
            gw_cache_put_grants(c, gw_cache_ticket(c), subjects[i], app, &g);
        }
    }
    struct mallinfo2 m1 = mallinfo2();
    size_t after = m1.uordblks + m1.hblkhd;
    size_t found = 0, gets = 0;
    double t0 = now_s();
    for (size_t i = 0; i < citizens; i++) {
        gw_authz out;
        found += (size_t)gw_cache_get_authz(c, subjects[i], app_ids[i % (apps < 3 ? apps : 3)], &out);
        gets++;
    }
    double t1 = now_s();
    if (found != gets) {
        fprintf(stderr, "cache_bench: %zu of %zu answers not found\n", gets - found, gets);
        return 1;
    }
    printf("cache: answers=%zu heap_mib=%.1f bytes_per_answer=%.0f get_ns=%.0f\n", answers,
           (double)(after - before) / 1048576.0, (double)(after - before) / (double)answers,
           (t1 - t0) * 1e9 / (double)gets);
    gw_cache_free(c);
    free(subjects);
    return 0;
}
