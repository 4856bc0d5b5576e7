"""Random sequences of ledger operations against a Python reference model.

Posts, holds, captures (some carrying legs of their own), voids, reversals and duplicate resubmissions, some of
them concurrently through the batcher (one batch in flight, so that concurrent
posts decide in queue order and a replay draws the same data). After every step: balances equal the
model's, every asset sums to zero, no account crosses its limit, and every
cached balance equals the sum of its entries (ledger.audit).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import hypothesis.strategies as st
import soak
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from ledger_support import ledger_settings

from ledger import accounts as A
from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.commands import Command, Leg, Status, capture, hold, reverse, transfer, void
from ledger.engine import Ledger

N_ACCOUNTS = 5


@dataclass
class ModelAccount:
    id: int
    credit_normal: bool
    limit: str
    posted: int = 0
    held: int = 0

    def available(self) -> int:
        return (self.posted if self.credit_normal else -self.posted) - self.held


@dataclass
class Model:
    accounts: dict[int, ModelAccount] = field(default_factory=dict)
    journals: dict[str, tuple[Command, int]] = field(default_factory=dict)  # key -> (cmd, journal id)
    postings: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)  # journal -> legs
    reversed_by: dict[int, int] = field(default_factory=dict)
    holds: dict[int, tuple[int, int, int, str]] = field(default_factory=dict)  # id -> (d, c, amt, state)

    def _apply_legs(self, legs: list[tuple[int, int, int]], hold_sign: int = 0) -> bool:
        """Apply legs (post when hold_sign == 0, else hold (+1)/release (-1)); False = declined."""
        snapshot = {k: (a.posted, a.held) for k, a in self.accounts.items()}
        touched: set[int] = set()
        for d, c, amt in legs:
            da, ca = self.accounts[d], self.accounts[c]
            touched |= {d, c}
            if hold_sign == 0:
                da.posted -= amt
                ca.posted += amt
            else:
                if da.credit_normal:
                    da.held += hold_sign * amt
                if not ca.credit_normal:
                    ca.held += hold_sign * amt
        for k in touched:
            a = self.accounts[k]
            if a.limit == "non_negative" and a.available() < 0:
                for kk, (p, h) in snapshot.items():
                    self.accounts[kk].posted, self.accounts[kk].held = p, h
                return False
        return True

    def expect(self, cmd: Command, journal_id: int | None) -> Status:
        """What the engine must answer for ``cmd``; updates the model when it posts."""
        key = cmd.idempotency_key
        if key in self.journals:
            return Status.EXISTS if self.journals[key][0] == cmd else Status.CONFLICT
        if cmd.kind == "transfer":
            legs = [(leg.debit_account_id, leg.credit_account_id, leg.amount) for leg in cmd.legs]
            if not self._apply_legs(legs):
                return Status.DECLINED
            assert journal_id is not None
            self.postings[journal_id] = legs
        elif cmd.kind == "hold":
            leg = cmd.legs[0]
            if not self._apply_legs([(leg.debit_account_id, leg.credit_account_id, leg.amount)], hold_sign=1):
                return Status.DECLINED
            assert journal_id is not None
            self.holds[journal_id] = (leg.debit_account_id, leg.credit_account_id, leg.amount, "pending")
        elif cmd.kind in ("capture", "void"):
            assert cmd.ref is not None
            d, c, amt, state = self.holds[cmd.ref]
            if state != "pending":
                return Status.INVALID
            take = cmd.amount if cmd.amount is not None else amt
            if take > amt:
                return Status.INVALID
            # A capture's own legs (a fee) post with the captured leg, all or nothing.
            posted = [(d, c, take)] + [(leg.debit_account_id, leg.credit_account_id, leg.amount)
                                       for leg in cmd.legs]
            self._apply_legs([(d, c, amt)], hold_sign=-1)
            if cmd.kind == "capture" and not self._apply_legs(posted):
                self._apply_legs([(d, c, amt)], hold_sign=1)
                return Status.DECLINED
            assert journal_id is not None
            self.holds[cmd.ref] = (d, c, amt, "captured" if cmd.kind == "capture" else "voided")
            if cmd.kind == "capture":
                self.postings[journal_id] = posted
        elif cmd.kind == "reverse":
            assert cmd.ref is not None
            if cmd.ref in self.reversed_by:
                return Status.EXISTS
            legs = [(c, d, amt) for d, c, amt in self.postings[cmd.ref]]
            if not self._apply_legs(legs):
                return Status.DECLINED
            assert journal_id is not None
            self.reversed_by[cmd.ref] = journal_id
        assert journal_id is not None
        self.journals[key] = (cmd, journal_id)
        return Status.POSTED


amounts = st.integers(min_value=1, max_value=400)


class LedgerMachine(RuleBasedStateMachine):
    dsn: str = ""

    @initialize()
    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.model = Model()
        self.asset = "T" + uuid.uuid4().hex[:10].upper()
        self.loop.run_until_complete(self._setup())

    async def _setup(self) -> None:
        self.pool = await ledger_db.create_pool(self.dsn, 1, 3)
        await A.ensure_asset(self.pool, self.asset, "points", 0)
        # Account 0 is the operator's source (debit-normal, unlimited); the rest are
        # members (credit-normal, never below zero) and one unlimited merchant.
        specs = [("debit", "none")] + [("credit", "non_negative")] * (N_ACCOUNTS - 2) + [("credit", "none")]
        for i, (side, limit) in enumerate(specs):
            acc_id = await A.open_account(self.pool, "test", f"{self.asset}-{i}", self.asset, side, limit)
            self.model.accounts[acc_id] = ModelAccount(acc_id, side == "credit", limit)
        self.ids = list(self.model.accounts)
        # One batch in flight: with two, concurrent posts may decide in either batch order, so
        # which ones post would vary between runs, and hypothesis needs a replay to draw the
        # same data. Batches in flight are tested by their invariants (test_coalesce_inflight).
        self.ledger = Ledger(self.pool, ledger_settings(batch_size_max=4, batch_linger_ms=0.5,
                                                        batches_inflight_max=1))
        await self.ledger.start()

    def teardown(self) -> None:
        if hasattr(self, "ledger"):
            self.loop.run_until_complete(self.ledger.stop())
            self.loop.run_until_complete(self.pool.close())
        self.loop.close()

    def _post(self, cmd: Command) -> None:
        res = self.loop.run_until_complete(self.ledger.post(cmd))
        expected = self.model.expect(cmd, res.journal_id)
        assert res.status == expected, (cmd, res, expected)

    def _pair(self, data: st.DataObject) -> tuple[int, int]:
        d = data.draw(st.sampled_from(self.ids))
        c = data.draw(st.sampled_from([i for i in self.ids if i != d]))
        return d, c

    def _new_key(self) -> str:
        return uuid.uuid4().hex

    @rule(data=st.data(), n_legs=st.integers(1, 3))
    def post_transfer(self, data: st.DataObject, n_legs: int) -> None:
        legs = []
        for _ in range(n_legs):
            d, c = self._pair(data)
            legs.append(Leg(d, c, data.draw(amounts)))
        self._post(transfer(self._new_key(), legs))

    @rule(data=st.data(), size=st.integers(2, 6))
    def concurrent_transfers(self, data: st.DataObject, size: int) -> None:
        cmds = []
        for _ in range(size):
            d, c = self._pair(data)
            cmds.append(transfer(self._new_key(), [Leg(d, c, data.draw(amounts))]))
        results = self.loop.run_until_complete(self.ledger.post_many(cmds))
        for cmd, res in zip(cmds, results, strict=True):
            assert res.status == self.model.expect(cmd, res.journal_id), (cmd, res)

    @precondition(lambda self: bool(self.model.journals))
    @rule(data=st.data(), same=st.booleans())
    def resubmit(self, data: st.DataObject, same: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.journals)))
        cmd, _ = self.model.journals[key]
        if not same:
            cmd = transfer(key, [Leg(self.ids[0], self.ids[-1], 987_654)])
            if cmd == self.model.journals[key][0]:
                return
        self._post(cmd)

    @rule(data=st.data())
    def place_hold(self, data: st.DataObject) -> None:
        d, c = self._pair(data)
        self._post(hold(self._new_key(), Leg(d, c, data.draw(amounts)), timeout_s=3600))

    @precondition(lambda self: any(h[3] == "pending" for h in self.model.holds.values()))
    @rule(data=st.data(), partial=st.booleans(), do_void=st.booleans(), n_fee_legs=st.integers(0, 2))
    def resolve_hold(self, data: st.DataObject, partial: bool, do_void: bool, n_fee_legs: int) -> None:
        pending = sorted(k for k, h in self.model.holds.items() if h[3] == "pending")
        hold_id = data.draw(st.sampled_from(pending))
        if do_void:
            self._post(void(self._new_key(), hold_id))
        else:
            amt = self.model.holds[hold_id][2]
            take = data.draw(st.integers(1, amt)) if partial else None
            # Legs carried by the capture (a fee), which may decline it as a transfer's would.
            legs = [Leg(*self._pair(data), data.draw(amounts)) for _ in range(n_fee_legs)]
            self._post(capture(self._new_key(), hold_id, take, legs=legs))

    @precondition(lambda self: any(h[3] != "pending" for h in self.model.holds.values()))
    @rule(data=st.data())
    def resolve_again(self, data: st.DataObject) -> None:
        done = sorted(k for k, h in self.model.holds.items() if h[3] != "pending")
        self._post(void(self._new_key(), data.draw(st.sampled_from(done))))

    @precondition(lambda self: bool(self.model.postings))
    @rule(data=st.data())
    def reverse_journal(self, data: st.DataObject) -> None:
        # Already-reversed journals included: a second reverse must return the first.
        originals = sorted(self.model.postings)
        self._post(reverse(self._new_key(), data.draw(st.sampled_from(originals))))

    @invariant()
    def books_match_model(self) -> None:
        if not hasattr(self, "ledger"):
            return

        async def check() -> None:
            rows = await self.pool.fetch(
                "SELECT id, posted, held FROM ledger.accounts WHERE asset = $1", self.asset
            )
            for r in rows:
                m = self.model.accounts[r["id"]]
                assert (r["posted"], r["held"]) == (m.posted, m.held), (r, m)
            problems = await check_books(self.pool)
            assert not problems, problems

        self.loop.run_until_complete(check())


def test_ledger_state_machine(db_dsn: str) -> None:
    LedgerMachine.dsn = db_dsn
    run = LedgerMachine.TestCase
    run.settings = settings(max_examples=soak.examples(25), stateful_step_count=soak.steps(25), deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
    run().runTest()
