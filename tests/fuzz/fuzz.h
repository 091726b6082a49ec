/*
 * fuzz.h - what veil's libFuzzer targets share (tests/fuzz, built only with
 * -DVEIL_FUZZ=ON by tests/fuzz/run): reading structured fields out of the
 * fuzzer's bytes, a key directory whose keys are derived from fixed labels
 * (so the seed corpus, made by fuzz_seeds, holds tickets and requests that
 * really open), and the real services' handler tables, built as their main()
 * builds them but with a database that cannot be reached - everything a
 * handler checks before it needs PostgreSQL runs for real, and a call that
 * gets as far as the database fails with UNAVAILABLE.
 */
#ifndef VEIL_FUZZ_H
#define VEIL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "consent.h"
#include "pseudonym.h"
#include "revocation.h"
#include "vault.h"

/* The app and challenge the ticket targets' requests name. */
#define FZ_APP "chat.lianxin"
extern const unsigned char fz_challenge[VEIL_CHALLENGE_BYTES];

/* A cursor over the fuzzer's bytes; reads past the end give zeros / empty. */
typedef struct fz_reader {
    const uint8_t *p;
    size_t n;
} fz_reader;

uint8_t fz_u8(fz_reader *r);
uint16_t fz_u16(fz_reader *r);
uint32_t fz_u32(fz_reader *r);
int64_t fz_i64(fz_reader *r);
/* Copies up to n bytes into out (the rest zeroed); returns how many were there. */
size_t fz_copy(fz_reader *r, void *out, size_t n);
/* A string of up to max bytes (u8 length first), NUL-terminated, in out (max + 1 bytes). */
void fz_str(fz_reader *r, char *out, size_t max);

/* A fresh directory for this process's files (created once, removed at exit). */
const char *fz_tmpdir(void);

/* Writes n bytes to a file under fz_tmpdir() with the given mode; returns its path (static). */
const char *fz_write_file(const char *name, const void *data, size_t n, unsigned mode);

/* The 32 bytes of key <purpose>-<version> of every fuzz run and seed. */
void fz_key(const char *purpose, unsigned version, unsigned char out[32]);

/* The key directory: master, blind, audit, webcert, ticket, receipt, pseudonym (version 1). */
const char *fz_keys_dir(void);

/* The proofing authority's file of public keys (one key, from fz_key("proofing", 1)). */
const char *fz_proofing_file(void);

/* The one enrolled-looking device of the runs: its key pair and id. */
void fz_device(unsigned char pk[32], unsigned char sk[64], unsigned char id[VEIL_DEVICE_ID_BYTES]);

/* The vault's ticket public key (version 1), as wallets get it. */
void fz_ticket_pk(unsigned char pk[32]);

/* The services, built once (NULL for a service that cannot be built: a bug). */
struct vault *fz_vault(void);
struct consent *fz_consent(void);
struct revocation *fz_revocation(void);
struct pseudonym *fz_pseudonym(void);

/* The gateway, as the internal services see it calling. */
extern const veil_peer fz_gateway_peer;

/*
 * Runs method of svc on the packed request through veil_call_local, and
 * aborts (a finding) if the handler answers INTERNAL or replies without a
 * message where a refusal needs one.  Returns the call's error.
 */
veil_err fz_call(ProtobufCService *svc, const char *method, const void *request, size_t len);

/* One method of one of veil's services, as the fuzzers number them. */
typedef struct fz_method {
    const ProtobufCServiceDescriptor *service;
    const ProtobufCMethodDescriptor *method;
    const veil_method_policy *row;    /* its policy row */
    ProtobufCService *(*local)(void); /* the service's handlers here, or NULL (gateway, health) */
} fz_method;

/* Every method of every service the servers register; *out the list, the count returned. */
size_t fz_methods(const fz_method **out);

/* The number of /service/method in that list (the first byte of a dispatch input), or -1. */
int fz_method_index(const char *service, const char *method);

/*
 * A web certificate for the fuzz device (a fresh web number) and a consent
 * receipt, made by the vault's and consent's own code; both malloc'd.
 */
void fz_issue(char **cert, char **receipt);

/* Packs a message into a malloc'd buffer; *n receives its length. */
uint8_t *fz_pack(const ProtobufCMessage *m, size_t *n);

#endif
