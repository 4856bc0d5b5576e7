"""The merchant's web trading seat: a form's request, through the very operations a terminal's goes.

:func:`take` runs one seat request (purchase-earn, redeem, stored-value purchase,
top-up, load, balance inquiry, void, refund) as :class:`~ledger.loyalty.operations.Loyalty`
runs a terminal's 0200: the same validations and decline reasons, the same journals
and transaction records, so clearing, reconciliation, end of day and the exports
count it like any other. What differs is where it comes from:

- **The virtual terminal.** Each merchant's seat is a terminal of kind ``web`` in
  ``switch.terminals`` (migration 0013), created on the seat's first use by
  ``loyalty.seat_terminal``: id ``W`` and 7 digits from a sequence, a form no
  other terminal may have (a CHECK holds both ways, and ``terminal add`` refuses
  it). It is listed and searched like a terminal, its transactions are grouped
  under it in statistics, and the switch refuses it on the wire as an unknown
  terminal. It never sends a 0500, so it has no batch: batch checks read closed
  batches only, and its voids are bounded by the business day. A seat whose
  terminal an operator disabled takes nothing (``not_permitted``, not recorded).
- **Originals.** A void or refund names its original by RRN. One that is not the
  merchant's own approved transaction is answered ``original_not_found`` and not
  recorded, whether it exists or not: the seat is no oracle for other merchants'.
- **Channel and operator.** Each transaction is recorded with channel ``web`` and
  the operator who took it (``operator_ref``).
- **Idempotency.** Each form carries a one-time request id (:func:`new_request_id`).
  The request's key, for its journal and for its stored answer alike, is
  ``seat:<terminal id>:<request id>``. A second post with the same id and content
  (a double submit, a reload) posts nothing and gets the first answer: replayed
  from its journal when it posted, from the stored answer when it did not; with
  other content it is refused (``duplicate_mismatch``).
- **RRNs.** One per request from ``loyalty.seat_rrn_seq``, 900000000000 and up,
  where the switch's blocks never reach (they stop below it): 12 digits like
  every RRN, so a seat transaction is voided, refunded and found by RRN as any.

Why a key of its own instead of a STAN and field 7 derived for the request id: the
wire's key is ``<terminal id>|<STAN>|<field 7>`` because that is what a terminal
sends; the seat's terminal never sends anything, so its keys need not look like
that. Deriving a STAN and a date-time would take a table mapping request ids to
them, written before the posting (one more write and round trip per request,
itself made idempotent, and purged some day), and a STAN wraps after 999999. The
seat's key has no ``|`` and the wire's always two, and its stored answers are
under ``seat:`` where the switch's are under ``iso:``: neither can ever be the
other's. The key names the merchant's seat terminal, so two merchants' forms
with the same request id cannot collide either. Using one string for the journal and the stored
answer lets ``txn show`` find a seat decline's answer under its own key. The
content hash covers the card number like the switch's hash of a whole request.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from ledger.engine import Receipt
from ledger.errors import SwitchdError, first_line
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Channel, Outcome, Reason, Request, TxnType

# What the seat offers (lottery, reversals and markers are the wire's).
SEAT_KINDS = (TxnType.EARN, TxnType.REDEEM, TxnType.SV_PURCHASE, TxnType.TOPUP, TxnType.LOAD,
              TxnType.INQUIRY, TxnType.VOID, TxnType.REFUND)
KEY_PREFIX = "seat:"
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
WEB_TERMINAL_ID = re.compile(r"^W[0-9]{7}$")
_MERCHANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,15}$")
_PAN = re.compile(r"^[0-9]{12,19}$")
_CURRENCY = re.compile(r"^[0-9]{3}$")
_RRN = re.compile(r"^[A-Za-z0-9]{1,12}$")
OPERATOR_REF_LENGTH_MAX = 64
AMOUNT_MAX = 999_999_999_999  # field 4's 12 digits: a terminal cannot send more either
_PAYLOAD_VERSION = 1

# The merchant's seat terminal (created on first use), an RRN, and the original an RRN names:
# one round trip.
_BEGIN_SQL = """
SELECT s.terminal_id, s.status, nextval('loyalty.seat_rrn_seq')::text AS rrn,
       o.txn_type AS original_type, o.amount AS original_amount, o.merchant_id AS original_merchant_id
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL loyalty.seat_terminal($1) s ON true
  LEFT JOIN LATERAL (SELECT t.txn_type, t.amount, t.merchant_id FROM loyalty.transactions t
                      WHERE t.rrn = $2 AND t.journal_id IS NOT NULL LIMIT 1) o ON true
"""


class SeatError(SwitchdError, ValueError):
    """The form itself is wrong (nothing was recorded); ``str()`` is one line for the operator."""


@dataclass(frozen=True)
class SeatResult:
    """What the seat answers: approved, or the domain's decline reason, and what was done.

    ``rrn`` and ``approval_code`` identify the transaction (None when nothing is
    on record: a system error, a refused form); balances are natural (what the
    member sees) after the transaction, None when it did not touch them.
    ``replayed``: the answer of an earlier post of the same form.
    """

    kind: str
    reason: Reason
    detail: str = ""
    terminal_id: str | None = None
    rrn: str | None = None
    approval_code: str | None = None
    journal_id: int | None = None
    business_date: str | None = None
    program: str | None = None
    currency: str | None = None
    points_earned: int = 0
    points_redeemed: int = 0
    points_balance: int | None = None
    sv_balance_minor: int | None = None
    replayed: bool = False

    @property
    def approved(self) -> bool:
        return self.reason is Reason.APPROVED

    def payload(self) -> bytes:
        """The stored form of this answer (no card number in it)."""
        body = {k: v for k, v in asdict(self).items() if k != "replayed"}
        body["reason"] = str(self.reason)
        return json.dumps({"v": _PAYLOAD_VERSION, "seat": body}, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> SeatResult:
        """An answer stored by :meth:`payload`, as replayed (ValueError when it is not one)."""
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("v") != _PAYLOAD_VERSION or not isinstance(data.get("seat"), dict):
            raise ValueError("not a stored seat answer")
        body: dict[str, Any] = dict(data["seat"])
        body["reason"] = Reason(body["reason"])
        return cls(**body, replayed=True)


def new_request_id() -> str:
    """A one-time request id for a seat form (unguessable, URL-safe).

    >>> bool(REQUEST_ID.match(new_request_id()))
    True
    """
    return secrets.token_urlsafe(18)


def request_key(terminal_id: str, request_id: str) -> str:
    """The key of a seat request's journal and stored answer.

    >>> request_key("W0000001", "k3Jx9_bQ-2mZr8Tq")
    'seat:W0000001:k3Jx9_bQ-2mZr8Tq'
    """
    return f"{KEY_PREFIX}{terminal_id}:{request_id}"


def _kind(kind: str | TxnType) -> TxnType:
    try:
        t = TxnType(kind)
    except ValueError:
        t = None
    if t not in SEAT_KINDS:
        raise SeatError(f"the seat offers {', '.join(str(k) for k in SEAT_KINDS)}, not {kind!r}")
    assert t is not None
    return t


def check_form(merchant_id: str, operator_ref: str, request_id: str, kind: str | TxnType, pan: str,
               amount: int | None, currency: str | None, original_rrn: str | None) -> TxnType:
    """The form's kind when every field is well formed; SeatError naming the first that is not.

    Values the domain judges (an amount of zero, a card nobody holds, an original
    that does not exist) pass here and are declined, and recorded, like a terminal's.

    >>> check_form("M1", "op-7", "k3Jx9_bQ-2mZr8Tq", "refund", "6212340000000019", 5, None, None)
    Traceback (most recent call last):
    ...
    ledger.loyalty.seat.SeatError: a refund names its original's RRN
    """
    t = _kind(kind)
    if not isinstance(merchant_id, str) or not _MERCHANT_ID.match(merchant_id):
        raise SeatError("merchant id: 1..15 letters, digits, _ or -")
    if (not isinstance(operator_ref, str) or not 1 <= len(operator_ref) <= OPERATOR_REF_LENGTH_MAX
            or not operator_ref.isprintable()):
        raise SeatError(f"operator: 1..{OPERATOR_REF_LENGTH_MAX} printable characters")
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise SeatError("request id: 16..64 letters, digits, _ or - (one per form)")
    if not isinstance(pan, str) or not _PAN.match(pan):
        raise SeatError("card number: 12..19 digits")
    if amount is None:
        if t not in (TxnType.INQUIRY, TxnType.VOID):
            raise SeatError(f"a {t} needs an amount")
    elif not isinstance(amount, int) or isinstance(amount, bool) or abs(amount) > AMOUNT_MAX:
        raise SeatError(f"amount: a whole number of at most {len(str(AMOUNT_MAX))} digits")
    if currency is not None and (not isinstance(currency, str) or not _CURRENCY.match(currency)):
        raise SeatError("currency: an ISO 4217 numeric code (3 digits)")
    if t in (TxnType.VOID, TxnType.REFUND):
        if original_rrn is None:
            raise SeatError(f"a {t} names its original's RRN")
        if not isinstance(original_rrn, str) or not _RRN.match(original_rrn):
            raise SeatError("RRN: 1..12 letters or digits")
    elif original_rrn is not None:
        raise SeatError(f"a {t} has no original")
    return t


def _content_hash(t: TxnType, merchant_id: str, operator_ref: str, pan: str, amount: int | None,
                  currency: str | None, original_rrn: str | None) -> bytes:
    """What identifies a form's content: the same request id with another content is a conflict."""
    blob = json.dumps([str(t), merchant_id, operator_ref, pan, amount, currency, original_rrn],
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode()).digest()


def _result(t: TxnType, terminal_id: str, rrn: str, outcome: Outcome) -> SeatResult:
    """The seat's answer for an outcome of this request (not a stored one)."""
    reason = outcome.reason
    on_record = reason not in (Reason.SYSTEM_ERROR, Reason.DUPLICATE_MISMATCH, Reason.OUTCOME_UNKNOWN)
    rrn_used = (outcome.rrn or rrn) if on_record else None
    code = outcome.approval_code
    if code is None and reason is Reason.APPROVED and rrn_used:
        code = rrn_used[-6:]  # an approval that posted nothing (an inquiry): as the switch answers it
    return SeatResult(
        kind=str(t), reason=reason, detail=outcome.detail, terminal_id=terminal_id, rrn=rrn_used,
        approval_code=code, journal_id=outcome.journal_id, business_date=outcome.business_date,
        program=outcome.program, currency=outcome.currency, points_earned=outcome.points_earned,
        points_redeemed=outcome.points_redeemed, points_balance=outcome.points_balance,
        sv_balance_minor=outcome.sv_balance_minor, replayed=outcome.replayed)


def _receipt(t: TxnType, terminal_id: str, rrn: str, key: str, content_hash: bytes,
             outcome: Outcome) -> Receipt:
    """The answer stored under the request's key for an outcome that posted nothing (the
    operations store one that posted by reference to its journal)."""
    return Receipt(key, content_hash, _result(t, terminal_id, rrn, outcome).payload())


async def take(loyalty: Loyalty, merchant_id: str, operator_ref: str, request_id: str, kind: str | TxnType,
               pan: str, amount: int | None = None, currency: str | None = None,
               original_rrn: str | None = None) -> SeatResult:
    """Take one seat request for ``merchant_id``, by ``operator_ref``, as the form ``request_id``.

    ``kind``: one of :data:`SEAT_KINDS`. ``amount``: minor units of the program's
    currency (earn, stored-value purchase, load, and their voids and refunds), or
    points (redeem, top-up, and theirs); not needed for an inquiry, nor for a void
    (it is the original's). ``currency``: ISO 4217 numeric, default the program's.
    ``original_rrn``: the transaction a void or refund undoes (a void only at the
    seat that took it, on its business day; a refund of any of the merchant's).

    Raises SeatError for a malformed form (nothing recorded); every other answer is
    a :class:`SeatResult`, the same for every post of the same form.
    """
    t = check_form(merchant_id, operator_ref, request_id, kind, pan, amount, currency, original_rrn)
    try:
        begin = await loyalty.pool.fetchrow(_BEGIN_SQL, merchant_id, original_rrn)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        return SeatResult(str(t), Reason.SYSTEM_ERROR, detail=f"database: {first_line(exc)}")
    assert begin is not None
    terminal_id = begin["terminal_id"]
    if terminal_id is None:
        return SeatResult(str(t), Reason.MERCHANT_UNKNOWN, detail="unknown merchant")
    if begin["status"] != "active":
        return SeatResult(str(t), Reason.NOT_PERMITTED, detail=f"web seat {terminal_id} is {begin['status']}",
                          terminal_id=terminal_id)
    original_type = begin["original_type"]
    if t in (TxnType.VOID, TxnType.REFUND) and begin["original_merchant_id"] != merchant_id:
        # Another merchant's transaction is none of this seat's business, and is answered
        # as one that does not exist: the seat is no oracle for what other merchants did.
        return SeatResult(str(t), Reason.ORIGINAL_NOT_FOUND, detail=f"no approved transaction with RRN {original_rrn}",
                          terminal_id=terminal_id)
    if t is TxnType.INQUIRY:
        account, value = "00", 0
    elif t in (TxnType.VOID, TxnType.REFUND):
        # The account type a terminal names in 02xx00/20xx00 is the original's.
        account = TxnType(original_type).account
        value = amount if amount is not None else int(begin["original_amount"])
    else:
        assert amount is not None
        account, value = t.account, amount
    rrn = str(begin["rrn"])
    key = request_key(terminal_id, request_id)
    content_hash = _content_hash(t, merchant_id, operator_ref, pan, amount, currency, original_rrn)
    req = Request(key=key, terminal_id=terminal_id, merchant_id=merchant_id, pan=pan, amount=value,
                  currency=currency, rrn=rrn, account=account, original_rrn=original_rrn, receipt_key=key,
                  receipt_hash=content_hash, channel=Channel.WEB, operator_ref=operator_ref)
    outcome = await loyalty.execute(t, req, receipt=functools.partial(_receipt, t, terminal_id, rrn, key,
                                                                      content_hash))
    if outcome.stored_answer is not None:
        try:
            return SeatResult.from_payload(outcome.stored_answer)
        except (ValueError, TypeError, KeyError):
            return SeatResult(str(t), Reason.SYSTEM_ERROR, detail="the answer stored for this form is unreadable",
                              terminal_id=terminal_id)
    return _result(t, terminal_id, rrn, outcome)
