"""Points expiry through the real Ledger: lots follow every posting, end of day expires them.

Each flow is checked against ledger.loyalty.lots.LotBook, the rule in Python, and the books
(lots sum to balances included) after every step.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from ledger_support import ledger_settings

from ledger import export, reconcile
from ledger.audit import check_books
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, demo, lots
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType

PAN1, PAN2 = demo.demo_pan(1), demo.demo_pan(2)
_stan = itertools.count(1)


def req(pan: str = PAN1, amount: int = 100, currency: str | None = None, merchant: str = "M0001",
        terminal: str = "T0000001", **kw: object) -> Request:
    n = next(_stan)
    return Request(key=f"{terminal}|{n:06d}|0101120000", terminal_id=terminal, merchant_id=merchant, pan=pan,
                   amount=amount, currency=currency, rrn=f"{n:012d}", stan=f"{n:06d}", **kw)  # type: ignore[arg-type]


@dataclass
class World:
    pool: asyncpg.Pool
    ledger: Ledger
    loy: Loyalty

    async def ok(self, t: TxnType, r: Request) -> Outcome:
        out = await self.loy.execute(t, r)
        assert out.reason is Reason.APPROVED, (out.reason, out.detail)
        return out

    async def account(self, pan: str = PAN1) -> int:
        return int(await self.pool.fetchval(
            "SELECT a.id FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
            "WHERE a.owner_kind='card' AND c.id=$1 AND a.purpose='points' AND a.asset='PTS:ALLY'",
            await card_numbers.card_id_by_number(self.pool, pan)))

    async def lots(self, pan: str = PAN1) -> list[tuple[dt.date, int]]:
        rows = await self.pool.fetch("SELECT expires_on, remaining FROM loyalty.point_lots WHERE account_id=$1 "
                                     "ORDER BY expires_on", await self.account(pan))
        return [(r["expires_on"], int(r["remaining"])) for r in rows]

    async def open_date(self) -> dt.date:
        return await self.pool.fetchval("SELECT open_date FROM ledger.business_day")  # type: ignore[no-any-return]

    async def jump(self, days: int) -> list[lots.ProgramExpiry]:
        """Days without postings go by: the open day moves on and the last closed day's expiry runs."""
        await self.pool.execute("UPDATE ledger.business_day SET open_date = open_date + $1::integer", days)
        closed = await self.open_date() - dt.timedelta(days=1)
        async with self.pool.acquire() as conn:
            return await lots.expire_day(conn, closed)

    async def books_ok(self) -> None:
        assert await check_books(self.pool) == []


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn)
        await lots.set_expiry(conn, "ALLY", 1)
    async with Ledger(pool, ledger_settings()) as ledger:
        yield World(pool, ledger, Loyalty(ledger))


async def test_credits_make_lots_and_debits_take_the_oldest(world: World) -> None:
    d0 = await world.open_date()
    await world.ok(TxnType.TOPUP, req(amount=100))
    await world.jump(10)
    await world.ok(TxnType.TOPUP, req(amount=50))
    assert await world.lots() == [(lots.add_months(d0, 1), 100), (lots.add_months(d0 + dt.timedelta(10), 1), 50)]
    await world.ok(TxnType.REDEEM, req(amount=120))
    assert await world.lots() == [(lots.add_months(d0 + dt.timedelta(10), 1), 30)]
    await world.books_ok()


async def test_refund_of_a_redeem_puts_points_back_where_they_came_from(world: World) -> None:
    d0 = await world.open_date()
    await world.ok(TxnType.TOPUP, req(amount=100))
    await world.jump(5)
    await world.ok(TxnType.TOPUP, req(amount=100))
    redeem = req(amount=150)
    await world.ok(TxnType.REDEEM, redeem)
    first, second = lots.add_months(d0, 1), lots.add_months(d0 + dt.timedelta(5), 1)
    assert await world.lots() == [(second, 50)]
    await world.ok(TxnType.REFUND, req(amount=30, original_rrn=redeem.rrn, account="65"))
    assert await world.lots() == [(second, 80)]  # latest expiry first
    await world.ok(TxnType.REFUND, req(amount=120, original_rrn=redeem.rrn, account="65"))
    assert await world.lots() == [(first, 100), (second, 100)]
    await world.books_ok()


async def test_void_of_an_earn_takes_its_own_lot_and_claw_back_beyond_makes_debt(world: World) -> None:
    d0 = await world.open_date()
    earn = req(amount=10_000, currency="156")  # 100 points at M0001
    await world.ok(TxnType.EARN, earn)
    await world.jump(3)
    await world.ok(TxnType.TOPUP, req(amount=40))
    late = lots.add_months(d0 + dt.timedelta(3), 1)
    await world.ok(TxnType.REDEEM, req(amount=90))
    assert await world.lots() == [(lots.add_months(d0, 1), 10), (late, 40)]
    await world.ok(TxnType.REFUND, req(amount=10_000, currency="156", original_rrn=earn.rrn, account="00"))
    # 10 from the earn's own lot, then 40 from the next, then 50 the member owes.
    assert await world.lots() == [(lots.DEBT_ON, -50)]
    await world.ok(TxnType.TOPUP, req(amount=70))
    assert [v for _, v in await world.lots()] == [20]
    await world.books_ok()


async def test_end_of_day_expires_due_lots_in_one_journal_per_program(world: World) -> None:
    await world.ok(TxnType.TOPUP, req(PAN1, amount=100))
    await world.ok(TxnType.TOPUP, req(PAN2, amount=70))
    await world.jump(15)
    await world.ok(TxnType.TOPUP, req(PAN1, amount=5))
    done = await world.jump(20)  # past the first lots' month, not the last
    assert [(e.program, e.points, e.accounts, e.journals_posted) for e in done] == [("ALLY", 170, 2, 1)]
    assert [v for _, v in await world.lots(PAN1)] == [5] and await world.lots(PAN2) == []
    breakage = await world.pool.fetchval(
        "SELECT posted FROM ledger.accounts WHERE owner_kind='operator' AND owner_id='ALLY' AND purpose='breakage'")
    assert breakage == 170
    # Again for the same day: nothing more.
    async with world.pool.acquire() as conn:
        again = await lots.expire_day(conn, await world.open_date() - dt.timedelta(days=1))
    assert [(e.points, e.journals_posted, e.journals_existing) for e in again] == [(170, 0, 1)]
    row = await world.pool.fetchrow("SELECT txn_type, program, amount, channel FROM loyalty.transactions "
                                    "WHERE txn_type='expiry'")
    assert dict(row) == {"txn_type": "expiry", "program": "ALLY", "amount": 170, "channel": "cli"}
    # The export carries the expiry journal (it posted to the open day) on the breakage account.
    text = await export.beancount(world.pool, await world.open_date())
    assert "breakage" in text and "expire:" in text
    await world.books_ok()
    # The operations' callers store the requests' receipts (the switch, the seat); here only the
    # expiry journals have theirs.
    report = await reconcile.run(world.pool, None)
    assert [p for p in report.problems if p.check != "journal_has_one_request" or "expire:" in p.detail] == []


async def test_parts_of_an_expiry_journal(world: World) -> None:
    for pan in (demo.demo_pan(n) for n in range(1, 6)):
        await world.ok(TxnType.TOPUP, req(pan, amount=10))
    await world.pool.execute("UPDATE ledger.business_day SET open_date = open_date + 40")
    closed = await world.open_date() - dt.timedelta(days=1)
    async with world.pool.acquire() as conn:
        done = await lots.expire_day(conn, closed, accounts_per_journal=2)
    assert [(e.points, e.accounts, e.journals_posted) for e in done] == [(50, 5, 3)]
    await world.books_ok()


async def test_turning_expiry_on_and_off(world: World) -> None:
    async with world.pool.acquire() as conn, conn.transaction():
        await lots.set_expiry(conn, "ALLY", None)
    await world.ok(TxnType.TOPUP, req(amount=100))
    assert await world.lots() == []
    await world.books_ok()
    async with world.pool.acquire() as conn, conn.transaction():
        await lots.set_expiry(conn, "ALLY", 12)
    assert await world.lots() == [(lots.add_months(await world.open_date(), 12), 100)]
    await world.books_ok()


async def test_residual_stored_value_moves_after_the_grace_period(world: World) -> None:
    from ledger.loyalty import residual

    await world.ok(TxnType.LOAD, req(PAN1, amount=2_500, currency="156", merchant="M0002", terminal="T0000002"))
    await world.ok(TxnType.LOAD, req(PAN2, amount=700, currency="156", merchant="M0002", terminal="T0000002"))
    open_on = await world.open_date()
    # PAN1's card expired at the end of the month before last; PAN2's is valid for years.
    ended = open_on.replace(day=1) - dt.timedelta(days=40)
    await world.pool.execute("UPDATE loyalty.cards SET expiry=$2 WHERE id=$1",
                             await card_numbers.card_id_by_number(world.pool, PAN1), ended.strftime("%y%m"))
    async with world.pool.acquire() as conn:
        assert await residual.move_day(conn, open_on) == []  # every program keeps it as a liability
        listed = await residual.residual_list(conn, open_on)
        assert [(r["stored_value_minor"], r["state"]) for r in listed] == [(2_500, "liability")]
        await lots.set_residual_policy(conn, "ALLY", "breakage", 365)
        assert [r.amount_minor for r in await residual.move_day(conn, open_on)] == [0]
        assert (await residual.residual_list(conn, open_on))[0]["state"] == "grace"
        await lots.set_residual_policy(conn, "ALLY", None, 5)
        moved = await residual.move_day(conn, open_on)
        assert [(m.amount_minor, m.cards, m.journals_posted) for m in moved] == [(2_500, 1, 1)]
        again = await residual.move_day(conn, open_on)
        assert [(m.amount_minor, m.journals_posted, m.journals_existing) for m in again] == [(2_500, 0, 1)]
        later = await residual.move_day(conn, open_on + dt.timedelta(days=1))
        assert [m.amount_minor for m in later] == [0]  # a card's residual moves once
        listed = await residual.residual_list(conn, open_on)
        assert [(r["stored_value_minor"], r["moved_minor"], r["state"]) for r in listed] == [(0, 2_500, "moved")]
    sv = await world.pool.fetchval(
        "SELECT posted FROM ledger.accounts WHERE owner_kind='operator' AND owner_id='CNY' AND purpose='sv_breakage'")
    assert sv == 2_500
    await world.books_ok()
    report = await reconcile.run(world.pool, None)
    assert [p for p in report.problems if p.check != "journal_has_one_request" or "residual:" in p.detail] == []


async def test_end_of_day_runs_the_expiry_and_residual_steps(world: World, tmp_path: Path) -> None:
    from ledger import eod

    await world.ok(TxnType.TOPUP, req(PAN1, amount=100))
    await world.ok(TxnType.LOAD, req(PAN2, amount=900, currency="156", merchant="M0002", terminal="T0000002"))
    await world.pool.execute("UPDATE loyalty.cards SET expiry='2001' WHERE id=$1",
                             await card_numbers.card_id_by_number(world.pool, PAN2))
    async with world.pool.acquire() as conn:
        await lots.set_residual_policy(conn, "ALLY", "breakage", 0)
    # Forty days without postings (no end of day ran): the first day to close is past the lot's date.
    await world.pool.execute("UPDATE ledger.business_day SET open_date = open_date + 40")
    report = await eod.run(world.pool, None, tmp_path, ledger_settings=ledger_settings())
    assert report.ok, report.as_dict()
    assert [(e.program, e.points) for e in report.expiry] == [("ALLY", 100)]
    assert [(r.program, r.amount_minor, r.cards) for r in report.residual_value] == [("ALLY", 900, 1)]
    again = await eod.run(world.pool, report.business_date, tmp_path, ledger_settings=ledger_settings())
    assert [(e.journals_posted, e.journals_existing) for e in again.expiry] == [(0, 1)]
    assert [(r.journals_posted, r.journals_existing) for r in again.residual_value] == [(0, 1)]
    await world.books_ok()
