"""The mall's orders through the ledger: every transition, its idempotency, its refusals, and repairs
after a crash between a ledger posting and the order row's update."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest
from mall_support import mall_world, request_key
from seat_support import PAN1, PAN2

from ledger.commands import void
from ledger.loyalty import card_numbers
from ledger.loyalty import mall as M
from ledger.loyalty.mall import MallError, MallSettings, order_key
from switch.config import MALL_SCHEMA


def test_default_settings_are_the_schemas() -> None:
    assert dataclasses.asdict(M.DEFAULT_SETTINGS) == {k: d for k, (_t, d, _c) in MALL_SCHEMA.items()}
    assert [f.name for f in dataclasses.fields(MallSettings)] == list(MALL_SCHEMA)


async def test_points_order_from_place_to_refunds(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(points=1_000)
        good = await m.good(stock=5, points=150)
        order = await m.place(good, quantity=2)
        assert order["status"] == "placed" and order["amount"] == 300 and order["hold_id"]
        assert await m.available() == 700 and await m.stock(good) == 3
        assert await m.w.points() == 1_000  # held, not posted
        journals = await m.w.journals()
        confirmed = await m.mall.confirm(order["id"], "M0001", "op-bob")
        assert confirmed["status"] == "confirmed" and confirmed["capture_rrn"].startswith("9")
        assert await m.w.journals() == journals + 1
        assert await m.w.points() == 700 and await m.available() == 700
        txn = await pool.fetchrow("SELECT * FROM loyalty.transactions WHERE journal_id = $1",
                                  confirmed["capture_journal_id"])
        # A redeem at M0001 of 300 points, fee 50 bps of 300 x 1 fen: 1 fen.
        assert (txn["txn_type"], txn["channel"], txn["merchant_id"], txn["amount"], txn["points_delta"],
                txn["fee_minor"], txn["rrn"], txn["operator_ref"]) == (
            "redeem", "mall", "M0001", 300, -300, 1, confirmed["capture_rrn"], "op-bob")
        assert txn["terminal_id"].startswith("W")
        # Again: nothing more.
        assert (await m.mall.confirm(order["id"], "M0001"))["capture_journal_id"] == confirmed["capture_journal_id"]
        assert await m.w.journals() == journals + 1
        with pytest.raises(MallError) as e:
            await m.mall.refund(order["id"], "M0001", 10)
        assert e.value.code == "invalid_state"
        with pytest.raises(MallError) as e:
            await m.mall.complete(order["id"], "M0001")
        assert e.value.code == "invalid_state"
        assert (await m.mall.ship(order["id"], "M0001"))["status"] == "shipped"
        assert (await m.mall.ship(order["id"], "M0001"))["status"] == "shipped"
        assert (await m.mall.complete(order["id"], "M0001"))["status"] == "completed"
        first = await m.mall.refund(order["id"], "M0001", 100)
        assert (first["status"], first["refunded_amount"], first["refunds"]) == ("refunded", 100, 1)
        assert await m.w.points() == 800
        with pytest.raises(MallError) as e:
            await m.mall.refund(order["id"], "M0001", 201)
        assert e.value.code == "invalid"
        last = await m.mall.refund(order["id"], "M0001", 200)
        assert (last["refunded_amount"], last["refunds"]) == (300, 2) and await m.w.points() == 1_000
        refunds = await pool.fetch("SELECT txn_type, channel, original_journal_id, fee_minor FROM "
                                   "loyalty.transactions WHERE txn_type = 'refund' ORDER BY id")
        assert [(r["channel"], r["original_journal_id"]) for r in refunds] == \
            [("mall", confirmed["capture_journal_id"])] * 2
        assert sum(r["fee_minor"] for r in refunds) == -1  # the fee given back in full
        assert await m.stock(good) == 3  # refunds of delivered goods take no stock back


async def test_money_order_cancelled_after_confirmation_is_refunded_in_full(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(minor=50_000)
        good = await m.good(stock=1, points=None, minor=12_000)
        with pytest.raises(MallError) as e:
            await m.place(good, pay="points")
        assert e.value.code == "invalid"
        order = await m.place(good, pay="money")
        assert (order["amount"], order["currency"]) == (12_000, "156") and await m.stock(good) == 0
        assert await m.available(purpose="stored_value", asset="CNY") == 38_000
        confirmed = await m.mall.confirm(order["id"], "M0001")
        txn = await pool.fetchrow("SELECT * FROM loyalty.transactions WHERE journal_id = $1",
                                  confirmed["capture_journal_id"])
        assert (txn["txn_type"], txn["money_delta_minor"], txn["fee_minor"], txn["currency"]) == (
            "sv_purchase", -12_000, 60, "156")
        with pytest.raises(MallError) as e:  # a member cancels a placed order only
            await m.mall.cancel(order["id"], by_member_id=order["member_id"])
        assert e.value.code == "invalid_state"
        cancelled = await m.mall.cancel(order["id"], by_merchant_id="M0001", reason="sold out at the warehouse")
        assert (cancelled["status"], cancelled["refunded_amount"], cancelled["note"]) == (
            "cancelled", 12_000, "sold out at the warehouse")
        assert await m.w.sv() == 50_000 and await m.stock(good) == 1
        assert (await m.mall.cancel(order["id"], by_merchant_id="M0001"))["status"] == "cancelled"
        assert await m.stock(good) == 1


async def test_member_cancels_a_placed_order_and_others_see_nothing(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(points=500)
        good = await m.good(stock=2)
        order = await m.place(good)
        other_member, _ = await m.card(PAN2)
        for call in (m.mall.cancel(order["id"], by_member_id=other_member),
                     m.mall.cancel(order["id"], by_merchant_id="M0002"),
                     m.mall.confirm(order["id"], "M0002"), m.mall.ship(order["id"], "M0002"),
                     m.mall.refund(order["id"], "M0002", 1), m.mall.cancel(999_999, by_merchant_id="M0001")):
            with pytest.raises(MallError) as e:
                await call
            assert e.value.code == "not_found"
        assert await M.get_order(pool, order["id"], member_id=other_member) is None
        assert await M.get_order(pool, order["id"], merchant_id="M0002") is None
        assert (await M.list_orders(pool, member_id=other_member))["orders"] == []
        cancelled = await m.mall.cancel(order["id"], by_member_id=order["member_id"])
        assert cancelled["status"] == "cancelled" and await m.available() == 500 and await m.stock(good) == 2
        state = await pool.fetchval("SELECT state FROM ledger.holds WHERE id = $1", order["hold_id"])
        assert state == "voided"
        with pytest.raises(MallError) as e:
            await m.mall.confirm(order["id"], "M0001")
        assert e.value.code == "invalid_state"


async def test_placing_is_idempotent_and_declines_are_recorded(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(points=120)
        good = await m.good(stock=3, points=100)
        key = request_key()
        first = await m.place(good, key=key)
        assert (await m.place(good, key=key))["id"] == first["id"] and await m.stock(good) == 2
        with pytest.raises(MallError) as e:
            await m.place(good, key=key, quantity=2)
        assert e.value.code == "invalid"
        # Not enough points left: rejected, on record, stock back; the same key says so again.
        key2 = request_key()
        for _ in range(2):
            with pytest.raises(MallError) as e:
                await m.place(good, key=key2)
            assert e.value.code == "insufficient" and e.value.order is not None
            assert e.value.order["status"] == "rejected"
        assert await m.stock(good) == 2
        # A blocked card, a disabled good, too many, an unknown good, another member's card.
        with pytest.raises(MallError) as e:
            await m.place(good, quantity=3)
        assert e.value.code == "out_of_stock"
        member, _ = await m.card(PAN1)
        _, card2 = await m.card(PAN2)
        with pytest.raises(MallError) as e:
            await m.mall.place(member, card2, good, 1, "points", request_key(), "mall", "")
        assert e.value.code == "not_found"
        with pytest.raises(MallError) as e:
            await m.place(999_999)
        assert e.value.code == "not_found"
        await M.set_good_status(pool, good, "M0001", "disabled")
        with pytest.raises(MallError) as e:
            await m.place(good)
        assert e.value.code == "not_available"
        assert [g["id"] for g in (await M.list_goods(pool))["goods"]] == []
        assert [g["id"] for g in (await M.list_goods(pool, available_only=False))["goods"]] == [good]
        await M.set_good_status(pool, good, "M0001", "active")
        await pool.execute("UPDATE loyalty.cards SET status = 'blocked' WHERE id = $1",
            await card_numbers.card_id_by_number(pool, PAN1))
        with pytest.raises(MallError) as e:
            await m.place(good)
        assert e.value.code == "card_blocked"
        await pool.execute("UPDATE loyalty.cards SET status = 'active' WHERE id = $1",
            await card_numbers.card_id_by_number(pool, PAN1))
        assert await m.mall.cancel(first["id"], by_member_id=first["member_id"])


async def test_a_card_never_in_the_program_is_declined_and_not_enrolled(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        cake = await m.good(merchant="M0003", stock=2, points=5, minor=100)  # program CAFE
        accounts = await pool.fetchval("SELECT count(*) FROM ledger.accounts")
        for pay in ("points", "money"):
            with pytest.raises(MallError) as e:
                await m.place(cake, pay=pay)
            assert e.value.code == "insufficient" and e.value.order is not None
        assert await pool.fetchval("SELECT count(*) FROM ledger.accounts") == accounts
        assert await m.stock(cake) == 2


async def test_the_last_items_go_to_as_many_orders_as_there_are(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(PAN1, points=10_000)
        await m.fund(PAN2, points=10_000)
        good = await m.good(stock=2, points=10)
        results = await asyncio.gather(*[m.place(good, pan=PAN1 if i % 2 else PAN2) for i in range(6)],
                                       return_exceptions=True)
        placed = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, MallError)]
        assert len(placed) == 2 and len(refused) == 4 and {e.code for e in refused} == {"out_of_stock"}
        assert await m.stock(good) == 0
        for order in placed:
            await m.mall.cancel(order["id"], by_merchant_id="M0001")
        assert await m.stock(good) == 2


async def test_orders_not_confirmed_in_time_are_cancelled(pool: asyncpg.Pool) -> None:
    async with mall_world(pool, order_confirm_timeout_s=1) as m:
        await m.fund(points=1_000)
        good = await m.good(stock=3)
        swept, by_daemon, confirmed_late = await m.place(good), await m.place(good), await m.place(good)
        assert await m.mall.expire_due() == 0
        await asyncio.sleep(1.1)
        # The daemon's sweep of due holds expires one hold first; the mall follows.
        await m.w.ledger.post(M.expire(f"expire:{by_daemon['hold_id']}", by_daemon["hold_id"]))
        with pytest.raises(MallError) as e:
            await m.mall.confirm(confirmed_late["id"], "M0001")
        assert e.value.code == "invalid_state"
        assert await m.mall.expire_due() == 2
        for o in (swept, by_daemon, confirmed_late):
            order = await M.get_order(pool, o["id"])
            assert order is not None and order["status"] == "cancelled", order
        assert await m.stock(good) == 3 and await m.available() == 1_000
        assert await pool.fetchval("SELECT count(*) FROM ledger.holds WHERE state = 'pending'") == 0


async def test_a_crash_between_posting_and_the_rows_update_is_repaired_by_running_it_again(
        pool: asyncpg.Pool) -> None:
    async with mall_world(pool, placing_stale_s=0) as m:
        await m.fund(points=1_000)
        good = await m.good(stock=5)
        # Confirm: the capture posted, the row not updated (as if the process died in between).
        order = await m.place(good)
        done = await m.mall.confirm(order["id"], "M0001")
        await pool.execute("UPDATE loyalty.orders SET status = 'placed', capture_journal_id = NULL, "
                           "capture_rrn = NULL WHERE id = $1", order["id"])
        behind = await M.check_orders(pool)
        assert len(behind) == 1 and f"id={order['id']}, status=placed, hold_state=captured" in behind[0]
        journals = await m.w.journals()
        again = await m.mall.confirm(order["id"], "M0001")
        assert (again["status"], again["capture_journal_id"], again["capture_rrn"]) == (
            "confirmed", done["capture_journal_id"], done["capture_rrn"])
        assert await m.w.journals() == journals and await M.check_orders(pool) == []
        # Cancel: the hold released under the order's key, the row (and stock) not yet.
        order2 = await m.place(good)
        await m.w.ledger.post(void(order_key(order2["id"], "release"), order2["hold_id"]))
        stock = await m.stock(good)
        assert (await m.mall.cancel(order2["id"], by_member_id=order2["member_id"]))["status"] == "cancelled"
        assert await m.stock(good) == stock + 1
        # The sweeper finds the same from the hold alone.
        order3 = await m.place(good)
        await m.w.ledger.post(void(order_key(order3["id"], "release"), order3["hold_id"]))
        assert await m.mall.expire_due() == 1
        order3_now = await M.get_order(pool, order3["id"])
        assert order3_now is not None and order3_now["status"] == "cancelled"
        assert await m.stock(good) == stock + 1
        # Placing: interrupted before the hold (rejected, stock back) and after it (placed).
        member, card = await m.card(PAN1)
        before = await m.stock(good)
        keys = request_key(), request_key()
        lost, held = [await m.mall._insert(await pool.fetchrow(M._PLACE_SQL, good, card, member, key), member, card,
                                           good, 1, "points", key, "mall", "", None) for key in keys]
        member_account, clearing = await m.mall._accounts(held)
        assert member_account is not None
        await m.w.ledger.post(M.hold(order_key(held["id"], "hold"), M.Leg(member_account, clearing, held["amount"]),
                                     60))
        assert await m.stock(good) == before - 2
        assert await m.mall.expire_due() == 2
        lost_now, held_now = await M.get_order(pool, lost["id"]), await M.get_order(pool, held["id"])
        assert lost_now is not None and held_now is not None
        assert (lost_now["status"], held_now["status"]) == ("rejected", "placed")
        assert await m.stock(good) == before - 1
        await m.mall.cancel(held["id"], by_merchant_id="M0001")
        assert await pool.fetchval("SELECT count(*) FROM ledger.holds WHERE state = 'pending'") == 0


async def test_goods_pages_of_the_list(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        ids = [await m.good(stock=1, name=f"Good {i}") for i in range(5)]
        other = await m.good(merchant="M0003", name="Cake")
        first = await M.list_goods(pool, merchant_id="M0001", limit=2)
        assert [g["id"] for g in first["goods"]] == ids[:2] and first["next_after_id"] == ids[1]
        rest = await M.list_goods(pool, merchant_id="M0001", after_id=ids[3], limit=2)
        assert [g["id"] for g in rest["goods"]] == ids[4:] and rest["next_after_id"] is None
        cafe = await M.list_goods(pool, program="CAFE")
        assert [g["id"] for g in cafe["goods"]] == [other]
        with pytest.raises(MallError):
            await M.list_goods(pool, limit=0)
        with pytest.raises(MallError):
            await M.add_good(pool, "M0001", M.GoodForm("", "", 1, None, 1))
        good = await M.get_good(pool, ids[0])
        assert good is not None and good["available"] and good["currency"] == "156"


async def test_a_mall_capture_is_undone_only_through_its_order(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(points=500)
        good = await m.good(stock=2, points=100)
        order = await m.mall.confirm((await m.place(good))["id"], "M0001")
        for kind, amount in (("void", None), ("refund", 50)):
            seat_answer = await m.w.take(kind, amount=amount, original_rrn=order["capture_rrn"])
            assert not seat_answer.approved and "from the order" in seat_answer.detail
        assert await m.w.points() == 400
        cancelled = await m.mall.cancel(order["id"], by_merchant_id="M0001")
        assert cancelled["status"] == "cancelled" and await m.w.points() == 500


async def test_a_confirm_and_a_cancel_at_once_one_wins_and_the_row_says_which(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(points=5_000)
        good = await m.good(stock=20, points=100)
        orders = [await m.place(good) for _ in range(8)]
        results = await asyncio.gather(*[
            call for o in orders for call in (m.mall.confirm(o["id"], "M0001"),
                                              m.mall.cancel(o["id"], by_member_id=o["member_id"]))],
            return_exceptions=True)
        confirmed = 0
        for o, (conf, canc) in zip(orders, zip(results[::2], results[1::2], strict=True), strict=True):
            now = await M.get_order(pool, o["id"])
            assert now is not None and now["status"] in ("confirmed", "cancelled")
            if now["status"] == "confirmed":
                confirmed += 1
                assert isinstance(conf, dict) and isinstance(canc, MallError) and canc.code == "invalid_state"
            else:
                assert isinstance(canc, dict) and isinstance(conf, MallError) and conf.code == "invalid_state"
        assert await m.w.points() == 5_000 - 100 * confirmed
        assert await m.available() == 5_000 - 100 * confirmed
        assert await m.stock(good) == 20 - confirmed


def test_an_order_timeout_past_the_ledgers_hold_bound_is_refused() -> None:
    from switch.config import ConfigError, parse_config

    assert parse_config({"mall": {"order_confirm_timeout_s": 600}}, {}).mall.order_confirm_timeout_s == 600
    with pytest.raises(ConfigError, match="mall.order_confirm_timeout_s: must be <= ledger.hold_timeout_max_s"):
        parse_config({"mall": {"order_confirm_timeout_s": 8 * 86_400}}, {})


async def test_the_same_request_at_once_is_one_order_and_takes_its_stock_once(pool: asyncpg.Pool) -> None:
    async with mall_world(pool) as m:
        await m.fund(points=1_000)
        good = await m.good(stock=5, points=100)
        key = request_key()
        orders = await asyncio.gather(*[m.place(good, key=key, quantity=2) for _ in range(6)])
        assert {o["id"] for o in orders} == {orders[0]["id"]} and {o["status"] for o in orders} == {"placed"}
        assert await m.stock(good) == 3 and await m.available() == 800
        await m.mall.cancel(orders[0]["id"], by_member_id=orders[0]["member_id"])
        assert await m.stock(good) == 5
