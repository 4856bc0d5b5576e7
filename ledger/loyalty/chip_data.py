"""What a dispute needs of purchases' chip data (``loyalty.chip_data``), kept for a bounded time.

The switch writes one row per approved chip purchase (switch.emv.DISPUTE_TAGS only); end of day
deletes the rows older than ``[security] chip_data_keep_days``.
"""

from __future__ import annotations

import asyncpg

PURGE_ROWS_MAX = 100_000  # per statement: a long-neglected table is emptied over several runs


async def purge(conn: asyncpg.Connection | asyncpg.Pool, keep_days: int) -> int:
    """Delete chip data older than ``keep_days`` (all of it when 0); how many rows went."""
    status = await conn.execute(
        "DELETE FROM loyalty.chip_data WHERE idempotency_key IN (SELECT idempotency_key FROM loyalty.chip_data "
        "WHERE created_at < now() - make_interval(days => $1) LIMIT $2)", keep_days, PURGE_ROWS_MAX)
    return int(status.split()[-1])
