"""The web trading seat against a real database: every kind, idempotency, declines, voids and
refunds, the virtual terminal, search by channel. The books balance after every test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from seat_support import OPERATOR, PAN1, PAN2, World, approved, form_id, seeded

from ledger import search
from ledger.loyalty import seat
from ledger.loyalty.cards import set_card_status
from ledger.loyalty.outcomes import Reason, TxnType
from ledger.loyalty.seat import SeatError, SeatResult
from switch.terminals import TerminalError, TerminalStore, add_terminal, set_status


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    async with seeded(pool) as w:
        yield w


async def _row(world: World, rrn: str) -> asyncpg.Record:
    row = await world.pool.fetchrow("SELECT * FROM loyalty.transactions WHERE rrn=$1", rrn)
    assert row is not None
    return row


async def test_every_kind_at_the_seat(world: World) -> None:
    r = approved(await world.take("earn", amount=12_345))  # 123.45 CNY at 1 point per CNY
    assert (r.points_earned, r.points_balance, r.terminal_id) == (123, 123, "W0000001")
    assert r.rrn is not None and r.rrn.startswith("9") and len(r.rrn) == 12
    r = approved(await world.take("topup", amount=500))
    assert (r.points_earned, r.points_balance) == (500, 623)
    r = approved(await world.take("redeem", amount=200))
    assert (r.points_redeemed, r.points_balance) == (200, 423)
    r = approved(await world.take("load", amount=10_000))
    assert r.sv_balance_minor == 10_000
    r = approved(await world.take("sv_purchase", amount=2_500))
    assert r.sv_balance_minor == 7_500
    r = approved(await world.take("inquiry"))
    assert (r.points_balance, r.sv_balance_minor, r.journal_id) == (423, 7_500, None)
    assert r.approval_code == r.rrn[-6:]  # type: ignore[index]
    purchase = approved(await world.take("sv_purchase", amount=1_000))
    r = approved(await world.take("void", original_rrn=purchase.rrn))
    assert r.sv_balance_minor == 7_500
    earn = approved(await world.take("earn", amount=5_000))
    r = approved(await world.take("refund", amount=2_000, original_rrn=earn.rrn))
    assert (r.points_redeemed, r.points_balance) == (20, 423 + 50 - 20)
    assert (await world.points(), await world.sv()) == (453, 7_500)
    rows = await world.pool.fetch(
        "SELECT DISTINCT channel, operator_ref, terminal_id, merchant_id FROM loyalty.transactions")
    assert [tuple(r) for r in rows] == [("web", OPERATOR, "W0000001", "M0001")]
    term = await world.pool.fetchrow("SELECT * FROM switch.terminals WHERE terminal_id='W0000001'")
    assert (term["kind"], term["merchant_id"], term["mac_alg"]) == ("web", "M0001", None)


async def test_a_double_submit_posts_once(world: World) -> None:
    rid = form_id()
    first = approved(await world.take("earn", amount=10_000, request_id=rid))
    again = await world.take("earn", amount=10_000, request_id=rid)
    assert again.replayed and not first.replayed
    assert (again.rrn, again.approval_code, again.journal_id, again.points_balance) == (
        first.rrn, first.approval_code, first.journal_id, first.points_balance)
    # Posted at once, as a double click does: one journal, one answer for all.
    rid2 = form_id()
    results = await asyncio.gather(*(world.take("load", amount=3_000, request_id=rid2) for _ in range(5)))
    assert {(r.reason, r.rrn, r.journal_id) for r in results} == {(Reason.APPROVED, results[0].rrn,
                                                                   results[0].journal_id)}
    assert await world.journals() == 2 and await world.records() == 2
    assert (await world.points(), await world.sv()) == (100, 3_000)


async def test_a_declined_form_is_answered_again_as_it_was(world: World) -> None:
    rid = form_id()
    first = await world.take("redeem", amount=50, request_id=rid)
    assert first.reason is Reason.INSUFFICIENT and first.rrn is not None
    approved(await world.take("topup", amount=500))
    again = await world.take("redeem", amount=50, request_id=rid)  # points would be there now
    assert (again.reason, again.rrn, again.replayed) == (Reason.INSUFFICIENT, first.rrn, True)
    assert await world.points() == 500
    assert await world.records() == 2


async def test_same_request_id_other_content_is_refused(world: World) -> None:
    rid = form_id()
    approved(await world.take("earn", amount=10_000, request_id=rid))
    for change in ({"amount": 10_001}, {"pan": PAN2}, {"operator": "op-bob"}, {"kind": "load"}):
        args = {"kind": "earn", "amount": 10_000, **change}
        kind = str(args.pop("kind"))
        r = await world.take(kind, request_id=rid, **args)  # type: ignore[arg-type]
        assert (r.reason, r.rrn, r.journal_id) == (Reason.DUPLICATE_MISMATCH, None, None), change
    rid2 = form_id()
    assert (await world.take("redeem", amount=500, request_id=rid2)).reason is Reason.INSUFFICIENT
    assert (await world.take("redeem", amount=501, request_id=rid2)).reason is Reason.DUPLICATE_MISMATCH
    assert await world.journals() == 1 and await world.points() == 100


async def test_declines_are_domain_reasons_recorded_for_the_seat(world: World) -> None:
    approved(await world.take("topup", amount=100))
    assert (await world.take("redeem", amount=101)).reason is Reason.INSUFFICIENT
    assert (await world.take("sv_purchase", amount=1)).reason is Reason.INSUFFICIENT
    assert (await world.take("earn", "6212349999999993", 100)).reason is Reason.CARD_UNKNOWN
    await set_card_status(world.pool, PAN2, "blocked")
    assert (await world.take("earn", PAN2, 100)).reason is Reason.CARD_BLOCKED
    assert (await world.take("earn", amount=10_000_001)).reason is Reason.EXCEEDS_LIMIT  # above 100,000.00 CNY
    assert (await world.take("topup", amount=10_000_001)).reason is Reason.EXCEEDS_LIMIT  # points maximum
    assert (await world.take("earn", amount=0)).reason is Reason.INVALID_AMOUNT
    assert (await world.take("earn", amount=-5)).reason is Reason.INVALID_AMOUNT
    assert (await world.take("earn", amount=100, currency="840")).reason is Reason.INVALID_TXN
    assert (await world.take("void", original_rrn="123456789012")).reason is Reason.ORIGINAL_NOT_FOUND
    assert (await world.take("refund", amount=5, original_rrn="123456789012")).reason is Reason.ORIGINAL_NOT_FOUND
    rows = await world.pool.fetch("SELECT reason, channel, operator_ref, terminal_id FROM loyalty.transactions "
                                  "WHERE journal_id IS NULL ORDER BY id")
    assert len(rows) == 9  # a void or refund of nothing of the merchant's is not (see the next test)
    assert {(r["channel"], r["operator_ref"], r["terminal_id"]) for r in rows} == {("web", OPERATOR, "W0000001")}
    assert await world.points() == 100


async def test_another_merchants_transaction_is_answered_as_none(world: World) -> None:
    theirs = approved(await world.take("earn", amount=5_000, merchant="M0002"))
    for kind, amount in (("void", None), ("refund", 100), ("void", 5_000)):
        mine = await world.take(kind, amount=amount, original_rrn=theirs.rrn)
        none = await world.take(kind, amount=amount, original_rrn="999999999999")
        assert mine == none.__class__(**{**none.__dict__, "detail": mine.detail})
        assert (mine.reason, mine.rrn, mine.journal_id) == (Reason.ORIGINAL_NOT_FOUND, None, None)
        assert mine.detail.replace(str(theirs.rrn), "X") == none.detail.replace("999999999999", "X")
    assert await world.records() == 1
    approved(await world.take("refund", amount=100, merchant="M0002", original_rrn=theirs.rrn))


async def test_void_and_partial_refund_of_a_seat_purchase(world: World) -> None:
    approved(await world.take("load", amount=10_000))
    buy = approved(await world.take("sv_purchase", amount=4_000))
    part = approved(await world.take("refund", amount=1_500, original_rrn=buy.rrn))
    assert part.sv_balance_minor == 7_500
    rest = approved(await world.take("refund", amount=2_500, original_rrn=buy.rrn))
    assert rest.sv_balance_minor == 10_000
    over = await world.take("refund", amount=1, original_rrn=buy.rrn)
    assert over.reason is Reason.EXCEEDS_LIMIT
    earn = approved(await world.take("earn", amount=3_000))
    voided = approved(await world.take("void", original_rrn=earn.rrn))
    assert (voided.points_redeemed, voided.points_balance) == (30, 0)
    assert (await world.take("void", original_rrn=earn.rrn)).reason is Reason.INVALID_TXN  # once
    assert (await world.take("void", amount=1, original_rrn=buy.rrn)).reason is Reason.INVALID_AMOUNT
    rows = await world.pool.fetch(
        "SELECT t.txn_type, t.undo_units, o.rrn AS original_rrn FROM loyalty.transactions t "
        "JOIN loyalty.transactions o ON o.journal_id = t.original_journal_id "
        "WHERE t.journal_id IS NOT NULL ORDER BY t.id")
    assert [tuple(r) for r in rows] == [("refund", 1_500, buy.rrn), ("refund", 2_500, buy.rrn),
                                        ("void", 3_000, earn.rrn)]
    assert (await world.sv(), await world.points()) == (10_000, 0)


async def test_seat_and_terminal_side_by_side(world: World) -> None:
    at_pos = await world.pos(TxnType.EARN, amount=8_000)
    assert at_pos.approved and at_pos.journal_id is not None
    pos_rrn = (await world.pool.fetchval("SELECT rrn FROM loyalty.transactions WHERE journal_id=$1",
                                         at_pos.journal_id))
    # A void belongs to the terminal that took the original; a refund to any of the merchant's.
    assert (await world.take("void", original_rrn=pos_rrn)).reason is Reason.INVALID_TXN
    approved(await world.take("refund", amount=3_000, original_rrn=pos_rrn))
    # The other way round: a seat transaction is refunded at a terminal of the merchant, not at another's.
    at_seat = approved(await world.take("earn", amount=2_000))
    assert (await world.pos(TxnType.REFUND, amount=1_000, original_rrn=at_seat.rrn)).approved
    assert (await world.pos(TxnType.REFUND, amount=1_000, merchant="M0002", terminal="T0000002",
                            original_rrn=at_seat.rrn)).reason is Reason.INVALID_TXN
    assert (await world.take("refund", amount=1_000, merchant="M0002", original_rrn=pos_rrn)).reason is (
        Reason.ORIGINAL_NOT_FOUND)
    assert await world.points() == 80 - 30 + 20 - 10
    counts = dict(await world.pool.fetch("SELECT channel, count(*) FROM loyalty.transactions GROUP BY 1"))
    assert counts == {"terminal": 3, "web": 3}


async def test_search_filters_and_shows_the_channel(world: World) -> None:
    seat_earn = approved(await world.take("earn", amount=1_000))
    declined = await world.take("redeem", amount=10_000)
    assert (await world.pos(TxnType.EARN, amount=2_000)).approved
    web = await search.search(world.pool, search.Filters(channel="web"))
    assert [t["rrn"] for t in web["transactions"]] == [declined.rrn, seat_earn.rrn]
    assert {(t["channel"], t["operator_ref"], t["terminal_id"]) for t in web["transactions"]} == {
        ("web", OPERATOR, "W0000001")}
    assert web["transactions"][0]["pan"] == "621234******0019"
    wire = await search.search(world.pool, search.Filters(channel="terminal"))
    assert [(t["channel"], t["operator_ref"]) for t in wire["transactions"]] == [("terminal", None)]
    by_terminal = await search.search(world.pool, search.Filters(terminal_id="W0000001", reasons=("approved",)))
    assert [t["rrn"] for t in by_terminal["transactions"]] == [seat_earn.rrn]
    assert declined.rrn is not None and seat_earn.rrn is not None
    shown = await search.show(world.pool, declined.rrn)
    assert shown is not None
    (rec,) = shown["records"]
    assert rec["request"]["channel"] == "web" and rec["request"]["operator_ref"] == OPERATOR
    assert rec["response"]["reason"] == "insufficient" and rec["response"]["rrn"] == declined.rrn
    assert "6212340000000019" not in str(shown)
    shown = await search.show(world.pool, seat_earn.rrn)
    assert shown is not None and shown["records"][0]["response"]["38"] == seat_earn.approval_code


async def test_malformed_forms_are_refused_and_not_recorded(world: World) -> None:
    bad: list[dict[str, object]] = [
        {"kind": "lottery", "amount": 10}, {"kind": "reversal", "amount": 10}, {"kind": "nonsense"},
        {"request_id": "short"}, {"request_id": "x" * 65}, {"request_id": "has space in it!!"},
        {"operator_ref": ""}, {"operator_ref": "x" * 65}, {"operator_ref": "a\nb"},
        {"merchant_id": "M 1"}, {"pan": "62123400000000199999"}, {"pan": "6212-3400-0000-0019"},
        {"amount": None}, {"amount": 10**12}, {"amount": True}, {"amount": 1.5}, {"currency": "CNY"},
        {"kind": "refund", "amount": 5}, {"kind": "void", "original_rrn": "1234567890123"},
        {"kind": "earn", "original_rrn": "000000000001"},
    ]
    for change in bad:
        args: dict[str, object] = {"merchant_id": "M0001", "operator_ref": OPERATOR, "request_id": form_id(),
                                   "kind": "earn", "pan": PAN1, "amount": 100, **change}
        with pytest.raises(SeatError) as err:
            await seat.take(world.loy, **args)  # type: ignore[arg-type]
        assert "\n" not in str(err.value), change
    assert await world.records() == 0


async def test_unknown_merchant_and_disabled_seat_take_nothing(world: World) -> None:
    r = await world.take("earn", amount=100, merchant="M9999")
    assert (r.reason, r.terminal_id, r.rrn) == (Reason.MERCHANT_UNKNOWN, None, None)
    approved(await world.take("earn", amount=100))
    assert await set_status(world.pool, "W0000001", "disabled")
    r = await world.take("earn", amount=100)
    assert (r.reason, r.terminal_id, r.rrn) == (Reason.NOT_PERMITTED, "W0000001", None)
    assert await world.records() == 1
    assert not await world.pool.fetchval("SELECT 1 FROM switch.terminals WHERE merchant_id='M9999'")


async def test_each_merchant_has_one_web_terminal_that_no_pos_may_claim(world: World) -> None:
    # First uses at once, for two merchants: one terminal each.
    results = await asyncio.gather(*(world.take("inquiry", merchant=m) for m in ("M0001", "M0002") * 4))
    rows = await world.pool.fetch(
        "SELECT merchant_id, terminal_id FROM switch.terminals WHERE kind='web' ORDER BY merchant_id")
    assert [r["merchant_id"] for r in rows] == ["M0001", "M0002"]
    assert {r.terminal_id for r in results} == {r["terminal_id"] for r in rows}
    assert all(seat.WEB_TERMINAL_ID.match(r["terminal_id"]) for r in rows)
    with pytest.raises(TerminalError, match="web trading seats"):
        await add_terminal(world.pool, "W0000099", "M0001")
    for sql in ("INSERT INTO switch.terminals(terminal_id, merchant_id) VALUES ('W1234567', 'M0001')",
                "INSERT INTO switch.terminals(terminal_id, merchant_id, kind) VALUES ('T7654321', 'M0003', 'web')",
                "INSERT INTO switch.terminals(terminal_id, merchant_id, kind) VALUES ('W7654321', 'M0001', 'web')"):
        with pytest.raises((asyncpg.CheckViolationError, asyncpg.UniqueViolationError)):
            await world.pool.execute(sql)
    # The switch's lookup: a web terminal is no terminal at all on the wire.
    store = TerminalStore(world.pool, None)
    assert await store.get(rows[0]["terminal_id"]) is None
    assert await store.get(rows[0]["terminal_id"], fresh=True) is None
    assert (await store.get("T0000001")) is None  # (the demo seeds no POS terminal: add one)
    await add_terminal(world.pool, "T0000001", "M0001")
    found = await store.get("T0000001", fresh=True)
    assert found is not None and found.merchant_id == "M0001"


async def test_a_seat_result_survives_its_stored_form() -> None:
    r = SeatResult("redeem", Reason.INSUFFICIENT, "points available 3", "W0000001", "900000000001",
                   business_date="2026-01-02", program="ALLY")
    back = SeatResult.from_payload(r.payload())
    assert back.replayed and back.reason is Reason.INSUFFICIENT
    assert {**back.__dict__, "replayed": False} == r.__dict__
