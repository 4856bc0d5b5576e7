"""Exchange rates and exchanges in the portal: the platform publishes rates (audited), merchants'
users and members see the table in force, a member exchanges from its own card."""

from __future__ import annotations

import itertools

import httpx
from portal_support import (
    PortalEnv,
    csrf_of,
    logged_in,
    member_logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)

from ledger.loyalty import card_numbers, demo, rates
from ledger.loyalty.outcomes import Reason, Request, TxnType

PAN1 = demo.demo_pan(1)
_n = itertools.count(1)


async def _topup(env: PortalEnv, points: int) -> None:
    loyalty = env.app.state.portal.loyalty
    n = next(_n)
    req = Request(key=f"xp|{n}", terminal_id="T0000001", merchant_id="M0001", pan=PAN1, amount=points,
                  rrn=f"8{n:011d}", stan=f"{n:06d}", account="65")
    assert (await loyalty.execute(TxnType.TOPUP, req)).reason is Reason.APPROVED


async def test_the_platform_publishes_a_rate_everyone_sees_it(portal_env: PortalEnv) -> None:
    admin = await logged_in(portal_env, "admin")
    refused = await post_form(admin, "/exchange-rates", "/exchange-rates/new", from_program="ALLY",
                              to_program="CAFE", rate_num="x", rate_den="1", fee_bps="0")
    assert refused.status_code == 400 and "whole numbers" in refused.text
    same = await post_form(admin, "/exchange-rates", "/exchange-rates/new", from_program="ALLY",
                           to_program="ALLY", rate_num="1", rate_den="1", fee_bps="0")
    assert same.status_code == 400 and "different programs" in same.text
    done = await post_form(admin, "/exchange-rates", "/exchange-rates/new", from_program="ALLY",
                           to_program="CAFE", rate_num="1", rate_den="2", fee_bps="100")
    assert done.status_code == 303
    audit = await portal_env.pool.fetchrow("SELECT actor, action, after FROM portal.audit WHERE action = 'rate_set'")
    assert audit["actor"] == "portal:admin"
    page = (await admin.get("/exchange-rates")).text
    assert "1/2" in page and "Publish a rate" in page and "Every rate published" in page
    merchant = await logged_in(portal_env, "m0001-operator", "10.0.0.2")
    seen = (await merchant.get("/exchange-rates")).text
    assert "1/2" in seen and "Publish a rate" not in seen and "Every rate published" not in seen
    assert (await post_form(merchant, "/exchange-rates", "/exchange-rates/new", from_program="ALLY",
                            to_program="CAFE", rate_num="9", rate_den="1")).status_code == 403
    operator = await logged_in(portal_env, "operator", "10.0.0.3")
    assert "Every rate published" in (await operator.get("/exchange-rates")).text


async def test_a_member_exchanges_from_its_own_card(portal_env: PortalEnv) -> None:
    await _topup(portal_env, 1000)
    await rates.set_rate(portal_env.pool, "ALLY", "CAFE", 1, 2, 1000)
    client = await member_logged_in(portal_env)
    page = await client.get("/member/exchange")
    assert page.status_code == 200 and "1/2" in page.text
    card = await card_numbers.card_id_by_number(portal_env.pool, PAN1)
    form = {"csrf_token": csrf_of(page.text), "card_id": str(card), "from_program": "ALLY", "to_program": "CAFE",
            "points": "600", "request_key": "page-key-0001"}
    done = await client.post("/member/exchange", data=form)
    assert done.status_code == 200 and "into 270 points of CAFE" in done.text
    again = await client.post("/member/exchange", data=form)  # the same form again: the same exchange
    assert again.status_code == 200
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'exchange'") == 1
    short = await client.post("/member/exchange", data={**form, "points": "999", "request_key": "page-key-0002"})
    assert short.status_code == 400
    # The decline is on record, and in the member's history, as a terminal's would be.
    declined = await portal_env.pool.fetchrow(
        "SELECT reason, channel, amount, journal_id FROM loyalty.transactions WHERE txn_type = 'exchange' "
        "AND idempotency_key = $1", f"exchange:web:{card}:page-key-0002")
    assert tuple(declined) == ("insufficient", "web", 999, None)
    history = (await client.get("/member/history")).text
    assert "the card does not have enough points" in history
    other = await card_numbers.card_id_by_number(portal_env.pool, demo.demo_pan(2))
    stolen = await client.post("/member/exchange", data={**form, "card_id": str(other), "request_key": "k3-0003"})
    assert stolen.status_code == 404
    balances = await portal_env.pool.fetch(
        "SELECT asset, posted FROM ledger.accounts WHERE owner_kind = 'card' AND owner_id = $1::text "
        "AND purpose = 'points' ORDER BY asset", str(card))
    assert [(r["asset"], r["posted"]) for r in balances] == [("PTS:ALLY", 400), ("PTS:CAFE", 270)]
    channels = await portal_env.pool.fetch("SELECT DISTINCT channel FROM loyalty.transactions WHERE txn_type = 'exchange'")
    assert [r["channel"] for r in channels] == ["web"]


async def test_member_exchange_needs_a_member_session(portal_env: PortalEnv) -> None:
    anonymous: httpx.AsyncClient = portal_env.client("10.0.0.7")
    response = await anonymous.get("/member/exchange")
    assert response.status_code == 303 and response.headers["location"].startswith("/member/login")
