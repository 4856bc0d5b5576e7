"""The loyalty state machine with points expiry: every operation against a model of every balance and lot.

A program whose points expire a month after their business day: earns, redemptions, top-ups,
draws, voids, refunds (partial), reversals (full, partial, of declined and of unknown
originals), late originals, duplicate resubmissions and time jumps whose end of day expires the
lots due, through the real Ledger on a fresh database per example. Every lot is the model's
(ledger.loyalty.lots.LotBook). The exchange, top-up card and pre-authorisation rules are in
tests/test_loyalty_model.py and its wire version. After every step: the outcome is the model's,
member balances are the model's, every asset sums to zero and every cached
balance equals the sum of its entries.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any

import soak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from ledger_support import ledger_settings
from model_support import SERVER, DatabaseMachine

from ledger import reconcile
from ledger.audit import check_books
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, demo, lots
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from ledger.loyalty.programs import Prize, set_lottery
from ledger.loyalty.rules import undo_targets

CARDS = [demo.demo_pan(1), demo.demo_pan(2)]
MERCHANTS = {"M0001": ("T0000001", 1), "M0002": ("T0000002", 2)}  # terminal, points per CNY
# The demo program's prizes (ledger.loyalty.demo), each made the whole table in turn (see lottery).
PRIZES = [Prize("NONE", 0, 1), Prize("SMALL", 20, 1), Prize("BIG", 100, 1)]
EXPIRY_MONTHS = 1  # ALLY's points expire a month after their business day


@dataclass
class Orig:
    """An approved purchase-like transaction, as the model sees it."""

    req: Request
    txn_type: TxnType
    member_leg: int  # points or minor units moved on the member's account
    member_sign: int  # +1: the original credited the member
    journal: int | None = None
    day: dt.date | None = None  # its business day (a void must come on it)
    undone_units: int = 0
    undone_leg: int = 0
    voided: bool = False
    reversed: bool = False


@dataclass
class Model:
    points: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))
    sv: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))
    blocked: set[str] = field(default_factory=set)
    originals: list[Orig] = field(default_factory=list)
    sent: list[tuple[TxnType, Request, Outcome]] = field(default_factory=list)
    declined_keys: list[str] = field(default_factory=list)
    marked_keys: list[str] = field(default_factory=list)
    book: lots.LotBook = field(default_factory=lots.LotBook)
    open_date: dt.date = dt.date(2000, 1, 1)
    expiries: int = 0


class ExpiryLoyaltyMachine(DatabaseMachine):
    pool_size_max = 4

    def __init__(self) -> None:
        self.model = Model()
        self.seq = itertools.count(1)
        super().__init__()

    async def open(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await demo.seed(conn, cards=len(CARDS))
            await lots.set_expiry(conn, "ALLY", EXPIRY_MONTHS)
        self.card_ids = {pan: await card_numbers.card_id_by_number(self.pool, pan) for pan in CARDS}
        self.card_pans = {card_id: pan for pan, card_id in self.card_ids.items()}
        self.model.open_date = await self.pool.fetchval("SELECT open_date FROM ledger.business_day")
        ledger = Ledger(self.pool, ledger_settings())
        await ledger.start()
        self.ledger = ledger
        self.loy = Loyalty(self.ledger)

    async def close(self) -> None:
        if hasattr(self, "ledger"):
            await self.ledger.stop()

    # ---------------------------------------------------------------- plumbing

    def request(self, card: str, merchant: str, amount: int, currency: str | None = "156", **kw: Any) -> Request:
        n = next(self.seq)
        terminal = MERCHANTS[merchant][0]
        return Request(key=f"{terminal}|{n:06d}|0101120000", terminal_id=terminal, merchant_id=merchant, pan=card,
                       amount=amount, currency=currency, rrn=f"{n:012d}", stan=f"{n:06d}", **kw)

    def send(self, t: TxnType, req: Request, expect: Reason) -> Outcome:
        out: Outcome = self.run(self.loy.execute(t, req))
        assert out.reason is expect, (t, req, out, expect)
        self.model.sent.append((t, req, out))
        if not out.approved and t is not TxnType.REVERSAL:
            self.model.declined_keys.append(req.key)
        return out

    def lot(self, out: Outcome, card: str, amount: int, undoes: int | None = None) -> None:
        """The model's lots follow one entry of ``amount`` on ``card``'s points."""
        if amount:
            assert out.journal_id is not None
            self.model.book.apply(out.journal_id, CARDS.index(card), amount,
                                  lots.add_months(self.model.open_date, EXPIRY_MONTHS), undoes)

    def card_reason(self, card: str) -> Reason | None:
        return Reason.CARD_BLOCKED if card in self.model.blocked else None

    # ---------------------------------------------------------------- purchase-like

    @rule(card=st.sampled_from(CARDS), merchant=st.sampled_from(sorted(MERCHANTS)),
          amount=st.integers(1, 20_000))
    def earn(self, card: str, merchant: str, amount: int) -> None:
        req = self.request(card, merchant, amount)
        expect = self.card_reason(card) or Reason.APPROVED
        out = self.send(TxnType.EARN, req, expect)
        if out.approved:
            pts = amount * MERCHANTS[merchant][1] // 100
            self.model.points[card] += pts
            self.lot(out, card, pts)
            self.model.originals.append(Orig(req, TxnType.EARN, pts, +1, out.journal_id, self.model.open_date))

    @rule(card=st.sampled_from(CARDS), amount=st.integers(1, 400), kind=st.sampled_from(["redeem", "topup"]))
    def points_op(self, card: str, amount: int, kind: str) -> None:
        req = self.request(card, "M0001", amount, currency=None)
        t = TxnType(kind)
        short = t is TxnType.REDEEM and self.model.points[card] < amount
        expect = self.card_reason(card) or (Reason.INSUFFICIENT if short else Reason.APPROVED)
        out = self.send(t, req, expect)
        if out.approved:
            sign = -1 if t is TxnType.REDEEM else 1
            self.model.points[card] += sign * amount
            self.lot(out, card, sign * amount)
            self.model.originals.append(Orig(req, t, amount, sign, out.journal_id, self.model.open_date))

    @rule(card=st.sampled_from(CARDS), amount=st.integers(1, 5_000), kind=st.sampled_from(["load", "sv_purchase"]))
    def money_op(self, card: str, amount: int, kind: str) -> None:
        req = self.request(card, "M0002", amount)
        t = TxnType(kind)
        short = t is TxnType.SV_PURCHASE and self.model.sv[card] < amount
        expect = self.card_reason(card) or (Reason.INSUFFICIENT if short else Reason.APPROVED)
        out = self.send(t, req, expect)
        if out.approved:
            sign = -1 if t is TxnType.SV_PURCHASE else 1
            self.model.sv[card] += sign * amount
            self.model.originals.append(Orig(req, t, amount, sign, out.journal_id, self.model.open_date))

    @rule(card=st.sampled_from(CARDS), prize=st.sampled_from(PRIZES))
    def lottery(self, card: str, prize: Prize) -> None:
        # The product draws with `secrets`. A prize table of one line makes the draw's outcome the
        # one hypothesis chose: later rules sample from lists that earlier outcomes built (the
        # declined keys, the originals), and a replay that took another path would be rejected
        # as flaky instead of shrunk. The draw itself still runs, over a table of one.
        async def one_prize() -> None:
            async with self.pool.acquire() as conn:
                await set_lottery(conn, "ALLY", 10, [prize])
        self.run(one_prize())
        req = self.request(card, "M0001", 10, currency=None)
        short = self.model.points[card] < 10
        out = self.send(TxnType.LOTTERY, req, self.card_reason(card) or (
            Reason.INSUFFICIENT if short else Reason.APPROVED))
        if out.approved:
            assert out.prize_points == prize.points, (out, prize)
            self.model.points[card] += out.prize_points - 10
            self.lot(out, card, -10)
            self.lot(out, card, out.prize_points)

    @rule(card=st.sampled_from(CARDS))
    def inquiry(self, card: str) -> None:
        out = self.send(TxnType.INQUIRY, self.request(card, "M0001", 0, account="00"),
                        self.card_reason(card) or Reason.APPROVED)
        if out.approved:
            assert (out.points_balance, out.sv_balance_minor) == (self.model.points[card], self.model.sv[card])

    @rule(card=st.sampled_from(CARDS))
    def toggle_block(self, card: str) -> None:
        if card in self.model.blocked:
            self.model.blocked.discard(card)
            status = "active"
        else:
            self.model.blocked.add(card)
            status = "blocked"
        self.run(self.pool.execute("UPDATE loyalty.cards SET status=$2 WHERE id=$1", self.card_ids[card], status))

    # ---------------------------------------------------------------- compensations

    def apply(self, o: Orig, delta_leg: int, out: Outcome) -> None:
        # Undoing moves the member the other way from the original.
        in_points = o.txn_type.in_points or o.txn_type is TxnType.EARN
        book = self.model.points if in_points else self.model.sv
        book[o.req.pan] -= o.member_sign * delta_leg
        if in_points:
            self.lot(out, o.req.pan, -o.member_sign * delta_leg, undoes=o.journal)
        o.undone_leg += delta_leg

    @precondition(lambda self: self.model.originals)
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        o = data.draw(st.sampled_from(self.model.originals))
        req = self.request(o.req.pan, o.req.merchant_id, o.req.amount, o.req.currency,
                           account=o.txn_type.account, original_rrn=o.req.rrn)
        remaining_leg = o.member_leg - o.undone_leg
        if self.card_reason(o.req.pan):
            expect = Reason.CARD_BLOCKED
        elif o.voided or o.reversed or o.undone_units or o.day != self.model.open_date:
            expect = Reason.INVALID_TXN
        elif o.txn_type in (TxnType.TOPUP, TxnType.LOAD) and (
                (self.model.points if o.txn_type is TxnType.TOPUP else self.model.sv)[o.req.pan] < remaining_leg):
            expect = Reason.INSUFFICIENT
        else:
            expect = Reason.APPROVED
        out = self.send(TxnType.VOID, req, expect)
        if out.approved:
            o.voided = True
            o.undone_units = o.req.amount
            self.apply(o, remaining_leg, out)

    @precondition(lambda self: self.model.originals)
    @rule(data=st.data(), fraction=st.integers(1, 100))
    def refund(self, data: st.DataObject, fraction: int) -> None:
        o = data.draw(st.sampled_from(self.model.originals))
        amount = max(1, o.req.amount * fraction // 100)
        req = self.request(o.req.pan, o.req.merchant_id, amount, o.req.currency,
                           account=o.txn_type.account, original_rrn=o.req.rrn)
        if self.card_reason(o.req.pan):
            expect = Reason.CARD_BLOCKED
        elif o.txn_type not in (TxnType.EARN, TxnType.REDEEM, TxnType.SV_PURCHASE):
            expect = Reason.INVALID_TXN
        elif (o.voided or o.reversed) and o.undone_units >= o.req.amount:
            expect = Reason.INVALID_TXN
        elif o.undone_units + amount > o.req.amount:
            expect = Reason.EXCEEDS_LIMIT
        else:
            expect = Reason.APPROVED
        out = self.send(TxnType.REFUND, req, expect)
        if out.approved:
            o.undone_units += amount
            target = undo_targets([o.member_leg], o.req.amount, o.undone_units)[0]
            self.apply(o, target - o.undone_leg, out)

    @precondition(lambda self: self.model.originals)
    @rule(data=st.data(), partial=st.booleans())
    def reverse(self, data: st.DataObject, partial: bool) -> None:
        o = data.draw(st.sampled_from(self.model.originals))
        replacement = o.req.amount // 2 if partial else None
        req = self.request(o.req.pan, o.req.merchant_id, o.req.amount, o.req.currency,
                           original_key=o.req.key, replacement_amount=replacement)
        out = self.send(TxnType.REVERSAL, req, Reason.APPROVED)
        if o.reversed:
            return
        after = o.req.amount if replacement is None else min(o.req.amount,
                                                             o.undone_units + o.req.amount - replacement)
        if after <= o.undone_units:
            return
        o.reversed = True
        o.undone_units = after
        target = undo_targets([o.member_leg], o.req.amount, after)[0]
        self.apply(o, target - o.undone_leg, out)

    @precondition(lambda self: self.model.declined_keys)
    @rule(data=st.data())
    def reverse_declined(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.model.declined_keys))
        self.send(TxnType.REVERSAL, self.request(CARDS[0], "M0001", 1, original_key=key), Reason.APPROVED)

    @rule()
    def reverse_unknown(self) -> None:
        key = f"T0000001|{900000 + next(self.seq):06d}|0101120000"
        self.send(TxnType.REVERSAL, self.request(CARDS[0], "M0001", 1, original_key=key),
                  Reason.ORIGINAL_NOT_FOUND)
        self.model.marked_keys.append(key)

    @precondition(lambda self: self.model.marked_keys)
    @rule(data=st.data())
    def late_original(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.model.marked_keys))
        req = Request(key=key, terminal_id="T0000001", merchant_id="M0001", pan=CARDS[0], amount=1_000,
                      currency="156", rrn=f"L{next(self.seq):011d}")
        out = self.run(self.loy.earn(req))
        assert out.reason is Reason.ORIGINAL_REVERSED and out.journal_id is None, out

    @precondition(lambda self: any(out.approved and out.journal_id for _, _, out in self.model.sent))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        t, req, first = data.draw(st.sampled_from(
            [s for s in self.model.sent if s[2].approved and s[2].journal_id]))
        out: Outcome = self.run(self.loy.execute(t, req))
        assert out.approved and out.replayed and out.journal_id == first.journal_id, (out, first)
        assert (out.points_balance, out.sv_balance_minor) == (first.points_balance, first.sv_balance_minor)

    # ---------------------------------------------------------------- time

    @rule(days=st.integers(1, 45))
    def time_jump(self, days: int) -> None:
        """Days without postings go by; the last closed day's end of day expires the lots due."""
        self.model.open_date += dt.timedelta(days=days)
        closed = self.model.open_date - dt.timedelta(days=1)

        async def jump() -> list[lots.ProgramExpiry]:
            async with self.pool.acquire() as conn:
                await conn.execute("UPDATE ledger.business_day SET open_date = $1", self.model.open_date)
                return await lots.expire_day(conn, closed)
        done = self.run(jump())
        self.model.expiries += 1
        expired = self.model.book.expire(-self.model.expiries, closed)
        for i, points in expired.items():
            self.model.points[CARDS[i]] -= points
        assert [(e.program, e.points, e.accounts) for e in done] == [
            ("ALLY", sum(expired.values()), len(expired))], (done, expired)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def lots_are_the_models(self) -> None:
        rows = self.run(self.pool.fetch(
            "SELECT c.id, l.expires_on, l.remaining FROM loyalty.point_lots l "
            "JOIN ledger.accounts a ON a.id = l.account_id JOIN loyalty.cards c ON a.owner_id = c.id::text"))
        found = {(self.card_pans[r["id"]], r["expires_on"], r["remaining"]) for r in rows}
        expected = {(CARDS[i], d, v) for i, book in self.model.book.lots.items() for d, v in book.items()}
        assert found == expected, (found, expected)

    @invariant()
    def balances_and_books(self) -> None:
        rows = self.run(self.pool.fetch(
            "SELECT c.id, a.purpose, a.posted FROM ledger.accounts a JOIN loyalty.cards c "
            "ON a.owner_kind='card' AND a.owner_id=c.id::text"))
        points = dict.fromkeys(CARDS, 0)
        sv = dict.fromkeys(CARDS, 0)
        for r in rows:
            (points if r["purpose"] == "points" else sv)[self.card_pans[r["id"]]] += r["posted"]
        assert points == self.model.points and sv == self.model.sv, (points, sv, self.model)
        assert self.run(check_books(self.pool)) == []
        # Every record says what its journal did (reconciliation's records_match_journals).
        report = self.run(reconcile.run(self.pool, None))
        assert [p for p in report.problems if p.check == "records_match_journals"] == []


def test_loyalty_expiry_model(admin_dsn: str, template_db: str) -> None:
    SERVER.update(admin=admin_dsn, template=template_db)
    ExpiryLoyaltyMachine.TestCase.settings = settings(
        max_examples=soak.examples(12), stateful_step_count=soak.steps(25), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    ExpiryLoyaltyMachine.TestCase().runTest()
