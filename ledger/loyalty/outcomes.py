"""Requests in, outcomes out: the loyalty domain's plain data, ISO-free.

The ISO 8583 handler builds a :class:`Request` from the message, calls one
operation, and answers with the response code of the outcome's :class:`Reason`
(switch/handlers/responses.py): a thin translation, no business rule of its own.

>>> TxnType.REDEEM.account
'65'
>>> Request(key="T1|000001|0101120000", terminal_id="T1", merchant_id="M1",
...         pan="6212340000000001", amount=100).currency is None
True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ledger.engine import Receipt


class TxnType(StrEnum):
    """Transaction types, named as in loyalty.transactions.txn_type."""

    EARN = "earn"  # purchase, earn points (0200 000000)
    REDEEM = "redeem"  # redeem points (0200 006500)
    SV_PURCHASE = "sv_purchase"  # stored-value purchase (0200 006000)
    TOPUP = "topup"  # top up points (0200 210065)
    LOAD = "load"  # load stored value (0200 210060)
    INQUIRY = "inquiry"  # balance inquiry (0200 31xx00)
    VOID = "void"  # 0200 02xx00
    REFUND = "refund"  # 0200 20xx00
    LOTTERY = "lottery"  # 0200 906500
    REVERSAL = "reversal"  # 0400 / 0420
    MARKER = "marker"  # a reversal's marker for an original not (yet) seen
    FEE = "fee"  # a fee charged to a merchant outside a transaction (a promotion's placement fee)
    PREAUTH = "preauth"  # a hold on stored value (0100 006000), released, captured or expired later
    # A pre-authorisation's completion (0200 006000 or 0220 with field 90 naming the 0100):
    # the operation; what it posts is recorded as the stored-value purchase it is.
    COMPLETION = "completion"
    VOUCHER_SALE = "voucher_sale"  # a batch of points top-up cards sold to a merchant
    VOUCHER_REDEEM = "voucher_redeem"  # a points top-up card redeemed by a member
    EXCHANGE = "exchange"  # points of one program into another's (0200 406565)
    EXPIRY = "expiry"  # end of day: a program's expired points lots to breakage (ledger.loyalty.lots)
    RESIDUAL = "residual"  # end of day: expired cards' residual stored value to breakage

    @property
    def account(self) -> str:
        """The account type (ISO field 3 positions) the transaction concerns: 00, 60 or 65."""
        return _ACCOUNT.get(self, "00")

    @property
    def in_points(self) -> bool:
        """True when field 4 of this transaction is a number of points."""
        return self in (TxnType.REDEEM, TxnType.TOPUP, TxnType.LOTTERY, TxnType.VOUCHER_REDEEM, TxnType.EXCHANGE)


_ACCOUNT = {TxnType.EARN: "00", TxnType.REDEEM: "65", TxnType.TOPUP: "65",
            TxnType.SV_PURCHASE: "60", TxnType.LOAD: "60", TxnType.PREAUTH: "60", TxnType.COMPLETION: "60",
            TxnType.EXCHANGE: "65"}

# What may be voided and refunded (specs/HOST-INTERFACE.md §6: top-ups and loads are voidable, not refundable).
VOIDABLE = frozenset({TxnType.EARN, TxnType.REDEEM, TxnType.SV_PURCHASE, TxnType.TOPUP, TxnType.LOAD,
                      TxnType.EXCHANGE})
REFUNDABLE = frozenset({TxnType.EARN, TxnType.REDEEM, TxnType.SV_PURCHASE})


class Channel(StrEnum):
    """Where a transaction was taken (loyalty.transactions.channel)."""

    TERMINAL = "terminal"  # an ISO 8583 request from a terminal
    WEB = "web"  # a merchant's web trading seat
    MALL = "mall"  # the points mall
    API = "api"  # the member API
    CLI = "cli"  # an operator's command line


class Reason(StrEnum):
    """Why an operation ended as it did. Everything but APPROVED is a decline."""

    APPROVED = "approved"
    INSUFFICIENT = "insufficient"  # points or stored value short
    CARD_UNKNOWN = "card_unknown"
    CARD_BLOCKED = "card_blocked"
    CARD_EXPIRED = "card_expired"
    INVALID_AMOUNT = "invalid_amount"  # zero, negative, or not the original's amount on a void
    EXCEEDS_LIMIT = "exceeds_limit"  # above the per-transaction maximum; refunds above the original
    ORIGINAL_NOT_FOUND = "original_not_found"
    ORIGINAL_REVERSED = "original_reversed"  # a late original whose reversal came first
    INVALID_TXN = "invalid_txn"  # wrong account type, already voided, not voidable, other day...
    NOT_PERMITTED = "not_permitted"  # account frozen, lottery not offered, program disabled
    MERCHANT_UNKNOWN = "merchant_unknown"
    MERCHANT_INACTIVE = "merchant_inactive"
    DUPLICATE_MISMATCH = "duplicate_mismatch"  # same key, different content
    PIN_INCORRECT = "pin_incorrect"  # a PIN needed and not sent, wrong, or not verifiable at this terminal
    PIN_TRIES_EXCEEDED = "pin_tries_exceeded"  # the card's wrong PINs reached the bound
    SYSTEM_ERROR = "system_error"  # the database failed before anything was sent: nothing was posted
    # Sent to the database, and its outcome could not be learned in time: it may have posted.
    # Never a decline and never recorded: the channel must not answer as if nothing happened
    # (the switch sends no response; a retransmission with the same key learns the truth).
    OUTCOME_UNKNOWN = "outcome_unknown"

    @property
    def approved(self) -> bool:
        return self is Reason.APPROVED


@dataclass(init=False, unsafe_hash=True)  # own __init__, not frozen: see ledger.commands
class Request:
    """One financial request, ISO-free.

    ``key`` is the idempotency key ``"<terminal id>|<stan>|<field 7>"``; ``amount``
    is field 4 as sent (minor units of ``currency``, or points for points
    transactions). ``account`` is the account type the request names (void,
    refund, inquiry: the xx of 02xx00/20xx00/31xx00). ``original_rrn`` names the
    original of a void or refund, ``original_key`` the original of a reversal;
    ``replacement_amount`` makes a reversal partial (the amount that stands).
    ``receipt_key``/``receipt_hash``: where the caller stores its answer (a
    receipt) and what identifies the request's content; when a receipt is
    already stored there, the operation does nothing and answers from it
    (:attr:`Outcome.stored_answer`), or 94 when the content differs.
    ``channel`` says where the request was taken; ``operator_ref`` who took it
    (the web seat's operator; None on the wire). ``hold_timeout_s``: how long a
    pre-authorisation's hold should live (None: the configured default). ``target_program``: an
    exchange's program to convert into (field 48 tag ``XP``).
    """

    key: str
    terminal_id: str
    merchant_id: str
    pan: str
    amount: int
    currency: str | None
    rrn: str
    stan: str
    account: str
    original_rrn: str | None
    original_key: str | None
    replacement_amount: int | None
    receipt_key: str | None
    receipt_hash: bytes | None
    channel: str
    operator_ref: str | None
    hold_timeout_s: int | None
    target_program: str | None

    def __init__(self, key: str, terminal_id: str, merchant_id: str, pan: str, amount: int,
                 currency: str | None = None, rrn: str = "", stan: str = "", account: str = "00",
                 original_rrn: str | None = None, original_key: str | None = None,
                 replacement_amount: int | None = None, receipt_key: str | None = None,
                 receipt_hash: bytes | None = None, channel: str = Channel.TERMINAL,
                 operator_ref: str | None = None, hold_timeout_s: int | None = None,
                 target_program: str | None = None) -> None:
        self.key = key
        self.terminal_id = terminal_id
        self.merchant_id = merchant_id
        self.pan = pan
        self.amount = amount
        self.currency = currency
        self.rrn = rrn
        self.stan = stan
        self.account = account
        self.original_rrn = original_rrn
        self.original_key = original_key
        self.replacement_amount = replacement_amount
        self.receipt_key = receipt_key
        self.receipt_hash = receipt_hash
        self.channel = str(channel)
        self.operator_ref = operator_ref
        self.hold_timeout_s = hold_timeout_s
        self.target_program = target_program


@dataclass(init=False, unsafe_hash=True)  # own __init__, not frozen: see ledger.commands
class Outcome:
    """What an operation did. Balances are natural (what the member sees), None when not touched."""

    reason: Reason
    txn_type: TxnType
    detail: str
    journal_id: int | None
    approval_code: str | None
    business_date: str | None
    program: str | None
    currency: str | None  # ISO numeric code of the stored value
    points_earned: int  # credited to the member (earn, top-up, prize, refund of a redeem)
    points_redeemed: int  # debited from the member (redeem, stake, claw-back)
    points_balance: int | None
    sv_balance_minor: int | None
    prize_code: str | None
    prize_points: int
    replayed: bool  # the answer of an earlier identical request
    rrn: str | None  # the RRN the transaction was answered with, when that was an earlier request's
    # The payload of the receipt an identical earlier request stored under Request.receipt_key:
    # the caller answers with it. (reason is then APPROVED and replayed True: nothing was done,
    # and the stored answer itself may be a decline.)
    stored_answer: bytes | None
    # The caller's receipt for this request is stored already (by reference to the journal,
    # with the posting): the caller must not store one.
    receipt_stored: bool
    hold_s: int | None  # a pre-authorisation's hold: how long it lives, in seconds
    # A balance inquiry in a program with points expiry: the points of the lot expiring first
    # and its date (None: nothing expires, or not asked).
    points_expiring: int | None
    points_expiring_on: dt.date | None

    def __init__(self, reason: Reason, txn_type: TxnType, detail: str = "", journal_id: int | None = None,
                 approval_code: str | None = None, business_date: str | None = None,
                 program: str | None = None, currency: str | None = None, points_earned: int = 0,
                 points_redeemed: int = 0, points_balance: int | None = None,
                 sv_balance_minor: int | None = None, prize_code: str | None = None, prize_points: int = 0,
                 replayed: bool = False, rrn: str | None = None, stored_answer: bytes | None = None,
                 receipt_stored: bool = False, hold_s: int | None = None, points_expiring: int | None = None,
                 points_expiring_on: dt.date | None = None) -> None:
        self.reason = reason
        self.txn_type = txn_type
        self.detail = detail
        self.journal_id = journal_id
        self.approval_code = approval_code
        self.business_date = business_date
        self.program = program
        self.currency = currency
        self.points_earned = points_earned
        self.points_redeemed = points_redeemed
        self.points_balance = points_balance
        self.sv_balance_minor = sv_balance_minor
        self.prize_code = prize_code
        self.prize_points = prize_points
        self.replayed = replayed
        self.rrn = rrn
        self.stored_answer = stored_answer
        self.receipt_stored = receipt_stored
        self.hold_s = hold_s
        self.points_expiring = points_expiring
        self.points_expiring_on = points_expiring_on

    @property
    def approved(self) -> bool:
        return self.reason is Reason.APPROVED


def approval_code(journal_id: int) -> str:
    """A 6-character approval code derived from the journal, so a replay gets the same one.

    >>> approval_code(42)
    '000042'
    """
    return f"{journal_id % 1_000_000:06d}"


# The caller's receipt: given the outcome, the bytes to keep under its key. For an
# outcome that posts, it is stored in the posting's own transaction.
OutcomeReceiptFn = Callable[[Outcome], Receipt | None]
