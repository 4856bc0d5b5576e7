"""Merchants and the platform manage members: a card's member shown and edited, cards issued to a new
or an existing member with a first password or an activation code, password resets and new codes;
audited; permissions per role; another program's member answers 404."""

from __future__ import annotations

import re

import httpx
from portal_support import (
    PortalEnv,
    csrf_of,
    logged_in,
    member_login,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)
from test_portal_members import cafe_admin
from test_portal_seat import take

from ledger.loyalty import card_numbers, demo

PAN1, PAN2 = demo.demo_pan(1), demo.demo_pan(2)
FIRST_PASSWORD = "first-pass-0001"
_CODE = re.compile(r'<code class="code-once">([A-Z0-9-]+)</code>')


async def _card_id(env: PortalEnv, pan: str) -> int:
    return int(await env.pool.fetchval("SELECT id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(env.pool, pan)))


async def _enrolled(env: PortalEnv, pan: str = PAN1) -> str:
    """Make ``pan`` a member of ALLY (an earn at M0001's seat); the path of its card page."""
    await take(await logged_in(env, "m0001-operator", "10.0.5.1"), "earn", pan=pan, amount="10")
    return f"/members/{await _card_id(env, pan)}"


async def _activate(env: PortalEnv, login: str, code: str, password: str, address: str) -> httpx.Response:
    client = env.client(address)
    page = await client.get("/member/activate")
    return await client.post("/member/activate", data={
        "csrf_token": csrf_of(page.text), "login": login, "code": code, "new": password, "again": password})


def _issue_form(**changes: str) -> dict[str, str]:
    form = {"bin": "621234", "pan": "", "name": "Ada", "phone": "13911110000", "email": "ada@example.org",
            "expiry": "", "holder": "new", "holder_login": "", "credential": "password",
            "first_password": FIRST_PASSWORD}
    return form | changes


async def test_issue_to_a_new_member_with_a_first_password_forces_a_change(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    made = await post_form(client, "/members/new", **_issue_form())
    assert made.status_code == 303, made.text
    view = (await client.get(made.headers["location"])).text
    assert "Ada" in view and "13911110000" in view and "ada@example.org" in view
    assert "Must change the password at the next login" in view
    entry = await portal_env.pool.fetchval("SELECT after::text FROM portal.audit WHERE action = 'card_issue'")
    assert '"credential": "password"' in entry and FIRST_PASSWORD not in entry
    member = portal_env.client("10.0.6.1")
    assert (await member_login(member, "13911110000", FIRST_PASSWORD)).status_code == 303
    forced = await member.get("/member/balances")
    assert forced.status_code == 303 and forced.headers["location"] == "/member/password"
    changed = await post_form(member, "/member/password", current=FIRST_PASSWORD, new="my-own-pass-77",
                              again="my-own-pass-77")
    assert changed.status_code == 303
    assert (await member.get("/member/balances")).status_code == 200


async def test_activation_code_is_shown_once_and_works_once(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-admin")
    made = await post_form(client, "/members/new", **_issue_form(credential="activation", first_password=""))
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    code = _CODE.search(made.text)
    assert code, made.text
    # Never stored nor logged as it was shown.
    stored = await portal_env.pool.fetchval("SELECT string_agg(after::text, ' ') FROM portal.audit")
    assert code.group(1) not in stored and code.group(1).replace("-", "") not in stored
    card_id = await portal_env.pool.fetchval("SELECT id FROM loyalty.cards WHERE phone = '13911110000'")
    assert code.group(1) not in (await client.get(f"/members/{card_id}")).text
    assert "No password yet" in (await client.get(f"/members/{card_id}")).text
    first = await _activate(portal_env, "13911110000", code.group(1), "chosen-pass-123", "10.0.7.1")
    assert first.status_code == 303
    again = await _activate(portal_env, "13911110000", code.group(1), "chosen-pass-456", "10.0.7.2")
    assert again.status_code == 401
    assert (await member_login(portal_env.client("10.0.7.3"), "13911110000", "chosen-pass-123")).status_code == 303


async def test_issue_a_further_card_to_an_existing_member(portal_env: PortalEnv) -> None:
    card_path = await _enrolled(portal_env)
    member_id = await portal_env.pool.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN1))
    client = await logged_in(portal_env, "m0001-operator")
    made = await post_form(client, "/members/new", **_issue_form(
        holder="existing", holder_login="138 0000 0001", credential="none", name="", phone="", email=""))
    assert made.status_code == 303, made.text
    new_card = await portal_env.pool.fetchrow(
        "SELECT member_id, name, phone FROM loyalty.cards WHERE member_id = $1 AND id <> $2", member_id,
        await card_numbers.card_id_by_number(portal_env.pool, PAN1))
    assert dict(new_card) == {"member_id": member_id, "name": "Demo Member 1", "phone": "13800000001"}
    view = (await client.get(made.headers["location"])).text
    assert "Demo Member 1" in view and f'href="{card_path}"' in view  # its other card, linked
    # The member's password is kept: it logs in and sees both cards.
    member = portal_env.client("10.0.8.1")
    assert (await member_login(member, "13800000001")).status_code == 303
    assert (await member.get("/member/cards")).text.count("<td>621234******") == 2
    # A merchant of another program cannot reach the member; one of its own program can by card number.
    cafe = await cafe_admin(portal_env)
    refused = await post_form(cafe, "/members/new", **_issue_form(holder="existing", holder_login=PAN1))
    assert refused.status_code == 400 and "No member of your program" in refused.text
    by_card = await post_form(client, "/members/new", **_issue_form(holder="existing", holder_login=PAN1,
                                                                    credential="none"))
    assert by_card.status_code == 303
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.cards WHERE member_id = $1", member_id) == 3


async def test_a_new_member_with_a_taken_phone_is_refused_in_words(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    taken = await post_form(client, "/members/new", **_issue_form(phone="13800000002"))
    assert taken.status_code == 400 and "issue the card to that member instead" in taken.text
    bad_mail = await post_form(client, "/members/new", **_issue_form(email="nope"))
    assert bad_mail.status_code == 400 and "e-mail" in bad_mail.text
    weak = await post_form(client, "/members/new", **_issue_form(first_password="short"))
    assert weak.status_code == 400
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.cards") == 3  # nothing half-issued


async def test_edit_changes_the_member_for_every_card(portal_env: PortalEnv) -> None:
    card_path = await _enrolled(portal_env)
    client = await logged_in(portal_env, "m0001-admin")
    form = {"name": "Grace", "phone": "139 0000 1234", "email": "grace@example.org",
            "delivery_address": "2 Harbour Road", "expiry": "3001"}
    assert (await post_form(client, f"{card_path}/edit", **form)).status_code == 303
    member = await portal_env.pool.fetchrow("SELECT m.name, m.phone, m.email, m.delivery_address, c.name AS card_name, c.phone AS card_phone, c.expiry "
        "FROM loyalty.members m JOIN loyalty.cards c ON c.member_id = m.id WHERE c.id = $1",
            await card_numbers.card_id_by_number(portal_env.pool, PAN1))
    assert dict(member) == {"name": "Grace", "phone": "13900001234", "email": "grace@example.org",
                            "delivery_address": "2 Harbour Road", "card_name": "Grace",
                            "card_phone": "13900001234", "expiry": "3001"}
    entry = await portal_env.pool.fetchrow(
        "SELECT object_kind, before->>'name' AS before, after->>'phone' AS after, merchant_id FROM portal.audit "
        "WHERE action = 'member_edit'")
    assert tuple(entry) == ("member", "Demo Member 1", "13900001234", "M0001")
    taken = await post_form(client, f"{card_path}/edit", **(form | {"phone": "13800000002"}))
    assert taken.status_code == 400 and "belongs to another member" in taken.text
    assert "Grace" in (await client.get("/members?q=grace")).text


async def test_reset_ends_the_members_sessions_and_forces_a_change(portal_env: PortalEnv) -> None:
    card_path = await _enrolled(portal_env)
    member = portal_env.client("10.0.9.1")
    assert (await member_login(member, "13800000001")).status_code == 303
    assert (await member.get("/member")).status_code == 200
    client = await logged_in(portal_env, "m0001-operator")
    weak = await post_form(client, card_path, f"{card_path}/password", password="short")
    assert weak.status_code == 400 and "Password must be 10 to 128 characters." in weak.text
    assert "Demo Member 1" in weak.text and "Recent transactions" in weak.text  # the whole page, with the reason
    assert (await member.get("/member")).status_code == 200  # a refused reset changes nothing
    reset = await post_form(client, card_path, f"{card_path}/password", password="temporary-pass-9")
    assert reset.status_code == 303 and reset.headers["location"].endswith("?reset=1")
    assert "has been reset" in (await client.get(reset.headers["location"])).text
    assert (await member.get("/member")).headers["location"].startswith("/member/login")
    again = portal_env.client("10.0.9.2")
    assert (await member_login(again, PAN1, "temporary-pass-9")).status_code == 303
    assert (await again.get("/member")).headers["location"] == "/member/password"
    assert await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.audit WHERE action = 'member_password_reset'") == 1


async def test_a_new_activation_code_replaces_the_last(portal_env: PortalEnv) -> None:
    card_path = await _enrolled(portal_env)
    client = await logged_in(portal_env, "admin")
    codes = []
    for _ in range(2):
        page = await post_form(client, card_path, f"{card_path}/activation")
        assert page.status_code == 200
        found = _CODE.search(page.text)
        assert found
        codes.append(found.group(1))
    assert (await _activate(portal_env, PAN1, codes[0], "chosen-pass-123", "10.0.10.1")).status_code == 401
    assert (await _activate(portal_env, PAN1, codes[1], "chosen-pass-123", "10.0.10.2")).status_code == 303
    assert await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.audit WHERE action = 'member_activation' AND actor = 'portal:admin'") == 2


async def test_roles_and_programs(portal_env: PortalEnv) -> None:
    card_path = await _enrolled(portal_env)
    platform_operator = await logged_in(portal_env, "operator")
    view = await platform_operator.get(card_path)
    assert view.status_code == 200 and "Demo Member 1" in view.text and "Reset the member" not in view.text
    token = csrf_of(view.text)
    for action in ("password", "activation", "edit", "status"):
        refused = await platform_operator.post(f"{card_path}/{action}", data={"csrf_token": token,
                                                                             "password": "temporary-pass-9"})
        assert refused.status_code == 403, action
    assert (await platform_operator.get("/members/new")).status_code == 403
    # Another program's merchant: 404, as for a card that does not exist.
    cafe = await cafe_admin(portal_env)
    token = csrf_of((await cafe.get("/members")).text)
    for action in ("password", "activation"):
        for path in (f"{card_path}/{action}", f"/members/99999999/{action}"):
            answer = await cafe.post(path, data={"csrf_token": token, "password": "temporary-pass-9"})
            assert answer.status_code == 404, path
    assert await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.audit WHERE action IN ('member_password_reset', 'member_activation')") == 0
    # The merchant operator of the program may.
    operator = await logged_in(portal_env, "m0001-operator")
    assert (await post_form(operator, card_path, f"{card_path}/activation")).status_code == 200
