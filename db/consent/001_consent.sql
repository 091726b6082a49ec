-- The consent service's grants (docs/consent.md).  A grant is one signed
-- receipt; each of its attributes has its own state, so a withdrawal or a
-- newer grant can end one attribute and leave the others live.

-- Times come from the service's clock as Unix milliseconds (the receipts
-- state them; expiry must match them exactly): converted without rounding.
CREATE FUNCTION ms_time(ms bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN timestamptz 'epoch' + ms * interval '1 millisecond';

CREATE TABLE grants (
    receipt_id text PRIMARY KEY,
    subject_ref bytea NOT NULL CHECK (length(subject_ref) = 32),
    app_id text NOT NULL,
    purpose text NOT NULL CHECK (octet_length(purpose) BETWEEN 1 AND 200),
    granted_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL CHECK (expires_at > granted_at),
    receipt text NOT NULL   -- the compact JWS the citizen was given
);
CREATE INDEX grants_subject ON grants (subject_ref, granted_at);

CREATE TABLE grant_attributes (
    receipt_id text NOT NULL REFERENCES grants ON DELETE CASCADE,
    pos smallint NOT NULL,    -- order in the receipt
    attribute text NOT NULL,
    subject_ref bytea NOT NULL,
    app_id text NOT NULL,
    state text NOT NULL CHECK (state IN ('live', 'withdrawn', 'superseded')),
    ended_at timestamptz,
    PRIMARY KEY (receipt_id, attribute)
);
-- At most one live grant per (subject, app, attribute): a new grant
-- supersedes the older one in the same transaction.
CREATE UNIQUE INDEX grant_attributes_one_live ON grant_attributes (subject_ref, app_id, attribute)
    WHERE state = 'live';
