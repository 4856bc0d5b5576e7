-- The acquiring switch's own tables live in schema `switch`: the ledger never
-- reads them (DESIGN §2: ledger/ knows nothing of terminals or ISO 8583).
--
-- A terminal is identified by field 41 (8 characters, trailing spaces not
-- significant: ids are stored stripped). Its MAC key is never stored in clear:
-- `mac_key_sealed` is the key sealed (AEAD) under the master key named in the
-- daemon's [security] configuration, with the terminal id as associated data
-- so a sealed key cannot be moved to another terminal's row.

CREATE SCHEMA IF NOT EXISTS switch;

CREATE TABLE switch.terminals (
    terminal_id    text PRIMARY KEY CHECK (terminal_id ~ '^[A-Za-z0-9_-]{1,8}$'),
    merchant_id    text NOT NULL CHECK (merchant_id ~ '^[A-Za-z0-9_-]{1,15}$'),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    signed_on      boolean NOT NULL DEFAULT false,
    signed_on_at   timestamptz,
    signed_off_at  timestamptz,
    mac_alg        text CHECK (mac_alg IN ('cmac-aes', 'x919')),
    mac_key_sealed bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Both or neither: a terminal either MACs with a known algorithm and key, or not at all.
    CHECK ((mac_alg IS NULL) = (mac_key_sealed IS NULL))
);
CREATE INDEX terminals_merchant ON switch.terminals(merchant_id);

-- Retrieval reference numbers (field 37) are unique across restarts and across
-- daemons sharing this database: each daemon takes a block of RRN_BLOCK (1000)
-- numbers per nextval, so the sequence is touched once per 1000 responses.
CREATE SEQUENCE switch.rrn_block_seq MINVALUE 1 START 1;
