-- A receipt may name its journal instead of carrying a payload. A caller that can
-- rebuild its answer exactly from the journal it posted (the switch's loyalty
-- handlers: RRN, approval code and balances after are all on record) stores only
-- the request's key and content hash, in the posting's own statement: one round
-- trip per batch instead of BEGIN, post, receipts and COMMIT. The content hash
-- still tells a retransmission (same content: answered again from the journal)
-- from a reused key (other content: refused).
ALTER TABLE ledger.receipts ALTER COLUMN payload DROP NOT NULL;
-- NOT VALID: every existing row has a payload; new rows are checked, old ones not rescanned.
ALTER TABLE ledger.receipts ADD CONSTRAINT receipts_payload_or_journal
    CHECK (payload IS NOT NULL OR journal_id IS NOT NULL) NOT VALID;
