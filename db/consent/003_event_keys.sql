-- The pseudonym key versions an app knew a subject by when an event about
-- that subject happened, recorded with the event (issue 12 item 6), so the
-- event names the subject as the app knew it then, whatever the keys are at
-- poll time.  0: not recorded (older events): the gateway's current versions.
-- This file is identical in db/consent and db/revocation (a test compares them).
ALTER TABLE veil_app_events
    ADD COLUMN key_version bigint NOT NULL DEFAULT 0 CHECK (key_version BETWEEN 0 AND 4294967295),
    ADD COLUMN previous_key_version bigint NOT NULL DEFAULT 0
        CHECK (previous_key_version BETWEEN 0 AND 4294967295);
