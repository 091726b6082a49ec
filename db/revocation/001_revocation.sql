-- The revocation service's state (docs/revocation.md).  Absence is the
-- normal case: a subject, device, link or app without a row here has never
-- been revoked, so nothing is stored about people who never needed it.

CREATE TABLE identities (
    subject_ref bytea PRIMARY KEY CHECK (length(subject_ref) = 32),
    state text NOT NULL CHECK (state IN ('active', 'suspended', 'revoked')),
    reason text NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL
);

-- A revoked device never comes back: a new phone enrols as a new device.
CREATE TABLE revoked_devices (
    subject_ref bytea NOT NULL CHECK (length(subject_ref) = 32),
    device_id text NOT NULL CHECK (device_id ~ '^[0-9a-f]{32}$'),
    revoked_at timestamptz NOT NULL,
    PRIMARY KEY (subject_ref, device_id)
);

-- The link of one citizen to one app.  The epoch is part of the pseudonym
-- derivation: a re-link under a fresh epoch gives the app a new pseudonym.
CREATE TABLE app_links (
    subject_ref bytea NOT NULL CHECK (length(subject_ref) = 32),
    app_id text NOT NULL,
    epoch bigint NOT NULL CHECK (epoch BETWEEN 0 AND 4294967295),
    linked boolean NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (subject_ref, app_id)
);

CREATE TABLE apps (
    app_id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('active', 'revoked')),
    reason text NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL
);
