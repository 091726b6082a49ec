-- The change feed and the per-app event streams.  This file is identical in
-- db/consent and db/revocation (a test compares them); the SQL that uses the
-- tables is in services/libveil/feedlog.c, the reasoning in
-- docs/internals/change-feed.md.

-- One row: the last sequence number handed out.  Its row lock, taken by each
-- append and held to the end of the transaction, serialises feed writers, so
-- numbers follow commit order and a rolled-back append leaves no gap.
CREATE TABLE veil_feed_counter (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO veil_feed_counter (last_seq) VALUES (0);

CREATE TABLE veil_feed_changes (
    seq bigint PRIMARY KEY,
    kind text NOT NULL,
    subject_ref bytea CHECK (length(subject_ref) = 32),  -- NULL: about an app, or redacted
    device_id text NOT NULL DEFAULT '',
    app_id text NOT NULL DEFAULT '',
    attributes text[] NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL
);
-- Erasure redacts a subject's earlier changes.
CREATE INDEX veil_feed_changes_subject ON veil_feed_changes (subject_ref)
    WHERE subject_ref IS NOT NULL;

-- Per app: the last number of its event stream.  Each app has its own
-- numbering, so two apps comparing their streams find no shared counter.
CREATE TABLE veil_app_event_counters (
    app_id text PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq > 0)
);

CREATE TABLE veil_app_events (
    app_id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    subject_ref bytea NOT NULL CHECK (length(subject_ref) = 32),
    link_epoch bigint NOT NULL CHECK (link_epoch BETWEEN 0 AND 4294967295),
    attributes text[] NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL,
    PRIMARY KEY (app_id, seq)
);
CREATE INDEX veil_app_events_subject ON veil_app_events (subject_ref);
