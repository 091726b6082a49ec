/*
 * feed.c - change feeds (veil/feed.h): the LISTEN thread that wakes
 * long-polls, the long-poll itself, and the follower thread that consumes
 * a feed.  docs/internals/change-feed.md explains the protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>

#include "veil/codec.h"
#include "veil/feed.h"
#include "veil/formats.h"
#include "veil/log.h"

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     2000
#define POLL_WHILE_DOWN_MS 200 /* a wait's longest slice while LISTEN is down */

static int64_t mono_ms(void)
{
    return veil_mono_ns() / 1000000;
}

/* A CLOCK_MONOTONIC deadline ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* ---- the notifier ---- */

struct veil_notifier {
    char *conninfo;
    char *channel;
    pthread_t thread;
    int thread_started;
    int wake[2]; /* self-pipe: interrupts the thread's poll() when it must quit */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;  /* under mu */
    int connected; /* under mu */
    int stopping;  /* under mu: waits return VEIL_WAIT_STOPPING */
    atomic_int quit;
};

/* Moves the generation and wakes every waiter; connected < 0 leaves it as it is. */
static void bump(veil_notifier *n, int connected)
{
    pthread_mutex_lock(&n->mu);
    n->gen++;
    if (connected >= 0)
        n->connected = connected;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* Sends LISTEN for the channel; NULL on success, else why not. */
static const char *listen_on(PGconn *c, const char *channel)
{
    char *ident = PQescapeIdentifier(c, channel, strlen(channel));
    char sql[256];
    int fits = ident && snprintf(sql, sizeof sql, "LISTEN %s", ident) < (int)sizeof sql;
    PQfreemem(ident);
    if (!fits)
        return "channel name cannot be quoted";
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? NULL : PQerrorMessage(c);
}

/* Opens the LISTEN connection; NULL when the database cannot be reached. */
static PGconn *listen_connect(veil_notifier *n)
{
    /* Later keywords override what the conninfo says: keepalives notice a
     * silently dead TCP peer within about a minute. */
    const char *keys[] = {
        "dbname",          "connect_timeout",     "application_name", "keepalives",
        "keepalives_idle", "keepalives_interval", "keepalives_count", NULL};
    const char *vals[] = {n->conninfo, "3", "veil feed notifier", "1", "30", "10", "3", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    const char *why;
    if (!c || PQstatus(c) != CONNECTION_OK)
        why = c ? PQerrorMessage(c) : "out of memory";
    else if ((why = listen_on(c, n->channel)) == NULL && PQsetnonblocking(c, 1) != 0)
        why = "cannot make the connection non-blocking";
    if (!why)
        return c;
    /* libpq's messages name the host and socket, never data. */
    veil_log(VEIL_LOG_WARN, "feed notifier cannot listen", VL_STR("channel", n->channel),
             VL_STR("error", why), VL_END);
    PQfinish(c);
    return NULL;
}

/* Reads notifications until the connection fails or the notifier quits. */
static void listen_loop(veil_notifier *n, PGconn *c)
{
    struct pollfd fds[2] = {{.fd = PQsocket(c), .events = POLLIN},
                            {.fd = n->wake[0], .events = POLLIN}};
    while (!atomic_load(&n->quit)) {
        int rc = poll(fds, 2, -1);
        if (rc < 0 && errno != EINTR)
            return;
        if (rc <= 0 || !(fds[0].revents & (POLLIN | POLLERR | POLLHUP)))
            continue;
        if (!PQconsumeInput(c) || PQstatus(c) != CONNECTION_OK) {
            veil_log(VEIL_LOG_WARN, "feed notifier lost its connection",
                     VL_STR("error", PQerrorMessage(c)), VL_END);
            return;
        }
        int got = 0;
        PGnotify *note;
        while ((note = PQnotifies(c)) != NULL) {
            got = 1;
            PQfreemem(note);
        }
        if (got)
            bump(n, -1);
    }
}

/* Sleeps ms unless the notifier quits first. */
static void nap(veil_notifier *n, int ms)
{
    struct pollfd fd = {.fd = n->wake[0], .events = POLLIN};
    if (!atomic_load(&n->quit))
        (void)poll(&fd, 1, ms);
}

static void *notifier_main(void *arg)
{
    veil_notifier *n = arg;
    int backoff = 0, was_up = 0;
    while (!atomic_load(&n->quit)) {
        PGconn *c = listen_connect(n);
        if (!c) {
            backoff = backoff ? backoff * 2 : BACKOFF_MIN_MS;
            if (backoff > BACKOFF_MAX_MS)
                backoff = BACKOFF_MAX_MS;
            nap(n, backoff);
            continue;
        }
        backoff = 0;
        if (was_up)
            veil_log(VEIL_LOG_INFO, "feed notifier listening again", VL_STR("channel", n->channel),
                     VL_END);
        was_up = 1;
        /* Notifications sent while we were away are lost: every waiter looks again. */
        bump(n, 1);
        listen_loop(n, c);
        PQfinish(c);
        bump(n, 0);
    }
    return NULL;
}

veil_err veil_notifier_start(const char *conninfo, const char *channel, veil_notifier **out)
{
    *out = NULL;
    veil_notifier *n = calloc(1, sizeof *n);
    if (!n)
        return VEIL_ERR_NOMEM;
    n->wake[0] = n->wake[1] = -1;
    pthread_mutex_init(&n->mu, NULL);
    cond_init_monotonic(&n->cv);
    if (!(n->conninfo = strdup(conninfo)) || !(n->channel = strdup(channel)) ||
        pipe2(n->wake, O_CLOEXEC | O_NONBLOCK) != 0 ||
        pthread_create(&n->thread, NULL, notifier_main, n) != 0) {
        veil_notifier_free(n);
        return VEIL_ERR_NOMEM;
    }
    n->thread_started = 1;
    *out = n;
    return VEIL_OK;
}

uint64_t veil_notifier_generation(veil_notifier *n)
{
    pthread_mutex_lock(&n->mu);
    uint64_t g = n->gen;
    pthread_mutex_unlock(&n->mu);
    return g;
}

veil_wait_result veil_notifier_wait(veil_notifier *n, uint64_t gen, int64_t timeout_ms)
{
    veil_wait_result res = VEIL_WAIT_TIMEOUT;
    pthread_mutex_lock(&n->mu);
    if (!n->connected && timeout_ms > POLL_WHILE_DOWN_MS)
        timeout_ms = POLL_WHILE_DOWN_MS;
    struct timespec until = deadline_in(timeout_ms > 0 ? timeout_ms : 0);
    while (n->gen == gen && !n->stopping)
        if (pthread_cond_timedwait(&n->cv, &n->mu, &until) == ETIMEDOUT)
            break;
    if (n->stopping)
        res = VEIL_WAIT_STOPPING;
    else if (n->gen != gen)
        res = VEIL_WAIT_NOTIFIED;
    pthread_mutex_unlock(&n->mu);
    return res;
}

void veil_notifier_shutdown(void *notifier)
{
    veil_notifier *n = notifier;
    pthread_mutex_lock(&n->mu);
    n->stopping = 1;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

void veil_notifier_free(veil_notifier *n)
{
    if (!n)
        return;
    veil_notifier_shutdown(n);
    if (n->thread_started) {
        atomic_store(&n->quit, 1);
        char b = 1;
        if (write(n->wake[1], &b, 1) < 0)
            veil_log(VEIL_LOG_ERROR, "cannot wake the feed notifier", VL_END);
        pthread_join(n->thread, NULL);
    }
    if (n->wake[0] >= 0)
        close(n->wake[0]);
    if (n->wake[1] >= 0)
        close(n->wake[1]);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n->conninfo);
    free(n->channel);
    free(n);
}

/* ---- the long-poll ---- */

/* A page size as a request asks for it, defaulted and capped. */
static uint32_t page_size(uint32_t asked)
{
    return asked == 0                    ? VEIL_FEED_BATCH_DEFAULT
           : asked > VEIL_FEED_BATCH_MAX ? VEIL_FEED_BATCH_MAX
                                         : asked;
}

veil_err veil_feed_check_app_events(veil_call *call, const Veil__AppEventsRequest *req,
                                    uint32_t *max)
{
    *max = page_size(req->max);
    if (!veil_ident_valid(req->app_id)) {
        veil_call_fail(call, VEIL_ERR_INVALID, "app_id is not a valid app id");
        return VEIL_ERR_INVALID;
    }
    if (req->after_seq < 0) {
        veil_call_fail(call, VEIL_ERR_INVALID, "after_seq must not be negative");
        return VEIL_ERR_INVALID;
    }
    return VEIL_OK;
}

veil_err veil_feed_serve(veil_notifier *n, veil_call *call, const Veil__ChangesRequest *req,
                         veil_feed_read_fn read, void *ctx, Veil__ChangesResponse *resp)
{
    if (req->after_seq < 0) {
        veil_call_fail(call, VEIL_ERR_INVALID, "after_seq must not be negative");
        return VEIL_ERR_INVALID;
    }
    uint32_t max = page_size(req->max);
    int64_t wait = req->wait_ms > VEIL_FEED_WAIT_MAX_MS ? VEIL_FEED_WAIT_MAX_MS : req->wait_ms;
    /* Answer before the caller gives up: keep a tenth of its time, and 200 ms, for the reply. */
    int64_t left = veil_call_remaining_ms(call);
    if (left != INT64_MAX) {
        left -= left / 10 + 200;
        if (wait > left)
            wait = left > 0 ? left : 0;
    }
    int64_t until = mono_ms() + wait;
    for (;;) {
        uint64_t gen = veil_notifier_generation(n);
        veil_err err = read(ctx, req->after_seq, max, veil_call_allocator(call), resp);
        if (err)
            return err;
        if (req->after_seq > resp->head_seq) {
            veil_call_fail(call, VEIL_ERR_PRECONDITION,
                           "after_seq %lld is ahead of the feed (head %lld): rebuild from the head",
                           (long long)req->after_seq, (long long)resp->head_seq);
            return VEIL_ERR_PRECONDITION;
        }
        int64_t remaining = until - mono_ms();
        if (resp->n_changes > 0 || remaining <= 0)
            return VEIL_OK;
        if (veil_notifier_wait(n, gen, remaining) == VEIL_WAIT_STOPPING) {
            veil_call_fail(call, VEIL_ERR_UNAVAILABLE, "server is shutting down");
            return VEIL_ERR_UNAVAILABLE;
        }
    }
}

/* ---- the follower ---- */

struct veil_follower {
    veil_follower_config cfg;
    char name[64];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;           /* under mu */
    veil_pending *inflight; /* under mu: the poll stop() must cancel */
    atomic_llong last_seq;
    atomic_llong last_ok_ms; /* monotonic ms at the end of the last good poll */
    atomic_int current;      /* the last poll succeeded and left nothing behind */
};

/* Sleeps ms unless stop() comes first; returns whether to go on. */
static int follower_nap(veil_follower *f, int ms)
{
    struct timespec until = deadline_in(ms);
    pthread_mutex_lock(&f->mu);
    while (!f->stopping)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &until) == ETIMEDOUT)
            break;
    int go_on = !f->stopping;
    pthread_mutex_unlock(&f->mu);
    return go_on;
}

static int follower_stopping(veil_follower *f)
{
    pthread_mutex_lock(&f->mu);
    int stopping = f->stopping;
    pthread_mutex_unlock(&f->mu);
    return stopping;
}

/* One poll; returns its outcome with *resp (free with protobuf_c_message_free_unpacked). */
static veil_err follower_poll(veil_follower *f, veil_cq *q, const Veil__ChangesRequest *req,
                              Veil__ChangesResponse **resp, veil_status *st)
{
    veil_pending *p = NULL;
    veil_err err = VEIL_ERR_CANCELLED;
    *resp = NULL;
    st->code = GRPC_STATUS_CANCELLED;
    snprintf(st->message, sizeof st->message, "follower stopped");
    pthread_mutex_lock(&f->mu);
    if (!f->stopping) {
        /* The server waits up to wait_ms; allow for its reply on top.  Waiting for
         * the channel to be ready makes this thread drive a reconnection after the
         * service restarted; until it succeeds the follower is not current. */
        err = veil_channel_start_wait_ready(f->cfg.channel, "Changes", &req->base,
                                            (int64_t)req->wait_ms + 5000, q, NULL, &p);
        f->inflight = p;
        if (err) {
            st->code = veil_err_status(err);
            snprintf(st->message, sizeof st->message, "cannot start the call");
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (err)
        return err;
    veil_pending *done;
    while ((done = veil_cq_next(q, -1)) == NULL)
        ;
    pthread_mutex_lock(&f->mu);
    f->inflight = NULL;
    pthread_mutex_unlock(&f->mu);
    return veil_pending_finish(done, NULL, resp, st, NULL);
}

/* Applies a reply's changes in order, each exactly once; returns the new position. */
static int64_t follower_apply(veil_follower *f, const Veil__ChangesResponse *resp, int64_t last)
{
    for (size_t i = 0; i < resp->n_changes; i++) {
        const Veil__Change *c = resp->changes[i];
        if (c->seq <= last)
            continue; /* never twice, whatever the server sends */
        if (c->seq != last + 1)
            veil_log(VEIL_LOG_ERROR, "change feed skipped sequence numbers",
                     VL_STR("feed", f->name), VL_INT("after", last), VL_INT("got", c->seq), VL_END);
        f->cfg.apply(c, f->cfg.ctx);
        last = c->seq;
        atomic_store(&f->last_seq, last);
    }
    return last;
}

static void *follower_main(void *arg)
{
    veil_follower *f = arg;
    veil_cq *q = NULL;
    int64_t last = f->cfg.after_seq;
    int from_head = last < 0, backoff = 0, lost = 0;
    if (veil_cq_new(&q) != VEIL_OK) {
        veil_log(VEIL_LOG_ERROR, "change feed follower cannot start", VL_STR("feed", f->name),
                 VL_END);
        return NULL;
    }
    for (;;) {
        Veil__ChangesRequest req = VEIL__CHANGES_REQUEST__INIT;
        /* From the head: one quick poll only to learn the head's number. */
        req.after_seq = from_head ? 0 : last;
        req.max = from_head ? 1 : f->cfg.batch;
        req.wait_ms = from_head ? 0 : f->cfg.wait_ms;
        Veil__ChangesResponse *resp;
        veil_status st;
        veil_err err = follower_poll(f, q, &req, &resp, &st);
        if (err) {
            atomic_store(&f->current, 0);
            if (follower_stopping(f))
                break;
            if (!lost)
                veil_log(VEIL_LOG_WARN, "change feed follower lost the feed",
                         VL_STR("feed", f->name), VL_STR("status", veil_status_name(st.code)),
                         VL_STR("error", st.message), VL_INT("last_seq", last), VL_END);
            lost = 1;
            backoff = backoff ? backoff * 2 : BACKOFF_MIN_MS;
            if (backoff > BACKOFF_MAX_MS)
                backoff = BACKOFF_MAX_MS;
            if (!follower_nap(f, backoff))
                break;
            continue;
        }
        backoff = 0;
        if (from_head) {
            last = resp->head_seq;
            atomic_store(&f->last_seq, last);
            from_head = 0;
        } else {
            last = follower_apply(f, resp, last);
        }
        int current = last >= resp->head_seq;
        atomic_store(&f->last_ok_ms, mono_ms());
        atomic_store(&f->current, current);
        if (current && lost) {
            veil_log(VEIL_LOG_INFO, "change feed follower caught up again", VL_STR("feed", f->name),
                     VL_INT("last_seq", last), VL_END);
            lost = 0;
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    veil_cq_free(q);
    return NULL;
}

veil_err veil_follower_start(const veil_follower_config *cfg, veil_follower **out)
{
    *out = NULL;
    if (!cfg->channel || !cfg->apply)
        return VEIL_ERR_INVALID;
    veil_follower *f = calloc(1, sizeof *f);
    if (!f)
        return VEIL_ERR_NOMEM;
    f->cfg = *cfg;
    atomic_store(&f->last_ok_ms, mono_ms()); /* the age counts from the start */
    snprintf(f->name, sizeof f->name, "%s", cfg->name ? cfg->name : "feed");
    f->cfg.name = f->name;
    if (f->cfg.batch == 0)
        f->cfg.batch = VEIL_FEED_BATCH_DEFAULT;
    if (f->cfg.wait_ms == 0)
        f->cfg.wait_ms = 5000;
    if (f->cfg.stale_ms <= 0)
        f->cfg.stale_ms = (int64_t)f->cfg.wait_ms + 2000;
    atomic_store(&f->last_seq, cfg->after_seq < 0 ? 0 : cfg->after_seq);
    pthread_mutex_init(&f->mu, NULL);
    cond_init_monotonic(&f->cv);
    if (pthread_create(&f->thread, NULL, follower_main, f) != 0) {
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        free(f);
        return VEIL_ERR_NOMEM;
    }
    *out = f;
    return VEIL_OK;
}

int veil_follower_healthy(veil_follower *f)
{
    return atomic_load(&f->current) && mono_ms() - atomic_load(&f->last_ok_ms) <= f->cfg.stale_ms;
}

int64_t veil_follower_age_ms(veil_follower *f)
{
    return mono_ms() - atomic_load(&f->last_ok_ms);
}

int64_t veil_follower_last_seq(veil_follower *f)
{
    return atomic_load(&f->last_seq);
}

void veil_follower_stop(veil_follower *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    if (f->inflight)
        veil_pending_cancel(f->inflight);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
