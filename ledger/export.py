"""Export one business day's journals for accountants: beancount or CSV.

Beancount's sign convention is the debit-positive one, ours credit-positive,
so every amount is negated on the way out. The file opens every account it
touches, carries each account's balance before the day in one opening
transaction, then the day's journals, then a ``balance`` assertion per
account as of the next morning, so ``bean-check`` proves our balances.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal
from typing import Any

import asyncpg

from ledger import revenue

_ROOT = {"credit": "Liabilities", "debit": "Assets"}
_INCOME_PURPOSES = revenue.income_purposes()


def commodity(asset: str) -> str:
    """A beancount commodity name for an asset code.

    >>> commodity("PTS:GOLD"), commodity("CNY")
    ('PTS.GOLD', 'CNY')
    """
    name = re.sub(r"[^A-Z0-9'._-]", ".", asset.upper())
    if not name[0].isalpha():
        name = "X" + name
    return name[:24]


def account_name(row: asyncpg.Record | dict[str, Any]) -> str:
    """``Liabilities:Member:<owner>:<purpose>:<asset>``-style names, beancount-safe; the operator's
    income accounts (ledger.revenue) under ``Income``."""

    def part(text: str) -> str:
        cleaned = re.sub(r"[^A-Za-z0-9-]", "-", str(text))
        return ("X" + cleaned) if not cleaned[0].isupper() else cleaned

    root = _ROOT[str(row["normal_side"])]
    if row["owner_kind"] == "operator" and row["purpose"] in _INCOME_PURPOSES:
        root = "Income"
    return ":".join(
        [root, part(str(row["owner_kind"]).title()), part(row["owner_id"]),
         part(row["purpose"]), part(commodity(row["asset"]).replace(".", "-")), f"A{row['id']}"]
    )


def income_account(base: str, kind: str) -> str:
    """The sub-account of an income account for one kind of income (ledger.revenue.KINDS).

    >>> income_account("Income:Operator:CNY:Xfee-income:CNY:A3", "mall_sales")
    'Income:Operator:CNY:Xfee-income:CNY:A3:Mall-sales'
    """
    return f"{base}:{kind.replace('_', '-').capitalize()}"


def _amount(minor: int, scale: int) -> str:
    return str(Decimal(minor).scaleb(-scale)) if scale else str(minor)


async def _day_rows(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT j.id AS journal_id, j.idempotency_key, j.kind, j.created_at, e.leg, e.account_id,
                  e.asset, e.amount, e.balance_after, {revenue.kind_case_sql()} AS income_kind
             FROM ledger.journals j JOIN ledger.entries e ON e.journal_id = j.id
             JOIN ledger.accounts a ON a.id = e.account_id
             LEFT JOIN loyalty.transactions t ON t.journal_id = j.id
            WHERE j.business_date = $1 ORDER BY j.id, e.leg""",
        day,
    )


async def beancount(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> str:
    """The day's journals as a beancount document (see module docstring)."""
    rows = await _day_rows(conn, day)
    accounts = await conn.fetch(
        """WITH sums AS (
               -- One pass over the entries up to the day, not two sub-queries per account.
               SELECT e.account_id,
                      coalesce(sum(e.amount) FILTER (WHERE j.business_date < $1), 0) AS before,
                      sum(e.amount) AS after
                 FROM ledger.entries e JOIN ledger.journals j ON j.id = e.journal_id
                WHERE j.business_date <= $1
                GROUP BY e.account_id)
           SELECT a.id, a.owner_kind, a.owner_id, a.purpose, a.asset, a.normal_side, s.scale,
                  sums.before, sums.after
             FROM sums JOIN ledger.accounts a ON a.id = sums.account_id
             JOIN ledger.assets s ON s.code = a.asset
            ORDER BY a.id""",
        day,
    )
    by_id = {a["id"]: a for a in accounts}
    out = io.StringIO()
    opened = day - dt.timedelta(days=1)
    out.write(f"; switchd ledger export, business date {day.isoformat()}\n")
    out.write('option "operating_currency" "CNY"\n\n')
    for a in accounts:
        out.write(f"{opened.isoformat()} open {account_name(a)} {commodity(a['asset'])}\n")
    # Each kind of income its own account: a sub-account of the ledger's income account, so the
    # parent's balance assertion (which includes its children) still proves the ledger's.
    for account_id, kind in sorted({(r["account_id"], r["income_kind"]) for r in rows if r["income_kind"]}):
        a = by_id[account_id]
        out.write(f"{opened.isoformat()} open {income_account(account_name(a), kind)} {commodity(a['asset'])}\n")
    out.write(f"{opened.isoformat()} open Equity:Opening-Balances\n\n")
    openers = [a for a in accounts if a["before"] != 0]
    if openers:
        out.write(f'{opened.isoformat()} * "opening balances before {day.isoformat()}"\n')
        for a in openers:
            out.write(f"  {account_name(a)}  {_amount(-a['before'], a['scale'])} {commodity(a['asset'])}\n")
            out.write(f"  Equity:Opening-Balances  {_amount(a['before'], a['scale'])} {commodity(a['asset'])}\n")
        out.write("\n")
    current: int | None = None
    for r in rows:
        if r["journal_id"] != current:
            current = r["journal_id"]
            key = r["idempotency_key"].replace('"', "'")
            out.write(f'\n{day.isoformat()} * "{r["kind"]}" "{key}"\n  journal: "{r["journal_id"]}"\n')
        a = by_id[r["account_id"]]
        name = account_name(a) if not r["income_kind"] else income_account(account_name(a), r["income_kind"])
        out.write(f"  {name}  {_amount(-r['amount'], a['scale'])} {commodity(a['asset'])}\n")
    out.write("\n")
    nxt = day + dt.timedelta(days=1)
    for a in accounts:
        out.write(f"{nxt.isoformat()} balance {account_name(a)}  {_amount(-a['after'], a['scale'])} "
                  f"{commodity(a['asset'])}\n")
    return out.getvalue()


async def csv_text(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> str:
    """One row per entry: journal, kind, key, leg, account, asset, amount (credit positive), balance after."""
    rows = await _day_rows(conn, day)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["business_date", "journal_id", "kind", "idempotency_key", "created_at", "leg", "account_id",
                "asset", "amount", "balance_after"])
    for r in rows:
        w.writerow([day.isoformat(), r["journal_id"], r["kind"], r["idempotency_key"], r["created_at"].isoformat(),
                    r["leg"], r["account_id"], r["asset"], r["amount"], r["balance_after"]])
    return out.getvalue()
