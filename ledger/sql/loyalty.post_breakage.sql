-- loyalty.post_breakage: the journal end of day posts to a breakage account: per member account
-- p_acc[k], Dr it / Cr p_breakage for p_amt[k] (legs in pairs, as every journal's), balances
-- after each leg, the accounts' balances, and the receipt that makes it one request. Called by
-- loyalty.expire_lots and loyalty.move_residual (SECURITY DEFINER) after they read the business
-- day FOR SHARE and locked the accounts in id order; returns the journal id.
CREATE OR REPLACE FUNCTION loyalty.post_breakage(p_key text, p_business_date date, p_asset text, p_metadata jsonb,
                                                 p_acc bigint[], p_amt bigint[], p_breakage bigint)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_hash  bytea := sha256(convert_to(p_key, 'UTF8'));
    v_total bigint := (SELECT sum(x) FROM unnest(p_amt) AS x);
    v_jid   bigint := nextval('ledger.journal_id_seq');
BEGIN
    INSERT INTO ledger.journals (id, idempotency_key, content_hash, kind, business_date, metadata)
    VALUES (v_jid, p_key, v_hash, 'transfer', p_business_date, p_metadata);
    INSERT INTO ledger.entries (journal_id, leg, account_id, asset, amount, balance_after)
    SELECT v_jid, (2 * u.k - 1)::smallint, u.acc, p_asset, -u.amt, a.posted - u.amt
      FROM unnest(p_acc, p_amt) WITH ORDINALITY AS u(acc, amt, k) JOIN ledger.accounts a ON a.id = u.acc
    UNION ALL
    SELECT v_jid, (2 * u.k)::smallint, p_breakage, p_asset, u.amt,
           b.posted + sum(u.amt) OVER (ORDER BY u.k ROWS UNBOUNDED PRECEDING)
      FROM unnest(p_amt) WITH ORDINALITY AS u(amt, k) CROSS JOIN ledger.accounts b
     WHERE b.id = p_breakage;
    UPDATE ledger.accounts a SET posted = a.posted - u.amt
      FROM unnest(p_acc, p_amt) AS u(acc, amt) WHERE a.id = u.acc;
    UPDATE ledger.accounts a SET posted = a.posted + v_total WHERE a.id = p_breakage;
    -- One request per journal, as reconciliation proves: the receipt names it.
    INSERT INTO ledger.receipts (idempotency_key, content_hash, payload, journal_id)
    VALUES (p_key, v_hash, ''::bytea, v_jid);
    RETURN v_jid;
END $$;
