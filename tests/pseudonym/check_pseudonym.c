/*
 * check_pseudonym.c - the pseudonym service over real gRPC: determinism,
 * separation by sector, epoch and key version, rotation overlap, batches,
 * bad input and callers, plus a known-answer vector from an independent
 * BLAKE2b implementation (Python's hashlib).
 */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "pseudonym.h"

static h_proc svc;
static char *keys;
static char env_keys[1100];

static void start(void)
{
    keys = h_tempdir("pkeys");
    h_keyfile(keys, "pseudonym", 1);
    h_keyfile(keys, "pseudonym", 2);
    snprintf(env_keys, sizeof env_keys, "VEIL_KEYS_DIR=%s", keys);
    const char *env[] = {env_keys, NULL};
    ck_assert_int_eq(h_spawn(&svc, "pseudonym", "svc/pseudonym", env), 0);
}

static void stop(void)
{
    ck_assert_int_eq(h_stop(&svc), 0);
    free(keys);
}

static veil_err derive(const char *identity, const unsigned char *subject, size_t slen,
                       const char *sector, uint32_t epoch, uint32_t v, uint32_t prev, char *out,
                       char *prev_out)
{
    veil_channel *ch = h_channel(svc.addr, identity, &veil__pseudonym__pseudonym__descriptor);
    Veil__Pseudonym__DeriveRequest req = VEIL__PSEUDONYM__DERIVE_REQUEST__INIT;
    req.subject_ref.data = (unsigned char *)subject;
    req.subject_ref.len = slen;
    req.sector_id = (char *)sector;
    req.link_epoch = epoch;
    req.key_version = v;
    req.previous_key_version = prev;
    Veil__Pseudonym__DeriveResponse *resp;
    veil_status st;
    veil_err err = veil_channel_call(ch, "Derive", &req.base, NULL, 2000, &resp, &st);
    if (!err) {
        strcpy(out, resp->pseudonym);
        if (prev_out)
            strcpy(prev_out, resp->previous_pseudonym);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    veil_channel_free(ch);
    return err;
}

static const unsigned char subj_a[32] = {1, 2, 3}, subj_b[32] = {9, 9, 9};

START_TEST(test_known_answer)
{
    veil_key key = {.version = 5};
    unsigned char bytes[32], subject[32];
    for (int i = 0; i < 32; i++)
        bytes[i] = (unsigned char)(i + 1);
    memset(subject, 0xaa, sizeof subject);
    key.bytes = bytes;
    char out[PSEUDONYM_MAX_LEN];
    pseudonym_compute(&key, subject, "shop.taobao", 3, out);
    ck_assert_str_eq(out, "v5.YY7URqf1g3p8MCIPwTyThtC5wMg");
}
END_TEST

START_TEST(test_derive_properties)
{
    start();
    char a1[64], a2[64], other[64], prev[64];
    /* the caller always names the version: no default, so no new key file changes a pseudonym */
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop.taobao", 0, 0, 0, a1, NULL),
                     VEIL_ERR_INVALID);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop.taobao", 0, 1, 0, a1, NULL), VEIL_OK);
    ck_assert_int_eq(strncmp(a1, "v1.", 3), 0);
    ck_assert_uint_eq(strlen(a1), 3 + 27);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop.taobao", 0, 1, 0, a2, NULL), VEIL_OK);
    ck_assert_str_eq(a1, a2); /* stable */
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "chat.wechat", 0, 1, 0, other, NULL),
                     VEIL_OK);
    ck_assert_str_ne(a1, other); /* another sector */
    ck_assert_int_eq(derive("svc/gateway", subj_b, 32, "shop.taobao", 0, 1, 0, other, NULL),
                     VEIL_OK);
    ck_assert_str_ne(a1, other); /* another person */
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop.taobao", 1, 1, 0, other, NULL),
                     VEIL_OK);
    ck_assert_str_ne(a1, other); /* a fresh link epoch */
    /* rotation overlap: current v2, previous v1 -> previous equals the old pseudonym */
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop.taobao", 0, 2, 1, other, prev),
                     VEIL_OK);
    ck_assert_int_eq(strncmp(other, "v2.", 3), 0);
    ck_assert_str_eq(prev, a1);
    stop();
}
END_TEST

START_TEST(test_bad_input)
{
    start();
    char out[64];
    ck_assert_int_eq(derive("svc/gateway", subj_a, 16, "shop.taobao", 0, 1, 0, out, NULL),
                     VEIL_ERR_INVALID);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "Bad Sector", 0, 1, 0, out, NULL),
                     VEIL_ERR_INVALID);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "", 0, 1, 0, out, NULL), VEIL_ERR_INVALID);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop", 0, 9, 0, out, NULL),
                     VEIL_ERR_PRECONDITION);
    /* a key file added later is picked up on demand */
    h_keyfile(keys, "pseudonym", 9);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop", 0, 9, 0, out, NULL), VEIL_OK);
    ck_assert_int_eq(strncmp(out, "v9.", 3), 0);
    stop();
}
END_TEST

START_TEST(test_only_the_gateway)
{
    start();
    char out[64];
    const char *others[] = {"svc/vault", "svc/consent", "svc/revocation", "app/chat.wechat",
                            "admin/ops"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        ck_assert_int_eq(derive(others[i], subj_a, 32, "shop", 0, 1, 0, out, NULL),
                         VEIL_ERR_DENIED);
    ck_assert_int_eq(derive("foreign", subj_a, 32, "shop", 0, 1, 0, out, NULL),
                     VEIL_ERR_UNAVAILABLE);
    ck_assert_int_eq(derive("none", subj_a, 32, "shop", 0, 1, 0, out, NULL), VEIL_ERR_UNAVAILABLE);
    stop();
}
END_TEST

START_TEST(test_batch_matches_single)
{
    start();
    enum { N = 500 };
    Veil__Pseudonym__DeriveItem items[N], *ptrs[N];
    unsigned char subjects[N][32];
    char sectors[N][16];
    for (int i = 0; i < N; i++) {
        veil__pseudonym__derive_item__init(&items[i]);
        memset(subjects[i], i & 0xff, 32);
        subjects[i][0] = (unsigned char)(i >> 8);
        snprintf(sectors[i], sizeof sectors[i], "app%d", i % 81);
        items[i].subject_ref.data = subjects[i];
        items[i].subject_ref.len = 32;
        items[i].sector_id = sectors[i];
        items[i].link_epoch = (uint32_t)(i % 3);
        ptrs[i] = &items[i];
    }
    Veil__Pseudonym__DeriveBatchRequest req = VEIL__PSEUDONYM__DERIVE_BATCH_REQUEST__INIT;
    req.n_items = N;
    req.items = ptrs;
    req.key_version = 2;
    req.previous_key_version = 1;
    veil_channel *ch = h_channel(svc.addr, "svc/gateway", &veil__pseudonym__pseudonym__descriptor);
    Veil__Pseudonym__DeriveBatchResponse *resp;
    veil_status st;
    ck_assert_int_eq(veil_channel_call(ch, "DeriveBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_OK);
    ck_assert_uint_eq(resp->n_pseudonyms, N);
    ck_assert_uint_eq(resp->n_previous_pseudonyms, N);
    for (int i = 0; i < N; i += 37) {
        char one[64], prev[64];
        ck_assert_int_eq(
            derive("svc/gateway", subjects[i], 32, sectors[i], (uint32_t)(i % 3), 2, 1, one, prev),
            VEIL_OK);
        ck_assert_str_eq(resp->pseudonyms[i], one);
        ck_assert_str_eq(resp->previous_pseudonyms[i], prev);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* empty and bad batches */
    req.n_items = 0;
    ck_assert_int_eq(veil_channel_call(ch, "DeriveBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    req.n_items = N;
    items[7].subject_ref.len = 3;
    ck_assert_int_eq(veil_channel_call(ch, "DeriveBatch", &req.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_INVALID);
    veil_channel_free(ch);
    stop();
}
END_TEST

/*
 * veil_call_local (what the fuzzers drive) answers as the server does: the
 * same pseudonym from the same keys, the same refusals and messages.
 */
START_TEST(test_call_local_answers_as_the_server)
{
    start();
    struct pseudonym local = {.rpc = pseudonym_rpc};
    char err[256];
    ck_assert_int_eq(veil_keyring_load(keys, "pseudonym", &local.keys, err, sizeof err), VEIL_OK);
    veil_peer gateway = {.role = VEIL_PEER_GATEWAY, .name = "gateway"};
    Veil__Pseudonym__DeriveRequest req = VEIL__PSEUDONYM__DERIVE_REQUEST__INIT;
    req.subject_ref.data = (unsigned char *)subj_a;
    req.subject_ref.len = 32;
    req.sector_id = "shop";
    req.key_version = 2;
    unsigned char bytes[256];
    size_t n = protobuf_c_message_pack(&req.base, bytes);
    char msg[256], wire[64];
    ProtobufCBinaryData reply;
    ck_assert_int_eq(
        veil_call_local(&local.rpc.base, "Derive", &gateway, bytes, n, 0, &reply, msg, sizeof msg),
        VEIL_OK);
    ck_assert_str_eq(msg, "");
    Veil__Pseudonym__DeriveResponse *resp =
        veil__pseudonym__derive_response__unpack(NULL, reply.len, reply.data);
    ck_assert_ptr_nonnull(resp);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop", 0, 2, 0, wire, NULL), VEIL_OK);
    ck_assert_str_eq(resp->pseudonym, wire);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(reply.data);
    /* the reply is packed and size-checked as on the wire: 16 bytes are too few */
    ck_assert_int_eq(
        veil_call_local(&local.rpc.base, "Derive", &gateway, bytes, n, 16, NULL, msg, sizeof msg),
        VEIL_ERR_EXHAUSTED);
    req.subject_ref.len = 16;
    n = protobuf_c_message_pack(&req.base, bytes);
    ck_assert_int_eq(
        veil_call_local(&local.rpc.base, "Derive", &gateway, bytes, n, 0, NULL, msg, sizeof msg),
        VEIL_ERR_INVALID);
    ck_assert_str_eq(msg, "subject_ref must be 32 bytes");
    const unsigned char truncated[] = {0x0a, 0x7f, 'a'};
    ck_assert_int_eq(veil_call_local(&local.rpc.base, "Derive", &gateway, truncated,
                                     sizeof truncated, 0, NULL, msg, sizeof msg),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(msg, "malformed request message");
    ck_assert_int_eq(
        veil_call_local(&local.rpc.base, "Nothing", &gateway, NULL, 0, 0, NULL, msg, sizeof msg),
        VEIL_ERR_UNIMPLEMENTED);
    veil_keyring_free(local.keys);
    stop();
}
END_TEST

/* The key versions the service has loaded, as the gateway asks for them. */
static int has_version(uint32_t version)
{
    veil_channel *ch = h_channel(svc.addr, "svc/gateway", &veil__pseudonym__pseudonym__descriptor);
    Veil__Pseudonym__KeyVersionsRequest req = VEIL__PSEUDONYM__KEY_VERSIONS_REQUEST__INIT;
    Veil__Pseudonym__KeyVersionsResponse *resp;
    veil_status st;
    int found = 0;
    ck_assert_int_eq(veil_channel_call(ch, "KeyVersions", &req.base, NULL, 2000, &resp, &st),
                     VEIL_OK);
    for (size_t i = 0; i < resp->n_loaded; i++)
        found |= resp->loaded[i] == version;
    ck_assert_uint_eq(resp->current, 0); /* no version of its own */
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    veil_channel_free(ch);
    return found;
}

/*
 * Issue 16 item 5: a key file put into the key folder is loaded without a
 * restart and without SIGHUP (the folder is watched), and changes nothing
 * until the gateway names the version.
 */
START_TEST(test_new_key_file_loaded_without_restart)
{
    start();
    char before[64], after[64];
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop", 0, 1, 0, before, NULL), VEIL_OK);
    ck_assert(!has_version(3));
    h_keyfile(keys, "pseudonym", 3);
    int loaded = 0;
    for (int i = 0; i < 100 && !loaded; i++) {
        loaded = has_version(3);
        if (!loaded)
            usleep(50 * 1000);
    }
    ck_assert_msg(loaded, "pseudonym-3.key was not loaded within 5 s");
    ck_assert(h_log_contains(&svc, "key folder changed: loading new key files"));
    ck_assert(!h_log_contains(&svc, "reloading on SIGHUP"));
    /* loaded, not used: version 1 still derives what it did */
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop", 0, 1, 0, after, NULL), VEIL_OK);
    ck_assert_str_eq(before, after);
    ck_assert_int_eq(derive("svc/gateway", subj_a, 32, "shop", 0, 3, 1, after, NULL), VEIL_OK);
    ck_assert_int_eq(strncmp(after, "v3.", 3), 0);
    stop();
}
END_TEST

START_TEST(test_refuses_to_start_without_keys)
{
    char *empty = h_tempdir("nokeys");
    char env[1100];
    snprintf(env, sizeof env, "VEIL_KEYS_DIR=%s", empty);
    const char *e[] = {env, NULL};
    h_proc p;
    ck_assert_int_eq(h_spawn(&p, "pseudonym", "svc/pseudonym", e), -1);
    ck_assert(h_log_contains(&p, "no pseudonym key (expected a file pseudonym-1.key)"));
    /* a key file others can read is refused with a clear message */
    char path[1200];
    h_keyfile(empty, "pseudonym", 1);
    snprintf(path, sizeof path, "%s/pseudonym-1.key", empty);
    chmod(path, 0644);
    ck_assert_int_eq(h_spawn(&p, "pseudonym", "svc/pseudonym", e), -1);
    ck_assert(h_log_contains(&p, "readable or writable by group or others (mode 0644)"));
    free(empty);
}
END_TEST

/* issue 18 item 6: a service never dumps core (it holds keys and, elsewhere, personal data) */
START_TEST(test_no_core_dumps)
{
    start();
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/limits", (int)svc.pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Max core file size", 18) == 0) {
            unsigned long long soft = 1, hard = 1;
            ck_assert_int_eq(sscanf(line + 18, " %llu %llu", &soft, &hard), 2);
            ck_assert_uint_eq(soft, 0);
            ck_assert_uint_eq(hard, 0); /* and it cannot be raised again */
            found = 1;
        }
    fclose(f);
    ck_assert(found);
    stop();
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_known_answer,
                                  test_no_core_dumps,
                                  test_derive_properties,
                                  test_bad_input,
                                  test_only_the_gateway,
                                  test_batch_matches_single,
                                  test_refuses_to_start_without_keys,
                                  test_new_key_file_loaded_without_restart,
                                  test_call_local_answers_as_the_server,
                                  NULL};
    const h_case cases[] = {{"pseudonym", 60, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("pseudonym", cases));
}
