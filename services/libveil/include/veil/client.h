/*
 * veil/client.h - calling other services.
 *
 * One veil_channel per target, shared by every thread.  veil_channel_call is
 * a synchronous unary call, safe from worker threads (each thread has its own
 * completion queue).  The asynchronous interface (veil_cq) is for load
 * generators that keep many calls in flight from one thread.
 */
#ifndef VEIL_CLIENT_H
#define VEIL_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "veil/err.h"
#include "veil/tls.h"

typedef struct veil_status {
    grpc_status_code code;
    char message[256];
} veil_status;

typedef struct veil_channel veil_channel;

typedef struct veil_channel_options {
    int max_message_bytes;  /* 0: 4 MiB */
    int own_connection;     /* kept for callers; every channel now has its own connections */
} veil_channel_options;

/*
 * Opens a channel to target (host:port) for the methods of svc.  Connection
 * happens lazily.  Caller frees with veil_channel_free after its last call.
 */
veil_err veil_channel_new(const char *target, const veil_tls_config *tls,
                          const ProtobufCServiceDescriptor *svc, const veil_channel_options *opt,
                          veil_channel **out, char *errbuf, size_t errlen) VEIL_WUR;

void veil_channel_free(veil_channel *ch);

/*
 * Calls method (its name in the .proto) with req and waits up to timeout_ms.
 * On VEIL_OK, *resp (a ProtobufCMessage ** of the method's output type)
 * holds the reply, allocated with alloc (NULL: malloc; free it with
 * protobuf_c_message_free_unpacked).  Otherwise *resp is NULL and st holds
 * the peer's status and message; the return value is that status as a veil_err.
 */
veil_err veil_channel_call(veil_channel *ch, const char *method, const ProtobufCMessage *req,
                           ProtobufCAllocator *alloc, int64_t timeout_ms, void *resp,
                           veil_status *st);

/* One call of a veil_channel_call_all set: filled by the caller, results set by it. */
typedef struct veil_call_one {
    veil_channel *ch;
    const char *method;
    const ProtobufCMessage *req;
    void *resp;     /* a ProtobufCMessage ** of the method's output type */
    veil_err err;   /* as veil_channel_call returns it */
    veil_status st; /* as veil_channel_call fills it */
} veil_call_one;

/*
 * Makes n independent calls at once from the calling thread and returns
 * when all of them finished: one round trip's wait instead of n.  Each call
 * gets its own err, *resp and st exactly as veil_channel_call gives them
 * (replies allocated with alloc).  Safe from worker threads, like
 * veil_channel_call.
 */
void veil_channel_call_all(veil_call_one *calls, size_t n, ProtobufCAllocator *alloc,
                           int64_t timeout_ms);

/* Frees the calling thread's completion queue (threads that made calls call it before exit). */
void veil_client_thread_done(void);

/* ---- asynchronous calls ---- */

typedef struct veil_cq veil_cq;
typedef struct veil_pending veil_pending;

veil_err veil_cq_new(veil_cq **out) VEIL_WUR;
void veil_cq_free(veil_cq *cq); /* after every pending call has been collected */

/* Starts a call; its completion is returned by veil_cq_next.  user is yours. */
veil_err veil_channel_start(veil_channel *ch, const char *method, const ProtobufCMessage *req,
                            int64_t timeout_ms, veil_cq *cq, void *user,
                            veil_pending **out) VEIL_WUR;

/* The next finished call, or NULL after timeout_ms. */
veil_pending *veil_cq_next(veil_cq *cq, int64_t timeout_ms);

/*
 * As veil_channel_start, but "wait for ready": while the peer cannot be
 * reached the call waits (up to its deadline) for the channel to connect
 * instead of failing at once with UNAVAILABLE.  A thread waiting for such a
 * call also drives the reconnection, which matters in processes where no
 * other thread polls grpc (a client without a server): there a fail-fast
 * call made after the peer restarted finds the channel still broken.
 */
veil_err veil_channel_start_wait_ready(veil_channel *ch, const char *method,
                                       const ProtobufCMessage *req, int64_t timeout_ms,
                                       veil_cq *cq, void *user, veil_pending **out) VEIL_WUR;

/*
 * Cancels a started call (any thread may do this while the call is still
 * pending); its completion still arrives through veil_cq_next, with status
 * CANCELLED unless it had already finished.
 */
void veil_pending_cancel(veil_pending *p);

/* The outcome of a finished call, as veil_channel_call gives it; frees p. */
veil_err veil_pending_finish(veil_pending *p, ProtobufCAllocator *alloc, void *resp,
                             veil_status *st, void **user);

#endif
