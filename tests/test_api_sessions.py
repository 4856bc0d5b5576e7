"""Member API sessions: login, tokens, expiry, refresh rotation and reuse, logout, password change."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from api_support import (
    API,
    MEMBER_PASSWORD,
    PAN1,
    PAN2,
    auth,
    conforms,
    give_password,
    log_in,
    member_of,
)
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)

from portal import member_auth
from portal.api.app import attach
from portal.api.problems import CONTENT_TYPE


def _api_app(env: PortalEnv):  # type: ignore[no-untyped-def]
    return next(r.app for r in env.app.routes if getattr(r, "name", None) == "api")  # type: ignore[attr-defined]


async def test_login_by_card_or_phone_and_wrong_passwords_alike(portal_env: PortalEnv) -> None:
    member_id = await give_password(portal_env.pool, PAN1)
    await portal_env.pool.execute("UPDATE loyalty.members SET phone = '+8613800138000' WHERE id = $1", member_id)
    client = portal_env.client()
    tokens = await log_in(client, PAN1)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    assert not tokens["password_change_required"]
    by_phone = await log_in(client, "+86 138 0013 8000")
    me = conforms(await client.get(f"{API}/me", headers=auth(by_phone)))
    assert me.json()["id"] == member_id and me.json()["cards"][0]["pan"] == "621234******0019"
    for login, password in ((PAN1, "wrong password 1"), (PAN2, MEMBER_PASSWORD), ("nobody", "x")):
        r = conforms(await client.post(f"{API}/sessions", json={"login": login, "password": password}))
        assert r.status_code == 401 and r.headers["content-type"] == CONTENT_TYPE
        assert r.json()["type"].endswith("/login-failed") and r.json()["status"] == 401
    # Only keyed hashes are stored.
    stored = [bytes(r["token_hash"]) for r in await portal_env.pool.fetch("SELECT token_hash FROM portal.api_tokens")]
    assert tokens["access_token"].encode() not in stored and all(len(h) == 32 for h in stored)


async def test_no_token_bad_token_and_the_challenge(portal_env: PortalEnv) -> None:
    client = portal_env.client()
    for headers in ({}, {"authorization": "Bearer swa_nope"}, {"authorization": "Basic abc"}):
        r = conforms(await client.get(f"{API}/me/balances", headers=headers))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["title"] == "Authentication required" and "Traceback" not in r.text


async def test_access_token_expires(portal_env: PortalEnv) -> None:
    settings = replace(portal_env.settings, api=replace(portal_env.settings.api, access_token_ttl_s=1))
    attach(_api_app(portal_env), replace(portal_env.app.state.portal, settings=settings))
    await give_password(portal_env.pool, PAN1)
    client = portal_env.client()
    tokens = await log_in(client, PAN1)
    assert tokens["expires_in"] == 1
    assert (await client.get(f"{API}/me", headers=auth(tokens))).status_code == 200
    await asyncio.sleep(1.2)
    assert (await client.get(f"{API}/me", headers=auth(tokens))).status_code == 401
    fresh = (await client.post(f"{API}/sessions/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    assert (await client.get(f"{API}/me", headers=auth(fresh))).status_code == 200


async def test_refresh_rotates_and_reuse_revokes_the_family(portal_env: PortalEnv) -> None:
    await give_password(portal_env.pool, PAN1)
    client = portal_env.client()
    first = await log_in(client, PAN1)
    other_device = await log_in(client, PAN1)
    r = conforms(await client.post(f"{API}/sessions/refresh", json={"refresh_token": first["refresh_token"]}))
    second = r.json()
    assert r.status_code == 200 and second["refresh_token"] != first["refresh_token"]
    # The rotation ends the old access token; the new one works.
    assert (await client.get(f"{API}/me", headers=auth(first))).status_code == 401
    assert (await client.get(f"{API}/me", headers=auth(second))).status_code == 200
    # The used refresh token again: the family is revoked, the newer tokens with it.
    reuse = conforms(await client.post(f"{API}/sessions/refresh", json={"refresh_token": first["refresh_token"]}))
    assert reuse.status_code == 401
    assert (await client.get(f"{API}/me", headers=auth(second))).status_code == 401
    assert (await client.post(f"{API}/sessions/refresh",
                              json={"refresh_token": second["refresh_token"]})).status_code == 401
    assert await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.api_token_families WHERE revoked_reason = 'reuse'") == 1
    # Another login of the member is another family, untouched.
    assert (await client.get(f"{API}/me", headers=auth(other_device))).status_code == 200


async def test_logout_revokes_at_once(portal_env: PortalEnv) -> None:
    await give_password(portal_env.pool, PAN1)
    client = portal_env.client()
    tokens = await log_in(client, PAN1)
    r = conforms(await client.delete(f"{API}/sessions/current", headers=auth(tokens)))
    assert r.status_code == 204 and r.content == b""
    assert (await client.get(f"{API}/me", headers=auth(tokens))).status_code == 401
    assert (await client.post(f"{API}/sessions/refresh",
                              json={"refresh_token": tokens["refresh_token"]})).status_code == 401


async def test_sessions_per_member_are_bounded(portal_env: PortalEnv) -> None:
    settings = replace(portal_env.settings, api=replace(portal_env.settings.api, sessions_per_member_max=2))
    attach(_api_app(portal_env), replace(portal_env.app.state.portal, settings=settings))
    await give_password(portal_env.pool, PAN1)
    client = portal_env.client()
    oldest, *newer = [await log_in(client, PAN1) for _ in range(3)]
    assert (await client.get(f"{API}/me", headers=auth(oldest))).status_code == 401
    assert [(await client.get(f"{API}/me", headers=auth(t))).status_code for t in newer] == [200, 200]


async def test_a_password_to_change_allows_only_changing_it(portal_env: PortalEnv) -> None:
    member_id = await give_password(portal_env.pool, PAN1, must_change=True)
    client = portal_env.client()
    tokens = await log_in(client, PAN1)
    assert tokens["password_change_required"]
    r = conforms(await client.get(f"{API}/me/balances", headers=auth(tokens)))
    assert r.status_code == 403 and r.json()["type"].endswith("/password-change-required")
    wrong = conforms(await client.post(f"{API}/me/password", headers=auth(tokens),
                                       json={"current_password": "not it at all", "new_password": "a new one 5678"}))
    assert wrong.status_code == 403
    weak = conforms(await client.post(f"{API}/me/password", headers=auth(tokens),
                                      json={"current_password": MEMBER_PASSWORD, "new_password": "short"}))
    assert weak.status_code == 422 and "10 to 128" in weak.json()["detail"]
    done = conforms(await client.post(f"{API}/me/password", headers=auth(tokens),
                                      json={"current_password": MEMBER_PASSWORD, "new_password": "a new one 5678"}))
    assert done.status_code == 204
    assert (await client.get(f"{API}/me/balances", headers=auth(tokens))).status_code == 200
    assert not await portal_env.pool.fetchval(
        "SELECT must_change_password FROM portal.member_logins WHERE member_id = $1", member_id)
    assert (await client.post(f"{API}/sessions", json={"login": PAN1, "password": MEMBER_PASSWORD})).status_code == 401
    assert not (await log_in(client, PAN1, "a new one 5678"))["password_change_required"]


async def test_guessing_the_current_password_locks_the_address(portal_env: PortalEnv) -> None:
    await give_password(portal_env.pool, PAN1)
    client = portal_env.client("10.5.5.5")
    tokens = await log_in(client, PAN1)
    wrong = {"current_password": "a guess at it", "new_password": "a new one 5678"}
    limit = portal_env.settings.login_address_failures_max
    for _ in range(limit):
        assert (await client.post(f"{API}/me/password", headers=auth(tokens), json=wrong)).status_code == 403
    # Locked: even the right password is refused from this address now.
    right = {"current_password": MEMBER_PASSWORD, "new_password": "a new one 5678"}
    assert (await client.post(f"{API}/me/password", headers=auth(tokens), json=right)).status_code == 403


async def test_a_disabled_member_loses_its_tokens(portal_env: PortalEnv) -> None:
    await give_password(portal_env.pool, PAN1)
    client = portal_env.client()
    tokens = await log_in(client, PAN1)
    await portal_env.pool.execute("UPDATE loyalty.members SET status = 'disabled' WHERE id = $1",
                                  await member_of(portal_env.pool, PAN1))
    assert (await client.get(f"{API}/me", headers=auth(tokens))).status_code == 401
    assert (await client.post(f"{API}/sessions/refresh",
                              json={"refresh_token": tokens["refresh_token"]})).status_code == 401


async def test_a_password_set_by_someone_else_ends_the_api_sessions(portal_env: PortalEnv) -> None:
    member_id = await give_password(portal_env.pool, PAN1)
    client = portal_env.client()
    tokens = await log_in(client, PAN1)
    async with portal_env.pool.acquire() as conn, conn.transaction():
        await member_auth.set_password(conn, member_id, "reset by merchant 1", by_self=False)
    assert (await client.get(f"{API}/me", headers=auth(tokens))).status_code == 401
    assert (await client.post(f"{API}/sessions/refresh",
                              json={"refresh_token": tokens["refresh_token"]})).status_code == 401
    assert (await log_in(client, PAN1, "reset by merchant 1"))["password_change_required"]
