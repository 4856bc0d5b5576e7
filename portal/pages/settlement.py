"""Settlement: the cleared business days, each day's end-of-day figures per merchant, the
alliance's issuer x redeemer matrix, and the settlement files ``switchd eod run`` wrote.

Figures come from ledger.clearing (what end of day stored); files from the settlement
directory (PortalSettings.settlement_dir), found by (day, merchant id) through the day's
summary and checked against the SHA-256 it recorded: never by a path from the request.
A merchant's admin sees its own figures and file; another merchant's file is 404.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger import clearing, settlement_files
from portal.web import GET, Page, page, render

DAYS_PAGE_SIZE = 31
SUMMARY_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def _day(text: str) -> dt.date:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(404) from None


def _directory(pg: Page) -> Path:
    return Path(pg.portal.settings.settlement_dir)


def _download(name: str, data: bytes, media_type: str) -> Response:
    return Response(data, media_type=media_type, headers={"content-disposition": f'attachment; filename="{name}"'})


@page("settlement")
async def settlement_days(request: Request, pg: Page) -> Response:
    """The cleared business days, newest first, in keyset pages."""
    before_text = request.query_params.get("before", "")
    before = None
    if before_text:
        try:
            before = dt.date.fromisoformat(before_text[:10])
        except ValueError:
            raise HTTPException(400) from None
    days = await clearing.cleared_days(pg.pool, before, DAYS_PAGE_SIZE + 1)
    next_url = None
    if len(days) > DAYS_PAGE_SIZE:
        days = days[:DAYS_PAGE_SIZE]
        next_url = str(request.url.include_query_params(before=days[-1].isoformat()))
    return render(request, "settlement/days.html", {"days": days, "next_url": next_url}, session=pg.session)


@page("settlement_day")
async def settlement_day(request: Request, pg: Page) -> Response:
    """One day: figures per merchant, totals, the matrix, the files, the recharge query."""
    day = _day(request.path_params["day"])
    if not await clearing.is_cleared(pg.pool, day):
        return render(request, "settlement/day.html", {"day": day, "cleared": False}, session=pg.session)
    own = pg.own_merchant()
    rows = [r for r in await clearing.figures(pg.pool, day) if own is None or r["merchant_id"] == own]
    matrix = [m for m in await clearing.matrix(pg.pool, day)
              if own is None or own in (m["issuer_id"], m["redeemer_id"])]
    totals: dict[str, dict[str, int]] = {}
    for r in rows:
        t = totals.setdefault(r["currency_asset"], {"merchants": 0, "net_minor": 0, "fees_minor": 0})
        t["merchants"] += 1
        t["net_minor"] += int(r["net_minor"])
        t["fees_minor"] += int(r["fees_minor"])
    summary = settlement_files.read_summary(_directory(pg), day)
    filed = set(summary.get("files", {})) if summary else set()
    recharge = {kind: str(request.url_for("transactions").include_query_params(
        go="1", type=kind, date_from=day.isoformat(), date_to=day.isoformat())) for kind in ("topup", "load")}
    return render(request, "settlement/day.html", {
        "cleared": True, "day": day, "rows": rows, "matrix": matrix, "totals": totals, "cleared_at": await clearing.cleared_at(
            pg.pool, day),
        "filed": {r["merchant_id"] for r in rows if settlement_files.merchant_file_name(r["merchant_id"]) in filed},
        "summary_filed": summary is not None and own is None, "recharge": recharge}, session=pg.session)


@page("settlement_file")
async def settlement_file(request: Request, pg: Page) -> Response:
    """A merchant's settlement CSV of a day (another merchant's: 404 for a merchant's admin)."""
    day = _day(request.path_params["day"])
    merchant_id = request.path_params["merchant_id"][:15]
    pg.require_visible(merchant_id)
    found = settlement_files.day_file(_directory(pg), day, merchant_id)
    if found is None:
        raise HTTPException(404)
    return _download(found[0], found[1], SUMMARY_MEDIA["csv"])


@page("settlement_summary")
async def settlement_summary(request: Request, pg: Page) -> Response:
    """The day's summary.csv or summary.json (the platform's users)."""
    day = _day(request.path_params["day"])
    fmt = request.path_params["fmt"]
    if fmt not in SUMMARY_MEDIA:
        raise HTTPException(404)
    if fmt == "csv":
        found = settlement_files.day_file(_directory(pg), day, None)
        if found is None:
            raise HTTPException(404)
        data = found[1]
    else:
        raw = settlement_files.summary_json(_directory(pg), day)
        if raw is None:
            raise HTTPException(404)
        data = raw
    return _download(f"summary-{day.isoformat()}.{fmt}", data, SUMMARY_MEDIA[fmt])


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/settlement", settlement_days, GET, "settlement"),
    ("/settlement/{day}", settlement_day, GET, "settlement_day"),
    ("/settlement/{day}/files/{merchant_id}", settlement_file, GET, "settlement_file"),
    ("/settlement/{day}/summary/{fmt}", settlement_summary, GET, "settlement_summary"),
]
