/*
 * veil/feedlog.h - the change feed and app event tables, for a service's
 * store layer (and only for it: this header brings in libpq).
 *
 * Every database with a feed holds the same four tables (created by the
 * service's migration NNN_change_feed.sql, identical in db/consent and
 * db/revocation):
 *
 *   veil_feed_counter        one row: the last sequence number handed out
 *   veil_feed_changes        the feed: seq, kind, subject, device, app, attributes
 *   veil_app_event_counters  per app: its last app event number
 *   veil_app_events          per app: events about that app's own users
 *
 * A mutation appends its change as the LAST step of its transaction.  The
 * append takes the next number from the counter row, whose row lock is then
 * held until the transaction ends, so feed writers are serialised: numbers
 * are handed out in commit order and without gaps (a rolled-back append
 * rolls its number back too).  The same statement sends NOTIFY on
 * VEIL_FEED_CHANNEL, which PostgreSQL delivers only at commit.  App events
 * are appended after the change, under the lock it took, so per-app numbers
 * are commit-ordered too and app counter rows are never locked in two orders
 * (no deadlock).  docs/internals/change-feed.md has the reasoning.
 *
 * The statements go into the service's own table (veil/pg.h): put
 * VEIL_FEEDLOG_STMTS(base) at the end of it and pass the same base here.
 */
#ifndef VEIL_FEEDLOG_H
#define VEIL_FEEDLOG_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "veil/codec.h"
#include "veil/common.pb-c.h"
#include "veil/err.h"
#include "veil/pg.h"

#define VEIL_FEEDLOG_N_STMTS 9

/*
 * Reply memory for a store's read functions: n bytes (at least 1) from alloc,
 * freed with the reply; and a copy of s there.  NULL when out of memory.
 */
void *veil_reply_alloc(ProtobufCAllocator *alloc, size_t n);
char *veil_reply_strdup(ProtobufCAllocator *alloc, const char *s);

extern const char veil_feedlog_sql_append[], veil_feedlog_sql_app_event[],
    veil_feedlog_sql_changes[], veil_feedlog_sql_head[], veil_feedlog_sql_app_events[],
    veil_feedlog_sql_app_head[], veil_feedlog_sql_redact[], veil_feedlog_sql_drop_app_events[],
    veil_feedlog_sql_app_notice[];

/* Designated initialisers for statements base .. base + VEIL_FEEDLOG_N_STMTS - 1. */
/* clang-format off */
#define VEIL_FEEDLOG_STMTS(base)                                                    \
    [(base) + 0] = {"veil_feed_append", veil_feedlog_sql_append},                   \
    [(base) + 1] = {"veil_feed_app_event", veil_feedlog_sql_app_event},             \
    [(base) + 2] = {"veil_feed_changes", veil_feedlog_sql_changes},                 \
    [(base) + 3] = {"veil_feed_head", veil_feedlog_sql_head},                       \
    [(base) + 4] = {"veil_feed_app_events", veil_feedlog_sql_app_events},           \
    [(base) + 5] = {"veil_feed_app_head", veil_feedlog_sql_app_head},               \
    [(base) + 6] = {"veil_feed_redact", veil_feedlog_sql_redact},                   \
    [(base) + 7] = {"veil_feed_drop_app_events", veil_feedlog_sql_drop_app_events}, \
    [(base) + 8] = {"veil_feed_app_notice", veil_feedlog_sql_app_notice}
/* clang-format on */

/*
 * Attribute lists travel to and from PostgreSQL as one comma-separated text
 * (string_to_array and array_to_string in SQL): attribute names are
 * catalogue names, which never hold a comma.  join appends names (and a
 * NUL) to b, which the caller frees with veil_buf_free; VEIL_ERR_INVALID
 * for a name with a comma.  split gives an array of copies allocated with
 * alloc; "" gives none.
 */
veil_err veil_feedlog_join_names(veil_buf *b, char *const *names, size_t n) VEIL_WUR;
veil_err veil_feedlog_split_names(ProtobufCAllocator *alloc, const char *text, char ***out,
                                  size_t *n) VEIL_WUR;

/* One change, as a mutation records it.  Strings are borrowed. */
typedef struct veil_feed_change {
    const char *kind;                 /* e.g. "device_revoked" */
    const unsigned char *subject_ref; /* 32 bytes, or NULL for a change about an app */
    const char *device_id;            /* NULL or "" when none */
    const char *app_id;               /* NULL or "" when none */
    char *const *attributes;          /* catalogue names (no commas) */
    size_t n_attributes;
} veil_feed_change;

/*
 * Appends ch to the feed inside the caller's open transaction and queues the
 * NOTIFY; *seq receives its number.  Call it last, just before COMMIT: from
 * here to the end of the transaction every other feed writer waits.
 */
veil_err veil_feedlog_append(veil_pg *c, int base, const veil_feed_change *ch,
                             int64_t *seq) VEIL_WUR;

/*
 * How an app knows a subject at the moment of an event: the link epoch and
 * the pseudonym key versions of its last login (0: not recorded).  Recorded
 * with the event, never looked up again at poll time (issue 12 item 6).
 */
typedef struct veil_app_view {
    uint32_t link_epoch;
    uint32_t key_version;
    uint32_t previous_key_version;
} veil_app_view;

/*
 * Appends an event to app_id's stream inside the caller's transaction, after
 * veil_feedlog_append (whose lock orders the per-app numbers).
 */
veil_err veil_feedlog_app_event(veil_pg *c, int base, const char *app_id, const char *kind,
                                const unsigned char subject_ref[32], const veil_app_view *view,
                                char *const *attributes, size_t n_attributes) VEIL_WUR;

/*
 * Reads up to max changes after after_seq, in order, and the head, into
 * resp, on the calling thread's connection to db; everything is allocated
 * with alloc (a call's arena).
 */
veil_err veil_feedlog_changes(veil_db *db, int base, int64_t after_seq, uint32_t max,
                              ProtobufCAllocator *alloc, Veil__ChangesResponse *resp) VEIL_WUR;

/* The same for one app's events. */
veil_err veil_feedlog_app_events(veil_db *db, int base, const char *app_id, int64_t after_seq,
                                 uint32_t max, ProtobufCAllocator *alloc,
                                 Veil__AppEventsResponse *resp) VEIL_WUR;

/*
 * Appends an erasure notice to app_id's stream inside the caller's
 * transaction (after veil_feedlog_append, as veil_feedlog_app_event): the
 * event holds the app's pseudonyms (previous may be NULL or "") and no
 * subject reference.
 */
veil_err veil_feedlog_app_notice(veil_pg *c, int base, const char *app_id, const char *kind,
                                 const char *pseudonym, const char *previous_pseudonym) VEIL_WUR;

/*
 * Erasure, inside the caller's transaction: the subject's changes keep their
 * numbers (the feed stays gap-free) but lose their content (kind "redacted",
 * no subject, device, app or attributes), and its app events are deleted, so
 * no row keeps the subject reference.  Then, if anything went (or deleted,
 * the caller's own count, is above 0), one change of notice_kind WITHOUT a
 * subject is appended - consumers drop every cached answer on it (erasures
 * are rare) - so a lagging cache cannot outlive the erasure.  A subject
 * never seen leaves no trace.  Call it last but for app events.
 */
veil_err veil_feedlog_forget(veil_pg *c, int base, const unsigned char subject_ref[32],
                             const char *notice_kind, int64_t deleted) VEIL_WUR;

#endif
