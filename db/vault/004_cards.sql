-- Counter-issued cards (issue 17).  A card is a device of its identity whose
-- key pair is derived from the secret printed on the card; what makes it a
-- card is its PIN check value.
--
-- pin_mac is keyed BLAKE2b-256 under the vault's blind key over the card's
-- public key and the PIN (docs/vault.md): a PIN has only 10^4 to 10^12
-- values, so a plain hash would fall to a database reader in seconds; without
-- the key the column says nothing.  pin_failures counts wrong PINs in a row;
-- at VAULT_CARD_PIN_ATTEMPTS (5) the card is locked.
ALTER TABLE devices ADD COLUMN pin_mac bytea CHECK (length(pin_mac) = 32);
ALTER TABLE devices ADD COLUMN pin_failures integer NOT NULL DEFAULT 0
    CHECK (pin_failures >= 0);
