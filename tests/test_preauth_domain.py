"""Pre-authorisations in the loyalty domain (ledger/loyalty/preauth.py), through the real Ledger.

What the wire tests cannot make happen on purpose: a completion and a release of one hold at
the same moment (exactly one ends it), two completions at once (exactly one captures), and
the hold's life as asked, defaulted and cut.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import asyncpg
import pytest
from ledger_support import ledger_settings

from ledger.audit import check_books
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, demo
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from ledger.loyalty.preauth import PreauthSettings

PAN = demo.demo_pan(1)
_stan = itertools.count(1)


def _req(amount: int, **kw: object) -> Request:
    n = next(_stan)
    return Request(key=f"T0000001|{n:06d}|0101120000", terminal_id="T0000001", merchant_id="M0001", pan=PAN,
                   amount=amount, currency="156", rrn=f"{n:012d}", stan=f"{n:06d}", account="60",
                   **kw)  # type: ignore[arg-type]


@pytest.fixture
async def loy(pool: asyncpg.Pool) -> AsyncIterator[Loyalty]:
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn)
    async with Ledger(pool, ledger_settings()) as ledger:
        loyalty = Loyalty(ledger, preauth=PreauthSettings(hold_timeout_default_s=120, hold_timeout_max_s=600))
        assert (await loyalty.load(_req(10_000))).approved
        yield loyalty
    assert await check_books(pool) == []


async def _available(loy: Loyalty) -> int:
    row = await loy.pool.fetchrow(
        "SELECT a.posted - a.held AS available FROM ledger.accounts a JOIN loyalty.cards c "
        "ON a.owner_kind = 'card' AND a.owner_id = c.id::text WHERE c.id = $1 AND a.purpose = 'stored_value'",
        await card_numbers.card_id_by_number(loy.pool, PAN))
    assert row is not None
    return int(row["available"])


async def _hold(loy: Loyalty, amount: int, hold_s: int | None = None) -> tuple[Request, Outcome]:
    auth = _req(amount, hold_timeout_s=hold_s)
    out = await loy.execute(TxnType.PREAUTH, auth)
    assert out.approved and out.journal_id is not None, out
    return auth, out


async def test_the_hold_lives_as_asked_defaulted_and_cut(loy: Loyalty) -> None:
    for asked, granted in ((None, 120), (30, 30), (10**6, 600)):
        _auth, out = await _hold(loy, 10, asked)
        assert out.hold_s == granted
        seconds = await loy.pool.fetchval(
            "SELECT extract(epoch FROM h.expires_at - j.created_at)::int FROM ledger.holds h "
            "JOIN ledger.journals j ON j.id = h.id WHERE h.id = $1", out.journal_id)
        assert abs(int(seconds) - granted) <= 2


async def test_a_completion_and_a_release_at_once_end_the_hold_once(loy: Loyalty) -> None:
    for _round in range(10):
        before = await _available(loy)
        auth, _out = await _hold(loy, 500)
        done, released = await asyncio.gather(
            loy.execute(TxnType.COMPLETION, _req(300, original_key=auth.key)),
            loy.execute(TxnType.REVERSAL, _req(500, original_key=auth.key)))
        if done.approved:
            assert released.reason is Reason.INVALID_TXN, released
            assert await _available(loy) == before - 300
        else:
            assert done.reason is Reason.INVALID_TXN and released.approved, (done, released)
            assert await _available(loy) == before


async def test_two_completions_at_once_capture_once(loy: Loyalty) -> None:
    for _round in range(10):
        before = await _available(loy)
        auth, _out = await _hold(loy, 400)
        outs = await asyncio.gather(*(loy.execute(TxnType.COMPLETION, _req(100 * (i + 1), original_key=auth.key))
                                      for i in range(3)))
        won = [o for o in outs if o.approved]
        assert len(won) == 1 and all(o.reason is Reason.INVALID_TXN for o in outs if not o.approved), outs
        taken = before - await _available(loy)
        assert taken in (100, 200, 300)
