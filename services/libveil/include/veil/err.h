/*
 * veil/err.h - the one error enum of veil.
 *
 * Every fallible function returns a veil_err (0 = VEIL_OK) and hands results
 * back through out-parameters.  The X-macro below is the single place that
 * says which gRPC status each error becomes and what its default message is;
 * codes follow gRPC's rule: UNAVAILABLE when the same call can simply be
 * retried, ABORTED when a higher-level retry is needed, FAILED_PRECONDITION
 * when not until the system's state changes.
 */
#ifndef VEIL_ERR_H
#define VEIL_ERR_H

#include <grpc/status.h>

#define VEIL_WUR __attribute__((warn_unused_result))

/*    name             gRPC status                          default message */
#define VEIL_ERR_MAP(X)                                                             \
    X(OK,              GRPC_STATUS_OK,                  "ok")                      \
    X(INVALID,         GRPC_STATUS_INVALID_ARGUMENT,    "invalid argument")        \
    X(NOT_FOUND,       GRPC_STATUS_NOT_FOUND,           "not found")               \
    X(EXISTS,          GRPC_STATUS_ALREADY_EXISTS,      "already exists")          \
    X(DENIED,          GRPC_STATUS_PERMISSION_DENIED,   "permission denied")       \
    X(UNAUTHENTICATED, GRPC_STATUS_UNAUTHENTICATED,     "unauthenticated")         \
    X(PRECONDITION,    GRPC_STATUS_FAILED_PRECONDITION, "failed precondition")     \
    X(ABORTED,         GRPC_STATUS_ABORTED,             "aborted")                 \
    X(UNAVAILABLE,     GRPC_STATUS_UNAVAILABLE,         "service unavailable")     \
    X(DEADLINE,        GRPC_STATUS_DEADLINE_EXCEEDED,   "deadline exceeded")       \
    X(EXHAUSTED,       GRPC_STATUS_RESOURCE_EXHAUSTED,  "resource exhausted")      \
    X(UNIMPLEMENTED,   GRPC_STATUS_UNIMPLEMENTED,       "method not implemented")  \
    X(CANCELLED,       GRPC_STATUS_CANCELLED,           "cancelled")               \
    X(NOMEM,           GRPC_STATUS_RESOURCE_EXHAUSTED,  "out of memory")           \
    X(INTERNAL,        GRPC_STATUS_INTERNAL,            "internal error")

typedef enum veil_err {
#define VEIL_ERR_ENUM(name, status, msg) VEIL_ERR_##name,
    VEIL_ERR_MAP(VEIL_ERR_ENUM)
#undef VEIL_ERR_ENUM
    VEIL_ERR__COUNT
} veil_err;

#define VEIL_OK VEIL_ERR_OK

/* The error's name as in the map ("INVALID"); never NULL. */
const char *veil_err_name(veil_err err);

/* The default client-facing message ("invalid argument"); never NULL. */
const char *veil_err_message(veil_err err);

/* The gRPC status an error is sent as. */
grpc_status_code veil_err_status(veil_err err);

/* The veil_err a gRPC status received from a peer maps back to. */
veil_err veil_err_from_status(grpc_status_code code);

/* The gRPC status code's canonical name ("PERMISSION_DENIED"). */
const char *veil_status_name(grpc_status_code code);

#endif
