-- Least-privilege roles (`switchd db roles`): a terminal's keys change only through provisioning
-- (the CLI as the owner, or the portal's role); each change is recorded here, who and when, by a
-- SECURITY DEFINER trigger function (ledger/sql/switch.record_key_change.sql). Runtime roles may
-- read this table, never write it; it is append-only for everyone.
CREATE TABLE switch.terminal_key_changes (
    id              bigserial PRIMARY KEY,
    terminal_id     text NOT NULL,
    changed_at      timestamptz NOT NULL DEFAULT now(),
    changed_by      text NOT NULL,  -- the database login (session_user)
    mac_alg_before  text,           -- NULL: no key (or a new terminal)
    mac_alg_after   text            -- NULL: the key was removed
);
CREATE INDEX terminal_key_changes_terminal ON switch.terminal_key_changes(terminal_id, changed_at);

CREATE TRIGGER terminal_key_changes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON switch.terminal_key_changes FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- The same body as the function file, which replaces it after the migrations (the file is the
-- source): the triggers below need the function to exist now. OR REPLACE: the function file may
-- have been applied already (an upgrade in steps, with older migrations and these function files).
CREATE OR REPLACE FUNCTION switch.record_key_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO switch.terminal_key_changes (terminal_id, changed_by, mac_alg_before, mac_alg_after)
    VALUES (NEW.terminal_id, session_user,
            CASE TG_OP WHEN 'UPDATE' THEN OLD.mac_alg END, NEW.mac_alg);
    RETURN NULL;
END $$;

-- Only statements that set the key columns fire these: a sign-on's UPDATE does not.
CREATE TRIGGER terminals_key_added AFTER INSERT ON switch.terminals
    FOR EACH ROW WHEN (NEW.mac_key_sealed IS NOT NULL) EXECUTE FUNCTION switch.record_key_change();
CREATE TRIGGER terminals_key_changed AFTER UPDATE OF mac_alg, mac_key_sealed ON switch.terminals
    FOR EACH ROW WHEN (OLD.mac_alg IS DISTINCT FROM NEW.mac_alg OR OLD.mac_key_sealed IS DISTINCT FROM NEW.mac_key_sealed)
    EXECUTE FUNCTION switch.record_key_change();
