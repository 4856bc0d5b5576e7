"""``switchd bin add|list|remove`` and ledger.loyalty.bins against a real database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from cli.exits import Exit
from cli.main import root
from ledger.loyalty.bins import BinError, parse_bins
from ledger.loyalty.rules import luhn_ok


@pytest.fixture
def run(db_dsn: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHD_DSN", db_dsn)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(root, list(args), obj={}, catch_exceptions=False)

    return invoke


def _pan_in(prefix: str, length: int = 16) -> str:
    body = prefix + "0" * (length - 1 - len(prefix))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _prefixes(run) -> list[str]:  # type: ignore[no-untyped-def]
    return [b["prefix"] for b in json.loads(run("bin", "list", "--json").output)]


@pytest.mark.parametrize("text, prefixes", [
    ("4000", ["4000"]),
    ("45678901234", ["45678901234"]),
    ("400000-400009", ["40000"]),
    ("400000-400019", ["40000", "40001"]),
    ("401000-402999", [str(n) for n in range(4010, 4030)]),
    ("400005-400012", ["400005", "400006", "400007", "400008", "400009", "400010", "400011", "400012"]),
    ("099998-100001", ["099998", "099999", "100000", "100001"]),
    (" 621234 ", ["621234"]),
])
def test_ranges_become_the_fewest_prefixes(text: str, prefixes: list[str]) -> None:
    assert parse_bins(text) == prefixes


@pytest.mark.parametrize("text, message", [
    ("123", "4..11 digits"), ("123456789012", "4..11 digits"), ("62x234", "4..11 digits"),
    ("\u0661\u0662\u0663\u0664", "4..11 digits"), ("621234-62124", "as many digits"),
    ("621239-621230", "low to high"), ("400000-409999-1", "4..11 digits"), ("10000-99999", "more than 100"),
    ("400000-499999", "more than 100"),  # the prefix 4 is shorter than a BIN may be
])
def test_malformed_bins_are_refused(text: str, message: str) -> None:
    with pytest.raises(BinError, match=message):
        parse_bins(text)


def test_add_list_remove(run) -> None:  # type: ignore[no-untyped-def]
    assert _prefixes(run) == ["621234"]  # the platform default (migration 0004)
    pan = _pan_in("40000")
    r = run("card", "issue", pan)
    assert r.exit_code == Exit.REFUSED and "outside the platform's BIN ranges" in r.stderr

    r = run("bin", "add", "400000-400009", "--description", "test range")
    assert r.exit_code == 0 and r.output == "added BIN 40000\n", r.output
    assert run("card", "issue", pan).exit_code == 0
    listed = run("bin", "list")
    assert listed.output.splitlines()[0].split() == ["PREFIX", "DESCRIPTION"]
    assert "40000   test range" in listed.output and "621234  platform default BIN" in listed.output
    assert json.loads(run("bin", "list", "--json").output)[0] == {"prefix": "40000", "description": "test range"}

    # Overlaps either way, duplicates, and a bad description: refused in one line, nothing added.
    for args, message in [(("4000000",), "BIN 4000000 overlaps BIN 40000"),
                          (("4000",), "BIN 4000 overlaps BIN 40000"),
                          (("40000",), "BIN 40000 already exists"),
                          (("399999-400000",), "BIN 400000 overlaps BIN 40000"),
                          (("5000", "--description", "x" * 81), "at most 80 characters")]:
        r = run("bin", "add", *args)
        assert r.exit_code == Exit.REFUSED and message in r.stderr and r.stderr.count("\n") == 1, r.output
    assert _prefixes(run) == ["40000", "621234"]

    # Remove: only what is there, all or nothing; issued cards stay.
    r = run("bin", "remove", "4000000")
    assert r.exit_code == Exit.NOT_FOUND and "no BIN 4000000 (BIN 40000 overlaps it)" in r.stderr
    assert run("bin", "add", "500000-500019").exit_code == 0
    assert _prefixes(run) == ["40000", "50000", "50001", "621234"]
    r = run("bin", "remove", "500000-500029")
    assert r.exit_code == Exit.NOT_FOUND and "no BIN 50002" in r.stderr
    assert _prefixes(run) == ["40000", "50000", "50001", "621234"]
    assert run("bin", "remove", "500000-500019").output == "removed BIN 50000, 50001\n"
    assert run("bin", "remove", "40000").exit_code == 0
    assert _prefixes(run) == ["621234"]
    assert run("card", "show", pan).exit_code == 0
    r = run("card", "issue", _pan_in("40000", 17))
    assert r.exit_code == Exit.REFUSED and "BIN" in r.stderr
