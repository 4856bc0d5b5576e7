-- A sign-on's working keys (migration 0026): the daemon generates them, seals them under the
-- master key and installs them here, with the sign-on itself. The daemon's role may not write a
-- terminal's key columns: this function (SECURITY DEFINER, owned by the owner) is its one way,
-- and only for a POS terminal that has a master key. The key triggers record who and when.
-- Returns false when no such terminal (unknown, a web seat, or without a TMK).
CREATE OR REPLACE FUNCTION switch.install_working_keys(p_terminal_id text, p_mac_alg text, p_mac_key_sealed bytea,
                                                       p_pin_alg text, p_pin_key_sealed bytea)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE switch.terminals
       SET mac_alg = p_mac_alg, mac_key_sealed = p_mac_key_sealed,
           pin_alg = p_pin_alg, pin_key_sealed = p_pin_key_sealed,
           signed_on = true, signed_on_at = now(), updated_at = now()
     WHERE terminal_id = p_terminal_id AND kind = 'pos' AND tmk_sealed IS NOT NULL;
    RETURN FOUND;
END $$;
