-- The identity vault's schema (docs/vault.md, "What the database holds").
--
-- Nothing here is readable without the vault's keys: the ID number exists
-- only inside the encrypted profile and as a keyed blind index, names and
-- device labels only encrypted, access-log entries only encrypted and
-- chained by a keyed hash.  Binary columns hold fixed-size keys, hashes and
-- XChaCha20-Poly1305 boxes (24-byte nonce, ciphertext, 16-byte tag).

-- One row per enrolled person.  subject_ref is random (256 bits) and is the
-- only reference other services ever see.
CREATE TABLE citizens (
    subject_ref  bytea PRIMARY KEY CHECK (length(subject_ref) = 32),
    -- keyed BLAKE2b of the normalised ID number (blind key): finds a person
    -- enrolling again without storing the number
    blind_index  bytea NOT NULL UNIQUE CHECK (length(blind_index) = 32),
    -- random, shown to the citizen; says nothing about the person
    web_number   text NOT NULL UNIQUE CHECK (length(web_number) = 19),
    -- the citizen's data key, wrapped by master key `key_version`
    key_version  integer NOT NULL CHECK (key_version > 0),
    wrapped_key  bytea NOT NULL CHECK (length(wrapped_key) = 72),
    -- the profile (ID number, name, proofing result) under the data key
    profile      bytea NOT NULL CHECK (length(profile) > 40),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A citizen's devices.  device_id is random (16 bytes) and assigned here.
CREATE TABLE devices (
    device_id    bytea PRIMARY KEY CHECK (length(device_id) = 16),
    subject_ref  bytea NOT NULL REFERENCES citizens ON DELETE CASCADE,
    public_key   bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    label        bytea NOT NULL,  -- under the data key (a label may hold a name)
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX devices_subject ON devices (subject_ref);

-- The head of each citizen's access-log hash chain, kept apart from
-- citizens so that logins (which advance it) never contend with key
-- rotation (which rewrites citizens rows).
CREATE TABLE access_heads (
    subject_ref  bytea PRIMARY KEY REFERENCES citizens ON DELETE CASCADE,
    seq          bigint NOT NULL CHECK (seq >= 0),
    head         bytea NOT NULL CHECK (length(head) = 32)
);

-- The access log: entry is (app, action, attributes, purpose) under the
-- data key; mac chains it to the previous entry with the audit key.  No
-- foreign key: appends are on the login path and Erase deletes explicitly.
CREATE TABLE access_log (
    subject_ref  bytea NOT NULL,
    seq          bigint NOT NULL CHECK (seq > 0),
    at_ms        bigint NOT NULL,  -- Unix milliseconds, exactly as hashed
    entry        bytea NOT NULL,
    mac          bytea NOT NULL CHECK (length(mac) = 32),
    PRIMARY KEY (subject_ref, seq)
);

-- Nonces of citizen requests seen within twice the allowed clock skew.
CREATE TABLE used_nonces (
    device_id    bytea NOT NULL REFERENCES devices ON DELETE CASCADE,
    nonce        bytea NOT NULL CHECK (length(nonce) = 16),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (device_id, nonce)
);
CREATE INDEX used_nonces_expiry ON used_nonces (expires_at);

-- Enrol idempotency for a day.  request_key and request_mac are keyed
-- hashes (blind key) of the request id and of the whole request, so the
-- table holds nothing a dictionary attack could turn back into a person.
CREATE TABLE enrol_requests (
    request_key  bytea PRIMARY KEY CHECK (length(request_key) = 32),
    request_mac  bytea NOT NULL CHECK (length(request_mac) = 32),
    subject_ref  bytea NOT NULL REFERENCES citizens ON DELETE CASCADE,
    device_id    bytea NOT NULL CHECK (length(device_id) = 16),
    new_identity boolean NOT NULL,
    certificate  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enrol_requests_subject ON enrol_requests (subject_ref);
CREATE INDEX enrol_requests_created ON enrol_requests (created_at);

-- What Erase leaves: that a subject reference existed and when it was erased.
CREATE TABLE erased_subjects (
    subject_ref  bytea PRIMARY KEY CHECK (length(subject_ref) = 32),
    erased_at    timestamptz NOT NULL
);
