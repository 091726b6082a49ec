/*
 * rpc_bench.c - the RPC layer's empty-call rate: many calls in flight from
 * one client thread (libveil's asynchronous client) against veil-echo's
 * Empty method, closed loop for a fixed time.
 *
 *   rpc_bench ADDR IDENTITY SECONDS CONNECTIONS IN_FLIGHT_PER_CONNECTION
 *
 * Prints one line: rpc: mode=<tls|plaintext> calls_per_s=… p50_ms=… p99_ms=… errors=…
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "veil/client.h"
#include "veil/testing.pb-c.h"

struct slot {
    double t0;
    int conn;
};

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s ADDR IDENTITY SECONDS CONNECTIONS IN_FLIGHT\n", argv[0]);
        return 2;
    }
    const char *addr = argv[1], *identity = argv[2];
    double seconds = atof(argv[3]);
    int nconn = atoi(argv[4]), depth = atoi(argv[5]);
    char ca[512], cert[512], key[512], err[512];
    veil_tls_config tls;
    bench_tls(&tls, identity, ca, cert, key, sizeof ca);
    if (tls.plaintext)
        tls.dev_identity = "spiffe://veil/svc/gateway";

    veil_channel **ch = calloc((size_t)nconn, sizeof *ch);
    veil_channel_options opt = {.own_connection = 1};
    for (int i = 0; i < nconn; i++)
        if (veil_channel_new(addr, &tls, &veil__testing__echo__descriptor, &opt, &ch[i], err,
                             sizeof err) != VEIL_OK) {
            fprintf(stderr, "rpc_bench: %s\n", err);
            return 1;
        }
    veil_cq *cq;
    if (veil_cq_new(&cq) != VEIL_OK)
        return 1;

    Veil__Testing__EchoRequest req = VEIL__TESTING__ECHO_REQUEST__INIT;
    struct slot *slots = calloc((size_t)(nconn * depth), sizeof *slots);
    bench_lat lat = {0};
    long ok = 0, errors = 0, inflight = 0;
    double warm_end = bench_now_s() + 1.0, end = warm_end + seconds;

    for (int i = 0; i < nconn * depth; i++) {
        veil_pending *p;
        slots[i].conn = i % nconn;
        slots[i].t0 = bench_now_s();
        if (veil_channel_start(ch[slots[i].conn], "Empty", &req.base, 5000, cq, &slots[i], &p) ==
            VEIL_OK)
            inflight++;
    }
    while (inflight > 0) {
        veil_pending *p = veil_cq_next(cq, 10000);
        if (!p)
            break;
        inflight--;
        void *user;
        Veil__Testing__EchoReply *resp;
        veil_status st;
        veil_err e = veil_pending_finish(p, NULL, &resp, &st, &user);
        struct slot *s = user;
        double now = bench_now_s();
        if (now >= warm_end && now < end) {
            if (e == VEIL_OK) {
                ok++;
                bench_lat_add(&lat, (now - s->t0) * 1000.0);
            } else {
                errors++;
            }
        }
        if (resp)
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (now < end) {
            s->t0 = now;
            if (veil_channel_start(ch[s->conn], "Empty", &req.base, 5000, cq, s, &p) == VEIL_OK)
                inflight++;
        }
    }
    printf("rpc: mode=%s connections=%d in_flight=%d calls_per_s=%.0f p50_ms=%.3f p99_ms=%.3f "
           "errors=%ld\n",
           tls.plaintext ? "plaintext" : "tls", nconn, nconn * depth, (double)ok / seconds,
           bench_lat_pct(&lat, 50), bench_lat_pct(&lat, 99), errors);
    bench_lat_free(&lat);
    free(slots);
    veil_cq_free(cq);
    for (int i = 0; i < nconn; i++)
        veil_channel_free(ch[i]);
    free(ch);
    return errors ? 1 : 0;
}
