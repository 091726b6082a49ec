-- The gateway's own database: the app registry, login challenges and the
-- rotation state of the keys the gateway chooses between.

CREATE TABLE apps (
    app_id        text PRIMARY KEY CHECK (app_id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind          text NOT NULL CHECK (kind IN ('public_service', 'commercial')),
    sector_id     text NOT NULL CHECK (sector_id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    -- registered scope, comma-separated catalogue names (validated by the gateway)
    attributes    text NOT NULL,
    cert_identity text NOT NULL UNIQUE,
    organisation  text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Bumped by every registry change, so every gateway replica notices within
-- its poll interval and reloads its in-memory copy.
CREATE TABLE registry_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO registry_version VALUES (1, 1);

-- Single-use login challenges.  UNLOGGED: a challenge lives two minutes, so
-- losing them in a crash only fails logins in progress, and skipping the WAL
-- keeps BeginLogin/CompleteLogin cheap.  A lost challenge can never be
-- replayed: it no longer exists.
CREATE UNLOGGED TABLE challenges (
    challenge  bytea PRIMARY KEY CHECK (length(challenge) = 32),
    app_id     text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX challenges_expiry ON challenges (expires_at);

-- Which key version signs assertions and which derives pseudonyms, and the
-- previous one still honoured during a rotation.
CREATE TABLE key_state (
    kind             text PRIMARY KEY CHECK (kind IN ('assertion', 'pseudonym')),
    current_version  integer NOT NULL CHECK (current_version > 0),
    previous_version integer CHECK (previous_version > 0),
    version          bigint NOT NULL DEFAULT 1,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
