"""A member's own data: profile (name, login phone, e-mail, delivery address) and its cards.

The member (``loyalty.members``) is who the name and phone belong to. The cards'
old ``name`` and ``phone`` columns are kept in step with it: every change here
writes the member and copies its name and login phone onto each of its cards, so
whatever still reads a card's columns (exports, older scripts) reads the member's.

Every function takes the member's id and answers for that member only: a card of
someone else is None, exactly like a card that does not exist.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from ledger.loyalty import card_numbers
from ledger.loyalty.cards import login_phone
from ledger.loyalty.programs import ProvisioningError
from ledger.loyalty.rules import mask_pan

NAME_CHARS_MAX = 80
EMAIL_CHARS_MAX = 120
ADDRESS_CHARS_MAX = 300
CARDS_LISTED_MAX = 50
# Deliberately loose: one @, something either side, a dot in the domain. Whether it
# reaches anyone only a mail to it can tell.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")

PHONE_TAKEN = "That phone number belongs to another member."


def check_profile(name: str, phone: str, email: str, address: str) -> tuple[str, str | None, str, str]:
    """The profile's fields, normalised (the phone as one logs in with it; empty = none), or
    ProvisioningError with a one-line message.

    >>> check_profile(" Ada ", "+86 138-0013-8000", "", "")
    ('Ada', '+8613800138000', '', '')
    >>> check_profile("Ada", "12", "", "")
    Traceback (most recent call last):
    ...
    ledger.loyalty.programs.ProvisioningError: phone must be 5..20 digits, with spaces, dashes or a leading +
    """
    name, phone, email, address = name.strip(), phone.strip(), email.strip(), address.strip()
    if len(name) > NAME_CHARS_MAX:
        raise ProvisioningError(f"name must be at most {NAME_CHARS_MAX} characters")
    normal = login_phone(phone) if phone else None
    if phone and (normal is None or not re.fullmatch(r"\+?[0-9 ()-]{5,30}", phone)):
        raise ProvisioningError("phone must be 5..20 digits, with spaces, dashes or a leading +")
    check_email(email)
    if len(address) > ADDRESS_CHARS_MAX:
        raise ProvisioningError(f"the delivery address must be at most {ADDRESS_CHARS_MAX} characters")
    return name, normal, email, address


def check_email(email: str) -> None:
    """ProvisioningError unless ``email`` is empty or looks like an address.

    >>> check_email(""), check_email("ada@example.org")
    (None, None)
    """
    if email and (len(email) > EMAIL_CHARS_MAX or not _EMAIL.match(email)):
        raise ProvisioningError("the e-mail address does not look like one")


async def profile(conn: asyncpg.Connection | asyncpg.Pool, member_id: int) -> dict[str, Any] | None:
    """The member's profile and login state (has a password, must change it), or None."""
    row = await conn.fetchrow(
        "SELECT m.id, m.name, m.phone, m.email, m.delivery_address, m.status, m.created_at, m.updated_at, "
        "l.member_id IS NOT NULL AS has_password, coalesce(l.must_change_password, false) AS must_change_password, "
        "coalesce(l.locked_until > now(), false) AS locked "
        "FROM loyalty.members m LEFT JOIN portal.member_logins l ON l.member_id = m.id WHERE m.id = $1", member_id)
    return None if row is None else dict(row)


async def update_profile(conn: asyncpg.Connection, member_id: int, name: str, phone: str, email: str,
                         address: str) -> dict[str, Any]:
    """Change the member's profile (fields as :func:`check_profile` takes them); the profile after.

    ProvisioningError when a field is refused, or :data:`PHONE_TAKEN` when another member
    logs in with that phone (a phone names one member).
    """
    name, normal, email, address = check_profile(name, phone, email, address)
    async with conn.transaction():
        try:
            done = await conn.execute(
                "UPDATE loyalty.members SET name = $2, phone = $3, email = $4, delivery_address = $5, "
                "updated_at = now() WHERE id = $1", member_id, name, normal, email, address)
        except asyncpg.UniqueViolationError:
            raise ProvisioningError(PHONE_TAKEN) from None
        if not done.endswith(" 1"):
            raise ProvisioningError(f"no member {member_id}")
        await conn.execute("UPDATE loyalty.cards SET name = $2, phone = $3, updated_at = now() "
                           "WHERE member_id = $1", member_id, name or None, normal)
    found = await profile(conn, member_id)
    assert found is not None
    return found


async def member_cards(conn: asyncpg.Connection | asyncpg.Pool, member_id: int) -> list[dict[str, Any]]:
    """The member's cards (at most CARDS_LISTED_MAX), oldest first: id, number masked, status, expiry."""
    rows = await conn.fetch(
        "SELECT id, pan_masked AS pan, status, expiry, created_at FROM loyalty.cards WHERE member_id = $1 "
        "ORDER BY id LIMIT $2",
        member_id, CARDS_LISTED_MAX)
    return [dict(r) | {"pan": mask_pan(r["pan"])} for r in rows]


async def member_card(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, card_id: int) -> dict[str, Any] | None:
    """One of the member's cards, or None (no such card, or someone else's: the same answer)."""
    row = await conn.fetchrow(
        "SELECT id, pan_masked AS pan, status, expiry, created_at FROM loyalty.cards WHERE id = $1 AND member_id = $2",
        card_id, member_id)
    return None if row is None else dict(row) | {"pan": mask_pan(row["pan"])}


async def block_own_card(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, card_id: int) -> bool:
    """Block one of the member's own cards (a lost card); False when it is not the member's.

    Blocking is all a member may do to a card's status: unblocking is the issuer's
    (a thief who learned the password must not be able to undo the owner's block).
    """
    done = await conn.execute("UPDATE loyalty.cards SET status = 'blocked', updated_at = now() "
                              "WHERE id = $1 AND member_id = $2 AND status = 'active'", card_id, member_id)
    return bool(done.endswith(" 1"))


async def find_member_id(conn: asyncpg.Connection | asyncpg.Pool, identifier: str) -> int | None:
    """The member a card number or a login phone names, or None."""
    identifier = identifier.strip().replace(" ", "")
    if not identifier or len(identifier) > 32:
        return None
    if identifier.isdigit() and 12 <= len(identifier) <= 19:
        v = await card_numbers.vault(conn)
        found = await conn.fetchval("SELECT member_id FROM loyalty.cards WHERE pan_hash = $1",
                                    v.lookup_hash(identifier))
        if found is not None:
            return int(found)
    phone = login_phone(identifier)
    found = None if phone is None else await conn.fetchval("SELECT id FROM loyalty.members WHERE phone = $1", phone)
    return None if found is None else int(found)
