-- A hosted program belongs to exactly one merchant.
-- (Trigger merchants_hosted_once on loyalty.merchants: migration 0004.)
CREATE OR REPLACE FUNCTION loyalty.check_hosted_program() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM loyalty.programs p WHERE p.code = NEW.program AND p.kind = 'hosted')
       AND EXISTS (SELECT 1 FROM loyalty.merchants m
                    WHERE m.program = NEW.program AND m.merchant_id <> NEW.merchant_id) THEN
        RAISE EXCEPTION 'program % is hosted and already has a merchant', NEW.program
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END $$;
