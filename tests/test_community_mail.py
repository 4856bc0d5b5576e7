"""In-platform mail: the platform to merchants, a merchant to its members; a broadcast is one
row, each inbox its own read and deleted state; unread counts in the header; e-mail copies
through the outbox to a local SMTP server, retried with back-off and bounded, none without SMTP."""

from __future__ import annotations

import asyncio

import asyncpg
from community_support import SmtpServer, community_env, member_in
from portal_support import logged_in, post_form

from portal import mail
from portal.mail import Inbox
from portal.mail_sender import MailSender, SmtpSettings, backoff_s


async def test_platform_to_merchants_inboxes_and_unread_counts(pool: asyncpg.Pool) -> None:
    async with community_env(pool) as env:
        platform = await logged_in(env, "admin")
        response = await post_form(platform, "/mail/new", to="*", subject="Maintenance", body="Sunday 02:00.")
        assert response.status_code == 303
        await post_form(platform, "/mail/new", to="M0002", subject="Your contract", body="Please sign.")
        assert (await post_form(platform, "/mail/new", to="NOPE", subject="x", body="y")).status_code == 400
        assert await pool.fetchval("SELECT count(*) FROM portal.mail_messages") == 2  # a broadcast is one row
        assert await pool.fetchval("SELECT count(*) FROM portal.mail_fanout") == 0  # no SMTP: no copies
        sent = (await platform.get("/mail/sent")).text
        assert "Maintenance" in sent and "Your contract" in sent
        # The platform operator reads what was sent, writes nothing; merchants' operators write nothing.
        assert (await (await logged_in(env, "operator")).get("/mail/new")).status_code == 403
        m1 = await logged_in(env, "m0001-operator")
        assert (await m1.get("/mail/new")).status_code == 403
        home = (await m1.get("/")).text
        assert '<span class="unread">(1)</span>' in home
        inbox = (await m1.get("/mail")).text
        assert "Maintenance" in inbox and "Your contract" not in inbox
        mid = int(await pool.fetchval("SELECT id FROM portal.mail_messages WHERE subject = 'Maintenance'"))
        other = int(await pool.fetchval("SELECT id FROM portal.mail_messages WHERE subject = 'Your contract'"))
        assert (await m1.get(f"/mail/{other}")).status_code == 404  # M0002's
        assert (await post_form(m1, "/mail", f"/mail/{other}/delete")).status_code == 404
        assert "Sunday 02:00." in (await m1.get(f"/mail/{mid}")).text
        assert 'class="unread"' not in (await m1.get("/")).text
        # M0002's inbox is its own: both unread there; M0001 deleting changes nothing for M0002.
        assert await mail.unread_count(pool, Inbox.merchant("M0002")) == 2
        assert (await post_form(m1, "/mail", f"/mail/{mid}/delete")).status_code == 303
        assert "Maintenance" not in (await m1.get("/mail")).text
        assert (await m1.get(f"/mail/{mid}")).status_code == 404
        m2 = await mail.inbox(pool, Inbox.merchant("M0002"))
        assert [m["subject"] for m in m2["messages"]] == ["Your contract", "Maintenance"]
        assert await mail.mark_read(pool, Inbox.merchant("M0002"), other)
        assert await mail.unread_count(pool, Inbox.merchant("M0002")) == 1


async def test_merchant_to_members(pool: asyncpg.Pool) -> None:
    async with community_env(pool) as env:
        alice = await member_in(pool, 1, "ALLY")
        bob = await member_in(pool, 2, "ALLY")
        carol = await member_in(pool, 3, "CAFE")  # not a member of M0001's program
        merchant = await logged_in(env, "m0001-admin")
        assert (await post_form(merchant, "/mail/new", to=str(alice), subject="Hello Alice",
                                body="Your card is ready.")).status_code == 303
        assert (await post_form(merchant, "/mail/new", to="*", subject="Double points",
                                body="All week.")).status_code == 303
        refused = await post_form(merchant, "/mail/new", to=str(carol), subject="Hi", body="x")
        assert refused.status_code == 400 and "No member of our program has that number." in refused.text
        assert (await post_form(merchant, "/mail/new", to="abc", subject="Hi", body="x")).status_code == 400
        assert [m["subject"] for m in (await mail.member_inbox(pool, alice))["messages"]] == [
            "Double points", "Hello Alice"]
        assert [m["subject"] for m in (await mail.member_inbox(pool, bob))["messages"]] == ["Double points"]
        assert (await mail.member_inbox(pool, carol))["messages"] == []
        assert await mail.unread_count(pool, Inbox.member(alice)) == 2
        hello = int(await pool.fetchval("SELECT id FROM portal.mail_messages WHERE subject = 'Hello Alice'"))
        assert not await mail.mark_read(pool, Inbox.member(bob), hello)  # not Bob's
        assert await mail.mark_read(pool, Inbox.member(alice), hello)
        assert await mail.mark_read(pool, Inbox.member(alice), hello)  # twice is once
        assert await mail.unread_count(pool, Inbox.member(alice)) == 1
        assert await mail.unread_count(pool, Inbox.member(bob)) == 1
        # One state row per reader, none per recipient of the broadcast.
        assert await pool.fetchval("SELECT count(*) FROM portal.mail_states") == 1
        assert await pool.fetchval("SELECT count(*) FROM portal.mail_messages") == 2
        # Paging an inbox.
        first = await mail.member_inbox(pool, alice, limit=1)
        rest = await mail.member_inbox(pool, alice, after_id=first["next_after_id"], limit=1)
        assert [m["subject"] for m in first["messages"] + rest["messages"]] == ["Double points", "Hello Alice"]
        assert rest["next_after_id"] is None
        # A merchant's members are not the platform's to write to, nor another merchant's to read.
        assert (await mail.inbox(pool, Inbox.merchant("M0001")))["messages"] == []


async def _wait_outbox(pool: asyncpg.Pool, sender: MailSender, status: str, count: int) -> None:
    """Run the sender until ``count`` outbox rows have ``status`` (bounded: a failure is an error, not a wait)."""
    for _ in range(50):
        await sender.run_once()
        if await pool.fetchval("SELECT count(*) FROM portal.mail_outbox WHERE status = $1", status) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the outbox has not {count} rows {status}")


async def test_email_copies_go_through_the_outbox_to_smtp(pool: asyncpg.Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = SmtpServer()
    await server.start()
    secret = tmp_path / "smtp-password"
    secret.write_text("not-logged\n")
    try:
        async with community_env(pool, smtp_host="127.0.0.1", smtp_port=server.port, smtp_from="portal@example.test",
                                 smtp_password_file=str(secret)) as env:
            alice = await member_in(pool, 1, "ALLY", email="alice@example.test")
            await member_in(pool, 2, "ALLY")  # no e-mail address: no copy
            await pool.execute("UPDATE loyalty.merchants SET contact_email = 'books@example.test' "
                               "WHERE merchant_id = 'M0001'")
            merchant = await logged_in(env, "m0001-admin")
            await post_form(merchant, "/mail/new", to="*", subject="Double points", body="All week.")
            platform = await logged_in(env, "admin")
            await post_form(platform, "/mail/new", to="*", subject="Maintenance", body="Sunday.")
            assert await pool.fetchval("SELECT count(*) FROM portal.mail_fanout") == 2
            sender: MailSender = env.app.state.mail_sender
            await _wait_outbox(pool, sender, "sent", 2)
            got = {(tuple(m["to"]), "Double points" in m["data"], "Maintenance" in m["data"]) for m in server.messages}
            assert got == {(("alice@example.test",), True, False), (("books@example.test",), False, True)}
            assert all("From: portal@example.test" in m["data"] for m in server.messages)
            assert await pool.fetchval("SELECT count(*) FROM portal.mail_fanout WHERE done") == 2
            # In-platform mail is there as well.
            assert [m["subject"] for m in (await mail.member_inbox(pool, alice))["messages"]] == ["Double points"]
            assert "not-logged" not in repr(sender.smtp)
    finally:
        await server.stop()


async def test_a_failing_smtp_server_is_retried_then_given_up(pool: asyncpg.Pool) -> None:
    server = SmtpServer(refuse=True)
    await server.start()
    try:
        async with community_env(pool) as env:
            await pool.execute("UPDATE loyalty.merchants SET contact_email = 'books@example.test' "
                               "WHERE merchant_id = 'M0001'")
            async with pool.acquire() as conn:
                await mail.send_to_merchants(conn, "M0001", "Hello", "Welcome.", "test", email_copies=True)
            # A sender of its own (this portal has no SMTP), two attempts at most.
            sender = MailSender(pool, SmtpSettings(host="127.0.0.1", port=server.port, sender="p@example.test",
                                                   timeout_s=5, attempts_max=2))
            assert await sender.expand() == 1
            assert await sender.send_due() == (0, 0)
            row = await pool.fetchrow("SELECT status, attempts, last_error, next_attempt_at > now() AS later "
                                      "FROM portal.mail_outbox")
            assert (row["status"], row["attempts"], row["later"]) == ("pending", 1, True)
            assert "554" in row["last_error"]
            assert await sender.send_due() == (0, 0)  # not due yet: backing off
            await pool.execute("UPDATE portal.mail_outbox SET next_attempt_at = now()")
            assert await sender.send_due() == (0, 1)
            row = await pool.fetchrow("SELECT status, attempts FROM portal.mail_outbox")
            assert (row["status"], row["attempts"]) == ("failed", 2)
            await pool.execute("UPDATE portal.mail_outbox SET next_attempt_at = now()")
            assert await sender.send_due() == (0, 0)  # failed for good: never tried again
            assert server.messages == []
            assert env.app.state.mail_sender is None
            # A dead server (nothing listening) fails the same bounded way.
            await server.stop()
            await pool.execute("UPDATE portal.mail_outbox SET status = 'pending', attempts = 0")
            assert await sender.send_due() == (0, 0)
            assert await pool.fetchval("SELECT attempts FROM portal.mail_outbox") == 1
    finally:
        await server.stop()
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
