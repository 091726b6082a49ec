/*
 * echo_server.c - veil-echo, a service built only from libveil, used by the
 * RPC layer's suites and benchmark.  Each method exercises one behaviour of
 * the layer (see proto/veil/testing.proto).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "veil/testing.pb-c.h"
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

#define AUTHENTICATED (VEIL_PEER_ANYONE & ~VEIL_PEER_PROBE)
static const veil_method_policy echo_policy[] = {
    {"Echo", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"Sleep", AUTHENTICATED, VEIL_EXEC_WORKER},
    {"Fail", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"Big", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"Whoami", AUTHENTICATED, VEIL_EXEC_INLINE},
    {"AdminOnly", VEIL_PEER_ADMIN, VEIL_EXEC_INLINE},
    {"Empty", AUTHENTICATED, VEIL_EXEC_INLINE},
};

static Veil__Testing__Echo_Service echo_service = VEIL__TESTING__ECHO__INIT(echo_);

static veil_err echo_start(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen)
{
    *state = NULL;
    return veil_server_add(ctx->server, &echo_service.base, echo_policy,
                           sizeof echo_policy / sizeof echo_policy[0], errbuf, errlen);
}

static veil_service_spec echo_spec = {
    .name = "veil-echo",
    .default_listen = "127.0.0.1:0",
    .client_cert_optional = 1, /* so the suites can call it as a citizen would */
    .start = echo_start,
};

int main(int argc, char **argv)
{
    /* A test knob, not configuration: the suites check both certificate modes. */
    const char *req = getenv("ECHO_REQUIRE_CLIENT_CERT");
    if (req && strcmp(req, "1") == 0)
        echo_spec.client_cert_optional = 0;
    return veil_service_main(argc, argv, &echo_spec);
}
