"""Members (cards) over HTTP: issue under a platform BIN, find, list, view, edit, block; a merchant's
users see their program's members only."""

from __future__ import annotations

import re

import httpx
from portal_support import (
    PASSWORD,
    PortalEnv,
    csrf_of,
    logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)
from test_portal_seat import take

from ledger.loyalty import card_numbers, demo
from portal.users import create_user

PAN1, PAN3 = demo.demo_pan(1), demo.demo_pan(3)


async def cafe_admin(env: PortalEnv) -> httpx.AsyncClient:
    """A logged-in admin of M0003, the hosted CAFE program's merchant (no demo user has it)."""
    async with env.pool.acquire() as conn:
        await create_user(conn, "m0003-admin", "Bakery Admin", PASSWORD, "merchant_admin", "M0003",
                          must_change_password=False)
    return await logged_in(env, "m0003-admin")


async def _card_id(env: PortalEnv, pan: str) -> int:
    return int(await env.pool.fetchval("SELECT id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(env.pool, pan)))


async def test_issue_under_a_bin_enrols_in_the_program(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    form = await client.get("/members/new")
    assert form.status_code == 200 and "621234" in form.text
    made = await post_form(client, "/members/new", bin="621234", name="Ada", phone="138 0000 0000", expiry="")
    assert made.status_code == 303, made.text
    card_path = made.headers["location"]
    view = await client.get(card_path)
    assert view.status_code == 200 and "Ada" in view.text
    pan = await card_numbers.number_of(
        portal_env.pool, await portal_env.pool.fetchval("SELECT id FROM loyalty.cards WHERE name = 'Ada'"))
    assert pan is not None
    assert pan.startswith("621234") and len(pan) == 16 and pan not in view.text
    assert f"{pan[:6]}******{pan[-4:]}" in view.text
    # Enrolled: a member of ALLY, so M0002 (ALLY) sees it, M0003 (CAFE) does not.
    assert (await (await logged_in(portal_env, "m0002-admin")).get(card_path)).status_code == 200
    assert (await (await cafe_admin(portal_env)).get(card_path)).status_code == 404
    audit = await portal_env.pool.fetchrow("SELECT after::text FROM portal.audit WHERE action = 'card_issue'")
    assert audit is not None and pan not in audit[0]
    # A typed number: outside the BIN ranges and a bad check digit are refused in a sentence.
    outside = await post_form(client, "/members/new", pan="4111111111111111", bin="")
    assert outside.status_code == 400 and "outside the platform" in outside.text
    luhn = await post_form(client, "/members/new", pan="6212340000000018", bin="")
    assert luhn.status_code == 400 and "Luhn" in luhn.text
    dup = await post_form(client, "/members/new", pan=PAN1, bin="")
    assert dup.status_code == 400 and "already exists" in dup.text and PAN1 not in dup.text


async def test_list_find_view_edit_block(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-admin")
    assert "Demo Member 1" not in (await client.get("/members")).text  # not a member of ALLY yet
    await take(client, "earn", pan=PAN1, amount="50")
    listing = (await client.get("/members?q=member+1")).text
    assert "Demo Member 1" in listing and "621234******0019" in listing and PAN1 not in listing
    found = await post_form(client, "/members", pan=PAN1)
    card_path = f"/members/{await _card_id(portal_env, PAN1)}"
    assert found.status_code == 303 and found.headers["location"] == card_path
    missing = await post_form(client, "/members", pan=PAN3)  # exists, but not a member of ALLY
    assert missing.status_code == 404 and "No member" in missing.text
    view = (await client.get(card_path)).text
    assert "PTS:ALLY" not in view and ">ALLY<" in view and ">50<" in view and "Recent transactions" in view
    edited = await post_form(client, f"{card_path}/edit", name="Grace", phone="12345", expiry="3001")
    assert edited.status_code == 303
    bad = await post_form(client, f"{card_path}/edit", name="Grace", phone="x", expiry="3001")
    assert bad.status_code == 400 and "phone" in bad.text
    blocked = await post_form(client, card_path, f"{card_path}/status", status="blocked")
    assert blocked.status_code == 303
    row = await portal_env.pool.fetchrow("SELECT name, phone, expiry, status FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN1))
    assert tuple(row) == ("Grace", "12345", "3001", "blocked")
    assert "Unblock the card" in (await client.get(card_path)).text
    assert "Grace" in (await client.get("/members?status=blocked")).text
    assert (await post_form(client, card_path, f"{card_path}/status", status="active")).status_code == 303
    assert (await post_form(client, card_path, f"{card_path}/status", status="expired")).status_code == 400
    assert await portal_env.pool.fetchval("SELECT status FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN1)) == "active"


async def test_another_programs_member_is_not_found(portal_env: PortalEnv) -> None:
    own = await logged_in(portal_env, "m0001-operator")
    await take(own, "earn", pan=PAN1, amount="10")
    card_path = f"/members/{await _card_id(portal_env, PAN1)}"
    other = await cafe_admin(portal_env)
    page = await other.get("/members")
    token = csrf_of(page.text)
    assert (await other.get(card_path)).status_code == 404
    assert (await other.get(f"{card_path}/edit")).status_code == 404
    for path, form in ((f"{card_path}/edit", {"name": "X"}), (f"{card_path}/status", {"status": "blocked"})):
        assert (await other.post(path, data={"csrf_token": token, **form})).status_code == 404, path
    assert (await other.get("/members/999999")).status_code == 404
    assert (await other.get("/members/abc")).status_code == 404
    assert "Demo Member 1" not in (await other.get("/members")).text
    assert await portal_env.pool.fetchval("SELECT status FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN1)) == "active"
    # The platform sees every card.
    platform = await logged_in(portal_env, "operator")
    assert (await platform.get(card_path)).status_code == 200
    assert "Demo Member 3" in (await platform.get("/members")).text


async def test_csrf_on_member_changes(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    card_path = f"/members/{await _card_id(portal_env, PAN1)}"
    for path, form in ((f"{card_path}/status", {"status": "blocked"}), ("/members/new", {"bin": "621234"}),
                       (f"{card_path}/edit", {"name": "X"})):
        assert (await client.post(path, data=form)).status_code == 403, path
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.cards") == 3
    assert re.search(r"Demo Member 1", (await client.get(card_path)).text)


async def test_the_platform_reads_a_merchants_members_and_terminals_from_its_page(portal_env: PortalEnv) -> None:
    own = await logged_in(portal_env, "m0001-operator")
    await take(own, "earn", pan=PAN1, amount="10")
    platform = await logged_in(portal_env, "operator")
    merchant_page = (await platform.get("/merchants/M0003")).text
    assert 'href="/terminals?merchant=M0003"' in merchant_page and 'href="/members?program=CAFE"' in merchant_page
    assert "Demo Member 1" not in (await platform.get("/members?program=CAFE")).text
    assert "Demo Member 1" in (await platform.get("/members?program=ALLY")).text
    assert (await platform.get("/terminals?merchant=M0003")).status_code == 200
