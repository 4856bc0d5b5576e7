"""Feedback threads: a merchant to the platform and a member to a merchant; replies change the
status (open -> answered -> open), either side closes, the author deletes while nobody has
replied; each side sees only its own threads (another's: 404)."""

from __future__ import annotations

import re

import asyncpg
import pytest
from community_support import community_env, member_in
from portal_support import logged_in, post_form

from portal import feedback
from portal.feedback import FeedbackError, Party


async def _status(pool: asyncpg.Pool, thread_id: int) -> str:
    return str(await pool.fetchval("SELECT status FROM portal.feedback_threads WHERE id = $1", thread_id))


async def test_merchant_to_platform_thread(pool: asyncpg.Pool) -> None:
    async with community_env(pool) as env:
        merchant = await logged_in(env, "m0001-operator")
        response = await post_form(merchant, "/feedback/new", subject="Settlement file", body="Where is it?")
        assert response.status_code == 303
        tid = int(re.fullmatch(r"/feedback/(\d+)", response.headers["location"]).group(1))  # type: ignore[union-attr]
        assert await _status(pool, tid) == "open"
        # Another merchant and a platform user of no business with it.
        other = await logged_in(env, "m0002-admin")
        assert (await other.get(f"/feedback/{tid}")).status_code == 404
        assert (await post_form(other, "/feedback", f"/feedback/{tid}/reply", body="Me too")).status_code == 404
        assert (await post_form(other, "/feedback", f"/feedback/{tid}/close")).status_code == 404
        assert "Settlement file" not in (await other.get("/feedback")).text
        assert (await other.get("/feedback/new")).status_code == 200
        assert (await (await logged_in(env, "operator")).get("/feedback/new")).status_code == 403
        # The platform answers; the merchant asks again; the platform closes.
        platform = await logged_in(env, "operator")
        assert "Settlement file" in (await platform.get("/feedback?status=open")).text
        await post_form(platform, f"/feedback/{tid}", f"/feedback/{tid}/reply", body="In the files page.")
        assert await _status(pool, tid) == "answered"
        assert "Settlement file" not in (await platform.get("/feedback?status=open")).text
        # After a reply the author may no longer delete it.
        assert (await post_form(merchant, f"/feedback/{tid}", f"/feedback/{tid}/delete")).status_code == 400
        await post_form(merchant, f"/feedback/{tid}", f"/feedback/{tid}/reply", body="Found it, thanks.")
        assert await _status(pool, tid) == "open"
        await post_form(platform, f"/feedback/{tid}", f"/feedback/{tid}/close")
        assert await _status(pool, tid) == "closed"
        page = (await merchant.get(f"/feedback/{tid}")).text
        assert "In the files page." in page and "Found it, thanks." in page and "Closed" in page
        assert f'action="/feedback/{tid}/reply"' not in page
        response = await post_form(merchant, f"/feedback/{tid}", f"/feedback/{tid}/reply", body="One more")
        assert response.headers["location"].endswith("?error=closed")
        assert await pool.fetchval("SELECT count(*) FROM portal.feedback_messages WHERE thread_id = $1", tid) == 3
        # A thread nobody answered is deleted by its author (only).
        response = await post_form(merchant, "/feedback/new", subject="Typo", body="Never mind")
        gone = int(response.headers["location"].rsplit("/", 1)[1])
        assert (await post_form(platform, f"/feedback/{gone}", f"/feedback/{gone}/delete")).status_code == 403
        assert (await post_form(merchant, f"/feedback/{gone}", f"/feedback/{gone}/delete")).status_code == 303
        assert (await merchant.get(f"/feedback/{gone}")).status_code == 404


async def test_member_to_merchant_thread(pool: asyncpg.Pool) -> None:
    async with community_env(pool) as env:
        alice = await member_in(pool, 1, "ALLY")
        bob = await member_in(pool, 2, "ALLY")
        async with pool.acquire() as conn:
            thread = await feedback.create_member_feedback(conn, alice, "M0001", "Points missing", "From Monday.")
            with pytest.raises(FeedbackError):
                await feedback.create_member_feedback(conn, alice, "NOPE", "x", "y")
            with pytest.raises(FeedbackError):
                await feedback.create_member_feedback(conn, alice, "M0001", "", "y")
        tid = thread["id"]
        assert thread["status"] == "open" and thread["thread"][0]["side"] == "member"
        # Bob, M0002 and the platform do not see it; M0001's users do, and answer.
        assert await feedback.get(pool, Party.member(bob), tid) is None
        assert await feedback.get(pool, Party.merchant("M0002"), tid) is None
        assert await feedback.get(pool, Party.platform(), tid) is None
        assert (await (await logged_in(env, "admin")).get(f"/feedback/{tid}")).status_code == 404
        merchant = await logged_in(env, "m0001-operator")
        assert "Points missing" in (await merchant.get("/feedback?kind=member")).text
        assert "Points missing" not in (await merchant.get("/feedback?kind=merchant")).text
        await post_form(merchant, f"/feedback/{tid}", f"/feedback/{tid}/reply", body="Added now.")
        mine = await feedback.list_member_feedback(pool, alice)
        assert [(t["id"], t["status"], t["messages"]) for t in mine["threads"]] == [(tid, "answered", 2)]
        assert (await feedback.list_member_feedback(pool, bob))["threads"] == []
        # The merchant may not delete the member's thread; the member may not once answered.
        assert (await post_form(merchant, f"/feedback/{tid}", f"/feedback/{tid}/delete")).status_code == 404
        async with pool.acquire() as conn:
            assert await feedback.delete(conn, Party.member(alice), tid) is False
            assert await feedback.reply(conn, Party.member(bob), tid, "Hi", "member:x") is None
            assert await feedback.close(conn, Party.member(alice), tid)
        assert await _status(pool, tid) == "closed"
