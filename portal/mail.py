"""In-platform mail: the platform writes to one merchant or to all; a merchant to one of its
members or to all of them (its program's members, ledger.loyalty.members).

A message is one row whatever its audience: a broadcast to a million members is one
INSERT, never a million. An inbox is read from the messages addressed to it (an index
range per audience); what a recipient did with a message (read, deleted) is a row of
``portal.mail_states`` written when it does it. So the cost of a broadcast is paid per
inbox read and per reader, not per recipient at send time.

When e-mail copies are on, the message also gets a ``portal.mail_fanout`` row in the same
transaction; the portal's sender (portal.mail_sender) expands it into the outbox, a page
of recipients at a time, in the background.
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
# Unread counts are counted up to this (a header shows "99+"): an inbox of a million
# unread broadcasts costs a bounded read.
UNREAD_COUNT_MAX = 100


class MailError(Refusal):
    """A message that cannot be sent as asked; ``str()`` says why, for people."""


@dataclass(frozen=True)
class Inbox:
    """A recipient: ``kind`` 'merchant' (id: merchant id) or 'member' (id: member id)."""

    kind: str
    id: str

    @staticmethod
    def member(member_id: int) -> Inbox:
        return Inbox("member", str(int(member_id)))

    @staticmethod
    def merchant(merchant_id: str) -> Inbox:
        return Inbox("merchant", merchant_id)

    def params(self) -> tuple[str | None, int | None]:
        """The inbox queries' first two parameters: (merchant id, member id), one of them None."""
        return (self.id, None) if self.kind == "merchant" else (None, int(self.id))


# The programs a member's cards belong to (hold a points account in); $1 = member id.
MEMBER_PROGRAMS_SQL = """
SELECT pr.code FROM loyalty.cards c
  JOIN ledger.accounts a ON a.owner_kind = 'card' AND a.owner_id = c.id::text AND a.purpose = 'points'
  JOIN loyalty.programs pr ON pr.points_asset = a.asset
 WHERE c.member_id = $1::bigint
"""

# The messages addressed to an inbox ($1: merchant id, else NULL; $2: member id, else NULL),
# without the ones it deleted.
_ADDRESSED = f"""
(SELECT g.* FROM portal.mail_messages g WHERE g.audience = 'merchant' AND g.recipient_merchant_id = $1
 UNION ALL
 SELECT g.* FROM portal.mail_messages g WHERE $1::text IS NOT NULL AND g.audience = 'merchants'
 UNION ALL
 SELECT g.* FROM portal.mail_messages g WHERE g.audience = 'member' AND g.recipient_member_id = $2
 UNION ALL
 SELECT g.* FROM portal.mail_messages g
  WHERE g.audience = 'members' AND g.program IN ({MEMBER_PROGRAMS_SQL.replace('$1::bigint', '$2')}))
"""
_INBOX_FROM = f"""
  FROM {_ADDRESSED} g
  LEFT JOIN portal.mail_states s ON s.recipient_kind = CASE WHEN $1::text IS NULL THEN 'member' ELSE 'merchant' END
        AND s.recipient_id = coalesce($1::text, $2::bigint::text) AND s.message_id = g.id
  LEFT JOIN loyalty.merchants sm ON sm.merchant_id = g.sender_merchant_id
 WHERE s.deleted_at IS NULL
"""
_INBOX_COLUMNS = ("g.id, g.sender_merchant_id, sm.name AS sender_name, g.audience, g.subject, g.body, g.created_at, "
                  "s.read_at")


def _check(subject: str, body: str) -> None:
    if not 1 <= len(subject.strip()) <= SUBJECT_CHARS_MAX:
        raise MailError(N_("A subject has 1 to %(n)s characters."), n=SUBJECT_CHARS_MAX)
    if not 1 <= len(body.strip()) <= BODY_CHARS_MAX:
        raise MailError(N_("A message has 1 to %(n)s characters."), n=BODY_CHARS_MAX)


async def _insert(conn: asyncpg.Connection, email_copies: bool, columns: dict[str, Any]) -> dict[str, Any]:
    names = ", ".join(columns)
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    async with conn.transaction():
        row = await conn.fetchrow(f"INSERT INTO portal.mail_messages({names}) VALUES ({marks}) RETURNING *",
                                  *columns.values())
        if email_copies:
            await conn.execute("INSERT INTO portal.mail_fanout(message_id) VALUES ($1)", row["id"])
    return dict(row)


async def send_to_merchants(conn: asyncpg.Connection, merchant_id: str | None, subject: str, body: str,
                            created_by: str, email_copies: bool = False) -> dict[str, Any]:
    """The platform's message to ``merchant_id``, or to every merchant (None)."""
    _check(subject, body)
    if merchant_id is not None and not await conn.fetchval(
            "SELECT 1 FROM loyalty.merchants WHERE merchant_id = $1", merchant_id):
        raise MailError(N_("No merchant %(id)s."), id=merchant_id)
    return await _insert(conn, email_copies, {
        "audience": "merchant" if merchant_id else "merchants", "recipient_merchant_id": merchant_id,
        "subject": subject.strip(), "body": body.strip(), "created_by": created_by[:100]})


async def is_merchants_member(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str, member_id: int) -> bool:
    """True when one of the member's cards belongs to the merchant's program."""
    return bool(await conn.fetchval(
        f"SELECT 1 FROM loyalty.merchants m WHERE m.merchant_id = $2 AND m.program IN ({MEMBER_PROGRAMS_SQL})",
        member_id, merchant_id))


async def send_to_members(conn: asyncpg.Connection, merchant_id: str, member_id: int | None, subject: str,
                          body: str, created_by: str, email_copies: bool = False) -> dict[str, Any] | None:
    """A merchant's message to one of its members (None when not its member), or to all (None)."""
    _check(subject, body)
    if member_id is not None:
        if not await is_merchants_member(conn, merchant_id, member_id):
            return None
        columns: dict[str, Any] = {"audience": "member", "recipient_member_id": member_id}
    else:
        program = await conn.fetchval("SELECT program FROM loyalty.merchants WHERE merchant_id = $1", merchant_id)
        if program is None:
            raise MailError(N_("No merchant %(id)s."), id=merchant_id)
        columns = {"audience": "members", "program": program}
    return await _insert(conn, email_copies, {
        "sender_merchant_id": merchant_id, **columns, "subject": subject.strip(), "body": body.strip(),
        "created_by": created_by[:100]})


async def inbox(conn: asyncpg.Connection | asyncpg.Pool, box: Inbox, after_id: int | None = None,
                limit: int = 50) -> dict[str, Any]:
    """An inbox, newest first: ``{"messages": [...], "next_after_id"}`` (``read_at`` None: unread)."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        f"SELECT {_INBOX_COLUMNS}{_INBOX_FROM} AND ($3::bigint IS NULL OR g.id < $3) ORDER BY g.id DESC LIMIT $4",
        *box.params(), after_id, limit + 1)
    items = [dict(r) for r in rows[:limit]]
    return {"messages": items, "next_after_id": items[-1]["id"] if len(rows) > limit else None}


async def member_inbox(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, after_id: int | None = None,
                       limit: int = 50) -> dict[str, Any]:
    """A member's inbox (see :func:`inbox`)."""
    return await inbox(conn, Inbox.member(member_id), after_id, limit)


async def unread_count(conn: asyncpg.Connection | asyncpg.Pool, box: Inbox) -> int:
    """How many messages of the inbox are unread, counted up to UNREAD_COUNT_MAX."""
    return int(await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1{_INBOX_FROM} AND s.read_at IS NULL LIMIT {UNREAD_COUNT_MAX}) u",
        *box.params()))


async def get(conn: asyncpg.Connection | asyncpg.Pool, box: Inbox, message_id: int) -> dict[str, Any] | None:
    """A message of the inbox (None: not addressed to it, deleted, or no such message)."""
    row = await conn.fetchrow(f"SELECT {_INBOX_COLUMNS}{_INBOX_FROM} AND g.id = $3", *box.params(), message_id)
    return None if row is None else dict(row)


async def _set_state(conn: asyncpg.Connection | asyncpg.Pool, box: Inbox, message_id: int, column: str) -> bool:
    if await get(conn, box, message_id) is None:
        return False
    await conn.execute(
        f"INSERT INTO portal.mail_states(message_id, recipient_kind, recipient_id, {column}) VALUES ($1, $2, $3, now()) "
        f"ON CONFLICT (recipient_kind, recipient_id, message_id) DO UPDATE "
        f"SET {column} = coalesce(portal.mail_states.{column}, now())", message_id, box.kind, box.id)
    return True


async def mark_read(conn: asyncpg.Connection | asyncpg.Pool, box: Inbox, message_id: int) -> bool:
    """Mark a message of the inbox read; False when it is not the inbox's."""
    return await _set_state(conn, box, message_id, "read_at")


async def delete(conn: asyncpg.Connection | asyncpg.Pool, box: Inbox, message_id: int) -> bool:
    """Delete a message from this inbox only (others who got it keep it); False when not the inbox's."""
    return await _set_state(conn, box, message_id, "deleted_at")


async def sent(conn: asyncpg.Connection | asyncpg.Pool, sender_merchant_id: str | None, after_id: int | None = None,
               limit: int = 50) -> dict[str, Any]:
    """What a merchant (the platform: None) sent, newest first, with how many have read each."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        "SELECT g.id, g.audience, g.recipient_merchant_id, g.recipient_member_id, g.program, g.subject, g.created_at, "
        "g.created_by, (SELECT count(*) FROM portal.mail_states s WHERE s.message_id = g.id AND s.read_at IS NOT NULL) "
        "AS readers FROM portal.mail_messages g WHERE g.sender_merchant_id IS NOT DISTINCT FROM $1 "
        "AND ($2::bigint IS NULL OR g.id < $2) ORDER BY g.id DESC LIMIT $3", sender_merchant_id, after_id, limit + 1)
    items = [dict(r) for r in rows[:limit]]
    return {"messages": items, "next_after_id": items[-1]["id"] if len(rows) > limit else None}
