-- Every change of a terminal's MAC algorithm or key is recorded in switch.terminal_key_changes
-- (migration 0020): who (the database login, session_user: the owner, the portal's role) and
-- when, never the key. SECURITY DEFINER, owned by the owner role (`switchd db roles`): no
-- runtime role may write that table itself, so the record cannot be forged or erased by one.
CREATE OR REPLACE FUNCTION switch.record_key_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO switch.terminal_key_changes (terminal_id, changed_by, mac_alg_before, mac_alg_after)
    VALUES (NEW.terminal_id, session_user,
            CASE TG_OP WHEN 'UPDATE' THEN OLD.mac_alg END, NEW.mac_alg);
    RETURN NULL;
END $$;
