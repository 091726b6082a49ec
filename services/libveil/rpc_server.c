/*
 * rpc_server.c - unary gRPC server over grpc core (veil/rpc.h).
 *
 * One completion-queue thread takes every event.  For each registered method
 * a few request slots are kept posted; when one fills, the thread re-arms the
 * method first, then checks the caller against the method's policy and either
 * runs the handler inline (CPU-only methods) or queues the call to a worker
 * pool, so a handler waiting on PostgreSQL or another service never holds up
 * the completion queue.  Whoever ran the handler starts the reply batch; its
 * completion comes back to the completion-queue thread, which frees the call.
 *
 * Shutdown follows docs/internals/rpc-layer.md: NOT_SERVING, stop re-arming,
 * grpc_server_shutdown_and_notify, cancel after the grace period, join the
 * pools (so no handler can start a batch any more), destroy the server, and
 * only then shut the completion queue down and join its thread.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <sodium.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "internal.h"
#include "veil/codec.h"
#include "veil/log.h"
#include "veil/metrics.h"
#include "veil/trace.h"

/* Calls by method and status, their latency, and calls in flight (veil/metrics.h). */
static veil_metric *m_calls, *m_latency, *m_in_flight;

#define SLOTS_PER_METHOD 16
#define MAX_SERVICES     8
#define MAX_DRAIN_HOOKS  4

struct method {
    char *path;
    ProtobufCService *svc;
    unsigned index;
    const ProtobufCMethodDescriptor *desc;
    unsigned allow;
    veil_exec exec;
    size_t max_request; /* bytes; from the policy row, else the server's limit */
    void *reg;
};

enum tag_kind { TAG_NEW, TAG_UNKNOWN, TAG_DONE, TAG_SHUTDOWN };

struct tag {
    enum tag_kind kind;
    veil_call *call;
};

/* Memory of a call run by veil_call_local (no grpc call, so no grpc arena). */
struct local_block {
    struct local_block *next;
    max_align_t data[];
};

/*
 * Every arena allocation starts with one of these, so the call's end can wipe
 * what it held: requests and replies carry personal data (names, birth dates,
 * released attributes) that must not linger in freed memory.
 */
struct wipe_block {
    struct wipe_block *next;
    size_t n;
    max_align_t data[];
};

struct veil_call {
    struct tag t_new, t_done;
    veil_server *srv;
    struct local_block *local; /* veil_call_local: its arena */
    struct wipe_block *wipe;   /* every arena allocation, wiped at the call's end */
    struct method *m;          /* NULL for the catch-all */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
    ProtobufCAllocator alloc;
    veil_peer peer;
    veil_err err;
    int has_message;
    char message[240];
    int replied;
    grpc_byte_buffer *reply;
    grpc_slice status_slice;
    int cancelled;
    int64_t t0;
    veil_trace trace; /* set at dispatch (traced = 1) */
    int traced;
    grpc_op ops[4];
    /* deferred replies (veil_call_defer) */
    int deferred;
    atomic_int phase; /* PHASE_* bits: who of the handler and the reply came second sends */
    struct local_wait *lw;                 /* veil_call_local: where its caller waits */
    void (*resume_fn)(veil_call *, void *); /* veil_call_resume: the step a worker runs */
    void *resume_arg;
};

/* A deferred call is sent by whichever of these two happens second. */
enum { PHASE_LEFT = 1, PHASE_REPLIED = 2 };

/* A deferred call run by veil_call_local: its caller waits here for the reply. */
struct local_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int replied;
};

struct veil_server {
    veil_server_config cfg;
    char *listen_addr, *health_addr, *trust_domain;
    void *health; /* this server's Health service (health.c) */
    grpc_server *server;
    grpc_completion_queue *cq, *shutdown_cq;
    pthread_t cq_thread;
    int cq_thread_started;
    struct method *methods;
    size_t n_methods;
    const char *service_names[MAX_SERVICES];
    size_t n_services;
    struct veil_pool workers, waiters;
    atomic_int stopping; /* no more re-arming */
    atomic_int draining; /* queued calls are refused instead of run */
    atomic_int serving;
    int started;
    struct tag shutdown_tag;
    pthread_mutex_t defer_mu; /* guards n_deferred */
    pthread_cond_t defer_cv;  /* signalled when n_deferred drops to 0 */
    int n_deferred;           /* deferred calls whose reply is not started yet */
    struct {
        void (*fn)(void *arg);
        void *arg;
    } drain_hooks[MAX_DRAIN_HOOKS];
    size_t n_drain_hooks;
};

/* ---- the call arena as a protobuf-c allocator ---- */

/* A block of the arena of a call that has no grpc call (veil_call_local). */
static void *local_alloc(veil_call *c, size_t n)
{
    struct local_block *b = malloc(sizeof *b + (n ? n : 1));
    if (!b)
        return NULL;
    b->next = c->local;
    c->local = b;
    return b->data;
}

static void *arena_alloc(void *data, size_t n)
{
    veil_call *c = data;
    if (n > SIZE_MAX - sizeof(struct wipe_block))
        return NULL;
    size_t total = sizeof(struct wipe_block) + (n ? n : 1);
    struct wipe_block *b = c->call ? grpc_call_arena_alloc(c->call, total) : local_alloc(c, total);
    if (!b)
        return NULL;
    b->n = n;
    b->next = c->wipe;
    c->wipe = b;
    return b->data;
}

/* Zeroes everything the call's arena handed out (the arena itself is freed by its owner). */
static void arena_wipe(veil_call *c)
{
    for (struct wipe_block *b = c->wipe; b; b = b->next)
        sodium_memzero(b->data, b->n);
    c->wipe = NULL;
}

void veil_byte_buffer_wipe(grpc_byte_buffer *bb)
{
    if (!bb || bb->type != GRPC_BB_RAW)
        return;
    grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    for (size_t i = 0; i < sb->count; i++)
        sodium_memzero(GRPC_SLICE_START_PTR(sb->slices[i]), GRPC_SLICE_LENGTH(sb->slices[i]));
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* released with the call */
}

void *veil_call_alloc(veil_call *c, size_t n)
{
    return arena_alloc(c, n);
}

void *veil_call_array(veil_call *c, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    return arena_alloc(c, n * size);
}

char *veil_call_strdup(veil_call *c, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = veil_call_alloc(c, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

ProtobufCAllocator *veil_call_allocator(veil_call *c)
{
    return &c->alloc;
}

/* ---- what handlers see ---- */

void veil_call_fail(veil_call *c, veil_err err, const char *fmt, ...)
{
    va_list ap;
    c->err = err;
    c->has_message = 1;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
}

void veil_call_set_error(veil_call *c, veil_err err)
{
    if (err == c->err)
        return;
    c->err = err;
    c->has_message = 0;
}

void veil_call_take_error(veil_call *c, veil_err err, char *msg, size_t len)
{
    /* as send_reply after VEIL_REPLY(err): a message set for another error is not err's */
    const char *m = err == VEIL_OK                          ? ""
                    : c->err == err && c->has_message ? c->message
                                                      : veil_err_message(err);
    if (len)
        snprintf(msg, len, "%s", m);
    c->err = VEIL_OK;
    c->has_message = 0;
}

const veil_peer *veil_call_peer(const veil_call *c)
{
    return &c->peer;
}

const char *veil_call_method(const veil_call *c)
{
    return c->m ? c->m->path : "";
}

int64_t veil_call_remaining_ms(const veil_call *c)
{
    if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec now = gpr_now(c->deadline.clock_type);
    gpr_timespec left = gpr_time_sub(c->deadline, now);
    int64_t ms = (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms < 0 ? 0 : ms;
}

int64_t veil_call_budget_ms(const veil_call *c, int64_t cap_ms)
{
    int64_t left = veil_call_remaining_ms(c);
    if (left == INT64_MAX)
        return cap_ms;
    left -= left / 20 + 1; /* keep ~5% for our own reply */
    if (left < 1)
        left = 1;
    return left < cap_ms ? left : cap_ms;
}

int veil_call_metadata(const veil_call *c, const char *key, const char **value, size_t *len)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < c->md.count; i++) {
        grpc_slice k = c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(k) == kl && memcmp(GRPC_SLICE_START_PTR(k), key, kl) == 0) {
            *value = (const char *)GRPC_SLICE_START_PTR(c->md.metadata[i].value);
            *len = GRPC_SLICE_LENGTH(c->md.metadata[i].value);
            return 1;
        }
    }
    return 0;
}

/* ---- call lifecycle ---- */

static void call_free(veil_call *c)
{
    arena_wipe(c);
    grpc_metadata_array_destroy(&c->md);
    if (c->payload) {
        veil_byte_buffer_wipe(c->payload);
        grpc_byte_buffer_destroy(c->payload);
    }
    if (c->reply) {
        veil_byte_buffer_wipe(c->reply); /* the call is over: nothing reads it any more */
        grpc_byte_buffer_destroy(c->reply);
    }
    if (!c->m)
        grpc_call_details_destroy(&c->details);
    grpc_slice_unref(c->status_slice);
    if (c->call)
        grpc_call_unref(c->call);
    free(c);
}

/* Posts one request slot for m (or the catch-all when m is NULL). */
static void arm(veil_server *s, struct method *m)
{
    veil_call *c = calloc(1, sizeof *c);
    if (!c) {
        veil_log(VEIL_LOG_ERROR, "out of memory posting a request slot", VL_END);
        return;
    }
    c->srv = s;
    c->m = m;
    c->t_new = (struct tag){m ? TAG_NEW : TAG_UNKNOWN, c};
    c->t_done = (struct tag){TAG_DONE, c};
    c->alloc = (ProtobufCAllocator){arena_alloc, arena_free, c};
    c->status_slice = grpc_empty_slice();
    grpc_metadata_array_init(&c->md);
    grpc_call_error e;
    if (m) {
        e = grpc_server_request_registered_call(s->server, m->reg, &c->call, &c->deadline, &c->md,
                                                &c->payload, s->cq, s->cq, &c->t_new);
    } else {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                     &c->t_new);
    }
    if (e != GRPC_CALL_OK) {
        veil_log(VEIL_LOG_ERROR, "cannot post a request slot", VL_INT("grpc_call_error", e),
                 VL_END);
        c->call = NULL;
        call_free(c);
    }
}

/* Packs the handler's reply into c->reply (or fails the call). */
static void pack_reply(veil_call *c, const ProtobufCMessage *msg)
{
    if (c->err != VEIL_OK)
        return;
    if (!msg || msg->descriptor != c->m->desc->output) {
        veil_call_fail(c, VEIL_ERR_INTERNAL, "internal error");
        veil_log(VEIL_LOG_ERROR, "handler replied without a message of the method's type",
                 VL_STR("method", c->m->path), VL_END);
        return;
    }
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > (size_t)c->srv->cfg.max_message_bytes) {
        veil_call_fail(c, VEIL_ERR_EXHAUSTED, "reply of %zu bytes exceeds the %d byte limit", n,
                       c->srv->cfg.max_message_bytes);
        return;
    }
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    c->reply = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
}

static void deferred_replied(veil_call *c);

/* The handler's closure: packs its reply, and sends it now if the call was deferred. */
static void reply_closure(const ProtobufCMessage *msg, void *data)
{
    veil_call *c = data;
    if (c->replied)
        return;
    c->replied = 1;
    pack_reply(c, msg);
    if (c->deferred)
        deferred_replied(c);
}

static void send_reply(veil_call *c)
{
    size_t n = 0;
    memset(c->ops, 0, sizeof c->ops);
    c->ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->err == VEIL_OK && c->reply) {
        c->ops[n].op = GRPC_OP_SEND_MESSAGE;
        c->ops[n++].data.send_message.send_message = c->reply;
    }
    const char *msg = c->has_message ? c->message : veil_err_message(c->err);
    if (c->err != VEIL_OK)
        c->status_slice = grpc_slice_from_copied_string(msg);
    c->ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    c->ops[n].data.send_status_from_server.status = veil_err_status(c->err);
    c->ops[n++].data.send_status_from_server.status_details =
        c->err != VEIL_OK ? &c->status_slice : NULL;
    c->ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    c->ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    grpc_call_error e = grpc_call_start_batch(c->call, c->ops, n, &c->t_done, NULL);
    if (e != GRPC_CALL_OK) {
        veil_log(VEIL_LOG_ERROR, "cannot start the reply batch",
                 VL_STR("method", veil_call_method(c)), VL_INT("grpc_call_error", e), VL_END);
        veil_metric_add(m_in_flight, -1, NULL);
        call_free(c);
    }
}

void veil_call_defer(veil_call *c)
{
    if (c->deferred)
        return;
    c->deferred = 1;
    if (!c->call)
        return; /* veil_call_local / veil_call_run: the caller waits for the reply */
    pthread_mutex_lock(&c->srv->defer_mu);
    c->srv->n_deferred++;
    pthread_mutex_unlock(&c->srv->defer_mu);
}

/* Sends a deferred call's reply; the drain waits for every such call to get here. */
static void finish_deferred(veil_call *c)
{
    veil_server *s = c->srv;
    send_reply(c); /* c may be freed from here on */
    pthread_mutex_lock(&s->defer_mu);
    if (--s->n_deferred == 0)
        pthread_cond_broadcast(&s->defer_cv);
    pthread_mutex_unlock(&s->defer_mu);
}

/* A deferred call's reply is packed: send it, unless its handler has not returned yet. */
static void deferred_replied(veil_call *c)
{
    if (c->lw) {
        pthread_mutex_lock(&c->lw->mu);
        c->lw->replied = 1;
        pthread_cond_signal(&c->lw->cv);
        pthread_mutex_unlock(&c->lw->mu);
        return;
    }
    if (c->call && (atomic_fetch_or(&c->phase, PHASE_REPLIED) & PHASE_LEFT))
        finish_deferred(c);
}

/* The handler of a deferred call returned: send its reply if it came meanwhile. */
static void deferred_left(veil_call *c)
{
    if (atomic_fetch_or(&c->phase, PHASE_LEFT) & PHASE_REPLIED)
        finish_deferred(c);
}

static void reply_error(veil_call *c, veil_err err, const char *msg)
{
    veil_call_fail(c, err, "%s", msg);
    send_reply(c);
}

static int deadline_passed(const veil_call *c)
{
    return gpr_time_cmp(c->deadline, gpr_now(c->deadline.clock_type)) <= 0;
}

ProtobufCMessage *veil_call_unpack(veil_call *c, const ProtobufCMessageDescriptor *d,
                                   const void *data, size_t len, const char *malformed)
{
    const char *field = NULL;
    if (!veil_pb_strings_valid(d, data, len, &field)) {
        if (field)
            veil_call_fail(c, VEIL_ERR_INVALID,
                           "%s: strings must be utf-8 without nul, overlong forms or surrogates",
                           field);
        else
            veil_call_fail(c, VEIL_ERR_INVALID, "%s", malformed);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(d, &c->alloc, len, data);
    if (!m)
        veil_call_fail(c, VEIL_ERR_INVALID, "%s", malformed);
    return m;
}

/* Unpacks a request into the call's arena; NULL (and the call failed) when malformed. */
static ProtobufCMessage *unpack(veil_call *c, const uint8_t *bytes, size_t len)
{
    return veil_call_unpack(c, c->m->desc->input, bytes, len, "malformed request message");
}

/* Runs the handler, which replies through reply_closure (sending is the caller's). */
static void invoke(veil_call *c, ProtobufCMessage *req)
{
    c->m->svc->invoke(c->m->svc, c->m->index, req, reply_closure, c);
    if (c->deferred)
        return; /* its reply comes later, perhaps on another thread already */
    if (!c->replied) {
        veil_log(VEIL_LOG_ERROR, "handler returned without replying", VL_STR("method", c->m->path),
                 VL_END);
        veil_call_fail(c, VEIL_ERR_INTERNAL, "internal error");
    }
}

/*
 * The call's trace: a child of the caller's traceparent when the caller is an
 * app, the admin or another service, else a fresh one.  A wallet's or a
 * probe's traceparent is ignored: a phone that sent the same trace id with
 * every call would make its own calls linkable in the logs.
 */
static void trace_begin(veil_call *c)
{
    const unsigned trusted = VEIL_PEER_ANYONE & ~(VEIL_PEER_CITIZEN | VEIL_PEER_PROBE);
    const char *v;
    size_t len;
    veil_trace parent;
    if ((c->peer.role & trusted) && veil_call_metadata(c, "traceparent", &v, &len) &&
        veil_trace_parse(v, len, &parent))
        veil_trace_child(&parent, &c->trace);
    else
        veil_trace_new(&c->trace);
    c->traced = 1;
}

static void run_call_traced(veil_call *c);

/* Runs the call with its trace current on this thread, so its log lines and outbound calls carry
 * it. */
static void run_call(void *item)
{
    veil_call *c = item;
    veil_trace_set_current(c->traced ? &c->trace : NULL);
    if (c->resume_fn) { /* a deferred call's step (veil_call_resume) */
        void (*fn)(veil_call *, void *) = c->resume_fn;
        c->resume_fn = NULL;
        fn(c, c->resume_arg);
    } else {
        run_call_traced(c);
    }
    veil_trace_set_current(NULL);
}

int veil_call_resume(veil_call *c, void (*fn)(veil_call *call, void *arg), void *arg)
{
    if (!c->call || !c->deferred)
        return -1;
    c->resume_fn = fn;
    c->resume_arg = arg;
    if (veil_pool_push(&c->srv->workers, c) != 0) {
        c->resume_fn = NULL;
        return -1;
    }
    return 0;
}

/* Unpacks the request into the arena and runs the handler; then replies. */
static void run_call_traced(veil_call *c)
{
    veil_server *s = c->srv;

    if (atomic_load(&s->draining))
        return reply_error(c, VEIL_ERR_UNAVAILABLE, "server is shutting down");
    if (deadline_passed(c))
        return reply_error(c, VEIL_ERR_DEADLINE, "deadline exceeded before the call started");
    if (!c->payload)
        return reply_error(c, VEIL_ERR_INVALID, "request message missing");

    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->payload))
        return reply_error(c, VEIL_ERR_INVALID, "request message cannot be read");
    grpc_slice whole = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *req = unpack(c, GRPC_SLICE_START_PTR(whole), GRPC_SLICE_LENGTH(whole));
    /* The request's wire bytes hold what the arena now holds unpacked: wipe both copies. */
    sodium_memzero(GRPC_SLICE_START_PTR(whole), GRPC_SLICE_LENGTH(whole));
    grpc_slice_unref(whole);
    veil_byte_buffer_wipe(c->payload);
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    if (req)
        invoke(c, req);
    if (c->deferred)
        deferred_left(c);
    else
        send_reply(c);
}

veil_err veil_call_local(ProtobufCService *svc, const char *method, const veil_peer *peer,
                         const void *request, size_t len, int max_message_bytes,
                         ProtobufCBinaryData *reply, char *msg, size_t msglen)
{
    if (reply)
        *reply = (ProtobufCBinaryData){0, NULL};
    const ProtobufCServiceDescriptor *d = svc->descriptor;
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(d, method);
    if (!md)
        return VEIL_ERR_UNIMPLEMENTED;
    char path[256];
    snprintf(path, sizeof path, "/%s/%s", d->name, md->name);
    struct method m = {.path = path, .svc = svc, .index = (unsigned)(md - d->methods), .desc = md};
    veil_server srv = {
        .cfg = {.max_message_bytes = max_message_bytes > 0 ? max_message_bytes : 4 << 20}};
    struct local_wait lw = {.replied = 0};
    veil_call c = {.srv = &srv, .m = &m, .peer = *peer, .lw = &lw};
    c.alloc = (ProtobufCAllocator){arena_alloc, arena_free, &c};
    c.deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_metadata_array_init(&c.md);
    pthread_mutex_init(&lw.mu, NULL);
    pthread_cond_init(&lw.cv, NULL);
    ProtobufCMessage *req = unpack(&c, request, len);
    if (req)
        invoke(&c, req);
    pthread_mutex_lock(&lw.mu);
    while (c.deferred && !lw.replied) /* a deferred handler: its reply comes from elsewhere */
        pthread_cond_wait(&lw.cv, &lw.mu);
    pthread_mutex_unlock(&lw.mu);
    pthread_mutex_destroy(&lw.mu);
    pthread_cond_destroy(&lw.cv);
    if (msg && msglen)
        snprintf(msg, msglen, "%s",
                 c.err == VEIL_OK ? ""
                 : c.has_message  ? c.message
                                  : veil_err_message(c.err));
    if (c.reply && reply) {
        grpc_byte_buffer_reader reader;
        if (grpc_byte_buffer_reader_init(&reader, c.reply)) {
            grpc_slice whole = grpc_byte_buffer_reader_readall(&reader);
            grpc_byte_buffer_reader_destroy(&reader);
            reply->len = GRPC_SLICE_LENGTH(whole);
            if ((reply->data = malloc(reply->len ? reply->len : 1)))
                memcpy(reply->data, GRPC_SLICE_START_PTR(whole), reply->len);
            grpc_slice_unref(whole);
        }
    }
    if (c.reply) {
        veil_byte_buffer_wipe(c.reply);
        grpc_byte_buffer_destroy(c.reply);
    }
    grpc_metadata_array_destroy(&c.md);
    arena_wipe(&c);
    while (c.local) {
        struct local_block *next = c.local->next;
        free(c.local);
        c.local = next;
    }
    return c.err;
}

veil_err veil_call_run(const veil_peer *peer, const char *path,
                       veil_err (*fn)(veil_call *call, void *ctx), void *ctx, char *msg,
                       size_t msglen)
{
    struct method m = {.path = (char *)path};
    veil_server srv = {.cfg = {.max_message_bytes = 4 << 20}};
    veil_call c = {.srv = &srv, .m = &m, .peer = *peer};
    c.alloc = (ProtobufCAllocator){arena_alloc, arena_free, &c};
    c.deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_metadata_array_init(&c.md);
    veil_err err = fn(&c, ctx);
    if (err && !c.err)
        c.err = err;
    if (msg && msglen)
        snprintf(msg, msglen, "%s",
                 c.err == VEIL_OK ? "" : c.has_message ? c.message : veil_err_message(c.err));
    grpc_metadata_array_destroy(&c.md);
    arena_wipe(&c);
    while (c.local) {
        struct local_block *next = c.local->next;
        free(c.local);
        c.local = next;
    }
    return c.err;
}

static void dispatch(veil_server *s, veil_call *c)
{
    c->t0 = veil_mono_ns();
    veil_metric_add(m_in_flight, 1, NULL);
    veil_peer_identify(c->call, s->trust_domain, s->cfg.tls.plaintext, &c->md, &c->peer);
    trace_begin(c);
    struct method *m = c->m;

    if (!(m->allow & c->peer.role)) {
        if (c->peer.role == VEIL_PEER_PROBE && !s->cfg.tls.plaintext)
            return reply_error(c, VEIL_ERR_UNAUTHENTICATED, "this port serves health checks only");
        if (c->peer.role == VEIL_PEER_CITIZEN || c->peer.role == VEIL_PEER_PROBE)
            return reply_error(c, VEIL_ERR_UNAUTHENTICATED, "a client certificate is required");
        veil_call_fail(c, VEIL_ERR_DENIED, "caller may not call %s", m->path);
        return send_reply(c);
    }
    /* The method's own size limit, before any worker, database or signature sees the bytes. */
    size_t len = c->payload ? grpc_byte_buffer_length(c->payload) : 0;
    if (len > m->max_request) {
        veil_call_fail(c, VEIL_ERR_EXHAUSTED,
                       "request of %zu bytes exceeds the %zu byte limit of %s", len, m->max_request,
                       m->path);
        return send_reply(c);
    }
    switch (m->exec) {
    case VEIL_EXEC_INLINE:
        run_call(c);
        break;
    case VEIL_EXEC_WORKER:
        if (veil_pool_push(&s->workers, c) != 0)
            reply_error(c, VEIL_ERR_UNAVAILABLE, "server overloaded, retry later");
        break;
    case VEIL_EXEC_WAIT:
        if (veil_pool_push(&s->waiters, c) != 0)
            reply_error(c, VEIL_ERR_UNAVAILABLE, "server overloaded, retry later");
        break;
    case VEIL_EXEC_UNSERVED:
        reply_error(c, VEIL_ERR_UNIMPLEMENTED, "method not implemented");
        break;
    }
}

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    m_calls = veil_metric_counter("veil_rpc_calls_total", "gRPC calls served, by method and status",
                                  "method,status");
    m_latency = veil_metric_histogram(
        "veil_rpc_duration_seconds", "time from a call's arrival to its reply, by method", "method",
        veil_metric_latency_bounds, veil_metric_latency_bounds_len);
    m_in_flight = veil_metric_gauge("veil_rpc_in_flight", "gRPC calls being served", NULL);
}

static void count_finished(veil_call *c)
{
    const char *method = c->m ? c->m->path : "(unknown)";
    veil_metric_add(m_calls, 1,
                    (const char *[]){method, veil_status_name(veil_err_status(c->err))});
    veil_metric_observe(m_latency, (double)(veil_mono_ns() - c->t0) / 1e9,
                        (const char *[]){method});
    veil_metric_add(m_in_flight, -1, NULL);
}

static void log_finished(veil_call *c)
{
    veil_log_level level = VEIL_LOG_DEBUG;
    switch (c->err) {
    case VEIL_OK:
        break;
    case VEIL_ERR_INTERNAL:
    case VEIL_ERR_UNAVAILABLE:
    case VEIL_ERR_NOMEM:
        level = VEIL_LOG_WARN;
        break;
    default:
        level = VEIL_LOG_INFO;
    }
    if (!veil_log_enabled(level))
        return;
    veil_trace_set_current(c->traced ? &c->trace : NULL);
    veil_log(level, "call finished", VL_STR("method", c->m ? c->m->path : "(unknown)"),
             VL_STR("status", veil_status_name(veil_err_status(c->err))),
             VL_STR("message", c->err == VEIL_OK ? ""
                               : c->has_message  ? c->message
                                                 : veil_err_message(c->err)),
             VL_STR("caller", c->peer.uri), VL_BOOL("cancelled", c->cancelled),
             VL_DBL("ms", (double)(veil_mono_ns() - c->t0) / 1e6), VL_END);
    veil_trace_set_current(NULL);
}

static void *cq_main(void *arg)
{
    veil_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct tag *t = ev.tag;
        veil_call *c = t->call;
        switch (t->kind) {
        case TAG_NEW:
            if (!ev.success) { /* the server is shutting down */
                call_free(c);
                break;
            }
            if (!atomic_load(&s->stopping))
                arm(s, c->m);
            dispatch(s, c);
            break;
        case TAG_UNKNOWN:
            if (!ev.success) {
                call_free(c);
                break;
            }
            if (!atomic_load(&s->stopping))
                arm(s, NULL);
            c->t0 = veil_mono_ns();
            veil_metric_add(m_in_flight, 1, NULL);
            reply_error(c, VEIL_ERR_UNIMPLEMENTED, "method not implemented");
            break;
        case TAG_DONE:
            count_finished(c);
            log_finished(c);
            call_free(c);
            break;
        case TAG_SHUTDOWN:
            break;
        }
    }
    return NULL;
}

/* ---- server set-up and tear-down ---- */

int veil_server_is_serving(const veil_server *s)
{
    return atomic_load(&((veil_server *)s)->serving);
}

int veil_server_has_service(const veil_server *s, const char *name)
{
    for (size_t i = 0; i < s->n_services; i++)
        if (strcmp(s->service_names[i], name) == 0)
            return 1;
    return 0;
}

void veil_server_set_serving(veil_server *s, int serving)
{
    atomic_store(&s->serving, serving ? 1 : 0);
}

veil_err veil_server_new(const veil_server_config *cfg, veil_server **out, char *errbuf,
                         size_t errlen)
{
    *out = NULL;
    veil_server *s = calloc(1, sizeof *s);
    if (!s)
        return VEIL_ERR_NOMEM;
    s->cfg = *cfg;
    s->listen_addr = strdup(cfg->listen_addr ? cfg->listen_addr : "127.0.0.1:0");
    s->health_addr = cfg->health_addr && *cfg->health_addr ? strdup(cfg->health_addr) : NULL;
    s->trust_domain = strdup(cfg->trust_domain && *cfg->trust_domain ? cfg->trust_domain : "veil");
    if (s->cfg.workers <= 0)
        s->cfg.workers = 4;
    if (s->cfg.waiters <= 0)
        s->cfg.waiters = 2;
    if (s->cfg.queue_max <= 0)
        s->cfg.queue_max = 4096;
    if (s->cfg.max_message_bytes <= 0)
        s->cfg.max_message_bytes = 4 << 20;
    if (s->cfg.drain_grace_ms <= 0)
        s->cfg.drain_grace_ms = 10000;
    s->shutdown_tag = (struct tag){TAG_SHUTDOWN, NULL};
    pthread_mutex_init(&s->defer_mu, NULL);
    pthread_cond_init(&s->defer_cv, NULL);

    pthread_once(&metrics_once, metrics_init);
    grpc_init();
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         {.integer = s->cfg.max_message_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = s->cfg.max_message_bytes}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
         {.integer = 10000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, {.integer = 1}},
    };
    grpc_channel_args cargs = {sizeof args / sizeof args[0], args};
    s->server = grpc_server_create(&cargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    s->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    grpc_server_register_completion_queue(s->server, s->shutdown_cq, NULL);
    atomic_store(&s->serving, 1);
    veil_err err = veil_health_add(s, &s->health, errbuf, errlen);
    if (err) {
        veil_server_free(s);
        return err;
    }
    *out = s;
    return VEIL_OK;
}

static const veil_method_policy *find_policy(const veil_method_policy *policy, size_t n,
                                             const char *name)
{
    const veil_method_policy *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(policy[i].method, name) != 0)
            continue;
        if (found)
            return NULL; /* duplicate rows are as bad as none */
        found = &policy[i];
    }
    return found;
}

veil_err veil_server_limit(veil_server *s, const char *service, const veil_method_limit *limits,
                           size_t n, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        char path[256];
        snprintf(path, sizeof path, "/%s/%s", service, limits[i].method);
        struct method *m = NULL;
        for (size_t k = 0; k < s->n_methods && !m; k++)
            if (strcmp(s->methods[k].path, path) == 0)
                m = &s->methods[k];
        if (!m || limits[i].max_request_bytes <= 0) {
            snprintf(errbuf, errlen, "limit for %s: no such method, or not a positive size", path);
            return VEIL_ERR_INVALID;
        }
        if (limits[i].max_request_bytes < s->cfg.max_message_bytes)
            m->max_request = (size_t)limits[i].max_request_bytes;
    }
    return VEIL_OK;
}

veil_err veil_server_add(veil_server *s, ProtobufCService *svc, const veil_method_policy *policy,
                         size_t n, char *errbuf, size_t errlen)
{
    const ProtobufCServiceDescriptor *d = svc->descriptor;
    if (s->started || s->n_services == MAX_SERVICES) {
        snprintf(errbuf, errlen, "cannot add service %s now", d->name);
        return VEIL_ERR_INTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!protobuf_c_service_descriptor_get_method_by_name(d, policy[i].method)) {
            snprintf(errbuf, errlen, "policy of %s names unknown method %s", d->name,
                     policy[i].method);
            return VEIL_ERR_INTERNAL;
        }
    }
    struct method *grown = realloc(s->methods, (s->n_methods + d->n_methods) * sizeof *grown);
    if (!grown)
        return VEIL_ERR_NOMEM;
    s->methods = grown;
    for (unsigned i = 0; i < d->n_methods; i++) {
        const ProtobufCMethodDescriptor *md = &d->methods[i];
        const veil_method_policy *p = find_policy(policy, n, md->name);
        if (!p) {
            snprintf(errbuf, errlen, "method %s.%s has no policy row (or more than one)", d->name,
                     md->name);
            return VEIL_ERR_INTERNAL;
        }
        if (p->exec == VEIL_EXEC_UNSERVED)
            continue; /* left to the catch-all: UNIMPLEMENTED */
        struct method *m = &s->methods[s->n_methods];
        size_t len = strlen(d->name) + strlen(md->name) + 3;
        m->path = malloc(len);
        if (!m->path)
            return VEIL_ERR_NOMEM;
        snprintf(m->path, len, "/%s/%s", d->name, md->name);
        m->svc = svc;
        m->index = i;
        m->desc = md;
        m->allow = p->allow;
        m->exec = p->exec;
        m->max_request = (size_t)s->cfg.max_message_bytes;
        m->reg = grpc_server_register_method(s->server, m->path, NULL,
                                             GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!m->reg) {
            snprintf(errbuf, errlen, "cannot register %s", m->path);
            free(m->path);
            return VEIL_ERR_INTERNAL;
        }
        s->n_methods++;
    }
    s->service_names[s->n_services++] = d->name;
    return VEIL_OK;
}

veil_err veil_server_start(veil_server *s, int *port, char *errbuf, size_t errlen)
{
    *port = 0;
    grpc_server_credentials *creds;
    if (s->cfg.tls.plaintext) {
        veil_log(VEIL_LOG_WARN,
                 "DEVELOPMENT MODE: PLAINTEXT TRANSPORT. Traffic is unencrypted and callers "
                 "name themselves in the x-veil-dev-peer header. Never run this in production.",
                 VL_STR("addr", s->listen_addr), VL_END);
        creds = grpc_insecure_server_credentials_create();
    } else {
        creds =
            veil_tls_server_credentials(&s->cfg.tls, s->cfg.client_cert_optional, errbuf, errlen);
        if (!creds)
            return VEIL_ERR_INVALID;
    }
    *port = grpc_server_add_http2_port(s->server, s->listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (*port == 0) {
        snprintf(errbuf, errlen, "cannot listen on %s (address in use or not local)",
                 s->listen_addr);
        return VEIL_ERR_UNAVAILABLE;
    }
    if (s->health_addr) {
        creds = grpc_insecure_server_credentials_create();
        int hp = grpc_server_add_http2_port(s->server, s->health_addr, creds);
        grpc_server_credentials_release(creds);
        if (hp == 0) {
            snprintf(errbuf, errlen, "cannot listen on %s for health checks", s->health_addr);
            return VEIL_ERR_UNAVAILABLE;
        }
    }
    grpc_server_start(s->server);
    s->started = 1;
    for (size_t i = 0; i < s->n_methods; i++)
        for (int k = 0; k < SLOTS_PER_METHOD; k++)
            arm(s, &s->methods[i]);
    for (int k = 0; k < 4; k++)
        arm(s, NULL);
    if (veil_pool_start(&s->workers, "workers", s->cfg.workers, (size_t)s->cfg.queue_max,
                        run_call) != 0 ||
        veil_pool_start(&s->waiters, "waiters", s->cfg.waiters, (size_t)s->cfg.queue_max,
                        run_call) != 0) {
        snprintf(errbuf, errlen, "cannot start worker threads");
        return VEIL_ERR_NOMEM;
    }
    if (pthread_create(&s->cq_thread, NULL, cq_main, s) != 0) {
        snprintf(errbuf, errlen, "cannot start the completion-queue thread");
        return VEIL_ERR_NOMEM;
    }
    s->cq_thread_started = 1;
    return VEIL_OK;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static gpr_timespec in_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

veil_err veil_server_on_drain(veil_server *s, void (*fn)(void *arg), void *arg)
{
    if (s->started || s->n_drain_hooks == MAX_DRAIN_HOOKS)
        return VEIL_ERR_INTERNAL;
    s->drain_hooks[s->n_drain_hooks].fn = fn;
    s->drain_hooks[s->n_drain_hooks].arg = arg;
    s->n_drain_hooks++;
    return VEIL_OK;
}

void veil_server_drain(veil_server *s)
{
    if (!s || !s->started)
        return;
    veil_server_set_serving(s, 0);
    for (size_t i = 0; i < s->n_drain_hooks; i++)
        s->drain_hooks[i].fn(s->drain_hooks[i].arg);
    veil_log(VEIL_LOG_INFO, "draining", VL_INT("delay_ms", s->cfg.drain_delay_ms),
             VL_INT("grace_ms", s->cfg.drain_grace_ms), VL_END);
    if (s->cfg.drain_delay_ms > 0)
        sleep_ms(s->cfg.drain_delay_ms);

    atomic_store(&s->stopping, 1);
    grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &s->shutdown_tag);
    grpc_event ev = grpc_completion_queue_next(s->shutdown_cq, in_ms(s->cfg.drain_grace_ms), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        veil_log(VEIL_LOG_WARN, "cancelling calls still running after the grace period", VL_END);
        grpc_server_cancel_all_calls(s->server);
        grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    /* No new calls can arrive; refuse queued ones and wait for running handlers. */
    atomic_store(&s->draining, 1);
    veil_pool_stop(&s->workers);
    veil_pool_stop(&s->waiters);
    /*
     * Deferred calls are still in flight: whoever finishes them (another
     * service's reply, a batch) sends their replies - delivered, or failed
     * on a call the grace period cancelled - and only then may the server go.
     */
    pthread_mutex_lock(&s->defer_mu);
    if (s->n_deferred > 0)
        veil_log(VEIL_LOG_INFO, "waiting for deferred calls", VL_INT("calls", s->n_deferred),
                 VL_END);
    while (s->n_deferred > 0)
        pthread_cond_wait(&s->defer_cv, &s->defer_mu);
    pthread_mutex_unlock(&s->defer_mu);
    grpc_server_destroy(s->server);
    s->server = NULL;

    grpc_completion_queue_shutdown(s->cq);
    if (s->cq_thread_started)
        pthread_join(s->cq_thread, NULL);
    s->cq_thread_started = 0;
    grpc_completion_queue_shutdown(s->shutdown_cq);
    while (
        grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
        GRPC_QUEUE_SHUTDOWN)
        ;
    s->started = 0;
    veil_log(VEIL_LOG_INFO, "drained", VL_END);
}

void veil_server_free(veil_server *s)
{
    if (!s)
        return;
    if (s->started)
        veil_server_drain(s);
    if (s->server) { /* never started */
        grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &s->shutdown_tag);
        grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_shutdown(s->shutdown_cq);
        while (grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
    }
    grpc_completion_queue_destroy(s->cq);
    grpc_completion_queue_destroy(s->shutdown_cq);
    pthread_mutex_destroy(&s->defer_mu);
    pthread_cond_destroy(&s->defer_cv);
    for (size_t i = 0; i < s->n_methods; i++)
        free(s->methods[i].path);
    free(s->methods);
    free(s->listen_addr);
    free(s->health_addr);
    free(s->health);
    free(s->trust_domain);
    free(s);
    grpc_shutdown();
}
