/*
 * veil/rpc.h - the RPC server over grpc core, and what handlers may touch.
 *
 * A service is a protobuf-c service struct bound with its generated __INIT
 * macro (so a missing handler is a compile error) plus a policy table that
 * names, for every method, who may call it and where it runs.  The dispatcher
 * enforces the table; handlers never check callers themselves.
 *
 * A handler has the protobuf-c signature and always ends with VEIL_REPLY:
 *
 *   static void vault_erase(Veil__Vault__Vault_Service *svc,
 *                           const Veil__Vault__SubjectRequest *req,
 *                           Veil__Empty_Closure done, void *call)
 *   {
 *       Veil__Empty resp = VEIL__EMPTY__INIT;
 *       veil_err err = ...;   // on failure: veil_call_fail(call, err, "...")
 *       VEIL_REPLY(done, call, err, &resp);
 *   }
 *
 * The request and everything from veil_call_alloc live in the call's arena
 * and are freed when the call ends; the reply is packed inside VEIL_REPLY, so
 * it may live on the handler's stack.
 */
#ifndef VEIL_RPC_H
#define VEIL_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "veil/err.h"
#include "veil/tls.h"

/* Caller roles, one bit each; a policy's `allow` is a mask of them. */
enum {
    VEIL_PEER_GATEWAY = 1u << 0,
    VEIL_PEER_VAULT = 1u << 1,
    VEIL_PEER_CONSENT = 1u << 2,
    VEIL_PEER_REVOCATION = 1u << 3,
    VEIL_PEER_PSEUDONYM = 1u << 4,
    VEIL_PEER_ADMIN = 1u << 5,
    VEIL_PEER_APP = 1u << 6,
    VEIL_PEER_CITIZEN = 1u << 7,  /* TLS without a client certificate: a wallet */
    VEIL_PEER_PROBE = 1u << 8,    /* plaintext health port: kubelet, load balancers */
    VEIL_PEER_COUNTER = 1u << 9,  /* a public-service counter issuing cards (issue 17) */
    VEIL_PEER_AUDITOR = 1u << 10, /* reads the admin audit log (issue 13 item 6) */
};
#define VEIL_PEER_ANYONE 0x7ffu

typedef struct veil_peer {
    unsigned role;     /* one VEIL_PEER_* bit; 0 when the identity is not one of ours */
    char name[128];    /* app id, admin name or service name ("" for citizens, probes) */
    char uri[256];     /* the identity URI as presented */
} veil_peer;

/* Where a method's handler runs. */
typedef enum veil_exec {
    VEIL_EXEC_INLINE = 0, /* on the completion-queue thread: CPU only, microseconds */
    VEIL_EXEC_WORKER,     /* on a worker thread: may use PostgreSQL or call other services */
    VEIL_EXEC_WAIT,       /* on a waiter thread: long-polls that block by design */
    VEIL_EXEC_UNSERVED,   /* not served (e.g. streaming): callers get UNIMPLEMENTED */
} veil_exec;

typedef struct veil_method_policy {
    const char *method; /* as in the .proto, e.g. "Enrol" */
    unsigned allow;     /* VEIL_PEER_* mask */
    veil_exec exec;
} veil_method_policy;

/*
 * A method's own request size limit, in bytes, below the server's
 * max_message_bytes.  The dispatcher checks it on arrival, before the
 * handler, a worker, the database or a signature check sees the bytes
 * (RESOURCE_EXHAUSTED).  A separate table beside a service's policy, so the
 * public port can say what fits each method.
 */
typedef struct veil_method_limit {
    const char *method; /* as in the .proto, e.g. "GrantConsent" */
    int max_request_bytes;
} veil_method_limit;

typedef struct veil_server_config {
    const char *listen_addr;  /* host:port; port 0 picks a free one */
    const char *health_addr;  /* optional plaintext port answering only Health */
    veil_tls_config tls;
    int client_cert_optional; /* gateway: wallets connect without a certificate */
    const char *trust_domain; /* spiffe://<trust_domain>/...; default "veil" */
    int workers;              /* worker threads (PostgreSQL, outbound RPCs) */
    int waiters;              /* long-poll threads */
    int queue_max;            /* calls queued per pool before UNAVAILABLE */
    int max_message_bytes;    /* larger requests get RESOURCE_EXHAUSTED */
    int64_t drain_delay_ms;   /* SIGTERM: report NOT_SERVING this long before closing */
    int64_t drain_grace_ms;   /* then let in-flight calls finish this long before cancelling */
} veil_server_config;

typedef struct veil_server veil_server;
typedef struct veil_call veil_call;

/* Creates a server (not yet listening); adds grpc.health.v1.Health itself. */
veil_err veil_server_new(const veil_server_config *cfg, veil_server **out, char *errbuf,
                         size_t errlen) VEIL_WUR;

/*
 * Adds a service.  Every method of its descriptor must have exactly one
 * policy row and every row must name a method, or this fails: a new RPC
 * without a policy never reaches production.  svc must outlive the server.
 */
veil_err veil_server_add(veil_server *srv, ProtobufCService *svc,
                         const veil_method_policy *policy, size_t n, char *errbuf,
                         size_t errlen) VEIL_WUR;

/*
 * Sets request size limits for methods of a service already added (by its
 * full name, e.g. "veil.gateway.Wallet").  Every row must name a method of
 * it; a limit above the server's max_message_bytes is the server's.
 */
veil_err veil_server_limit(veil_server *srv, const char *service, const veil_method_limit *limits,
                           size_t n, char *errbuf, size_t errlen) VEIL_WUR;

/*
 * The policy of grpc.health.v1.Health, which veil_server_new adds to every
 * server: the one service a plaintext probe may call.  Exported so the
 * authorization matrix (tests/authz) checks it like every other table.
 */
extern const veil_method_policy veil_health_policy[];
extern const size_t veil_health_policy_len;

/* Binds and starts serving; *port receives the bound port of listen_addr. */
veil_err veil_server_start(veil_server *srv, int *port, char *errbuf, size_t errlen) VEIL_WUR;

/* Health: whether Check answers SERVING (the default once started). */
void veil_server_set_serving(veil_server *srv, int serving);

/*
 * Graceful stop: NOT_SERVING for drain_delay_ms, then no new calls while
 * in-flight ones finish (cancelled after drain_grace_ms), then every thread
 * joined.  Safe to call once, from one thread.
 */
void veil_server_drain(veil_server *srv);

/*
 * Registers fn(arg) to run once when veil_server_drain begins, before the
 * drain delay.  Long-poll handlers use it to return at once rather than hold
 * the drain up for the grace period (veil/feed.h).  fn runs on the draining
 * thread and must not block.  At most 4 hooks; register before starting.
 */
veil_err veil_server_on_drain(veil_server *srv, void (*fn)(void *arg), void *arg) VEIL_WUR;

/* Frees a drained (or never started) server; accepts NULL. */
void veil_server_free(veil_server *srv);

/*
 * Runs one method of svc on a serialized request in this process, as the
 * dispatcher does once it has admitted the caller - unpacked into the call's
 * arena, the handler, its reply packed and checked against
 * max_message_bytes (0: 4 MiB) - but with no grpc call: for fuzzers and
 * tests.  Handlers run on the calling thread, whatever their policy says.
 * Returns the call's error; reply (if not NULL) receives the packed reply
 * (malloc'd, the caller frees reply->data) and msg (if not NULL) the client
 * message.
 */
veil_err veil_call_local(ProtobufCService *svc, const char *method, const veil_peer *peer,
                         const void *request, size_t len, int max_message_bytes,
                         ProtobufCBinaryData *reply, char *msg, size_t msglen);

/*
 * Runs fn with a call context of its own, as veil_call_local runs a
 * handler, for a door that is not gRPC (an HTTP form) but shares the code
 * handlers use (the call's arena, veil_call_fail, calls to other services
 * on its behalf).  path names it in logs.  Returns fn's error (or the one it
 * recorded); msg receives the client message.  Everything in the arena is
 * wiped and freed before it returns.
 */
veil_err veil_call_run(const veil_peer *peer, const char *path,
                       veil_err (*fn)(veil_call *call, void *ctx), void *ctx, char *msg,
                       size_t msglen);

/*
 * Whether every `string` field of the serialized message data[0..len) of
 * type d - nested messages included - is well-formed UTF-8 without NUL,
 * overlong forms or surrogates (veil_utf8_valid).  On a bad string *field
 * (if not NULL) names its field; on malformed wire data it stays NULL.  The
 * server runs this on every request before unpacking it and the client on
 * every reply, so no handler sees a string protobuf-c cut at a NUL.
 */
int veil_pb_strings_valid(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                          const char **field);

/* ---- what a handler may use ---- */

/* Marks the call failed with err and a short, lowercase client message. */
void veil_call_fail(veil_call *call, veil_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records err (keeping a message set by veil_call_fail); used by VEIL_REPLY. */
void veil_call_set_error(veil_call *call, veil_err err);

/*
 * For a batched method, whose items succeed or fail one by one: copies into
 * msg the client message an unbatched reply with err would carry (the one
 * veil_call_fail recorded for err, else err's default; "" for VEIL_OK) and
 * clears the call's error, so the next item and the batch's own reply start
 * clean.
 */
void veil_call_take_error(veil_call *call, veil_err err, char *msg, size_t len);

#define VEIL_REPLY(done, call, err, resp)                                  \
    do {                                                                   \
        veil_err veil_reply_err_ = (err);                                  \
        veil_call_set_error((call), veil_reply_err_);                      \
        (done)(veil_reply_err_ == VEIL_OK ? (resp) : NULL, (call));        \
    } while (0)

/*
 * Deferred replies (issue 15 lever 2).  A handler whose answer waits on
 * something else (a batched call to another service) calls veil_call_defer
 * and returns without replying: its thread goes back to serving, and the
 * call stays in flight.  Later, on any thread, exactly one VEIL_REPLY(done,
 * call, err, &resp) - `done` and `call` kept from the handler - packs the
 * reply and sends it at once.  Until then the call and its arena live on;
 * whoever holds it touches it from one thread at a time.  SIGTERM's drain
 * waits for every deferred call's reply (after the grace period a
 * cancelled call's reply is simply not delivered), so a deferred call must
 * always be answered: a handler that defers and never replies stops its
 * server from exiting.  Under veil_call_local the caller waits for the
 * reply.
 */
void veil_call_defer(veil_call *call);

/*
 * Runs fn(call, arg) on one of the server's workers, with the call's trace
 * current: for a deferred call's step that must block (PostgreSQL, an
 * unbatched call) when the thread holding it must not.  Returns 0 when
 * queued; -1 when it cannot be (not deferred, no server, the workers full
 * or stopped by the drain), and then nothing runs: the caller runs the step
 * itself.
 */
int veil_call_resume(veil_call *call, void (*fn)(veil_call *call, void *arg), void *arg);

/* The authenticated caller. */
const veil_peer *veil_call_peer(const veil_call *call);

/* The full method path, e.g. "/veil.vault.Vault/Enrol". */
const char *veil_call_method(const veil_call *call);

/* Arena memory freed when the call ends; NULL when out of memory. */
void *veil_call_alloc(veil_call *call, size_t n);
/* An array of n elements of size bytes in the call's arena (n may be 0); NULL on overflow. */
void *veil_call_array(veil_call *call, size_t n, size_t size);
char *veil_call_strdup(veil_call *call, const char *s);
ProtobufCAllocator *veil_call_allocator(veil_call *call);

/*
 * Unpacks a message of type d from data[0..len) into the call's arena, as the
 * dispatcher unpacks every request: its strings must pass
 * veil_pb_strings_valid first.  For messages carried as bytes inside a
 * request (a wallet's signed payload).  On failure returns NULL and fails
 * the call: "<field>: strings must be ..." or `malformed` as the message.
 */
ProtobufCMessage *veil_call_unpack(veil_call *call, const ProtobufCMessageDescriptor *d,
                                   const void *data, size_t len, const char *malformed);

/* Milliseconds left before the caller's deadline (INT64_MAX when none). */
int64_t veil_call_remaining_ms(const veil_call *call);

/*
 * The timeout to give an outbound call made on behalf of this call: the time
 * left, capped at cap_ms, minus a little for the reply's own trip.
 */
int64_t veil_call_budget_ms(const veil_call *call, int64_t cap_ms);

/*
 * A request metadata value (keys are lowercase).  Returns 1 and sets
 * *value and *len (not NUL-terminated, owned by the call) when present.
 */
int veil_call_metadata(const veil_call *call, const char *key, const char **value, size_t *len);

#endif
