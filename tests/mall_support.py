"""Helpers for the points mall's tests: the seat's seeded world plus the mall over it, goods, funds."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
from seat_support import PAN1, World, approved
from seat_support import seeded as seat_seeded

from ledger.loyalty import card_numbers
from ledger.loyalty import mall as M
from ledger.loyalty.mall import GoodForm, Mall

_keys = itertools.count(1)


def request_key() -> str:
    """A fresh request key, as a member's order form carries one."""
    return f"req-{next(_keys):010d}"


@dataclass
class MallWorld:
    w: World
    mall: Mall

    @property
    def pool(self) -> asyncpg.Pool:
        return self.w.pool

    async def card(self, pan: str = PAN1) -> tuple[int, int]:
        """(member id, card id) of a card."""
        row = await self.pool.fetchrow("SELECT member_id, id FROM loyalty.cards WHERE id = $1",
            await card_numbers.card_id_by_number(self.pool, pan))
        return int(row["member_id"]), int(row["id"])

    async def good(self, merchant: str = "M0001", stock: int = 10, points: int | None = 100,
                   minor: int | None = 1_000, name: str = "Mug") -> int:
        return await M.add_good(self.pool, merchant, GoodForm(name, "A fine mug", points, minor, stock))

    async def stock(self, good_id: int) -> int:
        return int(await self.pool.fetchval("SELECT stock FROM loyalty.goods WHERE id = $1", good_id))

    async def fund(self, pan: str = PAN1, points: int = 0, minor: int = 0) -> None:
        """Give a card points (a top-up) and stored value (a load) at M0001's seat."""
        if points:
            approved(await self.w.take("topup", pan, points))
        if minor:
            approved(await self.w.take("load", pan, minor))

    async def available(self, pan: str = PAN1, purpose: str = "points", asset: str = "PTS:ALLY") -> int:
        v = await self.pool.fetchval("SELECT a.posted - a.held FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
            "WHERE a.owner_kind='card' AND c.id = $1 AND a.purpose=$2 AND a.asset=$3",
                await card_numbers.card_id_by_number(self.pool, pan), purpose, asset)
        return int(v or 0)

    async def place(self, good_id: int, pan: str = PAN1, quantity: int = 1, pay: str = "points",
                    key: str | None = None, **kw: Any) -> dict[str, Any]:
        member, card = await self.card(pan)
        return await self.mall.place(member, card, good_id, quantity, pay, key or request_key(), "mall",
                                     kw.pop("address", "1 Main St"), **kw)


@asynccontextmanager
async def mall_world(pool: asyncpg.Pool, **settings: Any) -> AsyncIterator[MallWorld]:
    """The seeded world (books proved at the end, and every order against the ledger) with a Mall
    over it (``settings``: MallSettings changes)."""
    async with seat_seeded(pool) as w:
        yield MallWorld(w, Mall(w.loy, pool, replace(M.DEFAULT_SETTINGS, **settings)))
        assert await M.check_orders(pool) == [], "an order's row disagrees with the ledger"
