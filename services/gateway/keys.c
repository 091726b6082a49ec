/*
 * keys.c - the keys that sign assertions and SETs, and the JWKS apps verify
 * them with.  Key files are VEIL_KEYS_DIR/assertion-<N>.key (Ed25519 seeds);
 * which version signs is the key_state row "assertion" in the database, so
 * every replica signs with the same key and a rotation needs no restart:
 *
 *   1. add assertion-<N+1>.key to every replica's key directory: it is
 *      published in the JWKS at once (as a newer key) but signs nothing yet;
 *   2. once apps have had time to refresh their JWKS, RotateKey makes it
 *      current; the old key stays published as "previous";
 *   3. a later rotation retires it from the JWKS.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "veil/jws.h"
#include "veil/log.h"

veil_err gw_keys_open(gw_keys *k, const char *dir, char *errbuf, size_t errlen)
{
    pthread_mutex_init(&k->lock, NULL);
    atomic_store(&k->n_signers, 0);
    veil_err err = veil_keyring_load(dir, "assertion", &k->ring, errbuf, errlen);
    if (!err)
        err = veil_keyring_load(dir, "auditref", &k->auditref_ring, errbuf, errlen);
    if (!err && !(k->auditref = veil_keyring_get(k->auditref_ring, 1))) {
        snprintf(errbuf, errlen,
                 "key directory %s: no auditref-1.key (the admin audit log's "
                 "identity reference key)",
                 dir);
        err = VEIL_ERR_NOT_FOUND;
    }
    return err;
}

void gw_keys_close(gw_keys *k)
{
    size_t n = atomic_load(&k->n_signers);
    for (size_t i = 0; i < n; i++)
        veil_signer_free(k->signers[i]);
    veil_keyring_free(k->ring);
    veil_keyring_free(k->auditref_ring);
    k->ring = NULL;
    free(k->jwks);
    k->jwks = NULL;
    k->auditref_ring = NULL;
    pthread_mutex_destroy(&k->lock);
}

static const veil_signer *find(gw_keys *k, uint32_t version)
{
    size_t n = atomic_load(&k->n_signers);
    for (size_t i = 0; i < n; i++)
        if (k->signers[i]->version == version)
            return k->signers[i];
    return NULL;
}

/* Makes signers for every loaded key that has none yet. */
static void grow(gw_keys *k)
{
    uint32_t v[VEIL_KEYRING_MAX];
    size_t nv = veil_keyring_versions(k->ring, v, VEIL_KEYRING_MAX);
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < nv; i++) {
        size_t n = atomic_load(&k->n_signers);
        if (find(k, v[i]) || n == VEIL_KEYRING_MAX)
            continue;
        veil_signer *s;
        if (veil_signer_new(veil_keyring_get(k->ring, v[i]), "assertion", &s) != VEIL_OK)
            continue;
        k->signers[n] = s;
        atomic_store(&k->n_signers, n + 1);
    }
    pthread_mutex_unlock(&k->lock);
}

const veil_signer *gw_keys_signer(gw_keys *k, uint32_t version)
{
    const veil_signer *s = find(k, version);
    if (s)
        return s;
    char err[256];
    if (!veil_keyring_get(k->ring, version) &&
        veil_keyring_refresh(k->ring, err, sizeof err) != VEIL_OK)
        veil_log(VEIL_LOG_WARN, "cannot reload assertion keys", VL_STR("error", err), VL_END);
    grow(k);
    return find(k, version);
}

void gw_keys_reload(gw_keys *k)
{
    char err[256];
    if (veil_keyring_refresh(k->ring, err, sizeof err) != VEIL_OK) {
        veil_log(VEIL_LOG_WARN, "cannot reload assertion keys", VL_STR("error", err), VL_END);
        return;
    }
    grow(k);
    veil_log(VEIL_LOG_INFO, "assertion keys reloaded",
             VL_INT("newest", veil_keyring_latest(k->ring)),
             VL_INT("current", atomic_load(&k->assertion_current)), VL_END);
}

char *gw_keys_jwks(gw_keys *k)
{
    uint32_t cur = atomic_load(&k->assertion_current), prev = atomic_load(&k->assertion_previous);
    size_t n = atomic_load(&k->n_signers);
    char *text = NULL;
    pthread_mutex_lock(&k->lock);
    if (k->jwks && k->jwks_current == cur && k->jwks_previous == prev && k->jwks_signers == n) {
        text = strdup(k->jwks);
        goto out;
    }
    json_t *keys = json_array();
    for (size_t i = 0; i < n; i++) {
        const veil_signer *s = k->signers[i];
        /* current, previous, and newer keys published ahead of their use */
        if (s->version == cur || s->version == prev || s->version > cur)
            json_array_append_new(keys, veil_jwk_ed25519(s->kid, s->pk));
    }
    json_t *root = json_pack("{s:o}", "keys", keys);
    text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (text) {
        free(k->jwks);
        k->jwks = strdup(text);
        k->jwks_current = cur;
        k->jwks_previous = prev;
        k->jwks_signers = n;
    }
out:
    pthread_mutex_unlock(&k->lock);
    return text;
}
