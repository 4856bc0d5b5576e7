"""Helpers for the web trading seat's tests: a seeded database, the Loyalty operations over it,
the seat and a terminal taking transactions side by side, and the books proved after each test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from ledger_support import ledger_settings

from ledger import reconcile
from ledger.engine import Ledger, Receipt
from ledger.loyalty import card_numbers, demo, seat
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from ledger.loyalty.seat import SeatResult
from switch.handlers.responses import response_code

PAN1, PAN2, PAN3 = demo.demo_pan(1), demo.demo_pan(2), demo.demo_pan(3)
OPERATOR = "op-alice"
_forms = itertools.count(1)
_stans = itertools.count(1)


def form_id() -> str:
    """A fresh one-time request id, as the portal puts in each form."""
    return f"form-{next(_forms):011d}-{seat.new_request_id()[:8]}"


@dataclass
class World:
    pool: asyncpg.Pool
    ledger: Ledger
    loy: Loyalty

    async def take(self, kind: str, pan: str = PAN1, amount: int | None = None, *, merchant: str = "M0001",
                   request_id: str | None = None, operator: str = OPERATOR, currency: str | None = None,
                   original_rrn: str | None = None) -> SeatResult:
        return await seat.take(self.loy, merchant, operator, request_id or form_id(), kind, pan, amount,
                               currency, original_rrn)

    async def pos(self, kind: TxnType, pan: str = PAN1, amount: int = 100, *, merchant: str = "M0001",
                  terminal: str = "T0000001", original_rrn: str | None = None, account: str | None = None
                  ) -> Outcome:
        """A terminal's request as the switch makes it: keyed by 41/11/7, its answer stored with it."""
        n = next(_stans)
        stan, when = f"{n % 1_000_000:06d}", "0101120000"
        receipt_key, receipt_hash = f"iso:{terminal}:{stan}:{when}", n.to_bytes(8, "big")
        req = Request(key=f"{terminal}|{stan}|{when}", terminal_id=terminal, merchant_id=merchant, pan=pan,
                      amount=amount, currency=None if kind.in_points else "156", rrn=f"{n:012d}", stan=stan,
                      account=account or kind.account, original_rrn=original_rrn, receipt_key=receipt_key,
                      receipt_hash=receipt_hash)

        def receipt(o: Outcome) -> Receipt:
            return Receipt(receipt_key, receipt_hash, b'{"v":1,"fields":{"39":"%s"}}' % response_code(o.reason).encode())

        return await self.loy.execute(kind, req, receipt=receipt)

    async def member(self, pan: str, purpose: str, asset: str) -> int:
        v = await self.pool.fetchval("SELECT a.posted FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
            "WHERE a.owner_kind='card' AND c.id = $1 AND a.purpose=$2 AND a.asset=$3",
                await card_numbers.card_id_by_number(self.pool, pan), purpose, asset)
        return int(v or 0)

    async def points(self, pan: str = PAN1, program: str = "ALLY") -> int:
        return await self.member(pan, "points", f"PTS:{program}")

    async def sv(self, pan: str = PAN1) -> int:
        return await self.member(pan, "stored_value", "CNY")

    async def journals(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM ledger.journals"))

    async def records(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM loyalty.transactions"))

    async def books_balance(self) -> None:
        """Every reconciliation check over every day passes (the books, receipts, batches)."""
        report = await reconcile.run(self.pool, None)
        assert report.ok, [p.__dict__ for p in report.problems]


@asynccontextmanager
async def seeded(pool: asyncpg.Pool) -> AsyncIterator[World]:
    """The demo programs, merchants and cards, and the operations over them; books proved at the end."""
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn)
    async with Ledger(pool, ledger_settings()) as ledger:
        world = World(pool, ledger, Loyalty(ledger))
        yield world
    await world.books_balance()


def approved(r: SeatResult) -> SeatResult:
    assert r.reason is Reason.APPROVED, (r.reason, r.detail)
    assert r.rrn is not None and r.approval_code is not None
    return r
