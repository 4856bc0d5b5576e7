"""The mall's merchant pages: goods with images, orders through their states, who may do what,
another merchant's goods and orders answering 404, image refusals, CSRF."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import asyncpg
import httpx
from ledger_support import ledger_settings
from portal_support import (  # noqa: F401  (portal_env_fixture: the fixture, by name)
    MASTER_KEY,
    PortalEnv,
    csrf_of,
    logged_in,
    member_logged_in,
    portal_env_fixture,
)
from portal_support import (
    test_settings as portal_settings,  # not named test_*: pytest would collect it
)

from ledger.audit import check_books
from ledger.loyalty import card_numbers, demo, seat
from ledger.loyalty import mall as M
from ledger.loyalty.mall import GoodForm
from portal.app import create_app
from portal.images import UPLOAD_OVERHEAD_BYTES

PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


async def _token(client: httpx.AsyncClient, path: str = "/mall/goods/new") -> str:
    return csrf_of((await client.get(path)).text)


async def _funded_order(env: PortalEnv, good_id: int, pay: str = "points") -> dict:  # type: ignore[type-arg]
    loyalty = env.app.state.portal.loyalty
    pan = demo.demo_pan(1)
    for kind, amount in (("topup", 1_000), ("load", 100_000)):
        assert (await seat.take(loyalty, "M0001", "op", seat.new_request_id(), kind, pan, amount)).approved
    row = await env.pool.fetchrow("SELECT member_id, id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(env.pool, pan))
    return await env.app.state.portal.mall.place(row["member_id"], row["id"], good_id, 1, pay,
                                                 seat.new_request_id()[:20], "mall", "1 Main St")


async def test_a_merchant_adds_a_good_with_an_image_and_edits_it(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    response = await client.post("/mall/goods/new", data={
        "csrf_token": await _token(client), "name": "Tea cup", "description": "Blue", "price_points": "250",
        "price": "12.50", "stock": "7", "valid_from": "", "valid_until": "2099-01-01"},
        files={"image": ("cup.png", PNG, "image/png")})
    assert response.status_code == 303, response.text
    good_id = int(response.headers["location"].rsplit("/", 1)[1])
    good = await M.get_good(portal_env.pool, good_id)
    assert good is not None and (good["merchant_id"], good["price_points"], good["price_minor"], good["stock"]) == (
        "M0001", 250, 1250, 7)
    page = (await client.get(f"/mall/goods/{good_id}")).text
    assert "Tea cup" in page and f'src="/media/{good["image_id"]}"' in page
    assert (await portal_env.client().get(f"/media/{good['image_id']}")).content == PNG
    listing = (await client.get("/mall/goods")).text
    assert "Tea cup" in listing
    assert "Tea cup" in (await client.get("/mall/goods?available=1")).text
    edit = await client.post(f"/mall/goods/{good_id}/edit", data={
        "csrf_token": await _token(client), "name": "Tea cup", "description": "Green", "price_points": "",
        "price": "9", "stock": "3", "valid_from": "", "valid_until": ""})
    assert edit.status_code == 303
    good = await M.get_good(portal_env.pool, good_id)
    assert good is not None and (good["price_points"], good["price_minor"], good["stock"], good["image_id"]) == (
        None, 900, 3, good["image_id"]) and good["image_id"] is not None
    off = await client.post(f"/mall/goods/{good_id}/status", data={"csrf_token": await _token(client),
                                                                  "status": "disabled"})
    assert off.status_code == 303
    assert (await M.get_good(portal_env.pool, good_id))["status"] == "disabled"  # type: ignore[index]
    assert "Tea cup" not in (await client.get("/mall/goods?available=1")).text
    assert "Tea cup" in (await client.get("/mall/goods")).text
    # Refusals: no price, a bad number.
    for fields, words in (({"price_points": "", "price": ""}, "needs a price"),
                          ({"price_points": "1.5"}, "whole numbers"), ({"price": "1.234"}, "no more decimals")):
        form = {"csrf_token": await _token(client), "name": "X", "description": "", "price_points": "5",
                "price": "", "stock": "1", "valid_from": "", "valid_until": ""} | fields
        refused = await client.post("/mall/goods/new", data=form)
        assert refused.status_code == 400 and words in refused.text, refused.text
    # In Chinese.
    assert "新增商品" in (await client.get("/mall/goods/new?lang=zh_CN")).text


async def test_image_upload_refusals(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-admin")
    form = {"name": "Mug", "description": "", "price_points": "5", "price": "", "stock": "1",
            "valid_from": "", "valid_until": ""}
    limit = portal_env.settings.image_size_max_bytes
    for data, status, words in ((b"<svg/>", 400, "PNG, JPEG, GIF or WebP"),
                                (b"GIF89a" + bytes(limit), 400, f"larger than {limit // 1024} KiB"),
                                (PNG + bytes(limit + UPLOAD_OVERHEAD_BYTES), 413, "")):
        response = await client.post("/mall/goods/new", data={"csrf_token": await _token(client)} | form,
                                     files={"image": ("x.png", data, "image/png")})
        assert response.status_code == status, (status, response.text[:300])
        assert words in response.text
    assert await portal_env.pool.fetchval("SELECT count(*) FROM portal.images") == 0
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.goods") == 0
    # A body that large is refused on every other page.
    token = csrf_of((await client.get("/members/new")).text)
    big = await client.post("/members/new", data={"csrf_token": token, "name": "x" * (100 * 1024)})
    assert big.status_code == 413


async def test_an_order_through_the_merchants_pages(portal_env: PortalEnv) -> None:
    good = await M.add_good(portal_env.pool, "M0001", GoodForm("Lamp", "", 300, None, 2))
    order = await _funded_order(portal_env, good)
    client = await logged_in(portal_env, "m0001-operator")
    listing = (await client.get("/mall/orders?status=placed")).text
    assert f'href="/mall/orders/{order["id"]}"' in listing
    page = (await client.get(f"/mall/orders/{order['id']}")).text
    assert "621234******0019" in page and "6212340000000019" not in page and "Confirm" in page
    path = f"/mall/orders/{order['id']}"
    for action, status in (("confirm", "confirmed"), ("ship", "shipped"), ("complete", "completed")):
        done = await client.post(f"{path}/action", data={"csrf_token": await _token(client, path), "action": action})
        assert done.status_code == 303, done.text
        assert (await M.get_order(portal_env.pool, order["id"]))["status"] == status  # type: ignore[index]
    again = await client.post(f"{path}/action", data={"csrf_token": await _token(client, path), "action": "confirm"})
    assert again.status_code == 303  # confirming a confirmed order again changes nothing
    too_much = await client.post(f"{path}/refund", data={"csrf_token": await _token(client, path), "amount": "301"})
    assert too_much.status_code == 400 and "1..300" in too_much.text
    refund = await client.post(f"{path}/refund", data={"csrf_token": await _token(client, path), "amount": "100"})
    assert refund.status_code == 303
    after = await M.get_order(portal_env.pool, order["id"])
    assert after is not None and (after["status"], after["refunded_amount"]) == ("refunded", 100)
    assert re.search(r"RRN.*90000000", (await client.get(path)).text, re.S)
    audit = await portal_env.pool.fetch("SELECT action FROM portal.audit WHERE object_kind = 'order' ORDER BY id")
    assert [r["action"] for r in audit] == ["order_confirm", "order_ship", "order_complete", "order_refund"]


async def test_a_phone_order_and_a_cancel(portal_env: PortalEnv) -> None:
    good = await M.add_good(portal_env.pool, "M0001", GoodForm("Pen", "", 10, 500, 5))
    await _funded_order(portal_env, good)  # funds the card
    client = await logged_in(portal_env, "m0001-admin")
    form = (await client.get("/mall/orders/new")).text
    request_id = re.search(r'name="request_id" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    fields = {"csrf_token": csrf_of(form), "request_id": request_id, "pan": demo.demo_pan(1), "good_id": str(good),
              "quantity": "2", "pay": "money", "delivery_address": "2 High St"}
    taken = await client.post("/mall/orders/new", data=fields)
    assert taken.status_code == 303, taken.text
    order_id = int(taken.headers["location"].rsplit("/", 1)[1])
    again = await client.post("/mall/orders/new", data=fields)  # a double submit: the same order
    assert again.headers["location"] == taken.headers["location"]
    order = await M.get_order(portal_env.pool, order_id)
    assert order is not None and (order["amount"], order["channel"], order["taken_by"]) == (
        1_000, "web", "portal:m0001-admin")
    other_good = await M.add_good(portal_env.pool, "M0002", GoodForm("Their pen", "", 10, None, 5))
    theirs = await client.post("/mall/orders/new", data=fields | {"good_id": str(other_good),
                                                                 "request_id": "another-request-2"})
    assert theirs.status_code == 404  # another merchant's good: nothing held, nothing placed
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.orders WHERE good_id = $1", other_good) == 0
    unknown = await client.post("/mall/orders/new", data=fields | {"pan": "4111111111111111",
                                                                  "request_id": "another-request-1"})
    assert unknown.status_code == 400 and "No member has that card number" in unknown.text
    path = f"/mall/orders/{order_id}"
    moved = await client.post(f"{path}/edit", data={"csrf_token": await _token(client, path),
                                                    "delivery_address": "3 Low St"})
    assert moved.status_code == 303
    cancel = await client.post(f"{path}/cancel", data={"csrf_token": await _token(client, path), "reason": "no ink"})
    assert cancel.status_code == 303
    order = await M.get_order(portal_env.pool, order_id)
    assert order is not None and (order["status"], order["note"], order["delivery_address"]) == (
        "cancelled", "no ink", "3 Low St")
    assert await portal_env.pool.fetchval("SELECT stock FROM loyalty.goods WHERE id = $1", good) == 4
    refused = await client.post(f"{path}/edit", data={"csrf_token": await _token(client, path),
                                                      "delivery_address": "4"})
    assert refused.status_code == 409


async def test_another_merchants_goods_and_orders_are_not_found(portal_env: PortalEnv) -> None:
    good = await M.add_good(portal_env.pool, "M0001", GoodForm("Lamp", "", 300, None, 2))
    order = await _funded_order(portal_env, good)
    other = await logged_in(portal_env, "m0002-admin")
    token = await _token(other)
    for method, path, form in (
            ("GET", f"/mall/goods/{good}", {}), ("GET", f"/mall/goods/{good}/edit", {}),
            ("POST", f"/mall/goods/{good}/status", {"status": "disabled"}),
            ("GET", f"/mall/orders/{order['id']}", {}), ("GET", f"/mall/orders/{order['id']}/edit", {}),
            ("POST", f"/mall/orders/{order['id']}/action", {"action": "confirm"}),
            ("POST", f"/mall/orders/{order['id']}/cancel", {}),
            ("POST", f"/mall/orders/{order['id']}/refund", {"amount": "1"}),
            ("GET", "/mall/orders/999999", {}), ("GET", "/mall/goods/99999999999999999999", {})):
        response = await (other.get(path) if method == "GET" else other.post(path, data={"csrf_token": token} | form))
        assert response.status_code == 404, (method, path, response.status_code)
    assert "Lamp" not in (await other.get("/mall/goods")).text
    assert f'/mall/orders/{order["id"]}"' not in (await other.get("/mall/orders")).text
    assert (await M.get_order(portal_env.pool, order["id"]))["status"] == "placed"  # type: ignore[index]
    # The platform reads, and may not act.
    platform = await logged_in(portal_env, "operator")
    assert (await platform.get(f"/mall/orders/{order['id']}")).status_code == 200
    assert "Lamp" in (await platform.get("/mall/goods")).text
    denied = await platform.post(f"/mall/orders/{order['id']}/action",
                                 data={"csrf_token": await _token(platform, "/mall/goods"), "action": "confirm"})
    assert denied.status_code == 403
    # Without the form's token: refused before anything is done.
    own = await logged_in(portal_env, "m0001-admin")
    no_token = await own.post(f"/mall/orders/{order['id']}/action", data={"action": "confirm"})
    assert no_token.status_code == 403
    assert (await M.get_order(portal_env.pool, order["id"]))["status"] == "placed"  # type: ignore[index]
    await portal_env.app.state.portal.mall.cancel(order["id"], by_merchant_id="M0001")


async def test_a_member_orders_sees_and_cancels_and_others_see_nothing(portal_env: PortalEnv) -> None:
    good = await M.add_good(portal_env.pool, "M0001", GoodForm("Kite", "Red", 40, 900, 3))
    await _funded_order(portal_env, good)  # funds demo card 1 (and holds 40 points of it)
    member = await member_logged_in(portal_env)
    listing = (await member.get("/member/mall?merchant=M0001")).text
    assert f'href="/member/mall/goods/{good}"' in listing and "Kite" in listing
    assert "Kite" not in (await member.get("/member/mall?program=CAFE")).text
    path = f"/member/mall/goods/{good}"
    form = (await member.get(path)).text
    key = re.search(r'name="request_key" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    card = re.search(r'name="card_id">\s*<option value="(\d+)"', form).group(1)  # type: ignore[union-attr]
    fields = {"csrf_token": csrf_of(form), "request_key": key, "card_id": card, "quantity": "2", "pay": "points",
              "delivery_address": "5 Kite Hill"}
    placed = await member.post(path, data=fields)
    assert placed.status_code == 303, placed.text
    order_path = placed.headers["location"]
    assert (await member.post(path, data=fields)).headers["location"] == order_path  # a double submit
    page = (await member.get(order_path)).text
    assert "Placed" in page and "80" in page
    assert order_path in (await member.get("/member/orders")).text
    # Another member: not found, and not listed; an operator's session opens no member page.
    other = await member_logged_in(portal_env, "13800000002", address="10.0.0.10")
    assert (await other.get(order_path)).status_code == 404
    token = csrf_of((await other.get("/member/mall")).text)
    assert (await other.post(f"{order_path}/cancel", data={"csrf_token": token})).status_code == 404
    assert order_path not in (await other.get("/member/orders")).text
    operator = await logged_in(portal_env, "m0001-admin")
    assert (await operator.get(order_path)).headers["location"].startswith("/member/login")
    # Without the form's token nothing is done; with it the order is cancelled.
    assert (await member.post(f"{order_path}/cancel", data={})).status_code == 403
    done = await member.post(f"{order_path}/cancel", data={"csrf_token": csrf_of(page)})
    assert done.status_code == 303
    assert "Cancelled" in (await member.get(order_path)).text
    assert "已取消" in (await member.get(f"{order_path}?lang=zh_CN")).text
    # Too many: the member is told, nothing is placed.
    fields |= {"request_key": "another-key-123", "quantity": "9", "csrf_token": csrf_of(page)}
    refused = await member.post(path, data=fields)
    assert refused.status_code == 400 and "库存不足" in refused.text  # the language chosen last


async def test_the_portal_sweeps_orders_not_confirmed_in_time(pool: asyncpg.Pool) -> None:
    """The sweeper runs in the portal's lifespan: a placed order whose hold is due is cancelled."""
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn, cards=1)
    settings = portal_settings(mall=dataclasses.replace(M.DEFAULT_SETTINGS, order_confirm_timeout_s=1,
                                                      sweep_interval_s=0.2))
    app = create_app(settings, pool, ledger_settings(), MASTER_KEY)
    async with app.router.lifespan_context(app):
        env = PortalEnv(app, pool, settings)
        good = await M.add_good(pool, "M0001", GoodForm("Lamp", "", 300, None, 2))
        order = await _funded_order(env, good)
        now = order
        for _ in range(100):  # bounded: the hold is due after 1 s, a sweep comes every 0.2 s
            now = await M.get_order(pool, order["id"]) or now
            if now["status"] == "cancelled":
                break
            await asyncio.sleep(0.1)
        assert (now["status"], now["note"]) == ("cancelled", "the order was not confirmed in time")
        assert await pool.fetchval("SELECT stock FROM loyalty.goods WHERE id = $1", good) == 2
    assert await check_books(pool) == []
