"""Exchange between programs over real TCP through a real daemon (0200 406565, field 48 tag XP),
its void and reversal, the CLI's rates and exchange, and the end of day that clears them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from fixtures_daemon import (
    BEAN_CHECK,
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    Terminal,
    balances54,
    check_mac,
    db_run,
    decode,
    next_stan,
    purchase,
    tlv,
    utc_stamp,
)

from ledger.audit import check_books

TID, MID = "TEXC0001", "MEXC1"
CARD = "6212345000000000"
MAC = ("cmac-aes", CMAC_KEY_HEX)


@pytest.fixture(scope="module")
def exch(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("exch"), daemon_db, [POS_LISTENER]).start()
    try:
        d.cli("program", "add", "GOLD", "--name", "Gold", "--kind", "alliance", "--issue-price-minor", "5",
              "--redeem-value-minor", "4")
        d.cli("program", "add", "AIR", "--name", "Air miles", "--kind", "alliance", "--issue-price-minor", "3",
              "--redeem-value-minor", "2")
        d.cli("merchant", "add", MID, "--name", "Exchange Books", "--program", "GOLD", "--earn-rate", "1",
              "--fee-bps", "0")
        d.cli("terminal", "add", TID, "--merchant", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
        d.cli("card", "issue", CARD, "--expiry", "3012")
        yield d
    finally:
        assert d.stop() == 0


def _terminal(d: Daemon) -> Terminal:
    t = Terminal(d.ports["pos"], "nac2", "pos")
    t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": TID, "70": "001"})
    return t


def _call(t: Terminal, fields: dict[str, str]) -> dict[str, str]:
    t.send(fields, mac=MAC)
    raw = t.recv_raw()
    assert check_mac(raw, "pos", *MAC)
    return decode(raw, "pos")


def _req(pc: str, amount: int, **extra: str) -> dict[str, str]:
    f = purchase(TID, MID, pan=CARD, amount=amount, pc=pc)
    f.pop("49", None)  # points: no currency
    f.update(extra)
    return f


def _points(d: Daemon, program: str) -> int:
    shown = json.loads(d.cli("card", "show", CARD, "--json").stdout)
    return sum(b["balance"] for b in shown["balances"] if b["kind"] == "points" and b["program"] == program)


def _books_ok(d: Daemon) -> None:
    assert db_run(d.dsn, check_books) == []


def test_exchange_over_the_wire_void_reversal_cli_and_end_of_day(exch: Daemon, tmp_path: Path) -> None:
    d = exch
    d.cli("rate", "set", "GOLD", "AIR", "3/2", "--fee-bps", "1000")
    listed = json.loads(d.cli("rate", "list", "--json").stdout)
    assert [(r["from_program"], r["to_program"], r["rate_num"], r["rate_den"]) for r in listed] == [
        ("GOLD", "AIR", 3, 2)]
    with _terminal(d) as t:
        assert _call(t, _req("210065", 1000))["39"] == "00"
        assert _call(t, _req("406565", 100))["39"] == "12", "no target program (field 48 XP)"
        assert _call(t, _req("406565", 100, **{"48": "XP004NONE"}))["39"] == "12", "no rate"
        x = _call(t, _req("406565", 400, **{"48": "XP003AIR"}))  # 600 AIR less 10%: 540
        assert x["39"] == "00", x
        assert tlv(x["48"]) == {"PE": "540", "PR": "400", "PB": "600", "PG": "GOLD"}
        assert balances54(x["54"]) == {"65:999": 600}
        assert (_points(d, "GOLD"), _points(d, "AIR")) == (600, 540)
        assert _call(t, _req("406565", 601, **{"48": "XP003AIR"}))["39"] == "51"
        void = _call(t, _req("026500", 400, **{"37": x["37"]}))
        assert void["39"] == "00" and balances54(void["54"]) == {"65:999": 1000}
        assert (_points(d, "GOLD"), _points(d, "AIR")) == (1000, 0)
        orig = _req("406565", 200, **{"48": "XP003AIR"})
        assert _call(t, orig)["39"] == "00"
        assert _points(d, "AIR") == 270
        rev = {**_req("406565", 200, **{"48": "XP003AIR"}), "t": "0400",
               "90": "0200" + orig["11"] + orig["7"] + "0" * 22}
        assert _call(t, rev)["39"] == "00"
        assert (_points(d, "GOLD"), _points(d, "AIR")) == (1000, 0)
        assert _call(t, _req("406565", 300, **{"48": "XP003AIR"}))["39"] == "00"  # stays: 405 AIR
    out = json.loads(d.cli("exchange", CARD, "--from", "GOLD", "--to", "AIR", "--points", "100", "--key", "cli-1",
                           "--json").stdout)
    assert (out["points_in"], out["points_out"], out["fee_points"]) == (100, 135, 15)
    again = json.loads(d.cli("exchange", CARD, "--from", "GOLD", "--to", "AIR", "--points", "100", "--key",
                             "cli-1", "--json").stdout)
    assert again["replayed"] and again["journal_id"] == out["journal_id"]
    refused = d.cli("exchange", CARD, "--from", "AIR", "--to", "GOLD", "--points", "1", "--key", "cli-2",
                    check=False)
    assert refused.returncode == 1 and "no rate" in refused.stderr
    assert (_points(d, "GOLD"), _points(d, "AIR")) == (600, 540)
    _books_ok(d)
    report = json.loads(d.cli("eod", "run", "--dir", str(tmp_path), "--json", check=False).stdout)
    assert report["ok"], report["recon"]

    async def figures(conn: asyncpg.Connection) -> dict[str, tuple[int, int, int]]:
        rows = await conn.fetch("SELECT program, points_in, points_out, net_minor FROM eod.clearing_exchange")
        return {r["program"]: (r["points_in"], r["points_out"], r["net_minor"]) for r in rows}

    # GOLD: 400 in then voided, 200 in then reversed, 300 + 100 in: 400 at 4 fen. AIR: 540 out at 3 fen.
    assert db_run(d.dsn, figures) == {"GOLD": (400, 0, 1600), "AIR": (0, 540, -1620)}
    day = report["business_date"]
    summary = json.loads((tmp_path / day / "summary.json").read_text())
    assert {r["program"]: r["net_minor"] for r in summary["exchange_desk"]} == {"GOLD": 1600, "AIR": -1620}
    assert any(m["redeemer_id"] == "@exchange" for m in summary["alliance_matrix"])
    # The accountants' export of the day, exchange accounts included, passes bean-check.
    bean = tmp_path / "day.beancount"
    d.cli("ledger", "export", "--date", day, "--format", "beancount", "--out", str(bean))
    assert "exchange" in bean.read_text()
    checked = subprocess.run([BEAN_CHECK, str(bean)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    stats = json.loads(d.cli("stats", "--date", day, "--by", "type", "--json").stdout)
    exchanges = {g["grp"]: g for g in stats["groups"]}["exchange"]
    # Approved: 400 (voided), 200 (reversed), 300, and the CLI's 100: amounts in points.
    assert (exchanges["approved"], exchanges["points_amount"]) == (4, 1000), exchanges
    _books_ok(d)


def test_the_documented_exchange_frame_is_approved(exch: Daemon) -> None:
    """specs/HOST-INTERFACE.md example (h), byte for byte, against a daemon provisioned as it says."""
    d = exch
    doc = (Path(__file__).resolve().parent.parent / "specs" / "HOST-INTERFACE.md").read_text(encoding="utf-8")
    block = doc.split("```hex-frame name=pos-exchange-cmac", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    frame = bytes.fromhex("".join(block.split()))
    doc_key = "00112233445566778899AABBCCDDEEFF"
    d.cli("merchant", "add", "M00000000000001", "--name", "Doc merchant", "--program", "GOLD", "--earn-rate", "1")
    d.cli("terminal", "add", "T0000001", "--merchant", "M00000000000001", "--mac-alg", "cmac-aes",
          "--mac-key", doc_key)
    d.cli("bin", "add", "625094")
    d.cli("card", "issue", "6250941234567898", "--expiry", "3012")
    d.cli("rate", "set", "GOLD", "AIR", "1/1")
    t = Terminal(d.ports["pos"], "nac2", "pos")
    with t:
        t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": "T0000001", "70": "001"})
        topup = purchase("T0000001", "M00000000000001", pan="6250941234567898", amount=400, pc="210065")
        topup.pop("49", None)
        t.send(topup, mac=("cmac-aes", doc_key))
        assert decode(t.recv_raw(), "pos")["39"] == "00"
        t.send_raw(frame)
        resp = decode(t.recv_raw(), "pos")
    assert resp["39"] == "00", resp
    assert tlv(resp["48"])["PE"] == "400" and tlv(resp["48"])["PR"] == "400"
