/*
 * commands.c - the vault's operator commands.
 *
 *   vault rotate-master-key --to N [--batch 500]
 *       re-wraps every data key under master key version N while the
 *       service keeps serving: batches in subject order, each row updated
 *       only if it still holds the wrapped key that was read (a concurrent
 *       erase or enrolment wins), then a second pass for rows enrolled
 *       meanwhile under an older version.  Prints counts.
 *
 *   vault bulk-enrol --count N --out FILE [--batch 5000] [--first K]
 *       loads N synthetic, genuinely encrypted identities for benchmarks:
 *       valid GB 11643 numbers derived from K..K+N-1 (unique by construction),
 *       each with its own data key, profile, blind index, web number and one
 *       device whose Ed25519 seed goes to FILE (mode 0600) for the load
 *       generator.  Records are built by the same functions as Enrol and
 *       written with COPY.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/log.h"
#include "vault.h"

#define ROTATE_BATCH_MAX 10000
#define BULK_BATCH_MAX   100000

/* Parses "--name value" pairs; returns -1 (after printing why) on anything unexpected. */
static int option(int argc, char **argv, const char *name, long long lo, long long hi,
                  long long *out, int required)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], name) != 0)
            continue;
        char *end;
        errno = 0;
        long long v = i + 1 < argc ? strtoll(argv[i + 1], &end, 10) : 0;
        if (i + 1 >= argc || errno || *end || end == argv[i + 1] || v < lo || v > hi) {
            fprintf(stderr, "vault: %s needs a number from %lld to %lld\n", name, lo, hi);
            return -1;
        }
        *out = v;
        return 0;
    }
    if (required) {
        fprintf(stderr, "vault: %s is required\n", name);
        return -1;
    }
    return 0;
}

/* Rejects options the command does not know (a typo must not run a different rotation). */
static int only_options(int argc, char **argv, const char *const *known, const char *usage)
{
    for (int i = 1; i < argc; i += 2) {
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            ok |= strcmp(argv[i], *k) == 0;
        if (!ok || i + 1 >= argc) {
            fprintf(stderr, "vault: unexpected argument %s\nusage: vault %s\n", argv[i], usage);
            return -1;
        }
    }
    return 0;
}

static void print_count(void *ctx, uint32_t v, int64_t n)
{
    uint32_t to = *(uint32_t *)ctx;
    printf("  master key version %u: %lld data keys%s\n", v, (long long)n,
           v == to ? " (target)" : "");
}

static void count_others(void *ctx, uint32_t v, int64_t n)
{
    int64_t *acc = ctx;
    if ((uint32_t)acc[1] != v)
        acc[0] += n;
}

struct rotation {
    struct vault_keys *keys;
    vault_conn *c;
    uint32_t to;
    size_t batch;
    long long rotated, skipped, failed;
};

/* One pass over every row not at the target version. */
static veil_err rotate_pass(struct rotation *r, struct vault_wrap_row *rows)
{
    unsigned char after[VAULT_SUBJECT_BYTES] = {0}, dk[VAULT_DEK_BYTES];
    unsigned char wrapped[VAULT_WRAPPED_BYTES];
    const veil_key *target = vault_master_key(r->keys, r->to);
    veil_err err = VEIL_OK;
    r->failed = 0; /* rows that fail fail again in every pass: count them once */
    for (;;) {
        size_t n;
        if ((err = vault_store_rotation_batch(r->c, after, r->to, rows, r->batch, &n)))
            break;
        if (n == 0)
            break;
        if ((err = vault_store_begin(r->c)))
            break;
        for (size_t i = 0; i < n && !err; i++) {
            const veil_key *old = vault_master_key(r->keys, rows[i].key_version);
            if (!old || vault_dek_unwrap(old, rows[i].subject, rows[i].wrapped, VAULT_WRAPPED_BYTES,
                                         dk) != VEIL_OK) {
                r->failed++;
                continue;
            }
            vault_dek_wrap(target, rows[i].subject, dk, wrapped);
            sodium_memzero(dk, sizeof dk);
            int updated;
            if ((err = vault_store_rewrap(r->c, &rows[i], r->to, wrapped, &updated)))
                break;
            if (updated)
                r->rotated++;
            else
                r->skipped++;
        }
        if (!err)
            err = vault_store_commit(r->c);
        if (err) {
            vault_store_rollback(r->c);
            break;
        }
        memcpy(after, rows[n - 1].subject, VAULT_SUBJECT_BYTES);
        printf("  ... %lld re-wrapped so far\n", r->rotated);
        fflush(stdout);
    }
    sodium_memzero(dk, sizeof dk);
    return err;
}

int vault_cmd_rotate_master_key(const veil_service_ctx *ctx, int argc, char **argv)
{
    static const char *const known[] = {"--to", "--batch", NULL};
    static const char usage[] = "rotate-master-key --to N [--batch 500]";
    long long to = 0, batch = 500;
    struct rotation r = {0};
    struct vault_wrap_row *rows = NULL;
    vault_store *st = NULL;
    char err[512] = "";
    int status = 1;

    if (only_options(argc, argv, known, usage) != 0 ||
        option(argc, argv, "--to", 1, 1000000, &to, 1) != 0 ||
        option(argc, argv, "--batch", 1, ROTATE_BATCH_MAX, &batch, 0) != 0)
        return 2;
    if (vault_keys_load(ctx->keys_dir, vault_proofing_file(), (uint32_t)to, &r.keys, err,
                        sizeof err) != VEIL_OK) {
        fprintf(stderr, "vault rotate-master-key: %s\n", err);
        return 2;
    }
    r.to = (uint32_t)to;
    r.batch = (size_t)batch;
    if (!(rows = calloc(r.batch, sizeof *rows)) ||
        vault_store_open(ctx->database_url, &st) != VEIL_OK ||
        vault_store_conn(st, &r.c) != VEIL_OK) {
        fprintf(stderr, "vault rotate-master-key: cannot reach the database\n");
        goto out;
    }
    /* Every running vault wraps new data keys under it from the NOTIFY on (main.c). */
    uint32_t previous;
    if (vault_store_set_key_version(r.c, "master", r.to, &previous) != VEIL_OK) {
        fprintf(stderr, "vault rotate-master-key: cannot record the version in use\n");
        goto out;
    }
    printf("vault: master key version %u in use (previous %u); running vaults switch now, "
           "each one that has master-%u.key\n",
           r.to, previous, r.to);
    printf("vault: re-wrapping data keys under master key version %u\n", r.to);
    int64_t remaining[2] = {0, (int64_t)r.to};
    for (int pass = 0; pass < 3; pass++) {
        long long before = r.rotated;
        if (rotate_pass(&r, rows) != VEIL_OK) {
            fprintf(stderr, "vault rotate-master-key: a database statement failed; "
                            "rows done so far stay done, run the command again\n");
            goto out;
        }
        remaining[0] = 0;
        if (vault_store_version_counts(r.c, count_others, remaining) != VEIL_OK)
            goto out;
        /* Rows enrolled under an older version during the pass get another pass. */
        if (remaining[0] == r.failed || r.rotated == before)
            break;
    }
    printf("vault: %lld re-wrapped, %lld changed concurrently (erased or already re-wrapped), "
           "%lld could not be unwrapped\n",
           r.rotated, r.skipped, r.failed);
    if (vault_store_version_counts(r.c, print_count, &r.to) != VEIL_OK)
        goto out;
    if (r.failed) {
        fprintf(stderr,
                "vault rotate-master-key: %lld data keys could not be unwrapped "
                "(their master key file is missing or wrong); see docs/vault.md\n",
                r.failed);
        goto out;
    }
    if (remaining[0] > 0)
        printf("vault: %lld data keys are still under older versions (enrolled during the run "
               "by an instance not yet using version %u); run the command again\n",
               (long long)remaining[0], r.to);
    status = 0;
out:
    free(rows);
    vault_store_close(st);
    vault_keys_free(r.keys);
    return status;
}

/* ---- bulk-enrol ---- */

static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/*
 * The synthetic person number i: a valid, unique ID number and a name.
 * Birth dates spread over 1940-2004 (7919 is prime to the 23741 days of the
 * range, so the day index maps one-to-one), sequence i mod 999 + 1.
 */
static void synthetic_person(long long i, struct vault_profile *p, int64_t now_ms)
{
    static const char *const regions[] = {"110101", "310104", "440305", "510107", "330106",
                                          "420102", "320102", "370102", "610113", "500103",
                                          "650102", "230102", "810000", "820000", "830000"};
    static const char *const surnames[] = {"王", "李", "张", "刘", "陈", "杨", "黄", "赵",
                                           "吴", "周", "徐", "孙", "马", "朱", "胡", "郭"};
    static const char *const given[] = {"伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军",
                                        "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀"};
    const size_t nr = sizeof regions / sizeof regions[0];
    const size_t ns = sizeof surnames / sizeof surnames[0], ng = sizeof given / sizeof given[0];
    long long day_index = i / 999;
    int64_t first = days_from_civil(1940, 1, 1), span = days_from_civil(2005, 1, 1) - first;
    int64_t day = first + (day_index * 7919) % span;
    int32_t ymd = vault_today_cst(day * 86400000LL);
    char digits[18];
    snprintf(digits, sizeof digits, "%s%08d%03d", regions[i % (long long)nr], (int)ymd,
             (int)(i % 999 + 1));
    memset(p, 0, sizeof *p);
    memcpy(p->id_number, digits, 17);
    p->id_number[17] = vault_idnumber_check_char(digits);
    snprintf(p->full_name, sizeof p->full_name, "%s%s%s", surnames[i % (long long)ns],
             given[(i / 7) % (long long)ng], i % 3 ? given[(i / 131) % (long long)ng] : "");
    p->face_match = 1;
    p->proofed_at_ms = now_ms;
}

int vault_cmd_bulk_enrol(const veil_service_ctx *ctx, int argc, char **argv)
{
    static const char *const known[] = {"--count", "--out", "--batch", "--first", NULL};
    static const char usage[] = "bulk-enrol --count N --out FILE [--batch 5000] [--first K]";
    long long count = 0, batch = 5000, first = 0;
    const char *path = NULL;
    struct vault_keys *keys = NULL;
    struct vault_new_citizen *n = sodium_malloc(sizeof *n);
    struct vault_profile *p = sodium_malloc(sizeof *p);
    struct vault_bulk bulk = {0};
    vault_store *st = NULL;
    vault_conn *c = NULL;
    FILE *out = NULL;
    char err[512] = "";
    int status = 1, fd = -1;

    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--out") == 0)
            path = argv[i + 1];
    if (only_options(argc, argv, known, usage) != 0 ||
        option(argc, argv, "--count", 1, 100000000, &count, 1) != 0 ||
        option(argc, argv, "--batch", 1, BULK_BATCH_MAX, &batch, 0) != 0 ||
        option(argc, argv, "--first", 0, 1000000000, &first, 0) != 0 || !path) {
        if (!path)
            fprintf(stderr, "vault: --out is required\nusage: vault %s\n", usage);
        status = 2;
        goto out;
    }
    if (!n || !p) {
        fprintf(stderr, "vault bulk-enrol: out of guarded memory\n");
        goto out;
    }
    if (vault_keys_load(ctx->keys_dir, vault_proofing_file(), vault_master_version(), &keys, err,
                        sizeof err) != VEIL_OK) {
        fprintf(stderr, "vault bulk-enrol: %s\n", err);
        status = 2;
        goto out;
    }
    if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
        !(out = fdopen(fd, "w"))) {
        fprintf(stderr, "vault bulk-enrol: cannot write %s\n", path);
        goto out;
    }
    fd = -1;
    if (vault_store_open(ctx->database_url, &st) != VEIL_OK ||
        vault_store_conn(st, &c) != VEIL_OK) {
        fprintf(stderr, "vault bulk-enrol: cannot reach the database\n");
        goto out;
    }
    fprintf(out, "# veil vault bulk-enrol v1: device_id ed25519_seed_base64 web_number\n");
    int64_t t0 = veil_mono_ns(), now = veil_now_ms();
    for (long long i = first; i < first + count; i++) {
        unsigned char dk[VAULT_DEK_BYTES], seed[32], pk[32], sk[64],
            device_id[VEIL_DEVICE_ID_BYTES];
        char seed64[64], id_text[33];
        veil_buf label = {0};
        synthetic_person(i, p, now);
        randombytes_buf(seed, sizeof seed);
        crypto_sign_seed_keypair(pk, sk, seed);
        randombytes_buf(device_id, sizeof device_id);
        veil_err e = vault_citizen_build(keys, p, n, dk);
        if (!e)
            e = vault_label_seal(dk, n->subject, device_id, "bulk", &label);
        sodium_memzero(dk, sizeof dk);
        sodium_memzero(sk, sizeof sk);
        if (!e)
            vault_bulk_add(&bulk, n, device_id, pk, label.data, label.len);
        veil_buf_free(&label);
        sodium_bin2base64(seed64, sizeof seed64, seed, sizeof seed, sodium_base64_VARIANT_ORIGINAL);
        sodium_memzero(seed, sizeof seed);
        veil_device_id_text(device_id, id_text);
        if (e || fprintf(out, "%s %s %s\n", id_text, seed64, n->web_number) < 0) {
            fprintf(stderr, "vault bulk-enrol: cannot build or record identity %lld\n", i);
            goto out;
        }
        if (bulk.rows == (size_t)batch || i + 1 == first + count) {
            long long pending = (long long)bulk.rows;
            if (vault_store_bulk_flush(c, &bulk, err, sizeof err) != VEIL_OK) {
                fprintf(stderr,
                        "vault bulk-enrol: %s; the first %lld persons from %lld are stored, the "
                        "batch after them is not, though its lines are in the output file\n",
                        err, i + 1 - pending - first, first);
                goto out;
            }
            printf("  ... %lld enrolled\n", i + 1 - first);
            fflush(stdout);
        }
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        fprintf(stderr, "vault bulk-enrol: cannot write %s\n", path);
        goto out;
    }
    double secs = (double)(veil_mono_ns() - t0) / 1e9;
    printf("vault: %lld identities enrolled in %.1f s (%.0f/s); device keys in %s\n", count, secs,
           secs > 0 ? (double)count / secs : 0.0, path);
    status = 0;
out:
    if (out)
        fclose(out);
    if (fd >= 0)
        close(fd);
    vault_bulk_free(&bulk);
    vault_store_close(st);
    vault_keys_free(keys);
    sodium_free(n);
    sodium_free(p);
    return status;
}

/*
 * vault access-log-retention: keeps the access log's time partitions
 * (VAULT_ACCESS_LOG_PARTITION_S each, a week of them ahead) and drops those
 * older than VAULT_ACCESS_LOG_RETENTION_S (0: keep everything), recording
 * each citizen's chain base in the same transaction.  Run it daily (the
 * vault-access-log-retention CronJob); safe to run at any time and again.
 */
int vault_cmd_access_log_retention(const veil_service_ctx *ctx, int argc, char **argv)
{
    static const char *const known[] = {NULL};
    if (only_options(argc, argv, known, "access-log-retention") != 0)
        return 2;
    const struct vault_config *cfg = vault_config_current();
    int64_t period_ms = cfg->log_partition_s * 1000;
    int ahead = (int)((7 * 86400 + cfg->log_partition_s - 1) / cfg->log_partition_s);
    if (ahead > 31)
        ahead = 31;
    int64_t drop_before =
        cfg->log_retention_s > 0 ? veil_now_ms() - cfg->log_retention_s * 1000 : 0;
    vault_store *st = NULL;
    vault_conn *c = NULL;
    struct vault_log_maintenance m;
    veil_err err;
    if ((err = vault_store_open(ctx->database_url, &st)) || (err = vault_store_conn(st, &c)) ||
        (err = vault_store_begin(c)) ||
        (err = vault_store_log_maintain(c, period_ms, drop_before, ahead, &m)) ||
        (err = vault_store_commit(c))) {
        if (c)
            vault_store_rollback(c);
        fprintf(stderr, "vault access-log-retention: %s (nothing was dropped)\n",
                veil_err_message(err));
        vault_store_close(st);
        return 1;
    }
    veil_log(VEIL_LOG_INFO, "access-log retention", VL_INT("partitions_created", m.created),
             VL_INT("partitions_dropped", m.dropped), VL_INT("partitions_refused", m.refused),
             VL_INT("entries_dropped", m.rows_dropped), VL_END);
    printf("vault access-log-retention: %lld partition(s) created, %lld dropped (%lld entries), "
           "%lld kept back (not a prefix of every chain in them)\n",
           (long long)m.created, (long long)m.dropped, (long long)m.rows_dropped,
           (long long)m.refused);
    vault_store_close(st);
    return m.refused ? 1 : 0;
}

/* Issue 13: the webcert/ticket version in use changes only here; running vaults follow it. */
int vault_cmd_rotate_key(const veil_service_ctx *ctx, int argc, char **argv)
{
    static const char *const known[] = {"--kind", "--to", NULL};
    static const char usage[] = "rotate-key --kind webcert|ticket --to N";
    const char *kind = NULL;
    long long to = 0;
    struct vault_keys *keys = NULL;
    vault_store *st = NULL;
    vault_conn *c;
    uint32_t previous = 0;
    char err[512] = "";
    int status = 1;

    for (int i = 1; i + 1 < argc; i += 2)
        if (strcmp(argv[i], "--kind") == 0)
            kind = argv[i + 1];
    if (only_options(argc, argv, known, usage) != 0 ||
        option(argc, argv, "--to", 1, 1000000, &to, 1) != 0)
        return 2;
    if (!kind || (strcmp(kind, "webcert") != 0 && strcmp(kind, "ticket") != 0)) {
        fprintf(stderr, "vault rotate-key: --kind must be webcert or ticket\nusage: vault %s\n",
                usage);
        return 2;
    }
    if (vault_keys_load(ctx->keys_dir, NULL, 0, &keys, err, sizeof err) != VEIL_OK) {
        fprintf(stderr, "vault rotate-key: %s\n", err);
        return 2;
    }
    int webcert = strcmp(kind, "webcert") == 0;
    if (!veil_keyring_get(webcert ? keys->webcert : keys->ticket, (uint32_t)to)) {
        fprintf(stderr, "vault rotate-key: no key file %s-%lld.key in the key directory\n", kind,
                to);
        status = 2;
        goto out;
    }
    if (vault_store_open(ctx->database_url, &st) != VEIL_OK ||
        vault_store_conn(st, &c) != VEIL_OK ||
        vault_store_set_key_version(c, kind, (uint32_t)to, &previous) != VEIL_OK) {
        fprintf(stderr, "vault rotate-key: cannot reach the database\n");
        goto out;
    }
    printf("vault: %s key version %lld in use (previous %u); running vaults switch now, each "
           "one that has %s-%lld.key (one without it logs \"key rotation held back\" and "
           "switches when the file appears)\n",
           kind, to, previous, kind, to);
    status = 0;
out:
    vault_store_close(st);
    vault_keys_free(keys);
    return status;
}
