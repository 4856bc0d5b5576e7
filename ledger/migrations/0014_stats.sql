-- Statistics over date ranges.
--
-- New members per day, week or month are counted from the cards' creation time:
-- an index so a bounded range reads only its own cards.
CREATE INDEX IF NOT EXISTS cards_created ON loyalty.cards(created_at);

-- A cleared business day's figures never change again, so they are rolled up once
-- (ledger.stats.roll_up_day) and ranges read the roll-up instead of every transaction.
-- stats_days lists the days rolled up; a day's rows are written in the same transaction.
CREATE TABLE eod.stats_days (
    business_date  date PRIMARY KEY,
    rolled_at      timestamptz NOT NULL DEFAULT now()
);

-- Per day, merchant ('-': none) and transaction type (markers excluded): the sums the
-- statistics show; declined requests are counted in transactions, summed nowhere.
CREATE TABLE eod.stats_daily (
    business_date       date NOT NULL REFERENCES eod.stats_days(business_date),
    merchant_id         text NOT NULL,
    txn_type            text NOT NULL,
    transactions        bigint NOT NULL,
    approved            bigint NOT NULL,
    money_amount_minor  bigint NOT NULL,
    points_amount       bigint NOT NULL,
    points_credited     bigint NOT NULL,
    points_debited      bigint NOT NULL,
    fees_minor          bigint NOT NULL,
    PRIMARY KEY (business_date, merchant_id, txn_type)
);

-- The cards with an approved transaction, per day and program ('-': none): active members
-- over a week or a month are the distinct cards of its days, which sums cannot give.
CREATE TABLE eod.stats_active_cards (
    business_date  date NOT NULL REFERENCES eod.stats_days(business_date),
    program        text NOT NULL,
    card_id        bigint NOT NULL,
    PRIMARY KEY (business_date, program, card_id)
);
