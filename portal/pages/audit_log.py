"""The audit log: every change made through the portal or the CLI, searchable by who, what,
which object and when; newest first in keyset pages; before and after shown as JSON text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger import audit_search
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.web import GET, Page, page, render

FIELDS = ("actor", "action", "object_kind", "object_id", "merchant", "date_from", "date_to")


def _filters(values: dict[str, str], before: str) -> audit_search.AuditFilters:
    try:
        date_from = dt.date.fromisoformat(values["date_from"]) if values["date_from"] else None
        date_to = dt.date.fromisoformat(values["date_to"]) if values["date_to"] else None
    except ValueError:
        raise ValueError(N_("Dates must be written YYYY-MM-DD.")) from None
    if before and not (before.isascii() and before.isdigit() and len(before) <= 18):
        raise ValueError(N_("Amounts and page numbers must be whole numbers."))
    return audit_search.AuditFilters(
        actor=values["actor"] or None, action=values["action"] or None, object_kind=values["object_kind"] or None,
        object_id=values["object_id"] or None, merchant_id=values["merchant"] or None, date_from=date_from,
        date_to=date_to, before_id=int(before) if before else None)


@page("audit")
async def audit_page(request: Request, pg: Page) -> Response:
    """The search form and a page of entries."""
    q = request.query_params
    values = {k: q.get(k, "")[:64].strip() for k in FIELDS}
    context: dict[str, Any] = {"values": values, "result": None, "next_url": None, "error": None}
    try:
        filters = _filters(values, q.get("before", "")[:20])
    except ValueError as exc:
        context["error"] = _(str(exc))
        return render(request, "audit/search.html", context, status_code=400, session=pg.session)
    result = await audit_search.search(pg.pool, filters, pg.portal.settings.page_size_default)
    context["result"] = result
    if result["next_before_id"] is not None:
        context["next_url"] = str(request.url.include_query_params(before=result["next_before_id"]))
    return render(request, "audit/search.html", context, session=pg.session)


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/audit", audit_page, GET, "audit"),
]
