"""Exchange rates and exchanges between programs, against a real database through the real Ledger."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
from ledger_support import ledger_settings
from test_loyalty_ops import PAN1, PAN2, World, ok, req

from ledger import business_day, clearing, reconcile, search
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, demo, exchange, rates
from ledger.loyalty.exchange import ExchangeError, ExchangeSettings, convert_points
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Channel, Reason, Request, TxnType
from ledger.loyalty.programs import add_program


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn)
        # A third program in the same currency, with its own value per point.
        await add_program(conn, "GOLD", "Gold", "alliance", issue_price_minor=3, redeem_value_minor=2)
    async with Ledger(pool, ledger_settings()) as ledger:
        yield World(pool, ledger, Loyalty(ledger, exchange_settings=ExchangeSettings(member_daily_points_max=5000)))


async def card_id(w: World, pan: str = PAN1) -> int:
    return int(await card_numbers.card_id_by_number(w.pool, pan) or 0)


async def topup(w: World, points: int, merchant: str = "M0001", pan: str = PAN1) -> None:
    ok(await w.loy.topup(req(merchant=merchant, pan=pan, amount=points, currency=None)))


async def recon_ok(w: World, day: dt.date | None = None) -> None:
    """Every reconciliation check passes, but that of stored responses: these requests keep none."""
    report = await reconcile.run(w.pool, day)
    problems = [p for p in report.problems if p.check != "journal_has_one_request"]
    assert problems == [], problems


def xreq(amount: int, target: str = "CAFE", **kw: object) -> Request:
    return req(amount=amount, currency=None, account="65", target_program=target, **kw)  # type: ignore[arg-type]


async def test_rates_in_force_and_history(world: World) -> None:
    w = world
    now = dt.datetime.now(dt.UTC)
    assert await rates.in_force(w.pool, "ALLY", "CAFE") is None
    await rates.set_rate(w.pool, "ALLY", "CAFE", 1, 2, effective_from=now - dt.timedelta(hours=2))
    second = await rates.set_rate(w.pool, "ALLY", "CAFE", 2, 3, 100, effective_from=now - dt.timedelta(hours=1))
    await rates.set_rate(w.pool, "ALLY", "CAFE", 9, 1, effective_from=now + dt.timedelta(days=1))  # not yet
    found = await rates.in_force(w.pool, "ALLY", "CAFE")
    assert found is not None and found.id == second.id and (found.rate_num, found.rate_den, found.fee_bps) == (2, 3, 100)
    assert [r.rate_num for r in await rates.history(w.pool, "ALLY", "CAFE")] == [9, 2, 1]
    assert [(r.from_program, r.to_program) for r in await rates.current(w.pool)] == [("ALLY", "CAFE")]
    for bad in ((0, 0, 0), (1, 1, 10_001), (-1, 1, 0)):
        with pytest.raises(rates.RateError):
            await rates.set_rate(w.pool, "ALLY", "CAFE", *bad)
    with pytest.raises(rates.RateError, match="no program"):
        await rates.set_rate(w.pool, "ALLY", "NOPE", 1, 1)
    with pytest.raises(rates.RateError, match="different programs"):
        await rates.set_rate(w.pool, "ALLY", "ALLY", 1, 1)


async def test_exchange_on_the_wire_path_posts_one_journal_with_the_rate(world: World) -> None:
    w = world
    await topup(w, 1000)
    await rates.set_rate(w.pool, "ALLY", "CAFE", 3, 2, fee_bps=250)
    o = ok(await w.loy.exchange(xreq(999)))  # gross floor(999 x 3/2) = 1498, fee floor(1498 x 2.5%) = 37
    assert (o.points_redeemed, o.points_earned, o.points_balance, o.program) == (999, 1461, 1, "ALLY")
    assert await w.points(PAN1, "ALLY") == 1 and await w.points(PAN1, "CAFE") == 1461
    assert await w.account("operator", "ALLY", "exchange", "PTS:ALLY") == 999
    assert await w.account("operator", "CAFE", "exchange", "PTS:CAFE") == -1461
    row = await w.pool.fetchrow("SELECT * FROM loyalty.transactions WHERE journal_id=$1", o.journal_id)
    assert (row["txn_type"], row["program"], row["points_delta"], row["target_program"], row["target_points_delta"],
            row["rate_num"], row["rate_den"], row["rate_fee_bps"]) == ("exchange", "ALLY", -999, "CAFE", 1461, 3, 2, 250)
    meta = await w.pool.fetchval("SELECT metadata->'exchange'->>'fee_points' FROM ledger.journals WHERE id=$1",
                                 o.journal_id)
    assert meta == "37"
    await w.books_ok()
    await recon_ok(w)


async def test_exchange_declines(world: World) -> None:
    w = world
    await topup(w, 6000)
    o = await w.loy.exchange(xreq(10))
    assert o.reason is Reason.INVALID_TXN and "no rate" in o.detail
    await rates.set_rate(w.pool, "ALLY", "CAFE", 1, 1)
    assert (await w.loy.exchange(xreq(10, target="NOPE"))).reason is Reason.INVALID_TXN
    assert (await w.loy.exchange(xreq(7000))).reason is Reason.EXCEEDS_LIMIT  # the daily 5000
    o = await w.loy.exchange(xreq(10, pan=PAN2))
    assert o.reason is Reason.INSUFFICIENT
    await w.pool.execute("UPDATE loyalty.programs SET status='disabled' WHERE code='CAFE'")
    assert (await w.loy.exchange(xreq(10))).reason is Reason.NOT_PERMITTED
    await w.pool.execute("UPDATE loyalty.programs SET status='active' WHERE code='CAFE'")
    ok(await w.loy.exchange(xreq(3000)))
    o = await w.loy.exchange(xreq(2001))  # 3000 + 2001 above the day's 5000
    assert o.reason is Reason.EXCEEDS_LIMIT
    ok(await w.loy.exchange(xreq(2000)))
    assert await w.points(PAN1, "CAFE") == 5000
    await w.books_ok()


async def test_concurrent_exchanges_of_one_card_keep_the_daily_limit(world: World) -> None:
    w = world
    await topup(w, 10_000)
    await rates.set_rate(w.pool, "ALLY", "CAFE", 1, 1)
    outs = await asyncio.gather(*(w.loy.exchange(xreq(1000)) for _ in range(8)))
    assert sum(o.reason is Reason.APPROVED for o in outs) == 5
    assert await w.points(PAN1, "CAFE") == 5000
    await w.books_ok()


async def test_undone_exchanges_no_longer_count_towards_the_daily_limit(world: World) -> None:
    w = world
    await topup(w, 10_000)
    await rates.set_rate(w.pool, "ALLY", "CAFE", 1, 1)
    r1, r2 = xreq(3000), xreq(2000)
    ok(await w.loy.exchange(r1))
    ok(await w.loy.exchange(r2))
    assert (await w.loy.exchange(xreq(1))).reason is Reason.EXCEEDS_LIMIT  # the daily 5000 given up
    ok(await w.loy.void(req(amount=3000, currency=None, account="65", original_rrn=r1.rrn)))
    # The void gave the 3000 back: they may be exchanged again. Its guard is the day's third
    # (two exchanges posted, one of them undone): the second's guard is taken for good.
    r3 = xreq(3000)
    ok(await w.loy.exchange(r3))
    guards = await w.pool.fetchval("SELECT count(*) FROM ledger.journals WHERE guard_key LIKE 'exchange:%'")
    assert guards == 3
    assert (await w.loy.exchange(xreq(1))).reason is Reason.EXCEEDS_LIMIT
    ok(await w.loy.reverse(req(amount=2000, currency=None, original_key=r2.key)))
    # 3000 stand; of eight concurrent exchanges of 1000 only two fit in the 2000 left.
    outs = await asyncio.gather(*(w.loy.exchange(xreq(1000)) for _ in range(8)))
    assert sum(o.reason is Reason.APPROVED for o in outs) == 2
    assert sum(o.reason is Reason.EXCEEDS_LIMIT for o in outs) == 6
    # Off the wire too: the member pages, the API and the CLI count the same way.
    with pytest.raises(ExchangeError) as e:
        await convert_points(w.ledger, w.pool, await card_id(w), "ALLY", "CAFE", 1, "after-the-limit", Channel.API,
                             settings=ExchangeSettings(member_daily_points_max=5000))
    assert e.value.reason is Reason.EXCEEDS_LIMIT
    assert await w.points(PAN1, "CAFE") == 5000 and await w.points(PAN1, "ALLY") == 5000
    await w.books_ok()
    await recon_ok(w)


async def test_void_and_reversal_undo_both_sides(world: World) -> None:
    w = world
    await topup(w, 1000)
    await rates.set_rate(w.pool, "ALLY", "GOLD", 1, 2)
    r1 = xreq(400, target="GOLD")
    o1 = ok(await w.loy.exchange(r1))
    assert await w.points(PAN1, "GOLD") == 200
    again = await w.loy.exchange(r1)  # a retransmission: the same answer
    assert again.replayed and again.journal_id == o1.journal_id and again.points_balance == o1.points_balance
    v = ok(await w.loy.void(req(amount=400, currency=None, account="65", original_rrn=r1.rrn)))
    assert v.points_balance == 1000
    assert await w.points(PAN1, "ALLY") == 1000 and await w.points(PAN1, "GOLD") == 0
    vrow = await w.pool.fetchrow("SELECT points_delta, target_program, target_points_delta FROM loyalty.transactions "
                                 "WHERE journal_id=$1", v.journal_id)
    assert tuple(vrow) == (400, "GOLD", -200)
    r2 = xreq(600, target="GOLD")
    ok(await w.loy.exchange(r2))
    rev = ok(await w.loy.reverse(req(amount=600, currency=None, original_key=r2.key)))
    assert rev.reason is Reason.APPROVED
    assert await w.points(PAN1, "ALLY") == 1000 and await w.points(PAN1, "GOLD") == 0
    assert await w.account("operator", "GOLD", "exchange", "PTS:GOLD") == 0
    await w.books_ok()
    await recon_ok(w)


async def test_void_of_an_exchange_whose_points_were_spent_is_declined(world: World) -> None:
    w = world
    await topup(w, 100)
    await rates.set_rate(w.pool, "ALLY", "CAFE", 1, 1)
    r1 = xreq(100)
    ok(await w.loy.exchange(r1))
    ok(await w.loy.redeem(req(merchant="M0003", terminal="T0000003", amount=50, currency=None)))
    v = await w.loy.void(req(amount=100, currency=None, account="65", original_rrn=r1.rrn))
    assert v.reason is Reason.INSUFFICIENT
    await w.books_ok()


async def test_convert_points_off_the_wire_is_idempotent(world: World) -> None:
    w = world
    await topup(w, 500)
    cid = await card_id(w)
    await rates.set_rate(w.pool, "ALLY", "CAFE", 1, 1, fee_bps=1000)
    c = await convert_points(w.ledger, w.pool, cid, "ALLY", "CAFE", 200, "req-00001", Channel.API)
    assert (c.points_in, c.points_out, c.fee_points, c.replayed) == (200, 180, 20, False)
    again = await convert_points(w.ledger, w.pool, cid, "ALLY", "CAFE", 200, "req-00001", Channel.API)
    assert again.replayed and again.journal_id == c.journal_id
    with pytest.raises(ExchangeError) as e:
        await convert_points(w.ledger, w.pool, cid, "ALLY", "CAFE", 201, "req-00001", Channel.API)
    assert e.value.reason is Reason.DUPLICATE_MISMATCH
    with pytest.raises(ExchangeError) as e:
        await convert_points(w.ledger, w.pool, cid, "ALLY", "CAFE", 400, "req-00002", Channel.API)
    assert e.value.reason is Reason.INSUFFICIENT
    channel = await w.pool.fetchval("SELECT channel FROM loyalty.transactions WHERE journal_id=$1", c.journal_id)
    assert channel == "api"
    assert await w.points(PAN1, "CAFE") == 180
    await w.books_ok()
    await recon_ok(w)


async def test_declines_off_the_wire_are_recorded_like_a_terminals(world: World) -> None:
    w = world
    await topup(w, 500)
    cid = await card_id(w)
    tight = ExchangeSettings(member_daily_points_max=300)

    async def declined(points: int, key: str, channel: Channel = Channel.API, to: str = "CAFE") -> Reason:
        with pytest.raises(ExchangeError) as e:
            await convert_points(w.ledger, w.pool, cid, "ALLY", to, points, key, channel, "someone", tight)
        return e.value.reason

    assert await declined(100, "no-rate-001") is Reason.INVALID_TXN
    assert await declined(100, "no-rate-001") is Reason.INVALID_TXN  # asked again: the same decline, once
    await rates.set_rate(w.pool, "ALLY", "CAFE", 1, 1)
    assert await declined(400, "too-many-01", Channel.WEB) is Reason.EXCEEDS_LIMIT
    assert await declined(100, "no-such-one", Channel.CLI, to="NOPE") is Reason.INVALID_TXN
    await convert_points(w.ledger, w.pool, cid, "ALLY", "CAFE", 300, "the-one-ok1", Channel.API, None, tight)
    assert await declined(300, "short-00001") is Reason.EXCEEDS_LIMIT
    assert await declined(100, "short-00002", channel=Channel.WEB) is Reason.EXCEEDS_LIMIT
    await w.pool.execute("UPDATE loyalty.cards SET status = 'blocked' WHERE id = $1", cid)
    assert await declined(1, "blocked-001") is Reason.CARD_BLOCKED
    await w.pool.execute("UPDATE loyalty.cards SET status = 'active' WHERE id = $1", cid)
    with pytest.raises(ExchangeError) as e:  # no card to record it against: not recorded
        await convert_points(w.ledger, w.pool, 10**12, "ALLY", "CAFE", 1, "nobody-0001", Channel.API)
    assert e.value.reason is Reason.CARD_UNKNOWN
    rows = await w.pool.fetch(
        "SELECT idempotency_key, reason, channel, program, target_program, amount, points_delta, operator_ref, "
        "business_date FROM loyalty.transactions WHERE txn_type = 'exchange' AND journal_id IS NULL ORDER BY id")
    day = await business_day.open_date(w.pool)
    assert [(r["idempotency_key"], r["reason"], r["channel"], r["target_program"], r["amount"]) for r in rows] == [
        (f"exchange:api:{cid}:no-rate-001", "invalid_txn", "api", "CAFE", 100),
        (f"exchange:web:{cid}:too-many-01", "exceeds_limit", "web", "CAFE", 400),
        (f"exchange:cli:{cid}:no-such-one", "invalid_txn", "cli", "NOPE", 100),
        (f"exchange:api:{cid}:short-00001", "exceeds_limit", "api", "CAFE", 300),
        (f"exchange:web:{cid}:short-00002", "exceeds_limit", "web", "CAFE", 100),
        (f"exchange:api:{cid}:blocked-001", "card_blocked", "api", "CAFE", 1)]
    assert {(r["program"], r["points_delta"], r["operator_ref"], r["business_date"]) for r in rows} == {
        ("ALLY", 0, "someone", day)}
    # The operator's transaction list shows them as other declines (the member's history:
    # tests/test_exchange_pages.py).
    listed = await search.search(w.pool, search.Filters(card_id=cid, txn_type="exchange"))
    assert [t["reason"] for t in listed["transactions"]] == [
        "card_blocked", "exceeds_limit", "exceeds_limit", "approved", "invalid_txn", "exceeds_limit", "invalid_txn"]
    # Declines move nothing, and the records still match the journals.
    assert await w.points(PAN1, "CAFE") == 300
    await w.books_ok()
    await recon_ok(w)


async def test_end_of_day_clears_the_exchange_desk(world: World) -> None:
    w = world
    await topup(w, 1000)
    await rates.set_rate(w.pool, "ALLY", "GOLD", 1, 2, fee_bps=1000)
    ok(await w.loy.exchange(xreq(600, target="GOLD")))  # gross 300, fee 30, 270 GOLD out
    cid = await card_id(w)
    await convert_points(w.ledger, w.pool, cid, "ALLY", "GOLD", 100, "k-000001", Channel.CLI)  # 50 - 5 = 45
    ok(await w.loy.redeem(req(amount=100, currency=None)))
    day = await business_day.open_date(w.pool)
    async with w.pool.acquire() as conn:
        await business_day.cut_over(conn, day, 10)
        await clearing.clear_day(conn, w.ledger, day)
        rows = {r["program"]: dict(r) for r in await conn.fetch(
            "SELECT * FROM eod.clearing_exchange WHERE business_date=$1", day)}
    # ALLY: the desk took in 700 points, at the redemption value 1: 700 fen owed to it.
    assert (rows["ALLY"]["points_in"], rows["ALLY"]["points_out"], rows["ALLY"]["net_minor"]) == (700, 0, 700)
    # GOLD: the desk gave out 315 points, at the issue price 3: 945 fen owed by it.
    assert (rows["GOLD"]["points_in"], rows["GOLD"]["points_out"], rows["GOLD"]["net_minor"]) == (0, 315, -945)
    for p in ("ALLY", "GOLD"):
        assert await w.account("operator", p, "exchange", f"PTS:{p}") == 0
    assert await w.account("operator", "CNY", "exchange_income", "CNY") == 700 - 945
    matrix = await clearing.matrix(w.pool, day)
    assert {"program": "ALLY", "issuer_id": "M0001", "redeemer_id": exchange.DESK_ID, "points": 700} in matrix
    await recon_ok(w, day)
    await w.books_ok()


async def test_a_merchant_whose_day_is_only_exchanges_reconciles(world: World) -> None:
    """An exchange at a terminal is the desk's, not the merchant's: a merchant with nothing else
    that day has no clearing figures, and the reconciliation's recomputation agrees."""
    w = world
    await topup(w, 1000, merchant="M0002")  # the points come from another merchant
    await rates.set_rate(w.pool, "ALLY", "GOLD", 1, 2, fee_bps=1000)
    ok(await w.loy.exchange(xreq(600, target="GOLD")))  # at M0001, its only transaction of the day
    day = await business_day.open_date(w.pool)
    async with w.pool.acquire() as conn:
        await business_day.cut_over(conn, day, 10)
        await clearing.clear_day(conn, w.ledger, day)
    assert [f["merchant_id"] for f in await clearing.figures(w.pool, day)] == ["M0002"]
    await recon_ok(w, day)
    await w.books_ok()


def test_txn_type_is_a_points_transaction_of_account_65() -> None:
    assert TxnType.EXCHANGE.in_points and TxnType.EXCHANGE.account == "65"
