/*
 * main.c - the pseudonym service: configuration, keys, wiring.
 *
 * Keys: VEIL_KEYS_DIR/pseudonym-<N>.key.  The gateway names the key version
 * in every request (it keeps the rotation state, changed only by RotateKey);
 * this service has no current version of its own, so a key file added to
 * the folder changes nothing until an operator rotates.  New key files are
 * loaded as they appear (veil/service.h: the key folder is watched), on
 * SIGHUP, or on the first request that names their version.
 */
#include <stdio.h>
#include <stdlib.h>

#include "pseudonym.h"
#include "veil/log.h"
#include "veil/service.h"

static veil_err start(const veil_service_ctx *ctx, void **state, char *errbuf, size_t errlen)
{
    struct pseudonym *p = calloc(1, sizeof *p);
    if (!p)
        return VEIL_ERR_NOMEM;
    *state = p;
    p->rpc = pseudonym_rpc;
    veil_err err = veil_keyring_load(ctx->keys_dir, "pseudonym", &p->keys, errbuf, errlen);
    if (err)
        return err;
    veil_log(VEIL_LOG_INFO, "pseudonym keys loaded", VL_INT("newest", veil_keyring_latest(p->keys)),
             VL_END);
    return veil_server_add(ctx->server, &p->rpc.base, pseudonym_policy, pseudonym_policy_len,
                           errbuf, errlen);
}

static void reload(void *state)
{
    struct pseudonym *p = state;
    char err[256];
    if (veil_keyring_refresh(p->keys, err, sizeof err) != VEIL_OK)
        veil_log(VEIL_LOG_ERROR, "cannot reload keys", VL_STR("error", err), VL_END);
    else
        veil_log(VEIL_LOG_INFO, "pseudonym keys reloaded",
                 VL_INT("newest", veil_keyring_latest(p->keys)), VL_END);
}

static void stop(void *state)
{
    struct pseudonym *p = state;
    veil_keyring_free(p->keys);
    free(p);
}

static const veil_service_spec spec = {
    .name = "pseudonym",
    .default_listen = "127.0.0.1:7104",
    .needs_keys = 1,
    .start = start,
    .stop = stop,
    .reload = reload,
};

int main(int argc, char **argv)
{
    return veil_service_main(argc, argv, &spec);
}
