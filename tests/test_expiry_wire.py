"""Over TCP against ``switchd serve``: a balance inquiry in a program whose points expire carries
the next expiring lot in field 48 (XP, XD: specs/HOST-INTERFACE.md §7.1); one in a program
without expiry carries neither tag. The program's expiry is set with the real CLI."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg
from fixtures_daemon import CMAC_KEY_HEX, PAN_1, POS_LISTENER, db_run, purchase, signed_on, tlv

from ledger.loyalty.demo import demo_pan
from ledger.loyalty.lots import add_months

MAC = ("cmac-aes", CMAC_KEY_HEX)
PAN_2 = demo_pan(2)


def test_inquiry_carries_the_next_expiring_lot(daemon_db: str, start_daemon: Any) -> None:
    d = start_daemon(daemon_db, [POS_LISTENER])
    d.provision("WIRE", "M0000001", ["T0000001"], [PAN_1, PAN_2])
    t = signed_on(d.ports["pos"], "T0000001")
    try:
        # Without expiry: no tag.
        assert t.call(purchase("T0000001", pan=PAN_2, amount=5_000), mac=MAC)["39"] == "00"
        plain = t.call(purchase("T0000001", pan=PAN_2, amount=0, pc="316500"), mac=MAC)
        assert plain["39"] == "00" and "EP" not in tlv(plain["48"]) and "ED" not in tlv(plain["48"])

        assert "updated" in d.cli("program", "update", "WIRE", "--points-expiry-months", "12").stdout
        assert t.call(purchase("T0000001", pan=PAN_1, amount=25_000), mac=MAC)["39"] == "00"  # 250 points
        resp = t.call(purchase("T0000001", pan=PAN_1, amount=0, pc="316500"), mac=MAC)
    finally:
        t.close()
    tags = tlv(resp["48"])
    assert resp["39"] == "00" and tags["PB"] == "250" and tags["EP"] == "250", resp

    async def open_day(conn: asyncpg.Connection) -> dt.date:
        value = await conn.fetchval("SELECT open_date FROM ledger.business_day")
        assert isinstance(value, dt.date)
        return value

    assert tags["ED"] == add_months(db_run(daemon_db, open_day), 12).strftime("%Y%m%d")
    assert '"points_expiry_months": 12' in d.cli("program", "show", "WIRE", "--json").stdout
    # The points earned before expiry was turned on are in a lot too: the books prove it.
    recon = json.loads(d.cli("recon", "run", "--json", check=False).stdout)
    assert "lots_sum_to_balances" in recon["checks"]
    assert [f for f in recon["failures"] if f["check"] == "lots_sum_to_balances"] == [], recon
