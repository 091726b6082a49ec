/*
 * veil/feed.h - change feeds: serving a long-poll `Changes` method, and
 * following one from another process.
 *
 * A service whose state other processes cache (consent, revocation) records
 * every change in its own database with a sequence number assigned in commit
 * order, and sends a NOTIFY on VEIL_FEED_CHANNEL in the same transaction
 * (veil/feedlog.h; why and how: docs/internals/change-feed.md).  Its Changes
 * handler is veil_feed_serve, which answers at once when there are changes
 * after the caller's sequence number and otherwise waits on a veil_notifier
 * until a commit is announced, the wait runs out or the server drains.
 *
 * A consumer (the gateway's caches) runs a veil_follower: one thread that
 * long-polls Changes, hands every change to a callback exactly once and in
 * sequence order, resumes from its last sequence number after any error or
 * reconnection, and says whether it is caught up.
 *
 * Both services use the request and reply types of common.proto
 * (veil.ChangesRequest, veil.ChangesResponse), so one follower serves both.
 */
#ifndef VEIL_FEED_H
#define VEIL_FEED_H

#include <stdint.h>

#include "veil/client.h"
#include "veil/common.pb-c.h"
#include "veil/err.h"
#include "veil/rpc.h"

/* The NOTIFY channel a service's feed writers and its notifier share. */
#define VEIL_FEED_CHANNEL "veil_feed"

#define VEIL_FEED_WAIT_MAX_MS   30000 /* longest long-poll wait a server grants */
#define VEIL_FEED_BATCH_DEFAULT 256   /* changes per reply when the request says 0 */
#define VEIL_FEED_BATCH_MAX     1000  /* and at most */

/* ---- server side ---- */

/*
 * Owns one dedicated PostgreSQL connection that LISTENs on a channel, on a
 * thread of its own, and wakes the handlers waiting for a change.  When the
 * connection fails it reconnects (backoff 100 ms to 2 s) and wakes every
 * waiter so it looks again; while it is down, waits last at most 200 ms, so
 * handlers fall back to polling instead of missing a change.
 */
typedef struct veil_notifier veil_notifier;

/*
 * Starts the notifier for conninfo (a libpq string or URI) and channel.  It
 * connects in the background, so a database that is down at start-up only
 * delays notifications.  Caller frees with veil_notifier_free.
 */
veil_err veil_notifier_start(const char *conninfo, const char *channel,
                             veil_notifier **out) VEIL_WUR;

/*
 * A counter that moves on every notification and every (re)connection.
 * Read it before looking for changes, then wait on the value read: a change
 * committed in between moves it, so no wake-up is lost.
 */
uint64_t veil_notifier_generation(veil_notifier *n);

typedef enum veil_wait_result {
    VEIL_WAIT_NOTIFIED, /* the generation moved: look again */
    VEIL_WAIT_TIMEOUT,  /* nothing within the time given */
    VEIL_WAIT_STOPPING, /* the server is draining: answer now */
} veil_wait_result;

/* Waits up to timeout_ms for the generation to move past gen. */
veil_wait_result veil_notifier_wait(veil_notifier *n, uint64_t gen, int64_t timeout_ms);

/*
 * Makes every current and later wait return VEIL_WAIT_STOPPING.  Its
 * signature is that of a drain hook: veil_server_on_drain(srv,
 * veil_notifier_shutdown, n) lets long-polls return as soon as SIGTERM
 * starts the drain.
 */
void veil_notifier_shutdown(void *notifier);

/* Stops the thread, closes the connection and frees; accepts NULL. */
void veil_notifier_free(veil_notifier *n);

/*
 * Reads up to max changes after after_seq, in sequence order, into resp
 * (changes allocated with alloc) and sets resp->head_seq to the newest
 * committed sequence number.  A service's store provides it.
 */
typedef veil_err (*veil_feed_read_fn)(void *ctx, int64_t after_seq, uint32_t max,
                                      ProtobufCAllocator *alloc, Veil__ChangesResponse *resp);

/*
 * The whole of a Changes handler (run it on a VEIL_EXEC_WAIT thread):
 * validates the request, caps max at VEIL_FEED_BATCH_MAX and the wait at
 * VEIL_FEED_WAIT_MAX_MS and at the caller's deadline, then returns what
 * read finds, waiting on n while there is nothing.  Fails the call with
 * INVALID_ARGUMENT for a negative after_seq, FAILED_PRECONDITION when
 * after_seq is ahead of the feed (a consumer of another database, or a
 * database restored from an older backup: its caches must be rebuilt), and
 * UNAVAILABLE when the server starts draining while it waits.
 */
veil_err veil_feed_serve(veil_notifier *n, veil_call *call, const Veil__ChangesRequest *req,
                         veil_feed_read_fn read, void *ctx, Veil__ChangesResponse *resp) VEIL_WUR;

/*
 * Validates an AppEvents request (app_id an app id, after_seq not negative)
 * and sets *max to its page size: VEIL_FEED_BATCH_DEFAULT when it asks for
 * 0, at most VEIL_FEED_BATCH_MAX.  Fails the call with INVALID_ARGUMENT.
 */
veil_err veil_feed_check_app_events(veil_call *call, const Veil__AppEventsRequest *req,
                                    uint32_t *max) VEIL_WUR;

/* ---- client side ---- */

typedef struct veil_follower veil_follower;

/* after_seq for a consumer with empty caches: start at the head, skip history. */
#define VEIL_FEED_FROM_HEAD (-1)

typedef struct veil_follower_config {
    veil_channel *channel; /* to a service with a Changes method; must outlive the follower */
    int64_t after_seq;     /* apply the changes after this one, or VEIL_FEED_FROM_HEAD */
    uint32_t batch;        /* changes per poll (0: VEIL_FEED_BATCH_DEFAULT) */
    uint32_t wait_ms;      /* long-poll wait (0: 5000); the server answers at least this often */
    int64_t stale_ms;      /* healthy only within this of the last good poll (0: wait_ms + 2000) */
    /* Called on the follower's thread, exactly once per change, in sequence order. */
    void (*apply)(const Veil__Change *change, void *ctx);
    void *ctx;
    const char *name; /* names the feed in log lines, e.g. "revocation" */
} veil_follower_config;

/*
 * Starts following.  The configuration is copied (name included).  Caller
 * stops and frees the follower with veil_follower_stop.
 */
veil_err veil_follower_start(const veil_follower_config *cfg, veil_follower **out) VEIL_WUR;

/*
 * Whether the consumer's view is current: the last poll succeeded, it left
 * nothing behind (the follower had applied everything up to the head it
 * reported) and it ended within stale_ms.  A consumer must not trust what
 * it cached while this is 0.
 */
int veil_follower_healthy(veil_follower *f);

/* Milliseconds since the last good poll ended (since the start while there was none). */
int64_t veil_follower_age_ms(veil_follower *f);

/* The sequence number of the last change applied (what to resume after). */
int64_t veil_follower_last_seq(veil_follower *f);

/*
 * Stops: cancels the poll in flight, joins the thread and frees.  apply is
 * never called after this returns.  Accepts NULL.
 */
void veil_follower_stop(veil_follower *f);

#endif
