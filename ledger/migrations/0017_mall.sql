-- The points mall: images stored by the platform, redeemable goods, online orders.
--
-- Images: uploaded by merchants (goods, promotions), served by the portal at
-- /media/<id>. Only the bytes' own format decides the type (magic bytes, checked
-- before the row is written); identical bytes are stored once (sha256).
CREATE TABLE portal.images (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    content_type  text NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg', 'image/gif', 'image/webp')),
    size_bytes    integer NOT NULL CHECK (size_bytes > 0 AND size_bytes = octet_length(data)),
    sha256        bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
    filename      text NOT NULL DEFAULT '' CHECK (length(filename) <= 200),
    data          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Redeemable goods, per merchant, in the merchant's program. A price in points, in money
-- (minor units of the program's currency), or both (the member chooses how to pay). Stock
-- never below zero: the CHECK, and orders take it with a conditional UPDATE.
CREATE TABLE loyalty.goods (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id   text NOT NULL REFERENCES loyalty.merchants(merchant_id),
    program       text NOT NULL REFERENCES loyalty.programs(code),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
    description   text NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    image_id      bigint REFERENCES portal.images(id),
    price_points  bigint CHECK (price_points > 0 AND price_points <= 999999999999),
    price_minor   bigint CHECK (price_minor > 0 AND price_minor <= 999999999999),
    stock         integer NOT NULL CHECK (stock >= 0),
    valid_from    timestamptz,
    valid_until   timestamptz,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (price_points IS NOT NULL OR price_minor IS NOT NULL),
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);
CREATE INDEX goods_merchant ON loyalty.goods(merchant_id, id);
CREATE INDEX goods_program ON loyalty.goods(program, id);

-- Online orders. The amount is held at order time (ledger hold), captured when the merchant
-- confirms (a redeem or stored-value purchase at the merchant, with its fee), released on
-- cancel, reject or timeout; a completed order may be refunded, partly, more than once.
-- Every ledger operation of an order has a key derived from it (mall:<id>:hold, :capture,
-- :release, :refund:<n>; an expiry the engine's own expire:<hold id>): running a transition again is safe (ledger/loyalty/mall.py).
CREATE TABLE loyalty.orders (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id           bigint NOT NULL REFERENCES loyalty.members(id),
    card_id             bigint NOT NULL REFERENCES loyalty.cards(id),
    merchant_id         text NOT NULL REFERENCES loyalty.merchants(merchant_id),
    good_id             bigint NOT NULL REFERENCES loyalty.goods(id),
    program             text NOT NULL REFERENCES loyalty.programs(code),
    good_name           text NOT NULL,
    quantity            integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    pay                 text NOT NULL CHECK (pay IN ('points', 'money')),
    amount              bigint NOT NULL CHECK (amount > 0),  -- points, or minor units of currency
    currency            text,                                -- ISO numeric, money orders only
    status              text NOT NULL CHECK (status IN ('placing', 'placed', 'rejected', 'confirmed', 'shipped',
                                                        'completed', 'cancelled', 'refunded')),
    request_key         text NOT NULL CHECK (length(request_key) BETWEEN 1 AND 64),
    channel             text NOT NULL CHECK (channel IN ('web', 'mall', 'api', 'cli')),
    delivery_address    text NOT NULL DEFAULT '' CHECK (length(delivery_address) <= 300),
    hold_id             bigint,
    capture_journal_id  bigint,
    capture_rrn         text,
    refunded_amount     bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    refunds             integer NOT NULL DEFAULT 0 CHECK (refunds >= 0),
    note                text NOT NULL DEFAULT '' CHECK (length(note) <= 300),  -- why rejected or cancelled
    reject_code         text,  -- a rejected order's error code (ledger/loyalty/mall.py) (insufficient, card_blocked, ...)
    taken_by            text CHECK (length(taken_by) <= 100),  -- the operator who took a phone order
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (member_id, request_key),
    CHECK (pay = 'points' OR currency IS NOT NULL)
);
CREATE INDEX orders_member ON loyalty.orders(member_id, id);
CREATE INDEX orders_merchant ON loyalty.orders(merchant_id, id);
-- The sweeper's work: orders waiting for the merchant, or stuck in placing.
CREATE INDEX orders_open ON loyalty.orders(id) WHERE status IN ('placing', 'placed');
