/*
 * appfile.c - the app registry as a file (JSON, YAML or the sample TSV) and
 * the plan that makes a registry match it (appfile.h).  YAML is read with
 * libyaml into the same JSON tree, so both formats are checked by one parser.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "appfile.h"

static const char *const FIELDS[] = {"app_id",     "name",         "kind",  "sector_id",
                                     "attributes", "organisation", "status"};

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static Veil__Gateway__App *app_new(void)
{
    Veil__Gateway__App *a = calloc(1, sizeof *a);
    if (a)
        veil__gateway__app__init(a);
    return a;
}

/* Frees an App whose every string and array is malloc'd. */
static void app_free(Veil__Gateway__App *a)
{
    if (a)
        protobuf_c_message_free_unpacked(&a->base, NULL);
}

void gw_appfile_free(gw_appfile *f)
{
    for (size_t i = 0; i < f->n; i++)
        app_free(f->apps[i]);
    free(f->apps);
    f->apps = NULL;
    f->n = 0;
}

/* ---- YAML into a JSON tree ---- */

static json_t *yaml_node_to_json(yaml_document_t *doc, yaml_node_t *node, int depth)
{
    if (!node || depth > 32)
        return NULL;
    switch (node->type) {
    case YAML_SCALAR_NODE: {
        const char *v = (const char *)node->data.scalar.value;
        size_t len = node->data.scalar.length;
        /* Plain scalars that look like YAML's null or booleans; everything else is a string. */
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (len == 0 || strcmp(v, "null") == 0 || strcmp(v, "~") == 0))
            return json_null();
        return json_stringn(v, len);
    }
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *i = node->data.sequence.items.start;
             a && i < node->data.sequence.items.top; i++) {
            json_t *v = yaml_node_to_json(doc, yaml_document_get_node(doc, *i), depth + 1);
            if (!v || json_array_append_new(a, v) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             o && p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            json_t *v = yaml_node_to_json(doc, yaml_document_get_node(doc, p->value), depth + 1);
            if (!k || k->type != YAML_SCALAR_NODE || !v ||
                json_object_set_new(o, (const char *)k->data.scalar.value, v) != 0) {
                json_decref(v);
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    default:
        return NULL;
    }
}

static json_t *load_yaml(FILE *f, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    json_t *out = NULL;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "not YAML: %s (line %zu)", parser.problem ? parser.problem : "error",
                 parser.problem_mark.line + 1);
        yaml_parser_delete(&parser);
        return NULL;
    }
    out = yaml_node_to_json(&doc, yaml_document_get_root_node(&doc), 0);
    if (!out)
        snprintf(err, errlen, "the YAML document is empty or uses anchors, tags or complex keys");
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

/* ---- one entry ---- */

/* A JSON entry as an App; NULL with err set when a field is missing, unknown or mistyped. */
static Veil__Gateway__App *app_from_json(json_t *e, size_t idx, char *err, size_t errlen)
{
    if (!json_is_object(e)) {
        snprintf(err, errlen, "apps[%zu]: must be an object", idx);
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(e, key, v)
    {
        int known = 0;
        for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
            known |= strcmp(key, FIELDS[i]) == 0;
        if (!known) {
            snprintf(err, errlen, "apps[%zu]: unknown field %.64s", idx, key);
            return NULL;
        }
        if (strcmp(key, "attributes") == 0 ? !json_is_array(v) && !json_is_null(v)
                                           : !json_is_string(v)) {
            snprintf(err, errlen, "apps[%zu]: %s must be %s", idx, key,
                     strcmp(key, "attributes") == 0 ? "a list of names" : "a string");
            return NULL;
        }
    }
    for (size_t i = 0; i < 3; i++) /* app_id, name, kind are required */
        if (!json_object_get(e, FIELDS[i])) {
            snprintf(err, errlen, "apps[%zu]: %s is required", idx, FIELDS[i]);
            return NULL;
        }
    Veil__Gateway__App *a = app_new();
    if (!a)
        goto nomem;
    a->app_id = dup_or_empty(json_string_value(json_object_get(e, "app_id")));
    a->name = dup_or_empty(json_string_value(json_object_get(e, "name")));
    a->kind = dup_or_empty(json_string_value(json_object_get(e, "kind")));
    const char *sector = json_string_value(json_object_get(e, "sector_id"));
    a->sector_id = dup_or_empty(sector && *sector ? sector : a->app_id);
    a->organisation = dup_or_empty(json_string_value(json_object_get(e, "organisation")));
    const char *status = json_string_value(json_object_get(e, "status"));
    a->status = dup_or_empty(status ? status : "active");
    a->cert_identity = dup_or_empty("");
    if (!a->app_id || !a->name || !a->kind || !a->sector_id || !a->organisation || !a->status ||
        !a->cert_identity)
        goto nomem;
    if (strcmp(a->status, "active") != 0 && strcmp(a->status, "suspended") != 0) {
        snprintf(err, errlen, "apps[%zu]: status must be active or suspended", idx);
        app_free(a);
        return NULL;
    }
    json_t *attrs = json_object_get(e, "attributes");
    size_t n = json_array_size(attrs);
    a->attributes = calloc(n ? n : 1, sizeof *a->attributes);
    if (!a->attributes)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(attrs, i));
        if (!s) {
            snprintf(err, errlen, "apps[%zu]: attributes[%zu] must be a string", idx, i);
            app_free(a);
            return NULL;
        }
        if (!(a->attributes[a->n_attributes] = strdup(s)))
            goto nomem;
        a->n_attributes++;
    }
    return a;
nomem:
    app_free(a);
    snprintf(err, errlen, "out of memory");
    return NULL;
}

/* Splits a TSV line in place into at most max fields; returns how many. */
static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; n < max;) {
        f[n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab)
            break;
        *tab = '\0';
        p = tab + 1;
    }
    return n;
}

/* The sample registry's TSV as the same JSON tree. */
static json_t *load_tsv(FILE *f, char *err, size_t errlen)
{
    json_t *apps = json_array();
    char line[4096];
    int lineno = 0, header = 1;
    while (apps && fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (header) { /* the column names */
            header = 0;
            continue;
        }
        char *c[6];
        if (split_tabs(line, c, 6) != 6) {
            snprintf(err, errlen, "line %d: expected 6 tab-separated columns", lineno);
            json_decref(apps);
            return NULL;
        }
        json_t *attrs = json_array();
        for (char *p = c[4]; attrs && *p;) {
            size_t len = strcspn(p, ",");
            json_array_append_new(attrs, json_stringn(p, len));
            p += len + (p[len] == ',');
        }
        json_array_append_new(apps, json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}", "app_id", c[0],
                                              "kind", c[1], "sector_id", c[2], "organisation", c[3],
                                              "attributes", attrs, "name", c[5]));
    }
    return apps;
}

static int by_id(const void *a, const void *b)
{
    return strcmp((*(Veil__Gateway__App *const *)a)->app_id,
                  (*(Veil__Gateway__App *const *)b)->app_id);
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

veil_err gw_appfile_load(const char *path, gw_appfile *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return VEIL_ERR_NOT_FOUND;
    }
    json_t *root = NULL;
    json_error_t je;
    if (ends_with(path, ".json")) {
        if (!(root = json_loadf(f, JSON_REJECT_DUPLICATES, &je)))
            snprintf(err, errlen, "not JSON: %s (line %d)", je.text, je.line);
    } else if (ends_with(path, ".yaml") || ends_with(path, ".yml")) {
        root = load_yaml(f, err, errlen);
    } else if (ends_with(path, ".tsv")) {
        root = load_tsv(f, err, errlen);
    } else {
        snprintf(err, errlen, "%s: the file name must end in .json, .yaml, .yml or .tsv", path);
    }
    fclose(f);
    if (!root)
        return VEIL_ERR_INVALID;
    json_t *list = json_is_object(root) ? json_object_get(root, "apps") : root;
    veil_err rc = VEIL_ERR_INVALID;
    if (!json_is_array(list)) {
        snprintf(err, errlen, "the file must hold a list of apps, or an object with \"apps\"");
        goto out;
    }
    if (json_is_object(root) && json_object_size(root) != 1) {
        snprintf(err, errlen, "the file's object may hold \"apps\" only");
        goto out;
    }
    size_t n = json_array_size(list);
    out->apps = calloc(n ? n : 1, sizeof *out->apps);
    if (!out->apps) {
        rc = VEIL_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!(out->apps[i] = app_from_json(json_array_get(list, i), i, err, errlen)))
            goto out;
        out->n++;
    }
    qsort(out->apps, out->n, sizeof *out->apps, by_id);
    for (size_t i = 1; i < out->n; i++)
        if (strcmp(out->apps[i]->app_id, out->apps[i - 1]->app_id) == 0) {
            snprintf(err, errlen, "app %.64s appears twice", out->apps[i]->app_id);
            goto out;
        }
    rc = VEIL_OK;
out:
    json_decref(root);
    if (rc != VEIL_OK)
        gw_appfile_free(out);
    return rc;
}

/* ---- the plan ---- */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether two attribute lists hold the same names, in any order. */
static int same_attributes(const Veil__Gateway__App *a, const Veil__Gateway__App *b)
{
    if (a->n_attributes != b->n_attributes)
        return 0;
    size_t n = a->n_attributes;
    char **x = malloc((n ? n : 1) * sizeof *x), **y = malloc((n ? n : 1) * sizeof *y);
    int same = x && y;
    if (same) {
        memcpy(x, a->attributes, n * sizeof *x);
        memcpy(y, b->attributes, n * sizeof *y);
        qsort(x, n, sizeof *x, by_name);
        qsort(y, n, sizeof *y, by_name);
        for (size_t i = 0; same && i < n; i++)
            same = strcmp(x[i], y[i]) == 0;
    }
    free(x);
    free(y);
    return same;
}

/* The descriptive fields that differ ("" when none). */
static void differences(const Veil__Gateway__App *want, const Veil__Gateway__App *have, char *out,
                        size_t len)
{
    out[0] = '\0';
    struct {
        const char *name;
        int differs;
    } f[] = {
        {"name", strcmp(want->name, have->name) != 0},
        {"kind", strcmp(want->kind, have->kind) != 0},
        {"sector_id", strcmp(want->sector_id, have->sector_id) != 0},
        {"attributes", !same_attributes(want, have)},
        {"organisation", strcmp(want->organisation, have->organisation) != 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].differs) {
            if (out[0])
                strncat(out, ", ", len - strlen(out) - 1);
            strncat(out, f[i].name, len - strlen(out) - 1);
        }
}

static int step(gw_plan *p, gw_plan_op op, const Veil__Gateway__App *want,
                const Veil__Gateway__App *have, const char *changes)
{
    gw_plan_step *s = realloc(p->steps, (p->n + 1) * sizeof *s);
    if (!s)
        return -1;
    p->steps = s;
    s[p->n] = (gw_plan_step){.op = op, .want = want, .have = have};
    snprintf(s[p->n].changes, sizeof s[p->n].changes, "%s", changes ? changes : "");
    p->n++;
    return 0;
}

static const Veil__Gateway__App *find(Veil__Gateway__App *const *apps, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(apps[i]->app_id, id) == 0)
            return apps[i];
    return NULL;
}

veil_err gw_plan_make(const gw_appfile *want, Veil__Gateway__App *const *have, size_t n_have,
                      int add_only, gw_plan *out)
{
    memset(out, 0, sizeof *out);
    int bad = 0;
    /* additions first, then updates and reinstatements, suspensions last */
    for (gw_plan_op op = GW_PLAN_ADD; op <= GW_PLAN_SUSPEND; op++) {
        for (size_t i = 0; i < want->n; i++) {
            const Veil__Gateway__App *w = want->apps[i], *h = find(have, n_have, w->app_id);
            int suspended = strcmp(w->status, "suspended") == 0;
            char changes[512] = "";
            if (h)
                differences(w, h, changes, sizeof changes);
            if (op == GW_PLAN_ADD && !h)
                bad |= step(out, op, w, NULL, NULL);
            else if (add_only)
                continue;
            else if (op == GW_PLAN_UPDATE && h && changes[0])
                bad |= step(out, op, w, h, changes);
            else if (op == GW_PLAN_REINSTATE && h && !suspended &&
                     strcmp(h->status, "suspended") == 0)
                bad |= step(out, op, w, h, NULL);
            else if (op == GW_PLAN_SUSPEND && suspended &&
                     (!h || strcmp(h->status, "suspended") != 0))
                bad |= step(out, op, w, h, NULL);
            else if (op == GW_PLAN_SUSPEND && h && !changes[0] && strcmp(h->status, w->status) == 0)
                out->unchanged++;
        }
        if (op != GW_PLAN_SUSPEND || add_only)
            continue;
        /* in the registry, not in the file: suspended (never deleted: ids and sectors stay taken)
         */
        for (size_t i = 0; i < n_have; i++)
            if (!find(want->apps, want->n, have[i]->app_id) &&
                strcmp(have[i]->status, "suspended") != 0)
                bad |= step(out, op, NULL, have[i], "not in the file");
    }
    if (bad) {
        gw_plan_free(out);
        return VEIL_ERR_NOMEM;
    }
    return VEIL_OK;
}

void gw_plan_free(gw_plan *p)
{
    free(p->steps);
    memset(p, 0, sizeof *p);
}

static const char *step_id(const gw_plan_step *s)
{
    return s->want ? s->want->app_id : s->have->app_id;
}

void gw_plan_print(const gw_plan *p, FILE *f)
{
    static const char *const verbs[] = {"+ add", "~ update", "> reinstate", "- suspend"};
    for (size_t i = 0; i < p->n; i++) {
        const gw_plan_step *s = &p->steps[i];
        fprintf(f, "%-12s %s", verbs[s->op], step_id(s));
        if (s->op == GW_PLAN_ADD)
            fprintf(f, " (%s, sector %s, %zu attribute(s))", s->want->kind, s->want->sector_id,
                    s->want->n_attributes);
        else if (s->changes[0])
            fprintf(f, " (%s)", s->changes);
        fputc('\n', f);
    }
    fprintf(f, "%zu change(s), %zu app(s) unchanged\n", p->n, p->unchanged);
}

json_t *gw_plan_json(const gw_plan *p)
{
    json_t *o = json_pack("{s:[], s:[], s:[], s:[], s:I}", "add", "update", "reinstate", "suspend",
                          "unchanged", (json_int_t)p->unchanged);
    static const char *const keys[] = {"add", "update", "reinstate", "suspend"};
    for (size_t i = 0; o && i < p->n; i++) {
        const gw_plan_step *s = &p->steps[i];
        json_t *list = json_object_get(o, keys[s->op]);
        if (s->op != GW_PLAN_UPDATE) {
            json_array_append_new(list, json_string(step_id(s)));
            continue;
        }
        json_t *changes = json_array();
        for (const char *c = s->changes; changes && *c;) {
            size_t len = strcspn(c, ",");
            json_array_append_new(changes, json_stringn(c, len));
            c += len;
            while (*c == ',' || *c == ' ')
                c++;
        }
        json_array_append_new(list,
                              json_pack("{s:s, s:o}", "app_id", step_id(s), "changes", changes));
    }
    return o;
}
