/*
 * counter.c - the Counter service (issue 17): what a public-service counter
 * calls, with its own certificate (spiffe://<trust domain>/counter/<name>).
 *
 * A counter issues cards to citizens without a smartphone after proofing
 * them in person: the card is enrolled through the vault's one enrolment
 * path, exactly like a phone (the proofing attestation covers the card's
 * public key, and the identity arrives sealed to the vault), plus the PIN
 * the citizen chose, which only the vault keeps (as a keyed hash).  It also shows the citizen their
 * card's state - wrong PINs so far and whether it is locked.  A door only translates: everything is
 * decided in the vault.
 */
#include <string.h>

#include "gateway.h"
#include "veil/inperson.h"
#include "veil/log.h"
#include "veil/vault.pb-c.h"

static void gw_counter_issue_card(Veil__Gateway__Counter_Service *svc,
                                  const Veil__Gateway__IssueCardRequest *req,
                                  Veil__Gateway__IssueCardResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, counter);
    Veil__Gateway__IssueCardResponse resp = VEIL__GATEWAY__ISSUE_CARD_RESPONSE__INIT;
    Veil__Vault__EnrolRequest vr = VEIL__VAULT__ENROL_REQUEST__INIT;
    Veil__Vault__EnrolResponse *v;
    veil_err err = VEIL_OK;
    if (!veil_card_pin_valid(req->pin)) {
        veil_call_fail(call, VEIL_ERR_INVALID, "pin must be 4 to 12 digits");
        err = VEIL_ERR_INVALID;
    }
    /* The identity stays sealed to the vault: the gateway relays it unread. */
    vr.request_id = req->request_id;
    vr.card_pin = req->pin;
    vr.replace_cards = req->replace;
    if (!err)
        err = gw_enrol_sealed(gw, call, &vr, req->sealed_identity, &v);
    if (!err) {
        /* Not the web number or certificate: a card carries nothing stable but its code. */
        resp.device_id = v->device_id;
        resp.new_identity = v->new_identity;
        resp.cards_revoked = v->cards_revoked;
        veil_log(VEIL_LOG_INFO, "card issued", VL_STR("counter", veil_call_peer(call)->name),
                 VL_INT("cards_revoked", v->cards_revoked), VL_END);
    }
    VEIL_REPLY(done, call, err, &resp);
}

static void gw_counter_card_status(Veil__Gateway__Counter_Service *svc,
                                   const Veil__Gateway__CardStatusRequest *req,
                                   Veil__Gateway__CardStatusResponse_Closure done, void *call)
{
    struct gateway *gw = GW_OF(svc, counter);
    Veil__Gateway__CardStatusResponse resp = VEIL__GATEWAY__CARD_STATUS_RESPONSE__INIT;
    Veil__Vault__CardStatusRequest vr = VEIL__VAULT__CARD_STATUS_REQUEST__INIT;
    Veil__Vault__CardStatusResponse *v;
    vr.code = req->code;
    veil_err err = gw_downstream(gw, call, gw->vault, "CardStatus", &vr.base, &v);
    if (!err) {
        resp.status = v->status;
        resp.wrong_pins = v->wrong_pins;
        resp.attempts_left = v->attempts_left;
    }
    VEIL_REPLY(done, call, err, &resp);
}

const Veil__Gateway__Counter_Service gw_counter_rpc = VEIL__GATEWAY__COUNTER__INIT(gw_counter_);

const veil_method_policy gw_counter_policy[] = {
    {"IssueCard", VEIL_PEER_COUNTER, VEIL_EXEC_WORKER},
    {"CardStatus", VEIL_PEER_COUNTER, VEIL_EXEC_WORKER},
};
const size_t gw_counter_policy_len = sizeof gw_counter_policy / sizeof gw_counter_policy[0];
