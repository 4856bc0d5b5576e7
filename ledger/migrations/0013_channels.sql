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

-- The journal's metadata->'txn' names its channel and operator when it is not the
-- terminal (the wire's journals carry neither: nothing more to write per request).
CREATE OR REPLACE FUNCTION loyalty.record_journals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO loyalty.transactions (
        journal_id, idempotency_key, business_date, txn_type, reason, rrn, stan, terminal_id,
        merchant_id, card_id, program, amount, currency, points_delta, money_delta_minor, fee_minor,
        prize_code, original_journal_id, undo_units, undo_legs, channel, operator_ref)
    SELECT j.id, j.idempotency_key, j.business_date, t->>'type', coalesce(t->>'reason', 'approved'),
           t->>'rrn', t->>'stan', t->>'terminal_id', t->>'merchant_id', (t->>'card_id')::bigint,
           t->>'program', coalesce((t->>'amount')::bigint, 0), t->>'currency',
           coalesce((t->>'points_delta')::bigint, 0), coalesce((t->>'money_delta_minor')::bigint, 0),
           coalesce((t->>'fee_minor')::bigint, 0), t->>'prize_code', (t->>'original_journal_id')::bigint,
           (t->>'undo_units')::bigint,
           CASE WHEN t ? 'undo_legs'
                THEN ARRAY(SELECT x::bigint FROM jsonb_array_elements_text(t->'undo_legs') AS x) END,
           coalesce(t->>'channel', 'terminal'), t->>'operator_ref'
      FROM new_journals j CROSS JOIN LATERAL (SELECT j.metadata->'txn' AS t) AS m
     WHERE j.metadata ? 'txn';
    RETURN NULL;
END $$;

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

-- The merchant's web seat terminal, created on first use: (terminal id, status);
-- no row for a merchant that does not exist.
CREATE FUNCTION loyalty.seat_terminal(p_merchant_id text, OUT terminal_id text, OUT status text)
RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT t.terminal_id, t.status FROM switch.terminals t
                  WHERE t.merchant_id = p_merchant_id AND t.kind = 'web';
    IF FOUND OR NOT EXISTS (SELECT 1 FROM loyalty.merchants m WHERE m.merchant_id = p_merchant_id) THEN
        RETURN;
    END IF;
    -- Two first uses at once: one inserts, the other waits on the unique index and then
    -- reads the winner's row (a number of the sequence is skipped; ids need not be dense).
    INSERT INTO switch.terminals AS t (terminal_id, merchant_id, kind)
    VALUES ('W' || lpad(nextval('switch.web_terminal_seq')::text, 7, '0'), p_merchant_id, 'web')
    ON CONFLICT (merchant_id) WHERE kind = 'web' DO NOTHING;
    RETURN QUERY SELECT t.terminal_id, t.status FROM switch.terminals t
                  WHERE t.merchant_id = p_merchant_id AND t.kind = 'web';
END $$;

-- 3. Retrieval reference numbers: the switch's blocks (switch.rrn_block_seq x 1000)
--    stay below 900000000000; the web seat numbers its transactions from there up,
--    one number each, from a sequence of its own. Both are 12 digits and never meet.
ALTER SEQUENCE switch.rrn_block_seq MAXVALUE 899999999;
CREATE SEQUENCE loyalty.seat_rrn_seq MINVALUE 900000000000 MAXVALUE 999999999999 NO CYCLE;
