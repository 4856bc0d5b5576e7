"""``switchd voucher batch ...`` and ``switchd report revenue`` against a real database (CliRunner)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import root


@pytest.fixture
def run(db_dsn: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHD_DSN", db_dsn)
    monkeypatch.setenv("SWITCHD_MASTER_KEY", "ab" * 32)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(root, list(args), obj={}, catch_exceptions=False)

    return invoke


def test_batch_create_sell_show_suspend_and_revenue(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("demo", "seed").exit_code == 0
    today = dt.date.today()
    expires = (today + dt.timedelta(days=90)).isoformat()
    r = run("voucher", "batch", "create", "--program", "ALLY", "--points", "500", "--count", "5",
            "--price-minor", "450", "--expires", expires, "--out", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.output)
    path = Path(made["codes_file"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with path.open() as fh:
        codes = [row["code"] for row in csv.DictReader(fh)]
    assert len(codes) == 5
    batch = str(made["batch_id"])
    r = run("voucher", "batch", "sell", batch, "--to", "M0001")
    assert r.exit_code == 0 and "sold to M0001" in r.output, r.output
    shown = json.loads(run("voucher", "batch", "show", batch, "--json").output)
    assert (shown["status"], shown["buyer_merchant_id"], shown["card_count"]) == ("sold", "M0001", 5)
    listed = run("voucher", "batch", "list")
    assert listed.exit_code == 0 and "M0001" in listed.output
    for code in codes:  # no secret in any output
        assert code not in listed.output and code not in run("voucher", "batch", "show", batch).output
    assert run("voucher", "batch", "suspend", batch).exit_code == 0
    assert json.loads(run("voucher", "batch", "show", batch, "--json").output)["status"] == "suspended"

    r = run("report", "revenue", "--from", (today - dt.timedelta(days=2)).isoformat(),
            "--to", (today + dt.timedelta(days=2)).isoformat(), "--json")
    assert r.exit_code == 0, r.output
    totals = {t["kind"]: t["amount_minor"] for t in json.loads(r.output)["totals"]}
    assert totals == {"voucher_sales": 2250}
    human = run("report", "revenue", "--from", today.isoformat(), "--to", (today + dt.timedelta(days=2)).isoformat())
    assert human.exit_code == 0 and "voucher_sales" in human.output


@pytest.mark.parametrize("args, code, message", [
    (("voucher", "batch", "show", "999"), 4, "no voucher batch 999"),
    (("voucher", "batch", "suspend", "999"), 4, "no voucher batch 999"),
    (("voucher", "batch", "sell", "999", "--to", "M0001"), 1, "no batch 999"),
    (("voucher", "batch", "create", "--program", "NOPE", "--points", "1", "--count", "1", "--price-minor", "1",
      "--expires", "2030-01-01"), 1, "no program"),
    (("report", "revenue", "--from", "2026-01-02", "--to", "2026-01-01"), 2, "before"),
    (("report", "revenue", "--from", "2020-01-01", "--to", "2026-01-01"), 2, "at most 400 days"),
])
def test_refusals_are_one_line(run, tmp_path: Path, args: tuple[str, ...], code: int,  # type: ignore[no-untyped-def]
                               message: str) -> None:
    if args[:3] == ("voucher", "batch", "create"):
        args = (*args, "--out", str(tmp_path))
    r = run(*args)
    assert r.exit_code == code and message in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_create_without_a_master_key_is_refused(run, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                tmp_path: Path) -> None:
    monkeypatch.delenv("SWITCHD_MASTER_KEY")
    r = run("voucher", "batch", "create", "--program", "ALLY", "--points", "1", "--count", "1", "--price-minor", "1",
            "--expires", "2030-01-01", "--out", str(tmp_path))
    assert r.exit_code == 1 and "master key" in r.output
