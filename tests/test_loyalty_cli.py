"""The provisioning CLI against a real database (click's CliRunner, SWITCHD_DSN)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

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


def test_program_merchant_card_lifecycle(run) -> None:  # type: ignore[no-untyped-def]
    r = run("program", "add", "GOLD", "--name", "Gold", "--kind", "alliance", "--issue-price-minor", "2",
            "--redeem-value-minor", "1")
    assert r.exit_code == 0, r.output
    r = run("program", "lottery", "GOLD", "--price", "10", "--prize", "NONE:0:9", "--prize", "TOP:50:1")
    assert r.exit_code == 0, r.output
    shown = json.loads(run("program", "show", "GOLD", "--json").output)
    assert shown["lottery_price_points"] == 10 and len(shown["lottery_prizes"]) == 2
    assert run("merchant", "add", "SHOP1", "--name", "Shop", "--program", "GOLD", "--earn-rate", "3/2",
               "--fee-bps", "50", "--fee-bps", "redeem=20").exit_code == 0
    m = json.loads(run("merchant", "show", "SHOP1", "--json").output)
    assert (m["earn_rate"], m["fee_bps"], m["status"]) == ("3/2", {"default": 50, "redeem": 20}, "active")
    assert run("merchant", "disable", "SHOP1").exit_code == 0
    assert json.loads(run("merchant", "list", "--json").output)[0]["status"] == "disabled"
    pan = demo_pan(7)
    r = run("card", "issue", pan, "--expiry", "3001", "--name", "Ann")
    assert r.exit_code == 0 and "621234******0076" in r.output and pan not in r.output  # masked even here
    r = run("card", "show", pan, "--json")
    card = json.loads(r.output)
    assert card["pan"] == pan[:6] + "******" + pan[-4:] and pan not in r.output
    assert run("card", "block", pan).exit_code == 0
    assert json.loads(run("card", "show", pan, "--json").output)["status"] == "blocked"
    assert run("card", "unblock", pan).exit_code == 0
    assert "GOLD" in run("program", "list").output


@pytest.mark.parametrize("args, message", [
    (("program", "add", "G", "--name", "x", "--kind", "alliance", "--issue-price-minor", "1",
      "--redeem-value-minor", "1"), "program code"),
    (("program", "add", "GOLD", "--name", "x", "--kind", "alliance", "--issue-price-minor", "1",
      "--redeem-value-minor", "1", "--currency", "999"), "unknown currency"),
    (("merchant", "add", "M1", "--name", "x", "--program", "NOPE", "--earn-rate", "1"), "no program NOPE"),
    (("merchant", "add", "M1", "--name", "x", "--program", "NOPE", "--earn-rate", "abc"), "earn rate"),
    (("card", "issue", "4111111111111111"), "BIN"),
    (("card", "issue", demo_pan(1)[:-1] + str((int(demo_pan(1)[-1]) + 1) % 10)), "Luhn"),
    (("card", "show", demo_pan(1)), "no card"),
    (("program", "lottery", "GOLD", "--price", "10", "--prize", "bad"), "CODE:POINTS:WEIGHT"),
    (("program", "lottery", "GOLD", "--price", "10", "--prize", "JACKPOT:1:99999999999"), "weight must be"),
    (("program", "lottery", "GOLD", "--price", "10", "--prize", f"JACKPOT:{2**63}:1"), "points must be at most"),
    # Digits of other scripts pass str.isdigit() but not int(): refused, never a traceback.
    (("program", "lottery", "GOLD", "--price", "10", "--prize", "GOLD:\u2460:1"), "CODE:POINTS:WEIGHT"),
    (("merchant", "add", "M1", "--name", "x", "--program", "GOLD", "--earn-rate", "1", "--fee-bps",
      "earn=\u2461"), "basis points"),
    (("card", "issue", "\u2460\u2461\u2462\u2463\u2464\u2465\u2466\u2467\u2468\u2460\u2461\u2462\u2463"),
     "12..19 digits"),
    (("card", "issue", "\uff16\uff12\uff11\uff12\uff13\uff14\uff10\uff10\uff10\uff10\uff10\uff10\uff10"
      "\uff10\uff10\uff10"), "12..19 digits"),
])
def test_bad_arguments_are_one_line_and_nonzero(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code != 0
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], r.output


def test_nothing_half_created(run) -> None:  # type: ignore[no-untyped-def]
    assert run("program", "add", "HOST", "--name", "h", "--kind", "hosted", "--issue-price-minor", "1",
               "--redeem-value-minor", "1").exit_code == 0
    assert run("merchant", "add", "A1", "--name", "a", "--program", "HOST", "--earn-rate", "1").exit_code == 0
    r = run("merchant", "add", "A2", "--name", "a", "--program", "HOST", "--earn-rate", "1")
    assert r.exit_code != 0 and "hosted" in r.output
    assert [m["merchant_id"] for m in json.loads(run("merchant", "list", "--json").output)] == ["A1"]


def test_demo_seed(run) -> None:  # type: ignore[no-untyped-def]
    r = run("demo", "seed")
    assert r.exit_code == 0, r.output
    assert r.output.count("terminal") == 3 and r.output.count("card") == 10
    assert demo_pan(1) not in r.output and demo_pan(1)[-4:] in r.output
    assert run("demo", "seed").exit_code != 0  # once only, nothing half-created
    assert len(json.loads(run("merchant", "list", "--json").output)) == 3
    assert len(json.loads(run("program", "list", "--json").output)) == 2


def test_program_expiry_and_residual_commands(run) -> None:  # type: ignore[no-untyped-def]
    r = run("program", "add", "GOLD", "--name", "Gold", "--kind", "alliance", "--issue-price-minor", "2",
            "--redeem-value-minor", "1", "--points-expiry-months", "24")
    assert r.exit_code == 0, r.output
    shown = json.loads(run("program", "show", "GOLD", "--json").output)
    assert (shown["points_expiry_months"], shown["residual_policy"], shown["residual_grace_days"]) == (
        24, "liability", 90)
    r = run("program", "update", "GOLD", "--no-points-expiry", "--residual-policy", "breakage",
            "--residual-grace-days", "30")
    assert r.exit_code == 0 and "updated" in r.output, r.output
    shown = json.loads(run("program", "show", "GOLD", "--json").output)
    assert (shown["points_expiry_months"], shown["residual_policy"], shown["residual_grace_days"]) == (
        None, "breakage", 30)
    both = run("program", "update", "GOLD", "--points-expiry-months", "3", "--no-points-expiry")
    assert both.exit_code != 0 and "not both" in both.output
    assert run("program", "update", "NOPE", "--points-expiry-months", "3").exit_code == 4
    assert run("program", "update", "GOLD", "--points-expiry-months", "601").exit_code != 0
    assert json.loads(run("card", "residual", "--json").output) == []
