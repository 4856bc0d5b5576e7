-- What stands against an original (its compensations still in force, and its own
-- legs), and the same read behind the original's lock in one round trip.
--
-- Voids, refunds and reversals of one original serialise on a transaction-scoped
-- advisory lock, and must read what stands only after they hold it: a read in the
-- statement that takes the lock would use the snapshot taken before the wait, and
-- miss a refund committed by the holder meanwhile. PL/pgSQL runs each statement of a
-- VOLATILE function with a fresh snapshot (READ COMMITTED), so lock_standing takes
-- the lock in one statement and reads in the next: BEGIN, lock_standing, [post],
-- COMMIT instead of BEGIN, lock, read, [post], COMMIT.

-- comps: [[journal_id, txn_type, undo_units, [undo per leg]], ...] by journal id;
-- legs: [[debit account, credit account, amount, debit role, credit role], ...] by leg.
-- PL/pgSQL, not SQL: a session plans its query once (PostgreSQL 15 plans a SQL
-- function's body on every call, which cost more than the round trips saved).
CREATE FUNCTION loyalty.standing(p_journal_id bigint, OUT comps json, OUT legs json)
LANGUAGE plpgsql STABLE AS $$
BEGIN
SELECT (SELECT coalesce(json_agg(json_build_array(t.journal_id, t.txn_type, coalesce(t.undo_units, 0),
                                                  coalesce(t.undo_legs, '{}')) ORDER BY t.journal_id), '[]')
          FROM loyalty.transactions t
         WHERE t.original_journal_id = p_journal_id AND t.journal_id IS NOT NULL
           AND t.txn_type IN ('void', 'refund', 'reversal')
           AND NOT EXISTS (SELECT 1 FROM loyalty.transactions r
                            WHERE r.original_journal_id = t.journal_id AND r.txn_type = 'reversal'
                              AND r.journal_id IS NOT NULL)),
       (SELECT coalesce(json_agg(json_build_array(d.account_id, c.account_id, c.amount,
                                                  da.owner_kind || ':' || da.purpose,
                                                  ca.owner_kind || ':' || ca.purpose) ORDER BY d.leg), '[]')
          FROM ledger.entries d
          JOIN ledger.entries c ON c.journal_id = d.journal_id AND c.leg = d.leg + 1
          JOIN ledger.accounts da ON da.id = d.account_id
          JOIN ledger.accounts ca ON ca.id = c.account_id
         WHERE d.journal_id = p_journal_id AND d.leg % 2 = 1)
  INTO comps, legs;
END $$;

-- Waits at most lock_timeout (e.g. '2000ms') for the lock, which is held until the
-- caller's transaction ends; then, when standing_of is given, reads its standing.
CREATE FUNCTION loyalty.lock_standing(lock_timeout text, lock_namespace integer, lock_key integer,
                                      standing_of bigint, OUT comps json, OUT legs json)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    PERFORM pg_advisory_xact_lock(lock_namespace, lock_key);
    IF standing_of IS NOT NULL THEN
        SELECT s.comps, s.legs INTO comps, legs FROM loyalty.standing(standing_of) s;
    END IF;
END $$;
