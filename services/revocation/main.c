/*
 * main.c - the revocation service: configuration and wiring.
 *
 * State lives in the service's own database (VEIL_DATABASE_URL, schema from
 * db/revocation, applied by `revocation migrate`).  Besides the worker pool
 * for its RPCs, the service keeps one more database connection: the feed
 * notifier's LISTEN connection, which wakes the long-polls of Changes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "revocation.h"
#include "veil/log.h"
#include "veil/service.h"

static void stop(void *state)
{
    struct revocation *r = state;
    veil_notifier_free(r->notifier);
    revocation_store_close(r->store);
    free(r);
}

static veil_err start(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen)
{
    struct revocation *r = calloc(1, sizeof *r);
    if (!r)
        return VEIL_ERR_NOMEM;
    *state = r;
    r->rpc = revocation_rpc;
    veil_err err = revocation_store_open(ctx->database_url, &r->store);
    if (!err)
        err = veil_notifier_start(ctx->database_url, VEIL_FEED_CHANNEL, &r->notifier);
    /* Long-polls return as soon as SIGTERM starts the drain. */
    if (!err)
        err = veil_server_on_drain(ctx->server, veil_notifier_shutdown, r->notifier);
    if (err) {
        snprintf(errbuf, errlen, "cannot set up the store and feed notifier (%s)",
                 veil_err_name(err));
        return err;
    }
    return veil_server_add(ctx->server, &r->rpc.base, revocation_policy, revocation_policy_len,
                           errbuf, errlen);
}

static const veil_service_spec spec = {
    .name = "revocation",
    .default_listen = "127.0.0.1:7103",
    .migrations = revocation_migrations,
    .n_migrations = &revocation_migrations_count,
    .start = start,
    .stop = stop,
};

int main(int argc, char **argv)
{
    return veil_service_main(argc, argv, &spec);
}
