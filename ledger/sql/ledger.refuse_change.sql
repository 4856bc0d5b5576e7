-- Append-only tables refuse UPDATE, DELETE and TRUNCATE (triggers journals_append_only,
-- entries_append_only, receipts_append_only, accounts_never_deleted: migration 0001).
CREATE OR REPLACE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.%: % is not allowed; the ledger is append-only',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END $$;
