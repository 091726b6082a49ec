/*
 * fuzz_config - configuration loading (veil_config_load) with fuzzed
 * environment values: one variable of every type the services declare, with
 * the bounds and defaults of libveil's own table (service.c), plus the log
 * level parser.  The input is the values, separated by NUL bytes, in the
 * order of the table below.  Every value either loads or is refused with a
 * message naming its variable; strings that load are copies of the input.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "veil/config.h"
#include "veil/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    char *addr, *health, *file, *dir, *string;
    int plaintext;
    int64_t workers, max_message, drain_ms;
} cfg;

static const veil_config_var vars[] = {
    {"FZ_LISTEN_ADDR", VEIL_CFG_ADDR, NULL, 0, &cfg.addr, 0, 0, "host:port to serve gRPC on"},
    {"FZ_HEALTH_ADDR", VEIL_CFG_ADDR, NULL, 0, &cfg.health, 0, 0, "plaintext host:port"},
    {"FZ_TLS_CA", VEIL_CFG_FILE, NULL, 0, &cfg.file, 0, 0, "PEM CA bundle"},
    {"FZ_KEYS_DIR", VEIL_CFG_DIR, NULL, 0, &cfg.dir, 0, 0, "directory of key files"},
    {"FZ_DEV_PLAINTEXT", VEIL_CFG_BOOL, "false", 0, &cfg.plaintext, 0, 0, "development only"},
    {"FZ_WORKERS", VEIL_CFG_INT, "8", 0, &cfg.workers, 1, 256, "worker threads"},
    {"FZ_MAX_MESSAGE_BYTES", VEIL_CFG_INT, "1048576", 0, &cfg.max_message, 1024, 64 << 20,
     "largest request"},
    {"FZ_DRAIN_DELAY_MS", VEIL_CFG_INT, "0", 0, &cfg.drain_ms, 0, 600000, "drain delay"},
    {"FZ_TRUST_DOMAIN", VEIL_CFG_STRING, "veil", 1, &cfg.string, 0, 0, "SPIFFE trust domain"},
};
#define N_VARS (sizeof vars / sizeof vars[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *values[N_VARS + 1] = {0};
    memcpy(text, data, size);
    text[size] = '\0';
    /* NUL-separated values; a missing one leaves its variable unset */
    char *p = text, *end = text + size;
    for (size_t i = 0; i <= N_VARS && p <= end; i++) {
        values[i] = p;
        p += strlen(p) + 1;
    }
    for (size_t i = 0; i < N_VARS; i++) {
        if (values[i])
            setenv(vars[i].name, values[i], 1);
        else
            unsetenv(vars[i].name);
    }
    char err[512] = "";
    veil_err e = veil_config_load(vars, N_VARS, err, sizeof err);
    if (e == VEIL_OK) {
        for (size_t i = 0; i < N_VARS; i++)
            if (vars[i].type == VEIL_CFG_STRING && values[i] && values[i][0] &&
                strcmp(*(char **)vars[i].target, values[i]) != 0)
                abort(); /* a string must load as given */
        if (cfg.workers < 1 || cfg.workers > 256 || cfg.max_message < 1024 ||
            cfg.max_message > 64 << 20 || cfg.drain_ms < 0 || cfg.drain_ms > 600000)
            abort(); /* an integer outside its bounds loaded */
    } else if (e != VEIL_ERR_INVALID || strncmp(err, "FZ_", 3) != 0) {
        abort(); /* a refusal must name its variable */
    }
    veil_config_free(vars, N_VARS);
    if (values[N_VARS]) /* the rest, as a log level */
        veil_log_level_parse(values[N_VARS]);
    free(text);
    return 0;
}
