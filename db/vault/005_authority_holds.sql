-- Issue 13 items 2 and 4.
--
-- An identity an authority suspended or revoked binds the person, not the
-- record: when such an identity is erased, the vault keeps only what refuses
-- a re-enrolment of the same ID number - the keyed blind index (BLAKE2b
-- under the blind key, as citizens.blind_index; never the number, never an
-- unkeyed hash), the state and the authority's stated legal basis.  No
-- subject reference, web number, name or date is kept.
CREATE TABLE authority_holds (
    blind_index bytea PRIMARY KEY CHECK (length(blind_index) = 32),
    state       text NOT NULL CHECK (state IN ('suspended', 'revoked')),
    legal_basis text NOT NULL CHECK (length(legal_basis) <= 200),
    held_at     timestamptz NOT NULL
);

-- Erase used to leave (subject_ref, erased_at) behind, only to answer a
-- repeated Erase: erasure now keeps no subject reference at all.
DROP TABLE erased_subjects;
