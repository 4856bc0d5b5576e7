"""Routing: one table from (MTI, transaction type) to the handler that answers it.

The transaction type is the first two digits of field 3 (``"*"`` in the
table: any). Adding a transaction type is one row here and one function in
``switch/handlers``. An MTI not in the table is answered 12 (invalid
transaction); a known MTI with a transaction type not in the table, 40
(function not supported).

>>> route("0800", None) is netmgmt.handle
True
>>> route("0110", "00"), route("0200", "77")
('12', '40')
>>> route("0421", "00") is route("0420", "00")
True

A response MTI is not a request at all (:func:`is_response`): the pipeline answers nothing to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from specs.vocabulary import FUNCTION_NOT_SUPPORTED, INVALID_TRANSACTION, Fields
from switch.codec import canonical_mti
from switch.context import RequestContext
from switch.handlers import financial, netmgmt, settlement, vouchers

Handler = Callable[[RequestContext], Awaitable[Fields]]

ANY = "*"

# (MTI, transaction type) -> handler.
# row by row (specs/HOST-INTERFACE.md §6 lists the operations).
ROUTES: dict[tuple[str, str], Handler] = {
    ("0800", ANY): netmgmt.handle,
    ("0200", "00"): financial.handle_0200,  # purchase-earn 000000, redeem 006500, stored-value purchase 006000
    ("0200", "02"): financial.handle_0200,  # void 02xx00
    ("0200", "20"): financial.handle_0200,  # refund 20xx00
    ("0200", "21"): financial.handle_0200,  # top-up points 210065, load stored value 210060
    ("0200", "31"): financial.handle_0200,  # balance inquiry 31xx00
    ("0200", "90"): financial.handle_0200,  # points lottery draw 906500
    ("0100", "00"): financial.handle_0100,  # stored-value pre-authorisation 006000
    ("0220", "00"): financial.handle_completion,  # pre-authorisation completion advice 006000
    ("0200", "40"): financial.handle_0200,  # exchange between programs 406565
    ("0400", ANY): financial.handle_reversal,  # reversal (processing code as the original)
    ("0420", ANY): financial.handle_reversal,  # reversal advice
    ("0500", "92"): settlement.handle,  # terminal batch settlement
}

KNOWN_MTIS = frozenset(mti for mti, _ in ROUTES)
# Handlers that recognise a retransmission themselves, in the round trip that reads their
# request's context (the loyalty operations read the stored receipt with it): the pipeline
# does not look the receipt up before them (nor before a top-up card's redemption, which reads
# it with the card). Every other handler's requests are checked first.
CHECKS_DUPLICATES: frozenset[Handler] = frozenset({financial.handle_0200, financial.handle_reversal,
                                                   financial.handle_0100, financial.handle_completion,
                                                   vouchers.handle})

def metric_labels(mti: str, processing_code: str | None) -> tuple[str, str]:
    """(mti, processing) labels with bounded cardinality: unknown values become ``other``.

    >>> metric_labels("0200", "006500"), metric_labels("9999", "123456"), metric_labels("0200", "77xxxx")
    (('0200', '00'), ('other', 'other'), ('0200', 'other'))
    """
    canon = canonical_mti(mti)
    if canon not in KNOWN_MTIS:
        return "other", "other"
    txn_type = (processing_code or "")[:2]
    if (canon, txn_type) in ROUTES:
        return mti, txn_type
    return mti, "other" if processing_code else "none"


def route(mti: str, processing_code: str | None) -> Handler | str:
    """The handler for a request, or the response code to decline it with (12 or 40)."""
    mti = canonical_mti(mti)
    if mti not in KNOWN_MTIS:
        return INVALID_TRANSACTION
    txn_type = (processing_code or "")[:2]
    handler = ROUTES.get((mti, txn_type)) or ROUTES.get((mti, ANY))
    return handler if handler is not None else FUNCTION_NOT_SUPPORTED


def route_fields(mti: str, fields: Fields) -> Handler | str:
    """:func:`route`, and a top-up naming a top-up card in field 48 to its own handler.

    >>> route_fields("0200", {"3": "210065", "48": "VS0011VC0012"}) is vouchers.handle
    True
    >>> route_fields("0200", {"3": "210065"}) is financial.handle_0200
    True
    """
    target = route(mti, fields.get("3"))
    if target is financial.handle_0200 and canonical_mti(mti) == "0200" and vouchers.is_voucher(fields):
        return vouchers.handle
    return target


def is_response(mti: str) -> bool:
    """Whether a (4-digit) MTI is a response or an acknowledgement: its function digit is odd.

    The switch sends requests to no one, so any response reaching it is one it never asked for.

    >>> is_response("0810"), is_response("0430"), is_response("0800"), is_response("0421")
    (True, True, False, False)
    """
    return mti[2] in "13579"
