"""The member's side: promotions meant for the member, the mailbox (with the unread count in the
menu), feedback to the member's merchants; another member's message or thread answers 404."""

from __future__ import annotations

import datetime as dt
import re

from portal_support import (
    PortalEnv,
    csrf_of,
    logged_in,
    member_logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)

from ledger.loyalty import card_numbers, demo
from ledger.loyalty.members import enrol
from portal import feedback, mail, promotions
from portal.pages.member_community import home_promotions


async def _member(env: PortalEnv, n: int, program: str = "ALLY") -> int:
    card_id, member_id = await env.pool.fetchrow("SELECT id, member_id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(env.pool, demo.demo_pan(n)))
    await enrol(env.pool, card_id, program)
    return int(member_id)


async def _published(env: PortalEnv, merchant: str, title: str, program: str | None = None) -> int:
    now = dt.datetime.now(dt.UTC)
    async with env.pool.acquire() as conn:
        p = await promotions.create(conn, merchant, promotions.Draft(title, "Come by.", now, now + dt.timedelta(days=2),
                                                                     program=program), "test")
    outcome = await promotions.publish(env.pool, None, p["id"], 0, "test")
    assert outcome.problem is None
    return int(p["id"])


async def test_member_promotions_and_mailbox(portal_env: PortalEnv) -> None:
    alice, bob = await _member(portal_env, 1), await _member(portal_env, 2)
    await _published(portal_env, "M0001", "Books for everyone")
    await _published(portal_env, "M0002", "Coffee for the alliance", program="ALLY")
    await _published(portal_env, "M0003", "Bread for bakery members", program="CAFE")
    client = await member_logged_in(portal_env, "13800000001")
    page = (await client.get("/member/promotions")).text
    assert "Books for everyone" in page and "Coffee for the alliance" in page
    assert "Bread for bakery members" not in page
    home = (await client.get("/member")).text  # the home page shows them too
    assert "Books for everyone" in home and "Bread for bakery members" not in home
    part = await home_promotions(portal_env.pool, alice)
    assert [p["title"] for p in part["promotions"]] == ["Coffee for the alliance", "Books for everyone"]

    merchant = await logged_in(portal_env, "m0001-admin")
    await post_form(merchant, "/mail/new", to=str(alice), subject="For Alice only", body="Your card is ready.")
    await post_form(merchant, "/mail/new", to="*", subject="Double points", body="All week.")
    menu = (await client.get("/member")).text
    assert re.search(r'href="/member/mail">[^<]*<span class="unread">\(2\)</span>', menu)
    box = (await client.get("/member/mail")).text
    assert "For Alice only" in box and "Double points" in box
    direct = int(await portal_env.pool.fetchval("SELECT id FROM portal.mail_messages WHERE subject = 'For Alice only'"))
    assert "Your card is ready." in (await client.get(f"/member/mail/{direct}")).text
    assert (await home_promotions(portal_env.pool, alice))["unread_messages"] == 1
    assert "1 unread message" in (await client.get("/member")).text
    # Bob: the broadcast only; Alice's message is not found, to read or to delete.
    other = await member_logged_in(portal_env, "13800000002")
    assert "For Alice only" not in (await other.get("/member/mail")).text
    assert (await other.get(f"/member/mail/{direct}")).status_code == 404
    assert (await post_form(other, "/member/mail", f"/member/mail/{direct}/delete")).status_code == 404
    assert (await other.get("/member/mail/abc")).status_code == 404
    assert (await other.get("/member/mail/99999999999999999999")).status_code == 404
    assert await mail.unread_count(portal_env.pool, mail.Inbox.member(bob)) == 1
    # Alice deletes hers; the merchant's sent list still counts her as a reader.
    assert (await post_form(client, "/member/mail", f"/member/mail/{direct}/delete")).status_code == 303
    assert "For Alice only" not in (await client.get("/member/mail")).text
    assert (await client.get(f"/member/mail/{direct}")).status_code == 404
    # An operator's session opens no member page.
    assert (await merchant.get("/member/mail")).headers["location"].startswith("/member/login")


async def test_member_feedback_to_its_merchants(portal_env: PortalEnv) -> None:
    alice = await _member(portal_env, 1)
    await _member(portal_env, 2)
    client = await member_logged_in(portal_env, "13800000001")
    form = (await client.get("/member/feedback/new")).text
    assert "Alliance Books" in form and "Alliance Coffee" in form and "Hosted Bakery" not in form
    response = await client.post("/member/feedback/new", data={
        "csrf_token": csrf_of(form), "merchant_id": "M0001", "subject": "Missing points", "body": "From Monday."})
    assert response.status_code == 303
    tid = int(response.headers["location"].rsplit("/", 1)[1])
    # Not a merchant of the member's programs: not found.
    refused = await client.post("/member/feedback/new", data={
        "csrf_token": csrf_of(form), "merchant_id": "M0003", "subject": "x", "body": "y"})
    assert refused.status_code == 404
    bad = await client.post("/member/feedback/new", data={
        "csrf_token": csrf_of(form), "merchant_id": "M0001", "subject": "", "body": "y"})
    assert bad.status_code == 400
    merchant = await logged_in(portal_env, "m0001-operator")
    assert "Missing points" in (await merchant.get("/feedback?kind=member")).text
    await post_form(merchant, f"/feedback/{tid}", f"/feedback/{tid}/reply", body="Added now.")
    page = (await client.get(f"/member/feedback/{tid}")).text
    assert "Added now." in page and "Answered" in page and "Delete the thread" not in page
    assert "Answered" in (await client.get("/member/feedback")).text
    other = await member_logged_in(portal_env, "13800000002")
    assert (await other.get(f"/member/feedback/{tid}")).status_code == 404
    for action in ("reply", "close", "delete"):
        response = await post_form(other, "/member/feedback", f"/member/feedback/{tid}/{action}", body="Hi")
        assert response.status_code == 404, action
    assert (await post_form(client, f"/member/feedback/{tid}", f"/member/feedback/{tid}/delete")).status_code == 400
    await post_form(client, f"/member/feedback/{tid}", f"/member/feedback/{tid}/reply", body="Thanks!")
    await post_form(client, f"/member/feedback/{tid}", f"/member/feedback/{tid}/close")
    assert await portal_env.pool.fetchval("SELECT status FROM portal.feedback_threads WHERE id = $1", tid) == "closed"
    # A thread nobody answered: its member deletes it.
    form = (await client.get("/member/feedback/new")).text
    response = await client.post("/member/feedback/new", data={
        "csrf_token": csrf_of(form), "merchant_id": "M0002", "subject": "Typo", "body": "Never mind"})
    gone = int(response.headers["location"].rsplit("/", 1)[1])
    assert (await post_form(client, f"/member/feedback/{gone}", f"/member/feedback/{gone}/delete")).status_code == 303
    assert (await client.get(f"/member/feedback/{gone}")).status_code == 404
    assert [t["id"] for t in (await feedback.list_member_feedback(portal_env.pool, alice))["threads"]] == [tid]
