/*
 * audit.c - the admin audit log (issue 13 item 6): one row per call to the
 * Admin API, written by gw_audit at the end of every admin handler, read by
 * the auditor role through Admin/ListAudit (`veilctl admin audit`).
 *
 * No personal data in the clear.  An identity is recorded as its reference:
 * the first 16 bytes of BLAKE2b(key = auditref-1.key, "veil-admin-audit-ref-v1"
 * | web number), in hex.  The same identity always has the same reference,
 * so an auditor can follow it through the log, but the web number cannot be
 * read back, and without the gateway's key nobody can test a guessed web
 * number against it.  Reasons are the admin's words; one that holds an ID
 * number (a run of 15 or more digits) or a web number is refused.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "gateway.h"
#include "store.h"
#include "veil/log.h"

void gw_audit_ref(const veil_key *key, const char *web_number, char out[GW_AUDIT_REF_LEN + 1])
{
    static const char domain[] = "veil-admin-audit-ref-v1";
    unsigned char h[GW_AUDIT_REF_LEN / 2];
    crypto_generichash_state st;
    crypto_generichash_init(&st, key->bytes, VEIL_KEY_BYTES, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)domain, sizeof domain);
    crypto_generichash_update(&st, (const unsigned char *)web_number, strlen(web_number));
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(out, GW_AUDIT_REF_LEN + 1, h, sizeof h);
    sodium_memzero(&st, sizeof st);
}

int gw_audit_reason_ok(const char *reason)
{
    size_t n = strlen(reason), digits = 0;
    for (size_t i = 0; i < n; i++) {
        digits = isdigit((unsigned char)reason[i]) ? digits + 1 : 0;
        if (digits >= 15)
            return 0;
    }
    char window[VEIL_WEB_NUMBER_LEN + 1];
    for (size_t i = 0; i + VEIL_WEB_NUMBER_LEN <= n; i++) {
        for (size_t k = 0; k < VEIL_WEB_NUMBER_LEN; k++)
            window[k] = (char)toupper((unsigned char)reason[i + k]);
        window[VEIL_WEB_NUMBER_LEN] = '\0';
        if (veil_web_number_valid(window))
            return 0;
    }
    return 1;
}

veil_err gw_audit(struct gateway *gw, veil_call *call, const gw_audit_entry *e, veil_err err)
{
    const veil_peer *peer = veil_call_peer(call);
    char actor[160], ref[GW_AUDIT_REF_LEN + 1] = ""; /* role and name (at most 127 bytes) */
    snprintf(actor, sizeof actor, "%s/%s", peer->role == VEIL_PEER_AUDITOR ? "auditor" : "admin",
             peer->name);
    if (e->web_number && e->web_number[0])
        gw_audit_ref(gw->keys.auditref, e->web_number, ref);
    gw_audit_row row = {
        .actor = actor,
        .method = e->method,
        .app_id = e->app_id && veil_ident_valid(e->app_id) ? e->app_id : "",
        .identity_ref = ref,
        .detail = e->detail ? e->detail : "",
        .reason = e->reason && gw_text_ok(e->reason, 200) && gw_audit_reason_ok(e->reason)
                      ? e->reason
                      : "",
        .result = err ? veil_status_name(veil_err_status(err)) : "OK",
    };
    veil_err werr = gw_store_audit_append(gw->store, &row);
    if (werr) {
        veil_log(VEIL_LOG_ERROR, "the admin audit log cannot be written",
                 VL_STR("method", e->method), VL_STR("error", veil_err_name(werr)), VL_END);
        if (!err) { /* the change is made, but an unaudited success must not look like one */
            veil_call_fail(call, VEIL_ERR_UNAVAILABLE,
                           "the change was made but the admin audit log cannot be written");
            return VEIL_ERR_UNAVAILABLE;
        }
    }
    return err;
}
