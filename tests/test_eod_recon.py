"""Reconciliation on a healthy cleared day (passes), then on deliberately corrupted copies.

The day is driven through ``ledger.loyalty.Loyalty`` directly with a receipt
function that stores a response the way the switch does (one per request, in
the posting's transaction). Each corruption is made through a superuser
connection (triggers off where the books refuse the change), checked to fail
its check naming the culprit, and undone before the next.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import asyncpg
from fixtures_daemon import SWITCHD
from ledger_support import ledger_settings

from ledger import batches, eod, reconcile
from ledger.commands import Leg, hold
from ledger.engine import Ledger, Receipt
from ledger.loyalty import Loyalty, Outcome, Request, TxnType
from ledger.loyalty.demo import demo_pan, seed
from switch.handlers.responses import response_code


def _receipt_for(key: str):  # type: ignore[no-untyped-def]
    def build(outcome: Outcome) -> Receipt:
        body = {"v": 1, "fields": {"39": response_code(outcome.reason), "t": "0210"}}
        return Receipt(f"iso:{key}", b"h" * 32, json.dumps(body).encode())

    return build


class Driver:
    def __init__(self, loyalty: Loyalty) -> None:
        self.loyalty, self.n = loyalty, 0

    async def __call__(self, t: TxnType, tid: str, mid: str, pan: str, amount: int, receipt: bool = True,
                       **kw: str) -> Outcome:
        self.n += 1
        key = f"{tid}|{self.n:06d}|0101000000"
        req = Request(key=key, terminal_id=tid, merchant_id=mid, pan=pan, amount=amount, rrn=f"R{self.n:011d}",
                      stan=f"{self.n:06d}", currency=None if t in (TxnType.REDEEM, TxnType.TOPUP) else "156", **kw)
        out = await self.loyalty.execute(t, req, _receipt_for(key) if receipt else None)
        assert out.approved, out
        return out


def _recon_cli(dsn: str, day: dt.date) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHD, "recon", "run", "--date", day.isoformat()], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "SWITCHD_DSN": dsn})


def _failing(report: reconcile.ReconReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report.problems:
        out.setdefault(p.check, []).append(p.detail)
    return out


async def test_recon_healthy_then_each_corruption_named(pool: asyncpg.Pool, db_dsn: str, tmp_path: Path) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await seed(conn)
        for tid, mid in (("T0000001", "M0001"), ("T0000002", "M0002"), ("T0000003", "M0003")):
            await conn.execute("INSERT INTO switch.terminals(terminal_id, merchant_id) VALUES ($1, $2)", tid, mid)
    p1, p2 = demo_pan(1), demo_pan(2)
    async with Ledger(pool, ledger_settings()) as led:
        drive = Driver(Loyalty(led, pool))
        await drive(TxnType.EARN, "T0000001", "M0001", p1, 25_000)
        await drive(TxnType.REDEEM, "T0000002", "M0002", p1, 70, account="65")
        await drive(TxnType.LOAD, "T0000003", "M0003", p2, 9_000, account="60")
        await drive(TxnType.SV_PURCHASE, "T0000003", "M0003", p2, 4_000, account="60")
        await drive(TxnType.TOPUP, "T0000002", "M0002", p2, 300, account="65")
        async with pool.acquire() as conn:
            host = await batches.host_totals(conn, "T0000001")
            closed = await batches.settle(conn, "T0000001", "M0001", "000001", host, "iso:T0000001:close")
            assert closed.in_balance
        day = (await eod.run(pool, None, tmp_path, ledger_settings=ledger_settings())).business_date
        healthy = await reconcile.run(pool, day)
        assert healthy.ok and healthy.cleared, healthy.problems
        assert "clearing_nets_to_zero" in healthy.checks

        # 1. A cached balance edited behind the ledger's back.
        member = await pool.fetchval("SELECT id FROM ledger.accounts WHERE owner_kind='card' AND purpose='points' "
                                     "ORDER BY id LIMIT 1")
        await pool.execute("UPDATE ledger.accounts SET posted = posted + 7 WHERE id = $1", member)
        bad = _failing(await reconcile.run(pool, day))
        assert any(f"id={member}" in d for d in bad["cached_balance_equals_entries"])
        assert "asset_sums_to_zero" in bad
        cli = await asyncio.to_thread(_recon_cli, db_dsn, day)
        assert cli.returncode == 1 and "FAIL  cached_balance_equals_entries" in cli.stdout
        assert f"id={member}" in cli.stdout
        await pool.execute("UPDATE ledger.accounts SET posted = posted - 7 WHERE id = $1", member)

        # 2. A second stored response claiming an existing journal.
        jid = await pool.fetchval("SELECT journal_id FROM loyalty.transactions WHERE txn_type='earn'")
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO ledger.receipts(idempotency_key, content_hash, payload, journal_id) "
                               "VALUES ('iso:EVIL', '\\x00', '{}', $1)", jid)
            bad = _failing(await reconcile.run(conn, day))
            assert any(f"journal_id={jid}" in d and "iso:EVIL" in d for d in bad["receipt_has_one_journal"])
            assert any(f"journal_id={jid}" in d and "requests=2" in d for d in bad["journal_has_one_request"])
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("DELETE FROM ledger.receipts WHERE idempotency_key = 'iso:EVIL'")
            await conn.execute("SET session_replication_role = origin")

        # 3. A financial journal nobody asked for (no stored request), on the open day.
        ghost = await drive(TxnType.EARN, "T0000001", "M0001", p2, 1_000, receipt=False)
        bad = _failing(await reconcile.run(pool, day + dt.timedelta(days=1)))
        assert any(f"journal_id={ghost.journal_id}" in d and "requests=0" in d
                   for d in bad["journal_has_one_request"])

        # 4. A closed batch whose recorded terminal totals no longer match the host's.
        await pool.execute("UPDATE eod.terminal_batches SET terminal_credit_amount = terminal_credit_amount + 1 "
                           "WHERE id = $1", closed.batch_id)
        bad = _failing(await reconcile.run(pool, day))
        assert any(f"batch_id={closed.batch_id}" in d and "terminal_id=T0000001" in d
                   for d in bad["batch_totals_match"])
        await pool.execute("UPDATE eod.terminal_batches SET terminal_credit_amount = terminal_credit_amount - 1 "
                           "WHERE id = $1", closed.batch_id)

        # 5. A merchant's stored net changed (fees moved to keep the row's own CHECK happy).
        await pool.execute("UPDATE eod.clearing_merchants SET net_minor = net_minor + 5, fees_minor = fees_minor - 5 "
                           "WHERE business_date = $1 AND merchant_id = 'M0003'", day)
        bad = _failing(await reconcile.run(pool, day))
        assert all("merchant_id=M0003" in d or "asset=CNY" in d for d in bad["clearing_nets_to_zero"])
        assert any("settled_net_differs" in d for d in bad["clearing_nets_to_zero"])
        assert any("figures_differ" in d for d in bad["clearing_nets_to_zero"])
        assert any("merchants_and_operator_not_zero" in d for d in bad["clearing_nets_to_zero"])
        await pool.execute("UPDATE eod.clearing_merchants SET net_minor = net_minor - 5, fees_minor = fees_minor + 5 "
                           "WHERE business_date = $1 AND merchant_id = 'M0003'", day)

        # 6. A settlement journal's entries on a clearing account tampered with (triggers off).
        sj = await pool.fetchval("SELECT journal_id FROM eod.clearing_merchants WHERE business_date=$1 "
                                 "AND merchant_id='M0002'", day)
        async with pool.acquire() as conn:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("UPDATE ledger.entries SET amount = amount + 1 WHERE journal_id = $1 AND leg = 2", sj)
            bad = _failing(await reconcile.run(conn, day))
            assert any("clearing_account_not_zero" in d and "merchant_id=M0002" in d
                       for d in bad["clearing_nets_to_zero"])
            assert any(f"journal_id={sj}" in d for d in bad["journals_balance"])
            await conn.execute("UPDATE ledger.entries SET amount = amount - 1 WHERE journal_id = $1 AND leg = 2", sj)
            await conn.execute("SET session_replication_role = origin")

        # 7. A hold left pending long past its bound (the sweeper never ran).
        a, b = await pool.fetchval("SELECT sv_float_account_id FROM loyalty.currencies"), await pool.fetchval(
            "SELECT memo_a_account_id FROM loyalty.currencies")
        held = await led.post(hold("stale-hold", Leg(a, b, 5), timeout_s=60))
        assert held.ok
        async with pool.acquire() as conn:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("UPDATE ledger.holds SET expires_at = now() - interval '1 hour' WHERE id = $1",
                               held.journal_id)
            await conn.execute("SET session_replication_role = origin")
        bad = _failing(await reconcile.run(pool, day))
        assert list(bad) == ["holds_within_bound"], bad
        assert f"hold_id={held.journal_id}" in bad["holds_within_bound"][0]
