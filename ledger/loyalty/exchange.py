"""Exchange between programs: a member converts points of one program into another's.

N points of program A become floor(N x rate) points of program B less the fee (basis
points of the converted points, floored; :func:`ledger.loyalty.rates.convert`), at the
rate in force (:mod:`ledger.loyalty.rates`), in one journal through the operator's
exchange account of each program (``operator:<P>:exchange``)::

    Dr card:<c>:points  (PTS:A) / Cr operator:A:exchange (PTS:A), N
    Dr operator:B:exchange (PTS:B) / Cr card:<c>:points  (PTS:B), net

The journal's metadata and the transaction record carry the rate used. Declines:
insufficient points, a program (or the card) not active, no rate in force, a member's
exchanges of the day above ``[exchange] member_daily_points_max`` (points given up,
summed over the card's exchanges of the business day, less what their voids and reversals
undid). The limit holds under concurrency: each exchange of a card and day posts under
the guard ``exchange:<card>:<day>:<n>`` (its place among the day's posted exchanges, undone
ones included), so two that decided on the same count cannot both post; the loser reads again.

A decline is recorded in loyalty.transactions (no journal, its reason) whichever way it was
asked, as long as the card exists: there is no card to record it against otherwise.

Two ways in: :meth:`ledger.loyalty.operations.Loyalty.exchange` for a terminal (ISO 8583,
source program = the merchant's), and :func:`convert_points` for the member pages, the
member API and the CLI (source program named, no merchant). End of day clears what the
exchange accounts took in and gave out (:mod:`ledger.clearing`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

import asyncpg

from ledger.accounts import open_account
from ledger.commands import Leg, Status, transfer
from ledger.engine import Ledger, ReceiptRef
from ledger.errors import SwitchdError
from ledger.loyalty.exchange_terms import Terms, terms_select
from ledger.loyalty.outcomes import Channel, Reason, TxnType
from ledger.loyalty.rates import convert
from ledger.loyalty.rules import is_expired

PURPOSE = "exchange"
# The exchange desk's name in the issuer x redeemer matrix (not a valid merchant id).
DESK_ID = "@exchange"
GUARD_ATTEMPTS_MAX = 16
POINTS_MAX = 1_000_000_000
REQUEST_KEY_LENGTH_MAX = 64
OFF_WIRE_CHANNELS = (Channel.WEB, Channel.API, Channel.CLI)


@dataclass(frozen=True)
class ExchangeSettings:
    """The ``[exchange]`` section of the configuration (switch/config.py holds the defaults)."""

    member_daily_points_max: int  # points one card may give up in exchanges per business day

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ExchangeSettings:
        """The settings from a mapping with an entry for each of them (others are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


DEFAULT_SETTINGS = ExchangeSettings(member_daily_points_max=1_000_000)


class ExchangeError(SwitchdError):
    """Why an exchange posted nothing: ``reason`` (a loyalty Reason), ``str()`` one line."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# What one exchange needs to decide, in one round trip (ledger/loyalty/exchange_terms.py).
_TERMS_SQL = terms_select("$1::bigint", "$2", "$3", "$4")


async def read_terms(conn: asyncpg.Connection | asyncpg.Pool, card_id: int, from_program: str, to_program: str,
                     business_date: dt.date) -> Terms:
    """The terms of converting ``from_program`` into ``to_program`` for card ``card_id`` on the day."""
    row = await conn.fetchrow(_TERMS_SQL, card_id, from_program, to_program, business_date)
    assert row is not None
    return Terms(row)


def problem(terms: Terms, points: int, available: int, settings: ExchangeSettings) -> tuple[Reason, str] | None:
    """Why this exchange must be declined, or None."""
    if not isinstance(points, int) or isinstance(points, bool) or not 0 < points <= POINTS_MAX:
        return Reason.INVALID_AMOUNT, f"points must be 1..{POINTS_MAX}, got {points!r}"
    if terms.from_program is None:
        return Reason.INVALID_TXN, "unknown source program"
    if terms.to_program is None:
        return Reason.INVALID_TXN, "unknown target program"
    if terms.from_program == terms.to_program:
        return Reason.INVALID_TXN, "an exchange is between two different programs"
    for code, status in ((terms.from_program, terms.from_status), (terms.to_program, terms.to_status)):
        if status != "active":
            return Reason.NOT_PERMITTED, f"program {code} is {status}"
    if terms.rate_id is None:
        return Reason.INVALID_TXN, f"no rate in force from {terms.from_program} to {terms.to_program}"
    if int(terms.day_points) + points > settings.member_daily_points_max:
        return Reason.EXCEEDS_LIMIT, (f"{int(terms.day_points)} points exchanged today; {points} more is above "
                                      f"the daily {settings.member_daily_points_max}")
    if available < points:
        return Reason.INSUFFICIENT, f"points available {available}"
    _gross, _fee, net = convert(points, int(terms.rate_num), int(terms.rate_den), int(terms.fee_bps))
    if net <= 0:
        return Reason.INVALID_AMOUNT, f"{points} points convert to no points of {terms.to_program}"
    return None


@dataclass(frozen=True)
class Plan:
    """The legs of one exchange, its record's exchange columns, and its guard."""

    legs: list[Leg]
    record: dict[str, Any]
    net: int
    guard: str


def guard(card_id: int, business_date: dt.date, day_count: int) -> str:
    """The guard of a card's next exchange of the day (its place among them).

    >>> guard(7, dt.date(2026, 3, 9), 2)
    'exchange:7:2026-03-09:3'
    """
    return f"exchange:{card_id}:{business_date.isoformat()}:{day_count + 1}"


async def desk_account(conn: asyncpg.Connection | asyncpg.Pool, program: str) -> int:
    """The operator's exchange account of ``program`` (``operator:<P>:exchange``, PTS:P), opened on first use."""
    return await open_account(conn, "operator", program, f"PTS:{program}", "debit", "none", PURPOSE)


async def plan(conn: asyncpg.Connection | asyncpg.Pool, terms: Terms, card_id: int, from_account_id: int,
               points: int, business_date: dt.date) -> Plan:
    """The journal of an exchange that :func:`problem` accepted (opens the accounts it needs)."""
    num, den, fee_bps = int(terms.rate_num), int(terms.rate_den), int(terms.fee_bps)
    gross, fee, net = convert(points, num, den, fee_bps)
    to_account = (int(terms.to_account_id) if terms.to_account_id is not None else
                  await open_account(conn, "card", str(card_id), f"PTS:{terms.to_program}", "credit", "guarded",
                                     "points"))
    # The accounts read with the terms; opened here only on their first use.
    from_desk = (int(terms.from_desk_id) if terms.from_desk_id is not None
                 else await desk_account(conn, terms.from_program))
    to_desk = int(terms.to_desk_id) if terms.to_desk_id is not None else await desk_account(conn, terms.to_program)
    legs = [Leg(from_account_id, from_desk, points), Leg(to_desk, to_account, net)]
    record = {"target_program": terms.to_program, "target_points_delta": net, "rate_num": num, "rate_den": den,
              "rate_fee_bps": fee_bps}
    _ = gross, fee
    return Plan(legs, record, net, guard(card_id, business_date, int(terms.day_count)))


def exchange_meta(terms: Terms, points: int) -> dict[str, Any]:
    """The journal's ``exchange`` metadata: the rate used and the arithmetic."""
    num, den, fee_bps = int(terms.rate_num), int(terms.rate_den), int(terms.fee_bps)
    gross, fee, net = convert(points, num, den, fee_bps)
    return {"rate_id": int(terms.rate_id), "from_program": terms.from_program, "to_program": terms.to_program,
            "rate_num": num, "rate_den": den, "fee_bps": fee_bps, "points_in": points, "gross": gross,
            "fee_points": fee, "points_out": net}


# ---------------------------------------------------------------- off the wire


@dataclass(frozen=True)
class Converted:
    """An exchange that posted (now, or before under the same request key: ``replayed``)."""

    journal_id: int
    business_date: str
    from_program: str
    to_program: str
    points_in: int
    points_out: int
    fee_points: int
    rate_num: int
    rate_den: int
    fee_bps: int
    replayed: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_CARD_SQL = """
SELECT b.open_date, c.id AS card_id, c.status AS card_status, c.expiry,
       a.id AS account_id, coalesce(a.posted, 0) - coalesce(a.held, 0) AS available,
       j.id AS existing_journal_id, j.metadata AS existing_metadata
  FROM ledger.business_day b
  LEFT JOIN loyalty.cards c ON c.id = $1::bigint
  LEFT JOIN ledger.accounts a ON a.owner_kind = 'card' AND a.owner_id = $1::bigint::text AND a.purpose = 'points'
                             AND a.asset = 'PTS:' || $2
  LEFT JOIN ledger.journals j ON j.idempotency_key = $3
 WHERE b.singleton
"""


def request_key(channel: str, card_id: int, key: str) -> str:
    """The idempotency key of an exchange asked for off the wire (the caller's request key, per card).

    >>> request_key("api", 7, "abc12345")
    'exchange:api:7:abc12345'
    """
    return f"exchange:{channel}:{card_id}:{key}"


def _fingerprint(card_id: int, from_program: str, to_program: str, points: int) -> str:
    return hashlib.sha256(f"exchange|{card_id}|{from_program}|{to_program}|{points}".encode()).hexdigest()[:24]


def _converted(journal_id: int, business_date: str, meta: dict[str, Any], replayed: bool) -> Converted:
    x = meta.get("exchange", {})
    return Converted(journal_id, business_date, x["from_program"], x["to_program"], int(x["points_in"]),
                     int(x["points_out"]), int(x["fee_points"]), int(x["rate_num"]), int(x["rate_den"]),
                     int(x["fee_bps"]), replayed)


async def _replay(conn: asyncpg.Connection | asyncpg.Pool, key: str, fp: str) -> Converted:
    row = await conn.fetchrow("SELECT id, business_date, metadata FROM ledger.journals WHERE idempotency_key=$1", key)
    assert row is not None
    meta = row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"])
    if meta.get("fp") != fp:
        raise ExchangeError(Reason.DUPLICATE_MISMATCH, "request key used before for another exchange")
    return _converted(int(row["id"]), row["business_date"].isoformat(), meta, True)


# A decline asked off the wire, recorded as a terminal's is (ledger.loyalty.operations): no
# journal, the reason, the request as asked. One record per request key and reason: the same
# request asked again and declined again for the same reason is the same decline.
_RECORD_DECLINE_SQL = """
INSERT INTO loyalty.transactions(idempotency_key, business_date, txn_type, reason, card_id, program, amount,
                                 channel, operator_ref, target_program)
SELECT $1, $2, 'exchange', $3, $4, $5, $6, $7, $8, $9
 WHERE NOT EXISTS (SELECT 1 FROM loyalty.transactions t
                    WHERE t.idempotency_key = $1 AND t.journal_id IS NULL AND t.reason = $3)
"""
# Program codes are recorded as asked, up to this many characters (a code no program has is
# recorded too: it is why the exchange was declined).
RECORDED_PROGRAM_CHARS_MAX = 64
BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class _Declined:
    """What an off-wire exchange's decline record says of its request (see _RECORD_DECLINE_SQL)."""

    key: str
    business_date: dt.date
    card_id: int
    from_program: str
    to_program: str
    points: int
    channel: str
    operator_ref: str | None

    async def record(self, pool: asyncpg.Pool, reason: Reason, message: str) -> ExchangeError:
        """Record the decline; returns the error to raise."""
        amount = (self.points if isinstance(self.points, int) and not isinstance(self.points, bool)
                  and -BIGINT_MAX <= self.points <= BIGINT_MAX else 0)
        await pool.execute(_RECORD_DECLINE_SQL, self.key, self.business_date, str(reason), self.card_id,
                           self.from_program[:RECORDED_PROGRAM_CHARS_MAX], amount, str(self.channel),
                           self.operator_ref[:64] if self.operator_ref else None,
                           self.to_program[:RECORDED_PROGRAM_CHARS_MAX])
        return ExchangeError(reason, message)


async def convert_points(ledger: Ledger, pool: asyncpg.Pool, card_id: int, from_program: str, to_program: str,
                         points: int, key: str, channel: str = Channel.API, operator_ref: str | None = None,
                         settings: ExchangeSettings = DEFAULT_SETTINGS, today: dt.date | None = None) -> Converted:
    """Exchange ``points`` of ``from_program`` on card ``card_id`` into ``to_program``, once per ``key``.

    ``key``: the caller's request key (1..64 characters), unique per card and channel; the
    same key with the same request answers the same exchange (``replayed``), with another
    request raises ExchangeError DUPLICATE_MISMATCH. Raises ExchangeError for a decline; a
    decline of a known card is recorded in loyalty.transactions first (no journal, its reason,
    under the request's key), as a terminal's is.
    """
    if channel not in OFF_WIRE_CHANNELS:
        raise ExchangeError(Reason.INVALID_TXN, f"channel must be one of {', '.join(OFF_WIRE_CHANNELS)}")
    if not 1 <= len(key) <= REQUEST_KEY_LENGTH_MAX or not key.isprintable():
        raise ExchangeError(Reason.INVALID_TXN, f"the request key must be 1..{REQUEST_KEY_LENGTH_MAX} characters")
    jkey = request_key(channel, card_id, key)
    fp = _fingerprint(card_id, from_program, to_program, points)
    for _attempt in range(GUARD_ATTEMPTS_MAX):
        c = await pool.fetchrow(_CARD_SQL, card_id, from_program, jkey)
        assert c is not None, "ledger.business_day has no row"
        if c["existing_journal_id"] is not None:
            return await _replay(pool, jkey, fp)
        if c["card_id"] is None:
            # No card to record it against (and the callers look the card up first).
            raise ExchangeError(Reason.CARD_UNKNOWN, "unknown card")
        day: dt.date = c["open_date"]
        declined = _Declined(jkey, day, card_id, from_program, to_program, points, channel, operator_ref)
        if c["card_status"] == "blocked":
            raise await declined.record(pool, Reason.CARD_BLOCKED, "card is blocked")
        if c["card_status"] == "expired" or is_expired(c["expiry"], today or dt.datetime.now(dt.UTC).date()):
            raise await declined.record(pool, Reason.CARD_EXPIRED, "card has expired")
        terms = await read_terms(pool, card_id, from_program, to_program, day)
        found = problem(terms, points, int(c["available"]), settings)
        if found is not None:
            raise await declined.record(pool, *found)
        p = await plan(pool, terms, card_id, int(c["account_id"]), points, day)
        txn: dict[str, Any] = {
            "type": str(TxnType.EXCHANGE), "card_id": card_id, "program": from_program, "amount": points,
            "points_delta": -points, "money_delta_minor": 0, "fee_minor": 0, "channel": str(channel), **p.record}
        if operator_ref:
            txn["operator_ref"] = operator_ref[:64]
        meta = {"txn": txn, "fp": fp, "exchange": exchange_meta(terms, points)}
        # The receipt names the journal: one request per journal, as reconciliation proves.
        ref = ReceiptRef(jkey, hashlib.sha256(fp.encode()).digest())
        res = await ledger.post(transfer(jkey, p.legs, metadata=meta, guard=p.guard), receipt_ref=ref)
        if res.status is Status.POSTED:
            assert res.journal_id is not None
            return _converted(res.journal_id, str(res.business_date), meta, False)
        if res.status is Status.EXISTS:
            return await _replay(pool, jkey, fp)
        if res.status is Status.CONFLICT and res.reason == "guard":
            continue  # another exchange of the card posted meanwhile: count again
        if res.status is Status.DECLINED:
            reason = Reason.INSUFFICIENT if res.reason == "limit" else Reason.NOT_PERMITTED
            raise await declined.record(pool, reason, res.detail or str(reason))
        raise ExchangeError(Reason.SYSTEM_ERROR, f"ledger {res.status}: {res.detail}")
    raise ExchangeError(Reason.SYSTEM_ERROR, "the card's exchanges kept changing; try again")
