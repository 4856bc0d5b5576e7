"""Transactions by channel: ``switchd txn search --channel`` and ``switchd stats --by channel``."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from click.testing import CliRunner
from seat_support import approved, seeded

from cli.main import root
from ledger import business_day, search, stats
from ledger.loyalty.outcomes import Reason, TxnType


async def _cli(dsn: str, *args: str) -> dict[str, object]:
    # The CLI runs its own event loop: off this test's loop, in a thread.
    result = await asyncio.to_thread(CliRunner().invoke, root, ["--set", f"database.dsn={dsn}", *args, "--json"],
                                     obj={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


async def test_search_and_stats_by_channel(pool: asyncpg.Pool, db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHD_DSN", raising=False)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    async with seeded(pool) as world:
        web = approved(await world.take("earn", amount=1_000))
        pos = await world.pos(TxnType.EARN, amount=2_000)
        assert pos.reason is Reason.APPROVED
        day = await business_day.open_date(pool)

        found = await search.search(pool, search.Filters(channel="web"), 10)
        assert [t["rrn"] for t in found["transactions"]] == [web.rrn]
        by_channel = await stats.day_stats(pool, day, "channel")
        assert {g["grp"]: g["transactions"] for g in by_channel["groups"]} == {"terminal": 1, "web": 1}

        cli_found = await _cli(db_dsn, "txn", "search", "--channel", "terminal")
        assert [t["channel"] for t in cli_found["transactions"]] == ["terminal"]  # type: ignore[attr-defined]
        cli_stats = await _cli(db_dsn, "stats", "--by", "channel")
        assert cli_stats["by"] == "channel"
        assert [g["grp"] for g in cli_stats["groups"]] == ["terminal", "web"]  # type: ignore[attr-defined]
