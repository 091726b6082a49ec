/*
 * veil/keys.h - 32-byte keys loaded from files, held in guarded memory.
 *
 * A key file holds the key in base64 (whitespace ignored) and nothing else; it
 * must be a regular file readable by the owner only (mode 0600 or 0400, as a
 * Kubernetes Secret mounted with defaultMode 0400 is).  A key's version comes
 * from its file name, <purpose>-<version>.key, e.g. master-2.key.
 *
 * Key bytes live in sodium_malloc() memory (guard pages, locked, never
 * swapped), made read-only once loaded and wiped when freed.
 */
#ifndef VEIL_KEYS_H
#define VEIL_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include "veil/err.h"

#define VEIL_KEY_BYTES 32
#define VEIL_KEYRING_MAX 64

typedef struct veil_key {
    uint32_t version;
    unsigned char *bytes; /* VEIL_KEY_BYTES, read-only guarded memory */
} veil_key;

/*
 * Loads one key file.  On failure returns VEIL_ERR_INVALID (malformed, short,
 * too open) or VEIL_ERR_NOT_FOUND (missing, unreadable) and writes a message
 * naming the file into errbuf; never the key's contents.  Caller frees *out
 * with veil_key_free.
 */
veil_err veil_key_load(const char *path, uint32_t version, veil_key **out, char *errbuf,
                       size_t errlen) VEIL_WUR;

/* Wipes and frees a key; accepts NULL. */
void veil_key_free(veil_key *key);

/*
 * Every version of one purpose's keys found in a directory.  Append-only:
 * veil_keyring_refresh adds versions that appeared since, and a pointer
 * returned by veil_keyring_get stays valid until veil_keyring_free, so readers
 * on other threads need no lock.
 */
typedef struct veil_keyring veil_keyring;

/*
 * Loads every <purpose>-<N>.key in dir.  A ring with no key at all is an
 * error (VEIL_ERR_NOT_FOUND).  Caller frees with veil_keyring_free.
 */
veil_err veil_keyring_load(const char *dir, const char *purpose, veil_keyring **out,
                           char *errbuf, size_t errlen) VEIL_WUR;

/* Loads versions added to the directory since; existing ones are kept as they are. */
veil_err veil_keyring_refresh(veil_keyring *ring, char *errbuf, size_t errlen) VEIL_WUR;

/* The key of that version, or NULL. */
const veil_key *veil_keyring_get(const veil_keyring *ring, uint32_t version);

/* The highest version loaded. */
uint32_t veil_keyring_latest(const veil_keyring *ring);

/* Writes up to max loaded versions into out, ascending; returns how many. */
size_t veil_keyring_versions(const veil_keyring *ring, uint32_t *out, size_t max);

void veil_keyring_free(veil_keyring *ring);

/*
 * An Ed25519 key pair derived from a 32-byte seed key; the secret half in
 * guarded read-only memory.  kid is "<prefix>-<version>".
 */
typedef struct veil_signer {
    uint32_t version;
    char kid[48];
    unsigned char pk[32];
    unsigned char *sk; /* 64 bytes, guarded */
} veil_signer;

veil_err veil_signer_new(const veil_key *seed, const char *kid_prefix, veil_signer **out) VEIL_WUR;

/* Signs msg; sig must hold 64 bytes. */
void veil_signer_sign(const veil_signer *s, unsigned char sig[64], const void *msg, size_t n);

void veil_signer_free(veil_signer *s);

/*
 * Writes a fresh random key file (base64, mode 0600) - for development set-up
 * and tests only; production keys come from the operator's secret store.
 */
veil_err veil_key_generate_file(const char *path, char *errbuf, size_t errlen) VEIL_WUR;

/*
 * Guarded scratch memory for personal data a call holds for a moment (a
 * citizen's row, a data key): each thread keeps one sodium_malloc() area
 * (guard pages, locked, never swapped) of VEIL_GUARDED_SCRATCH bytes,
 * allocated on its first use and freed when the thread exits, so a call pays
 * no mmap/mprotect/munmap.  veil_guarded_take returns n zeroed bytes of it;
 * veil_guarded_give wipes them (sodium_memzero) and hands the area back.  A
 * take while the thread's area is in use, or of more than its size, gets a
 * fresh sodium_malloc() area that the give frees (which also wipes).  NULL
 * when out of guarded memory.  Every take must be given back on the same
 * thread; give accepts NULL.
 */
#define VEIL_GUARDED_SCRATCH 4096
void *veil_guarded_take(size_t n);
void veil_guarded_give(void *p);

#endif
