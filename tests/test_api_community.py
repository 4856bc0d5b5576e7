"""Member API: published promotions (public, filtered), the mailbox (read, delete, other members'
messages 404) and feedback to merchants."""

from __future__ import annotations

import datetime as dt

from api_support import API, PAN1, PAN2, conforms, member_client, member_of, take
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)

from portal import feedback, mail, promotions


async def _promotion(env: PortalEnv, merchant: str, title: str, program: str | None, approve: bool = True) -> int:
    now = dt.datetime.now(dt.UTC)
    async with env.pool.acquire() as conn:
        p = await promotions.create(conn, merchant, promotions.Draft(title, "text", now - dt.timedelta(hours=1),
                                                                     now + dt.timedelta(days=1), program), "t")
    if approve:
        outcome = await promotions.publish(env.pool, None, int(p["id"]), 0, "admin")
        assert outcome.problem is None
    return int(p["id"])


async def test_promotions_published_only_and_filtered(portal_env: PortalEnv) -> None:
    ally = await _promotion(portal_env, "M0001", "Books week", "ALLY")
    everyone = await _promotion(portal_env, "M0003", "Bread for all", None)
    cafe = await _promotion(portal_env, "M0003", "Cafe only", "CAFE")
    await _promotion(portal_env, "M0002", "Pending", None, approve=False)
    client = portal_env.client()
    body = conforms(await client.get(f"{API}/promotions")).json()
    assert [p["id"] for p in body["items"]] == [cafe, everyone, ally]
    assert body["items"][0]["image_url"] is None and body["items"][0]["merchant_name"] == "Hosted Bakery"
    assert [p["id"] for p in conforms(await client.get(f"{API}/promotions?program=ALLY")).json()["items"]] == [
        everyone, ally]
    assert [p["id"] for p in conforms(await client.get(f"{API}/promotions?merchant=M0003&limit=1")).json()[
        "items"]] == [cafe]


async def test_mailbox_read_delete_and_another_members_message(portal_env: PortalEnv) -> None:
    await take(portal_env, "M0001", "earn", PAN1, 1_000)  # PAN1's member is in ALLY
    await take(portal_env, "M0003", "earn", PAN2, 1_000)  # PAN2's in CAFE
    member2 = await member_of(portal_env.pool, PAN2)
    async with portal_env.pool.acquire() as conn:
        to_all = await mail.send_to_members(conn, "M0001", None, "Hello members", "News", "m0001-admin")
        to_two = await mail.send_to_members(conn, "M0003", member2, "For you", "Only you", "m0003-admin")
    assert to_all is not None and to_two is not None
    client, _ = await member_client(portal_env, PAN1)
    box = conforms(await client.get(f"{API}/me/messages")).json()
    assert [m["subject"] for m in box["items"]] == ["Hello members"] and box["unread_count"] == 1
    one = conforms(await client.get(f"{API}/me/messages/{to_all['id']}")).json()
    assert one["read"] and one["sender_name"] == "Alliance Books"
    assert conforms(await client.get(f"{API}/me/messages")).json()["unread_count"] == 0
    # Another member's message: 404, exactly as one that does not exist.
    for path in (f"{API}/me/messages/{to_two['id']}", f"{API}/me/messages/999999", f"{API}/me/messages/x"):
        r = conforms(await client.get(path)) if not path.endswith("/x") else await client.get(path)
        assert r.status_code == 404 and r.json()["type"].endswith("/not-found"), path
    assert (await client.delete(f"{API}/me/messages/{to_two['id']}")).status_code == 404
    assert conforms(await client.delete(f"{API}/me/messages/{to_all['id']}")).status_code == 204
    assert conforms(await client.get(f"{API}/me/messages")).json()["items"] == []
    other, _ = await member_client(portal_env, PAN2)
    assert [m["subject"] for m in conforms(await other.get(f"{API}/me/messages")).json()["items"]] == ["For you"]


async def test_feedback_to_a_merchant_and_threads(portal_env: PortalEnv) -> None:
    client, member_id = await member_client(portal_env, PAN1)
    r = conforms(await client.post(f"{API}/feedback", json={"merchant_id": "M0002", "subject": "Cold coffee",
                                                             "body": "It was cold."}))
    assert r.status_code == 201 and r.json()["status"] == "open" and r.json()["thread"][0]["side"] == "member"
    thread_id = r.json()["id"]
    async with portal_env.pool.acquire() as conn:
        await feedback.reply(conn, feedback.Party.merchant("M0002"), thread_id, "Sorry!", "m0002-admin")
    got = conforms(await client.get(f"{API}/feedback/{thread_id}")).json()
    assert [m["side"] for m in got["thread"]] == ["member", "merchant"] and got["status"] == "answered"
    assert [t["id"] for t in conforms(await client.get(f"{API}/feedback")).json()["items"]] == [thread_id]
    assert conforms(await client.post(f"{API}/feedback", json={"merchant_id": "NOPE", "subject": "s",
                                                                "body": "b"})).status_code == 404
    assert conforms(await client.post(f"{API}/feedback", json={"merchant_id": "M0002",
                                                                "subject": "s"})).status_code == 400
    other, _ = await member_client(portal_env, PAN2)
    assert conforms(await other.get(f"{API}/feedback/{thread_id}")).status_code == 404
    assert conforms(await other.get(f"{API}/feedback")).json()["items"] == []
    assert await portal_env.pool.fetchval("SELECT member_id FROM portal.feedback_threads") == member_id
