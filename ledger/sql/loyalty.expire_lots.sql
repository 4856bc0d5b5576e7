-- loyalty.expire_lots: one part of a program's expiry journal for business day p_day
-- (specs/ACCOUNTING.md, "Points expiry"): every live lot of the program expiring on or before
-- p_day, of the member accounts p_accounts (the caller's slice of the accounts with due lots:
-- at most 10,000, a journal's legs being numbered in 16 bits; those with none due are skipped),
-- moves to the operator's points breakage account p_breakage in one journal under p_key:
-- Dr member points / Cr breakage per account (legs in pairs, as every journal's). Set-based:
-- a part of 10,000 accounts is a handful of statements. Idempotent: a key already posted
-- answers with its journal (existed = true); nothing due answers journal_id NULL.
-- It writes journals, entries, balances and lots like ledger.post_batch: as the owner, after
-- reading the business day FOR SHARE and locking its accounts in id order.
-- requires: loyalty.post_breakage
CREATE OR REPLACE FUNCTION loyalty.expire_lots(p_program text, p_day date, p_key text, p_breakage bigint,
                                               p_accounts bigint[])
RETURNS TABLE(journal_id bigint, points bigint, accounts integer, existed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_date  date;
    v_asset text;
    v_cur   text;
    v_ids   bigint[];
    v_acc   bigint[];
    v_amt   bigint[];
    v_total bigint;
    v_n     integer;
    v_jid   bigint;
BEGIN
    SELECT j.id, (j.metadata->'lots'->>'points')::bigint, (j.metadata->'lots'->>'accounts')::integer
      INTO journal_id, points, accounts
      FROM ledger.journals j WHERE j.idempotency_key = p_key;
    IF FOUND THEN
        existed := true; RETURN NEXT; RETURN;
    END IF;
    existed := false;
    SELECT b.open_date INTO v_date FROM ledger.business_day b WHERE b.singleton FOR SHARE;
    SELECT p.points_asset, p.currency INTO v_asset, v_cur FROM loyalty.programs p WHERE p.code = p_program;
    SELECT array_agg(DISTINCT a.id ORDER BY a.id) INTO v_ids
      FROM unnest(p_accounts) AS u(id) JOIN ledger.accounts a ON a.id = u.id;
    IF v_ids IS NULL THEN
        journal_id := NULL; points := 0; accounts := 0; RETURN NEXT; RETURN;
    END IF;
    -- Lots change only under their account's lock: lock first, then read what is due.
    PERFORM 1 FROM ledger.accounts a WHERE a.id = ANY (v_ids || p_breakage) ORDER BY a.id FOR UPDATE;
    SELECT array_agg(d.account_id ORDER BY d.account_id), array_agg(d.amt ORDER BY d.account_id), sum(d.amt)
      INTO v_acc, v_amt, v_total
      FROM (SELECT l.account_id, sum(l.remaining) AS amt FROM loyalty.point_lots l
             WHERE l.account_id = ANY (v_ids) AND l.expires_on <= p_day AND l.remaining > 0
             GROUP BY l.account_id) d;
    IF v_acc IS NULL THEN
        journal_id := NULL; points := 0; accounts := 0; RETURN NEXT; RETURN;
    END IF;
    v_n := array_length(v_acc, 1);
    v_jid := loyalty.post_breakage(p_key, v_date, v_asset, jsonb_build_object(
        'txn', jsonb_build_object('type', 'expiry', 'program', p_program, 'amount', v_total,
                                  'currency', v_cur, 'channel', 'cli'),
        'lots', jsonb_build_object('day', p_day, 'points', v_total, 'accounts', v_n)), v_acc, v_amt, p_breakage);
    -- No lot_moves rows: nothing ever undoes an expiry journal, whose entries say per account
    -- what expired (a million moves would double this step's writes).
    DELETE FROM loyalty.point_lots l
     WHERE l.account_id = ANY (v_acc) AND l.expires_on <= p_day AND l.remaining > 0;
    journal_id := v_jid; points := v_total; accounts := v_n;
    RETURN NEXT;
END $$;
