/*
 * common.h - small pieces the benchmark programs share: latency recording
 * and percentiles, clocks, and reading the address/TLS set-up from the
 * environment the run scripts export.
 */
#ifndef VEIL_BENCH_COMMON_H
#define VEIL_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "veil/tls.h"

typedef struct bench_lat {
    double *ms;
    size_t n, cap;
} bench_lat;

void bench_lat_add(bench_lat *l, double ms);
/* The p-th percentile (0-100) of what was added; sorts in place. */
double bench_lat_pct(bench_lat *l, double p);
void bench_lat_free(bench_lat *l);

double bench_now_s(void);

/* This process's CPU so far, user + system over all its threads (getrusage). */
double bench_cpu_s(void);
/* Online cores (the machine share is CPU / (wall time x cores)). */
int bench_cores(void);

/* TLS material for identity from $BENCH_CERTS (as deploy/local/mkcerts lays it out). */
void bench_tls(veil_tls_config *t, const char *identity, char *ca, char *cert, char *key,
               size_t len);

/* An integer from the environment, or def. */
long bench_env_long(const char *name, long def);

#endif
