-- Lookups the portal makes one record at a time, each an index probe instead of a scan.
--
-- 1. A transaction's records by RRN: transactions_rrn (0004) holds the posted rows only;
--    the unposted ones (declines, inquiries) under an RRN get an index of their own, so a
--    posting writes nothing more and only the unposted path pays for it.
CREATE INDEX transactions_rrn_unposted ON loyalty.transactions(rrn)
    WHERE journal_id IS NULL AND rrn IS NOT NULL;

-- 2. A merchant's share of a day's issuer x redeemer matrix, a page at a time: the pairs it
--    issued and those it redeemed, each a range in the matrix's order (written once per day,
--    at end of day).
CREATE INDEX clearing_matrix_issuer ON eod.clearing_matrix(business_date, issuer_id, program, redeemer_id);
CREATE INDEX clearing_matrix_redeemer ON eod.clearing_matrix(business_date, redeemer_id, program, issuer_id);
