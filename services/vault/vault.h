/*
 * vault.h - the identity vault: the only place a citizen's real identity
 * exists.  Everything other services see is an opaque 32-byte subject
 * reference.  docs/vault.md describes the API, the data protection and the
 * key hierarchy; this header is the map of the code:
 *
 *   idnumber.c  GB 11643 ID numbers, calendar dates, ages (pure functions)
 *   profile.c   every encryption and keyed hash the vault stores
 *   keys.c      key rings, ticket key pairs, proofing keys, web-cert signer
 *   store.c     all SQL (the only file that includes veil/pg.h)
 *   enrol.c     enrolment and web certificates
 *   access.c    the hash-chained, encrypted access log and its signed checkpoints
 *   stepup.c    step-up for erasure and revoking another device, pending actions
 *   logwriter.c group commit of access-log appends
 *   attrs.c     attribute release and the province table
 *   handlers.c  one function per RPC, and the caller policy
 *   commands.c  `vault rotate-master-key` and `vault bulk-enrol`
 *   main.c      configuration and wiring
 */
#ifndef VEIL_VAULT_H
#define VEIL_VAULT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "veil/codec.h"
#include "veil/err.h"
#include "veil/feed.h"
#include "veil/formats.h"
#include "veil/keys.h"
#include "veil/parallel.h"
#include "veil/rpc.h"
#include "veil/service.h"
#include "veil/vault.pb-c.h"

#define VAULT_SUBJECT_BYTES     32
#define VAULT_HASH_BYTES        32
#define VAULT_DEK_BYTES         32
#define VAULT_BOX_OVERHEAD      40 /* 24-byte nonce + 16-byte tag */
#define VAULT_WRAPPED_BYTES     (VAULT_DEK_BYTES + VAULT_BOX_OVERHEAD)
#define VAULT_NAME_MAX          200 /* bytes of UTF-8 */
#define VAULT_LABEL_MAX         64
#define VAULT_REQUEST_ID_MAX    128
#define VAULT_PURPOSE_MAX       200
#define VAULT_PROFILE_MAX       512 /* sealed profile, bytes */
#define VAULT_PROOFING_KEYS_MAX 16
#define VAULT_ENTRY_ATTRS_MAX   32
#define VAULT_CAP_ID_BYTES      16
#define VAULT_CAP_BYTES         (1 + 8 + VAULT_CAP_ID_BYTES + VAULT_HASH_BYTES) /* 57 */
#define VAULT_BATCH_MAX         256 /* items of one VerifyTicketBatch or ReleaseAttributesBatch */
#define VAULT_CAP_TTL_MS        30000
#define VAULT_SCOPE_MAX         256 /* comma-separated attribute names */
#define VAULT_ACTOR_MAX         160 /* "admin/<name>" in an access-log entry */
#define VAULT_DETAIL_MAX        64  /* an access-log entry's detail */

/* ---- idnumber.c: GB 11643-1999 citizen identity numbers ---- */

/* A parsed, valid ID number. */
struct vault_idnumber {
    char text[19];  /* normalised: 17 digits and a digit or upper-case 'X' */
    int32_t region; /* the six-digit administrative division code */
    int province;   /* its first two digits (83 for Taiwan residence permits) */
    int year, month, day;
    int sequence; /* three digits; odd: male, even: female */
    int female;
};

/* Why a string is not a valid ID number (never says which characters). */
typedef enum vault_id_status {
    VAULT_ID_OK = 0,
    VAULT_ID_LENGTH, /* not 18 characters */
    VAULT_ID_CHARS,  /* not 17 digits and a digit or X */
    VAULT_ID_REGION, /* unknown provincial-level code */
    VAULT_ID_DATE,   /* no such calendar date, or before 1800 */
    VAULT_ID_FUTURE, /* birth date after today */
    VAULT_ID_CHECK,  /* ISO 7064 MOD 11-2 check character wrong */
} vault_id_status;

/*
 * Parses and validates s[0..len) as an 18-character GB 11643 number, 'x'
 * accepted for 'X', against today's date (YYYYMMDD, China Standard Time).
 * Pure and allocation-free, so a fuzzer can drive it.  *out is written
 * only on VAULT_ID_OK.
 */
vault_id_status vault_idnumber_parse(const char *s, size_t len, int32_t today_ymd,
                                     struct vault_idnumber *out);

/* A client-facing message naming the field, never the value. */
const char *vault_id_status_message(vault_id_status st);

/* The ISO 7064 MOD 11-2 check character of 17 digits ('0'-'9' or 'X'). */
char vault_idnumber_check_char(const char digits[17]);

/* Whether year-month-day is a date of the proleptic Gregorian calendar. */
int vault_date_valid(int year, int month, int day);

/* Today's date in China Standard Time (UTC+8) as YYYYMMDD, for Unix ms now_ms. */
int32_t vault_today_cst(int64_t now_ms);

/*
 * Age in whole years on today_ymd of someone born on birth_ymd (both
 * YYYYMMDD).  A person is N on their Nth birthday; someone born on 29
 * February has their birthday on 1 March in years that are not leap years.
 */
int vault_age_on(int32_t birth_ymd, int32_t today_ymd);

/* ---- attrs.c: provinces and attribute release ---- */

struct vault_province {
    int code;            /* GB/T 2260 provincial code */
    const char *name;    /* Chinese name */
    const char *name_en; /* English name */
};

/* The provincial-level division of a two-digit code (83 maps to Taiwan), or NULL. */
const struct vault_province *vault_province_find(int code);

/* The 34 provincial-level divisions; *n receives the count. */
const struct vault_province *vault_province_table(size_t *n);

/* ---- profile.c: what the vault encrypts and hashes ---- */

/* The decrypted profile.  Holds personal data: wipe with sodium_memzero. */
struct vault_profile {
    char id_number[19];
    char full_name[VAULT_NAME_MAX + 1];
    int face_match;
    int64_t proofed_at_ms;
};

/*
 * Seals p under the data key dk with subject as associated data into out
 * (nonce | ciphertext | tag), *out_len bytes of at most VAULT_PROFILE_MAX.
 */
veil_err vault_profile_seal(const unsigned char dk[VAULT_DEK_BYTES],
                            const unsigned char subject[VAULT_SUBJECT_BYTES],
                            const struct vault_profile *p, unsigned char out[VAULT_PROFILE_MAX],
                            size_t *out_len) VEIL_WUR;

/* Opens a sealed profile; VEIL_ERR_INTERNAL when it does not authenticate. */
veil_err vault_profile_open(const unsigned char dk[VAULT_DEK_BYTES],
                            const unsigned char subject[VAULT_SUBJECT_BYTES],
                            const unsigned char *sealed, size_t len,
                            struct vault_profile *out) VEIL_WUR;

/* Wraps a data key under a master key (the key's version is bound in). */
void vault_dek_wrap(const veil_key *master, const unsigned char subject[VAULT_SUBJECT_BYTES],
                    const unsigned char dk[VAULT_DEK_BYTES],
                    unsigned char out[VAULT_WRAPPED_BYTES]);

/* Unwraps a data key into dk (caller wipes it); VEIL_ERR_INTERNAL when it fails. */
veil_err vault_dek_unwrap(const veil_key *master, const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const unsigned char *wrapped, size_t len,
                          unsigned char dk[VAULT_DEK_BYTES]) VEIL_WUR;

/*
 * Seals a device label, appending the box to out (the caller's buffer), or
 * opens one into out (NUL-terminated).  Associated data: subject and device id.
 */
veil_err vault_label_seal(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const unsigned char device_id[VEIL_DEVICE_ID_BYTES], const char *label,
                          veil_buf *out) VEIL_WUR;
veil_err vault_label_open(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                          const unsigned char *sealed, size_t len,
                          char out[VAULT_LABEL_MAX + 1]) VEIL_WUR;

/* One access-log entry in the clear.  Strings are borrowed; NULL reads as "". */
struct vault_entry {
    const char *app_id;
    const char *action; /* docs/vault.md, "The access log", lists them */
    const char *const *attributes;
    size_t n_attributes;
    const char *purpose;
    const char *actor;  /* "admin/<name>" when an admin acted (format 2) */
    const char *detail; /* e.g. the device concerned, the identity state (format 2) */
};

/* Seals an entry for position seq of subject's log (associated data: both). */
veil_err vault_entry_seal(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES], int64_t seq,
                          const struct vault_entry *e, veil_buf *out) VEIL_WUR;

/*
 * Opens a sealed entry.  The strings of *e point into text (capacity cap),
 * which the caller owns.  VEIL_ERR_INTERNAL when it does not authenticate.
 */
veil_err vault_entry_open(const unsigned char dk[VAULT_DEK_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES], int64_t seq,
                          const unsigned char *sealed, size_t len, char *text, size_t cap,
                          struct vault_entry *e, const char **attrs, size_t max_attrs) VEIL_WUR;

/*
 * The chain value of log entry seq: keyed BLAKE2b-256 (audit key) over
 * subject, the previous chain value, seq, the time and the sealed entry.
 */
void vault_chain_hash(const veil_key *audit, const unsigned char subject[VAULT_SUBJECT_BYTES],
                      const unsigned char prev[VAULT_HASH_BYTES], int64_t seq, int64_t at_ms,
                      const unsigned char *sealed, size_t len, unsigned char out[VAULT_HASH_BYTES]);

/*
 * The check value of a release capability: keyed BLAKE2b-256 (audit key,
 * its own domain label) over the capability's version, expiry and id and
 * the subject, app and challenge it is bound to (docs/vault.md).
 */
void vault_capability_mac(const veil_key *audit, int64_t expires_ms,
                          const unsigned char id[VAULT_CAP_ID_BYTES],
                          const unsigned char subject[VAULT_SUBJECT_BYTES], const char *app_id,
                          const unsigned char challenge[VEIL_CHALLENGE_BYTES],
                          unsigned char out[VAULT_HASH_BYTES]);

/* The blind index of a normalised ID number (keyed BLAKE2b-256, blind key). */
void vault_blind_index(const veil_key *blind, const char id_number[18],
                       unsigned char out[VAULT_HASH_BYTES]);

/* A keyed hash (blind key) of a client's request id, so it is not stored as given. */
void vault_request_key(const veil_key *blind, const char *request_id,
                       unsigned char out[VAULT_HASH_BYTES]);

/* A keyed hash (blind key) of an enrol request's whole content, for idempotency. */
void vault_request_mac(const veil_key *blind, const Veil__Vault__EnrolRequest *req,
                       const char id_number[18], unsigned char out[VAULT_HASH_BYTES]);

/* ---- keys.c: every key the vault holds ---- */

/* An X25519 key pair tickets are sealed to; the secret half in guarded memory. */
struct vault_boxkey {
    uint32_t version;
    unsigned char pk[32];
    unsigned char *sk;
};

struct vault_keys {
    veil_keyring *master, *blind, *audit, *webcert, *ticket;
    const veil_key *blind_key;                      /* blind-1 */
    const veil_key *audit_key;                      /* audit-1 */
    _Atomic uint32_t master_current;                /* version new data keys are wrapped under */
    veil_signer *webcert_signers[VEIL_KEYRING_MAX]; /* one per loaded webcert version */
    atomic_size_t n_webcert_signers;                /* published after the slot is written */
    _Atomic(veil_signer *) webcert_signer;          /* key_state's version: signs certificates */
    _Atomic(char *) jwks;                 /* JWKS of every loaded webcert key (malloc'd) */
    char *jwks_retired[VEIL_KEYRING_MAX]; /* replaced JWKS texts, freed with the keys */
    size_t n_jwks_retired;                /* under box_lock */
    pthread_mutex_t box_lock;             /* serialises additions to boxkeys and webcert_signers */
    _Atomic size_t n_boxkeys;
    struct vault_boxkey boxkeys[VEIL_KEYRING_MAX];
    _Atomic uint32_t ticket_current; /* key_state's version: handed to wallets */
    _Atomic int64_t next_refresh_ms; /* unknown ticket versions rescan no more than 1/s */
    unsigned char proofing[VAULT_PROOFING_KEYS_MAX][32];
    size_t n_proofing;
    unsigned char decoy_pk[32]; /* a valid Ed25519 key whose secret was discarded */
    unsigned char checkpoint_pk[32];
    unsigned char *checkpoint_sk; /* Ed25519, derived from audit-1; guarded memory */
};

/*
 * Loads all keys from dir and the proofing authority's public keys from
 * proofing_file (base64 Ed25519 keys, one a line, '#' comments; NULL for
 * commands that verify no attestation).
 * master_version 0 means the newest master key.  On failure errbuf names
 * the file or variable.  Caller frees with vault_keys_free.
 */
veil_err vault_keys_load(const char *dir, const char *proofing_file, uint32_t master_version,
                         struct vault_keys **out, char *errbuf, size_t errlen) VEIL_WUR;

/*
 * Makes webcert-<webcert> sign certificates, ticket-<ticket> the one handed
 * to wallets and master-<master> wrap new data keys (the versions key_state
 * holds), each switched atomically while serving.  A version whose key file
 * is not loaded (after a rescan of the key folder) is not switched to: that
 * kind keeps its version, and VEIL_ERR_NOT_FOUND with errbuf naming the
 * missing files; the other kinds switch.
 */
veil_err vault_keys_use(struct vault_keys *k, uint32_t webcert, uint32_t ticket, uint32_t master,
                        char *errbuf, size_t errlen) VEIL_WUR;

/* Picks up key files added since (inotify, SIGHUP); the versions in use stay as they are. */
veil_err vault_keys_refresh(struct vault_keys *k, char *errbuf, size_t errlen) VEIL_WUR;

void vault_keys_free(struct vault_keys *k);

/* The master key of a version, rescanning the directory on a miss; NULL if absent. */
const veil_key *vault_master_key(struct vault_keys *k, uint32_t version);

/* The ticket key pair of a version (a rescan at most once a second on a miss), or NULL. */
const struct vault_boxkey *vault_ticket_key(struct vault_keys *k, uint32_t version);

/*
 * Tries to open something sealed to the vault's ticket keys with one key
 * pair; keep says whether to keep the result (no key opened it yet).
 * VEIL_OK when it opened.
 */
typedef veil_err (*vault_box_opener)(const struct vault_boxkey *key, int keep, void *ctx);

/*
 * Calls open with every loaded ticket key (all of them, so the time taken
 * does not tell which opened it), rescanning the key folder at most once a
 * second when none did; returns the version of the key that opened it, or 0.
 */
uint32_t vault_box_open_any(struct vault_keys *k, vault_box_opener open, void *ctx);

/*
 * Opens a ticket's sealed part with each loaded ticket key (rescanning the
 * key folder at most once a second when none opens it); returns the version
 * of the key that opened it into *out, or 0.  Wipe *out after use.
 */
uint32_t vault_ticket_open(struct vault_keys *k, const veil_ticket *t, veil_ticket_inner *out);

/* Whether sig is a proofing-authority signature over msg by any configured key. */
int vault_proofing_verify(const struct vault_keys *k, const unsigned char sig[64],
                          const unsigned char *msg, size_t len);

/* ---- store.c: the database ---- */

typedef struct vault_store vault_store;
typedef struct vault_conn vault_conn; /* the calling thread's connection */

/* A handle on the vault's database (no connection yet); free with vault_store_close. */
veil_err vault_store_open(const char *url, vault_store **out) VEIL_WUR;
/* Frees the handle and the calling thread's connection; accepts NULL. */
void vault_store_close(vault_store *st);
/* The calling thread's connection (opened on first use, closed at thread exit). */
veil_err vault_store_conn(vault_store *st, vault_conn **out) VEIL_WUR;

/* Transactions on the thread's connection; rollback never fails visibly. */
veil_err vault_store_begin(vault_conn *c) VEIL_WUR;
/* A read-only snapshot: every statement until commit sees the same data. */
veil_err vault_store_begin_snapshot(vault_conn *c) VEIL_WUR;
veil_err vault_store_commit(vault_conn *c) VEIL_WUR;
void vault_store_rollback(vault_conn *c);

/* A citizen's keys and log head, and (when asked) the sealed profile. */
struct vault_citizen_row {
    unsigned char subject[VAULT_SUBJECT_BYTES];
    char web_number[VEIL_WEB_NUMBER_LEN + 1];
    uint32_t key_version;
    unsigned char wrapped[VAULT_WRAPPED_BYTES];
    unsigned char profile[VAULT_PROFILE_MAX];
    size_t profile_len;
    int64_t head_seq;
    unsigned char head[VAULT_HASH_BYTES];
};

/* Loads a citizen by subject reference; VEIL_ERR_NOT_FOUND when absent or erased. */
veil_err vault_store_citizen(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                             struct vault_citizen_row *out) VEIL_WUR;

/* One release of a batch: what the statement needs, and what it found. */
struct vault_release_item {
    const unsigned char *subject;
    const unsigned char *cap_id; /* VAULT_CAP_ID_BYTES */
    int64_t expires_ms;
    const char *app_id;
    struct vault_citizen_row *row; /* filled when result is VEIL_OK or VEIL_ERR_PRECONDITION */
    int fresh;                     /* the capability id was used now, not before */
    char scope[VAULT_SCOPE_MAX];   /* the app's registered scope, comma-separated */
    veil_err result; /* VEIL_ERR_NOT_FOUND: subject gone; PRECONDITION: no scope for the app */
};

/*
 * A batch of releases in one statement (one commit): uses every item's
 * capability id (each id at most once per batch), copies the app's scope
 * and loads the citizen, setting each item's fresh and result.  Returns the
 * statement's failure, if any, in which case no id was used.
 */
veil_err vault_store_release_batch(vault_conn *c, struct vault_release_item *items,
                                   size_t n) VEIL_WUR;

/* Records an app's registered scope; *changed = 1 when it was new or different. */
veil_err vault_store_set_scope(vault_conn *c, const char *app_id, const char *attributes,
                               int *changed) VEIL_WUR;

/* A device with what verifying its signature and logging the access need. */
struct vault_device_row {
    unsigned char subject[VAULT_SUBJECT_BYTES];
    unsigned char public_key[32];
    int revoked;
    uint32_t key_version;
    unsigned char wrapped[VAULT_WRAPPED_BYTES];
    int64_t head_seq;
    unsigned char head[VAULT_HASH_BYTES];
    int card; /* a counter-issued card: it never signs tickets or requests */
};

/* One round trip for the login path; VEIL_ERR_NOT_FOUND when there is no such device. */
veil_err vault_store_device(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                            struct vault_device_row *out) VEIL_WUR;

/*
 * The devices of a batch of tickets in one round trip (= ANY): found[i] = 1
 * and rows[i] filled when ids[i] exists (ids may repeat).
 */
veil_err vault_store_devices(vault_conn *c, const unsigned char (*ids)[VEIL_DEVICE_ID_BYTES],
                             size_t n, struct vault_device_row *rows, int *found) VEIL_WUR;

/*
 * Appends entry seq to subject's log and advances the chain head from
 * seq - 1, in one statement.  VEIL_ERR_ABORTED when the head moved (another
 * append won: re-read it and retry).
 */
veil_err vault_store_append_log(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                int64_t seq, int64_t at_ms, const unsigned char *sealed, size_t len,
                                const unsigned char mac[VAULT_HASH_BYTES]) VEIL_WUR;

/* One entry of a group-committed append (the log writer's batch). */
struct vault_log_append {
    const unsigned char *subject;
    int64_t seq;
    int64_t at_ms;
    const unsigned char *sealed;
    size_t sealed_len;
    const unsigned char *mac;
    veil_err result; /* set by vault_store_append_batch: VEIL_OK or VEIL_ERR_ABORTED */
};

/*
 * Appends n entries of different citizens' logs in one statement (so one
 * commit), each exactly as vault_store_append_log would: an entry whose head
 * moved gets result VEIL_ERR_ABORTED, the others VEIL_OK.  Returns the
 * statement's failure, if any, in which case nothing was appended.
 */
veil_err vault_store_append_batch(vault_conn *c, struct vault_log_append *const *e,
                                  size_t n) VEIL_WUR;

/*
 * The current chain head, row-locked until the caller's transaction ends;
 * VEIL_ERR_NOT_FOUND when the subject is gone.
 */
veil_err vault_store_lock_log_head(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                   int64_t *seq, unsigned char head[VAULT_HASH_BYTES]) VEIL_WUR;

/* One stored log row; pointers are valid only during the callback. */
struct vault_log_row {
    int64_t seq;
    int64_t at_ms;
    const unsigned char *entry;
    size_t entry_len;
    const unsigned char *mac;
    size_t mac_len;
};
typedef veil_err (*vault_log_fn)(void *ctx, const struct vault_log_row *row);

/*
 * The base of subject's chain: the last entry retention dropped (seq 0 and 32
 * zero bytes while none was), which the chain is verified from.
 */
veil_err vault_store_log_base(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                              int64_t *base_seq, unsigned char base_mac[VAULT_HASH_BYTES]) VEIL_WUR;

/* What one run of the access log's partition maintenance did. */
struct vault_log_maintenance {
    int64_t created, dropped, refused, rows_dropped;
};

/*
 * Runs access_log_maintain (db/vault/006_access_log_partitions.sql): period
 * partitions made (ahead more than the current one), those ending at or
 * before drop_before_ms (0: none) dropped, each citizen's base recorded.
 */
veil_err vault_store_log_maintain(vault_conn *c, int64_t period_ms, int64_t drop_before_ms,
                                  int ahead, struct vault_log_maintenance *out) VEIL_WUR;

/* Calls fn for each log row of subject in seq order, stopping at its first error. */
veil_err vault_store_list_log(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                              vault_log_fn fn, void *ctx) VEIL_WUR;

/* One stored device; pointers are valid only during the callback. */
struct vault_device_info {
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    const unsigned char *label;
    size_t label_len;
    int64_t created_at_ms;
    int64_t revoked_at_ms; /* 0 while active */
};
typedef veil_err (*vault_device_fn)(void *ctx, const struct vault_device_info *d);

veil_err vault_store_list_devices(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                  vault_device_fn fn, void *ctx) VEIL_WUR;

/*
 * Revokes a device of subject (idempotent) and drops the pending actions it
 * asked for or that target it; *revoked_now is 1 when it was active until
 * now.  VEIL_ERR_NOT_FOUND when it is not theirs.
 */
veil_err vault_store_revoke_device(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                   const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                   int *revoked_now) VEIL_WUR;

/* ---- step-up (stepup.c's SQL) ---- */

/* A device's owner, state and rank (the time of the proofing that last bound it). */
struct vault_rank {
    unsigned char subject[VAULT_SUBJECT_BYTES];
    int revoked;
    int64_t proofed_at_ms;
};
veil_err vault_store_device_rank(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                 struct vault_rank *out) VEIL_WUR;

/* An action waiting out its cooling-off period.  action points to static or row text. */
struct vault_pending {
    unsigned char id[VEIL_DEVICE_ID_BYTES];
    const char *action; /* "erase" or "revoke_device" */
    int has_target;
    unsigned char target[VEIL_DEVICE_ID_BYTES];
    unsigned char requested_by[VEIL_DEVICE_ID_BYTES];
    int64_t requested_at_ms, effective_at_ms;
};
typedef veil_err (*vault_pending_fn)(void *ctx, const struct vault_pending *p);

/* The pending action of (device, action, target or NULL); *due once its period is over. */
veil_err vault_store_pending_find(vault_conn *c, const unsigned char by[VEIL_DEVICE_ID_BYTES],
                                  const char *action, const unsigned char *target,
                                  struct vault_pending *out, int *due) VEIL_WUR;
/* Records pa (id, action, target, requested_by set) with its times filled in; ABORTED on a race. */
veil_err vault_store_pending_insert(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                    struct vault_pending *pa, int64_t cooling_ms) VEIL_WUR;
veil_err vault_store_pending_delete(vault_conn *c, const unsigned char by[VEIL_DEVICE_ID_BYTES],
                                    const char *action, const unsigned char *target) VEIL_WUR;
veil_err vault_store_pending_list(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                  vault_pending_fn fn, void *ctx) VEIL_WUR;
/* Deletes one pending action of subject (id) or all of them (id NULL); *cancelled counts. */
veil_err vault_store_pending_cancel(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                    const unsigned char *id, unsigned *cancelled) VEIL_WUR;
/* A re-proofing from an enrolled phone: it ranks from proofed_at_ms on (never lower). */
veil_err vault_store_set_proofed(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                 int64_t proofed_at_ms) VEIL_WUR;

/* A card (issue 17): its device row, id, PIN check value and wrong PINs in a row. */
struct vault_card_row {
    struct vault_device_row device;
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    unsigned char pin_mac[VAULT_HASH_BYTES];
    int failures;
};

/* The card whose (derived) public key is pk; VEIL_ERR_NOT_FOUND when there is none. */
veil_err vault_store_card(vault_conn *c, const unsigned char pk[32],
                          struct vault_card_row *out) VEIL_WUR;

/* Makes a device a card with this PIN check value (failures back to 0). */
veil_err vault_store_set_pin(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                             const unsigned char mac[VAULT_HASH_BYTES]) VEIL_WUR;

/*
 * Takes one PIN attempt: failures + 1 unless already at limit, in one
 * statement, before the PIN is compared.  *failures is the new count;
 * VEIL_ERR_NOT_FOUND when the card is locked (or gone).
 */
veil_err vault_store_pin_try(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                             int limit, int *failures) VEIL_WUR;

/*
 * Revokes every active card of subject but keep, calling fn for each (in
 * the caller's transaction, so fn can log it); stops at fn's first error.
 */
veil_err vault_store_revoke_cards(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                  const unsigned char keep[VEIL_DEVICE_ID_BYTES],
                                  veil_err (*fn)(void *ctx, const unsigned char *device_id),
                                  void *ctx) VEIL_WUR;

/* The version of key kind ("webcert", "ticket") in use; the first call records newest. */
veil_err vault_store_key_version(vault_conn *c, const char *kind, uint32_t newest,
                                 uint32_t *version) VEIL_WUR;
/* The channel key_state changes are announced on (payload "kind version"). */
#define VAULT_KEYS_CHANNEL "veil_vault_keys"
/*
 * Rotation: sets the version in use, *previous = the one before (0 if none),
 * and NOTIFYs VAULT_KEYS_CHANNEL so running vaults switch at commit.
 */
veil_err vault_store_set_key_version(vault_conn *c, const char *kind, uint32_t version,
                                     uint32_t *previous) VEIL_WUR;

/* A right PIN: failures back to 0. */
veil_err vault_store_pin_reset(vault_conn *c,
                               const unsigned char device_id[VEIL_DEVICE_ID_BYTES]) VEIL_WUR;

/*
 * Records a citizen-request nonce until now_ms + lifetime_ms; VEIL_ERR_EXISTS
 * when it was used and has not expired at now_ms.  Both times are the
 * service's clock - the one its skew check uses - never the database's.
 */
veil_err vault_store_use_nonce(vault_conn *c, const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                               const unsigned char *nonce, size_t len, int64_t now_ms,
                               int64_t lifetime_ms) VEIL_WUR;

/* Deletes nonces expired at now_ms (the service's clock) and day-old enrol requests. */
veil_err vault_store_purge(vault_conn *c, int64_t now_ms) VEIL_WUR;

/*
 * Erases a subject: citizen row (data key, profile, blind index, web
 * number), devices, nonces, log and enrol requests, leaving nothing about
 * it.  *erased_now is 1 when this call erased it, 0 when there was nothing
 * (already erased or never existed: the two look alike, on purpose).
 */
veil_err vault_store_erase(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                           int *erased_now) VEIL_WUR;

/*
 * Records an authority's hold on the subject's ID number (its blind index,
 * state "suspended" or "revoked", legal basis); VEIL_ERR_NOT_FOUND when the
 * subject does not exist.
 */
veil_err vault_store_hold(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                          const char *state, const char *legal_basis) VEIL_WUR;

/* The state of a hold on a blind index into state; VEIL_ERR_NOT_FOUND without one. */
veil_err vault_store_held(vault_conn *c, const unsigned char blind[VAULT_HASH_BYTES], char *state,
                          size_t len) VEIL_WUR;

/* The subject of a web number; VEIL_ERR_NOT_FOUND when there is none. */
veil_err vault_store_lookup_web_number(vault_conn *c, const char *web_number,
                                       unsigned char subject[VAULT_SUBJECT_BYTES]) VEIL_WUR;

/* ---- enrolment (inside a transaction) ---- */

struct vault_request_row {
    unsigned char mac[VAULT_HASH_BYTES];
    unsigned char subject[VAULT_SUBJECT_BYTES];
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    int new_identity;
    char web_number[VEIL_WEB_NUMBER_LEN + 1];
    char *certificate; /* malloc'd; the caller frees it */
};

veil_err vault_store_find_request(vault_conn *c, const unsigned char key[VAULT_HASH_BYTES],
                                  struct vault_request_row *out) VEIL_WUR;

/* Finds and row-locks the citizen with a blind index (profile not loaded). */
veil_err vault_store_lock_citizen(vault_conn *c, const unsigned char blind[VAULT_HASH_BYTES],
                                  struct vault_citizen_row *out) VEIL_WUR;

/* Which subject a device key belongs to; VEIL_ERR_NOT_FOUND when none. */
veil_err vault_store_find_device_key(vault_conn *c, const unsigned char pk[32],
                                     unsigned char subject[VAULT_SUBJECT_BYTES],
                                     unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                     int *revoked) VEIL_WUR;

/* A new citizen: its row and an empty log head.  VEIL_ERR_EXISTS on a unique conflict. */
struct vault_new_citizen {
    unsigned char subject[VAULT_SUBJECT_BYTES];
    unsigned char blind[VAULT_HASH_BYTES];
    char web_number[VEIL_WEB_NUMBER_LEN + 1];
    uint32_t key_version;
    unsigned char wrapped[VAULT_WRAPPED_BYTES];
    unsigned char profile[VAULT_PROFILE_MAX];
    size_t profile_len;
};
veil_err vault_store_insert_citizen(vault_conn *c, const struct vault_new_citizen *n) VEIL_WUR;

veil_err vault_store_update_profile(vault_conn *c, const unsigned char subject[VAULT_SUBJECT_BYTES],
                                    const unsigned char *profile, size_t len) VEIL_WUR;

veil_err vault_store_insert_device(vault_conn *c,
                                   const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                   const unsigned char subject[VAULT_SUBJECT_BYTES],
                                   const unsigned char pk[32], const unsigned char *label,
                                   size_t label_len, int64_t proofed_at_ms) VEIL_WUR;

veil_err vault_store_insert_request(vault_conn *c, const unsigned char key[VAULT_HASH_BYTES],
                                    const struct vault_request_row *r) VEIL_WUR;

/* ---- key rotation and bulk loading (commands.c) ---- */

struct vault_wrap_row {
    unsigned char subject[VAULT_SUBJECT_BYTES];
    uint32_t key_version;
    unsigned char wrapped[VAULT_WRAPPED_BYTES];
};

/*
 * Up to max rows (max <= 10000) after subject `after` (in subject order)
 * whose data key is not wrapped under version `to`; *n receives the count.
 */
veil_err vault_store_rotation_batch(vault_conn *c, const unsigned char after[VAULT_SUBJECT_BYTES],
                                    uint32_t to, struct vault_wrap_row *rows, size_t max,
                                    size_t *n) VEIL_WUR;

/* Replaces a wrapped key only if the row still holds `old`; *updated is 0 or 1. */
veil_err vault_store_rewrap(vault_conn *c, const struct vault_wrap_row *old, uint32_t to,
                            const unsigned char wrapped[VAULT_WRAPPED_BYTES],
                            int *updated) VEIL_WUR;

/* Calls fn(ctx, version, count) for each master key version in use. */
veil_err vault_store_version_counts(vault_conn *c, void (*fn)(void *ctx, uint32_t v, int64_t n),
                                    void *ctx) VEIL_WUR;

/* The three COPY streams a bulk load writes, in foreign-key order. */
struct vault_bulk {
    veil_buf citizens, heads, devices;
    size_t rows;
};

/* Adds one enrolled identity (a citizen with one device) to the batch; copies everything. */
void vault_bulk_add(struct vault_bulk *b, const struct vault_new_citizen *n,
                    const unsigned char device_id[VEIL_DEVICE_ID_BYTES], const unsigned char pk[32],
                    const unsigned char *label, size_t label_len);

/* Writes the batch with COPY in one transaction and empties it. */
veil_err vault_store_bulk_flush(vault_conn *c, struct vault_bulk *b, char *errbuf,
                                size_t errlen) VEIL_WUR;

/* Frees (and wipes) the batch's buffers. */
void vault_bulk_free(struct vault_bulk *b);

/* ---- the service ---- */

struct vault_config {
    int64_t attestation_max_age_ms;
    int64_t skew_ms;
    int64_t webcert_days;
    int64_t stepup_fresh_ms;     /* a proofing this recent allows erasure at once */
    int64_t cooling_off_ms;      /* how long an action without step-up waits */
    int64_t presentation_ttl_ms; /* how long a shown presentation stays redeemable */
    int64_t log_partition_s;     /* access-log partition period */
    int64_t log_retention_s;     /* access-log entries kept this long (0: for ever) */
};

struct vault_logw;

struct vault {
    Veil__Vault__Vault_Service rpc; /* first: handlers cast the service to this */
    struct vault_keys *keys;
    vault_store *store;
    struct vault_logw *logw; /* group commit of log appends; NULL: each append commits alone */
    veil_helpers *helpers;   /* a batch's ticket crypto beside its worker (VAULT_CRYPTO_THREADS) */
    struct vault_config cfg;
    _Atomic int64_t next_purge_ms; /* housekeeping runs at most once a minute */
    veil_notifier *key_notifier;   /* LISTENs on VAULT_KEYS_CHANNEL */
    pthread_t key_watcher;         /* follows key_state (main.c) */
    int key_watcher_started;
};

/* ---- enrol.c ---- */

struct vault_enrolment {
    char web_number[VEIL_WEB_NUMBER_LEN + 1];
    char device_id[33];
    int new_identity;
    unsigned cards_revoked; /* replace_cards: the identity's other cards revoked */
    char *certificate;      /* malloc'd; the caller frees it */
};

/*
 * Enrols (or re-enrols) the person of req after validating every field and
 * the attestation.  On failure the call carries the client message.
 * Caller frees out->certificate on VEIL_OK.
 */
veil_err vault_enrolment_run(struct vault *v, veil_call *call, const Veil__Vault__EnrolRequest *req,
                             struct vault_enrolment *out) VEIL_WUR;

/*
 * A web certificate: compact JWS (typ veil-webcert+jwt) binding the web
 * number and the device key until now + days.  *out is malloc'd.
 */
veil_err vault_webcert_issue(const struct vault_keys *k, const char *web_number,
                             const unsigned char device_pk[32], int64_t now_ms, int64_t days,
                             char **out) VEIL_WUR;

/* Builds one new citizen record (random subject, data key and web number). */
veil_err vault_citizen_build(struct vault_keys *k, const struct vault_profile *p,
                             struct vault_new_citizen *out,
                             unsigned char dk[VAULT_DEK_BYTES]) VEIL_WUR;

/* ---- logwriter.c: group commit of access-log appends ---- */

#define VAULT_LOG_BATCH_LIMIT 1024 /* most entries one commit may hold */

/* Group commit state for at most max_batch entries per commit; free with vault_logw_free. */
veil_err vault_logw_new(size_t max_batch, struct vault_logw **out) VEIL_WUR;

/* Logs how many batches and entries there were, and frees w; accepts NULL. */
void vault_logw_free(struct vault_logw *w);

/*
 * Appends the n entries like vault_store_append_log (c outside a
 * transaction), sharing the commit with each other and with the appends of
 * other threads that arrive meanwhile: returns once the commits holding
 * every one of them returned, with each entry's result in e[i]->result
 * (VEIL_ERR_ABORTED when the head moved).  Batches may be written on c or
 * on another caller's connection.  Fails (NOMEM) only before queueing.
 */
veil_err vault_logw_append(struct vault_logw *w, vault_conn *c, struct vault_log_append *const *e,
                           size_t n) VEIL_WUR;

/* ---- access.c ---- */

/*
 * Appends e to subject's log: seals it under the data key (unwrapped from
 * wrapped / key_version) and chains it after (head_seq, head); when a
 * concurrent append moved the head, appends behind the locked head instead.
 */
veil_err vault_access_append(struct vault *v, vault_conn *c,
                             const unsigned char subject[VAULT_SUBJECT_BYTES], uint32_t key_version,
                             const unsigned char wrapped[VAULT_WRAPPED_BYTES], int64_t head_seq,
                             const unsigned char head[VAULT_HASH_BYTES],
                             const struct vault_entry *e) VEIL_WUR;

/* One entry of a batch append: the caller sets the first five fields. */
struct vault_access_item {
    const unsigned char *subject;
    const unsigned char *dk; /* the citizen's data key */
    int64_t head_seq;        /* the head read with the device or citizen */
    const unsigned char *head;
    const struct vault_entry *e;
    veil_err result; /* VEIL_OK once committed; NOT_FOUND when the subject is gone */
    /* the append's own state */
    veil_buf sealed;
    unsigned char mac[VAULT_HASH_BYTES];
    struct vault_log_append log;
};

/*
 * vault_access_append_dk for at most VAULT_BATCH_MAX entries (of one or
 * several citizens) at once, sharing one group commit: returns when every
 * entry is committed or refused, each with its own result.
 */
void vault_access_append_many(struct vault *v, vault_conn *c, struct vault_access_item *items,
                              size_t n);

/* Same, for a caller that already holds the unwrapped data key. */
veil_err vault_access_append_dk(struct vault *v, vault_conn *c,
                                const unsigned char subject[VAULT_SUBJECT_BYTES],
                                const unsigned char dk[VAULT_DEK_BYTES], int64_t head_seq,
                                const unsigned char head[VAULT_HASH_BYTES],
                                const struct vault_entry *e) VEIL_WUR;

/*
 * Records e in subject's log, loading the citizen's key.  in_tx: the caller
 * holds a transaction on c (the entry commits or rolls back with it).
 * VEIL_ERR_NOT_FOUND when the subject is gone.
 */
veil_err vault_access_record(struct vault *v, vault_conn *c,
                             const unsigned char subject[VAULT_SUBJECT_BYTES],
                             const struct vault_entry *e, int in_tx) VEIL_WUR;

/* Same, inside the caller's transaction, for a caller holding the data key. */
veil_err vault_access_record_dk(struct vault *v, vault_conn *c,
                                const unsigned char subject[VAULT_SUBJECT_BYTES],
                                const unsigned char dk[VAULT_DEK_BYTES],
                                const struct vault_entry *e) VEIL_WUR;

/*
 * Reads and verifies subject's log into resp (entries in the call's arena)
 * with a checkpoint the vault signs over where the log ends.
 * VEIL_ERR_NOT_FOUND when the subject does not exist.
 */
veil_err vault_access_list(struct vault *v, veil_call *call,
                           const unsigned char subject[VAULT_SUBJECT_BYTES],
                           Veil__Vault__ListAccessLogResponse *resp) VEIL_WUR;

/* ---- stepup.c ---- */

/* Decides a StepUp request (docs/vault.md, "Step-up"); fails the call on bad input. */
veil_err vault_stepup(struct vault *v, veil_call *call, const Veil__Vault__StepUpRequest *req,
                      Veil__Vault__StepUpResponse *resp) VEIL_WUR;

/* The citizen's pending actions into resp (in the call's arena). */
veil_err vault_pending_list(struct vault *v, veil_call *call,
                            const unsigned char subject[VAULT_SUBJECT_BYTES],
                            Veil__Vault__ListPendingResponse *resp) VEIL_WUR;

/* Cancels one or every pending action on behalf of an active device of the citizen. */
veil_err vault_pending_cancel(struct vault *v, veil_call *call,
                              const Veil__Vault__CancelPendingRequest *req,
                              unsigned *cancelled) VEIL_WUR;

/* ---- inperson.c: presentations and cards (issue 17) ---- */

#define VAULT_CARD_PIN_ATTEMPTS 5 /* wrong PINs in a row that lock a card */

/*
 * The in-person half of VerifyTicket: req carries a presentation or a card.
 * Verifies it, logs the access (naming req->app_id) and fills subject,
 * device_id and resp->credential / resp->shown (in the call's arena).  On
 * failure the call carries the status and message.
 */
veil_err vault_inperson_verify(struct vault *v, veil_call *call,
                               const Veil__Vault__VerifyTicketRequest *req,
                               unsigned char subject[VAULT_SUBJECT_BYTES],
                               unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                               Veil__Vault__VerifyTicketResponse *resp) VEIL_WUR;

/* The CardStatus RPC (bound in handlers.c's service table). */
void vault_card_status(Veil__Vault__Vault_Service *svc, const Veil__Vault__CardStatusRequest *req,
                       Veil__Vault__CardStatusResponse_Closure done, void *call);

/* A card's PIN check value: keyed BLAKE2b-256 (blind key) over its public key and the PIN. */
void vault_card_pin_mac(const veil_key *blind, const unsigned char pk[32], const char *pin,
                        unsigned char out[VAULT_HASH_BYTES]);

/* ---- handlers.c helpers the in-person code shares ---- */

/*
 * Looks a device up and verifies its signature over msg (a decoy key when
 * it is unknown, so timing does not tell).  VEIL_ERR_UNAUTHENTICATED when
 * unknown or the signature is wrong.
 */
veil_err vault_device_signed(struct vault *v, vault_conn *c,
                             const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                             const unsigned char sig[64], const veil_buf *msg,
                             struct vault_device_row *row) VEIL_WUR;

/* ---- attrs.c ---- */

/*
 * Computes exactly the named attributes from a profile on today_ymd into
 * out[0..n) (messages in the call's arena).  Raw values point into *p and
 * birth_date, which the caller keeps until the reply is packed and then
 * wipes.  The names must have been checked against the catalogue.
 */
veil_err vault_attrs_compute(veil_call *call, const struct vault_profile *p, int32_t today_ymd,
                             char *const *names, size_t n, char birth_date[11],
                             Veil__Attribute **out) VEIL_WUR;

/* ---- handlers.c: the service table (bound with its __INIT macro) and its caller policy ---- */

extern const Veil__Vault__Vault_Service vault_rpc;
extern const veil_method_policy vault_policy[];
extern const size_t vault_policy_len;

/* ---- commands.c: `vault rotate-master-key` and `vault bulk-enrol`; return the exit status ---- */

int vault_cmd_rotate_master_key(const veil_service_ctx *ctx, int argc, char **argv);
int vault_cmd_rotate_key(const veil_service_ctx *ctx, int argc, char **argv);
int vault_cmd_bulk_enrol(const veil_service_ctx *ctx, int argc, char **argv);
int vault_cmd_access_log_retention(const veil_service_ctx *ctx, int argc, char **argv);

/* main.c: the configuration read from the environment, for the commands too (static storage). */
const struct vault_config *vault_config_current(void);
const char *vault_proofing_file(void);
uint32_t vault_master_version(void);

#endif
