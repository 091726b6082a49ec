-- Issue 13 item 1: the master key version that wraps new data keys is
-- explicit and persisted like the webcert and ticket versions.  The first
-- start records VAULT_MASTER_KEY_VERSION when set, otherwise the newest
-- master key file; after that a new master key file changes nothing until
-- `vault rotate-master-key --to N` (which records N, then re-wraps) or an
-- explicitly set VAULT_MASTER_KEY_VERSION says so.
ALTER TABLE key_state DROP CONSTRAINT key_state_kind_check;
ALTER TABLE key_state ADD CONSTRAINT key_state_kind_check
    CHECK (kind IN ('webcert', 'ticket', 'master'));
