"""tools/harness.py: the daemon harness the tests and the benchmarks share."""

from __future__ import annotations

import asyncio
import doctest
import socket
import tomllib
from pathlib import Path

import asyncpg
import pytest
from fixtures_daemon import MIS_LISTENER, POS_LISTENER, config_text

from tools import harness


def test_doctests() -> None:
    result = doctest.testmod(harness, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_rendered_config_is_the_toml_asked_for() -> None:
    text = harness.render_config(
        {"daemon": {"workers": 2, "timeout_drain_s": 5.0, "state_dir": "/tmp/x y"},
         "ledger": {"batches_inflight_max": harness.TomlText("3"), "mode": harness.TomlText('"fifo"')},
         "metrics": {"enabled": False}},
        [{"name": "pos", "port": 0, "tpdu": True}, {"name": "mis", "port": 0}])
    assert tomllib.loads(text) == {
        "daemon": {"workers": 2, "timeout_drain_s": 5.0, "state_dir": "/tmp/x y"},
        "ledger": {"batches_inflight_max": 3, "mode": "fifo"},
        "metrics": {"enabled": False},
        "listeners": [{"name": "pos", "port": 0, "tpdu": True}, {"name": "mis", "port": 0}],
    }


def test_the_tests_config_binds_every_port_free(tmp_path: Path) -> None:
    config = tomllib.loads(config_text(tmp_path, "postgresql://h/db", [POS_LISTENER, MIS_LISTENER],
                                       extra={"database": {"timeout_connect_s": 1.0}}))
    assert config["database"] == {"dsn": "postgresql://h/db", "pool_size_min": 1, "pool_size_max": 4,
                                  "timeout_connect_s": 1.0}
    assert config["metrics"]["port"] == 0 and all(lst["port"] == 0 for lst in config["listeners"])
    assert config["daemon"]["state_dir"] == str(tmp_path / "state")


def test_the_daemon_sees_no_switchd_setting_of_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SWITCHD_CONFIG", "SWITCHD_DSN", "SWITCHD_LOG_LEVEL", "SWITCHD_LISTENER_POS_PORT"):
        monkeypatch.setenv(name, "x")
    env = harness.daemon_env("ab" * 32, {"SWITCHD_LOG_LEVEL": "debug"})
    assert {k: v for k, v in env.items() if k.startswith("SWITCHD_")} == {
        "SWITCHD_MASTER_KEY": "ab" * 32, "SWITCHD_LOG_LEVEL": "debug"}


@pytest.mark.parametrize("name", ["", "Upper", 'x"; DROP DATABASE postgres; --', "a" * 64, "1st"])
def test_only_plain_database_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a database name"):
        asyncio.run(harness.drop_database("postgresql://127.0.0.1:9/postgres", name))


def test_free_ports_are_consecutive_and_free() -> None:
    base = harness.free_ports(3)
    for port in range(base, base + 3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    assert not harness.answers(base)


def test_a_daemon_that_cannot_start_says_why(tmp_path: Path) -> None:
    d = harness.Daemon(tmp_path, "this is not toml [", ready_timeout_s=20)
    with pytest.raises(harness.HarnessError, match="exited .* before ready"):
        d.start()
    assert not d.running and d.stop() == d.returncode != 0


def test_private_database_is_created_and_dropped(admin_dsn: str) -> None:
    async def exists(name: str) -> bool:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name))
        finally:
            await conn.close()

    with harness.private_database(admin_dsn, "switchd_h") as db:
        assert db.dsn == harness.with_database(admin_dsn, db.name)
        assert asyncio.run(exists(db.name))
    assert not asyncio.run(exists(db.name))
