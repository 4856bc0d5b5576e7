"""Business-day cut-over, beancount/CSV export (checked by beancount itself), recon CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
from beancount import loader
from fixtures_daemon import BEAN_CHECK, SWITCHD
from ledger_support import ledger_settings

from ledger import accounts as A
from ledger import business_day as bday
from ledger import export
from ledger.commands import Leg, Status, transfer
from ledger.engine import Ledger


async def _chart(pool: asyncpg.Pool) -> dict[str, int]:
    await A.ensure_asset(pool, "PTS:GOLD", "points", 0)
    await A.ensure_asset(pool, "CNY", "money", 2)
    return {
        "op": await A.open_account(pool, "operator", "op", "PTS:GOLD", "debit", "none"),
        "m1": await A.open_account(pool, "member", "6212340000000001", "PTS:GOLD", "credit", "non_negative"),
        "m2": await A.open_account(pool, "member", "6212340000000002", "PTS:GOLD", "credit", "non_negative"),
        "float": await A.open_account(pool, "operator", "op", "CNY", "debit", "none", purpose="float"),
        "sv1": await A.open_account(pool, "member", "6212340000000001", "CNY", "credit", "non_negative"),
    }


async def test_cut_over_waits_for_in_flight_and_moves_new_posts(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    day = await bday.open_date(pool)
    async with Ledger(pool, ledger_settings()) as led:
        first = await led.post(transfer("d1", [Leg(c["op"], c["m1"], 10)]))
        assert first.business_date == day.isoformat()
        # An in-flight batch holds the day FOR SHARE; the cut-over must wait for it.
        async with pool.acquire() as inflight, pool.acquire() as eod:
            tx = inflight.transaction()
            await tx.start()
            await inflight.execute("SELECT open_date FROM ledger.business_day FOR SHARE")
            task = asyncio.create_task(bday.cut_over(eod, day))
            # Wait until the cut-over's session is queued behind the shared row lock (a lock not granted).
            eod_pid = eod.get_server_pid()
            deadline = time.monotonic() + 10
            while not await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1", eod_pid):
                assert not task.done(), "the cut-over did not wait for the in-flight batch"
                assert time.monotonic() < deadline, "the cut-over never queued for the business day"
                await asyncio.sleep(0.02)
            assert not task.done()
            await tx.commit()
            result = await asyncio.wait_for(task, 5)
        assert result.happened and result.opened == day + dt.timedelta(days=1)
        again = await pool.acquire()
        try:
            rerun = await bday.cut_over(again, day)
            assert not rerun.happened
            with pytest.raises(ValueError, match="not open yet"):
                await bday.cut_over(again, day + dt.timedelta(days=5))
        finally:
            await pool.release(again)
        second = await led.post(transfer("d2", [Leg(c["op"], c["m2"], 7)]))
        assert second.business_date == (day + dt.timedelta(days=1)).isoformat()


async def test_beancount_export_checks_and_matches_balances(pool: asyncpg.Pool, tmp_path: Path) -> None:
    c = await _chart(pool)
    day = await bday.open_date(pool)
    async with Ledger(pool, ledger_settings()) as led:
        for i, (d, cr, amt) in enumerate([("op", "m1", 500), ("m1", "m2", 120), ("float", "sv1", 12345)]):
            assert (await led.post(transfer(f"a{i}", [Leg(c[d], c[cr], amt)]))).status is Status.POSTED
        async with pool.acquire() as conn:
            await bday.cut_over(conn, day)
        assert (await led.post(transfer("b1", [Leg(c["m2"], c["m1"], 20)]))).status is Status.POSTED
    for d in (day, day + dt.timedelta(days=1)):
        text = await export.beancount(pool, d)
        entries, errors, _opts = loader.load_string(text)
        assert not errors, [str(e) for e in errors]
        assert entries
    # The balance assertions in the file are ours; beancount agreeing proves the figures.
    text = await export.beancount(pool, day)
    assert "balance Liabilities:Member" in text and "123.45 CNY" in text
    rows = (await export.csv_text(pool, day)).strip().splitlines()
    assert len(rows) == 1 + 6
    # bean-check, the accountants' tool, accepts the file too.
    path = tmp_path / "day.beancount"
    path.write_text(text)
    res = await asyncio.to_thread(subprocess.run, [BEAN_CHECK, str(path)], capture_output=True, text=True,
                                  timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def _switchd(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHD, *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "SWITCHD_DSN": dsn})


async def test_recon_passes_then_names_each_corruption(pool: asyncpg.Pool, db_dsn: str) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        await led.post(transfer("r1", [Leg(c["op"], c["m1"], 50)]))
        await led.post(transfer("r2", [Leg(c["float"], c["sv1"], 999)]))
    healthy = await asyncio.to_thread(_switchd, db_dsn, "recon", "run")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "FAIL" not in healthy.stdout

    # A superuser edits a cached balance behind the ledger's back.
    await pool.execute("UPDATE ledger.accounts SET posted = posted + 5 WHERE id = $1", c["m2"])
    bad = await asyncio.to_thread(_switchd, db_dsn, "recon", "run")
    assert bad.returncode == 1
    assert f"id={c['m2']}" in bad.stdout and "FAIL  asset_sums_to_zero" in bad.stdout
    assert "FAIL  cached_balance_equals_entries" in bad.stdout
    await pool.execute("UPDATE ledger.accounts SET posted = posted - 5 WHERE id = $1", c["m2"])

    # ... or rewrites an entry with the append-only triggers switched off.
    async with pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        jid = await conn.fetchval("SELECT id FROM ledger.journals WHERE idempotency_key = 'r1'")
        await conn.execute("UPDATE ledger.entries SET amount = amount + 1 WHERE journal_id = $1 AND leg = 2", jid)
        await conn.execute("SET session_replication_role = origin")
    bad = await asyncio.to_thread(_switchd, db_dsn, "recon", "run", "--json")
    assert bad.returncode == 1
    assert f"journal_id={jid}" in bad.stdout and '"journals_balance"' in bad.stdout
