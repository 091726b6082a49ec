-- Sector ownership (issue 12 item 5).  Apps in one sector receive the same
-- pseudonyms, so a sector belongs to the one organisation that first used
-- it: another organisation's app may not join it.  An app with no
-- organisation owns its sector alone.  And once an app has completed a login
-- its sector is fixed: moving it would hand its users' pseudonyms of one
-- sector to another (or rename them all).
CREATE TABLE sectors (
    sector_id    text PRIMARY KEY CHECK (sector_id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    organisation text NOT NULL,   -- '' : the sector of owner_app alone
    owner_app    text NOT NULL,   -- the app that first used it
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Existing registrations keep their sectors: the earliest app of each
-- sector makes its organisation the owner.
INSERT INTO sectors (sector_id, organisation, owner_app)
SELECT DISTINCT ON (sector_id) sector_id, organisation, app_id
  FROM apps ORDER BY sector_id, created_at, app_id;

-- Set by the first completed login of the app; the sector cannot change after.
ALTER TABLE apps ADD COLUMN sector_fixed boolean NOT NULL DEFAULT false;
