-- The merchant's web seat terminal, created on first use: (terminal id, status);
-- no row for a merchant that does not exist.
CREATE OR REPLACE FUNCTION loyalty.seat_terminal(p_merchant_id text, OUT terminal_id text, OUT status text)
RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT t.terminal_id, t.status FROM switch.terminals t
                  WHERE t.merchant_id = p_merchant_id AND t.kind = 'web';
    IF FOUND OR NOT EXISTS (SELECT 1 FROM loyalty.merchants m WHERE m.merchant_id = p_merchant_id) THEN
        RETURN;
    END IF;
    -- Two first uses at once: one inserts, the other waits on the unique index and then
    -- reads the winner's row (a number of the sequence is skipped; ids need not be dense).
    INSERT INTO switch.terminals AS t (terminal_id, merchant_id, kind)
    VALUES ('W' || lpad(nextval('switch.web_terminal_seq')::text, 7, '0'), p_merchant_id, 'web')
    ON CONFLICT (merchant_id) WHERE kind = 'web' DO NOTHING;
    RETURN QUERY SELECT t.terminal_id, t.status FROM switch.terminals t
                  WHERE t.merchant_id = p_merchant_id AND t.kind = 'web';
END $$;
