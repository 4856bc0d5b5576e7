"""Proofs that the books are right, as set-based SQL.

Each check returns the rows that break it (empty = the check passes):
every asset sums to zero, every cached balance equals the sum of its entries,
every held amount equals the pending holds behind it, no account is past its
limit, the points lots of every member account in a program with expiry sum to its balance
(and no other account has lots), every journal balances per asset, and every entry's balance after is its
account's running sum (entries in journal and leg order: journal ids are taken
after the accounts are locked, so an account's journals are in posting order).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Problem:
    check: str
    detail: str


CHECKS: dict[str, str] = {
    "asset_sums_to_zero": """
        SELECT asset, sum(posted) AS total FROM ledger.accounts GROUP BY asset HAVING sum(posted) <> 0
    """,
    "cached_balance_equals_entries": """
        SELECT a.id, a.posted, coalesce(e.total, 0) AS entries_total
          FROM ledger.accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger.entries GROUP BY account_id) e
                 ON e.account_id = a.id
         WHERE a.posted <> coalesce(e.total, 0)
    """,
    "held_equals_pending_holds": """
        WITH pending AS (
            SELECT h.debit_account_id AS account_id, h.amount FROM ledger.holds h
              JOIN ledger.accounts a ON a.id = h.debit_account_id
             WHERE h.state = 'pending' AND a.normal_side = 'credit'
            UNION ALL
            SELECT h.credit_account_id, h.amount FROM ledger.holds h
              JOIN ledger.accounts a ON a.id = h.credit_account_id
             WHERE h.state = 'pending' AND a.normal_side = 'debit'
        )
        SELECT a.id, a.held, coalesce(p.total, 0) AS pending_total
          FROM ledger.accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM pending GROUP BY account_id) p
                 ON p.account_id = a.id
         WHERE a.held <> coalesce(p.total, 0)
    """,
    "accounts_within_limit": """
        SELECT id, limit_mode, posted, held FROM ledger.accounts
         WHERE limit_mode = 'non_negative'
           AND (CASE normal_side WHEN 'credit' THEN posted ELSE -posted END) - held < 0
    """,
    "balance_after_is_running_sum": """
        SELECT journal_id, leg, account_id, balance_after, running FROM (
            SELECT e.journal_id, e.leg, e.account_id, e.balance_after,
                   sum(e.amount) OVER (PARTITION BY e.account_id ORDER BY e.journal_id, e.leg
                                       ROWS UNBOUNDED PRECEDING) AS running
              FROM ledger.entries e) x
         WHERE x.balance_after <> x.running
    """,
    "lots_sum_to_balances": """
        WITH lots AS (SELECT account_id, program, sum(remaining) AS total FROM loyalty.point_lots
                       GROUP BY account_id, program)
        SELECT a.id, a.asset, a.posted, coalesce(l.total, 0) AS lots_total,
               p.points_expiry_months IS NOT NULL AS expiring
          FROM ledger.accounts a
          JOIN loyalty.programs p ON p.points_asset = a.asset
          LEFT JOIN lots l ON l.account_id = a.id
         WHERE a.owner_kind = 'card' AND a.purpose = 'points'
           AND CASE WHEN p.points_expiry_months IS NOT NULL THEN a.posted <> coalesce(l.total, 0)
                    ELSE l.account_id IS NOT NULL END
    """,
    "journals_balance": """
        SELECT journal_id, asset, sum(amount) AS total FROM ledger.entries
         GROUP BY journal_id, asset HAVING sum(amount) <> 0
    """,
}


CHECK_NAMES = frozenset(CHECKS)


def bounded(sql: str, limit_rows: int) -> str:
    """A check's query returning at most ``limit_rows`` of its rows, planned to read them all.

    Under a plain LIMIT the planner expects the rows that break a check to come soon and picks
    plans that are cheap to start (ordered index scans, merge joins): for a check that passes,
    which is the usual case, they read everything in index order instead of one sequential
    pass (measured at 3.8 million entries: 7.0 s against 1.5 s). A materialised CTE is planned
    for all of its rows.

    >>> bounded("SELECT 1", 5)
    'WITH check_rows AS MATERIALIZED (SELECT 1) SELECT * FROM check_rows LIMIT 5'
    """
    return f"WITH check_rows AS MATERIALIZED ({sql.strip()}) SELECT * FROM check_rows LIMIT {int(limit_rows)}"


async def check_books(conn: asyncpg.Connection | asyncpg.Pool, limit_rows: int = 20) -> list[Problem]:
    """Run every check; return one Problem per offending row (at most ``limit_rows`` per check)."""
    problems: list[Problem] = []
    for name, sql in CHECKS.items():
        rows = await conn.fetch(bounded(sql, limit_rows))
        for r in rows:
            problems.append(Problem(name, ", ".join(f"{k}={v}" for k, v in r.items())))
    return problems
