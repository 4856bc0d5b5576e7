-- The double-entry ledger: assets, accounts, journals, entries, holds.
--
-- Sign convention: an entry's amount is signed, credits positive. An account's
-- `posted` is the signed sum of its entries. Its natural balance is `posted`
-- for a credit-normal account and `-posted` for a debit-normal one; `held` is
-- the part of the natural balance reserved by pending holds; available =
-- natural - held. A `non_negative` account may never have available < 0; a
-- `guarded` one only through a command flagged `force`.

CREATE SCHEMA IF NOT EXISTS ledger;

CREATE TABLE ledger.assets (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Z0-9][A-Z0-9:_.-]{0,39}$'),
    kind        text NOT NULL CHECK (kind IN ('points', 'money')),
    scale       smallint NOT NULL CHECK (scale BETWEEN 0 AND 6),
    description text NOT NULL DEFAULT ''
);

CREATE TABLE ledger.accounts (
    id          bigserial PRIMARY KEY,
    owner_kind  text NOT NULL CHECK (owner_kind ~ '^[a-z_]{1,32}$'),
    owner_id    text NOT NULL CHECK (length(owner_id) BETWEEN 1 AND 64),
    purpose     text NOT NULL DEFAULT 'main' CHECK (purpose ~ '^[a-z0-9_:.-]{1,64}$'),
    asset       text NOT NULL REFERENCES ledger.assets(code),
    normal_side text NOT NULL CHECK (normal_side IN ('credit', 'debit')),
    -- none: any balance. non_negative: available >= 0, always (also a CHECK).
    -- guarded: available >= 0 unless a command is flagged `force` (a refund's
    -- claw-back may take a member's points below zero; nothing the member asks for can).
    limit_mode  text NOT NULL CHECK (limit_mode IN ('none', 'non_negative', 'guarded')),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'closed')),
    posted      bigint NOT NULL DEFAULT 0,
    held        bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_kind, owner_id, purpose, asset),
    CONSTRAINT accounts_within_limit CHECK (
        limit_mode <> 'non_negative'
        OR (CASE normal_side WHEN 'credit' THEN posted ELSE -posted END) - held >= 0
    )
);

-- The open business day. Posting batches read it FOR SHARE; the end-of-day
-- cut-over updates it, which waits for in-flight batches instead of sleeping.
CREATE TABLE ledger.business_day (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    open_date  date NOT NULL
);
INSERT INTO ledger.business_day(open_date) VALUES ((now() AT TIME ZONE 'UTC')::date);

CREATE SEQUENCE ledger.journal_id_seq;

CREATE TABLE ledger.journals (
    id                  bigint PRIMARY KEY,  -- from journal_id_seq: monotonically increasing
    idempotency_key     text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    content_hash        bytea NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('transfer', 'hold', 'capture', 'void', 'expire', 'reversal')),
    business_date       date NOT NULL,
    reverses_journal_id bigint UNIQUE REFERENCES ledger.journals(id),
    resolves_hold_id    bigint UNIQUE,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'reversal') = (reverses_journal_id IS NOT NULL)),
    CHECK ((kind IN ('capture', 'void', 'expire')) = (resolves_hold_id IS NOT NULL))
);
CREATE INDEX journals_business_date ON ledger.journals(business_date, id);

-- References to journals and to (account, asset) are checked once per INSERT
-- statement by entries_balance below, not by per-row foreign keys: a row-level
-- RI check takes a FOR KEY SHARE lock on an account row the batch already holds
-- FOR UPDATE, and cost more than half of a multi-leg posting. Referenced rows
-- cannot disappear: journals are append-only and accounts can be neither deleted
-- nor re-keyed (triggers below).
CREATE TABLE ledger.entries (
    journal_id    bigint NOT NULL,
    leg           smallint NOT NULL CHECK (leg >= 1),
    account_id    bigint NOT NULL,
    asset         text NOT NULL,
    amount        bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    PRIMARY KEY (journal_id, leg)
);
CREATE INDEX entries_account ON ledger.entries(account_id, journal_id);

CREATE TABLE ledger.holds (
    id                bigint PRIMARY KEY REFERENCES ledger.journals(id),
    debit_account_id  bigint NOT NULL REFERENCES ledger.accounts(id),
    credit_account_id bigint NOT NULL REFERENCES ledger.accounts(id),
    amount            bigint NOT NULL CHECK (amount > 0),
    expires_at        timestamptz NOT NULL,
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'captured', 'voided', 'expired')),
    resolved_by       bigint UNIQUE REFERENCES ledger.journals(id),
    CHECK ((state = 'pending') = (resolved_by IS NULL))
);
CREATE INDEX holds_pending_expiry ON ledger.holds(expires_at) WHERE state = 'pending';
ALTER TABLE ledger.journals
    ADD CONSTRAINT journals_resolves_hold_fk FOREIGN KEY (resolves_hold_id) REFERENCES ledger.holds(id);

-- Opaque receipts a caller stores in the same transaction as its posting (the
-- switch keeps its encoded response here, so a retransmission is answered
-- byte for byte). The ledger never interprets the payload.
CREATE TABLE ledger.receipts (
    idempotency_key text PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    content_hash    bytea NOT NULL,
    payload         bytea NOT NULL,
    -- Set by the engine from the posting it was stored with; no per-row foreign key
    -- on this hot path (journals are append-only; recon proves receipt <-> journal).
    journal_id      bigint,
    created_at      timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------
-- Immutability and balance, enforced by the database itself.
------------------------------------------------------------------------------

CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.%: % is not allowed; the ledger is append-only',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER journals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.journals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER receipts_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.receipts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- Statement-level with a transition table: one grouped check per INSERT, not a
-- trigger per row, so the batch path pays once.
CREATE FUNCTION ledger.check_entries_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT journal_id, asset, sum(amount) AS total INTO bad
      FROM new_entries GROUP BY journal_id, asset HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger.entries: journal % does not balance in asset % (sum %)',
            bad.journal_id, bad.asset, bad.total USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.journal_id, e.leg, e.account_id, e.asset INTO bad
      FROM new_entries e
     WHERE NOT EXISTS (SELECT 1 FROM ledger.accounts a WHERE a.id = e.account_id AND a.asset = e.asset)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger.entries: journal % leg % names account % in asset %, which does not exist',
            bad.journal_id, bad.leg, bad.account_id, bad.asset USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT e.journal_id INTO bad
      FROM new_entries e
     WHERE NOT EXISTS (SELECT 1 FROM ledger.journals j WHERE j.id = e.journal_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger.entries: journal % does not exist', bad.journal_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER entries_balance AFTER INSERT ON ledger.entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_entries_balance();

-- Entries refer to accounts by (id, asset): accounts are never deleted, and their
-- identity never changes. (Column-specific, so posting's balance updates never fire it.)
CREATE TRIGGER accounts_never_deleted BEFORE DELETE OR TRUNCATE ON ledger.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE FUNCTION ledger.refuse_rekey() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.asset <> OLD.asset OR NEW.normal_side <> OLD.normal_side THEN
        RAISE EXCEPTION 'ledger.accounts: account % may not change its id, asset or normal side', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_identity_fixed BEFORE UPDATE OF id, asset, normal_side ON ledger.accounts
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_rekey();

-- A hold moves once, from pending to a final state, and nothing else about it changes.
CREATE FUNCTION ledger.check_hold_resolution() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger.holds: DELETE is not allowed' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.state <> 'pending' THEN
        RAISE EXCEPTION 'ledger.holds: hold % is already % and cannot be resolved again', OLD.id, OLD.state
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.debit_account_id <> OLD.debit_account_id
       OR NEW.credit_account_id <> OLD.credit_account_id OR NEW.amount <> OLD.amount
       OR NEW.expires_at <> OLD.expires_at THEN
        RAISE EXCEPTION 'ledger.holds: only state and resolved_by may change' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER holds_resolve_once BEFORE UPDATE OR DELETE ON ledger.holds
    FOR EACH ROW EXECUTE FUNCTION ledger.check_hold_resolution();
