-- Community: merchants' promotions (with a placement fee), feedback threads, in-platform
-- mail with e-mail copies.

-- 1. Promotions and ads. A merchant's; published = approved and inside its window.
--    A delete withdraws it and keeps the row (the audit and the fee journal name it).
CREATE TABLE portal.promotions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     text NOT NULL REFERENCES loyalty.merchants(merchant_id),
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 120),
    body            text NOT NULL DEFAULT '' CHECK (length(body) <= 2000),
    -- An uploaded image (the platform's image store), or none.
    image_id        bigint REFERENCES portal.images(id),
    -- NULL: every member; else the members of this program.
    program         text REFERENCES loyalty.programs(code),
    valid_from      timestamptz NOT NULL,
    valid_until     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('draft', 'pending', 'approved', 'rejected', 'withdrawn')),
    review_note     text NOT NULL DEFAULT '' CHECK (length(review_note) <= 500),
    reviewed_by     text CHECK (length(reviewed_by) <= 100),
    reviewed_at     timestamptz,
    -- The placement fee charged when it was first published (promo:<id>:fee), once.
    fee_minor       bigint CHECK (fee_minor >= 0),
    fee_journal_id  bigint REFERENCES ledger.journals(id),
    created_by      text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 100),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until > valid_from)
);
CREATE INDEX promotions_merchant ON portal.promotions(merchant_id, id);
CREATE INDEX promotions_status ON portal.promotions(status, id);
CREATE INDEX promotions_published ON portal.promotions(id) WHERE status = 'approved';

-- 2. A placement fee is a loyalty transaction of its own type: it is booked against the
--    merchant's money clearing account (Dr clearing / Cr the operator's fee income), so
--    clearing, settlement, reconciliation, the export and the statistics count it as a fee.
--    The constraint is the one 0004 wrote inline, re-made with 'fee' added; NOT VALID as
--    0013's: every existing row passes it, and validating would scan the table.
ALTER TABLE loyalty.transactions DROP CONSTRAINT transactions_txn_type_check;
ALTER TABLE loyalty.transactions ADD CONSTRAINT transactions_txn_type_check
    CHECK (txn_type IN ('earn', 'redeem', 'sv_purchase', 'topup', 'load', 'inquiry', 'void', 'refund',
                        'lottery', 'reversal', 'marker', 'fee')) NOT VALID;

-- 3. Feedback: a member to a merchant ('member'), a merchant to the platform ('merchant').
CREATE TABLE portal.feedback_threads (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('member', 'merchant')),
    member_id    bigint REFERENCES loyalty.members(id),
    merchant_id  text NOT NULL REFERENCES loyalty.merchants(merchant_id),
    subject      text NOT NULL CHECK (length(subject) BETWEEN 1 AND 120),
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    created_by   text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 100),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'member') = (member_id IS NOT NULL))
);
CREATE INDEX feedback_member ON portal.feedback_threads(member_id, id) WHERE member_id IS NOT NULL;
CREATE INDEX feedback_merchant ON portal.feedback_threads(merchant_id, kind, id);
CREATE INDEX feedback_kind ON portal.feedback_threads(kind, id);

CREATE TABLE portal.feedback_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id   bigint NOT NULL REFERENCES portal.feedback_threads(id) ON DELETE CASCADE,
    side        text NOT NULL CHECK (side IN ('member', 'merchant', 'platform')),
    author      text NOT NULL CHECK (length(author) BETWEEN 1 AND 100),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_messages_thread ON portal.feedback_messages(thread_id, id);

-- 4. Mail. A message is stored once, whatever its audience: one merchant ('merchant'),
--    every merchant ('merchants'), one member ('member'), a merchant's program's members
--    ('members'). An inbox is read from the messages addressed to it; a recipient's own
--    state (read, deleted) is a row written only when the recipient reads or deletes.
CREATE TABLE portal.mail_messages (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender_merchant_id     text REFERENCES loyalty.merchants(merchant_id),  -- NULL: the platform
    audience               text NOT NULL CHECK (audience IN ('merchant', 'merchants', 'member', 'members')),
    recipient_merchant_id  text REFERENCES loyalty.merchants(merchant_id),
    recipient_member_id    bigint REFERENCES loyalty.members(id),
    program                text REFERENCES loyalty.programs(code),
    subject                text NOT NULL CHECK (length(subject) BETWEEN 1 AND 120),
    body                   text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    created_by             text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 100),
    created_at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((audience = 'merchant') = (recipient_merchant_id IS NOT NULL)),
    CHECK ((audience = 'member') = (recipient_member_id IS NOT NULL)),
    CHECK ((audience = 'members') = (program IS NOT NULL)),
    CHECK ((audience IN ('merchant', 'merchants')) = (sender_merchant_id IS NULL))
);
CREATE INDEX mail_to_merchant ON portal.mail_messages(recipient_merchant_id, id) WHERE audience = 'merchant';
CREATE INDEX mail_to_merchants ON portal.mail_messages(id) WHERE audience = 'merchants';
CREATE INDEX mail_to_member ON portal.mail_messages(recipient_member_id, id) WHERE audience = 'member';
CREATE INDEX mail_to_members ON portal.mail_messages(program, id) WHERE audience = 'members';
CREATE INDEX mail_sent_by ON portal.mail_messages(sender_merchant_id, id);

CREATE TABLE portal.mail_states (
    message_id      bigint NOT NULL REFERENCES portal.mail_messages(id),
    recipient_kind  text NOT NULL CHECK (recipient_kind IN ('merchant', 'member')),
    recipient_id    text NOT NULL CHECK (length(recipient_id) BETWEEN 1 AND 20),
    read_at         timestamptz,
    deleted_at      timestamptz,
    PRIMARY KEY (recipient_kind, recipient_id, message_id)
);

-- E-mail copies (when SMTP is configured). A message's recipients are expanded into the
-- outbox by the portal's sender, a page of recipients at a time (mail_fanout keeps where
-- it is), never by the request that wrote the message.
CREATE TABLE portal.mail_fanout (
    message_id     bigint PRIMARY KEY REFERENCES portal.mail_messages(id),
    after_key      text NOT NULL DEFAULT '',
    done           boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mail_fanout_pending ON portal.mail_fanout(message_id) WHERE NOT done;

CREATE TABLE portal.mail_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       bigint NOT NULL REFERENCES portal.mail_messages(id),
    to_address       text NOT NULL CHECK (length(to_address) BETWEEN 3 AND 120),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text CHECK (length(last_error) <= 300),
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, to_address)
);
CREATE INDEX mail_outbox_due ON portal.mail_outbox(next_attempt_at) WHERE status = 'pending';
