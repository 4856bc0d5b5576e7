"""End-of-day test support: provisioning, a terminal client, and an independent model of a day.

The model knows the programme's arithmetic from the specification (floors,
basis points, proportional undo) and nothing of the code under test: the
figures the tests expect are computed here from the messages the test sent
and the responses it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fixtures_daemon import MIS_LISTENER, Daemon, Terminal, db_run, next_stan, utc_stamp

from ledger.loyalty.demo import demo_pan, seed
from ledger.loyalty.merchants import add_merchant

LISTENERS = [MIS_LISTENER]
# merchant -> (program, earn num, earn den, fee schedule); issue price / redemption value per program.
MERCHANTS: dict[str, tuple[str, int, int, dict[str, int]]] = {
    "M0001": ("ALLY", 1, 1, {"default": 50}),
    "M0002": ("ALLY", 2, 1, {"default": 50}),
    "M0003": ("CAFE", 1, 2, {"default": 50}),
    "M0004": ("ALLY", 3, 2, {"default": 30, "redeem": 10}),
}
PRICES = {"ALLY": (1, 1), "CAFE": (2, 2)}
TERMINALS = {"M0001": "T0000001", "M0002": "T0000002", "M0003": "T0000003", "M0004": "T0000004"}
LOTTERY_PRICE = 10
CARDS = [demo_pan(n) for n in range(1, 11)]
CREDIT_TYPES = ("earn", "topup", "load", "refund")
DEBIT_TYPES = ("redeem", "sv_purchase", "lottery")
PC = {"earn": "000000", "redeem": "006500", "sv_purchase": "006000", "topup": "210065", "load": "210060",
      "lottery": "906500"}
ACCOUNT = {"earn": "00", "redeem": "65", "sv_purchase": "60", "topup": "65", "load": "60"}


def provision(d: Daemon) -> None:
    """Demo programs, merchants M0001-M0003 and ten cards, plus M0004; one terminal per merchant."""

    async def body(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await seed(conn)
            program, num, den, fees = MERCHANTS["M0004"]
            await add_merchant(conn, "M0004", "Alliance Garage", program, num, den, fees)

    db_run(d.dsn, body)
    for mid, tid in TERMINALS.items():
        d.add_terminal(tid, mid)


def terminal(d: Daemon) -> Terminal:
    return Terminal(d.ports["mis"], "ascii4", "mis")


@dataclass
class Sent:
    """One approved original as the terminal knows it."""

    merchant: str
    terminal_id: str
    txn_type: str
    pan: str
    amount: int
    rrn: str
    stan: str
    when: str
    legs: list[tuple[str, int]]  # (figure, units) the original moved, in ledger leg order
    undone_units: int = 0
    undone_legs: list[int] = field(default_factory=list)
    voided: bool = False


@dataclass
class Figures:
    points_issued: int = 0
    points_redeemed: int = 0
    sv_loaded_minor: int = 0
    sv_spent_minor: int = 0
    fees_minor: int = 0

    def net_minor(self, program: str) -> int:
        issue, redeem = PRICES[program]
        return (self.points_redeemed * redeem + self.sv_spent_minor - self.points_issued * issue
                - self.sv_loaded_minor - self.fees_minor)


class Day:
    """Sends a day's traffic and keeps the model: per-merchant figures and per-terminal batch totals."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.t = terminal(d)
        self.figures: dict[str, Figures] = {m: Figures() for m in MERCHANTS}
        self.sent: list[Sent] = []
        self.refunds: list[Sent] = []
        self.responses: list[dict[str, str]] = []

    def close(self) -> None:
        self.t.close()

    def _fee(self, merchant: str, txn_type: str, value_minor: int) -> int:
        fees = MERCHANTS[merchant][3]
        bps = fees.get(txn_type, fees.get("default", 0))
        return value_minor * bps // 10_000

    def _msg(self, merchant: str, pc: str, pan: str, amount: int, mti: str = "0200", **extra: str
             ) -> dict[str, str]:
        f = {"t": mti, "2": pan, "3": pc, "4": f"{amount:012d}", "7": utc_stamp(), "11": next_stan(),
             "41": TERMINALS[merchant].ljust(8), "42": merchant.ljust(15), "49": "156"}
        f.update(extra)
        return f

    def call(self, fields: dict[str, str]) -> dict[str, str]:
        resp = self.t.call(fields)
        self.responses.append(resp)
        return resp

    def send(self, merchant: str, txn_type: str, pan: str, amount: int, expect: str = "00") -> Sent | None:
        """Send an earn, redeem, sv_purchase, topup, load or lottery; update the model when approved."""
        f = self._msg(merchant, PC[txn_type], pan, amount)
        resp = self.call(f)
        assert resp["39"] == expect, (txn_type, resp)
        if resp["39"] != "00":
            return None
        program, num, den, _ = MERCHANTS[merchant]
        issue, redeem = PRICES[program]
        legs: list[tuple[str, int]] = []
        if txn_type == "earn":
            pts = amount * num // (den * 100)
            legs = [("points_issued", pts), ("fees_minor", self._fee(merchant, "earn", amount))]
        elif txn_type == "topup":
            legs = [("points_issued", amount), ("fees_minor", self._fee(merchant, "topup", amount * issue))]
        elif txn_type == "redeem":
            legs = [("points_redeemed", amount), ("fees_minor", self._fee(merchant, "redeem", amount * redeem))]
        elif txn_type == "load":
            legs = [("sv_loaded_minor", amount), ("fees_minor", self._fee(merchant, "load", amount))]
        elif txn_type == "sv_purchase":
            legs = [("sv_spent_minor", amount), ("fees_minor", self._fee(merchant, "sv_purchase", amount))]
        legs = [(name, units) for name, units in legs if units > 0]  # the ledger posts no zero legs
        for name, units in legs:
            fig = self.figures[merchant]
            setattr(fig, name, getattr(fig, name) + units)
        s = Sent(merchant, TERMINALS[merchant], txn_type, pan, amount, resp["37"], f["11"], f["7"], legs,
                 undone_legs=[0] * len(legs))
        self.sent.append(s)
        return s

    def _undo_to(self, s: Sent, after_units: int) -> None:
        for i, (name, units) in enumerate(s.legs):
            target = units if after_units >= s.amount else units * after_units // s.amount
            delta = target - s.undone_legs[i]
            s.undone_legs[i] = target
            fig = self.figures[s.merchant]
            setattr(fig, name, getattr(fig, name) - delta)
        s.undone_units = after_units

    def void(self, s: Sent) -> None:
        pc = f"02{ACCOUNT[s.txn_type]}00"
        resp = self.call(self._msg(s.merchant, pc, s.pan, s.amount, **{"37": s.rrn}))
        assert resp["39"] == "00", resp
        self._undo_to(s, s.amount)
        s.voided = True

    def refund(self, s: Sent, amount: int) -> None:
        pc = f"20{ACCOUNT[s.txn_type]}00"
        f = self._msg(s.merchant, pc, s.pan, amount, **{"37": s.rrn})
        resp = self.call(f)
        assert resp["39"] == "00", resp
        self._undo_to(s, s.undone_units + amount)
        self.refunds.append(Sent(s.merchant, s.terminal_id, "refund", s.pan, amount, resp["37"], f["11"], f["7"],
                                 []))

    def reverse(self, s: Sent) -> None:
        f = self._msg(s.merchant, PC[s.txn_type], s.pan, s.amount, mti="0400",
                      **{"90": "0200" + s.stan + s.when + "0" * 22})
        resp = self.call(f)
        assert resp["39"] == "00", resp
        self._undo_to(s, s.amount)
        s.voided = True

    def inquiry(self, merchant: str, pan: str) -> None:
        resp = self.call(self._msg(merchant, "310000", pan, 0))
        assert resp["39"] == "00", resp

    def batch_totals(self, terminal_id: str) -> tuple[int, int, int, int]:
        """The terminal's own totals (credits count/amount, debits count/amount), specs/HOST-INTERFACE.md §12."""
        cc = ca = dc = da = 0
        for s in self.sent + self.refunds:
            if s.terminal_id != terminal_id or s.voided:
                continue
            if s.txn_type in CREDIT_TYPES:
                cc, ca = cc + 1, ca + s.amount
            elif s.txn_type in DEBIT_TYPES:
                dc, da = dc + 1, da + s.amount
        return cc, ca, dc, da

    def settle(self, terminal_id: str, totals: tuple[int, int, int, int], batch_number: str = "000001"
               ) -> dict[str, str]:
        merchant = next(m for m, t in TERMINALS.items() if t == terminal_id)
        cc, ca, dc, da = totals
        f = {"t": "0500", "3": "920000", "7": utc_stamp(), "11": next_stan(), "41": terminal_id.ljust(8),
             "42": merchant.ljust(15), "60": batch_number, "74": f"{cc:010d}", "86": f"{ca:016d}",
             "76": f"{dc:010d}", "88": f"{da:016d}"}
        return self.call(f)


def full_day(d: Daemon) -> Day:
    """Every transaction type across four merchants and two programs, with voids, refunds, a reversal."""
    day = Day(d)
    c = CARDS
    # M0001 (alliance, 1 point per CNY, 50 bps)
    day.send("M0001", "earn", c[0], 12_345)
    day.send("M0001", "earn", c[1], 20_000)
    day.send("M0001", "topup", c[2], 500)
    v = day.send("M0001", "earn", c[3], 9_999)
    assert v is not None
    day.void(v)
    r = day.send("M0001", "earn", c[0], 10_000)
    assert r is not None
    day.refund(r, 4_000)
    day.send("M0001", "load", c[4], 30_000)
    day.send("M0001", "redeem", c[1], 50)
    day.send("M0001", "lottery", c[0], LOTTERY_PRICE)
    # M0002 (alliance, 2 points per CNY)
    day.send("M0002", "earn", c[5], 5_000)
    day.send("M0002", "redeem", c[0], 80)
    day.send("M0002", "sv_purchase", c[4], 7_000)
    rv = day.send("M0002", "earn", c[2], 7_777)
    assert rv is not None
    day.reverse(rv)
    rd = day.send("M0002", "redeem", c[1], 100)
    assert rd is not None
    day.refund(rd, 100)
    # M0003 (hosted, half a point per CNY, issue price 2, redemption value 2)
    day.send("M0003", "earn", c[0], 20_000)
    day.send("M0003", "redeem", c[0], 40)
    day.send("M0003", "topup", c[1], 1_000)
    ld = day.send("M0003", "load", c[3], 10_000)
    assert ld is not None
    day.void(ld)
    sp = day.send("M0003", "sv_purchase", c[4], 3_000)
    assert sp is not None
    day.refund(sp, 1_000)
    # M0004 (alliance, 1.5 points per CNY, 30 bps, 10 bps on redemptions)
    day.send("M0004", "earn", c[1], 10_000)
    day.send("M0004", "redeem", c[5], 60)
    day.send("M0004", "redeem", c[2], 99_999, expect="51")
    day.inquiry("M0004", c[1])
    return day


def figures_by_merchant(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["merchant_id"]: m for m in summary["merchants"]}
