"""Over TCP against ``switchd serve``: a merchant's web seat terminal is refused on the wire
exactly as an unknown terminal is, while the merchant's POS terminal is served."""

from __future__ import annotations

from typing import Any

import asyncpg
from fixtures_daemon import (
    CMAC_KEY_HEX,
    MIS_LISTENER,
    PAN_1,
    POS_LISTENER,
    Terminal,
    db_run,
    netmgmt,
    purchase,
)


def test_the_wire_refuses_the_virtual_terminal(daemon_db: str, start_daemon: Any) -> None:
    d = start_daemon(daemon_db, [POS_LISTENER, MIS_LISTENER])
    d.provision("WIRE", "M0000001", ["T0000001"], [PAN_1])

    async def seat_terminal(conn: asyncpg.Connection) -> str:
        tid = await conn.fetchval("SELECT terminal_id FROM loyalty.seat_terminal('M0000001')")
        assert isinstance(tid, str)
        return tid

    web = db_run(daemon_db, seat_terminal)
    assert web.startswith("W") and len(web) == 8
    shown = d.cli("terminal", "show", web, "--json").stdout
    assert '"kind": "web"' in shown

    def answers(listener: str, tid: str) -> list[tuple[str, str, bool]]:
        spec = "pos" if listener == "pos" else "mis"
        framing = "nac2" if listener == "pos" else "ascii4"
        with Terminal(d.ports[listener], framing, spec) as t:
            out = []
            for req in (netmgmt(tid, "001"), purchase(tid, "M0000001", PAN_1, 1_000),
                        purchase(tid, "M0000001", PAN_1, 1_000, pc="316500")):
                resp = t.call(req)
                out.append((resp["t"], resp["39"], "64" in resp or "128" in resp))
            return out

    for listener in ("pos", "mis"):
        refused = answers(listener, web)
        assert refused == answers(listener, "NOSUCH01"), listener
        assert refused == [("0810", "03", False), ("0210", "03", False), ("0210", "03", False)]

    # The merchant's real terminal is served (it signs on and earns).
    with Terminal(d.ports["pos"], "nac2", "pos") as t:
        t.send(netmgmt("T0000001", "001"))
        assert t.recv()["39"] == "00"
        t.send(purchase("T0000001", "M0000001", PAN_1, 1_000), mac=("cmac-aes", CMAC_KEY_HEX))
        assert t.recv()["39"] == "00"

    async def recorded(conn: asyncpg.Connection) -> list[tuple[str, str]]:
        rows = await conn.fetch("SELECT terminal_id, channel FROM loyalty.transactions ORDER BY id")
        return [(r["terminal_id"], r["channel"]) for r in rows]

    assert db_run(daemon_db, recorded) == [("T0000001", "terminal")]
