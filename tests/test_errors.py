"""The project's own errors: one base class, one line each, never a driver's class for our faults."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import asyncpg
import pytest
from ledger_support import ledger_settings

import ledger
import specs
import switch
from ledger.engine import Ledger
from ledger.errors import SwitchdError, Unavailable
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Reason, Request, TxnType
from ledger.loyalty.programs import ProvisioningError
from switch import daemon, logs

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (switch, ledger, specs)


def _modules() -> list[str]:
    names: list[str] = []
    for package in PACKAGES:
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.append(info.name)
    return names


def test_every_error_class_of_ours_derives_from_the_base() -> None:
    strays = []
    for name in _modules():
        module = importlib.import_module(name)
        for _attr, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException) and not issubclass(cls, SwitchdError):
                strays.append(f"{name}.{cls.__name__}")
    assert strays == []


def test_str_is_one_line() -> None:
    assert str(ProvisioningError("no currency\nDETAIL: more")) == "no currency"
    assert str(Unavailable()) == ""


def test_no_driver_exception_is_raised_for_our_own_faults() -> None:
    # asyncpg's classes say "the database failed": a fault of ours raised as one is answered
    # (and hunted) as an outage.
    pattern = re.compile(r"raise asyncpg\.|asyncpg\.\w*(Error|Exception)\(")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for package in ("switch", "ledger", "specs")
             for path in sorted((ROOT / package).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), start=1)
             if pattern.search(line) and not line.lstrip().startswith(">>>")]  # a doctest's input
    assert found == []


def test_an_error_of_ours_at_start_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise ProvisioningError("no currency is configured\nsecond line")

    logs.configure("info")  # to this test's stdout: an earlier test may have bound the logger elsewhere
    assert daemon._guarded(body) == 2
    out = capsys.readouterr().out
    assert "start_failed" in out and "no currency is configured" in out and "second line" not in out
    assert "Traceback" not in out


async def test_a_reversal_with_no_currency_configured_is_not_found_not_a_96(pool: asyncpg.Pool) -> None:
    # Nothing provisioned: no currency, so no merchant, so no original can have posted. The
    # reversal is answered "original not found" (25), not "system malfunction" (96) for ever.
    request = Request(key="TNONE001|000002|0101120000", terminal_id="TNONE001", merchant_id="MNONE",
                      pan="6250941234567890", amount=100, currency="156", rrn="000000000002", stan="000002",
                      original_key="TNONE001|000001|0101120000")
    async with Ledger(pool, ledger_settings()) as led:
        outcome = await Loyalty(led, pool).execute(TxnType.REVERSAL, request)
    assert outcome.reason is Reason.ORIGINAL_NOT_FOUND, outcome.detail
    assert "no currency is configured" in (outcome.detail or "")
