-- Venues (issue 17): apps that check citizens in person - an internet bar,
-- a hotel, a ticket office - by redeeming what a phone shows or a card.
-- A venue has its own sector like any app; only venues may redeem
-- presentations.
ALTER TABLE apps DROP CONSTRAINT apps_kind_check;
ALTER TABLE apps ADD CONSTRAINT apps_kind_check
    CHECK (kind IN ('public_service', 'commercial', 'venue'));
