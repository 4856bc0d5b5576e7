"""A member's wallet, by member id: profile, cards, balances and transaction history.

What the member sees of itself (the member API and the member pages): every card
the member holds (numbers masked), each card's points per program and stored
value, and the transactions of all its cards over every channel, newest first,
in keyset pages. Nothing here takes a card number as input.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ledger.loyalty.lots import NEXT_LOT_SQL
from ledger.loyalty.rules import mask_pan

PROFILE_LIMITS = {"name": 80, "email": 120, "delivery_address": 300}
HISTORY_LIMIT_MAX = 200


async def profile(conn: asyncpg.Connection | asyncpg.Pool, member_id: int) -> dict[str, Any] | None:
    """The member's own data and its cards (masked), or None when there is no such member."""
    row = await conn.fetchrow(
        "SELECT id, name, phone, email, delivery_address, status, created_at FROM loyalty.members WHERE id = $1",
        member_id)
    if row is None:
        return None
    cards = await conn.fetch("SELECT id, pan_masked AS pan, status, expiry FROM loyalty.cards "
                             "WHERE member_id = $1 ORDER BY id",
                             member_id)
    return dict(row) | {"cards": [dict(c) | {"pan": mask_pan(c["pan"])} for c in cards]}


async def update_profile(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, changes: dict[str, str]) -> bool:
    """Change some of name, email and delivery address (each bounded by PROFILE_LIMITS);
    False when there is no such member. ValueError for an unknown field or one too long."""
    for name, value in changes.items():
        if name not in PROFILE_LIMITS:
            raise ValueError(f"{name} cannot be changed here")
        if len(value) > PROFILE_LIMITS[name]:
            raise ValueError(f"{name} must be at most {PROFILE_LIMITS[name]} characters")
    if not changes:
        return bool(await conn.fetchval("SELECT 1 FROM loyalty.members WHERE id = $1", member_id))
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
    done = await conn.execute(f"UPDATE loyalty.members SET {sets}, updated_at = now() WHERE id = $1",
                              member_id, *changes.values())
    return bool(done.endswith(" 1"))


async def balances(conn: asyncpg.Connection | asyncpg.Pool, member_id: int) -> list[dict[str, Any]]:
    """Per card of the member (by id): points per program and stored value per currency, each with
    its balance and what is available (the balance less what holds reserve); points that expire
    carry ``next_expiry`` (the points and date of the lot expiring first)."""
    rows = await conn.fetch(
        "SELECT c.id, c.pan_masked AS pan, c.status, a.purpose, a.asset, a.posted, a.held, p.code AS program, "
        "x.remaining AS expiring_points, x.expires_on AS expiring_on "
        "FROM loyalty.cards c LEFT JOIN ledger.accounts a ON a.owner_kind = 'card' AND a.owner_id = c.id::text "
        "LEFT JOIN loyalty.programs p ON p.points_asset = a.asset "
        f"LEFT JOIN LATERAL ({NEXT_LOT_SQL}) x ON a.purpose = 'points' "
        "WHERE c.member_id = $1 ORDER BY c.id, a.purpose, a.asset", member_id)
    cards: dict[int, dict[str, Any]] = {}
    for r in rows:
        card = cards.setdefault(r["id"], {"card_id": r["id"], "pan": mask_pan(r["pan"]), "status": r["status"],
                                          "points": [], "stored_value": []})
        if r["purpose"] == "points" and r["program"] is not None:
            points: dict[str, Any] = {"program": r["program"], "points": r["posted"],
                                      "available_points": r["posted"] - r["held"]}
            if r["expiring_on"] is not None:
                # The lot expiring first, in a program whose points expire.
                points["next_expiry"] = {"points": r["expiring_points"], "date": r["expiring_on"].isoformat()}
            card["points"].append(points)
        elif r["purpose"] == "stored_value":
            card["stored_value"].append({"currency": r["asset"], "amount_minor": r["posted"],
                                         "available_minor": r["posted"] - r["held"]})
    return list(cards.values())


# Per card (LATERAL): each card's rows are found by the card's index, never by walking the whole
# table backwards by id in the hope of meeting this member's. $1 member id, $2 before id or NULL.
HISTORY_SQL = (
    "SELECT t.id, t.created_at, t.business_date, t.txn_type, t.reason, t.channel, t.merchant_id, t.card_id, "
    "       c.pan_masked AS pan, t.program, t.points_delta, t.money_delta_minor, cur.asset AS currency, t.rrn "
    "FROM loyalty.cards c CROSS JOIN LATERAL ("
    "  SELECT * FROM loyalty.transactions x WHERE x.card_id = c.id "
    "     AND x.txn_type NOT IN ('inquiry', 'marker') AND ($2::bigint IS NULL OR x.id < $2) "
    "  ORDER BY x.id DESC LIMIT {limit}) t "
    "LEFT JOIN loyalty.programs p ON p.code = t.program "
    "LEFT JOIN loyalty.currencies cur ON cur.numeric_code = p.currency "
    "WHERE c.member_id = $1 ORDER BY t.id DESC LIMIT {limit}")


async def history(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, before_id: int | None = None,
                  limit: int = 50) -> dict[str, Any]:
    """One page of the transactions of every card of the member, newest first: what happened,
    where (merchant, channel), the points and stored value it moved. ``next_before_id`` is the
    last id of the page when there are more."""
    limit = max(1, min(int(limit), HISTORY_LIMIT_MAX))
    rows = await conn.fetch(HISTORY_SQL.format(limit=limit + 1), member_id, before_id)
    page = [dict(r) | {"pan": mask_pan(r["pan"])} for r in rows[:limit]]
    return {"transactions": page, "next_before_id": page[-1]["id"] if len(rows) > limit else None}
