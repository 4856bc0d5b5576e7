"""Statistics: transactions per day, week or month and per merchant, members, as charts and tables, with CSV.

The figures come from ledger.stats (the functions the CLI's ``switchd stats`` lives
beside); a range is bounded (ledger.stats.RANGE_DAYS_MAX). A merchant's users see
their own merchant's figures only; the platform's users all, or one merchant's.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger import stats
from portal.charts import bar_chart
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.web import GET, Page, page, render

RANGE_DAYS_DEFAULT = 31
TABLES = ("periods", "merchants", "members")


class BadCriteria(ValueError):
    """A criterion that is not well formed; ``str()`` is an English sentence for the page."""


def criteria_from(query: Mapping[str, str], own_merchant: str | None, today: dt.date) -> dict[str, Any]:
    """The range, period and merchant of a request; a merchant's user is pinned to its merchant.

    >>> c = criteria_from({"date_from": "2024-01-01", "period": "week"}, "M1", dt.date(2024, 2, 1))
    >>> (c["date_from"], c["date_to"], c["period"], c["merchant"])
    (datetime.date(2024, 1, 1), datetime.date(2024, 2, 1), 'week', 'M1')
    """
    try:
        date_to = dt.date.fromisoformat(query["date_to"][:10]) if query.get("date_to") else today
        date_from = (dt.date.fromisoformat(query["date_from"][:10]) if query.get("date_from")
                     else date_to - dt.timedelta(days=RANGE_DAYS_DEFAULT - 1))
    except ValueError:
        raise BadCriteria(N_("Dates must be written YYYY-MM-DD.")) from None
    period = query.get("period") or "day"
    if period not in stats.PERIODS:
        raise BadCriteria(N_("Unknown period."))
    if date_to < date_from:
        raise BadCriteria(N_("The range ends before it starts."))
    if (date_to - date_from).days + 1 > stats.RANGE_DAYS_MAX:
        raise BadCriteria(N_("The range may cover at most 400 days."))
    merchant = own_merchant if own_merchant is not None else (query.get("merchant", "")[:15].strip() or None)
    return {"date_from": date_from, "date_to": date_to, "period": period, "merchant": merchant}


def _totals_by_type(periods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The period rows summed per transaction type."""
    out: dict[str, dict[str, Any]] = {}
    for r in periods:
        t = out.setdefault(r["txn_type"], {"txn_type": r["txn_type"], "transactions": 0, "approved": 0,
                                           "money_amount_minor": 0, "points_amount": 0, "points_credited": 0,
                                           "points_debited": 0})
        for k in ("transactions", "approved", "money_amount_minor", "points_amount", "points_credited",
                  "points_debited"):
            t[k] += int(r[k])
    return [out[k] for k in sorted(out)]


def _approved_per_period(periods: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts: dict[dt.date, int] = {}
    for r in periods:
        counts[r["period_start"]] = counts.get(r["period_start"], 0) + int(r["approved"])
    return [(k.isoformat(), v) for k, v in sorted(counts.items())]


async def _figures(pg: Page, c: dict[str, Any]) -> dict[str, Any]:
    args = (c["date_from"], c["date_to"])
    periods = await stats.period_stats(await pg.read_pool(), *args, c["period"], c["merchant"])
    merchants = await stats.merchant_stats(await pg.read_pool(), *args, c["merchant"])
    members = await stats.member_stats(await pg.read_pool(), *args, c["period"], c["merchant"])
    return {"periods": periods, "merchants": merchants, "members": members}


def _query_of(c: dict[str, Any], own_merchant: str | None) -> dict[str, str]:
    q = {"date_from": c["date_from"].isoformat(), "date_to": c["date_to"].isoformat(), "period": c["period"]}
    if c["merchant"] and own_merchant is None:
        q["merchant"] = c["merchant"]
    return q


def _empty_criteria(query: Mapping[str, str], own_merchant: str | None) -> dict[str, Any]:
    return {"date_from": str(query.get("date_from", ""))[:10], "date_to": str(query.get("date_to", ""))[:10],
            "period": str(query.get("period", "day"))[:8], "merchant": own_merchant or query.get("merchant", "")[:15]}


@page("stats")
async def stats_page(request: Request, pg: Page) -> Response:
    """The statistics of a range: charts, each with its table, and links to the CSV of each table."""
    own = pg.own_merchant()
    try:
        c = criteria_from(request.query_params, own, dt.date.today())
    except BadCriteria as exc:
        return render(request, "stats/page.html", {"error": _(str(exc)), "c": _empty_criteria(
            request.query_params, own), "periods": stats.PERIODS, "figures": None}, status_code=400,
            session=pg.session)
    figures = await _figures(pg, c)
    members = figures["members"]
    query = _query_of(c, own)
    context = {
        "error": None, "c": c, "periods": stats.PERIODS, "figures": figures,
        "by_type": _totals_by_type(figures["periods"]),
        "chart_periods": bar_chart(_approved_per_period(figures["periods"])),
        "chart_merchants": bar_chart([(r["merchant_id"], int(r["approved"])) for r in figures["merchants"]]),
        "chart_members": bar_chart([(r["period_start"].isoformat(), int(r["active_members"]))
                                    for r in members["periods"]]),
        "csv_urls": {t: str(request.url_for("stats_csv").include_query_params(**query, table=t)) for t in TABLES},
    }
    return render(request, "stats/page.html", context, session=pg.session)


_CSV_COLUMNS = {
    "periods": ("period_start", "txn_type", *stats.SUMS),
    "merchants": ("merchant_id", *stats.SUMS),
    "members": ("period_start", "active_members", "new_members"),
}


@page("stats_csv")
async def stats_csv(request: Request, pg: Page) -> Response:
    """One table of the statistics page as CSV (``table`` = periods, merchants or members)."""
    table = request.query_params.get("table", "periods")
    if table not in TABLES:
        return Response(_("Unknown table.") + "\n", status_code=400, media_type="text/plain; charset=utf-8")
    try:
        c = criteria_from(request.query_params, pg.own_merchant(), dt.date.today())
    except BadCriteria as exc:
        return Response(_(str(exc)) + "\n", status_code=400, media_type="text/plain; charset=utf-8")
    args = (c["date_from"], c["date_to"])
    if table == "periods":
        rows = await stats.period_stats(await pg.read_pool(), *args, c["period"], c["merchant"])
    elif table == "merchants":
        rows = await stats.merchant_stats(await pg.read_pool(), *args, c["merchant"])
    else:
        rows = (await stats.member_stats(await pg.read_pool(), *args, c["period"], c["merchant"]))["periods"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    columns = _CSV_COLUMNS[table]
    w.writerow(columns)
    for r in rows:
        w.writerow([v.isoformat() if isinstance(v, dt.date) else v for v in (r[k] for k in columns)])
    name = f"stats-{table}-{c['date_from'].isoformat()}-{c['date_to'].isoformat()}.csv"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/stats", stats_page, GET, "stats"),
    ("/stats.csv", stats_csv, GET, "stats_csv"),
]
