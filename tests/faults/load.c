/* load.c - background enrolments and logins on a stack (load.h). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>

#include "e2e.h"
#include "load.h"
#include "veil/codec.h"

veil_channel *load_channel(h_stack *s, const char *identity, const ProtobufCServiceDescriptor *svc)
{
    h_tls t;
    char err[256];
    veil_channel *ch = NULL;
    h_tls_for(&t, identity);
    if (veil_channel_new(s->gateway.addr, &t.cfg, svc, NULL, &ch, err, sizeof err) != VEIL_OK) {
        fprintf(stderr, "load: channel as %s: %s\n", identity, err);
        return NULL;
    }
    return ch;
}

/* The ID number of person n of a series: Dongcheng, Beijing, born 1950-01-01 + n days. */
static void id_number(int series, int n, char out[19])
{
    struct tm tm = {.tm_year = 50, .tm_mon = 0, .tm_mday = 1 + n};
    time_t t = timegm(&tm);
    gmtime_r(&t, &tm);
    char first17[64];
    snprintf(first17, sizeof first17, "110101%04d%02d%02d%03d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, 100 + series % 900);
    e2e_id_number(first17, out);
}

veil_err load_enrol(h_stack *s, veil_channel *ch, vw_wallet *w, int series, int n, veil_status *st)
{
    Veil__Gateway__WalletEnrolRequest req = VEIL__GATEWAY__WALLET_ENROL_REQUEST__INIT;
    Veil__Gateway__WalletEnrolResponse *resp = NULL;
    unsigned char sig[64], rid[16], sealed[VEIL_ENROL_SEALED_BYTES];
    char request_id[40], id[19];
    id_number(series, n, id);
    randombytes_buf(rid, sizeof rid);
    veil_b64url_encode(request_id, sizeof request_id, rid, sizeof rid);
    vw_attest(w, s->proofing_seed, id, "压力测试", 1, veil_now_ms(), sig, &req);
    req.request_id = request_id;
    req.device_label = "load";
    e2e_seal(s, w, &req, sealed);
    veil_err err = veil_channel_call(ch, "Enrol", &req.base, NULL, LOAD_TIMEOUT_MS, &resp, st);
    if (!err) {
        err = vw_wallet_enrolled(w, resp);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return err;
}

veil_err load_login(veil_channel *ch, const char *app, const vw_wallet *w, const char *const *attrs,
                    size_t n, veil_status *st)
{
    Veil__Gateway__BeginLoginRequest bl = VEIL__GATEWAY__BEGIN_LOGIN_REQUEST__INIT;
    Veil__Gateway__BeginLoginResponse *challenge = NULL;
    Veil__Gateway__CompleteLoginRequest cl = VEIL__GATEWAY__COMPLETE_LOGIN_REQUEST__INIT;
    Veil__Gateway__CompleteLoginResponse *done = NULL;
    char *ticket = NULL;
    veil_err err =
        veil_channel_call(ch, "BeginLogin", &bl.base, NULL, LOAD_TIMEOUT_MS, &challenge, st);
    if (err)
        return err;
    err = vw_ticket(w, app, challenge->challenge.data, challenge->challenge.len, veil_now_ms(),
                    &ticket);
    protobuf_c_message_free_unpacked(&challenge->base, NULL);
    if (err)
        return err;
    cl.ticket = ticket;
    cl.attributes = (char **)attrs;
    cl.n_attributes = n;
    err = veil_channel_call(ch, "CompleteLogin", &cl.base, NULL, LOAD_TIMEOUT_MS, &done, st);
    if (!err)
        protobuf_c_message_free_unpacked(&done->base, NULL);
    free(ticket);
    return err;
}

static void record(load_thread *t, int64_t start, veil_err err, const veil_status *st)
{
    if (t->n_ops == t->cap_ops) {
        size_t cap = t->cap_ops ? t->cap_ops * 2 : 256;
        load_op *grown = realloc(t->ops, cap * sizeof *grown);
        if (!grown)
            abort();
        t->ops = grown;
        t->cap_ops = cap;
    }
    load_op *op = &t->ops[t->n_ops++];
    op->start_ms = start;
    op->end_ms = veil_now_ms();
    op->err = err;
    snprintf(op->message, sizeof op->message, "%.95s", err ? st->message : "");
}

static void keep_enrolled(load_thread *t, vw_wallet *w)
{
    if (t->n_enrolled == t->cap_enrolled) {
        size_t cap = t->cap_enrolled ? t->cap_enrolled * 2 : 64;
        vw_wallet **grown = realloc(t->enrolled, cap * sizeof *grown);
        if (!grown)
            abort();
        t->enrolled = grown;
        t->cap_enrolled = cap;
    }
    t->enrolled[t->n_enrolled++] = w;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *load_main(void *arg)
{
    load_thread *t = arg;
    char identity[96];
    const ProtobufCServiceDescriptor *svc = t->kind == LOAD_ENROL
                                                ? &veil__gateway__wallet__descriptor
                                                : &veil__gateway__login__descriptor;
    snprintf(identity, sizeof identity, t->kind == LOAD_ENROL ? "none" : "app/%s", t->app);
    veil_channel *ch = load_channel(t->stack, identity, svc);
    for (int i = 0; ch && !atomic_load(&t->stop); i++) {
        veil_status st;
        memset(&st, 0, sizeof st);
        int64_t start = veil_now_ms();
        veil_err err;
        if (t->kind == LOAD_ENROL) {
            vw_wallet *w;
            if (vw_wallet_new(&w) != VEIL_OK)
                break;
            err = load_enrol(t->stack, ch, w, t->id, i, &st);
            if (err)
                vw_wallet_free(w);
            else
                keep_enrolled(t, w);
        } else {
            err = load_login(ch, t->app, t->wallets[(size_t)i % t->n_wallets], t->attrs, t->n_attrs,
                             &st);
        }
        record(t, start, err, &st);
        if (!err)
            atomic_fetch_add(&t->n_ok, 1);
        if (t->pause_ms)
            pause_ms(t->pause_ms);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    return NULL;
}

int load_start(load_thread *t)
{
    atomic_store(&t->stop, 0);
    atomic_store(&t->n_ok, 0);
    return pthread_create(&t->thread, NULL, load_main, t) == 0 ? 0 : -1;
}

int load_wait_ok(load_thread *t, size_t n, int timeout_ms)
{
    for (int waited = 0; atomic_load(&t->n_ok) < n; waited += 10) {
        if (waited >= timeout_ms)
            return -1;
        pause_ms(10);
    }
    return 0;
}

void load_stop(load_thread *t)
{
    atomic_store(&t->stop, 1);
    pthread_join(t->thread, NULL);
}

void load_free(load_thread *t)
{
    for (size_t i = 0; i < t->n_enrolled; i++)
        vw_wallet_free(t->enrolled[i]);
    free(t->enrolled);
    free(t->ops);
    t->enrolled = NULL;
    t->ops = NULL;
    t->n_ops = t->n_enrolled = t->cap_ops = t->cap_enrolled = 0;
}

void load_stack_up(h_stack *s, const char *const *gateway_env, vw_wallet **out, size_t n,
                   const char *first12, const char *name)
{
    if (h_stack_start(s, gateway_env) != 0)
        ck_abort_msg("the stack did not start");
    for (size_t i = 0; i < n; i++) {
        char id[19], first17[64];
        snprintf(first17, sizeof first17, "%.12s%02zu%s", first12, i + 1, "246");
        e2e_id_number(first17, id);
        out[i] = e2e_enrol(s, id, name);
    }
}

void load_stack_down(h_stack *s, vw_wallet **known, size_t n)
{
    for (size_t i = 0; i < n; i++)
        vw_wallet_free(known[i]);
    ck_assert_int_eq(h_stack_stop(s), 0);
}

size_t load_count(const load_thread *t, int err, int64_t from_ms, int64_t to_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_ops; i++)
        if (t->ops[i].start_ms >= from_ms && t->ops[i].start_ms < to_ms &&
            (err < 0 || (int)t->ops[i].err == err))
            n++;
    return n;
}
