/*
 * consent_test.h - calls to the consent service shared by its suites:
 * typed wrappers taking NULL-terminated name lists.
 */
#ifndef VEIL_CONSENT_TEST_H
#define VEIL_CONSENT_TEST_H

#include <stdint.h>

#include "harness.h"
#include "svc.h"
#include "veil/consent.pb-c.h"

#define CT_DAY_MS (INT64_C(86400000))

/* A subject_ref made from a number. */
void ct_subject(unsigned char out[32], unsigned n);

veil_channel *ct_channel(const h_svc *s, const char *identity);

/* Starts the consent service (with its receipt key); returns a channel to it as the gateway. */
veil_channel *ct_start(h_svc *s);
/* Closes that channel and stops the service (the test fails if it did not exit cleanly). */
void ct_stop(h_svc *s, veil_channel *gw);

/*
 * Grant; on success receipt_id (>= 64 bytes) and *receipt (malloc'd, may be
 * NULL to skip) are filled.
 */
veil_err ct_grant(veil_channel *ch, const unsigned char *subject, size_t subject_len,
                  const char *app, const char *const *attrs, const char *purpose,
                  int64_t expires_at_ms, const char *const *scope, char *receipt_id, char **receipt,
                  veil_status *st);

/* Withdraw; the names withdrawn joined with "," go to out (>= 256 bytes). */
veil_err ct_withdraw(veil_channel *ch, const unsigned char *subject, const char *app,
                     const char *const *attrs, char *out, veil_status *st);

/* Check; "attribute=receipt_id" joined with "," goes to out (>= 1024 bytes). */
veil_err ct_check(veil_channel *ch, const unsigned char *subject, const char *app,
                  const char *const *attrs, char *out, veil_status *st);

/* List (free with protobuf_c_message_free_unpacked). */
Veil__Consent__ListResponse *ct_list(veil_channel *ch, const unsigned char *subject);

/* The JWKS from GetKeys (malloc'd). */
char *ct_jwks(veil_channel *ch);

/* Unix milliseconds now. */
int64_t ct_now_ms(void);

#endif
