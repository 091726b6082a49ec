/*
 * veil/log.h - structured JSON logs on stderr, one object per line.
 *
 *   veil_log(VEIL_LOG_INFO, "call finished",
 *            VL_STR("method", path), VL_INT("ms", ms), VL_END);
 *
 * Fields are typed and the line is serialised by jansson, so the output is
 * always one valid JSON object whatever the values hold: bytes that are not
 * UTF-8 become U+FFFD and a string value longer than VEIL_LOG_VALUE_MAX
 * bytes is cut at a character boundary, ends in "\u2026" and the line carries
 * "truncated":true.
 *
 * Nothing secret or personal may be logged: key material, ID numbers, names,
 * tickets and signatures stay out, subject references included (they would
 * let a log reader correlate one citizen's activity).
 */
#ifndef VEIL_LOG_H
#define VEIL_LOG_H

#include <stdint.h>

typedef enum veil_log_level {
    VEIL_LOG_DEBUG = 0,
    VEIL_LOG_INFO,
    VEIL_LOG_WARN,
    VEIL_LOG_ERROR,
} veil_log_level;

/* The longest string value written whole, in bytes (longer ones are cut). */
#define VEIL_LOG_VALUE_MAX 2048

enum veil_log_field_type { VEIL_LF_END = 0, VEIL_LF_STR, VEIL_LF_INT, VEIL_LF_DBL, VEIL_LF_BOOL };

#define VL_STR(k, v)  VEIL_LF_STR, (const char *)(k), (const char *)(v)
#define VL_INT(k, v)  VEIL_LF_INT, (const char *)(k), (long long)(v)
#define VL_DBL(k, v)  VEIL_LF_DBL, (const char *)(k), (double)(v)
#define VL_BOOL(k, v) VEIL_LF_BOOL, (const char *)(k), (int)(!!(v))
#define VL_END        VEIL_LF_END

/* Names the process in every line ("vault"); the string must outlive logging. */
void veil_log_init(const char *service, veil_log_level min_level);

/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int veil_log_level_parse(const char *s);

/* Writes one JSON line; fields are (type, key, value) triples ending in VL_END. */
void veil_log(veil_log_level level, const char *msg, ...);

/* Whether a level would be written (to skip building costly fields). */
int veil_log_enabled(veil_log_level level);

#endif
