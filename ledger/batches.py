"""Terminal batches: the host's totals for a terminal's open batch, and closing it (0500).

specs/HOST-INTERFACE.md §12 (terminal batch settlement), from the member's side: credits = purchase-earn,
top-up, load, refund; debits = redeem, stored-value purchase, lottery. Amounts
are the sum of field 4 as sent (points and money added as plain numbers).
Voided and reversed transactions are left out (a partially reversed one counts
with what stands). Equal totals close the batch; unequal ones leave it open
with both sides recorded for ``switchd batch show``.

A batch is a window of the terminal's ``loyalty.transactions`` ids: from the
previous batch's ``upto_txn_id`` (exclusive) to its own (inclusive, set when it
closes). Everything is one SQL statement per question, never a loop over rows.

>>> Totals(1, 100, 2, 30).as_fields()
{'74': '0000000001', '86': '0000000000000100', '76': '0000000002', '88': '0000000000000030'}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

CREDIT_TYPES = ("earn", "topup", "load", "refund", "voucher_redeem")
DEBIT_TYPES = ("redeem", "sv_purchase", "lottery")
# Advisory-lock namespace serialising the 0500s of one terminal ("BAT").
LOCK_NAMESPACE = 0x424154
LOCK_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class Totals:
    """Counts and amounts of a batch, one side's view."""

    credit_count: int
    credit_amount: int
    debit_count: int
    debit_amount: int

    def as_fields(self) -> dict[str, str]:
        """ISO fields 74, 86, 76, 88 (fixed-width digits)."""
        return {"74": f"{self.credit_count:010d}", "86": f"{self.credit_amount:016d}",
                "76": f"{self.debit_count:010d}", "88": f"{self.debit_amount:016d}"}


@dataclass(frozen=True)
class BatchOutcome:
    """What a 0500 did: ``in_balance`` closes the batch, otherwise it stays open."""

    in_balance: bool
    batch_id: int
    batch_number: str
    host: Totals
    terminal: Totals
    replayed: bool = False


# One row per transaction in a window, with how it counts. `units_left` is the
# field-4 amount still standing after partial reversals; a void, a full
# reversal, or a reversal of a compensation leaves nothing.
_WINDOW_SQL = """
WITH w AS (
    SELECT t.id, t.journal_id, t.txn_type, t.reason, t.rrn, t.stan, t.amount, t.business_date, t.card_id
      FROM loyalty.transactions t
     WHERE t.terminal_id = $1 AND t.id > $2 AND ($3::bigint IS NULL OR t.id <= $3)
       AND ($4::date IS NULL OR t.business_date >= $4)
), undo AS (
    SELECT u.original_journal_id AS journal_id,
           bool_or(u.txn_type = 'void' OR u.undo_units IS NULL) AS whole,
           coalesce(sum(u.undo_units) FILTER (WHERE u.txn_type = 'reversal'), 0) AS reversed_units
      FROM loyalty.transactions u
     WHERE u.original_journal_id IN (SELECT journal_id FROM w WHERE journal_id IS NOT NULL)
       AND u.journal_id IS NOT NULL AND u.txn_type IN ('void', 'reversal')
       AND NOT EXISTS (SELECT 1 FROM loyalty.transactions r
                        WHERE r.original_journal_id = u.journal_id AND r.txn_type = 'reversal'
                          AND r.journal_id IS NOT NULL)
     GROUP BY u.original_journal_id
)
SELECT w.*,
       CASE WHEN w.txn_type = ANY($5::text[]) THEN 'credit'
            WHEN w.txn_type = ANY($6::text[]) THEN 'debit' END AS side,
       CASE WHEN w.journal_id IS NULL OR coalesce(undo.whole, false) THEN 0
            ELSE greatest(w.amount - coalesce(undo.reversed_units, 0), 0) END AS units_left
  FROM w LEFT JOIN undo ON undo.journal_id = w.journal_id
"""

_TOTALS_SQL = f"""
SELECT count(*) FILTER (WHERE side = 'credit') AS credit_count,
       coalesce(sum(units_left) FILTER (WHERE side = 'credit'), 0)::bigint AS credit_amount,
       count(*) FILTER (WHERE side = 'debit') AS debit_count,
       coalesce(sum(units_left) FILTER (WHERE side = 'debit'), 0)::bigint AS debit_amount,
       max(id) AS upto_txn_id
  FROM ({_WINDOW_SQL}) x
 WHERE side IS NOT NULL AND units_left > 0
"""


async def host_totals(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str, after_txn_id: int = 0,
                      upto_txn_id: int | None = None, after_business_date: dt.date | None = None) -> Totals:
    """The host's totals for a window of a terminal's transactions."""
    row = await conn.fetchrow(_TOTALS_SQL, terminal_id, after_txn_id, upto_txn_id, after_business_date,
                              list(CREDIT_TYPES), list(DEBIT_TYPES))
    assert row is not None
    return Totals(int(row["credit_count"]), int(row["credit_amount"]), int(row["debit_count"]),
                  int(row["debit_amount"]))


async def _open_batch(conn: asyncpg.Connection, terminal_id: str, merchant_id: str | None,
                      batch_number: str) -> asyncpg.Record:
    """The terminal's open batch (locked), created after its last closed one when there is none."""
    row = await conn.fetchrow(
        "SELECT * FROM eod.terminal_batches WHERE terminal_id=$1 AND status='open' FOR UPDATE", terminal_id)
    if row is not None:
        return row
    prev = await conn.fetchrow(
        "SELECT b.upto_txn_id, t.business_date FROM eod.terminal_batches b "
        "LEFT JOIN loyalty.transactions t ON t.id = b.upto_txn_id "
        "WHERE b.terminal_id=$1 AND b.status='closed' ORDER BY b.id DESC LIMIT 1", terminal_id)
    row = await conn.fetchrow(
        "INSERT INTO eod.terminal_batches(terminal_id, merchant_id, batch_number, after_txn_id, "
        "after_business_date) VALUES ($1,$2,$3,$4,$5) RETURNING *",
        terminal_id, merchant_id, batch_number, prev["upto_txn_id"] if prev else 0,
        prev["business_date"] if prev else None)
    assert row is not None
    return row


def _totals_of(row: asyncpg.Record, side: str) -> Totals:
    return Totals(int(row[f"{side}_credit_count"] or 0), int(row[f"{side}_credit_amount"] or 0),
                  int(row[f"{side}_debit_count"] or 0), int(row[f"{side}_debit_amount"] or 0))


async def settle(conn: asyncpg.Connection, terminal_id: str, merchant_id: str | None, batch_number: str,
                 terminal: Totals, key: str) -> BatchOutcome:
    """Compare the terminal's totals with the host's for its open batch; close it when equal.

    Idempotent on ``key`` (the 0500's idempotency key): the 0500 that closed a
    batch, sent again, is answered in balance without touching the next batch.
    One terminal's 0500s are serialised by an advisory lock with a bounded wait.
    """
    async with conn.transaction():
        await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{LOCK_TIMEOUT_MS}ms")
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_NAMESPACE, terminal_id)
        done = await conn.fetchrow("SELECT * FROM eod.terminal_batches WHERE close_key=$1", key)
        if done is not None:
            return BatchOutcome(True, done["id"], done["batch_number"], _totals_of(done, "host"),
                                _totals_of(done, "terminal"), replayed=True)
        batch = await _open_batch(conn, terminal_id, merchant_id, batch_number)
        row = await conn.fetchrow(_TOTALS_SQL, terminal_id, batch["after_txn_id"], None,
                                  batch["after_business_date"], list(CREDIT_TYPES), list(DEBIT_TYPES))
        assert row is not None
        host = Totals(int(row["credit_count"]), int(row["credit_amount"]), int(row["debit_count"]),
                      int(row["debit_amount"]))
        # The watermark: every row of this terminal so far, counted or not (declines,
        # voids), so that the next batch starts after all of them.
        upto = await conn.fetchval(
            "SELECT max(id) FROM loyalty.transactions WHERE terminal_id=$1 AND id > $2 "
            "AND ($3::date IS NULL OR business_date >= $3)",
            terminal_id, batch["after_txn_id"], batch["after_business_date"])
        in_balance = host == terminal
        await conn.execute(
            """UPDATE eod.terminal_batches SET batch_number=$2, merchant_id=coalesce($3, merchant_id),
                      terminal_credit_count=$4, terminal_credit_amount=$5, terminal_debit_count=$6,
                      terminal_debit_amount=$7, host_credit_count=$8, host_credit_amount=$9,
                      host_debit_count=$10, host_debit_amount=$11, attempts=attempts + 1,
                      last_attempt_at=now(),
                      status=CASE WHEN $12 THEN 'closed' ELSE 'open' END,
                      upto_txn_id=CASE WHEN $12 THEN $13::bigint END,
                      closed_at=CASE WHEN $12 THEN now() END,
                      close_key=CASE WHEN $12 THEN $14 END
                WHERE id=$1""",
            batch["id"], batch_number, merchant_id, terminal.credit_count, terminal.credit_amount,
            terminal.debit_count, terminal.debit_amount, host.credit_count, host.credit_amount,
            host.debit_count, host.debit_amount, in_balance, upto if upto is not None else batch["after_txn_id"],
            key)
        return BatchOutcome(in_balance, batch["id"], batch_number, host, terminal)


async def in_closed_batch(conn: asyncpg.Connection | asyncpg.Pool, journal_id: int) -> bool:
    """True when the transaction posted as ``journal_id`` belongs to a closed terminal batch.

    A closed batch's transactions can no longer be voided (the terminal has
    reported its totals; the void belongs to the open batch of nobody).
    """
    return bool(await conn.fetchval(
        f"SELECT {IN_CLOSED_BATCH_SQL} FROM loyalty.transactions t WHERE t.journal_id = $1", journal_id))


# Whether loyalty.transactions row ``t`` lies in a closed terminal batch (a SQL expression).
IN_CLOSED_BATCH_SQL = """EXISTS (
    SELECT 1 FROM eod.terminal_batches b
     WHERE b.terminal_id = t.terminal_id AND b.status = 'closed'
       AND t.id > b.after_txn_id AND t.id <= b.upto_txn_id)"""


def _suspect(tx: dict[str, Any], diff: dict[str, tuple[int, int]]) -> bool:
    """A transaction that may explain a difference: its amount equals the gap on its side,
    or the terminal may have counted it differently (left out, declined by a system error)."""
    side = tx["side"] or ""
    count_gap, amount_gap = diff.get(side, (0, 0))
    if count_gap == 0 and amount_gap == 0:
        return False
    if abs(amount_gap) == tx["amount"] and tx["amount"] > 0:
        return True
    left_out = tx["journal_id"] is not None and tx["units_left"] == 0
    uncertain = tx["reason"] == "system_error"
    return left_out or uncertain


async def show(conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str, limit_rows: int = 200
               ) -> dict[str, Any]:
    """A terminal's open batch (both sides, its transactions, the ones that may differ) and its last closed ones."""
    batches = await conn.fetch(
        "SELECT * FROM eod.terminal_batches WHERE terminal_id=$1 ORDER BY id DESC LIMIT 10", terminal_id)
    open_row = next((b for b in batches if b["status"] == "open"), None)
    if open_row is not None:
        after, after_date = int(open_row["after_txn_id"]), open_row["after_business_date"]
    else:
        last = next((b for b in batches if b["status"] == "closed"), None)
        after = int(last["upto_txn_id"]) if last else 0
        after_date = None
    rows = await conn.fetch(f"{_WINDOW_SQL} ORDER BY w.id LIMIT {int(limit_rows)}", terminal_id, after, None,
                            after_date, list(CREDIT_TYPES), list(DEBIT_TYPES))
    host = await host_totals(conn, terminal_id, after, None, after_date)
    txns = [{"id": r["id"], "journal_id": r["journal_id"], "type": r["txn_type"], "reason": r["reason"],
             "rrn": r["rrn"], "stan": r["stan"], "amount": int(r["amount"]), "side": r["side"],
             "units_left": int(r["units_left"]), "counted": r["side"] is not None and r["units_left"] > 0,
             "business_date": r["business_date"].isoformat()} for r in rows]
    out: dict[str, Any] = {"terminal_id": terminal_id, "host": asdict(host), "open_batch": None,
                           "transactions": txns, "differing": [],
                           "closed_batches": [_batch_view(b) for b in batches if b["status"] == "closed"]}
    if open_row is not None:
        out["open_batch"] = _batch_view(open_row)
        if open_row["terminal_credit_count"] is not None:
            term = _totals_of(open_row, "terminal")
            diff = {"credit": (term.credit_count - host.credit_count, term.credit_amount - host.credit_amount),
                    "debit": (term.debit_count - host.debit_count, term.debit_amount - host.debit_amount)}
            out["difference"] = {k: {"count": v[0], "amount": v[1]} for k, v in diff.items()}
            out["differing"] = [t for t in txns if _suspect(t, diff)]
    return out


def _batch_view(b: asyncpg.Record) -> dict[str, Any]:
    return {"id": b["id"], "batch_number": b["batch_number"], "status": b["status"],
            "after_txn_id": b["after_txn_id"], "upto_txn_id": b["upto_txn_id"], "attempts": b["attempts"],
            "terminal": asdict(_totals_of(b, "terminal")) if b["terminal_credit_count"] is not None else None,
            "host_at_last_attempt": asdict(_totals_of(b, "host")) if b["host_credit_count"] is not None else None,
            "opened_at": b["opened_at"].isoformat(),
            "closed_at": b["closed_at"].isoformat() if b["closed_at"] else None}
