-- What stands against an original, read without a lock: its compensations still in
-- force, its own legs, and the version of its family (every void, refund or
-- reversal of p_root, and every reversal of those: a compensation is never itself
-- voided or refunded, and a reversal never reversed, so the family is two deep).
--
-- comps: [[journal_id, txn_type, undo_units, [undo per leg]], ...] by journal id;
-- legs: [[debit account, credit account, amount, debit role, credit role], ...] by leg.
-- PL/pgSQL, not SQL: a session plans its query once (PostgreSQL 15 plans a SQL
-- function's body on every call).
CREATE OR REPLACE FUNCTION loyalty.standing(p_journal_id bigint, p_root bigint,
                                 OUT comps json, OUT legs json, OUT version bigint)
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
         WHERE d.journal_id = p_journal_id AND d.leg % 2 = 1),
       (SELECT count(*) + coalesce(sum((SELECT count(*) FROM loyalty.transactions r
                                         WHERE r.original_journal_id = t.journal_id
                                           AND r.journal_id IS NOT NULL)), 0)
          FROM loyalty.transactions t
         WHERE t.original_journal_id = p_root AND t.journal_id IS NOT NULL)
  INTO comps, legs, version;
END $$;
