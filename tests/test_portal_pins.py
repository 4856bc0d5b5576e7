"""Card PINs on the portal: the member sets its own card's PIN (with its password), a merchant's
user sets one for a member at the desk; another member's or merchant's card answers 404; only a
keyed one-way value is kept and it is the one the CLI and the switch check."""

from __future__ import annotations

import asyncpg
from portal_support import (
    MASTER_KEY,
    PASSWORD,
    PortalEnv,
    csrf_of,
    logged_in,
    member_logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)

from ledger.loyalty import card_numbers, demo, pins, seat


async def _card(pool: asyncpg.Pool, n: int) -> tuple[int, int]:
    row = await pool.fetchrow("SELECT id, member_id FROM loyalty.cards WHERE id = $1",
                              await card_numbers.card_id_by_number(pool, demo.demo_pan(n)))
    return int(row["id"]), int(row["member_id"])


async def _pin_is(pool: asyncpg.Pool, card_id: int, pin: str) -> bool:
    key = await pins.load_pin_key(pool, (MASTER_KEY,))
    assert key is not None
    return await pins.verify_pin(pool, key, card_id, pin, 3) is pins.Verdict.RIGHT


async def test_member_sets_its_own_cards_pin_with_its_password(portal_env: PortalEnv) -> None:
    card, _member = await _card(portal_env.pool, 1)
    other, _ = await _card(portal_env.pool, 2)
    client = await member_logged_in(portal_env)
    assert "Set or change the PIN" in (await client.get("/member/cards")).text
    path = f"/member/cards/{card}/pin"
    wrong = await post_form(client, path, password="not-the-password", pin="2580", again="2580")
    assert wrong.status_code == 400 and "The password is wrong." in wrong.text
    differ = await post_form(client, path, password=PASSWORD, pin="2580", again="2581")
    assert differ.status_code == 400
    short = await post_form(client, path, password=PASSWORD, pin="12", again="12")
    assert short.status_code == 400 and "4 to 12 digits" in short.text
    done = await post_form(client, path, password=PASSWORD, pin="2580", again="2580")
    assert done.status_code == 303 and done.headers["location"] == "/member/cards?pin=1"
    assert "2580" not in (await client.get("/member/cards?pin=1")).text
    assert await _pin_is(portal_env.pool, card, "2580")
    stored = await portal_env.pool.fetchval("SELECT pin_hash FROM loyalty.card_pins WHERE card_id = $1", card)
    assert b"2580" not in bytes(stored)
    # Another member's card: not found, whatever the method.
    assert (await client.get(f"/member/cards/{other}/pin")).status_code == 404
    token = csrf_of((await client.get(path)).text)
    post = await client.post(f"/member/cards/{other}/pin",
                             data={"csrf_token": token, "password": PASSWORD, "pin": "1111", "again": "1111"})
    assert post.status_code == 404
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.card_pins WHERE card_id = $1", other) == 0


async def test_merchant_sets_a_members_pin_at_the_desk(portal_env: PortalEnv) -> None:
    # The card becomes a member of M0001's programme by earning there.
    earn = await seat.take(portal_env.app.state.portal.loyalty, "M0001", "op", seat.new_request_id(), "earn",
                           demo.demo_pan(1), 100)
    assert earn.approved
    card, _member = await _card(portal_env.pool, 1)
    client = await logged_in(portal_env, "m0001-operator")
    view = await client.get(f"/members/{card}")
    assert view.status_code == 200 and 'action="/members/' + str(card) + '/pin"' in view.text
    differ = await post_form(client, f"/members/{card}", f"/members/{card}/pin", pin="1357", again="1358")
    assert differ.status_code == 400
    done = await post_form(client, f"/members/{card}", f"/members/{card}/pin", pin="1357", again="1357")
    assert done.status_code == 303
    assert await _pin_is(portal_env.pool, card, "1357")
    audit = await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.audit WHERE action = 'card_pin_set' AND object_id = $1", str(card))
    assert audit == 1
    # A card the user cannot see (here: none) is not found; the platform's operator may not set PINs.
    response = await post_form(client, "/members", "/members/999999/pin", pin="1111", again="1111")
    assert response.status_code == 404
    reader = await logged_in(portal_env, "operator", address="10.0.0.2")
    response = await post_form(reader, "/members", f"/members/{card}/pin", pin="1111", again="1111")
    assert response.status_code == 403
