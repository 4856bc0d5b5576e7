"""The open business day and its cut-over.

Posting batches read ``ledger.business_day`` FOR SHARE, so the cut-over's
UPDATE waits for every batch in flight and every batch after it posts to the
new day: the switch-over is a lock, never a sleep, and no journal can land in
two days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

# Advisory-lock key that serialises end-of-day runs across daemons and CLIs ("SWDEOD").
EOD_LOCK_KEY = 0x535744454F44


@dataclass(frozen=True)
class CutOver:
    closed: dt.date
    opened: dt.date
    happened: bool  # False: the day was already closed (a re-run)


async def open_date(conn: asyncpg.Connection | asyncpg.Pool) -> dt.date:
    """The business date new postings get."""
    value = await conn.fetchval("SELECT open_date FROM ledger.business_day WHERE singleton")
    assert isinstance(value, dt.date)
    return value


async def cut_over(conn: asyncpg.Connection, day: dt.date, timeout_lock_s: float = 30.0) -> CutOver:
    """Close ``day`` and open the next one; idempotent when ``day`` is already closed.

    Refuses to close a day that has not been opened yet (a typo in --date must
    not skip days).
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{int(timeout_lock_s * 1000)}ms'")
        current = await conn.fetchval("SELECT open_date FROM ledger.business_day WHERE singleton FOR UPDATE")
        if current > day:
            return CutOver(day, current, False)
        if current < day:
            raise ValueError(f"business day {day} is not open yet; the open day is {current}")
        nxt = day + dt.timedelta(days=1)
        await conn.execute("UPDATE ledger.business_day SET open_date = $1 WHERE singleton", nxt)
        return CutOver(day, nxt, True)
