-- Every journal whose metadata carries 'txn' gets its loyalty.transactions row in the same
-- transaction (trigger journals_loyalty_record on ledger.journals: migration 0004).
-- Statement-level with a transition table: one INSERT per posting batch.
-- The journal's metadata->'txn' names its channel and operator when it is not the
-- terminal (the wire's journals carry neither: nothing more to write per request).
-- An exchange (and its void or reversal) also names its target program, the points credited
-- there and the rate used (migration 0022).
CREATE OR REPLACE FUNCTION loyalty.record_journals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO loyalty.transactions (
        journal_id, idempotency_key, business_date, txn_type, reason, rrn, stan, terminal_id,
        merchant_id, card_id, program, amount, currency, points_delta, money_delta_minor, fee_minor,
        prize_code, original_journal_id, undo_units, undo_legs, channel, operator_ref,
        target_program, target_points_delta, rate_num, rate_den, rate_fee_bps)
    SELECT j.id, j.idempotency_key, j.business_date, t->>'type', coalesce(t->>'reason', 'approved'),
           t->>'rrn', t->>'stan', t->>'terminal_id', t->>'merchant_id', (t->>'card_id')::bigint,
           t->>'program', coalesce((t->>'amount')::bigint, 0), t->>'currency',
           coalesce((t->>'points_delta')::bigint, 0), coalesce((t->>'money_delta_minor')::bigint, 0),
           coalesce((t->>'fee_minor')::bigint, 0), t->>'prize_code', (t->>'original_journal_id')::bigint,
           (t->>'undo_units')::bigint,
           CASE WHEN t ? 'undo_legs'
                THEN ARRAY(SELECT x::bigint FROM jsonb_array_elements_text(t->'undo_legs') AS x) END,
           coalesce(t->>'channel', 'terminal'), t->>'operator_ref',
           t->>'target_program', coalesce((t->>'target_points_delta')::bigint, 0), (t->>'rate_num')::bigint,
           (t->>'rate_den')::bigint, (t->>'rate_fee_bps')::integer
      FROM new_journals j CROSS JOIN LATERAL (SELECT j.metadata->'txn' AS t) AS m
     WHERE j.metadata ? 'txn';
    RETURN NULL;
END $$;
