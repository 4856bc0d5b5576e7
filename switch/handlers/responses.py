"""A loyalty outcome's reason -> its ISO 8583 response code (field 39): the handlers' whole translation.

The ledger says why an operation ended as it did (:class:`ledger.loyalty.outcomes.Reason`);
what a terminal is told is the switch's business, and is decided here only.

>>> response_code(Reason.APPROVED), response_code(Reason.INSUFFICIENT)
('00', '51')
>>> reasons_answered(INVALID_MERCHANT) == (Reason.MERCHANT_UNKNOWN, Reason.MERCHANT_INACTIVE)
True
"""

from __future__ import annotations

from ledger.loyalty.outcomes import Reason
from specs.vocabulary import (
    APPROVED,
    DO_NOT_HONOUR,
    DUPLICATE_TRANSMISSION,
    EXCEEDS_LIMIT,
    EXPIRED_CARD,
    INCORRECT_PIN,
    INSUFFICIENT_FUNDS,
    INVALID_AMOUNT,
    INVALID_CARD,
    INVALID_MERCHANT,
    INVALID_TRANSACTION,
    NOT_PERMITTED,
    ORIGINAL_NOT_FOUND,
    PIN_TRIES_EXCEEDED,
    RESTRICTED_CARD,
    SYSTEM_MALFUNCTION,
)

RESPONSE_CODES: dict[Reason, str] = {
    Reason.APPROVED: APPROVED,
    Reason.INSUFFICIENT: INSUFFICIENT_FUNDS,
    Reason.CARD_UNKNOWN: INVALID_CARD,
    Reason.CARD_BLOCKED: RESTRICTED_CARD,
    Reason.CARD_EXPIRED: EXPIRED_CARD,
    Reason.INVALID_AMOUNT: INVALID_AMOUNT,
    Reason.EXCEEDS_LIMIT: EXCEEDS_LIMIT,
    Reason.ORIGINAL_NOT_FOUND: ORIGINAL_NOT_FOUND,
    # A late original whose reversal came first: refused, and nothing more to say.
    Reason.ORIGINAL_REVERSED: DO_NOT_HONOUR,
    Reason.INVALID_TXN: INVALID_TRANSACTION,
    Reason.NOT_PERMITTED: NOT_PERMITTED,
    Reason.MERCHANT_UNKNOWN: INVALID_MERCHANT,
    Reason.MERCHANT_INACTIVE: INVALID_MERCHANT,
    Reason.DUPLICATE_MISMATCH: DUPLICATE_TRANSMISSION,
    Reason.PIN_INCORRECT: INCORRECT_PIN,
    Reason.PIN_TRIES_EXCEEDED: PIN_TRIES_EXCEEDED,
    Reason.SYSTEM_ERROR: SYSTEM_MALFUNCTION,
    # Never sent: a request whose outcome is unknown gets no response (switch.handlers.financial);
    # listed for completeness, as what a 96 would have wrongly said.
    Reason.OUTCOME_UNKNOWN: SYSTEM_MALFUNCTION,
}


def response_code(reason: Reason) -> str:
    """Field 39 for an outcome of this reason."""
    return RESPONSE_CODES[reason]


def reasons_answered(code: str) -> tuple[Reason, ...]:
    """The reasons answered with ``code`` (none for a code no outcome gives)."""
    return tuple(reason for reason, answered in RESPONSE_CODES.items() if answered == code)
