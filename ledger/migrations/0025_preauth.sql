-- Stored-value pre-authorisation over ISO 8583 (specs/HOST-INTERFACE.md §6.1): a 0100 places
-- a hold and is recorded as a loyalty transaction of type 'preauth' (it moves no money); a
-- completion posts a stored-value purchase ('sv_purchase'), and a completion that is declined
-- is recorded as 'completion'.
--
-- The type constraint is re-made with those two added to whatever it allows now (read from the
-- catalogue rather than written out), so that types other migrations added before this one
-- stay allowed. NOT VALID, as 0013's and 0018's: every existing row passes it.
DO $$
DECLARE
    allowed text[];
BEGIN
    SELECT array_agg(DISTINCT m[1] ORDER BY m[1]) INTO allowed
      FROM pg_constraint c
     CROSS JOIN LATERAL regexp_matches(pg_get_constraintdef(c.oid), '''([a-z_]+)''', 'g') AS m
     WHERE c.conrelid = 'loyalty.transactions'::regclass AND c.conname = 'transactions_txn_type_check';
    allowed := ARRAY(SELECT DISTINCT x FROM unnest(coalesce(allowed, '{}') || ARRAY['preauth', 'completion']) AS x
                      ORDER BY x);
    ALTER TABLE loyalty.transactions DROP CONSTRAINT transactions_txn_type_check;
    EXECUTE format('ALTER TABLE loyalty.transactions ADD CONSTRAINT transactions_txn_type_check '
                   'CHECK (txn_type = ANY (%L::text[])) NOT VALID', allowed);
END $$;
