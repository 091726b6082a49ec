/*
 * veil/formats.h - the exact bytes veil signs, in one place.
 *
 * Every signature in veil covers a canonical byte string built here, never a
 * serialized protobuf or JSON the verifier would have to re-create.  Each
 * string starts with a NUL-terminated domain label, so a signature made for
 * one purpose can never be replayed as another.  Integers are big-endian; a
 * "field" is a u16 length then its bytes.  docs/internals/signed-formats.md
 * documents the same layouts for implementers of wallets and proofing
 * authorities.
 */
#ifndef VEIL_FORMATS_H
#define VEIL_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "veil/codec.h"
#include "veil/err.h"

#define VEIL_DEVICE_ID_BYTES 16
#define VEIL_CHALLENGE_BYTES 32
#define VEIL_NONCE_BYTES 16
#define VEIL_TICKET_MAX 1024 /* longest ticket string accepted */

/*
 * Proofing attestation (signed by the proofing authority):
 *   "veil-proofing-attestation-v2\0" | field(ID number, 'x' upper-cased)
 *   | field(full name, UTF-8) | u8 face_match | device public key (32)
 *   | i64 attested_at_ms
 * Holds the ID number: never logged, travels only sealed to the vault.
 */
void veil_attestation_bytes(veil_buf *b, const char *id_number, const char *full_name,
                            int face_match, const unsigned char device_pk[32],
                            int64_t attested_at_ms);

/*
 * Login ticket, format 2 (docs/internals/signed-formats.md).  Signed by the
 * device key:
 *   "veil-login-ticket-v2\0" | field(app id) | field(challenge) | i64 time_ms
 *   | device id (16) | u32 ticket key version
 * On the wire (base64url, no padding) - what the app relays to the gateway:
 *   u8 format (2) | field(app id) | field(challenge)
 *   | field(sealed box to the vault's ticket key of
 *           u32 ticket key version | i64 time_ms | device id (16) | signature (64))
 * Everything about the phone - its device id, its clock, the key version it
 * was given - travels sealed: the clear part is the app's own id and
 * challenge, so two apps comparing tickets share nothing but constants.
 * Format 1 (time and key version in the clear) is refused.
 */
#define VEIL_TICKET_FORMAT 2
#define VEIL_TICKET_RETIRED "ticket format 1 is no longer accepted: update the wallet"
#define VEIL_TICKET_INNER_BYTES (4 + 8 + VEIL_DEVICE_ID_BYTES + 64)

typedef struct veil_ticket {
    char app_id[128];
    unsigned char challenge[VEIL_CHALLENGE_BYTES];
    const unsigned char *sealed; /* points into the decoded buffer */
    size_t sealed_len;
    unsigned char raw[VEIL_TICKET_MAX]; /* the decoded wire form */
} veil_ticket;

/* The sealed part, as the vault reads it once opened. */
typedef struct veil_ticket_inner {
    uint32_t key_version;
    int64_t time_ms;
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    unsigned char sig[64];
} veil_ticket_inner;

void veil_ticket_signed_bytes(veil_buf *b, const char *app_id, const unsigned char *challenge,
                              size_t challenge_len, int64_t time_ms,
                              const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                              uint32_t key_version);

/*
 * Wallet side: builds the ticket string.  device_sk is the Ed25519 secret
 * key (64 bytes); vault_pk the vault's X25519 ticket key of key_version.
 * *out is malloc'd.
 */
veil_err veil_ticket_make(const char *app_id, const unsigned char *challenge,
                          size_t challenge_len, int64_t time_ms,
                          const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                          const unsigned char *device_sk, const unsigned char vault_pk[32],
                          uint32_t key_version, char **out) VEIL_WUR;

/*
 * Parses the wire form: VEIL_ERR_INVALID when malformed,
 * VEIL_ERR_PRECONDITION for a well-formed ticket of the retired format 1.
 */
veil_err veil_ticket_parse(const char *s, size_t len, veil_ticket *t) VEIL_WUR;

/*
 * Vault side: opens the sealed part with one ticket key pair into *out;
 * VEIL_ERR_UNAUTHENTICATED when it does not open.  *out holds a signature
 * and a device id: wipe it after use.
 */
veil_err veil_ticket_open(const veil_ticket *t, const unsigned char vault_pk[32],
                          const unsigned char *vault_sk, veil_ticket_inner *out) VEIL_WUR;

/*
 * Enrolment identity, sealed by the phone to the vault's ticket key
 * (docs/internals/signed-formats.md): what the proofing authority attested
 * and the device key, so the gateway relays bytes it cannot read.  Plain
 * text, always VEIL_ENROL_IDENTITY_BYTES (zero padding: the sealed length
 * says nothing about the name):
 *   "veil-enrol-identity-v1\0" | u32 ticket key version | field(id number)
 *   | field(full name) | field(device public key) | u8 face_match
 *   | i64 attested_at_ms | field(attestation signature) | field(device label)
 *   | zero bytes
 */
#define VEIL_ENROL_IDENTITY_BYTES 512
#define VEIL_ENROL_SEALED_BYTES   (VEIL_ENROL_IDENTITY_BYTES + 48) /* + crypto_box_SEALBYTES */

/* The identity an enrolment carries.  Personal: wipe with sodium_memzero. */
typedef struct veil_enrol_identity {
    uint32_t key_version;
    char id_number[19];  /* at most 18 bytes */
    char full_name[201]; /* at most 200 bytes */
    unsigned char device_pk[32];
    int face_match;
    int64_t attested_at_ms;
    unsigned char signature[64];
    char device_label[65]; /* at most 64 bytes */
} veil_enrol_identity;

/*
 * Phone side: seals id to the vault's ticket key vault_pk (whose version
 * id->key_version names) into out.  VEIL_ERR_INVALID when a field is too
 * long for the layout.
 */
veil_err veil_enrol_identity_seal(const veil_enrol_identity *id, const unsigned char vault_pk[32],
                                  unsigned char out[VEIL_ENROL_SEALED_BYTES]) VEIL_WUR;

/*
 * Vault side: opens sealed with one ticket key pair and parses it into *out:
 * VEIL_ERR_UNAUTHENTICATED when it does not open, VEIL_ERR_INVALID when
 * what opened is not the layout (a string holding NUL, non-zero padding).
 */
veil_err veil_enrol_identity_open(const unsigned char *sealed, size_t len,
                                  const unsigned char vault_pk[32], const unsigned char *vault_sk,
                                  veil_enrol_identity *out) VEIL_WUR;

/*
 * Citizen request (signed by a device key):
 *   "veil-citizen-request-v1\0" | field(method path) | u32 length | payload
 *   | i64 time_ms | field(nonce) | field(device id, text)
 */
void veil_citizen_signed_bytes(veil_buf *b, const char *method, const void *payload,
                               size_t payload_len, int64_t time_ms, const unsigned char *nonce,
                               size_t nonce_len, const char *device_id);

/*
 * Web number: 15 random symbols of Crockford's base32 and a Luhn mod 32
 * check symbol, shown as XXXX-XXXX-XXXX-XXXX.  Random, so it says nothing
 * about the person; the check symbol catches a mistyped or swapped symbol.
 */
#define VEIL_WEB_NUMBER_LEN 19
void veil_web_number_new(char out[VEIL_WEB_NUMBER_LEN + 1]);
/* Crockford's base32 alphabet, and the Luhn mod 32 check value of n symbol values. */
extern const char veil_crockford32[];
int veil_luhn32_check(const int *v, size_t n);
/* Whether s is a well-formed web number with a correct check symbol. */
int veil_web_number_valid(const char *s);

/* Device ids are shown as 32 lowercase hex characters. */
void veil_device_id_text(const unsigned char id[VEIL_DEVICE_ID_BYTES], char out[33]);
int veil_device_id_parse(const char *text, unsigned char id[VEIL_DEVICE_ID_BYTES]);

/* ---- the attribute catalogue (DESIGN.md, Attributes) ---- */

typedef enum veil_attr_kind {
    VEIL_ATTR_DERIVED, /* predicates and coarse derived values: fine for commercial apps */
    VEIL_ATTR_RAW,     /* raw personal data: public-service platforms only */
} veil_attr_kind;

typedef struct veil_attr {
    const char *name;
    veil_attr_kind kind;
} veil_attr;

/* The catalogue entry of a name, or NULL when it is not an attribute. */
const veil_attr *veil_attr_find(const char *name);
/* The whole catalogue; *n receives its size. */
const veil_attr *veil_attr_catalogue(size_t *n);

/* How many attributes the catalogue holds (formats.c checks it at compile time). */
#define VEIL_ATTR_COUNT 8

/*
 * Purposes.  A consent grant's purpose is 1-200 bytes of printable UTF-8.  A
 * release names every distinct purpose of the grants it serves, joined with
 * "; ": at most one grant per attribute, so at most VEIL_ATTR_COUNT purposes,
 * and the joined text always fits VEIL_RELEASE_PURPOSE_MAX - never cut.
 */
#define VEIL_PURPOSE_MAX         200
#define VEIL_RELEASE_PURPOSE_MAX (VEIL_ATTR_COUNT * (VEIL_PURPOSE_MAX + 2))

/* Every attribute name, ", "-separated in catalogue order: for error messages and help. */
#define VEIL_ATTR_NAMES                                                                            \
    "real_name_verified, age_over_14, age_over_18, age_over_60, province, full_name, gender, "     \
    "birth_date"
const char *veil_attr_names(void);

/* An app id, sector id or admin name: 1-64 of [a-z0-9._-], starting alphanumeric. */
int veil_ident_valid(const char *s);

/*
 * Access-log checkpoint (signed by the vault's checkpoint key; the citizen's
 * wallet keeps the newest it verified and compares the next read with it):
 *   "veil-access-checkpoint-v2\0" | field(web number) | i64 seq | head (32)
 *   | i64 at_ms | i64 retention_ms
 */
void veil_checkpoint_bytes(veil_buf *b, const char *web_number, int64_t seq,
                           const unsigned char head[32], int64_t at_ms, int64_t retention_ms);

#endif
