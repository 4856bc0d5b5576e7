"""Migrations (fresh, re-run, newer-schema refusal), configuration errors, embedded cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest
from fixtures_daemon import SWITCHD

from ledger import db as ledger_db
from ledger import migrate
from ledger.embedded import EmbeddedPostgres, find_pg_bin
from switch.config import ConfigError, load_config, parse_config


def _cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([SWITCHD, *args], capture_output=True, text=True, env=full_env, timeout=timeout_s,
                          check=False)


async def test_upgrade_fresh_rerun_and_newer_refused(empty_db_dsn: str) -> None:
    conn = await ledger_db.connect(empty_db_dsn)
    try:
        applied = await migrate.upgrade(conn)
        assert [m.version for m in applied if isinstance(m, migrate.Migration)] == [m.version for m in migrate.discover()]
        assert await migrate.upgrade(conn) == []
        await migrate.check_current(conn)
        statuses = await migrate.status(conn)
        assert all(s.applied for s in statuses)
        # An applied migration edited afterwards is refused, and shown as such.
        await conn.execute("UPDATE public.switchd_schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(migrate.MigrationError, match="changed after they were applied"):
            await migrate.check_current(conn)
        assert [s.modified for s in await migrate.status(conn)][0] is True
        await conn.execute("UPDATE public.switchd_schema_migrations SET checksum = $1 WHERE version = 1",
                           migrate.discover()[0].checksum)
        await migrate.check_current(conn)
        await conn.execute(
            "INSERT INTO public.switchd_schema_migrations(version, name, checksum) VALUES (999, 'future', 'x')"
        )
        with pytest.raises(migrate.MigrationError, match="newer than this code"):
            await migrate.upgrade(conn)
        with pytest.raises(migrate.MigrationError, match="newer"):
            await migrate.check_current(conn)
    finally:
        await conn.close()
    # The CLI says the same in one line, with a non-zero exit.
    res = _cli("db", "upgrade", env={"SWITCHD_DSN": empty_db_dsn})
    assert res.returncode != 0
    assert res.stderr.strip().count("\n") == 0 and "newer than this code" in res.stderr


def test_cli_upgrade_and_status(empty_db_dsn: str) -> None:
    env = {"SWITCHD_DSN": empty_db_dsn}
    first = _cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001 ledger" in first.stdout
    second = _cli("db", "upgrade", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout
    status = _cli("db", "status", "--json", env=env)
    assert status.returncode == 0 and '"applied": true' in status.stdout


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[ledger]\nbatch_size_max = 0\n", "config: ledger.batch_size_max: must be between 1 and 10000, got 0"),
        ("[ledger]\nbatch_size = 5\n", "config: ledger.batch_size: unknown key"),
        ("[ledger]\nbatch_size_max = 'many'\n", "config: ledger.batch_size_max: expected an integer, got 'many'"),
        ("[metrics]\nenabled = 1\n", "config: metrics.enabled: expected true or false, got 1"),
        ("[nonsense]\n", "config: nonsense: unknown section"),
        ("[database]\npool_size_min = 20\npool_size_max = 5\n", "config: database.pool_size_min: must be <="),
        ("[database]\ncoalesced_inflight_max = 0\n",
         "config: database.coalesced_inflight_max: must be between 1 and 16, got 0"),
        ("[[listeners]]\nname = 'a'\nframing = 'xml'\n", "config: listeners[0].framing: must be one of nac2, ascii4"),
        ("[[listeners]]\nname = 'a'\n[[listeners]]\nname = 'a'\nport = 9\n", "listeners[1].name: duplicate"),
        ("[[listeners]]\nname = 'a'\ntls_cert_file = 'x.pem'\n", "listeners[0].tls_key_file: TLS needs both"),
        ("[daemon\n", "invalid TOML"),
    ],
)
def test_invalid_config_is_one_clear_line(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "switchd.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    res = _cli("--config", str(path), "serve", timeout_s=30)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr


def test_env_overrides_and_bad_env() -> None:
    cfg = parse_config({}, {"SWITCHD_DSN": "postgresql://x/y", "SWITCHD_METRICS_PORT": "9999"})
    assert cfg.database.dsn == "postgresql://x/y" and cfg.metrics.port == 9999
    with pytest.raises(ConfigError, match="SWITCHD_METRICS_PORT .*expected an integer"):
        parse_config({}, {"SWITCHD_METRICS_PORT": "lots"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/switchd.toml", env={})


def test_example_config_names_exactly_the_schemas_keys_with_their_defaults() -> None:
    from switch import config as C

    example = Path(__file__).resolve().parent.parent / "config" / "switchd.toml"
    load_config(example, env={})
    raw = tomllib.loads(example.read_text())
    assert set(raw) == set(C.SECTIONS) | {"listeners"}
    for section, (schema, _cls) in C.SECTIONS.items():
        assert raw[section] == {key: default for key, (_kind, default, _check) in schema.items()}, section
    listener_defaults = {key: default for key, (_kind, default, _check) in C.LISTENER_SCHEMA.items()}
    assert raw["listeners"] == [listener_defaults | item for item in C.DEFAULT_LISTENERS]
    # Types as the schema says (a float default written 10 would read as an int).
    for section, (schema, _cls) in C.SECTIONS.items():
        for key, (kind, _default, _check) in schema.items():
            assert type(raw[section][key]) is kind, f"{section}.{key}"


@pytest.mark.db  # a PostgreSQL cluster of its own, without the database fixtures
@pytest.mark.skipif(find_pg_bin() is None, reason="no PostgreSQL server binaries on this machine")
async def test_embedded_cluster_starts_and_stops() -> None:
    state = Path(tempfile.mkdtemp(prefix="swe", dir="/tmp"))
    os.chmod(state, 0o755)
    emb = EmbeddedPostgres(state, port=6400 + os.getpid() % 500)
    try:
        dsn = emb.start()
        conn = await ledger_db.connect(dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "switchd"
            await migrate.upgrade(conn)
        finally:
            await conn.close()
        assert (state / "pg" / "data" / "PG_VERSION").exists()
    finally:
        emb.stop()
        shutil.rmtree(state, ignore_errors=True)
