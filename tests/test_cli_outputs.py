"""Every command's human output over a populated database: aligned text, never a Python repr."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result
from ledger_support import ledger_settings

from cli.main import root
from ledger import batches
from ledger.engine import Ledger, Receipt
from ledger.loyalty import Loyalty, Outcome, Request, TxnType
from ledger.loyalty.demo import demo_pan
from specs.vocabulary import receipt_key_of
from switch.handlers.responses import response_code

# What a repr looks like: Decimal('1'), datetime.date(...), None, {'k': ...}, ['a'], <Record ...>, <x object at>.
REPR = re.compile(r"Decimal\(|datetime\.|\bNone\b|\{'|\['|<Record|object at 0x")


def test_receipt_key_of() -> None:
    assert receipt_key_of("T0000001|000042|0101120000") == "iso:T0000001:000042:0101120000"
    assert receipt_key_of("no bars") is None


def _receipt_for(key: str):  # type: ignore[no-untyped-def]
    """Store the answer where the switch would (switch.dedup's key), so `txn show` finds it."""
    stored = receipt_key_of(key)
    assert stored is not None

    def build(outcome: Outcome) -> Receipt:
        body = {"v": 1, "fields": {"39": response_code(outcome.reason), "2": "6212340000000019", "52": "secret"}}
        return Receipt(stored, b"h" * 32, json.dumps(body).encode())

    return build


async def test_no_python_repr_in_any_output(pool: asyncpg.Pool, db_dsn: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHD_DSN", db_dsn)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    runner = CliRunner()

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(runner.invoke, root, list(args), obj={}, catch_exceptions=False)

    seeded = await run("demo", "seed")
    assert seeded.exit_code == 0, seeded.output
    p1, p2 = demo_pan(1), demo_pan(2)
    async with Ledger(pool, ledger_settings()) as led:
        loyalty = Loyalty(led, pool)
        for n, (t, tid, mid, pan, amount, kw) in enumerate([
            (TxnType.EARN, "T0000001", "M0001", p1, 25_000, {"currency": "156"}),
            (TxnType.REDEEM, "T0000002", "M0002", p2, 10**6, {"account": "65"}),  # declined: no points
            (TxnType.LOAD, "T0000003", "M0003", p2, 9_000, {"account": "60", "currency": "156"}),
        ], start=1):
            key = f"{tid}|{n:06d}|0101000000"
            req = Request(key=key, terminal_id=tid, merchant_id=mid, pan=pan, amount=amount, rrn=f"R{n:011d}",
                          stan=f"{n:06d}", **kw)
            await loyalty.execute(t, req, _receipt_for(key))
    async with pool.acquire() as conn:  # a batch out of balance: both sides and a difference to show
        await batches.settle(conn, "T0000001", "M0001", "000001", batches.Totals(2, 1, 0, 0), "iso:close:1")
    await pool.execute("INSERT INTO switch.terminals(terminal_id, merchant_id, mac_alg) VALUES ('T9', 'M9', NULL)")

    commands = [
        ("program", "list"), ("program", "show", "ALLY"), ("merchant", "list"), ("merchant", "show", "M0001"),
        ("card", "show", p1), ("card", "show", p2), ("terminal", "list"), ("terminal", "show", "T0000001"),
        ("terminal", "show", "T9"), ("bin", "list"), ("db", "status"), ("txn", "search"),
        ("txn", "show", "R00000000001"), ("txn", "show", "R00000000002"), ("batch", "show", "T0000001"),
        ("batch", "show", "T0000003"), ("stats",), ("stats", "--by", "merchant"), ("recon", "run"),
        ("ledger", "export", "--format", "csv"),
        ("eod", "run", "--dir", str(tmp_path)), ("recon", "run"), ("stats", "--by", "type"),
    ]
    for args in commands:
        r = await run(*args)
        assert r.exit_code == 0, (args, r.output)
        assert not REPR.search(r.output), (args, r.output)
        assert p1 not in r.output and p2 not in r.output and "secret" not in r.output, (args, r.output)
        if args[0] not in ("ledger", "eod"):  # eod run once only; export has --format instead
            json.loads((await run(*args, "--json")).output)
    shown = (await run("batch", "show", "T0000001")).output
    assert "difference" in shown and "credit" in shown
    declined = (await run("txn", "show", "R00000000002")).output
    assert "39=51" in declined, declined
