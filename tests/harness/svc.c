/* svc.c - a database-backed service under test (svc.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc.h"
#include "veil/codec.h"
#include "veil/common.pb-c.h"

/* Adds NAME=VALUE (name ends with '='). */
static void add_env(h_svc *s, const char *name, const char *value)
{
    if (s->n_env == H_SVC_ENV_MAX) {
        fprintf(stderr, "svc: too many environment variables\n");
        abort();
    }
    snprintf(s->env[s->n_env], sizeof s->env[s->n_env], "%s%s", name, value);
    s->envp[s->n_env] = s->env[s->n_env];
    s->envp[++s->n_env] = NULL;
}

int h_svc_migrate(const char *binary, const char *conninfo, const char *keys_dir)
{
    char identity[96], cmd[4096], log[600];
    h_tls t;
    snprintf(identity, sizeof identity, "svc/%s", binary);
    h_tls_for(&t, identity);
    snprintf(log, sizeof log, "%s/%s-migrate.log", h_env("VEIL_TEST_DIR"), binary);
    /* Paths and the connection string hold no single quotes. */
    snprintf(cmd, sizeof cmd,
             "VEIL_DATABASE_URL='%s' VEIL_TLS_CA='%s' VEIL_TLS_CERT='%s' VEIL_TLS_KEY='%s' "
             "VEIL_KEYS_DIR='%s' '%s/%s' migrate >>'%s' 2>&1",
             conninfo, t.ca, t.cert, t.key, keys_dir ? keys_dir : h_env("VEIL_TEST_DIR"),
             h_env("VEIL_TEST_BIN"), binary, log);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "svc: %s migrate failed (status %d), see %s\n", binary, rc, log);
    return rc;
}

static int spawn(h_svc *s)
{
    char identity[96];
    snprintf(identity, sizeof identity, "svc/%s", s->binary);
    return h_spawn(&s->proc, s->binary, identity, s->envp);
}

int h_svc_start(h_svc *s, const char *binary, const char *keys_purpose,
                const char *const *extra_env)
{
    memset(s, 0, sizeof *s);
    snprintf(s->binary, sizeof s->binary, "%s", binary);
    s->db = h_db_create(binary);
    add_env(s, "VEIL_DATABASE_URL=", s->db);
    if (keys_purpose) {
        s->keys = h_tempdir("keys");
        h_keyfile(s->keys, keys_purpose, 1);
        add_env(s, "VEIL_KEYS_DIR=", s->keys);
    }
    for (const char *const *e = extra_env; e && *e; e++)
        add_env(s, "", *e);
    if (h_svc_migrate(binary, s->db, s->keys) != 0)
        return -1;
    return spawn(s);
}

int h_svc_respawn(h_svc *s)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->proc.port);
    /* Listen where clients already point (the last such entry wins). */
    add_env(s, "VEIL_LISTEN_ADDR=", listen);
    return spawn(s);
}

int h_svc_restart(h_svc *s)
{
    return h_stop(&s->proc) == 0 ? h_svc_respawn(s) : -1;
}

int h_svc_stop(h_svc *s)
{
    int rc = s->proc.pid > 0 ? h_stop(&s->proc) : 0;
    free(s->db);
    free(s->keys);
    s->db = s->keys = NULL;
    return rc;
}

void *h_feed_poll_thread(void *poll)
{
    h_feed_poll *a = poll;
    Veil__ChangesRequest req = VEIL__CHANGES_REQUEST__INIT;
    Veil__ChangesResponse *resp;
    veil_status st;
    req.after_seq = a->after;
    req.wait_ms = a->wait_ms;
    a->err = veil_channel_call(a->ch, "Changes", &req.base, NULL, a->timeout_ms, &resp, &st);
    a->returned_ns = veil_mono_ns();
    if (!a->err) {
        a->n = resp->n_changes;
        a->first_seq = resp->n_changes ? resp->changes[0]->seq : 0;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    veil_client_thread_done();
    return NULL;
}

int64_t h_svc_feed_head(veil_channel *ch)
{
    Veil__ChangesRequest req = VEIL__CHANGES_REQUEST__INIT;
    Veil__ChangesResponse *resp;
    veil_status st;
    req.max = 1;
    ck_assert_int_eq(veil_channel_call(ch, "Changes", &req.base, NULL, 10000, &resp, &st), VEIL_OK);
    int64_t head = resp->head_seq;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return head;
}
