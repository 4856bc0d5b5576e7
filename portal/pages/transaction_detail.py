"""One transaction in full, and its void or (partial) refund from the same page.

The page shows every record under an RRN (ledger.search.show): the request as
recorded (card masked), every leg of its journal, the stored answer, and what
was done against it since (voids, refunds, reversals). A merchant's users see
their own merchant's records only: an RRN of another merchant's is not found.
A void or refund goes through the web trading seat (ledger.loyalty.seat.take)
with a one-time request id of its own; the original's card is found by the
server, so the page never holds a card number.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger import business_day, search
from ledger.loyalty import lookup, members
from ledger.loyalty import seat as ledger_seat
from ledger.loyalty.outcomes import REFUNDABLE, VOIDABLE, Channel, TxnType
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.pages.members import currency_of
from portal.pages.seat import (
    AMOUNT_CHARS_MAX,
    BadForm,
    kind_name,
    merchant_terms,
    parse_amount,
    reason_words,
    take_and_show,
)
from portal.web import GET, POST, Page, page, render
from specs.vocabulary import receipt_key_of

RRN = re.compile(r"^[A-Za-z0-9]{1,12}$")
AGAINST_MAX = 50


def _rrn(request: Request) -> str:
    rrn = str(request.path_params["rrn"])
    if not RRN.match(rrn):
        raise HTTPException(404)
    return rrn


@page("transaction_detail")
async def transaction_detail(request: Request, pg: Page) -> Response:
    """Every record under the RRN with its legs, request, answer and what was done against it."""
    rrn = _rrn(request)
    found = await search.show(pg.pool, rrn, response_key=receipt_key_of)
    own = pg.own_merchant()
    records = [r for r in (found or {}).get("records", []) if own is None or r["merchant_id"] == own]
    if not records:
        raise HTTPException(404)
    for rec in records:
        rec["against"] = []
        if rec["journal_id"] is not None:
            rec["against"] = (await search.search(pg.pool, search.Filters(
                merchant_id=own, original_journal_id=rec["journal_id"]), AGAINST_MAX))["transactions"]
        rec["in_points"] = rec["txn_type"] in set(TxnType) and TxnType(rec["txn_type"]).in_points
        rec["kind_label"] = kind_name(rec["txn_type"])
        rec["words"] = reason_words(rec["reason"])
        for leg in rec.get("legs", []):
            leg["currency"] = currency_of(leg["asset"])  # a money leg is shown with its currency, points as points
        for t in rec["against"]:
            t["kind_label"] = kind_name(t["txn_type"])
            t["words"] = reason_words(t["reason"])
    original = next((r for r in records if r["journal_id"] is not None and r["reason"] == "approved"), None)
    can_undo = own is not None and original is not None
    context: dict[str, Any] = {
        "rrn": rrn, "records": records, "original": original,
        "can_void": can_undo and pg.portal.loyalty is not None and original is not None
        and original["txn_type"] in {str(t) for t in VOIDABLE} and await _voidable_from_seat(pg, original),
        "can_refund": can_undo and pg.portal.loyalty is not None and original is not None
        and original["txn_type"] in {str(t) for t in REFUNDABLE}
        # A mall order's capture is refunded from its order (the order keeps count).
        and original["channel"] != str(Channel.MALL),
        "void_request_id": ledger_seat.new_request_id(), "refund_request_id": ledger_seat.new_request_id(),
    }
    return render(request, "seat/detail.html", context, session=pg.session)


async def _voidable_from_seat(pg: Page, original: dict[str, Any]) -> bool:
    """False when the ledger would refuse the seat's void of ``original`` (the form is not offered):
    something (a refund, even partial) already stands against it, it is not of the open business
    day, or it was taken at a terminal (a void must come from the original's terminal; the seat
    voids from the merchant's web seat)."""
    if original["channel"] != str(Channel.WEB):
        return False
    if original["business_date"] != (await business_day.open_date(pg.pool)).isoformat():
        return False
    compensations, _legs, _version = await lookup.standing(pg.pool, original["journal_id"], original["journal_id"])
    return not compensations


def _bad(request: Request, pg: Page, message: str) -> Response:
    return render(request, "error.html", {"status": 400, "message": _(message)}, status_code=400, session=pg.session)


async def _undo(request: Request, pg: Page, kind: TxnType) -> Response:
    rrn = _rrn(request)
    terms = await merchant_terms(pg)
    original = await members.merchant_original(pg.pool, terms["merchant_id"], rrn)
    if original is None:
        raise HTTPException(404)
    amount = None
    if kind is TxnType.REFUND:
        try:
            amount = parse_amount(pg.field("amount", AMOUNT_CHARS_MAX), TxnType(original["txn_type"]).in_points,
                                  terms["scale"])
        except BadForm as exc:
            return _bad(request, pg, str(exc))
        if amount is None:
            return _bad(request, pg, N_("A refund needs an amount."))
    return await take_and_show(request, pg, str(kind), str(original["pan"]), amount, rrn,
                               pg.field("request_id", 64), terms)


@page("transaction_void")
async def transaction_void(request: Request, pg: Page) -> Response:
    """POST: void the transaction through the seat (its whole amount); the receipt."""
    return await _undo(request, pg, TxnType.VOID)


@page("transaction_refund")
async def transaction_refund(request: Request, pg: Page) -> Response:
    """POST: refund part or all of the transaction through the seat; the receipt."""
    return await _undo(request, pg, TxnType.REFUND)


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/transactions/rrn/{rrn}", transaction_detail, GET, "transaction_detail"),
    ("/transactions/rrn/{rrn}/void", transaction_void, POST, "transaction_void"),
    ("/transactions/rrn/{rrn}/refund", transaction_refund, POST, "transaction_refund"),
]
