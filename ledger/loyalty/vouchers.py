"""Points top-up cards (vouchers): batches, their sale to a merchant, redemption, breakage at expiry.

A batch is K cards of N points of program P, sold at a price each, valid through a date. Each card
has a serial (printed, 12 digits) and a secret code (16 digits) that appears once, in the file
written for printing; only ``HMAC-SHA256(key, serial:code)`` is stored, under a key derived from
the master key (:func:`code_key`).

Every value flow is one ledger journal (specs/ACCOUNTING.md, "Points top-up cards"):

- sale of batch B to merchant X (``voucher:batch:<B>:sale``): Dr X's money clearing / Cr
  ``operator:<CUR>:voucher_sales``, K x price; Dr ``operator:<P>:points_outstanding`` / Cr
  ``operator:<P>:voucher_float``, K x N. End of day clears the price with X's other money.
- redemption of card S by card c (``voucher:<S>:redeem``): Dr ``voucher_float`` / Cr c's points, N.
  One key per card: whatever the races, the member is credited once.
- breakage, at the end of the card's last day (``voucher:breakage:<D>:<P>``): the points of the
  sold cards of P still unredeemed, Dr ``voucher_float`` / Cr ``operator:<P>:voucher_breakage``.

Guessing is bounded: failed redemptions are counted per member, client address and terminal
(:class:`GuessPolicy`); a subject over the limit is locked out for a while.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg

from ledger.accounts import StoredReceipt, open_account, stored_receipt
from ledger.coalesce import Coalescer
from ledger.commands import Leg, Result, Status, transfer
from ledger.engine import UNKNOWN, Ledger, ReceiptRef
from ledger.errors import SwitchdError
from ledger.loyalty.lookup import json_object
from ledger.loyalty.outcomes import Channel

CARDS_PER_BATCH_MAX = 100_000
POINTS_MAX = 999_999_999_999
PRICE_MAX_MINOR = 999_999_999_999
SERIAL_DIGITS = 12
CODE_DIGITS = 16
SUBJECT_MAX = 64
LIST_LIMIT_MAX = 500
KEY_VERSION = 1
_KEY_LABEL = b"switchd voucher code hash v1"

SALE_TYPE = "voucher_sale"
REDEEM_TYPE = "voucher_redeem"
# Account purposes (owner_kind 'operator'): ledger.revenue registers the income ones.
SALES_PURPOSE = "voucher_sales"  # CUR, credit: the price of cards sold
FLOAT_PURPOSE = "voucher_float"  # PTS:P, credit: points of sold cards not yet redeemed or expired
BREAKAGE_PURPOSE = "voucher_breakage"  # PTS:P, credit: points of sold cards that expired unredeemed


class VoucherError(SwitchdError):
    """A voucher command refused; ``str()`` is one line and never contains a code."""


class Refusal(StrEnum):
    """Why a redemption was declined."""

    LOCKED = "locked"  # too many failures from this member, address or terminal
    INVALID = "invalid"  # no such serial, or the code does not match (never told apart)
    USED = "used"  # redeemed before, by another card
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    NOT_SOLD = "not_sold"
    NO_CARD = "no_card"  # the member has no active card to credit
    AMOUNT = "amount"  # the terminal's amount is not the card's points
    ANSWERED = "answered"  # the request was answered before: its receipt is the answer
    ERROR = "error"  # the ledger could not post; nothing changed


@dataclass(frozen=True)
class GuessPolicy:
    """The ``[vouchers]`` section: how many failed redemptions a subject (member, client address,
    terminal) may make in a window before it is locked out, and for how long."""

    failures_max: int = 5
    failure_window_s: int = 900
    lockout_s: int = 900

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> GuessPolicy:
        """The settings from a mapping with an entry for each of them (others are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


# The schema's defaults (switch/config.py), for callers built without a configuration.
DEFAULT_POLICY = GuessPolicy()


@dataclass(frozen=True)
class Desk:
    """What a process needs to redeem cards: the master key (codes' hashes), the guessing bounds,
    and (a busy process) its coalesced redemption reads (:func:`redemption_reader`)."""

    master_key: bytes = field(repr=False)
    policy: GuessPolicy = DEFAULT_POLICY
    reader: Coalescer | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Subjects:
    """Who is trying: any of the member, the client's address, the terminal (None: not known)."""

    member_id: int | None = None
    address: str | None = None
    terminal_id: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """(scope, subject) for each one known, subjects cut to their bound."""
        out = []
        if self.member_id is not None:
            out.append(("member", str(self.member_id)))
        if self.address:
            out.append(("address", self.address[:SUBJECT_MAX]))
        if self.terminal_id:
            out.append(("terminal", self.terminal_id[:SUBJECT_MAX]))
        return out


@dataclass(frozen=True)
class Redemption:
    """What a redemption did: approved with the points credited, or why not."""

    refusal: Refusal | None
    serial: str
    points: int = 0
    program: str | None = None
    card_id: int | None = None
    journal_id: int | None = None
    replayed: bool = False  # the card had been credited by this same card before
    points_balance: int | None = None  # the member's points after
    result: Result | None = field(default=None, compare=False, repr=False)  # the ledger's, when approved
    detail: str = ""
    stored: StoredReceipt | None = field(default=None, repr=False)  # the receipt, when ANSWERED
    # When ANSWERED by a receipt that names its journal: the RRN the journal recorded (the answer's),
    # and (in points, program, points_balance) what the journal credited and the balance after it.
    answered_rrn: str | None = None

    @property
    def approved(self) -> bool:
        return self.refusal is None


def code_key(master_key: bytes) -> bytes:
    """The key that hashes codes, derived from the master key (never the master key itself).

    >>> len(code_key(bytes(32)))
    32
    """
    if len(master_key) != 32:
        raise VoucherError("vouchers: the master key must be 32 bytes")
    return hmac.new(master_key, _KEY_LABEL, hashlib.sha256).digest()


def code_hash(key: bytes, serial: str, code: str) -> bytes:
    """The stored hash of a card's code, bound to its serial.

    >>> code_hash(bytes(32), "000001000001", "1") != code_hash(bytes(32), "000001000002", "1")
    True
    """
    return hmac.new(key, f"{serial}:{code}".encode(), hashlib.sha256).digest()


def serial_of(batch_id: int, n: int) -> str:
    """Card n (1-based) of a batch: 6 digits of batch, 6 of card.

    >>> serial_of(12, 3)
    '000012000003'
    """
    return f"{batch_id % 1_000_000:06d}{n:06d}"


def new_code() -> str:
    """A random secret code of CODE_DIGITS digits."""
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def well_formed(serial: str, code: str) -> bool:
    """True when both look like a card's (bounded, digits only): anything else is a failure.

    >>> well_formed("000001000001", "1" * 16), well_formed("x", "1"), well_formed("000001000001", "1" * 99)
    (True, False, False)
    """
    return (len(serial) == SERIAL_DIGITS and serial.isascii() and serial.isdigit()
            and len(code) == CODE_DIGITS and code.isascii() and code.isdigit())


@dataclass
class CreatedBatch:
    """A batch just made, and the file that holds its codes."""

    batch_id: int
    count: int
    path: Path
    serials: list[str] = field(default_factory=list)


def _check_dir(out_dir: Path) -> None:
    if not out_dir.is_dir():
        raise VoucherError(f"vouchers: no directory {out_dir}")


def _write_private(path: Path, text: str) -> None:
    # O_EXCL: never overwrite a file (another batch's codes); 0600 from the start, not chmod after.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)


async def create_batch(conn: asyncpg.Connection, master_key: bytes, program: str, points: int, count: int,
                       price_minor: int, expires_on: dt.date, out_dir: Path) -> CreatedBatch:
    """Create a batch of ``count`` cards (in the caller's transaction) and write their codes to a new
    0600 file in ``out_dir``; only the codes' hashes are stored."""
    if not 0 < points <= POINTS_MAX:
        raise VoucherError(f"vouchers: points must be 1..{POINTS_MAX}")
    if not 0 < count <= CARDS_PER_BATCH_MAX:
        raise VoucherError(f"vouchers: a batch has 1..{CARDS_PER_BATCH_MAX} cards")
    if not 0 <= price_minor <= PRICE_MAX_MINOR:
        raise VoucherError(f"vouchers: price must be 0..{PRICE_MAX_MINOR}")
    if not await conn.fetchval("SELECT 1 FROM loyalty.programs WHERE code = $1", program):
        raise VoucherError(f"vouchers: no program {program!r}")
    _check_dir(out_dir)
    key = code_key(master_key)
    batch_id = int(await conn.fetchval(
        "INSERT INTO loyalty.voucher_batches(program, points, card_count, price_minor, expires_on, key_version) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id", program, points, count, price_minor, expires_on,
        KEY_VERSION))
    cards = [(serial_of(batch_id, n), new_code()) for n in range(1, count + 1)]
    await conn.copy_records_to_table("vouchers", schema_name="loyalty", columns=["serial", "batch_id", "code_hash"],
                                     records=[(s, batch_id, code_hash(key, s, c)) for s, c in cards])
    path = out_dir / f"voucher-batch-{batch_id}.csv"
    lines = ["serial,code,points,program,expires_on"]
    lines += [f"{s},{c},{points},{program},{expires_on.isoformat()}" for s, c in cards]
    try:
        _write_private(path, "\n".join(lines) + "\n")
    except OSError as exc:
        raise VoucherError(f"vouchers: cannot write {path}: {exc.strerror}") from None
    return CreatedBatch(batch_id, count, path, [s for s, _ in cards])


def sale_key(batch_id: int) -> str:
    """The key of batch ``batch_id``'s sale.

    >>> sale_key(3)
    'voucher:batch:3:sale'
    """
    return f"voucher:batch:{int(batch_id)}:sale"


def redeem_key(serial: str) -> str:
    """The key of card ``serial``'s redemption (one per card).

    >>> redeem_key("000001000002")
    'voucher:000001000002:redeem'
    """
    return f"voucher:{serial}:redeem"


def breakage_key(day: dt.date, program: str) -> str:
    """The key of program ``program``'s breakage at the end of ``day``.

    >>> breakage_key(dt.date(2026, 1, 2), "ALLY")
    'voucher:breakage:2026-01-02:ALLY'
    """
    return f"voucher:breakage:{day.isoformat()}:{program}"


async def _operator_account(conn: asyncpg.Connection | asyncpg.Pool, owner: str, asset: str, purpose: str) -> int:
    return await open_account(conn, "operator", owner, asset, "credit", "none", purpose)


_SALE_SQL = """
SELECT b.*, p.points_asset, p.points_outstanding_account_id AS outstanding, cur.asset AS money_asset,
       cur.numeric_code AS currency, m.clearing_money_account_id AS buyer_money, bcur.asset AS buyer_asset
  FROM loyalty.voucher_batches b
  JOIN loyalty.programs p ON p.code = b.program
  JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
  LEFT JOIN loyalty.merchants m ON m.merchant_id = $2
  LEFT JOIN loyalty.programs bp ON bp.code = m.program
  LEFT JOIN loyalty.currencies bcur ON bcur.numeric_code = bp.currency
 WHERE b.id = $1
   FOR UPDATE OF b
"""


async def sell_batch(ledger: Ledger, pool: asyncpg.Pool, batch_id: int, merchant_id: str,
                     operator_ref: str | None = None) -> dict[str, Any]:
    """Record the sale of a batch to a merchant: one journal (idempotent), the batch marked sold."""
    # The operator's accounts first, committed: the engine posts on a connection of its own.
    names = await pool.fetchrow(
        "SELECT b.program, p.points_asset, cur.asset AS money_asset, cur.numeric_code AS currency "
        "FROM loyalty.voucher_batches b JOIN loyalty.programs p ON p.code = b.program "
        "JOIN loyalty.currencies cur ON cur.numeric_code = p.currency WHERE b.id = $1", batch_id)
    if names is None:
        raise VoucherError(f"vouchers: no batch {batch_id}")
    sales = await _operator_account(pool, names["currency"], names["money_asset"], SALES_PURPOSE)
    float_ = await _operator_account(pool, names["program"], names["points_asset"], FLOAT_PURPOSE)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_SALE_SQL, batch_id, merchant_id)
        if row is None:
            raise VoucherError(f"vouchers: no batch {batch_id}")
        if row["buyer_money"] is None:
            raise VoucherError(f"vouchers: no merchant {merchant_id!r}")
        if row["status"] == "sold" and row["buyer_merchant_id"] == merchant_id:
            return dict(await conn.fetchrow("SELECT * FROM loyalty.voucher_batches WHERE id = $1", batch_id))
        if row["status"] != "created":
            raise VoucherError(f"vouchers: batch {batch_id} is {row['status']}, not for sale")
        if row["expires_on"] < await conn.fetchval("SELECT open_date FROM ledger.business_day WHERE singleton"):
            raise VoucherError(f"vouchers: batch {batch_id} expired on {row['expires_on']}")
        if row["buyer_asset"] != row["money_asset"]:
            raise VoucherError(f"vouchers: merchant {merchant_id} trades in {row['buyer_asset']}, "
                               f"the batch's program in {row['money_asset']}")
        total_minor = int(row["price_minor"]) * int(row["card_count"])
        total_points = int(row["points"]) * int(row["card_count"])
        legs = [Leg(int(row["outstanding"]), float_, total_points)]
        if total_minor > 0:
            legs.insert(0, Leg(int(row["buyer_money"]), sales, total_minor))
        key = sale_key(batch_id)
        # A sale is a charge to the buyer like a fee: clearing counts fee_minor in its fees.
        txn: dict[str, Any] = {
            "type": SALE_TYPE, "merchant_id": merchant_id, "program": row["program"], "amount": total_minor,
            "currency": row["currency"], "points_delta": 0, "money_delta_minor": 0, "fee_minor": total_minor,
            "channel": str(Channel.CLI)}
        if operator_ref:
            txn["operator_ref"] = operator_ref[:64]
        cmd = transfer(key, legs, metadata={"txn": txn, "voucher_batch": batch_id})
        ref = ReceiptRef(key, hashlib.sha256(f"{key}:{merchant_id}:{total_minor}".encode()).digest())
        res = await ledger.post(cmd, receipt_ref=ref)
        if not res.ok:
            raise VoucherError(f"vouchers: the sale was not posted: {res.status} {res.detail or ''}".strip())
        await conn.execute(
            "UPDATE loyalty.voucher_batches SET status = 'sold', buyer_merchant_id = $2, sale_journal_id = $3, "
            "sold_at = now() WHERE id = $1", batch_id, merchant_id, res.journal_id)
        return dict(await conn.fetchrow("SELECT * FROM loyalty.voucher_batches WHERE id = $1", batch_id))


async def suspend_batch(conn: asyncpg.Connection | asyncpg.Pool, batch_id: int) -> bool:
    """Suspend a batch: its cards can no longer be redeemed (a sold batch's still expire into breakage).
    False when there is no such batch."""
    row = await conn.fetchrow(
        "UPDATE loyalty.voucher_batches SET status = 'suspended' WHERE id = $1 RETURNING id", batch_id)
    return row is not None


_BATCH_COLUMNS = """
SELECT b.id, b.program, b.points, b.card_count, b.price_minor, b.expires_on, b.status, b.buyer_merchant_id,
       b.sale_journal_id, b.created_at, b.sold_at,
       (SELECT count(*) FROM loyalty.vouchers v WHERE v.batch_id = b.id AND v.status = 'redeemed') AS redeemed,
       (SELECT count(*) FROM loyalty.vouchers v WHERE v.batch_id = b.id AND v.status = 'expired') AS expired
  FROM loyalty.voucher_batches b
"""


async def list_batches(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 50) -> list[dict[str, Any]]:
    """The newest batches first, with their counts of redeemed and expired cards."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    return [dict(r) for r in await conn.fetch(_BATCH_COLUMNS + " ORDER BY b.id DESC LIMIT $1", limit)]


async def show_batch(conn: asyncpg.Connection | asyncpg.Pool, batch_id: int) -> dict[str, Any] | None:
    """One batch with its counts, or None."""
    row = await conn.fetchrow(_BATCH_COLUMNS + " WHERE b.id = $1", batch_id)
    return None if row is None else dict(row)


# --- guessing --------------------------------------------------------------------------------

_FAIL_SQL = """
INSERT INTO loyalty.voucher_failures AS f(scope, subject, window_start, failures, failures_total)
VALUES ($1, $2, now(), 1, 1)
ON CONFLICT (scope, subject) DO UPDATE SET
    failures_total = f.failures_total + 1,
    failures = CASE WHEN f.window_start < now() - make_interval(secs => $3) THEN 1 ELSE f.failures + 1 END,
    window_start = CASE WHEN f.window_start < now() - make_interval(secs => $3) THEN now() ELSE f.window_start END
RETURNING failures
"""
_LOCK_SQL = """
UPDATE loyalty.voucher_failures SET locked_until = now() + make_interval(secs => $3), lockouts = lockouts + 1,
       failures = 0, window_start = now()
 WHERE scope = $1 AND subject = $2
"""


_TOTALS_SQL = """
SELECT scope, sum(failures_total)::bigint AS failures, sum(lockouts)::bigint AS lockouts
  FROM loyalty.voucher_failures GROUP BY scope
"""


async def guessing_totals(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, tuple[int, int]]:
    """Failed redemptions and lockouts ever counted, per scope, by every process: {scope: (failures,
    lockouts)} (the metrics ``switchd_voucher_redeem_failures_total`` and ``switchd_voucher_lockouts_total``)."""
    return {r["scope"]: (int(r["failures"]), int(r["lockouts"])) for r in await conn.fetch(_TOTALS_SQL)}


# A subject's row outlives its use once its window is older than the longest window allowed
# (switch/config.py: 7 days) and it is not locked out: its next failure would start afresh.
FAILURE_ROWS_KEEP_S = 7 * 86_400
# Purged rows' totals are kept, per scope, in one row of this subject (never a real subject's:
# members are numbers, addresses and terminal ids have no '*'), so the metrics' totals never go down.
PURGED_SUBJECT = "*"
_PURGE_SQL = """
WITH gone AS (
    DELETE FROM loyalty.voucher_failures
     WHERE subject <> '*' AND window_start < now() - make_interval(secs => $1)
       AND (locked_until IS NULL OR locked_until < now())
    RETURNING scope, failures_total, lockouts
), folded AS (
    INSERT INTO loyalty.voucher_failures AS f(scope, subject, window_start, failures, failures_total, lockouts)
    SELECT scope, '*', now(), 0, sum(failures_total), sum(lockouts) FROM gone GROUP BY scope
    ON CONFLICT (scope, subject) DO UPDATE SET failures_total = f.failures_total + excluded.failures_total,
                                               lockouts = f.lockouts + excluded.lockouts
    RETURNING 1
)
SELECT count(*) FROM gone
"""


async def purge_failures(conn: asyncpg.Connection | asyncpg.Pool, keep_s: int = FAILURE_ROWS_KEEP_S) -> int:
    """Drop the failure rows of subjects no longer counted (window over ``keep_s`` old, not locked
    out), their totals folded into each scope's :data:`PURGED_SUBJECT` row; returns how many went.
    End of day runs it: one row per guessing client address would otherwise stay for ever."""
    return int(await conn.fetchval(_PURGE_SQL, keep_s))


async def record_failure(conn: asyncpg.Connection | asyncpg.Pool, who: Subjects, policy: GuessPolicy) -> None:
    """Count one failed redemption against each subject; lock out those that reach the limit."""
    for scope, subject in who.pairs():
        failures = await conn.fetchval(_FAIL_SQL, scope, subject, policy.failure_window_s)
        if failures is not None and failures >= policy.failures_max:
            await conn.execute(_LOCK_SQL, scope, subject, policy.lockout_s)


# --- redemption ------------------------------------------------------------------------------

# One round trip reads all a redemption decides on, for any number of redemptions at once
# (ledger.coalesce: one array per parameter, the n-th redemption's row named n): whether a
# subject is locked out (the client address $3 and terminal $4 given, and the member of the card
# credited), the card credited (by row id $2, or by its number's keyed hash $5), the top-up card
# ($1) with its batch and the ids of the accounts it moves points between where they exist, and
# a receipt stored under $6 (a terminal's retransmission gets it). It writes nothing: the
# redemption's journal is the one write, and its trigger (loyalty.mark_voucher_redeemed) marks
# the card redeemed or refuses the journal when the card was redeemed or expired since this read.
_REDEEM_SQL = """
SELECT q.n, lk.locked, mc.id AS credited_card_id, mc.status AS credited_card_status, mc.member_id,
       day.open_date, rc.content_hash AS receipt_hash, rc.payload AS receipt_payload,
       rj.txn AS receipt_txn, rj.balance_after AS receipt_balance, c.*
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::text[])
       WITH ORDINALITY AS q(serial, card_id, address, terminal_id, pan_hash, receipt_key, n)
 CROSS JOIN (SELECT b.open_date FROM ledger.business_day b WHERE b.singleton) AS day
  LEFT JOIN LATERAL (
    (SELECT k.id, k.status, k.member_id FROM loyalty.cards k WHERE k.id = q.card_id
     UNION ALL
     SELECT k.id, k.status, k.member_id FROM loyalty.cards k WHERE q.card_id IS NULL AND k.pan_hash = q.pan_hash)
    LIMIT 1) AS mc ON true
 CROSS JOIN LATERAL (
    SELECT EXISTS (SELECT 1 FROM loyalty.voucher_failures f
                     JOIN (VALUES ('address', q.address), ('terminal', q.terminal_id),
                                  ('member', mc.member_id::text)) AS s(scope, subject)
                       ON s.scope = f.scope AND s.subject = f.subject
                    WHERE f.locked_until > now()) AS locked) AS lk
  LEFT JOIN ledger.receipts rc ON rc.idempotency_key = q.receipt_key
  -- A receipt stored by reference: what its journal says, to answer again as it was answered.
  LEFT JOIN LATERAL (
    SELECT j.metadata->'txn' AS txn,
           (SELECT e.balance_after FROM ledger.entries e JOIN ledger.accounts a ON a.id = e.account_id
             WHERE e.journal_id = j.id AND a.owner_kind = 'card' LIMIT 1) AS balance_after
      FROM ledger.journals j WHERE j.id = rc.journal_id) AS rj ON true
  LEFT JOIN LATERAL (
    SELECT v.serial, v.code_hash, v.status, v.card_id, v.journal_id, b.id AS batch_id, b.status AS batch_status,
           b.sale_journal_id, b.points, b.program, b.expires_on, p.points_asset, cur.numeric_code AS currency,
           fa.id AS float_account_id, ma.id AS member_account_id
      FROM loyalty.vouchers v
      JOIN loyalty.voucher_batches b ON b.id = v.batch_id
      JOIN loyalty.programs p ON p.code = b.program
      JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
      LEFT JOIN ledger.accounts fa ON fa.owner_kind = 'operator' AND fa.owner_id = b.program
                                  AND fa.purpose = 'voucher_float' AND fa.asset = p.points_asset
      LEFT JOIN ledger.accounts ma ON ma.owner_kind = 'card' AND ma.owner_id = mc.id::text
                                  AND ma.purpose = 'points' AND ma.asset = p.points_asset
     WHERE v.serial = q.serial) AS c ON true
"""


def redemption_reader(pool: asyncpg.Pool, concurrency_max: int = 2, linger_s: float = 0.0) -> Coalescer:
    """The reads of concurrent redemptions, coalesced into one statement per turn (for :func:`redeem`)."""
    return Coalescer(pool, _REDEEM_SQL, concurrency_max=concurrency_max, linger_s=linger_s)


def _refusal_of(row: asyncpg.Record, card_id: int, open_date: dt.date) -> Refusal | None:
    """Why the card read in ``row`` cannot be redeemed by card ``card_id`` (None: it can, or it
    was by that card, whose posting then answers the first redemption)."""
    if row["status"] in ("redeeming", "redeemed"):
        return None if row["card_id"] == card_id else Refusal.USED
    if row["status"] == "expired" or row["expires_on"] < open_date:
        return Refusal.EXPIRED
    if row["batch_status"] == "suspended":
        return Refusal.SUSPENDED
    if row["batch_status"] != "sold":
        return Refusal.NOT_SOLD
    return None


async def member_card(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, card_id: int | None = None
                      ) -> int | None:
    """The card a member's redemption credits: ``card_id`` if it is the member's and active, else
    (``card_id`` None) the member's first active card; None when there is none."""
    value = await conn.fetchval(
        "SELECT id FROM loyalty.cards WHERE member_id = $1 AND status = 'active' AND ($2::bigint IS NULL OR id = $2) "
        "ORDER BY id LIMIT 1", member_id, card_id)
    return None if value is None else int(value)


async def redeem(ledger: Ledger, pool: asyncpg.Pool, master_key: bytes, serial: str, code: str, card_id: int | None,
                 who: Subjects, policy: GuessPolicy, *, channel: Channel = Channel.API,
                 merchant_id: str | None = None, terminal_id: str | None = None,
                 rrn: str | None = None, stan: str | None = None, expect_points: int | None = None,
                 receipt_ref: ReceiptRef | None = None, pan_hash: bytes | None = None,
                 reader: Coalescer | None = None) -> Redemption:
    """Credit card ``card_id`` with the points of the card ``serial`` once, if ``code`` is its code.

    The card credited is ``card_id``, or (``card_id`` None) the card whose number's keyed hash is
    ``pan_hash`` (ledger.loyalty.card_numbers: a terminal's field 2); it must be active, or the
    answer is :attr:`Refusal.NO_CARD`. Declines name a :class:`Refusal`; a failed guess (no such
    serial, wrong code) counts against every subject in ``who`` and the card's member. Redeeming
    again with the same card answers the first redemption. ``expect_points``: the amount a
    terminal sent, which must be the card's points. ``receipt_ref``: the key (and content hash)
    a terminal's answer is kept under, by reference to the journal (a retransmission's answer is
    rebuilt from it); when a receipt is stored under that key, nothing is done and the answer is
    :attr:`Refusal.ANSWERED`, with the receipt in ``stored`` and, for one stored by reference,
    what its journal recorded (``answered_rrn``, ``points``, ``program``, ``points_balance``).
    Without it, the receipt is kept under the journal's own key.

    One round trip reads (_REDEEM_SQL; through ``reader``, coalesced with other redemptions', when
    given), one posts (batched with others); the journal's trigger
    decides between racers: of concurrent redemptions by different cards, one posts and the others
    are conflicts under the card's key (:attr:`Refusal.USED`); one that the end of day overtook is
    refused by the trigger and read again (:attr:`Refusal.EXPIRED`).
    """
    if (card_id is None) == (pan_hash is None):
        raise ValueError("redeem: give card_id or pan_hash, not both")
    subjects = dict(p for p in who.pairs() if p[0] != "member")  # the card's member is added by the query
    formed = well_formed(serial, code)
    expected = code_hash(code_key(master_key), serial, code) if formed else b""
    read = (serial if formed else "", card_id, subjects.get("address"), subjects.get("terminal"), pan_hash,
            receipt_ref.idempotency_key if receipt_ref is not None else None)
    reads = reader or Coalescer(pool, _REDEEM_SQL)
    row = await reads.fetch(*read)
    assert row is not None, "ledger.business_day has no row"
    stored = stored_receipt(row["receipt_hash"], row["receipt_payload"])
    if stored is not None:
        was = json_object(row["receipt_txn"]) if row["receipt_txn"] is not None else {}
        return Redemption(Refusal.ANSWERED, serial, int(was.get("amount", 0)), was.get("program"),
                          stored=stored, answered_rrn=was.get("rrn"),
                          points_balance=None if row["receipt_balance"] is None else int(row["receipt_balance"]))
    if row["credited_card_id"] is None or row["credited_card_status"] != "active":
        return Redemption(Refusal.NO_CARD, serial)
    if row["locked"]:
        return Redemption(Refusal.LOCKED, serial)
    if row["serial"] is None or not hmac.compare_digest(bytes(row["code_hash"]), expected):
        member_id = who.member_id if who.member_id is not None else int(row["member_id"])
        await record_failure(pool, Subjects(member_id, who.address, who.terminal_id), policy)
        return Redemption(Refusal.INVALID, serial)
    if expect_points is not None and expect_points != int(row["points"]):
        return Redemption(Refusal.AMOUNT, serial, program=row["program"])
    card = int(row["credited_card_id"])
    refusal = _refusal_of(row, card, row["open_date"])
    if refusal is not None:
        return Redemption(refusal, serial, program=row["program"])
    points, program = int(row["points"]), str(row["program"])
    float_ = row["float_account_id"] or await _operator_account(pool, program, row["points_asset"], FLOAT_PURPOSE)
    member = row["member_account_id"] or await open_account(pool, "card", str(card), row["points_asset"],
                                                            "credit", "guarded", "points")
    key = redeem_key(serial)
    txn: dict[str, Any] = {
        "type": REDEEM_TYPE, "card_id": card, "program": program, "amount": points,
        "currency": row["currency"], "points_delta": points, "money_delta_minor": 0, "fee_minor": 0,
        "channel": str(channel)}
    for name, value in (("merchant_id", merchant_id), ("terminal_id", terminal_id), ("rrn", rrn), ("stan", stan)):
        if value:
            txn[name] = value
    cmd = transfer(key, [Leg(float_, member, points)], metadata={"txn": txn, "voucher": serial})
    # The content names the card: a second card's attempt under the same key is a conflict.
    ref = receipt_ref or ReceiptRef(key, hashlib.sha256(f"{key}:{card}".encode()).digest())
    res: Result = await ledger.post(cmd, receipt_ref=ref)
    if not res.ok:
        if res.status == Status.CONFLICT:
            return Redemption(Refusal.USED, serial, program=program)
        if res.reason != UNKNOWN:
            # Nothing was posted. Refused by the journal's trigger? The card's row says why.
            now = await reads.fetch(*read)
            refusal = _refusal_of(now, card, now["open_date"]) if now is not None and now["serial"] else None
            if refusal is not None:
                return Redemption(refusal, serial, program=program)
        return Redemption(Refusal.ERROR, serial, program=program, detail=f"{res.status} {res.detail or ''}".strip())
    # A replay's balances are its journal's, then; the member's balance now is what to answer.
    balance = res.balances.get(member) if res.status == Status.POSTED else None
    if balance is None:
        balance = await pool.fetchval("SELECT posted FROM ledger.accounts WHERE id = $1", member)
    return Redemption(None, serial, points, program, card, res.journal_id, replayed=res.status == Status.EXISTS,
                      points_balance=int(balance), result=res)


# --- breakage --------------------------------------------------------------------------------

_DUE_SQL = """
SELECT b.program, p.points_asset, p.points_outstanding_account_id AS outstanding,
       sum(b.points)::bigint AS points, count(*) AS cards
  FROM loyalty.vouchers v
  JOIN loyalty.voucher_batches b ON b.id = v.batch_id
  JOIN loyalty.programs p ON p.code = b.program
 WHERE v.status = 'issued' AND b.sale_journal_id IS NOT NULL AND b.expires_on <= $1
 GROUP BY b.program, p.points_asset, p.points_outstanding_account_id
 ORDER BY b.program
"""
_MARK_SQL = """
UPDATE loyalty.vouchers v SET status = 'expired', journal_id = $3
  FROM loyalty.voucher_batches b
 WHERE b.id = v.batch_id AND v.status = 'issued' AND b.sale_journal_id IS NOT NULL
   AND b.expires_on <= $1 AND b.program = $2
"""


async def expire_day(conn: asyncpg.Connection, ledger: Ledger, day: dt.date) -> dict[str, int]:
    """Move the points of sold cards past their last day (``expires_on <= day``) and unredeemed to
    breakage: one journal per program (idempotent by key), the cards marked expired.

    Run after the cut-over of ``day``: no redemption can take those cards any more (it requires
    ``expires_on`` >= the open day). Returns points moved per program.
    """
    moved: dict[str, int] = {}
    for row in await conn.fetch(_DUE_SQL, day):
        program, points = str(row["program"]), int(row["points"])
        float_ = await _operator_account(conn, program, row["points_asset"], FLOAT_PURPOSE)
        breakage = await _operator_account(conn, program, row["points_asset"], BREAKAGE_PURPOSE)
        cmd = transfer(breakage_key(day, program), [Leg(float_, breakage, points)],
                       metadata={"voucher_breakage": {"day": day.isoformat(), "program": program,
                                                      "cards": int(row["cards"]), "points": points}})
        res = await ledger.post(cmd)
        if not res.ok:
            raise VoucherError(f"vouchers: breakage of {program} for {day}: {res.status} {res.detail or ''}")
        await conn.execute(_MARK_SQL, day, program, res.journal_id)
        moved[program] = points
    return moved
