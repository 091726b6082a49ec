/* common.c - latency percentiles and set-up for the benchmarks (common.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

void bench_lat_add(bench_lat *l, double ms)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 65536;
        double *p = realloc(l->ms, cap * sizeof *p);
        if (!p)
            return;
        l->ms = p;
        l->cap = cap;
    }
    l->ms[l->n++] = ms;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_lat_pct(bench_lat *l, double p)
{
    if (l->n == 0)
        return 0;
    qsort(l->ms, l->n, sizeof *l->ms, cmp);
    size_t i = (size_t)(p / 100.0 * (double)(l->n - 1) + 0.5);
    return l->ms[i < l->n ? i : l->n - 1];
}

double bench_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int bench_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void bench_lat_free(bench_lat *l)
{
    free(l->ms);
    memset(l, 0, sizeof *l);
}

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_tls(veil_tls_config *t, const char *identity, char *ca, char *cert, char *key,
               size_t len)
{
    const char *dir = getenv("BENCH_CERTS");
    memset(t, 0, sizeof *t);
    if (!dir || strcmp(identity, "plaintext") == 0) {
        t->plaintext = 1;
        return;
    }
    char base[256];
    snprintf(base, sizeof base, "%s", identity);
    for (char *p = base; *p; p++)
        if (*p == '/')
            *p = '-';
    snprintf(ca, len, "%s/ca.crt", dir);
    snprintf(cert, len, "%s/%s.crt", dir, base);
    snprintf(key, len, "%s/%s.key", dir, base);
    t->ca_file = ca;
    t->cert_file = cert;
    t->key_file = key;
}

long bench_env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : def;
}
