"""Member API: profile, balances, history over every channel, public merchants; paging and 404s."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_support import API, PAN1, PAN2, PAN3, conforms, member_client, member_of, take
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)

from ledger.loyalty import card_numbers, wallet
from ledger.loyalty.cards import issue_card
from ledger.loyalty.demo import demo_pan


async def test_profile_read_and_edit(portal_env: PortalEnv) -> None:
    client, member_id = await member_client(portal_env, PAN1)
    r = conforms(await client.patch(f"{API}/me", json={"name": "张三", "delivery_address": "1 Road, Shanghai",
                                                       "email": "zs@example.com"}))
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["email"]) == ("张三", "zs@example.com")
    assert conforms(await client.get(f"{API}/me")).json()["delivery_address"] == "1 Road, Shanghai"
    for bad in ({"phone": "123"}, {"name": "x" * 81}, {"email": "not an address"}, {"name": 5}):
        r = conforms(await client.patch(f"{API}/me", json=bad))
        assert r.status_code == 400 and r.json()["type"].endswith("/invalid-body"), bad
    assert await portal_env.pool.fetchval("SELECT name FROM loyalty.members WHERE id = $1", member_id) == "张三"


async def test_balances_per_card_with_program_and_currency(portal_env: PortalEnv) -> None:
    member_id = await member_of(portal_env.pool, PAN1)
    second = demo_pan(9)
    async with portal_env.pool.acquire() as conn:
        await issue_card(conn, second, expiry="3012", member_id=member_id)
    await take(portal_env, "M0001", "earn", PAN1, 12_300)  # 123 points at 1 per unit
    await take(portal_env, "M0001", "load", second, 5_000)
    await take(portal_env, "M0003", "earn", second, 1_000)
    client, _ = await member_client(portal_env, PAN1)
    cards = conforms(await client.get(f"{API}/me/balances")).json()["cards"]
    assert [c["pan"] for c in cards] == ["621234******0019", "621234******0092"]
    assert cards[0]["points"] == [{"program": "ALLY", "points": 123, "available_points": 123}]
    assert cards[1]["stored_value"] == [{"currency": "CNY", "amount_minor": 5_000, "available_minor": 5_000}]
    assert [p["program"] for p in cards[1]["points"]] == ["CAFE"]


async def test_history_over_cards_paged_with_a_signed_cursor(portal_env: PortalEnv) -> None:
    for amount in (1_000, 2_000, 3_000, 4_000, 5_000):
        await take(portal_env, "M0001", "earn", PAN1, amount)
    await take(portal_env, "M0001", "earn", PAN2, 7_000)  # another member's
    client, _ = await member_client(portal_env, PAN1)
    seen: list[int] = []
    url = f"{API}/me/transactions?limit=2"
    pages = 0
    while url:
        body = conforms(await client.get(url)).json()
        seen += [t["points"]["points"] for t in body["items"]]
        assert all(t["channel"] == "web" and t["approved"] and t["type"] == "earn" for t in body["items"])
        pages += 1
        url = f"{API}/me/transactions?limit=2&cursor={body['next_cursor']}" if body["next_cursor"] else ""
    assert seen == [50, 40, 30, 20, 10] and pages == 3
    first = conforms(await client.get(f"{API}/me/transactions?limit=1")).json()
    assert first["items"][0]["pan"] == "621234******0019"
    tampered = first["next_cursor"][:-3] + ("AAA" if not first["next_cursor"].endswith("AAA") else "BBB")
    for query in (f"cursor={tampered}", "cursor=!!!", "limit=0", "limit=101", "limit=x"):
        r = conforms(await client.get(f"{API}/me/transactions?{query}"))
        assert r.status_code == 400, query
    # A cursor of another member's list is not accepted for this one.
    other, _ = await member_client(portal_env, PAN3)
    r = conforms(await other.get(f"{API}/me/transactions?cursor={first['next_cursor']}"))
    assert r.status_code == 400 and r.json()["type"].endswith("/invalid-cursor")
    assert conforms(await other.get(f"{API}/me/transactions")).json() == {"items": [], "next_cursor": None}


async def test_merchants_are_public_and_filtered_by_program(portal_env: PortalEnv) -> None:
    client = portal_env.client()
    everyone = conforms(await client.get(f"{API}/merchants")).json()
    assert [m["id"] for m in everyone["items"]] == ["M0001", "M0002", "M0003"]
    ally = conforms(await client.get(f"{API}/merchants?program=ALLY&limit=1")).json()
    assert [m["id"] for m in ally["items"]] == ["M0001"] and ally["next_cursor"]
    rest = conforms(await client.get(f"{API}/merchants?program=ALLY&limit=1&cursor={ally['next_cursor']}")).json()
    assert [m["id"] for m in rest["items"]] == ["M0002"]
    # The cursor is bound to the filter it was made under.
    assert (await client.get(f"{API}/merchants?program=CAFE&cursor={ally['next_cursor']}")).status_code == 400
    await portal_env.pool.execute("UPDATE loyalty.merchants SET status = 'disabled' WHERE merchant_id = 'M0002'")
    assert [m["id"] for m in conforms(await client.get(f"{API}/merchants")).json()["items"]] == ["M0001", "M0003"]


async def test_unknown_paths_and_methods_are_problems(portal_env: PortalEnv) -> None:
    client, _ = await member_client(portal_env, PAN1)
    r = await client.get(f"{API}/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await client.put(f"{API}/me/balances")
    assert r.status_code == 405 and r.json()["type"].endswith("/method-not-allowed")
    # The portal's security headers, no cookie.
    assert r.headers["x-content-type-options"] == "nosniff" and "set-cookie" not in r.headers



def _reads_of(node: dict[str, Any], relation: str) -> list[str]:
    """The node types of an EXPLAIN (FORMAT JSON) plan that read ``relation``."""
    found = [str(node["Node Type"])] if node.get("Relation Name") == relation else []
    for child in node.get("Plans", []):
        found += _reads_of(child, relation)
    return found


async def test_history_reads_the_members_cards_by_index(portal_env: PortalEnv) -> None:
    """Among 20,000 transactions of another card, a member's history reads by index, not the table."""
    async with portal_env.pool.acquire() as conn:
        other_card = await conn.fetchval("SELECT id FROM loyalty.cards WHERE id = $1",
            await card_numbers.card_id_by_number(conn, PAN2))
        await conn.execute(
            "INSERT INTO loyalty.transactions(business_date, txn_type, reason, merchant_id, program, amount, "
            "currency, points_delta, money_delta_minor, fee_minor, idempotency_key, card_id) "
            "SELECT current_date, 'earn', 'approved', 'M0001', 'ALLY', 100, '156', 1, 0, 0, 'hist-' || i, $1 "
            "FROM generate_series(1, 20000) i", other_card)
        await conn.execute("ANALYZE loyalty.transactions")
        member_id = await member_of(portal_env.pool, PAN1)
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {wallet.HISTORY_SQL.format(limit=21)}",
                                              member_id, None))
    reads = _reads_of(plan[0]["Plan"], "transactions")
    assert reads and "Seq Scan" not in reads, reads
    await portal_env.pool.execute("DELETE FROM loyalty.transactions WHERE idempotency_key LIKE 'hist-%'")


async def test_a_fault_is_a_problem_without_its_details(portal_env: PortalEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from portal.api import me

    async def broken(*_args: object) -> None:
        raise RuntimeError("secret detail of the fault")

    monkeypatch.setattr(me.wallet, "balances", broken)
    client, _ = await member_client(portal_env, PAN1)
    r = await client.get(f"{API}/me/balances")
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/internal") and "secret" not in r.text and "Traceback" not in r.text
