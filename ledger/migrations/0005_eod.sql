-- 0005_eod: end of day. Terminal batches (0500 totals), merchant clearing per
-- business day, the settlement journals' bookkeeping, and end-of-day runs.
--
-- Schema `eod` is the accounting host's; it reads loyalty.transactions and the
-- ledger, and is written only by ledger/batches.py, ledger/clearing.py and
-- ledger/eod.py.

CREATE SCHEMA IF NOT EXISTS eod;

-- A terminal's batches. At most one is open per terminal; it covers the
-- terminal's loyalty.transactions with id > after_txn_id (the previous batch's
-- upto_txn_id). Closing records upto_txn_id: transaction ids are assigned when
-- the row is inserted, and a terminal only sends 0500 once every request of the
-- batch is answered (commit before respond), so nothing of the batch can still
-- be in flight below that watermark.
CREATE TABLE eod.terminal_batches (
    id                     bigserial PRIMARY KEY,
    terminal_id            text NOT NULL,
    merchant_id            text,
    batch_number           text NOT NULL CHECK (batch_number ~ '^[0-9]{6}$'),
    status                 text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    after_txn_id           bigint NOT NULL DEFAULT 0,
    -- Lower bound on business_date of the batch's rows: lets the totals use the
    -- (terminal_id, business_date) index instead of scanning the terminal's history.
    after_business_date    date,
    upto_txn_id            bigint,
    -- Both sides of the last 0500 for this batch (the terminal's, the host's).
    terminal_credit_count  bigint,
    terminal_credit_amount bigint,
    terminal_debit_count   bigint,
    terminal_debit_amount  bigint,
    host_credit_count      bigint,
    host_credit_amount     bigint,
    host_debit_count       bigint,
    host_debit_amount      bigint,
    attempts               integer NOT NULL DEFAULT 0,
    close_key              text UNIQUE,  -- idempotency key of the 0500 that closed it
    opened_at              timestamptz NOT NULL DEFAULT now(),
    last_attempt_at        timestamptz,
    closed_at              timestamptz,
    CHECK ((status = 'closed') = (upto_txn_id IS NOT NULL AND closed_at IS NOT NULL))
);
CREATE UNIQUE INDEX terminal_batches_one_open ON eod.terminal_batches(terminal_id) WHERE status = 'open';
CREATE INDEX terminal_batches_terminal ON eod.terminal_batches(terminal_id, id);

-- One row per cleared business day and currency: when it was cleared and its totals.
CREATE TABLE eod.clearing_runs (
    business_date   date NOT NULL,
    currency_asset  text NOT NULL REFERENCES ledger.assets(code),
    merchants       integer NOT NULL,
    net_total_minor bigint NOT NULL,  -- sum of merchants' net (positive = operator pays)
    cleared_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_date, currency_asset)
);

-- Per merchant and business day: the clearing figures and the settlement journal.
-- Every figure is net of the day's voids, refunds and reversals.
CREATE TABLE eod.clearing_merchants (
    business_date        date NOT NULL,
    merchant_id          text NOT NULL,
    program              text NOT NULL,
    currency_asset       text NOT NULL,
    issue_count          bigint NOT NULL,  -- earn and top-up transactions that issued points
    points_issued        bigint NOT NULL,
    issue_price_minor    bigint NOT NULL,
    issued_minor         bigint NOT NULL,  -- points_issued x issue_price_minor: merchant owes
    redeem_count         bigint NOT NULL,
    points_redeemed      bigint NOT NULL,
    redeem_value_minor   bigint NOT NULL,
    redeemed_minor       bigint NOT NULL,  -- points_redeemed x redeem_value_minor: operator owes
    load_count           bigint NOT NULL,
    sv_loaded_minor      bigint NOT NULL,  -- cash the merchant collected: merchant owes
    spend_count          bigint NOT NULL,
    sv_spent_minor       bigint NOT NULL,  -- stored-value sales: operator owes
    void_count           bigint NOT NULL,
    refund_count         bigint NOT NULL,
    reversal_count       bigint NOT NULL,
    fees_minor           bigint NOT NULL,  -- merchant owes
    net_minor            bigint NOT NULL,  -- positive = operator pays merchant
    points_clearing_before bigint NOT NULL,  -- the day's signed sum on the points clearing account
    money_clearing_before  bigint NOT NULL,  -- ... on the money clearing account
    journal_id           bigint REFERENCES ledger.journals(id),
    PRIMARY KEY (business_date, merchant_id),
    CHECK (net_minor = redeemed_minor + sv_spent_minor - issued_minor - sv_loaded_minor - fees_minor)
);

-- Alliance matrix: points issued at A and redeemed at B on the day, attributed
-- per member pro rata to the points each merchant has issued to that member.
CREATE TABLE eod.clearing_matrix (
    business_date   date NOT NULL,
    program         text NOT NULL,
    issuer_id       text NOT NULL,  -- '*' = not attributable (prizes, rounding)
    redeemer_id     text NOT NULL,
    points          bigint NOT NULL,
    PRIMARY KEY (business_date, program, issuer_id, redeemer_id)
);

-- End-of-day runs (one row per `eod run` that got the lock).
CREATE TABLE eod.runs (
    id             bigserial PRIMARY KEY,
    business_date  date NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    report         jsonb NOT NULL DEFAULT '{}'::jsonb
);
