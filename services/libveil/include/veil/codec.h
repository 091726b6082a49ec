/*
 * veil/codec.h - base64url (no padding), standard base64 and hex, all over
 * libsodium's constant-time codecs, plus a small growable byte buffer for
 * building the canonical encodings that get signed.
 */
#ifndef VEIL_CODEC_H
#define VEIL_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "veil/err.h"

/* Bytes needed to hold base64url(n bytes) plus a NUL. */
size_t veil_b64url_len(size_t n);

/* Writes base64url of bin into out (capacity outlen); returns out or NULL if too small. */
char *veil_b64url_encode(char *out, size_t outlen, const void *bin, size_t n);

/*
 * Decodes base64url (no padding, no whitespace) into out.  Returns 0 and sets
 * *n_out on success, -1 on malformed input or overflow.
 */
int veil_b64url_decode(void *out, size_t outlen, const char *s, size_t slen, size_t *n_out);

/* Decodes standard base64 (padding and whitespace allowed); as above. */
int veil_b64_decode(void *out, size_t outlen, const char *s, size_t slen, size_t *n_out);

/* Writes lowercase hex of bin (2n+1 bytes needed); returns out. */
char *veil_hex_encode(char *out, size_t outlen, const void *bin, size_t n);

/* A growable byte buffer; fields are public for reading. */
typedef struct veil_buf {
    unsigned char *data;
    size_t len, cap;
    int failed; /* an allocation failed; every later append is a no-op */
} veil_buf;

void veil_buf_put(veil_buf *b, const void *p, size_t n);
void veil_buf_put_u8(veil_buf *b, uint8_t v);
void veil_buf_put_u16(veil_buf *b, uint16_t v);      /* big-endian */
void veil_buf_put_u32(veil_buf *b, uint32_t v);      /* big-endian */
void veil_buf_put_i64(veil_buf *b, int64_t v);       /* big-endian two's complement */
/* A length-prefixed field: u16 big-endian length, then the bytes (n <= 65535). */
void veil_buf_put_lp(veil_buf *b, const void *p, size_t n);
void veil_buf_put_str(veil_buf *b, const char *s);   /* veil_buf_put_lp of strlen(s) */
/* Frees the buffer's memory, wiping it first (it may hold signed secrets). */
void veil_buf_free(veil_buf *b);
/*
 * Appends s[0..n) as a JSON string literal, quotes included, escaped as
 * jansson's json_dumps escapes (so output written with it is byte-identical
 * to jansson's): '"' and '\\' with a backslash; \b \f \n \r \t; every other
 * byte below 0x20 as \u00XX (upper-case hex); every other byte as it is -
 * '/', DEL and UTF-8 sequences unescaped.  s must be valid UTF-8
 * (veil_utf8_valid): this does not check.
 */
void veil_buf_json_str(veil_buf *b, const char *s, size_t n);

/* A cursor over bytes being parsed; any short read sets `bad`. */
typedef struct veil_reader {
    const unsigned char *p;
    size_t left;
    int bad;
} veil_reader;

uint8_t veil_read_u8(veil_reader *r);
uint16_t veil_read_u16(veil_reader *r);
uint32_t veil_read_u32(veil_reader *r);
int64_t veil_read_i64(veil_reader *r);
/* Returns a pointer to the next n bytes inside the input, or NULL (and bad). */
const unsigned char *veil_read_bytes(veil_reader *r, size_t n);
/* A u16 length-prefixed field; sets *n. */
const unsigned char *veil_read_lp(veil_reader *r, size_t *n);

/*
 * Length of the well-formed UTF-8 sequence at p (avail >= 1 bytes there), or
 * 0 when it is not one: overlong forms, surrogates and values past U+10FFFF
 * are not.
 */
size_t veil_utf8_seq(const unsigned char *p, size_t avail);

/* Whether s[0..n) is valid UTF-8 without NULs or C0 control characters. */
int veil_utf8_printable(const char *s, size_t n);
/*
 * Whether s[0..n) is well-formed UTF-8 with no NUL: no malformed or
 * truncated sequence, overlong form, surrogate or value past U+10FFFF.
 * Control characters other than NUL pass (veil_utf8_printable refuses them).
 */
int veil_utf8_valid(const char *s, size_t n);

/* Current wall-clock time in Unix milliseconds. */
int64_t veil_now_ms(void);
/* Monotonic clock in nanoseconds, for durations. */
int64_t veil_mono_ns(void);

#endif
