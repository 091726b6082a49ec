/*
 * inperson.c - the in-person half of VerifyTicket (issue 17): a presentation
 * a phone showed to a venue, and a counter-issued card with its PIN.  Both
 * end like a phone's ticket - subject, device, an access-log entry naming
 * the app - so the gateway's one login function carries on unchanged.
 *
 * Presentations: sealed whole to a ticket key (every loaded key is tried, as
 * the presentation names none), signed by an active phone, at most
 * VAULT_PRESENTATION_TTL_S old, and single use (its nonce is remembered for
 * the TTL plus the skew).
 *
 * Cards: the code yields the card's key pair; the PIN is checked here only,
 * against a keyed hash.  Every attempt first takes one of
 * VAULT_CARD_PIN_ATTEMPTS in a single UPDATE, so even parallel guesses
 * cannot exceed the limit; a right PIN gives the attempts back.  Five: a
 * thief holding the card has at most 5 in 10^4 (four digits) to 5 in 10^6
 * (six digits) to guess it, while a holder who mistypes twice or three
 * times is not locked out.  Wrong PINs and the lock go into the citizen's
 * access log, and the message says how many attempts are left.
 */
#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "veil/inperson.h"
#include "veil/log.h"
#include "vault.h"

#define PRESENTATION_FAILED "presentation could not be verified"
#define CARD_FAILED         "card could not be verified"

static veil_err fail(veil_call *call, veil_err err, const char *msg)
{
    veil_call_fail(call, err, "%s", msg);
    return err;
}

void vault_card_pin_mac(const veil_key *blind, const unsigned char pk[32], const char *pin,
                        unsigned char out[VAULT_HASH_BYTES])
{
    static const char label[] = "veil-card-pin-v1";
    crypto_generichash_state st;
    crypto_generichash_init(&st, blind->bytes, VEIL_KEY_BYTES, VAULT_HASH_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)label, sizeof label);
    crypto_generichash_update(&st, pk, 32);
    crypto_generichash_update(&st, (const unsigned char *)pin, strlen(pin));
    crypto_generichash_final(&st, out, VAULT_HASH_BYTES);
    sodium_memzero(&st, sizeof st);
}

/* Appends an entry to the log of the device's citizen; "subject gone" fails as unknown. */
static veil_err log_entry(struct vault *v, veil_call *call, vault_conn *c,
                          const struct vault_device_row *row, const struct vault_entry *e,
                          const char *unknown)
{
    veil_err err = vault_access_append(v, c, row->subject, row->key_version, row->wrapped,
                                       row->head_seq, row->head, e);
    if (err == VEIL_ERR_NOT_FOUND) /* erased in between */
        return fail(call, VEIL_ERR_UNAUTHENTICATED, unknown);
    return err;
}

/*
 * Opens with a loaded ticket key.  Every key is tried even after one opened
 * it, as for tickets, so the time taken does not tell a venue which key - so
 * which enrolment cohort - the phone has.
 */
static veil_err open_presentation(struct vault *v, veil_call *call, const char *s,
                                  veil_presentation *p)
{
    struct vault_keys *k = v->keys;
    veil_presentation attempt;
    size_t len = strlen(s);
    int opened = 0;
    if (!veil_presentation_well_formed(s, len))
        return fail(call, VEIL_ERR_INVALID, "presentation is malformed");
    for (size_t i = atomic_load(&k->n_boxkeys); i-- > 0;)
        if (veil_presentation_open(s, len, k->boxkeys[i].pk, k->boxkeys[i].sk, &attempt) ==
                VEIL_OK &&
            !opened) {
            *p = attempt;
            opened = 1;
        }
    sodium_memzero(&attempt, sizeof attempt);
    return opened ? VEIL_OK : fail(call, VEIL_ERR_UNAUTHENTICATED, PRESENTATION_FAILED);
}

static veil_err verify_presentation(struct vault *v, veil_call *call, vault_conn *c,
                                    const Veil__Vault__VerifyTicketRequest *req,
                                    veil_presentation *p, struct vault_device_row *row)
{
    veil_buf msg = {0};
    veil_err err = open_presentation(v, call, req->presentation, p);
    if (err)
        return err;
    int64_t now = veil_now_ms();
    if (p->time_ms > now + v->cfg.skew_ms)
        return fail(call, VEIL_ERR_UNAUTHENTICATED,
                    "presentation time is outside the allowed clock skew");
    if (now > p->time_ms + v->cfg.presentation_ttl_ms)
        return fail(call, VEIL_ERR_UNAUTHENTICATED, "presentation expired: show a new code");
    veil_presentation_signed_bytes(&msg, p);
    err = vault_device_signed(v, c, p->device_id, p->sig, &msg, row);
    veil_buf_free(&msg);
    if (err == VEIL_ERR_UNAUTHENTICATED)
        return fail(call, err, PRESENTATION_FAILED);
    if (err)
        return err;
    if (row->revoked) { /* the app reads "login refused"; the citizen's log says why */
        struct vault_entry e = {.app_id = req->app_id,
                                .action = "login_refused",
                                .purpose = "shown in person",
                                .detail = "device_revoked"};
        if ((err = log_entry(v, call, c, row, &e, PRESENTATION_FAILED)))
            return err;
        return fail(call, VEIL_ERR_DENIED, "device revoked");
    }
    /* Single use: the nonce outlives every time the expiry check still accepts. */
    err = vault_store_use_nonce(c, p->device_id, p->nonce, VEIL_NONCE_BYTES, now,
                                v->cfg.presentation_ttl_ms + v->cfg.skew_ms);
    if (err == VEIL_ERR_EXISTS)
        return fail(call, VEIL_ERR_UNAUTHENTICATED, "presentation already used");
    if (err == VEIL_ERR_NOT_FOUND)
        return fail(call, VEIL_ERR_UNAUTHENTICATED, PRESENTATION_FAILED);
    if (err)
        return err;
    const char *names[VEIL_PRESENT_ATTRS_MAX];
    for (size_t i = 0; i < p->n_attributes; i++)
        names[i] = p->attributes[i];
    struct vault_entry e = {.app_id = req->app_id,
                            .action = "presentation_redeemed",
                            .attributes = names,
                            .n_attributes = p->n_attributes,
                            .purpose = "shown in person"};
    return log_entry(v, call, c, row, &e, PRESENTATION_FAILED);
}

/* A wrong PIN: counted, logged for the citizen, and said to whoever typed it. */
static veil_err wrong_pin(struct vault *v, veil_call *call, vault_conn *c,
                          const Veil__Vault__VerifyTicketRequest *req,
                          const struct vault_card_row *card, int failures)
{
    char purpose[96];
    int locked = failures >= VAULT_CARD_PIN_ATTEMPTS;
    snprintf(purpose, sizeof purpose, "wrong pin, attempt %d of %d%s", failures,
             VAULT_CARD_PIN_ATTEMPTS, locked ? ": card locked" : "");
    struct vault_entry e = {.app_id = req->app_id,
                            .action = locked ? "card_locked" : "card_pin_wrong",
                            .purpose = purpose};
    veil_err err = log_entry(v, call, c, &card->device, &e, CARD_FAILED);
    if (err)
        return err;
    veil_log(VEIL_LOG_INFO, "card pin wrong", VL_INT("failures", failures),
             VL_BOOL("locked", locked), VL_END);
    if (locked) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION,
                       "wrong pin: the card is now locked after %d wrong pins; ask at a "
                       "public-service counter",
                       VAULT_CARD_PIN_ATTEMPTS);
        return VEIL_ERR_PRECONDITION;
    }
    veil_call_fail(call, VEIL_ERR_UNAUTHENTICATED, "wrong pin: %d of %d attempts left",
                   VAULT_CARD_PIN_ATTEMPTS - failures, VAULT_CARD_PIN_ATTEMPTS);
    return VEIL_ERR_UNAUTHENTICATED;
}

static veil_err verify_card(struct vault *v, veil_call *call, vault_conn *c,
                            const Veil__Vault__VerifyTicketRequest *req,
                            struct vault_card_row *card)
{
    unsigned char secret[VEIL_CARD_SECRET_BYTES], pk[32], sk[64], mac[VAULT_HASH_BYTES];
    const Veil__CardCredential *cred = req->card;
    veil_err err;
    if (!veil_card_pin_valid(cred->pin))
        return fail(call, VEIL_ERR_INVALID, "card.pin must be 4 to 12 digits");
    if (veil_card_code_parse(cred->code, secret) != 0)
        return fail(call, VEIL_ERR_INVALID, "card.code is malformed or its check symbol is wrong");
    veil_card_keypair(secret, pk, sk);
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(sk, sizeof sk);
    err = vault_store_card(c, pk, card);
    /* An unknown card costs the same keyed hash as a known one. */
    vault_card_pin_mac(v->keys->blind_key, pk, cred->pin, mac);
    if (err == VEIL_ERR_NOT_FOUND)
        err = fail(call, VEIL_ERR_UNAUTHENTICATED, CARD_FAILED);
    if (err)
        goto out;
    if (card->device.revoked) { /* the app reads "login refused"; the citizen's log says why */
        struct vault_entry e = {.app_id = req->app_id,
                                .action = "login_refused",
                                .purpose = "login",
                                .detail = "card_revoked"};
        if (!(err = log_entry(v, call, c, &card->device, &e, CARD_FAILED)))
            err = fail(call, VEIL_ERR_DENIED, "card revoked");
        goto out;
    }
    int failures = 0;
    err = vault_store_pin_try(c, card->device_id, VAULT_CARD_PIN_ATTEMPTS, &failures);
    if (err == VEIL_ERR_NOT_FOUND) {
        veil_call_fail(call, VEIL_ERR_PRECONDITION,
                       "card is locked after %d wrong pins; ask at a public-service counter",
                       VAULT_CARD_PIN_ATTEMPTS);
        err = VEIL_ERR_PRECONDITION;
        goto out;
    }
    if (err)
        goto out;
    if (sodium_memcmp(mac, card->pin_mac, sizeof mac) != 0) {
        err = wrong_pin(v, call, c, req, card, failures);
        goto out;
    }
    if ((err = vault_store_pin_reset(c, card->device_id)))
        goto out;
    struct vault_entry e = {.app_id = req->app_id, .action = "card_used", .purpose = "login"};
    err = log_entry(v, call, c, &card->device, &e, CARD_FAILED);
out:
    sodium_memzero(mac, sizeof mac);
    return err;
}

veil_err vault_inperson_verify(struct vault *v, veil_call *call,
                               const Veil__Vault__VerifyTicketRequest *req,
                               unsigned char subject[VAULT_SUBJECT_BYTES],
                               unsigned char device_id[VEIL_DEVICE_ID_BYTES],
                               Veil__Vault__VerifyTicketResponse *resp)
{
    vault_conn *c;
    veil_err err = vault_store_conn(v->store, &c);
    if (err)
        return err;
    if (req->card) {
        struct vault_card_row card;
        if ((err = verify_card(v, call, c, req, &card)))
            return err;
        memcpy(subject, card.device.subject, VAULT_SUBJECT_BYTES);
        memcpy(device_id, card.device_id, VEIL_DEVICE_ID_BYTES);
        resp->credential = "card";
        return VEIL_OK;
    }
    veil_presentation p;
    struct vault_device_row row;
    if ((err = verify_presentation(v, call, c, req, &p, &row)))
        goto out;
    char **shown = veil_call_alloc(call, p.n_attributes * sizeof *shown);
    if (!shown) {
        err = VEIL_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < p.n_attributes; i++)
        if (!(shown[i] = veil_call_strdup(call, p.attributes[i]))) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
    memcpy(subject, row.subject, VAULT_SUBJECT_BYTES);
    memcpy(device_id, p.device_id, VEIL_DEVICE_ID_BYTES);
    resp->credential = "phone";
    resp->shown = shown;
    resp->n_shown = p.n_attributes;
out:
    sodium_memzero(&p, sizeof p);
    return err;
}

void vault_card_status(Veil__Vault__Vault_Service *svc, const Veil__Vault__CardStatusRequest *req,
                       Veil__Vault__CardStatusResponse_Closure done, void *call)
{
    Veil__Vault__CardStatusResponse resp = VEIL__VAULT__CARD_STATUS_RESPONSE__INIT;
    struct vault *v = (struct vault *)svc;
    unsigned char secret[VEIL_CARD_SECRET_BYTES], pk[32], sk[64];
    struct vault_card_row card;
    vault_conn *c;
    veil_err err = VEIL_OK;
    if (veil_card_code_parse(req->code, secret) != 0)
        err = fail(call, VEIL_ERR_INVALID, "code is malformed or its check symbol is wrong");
    if (!err) {
        veil_card_keypair(secret, pk, sk);
        sodium_memzero(secret, sizeof secret);
        sodium_memzero(sk, sizeof sk);
        if (!(err = vault_store_conn(v->store, &c)) &&
            (err = vault_store_card(c, pk, &card)) == VEIL_ERR_NOT_FOUND)
            fail(call, err, "card not found");
    }
    if (!err) {
        int locked = card.failures >= VAULT_CARD_PIN_ATTEMPTS;
        resp.status = card.device.revoked ? "revoked" : locked ? "locked" : "active";
        resp.wrong_pins = (uint32_t)card.failures;
        resp.attempts_left = locked ? 0 : (uint32_t)(VAULT_CARD_PIN_ATTEMPTS - card.failures);
    }
    VEIL_REPLY(done, call, err, &resp);
}
