"""Reads the operations need, each one round trip: the request's context, an original, its legs.

The context query fetches, for one request, everything a decision needs: the
open business day, merchant, program, currency, card, the member's accounts,
whether the idempotency key has posted before and, when the caller keeps
receipts (the switch's stored responses), the receipt under its receipt key:
a retransmission is recognised in the same round trip as everything else.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.accounts import StoredReceipt, stored_receipt
from ledger.batches import IN_CLOSED_BATCH_SQL
from ledger.coalesce import Coalescer

# One request's context, as a query over its parameters (pan, merchant, key, receipt key).
_CONTEXT_ROW = """
SELECT b.open_date,
       m.merchant_id, m.status AS merchant_status, m.earn_num, m.earn_den, m.fee_bps,
       m.clearing_points_account_id, m.clearing_money_account_id,
       p.code AS program, p.status AS program_status, p.points_asset, p.currency, p.issue_price_minor,
       p.redeem_value_minor, p.txn_max_points, p.lottery_price_points, p.prize_pool_account_id,
       cur.asset AS money_asset, cur.txn_max_minor, cur.fee_income_account_id,
       cur.memo_a_account_id, cur.memo_b_account_id, ast.scale AS money_scale,
       c.id AS card_id, c.status AS card_status, c.expiry,
       pa.id AS points_account_id, pa.posted AS points_posted, pa.held AS points_held,
       sa.id AS sv_account_id, sa.posted AS sv_posted, sa.held AS sv_held,
       j.id AS existing_journal_id, j.metadata AS existing_metadata,
       r.content_hash AS receipt_hash, r.payload AS receipt_payload
  FROM ledger.business_day b
  LEFT JOIN loyalty.merchants m ON m.merchant_id = q.merchant_id
  LEFT JOIN loyalty.programs p ON p.code = m.program
  LEFT JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
  LEFT JOIN ledger.assets ast ON ast.code = cur.asset
  LEFT JOIN loyalty.cards c ON c.pan = q.pan
  LEFT JOIN ledger.accounts pa ON pa.owner_kind = 'card' AND pa.owner_id = c.id::text
                              AND pa.purpose = 'points' AND pa.asset = p.points_asset
  LEFT JOIN ledger.accounts sa ON sa.owner_kind = 'card' AND sa.owner_id = c.id::text
                              AND sa.purpose = 'stored_value' AND sa.asset = cur.asset
  LEFT JOIN ledger.journals j ON j.idempotency_key = q.key
  LEFT JOIN ledger.receipts r ON r.idempotency_key = q.receipt_key
 WHERE b.singleton
"""
# Many requests' contexts in one statement (see ledger.coalesce). LATERAL ... LIMIT 1 keeps
# each request's lookups the index probes they are alone: the planner may not turn them
# into hash joins over whole tables, whatever it guesses about the array's length.
_CONTEXT_SQL = f"""
SELECT q.n, x.*
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
       WITH ORDINALITY AS q(pan, merchant_id, key, receipt_key, n)
 CROSS JOIN LATERAL ({_CONTEXT_ROW} LIMIT 1) x
"""


@dataclass(frozen=True)
class Context:
    """One request's world, as read in one round trip (a row of _CONTEXT_SQL)."""

    row: asyncpg.Record

    def __getattr__(self, name: str) -> Any:
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def business_date(self) -> dt.date:
        value: dt.date = self.row["open_date"]
        return value

    @property
    def existing(self) -> tuple[int, dict[str, Any]] | None:
        jid = self.row["existing_journal_id"]
        if jid is None:
            return None
        return int(jid), _json(self.row["existing_metadata"])

    @property
    def stored_receipt(self) -> StoredReceipt | None:
        """(content hash, payload) stored under the request's receipt key, if any.

        The payload is None for a receipt stored by reference to its journal.
        """
        return stored_receipt(self.row["receipt_hash"], self.row["receipt_payload"])

    @property
    def fees(self) -> dict[str, int]:
        return _json(self.row["fee_bps"]) if self.row["fee_bps"] is not None else {}

    def points_available(self) -> int:
        if self.row["points_account_id"] is None:
            return 0
        return int(self.row["points_posted"]) - int(self.row["points_held"])

    def sv_available(self) -> int:
        if self.row["sv_account_id"] is None:
            return 0
        return int(self.row["sv_posted"]) - int(self.row["sv_held"])


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        decoded: dict[str, Any] = json.loads(value)
        return decoded
    return dict(value)


def context_reader(pool: asyncpg.Pool, concurrency_max: int = 2) -> Coalescer:
    """Concurrent requests' contexts read together:
    ``Context(await reader.fetch(pan, merchant_id, key, receipt_key))``."""
    return Coalescer(pool, _CONTEXT_SQL, concurrency_max=concurrency_max)


async def read_context(reader: Coalescer, pan: str, merchant_id: str, key: str,
                       receipt_key: str | None = None) -> Context:
    """The request's context through a :func:`context_reader`; ``receipt_key`` also reads that receipt."""
    row = await reader.fetch(pan, merchant_id, key, receipt_key)
    assert row is not None, "ledger.business_day has no row"
    return Context(row)


@dataclass(frozen=True)
class Original:
    """An approved transaction as recorded in loyalty.transactions."""

    journal_id: int
    idempotency_key: str
    txn_type: str
    business_date: dt.date
    rrn: str | None
    terminal_id: str | None
    merchant_id: str | None
    card_id: int | None
    program: str | None
    amount: int
    currency: str | None
    original_journal_id: int | None


_ORIGINAL_COLUMNS = ("t.journal_id, t.idempotency_key, t.txn_type, t.business_date, t.rrn, t.terminal_id, "
                     "t.merchant_id, t.card_id, t.program, t.amount, t.currency, t.original_journal_id")


def _original(row: asyncpg.Record | None) -> Original | None:
    return None if row is None else Original(**dict(row))


async def original_for_compensation(conn: asyncpg.Connection | asyncpg.Pool,
                                    rrn: str) -> tuple[Original, bool] | None:
    """The approved transaction with this RRN, and whether its terminal batch is closed."""
    row = await conn.fetchrow(
        f"SELECT {_ORIGINAL_COLUMNS}, {IN_CLOSED_BATCH_SQL} AS in_closed_batch FROM loyalty.transactions t "
        "WHERE t.rrn=$1 AND t.journal_id IS NOT NULL", rrn)
    if row is None:
        return None
    values = dict(row)
    closed = bool(values.pop("in_closed_batch"))
    return Original(**values), closed


async def original_by_journal(conn: asyncpg.Connection | asyncpg.Pool, journal_id: int) -> Original | None:
    """The transaction a journal records."""
    return _original(await conn.fetchrow(
        f"SELECT {_ORIGINAL_COLUMNS} FROM loyalty.transactions t WHERE t.journal_id=$1", journal_id))


async def unposted_by_key(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> str | None:
    """The reason recorded for a request that posted nothing (a decline, an inquiry), or None."""
    value = await conn.fetchval(
        "SELECT reason FROM loyalty.transactions WHERE idempotency_key=$1 AND journal_id IS NULL "
        "ORDER BY id LIMIT 1", key)
    return None if value is None else str(value)


async def original_key_by_stan(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str,
                               stan: str) -> str | None:
    """Key of the terminal's latest request with this STAN (a reversal that names no original)."""
    key = await conn.fetchval(
        "SELECT idempotency_key FROM loyalty.transactions WHERE terminal_id = $1 AND stan = $2 "
        "AND txn_type NOT IN ('reversal', 'marker') ORDER BY id DESC LIMIT 1",
        terminal_id, stan,
    )
    return None if key is None else str(key)


async def journal_by_key(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> tuple[int, dict[str, Any]] | None:
    """(journal id, metadata) of the journal posted under ``key``."""
    row = await conn.fetchrow("SELECT id, metadata FROM ledger.journals WHERE idempotency_key=$1", key)
    return None if row is None else (int(row["id"]), _json(row["metadata"]))


@dataclass(frozen=True)
class PostedLeg:
    """One leg of a posted journal, with what its accounts are (for member/fee arithmetic)."""

    debit_account_id: int
    credit_account_id: int
    amount: int
    debit_role: str
    credit_role: str


_LEGS_SQL = """
        SELECT d.leg, d.account_id AS debit_id, c.account_id AS credit_id, c.amount,
               da.owner_kind || ':' || da.purpose AS d_role, ca.owner_kind || ':' || ca.purpose AS c_role
          FROM ledger.entries d
          JOIN ledger.entries c ON c.journal_id = d.journal_id AND c.leg = d.leg + 1
          JOIN ledger.accounts da ON da.id = d.account_id
          JOIN ledger.accounts ca ON ca.id = c.account_id
         WHERE d.journal_id = $1 AND d.leg % 2 = 1
"""


async def legs_of(conn: asyncpg.Connection | asyncpg.Pool, journal_id: int) -> list[PostedLeg]:
    """A journal's legs in order. Entries come in pairs: odd leg = debit side, even = credit side."""
    rows = await conn.fetch(_LEGS_SQL + " ORDER BY d.leg", journal_id)
    return [PostedLeg(r["debit_id"], r["credit_id"], r["amount"], r["d_role"], r["c_role"]) for r in rows]


@dataclass(frozen=True)
class Compensation:
    """A void, refund or reversal of an original that still stands (is not itself reversed)."""

    journal_id: int
    txn_type: str
    undo_units: int
    undo_legs: list[int]


_COMPENSATIONS_SQL = """
        SELECT t.journal_id, t.txn_type, coalesce(t.undo_units, 0) AS undo_units,
               coalesce(t.undo_legs, '{}') AS undo_legs
          FROM loyalty.transactions t
         WHERE t.original_journal_id = $1 AND t.journal_id IS NOT NULL
           AND t.txn_type IN ('void', 'refund', 'reversal')
           AND NOT EXISTS (SELECT 1 FROM loyalty.transactions r
                            WHERE r.original_journal_id = t.journal_id AND r.txn_type = 'reversal'
                              AND r.journal_id IS NOT NULL)
         ORDER BY t.journal_id
"""


async def standing(conn: asyncpg.Connection | asyncpg.Pool,
                   journal_id: int) -> tuple[list[Compensation], list[PostedLeg]]:
    """An original's standing compensations and its legs, in one round trip."""
    row = await conn.fetchrow(
        f"""
        SELECT (SELECT coalesce(json_agg(json_build_array(c.journal_id, c.txn_type, c.undo_units, c.undo_legs)
                                         ORDER BY c.journal_id), '[]')
                  FROM ({_COMPENSATIONS_SQL}) c) AS comps,
               (SELECT coalesce(json_agg(json_build_array(l.debit_id, l.credit_id, l.amount, l.d_role, l.c_role)
                                         ORDER BY l.leg), '[]')
                  FROM ({_LEGS_SQL}) l) AS legs
        """, journal_id)
    assert row is not None
    comps = [Compensation(int(j), str(t), int(u), [int(v) for v in legs]) for j, t, u, legs in json.loads(row["comps"])]
    legs = [PostedLeg(int(d), int(c), int(a), str(dr), str(cr)) for d, c, a, dr, cr in json.loads(row["legs"])]
    return comps, legs


async def reversed_by(conn: asyncpg.Connection | asyncpg.Pool, journal_id: int) -> int | None:
    """The journal of the reversal of ``journal_id``, if there is one."""
    value = await conn.fetchval(
        "SELECT journal_id FROM loyalty.transactions WHERE original_journal_id=$1 AND txn_type='reversal' "
        "AND journal_id IS NOT NULL ORDER BY journal_id LIMIT 1", journal_id)
    return None if value is None else int(value)


async def prizes(conn: asyncpg.Connection | asyncpg.Pool, program: str) -> list[tuple[str, int, int]]:
    """A program's lottery prize table: (code, points, weight), by code."""
    rows = await conn.fetch(
        "SELECT code, points, weight FROM loyalty.lottery_prizes WHERE program=$1 ORDER BY code", program)
    return [(r["code"], r["points"], r["weight"]) for r in rows]
