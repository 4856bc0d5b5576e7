-- Entries refer to accounts by (id, asset): an account's identity never changes
-- (trigger accounts_identity_fixed on ledger.accounts: migration 0001).
CREATE OR REPLACE FUNCTION ledger.refuse_rekey() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.asset <> OLD.asset OR NEW.normal_side <> OLD.normal_side THEN
        RAISE EXCEPTION 'ledger.accounts: account % may not change its id, asset or normal side', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
