/*
 * metrics.c - a small Prometheus registry (veil/metrics.h).
 *
 * One process-wide list of families, each with its series in a small array
 * searched linearly under the family's mutex: veil's families have tens of
 * series (methods x statuses), and an add is a few string compares.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "veil/metrics.h"

#define MAX_LABELS     4
#define MAX_COLLECTORS 16

enum kind { COUNTER, GAUGE, HISTOGRAM };

struct series {
    char *labels; /* formatted: name="value",... ("" without labels) */
    double value; /* counter, gauge; histogram: sum */
    uint64_t count;
    uint64_t *buckets; /* histogram: one per bound (cumulative at render) */
};

struct veil_metric {
    struct veil_metric *next;
    const char *name, *help;
    enum kind kind;
    const char *label_names[MAX_LABELS];
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    pthread_mutex_t mu;
    struct series *series;
    size_t n_series, cap_series;
};

const double veil_metric_latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,  5};
const size_t veil_metric_latency_bounds_len =
    sizeof veil_metric_latency_bounds / sizeof veil_metric_latency_bounds[0];

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static veil_metric *families;
static struct {
    veil_metrics_collector fn;
    void *arg;
} collectors[MAX_COLLECTORS];
/* A scrape holds collectors_mu while it runs them, so removal waits for it. */
static pthread_mutex_t collectors_mu = PTHREAD_MUTEX_INITIALIZER;

static veil_metric *family(const char *name, const char *help, const char *labels, enum kind kind,
                           const double *bounds, size_t n_bounds)
{
    pthread_mutex_lock(&registry_mu);
    veil_metric *m;
    for (m = families; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            goto out;
    m = calloc(1, sizeof *m);
    if (!m)
        goto out;
    m->name = name;
    m->help = help;
    m->kind = kind;
    for (const char *p = labels; p && *p && m->n_labels < MAX_LABELS;) {
        size_t len = strcspn(p, ",");
        char *l = strndup(p, len);
        if (!l)
            break;
        m->label_names[m->n_labels++] = l;
        p += len + (p[len] == ',');
    }
    if (n_bounds) {
        m->bounds = malloc(n_bounds * sizeof *m->bounds);
        if (m->bounds) {
            memcpy(m->bounds, bounds, n_bounds * sizeof *bounds);
            m->n_bounds = n_bounds;
        }
    }
    pthread_mutex_init(&m->mu, NULL);
    m->next = families;
    families = m;
out:
    pthread_mutex_unlock(&registry_mu);
    return m;
}

veil_metric *veil_metric_counter(const char *name, const char *help, const char *labels)
{
    return family(name, help, labels, COUNTER, NULL, 0);
}

veil_metric *veil_metric_gauge(const char *name, const char *help, const char *labels)
{
    return family(name, help, labels, GAUGE, NULL, 0);
}

veil_metric *veil_metric_histogram(const char *name, const char *help, const char *labels,
                                   const double *bounds, size_t n)
{
    return family(name, help, labels, HISTOGRAM, bounds, n);
}

/* Appends s to buf[*len..cap) escaped as a label value (\\, \" and \n). */
static void put_escaped(char *buf, size_t cap, size_t *len, const char *s)
{
    for (; s && *s && *len + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = *s;
        } else if (*s == '\n') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = 'n';
        } else {
            buf[(*len)++] = *s;
        }
    }
    buf[*len] = '\0';
}

/* The series of m with these label values, created if new; NULL when out of memory. */
static struct series *series_of(veil_metric *m, const char *const *values)
{
    char key[512];
    size_t len = 0;
    key[0] = '\0';
    for (size_t i = 0; i < m->n_labels; i++) {
        size_t nl = strlen(m->label_names[i]);
        if (len + nl + 8 >= sizeof key)
            break;
        if (i)
            key[len++] = ',';
        memcpy(key + len, m->label_names[i], nl);
        len += nl;
        key[len++] = '=';
        key[len++] = '"';
        put_escaped(key, sizeof key - 2, &len, values ? values[i] : "");
        key[len++] = '"';
        key[len] = '\0';
    }
    for (size_t i = 0; i < m->n_series; i++)
        if (strcmp(m->series[i].labels, key) == 0)
            return &m->series[i];
    if (m->n_series == m->cap_series) {
        size_t cap = m->cap_series ? m->cap_series * 2 : 8;
        struct series *s = realloc(m->series, cap * sizeof *s);
        if (!s)
            return NULL;
        m->series = s;
        m->cap_series = cap;
    }
    struct series *s = &m->series[m->n_series];
    memset(s, 0, sizeof *s);
    s->labels = strdup(key);
    if (!s->labels)
        return NULL;
    if (m->n_bounds && !(s->buckets = calloc(m->n_bounds, sizeof *s->buckets))) {
        free(s->labels);
        return NULL;
    }
    m->n_series++;
    return s;
}

/* Adds v to the series of values (add), or sets it to v. */
static void update(veil_metric *m, double v, const char *const *values, int add)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    struct series *s = series_of(m, values);
    if (s)
        s->value = add ? s->value + v : v;
    pthread_mutex_unlock(&m->mu);
}

void veil_metric_add(veil_metric *m, double v, const char *const *values)
{
    update(m, v, values, 1);
}

void veil_metric_set(veil_metric *m, double v, const char *const *values)
{
    update(m, v, values, 0);
}

void veil_metric_observe(veil_metric *m, double v, const char *const *values)
{
    if (!m || m->kind != HISTOGRAM)
        return;
    pthread_mutex_lock(&m->mu);
    struct series *s = series_of(m, values);
    if (s) {
        s->value += v;
        s->count++;
        for (size_t i = 0; i < m->n_bounds; i++)
            if (v <= m->bounds[i]) {
                s->buckets[i]++;
                break;
            }
    }
    pthread_mutex_unlock(&m->mu);
}

int veil_metrics_add_collector(veil_metrics_collector fn, void *arg)
{
    int ok = -1;
    pthread_mutex_lock(&collectors_mu);
    for (int i = 0; i < MAX_COLLECTORS; i++)
        if (!collectors[i].fn) {
            collectors[i].fn = fn;
            collectors[i].arg = arg;
            ok = 0;
            break;
        }
    pthread_mutex_unlock(&collectors_mu);
    return ok;
}

void veil_metrics_remove_collector(veil_metrics_collector fn, void *arg)
{
    pthread_mutex_lock(&collectors_mu);
    for (int i = 0; i < MAX_COLLECTORS; i++)
        if (collectors[i].fn == fn && collectors[i].arg == arg)
            collectors[i].fn = NULL;
    pthread_mutex_unlock(&collectors_mu);
}

struct veil_metrics_out {
    FILE *f;
    const char *last; /* the family whose HELP/TYPE was written last */
};

/* Prometheus numbers: integers without a fraction, +Inf, NaN. */
static void put_number(FILE *f, double v)
{
    if (isnan(v))
        fputs("NaN", f);
    else if (isinf(v))
        fputs(v > 0 ? "+Inf" : "-Inf", f);
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        fprintf(f, "%lld", (long long)v);
    else
        fprintf(f, "%.9g", v);
}

static void header(veil_metrics_out *o, const char *name, const char *type, const char *help)
{
    if (o->last && strcmp(o->last, name) == 0)
        return;
    fprintf(o->f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    o->last = name;
}

void veil_metrics_emit(veil_metrics_out *o, const char *name, const char *type, const char *help,
                       const char *labels, double value)
{
    header(o, name, type, help);
    if (labels && *labels)
        fprintf(o->f, "%s{%s} ", name, labels);
    else
        fprintf(o->f, "%s ", name);
    put_number(o->f, value);
    fputc('\n', o->f);
}

void veil_metrics_key_version(veil_metrics_out *o, const char *kind, const char *role,
                              uint32_t version)
{
    char labels[96];
    snprintf(labels, sizeof labels, "kind=\"%s\",role=\"%s\"", kind, role);
    veil_metrics_emit(o, "veil_key_version", "gauge",
                      "key versions in use, by kind and role (current; previous: during a rotation "
                      "overlap; signed: named by the caller for the latest signature)",
                      labels, version);
}

static void render_family(veil_metrics_out *o, veil_metric *m)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&m->mu);
    if (m->n_series)
        header(o, m->name, types[m->kind], m->help);
    for (size_t i = 0; i < m->n_series; i++) {
        const struct series *s = &m->series[i];
        const char *sep = s->labels[0] ? "," : "";
        if (m->kind != HISTOGRAM) {
            fprintf(o->f, s->labels[0] ? "%s{%s} " : "%s%s ", m->name, s->labels);
            put_number(o->f, s->value);
            fputc('\n', o->f);
            continue;
        }
        uint64_t cum = 0;
        for (size_t b = 0; b < m->n_bounds; b++) {
            cum += s->buckets[b];
            fprintf(o->f, "%s_bucket{%s%sle=\"", m->name, s->labels, sep);
            put_number(o->f, m->bounds[b]);
            fprintf(o->f, "\"} %llu\n", (unsigned long long)cum);
        }
        fprintf(o->f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", m->name, s->labels, sep,
                (unsigned long long)s->count);
        fprintf(o->f, s->labels[0] ? "%s_sum{%s} " : "%s_sum%s ", m->name, s->labels);
        put_number(o->f, s->value);
        fprintf(o->f, s->labels[0] ? "\n%s_count{%s} %llu\n" : "\n%s_count%s %llu\n", m->name,
                s->labels, (unsigned long long)s->count);
    }
    pthread_mutex_unlock(&m->mu);
}

char *veil_metrics_render(void)
{
    char *text = NULL;
    size_t len = 0;
    veil_metrics_out o = {open_memstream(&text, &len), NULL};
    if (!o.f)
        return NULL;
    pthread_mutex_lock(&registry_mu);
    for (veil_metric *m = families; m; m = m->next)
        render_family(&o, m);
    pthread_mutex_unlock(&registry_mu);
    pthread_mutex_lock(&collectors_mu);
    for (int i = 0; i < MAX_COLLECTORS; i++)
        if (collectors[i].fn) {
            o.last = NULL;
            collectors[i].fn(collectors[i].arg, &o);
        }
    pthread_mutex_unlock(&collectors_mu);
    if (fclose(o.f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
