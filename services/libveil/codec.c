/* codec.c - encodings and byte buffers (veil/codec.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>

#include "veil/codec.h"

size_t veil_b64url_len(size_t n)
{
    return sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

char *veil_b64url_encode(char *out, size_t outlen, const void *bin, size_t n)
{
    if (outlen < veil_b64url_len(n))
        return NULL;
    return sodium_bin2base64(out, outlen, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/*
 * libsodium 1.0.18 (Debian 12) decodes any byte from 0x80 up as if it were a
 * base64 symbol, so "_" and 0xa0 spell the same bytes: a ticket, token or key
 * file would have many spellings, and garbage would decode.  With a set of
 * characters to ignore it also skips NUL bytes (strchr finds the set's own
 * terminator).  Both are refused here, before libsodium sees them.
 */
static int ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80 || s[i] == '\0')
            return 0;
    return 1;
}

int veil_b64url_decode(void *out, size_t outlen, const char *s, size_t slen, size_t *n_out)
{
    const char *end = NULL;
    if (!ascii(s, slen))
        return -1;
    if (sodium_base642bin(out, outlen, s, slen, NULL, n_out, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return -1;
    return end == s + slen ? 0 : -1;
}

int veil_b64_decode(void *out, size_t outlen, const char *s, size_t slen, size_t *n_out)
{
    const char *end = NULL;
    if (!ascii(s, slen) || sodium_base642bin(out, outlen, s, slen, " \t\r\n", n_out, &end,
                                             sodium_base64_VARIANT_ORIGINAL) != 0)
        return -1;
    /* Allow trailing whitespace only. */
    for (; end < s + slen; end++)
        if (!strchr(" \t\r\n", *end))
            return -1;
    return 0;
}

char *veil_hex_encode(char *out, size_t outlen, const void *bin, size_t n)
{
    return sodium_bin2hex(out, outlen, bin, n);
}

static int grow(veil_buf *b, size_t more)
{
    if (b->failed)
        return -1;
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 128;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *p = malloc(cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    if (b->data) {
        memcpy(p, b->data, b->len);
        sodium_memzero(b->data, b->cap);
        free(b->data);
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void veil_buf_put(veil_buf *b, const void *p, size_t n)
{
    if (n == 0 || grow(b, n) != 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void veil_buf_json_str(veil_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0; /* start of the bytes not yet appended, none of which needs escaping */
    veil_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char e[6] = {'\\', (char)c, '0', '0', hex[c >> 4], hex[c & 15]};
        size_t elen = 2;
        switch (c) {
        case '"':
        case '\\':
            break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u';
            elen = 6;
        }
        veil_buf_put(b, s + run, i - run);
        veil_buf_put(b, e, elen);
        run = i + 1;
    }
    veil_buf_put(b, s + run, n - run);
    veil_buf_put(b, "\"", 1);
}

void veil_buf_put_u8(veil_buf *b, uint8_t v)
{
    veil_buf_put(b, &v, 1);
}

void veil_buf_put_u16(veil_buf *b, uint16_t v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    veil_buf_put(b, x, 2);
}

void veil_buf_put_u32(veil_buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    veil_buf_put(b, x, 4);
}

void veil_buf_put_i64(veil_buf *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    unsigned char x[8];
    for (int i = 7; i >= 0; i--, u >>= 8)
        x[i] = (unsigned char)u;
    veil_buf_put(b, x, 8);
}

void veil_buf_put_lp(veil_buf *b, const void *p, size_t n)
{
    if (n > 0xffff) {
        b->failed = 1;
        return;
    }
    veil_buf_put_u16(b, (uint16_t)n);
    veil_buf_put(b, p, n);
}

void veil_buf_put_str(veil_buf *b, const char *s)
{
    veil_buf_put_lp(b, s, strlen(s));
}

void veil_buf_free(veil_buf *b)
{
    if (b->data) {
        sodium_memzero(b->data, b->cap);
        free(b->data);
    }
    memset(b, 0, sizeof *b);
}

const unsigned char *veil_read_bytes(veil_reader *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = 1;
        return NULL;
    }
    const unsigned char *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

uint8_t veil_read_u8(veil_reader *r)
{
    const unsigned char *p = veil_read_bytes(r, 1);
    return p ? p[0] : 0;
}

uint16_t veil_read_u16(veil_reader *r)
{
    const unsigned char *p = veil_read_bytes(r, 2);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

uint32_t veil_read_u32(veil_reader *r)
{
    const unsigned char *p = veil_read_bytes(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

int64_t veil_read_i64(veil_reader *r)
{
    const unsigned char *p = veil_read_bytes(r, 8);
    uint64_t u = 0;
    if (!p)
        return 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return (int64_t)u;
}

const unsigned char *veil_read_lp(veil_reader *r, size_t *n)
{
    *n = veil_read_u16(r);
    const unsigned char *p = veil_read_bytes(r, *n);
    if (!p)
        *n = 0;
    return p;
}

size_t veil_utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        len = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
        len = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (avail < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    /* Reject overlong forms, surrogates and values past U+10FFFF. */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return len;
}

int veil_utf8_printable(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t len = veil_utf8_seq(p, (size_t)(end - p));
        if (len == 0)
            return 0;
        if (len == 1 && (*p < 0x20 || *p == 0x7f))
            return 0;
        /* C1 controls U+0080..U+009F: 0xc2 0x80..0x9f */
        if (len == 2 && p[0] == 0xc2 && p[1] < 0xa0)
            return 0;
        p += len;
    }
    return 1;
}

int veil_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t len = veil_utf8_seq(p, (size_t)(end - p));
        if (len == 0 || *p == 0)
            return 0;
        p += len;
    }
    return 1;
}

int64_t veil_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t veil_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
