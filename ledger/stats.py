"""Statistics for one business day, overall or grouped by merchant, program, type, terminal or channel.

Counts (all, approved, declined), approval rate in basis points (integer),
amounts as sent split into money (minor units) and points, member points
issued and redeemed, active members (cards with an approved transaction) and
new cards (issued that calendar day, UTC). One SQL statement per question.

>>> group_column("merchant"), group_column(None)
('t.merchant_id', "'all'")
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

GROUPS = {"merchant": "t.merchant_id", "program": "t.program", "type": "t.txn_type", "terminal": "t.terminal_id",
          "channel": "t.channel"}
POINTS_TYPES = ("redeem", "topup", "lottery")


def group_column(by: str | None) -> str:
    """The SQL expression to group by (a fixed whitelist, never user text)."""
    if by is None:
        return "'all'"
    if by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}, got {by!r}")
    return GROUPS[by]


async def day_stats(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, by: str | None = None
                    ) -> dict[str, Any]:
    """The day's figures per group, plus member counts for the whole day."""
    col = group_column(by)
    rows = await conn.fetch(
        f"""SELECT coalesce({col}, '-') AS grp,
                   count(*) FILTER (WHERE t.txn_type <> 'marker') AS transactions,
                   count(*) FILTER (WHERE t.reason = 'approved' AND t.txn_type <> 'marker') AS approved,
                   count(*) FILTER (WHERE t.reason <> 'approved' AND t.txn_type <> 'marker') AS declined,
                   coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
                       AND NOT (t.txn_type = ANY($2::text[])) AND t.currency IS NOT NULL), 0)::bigint
                       AS money_amount_minor,
                   coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
                       AND t.txn_type = ANY($2::text[])), 0)::bigint AS points_amount,
                   coalesce(sum(t.points_delta) FILTER (WHERE t.points_delta > 0), 0)::bigint AS points_credited,
                   coalesce(-sum(t.points_delta) FILTER (WHERE t.points_delta < 0), 0)::bigint AS points_debited,
                   coalesce(sum(t.fee_minor), 0)::bigint AS fees_minor,
                   count(DISTINCT t.card_id) FILTER (WHERE t.reason = 'approved') AS active_members
              FROM loyalty.transactions t
             WHERE t.business_date = $1
             GROUP BY 1 ORDER BY 1""",
        day, list(POINTS_TYPES))
    groups = []
    for r in rows:
        g = dict(r)
        g["approval_rate_bps"] = (10_000 * int(r["approved"])) // int(r["transactions"]) if r["transactions"] else 0
        groups.append(g)
    members = await conn.fetchrow(
        """SELECT (SELECT count(DISTINCT card_id) FROM loyalty.transactions
                    WHERE business_date = $1 AND reason = 'approved' AND card_id IS NOT NULL) AS active_members,
                  (SELECT count(*) FROM loyalty.cards
                    WHERE created_at >= $1::date::timestamp AT TIME ZONE 'UTC'
                      AND created_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC') AS new_cards""",
        day)
    assert members is not None
    return {"business_date": day.isoformat(), "by": by or "all", "groups": groups,
            "active_members": int(members["active_members"]), "new_cards": int(members["new_cards"])}
