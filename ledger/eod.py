"""``eod run``: the end-of-day sequence for one business day, at most one at a time.

1. Take the session advisory lock ``EOD_LOCK_KEY`` on a dedicated connection:
   two runs never overlap, from any number of daemons or CLIs. A second run
   waits up to ``wait_lock_s`` (0: not at all) and then refuses, naming the
   holder's backend pid.
2. Cut the day over (:func:`ledger.business_day.cut_over`): the UPDATE waits,
   by lock, for posting batches in flight; every batch after it posts to the
   next day.
3. Clear the day (:mod:`ledger.clearing`), move the points of sold top-up cards past their last
   day to breakage (:func:`ledger.loyalty.vouchers.expire_day`), expire the points lots due
   (:func:`ledger.loyalty.lots.expire_day`), move expired cards' residual stored value
   (:func:`ledger.loyalty.residual.move_day`), write the settlement files
   (:mod:`ledger.settlement_files`), roll its statistics up (:func:`ledger.stats.roll_up_day`),
   reconcile (:mod:`ledger.reconcile`).

Every step is idempotent, so running it twice for a day changes nothing and
rewrites identical files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from ledger import business_day, clearing, reconcile, settlement_files, stats
from ledger.business_day import EOD_LOCK_KEY
from ledger.engine import Ledger, LedgerSettings
from ledger.errors import SwitchdError
from ledger.loyalty import lots, residual, vouchers

LOCK_POLL_S = 0.2
UNLOCK_TIMEOUT_S = 10.0


class EodBusy(SwitchdError):
    """Another end-of-day run holds the lock; ``str()`` says who."""


@dataclass
class EodReport:
    """What one run did, with timings per step (seconds)."""

    business_date: dt.date
    cut_over: bool
    clearing: clearing.ClearingReport | None = None
    expiry: list[lots.ProgramExpiry] = field(default_factory=list)
    residual_value: list[residual.ProgramResidual] = field(default_factory=list)
    files: list[settlement_files.WrittenFile] = field(default_factory=list)
    recon: reconcile.ReconReport | None = None
    voucher_breakage: dict[str, int] = field(default_factory=dict)  # points per program
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.recon is not None and self.recon.ok

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        c = self.clearing
        r = self.recon
        return {
            "business_date": self.business_date.isoformat(),
            "cut_over": self.cut_over,
            "clearing": None if c is None else {
                "merchants": c.merchants, "computed_now": c.computed_now, "journals_posted": c.journals_posted,
                "journals_existing": c.journals_existing, "net_total_minor": c.net_total_minor},
            "voucher_breakage": self.voucher_breakage,
            "expiry": [e.__dict__ for e in self.expiry],
            "residual_value": [r.__dict__ for r in self.residual_value],
            "files": [{"path": str(f.path), "sha256": f.sha256} for f in self.files],
            "recon": None if r is None else {"ok": r.ok, "checks": r.checks,
                                             "failures": [p.__dict__ for p in r.problems]},
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "ok": self.ok,
        }


async def _lock(conn: asyncpg.Connection, wait_lock_s: float) -> None:
    deadline = time.monotonic() + max(wait_lock_s, 0.0)
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", EOD_LOCK_KEY):
            return
        if time.monotonic() >= deadline:
            holder = await conn.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1", EOD_LOCK_KEY)
            raise EodBusy(f"another eod run holds the end-of-day lock (backend pid {holder}); "
                          f"waited {wait_lock_s:g}s; try again when it has finished")
        await asyncio.sleep(LOCK_POLL_S)


async def run(pool: asyncpg.Pool, day: dt.date | None, settlement_dir: Path, *, wait_lock_s: float = 0.0,
              ledger_settings: LedgerSettings, timeout_cut_over_s: float = 30.0) -> EodReport:
    """Run end of day for ``day`` (default: the open day). Raises EodBusy when another run holds the lock."""
    async with pool.acquire() as lock_conn:
        await _lock(lock_conn, wait_lock_s)
        try:
            return await _run_locked(pool, lock_conn, day, settlement_dir, ledger_settings, timeout_cut_over_s)
        finally:
            # A session lock on a pooled connection: the pool does not reset sessions
            # (ledger.db), so it is released here, or the session is ended, which
            # releases it too. Never back in the pool still holding it.
            try:
                await asyncio.wait_for(lock_conn.execute("SELECT pg_advisory_unlock($1)", EOD_LOCK_KEY),
                                       UNLOCK_TIMEOUT_S)
            except (Exception, asyncio.CancelledError):
                lock_conn.terminate()


async def _run_locked(pool: asyncpg.Pool, conn: asyncpg.Connection, day: dt.date | None, settlement_dir: Path,
                      ledger_settings: LedgerSettings, timeout_cut_over_s: float) -> EodReport:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    d = day or await business_day.open_date(conn)
    run_id = await conn.fetchval("INSERT INTO eod.runs(business_date) VALUES ($1) RETURNING id", d)
    report = EodReport(d, False, timings_s=timings)
    try:
        cut = await business_day.cut_over(conn, d, timeout_cut_over_s)
        report.cut_over = cut.happened
        timings["cut_over"] = time.perf_counter() - t0
        t = time.perf_counter()
        async with Ledger(pool, ledger_settings) as led:
            report.clearing = await clearing.clear_day(conn, led, d)
            timings["clearing"] = time.perf_counter() - t
            t = time.perf_counter()
            report.voucher_breakage = await vouchers.expire_day(conn, led, d)
            # Failed top-up card attempts of subjects no longer counted (their totals kept).
            await vouchers.purge_failures(conn)
        timings["voucher_breakage"] = time.perf_counter() - t
        t = time.perf_counter()
        # Points whose lots expire on or before the closed day become breakage income; the
        # journals post to the next open day, as the settlement journals do.
        report.expiry = await lots.expire_day(conn, d)
        timings["expiry"] = time.perf_counter() - t
        t = time.perf_counter()
        # Expired cards' stored value past its grace period, in programs whose policy is breakage.
        report.residual_value = await residual.move_day(conn, d)
        timings["residual"] = time.perf_counter() - t
        t = time.perf_counter()
        report.files = await settlement_files.write_day(conn, d, settlement_dir)
        timings["files"] = time.perf_counter() - t
        t = time.perf_counter()
        # The closed, cleared day's statistics are rolled up now rather than on the first read.
        await stats.roll_up_day(conn, d)
        timings["stats"] = time.perf_counter() - t
        t = time.perf_counter()
        report.recon = await reconcile.run(pool, d)  # its checks side by side on the pool
        timings["recon"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
    except BaseException as exc:
        await conn.execute(
            "UPDATE eod.runs SET finished_at=now(), status='failed', report=$2::jsonb WHERE id=$1",
            run_id, json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise
    await conn.execute("UPDATE eod.runs SET finished_at=now(), status=$2, report=$3::jsonb WHERE id=$1",
                       run_id, "ok" if report.ok else "failed", json.dumps(report.as_dict()))
    return report
