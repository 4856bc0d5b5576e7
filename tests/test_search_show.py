"""ledger.search.show: every record under an RRN (posted or not), each with the answer stored
under the caller's receipt key or its own key."""

from __future__ import annotations

from portal_support import PortalEnv, portal_env_fixture  # noqa: F401

from ledger import search
from ledger.loyalty import demo, seat
from specs.vocabulary import receipt_key_of

SWITCH_KEY = "T0000001|000042|0101120000"


async def test_records_posted_and_not_with_their_answers(portal_env: PortalEnv) -> None:
    pool, loyalty = portal_env.pool, portal_env.app.state.portal.loyalty
    earn = await seat.take(loyalty, "M0001", "op", seat.new_request_id(), "earn", demo.demo_pan(1), 100)
    declined = await seat.take(loyalty, "M0001", "op", seat.new_request_id(), "redeem", demo.demo_pan(2), 10**6)
    assert earn.approved and earn.rrn and not declined.approved and declined.rrn
    for rrn, approved in ((earn.rrn, True), (declined.rrn, False)):
        shown = await search.show(pool, rrn, response_key=receipt_key_of)
        assert shown is not None and len(shown["records"]) == 1, rrn
        rec = shown["records"][0]
        assert (rec["journal_id"] is not None) is approved and rec["response"] is not None
        assert rec["response_key"] == rec["request"]["idempotency_key"]  # the seat's: the record's own key
        assert bool(rec["legs"]) is approved
    # A terminal's decline: recorded without a journal, its answer under the switch's receipt key.
    day = await pool.fetchval("SELECT open_date FROM ledger.business_day")
    await pool.execute(
        "INSERT INTO loyalty.transactions(idempotency_key, business_date, txn_type, reason, rrn, stan, terminal_id, "
        "merchant_id) VALUES ($1, $2, 'earn', 'invalid_card', '000000000042', '000042', 'T0000001', 'M0001')",
        SWITCH_KEY, day)
    await pool.execute("INSERT INTO ledger.receipts(idempotency_key, content_hash, payload) VALUES ($1, '\\x00', $2)",
                       receipt_key_of(SWITCH_KEY), b'{"v":1,"fields":{"39":"14","2":"6212345678901232"}}')
    shown = await search.show(pool, "000000000042", response_key=receipt_key_of)
    assert shown is not None
    [rec] = shown["records"]
    assert rec["response"] == {"39": "14", "2": "621234******1232"}
    assert rec["response_key"] == receipt_key_of(SWITCH_KEY)
    # Without the caller's receipt key, only the record's own key (and its journal's receipt).
    bare = await search.show(pool, "000000000042")
    assert bare is not None and bare["records"][0]["response"] is None
    assert await search.show(pool, "NOSUCHRRN") is None


async def test_the_lookups_can_use_indexes(portal_env: PortalEnv) -> None:
    """Whatever the tables' sizes: with sequential scans priced out, no plan still needs one (the
    RRN's unposted records have their own index; receipts are read by primary key)."""
    async with portal_env.pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        for sql, args in ((search._SHOW_SQL, ("000000000042",)), (search._RECEIPT_BY_KEY_SQL, (["iso:a", "b"],))):
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
            assert "Seq Scan on transactions" not in plan and "Seq Scan on receipts" not in plan, plan
        await conn.execute("RESET enable_seqscan")
