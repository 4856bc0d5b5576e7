"""Voids, refunds, reversals and late originals racing in two engines over one database.

One Loyalty serialises the operations on one original with an in-process lock
before it takes the database's; two processes (``[daemon] workers = 2``, or two
daemons on one database) have only the database's advisory lock between them.
Two Loyalty instances, each with its own pool and its own Ledger writer, stand
for two processes here: every race below is decided by the database alone, and
the original is never undone by more than it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest
from ledger_support import ledger_settings
from test_loyalty_ops import PAN1, ok, req

from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, demo, lookup
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType


@dataclass
class Two:
    pool: asyncpg.Pool
    a: Loyalty
    b: Loyalty

    def of(self, i: int) -> Loyalty:
        """Alternate between the two engines."""
        return self.a if i % 2 == 0 else self.b

    async def undone(self, journal_id: int) -> tuple[int, list[str]]:
        """Units undone by posted compensations of ``journal_id``, and their types."""
        rows = await self.pool.fetch(
            "SELECT txn_type, undo_units FROM loyalty.transactions "
            "WHERE original_journal_id = $1 AND journal_id IS NOT NULL ORDER BY journal_id", journal_id)
        return sum(int(r["undo_units"] or 0) for r in rows), [r["txn_type"] for r in rows]

    async def points(self, pan: str = PAN1) -> int:
        v = await self.pool.fetchval("SELECT a.posted FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
            "WHERE a.owner_kind = 'card' AND c.id = $1 AND a.purpose = 'points' AND a.asset = 'PTS:ALLY'",
                await card_numbers.card_id_by_number(self.pool, pan))
        return int(v or 0)

    async def books_ok(self) -> None:
        assert await check_books(self.pool) == []


@pytest.fixture
async def two(pool: asyncpg.Pool, db_dsn: str) -> AsyncIterator[Two]:
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn)
    other = await ledger_db.create_pool(db_dsn, 1, 6)
    try:
        async with Ledger(pool, ledger_settings()) as ledger_a, Ledger(other, ledger_settings()) as ledger_b:
            yield Two(pool, Loyalty(ledger_a), Loyalty(ledger_b))
    finally:
        await other.close()


async def _gather(*calls: object) -> list[Outcome]:
    return list(await asyncio.gather(*calls))  # type: ignore[arg-type]


async def _race(two: Two, first: Callable[[Request], Awaitable[Outcome]], *, refunds: int,
                refund_minor: int) -> tuple[int, list[Outcome]]:
    """Earn on 10,000, then ``first(purchase)`` and ``refunds`` refunds of it at once, across both
    engines: (the purchase's journal, [first's outcome, the refunds' outcomes...])."""
    r = req(amount=10_000)
    original = ok(await two.a.earn(r))
    assert original.journal_id is not None
    outcomes = await _gather(first(r), *(two.of(i).refund(req(amount=refund_minor, original_rrn=r.rrn))
                                         for i in range(refunds)))
    return original.journal_id, outcomes


async def test_refunds_in_two_engines_never_exceed_the_original(two: Two) -> None:
    r = req(amount=10_000)  # 100 points earned
    original = ok(await two.a.earn(r))
    outcomes = await _gather(*(two.of(i).refund(req(amount=700, original_rrn=r.rrn)) for i in range(20)))
    assert sum(o.approved for o in outcomes) == 14
    assert {o.reason for o in outcomes} == {Reason.APPROVED, Reason.EXCEEDS_LIMIT}
    assert original.journal_id is not None
    assert (await two.undone(original.journal_id))[0] == 9_800
    assert await two.points() == 2  # 100 - floor(100 x 9,800 / 10,000)
    await two.books_ok()


async def test_a_void_racing_refunds_in_two_engines(two: Two) -> None:
    for _round in range(3):
        journal_id, outcomes = await _race(two, lambda r: two.b.void(req(amount=10_000, original_rrn=r.rrn)),
                                           refunds=10, refund_minor=1_000)
        voided, refunded = outcomes[0], outcomes[1:]
        undone, kinds = await two.undone(journal_id)
        if voided.approved:
            # First in line: nothing else may undo it afterwards.
            assert not any(o.approved for o in refunded)
            assert kinds == ["void"] and undone == 10_000
        else:
            # A refund was first: the void is refused, and ten refunds of 1,000 fit exactly.
            assert voided.reason is Reason.INVALID_TXN
            assert all(o.approved for o in refunded), [o.reason for o in refunded]
            assert kinds == ["refund"] * 10 and undone == 10_000
    assert await two.points() == 0
    await two.books_ok()


async def test_a_reversal_racing_refunds_in_two_engines(two: Two) -> None:
    for _round in range(3):
        journal_id, outcomes = await _race(two, lambda r: two.b.reverse(req(amount=10_000, original_key=r.key)),
                                           refunds=8, refund_minor=1_500)
        assert outcomes[0].approved and outcomes[0].journal_id is not None, outcomes[0]
        undone, kinds = await two.undone(journal_id)
        # Whatever the refunds took first, the reversal undoes the rest: to the unit.
        assert undone == 10_000 and kinds[-1] == "reversal" and kinds.count("reversal") == 1
        approved = sum(1_500 for o in outcomes[1:] if o.approved)
        assert approved == 10_000 - (await _reversal_units(two, outcomes[0].journal_id))
        assert all(o.reason in (Reason.APPROVED, Reason.EXCEEDS_LIMIT, Reason.INVALID_TXN) for o in outcomes[1:])
    assert await two.points() == 0
    await two.books_ok()


async def _reversal_units(two: Two, journal_id: int) -> int:
    return int(await two.pool.fetchval(
        "SELECT undo_units FROM loyalty.transactions WHERE journal_id = $1", journal_id))


async def test_a_late_original_racing_its_reversal_in_two_engines(two: Two) -> None:
    for _round in range(10):
        late: Request = req(amount=5_000)
        purchase, reversal = await _gather(two.a.earn(late), two.b.reverse(req(amount=5_000, original_key=late.key)))
        if purchase.approved:
            # The original came first: the reversal undid it.
            assert reversal.approved and reversal.journal_id is not None, reversal
        else:
            # The reversal came first: it left its marker, and the original was refused.
            assert reversal.reason is Reason.ORIGINAL_NOT_FOUND and purchase.reason is Reason.ORIGINAL_REVERSED, (reversal, purchase)
        assert await two.points() == 0
    await two.books_ok()


async def test_a_refund_that_read_a_standing_since_changed_decides_again(two: Two) -> None:
    """Deterministically, the race the guard exists for: engine A reads the original's standing,
    engine B refunds it meanwhile, A's refund posts on the old standing's guard, finds it taken,
    reads again and decides on what now stands."""

    r = req(amount=10_000)  # 100 points earned
    original = ok(await two.a.earn(r))
    assert original.journal_id is not None
    late = req(amount=6_000, original_rrn=r.rrn)
    pan_hash = (await card_numbers.vault(two.pool)).lookup_hash(late.pan)
    stale = await lookup.read_context(two.a._contexts, pan_hash, late.merchant_id, late.key, None, r.rrn)
    assert stale.standing is not None and stale.standing[2] == 0  # nothing against it yet
    first = ok(await two.b.refund(req(amount=5_000, original_rrn=r.rrn)))
    assert first.points_redeemed == 50
    before = two.a.overtaken_total
    outcome = await two.a._compensate(TxnType.REFUND, late, stale, None)
    assert two.a.overtaken_total == before + 1
    assert outcome.reason is Reason.EXCEEDS_LIMIT, outcome  # 5,000 + 6,000 > 10,000, seen on the re-read
    fits = req(amount=5_000, original_rrn=r.rrn)
    stale = await lookup.read_context(two.a._contexts, pan_hash, fits.merchant_id, fits.key, None, r.rrn)
    ok(await two.b.refund(req(amount=1_000, original_rrn=r.rrn)))  # changes the standing again
    outcome = await two.a._compensate(TxnType.REFUND, fits, stale, None)
    assert outcome.reason is Reason.EXCEEDS_LIMIT  # decided on 5,000 + 5,000; then 6,000 + 5,000
    last = req(amount=3_990, original_rrn=r.rrn)
    stale = await lookup.read_context(two.a._contexts, pan_hash, last.merchant_id, last.key, None, r.rrn)
    ok(await two.b.refund(req(amount=10, original_rrn=r.rrn)))
    before = two.a.overtaken_total
    outcome = await two.a._compensate(TxnType.REFUND, last, stale, None)
    # Decided on 6,000 + 3,990; posted, after its second read, on 6,010 + 3,990 = 10,000.
    assert outcome.approved and two.a.overtaken_total == before + 1, outcome
    undone, kinds = await two.undone(original.journal_id)
    assert undone == 10_000 and kinds == ["refund"] * 4
    assert await two.points() == 0  # every point earned, clawed back
    await two.books_ok()
