/*
 * dev_cmds.c - development helpers for the local stack and the demo: the
 * stand-in proofing authority's key pair, and synthetic ID numbers that pass
 * GB 11643 validation (a real region code, a real past birth date, a random
 * sequence and the right check character) but belong to nobody.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sodium.h>

#include "veil/keys.h"
#include "veilctl.h"

int vc_dev_proofing_key(const vc_opts *o)
{
    if (!o->out)
        return vc_usage("dev proofing-key --out DIR");
    char path[1024], pub[1024], err[512];
    snprintf(path, sizeof path, "%s/proofing-1.key", o->out);
    snprintf(pub, sizeof pub, "%s/proofing.pub", o->out);
    if (mkdir(o->out, 0700) != 0 && errno != EEXIST)
        return vc_fail(o, "UNAVAILABLE", "cannot create %s: %s", o->out, strerror(errno));
    veil_err e = veil_key_generate_file(path, err, sizeof err);
    if (e && e != VEIL_ERR_EXISTS)
        return vc_fail(o, "UNAVAILABLE", "%s", err);
    veil_key *seed;
    if (veil_key_load(path, 1, &seed, err, sizeof err) != VEIL_OK)
        return vc_fail(o, "INVALID_ARGUMENT", "%s", err);
    unsigned char pk[32], sk[64];
    char pk64[64];
    crypto_sign_seed_keypair(pk, sk, seed->bytes);
    sodium_memzero(sk, sizeof sk);
    veil_key_free(seed);
    sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    FILE *f = fopen(pub, "w");
    if (!f || fprintf(f, "%s\n", pk64) < 0 || fclose(f) != 0)
        return vc_fail(o, "UNAVAILABLE", "cannot write %s", pub);
    if (o->json)
        vc_print_json(json_pack("{s:s, s:s}", "key", path, "public_key", pub));
    else
        printf("proofing authority key %s (public key %s)\n", path, pub);
    return 0;
}

int vc_dev_id_number(const vc_opts *o)
{
    static const int weights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char checks[] = "10X98765432";
    const char *region = o->region ? o->region : "440304"; /* Futian, Shenzhen */
    const char *birth = o->birth ? o->birth : "19900307";
    if (strlen(region) != 6 || strspn(region, "0123456789") != 6 || strlen(birth) != 8 ||
        strspn(birth, "0123456789") != 8)
        return vc_fail(o, "INVALID_ARGUMENT", "--region is 6 digits, --birth is YYYYMMDD");
    char id[19];
    unsigned seq = randombytes_uniform(999) + 1;
    snprintf(id, sizeof id, "%s%s%03u", region, birth, seq);
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += (id[i] - '0') * weights[i];
    id[17] = checks[sum % 11];
    id[18] = '\0';
    if (o->json)
        vc_print_json(json_pack("{s:s}", "id_number", id));
    else
        printf("%s\n", id);
    return 0;
}
