-- A top-up card is marked redeemed in the transaction that posts its redemption journal
-- (trigger journals_voucher_redeemed, function loyalty.mark_voucher_redeemed), instead of by a
-- statement of its own after the journal committed: one round trip less per redemption, and no
-- card left 'redeeming' by a crash between the two. Only journals under a redemption's key
-- (`voucher:<serial>:redeem`, ledger/loyalty/vouchers.py) call the function: the WHEN clause is
-- evaluated without a call for every other journal.

-- The function file (loyalty.mark_voucher_redeemed.sql) replaces this placeholder in the same
-- `db upgrade`, after the migrations. OR REPLACE: the file may have been applied already.
CREATE OR REPLACE FUNCTION loyalty.mark_voucher_redeemed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END $$;
CREATE TRIGGER journals_voucher_redeemed AFTER INSERT ON ledger.journals
    FOR EACH ROW WHEN (NEW.idempotency_key LIKE 'voucher:%:redeem')
    EXECUTE FUNCTION loyalty.mark_voucher_redeemed();

-- Cards whose journal committed but whose mark was lost (the earlier two-step way): marked now.
UPDATE loyalty.vouchers v SET status = 'redeemed', journal_id = j.id, redeemed_at = coalesce(v.redeemed_at, j.created_at)
  FROM ledger.journals j
 WHERE v.status = 'redeeming' AND j.idempotency_key = 'voucher:' || v.serial || ':redeem';
