/*
 * veilctl.h - the command-line tool: a citizen's simulated phone (wallet
 * verbs), an app (app verbs) and the administrator (admin verbs), all
 * talking to the gateway like the real thing.
 *
 * Files: main.c (verb table, options, connections, errors), wallet_cmds.c,
 * app_cmds.c, admin_cmds.c, output.c (JSON and tables), qr.c (terminal QR).
 *
 * Where things are comes from the environment `deploy/local/stack env`
 * prints: VEILCTL_GATEWAY (host:port), VEILCTL_ADMIN_ADDR (host:port of the
 * gateway's admin listener, for the admin verbs), VEILCTL_CA (CA bundle),
 * VEILCTL_CERTS (directory of app-<id>.{crt,key} and admin-<name>.{crt,key}),
 * VEILCTL_ADMIN (admin name, default "ops") and VEILCTL_PROOFING_KEY (the
 * development proofing authority's seed - a stand-in for the ID-card and
 * face check).
 */
#ifndef VEIL_VEILCTL_H
#define VEIL_VEILCTL_H

#include <jansson.h>
#include <stddef.h>

#include <stdio.h>

#include "veil/client.h"
#include "veil/inperson.h"
#include "veil/keys.h"
#include "wallet.h"

typedef struct vc_opts {
    const char *wallet, *app, *attrs, *purpose, *id_number, *name, *label, *device, *reason;
    const char *kind, *sector, *org, *state, *web_number, *cursor, *gateway;
    const char *out, *region, *birth, *id, *receipt, *webcert;
    const char *presentation, *card, *pin; /* issue 17: in person */
    int replace;                           /* counter card issue --replace */
    long days, version;
    const char *file;
    int json, keep, yes, dry_run;
    /* OpenID Connect: registration, and the phone's side of a login request */
    const char *redirect_uris[8], *attr_purposes[16];
    size_t n_redirect_uris, n_attr_purposes;
    const char *auth, *jwks, *id_token_alg, *request, *code;
    long remember;
} vc_opts;

/* A verb: argv[0] is the first word after the verb's own words. */
typedef int (*vc_fn)(const vc_opts *o);

/* ---- connections (main.c) ---- */

/* A channel to the gateway for svc as a citizen ("citizen"), "app/<id>" or "admin". */
veil_channel *vc_channel(const vc_opts *o, const char *as, const ProtobufCServiceDescriptor *svc);

/* Makes a call; on failure prints the gRPC status and message and returns 1. */
int vc_call(veil_channel *ch, const char *method, const ProtobufCMessage *req, void *resp,
            const vc_opts *o);

/* Loads the wallet named by --wallet, or prints why not and returns NULL. */
vw_wallet *vc_wallet(const vc_opts *o);

/* A device-signed Wallet call; returns 0 or 1 after printing the error. */
int vc_citizen(const vc_opts *o, vw_wallet *w, const char *method, const ProtobufCMessage *payload,
               void *resp);

/* Prints an error (JSON with --json) and returns 1; usage errors return 2. */
int vc_fail(const vc_opts *o, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int vc_usage(const char *line);

/* Splits "a,b,c" into a NULL-terminated array of malloc'd strings; *n set. */
char **vc_split(const char *csv, size_t *n);
void vc_split_free(char **v);
/* A whole small file as a malloc'd string (NULL if unreadable, empty or over max bytes). */
char *vc_read_file(const char *path, size_t max);

/*
 * --attrs split as vc_split does, every name checked against the catalogue;
 * NULL after printing the error (which lists the attribute names).
 */
char **vc_split_attrs(const vc_opts *o, size_t *n);

/*
 * Confirms a destructive action: 0 with --yes or when the user types "yes" on
 * a terminal; otherwise prints why not and returns the exit status (2 when
 * stdin is not a terminal and --yes is missing, 1 when the user declined).
 */
int vc_confirm(const vc_opts *o, const char *what);

/* ---- output (output.c) ---- */

/* Prints JSON (compact, one line) to stdout and frees it. */
void vc_print_json(json_t *j);
/* Unix milliseconds as an ISO 8601 UTC string into buf. */
const char *vc_time(long long ms, char *buf, size_t len);

/* A text table: add rows of strings, print aligned. */
typedef struct vc_table {
    size_t cols, rows;
    char **cells; /* rows * cols, malloc'd strings */
} vc_table;
void vc_table_init(vc_table *t, size_t cols, ...);            /* header cells */
void vc_table_row(vc_table *t, ...);                          /* cols strings */
void vc_table_print(vc_table *t);                             /* prints and frees */
void vc_table_free(vc_table *t);
/* Prints j (with --json) or the table, and frees both. */
void vc_emit(const vc_opts *o, json_t *j, vc_table *t);

/* ---- terminal QR code (qr.c) ---- */
int vc_print_qr(const char *text);
int vc_fprint_qr(FILE *f, const char *text);

/* The development proofing authority's seed, from VEILCTL_PROOFING_KEY; 1 after printing why not.
 */
int vc_proofing_seed(const vc_opts *o, veil_key **key);

/*
 * Reads the card file named by --card (inperson_cmds.c): its code, checked
 * and written canonically into code.  Returns 0, or 1 after printing why.
 */
int vc_card_read(const vc_opts *o, char code[VEIL_CARD_CODE_LEN + 1]);

/* ---- verbs ---- */
int vc_wallet_create(const vc_opts *o);
int vc_wallet_enroll(const vc_opts *o);
int vc_consent_grant(const vc_opts *o);
int vc_consent_withdraw(const vc_opts *o);
int vc_consent_list(const vc_opts *o);
int vc_wallet_revoke_device(const vc_opts *o);
int vc_wallet_devices(const vc_opts *o);
int vc_wallet_unlink(const vc_opts *o);
int vc_wallet_relink(const vc_opts *o);
int vc_wallet_access_log(const vc_opts *o);
int vc_wallet_erase(const vc_opts *o);
int vc_wallet_pending(const vc_opts *o);
int vc_wallet_cancel_pending(const vc_opts *o);
int vc_wallet_show(const vc_opts *o);
int vc_wallet_keys(const vc_opts *o);
int vc_verify_receipt(const vc_opts *o);
int vc_verify_webcert(const vc_opts *o);
int vc_wallet_request_show(const vc_opts *o);
int vc_wallet_request_approve(const vc_opts *o);
int vc_wallet_request_deny(const vc_opts *o);
int vc_app_login(const vc_opts *o);
int vc_app_redeem(const vc_opts *o);
int vc_wallet_present(const vc_opts *o);
int vc_counter_card_issue(const vc_opts *o);
int vc_counter_card_status(const vc_opts *o);
int vc_app_jwks(const vc_opts *o);
int vc_app_events(const vc_opts *o);
int vc_admin_apps_list(const vc_opts *o);
int vc_admin_apps_apply(const vc_opts *o);
int vc_admin_apps_register(const vc_opts *o);
int vc_admin_apps_update(const vc_opts *o);
int vc_admin_apps_suspend(const vc_opts *o);
int vc_admin_apps_reinstate(const vc_opts *o);
int vc_admin_keys_rotate(const vc_opts *o);
int vc_admin_identity(const vc_opts *o);
int vc_admin_audit(const vc_opts *o);
int vc_dev_proofing_key(const vc_opts *o);
int vc_dev_id_number(const vc_opts *o);

#endif
