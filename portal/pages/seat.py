"""The merchant's web trading seat: a form per transaction, a receipt per answer.

Each form carries a one-time request id (ledger.loyalty.seat.new_request_id) in a
hidden field: posting it twice (a double click, a reload of the receipt) takes the
transaction once and shows the same receipt, because ledger.loyalty.seat.take
answers a repeated request id with the first answer. The card number is typed
into the form and travels in the POST body only; every page shows it masked.
Voids and refunds are taken here too, and from a transaction's page
(portal.pages.transaction_detail), which fills in the original's card itself.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import members
from ledger.loyalty import seat as ledger_seat
from ledger.loyalty.merchants import show_merchant
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Reason, TxnType
from ledger.loyalty.programs import KNOWN_CURRENCIES, show_program
from ledger.loyalty.rules import mask_pan
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.web import FORM, Page, page, render

log = structlog.get_logger("portal.seat")

KINDS = tuple(str(k) for k in ledger_seat.SEAT_KINDS)
AMOUNT_CHARS_MAX = 20

# What the seat's kinds are called on the page.
KIND_NAMES = {
    "earn": N_("Purchase (earn points)"), "redeem": N_("Redeem points"),
    "sv_purchase": N_("Stored-value purchase"), "topup": N_("Top up points"), "load": N_("Load stored value"),
    "inquiry": N_("Balance inquiry"), "void": N_("Void"), "refund": N_("Refund"),
    "lottery": N_("Lottery"), "reversal": N_("Reversal"), "marker": N_("Reversal marker"),
    "fee": N_("Placement fee"), "preauth": N_("Pre-authorisation"),
    "completion": N_("Pre-authorisation completion"), "voucher_sale": N_("Top-up card sale"),
    "voucher_redeem": N_("Top-up card redeemed"), "exchange": N_("Exchange between programs"),
    "expiry": N_("Points expiry"), "residual": N_("Residual stored value"),
}

# Every outcome in words: what the operator tells the member.
REASON_WORDS = {
    Reason.APPROVED: N_("Approved."),
    Reason.INSUFFICIENT: N_("Declined: the card does not have enough points or stored value."),
    Reason.CARD_UNKNOWN: N_("Declined: no such card."),
    Reason.CARD_BLOCKED: N_("Declined: the card is blocked."),
    Reason.CARD_EXPIRED: N_("Declined: the card has expired."),
    Reason.INVALID_AMOUNT: N_("Declined: the amount is not valid for this transaction."),
    Reason.EXCEEDS_LIMIT: N_("Declined: the amount is above the limit (or above what remains of the original)."),
    Reason.ORIGINAL_NOT_FOUND: N_("Declined: no approved transaction of this merchant has that RRN."),
    Reason.ORIGINAL_REVERSED: N_("Declined: the original transaction was reversed."),
    Reason.INVALID_TXN: N_("Declined: this transaction cannot be done now (already voided, another day, "
                           "or not of this kind)."),
    Reason.NOT_PERMITTED: N_("Declined: not permitted for this card, program or seat."),
    Reason.MERCHANT_UNKNOWN: N_("Declined: the merchant is not known."),
    Reason.MERCHANT_INACTIVE: N_("Declined: the merchant is disabled."),
    Reason.DUPLICATE_MISMATCH: N_("Refused: this form was already sent with other values. Start a new "
                                  "transaction."),
    Reason.PIN_INCORRECT: N_("Declined: the card's PIN was needed and not given, or was wrong."),
    Reason.PIN_TRIES_EXCEEDED: N_("Declined: too many wrong PINs for this card."),
    Reason.SYSTEM_ERROR: N_("Not done: the system could not be reached. Nothing was recorded; try again."),
    Reason.OUTCOME_UNKNOWN: N_("Not known yet: the connection to the database was lost while this was being "
                               "recorded. Send this same form again (reload the page and confirm): it is never "
                               "taken twice, and the answer will say what happened."),
}


class BadForm(ValueError):
    """A field the page itself refuses; ``str()`` is an English message id for the catalogs."""


def reason_words(reason: str) -> str:
    """An outcome (a ledger Reason) as a sentence in the request's language."""
    try:
        return _(REASON_WORDS[Reason(reason)])
    except (ValueError, KeyError):
        return reason


def kind_name(kind: str) -> str:
    """A transaction type's name in the request's language."""
    return _(KIND_NAMES[kind]) if kind in KIND_NAMES else kind


def parse_amount(text: str, in_points: bool, scale: int) -> int | None:
    """The form's amount: whole points, or money in currency units (``12.34``) as minor units.

    >>> parse_amount("12.34", False, 2), parse_amount("7", False, 2), parse_amount("150", True, 2)
    (1234, 700, 150)
    >>> parse_amount("", True, 2) is None
    True
    """
    text = text.strip().replace(",", "")
    if not text:
        return None
    if in_points:
        if not (text.isascii() and text.isdigit()):
            raise BadForm(N_("Points are a whole number."))
        return int(text)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadForm(N_("The amount must be a number such as 12.34.")) from None
    minor = value.scaleb(scale)
    if not value.is_finite() or value < 0 or minor != minor.to_integral_value():
        raise BadForm(N_("The amount must be a number such as 12.34, with no more decimals than the currency has."))
    return int(minor)


def loyalty_of(pg: Page) -> Loyalty:
    """The seat's operations; 503 when the portal runs without ledger settings."""
    if pg.portal.loyalty is None:
        raise HTTPException(503, "seat-off")
    return pg.portal.loyalty


def operator_ref(pg: Page) -> str:
    """How a seat transaction names the user who took it."""
    return f"portal:{pg.session.login}"[:ledger_seat.OPERATOR_REF_LENGTH_MAX]


async def merchant_terms(pg: Page) -> dict[str, Any]:
    """The user's merchant, its program, currency and the currency's decimals."""
    merchant_id = pg.own_merchant()
    merchant = await show_merchant(pg.pool, merchant_id) if merchant_id else None
    if merchant is None:
        raise HTTPException(404)
    program = await show_program(pg.pool, merchant["program"])
    currency = program["currency"] if program else None
    scale = KNOWN_CURRENCIES.get(currency or "", ("", 2))[1]
    return {"merchant_id": merchant["merchant_id"], "name": merchant["name"], "program": merchant["program"],
            "currency": currency, "scale": scale}


async def amount_in_points(pg: Page, kind: str, original_rrn: str | None) -> bool:
    """Whether a form's amount is points: by its kind, for a void or refund by its original's."""
    if kind in (TxnType.VOID, TxnType.REFUND):
        merchant_id = pg.own_merchant()
        original = (await members.merchant_original(pg.pool, merchant_id, original_rrn)
                    if merchant_id and original_rrn else None)
        return original is not None and TxnType(original["txn_type"]).in_points
    return TxnType(kind).in_points


async def take_and_show(request: Request, pg: Page, kind: str, pan: str, amount: int | None,
                        original_rrn: str | None, request_id: str, terms: dict[str, Any]) -> Response:
    """Take the seat request and answer with its receipt (400 with the reason for a malformed form)."""
    try:
        result = await ledger_seat.take(loyalty_of(pg), terms["merchant_id"], operator_ref(pg), request_id, kind,
                                        pan, amount, None, original_rrn)
    except ledger_seat.SeatError as exc:
        return _form(request, pg, terms, {"kind": kind, "original_rrn": original_rrn or ""},
                     error=_("The form is not complete: %(why)s") % {"why": str(exc)}, status_code=400)
    log.info("seat_taken", kind=kind, reason=str(result.reason), rrn=result.rrn, replayed=result.replayed,
             user=pg.session.login, merchant=terms["merchant_id"])
    return render(request, "seat/receipt.html", {
        "r": result, "pan": mask_pan(pan), "words": reason_words(str(result.reason)),
        "kind_label": kind_name(result.kind), "terms": terms,
        "in_points": TxnType(result.kind).in_points or await amount_in_points(pg, kind, original_rrn),
        "amount": amount}, session=pg.session)


def _form(request: Request, pg: Page, terms: dict[str, Any], values: dict[str, str], error: str | None = None,
          status_code: int = 200) -> Response:
    context = {"terms": terms, "kinds": [(k, kind_name(k)) for k in KINDS], "error": error,
               "request_id": ledger_seat.new_request_id(), "values": {"kind": "earn", "original_rrn": ""} | values}
    return render(request, "seat/form.html", context, status_code=status_code, session=pg.session)


@page("seat")
async def seat(request: Request, pg: Page) -> Response:
    """GET: a new transaction's form (with a fresh request id). POST: take it; show the receipt."""
    terms = await merchant_terms(pg)
    if request.method == "GET":
        kind = request.query_params.get("kind", "earn")
        return _form(request, pg, terms, {"kind": kind if kind in KINDS else "earn"})
    loyalty_of(pg)
    kind = pg.field("kind", 20)
    values = {"kind": kind, "original_rrn": pg.field("original_rrn", 12)}
    if kind not in KINDS:
        return _form(request, pg, terms, values, error=_("Choose a kind of transaction."), status_code=400)
    pan = pg.field("pan", 40).replace(" ", "")
    original_rrn = values["original_rrn"] or None
    try:
        amount = parse_amount(pg.field("amount", AMOUNT_CHARS_MAX), await amount_in_points(pg, kind, original_rrn),
                              terms["scale"])
    except BadForm as exc:
        return _form(request, pg, terms, values, error=_(str(exc)), status_code=400)
    if kind not in (TxnType.VOID, TxnType.REFUND):
        original_rrn = None
    return await take_and_show(request, pg, kind, pan, amount, original_rrn, pg.field("request_id", 64), terms)


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/seat", seat, FORM, "seat"),
]
