"""The loyalty state machine again, but every request goes over TCP through a live daemon.

Same rules, same reference model of every member balance and the same book checks as
tests/test_loyalty_model.py; only the driver differs: each domain
request is encoded as the ISO 8583 message a terminal would send (0200 with
its processing code, 0400 with field 90 for reversals, field 37 = the RRN the
switch assigned to the original), sent to a real `switchd serve`, and the
response code is mapped back to the domain's reason. Duplicates are exact
retransmissions of the same frame fields and must be answered identically.

Exchanges are 0200s with processing code 406565 and the target program in field 48 (XP); top-up
cards are redeemed with 210065 and their serial and code in field 48 (VS, VC); a points inquiry's
answer names the next lot to expire (EP, ED), which must be the model's.

The base machine's stored-value pre-authorisations and their model of holds go over the wire as
0100 holds, 0200/0220 completions naming the 0100 in field 90 (capturing part or all of a hold),
and 0400 releases; lots, holds and top-up cards expire together in its time jumps, and every
reconciliation check passes (the switch keeps every response). On the wire only: top-up card
redemptions that cannot be undone.

The terminals have master keys (one 3DES, one AES): each signs on for its working keys, MACs
every request with them, and the first card has a PIN, sent enciphered (field 52 or 110) with
its stored-value purchases, redemptions and draws; a wrong PIN is answered 55, posts nothing and
is recorded as a decline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import soak
import test_loyalty_model as base
from fixtures_daemon import MASTER_KEY_HEX, POS_LISTENER, Daemon, Terminal, db_run, encode, tlv
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from ledger.loyalty import pins
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from ledger.terminals import add_terminal
from switch.handlers.responses import RESPONSE_CODES
from tools import _pin

REASON_BY_CODE = {code: reason for reason, code in RESPONSE_CODES.items()
                  if reason not in (Reason.MERCHANT_INACTIVE, Reason.OUTCOME_UNKNOWN)}

MERCHANT_OF = {tid: merchant for merchant, (tid, _rate) in base.MERCHANTS.items()}
# Each terminal's master key (scheme, key): the sign-on's working keys come under it.
TMK = {"T0000001": ("tdes", "0123456789ABCDEFFEDCBA9876543210"),
       "T0000002": ("aes", "C1D0F8FB4958670DBA40AB1F3752EF0D")}
PIN_CARD, PIN = base.CARDS[0], "2468"  # the card with a PIN, and its PIN
PIN_TYPES = frozenset({TxnType.SV_PURCHASE, TxnType.REDEEM, TxnType.LOTTERY})

_PROC = {
    TxnType.EARN: "000000", TxnType.REDEEM: "006500", TxnType.SV_PURCHASE: "006000",
    TxnType.TOPUP: "210065", TxnType.LOAD: "210060", TxnType.LOTTERY: "906500", TxnType.EXCHANGE: "406565",
}


# Top-up card refusals (ledger.loyalty.vouchers.Refusal) as field 39 (specs/HOST-INTERFACE.md §7.1.1).
VOUCHER_CODES = {None: "00", "invalid": "14", "used": "05", "expired": "54"}


class WireLoyaltyMachine(base.LoyaltyMachine):
    voucher_key = bytes.fromhex(MASTER_KEY_HEX)  # the daemon's: it checks the codes
    exempt_checks: frozenset[str] = frozenset()  # the switch stores every response

    async def open(self) -> None:
        self.redemptions: list[Request] = []  # top-up card redemptions that posted (210065 with VS, VC)
        self.terminals: dict[str, Terminal] = {}
        self.working: dict[str, tuple[bytes, bytes]] = {}  # tid -> the sign-on's (PIN key, MAC key)
        self.pin_failures = 0  # wrong PINs in a row on PIN_CARD (kept below the maximum, 3)
        self.switch_rrn: dict[str, str] = {}  # the model's rrn -> the switch's field 37
        self.frames: dict[str, dict[str, str]] = {}  # key -> the fields sent
        self.responses: dict[str, dict[str, str]] = {}  # key -> the response it got
        await super().open()
        # The machine's own Ledger stays idle; the daemon posts.
        self.workdir = Path(tempfile.mkdtemp(prefix="swwire"))
        # Wrong codes are part of the model: no lockout within an example.
        self.daemon = await asyncio.to_thread(lambda: Daemon(self.workdir, self.db_dsn, [POS_LISTENER],
                                                             extra={"vouchers": {"failures_max": 1000}}).start())
        # ledger.loyalty.demo seeds the domain only; the switch's terminals are ours to add.
        master = bytes.fromhex(MASTER_KEY_HEX)

        async def provision(conn: Any) -> None:
            for merchant, (tid, _rate) in base.MERCHANTS.items():
                scheme, tmk = TMK[tid]
                await add_terminal(conn, tid, merchant, master_key=master, tmk_alg=scheme, tmk=bytes.fromhex(tmk))
            card_id = await pins.card_id_of(conn, PIN_CARD)
            assert card_id is not None
            await pins.set_pin(conn, (master,), card_id, PIN, "wire model")

        await asyncio.to_thread(db_run, self.db_dsn, provision)

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
            resp = t.call({"t": "0800", "7": "0101120000", "11": "999999", "41": tid.ljust(8), "70": "001"})
            assert resp["39"] == "00", resp
            scheme, tmk = TMK[tid]
            self.working[tid] = _pin.working_keys(scheme, bytes.fromhex(tmk), resp["48"])
            self.terminals[tid] = t
        return self.terminals[tid]

    def _call(self, fields: dict[str, str]) -> dict[str, str]:
        """Send a request from its terminal, MACed with the terminal's working MAC key."""
        tid = fields["41"].strip()
        t = self._terminal(tid)
        t.send_raw(t.frame(encode(fields, "pos", (_pin.MAC_ALG[TMK[tid][0]], self.working[tid][1].hex()))))
        return t.recv()

    def _with_pin(self, fields: dict[str, str], pin: str) -> dict[str, str]:
        tid = fields["41"].strip()
        self._terminal(tid)
        scheme = TMK[tid][0]
        block = _pin.pin_block(scheme, self.working[tid][0], pin, fields["2"]).hex().upper()
        return {**fields, _pin.PIN_FIELD[scheme]: block}

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
        if t is TxnType.EXCHANGE and req.target_program:
            f["48"] = f"XP{len(req.target_program):03d}{req.target_program}"
        if req.original_rrn:
            f["37"] = self.switch_rrn.get(req.original_rrn, req.original_rrn)
        if t is TxnType.REVERSAL:
            f["90"] = "0200" + ostan + owhen + "0" * 22
            if req.replacement_amount is not None:
                f["95"] = f"{req.replacement_amount:012d}" + "0" * 30
        if req.pan == PIN_CARD and t in PIN_TYPES:
            f = self._with_pin(f, PIN)
            self.pin_failures = 0  # a right PIN starts the count again
        return f

    def _outcome(self, t: TxnType, resp: dict[str, str]) -> Outcome:
        reason = REASON_BY_CODE[resp["39"]]
        tags = tlv(resp.get("48", ""))
        # An inquiry about a card that never had an account reports it as zero.
        missing = 0 if t is TxnType.INQUIRY else None
        points = int(tags["PB"]) if "PB" in tags else missing
        sv = int(tags["SB"]) if "SB" in tags else missing
        # The next lot to expire: both tags or neither (specs/HOST-INTERFACE.md §7.1).
        assert ("EP" in tags) == ("ED" in tags), tags
        expiring = int(tags["EP"]) if "EP" in tags else None
        expiring_on = dt.datetime.strptime(tags["ED"], "%Y%m%d").date() if "ED" in tags else None
        return Outcome(reason, t, points_balance=points, sv_balance_minor=sv, prize_code=tags.get("LP"),
                       points_expiring=expiring, points_expiring_on=expiring_on)

    def _exchange(self, t: TxnType, req: Request, fields: dict[str, str]) -> dict[str, str]:
        return self._call(fields)

    def newest_journal(self) -> int:
        """The newest journal: the request just answered's, if it posted (the machine sends one
        request at a time; the model's lots follow journals, which the wire does not name)."""
        return int(self.run(self.pool.fetchval("SELECT max(id) FROM ledger.journals")))

    def send(self, t: TxnType, req: Request, expect: Reason) -> Outcome:
        fields = self._fields(t, req)
        resp = self._exchange(t, req, fields)
        out = self._outcome(t, resp)
        prize = 0
        if t is TxnType.LOTTERY and out.approved:
            # The prize is what the balance gained beyond the stake.
            assert out.points_balance is not None
            prize = out.points_balance - (self.model.points[req.pan] - req.amount)
        assert out.reason is expect, (t, req, fields, resp, expect)
        out = Outcome(out.reason, t, journal_id=self.newest_journal() if out.approved else None,
                      points_balance=out.points_balance, sv_balance_minor=out.sv_balance_minor,
                      prize_code=out.prize_code, prize_points=prize, points_expiring=out.points_expiring,
                      points_expiring_on=out.points_expiring_on)
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
        resp = self._call(fields)
        assert resp["39"] == "05", resp  # declined: its reversal came first; nothing posted

    @precondition(lambda self: any(out.approved and out.journal_id for _, _, out in self.model.sent))
    @rule(data=st.data())
    def duplicate(self, data: Any) -> None:  # type: ignore[override]
        t, req, _first = data.draw(st.sampled_from(
            [s for s in self.model.sent if s[2].approved and s[2].journal_id]))
        frame = self.frames[req.key]
        again = self._call(frame)
        assert again == self.responses[req.key], (again, self.responses[req.key])

    @rule(card=st.sampled_from(base.CARDS), index=st.integers(0, base.VOUCHERS - 1), right=st.booleans())
    def voucher_redeem(self, card: str, index: int, right: bool) -> None:  # type: ignore[override]
        v = self.model.vouchers[index]
        code = v.code if right else f"{(int(v.code) + 1) % 10 ** 16:016d}"
        req = self.request(card, "M0001", base.VOUCHER_POINTS, currency=None)
        tid, stan, when = req.key.split("|")
        fields = {"t": "0200", "2": card, "3": "210065", "4": f"{base.VOUCHER_POINTS:012d}", "7": when, "11": stan,
                  "41": tid.ljust(8), "42": "M0001".ljust(15), "48": f"VS012{v.serial}VC016{code}"}
        resp = self._call(fields)
        self._record(TxnType.TOPUP, req, fields, resp)  # its retransmission is answered the same
        if card in self.model.blocked:  # the card of field 2 must be active, before anything else
            assert resp["39"] == "14", resp
            return
        refusal = self.voucher_expect(card, v, right)
        assert resp["39"] == VOUCHER_CODES[None if refusal is None else str(refusal)], (resp, v, card)
        if refusal is None:
            if v.status == "issued":
                # The first: the one that posted. (Asked again by the same card under another
                # STAN it is approved again, with that request's RRN, which names no transaction.)
                self.redemptions.append(req)
            self.voucher_credited(card, v, self.newest_journal())
            assert tlv(resp["48"])["PE"] == str(base.VOUCHER_POINTS)
            assert int(tlv(resp["48"])["PB"]) == self.model.points[card], (resp, self.model.points)

    @precondition(lambda self: self.redemptions)
    @rule(data=st.data(), how=st.sampled_from([TxnType.REVERSAL, TxnType.VOID, TxnType.REFUND]))
    def undo_redemption(self, data: Any, how: TxnType) -> None:
        """A top-up card redemption cannot be undone (specs/HOST-INTERFACE.md §7.1.1): a 0400 of it is
        answered as for an unknown original, a void or a refund naming it is declined; nothing
        changes (the invariants check it), and its retransmission is still answered as it was."""
        r = data.draw(st.sampled_from(self.redemptions))
        if how is TxnType.REVERSAL:
            req = self.request(r.pan, "M0001", r.amount, currency=None, original_key=r.key)
        else:
            req = self.request(r.pan, "M0001", r.amount, currency=None, account="65", original_rrn=r.rrn)
        fields = self._fields(how, req)
        resp = self._call(fields)
        if how is TxnType.REVERSAL:
            expect = Reason.ORIGINAL_NOT_FOUND  # a reversal names its original by key, not card
        else:
            expect = self.card_reason(r.pan) or Reason.INVALID_TXN
        assert REASON_BY_CODE[resp["39"]] is expect, (r, fields, resp, expect)
        self._record(how, req, fields, resp)

    # ---------------------------------------------------------------- pre-authorisations

    def _record(self, t: TxnType, req: Request, fields: dict[str, str], resp: dict[str, str]) -> None:
        """Keep a request sent by the rules that build their own frames as ``send`` keeps its own (duplicates resend it)."""
        approved = resp["39"] == "00"
        if approved and "37" in resp:
            self.switch_rrn[req.rrn] = resp["37"]
        self.frames[req.key] = fields
        self.responses[req.key] = resp
        self.model.sent.append((t, req, Outcome(REASON_BY_CODE[resp["39"]], t, journal_id=1 if approved else None)))

    def _preauth_fields(self, mti: str, req: Request, **extra: str) -> dict[str, str]:
        tid, stan, when = req.key.split("|")
        return {"t": mti, "2": req.pan, "3": "006000", "4": f"{req.amount:012d}", "7": when, "11": stan,
                "41": tid.ljust(8), "42": req.merchant_id.ljust(15), "49": "156", **extra}

    def _names(self, p: base.Preauth) -> str:
        """Field 90 naming ``p``'s 0100."""
        sent = self.frames[p.req.key]
        return "0100" + sent["11"] + sent["7"] + "0" * 22

    # The base machine's pre-authorisation rules and model, their requests sent as 0100, 0200 or
    # 0220 naming the 0100 in field 90, and 0400 naming it.

    def _send_preauth(self, req: Request, expect: Reason) -> None:
        fields = self._preauth_fields("0100", req)
        if req.pan == PIN_CARD:  # a stored-value payment: its PIN goes with the 0100, not the completion
            fields = self._with_pin(fields, PIN)
            self.pin_failures = 0
        resp = self._call(fields)
        assert REASON_BY_CODE[resp["39"]] is expect, (fields, resp, expect)
        self._record(TxnType.PREAUTH, req, fields, resp)
        if expect is Reason.APPROVED:
            assert resp["t"] == "0110" and "HT" in tlv(resp["48"]), resp

    def _send_completion(self, p: base.Preauth, req: Request, expect: Reason, advice: bool) -> int | None:
        fields = self._preauth_fields("0220" if advice else "0200", req, **{"90": self._names(p)})
        resp = self._call(fields)
        assert REASON_BY_CODE[resp["39"]] is expect, (p, fields, resp, expect)
        assert resp["t"] == ("0230" if advice else "0210")
        self._record(TxnType.COMPLETION, req, fields, resp)
        return self.newest_journal() if expect is Reason.APPROVED else None

    def _send_release(self, p: base.Preauth, req: Request, expect: Reason) -> None:
        fields = self._preauth_fields("0400", req, **{"90": self._names(p)})
        resp = self._call(fields)
        assert REASON_BY_CODE[resp["39"]] is expect, (p, fields, resp, expect)
        self._record(TxnType.REVERSAL, req, fields, resp)

    @precondition(lambda self: self.pin_failures < 2)
    @rule(amount=st.integers(1, 5_000),
          pay=st.sampled_from([TxnType.SV_PURCHASE, TxnType.REDEEM, TxnType.PREAUTH]))
    def wrong_pin(self, amount: int, pay: TxnType) -> None:
        """A wrong PIN is answered 55 and changes no balance nor hold (the invariants check it)."""
        failures = self.pin_failures
        money = pay is not TxnType.REDEEM
        req = self.request(PIN_CARD, "M0002", amount, currency="156" if money else None)
        plain = self._preauth_fields("0100", req) if pay is TxnType.PREAUTH else self._fields(pay, req)
        fields = self._with_pin(plain, "1357")  # in place of the right PIN
        recorded = self._pin_declines()
        resp = self._call(fields)
        assert resp["39"] == "55", resp
        self.pin_failures = failures + 1
        # Recorded as every decline is (no journal, its reason), once: its retransmission is answered
        # the same from the stored answer, and counts no second try.
        assert self._pin_declines() == recorded + 1
        assert self._call(fields)["39"] == "55"
        assert self._pin_declines() == recorded + 1

    def _pin_declines(self) -> int:
        return int(self.run(self.pool.fetchval(
            "SELECT count(*) FROM loyalty.transactions WHERE reason = 'pin_incorrect' AND journal_id IS NULL")))



@pytest.mark.e2e  # it starts a daemon per hypothesis example, with no fixture to tell
def test_loyalty_model_over_the_wire(admin_dsn: str, template_db: str) -> None:
    base.SERVER.update(admin=admin_dsn, template=template_db)
    WireLoyaltyMachine.TestCase.settings = settings(
        max_examples=soak.examples(8), stateful_step_count=soak.steps(25), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    WireLoyaltyMachine.TestCase().runTest()
