"""Top-up card redemption over real TCP through a real daemon: 0200 210065 with the card's serial
and code in field 48 (tags VS, VC); approved once, the retransmission answered with the same bytes,
another card refused 05, a wrong code 14 and the terminal locked out 75; the lockout metric counts."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fixtures_daemon import (
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

TID, MID = "TVOU0001", "MVOU1"
CARD_A, CARD_B = "6212345000000000", "6212345000000018"
MAC = ("cmac-aes", CMAC_KEY_HEX)


@pytest.fixture(scope="module")
def wired(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("vouchers")
    d = Daemon(workdir, daemon_db, [POS_LISTENER], extra={"vouchers": {"failures_max": 3}}).start()
    try:
        d.cli("program", "add", "GOLD", "--name", "Gold alliance", "--kind", "alliance",
              "--issue-price-minor", "5", "--redeem-value-minor", "4")
        d.cli("merchant", "add", MID, "--name", "Card seller", "--program", "GOLD", "--earn-rate", "1",
              "--fee-bps", "100")
        d.cli("terminal", "add", TID, "--merchant", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
        for pan in (CARD_A, CARD_B):
            d.cli("card", "issue", pan, "--expiry", "3012")
        expires = (dt.date.today() + dt.timedelta(days=60)).isoformat()
        made = json.loads(d.cli("voucher", "batch", "create", "--program", "GOLD", "--points", "250", "--count", "3",
                                "--price-minor", "1000", "--expires", expires, "--out", str(workdir),
                                "--json").stdout)
        d.cli("voucher", "batch", "sell", str(made["batch_id"]), "--to", MID)
        with Path(made["codes_file"]).open() as fh:
            codes = {row["serial"]: row["code"] for row in csv.DictReader(fh)}
        yield d, codes
    finally:
        assert d.stop() == 0


def _call_raw(t: Terminal, fields: dict[str, str]) -> bytes:
    t.send(fields, mac=MAC)
    raw = t.recv_raw()
    assert check_mac(raw, "pos", *MAC)
    return raw


def _redeem(serial: str, code: str, pan: str = CARD_A, points: int = 250) -> dict[str, str]:
    f = purchase(TID, MID, pan=pan, amount=points, pc="210065")
    f["48"] = f"VS{len(serial):03d}{serial}VC{len(code):03d}{code}"
    return f


def _books(d: Daemon) -> list[Any]:
    async def body(conn: asyncpg.Connection) -> list[Any]:
        return await check_books(conn)

    return list(db_run(d.dsn, body))


def test_redeem_over_the_wire(wired: tuple[Daemon, dict[str, str]]) -> None:
    d, codes = wired
    (s1, c1), (s2, c2), (s3, c3) = sorted(codes.items())
    with Terminal(d.ports["pos"], "nac2", "pos") as t:
        t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": TID.ljust(8), "70": "001"})
        req = _redeem(s1, c1)
        raw = _call_raw(t, req)
        first = decode(raw, "pos")
        assert first["39"] == "00", first
        assert tlv(first["48"]) == {"PE": "250", "PB": "250", "PG": "GOLD"}
        assert balances54(first["54"]) == {"65:999": 250}
        # The retransmission: the very same bytes.
        assert _call_raw(t, req) == raw
        # The same key (41, 11, 7) with other content: 94, and nothing more is credited.
        assert decode(_call_raw(t, req | {"4": "000000000251"}), "pos")["39"] == "94"
        # A decline's retransmission is answered as it was, without counting a second failure.
        wrong = _redeem(s2, "9" * 16)
        answer = _call_raw(t, wrong)
        assert decode(answer, "pos")["39"] == "14"
        assert _call_raw(t, wrong) == answer
        # Another card, the same top-up card: used.
        assert decode(_call_raw(t, _redeem(s1, c1, pan=CARD_B)), "pos")["39"] == "05"
        # The terminal's amount must be the card's points.
        assert decode(_call_raw(t, _redeem(s2, c2, points=999)), "pos")["39"] == "13"
        # Guessing: three wrong codes lock the terminal (and the member) out, the right code too.
        for n in range(2):  # the retransmitted decline above counted once: two more lock out
            assert decode(_call_raw(t, _redeem(s3, f"{n:016d}", pan=CARD_B)), "pos")["39"] == "14"
        assert decode(_call_raw(t, _redeem(s3, c3, pan=CARD_B)), "pos")["39"] == "75"
    metrics = d.scrape()
    assert 'switchd_voucher_lockouts_total{scope="terminal"} 1.0' in metrics
    assert _books(d) == []
