-- Every journal balances per asset, and its entries name existing journals and accounts
-- (trigger entries_balance on ledger.entries: migration 0001).
-- Statement-level with a transition table: one grouped check per INSERT, not a
-- trigger per row, so the batch path pays once.
CREATE OR REPLACE FUNCTION ledger.check_entries_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT journal_id, asset, sum(amount) AS total INTO bad
      FROM new_entries GROUP BY journal_id, asset HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger.entries: journal % does not balance in asset % (sum %)',
            bad.journal_id, bad.asset, bad.total USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.journal_id, e.leg, e.account_id, e.asset INTO bad
      FROM new_entries e
     WHERE NOT EXISTS (SELECT 1 FROM ledger.accounts a WHERE a.id = e.account_id AND a.asset = e.asset)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger.entries: journal % leg % names account % in asset %, which does not exist',
            bad.journal_id, bad.leg, bad.account_id, bad.asset USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT e.journal_id INTO bad
      FROM new_entries e
     WHERE NOT EXISTS (SELECT 1 FROM ledger.journals j WHERE j.id = e.journal_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger.entries: journal % does not exist', bad.journal_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
