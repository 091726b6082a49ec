/*
 * main.c - veilctl's verb table, options, connections and error reporting.
 *
 * Exit status: 0 success, 1 the call or check failed (the gRPC status and
 * message are printed), 2 usage, 3 an erasure or device revocation is
 * pending behind the cooling-off period (nothing happened yet).  `--json`
 * on any verb prints one JSON value on stdout (errors as
 * {"error":{"code":…,"message":…}}), for scripts.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/formats.h"

#include "veilctl.h"

struct verb {
    const char *words; /* e.g. "wallet consent grant" */
    vc_fn fn;
    const char *usage;
};

static const struct verb verbs[] = {
    {"wallet create", vc_wallet_create, "--wallet FILE"},
    {"wallet enroll", vc_wallet_enroll, "--wallet FILE --id-number N --name NAME [--label L]"},
    {"wallet show", vc_wallet_show, "--wallet FILE"},
    {"wallet consent grant", vc_consent_grant,
     "--wallet FILE --app APP_ID --attrs a,b --purpose TEXT [--days N]"},
    {"wallet consent withdraw", vc_consent_withdraw, "--wallet FILE --app APP_ID [--attrs a,b]"},
    {"wallet consent list", vc_consent_list, "--wallet FILE"},
    {"wallet revoke-device", vc_wallet_revoke_device, "--wallet FILE [--device ID]"},
    {"wallet devices", vc_wallet_devices, "--wallet FILE"},
    {"wallet unlink", vc_wallet_unlink, "--wallet FILE --app APP_ID"},
    {"wallet relink", vc_wallet_relink, "--wallet FILE --app APP_ID [--keep]"},
    {"wallet access-log", vc_wallet_access_log, "--wallet FILE"},
    {"wallet erase", vc_wallet_erase, "--wallet FILE [--yes]   (asks first on a terminal)"},
    {"wallet keys", vc_wallet_keys,
     "   (the gateway's, vault's and consent service's public keys)"},
    {"wallet verify-receipt", vc_verify_receipt, "--receipt JWS|-   (a consent receipt)"},
    {"wallet verify-webcert", vc_verify_webcert,
     "--webcert JWS|-   (a web certificate, e.g. read from its QR code)"},
    {"wallet pending", vc_wallet_pending, "--wallet FILE"},
    {"wallet cancel-pending", vc_wallet_cancel_pending, "--wallet FILE [--id ID]"},
    {"wallet request show", vc_wallet_request_show, "--wallet W --request URL"},
    {"wallet request approve", vc_wallet_request_approve,
     "--wallet W --request URL --code CODE [--attrs a,b] [--remember DAYS]"},
    {"wallet request deny", vc_wallet_request_deny, "--wallet W --request URL"},
    {"wallet present", vc_wallet_present, "--wallet FILE --attrs a,b   (show at a venue)"},
    {"app login", vc_app_login,
     "--app APP_ID (--wallet FILE | --card FILE --pin PIN) [--attrs a,b]"},
    {"app redeem", vc_app_redeem, "--app VENUE_ID --presentation STRING [--attrs a,b]"},
    {"counter card issue", vc_counter_card_issue,
     "--id-number N --name NAME --pin PIN --out CARD [--label L] [--replace]"},
    {"counter card status", vc_counter_card_status, "--card CARD"},
    {"app jwks", vc_app_jwks, ""},
    {"app events", vc_app_events, "--app APP_ID [--cursor C]"},
    {"admin apps list", vc_admin_apps_list, ""},
    {"admin apps register", vc_admin_apps_register,
     "--app ID --name NAME --kind public_service|commercial [--sector S] [--attrs a,b] [--org O]"
     " [--redirect-uri URI]... [--auth tls_client_auth|private_key_jwt] [--jwks FILE]"
     " [--id-token-alg EdDSA|RS256] [--attr-purpose ATTR=TEXT]..."},
    {"admin apps update", vc_admin_apps_update,
     "--app ID --name NAME --kind public_service|commercial [--sector S] [--attrs a,b] [--org O]"
     " [--redirect-uri URI]... [--auth tls_client_auth|private_key_jwt] [--jwks FILE]"
     " [--id-token-alg EdDSA|RS256] [--attr-purpose ATTR=TEXT]..."},
    {"admin apps apply", vc_admin_apps_apply,
     "--file apps.yaml|apps.json [--dry-run] [--reason TEXT]   (prints the diff, then applies it)"},
    {"admin apps suspend", vc_admin_apps_suspend, "--app ID [--reason TEXT]"},
    {"admin apps reinstate", vc_admin_apps_reinstate, "--app ID [--reason TEXT]"},
    {"admin keys rotate", vc_admin_keys_rotate,
     "--kind assertion|pseudonym|receipt --version N   (N = 0 ends the overlap: asks first, or "
     "--yes)"},
    {"admin identity", vc_admin_identity,
     "--web-number W --state active|suspended|revoked --reason TEXT"},
    {"admin audit", vc_admin_audit, "[--web-number W] [--cursor SEQ] [--json]   (as the auditor)"},
    {"dev proofing-key", vc_dev_proofing_key, "--out DIR   (development proofing authority)"},
    {"dev id-number", vc_dev_id_number, "[--region NNNNNN] [--birth YYYYMMDD]   (synthetic)"},
};
#define N_VERBS (sizeof verbs / sizeof verbs[0])

/* The verbs whose words start with prefix ("" for all); returns how many were printed. */
static size_t usage_verbs(FILE *f, const char *prefix)
{
    size_t pl = strlen(prefix), shown = 0;
    for (size_t i = 0; i < N_VERBS; i++)
        if (pl == 0 || (strncmp(verbs[i].words, prefix, pl) == 0 && verbs[i].words[pl] == ' ')) {
            fprintf(f, "  veilctl %s %s\n", verbs[i].words, verbs[i].usage);
            shown++;
        }
    return shown;
}

static void usage_all(FILE *f)
{
    fprintf(f, "usage: veilctl VERB... [options] [--json]\n\n");
    usage_verbs(f, "");
    size_t n;
    const veil_attr *cat = veil_attr_catalogue(&n);
    fprintf(f, "\nattributes (--attrs a,b):\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "  %-20s %s\n", cat[i].name,
                cat[i].kind == VEIL_ATTR_RAW ? "raw personal data: public-service apps only"
                                             : "derived: any app");
    fprintf(f, "\nenvironment (set it with: eval \"$(deploy/local/stack env)\"): VEILCTL_GATEWAY, "
               "VEILCTL_ADMIN_ADDR, VEILCTL_CA, VEILCTL_CERTS, VEILCTL_ADMIN, VEILCTL_COUNTER, "
               "VEILCTL_PROOFING_KEY\n");
}

int vc_usage(const char *line)
{
    fprintf(stderr, "usage: veilctl %s\n", line);
    return 2;
}

int vc_fail(const vc_opts *o, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "veilctl: %s: %s\n", code, msg);
    if (o->json)
        vc_print_json(json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
    return 1;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

veil_channel *vc_channel(const vc_opts *o, const char *as, const ProtobufCServiceDescriptor *svc)
{
    static char ca[1024], cert[1024], key[1024];
    /* The Admin API has a listener of its own; the public port does not serve it. */
    const char *addr = svc == &veil__gateway__admin__descriptor
                           ? env_or("VEILCTL_ADMIN_ADDR", "127.0.0.1:7110")
                       : o->gateway ? o->gateway
                                    : env_or("VEILCTL_GATEWAY", "127.0.0.1:7100");
    const char *certs = env_or("VEILCTL_CERTS", "var/certs");
    veil_tls_config tls = {0};
    snprintf(ca, sizeof ca, "%s", env_or("VEILCTL_CA", "var/certs/ca.crt"));
    tls.ca_file = ca;
    if (access(ca, R_OK) != 0) {
        /* The usual cause: a shell without the local stack's environment. */
        vc_fail(o, "UNAVAILABLE",
                "%s: does not exist or is not readable; for the local stack run "
                "eval \"$(deploy/local/stack env)\" first (or set VEILCTL_CA, VEILCTL_CERTS "
                "and VEILCTL_GATEWAY)",
                ca);
        return NULL;
    }
    if (strcmp(as, "citizen") != 0) {
        int admin = strcmp(as, "admin") == 0, counter = strcmp(as, "counter") == 0,
            auditor = strcmp(as, "auditor") == 0;
        const char *base = admin ? "admin" : counter ? "counter" : auditor ? "auditor" : "app";
        const char *name = admin     ? env_or("VEILCTL_ADMIN", "ops")
                           : counter ? env_or("VEILCTL_COUNTER", "desk1")
                           : auditor ? env_or("VEILCTL_AUDITOR", "audit")
                                     : as + 4;
        snprintf(cert, sizeof cert, "%s/%s-%s.crt", certs, base, name);
        snprintf(key, sizeof key, "%s/%s-%s.key", certs, base, name);
        tls.cert_file = cert;
        tls.key_file = key;
    }
    char err[512];
    veil_channel *ch = NULL;
    if (veil_channel_new(addr, &tls, svc, NULL, &ch, err, sizeof err) != VEIL_OK) {
        vc_fail(o, "UNAVAILABLE", "%s", err);
        return NULL;
    }
    return ch;
}

int vc_call(veil_channel *ch, const char *method, const ProtobufCMessage *req, void *resp,
            const vc_opts *o)
{
    veil_status st;
    if (!ch)
        return 1;
    if (veil_channel_call(ch, method, req, NULL, 15000, resp, &st) == VEIL_OK)
        return 0;
    return vc_fail(o, veil_status_name(st.code), "%s", st.message[0] ? st.message : "call failed");
}

vw_wallet *vc_wallet(const vc_opts *o)
{
    char err[512];
    vw_wallet *w = NULL;
    if (!o->wallet) {
        vc_fail(o, "INVALID_ARGUMENT", "--wallet FILE is required");
        return NULL;
    }
    if (vw_wallet_load(o->wallet, &w, err, sizeof err) != VEIL_OK) {
        vc_fail(o, "FAILED_PRECONDITION", "%s", err);
        return NULL;
    }
    return w;
}

int vc_citizen(const vc_opts *o, vw_wallet *w, const char *method, const ProtobufCMessage *payload,
               void *resp)
{
    char path[128];
    Veil__Gateway__SignedRequest req;
    if (!w->device_id[0])
        return vc_fail(o, "FAILED_PRECONDITION", "wallet %s is not enrolled yet", o->wallet);
    snprintf(path, sizeof path, "/veil.gateway.Wallet/%s", method);
    if (vw_sign(w, path, payload, veil_now_ms(), &req) != VEIL_OK)
        return vc_fail(o, "INTERNAL", "cannot sign the request");
    veil_channel *ch = vc_channel(o, "citizen", &veil__gateway__wallet__descriptor);
    int rc = vc_call(ch, method, &req.base, resp, o);
    veil_channel_free(ch);
    vw_signed_free(&req);
    return rc;
}

char *vc_read_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (!buf || n > max || n == 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

char **vc_split(const char *csv, size_t *n)
{
    *n = 0;
    size_t cap = 1;
    for (const char *p = csv; p && *p; p++)
        cap += *p == ',';
    char **v = calloc(cap + 1, sizeof *v);
    for (const char *p = csv; v && p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *item = p;
        size_t ilen = len;
        /* "full_name, province" is what people type: spaces around an item are not part of it */
        while (ilen && (*item == ' ' || *item == '\t'))
            item++, ilen--;
        while (ilen && (item[ilen - 1] == ' ' || item[ilen - 1] == '\t'))
            ilen--;
        if (ilen)
            v[(*n)++] = strndup(item, ilen);
        p += len;
        if (*p == ',')
            p++;
    }
    return v;
}

char **vc_split_attrs(const vc_opts *o, size_t *n)
{
    char **v = vc_split(o->attrs, n);
    for (size_t i = 0; v && i < *n; i++)
        if (!veil_attr_find(v[i])) {
            vc_fail(o, "INVALID_ARGUMENT", "--attrs: unknown attribute %s (attributes: %s)", v[i],
                    veil_attr_names());
            vc_split_free(v);
            return NULL;
        }
    if (!v)
        vc_fail(o, "INTERNAL", "out of memory");
    return v;
}

int vc_confirm(const vc_opts *o, const char *what)
{
    char line[64];
    if (o->yes)
        return 0;
    if (!isatty(STDIN_FILENO)) {
        vc_fail(o, "FAILED_PRECONDITION",
                "%s cannot be undone: not on a terminal, so pass --yes to confirm", what);
        return 2;
    }
    fprintf(stderr, "%s cannot be undone. Type yes to go on: ", what);
    fflush(stderr);
    if (!fgets(line, sizeof line, stdin) || strcmp(line, "yes\n") != 0) {
        vc_fail(o, "CANCELLED", "%s: not confirmed, nothing was done", what);
        return 1;
    }
    return 0;
}

void vc_split_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* OpenID Connect options: long-only, outside the range of the letters above. */
enum {
    OPT_REDIRECT_URI = 0x100,
    OPT_AUTH,
    OPT_JWKS,
    OPT_ID_TOKEN_ALG,
    OPT_ATTR_PURPOSE,
    OPT_REQUEST,
    OPT_CODE,
    OPT_REMEMBER,
};

/*
 * Every option: its name, what getopt_long returns for it, whether it takes
 * a value, and where main keeps it: TEXT options store their value and FLAG
 * options 1 in the vc_opts field at off; main's switch reads the SPECIAL ones.
 */
enum opt_kind { SPECIAL, TEXT, FLAG };
struct opt {
    const char *name;
    int val, has_arg;
    enum opt_kind kind;
    size_t off;
};
/* clang-format off */
#define TEXT(name, val, field) {name, val, required_argument, TEXT, offsetof(vc_opts, field)}
#define FLAG(name, val, field) {name, val, no_argument, FLAG, offsetof(vc_opts, field)}
/* clang-format on */
static const struct opt opts[] = {
    TEXT("wallet", 'w', wallet),
    TEXT("app", 'a', app),
    TEXT("attrs", 't', attrs),
    TEXT("purpose", 'p', purpose),
    {"days", 'd', required_argument, SPECIAL, 0},
    TEXT("id-number", 'i', id_number),
    TEXT("name", 'n', name),
    TEXT("label", 'l', label),
    TEXT("device", 'D', device),
    TEXT("reason", 'r', reason),
    TEXT("kind", 'k', kind),
    TEXT("sector", 's', sector),
    TEXT("org", 'o', org),
    {"version", 'v', required_argument, SPECIAL, 0},
    TEXT("state", 'S', state),
    TEXT("web-number", 'W', web_number),
    TEXT("cursor", 'c', cursor),
    TEXT("gateway", 'g', gateway),
    FLAG("json", 'j', json),
    FLAG("keep", 'K', keep),
    FLAG("yes", 'y', yes),
    {"help", 'h', no_argument, SPECIAL, 0},
    TEXT("out", 'O', out),
    TEXT("region", 'R', region),
    TEXT("birth", 'B', birth),
    TEXT("id", 'I', id),
    TEXT("receipt", 'E', receipt),
    TEXT("webcert", 'C', webcert),
    TEXT("presentation", 'P', presentation),
    TEXT("card", 'Z', card),
    TEXT("pin", 'N', pin),
    FLAG("replace", 'L', replace),
    TEXT("file", 'F', file),
    FLAG("dry-run", 'X', dry_run),
    {"redirect-uri", OPT_REDIRECT_URI, required_argument, SPECIAL, 0},
    TEXT("auth", OPT_AUTH, auth),
    TEXT("jwks", OPT_JWKS, jwks),
    TEXT("id-token-alg", OPT_ID_TOKEN_ALG, id_token_alg),
    {"attr-purpose", OPT_ATTR_PURPOSE, required_argument, SPECIAL, 0},
    TEXT("request", OPT_REQUEST, request),
    TEXT("code", OPT_CODE, code),
    {"remember", OPT_REMEMBER, required_argument, SPECIAL, 0},
};
#undef TEXT
#undef FLAG
#define N_OPTS (sizeof opts / sizeof opts[0])

static const struct opt *opt_of(int val)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].val == val)
            return &opts[i];
    return NULL;
}

/*
 * A whole number option: decimal digits only (no sign, no suffix, no
 * blanks), within [min, max].  "3x", "", "-1" and overflow are refused with
 * a message naming the option, so a typo never becomes another number.
 */
static int parse_count(const char *opt, const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = text[0] >= '0' && text[0] <= '9' ? strtol(text, &end, 10) : 0;
    if (text[0] < '0' || text[0] > '9' || errno || *end || v < min || v > max) {
        fprintf(stderr, "veilctl: --%s must be a whole number from %ld to %ld, not \"%s\"\n", opt,
                min, max, text);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    vc_opts o = {.days = 365, .version = -1}; /* version -1: not given */
    if (sodium_init() < 0)
        return 1;
    /* The verb is the longest prefix of plain words that names one. */
    char words[128] = "";
    int nwords = 0;
    const struct verb *verb = NULL;
    for (int i = 1; i < argc && argv[i][0] != '-' && nwords < 4; i++) {
        size_t len = strlen(words);
        snprintf(words + len, sizeof words - len, "%s%s", len ? " " : "", argv[i]);
        nwords++;
        for (size_t k = 0; k < N_VERBS; k++)
            if (strcmp(verbs[k].words, words) == 0)
                verb = &verbs[k];
        if (verb)
            break;
    }
    if (!verb) {
        if (argc > 1 && (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0)) {
            usage_all(stdout);
            return 0;
        }
        /* "veilctl wallet" alone: the verbs of that group, not the whole list */
        if (!nwords || !usage_verbs(stderr, words)) {
            usage_all(stderr);
            return 2;
        }
        fprintf(stderr,
                "usage: veilctl %s VERB [options] [--json] (veilctl help: every verb and "
                "the attribute names)\n",
                words);
        return 2;
    }
    struct option long_opts[N_OPTS + 1];
    for (size_t i = 0; i <= N_OPTS; i++)
        long_opts[i] = i < N_OPTS
                           ? (struct option){opts[i].name, opts[i].has_arg, NULL, opts[i].val}
                           : (struct option){NULL, 0, NULL, 0};
    int c;
    optind = 1 + nwords;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        const struct opt *p = opt_of(c);
        if (p && p->kind == TEXT) {
            *(const char **)((char *)&o + p->off) = optarg;
            continue;
        }
        if (p && p->kind == FLAG) {
            *(int *)((char *)&o + p->off) = 1;
            continue;
        }
        switch (c) {
        case 'd':
            if (parse_count("days", optarg, 1, 36500, &o.days))
                return 2;
            break;
        case 'v':
            if (parse_count("version", optarg, 0, 1000000, &o.version))
                return 2;
            break;
        case OPT_REDIRECT_URI:
            if (o.n_redirect_uris == sizeof o.redirect_uris / sizeof o.redirect_uris[0]) {
                fprintf(stderr, "veilctl: at most 8 --redirect-uri\n");
                return 2;
            }
            o.redirect_uris[o.n_redirect_uris++] = optarg;
            break;
        case OPT_ATTR_PURPOSE:
            if (o.n_attr_purposes == sizeof o.attr_purposes / sizeof o.attr_purposes[0]) {
                fprintf(stderr, "veilctl: at most 16 --attr-purpose\n");
                return 2;
            }
            o.attr_purposes[o.n_attr_purposes++] = optarg;
            break;
        case OPT_REMEMBER: {
            char *end;
            errno = 0;
            o.remember = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || o.remember < 1 || o.remember > 3650) {
                fprintf(stderr, "veilctl: --remember takes a number of days, 1-3650\n");
                return 2;
            }
            break;
        }
        case 'h':
            printf("usage: veilctl %s %s\n", verb->words, verb->usage);
            return 0;
        default:
            fprintf(stderr, "usage: veilctl %s %s\n", verb->words, verb->usage);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "veilctl: unexpected argument %s\nusage: veilctl %s %s\n", argv[optind],
                verb->words, verb->usage);
        return 2;
    }
    int rc = verb->fn(&o);
    veil_client_thread_done();
    return rc;
}
