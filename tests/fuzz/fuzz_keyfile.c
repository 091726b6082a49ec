/*
 * fuzz_keyfile - loading key material from files, whatever the files hold:
 * the first byte picks the loader, the rest is the file's content (mode 0600).
 *
 *   0  veil_key_load: a service key (<purpose>-<N>.key, base64 of 32 bytes);
 *      what loads must be exactly the bytes the file's base64 spells;
 *   1  the vault's VAULT_PROOFING_PUBLIC_KEY file (vault_keys_load);
 *   2  a wallet file (vw_wallet_load: JSON with the device seed);
 *   3  a PEM file (veil_pem_read: TLS CA, certificate and key).
 *
 * Every refusal must come with a message naming the file.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "fuzz.h"
#include "veil/codec.h"
#include "veil/tls.h"
#include "wallet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void named(const char *err, const char *path)
{
    if (!strstr(err, path))
        abort(); /* a refusal that does not say which file */
}

static void key_file(const uint8_t *data, size_t size)
{
    const char *path = fz_write_file("fuzz-1.key", data, size, 0600);
    char err[1024] = "";
    veil_key *k;
    if (veil_key_load(path, 1, &k, err, sizeof err) != VEIL_OK) {
        named(err, path);
        return;
    }
    /* the same bytes, decoded independently (libsodium, whitespace ignored) */
    unsigned char want[64];
    size_t n;
    if (sodium_base642bin(want, sizeof want, (const char *)data, size, " \t\r\n", &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        n != VEIL_KEY_BYTES || memcmp(want, k->bytes, VEIL_KEY_BYTES) != 0)
        abort();
    veil_key_free(k);
}

static void proofing_file(const uint8_t *data, size_t size)
{
    const char *path = fz_write_file("proofing.pub", data, size, 0600);
    char err[1024] = "";
    struct vault_keys *k;
    if (vault_keys_load(fz_keys_dir(), path, 0, &k, err, sizeof err) != VEIL_OK) {
        named(err, path);
        return;
    }
    if (k->n_proofing < 1 || k->n_proofing > VAULT_PROOFING_KEYS_MAX)
        abort();
    vault_keys_free(k);
}

static void wallet_file(const uint8_t *data, size_t size)
{
    const char *path = fz_write_file("wallet.json", data, size, 0600);
    char err[1024] = "";
    vw_wallet *w;
    if (vw_wallet_load(path, &w, err, sizeof err) != VEIL_OK) {
        named(err, path);
        return;
    }
    vw_wallet_free(w);
}

static void pem_file(const uint8_t *data, size_t size)
{
    const char *path = fz_write_file("tls.pem", data, size, 0600);
    char err[1024] = "", *pem;
    if (veil_pem_read(path, &pem, err, sizeof err) != VEIL_OK) {
        named(err, path);
        return;
    }
    if (strlen(pem) > size)
        abort();
    veil_pem_free(pem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 4) {
    case 0:
        key_file(data + 1, size - 1);
        break;
    case 1:
        proofing_file(data + 1, size - 1);
        break;
    case 2:
        wallet_file(data + 1, size - 1);
        break;
    default:
        pem_file(data + 1, size - 1);
        break;
    }
    return 0;
}
