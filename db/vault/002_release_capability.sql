-- The release capability (docs/vault.md, "Releasing attributes").
--
-- VerifyTicket mints a capability the vault can check without storing it (a
-- keyed hash over subject, app, challenge and expiry); ReleaseAttributes
-- records its random id here the one time it is used, so a second use is
-- refused.  Rows outlive the capability's expiry only until the next purge.
CREATE TABLE used_capabilities (
    id           bytea PRIMARY KEY CHECK (length(id) = 16),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX used_capabilities_expiry ON used_capabilities (expires_at);

-- Each app's registered scope as the vault knows it: ReleaseAttributes
-- releases nothing outside it.  Written only by SetAppScopes (the gateway's
-- registry, after an admin change), never on the login path; updated_at
-- shows when a scope last changed.
CREATE TABLE app_scopes (
    app_id       text PRIMARY KEY CHECK (length(app_id) BETWEEN 1 AND 64),
    attributes   text NOT NULL,  -- comma-separated catalogue names, may be empty
    updated_at   timestamptz NOT NULL DEFAULT now()
);
