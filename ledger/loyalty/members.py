"""Members (cards) as a merchant sees them: its program's members, issued, found, changed.

A card is the platform's, not a merchant's: one card earns and redeems in every
program, at every merchant, and its accounts open on first use. What makes a
card a member of a program is its points account in that program: a card that
earned, redeemed or was topped up there, or that a merchant of the program
issued (issuing enrols the card: its points account is opened, at zero). A
merchant's members are its program's members, which in an alliance are shared
by every merchant of it. Card numbers go in as arguments only and come out
masked; a card is named by its row id everywhere else.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import asyncpg

from ledger import search
from ledger.accounts import open_account
from ledger.loyalty import card_numbers, cards
from ledger.loyalty.programs import ProvisioningError
from ledger.loyalty.rules import luhn_complete

PAN_DIGITS_DEFAULT = 16
LIST_LIMIT_MAX = 200
_ISSUE_ATTEMPTS_MAX = 20


def new_pan(prefix: str, digits: int = PAN_DIGITS_DEFAULT) -> str:
    """A random Luhn-valid card number of ``digits`` digits under ``prefix``.

    >>> pan = new_pan("621234")
    >>> len(pan), pan[:6], cards.luhn_ok(pan)
    (16, '621234', True)
    """
    if not (prefix.isascii() and prefix.isdigit()) or not 12 <= digits <= 19 or len(prefix) >= digits:
        raise ProvisioningError(f"cannot make a {digits}-digit card number under BIN {prefix!r}")
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(digits - len(prefix) - 1))
    return luhn_complete(body)


async def program_points_asset(conn: asyncpg.Connection | asyncpg.Pool, program: str) -> str | None:
    """The points asset of a program (None when there is no such program)."""
    value = await conn.fetchval("SELECT points_asset FROM loyalty.programs WHERE code = $1", program)
    return None if value is None else str(value)


async def enrol(conn: asyncpg.Connection | asyncpg.Pool, card_id: int, program: str) -> None:
    """Make a card a member of ``program``: open its points account there (zero; nothing posted)."""
    asset = await program_points_asset(conn, program)
    if asset is None:
        raise ProvisioningError(f"no program {program!r}")
    # As the first earn opens it (ledger.loyalty.operations): a credit account, guarded.
    await open_account(conn, "card", str(card_id), asset, "credit", "guarded", "points")


async def issue_member(conn: asyncpg.Connection, pan: str | None, bin_prefix: str | None, program: str | None,
                       expiry: str | None = None, name: str | None = None, phone: str | None = None,
                       today: dt.date | None = None, member_id: int | None = None) -> dict[str, Any]:
    """Issue a card (``pan``, or a new number under ``bin_prefix``, a platform BIN) to member
    ``member_id`` (default: a new member) and enrol it in ``program`` when given. Returns the card as :func:`member` does. ProvisioningError when refused."""
    if pan is None:
        if not bin_prefix or not await conn.fetchval(
                "SELECT 1 FROM loyalty.bin_ranges WHERE prefix = $1", bin_prefix):
            raise ProvisioningError("choose one of the platform's BINs, or enter a card number")
        for _ in range(_ISSUE_ATTEMPTS_MAX):
            candidate = new_pan(bin_prefix)
            if await card_numbers.card_id_by_number(conn, candidate) is None:
                pan = candidate
                break
        else:
            raise ProvisioningError(f"BIN {bin_prefix} has no free card numbers left to draw")
    async with conn.transaction():
        issued = await cards.issue_card(conn, pan, expiry or None, name or None, phone or None, today, member_id)
        card_id = int(issued["id"])
        if program is not None:
            await enrol(conn, card_id, program)
    found = await member(conn, card_id)
    assert found is not None
    return found


async def member_in_program(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, program: str) -> bool:
    """True when one of the member's cards is a member of ``program`` (its merchants see the member)."""
    return bool(await conn.fetchval(
        "SELECT 1 FROM loyalty.cards c JOIN ledger.accounts a ON a.owner_kind = 'card' AND a.owner_id = c.id::text "
        "AND a.purpose = 'points' JOIN loyalty.programs p ON p.points_asset = a.asset "
        "WHERE c.member_id = $1 AND p.code = $2 LIMIT 1", member_id, program))


async def is_member(conn: asyncpg.Connection | asyncpg.Pool, card_id: int, program: str) -> bool:
    """True when the card holds a points account in ``program``."""
    return bool(await conn.fetchval(
        "SELECT 1 FROM ledger.accounts a JOIN loyalty.programs p ON p.points_asset = a.asset "
        "WHERE a.owner_kind = 'card' AND a.owner_id = $1 AND a.purpose = 'points' AND p.code = $2",
        str(card_id), program))


async def card_id_of(conn: asyncpg.Connection | asyncpg.Pool, pan: str) -> int | None:
    """The row id of the card with this number, or None."""
    return await card_numbers.card_id_by_number(conn, pan)


async def member(conn: asyncpg.Connection | asyncpg.Pool, card_id: int) -> dict[str, Any] | None:
    """A card by row id: status, holder, every balance (ledger.loyalty.cards.show_card), PAN masked."""
    return await cards.show_card_by_id(conn, card_id)


async def search_members(conn: asyncpg.Connection | asyncpg.Pool, program: str | None = None,
                         text: str | None = None, status: str | None = None, after_id: int | None = None,
                         limit: int = 50) -> dict[str, Any]:
    """Cards (of ``program``'s members when given), by their member's name or phone containing
    ``text``, by status; in id order, keyset pages (``after_id``). PANs masked."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    like = None if not text else "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await conn.fetch(
        "SELECT c.id, c.member_id, c.pan_masked AS pan, c.status, c.expiry, m.name, m.phone, c.created_at FROM loyalty.cards c "
        "JOIN loyalty.members m ON m.id = c.member_id "
        "WHERE ($1::text IS NULL OR EXISTS (SELECT 1 FROM ledger.accounts a JOIN loyalty.programs p "
        "        ON p.points_asset = a.asset WHERE a.owner_kind = 'card' AND a.owner_id = c.id::text "
        "        AND a.purpose = 'points' AND p.code = $1)) "
        "  AND ($2::text IS NULL OR m.name ILIKE $2 OR m.phone LIKE $2) "
        "  AND ($3::text IS NULL OR c.status = $3) AND ($4::bigint IS NULL OR c.id > $4) "
        f"ORDER BY c.id LIMIT {limit + 1}", program, like, status, after_id)
    page = [dict(r) for r in rows[:limit]]
    return {"members": page, "next_after_id": page[-1]["id"] if len(rows) > limit else None}


async def set_expiry(conn: asyncpg.Connection | asyncpg.Pool, card_id: int, expiry: str | None) -> bool:
    """Change a card's expiry (YYMM; None = never); False when no such card. The holder's name and
    phone are the member's (ledger.loyalty.member_profile.update_profile)."""
    if expiry is not None and not cards.EXPIRY.match(expiry):
        raise ProvisioningError(f"expiry must be YYMM, got {expiry!r}")
    done = await conn.execute("UPDATE loyalty.cards SET expiry = $2, updated_at = now() WHERE id = $1",
                              card_id, expiry)
    return bool(done.endswith(" 1"))


async def set_member_status(conn: asyncpg.Connection | asyncpg.Pool, card_id: int, status: str) -> bool:
    """Block or unblock a card by row id (ledger.loyalty.cards.set_card_status); False when none."""
    return await cards.set_card_status_by_id(conn, card_id, status)


async def merchant_original(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str,
                            rrn: str) -> dict[str, Any] | None:
    """The approved transaction ``rrn`` of ``merchant_id`` that a void or refund would name: its
    type, amount, currency and card number (in full: for the seat's request, never to be shown).
    None when the merchant has none under that RRN."""
    row = await conn.fetchrow(
        "SELECT t.txn_type, t.amount, t.currency, t.business_date, t.card_id FROM loyalty.transactions t "
        "JOIN loyalty.cards c ON c.id = t.card_id "
        "WHERE t.rrn = $1 AND t.merchant_id = $2 AND t.journal_id IS NOT NULL ORDER BY t.id LIMIT 1",
        rrn, merchant_id)
    if row is None:
        return None
    return dict(row) | {"pan": await card_numbers.number_of(conn, int(row["card_id"]))}


async def card_transactions(conn: asyncpg.Connection | asyncpg.Pool, card_id: int, merchant_id: str | None = None,
                            limit: int = 20) -> list[dict[str, Any]]:
    """A card's latest transactions (at ``merchant_id`` only, when given), newest first, PAN masked
    (read as its member's history of that card: a page costs the same whatever the card's past)."""
    member_id = await conn.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1", card_id)
    if member_id is None:
        return []
    found = await search.member_history(conn, int(member_id), search.Filters(card_id=card_id,
                                                                             merchant_id=merchant_id), None, limit)
    return list(found["transactions"])
