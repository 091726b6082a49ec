/*
 * rpc_client.c - unary calls to other services (veil/client.h).
 *
 * A channel registers every method of its service once, so a call is one
 * grpc_channel_create_registered_call plus one six-op batch.  Synchronous
 * calls wait on the calling thread's own completion queue, created on first
 * use and freed by veil_client_thread_done (worker pools call it on exit).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <sodium.h>
#include <grpc/support/time.h>

#include "internal.h"
#include "veil/client.h"
#include "veil/log.h"
#include "veil/trace.h"

struct veil_channel {
    grpc_channel *ch;
    const ProtobufCServiceDescriptor *svc;
    char **paths; /* "/pkg.Service/Method", must outlive the channel */
    void **regs;  /* registered-call handles, by method index */
    char *dev_identity;
};

struct veil_cq {
    grpc_completion_queue *cq;
};

struct veil_pending {
    grpc_call *call;
    const ProtobufCMethodDescriptor *m;
    grpc_op ops[6];
    grpc_metadata md[2]; /* the development identity, traceparent */
    char traceparent[VEIL_TRACEPARENT_LEN + 1];
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    void *user;
};

veil_err veil_channel_new(const char *target, const veil_tls_config *tls,
                          const ProtobufCServiceDescriptor *svc, const veil_channel_options *opt,
                          veil_channel **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    veil_channel *c = calloc(1, sizeof *c);
    if (!c)
        return VEIL_ERR_NOMEM;
    grpc_init(); /* balanced by veil_channel_free */
    c->svc = svc;
    c->paths = calloc(svc->n_methods, sizeof *c->paths);
    c->regs = calloc(svc->n_methods, sizeof *c->regs);
    if (!c->paths || !c->regs ||
        (tls->plaintext && tls->dev_identity && !(c->dev_identity = strdup(tls->dev_identity)))) {
        veil_channel_free(c);
        return VEIL_ERR_NOMEM;
    }
    grpc_channel_credentials *creds = veil_tls_channel_credentials(tls, errbuf, errlen);
    if (!creds) {
        veil_channel_free(c);
        return VEIL_ERR_INVALID;
    }
    int max = opt && opt->max_message_bytes > 0 ? opt->max_message_bytes : 4 << 20;
    grpc_arg args[8];
    size_t n = 0;
    args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = max}};
    args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = max}};
    /*
     * A restarted peer must be found again within a second, not grpc's default
     * minutes.  Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: grpc core also uses it
     * as the minimum connect timeout (20 s by default), and lowering it makes
     * TLS handshakes on a loaded machine time out ("connection attempt timed
     * out before receiving SETTINGS frame").
     */
    args[n++] =
        (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, {.integer = 100}};
    args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, {.integer = 1000}};
    /*
     * Each veil channel keeps its own connections.  A service has one channel
     * per target anyway; sharing subchannels between channels (grpc's global
     * pool) only lets a new channel inherit a connection an old one is closing.
     */
    args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}};
    if (!tls->plaintext && tls->server_name && *tls->server_name)
        args[n++] = (grpc_arg){GRPC_ARG_STRING,
                               GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                               {.string = (char *)tls->server_name}};
    grpc_channel_args cargs = {n, args};
    c->ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if (!c->ch) {
        snprintf(errbuf, errlen, "cannot create a channel to %s", target);
        veil_channel_free(c);
        return VEIL_ERR_INVALID;
    }
    for (unsigned i = 0; i < svc->n_methods; i++) {
        size_t len = strlen(svc->name) + strlen(svc->methods[i].name) + 3;
        if (!(c->paths[i] = malloc(len))) {
            veil_channel_free(c);
            return VEIL_ERR_NOMEM;
        }
        snprintf(c->paths[i], len, "/%s/%s", svc->name, svc->methods[i].name);
        c->regs[i] = grpc_channel_register_call(c->ch, c->paths[i], NULL, NULL);
    }
    *out = c;
    return VEIL_OK;
}

void veil_channel_free(veil_channel *c)
{
    if (!c)
        return;
    if (c->ch)
        grpc_channel_destroy(c->ch);
    for (unsigned i = 0; c->paths && i < c->svc->n_methods; i++)
        free(c->paths[i]);
    free(c->paths);
    free(c->regs);
    free(c->dev_identity);
    free(c);
    grpc_shutdown();
}

veil_err veil_cq_new(veil_cq **out)
{
    *out = NULL;
    veil_cq *q = calloc(1, sizeof *q);
    if (!q)
        return VEIL_ERR_NOMEM;
    grpc_init();
    q->cq = grpc_completion_queue_create_for_next(NULL);
    *out = q;
    return VEIL_OK;
}

void veil_cq_free(veil_cq *q)
{
    if (!q)
        return;
    grpc_completion_queue_shutdown(q->cq);
    while (grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(q->cq);
    free(q);
    grpc_shutdown();
}

static void pending_free(veil_pending *p)
{
    grpc_metadata_array_destroy(&p->initial_md);
    grpc_metadata_array_destroy(&p->trailing_md);
    if (p->send_bb) {
        veil_byte_buffer_wipe(p->send_bb);
        grpc_byte_buffer_destroy(p->send_bb);
    }
    if (p->recv_bb) {
        veil_byte_buffer_wipe(p->recv_bb);
        grpc_byte_buffer_destroy(p->recv_bb);
    }
    grpc_slice_unref(p->details);
    gpr_free((void *)p->error_string);
    if (p->call)
        grpc_call_unref(p->call);
    free(p);
}

/* Starts a call; flags go on its initial metadata (GRPC_INITIAL_METADATA_*). */
static veil_err start_call(veil_channel *c, const char *method, const ProtobufCMessage *req,
                           int64_t timeout_ms, uint32_t flags, veil_cq *q, void *user,
                           veil_pending **out)
{
    *out = NULL;
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(c->svc, method);
    if (!m || req->descriptor != m->input) {
        veil_log(VEIL_LOG_ERROR, "client call with an unknown method or wrong request type",
                 VL_STR("service", c->svc->name), VL_STR("method", method), VL_END);
        return VEIL_ERR_INTERNAL;
    }
    veil_pending *p = calloc(1, sizeof *p);
    if (!p)
        return VEIL_ERR_NOMEM;
    p->m = m;
    p->user = user;
    p->details = grpc_empty_slice();
    grpc_metadata_array_init(&p->initial_md);
    grpc_metadata_array_init(&p->trailing_md);

    size_t n = protobuf_c_message_get_packed_size(req);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(s));
    p->send_bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);

    gpr_timespec deadline = timeout_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    unsigned idx = (unsigned)(m - c->svc->methods);
    p->call = grpc_channel_create_registered_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, q->cq,
                                                  c->regs[idx], deadline, NULL);
    if (!p->call) {
        pending_free(p);
        return VEIL_ERR_INTERNAL;
    }

    grpc_op *op = p->ops;
    memset(p->ops, 0, sizeof p->ops);
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->flags = flags;
    size_t n_md = 0;
    if (c->dev_identity) {
        p->md[n_md].key = grpc_slice_from_static_string(VEIL_DEV_PEER_HEADER);
        p->md[n_md++].value = grpc_slice_from_static_string(c->dev_identity);
    }
    const veil_trace *trace = veil_trace_current();
    if (trace) { /* a call made for a call: the same trace, this span as parent */
        veil_trace_format(trace, p->traceparent);
        p->md[n_md].key = grpc_slice_from_static_string("traceparent");
        p->md[n_md++].value = grpc_slice_from_static_string(p->traceparent);
    }
    op->data.send_initial_metadata.count = n_md;
    op->data.send_initial_metadata.metadata = n_md ? p->md : NULL;
    op++;
    op->op = GRPC_OP_SEND_MESSAGE;
    op->data.send_message.send_message = p->send_bb;
    op++;
    op->op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    op++;
    op->op = GRPC_OP_RECV_INITIAL_METADATA;
    op->data.recv_initial_metadata.recv_initial_metadata = &p->initial_md;
    op++;
    op->op = GRPC_OP_RECV_MESSAGE;
    op->data.recv_message.recv_message = &p->recv_bb;
    op++;
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &p->trailing_md;
    op->data.recv_status_on_client.status = &p->status;
    op->data.recv_status_on_client.status_details = &p->details;
    op->data.recv_status_on_client.error_string = &p->error_string;
    op++;
    if (grpc_call_start_batch(p->call, p->ops, (size_t)(op - p->ops), p, NULL) != GRPC_CALL_OK) {
        pending_free(p);
        return VEIL_ERR_INTERNAL;
    }
    *out = p;
    return VEIL_OK;
}

veil_err veil_channel_start(veil_channel *c, const char *method, const ProtobufCMessage *req,
                            int64_t timeout_ms, veil_cq *q, void *user, veil_pending **out)
{
    return start_call(c, method, req, timeout_ms, 0, q, user, out);
}

veil_err veil_channel_start_wait_ready(veil_channel *c, const char *method,
                                       const ProtobufCMessage *req, int64_t timeout_ms, veil_cq *q,
                                       void *user, veil_pending **out)
{
    return start_call(c, method, req, timeout_ms,
                      GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                          GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET,
                      q, user, out);
}

veil_pending *veil_cq_next(veil_cq *q, int64_t timeout_ms)
{
    gpr_timespec until = timeout_ms < 0
                             ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                             : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                            gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_next(q->cq, until, NULL);
    if (ev.type != GRPC_OP_COMPLETE)
        return NULL;
    return ev.tag;
}

void veil_pending_cancel(veil_pending *p)
{
    grpc_call_cancel(p->call, NULL);
}

veil_err veil_pending_finish(veil_pending *p, ProtobufCAllocator *alloc, void *resp,
                             veil_status *st, void **user)
{
    ProtobufCMessage **out = resp;
    veil_status local;
    if (!st)
        st = &local;
    *out = NULL;
    if (user)
        *user = p->user;
    st->code = p->status;
    st->message[0] = '\0';
    if (p->status != GRPC_STATUS_OK) {
        size_t len = GRPC_SLICE_LENGTH(p->details);
        if (len >= sizeof st->message)
            len = sizeof st->message - 1;
        memcpy(st->message, GRPC_SLICE_START_PTR(p->details), len);
        st->message[len] = '\0';
        veil_err err = veil_err_from_status(p->status);
        pending_free(p);
        return err;
    }
    veil_err err = VEIL_OK;
    if (!p->recv_bb) {
        snprintf(st->message, sizeof st->message, "reply message missing");
        st->code = GRPC_STATUS_INTERNAL;
        err = VEIL_ERR_INTERNAL;
    } else {
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init(&reader, p->recv_bb);
        grpc_slice whole = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        /* A reply's strings pass the same check as every request's (veil/rpc.h). */
        if (veil_pb_strings_valid(p->m->output, GRPC_SLICE_START_PTR(whole),
                                  GRPC_SLICE_LENGTH(whole), NULL))
            *out = protobuf_c_message_unpack(p->m->output, alloc, GRPC_SLICE_LENGTH(whole),
                                             GRPC_SLICE_START_PTR(whole));
        /* Replies carry personal data (released attributes): no copy lingers once unpacked. */
        sodium_memzero(GRPC_SLICE_START_PTR(whole), GRPC_SLICE_LENGTH(whole));
        grpc_slice_unref(whole);
        if (!*out) {
            snprintf(st->message, sizeof st->message, "malformed reply message");
            st->code = GRPC_STATUS_INTERNAL;
            err = VEIL_ERR_INTERNAL;
        }
    }
    pending_free(p);
    return err;
}

/* ---- synchronous calls on a per-thread completion queue ---- */

static pthread_key_t cq_key;
static pthread_once_t cq_once = PTHREAD_ONCE_INIT;

static void cq_destructor(void *q)
{
    veil_cq_free(q);
}

static void cq_key_init(void)
{
    pthread_key_create(&cq_key, cq_destructor);
}

static veil_cq *thread_cq(void)
{
    pthread_once(&cq_once, cq_key_init);
    veil_cq *q = pthread_getspecific(cq_key);
    if (!q && veil_cq_new(&q) == VEIL_OK)
        pthread_setspecific(cq_key, q);
    return q;
}

void veil_client_thread_done(void)
{
    pthread_once(&cq_once, cq_key_init);
    veil_cq *q = pthread_getspecific(cq_key);
    if (q) {
        pthread_setspecific(cq_key, NULL);
        veil_cq_free(q);
    }
}

veil_err veil_channel_call(veil_channel *c, const char *method, const ProtobufCMessage *req,
                           ProtobufCAllocator *alloc, int64_t timeout_ms, void *resp,
                           veil_status *st)
{
    *(ProtobufCMessage **)resp = NULL;
    if (st) {
        st->code = GRPC_STATUS_INTERNAL;
        st->message[0] = '\0';
    }
    veil_cq *q = thread_cq();
    if (!q)
        return VEIL_ERR_NOMEM;
    veil_pending *p;
    veil_err err = veil_channel_start(c, method, req, timeout_ms, q, NULL, &p);
    if (err)
        return err;
    /* This thread's queue only ever holds this one call. */
    veil_pending *done;
    while ((done = veil_cq_next(q, -1)) == NULL)
        ;
    return veil_pending_finish(done, alloc, resp, st, NULL);
}

void veil_channel_call_all(veil_call_one *calls, size_t n, ProtobufCAllocator *alloc,
                           int64_t timeout_ms)
{
    veil_cq *q = thread_cq();
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        veil_pending *p;
        *(ProtobufCMessage **)calls[i].resp = NULL;
        calls[i].st.code = GRPC_STATUS_INTERNAL;
        calls[i].st.message[0] = '\0';
        calls[i].err = q ? veil_channel_start(calls[i].ch, calls[i].method, calls[i].req,
                                              timeout_ms, q, &calls[i], &p)
                         : VEIL_ERR_NOMEM;
        if (!calls[i].err)
            pending++;
    }
    /* This thread's queue holds exactly these calls; each completes once. */
    while (pending > 0) {
        veil_pending *done = veil_cq_next(q, -1);
        if (!done)
            continue;
        veil_call_one *one = done->user; /* read before finishing frees done */
        one->err = veil_pending_finish(done, alloc, one->resp, &one->st, NULL);
        pending--;
    }
}
