-- A hold moves once, from pending to a final state, and nothing else about it changes.
-- (Trigger holds_resolve_once on ledger.holds: migration 0001.)
CREATE OR REPLACE FUNCTION ledger.check_hold_resolution() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger.holds: DELETE is not allowed' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.state <> 'pending' THEN
        RAISE EXCEPTION 'ledger.holds: hold % is already % and cannot be resolved again', OLD.id, OLD.state
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.debit_account_id <> OLD.debit_account_id
       OR NEW.credit_account_id <> OLD.credit_account_id OR NEW.amount <> OLD.amount
       OR NEW.expires_at <> OLD.expires_at THEN
        RAISE EXCEPTION 'ledger.holds: only state and resolved_by may change' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
