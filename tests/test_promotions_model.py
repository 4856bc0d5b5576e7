"""Random sequences of promotion changes against a model: creates (drafts or submitted), edits,
approvals (alone and two at once), rejections, withdrawals by the owner and by another merchant.
After every step: each promotion's status is the model's, the published list is the approved
ones, each promotion published at least once paid the placement fee exactly once, and every
reconciliation check passes."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import soak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from ledger_support import ledger_settings
from model_support import SERVER, DatabaseMachine

from ledger import reconcile
from ledger.engine import Ledger
from ledger.loyalty import demo
from portal import promotions

FEE = 700
MERCHANTS = ("M0001", "M0002")


def _draft(title: str) -> promotions.Draft:
    now = dt.datetime.now(dt.UTC)
    return promotions.Draft(title, "", now - dt.timedelta(hours=1), now + dt.timedelta(days=3))


class PromotionMachine(DatabaseMachine):
    db_prefix = "switchd_p"

    def __init__(self) -> None:
        self.status: dict[int, str] = {}
        self.owner: dict[int, str] = {}
        self.paid: set[int] = set()
        super().__init__()

    async def open(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await demo.seed(conn, cards=1)
        self.ledger = Ledger(self.pool, ledger_settings())
        await self.ledger.start()

    async def close(self) -> None:
        if hasattr(self, "ledger"):
            await self.ledger.stop()

    async def _with_conn(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self.pool.acquire() as conn:
            return await fn(conn, *args, **kwargs)

    @rule(merchant=st.sampled_from(MERCHANTS), submit=st.booleans())
    def create(self, merchant: str, submit: bool) -> None:
        p = self.run(self._with_conn(promotions.create, merchant, _draft(f"P{len(self.status)}"), "test",
                                     submit=submit))
        self.status[p["id"]] = "pending" if submit else "draft"
        self.owner[p["id"]] = merchant

    @precondition(lambda self: self.status)
    @rule(data=st.data(), submit=st.booleans(), as_owner=st.booleans())
    def edit(self, data: st.DataObject, submit: bool, as_owner: bool) -> None:
        pid = data.draw(st.sampled_from(sorted(self.status)))
        merchant = self.owner[pid] if as_owner else next(m for m in MERCHANTS if m != self.owner[pid])
        after = self.run(self._with_conn(promotions.update, pid, merchant, _draft("edited"), submit=submit))
        if not as_owner or self.status[pid] == "withdrawn":
            assert after is None
            return
        self.status[pid] = "pending" if submit else "draft"
        assert after is not None and after["status"] == self.status[pid]

    @precondition(lambda self: self.status)
    @rule(data=st.data(), at_once=st.integers(1, 3))
    def approve(self, data: st.DataObject, at_once: int) -> None:
        pid = data.draw(st.sampled_from(sorted(self.status)))
        async def together() -> list[promotions.ReviewOutcome]:
            return list(await asyncio.gather(*(promotions.publish(self.pool, self.ledger, pid, FEE, "test")
                                               for _ in range(at_once))))

        outcomes = self.run(together())
        if self.status[pid] == "pending":
            assert [o.problem for o in outcomes].count(None) == 1
            assert sum(o.fee_posted for o in outcomes) == (0 if pid in self.paid else 1)
            self.status[pid] = "approved"
            self.paid.add(pid)
        else:
            assert all(o.problem == "not pending" for o in outcomes)

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.status)))
        outcome = self.run(promotions.publish(self.pool, self.ledger, pid, FEE, "test", approve=False))
        if self.status[pid] == "pending":
            assert outcome.problem is None
            self.status[pid] = "rejected"
        else:
            assert outcome.problem == "not pending"

    @precondition(lambda self: self.status)
    @rule(data=st.data(), as_owner=st.booleans())
    def withdraw(self, data: st.DataObject, as_owner: bool) -> None:
        pid = data.draw(st.sampled_from(sorted(self.status)))
        merchant = self.owner[pid] if as_owner else next(m for m in MERCHANTS if m != self.owner[pid])
        done = self.run(promotions.withdraw(self.pool, pid, merchant))
        assert done == (as_owner and self.status[pid] != "withdrawn")
        if done:
            self.status[pid] = "withdrawn"

    @invariant()
    def statuses_and_publication_are_the_models(self) -> None:
        rows = self.run(self.pool.fetch("SELECT id, status FROM portal.promotions"))
        assert {r["id"]: r["status"] for r in rows} == self.status
        published = self.run(promotions.list_published(self.pool, limit=200))
        assert sorted(p["id"] for p in published["promotions"]) == sorted(
            pid for pid, s in self.status.items() if s == "approved")

    @invariant()
    def each_published_promotion_paid_once(self) -> None:
        rows = self.run(self.pool.fetch(
            "SELECT merchant_id, count(*) AS n, sum(fee_minor) AS fees FROM loyalty.transactions "
            "WHERE txn_type = 'fee' GROUP BY merchant_id"))
        got = {r["merchant_id"]: (r["n"], r["fees"]) for r in rows}
        want: dict[str, tuple[int, int]] = {}
        for pid in self.paid:
            n, fees = want.get(self.owner[pid], (0, 0))
            want[self.owner[pid]] = (n + 1, fees + FEE)
        assert got == want

    @invariant()
    def books_balance(self) -> None:
        report = self.run(reconcile.run(self.pool, None))
        assert report.ok, [p.__dict__ for p in report.problems]


def test_promotions_model(admin_dsn: str, template_db: str) -> None:
    SERVER.update(admin=admin_dsn, template=template_db)
    PromotionMachine.TestCase.settings = settings(
        max_examples=soak.examples(8), stateful_step_count=soak.steps(20), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    PromotionMachine.TestCase().runTest()
