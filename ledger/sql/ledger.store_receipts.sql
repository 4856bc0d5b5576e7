-- ledger.store_receipts: the one way a runtime role stores receipts (the switch's and the
-- operations' stored answers). The runtime roles have no INSERT on ledger.receipts (ledger/roles.py):
-- a receipt is served byte for byte to its key's retransmission, so a forged one would answer for
-- a request that never posted. SECURITY DEFINER, owned by the migration owner, search_path pinned.
--
-- One call per batch (arrays, one element per receipt; p_payload or p_journal may be NULL: all
-- NULL). First writer wins, as before: a key that holds a receipt keeps it. Returns the keys
-- stored now. Refused (check_violation: the whole call, nothing stored):
--   a receipt naming a journal that this transaction did not post (the engine stores a posting's
--     receipt in the posting's own transaction, so no receipt can claim an older journal, or
--     one that does not exist);
--   a receipt naming no journal whose payload approves a request that only a posting can approve
--     (ledger.approves_posting), unless its key holds a receipt already (nothing would be stored),
--     or a journal stands under the request's own key (a posted
--     request answered again: the switch's receipt key iso:TID:STAN:F7 is the request's TID|STAN|F7).
--     A receipt without a journal is otherwise a decline's, or an answer that posts nothing (an
--     inquiry): the engine stores one only for a command that did not post (DECLINED, INVALID).
-- requires: ledger.approves_posting
CREATE OR REPLACE FUNCTION ledger.store_receipts(p_key text[], p_hash bytea[], p_payload bytea[],
                                                 p_journal bigint[])
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key     text;
    v_journal bigint;
BEGIN
    SELECT q.key, q.journal_id INTO v_key, v_journal
      FROM unnest(p_key, p_payload, p_journal) AS q(key, payload, journal_id)
     WHERE CASE WHEN q.journal_id IS NOT NULL THEN
                NOT EXISTS (SELECT 1 FROM ledger.journals j
                             WHERE j.id = q.journal_id AND j.xmin = pg_current_xact_id()::xid)
           ELSE
                ledger.approves_posting(q.payload)
                AND NOT EXISTS (SELECT 1 FROM ledger.receipts r WHERE r.idempotency_key = q.key)
                AND NOT EXISTS (SELECT 1 FROM ledger.journals j
                                 WHERE j.idempotency_key = CASE WHEN q.key LIKE 'iso:%'
                                       THEN regexp_replace(q.key, '^iso:(.*):([^:]*):([^:]*)$', '\1|\2|\3')
                                       ELSE q.key END)
           END
     LIMIT 1;
    IF v_key IS NOT NULL THEN
        IF v_journal IS NOT NULL THEN
            RAISE EXCEPTION 'ledger.receipts: the receipt under % names journal %, which this transaction did not post',
                v_key, v_journal USING ERRCODE = 'check_violation';
        END IF;
        RAISE EXCEPTION 'ledger.receipts: the receipt under % approves a request that posted nothing', v_key
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN QUERY
    INSERT INTO ledger.receipts (idempotency_key, content_hash, payload, journal_id)
    SELECT q.key, q.hash, q.payload, q.journal_id
      FROM unnest(p_key, p_hash, p_payload, p_journal) AS q(key, hash, payload, journal_id)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key;
END $$;
