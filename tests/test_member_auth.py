"""Members log in with a card number or a phone: passwords, activation codes, throttles, sessions."""

from __future__ import annotations

from portal_support import (
    PASSWORD,
    PortalEnv,
    csrf_of,
    logged_in,
    member_logged_in,
    member_login,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)

from ledger.loyalty import card_numbers, cards, demo
from portal import member_auth, permissions
from portal.member_web import MEMBER_COOKIE_PLAIN


async def _member_of(env: PortalEnv, n: int) -> int:
    return int(await env.pool.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(env.pool, demo.demo_pan(n))))


async def test_member_logs_in_by_card_number_or_phone(portal_env: PortalEnv) -> None:
    by_card = portal_env.client()
    assert (await member_login(by_card, demo.demo_pan(1))).status_code == 303
    home = await by_card.get("/member")
    assert home.status_code == 200 and "621234******0019" in home.text and demo.demo_pan(1) not in home.text
    by_phone = portal_env.client()
    assert (await member_login(by_phone, "138 0000 0001")).status_code == 303
    assert (await by_phone.get("/member")).status_code == 200


async def test_wrong_password_unknown_login_and_no_password_answer_alike(portal_env: PortalEnv) -> None:
    client = portal_env.client()
    answers = [await member_login(client, who, pw) for who, pw in (
        (demo.demo_pan(1), "not-the-password"), ("6212340000000999", PASSWORD), (demo.demo_pan(3), PASSWORD))]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert len({a.text.count("Login failed") for a in answers}) == 1
    assert (await client.get("/member")).headers["location"].startswith("/member/login")


async def test_member_locked_after_failures_in_a_row(portal_env: PortalEnv) -> None:
    for i in range(portal_env.settings.login_account_failures_max):
        assert (await member_login(portal_env.client(f"10.1.0.{i}"), "13800000001", "wrong-password")).status_code == 401
    # Locked: even the right password fails, from a fresh address.
    assert (await member_login(portal_env.client("10.1.1.1"), "13800000001")).status_code == 401


async def test_address_throttle_bounds_guessing_across_members(portal_env: PortalEnv) -> None:
    client = portal_env.client("10.2.0.1")
    for n in range(portal_env.settings.login_address_failures_max):
        await member_login(client, f"1390000{n:04d}", "wrong-password")
    assert (await member_login(client, "13800000002")).status_code == 401
    assert (await member_login(portal_env.client("10.2.0.2"), "13800000002")).status_code == 303


async def test_password_set_by_issuer_must_be_changed_first(portal_env: PortalEnv) -> None:
    member_id = await _member_of(portal_env, 3)
    async with portal_env.pool.acquire() as conn:
        await member_auth.set_password(conn, member_id, "Issued-by-shop-1", by_self=False)
    client = portal_env.client()
    assert (await member_login(client, demo.demo_pan(3), "Issued-by-shop-1")).status_code == 303
    forced = await client.get("/member")
    assert forced.status_code == 303 and forced.headers["location"] == "/member/password"
    same = await post_form(client, "/member/password", current="Issued-by-shop-1", new="Issued-by-shop-1",
                           again="Issued-by-shop-1")
    assert same.status_code == 400
    done = await post_form(client, "/member/password", current="Issued-by-shop-1", new="my own secret 42",
                           again="my own secret 42")
    assert done.status_code == 303 and done.headers["location"] == "/member?changed=1"
    assert (await client.get("/member")).status_code == 200
    assert (await member_login(portal_env.client(), demo.demo_pan(3), "my own secret 42")).status_code == 303


async def test_activation_code_is_one_time_and_expires(portal_env: PortalEnv) -> None:
    member_id = await _member_of(portal_env, 3)
    async with portal_env.pool.acquire() as conn:
        code = await member_auth.new_activation(conn, member_id, "portal:m0001-admin", portal_env.settings.secret)
        expired = await member_auth.new_activation(conn, await _member_of(portal_env, 2), "t",
                                                   portal_env.settings.secret, ttl_s=1)
        await conn.execute("UPDATE portal.member_activations SET expires_at = now() - interval '1 s' "
                           "WHERE member_id = $1", await _member_of(portal_env, 2))
    assert not await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.member_activations WHERE code_hash::text LIKE $1", f"%{code}%")
    client = portal_env.client()

    async def activate(who: str, the_code: str, password: str) -> int:
        page = await client.get("/member/activate")
        return (await client.post("/member/activate", data={
            "csrf_token": csrf_of(page.text), "login": who, "code": the_code, "new": password,
            "again": password})).status_code

    assert await activate(demo.demo_pan(3), code, "short") == 400  # the policy; the code stays usable
    assert await activate(demo.demo_pan(3), code.lower().replace("-", " "), "chosen by me 123") == 303
    assert (await client.get("/member")).status_code == 200
    assert await activate(demo.demo_pan(3), code, "chosen again 456") == 401  # used
    assert await activate("13800000002", expired, "chosen by me 123") == 401  # expired
    assert not await portal_env.pool.fetchval(
        "SELECT must_change_password FROM portal.member_logins WHERE member_id = $1", member_id)


async def test_member_and_operator_sessions_do_not_open_each_others_pages(portal_env: PortalEnv) -> None:
    member = await member_logged_in(portal_env)
    assert MEMBER_COOKIE_PLAIN in member.cookies
    response = await member.get("/merchants")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    operator = await logged_in(portal_env, "admin")
    response = await operator.get("/member")
    assert response.status_code == 303 and response.headers["location"].startswith("/member/login")


async def test_logout_ends_the_session_on_the_server(portal_env: PortalEnv) -> None:
    client = await member_logged_in(portal_env)
    token = client.cookies[MEMBER_COOKIE_PLAIN]
    page = await client.get("/member")
    assert (await client.post("/member/logout", data={"csrf_token": csrf_of(page.text)})).status_code == 303
    replay = portal_env.client()
    replay.cookies.set(MEMBER_COOKIE_PLAIN, token)
    assert (await replay.get("/member")).status_code == 303


async def test_member_post_without_csrf_is_refused(portal_env: PortalEnv) -> None:
    client = await member_logged_in(portal_env)
    assert (await client.post("/member/logout", data={})).status_code == 403


async def test_blocked_card_keeps_its_member(portal_env: PortalEnv) -> None:
    async with portal_env.pool.acquire() as conn:
        assert await cards.set_card_status(conn, demo.demo_pan(1), "blocked")
    client = portal_env.client()
    assert (await member_login(client, "13800000001")).status_code == 303
    assert "blocked" in (await client.get("/member")).text.lower()


async def test_every_member_route_needs_a_member_session(portal_env: PortalEnv) -> None:
    client = portal_env.client()
    routes = {r.name: r for r in portal_env.app.routes if getattr(r, "name", None) in permissions.MEMBER_ROUTES}
    assert set(routes) == set(permissions.MEMBER_ROUTES)
    for name, route in routes.items():
        # Ids in paths: any number (the session check comes before the object's).
        path = route.path.replace("{", "").replace("}", "")
        path = "/".join("1" if part.endswith("_id") or part == "id" else part for part in path.split("/"))
        response = await (client.get(path) if "GET" in route.methods else client.post(path, data={}))
        assert response.status_code == 303, name
        assert response.headers["location"].startswith("/member/login"), name


async def test_issuing_with_a_taken_phone_is_refused(portal_env: PortalEnv) -> None:
    async with portal_env.pool.acquire() as conn:
        try:
            await cards.issue_card(conn, demo.demo_pan(50), phone="13800000001")
        except Exception as exc:  # noqa: BLE001 - the refusal's type is checked below
            assert "another member" in str(exc)
        else:
            raise AssertionError("a second member with the same login phone was issued")
        member_id = await _member_of(portal_env, 1)
        second = await cards.issue_card(conn, demo.demo_pan(51), member_id=member_id)
    assert second["member_id"] == member_id
    client = await member_logged_in(portal_env)
    assert "621234******0514" in (await client.get("/member")).text or \
        demo.demo_pan(51)[-4:] in (await client.get("/member")).text
