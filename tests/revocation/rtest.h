/*
 * rtest.h - calls to the revocation service shared by its suites: typed
 * wrappers that return the status code and copy what the tests look at.
 */
#ifndef VEIL_RTEST_H
#define VEIL_RTEST_H

#include <stdint.h>

#include "harness.h"
#include "svc.h"
#include "veil/revocation.pb-c.h"

/* What Status and Authorize answered. */
typedef struct rt_status {
    int allowed;
    int reason;
    uint32_t epoch;
    char code[32];
} rt_status;

/* A subject_ref made from a number, and a device id (32 lowercase hex). */
void rt_subject(unsigned char out[32], unsigned n);
void rt_device(char out[33], unsigned n);

veil_channel *rt_channel(const h_svc *s, const char *identity);

veil_err rt_revoke_device(veil_channel *ch, const unsigned char *subject, const char *device);
veil_err rt_set_identity(veil_channel *ch, const unsigned char *subject, int state,
                         const char *reason, veil_status *st);
veil_err rt_unlink(veil_channel *ch, const unsigned char *subject, const char *app, uint32_t *epoch,
                   veil_status *st);
veil_err rt_relink(veil_channel *ch, const unsigned char *subject, const char *app, int keep,
                   uint32_t *epoch, veil_status *st);
veil_err rt_set_app(veil_channel *ch, const char *app, int state);
/* method is "Status" or "Authorize". */
veil_err rt_status_call(veil_channel *ch, const char *method, const unsigned char *subject,
                        const char *device, const char *app, rt_status *out, veil_status *st);

/* One app's events after after_seq (free with protobuf_c_message_free_unpacked). */
Veil__AppEventsResponse *rt_app_events(veil_channel *ch, const char *app, int64_t after_seq,
                                       uint32_t max);

#endif
