"""Member API bounds: rate limits (429 + Retry-After), bodies (JSON only, bounded, fields declared),
and the Idempotency-Key store."""

from __future__ import annotations

from dataclasses import replace

from api_support import API, PAN1, PAN2, conforms, member_client, member_of
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)

from portal.api import idempotency
from portal.api.app import attach
from portal.api.problems import Problem


def _with_api(env: PortalEnv, **changes: object) -> None:
    settings = replace(env.settings, api=replace(env.settings.api, **changes))  # type: ignore[arg-type]
    api_app = next(r.app for r in env.app.routes if getattr(r, "name", None) == "api")  # type: ignore[attr-defined]
    attach(api_app, replace(env.app.state.portal, settings=settings))


async def test_rate_limit_per_member(portal_env: PortalEnv) -> None:
    _with_api(portal_env, rate_member_per_s=0.01, rate_member_burst=3)
    client, _ = await member_client(portal_env, PAN1, address="10.0.0.7")
    statuses = [(await client.get(f"{API}/me")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = conforms(await client.get(f"{API}/me/balances"))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["type"].endswith("/rate-limited") and "member" in r.json()["detail"]
    # The same member from elsewhere is the same member; another member is not limited by this one.
    elsewhere, _ = await member_client(portal_env, PAN1, address="10.0.0.8")
    assert (await elsewhere.get(f"{API}/me")).status_code == 429
    another, _ = await member_client(portal_env, PAN2, address="10.0.0.7")
    assert (await another.get(f"{API}/me")).status_code == 200


async def test_rate_limit_per_address_before_any_token(portal_env: PortalEnv) -> None:
    _with_api(portal_env, rate_address_per_s=0.01, rate_address_burst=2)
    client = portal_env.client("10.9.9.9")
    statuses = [(await client.get(f"{API}/merchants")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = conforms(await client.post(f"{API}/sessions", json={"login": PAN1, "password": "whatever it is"}))
    assert r.status_code == 429 and "address" in r.json()["detail"]
    assert (await portal_env.client("10.9.9.10").get(f"{API}/merchants")).status_code == 200


async def test_bodies_json_only_bounded_and_declared(portal_env: PortalEnv) -> None:
    _with_api(portal_env, body_max_bytes=256)
    client, _ = await member_client(portal_env, PAN1)
    cases = [
        ({"content": b"name=x", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 400),
        ({"json": {"name": "x" * 300}}, 413),
        ({"json": {"nickname": "x"}}, 400),
    ]
    for kwargs, status in cases:
        r = conforms(await client.patch(f"{API}/me", **kwargs))  # type: ignore[arg-type]
        assert r.status_code == status, (kwargs, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    # Past the portal's own bound: refused before the API reads it, still as a problem.
    r = await client.patch(f"{API}/me", json={"name": "x" * 70_000})
    assert r.status_code == 413 and r.json()["type"].endswith("/body-too-large")


async def test_idempotency_store_replays_refuses_and_expires(portal_env: PortalEnv) -> None:
    pool = portal_env.pool
    member_id = await member_of(pool, PAN1)
    first = idempotency.request_hash("POST", "/api/v1/orders", {"good_id": 1})
    other = idempotency.request_hash("POST", "/api/v1/orders", {"good_id": 2})
    assert await idempotency.begin(pool, member_id, "k-1", first, 3600) is None
    # Still being answered: a repeat waits (409 in progress), another body is refused.
    for req_hash, kind in ((first, "idempotency-key-in-progress"), (other, "idempotency-key-reused")):
        try:
            await idempotency.begin(pool, member_id, "k-1", req_hash, 3600)
            raise AssertionError("not refused")
        except Problem as problem:
            assert (problem.status, problem.kind) == (409, kind)
    await idempotency.finish(pool, member_id, "k-1", 201, b'{"id":1}')
    replay = await idempotency.begin(pool, member_id, "k-1", first, 3600)
    assert replay == idempotency.Replay(201, b'{"id":1}')
    # Another member's key of the same name is its own.
    other_member = await member_of(pool, "6212340000000027")
    assert await idempotency.begin(pool, other_member, "k-1", other, 3600) is None
    # A server error is not kept: the key is free again.
    await idempotency.finish(pool, other_member, "k-1", 500, b"{}")
    assert await idempotency.begin(pool, other_member, "k-1", other, 3600) is None
    # An expired answer's key can be used afresh.
    await pool.execute("UPDATE portal.api_idempotency SET expires_at = now() - interval '1 second'")
    assert await idempotency.begin(pool, member_id, "k-1", other, 3600) is None
    # A first request that never finished (a crash) is let through again after a while.
    assert await idempotency.begin(pool, member_id, "k-2", first, 3600) is None
    await pool.execute("UPDATE portal.api_idempotency SET created_at = now() - interval '1 hour' "
                       "WHERE idempotency_key = 'k-2'")
    assert await idempotency.begin(pool, member_id, "k-2", first, 3600) is None
    for bad in (None, "", "has space", "x" * 65):
        try:
            idempotency.key_of(bad)
            raise AssertionError("accepted")
        except Problem as problem:
            assert problem.status == 400
