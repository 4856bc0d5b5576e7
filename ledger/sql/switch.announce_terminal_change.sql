-- Every change to a terminal is announced on channel switchd_terminals (payload:
-- the terminal id), whoever makes it: the CLI, another daemon, psql. Daemons
-- drop their cached copy when told, so a terminal disabled or re-keyed is
-- refused at once, not after a cache lifetime. NOTIFY is delivered on commit.
-- (Trigger terminals_announce on switch.terminals: migration 0007.)
CREATE OR REPLACE FUNCTION switch.announce_terminal_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchd_terminals', CASE TG_OP WHEN 'DELETE' THEN OLD.terminal_id ELSE NEW.terminal_id END);
    IF TG_OP = 'UPDATE' AND NEW.terminal_id <> OLD.terminal_id THEN
        PERFORM pg_notify('switchd_terminals', OLD.terminal_id);
    END IF;
    RETURN NULL;
END $$;
