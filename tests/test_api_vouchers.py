"""Member API: POST /vouchers/redeem credits a top-up card once (Idempotency-Key replay, another
member's attempt refused), guessing locks the member and its address out, the answers conform."""

from __future__ import annotations

import asyncio
from pathlib import Path

from api_support import API, PAN1, PAN2, conforms, member_client
from portal_support import MASTER_KEY, PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)
from voucher_support import sold_batch

from switch.metrics import Metrics


async def _points(env: PortalEnv, member_id: int) -> int:
    return int(await env.pool.fetchval(
        "SELECT coalesce(sum(a.posted), 0) FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
        "WHERE a.owner_kind = 'card' AND a.purpose = 'points' AND a.asset = 'PTS:ALLY' AND c.member_id = $1",
        member_id))


async def test_redeem_once_replay_and_refusals(portal_env: PortalEnv, tmp_path: Path) -> None:
    codes = await sold_batch(portal_env.pool, MASTER_KEY, tmp_path, count=2, points=300)
    (s1, c1), (s2, c2) = sorted(codes.items())
    client, member = await member_client(portal_env, PAN1)
    body = {"serial": s1, "code": c1}
    r = conforms(await client.post(f"{API}/vouchers/redeem", json=body))
    assert r.status_code == 400 and r.json()["type"].endswith("/idempotency-key-required")
    key = {"idempotency-key": "voucher-0001"}
    first = conforms(await client.post(f"{API}/vouchers/redeem", json=body, headers=key))
    assert first.status_code == 200, first.text
    assert first.json()["points"] == {"points": 300, "program": "ALLY"} and not first.json()["replayed"]
    again = conforms(await client.post(f"{API}/vouchers/redeem", json=body, headers=key))
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other_key = conforms(await client.post(f"{API}/vouchers/redeem", json=body,
                                           headers={"idempotency-key": "voucher-0002"}))
    assert other_key.status_code == 200 and other_key.json()["replayed"]
    assert await _points(portal_env, member) == 300
    # Another member: the card is used.
    other, other_member = await member_client(portal_env, PAN2, address="10.0.0.2")
    used = conforms(await other.post(f"{API}/vouchers/redeem", json=body, headers={"idempotency-key": "v-3"}))
    assert used.status_code == 422 and used.json()["code"] == "used"
    # A card id that is not the member's.
    card_of_other = await portal_env.pool.fetchval("SELECT id FROM loyalty.cards WHERE member_id = $1", member)
    wrong = conforms(await other.post(f"{API}/vouchers/redeem", json={"serial": s2, "code": c2,
                                                                       "card_id": card_of_other},
                                      headers={"idempotency-key": "v-4"}))
    assert wrong.status_code == 422 and wrong.json()["code"] == "no_card"
    assert await _points(portal_env, other_member) == 0


async def test_guessing_locks_out(portal_env: PortalEnv, tmp_path: Path) -> None:
    codes = await sold_batch(portal_env.pool, MASTER_KEY, tmp_path, count=1)
    serial, code = next(iter(codes.items()))
    client, _ = await member_client(portal_env, PAN1, address="10.0.0.9")
    limit = portal_env.settings.vouchers.failures_max
    for n in range(limit):
        r = conforms(await client.post(f"{API}/vouchers/redeem", json={"serial": serial, "code": f"{n:016d}"},
                                       headers={"idempotency-key": f"guess-{n}"}))
        assert r.status_code == 422 and r.json()["code"] == "invalid"
    locked = conforms(await client.post(f"{API}/vouchers/redeem", json={"serial": serial, "code": code},
                                        headers={"idempotency-key": "guess-right"}))
    assert locked.status_code == 429 and locked.json()["code"] == "locked"
    # The switch's metrics count the portal's lockouts too (the database's totals), read at a
    # scrape from another thread, as the metrics server does.
    metrics = Metrics()
    metrics.watch_vouchers(portal_env.pool)
    text = (await asyncio.to_thread(metrics.render)).decode()
    assert 'switchd_voucher_lockouts_total{scope="address"} 1.0' in text
    assert f'switchd_voucher_redeem_failures_total{{scope="address"}} {float(limit)}' in text
    junk = conforms(await client.post(f"{API}/vouchers/redeem", json={"serial": "x" * 99, "code": code},
                                      headers={"idempotency-key": "guess-junk"}))
    assert junk.status_code == 400
