"""The operator's revenue: one registry of income kinds, and the report that reads it.

Each :class:`IncomeKind` names the operator's income account (its ``purpose``; owner kind
``operator``), whether it holds money or points, and, when several kinds share one account,
which transactions belong to it. Adding a kind of income is one entry in :data:`KINDS`: the
report (``switchd report revenue``, the platform's revenue page) and the beancount export
(``ledger.export``: an ``Income:`` account per kind) follow.

Points income (breakage) is valued at the program's issue price: what the points were sold
for (specs/ACCOUNTING.md, "The operator's revenue").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.errors import SwitchdError

RANGE_DAYS_MAX = 400
ROWS_MAX = 20_000


@dataclass(frozen=True)
class IncomeKind:
    """One kind of income: its account purpose, unit, and (for a shared account) its transactions."""

    name: str
    label: str
    purpose: str
    unit: str  # "money" (minor units of the account's asset) or "points" (valued at the issue price)
    # A fixed SQL condition on the journal's transaction record ``t`` (NULL for journals without
    # one), for kinds that share an account; never user text.
    where: str = "true"


KINDS: tuple[IncomeKind, ...] = (
    IncomeKind("transaction_fees", "Transaction fees", "fee_income", "money",
               "coalesce(t.txn_type, '') <> 'fee' AND coalesce(t.channel, '') <> 'mall'"),
    IncomeKind("mall_sales", "Mall sales", "fee_income", "money",
               "coalesce(t.txn_type, '') <> 'fee' AND t.channel = 'mall'"),
    IncomeKind("promotion_fees", "Promotion fees", "fee_income", "money", "t.txn_type = 'fee'"),
    IncomeKind("voucher_sales", "Top-up card sales", "voucher_sales", "money"),
    IncomeKind("voucher_breakage", "Top-up card breakage", "voucher_breakage", "points"),
    IncomeKind("exchange_income", "Exchange between programs", "exchange_income", "money"),
    IncomeKind("points_breakage", "Points breakage", "breakage", "points"),
    IncomeKind("sv_breakage", "Stored-value breakage", "sv_breakage", "money"),
)

# What a merchant owes the operator in money outside points and stored value: end-of-day clearing
# counts the entries on a merchant's money clearing account against these accounts as its fees
# (a fee, or the price of top-up cards it bought).
MERCHANT_CHARGE_PURPOSES: tuple[str, ...] = ("fee_income", "voucher_sales")


def income_purposes() -> frozenset[str]:
    """Every operator account purpose that is income.

    >>> sorted(income_purposes())
    ['breakage', 'exchange_income', 'fee_income', 'sv_breakage', 'voucher_breakage', 'voucher_sales']
    """
    return frozenset(k.purpose for k in KINDS)


def kind_names() -> tuple[str, ...]:
    """The kinds' names, in registry order."""
    return tuple(k.name for k in KINDS)


def kind_case_sql() -> str:
    """An SQL expression naming the income kind of an entry on account ``a`` of a journal whose
    transaction record is ``t`` (NULL when the account is not income)."""
    arms = " ".join(f"WHEN a.owner_kind = 'operator' AND a.purpose = '{k.purpose}' AND ({k.where}) THEN '{k.name}'"
                    for k in KINDS)
    return f"(CASE {arms} END)"


class RevenueError(SwitchdError):
    """A report that cannot be made (a bad range); ``str()`` is one line."""


def _kind_sql(index: int, kind: IncomeKind) -> str:
    # Money: the entry is the income. Points: valued at the issue price of the program whose
    # points they are, in that program's currency.
    if kind.unit == "money":
        value, currency, program = "e.amount", "a.asset", "t.program"
        join = ""
    else:
        value, currency, program = "e.amount * p.issue_price_minor", "cur.asset", "p.code"
        join = ("JOIN loyalty.programs p ON p.points_asset = a.asset "
                "JOIN loyalty.currencies cur ON cur.numeric_code = p.currency")
    return f"""
SELECT {index} AS k, j.business_date AS day, t.merchant_id, {program} AS program, {currency} AS currency,
       sum({value})::bigint AS amount_minor
  FROM ledger.accounts a
  JOIN ledger.entries e ON e.account_id = a.id
  JOIN ledger.journals j ON j.id = e.journal_id
  {join}
  LEFT JOIN loyalty.transactions t ON t.journal_id = j.id
 WHERE a.owner_kind = 'operator' AND a.purpose = '{kind.purpose}'
   AND j.business_date BETWEEN $1 AND $2 AND ({kind.where})
 GROUP BY 1, 2, 3, 4, 5"""


def report_sql() -> str:
    """The report's statement: one branch per registered kind."""
    body = "\nUNION ALL".join(_kind_sql(i, k) for i, k in enumerate(KINDS))
    return f"SELECT * FROM ({body}) r WHERE amount_minor <> 0 ORDER BY day, k, merchant_id, program LIMIT {ROWS_MAX}"


def check_range(date_from: dt.date, date_to: dt.date) -> None:
    """Refuse a reversed range or one longer than RANGE_DAYS_MAX days."""
    if date_to < date_from:
        raise RevenueError(f"revenue: --to {date_to} is before --from {date_from}")
    days = (date_to - date_from).days + 1
    if days > RANGE_DAYS_MAX:
        raise RevenueError(f"revenue: a range of at most {RANGE_DAYS_MAX} days, got {days}")


async def report(conn: asyncpg.Connection | asyncpg.Pool, date_from: dt.date, date_to: dt.date) -> dict[str, Any]:
    """Income by business day, kind, merchant and program over [date_from, date_to], with totals.

    ``rows``: day, kind, label, merchant_id (None: not a merchant's, e.g. breakage), program,
    currency (asset), amount_minor. ``totals``: per kind and currency. ``days``: per day and currency.
    """
    check_range(date_from, date_to)
    records = await conn.fetch(report_sql(), date_from, date_to)
    rows = [{"day": r["day"].isoformat(), "kind": KINDS[r["k"]].name, "label": KINDS[r["k"]].label,
             "merchant_id": r["merchant_id"], "program": r["program"], "currency": r["currency"],
             "amount_minor": int(r["amount_minor"])} for r in records]
    totals: dict[tuple[str, str], int] = {}
    days: dict[tuple[str, str], int] = {}
    for row in rows:
        totals[(row["kind"], row["currency"])] = totals.get((row["kind"], row["currency"]), 0) + row["amount_minor"]
        days[(row["day"], row["currency"])] = days.get((row["day"], row["currency"]), 0) + row["amount_minor"]
    return {
        "from": date_from.isoformat(), "to": date_to.isoformat(), "rows": rows,
        "truncated": len(rows) >= ROWS_MAX,
        "totals": [{"kind": k.name, "label": k.label, "currency": cur, "amount_minor": amount}
                   for k in KINDS for (name, cur), amount in sorted(totals.items()) if name == k.name],
        "days": [{"day": d, "currency": cur, "amount_minor": amount} for (d, cur), amount in sorted(days.items())],
    }
