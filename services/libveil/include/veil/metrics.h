/*
 * veil/metrics.h - Prometheus metrics (text exposition format 0.0.4).
 *
 * Families are registered once (usually at start-up) and live until the
 * process exits; samples are added from any thread:
 *
 *   static veil_metric *logins;
 *   logins = veil_metric_counter("veil_logins_total", "logins by app kind and outcome",
 *                                "app_kind,outcome");
 *   veil_metric_add(logins, 1, (const char *[]){"commercial", "ok"});
 *
 * What is only known when scraped (cache statistics, key versions, feed lag)
 * comes from collectors, called at each scrape, which write whole families
 * with veil_metrics_emit.  Label values must never be personal: methods,
 * statuses, app kinds, attribute names and feed names only; no subject, no
 * web number, no app id of a citizen's login.
 *
 * veil_service_main serves GET /metrics on VEIL_METRICS_ADDR (veil/http.h)
 * when that is set.
 */
#ifndef VEIL_METRICS_H
#define VEIL_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct veil_metric veil_metric;

/*
 * Registers a family, or returns the one already registered under name (so
 * two callers may ask for the same family).  labels is a comma-separated list
 * of label names (at most 4) or NULL.  The strings must outlive the process
 * (literals).  Returns NULL only when out of memory; every function below
 * accepts a NULL metric and does nothing.
 */
veil_metric *veil_metric_counter(const char *name, const char *help, const char *labels);
veil_metric *veil_metric_gauge(const char *name, const char *help, const char *labels);
/* bounds: n increasing upper bounds (+Inf is implied); copied. */
veil_metric *veil_metric_histogram(const char *name, const char *help, const char *labels,
                                   const double *bounds, size_t n);

/* Adds v to the series with these label values (as many as the family has labels). */
void veil_metric_add(veil_metric *m, double v, const char *const *label_values);
/* Sets a gauge's series to v. */
void veil_metric_set(veil_metric *m, double v, const char *const *label_values);
/* Records one observation in a histogram. */
void veil_metric_observe(veil_metric *m, double v, const char *const *label_values);

/* Latency buckets in seconds (0.5 ms to 5 s), for veil_metric_histogram. */
extern const double veil_metric_latency_bounds[];
extern const size_t veil_metric_latency_bounds_len;

/* ---- collectors: families computed at scrape time ---- */

typedef struct veil_metrics_out veil_metrics_out;
typedef void (*veil_metrics_collector)(void *arg, veil_metrics_out *out);

/* Calls fn(arg, out) at every scrape until removed; at most 16 collectors. */
int veil_metrics_add_collector(veil_metrics_collector fn, void *arg);
/* Removes it; returns once no scrape is running it. */
void veil_metrics_remove_collector(veil_metrics_collector fn, void *arg);

/*
 * Writes one sample of family name (type "counter" or "gauge"); the family's
 * HELP and TYPE lines are written before its first sample.  labels is the
 * inside of the braces, already formatted (e.g. "kind=\"assertion\""), or
 * NULL; its values must not need escaping (names from code, not input).
 */
void veil_metrics_emit(veil_metrics_out *out, const char *name, const char *type, const char *help,
                       const char *labels, double value);

/*
 * One sample of veil_key_version{kind, role}, the gauge every service that
 * holds keys exports under the same name: kind the key's purpose
 * ("assertion", "ticket", ...), role "current" (the version in use for new
 * work), "previous" (still accepted during a rotation overlap) or "signed"
 * (the version another service named for the latest signature made here).  Within one
 * collector, write a family's samples one after another.
 */
void veil_metrics_key_version(veil_metrics_out *out, const char *kind, const char *role,
                              uint32_t version);

/* ---- exposition ---- */

/* The whole text exposition (malloc'd; the caller frees), or NULL when out of memory. */
char *veil_metrics_render(void);

#endif
