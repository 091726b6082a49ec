/*
 * fuzz_citizen - citizen-request verification: the canonical signed bytes
 * (veil_citizen_signed_bytes), the vault's real VerifyCitizenRequest handler
 * (veil_call_local, real keys, no database) and the gateway's next step, the
 * payload unpacked as the method's payload type.  The first byte picks a
 * mode:
 *
 *   0  the rest is a VerifyCitizenRequestRequest as the gateway would send it;
 *   1  the rest describes a request (Wallet method, time offset, nonce,
 *      payload), which is signed with the device key;
 *   2  as 1, then one byte of what was signed is changed.
 *
 * The oracle: a request signed as the wallet signs it verifies and, when
 * every field is well formed and its time within the skew, gets through to
 * the device lookup (UNAVAILABLE here); a changed one never verifies.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "fuzz.h"
#include "veil/gateway.pb-c.h"

#define SKEW_MS   120000
#define MARGIN_MS 5000

static const struct {
    const char *path;
    const ProtobufCMessageDescriptor *payload;
} methods[] = {
    {"/veil.gateway.Wallet/GrantConsent", &veil__gateway__grant_consent_payload__descriptor},
    {"/veil.gateway.Wallet/WithdrawConsent", &veil__gateway__withdraw_consent_payload__descriptor},
    {"/veil.gateway.Wallet/ListConsents", &veil__gateway__list_consents_payload__descriptor},
    {"/veil.gateway.Wallet/RevokeDevice", &veil__gateway__revoke_device_payload__descriptor},
    {"/veil.gateway.Wallet/ListDevices", &veil__gateway__list_devices_payload__descriptor},
    {"/veil.gateway.Wallet/UnlinkApp", &veil__gateway__app_link_payload__descriptor},
    {"/veil.gateway.Wallet/RelinkApp", &veil__gateway__app_link_payload__descriptor},
    {"/veil.gateway.Wallet/AccessLog", &veil__gateway__access_log_payload__descriptor},
    {"/veil.gateway.Wallet/Erase", &veil__gateway__erase_payload__descriptor},
};
#define N_METHODS (sizeof methods / sizeof methods[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static veil_err verify(const Veil__Vault__VerifyCitizenRequestRequest *req)
{
    size_t n;
    uint8_t *bytes = fz_pack(&req->base, &n);
    veil_err err = fz_call(&fz_vault()->rpc.base, "VerifyCitizenRequest", bytes, n);
    free(bytes);
    return err;
}

static int signature_ok(const char *method, const uint8_t *payload, size_t len, int64_t time_ms,
                        const unsigned char *nonce, size_t nonce_len, const char *device,
                        const unsigned char sig[64], const unsigned char pk[32])
{
    veil_buf msg = {0};
    veil_citizen_signed_bytes(&msg, method, payload, len, time_ms, nonce, nonce_len, device);
    int good = !msg.failed && crypto_sign_verify_detached(sig, msg.data, msg.len, pk) == 0;
    veil_buf_free(&msg);
    return good;
}

static void mode_raw(const uint8_t *data, size_t size)
{
    Veil__Vault__VerifyCitizenRequestRequest *req =
        veil__vault__verify_citizen_request_request__unpack(NULL, size, data);
    if (!req)
        return;
    verify(req);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void mode_signed(fz_reader *r, int tamper)
{
    unsigned char pk[32], sk[64], id[VEIL_DEVICE_ID_BYTES], nonce[32], sig[64];
    char device[33];
    uint8_t pick = fz_u8(r), nonce_len = fz_u8(r) % 20 == 0 ? 0 : 16;
    int64_t offset = fz_i64(r) % (4 * SKEW_MS);
    fz_copy(r, nonce, sizeof nonce);
    uint16_t at = fz_u16(r);
    uint8_t flip = fz_u8(r);
    const char *method = methods[pick % N_METHODS].path;
    uint8_t *payload = malloc(r->n ? r->n : 1);
    size_t len = fz_copy(r, payload, r->n);
    int64_t time_ms = veil_now_ms() + offset;

    fz_device(pk, sk, id);
    veil_device_id_text(id, device);
    veil_buf msg = {0};
    veil_citizen_signed_bytes(&msg, method, payload, len, time_ms, nonce, nonce_len, device);
    if (msg.failed)
        abort();
    crypto_sign_detached(sig, NULL, msg.data, msg.len, sk);
    veil_buf_free(&msg);

    char path[64];
    snprintf(path, sizeof path, "%s", method);
    if (tamper) {
        /* one byte of the method, the payload, the nonce or the time, after signing */
        size_t where = at % (strlen(path) + len + nonce_len + 8);
        uint8_t x = flip ? flip : 1;
        if (where < strlen(path)) {
            path[where] ^= x;
            if (!path[where])
                path[where] = 1;
        } else if ((where -= strlen(path)) < len) {
            payload[where] ^= x;
        } else if ((where -= len) < nonce_len) {
            nonce[where] ^= x;
        } else {
            time_ms = (int64_t)((uint64_t)time_ms ^ (uint64_t)x << (8 * (where - nonce_len)));
        }
    }
    int good = signature_ok(path, payload, len, time_ms, nonce, nonce_len, device, sig, pk);
    if (good == tamper)
        abort(); /* a genuine request failed, or a tampered one passed */

    Veil__CitizenAuth auth = VEIL__CITIZEN_AUTH__INIT;
    Veil__Vault__VerifyCitizenRequestRequest req =
        VEIL__VAULT__VERIFY_CITIZEN_REQUEST_REQUEST__INIT;
    auth.device_id = device;
    auth.time_ms = time_ms;
    auth.nonce.data = nonce;
    auth.nonce.len = nonce_len;
    auth.signature.data = sig;
    auth.signature.len = sizeof sig;
    req.method = path;
    req.payload.data = payload;
    req.payload.len = len;
    req.auth = &auth;
    veil_err err = verify(&req);
    int64_t dist = offset < 0 ? -offset : offset;
    if (!tamper && !(dist > SKEW_MS - MARGIN_MS && dist < SKEW_MS + MARGIN_MS) &&
        (err == VEIL_ERR_UNAVAILABLE) != (nonce_len == 16 && dist <= SKEW_MS))
        abort();
    /* the gateway, once the vault vouched for the request, unpacks the payload */
    ProtobufCMessage *p =
        protobuf_c_message_unpack(methods[pick % N_METHODS].payload, NULL, len, payload);
    if (p)
        protobuf_c_message_free_unpacked(p, NULL);
    free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader r = {data, size};
    switch (fz_u8(&r) % 3) {
    case 0:
        mode_raw(r.p, r.n);
        break;
    case 1:
        mode_signed(&r, 0);
        break;
    default:
        mode_signed(&r, 1);
        break;
    }
    return 0;
}
