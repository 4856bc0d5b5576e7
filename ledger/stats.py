"""Statistics for one business day, overall or grouped by merchant, program, type or terminal.

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

GROUPS = {"merchant": "t.merchant_id", "program": "t.program", "type": "t.txn_type", "terminal": "t.terminal_id"}
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


# Range statistics (the portal's statistics page; ``switchd stats`` could call them too).
PERIODS = ("day", "week", "month")
RANGE_DAYS_MAX = 400


class StatsRangeError(ValueError):
    """A date range the statistics refuse; ``str()`` is one line."""


def check_range(date_from: dt.date, date_to: dt.date, period: str) -> None:
    """Refuse a reversed or too long range and an unknown period.

    >>> check_range(dt.date(2024, 1, 1), dt.date(2024, 1, 31), "week")
    >>> check_range(dt.date(2024, 1, 1), dt.date(2026, 1, 1), "day")
    Traceback (most recent call last):
    ...
    ledger.stats.StatsRangeError: a range of at most 400 days, got 732
    """
    if period not in PERIODS:
        raise StatsRangeError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
    if date_to < date_from:
        raise StatsRangeError("the range ends before it starts")
    days = (date_to - date_from).days + 1
    if days > RANGE_DAYS_MAX:
        raise StatsRangeError(f"a range of at most {RANGE_DAYS_MAX} days, got {days}")


def _scope(merchant_id: str | None, param: int) -> str:
    # Two fixed texts rather than "$n IS NULL OR ...": each keeps its own plan and index
    # (business_date first for the platform, merchant_id first for one merchant).
    return f"AND t.merchant_id = ${param}" if merchant_id is not None else ""


def _args(base: list[Any], merchant_id: str | None) -> list[Any]:
    return [*base, merchant_id] if merchant_id is not None else base


async def period_stats(conn: asyncpg.Connection | asyncpg.Pool, date_from: dt.date, date_to: dt.date,
                       period: str, merchant_id: str | None = None) -> list[dict[str, Any]]:
    """Per period (its first day) and transaction type: counts, amounts (money, points), points moved.

    Reads loyalty.transactions by business_date (index transactions_day_type) or, for one
    merchant, by (merchant_id, business_date) (index transactions_merchant_day).
    """
    check_range(date_from, date_to, period)
    rows = await conn.fetch(
        f"""SELECT date_trunc('{period}', t.business_date)::date AS period_start, t.txn_type,
                   count(*) AS transactions,
                   count(*) FILTER (WHERE t.reason = 'approved') AS approved,
                   coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
                       AND NOT (t.txn_type = ANY($3::text[])) AND t.currency IS NOT NULL), 0)::bigint
                       AS money_amount_minor,
                   coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
                       AND t.txn_type = ANY($3::text[])), 0)::bigint AS points_amount,
                   coalesce(sum(t.points_delta) FILTER (WHERE t.points_delta > 0), 0)::bigint AS points_credited,
                   coalesce(-sum(t.points_delta) FILTER (WHERE t.points_delta < 0), 0)::bigint AS points_debited
              FROM loyalty.transactions t
             WHERE t.business_date BETWEEN $1 AND $2 AND t.txn_type <> 'marker' {_scope(merchant_id, 4)}
             GROUP BY 1, 2 ORDER BY 1, 2""",
        *_args([date_from, date_to, list(POINTS_TYPES)], merchant_id))
    return [dict(r) for r in rows]


async def merchant_stats(conn: asyncpg.Connection | asyncpg.Pool, date_from: dt.date, date_to: dt.date,
                         merchant_id: str | None = None) -> list[dict[str, Any]]:
    """Per merchant over the range: counts, money and points amounts, fees, active members."""
    check_range(date_from, date_to, "day")
    rows = await conn.fetch(
        f"""SELECT coalesce(t.merchant_id, '-') AS merchant_id,
                   count(*) AS transactions,
                   count(*) FILTER (WHERE t.reason = 'approved') AS approved,
                   coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
                       AND NOT (t.txn_type = ANY($3::text[])) AND t.currency IS NOT NULL), 0)::bigint
                       AS money_amount_minor,
                   coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
                       AND t.txn_type = ANY($3::text[])), 0)::bigint AS points_amount,
                   coalesce(sum(t.fee_minor), 0)::bigint AS fees_minor,
                   count(DISTINCT t.card_id) FILTER (WHERE t.reason = 'approved') AS active_members
              FROM loyalty.transactions t
             WHERE t.business_date BETWEEN $1 AND $2 AND t.txn_type <> 'marker' {_scope(merchant_id, 4)}
             GROUP BY 1 ORDER BY 1""",
        *_args([date_from, date_to, list(POINTS_TYPES)], merchant_id))
    return [dict(r) for r in rows]


async def member_stats(conn: asyncpg.Connection | asyncpg.Pool, date_from: dt.date, date_to: dt.date,
                       period: str, merchant_id: str | None = None) -> dict[str, Any]:
    """Members per period (active: with an approved transaction; new: cards issued, platform-wide
    only, as a card belongs to no merchant) and active members per program over the range."""
    check_range(date_from, date_to, period)
    active = await conn.fetch(
        f"""SELECT date_trunc('{period}', t.business_date)::date AS period_start,
                   count(DISTINCT t.card_id) AS active_members
              FROM loyalty.transactions t
             WHERE t.business_date BETWEEN $1 AND $2 AND t.reason = 'approved' AND t.card_id IS NOT NULL
                   {_scope(merchant_id, 3)}
             GROUP BY 1 ORDER BY 1""",
        *_args([date_from, date_to], merchant_id))
    by_program = await conn.fetch(
        f"""SELECT coalesce(t.program, '-') AS program, count(DISTINCT t.card_id) AS active_members
              FROM loyalty.transactions t
             WHERE t.business_date BETWEEN $1 AND $2 AND t.reason = 'approved' AND t.card_id IS NOT NULL
                   {_scope(merchant_id, 3)}
             GROUP BY 1 ORDER BY 1""",
        *_args([date_from, date_to], merchant_id))
    new: dict[dt.date, int] = {}
    if merchant_id is None:
        # Calendar days in UTC, as day_stats counts them (index cards_created).
        for r in await conn.fetch(
                f"""SELECT date_trunc('{period}', (c.created_at AT TIME ZONE 'UTC')::date)::date AS period_start,
                           count(*) AS new_members
                      FROM loyalty.cards c
                     WHERE c.created_at >= $1::date::timestamp AT TIME ZONE 'UTC'
                       AND c.created_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'
                     GROUP BY 1""", date_from, date_to):
            new[r["period_start"]] = int(r["new_members"])
    periods: dict[dt.date, dict[str, Any]] = {}
    for r in active:
        periods[r["period_start"]] = {"period_start": r["period_start"],
                                      "active_members": int(r["active_members"]), "new_members": 0}
    for start, n in new.items():
        periods.setdefault(start, {"period_start": start, "active_members": 0, "new_members": 0})
        periods[start]["new_members"] = n
    return {"periods": [periods[k] for k in sorted(periods)], "new_counted": merchant_id is None,
            "by_program": [dict(r) for r in by_program]}
