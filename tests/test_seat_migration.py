"""Migration 0013 (channels, terminal kinds) on a database that already has transactions and
terminals: nothing is rewritten, old rows read the defaults, and an existing terminal whose
id a web seat would take stops the upgrade with a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from ledger import db as ledger_db
from ledger import migrate

CHANNELS = 13


def _before(tmp_path: Path) -> Path:
    older = tmp_path / "migrations"
    older.mkdir()
    for m in migrate.discover():
        if m.version < CHANNELS:
            shutil.copy(m.path, older / m.path.name)
    return older


async def _at_version_12(dsn: str, tmp_path: Path, terminal_id: str) -> asyncpg.Connection:
    conn = await ledger_db.connect(dsn)
    await migrate.upgrade(conn, _before(tmp_path))
    await conn.execute("INSERT INTO switch.terminals(terminal_id, merchant_id) VALUES ($1, 'M0001')", terminal_id)
    await conn.execute(
        "INSERT INTO loyalty.transactions(idempotency_key, business_date, txn_type, reason, terminal_id) "
        "VALUES ('T0000001|000001|0101120000', current_date, 'inquiry', 'approved', $1)", terminal_id)
    return conn


async def test_channels_are_added_without_rewriting_the_transactions(empty_db_dsn: str, tmp_path: Path) -> None:
    conn = await _at_version_12(empty_db_dsn, tmp_path, "T0000001")
    try:
        files = {t: await conn.fetchval("SELECT pg_relation_filenode($1)", t)
                 for t in ("loyalty.transactions", "switch.terminals")}
        applied = await migrate.upgrade(conn)
        assert [m.version for m in applied if m.version <= CHANNELS] == [CHANNELS]  # and any later ones
        for table, filenode in files.items():
            assert await conn.fetchval("SELECT pg_relation_filenode($1)", table) == filenode, table
        row = await conn.fetchrow("SELECT channel, operator_ref FROM loyalty.transactions")
        assert tuple(row) == ("terminal", None)
        assert await conn.fetchval("SELECT kind FROM switch.terminals") == "pos"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE loyalty.transactions SET channel = 'fax'")
        await migrate.check_current(conn)
    finally:
        await conn.close()


async def test_a_terminal_holding_a_web_seat_id_stops_the_upgrade(empty_db_dsn: str, tmp_path: Path) -> None:
    conn = await _at_version_12(empty_db_dsn, tmp_path, "W0000042")
    try:
        with pytest.raises(asyncpg.RaiseError, match="reserved for web trading seats.*W0000042"):
            await migrate.upgrade(conn)
        assert await conn.fetchval("SELECT max(version) FROM public.switchd_schema_migrations") == CHANNELS - 1
    finally:
        await conn.close()
