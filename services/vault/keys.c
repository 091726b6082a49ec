/*
 * keys.c - every key the vault holds, loaded once at start.
 *
 * From VEIL_KEYS_DIR (veil/keys.h file format):
 *   master-N   wrap per-citizen data keys; every version stays loaded so rows
 *              not yet re-wrapped stay readable during a rotation
 *   blind-1    keys the blind index of ID numbers (and the enrol request hashes)
 *   audit-1    keys the access-log hash chain; the checkpoint key (Ed25519)
 *              is derived from it: seed = crypto_kdf_derive_from_key(32,
 *              subkey 1, context "veilckpt", audit-1), so no new key file
 *   webcert-N  Ed25519 seeds; the version in use (key_state, see vault_keys_use)
 *              signs web certificates, all loaded are in the JWKS
 *   ticket-N   X25519 seeds (crypto_box_seed_keypair); the version in use is
 *              handed to wallets, every loaded version opens tickets
 * and the proofing authority's Ed25519 public keys from VAULT_PROOFING_PUBLIC_KEY.
 *
 * Key pairs and signers are derived here once, not per call.  Key files
 * added later are loaded by vault_keys_refresh; everything is append-only
 * until vault_keys_free, and the versions in use are atomics switched by
 * vault_keys_use, so readers on any thread need no lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <sodium.h>

#include "veil/jws.h"
#include "vault.h"

#define PROOFING_FILE_MAX 65536

static const struct vault_boxkey *find_boxkey(struct vault_keys *k, uint32_t version);

/* Derives the key pairs of ticket versions not derived yet.  Caller holds box_lock. */
static veil_err add_boxkeys(struct vault_keys *k, char *errbuf, size_t errlen)
{
    uint32_t v[VEIL_KEYRING_MAX];
    size_t n = veil_keyring_versions(k->ticket, v, VEIL_KEYRING_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t have = atomic_load(&k->n_boxkeys), j;
        for (j = 0; j < have && k->boxkeys[j].version != v[i]; j++)
            ;
        if (j < have)
            continue;
        struct vault_boxkey *b = &k->boxkeys[have];
        if (!(b->sk = sodium_malloc(crypto_box_SECRETKEYBYTES))) {
            snprintf(errbuf, errlen, "out of guarded memory for ticket keys");
            return VEIL_ERR_NOMEM;
        }
        crypto_box_seed_keypair(b->pk, b->sk, veil_keyring_get(k->ticket, v[i])->bytes);
        sodium_mprotect_readonly(b->sk);
        b->version = v[i];
        atomic_store(&k->n_boxkeys, have + 1); /* publish after the slot is written */
    }
    return VEIL_OK;
}

static veil_signer *webcert_signer_of(struct vault_keys *k, uint32_t version)
{
    size_t n = atomic_load(&k->n_webcert_signers);
    for (size_t i = 0; i < n; i++)
        if (k->webcert_signers[i]->version == version)
            return k->webcert_signers[i];
    return NULL;
}

/* {"keys":[...]} of every webcert signer, for GetWalletKeys; NULL when out of memory. */
static char *build_jwks(struct vault_keys *k)
{
    size_t n = atomic_load(&k->n_webcert_signers);
    json_t *keys = json_array(), *root = NULL;
    char *text = NULL;
    for (size_t i = 0; keys && i < n; i++)
        if (json_array_append_new(
                keys, veil_jwk_ed25519(k->webcert_signers[i]->kid, k->webcert_signers[i]->pk)) != 0)
            goto out;
    if (keys && (root = json_pack("{s:O}", "keys", keys)))
        text = json_dumps(root, JSON_COMPACT);
out:
    json_decref(keys);
    json_decref(root);
    return text;
}

/*
 * Derives signers for webcert versions not derived yet and publishes a JWKS
 * holding them all.  Caller holds box_lock.  A replaced JWKS is kept until
 * vault_keys_free (a reader may still hold it); each rebuild adds a version,
 * so there are at most VEIL_KEYRING_MAX of them.
 */
static veil_err add_webcert_signers(struct vault_keys *k, char *errbuf, size_t errlen)
{
    uint32_t v[VEIL_KEYRING_MAX];
    size_t n = veil_keyring_versions(k->webcert, v, VEIL_KEYRING_MAX), added = 0;
    for (size_t i = 0; i < n; i++) {
        const veil_key *key = veil_keyring_get(k->webcert, v[i]);
        if (!key || webcert_signer_of(k, v[i])) /* !key: its file was removed just now */
            continue;
        size_t slot = atomic_load(&k->n_webcert_signers);
        if (veil_signer_new(key, "webcert", &k->webcert_signers[slot]) != VEIL_OK) {
            snprintf(errbuf, errlen, "cannot derive the web certificate signing key %u", v[i]);
            return VEIL_ERR_NOMEM;
        }
        atomic_store(&k->n_webcert_signers, slot + 1); /* publish after the slot is written */
        added++;
    }
    if (!added && atomic_load(&k->jwks))
        return VEIL_OK;
    char *text = build_jwks(k);
    if (!text) {
        snprintf(errbuf, errlen, "out of memory building the web certificate JWKS");
        return VEIL_ERR_NOMEM;
    }
    char *old = atomic_exchange(&k->jwks, text);
    if (old)
        k->jwks_retired[k->n_jwks_retired++] = old;
    return VEIL_OK;
}

/* Reads the proofing authority's keys: base64 Ed25519 public keys, one a line. */
static veil_err load_proofing(struct vault_keys *k, const char *path, char *errbuf, size_t errlen)
{
    char *text = malloc(PROOFING_FILE_MAX + 1);
    veil_err err = VEIL_ERR_INVALID;
    size_t len = 0;
    int fd = -1, line = 0;
    if (!text)
        return VEIL_ERR_NOMEM;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(errbuf, errlen, "VAULT_PROOFING_PUBLIC_KEY: %s cannot be read", path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, text + len, PROOFING_FILE_MAX - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(errbuf, errlen, "VAULT_PROOFING_PUBLIC_KEY: %s cannot be read", path);
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == PROOFING_FILE_MAX) {
            snprintf(errbuf, errlen, "VAULT_PROOFING_PUBLIC_KEY: %s is too large", path);
            goto out;
        }
    }
    text[len] = '\0';
    for (char *p = text, *next; p && *p; p = next) {
        next = strchr(p, '\n');
        if (next)
            *next++ = '\0';
        line++;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
            p[--n] = '\0';
        if (n == 0 || p[0] == '#')
            continue;
        unsigned char pk[64];
        size_t got;
        if (veil_b64_decode(pk, sizeof pk, p, n, &got) != 0 || got != 32) {
            snprintf(errbuf, errlen,
                     "VAULT_PROOFING_PUBLIC_KEY: line %d of %s is not a base64 Ed25519 public key",
                     line, path);
            goto out;
        }
        if (k->n_proofing == VAULT_PROOFING_KEYS_MAX) {
            snprintf(errbuf, errlen, "VAULT_PROOFING_PUBLIC_KEY: more than %d keys in %s",
                     VAULT_PROOFING_KEYS_MAX, path);
            goto out;
        }
        memcpy(k->proofing[k->n_proofing++], pk, 32);
    }
    if (k->n_proofing == 0) {
        snprintf(errbuf, errlen, "VAULT_PROOFING_PUBLIC_KEY: %s holds no key", path);
        goto out;
    }
    err = VEIL_OK;
out:
    if (fd >= 0)
        close(fd);
    free(text);
    return err;
}

/* Loads one version of a single-version purpose (blind-1, audit-1). */
static veil_err need_version(veil_keyring *ring, const char *dir, const char *purpose,
                             uint32_t version, const veil_key **out, char *errbuf, size_t errlen)
{
    *out = veil_keyring_get(ring, version);
    if (*out)
        return VEIL_OK;
    snprintf(errbuf, errlen, "key directory %s: no %s-%u.key", dir, purpose, version);
    return VEIL_ERR_NOT_FOUND;
}

/* The Ed25519 key pair that signs access-log checkpoints, from audit-1. */
static veil_err derive_checkpoint_key(struct vault_keys *k, char *errbuf, size_t errlen)
{
    unsigned char seed[crypto_sign_SEEDBYTES];
    if (!(k->checkpoint_sk = sodium_malloc(crypto_sign_SECRETKEYBYTES))) {
        snprintf(errbuf, errlen, "out of guarded memory for the checkpoint key");
        return VEIL_ERR_NOMEM;
    }
    crypto_kdf_derive_from_key(seed, sizeof seed, 1, "veilckpt", k->audit_key->bytes);
    crypto_sign_seed_keypair(k->checkpoint_pk, k->checkpoint_sk, seed);
    sodium_memzero(seed, sizeof seed);
    sodium_mprotect_readonly(k->checkpoint_sk);
    return VEIL_OK;
}

veil_err vault_keys_load(const char *dir, const char *proofing_file, uint32_t master_version,
                         struct vault_keys **out, char *errbuf, size_t errlen)
{
    struct vault_keys *k = calloc(1, sizeof *k);
    veil_err err = VEIL_ERR_NOMEM;
    *out = NULL;
    if (!k)
        return VEIL_ERR_NOMEM;
    pthread_mutex_init(&k->box_lock, NULL);
    if ((err = veil_keyring_load(dir, "master", &k->master, errbuf, errlen)) ||
        (err = veil_keyring_load(dir, "blind", &k->blind, errbuf, errlen)) ||
        (err = veil_keyring_load(dir, "audit", &k->audit, errbuf, errlen)) ||
        (err = veil_keyring_load(dir, "webcert", &k->webcert, errbuf, errlen)) ||
        (err = veil_keyring_load(dir, "ticket", &k->ticket, errbuf, errlen)) ||
        (err = need_version(k->blind, dir, "blind", 1, &k->blind_key, errbuf, errlen)) ||
        (err = need_version(k->audit, dir, "audit", 1, &k->audit_key, errbuf, errlen)))
        goto out;
    k->master_current = master_version ? master_version : veil_keyring_latest(k->master);
    if (!veil_keyring_get(k->master, k->master_current)) {
        snprintf(errbuf, errlen, "VAULT_MASTER_KEY_VERSION: no key file master-%u.key in %s",
                 k->master_current, dir);
        err = VEIL_ERR_INVALID;
        goto out;
    }
    if ((err = add_webcert_signers(k, errbuf, errlen)) || (err = add_boxkeys(k, errbuf, errlen)) ||
        (proofing_file && (err = load_proofing(k, proofing_file, errbuf, errlen))))
        goto out;
    k->webcert_signer = webcert_signer_of(k, veil_keyring_latest(k->webcert));
    k->ticket_current = veil_keyring_latest(k->ticket);
    if ((err = derive_checkpoint_key(k, errbuf, errlen)))
        goto out;
    /* Unknown devices are "verified" against this, at the cost of a real verification. */
    unsigned char decoy_sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(k->decoy_pk, decoy_sk);
    sodium_memzero(decoy_sk, sizeof decoy_sk);
    *out = k;
    k = NULL;
out:
    vault_keys_free(k);
    return err;
}

/* Appends "kind-N.key" to the list of missing key files in errbuf. */
static void note_missing(char *errbuf, size_t errlen, const char *kind, uint32_t version)
{
    size_t used = strlen(errbuf);
    if (used < errlen)
        snprintf(errbuf + used, errlen - used, "%s%s-%u.key", used ? ", " : "", kind, version);
}

veil_err vault_keys_use(struct vault_keys *k, uint32_t webcert, uint32_t ticket, uint32_t master,
                        char *errbuf, size_t errlen)
{
    veil_signer *s = webcert_signer_of(k, webcert);
    const struct vault_boxkey *b = find_boxkey(k, ticket);
    const veil_key *m = veil_keyring_get(k->master, master);
    char why[256];
    if ((!s || !b || !m) && vault_keys_refresh(k, why, sizeof why) == VEIL_OK) {
        s = webcert_signer_of(k, webcert);
        b = find_boxkey(k, ticket);
        m = veil_keyring_get(k->master, master);
    }
    /* Each kind switches on its own: a missing file holds back only its kind. */
    if (s)
        atomic_store(&k->webcert_signer, s);
    if (b)
        atomic_store(&k->ticket_current, ticket);
    if (m)
        atomic_store(&k->master_current, master);
    if (s && b && m)
        return VEIL_OK;
    char missing[160] = "";
    if (!s)
        note_missing(missing, sizeof missing, "webcert", webcert);
    if (!b)
        note_missing(missing, sizeof missing, "ticket", ticket);
    if (!m)
        note_missing(missing, sizeof missing, "master", master);
    snprintf(errbuf, errlen,
             "the key version in use (key_state) has no key file: %s missing; the version "
             "used before stays in use",
             missing);
    return VEIL_ERR_NOT_FOUND;
}

veil_err vault_keys_refresh(struct vault_keys *k, char *errbuf, size_t errlen)
{
    veil_err err;
    if ((err = veil_keyring_refresh(k->master, errbuf, errlen)) ||
        (err = veil_keyring_refresh(k->ticket, errbuf, errlen)) ||
        (err = veil_keyring_refresh(k->webcert, errbuf, errlen)))
        return err;
    pthread_mutex_lock(&k->box_lock);
    if (!(err = add_boxkeys(k, errbuf, errlen)))
        err = add_webcert_signers(k, errbuf, errlen);
    pthread_mutex_unlock(&k->box_lock);
    return err;
}

void vault_keys_free(struct vault_keys *k)
{
    if (!k)
        return;
    size_t n = atomic_load(&k->n_boxkeys);
    for (size_t i = 0; i < n; i++)
        sodium_free(k->boxkeys[i].sk);
    n = atomic_load(&k->n_webcert_signers);
    for (size_t i = 0; i < n; i++)
        veil_signer_free(k->webcert_signers[i]);
    sodium_free(k->checkpoint_sk);
    free(atomic_load(&k->jwks));
    for (size_t i = 0; i < k->n_jwks_retired; i++)
        free(k->jwks_retired[i]);
    veil_keyring_free(k->master);
    veil_keyring_free(k->blind);
    veil_keyring_free(k->audit);
    veil_keyring_free(k->webcert);
    veil_keyring_free(k->ticket);
    pthread_mutex_destroy(&k->box_lock);
    sodium_memzero(k->proofing, sizeof k->proofing);
    free(k);
}

const veil_key *vault_master_key(struct vault_keys *k, uint32_t version)
{
    const veil_key *key = veil_keyring_get(k->master, version);
    char err[256];
    /* Another instance may already wrap under a version this one has not loaded. */
    if (!key && veil_keyring_refresh(k->master, err, sizeof err) == VEIL_OK)
        key = veil_keyring_get(k->master, version);
    return key;
}

static const struct vault_boxkey *find_boxkey(struct vault_keys *k, uint32_t version)
{
    size_t n = atomic_load(&k->n_boxkeys);
    for (size_t i = 0; i < n; i++)
        if (k->boxkeys[i].version == version)
            return &k->boxkeys[i];
    return NULL;
}

const struct vault_boxkey *vault_ticket_key(struct vault_keys *k, uint32_t version)
{
    const struct vault_boxkey *b = find_boxkey(k, version);
    if (b || version == 0)
        return b;
    /* Tickets name their version; an unknown one rescans the directory at most once a second. */
    int64_t now = veil_now_ms(), next = atomic_load(&k->next_refresh_ms);
    if (now < next || !atomic_compare_exchange_strong(&k->next_refresh_ms, &next, now + 1000))
        return NULL;
    char err[256];
    if (vault_keys_refresh(k, err, sizeof err) != VEIL_OK)
        return NULL;
    return find_boxkey(k, version);
}

uint32_t vault_box_open_any(struct vault_keys *k, vault_box_opener open, void *ctx)
{
    uint32_t opened = 0;
    for (int pass = 0; pass < 2 && !opened; pass++) {
        /* A key file added elsewhere first: rescan at most once a second, as a miss costs. */
        int64_t now = veil_now_ms(), next = atomic_load(&k->next_refresh_ms);
        char err[256];
        if (pass == 1 && (now < next ||
                          !atomic_compare_exchange_strong(&k->next_refresh_ms, &next, now + 1000) ||
                          vault_keys_refresh(k, err, sizeof err) != VEIL_OK))
            break;
        /* Every key is tried, even after one opened: the time does not tell which did. */
        size_t n = atomic_load(&k->n_boxkeys);
        for (size_t i = 0; i < n; i++)
            if (open(&k->boxkeys[i], !opened, ctx) == VEIL_OK && !opened)
                opened = k->boxkeys[i].version;
    }
    return opened;
}

struct ticket_ctx {
    const veil_ticket *t;
    veil_ticket_inner *out;
};

static veil_err open_ticket(const struct vault_boxkey *key, int keep, void *arg)
{
    struct ticket_ctx *c = arg;
    veil_ticket_inner tmp;
    veil_err err = veil_ticket_open(c->t, key->pk, key->sk, &tmp);
    if (!err && keep)
        *c->out = tmp;
    sodium_memzero(&tmp, sizeof tmp);
    return err;
}

uint32_t vault_ticket_open(struct vault_keys *k, const veil_ticket *t, veil_ticket_inner *out)
{
    struct ticket_ctx c = {t, out};
    return vault_box_open_any(k, open_ticket, &c);
}

int vault_proofing_verify(const struct vault_keys *k, const unsigned char sig[64],
                          const unsigned char *msg, size_t len)
{
    for (size_t i = 0; i < k->n_proofing; i++)
        if (crypto_sign_verify_detached(sig, msg, len, k->proofing[i]) == 0)
            return 1;
    return 0;
}
