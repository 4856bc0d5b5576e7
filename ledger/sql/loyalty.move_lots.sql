-- loyalty.move_lots: what one entry on a member's points account does to its lots
-- (specs/ACCOUNTING.md, "Points expiry"; ledger/loyalty/lots.py is the same rule in Python).
--
-- p_amount is the entry (credit +). p_fresh is the expiry date of points credited now.
-- p_undoes is the journal a compensation undoes (void, refund, reversal), or NULL.
--   1. A compensation first undoes what its original did to this account's lots and is not
--      undone yet: points it took are put back into the lots they came from (latest expiry
--      first), points it credited are taken out of the lots they went to (as far as those
--      still hold them; what it paid of the debt is owed again).
--   2. The rest: a credit first pays the debt lot, then goes to the lot expiring on p_fresh;
--      a debit takes the live lots oldest expiry first, then what is left becomes debt.
-- requires: loyalty.lot_add
CREATE OR REPLACE FUNCTION loyalty.move_lots(p_journal bigint, p_account bigint, p_program text, p_amount bigint,
                                             p_fresh date, p_undoes bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    debt_on  constant date := '9999-12-31';
    left_amt bigint := p_amount;  -- signed: what is still to place
    take     bigint;
    v        bigint;
    r        record;
BEGIN
    IF p_undoes IS NOT NULL THEN
        FOR r IN
            SELECT m.expires_on, sum(m.amount) AS net,
                   (SELECT l.remaining FROM loyalty.point_lots l
                     WHERE l.account_id = p_account AND l.expires_on = m.expires_on) AS lot
              FROM loyalty.lot_moves m
             WHERE m.account_id = p_account AND (m.journal_id = p_undoes OR m.undoes_journal_id = p_undoes)
             GROUP BY m.expires_on
            HAVING (sum(m.amount) > 0) = (p_amount < 0) AND sum(m.amount) <> 0
             ORDER BY CASE WHEN p_amount > 0 THEN m.expires_on END DESC, m.expires_on
        LOOP
            EXIT WHEN left_amt = 0;
            IF p_amount > 0 THEN
                take := least(left_amt, -r.net);
            ELSIF r.expires_on = debt_on THEN
                take := -least(-left_amt, r.net);  -- the debt the original paid is owed again
            ELSE
                take := -least(-left_amt, r.net, greatest(coalesce(r.lot, 0), 0));
            END IF;
            CONTINUE WHEN take = 0;
            PERFORM loyalty.lot_add(p_journal, p_account, r.expires_on, p_program, take, p_undoes);
            left_amt := left_amt - take;
        END LOOP;
    END IF;
    IF left_amt > 0 THEN
        SELECT l.remaining INTO v FROM loyalty.point_lots l
         WHERE l.account_id = p_account AND l.expires_on = debt_on;
        IF FOUND AND v < 0 THEN
            take := least(left_amt, -v);
            PERFORM loyalty.lot_add(p_journal, p_account, debt_on, p_program, take, NULL);
            left_amt := left_amt - take;
        END IF;
        IF left_amt > 0 THEN
            PERFORM loyalty.lot_add(p_journal, p_account, p_fresh, p_program, left_amt, NULL);
        END IF;
    ELSIF left_amt < 0 THEN
        FOR r IN
            SELECT l.expires_on, l.remaining FROM loyalty.point_lots l
             WHERE l.account_id = p_account AND l.remaining > 0 AND l.expires_on < debt_on
             ORDER BY l.expires_on
        LOOP
            EXIT WHEN left_amt = 0;
            take := -least(-left_amt, r.remaining);
            PERFORM loyalty.lot_add(p_journal, p_account, r.expires_on, p_program, take, NULL);
            left_amt := left_amt - take;
        END LOOP;
        IF left_amt < 0 THEN
            PERFORM loyalty.lot_add(p_journal, p_account, debt_on, p_program, left_amt, NULL);
        END IF;
    END IF;
END $$;
