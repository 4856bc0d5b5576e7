"""Random sequences of every loyalty operation against a reference model of every member balance.

Voids, refunds (partial), reversals (full, partial, of declined and of unknown
originals), late originals and duplicate resubmissions, exchanges between programs, top-up card
redemptions (right and wrong codes, twice, by another card) and the cards' expiry into breakage,
through the real Ledger
on a fresh database per example. After every step: the outcome is the model's,
member balances are the model's, every asset sums to zero and every cached
balance equals the sum of its entries.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
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
from ledger.loyalty import card_numbers, demo, rates, vouchers
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from ledger.loyalty.programs import Prize, set_lottery
from ledger.loyalty.rules import undo_targets

CARDS = [demo.demo_pan(1), demo.demo_pan(2)]
MERCHANTS = {"M0001": ("T0000001", 1), "M0002": ("T0000002", 2)}  # terminal, points per CNY
# The demo program's prizes (ledger.loyalty.demo), each made the whole table in turn (see lottery).
PRIZES = [Prize("NONE", 0, 1), Prize("SMALL", 20, 1), Prize("BIG", 100, 1)]
VOUCHER_KEY = bytes(range(32))
VOUCHER_POINTS = 150
VOUCHERS = 4


@dataclass
class Voucher:
    """A sold top-up card as the model sees it."""

    serial: str
    code: str
    status: str = "issued"  # issued, redeemed, expired
    card: str | None = None


# The exchange rate from the demo alliance into the hosted bakery's points: 3/2, 10% fee.
RATE = (3, 2, 1000)


@dataclass
class Orig:
    """An approved purchase-like transaction, as the model sees it."""

    req: Request
    txn_type: TxnType
    member_leg: int  # points or minor units moved on the member's account
    member_sign: int  # +1: the original credited the member
    undone_units: int = 0
    undone_leg: int = 0
    voided: bool = False
    reversed: bool = False
    target_leg: int = 0  # an exchange: the points credited in the target program
    undone_target: int = 0


@dataclass
class Model:
    points: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))
    sv: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))
    cafe: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))  # points of CAFE
    blocked: set[str] = field(default_factory=set)
    originals: list[Orig] = field(default_factory=list)
    sent: list[tuple[TxnType, Request, Outcome]] = field(default_factory=list)
    declined_keys: list[str] = field(default_factory=list)
    marked_keys: list[str] = field(default_factory=list)
    vouchers: list[Voucher] = field(default_factory=list)
    breakage: int = 0


class LoyaltyMachine(DatabaseMachine):
    pool_size_max = 4
    voucher_key = VOUCHER_KEY  # the master key the top-up cards' codes are hashed under

    def __init__(self) -> None:
        self.model = Model()
        self.seq = itertools.count(1)
        super().__init__()

    async def open(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await demo.seed(conn, cards=len(CARDS))
            await rates.set_rate(conn, "ALLY", "CAFE", *RATE)
        self.card_ids = {pan: await card_numbers.card_id_by_number(self.pool, pan) for pan in CARDS}
        self.card_pans = {card_id: pan for pan, card_id in self.card_ids.items()}
        ledger = Ledger(self.pool, ledger_settings())
        await ledger.start()
        self.ledger = ledger
        self.loy = Loyalty(self.ledger)
        # A batch of top-up cards sold to M0001, valid through the open day.
        day = await self.pool.fetchval("SELECT open_date FROM ledger.business_day")
        with tempfile.TemporaryDirectory() as out:
            async with self.pool.acquire() as conn, conn.transaction():
                made = await vouchers.create_batch(conn, self.voucher_key, "ALLY", VOUCHER_POINTS, VOUCHERS, 100, day,
                                                   Path(out))
            codes = dict(line.split(",")[:2] for line in made.path.read_text().splitlines()[1:])
        await vouchers.sell_batch(ledger, self.pool, made.batch_id, "M0001")
        self.model.vouchers = [Voucher(serial, codes[serial]) for serial in made.serials]

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

    def card_reason(self, card: str) -> Reason | None:
        return Reason.CARD_BLOCKED if card in self.model.blocked else None

    def sv_available(self, card: str) -> int:
        """The card's stored value a debit may take (its balance, less what is held; see the wire model)."""
        return self.model.sv[card]

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
            self.model.originals.append(Orig(req, TxnType.EARN, pts, +1))

    @rule(card=st.sampled_from(CARDS), amount=st.integers(1, 400), kind=st.sampled_from(["redeem", "topup"]))
    def points_op(self, card: str, amount: int, kind: str) -> None:
        req = self.request(card, "M0001", amount, currency=None)
        t = TxnType(kind)
        short = t is TxnType.REDEEM and self.model.points[card] < amount
        expect = self.card_reason(card) or (Reason.INSUFFICIENT if short else Reason.APPROVED)
        if self.send(t, req, expect).approved:
            sign = -1 if t is TxnType.REDEEM else 1
            self.model.points[card] += sign * amount
            self.model.originals.append(Orig(req, t, amount, sign))

    @rule(card=st.sampled_from(CARDS), amount=st.integers(1, 5_000), kind=st.sampled_from(["load", "sv_purchase"]))
    def money_op(self, card: str, amount: int, kind: str) -> None:
        req = self.request(card, "M0002", amount)
        t = TxnType(kind)
        short = t is TxnType.SV_PURCHASE and self.sv_available(card) < amount
        expect = self.card_reason(card) or (Reason.INSUFFICIENT if short else Reason.APPROVED)
        if self.send(t, req, expect).approved:
            sign = -1 if t is TxnType.SV_PURCHASE else 1
            self.model.sv[card] += sign * amount
            self.model.originals.append(Orig(req, t, amount, sign))

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

    @rule(card=st.sampled_from(CARDS), amount=st.integers(1, 400))
    def exchange(self, card: str, amount: int) -> None:
        req = self.request(card, "M0001", amount, currency=None, account="65", target_program="CAFE")
        short = self.model.points[card] < amount
        out = self.send(TxnType.EXCHANGE, req, self.card_reason(card) or (
            Reason.INSUFFICIENT if short else Reason.APPROVED))
        if out.approved:
            net = rates.convert(amount, *RATE)[2]
            self.model.points[card] -= amount
            self.model.cafe[card] += net
            self.model.originals.append(Orig(req, TxnType.EXCHANGE, amount, -1, target_leg=net))

    def undo_exchange(self, o: Orig, after: int) -> None:
        """Undo exchange ``o`` to ``after`` units of its amount: both legs, as the ledger rounds them."""
        source, target = undo_targets([o.member_leg, o.target_leg], o.req.amount, after)
        self.model.points[o.req.pan] += source - o.undone_leg
        self.model.cafe[o.req.pan] -= target - o.undone_target
        o.undone_leg, o.undone_target = source, target

    @rule(card=st.sampled_from(CARDS))
    def inquiry(self, card: str) -> None:
        out = self.send(TxnType.INQUIRY, self.request(card, "M0001", 0, account="00"),
                        self.card_reason(card) or Reason.APPROVED)
        if out.approved:
            assert (out.points_balance, out.sv_balance_minor) == (self.model.points[card], self.sv_available(card))

    @rule(card=st.sampled_from(CARDS))
    def toggle_block(self, card: str) -> None:
        if card in self.model.blocked:
            self.model.blocked.discard(card)
            status = "active"
        else:
            self.model.blocked.add(card)
            status = "blocked"
        self.run(self.pool.execute("UPDATE loyalty.cards SET status=$2 WHERE id = $1", self.card_ids[card], status))

    # ---------------------------------------------------------------- top-up cards

    def voucher_expect(self, card: str, v: Voucher, right: bool) -> vouchers.Refusal | None:
        """What redeeming top-up card ``v`` for ``card`` answers (None: approved)."""
        if self.card_reason(card) is not None:  # only an active card is credited
            return vouchers.Refusal.NO_CARD
        if not right:
            return vouchers.Refusal.INVALID
        if v.status == "expired":
            return vouchers.Refusal.EXPIRED
        if v.status == "redeemed" and v.card != card:
            return vouchers.Refusal.USED
        return None

    def voucher_credited(self, card: str, v: Voucher) -> None:
        """An approved redemption: the first one credits the card."""
        if v.status == "issued":
            self.model.points[card] += VOUCHER_POINTS
            v.status, v.card = "redeemed", card

    @rule(card=st.sampled_from(CARDS), index=st.integers(0, VOUCHERS - 1), right=st.booleans())
    def voucher_redeem(self, card: str, index: int, right: bool) -> None:
        v = self.model.vouchers[index]
        code = v.code if right else f"{(int(v.code) + 1) % 10 ** 16:016d}"
        done = self.run(vouchers.redeem(self.ledger, self.pool, self.voucher_key, v.serial, code,
                                        self.card_ids[card], vouchers.Subjects(), vouchers.DEFAULT_POLICY))
        expect = self.voucher_expect(card, v, right)
        assert done.refusal is expect, (done, v, card)
        if expect is None:
            assert done.replayed == (v.status == "redeemed") and done.points == VOUCHER_POINTS
            self.voucher_credited(card, v)

    @rule()
    def vouchers_expire(self) -> None:
        """The cards' last day ends: end of day's breakage step (run twice: the second moves nothing)."""
        async def expire() -> dict[str, int]:
            day = await self.pool.fetchval("SELECT open_date FROM ledger.business_day")
            async with self.pool.acquire() as conn:
                moved = await vouchers.expire_day(conn, self.ledger, day)
                assert await vouchers.expire_day(conn, self.ledger, day) == {}
            return moved

        moved = self.run(expire())
        open_cards = [v for v in self.model.vouchers if v.status == "issued"]
        assert moved == ({"ALLY": VOUCHER_POINTS * len(open_cards)} if open_cards else {}), (moved, open_cards)
        for v in open_cards:
            v.status = "expired"
        self.model.breakage += VOUCHER_POINTS * len(open_cards)

    # ---------------------------------------------------------------- compensations

    def apply(self, o: Orig, delta_leg: int) -> None:
        # Undoing moves the member the other way from the original.
        book = self.model.points if o.txn_type.in_points or o.txn_type is TxnType.EARN else self.model.sv
        book[o.req.pan] -= o.member_sign * delta_leg
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
        elif o.voided or o.reversed or o.undone_units:
            expect = Reason.INVALID_TXN
        elif o.txn_type in (TxnType.TOPUP, TxnType.LOAD) and (
                (self.model.points[o.req.pan] if o.txn_type is TxnType.TOPUP else self.sv_available(o.req.pan))
                < remaining_leg):
            expect = Reason.INSUFFICIENT
        elif o.txn_type is TxnType.EXCHANGE and self.model.cafe[o.req.pan] < o.target_leg - o.undone_target:
            expect = Reason.INSUFFICIENT  # a void may not take the target program's points below zero
        else:
            expect = Reason.APPROVED
        if self.send(TxnType.VOID, req, expect).approved:
            o.voided = True
            o.undone_units = o.req.amount
            if o.txn_type is TxnType.EXCHANGE:
                self.undo_exchange(o, o.req.amount)
            else:
                self.apply(o, remaining_leg)

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
        if self.send(TxnType.REFUND, req, expect).approved:
            o.undone_units += amount
            target = undo_targets([o.member_leg], o.req.amount, o.undone_units)[0]
            self.apply(o, target - o.undone_leg)

    @precondition(lambda self: self.model.originals)
    @rule(data=st.data(), partial=st.booleans())
    def reverse(self, data: st.DataObject, partial: bool) -> None:
        o = data.draw(st.sampled_from(self.model.originals))
        replacement = o.req.amount // 2 if partial else None
        req = self.request(o.req.pan, o.req.merchant_id, o.req.amount, o.req.currency,
                           original_key=o.req.key, replacement_amount=replacement)
        self.send(TxnType.REVERSAL, req, Reason.APPROVED)
        if o.reversed:
            return
        after = o.req.amount if replacement is None else min(o.req.amount,
                                                             o.undone_units + o.req.amount - replacement)
        if after <= o.undone_units:
            return
        o.reversed = True
        o.undone_units = after
        if o.txn_type is TxnType.EXCHANGE:
            self.undo_exchange(o, after)
            return
        target = undo_targets([o.member_leg], o.req.amount, after)[0]
        self.apply(o, target - o.undone_leg)

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

    # ---------------------------------------------------------------- invariants

    @invariant()
    def balances_and_books(self) -> None:
        rows = self.run(self.pool.fetch(
            "SELECT c.id, a.purpose, a.asset, a.posted FROM ledger.accounts a JOIN loyalty.cards c "
            "ON a.owner_kind='card' AND a.owner_id=c.id::text"))
        points = dict.fromkeys(CARDS, 0)
        sv = dict.fromkeys(CARDS, 0)
        cafe = dict.fromkeys(CARDS, 0)
        for r in rows:
            book = sv if r["purpose"] != "points" else cafe if r["asset"] == "PTS:CAFE" else points
            book[self.card_pans[r["id"]]] += r["posted"]
        assert (points, sv, cafe) == (self.model.points, self.model.sv, self.model.cafe), (points, sv, cafe, self.model)
        # The top-up cards' points: sold = redeemed + still open (the float) + expired (breakage).
        float_, breakage = (self.run(self.pool.fetchval(
            "SELECT coalesce(sum(posted), 0) FROM ledger.accounts WHERE owner_kind = 'operator' AND purpose = $1",
            purpose)) for purpose in (vouchers.FLOAT_PURPOSE, vouchers.BREAKAGE_PURPOSE))
        issued = sum(v.status == "issued" for v in self.model.vouchers)
        assert (float_, breakage) == (VOUCHER_POINTS * issued, self.model.breakage)
        assert self.run(check_books(self.pool)) == []
        # Every record says what its journal did (reconciliation's records_match_journals).
        report = self.run(reconcile.run(self.pool, None))
        assert [p for p in report.problems if p.check == "records_match_journals"] == []


def test_loyalty_model(admin_dsn: str, template_db: str) -> None:
    SERVER.update(admin=admin_dsn, template=template_db)
    LoyaltyMachine.TestCase.settings = settings(
        max_examples=soak.examples(12), stateful_step_count=soak.steps(25), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    LoyaltyMachine.TestCase().runTest()
