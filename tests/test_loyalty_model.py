"""Random sequences of every loyalty operation against a reference model of every balance and lot.

Earns, redemptions, top-ups, stored-value loads and purchases, draws, exchanges between programs,
voids, refunds (partial), reversals (full, partial, of declined and of unknown originals), late
originals and duplicate resubmissions, top-up card redemptions (right and wrong codes, twice, by
another card), stored-value pre-authorisations and time jumps, through the real Ledger on a fresh
database per example.

A pre-authorisation holds stored value; its completion (naming it by its key) captures up to the
hold, the rest released, and is declined above it; its reversal releases the hold; a time jump
expires every pending hold (the engine's sweep) before the end of day or after it, or, over one
night, not at all. The model keeps what each card has on hold: a debit or an inquiry sees the
balance less that, and every account's hold is the model's.

Both programs make their points expire (ALLY a month after their business day, CAFE two), so
every member's points live in lots: the model keeps them with the database's rule
(ledger.loyalty.lots.LotBook): credits make lots, debits take the oldest first, compensations undo
exactly what their original did, an exchange takes lots in one program and makes one in the
other. A time jump runs the real end of day of the open day (cut-over, clearing, top-up card
breakage, lot expiry, reconciliation), then lets days without postings go by and runs the
expiry pieces of the last of them (lots and top-up cards past their last day).

After every step: the outcome is the model's, every balance and every lot is the model's, the
inquiry's next expiring lot is the model's, the top-up cards' float and breakage are the
model's, every asset sums to zero, every cached balance equals the sum of its entries, every
account's lots sum to its balance, and every reconciliation check passes (each end of day's
clearing checks too).
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule
from ledger_support import ledger_settings
from model_support import SERVER, DatabaseMachine

from ledger import eod, reconcile
from ledger.audit import check_books
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, demo, lots, rates, vouchers
from ledger.loyalty.exchange import ExchangeError, convert_points
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Channel, Outcome, Reason, Request, TxnType
from ledger.loyalty.programs import Prize, set_lottery
from ledger.loyalty.rules import undo_targets

CARDS = [demo.demo_pan(1), demo.demo_pan(2)]
MERCHANTS = {"M0001": ("T0000001", 1), "M0002": ("T0000002", 2)}  # terminal, points per CNY
# The demo program's prizes (ledger.loyalty.demo), each made the whole table in turn (see lottery).
PRIZES = [Prize("NONE", 0, 1), Prize("SMALL", 20, 1), Prize("BIG", 100, 1)]
# Months until a program's points expire, after their business day: two programs, two periods,
# so that an exchange's lots are told apart from its source's.
EXPIRY_MONTHS = {"ALLY": 1, "CAFE": 2}
PROGRAMS = sorted(EXPIRY_MONTHS)
VOUCHER_KEY = bytes(range(32))
VOUCHER_POINTS = 150
VOUCHERS = 4
# Wrong codes are part of the model: no lockout within an example (a redemption counts its failures
# against the card's member, and the default policy locks the member out after five).
GUESSES_UNBOUNDED = vouchers.GuessPolicy(failures_max=1000)
# The top-up cards' last days, days after the first open day: half run out at the first end of
# day, half two months later (a time jump may land before, on or after it).
VOUCHER_DAYS = (0, 60)
# A jump goes past ALLY's month more often than not, now and then past CAFE's two.
TIME_JUMP_DAYS_MAX = 75


@dataclass
class Voucher:
    """A sold top-up card as the model sees it."""

    serial: str
    code: str
    expires_on: dt.date
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
    journal: int | None = None  # its journal (the lots its compensations undo)
    day: dt.date | None = None  # its business day (a void must come on it)
    undone_units: int = 0
    undone_leg: int = 0
    voided: bool = False
    reversed: bool = False
    target_leg: int = 0  # an exchange: the points credited in the target program
    undone_target: int = 0


@dataclass
class Preauth:
    """An approved pre-authorisation, as the model sees it."""

    req: Request  # the pre-authorisation as sent (its key is what completions and releases name)
    card: str
    amount: int  # minor units held
    state: str = "pending"  # pending | captured | released | expired


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
    book: lots.LotBook = field(default_factory=lots.LotBook)  # accounts numbered by `account`
    open_date: dt.date = dt.date(2000, 1, 1)
    expiries: int = 0  # expiry runs so far: each gets a journal number of its own, negative
    preauths: list[Preauth] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CARDS, 0))  # stored value on hold


def account(program: str, card: str) -> int:
    """The model's number of ``card``'s points account in ``program`` (its lots' key in the book)."""
    return PROGRAMS.index(program) * len(CARDS) + CARDS.index(card)


class LoyaltyMachine(DatabaseMachine):
    pool_size_max = 4
    voucher_key = VOUCHER_KEY  # the master key the top-up cards' codes are hashed under
    # Reconciliation checks that do not apply: the domain driver keeps no terminal's responses
    # (the switch does, over the wire), so none has one stored response per journal.
    exempt_checks: frozenset[str] = frozenset({"journal_has_one_request"})

    def __init__(self) -> None:
        self.model = Model()
        self.seq = itertools.count(1)
        super().__init__()

    async def open(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await demo.seed(conn, cards=len(CARDS))
            await rates.set_rate(conn, "ALLY", "CAFE", *RATE)
            for program, months in EXPIRY_MONTHS.items():
                await lots.set_expiry(conn, program, months)
        self.card_ids = {pan: await card_numbers.card_id_by_number(self.pool, pan) for pan in CARDS}
        self.card_pans = {card_id: pan for pan, card_id in self.card_ids.items()}
        self.model.open_date = await self.pool.fetchval("SELECT open_date FROM ledger.business_day")
        self.settlement_dir = Path(tempfile.mkdtemp(prefix="swmodel"))  # the end of day's files
        ledger = Ledger(self.pool, ledger_settings())
        await ledger.start()
        self.ledger = ledger
        self.loy = Loyalty(self.ledger)
        # Batches of top-up cards sold to M0001, one per last day.
        per_batch = VOUCHERS // len(VOUCHER_DAYS)
        for days in VOUCHER_DAYS:
            last_day = self.model.open_date + dt.timedelta(days=days)
            with tempfile.TemporaryDirectory() as out:
                async with self.pool.acquire() as conn, conn.transaction():
                    made = await vouchers.create_batch(conn, self.voucher_key, "ALLY", VOUCHER_POINTS, per_batch,
                                                       100, last_day, Path(out))
                codes = dict(line.split(",")[:2] for line in made.path.read_text().splitlines()[1:])
            await vouchers.sell_batch(ledger, self.pool, made.batch_id, "M0001")
            self.model.vouchers += [Voucher(serial, codes[serial], last_day) for serial in made.serials]

    async def close(self) -> None:
        if hasattr(self, "ledger"):
            await self.ledger.stop()
        if hasattr(self, "settlement_dir"):
            shutil.rmtree(self.settlement_dir, ignore_errors=True)

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

    def lot(self, journal: int | None, program: str, card: str, amount: int, undoes: int | None = None) -> None:
        """The model's lots follow one entry of ``amount`` by ``journal`` on ``card``'s points in ``program``."""
        if amount:
            assert journal is not None
            fresh = lots.add_months(self.model.open_date, EXPIRY_MONTHS[program])
            self.model.book.apply(journal, account(program, card), amount, fresh, undoes)

    def card_reason(self, card: str) -> Reason | None:
        return Reason.CARD_BLOCKED if card in self.model.blocked else None

    def sv_available(self, card: str) -> int:
        """The card's stored value a debit may take: its balance, less what its pending holds keep."""
        return self.model.sv[card] - self.model.held[card]

    def original(self, req: Request, t: TxnType, out: Outcome, leg: int, sign: int, target_leg: int = 0) -> None:
        """Keep approved ``req`` as an original that voids, refunds and reversals may name."""
        self.model.originals.append(Orig(req, t, leg, sign, out.journal_id, self.model.open_date,
                                         target_leg=target_leg))

    # ---------------------------------------------------------------- purchase-like

    @initialize(amounts=st.lists(st.integers(1_000, 20_000), min_size=len(CARDS), max_size=len(CARDS)),
                percents=st.lists(st.integers(0, 100), min_size=len(CARDS), max_size=len(CARDS)))
    def opening(self, amounts: list[int], percents: list[int]) -> None:
        """Each card starts with points in both programs (an earn, then an exchange of a share of
        them, none when 0%): exchanges, redemptions and lots due have something to work on from
        the first step (each is only one rule among many); the inquiry names the lot expiring next."""
        for card, amount, percent in zip(CARDS, amounts, percents, strict=True):
            self.earn(card, "M0002", amount)
            if percent:
                self.exchange(card, percent, 1)
            self.inquiry(card)

    @rule(card=st.sampled_from(CARDS), merchant=st.sampled_from(sorted(MERCHANTS)),
          amount=st.integers(1, 20_000))
    def earn(self, card: str, merchant: str, amount: int) -> None:
        req = self.request(card, merchant, amount)
        expect = self.card_reason(card) or Reason.APPROVED
        out = self.send(TxnType.EARN, req, expect)
        if out.approved:
            pts = amount * MERCHANTS[merchant][1] // 100
            self.model.points[card] += pts
            self.lot(out.journal_id, "ALLY", card, pts)
            self.original(req, TxnType.EARN, out, pts, +1)

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
            self.lot(out.journal_id, "ALLY", card, sign * amount)
            self.original(req, t, out, amount, sign)

    @rule(card=st.sampled_from(CARDS), amount=st.integers(1, 5_000), kind=st.sampled_from(["load", "sv_purchase"]))
    def money_op(self, card: str, amount: int, kind: str) -> None:
        req = self.request(card, "M0002", amount)
        t = TxnType(kind)
        short = t is TxnType.SV_PURCHASE and self.sv_available(card) < amount
        expect = self.card_reason(card) or (Reason.INSUFFICIENT if short else Reason.APPROVED)
        out = self.send(t, req, expect)
        if out.approved:
            sign = -1 if t is TxnType.SV_PURCHASE else 1
            self.model.sv[card] += sign * amount
            self.original(req, t, out, amount, sign)

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
            # The stake's entry, then the prize's: the prize makes a fresh lot.
            self.lot(out.journal_id, "ALLY", card, -10)
            self.lot(out.journal_id, "ALLY", card, out.prize_points)

    @rule(card=st.sampled_from(CARDS), percent=st.integers(1, 120), amount=st.integers(1, 400))
    def exchange(self, card: str, percent: int, amount: int) -> None:
        # A share of what the card holds (now and then more than all of it), so that exchanges
        # are approved as often as declined; ``amount`` when it holds nothing.
        if self.model.points[card] > 0:
            amount = max(1, self.model.points[card] * percent // 100)
        req = self.request(card, "M0001", amount, currency=None, account="65", target_program="CAFE")
        short = self.model.points[card] < amount
        out = self.send(TxnType.EXCHANGE, req, self.card_reason(card) or (
            Reason.INSUFFICIENT if short else Reason.APPROVED))
        if out.approved:
            net = rates.convert(amount, *RATE)[2]
            self.model.points[card] -= amount
            self.model.cafe[card] += net
            # The source's oldest lots go; the target gets a lot of its own program's period.
            self.lot(out.journal_id, "ALLY", card, -amount)
            self.lot(out.journal_id, "CAFE", card, net)
            self.original(req, TxnType.EXCHANGE, out, amount, -1, target_leg=net)

    @rule(card=st.sampled_from(CARDS), percent=st.integers(1, 120), channel=st.sampled_from([Channel.API, Channel.CLI]),
          again=st.booleans())
    def exchange_off_wire(self, card: str, percent: int, channel: Channel, again: bool) -> None:
        """An exchange asked for off the wire (the API, the command line), once per request key:
        asked again under the same key, it answers the same exchange and posts nothing more."""
        amount = max(1, self.model.points[card] * percent // 100)
        key = f"x{next(self.seq):07d}"
        short = self.model.points[card] < amount
        expect = self.card_reason(card) or (Reason.INSUFFICIENT if short else None)

        async def convert() -> tuple[Any, Any]:
            try:
                done = await convert_points(self.ledger, self.pool, self.card_ids[card], "ALLY", "CAFE", amount, key,
                                            channel)
            except ExchangeError as exc:
                return exc.reason, None
            return None, done
        refusal, done = self.run(convert())
        assert refusal is expect, (refusal, expect, card, amount)
        if done is None:
            return
        net = rates.convert(amount, *RATE)[2]
        assert (done.points_in, done.points_out, done.replayed) == (amount, net, False), done
        self.model.points[card] -= amount
        self.model.cafe[card] += net
        self.lot(done.journal_id, "ALLY", card, -amount)
        self.lot(done.journal_id, "CAFE", card, net)
        if again:
            refusal, replay = self.run(convert())
            assert refusal is None and replay.replayed and replay.journal_id == done.journal_id, (refusal, replay)

    def undo_exchange(self, o: Orig, after: int, out: Outcome) -> None:
        """Undo exchange ``o`` to ``after`` units of its amount: both legs, as the ledger rounds them."""
        source, target = undo_targets([o.member_leg, o.target_leg], o.req.amount, after)
        self.model.points[o.req.pan] += source - o.undone_leg
        self.model.cafe[o.req.pan] -= target - o.undone_target
        self.lot(out.journal_id, "ALLY", o.req.pan, source - o.undone_leg, undoes=o.journal)
        self.lot(out.journal_id, "CAFE", o.req.pan, -(target - o.undone_target), undoes=o.journal)
        o.undone_leg, o.undone_target = source, target

    def next_expiring(self, card: str) -> tuple[int, dt.date] | None:
        """The model's next lot to expire of ``card``'s ALLY points (the inquiry's program), if any."""
        live = self.model.book.live(account("ALLY", card))
        return (live[0][1], live[0][0]) if live else None

    @rule(card=st.sampled_from(CARDS))
    def inquiry(self, card: str) -> None:
        out = self.send(TxnType.INQUIRY, self.request(card, "M0001", 0, account="00"),
                        self.card_reason(card) or Reason.APPROVED)
        if out.approved:
            assert (out.points_balance, out.sv_balance_minor) == (self.model.points[card], self.sv_available(card))
            expiring = None if out.points_expiring is None else (out.points_expiring, out.points_expiring_on)
            assert expiring == self.next_expiring(card), (out.points_expiring, out.points_expiring_on,
                                                          self.model.book.lots)

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

    def voucher_credited(self, card: str, v: Voucher, journal: int | None) -> None:
        """An approved redemption: the first one credits the card (a fresh lot, by ``journal``)."""
        if v.status == "issued":
            self.model.points[card] += VOUCHER_POINTS
            self.lot(journal, "ALLY", card, VOUCHER_POINTS)
            v.status, v.card = "redeemed", card

    @rule(card=st.sampled_from(CARDS), index=st.integers(0, VOUCHERS - 1), right=st.booleans())
    def voucher_redeem(self, card: str, index: int, right: bool) -> None:
        v = self.model.vouchers[index]
        code = v.code if right else f"{(int(v.code) + 1) % 10 ** 16:016d}"
        done = self.run(vouchers.redeem(self.ledger, self.pool, self.voucher_key, v.serial, code,
                                        self.card_ids[card], vouchers.Subjects(), GUESSES_UNBOUNDED))
        expect = self.voucher_expect(card, v, right)
        assert done.refusal is expect, (done, v, card)
        if expect is None:
            assert done.replayed == (v.status == "redeemed") and done.points == VOUCHER_POINTS
            self.voucher_credited(card, v, done.journal_id)

    # ---------------------------------------------------------------- compensations

    def apply(self, o: Orig, delta_leg: int, out: Outcome) -> None:
        # Undoing moves the member the other way from the original.
        in_points = o.txn_type.in_points or o.txn_type is TxnType.EARN
        book = self.model.points if in_points else self.model.sv
        book[o.req.pan] -= o.member_sign * delta_leg
        if in_points:
            self.lot(out.journal_id, "ALLY", o.req.pan, -o.member_sign * delta_leg, undoes=o.journal)
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
            expect = Reason.INVALID_TXN  # a void comes on its original's business day, or not at all
        elif o.txn_type in (TxnType.TOPUP, TxnType.LOAD) and (
                (self.model.points[o.req.pan] if o.txn_type is TxnType.TOPUP else self.sv_available(o.req.pan))
                < remaining_leg):
            expect = Reason.INSUFFICIENT
        elif o.txn_type is TxnType.EXCHANGE and self.model.cafe[o.req.pan] < o.target_leg - o.undone_target:
            expect = Reason.INSUFFICIENT  # a void may not take the target program's points below zero
        else:
            expect = Reason.APPROVED
        out = self.send(TxnType.VOID, req, expect)
        if out.approved:
            o.voided = True
            o.undone_units = o.req.amount
            if o.txn_type is TxnType.EXCHANGE:
                self.undo_exchange(o, o.req.amount, out)
            else:
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
        if o.txn_type is TxnType.EXCHANGE:
            self.undo_exchange(o, after, out)
            return
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

    # ---------------------------------------------------------------- pre-authorisations

    # How a pre-authorisation, its completion and its release are sent: through the domain here
    # (Loyalty.execute), as ISO 8583 messages in the wire machine. Each asserts the answer is
    # ``expect``; the rules below keep the model.

    def _send_preauth(self, req: Request, expect: Reason) -> None:
        """Ask for a hold of ``req.amount`` on ``req.pan``'s stored value."""
        self.send(TxnType.PREAUTH, req, expect)

    def _send_completion(self, p: Preauth, req: Request, expect: Reason, advice: bool) -> int | None:
        """Complete ``p`` for ``req.amount`` (an advice only on the wire); the capture's journal, if approved."""
        return self.send(TxnType.COMPLETION, req, expect).journal_id

    def _send_release(self, p: Preauth, req: Request, expect: Reason) -> None:
        """Reverse pre-authorisation ``p``: its hold, if pending, is released."""
        self.send(TxnType.REVERSAL, req, expect)

    @rule(card=st.sampled_from(CARDS), percent=st.integers(1, 120))
    def preauth(self, card: str, percent: int) -> None:
        if self.sv_available(card) <= 0 and not self.card_reason(card):
            self.money_op(card, 5_000, "load")  # something to hold (a rule of its own, called)
        amount = max(1, self.sv_available(card) * percent // 100)
        req = self.request(card, "M0002", amount)
        short = self.sv_available(card) < amount
        expect = self.card_reason(card) or (Reason.INSUFFICIENT if short else Reason.APPROVED)
        self._send_preauth(req, expect)
        if expect is Reason.APPROVED:
            self.model.preauths.append(Preauth(req, card, amount))
            self.model.held[card] += amount

    @precondition(lambda self: self.model.preauths)
    @rule(data=st.data(), percent=st.integers(1, 120), advice=st.booleans())
    def complete(self, data: st.DataObject, percent: int, advice: bool) -> None:
        self._complete(data.draw(st.sampled_from(self.model.preauths)), percent, advice)

    @rule(card=st.sampled_from(CARDS), percent=st.integers(1, 120),
          then=st.sampled_from(["complete", "advice", "release"]), then_percent=st.integers(1, 120))
    def preauth_then(self, card: str, percent: int, then: str, then_percent: int) -> None:
        """A pre-authorisation and at once what ends it (the rules above pair them only now and then)."""
        before = len(self.model.preauths)
        self.preauth(card, percent)
        if len(self.model.preauths) > before:
            p = self.model.preauths[-1]
            if then == "release":
                self._release(p)
            else:
                self._complete(p, then_percent, then == "advice")

    def _complete(self, p: Preauth, percent: int, advice: bool) -> None:
        """Complete ``p`` for ``percent`` of its hold: up to the hold it is captured (the rest released),
        above it declined; a hold no longer pending is not completed."""
        amount = max(1, p.amount * percent // 100)
        req = self.request(p.card, "M0002", amount, original_key=p.req.key)
        if self.card_reason(p.card):
            expect = Reason.CARD_BLOCKED
        elif p.state != "pending":
            expect = Reason.INVALID_TXN
        elif amount > p.amount:
            expect = Reason.INVALID_AMOUNT
        else:
            expect = Reason.APPROVED
        journal = self._send_completion(p, req, expect, advice)
        if expect is Reason.APPROVED:
            p.state = "captured"
            self.model.held[p.card] -= p.amount
            self.model.sv[p.card] -= amount
            # The capture is a stored-value purchase: voided, refunded and reversed like one.
            self.model.originals.append(Orig(req, TxnType.SV_PURCHASE, amount, -1, journal, self.model.open_date))

    @precondition(lambda self: self.model.preauths)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._release(data.draw(st.sampled_from(self.model.preauths)))

    def _release(self, p: Preauth) -> None:
        """Reverse ``p``: a pending hold is released; a captured one is declined (its completion is what is
        reversed); a released or expired one is approved, releasing nothing."""
        req = self.request(p.card, "M0002", p.amount, original_key=p.req.key)
        self._send_release(p, req, Reason.INVALID_TXN if p.state == "captured" else Reason.APPROVED)
        if p.state == "pending":
            p.state = "released"
            self.model.held[p.card] -= p.amount

    def expire_holds(self) -> None:
        """Every pending hold's time is up: the engine's sweep expires them, and each card has its amount back."""
        async def sweep() -> int:
            async with self.pool.acquire() as conn:
                # The hold trigger refuses any change but a resolution: replication mode.
                await conn.execute("SET session_replication_role = replica")
                await conn.execute("UPDATE ledger.holds SET expires_at = now() - interval '1 second' "
                                   "WHERE state = 'pending'")
                await conn.execute("SET session_replication_role = origin")
            return await self.ledger.expire_due_holds()

        pending = [p for p in self.model.preauths if p.state == "pending"]
        if not pending:
            return
        assert self.run(sweep()) == len(pending)
        for p in pending:
            p.state = "expired"
            self.model.held[p.card] -= p.amount

    # ---------------------------------------------------------------- time

    def expired_in_model(self, day: dt.date) -> tuple[dict[str, tuple[int, int]], int]:
        """The model's end of day of ``day``: lots due expire, top-up cards past their last day
        expire. Returns (program -> (points, accounts)) and the top-up cards' points expired."""
        self.model.expiries += 1
        by_account = self.model.book.expire(-self.model.expiries, day)
        expired = {}
        for program in PROGRAMS:
            mine = {CARDS[a % len(CARDS)]: points for a, points in by_account.items()
                    if a // len(CARDS) == PROGRAMS.index(program)}
            balances = self.model.points if program == "ALLY" else self.model.cafe
            for card, points in mine.items():
                balances[card] -= points
            expired[program] = (sum(mine.values()), len(mine))
        due = [v for v in self.model.vouchers if v.status == "issued" and v.expires_on <= day]
        for v in due:
            v.status = "expired"
        self.model.breakage += VOUCHER_POINTS * len(due)
        return expired, VOUCHER_POINTS * len(due)

    @rule(days=st.integers(1, TIME_JUMP_DAYS_MAX), holds=st.sampled_from(["before", "after", "kept"]))
    def time_jump(self, days: int, holds: str) -> None:
        """Days go by: the end of days (see ``end_of_days``), and every pending hold's time is up
        (the sweep expires them, and each card has its amount back) before the end of day or after
        it; or, for one night, not yet (a hold lives a day at most): its capture, release or expiry
        comes on the next business day."""
        if holds == "before":
            self.expire_holds()
        self.end_of_days(days)
        if holds == "after" or days > 1:
            self.expire_holds()

    def end_of_days(self, days: int) -> None:
        """The open day ends (the real end of day: cut-over, clearing, top-up card breakage, lot
        expiry, reconciliation), then ``days - 1`` days without postings go by: the last one's end
        of day expires the lots and top-up cards due by then."""
        closing = self.model.open_date
        last_closed = closing + dt.timedelta(days=days - 1)

        async def jump() -> tuple[eod.EodReport, list[lots.ProgramExpiry], dict[str, int]]:
            report = await eod.run(self.pool, closing, self.settlement_dir, ledger_settings=ledger_settings())
            idle_expiry: list[lots.ProgramExpiry] = []
            idle_breakage: dict[str, int] = {}
            if days > 1:
                async with self.pool.acquire() as conn:
                    await conn.execute("UPDATE ledger.business_day SET open_date = $1",
                                       last_closed + dt.timedelta(days=1))
                    idle_breakage = await vouchers.expire_day(conn, self.ledger, last_closed)
                    idle_expiry = await lots.expire_day(conn, last_closed)
                    # Both are idempotent: run again, they move nothing more and say the same.
                    assert await vouchers.expire_day(conn, self.ledger, last_closed) == {}
                    again = await lots.expire_day(conn, last_closed)
                    assert [(e.program, e.points, e.accounts, e.journals_existing, e.journals_posted)
                            for e in again] == [(e.program, e.points, e.accounts, e.journals_posted, 0)
                                                for e in idle_expiry], (again, idle_expiry)
            return report, idle_expiry, idle_breakage

        report, idle_expiry, idle_breakage = self.run(jump())
        assert report.cut_over and report.recon is not None and report.recon.cleared, report.as_dict()
        # The end of day's reconciliation of the closed day, its clearing included, is exact.
        problems = [p for p in report.recon.problems if p.check not in self.exempt_checks]
        assert problems == [], problems
        self.model.open_date = closing + dt.timedelta(days=1)
        expired, breakage = self.expired_in_model(closing)
        assert {e.program: (e.points, e.accounts) for e in report.expiry} == expired, (report.expiry, expired)
        assert report.voucher_breakage == ({"ALLY": breakage} if breakage else {}), report.voucher_breakage
        if days > 1:
            self.model.open_date = last_closed + dt.timedelta(days=1)
            expired, breakage = self.expired_in_model(last_closed)
            assert {e.program: (e.points, e.accounts) for e in idle_expiry} == expired, (idle_expiry, expired)
            assert idle_breakage == ({"ALLY": breakage} if breakage else {}), idle_breakage
        # What the inquiry says expires next, now that lots have gone.
        for card in CARDS:
            self.inquiry(card)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def lots_are_the_models(self) -> None:
        rows = self.run(self.pool.fetch(
            "SELECT c.id, l.program, l.expires_on, l.remaining FROM loyalty.point_lots l "
            "JOIN ledger.accounts a ON a.id = l.account_id JOIN loyalty.cards c ON a.owner_id = c.id::text"))
        found = {(r["program"], self.card_pans[r["id"]], r["expires_on"], r["remaining"]) for r in rows}
        expected = {(PROGRAMS[a // len(CARDS)], CARDS[a % len(CARDS)], d, v)
                    for a, book in self.model.book.lots.items() for d, v in book.items()}
        assert found == expected, (found, expected)

    @invariant()
    def holds_are_the_models(self) -> None:
        rows = self.run(self.pool.fetch(
            "SELECT c.id, a.held FROM ledger.accounts a JOIN loyalty.cards c "
            "ON a.owner_kind = 'card' AND a.owner_id = c.id::text WHERE a.purpose = 'stored_value'"))
        held = dict.fromkeys(CARDS, 0)
        for r in rows:
            held[self.card_pans[r["id"]]] += r["held"]
        assert held == self.model.held, (held, self.model.held)

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
        # The lots of each account sum to its balance (the model's; check_books checks the database's).
        for program, balances in (("ALLY", self.model.points), ("CAFE", self.model.cafe)):
            for card in CARDS:
                assert self.model.book.total(account(program, card)) == balances[card], (program, card)
        # The top-up cards' points: sold = redeemed + still open (the float) + expired (breakage).
        float_, breakage = (self.run(self.pool.fetchval(
            "SELECT coalesce(sum(posted), 0) FROM ledger.accounts WHERE owner_kind = 'operator' AND purpose = $1",
            purpose)) for purpose in (vouchers.FLOAT_PURPOSE, vouchers.BREAKAGE_PURPOSE))
        issued = sum(v.status == "issued" for v in self.model.vouchers)
        assert (float_, breakage) == (VOUCHER_POINTS * issued, self.model.breakage)
        assert self.run(check_books(self.pool)) == []
        # Every reconciliation check over all days passes (every record says what its journal did,
        # no hold outlives its bound, ...); the clearing's need a day: the end of day runs them.
        report = self.run(reconcile.run(self.pool, None))
        problems = [p for p in report.problems if p.check not in self.exempt_checks]
        assert problems == [], problems


def test_loyalty_model(admin_dsn: str, template_db: str) -> None:
    SERVER.update(admin=admin_dsn, template=template_db)
    LoyaltyMachine.TestCase.settings = settings(
        max_examples=soak.examples(12), stateful_step_count=soak.steps(25), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    LoyaltyMachine.TestCase().runTest()
