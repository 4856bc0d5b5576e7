"""Reconciliation: the book proofs of :mod:`ledger.audit` plus end-of-day proofs, set-based.

Each check is one SQL statement returning the rows that break it (none = the
check passes); a failure names those rows (``key=value`` pairs):

- every asset sums to zero, cached balances equal entries, holds, limits,
  journals balance (from :mod:`ledger.audit`);
- ``receipt_has_one_journal``: no two stored responses claim the same journal,
  and every stored response with a journal points at a financial transaction;
- ``journal_has_one_request``: every journal of a financial transaction of the
  day is claimed by exactly one stored response;
- ``batch_totals_match``: every closed terminal batch's totals, as the terminal
  sent them, still equal the host's, recomputed now;
- ``clearing_nets_to_zero`` (a cleared day): every merchant clearing account's
  and every operator exchange account's share of the day is zero after its settlement journal, each settlement moved
  exactly the stored net, the merchants' nets and the operator's side sum to
  zero, and the stored figures equal a recomputation from the transactions;
- ``holds_within_bound``: no hold is still pending past its expiry (plus a grace
  for the sweeper that expires it);
- ``records_match_journals``: every transaction record is what its journal says (the
  journals and entries are append-only, the records are not): each column against the
  journal's ``metadata.txn``, the member's points and stored-value changes and the fee
  against the journal's entries; every journal that describes a transaction has its
  record; a record without a journal (a decline, an inquiry) moved nothing. The problem
  names the record and the columns that differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger import audit, clearing
from ledger import db as ledger_db
from ledger.audit import Problem
from ledger.batches import CREDIT_TYPES, DEBIT_TYPES
from ledger.revenue import MERCHANT_CHARGE_PURPOSES

HOLD_GRACE_S = 300
# A merchant's charges (fees, top-up cards bought): the fee_minor of its records.
_CHARGES = ", ".join(f"'{p}'" for p in MERCHANT_CHARGE_PURPOSES if p != "fee_income")

_RECEIPTS_SQL = """
SELECT 'shared' AS problem, r.journal_id, string_agg(r.idempotency_key, ' ' ORDER BY r.idempotency_key) AS keys
  FROM ledger.receipts r WHERE r.journal_id IS NOT NULL
 GROUP BY r.journal_id HAVING count(*) > 1
UNION ALL
SELECT 'not_a_transaction', r.journal_id, r.idempotency_key
  FROM ledger.receipts r
 WHERE r.journal_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM loyalty.transactions t WHERE t.journal_id = r.journal_id)
"""

_REQUESTS_SQL = """
SELECT t.journal_id, t.idempotency_key, t.txn_type, count(r.idempotency_key) AS requests
  FROM loyalty.transactions t
  LEFT JOIN ledger.receipts r ON r.journal_id = t.journal_id
 WHERE t.journal_id IS NOT NULL AND ($1::date IS NULL OR t.business_date = $1)
 GROUP BY t.journal_id, t.idempotency_key, t.txn_type
HAVING count(r.idempotency_key) <> 1
"""

_BATCHES_SQL = """
WITH b AS (
    SELECT * FROM eod.terminal_batches WHERE status = 'closed'
), w AS (
    SELECT b.id AS batch_id, t.journal_id, t.txn_type, t.amount
      FROM b JOIN loyalty.transactions t
        ON t.terminal_id = b.terminal_id AND t.id > b.after_txn_id AND t.id <= b.upto_txn_id
       AND (b.after_business_date IS NULL OR t.business_date >= b.after_business_date)
     WHERE t.journal_id IS NOT NULL
), undo AS (
    SELECT u.original_journal_id AS journal_id,
           bool_or(u.txn_type = 'void' OR u.undo_units IS NULL) AS whole,
           coalesce(sum(u.undo_units) FILTER (WHERE u.txn_type = 'reversal'), 0) AS reversed_units
      FROM loyalty.transactions u
     WHERE u.original_journal_id IN (SELECT journal_id FROM w)
       AND u.journal_id IS NOT NULL AND u.txn_type IN ('void', 'reversal')
       AND NOT EXISTS (SELECT 1 FROM loyalty.transactions r
                        WHERE r.original_journal_id = u.journal_id AND r.txn_type = 'reversal'
                          AND r.journal_id IS NOT NULL)
     GROUP BY u.original_journal_id
), c AS (
    SELECT w.batch_id,
           CASE WHEN w.txn_type = ANY($1::text[]) THEN 'credit' WHEN w.txn_type = ANY($2::text[]) THEN 'debit' END
               AS side,
           CASE WHEN coalesce(undo.whole, false) THEN 0
                ELSE greatest(w.amount - coalesce(undo.reversed_units, 0), 0) END AS units
      FROM w LEFT JOIN undo ON undo.journal_id = w.journal_id
), host AS (
    SELECT batch_id,
           count(*) FILTER (WHERE side = 'credit' AND units > 0) AS cc,
           coalesce(sum(units) FILTER (WHERE side = 'credit'), 0) AS ca,
           count(*) FILTER (WHERE side = 'debit' AND units > 0) AS dc,
           coalesce(sum(units) FILTER (WHERE side = 'debit'), 0) AS da
      FROM c GROUP BY batch_id
)
SELECT b.id AS batch_id, b.terminal_id, b.batch_number,
       b.terminal_credit_count, coalesce(h.cc, 0) AS host_credit_count,
       b.terminal_credit_amount, coalesce(h.ca, 0) AS host_credit_amount,
       b.terminal_debit_count, coalesce(h.dc, 0) AS host_debit_count,
       b.terminal_debit_amount, coalesce(h.da, 0) AS host_debit_amount
  FROM b LEFT JOIN host h ON h.batch_id = b.id
 WHERE (b.terminal_credit_count, b.terminal_credit_amount, b.terminal_debit_count, b.terminal_debit_amount)
       IS DISTINCT FROM (coalesce(h.cc, 0), coalesce(h.ca, 0), coalesce(h.dc, 0), coalesce(h.da, 0))
"""

# The journals that make up day $1's clearing: its transactions' and its settlement journals.
_DAY_JOURNALS = """
day_j AS (
    SELECT journal_id FROM loyalty.transactions WHERE business_date = $1 AND journal_id IS NOT NULL
    UNION ALL
    SELECT j.id FROM eod.clearing_merchants cm
      JOIN ledger.journals j ON j.idempotency_key = 'settle:' || $1::date::text || ':' || cm.merchant_id
     WHERE cm.business_date = $1
)
"""

_CLEARING_ZERO_SQL = f"""
WITH {_DAY_JOURNALS},
acc AS (
    SELECT clearing_points_account_id AS account_id, merchant_id FROM loyalty.merchants
    UNION ALL
    SELECT clearing_money_account_id, merchant_id FROM loyalty.merchants
)
SELECT 'clearing_account_not_zero' AS problem, acc.merchant_id, e.account_id, sum(e.amount) AS day_sum
  FROM day_j JOIN ledger.entries e ON e.journal_id = day_j.journal_id
  JOIN acc ON acc.account_id = e.account_id
 GROUP BY acc.merchant_id, e.account_id HAVING sum(e.amount) <> 0
"""

# The operator's exchange accounts (ledger/loyalty/exchange.py) are cleared like merchants':
# each one's share of the day is zero after its program's exchange settlement journal.
_EXCHANGE_ZERO_SQL = """
WITH day_j AS (
    SELECT journal_id FROM loyalty.transactions WHERE business_date = $1 AND journal_id IS NOT NULL
    UNION ALL
    SELECT journal_id FROM eod.clearing_exchange WHERE business_date = $1 AND journal_id IS NOT NULL
)
SELECT 'exchange_account_not_zero' AS problem, a.owner_id AS program, e.account_id, sum(e.amount) AS day_sum
  FROM day_j JOIN ledger.entries e ON e.journal_id = day_j.journal_id
  JOIN ledger.accounts a ON a.id = e.account_id AND a.owner_kind = 'operator' AND a.purpose = 'exchange'
 GROUP BY a.owner_id, e.account_id HAVING sum(e.amount) <> 0
"""

_SETTLED_NET_SQL = """
SELECT 'settled_net_differs' AS problem, cm.merchant_id, cm.net_minor, coalesce(s.moved, 0) AS settled_minor,
       cm.journal_id
  FROM eod.clearing_merchants cm
  LEFT JOIN ledger.journals j ON j.idempotency_key = 'settle:' || $1::date::text || ':' || cm.merchant_id
  LEFT JOIN LATERAL (
      SELECT sum(e.amount) AS moved FROM ledger.entries e JOIN ledger.accounts a ON a.id = e.account_id
       WHERE e.journal_id = j.id AND a.owner_kind = 'merchant'
         AND a.purpose IN ('settlement_payable', 'settlement_receivable')) s ON true
 WHERE cm.business_date = $1
   AND (cm.net_minor <> coalesce(s.moved, 0) OR cm.journal_id IS DISTINCT FROM j.id)
"""

# Money: the merchants' nets plus everything the operator and members got out of
# the day (entries of the day's journals on every non-merchant money account) is zero.
_OPERATOR_SQL = f"""
WITH {_DAY_JOURNALS},
other AS (
    SELECT e.asset, sum(e.amount) AS total
      FROM day_j JOIN ledger.entries e ON e.journal_id = day_j.journal_id
      JOIN ledger.accounts a ON a.id = e.account_id
      JOIN ledger.assets s ON s.code = e.asset AND s.kind = 'money'
     WHERE a.owner_kind <> 'merchant'
     GROUP BY e.asset
), nets AS (
    SELECT currency_asset AS asset, sum(net_minor) AS total FROM eod.clearing_merchants
     WHERE business_date = $1 GROUP BY currency_asset
), runs AS (
    SELECT currency_asset AS asset, net_total_minor FROM eod.clearing_runs WHERE business_date = $1
)
SELECT 'merchants_and_operator_not_zero' AS problem, coalesce(n.asset, o.asset) AS asset,
       coalesce(n.total, 0) AS merchants_net_minor, coalesce(o.total, 0) AS operator_minor,
       r.net_total_minor AS run_total_minor
  FROM nets n FULL JOIN other o ON o.asset = n.asset
  LEFT JOIN runs r ON r.asset = coalesce(n.asset, o.asset)
 WHERE coalesce(n.total, 0) + coalesce(o.total, 0) <> 0
    OR r.net_total_minor IS DISTINCT FROM coalesce(n.total, 0)
"""

# The stored figures against a second derivation, from the member-side deltas
# the transactions recorded (not from the clearing accounts' entries).
_FIGURES_AGAIN_SQL = f"""
WITH tx AS ({clearing.TX_ROOT_SQL}),
again AS (
    SELECT merchant_id,
           coalesce(sum(points_delta) FILTER (WHERE root_type IN ('earn', 'topup')), 0) AS points_issued,
           -coalesce(sum(points_delta) FILTER (WHERE root_type = 'redeem'), 0) AS points_redeemed,
           coalesce(sum(money_delta_minor) FILTER (WHERE root_type = 'load'), 0) AS sv_loaded_minor,
           -coalesce(sum(money_delta_minor) FILTER (WHERE root_type = 'sv_purchase'), 0) AS sv_spent_minor,
           coalesce(sum(fee_minor), 0) AS fees_minor
      -- An exchange at a terminal is the exchange desk's, not the merchant's (as clearing counts
      -- it): a merchant whose day is only exchanges has no figures to compare.
      FROM tx WHERE root_type IS DISTINCT FROM 'exchange' GROUP BY merchant_id
)
SELECT 'figures_differ' AS problem, coalesce(cm.merchant_id, a.merchant_id) AS merchant_id,
       cm.points_issued, a.points_issued AS points_issued_recomputed,
       cm.points_redeemed, a.points_redeemed AS points_redeemed_recomputed,
       cm.sv_loaded_minor, a.sv_loaded_minor AS sv_loaded_recomputed,
       cm.sv_spent_minor, a.sv_spent_minor AS sv_spent_recomputed,
       cm.fees_minor, a.fees_minor AS fees_recomputed,
       cm.net_minor, cm.redeemed_minor + cm.sv_spent_minor - cm.issued_minor - cm.sv_loaded_minor - cm.fees_minor
           AS net_from_figures
  FROM (SELECT * FROM eod.clearing_merchants WHERE business_date = $1) cm
  FULL JOIN (SELECT * FROM again WHERE merchant_id IN (SELECT merchant_id FROM loyalty.merchants)) a
    ON a.merchant_id = cm.merchant_id
 WHERE (cm.points_issued, cm.points_redeemed, cm.sv_loaded_minor, cm.sv_spent_minor, cm.fees_minor)
       IS DISTINCT FROM (a.points_issued, a.points_redeemed, a.sv_loaded_minor, a.sv_spent_minor, a.fees_minor)
    OR cm.issued_minor <> cm.points_issued * cm.issue_price_minor
    OR cm.redeemed_minor <> cm.points_redeemed * cm.redeem_value_minor
    OR cm.net_minor <> cm.redeemed_minor + cm.sv_spent_minor - cm.issued_minor - cm.sv_loaded_minor - cm.fees_minor
"""

# The columns the trigger (ledger/sql/loyalty.record_journals.sql) writes from a journal, as it
# writes them; a record that differs in one of them was changed after its journal.
_RECORD_COLUMNS = (
    ("idempotency_key", "j.idempotency_key"),
    ("business_date", "j.business_date"),
    ("txn_type", "x->>'type'"),
    ("reason", "coalesce(x->>'reason', 'approved')"),
    ("rrn", "x->>'rrn'"),
    ("stan", "x->>'stan'"),
    ("terminal_id", "x->>'terminal_id'"),
    ("merchant_id", "x->>'merchant_id'"),
    ("card_id", "(x->>'card_id')::bigint"),
    ("program", "x->>'program'"),
    ("amount", "coalesce((x->>'amount')::bigint, 0)"),
    ("currency", "x->>'currency'"),
    ("points_delta", "coalesce((x->>'points_delta')::bigint, 0)"),
    ("money_delta_minor", "coalesce((x->>'money_delta_minor')::bigint, 0)"),
    ("fee_minor", "coalesce((x->>'fee_minor')::bigint, 0)"),
    ("prize_code", "x->>'prize_code'"),
    ("original_journal_id", "(x->>'original_journal_id')::bigint"),
    ("undo_units", "(x->>'undo_units')::bigint"),
    ("channel", "coalesce(x->>'channel', 'terminal')"),
    ("operator_ref", "x->>'operator_ref'"),
    ("target_program", "x->>'target_program'"),
    ("target_points_delta", "coalesce((x->>'target_points_delta')::bigint, 0)"),
    ("rate_num", "(x->>'rate_num')::bigint"),
    ("rate_den", "(x->>'rate_den')::bigint"),
    ("rate_fee_bps", "(x->>'rate_fee_bps')::integer"),
)
_DIFFERS = ", ".join(f"CASE WHEN t.{col} IS DISTINCT FROM {expr} THEN '{col}' END" for col, expr in _RECORD_COLUMNS)

_RECORDS_SQL = f"""
WITH t AS (
    SELECT * FROM loyalty.transactions
     WHERE journal_id IS NOT NULL AND ($1::date IS NULL OR business_date = $1)
), moved AS (
    -- What each journal did to its record's card (points: in the record's program; an exchange's
    -- target points: in its target program), and to the operator's fee income.
    SELECT e.journal_id,
           sum(e.amount) FILTER (WHERE a.owner_kind = 'card' AND a.owner_id = t.card_id::text
                                   AND a.purpose = 'points' AND a.asset = 'PTS:' || t.program) AS points,
           sum(e.amount) FILTER (WHERE a.owner_kind = 'card' AND a.owner_id = t.card_id::text
                                   AND a.purpose = 'points' AND a.asset = 'PTS:' || t.target_program) AS target,
           sum(e.amount) FILTER (WHERE a.owner_kind = 'card' AND a.owner_id = t.card_id::text
                                   AND a.purpose = 'stored_value') AS money,
           sum(e.amount) FILTER (WHERE a.id IN (SELECT fee_income_account_id FROM loyalty.currencies)
                                    OR (a.owner_kind = 'operator' AND a.purpose IN ({_CHARGES}))) AS fee
      FROM t JOIN ledger.entries e ON e.journal_id = t.journal_id
      JOIN ledger.accounts a ON a.id = e.account_id
     GROUP BY e.journal_id
), checked AS (
    SELECT t.id AS record_id, t.journal_id, j.id IS NULL AS no_journal, x IS NULL AS not_described,
           array_remove(ARRAY[{_DIFFERS},
               CASE WHEN coalesce(m.points, 0) <> t.points_delta THEN 'points_delta<>entries' END,
               CASE WHEN coalesce(m.target, 0) <> t.target_points_delta THEN 'target_points_delta<>entries' END,
               CASE WHEN coalesce(m.money, 0) <> t.money_delta_minor THEN 'money_delta_minor<>entries' END,
               CASE WHEN coalesce(m.fee, 0) <> t.fee_minor THEN 'fee_minor<>entries' END], NULL) AS differs
      FROM t LEFT JOIN ledger.journals j ON j.id = t.journal_id
      LEFT JOIN LATERAL (SELECT j.metadata->'txn' AS x) d ON true
      LEFT JOIN moved m ON m.journal_id = t.journal_id
)
SELECT 'record_differs_from_journal' AS problem, record_id, journal_id,
       CASE WHEN no_journal THEN 'no such journal' WHEN not_described THEN 'journal describes no transaction'
            ELSE array_to_string(differs, ' ') END AS columns
  FROM checked WHERE no_journal OR not_described OR cardinality(differs) > 0
UNION ALL
SELECT 'journal_without_record', NULL, j.id, j.idempotency_key
  FROM ledger.journals j
 WHERE j.metadata ? 'txn' AND ($1::date IS NULL OR j.business_date = $1)
   AND NOT EXISTS (SELECT 1 FROM loyalty.transactions r WHERE r.journal_id = j.id)
UNION ALL
SELECT 'unposted_record_moved_value', r.id, NULL, r.txn_type
  FROM loyalty.transactions r
 WHERE r.journal_id IS NULL AND ($1::date IS NULL OR r.business_date = $1)
   AND (r.points_delta, r.money_delta_minor, r.fee_minor) <> (0, 0, 0)
"""

_HOLDS_SQL = """
SELECT id AS hold_id, debit_account_id, credit_account_id, amount, expires_at
  FROM ledger.holds WHERE state = 'pending' AND expires_at < now() - make_interval(secs => $1)
 ORDER BY id
"""

CHECK_NAMES = frozenset(audit.CHECK_NAMES | {
    "receipt_has_one_journal", "journal_has_one_request", "batch_totals_match", "clearing_nets_to_zero",
    "holds_within_bound", "records_match_journals",
})


@dataclass(frozen=True)
class ReconReport:
    """Every check that ran and every problem found."""

    business_date: dt.date | None
    checks: list[str]
    problems: list[Problem]
    cleared: bool

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(name: str, rows: list[asyncpg.Record]) -> list[Problem]:
    return [Problem(name, ", ".join(f"{k}={v}" for k, v in r.items())) for r in rows]


# Checks run side by side on this many connections of a pool (one exported snapshot): the day's
# heaviest (records against journals, running sums) each take a connection of their own.
CONNECTIONS_MAX = 2
# Heaviest first, so the connections finish together (measured at a million journals, seconds);
# the others are a second or less each.
_WEIGHT = {"records_match_journals": 11.0, "balance_after_is_running_sum": 7.5, "journals_balance": 1.6,
           "clearing_nets_to_zero": 1.5, "cached_balance_equals_entries": 1.3, "receipt_has_one_journal": 1.3,
           "journal_has_one_request": 1.0}
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


@dataclass(frozen=True)
class _Query:
    check: str
    sql: str
    args: tuple[Any, ...]


def _queries(day: dt.date | None, limit_rows: int, hold_grace_s: int, cleared: bool) -> list[_Query]:
    """Every check's statements, in report order."""
    def q(check: str, sql: str, *args: Any) -> _Query:
        return _Query(check, audit.bounded(sql, limit_rows), args)

    out = [q(name, sql) for name, sql in audit.CHECKS.items()]
    out += [q("receipt_has_one_journal", _RECEIPTS_SQL), q("journal_has_one_request", _REQUESTS_SQL, day),
            q("batch_totals_match", _BATCHES_SQL, list(CREDIT_TYPES), list(DEBIT_TYPES))]
    if cleared:
        out += [q("clearing_nets_to_zero", sql, day) for sql in
                (_CLEARING_ZERO_SQL, _EXCHANGE_ZERO_SQL, _SETTLED_NET_SQL, _OPERATOR_SQL, _FIGURES_AGAIN_SQL)]
    out += [q("holds_within_bound", _HOLDS_SQL, hold_grace_s), q("records_match_journals", _RECORDS_SQL, day)]
    return out


async def run(db: asyncpg.Connection | asyncpg.Pool, day: dt.date | None, limit_rows: int = 20,
              hold_grace_s: int = HOLD_GRACE_S, connections_max: int = CONNECTIONS_MAX) -> ReconReport:
    """Run every check (the day-scoped ones for ``day``; all days when None).

    Given a pool, the checks run on up to ``connections_max`` of its connections at once (never
    more than the pool has), all reading one snapshot; given a connection, one after another.
    """
    # One snapshot for every check (repeatable read): postings that commit meanwhile are seen by
    # all of them or by none, so no check compares what another did not see.
    pool = db if isinstance(db, asyncpg.Pool) else None
    async with contextlib.AsyncExitStack() as stack:
        first = db if pool is None else await stack.enter_async_context(pool.acquire())
        await stack.enter_async_context(first.transaction(isolation="repeatable_read", readonly=True))
        # Every check reads a large share of its tables: hash joins over sequential
        # scans. A misestimated nested loop of index probes (the planner cannot see
        # that "the day" is a million rows) costs minutes of random reads at scale.
        await ledger_db.for_whole_day_scans(first)
        conns = [first]
        wanted = 1 if pool is None else max(1, min(connections_max, pool.get_max_size()))
        if wanted > 1:
            snapshot = str(await first.fetchval("SELECT pg_export_snapshot()"))
            if not _SNAPSHOT_ID.match(snapshot):
                raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
            assert pool is not None
            for _ in range(wanted - 1):
                other = await stack.enter_async_context(pool.acquire())
                await stack.enter_async_context(other.transaction(isolation="repeatable_read", readonly=True))
                await other.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # before any query of it
                await ledger_db.for_whole_day_scans(other)
                conns.append(other)
        cleared = day is not None and await clearing.is_cleared(first, day)
        queries = _queries(day, limit_rows, hold_grace_s, cleared)
        found = await _run_side_by_side(conns, queries)
    checks = sorted(CHECK_NAMES)
    if not cleared:
        checks.remove("clearing_nets_to_zero")
    problems = [p for q, rows in zip(queries, found, strict=True) for p in _rows(q.check, rows)]
    return ReconReport(day, checks, problems, cleared)


async def _run_side_by_side(conns: list[asyncpg.Connection], queries: list[_Query]) -> list[list[asyncpg.Record]]:
    """Each query's rows (in the order given), the heaviest started first, one per free connection."""
    found: list[list[asyncpg.Record]] = [[] for _ in queries]
    todo = sorted(range(len(queries)), key=lambda i: -_WEIGHT.get(queries[i].check, 0.0))

    async def worker(conn: asyncpg.Connection) -> None:
        while todo:
            i = todo.pop(0)
            found[i] = list(await conn.fetch(queries[i].sql, *queries[i].args))

    async with asyncio.TaskGroup() as group:
        for conn in conns:
            group.create_task(worker(conn))
    return found
