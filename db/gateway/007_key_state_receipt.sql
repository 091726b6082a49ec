-- The consent service's receipt signing key joins the explicit key versions
-- (issue 13 item 1): which receipt-N.key signs new receipts is this row,
-- changed only by RotateKey (kind "receipt"); the gateway names the version
-- in every Grant, so a new key file or a restart of the consent service
-- changes nothing.  Deployments start with receipt-1.key.
ALTER TABLE key_state DROP CONSTRAINT key_state_kind_check;
ALTER TABLE key_state ADD CONSTRAINT key_state_kind_check
    CHECK (kind IN ('assertion', 'pseudonym', 'receipt'));
INSERT INTO key_state (kind, current_version) VALUES ('receipt', 1) ON CONFLICT (kind) DO NOTHING;
