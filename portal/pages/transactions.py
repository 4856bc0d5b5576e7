"""Transaction search: combined criteria, newest first, keyset pages, card numbers masked.

Criteria without a card number travel in the URL (GET), so a search can be
bookmarked. A full card number is accepted only in a POST body: it never appears
in a URL, a log line or the browser's history; its next pages are POSTs too.
A merchant's users search their own merchant's transactions only.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ledger import search
from ledger.loyalty.outcomes import Reason, TxnType
from ledger.loyalty.rules import luhn_ok
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.web import FORM, Page, page, render

# A module global so a test can lower it; the ledger caps it at search.EXPORT_ROWS_MAX whatever it is.
EXPORT_ROWS_MAX = search.EXPORT_ROWS_MAX

TEXT_FIELDS = ("date_from", "date_to", "merchant", "terminal", "rrn", "type", "reason", "amount_min",
               "amount_max")
# The outcome in the ledger's words (approved, insufficient, card_blocked, ...): the ISO 8583 code a
# terminal got for it is the switch's translation, and the portal never imports the switch.
# Every reason a transaction is recorded with (an unknown outcome never is).
REASON_CHOICES = tuple(str(r) for r in Reason if r is not Reason.OUTCOME_UNKNOWN)


class BadCriteria(ValueError):
    """A criterion that is not well formed; ``str()`` is an English sentence for the page."""


def _int(value: str) -> int | None:
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadCriteria(N_("Amounts and page numbers must be whole numbers."))
    return int(value)


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        raise BadCriteria(N_("Dates must be written YYYY-MM-DD.")) from None


def filters_from(values: Mapping[str, str], pan: str | None, own_merchant: str | None,
                 before_id: int | None) -> search.Filters:
    """ledger.search.Filters from the form's text; a merchant's user is pinned to its merchant."""
    reasons = None
    if values.get("reason"):
        if values["reason"] not in REASON_CHOICES:
            raise BadCriteria(N_("Unknown result."))
        reasons = (values["reason"],)
    txn_type = values.get("type") or None
    if txn_type is not None and txn_type not in set(TxnType):
        raise BadCriteria(N_("Unknown transaction type."))
    if pan is not None and not (12 <= len(pan) <= 19 and luhn_ok(pan)):
        raise BadCriteria(N_("Card number must be 12 to 19 digits with a valid check digit."))
    return search.Filters(
        date_from=_date(values.get("date_from", "")), date_to=_date(values.get("date_to", "")),
        merchant_id=own_merchant if own_merchant is not None else (values.get("merchant") or None),
        terminal_id=values.get("terminal") or None, pan=pan, rrn=values.get("rrn") or None, txn_type=txn_type,
        reasons=reasons, amount_min=_int(values.get("amount_min", "")),
        amount_max=_int(values.get("amount_max", "")), before_id=before_id)


@page("transactions")
async def transactions(request: Request, pg: Page) -> Response:
    """GET: the form and (with criteria) a page of results. POST: the same with a card number."""
    if request.method == "GET":
        if "pan" in request.query_params:
            # Refused rather than ignored: the number has already been written to a URL; say so.
            raise HTTPException(400, "pan-in-url")
        source: Mapping[str, str] = request.query_params
        pan = None
    else:
        source = {k: pg.field(k, 40) for k in (*TEXT_FIELDS, "before_id", "pan")}
        pan = source["pan"].replace(" ", "") or None
        if pan is None and pg.field("pan_ref", 200):
            # A next page of a card-number search: the number comes back sealed, never in clear.
            pan = open_pan(pg.portal.settings.secret, pg.field("pan_ref", 200))
    values = {k: str(source.get(k, ""))[:40].strip() for k in TEXT_FIELDS}
    if pg.own_merchant() is not None:
        values["merchant"] = pg.own_merchant() or ""
    searched = request.method == "POST" or any(values[k] for k in TEXT_FIELDS) or "go" in source
    context: dict[str, Any] = {"values": values, "pan_given": pan is not None, "pan_ref": "", "error": None,
                               "result": None, "next_url": None, "txn_types": [str(t) for t in TxnType],
                               "reasons": REASON_CHOICES, "in_points": _in_points}
    if searched:
        try:
            before_id = _int(str(source.get("before_id", "")))
            filters = filters_from(values, pan, pg.own_merchant(), before_id)
        except BadCriteria as exc:
            context["error"] = _(str(exc))
            return render(request, "transactions/search.html", context, status_code=400, session=pg.session)
        result = await search.search(await pg.read_pool(), filters, pg.portal.settings.page_size_default)
        context["result"] = result
        if pan is not None:
            context["pan_ref"] = seal_pan(pg.portal.settings.secret, pan)
        if result["next_before_id"] is not None and pan is None:
            context["next_url"] = str(request.url.include_query_params(
                **{k: v for k, v in values.items() if v}, go="1", before_id=result["next_before_id"]))
    return render(request, "transactions/search.html", context, session=pg.session)


@page("transactions_export")
async def transactions_export(request: Request, pg: Page) -> Response:
    """The search's matches as CSV (cards masked; at most ledger.search.EXPORT_ROWS_MAX rows, streamed).

    GET takes the criteria of a search without a card number; POST also a card number (or the
    sealed one of a search page). A last line ``truncated,N`` says the bound cut the export short.
    """
    if request.method == "GET":
        if "pan" in request.query_params:
            raise HTTPException(400, "pan-in-url")
        source: Mapping[str, str] = request.query_params
        pan = None
    else:
        source = {k: pg.field(k, 40) for k in (*TEXT_FIELDS, "pan")}
        pan = source["pan"].replace(" ", "") or None
        if pan is None and pg.field("pan_ref", 200):
            pan = open_pan(pg.portal.settings.secret, pg.field("pan_ref", 200))
    values = {k: str(source.get(k, ""))[:40].strip() for k in TEXT_FIELDS}
    try:
        filters = filters_from(values, pan, pg.own_merchant(), None)
    except BadCriteria as exc:
        return Response(_(str(exc)) + "\n", status_code=400, media_type="text/plain; charset=utf-8")
    pool, rows_max = await pg.read_pool(), EXPORT_ROWS_MAX

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(search.EXPORT_COLUMNS)
        written, last_id = 0, None
        async for rows in search.export_pages(pool, filters, rows_max):
            for r in rows:
                w.writerow(["" if r[k] is None else r[k] for k in search.EXPORT_COLUMNS])
            written += len(rows)
            last_id = rows[-1]["id"]
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        if written >= rows_max and last_id is not None:
            more = await search.search(pool, replace(filters, before_id=last_id), 1)
            if more["count"]:
                yield f"truncated,{rows_max}\n"

    name = f"transactions-{dt.date.today().isoformat()}.csv"
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": f'attachment; filename="{name}"'})


def _in_points(txn_type: str) -> bool:
    """True when a transaction's amount is a number of points, not money."""
    return txn_type in set(TxnType) and TxnType(txn_type).in_points


def _pan_key(secret: bytes) -> bytes:
    return hashlib.sha256(b"portal pan ref|" + secret).digest()


def seal_pan(secret: bytes, pan: str) -> str:
    """A card number sealed (AES-GCM under a key from the portal secret) for a hidden form field."""
    nonce = os.urandom(12)
    return base64.urlsafe_b64encode(nonce + AESGCM(_pan_key(secret)).encrypt(nonce, pan.encode(), b"pan")).decode()


def open_pan(secret: bytes, sealed: str) -> str:
    """The card number of seal_pan's output; 400 when it was not sealed by us."""
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return AESGCM(_pan_key(secret)).decrypt(raw[:12], raw[12:], b"pan").decode()
    except (ValueError, InvalidTag):
        raise HTTPException(400) from None


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/transactions", transactions, FORM, "transactions"),
    ("/transactions/export", transactions_export, FORM, "transactions_export"),
]
