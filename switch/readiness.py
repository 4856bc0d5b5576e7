"""Readiness: whether this daemon should be given traffic (a load balancer's health check).

Ready means: the listeners are serving, and the database pool reaches a primary that accepts
writes (not in recovery, not fenced read-only) as of a probe at most ``stale_after_s`` old. A
daemon that is not ready still answers every request it gets (91 or 96 while it has no primary);
the check only steers new connections to a daemon that can approve.

>>> r = Readiness(pool=None)
>>> r.ready, r.state()
(False, {'serving': False, 'primary': False, 'probe_age_s': None})
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ledger.db import connection_lost
from ledger.errors import first_line
from switch.logs import get_logger

log = get_logger("switchd.readiness")

# One statement: a promoted standby that is still fenced read-only (pg_auto_failover does so for
# a moment) is not yet a primary for us.
PRIMARY_SQL = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 1.0
# A probe older than this (the loop stalled, the probe hangs) no longer vouches for the primary.
STALE_AFTER_S = 3.0


class Readiness:
    """The daemon's readiness, probed on its own pool every ``interval_s``; read from any thread."""

    def __init__(self, pool: Any, interval_s: float = PROBE_INTERVAL_S, timeout_s: float = PROBE_TIMEOUT_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.pool = pool
        self.interval_s, self.timeout_s, self.stale_after_s = interval_s, timeout_s, stale_after_s
        self.serving = False
        self._primary_at_s: float | None = None  # time.monotonic() of the last probe that found a primary
        self._was_primary = True  # for the log: say it once when it changes

    @property
    def ready(self) -> bool:
        """Serving, and a writable primary found by a recent probe."""
        at = self._primary_at_s
        return self.serving and at is not None and time.monotonic() - at <= self.stale_after_s

    def state(self) -> dict[str, Any]:
        """What the endpoint reports beside the verdict."""
        at = self._primary_at_s
        return {"serving": self.serving, "primary": at is not None and time.monotonic() - at <= self.stale_after_s,
                "probe_age_s": None if at is None else round(time.monotonic() - at, 3)}

    async def probe(self) -> bool:
        """One probe; True when the pool's server is a writable primary. A connection to a server
        that is not (demoted, fenced) makes the pool expire its connections, so that the next ones
        are made afresh through the DSN's host list to whichever server is primary now."""
        try:
            async with asyncio.timeout(self.timeout_s), self.pool.acquire() as conn:
                primary = bool(await conn.fetchval(PRIMARY_SQL))
        except Exception as exc:  # noqa: BLE001 - any failure means: not ready now
            primary = False
            if not connection_lost(exc):
                log.warning("readiness_probe_failed", reason=first_line(exc))
        if primary:
            self._primary_at_s = time.monotonic()
        else:
            self._primary_at_s = None
            await self.pool.expire_connections()
        if primary != self._was_primary:
            (log.info if primary else log.warning)("database_primary", reachable=primary)
            self._was_primary = primary
        return primary

    async def watch(self) -> None:
        """Probe until cancelled (run it as a task of the daemon's loop)."""
        while True:
            await self.probe()
            await asyncio.sleep(self.interval_s)
