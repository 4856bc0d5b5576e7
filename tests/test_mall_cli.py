"""``switchd mall orders|sweep`` against a real database (click's CliRunner, SWITCHD_DSN)."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest
from click.testing import CliRunner, Result
from mall_support import mall_world

from cli.main import root


@pytest.fixture
def run(db_dsn: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHD_DSN", db_dsn)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(root, list(args), obj={}, catch_exceptions=False)

    return invoke


def test_orders_are_listed_and_the_sweep_cancels_those_due(run, db_dsn: str) -> None:  # type: ignore[no-untyped-def]
    async def orders() -> tuple[int, int]:
        pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
        try:
            async with mall_world(pool, order_confirm_timeout_s=1) as m:
                await m.fund(points=500)
                good = await m.good(stock=3, points=100)
                due = await m.place(good)
                kept = await m.place(good)
                await m.mall.confirm(kept["id"], "M0001")
                return due["id"], kept["id"]
        finally:
            await pool.close()

    due, kept = asyncio.run(orders())
    listed = json.loads(run("mall", "orders", "--json").output)
    assert [(o["id"], o["status"]) for o in listed] == [(kept, "confirmed"), (due, "placed")]
    assert [o["id"] for o in json.loads(run("mall", "orders", "--status", "placed", "--json").output)] == [due]
    assert json.loads(run("mall", "orders", "--merchant", "M0002", "--json").output) == []
    assert "6212340000000019" not in run("mall", "orders").output
    time.sleep(1.1)  # the placed order's hold is due
    swept = run("mall", "sweep", "--json")
    assert swept.exit_code == 0, swept.output
    assert json.loads(swept.output) == {"orders_changed": 1}
    assert json.loads(run("mall", "orders", "--status", "cancelled", "--json").output)[0]["id"] == due
    assert run("mall", "sweep").output.strip() == "0 orders changed"
    checked = run("mall", "check")
    assert checked.exit_code == 0 and "every order agrees" in checked.output

    async def set_status(status: str) -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute("UPDATE loyalty.orders SET status = $2 WHERE id = $1", due, status)
        finally:
            await conn.close()

    asyncio.run(set_status("placed"))  # as if the row had not followed its hold's expiry
    behind = run("mall", "check", "--json")
    said = json.loads(behind.output[: behind.output.rindex("}") + 1])  # the JSON, then the one-line refusal
    assert behind.exit_code == 1 and said["orders_disagreeing"][0].startswith(
        f"id={due}, status=placed, hold_state=expired")
    asyncio.run(set_status("cancelled"))
