"""Shared by the platform pages' tests: transactions taken through the ledger (the web seat)."""

from __future__ import annotations

import itertools

import asyncpg
from ledger_support import ledger_settings

from ledger.engine import Ledger
from ledger.loyalty import demo, seat
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Reason

PAN1, PAN2 = demo.demo_pan(1), demo.demo_pan(2)
_forms = itertools.count(1)


async def take_some(pool: asyncpg.Pool) -> list[str]:
    """At M0001's seat: two earns and a top-up; at M0002's: an earn and a redemption; one decline.
    Returns the approved RRNs."""
    rrns = []
    async with Ledger(pool, ledger_settings()) as ledger:
        loy = Loyalty(ledger)
        for merchant, kind, pan, amount in (("M0001", "earn", PAN1, 12_300), ("M0001", "earn", PAN2, 5_000),
                                            ("M0001", "topup", PAN1, 500), ("M0002", "earn", PAN1, 1_000),
                                            ("M0002", "redeem", PAN1, 100), ("M0002", "redeem", PAN2, 99_999)):
            r = await seat.take(loy, merchant, "op-test", f"form-{next(_forms):06d}-{seat.new_request_id()[:8]}",
                                kind, pan, amount)
            if r.reason is Reason.APPROVED:
                assert r.rrn is not None
                rrns.append(r.rrn)
    return rrns
