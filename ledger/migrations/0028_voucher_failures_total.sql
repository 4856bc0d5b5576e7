-- Failed top-up card redemptions, counted for good per subject (failures_total; `failures` is
-- the current window's and resets). The metrics export the sums per scope from this table, so
-- the figures are the database's, whichever process took the attempt: the switch's terminals,
-- and the portal's member pages and member API (client addresses), which export no metrics of
-- their own. Rows that existed before count their current window only.
ALTER TABLE loyalty.voucher_failures ADD COLUMN failures_total bigint NOT NULL DEFAULT 0;
UPDATE loyalty.voucher_failures SET failures_total = failures;
