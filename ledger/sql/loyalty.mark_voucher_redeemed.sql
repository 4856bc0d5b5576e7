-- A top-up card's redemption journal marks its card redeemed, in the journal's own transaction
-- (trigger journals_voucher_redeemed on ledger.journals: migration 0027, which calls this only
-- for keys `voucher:<serial>:redeem`), and is refused when the card can no longer be redeemed.
--
-- This is the one write that decides a redemption (ledger/loyalty/vouchers.py reads, then posts):
-- - two cards racing for one top-up card post under the same key: the second is a conflict
--   (the card credited is in the content), whatever happens here;
-- - the breakage of end of day runs after the cut-over, which waits for every posting batch
--   (they read the business day FOR SHARE): a journal of the new day finds a card past its last
--   day refused here, and one of the old day committed first; so the breakage's set of cards
--   cannot change under it.
-- The journal carries the card credited in its record (metadata txn.card_id). SQLSTATE SW001: the
-- engine declines that one command (reason "refused"), its batch's others post (ledger/engine.py).
-- 'redeeming' is the state of cards taken by an earlier release before it posted; the same card
-- may still complete such a redemption.
-- SECURITY DEFINER: journals are inserted by post_batch, whose callers need no write on cards.
CREATE OR REPLACE FUNCTION loyalty.mark_voucher_redeemed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_card bigint := (NEW.metadata->'txn'->>'card_id')::bigint;
BEGIN
    UPDATE loyalty.vouchers v
       SET status = 'redeemed', card_id = v_card, journal_id = NEW.id,
           redeemed_at = coalesce(v.redeemed_at, now())
      FROM loyalty.voucher_batches b
     WHERE v.serial = split_part(NEW.idempotency_key, ':', 2) AND b.id = v.batch_id
       AND (v.status = 'issued' OR (v.status = 'redeeming' AND v.card_id = v_card))
       AND b.expires_on >= NEW.business_date;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'top-up card % cannot be redeemed now', split_part(NEW.idempotency_key, ':', 2)
            USING ERRCODE = 'SW001', HINT = 'redeemed, expired or unknown';
    END IF;
    RETURN NULL;
END $$;
