/* config.c - environment variables read and validated at start (veil/config.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "veil/config.h"

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

static int valid_addr(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon[1] == '\0')
        return 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return errno == 0 && *end == '\0' && port >= 0 && port <= 65535;
}

static veil_err fail(char *errbuf, size_t errlen, const veil_config_var *v, const char *what)
{
    snprintf(errbuf, errlen, "%s: %s (%s)", v->name, what,
             v->help ? v->help : "see docs/operations.md");
    return VEIL_ERR_INVALID;
}

veil_err veil_config_load(const veil_config_var *vars, size_t n, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const veil_config_var *v = &vars[i];
        const char *raw = getenv(v->name);
        if (raw && *raw == '\0')
            raw = NULL;
        if (!raw)
            raw = v->def;
        if (!raw) {
            if (v->required)
                return fail(errbuf, errlen, v, "must be set");
            continue;
        }
        struct stat st;
        switch (v->type) {
        case VEIL_CFG_INT: {
            char *end;
            errno = 0;
            long long x = strtoll(raw, &end, 10);
            if (errno || *end || end == raw || x < v->min || x > v->max) {
                char what[128];
                snprintf(what, sizeof what, "must be an integer from %lld to %lld",
                         (long long)v->min, (long long)v->max);
                return fail(errbuf, errlen, v, what);
            }
            *(int64_t *)v->target = x;
            continue;
        }
        case VEIL_CFG_BOOL:
            if (parse_bool(raw, (int *)v->target) != 0)
                return fail(errbuf, errlen, v, "must be true or false");
            continue;
        case VEIL_CFG_FILE:
            if (stat(raw, &st) != 0 || !S_ISREG(st.st_mode))
                return fail(errbuf, errlen, v, "must name an existing file");
            if (access(raw, R_OK) != 0)
                return fail(errbuf, errlen, v, "file is not readable");
            break;
        case VEIL_CFG_DIR:
            if (stat(raw, &st) != 0 || !S_ISDIR(st.st_mode))
                return fail(errbuf, errlen, v, "must name an existing directory");
            break;
        case VEIL_CFG_ADDR:
            if (!valid_addr(raw))
                return fail(errbuf, errlen, v, "must be host:port");
            break;
        case VEIL_CFG_STRING:
            break;
        }
        char *copy = strdup(raw);
        if (!copy)
            return VEIL_ERR_NOMEM;
        free(*(char **)v->target);
        *(char **)v->target = copy;
    }
    return VEIL_OK;
}

void veil_config_free(const veil_config_var *vars, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (vars[i].type) {
        case VEIL_CFG_STRING:
        case VEIL_CFG_FILE:
        case VEIL_CFG_DIR:
        case VEIL_CFG_ADDR:
            free(*(char **)vars[i].target);
            *(char **)vars[i].target = NULL;
            break;
        default:
            break;
        }
    }
}

void veil_config_usage(const char *title, const veil_config_var *vars, size_t n)
{
    printf("%s\n", title);
    for (size_t i = 0; i < n; i++)
        printf("  %-32s %s%s%s%s\n", vars[i].name, vars[i].help ? vars[i].help : "",
               vars[i].def ? " [default: " : "", vars[i].def ? vars[i].def : "",
               vars[i].def ? "]" : (vars[i].required ? " [required]" : ""));
}
