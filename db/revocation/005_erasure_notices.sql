-- Erasure forgets everywhere (issue 13 item 4).  This file is identical in
-- db/consent and db/revocation, like 002_change_feed.sql.
--
-- An app is told that a citizen was erased by an event that already holds
-- the app's own pseudonym of that citizen (computed by the gateway at the
-- erasure), not the subject reference: after an erasure no row anywhere
-- holds the subject reference or anything a pseudonym could be recomputed
-- from.  Such an event has subject_ref NULL and pseudonym set.
ALTER TABLE veil_app_events ALTER COLUMN subject_ref DROP NOT NULL;
ALTER TABLE veil_app_events ADD COLUMN pseudonym text NOT NULL DEFAULT '';
ALTER TABLE veil_app_events ADD COLUMN previous_pseudonym text NOT NULL DEFAULT '';
ALTER TABLE veil_app_events ADD CONSTRAINT veil_app_events_subject_or_pseudonym
    CHECK ((subject_ref IS NULL) <> (pseudonym = ''));
