"""The chaos suite (bench/chaos.py, `make chaos`) at tiny counts: the same code, the zeros asserted.

Two kill -9s of the daemon under load, one PostgreSQL restart, 2,000 fuzzed frames, 50
slow-loris connections, on a private cluster: no approval lost, no posting doubled, no 91/96
that had posted, no given-up request left posted, no crash, no unretrieved task exception,
the books balanced and reconciliation passing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ledger.embedded import find_pg_bin

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import chaos  # noqa: E402 - bench/ is not a package

pytestmark = [pytest.mark.skipif(find_pg_bin() is None, reason="no PostgreSQL server binaries on this machine"),
              pytest.mark.e2e]

TINY = chaos.Plan(kills=2, pg_restarts=1, frames=2_000, slow_connections=50, hogs=10, flood_connects=100,
                  terminals=2, hold_connections_s=2.0, baseline_s=1.0, settle_s=0.5)


def test_chaos_short() -> None:
    figures = chaos.run(TINY, log=lambda _line: None)
    assert figures["requests"] > 0 and figures["approvals"] > 0, figures
    assert (figures["kills"], figures["pg_restarts"]) == (2, 1)
    assert chaos.verdict(figures) == [], chaos.table(figures)
    assert figures["recon"]["exit"] == 0, figures["recon"]
