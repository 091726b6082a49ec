-- The pseudonym key versions each app link's last login gave the app
-- (recorded by Authorize when they change: once per link and key rotation),
-- so an event fanned out later names the subject by the pseudonym the app
-- knows - not one under a key the app never saw for this subject.
ALTER TABLE app_links
    ADD COLUMN key_version bigint NOT NULL DEFAULT 0 CHECK (key_version BETWEEN 0 AND 4294967295),
    ADD COLUMN previous_key_version bigint NOT NULL DEFAULT 0
        CHECK (previous_key_version BETWEEN 0 AND 4294967295);
