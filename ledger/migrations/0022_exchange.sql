-- Exchange rates between programs' points, and exchanges (specs/ACCOUNTING.md, "Exchange
-- between programs").
--
-- 1. Rates: a program's points (from) into another's (to), as the rational num/den points of
--    `to` per point of `from`, with a fee in basis points of the converted points, effective
--    from a time. Rows are never changed: a new rate is a new row; the rate in force for a
--    pair is the row with the latest effective_from not in the future (ties: the latest id).
CREATE TABLE loyalty.exchange_rates (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_program    text NOT NULL REFERENCES loyalty.programs(code),
    to_program      text NOT NULL REFERENCES loyalty.programs(code),
    rate_num        bigint NOT NULL CHECK (rate_num BETWEEN 0 AND 1000000000),
    rate_den        bigint NOT NULL CHECK (rate_den BETWEEN 1 AND 1000000000),
    fee_bps         integer NOT NULL DEFAULT 0 CHECK (fee_bps BETWEEN 0 AND 10000),
    effective_from  timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 100),
    CHECK (from_program <> to_program)
);
CREATE INDEX exchange_rates_pair ON loyalty.exchange_rates(from_program, to_program, effective_from DESC, id DESC);

-- 2. An exchange is a loyalty transaction of its own type. Its record names the source program
--    (program, points_delta: the member's points given up, negative) and the target
--    (target_program, target_points_delta: the points credited), with the rate it used.
--    Its voids and reversals carry the same columns, with the signs swapped. NOT VALID as
--    0018's: every existing row passes it, and validating would scan the table.
ALTER TABLE loyalty.transactions DROP CONSTRAINT transactions_txn_type_check;
ALTER TABLE loyalty.transactions ADD CONSTRAINT transactions_txn_type_check
    CHECK (txn_type IN ('earn', 'redeem', 'sv_purchase', 'topup', 'load', 'inquiry', 'void', 'refund',
                        'lottery', 'reversal', 'marker', 'fee', 'exchange')) NOT VALID;
ALTER TABLE loyalty.transactions
    ADD COLUMN target_program      text,
    ADD COLUMN target_points_delta bigint NOT NULL DEFAULT 0,
    ADD COLUMN rate_num            bigint,
    ADD COLUMN rate_den            bigint,
    ADD COLUMN rate_fee_bps        integer;
-- The per-member daily limit sums a card's exchanges of the day.
CREATE INDEX transactions_card_exchange ON loyalty.transactions(card_id, business_date)
    WHERE txn_type = 'exchange' AND journal_id IS NOT NULL;

-- 3. End of day: per program and day, the points the exchange desk took in (the members gave
--    them up: valued at the program's redemption value) and gave out (valued at its issue
--    price), and the settlement journal that clears them.
CREATE TABLE eod.clearing_exchange (
    business_date       date NOT NULL,
    program             text NOT NULL REFERENCES loyalty.programs(code),
    currency_asset      text NOT NULL,
    exchange_count      bigint NOT NULL,
    points_in           bigint NOT NULL,
    redeem_value_minor  bigint NOT NULL,
    redeemed_minor      bigint NOT NULL,
    points_out          bigint NOT NULL,
    issue_price_minor   bigint NOT NULL,
    issued_minor        bigint NOT NULL,
    net_minor           bigint NOT NULL,  -- redeemed_minor - issued_minor: the desk's result in this program
    journal_id          bigint REFERENCES ledger.journals(id),
    PRIMARY KEY (business_date, program),
    CHECK (net_minor = redeemed_minor - issued_minor)
);
