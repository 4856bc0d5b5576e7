"""End of day under load, and two end-of-day runs at once.

- Cut-over while terminals keep sending: no request lost, none posted to two
  days, every journal's business date on the right side of the cut-over, and
  the day's clearing equals what the test sent in that day.
- The advisory lock: a second run refuses at once (exit 3, a clear message) or
  waits with a bound; two runs started together post each settlement once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from eod_support import CARDS, LISTENERS, MERCHANTS, TERMINALS, provision, terminal
from fixtures_daemon import SWITCHD, Daemon, db_run, next_stan, utc_stamp

from ledger.business_day import EOD_LOCK_KEY

LOAD_THREADS = 4
AMOUNT_MINOR = 1_000  # 10.00 CNY


@pytest.fixture(scope="module")
def busy(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("eodload"), daemon_db, LISTENERS).start()
    try:
        provision(d)
        yield d
    finally:
        assert d.stop() == 0


def _until(cond: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.02)


class Load(threading.Thread):
    """One terminal connection sending purchase-earns back to back until told to stop."""

    def __init__(self, d: Daemon, merchant: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.d, self.merchant, self.stop_flag = d, merchant, stop
        self.done: list[tuple[float, float, str, str]] = []  # (sent_s, answered_s, rrn, code)
        self.errors: list[str] = []

    def run(self) -> None:
        t = terminal(self.d)
        i = 0
        try:
            while not self.stop_flag.is_set():
                f = {"t": "0200", "2": CARDS[i % len(CARDS)], "3": "000000", "4": f"{AMOUNT_MINOR:012d}",
                     "7": utc_stamp(), "11": next_stan(), "41": TERMINALS[self.merchant].ljust(8),
                     "42": self.merchant.ljust(15), "49": "156"}
                sent = time.monotonic()
                resp = t.call(f)
                self.done.append((sent, time.monotonic(), resp.get("37", ""), resp["39"]))
                i += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))
        finally:
            t.close()


def _eod(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return d.cli("eod", "run", "--json", "--dir", str(d.workdir / "settlement"), *args, check=False)


def test_cut_over_under_load(busy: Daemon) -> None:
    d = busy
    stop = threading.Event()
    merchants = list(MERCHANTS)[:LOAD_THREADS]
    loads = [Load(d, m, stop) for m in merchants]
    try:
        for ld in loads:
            ld.start()
        # Traffic on every connection before the cut-over (a thread that failed ends the wait;
        # its errors are reported below)...
        _until(lambda: all(len(ld.done) >= 2 or ld.errors for ld in loads),
               "every load thread has two answers")
        eod_started = time.monotonic()
        res = _eod(d)
        eod_finished = time.monotonic()
        # ... and after it: at least one request sent once the run had finished.
        _until(lambda: any(sent > eod_finished for ld in loads for sent, *_ in ld.done)
               or any(ld.errors for ld in loads), "an answer to a request sent after the eod run")
    finally:
        stop.set()
        for ld in loads:
            ld.join(20)
    assert not any(ld.is_alive() for ld in loads), "a load thread did not stop"
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    day = dt.date.fromisoformat(report["business_date"])
    assert all(not ld.errors for ld in loads), [ld.errors for ld in loads]
    answered = [(m, x) for m, ld in zip(merchants, loads, strict=True) for x in ld.done]
    assert answered and all(code == "00" for _, (_, _, _, code) in answered), {c for _, (*_, c) in answered}
    # Both sides of the cut-over saw traffic: every connection before it, someone after it.
    assert all(sum(got < eod_started for _, got, _, _ in ld.done) >= 2 for ld in loads)
    assert any(sent > eod_finished for _, (sent, *_) in answered), "no request after the cut-over"

    async def journals(conn: asyncpg.Connection) -> dict[str, tuple[int, dt.date]]:
        rows = await conn.fetch("SELECT rrn, journal_id, business_date FROM loyalty.transactions "
                                "WHERE txn_type = 'earn' AND journal_id IS NOT NULL")
        return {r["rrn"]: (r["journal_id"], r["business_date"]) for r in rows}

    posted = db_run(d.dsn, journals)
    # No request lost, none posted twice: one journal per approved response.
    assert sorted(posted) == sorted(rrn for _, (_, _, rrn, _) in answered)
    nxt = day + dt.timedelta(days=1)
    assert {bd for _, bd in posted.values()} == {day, nxt}
    # The cut-over is a line in journal order: everything of the day before everything after.
    assert max(j for j, bd in posted.values() if bd == day) < min(j for j, bd in posted.values() if bd == nxt)
    for _m, (sent, got, rrn, _) in answered:
        if got < eod_started:
            assert posted[rrn][1] == day, rrn
        if sent > eod_finished:
            assert posted[rrn][1] == nxt, rrn
    # The day's clearing counts exactly the day's requests (1 point each at M0001, 2 at M0002, ...).
    summary = json.loads((d.workdir / "settlement" / day.isoformat() / "summary.json").read_text())
    got_figures = {m["merchant_id"]: m for m in summary["merchants"]}
    for m in merchants:
        _, num, den, fees = MERCHANTS[m]
        n = sum(1 for mm, (_, _, rrn, _) in answered if mm == m and posted[rrn][1] == day)
        assert got_figures[m]["issue_count"] == n
        assert got_figures[m]["points_issued"] == n * (AMOUNT_MINOR * num // (den * 100))
        assert got_figures[m]["fees_minor"] == n * (AMOUNT_MINOR * fees["default"] // 10_000)
    assert report["ok"], report["recon"]


def _hold_lock(dsn: str, held: threading.Event, release: threading.Event) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", EOD_LOCK_KEY)
            held.set()
            await asyncio.to_thread(release.wait, 30)
            await conn.execute("SELECT pg_advisory_unlock($1)", EOD_LOCK_KEY)
        finally:
            await conn.close()

    asyncio.run(body())


def _tried_lock(dsn: str) -> bool:
    """True when another session of this database last ran ``pg_try_advisory_lock`` (an eod run waiting)."""

    async def body(conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE 'SELECT pg_try_advisory_lock%'"))

    return bool(db_run(dsn, body))


def test_two_eod_runs_never_overlap(busy: Daemon) -> None:
    d = busy
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(d.dsn, held, release), daemon=True)
    holder.start()
    assert held.wait(10)
    refused = _eod(d)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "another eod run holds the end-of-day lock" in refused.stderr
    # A bounded wait: it gets the lock once the holder lets go, and not before.
    result: list[subprocess.CompletedProcess[str]] = []
    waiter = threading.Thread(target=lambda: result.append(_eod(d, "--wait-s", "15")), daemon=True)
    waiter.start()
    try:
        # ledger.eod polls pg_try_advisory_lock (a failed try leaves no waiting entry in
        # pg_locks): the waiter's session having run it while the lock is held means it
        # was refused and is waiting. The refused run above ended on another query.
        _until(lambda: _tried_lock(d.dsn) or not waiter.is_alive(), "the second eod run tries the lock", 15)
        assert waiter.is_alive() and not result, f"the waiting run ended while the lock was held: {result}"
    finally:
        release.set()
        holder.join(10)
        waiter.join(60)
    assert not waiter.is_alive() and not holder.is_alive()
    waited = result[0]
    assert waited.returncode == 0, waited.stdout + waited.stderr
    closed = dt.date.fromisoformat(json.loads(waited.stdout)["business_date"])

    # Two started together for the same day: both may succeed one after the other, or the
    # second refuses; either way every settlement journal is posted once.
    cmd = [SWITCHD, "--config", str(d.config_path), "eod", "run", "--date",
           (closed + dt.timedelta(days=1)).isoformat(), "--json", "--dir", str(d.workdir / "settlement")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=d.env)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 3]), (codes, outs)

    async def settlements(conn: asyncpg.Connection) -> list[int]:
        rows = await conn.fetch("SELECT count(*) AS n FROM ledger.journals WHERE idempotency_key LIKE 'settle:%' "
                                "GROUP BY idempotency_key")
        return [int(r["n"]) for r in rows]

    assert all(n == 1 for n in db_run(d.dsn, settlements))
    assert Path(d.workdir / "settlement").is_dir()
