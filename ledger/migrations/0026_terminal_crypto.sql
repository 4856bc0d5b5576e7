-- Terminal cryptography: a terminal master key (TMK) and the working keys a sign-on delivers
-- under it; members' PINs (keyed one-way values, tries counted per card); programmes' PIN
-- requirements; what a dispute needs of a purchase's chip data. Every key stays sealed under the
-- master key (ledger/keys.py); ledger/sealed.py lists the sealed columns for `keys rewrap`.

-- The TMK ('tdes': double-length 3DES, format 0 PIN blocks and x919 MACs; 'aes': AES-128,
-- format 4 PIN blocks and cmac-aes MACs) and the working PIN key of the current sign-on. The
-- working MAC key is the terminal's MAC key (mac_alg, mac_key_sealed), replaced at each sign-on.
ALTER TABLE switch.terminals
    ADD COLUMN tmk_alg        text CHECK (tmk_alg IN ('tdes', 'aes')),
    ADD COLUMN tmk_sealed     bytea,
    ADD COLUMN pin_alg        text CHECK (pin_alg IN ('tdes', 'aes')),
    ADD COLUMN pin_key_sealed bytea,
    ADD CONSTRAINT terminals_tmk_both CHECK ((tmk_alg IS NULL) = (tmk_sealed IS NULL)),
    ADD CONSTRAINT terminals_pin_key_both CHECK ((pin_alg IS NULL) = (pin_key_sealed IS NULL));

-- Which key a record of switch.terminal_key_changes is about: 'mac' (the rows before this
-- migration), 'tmk' or 'pin'.
ALTER TABLE switch.terminal_key_changes ADD COLUMN key_kind text NOT NULL DEFAULT 'mac'
    CHECK (key_kind IN ('mac', 'tmk', 'pin'));

CREATE TRIGGER terminals_tmk_added AFTER INSERT ON switch.terminals
    FOR EACH ROW WHEN (NEW.tmk_sealed IS NOT NULL) EXECUTE FUNCTION switch.record_key_change('tmk');
CREATE TRIGGER terminals_tmk_changed AFTER UPDATE OF tmk_alg, tmk_sealed ON switch.terminals
    FOR EACH ROW WHEN (OLD.tmk_alg IS DISTINCT FROM NEW.tmk_alg OR OLD.tmk_sealed IS DISTINCT FROM NEW.tmk_sealed)
    EXECUTE FUNCTION switch.record_key_change('tmk');
CREATE TRIGGER terminals_pin_key_changed AFTER UPDATE OF pin_alg, pin_key_sealed ON switch.terminals
    FOR EACH ROW WHEN (OLD.pin_alg IS DISTINCT FROM NEW.pin_alg OR OLD.pin_key_sealed IS DISTINCT FROM NEW.pin_key_sealed)
    EXECUTE FUNCTION switch.record_key_change('pin');

-- Stored value is spent with the PIN by default; redemption as each programme says
-- (pin_required_for_redeem, migration 0004).
ALTER TABLE loyalty.programs ADD COLUMN pin_required_for_sv boolean NOT NULL DEFAULT true;

-- The key of members' PIN values: one row, 32 random bytes sealed under the master key.
CREATE TABLE loyalty.pin_keys (
    id          smallint PRIMARY KEY CHECK (id = 1),
    key_sealed  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A card's PIN: HMAC-SHA-256 under the PIN key over the card id and the PIN (never the PIN).
-- failed_tries counts wrong PINs since the last right one; at the configured maximum the card
-- takes no PIN (75) until an operator unlocks it or a new PIN is set.
CREATE TABLE loyalty.card_pins (
    card_id       bigint PRIMARY KEY REFERENCES loyalty.cards(id),
    pin_hash      bytea NOT NULL CHECK (length(pin_hash) = 32),
    failed_tries  integer NOT NULL DEFAULT 0 CHECK (failed_tries >= 0),
    set_by        text NOT NULL CHECK (length(set_by) BETWEEN 1 AND 80),
    set_at        timestamptz NOT NULL DEFAULT now(),
    tried_at      timestamptz
);

-- What a dispute needs of a chip purchase (docs/operating.md, Chip data): the cryptogram and
-- the data it covers, never the PAN, track data or the cardholder's name. One row per request.
CREATE TABLE loyalty.chip_data (
    idempotency_key  text PRIMARY KEY CHECK (length(idempotency_key) <= 128),
    terminal_id      text NOT NULL,
    tags             jsonb NOT NULL CHECK (jsonb_typeof(tags) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chip_data_created ON loyalty.chip_data(created_at);
