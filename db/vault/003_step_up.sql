-- Step-up for destructive actions (docs/citizen-guide.md, "When your phone
-- is stolen"; docs/vault.md, "Step-up").
--
-- A device's rank is the time of the proofing that last bound it: the
-- attestation time of the enrolment that added it, or of a later
-- enrolment from the same phone (a re-proofing).  Devices enrolled before
-- this migration rank by their enrolment time.
ALTER TABLE devices ADD COLUMN proofed_at timestamptz NOT NULL DEFAULT now();
UPDATE devices SET proofed_at = created_at;

-- Erasures and revocations of another device asked for by a device that
-- neither was freshly proofed nor outranks the target: they wait out the
-- cooling-off period; the requesting device confirms them afterwards.
-- Another device of the citizen or a re-proofing cancels them; revoking the
-- requesting device drops them.  Nothing here is personal beyond what
-- devices already holds (random ids and times).
CREATE TABLE pending_actions (
    id            bytea PRIMARY KEY CHECK (length(id) = 16),
    subject_ref   bytea NOT NULL REFERENCES citizens ON DELETE CASCADE,
    action        text NOT NULL CHECK (action IN ('erase', 'revoke_device')),
    target_device bytea CHECK (length(target_device) = 16),
    requested_by  bytea NOT NULL REFERENCES devices ON DELETE CASCADE,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    effective_at  timestamptz NOT NULL,
    CHECK ((action = 'erase') = (target_device IS NULL))
);
CREATE UNIQUE INDEX pending_actions_one ON pending_actions
    (requested_by, action, coalesce(target_device, '\x'::bytea));
CREATE INDEX pending_actions_subject ON pending_actions (subject_ref);
