"""Proofs that the books are right, as SQL; each returns the offending rows (none = right)."""

from __future__ import annotations

import asyncpg


async def assets_not_zero(conn: asyncpg.Connection | asyncpg.Pool) -> list[tuple[str, int]]:
    """Assets whose accounts do not sum to zero: (asset, sum)."""
    rows = await conn.fetch(
        "SELECT asset, sum(posted) AS total FROM ledger.accounts GROUP BY asset HAVING sum(posted) <> 0")
    return [(r["asset"], int(r["total"])) for r in rows]


async def cached_balances_wrong(conn: asyncpg.Connection | asyncpg.Pool) -> list[tuple[int, int, int]]:
    """Accounts whose cached balance differs from the sum of their entries: (id, cached, summed)."""
    rows = await conn.fetch(
        "SELECT a.id, a.posted, coalesce(e.total, 0) AS total FROM ledger.accounts a "
        "LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger.entries GROUP BY account_id) e "
        "ON e.account_id = a.id WHERE a.posted <> coalesce(e.total, 0)")
    return [(r["id"], int(r["posted"]), int(r["total"])) for r in rows]


async def problems(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    """Every failed proof as one line; empty when the books are right."""
    out = [f"asset {a} sums to {t}" for a, t in await assets_not_zero(conn)]
    out += [f"account {i}: cached {c} != entries {s}" for i, c, s in await cached_balances_wrong(conn)]
    return out
