/*
 * fuzz_ticket - login-ticket verification: veil_ticket_parse and
 * veil_ticket_open (what the gateway and the vault run on a ticket an app
 * relays), the signature check the vault makes over the canonical bytes,
 * and the vault's real VerifyTicket handler (veil_call_local, real keys, no
 * database).  The first byte picks a mode:
 *
 *   0  the rest is a ticket string, sent for FZ_APP and fz_challenge;
 *   1  the rest describes a ticket (app, challenge, time offset, key
 *      version), which is made with the device key and sent for FZ_APP and
 *      fz_challenge or for its own app and challenge;
 *   2  a valid ticket for FZ_APP with one byte of its decoded form changed.
 *
 * The oracle: the handler lets a ticket through to the device lookup (here:
 * UNAVAILABLE, the database being unreachable) exactly when its app and
 * challenge are the request's and it is sealed to ticket key 1 naming
 * version 1 (time and version travel sealed, format 2); and a ticket that
 * opens carries a valid device signature only if it is byte for byte the one
 * the device made.  The ticket's time is judged only after the device's
 * signature (a genuine ticket refused for its time is the citizen's to see
 * in their access log), so it does not decide whether the lookup is reached.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "fuzz.h"
#include "veil/codec.h"

#define SKEW_MS 120000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether t (parsed and opened into in) carries the device's signature over its fields. */
static int device_signed(const veil_ticket *t, const veil_ticket_inner *in,
                         const unsigned char pk[32])
{
    veil_buf msg = {0};
    veil_ticket_signed_bytes(&msg, t->app_id, t->challenge, VEIL_CHALLENGE_BYTES, in->time_ms,
                             in->device_id, in->key_version);
    int good = !msg.failed && crypto_sign_verify_detached(in->sig, msg.data, msg.len, pk) == 0;
    veil_buf_free(&msg);
    return good;
}

/*
 * Parses and opens ticket with ticket key 1 (the only one that exists);
 * returns 1 when it opens, its sealed key version in *version and its
 * signature status in *signed_ok.
 */
static int open_ticket(const char *ticket, veil_ticket *t, uint32_t *version, int *signed_ok)
{
    unsigned char tpk[32], tseed[32], tsk[32], dpk[32], dsk[64], did[VEIL_DEVICE_ID_BYTES];
    veil_ticket_inner in;
    *signed_ok = 0;
    *version = 0;
    if (veil_ticket_parse(ticket, strlen(ticket), t) != VEIL_OK)
        return 0;
    fz_key("ticket", 1, tseed);
    crypto_box_seed_keypair(tpk, tsk, tseed);
    int opened = veil_ticket_open(t, tpk, tsk, &in) == VEIL_OK;
    sodium_memzero(tsk, sizeof tsk);
    if (!opened)
        return 0;
    fz_device(dpk, dsk, did);
    *version = in.key_version;
    *signed_ok = memcmp(in.device_id, did, sizeof did) == 0 && device_signed(t, &in, dpk);
    return 1;
}

/* VerifyTicket through the vault's handler. */
static veil_err verify(const char *ticket, const char *app, const unsigned char *challenge)
{
    Veil__Vault__VerifyTicketRequest req = VEIL__VAULT__VERIFY_TICKET_REQUEST__INIT;
    size_t n;
    req.ticket = (char *)ticket;
    req.app_id = (char *)app;
    req.challenge.data = (unsigned char *)challenge;
    req.challenge.len = VEIL_CHALLENGE_BYTES;
    uint8_t *bytes = fz_pack(&req.base, &n);
    veil_err err = fz_call(&fz_vault()->rpc.base, "VerifyTicket", bytes, n);
    free(bytes);
    return err;
}

static char *make_ticket(const char *app, const unsigned char *challenge, int64_t time_ms,
                         uint32_t version)
{
    unsigned char dpk[32], dsk[64], did[VEIL_DEVICE_ID_BYTES], tpk[32];
    char *ticket = NULL;
    fz_device(dpk, dsk, did);
    fz_ticket_pk(tpk);
    if (veil_ticket_make(app, challenge, VEIL_CHALLENGE_BYTES, time_ms, did, dsk, tpk, version,
                         &ticket) != VEIL_OK)
        return NULL;
    return ticket;
}

static void mode_raw(fz_reader *r)
{
    char *s = malloc(r->n + 1);
    size_t n = fz_copy(r, s, r->n);
    s[n] = '\0';
    veil_ticket t;
    uint32_t version;
    int signed_ok;
    open_ticket(s, &t, &version, &signed_ok);
    verify(s, FZ_APP, fz_challenge);
    free(s);
}

static void mode_made(fz_reader *r)
{
    char app[80];
    unsigned char challenge[VEIL_CHALLENGE_BYTES];
    uint8_t flags = fz_u8(r);
    fz_str(r, app, sizeof app - 1);
    if (flags & 1)
        memcpy(challenge, fz_challenge, sizeof challenge);
    else
        fz_copy(r, challenge, sizeof challenge);
    int64_t offset = fz_i64(r) % (4 * SKEW_MS); /* up to 8 minutes either way */
    uint32_t version = flags & 2 ? fz_u32(r) % 4 : 1;
    int own = flags & 4; /* ask with the ticket's own app and challenge */
    int64_t now = veil_now_ms();
    char *ticket = make_ticket(app, challenge, now + offset, version);
    if (!ticket)
        return;
    const char *want_app = own ? app : FZ_APP;
    const unsigned char *want_ch = own ? challenge : fz_challenge;
    veil_ticket t;
    uint32_t sealed_version;
    int signed_ok, opened = open_ticket(ticket, &t, &sealed_version, &signed_ok);
    if (opened && !signed_ok)
        abort(); /* a ticket the device made must verify */
    if (opened && sealed_version != version)
        abort(); /* the version sealed is the one the device named */
    veil_err err = verify(ticket, want_app, want_ch);
    int through = err == VEIL_ERR_UNAVAILABLE;
    int should = opened && veil_ident_valid(want_app) && strcmp(t.app_id, want_app) == 0 &&
                 memcmp(t.challenge, want_ch, VEIL_CHALLENGE_BYTES) == 0 && version == 1;
    if (through != should)
        abort();
    free(ticket);
}

static void mode_mutated(fz_reader *r)
{
    char *ticket = make_ticket(FZ_APP, fz_challenge, veil_now_ms(), 1);
    unsigned char raw[VEIL_TICKET_MAX];
    size_t n;
    if (!ticket || veil_b64url_decode(raw, sizeof raw, ticket, strlen(ticket), &n) != 0)
        abort();
    uint16_t at = fz_u16(r);
    uint8_t x = fz_u8(r);
    raw[at % n] ^= x ? x : 1;
    char mutated[2 * VEIL_TICKET_MAX];
    veil_b64url_encode(mutated, sizeof mutated, raw, n);
    veil_ticket t;
    uint32_t version;
    int signed_ok;
    if (open_ticket(mutated, &t, &version, &signed_ok) && signed_ok)
        abort(); /* a changed ticket still carried a valid device signature */
    verify(mutated, FZ_APP, fz_challenge);
    free(ticket);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader r = {data, size};
    switch (fz_u8(&r) % 3) {
    case 0:
        mode_raw(&r);
        break;
    case 1:
        mode_made(&r);
        break;
    default:
        mode_mutated(&r);
        break;
    }
    return 0;
}
