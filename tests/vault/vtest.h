/*
 * vtest.h - what the vault suites share: a real vault process on a fresh
 * database of the test cluster, with fresh key files and a test proofing
 * authority, called over gRPC as svc/gateway; plus the wallet's side
 * (device keys, attestations, tickets, citizen requests) built with
 * libveil's formats, and SQL access for inspecting and tampering.
 */
#ifndef VEIL_VTEST_H
#define VEIL_VTEST_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <libpq-fe.h>

#include "harness.h"
#include "veil/formats.h"
#include "veil/vault.pb-c.h"

struct vt_device;
/*
 * The capabilities ring: large enough that no test which counts access-log
 * entries exactly wraps it.  A wrapped ring loses a capability between a
 * thread's login and its release, and vt_release then logs in once more to
 * mint another - one entry more than the test counted (check_vault_logwriter
 * failed that way under load with 64).
 */
#define VT_CAPS 512

typedef struct vt {
    h_proc proc;
    char *db;                 /* libpq connection string of the vault's database */
    char *keys;               /* VEIL_KEYS_DIR */
    char proofing_file[1100]; /* VAULT_PROOFING_PUBLIC_KEY */
    unsigned char proof_pk[32], proof_sk[64];
    veil_channel *ch; /* as svc/gateway */
    unsigned char ticket_pk[32];
    uint32_t ticket_version;
    char env[8][1200]; /* extra NAME=VALUE given to the process */
    size_t n_env;
    /* Release capabilities VerifyTicket returned, for vt_release (a ring, under caps_lock). */
    struct vt_cap {
        unsigned char subject[32];
        char app[65];
        unsigned char challenge[32];
        unsigned char cap[64];
        size_t cap_len;
        int used;
        struct vt_device *dev; /* set by vt_login: a fresh login can mint another */
    } caps[VT_CAPS];
    size_t n_caps; /* ever recorded; slot n % VT_CAPS */
    pthread_mutex_t caps_lock;
} vt;

/* A wallet: one device key pair, and what enrolment gave it. */
typedef struct vt_device {
    unsigned char pk[32], sk[64];
    char device_id[33];
    unsigned char id[VEIL_DEVICE_ID_BYTES];
    char web_number[24];
    unsigned char subject[32]; /* from VerifyTicket, once known */
} vt_device;

/*
 * Creates the database (migrated with `vault migrate`), key files and a
 * proofing authority, starts the vault with the extra environment (NULL or
 * NULL-terminated NAME=VALUE strings) and opens a gateway channel.
 */
void vt_start(vt *t, const char *const *env);
/* SIGTERM (asserting a clean exit) and frees everything. */
void vt_stop(vt *t);
/* GetWalletKeys: refreshes t->ticket_pk and t->ticket_version; the JWKS into jwks if given. */
void vt_wallet_keys(vt *t, char *jwks, size_t cap);
/* Stops and starts the process again with the same database, keys and environment. */

void vt_restart(vt *t);

/* SIGKILL (no drain, calls in flight are cut), then starts it again as vt_restart does. */
void vt_crash_restart(vt *t);

/* Runs `vault <args>` with the suite's configuration; returns the exit status, output in out. */
int vt_command(vt *t, const char *args, char *out, size_t cap);

/* A valid ID number: region (6 digits), birth date, sequence, check character computed here. */
void vt_id_number(char out[19], const char *region, int y, int m, int d, int seq);

/* A fresh device key pair. */
void vt_new_device(vt_device *d);

/* Signs an attestation as the test proofing authority. */
void vt_attest(const vt *t, const char *id, const char *name, int face_match,
               const unsigned char pk[32], int64_t at_ms, unsigned char sig[64]);

/* An attestation holding the signature sig (64 bytes, not copied) for face_match at at_ms. */
Veil__Vault__ProofingAttestation vt_attestation(unsigned char sig[64], int face_match,
                                                int64_t at_ms);

/* An Enrol request for device d's public key with the attestation pa (neither copied). */
Veil__Vault__EnrolRequest vt_enrol_request(const char *request_id, const char *id, const char *name,
                                           vt_device *d, Veil__Vault__ProofingAttestation *pa);

/* Enrols with a fresh, correctly signed attestation (now); fills d's ids on success. */
veil_err vt_enrol(vt *t, const char *request_id, const char *id, const char *name, vt_device *d,
                  int *new_identity, veil_status *st);

/* As vt_enrol; *certificate = the web certificate issued (malloc'd). */
veil_err vt_enrol_cert(vt *t, const char *request_id, const char *id, const char *name,
                       vt_device *d, int *new_identity, char **certificate, veil_status *st);

/* Enrol with every field given (the attestation as built by the caller). */
veil_err vt_enrol_raw(vt *t, const Veil__Vault__EnrolRequest *req,
                      Veil__Vault__EnrolResponse **resp, veil_status *st);

/* A ticket string made by device d (malloc'd). */
char *vt_ticket(const vt *t, const vt_device *d, const char *app, const unsigned char challenge[32],
                int64_t time_ms);

/* VerifyTicket; on success fills subject (32 bytes) and device_id text (33). */
veil_err vt_verify(vt *t, const char *ticket, const char *app, const unsigned char *challenge,
                   size_t challenge_len, unsigned char *subject, char *device_id, veil_status *st);

/* A full login by device d at app; fills d->subject. */
veil_err vt_login(vt *t, vt_device *d, const char *app, veil_status *st);

/*
 * ReleaseAttributes with the newest unused capability VerifyTicket returned
 * for (subject, app); when there is none but vt_login knows a device of the
 * subject, it logs that device in at app first (a "ticket_verified" entry);
 * otherwise it sends none.  If the vault knows no scope for app yet, the
 * app's scope is set to the whole catalogue first (SetAppScopes).
 * *resp freed by the caller with protobuf_c_message_free_unpacked.
 */
veil_err vt_release(vt *t, const unsigned char *subject, const char *app, const char *const *names,
                    size_t n, const char *purpose, Veil__Vault__ReleaseAttributesResponse **resp,
                    veil_status *st);

/* ReleaseAttributes exactly as given (capability and challenge may be NULL). */
veil_err vt_release_raw(vt *t, const unsigned char *subject, const char *app,
                        const char *const *names, size_t n, const char *purpose,
                        const unsigned char *cap, size_t cap_len, const unsigned char *challenge,
                        Veil__Vault__ReleaseAttributesResponse **resp, veil_status *st);

/* SetAppScopes for one app. */
veil_err vt_set_scope(vt *t, const char *app, const char *const *names, size_t n, veil_status *st);

/* A subject-only call (ListDevices, ListAccessLog, Erase) with its reply in *resp. */
veil_err vt_subject_call(vt *t, const char *method, const unsigned char *subject, size_t len,
                         void *resp, veil_status *st);

/*
 * The group commit statistics line from the log of a stopped vault (a copy
 * of t.proc taken before vt_stop): commits and entries; 0 when absent.
 */
int vt_group_stats(const h_proc *p, long long *batches, long long *entries);

/* ---- the database ---- */

/* Runs SQL (no parameters) on the vault's database; returns the result (PQclear it). */
PGresult *vt_sql(const vt *t, const char *sql);
/* The first column of the first row as an integer. */
long long vt_sql_int(const vt *t, const char *sql);
/* Runs a statement with one bytea parameter ($1). */
PGresult *vt_sql_bytes(const vt *t, const char *sql, const unsigned char *p, size_t n);

/* Today's date in China Standard Time from the test's own clock: y, m, d. */
void vt_today_cst(int *y, int *m, int *d);

#endif
