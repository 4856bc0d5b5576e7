"""The points mall: redeemable goods and online orders, paid with points or stored value through ledger holds.

Goods belong to a merchant and its program; a price in points and/or in money
(minor units of the program's currency); stock that never goes below zero (a
CHECK, and a conditional ``UPDATE ... WHERE stock >= quantity`` in the order's
own transaction); a validity window; active or disabled.

An order moves through these states, each step one idempotent ledger operation
under a key derived from the order (``mall:<order id>:<step>``)::

    placing -> placed -> confirmed -> shipped -> completed -> refunded (partial, repeatable)
       |         |           |
    rejected  cancelled   cancelled (a full refund)

- **place**: the order row (``placing``) and its stock, in one transaction; then a
  HOLD (``mall:<id>:hold``) of the amount from the member's points (or stored value)
  to the merchant's clearing account, for ``[mall] order_confirm_timeout_s``.
  Posted: ``placed``. Declined: ``rejected``, stock given back. A request key,
  unique per member, makes placing idempotent: the same key answers the same order.
- **confirm** (merchant): CAPTURE (``mall:<id>:capture``) with the fee leg, and the
  transaction record a terminal's redeem or stored-value purchase carries (its own
  RRN from the web seat's sequence, the merchant's web seat terminal, channel
  ``mall``), so the capture is cleared, settled, reconciled, exported and counted
  exactly like one.
- **ship**, **complete** (merchant): move no value; the status only.
- **cancel**: a placed order's hold is voided (``mall:<id>:release``); a confirmed
  one is refunded in full (below); stock is given back either way. A member may
  cancel a placed order, a merchant a placed or confirmed one.
- **refund** (merchant, completed orders): the loyalty refund of the capture's
  RRN (``mall:<id>:refund:<n>``), partial allowed; refunds add up to at most
  the captured amount.
- **timeout**: :meth:`Mall.expire_due` (run by the portal every ``[mall]
  sweep_interval_s``) expires placed orders' holds that are due (under the
  engine's own key ``expire:<hold id>``, so that the daemon's sweep of due holds
  and this one post it once), cancels those orders and gives their stock back;
  it also finishes orders left in ``placing`` by a crash (journal under the hold
  key: ``placed``; none: ``rejected``).

Crashes. The ledger posting and the order row's update are two transactions. A
crash between them leaves the row behind the ledger, never ahead: running the
same transition again posts nothing new (the same key answers EXISTS, or the hold
is found resolved by this order's own journal) and brings the row up to date. A
transition that finds the hold resolved otherwise (expired, voided) follows the
ledger: the order is cancelled and its stock given back. The row's status changes
only by compare-and-set (``WHERE status = <the one read>``), so two transitions
racing on one order cannot both apply; the ledger decides which of them moved
value (a hold is resolved once).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, fields
from typing import Any, cast

import asyncpg
import structlog

from ledger.commands import Command, Leg, Result, Status, capture, expire, hold, void
from ledger.engine import Receipt, ReceiptRef
from ledger.errors import SwitchdError, first_line
from ledger.loyalty import card_numbers
from ledger.loyalty.lookup import Context
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Channel, Outcome, Reason, Request, TxnType
from ledger.loyalty.rules import fee_bps_for, fee_minor, is_expired

log = structlog.get_logger("mall")

STATUSES = ("placing", "placed", "rejected", "confirmed", "shipped", "completed", "cancelled", "refunded")
PAY = ("points", "money")
ORDER_CHANNELS = (Channel.MALL, Channel.API, Channel.WEB, Channel.CLI)
GOOD_STATUSES = ("active", "disabled")
QUANTITY_MAX = 100
PAGE_SIZE_MAX = 200
NAME_LENGTH_MAX = 120
DESCRIPTION_LENGTH_MAX = 4000
ADDRESS_LENGTH_MAX = 300
NOTE_LENGTH_MAX = 300
PRICE_MAX = 999_999_999_999  # a terminal's field 4 cannot say more either
STOCK_MAX = 1_000_000_000
REQUEST_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
ERROR_CODES = frozenset({"not_found", "not_available", "out_of_stock", "insufficient", "invalid_state", "invalid",
                         "card_blocked", "system"})
# A confirmed order's way forward.
_PROGRESS = ("confirmed", "shipped", "completed", "refunded")
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class MallError(SwitchdError):
    """Why a mall operation did nothing; ``code`` is one of :data:`ERROR_CODES`, ``str()`` one line.

    ``order``: the order as it stands, when the error concerns one that exists (a rejected order).

    >>> e = MallError("out_of_stock", "only 1 left"); (e.code, str(e))
    ('out_of_stock', 'only 1 left')
    """

    def __init__(self, code: str, message: str, order: dict[str, Any] | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.order = order


@dataclass(frozen=True)
class MallSettings:
    """The ``[mall]`` section of the configuration (switch/config.py holds the defaults)."""

    order_confirm_timeout_s: int  # a placed order's hold lives this long; then the order is cancelled
    sweep_interval_s: float  # how often the portal's sweeper runs expire_due
    sweep_batch_max: int  # orders one sweep handles at most
    placing_stale_s: int  # an order still 'placing' this long after it was made was interrupted

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> MallSettings:
        """The settings from a mapping with an entry for each of them (others are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


# The schema's defaults (switch/config.py), for callers built without a configuration (the API,
# tests): tests/test_mall_domain.py checks that they are the schema's.
DEFAULT_SETTINGS = MallSettings(order_confirm_timeout_s=259_200, sweep_interval_s=60.0, sweep_batch_max=100,
                                placing_stale_s=300)


def order_key(order_id: int, step: str) -> str:
    """The idempotency key of one ledger operation of an order.

    >>> order_key(42, "hold"), order_key(42, "refund:2")
    ('mall:42:hold', 'mall:42:refund:2')
    """
    return f"mall:{order_id}:{step}"


# ---------------------------------------------------------------- goods


_GOOD_COLUMNS = ("g.id, g.merchant_id, g.program, g.name, g.description, g.image_id, g.price_points, "
                 "g.price_minor, g.stock, g.valid_from, g.valid_until, g.status, g.created_at, g.updated_at, "
                 "m.name AS merchant_name, p.currency")
_GOOD_FROM = ("loyalty.goods g JOIN loyalty.merchants m ON m.merchant_id = g.merchant_id "
              "JOIN loyalty.programs p ON p.code = g.program")
# Offered now: active, in its window, its merchant and program active.
_AVAILABLE = ("g.status = 'active' AND m.status = 'active' AND p.status = 'active' "
              "AND (g.valid_from IS NULL OR g.valid_from <= now()) AND (g.valid_until IS NULL OR g.valid_until > now())")


def _page_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= PAGE_SIZE_MAX:
        raise MallError("invalid", f"limit must be 1..{PAGE_SIZE_MAX}")
    return limit


async def list_goods(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str | None = None,
                     program: str | None = None, available_only: bool = True, after_id: int | None = None,
                     limit: int = 50) -> dict[str, Any]:
    """Goods by id (ascending), ``limit`` at a time after ``after_id``: ``{"goods": [...], "next_after_id"}``.

    ``available_only``: only what may be ordered now (active, in its validity window, its
    merchant and program active; stock may be 0). ``next_after_id`` is None on the last page.
    """
    limit = _page_limit(limit)
    where, args = ["($1::text IS NULL OR g.merchant_id = $1)", "($2::text IS NULL OR g.program = $2)",
                   "($3::bigint IS NULL OR g.id > $3)"], [merchant_id, program, after_id]
    if available_only:
        where.append(_AVAILABLE)
    rows = await conn.fetch(f"SELECT {_GOOD_COLUMNS} FROM {_GOOD_FROM} WHERE {' AND '.join(where)} "
                            f"ORDER BY g.id LIMIT {limit + 1}", *args)
    goods = [dict(r) for r in rows[:limit]]
    return {"goods": goods, "next_after_id": goods[-1]["id"] if len(rows) > limit else None}


async def get_good(conn: asyncpg.Connection | asyncpg.Pool, good_id: int) -> dict[str, Any] | None:
    """One good with its merchant's name and its program's currency, and ``available`` (orderable now)."""
    row = await conn.fetchrow(f"SELECT {_GOOD_COLUMNS}, ({_AVAILABLE}) AS available FROM {_GOOD_FROM} "
                              "WHERE g.id = $1", good_id)
    return None if row is None else dict(row)


@dataclass(frozen=True)
class GoodForm:
    """What a merchant says about a good (add and edit)."""

    name: str
    description: str
    price_points: int | None
    price_minor: int | None
    stock: int
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None

    def check(self) -> None:
        """MallError ``invalid`` naming the first field that is wrong.

        >>> GoodForm("Mug", "", None, None, 5).check()
        Traceback (most recent call last):
        ...
        ledger.loyalty.mall.MallError: a good needs a price in points or in money
        """
        if not 1 <= len(self.name.strip()) <= NAME_LENGTH_MAX or not self.name.isprintable():
            raise MallError("invalid", f"name: 1..{NAME_LENGTH_MAX} printable characters")
        if len(self.description) > DESCRIPTION_LENGTH_MAX:
            raise MallError("invalid", f"description: at most {DESCRIPTION_LENGTH_MAX} characters")
        if self.price_points is None and self.price_minor is None:
            raise MallError("invalid", "a good needs a price in points or in money")
        for name, value in (("price in points", self.price_points), ("price", self.price_minor)):
            if value is not None and not (isinstance(value, int) and 0 < value <= PRICE_MAX):
                raise MallError("invalid", f"{name}: a whole number 1..{PRICE_MAX}")
        if not isinstance(self.stock, int) or not 0 <= self.stock <= STOCK_MAX:
            raise MallError("invalid", f"stock: a whole number 0..{STOCK_MAX}")
        if self.valid_from is not None and self.valid_until is not None and self.valid_from >= self.valid_until:
            raise MallError("invalid", "the validity window ends before it starts")


async def add_good(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str, form: GoodForm,
                   image_id: int | None = None) -> int:
    """A new good of ``merchant_id``, in its program; its id."""
    form.check()
    good_id = await conn.fetchval(
        "INSERT INTO loyalty.goods (merchant_id, program, name, description, image_id, price_points, price_minor, "
        "stock, valid_from, valid_until) SELECT m.merchant_id, m.program, $2, $3, $4, $5, $6, $7, $8, $9 "
        "FROM loyalty.merchants m WHERE m.merchant_id = $1 RETURNING id",
        merchant_id, form.name.strip(), form.description, image_id, form.price_points, form.price_minor,
        form.stock, form.valid_from, form.valid_until)
    if good_id is None:
        raise MallError("not_found", f"no merchant {merchant_id}")
    return int(good_id)


async def edit_good(conn: asyncpg.Connection | asyncpg.Pool, good_id: int, merchant_id: str, form: GoodForm,
                    image_id: int | None = None) -> None:
    """Change a good of ``merchant_id`` (``image_id`` None keeps its image). The stock set here is
    the stock from now on; orders in flight have taken theirs already."""
    form.check()
    done = await conn.fetchval(
        "UPDATE loyalty.goods SET name = $3, description = $4, image_id = coalesce($5, image_id), "
        "price_points = $6, price_minor = $7, stock = $8, valid_from = $9, valid_until = $10, updated_at = now() "
        "WHERE id = $1 AND merchant_id = $2 RETURNING id",
        good_id, merchant_id, form.name.strip(), form.description, image_id, form.price_points, form.price_minor,
        form.stock, form.valid_from, form.valid_until)
    if done is None:
        raise MallError("not_found", f"no good {good_id}")


async def set_good_status(conn: asyncpg.Connection | asyncpg.Pool, good_id: int, merchant_id: str,
                          status: str) -> None:
    """Enable or disable a good of ``merchant_id`` (a disabled good takes no orders; its orders go on)."""
    if status not in GOOD_STATUSES:
        raise MallError("invalid", f"status must be one of {', '.join(GOOD_STATUSES)}")
    done = await conn.fetchval("UPDATE loyalty.goods SET status = $3, updated_at = now() "
                               "WHERE id = $1 AND merchant_id = $2 RETURNING id", good_id, merchant_id, status)
    if done is None:
        raise MallError("not_found", f"no good {good_id}")


# ---------------------------------------------------------------- orders: reads


_ORDER_COLUMNS = ("o.id, o.member_id, o.card_id, o.merchant_id, o.good_id, o.program, o.good_name, o.quantity, "
                  "o.pay, o.amount, o.currency, o.status, o.request_key, o.channel, o.delivery_address, o.hold_id, "
                  "o.capture_journal_id, o.capture_rrn, o.refunded_amount, o.refunds, o.note, o.reject_code, "
                  "o.taken_by, o.created_at, o.updated_at, m.name AS merchant_name, "
                  "h.expires_at AS hold_expires_at")
_ORDER_FROM = ("loyalty.orders o JOIN loyalty.merchants m ON m.merchant_id = o.merchant_id "
               "LEFT JOIN ledger.holds h ON h.id = o.hold_id")


async def list_orders(conn: asyncpg.Connection | asyncpg.Pool, member_id: int | None = None,
                      merchant_id: str | None = None, status: str | None = None, after_id: int | None = None,
                      limit: int = 50) -> dict[str, Any]:
    """Orders newest first, ``limit`` at a time after ``after_id`` (the last id of the page before):
    ``{"orders": [...], "next_after_id"}`` (None on the last page). Filters: the member's, the
    merchant's, one status."""
    limit = _page_limit(limit)
    if status is not None and status not in STATUSES:
        raise MallError("invalid", f"status must be one of {', '.join(STATUSES)}")
    rows = await conn.fetch(
        f"SELECT {_ORDER_COLUMNS} FROM {_ORDER_FROM} WHERE ($1::bigint IS NULL OR o.member_id = $1) "
        "AND ($2::text IS NULL OR o.merchant_id = $2) AND ($3::text IS NULL OR o.status = $3) "
        f"AND ($4::bigint IS NULL OR o.id < $4) ORDER BY o.id DESC LIMIT {limit + 1}",
        member_id, merchant_id, status, after_id)
    orders = [dict(r) for r in rows[:limit]]
    return {"orders": orders, "next_after_id": orders[-1]["id"] if len(rows) > limit else None}


async def get_order(conn: asyncpg.Connection | asyncpg.Pool, order_id: int, member_id: int | None = None,
                    merchant_id: str | None = None) -> dict[str, Any] | None:
    """One order; None when there is none, or (``member_id``, ``merchant_id`` given) it is
    another member's or another merchant's: they are answered alike."""
    if not isinstance(order_id, int) or not 0 < order_id < 2**63:
        return None
    row = await conn.fetchrow(f"SELECT {_ORDER_COLUMNS} FROM {_ORDER_FROM} WHERE o.id = $1 "
                              "AND ($2::bigint IS NULL OR o.member_id = $2) "
                              "AND ($3::text IS NULL OR o.merchant_id = $3)", order_id, member_id, merchant_id)
    return None if row is None else dict(row)


# ---------------------------------------------------------------- orders: transitions

# Everything place() decides on, in one round trip: the good, its merchant, program and currency,
# the member's card (only when it is the member's) and its accounts, and the order already placed
# under the request key, if any. One row always (the good's columns NULL when there is none).
_PLACE_SQL = """
SELECT g.id AS good_id, g.merchant_id, g.program, g.name, g.price_points, g.price_minor, g.stock,
       (g.status = 'active' AND m.status = 'active' AND p.status = 'active'
        AND (g.valid_from IS NULL OR g.valid_from <= now())
        AND (g.valid_until IS NULL OR g.valid_until > now())) AS available,
       m.clearing_points_account_id, m.clearing_money_account_id, p.points_asset, p.currency,
       p.txn_max_points, cur.asset AS money_asset, cur.txn_max_minor,
       c.id AS card_id, c.status AS card_status, c.expiry, mb.status AS member_status,
       pa.id AS points_account_id, sa.id AS sv_account_id, x.id AS existing_id
  FROM (SELECT 1) AS one
  LEFT JOIN loyalty.goods g ON g.id = $1
  LEFT JOIN loyalty.merchants m ON m.merchant_id = g.merchant_id
  LEFT JOIN loyalty.programs p ON p.code = g.program
  LEFT JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
  LEFT JOIN loyalty.cards c ON c.id = $2 AND c.member_id = $3
  LEFT JOIN loyalty.members mb ON mb.id = c.member_id
  LEFT JOIN ledger.accounts pa ON pa.owner_kind = 'card' AND pa.owner_id = c.id::text
                              AND pa.purpose = 'points' AND pa.asset = p.points_asset
  LEFT JOIN ledger.accounts sa ON sa.owner_kind = 'card' AND sa.owner_id = c.id::text
                              AND sa.purpose = 'stored_value' AND sa.asset = cur.asset
  LEFT JOIN loyalty.orders x ON x.member_id = $3 AND x.request_key = $4
"""

# The order row and its stock in one statement (one transaction): no stock taken, no order;
# ``taken`` without an order is a request key used a moment before (its stock is given back).
_INSERT_SQL = """
WITH g AS (
    UPDATE loyalty.goods SET stock = stock - $7, updated_at = now() WHERE id = $4 AND stock >= $7 RETURNING id
), o AS (
    INSERT INTO loyalty.orders (member_id, card_id, merchant_id, good_id, program, good_name, quantity, pay, amount,
                                currency, status, request_key, channel, delivery_address, taken_by)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'placing', $11, $12, $13, $14 FROM g
    ON CONFLICT (member_id, request_key) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM g) AS taken, (SELECT id FROM o) AS order_id
"""

# A placing order placed under its hold, read back (as get_order reads it) in the same statement.
_PLACED_SQL = f"""
WITH o AS (
    UPDATE loyalty.orders SET status = 'placed', hold_id = $2, updated_at = now()
     WHERE id = $1 AND status = 'placing' RETURNING *
)
SELECT {_ORDER_COLUMNS} FROM o JOIN loyalty.merchants m ON m.merchant_id = o.merchant_id
  LEFT JOIN ledger.holds h ON h.id = o.hold_id
"""

# What confirm() posts with: the merchant's web seat terminal, an RRN, the card, the fee schedule.
_CAPTURE_SQL = """
SELECT s.terminal_id, s.status AS terminal_status, nextval('loyalty.seat_rrn_seq')::text AS rrn, c.pan_hash,
       c.pan_sealed, m.fee_bps, m.clearing_money_account_id, p.redeem_value_minor, cur.fee_income_account_id
  FROM loyalty.orders o
  JOIN loyalty.cards c ON c.id = o.card_id
  JOIN loyalty.merchants m ON m.merchant_id = o.merchant_id
  JOIN loyalty.programs p ON p.code = o.program
  JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
  LEFT JOIN LATERAL loyalty.seat_terminal(o.merchant_id) s ON true
 WHERE o.id = $1
"""

# A status change by compare-and-set, with the stock given back in the same statement when asked.
_MOVE_SQL = """
WITH o AS (
    UPDATE loyalty.orders SET status = $2, note = CASE WHEN $5::text = '' THEN note ELSE $5 END,
           reject_code = coalesce($6, reject_code), updated_at = now()
     WHERE id = $1 AND status = ANY($3::text[])
    RETURNING good_id, quantity
), g AS (
    UPDATE loyalty.goods g SET stock = g.stock + o.quantity, updated_at = now()
      FROM o WHERE g.id = o.good_id AND $4
    RETURNING g.id
)
SELECT count(*) FROM o
"""


class Mall:
    """The order transitions over the loyalty operations (for refunds) and the ledger engine."""

    def __init__(self, loyalty: Loyalty, pool: asyncpg.Pool, settings: MallSettings | None = None) -> None:
        self.loyalty = loyalty
        self.ledger = loyalty.ledger
        self.pool = pool
        self.settings = settings or DEFAULT_SETTINGS

    # ------------------------------------------------------------ helpers

    async def _order(self, order_id: int, member_id: int | None = None,
                     merchant_id: str | None = None) -> dict[str, Any]:
        try:
            order = await get_order(self.pool, order_id, member_id, merchant_id)
        except _DB_ERRORS as exc:
            raise MallError("system", f"database: {first_line(exc)}") from None
        if order is None:
            raise MallError("not_found", f"no order {order_id}")
        return order

    async def _move(self, order_id: int, to: str, from_: tuple[str, ...], stock_back: bool = False,
                    note: str = "", reject_code: str | None = None) -> bool:
        """Compare-and-set the status (``from_`` -> ``to``); True when this call moved it."""
        moved = await self.pool.fetchval(_MOVE_SQL, order_id, to, list(from_), stock_back,
                                         note[:NOTE_LENGTH_MAX], reject_code)
        return bool(moved)

    async def _post(self, cmd: Command, receipt_ref: ReceiptRef | None = None) -> Result:
        res = await self.ledger.post(cmd, receipt_ref=receipt_ref)
        if res.status is Status.ERROR:
            raise MallError("system", f"ledger: {res.detail}")
        return res

    async def _journal_under(self, key: str) -> int | None:
        jid = await self.pool.fetchval("SELECT id FROM ledger.journals WHERE idempotency_key = $1", key)
        return None if jid is None else int(jid)

    async def _hold_state(self, hold_id: int) -> tuple[str, str | None]:
        """A hold's state and the key of the journal that resolved it (None while pending)."""
        row = await self.pool.fetchrow(
            "SELECT h.state, j.idempotency_key FROM ledger.holds h "
            "LEFT JOIN ledger.journals j ON j.id = h.resolved_by WHERE h.id = $1", hold_id)
        assert row is not None, f"hold {hold_id} vanished"
        return str(row["state"]), row["idempotency_key"]

    async def _settle_captured(self, order: dict[str, Any], journal_id: int) -> None:
        """The row follows a capture posted under the order's key (this call's or an earlier one's)."""
        meta = await self.pool.fetchval("SELECT metadata->'txn'->>'rrn' FROM ledger.journals WHERE id = $1",
                                        journal_id)
        await self.pool.execute(
            "UPDATE loyalty.orders SET status = 'confirmed', capture_journal_id = $2, capture_rrn = $3, "
            "updated_at = now() WHERE id = $1 AND status = 'placed'", order["id"], journal_id, meta)

    async def _follow_hold(self, order: dict[str, Any]) -> str:
        """For a placed order whose hold is no longer pending: bring the row to what the ledger
        did (captured by this order: confirmed; expired or voided: cancelled, stock back).
        Returns the hold's state."""
        state, key = await self._hold_state(int(order["hold_id"]))
        if state == "captured" and key == order_key(order["id"], "capture"):
            jid = await self._journal_under(key)
            assert jid is not None
            await self._settle_captured(order, jid)
        elif state in ("expired", "voided"):
            note = "the order was not confirmed in time" if state == "expired" else ""
            await self._move(order["id"], "cancelled", ("placed",), stock_back=True, note=note)
        return state

    # ------------------------------------------------------------ place

    async def place(self, member_id: int, card_id: int, good_id: int, quantity: int, pay: str, request_key: str,
                    channel: str, delivery_address: str, taken_by: str | None = None) -> dict[str, Any]:
        """Order ``quantity`` of a good for the member, paid from ``card_id`` with ``pay``
        (``points`` or ``money``): the order, placed (its amount held). The same
        ``request_key`` answers the same order (or raises the same error) whatever its state.

        Raises MallError: ``not_found`` (no such good, or not the member's card),
        ``not_available``, ``out_of_stock``, ``invalid`` (quantity, payment, key, a key
        reused for another order), ``card_blocked`` and ``insufficient`` (the order is
        recorded as rejected: ``.order``), ``system`` (nothing known to be done: the same
        request again finishes it).
        """
        self._check_place(quantity, pay, request_key, channel, delivery_address, taken_by)
        try:
            ctx = await self.pool.fetchrow(_PLACE_SQL, good_id, card_id, member_id, request_key)
            assert ctx is not None  # one row, always
            accounts: tuple[int | None, int] | None = None
            if ctx["existing_id"] is not None:
                order = await self._same_order(int(ctx["existing_id"]), good_id, quantity, pay, card_id)
            else:
                order = await self._insert(ctx, member_id, card_id, good_id, quantity, pay, request_key, channel,
                                           delivery_address, taken_by)
                accounts = ((ctx["points_account_id"] if pay == "points" else ctx["sv_account_id"]),
                            int(ctx["clearing_points_account_id" if pay == "points" else "clearing_money_account_id"]))
            if order["status"] == "placing":
                order = await self._hold_placing(order, accounts)
        except _DB_ERRORS as exc:
            raise MallError("system", f"database: {first_line(exc)}") from None
        if order["status"] == "rejected":
            raise MallError(order["reject_code"] or "invalid", order["note"] or "the order was rejected", order)
        return order

    @staticmethod
    def _check_place(quantity: int, pay: str, request_key: str, channel: str, delivery_address: str,
                     taken_by: str | None) -> None:
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= QUANTITY_MAX:
            raise MallError("invalid", f"quantity: 1..{QUANTITY_MAX}")
        if pay not in PAY:
            raise MallError("invalid", "pay with points or money")
        if not isinstance(request_key, str) or not REQUEST_KEY.match(request_key):
            raise MallError("invalid", "request key: 8..64 letters, digits, _ or -")
        if channel not in ORDER_CHANNELS:
            raise MallError("invalid", f"channel must be one of {', '.join(ORDER_CHANNELS)}")
        if not isinstance(delivery_address, str) or len(delivery_address) > ADDRESS_LENGTH_MAX:
            raise MallError("invalid", f"delivery address: at most {ADDRESS_LENGTH_MAX} characters")
        if taken_by is not None and not 1 <= len(taken_by) <= 100:
            raise MallError("invalid", "taken by: 1..100 characters")

    async def _same_order(self, order_id: int, good_id: int, quantity: int, pay: str,
                          card_id: int) -> dict[str, Any]:
        """The order placed before under the request's key, when it is the same order."""
        order = await self._order(order_id)
        if (order["good_id"], order["quantity"], order["pay"], order["card_id"]) != (good_id, quantity, pay, card_id):
            raise MallError("invalid", "this request key was used for another order")
        return order

    async def _existing(self, member_id: int, request_key: str, good_id: int, quantity: int, pay: str,
                        card_id: int) -> dict[str, Any] | None:
        oid = await self.pool.fetchval("SELECT id FROM loyalty.orders WHERE member_id = $1 AND request_key = $2",
                                       member_id, request_key)
        return None if oid is None else await self._same_order(int(oid), good_id, quantity, pay, card_id)

    async def _insert(self, ctx: asyncpg.Record, member_id: int, card_id: int, good_id: int, quantity: int,
                      pay: str, request_key: str, channel: str, delivery_address: str,
                      taken_by: str | None) -> dict[str, Any]:
        """A new order (``placing``) and its stock, after the checks ``ctx`` (_PLACE_SQL) allows."""
        if ctx["good_id"] is None:
            raise MallError("not_found", f"no good {good_id}")
        if ctx["card_id"] is None:
            raise MallError("not_found", "no such card for this member")
        if ctx["card_status"] == "blocked" or ctx["member_status"] != "active":
            raise MallError("card_blocked", "the card is blocked")
        if ctx["card_status"] == "expired" or is_expired(ctx["expiry"], dt.datetime.now(dt.UTC).date()):
            raise MallError("card_blocked", "the card has expired")
        if not ctx["available"]:
            raise MallError("not_available", "this good is not offered now")
        price = ctx["price_points"] if pay == "points" else ctx["price_minor"]
        if price is None:
            raise MallError("invalid", f"this good cannot be paid with {pay}")
        amount = int(price) * quantity
        bound = ctx["txn_max_points"] if pay == "points" else ctx["txn_max_minor"]
        if amount > bound:
            raise MallError("invalid", f"the order's amount {amount} is above the maximum {bound}")
        row = await self.pool.fetchrow(
            _INSERT_SQL, member_id, card_id, ctx["merchant_id"], good_id, ctx["program"], ctx["name"], quantity, pay,
            amount, ctx["currency"] if pay == "money" else None, request_key, str(channel), delivery_address, taken_by)
        assert row is not None
        if row["order_id"] is not None:
            return {"id": int(row["order_id"]), "status": "placing", "amount": amount, "card_id": card_id,
                    "merchant_id": ctx["merchant_id"], "program": ctx["program"], "pay": pay}
        if row["taken"]:  # the same request a moment before made the order: this stock goes back
            await self.pool.execute("UPDATE loyalty.goods SET stock = stock + $2, updated_at = now() WHERE id = $1",
                                    good_id, quantity)
        existing = await self._existing(member_id, request_key, good_id, quantity, pay, card_id)
        if existing is None:
            raise MallError("out_of_stock", f"fewer than {quantity} left")
        return existing

    async def _accounts(self, order: dict[str, Any]) -> tuple[int | None, int]:
        """(member account, merchant clearing account) an order's hold moves between; the member's
        is None when the card has none in the order's program (or no stored value): nothing to pay
        with. None is never made here, so that an order does not enrol a card in a program."""
        row = await self.pool.fetchrow(
            "SELECT CASE WHEN $3 = 'points' THEN m.clearing_points_account_id ELSE m.clearing_money_account_id "
            "END AS clearing, a.id AS member FROM loyalty.merchants m JOIN loyalty.programs p ON p.code = $2 "
            "JOIN loyalty.currencies cur ON cur.numeric_code = p.currency "
            "LEFT JOIN ledger.accounts a ON a.owner_kind = 'card' AND a.owner_id = $4 "
            "     AND a.purpose = CASE WHEN $3 = 'points' THEN 'points' ELSE 'stored_value' END "
            "     AND a.asset = CASE WHEN $3 = 'points' THEN p.points_asset ELSE cur.asset END "
            "WHERE m.merchant_id = $1", order["merchant_id"], order["program"], order["pay"], str(order["card_id"]))
        assert row is not None
        return (None if row["member"] is None else int(row["member"])), int(row["clearing"])

    async def _hold_placing(self, order: dict[str, Any],
                            accounts: tuple[int | None, int] | None = None) -> dict[str, Any]:
        """Post the hold of an order in ``placing`` (again, after a crash: the same key) and record what
        happened. ``accounts``: (member, clearing) as place() read them, else read here."""
        oid = order["id"]
        member, clearing = accounts if accounts is not None else await self._accounts(order)
        key = order_key(oid, "hold")
        if member is None:  # never had points in this program (or stored value): nothing to hold
            await self._move(oid, "rejected", ("placing",), stock_back=True, note="not enough points or stored value",
                             reject_code="insufficient")
            return await self._order(oid)
        res = await self._post(hold(key, Leg(member, clearing, int(order["amount"])),
                                    self.settings.order_confirm_timeout_s, metadata={"mall_order": oid}))
        jid = res.journal_id
        if res.status is Status.CONFLICT:  # posted before with other settings (a timeout changed meanwhile)
            jid = await self._journal_under(key)
        if res.status in (Status.POSTED, Status.EXISTS) or jid is not None:
            assert jid is not None
            placed = await self.pool.fetchrow(_PLACED_SQL, oid, jid)
            if placed is not None:
                return dict(placed)
            if (await self._order(oid))["status"] == "rejected":
                # The sweeper gave the order up while this hold was on its way: release it.
                await self._post(void(order_key(oid, "release"), jid, metadata={"mall_order": oid}))
            return await self._order(oid)
        if res.status is Status.DECLINED:
            code = {"limit": "insufficient", "inactive": "card_blocked"}.get(res.reason or "", "invalid")
            note = {"insufficient": "not enough points or stored value", "card_blocked": "the card's account is frozen"
                    }.get(code, res.detail or "declined")
        else:
            code, note = "invalid", res.detail or str(res.status)
        await self._move(oid, "rejected", ("placing",), stock_back=True, note=note, reject_code=code)
        return await self._order(oid)

    # ------------------------------------------------------------ confirm, ship, complete

    async def confirm(self, order_id: int, merchant_id: str, operator_ref: str | None = None) -> dict[str, Any]:
        """Capture a placed order's hold with its fee (a redeem or stored-value purchase at the
        merchant); the order, confirmed. Running it again on a confirmed order changes nothing."""
        order = await self._order(order_id, merchant_id=merchant_id)
        try:
            if order["status"] == "placed":
                await self._capture(order, operator_ref)
                order = await self._order(order_id)
        except _DB_ERRORS as exc:
            raise MallError("system", f"database: {first_line(exc)}") from None
        if order["status"] in ("confirmed", "shipped", "completed", "refunded"):
            return order
        if order["status"] == "cancelled":
            raise MallError("invalid_state", order["note"] or "the order was cancelled", order)
        raise MallError("invalid_state", f"a {order['status']} order cannot be confirmed", order)

    async def _capture(self, order: dict[str, Any], operator_ref: str | None) -> None:
        oid = order["id"]
        ctx = await self.pool.fetchrow(_CAPTURE_SQL, oid)
        assert ctx is not None
        if ctx["terminal_status"] != "active":
            raise MallError("not_available", f"the merchant's web seat terminal {ctx['terminal_id']} is "
                            f"{ctx['terminal_status']}")
        amount = int(order["amount"])
        points = order["pay"] == "points"
        raw_fees = ctx["fee_bps"]
        fees: dict[str, int] = json.loads(raw_fees) if isinstance(raw_fees, str) else dict(raw_fees)
        # The fee exactly as a terminal's redeem or stored-value purchase of this amount pays it.
        if points:
            t = TxnType.REDEEM
            fee = fee_minor(amount * int(ctx["redeem_value_minor"]), fee_bps_for(fees, "redeem"))
        else:
            t = TxnType.SV_PURCHASE
            fee = fee_minor(amount, fee_bps_for(fees, "sv_purchase"))
        key = order_key(oid, "capture")
        req = Request(key=key, terminal_id=ctx["terminal_id"], merchant_id=order["merchant_id"], pan=await _card_number(self.pool, ctx),
                      amount=amount, currency=None if points else order["currency"], rrn=ctx["rrn"],
                      account=t.account, channel=Channel.MALL, operator_ref=operator_ref)
        # card_id, program and currency are given: the record needs nothing of a request context.
        txn = Loyalty._txn_record(t, req, cast(Context, None), points=-amount if points else 0,
                                  money=0 if points else -amount, fee=fee, card_id=int(order["card_id"]),
                                  program=order["program"])
        meta = {"txn": txn, "out": {"points_earned": 0, "points_redeemed": amount if points else 0},
                "mall_order": oid}
        legs = [Leg(int(ctx["clearing_money_account_id"]), int(ctx["fee_income_account_id"]), fee)] if fee > 0 else []
        # Its answer is on record like a terminal's (by reference to the journal, stored with it):
        # reconciliation finds every transaction's journal claimed by exactly one stored answer.
        res = await self._post(capture(key, int(order["hold_id"]), metadata=meta, legs=legs),
                               ReceiptRef(key, _content_hash(oid, "capture", amount)))
        jid = res.journal_id if res.status in (Status.POSTED, Status.EXISTS) else await self._journal_under(key)
        if jid is not None:
            await self._settle_captured(order, jid)
            return
        if res.status is Status.DECLINED and res.reason == "expired":
            await self._expire_hold(order)
            raise MallError("invalid_state", "the order was not confirmed in time: it is cancelled")
        if res.status is Status.INVALID and await self._follow_hold(order) != "pending":
            return  # resolved before: the row now says how
        raise MallError("not_available" if res.status is Status.DECLINED else "system",
                        f"the capture was {res.status}: {res.detail}")

    async def ship(self, order_id: int, merchant_id: str) -> dict[str, Any]:
        """A confirmed order, shipped (no value moves)."""
        return await self._step(order_id, merchant_id, "confirmed", "shipped")

    async def complete(self, order_id: int, merchant_id: str) -> dict[str, Any]:
        """A shipped order, completed (no value moves); from now on it may be refunded."""
        return await self._step(order_id, merchant_id, "shipped", "completed")

    async def _step(self, order_id: int, merchant_id: str, from_: str, to: str) -> dict[str, Any]:
        order = await self._order(order_id, merchant_id=merchant_id)
        if order["status"] == from_:
            try:
                await self._move(order_id, to, (from_,))
            except _DB_ERRORS as exc:
                raise MallError("system", f"database: {first_line(exc)}") from None
            order = await self._order(order_id)
        # Done already (this step, or a later one): nothing changes.
        if order["status"] in _PROGRESS and _PROGRESS.index(order["status"]) >= _PROGRESS.index(to):
            return order
        raise MallError("invalid_state", f"a {order['status']} order cannot be {to}", order)

    # ------------------------------------------------------------ cancel, refund

    async def cancel(self, order_id: int, by_member_id: int | None = None, by_merchant_id: str | None = None,
                     reason: str = "") -> dict[str, Any]:
        """Cancel an order: a member its placed order, a merchant a placed or confirmed one (a
        confirmed order is refunded in full). The hold is released, the stock given back.
        Running it again on a cancelled order changes nothing."""
        if (by_member_id is None) == (by_merchant_id is None):
            raise MallError("invalid", "an order is cancelled by its member or by its merchant")
        order = await self._order(order_id, member_id=by_member_id, merchant_id=by_merchant_id)
        note = reason.strip()[:NOTE_LENGTH_MAX] or ("cancelled by the member" if by_member_id is not None
                                                     else "cancelled by the merchant")
        try:
            if order["status"] == "placed":
                await self._release(order, note)
                order = await self._order(order_id)
            if order["status"] == "confirmed" and by_merchant_id is not None:
                await self._refund(order, int(order["amount"]) - int(order["refunded_amount"]), None,
                                   cancel_note=note)
                order = await self._order(order_id)
        except _DB_ERRORS as exc:
            raise MallError("system", f"database: {first_line(exc)}") from None
        if order["status"] == "cancelled":
            return order
        raise MallError("invalid_state", f"a {order['status']} order cannot be cancelled"
                        + (" by its member" if by_member_id is not None else ""), order)

    async def _release(self, order: dict[str, Any], note: str) -> None:
        res = await self._post(void(order_key(order["id"], "release"), int(order["hold_id"]),
                                    metadata={"mall_order": order["id"]}))
        if res.status in (Status.POSTED, Status.EXISTS):
            await self._move(order["id"], "cancelled", ("placed",), stock_back=True, note=note)
        else:
            await self._follow_hold(order)  # captured, expired or voided meanwhile

    async def _expire_hold(self, order: dict[str, Any]) -> None:
        hold_id = int(order["hold_id"])
        # The engine's own key: the daemon's sweep of due holds and this one post it once.
        res = await self._post(expire(f"expire:{hold_id}", hold_id))
        if res.status in (Status.POSTED, Status.EXISTS):
            await self._move(order["id"], "cancelled", ("placed",), stock_back=True,
                             note="the order was not confirmed in time")
        else:
            await self._follow_hold(order)

    async def refund(self, order_id: int, merchant_id: str, amount: int,
                     operator_ref: str | None = None) -> dict[str, Any]:
        """Refund ``amount`` (points or minor units, as the order was paid) of a completed order,
        through the loyalty refund of its capture (legs and fee undone in proportion); the
        order, refunded. Refunds add up to at most the order's amount."""
        order = await self._order(order_id, merchant_id=merchant_id)
        if order["status"] not in ("completed", "refunded"):
            raise MallError("invalid_state", f"a {order['status']} order cannot be refunded", order)
        left = int(order["amount"]) - int(order["refunded_amount"])
        if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= left:
            raise MallError("invalid", f"the refund must be 1..{left}", order)
        try:
            await self._refund(order, amount, operator_ref)
            return await self._order(order_id)
        except _DB_ERRORS as exc:
            raise MallError("system", f"database: {first_line(exc)}") from None

    async def _refund(self, order: dict[str, Any], amount: int, operator_ref: str | None,
                      cancel_note: str | None = None) -> None:
        """The n-th refund of the order (key ``mall:<id>:refund:<n>``), and the row after it."""
        oid = order["id"]
        n = int(order["refunds"]) + 1
        row = await self.pool.fetchrow(
            "SELECT s.terminal_id, nextval('loyalty.seat_rrn_seq')::text AS rrn, c.pan_hash, c.pan_sealed "
            "FROM loyalty.cards c "
            "LEFT JOIN LATERAL loyalty.seat_terminal($2) s ON true WHERE c.id = $1", order["card_id"],
            order["merchant_id"])
        assert row is not None
        t = TxnType.REDEEM if order["pay"] == "points" else TxnType.SV_PURCHASE
        key = order_key(oid, f"refund:{n}")
        req = Request(key=key, terminal_id=row["terminal_id"],
                      merchant_id=order["merchant_id"], pan=await _card_number(self.pool, row), amount=amount, rrn=row["rrn"],
                      account=t.account, original_rrn=order["capture_rrn"], channel=Channel.MALL,
                      operator_ref=operator_ref, receipt_key=key, receipt_hash=_content_hash(oid, f"refund:{n}", amount))
        # A refund that posts stores its answer by reference to its journal (as the capture's); a
        # decline stores none (_no_receipt), so that the n-th refund may be asked again.
        outcome = await self.loyalty.execute(TxnType.REFUND, req, receipt=_no_receipt)
        if not outcome.approved:
            code = {Reason.SYSTEM_ERROR: "system", Reason.CARD_BLOCKED: "card_blocked",
                    Reason.CARD_EXPIRED: "card_blocked", Reason.INSUFFICIENT: "insufficient",
                    Reason.MERCHANT_INACTIVE: "not_available", Reason.NOT_PERMITTED: "not_available",
                    Reason.DUPLICATE_MISMATCH: "invalid_state"}.get(outcome.reason, "invalid")
            detail = outcome.detail
            if outcome.reason is Reason.DUPLICATE_MISMATCH:
                detail = f"refund {n} of this order was taken with another amount: run it again with that amount"
            raise MallError(code, f"the refund was declined ({outcome.reason}): {detail}")
        if cancel_note is not None:
            await self.pool.execute(
                "WITH o AS (UPDATE loyalty.orders SET status = 'cancelled', refunded_amount = refunded_amount + $2, "
                "refunds = $3, note = $4, updated_at = now() WHERE id = $1 AND status = 'confirmed' AND refunds = $3 - 1 "
                "RETURNING good_id, quantity) "
                "UPDATE loyalty.goods g SET stock = g.stock + o.quantity, updated_at = now() FROM o "
                "WHERE g.id = o.good_id", oid, amount, n, cancel_note)
        else:
            await self.pool.execute(
                "UPDATE loyalty.orders SET status = 'refunded', refunded_amount = refunded_amount + $2, refunds = $3, "
                "updated_at = now() WHERE id = $1 AND status IN ('completed', 'refunded') AND refunds = $3 - 1",
                oid, amount, n)

    # ------------------------------------------------------------ address, timeout

    async def set_address(self, order_id: int, merchant_id: str | None, member_id: int | None,
                          delivery_address: str) -> dict[str, Any]:
        """Change where an order goes, until it is shipped."""
        if not isinstance(delivery_address, str) or len(delivery_address) > ADDRESS_LENGTH_MAX:
            raise MallError("invalid", f"delivery address: at most {ADDRESS_LENGTH_MAX} characters")
        order = await self._order(order_id, member_id=member_id, merchant_id=merchant_id)
        try:
            done = await self.pool.fetchval(
                "UPDATE loyalty.orders SET delivery_address = $2, updated_at = now() "
                "WHERE id = $1 AND status IN ('placing', 'placed', 'confirmed') RETURNING id", order_id,
                delivery_address)
        except _DB_ERRORS as exc:
            raise MallError("system", f"database: {first_line(exc)}") from None
        if done is None:
            raise MallError("invalid_state", f"a {order['status']} order's address cannot change", order)
        return await self._order(order_id)

    async def expire_due(self, limit: int = 100) -> int:
        """Cancel placed orders whose hold is due (expiring it unless the daemon did), and finish
        orders interrupted while ``placing``; at most ``limit`` of each. Returns how many orders
        changed."""
        limit = max(1, min(limit, 10_000))
        due = await self.pool.fetch(
            "SELECT o.id FROM loyalty.orders o JOIN ledger.holds h ON h.id = o.hold_id "
            "WHERE o.status = 'placed' AND (h.expires_at <= now() OR h.state <> 'pending') ORDER BY o.id LIMIT $1",
            limit)
        stale = await self.pool.fetch(
            "SELECT id FROM loyalty.orders WHERE status = 'placing' AND created_at <= now() - make_interval(secs => $1) "
            "ORDER BY id LIMIT $2", float(self.settings.placing_stale_s), limit)
        changed = 0
        for r in due:
            order = await self._order(int(r["id"]))
            if order["status"] != "placed":
                continue
            state, _key = await self._hold_state(int(order["hold_id"]))
            if state == "pending":
                await self._expire_hold(order)
            else:
                await self._follow_hold(order)
            changed += (await self._order(order["id"]))["status"] != "placed"
        for r in stale:
            oid = int(r["id"])
            jid = await self._journal_under(order_key(oid, "hold"))
            if jid is not None:
                moved = await self.pool.fetchval(
                    "UPDATE loyalty.orders SET status = 'placed', hold_id = $2, updated_at = now() "
                    "WHERE id = $1 AND status = 'placing' RETURNING id", oid, jid)
            else:
                moved = await self._move(oid, "rejected", ("placing",), stock_back=True,
                                         note="the order was interrupted before its amount was held",
                                         reject_code="system")
            changed += bool(moved)
        return changed


# Orders whose row disagrees with the ledger (see check_orders); at most $1 of them.
_CHECK_SQL = """
WITH r AS (
    SELECT t.original_journal_id AS journal_id, sum(t.undo_units) AS refunded, count(*) AS refunds
      FROM loyalty.transactions t
     WHERE t.txn_type = 'refund' AND t.journal_id IS NOT NULL AND t.idempotency_key LIKE 'mall:%'
     GROUP BY t.original_journal_id
)
SELECT o.id, o.status, h.state AS hold_state, j.idempotency_key AS resolved_by, o.refunded_amount,
       coalesce(r.refunded, 0) AS ledger_refunded
  FROM loyalty.orders o
  LEFT JOIN ledger.holds h ON h.id = o.hold_id
  LEFT JOIN ledger.journals j ON j.id = h.resolved_by
  LEFT JOIN r ON r.journal_id = o.capture_journal_id
 WHERE NOT CASE
       WHEN o.status IN ('placing', 'rejected') THEN o.hold_id IS NULL OR h.state IN ('voided', 'expired')
       WHEN o.status = 'placed' THEN h.state = 'pending'
       WHEN o.status IN ('confirmed', 'shipped', 'completed', 'refunded')
            THEN h.state = 'captured' AND j.idempotency_key = 'mall:' || o.id || ':capture'
                 AND o.capture_journal_id = j.id
       WHEN o.status = 'cancelled'
            THEN h.state IN ('voided', 'expired')
                 OR (h.state = 'captured' AND o.refunded_amount = o.amount)
       ELSE false END
    OR o.refunded_amount <> coalesce(r.refunded, 0)
 ORDER BY o.id LIMIT $1
"""


async def check_orders(conn: asyncpg.Connection | asyncpg.Pool, limit_rows: int = 20) -> list[str]:
    """Orders whose row disagrees with the ledger, one line each (none: they agree). A placed
    order's hold is pending; a confirmed, shipped, completed or refunded order's hold was captured
    by its own capture; a cancelled order's hold was released, or captured and refunded in full;
    a rejected order holds nothing; what an order says was refunded is what its refunds undid.

    A crash between a posting and the row's update shows here until the step is run again
    (or the sweeper finds it); so does a hold expired by the daemon before the sweeper's round.
    """
    rows = await conn.fetch(_CHECK_SQL, limit_rows)
    return [", ".join(f"{k}={v}" for k, v in r.items()) for r in rows]


def _content_hash(order_id: int, step: str, amount: int) -> bytes:
    """What identifies one ledger operation of an order: the same step with another amount differs."""
    return hashlib.sha256(f"mall|{order_id}|{step}|{amount}".encode()).digest()


def _no_receipt(_outcome: Outcome) -> Receipt | None:
    return None


async def sweep_forever(mall: Mall) -> None:
    """Run :meth:`Mall.expire_due` every ``sweep_interval_s`` until cancelled (the portal's lifespan
    runs it). A failed sweep is logged and the next one tries again."""
    while True:
        try:
            changed = await mall.expire_due(mall.settings.sweep_batch_max)
            if changed:
                log.info("mall_orders_swept", orders=changed)
        except (MallError, *_DB_ERRORS) as exc:
            log.warning("mall_sweep_failed", error=first_line(exc))
        await asyncio.sleep(mall.settings.sweep_interval_s)


async def _card_number(pool: asyncpg.Pool, row: asyncpg.Record) -> str:
    """The order's card number, opened to be sent on as a request's (never shown)."""
    return (await card_numbers.vault(pool)).open(bytes(row["pan_sealed"]), bytes(row["pan_hash"]))
