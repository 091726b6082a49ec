/*
 * wallet.h - a simulated citizen's phone: the device key pair and what
 * enrolment returned, kept in a JSON file readable by its owner only, and
 * the client side of veil's protocol - login tickets, device-signed
 * requests - plus the development stand-in for the proofing authority.
 *
 * Used by veilctl and by the end-to-end suites; a real wallet app would do
 * the same with its platform's secure key store.
 */
#ifndef VEIL_WALLET_H
#define VEIL_WALLET_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "veil/err.h"
#include "veil/formats.h"
#include "veil/gateway.pb-c.h"

typedef struct vw_wallet {
    unsigned char pk[32];
    unsigned char *sk;                 /* 64-byte Ed25519 secret key, guarded memory */
    char device_id[33];                /* "" until enrolled */
    char web_number[VEIL_WEB_NUMBER_LEN + 1];
    char *web_certificate;             /* malloc'd, or NULL */
    unsigned char ticket_pk[32];       /* the vault's ticket key */
    uint32_t ticket_key_version;
    int has_checkpoint_key;          /* pinned at enrolment (or first access-log read) */
    unsigned char checkpoint_pk[32]; /* the vault's access-log checkpoint key */
    int has_checkpoint;              /* the newest checkpoint this wallet verified */
    int64_t checkpoint_seq, checkpoint_at_ms;
    int64_t checkpoint_entry_at_ms;    /* the time of entry checkpoint_seq (0: none) */
    unsigned char checkpoint_head[32];
} vw_wallet;

/* What comparing an access-log read with the wallet's last checkpoint found. */
typedef struct vw_log_check {
    const char *status;   /* "first_read", "consistent", "pruned" (good); "rolled_back",
                             "wiped", "rewritten", "bad_checkpoint", "no_checkpoint" (tampering) */
    int ok;               /* the read may become the wallet's new checkpoint */
    int64_t previous_seq; /* the stored checkpoint's seq (-1: none) */
    int64_t seq;          /* the new checkpoint's seq (-1: none) */
    char message[256];
} vw_log_check;

/*
 * Checks an access-log reply against the pinned checkpoint key and the
 * stored checkpoint (docs/vault.md, "Checkpoints"): the signature, that the
 * checkpoint describes the entries returned, and that the log still holds
 * the stored checkpoint's entry unchanged.  On ok the caller keeps the new
 * checkpoint with vw_checkpoint_keep and saves the wallet.
 */
void vw_checkpoint_check(const vw_wallet *w, const Veil__Gateway__AccessLogResponse *r,
                         vw_log_check *out);

/* Makes r's checkpoint the wallet's (after vw_checkpoint_check said ok). */
void vw_checkpoint_keep(vw_wallet *w, const Veil__Gateway__AccessLogResponse *r);

/* A fresh device key pair (not yet saved). */
veil_err vw_wallet_new(vw_wallet **out) VEIL_WUR;

/* Reads a wallet file; refuses one readable by others. */
veil_err vw_wallet_load(const char *path, vw_wallet **out, char *errbuf, size_t errlen) VEIL_WUR;

/* Writes the wallet atomically, mode 0600; with exclusive, refuses to replace a file. */
veil_err vw_wallet_save(const vw_wallet *w, const char *path, int exclusive, char *errbuf,
                        size_t errlen) VEIL_WUR;

void vw_wallet_free(vw_wallet *w);

/* Records an enrolment's result in the wallet. */
veil_err vw_wallet_enrolled(vw_wallet *w, const Veil__Gateway__WalletEnrolResponse *r) VEIL_WUR;

/*
 * Fills an enrolment request as the proofing authority would attest it:
 * signs the attestation with the authority's Ed25519 seed key.  Strings are
 * referenced, not copied; the signature goes into sig (64 bytes).
 */
void vw_attest(const vw_wallet *w, const unsigned char authority_seed[32], const char *id_number,
               const char *full_name, int face_match, int64_t at_ms, unsigned char sig[64],
               Veil__Gateway__WalletEnrolRequest *req);

/* Records the vault's ticket key from Wallet/GetKeys (needed before enrolling). */
veil_err vw_wallet_keys(vw_wallet *w, const Veil__Gateway__WalletKeysResponse *k) VEIL_WUR;

/*
 * Seals the identity fields vw_attest filled (and the device label) to the
 * vault's ticket key into out, points req->sealed_identity at it and
 * empties the clear fields: the gateway refuses them and forwards only the
 * sealed bytes.  VEIL_ERR_PRECONDITION when the wallet has no vault key yet
 * (vw_wallet_keys).
 */
veil_err vw_seal_enrolment(const vw_wallet *w, Veil__Gateway__WalletEnrolRequest *req,
                           unsigned char out[VEIL_ENROL_SEALED_BYTES]) VEIL_WUR;

/* A login ticket for app_id answering challenge; *out malloc'd. */
veil_err vw_ticket(const vw_wallet *w, const char *app_id, const unsigned char *challenge,
                   size_t challenge_len, int64_t time_ms, char **out) VEIL_WUR;

/*
 * A presentation of the named attributes to show at a venue (issue 17):
 * single use, sealed to the vault, nothing in it stable.  *out malloc'd;
 * VEIL_ERR_INVALID for a bad attribute list, VEIL_ERR_PRECONDITION when not
 * enrolled.
 */
veil_err vw_present(const vw_wallet *w, const char *const *attrs, size_t n, int64_t time_ms,
                    char **out) VEIL_WUR;

/*
 * Signs payload for the gateway method path (e.g. "/veil.gateway.Wallet/GrantConsent").
 * Fills req (its payload, auth, nonce and signature point into memory
 * allocated here); release it with vw_signed_free.
 */
veil_err vw_sign(const vw_wallet *w, const char *method_path, const ProtobufCMessage *payload,
                 int64_t time_ms, Veil__Gateway__SignedRequest *req) VEIL_WUR;
/* As vw_sign, over an already serialized payload (copied). */
veil_err vw_sign_bytes(const vw_wallet *w, const char *method_path, const void *payload, size_t n,
                       int64_t time_ms, Veil__Gateway__SignedRequest *req) VEIL_WUR;
void vw_signed_free(Veil__Gateway__SignedRequest *req);

#endif
