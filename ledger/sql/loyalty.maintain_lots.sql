-- The lots of members' points in programs with expiry follow every posting, in its own
-- transaction (trigger entries_lots on ledger.entries: migration 0024). Statement-level with a
-- transition table: one join per posting batch, which finds nothing for programs without
-- expiry. post_batch holds the lock of every account it posts to, so an account's lots change
-- in its postings' order. The end of day's expiry journals (metadata 'lots') move their lots
-- themselves (loyalty.expire_lots).
-- SECURITY DEFINER: the runtime roles post (through post_batch) but never write lots.
-- requires: loyalty.move_lots
CREATE OR REPLACE FUNCTION loyalty.maintain_lots() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT e.journal_id, e.account_id, e.amount, p.code,
               (j.business_date + make_interval(months => p.points_expiry_months))::date AS fresh,
               coalesce(j.reverses_journal_id, (j.metadata->'txn'->>'original_journal_id')::bigint) AS undoes
          FROM new_entries e
          JOIN loyalty.programs p ON p.points_asset = e.asset AND p.points_expiry_months IS NOT NULL
          JOIN ledger.accounts a ON a.id = e.account_id AND a.owner_kind = 'card' AND a.purpose = 'points'
          JOIN ledger.journals j ON j.id = e.journal_id
         WHERE NOT j.metadata ? 'lots'
         ORDER BY e.journal_id, e.leg
    LOOP
        PERFORM loyalty.move_lots(r.journal_id, r.account_id, r.code, r.amount, r.fresh, r.undoes);
    END LOOP;
    RETURN NULL;
END $$;
