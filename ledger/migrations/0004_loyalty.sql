-- Loyalty and stored value: programs, merchants, cards, and the transaction record.
--
-- Schema `loyalty` is the accounting host's domain (ledger/loyalty/); it knows
-- nothing of ISO 8583. Money and points are integers (minor units, points).
-- specs/ACCOUNTING.md lists the ledger accounts each row below owns and the
-- legs every transaction posts.

CREATE SCHEMA IF NOT EXISTS loyalty;

-- A claw-back (refund of an earn, a reversal) may take a `guarded` member
-- account below zero; only `non_negative` accounts are held to >= 0 by the
-- table itself. post_batch enforces `guarded` for commands that are not forced.
ALTER TABLE ledger.accounts DROP CONSTRAINT IF EXISTS accounts_within_limit;
ALTER TABLE ledger.accounts ADD CONSTRAINT accounts_within_limit CHECK (
    limit_mode <> 'non_negative'
    OR (CASE normal_side WHEN 'credit' THEN posted ELSE -posted END) - held >= 0
);

-- Platform currencies (ISO 4217 numeric code -> ledger money asset) and the
-- operator's accounts in each: fee income, stored-value float, and a pair of
-- memo accounts for journals that must exist but move nothing (see ACCOUNTING.md).
CREATE TABLE loyalty.currencies (
    numeric_code           text PRIMARY KEY CHECK (numeric_code ~ '^[0-9]{3}$'),
    asset                  text NOT NULL UNIQUE REFERENCES ledger.assets(code),
    txn_max_minor          bigint NOT NULL CHECK (txn_max_minor > 0),
    fee_income_account_id  bigint NOT NULL REFERENCES ledger.accounts(id),
    sv_float_account_id    bigint NOT NULL REFERENCES ledger.accounts(id),
    memo_a_account_id      bigint NOT NULL REFERENCES ledger.accounts(id),
    memo_b_account_id      bigint NOT NULL REFERENCES ledger.accounts(id)
);

-- The platform's card BIN prefixes: a card is issued only inside one of them.
CREATE TABLE loyalty.bin_ranges (
    prefix      text PRIMARY KEY CHECK (prefix ~ '^[0-9]{4,11}$'),
    description text NOT NULL DEFAULT ''
);
INSERT INTO loyalty.bin_ranges(prefix, description) VALUES ('621234', 'platform default BIN');

CREATE TABLE loyalty.programs (
    code                     text PRIMARY KEY CHECK (code ~ '^[A-Z0-9_]{2,16}$'),
    name                     text NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
    kind                     text NOT NULL CHECK (kind IN ('alliance', 'hosted')),
    points_asset             text NOT NULL UNIQUE REFERENCES ledger.assets(code),
    currency                 text NOT NULL DEFAULT '156' REFERENCES loyalty.currencies(numeric_code),
    -- Money per point: what an issuing merchant owes, what a redeeming merchant is paid.
    issue_price_minor        bigint NOT NULL CHECK (issue_price_minor >= 0),
    redeem_value_minor       bigint NOT NULL CHECK (redeem_value_minor >= 0),
    pin_required_for_redeem  boolean NOT NULL DEFAULT false,
    txn_max_points           bigint NOT NULL DEFAULT 10000000 CHECK (txn_max_points > 0),
    -- Lottery: NULL price = no lottery. Prizes in loyalty.lottery_prizes.
    lottery_price_points     bigint CHECK (lottery_price_points > 0),
    status                   text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    points_outstanding_account_id bigint NOT NULL REFERENCES ledger.accounts(id),
    prize_pool_account_id    bigint NOT NULL REFERENCES ledger.accounts(id),
    created_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (points_asset = 'PTS:' || code)
);

CREATE TABLE loyalty.lottery_prizes (
    program     text NOT NULL REFERENCES loyalty.programs(code),
    code        text NOT NULL CHECK (code ~ '^[A-Z0-9_]{1,16}$'),
    points      bigint NOT NULL CHECK (points >= 0),
    weight      integer NOT NULL CHECK (weight > 0),
    PRIMARY KEY (program, code)
);

CREATE TABLE loyalty.merchants (
    merchant_id   text PRIMARY KEY CHECK (merchant_id ~ '^[A-Za-z0-9_-]{1,15}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
    program       text NOT NULL REFERENCES loyalty.programs(code),
    -- Earn rate: earn_num/earn_den points per whole currency unit, floored per transaction.
    earn_num      bigint NOT NULL CHECK (earn_num >= 0),
    earn_den      bigint NOT NULL CHECK (earn_den > 0),
    -- Fee in basis points per transaction type: {"default": 50, "redeem": 30, ...}.
    fee_bps       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(fee_bps) = 'object'),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    clearing_points_account_id bigint NOT NULL REFERENCES ledger.accounts(id),
    clearing_money_account_id  bigint NOT NULL REFERENCES ledger.accounts(id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchants_program ON loyalty.merchants(program);

-- A hosted program belongs to exactly one merchant.
CREATE FUNCTION loyalty.check_hosted_program() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM loyalty.programs p WHERE p.code = NEW.program AND p.kind = 'hosted')
       AND EXISTS (SELECT 1 FROM loyalty.merchants m
                    WHERE m.program = NEW.program AND m.merchant_id <> NEW.merchant_id) THEN
        RAISE EXCEPTION 'program % is hosted and already has a merchant', NEW.program
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER merchants_hosted_once BEFORE INSERT OR UPDATE OF program ON loyalty.merchants
    FOR EACH ROW EXECUTE FUNCTION loyalty.check_hosted_program();

-- Members and their cards (one card per member). The PAN is the lookup key;
-- ledger accounts are owned by ('card', id), so the ledger never sees a PAN.
CREATE TABLE loyalty.cards (
    id          bigserial PRIMARY KEY,
    pan         text NOT NULL UNIQUE CHECK (pan ~ '^[0-9]{12,19}$'),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked', 'expired')),
    expiry      text CHECK (expiry ~ '^[0-9]{2}(0[1-9]|1[0-2])$'),  -- YYMM; NULL = never
    name        text,
    phone       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per financial request the host decided: approved ones carry their
-- journal (written by the trigger below IN THE SAME TRANSACTION as the journal,
-- from its metadata->'txn'); declines and inquiries carry none. This is what
-- end of day, batch totals, transaction search and statistics read.
CREATE TABLE loyalty.transactions (
    id                  bigserial PRIMARY KEY,
    -- Written by the trigger on ledger.journals from the journal itself, so no per-row
    -- foreign key on the hot path (journals are append-only).
    journal_id          bigint UNIQUE,
    idempotency_key     text NOT NULL,
    business_date       date NOT NULL,
    txn_type            text NOT NULL CHECK (txn_type IN ('earn', 'redeem', 'sv_purchase', 'topup', 'load',
                                                          'inquiry', 'void', 'refund', 'lottery', 'reversal',
                                                          'marker')),
    reason              text NOT NULL,  -- 'approved' or the decline reason (ledger.loyalty Reason)
    rrn                 text,
    stan                text,
    terminal_id         text,
    merchant_id         text,
    card_id             bigint,
    program             text,
    amount              bigint NOT NULL DEFAULT 0,  -- field 4 as sent: money (minor) or points
    currency            text,
    points_delta        bigint NOT NULL DEFAULT 0,  -- change of the member's points balance
    money_delta_minor   bigint NOT NULL DEFAULT 0,  -- change of the member's stored value
    fee_minor           bigint NOT NULL DEFAULT 0,  -- fee charged (negative: fee given back)
    prize_code          text,
    original_journal_id bigint REFERENCES ledger.journals(id),  -- void, refund, reversal
    undo_units          bigint,   -- compensations: original units undone by this row
    undo_legs           bigint[], -- compensations: amount undone per leg of the original
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX transactions_rrn ON loyalty.transactions(rrn) WHERE journal_id IS NOT NULL;
CREATE INDEX transactions_key ON loyalty.transactions(idempotency_key);
CREATE INDEX transactions_terminal_day ON loyalty.transactions(terminal_id, business_date);
CREATE INDEX transactions_terminal_stan ON loyalty.transactions(terminal_id, stan);
CREATE INDEX transactions_merchant_day ON loyalty.transactions(merchant_id, business_date);
CREATE INDEX transactions_card_day ON loyalty.transactions(card_id, business_date);
CREATE INDEX transactions_day_type ON loyalty.transactions(business_date, txn_type);
CREATE INDEX transactions_original ON loyalty.transactions(original_journal_id)
    WHERE original_journal_id IS NOT NULL;

-- Statement-level with a transition table: one INSERT per posting batch.
CREATE FUNCTION loyalty.record_journals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO loyalty.transactions (
        journal_id, idempotency_key, business_date, txn_type, reason, rrn, stan, terminal_id,
        merchant_id, card_id, program, amount, currency, points_delta, money_delta_minor, fee_minor,
        prize_code, original_journal_id, undo_units, undo_legs)
    SELECT j.id, j.idempotency_key, j.business_date, t->>'type', coalesce(t->>'reason', 'approved'),
           t->>'rrn', t->>'stan', t->>'terminal_id', t->>'merchant_id', (t->>'card_id')::bigint,
           t->>'program', coalesce((t->>'amount')::bigint, 0), t->>'currency',
           coalesce((t->>'points_delta')::bigint, 0), coalesce((t->>'money_delta_minor')::bigint, 0),
           coalesce((t->>'fee_minor')::bigint, 0), t->>'prize_code', (t->>'original_journal_id')::bigint,
           (t->>'undo_units')::bigint,
           CASE WHEN t ? 'undo_legs'
                THEN ARRAY(SELECT x::bigint FROM jsonb_array_elements_text(t->'undo_legs') AS x) END
      FROM new_journals j CROSS JOIN LATERAL (SELECT j.metadata->'txn' AS t) AS m
     WHERE j.metadata ? 'txn';
    RETURN NULL;
END $$;

CREATE TRIGGER journals_loyalty_record AFTER INSERT ON ledger.journals
    REFERENCING NEW TABLE AS new_journals
    FOR EACH STATEMENT EXECUTE FUNCTION loyalty.record_journals();
