/*
 * check_veilctl.c - veilctl's verbs, run as a user would run them, against a
 * real stack: their --json shapes (veil's scripting interface, kept stable),
 * exit statuses, and error reporting.
 */
#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sodium.h>

#include "stack.h"
#include "veil/formats.h"
#include "veil/inperson.h"

static h_stack S;
static char *dir;

static void stack_up(void)
{
    h_stack_up(&S);
    dir = h_tempdir("veilctl");
    h_stack_veilctl_env(&S, dir);
    setenv("VEILCTL_COUNTER", "desk1", 1);
}

static void stack_down(void)
{
    h_stack_down(&S);
    free(dir);
}

/* Runs a shell command; returns its exit status, its stdout in *out (malloc'd) if out. */
static int run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Runs veilctl with the arguments; returns its exit status, stdout in *out (malloc'd). */
static int veilctl(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int veilctl(char **out, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s/veilctl %s 2>>%s/stderr", h_env("VEIL_TEST_BIN"), args, dir);
    return run(cmd, out);
}

/* Runs veilctl ARGS --json, expects success, returns the parsed JSON. */
static json_t *ok_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *ok_json(const char *fmt, ...)
{
    char *out;
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int rc = veilctl(&out, "%s --json", args);
    ck_assert_msg(rc == 0, "veilctl %s exited %d: %s", args, rc, out);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    ck_assert_msg(j != NULL, "veilctl %s printed no JSON: %s", args, out);
    free(out);
    return j;
}

static const char *str(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    ck_assert_msg(s != NULL, "no string \"%s\"", key);
    return s;
}

START_TEST(test_citizen_verbs)
{
    char wallet[1200], id[19];
    snprintf(wallet, sizeof wallet, "%s/alice.json", dir);
    json_t *j = ok_json("wallet create --wallet %s", wallet);
    ck_assert_str_eq(str(j, "wallet"), wallet);
    ck_assert_uint_eq(strlen(str(j, "device_public_key")), 43);
    json_decref(j);
    struct stat st;
    ck_assert_int_eq(stat(wallet, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    /* never overwrites a wallet */
    char *out;
    ck_assert_int_eq(veilctl(&out, "wallet create --wallet %s --json", wallet), 1);
    j = json_loads(out, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                     "ALREADY_EXISTS");
    json_decref(j);
    free(out);

    ck_assert_int_eq(veilctl(&out, "dev id-number --region 440304 --birth 19900307"), 0);
    memcpy(id, out, 18);
    id[18] = '\0';
    free(out);

    j = ok_json("wallet enroll --wallet %s --id-number %s --name %s", wallet, id, "王小明");
    ck_assert(veil_web_number_valid(str(j, "web_number")));
    ck_assert_uint_eq(strlen(str(j, "device_id")), 32);
    ck_assert(json_is_true(json_object_get(j, "new_identity")));
    ck_assert_int_eq(strncmp(str(j, "web_certificate"), "ey", 2), 0);
    json_decref(j);

    j = ok_json("wallet consent grant --wallet %s --app gov.tax --attrs full_name,province "
                "--purpose 'annual return'",
                wallet);
    ck_assert_str_eq(str(j, "app"), "gov.tax");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "attributes")), 2);
    ck_assert_str_ne(str(j, "receipt_id"), "");
    ck_assert_str_ne(str(j, "receipt"), "");
    str(j, "expires_at");
    json_decref(j);

    j = ok_json("wallet consent list --wallet %s", wallet);
    ck_assert(json_is_array(j));
    ck_assert_uint_eq(json_array_size(j), 1);
    json_t *g = json_array_get(j, 0);
    ck_assert_str_eq(str(g, "app"), "gov.tax");
    ck_assert_str_eq(str(g, "purpose"), "annual return");
    ck_assert_str_eq(str(g, "status"), "active");
    json_decref(j);

    j = ok_json("app login --app gov.tax --wallet %s --attrs full_name,province,gender", wallet);
    ck_assert_str_eq(str(j, "app"), "gov.tax");
    ck_assert(json_is_true(json_object_get(j, "verified")));
    ck_assert_int_eq(strncmp(str(j, "assertion"), "ey", 2), 0);
    json_t *claims = json_object_get(j, "claims");
    ck_assert_str_eq(str(claims, "aud"), "gov.tax");
    ck_assert_str_eq(str(claims, "full_name"), "王小明");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(claims, "province"), "code")), "44");
    json_t *w = json_object_get(j, "withheld");
    ck_assert_uint_eq(json_array_size(w), 1);
    ck_assert_str_eq(str(json_array_get(w, 0), "attribute"), "gender");
    ck_assert_str_eq(str(json_array_get(w, 0), "reason"), "not_registered");
    json_decref(j);

    j = ok_json("wallet consent withdraw --wallet %s --app gov.tax --attrs province", wallet);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "withdrawn"), 0)),
                     "province");
    json_decref(j);

    j = ok_json("wallet access-log --wallet %s", wallet);
    ck_assert(json_is_true(json_object_get(j, "chain_valid")));
    json_t *entries = json_object_get(j, "entries");
    ck_assert_uint_ge(json_array_size(entries), 2);
    /* the enrolment's new device, then the consent granted to gov.tax */
    ck_assert_str_eq(str(json_array_get(entries, 0), "action"), "device_added");
    ck_assert_str_eq(str(json_array_get(entries, 1), "action"), "consent_granted");
    ck_assert_str_eq(str(json_array_get(entries, 1), "app"), "gov.tax");
    json_decref(j);

    j = ok_json("wallet devices --wallet %s", wallet);
    ck_assert_uint_eq(json_array_size(j), 1);
    ck_assert(json_is_true(json_object_get(json_array_get(j, 0), "this_device")));
    json_decref(j);

    /* only a linked app can be unlinked (gov.tax is: the citizen logged in to it) */
    ck_assert_int_eq(veilctl(NULL, "wallet unlink --wallet %s --app chat.lianxin", wallet), 1);
    j = ok_json("wallet unlink --wallet %s --app gov.tax", wallet);
    ck_assert_str_eq(str(j, "unlinked"), "gov.tax");
    json_decref(j);

    /* a lost phone: revoked, then refused, with the status on stderr and in JSON */
    j = ok_json("wallet revoke-device --wallet %s", wallet);
    ck_assert_uint_eq(strlen(str(j, "revoked")), 32);
    json_decref(j);
    ck_assert_int_eq(veilctl(&out, "app login --app gov.tax --wallet %s --json", wallet), 1);
    j = json_loads(out, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                     "PERMISSION_DENIED");
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(test_app_and_admin_verbs)
{
    json_t *j = ok_json("admin apps list");
    ck_assert(json_is_array(j));
    ck_assert_uint_eq(json_array_size(j), 84); /* 81 online apps and 3 venues */
    size_t i;
    json_t *a;
    int public_service = 0, venues = 0;
    json_array_foreach(j, i, a)
    {
        str(a, "app");
        str(a, "name");
        str(a, "sector");
        str(a, "status");
        const char *kind = str(a, "kind");
        ck_assert(!strcmp(kind, "public_service") || !strcmp(kind, "commercial") ||
                  !strcmp(kind, "venue"));
        public_service += !strcmp(kind, "public_service");
        venues += !strcmp(kind, "venue");
        ck_assert(json_is_array(json_object_get(a, "attributes")));
    }
    ck_assert_int_eq(public_service, 10);
    ck_assert_int_eq(venues, 3);
    json_decref(j);

    j = ok_json("app jwks");
    json_t *keys = json_object_get(j, "keys");
    ck_assert_uint_ge(json_array_size(keys), 1);
    ck_assert_str_eq(str(json_array_get(keys, 0), "kty"), "OKP");
    ck_assert_str_eq(str(json_array_get(keys, 0), "crv"), "Ed25519");
    json_decref(j);

    j = ok_json("admin apps register --app news.kuaibao --name 'Kuaibao News' --kind commercial "
                "--attrs age_over_14,province");
    ck_assert_str_eq(str(j, "app"), "news.kuaibao");
    ck_assert_str_eq(str(j, "sector"), "news.kuaibao");
    ck_assert_str_eq(str(j, "status"), "active");
    json_decref(j);
    /* a commercial app may not hold raw attributes: refused, exit 1 */
    char *out;
    ck_assert_int_eq(veilctl(&out,
                             "admin apps register --app news.bad --name Bad --kind commercial "
                             "--attrs full_name --json"),
                     1);
    ck_assert_ptr_nonnull(strstr(out, "FAILED_PRECONDITION"));
    free(out);

    j = ok_json("admin apps suspend --app news.kuaibao --reason test");
    ck_assert_str_eq(str(j, "status"), "suspended");
    json_decref(j);

    j = ok_json("admin keys rotate --kind assertion --version 1");
    ck_assert_str_eq(str(j, "kind"), "assertion");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "current")), 1);
    json_decref(j);

    /* app events for an app with none: an empty list and a cursor */
    j = ok_json("app events --app game.longyin");
    ck_assert(json_is_array(json_object_get(j, "events")));
    str(j, "cursor");
    json_decref(j);

    /* a cursor beyond the end of the app's events is refused, not taken as "nothing new" */
    ck_assert_int_eq(veilctl(&out, "app events --app game.longyin --cursor r999999.c0 --json"), 1);
    ck_assert_ptr_nonnull(strstr(out, "INVALID_ARGUMENT"));
    ck_assert_ptr_nonnull(strstr(out, "cursor is beyond the end of this app's events"));
    free(out);
    ck_assert_int_eq(veilctl(&out, "app events --app game.longyin --cursor r0.c999999 --json"), 1);
    free(out);

    /* numbers are parsed strictly: a missing or malformed --version never becomes 0 (which
       would end an overlap), "--days 3x" is not 3 */
    ck_assert_int_eq(veilctl(NULL, "admin keys rotate --kind pseudonym"), 2);
    ck_assert_int_eq(veilctl(NULL, "admin keys rotate --kind pseudonym --version x"), 2);
    ck_assert_int_eq(veilctl(NULL, "admin keys rotate --kind pseudonym --version 2x"), 2);
    ck_assert_int_eq(veilctl(NULL, "admin keys rotate --kind pseudonym --version -1"), 2);
    ck_assert_int_eq(veilctl(NULL, "admin keys rotate --kind pseudonym --version ''"), 2);
    ck_assert_int_eq(
        veilctl(NULL, "admin keys rotate --kind pseudonym --version 99999999999999999999"), 2);
    ck_assert_int_eq(veilctl(NULL, "wallet consent grant --wallet w --app gov.tax --attrs province "
                                   "--purpose p --days 3x"),
                     2);
    ck_assert_int_eq(veilctl(NULL, "wallet consent grant --wallet w --app gov.tax --attrs province "
                                   "--purpose p --days 0"),
                     2);
    char err_path[1200];
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    FILE *ef = fopen(err_path, "r");
    char errtext[65536];
    size_t en = fread(errtext, 1, sizeof errtext - 1, ef);
    errtext[en] = '\0';
    fclose(ef);
    ck_assert_ptr_nonnull(
        strstr(errtext, "--days must be a whole number from 1 to 36500, not \"3x\""));
    ck_assert_ptr_nonnull(
        strstr(errtext, "--version must be a whole number from 0 to 1000000, not \"2x\""));
    /* nothing changed: the pseudonym key state is still version 1 with no overlap */
    j = ok_json("admin keys rotate --kind pseudonym --version 1");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "current")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "previous")), 0);
    json_decref(j);

    /* usage errors exit 2 */
    ck_assert_int_eq(veilctl(NULL, "wallet frobnicate"), 2);
    ck_assert_int_eq(veilctl(NULL, "app login --app gov.tax"), 2);
}
END_TEST

/* Runs a shell command line; returns its exit status, stdout and stderr together in *out. */
static int shell(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int shell(char **out, const char *fmt, ...)
{
    char line[4096], cmd[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "(%s) 2>&1", line);
    return run(cmd, out);
}

static void enrolled_wallet(const char *name, char *wallet, size_t len, json_t **enrolment)
{
    char *out, id[19];
    snprintf(wallet, len, "%s/%s.json", dir, name);
    json_decref(ok_json("wallet create --wallet %s", wallet));
    ck_assert_int_eq(veilctl(&out, "dev id-number --region 110101 --birth 19800101"), 0);
    memcpy(id, out, 18);
    id[18] = '\0';
    free(out);
    json_t *j = ok_json("wallet enroll --wallet %s --id-number %s --name %s", wallet, id, name);
    if (enrolment)
        *enrolment = j;
    else
        json_decref(j);
}

/* issue 18 item 14: the attribute names are listed; "a, b" with a space works */
START_TEST(test_attribute_names_listed)
{
    char *out, wallet[1200];
    const char *bin = h_env("VEIL_TEST_BIN");
    ck_assert_int_eq(shell(&out, "%s/veilctl help", bin), 0);
    static const char *const names[] = {
        "real_name_verified", "age_over_14", "age_over_18", "age_over_60",
        "province",           "full_name",   "gender",      "birth_date"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ck_assert_msg(strstr(out, names[i]), "veilctl help does not list %s", names[i]);
    ck_assert_ptr_nonnull(strstr(out, "public-service apps only"));
    free(out);

    enrolled_wallet("carol", wallet, sizeof wallet, NULL);
    /* an unknown name: refused before any call, with every name in the message */
    ck_assert_int_eq(shell(&out,
                           "%s/veilctl wallet consent grant --wallet %s --app gov.tax --attrs "
                           "age_over_21 --purpose x --json",
                           bin, wallet),
                     1);
    ck_assert_ptr_nonnull(strstr(out, "unknown attribute age_over_21"));
    ck_assert_ptr_nonnull(strstr(out, "real_name_verified, age_over_14"));
    free(out);
    /* the gateway's own message lists them too (a client that does not check first) */
    ck_assert_int_eq(shell(&out,
                           "%s/veilctl admin apps register --app news.typo --name Typo --kind "
                           "commercial --attrs 'age_over_18,agee' --json",
                           bin),
                     1);
    ck_assert_ptr_nonnull(strstr(out, "unknown attribute agee"));
    free(out);

    json_t *j = ok_json("wallet consent grant --wallet %s --app gov.tax --attrs 'full_name, "
                        "province' --purpose 'annual return'",
                        wallet);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "attributes")), 2);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "attributes"), 1)),
                     "province");
    json_decref(j);
    j = ok_json("app login --app gov.tax --wallet %s --attrs ' full_name , province '", wallet);
    ck_assert_str_eq(str(json_object_get(j, "claims"), "full_name"), "carol");
    json_decref(j);
}
END_TEST

/* issue 18 item 15: outside the stack's environment the error says what to run */
START_TEST(test_missing_environment_points_to_stack_env)
{
    char *out;
    ck_assert_int_eq(shell(&out,
                           "cd %s && env -u VEILCTL_CA -u VEILCTL_CERTS -u VEILCTL_GATEWAY "
                           "%s/veilctl admin apps list",
                           dir, h_env("VEIL_TEST_BIN")),
                     1);
    ck_assert_ptr_nonnull(strstr(out, "var/certs/ca.crt"));
    ck_assert_ptr_nonnull(strstr(out, "eval \"$(deploy/local/stack env)\""));
    free(out);
}
END_TEST

/* issue 18 item 16: "veilctl wallet" alone shows the wallet verbs only */
START_TEST(test_group_usage)
{
    char *out;
    ck_assert_int_eq(shell(&out, "%s/veilctl wallet", h_env("VEIL_TEST_BIN")), 2);
    ck_assert_ptr_nonnull(strstr(out, "veilctl wallet enroll"));
    ck_assert_ptr_nonnull(strstr(out, "veilctl wallet erase"));
    ck_assert_ptr_null(strstr(out, "admin apps"));
    ck_assert_ptr_null(strstr(out, "app login"));
    free(out);
    ck_assert_int_eq(shell(&out, "%s/veilctl admin apps", h_env("VEIL_TEST_BIN")), 2);
    ck_assert_ptr_nonnull(strstr(out, "veilctl admin apps update"));
    ck_assert_ptr_null(strstr(out, "wallet enroll"));
    free(out);
}
END_TEST

/* issue 18 item 13: erase asks on a terminal and needs --yes elsewhere */
START_TEST(test_destructive_verbs_confirm)
{
    char *out, wallet[1200];
    const char *bin = h_env("VEIL_TEST_BIN");
    enrolled_wallet("dave", wallet, sizeof wallet, NULL);
    /* not a terminal, no --yes: refused (exit 2), nothing erased */
    ck_assert_int_eq(
        shell(&out, "%s/veilctl wallet erase --wallet %s --json </dev/null", bin, wallet), 2);
    ck_assert_ptr_nonnull(strstr(out, "--yes"));
    free(out);
    json_decref(ok_json("wallet devices --wallet %s", wallet));
    /* on a terminal: answering anything but "yes" cancels */
    ck_assert_int_eq(shell(&out,
                           "echo no | script -qec '%s/veilctl wallet erase --wallet %s' /dev/null",
                           bin, wallet),
                     1);
    ck_assert_ptr_nonnull(strstr(out, "Type yes"));
    ck_assert_ptr_nonnull(strstr(out, "not confirmed"));
    free(out);
    json_decref(ok_json("wallet devices --wallet %s", wallet));
    /* on a terminal, "yes": erased */
    ck_assert_int_eq(shell(&out,
                           "echo yes | script -qec '%s/veilctl wallet erase --wallet %s' /dev/null",
                           bin, wallet),
                     0);
    ck_assert_ptr_nonnull(strstr(out, "erased"));
    free(out);
    ck_assert_int_eq(veilctl(NULL, "wallet devices --wallet %s --json", wallet), 1);

    /* with --yes, no question */
    enrolled_wallet("erin", wallet, sizeof wallet, NULL);
    json_t *j = ok_json("wallet erase --wallet %s --yes </dev/null", wallet);
    ck_assert(json_is_true(json_object_get(j, "erased")));
    json_decref(j);

    /* ending a key overlap is destructive too: refused without --yes, before any call */
    ck_assert_int_eq(
        shell(&out, "%s/veilctl admin keys rotate --kind assertion --version 0 </dev/null", bin),
        2);
    ck_assert_ptr_nonnull(strstr(out, "--yes"));
    free(out);
    /* with --yes the gateway is asked (and says whether an overlap was in progress) */
    int rc = shell(&out, "%s/veilctl admin keys rotate --kind assertion --version 0 --yes", bin);
    ck_assert_msg(rc == 0 || strstr(out, "no rotation is in progress"), "%s", out);
    ck_assert_ptr_null(strstr(out, "--yes"));
    free(out);
}
END_TEST

/* issue 18 item 16: receipts in the list and verifiable; web certificates verifiable */
START_TEST(test_verify_receipts_and_webcerts)
{
    char *out, wallet[1200];
    const char *bin = h_env("VEIL_TEST_BIN");
    json_t *enrolment;
    enrolled_wallet("frank", wallet, sizeof wallet, &enrolment);
    json_decref(ok_json("wallet consent grant --wallet %s --app game.tianfeng --attrs age_over_18 "
                        "--purpose 'age check'",
                        wallet));
    json_t *list = ok_json("wallet consent list --wallet %s", wallet);
    const char *receipt = str(json_array_get(list, 0), "receipt");
    ck_assert_int_eq(strncmp(receipt, "ey", 2), 0);

    json_t *keys = ok_json("wallet keys");
    ck_assert(json_is_array(json_object_get(json_object_get(keys, "consent_jwks"), "keys")));
    ck_assert(json_is_array(json_object_get(json_object_get(keys, "vault_jwks"), "keys")));
    ck_assert(json_is_array(json_object_get(json_object_get(keys, "gateway_jwks"), "keys")));
    json_decref(keys);

    json_t *j = ok_json("wallet verify-receipt --receipt %s", receipt);
    ck_assert(json_is_true(json_object_get(j, "verified")));
    ck_assert_str_eq(str(json_object_get(j, "claims"), "app"), "game.tianfeng");
    ck_assert_str_eq(str(json_object_get(j, "claims"), "purpose"), "age check");
    json_decref(j);
    /* one changed character of the signature: refused */
    char *bad = strdup(receipt);
    size_t n = strlen(bad);
    bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A';
    ck_assert_int_eq(shell(&out, "%s/veilctl wallet verify-receipt --receipt %s --json", bin, bad),
                     1);
    ck_assert_ptr_nonnull(strstr(out, "UNAUTHENTICATED"));
    free(out);
    free(bad);
    /* a web certificate is not a receipt */
    const char *cert = str(enrolment, "web_certificate");
    ck_assert_int_eq(shell(&out, "%s/veilctl wallet verify-receipt --receipt %s", bin, cert), 1);
    free(out);

    /* the web certificate, as a scanner reads it from the QR code: on stdin */
    ck_assert_int_eq(
        shell(&out, "echo %s | %s/veilctl wallet verify-webcert --webcert - --json", cert, bin), 0);
    j = json_loads(out, 0, NULL);
    free(out);
    ck_assert_ptr_nonnull(j);
    ck_assert(json_is_true(json_object_get(j, "verified")));
    ck_assert_str_eq(str(json_object_get(j, "claims"), "wn"), str(enrolment, "web_number"));
    json_decref(j);
    ck_assert_int_eq(shell(&out, "%s/veilctl wallet verify-webcert --webcert %s", bin, receipt), 1);
    free(out);
    json_decref(list);
    json_decref(enrolment);
}
END_TEST

/* issue 18 item 16: UpdateApp has a verb; suspend/reinstate replies carry name and organisation */
START_TEST(test_app_update_and_state_replies)
{
    json_t *j =
        ok_json("admin apps register --app news.dianjing --name 'Dianjing' --kind commercial "
                "--attrs age_over_14 --org 'Dianjing Ltd'");
    json_decref(j);
    j = ok_json("admin apps update --app news.dianjing --name 'Dianjing Daily' --kind commercial "
                "--attrs 'age_over_14, province' --org 'Dianjing Ltd'");
    ck_assert_str_eq(str(j, "name"), "Dianjing Daily");
    ck_assert_str_eq(str(j, "organisation"), "Dianjing Ltd");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "attributes")), 2);
    json_decref(j);
    j = ok_json("admin apps suspend --app news.dianjing --reason review");
    ck_assert_str_eq(str(j, "status"), "suspended");
    ck_assert_str_eq(str(j, "name"), "Dianjing Daily");
    ck_assert_str_eq(str(j, "organisation"), "Dianjing Ltd");
    json_decref(j);
    j = ok_json("admin apps reinstate --app news.dianjing");
    ck_assert_str_eq(str(j, "status"), "active");
    ck_assert_str_eq(str(j, "name"), "Dianjing Daily");
    ck_assert_str_eq(str(j, "organisation"), "Dianjing Ltd");
    json_decref(j);
    /* an update of an unknown app: NOT_FOUND, exit 1 */
    ck_assert_int_eq(veilctl(NULL, "admin apps update --app news.nothere --name X --kind "
                                   "commercial --json"),
                     1);
}
END_TEST

/* An enrolled wallet file for a synthetic person; the path into out. */
static void enrolled_wallet_born(const char *name, const char *birth, char *out, size_t len)
{
    char *id;
    snprintf(out, len, "%s/%s.json", dir, name);
    ck_assert_int_eq(veilctl(NULL, "wallet create --wallet %s", out), 0);
    ck_assert_int_eq(veilctl(&id, "dev id-number --region 310101 --birth %s", birth), 0);
    id[18] = '\0';
    ck_assert_int_eq(
        veilctl(NULL, "wallet enroll --wallet %s --id-number %s --name %s", out, id, name), 0);
    free(id);
}

/* Runs SQL against the vault's database, SUBJECT standing for the wallet's citizen. */
static void vault_sql(const char *wallet, const char *sql)
{
    json_t *w = ok_json("wallet show --wallet %s", wallet);
    char out[4096], subject[160];
    size_t used = 0;
    snprintf(subject, sizeof subject, "(SELECT subject_ref FROM citizens WHERE web_number = '%s')",
             str(w, "web_number"));
    json_decref(w);
    for (const char *p = sql; *p && used + sizeof subject < sizeof out;) {
        if (strncmp(p, "SUBJECT", 7) == 0) {
            used += (size_t)snprintf(out + used, sizeof out - used, "%s", subject);
            p += 7;
        } else {
            out[used++] = *p++;
        }
    }
    out[used] = '\0';
    ck_assert_int_eq(h_db_exec(S.db[H_VAULT], out), 0);
}

/* `wallet access-log --json`: the checkpoint object, status expected. */
static json_t *checkpoint_is(const char *wallet, const char *status, int ok, int chain_valid)
{
    json_t *j = ok_json("wallet access-log --wallet %s", wallet);
    json_t *cp = json_object_get(j, "checkpoint");
    ck_assert_ptr_nonnull(cp);
    ck_assert_msg(strcmp(str(cp, "status"), status) == 0, "checkpoint %s, expected %s: %s",
                  str(cp, "status"), status, str(cp, "message"));
    ck_assert_int_eq(json_is_true(json_object_get(cp, "ok")), ok);
    ck_assert_int_eq(json_is_true(json_object_get(j, "chain_valid")), chain_valid);
    return j;
}

/* Logs the wallet into an app n times. */
static void logins(const char *wallet, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(veilctl(NULL, "app login --app news.xinwen --wallet %s", wallet), 0);
}

START_TEST(test_checkpoint_detects_rollback)
{
    char wallet[1200];
    enrolled_wallet_born("rollback", "19850612", wallet, sizeof wallet);
    logins(wallet, 3); /* entries 1 (device_added) to 4 */
    json_t *j = checkpoint_is(wallet, "first_read", 1, 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "checkpoint"), "seq")),
                     4);
    json_decref(j);
    /* the operator saves the head at entry 4; two more logins follow and are read */
    vault_sql(wallet,
              "CREATE TABLE saved_head AS SELECT * FROM access_heads WHERE subject_ref = SUBJECT");
    logins(wallet, 2);
    json_decref(checkpoint_is(wallet, "consistent", 1, 1));

    /* deleting the newest entries and restoring the saved head: the vault's chain is valid,
       but the wallet's checkpoint says the log ended at entry 6 */
    vault_sql(wallet, "DELETE FROM access_log WHERE subject_ref = SUBJECT AND seq > 4; "
                      "UPDATE access_heads h SET seq = s.seq, head = s.head FROM saved_head s "
                      "WHERE h.subject_ref = SUBJECT");
    j = checkpoint_is(wallet, "rolled_back", 0, 1);
    json_t *cp = json_object_get(j, "checkpoint");
    ck_assert_int_eq(json_integer_value(json_object_get(cp, "previous_seq")), 6);
    ck_assert_int_eq(json_integer_value(json_object_get(cp, "seq")), 4);
    json_decref(j);
    /* the text says so too */
    char *out;
    ck_assert_int_eq(veilctl(&out, "wallet access-log --wallet %s", wallet), 0);
    ck_assert_ptr_nonnull(strstr(out, "LOG TAMPERED: the log was rolled back: it ended at entry 6 "
                                      "when this device last read it, now at 4"));
    free(out);

    /* new logins grow the log past entry 6 again: entry 6 is not the one the wallet saw */
    logins(wallet, 3);
    json_decref(checkpoint_is(wallet, "rewritten", 0, 1));
    vault_sql(wallet, "DROP TABLE saved_head");
}
END_TEST

START_TEST(test_checkpoint_detects_wipe)
{
    char wallet[1200];
    enrolled_wallet_born("wipe", "19920320", wallet, sizeof wallet);
    logins(wallet, 2);
    json_decref(checkpoint_is(wallet, "first_read", 1, 1));
    /* deleting everything and resetting the head: a valid, empty log for the vault */
    vault_sql(wallet,
              "DELETE FROM access_log WHERE subject_ref = SUBJECT; UPDATE access_heads SET "
              "seq = 0, head = decode(repeat('00', 32), 'hex') WHERE subject_ref = SUBJECT");
    json_t *j = checkpoint_is(wallet, "wiped", 0, 1);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "entries")), 0);
    json_decref(j);
    char *out;
    ck_assert_int_eq(veilctl(&out, "wallet access-log --wallet %s", wallet), 0);
    ck_assert_ptr_nonnull(strstr(out, "LOG TAMPERED: the log was wiped: it held 3 entries when "
                                      "this device last read it"));
    free(out);

    /* a checkpoint that does not verify with the pinned key is refused, not kept */
    json_error_t je;
    json_t *file = json_load_file(wallet, 0, &je);
    ck_assert_ptr_nonnull(file);
    unsigned char other[32];
    char other64[64];
    randombytes_buf(other, sizeof other);
    sodium_bin2base64(other64, sizeof other64, other, sizeof other,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    json_object_set_new(file, "checkpoint_public_key", json_string(other64));
    ck_assert_int_eq(json_dump_file(file, wallet, 0), 0);
    json_decref(file);
    chmod(wallet, 0600);
    json_decref(checkpoint_is(wallet, "bad_checkpoint", 0, 1));
}
END_TEST

/* The in-person verbs (issue 17) and their JSON: the same shape as `app login`. */
/* Whether any row of the gateway's admin_audit, as text, contains s (a DO block raises if so). */
static int audit_row_contains(const char *s)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "DO $$ BEGIN IF EXISTS (SELECT 1 FROM admin_audit a WHERE strpos(a::text, '%s') > 0)"
             " THEN RAISE EXCEPTION 'found'; END IF; END $$",
             s);
    return h_db_exec(S.db[H_GATEWAY], sql) != 0;
}

/* The audit entries (JSON array) of `admin audit --json` with extra arguments. */
static json_t *audit(const char *extra)
{
    json_t *j = ok_json("admin audit %s", extra);
    ck_assert(json_is_array(j));
    return j;
}

/* Every audit entry up to now, page by page (--cursor). */
static json_t *audit_all(void)
{
    json_t *all = json_array();
    long long after = 0;
    for (;;) {
        char arg[64];
        snprintf(arg, sizeof arg, "--cursor %lld", after);
        json_t *page = audit(arg);
        size_t n = json_array_size(page), others = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(page, i);
            after = json_integer_value(json_object_get(e, "seq"));
            if (strcmp(str(e, "method"), "ListAudit") != 0) { /* not the paging itself */
                json_array_append(all, e);
                others++;
            }
        }
        json_decref(page);
        if (others == 0) /* only our own reads are new (each read is audited too) */
            return all;
    }
}

/* Issue 13 item 6: every admin call is audited, readable by the auditor, no web number in clear. */
START_TEST(test_admin_audit)
{
    char wallet[1200], *out;
    json_t *enrolment;
    enrolled_wallet("审计", wallet, sizeof wallet, &enrolment);
    const char *wn = str(enrolment, "web_number");

    /* a change to an identity needs a reason, which may not hold a web number or ID number */
    ck_assert_int_eq(veilctl(NULL, "admin identity --web-number %s --state suspended", wn), 2);
    ck_assert_int_eq(veilctl(&out,
                             "admin identity --web-number %s --state suspended --reason 'case %s'"
                             " --json",
                             wn, wn),
                     1);
    ck_assert_ptr_nonnull(strstr(out, "reason must not hold an ID number or a web number"));
    free(out);
    ck_assert_int_eq(veilctl(&out,
                             "admin identity --web-number %s --state suspended --reason "
                             "'id 110101198001011234' --json",
                             wn),
                     1);
    free(out);
    json_decref(ok_json("admin identity --web-number %s --state suspended --reason 'fraud case "
                        "77 (court order)'",
                        wn));
    json_decref(
        ok_json("admin identity --web-number %s --state active --reason 'case 77 closed'", wn));
    json_decref(ok_json("admin apps suspend --app news.xinwen --reason 'licence review'"));
    json_decref(ok_json("admin apps reinstate --app news.xinwen --reason 'licence renewed'"));
    ck_assert_int_eq(veilctl(NULL, "admin apps suspend --app no.such.app --reason x --json"), 1);

    /* the auditor may ask about one web number: that identity's entries, by its reference */
    char arg[96];
    snprintf(arg, sizeof arg, "--web-number %s", wn);
    json_t *mine = audit(arg);
    ck_assert_uint_eq(json_array_size(mine), 4); /* two refused, two made */
    const char *ref = str(json_array_get(mine, 0), "identity_ref");
    ck_assert_uint_eq(strlen(ref), 32);
    ck_assert_str_eq(str(json_array_get(mine, 0), "result"), "INVALID_ARGUMENT");
    ck_assert_str_eq(str(json_array_get(mine, 0), "reason"), ""); /* a refused reason is not kept */
    json_t *made = json_array_get(mine, 2);
    ck_assert_str_eq(str(made, "actor"), "admin/ops");
    ck_assert_str_eq(str(made, "method"), "SetIdentityState");
    ck_assert_str_eq(str(made, "detail"), "state=suspended");
    ck_assert_str_eq(str(made, "reason"), "fraud case 77 (court order)");
    ck_assert_str_eq(str(made, "result"), "OK");
    ck_assert_str_eq(str(json_array_get(mine, 3), "identity_ref"), ref); /* one person, one ref */

    /* the auditor reads it all; every call is there, with who, what, which, why and the result */
    json_t *all = audit_all();
    size_t n = json_array_size(all);
    int seen_set = 0, seen_suspend = 0, seen_missing_app = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(all, i);
        const char *method = str(e, "method"), *result = str(e, "result");
        ck_assert_str_eq(str(e, "actor"), "admin/ops");
        seen_set += !strcmp(method, "SetIdentityState") && !strcmp(str(e, "identity_ref"), ref);
        if (!strcmp(method, "SuspendApp") && !strcmp(str(e, "reason"), "licence review")) {
            ck_assert_str_eq(str(e, "app"), "news.xinwen");
            ck_assert_str_eq(result, "OK");
            seen_suspend++;
        }
        seen_missing_app += !strcmp(method, "SuspendApp") && !strcmp(result, "NOT_FOUND");
    }
    ck_assert_int_eq(seen_set, 4);
    ck_assert_int_eq(seen_suspend, 1);
    ck_assert_int_ge(seen_missing_app, 1);
    /* the reasons are there, the web number is not, in the reply or the table */
    ck_assert(audit_row_contains("fraud case 77"));
    ck_assert(!audit_row_contains(wn));
    char *text = json_dumps(all, 0);
    ck_assert_ptr_null(strstr(text, wn));
    free(text);
    /* the auditor's reads are audited too */
    snprintf(arg, sizeof arg, "--cursor %lld",
             (long long)json_integer_value(json_object_get(json_array_get(all, n - 1), "seq")));
    json_t *rest = audit(arg);
    ck_assert_uint_ge(json_array_size(rest), 1);
    for (size_t i = 0; i < json_array_size(rest); i++) {
        ck_assert_str_eq(str(json_array_get(rest, i), "method"), "ListAudit");
        ck_assert_str_eq(str(json_array_get(rest, i), "actor"), "auditor/audit");
    }
    json_decref(rest);
    ck_assert_int_eq(veilctl(NULL, "admin audit --cursor 3x"), 2);
    json_decref(mine);
    json_decref(all);

    /* nobody can rewrite it (the admin cannot even read it: check_authz's matrix) */
    ck_assert_int_ne(h_db_exec(S.db[H_GATEWAY], "UPDATE admin_audit SET reason = 'x'"), 0);
    ck_assert_int_ne(h_db_exec(S.db[H_GATEWAY], "DELETE FROM admin_audit"), 0);
    json_decref(enrolment);
}
END_TEST

static void login_shape(json_t *j, const char *app)
{
    ck_assert_str_eq(str(j, "app"), app);
    ck_assert(json_is_true(json_object_get(j, "verified")));
    ck_assert_int_eq(strncmp(str(j, "assertion"), "ey", 2), 0);
    ck_assert_str_eq(str(json_object_get(j, "claims"), "aud"), app);
    ck_assert(json_is_array(json_object_get(j, "withheld")));
}

START_TEST(test_inperson_verbs)
{
    char wallet[1200], card[1200], id[19], *out;
    snprintf(wallet, sizeof wallet, "%s/grandson.json", dir);
    snprintf(card, sizeof card, "%s/grandma.card", dir);
    ck_assert_int_eq(veilctl(&out, "dev id-number --region 110105 --birth 19990101"), 0);
    memcpy(id, out, 18);
    id[18] = '\0';
    free(out);
    json_decref(ok_json("wallet create --wallet %s", wallet));
    json_decref(ok_json("wallet enroll --wallet %s --id-number %s --name %s", wallet, id, "李明"));

    /* the phone shows a code; the internet bar redeems it */
    json_t *j =
        ok_json("wallet present --wallet %s --attrs age_over_18,real_name_verified", wallet);
    char *presentation = strdup(str(j, "presentation"));
    ck_assert_uint_eq(json_array_size(json_object_get(j, "attributes")), 2);
    ck_assert(json_is_integer(json_object_get(j, "made_at_ms")));
    json_decref(j);
    j = ok_json("app redeem --app venue.netbar.feiyu --presentation %s", presentation);
    login_shape(j, "venue.netbar.feiyu");
    ck_assert(json_is_true(json_object_get(json_object_get(j, "claims"), "age_over_18")));
    ck_assert_str_eq(str(json_object_get(j, "claims"), "acr"), "urn:veil:acr:phone");
    json_decref(j);
    /* twice: refused, with the status in JSON */
    ck_assert_int_eq(
        veilctl(&out, "app redeem --app venue.netbar.feiyu --presentation %s --json", presentation),
        1);
    j = json_loads(out, 0, NULL);
    ck_assert_str_eq(str(json_object_get(j, "error"), "code"), "UNAUTHENTICATED");
    ck_assert_str_eq(str(json_object_get(j, "error"), "message"), "presentation already used");
    json_decref(j);
    free(out);
    free(presentation);
    /* without a text-mode QR and the string, nothing to show */
    ck_assert_int_eq(veilctl(&out, "wallet present --wallet %s --attrs age_over_18", wallet), 0);
    ck_assert_ptr_nonnull(strstr(out, "presentation "));
    free(out);

    /* the counter issues a card to her grandmother; she logs in to the tax platform */
    ck_assert_int_eq(veilctl(&out, "dev id-number --region 110105 --birth 19400101"), 0);
    memcpy(id, out, 18);
    free(out);
    j = ok_json("counter card issue --id-number %s --name %s --pin 135790 --out %s", id, "王秀兰",
                card);
    ck_assert_str_eq(str(j, "card"), card);
    ck_assert_uint_eq(strlen(str(j, "device_id")), 32);
    ck_assert_uint_eq(strlen(str(j, "code")), VEIL_CARD_CODE_LEN);
    ck_assert(json_is_true(json_object_get(j, "new_identity")));
    json_decref(j);
    struct stat st;
    ck_assert_int_eq(stat(card, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    j = ok_json("app login --app gov.tax --card %s --pin 135790 --attrs real_name_verified", card);
    login_shape(j, "gov.tax");
    ck_assert_str_eq(str(json_object_get(j, "claims"), "acr"), "urn:veil:acr:card");
    json_decref(j);
    /* a wrong PIN: counted and shown at the counter */
    ck_assert_int_eq(veilctl(&out, "app login --app gov.tax --card %s --pin 000000 --json", card),
                     1);
    j = json_loads(out, 0, NULL);
    ck_assert_str_eq(str(json_object_get(j, "error"), "message"),
                     "wrong pin: 4 of 5 attempts left");
    json_decref(j);
    free(out);
    j = ok_json("counter card status --card %s", card);
    ck_assert_str_eq(str(j, "status"), "active");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "wrong_pins")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "attempts_left")), 4);
    json_decref(j);
    /* a card file is never overwritten; a PIN must be digits */
    ck_assert_int_eq(
        veilctl(NULL, "counter card issue --id-number %s --name x --pin 1234 --out %s", id, card),
        1);
    ck_assert_int_eq(veilctl(NULL,
                             "counter card issue --id-number %s --name x --pin 12ab --out "
                             "%s.2",
                             id, card),
                     1);
    ck_assert_int_eq(veilctl(NULL, "app login --app gov.tax --card %s", card), 2);
}
END_TEST

/* The registry as `admin apps list --json` shows it, as an apply file's entries. */
static json_t *registry_as_file_entries(void)
{
    json_t *list = ok_json("admin apps list");
    json_t *apps = json_array();
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a)
    {
        json_array_append_new(
            apps, json_pack("{s:s, s:s, s:s, s:s, s:O, s:s, s:s}", "app_id", str(a, "app"), "name",
                            str(a, "name"), "kind", str(a, "kind"), "sector_id", str(a, "sector"),
                            "attributes", json_object_get(a, "attributes"), "organisation",
                            str(a, "organisation"), "status", str(a, "status")));
    }
    json_decref(list);
    return apps;
}

static json_t *entry(json_t *apps, const char *id)
{
    size_t i;
    json_t *a;
    json_array_foreach(apps, i, a)
    {
        const char *x = json_string_value(json_object_get(a, "app_id"));
        if (!x)
            x = json_string_value(json_object_get(a, "app"));
        if (strcmp(x, id) == 0)
            return a;
    }
    return NULL;
}

/* Issue 16 item 6: apply adds, updates and suspends; --dry-run prints the diff and changes nothing.
 */
START_TEST(test_apps_apply)
{
    json_t *apps = registry_as_file_entries();
    size_t before = json_array_size(apps);
    ck_assert_uint_ge(before, 81);
    /* the file: a new app, one renamed with one more attribute, one left out */
    json_array_append_new(apps, json_pack("{s:s, s:s, s:s, s:[s], s:s}", "app_id", "shop.applied",
                                          "name", "Applied Shop", "kind", "commercial",
                                          "attributes", "age_over_18", "organisation", "Apply Co"));
    json_t *renamed = entry(apps, "music.kge");
    ck_assert_ptr_nonnull(renamed);
    json_object_set_new(renamed, "name", json_string("K歌 renamed by apply"));
    json_array_append_new(json_object_get(renamed, "attributes"), json_string("age_over_60"));
    size_t i;
    json_t *a;
    json_array_foreach(apps, i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "app_id")), "video.zhibo") == 0) {
            json_array_remove(apps, i);
            break;
        }
    }
    char file[1200];
    snprintf(file, sizeof file, "%s/apps.json", dir);
    json_t *doc = json_pack("{s:o}", "apps", apps);
    ck_assert_int_eq(json_dump_file(doc, file, JSON_INDENT(1)), 0);
    json_decref(doc);

    /* dry run: the diff, and nothing changes */
    json_t *dry = ok_json("admin apps apply --file %s --dry-run", file);
    json_t *diff = json_object_get(dry, "diff");
    ck_assert(json_is_true(json_object_get(dry, "dry_run")));
    ck_assert_int_eq(json_integer_value(json_object_get(dry, "applied")), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(diff, "add")), 1);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(diff, "add"), 0)),
                     "shop.applied");
    json_t *upd = json_array_get(json_object_get(diff, "update"), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(diff, "update")), 1);
    ck_assert_str_eq(str(upd, "app_id"), "music.kge");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(upd, "changes"), 0)), "name");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(upd, "changes"), 1)),
                     "attributes");
    ck_assert_uint_eq(json_array_size(json_object_get(diff, "suspend")), 1);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(diff, "suspend"), 0)),
                     "video.zhibo");
    ck_assert_int_eq(json_integer_value(json_object_get(diff, "unchanged")),
                     (json_int_t)before - 2);
    json_decref(dry);
    json_t *now = ok_json("admin apps list");
    ck_assert_uint_eq(json_array_size(now), before);
    ck_assert_ptr_null(entry(now, "shop.applied"));
    ck_assert_str_eq(str(entry(now, "video.zhibo"), "status"), "active");
    json_decref(now);
    /* the text form prints the same diff */
    char *out;
    ck_assert_int_eq(veilctl(&out, "admin apps apply --file %s --dry-run", file), 0);
    ck_assert_ptr_nonnull(strstr(out, "+ add        shop.applied"));
    ck_assert_ptr_nonnull(strstr(out, "~ update     music.kge (name, attributes)"));
    ck_assert_ptr_nonnull(strstr(out, "- suspend    video.zhibo (not in the file)"));
    free(out);

    /* the real thing */
    json_t *done = ok_json("admin apps apply --file %s", file);
    ck_assert_int_eq(json_integer_value(json_object_get(done, "applied")), 3);
    json_decref(done);
    now = ok_json("admin apps list");
    ck_assert_str_eq(str(entry(now, "shop.applied"), "status"), "active");
    ck_assert_str_eq(str(entry(now, "shop.applied"), "organisation"), "Apply Co");
    ck_assert_str_eq(str(entry(now, "music.kge"), "name"), "K歌 renamed by apply");
    ck_assert_str_eq(str(entry(now, "video.zhibo"), "status"), "suspended");
    json_decref(now);
    /* again: nothing left to do */
    done = ok_json("admin apps apply --file %s", file);
    ck_assert_int_eq(json_integer_value(json_object_get(done, "applied")), 0);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(done, "diff"), "unchanged")),
        (json_int_t)before);
    json_decref(done);

    /* YAML (block style): video.zhibo back, shop.applied suspended by status */
    snprintf(file, sizeof file, "%s/apps.yaml", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "# the registry\napps:\n");
    json_t *cur = registry_as_file_entries();
    json_array_foreach(cur, i, a)
    {
        const char *id = json_string_value(json_object_get(a, "app_id"));
        const char *status = strcmp(id, "shop.applied") == 0 ? "suspended"
                             : strcmp(id, "video.zhibo") == 0
                                 ? "active"
                                 : json_string_value(json_object_get(a, "status"));
        fprintf(
            f,
            "  - app_id: %s\n    name: \"%s\"\n    kind: %s\n    sector_id: %s\n    status: %s\n",
            id, json_string_value(json_object_get(a, "name")),
            json_string_value(json_object_get(a, "kind")),
            json_string_value(json_object_get(a, "sector_id")), status);
        fprintf(f, "    organisation: \"%s\"\n    attributes:\n",
                json_string_value(json_object_get(a, "organisation")));
        size_t k;
        json_t *at;
        json_array_foreach(json_object_get(a, "attributes"), k, at)
            fprintf(f, "      - %s\n", json_string_value(at));
        if (json_array_size(json_object_get(a, "attributes")) == 0)
            fprintf(f, "      []\n");
    }
    json_decref(cur);
    fclose(f);
    done = ok_json("admin apps apply --file %s", file);
    diff = json_object_get(done, "diff");
    ck_assert_uint_eq(json_array_size(json_object_get(diff, "reinstate")), 1);
    ck_assert_uint_eq(json_array_size(json_object_get(diff, "suspend")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(done, "applied")), 2);
    json_decref(done);
    now = ok_json("admin apps list");
    ck_assert_str_eq(str(entry(now, "shop.applied"), "status"), "suspended");
    ck_assert_str_eq(str(entry(now, "video.zhibo"), "status"), "active");
    json_decref(now);

    /* a bad file is refused before anything is asked */
    snprintf(file, sizeof file, "%s/bad.json", dir);
    f = fopen(file, "w");
    fprintf(f, "{\"apps\": [{\"app_id\": \"x\", \"name\": \"X\", \"kind\": \"commercial\", "
               "\"colour\": \"red\"}]}");
    fclose(f);
    ck_assert_int_eq(veilctl(&out, "admin apps apply --file %s", file), 1);
    free(out);
}
END_TEST

/* An erasure from a phone proofed an hour ago waits: exit 3, shown, cancellable. */
START_TEST(test_pending_erasure_verbs)
{
    char wallet[1200], *out;
    enrolled_wallet_born("pending", "19880808", wallet, sizeof wallet);
    json_t *j = ok_json("wallet pending --wallet %s", wallet);
    ck_assert(json_is_array(j));
    ck_assert_uint_eq(json_array_size(j), 0);
    json_decref(j);
    /* the phone's proofing an hour old (the default window is 15 minutes) */
    vault_sql(wallet, "UPDATE devices SET proofed_at = now() - interval '1 hour' "
                      "WHERE subject_ref = SUBJECT");
    ck_assert_int_eq(veilctl(&out, "wallet erase --wallet %s --yes --json", wallet), 3);
    j = json_loads(out, 0, NULL);
    free(out);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(str(j, "status"), "pending");
    ck_assert_str_eq(str(j, "reason"), "cooling_off");
    json_t *p = json_object_get(j, "pending");
    ck_assert_str_eq(str(p, "action"), "erase");
    ck_assert_str_eq(str(p, "target_device"), "");
    ck_assert_uint_eq(strlen(str(p, "id")), 32);
    str(p, "requested_by");
    str(p, "requested_at");
    str(p, "effective_at");
    json_decref(j);
    ck_assert_int_eq(veilctl(&out, "wallet erase --wallet %s --yes", wallet), 3);
    ck_assert_ptr_nonnull(strstr(out, "PENDING: this phone was not freshly proofed"));
    free(out);
    /* still enrolled: it logs in */
    ck_assert_int_eq(veilctl(NULL, "app login --app news.xinwen --wallet %s", wallet), 0);

    j = ok_json("wallet pending --wallet %s", wallet);
    ck_assert_uint_eq(json_array_size(j), 1);
    ck_assert_str_eq(str(json_array_get(j, 0), "action"), "erase");
    ck_assert(json_is_true(json_object_get(json_array_get(j, 0), "this_device")));
    json_decref(j);
    j = ok_json("wallet cancel-pending --wallet %s", wallet);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "cancelled")), 1);
    json_decref(j);
    j = ok_json("wallet pending --wallet %s", wallet);
    ck_assert_uint_eq(json_array_size(j), 0);
    json_decref(j);

    /* both are in the access log */
    j = ok_json("wallet access-log --wallet %s", wallet);
    json_t *entries = json_object_get(j, "entries"), *e;
    size_t i;
    int requested = 0, cancelled = 0;
    json_array_foreach(entries, i, e)
    {
        requested += !strcmp(str(e, "action"), "erase_requested");
        cancelled += !strcmp(str(e, "action"), "pending_cancelled");
    }
    ck_assert_int_eq(requested, 1);
    ck_assert_int_eq(cancelled, 1);
    json_decref(j);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_citizen_verbs,
                                  test_app_and_admin_verbs,
                                  test_attribute_names_listed,
                                  test_missing_environment_points_to_stack_env,
                                  test_group_usage,
                                  test_destructive_verbs_confirm,
                                  test_verify_receipts_and_webcerts,
                                  test_app_update_and_state_replies,
                                  test_checkpoint_detects_rollback,
                                  test_checkpoint_detects_wipe,
                                  test_pending_erasure_verbs,
                                  test_inperson_verbs,
                                  test_admin_audit,
                                  test_apps_apply /* last: it suspends an app */,
                                  NULL};
    const h_case cases[] = {{"veilctl", 300, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("veilctl", cases));
}
