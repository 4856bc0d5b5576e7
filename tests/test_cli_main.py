"""The root group: --version, help everywhere, header rows, --set, and the exit-code rule (cli.exits)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from cli.exits import Exit
from cli.main import root
from ledger.loyalty.demo import demo_pan


@pytest.fixture
def run(db_dsn: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHD_DSN", db_dsn)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(root, list(args), obj={}, catch_exceptions=False)

    return invoke


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


ALL_COMMANDS = list(_commands(root))


def test_version_from_package_metadata() -> None:
    r = CliRunner().invoke(root, ["--version"])
    assert r.exit_code == 0 and r.output == "switchd 0.1.0\n"


def test_root_help_states_the_exit_codes() -> None:
    r = CliRunner().invoke(root, ["--help"])
    assert r.exit_code == 0
    for code in Exit:
        assert f"  {int(code)}  " in r.output
    assert "--set SECTION.KEY=VALUE" in r.output and "--version" in r.output


@pytest.mark.parametrize("path, command", ALL_COMMANDS, ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_every_group_and_command_has_help(path: tuple[str, ...], command: click.Command) -> None:
    assert (command.help or "").strip(), f"switchd {' '.join(path)} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"switchd {' '.join(path)} {param.opts[0]} has no help text"
    r = CliRunner().invoke(root, [*path, "--help"])
    assert r.exit_code == 0 and command.help.split()[0] in r.output


def test_every_group_is_registered() -> None:
    assert {p[0] for p, _ in ALL_COMMANDS} == {
        "batch", "bin", "card", "db", "demo", "eod", "exchange", "keys", "ledger", "mall", "member", "merchant", "portal", "program", "recon",
        "serve",
        "rate", "stats", "terminal", "txn", "user", "voucher", "report"}


LISTS = [
    (("program", "list"), "CODE"),
    (("merchant", "list"), "MERCHANT_ID"),
    (("terminal", "list"), "TERMINAL_ID"),
    (("bin", "list"), "PREFIX"),
    (("txn", "search"), "ID"),
    (("db", "status"), "VERSION"),
]


@pytest.mark.parametrize("args, first", LISTS, ids=[" ".join(a) for a, _ in LISTS])
def test_lists_print_a_header_row_and_keep_json(run, args: tuple[str, ...], first: str) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code == 0, r.output
    header = r.output.splitlines()[0].split()
    assert header[0] == first and all(h == h.upper() for h in header)
    r = run(*args, "--json")
    assert r.exit_code == 0
    json.loads(r.output)


@pytest.mark.parametrize("args", [
    ("program", "show", "NOPE"),
    ("program", "lottery", "NOPE", "--price", "1", "--prize", "A:1:1"),
    ("merchant", "show", "NOPE"),
    ("merchant", "disable", "NOPE"),
    ("merchant", "enable", "NOPE"),
    ("card", "show", demo_pan(1)),
    ("card", "block", demo_pan(1)),
    ("card", "unblock", demo_pan(1)),
    ("terminal", "show", "NOPE"),
    ("terminal", "disable", "NOPE"),
    ("terminal", "enable", "NOPE"),
    ("txn", "show", "999999999999"),
    ("bin", "remove", "999999"),
])
def test_not_found_exits_4_in_one_line(run, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code == Exit.NOT_FOUND, r.output
    assert r.stdout == "" and r.stderr.startswith("switchd: ") and r.stderr.count("\n") == 1
    assert demo_pan(1) not in r.stderr  # a PAN named on the command line comes back masked


@pytest.mark.parametrize("args", [
    ("nosuch",),
    ("program", "list", "--bogus"),
    ("terminal", "add", "T1"),  # --merchant is required
    ("stats", "--date", "yesterday"),
    ("txn", "search", "--from", "2026-13-01"),
    ("eod", "run", "--wait-s", "-1"),
])
def test_usage_errors_exit_2(run, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code == Exit.USAGE, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args, message", [
    (("program", "add", "G", "--name", "x", "--kind", "alliance", "--issue-price-minor", "1",
      "--redeem-value-minor", "1"), "program code"),
    (("card", "issue", "4111111111111111"), "BIN"),
    (("bin", "add", "12"), "4..11 digits"),
    (("txn", "search", "--response-code", "zz"), "no reason answers"),
])
def test_refusals_exit_1_in_one_line(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code == Exit.REFUSED, r.output
    assert r.stderr.count("\n") == 1 and message in r.stderr and r.stderr.startswith("switchd: ")


@pytest.mark.parametrize("setting, message", [
    ("ledger.batch_size_max=0", "ledger.batch_size_max"),
    ("nonsense", "nonsense"),
    ("listeners.nope.port=9000", "nope"),
    ("ledger.nokey=1", "ledger.nokey"),
])
def test_bad_set_is_a_usage_error_in_one_line(run, setting: str, message: str) -> None:  # type: ignore[no-untyped-def]
    r = run("--set", setting, "program", "list")
    assert r.exit_code == Exit.USAGE, r.output
    assert r.stderr.count("\n") == 1 and message in r.stderr


def test_set_reaches_the_configuration(db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHD_DSN", raising=False)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    obj: dict[str, object] = {}
    r = CliRunner().invoke(root, ["--set", f"database.dsn={db_dsn}", "--set", "listeners.pos.port=9100",
                                  "--set", "database.timeout_connect_s=7", "bin", "list", "--json"], obj=obj)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["prefix"] == "621234"
    cfg = obj["config"]
    assert cfg.database.timeout_connect_s == 7.0  # type: ignore[attr-defined]
    assert [(li.name, li.port) for li in cfg.listeners] == [("pos", 9100), ("mis", 8584)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", ["cli.exits", "cli.output", "ledger.loyalty.bins"])
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


def test_terminal_lifecycle_prints_one_line_each(run) -> None:  # type: ignore[no-untyped-def]
    assert run("terminal", "add", "T1", "--merchant", "M1").output == "added terminal T1 (merchant M1)\n"
    assert run("terminal", "disable", "T1").output == "disabled terminal T1\n"
    assert run("terminal", "enable", "T1").output == "enabled terminal T1\n"  # once, not twice
    r = run("terminal", "add", "T1", "--merchant", "M1")
    assert r.exit_code == Exit.REFUSED and r.stderr == "switchd: terminal T1 already exists\n"
    r = run("terminal", "add", "T2", "--merchant", "M1", "--mac-key", "00" * 16)
    assert r.exit_code == Exit.REFUSED and "--mac-alg and --mac-key go together" in r.stderr
