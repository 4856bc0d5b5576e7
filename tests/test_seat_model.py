"""Random sequences of web seat forms against a model of every member balance.

Every kind the seat offers, at two merchants' seats, with blocked cards, voids and partial
refunds, forms posted again (alone and at once, as a double click does) and forms reused
with other content. After every step: each answer is the model's, a form posted again gets
its first answer, member balances are the model's, and every reconciliation check passes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import soak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from ledger_support import ledger_settings
from model_support import SERVER, DatabaseMachine

from ledger import reconcile
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, demo, seat
from ledger.loyalty.cards import set_card_status
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Reason, TxnType
from ledger.loyalty.rules import undo_targets
from ledger.loyalty.seat import SeatResult

CARDS = [demo.demo_pan(1), demo.demo_pan(2)]
RATES = {"M0001": 1, "M0002": 2}  # points per CNY (ledger.loyalty.demo)


@dataclass(frozen=True)
class Form:
    request_id: str
    kind: str
    card: str
    merchant: str
    amount: int | None
    original_rrn: str | None = None


@dataclass
class Orig:
    """An approved purchase-like seat transaction, as the model sees it."""

    form: Form
    rrn: str
    txn_type: TxnType
    member_leg: int  # points or minor units moved on the member's account
    member_sign: int  # +1: the original credited the member
    undone_units: int = 0
    undone_leg: int = 0
    voided: bool = False

    @property
    def amount(self) -> int:
        assert self.form.amount is not None
        return self.form.amount


@dataclass
class Model:
    points: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))
    sv: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))
    blocked: set[str] = field(default_factory=set)
    originals: list[Orig] = field(default_factory=list)
    answered: list[tuple[Form, SeatResult]] = field(default_factory=list)


def _same_answer(first: SeatResult, again: SeatResult) -> bool:
    return replace(again, replayed=False, detail="") == replace(first, detail="")


class SeatMachine(DatabaseMachine):
    db_prefix = "switchd_s"

    def __init__(self) -> None:
        self.model = Model()
        super().__init__()

    async def open(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await demo.seed(conn, cards=len(CARDS))
        self.card_ids = {pan: await card_numbers.card_id_by_number(self.pool, pan) for pan in CARDS}
        self.card_pans = {card_id: pan for pan, card_id in self.card_ids.items()}
        ledger = Ledger(self.pool, ledger_settings())
        await ledger.start()
        self.ledger = ledger
        self.loy = Loyalty(self.ledger)

    async def close(self) -> None:
        if hasattr(self, "ledger"):
            await self.ledger.stop()

    # ---------------------------------------------------------------- plumbing

    async def _take(self, f: Form) -> SeatResult:
        return await seat.take(self.loy, f.merchant, "op-model", f.request_id, f.kind, f.card, f.amount,
                               None, f.original_rrn)

    async def _twice(self, f: Form) -> list[SeatResult]:
        return list(await asyncio.gather(self._take(f), self._take(f)))

    def submit(self, f: Form, expect: Reason, twice_at_once: bool = False) -> SeatResult:
        if twice_at_once:
            a, b = self.run(self._twice(f))
            first, other = (a, b) if not a.replayed else (b, a)
            assert _same_answer(first, other), (first, other)
        else:
            first = self.run(self._take(f))
        assert first.reason is expect, (f, first, expect)
        assert not first.replayed
        self.model.answered.append((f, first))
        return first

    def card_reason(self, card: str) -> Reason | None:
        return Reason.CARD_BLOCKED if card in self.model.blocked else None

    def apply(self, o: Orig, delta: int) -> None:
        """Undo ``delta`` more of ``o``'s member leg."""
        book = self.model.points if o.txn_type in (TxnType.EARN, TxnType.REDEEM, TxnType.TOPUP) else self.model.sv
        book[o.form.card] -= o.member_sign * delta
        o.undone_leg += delta

    # ---------------------------------------------------------------- purchase-like

    @rule(card=st.sampled_from(CARDS), merchant=st.sampled_from(sorted(RATES)), amount=st.integers(1, 20_000),
          at_once=st.booleans())
    def earn(self, card: str, merchant: str, amount: int, at_once: bool) -> None:
        f = Form(seat.new_request_id(), "earn", card, merchant, amount)
        r = self.submit(f, self.card_reason(card) or Reason.APPROVED, at_once)
        if r.approved:
            pts = amount * RATES[merchant] // 100
            self.model.points[card] += pts
            assert r.rrn is not None and r.points_balance == self.model.points[card]
            self.model.originals.append(Orig(f, r.rrn, TxnType.EARN, pts, +1))

    @rule(card=st.sampled_from(CARDS), merchant=st.sampled_from(sorted(RATES)),
          kind=st.sampled_from(["redeem", "topup", "load", "sv_purchase"]), amount=st.integers(1, 600),
          at_once=st.booleans())
    def balance_op(self, card: str, merchant: str, kind: str, amount: int, at_once: bool) -> None:
        t = TxnType(kind)
        book = self.model.points if t in (TxnType.REDEEM, TxnType.TOPUP) else self.model.sv
        sign = +1 if t in (TxnType.TOPUP, TxnType.LOAD) else -1
        short = sign < 0 and book[card] < amount
        f = Form(seat.new_request_id(), kind, card, merchant, amount)
        r = self.submit(f, self.card_reason(card) or (Reason.INSUFFICIENT if short else Reason.APPROVED), at_once)
        if r.approved:
            book[card] += sign * amount
            assert r.rrn is not None
            self.model.originals.append(Orig(f, r.rrn, t, amount, sign))

    @rule(card=st.sampled_from(CARDS), merchant=st.sampled_from(sorted(RATES)))
    def inquiry(self, card: str, merchant: str) -> None:
        r = self.submit(Form(seat.new_request_id(), "inquiry", card, merchant, None),
                        self.card_reason(card) or Reason.APPROVED)
        if r.approved:
            assert (r.points_balance, r.sv_balance_minor) == (self.model.points[card], self.model.sv[card])

    @rule(card=st.sampled_from(CARDS))
    def block_or_unblock(self, card: str) -> None:
        blocked = card in self.model.blocked
        self.run(set_card_status(self.pool, card, "active" if blocked else "blocked"))
        (self.model.blocked.discard if blocked else self.model.blocked.add)(card)

    # ---------------------------------------------------------------- void and refund

    @precondition(lambda self: self.model.originals)
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        o = data.draw(st.sampled_from(self.model.originals))
        remaining_leg = o.member_leg - o.undone_leg
        if self.card_reason(o.form.card):
            expect = Reason.CARD_BLOCKED
        elif o.voided or o.undone_units:
            expect = Reason.INVALID_TXN
        elif o.txn_type in (TxnType.TOPUP, TxnType.LOAD) and (
                (self.model.points if o.txn_type is TxnType.TOPUP else self.model.sv)[o.form.card] < remaining_leg):
            expect = Reason.INSUFFICIENT
        else:
            expect = Reason.APPROVED
        f = Form(seat.new_request_id(), "void", o.form.card, o.form.merchant, None, o.rrn)
        if self.submit(f, expect).approved:
            o.voided = True
            o.undone_units = o.amount
            self.apply(o, remaining_leg)

    @precondition(lambda self: self.model.originals)
    @rule(data=st.data(), fraction=st.integers(1, 100))
    def refund(self, data: st.DataObject, fraction: int) -> None:
        o = data.draw(st.sampled_from(self.model.originals))
        amount = max(1, o.amount * fraction // 100)
        if self.card_reason(o.form.card):
            expect = Reason.CARD_BLOCKED
        elif o.txn_type not in (TxnType.EARN, TxnType.REDEEM, TxnType.SV_PURCHASE):
            expect = Reason.INVALID_TXN
        elif o.voided:
            expect = Reason.INVALID_TXN
        elif o.undone_units + amount > o.amount:
            expect = Reason.EXCEEDS_LIMIT
        else:
            expect = Reason.APPROVED
        f = Form(seat.new_request_id(), "refund", o.form.card, o.form.merchant, amount, o.rrn)
        if self.submit(f, expect).approved:
            o.undone_units += amount
            target = undo_targets([o.member_leg], o.amount, o.undone_units)[0]
            self.apply(o, target - o.undone_leg)

    # ---------------------------------------------------------------- the same form again

    @precondition(lambda self: self.model.answered)
    @rule(data=st.data())
    def post_again(self, data: st.DataObject) -> None:
        f, first = data.draw(st.sampled_from(self.model.answered))
        again: SeatResult = self.run(self._take(f))
        assert again.replayed and _same_answer(first, again), (f, first, again)

    @precondition(lambda self: self.model.answered)
    @rule(data=st.data())
    def reuse_with_other_content(self, data: st.DataObject) -> None:
        f, _ = data.draw(st.sampled_from(self.model.answered))
        other = replace(f, card=CARDS[1] if f.card == CARDS[0] else CARDS[0])
        r: SeatResult = self.run(self._take(other))
        assert (r.reason, r.rrn, r.journal_id) == (Reason.DUPLICATE_MISMATCH, None, None)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def balances_are_the_models(self) -> None:
        rows = self.run(self.pool.fetch(
            "SELECT c.id, a.purpose, a.posted FROM ledger.accounts a JOIN loyalty.cards c "
            "ON a.owner_kind = 'card' AND a.owner_id = c.id::text"))
        points = dict.fromkeys(CARDS, 0)
        sv = dict.fromkeys(CARDS, 0)
        for r in rows:
            (points if r["purpose"] == "points" else sv)[self.card_pans[r["id"]]] += int(r["posted"])
        assert (points, sv) == (self.model.points, self.model.sv)

    @invariant()
    def books_balance(self) -> None:
        report = self.run(reconcile.run(self.pool, None))
        assert report.ok, [p.__dict__ for p in report.problems]


def test_seat_model(admin_dsn: str, template_db: str) -> None:
    SERVER.update(admin=admin_dsn, template=template_db)
    SeatMachine.TestCase.settings = settings(
        max_examples=soak.examples(10), stateful_step_count=soak.steps(25), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    SeatMachine.TestCase().runTest()
