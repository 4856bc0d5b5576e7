"""Transaction search (the operator's combined query) and one transaction in full.

Filters combine with AND; every value is a query parameter. PANs are looked up
in full and only ever shown masked (first 6, last 4). Paging is keyset-based
(``before_id``: the last id of the previous page) with a bounded ``limit``.

>>> Filters(merchant_id="M1", amount_min=100).where()
('t.merchant_id = $1 AND t.amount >= $2', ['M1', 100])
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import asyncpg

from ledger.loyalty import card_numbers
from ledger.loyalty.outcomes import approval_code
from ledger.loyalty.rules import mask_pan
from specs.vocabulary import APPROVED

LIMIT_MAX = 1000
LIMIT_DEFAULT = 50
SECRET_FIELDS = ("35", "45", "52", "55", "64", "96", "110", "128")


@dataclass(frozen=True)
class Filters:
    """Search criteria; None = any."""

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    merchant_id: str | None = None
    terminal_id: str | None = None
    pan: str | None = None
    rrn: str | None = None
    txn_type: str | None = None
    reasons: tuple[str, ...] | None = None  # any of these (a response code may map to several)
    amount_min: int | None = None
    amount_max: int | None = None
    channel: str | None = None  # where it was taken: terminal, web, ... (ledger.loyalty.outcomes.Channel)
    before_id: int | None = None
    original_journal_id: int | None = None  # what was done against a transaction (voids, refunds, reversals)
    card_id: int | None = None  # one card, by row id

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause (``t`` = loyalty.transactions, ``c`` = loyalty.cards) and its parameters."""
        parts: list[str] = []
        args: list[Any] = []
        clauses = {
            "date_from": "t.business_date >= ${}", "date_to": "t.business_date <= ${}",
            "merchant_id": "t.merchant_id = ${}", "terminal_id": "t.terminal_id = ${}",
            "rrn": "t.rrn = ${}",
            "txn_type": "t.txn_type = ${}", "reasons": "t.reason = ANY(${}::text[])", "amount_min": "t.amount >= ${}",
            "amount_max": "t.amount <= ${}", "channel": "t.channel = ${}", "before_id": "t.id < ${}",
            "original_journal_id": "t.original_journal_id = ${}",
            "card_id": "t.card_id = ${}",
        }
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "pan":  # numbers are found by their keyed hash: see resolve_card
                raise ValueError("a card number filter must be resolved to the card first")
            args.append(list(value) if isinstance(value, tuple) else value)
            parts.append(clauses[f.name].format(len(args)))
        return (" AND ".join(parts) or "true"), args


_COLUMNS = """
t.id, t.business_date, t.created_at, t.txn_type, t.reason, t.rrn, t.stan, t.terminal_id, t.merchant_id,
t.program, t.amount, t.currency, t.points_delta, t.money_delta_minor, t.fee_minor, t.prize_code,
t.journal_id, t.original_journal_id, t.channel, t.operator_ref, c.pan_masked AS pan
"""


def _view(r: asyncpg.Record) -> dict[str, Any]:
    out = dict(r)
    out["pan"] = mask_pan(r["pan"]) if r["pan"] else None
    out["business_date"] = r["business_date"].isoformat()
    out["created_at"] = r["created_at"].isoformat()
    return out


async def resolve_card(conn: asyncpg.Connection | asyncpg.Pool, filters: Filters) -> Filters:
    """``filters`` with its card number replaced by the card's row id (card numbers are stored
    sealed and found by their keyed hash); a number of no card matches nothing."""
    if filters.pan is None:
        return filters
    card_id = await card_numbers.card_id_by_number(conn, filters.pan)
    if card_id is None or (filters.card_id is not None and filters.card_id != card_id):
        card_id = 0  # row ids start at 1: matches nothing
    return replace(filters, pan=None, card_id=card_id)


async def search(conn: asyncpg.Connection | asyncpg.Pool, filters: Filters, limit: int = LIMIT_DEFAULT
                 ) -> dict[str, Any]:
    """One page of matching transactions, newest first, and the cursor for the next page."""
    limit = max(1, min(int(limit), LIMIT_MAX))
    where, args = (await resolve_card(conn, filters)).where()
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM loyalty.transactions t LEFT JOIN loyalty.cards c ON c.id = t.card_id "
        f"WHERE {where} ORDER BY t.id DESC LIMIT {limit + 1}", *args)
    page = [_view(r) for r in rows[:limit]]
    return {"transactions": page, "count": len(page),
            "next_before_id": page[-1]["id"] if len(rows) > limit else None}


def decode_response(payload: bytes) -> dict[str, str] | None:
    """A stored switch response's fields (PAN masked, secrets dropped), or None when not one.

    The switch stores ``{"v": 1, "fields": {...}}`` (switch.dedup); the ledger
    reads it as plain JSON and never imports the switch.

    >>> decode_response(b'{"v":1,"fields":{"39":"00","2":"6212345678901232","52":"X"}}')
    {'39': '00', '2': '621234******1232'}

    The web trading seat stores its result instead (``{"v": 1, "seat": {...}}``,
    ledger.loyalty.seat), which holds no card number:

    >>> decode_response(b'{"v":1,"seat":{"reason":"insufficient","rrn":"900000000001"}}')
    {'reason': 'insufficient', 'rrn': '900000000001'}
    """
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("seat"), dict):
        return {str(k): str(v) for k, v in data["seat"].items()}
    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        return None
    out: dict[str, str] = {}
    for k, v in data["fields"].items():
        if k in SECRET_FIELDS:
            continue
        out[str(k)] = mask_pan(str(v)) if k == "2" else str(v)
    return out


# A transaction's records under an RRN: the posted one by the unique index of the posted
# rows (0004), the unposted ones by theirs (0015); "t.rrn = $1" alone matches neither
# partial index, and scans the table.
_SHOW_SQL = f"""
SELECT * FROM (
    SELECT {_COLUMNS}, t.idempotency_key FROM loyalty.transactions t
      LEFT JOIN loyalty.cards c ON c.id = t.card_id WHERE t.rrn = $1 AND t.journal_id IS NOT NULL
    UNION ALL
    SELECT {_COLUMNS}, t.idempotency_key FROM loyalty.transactions t
      LEFT JOIN loyalty.cards c ON c.id = t.card_id WHERE t.rrn = $1 AND t.journal_id IS NULL
) r ORDER BY id
"""
_RECEIPT_BY_KEY_SQL = """
SELECT idempotency_key, payload FROM ledger.receipts WHERE idempotency_key = ANY($1::text[])
 ORDER BY array_position($1::text[], idempotency_key) LIMIT 1
"""
_RECEIPT_BY_JOURNAL_SQL = """
SELECT idempotency_key, payload FROM ledger.receipts WHERE journal_id = $1
UNION ALL SELECT idempotency_key, payload FROM ledger.receipts WHERE idempotency_key = $2
LIMIT 1
"""


async def show(conn: asyncpg.Connection | asyncpg.Pool, rrn: str,
               response_key: Callable[[str], str | None] | None = None) -> dict[str, Any] | None:
    """Every record under an RRN: the request as recorded, every leg, the stored response.

    The response is the receipt stored under ``response_key(idempotency_key)``
    or under the record's own key (the caller knows how its front end keys
    responses; the ledger does not): a primary-key probe each. Without
    ``response_key``, the receipt stored with the record's journal, found by a
    scan of ledger.receipts (no index on its journal: one would cost every
    posting a write), so every caller that knows its keys passes them.
    """
    rows = await conn.fetch(_SHOW_SQL, rrn)
    if not rows:
        return None
    records = []
    for r in rows:
        rec = _view(r)
        rec["request"] = {"type": r["txn_type"], "channel": r["channel"], "operator_ref": r["operator_ref"],
                          "terminal_id": r["terminal_id"], "merchant_id": r["merchant_id"],
                          "stan": r["stan"], "pan": rec["pan"], "amount": r["amount"], "currency": r["currency"],
                          "idempotency_key": r["idempotency_key"]}
        legs = []
        if r["journal_id"] is not None:
            legs = [dict(e) for e in await conn.fetch(
                "SELECT e.leg, e.account_id, a.owner_kind, a.owner_id, a.purpose, e.asset, e.amount, "
                "e.balance_after FROM ledger.entries e JOIN ledger.accounts a ON a.id = e.account_id "
                "WHERE e.journal_id = $1 ORDER BY e.leg", r["journal_id"])]
            # A member account's owner is the card row id, never the PAN.
        rec["legs"] = legs
        if response_key is None and r["journal_id"] is not None:
            receipt = await conn.fetchrow(_RECEIPT_BY_JOURNAL_SQL, r["journal_id"], r["idempotency_key"])
        else:
            alt = response_key(r["idempotency_key"]) if response_key is not None else None
            receipt = await conn.fetchrow(_RECEIPT_BY_KEY_SQL, [k for k in (alt, r["idempotency_key"]) if k])
        if receipt is None:
            rec["response"] = None
        elif receipt["payload"] is not None:
            rec["response"] = decode_response(bytes(receipt["payload"]))
        else:
            # Stored by reference to its journal (an approval): what the answer said that is not
            # above, rebuilt as a retransmission would be (the balances are the legs' balance_after).
            rec["response"] = {"39": APPROVED, "37": r["rrn"], "38": approval_code(int(r["journal_id"])),
                               "stored": "by journal"}
        rec["response_key"] = receipt["idempotency_key"] if receipt is not None else None
        records.append(rec)
    return {"rrn": rrn, "records": records}


EXPORT_ROWS_MAX = 100_000
EXPORT_COLUMNS = ("id", "business_date", "created_at", "txn_type", "reason", "rrn", "stan", "terminal_id",
                  "merchant_id", "program", "amount", "currency", "points_delta", "money_delta_minor", "fee_minor",
                  "prize_code", "channel", "operator_ref", "pan", "journal_id", "original_journal_id")


async def export_pages(conn: asyncpg.Connection | asyncpg.Pool, filters: Filters, rows_max: int = EXPORT_ROWS_MAX
                       ) -> AsyncIterator[list[dict[str, Any]]]:
    """The matching transactions, newest first, in pages of LIMIT_MAX (cards masked), at most
    ``rows_max`` rows in all; each page is its own short query (keyset), so nothing is held open."""
    left = max(0, min(rows_max, EXPORT_ROWS_MAX))
    cursor = filters
    while left > 0:
        page = await search(conn, cursor, min(LIMIT_MAX, left))
        if page["transactions"]:
            yield page["transactions"]
        left -= page["count"]
        if page["next_before_id"] is None:
            return
        cursor = replace(cursor, before_id=page["next_before_id"])


MEMBER_CARDS_MAX = 50  # the cards of one member a history reads (ledger.loyalty.member_accounts bounds them too)


async def member_history(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, filters: Filters,
                         before: tuple[dt.date, int] | None = None, limit: int = LIMIT_DEFAULT,
                         types_hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    """One page of the transactions on a member's cards (``filters.card_id``: one of them), newest
    business day first, and the cursor of the next page (``next_before``: the last row's business
    date and id). ``filters``' other criteria apply as in :func:`search`; its card number and
    ``before_id`` are ignored. ``types_hidden``: transaction types left out (what a member is not
    shown: balance inquiries and reversal markers move nothing).

    Each card is read on its own, newest day first, by the (card, business day) index and at most
    a page of rows, so a page costs the same on a card with a million transactions as on a new
    one (ordered by id across the cards, the whole of a busy card's history would be sorted).
    """
    limit = max(1, min(int(limit), LIMIT_MAX))
    where, args = replace(filters, card_id=None, pan=None, before_id=None).where()
    args.append(member_id)
    cards = f"member_id = ${len(args)}"
    if filters.card_id is not None:
        args.append(filters.card_id)
        cards += f" AND id = ${len(args)}"
    if types_hidden:
        args.append(list(types_hidden))
        where += f" AND t.txn_type <> ALL(${len(args)}::text[])"
    if before is not None:
        args.extend(before)
        day, row = len(args) - 1, len(args)
        # The day bound alone is an index condition; the pair then drops that day's newer rows.
        where += f" AND t.business_date <= ${day} AND (t.business_date, t.id) < (${day}, ${row})"
    order = f"ORDER BY t.business_date DESC, t.id DESC LIMIT {limit + 1}"
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM (SELECT id, pan_masked FROM loyalty.cards WHERE {cards} ORDER BY id "
        f"LIMIT {MEMBER_CARDS_MAX}) c CROSS JOIN LATERAL (SELECT * FROM loyalty.transactions t "
        f"WHERE t.card_id = c.id AND {where} {order}) t {order}", *args)
    page = [_view(r) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return {"transactions": page, "count": len(page),
            "next_before": None if last is None else (last["business_date"], int(last["id"]))}
