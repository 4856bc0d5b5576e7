-- loyalty.move_residual: one part of a program's residual-value journal for business day p_day
-- (specs/ACCOUNTING.md, "Stored-value residual value"). Cards of the program (the program of
-- the merchant that last loaded them) whose expiry month ended at least p_grace_days before
-- p_day, with available stored value, at most p_accounts_max of them (lowest card ids first):
-- Dr card stored_value / Cr p_breakage (operator:<CUR>:sv_breakage) for the available value,
-- in one journal under p_key, and a row in loyalty.residual_breakage per card, so that a card's
-- residual moves once. Idempotent like loyalty.expire_lots; it writes the ledger as post_batch
-- does (business day FOR SHARE, accounts locked in id order, as the owner).
-- requires: loyalty.post_breakage
CREATE OR REPLACE FUNCTION loyalty.move_residual(p_program text, p_day date, p_grace_days integer, p_key text,
                                                 p_breakage bigint, p_accounts_max integer)
RETURNS TABLE(journal_id bigint, amount_minor bigint, cards integer, existed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_date  date;
    v_asset text;
    v_cur   text;
    v_ids   bigint[];
    v_acc   bigint[];
    v_card  bigint[];
    v_amt   bigint[];
    v_total bigint;
    v_n     integer;
    v_jid   bigint;
BEGIN
    SELECT j.id, (j.metadata->'residual'->>'amount_minor')::bigint, (j.metadata->'residual'->>'cards')::integer
      INTO journal_id, amount_minor, cards
      FROM ledger.journals j WHERE j.idempotency_key = p_key;
    IF FOUND THEN
        existed := true; RETURN NEXT; RETURN;
    END IF;
    existed := false;
    SELECT b.open_date INTO v_date FROM ledger.business_day b WHERE b.singleton FOR SHARE;
    SELECT cur.asset, p.currency INTO v_asset, v_cur
      FROM loyalty.programs p JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
     WHERE p.code = p_program;
    SELECT array_agg(x.account_id ORDER BY x.account_id) INTO v_ids FROM (
        SELECT sa.id AS account_id
          FROM loyalty.cards c
          JOIN LATERAL (SELECT t.program FROM loyalty.transactions t
                         WHERE t.card_id = c.id AND t.txn_type = 'load' AND t.journal_id IS NOT NULL
                         ORDER BY t.id DESC LIMIT 1) lp ON lp.program = p_program
          JOIN ledger.accounts sa ON sa.owner_kind = 'card' AND sa.owner_id = c.id::text
                                 AND sa.purpose = 'stored_value' AND sa.asset = v_asset
         WHERE c.expiry IS NOT NULL
           AND (make_date(2000 + left(c.expiry, 2)::integer, right(c.expiry, 2)::integer, 1)
                + make_interval(months => 1, days => p_grace_days - 1))::date <= p_day
           AND sa.posted - sa.held > 0
           AND NOT EXISTS (SELECT 1 FROM loyalty.residual_breakage rb WHERE rb.card_id = c.id)
         ORDER BY sa.id LIMIT p_accounts_max) x;
    IF v_ids IS NULL THEN
        journal_id := NULL; amount_minor := 0; cards := 0; RETURN NEXT; RETURN;
    END IF;
    PERFORM 1 FROM ledger.accounts a WHERE a.id = ANY (v_ids || p_breakage) ORDER BY a.id FOR UPDATE;
    SELECT array_agg(a.id ORDER BY a.id), array_agg(a.owner_id::bigint ORDER BY a.id),
           array_agg(a.posted - a.held ORDER BY a.id), sum(a.posted - a.held)
      INTO v_acc, v_card, v_amt, v_total
      FROM ledger.accounts a WHERE a.id = ANY (v_ids) AND a.posted - a.held > 0;
    IF v_acc IS NULL THEN
        journal_id := NULL; amount_minor := 0; cards := 0; RETURN NEXT; RETURN;
    END IF;
    v_n := array_length(v_acc, 1);
    v_jid := loyalty.post_breakage(p_key, v_date, v_asset, jsonb_build_object(
        'txn', jsonb_build_object('type', 'residual', 'program', p_program, 'amount', v_total,
                                  'currency', v_cur, 'channel', 'cli'),
        'residual', jsonb_build_object('day', p_day, 'amount_minor', v_total, 'cards', v_n)), v_acc, v_amt, p_breakage);
    INSERT INTO loyalty.residual_breakage (card_id, program, amount_minor, journal_id, business_date)
    SELECT u.card, p_program, u.amt, v_jid, p_day FROM unnest(v_card, v_amt) AS u(card, amt);
    journal_id := v_jid; amount_minor := v_total; cards := v_n;
    RETURN NEXT;
END $$;
