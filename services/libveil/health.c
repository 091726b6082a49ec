/*
 * health.c - grpc.health.v1.Health, added to every veil server.
 *
 * Check answers SERVING while the server serves, NOT_SERVING once it drains,
 * and NOT_FOUND for a service name it does not host.  Anyone may call it,
 * including a plaintext probe on the health port.  Watch is server-streaming,
 * which the layer does not serve: callers get UNIMPLEMENTED.
 */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "internal.h"

struct health {
    Grpc__Health__V1__Health_Service rpc;
    veil_server *srv;
};

static void health_check(Grpc__Health__V1__Health_Service *svc,
                         const Grpc__Health__V1__HealthCheckRequest *req,
                         Grpc__Health__V1__HealthCheckResponse_Closure done, void *call)
{
    const struct health *h = (const struct health *)svc;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    veil_err err = VEIL_OK;

    if (req->service && req->service[0] && strcmp(req->service, "grpc.health.v1.Health") != 0 &&
        !veil_server_has_service(h->srv, req->service)) {
        veil_call_fail(call, VEIL_ERR_NOT_FOUND, "unknown service");
        err = VEIL_ERR_NOT_FOUND;
    }
    resp.status = veil_server_is_serving(h->srv)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    VEIL_REPLY(done, call, err, &resp);
}

/* Never dispatched (the policy marks it unserved); here so __INIT is complete. */
static void health_watch(Grpc__Health__V1__Health_Service *svc,
                         const Grpc__Health__V1__HealthCheckRequest *req,
                         Grpc__Health__V1__HealthCheckResponse_Closure done, void *call)
{
    VEIL_REPLY(done, call, VEIL_ERR_UNIMPLEMENTED, NULL);
}

const veil_method_policy veil_health_policy[] = {
    {"Check", VEIL_PEER_ANYONE, VEIL_EXEC_INLINE},
    {"Watch", VEIL_PEER_ANYONE, VEIL_EXEC_UNSERVED},
};
const size_t veil_health_policy_len = sizeof veil_health_policy / sizeof veil_health_policy[0];

veil_err veil_health_add(veil_server *srv, void **out, char *errbuf, size_t errlen)
{
    /* One per server: a process may run several (the gateway's admin listener). */
    static const Grpc__Health__V1__Health_Service init = GRPC__HEALTH__V1__HEALTH__INIT(health_);
    *out = NULL;
    struct health *h = malloc(sizeof *h);
    if (!h)
        return VEIL_ERR_NOMEM;
    h->rpc = init;
    h->srv = srv;
    *out = h;
    return veil_server_add(srv, &h->rpc.base, veil_health_policy, veil_health_policy_len, errbuf,
                           errlen);
}
