/*
 * log.c - JSON lines on stderr, built with jansson.
 *
 * Each line is one JSON object serialised by jansson and written with one
 * write(2) call, so lines from different threads do not mix.  Whatever the
 * caller passes, the line is valid JSON: bytes that are not well-formed UTF-8
 * become U+FFFD, and a string longer than VEIL_LOG_VALUE_MAX bytes is cut at a
 * character boundary and marked with "…" (the line then says
 * "truncated":true), so a huge value can neither break the line nor flood
 * the log.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "veil/codec.h"
#include "veil/log.h"
#include "veil/trace.h"

static const char *log_service = "veil";
static veil_log_level log_min = VEIL_LOG_INFO;

void veil_log_init(const char *service, veil_log_level min_level)
{
    log_service = service;
    log_min = min_level;
}

int veil_log_level_parse(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

int veil_log_enabled(veil_log_level level)
{
    return level >= log_min;
}

/*
 * A jansson string of s made safe: invalid bytes replaced by U+FFFD, cut
 * after VEIL_LOG_VALUE_MAX bytes (then *cut is set).  NULL s logs as "".
 */
static json_t *safe_string(const char *s, int *cut)
{
    static const char repl[] = "\xef\xbf\xbd", ellipsis[] = "\xe2\x80\xa6";
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    /* worst case: every byte replaced by three, capped, plus the ellipsis */
    size_t cap = VEIL_LOG_VALUE_MAX + sizeof ellipsis;
    char stackbuf[512], *out = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    if (!out)
        return json_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = veil_utf8_seq(p + i, n - i);
        const char *src = len ? (const char *)p + i : repl;
        size_t sl = len ? len : 3;
        if (o + sl > VEIL_LOG_VALUE_MAX) {
            memcpy(out + o, ellipsis, 3);
            o += 3;
            *cut = 1;
            break;
        }
        memcpy(out + o, src, sl);
        o += sl;
        i += len ? len : 1;
    }
    json_t *j = json_stringn_nocheck(out, o);
    if (out != stackbuf)
        free(out);
    return j;
}

void veil_log(veil_log_level level, const char *msg, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < log_min || level < VEIL_LOG_DEBUG || level > VEIL_LOG_ERROR)
        return;

    struct timespec ts;
    struct tm tm;
    char stamp[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    int cut = 0;
    json_t *line = json_object();
    if (!line)
        return;
    json_object_set_new(line, "ts", json_string(stamp));
    json_object_set_new(line, "level", json_string(names[level]));
    json_object_set_new(line, "svc", safe_string(log_service, &cut));
    json_object_set_new(line, "msg", safe_string(msg, &cut));
    const veil_trace *trace = veil_trace_current();
    if (trace) { /* the call this thread is working on (veil/trace.h) */
        json_object_set_new(line, "trace_id", json_string(trace->trace_id));
        json_object_set_new(line, "span_id", json_string(trace->span_id));
    }

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        int type = va_arg(ap, int);
        if (type == VEIL_LF_END)
            break;
        const char *key = va_arg(ap, const char *);
        json_t *v;
        switch (type) {
        case VEIL_LF_STR:
            v = safe_string(va_arg(ap, const char *), &cut);
            break;
        case VEIL_LF_INT:
            v = json_integer(va_arg(ap, long long));
            break;
        case VEIL_LF_DBL:
            v = json_real(va_arg(ap, double));
            break;
        case VEIL_LF_BOOL:
            v = json_boolean(va_arg(ap, int));
            break;
        default:
            /* A malformed field list: stop rather than read garbage. */
            goto done;
        }
        /* Keys are the caller's literals; still made safe, never trusted. */
        json_t *k = safe_string(key, &cut);
        json_object_set_new_nocheck(line, json_string_value(k), v);
        json_decref(k);
    }
done:
    va_end(ap);
    if (cut)
        json_object_set_new(line, "truncated", json_true());

    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(line);
    if (!text)
        return;
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: the line is written by length */
    size_t off = 0;
    while (off < len + 1) {
        ssize_t w = write(STDERR_FILENO, text + off, len + 1 - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(text);
}
