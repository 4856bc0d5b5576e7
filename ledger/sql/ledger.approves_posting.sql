-- ledger.approves_posting: whether a stored answer (a receipt's payload) approves a request that
-- only a posting can approve. The ledger does not interpret receipts otherwise; this reads the two
-- forms that are served to a retransmission as they are stored:
--   the switch's ISO 8583 response, {"v": 1, "fields": {...}} (switch/dedup.py): approved when
--     field 39 is 00. Approvals that post nothing themselves are not counted: a balance inquiry
--     (processing code 31), a reversal's answer (0410, 0430: the original posted nothing, or was
--     reversed already), a batch settlement (0510), a top-up card already redeemed for the same
--     card by another request (processing code 21 with field 48: its journal is the card's).
--   the web trading seat's answer, {"v": 1, "seat": {...}} (ledger/loyalty/seat.py): approved when
--     its reason is approved, but for a balance inquiry.
-- Anything else (not JSON, or another shape) is served by nobody as an approval: false.
-- ledger.store_receipts refuses a receipt without a journal whose payload this says approves.
CREATE OR REPLACE FUNCTION ledger.approves_posting(p_payload bytea)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_doc    jsonb;
    v_fields jsonb;
    v_code   text;
BEGIN
    -- Not a JSON object (a caller's opaque bytes): parsed no further, and no subtransaction paid.
    IF length(p_payload) = 0 OR get_byte(p_payload, 0) <> 123 THEN  -- 123: '{'
        RETURN false;
    END IF;
    BEGIN
        v_doc := convert_from(p_payload, 'UTF8')::jsonb;
    EXCEPTION WHEN OTHERS THEN
        RETURN false;  -- not JSON after all: nobody serves it as an answer
    END;
    IF jsonb_typeof(v_doc) <> 'object' THEN
        RETURN false;
    END IF;
    v_fields := v_doc -> 'fields';
    IF jsonb_typeof(v_fields) = 'object' THEN
        v_code := left(coalesce(v_fields ->> '3', ''), 2);
        RETURN coalesce(v_fields ->> '39' = '00', false)
           AND coalesce(v_fields ->> 't', '') NOT IN ('0410', '0430', '0510')
           AND v_code <> '31'
           AND NOT (v_code = '21' AND v_fields ? '48');
    END IF;
    IF jsonb_typeof(v_doc -> 'seat') = 'object' THEN
        RETURN coalesce(v_doc -> 'seat' ->> 'reason' = 'approved', false)
           AND coalesce(v_doc -> 'seat' ->> 'kind', '') <> 'inquiry';
    END IF;
    RETURN false;
END $$;
