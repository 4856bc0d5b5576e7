-- loyalty.lot_add: add a signed amount to one lot of a member's points account, creating the
-- lot or deleting it when it reaches zero, and record the move (loyalty.lot_moves). Called by
-- loyalty.move_lots under the account lock the posting holds.
CREATE OR REPLACE FUNCTION loyalty.lot_add(p_journal bigint, p_account bigint, p_expires date, p_program text,
                                           p_amount bigint, p_undoes bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v bigint;
BEGIN
    IF p_amount = 0 THEN RETURN; END IF;
    -- One statement whether the lot exists or not (the account's lock keeps others out).
    INSERT INTO loyalty.point_lots AS l (account_id, expires_on, program, remaining)
    VALUES (p_account, p_expires, p_program, p_amount)
    ON CONFLICT (account_id, expires_on) DO UPDATE SET remaining = l.remaining + excluded.remaining
    RETURNING l.remaining INTO v;
    IF v = 0 THEN
        DELETE FROM loyalty.point_lots l WHERE l.account_id = p_account AND l.expires_on = p_expires;
    END IF;
    INSERT INTO loyalty.lot_moves (journal_id, account_id, expires_on, amount, undoes_journal_id)
    VALUES (p_journal, p_account, p_expires, p_amount, p_undoes);
END $$;
