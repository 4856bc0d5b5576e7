-- Fewer writes per posting (measured with bench/e2e, see the commit).
--
-- 1. Account rows are updated on every posting that touches them. With full
--    pages an update cannot stay on its page (HOT), so it writes a new row
--    elsewhere and a new entry in both of the table's indexes; room left on
--    each page keeps most updates HOT. Applies to pages written from now on.
ALTER TABLE ledger.accounts SET (fillfactor = 70);

-- 2. Nearly every journal has neither a reversed journal nor a resolved hold;
--    unique indexes over only the rows that have one keep the same guarantee
--    without an index entry per journal for NULL.
ALTER TABLE ledger.journals DROP CONSTRAINT journals_reverses_journal_id_key;
CREATE UNIQUE INDEX journals_reverses ON ledger.journals(reverses_journal_id)
    WHERE reverses_journal_id IS NOT NULL;
ALTER TABLE ledger.journals DROP CONSTRAINT journals_resolves_hold_id_key;
CREATE UNIQUE INDEX journals_resolves_hold ON ledger.journals(resolves_hold_id)
    WHERE resolves_hold_id IS NOT NULL;

-- 3. Transactions are looked up by idempotency key only when they posted nothing
--    (a posted one is found through its journal's key).
DROP INDEX loyalty.transactions_key;
CREATE INDEX transactions_unposted_key ON loyalty.transactions(idempotency_key)
    WHERE journal_id IS NULL;
