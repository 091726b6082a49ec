-- Key versions are explicit from the first start: both kinds have a row, and
-- only RotateKey changes it.  Before this, the pseudonym row was written by
-- the first rotation and, until then, the pseudonym service used the newest
-- key file it found at start - so adding pseudonym-2.key and restarting
-- changed every app's pseudonyms with no rotation and no overlap.
-- A deployment starts with version 1 of each key (pseudonym-1.key,
-- assertion-1.key); a deployment that already rotated keeps its rows.
INSERT INTO key_state (kind, current_version) VALUES ('pseudonym', 1), ('assertion', 1)
    ON CONFLICT (kind) DO NOTHING;
