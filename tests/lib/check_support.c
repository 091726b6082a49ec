/*
 * check_support.c - libveil's small parts: key files and keyrings, signers,
 * codecs and byte readers, UTF-8 checks, configuration and JSON logs, and
 * the helper threads a batch's items are spread over (veil/parallel.h).
 */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sodium.h>

#include "harness.h"
#include "veil/codec.h"
#include "veil/config.h"
#include "veil/gateway.pb-c.h"
#include "veil/keys.h"
#include "veil/log.h"
#include "veil/parallel.h"
#include "veil/rpc.h"

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    chmod(path, mode);
}

START_TEST(test_key_files)
{
    char *dir = h_tempdir("keys");
    char path[1024], err[512];
    veil_key *k;

    snprintf(path, sizeof path, "%s/good.key", dir);
    /* 32 bytes 0x01..0x20 in base64, with surrounding whitespace */
    write_file(path, "  AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n", 0600);
    ck_assert_int_eq(veil_key_load(path, 3, &k, err, sizeof err), VEIL_OK);
    ck_assert_uint_eq(k->version, 3);
    ck_assert_int_eq(k->bytes[0], 1);
    ck_assert_int_eq(k->bytes[31], 32);
    veil_key_free(k);

    snprintf(path, sizeof path, "%s/missing.key", dir);
    ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_ERR_NOT_FOUND);
    ck_assert_ptr_null(k);
    ck_assert_ptr_nonnull(strstr(err, "missing.key: does not exist"));

    snprintf(path, sizeof path, "%s/short.key", dir);
    write_file(path, "AQIDBAUGBwgJCgsMDQ4PEA==\n", 0600);
    ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "holds 16 bytes, a key is 32"));

    snprintf(path, sizeof path, "%s/junk.key", dir);
    write_file(path, "this is not base64 at all!\n", 0600);
    ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "not valid base64"));
    /* the message never quotes the file's contents */
    ck_assert_ptr_null(strstr(err, "this is not"));

    snprintf(path, sizeof path, "%s/open.key", dir);
    write_file(path, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n", 0644);
    ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "mode 0644"));

    /* issue 18 item 6: a Kubernetes Secret's links (key -> ..data/key, ..data -> ..dated) load;
     * a link out of the key's folder never does, nor a link inside the folder to one outside */
    char sub[1100], target[1200], link[1200];
    snprintf(sub, sizeof sub, "%s/..2026_12_04", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    snprintf(target, sizeof target, "%s/secret.key", sub);
    write_file(target, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n", 0600);
    snprintf(link, sizeof link, "%s/..data", dir);
    ck_assert_int_eq(symlink("..2026_12_04", link), 0);
    snprintf(path, sizeof path, "%s/secret.key", dir);
    ck_assert_int_eq(symlink("..data/secret.key", path), 0);
    ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_OK);
    ck_assert_int_eq(k->bytes[0], 1);
    veil_key_free(k);
    char *outside = h_tempdir("keys-outside");
    snprintf(target, sizeof target, "%s/stolen.key", outside);
    write_file(target, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n", 0600);
    snprintf(path, sizeof path, "%s/escape.key", dir);
    ck_assert_int_eq(symlink(target, path), 0);
    ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_null(k);
    ck_assert_ptr_nonnull(strstr(err, "leads out of its folder"));
    snprintf(link, sizeof link, "%s/..other", dir);
    ck_assert_int_eq(symlink(outside, link), 0);
    snprintf(path, sizeof path, "%s/via.key", dir);
    ck_assert_int_eq(symlink("..other/stolen.key", path), 0);
    ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "leads out of its folder"));
    free(outside);

    snprintf(path, sizeof path, "%s/unreadable.key", dir);
    write_file(path, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n", 0000);
    if (geteuid() != 0) { /* root reads anything */
        ck_assert_int_eq(veil_key_load(path, 1, &k, err, sizeof err), VEIL_ERR_NOT_FOUND);
        ck_assert_ptr_nonnull(strstr(err, "cannot be opened"));
    }
    free(dir);
}
END_TEST

START_TEST(test_keyring)
{
    char *dir = h_tempdir("ring");
    char err[512];
    veil_keyring *ring;
    ck_assert_int_eq(veil_keyring_load(dir, "master", &ring, err, sizeof err), VEIL_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(err, "expected a file master-1.key"));
    h_keyfile(dir, "master", 1);
    h_keyfile(dir, "master", 2);
    h_keyfile(dir, "other", 9);
    ck_assert_int_eq(veil_keyring_load(dir, "master", &ring, err, sizeof err), VEIL_OK);
    ck_assert_uint_eq(veil_keyring_latest(ring), 2);
    ck_assert_ptr_nonnull(veil_keyring_get(ring, 1));
    ck_assert_ptr_null(veil_keyring_get(ring, 9));
    const veil_key *k1 = veil_keyring_get(ring, 1);
    h_keyfile(dir, "master", 3);
    ck_assert_int_eq(veil_keyring_refresh(ring, err, sizeof err), VEIL_OK);
    ck_assert_uint_eq(veil_keyring_latest(ring), 3);
    ck_assert_ptr_eq(veil_keyring_get(ring, 1), k1); /* existing keys stay put */
    uint32_t v[8];
    ck_assert_uint_eq(veil_keyring_versions(ring, v, 8), 3);
    ck_assert_uint_eq(v[0], 1);
    ck_assert_uint_eq(v[2], 3);
    /* issue 18 item 6: a key whose file left the folder is dropped (rings no longer only grow):
     * not handed out from the next refresh on, its bytes wiped one refresh later */
    char path[1100];
    snprintf(path, sizeof path, "%s/master-1.key", dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(veil_keyring_refresh(ring, err, sizeof err), VEIL_OK);
    ck_assert_ptr_null(veil_keyring_get(ring, 1));
    ck_assert_ptr_nonnull(veil_keyring_get(ring, 2));
    ck_assert_uint_eq(veil_keyring_versions(ring, v, 8), 2);
    ck_assert_uint_eq(v[0], 2);
    ck_assert_uint_eq(veil_keyring_latest(ring), 3);
    unsigned char zero[VEIL_KEY_BYTES] = {0};
    ck_assert(memcmp(k1->bytes, zero, sizeof zero) != 0); /* a call may still be using it */
    ck_assert_int_eq(veil_keyring_refresh(ring, err, sizeof err), VEIL_OK);
    sodium_mprotect_readonly(k1->bytes); /* the ring made it inaccessible; look once */
    ck_assert_mem_eq(k1->bytes, zero, sizeof zero);
    /* a file put back after the wipe is loaded again, as a new key */
    h_keyfile(dir, "master", 1);
    ck_assert_int_eq(veil_keyring_refresh(ring, err, sizeof err), VEIL_OK);
    ck_assert_ptr_nonnull(veil_keyring_get(ring, 1));
    ck_assert_ptr_ne(veil_keyring_get(ring, 1), k1);
    /* the newest retired too: the latest falls back */
    snprintf(path, sizeof path, "%s/master-3.key", dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(veil_keyring_refresh(ring, err, sizeof err), VEIL_OK);
    ck_assert_uint_eq(veil_keyring_latest(ring), 2);
    veil_keyring_free(ring);
    free(dir);
}
END_TEST

START_TEST(test_signer)
{
    char *dir = h_tempdir("sig");
    char err[512];
    veil_keyring *ring;
    h_keyfile(dir, "signing", 4);
    ck_assert_int_eq(veil_keyring_load(dir, "signing", &ring, err, sizeof err), VEIL_OK);
    veil_signer *s;
    ck_assert_int_eq(veil_signer_new(veil_keyring_get(ring, 4), "gw", &s), VEIL_OK);
    ck_assert_str_eq(s->kid, "gw-4");
    unsigned char sig[64];
    veil_signer_sign(s, sig, "message", 7);
    ck_assert_int_eq(crypto_sign_verify_detached(sig, (const unsigned char *)"message", 7, s->pk),
                     0);
    sig[0] ^= 1;
    ck_assert_int_ne(crypto_sign_verify_detached(sig, (const unsigned char *)"message", 7, s->pk),
                     0);
    veil_signer_free(s);
    veil_keyring_free(ring);
    free(dir);
}
END_TEST

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void *other_thread_take(void *arg)
{
    (void)arg;
    void *p = veil_guarded_take(64);
    veil_guarded_give(p);
    return p; /* that thread's area: freed when it exits, only compared */
}

/* One guarded area per thread, reused, zero on every take, wiped on every give. */
START_TEST(test_guarded_scratch)
{
    ck_assert_int_ge(sodium_init(), 0);
    unsigned char *a = veil_guarded_take(700);
    ck_assert_ptr_nonnull(a);
    ck_assert(all_zero(a, 700));
    memset(a, 0xa5, 700);
    /* taken while in use: another area, not an alias of the first */
    unsigned char *b = veil_guarded_take(700);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    ck_assert(all_zero(b, 700));
    memset(b, 0x5a, 700);
    veil_guarded_give(b);
    veil_guarded_give(a);
    ck_assert(all_zero(a, 700)); /* the thread's area stays mapped: wiped, not unmapped */
    /* the same area again: no new mapping per call */
    unsigned char *c = veil_guarded_take(VEIL_GUARDED_SCRATCH);
    ck_assert_ptr_eq(c, a);
    ck_assert(all_zero(c, VEIL_GUARDED_SCRATCH));
    veil_guarded_give(c);
    /* larger than the area: a fresh guarded allocation, still zeroed */
    unsigned char *big = veil_guarded_take(VEIL_GUARDED_SCRATCH + 1);
    ck_assert_ptr_nonnull(big);
    ck_assert_ptr_ne(big, a);
    ck_assert(all_zero(big, VEIL_GUARDED_SCRATCH + 1));
    veil_guarded_give(big);
    veil_guarded_give(NULL);
    /* another thread has an area of its own */
    pthread_t t;
    void *theirs;
    ck_assert_int_eq(pthread_create(&t, NULL, other_thread_take, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &theirs), 0);
    ck_assert_ptr_ne(theirs, a);
}
END_TEST

START_TEST(test_codecs)
{
    const unsigned char bin[] = {0xfb, 0xff, 0x00, 0x10, 0x7e};
    char text[64];
    unsigned char back[16];
    size_t n;
    ck_assert_ptr_nonnull(veil_b64url_encode(text, sizeof text, bin, sizeof bin));
    ck_assert_str_eq(text, "-_8AEH4");
    ck_assert_int_eq(veil_b64url_decode(back, sizeof back, text, strlen(text), &n), 0);
    ck_assert_uint_eq(n, sizeof bin);
    ck_assert_mem_eq(back, bin, n);
    ck_assert_int_eq(veil_b64url_decode(back, sizeof back, "-_8AEH4=", 8, &n), -1); /* padding */
    ck_assert_int_eq(veil_b64url_decode(back, sizeof back, "+/8A", 4, &n), -1); /* std alphabet */
    ck_assert_int_eq(veil_b64url_decode(back, 2, text, strlen(text), &n), -1);  /* overflow */
    /* libsodium 1.0.18 would decode bytes >= 0x80 as symbols: "-_8AEH4" had other spellings */
    ck_assert_int_eq(veil_b64url_decode(back, sizeof back, "-\2408AEH4", 7, &n), -1);
    ck_assert_int_eq(veil_b64url_decode(back, sizeof back, "\xff\xff\xff\xff", 4, &n), -1);
    ck_assert_int_eq(veil_b64_decode(back, sizeof back, "+/8AEH4=", 8, &n), 0);
    ck_assert_int_eq(veil_b64_decode(back, sizeof back, "+\2008AEH4=", 8, &n), -1);
    /* whitespace is skipped, NUL bytes (which libsodium would skip too) are refused */
    ck_assert_int_eq(veil_b64_decode(back, sizeof back, "+/8A\nEH4=\n ", 11, &n), 0);
    ck_assert_int_eq(veil_b64_decode(back, sizeof back, "+/8AEH4=\0", 9, &n), -1);
    ck_assert_int_eq(veil_b64_decode(back, sizeof back, "+/8A\0EH4=", 9, &n), -1);
    ck_assert_int_eq(veil_b64url_decode(back, sizeof back, "-_8A\0EH4", 8, &n), -1);
    ck_assert_ptr_null(veil_b64url_encode(text, 3, bin, sizeof bin));
    ck_assert_str_eq(veil_hex_encode(text, sizeof text, bin, 2), "fbff");

    veil_buf b = {0};
    veil_buf_put_u8(&b, 7);
    veil_buf_put_u16(&b, 0x1234);
    veil_buf_put_u32(&b, 0xdeadbeef);
    veil_buf_put_i64(&b, -2);
    veil_buf_put_str(&b, "app");
    ck_assert(!b.failed);
    veil_reader r = {b.data, b.len, 0};
    ck_assert_uint_eq(veil_read_u8(&r), 7);
    ck_assert_uint_eq(veil_read_u16(&r), 0x1234);
    ck_assert_uint_eq(veil_read_u32(&r), 0xdeadbeef);
    ck_assert_int_eq(veil_read_i64(&r), -2);
    size_t len;
    const unsigned char *s = veil_read_lp(&r, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(s, "app", 3);
    ck_assert(!r.bad && r.left == 0);
    ck_assert_uint_eq(veil_read_u8(&r), 0); /* past the end */
    ck_assert(r.bad);
    /* a length prefix that promises more than there is */
    const unsigned char lie[] = {0x00, 0x09, 'a', 'b'};
    veil_reader r2 = {lie, sizeof lie, 0};
    ck_assert_ptr_null(veil_read_lp(&r2, &len));
    ck_assert(r2.bad);
    veil_buf_free(&b);
}
END_TEST

START_TEST(test_utf8)
{
    ck_assert(veil_utf8_printable("王小明", strlen("王小明")));
    ck_assert(veil_utf8_printable("Zhang San", 9));
    ck_assert(veil_utf8_printable("𠀋", strlen("𠀋"))); /* a 4-byte CJK extension character */
    ck_assert(!veil_utf8_printable("\xff\xfe", 2));
    ck_assert(!veil_utf8_printable("\xc0\xaf", 2));     /* overlong '/' */
    ck_assert(!veil_utf8_printable("\xed\xa0\x80", 3)); /* a surrogate */
    ck_assert(!veil_utf8_printable("a\nb", 3));         /* control character */
    ck_assert(!veil_utf8_printable("a\0b", 3));
    ck_assert(!veil_utf8_printable("\xe4\xb8", 2)); /* truncated */
    ck_assert(!veil_utf8_printable("\xc2\x85", 2)); /* C1 control */
}
END_TEST

/* veil_utf8_valid: what every string crossing an API must be (control characters are the handlers'). */
START_TEST(test_utf8_valid)
{
    ck_assert(veil_utf8_valid("王小明", strlen("王小明")));
    ck_assert(veil_utf8_valid("𠀋", strlen("𠀋")));
    ck_assert(veil_utf8_valid("a\nb\x7f", 4)); /* controls pass here */
    ck_assert(veil_utf8_valid("", 0));
    ck_assert(!veil_utf8_valid("probe.update\0junk", 17));
    ck_assert(!veil_utf8_valid("\xff", 1));
    ck_assert(!veil_utf8_valid("\x80", 1));             /* a lone continuation byte */
    ck_assert(!veil_utf8_valid("\xc0\x80", 2));         /* overlong NUL */
    ck_assert(!veil_utf8_valid("\xe0\x80\xaf", 3));     /* overlong '/' in three bytes */
    ck_assert(!veil_utf8_valid("\xf0\x80\x80\xaf", 4)); /* and in four */
    ck_assert(!veil_utf8_valid("\xed\xa0\x80", 3));     /* high surrogate */
    ck_assert(!veil_utf8_valid("\xed\xbf\xbf", 3));     /* low surrogate */
    ck_assert(!veil_utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    ck_assert(!veil_utf8_valid("\xf8\x88\x80\x80\x80", 5));
    ck_assert(!veil_utf8_valid("\xe4\xb8", 2)); /* truncated */
}
END_TEST

/* Packs m and turns every '#' into a NUL (protobuf-c packs strings by strlen). */
static unsigned char *pack_nul(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    unsigned char *b = malloc(*len);
    protobuf_c_message_pack(m, b);
    for (size_t i = 0; i < *len; i++)
        if (b[i] == '#')
            b[i] = 0;
    return b;
}

/* veil_pb_strings_valid walks the wire bytes: top-level, repeated and nested strings. */
START_TEST(test_pb_strings)
{
    Veil__Gateway__App app = VEIL__GATEWAY__APP__INIT, *apps[] = {&app};
    char *attrs[] = {"age_over_18", "province"};
    app.app_id = "probe.update";
    app.name = "王小明";
    app.attributes = attrs;
    app.n_attributes = 2;
    Veil__Gateway__ListAppsResponse l = VEIL__GATEWAY__LIST_APPS_RESPONSE__INIT;
    l.apps = apps;
    l.n_apps = 1;
    size_t len;
    const char *field = "unset";
    unsigned char *b = pack_nul(&l.base, &len);
    ck_assert(veil_pb_strings_valid(&veil__gateway__list_apps_response__descriptor, b, len, &field));
    ck_assert_ptr_null(field);
    free(b);
    static const struct {
        const char *app_id, *attr, *field;
    } bad[] = {
        {"probe.update#junk", "province", "app_id"},
        {"probe.update", "prov#ince", "attributes"},
        {"probe.\xc0\xaeupdate", "province", "app_id"},
        {"probe.update", "\xed\xa0\x80", "attributes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        app.app_id = (char *)bad[i].app_id;
        attrs[1] = (char *)bad[i].attr;
        b = pack_nul(&l.base, &len);
        ck_assert(!veil_pb_strings_valid(&veil__gateway__list_apps_response__descriptor, b, len,
                                         &field));
        ck_assert_str_eq(field, bad[i].field);
        /* the bare App too */
        free(b);
        b = pack_nul(&app.base, &len);
        ck_assert(!veil_pb_strings_valid(&veil__gateway__app__descriptor, b, len, &field));
        ck_assert_str_eq(field, bad[i].field);
        free(b);
    }
    /* bytes fields may hold anything; malformed wire data is refused without a field */
    Veil__Gateway__SignedRequest sr = VEIL__GATEWAY__SIGNED_REQUEST__INIT;
    unsigned char raw[] = {0, 0xff, 0xc0, 0xae};
    sr.payload.data = raw;
    sr.payload.len = sizeof raw;
    len = protobuf_c_message_get_packed_size(&sr.base);
    b = malloc(len);
    protobuf_c_message_pack(&sr.base, b);
    ck_assert(veil_pb_strings_valid(&veil__gateway__signed_request__descriptor, b, len, &field));
    ck_assert(!veil_pb_strings_valid(&veil__gateway__signed_request__descriptor, b, len - 1,
                                     &field));
    ck_assert_ptr_null(field);
    free(b);
}
END_TEST

START_TEST(test_config)
{
    char *s = NULL, *addr = NULL, *file = NULL;
    int64_t n = 0;
    int flag = 0;
    char err[512];
    veil_config_var vars[] = {
        {"T_STR", VEIL_CFG_STRING, "dflt", 0, &s, 0, 0, "a string"},
        {"T_INT", VEIL_CFG_INT, "5", 0, &n, 1, 10, "a number"},
        {"T_BOOL", VEIL_CFG_BOOL, "no", 0, &flag, 0, 0, "a flag"},
        {"T_ADDR", VEIL_CFG_ADDR, NULL, 1, &addr, 0, 0, "an address"},
        {"T_FILE", VEIL_CFG_FILE, "/etc/hostname", 0, &file, 0, 0, "a file"},
    };
    size_t nv = sizeof vars / sizeof vars[0];
    unsetenv("T_ADDR");
    ck_assert_int_eq(veil_config_load(vars, nv, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_str_eq(err, "T_ADDR: must be set (an address)");
    setenv("T_ADDR", "localhost:7000", 1);
    setenv("T_INT", "11", 1);
    ck_assert_int_eq(veil_config_load(vars, nv, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_str_eq(err, "T_INT: must be an integer from 1 to 10 (a number)");
    setenv("T_INT", "7", 1);
    setenv("T_BOOL", "maybe", 1);
    ck_assert_int_eq(veil_config_load(vars, nv, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "T_BOOL: must be true or false"));
    setenv("T_BOOL", "on", 1);
    setenv("T_ADDR", "nocolon", 1);
    ck_assert_int_eq(veil_config_load(vars, nv, err, sizeof err), VEIL_ERR_INVALID);
    setenv("T_ADDR", "localhost:7000", 1);
    setenv("T_FILE", "/nonexistent", 1);
    ck_assert_int_eq(veil_config_load(vars, nv, err, sizeof err), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "T_FILE: must name an existing file"));
    unsetenv("T_FILE");
    ck_assert_int_eq(veil_config_load(vars, nv, err, sizeof err), VEIL_OK);
    ck_assert_str_eq(s, "dflt");
    ck_assert_int_eq(n, 7);
    ck_assert_int_eq(flag, 1);
    ck_assert_str_eq(addr, "localhost:7000");
    veil_config_free(vars, nv);
    ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_log_lines_are_json)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        veil_log_init("unit", VEIL_LOG_INFO);
        veil_log(VEIL_LOG_DEBUG, "hidden", VL_END);
        veil_log(VEIL_LOG_WARN, "quote \" backslash \\ newline \n tab \t ctl \x01",
                 VL_STR("k", "v\"w"), VL_INT("n", -5), VL_BOOL("b", 1), VL_DBL("d", 1.5), VL_END);
        _exit(0);
    }
    close(fds[1]);
    char buf[4096] = {0};
    ssize_t got = 0, r;
    while ((r = read(fds[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0)
        got += r;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    ck_assert_ptr_null(strstr(buf, "hidden"));
    ck_assert_int_eq(buf[got - 1], '\n');
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(j, "svc")), "unit");
    ck_assert_str_eq(json_string_value(json_object_get(j, "k")), "v\"w");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "n")), -5);
    ck_assert(json_is_true(json_object_get(j, "b")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "msg")),
                     "quote \" backslash \\ newline \n tab \t ctl \x01");
    json_decref(j);
}
END_TEST

/* Runs fn in a child whose stderr is captured; returns what it wrote (caller frees). */
static char *capture_stderr(void (*fn)(void))
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t cap = 1 << 16, got = 0;
    char *buf = calloc(1, cap);
    ssize_t r;
    while ((r = read(fds[0], buf + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return buf;
}

static void log_hostile_values(void)
{
    static char big[10000];
    memset(big, 'x', sizeof big - 1);
    memcpy(big + 2040, "\xc3\xa9\xc3\xa9", 4); /* multibyte characters at the cut */
    veil_log_init("unit", VEIL_LOG_INFO);
    veil_log(VEIL_LOG_INFO, "long", VL_STR("big", big), VL_STR("after", "kept"), VL_END);
    veil_log(VEIL_LOG_INFO, "bad \xff utf-8",
             VL_STR("v", "a\xc3(b\xed\xa0\x80"
                         "c\xc0\xaf"
                         "d\xf0\x9f\x98\x80"),
             VL_END);
}

/* Issue 16 item 8: a line over 4,096 bytes stays valid JSON; invalid UTF-8 is replaced. */
START_TEST(test_log_long_and_invalid_utf8)
{
    char *out = capture_stderr(log_hostile_values);
    char *nl = strchr(out, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    ck_assert_uint_gt(strlen(out), 2048);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    ck_assert_msg(j != NULL, "first line is not JSON: %s", je.text);
    const char *big = json_string_value(json_object_get(j, "big"));
    ck_assert_ptr_nonnull(big);
    ck_assert_uint_le(strlen(big), VEIL_LOG_VALUE_MAX + 3);
    ck_assert_ptr_nonnull(strstr(big, "\xe2\x80\xa6")); /* the ellipsis marks the cut */
    ck_assert_str_eq(json_string_value(json_object_get(j, "after")), "kept");
    ck_assert(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);

    char *second = nl + 1;
    char *nl2 = strchr(second, '\n');
    ck_assert_ptr_nonnull(nl2);
    *nl2 = '\0';
    j = json_loads(second, 0, &je);
    ck_assert_msg(j != NULL, "second line is not JSON: %s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(j, "msg")), "bad \xef\xbf\xbd utf-8");
    /* truncated sequence, surrogate (3 bytes), overlong (2 bytes): one U+FFFD per bad byte */
    ck_assert_str_eq(json_string_value(json_object_get(j, "v")),
                     "a\xef\xbf\xbd(b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                     "c\xef\xbf\xbd\xef\xbf\xbd"
                     "d\xf0\x9f\x98\x80");
    ck_assert_ptr_null(json_object_get(j, "truncated"));
    json_decref(j);
    free(out);
}
END_TEST

/* ---- veil/parallel.h ---- */

struct spread_count {
    size_t n;
    _Atomic int *runs;
};

static void count_item(void *arg, size_t i)
{
    struct spread_count *c = arg;
    ck_assert_uint_lt(i, c->n);
    atomic_fetch_add(&c->runs[i], 1);
}

/* Several callers at once, batches of every size: each item runs exactly once. */
struct caller {
    veil_helpers *h;
    int bad;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    _Atomic int runs[97];
    for (size_t n = 0; n <= 97; n++)
        for (int round = 0; round < 20; round++) {
            for (size_t i = 0; i < 97; i++)
                atomic_init(&runs[i], 0);
            struct spread_count sc = {n, runs};
            veil_helpers_for(c->h, n, count_item, &sc);
            for (size_t i = 0; i < n; i++)
                if (atomic_load(&runs[i]) != 1)
                    c->bad++;
        }
    return NULL;
}

START_TEST(test_helpers_each_item_once)
{
    for (unsigned threads = 0; threads <= 3; threads++) {
        veil_helpers *h;
        ck_assert_int_eq(veil_helpers_new(threads, &h), VEIL_OK);
        struct caller callers[4];
        pthread_t t[4];
        for (int k = 0; k < 4; k++) {
            callers[k] = (struct caller){h, 0};
            ck_assert_int_eq(pthread_create(&t[k], NULL, caller_main, &callers[k]), 0);
        }
        for (int k = 0; k < 4; k++) {
            pthread_join(t[k], NULL);
            ck_assert_msg(callers[k].bad == 0, "%u helpers: %d items did not run exactly once",
                          threads, callers[k].bad);
        }
        veil_helpers_free(h);
    }
    /* no pool at all: the caller runs everything */
    _Atomic int runs[3] = {0, 0, 0};
    struct spread_count sc = {3, runs};
    veil_helpers_for(NULL, 3, count_item, &sc);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(atomic_load(&runs[i]), 1);
}
END_TEST

/*
 * With a helper, two items of one batch run at the same time: each of the
 * first two waits (up to 10 s) until the other has started, which a caller
 * alone could never see.
 */
static _Atomic int started;

static void meet(void *arg, size_t i)
{
    (void)arg;
    if (i > 1)
        return;
    atomic_fetch_add(&started, 1);
    for (int waited = 0; atomic_load(&started) < 2 && waited < 10000; waited++)
        usleep(1000);
}

START_TEST(test_helpers_run_items_side_by_side)
{
    veil_helpers *h;
    ck_assert_int_eq(veil_helpers_new(1, &h), VEIL_OK);
    atomic_store(&started, 0);
    veil_helpers_for(h, 2, meet, NULL);
    ck_assert_msg(atomic_load(&started) == 2, "the second item never ran");
    veil_helpers_free(h);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_key_files,
                                  test_keyring,
                                  test_signer,
                                  test_guarded_scratch,
                                  test_codecs,
                                  test_utf8,
                                  test_utf8_valid,
                                  test_pb_strings,
                                  test_config,
                                  test_log_lines_are_json,
                                  test_log_long_and_invalid_utf8,
                                  test_helpers_each_item_once,
                                  test_helpers_run_items_side_by_side,
                                  NULL};
    const h_case cases[] = {{"support", 0, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("support", cases));
}
