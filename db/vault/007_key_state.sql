-- Issue 13 item 1: the versions of the web-certificate and ticket keys in use
-- are explicit and persisted.  The first start records the newest key file of
-- each kind (as a fresh install would); after that only
-- `vault rotate-key --kind webcert|ticket --to N` changes a row.  A key file
-- added later is loaded (its certificates verify, its tickets open) but not
-- used until rotated to.
CREATE TABLE key_state (
    kind       text PRIMARY KEY CHECK (kind IN ('webcert', 'ticket')),
    version    integer NOT NULL CHECK (version > 0),
    rotated_at timestamptz NOT NULL DEFAULT now()
);
