"""The loyalty state machine again, but every request goes over TCP through a live daemon.

Same rules (time jumps that expire points lots included), same reference model of every member
balance and lot, and the same book checks as tests/test_loyalty_model.py; only the driver differs: each domain
request is encoded as the ISO 8583 message a terminal would send (0200 with
its processing code, 0400 with field 90 for reversals, field 37 = the RRN the
switch assigned to the original), sent to a real `switchd serve`, and the
response code is mapped back to the domain's reason. Duplicates are exact
retransmissions of the same frame fields and must be answered identically.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import soak
import test_loyalty_model as base
from fixtures_daemon import POS_LISTENER, Daemon, Terminal, tlv
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from switch.handlers.responses import RESPONSE_CODES

REASON_BY_CODE = {code: reason for reason, code in RESPONSE_CODES.items()
                  if reason not in (Reason.MERCHANT_INACTIVE, Reason.OUTCOME_UNKNOWN)}

MERCHANT_OF = {tid: merchant for merchant, (tid, _rate) in base.MERCHANTS.items()}

_PROC = {
    TxnType.EARN: "000000", TxnType.REDEEM: "006500", TxnType.SV_PURCHASE: "006000",
    TxnType.TOPUP: "210065", TxnType.LOAD: "210060", TxnType.LOTTERY: "906500",
}


class WireLoyaltyMachine(base.LoyaltyMachine):
    async def open(self) -> None:
        self.terminals: dict[str, Terminal] = {}
        self.switch_rrn: dict[str, str] = {}  # the model's rrn -> the switch's field 37
        self.frames: dict[str, dict[str, str]] = {}  # key -> the fields sent
        self.responses: dict[str, dict[str, str]] = {}  # key -> the response it got
        await super().open()
        # The machine's own Ledger stays idle; the daemon posts.
        self.workdir = Path(tempfile.mkdtemp(prefix="swwire"))
        self.daemon = await asyncio.to_thread(lambda: Daemon(self.workdir, self.db_dsn, [POS_LISTENER]).start())
        # ledger.loyalty.demo seeds the domain only; the switch's terminals are ours to add.
        for merchant, (tid, _rate) in base.MERCHANTS.items():
            await asyncio.to_thread(self.daemon.add_terminal, tid, merchant)

    def teardown(self) -> None:
        """Also after a failed setup: whatever was started is stopped, whatever was made is removed."""
        try:
            for t in self.terminals.values():
                t.close()
            if hasattr(self, "daemon"):
                code = self.daemon.stop()
                assert code == 0, f"daemon exited {code}:\n{self.daemon.log_text()[-4000:]}"
        finally:
            try:
                super().teardown()
            finally:
                if hasattr(self, "workdir"):
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def _terminal(self, tid: str) -> Terminal:
        if tid not in self.terminals:
            t = Terminal(self.daemon.ports["pos"], "nac2", "pos")
            t.call({"t": "0800", "7": "0101120000", "11": "999999", "41": tid.ljust(8), "70": "001"})
            self.terminals[tid] = t
        return self.terminals[tid]

    def _fields(self, t: TxnType, req: Request) -> dict[str, str]:
        tid, stan, when = req.key.split("|")
        if t is TxnType.REVERSAL:
            assert req.original_key is not None
            # On the wire a reversal comes from the original's terminal (field 90 has no
            # terminal id); the domain-level model may name any original.
            tid, ostan, owhen = req.original_key.split("|")
            # "As original": its processing code when we sent it, else a purchase's.
            mti, proc = "0400", self.frames.get(req.original_key, {}).get("3", "000000")
        elif t is TxnType.INQUIRY:
            mti, proc = "0200", f"31{req.account}00"
        elif t in (TxnType.VOID, TxnType.REFUND):
            mti, proc = "0200", ("02" if t is TxnType.VOID else "20") + req.account + "00"
        else:
            mti, proc = "0200", _PROC[t]
        f = {"t": mti, "2": req.pan, "3": proc, "4": f"{req.amount:012d}", "7": when, "11": stan,
             "41": tid.ljust(8), "42": MERCHANT_OF.get(tid, req.merchant_id).ljust(15)}
        if req.currency:
            f["49"] = req.currency
        elif t is TxnType.REVERSAL and proc[2:4] != "65" and proc[4:6] != "65":
            f["49"] = "156"  # a money amount needs its currency
        if req.original_rrn:
            f["37"] = self.switch_rrn.get(req.original_rrn, req.original_rrn)
        if t is TxnType.REVERSAL:
            f["90"] = "0200" + ostan + owhen + "0" * 22
            if req.replacement_amount is not None:
                f["95"] = f"{req.replacement_amount:012d}" + "0" * 30
        return f

    def _outcome(self, t: TxnType, resp: dict[str, str]) -> Outcome:
        reason = REASON_BY_CODE[resp["39"]]
        tags = tlv(resp.get("48", ""))
        # An inquiry about a card that never had an account reports it as zero.
        missing = 0 if t is TxnType.INQUIRY else None
        points = int(tags["PB"]) if "PB" in tags else missing
        sv = int(tags["SB"]) if "SB" in tags else missing
        return Outcome(reason, t, points_balance=points, sv_balance_minor=sv, prize_code=tags.get("LP"))

    def _exchange(self, t: TxnType, req: Request, fields: dict[str, str]) -> dict[str, str]:
        return self._terminal(fields["41"].strip()).call(fields)

    def send(self, t: TxnType, req: Request, expect: Reason) -> Outcome:
        fields = self._fields(t, req)
        resp = self._exchange(t, req, fields)
        out = self._outcome(t, resp)
        if t is TxnType.LOTTERY and out.approved:
            # The prize is what the balance gained beyond the stake.
            assert out.points_balance is not None
            prize = out.points_balance - (self.model.points[req.pan] - req.amount)
            out = Outcome(out.reason, t, points_balance=out.points_balance, prize_points=prize,
                          prize_code=out.prize_code)
        assert out.reason is expect, (t, req, fields, resp, expect)
        if out.approved:
            # The machine sends one request at a time: the newest journal is this request's, if
            # it posted (the model's lots follow journals; the wire does not name them).
            jid = self.run(self.pool.fetchval("SELECT max(id) FROM ledger.journals"))
            out = Outcome(out.reason, t, journal_id=jid, points_balance=out.points_balance,
                          sv_balance_minor=out.sv_balance_minor, prize_code=out.prize_code,
                          prize_points=out.prize_points)
        if out.approved and "37" in resp:
            self.switch_rrn[req.rrn] = resp["37"]
        self.frames[req.key] = fields
        self.model.sent.append((t, req, Outcome(out.reason, t, journal_id=1 if out.approved else None,
                                                points_balance=out.points_balance,
                                                sv_balance_minor=out.sv_balance_minor)))
        self.responses[req.key] = resp
        if not out.approved and t is not TxnType.REVERSAL:
            self.model.declined_keys.append(req.key)
        return out

    # The two rules that called the domain directly go over the wire too (re-declared
    # with their decorators: hypothesis finds rules by the marks on the class's attributes).
    @precondition(lambda self: self.model.marked_keys)
    @rule(data=st.data())
    def late_original(self, data: Any) -> None:  # type: ignore[override]
        key = data.draw(st.sampled_from(self.model.marked_keys))
        tid, stan, when = key.split("|")
        fields = {"t": "0200", "2": base.CARDS[0], "3": "000000", "4": "000000001000", "7": when, "11": stan,
                  "41": tid.ljust(8), "42": "M0001".ljust(15), "49": "156"}
        resp = self._terminal(tid).call(fields)
        assert resp["39"] == "05", resp  # declined: its reversal came first; nothing posted

    @precondition(lambda self: any(out.approved and out.journal_id for _, _, out in self.model.sent))
    @rule(data=st.data())
    def duplicate(self, data: Any) -> None:  # type: ignore[override]
        t, req, _first = data.draw(st.sampled_from(
            [s for s in self.model.sent if s[2].approved and s[2].journal_id]))
        frame = self.frames[req.key]
        again = self._terminal(frame["41"].strip()).call(frame)
        assert again == self.responses[req.key], (again, self.responses[req.key])



@pytest.mark.e2e  # it starts a daemon per hypothesis example, with no fixture to tell
def test_loyalty_model_over_the_wire(admin_dsn: str, template_db: str) -> None:
    base.SERVER.update(admin=admin_dsn, template=template_db)
    WireLoyaltyMachine.TestCase.settings = settings(
        max_examples=soak.examples(6), stateful_step_count=soak.steps(25), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    WireLoyaltyMachine.TestCase().runTest()
