/* output.c - JSON for scripts, aligned tables for people (veilctl.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "veilctl.h"

void vc_print_json(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(j);
}

const char *vc_time(long long ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

void vc_table_init(vc_table *t, size_t cols, ...)
{
    va_list ap;
    t->cols = cols;
    t->rows = 0;
    t->cells = NULL;
    va_start(ap, cols);
    char *row[16];
    for (size_t i = 0; i < cols && i < 16; i++)
        row[i] = va_arg(ap, char *);
    va_end(ap);
    t->cells = calloc(cols, sizeof *t->cells);
    for (size_t i = 0; t->cells && i < cols; i++)
        t->cells[i] = strdup(row[i]);
    t->rows = 1;
}

void vc_table_row(vc_table *t, ...)
{
    va_list ap;
    char **grown = realloc(t->cells, (t->rows + 1) * t->cols * sizeof *grown);
    if (!grown)
        return;
    t->cells = grown;
    va_start(ap, t);
    for (size_t i = 0; i < t->cols; i++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->rows * t->cols + i] = strdup(s ? s : "");
    }
    va_end(ap);
    t->rows++;
}

/* Display width of UTF-8 text: CJK characters take two columns. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        if (*p < 0x80) {
            w++, p++;
        } else if ((*p & 0xe0) == 0xc0) {
            w++, p += 2;
        } else if ((*p & 0xf0) == 0xe0) {
            w += 2, p += 3; /* the CJK blocks are all three-byte sequences */
        } else {
            w += 2, p += 4;
        }
    }
    return w;
}

void vc_table_free(vc_table *t)
{
    for (size_t i = 0; t->cells && i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
}

void vc_table_print(vc_table *t)
{
    size_t w[16] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols && c < 16; c++) {
            size_t x = width(t->cells[r * t->cols + c]);
            if (x > w[c])
                w[c] = x;
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->cols; c++) {
            const char *cell = t->cells[r * t->cols + c];
            int last = c + 1 == t->cols;
            printf("%s", cell);
            for (size_t pad = width(cell); !last && pad < w[c] + 2; pad++)
                putchar(' ');
        }
        putchar('\n');
    }
    vc_table_free(t);
}

void vc_emit(const vc_opts *o, json_t *j, vc_table *t)
{
    if (o->json) {
        vc_print_json(j);
        vc_table_free(t);
    } else {
        json_decref(j);
        vc_table_print(t);
    }
}
