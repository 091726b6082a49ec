/*
 * keys.c - key files into guarded memory (veil/keys.h).
 *
 * Every intermediate copy of key material (the file's text, the decoded
 * bytes) is on the stack and wiped before returning, whatever the outcome.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/codec.h"
#include "veil/keys.h"

#define KEY_FILE_MAX 512

/*
 * Resolves path's symbolic links into real; 1 when the result lies inside the
 * folder that holds path (resolved too), 0 otherwise or when it cannot be
 * resolved.
 */
static int resolve_inside_folder(const char *path, char *real, size_t len)
{
    char folder[PATH_MAX], dir[PATH_MAX], target[PATH_MAX];
    snprintf(folder, sizeof folder, "%s", path);
    char *slash = strrchr(folder, '/');
    if (slash == folder)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(folder, sizeof folder, ".");
    if (!realpath(folder, dir) || !realpath(path, target))
        return 0;
    size_t dl = strlen(dir);
    if (strncmp(target, dir, dl) != 0 || (target[dl] != '/' && strcmp(dir, "/") != 0))
        return 0;
    snprintf(real, len, "%s", target);
    return strlen(target) < len;
}

veil_err veil_key_load(const char *path, uint32_t version, veil_key **out, char *errbuf,
                       size_t errlen)
{
    char real[PATH_MAX];
    veil_err err = VEIL_ERR_INVALID;
    unsigned char text[KEY_FILE_MAX];
    unsigned char raw[KEY_FILE_MAX];
    size_t textlen = 0, rawlen = 0;
    int fd = -1;
    struct stat st;
    veil_key *key = NULL;

    *out = NULL;
    if (sodium_init() < 0) /* idempotent; guarded memory needs it */
        return VEIL_ERR_INTERNAL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ELOOP) {
        /*
         * Kubernetes mounts Secrets through symlinks (key -> ..data/key, ..data
         * -> ..2026_…): one that stays inside the key's own folder is followed,
         * and its target is then opened without following again.  A symlink
         * out of the folder (to another secret, /proc, a file an attacker
         * controls) is refused.
         */
        if (!resolve_inside_folder(path, real, sizeof real)) {
            snprintf(errbuf, errlen, "key file %s: a symbolic link that leads out of its folder",
                     path);
            goto out;
        }
        fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        snprintf(errbuf, errlen, "key file %s: %s", path,
                 errno == ENOENT ? "does not exist" : "cannot be opened for reading");
        err = VEIL_ERR_NOT_FOUND;
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(errbuf, errlen, "key file %s: not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        snprintf(errbuf, errlen,
                 "key file %s: readable or writable by group or others (mode %04o); "
                 "make it 0600 or 0400",
                 path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, text + textlen, sizeof text - textlen);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(errbuf, errlen, "key file %s: read failed", path);
            goto out;
        }
        if (r == 0)
            break;
        textlen += (size_t)r;
        if (textlen == sizeof text) {
            snprintf(errbuf, errlen, "key file %s: too large to be a base64 key", path);
            goto out;
        }
    }
    if (veil_b64_decode(raw, sizeof raw, (const char *)text, textlen, &rawlen) != 0) {
        snprintf(errbuf, errlen, "key file %s: not valid base64", path);
        goto out;
    }
    if (rawlen != VEIL_KEY_BYTES) {
        snprintf(errbuf, errlen, "key file %s: holds %zu bytes, a key is %d", path, rawlen,
                 VEIL_KEY_BYTES);
        goto out;
    }
    key = calloc(1, sizeof *key);
    if (key)
        key->bytes = sodium_malloc(VEIL_KEY_BYTES);
    if (!key || !key->bytes) {
        snprintf(errbuf, errlen, "key file %s: out of guarded memory", path);
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    memcpy(key->bytes, raw, VEIL_KEY_BYTES);
    sodium_mprotect_readonly(key->bytes);
    key->version = version;
    *out = key;
    key = NULL;
    err = VEIL_OK;
out:
    sodium_memzero(text, sizeof text);
    sodium_memzero(raw, sizeof raw);
    if (fd >= 0)
        close(fd);
    veil_key_free(key);
    return err;
}

void veil_key_free(veil_key *key)
{
    if (!key)
        return;
    if (key->bytes)
        sodium_free(key->bytes); /* wipes before unmapping */
    free(key);
}

struct veil_keyring {
    char *dir;
    char purpose[32];
    pthread_mutex_t lock; /* serialises refreshes; readers use `count` */
    _Atomic size_t count;
    veil_key *keys[VEIL_KEYRING_MAX];
    /*
     * A key whose file left the folder is retired: 1 once a refresh noticed
     * (readers no longer get it), 2 once a later refresh wiped its bytes -
     * one refresh later, so a call that fetched it just before has finished.
     */
    _Atomic int retired[VEIL_KEYRING_MAX];
};

/* Retires the keys whose version the folder no longer holds (seen[i]: key i's file is there). */
static void retire_missing(veil_keyring *ring, const int *seen)
{
    size_t n = atomic_load(&ring->count);
    for (size_t i = 0; i < n; i++) {
        int r = atomic_load(&ring->retired[i]);
        if (r == 1) { /* noticed by an earlier refresh: nothing uses it any more */
            sodium_mprotect_readwrite(ring->keys[i]->bytes);
            sodium_memzero(ring->keys[i]->bytes, VEIL_KEY_BYTES);
            sodium_mprotect_noaccess(ring->keys[i]->bytes);
            atomic_store(&ring->retired[i], 2);
        } else if (r == 0 && !seen[i]) {
            atomic_store(&ring->retired[i], 1);
        }
    }
}

/* Parses "<purpose>-<N>.key" into N; returns 0 when the name is not one. */
static uint32_t version_of(const char *name, const char *purpose)
{
    size_t pl = strlen(purpose);
    if (strncmp(name, purpose, pl) != 0 || name[pl] != '-')
        return 0;
    const char *p = name + pl + 1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(p, &end, 10);
    if (errno || end == p || strcmp(end, ".key") != 0 || v == 0 || v > 1000000)
        return 0;
    return (uint32_t)v;
}

veil_err veil_keyring_refresh(veil_keyring *ring, char *errbuf, size_t errlen)
{
    veil_err err = VEIL_OK;
    pthread_mutex_lock(&ring->lock);
    DIR *d = opendir(ring->dir);
    if (!d) {
        snprintf(errbuf, errlen, "key directory %s: cannot be read", ring->dir);
        err = VEIL_ERR_NOT_FOUND;
        goto out;
    }
    struct dirent *e;
    int seen[VEIL_KEYRING_MAX] = {0};
    while ((e = readdir(d)) != NULL) {
        uint32_t v = version_of(e->d_name, ring->purpose);
        if (v == 0)
            continue;
        size_t have = atomic_load(&ring->count), slot;
        for (slot = 0; slot < have &&
                       (ring->keys[slot]->version != v || atomic_load(&ring->retired[slot]) == 2);
             slot++)
            ;
        if (slot < have) {
            /* loaded already; a file put back before its key was wiped makes it live again */
            seen[slot] = 1;
            atomic_store(&ring->retired[slot], 0);
            continue;
        }
        /* not loaded, or loaded and wiped since: (re)load it into a new slot */
        size_t n = atomic_load(&ring->count);
        if (n == VEIL_KEYRING_MAX) {
            snprintf(errbuf, errlen, "key directory %s: more than %d %s keys", ring->dir,
                     VEIL_KEYRING_MAX, ring->purpose);
            err = VEIL_ERR_EXHAUSTED;
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", ring->dir, e->d_name);
        veil_key *k;
        err = veil_key_load(path, v, &k, errbuf, errlen);
        if (err)
            break;
        ring->keys[n] = k;
        seen[n] = 1;
        atomic_store(&ring->count, n + 1); /* publish after the slot is written */
    }
    closedir(d);
    if (!err) /* only a complete listing says which files are gone */
        retire_missing(ring, seen);
out:
    pthread_mutex_unlock(&ring->lock);
    return err;
}

veil_err veil_keyring_load(const char *dir, const char *purpose, veil_keyring **out, char *errbuf,
                           size_t errlen)
{
    *out = NULL;
    veil_keyring *ring = calloc(1, sizeof *ring);
    if (!ring || !(ring->dir = strdup(dir))) {
        free(ring);
        return VEIL_ERR_NOMEM;
    }
    snprintf(ring->purpose, sizeof ring->purpose, "%s", purpose);
    pthread_mutex_init(&ring->lock, NULL);
    veil_err err = veil_keyring_refresh(ring, errbuf, errlen);
    if (!err && atomic_load(&ring->count) == 0) {
        snprintf(errbuf, errlen, "key directory %s: no %s key (expected a file %s-1.key)", dir,
                 purpose, purpose);
        err = VEIL_ERR_NOT_FOUND;
    }
    if (err) {
        veil_keyring_free(ring);
        return err;
    }
    *out = ring;
    return VEIL_OK;
}

/* Whether slot i holds a key still in use (not retired). */
static int live(const veil_keyring *ring, size_t i)
{
    return atomic_load(&((veil_keyring *)ring)->retired[i]) == 0;
}

const veil_key *veil_keyring_get(const veil_keyring *ring, uint32_t version)
{
    size_t n = atomic_load(&((veil_keyring *)ring)->count);
    for (size_t i = 0; i < n; i++)
        if (ring->keys[i]->version == version && live(ring, i))
            return ring->keys[i];
    return NULL;
}

uint32_t veil_keyring_latest(const veil_keyring *ring)
{
    uint32_t best = 0;
    size_t n = atomic_load(&((veil_keyring *)ring)->count);
    for (size_t i = 0; i < n; i++)
        if (ring->keys[i]->version > best && live(ring, i))
            best = ring->keys[i]->version;
    return best;
}

size_t veil_keyring_versions(const veil_keyring *ring, uint32_t *out, size_t max)
{
    size_t n = atomic_load(&((veil_keyring *)ring)->count), k = 0;
    for (size_t i = 0; i < n && k < max; i++)
        if (live(ring, i))
            out[k++] = ring->keys[i]->version;
    /* insertion sort: at most VEIL_KEYRING_MAX entries */
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
            uint32_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return k;
}

void veil_keyring_free(veil_keyring *ring)
{
    if (!ring)
        return;
    size_t n = atomic_load(&ring->count);
    for (size_t i = 0; i < n; i++)
        veil_key_free(ring->keys[i]);
    pthread_mutex_destroy(&ring->lock);
    free(ring->dir);
    free(ring);
}

veil_err veil_signer_new(const veil_key *seed, const char *kid_prefix, veil_signer **out)
{
    *out = NULL;
    if (sodium_init() < 0)
        return VEIL_ERR_INTERNAL;
    veil_signer *s = calloc(1, sizeof *s);
    if (!s)
        return VEIL_ERR_NOMEM;
    s->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    if (!s->sk) {
        free(s);
        return VEIL_ERR_NOMEM;
    }
    crypto_sign_seed_keypair(s->pk, s->sk, seed->bytes);
    sodium_mprotect_readonly(s->sk);
    s->version = seed->version;
    snprintf(s->kid, sizeof s->kid, "%s-%u", kid_prefix, seed->version);
    *out = s;
    return VEIL_OK;
}

void veil_signer_sign(const veil_signer *s, unsigned char sig[64], const void *msg, size_t n)
{
    crypto_sign_detached(sig, NULL, msg, n, s->sk);
}

void veil_signer_free(veil_signer *s)
{
    if (!s)
        return;
    sodium_free(s->sk);
    free(s);
}

veil_err veil_key_generate_file(const char *path, char *errbuf, size_t errlen)
{
    unsigned char k[VEIL_KEY_BYTES];
    if (sodium_init() < 0)
        return VEIL_ERR_INTERNAL;
    char text[64];
    randombytes_buf(k, sizeof k);
    sodium_bin2base64(text, sizeof text, k, sizeof k, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(k, sizeof k);
    veil_err err = VEIL_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(errbuf, errlen, "key file %s: cannot be created", path);
        err = errno == EEXIST ? VEIL_ERR_EXISTS : VEIL_ERR_INVALID;
    } else {
        size_t n = strlen(text);
        text[n++] = '\n';
        if (write(fd, text, n) != (ssize_t)n || fsync(fd) != 0) {
            snprintf(errbuf, errlen, "key file %s: write failed", path);
            err = VEIL_ERR_UNAVAILABLE;
        }
        close(fd);
    }
    sodium_memzero(text, sizeof text);
    return err;
}

/* ---- per-thread guarded scratch ---- */

struct scratch {
    unsigned char *area; /* VEIL_GUARDED_SCRATCH bytes of sodium_malloc() memory */
    size_t used;         /* bytes handed out by the take in progress; 0: free */
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *p)
{
    struct scratch *s = p;
    sodium_free(s->area); /* wipes before unmapping */
    free(s);
}

static void scratch_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* The calling thread's scratch (allocated on first use), or NULL. */
static struct scratch *scratch_get(void)
{
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok)
        return NULL;
    struct scratch *s = pthread_getspecific(scratch_key);
    if (s)
        return s;
    if (!(s = calloc(1, sizeof *s)))
        return NULL;
    if (!(s->area = sodium_malloc(VEIL_GUARDED_SCRATCH)) ||
        pthread_setspecific(scratch_key, s) != 0) {
        if (s->area)
            sodium_free(s->area);
        free(s);
        return NULL;
    }
    sodium_memzero(s->area, VEIL_GUARDED_SCRATCH); /* sodium_malloc fills with 0xdb */
    return s;
}

void *veil_guarded_take(size_t n)
{
    struct scratch *s = n && n <= VEIL_GUARDED_SCRATCH ? scratch_get() : NULL;
    if (s && !s->used) {
        s->used = n; /* the area is all zero while free: give wipes what a take used */
        return s->area;
    }
    void *p = sodium_malloc(n ? n : 1);
    if (p)
        sodium_memzero(p, n ? n : 1);
    return p;
}

void veil_guarded_give(void *p)
{
    if (!p)
        return;
    struct scratch *s = scratch_key_ok ? pthread_getspecific(scratch_key) : NULL;
    if (s && p == s->area) {
        sodium_memzero(s->area, s->used);
        s->used = 0;
        return;
    }
    sodium_free(p);
}
