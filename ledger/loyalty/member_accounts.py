"""A member's own view of its accounts: its cards and every balance on them.

A member (``loyalty.members``) holds one or more cards; the ledger's accounts
belong to the cards. These functions answer for one member only, so a page or an
API call that passes the logged-in member's id can show nothing of anyone else's.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ledger.loyalty.lots import NEXT_LOT_SQL
from ledger.loyalty.rules import mask_pan

CARDS_PER_MEMBER_MAX = 50


async def member_balances(conn: asyncpg.Connection | asyncpg.Pool, member_id: int) -> list[dict[str, Any]]:
    """One row per card and account of ``member_id``: the card (masked, its status), points per program
    (``program`` set) or stored value (``currency``: ISO 4217 numeric), balance and available
    (balance less holds), and for points that expire the next expiring lot (``expiring_points`` on
    ``expiring_on``, else None). A card with no account yet has one row with no balance."""
    rows = await conn.fetch(
        "SELECT c.id AS card_id, c.pan_masked AS pan, c.status, a.purpose, a.posted AS balance, a.posted - a.held AS available, "
        "p.code AS program, cur.numeric_code AS currency, x.remaining AS expiring_points, "
        "x.expires_on AS expiring_on "
        "FROM (SELECT * FROM loyalty.cards WHERE member_id = $1 ORDER BY id LIMIT $2) c "
        "LEFT JOIN ledger.accounts a ON a.owner_kind = 'card' AND a.owner_id = c.id::text "
        "LEFT JOIN loyalty.programs p ON a.purpose = 'points' AND p.points_asset = a.asset "
        "LEFT JOIN loyalty.currencies cur ON a.purpose = 'stored_value' AND cur.asset = a.asset "
        f"LEFT JOIN LATERAL ({NEXT_LOT_SQL}) x ON a.purpose = 'points' "
        "ORDER BY c.id, a.purpose, a.asset", member_id, CARDS_PER_MEMBER_MAX)
    return [{**dict(r), "pan": mask_pan(r["pan"])} for r in rows]


async def program_rates(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """What a point is worth in each active program: its name, the issue price and the redemption value
    of one point in minor units of the program's currency (``currency``: ISO 4217 numeric)."""
    rows = await conn.fetch(
        "SELECT code AS program, name, currency, issue_price_minor, redeem_value_minor "
        "FROM loyalty.programs WHERE status = 'active' ORDER BY code")
    return [dict(r) for r in rows]
