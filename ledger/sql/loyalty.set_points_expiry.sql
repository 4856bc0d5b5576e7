-- loyalty.set_points_expiry: set (or clear, with NULL) a program's points expiry, and make or drop
-- its lots (specs/ACCOUNTING.md, "Points expiry"). Turning expiry on puts each member account's
-- balance into one lot expiring p_months after the open business day (a negative balance into
-- the debt lot); turning it off drops the lots; a change of months keeps existing lots' dates.
-- The member accounts are locked first, so no posting moves them meanwhile. SECURITY DEFINER:
-- lots are written only by the owner's functions; the portal and the CLI call this one.
CREATE OR REPLACE FUNCTION loyalty.set_points_expiry(p_program text, p_months integer)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_asset  text;
    v_before integer;
BEGIN
    SELECT p.points_asset, p.points_expiry_months INTO v_asset, v_before
      FROM loyalty.programs p WHERE p.code = p_program FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no program %', p_program USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM 1 FROM ledger.accounts a
      WHERE a.owner_kind = 'card' AND a.purpose = 'points' AND a.asset = v_asset ORDER BY a.id FOR UPDATE;
    UPDATE loyalty.programs p SET points_expiry_months = p_months WHERE p.code = p_program;
    IF v_before IS NULL AND p_months IS NOT NULL THEN
        INSERT INTO loyalty.point_lots (account_id, expires_on, program, remaining)
        SELECT a.id, CASE WHEN a.posted > 0 THEN (b.open_date + make_interval(months => p_months))::date
                          ELSE DATE '9999-12-31' END, p_program, a.posted
          FROM ledger.accounts a CROSS JOIN ledger.business_day b
         WHERE a.owner_kind = 'card' AND a.purpose = 'points' AND a.asset = v_asset AND a.posted <> 0;
    ELSIF v_before IS NOT NULL AND p_months IS NULL THEN
        DELETE FROM loyalty.point_lots l WHERE l.program = p_program;
    END IF;
END $$;
