"""Member API: goods (public) and orders: place with a hold, Idempotency-Key replay and 409,
insufficient points, cancel (hold released, stock back), another member's order 404."""

from __future__ import annotations

import asyncio

from api_support import API, PAN1, PAN2, conforms, member_client, take
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)

from ledger.loyalty import card_numbers, mall

KEY = {"idempotency-key": "order-0001"}


async def _good(env: PortalEnv, merchant: str = "M0001", points: int | None = 30, money: int | None = 500,
                stock: int = 5, name: str = "Notebook") -> int:
    return await mall.add_good(env.pool, merchant, mall.GoodForm(name, "A good one", points, money, stock))


async def _points(env: PortalEnv, pan: str) -> tuple[int, int]:
    row = await env.pool.fetchrow("SELECT a.posted, a.held FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
        "WHERE a.owner_kind = 'card' AND a.purpose = 'points' AND c.id = $1",
            await card_numbers.card_id_by_number(env.pool, pan))
    return int(row["posted"]), int(row["held"])


async def test_goods_public_filtered_and_one(portal_env: PortalEnv) -> None:
    notebook = await _good(portal_env)
    bread = await _good(portal_env, "M0003", points=None, money=800, name="Bread")
    gone = await _good(portal_env, name="Gone")
    await mall.set_good_status(portal_env.pool, gone, "M0001", "disabled")
    client = portal_env.client()
    body = conforms(await client.get(f"{API}/goods")).json()
    assert [g["id"] for g in body["items"]] == [notebook, bread]
    assert body["items"][0]["price_points"] == {"points": 30, "program": "ALLY"}
    assert body["items"][1]["price_money"] == {"amount_minor": 800, "currency": "CNY"}
    assert body["items"][1]["price_points"] is None
    assert [g["id"] for g in conforms(await client.get(f"{API}/goods?program=CAFE")).json()["items"]] == [bread]
    assert [g["id"] for g in conforms(await client.get(f"{API}/goods?merchant=M0001")).json()["items"]] == [notebook]
    assert conforms(await client.get(f"{API}/goods/{bread}")).json()["name"] == "Bread"
    assert conforms(await client.get(f"{API}/goods/{gone}")).status_code == 404


async def test_place_replay_conflict_and_cancel(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "earn", PAN1, 10_000)  # 100 points
    good = await _good(portal_env)
    client, _ = await member_client(portal_env, PAN1)
    body = {"good_id": good, "pay": "points", "quantity": 2}
    # Without a key: refused, nothing placed.
    r = conforms(await client.post(f"{API}/orders", json=body))
    assert r.status_code == 400 and r.json()["type"].endswith("/idempotency-key-required")
    first = conforms(await client.post(f"{API}/orders", json=body, headers=KEY))
    order = first.json()
    assert first.status_code == 201 and order["status"] == "placed" and order["channel"] == "api"
    assert order["amount"] == {"points": 60, "program": "ALLY"} and order["hold_expires_at"]
    assert await _points(portal_env, PAN1) == (100, 60)
    # The same key and body: the first answer again, nothing placed twice.
    again = conforms(await client.post(f"{API}/orders", json=body, headers=KEY))
    assert (again.status_code, again.json()) == (201, order) and again.headers["idempotent-replayed"] == "true"
    # The same key, another body: 409.
    other = conforms(await client.post(f"{API}/orders", json=body | {"quantity": 1}, headers=KEY))
    assert other.status_code == 409 and other.json()["type"].endswith("/idempotency-key-reused")
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.orders") == 1
    assert await portal_env.pool.fetchval("SELECT stock FROM loyalty.goods WHERE id = $1", good) == 3
    listed = conforms(await client.get(f"{API}/orders")).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]
    assert conforms(await client.get(f"{API}/orders?status=placed")).json()["items"][0]["id"] == order["id"]
    assert conforms(await client.get(f"{API}/orders?status=confirmed")).json()["items"] == []
    assert conforms(await client.get(f"{API}/orders?status=lost")).status_code == 400
    # Cancel: the hold released, the stock back; replayed under its key.
    cancel_key = {"idempotency-key": "cancel-0001"}
    r = conforms(await client.post(f"{API}/orders/{order['id']}/cancel", headers=cancel_key))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert (await client.post(f"{API}/orders/{order['id']}/cancel", headers=cancel_key)).json() == r.json()
    assert await _points(portal_env, PAN1) == (100, 0)
    assert await portal_env.pool.fetchval("SELECT stock FROM loyalty.goods WHERE id = $1", good) == 5
    assert conforms(await client.get(f"{API}/orders/{order['id']}")).json()["status"] == "cancelled"


async def test_insufficient_points_and_out_of_stock(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "earn", PAN1, 5_000)  # 50 points
    good = await _good(portal_env, stock=1)
    client, _ = await member_client(portal_env, PAN1)
    r = conforms(await client.post(f"{API}/orders", json={"good_id": good, "pay": "points"},
                                   headers={"idempotency-key": "k-too-little-1"}))
    assert r.status_code == 201
    r = conforms(await client.post(f"{API}/orders", json={"good_id": good, "pay": "points"},
                                   headers={"idempotency-key": "k-too-little-2"}))
    assert r.status_code == 422 and r.json()["type"].endswith("/out-of-stock")
    dear = await _good(portal_env, points=1_000, name="Dear")
    r = conforms(await client.post(f"{API}/orders", json={"good_id": dear, "pay": "points"},
                                   headers={"idempotency-key": "k-too-little-3"}))
    assert r.status_code == 422 and r.json()["type"].endswith("/insufficient-balance") and r.json()["order_id"]
    assert await portal_env.pool.fetchval("SELECT stock FROM loyalty.goods WHERE id = $1", dear) == 5
    for n, bad in enumerate(({"good_id": good, "pay": "cash"}, {"good_id": good},
                             {"good_id": good, "pay": "points", "x": 1}, {"good_id": good, "pay": "points", "quantity": 0})):
        r = conforms(await client.post(f"{API}/orders", json=bad, headers={"idempotency-key": f"bad-{n}"}))
        assert r.status_code == 400, bad
    r = conforms(await client.post(f"{API}/orders", json={"good_id": 999_999, "pay": "points"},
                                   headers={"idempotency-key": "k-no-such-good"}))
    assert r.status_code == 404


async def test_another_members_order_is_not_found(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "earn", PAN1, 10_000)
    good = await _good(portal_env)
    owner, _ = await member_client(portal_env, PAN1)
    order = (await owner.post(f"{API}/orders", json={"good_id": good, "pay": "points"}, headers=KEY)).json()
    other, _ = await member_client(portal_env, PAN2)
    for r in (await other.get(f"{API}/orders/{order['id']}"),
              await other.post(f"{API}/orders/{order['id']}/cancel", headers=KEY),
              await other.get(f"{API}/orders/999999"), await other.get(f"{API}/orders/abc")):
        assert r.status_code == 404 and r.json()["type"].endswith("/not-found")
    assert conforms(await other.get(f"{API}/orders")).json()["items"] == []
    # Another member's card is not a card of this member.
    assert (await other.post(f"{API}/orders", json={"good_id": good, "pay": "points", "card_id": order["card_id"]},
                             headers={"idempotency-key": "steal-card-1"})).status_code == 404
    assert (await owner.get(f"{API}/orders/{order['id']}")).json()["status"] == "placed"


async def test_a_confirmed_order_cannot_be_cancelled_by_the_member(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "earn", PAN1, 10_000)
    good = await _good(portal_env)
    client, _ = await member_client(portal_env, PAN1)
    order = (await client.post(f"{API}/orders", json={"good_id": good, "pay": "points"}, headers=KEY)).json()
    await portal_env.app.state.portal.mall.confirm(order["id"], "M0001", "m0001-admin")
    r = conforms(await client.post(f"{API}/orders/{order['id']}/cancel", headers={"idempotency-key": "c-1-abc"}))
    assert r.status_code == 409 and r.json()["type"].endswith("/conflict")
    history = conforms(await client.get(f"{API}/me/transactions")).json()["items"]
    assert history[0]["channel"] == "mall" and history[0]["points"] == {"points": -30, "program": "ALLY"}


async def test_concurrent_orders_for_the_last_item(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "earn", PAN1, 10_000)
    await take(portal_env, "M0001", "earn", PAN2, 10_000)
    good = await _good(portal_env, stock=1)
    clients = [await member_client(portal_env, pan, address=f"10.0.1.{i}") for i, pan in enumerate((PAN1, PAN2))]
    answers = await asyncio.gather(*(c.post(f"{API}/orders", json={"good_id": good, "pay": "points"}, headers=KEY)
                                     for c, _ in clients))
    assert sorted(r.status_code for r in answers) == [201, 422]
    assert await portal_env.pool.fetchval("SELECT stock FROM loyalty.goods WHERE id = $1", good) == 0


async def test_a_lost_answer_retried_finds_the_same_order(portal_env: PortalEnv) -> None:
    """The order was placed but its answer never recorded (a crash): the retry places nothing new."""
    await take(portal_env, "M0001", "earn", PAN1, 10_000)
    good = await _good(portal_env)
    client, _ = await member_client(portal_env, PAN1)
    body = {"good_id": good, "pay": "points"}
    first = (await client.post(f"{API}/orders", json=body, headers=KEY)).json()
    await portal_env.pool.execute("UPDATE portal.api_idempotency SET status = NULL, body = NULL, "
                                  "created_at = now() - interval '1 hour'")
    again = conforms(await client.post(f"{API}/orders", json=body, headers=KEY))
    assert again.status_code == 201 and again.json()["id"] == first["id"]
    assert "idempotent-replayed" not in again.headers
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.orders") == 1
    assert await _points(portal_env, PAN1) == (100, 30)



async def test_an_order_paid_with_stored_value(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "load", PAN1, 2_000)
    good = await _good(portal_env, points=None, money=750)
    client, _ = await member_client(portal_env, PAN1)
    r = conforms(await client.post(f"{API}/orders", json={"good_id": good, "pay": "money"}, headers=KEY))
    assert r.status_code == 201 and r.json()["amount"] == {"amount_minor": 750, "currency": "CNY"}
    card = conforms(await client.get(f"{API}/me/balances")).json()["cards"][0]
    assert card["stored_value"] == [{"currency": "CNY", "amount_minor": 2_000, "available_minor": 1_250}]
    points_only = conforms(await client.post(f"{API}/orders", json={"good_id": good, "pay": "points"},
                                             headers={"idempotency-key": "no-points-price"}))
    assert points_only.status_code == 422 and points_only.json()["code"] == "invalid"
