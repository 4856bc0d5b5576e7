"""The daemon's request path loads without the command line: no ``cli`` package, no click."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REQUEST_PATH = [
    "switch.server", "switch.pipeline", "switch.daemon", "switch.handlers.financial", "switch.handlers.netmgmt",
    "switch.handlers.settlement", "switch.terminals", "switch.codec", "switch.framing", "switch.mac",
    "switch.validation", "switch.routing", "switch.dedup", "ledger.engine", "ledger.loyalty",
]


def test_request_path_imports_neither_cli_nor_click() -> None:
    loyalty = sorted(f"ledger.loyalty.{p.stem}" for p in
                     (Path(__file__).resolve().parent.parent / "ledger" / "loyalty").glob("[!_]*.py"))
    modules = REQUEST_PATH + loyalty
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaks = sorted(m for m in sys.modules if m.split('.')[0] in ('cli', 'click'))\n"
        "assert not leaks, leaks\n"
        "print(len(sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "ledger.loyalty.bins" in modules and "ledger.loyalty.operations" in modules
