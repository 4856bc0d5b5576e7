"""Every route x every role against portal.permissions (allowed / forbidden / not found)."""

from __future__ import annotations

import datetime as dt

import httpx
from portal_support import (
    LOGIN_OF_ROLE,
    PortalEnv,
    csrf_of,
    logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
)

from ledger.loyalty import card_numbers, demo, mall, seat
from ledger.terminals import add_terminal
from portal import feedback, mail, permissions, promotions
from portal.permissions import Role

# One request per route: (method, path, form). {op} is a merchant operator of M0001.
# POSTs are harmless (enable what is enabled) or refused after the permission check (400).
SAMPLES: dict[str, tuple[str, str, dict[str, str]]] = {
    "home": ("GET", "/", {}),
    "password": ("GET", "/password", {}),
    "merchants": ("GET", "/merchants", {}),
    "merchant_view": ("GET", "/merchants/M0001", {}),
    "merchant_new": ("GET", "/merchants/new", {}),
    "merchant_edit": ("GET", "/merchants/M0001/edit", {}),
    "merchant_status": ("POST", "/merchants/M0001/status", {"status": "active"}),
    "operators": ("GET", "/operators", {}),
    "operator_view": ("GET", "/operators/{op}", {}),
    "operator_new": ("GET", "/operators/new", {}),
    "operator_status": ("POST", "/operators/{op}/status", {"disabled": "0"}),
    "operator_reset": ("POST", "/operators/{op}/reset", {"password": ""}),
    "profile": ("GET", "/profile", {}),
    "profile_edit": ("GET", "/profile/edit", {}),
    "transactions": ("GET", "/transactions", {}),
    # A merchant's business ({rrn}: an approved seat earn of M0001 on {card}; {term}: a POS terminal of M0001).
    "seat": ("GET", "/seat", {}),
    "transaction_detail": ("GET", "/transactions/rrn/{rrn}", {}),
    "transaction_void": ("POST", "/transactions/rrn/{rrn}/void", {"request_id": ""}),
    "transaction_refund": ("POST", "/transactions/rrn/{rrn}/refund", {"amount": "x"}),
    "members": ("GET", "/members", {}),
    "member_new": ("GET", "/members/new", {}),
    "member_view": ("GET", "/members/{card}", {}),
    "member_edit": ("GET", "/members/{card}/edit", {}),
    "member_status": ("POST", "/members/{card}/status", {"status": "x"}),
    "member_reset": ("POST", "/members/{card}/password", {"password": ""}),
    "member_pin": ("POST", "/members/{card}/pin", {"pin": "", "again": ""}),
    "member_activation": ("POST", "/members/{card}/activation", {}),
    "terminals": ("GET", "/terminals", {}),
    "terminal_view": ("GET", "/terminals/{term}", {}),
    "terminal_new": ("GET", "/terminals/new", {}),
    "terminal_edit": ("GET", "/terminals/{term}/edit", {}),
    "terminal_status": ("POST", "/terminals/{term}/status", {"status": "x"}),
    "stats": ("GET", "/stats", {}),
    "revenue": ("GET", "/revenue", {}),
    "stats_csv": ("GET", "/stats.csv?table=members", {}),
    "settlement": ("GET", "/settlement", {}),
    "settlement_day": ("GET", "/settlement/2024-01-02", {}),
    "settlement_file": ("GET", "/settlement/2024-01-02/files/M0001", {}),
    "settlement_matrix_csv": ("GET", "/settlement/2024-01-02/matrix.csv", {}),
    "settlement_summary": ("GET", "/settlement/2024-01-02/summary/csv", {}),
    "transactions_export": ("GET", "/transactions/export?type=inquiry", {}),
    "audit": ("GET", "/audit", {}),
    "programs": ("GET", "/programs", {}),
    "program_view": ("GET", "/programs/ALLY", {}),
    "program_new": ("GET", "/programs/new", {}),
    "program_lottery": ("GET", "/programs/ALLY/lottery", {}),
    "program_expiry": ("GET", "/programs/ALLY/expiry", {}),
    "fees": ("GET", "/fees", {}),
    "fee_edit": ("GET", "/fees/M0001", {}),
    "bins": ("GET", "/bins", {}),
    "bin_new": ("POST", "/bins/new", {"range": "x"}),
    "bin_remove": ("POST", "/bins/remove", {"range": "x"}),
    # The mall ({good}, {order}: a good of M0001 and a member's placed order for it). POSTs refused
    # after the permission check (400) or harmless (a good enabled that is enabled; the order is
    # cancelled by the first merchant user, and cancelling it again changes nothing).
    "mall_goods": ("GET", "/mall/goods", {}),
    "mall_good_view": ("GET", "/mall/goods/{good}", {}),
    "mall_good_new": ("GET", "/mall/goods/new", {}),
    "mall_good_edit": ("GET", "/mall/goods/{good}/edit", {}),
    "mall_good_status": ("POST", "/mall/goods/{good}/status", {"status": "active"}),
    "mall_orders": ("GET", "/mall/orders", {}),
    "mall_order_view": ("GET", "/mall/orders/{order}", {}),
    "mall_order_new": ("GET", "/mall/orders/new", {}),
    "mall_order_edit": ("GET", "/mall/orders/{order}/edit", {}),
    "mall_order_action": ("POST", "/mall/orders/{order}/action", {"action": "x"}),
    "mall_order_cancel": ("POST", "/mall/orders/{order}/cancel", {"reason": "permissions"}),
    "mall_order_refund": ("POST", "/mall/orders/{order}/refund", {"amount": "x"}),
    # Community ({promo}: a pending promotion of M0001, {promo2}: another, withdrawn by the sample;
    # {fb}: M0001's thread to the platform, answered; {mail}: a message to M0001, {mail2}: to every merchant).
    "promotions": ("GET", "/promotions", {}),
    "promotion_new": ("GET", "/promotions/new", {}),
    "promotion_view": ("GET", "/promotions/{promo}", {}),
    "promotion_edit": ("GET", "/promotions/{promo}/edit", {}),
    "promotion_delete": ("POST", "/promotions/{promo2}/delete", {}),
    "promotion_review": ("POST", "/promotions/{promo}/review", {"decision": "x"}),
    "feedback": ("GET", "/feedback", {}),
    "feedback_new": ("GET", "/feedback/new", {}),
    "feedback_view": ("GET", "/feedback/{fb}", {}),
    "feedback_reply": ("POST", "/feedback/{fb}/reply", {"body": ""}),
    "feedback_close": ("POST", "/feedback/{fb}/close", {}),
    "feedback_delete": ("POST", "/feedback/{fb}/delete", {}),
    "mail_inbox": ("GET", "/mail", {}),
    "mail_view": ("GET", "/mail/{mail}", {}),
    "mail_delete": ("POST", "/mail/{mail2}/delete", {}),
    "mail_sent": ("GET", "/mail/sent", {}),
    "mail_new": ("GET", "/mail/new", {}),
    "exchange_rates": ("GET", "/exchange-rates", {}),
    "exchange_rate_new": ("POST", "/exchange-rates/new", {"from_program": "ALLY", "to_program": "NONE",
                                                          "rate_num": "1", "rate_den": "1"}),
    "logout": ("POST", "/logout", {}),  # last: it ends the session
}

# No day is cleared in this fixture: these answer 404 after the permission check (their files are
# tested in test_portal_settlement.py).
NOT_FOUND_AFTER_CHECK = frozenset({"settlement_file", "settlement_summary", "settlement_matrix_csv",
                                   # a merchant's inbox is shared by its users: the second delete finds none
                                   "mail_delete"})


async def _user_id(env: PortalEnv, login: str) -> int:
    return int(await env.pool.fetchval("SELECT id FROM portal.users WHERE login = $1", login))


async def _objects(env: PortalEnv) -> dict[str, str]:
    """The objects the samples name, made as M0001's: a seat earn (its RRN, its card), a terminal."""
    loyalty = env.app.state.portal.loyalty
    earn = await seat.take(loyalty, "M0001", "op", seat.new_request_id(), "earn", demo.demo_pan(1), 100)
    assert earn.approved and earn.rrn
    await add_terminal(env.pool, "T0000001", "M0001")
    card = await env.pool.fetchval("SELECT id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(env.pool, demo.demo_pan(1)))
    good = await mall.add_good(env.pool, "M0001", mall.GoodForm("Mug", "", 1, None, 5))
    member = await env.pool.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1", card)
    order = await env.app.state.portal.mall.place(member, card, good, 1, "points", "permissions-1", "mall", "")
    return {"rrn": earn.rrn, "card": str(card), "term": "T0000001", "good": str(good), "order": str(order["id"]),
            **await _community_objects(env)}


async def _community_objects(env: PortalEnv) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    draft = promotions.Draft("Sale", "", now, now + dt.timedelta(days=1))
    async with env.pool.acquire() as conn:
        promo = await promotions.create(conn, "M0001", draft, "test")
        promo2 = await promotions.create(conn, "M0001", draft, "test")
        thread = await feedback.create_merchant_feedback(conn, "M0001", "Question", "Why?", "test")
        await feedback.reply(conn, feedback.Party.platform(), thread["id"], "Because.", "test")
        message = await mail.send_to_merchants(conn, "M0001", "Hello", "Welcome.", "test")
        message2 = await mail.send_to_merchants(conn, None, "Hello all", "Welcome.", "test")
    return {"promo": str(promo["id"]), "promo2": str(promo2["id"]), "fb": str(thread["id"]), "mail": str(message["id"]),
            "mail2": str(message2["id"])}


async def _call(client: httpx.AsyncClient, method: str, path: str, form: dict[str, str]) -> httpx.Response:
    if method == "GET":
        return await client.get(path)
    token = csrf_of((await client.get("/password")).text)
    return await client.post(path, data={"csrf_token": token, **form})


def test_every_route_has_a_rule_and_a_sample(portal_env: PortalEnv) -> None:
    names = {getattr(r, "name", None) for r in portal_env.app.routes}
    assert names == set(permissions.RULES) | permissions.PUBLIC | permissions.MEMBER_ROUTES
    assert list(SAMPLES)[-1] == "logout" and set(SAMPLES) == set(permissions.RULES)


async def test_route_role_matrix(portal_env: PortalEnv) -> None:
    ids = {"op": str(await _user_id(portal_env, "m0001-operator")), **await _objects(portal_env)}
    failures = []
    for role in Role:
        client = await logged_in(portal_env, LOGIN_OF_ROLE[role])
        for route, (method, path, form) in SAMPLES.items():
            response = await _call(client, method, path.format(**ids), form)
            allowed = role in permissions.RULES[route]
            answers = (200, 303, 400, 404) if route in NOT_FOUND_AFTER_CHECK else (200, 303, 400)
            ok = response.status_code in answers if allowed else response.status_code == 403
            if not ok:
                failures.append(f"{role} {route}: {response.status_code}")
    assert failures == []


async def test_without_a_session_every_route_sends_to_login(portal_env: PortalEnv) -> None:
    client = portal_env.client()
    ids = {"op": "1", "rrn": "900000000000", "card": "1", "term": "T0000001", "good": "1", "order": "1",
           "promo": "1", "promo2": "2", "fb": "1", "mail": "1", "mail2": "2"}
    for route, (method, path, form) in SAMPLES.items():
        response = await (client.get(path.format(**ids)) if method == "GET"
                          else client.post(path.format(**ids), data=form))
        assert response.status_code == 303, route
        assert response.headers["location"].startswith("/login"), route


async def test_another_merchants_object_is_not_found(portal_env: PortalEnv) -> None:
    other = await _user_id(portal_env, "m0002-admin")
    platform = await _user_id(portal_env, "operator")
    client = await logged_in(portal_env, "m0001-admin")
    for target in (other, platform, 999999):
        assert (await client.get(f"/operators/{target}")).status_code == 404
        for action, form in (("status", {"disabled": "1"}), ("reset", {"password": "Another-secret-9"})):
            response = await _call(client, "POST", f"/operators/{target}/{action}", form)
            assert response.status_code == 404, (target, action)
    assert not await portal_env.pool.fetchval("SELECT disabled FROM portal.users WHERE id = $1", other)
    listing = (await client.get("/operators")).text
    assert "m0001-operator" in listing and "m0002-admin" not in listing and ">admin<" not in listing


async def test_merchant_user_searches_only_its_merchant(portal_env: PortalEnv) -> None:
    await portal_env.pool.execute(
        "INSERT INTO loyalty.transactions(business_date, txn_type, reason, merchant_id, program, amount, currency, "
        "points_delta, money_delta_minor, fee_minor, idempotency_key) "
        "SELECT current_date, 'inquiry', 'approved', m, 'ALLY', 0, '156', 0, 0, 0, 'k-' || m "
        "FROM unnest(ARRAY['M0001', 'M0002']) m")
    client = await logged_in(portal_env, "m0001-operator")
    page = (await client.get("/transactions?merchant=M0002&go=1")).text
    assert "<td>M0001</td>" in page and "<td>M0002</td>" not in page
