"""The operator's revenue: income per day, kind, merchant and program, with a chart (platform only).

The figures are ledger.revenue's (the registry of income kinds, the report the CLI's
``switchd report revenue`` prints); the range is read as the statistics page reads it (at most
400 days, by default the last 31).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger import revenue
from portal.charts import bar_chart
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.pages.stats import BadCriteria, criteria_from
from portal.web import GET, Page, page, render

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


@page("revenue")
async def revenue_page(request: Request, pg: Page) -> Response:
    """Income of a range: a chart per day, totals per kind, and every row."""
    try:  # the statistics page's range: the same defaults and bounds (ledger.revenue's is no wider)
        c = criteria_from({k: v for k, v in request.query_params.items() if k in ("date_from", "date_to")}, None,
                          dt.date.today())
    except BadCriteria as exc:
        return render(request, "revenue/page.html", {
            "error": _(str(exc)), "report": None, "date_from": request.query_params.get("date_from", "")[:10],
            "date_to": request.query_params.get("date_to", "")[:10]}, status_code=400, session=pg.session)
    date_from, date_to = c["date_from"], c["date_to"]
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
