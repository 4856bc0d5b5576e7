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
    -- Programs without expiry pay this probe of a table of a handful of rows, nothing more.
    IF NOT EXISTS (SELECT 1 FROM loyalty.programs p WHERE p.points_expiry_months IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    -- Each journal of the statement, then each of its entries' accounts, is one index probe
    -- (LATERAL ... LIMIT 1); as plain joins the planner, knowing nothing of the transition
    -- table, may hash whole tables (measured). The end of day's journals drop out per journal.
    FOR r IN
        WITH js AS (SELECT DISTINCT ne.journal_id FROM new_entries ne),
             live AS (SELECT js.journal_id, j.business_date, j.undoes
                        FROM js CROSS JOIN LATERAL (
                             SELECT jj.business_date,
                                    coalesce(jj.reverses_journal_id,
                                             (jj.metadata->'txn'->>'original_journal_id')::bigint) AS undoes
                               FROM ledger.journals jj
                              WHERE jj.id = js.journal_id AND NOT jj.metadata ? 'lots' LIMIT 1) j)
        SELECT e.journal_id, e.account_id, e.amount, p.code,
               (live.business_date + make_interval(months => p.points_expiry_months))::date AS fresh,
               live.undoes
          FROM new_entries e
          JOIN live ON live.journal_id = e.journal_id
          JOIN loyalty.programs p ON p.points_asset = e.asset AND p.points_expiry_months IS NOT NULL
          CROSS JOIN LATERAL (SELECT 1 FROM ledger.accounts a
                               WHERE a.id = e.account_id AND a.owner_kind = 'card' AND a.purpose = 'points'
                               LIMIT 1) a
         ORDER BY e.journal_id, e.leg
    LOOP
        PERFORM loyalty.move_lots(r.journal_id, r.account_id, r.code, r.amount, r.fresh, r.undoes);
    END LOOP;
    RETURN NULL;
END $$;
