"""Reads from a standby: a second, read-only pool for what only reads (transaction search,
statistics, exports), used while the standby is fresh enough, else the primary's pool.

The bound: a standby is used only while it streams from its primary and has replayed all it has
received, or its last replayed transaction is at most ``staleness_max_s`` old. With synchronous
replication every acknowledged commit has reached the standby before its acknowledgement, so a
read there misses at most what was committed in the last ``staleness_max_s`` seconds (plus the
check's interval, one second). The money path never reads here: it uses the primary's pool only.

>>> StandbyReads(primary="p", standby=None, staleness_max_s=5.0).current()
'p'
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

# 0 when the server is a primary (a promoted standby) or has replayed all it received while
# streaming; else the age of its last replayed transaction; NULL when it does not stream.
LAG_SQL = """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0::float8
            WHEN NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 END
"""
CHECK_INTERVAL_S = 1.0
CHECK_TIMEOUT_S = 1.0


class StandbyReads:
    """Chooses the pool for a read: ``standby`` while fresh (checked at most once a second)."""

    def __init__(self, primary: Any, standby: Any, staleness_max_s: float,
                 check_interval_s: float = CHECK_INTERVAL_S) -> None:
        self.primary, self.standby = primary, standby
        self.staleness_max_s, self.check_interval_s = staleness_max_s, check_interval_s
        self._checked_at_s = float("-inf")
        self._fresh = False
        self._lock = asyncio.Lock()

    def current(self) -> Any:
        """The pool the last check chose (the primary's before any check)."""
        return self.standby if self.standby is not None and self._fresh else self.primary

    async def pool(self) -> Any:
        """The pool for a read now: the standby's when it is within the bound, else the primary's."""
        if self.standby is None:
            return self.primary
        if time.monotonic() - self._checked_at_s >= self.check_interval_s:
            async with self._lock:  # one check at a time; the others use its verdict
                if time.monotonic() - self._checked_at_s >= self.check_interval_s:
                    self._fresh = await self._check()
                    self._checked_at_s = time.monotonic()
        return self.current()

    async def _check(self) -> bool:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                lag_s = await self.standby.fetchval(LAG_SQL)
        except Exception:  # noqa: BLE001 - an unreachable standby: read from the primary
            return False
        return lag_s is not None and float(lag_s) <= self.staleness_max_s
