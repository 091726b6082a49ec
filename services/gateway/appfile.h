/*
 * appfile.h - the app registry as a file, and the plan that makes a registry
 * match it.  Shared by `veilctl admin apps apply` (which carries the plan out
 * through the Admin API) and `gateway seed-apps` (through the store, adding
 * only); no I/O besides reading the file.
 *
 * Formats, by the file name's ending: .json and .yaml/.yml hold
 *   {"apps": [{"app_id", "name", "kind", "sector_id", "attributes": [...],
 *              "organisation", "status": "active"|"suspended"}, ...]}
 * (or the bare list); .tsv is the sample registry's tab-separated columns
 * app_id, kind, sector_id, organisation, attributes (comma-separated), name.
 */
#ifndef VEIL_GATEWAY_APPFILE_H
#define VEIL_GATEWAY_APPFILE_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "veil/err.h"
#include "veil/gateway.pb-c.h"

/* Apps as App messages (every string malloc'd). */
typedef struct gw_appfile {
    Veil__Gateway__App **apps;
    size_t n;
} gw_appfile;

/*
 * Reads path into *out (sorted by app_id).  A missing or unknown field, a
 * wrong type, a repeated app id or an unknown ending is refused with a
 * message in err naming the entry.  Free with gw_appfile_free.
 */
veil_err gw_appfile_load(const char *path, gw_appfile *out, char *err, size_t errlen) VEIL_WUR;
void gw_appfile_free(gw_appfile *f);

typedef enum gw_plan_op {
    GW_PLAN_ADD,
    GW_PLAN_UPDATE,
    GW_PLAN_REINSTATE,
    GW_PLAN_SUSPEND
} gw_plan_op;

typedef struct gw_plan_step {
    gw_plan_op op;
    const Veil__Gateway__App
        *want; /* the file's entry (NULL for a suspension of an app not in it) */
    const Veil__Gateway__App *have; /* the registry's entry (NULL for an addition) */
    char changes[512];              /* updates: the fields that differ, "name, attributes" */
} gw_plan_step;

typedef struct gw_plan {
    gw_plan_step *steps;
    size_t n;
    size_t unchanged;
} gw_plan;

/*
 * The steps that make the registry have[0..n_have) match want: additions,
 * updates (name, kind, sector, attributes, organisation), reinstatements and
 * suspensions (an app the file marks suspended, or that the file leaves out).
 * add_only keeps only the additions (seed-apps: never undoes an admin's
 * change).  The steps point into want and have, which must outlive the plan.
 */
veil_err gw_plan_make(const gw_appfile *want, Veil__Gateway__App *const *have, size_t n_have,
                      int add_only, gw_plan *out) VEIL_WUR;
void gw_plan_free(gw_plan *p);

/* The diff as text, one line per step and a count of unchanged apps. */
void gw_plan_print(const gw_plan *p, FILE *f);

/* The diff as JSON (new reference): {"add":[ids], "update":[{"app_id","changes":[...]}],
 * "reinstate":[ids], "suspend":[ids], "unchanged":N}. */
json_t *gw_plan_json(const gw_plan *p);

#endif
