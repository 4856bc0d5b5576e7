"""Feedback threads: a member to a merchant, a merchant to the platform.

A thread has a subject, a first message and replies. Status: ``open`` -> ``answered``
when the other side replies (``open`` again when the author writes again) ->
``closed`` by either side (nobody writes to a closed thread). The author may delete
a thread while nobody has replied. Each side sees only its own threads: a member
its own, a merchant the ones its members wrote to it and the ones it wrote to the
platform; the platform the merchants'. Whose a thread is is checked here, by
``Party``: another's thread reads as one that does not exist (None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from portal.i18n import N_
from portal.refusals import Refusal

SUBJECT_CHARS_MAX = 120
BODY_CHARS_MAX = 4000
LIST_LIMIT_MAX = 200
MESSAGES_MAX = 500  # shown per thread: a bound on one page
STATUSES = ("open", "answered", "closed")


class FeedbackError(Refusal):
    """Feedback that cannot be written as asked; ``str()`` says why, for people."""


@dataclass(frozen=True)
class Party:
    """Who is acting: ``side`` is 'member', 'merchant' or 'platform'; the member's or merchant's id."""

    side: str
    member_id: int | None = None
    merchant_id: str | None = None

    @staticmethod
    def member(member_id: int) -> Party:
        return Party("member", member_id=member_id)

    @staticmethod
    def merchant(merchant_id: str) -> Party:
        return Party("merchant", merchant_id=merchant_id)

    @staticmethod
    def platform() -> Party:
        return Party("platform")


# Which threads a party sees, and on which side of each it is: ($1 member id, $2 merchant id).
_VISIBLE = {
    "member": "t.kind = 'member' AND t.member_id = $1::bigint AND $2::text IS NULL",
    "merchant": "t.merchant_id = $2::text AND $1::bigint IS NULL",
    "platform": "t.kind = 'merchant' AND $1::bigint IS NULL AND $2::text IS NULL",
}
_COLUMNS = ("t.id, t.kind, t.member_id, t.merchant_id, m.name AS merchant_name, t.subject, t.status, t.created_by, "
            "t.created_at, t.updated_at, (SELECT count(*) FROM portal.feedback_messages x WHERE x.thread_id = t.id) "
            "AS messages")
_FROM = " FROM portal.feedback_threads t JOIN loyalty.merchants m ON m.merchant_id = t.merchant_id "


def _author_side(kind: str) -> str:
    """The side that opened a thread of ``kind``."""
    return "member" if kind == "member" else "merchant"


def _check(subject: str | None, body: str) -> None:
    if subject is not None and not 1 <= len(subject.strip()) <= SUBJECT_CHARS_MAX:
        raise FeedbackError(N_("A subject has 1 to %(n)s characters."), n=SUBJECT_CHARS_MAX)
    if not 1 <= len(body.strip()) <= BODY_CHARS_MAX:
        raise FeedbackError(N_("A message has 1 to %(n)s characters."), n=BODY_CHARS_MAX)


async def _open(conn: asyncpg.Connection, kind: str, member_id: int | None, merchant_id: str, subject: str,
                body: str, author: str) -> dict[str, Any]:
    _check(subject, body)
    if not await conn.fetchval("SELECT 1 FROM loyalty.merchants WHERE merchant_id = $1", merchant_id):
        raise FeedbackError(N_("No merchant %(id)s."), id=merchant_id)
    async with conn.transaction():
        tid = await conn.fetchval(
            "INSERT INTO portal.feedback_threads(kind, member_id, merchant_id, subject, created_by) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id", kind, member_id, merchant_id, subject.strip(), author[:100])
        await conn.execute("INSERT INTO portal.feedback_messages(thread_id, side, author, body) VALUES ($1, $2, $3, $4)",
                           tid, _author_side(kind), author[:100], body.strip())
    party = Party.member(member_id) if member_id is not None else Party.merchant(merchant_id)
    found = await get(conn, party, int(tid))
    assert found is not None
    return found


async def create_member_feedback(conn: asyncpg.Connection, member_id: int, merchant_id: str, subject: str,
                                 body: str) -> dict[str, Any]:
    """A member's new thread to a merchant; FeedbackError when refused (bounds, no such merchant)."""
    return await _open(conn, "member", member_id, merchant_id, subject, body, f"member:{member_id}")


async def create_merchant_feedback(conn: asyncpg.Connection, merchant_id: str, subject: str, body: str,
                                   author: str) -> dict[str, Any]:
    """A merchant's new thread to the platform."""
    return await _open(conn, "merchant", None, merchant_id, subject, body, author)


async def get(conn: asyncpg.Connection | asyncpg.Pool, party: Party, thread_id: int) -> dict[str, Any] | None:
    """A thread ``party`` may see, with its messages (oldest first); None otherwise."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS}{_FROM} WHERE t.id = $3 AND {_VISIBLE[party.side]}",
                              party.member_id, party.merchant_id, thread_id)
    if row is None:
        return None
    out = dict(row)
    out["thread"] = [dict(r) for r in await conn.fetch(
        "SELECT id, side, author, body, created_at FROM portal.feedback_messages WHERE thread_id = $1 "
        "ORDER BY id LIMIT $2", thread_id, MESSAGES_MAX)]
    return out


async def search(conn: asyncpg.Connection | asyncpg.Pool, party: Party, kind: str | None = None,
                 status: str | None = None, after_id: int | None = None, limit: int = 50) -> dict[str, Any]:
    """Threads ``party`` sees (of ``kind``, with ``status``), newest first, keyset pages."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS}{_FROM} WHERE {_VISIBLE[party.side]} AND ($3::text IS NULL OR t.kind = $3) "
        "AND ($4::text IS NULL OR t.status = $4) AND ($5::bigint IS NULL OR t.id < $5) ORDER BY t.id DESC LIMIT $6",
        party.member_id, party.merchant_id, kind, status, after_id, limit + 1)
    items = [dict(r) for r in rows[:limit]]
    return {"threads": items, "next_after_id": items[-1]["id"] if len(rows) > limit else None}


async def list_member_feedback(conn: asyncpg.Connection | asyncpg.Pool, member_id: int,
                               after_id: int | None = None, limit: int = 50) -> dict[str, Any]:
    """A member's threads, newest first: ``{"threads": [...], "next_after_id"}``."""
    return await search(conn, Party.member(member_id), after_id=after_id, limit=limit)


async def reply(conn: asyncpg.Connection, party: Party, thread_id: int, body: str, author: str) -> dict[str, Any] | None:
    """Add ``party``'s message to a thread it sees (None: not found); FeedbackError when closed.

    A reply from the side that did not open the thread makes it ``answered``; one from the
    author's side makes it ``open`` again (a new question)."""
    _check(None, body)
    async with conn.transaction():
        row = await conn.fetchrow(f"SELECT t.id, t.kind, t.status{_FROM} WHERE t.id = $3 AND {_VISIBLE[party.side]} "
                                  "FOR UPDATE OF t", party.member_id, party.merchant_id, thread_id)
        if row is None:
            return None
        if row["status"] == "closed":
            raise FeedbackError(N_("The thread is closed."))
        status = "open" if party.side == _author_side(row["kind"]) else "answered"
        await conn.execute("INSERT INTO portal.feedback_messages(thread_id, side, author, body) VALUES ($1, $2, $3, $4)",
                           thread_id, party.side, author[:100], body.strip())
        await conn.execute("UPDATE portal.feedback_threads SET status = $2, updated_at = now() WHERE id = $1",
                           thread_id, status)
    return await get(conn, party, thread_id)


async def close(conn: asyncpg.Connection | asyncpg.Pool, party: Party, thread_id: int) -> bool:
    """Close a thread ``party`` sees (either side may); False when not found."""
    result = await conn.execute(
        f"UPDATE portal.feedback_threads t SET status = 'closed', updated_at = now() "
        f"WHERE t.id = $3 AND {_VISIBLE[party.side]}", party.member_id, party.merchant_id, thread_id)
    return result != "UPDATE 0"


async def delete(conn: asyncpg.Connection, party: Party, thread_id: int) -> bool | None:
    """Delete a thread ``party`` opened while nobody has replied: True; None when not found
    (or not its author's); False when it has replies (kept)."""
    async with conn.transaction():
        row = await conn.fetchrow(f"SELECT t.id, t.kind{_FROM} WHERE t.id = $3 AND {_VISIBLE[party.side]} "
                                  "FOR UPDATE OF t", party.member_id, party.merchant_id, thread_id)
        if row is None or _author_side(row["kind"]) != party.side:
            return None
        others = await conn.fetchval("SELECT count(*) FROM portal.feedback_messages WHERE thread_id = $1 AND side <> $2",
                                     thread_id, party.side)
        if others:
            return False
        await conn.execute("DELETE FROM portal.feedback_threads WHERE id = $1", thread_id)
    return True
