/*
 * erase.c - erasing an identity everywhere (issue 13 items 2 and 4), the
 * one function every path that erases calls.
 *
 * After it, no service keeps the subject reference or anything from which a
 * pseudonym of the erased person could be recomputed: consent forgets the
 * grants and redacts its feed, revocation forgets the identity state,
 * revoked devices, app links, feed changes and app events, and the vault
 * deletes the record.  Two things are kept, on purpose:
 *
 *  - each linked app still gets its erasure event: the gateway computes the
 *    app's own pseudonyms now and revocation queues them (no subject
 *    reference) as an identity_erased event;
 *  - an identity an authority suspended or revoked binds the person, not
 *    the record: the vault keeps a hold keyed by the blind index of the ID
 *    number (with the state and legal basis) that refuses a re-enrolment.
 *
 * Order: hold, stop logins, consent, revocation, vault last - until the
 * vault record goes, a failed step can be retried with the same device
 * signature, and every step is idempotent.
 */
#include <string.h>

#include "gateway.h"
#include "veil/consent.pb-c.h"
#include "veil/pseudonym.pb-c.h"
#include "veil/revocation.pb-c.h"
#include "veil/vault.pb-c.h"

/* The reason the citizen's own erasure gives; any other reason is an authority's. */
#define ERASED_BY_CITIZEN "erased by the citizen"

/*
 * One notice per linked app still in the registry: its pseudonyms of
 * subject under the key versions the app was last given (recorded on the
 * link; the current ones when none is), as its other events name it.  One
 * Derive per link: an erasure is rare and touches few apps.
 */
static veil_err notices_for(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject,
                            const Veil__Revocation__ErasurePlanResponse *plan,
                            Veil__Revocation__ForgetSubjectRequest *out)
{
    size_t n = plan->n_links, k = 0;
    if (n == 0)
        return VEIL_OK;
    Veil__Revocation__ErasureNotice *notices = veil_call_array(call, n, sizeof *notices);
    Veil__Revocation__ErasureNotice **ptrs = veil_call_array(call, n, sizeof *ptrs);
    gw_app *apps = veil_call_array(call, n, sizeof *apps);
    if (!notices || !ptrs || !apps)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const Veil__Revocation__LinkedApp *l = plan->links[i];
        if (gw_registry_get(&gw->registry, l->app_id, &apps[k]) != 0)
            continue; /* no longer registered: nobody to tell */
        Veil__Pseudonym__DeriveRequest d = VEIL__PSEUDONYM__DERIVE_REQUEST__INIT;
        Veil__Pseudonym__DeriveResponse *p;
        d.subject_ref = subject;
        d.sector_id = apps[k].sector;
        d.link_epoch = l->link_epoch;
        d.key_version = l->key_version ? l->key_version : atomic_load(&gw->keys.pseudonym_current);
        d.previous_key_version =
            l->key_version ? l->previous_key_version : atomic_load(&gw->keys.pseudonym_previous);
        veil_err err = gw_downstream(gw, call, gw->pseudonym, "Derive", &d.base, &p);
        if (err)
            return err;
        veil__revocation__erasure_notice__init(&notices[k]);
        notices[k].app_id = apps[k].id;
        notices[k].pseudonym = p->pseudonym;
        notices[k].previous_pseudonym = p->previous_pseudonym;
        ptrs[k] = &notices[k];
        k++;
    }
    out->notices = ptrs;
    out->n_notices = k;
    return VEIL_OK;
}

veil_err gw_erase_identity(struct gateway *gw, veil_call *call, ProtobufCBinaryData subject)
{
    Veil__Empty *ignored;
    Veil__Revocation__ErasurePlanRequest pr = VEIL__REVOCATION__ERASURE_PLAN_REQUEST__INIT;
    Veil__Revocation__ErasurePlanResponse *plan;
    pr.subject_ref = subject;
    veil_err err = gw_downstream(gw, call, gw->revocation, "ErasurePlan", &pr.base, &plan);
    if (err)
        return err;
    int active = plan->state == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_ACTIVE;
    if (!active && strcmp(plan->reason, ERASED_BY_CITIZEN) != 0) {
        Veil__Vault__HoldIdentityRequest h = VEIL__VAULT__HOLD_IDENTITY_REQUEST__INIT;
        h.subject_ref = subject;
        h.state = plan->state == VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_SUSPENDED ? "suspended"
                                                                                      : "revoked";
        h.legal_basis = plan->reason;
        if ((err = gw_downstream(gw, call, gw->vault, "HoldIdentity", &h.base, &ignored)))
            return err;
    }
    if (active) { /* stop logins first; a suspended or revoked identity already is stopped */
        Veil__Revocation__SetIdentityStateRequest s =
            VEIL__REVOCATION__SET_IDENTITY_STATE_REQUEST__INIT;
        s.subject_ref = subject;
        s.state = VEIL__REVOCATION__IDENTITY_STATE__IDENTITY_REVOKED;
        s.reason = ERASED_BY_CITIZEN;
        if ((err = gw_downstream(gw, call, gw->revocation, "SetIdentityState", &s.base, &ignored)))
            return err;
    }
    Veil__Consent__ForgetRequest f = VEIL__CONSENT__FORGET_REQUEST__INIT;
    f.subject_ref = subject;
    if ((err = gw_downstream(gw, call, gw->consent, "Forget", &f.base, &ignored)))
        return err;
    Veil__Revocation__ForgetSubjectRequest fs = VEIL__REVOCATION__FORGET_SUBJECT_REQUEST__INIT;
    fs.subject_ref = subject;
    if ((err = notices_for(gw, call, subject, plan, &fs)) ||
        (err = gw_downstream(gw, call, gw->revocation, "ForgetSubject", &fs.base, &ignored)))
        return err;
    Veil__Vault__SubjectRequest e = VEIL__VAULT__SUBJECT_REQUEST__INIT;
    e.subject_ref = subject;
    return gw_downstream(gw, call, gw->vault, "Erase", &e.base, &ignored);
}
