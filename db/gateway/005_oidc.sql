-- OpenID Connect (docs/gateway.md, "The OpenID Connect door"): what an app
-- registers to log citizens in through a browser, and the login requests and
-- tokens of that flow.

-- Registration: redirect URIs (space-separated, exact match; https except
-- loopback), how the app authenticates at /token, its public JWK set (for
-- private_key_jwt), the ID token's algorithm, and the purpose of each
-- attribute (a JSON object, attribute -> text) shown to the citizen.
ALTER TABLE apps
    ADD COLUMN redirect_uris text NOT NULL DEFAULT '',
    ADD COLUMN token_auth    text NOT NULL DEFAULT 'tls_client_auth'
        CHECK (token_auth IN ('tls_client_auth', 'private_key_jwt')),
    ADD COLUMN jwks          text NOT NULL DEFAULT '',
    ADD COLUMN id_token_alg  text NOT NULL DEFAULT 'EdDSA'
        CHECK (id_token_alg IN ('EdDSA', 'RS256')),
    ADD COLUMN purposes      text NOT NULL DEFAULT '{}';

-- A login started at /authorize.  Found by the hash of its id (the secret in
-- the QR code) or of its poll token (the secret only the browser's page
-- holds); nothing here identifies a citizen.  On approval the authorization
-- code is kept only sealed to the page (crypto_box_seal to poll_pk, whose
-- secret key only the poll token yields) and the login's result only sealed
-- under a key from the code, so a reader of this table learns neither.  UNLOGGED like challenges: a crash only fails logins
-- in progress.
CREATE UNLOGGED TABLE login_requests (
    id_hash        bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    poll_hash      bytea NOT NULL UNIQUE CHECK (length(poll_hash) = 32),
    poll_pk        bytea NOT NULL CHECK (length(poll_pk) = 32),
    app_id         text NOT NULL,
    redirect_uri   text NOT NULL,
    state          text NOT NULL,
    nonce          text NOT NULL,
    code_challenge text NOT NULL,
    scope          text NOT NULL,
    binding_code   text NOT NULL,
    challenge      bytea NOT NULL CHECK (length(challenge) = 32),
    status         text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'denied', 'failed')),
    code_hash      bytea UNIQUE CHECK (length(code_hash) = 32),
    sealed_code    bytea,
    sealed_result  bytea,
    code_used      boolean NOT NULL DEFAULT false,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX login_requests_expiry ON login_requests (expires_at);

-- Access tokens issued at /token: bound to the app, sealed claims for
-- /userinfo under a key from the token, revoked with the code they came from
-- when that code is replayed.
CREATE UNLOGGED TABLE access_tokens (
    token_hash    bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    code_hash     bytea NOT NULL,
    app_id        text NOT NULL,
    sealed_claims bytea NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX access_tokens_code ON access_tokens (code_hash);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);
