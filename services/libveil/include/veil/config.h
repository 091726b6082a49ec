/*
 * veil/config.h - configuration from environment variables (12-factor).
 *
 * A service declares a table of variables; veil_config_load() reads and
 * validates all of them at start, and on the first bad one returns an error
 * whose message names the variable and says what was expected.  Values are
 * never secrets themselves: keys and certificates are given as file paths.
 */
#ifndef VEIL_CONFIG_H
#define VEIL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "veil/err.h"

typedef enum veil_config_type {
    VEIL_CFG_STRING,   /* char *, a copy owned by the caller's struct (free with veil_config_free) */
    VEIL_CFG_INT,      /* int64_t, within [min, max] */
    VEIL_CFG_BOOL,     /* int: 1/0, true/false, yes/no, on/off */
    VEIL_CFG_FILE,     /* char *, a path to a readable regular file */
    VEIL_CFG_DIR,      /* char *, a path to a directory */
    VEIL_CFG_ADDR,     /* char *, host:port (port may be 0 in tests) */
} veil_config_type;

typedef struct veil_config_var {
    const char *name;         /* e.g. "VEIL_LISTEN_ADDR" */
    veil_config_type type;
    const char *def;          /* default as text, or NULL */
    int required;             /* no default and must be set */
    void *target;             /* char ** / int64_t * / int * by type */
    int64_t min, max;         /* VEIL_CFG_INT bounds */
    const char *help;         /* one line, shown with --help and in errors */
} veil_config_var;

/*
 * Reads every variable of the table into its target.  On error returns
 * VEIL_ERR_INVALID with a message naming the variable in errbuf.
 */
veil_err veil_config_load(const veil_config_var *vars, size_t n, char *errbuf,
                          size_t errlen) VEIL_WUR;

/* Frees the strings veil_config_load stored in the table's targets. */
void veil_config_free(const veil_config_var *vars, size_t n);

/* Prints a title and the table (name, help, default) for --help. */
void veil_config_usage(const char *title, const veil_config_var *vars, size_t n);

#endif
