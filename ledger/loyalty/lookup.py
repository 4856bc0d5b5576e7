"""Reads the operations need, each one round trip: the request's context, an original, its legs.

The context query fetches, for one request, everything a decision needs: the
open business day, merchant, program, currency, card, the member's accounts,
whether the idempotency key has posted before and, when the caller keeps
receipts (the switch's stored responses), the receipt under its receipt key:
a retransmission is recognised in the same round trip as everything else. For
a void or refund it also reads the original its RRN names, and what stands
against that original (``loyalty.standing``): a void or refund decides without
another round trip, and its guard catches a standing that changed meanwhile.
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
from ledger.loyalty.exchange_terms import COLUMNS as TERMS_COLUMNS
from ledger.loyalty.exchange_terms import Terms, terms_select

_ORIGINAL_COLUMNS = ("t.journal_id, t.idempotency_key, t.txn_type, t.business_date, t.rrn, t.terminal_id, "
                     "t.merchant_id, t.card_id, t.program, t.amount, t.currency, t.original_journal_id")
_ORIGINAL_FIELDS = tuple(c.strip().removeprefix("t.") for c in _ORIGINAL_COLUMNS.split(","))

# What loyalty.standing returns, as one JSON value (see _standing).
_STANDING_JSON = "json_build_array(s.comps, s.legs, s.version)"

# One request's context, as a query over its parameters (the card number's keyed hash, merchant, key, receipt key,
# original RRN, an exchange's target program). For a void's or refund's original, also what
# stands against it (no lock: the compensation is guarded by the version read here; see
# ledger.loyalty.operations); for an exchange, its terms (columns xt_*; exchange_terms.py).
_CONTEXT_ROW = f"""
SELECT b.open_date,
       m.merchant_id, m.status AS merchant_status, m.earn_num, m.earn_den, m.fee_bps,
       m.clearing_points_account_id, m.clearing_money_account_id,
       p.code AS program, p.status AS program_status, p.points_asset, p.currency, p.issue_price_minor,
       p.redeem_value_minor, p.txn_max_points, p.lottery_price_points, p.prize_pool_account_id,
       p.points_expiry_months,
       cur.asset AS money_asset, cur.txn_max_minor, cur.fee_income_account_id,
       cur.memo_a_account_id, cur.memo_b_account_id, ast.scale AS money_scale,
       c.id AS card_id, c.status AS card_status, c.expiry,
       pa.id AS points_account_id, pa.posted AS points_posted, pa.held AS points_held,
       sa.id AS sv_account_id, sa.posted AS sv_posted, sa.held AS sv_held,
       j.id AS existing_journal_id, j.metadata AS existing_metadata,
       r.content_hash AS receipt_hash, r.payload AS receipt_payload,
       {", ".join(f"o.{c} AS orig_{c}" for c in _ORIGINAL_FIELDS)}, o.in_closed_batch AS orig_in_closed_batch,
       -- In CASE, a subquery runs only for a request that found its original (as a lateral
       -- join, a generic plan may call the function for every request: measured, it did).
       CASE WHEN o.journal_id IS NOT NULL
            THEN (SELECT {_STANDING_JSON} FROM loyalty.standing(o.journal_id, o.journal_id) s) END AS orig_standing,
       {", ".join(f"xt.xt_{c}" for c in TERMS_COLUMNS)}
  FROM ledger.business_day b
  LEFT JOIN loyalty.merchants m ON m.merchant_id = q.merchant_id
  LEFT JOIN loyalty.programs p ON p.code = m.program
  LEFT JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
  LEFT JOIN ledger.assets ast ON ast.code = cur.asset
  LEFT JOIN loyalty.cards c ON c.pan_hash = q.pan_hash
  LEFT JOIN ledger.accounts pa ON pa.owner_kind = 'card' AND pa.owner_id = c.id::text
                              AND pa.purpose = 'points' AND pa.asset = p.points_asset
  LEFT JOIN ledger.accounts sa ON sa.owner_kind = 'card' AND sa.owner_id = c.id::text
                              AND sa.purpose = 'stored_value' AND sa.asset = cur.asset
  LEFT JOIN ledger.journals j ON j.idempotency_key = q.key
  LEFT JOIN ledger.receipts r ON r.idempotency_key = q.receipt_key
  LEFT JOIN LATERAL (SELECT {_ORIGINAL_COLUMNS}, {IN_CLOSED_BATCH_SQL} AS in_closed_batch
                       FROM loyalty.transactions t
                      WHERE t.rrn = q.original_rrn AND t.journal_id IS NOT NULL LIMIT 1) o ON true
  -- Only an exchange's request names a target program: for any other, a one-time filter.
  LEFT JOIN LATERAL ({terms_select("c.id", "p.code", "q.target_program", "b.open_date", "xt_")}
                     WHERE q.target_program IS NOT NULL) xt ON true
 WHERE b.singleton
"""
# Many requests' contexts in one statement (see ledger.coalesce). LATERAL ... LIMIT 1 keeps
# each request's lookups the index probes they are alone: the planner may not turn them
# into hash joins over whole tables, whatever it guesses about the array's length.
_CONTEXT_SQL = f"""
SELECT q.n, x.*
  FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
       WITH ORDINALITY AS q(pan_hash, merchant_id, key, receipt_key, original_rrn, target_program, n)
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
        return int(jid), json_object(self.row["existing_metadata"])

    @property
    def stored_receipt(self) -> StoredReceipt | None:
        """(content hash, payload) stored under the request's receipt key, if any.

        The payload is None for a receipt stored by reference to its journal.
        """
        return stored_receipt(self.row["receipt_hash"], self.row["receipt_payload"])

    @property
    def original(self) -> tuple[Original, bool] | None:
        """The approved transaction the request's original RRN names, and whether its
        terminal batch is closed (None when there is none, or no RRN was asked for)."""
        if self.row["orig_journal_id"] is None:
            return None
        values = {name: self.row[f"orig_{name}"] for name in _ORIGINAL_FIELDS}
        return Original(**values), bool(self.row["orig_in_closed_batch"])

    @property
    def standing(self) -> Standing | None:
        """What stood against :attr:`original` when the context was read (None without one)."""
        if self.row["orig_journal_id"] is None or self.row["orig_standing"] is None:
            return None
        return _standing(self.row["orig_standing"])

    @property
    def exchange_terms(self) -> Terms:
        """An exchange's terms, read with the context (all None when no target program was asked for)."""
        return Terms({c: self.row[f"xt_{c}"] for c in TERMS_COLUMNS})

    @property
    def fees(self) -> dict[str, int]:
        return json_object(self.row["fee_bps"]) if self.row["fee_bps"] is not None else {}

    def points_available(self) -> int:
        if self.row["points_account_id"] is None:
            return 0
        return int(self.row["points_posted"]) - int(self.row["points_held"])

    def sv_available(self) -> int:
        if self.row["sv_account_id"] is None:
            return 0
        return int(self.row["sv_posted"]) - int(self.row["sv_held"])


def json_object(value: Any) -> dict[str, Any]:
    """A JSON object column as read (a str, or already decoded) as a dict."""
    if isinstance(value, str):
        decoded: dict[str, Any] = json.loads(value)
        return decoded
    return dict(value)


def context_reader(pool: asyncpg.Pool, concurrency_max: int = 2, linger_s: float = 0.0) -> Coalescer:
    """Concurrent requests' contexts read together:
    ``Context(await reader.fetch(pan_hash, merchant_id, key, receipt_key, original_rrn, target_program))``."""
    return Coalescer(pool, _CONTEXT_SQL, concurrency_max=concurrency_max, linger_s=linger_s)


async def read_context(reader: Coalescer, pan_hash: bytes, merchant_id: str, key: str,
                       receipt_key: str | None = None, original_rrn: str | None = None,
                       target_program: str | None = None) -> Context:
    """The request's context through a :func:`context_reader`; ``receipt_key`` also reads that
    receipt, ``original_rrn`` the approved transaction with that RRN (:attr:`Context.original`).
    The card is found by ``pan_hash`` (ledger.loyalty.card_numbers). ``target_program``: an
    exchange's, whose terms come with the context (:attr:`Context.exchange_terms`)."""
    row = await reader.fetch(pan_hash, merchant_id, key, receipt_key, original_rrn, target_program)
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


def _original(row: asyncpg.Record | None) -> Original | None:
    return None if row is None else Original(**dict(row))


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
    return None if row is None else (int(row["id"]), json_object(row["metadata"]))


@dataclass(frozen=True)
class PostedLeg:
    """One leg of a posted journal, with what its accounts are (for member/fee arithmetic)."""

    debit_account_id: int
    credit_account_id: int
    amount: int
    debit_role: str
    credit_role: str


@dataclass(frozen=True)
class Compensation:
    """A void, refund or reversal of an original that still stands (is not itself reversed)."""

    journal_id: int
    txn_type: str
    undo_units: int
    undo_legs: list[int]


Standing = tuple[list[Compensation], list[PostedLeg], int]
"""What stands against a journal: its compensations in force, its legs, and its root's family
version (how many compensations the family has ever had; the next one is guarded by it)."""


def _standing(value: str) -> Standing:
    """A standing from its _STANDING_JSON: [comps, legs, version]."""
    comps, legs, version = json.loads(value)
    return ([Compensation(int(j), str(t), int(u), [int(v) for v in undo]) for j, t, u, undo in comps],
            [PostedLeg(int(d), int(c), int(a), str(dr), str(cr)) for d, c, a, dr, cr in legs],
            int(version))


async def standing(conn: asyncpg.Connection | asyncpg.Pool, journal_id: int, root: int) -> Standing:
    """What stands against ``journal_id``, with the family version of ``root`` (the original it
    compensates, or itself), in one round trip (loyalty.standing)."""
    value = await conn.fetchval(f"SELECT {_STANDING_JSON} FROM loyalty.standing($1, $2) s", journal_id, root)
    assert value is not None
    return _standing(value)


async def prizes(conn: asyncpg.Connection | asyncpg.Pool, program: str) -> list[tuple[str, int, int]]:
    """A program's lottery prize table: (code, points, weight), by code."""
    rows = await conn.fetch(
        "SELECT code, points, weight FROM loyalty.lottery_prizes WHERE program=$1 ORDER BY code", program)
    return [(r["code"], r["points"], r["weight"]) for r in rows]
