-- A top-up card's redemption is decided by its journal alone: the redemption reads the card,
-- then posts, and the journal's trigger (loyalty.mark_voucher_redeemed) marks the card redeemed
-- or refuses the journal. Cards are no longer taken ('redeeming') before the posting.

-- A card taken by the earlier two-step way whose redemption never posted (a crash between the
-- take and the journal) credited nobody: it is redeemable again.
UPDATE loyalty.vouchers v SET status = 'issued', card_id = NULL
 WHERE v.status = 'redeeming'
   AND NOT EXISTS (SELECT 1 FROM ledger.journals j WHERE j.idempotency_key = 'voucher:' || v.serial || ':redeem');
