-- Points expiry (lots) and stored-value residual value.
--
-- 1. A program may make its points expire: `points_expiry_months` (NULL = never). Every credit
--    of a member's points in such a program lands in a lot (account, expiry date); debits take
--    the oldest lots first; compensations put back or take out the lots their original moved
--    (specs/ACCOUNTING.md, "Points expiry"). Lots are kept by a statement-level trigger on
--    ledger.entries (ledger/sql/loyalty.maintain_lots.sql) in the posting's own transaction,
--    under the account locks post_batch already holds; entries of programs without expiry are
--    filtered out by one join and cost nothing more.
-- 2. A program's stored-value policy for expired cards: after `residual_grace_days` past the
--    card's expiry month, the residual stored value becomes breakage income ('breakage') or
--    stays owed to the member ('liability', the default).
ALTER TABLE loyalty.programs
    ADD COLUMN points_expiry_months integer CHECK (points_expiry_months BETWEEN 1 AND 600),
    ADD COLUMN residual_policy text NOT NULL DEFAULT 'liability'
        CHECK (residual_policy IN ('liability', 'breakage')),
    ADD COLUMN residual_grace_days integer NOT NULL DEFAULT 90 CHECK (residual_grace_days BETWEEN 0 AND 3650);

-- Live lots: what is left of a member account's points that expire on one date. A lot at zero
-- is deleted. The debt lot (expires_on 9999-12-31) holds what a claw-back took beyond every
-- live lot (negative); later credits pay it first. Lots of an account sum to its balance.
CREATE TABLE loyalty.point_lots (
    account_id  bigint NOT NULL,
    expires_on  date NOT NULL,
    program     text NOT NULL,
    remaining   bigint NOT NULL,
    PRIMARY KEY (account_id, expires_on)
);
-- End of day reads the due lots of one program by date.
CREATE INDEX point_lots_due ON loyalty.point_lots(program, expires_on) WHERE remaining > 0;

-- Every change of a lot by a posting (signed like the entry; the end of day's expiry journals
-- write none: nothing undoes them); `undoes_journal_id` marks the
-- part of a compensation that put back (or took out) exactly what its original moved, so a
-- later compensation of the same original knows what is left to undo.
CREATE TABLE loyalty.lot_moves (
    journal_id        bigint NOT NULL,
    account_id        bigint NOT NULL,
    expires_on        date NOT NULL,
    amount            bigint NOT NULL CHECK (amount <> 0),
    undoes_journal_id bigint
);
CREATE INDEX lot_moves_journal ON loyalty.lot_moves(account_id, journal_id);
CREATE INDEX lot_moves_undoes ON loyalty.lot_moves(account_id, undoes_journal_id)
    WHERE undoes_journal_id IS NOT NULL;

-- Residual stored value moved to breakage, one row per card (idempotent: a card's residual is
-- moved once; a liability policy writes no row).
CREATE TABLE loyalty.residual_breakage (
    card_id       bigint PRIMARY KEY,
    program       text NOT NULL,
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    journal_id    bigint NOT NULL,
    business_date date NOT NULL
);

-- Expiry and residual-value journals record transactions of their own types.
ALTER TABLE loyalty.transactions DROP CONSTRAINT transactions_txn_type_check;
ALTER TABLE loyalty.transactions ADD CONSTRAINT transactions_txn_type_check
    CHECK (txn_type IN ('earn', 'redeem', 'sv_purchase', 'topup', 'load', 'inquiry', 'void', 'refund',
                        'lottery', 'reversal', 'marker', 'fee', 'exchange', 'voucher_sale', 'voucher_redeem',
                        'expiry', 'residual')) NOT VALID;

-- The trigger needs its function now; the function file (loyalty.maintain_lots.sql) replaces
-- this placeholder in the same `db upgrade`, after the migrations (the daemon refuses to start
-- with a function file pending). OR REPLACE: the file may have been applied already.
CREATE OR REPLACE FUNCTION loyalty.maintain_lots() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END $$;
CREATE TRIGGER entries_lots AFTER INSERT ON ledger.entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION loyalty.maintain_lots();
