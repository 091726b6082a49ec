/*
 * inperson_cmds.c - the in-person verbs (issue 17): the phone showing a code
 * at a venue (`wallet present`), and a public-service counter issuing a card
 * to a citizen without a smartphone (`counter card issue`) and showing them
 * its state (`counter card status`).  `app redeem` and `app login --card`
 * are in app_cmds.c with the other app verbs.
 *
 * A card file is what gets printed on the card: a title line, the line
 * "code XXXXX-XXXXX-XXXXX-XXXXX-XXXXX" (the typed form) and the same code as
 * a QR code.  It is a bearer secret (with the PIN): written 0600.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>

#include "veilctl.h"

int vc_wallet_present(const vc_opts *o)
{
    if (!o->wallet || !o->attrs)
        return vc_usage("wallet present --wallet FILE --attrs a,b");
    vw_wallet *w = vc_wallet(o);
    if (!w)
        return 1;
    size_t n;
    char **attrs = vc_split_attrs(o, &n), *presentation = NULL;
    if (!attrs) {
        vw_wallet_free(w);
        return 1;
    }
    int64_t now = veil_now_ms();
    int rc = 0;
    veil_err err = vw_present(w, (const char *const *)attrs, n, now, &presentation);
    if (err == VEIL_ERR_PRECONDITION)
        rc = vc_fail(o, "FAILED_PRECONDITION", "wallet %s is not enrolled", o->wallet);
    else if (err == VEIL_ERR_INVALID)
        rc = vc_fail(o, "INVALID_ARGUMENT",
                     "--attrs must name 1 to 8 different attributes of the catalogue");
    else if (err)
        rc = vc_fail(o, "INTERNAL", "cannot make the presentation");
    if (!rc) {
        char when[40];
        if (o->json) {
            json_t *names = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(names, json_string(attrs[i]));
            vc_print_json(json_pack("{s:s, s:o, s:I}", "presentation", presentation, "attributes",
                                    names, "made_at_ms", (json_int_t)now));
        } else {
            printf("show this code to the venue's scanner; it works once, for a minute "
                   "(made %s):\n",
                   vc_time(now, when, sizeof when));
            vc_print_qr(presentation);
            printf("shows   %s\npresentation %s\n", o->attrs, presentation);
        }
    }
    free(presentation);
    vc_split_free(attrs);
    vw_wallet_free(w);
    return rc;
}

/* Writes the card file (exclusive, 0600): title, typed code, QR. */
static int write_card(const vc_opts *o, const char *code)
{
    int fd = open(o->out, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return vc_fail(o, "FAILED_PRECONDITION", "cannot create %s: %s", o->out, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return vc_fail(o, "INTERNAL", "cannot write %s", o->out);
    }
    fprintf(f, "veil card - log in with this code and your PIN; keep both apart\n");
    fprintf(f, "code %s\n", code);
    vc_fprint_qr(f, code);
    if (fclose(f) != 0)
        return vc_fail(o, "UNAVAILABLE", "cannot write %s", o->out);
    return 0;
}

int vc_card_read(const vc_opts *o, char code[VEIL_CARD_CODE_LEN + 1])
{
    unsigned char secret[VEIL_CARD_SECRET_BYTES];
    char line[256];
    int found = 0;
    if (!o->card)
        return vc_fail(o, "INVALID_ARGUMENT", "--card FILE is required");
    FILE *f = fopen(o->card, "r");
    if (!f)
        return vc_fail(o, "FAILED_PRECONDITION", "cannot open %s: %s", o->card, strerror(errno));
    /* The "code" line of a card file, or a file holding just the code. */
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        const char *text = strncmp(line, "code ", 5) == 0 ? line + 5 : line;
        found = veil_card_code_parse(text, secret) == 0;
    }
    fclose(f);
    sodium_memzero(line, sizeof line);
    if (!found)
        return vc_fail(o, "INVALID_ARGUMENT", "%s holds no valid card code", o->card);
    veil_card_code_text(secret, code);
    sodium_memzero(secret, sizeof secret);
    return 0;
}

int vc_counter_card_issue(const vc_opts *o)
{
    if (!o->id_number || !o->name || !o->pin || !o->out)
        return vc_usage("counter card issue --id-number N --name NAME --pin PIN --out CARD");
    if (!veil_card_pin_valid(o->pin))
        return vc_fail(o, "INVALID_ARGUMENT", "--pin must be 4 to 12 digits");
    struct stat st;
    if (stat(o->out, &st) == 0)
        return vc_fail(o, "ALREADY_EXISTS", "%s exists: a card file is never overwritten", o->out);
    veil_key *seed = NULL;
    if (vc_proofing_seed(o, &seed) != 0)
        return 1;
    /* The card: a random secret, printed; its key pair derives from it. */
    unsigned char secret[VEIL_CARD_SECRET_BYTES], rid[16];
    char code[VEIL_CARD_CODE_LEN + 1], request_id[32];
    vw_wallet card = {0};
    unsigned char *sk = sodium_malloc(64);
    if (!sk) {
        veil_key_free(seed);
        return vc_fail(o, "INTERNAL", "out of memory");
    }
    randombytes_buf(secret, sizeof secret);
    veil_card_code_text(secret, code);
    veil_card_keypair(secret, card.pk, sk);
    sodium_memzero(secret, sizeof secret);
    card.sk = sk;

    /* The proofing authority checked the ID card and the face, as for a phone. */
    Veil__Gateway__WalletEnrolRequest att = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    unsigned char sig[64], sealed[VEIL_ENROL_SEALED_BYTES];
    vw_attest(&card, seed->bytes, o->id_number, o->name, 1, veil_now_ms(), sig, &att);
    att.device_label = (char *)(o->label ? o->label : "card");
    veil_key_free(seed);
    sodium_free(sk);
    card.sk = NULL;
    randombytes_buf(rid, sizeof rid);
    veil_b64url_encode(request_id, sizeof request_id, rid, sizeof rid);

    /* Sealed to the vault's ticket key, as a phone seals its enrolment. */
    Veil__Gateway__IssueCardRequest req = VEIL__GATEWAY__ISSUE_CARD_REQUEST__INIT;
    Veil__Gateway__IssueCardResponse *resp = NULL;
    Veil__Gateway__WalletKeysResponse *keys = NULL;
    Veil__Empty empty = VEIL__EMPTY__INIT;
    veil_channel *wch = vc_channel(o, "citizen", &veil__gateway__wallet__descriptor);
    int rc = vc_call(wch, "GetKeys", &empty.base, &keys, o);
    veil_channel_free(wch);
    if (!rc && vw_wallet_keys(&card, keys) != VEIL_OK)
        rc = vc_fail(o, "INTERNAL", "the gateway's keys reply is incomplete");
    if (!rc && vw_seal_enrolment(&card, &att, sealed) != VEIL_OK)
        rc = vc_fail(o, "INVALID_ARGUMENT",
                     "the identity does not fit the enrolment format (name at most 200 bytes, "
                     "label at most 64)");
    if (keys)
        protobuf_c_message_free_unpacked(&keys->base, NULL);
    if (rc) {
        sodium_memzero(code, sizeof code);
        return rc;
    }
    req.request_id = request_id;
    req.sealed_identity = att.sealed_identity;
    req.pin = (char *)o->pin;
    req.replace = o->replace;
    veil_channel *ch = vc_channel(o, "counter", &veil__gateway__counter__descriptor);
    rc = vc_call(ch, "IssueCard", &req.base, &resp, o);
    veil_channel_free(ch);
    sodium_memzero(sealed, sizeof sealed);
    if (!rc)
        rc = write_card(o, code);
    if (!rc) {
        if (o->json) {
            vc_print_json(json_pack("{s:s, s:s, s:b, s:s, s:i}", "card", o->out, "device_id",
                                    resp->device_id, "new_identity", resp->new_identity, "code",
                                    code, "cards_revoked", (int)resp->cards_revoked));
        } else {
            printf("card issued (%s); print %s for the citizen:\n",
                   resp->new_identity ? "a new identity" : "a new device of a known identity",
                   o->out);
            printf("  code    %s\n  device  %s\n", code, resp->device_id);
            if (resp->cards_revoked)
                printf("  %u earlier card(s) of this person revoked\n", resp->cards_revoked);
            vc_print_qr(code);
        }
    }
    sodium_memzero(code, sizeof code);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int vc_counter_card_status(const vc_opts *o)
{
    char code[VEIL_CARD_CODE_LEN + 1];
    if (!o->card)
        return vc_usage("counter card status --card CARD");
    if (vc_card_read(o, code) != 0)
        return 1;
    Veil__Gateway__CardStatusRequest req = VEIL__GATEWAY__CARD_STATUS_REQUEST__INIT;
    Veil__Gateway__CardStatusResponse *resp = NULL;
    req.code = code;
    veil_channel *ch = vc_channel(o, "counter", &veil__gateway__counter__descriptor);
    int rc = vc_call(ch, "CardStatus", &req.base, &resp, o);
    veil_channel_free(ch);
    sodium_memzero(code, sizeof code);
    if (!rc) {
        if (o->json)
            vc_print_json(json_pack("{s:s, s:i, s:i}", "status", resp->status, "wrong_pins",
                                    (int)resp->wrong_pins, "attempts_left",
                                    (int)resp->attempts_left));
        else
            printf("card %s: %u wrong PIN(s) in a row, %u attempt(s) left\n", resp->status,
                   resp->wrong_pins, resp->attempts_left);
    }
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}
