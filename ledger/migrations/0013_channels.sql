-- Channels: where a loyalty transaction was taken, and merchants' web trading seats.
--
-- 1. loyalty.transactions.channel: 'terminal' (an ISO 8583 request), 'web' (a
--    merchant's web trading seat), 'mall', 'api', 'cli'. operator_ref: who took it
--    at the seat (NULL on the wire). Adding a column whose default is a constant
--    only writes the catalog in PostgreSQL 11 and later: existing rows are not
--    rewritten, they read the default. The CHECKs are NOT VALID for the same
--    reason (validating one scans the table); every existing row reads 'terminal'
--    and NULL, which pass them, and every new row is checked.
ALTER TABLE loyalty.transactions ADD COLUMN channel text NOT NULL DEFAULT 'terminal';
ALTER TABLE loyalty.transactions ADD COLUMN operator_ref text;
ALTER TABLE loyalty.transactions ADD CONSTRAINT transactions_channel_known
    CHECK (channel IN ('terminal', 'web', 'mall', 'api', 'cli')) NOT VALID;
ALTER TABLE loyalty.transactions ADD CONSTRAINT transactions_operator_ref_length
    CHECK (operator_ref IS NULL OR length(operator_ref) BETWEEN 1 AND 64) NOT VALID;

-- loyalty.record_journals() copies the channel and the operator: ledger/sql/loyalty.record_journals.sql.

-- 2. Terminal kinds. A 'pos' terminal talks ISO 8583; a 'web' terminal is a
--    merchant's web trading seat: a virtual terminal, one per merchant, allocated
--    on the seat's first use (loyalty.seat_terminal). It has no MAC key and no 0500
--    batch, and the switch refuses it on the wire as it refuses an unknown terminal.
--    Its id is 'W' and 7 digits, and no other terminal's id has that form: the
--    CHECK below holds both ways, so a web id can never be a real terminal's.
ALTER TABLE switch.terminals ADD COLUMN kind text NOT NULL DEFAULT 'pos';
DO $$
DECLARE taken text;
BEGIN
    SELECT string_agg(terminal_id, ', ' ORDER BY terminal_id) INTO taken
      FROM switch.terminals WHERE terminal_id ~ '^W[0-9]{7}$';
    IF taken IS NOT NULL THEN
        RAISE EXCEPTION 'terminal ids W0000000 to W9999999 are reserved for web trading seats; '
                        'rename these terminals first: %', taken;
    END IF;
END $$;
-- Validated: the terminals table is small.
ALTER TABLE switch.terminals ADD CONSTRAINT terminals_kind CHECK (
    kind IN ('pos', 'web')
    AND (kind = 'web') = (terminal_id ~ '^W[0-9]{7}$')
    AND (kind = 'pos' OR mac_alg IS NULL));
CREATE UNIQUE INDEX terminals_one_web_per_merchant ON switch.terminals(merchant_id) WHERE kind = 'web';
CREATE SEQUENCE switch.web_terminal_seq MINVALUE 1 MAXVALUE 9999999 NO CYCLE;

-- loyalty.seat_terminal(merchant): ledger/sql/loyalty.seat_terminal.sql.

-- 3. Retrieval reference numbers: the switch's blocks (switch.rrn_block_seq x 1000)
--    stay below 900000000000; the web seat numbers its transactions from there up,
--    one number each, from a sequence of its own. Both are 12 digits and never meet.
ALTER SEQUENCE switch.rrn_block_seq MAXVALUE 899999999;
CREATE SEQUENCE loyalty.seat_rrn_seq MINVALUE 900000000000 MAXVALUE 999999999999 NO CYCLE;
