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

from ledger.errors import SwitchdError

GROUPS = {"merchant": "t.merchant_id", "program": "t.program", "type": "t.txn_type", "terminal": "t.terminal_id",
          "channel": "t.channel"}
POINTS_TYPES = ("redeem", "topup", "lottery", "voucher_redeem", "exchange")


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
#
# A cleared business day never changes again (its journals are posted, cut over and
# cleared), so its figures are rolled up once into eod.stats_daily (sums per merchant
# and type) and eod.stats_active_cards (the cards active per program): the platform's
# figures over a range read the roll-up for those days and loyalty.transactions for the
# rest. A day is rolled up on the first read that needs it (roll_up_day); one merchant's
# figures are read live, through the (merchant_id, business_date) index.
PERIODS = ("day", "week", "month")
RANGE_DAYS_MAX = 400


class StatsRangeError(SwitchdError, ValueError):
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


_FIGURES = """count(*) AS transactions,
       count(*) FILTER (WHERE t.reason = 'approved') AS approved,
       coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
           AND NOT (t.txn_type = ANY($2::text[])) AND t.currency IS NOT NULL), 0)::bigint AS money_amount_minor,
       coalesce(sum(t.amount) FILTER (WHERE t.reason = 'approved'
           AND t.txn_type = ANY($2::text[])), 0)::bigint AS points_amount,
       coalesce(sum(t.points_delta) FILTER (WHERE t.points_delta > 0), 0)::bigint AS points_credited,
       coalesce(-sum(t.points_delta) FILTER (WHERE t.points_delta < 0), 0)::bigint AS points_debited,
       coalesce(sum(t.fee_minor), 0)::bigint AS fees_minor"""
SUMS = ("transactions", "approved", "money_amount_minor", "points_amount", "points_credited", "points_debited",
        "fees_minor")


async def roll_up_day(conn: asyncpg.Connection, day: dt.date) -> bool:
    """Roll a cleared, closed day's figures up (once; False when already done). The caller
    checks that the day is cleared: its transactions must not change any more."""
    async with conn.transaction():
        if await conn.fetchval("INSERT INTO eod.stats_days(business_date) VALUES ($1) ON CONFLICT DO NOTHING "
                               "RETURNING business_date", day) is None:
            return False
        await conn.execute(
            f"""INSERT INTO eod.stats_daily(business_date, merchant_id, txn_type, {', '.join(SUMS)})
                SELECT $1, coalesce(t.merchant_id, '-'), t.txn_type, {_FIGURES}
                  FROM loyalty.transactions t WHERE t.business_date = $1 AND t.txn_type <> 'marker'
                 GROUP BY 2, 3""", day, list(POINTS_TYPES))
        await conn.execute(
            """INSERT INTO eod.stats_active_cards(business_date, program, card_id)
               SELECT DISTINCT $1::date, coalesce(t.program, '-'), t.card_id FROM loyalty.transactions t
                WHERE t.business_date = $1 AND t.reason = 'approved' AND t.card_id IS NOT NULL""", day)
    return True


async def _split_days(pool: asyncpg.Pool, date_from: dt.date, date_to: dt.date) -> tuple[list[dt.date], list[dt.date]]:
    """The range's days as (rolled up, read live); cleared closed days not yet rolled up are rolled now."""
    async with pool.acquire() as conn:
        for r in await conn.fetch(
                """SELECT DISTINCT c.business_date FROM eod.clearing_runs c
                    WHERE c.business_date BETWEEN $1 AND $2
                      AND c.business_date < (SELECT open_date FROM ledger.business_day WHERE singleton)
                      AND NOT EXISTS (SELECT 1 FROM eod.stats_days s WHERE s.business_date = c.business_date)""",
                date_from, date_to):
            try:
                await roll_up_day(conn, r["business_date"])
            except asyncpg.ReadOnlySQLTransactionError:
                # A standby (the read-only DSN): the day is read live until the primary rolls it up.
                break
        rolled = {r["business_date"] for r in await conn.fetch(
            "SELECT business_date FROM eod.stats_days WHERE business_date BETWEEN $1 AND $2", date_from, date_to)}
    days = [date_from + dt.timedelta(days=n) for n in range((date_to - date_from).days + 1)]
    return sorted(rolled), [d for d in days if d not in rolled]


def _merge(rows: list[asyncpg.Record], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of the roll-up and of the live query summed per key, in key order."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[k] for k in keys)
        if key not in out:
            out[key] = {**{k: r[k] for k in keys}, **{k: 0 for k in SUMS}}
        for k in SUMS:
            out[key][k] += int(r[k])
    return [out[k] for k in sorted(out)]


async def period_stats(pool: asyncpg.Pool, date_from: dt.date, date_to: dt.date, period: str,
                       merchant_id: str | None = None) -> list[dict[str, Any]]:
    """Per period (its first day) and transaction type: counts, amounts (money, points), points moved, fees."""
    check_range(date_from, date_to, period)
    bucket = f"date_trunc('{period}', t.business_date)::date"
    if merchant_id is not None:
        rows = await pool.fetch(
            f"""SELECT {bucket} AS period_start, t.txn_type, {_FIGURES} FROM loyalty.transactions t
                 WHERE t.merchant_id = $1 AND t.business_date BETWEEN $3 AND $4 AND t.txn_type <> 'marker'
                 GROUP BY 1, 2""", merchant_id, list(POINTS_TYPES), date_from, date_to)
        return _merge(list(rows), ("period_start", "txn_type"))
    rolled, live = await _split_days(pool, date_from, date_to)
    rows = list(await pool.fetch(
        f"""SELECT {bucket} AS period_start, t.txn_type, {', '.join(f'sum(t.{k})::bigint AS {k}' for k in SUMS)}
              FROM eod.stats_daily t WHERE t.business_date = ANY($1::date[]) GROUP BY 1, 2""", rolled))
    rows += await pool.fetch(
        f"""SELECT {bucket} AS period_start, t.txn_type, {_FIGURES} FROM loyalty.transactions t
             WHERE t.business_date = ANY($1::date[]) AND t.txn_type <> 'marker' GROUP BY 1, 2""",
        live, list(POINTS_TYPES))
    return _merge(rows, ("period_start", "txn_type"))


async def merchant_stats(pool: asyncpg.Pool, date_from: dt.date, date_to: dt.date,
                         merchant_id: str | None = None) -> list[dict[str, Any]]:
    """Per merchant over the range: counts, money and points amounts, points moved, fees."""
    check_range(date_from, date_to, "day")
    if merchant_id is not None:
        rows = await pool.fetch(
            f"""SELECT t.merchant_id, {_FIGURES} FROM loyalty.transactions t
                 WHERE t.merchant_id = $1 AND t.business_date BETWEEN $3 AND $4 AND t.txn_type <> 'marker'
                 GROUP BY 1""", merchant_id, list(POINTS_TYPES), date_from, date_to)
        return _merge(list(rows), ("merchant_id",))
    rolled, live = await _split_days(pool, date_from, date_to)
    rows = list(await pool.fetch(
        f"""SELECT t.merchant_id, {', '.join(f'sum(t.{k})::bigint AS {k}' for k in SUMS)}
              FROM eod.stats_daily t WHERE t.business_date = ANY($1::date[]) GROUP BY 1""", rolled))
    rows += await pool.fetch(
        f"""SELECT coalesce(t.merchant_id, '-') AS merchant_id, {_FIGURES} FROM loyalty.transactions t
             WHERE t.business_date = ANY($1::date[]) AND t.txn_type <> 'marker' GROUP BY 1""",
        live, list(POINTS_TYPES))
    return _merge(rows, ("merchant_id",))


async def member_stats(pool: asyncpg.Pool, date_from: dt.date, date_to: dt.date, period: str,
                       merchant_id: str | None = None) -> dict[str, Any]:
    """Members per period (active: with an approved transaction; new: cards issued, platform-wide
    only, as a card belongs to no merchant) and active members per program over the range."""
    check_range(date_from, date_to, period)
    bucket = f"date_trunc('{period}', x.business_date)::date"
    if merchant_id is not None:
        source = """SELECT t.business_date, coalesce(t.program, '-') AS program, t.card_id
                      FROM loyalty.transactions t
                     WHERE t.merchant_id = $1 AND t.business_date BETWEEN $2 AND $3 AND t.reason = 'approved'
                       AND t.card_id IS NOT NULL"""
        args: list[Any] = [merchant_id, date_from, date_to]
    else:
        rolled, live = await _split_days(pool, date_from, date_to)
        source = """SELECT a.business_date, a.program, a.card_id FROM eod.stats_active_cards a
                     WHERE a.business_date = ANY($1::date[])
                    UNION ALL
                    SELECT t.business_date, coalesce(t.program, '-'), t.card_id FROM loyalty.transactions t
                     WHERE t.business_date = ANY($2::date[]) AND t.reason = 'approved' AND t.card_id IS NOT NULL"""
        args = [rolled, live]
    # One pass for both: distinct cards per period and per program (grouping sets).
    counted = await pool.fetch(
        f"""SELECT {bucket} AS period_start, x.program, GROUPING(x.program) AS per_period,
                   count(DISTINCT x.card_id) AS active_members
              FROM ({source}) x GROUP BY GROUPING SETS (({bucket}), (x.program))""", *args)
    active = sorted((r for r in counted if r["per_period"]), key=lambda r: r["period_start"])
    by_program = sorted(({"program": r["program"], "active_members": r["active_members"]}
                         for r in counted if not r["per_period"]), key=lambda r: str(r["program"]))
    new: dict[dt.date, int] = {}
    if merchant_id is None:
        # Calendar days in UTC, as day_stats counts them (index cards_created).
        for r in await pool.fetch(
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
            "by_program": by_program}
