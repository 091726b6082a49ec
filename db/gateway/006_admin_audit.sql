-- The admin audit log (issue 13 item 6): every call to the Admin API - who,
-- what, which app or identity, the stated reason, the result - readable by
-- the auditor role (Admin/ListAudit, `veilctl admin audit`).
--
-- Never personal data in the clear: an identity appears only as identity_ref,
-- a keyed BLAKE2b of its web number under the gateway's auditref-1.key (the
-- same web number gives the same reference, so an auditor can follow one
-- identity through the log, and can ask "was this web number touched?" only
-- through the gateway); the gateway refuses reasons that hold an ID number or
-- a web number.  Rows are append-only: a trigger refuses UPDATE and DELETE.
CREATE TABLE admin_audit (
    seq          bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,                 -- "admin/<name>" or "auditor/<name>"
    method       text NOT NULL,                 -- the Admin RPC, e.g. "SetIdentityState"
    app_id       text NOT NULL DEFAULT '',
    identity_ref text NOT NULL DEFAULT '',      -- "" or 32 hex characters
    detail       text NOT NULL DEFAULT '',      -- e.g. the state set, the key version
    reason       text NOT NULL DEFAULT '',
    result       text NOT NULL                  -- "OK" or the gRPC status name
);

CREATE FUNCTION admin_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_audit is append-only';
END $$;

CREATE TRIGGER admin_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON admin_audit
    FOR EACH STATEMENT EXECUTE FUNCTION admin_audit_append_only();
