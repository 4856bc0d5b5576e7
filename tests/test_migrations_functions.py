"""Function files (ledger/sql): applied after the migrations, again when changed, shown by status,
and required by the daemon's start-up check."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest
from fixtures_daemon import MASTER_KEY_HEX, POS_LISTENER, SWITCHD, write_config

from ledger import db as ledger_db
from ledger import migrate

# Every function of the schema, with its full definition (what CREATE OR REPLACE would change).
_DEFINITIONS = """
SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS sig,
       pg_get_functiondef(p.oid) AS def
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('ledger', 'loyalty', 'switch', 'eod')
 ORDER BY 1
"""


def _cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHD_DSN": dsn}
    env.pop("SWITCHD_CONFIG", None)
    return subprocess.run([SWITCHD, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


async def _definitions(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["sig"]: r["def"] for r in await conn.fetch(_DEFINITIONS)}


def _migrations_upto(tmp_path: Path, version: int) -> Path:
    """A copy of the shipped migrations up to ``version``: a database as older code left it."""
    d = tmp_path / f"migrations_{version:04d}"
    d.mkdir()
    for m in migrate.discover()[:version]:
        shutil.copy(m.path, d / m.path.name)
    return d


def _function_files_copy(tmp_path: Path) -> Path:
    d = tmp_path / "sql"
    shutil.copytree(migrate.FUNCTIONS_DIR, d)
    return d


def test_every_function_has_a_file_in_dependency_order() -> None:
    names = [f.name for f in migrate.discover_functions()]
    assert "ledger.post_batch" in names and "loyalty.standing" in names
    # Name order, but a file's requirements first (loyalty.maintain_lots needs loyalty.move_lots).
    position = {name: i for i, name in enumerate(names)}
    for f in migrate.discover_functions():
        assert f.path.name == f"{f.name}.sql"
        assert all(position[r] < position[f.name] for r in f.requires), f.name
    assert sorted(names) == sorted(set(names))


async def test_fresh_database_gets_migrations_then_functions(empty_db_dsn: str) -> None:
    conn = await ledger_db.connect(empty_db_dsn)
    try:
        done = await migrate.upgrade(conn)
        migrations = [m for m in done if isinstance(m, migrate.Migration)]
        functions = [f for f in done if isinstance(f, migrate.FunctionFile)]
        assert [m.version for m in migrations] == [m.version for m in migrate.discover()]
        assert done == migrations + functions  # functions after every migration
        assert [f.name for f in functions] == [f.name for f in migrate.discover_functions()]
        assert await migrate.upgrade(conn) == []  # idempotent
        await migrate.check_current(conn)
        assert {s.state for s in await migrate.function_status(conn)} == {"applied"}
        # One function per file: no function of the schema lacks one.
        signatures = await _definitions(conn)
        assert sorted(s.split("(")[0] for s in signatures) == sorted(f.name for f in functions)
    finally:
        await conn.close()


async def test_database_at_0010_upgrades_to_identical_functions_then_a_change_applies_once(
        empty_db_dsn: str, tmp_path: Path) -> None:
    conn = await ledger_db.connect(empty_db_dsn)
    try:
        # As code before function files left it: migrations 0001-0010, functions from them.
        old = _migrations_upto(tmp_path, 10)
        empty = tmp_path / "no_functions"
        empty.mkdir()
        assert len(await migrate.upgrade(conn, old, empty)) == 10
        before = await _definitions(conn)
        with pytest.raises(migrate.MigrationError, match="missing migrations"):
            await migrate.check_current(conn)

        done = await migrate.upgrade(conn)
        migrations = [d for d in done if isinstance(d, migrate.Migration)]
        assert migrations[0].label == "0011 function_files"
        assert {d.name for d in done if isinstance(d, migrate.FunctionFile)} == \
            {f.name for f in migrate.discover_functions()}
        # The files replace each function with itself, except where a later migration's feature
        # changed the function (0013: the journal trigger copies the channel and the operator;
        # 0017: a capture posts the legs it carries).
        changed_later = ("loyalty.record_journals(", "ledger.post_batch(")
        after = await _definitions(conn)
        assert {k: v for k, v in after.items() if k in before and not k.startswith(changed_later)} == \
            {k: v for k, v in before.items() if not k.startswith(changed_later)}
        await migrate.check_current(conn)

        # A change to post_batch is a change to one file: applied by the next upgrade, once.
        sql = _function_files_copy(tmp_path)
        path = sql / "ledger.post_batch.sql"
        path.write_text(path.read_text().replace("' does not exist';", "' does not exist (changed)';", 1))
        with pytest.raises(migrate.MigrationError, match=r"ledger\.post_batch \(changed\)"):
            await migrate.check_current(conn, functions_directory=sql)
        states = {s.name: s.state for s in await migrate.function_status(conn, sql)}
        assert states["ledger.post_batch"] == "changed"
        assert {v for k, v in states.items() if k != "ledger.post_batch"} == {"applied"}

        again = await migrate.upgrade(conn, functions_directory=sql)
        assert [d.label for d in again] == ["function ledger.post_batch"]
        assert await migrate.upgrade(conn, functions_directory=sql) == []
        await migrate.check_current(conn, functions_directory=sql)
        latest = after
        after = await _definitions(conn)
        changed = [k for k in after if after[k] != latest.get(k)]
        assert len(changed) == 1 and changed[0].startswith("ledger.post_batch(")
        assert "(changed)" in after[changed[0]]
        # Still one post_batch: CREATE OR REPLACE replaced it, added no overload.
        assert sum(k.startswith("ledger.post_batch(") for k in after) == 1
    finally:
        await conn.close()


async def test_requirements_order_the_files_and_bad_files_are_refused(empty_db_dsn: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_t.sql").write_text(
        "CREATE SCHEMA t;\n"
        "CREATE TABLE public.switchd_schema_functions (name text PRIMARY KEY, checksum text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now());\n")
    sql = tmp_path / "sql"
    sql.mkdir()
    # A SQL-language body is checked when created: a_outer fails unless z_inner exists already.
    (sql / "t.a_outer.sql").write_text(
        "-- requires: t.z_inner\n"
        "CREATE OR REPLACE FUNCTION t.a_outer() RETURNS integer LANGUAGE sql AS $$ SELECT t.z_inner() + 1 $$;\n")
    (sql / "t.z_inner.sql").write_text(
        "CREATE OR REPLACE FUNCTION t.z_inner() RETURNS integer LANGUAGE sql AS $$ SELECT 41 $$;\n")
    assert [f.name for f in migrate.discover_functions(sql)] == ["t.z_inner", "t.a_outer"]
    conn = await ledger_db.connect(empty_db_dsn)
    try:
        await migrate.upgrade(conn, migrations, sql)
        assert await conn.fetchval("SELECT t.a_outer()") == 42
    finally:
        await conn.close()

    (sql / "t.z_inner.sql").write_text("-- requires: t.a_outer\n" + (sql / "t.z_inner.sql").read_text())
    with pytest.raises(migrate.MigrationError, match="circular"):
        migrate.discover_functions(sql)
    (sql / "t.z_inner.sql").write_text("-- requires: t.nowhere\nCREATE OR REPLACE FUNCTION t.z_inner() x")
    with pytest.raises(migrate.MigrationError, match="t.nowhere, which has no file"):
        migrate.discover_functions(sql)
    (sql / "t.z_inner.sql").write_text("CREATE FUNCTION t.z_inner() RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    with pytest.raises(migrate.MigrationError, match="must say CREATE OR REPLACE FUNCTION t.z_inner"):
        migrate.discover_functions(sql)
    (sql / "t.z_inner.sql").unlink()
    (sql / "z_inner.sql").write_text("")
    with pytest.raises(migrate.MigrationError, match="schema.function.sql"):
        migrate.discover_functions(sql)


def test_cli_status_shows_function_files(empty_db_dsn: str) -> None:
    before = _cli("db", "status", dsn=empty_db_dsn)
    assert before.returncode == 0, before.stderr
    assert re.search(r"^func +pending +ledger\.post_batch ", before.stdout, re.M)
    up = _cli("db", "upgrade", dsn=empty_db_dsn)
    assert up.returncode == 0, up.stderr
    assert "applied 0011 function_files" in up.stdout and "applied function ledger.post_batch" in up.stdout
    assert up.stdout.index("0011") < up.stdout.index("function ledger.post_batch")
    assert "up to date" in _cli("db", "upgrade", dsn=empty_db_dsn).stdout

    async def forget(conn: asyncpg.Connection) -> None:
        await conn.execute("UPDATE public.switchd_schema_functions SET checksum = 'other' "
                           "WHERE name = 'loyalty.standing'")

    _run(empty_db_dsn, forget)
    after = _cli("db", "status", dsn=empty_db_dsn)
    assert re.search(r"^func +applied +ledger\.post_batch ", after.stdout, re.M)
    assert re.search(r"^func +CHANGED +loyalty\.standing ", after.stdout, re.M)
    rows = json.loads(_cli("db", "status", "--json", dsn=empty_db_dsn).stdout)
    functions = {r["function"]: r["state"] for r in rows if "function" in r}
    assert functions["loyalty.standing"] == "changed" and functions["ledger.post_batch"] == "applied"


def _run(dsn: str, fn: object) -> None:
    import asyncio

    async def main() -> None:
        conn = await ledger_db.connect(dsn)
        try:
            await fn(conn)  # type: ignore[operator]
        finally:
            await conn.close()

    asyncio.run(main())


def test_daemon_refuses_a_pending_function(empty_db_dsn: str, tmp_path: Path) -> None:
    assert _cli("db", "upgrade", dsn=empty_db_dsn).returncode == 0

    async def unapply(conn: asyncpg.Connection) -> None:
        await conn.execute("DELETE FROM public.switchd_schema_functions WHERE name = 'ledger.post_batch'")

    _run(empty_db_dsn, unapply)
    config = tmp_path / "switchd.toml"
    write_config(config, empty_db_dsn, [POS_LISTENER])
    env = {**os.environ, "SWITCHD_MASTER_KEY": MASTER_KEY_HEX}
    env.pop("SWITCHD_CONFIG", None)
    res = subprocess.run([SWITCHD, "--config", str(config), "serve"], capture_output=True, text=True,
                         env=env, timeout=60, check=False, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    failed = [json.loads(line) for line in (res.stdout + res.stderr).splitlines()
              if line.startswith("{") and "start_failed" in line]
    assert len(failed) == 1, res.stdout + res.stderr
    assert "ledger.post_batch (pending)" in failed[0]["reason"] and "switchd db upgrade" in failed[0]["reason"]
    # Once upgraded, the same check passes.
    assert "applied function ledger.post_batch" in _cli("db", "upgrade", dsn=empty_db_dsn).stdout
