-- Every change of a terminal's keys is recorded in switch.terminal_key_changes (migration 0020):
-- who (the database login, session_user: the owner, the portal's role, the daemon at a sign-on)
-- and when, never the key. The trigger's argument names the key ('mac' when none: the MAC key;
-- 'tmk', 'pin', migration 0026). SECURITY DEFINER, owned by the owner role (`switchd db roles`):
-- no runtime role may write that table itself, so the record cannot be forged or erased by one.
CREATE OR REPLACE FUNCTION switch.record_key_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind text := coalesce(TG_ARGV[0], 'mac');
BEGIN
    INSERT INTO switch.terminal_key_changes (terminal_id, changed_by, mac_alg_before, mac_alg_after, key_kind)
    VALUES (NEW.terminal_id, session_user,
            CASE WHEN TG_OP = 'UPDATE' THEN CASE kind WHEN 'tmk' THEN OLD.tmk_alg WHEN 'pin' THEN OLD.pin_alg
                                                     ELSE OLD.mac_alg END END,
            CASE kind WHEN 'tmk' THEN NEW.tmk_alg WHEN 'pin' THEN NEW.pin_alg ELSE NEW.mac_alg END,
            kind);
    RETURN NULL;
END $$;
