"""Members' cards: issue (Luhn, platform BIN), block/unblock, and every balance of a card."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg

from ledger.loyalty import card_numbers
from ledger.loyalty.programs import ProvisioningError
from ledger.loyalty.rules import luhn_ok, mask_pan

EXPIRY = re.compile(r"^[0-9]{2}(0[1-9]|1[0-2])$")
CARD_STATUSES = ("active", "blocked", "expired")


def default_expiry(today: dt.date, years: int = 5) -> str:
    """YYMM ``years`` from ``today``.

    >>> default_expiry(dt.date(2026, 3, 9))
    '3103'
    """
    return f"{(today.year + years) % 100:02d}{today.month:02d}"


async def check_pan(conn: asyncpg.Connection | asyncpg.Pool, pan: str) -> None:
    """Raise ProvisioningError unless ``pan`` is 12..19 digits, Luhn-valid and in a platform BIN."""
    if not (pan.isascii() and pan.isdigit()) or not 12 <= len(pan) <= 19:
        raise ProvisioningError("PAN must be 12..19 digits")
    if not luhn_ok(pan):
        raise ProvisioningError(f"PAN {mask_pan(pan)} fails the Luhn check")
    if not await conn.fetchval("SELECT 1 FROM loyalty.bin_ranges WHERE $1 LIKE prefix || '%'", pan):
        raise ProvisioningError(f"PAN {mask_pan(pan)} is outside the platform's BIN ranges")


def login_phone(phone: str | None) -> str | None:
    """A phone number as a member logs in with it: digits and a leading +, or None.

    >>> login_phone("+86 138-0013-8000"), login_phone("12"), login_phone(None)
    ('+8613800138000', None, None)
    """
    if not phone:
        return None
    digits = re.sub(r"[^0-9+]", "", phone)
    return digits if re.fullmatch(r"\+?[0-9]{5,20}", digits) else None


async def issue_card(conn: asyncpg.Connection, pan: str, expiry: str | None = None, name: str | None = None,
                     phone: str | None = None, today: dt.date | None = None,
                     member_id: int | None = None) -> dict[str, Any]:
    """Issue a card to member ``member_id``, or to a new member (``name``, ``phone``).

    A member may hold several cards; a phone identifies one member, so a new member
    with a phone another member logs in with is refused (issue to that member instead).
    The card's own name and phone columns copy its member's (``name`` and ``phone``
    are ignored for an existing member). Accounts are opened on first use.
    """
    await check_pan(conn, pan)
    expiry = expiry or default_expiry(today or dt.datetime.now(dt.UTC).date())
    if not EXPIRY.match(expiry):
        raise ProvisioningError(f"expiry must be YYMM, got {expiry!r}")
    if name is not None and len(name) > 80:
        raise ProvisioningError("name must be at most 80 characters")
    if phone is not None and not re.match(r"^\+?[0-9 -]{3,20}$", phone):
        raise ProvisioningError("phone must be 3..20 digits, spaces or dashes")
    pan_hash, pan_sealed, pan_masked = (await card_numbers.vault(conn)).columns(pan)
    async with conn.transaction():
        if member_id is None:
            member_id = await conn.fetchval(
                "INSERT INTO loyalty.members(name, phone) VALUES ($1, $2) ON CONFLICT (phone) DO NOTHING "
                "RETURNING id", name or "", login_phone(phone))
            if member_id is None:
                raise ProvisioningError("that phone number belongs to another member: issue the card to them")
        else:
            # A further card of a member: its holder columns are the member's (kept in step with it).
            holder = await conn.fetchrow("SELECT name, phone FROM loyalty.members WHERE id = $1", member_id)
            if holder is None:
                raise ProvisioningError(f"no member {member_id}")
            name, phone = holder["name"] or None, holder["phone"]
        row = await conn.fetchrow(
            "INSERT INTO loyalty.cards(pan_hash, pan_sealed, pan_masked, expiry, name, phone, member_id) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (pan_hash) DO NOTHING RETURNING id",
            pan_hash, pan_sealed, pan_masked, expiry, name, login_phone(phone) or phone, member_id)
        if row is None:
            raise ProvisioningError(f"card {mask_pan(pan)} already exists")
    found = await show_card_by_id(conn, int(row["id"]))
    assert found is not None
    return found


async def show_card(conn: asyncpg.Connection | asyncpg.Pool, pan: str) -> dict[str, Any] | None:
    """A card's status and every balance (points per program, stored value), PAN masked."""
    card_id = await card_numbers.card_id_by_number(conn, pan)
    return None if card_id is None else await show_card_by_id(conn, card_id)


async def show_card_by_id(conn: asyncpg.Connection | asyncpg.Pool, card_id: int) -> dict[str, Any] | None:
    """As :func:`show_card`, for the card with row id ``card_id``."""
    card = await conn.fetchrow(
        "SELECT id, member_id, pan_masked AS pan, status, expiry, name, phone, created_at FROM loyalty.cards "
        "WHERE id = $1", card_id)
    if card is None:
        return None
    accounts = await conn.fetch(
        "SELECT a.purpose, a.asset, a.posted, a.held, p.code AS program "
        "FROM ledger.accounts a LEFT JOIN loyalty.programs p ON p.points_asset = a.asset "
        "WHERE a.owner_kind='card' AND a.owner_id=$1 ORDER BY a.purpose, a.asset", str(card["id"]))
    out = dict(card)
    out["balances"] = [
        {"kind": r["purpose"], "asset": r["asset"], "program": r["program"],
         "balance": r["posted"], "available": r["posted"] - r["held"]}
        for r in accounts
    ]
    return out


async def set_card_status(conn: asyncpg.Connection | asyncpg.Pool, pan: str, status: str) -> bool:
    """Set a card's status; False when there is no such card."""
    if status not in CARD_STATUSES:
        raise ProvisioningError(f"card status must be one of {', '.join(CARD_STATUSES)}")
    card_id = await card_numbers.card_id_by_number(conn, pan)
    return card_id is not None and await set_card_status_by_id(conn, card_id, status)


async def set_card_status_by_id(conn: asyncpg.Connection | asyncpg.Pool, card_id: int, status: str) -> bool:
    """As :func:`set_card_status`, for the card with row id ``card_id``."""
    if status not in CARD_STATUSES:
        raise ProvisioningError(f"card status must be one of {', '.join(CARD_STATUSES)}")
    done = await conn.execute("UPDATE loyalty.cards SET status=$2, updated_at=now() WHERE id=$1", card_id, status)
    return bool(done.endswith(" 1"))
