-- Points top-up cards (vouchers): batches of cards with a serial and a secret code, sold to a
-- merchant, redeemed once by a member, and at expiry the points of unredeemed sold cards
-- become breakage income (specs/ACCOUNTING.md, "Points top-up cards").
--
-- Only a keyed hash of each secret code is stored (HMAC-SHA256 under a key derived from the
-- master key, ledger/loyalty/vouchers.py); the code itself is written once, to a file.

-- 1. New transaction types: the sale of a batch, the redemption of a card.
ALTER TABLE loyalty.transactions DROP CONSTRAINT transactions_txn_type_check;
ALTER TABLE loyalty.transactions ADD CONSTRAINT transactions_txn_type_check
    CHECK (txn_type IN ('earn', 'redeem', 'sv_purchase', 'topup', 'load', 'inquiry', 'void', 'refund',
                        'lottery', 'reversal', 'marker', 'fee', 'exchange', 'voucher_sale', 'voucher_redeem')) NOT VALID;

-- 2. Batches: K cards of N points of program P, sold at a price each, valid through a date.
CREATE TABLE loyalty.voucher_batches (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program           text NOT NULL REFERENCES loyalty.programs(code),
    points            bigint NOT NULL CHECK (points > 0 AND points <= 999999999999),
    card_count        integer NOT NULL CHECK (card_count BETWEEN 1 AND 100000),
    price_minor       bigint NOT NULL CHECK (price_minor >= 0 AND price_minor <= 999999999999),
    expires_on        date NOT NULL,  -- the last day a card may be redeemed
    status            text NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'sold', 'suspended')),
    buyer_merchant_id text REFERENCES loyalty.merchants(merchant_id),
    sale_journal_id   bigint,
    sold_at           timestamptz,
    -- Which derived key hashed the codes: a new master key makes new batches under a new version.
    key_version       smallint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- 3. Cards. serial: batch-unique, printed; code_hash: HMAC of the secret code.
CREATE TABLE loyalty.vouchers (
    serial            text PRIMARY KEY CHECK (serial ~ '^[0-9]{12}$'),
    batch_id          bigint NOT NULL REFERENCES loyalty.voucher_batches(id),
    code_hash         bytea NOT NULL CHECK (length(code_hash) = 32),
    status            text NOT NULL DEFAULT 'issued'
                      CHECK (status IN ('issued', 'redeeming', 'redeemed', 'expired')),
    card_id           bigint REFERENCES loyalty.cards(id),
    journal_id        bigint,  -- the redemption's, or the breakage journal's
    redeemed_at       timestamptz,
    CHECK ((status IN ('redeeming', 'redeemed')) = (card_id IS NOT NULL))
);
CREATE INDEX vouchers_batch ON loyalty.vouchers(batch_id, serial);
CREATE INDEX vouchers_open ON loyalty.vouchers(batch_id) WHERE status = 'issued';

-- 4. Failed redemptions, counted per subject (a member, a client address, a terminal) in a
-- fixed window; a subject over the limit is locked out until locked_until.
CREATE TABLE loyalty.voucher_failures (
    scope         text NOT NULL CHECK (scope IN ('member', 'address', 'terminal')),
    subject       text NOT NULL CHECK (length(subject) BETWEEN 1 AND 64),
    window_start  timestamptz NOT NULL,
    failures      integer NOT NULL CHECK (failures >= 0),
    locked_until  timestamptz,
    lockouts      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, subject)
);
