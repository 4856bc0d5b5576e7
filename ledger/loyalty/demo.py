"""Demo data: an alliance program, a hosted program, three merchants and ten cards.

``switchd demo seed`` adds terminals (the switch's) on top; tests use the same
data. Everything is created in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ledger.loyalty.cards import issue_card
from ledger.loyalty.merchants import add_merchant
from ledger.loyalty.programs import Prize, add_program, set_lottery
from ledger.loyalty.rules import luhn_complete

DEMO_BIN = "621234"


@dataclass(frozen=True)
class DemoMerchant:
    merchant_id: str
    name: str
    program: str
    terminal_id: str


DEMO_MERCHANTS = (
    DemoMerchant("M0001", "Alliance Books", "ALLY", "T0000001"),
    DemoMerchant("M0002", "Alliance Coffee", "ALLY", "T0000002"),
    DemoMerchant("M0003", "Hosted Bakery", "CAFE", "T0000003"),
)


def demo_pan(n: int) -> str:
    """The n-th demo card: BIN 621234, 16 digits, Luhn-valid.

    >>> demo_pan(1)
    '6212340000000019'
    """
    return luhn_complete(f"{DEMO_BIN}{n:09d}")


async def seed(conn: asyncpg.Connection, cards: int = 10) -> dict[str, list[str]]:
    """Create the demo programs, merchants and cards; returns what was created, by kind."""
    await add_program(conn, "ALLY", "Demo Alliance", "alliance", issue_price_minor=1, redeem_value_minor=1)
    await add_program(conn, "CAFE", "Demo Hosted Bakery", "hosted", issue_price_minor=2, redeem_value_minor=2)
    await set_lottery(conn, "ALLY", 10, [Prize("NONE", 0, 80), Prize("SMALL", 20, 15), Prize("BIG", 100, 5)])
    rates = {"M0001": (1, 1), "M0002": (2, 1), "M0003": (1, 2)}
    for m in DEMO_MERCHANTS:
        await add_merchant(conn, m.merchant_id, m.name, m.program, *rates[m.merchant_id], {"default": 50})
    pans = [demo_pan(n) for n in range(1, cards + 1)]
    for i, pan in enumerate(pans, start=1):
        await issue_card(conn, pan, expiry="3012", name=f"Demo Member {i}")
    return {"programs": ["ALLY", "CAFE"], "merchants": [m.merchant_id for m in DEMO_MERCHANTS], "cards": pans}
