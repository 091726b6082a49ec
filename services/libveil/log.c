/*
 * log.c - JSON lines on stderr.  Each line is built in a local buffer and
 * written with one write(2), so lines from different threads never mix.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "veil/log.h"

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

struct line {
    char buf[4096];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 2 - l->len)
        n = sizeof(l->buf) - 2 - l->len; /* keep room for "}\n" */
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_raw(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Appends s as a JSON string, escaping what JSON requires. */
static void put_json_string(struct line *l, const char *s)
{
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': put(l, "\\\"", 2); break;
        case '\\': put(l, "\\\\", 2); break;
        case '\n': put(l, "\\n", 2); break;
        case '\r': put(l, "\\r", 2); break;
        case '\t': put(l, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                puts_raw(l, esc);
            } else {
                put(l, (const char *)p, 1);
            }
        }
    }
    put(l, "\"", 1);
}

void veil_log(veil_log_level level, const char *msg, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < log_min)
        return;

    struct line l = {.len = 0};
    struct timespec ts;
    struct tm tm;
    char stamp[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    puts_raw(&l, "{\"ts\":\"");
    puts_raw(&l, stamp);
    puts_raw(&l, "\",\"level\":\"");
    puts_raw(&l, names[level]);
    puts_raw(&l, "\",\"svc\":");
    put_json_string(&l, log_service);
    puts_raw(&l, ",\"msg\":");
    put_json_string(&l, msg);

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        int type = va_arg(ap, int);
        if (type == VEIL_LF_END)
            break;
        const char *key = va_arg(ap, const char *);
        char num[64];
        put(&l, ",", 1);
        put_json_string(&l, key);
        put(&l, ":", 1);
        switch (type) {
        case VEIL_LF_STR:
            put_json_string(&l, va_arg(ap, const char *));
            break;
        case VEIL_LF_INT:
            snprintf(num, sizeof num, "%lld", va_arg(ap, long long));
            puts_raw(&l, num);
            break;
        case VEIL_LF_DBL:
            snprintf(num, sizeof num, "%.3f", va_arg(ap, double));
            puts_raw(&l, num);
            break;
        case VEIL_LF_BOOL:
            puts_raw(&l, va_arg(ap, int) ? "true" : "false");
            break;
        default:
            /* A malformed field list: stop rather than read garbage. */
            goto done;
        }
    }
done:
    va_end(ap);
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    ssize_t off = 0;
    while (off < (ssize_t)l.len) {
        ssize_t w = write(STDERR_FILENO, l.buf + off, l.len - off);
        if (w <= 0)
            break;
        off += w;
    }
}
