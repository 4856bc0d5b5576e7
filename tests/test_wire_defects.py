"""Wire defects, over TCP against a live ``switchd serve``.

- A bitmap naming a field the spec does not define (a tertiary bitmap's 129-192) is a
  format error (30) with the request's keys echoed, not a malfunction (96).
- A response MTI (0810, 0210, 0410, 0430, 0510...) arriving at the switch is not answered:
  it is counted and the connection stays open for the requests after it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_daemon import (
    MIS_LISTENER,
    PAN_2,
    POS_LISTENER,
    Terminal,
    ascii4,
    encode,
    nac2,
    netmgmt,
    purchase,
)
from prometheus_client.parser import text_string_to_metric_families

LISTENERS = [{**POS_LISTENER, "sign_on_required": False}, MIS_LISTENER]
TID = "TWIRE001"


@pytest.fixture(scope="module")
def wire_daemon(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fixtures_daemon import Daemon

    d = Daemon(tmp_path_factory.mktemp("wire"), daemon_db, LISTENERS).start()
    try:
        d.add_terminal(TID)
        yield d
    finally:
        assert d.stop() == 0
    text = d.log_text()
    assert "Traceback" not in text and "request_task_failed" not in text


def with_tertiary_field(message: bytes, spec: str, field: int) -> bytes:
    """``message`` (with a secondary bitmap) given a tertiary bitmap naming ``field`` (129-192).

    Bit 65 (the secondary bitmap's first) announces the tertiary bitmap, which follows the
    secondary one; the field's data is appended (a field 129+ comes after every other).
    """
    width = 8 if spec == "pos" else 16
    bit = field - 129
    tertiary = (1 << (63 - bit)).to_bytes(8, "big")
    if spec == "pos":
        secondary = bytes([message[4 + width] | 0x80]) + message[4 + width + 1:4 + 2 * width]
    else:
        first = int(message[4 + width:4 + width + 2], 16) | 0x80
        secondary = b"%02X" % first + message[4 + width + 2:4 + 2 * width]
        tertiary = tertiary.hex().upper().encode()
    return message[:4 + width] + secondary + tertiary + message[4 + 2 * width:] + b"0123456789"


def rejected(d: Any, reason: str) -> float:
    fams = {f.name: f for f in text_string_to_metric_families(d.scrape())}
    return sum(s.value for s in fams["switchd_frames_rejected"].samples
               if s.name == "switchd_frames_rejected_total" and s.labels.get("reason") == reason)


@pytest.mark.parametrize(("listener", "field"), [("pos", 131), ("pos", 152), ("mis", 131), ("mis", 192)])
def test_field_above_128_is_a_format_error(wire_daemon: Any, listener: str, field: int) -> None:
    d = wire_daemon
    framing, spec = ("nac2", "pos") if listener == "pos" else ("ascii4", "mis")
    req = netmgmt(TID, "301")  # field 70: a secondary bitmap
    raw = with_tertiary_field(encode(req, spec), spec, field)
    with Terminal(d.ports[listener], framing, spec) as t:
        t.send_raw(t.frame(raw))
        resp = t.recv()
        assert resp["t"] == "0810" and resp["39"] == "30"
        assert resp["11"] == req["11"] and resp["41"] == req["41"], "the keys are echoed"
        assert t.call(netmgmt(TID, "301"))["39"] == "00", "the connection serves on"


def test_field_above_128_in_a_financial_request(wire_daemon: Any) -> None:
    d = wire_daemon
    req = {**purchase(TID), "90": "0" * 42}
    raw = with_tertiary_field(encode(req, "pos"), "pos", 140)
    with Terminal(d.ports["pos"]) as t:
        t.send_raw(nac2(raw))
        resp = t.recv()
    assert resp["t"] == "0210" and resp["39"] == "30" and resp["11"] == req["11"]


@pytest.mark.parametrize("mti", ["0810", "0210", "0410", "0430", "0510", "0230"])
def test_unsolicited_response_is_ignored(wire_daemon: Any, mti: str) -> None:
    d = wire_daemon
    before = rejected(d, "unsolicited_response")
    stray = {**netmgmt(TID, "301"), "t": mti, "39": "00"}
    echo = netmgmt(TID, "301")
    with Terminal(d.ports["pos"]) as t:
        t.send(stray)
        resp = t.call(echo)
        assert resp["t"] == "0810" and resp["11"] == echo["11"], "only the 0800 is answered"
        assert resp["39"] == "00"
        # Still open: another request on the same connection is answered.
        assert t.call(netmgmt(TID, "301"))["39"] == "00"
        assert not t.closed_by_peer(0.3)
    assert rejected(d, "unsolicited_response") == before + 1


def test_unsolicited_response_on_mis_and_undecodable(wire_daemon: Any) -> None:
    d = wire_daemon
    before = rejected(d, "unsolicited_response")
    stray = {**purchase(TID, pan=PAN_2), "t": "0210", "39": "00"}
    with Terminal(d.ports["mis"], "ascii4", "mis") as t:
        t.send_raw(ascii4(b"0210" + b"\x00garbage"))  # a response MTI, the rest undecodable
        t.send(stray)
        echo = netmgmt(TID, "301")
        resp = t.call(echo)
        assert resp["11"] == echo["11"] and resp["39"] == "00"
    assert rejected(d, "unsolicited_response") == before + 2
    line = d.wait_event("frame_rejected", lambda e: e.get("stan") == stray["11"])
    assert line["reason"] == "unsolicited_response" and line["level"] == "info"
    assert line["mti"] == "0210" and line["terminal_id"] == TID
    assert line["pan_masked"] == PAN_2[:6] + "******" + PAN_2[-4:]
    assert PAN_2 not in d.log_text()
