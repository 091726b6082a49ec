/*
 * grpc_bare.c - grpc core alone: the reference the RPC layer's cost is
 * measured against (tests/bench/rpc_run).
 *
 *   grpc_bare ADDR PORT_FILE
 *
 * The server the notes measured (../shared/notes/grpc-core-c.md section 4):
 * one completion-queue thread, the veil.testing.Echo/Empty method registered
 * with READ_INITIAL_BYTE_BUFFER, 64 request slots, the reply (an empty
 * message and OK) started inline in one batch.  Nothing else: no policy, no
 * peer identity, no protobuf, no logging, no worker pools, plaintext.  It
 * serves until it is killed; the benchmark only reads its CPU time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#define SLOTS  64
#define METHOD "/veil.testing.Echo/Empty"

struct slot {
    int replying;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *request, *reply;
    int cancelled;
};

static grpc_server *server;
static grpc_completion_queue *cq;
static void *method;

static void post(void)
{
    struct slot *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    grpc_metadata_array_init(&s->md);
    if (grpc_server_request_registered_call(server, method, &s->call, &s->deadline, &s->md,
                                            &s->request, cq, cq, s) != GRPC_CALL_OK)
        abort();
}

static void reply(struct slot *s)
{
    grpc_slice empty = grpc_empty_slice();
    s->replying = 1;
    s->reply = grpc_raw_byte_buffer_create(&empty, 0);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->reply;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &s->cancelled;
    if (grpc_call_start_batch(s->call, ops, 4, s, NULL) != GRPC_CALL_OK)
        abort();
}

static void release(struct slot *s)
{
    if (s->request)
        grpc_byte_buffer_destroy(s->request);
    if (s->reply)
        grpc_byte_buffer_destroy(s->reply);
    grpc_metadata_array_destroy(&s->md);
    if (s->call)
        grpc_call_unref(s->call);
    free(s);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ADDR PORT_FILE\n", argv[0]);
        return 2;
    }
    grpc_init();
    grpc_arg arg = {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}};
    grpc_channel_args args = {1, &arg};
    server = grpc_server_create(&args, NULL);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    method = grpc_server_register_method(server, METHOD, NULL,
                                         GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, argv[1], creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        fprintf(stderr, "grpc_bare: cannot listen on %s\n", argv[1]);
        return 1;
    }
    grpc_server_start(server);
    for (int i = 0; i < SLOTS; i++)
        post();
    FILE *f = fopen(argv[2], "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0) {
        fprintf(stderr, "grpc_bare: cannot write %s\n", argv[2]);
        return 1;
    }
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct slot *s = ev.tag;
        if (!s->replying && ev.success) {
            post();
            reply(s);
        } else {
            release(s);
        }
    }
}
