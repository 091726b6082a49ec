/*
 * registry.c - the in-memory app registry and attribute scopes, and
 * gw_refresh, which reloads the registry and the key rotation state from the
 * database (here rather than in main.c so that gateway_lib links on its own).
 *
 * The whole registry (81 apps in the first deployment, thousands at most) is
 * held sorted in memory and replaced wholesale when the database says it
 * changed; readers copy the one app they need under a read lock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "store.h"
#include "veil/vault.pb-c.h"

int gw_kind_valid(const char *kind)
{
    return strcmp(kind, "public_service") == 0 || gw_kind_derived_only(kind);
}

int gw_kind_derived_only(const char *kind)
{
    return strcmp(kind, "commercial") == 0 || strcmp(kind, "venue") == 0;
}

unsigned gw_scope_bit(const char *attribute)
{
    size_t n;
    const veil_attr *cat = veil_attr_catalogue(&n);
    const veil_attr *a = veil_attr_find(attribute);
    return a ? 1u << (unsigned)(a - cat) : 0;
}

unsigned gw_scope_raw(void)
{
    size_t n;
    unsigned raw = 0;
    const veil_attr *cat = veil_attr_catalogue(&n);
    for (size_t i = 0; i < n; i++)
        if (cat[i].kind == VEIL_ATTR_RAW)
            raw |= 1u << i;
    return raw;
}

int gw_scope_parse(const char *csv, unsigned *scope, char *bad, size_t badlen)
{
    *scope = 0;
    const char *p = csv;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[64];
        if (len == 0 || len >= sizeof name) {
            if (bad)
                snprintf(bad, badlen, "%.*s", (int)(len < 32 ? len : 32), p);
            return -1;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        unsigned bit = gw_scope_bit(name);
        if (!bit) {
            if (bad)
                snprintf(bad, badlen, "%s", name);
            return -1;
        }
        *scope |= bit;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

void gw_scope_format(unsigned scope, char *out, size_t len)
{
    size_t n, used = 0;
    const veil_attr *cat = veil_attr_catalogue(&n);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!(scope & (1u << i)))
            continue;
        int w = snprintf(out + used, len - used, "%s%s", used ? "," : "", cat[i].name);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

size_t gw_scope_names(veil_call *call, unsigned scope, char ***names)
{
    size_t n, k = 0;
    const veil_attr *cat = veil_attr_catalogue(&n);
    *names = veil_call_alloc(call, n * sizeof **names);
    if (!*names)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (scope & (1u << i))
            (*names)[k++] = (char *)cat[i].name;
    return k;
}

static int by_id(const void *key, const void *elem)
{
    return strcmp(key, ((const gw_app *)elem)->id);
}

int gw_registry_get(gw_registry *r, const char *id, gw_app *out)
{
    pthread_rwlock_rdlock(&r->lock);
    const gw_app *a = r->apps ? bsearch(id, r->apps, r->n, sizeof *r->apps, by_id) : NULL;
    if (a) {
        *out = *a;
        out->name = out->organisation = NULL; /* owned by the snapshot */
        out->redirect_uris = out->jwks = out->purposes = NULL;
    }
    pthread_rwlock_unlock(&r->lock);
    return a ? 0 : -1;
}

void gw_registry_fix_sector(gw_registry *r, const char *id)
{
    pthread_rwlock_wrlock(&r->lock);
    gw_app *a = r->apps ? bsearch(id, r->apps, r->n, sizeof *r->apps, by_id) : NULL;
    if (a)
        a->sector_fixed = 1;
    pthread_rwlock_unlock(&r->lock);
}

int gw_registry_get_named(gw_registry *r, veil_call *call, const char *id, gw_app *out)
{
    pthread_rwlock_rdlock(&r->lock);
    const gw_app *a = r->apps ? bsearch(id, r->apps, r->n, sizeof *r->apps, by_id) : NULL;
    if (a) {
        *out = *a;
        out->name = veil_call_strdup(call, a->name ? a->name : "");
        out->organisation = veil_call_strdup(call, a->organisation ? a->organisation : "");
        out->redirect_uris = veil_call_strdup(call, a->redirect_uris ? a->redirect_uris : "");
        out->jwks = veil_call_strdup(call, a->jwks ? a->jwks : "");
        out->purposes = veil_call_strdup(call, a->purposes ? a->purposes : "{}");
    }
    pthread_rwlock_unlock(&r->lock);
    return a ? 0 : -1;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

int gw_registry_get_full(gw_registry *r, const char *id, gw_app *out)
{
    pthread_rwlock_rdlock(&r->lock);
    const gw_app *a = r->apps ? bsearch(id, r->apps, r->n, sizeof *r->apps, by_id) : NULL;
    if (a) {
        *out = *a;
        out->name = dup_or_empty(a->name);
        out->organisation = dup_or_empty(a->organisation);
        out->redirect_uris = dup_or_empty(a->redirect_uris);
        out->jwks = dup_or_empty(a->jwks);
        out->purposes = dup_or_empty(a->purposes);
    }
    pthread_rwlock_unlock(&r->lock);
    if (a &&
        (!out->name || !out->organisation || !out->redirect_uris || !out->jwks || !out->purposes)) {
        gw_app_clear(out);
        return -1;
    }
    return a ? 0 : -1;
}

void gw_app_clear(gw_app *app)
{
    free(app->name);
    free(app->organisation);
    free(app->redirect_uris);
    free(app->jwks);
    free(app->purposes);
    app->name = app->organisation = app->redirect_uris = app->jwks = app->purposes = NULL;
}

void gw_apps_free(gw_app *apps, size_t n)
{
    for (size_t i = 0; apps && i < n; i++)
        gw_app_clear(&apps[i]);
    free(apps);
}

void gw_registry_replace(gw_registry *r, gw_app *apps, size_t n, int64_t version)
{
    pthread_rwlock_wrlock(&r->lock);
    gw_app *old = r->apps;
    size_t old_n = r->n;
    r->apps = apps;
    r->n = n;
    r->version = version;
    pthread_rwlock_unlock(&r->lock);
    gw_apps_free(old, old_n);
}

void gw_registry_free(gw_registry *r)
{
    gw_apps_free(r->apps, r->n);
    r->apps = NULL;
    r->n = 0;
}

veil_err gw_registry_each(gw_registry *r, veil_call *call, void ***slots,
                          void (*fn)(const gw_app *app, void *ctx), void *ctx)
{
    veil_err err = VEIL_OK;
    pthread_rwlock_rdlock(&r->lock);
    *slots = veil_call_alloc(call, (r->n ? r->n : 1) * sizeof **slots);
    if (!*slots)
        err = VEIL_ERR_NOMEM;
    for (size_t i = 0; !err && i < r->n; i++)
        fn(&r->apps[i], ctx);
    pthread_rwlock_unlock(&r->lock);
    return err;
}

veil_err gw_push_scopes(struct gateway *gw)
{
    size_t n_cat;
    const veil_attr *cat = veil_attr_catalogue(&n_cat);
    if (!gw->vault)
        return VEIL_OK; /* start-up, before the channels: pushed once they are open */
    pthread_rwlock_rdlock(&gw->registry.lock);
    int64_t version = gw->registry.version;
    size_t n = gw->registry.n;
    if (version == atomic_load(&gw->scopes_version)) {
        pthread_rwlock_unlock(&gw->registry.lock);
        return VEIL_OK;
    }
    Veil__Vault__AppScope *cells = calloc(n ? n : 1, sizeof *cells);
    Veil__Vault__AppScope **apps = calloc(n ? n : 1, sizeof *apps);
    char(*ids)[65] = calloc(n ? n : 1, sizeof *ids);
    char **names = calloc((n ? n : 1) * n_cat, sizeof *names);
    if (!cells || !apps || !ids || !names) {
        pthread_rwlock_unlock(&gw->registry.lock);
        free(cells), free(apps), free(ids), free(names);
        return VEIL_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const gw_app *a = &gw->registry.apps[i];
        veil__vault__app_scope__init(&cells[i]);
        memcpy(ids[i], a->id, sizeof ids[i]);
        cells[i].app_id = ids[i];
        cells[i].attributes = names + i * n_cat;
        for (size_t k = 0; k < n_cat; k++)
            if (a->scope & (1u << k))
                cells[i].attributes[cells[i].n_attributes++] = (char *)cat[k].name;
        apps[i] = &cells[i];
    }
    pthread_rwlock_unlock(&gw->registry.lock);

    Veil__Vault__SetAppScopesRequest req = VEIL__VAULT__SET_APP_SCOPES_REQUEST__INIT;
    Veil__Empty *resp = NULL;
    veil_status st;
    req.apps = apps;
    req.n_apps = n;
    veil_err err = veil_channel_call(gw->vault, "SetAppScopes", &req.base, NULL, gw->rpc_timeout_ms,
                                     &resp, &st);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (!err)
        atomic_store(&gw->scopes_version, version);
    free(cells), free(apps), free(ids), free(names);
    return err;
}

veil_err gw_refresh(struct gateway *gw, int force)
{
    int64_t reg_v, keys_v;
    veil_err err = gw_store_versions(gw->store, &reg_v, &keys_v);
    if (err)
        return err;
    pthread_rwlock_rdlock(&gw->registry.lock);
    int64_t have = gw->registry.version;
    pthread_rwlock_unlock(&gw->registry.lock);
    if (force || reg_v != have) {
        gw_app *apps;
        size_t n;
        int64_t v;
        if ((err = gw_store_load_apps(gw->store, &apps, &n, &v)))
            return err;
        gw_registry_replace(&gw->registry, apps, n, v);
    }
    if (force || keys_v != atomic_load(&gw->keys.state_version)) {
        static const char *const kinds[] = {"assertion", "pseudonym", "receipt"};
        _Atomic uint32_t *cur_of[] = {&gw->keys.assertion_current, &gw->keys.pseudonym_current,
                                      &gw->keys.receipt_current};
        _Atomic uint32_t *prev_of[] = {&gw->keys.assertion_previous, &gw->keys.pseudonym_previous,
                                       &gw->keys.receipt_previous};
        for (int i = 0; i < 3; i++) {
            uint32_t cur = 0, prev = 0;
            if ((err = gw_store_key_state(gw->store, kinds[i], &cur, &prev)))
                return err; /* NOT_FOUND: someone deleted a row; never guess a version */
            atomic_store(cur_of[i], cur);
            atomic_store(prev_of[i], prev);
        }
        atomic_store(&gw->keys.state_version, keys_v);
    }
    return gw_push_scopes(gw);
}
