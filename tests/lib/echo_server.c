/*
 * echo_server.c - veil-echo, a service built only from libveil, used by the
 * RPC layer's suites and benchmark.  Each method exercises one behaviour of
 * the layer (see proto/veil/testing.proto).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "veil/testing.pb-c.h"
#include "veil/codec.h"
#include "veil/service.h"

static void echo_echo(Veil__Testing__Echo_Service *svc, const Veil__Testing__EchoRequest *req,
                      Veil__Testing__EchoReply_Closure done, void *call)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    resp.text = req->text;
    resp.remaining_ms = veil_call_remaining_ms(call);
    const char *v;
    size_t len;
    if (req->metadata_key[0] && veil_call_metadata(call, req->metadata_key, &v, &len)) {
        char *copy = veil_call_alloc(call, len + 1);
        memcpy(copy, v, len);
        copy[len] = '\0';
        resp.metadata_value = copy;
    }
    VEIL_REPLY(done, call, VEIL_OK, &resp);
}

static void echo_sleep(Veil__Testing__Echo_Service *svc, const Veil__Testing__EchoRequest *req,
                       Veil__Testing__EchoReply_Closure done, void *call)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    struct timespec ts = {req->sleep_ms / 1000, (long)(req->sleep_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    resp.text = req->text;
    VEIL_REPLY(done, call, VEIL_OK, &resp);
}

static void echo_fail(Veil__Testing__Echo_Service *svc, const Veil__Testing__EchoRequest *req,
                      Veil__Testing__EchoReply_Closure done, void *call)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    veil_err err = req->fail_code < VEIL_ERR__COUNT ? (veil_err)req->fail_code : VEIL_ERR_INTERNAL;
    if (req->fail_message[0])
        veil_call_fail(call, err, "%s", req->fail_message);
    VEIL_REPLY(done, call, err, &resp);
}

static void echo_big(Veil__Testing__Echo_Service *svc, const Veil__Testing__EchoRequest *req,
                     Veil__Testing__EchoReply_Closure done, void *call)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    resp.payload.len = req->reply_bytes;
    resp.payload.data = veil_call_alloc(call, req->reply_bytes);
    veil_err err = resp.payload.data ? VEIL_OK : VEIL_ERR_NOMEM;
    if (!err)
        memset(resp.payload.data, 'x', req->reply_bytes);
    VEIL_REPLY(done, call, err, &resp);
}

static void echo_whoami(Veil__Testing__Echo_Service *svc, const Veil__Testing__EchoRequest *req,
                        Veil__Testing__EchoReply_Closure done, void *call)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    const veil_peer *p = veil_call_peer(call);
    char text[512];
    snprintf(text, sizeof text, "role=%u name=%s uri=%s", p->role, p->name, p->uri);
    resp.peer = veil_call_strdup(call, text);
    VEIL_REPLY(done, call, VEIL_OK, &resp);
}

static void echo_admin_only(Veil__Testing__Echo_Service *svc,
                            const Veil__Testing__EchoRequest *req,
                            Veil__Testing__EchoReply_Closure done, void *call)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    resp.text = "admin ok";
    VEIL_REPLY(done, call, VEIL_OK, &resp);
}

static void echo_empty(Veil__Testing__Echo_Service *svc, const Veil__Testing__EchoRequest *req,
                       Veil__Testing__EchoReply_Closure done, void *call)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    VEIL_REPLY(done, call, VEIL_OK, &resp);
}

/*
 * Later: the handler defers the call and returns; one finisher thread
 * answers every deferred call once its sleep_ms have passed, so many calls
 * wait at once with no thread parked for any of them (veil_call_defer).
 * With text "resume" the finisher hands the reply to a worker
 * (veil_call_resume) instead of sending it itself.
 */
struct later {
    struct later *next;
    veil_call *call;
    Veil__Testing__EchoReply_Closure done;
    int64_t due_ms;
    int resume;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct later *head;
    int stopping;
    pthread_t thread;
} later_q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0};

static void later_reply(struct later *l)
{
    Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
    resp.text = l->resume ? "answered by a worker" : "answered later";
    VEIL_REPLY(l->done, l->call, VEIL_OK, &resp); /* sent now; the call may be gone */
}

static void later_resumed(veil_call *call, void *arg)
{
    (void)call;
    later_reply(arg);
}

static void *later_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&later_q.mu);
    while (!later_q.stopping || later_q.head) {
        int64_t now = veil_mono_ns() / 1000000;
        struct later **pp = &later_q.head, *due = NULL;
        while (*pp) {
            if ((*pp)->due_ms <= now) {
                due = *pp;
                *pp = due->next;
                break;
            }
            pp = &(*pp)->next;
        }
        if (!due) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 5 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&later_q.cv, &later_q.mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&later_q.mu);
        if (!due->resume || veil_call_resume(due->call, later_resumed, due) != 0)
            later_reply(due);
        pthread_mutex_lock(&later_q.mu);
    }
    pthread_mutex_unlock(&later_q.mu);
    return NULL;
}

static void echo_later(Veil__Testing__Echo_Service *svc, const Veil__Testing__EchoRequest *req,
                       Veil__Testing__EchoReply_Closure done, void *call)
{
    struct later *l = veil_call_alloc(call, sizeof *l);
    if (!l) {
        Veil__Testing__EchoReply resp = VEIL__TESTING__ECHO_REPLY__INIT;
        VEIL_REPLY(done, call, VEIL_ERR_NOMEM, &resp);
        return;
    }
    *l = (struct later){.call = call,
                        .done = done,
                        .due_ms = veil_mono_ns() / 1000000 + req->sleep_ms,
                        .resume = strcmp(req->text, "resume") == 0};
    veil_call_defer(call);
    pthread_mutex_lock(&later_q.mu);
    l->next = later_q.head;
    later_q.head = l;
    pthread_cond_signal(&later_q.cv);
    pthread_mutex_unlock(&later_q.mu);
}

#define AUTHENTICATED (VEIL_PEER_ANYONE & ~VEIL_PEER_PROBE)
static const veil_method_policy echo_policy[] = {
    {"Echo", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"Sleep", AUTHENTICATED, VEIL_EXEC_WORKER},
    {"Fail", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"Big", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"Whoami", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"AdminOnly", VEIL_PEER_ADMIN, VEIL_EXEC_INLINE},
    {"Empty", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"Later", AUTHENTICATED, VEIL_EXEC_INLINE},
};

static Veil__Testing__Echo_Service echo_service = VEIL__TESTING__ECHO__INIT(echo_);

static veil_err echo_start(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen)
{
    *state = NULL;
    if (pthread_create(&later_q.thread, NULL, later_main, NULL) != 0) {
        snprintf(errbuf, errlen, "cannot start the finisher thread");
        return VEIL_ERR_NOMEM;
    }
    return veil_server_add(ctx->server, &echo_service.base, echo_policy,
                           sizeof echo_policy / sizeof echo_policy[0], errbuf, errlen);
}

/* After the drain: every deferred call was answered; the finisher ends. */
static void echo_stop(void *state)
{
    (void)state;
    pthread_mutex_lock(&later_q.mu);
    later_q.stopping = 1;
    pthread_cond_signal(&later_q.cv);
    pthread_mutex_unlock(&later_q.mu);
    pthread_join(later_q.thread, NULL);
}

static veil_service_spec echo_spec = {
    .name = "veil-echo",
    .default_listen = "127.0.0.1:0",
    .client_cert_optional = 1, /* so the suites can call it as a citizen would */
    .start = echo_start,
    .stop = echo_stop,
};

int main(int argc, char **argv)
{
    /* A test knob, not configuration: the suites check both certificate modes. */
    const char *req = getenv("ECHO_REQUIRE_CLIENT_CERT");
    if (req && strcmp(req, "1") == 0)
        echo_spec.client_cert_optional = 0;
    return veil_service_main(argc, argv, &echo_spec);
}
