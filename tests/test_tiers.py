"""Every collected test is in exactly one tier (unit, db, e2e), model only on top of one.

The tiers are inferred in tests/conftest.py; this collects the whole suite in a
subprocess (collection only: no database, no daemon) and checks what it got.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures_daemon import POS_LISTENER, Daemon

ROOT = Path(__file__).resolve().parent.parent
BASE_TIERS = {"unit", "db", "e2e"}
DATABASE_FIXTURES = {"admin_dsn", "template_db", "db_dsn", "empty_db_dsn", "pool", "daemon_db", "start_daemon"}
COLLECT_TIMEOUT_S = 300.0

# Written next to the subprocess's tests: it reports each item's tiers and fixtures.
REPORT_PLUGIN = """
import json, os
import pytest

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    report = {item.nodeid: {"tiers": sorted({m.name for m in item.iter_markers()}
                                            & {"unit", "db", "e2e", "model"}),
                            "fixtures": sorted(getattr(item, "fixturenames", ()))} for item in items}
    with open(os.environ["TIERS_REPORT"], "w") as out:
        json.dump(report, out)
"""


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """{node id: {"tiers": [...], "fixtures": [...]}} for the whole suite, as pytest collects it."""
    work = tmp_path_factory.mktemp("tiers")
    (work / "tiers_report.py").write_text(textwrap.dedent(REPORT_PLUGIN), encoding="utf-8")
    report = work / "report.json"
    env = {**os.environ, "PYTHONPATH": str(work), "TIERS_REPORT": str(report),
           # Collection must not need PostgreSQL: point the tests at a port nothing listens on.
           "SWITCHD_TEST_DSN": "postgresql://postgres@127.0.0.1:9/postgres"}
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-p", "tiers_report"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=COLLECT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    items: dict[str, dict[str, Any]] = json.loads(report.read_text(encoding="utf-8"))
    assert len(items) > 100, "the whole suite, not a part of it"
    return items


def test_every_test_has_exactly_one_base_tier(collected: dict[str, dict[str, Any]]) -> None:
    wrong = {node: item["tiers"] for node, item in collected.items()
             if len(BASE_TIERS.intersection(item["tiers"])) != 1}
    assert not wrong


def test_unit_tests_use_no_database_fixture(collected: dict[str, dict[str, Any]]) -> None:
    wrong = {node: sorted(DATABASE_FIXTURES.intersection(item["fixtures"])) for node, item in collected.items()
             if "unit" in item["tiers"] and DATABASE_FIXTURES.intersection(item["fixtures"])}
    assert not wrong


def test_db_tests_start_no_daemon(collected: dict[str, dict[str, Any]]) -> None:
    wrong = [node for node, item in collected.items()
             if "db" in item["tiers"] and {"daemon_db", "start_daemon"}.intersection(item["fixtures"])]
    assert not wrong


def test_the_packages_doctests_are_unit(collected: dict[str, dict[str, Any]]) -> None:
    doctests = {node: item["tiers"] for node, item in collected.items()
                if node.split("/", 1)[0] in ("switch", "ledger", "specs")}
    assert doctests
    assert all(tiers == ["unit"] for tiers in doctests.values()), doctests


def test_state_machines_are_model_on_top_of_their_base_tier(collected: dict[str, dict[str, Any]]) -> None:
    # One of each kind the inference must tell: by fixture (db) and by importing Daemon (e2e).
    assert collected["tests/test_ledger_stateful.py::test_ledger_state_machine"]["tiers"] == ["db", "model"]
    assert collected["tests/test_loyalty_wire_model.py::test_loyalty_model_over_the_wire"]["tiers"] == [
        "e2e", "model"]
    models = [node for node, item in collected.items() if "model" in item["tiers"]]
    assert len(models) >= 3


def test_the_tier_markers_are_registered_and_strict(request: pytest.FixtureRequest) -> None:
    registered = {line.split(":", 1)[0] for line in request.config.getini("markers")}
    assert {"unit", "db", "e2e", "model"} <= registered
    assert "--strict-markers" in request.config.getini("addopts")


def test_a_test_outside_e2e_cannot_start_a_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "postgresql://postgres@127.0.0.1:9/none", [POS_LISTENER])
    with pytest.raises(pytest.fail.Exception, match="not in the e2e tier"):
        d.start()
    assert d.proc is None
