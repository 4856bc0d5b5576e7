"""Member API: exchange rates (public) and exchanges: Idempotency-Key replay and 409, insufficient
points, no rate, another member's card 404; answers conform to the OpenAPI document."""

from __future__ import annotations

from api_support import API, PAN1, PAN2, conforms, member_client, take
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)

from ledger.loyalty import card_numbers, rates

KEY = {"idempotency-key": "exchange-0001"}


async def test_rates_are_public(portal_env: PortalEnv) -> None:
    await rates.set_rate(portal_env.pool, "ALLY", "CAFE", 1, 2, 100)
    client = portal_env.client()
    body = conforms(await client.get(f"{API}/rates")).json()
    assert [(r["from_program"], r["to_program"], r["rate_num"], r["rate_den"], r["fee_bps"])
            for r in body["items"]] == [("ALLY", "CAFE", 1, 2, 100)]
    assert conforms(await client.get(f"{API}/rates?from=CAFE")).json()["items"] == []


async def test_exchange_replay_conflict_and_declines(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "earn", PAN1, 10_000)  # 100 ALLY points
    client, _ = await member_client(portal_env, PAN1)
    body = {"from_program": "ALLY", "to_program": "CAFE", "points": 60}
    no_rate = conforms(await client.post(f"{API}/exchanges", json=body, headers={"idempotency-key": "x-no-rate"}))
    assert no_rate.status_code == 422 and no_rate.json()["code"] == "invalid_txn"
    await rates.set_rate(portal_env.pool, "ALLY", "CAFE", 1, 2, 1000)
    r = conforms(await client.post(f"{API}/exchanges", json=body))
    assert r.status_code == 400  # no Idempotency-Key
    first = conforms(await client.post(f"{API}/exchanges", json=body, headers=KEY))
    done = first.json()
    assert first.status_code == 201, done
    assert (done["given"], done["received"], done["fee"]) == (
        {"points": 60, "program": "ALLY"}, {"points": 27, "program": "CAFE"}, {"points": 3, "program": "CAFE"})
    again = conforms(await client.post(f"{API}/exchanges", json=body, headers=KEY))
    assert (again.status_code, again.json()) == (201, done)
    other = conforms(await client.post(f"{API}/exchanges", json=body | {"points": 1}, headers=KEY))
    assert other.status_code == 409
    short = conforms(await client.post(f"{API}/exchanges", json=body, headers={"idempotency-key": "x-short"}))
    assert short.status_code == 422 and short.json()["type"].endswith("/insufficient-balance")
    theirs = await card_numbers.card_id_by_number(portal_env.pool, PAN2)
    stolen = conforms(await client.post(f"{API}/exchanges", json=body | {"card_id": theirs},
                                        headers={"idempotency-key": "x-theirs"}))
    assert stolen.status_code == 404
    rows = await portal_env.pool.fetch("SELECT channel, amount, target_points_delta, reason FROM loyalty.transactions "
                                       "WHERE txn_type = 'exchange' AND journal_id IS NOT NULL")
    assert [tuple(r) for r in rows] == [("api", 60, 27, "approved")]
    # The declines are on record (no journal), as a terminal's are; the other member's card is not.
    rows = await portal_env.pool.fetch("SELECT channel, amount, reason FROM loyalty.transactions "
                                       "WHERE txn_type = 'exchange' AND journal_id IS NULL ORDER BY id")
    assert [tuple(r) for r in rows] == [("api", 60, "invalid_txn"), ("api", 60, "insufficient")]
