"""possim and loadgen against a real ``switchd serve`` (tests/fixtures_daemon.py).

The tools run as subprocesses (``python -m tools...``), exactly as an operator
runs them; everything is small and bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixtures_daemon import (
    CMAC_KEY_HEX,
    MIS_LISTENER,
    PAN_1,
    POS_LISTENER,
    POS_TPDU_LISTENER,
    X919_KEY_HEX,
    Daemon,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOOL_TIMEOUT_S = 60


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", f"tools.{name}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT_S)


def test_possim_and_loadgen(daemon_db: str, start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    d = start_daemon(daemon_db, [POS_LISTENER, POS_TPDU_LISTENER, MIS_LISTENER])
    d.add_terminal("PS000001", "M0000001")
    d.add_terminal("PS000002", "M0000001", mac_alg="cmac-aes", mac_key_hex=CMAC_KEY_HEX)
    d.add_terminal("PS000003", "M0000001", mac_alg="x919", mac_key_hex=X919_KEY_HEX)
    for i in range(1, 5):
        d.add_terminal(f"LG{i:06d}", "M0000001")
    pos, tpdu_port, mis = (str(d.ports[n]) for n in ("pos", "pos_tpdu", "mis"))

    # possim: sign-on then echo on the POS listener.
    res = tool("possim", "--port", pos, "--tid", "PS000001", "--sign-on", "--field", "70=301")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "sign-on: 0810 response code 00" in res.stdout
    assert "t    0810" in res.stdout and "39   00" in res.stdout and "70   301" in res.stdout

    # With a TPDU: the answer carries it swapped.
    res = tool("possim", "--port", tpdu_port, "--tpdu", "6000010002", "--tid", "PS000001", "--sign-on")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "tpdu 6000020001 (swapped ok)" in res.stdout

    # MIS: ascii4 framing, hex bitmaps, no sign-on needed.
    res = tool("possim", "--port", mis, "--framing", "ascii4", "--spec", "mis", "--tid", "PS000001")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "39   00" in res.stdout

    # A keyed terminal's financial request: whatever the answer, it echoes and carries a good MAC.
    for tid, alg, key in (("PS000002", "cmac-aes", CMAC_KEY_HEX), ("PS000003", "x919", X919_KEY_HEX)):
        res = tool("possim", "--port", pos, "--tid", tid, "--mid", "M0000001", "--sign-on", "--mti", "0200",
                   "--proc", "000000", "--pan", PAN_1, "--amount", "100", "--currency", "156",
                   "--mac-alg", alg, "--mac-key", key)
        assert res.returncode == 0, res.stderr + res.stdout
        assert "t    0210" in res.stdout and "MAC ok" in res.stdout, res.stdout
        assert PAN_1 not in res.stdout

    # Nothing listening: one clear line, non-zero exit.
    res = tool("possim", "--port", "1", "--timeout-s", "1")
    assert res.returncode == 1 and res.stderr.startswith("possim: cannot connect")

    # loadgen: bounded echo over pipelined, signed-on connections; every answer checked.
    out = tmp_path / "pos.json"
    res = tool("loadgen", "--port", pos, "--connections", "4", "--inflight", "4", "--requests", "400",
               "--duration-s", "20", "--tid-prefix", "LG", "--json-out", str(out))
    assert res.returncode == 0, res.stderr + res.stdout
    summary: dict[str, Any] = json.loads(out.read_text())
    assert summary["responses"] == 400 and summary["errors"] == {}, summary
    assert summary["response_codes"] == {"00": 400}

    # The same on the MIS listener, open loop, for a fixed time.
    out = tmp_path / "mis.json"
    res = tool("loadgen", "--port", mis, "--framing", "ascii4", "--spec", "mis", "--connections", "2",
               "--inflight", "4", "--rate", "200", "--duration-s", "1", "--no-sign-on", "--json-out", str(out))
    assert res.returncode == 0, res.stderr + res.stdout
    summary = json.loads(out.read_text())
    # Paced at 200/s for 1 s: never more than the rate allows (a busy machine may send fewer),
    # and every request sent was answered.
    assert summary["errors"] == {}, summary
    assert 0 < summary["responses"] == summary["sent"] <= 260, summary


def test_possim_sends_a_currency_with_money_and_hints_on_30(daemon_db: str,
                                                            start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon(daemon_db, [POS_LISTENER])
    d.add_terminal("PS000009", "M0000001")
    load = ("--port", str(d.ports["pos"]), "--tid", "PS000009", "--mid", "M0000001", "--sign-on",
            "--mti", "0200", "--proc", "210060", "--pan", PAN_1, "--amount", "5000")

    # A money amount without --currency: field 49 = 156 goes with it, the request passes validation.
    res = tool("possim", *load)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "t    0210" in res.stdout and "49   156" not in res.stdout  # 49 is not echoed
    assert "39   30" not in res.stdout and "hint" not in res.stdout, res.stdout
    request = [e for e in d.events("request") if e.get("terminal_id") == "PS000009" and e["mti"] == "0200"]
    assert request and request[-1]["error"] != "field 49: currency is mandatory for a money amount"

    # Without one on purpose: 30, and a hint names the missing field.
    res = tool("possim", *load, "--currency", "")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "39   30" in res.stdout
    assert "hint: 30 is a format error; this request lacks mandatory field(s) 49" in res.stdout

    # A points amount carries no currency and needs none.
    res = tool("possim", *load[:-6], "--proc", "210065", "--pan", PAN_1, "--amount", "10")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "39   30" not in res.stdout, res.stdout
