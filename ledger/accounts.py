"""Assets and accounts (the chart), and the read side: balances and journals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.coalesce import Coalescer

NORMAL_SIDES = ("credit", "debit")
LIMIT_MODES = ("none", "non_negative", "guarded")


@dataclass(frozen=True)
class Balance:
    """An account's balances. ``natural`` is ``posted`` seen from its normal side."""

    account_id: int
    asset: str
    normal_side: str
    posted: int
    held: int

    @property
    def natural(self) -> int:
        return self.posted if self.normal_side == "credit" else -self.posted

    @property
    def available(self) -> int:
        return self.natural - self.held


@dataclass(frozen=True)
class EntryView:
    leg: int
    account_id: int
    asset: str
    amount: int
    balance_after: int


@dataclass(frozen=True)
class JournalView:
    id: int
    idempotency_key: str
    kind: str
    business_date: str
    reverses_journal_id: int | None
    resolves_hold_id: int | None
    metadata: dict[str, Any]
    created_at: str
    entries: list[EntryView]


async def ensure_asset(conn: asyncpg.Connection | asyncpg.Pool, code: str, kind: str, scale: int,
                       description: str = "") -> None:
    """Create an asset if it does not exist (``PTS:GOLD`` points, ``CNY`` money)."""
    await conn.execute(
        "INSERT INTO ledger.assets(code, kind, scale, description) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (code) DO NOTHING",
        code, kind, scale, description,
    )


async def open_account(conn: asyncpg.Connection | asyncpg.Pool, owner_kind: str, owner_id: str, asset: str,
                       normal_side: str, limit_mode: str, purpose: str = "main") -> int:
    """Return the id of the account for (owner, purpose, asset), creating it if needed."""
    if normal_side not in NORMAL_SIDES:
        raise ValueError(f"normal_side must be one of {NORMAL_SIDES}, got {normal_side!r}")
    if limit_mode not in LIMIT_MODES:
        raise ValueError(f"limit_mode must be one of {LIMIT_MODES}, got {limit_mode!r}")
    row = await conn.fetchrow(
        "INSERT INTO ledger.accounts(owner_kind, owner_id, purpose, asset, normal_side, limit_mode) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner_kind, owner_id, purpose, asset) DO NOTHING RETURNING id",
        owner_kind, owner_id, purpose, asset, normal_side, limit_mode,
    )
    if row is not None:
        return int(row["id"])
    found = await conn.fetchval(
        "SELECT id FROM ledger.accounts WHERE owner_kind=$1 AND owner_id=$2 AND purpose=$3 AND asset=$4",
        owner_kind, owner_id, purpose, asset,
    )
    return int(found)


async def set_account_status(conn: asyncpg.Connection | asyncpg.Pool, account_id: int, status: str) -> None:
    await conn.execute("UPDATE ledger.accounts SET status=$2 WHERE id=$1", account_id, status)


async def balance(conn: asyncpg.Connection | asyncpg.Pool, account_id: int) -> Balance | None:
    """Posted, held and available balance of one account, or None if unknown."""
    r = await conn.fetchrow(
        "SELECT id, asset, normal_side, posted, held FROM ledger.accounts WHERE id=$1", account_id
    )
    if r is None:
        return None
    return Balance(r["id"], r["asset"], r["normal_side"], r["posted"], r["held"])


async def journal(conn: asyncpg.Connection | asyncpg.Pool, *, journal_id: int | None = None,
                  idempotency_key: str | None = None) -> JournalView | None:
    """A journal with its entries, by id or by idempotency key."""
    if (journal_id is None) == (idempotency_key is None):
        raise ValueError("give exactly one of journal_id or idempotency_key")
    r = await conn.fetchrow(
        "SELECT * FROM ledger.journals WHERE " + ("id=$1" if journal_id is not None else "idempotency_key=$1"),
        journal_id if journal_id is not None else idempotency_key,
    )
    if r is None:
        return None
    es = await conn.fetch(
        "SELECT leg, account_id, asset, amount, balance_after FROM ledger.entries WHERE journal_id=$1 ORDER BY leg",
        r["id"],
    )
    meta = r["metadata"]
    return JournalView(
        id=r["id"], idempotency_key=r["idempotency_key"], kind=r["kind"],
        business_date=r["business_date"].isoformat(), reverses_journal_id=r["reverses_journal_id"],
        resolves_hold_id=r["resolves_hold_id"], metadata=json.loads(meta) if isinstance(meta, str) else meta,
        created_at=r["created_at"].isoformat(),
        entries=[EntryView(e["leg"], e["account_id"], e["asset"], e["amount"], e["balance_after"]) for e in es],
    )


StoredReceipt = tuple[bytes, bytes | None]  # (content hash, payload); no payload: stored by journal


def stored_receipt(content_hash: bytes | None, payload: bytes | None) -> StoredReceipt | None:
    """A receipt as read from a row (None when the row had none: no content hash)."""
    if content_hash is None:
        return None
    return bytes(content_hash), None if payload is None else bytes(payload)


def _stored(r: asyncpg.Record | None) -> StoredReceipt | None:
    return None if r is None else stored_receipt(r["content_hash"], r["payload"])


async def get_receipt(conn: asyncpg.Connection | asyncpg.Pool, idempotency_key: str) -> StoredReceipt | None:
    """(content_hash, payload) stored under a key, or None. The payload is None for a receipt
    stored by reference to its journal (ledger.engine.ReceiptRef)."""
    return _stored(await conn.fetchrow(
        "SELECT content_hash, payload FROM ledger.receipts WHERE idempotency_key=$1", idempotency_key))


_RECEIPTS_SQL = (
    "SELECT q.n, r.content_hash, r.payload FROM unnest($1::text[]) WITH ORDINALITY AS q(key, n) "
    "JOIN ledger.receipts r ON r.idempotency_key = q.key")


def receipt_reader(pool: asyncpg.Pool, concurrency_max: int = 2, linger_s: float = 0.0) -> Coalescer:
    """Concurrent receipt lookups read together; use with :func:`read_receipt`."""
    return Coalescer(pool, _RECEIPTS_SQL, concurrency_max=concurrency_max, linger_s=linger_s)


async def read_receipt(reader: Coalescer, idempotency_key: str) -> StoredReceipt | None:
    """(content_hash, payload) stored under a key, or None; through a :func:`receipt_reader`."""
    return _stored(await reader.fetch(idempotency_key))


async def put_receipt(conn: asyncpg.Connection | asyncpg.Pool, idempotency_key: str, content_hash: bytes,
                      payload: bytes) -> StoredReceipt:
    """Store a receipt for an outcome that posted nothing; returns what is stored (first writer wins)."""
    # Through the owner's function: the runtime roles may not insert receipts themselves, and
    # it refuses an approval stored without its journal (ledger/sql/ledger.store_receipts.sql).
    await conn.execute(
        "SELECT count(*) FROM ledger.store_receipts(ARRAY[$1::text], ARRAY[$2::bytea], ARRAY[$3::bytea], NULL)",
        idempotency_key, content_hash, payload,
    )
    stored = await get_receipt(conn, idempotency_key)
    assert stored is not None
    return stored
