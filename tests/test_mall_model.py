"""Random sequences of mall orders against a model of stock and member balances.

Orders paid with points or stored value at two merchants, confirmed, shipped, completed,
cancelled by the member or the merchant, refunded in parts, left to time out (a mall with
a one-second hold, and its sweeper), and several members ordering the last one or two of
a good at once. After every step: stock is the model's and never negative, every member's
posted and held balances are the model's, and the books balance. At the end every order's
hold is resolved and reconciliation passes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
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
from ledger.loyalty import card_numbers, demo, seat
from ledger.loyalty import mall as M
from ledger.loyalty.mall import GoodForm, Mall, MallError
from ledger.loyalty.operations import Loyalty

CARDS = [demo.demo_pan(1), demo.demo_pan(2)]
MERCHANTS = ["M0001", "M0002"]
FUND_POINTS, FUND_MINOR = 2_000, 50_000
SHORT_HOLD_S = 1


@dataclass
class Order:
    order_id: int
    card: int  # index in CARDS
    good: int
    quantity: int
    pay: str
    amount: int
    merchant: str
    status: str
    short: bool  # held for SHORT_HOLD_S: only time (the sweeper) ends it while placed
    placed_at: float
    refunded: int = 0


class MallMachine(DatabaseMachine):
    pool_size_max = 8

    def __init__(self) -> None:
        self.stock: dict[int, int] = {}
        self.goods: list[tuple[int, str, int, int]] = []  # id, merchant, price points, price minor
        # Per card: [points posted, points held, stored value posted, stored value held].
        self.balances = [[FUND_POINTS, 0, FUND_MINOR, 0] for _ in CARDS]
        self.orders: dict[int, Order] = {}
        self.keys = 0
        super().__init__()

    async def open(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await demo.seed(conn, cards=len(CARDS))
        self.ledger = Ledger(self.pool, ledger_settings())
        await self.ledger.start()
        loy = Loyalty(self.ledger)
        self.mall = Mall(loy, self.pool, replace(M.DEFAULT_SETTINGS, order_confirm_timeout_s=3600))
        self.short_mall = Mall(loy, self.pool, replace(M.DEFAULT_SETTINGS, order_confirm_timeout_s=SHORT_HOLD_S))
        self.members = []
        for pan in CARDS:
            for kind, amount in (("topup", FUND_POINTS), ("load", FUND_MINOR)):
                r = await seat.take(loy, "M0001", "op", seat.new_request_id(), kind, pan, amount)
                assert r.approved, r
            row = await self.pool.fetchrow("SELECT member_id, id FROM loyalty.cards WHERE id = $1",
                await card_numbers.card_id_by_number(self.pool, pan))
            self.members.append((int(row["member_id"]), int(row["id"])))
        for merchant in MERCHANTS:
            for stock, points, minor in ((3, 200, 3_000), (1, 700, 20_000)):
                await self._add_good(merchant, stock, points, minor)

    async def _add_good(self, merchant: str, stock: int, points: int, minor: int) -> int:
        good = await M.add_good(self.pool, merchant, GoodForm(f"G{len(self.goods)}", "", points, minor, stock))
        self.goods.append((good, merchant, points, minor))
        self.stock[good] = stock
        return good

    async def close(self) -> None:
        if hasattr(self, "ledger"):
            await self.ledger.stop()

    def teardown(self) -> None:
        async def finish() -> None:
            # Every order ends: time runs out for the short ones, the merchant cancels the rest.
            if any(o.short and o.status == "placed" for o in self.orders.values()):
                await asyncio.sleep(SHORT_HOLD_S + 0.1)
            await self.mall.expire_due(1_000)
            for o in self.orders.values():
                if o.status in ("placed", "confirmed"):
                    await self.mall.cancel(o.order_id, by_merchant_id=o.merchant)
            assert await self.pool.fetchval("SELECT count(*) FROM ledger.holds WHERE state = 'pending'") == 0
            assert await self.pool.fetchval(
                "SELECT count(*) FROM loyalty.orders WHERE status IN ('placing', 'placed')") == 0
            report = await reconcile.run(self.pool, None)
            assert report.ok, [p.__dict__ for p in report.problems]

        try:
            if hasattr(self, "mall"):
                self.run(finish())
        finally:
            super().teardown()

    # ---------------------------------------------------------------- model

    def _slot(self, pay: str) -> int:
        return 0 if pay == "points" else 2

    def _available(self, card: int, pay: str) -> int:
        b, k = self.balances[card], self._slot(pay)
        return b[k] - b[k + 1]

    def _key(self) -> str:
        self.keys += 1
        return f"model-{self.keys:08d}"

    def _placed(self, card: int, good: int, quantity: int, pay: str, result: dict[str, Any], short: bool) -> None:
        gid, merchant, points, minor = next(g for g in self.goods if g[0] == good)
        amount = quantity * (points if pay == "points" else minor)
        assert result["status"] == "placed" and result["amount"] == amount
        self.stock[good] -= quantity
        self.balances[card][self._slot(pay) + 1] += amount
        self.orders[result["id"]] = Order(result["id"], card, good, quantity, pay, amount, merchant, "placed",
                                          short, time.monotonic())

    def _orders(self, *statuses: str, short: bool | None = None) -> list[int]:
        return sorted(o.order_id for o in self.orders.values()
                      if o.status in statuses and (short is None or o.short == short))

    # ---------------------------------------------------------------- rules

    @rule(card=st.integers(0, len(CARDS) - 1), which=st.integers(0, 3), quantity=st.integers(1, 3),
          pay=st.sampled_from(["points", "money"]), short=st.booleans())
    def place(self, card: int, which: int, quantity: int, pay: str, short: bool) -> None:
        good = self.goods[which][0]
        member, card_id = self.members[card]
        mall = self.short_mall if short else self.mall
        try:
            result = self.run(mall.place(member, card_id, good, quantity, pay, self._key(), "mall", "addr"))
        except MallError as e:
            _, _, points, minor = self.goods[which]
            amount = quantity * (points if pay == "points" else minor)
            if self.stock[good] < quantity:
                assert e.code == "out_of_stock", e
            else:
                assert e.code == "insufficient" and amount > self._available(card, pay), (e, amount)
            return
        self._placed(card, good, quantity, pay, result, short)

    @rule(stock=st.integers(1, 2), buyers=st.integers(2, 4), pay=st.sampled_from(["points", "money"]))
    def last_items_at_once(self, stock: int, buyers: int, pay: str) -> None:
        good = self.run(self._add_good("M0002", stock, 10, 100))
        keys = [self._key() for _ in range(buyers)]

        async def at_once() -> list[Any]:
            return await asyncio.gather(*[self.mall.place(*self.members[i % len(CARDS)], good, 1, pay, keys[i],
                                                          "mall", "") for i in range(buyers)],
                                        return_exceptions=True)

        results = self.run(at_once())
        placed = 0
        for i, r in enumerate(results):
            if isinstance(r, dict):
                placed += 1
                self._placed(i % len(CARDS), good, 1, pay, r, short=False)
            else:
                assert isinstance(r, MallError) and r.code in ("out_of_stock", "insufficient"), r
        assert placed <= stock
        if all(self._available(c, pay) >= 100 for c in range(len(CARDS))):
            assert placed == stock  # nobody short of funds: every item found a buyer

    @precondition(lambda self: bool(self._orders("placed", short=False)))
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        o = self.orders[data.draw(st.sampled_from(self._orders("placed", short=False)))]
        result = self.run(self.mall.confirm(o.order_id, o.merchant))
        assert result["status"] == "confirmed"
        b, k = self.balances[o.card], self._slot(o.pay)
        b[k] -= o.amount
        b[k + 1] -= o.amount
        o.status = "confirmed"

    @precondition(lambda self: bool(self._orders("confirmed", "shipped")))
    @rule(data=st.data())
    def ship_or_complete(self, data: st.DataObject) -> None:
        o = self.orders[data.draw(st.sampled_from(self._orders("confirmed", "shipped")))]
        step = self.mall.ship if o.status == "confirmed" else self.mall.complete
        o.status = self.run(step(o.order_id, o.merchant))["status"]
        assert o.status in ("shipped", "completed")

    @precondition(lambda self: bool(self._orders("placed", "confirmed", short=False)))
    @rule(data=st.data(), by_member=st.booleans())
    def cancel(self, data: st.DataObject, by_member: bool) -> None:
        o = self.orders[data.draw(st.sampled_from(self._orders("placed", "confirmed", short=False)))]
        member = self.members[o.card][0]
        if by_member and o.status == "confirmed":
            try:
                self.run(self.mall.cancel(o.order_id, by_member_id=member))
            except MallError as e:
                assert e.code == "invalid_state"
                return
            raise AssertionError("a member cancelled a confirmed order")
        call = (self.mall.cancel(o.order_id, by_member_id=member) if by_member
                else self.mall.cancel(o.order_id, by_merchant_id=o.merchant))
        assert self.run(call)["status"] == "cancelled"
        b, k = self.balances[o.card], self._slot(o.pay)
        if o.status == "placed":
            b[k + 1] -= o.amount
        else:
            b[k] += o.amount - o.refunded
        self.stock[o.good] += o.quantity
        o.status = "cancelled"

    @precondition(lambda self: any(o.status in ("completed", "refunded") and o.refunded < o.amount
                                   for o in self.orders.values()))
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        open_ = sorted(o.order_id for o in self.orders.values()
                       if o.status in ("completed", "refunded") and o.refunded < o.amount)
        o = self.orders[data.draw(st.sampled_from(open_))]
        amount = data.draw(st.integers(1, o.amount - o.refunded))
        result = self.run(self.mall.refund(o.order_id, o.merchant, amount))
        o.refunded += amount
        assert (result["status"], result["refunded_amount"]) == ("refunded", o.refunded)
        self.balances[o.card][self._slot(o.pay)] += amount
        o.status = "refunded"

    @precondition(lambda self: bool(self._orders("placed", short=True)))
    @rule()
    def time_passes(self) -> None:
        due = self._orders("placed", short=True)
        wait = max(self.orders[i].placed_at for i in due) + SHORT_HOLD_S + 0.05 - time.monotonic()
        if wait > 0:
            self.run(asyncio.sleep(wait))
        self.run(self.mall.expire_due(1_000))
        for i in due:
            o = self.orders[i]
            self.balances[o.card][self._slot(o.pay) + 1] -= o.amount
            self.stock[o.good] += o.quantity
            o.status = "cancelled"

    # ---------------------------------------------------------------- invariants

    @invariant()
    def stock_and_balances_are_the_models(self) -> None:
        async def check() -> None:
            rows = await self.pool.fetch("SELECT id, stock FROM loyalty.goods")
            assert {r["id"]: r["stock"] for r in rows} == self.stock
            assert all(r["stock"] >= 0 for r in rows)
            for i, (_member, card_id) in enumerate(self.members):
                got = [0, 0, 0, 0]
                for r in await self.pool.fetch("SELECT purpose, posted, held FROM ledger.accounts "
                                               "WHERE owner_kind = 'card' AND owner_id = $1", str(card_id)):
                    k = 0 if r["purpose"] == "points" else 2
                    got[k], got[k + 1] = int(r["posted"]), int(r["held"])
                assert got == self.balances[i], (i, got, self.balances[i])
            statuses = {r["id"]: r["status"] for r in await self.pool.fetch("SELECT id, status FROM loyalty.orders")}
            assert all(statuses[i] == o.status for i, o in self.orders.items()), statuses
            assert await check_books(self.pool) == []
            assert await M.check_orders(self.pool) == []

        self.run(check())


def test_mall_model(admin_dsn: str, template_db: str) -> None:
    SERVER.update(admin=admin_dsn, template=template_db)
    MallMachine.TestCase.settings = settings(
        max_examples=soak.examples(8), stateful_step_count=soak.steps(20), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    MallMachine.TestCase().runTest()
