-- A top-up card's redemption journal marks its card redeemed, in the journal's own transaction
-- (trigger journals_voucher_redeemed on ledger.journals: migration 0027, which calls this only
-- for keys `voucher:<serial>:redeem`). The card was taken ('redeeming', card_id) by the
-- redemption before it posted; a card in any other state is left as it is.
-- SECURITY DEFINER: journals are inserted by post_batch, whose callers need no write on cards.
CREATE OR REPLACE FUNCTION loyalty.mark_voucher_redeemed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE loyalty.vouchers
       SET status = 'redeemed', journal_id = NEW.id, redeemed_at = coalesce(redeemed_at, now())
     WHERE serial = split_part(NEW.idempotency_key, ':', 2) AND status IN ('redeeming', 'redeemed');
    RETURN NULL;
END $$;
