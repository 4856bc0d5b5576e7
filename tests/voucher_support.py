"""Helpers for the top-up card tests over the portal, the API and the wire: a sold batch and its codes."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import asyncpg
from ledger_support import ledger_settings

from ledger.engine import Ledger
from ledger.loyalty import vouchers


async def sold_batch(pool: asyncpg.Pool, master_key: bytes, out_dir: Path, count: int = 2, points: int = 300,
                     merchant_id: str = "M0001", program: str = "ALLY") -> dict[str, str]:
    """A batch of ``count`` cards of ``points`` sold to ``merchant_id``: serial -> code."""
    day = await pool.fetchval("SELECT open_date FROM ledger.business_day")
    async with pool.acquire() as conn, conn.transaction():
        made = await vouchers.create_batch(conn, master_key, program, points, count, 250, day + dt.timedelta(days=30),
                                           out_dir)
    async with Ledger(pool, ledger_settings()) as led:
        await vouchers.sell_batch(led, pool, made.batch_id, merchant_id)
    with made.path.open() as fh:
        return {row["serial"]: row["code"] for row in csv.DictReader(fh)}
