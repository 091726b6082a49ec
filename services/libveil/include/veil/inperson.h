/*
 * veil/inperson.h - the two in-person credentials (issue 17): the
 * presentation a phone shows as a QR code to a venue's scanner, and the code
 * printed on a counter-issued card.  docs/internals/signed-formats.md
 * documents both byte for byte.
 *
 * A presentation is sealed whole to the vault's ticket key, so the venue
 * scanning it sees one format byte and a sealed box that is different every
 * time: no web number, no device id, no key version, nothing stable.
 */
#ifndef VEIL_INPERSON_H
#define VEIL_INPERSON_H

#include <stddef.h>
#include <stdint.h>

#include "veil/codec.h"
#include "veil/err.h"
#include "veil/formats.h"

#define VEIL_PRESENTATION_FORMAT    0x50 /* "P": never a ticket format */
#define VEIL_PRESENT_ATTRS_MAX      8 /* the catalogue's size */
#define VEIL_PRESENT_ATTR_LEN       32
#define VEIL_PRESENTATION_MAX       1024 /* longest presentation string accepted */
#define VEIL_CARD_SECRET_BYTES      15   /* 120 bits: 24 base32 symbols */
#define VEIL_CARD_CODE_LEN          29   /* 25 symbols in five groups of five */
#define VEIL_CARD_PIN_MIN           4
#define VEIL_CARD_PIN_MAX           12

/* What a presentation says once the vault opened it. */
typedef struct veil_presentation {
    unsigned char device_id[VEIL_DEVICE_ID_BYTES];
    unsigned char nonce[VEIL_NONCE_BYTES];
    int64_t time_ms;
    size_t n_attributes;
    char attributes[VEIL_PRESENT_ATTRS_MAX][VEIL_PRESENT_ATTR_LEN + 1];
    unsigned char sig[64];
} veil_presentation;

/*
 * The bytes the device signs:
 *   "veil-presentation-v1\0" | field(nonce) | i64 time_ms | u8 n
 *   | field(attribute name) x n | device id (16)
 */
void veil_presentation_signed_bytes(veil_buf *b, const veil_presentation *p);

/*
 * Wallet side: a fresh presentation of the n attribute names (catalogue
 * names, no repeats, 1..8) made at time_ms by the device, sealed to the
 * vault's ticket public key.  *out (base64url, malloc'd) on VEIL_OK;
 * VEIL_ERR_INVALID for a bad attribute list.
 */
veil_err veil_presentation_make(const char *const *attrs, size_t n, int64_t time_ms,
                                const unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                                const unsigned char *device_sk, const unsigned char vault_pk[32],
                                char **out) VEIL_WUR;

/* Whether s[0..len) has the outer shape of a presentation (size, base64url, format byte). */
int veil_presentation_well_formed(const char *s, size_t len);

/*
 * Vault side: opens a presentation with one ticket key pair.
 * VEIL_ERR_INVALID when it is not shaped like one, VEIL_ERR_UNAUTHENTICATED
 * when the box does not open with this key or its content is malformed.
 * The signature is not checked here (the device key is in the database).
 */
veil_err veil_presentation_open(const char *s, size_t len, const unsigned char vault_pk[32],
                                const unsigned char *vault_sk, veil_presentation *out) VEIL_WUR;

/*
 * Card code: 15 random bytes as 24 symbols of Crockford's base32 plus a Luhn
 * mod 32 check symbol, written in five groups of five separated by '-'.
 */
void veil_card_code_text(const unsigned char secret[VEIL_CARD_SECRET_BYTES],
                         char out[VEIL_CARD_CODE_LEN + 1]);

/*
 * Parses a typed or scanned card code: case-insensitive, '-' and spaces
 * ignored, O read as 0 and I/L as 1 (as people misread them).  0 on
 * success, -1 when malformed or the check symbol is wrong.
 */
int veil_card_code_parse(const char *text, unsigned char secret[VEIL_CARD_SECRET_BYTES]);

/*
 * The card's Ed25519 key pair, derived from its secret:
 * seed = BLAKE2b-256("veil-card-key-v1\0" | secret).  sk (64 bytes) is the
 * caller's, to wipe.
 */
void veil_card_keypair(const unsigned char secret[VEIL_CARD_SECRET_BYTES], unsigned char pk[32],
                       unsigned char sk[64]);

/* Whether pin is 4 to 12 ASCII digits. */
int veil_card_pin_valid(const char *pin);

#endif
