"""Configuration sources and their order: defaults < file < environment < overrides (--set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import DEFAULT_LISTENERS, LEDGER_SCHEMA, ConfigError, load_config, parse_config


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchd.toml"
    path.write_text(text)
    return path


def test_later_sources_win(tmp_path: Path) -> None:
    path = _file(tmp_path, "[metrics]\nport = 9000\n[ledger]\nretries_max = 5\n")
    env = {"SWITCHD_METRICS_PORT": "9100"}
    assert load_config(None, env={}).metrics.port == 9583
    assert load_config(path, env={}).metrics.port == 9000
    assert load_config(path, env=env).metrics.port == 9100
    cfg = load_config(path, env=env, overrides=["metrics.port=9200"])
    assert cfg.metrics.port == 9200
    assert cfg.ledger.retries_max == 5  # the file's, untouched by the rest
    assert cfg.ledger.batch_size_max == LEDGER_SCHEMA["batch_size_max"][1]  # the schema's default


def test_overrides_are_read_as_the_keys_type() -> None:
    cfg = parse_config({}, {}, overrides=[
        "metrics.enabled=false", "ledger.batch_linger_ms=2.5", "daemon.log_level=debug",
        "database.dsn=postgresql://h/db?sslmode=require", "listeners.mis.port=7000",
        "listeners.mis.sign_on_required=TRUE", "listeners.pos.timeout_idle_s=2",
    ])
    assert cfg.metrics.enabled is False
    assert cfg.ledger.batch_linger_ms == 2.5
    assert cfg.daemon.log_level == "debug"
    assert cfg.database.dsn == "postgresql://h/db?sslmode=require"  # only the first "=" splits
    pos, mis = cfg.listeners
    assert (mis.port, mis.sign_on_required) == (7000, True)
    assert pos.timeout_idle_s == 2.0 and isinstance(pos.timeout_idle_s, float)


def test_a_later_override_of_one_key_wins() -> None:
    assert parse_config({}, {}, overrides=["ledger.retries_max=1", "ledger.retries_max=2"]).ledger.retries_max == 2


def test_listeners_have_names_and_an_env_port_each() -> None:
    cfg = parse_config({}, {})
    assert [lc.name for lc in cfg.listeners] == ["pos", "mis"] == [d.get("name", "pos") for d in DEFAULT_LISTENERS]
    cfg = parse_config({}, {"SWITCHD_LISTENER_MIS_PORT": "18584", "SWITCHD_LISTENER_POS_PORT": "0"})
    assert [(lc.name, lc.port) for lc in cfg.listeners] == [("pos", 0), ("mis", 18584)]
    raw = {"listeners": [{"name": "pos_tpdu", "tpdu": True}]}
    assert parse_config(raw, {"SWITCHD_LISTENER_POS_TPDU_PORT": "9001"}).listeners[0].port == 9001
    # The environment wins over the file; --set over the environment.
    cfg = parse_config(raw, {"SWITCHD_LISTENER_POS_TPDU_PORT": "9001"}, overrides=["listeners.pos_tpdu.port=9002"])
    assert cfg.listeners[0].port == 9002


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"SWITCHD_LISTENER_POS_PORT": "many"}, [],
         "config: SWITCHD_LISTENER_POS_PORT (listeners.pos.port): expected an integer, got 'many'"),
        ({"SWITCHD_LISTENER_MIS_PORT": "70000"}, [],
         "config: SWITCHD_LISTENER_MIS_PORT (listeners.mis.port): must be between 0 and 65535, got 70000"),
        ({}, ["ledger.batch_size_max=abc"], "config: ledger.batch_size_max (--set): expected an integer, got 'abc'"),
        ({}, ["ledger.batch_size_max=0"], "config: ledger.batch_size_max (--set): must be between 1 and 10000, got 0"),
        ({}, ["ledger.batch_linger_ms=soon"], "config: ledger.batch_linger_ms (--set): expected a number, got 'soon'"),
        ({}, ["metrics.enabled=yes"], "config: metrics.enabled (--set): expected true or false, got 'yes'"),
        ({}, ["daemon.log_level=loud"], "config: daemon.log_level (--set): must be one of debug, info"),
        ({}, ["ledger.nope=1"], "config: ledger.nope (--set): unknown key"),
        ({}, ["nope.key=1"], "config: nope.key (--set): unknown section 'nope'"),
        ({}, ["listeners.pos.nope=1"], "config: listeners.pos.nope (--set): unknown key"),
        ({}, ["listeners.xyz.port=1"], "config: listeners.xyz.port (--set): no listener named 'xyz' (listeners: pos, mis)"),
        ({}, ["ledger.batch_size_max"], "config: --set 'ledger.batch_size_max': expected SECTION.KEY=VALUE"),
        ({}, ["listeners.port=1"], "expected SECTION.KEY=VALUE or listeners.NAME.KEY=VALUE"),
        ({}, ["ledger..x=1"], "expected SECTION.KEY=VALUE or listeners.NAME.KEY=VALUE"),
        ({}, ["listeners.pos.name=mis"], "config: listeners[1].name: duplicate listener name 'mis'"),
        ({}, ["listeners.pos.name=Pos"], "config: listeners[0].name: must be lower-case letters, digits or _"),
        ({}, ["database.pool_size_min=50"], "config: database.pool_size_min: must be <= database.pool_size_max"),
        ({}, ["listeners.mis.tpdu=true"], "config: listeners[1].tpdu: a TPDU is only defined for nac2 framing"),
    ],
)
def test_bad_environment_or_override_is_one_line_naming_the_key(env: dict[str, str], overrides: list[str],
                                                              message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, env, overrides=overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["POS", "pos-1", "", "pös"])
def test_listener_names_are_lower_case_letters_digits_and_underscores(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"config: listeners\[0\]\.name: must be lower-case letters, digits or _"):
        load_config(_file(tmp_path, f"[[listeners]]\nname = {name!r}\n"), env={})


def test_listeners_unnamed_in_the_file_clash() -> None:
    with pytest.raises(ConfigError, match=r"listeners\[1\]\.name: duplicate listener name 'pos'"):
        parse_config({"listeners": [{}, {"port": 9}]}, {})
