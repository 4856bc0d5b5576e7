"""The operator's revenue: income per day, kind, merchant and program, with a chart (platform only).

The figures are ledger.revenue's (the registry of income kinds, the report the CLI's
``switchd report revenue`` prints); the range is bounded (ledger.revenue.RANGE_DAYS_MAX).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger import revenue
from portal.charts import bar_chart
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.web import GET, Page, page, render

RANGE_DAYS_DEFAULT = 31
# The kinds' names in the page's language (ledger.revenue.KINDS holds the English labels).
KIND_NAMES = {
    "transaction_fees": N_("Transaction fees"), "mall_sales": N_("Mall sales"),
    "promotion_fees": N_("Promotion fees"), "voucher_sales": N_("Top-up card sales"),
    "voucher_breakage": N_("Top-up card breakage"),
}


def kind_name(kind: str) -> str:
    """An income kind in the request's language (a kind added to the registry shows its label)."""
    if kind in KIND_NAMES:
        return _(KIND_NAMES[kind])
    return next((k.label for k in revenue.KINDS if k.name == kind), kind)


def range_from(query: Mapping[str, str], today: dt.date) -> tuple[dt.date, dt.date]:
    """The range asked for (default: the last 31 days); ValueError with a sentence for the page.

    >>> range_from({"date_from": "2026-01-01", "date_to": "2026-01-31"}, dt.date(2026, 2, 1))
    (datetime.date(2026, 1, 1), datetime.date(2026, 1, 31))
    """
    try:
        date_to = dt.date.fromisoformat(query["date_to"][:10]) if query.get("date_to") else today
        date_from = (dt.date.fromisoformat(query["date_from"][:10]) if query.get("date_from")
                     else date_to - dt.timedelta(days=RANGE_DAYS_DEFAULT - 1))
    except ValueError:
        raise ValueError(N_("Dates must be written YYYY-MM-DD.")) from None
    if date_to < date_from:
        raise ValueError(N_("The range ends before it starts."))
    if (date_to - date_from).days + 1 > revenue.RANGE_DAYS_MAX:
        raise ValueError(N_("The range may cover at most 400 days."))
    return date_from, date_to


@page("revenue")
async def revenue_page(request: Request, pg: Page) -> Response:
    """Income of a range: a chart per day, totals per kind, and every row."""
    try:
        date_from, date_to = range_from(request.query_params, dt.date.today())
    except ValueError as exc:
        return render(request, "revenue/page.html", {
            "error": _(str(exc)), "report": None, "date_from": request.query_params.get("date_from", "")[:10],
            "date_to": request.query_params.get("date_to", "")[:10]}, status_code=400, session=pg.session)
    report = await revenue.report(pg.pool, date_from, date_to)
    return render(request, "revenue/page.html", {
        "error": None, "report": report, "date_from": date_from.isoformat(), "date_to": date_to.isoformat(),
        "kind_name": kind_name,
        "chart_days": bar_chart([(d["day"] + " " + d["currency"], d["amount_minor"]) for d in report["days"]]),
    }, session=pg.session)


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/revenue", revenue_page, GET, "revenue"),
]
