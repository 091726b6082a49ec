/* err.c - names, messages and gRPC statuses of veil_err (see veil/err.h). */
#include "veil/err.h"

static const struct {
    const char *name;
    grpc_status_code status;
    const char *message;
} err_table[] = {
#define VEIL_ERR_ROW(name, status, msg) {#name, status, msg},
    VEIL_ERR_MAP(VEIL_ERR_ROW)
#undef VEIL_ERR_ROW
};

static veil_err clamp(veil_err err)
{
    return (unsigned)err < VEIL_ERR__COUNT ? err : VEIL_ERR_INTERNAL;
}

const char *veil_err_name(veil_err err)
{
    return err_table[clamp(err)].name;
}

const char *veil_err_message(veil_err err)
{
    return err_table[clamp(err)].message;
}

grpc_status_code veil_err_status(veil_err err)
{
    return err_table[clamp(err)].status;
}

veil_err veil_err_from_status(grpc_status_code code)
{
    /* NOMEM and EXHAUSTED share a status; the first row wins, as intended. */
    for (int i = 0; i < VEIL_ERR__COUNT; i++)
        if (err_table[i].status == code)
            return (veil_err)i;
    return VEIL_ERR_INTERNAL;
}

const char *veil_status_name(grpc_status_code code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((unsigned)code < sizeof(names) / sizeof(names[0]))
        return names[code];
    return "UNKNOWN";
}
