-- Card numbers at rest: sealed (AES-256-GCM under a card data key), found by a keyed hash
-- (HMAC-SHA-256 under a lookup key), shown as first 6 / last 4. Both keys are stored here
-- sealed under the master key, which never enters the database.
--
-- The clear column stays for one purpose: rows written before this version. `switchd db
-- upgrade`, given the master key, seals them and empties the column (ledger.loyalty.
-- card_numbers.seal_clear_numbers); the daemon and the portal refuse to start while one is left.
-- A row holds exactly one of the two forms.

CREATE TABLE loyalty.card_keys (
    id               smallint PRIMARY KEY CHECK (id = 1),
    sealed_data_key  bytea NOT NULL,
    sealed_lookup_key bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE loyalty.cards
    ALTER COLUMN pan DROP NOT NULL,
    ADD COLUMN pan_hash   bytea,
    ADD COLUMN pan_sealed bytea,
    ADD COLUMN pan_masked text,
    ADD CONSTRAINT cards_pan_one_form CHECK ((pan IS NULL) <> (pan_hash IS NULL)),
    ADD CONSTRAINT cards_pan_sealed_whole CHECK (
        pan_hash IS NULL OR (octet_length(pan_hash) = 32 AND pan_sealed IS NOT NULL
                             AND pan_masked ~ '^[0-9*]{12,19}$'));

CREATE UNIQUE INDEX cards_pan_hash ON loyalty.cards (pan_hash);
