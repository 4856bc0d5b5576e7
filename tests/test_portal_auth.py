"""Logging in and out: generic failures, throttles, session rotation and expiry, CSRF, forced change."""

from __future__ import annotations

import re

from portal_support import (
    PASSWORD,
    PortalEnv,
    csrf_of,
    logged_in,
    login,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)

from portal.sessions import COOKIE_PLAIN, COOKIE_SECURE

GENERIC = "Login failed: wrong login or password, or too many attempts. Try again later."


async def test_every_login_failure_says_the_same(portal_env: PortalEnv) -> None:
    await portal_env.pool.execute("UPDATE portal.users SET disabled = true WHERE login = 'operator'")
    bodies = set()
    for user, password in (("admin", "wrong-password-1"), ("nobody", PASSWORD), ("operator", PASSWORD), ("", "")):
        response = await login(portal_env.client(), user, password)
        assert response.status_code == 401
        assert GENERIC in response.text
        main = response.text.split("<main", 1)[1].split("</main>")[0]
        bodies.add(re.sub(r'name="csrf_token" value="[^"]*"', "", main))
    assert len(bodies) == 1


async def test_account_is_locked_after_repeated_failures(portal_env: PortalEnv) -> None:
    for n in range(portal_env.settings.login_account_failures_max):
        assert (await login(portal_env.client(f"10.1.0.{n}"), "admin", "wrong-password-1")).status_code == 401
    # The right password now fails too, from anywhere, with the same message.
    response = await login(portal_env.client("10.2.0.1"), "admin")
    assert response.status_code == 401 and GENERIC in response.text
    assert await portal_env.pool.fetchval("SELECT locked_until > now() FROM portal.users WHERE login = 'admin'")


async def test_address_is_locked_after_repeated_failures(portal_env: PortalEnv) -> None:
    for n in range(portal_env.settings.login_address_failures_max):
        assert (await login(portal_env.client("10.9.9.9"), f"nobody{n}", "wrong-password-1")).status_code == 401
    assert (await login(portal_env.client("10.9.9.9"), "admin")).status_code == 401
    assert (await login(portal_env.client("10.9.9.10"), "admin")).status_code == 303


async def test_session_id_changes_at_login_and_logout_ends_it(portal_env: PortalEnv) -> None:
    client = portal_env.client()
    client.cookies.set(COOKIE_PLAIN, "planted-by-an-attacker", domain="testserver.local")
    assert (await login(client, "admin")).status_code == 303
    first = client.cookies[COOKIE_PLAIN]
    assert first != "planted-by-an-attacker"
    assert (await login(client, "admin")).status_code == 303
    second = client.cookies[COOKIE_PLAIN]
    assert second != first
    replay = portal_env.client()
    replay.cookies.set(COOKIE_PLAIN, first)
    assert (await replay.get("/")).status_code == 303  # the old session ended at the new login
    response = await post_form(client, "/", "/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    replay.cookies.set(COOKIE_PLAIN, second)
    assert (await replay.get("/")).status_code == 303
    assert await portal_env.pool.fetchval("SELECT count(*) FROM portal.sessions") == 0


async def test_cookie_attributes(portal_env: PortalEnv) -> None:
    plain = await login(portal_env.client(), "admin")
    cookie = plain.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    tls = portal_env.client()
    tls.base_url = "https://testserver"  # type: ignore[assignment]
    response = await login(tls, "admin")
    session_cookie = [c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE_SECURE)]
    assert session_cookie and "secure" in session_cookie[0].lower() and "httponly" in session_cookie[0].lower()
    assert "strict-transport-security" in response.headers


async def test_idle_and_absolute_expiry(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    assert (await client.get("/")).status_code == 200
    await portal_env.pool.execute("UPDATE portal.sessions SET expires_idle_at = now() - interval '1 second'")
    assert (await client.get("/")).status_code == 303
    client = await logged_in(portal_env, "admin")
    await portal_env.pool.execute("UPDATE portal.sessions SET expires_absolute_at = now() - interval '1 second'")
    assert (await client.get("/")).status_code == 303


async def test_csrf_token_is_required(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    form = {"merchant_id": "MX1", "name": "X", "program": "ALLY", "earn_rate": "1", "fees": "0"}
    assert (await client.post("/merchants/new", data=form)).status_code == 403
    assert (await client.post("/merchants/new", data={**form, "csrf_token": "forged"})).status_code == 403
    assert (await client.post("/logout", data={})).status_code == 403
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.merchants WHERE merchant_id = 'MX1'") == 0
    assert (await post_form(client, "/merchants/new", **form)).status_code == 303
    # The login form: a token from another browser's pre-login cookie does not fit this one.
    other = portal_env.client()
    token = csrf_of((await other.get("/login")).text)
    fresh = portal_env.client()
    await fresh.get("/login")
    response = await fresh.post("/login", data={"login": "admin", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 400


async def test_password_set_by_someone_else_must_be_changed(portal_env: PortalEnv) -> None:
    admin = await logged_in(portal_env, "m0001-admin")
    created = await post_form(admin, "/operators/new", login="cashier2", display_name="Cashier Two",
                              role="merchant_operator", password="Temporary-pass-1")
    assert created.status_code == 303, created.text
    user = portal_env.client()
    assert (await login(user, "cashier2", "Temporary-pass-1")).status_code == 303
    for path in ("/", "/transactions", "/profile"):
        response = await user.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/password"
    weak = await post_form(user, "/password", current="Temporary-pass-1", new="short", again="short")
    assert weak.status_code == 400 and "10 to 128" in weak.text
    before = user.cookies[COOKIE_PLAIN]
    done = await post_form(user, "/password", current="Temporary-pass-1", new="My-own-secret-77",
                           again="My-own-secret-77")
    assert done.status_code == 303
    assert user.cookies[COOKIE_PLAIN] != before
    assert (await user.get("/")).status_code == 200
    assert (await login(portal_env.client(), "cashier2", "Temporary-pass-1")).status_code == 401
    assert (await login(portal_env.client(), "cashier2", "My-own-secret-77")).status_code == 303
    stored = await portal_env.pool.fetchval("SELECT password_hash FROM portal.users WHERE login = 'cashier2'")
    assert stored.startswith("$argon2id$")


async def test_reset_and_disable_end_the_users_sessions(portal_env: PortalEnv) -> None:
    cashier = await logged_in(portal_env, "m0001-operator")
    op = await portal_env.pool.fetchval("SELECT id FROM portal.users WHERE login = 'm0001-operator'")
    admin = await logged_in(portal_env, "m0001-admin")
    assert (await post_form(admin, f"/operators/{op}", f"/operators/{op}/reset",
                            password="Reset-by-admin-1")).status_code == 303
    assert (await cashier.get("/")).status_code == 303
    cashier = portal_env.client()
    assert (await login(cashier, "m0001-operator", "Reset-by-admin-1")).status_code == 303
    assert (await cashier.get("/")).headers["location"] == "/password"
    assert (await post_form(admin, f"/operators/{op}", f"/operators/{op}/status", disabled="1")).status_code == 303
    assert (await cashier.get("/password")).status_code == 303
    assert (await login(portal_env.client(), "m0001-operator", "Reset-by-admin-1")).status_code == 401
